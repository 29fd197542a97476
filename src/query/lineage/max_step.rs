//! The highest step of a stitched view: what a fork's step is checked against.

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::prelude::{DataFrame, Expr, SessionContext, col};

use super::plans::stitched_plan;
use crate::catalog::Segment;
use crate::error::Result;
use crate::query::scan::PointSource;

/// Highest step of a stitched view over all metrics (`None` if it has no points).
///
/// Segments are increasing step ranges, so the highest step lies in the last
/// segment that holds a point. The last one, the viewed run's own, is read
/// first and alone: a run that logged past its fork step is answered by a
/// scan of its own points, however deep its lineage. Only when it is empty
/// is the rest of the view read, stitched as `stitched_metrics` reads it.
pub(super) async fn max_step(
    ctx: &SessionContext,
    points: &PointSource,
    segments: &[Segment],
) -> Result<Option<u64>> {
    let Some((own, inherited)) = segments.split_last() else {
        return Ok(None);
    };
    for part in [std::slice::from_ref(own), inherited] {
        if part.is_empty() {
            continue;
        }
        let plan = stitched_plan(points, own.owner, part, None)?;
        let plan = LogicalPlanBuilder::from(plan)
            .aggregate(Vec::<Expr>::new(), vec![max(col("step")).alias("max_step")])?
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
