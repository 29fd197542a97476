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
use datafusion::catalog::{MemTable, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::dataframe::DataFrame;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;

pub use super::lineage_plans::{owner_points, segment_points, stitched_plan, stitched_views_plan};
use super::lineage_view::LineageView;
pub use super::metric_selection::MetricFilter;
use super::points::PointSource;
use crate::catalog::{CatalogSnapshot, Run, RunId};

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
        let views = segments.into_iter().map(|s| (run.id, s)).collect();
        Ok(Arc::new(LineageView::try_new(
            self.0.points.clone(),
            views,
            metric,
            Some(run.id),
        )?))
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
        Ok(Arc::new(LineageView::try_new(
            self.0.points.clone(),
            views,
            metric,
            None,
        )?))
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
        Ok(Arc::new(LineageView::try_new(
            self.0.points.clone(),
            views,
            metric,
            None,
        )?))
    }
}
