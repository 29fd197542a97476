//! A grouped aggregate over input whose groups arrive one after another.
//!
//! Stitched series come ordered by `(run_id, metric, step)`, so grouping
//! them by `run_id`, by `run_id, metric` or by `run_id, step / k` (chart
//! buckets) sees each group's rows together. DataFusion still hashes every
//! row's keys to find its group, and a partial aggregate over one stitched
//! partition is usually planned behind a round-robin repartition that
//! scatters the order. [`SortedAggregate`] replaces such an aggregate with a
//! [`SortedAggregateExec`], which finds the groups as the runs of equal keys
//! (comparing neighbouring rows column by column), numbers them in order and
//! emits each one once the next has started, so it holds one batch of groups
//! whatever their number.
//!
//! The accumulators are DataFusion's own groups accumulators, given the
//! rows of each group in input order, so states and answers are DataFusion's;
//! the aggregate is rebuilt over the ordered input when a repartition is
//! dropped, which lets DataFusion mark `first_value` / `last_value` as
//! pre-ordered as it does for any ordered input.
//!
//! Contiguity is proven from the input's equivalence properties, never
//! assumed: see [`contiguous`]. Keys are compared for equality by value, as
//! grouping does; float keys (where `-0.0`/`0.0` and NaN payloads make
//! "equal" a matter of definition) are left to DataFusion.

mod exec;

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

pub use exec::SortedAggregateExec;

/// The rule's name, as listed in the session's physical optimizer rules.
pub const RULE_NAME: &str = "forkline_sorted_aggregate";

/// `rules` (a session's physical optimizer rules) with [`SortedAggregate`]
/// added before the final sanity check, so the plan it leaves is checked too.
pub fn with_rule(
    rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    super::before_sanity_check(rules, Arc::new(SortedAggregate))
}

/// Replaces each aggregate whose groups are contiguous in its input with a
/// [`SortedAggregateExec`].
#[derive(Debug, Default)]
pub struct SortedAggregate;

