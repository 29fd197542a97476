//! Lineage table functions: `lineage`, `stitched_metrics`, `family_runs`,
//! `family_metrics`, `project_metrics`.
//!
//! Each call resolves lineage from the catalog snapshot the session was built
//! with (no I/O at planning time) and returns either a small in-memory table or
//! a view whose plan is ordinary scans of `metrics` with `run_id` / `step`
//! predicates, so file statistics and the page index prune every segment.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{
    MemTable, TableFunctionArgs, TableFunctionImpl, TableProvider, view::ViewTable,
};
use datafusion::common::{Column, ScalarValue, plan_err};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::provider_as_source;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::{SessionContext, col, lit};

pub use super::metric_selection::MetricFilter;
use super::points::PointSource;
use super::stitch::{StitchedTable, Views};
use crate::catalog::{CatalogSnapshot, Run, RunId, Segment};
use crate::ingest::SYSTEM_METRIC_PREFIX;

/// Registers the lineage table functions on `ctx`.
pub fn register(ctx: &SessionContext, snapshot: Arc<CatalogSnapshot>, points: Arc<PointSource>) {
    let shared = Shared { snapshot, points };
    ctx.register_udtf("lineage", Arc::new(Lineage(shared.clone())));
    ctx.register_udtf(
        "stitched_metrics",
        Arc::new(StitchedMetrics(shared.clone())),
    );
    ctx.register_udtf("family_runs", Arc::new(FamilyRuns(shared.clone())));
    ctx.register_udtf("family_metrics", Arc::new(FamilyMetrics(shared.clone())));
    ctx.register_udtf("project_metrics", Arc::new(ProjectMetrics(shared)));
}

/// A table function of `ctx` called with typed arguments, as a DataFrame:
/// how forkline's own queries use the lineage functions without SQL text.
pub fn call(ctx: &SessionContext, name: &str, args: Vec<Expr>) -> DFResult<DataFrame> {
    let state = ctx.state();
    let provider = ctx
        .table_function(name)?
        .create_table_provider_with_args(TableFunctionArgs::new(&args, &state))?;
    ctx.read_table(provider)
}

#[derive(Debug, Clone)]
struct Shared {
    snapshot: Arc<CatalogSnapshot>,
    points: Arc<PointSource>,
}

#[derive(Debug)]
struct Lineage(Shared);
#[derive(Debug)]
struct StitchedMetrics(Shared);
#[derive(Debug)]
struct FamilyRuns(Shared);
#[derive(Debug)]
struct FamilyMetrics(Shared);
#[derive(Debug)]
struct ProjectMetrics(Shared);

fn literal<'a>(name: &str, position: &str, expr: &'a Expr) -> DFResult<&'a ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Ok(value),
        other => plan_err!("{name}: {position} must be a constant, got `{other}`"),
    }
}

/// The `run` argument: an integer id or a display id string.
fn run_arg<'s>(snapshot: &'s CatalogSnapshot, name: &str, expr: &Expr) -> DFResult<&'s Arc<Run>> {
    let value = literal(name, "run", expr)?;
    let reference = match value {
        ScalarValue::Int8(Some(_))
        | ScalarValue::Int16(Some(_))
        | ScalarValue::Int32(Some(_))
        | ScalarValue::Int64(Some(_))
        | ScalarValue::UInt8(Some(_))
        | ScalarValue::UInt16(Some(_))
        | ScalarValue::UInt32(Some(_))
        | ScalarValue::UInt64(Some(_)) => value.to_string(),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => s.clone(),
        other => {
            return plan_err!(
                "{name}: run must be a run id (integer) or display id (string), got {} of type {}",
                other,
                other.data_type()
            );
        }
    };
    snapshot
        .lookup(&reference)
        .or_else(|e| plan_err!("{name}: {e}"))
}

