//! Batch comparison reports across forked experiment families.
//!
//! A report covers some or all families of one project. Patterns among the
//! requested metrics are first resolved to the metrics the families logged;
//! then the numbers come from one scan per metric and family: the stitched
//! views of every run of the family at once, planned by `lineage_functions`
//! and executed by the stitching operator (`query::stitch`), which reads each
//! owner's points once and hands back every run's stitched series in
//! `(run, step)` order. The report does no stitching of its own: what it
//! ranks is what `family_metrics` returns. Only a family's series of one
//! metric are held at a time (a few families' at once, [`SCANS_IN_FLIGHT`]),
//! and only their drawn points are kept for the charts.

pub mod chart;
mod model;
pub mod numbers;
pub mod render;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::prelude::{DataFrame, SessionContext, cast, col, lit};
use futures::StreamExt;

use crate::catalog::{CatalogSnapshot, FamilyMember, RunId, RunStatus, Segment};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::query::gate::QueryGate;
use crate::query::lineage_functions::{self, MetricFilter};
use crate::query::points::PointSource;
use crate::query::session::METRIC_WRITES;
use crate::scope::Projects;
pub use model::*;
pub use stats::{Goal, Point, RunStats};

/// Family scans of one metric run at once: two keep both cores busy while
/// one waits on the store, and bound what is held to two families' series.
const SCANS_IN_FLIGHT: usize = 2;

/// Each run's stitched series of one metric, by run, sorted by step.
type Stitched = HashMap<RunId, Vec<Point>>;

/// Computes a report over the runs of `scope` (the projects the caller's key opens).
pub async fn build(
    engine: &Engine,
    request: &ReportRequest,
    scope: &Projects,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Report> {
    let catalog = engine.scoped_catalog(scope).await?;
    let project = request.project.trim();
    if project.is_empty() {
        return Err(Error::invalid("give the project to report on"));
    }
    if !catalog.projects().iter().any(|p| p == project) {
        return Err(Error::NotFound(format!("unknown project `{project}`")));
    }
    if request.metrics.is_empty() {
        return Err(Error::invalid(
            "give at least one metric (e.g. train/loss,val/*)",
        ));
    }
    let roots = select_families(&catalog, project, request)?;
    let families: Vec<Vec<FamilyMember>> = roots
        .iter()
        .map(|r| catalog.family(*r))
        .collect::<Result<_>>()?;

    let ctx = engine.scoped_session(scope).await?;
    let points = crate::query::session::points(&ctx)?;
    let mut views: Vec<Vec<(RunId, Segment)>> = Vec::with_capacity(families.len());
    for family in &families {
        let mut family_views = Vec::new();
        for member in family {
            let run = member.run.id;
            family_views.extend(catalog.segments(run)?.into_iter().map(|s| (run, s)));
        }
        views.push(family_views);
    }
    let runs: Vec<RunId> = families.iter().flatten().map(|m| m.run.id).collect();
    let names = metric_names(&ctx, engine.gate(), &runs, &request.metrics).await?;
    if names.is_empty() {
        return Err(Error::invalid(format!(
            "no metric of the selected families matches {}",
            request.metrics.join(", ")
        )));
    }

    progress(Progress::Start { scans: names.len() });
    // One scan per metric and family: a family's stitched series of one
    // metric are all that is held at a time (times the scans in flight),
    // however many families and metrics the report covers.
    let mut metrics: Vec<MetricGoal> = Vec::new();
    let mut per_family: Vec<Vec<FamilyMetric>> = vec![Vec::new(); families.len()];
    for (index, name) in names.into_iter().enumerate() {
        let goal = request.goals.of(&name);
        progress(Progress::Scan {
            index,
            spec: name.clone(),
            rows: 0,
        });
        let scan = MetricScan {
            ctx: &ctx,
            gate: engine.gate(),
            points: &points,
            catalog: &catalog,
            name: &name,
            goal,
            index,
            rows: AtomicU64::new(0),
            progress,
        };
        let pairs: Vec<_> = families.iter().zip(&views).collect();
        let mut sections = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(SCANS_IN_FLIGHT) {
            let scans = chunk
                .iter()
                .map(|(family, views)| scan.family(family, views));
            sections.extend(futures::future::join_all(scans).await);
        }
        for (section, out) in sections.into_iter().zip(per_family.iter_mut()) {
            out.push(section?);
        }
        progress(Progress::ScanDone { index });
        metrics.push(MetricGoal { name, goal });
    }
    let sections = families
        .iter()
        .zip(per_family)
        .map(|(family, sections)| family_report(family, sections))
        .collect();
    Ok(Report {
        project: project.to_string(),
        metrics,
        families: sections,
    })
}

/// Roots of the families the request covers, by id.
fn select_families(
    catalog: &CatalogSnapshot,
    project: &str,
    request: &ReportRequest,
) -> Result<Vec<RunId>> {
    let mut roots = Vec::new();
    match (request.all_families, request.families.is_empty()) {
        (true, false) => {
            return Err(Error::invalid(
                "give either families or all families, not both",
            ));
        }
        (false, true) => {
            return Err(Error::invalid(
                "give at least one family (a run of it) or ask for all families",
            ));
        }
        (true, true) => roots.extend(
            catalog
                .runs()
                .filter(|r| r.project == project && r.parent_id.is_none())
                .map(|r| r.id),
        ),
        (false, false) => {
            for reference in &request.families {
                let run = catalog.lookup(reference)?;
                if run.project != project {
                    return Err(Error::invalid(format!(
                        "run `{}` belongs to project `{}`, not `{project}`",
                        run.display_id, run.project
                    )));
                }
                roots.push(catalog.root(run.id)?);
            }
        }
    }
    roots.sort_unstable();
    roots.dedup();
    Ok(roots)
}

/// The scans of one metric, family by family.
struct MetricScan<'a> {
    ctx: &'a SessionContext,
    /// Runs the scans where the engine runs queries (here or on a cluster).
    gate: &'a QueryGate,
    points: &'a PointSource,
    catalog: &'a CatalogSnapshot,
    name: &'a str,
    goal: Goal,
    /// The metric's position in the report, for progress.
    index: usize,
    /// Points received so far over the metric's family scans.
    rows: AtomicU64,
    progress: &'a (dyn Fn(Progress) + Send + Sync),
}

