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

mod fold;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

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
use datafusion::functions_aggregate::count::Count;
use datafusion::functions_aggregate::min_max::{Max, Min};
use datafusion::functions_aggregate::sum::Sum;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
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

/// `rules` (a session's physical optimizer rules) with [`RunAggregate`] added
/// before the final sanity check, so the plan it leaves is checked too.
pub fn with_rule(
    mut rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let at = rules
        .iter()
        .position(|r| r.name() == "SanityCheckPlan")
        .unwrap_or(rules.len());
    rules.insert(at, Arc::new(RunAggregate));
    rules
}

/// Replaces each partial aggregate of a shape [`Shape::of`] accepts with a
/// [`RunAggregateExec`].
#[derive(Debug, Default)]
pub struct RunAggregate;

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
                let fold = if fun.is::<Sum>() {
                    matches!(
                        arg_type,
                        DataType::Int64 | DataType::UInt64 | DataType::Float64
                    )
                    .then_some(FoldKind::Sum)?
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
    metrics: ExecutionPlanMetricsSet,
}

impl RunAggregateExec {
    fn new(agg: Arc<AggregateExec>, shape: Shape) -> Self {
        Self {
            agg,
            shape,
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
                Ok(Arc::new(RunAggregateExec::new(agg, shape)))
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
        };
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let stream = async_stream::try_stream! {
            let mut input = input;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let timer = metrics.elapsed_compute().timer();
                state.update(&batch)?;
                let full = state.groups.is_full();
                let out = if full { state.emit()? } else { Vec::new() };
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
            metrics.done();
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
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
}

impl PartitionState {
    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let keys = self.key.evaluate(batch)?.into_array(rows)?;
        let keys = keys.as_string_view_opt().ok_or_else(|| {
            internal_datafusion_err!("run aggregate: key is {}", keys.data_type())
        })?;
        self.runs.clear();
        self.groups.runs(keys, &mut self.runs);
        for (acc, arg) in self.accumulators.iter_mut().zip(&self.args) {
            let value = arg.evaluate(batch)?;
            acc.update(&value, &self.runs, self.groups.len(), rows)?;
        }
        Ok(())
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
        Ok((0..n)
            .step_by(self.batch_size)
            .map(|at| all.slice(at, self.batch_size.min(n - at)))
            .collect())
    }
}

/// The distinct keys of a partition, numbered in order of appearance.
#[derive(Default)]
struct Groups {
    index: HashMap<Box<str>, u32>,
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

    /// Appends the runs of equal keys of `keys` to `runs`.
    fn runs(&mut self, keys: &StringViewArray, runs: &mut Vec<Run>) {
        let views = keys.views();
        let mut start = 0;
        match keys.nulls().filter(|n| n.null_count() > 0) {
            None => {
                for i in 1..views.len() {
                    if views[i] != views[i - 1] {
                        runs.push(self.run(keys, start, i));
                        start = i;
                    }
                }
            }
            Some(nulls) => {
                for i in 1..views.len() {
                    let (now, before) = (nulls.is_valid(i), nulls.is_valid(i - 1));
                    if now != before || (now && views[i] != views[i - 1]) {
                        runs.push(self.run(keys, start, i));
                        start = i;
                    }
                }
            }
        }
        if start < views.len() {
            runs.push(self.run(keys, start, views.len()));
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