fn metric_arg(name: &str, expr: Option<&Expr>) -> DFResult<Option<MetricFilter>> {
    let Some(expr) = expr else { return Ok(None) };
    match literal(name, "metric", expr)? {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Ok(Some(MetricFilter::sql(s))),
        other => plan_err!(
            "{name}: metric must be a string (a name or a % LIKE pattern), got {} of type {}",
            other,
            other.data_type()
        ),
    }
}

/// Checks arity and decodes `(run [, metric])`; `with_metric` says whether a metric may follow.
fn call_args<'s>(
    snapshot: &'s CatalogSnapshot,
    name: &str,
    exprs: &[Expr],
    with_metric: bool,
) -> DFResult<(&'s Arc<Run>, Option<MetricFilter>)> {
    let (max, signature) = if with_metric {
        (2, "(run [, metric])")
    } else {
        (1, "(run)")
    };
    if exprs.is_empty() || exprs.len() > max {
        return plan_err!("{name} takes {signature}, got {} argument(s)", exprs.len());
    }
    Ok((
        run_arg(snapshot, name, &exprs[0])?,
        metric_arg(name, exprs.get(1))?,
    ))
}

fn mem_table(fields: Vec<Field>, columns: Vec<ArrayRef>) -> DFResult<Arc<dyn TableProvider>> {
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

impl TableFunctionImpl for Lineage {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        let snapshot = &self.0.snapshot;
        let (run, _) = call_args(snapshot, "lineage", args.exprs(), false)?;
        let segments = snapshot
            .segments(run.id)
            .or_else(|e| plan_err!("lineage: {e}"))?;
        let display = |id: RunId| snapshot.get(id).map(|r| r.display_id.clone());
        mem_table(
            vec![
                Field::new("run_id", DataType::Int64, false),
                Field::new("display_id", DataType::Utf8, false),
                Field::new("depth", DataType::Int64, false),
                Field::new("from_step", DataType::Int64, false),
                Field::new("to_step", DataType::Int64, true),
            ],
            vec![
                Arc::new(
                    segments
                        .iter()
                        .map(|s| s.owner as i64)
                        .collect::<Int64Array>(),
                ),
                Arc::new(
                    segments
                        .iter()
                        .map(|s| display(s.owner))
                        .collect::<StringArray>(),
                ),
                Arc::new(
                    segments
                        .iter()
                        .map(|s| s.depth as i64)
                        .collect::<Int64Array>(),
                ),
                Arc::new(
                    segments
                        .iter()
                        .map(|s| s.from_step as i64)
                        .collect::<Int64Array>(),
                ),
                Arc::new(
                    segments
                        .iter()
                        .map(|s| s.to_step.map(|t| t as i64))
                        .collect::<Int64Array>(),
                ),
            ],
        )
    }
}

impl TableFunctionImpl for FamilyRuns {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        let snapshot = &self.0.snapshot;
        let (run, _) = call_args(snapshot, "family_runs", args.exprs(), false)?;
        let family = snapshot
            .family(run.id)
            .or_else(|e| plan_err!("family_runs: {e}"))?;
        let strs = |f: &dyn Fn(&Run) -> String| -> ArrayRef {
            Arc::new(
                family
                    .iter()
                    .map(|m| Some(f(&m.run)))
                    .collect::<StringArray>(),
            )
        };
        mem_table(
            vec![
                Field::new("run_id", DataType::Int64, false),
                Field::new("display_id", DataType::Utf8, false),
                Field::new("name", DataType::Utf8, false),
                Field::new("experiment", DataType::Utf8, false),
                Field::new("parent_id", DataType::Int64, true),
                Field::new("fork_step", DataType::Int64, true),
                Field::new("depth", DataType::Int64, false),
                Field::new("status", DataType::Utf8, false),
            ],
            vec![
                Arc::new(
                    family
                        .iter()
                        .map(|m| m.run.id as i64)
                        .collect::<Int64Array>(),
                ),
                strs(&|r| r.display_id.clone()),
                strs(&|r| r.name.clone()),
                strs(&|r| r.experiment.clone()),
                Arc::new(
                    family
                        .iter()
                        .map(|m| m.run.parent_id.map(|p| p as i64))
                        .collect::<Int64Array>(),
                ),
                Arc::new(
                    family
                        .iter()
                        .map(|m| m.run.fork_step.map(|s| s as i64))
                        .collect::<Int64Array>(),
                ),
                Arc::new(
                    family
                        .iter()
                        .map(|m| m.depth as i64)
                        .collect::<Int64Array>(),
                ),
                strs(&|r| r.status.to_string()),
            ],
        )
    }
}