impl MetricScan<'_> {
    /// The metric's section of `family`, whose runs' stitched views are `views`.
    async fn family(
        &self,
        family: &[FamilyMember],
        views: &[(RunId, Segment)],
    ) -> Result<FamilyMetric> {
        let filter = MetricFilter::Exact(self.name.to_string());
        let plan = lineage_functions::stitched_views_plan(self.points, views, Some(&filter))?;
        // The stitching operator holds the owners' points (in the memory
        // pool); their metric column is left unread.
        let df = DataFrame::new(self.ctx.state(), plan).select_columns(&[
            "run_id",
            "step",
            "value",
            "inherited",
        ])?;
        let mut stream = self.gate.execute(df).await?;
        let mut found = Collected::new();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let n = batch.num_rows() as u64;
            let rows = self.rows.fetch_add(n, Ordering::Relaxed) + n;
            (self.progress)(Progress::Scan {
                index: self.index,
                spec: self.name.to_string(),
                rows,
            });
            found.add(&batch)?;
        }
        let mut stitched = found.finish();
        family_metric(self.catalog, family, self.name, self.goal, &mut stitched)
    }
}

/// The metrics a report covers, in request order: a named metric as given
/// (it gets its section even where no run logged it), a pattern's matches
/// among the metrics `runs` logged, sorted; each metric once.
async fn metric_names(
    ctx: &SessionContext,
    gate: &QueryGate,
    runs: &[RunId],
    specs: &[String],
) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for spec in specs {
        let found = match MetricFilter::glob(spec) {
            MetricFilter::Exact(name) => vec![name],
            MetricFilter::Like(pattern) => {
                let ids = runs.iter().map(|r| lit(*r as i64)).collect();
                // Every write has its metric: no need for `metrics`' latest-write view.
                let writes = ctx
                    .table(METRIC_WRITES)
                    .await?
                    .filter(
                        col("run_id")
                            .in_list(ids, false)
                            .and(col("metric").like(lit(pattern))),
                    )?
                    .select(vec![cast(col("metric"), DataType::Utf8).alias("metric")])?
                    .distinct()?;
                let batches = gate.collect(writes).await?;
                let mut found: Vec<String> = batches
                    .iter()
                    .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten())
                    .map(str::to_string)
                    .collect();
                found.sort_unstable();
                found
            }
        };
        for name in found {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// One metric's stitched series of a scan, as its ordered batches arrive.
struct Collected {
    done: Stitched,
    /// The series being read (the stitching operator sends each one whole).
    current: Option<(RunId, Vec<Point>)>,
}

impl Collected {
    fn new() -> Self {
        Self {
            done: HashMap::new(),
            current: None,
        }
    }

    /// Adds a batch of `run_id, step, value, inherited`.
    fn add(&mut self, batch: &arrow::array::RecordBatch) -> Result<()> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::invalid(format!("stitched plan lacks column {name}")))
        };
        let runs = column("run_id")?.as_primitive::<Int64Type>();
        let steps = column("step")?.as_primitive::<Int64Type>();
        let values = column("value")?.as_primitive::<Float64Type>();
        let inherited = column("inherited")?.as_boolean();
        for i in 0..batch.num_rows() {
            if runs.is_null(i) || steps.is_null(i) {
                continue;
            }
            let run = runs.value(i) as RunId;
            if !matches!(&self.current, Some((r, _)) if *r == run) {
                self.flush();
                self.current = Some((run, Vec::new()));
            }
            let value = if values.is_null(i) {
                f64::NAN
            } else {
                values.value(i)
            };
            if let Some((_, series)) = &mut self.current {
                series.push(Point {
                    step: steps.value(i).max(0) as u64,
                    value,
                    inherited: inherited.value(i),
                });
            }
        }
        Ok(())
    }

    fn flush(&mut self) {
        if let Some((run, mut series)) = self.current.take() {
            self.done.entry(run).or_default().append(&mut series);
        }
    }

    /// Every series read, by run, each sorted by step.
    fn finish(mut self) -> Stitched {
        self.flush();
        // Already so when the plan keeps the operator's order; checked, not assumed.
        for series in self.done.values_mut() {
            if !series.is_sorted_by_key(|p| p.step) {
                series.sort_by_key(|p| p.step);
            }
        }
        self.done
    }
}

