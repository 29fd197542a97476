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
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;

use super::Lineage;
use crate::catalog::{CatalogSnapshot, Run, RunId};
use crate::query::scan::MetricFilter;

/// Registers the lineage table functions on `ctx`, each reading through `lineage`.
pub fn register(ctx: &SessionContext, lineage: Arc<Lineage>) {
    let shared = lineage;
    ctx.register_udtf("lineage", Arc::new(Segments(shared.clone())));
    ctx.register_udtf(
        "stitched_metrics",
        Arc::new(StitchedMetrics(shared.clone())),
    );
    ctx.register_udtf("family_runs", Arc::new(FamilyRuns(shared.clone())));
    ctx.register_udtf("family_metrics", Arc::new(FamilyMetrics(shared.clone())));
    ctx.register_udtf("project_metrics", Arc::new(ProjectMetrics(shared)));
}

#[derive(Debug)]
struct Segments(Arc<Lineage>);
#[derive(Debug)]
struct StitchedMetrics(Arc<Lineage>);
#[derive(Debug)]
struct FamilyRuns(Arc<Lineage>);
#[derive(Debug)]
struct FamilyMetrics(Arc<Lineage>);
#[derive(Debug)]
struct ProjectMetrics(Arc<Lineage>);

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

impl TableFunctionImpl for Segments {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        let snapshot = self.0.snapshot();
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
        let snapshot = self.0.snapshot();
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
        let lineage = &self.0;
        let (run, metric) = call_args(lineage.snapshot(), "stitched_metrics", args.exprs(), true)?;
        lineage.stitched(run.id, metric)
    }
}

impl TableFunctionImpl for FamilyMetrics {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        let lineage = &self.0;
        let (run, metric) = call_args(lineage.snapshot(), "family_metrics", args.exprs(), true)?;
        lineage.family(run.id, metric)
    }
}

impl TableFunctionImpl for ProjectMetrics {
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
        self.0.project(&project, metric)
    }
}