impl TableFunctionImpl for StitchedMetrics {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        let snapshot = &self.0.snapshot;
        let (run, metric) = call_args(snapshot, "stitched_metrics", args.exprs(), true)?;
        let segments = snapshot
            .segments(run.id)
            .or_else(|e| plan_err!("stitched_metrics: {e}"))?;
        let plan = stitched_plan(&self.0.points, run.id, &segments, metric.as_ref())?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

impl TableFunctionImpl for FamilyMetrics {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        let snapshot = &self.0.snapshot;
        let (run, metric) = call_args(snapshot, "family_metrics", args.exprs(), true)?;
        let family = snapshot
            .family(run.id)
            .or_else(|e| plan_err!("family_metrics: {e}"))?;
        let mut views = Vec::new();
        for member in &family {
            let segments = snapshot
                .segments(member.run.id)
                .or_else(|e| plan_err!("family_metrics: {e}"))?;
            views.extend(segments.into_iter().map(|s| (member.run.id, s)));
        }
        let plan = family_plan(&self.0.points, &views, metric.as_ref())?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

impl TableFunctionImpl for ProjectMetrics {
    /// Every run of a project, each with its own stitched view: the family plan
    /// over all the project's families at once, so each owner is read once.
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        const NAME: &str = "project_metrics";
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!(
                "{NAME} takes (project [, metric]), got {} argument(s)",
                exprs.len()
            );
        }
        let project = match literal(NAME, "project", &exprs[0])? {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)) => s.clone(),
            other => {
                return plan_err!(
                    "{NAME}: project must be a string, got {} of type {}",
                    other,
                    other.data_type()
                );
            }
        };
        let metric = metric_arg(NAME, exprs.get(1))?;
        let snapshot = &self.0.snapshot;
        let mut views = Vec::new();
        for run in snapshot.runs().filter(|r| r.project == project) {
            let segments = snapshot
                .segments(run.id)
                .or_else(|e| plan_err!("{NAME}: {e}"))?;
            views.extend(segments.into_iter().map(|s| (run.id, s)));
        }
        if views.is_empty() {
            return plan_err!("{NAME}: unknown project `{project}`");
        }
        let plan = family_plan(&self.0.points, &views, metric.as_ref())?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

/// System metrics (`sys/…`) describe the host a run ran on: never inherited.
/// With one named metric the answer is known at planning time, which spares
/// a string comparison on every inherited row.
fn not_system_metric(metric: Expr, filter: Option<&MetricFilter>) -> Expr {
    match filter {
        Some(MetricFilter::Exact(m)) => lit(!m.starts_with(SYSTEM_METRIC_PREFIX)),
        _ => metric.not_like(lit(format!("{SYSTEM_METRIC_PREFIX}%"))),
    }
}

fn stitched_projection(viewer: Expr, source: Expr, inherited: Expr, q: &str) -> Vec<Expr> {
    let c = |name: &str| Expr::Column(Column::new(Some(q), name));
    vec![
        viewer.alias("run_id"),
        source.alias("source_run_id"),
        c("metric").alias("metric"),
        c("step").alias("step"),
        c("value").alias("value"),
        c("time").alias("time"),
        inherited.alias("inherited"),
    ]
}

