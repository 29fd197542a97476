//! [`SortedAggregateExec`]: the operator and one partition's groups.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{SortOptions, concat, partition, take};
use arrow::datatypes::SchemaRef;
use datafusion::common::internal_datafusion_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_expr_common::sort_expr::OrderingRequirements;
use datafusion::physical_plan::aggregates::{
    AggregateExec, AggregateOutputMode, aggregate_expressions,
};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

/// An aggregate computed group after group; stands in for `agg`, whose
/// input, schema and properties it shares.
#[derive(Debug)]
pub struct SortedAggregateExec {
    agg: Arc<AggregateExec>,
    /// The aggregate's, and the order its groups come out in.
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SortedAggregateExec {
    pub(super) fn new(agg: Arc<AggregateExec>) -> Self {
        Self {
            properties: ordered_properties(&agg),
            agg,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The aggregate this operator stands in for (what the cluster codec
    /// carries across processes).
    pub fn aggregate(&self) -> &Arc<AggregateExec> {
        &self.agg
    }

    /// The operator standing in for `agg`, or `None` when its groups are not
    /// provably contiguous in its input (then `agg` runs as it is).
    pub fn try_from_aggregate(agg: Arc<AggregateExec>) -> Option<Self> {
        (super::accepts(&agg) && super::contiguous(&agg, agg.input())).then(|| Self::new(agg))
    }
}

impl DisplayAs for SortedAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self
            .agg
            .group_expr()
            .expr()
            .iter()
            .map(|(e, name)| format!("{e} as {name}"))
            .collect();
        let aggs: Vec<&str> = self.agg.aggr_expr().iter().map(|a| a.name()).collect();
        write!(
            f,
            "SortedAggregateExec: mode={:?}, gby=[{}], aggr=[{}]",
            self.agg.mode(),
            keys.join(", "),
            aggs.join(", ")
        )
    }
}

impl ExecutionPlan for SortedAggregateExec {
    fn name(&self) -> &str {
        "SortedAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.agg.input()]
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.agg.input_distribution_requirements()
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        self.agg.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        self.agg.maintains_input_order()
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // Splitting the input would scatter the groups this operator relies on.
        vec![false]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.agg.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let agg = Arc::clone(&self.agg).replace_children(children, options)?;
        let Some(inner) = agg.downcast_ref::<AggregateExec>() else {
            return Err(internal_datafusion_err!(
                "sorted aggregate: lost its aggregate"
            ));
        };
        // A new input may not keep the order: then DataFusion's operator runs.
        Ok(
            match SortedAggregateExec::try_from_aggregate(Arc::new(inner.clone())) {
                Some(sorted) => Arc::new(sorted),
                None => agg,
            },
        )
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.agg.input().execute(partition, Arc::clone(&context))?;
        let schema = self.agg.schema();
        let keys: Vec<Arc<dyn PhysicalExpr>> = self
            .agg
            .group_expr()
            .expr()
            .iter()
            .map(|(e, _)| Arc::clone(e))
            .collect();
        let args = aggregate_expressions(self.agg.aggr_expr(), self.agg.mode(), keys.len())?;
        let accumulators = self
            .agg
            .aggr_expr()
            .iter()
            .zip(args)
            .zip(self.agg.filter_expr())
            .map(|((expr, args), filter)| {
                Ok(Aggregate {
                    args,
                    filter: filter.clone(),
                    accumulator: expr.create_groups_accumulator()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut groups = Groups {
            keys,
            accumulators,
            states: self.agg.mode().output_mode() == AggregateOutputMode::Partial,
            pending: Vec::new(),
            last: None,
            len: 0,
            indices: Vec::new(),
            schema: Arc::clone(&schema),
            reservation: MemoryConsumer::new(format!("SortedAggregateExec[{partition}]"))
                .register(context.memory_pool()),
        };
        let batch_size = context.session_config().batch_size().max(1);
        // Complete groups are emitted once this many wait: DataFusion's
        // `first_value` / `last_value` accumulators walk every group held on
        // each batch, so holding a batch's worth of groups cost a chart
        // aggregate as much as its rows did.
        let emit_after = (batch_size / EMIT_FRACTION).max(1);
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let stream = async_stream::try_stream! {
            let mut input = input;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let timer = metrics.elapsed_compute().timer();
                groups.update(&batch)?;
                // Every group but the last is complete once a later one started.
                let out = if groups.len > emit_after {
                    Some(groups.emit(EmitTo::First(groups.len - 1))?)
                } else {
                    None
                };
                timer.done();
                for batch in out.into_iter().flat_map(|b| slices(b, batch_size)) {
                    metrics.record_output(batch.num_rows());
                    yield batch;
                }
            }
            if groups.len > 0 {
                let timer = metrics.elapsed_compute().timer();
                let out = groups.emit(EmitTo::All)?;
                timer.done();
                for batch in slices(out, batch_size) {
                    metrics.record_output(batch.num_rows());
                    yield batch;
                }
            }
            metrics.done();
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// `agg`'s properties with the order its groups come out in: the input's
/// order of the keys (DataFusion does not see that a bucket `step / k`
/// follows `step`, so a chart's `ORDER BY run_id, bucket` would sort again).
///
/// Of one output partition only. The operators above were planned before
/// this one stood in, and a merge of several partitions planned on a
/// shorter key claims its input's orderings as its own: a longer one found
/// now would be claimed without being kept (and a final aggregate above
/// would then stream groups that are not contiguous).
fn ordered_properties(agg: &AggregateExec) -> Arc<PlanProperties> {
    let base = agg.properties();
    if base.partitioning.partition_count() != 1 {
        return Arc::clone(base);
    }
    let Some(order) = super::key_order(agg, agg.input()) else {
        return Arc::clone(base);
    };
    let schema = agg.schema();
    let ordering = order.into_iter().map(|(i, options)| {
        let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new(schema.field(i).name(), i));
        PhysicalSortExpr::new(key, options)
    });
    let mut equivalences = base.eq_properties.clone();
    equivalences.add_ordering(ordering);
    Arc::new(base.as_ref().clone().with_eq_properties(equivalences))
}

/// Groups held before the complete ones are emitted, as a fraction of the batch size.
const EMIT_FRACTION: usize = 8;

fn slices(batch: RecordBatch, size: usize) -> impl Iterator<Item = RecordBatch> {
    let rows = batch.num_rows();
    (0..rows)
        .step_by(size)
        .map(move |at| batch.slice(at, size.min(rows - at)))
}

/// One aggregate: its arguments (with its `ORDER BY` columns, as DataFusion
/// passes them), its `FILTER`, and DataFusion's accumulator.
struct Aggregate {
    args: Vec<Arc<dyn PhysicalExpr>>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    accumulator: Box<dyn GroupsAccumulator>,
}

/// One partition's groups not yet emitted, numbered from 0 in input order.
struct Groups {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    accumulators: Vec<Aggregate>,
    /// Partial states out (a partial aggregate) or final values (single).
    states: bool,
    /// The key columns of the groups, in chunks as they were found.
    pending: Vec<Vec<ArrayRef>>,
    /// The last row's keys, which the next batch's first rows may continue.
    last: Option<Vec<ArrayRef>>,
    len: usize,
    /// Scratch: each row's group.
    indices: Vec<usize>,
    schema: SchemaRef,
    reservation: MemoryReservation,
}

impl Groups {
    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let keys = self
            .keys
            .iter()
            .map(|k| k.evaluate(batch)?.into_array(rows))
            .collect::<Result<Vec<ArrayRef>>>()?;
        self.indices.clear();
        let mut starts = Vec::new();
        for (i, run) in partition(&keys)?.ranges().into_iter().enumerate() {
            let continues = i == 0 && self.continues(&keys)?;
            if !continues {
                starts.push(run.start as u32);
                self.len += 1;
            }
            self.indices
                .extend(std::iter::repeat_n(self.len - 1, run.end - run.start));
        }
        if !starts.is_empty() {
            let starts = UInt32Array::from(starts);
            self.pending.push(
                keys.iter()
                    .map(|k| take(k.as_ref(), &starts, None).map(owned))
                    .collect::<std::result::Result<_, _>>()?,
            );
        }
        self.last = Some(keys.iter().map(|k| k.slice(rows - 1, 1)).collect());
        for aggregate in &mut self.accumulators {
            let values = aggregate
                .args
                .iter()
                .map(|a| a.evaluate(batch)?.into_array(rows))
                .collect::<Result<Vec<ArrayRef>>>()?;
            let filter = match &aggregate.filter {
                Some(f) => Some(boolean(f.evaluate(batch)?.into_array(rows)?)?),
                None => None,
            };
            aggregate.accumulator.update_batch(
                &values,
                &self.indices,
                filter.as_ref(),
                self.len,
            )?;
        }
        self.reservation.try_resize(self.size())?;
        Ok(())
    }

    /// Whether the first row of `keys` has the keys of the last row seen.
    fn continues(&self, keys: &[ArrayRef]) -> Result<bool> {
        let Some(last) = &self.last else {
            return Ok(false);
        };
        for (before, now) in last.iter().zip(keys) {
            let compare = arrow::array::make_comparator(
                before.as_ref(),
                now.as_ref(),
                SortOptions::default(),
            )?;
            if !compare(0, 0).is_eq() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The first groups (`emit_to`) as output rows: keys, then each
    /// aggregate's state or value.
    fn emit(&mut self, emit_to: EmitTo) -> Result<RecordBatch> {
        let n = match emit_to {
            EmitTo::First(n) => n,
            EmitTo::All => self.len,
        };
        let mut columns = Vec::new();
        let mut rest = Vec::new();
        for c in 0..self.keys.len() {
            let chunks: Vec<&dyn Array> = self.pending.iter().map(|p| p[c].as_ref()).collect();
            let all = concat(&chunks)?;
            columns.push(all.slice(0, n));
            rest.push(all.slice(n, all.len() - n));
        }
        self.pending = if rest.first().is_some_and(|r| !r.is_empty()) {
            vec![rest]
        } else {
            Vec::new()
        };
        for aggregate in &mut self.accumulators {
            if self.states {
                columns.extend(aggregate.accumulator.state(emit_to)?);
            } else {
                columns.push(aggregate.accumulator.evaluate(emit_to)?);
            }
        }
        self.len -= n;
        if self.len == 0 {
            self.last = None;
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        self.reservation.try_resize(self.size())?;
        Ok(batch)
    }

    /// Bytes held: the accumulators' state and the pending keys.
    fn size(&self) -> usize {
        self.accumulators
            .iter()
            .map(|a| a.accumulator.size())
            .sum::<usize>()
            + self
                .pending
                .iter()
                .flatten()
                .map(|k| k.get_array_memory_size())
                .sum::<usize>()
            + self.indices.capacity() * size_of::<usize>()
    }
}

/// `keys` without references into the batch it was taken from: views of a
/// string key would otherwise keep every batch a pending group came from.
fn owned(keys: ArrayRef) -> ArrayRef {
    if let Some(views) = keys.as_string_view_opt() {
        Arc::new(views.gc())
    } else if let Some(views) = keys.as_binary_view_opt() {
        Arc::new(views.gc())
    } else {
        keys
    }
}

fn boolean(array: ArrayRef) -> Result<BooleanArray> {
    array.as_boolean_opt().cloned().ok_or_else(|| {
        internal_datafusion_err!("sorted aggregate: a FILTER of {}", array.data_type())
    })
}
