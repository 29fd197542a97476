//! Batch comparison reports across forked experiment families.
//!
//! A report covers some or all families of one project. Patterns among the
//! requested metrics are first resolved to the metrics the families logged;
//! then the numbers come from one scan of each family's owners' points (of
//! many metrics at once, [`METRICS_PER_SCAN`]), planned by `query::lineage`
//! as the stitching operator's input is. Each run's stitched series is then
//! the list of its segments' slices of those owners' series (`series`): the
//! segments the catalog resolves, cut by the operator's own cut and rules
//! (`Segment::rows`, `catalog::sees`), so what the report ranks is what
//! `family_metrics` returns, without the inherited points copied once per
//! descendant. Only one scan's owner series are held per family (a few
//! families at once, [`FAMILIES_IN_FLIGHT`]), accounted to the query memory
//! pool, and only their drawn points are kept for the charts.

pub mod chart;
mod model;
pub mod numbers;
mod owner_points;
pub mod render;
pub mod series;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::AsArray;
use arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::prelude::{DataFrame, SessionContext, cast, col, lit};
use futures::StreamExt;

use datafusion::execution::memory_pool::MemoryConsumer;

use self::owner_points::{Gathering, OwnerPoints};
use self::series::Pieces;
use crate::catalog::{self, CatalogSnapshot, FamilyMember, RunId, RunStatus, Segment};
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::query::admission::gate::QueryGate;
use crate::query::lineage::Lineage;
use crate::query::scan::MetricFilter;
use crate::query::session::METRIC_WRITES;
use crate::scope::Projects;
pub use model::*;
pub use series::Point;
pub use stats::{Goal, RunStats};

/// Families scanned at once: two keep both cores busy (one family's numbers
/// are computed while the other's scan waits on the store), and bound what
/// is held to two scans' series.
const FAMILIES_IN_FLIGHT: usize = 2;