/// Most segments a scan predicate gives a term each. Each file a scan opens
/// rewrites and prunes with the whole predicate, at a cost that grows about
/// with the square of its terms (DataFusion 55; a scan of 101 one-run files
/// in a debug build: 0.1 s with 16 terms, 1.1 s with 32, 15 s with 100), so
/// one term per segment made deep lineages unusable. Up to this many
/// segments (lineages of depth 15) each keeps its own term.
const MAX_SEGMENT_TERMS: usize = 16;

/// Terms of the predicate of a deeper lineage, each covering a run of
/// neighbouring segments. A store that is not compacted yet holds a file per
/// ancestor: the stitched series of a depth-1,000 run, 1,000 files, took
/// 3.0 s with 16 terms, 1.8 s with 8 and 1.3 s with 4, where a plain scan of
/// those files takes 0.4 s.
const GROUPED_TERMS: usize = 4;

/// The points of `viewer`'s stitched series: one scan of the owners' points
/// whose predicate is the segment list itself, `(run_id = owner AND step in
/// range)` ORed, so statistics and the page index prune to exactly the
/// segments' pages (each stored point belongs to at most one segment).
///
/// Of more than [`MAX_SEGMENT_TERMS`] segments, a term covers several
/// neighbours: the range of their owners' ids and the steps they span
/// together. That is a superset of their points, which the stitching
/// operator cuts exactly.
pub fn segment_points(
    points: &PointSource,
    viewer: RunId,
    segments: &[Segment],
    metric: Option<&MetricFilter>,
) -> DFResult<LogicalPlanBuilder> {
    if segments.is_empty() {
        return plan_err!("a lineage has at least one segment");
    }
    let q = |name: &str| Expr::Column(Column::new(Some("metrics"), name));
    let per_term = match segments.len() {
        n if n <= MAX_SEGMENT_TERMS => 1,
        n => n.div_ceil(GROUPED_TERMS),
    };
    let in_segments = segments
        .chunks(per_term)
        .map(|group| {
            let (first, last) = (group[0], group[group.len() - 1]);
            let mut predicate = match group {
                [one] => q("run_id").eq(lit(one.owner as i64)),
                // The scan below already keeps the owners' rows only, so a
                // range of ids suffices (an IN list would be expanded into
                // one pruning term per owner, in every file opened).
                _ => {
                    let (lo, hi) = group.iter().fold((u64::MAX, 0), |(lo, hi), s| {
                        (lo.min(s.owner), hi.max(s.owner))
                    });
                    q("run_id").between(lit(lo as i64), lit(hi as i64))
                }
            };
            predicate = predicate.and(q("step").gt_eq(lit(first.from_step as i64)));
            if let Some(to) = last.to_step {
                predicate = predicate.and(q("step").lt_eq(lit(to as i64)));
            }
            if group.iter().all(|s| s.owner != viewer) {
                predicate = predicate.and(not_system_metric(q("metric"), metric));
            }
            predicate
        })
        .reduce(Expr::or)
        .expect("at least one segment");
    let mut owners: Vec<i64> = segments.iter().map(|s| s.owner as i64).collect();
    owners.sort_unstable();
    owners.dedup();
    let mut scan = points
        .latest(Some(&owners), "metrics")?
        .filter(in_segments)?;
    if let Some(m) = metric {
        scan = scan.filter(m.expr(q("metric")))?;
    }
    Ok(scan)
}

/// The stitched series of `viewer`: its segment points, stitched (the
/// operator holds one run's series, which is the answer's size).
pub fn stitched_plan(
    points: &PointSource,
    viewer: RunId,
    segments: &[Segment],
    metric: Option<&MetricFilter>,
) -> DFResult<LogicalPlan> {
    let owners = segment_points(points, viewer, segments, metric)?.build()?;
    let views: Vec<(RunId, Segment)> = segments.iter().map(|s| (viewer, *s)).collect();
    stitch(owners, metric, &views)
}