impl PhysicalOptimizerRule for SortedAggregate {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(input) = needless_sort(&node) {
                return Ok(Transformed::yes(input));
            }
            let Some(agg) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            Ok(match sorted(agg) {
                Some(exec) => Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            })
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

/// The input of `node` if `node` is a sort its input already satisfies: a
/// sort planned above an aggregate that this rule has since made emit its
/// groups in key order (a chart's `ORDER BY run_id, bucket`).
fn needless_sort(node: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let sort = node.downcast_ref::<SortExec>()?;
    let input = sort.input();
    let partitions_kept =
        sort.preserve_partitioning() || input.output_partitioning().partition_count() == 1;
    let satisfied = input
        .equivalence_properties()
        .ordering_satisfy(sort.expr().clone())
        .ok()?;
    (sort.fetch().is_none() && partitions_kept && satisfied).then(|| Arc::clone(input))
}

/// The operator standing in for `agg`, if its groups are contiguous in its
/// input or, for a partial aggregate behind a round-robin repartition, in
/// the repartition's input (the partial states are the same whichever
/// partition a row went to; the final aggregate merges them).
fn sorted(agg: &AggregateExec) -> Option<SortedAggregateExec> {
    if let Some(single) = single(agg) {
        return Some(single);
    }
    if !accepts(agg) {
        return None;
    }
    if contiguous(agg, agg.input()) {
        return Some(SortedAggregateExec::new(Arc::new(agg.clone())));
    }
    let repartition = agg.input().downcast_ref::<RepartitionExec>()?;
    if *agg.mode() != AggregateMode::Partial
        || !matches!(repartition.partitioning(), Partitioning::RoundRobinBatch(_))
        || !contiguous(agg, repartition.input())
    {
        return None;
    }
    // A rewrite that cannot be built leaves DataFusion's plan as it is.
    let rebuilt = Arc::new(agg.clone())
        .replace_children(
            vec![Arc::clone(repartition.input())],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
        .ok()?;
    let rebuilt = rebuilt.downcast_ref::<AggregateExec>()?;
    // Same states under the same names, or the plan above would not fit.
    if rebuilt.schema() != agg.schema() || !accepts(rebuilt) {
        return None;
    }
    Some(SortedAggregateExec::new(Arc::new(rebuilt.clone())))
}

/// One aggregate in place of a final `agg` over a partial one that goes
/// group after group over a single ordered partition: the groups are whole
/// in that partition, so the hash repartition, the sort of the partial
/// states and the merge are work for nothing (and the output comes in group
/// order).
fn single(agg: &AggregateExec) -> Option<SortedAggregateExec> {
    if !matches!(
        agg.mode(),
        AggregateMode::Final | AggregateMode::FinalPartitioned
    ) || agg.limit_options().is_some()
    {
        return None;
    }
    // Down to the partial aggregate through operators that move or order
    // its rows and change none.
    let mut node = agg.input();
    let partial = loop {
        if let Some(sorted) = node.downcast_ref::<SortedAggregateExec>() {
            break sorted.aggregate();
        }
        let passes = node
            .downcast_ref::<SortExec>()
            .is_some_and(|s| s.fetch().is_none())
            || node
                .downcast_ref::<CoalescePartitionsExec>()
                .is_some_and(|c| c.fetch().is_none())
            || node.downcast_ref::<RepartitionExec>().is_some();
        match (passes, node.children().as_slice()) {
            (true, [child]) => node = *child,
            _ => return None,
        }
    };
    if *partial.mode() != AggregateMode::Partial {
        return None;
    }
    let mut input = partial.input();
    if let Some(repartition) = input.downcast_ref::<RepartitionExec>()
        && matches!(repartition.partitioning(), Partitioning::RoundRobinBatch(_))
    {
        input = repartition.input();
    }
    if input.output_partitioning().partition_count() != 1 {
        return None;
    }
    let whole = AggregateExec::try_new(
        AggregateMode::Single,
        partial.group_expr().clone(),
        partial.aggr_expr().to_vec(),
        partial.filter_expr().to_vec(),
        Arc::clone(input),
        input.schema(),
    )
    .ok()?;
    // The same columns as the final aggregate's, or the plan above would not fit.
    if whole.schema() != agg.schema() {
        return None;
    }
    SortedAggregateExec::try_from_aggregate(Arc::new(whole))
}

/// Whether `agg` is an aggregate this operator computes as DataFusion does:
/// raw input (partial or single), one grouping set of at least one key of a
/// type compared exactly, no limit, every aggregate with a groups
/// accumulator (the same one DataFusion's operator would use).
fn accepts(agg: &AggregateExec) -> bool {
    let raw_input = matches!(
        agg.mode(),
        AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
    );
    let group_by = agg.group_expr();
    let input = agg.input_schema();
    raw_input
        && agg.limit_options().is_none()
        && group_by.is_single()
        && !group_by.expr().is_empty()
        && group_by
            .expr()
            .iter()
            .all(|(e, _)| e.data_type(&input).is_ok_and(|t| exact_key(&t)))
        && agg
            .aggr_expr()
            .iter()
            .all(|a| a.groups_accumulator_supported())
}

/// Types whose equal values are exactly the values grouping puts together.
fn exact_key(t: &DataType) -> bool {
    use DataType::*;
    t.is_integer()
        || matches!(
            t,
            Boolean
                | Utf8
                | LargeUtf8
                | Utf8View
                | Binary
                | LargeBinary
                | BinaryView
                | Date32
                | Date64
                | Time32(_)
                | Time64(_)
                | Timestamp(_, _)
                | Duration(_)
        )
}

/// Whether every group of `agg` is one contiguous run of rows in each
/// partition of `input`.
pub(crate) fn contiguous(agg: &AggregateExec, input: &Arc<dyn ExecutionPlan>) -> bool {
    key_order(agg, input).is_some()
}

/// The order `input` gives the group keys of `agg` (indices into them, with
/// their sort options), if every group is one contiguous run of rows in
/// each partition of `input`; groups then come out in this order too.
///
/// That holds when `input` is sorted (per partition) by the group keys in
/// some order: equal key tuples are then adjacent. One key may instead be
/// `c / k` (an integer column over a positive integer literal, as a chart
/// bucket is written) when the ordering ends with `c` after the other keys:
/// rows with equal other keys are then ordered by `c`, and `c / k` never
/// decreases as `c` grows (never increases as it falls), so equal buckets
/// are adjacent too and come in `c`'s direction.
pub(crate) fn key_order(
    agg: &AggregateExec,
    input: &Arc<dyn ExecutionPlan>,
) -> Option<Vec<(usize, SortOptions)>> {
    let schema = input.schema();
    let mut exprs: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    let mut bucketed = None;
    for (key, _) in agg.group_expr().expr() {
        match bucket_of(key, &schema) {
            Some(column) if bucketed.is_none() => {
                bucketed = Some(exprs.len());
                exprs.push(column);
            }
            Some(_) => return None,
            None => exprs.push(Arc::clone(key)),
        }
    }
    let properties = input.equivalence_properties();
    let (ordering, order) = properties.find_longest_permutation(&exprs).ok()?;
    if order.len() != exprs.len() {
        return None;
    }
    if let Some(b) = bucketed {
        let at = order.iter().position(|&i| i == b)?;
        if !order[at + 1..]
            .iter()
            .all(|&i| properties.is_expr_constant(&exprs[i]).is_some())
        {
            return None;
        }
    }
    let options = ordering.iter().map(|e| e.options);
    Some(order.iter().copied().zip(options).collect())
}

/// `c` if `key` is `c / k` for an integer `c` and an integer literal `k > 0`.
fn bucket_of(key: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<Arc<dyn PhysicalExpr>> {
    let division = key.downcast_ref::<BinaryExpr>()?;
    if *division.op() != Operator::Divide {
        return None;
    }
    let divisor = division.right().downcast_ref::<Literal>()?;
    let positive = match divisor.value() {
        ScalarValue::Int8(Some(k)) => *k > 0,
        ScalarValue::Int16(Some(k)) => *k > 0,
        ScalarValue::Int32(Some(k)) => *k > 0,
        ScalarValue::Int64(Some(k)) => *k > 0,
        ScalarValue::UInt8(Some(k)) => *k > 0,
        ScalarValue::UInt16(Some(k)) => *k > 0,
        ScalarValue::UInt32(Some(k)) => *k > 0,
        ScalarValue::UInt64(Some(k)) => *k > 0,
        _ => false,
    };
    let column = division.left();
    (positive && column.data_type(schema).ok()?.is_integer()).then(|| Arc::clone(column))
}
