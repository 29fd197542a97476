//! The read path: session building, lineage table functions, downsampling
//! aggregates, read-only SQL.

pub mod bounded;
pub mod downsample;
pub mod file_scan;
pub mod gate;
pub mod limits;
pub mod lineage_functions;
pub mod lineage_plans;
mod lineage_pushdown;
mod lineage_view;
pub mod metric_selection;
pub mod ordered_first_last;
pub mod points;
pub mod run_aggregate;
pub mod runner;
pub mod series_export;
pub mod session;
pub mod sorted_aggregate;
pub mod stitch;
pub mod system;
pub mod unnest_keys;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use datafusion::error::DataFusionError;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::prelude::{DataFrame, SQLOptions, SessionContext, col};

use crate::catalog::Segment;
use crate::error::{Error, Result};

/// Plans `sql`, refusing anything that is not a read-only query or that
/// passes the limits of [`limits`]. Every SQL text from outside (HTTP, Flight
/// SQL, the CLI) and every query forkline writes itself is planned here.
pub async fn read_only_sql(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    limits::check_text(sql)?;
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = limits::check_statement(state.sql_to_statement(sql, &dialect)?)?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let planned = async {
        let plan = state.statement_to_plan(statement).await?;
        options.verify_plan(&plan)?;
        ctx.execute_logical_plan(plan).await
    };
    planned.await.map_err(|e| match e {
        DataFusionError::Plan(msg)
            if ["DDL", "DML", "Statement"]
                .iter()
                .any(|kind| msg.starts_with(&format!("{kind} not supported"))) =>
        {
            Error::invalid(format!("only read-only queries are accepted ({msg})"))
        }
        other => Error::from(other),
    })
}

/// Highest step of a stitched view over all metrics (`None` if it has no points).
///
/// Segments are increasing step ranges, so the highest step lies in the last
/// segment that holds a point. The last one, the viewed run's own, is read
/// first and alone: a run that logged past its fork step is answered by a
/// scan of its own points, however deep its lineage. Only when it is empty
/// is the rest of the view read, stitched as `stitched_metrics` reads it.
pub async fn stitched_max_step(ctx: &SessionContext, segments: &[Segment]) -> Result<Option<u64>> {
    let Some((own, inherited)) = segments.split_last() else {
        return Ok(None);
    };
    let points = session::points(ctx)?;
    for part in [std::slice::from_ref(own), inherited] {
        if part.is_empty() {
            continue;
        }
        let plan = lineage_functions::stitched_plan(&points, own.owner, part, None)?;
        let plan = LogicalPlanBuilder::from(plan)
            .aggregate(
                Vec::<datafusion::prelude::Expr>::new(),
                vec![max(col("step")).alias("max_step")],
            )?
            .build()?;
        let batches = DataFrame::new(ctx.state(), plan).collect().await?;
        let value = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .map(|b| b.column(0).as_primitive::<Int64Type>().clone())
            .and_then(|a| (a.null_count() == 0).then(|| a.value(0)));
        if let Some(value) = value {
            return Ok(Some(value as u64));
        }
    }
    Ok(None)
}

use std::sync::Arc;

use datafusion::physical_optimizer::PhysicalOptimizerRule;

/// `rules` with `rule` inserted before DataFusion's final sanity check, so
/// the plan it leaves is checked too.
fn before_sanity_check(
    mut rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>,
    rule: Arc<dyn PhysicalOptimizerRule + Send + Sync>,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let at = rules
        .iter()
        .position(|r| r.name() == "SanityCheckPlan")
        .unwrap_or(rules.len());
    rules.insert(at, rule);
    rules
}
