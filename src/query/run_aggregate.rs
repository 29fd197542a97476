//! A partial aggregate for `GROUP BY <one string>` that works on runs of equal
//! keys instead of rows.
//!
//! Metric files are sorted by (run_id, metric, step), so `metric` arrives in
//! runs of thousands of equal values, yet DataFusion's hash aggregation hashes,
//! looks up and scatters every row: about a third of a full-scan
//! `GROUP BY metric`. [`RunAggregate`] replaces a `Partial` `AggregateExec` of
//! that shape with a [`RunAggregateExec`], which finds the runs by comparing
//! the 16-byte views of the Utf8View keys, looks each run's group up once, and
//! folds the run's values as one contiguous slice.
//!
//! The output is the `AggregateExec`'s own partial state (same schema, same
//! plan properties), so the final aggregate above it is untouched, and every
//! fold is DataFusion's own accumulator step in row order (see [`fold`]), so
//! the partial states are the ones DataFusion would have produced. Equal views
//! always mean equal strings within a batch; equal strings with different
//! views (long strings at different offsets, or another batch) only start a
//! new run, whose group is then found by its bytes.
//!
//! Shapes it does not handle keep DataFusion's operator: see [`Shape::of`].
//! Inputs whose keys change every few rows would pay a group lookup per run
//! and gain nothing from folding slices, so each partition first looks at
//! the run lengths of its first rows and, when they are short, hands its
//! whole input (those first batches replayed, then the rest) to the
//! `AggregateExec` it replaced: see [`MIN_MEAN_RUN`].

mod fold;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringViewArray, StringViewBuilder};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, DurationMicrosecondType, DurationMillisecondType,
    DurationNanosecondType, DurationSecondType, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, SchemaRef, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use datafusion::common::internal_datafusion_err;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::functions_aggregate::count::Count;
use datafusion::functions_aggregate::min_max::{Max, Min};
use datafusion::functions_aggregate::sum::Sum;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count as CountMetric, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use fold::{Count as CountState, Fold, Run, RunAccumulator};

/// The rule's name, as listed in the session's physical optimizer rules.
pub const RULE_NAME: &str = "forkline_run_aggregate";

/// A partition emits its groups and starts over past this many groups or key
/// bytes, which bounds its memory whatever the key's cardinality; the final
/// aggregate merges a group emitted twice as it merges partitions.
const MAX_GROUPS: usize = 1 << 16;
const MAX_KEY_BYTES: usize = 16 << 20;

/// A partition decides how to aggregate from at least its first
/// `SAMPLE_ROWS` rows (whole batches, so usually one batch). The decision is
/// not revisited: a partition whose runs turn short later keeps the run path
/// (correct, only slower), which for sorted metric files does not happen.
const SAMPLE_ROWS: usize = 8192;

/// Below this mean run length in the sample, a partition is aggregated by
/// DataFusion's own operator. A run costs a group lookup and, per aggregate,
/// a fold call, where DataFusion hashes and scatters whole columns at once;
/// measured on 50M rows (2 cores, count/sum/min/max of a float), runs of 1
/// row made the run path 1.8x slower than DataFusion, runs of 4 1.15x,
/// runs of 8 already ~6% faster, and Q5's runs of thousands 1.8x faster.
pub const MIN_MEAN_RUN: usize = 8;

/// The name of the metric counting partitions handed to DataFusion's
/// aggregate because their runs were short.
pub const FALLBACK_METRIC: &str = "short_run_fallbacks";

/// `rules` (a session's physical optimizer rules) with [`RunAggregate`] added
/// before the final sanity check, so the plan it leaves is checked too.
pub fn with_rule(
    mut rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let at = rules
        .iter()
        .position(|r| r.name() == "SanityCheckPlan")
        .unwrap_or(rules.len());
    rules.insert(at, Arc::new(RunAggregate::default()));
    rules
}

/// Replaces each partial aggregate of a shape [`Shape::of`] accepts with a
/// [`RunAggregateExec`].
#[derive(Debug)]
pub struct RunAggregate {
    min_mean_run: usize,
}

impl Default for RunAggregate {
    fn default() -> Self {
        Self::with_min_mean_run(MIN_MEAN_RUN)
    }
}

