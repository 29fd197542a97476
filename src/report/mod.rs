//! Batch comparison reports across forked experiment families.
//!
//! A report covers some or all families of one project. Its numbers come
//! from one scan per requested metric (name or pattern): the stitched views
//! of every run of the selected families at once, planned by
//! `lineage_functions` and executed by the stitching operator (`query::stitch`),
//! which reads each owner's points once and hands back every run's stitched
//! series in `(run, metric, step)` order. The report does no stitching of its
//! own: what it ranks is what `family_metrics` returns.

pub mod chart;
pub mod render;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use datafusion::prelude::DataFrame;
use futures::StreamExt;
use serde::Serialize;

use crate::catalog::{CatalogSnapshot, FamilyMember, RunId, RunStatus};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::query::lineage_functions::{self, MetricFilter};
use crate::query::metric_selection::{glob_match, split_list};
use crate::scope::Projects;
pub use stats::{Goal, Point, RunStats};

/// Output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// One self-contained HTML file with inline SVG charts.
    Html,
    /// Markdown tables.
    Md,
    /// Every number, as one JSON document.
    Json,
    /// One row per (family, metric, run).
    Csv,
}

impl std::str::FromStr for ReportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "html" => Ok(Self::Html),
            "md" | "markdown" => Ok(Self::Md),
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            other => Err(Error::invalid(format!(
                "unknown report format `{other}` (expected html, md, json or csv)"
            ))),
        }
    }
}

impl ReportFormat {
    /// HTTP media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Html => "text/html; charset=utf-8",
            Self::Md => "text/markdown; charset=utf-8",
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    /// Usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Html => "html",
            Self::Md => "md",
            Self::Json => "json",
            Self::Csv => "csv",
        }
    }
}

/// Goals per metric: entries `name=min|max` (the name may hold `*`), and a
/// bare `min|max` as the default for every other metric (`min` when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Goals {
    default: Goal,
    per_metric: Vec<(String, Goal)>,
}

impl Default for Goals {
    fn default() -> Self {
        Self {
            default: Goal::Min,
            per_metric: Vec::new(),
        }
    }
}

impl Goals {
    /// Parses `min`, `max`, or `train/loss=min,val/acc=max` (both may mix).
    pub fn parse(text: Option<&str>) -> Result<Self> {
        let mut goals = Goals::default();
        let Some(text) = text else { return Ok(goals) };
        let mut default_seen = false;
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.rsplit_once('=') {
                Some((metric, goal)) => {
                    let metric = metric.trim();
                    if metric.is_empty() {
                        return Err(Error::invalid(format!("goal `{entry}` names no metric")));
                    }
                    let goal = goal
                        .parse()
                        .map_err(|e| Error::invalid(format!("goal of `{metric}`: {e}")))?;
                    goals.per_metric.push((metric.to_string(), goal));
                }
                None => {
                    if default_seen {
                        return Err(Error::invalid("give at most one goal without a metric"));
                    }
                    default_seen = true;
                    goals.default = entry.parse().map_err(Error::invalid)?;
                }
            }
        }
        Ok(goals)
    }

    /// The goal of `metric`: the first matching entry, else the default.
    pub fn of(&self, metric: &str) -> Goal {
        self.per_metric
            .iter()
            .find(|(pattern, _)| glob_match(pattern, metric))
            .map_or(self.default, |(_, g)| *g)
    }
}

/// What a report covers.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    /// Project.
    pub project: String,
    /// Runs whose families to cover (any member names its family).
    pub families: Vec<String>,
    /// Cover every family of the project.
    pub all_families: bool,
    /// Metric names or patterns (`*` matches any text).
    pub metrics: Vec<String>,
    /// Goal per metric.
    pub goals: Goals,
}

impl ReportRequest {
    /// Splits a comma-separated list, dropping empty entries.
    pub fn split_list<S: AsRef<str>>(items: &[S]) -> Vec<String> {
        split_list(items)
    }
}

