//! A lineage view as a table: `stitched_metrics`, `family_metrics` and
//! `project_metrics` answer with one, planned when it is scanned so that the
//! filters pushed into it narrow the segment list and the owners' scan first
//! (see `pushdown`).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::datasource::TableType;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    EmptyRelation, Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::col;

use super::plans::lineage_plan;
use super::pushdown::{Pushed, support};
use crate::catalog::{RunId, Segment};
use crate::query::scan::{MetricFilter, PointSource};

/// The stitched views `views` (`(viewer, segment)` pairs) of `metric`.
#[derive(Debug)]
pub struct LineageView {
    points: Arc<PointSource>,
    views: Vec<(RunId, Segment)>,
    metric: Option<MetricFilter>,
    /// The viewer of a single stitched series (`stitched_metrics`).
    single: Option<RunId>,
    schema: SchemaRef,
}

impl LineageView {
    /// The view, its plan checked now (a bad call fails at planning time).
    pub fn try_new(
        points: Arc<PointSource>,
        views: Vec<(RunId, Segment)>,
        metric: Option<MetricFilter>,
        single: Option<RunId>,
    ) -> DFResult<Self> {
        let plan = lineage_plan(&points, &views, metric.as_ref(), single, None)?;
        let schema = Arc::new(plan.schema().as_arrow().clone());
        Ok(Self {
            points,
            views,
            metric,
            single,
            schema,
        })
    }

    /// The plan of the views `filters` leave.
    fn plan(&self, filters: &[Expr], session: &dyn Session) -> DFResult<LogicalPlan> {
        let pushed = Pushed::new(filters)?;
        let views = pushed.narrow(&self.views, session)?;
        if views.is_empty() {
            return Ok(LogicalPlan::EmptyRelation(EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(DFSchema::try_from(self.schema.clone())?),
            }));
        }
        // A metric named by a filter plans as one named in the call (the
        // stitching operator then knows it); the call's own selector stays
        // a filter of the owners.
        let mut owner_filters = pushed.points.clone();
        let named = pushed.named_metric().map(MetricFilter::Exact);
        let metric = match (&named, &self.metric) {
            (Some(named), Some(called)) if named != called => {
                owner_filters.push(called.expr(col("metric")));
                Some(named)
            }
            (Some(named), _) => Some(named),
            (None, called) => called.as_ref(),
        };
        lineage_plan(
            &self.points,
            &views,
            metric,
            self.single,
            conjunction(owner_filters),
        )
    }
}

#[async_trait]
impl TableProvider for LineageView {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        Ok(support(filters))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let mut plan = LogicalPlanBuilder::from(self.plan(filters, state)?);
        if let Some(projection) = projection {
            plan = plan.project(projection.iter().map(|&i| col(self.schema.field(i).name())))?;
        }
        if limit.is_some() {
            plan = plan.limit(0, limit)?;
        }
        state.create_physical_plan(&plan.build()?).await
    }
}