/// Metrics read by one scan of a family's owners. Each scan opens the files
/// holding the family and decodes and filters their key columns, so a scan
/// per few metrics paid that five times over on a twenty-metric report. A
/// scan holds its metrics' owner series, 16 bytes a point and no copy per
/// descendant (80 MB for a hundred runs of twenty metrics of 2,500 points);
/// should they exceed the memory pool, the scan is split in two.
const METRICS_PER_SCAN: usize = 32;

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
    let families: Vec<Family> = roots
        .iter()
        .map(|r| Family::new(&catalog, *r))
        .collect::<Result<_>>()?;

    let ctx = engine.scoped_session(scope).await?;
    let lineage = Lineage::of(&ctx)?;
    let runs: Vec<RunId> = families
        .iter()
        .flat_map(|f| f.members.iter())
        .map(|m| m.run.id)
        .collect();
    let names = metric_names(&ctx, engine.gate(), &runs, &request.metrics).await?;
    if names.is_empty() {
        return Err(Error::invalid(format!(
            "no metric of the selected families matches {}",
            request.metrics.join(", ")
        )));
    }
    let metrics: Vec<MetricGoal> = names
        .iter()
        .map(|name| MetricGoal {
            name: name.clone(),
            goal: request.goals.of(name),
        })
        .collect();

    // Every metric the runs logged is asked for: a scan of them all needs no filter.
    let every = request
        .metrics
        .iter()
        .any(|s| MetricFilter::glob(s) == MetricFilter::Like("%".to_string()));
    let scans = families.len() * names.len().div_ceil(METRICS_PER_SCAN);
    progress(Progress::Start { scans });
    let scanner = FamilyScans {
        ctx: &ctx,
        gate: engine.gate(),
        lineage: &lineage,
        metrics: &metrics,
        every,
        started: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        progress,
    };
    // By index: a future borrowing its argument would not be `Send` for
    // every lifetime, which a server route needs.
    let sections: Vec<Result<FamilyReport>> = futures::stream::iter(0..families.len())
        .map(|i| scanner.family(&families[i]))
        .buffered(FAMILIES_IN_FLIGHT)
        .collect()
        .await;
    Ok(Report {
        project: project.to_string(),
        metrics,
        families: sections.into_iter().collect::<Result<_>>()?,
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

/// A spawned scan, stopped when the report is dropped (its client gone)
/// rather than left reading for nobody.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A task of the report that failed to finish (it panicked).
fn joined(e: tokio::task::JoinError) -> Error {
    Error::Query(DataFusionError::ExecutionJoin(Box::new(e)))
}

/// A family as the report reads it: its members, their stitched views and
/// their resolved parents.
struct Family {
    /// Root first, then breadth-first by id.
    members: Arc<Vec<FamilyMember>>,
    /// Every member's segments, `(member, segment)`.
    views: Vec<(RunId, Segment)>,
    /// Each member's segments, in step order, by member.
    segments: Arc<Vec<Vec<Segment>>>,
    /// Display id of each member's resolved parent.
    parents: Arc<Vec<Option<String>>>,
}

impl Family {
    fn new(catalog: &CatalogSnapshot, root: RunId) -> Result<Self> {
        let members = catalog.family(root)?;
        let mut views = Vec::new();
        let mut segments = Vec::with_capacity(members.len());
        for member in &members {
            let run = member.run.id;
            let own = catalog.segments(run)?;
            views.extend(own.iter().map(|s| (run, *s)));
            segments.push(own);
        }
        let parents = members
            .iter()
            .map(|m| {
                m.run
                    .parent_id
                    .and_then(|p| catalog.get(p))
                    .map(|p| p.display_id.clone())
            })
            .collect();
        Ok(Self {
            members: Arc::new(members),
            views,
            segments: Arc::new(segments),
            parents: Arc::new(parents),
        })
    }
}

/// The scans of the report's metrics, family by family.
struct FamilyScans<'a> {
    ctx: &'a SessionContext,
    /// Runs the scans where the engine runs queries (here or on a cluster).
    gate: &'a QueryGate,
    lineage: &'a Lineage,
    metrics: &'a [MetricGoal],
    /// Whether `metrics` are every metric the runs logged.
    every: bool,
    /// Scans started and finished so far, for progress.
    started: AtomicUsize,
    done: AtomicUsize,
    progress: &'a (dyn Fn(Progress) + Send + Sync),
}

impl FamilyScans<'_> {
    /// Every metric's section of `family`, in report order.
    async fn family(&self, family: &Family) -> Result<FamilyReport> {
        let mut sections = Vec::with_capacity(self.metrics.len());
        let mut chunks: Vec<&[MetricGoal]> = self.metrics.chunks(METRICS_PER_SCAN).rev().collect();
        while let Some(metrics) = chunks.pop() {
            let names: Vec<String> = metrics.iter().map(|m| m.name.clone()).collect();
            let owners = match self.scan(family, &names).await {
                Err(e) if e.kind() == ErrorKind::ResourcesExhausted && metrics.len() > 1 => {
                    let (first, second) = metrics.split_at(metrics.len() / 2);
                    chunks.extend([second, first]);
                    continue;
                }
                found => Arc::new(found?),
            };
            // The numbers cost about what the scan does: off the runtime's
            // workers, so the other family's scan goes on meanwhile.
            let members = family.members.clone();
            let segments = family.segments.clone();
            let parents = family.parents.clone();
            let goals: Vec<MetricGoal> = metrics.to_vec();
            let computed = tokio::task::spawn_blocking(move || {
                goals
                    .into_iter()
                    .enumerate()
                    .map(|(k, m)| {
                        let series = stitched(&members, &segments, &owners, k, &m.name);
                        family_metric(&members, &parents, m.name, m.goal, &series)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(joined)?;
            sections.extend(computed);
            let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
            (self.progress)(Progress::ScanDone { done });
        }
        Ok(family_report(&family.members, sections))
    }

    /// The owners' series of `names` of every member of `family`.
    async fn scan(&self, family: &Family, names: &[String]) -> Result<OwnerPoints> {
        let index = self.started.fetch_add(1, Ordering::Relaxed);
        let spec = format!("{}: {}", family.members[0].run.display_id, names.join(", "));
        (self.progress)(Progress::Scan {
            index,
            spec: spec.clone(),
            rows: 0,
        });
        let mut columns = vec!["run_id", "step", "value"];
        let plan = match names {
            [name] => {
                let metric = MetricFilter::Exact(name.clone());
                self.lineage
                    .owner_points(&family.views, Some(&metric), None)?
            }
            several => {
                columns.push("metric");
                let filter = (!self.every || several.len() < self.metrics.len()).then(|| {
                    col("metric").in_list(several.iter().map(|n| lit(n.as_str())).collect(), false)
                });
                self.lineage.owner_points(&family.views, None, filter)?
            }
        };
        let df = DataFrame::new(self.ctx.state(), plan).select_columns(&columns)?;
        let mut stream = self.gate.execute(df).await?;
        let reservation = MemoryConsumer::new(format!("report series {spec}"))
            .register(&self.ctx.runtime_env().memory_pool);
        // Polled on the runtime's workers, not the caller's thread (the CLI's
        // main thread), which would otherwise decode both families' batches alone.
        let mut found = Gathering::new(names, reservation);
        let mut gathering = AbortOnDrop(tokio::spawn(async move {
            let mut rows = 0;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                found.add(&batch)?;
            }
            Ok::<_, Error>((found.finish(), rows))
        }));
        let (found, rows) = (&mut gathering.0).await.map_err(joined)??;
        (self.progress)(Progress::Scan { index, spec, rows });
        Ok(found)
    }
}

/// Each member's stitched series of metric `metric` of the scan (`name`):
/// its segments' slices of their owners' series.
fn stitched<'a>(
    members: &[FamilyMember],
    segments: &[Vec<Segment>],
    owners: &'a OwnerPoints,
    metric: usize,
    name: &str,
) -> Vec<Pieces<'a>> {
    members
        .iter()
        .zip(segments)
        .map(|(member, segments)| {
            let viewer = member.run.id;
            let mut pieces = Pieces::default();
            for segment in segments {
                if !catalog::sees(viewer, segment.owner, name) {
                    continue;
                }
                if let Some(series) = owners.get(segment.owner, metric) {
                    pieces.push_segment(series, segment, segment.owner != viewer);
                }
            }
            pieces
        })
        .collect()
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
                let mut keep = col("run_id").in_list(ids, false);
                if pattern != "%" {
                    keep = keep.and(col("metric").like(lit(pattern)));
                }
                // Distinct first: the cast then touches a name per metric,
                // not one per point.
                let writes = ctx
                    .table(METRIC_WRITES)
                    .await?
                    .filter(keep)?
                    .select(vec![col("metric")])?
                    .distinct()?
                    .select(vec![cast(col("metric"), DataType::Utf8).alias("metric")])?;
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

/// One metric of one family: each run's stitched series (by member), its
/// numbers, ranks and winner.
fn family_metric(
    family: &[FamilyMember],
    parents: &[Option<String>],
    name: String,
    goal: Goal,
    finite: &[Pieces],
) -> FamilyMetric {
    let index: HashMap<RunId, usize> = family
        .iter()
        .enumerate()
        .map(|(i, m)| (m.run.id, i))
        .collect();
    let mut rows: Vec<RunRow> = family
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let parent = m
                .run
                .parent_id
                .zip(m.run.fork_step)
                .and_then(|(p, f)| index.get(&p).map(|&pi| (&finite[pi], f)));
            RunRow {
                run_id: m.run.id,
                display_id: m.run.display_id.clone(),
                name: m.run.name.clone(),
                parent: parents[i].clone(),
                fork_step: m.run.fork_step,
                depth: m.depth,
                status: m.run.status.to_string(),
                stats: stats::finite_stats(&finite[i], parent, goal),
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
    // Only what the chart draws is kept: a report over many long runs
    // must not hold every stitched series until rendering.
    let budget = chart::points_per_part(family.len());
    let inherited = chart::draws_inherited(family.len());
    FamilyMetric {
        metric: name,
        goal,
        winner: win.map(|w| rows[w].display_id.clone()),
        runs: rows,
        series: finite
            .iter()
            .map(|f| Arc::new(f.drawn(budget, inherited)))
            .collect(),
    }
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