/// Progress of a report being computed.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Starting: this many metric scans to run.
    Start { scans: usize },
    /// Scanning metric spec `index` (0-based); `rows` points received so far
    /// (first sent with 0 when the scan starts).
    Scan {
        index: usize,
        spec: String,
        rows: u64,
    },
    /// One scan finished; the per-run numbers of its metrics follow.
    ScanDone { index: usize },
}

/// A run's row in a family table.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// Numeric id.
    pub run_id: RunId,
    /// Display id.
    pub display_id: String,
    /// The run's name.
    pub name: String,
    /// Display id of the resolved parent.
    pub parent: Option<String>,
    /// Last inherited step.
    pub fork_step: Option<u64>,
    /// Forks between the root and the run.
    pub depth: usize,
    /// Lifecycle status.
    pub status: String,
    /// The numbers.
    #[serde(flatten)]
    pub stats: RunStats,
    /// Rank by best value inside the family (1 = best; ties share a rank).
    pub rank: Option<usize>,
    /// The winning branch (one per family and metric).
    pub winner: bool,
}

/// One metric of one family: the table, and the series behind the chart.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyMetric {
    /// Metric name.
    pub metric: String,
    /// Goal used for best values and ranks.
    pub goal: Goal,
    /// Display id of the winning run, if any run has a value.
    pub winner: Option<String>,
    /// One row per run, in family order (root first, then breadth-first by id).
    pub runs: Vec<RunRow>,
    /// Each run's stitched series, for drawing (not serialized).
    #[serde(skip)]
    pub series: Vec<Arc<Vec<Point>>>,
}

/// The best run of a family for one metric, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct BestRun {
    /// Metric.
    pub metric: String,
    /// Display id of the winner.
    pub run: Option<String>,
    /// Its best value.
    pub value: Option<f64>,
    /// Step of that value.
    pub step: Option<u64>,
}

/// One family section.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyReport {
    /// Display id of the root.
    pub root: String,
    /// Numeric id of the root.
    pub root_id: RunId,
    /// The family's experiment name (the root's name).
    pub experiment: String,
    /// Anchor of the section in HTML and Markdown.
    pub anchor: String,
    /// Number of runs.
    pub size: usize,
    /// Largest depth.
    pub depth: usize,
    /// Runs still RUNNING (their numbers may move).
    pub running: Vec<String>,
    /// Best run per metric.
    pub best: Vec<BestRun>,
    /// Per-metric tables.
    pub metrics: Vec<FamilyMetric>,
}

/// A metric of the report with its goal.
#[derive(Debug, Clone, Serialize)]
pub struct MetricGoal {
    /// Metric name.
    pub name: String,
    /// Goal.
    pub goal: Goal,
}

/// A whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Project.
    pub project: String,
    /// Metrics covered, with goals.
    pub metrics: Vec<MetricGoal>,
    /// Family sections, by root id.
    pub families: Vec<FamilyReport>,
}