/// The stitching operator over `owners`, as a plan.
fn stitch(
    owners: LogicalPlan,
    metric: Option<&MetricFilter>,
    views: &[(RunId, Segment)],
) -> DFResult<LogicalPlan> {
    let exact = match metric {
        Some(MetricFilter::Exact(name)) => Some(name.as_str()),
        _ => None,
    };
    let table = StitchedTable::try_new(owners, exact, Views::new(views))?;
    LogicalPlanBuilder::scan("stitched", provider_as_source(Arc::new(table)), None)?.build()
}

/// Stitched views of many runs through the stitching operator whatever the
/// metric selection, ordered by `(run_id, metric, step)`: for a caller that
/// holds the selected owners' points anyway (the report), where the joined
/// plan would fan them out unordered.
pub fn stitched_views_plan(
    points: &PointSource,
    views: &[(RunId, Segment)],
    metric: Option<&MetricFilter>,
) -> DFResult<LogicalPlan> {
    stitch(owner_points(points, views, metric)?, metric, views)
}

/// Stitched views of many runs at once, reading an owner's data once however
/// many descendants inherit it. Of one metric, the stitching operator slices
/// the owners' sorted points per segment (`stitch`); of several, the joined
/// plan streams however many points the metrics hold.
pub fn family_plan(
    points: &PointSource,
    views: &[(RunId, Segment)],
    metric: Option<&MetricFilter>,
) -> DFResult<LogicalPlan> {
    match metric {
        Some(MetricFilter::Exact(_)) => stitch(owner_points(points, views, metric)?, metric, views),
        _ => joined_plan(points, views, metric),
    }
}

/// The latest points of every owner of `views`, of `metric`.
fn owner_points(
    points: &PointSource,
    views: &[(RunId, Segment)],
    metric: Option<&MetricFilter>,
) -> DFResult<LogicalPlan> {
    if views.is_empty() {
        return plan_err!("a family has at least one run");
    }
    let mut owners: Vec<i64> = views.iter().map(|(_, s)| s.owner as i64).collect();
    owners.sort_unstable();
    owners.dedup();
    let mut points = points.latest(Some(&owners), "m")?;
    if let Some(m) = metric {
        points = points.filter(m.expr(col("metric")))?;
    }
    points.build()
}

/// Stitched views of many runs as one scan of the owners' points joined to
/// the `(viewer, owner, from_step, to_step)` segment list: it streams, holding
/// no more than a batch whatever the views cover.
pub fn joined_plan(
    points: &PointSource,
    views: &[(RunId, Segment)],
    metric: Option<&MetricFilter>,
) -> DFResult<LogicalPlan> {
    let points = owner_points(points, views, metric)?;
    let rows: Vec<Vec<Expr>> = views
        .iter()
        .map(|(viewer, s)| {
            vec![
                lit(*viewer as i64),
                lit(s.owner as i64),
                lit(s.from_step as i64),
                lit(s.to_step.map_or(i64::MAX, |t| t as i64)),
            ]
        })
        .collect();
    let segments = LogicalPlanBuilder::values(rows)?
        .project(vec![
            col("column1").alias("viewer"),
            col("column2").alias("owner"),
            col("column3").alias("from_step"),
            col("column4").alias("to_step"),
        ])?
        .alias("s")?
        .build()?;
    let s = |name: &str| Expr::Column(Column::new(Some("s"), name));
    let m = |name: &str| Expr::Column(Column::new(Some("m"), name));
    LogicalPlanBuilder::from(segments)
        .join(
            points,
            JoinType::Inner,
            (
                vec![Column::new(Some("s"), "owner")],
                vec![Column::new(Some("m"), "run_id")],
            ),
            Some(
                m("step").between(s("from_step"), s("to_step")).and(
                    s("viewer")
                        .eq(m("run_id"))
                        .or(not_system_metric(m("metric"), metric)),
                ),
            ),
        )?
        .project(stitched_projection(
            s("viewer"),
            m("run_id"),
            s("viewer").not_eq(m("run_id")),
            "m",
        ))?
        .build()
}
