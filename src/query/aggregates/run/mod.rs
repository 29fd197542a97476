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

mod exec;
mod fold;
mod partition;

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

pub use exec::RunAggregateExec;
use fold::{Count as CountState, Fold, Run, RunAccumulator};
use partition::{Groups, PartitionState, run_count, same_key};

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
    rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    super::before_sanity_check(rules, Arc::new(RunAggregate::default()))
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