impl RunAggregate {
    /// A rule whose operators hand a partition to DataFusion's aggregate when
    /// its sampled runs are shorter than `min_mean_run` rows on average
    /// ([`MIN_MEAN_RUN`] by default; 0 never does, which tests use to
    /// exercise the run path on short runs).
    pub fn with_min_mean_run(min_mean_run: usize) -> Self {
        Self { min_mean_run }
    }
}

impl PhysicalOptimizerRule for RunAggregate {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(agg) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            match Shape::of(agg) {
                Some(shape) => Ok(Transformed::yes(Arc::new(RunAggregateExec::new(
                    Arc::new(agg.clone()),
                    shape,
                    self.min_mean_run,
                )))),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        RULE_NAME
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What a [`RunAggregateExec`] computes: the group key and, per aggregate,
/// its argument and kind.
#[derive(Debug, Clone)]
struct Shape {
    key: Arc<dyn PhysicalExpr>,
    aggregates: Vec<(Kind, Arc<dyn PhysicalExpr>)>,
}

#[derive(Debug, Clone)]
enum Kind {
    Count,
    /// `sum`, `min` or `max` over a primitive type.
    Fold(FoldKind, DataType),
}

#[derive(Debug, Clone, Copy)]
enum FoldKind {
    Sum,
    Min,
    Max,
}

impl Shape {
    /// The shape of `agg` if it is one this operator computes exactly:
    /// - mode `Partial`, no limit, input not sorted on the key (`Linear`);
    /// - one group expression, no grouping sets, of type Utf8View;
    /// - only DataFusion's own `count`, `sum`, `min`, `max`, each with one
    ///   argument and no DISTINCT, FILTER or ORDER BY;
    /// - `sum` over Int64, UInt64 or Float64 (what it is coerced to, except
    ///   decimals); `min`/`max` over integer, float (not f16), date, time,
    ///   timestamp or duration; `count` over anything;
    /// - partial-state fields of the types computed here.
    fn of(agg: &AggregateExec) -> Option<Shape> {
        if *agg.mode() != AggregateMode::Partial
            || agg.limit_options().is_some()
            || *agg.input_order_mode() != InputOrderMode::Linear
        {
            return None;
        }
        let group_by = agg.group_expr();
        if !group_by.is_single() || group_by.expr().len() != 1 {
            return None;
        }
        let input = agg.input_schema();
        let key = Arc::clone(&group_by.expr()[0].0);
        if key.data_type(&input).ok()? != DataType::Utf8View
            || agg.schema().field(0).data_type() != &DataType::Utf8View
        {
            return None;
        }
        if agg.filter_expr().iter().any(Option::is_some) {
            return None;
        }
        // The aggregates' state fields follow the key, one per aggregate here.
        let schema = agg.schema();
        let states = &schema.fields()[1..];
        if states.len() != agg.aggr_expr().len() {
            return None;
        }
        let mut aggregates = Vec::new();
        for (expr, state) in agg.aggr_expr().iter().zip(states) {
            let args = expr.expressions();
            if expr.is_distinct() || !expr.order_bys().is_empty() || args.len() != 1 {
                return None;
            }
            let arg = Arc::clone(&args[0]);
            let arg_type = arg.data_type(&input).ok()?;
            let fun = expr.fun().inner();
            let kind = if fun.is::<Count>() {
                (state.data_type() == &DataType::Int64).then_some(Kind::Count)?
            } else {
                // `new_fold` below refuses the types it does not compute.
                let fold = if fun.is::<Sum>() {
                    FoldKind::Sum
                } else if fun.is::<Min>() {
                    FoldKind::Min
                } else if fun.is::<Max>() {
                    FoldKind::Max
                } else {
                    return None;
                };
                if state.data_type() != &arg_type || new_fold(fold, &arg_type).is_none() {
                    return None;
                }
                Kind::Fold(fold, arg_type)
            };
            aggregates.push((kind, arg));
        }
        Some(Shape { key, aggregates })
    }