/// HTML / Markdown anchor of a family section.
pub fn anchor(root: &str) -> String {
    let slug: String = root
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("family-{slug}")
}

/// One metric of one family: each run's stitched series, its numbers, ranks and winner.
fn family_metric(
    catalog: &CatalogSnapshot,
    family: &[FamilyMember],
    name: &str,
    goal: Goal,
    stitched: &mut Stitched,
) -> Result<FamilyMetric> {
    let index: HashMap<RunId, usize> = family
        .iter()
        .enumerate()
        .map(|(i, m)| (m.run.id, i))
        .collect();
    // A run is in one family: its series is taken, not copied.
    let series: Vec<Vec<Point>> = family
        .iter()
        .map(|m| stitched.remove(&m.run.id).unwrap_or_default())
        .collect();
    let mut rows: Vec<RunRow> = family
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let parent = m
                .run
                .parent_id
                .zip(m.run.fork_step)
                .and_then(|(p, f)| index.get(&p).map(|&pi| (series[pi].as_slice(), f)));
            RunRow {
                run_id: m.run.id,
                display_id: m.run.display_id.clone(),
                name: m.run.name.clone(),
                parent: m
                    .run
                    .parent_id
                    .and_then(|p| catalog.get(p))
                    .map(|p| p.display_id.clone()),
                fork_step: m.run.fork_step,
                depth: m.depth,
                status: m.run.status.to_string(),
                stats: stats::run_stats(&series[i], parent, goal),
                rank: None,
                winner: false,
            }
        })
        .collect();
    let bests: Vec<Option<f64>> = rows.iter().map(|r| r.stats.best_value).collect();
    for (row, rank) in rows.iter_mut().zip(stats::ranks(&bests, goal)) {
        row.rank = rank;
    }
    let win = stats::winner(&bests, goal);
    if let Some(w) = win {
        rows[w].winner = true;
    }
    Ok(FamilyMetric {
        metric: name.to_string(),
        goal,
        winner: win.map(|w| rows[w].display_id.clone()),
        runs: rows,
        // Only what the chart draws is kept: a report over many long runs
        // must not hold every stitched series until rendering.
        series: series
            .iter()
            .map(|s| {
                Arc::new(stats::downsample_series(
                    s,
                    chart::points_per_part(family.len()),
                ))
            })
            .collect(),
    })
}

fn family_report(family: &[FamilyMember], metrics: Vec<FamilyMetric>) -> FamilyReport {
    let root = &family[0].run;
    let best = metrics
        .iter()
        .map(|m| {
            let win = m.runs.iter().find(|r| r.winner);
            BestRun {
                metric: m.metric.clone(),
                run: win.map(|r| r.display_id.clone()),
                value: win.and_then(|r| r.stats.best_value),
                step: win.and_then(|r| r.stats.best_step),
            }
        })
        .collect();
    FamilyReport {
        root: root.display_id.clone(),
        root_id: root.id,
        experiment: root.experiment.clone(),
        anchor: anchor(&root.display_id),
        size: family.len(),
        depth: family.iter().map(|m| m.depth).max().unwrap_or(0),
        running: family
            .iter()
            .filter(|m| m.run.status == RunStatus::Running)
            .map(|m| m.run.display_id.clone())
            .collect(),
        best,
        metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_parse_defaults_and_per_metric() {
        let g = Goals::parse(Some("max")).unwrap();
        assert_eq!(g.of("val/acc"), Goal::Max);
        let g = Goals::parse(Some("train/loss=min, val/*=max")).unwrap();
        assert_eq!(g.of("train/loss"), Goal::Min);
        assert_eq!(g.of("val/acc"), Goal::Max);
        assert_eq!(g.of("other"), Goal::Min);
        let g = Goals::parse(Some("max,train/loss=min")).unwrap();
        assert_eq!((g.of("x"), g.of("train/loss")), (Goal::Max, Goal::Min));
        assert!(Goals::parse(Some("best")).is_err());
        assert!(Goals::parse(Some("loss=up")).is_err());
        assert!(Goals::parse(Some("=min")).is_err());
        assert!(Goals::parse(Some("min,max")).is_err());
    }

    #[test]
    fn anchors_are_slugs() {
        assert_eq!(anchor("VS-12"), "family-vs-12");
    }
}
