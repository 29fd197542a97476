//! The stitching operator's execution plan.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ScalarValue, internal_err};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::{
    AcrossPartitions, ConstExpr, EquivalenceProperties, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::Distribution;
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

use super::batches::Batches;
use super::owner_points::OwnerPoints;
use super::spill;
use super::{OUTPUTS, Out, Views};

/// Stitches owner points into every viewer's series (one output partition,
/// ordered by `(run_id, metric, step)`).
#[derive(Debug)]
pub struct StitchExec {
    owners: Arc<dyn ExecutionPlan>,
    views: Arc<Views>,
    metric: Option<String>,
    schema: SchemaRef,
    outputs: Vec<Out>,
    properties: Arc<PlanProperties>,
}

impl StitchExec {
    pub(super) fn try_new(
        owners: Arc<dyn ExecutionPlan>,
        views: Arc<Views>,
        metric: Option<String>,
        schema: SchemaRef,
        outputs: Vec<Out>,
    ) -> DFResult<Self> {
        let column = |out: Out| -> Option<Arc<dyn PhysicalExpr>> {
            let i = outputs.iter().position(|o| *o == out)?;
            Some(Arc::new(PhysicalColumn::new(schema.field(i).name(), i)))
        };
        // A key column left out of the projection keeps the order of the
        // columns after it only where it is constant.
        let constant = |out: Out| match out {
            Out::RunId => views.single().is_some(),
            Out::Metric => metric.is_some(),
            _ => false,
        };
        let mut ordering = Vec::new();
        for out in [Out::RunId, Out::Metric, Out::Step] {
            match column(out) {
                Some(c) => ordering.push(PhysicalSortExpr::new_default(c)),
                None if constant(out) => {}
                None => break,
            }
        }
        let mut equivalences = EquivalenceProperties::new(schema.clone());
        if !ordering.is_empty() {
            equivalences.add_ordering(ordering);
        }
        let mut constants = Vec::new();
        if let (Some(c), Some(viewer)) = (column(Out::RunId), views.single()) {
            constants.push((c, ScalarValue::Int64(Some(viewer as i64))));
        }
        if let (Some(c), Some(m)) = (column(Out::Metric), &metric) {
            let value = match c.data_type(&schema)? {
                DataType::Utf8View => ScalarValue::Utf8View(Some(m.clone())),
                DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(m.clone())),
                _ => ScalarValue::Utf8(Some(m.clone())),
            };
            constants.push((c, value));
        }
        equivalences.add_constants(
            constants
                .into_iter()
                .map(|(c, v)| ConstExpr::new(c, AcrossPartitions::Uniform(Some(v)))),
        )?;
        let properties = PlanProperties::new(
            equivalences,
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            owners,
            views,
            metric,
            schema,
            outputs,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for StitchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "StitchExec: metric={}, viewers={}",
            self.metric.as_deref().unwrap_or("*"),
            self.views.0.len(),
        )
    }
}

impl ExecutionPlan for StitchExec {
    fn name(&self) -> &str {
        "StitchExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.owners]
    }

    /// All owners' points in one task: locally the input partitions are
    /// merged (as `execute` would anyway), and a distributed planner
    /// (Ballista) keeps that merge, a stage boundary, instead of handing
    /// each task a share of the owners.
    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        InputDistributionRequirements::new(vec![Distribution::SinglePartition])
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DFResult<TreeNodeRecursion>,
    ) -> DFResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let [owners] = <[_; 1]>::try_from(children)
            .or_else(|_| internal_err!("StitchExec takes one child"))?;
        Ok(Arc::new(Self::try_new(
            owners,
            self.views.clone(),
            self.metric.clone(),
            self.schema.clone(),
            self.outputs.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("StitchExec has one partition, asked for {partition}");
        }
        let owners = self.owners.clone();
        let views = self.views.clone();
        let metric = self.metric.clone();
        let outputs = self.outputs.clone();
        let schema = self.schema.clone();
        let batch_size = context.session_config().batch_size();
        let collected = async move {
            let reservation = MemoryConsumer::new("StitchExec").register(context.memory_pool());
            let held = OwnerPoints::collect(
                owners.clone(),
                metric.as_deref(),
                context.clone(),
                reservation,
            )
            .await;
            match held {
                Ok(points) => {
                    let pieces = points.pieces(&views);
                    let batches = Batches::new(points, pieces, batch_size.max(1), schema, outputs);
                    Ok::<_, DataFusionError>(futures::stream::iter(batches).boxed())
                }
                // What was read is dropped with the refused reservation.
                Err(e) if spill::is_pool_exhausted(&e) => Ok(spill::sorted_stream(
                    owners, &views, metric, outputs, schema, context,
                )?
                .boxed()),
                Err(e) => Err(e),
            }
        };
        let stream = futures::stream::once(collected).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// What the cluster's codec carries of a [`StitchExec`]
/// across processes, and how it is rebuilt there.
impl StitchExec {
    /// Every viewer's segments.
    pub fn views(&self) -> &Views {
        &self.views
    }

    /// The one metric the owners hold, when the call named one.
    pub fn metric(&self) -> Option<&str> {
        self.metric.as_deref()
    }

    /// The output columns, as positions in the full stitched schema.
    pub fn output_positions(&self) -> Vec<usize> {
        self.outputs
            .iter()
            .filter_map(|o| OUTPUTS.iter().position(|p| p == o))
            .collect()
    }

    /// The operator [`StitchExec::views`], [`StitchExec::metric`], its
    /// schema and [`StitchExec::output_positions`] describe, over `owners`.
    pub fn from_parts(
        owners: Arc<dyn ExecutionPlan>,
        views: Views,
        metric: Option<String>,
        schema: SchemaRef,
        positions: &[usize],
    ) -> DFResult<Self> {
        let outputs = positions
            .iter()
            .map(|&i| {
                OUTPUTS.get(i).copied().ok_or_else(|| {
                    DataFusionError::Plan(format!("stitched view has no output column {i}"))
                })
            })
            .collect::<DFResult<Vec<_>>>()?;
        if outputs.len() != schema.fields().len() {
            return internal_err!(
                "StitchExec: {} outputs for {} columns",
                outputs.len(),
                schema.fields().len()
            );
        }
        Self::try_new(owners, Arc::new(views), metric, schema, outputs)
    }
}