    fn accumulators(&self) -> Result<Vec<Box<dyn RunAccumulator>>> {
        self.aggregates
            .iter()
            .map(|(kind, _)| match kind {
                Kind::Count => Ok(Box::new(CountState::default()) as Box<dyn RunAccumulator>),
                Kind::Fold(fold, data_type) => new_fold(*fold, data_type).ok_or_else(|| {
                    internal_datafusion_err!("run aggregate: no {fold:?} for {data_type}")
                }),
            })
            .collect()
    }
}

/// The accumulator of `fold` over `data_type`, if there is one.
fn new_fold(fold: FoldKind, data_type: &DataType) -> Option<Box<dyn RunAccumulator>> {
    macro_rules! make {
        ($t:ty) => {
            match fold {
                FoldKind::Sum => sum::<$t>(data_type),
                FoldKind::Min => Some(Box::new(Fold::<$t, fold::Min>::new(data_type.clone()))
                    as Box<dyn RunAccumulator>),
                FoldKind::Max => Some(Box::new(Fold::<$t, fold::Max>::new(data_type.clone()))
                    as Box<dyn RunAccumulator>),
            }
        };
    }
    fn sum<T>(data_type: &DataType) -> Option<Box<dyn RunAccumulator>>
    where
        T: arrow::datatypes::ArrowPrimitiveType + Send,
    {
        // Only the types `sum` returns for non-decimal input.
        matches!(
            data_type,
            DataType::Int64 | DataType::UInt64 | DataType::Float64
        )
        .then(|| Box::new(Fold::<T, fold::Sum>::new(data_type.clone())) as Box<dyn RunAccumulator>)
    }
    use DataType::*;
    match data_type {
        Int8 => make!(Int8Type),
        Int16 => make!(Int16Type),
        Int32 => make!(Int32Type),
        Int64 => make!(Int64Type),
        UInt8 => make!(UInt8Type),
        UInt16 => make!(UInt16Type),
        UInt32 => make!(UInt32Type),
        UInt64 => make!(UInt64Type),
        Float32 => make!(Float32Type),
        Float64 => make!(Float64Type),
        Date32 => make!(Date32Type),
        Date64 => make!(Date64Type),
        Time32(TimeUnit::Second) => make!(Time32SecondType),
        Time32(TimeUnit::Millisecond) => make!(Time32MillisecondType),
        Time64(TimeUnit::Microsecond) => make!(Time64MicrosecondType),
        Time64(TimeUnit::Nanosecond) => make!(Time64NanosecondType),
        Timestamp(TimeUnit::Second, _) => make!(TimestampSecondType),
        Timestamp(TimeUnit::Millisecond, _) => make!(TimestampMillisecondType),
        Timestamp(TimeUnit::Microsecond, _) => make!(TimestampMicrosecondType),
        Timestamp(TimeUnit::Nanosecond, _) => make!(TimestampNanosecondType),
        Duration(TimeUnit::Second) => make!(DurationSecondType),
        Duration(TimeUnit::Millisecond) => make!(DurationMillisecondType),
        Duration(TimeUnit::Microsecond) => make!(DurationMicrosecondType),
        Duration(TimeUnit::Nanosecond) => make!(DurationNanosecondType),
        _ => None,
    }
}

/// A partial aggregate computed run by run; stands in for `agg`, whose
/// input, schema and properties it shares.
#[derive(Debug)]
pub struct RunAggregateExec {
    agg: Arc<AggregateExec>,
    shape: Shape,
    /// See [`RunAggregate::with_min_mean_run`].
    min_mean_run: usize,
    metrics: ExecutionPlanMetricsSet,
}

impl RunAggregateExec {
    fn new(agg: Arc<AggregateExec>, shape: Shape, min_mean_run: usize) -> Self {
        Self {
            agg,
            shape,
            min_mean_run,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for RunAggregateExec {
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
            "RunAggregateExec: mode=Partial, gby=[{}], aggr=[{}]",
            keys.join(", "),
            aggs.join(", ")
        )
    }
}

impl ExecutionPlan for RunAggregateExec {
    fn name(&self) -> &str {
        "RunAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.agg.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.agg.input()]
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.agg.input_distribution_requirements()
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        self.agg.benefits_from_input_partitioning()
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
        // New children may change types: what no longer fits stays DataFusion's.
        match agg.downcast_ref::<AggregateExec>().and_then(Shape::of) {
            Some(shape) => {
                let agg = agg
                    .downcast_ref::<AggregateExec>()
                    .map(|a| Arc::new(a.clone()))
                    .ok_or_else(|| internal_datafusion_err!("run aggregate: lost its aggregate"))?;
                Ok(Arc::new(RunAggregateExec::new(
                    agg,
                    shape,
                    self.min_mean_run,
                )))
            }
            None => Ok(agg),
        }
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
        let mut state = PartitionState {
            key: Arc::clone(&self.shape.key),
            args: self
                .shape
                .aggregates
                .iter()
                .map(|(_, a)| Arc::clone(a))
                .collect(),
            accumulators: self.shape.accumulators()?,
            groups: Groups::default(),
            runs: Vec::new(),
            schema: Arc::clone(&schema),
            batch_size: context.session_config().batch_size().max(1),
            reservation: MemoryConsumer::new(format!("RunAggregateExec[{partition}]"))
                .register(context.memory_pool()),
        };
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let fallbacks = MetricBuilder::new(&self.metrics).counter(FALLBACK_METRIC, partition);
        let agg = Arc::clone(&self.agg);
        let min_mean_run = self.min_mean_run;
        let stream = async_stream::try_stream! {
            let mut input = input;
            // The first batches, with their keys, and how many runs they hold.
            // A run that goes on into the next batch counts once: continuing
            // the last run's group costs a comparison, not a lookup, so
            // small batches do not make long runs look short.
            let mut sample: Vec<(RecordBatch, StringViewArray)> = Vec::new();
            let (mut rows, mut runs) = (0, 0);
            while rows < SAMPLE_ROWS {
                let Some(batch) = input.next().await else { break };
                let batch = batch?;
                let timer = metrics.elapsed_compute().timer();
                let keys = state.keys(&batch)?;
                timer.done();
                if keys.is_empty() {
                    continue;
                }
                rows += keys.len();
                runs += run_count(&keys);
                if let Some((_, before)) = sample.last()
                    && same_key(before, before.len() - 1, &keys, 0)
                {
                    runs -= 1;
                }
                sample.push((batch, keys));
            }
            if runs.saturating_mul(min_mean_run) > rows {
                let out = fallback(
                    &agg,
                    sample.into_iter().map(|(batch, _)| batch).collect(),
                    input,
                    partition,
                    context,
                    &metrics,
                    &fallbacks,
                );
                for await batch in out {
                    yield batch?;
                }
            } else {
                let mut sample = sample.into_iter();
                loop {
                    let (batch, keys) = match sample.next() {
                        Some((batch, keys)) => (batch, Some(keys)),
                        None => match input.next().await {
                            Some(batch) => (batch?, None),
                            None => break,
                        },
                    };
                    let timer = metrics.elapsed_compute().timer();
                    let keys = match keys {
                        Some(keys) => keys,
                        None => state.keys(&batch)?,
                    };
                    state.update(&batch, &keys)?;
                    let out = state.emit_if_full()?;
                    timer.done();
                    for batch in out {
                        metrics.record_output(batch.num_rows());
                        yield batch;
                    }
                }
                let timer = metrics.elapsed_compute().timer();
                let out = state.emit()?;
                timer.done();
                for batch in out {
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

/// The output of `agg` (DataFusion's partial aggregate this operator
/// replaced) over `sample`, the batches this partition has already read,
/// followed by the rest of `input`: what the partition would have produced
/// without the rewrite, each input batch read once.
fn fallback(
    agg: &Arc<AggregateExec>,
    sample: Vec<RecordBatch>,
    input: SendableRecordBatchStream,
    partition: usize,
    context: Arc<TaskContext>,
    metrics: &BaselineMetrics,
    fallbacks: &CountMetric,
) -> impl futures::Stream<Item = Result<RecordBatch>> + Send + use<> {
    fallbacks.add(1);
    let metrics = metrics.clone();
    let replay = Arc::new(Replay {
        properties: Arc::clone(agg.input().properties()),
        schema: agg.input().schema(),
        batches: Mutex::new(Some((sample, input))),
    });
    // Same input schema and properties: the aggregate's own are kept.
    let plan = Arc::clone(agg).replace_children(
        vec![replay],
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
    );
    async_stream::try_stream! {
        let plan = plan?;
        let mut out = plan.execute(partition, context)?;
        while let Some(batch) = out.next().await {
            let batch = batch?;
            metrics.record_output(batch.num_rows());
            yield batch;
        }
        // The aggregate's own compute time, so EXPLAIN ANALYZE shows it here.
        if let Some(nanos) = plan.metrics().and_then(|m| m.elapsed_compute()) {
            metrics
                .elapsed_compute()
                .add_duration(Duration::from_nanos(nanos as u64));
        }
    }
}

/// The input of a [`fallback`] aggregate: batches already read from one
/// partition's input, then the rest of that input. Executes once.
struct Replay {
    properties: Arc<PlanProperties>,
    schema: SchemaRef,
    batches: Mutex<Option<(Vec<RecordBatch>, SendableRecordBatchStream)>>,
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Replay")
    }
}

impl DisplayAs for Replay {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Replay")
    }
}

impl ExecutionPlan for Replay {
    fn name(&self) -> &str {
        "Replay"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(internal_datafusion_err!(
                "run aggregate: replay has no children"
            ))
        }
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

    /// The one partition it stands for, whatever `_partition` says: the
    /// aggregate above executes its input's partition of its own number.
    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (sample, rest) = self
            .batches
            .lock()
            .map_err(|_| internal_datafusion_err!("run aggregate: replay lock poisoned"))?
            .take()
            .ok_or_else(|| internal_datafusion_err!("run aggregate: replay executed twice"))?;
        let stream = futures::stream::iter(sample.into_iter().map(Ok)).chain(rest);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// One partition's groups and accumulators.
struct PartitionState {
    key: Arc<dyn PhysicalExpr>,
    args: Vec<Arc<dyn PhysicalExpr>>,
    accumulators: Vec<Box<dyn RunAccumulator>>,
    groups: Groups,
    /// Scratch: the current batch's runs.
    runs: Vec<Run>,
    schema: SchemaRef,
    batch_size: usize,
    /// What the groups, their keys and state hold, in the task's memory pool.
    reservation: MemoryReservation,
}

impl PartitionState {
    /// The group key of every row of `batch`.
    fn keys(&self, batch: &RecordBatch) -> Result<StringViewArray> {
        let keys = self.key.evaluate(batch)?.into_array(batch.num_rows())?;
        keys.as_string_view_opt()
            .cloned()
            .ok_or_else(|| internal_datafusion_err!("run aggregate: key is {}", keys.data_type()))
    }

    /// Folds `batch`, whose group keys are `keys`, into the groups.
    fn update(&mut self, batch: &RecordBatch, keys: &StringViewArray) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        self.runs.clear();
        self.groups.runs(keys, &mut self.runs);
        for (acc, arg) in self.accumulators.iter_mut().zip(&self.args) {
            let value = arg.evaluate(batch)?;
            acc.update(&value, &self.runs, self.groups.len(), rows)?;
        }
        Ok(())
    }

    /// Bytes held for the groups.
    fn size(&self) -> usize {
        self.groups.size()
            + self.runs.capacity() * size_of::<Run>()
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
    }

    /// Every group's state if the groups are past their limits or the memory
    /// pool will not hold them, as DataFusion's partial aggregate emits
    /// early: the final aggregate merges a group emitted twice.
    fn emit_if_full(&mut self) -> Result<Vec<RecordBatch>> {
        if !self.groups.is_full() && self.reservation.try_resize(self.size()).is_ok() {
            return Ok(Vec::new());
        }
        self.emit()
    }

    /// Every group's partial state, in batches of at most `batch_size` rows; starts over.
    fn emit(&mut self) -> Result<Vec<RecordBatch>> {
        let n = self.groups.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.groups.take_keys())];
        for acc in &mut self.accumulators {
            columns.extend(acc.take_state());
        }
        let all = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        // What is left is empty vectors (the scratch runs aside).
        self.reservation.resize(self.size());
        Ok((0..n)
            .step_by(self.batch_size)
            .map(|at| all.slice(at, self.batch_size.min(n - at)))
            .collect())
    }
}

/// The distinct keys of a partition, numbered in order of appearance.
#[derive(Default)]
struct Groups {
    index: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    /// Each group's key; `None` for the NULL key.
    keys: Vec<Option<Box<str>>>,
    null_group: Option<u32>,
    key_bytes: usize,
    /// The group of the last run, which the next run most often continues
    /// (a run split by a batch boundary or by views that differ).
    last: Option<u32>,
}

impl Groups {
    fn len(&self) -> usize {
        self.keys.len()
    }