/// A report's rows are its family sections.
impl crate::query::gate::Delivered for Report {
    fn delivered(&self) -> (u64, u64) {
        (self.families.len() as u64, 0)
    }
}

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
    let mut views = Vec::new();
    for member in families.iter().flatten() {
        let run = member.run.id;
        views.extend(catalog.segments(run)?.into_iter().map(|s| (run, s)));
    }

    progress(Progress::Start {
        scans: request.metrics.len(),
    });
    // Metric by metric, so only one metric's series are in memory at a time.
    let mut metrics: Vec<MetricGoal> = Vec::new();
    let mut per_family: Vec<Vec<FamilyMetric>> = vec![Vec::new(); families.len()];
    for (index, spec) in request.metrics.iter().enumerate() {
        let filter = MetricFilter::glob(spec);
        let plan = lineage_functions::stitched_views_plan(&points, &views, Some(&filter))?;
        // The stitching operator holds the owners' points (in the memory
        // pool): of a named metric, their metric column is left unread.
        let columns: &[&str] = match &filter {
            MetricFilter::Exact(_) => &["run_id", "step", "value", "inherited"],
            MetricFilter::Like(_) => &["run_id", "metric", "step", "value", "inherited"],
        };
        let df = DataFrame::new(ctx.state(), plan).select_columns(columns)?;
        progress(Progress::Scan {
            index,
            spec: spec.clone(),
            rows: 0,
        });
        let mut stream = df.execute_stream().await?;
        let mut found = Collected::new(match &filter {
            MetricFilter::Exact(name) => Some(name.as_str()),
            MetricFilter::Like(_) => None,
        });
        let mut rows = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            found.add(&batch)?;
            progress(Progress::Scan {
                index,
                spec: spec.clone(),
                rows,
            });
        }
        progress(Progress::ScanDone { index });
        let mut found = found.finish();
        if let MetricFilter::Exact(name) = &filter {
            // A named metric gets its section even where no run logged it.
            found.entry(name.clone()).or_default();
        }
        for (name, mut stitched) in found {
            if metrics.iter().any(|m| m.name == name) {
                continue;
            }
            let goal = request.goals.of(&name);
            for (family, out) in families.iter().zip(per_family.iter_mut()) {
                out.push(family_metric(&catalog, family, &name, goal, &mut stitched)?);
            }
            metrics.push(MetricGoal { name, goal });
        }
    }
    if metrics.is_empty() {
        return Err(Error::invalid(format!(
            "no metric of the selected families matches {}",
            request.metrics.join(", ")
        )));
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

/// The stitched series of a scan, as its ordered batches arrive.
struct Collected {
    /// The metric of every row when the scan is of one named metric.
    named: Option<String>,
    done: BTreeMap<String, Stitched>,
    /// The series being read (the stitching operator sends each one whole).
    current: Option<(RunId, String, Vec<Point>)>,
}

impl Collected {
    fn new(named: Option<&str>) -> Self {
        Self {
            named: named.map(str::to_string),
            done: BTreeMap::new(),
            current: None,
        }
    }

    /// Adds a batch of `run_id, [metric,] step, value, inherited` (the
    /// metric is absent from a scan of one named metric).
    fn add(&mut self, batch: &arrow::array::RecordBatch) -> Result<()> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::invalid(format!("stitched plan lacks column {name}")))
        };
        let runs = column("run_id")?.as_primitive::<Int64Type>();
        let metrics = match self.named {
            Some(_) => None,
            None => Some(arrow::compute::cast(
                column("metric")?,
                &arrow::datatypes::DataType::Utf8,
            )?),
        };
        let metrics = metrics.as_ref().map(|m| m.as_string::<i32>());
        let named = self.named.clone().unwrap_or_default();
        let steps = column("step")?.as_primitive::<Int64Type>();
        let values = column("value")?.as_primitive::<Float64Type>();
        let inherited = column("inherited")?.as_boolean();
        for i in 0..batch.num_rows() {
            let metric = match metrics {
                Some(m) if m.is_null(i) => continue,
                Some(m) => m.value(i),
                None => named.as_str(),
            };
            if runs.is_null(i) || steps.is_null(i) {
                continue;
            }
            let run = runs.value(i) as RunId;
            if !matches!(&self.current, Some((r, m, _)) if *r == run && m == metric) {
                self.flush();
                self.current = Some((run, metric.to_string(), Vec::new()));
            }
            let value = if values.is_null(i) {
                f64::NAN
            } else {
                values.value(i)
            };
            if let Some((_, _, series)) = &mut self.current {
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
        if let Some((run, metric, series)) = self.current.take() {
            let mut series = series;
            let all = self.done.entry(metric).or_default().entry(run).or_default();
            all.append(&mut series);
        }
    }

    /// Every series read, by metric and run, each sorted by step.
    fn finish(mut self) -> BTreeMap<String, Stitched> {
        self.flush();
        // Already so when the plan keeps the operator's order; checked, not assumed.
        for series in self.done.values_mut().flat_map(|s| s.values_mut()) {
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
            .map(|s| Arc::new(stats::downsample_series(s, chart::MAX_POINTS_PER_RUN)))
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