    fn is_full(&self) -> bool {
        self.keys.len() >= MAX_GROUPS || self.key_bytes >= MAX_KEY_BYTES
    }

    /// Bytes held: the index, the keys in order, and each key's bytes twice
    /// (once in each).
    fn size(&self) -> usize {
        self.index.capacity() * (size_of::<(Box<str>, u32)>() + 1)
            + self.keys.capacity() * size_of::<Option<Box<str>>>()
            + 2 * self.key_bytes
    }

    /// Appends the runs of equal keys of `keys` to `runs`.
    fn runs(&mut self, keys: &StringViewArray, runs: &mut Vec<Run>) {
        let mut start = 0;
        run_starts(keys, |i| {
            runs.push(self.run(keys, start, i));
            start = i;
        });
        if start < keys.len() {
            runs.push(self.run(keys, start, keys.len()));
        }
    }

    fn run(&mut self, keys: &StringViewArray, start: usize, end: usize) -> Run {
        let key = keys.is_valid(start).then(|| keys.value(start));
        let group = self.group(key);
        self.last = Some(group);
        Run {
            group,
            start,
            len: end - start,
        }
    }

    fn group(&mut self, key: Option<&str>) -> u32 {
        let Some(key) = key else {
            if let Some(g) = self.null_group {
                return g;
            }
            let g = self.keys.len() as u32;
            self.keys.push(None);
            self.null_group = Some(g);
            return g;
        };
        if let Some(last) = self.last
            && self.keys[last as usize].as_deref() == Some(key)
        {
            return last;
        }
        if let Some(&g) = self.index.get(key) {
            return g;
        }
        let g = self.keys.len() as u32;
        self.keys.push(Some(key.into()));
        self.index.insert(key.into(), g);
        self.key_bytes += key.len();
        g
    }

    /// The keys as a column, in group order; forgets every group.
    fn take_keys(&mut self) -> StringViewArray {
        let mut builder = StringViewBuilder::with_capacity(self.keys.len());
        for key in self.keys.drain(..) {
            builder.append_option(key);
        }
        *self = Groups::default();
        builder.finish()
    }
}

/// Calls `f` with the index of every row but the first that starts a run:
/// a row whose view (or validity) differs from the row before.
#[inline(always)]
fn run_starts(keys: &StringViewArray, mut f: impl FnMut(usize)) {
    let views = keys.views();
    match keys.nulls().filter(|n| n.null_count() > 0) {
        None => {
            for i in 1..views.len() {
                if views[i] != views[i - 1] {
                    f(i);
                }
            }
        }
        Some(nulls) => {
            for i in 1..views.len() {
                let (now, before) = (nulls.is_valid(i), nulls.is_valid(i - 1));
                if now != before || (now && views[i] != views[i - 1]) {
                    f(i);
                }
            }
        }
    }
}

/// How many runs [`Groups::runs`] would find in `keys`.
fn run_count(keys: &StringViewArray) -> usize {
    if keys.is_empty() {
        return 0;
    }
    let mut runs = 1;
    run_starts(keys, |_| runs += 1);
    runs
}

/// Whether row `i` of `a` and row `j` of `b` hold the same key (both NULL
/// counts as the same: NULL is one group).
fn same_key(a: &StringViewArray, i: usize, b: &StringViewArray, j: usize) -> bool {
    match (a.is_valid(i), b.is_valid(j)) {
        (true, true) => a.value(i) == b.value(j),
        (valid_a, valid_b) => valid_a == valid_b,
    }
}

/// What the cluster codec (`crate::cluster`) carries of a
/// [`RunAggregateExec`] across processes, and how it is rebuilt there.
impl RunAggregateExec {
    /// The partial aggregate this operator stands in for.
    pub fn aggregate(&self) -> &Arc<AggregateExec> {
        &self.agg
    }

    /// See [`RunAggregate::with_min_mean_run`].
    pub fn min_mean_run(&self) -> usize {
        self.min_mean_run
    }

    /// The operator standing in for `agg`, or `None` when [`Shape::of`]
    /// does not accept it (then `agg` runs as it is).
    pub fn try_from_aggregate(agg: Arc<AggregateExec>, min_mean_run: usize) -> Option<Self> {
        let shape = Shape::of(&agg)?;
        Some(Self::new(agg, shape, min_mean_run))
    }
}
