//! `first_value` / `last_value` that use the order their input already has.
//!
//! DataFusion marks these aggregates "pre-ordered" when the input is sorted by
//! the group keys it is sorted on and then by the aggregate's `ORDER BY` (the
//! stitched series are, by `(run_id, step)`), but its grouped accumulator
//! still compares every row's ordering with the group's best so far, and
//! keeps each group's ordering as a vector of `ScalarValue`s (an allocation
//! per group, and a conversion per pick). Over pre-ordered input the row
//! DataFusion would pick can be found without that: for `first_value` it is
//! the group's first row in the batch, for `last_value` the first of the rows
//! that tie with the group's last one. This module registers both names over
//! DataFusion's own functions and, where the input is pre-ordered, keeps the
//! picked rows as Arrow arrays (a few rows per batch) with each group's
//! `(chunk, row)`. It answers as DataFusion's accumulator does, ties and
//! nulls included, and its states are DataFusion's (value, ordering, is-set),
//! so partial and final aggregates mix.

use std::any::Any;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, UInt32Array, make_comparator, new_null_array,
};
use arrow::compute::{LexicographicalComparator, SortColumn, SortOptions, interleave, take};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, internal_err};
use datafusion::functions_aggregate::first_last::{FirstValue, LastValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    ReversedUDAF, Signature,
};

/// The marker the cluster codec writes for a pre-ordered function, so
/// executors keep the fast path.
pub const PRE_ORDERED_TAG: &[u8] = b"FKL-PRE-ORDERED";

/// `first_value` (`last == false`) or `last_value`, as registered in sessions.
pub fn udaf(last: bool) -> AggregateUDF {
    AggregateUDF::new_from_shared_impl(Arc::new(OrderedFirstLast::new(last, false)))
}

/// The function named `name` with the pre-ordered flag, for the codec;
/// `None` for other names.
pub fn pre_ordered(name: &str) -> Option<AggregateUDF> {
    let last = match name {
        "first_value" => false,
        "last_value" => true,
        _ => return None,
    };
    Some(AggregateUDF::new_from_shared_impl(Arc::new(
        OrderedFirstLast::new(last, true),
    )))
}

/// Whether `udf` is one of these functions with its input pre-ordered.
pub fn is_pre_ordered(udf: &AggregateUDF) -> bool {
    let inner: &dyn Any = udf.inner().as_ref();
    inner
        .downcast_ref::<OrderedFirstLast>()
        .is_some_and(|f| f.pre_ordered)
}

#[derive(Debug)]
struct OrderedFirstLast {
    last: bool,
    pre_ordered: bool,
    /// DataFusion's function with the same flag.
    inner: Arc<dyn AggregateUDFImpl>,
}

impl PartialEq for OrderedFirstLast {
    fn eq(&self, other: &Self) -> bool {
        (self.last, self.pre_ordered) == (other.last, other.pre_ordered)
    }
}

impl Eq for OrderedFirstLast {}

impl Hash for OrderedFirstLast {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.last, self.pre_ordered).hash(state)
    }
}

impl OrderedFirstLast {
    fn new(last: bool, pre_ordered: bool) -> Self {
        let base: Arc<dyn AggregateUDFImpl> = if last {
            Arc::new(LastValue::new())
        } else {
            Arc::new(FirstValue::new())
        };
        let inner = if pre_ordered {
            base.with_beneficial_ordering(true)
                .ok()
                .flatten()
                .expect("first_value and last_value take an ordering")
        } else {
            base
        };
        Self {
            last,
            pre_ordered,
            inner,
        }
    }
}

impl AggregateUDFImpl for OrderedFirstLast {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner.return_field(arg_fields)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.accumulator(args)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        if !self.pre_ordered || args.order_bys.is_empty() {
            return self.inner.create_groups_accumulator(args);
        }
        let mut types = vec![args.return_field.data_type().clone()];
        for order in args.order_bys {
            types.push(order.expr.data_type(args.schema)?);
        }
        Ok(Box::new(PreOrdered {
            last: self.last,
            ignore_nulls: args.ignore_nulls,
            options: args.order_bys.iter().map(|e| e.options).collect(),
            types,
            chunks: Vec::new(),
            picks: Vec::new(),
            set: Vec::new(),
            status: Vec::new(),
            chosen: Vec::new(),
            touched: Vec::new(),
        }))
    }

    fn with_beneficial_ordering(
        self: Arc<Self>,
        beneficial_ordering: bool,
    ) -> Result<Option<Arc<dyn AggregateUDFImpl>>> {
        Ok(Some(Arc::new(Self::new(self.last, beneficial_ordering))))
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Reversed(Arc::new(udaf(!self.last)))
    }

    fn supports_null_handling_clause(&self) -> bool {
        self.inner.supports_null_handling_clause()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// Where a group stands in the backward walk of one batch (`last_value`).
#[derive(Clone, Copy, PartialEq)]
enum Walk {
    Unseen,
    /// Its last row is found; earlier rows that tie with it are still taken.
    Tying,
    Done,
}

/// Chunks of picked rows kept before they are gathered into one.
const MAX_CHUNKS: usize = 64;

/// The picked row of every group, in chunks of Arrow arrays.
struct PreOrdered {
    last: bool,
    ignore_nulls: bool,
    options: Vec<SortOptions>,
    /// The value's type, then the `ORDER BY` columns'.
    types: Vec<DataType>,
    /// Value and `ORDER BY` columns of rows picked, a chunk per batch.
    chunks: Vec<Vec<ArrayRef>>,
    /// Each group's row: `(chunk, row)`, meaningful where `set`.
    picks: Vec<(u32, u32)>,
    set: Vec<bool>,
    /// Scratch of the walk over a pre-ordered batch.
    status: Vec<Walk>,
    chosen: Vec<usize>,
    touched: Vec<usize>,
}

impl PreOrdered {
    fn grow(&mut self, total_num_groups: usize) {
        if self.picks.len() < total_num_groups {
            self.picks.resize(total_num_groups, (0, 0));
            self.set.resize(total_num_groups, false);
        }
    }

    /// Whether a row counts: it passes the filter, and is not a null value
    /// left out by `IGNORE NULLS`.
    fn counts(&self, value: &ArrayRef, filter: Option<&BooleanArray>, row: usize) -> bool {
        filter.is_none_or(|f| f.is_valid(row) && f.value(row))
            && !(self.ignore_nulls && value.is_null(row))
    }

    /// The rows DataFusion would pick in this pre-ordered batch, ascending;
    /// `None` when the batch is not ordered as promised.
    fn ordered_picks(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<Option<Vec<u32>>> {
        // Only the groups a batch touches are reset after it, so a batch
        // costs its rows, not the number of groups.
        if self.status.len() < total_num_groups {
            self.status.resize(total_num_groups, Walk::Unseen);
            self.chosen.resize(total_num_groups, 0);
        }
        self.touched.clear();
        let ordered = self.walk(values, group_indices, filter)?;
        for &g in &self.touched {
            self.status[g] = Walk::Unseen;
        }
        if !ordered {
            return Ok(None);
        }
        let mut rows: Vec<u32> = self
            .touched
            .iter()
            .map(|&g| self.chosen[g] as u32)
            .collect();
        rows.sort_unstable();
        Ok(Some(rows))
    }

    /// Finds each touched group's pick; `false` when a row is out of order.
    fn walk(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<bool> {
        let value = &values[0];
        if self.last {
            let comparator = self.comparator(&values[1..])?;
            for (i, &g) in group_indices.iter().enumerate().rev() {
                if self.status[g] == Walk::Done || !self.counts(value, filter, i) {
                    continue;
                }
                if self.status[g] == Walk::Unseen {
                    self.status[g] = Walk::Tying;
                    self.chosen[g] = i;
                    self.touched.push(g);
                    continue;
                }
                match comparator.compare(i, self.chosen[g]) {
                    Ordering::Equal => self.chosen[g] = i,
                    Ordering::Less => self.status[g] = Walk::Done,
                    Ordering::Greater => return Ok(false),
                }
            }
        } else {
            for (i, &g) in group_indices.iter().enumerate() {
                if self.status[g] == Walk::Unseen && self.counts(value, filter, i) {
                    self.status[g] = Walk::Done;
                    self.chosen[g] = i;
                    self.touched.push(g);
                }
            }
        }
        Ok(true)
    }

    /// Each group's extreme row of a batch in any order, as DataFusion finds
    /// it (the first of tying rows).
    fn extremes(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<Vec<u32>> {
        if self.status.len() < total_num_groups {
            self.status.resize(total_num_groups, Walk::Unseen);
            self.chosen.resize(total_num_groups, 0);
        }
        self.touched.clear();
        let comparator = self.comparator(&values[1..])?;
        for (i, &g) in group_indices.iter().enumerate() {
            if !self.counts(&values[0], filter, i) {
                continue;
            }
            if self.status[g] == Walk::Unseen {
                self.status[g] = Walk::Done;
                self.chosen[g] = i;
                self.touched.push(g);
                continue;
            }
            let order = comparator.compare(self.chosen[g], i);
            if (self.last && order.is_lt()) || (!self.last && order.is_gt()) {
                self.chosen[g] = i;
            }
        }
        for &g in &self.touched {
            self.status[g] = Walk::Unseen;
        }
        Ok(self
            .touched
            .iter()
            .map(|&g| self.chosen[g] as u32)
            .collect())
    }

    fn comparator(&self, orderings: &[ArrayRef]) -> Result<LexicographicalComparator> {
        let columns: Vec<SortColumn> = orderings
            .iter()
            .zip(&self.options)
            .map(|(values, options)| SortColumn {
                values: values.clone(),
                options: Some(*options),
            })
            .collect();
        Ok(LexicographicalComparator::try_new(&columns)?)
    }

    /// Keeps `rows` of `columns` (one per group, `group_of` each) where
    /// they come before (`first_value`) or after (`last_value`) the group's
    /// pick so far; ties keep the earlier pick, as DataFusion does.
    fn take_in(
        &mut self,
        columns: &[ArrayRef],
        rows: Vec<u32>,
        group_of: impl Fn(usize) -> usize,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows = UInt32Array::from(rows);
        let chunk = columns
            .iter()
            .map(|c| take(c.as_ref(), &rows, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let at = self.chunks.len() as u32;
        for (k, &row) in rows.values().iter().enumerate() {
            let g = group_of(row as usize);
            if !self.set[g] || self.replaces(&chunk, k, self.picks[g])? {
                self.picks[g] = (at, k as u32);
                self.set[g] = true;
            }
        }
        self.chunks.push(chunk);
        if self.chunks.len() > MAX_CHUNKS {
            self.gather()?;
        }
        Ok(())
    }

    /// Whether row `k` of `chunk` takes the place of the pick `(c, r)`.
    fn replaces(&self, chunk: &[ArrayRef], k: usize, (c, r): (u32, u32)) -> Result<bool> {
        let held = &self.chunks[c as usize];
        for ((new, old), options) in chunk[1..].iter().zip(&held[1..]).zip(&self.options) {
            let compare = make_comparator(new.as_ref(), old.as_ref(), *options)?;
            match compare(k, r as usize) {
                Ordering::Equal => continue,
                order => return Ok(order.is_lt() != self.last),
            }
        }
        Ok(false)
    }

    /// Every column of the groups' picks, `..n`, with nulls where unset.
    fn gathered(&self, n: usize) -> Result<Vec<ArrayRef>> {
        let nulls: Vec<ArrayRef> = self.types.iter().map(|t| new_null_array(t, 1)).collect();
        let none = self.chunks.len();
        let indices: Vec<(usize, usize)> = (0..n)
            .map(|g| match self.set[g] {
                true => (self.picks[g].0 as usize, self.picks[g].1 as usize),
                false => (none, 0),
            })
            .collect();
        (0..self.types.len())
            .map(|j| {
                let sources: Vec<&dyn Array> = self
                    .chunks
                    .iter()
                    .map(|c| c[j].as_ref())
                    .chain(std::iter::once(nulls[j].as_ref()))
                    .collect();
                Ok(interleave(&sources, &indices)?)
            })
            .collect()
    }

    /// The picks gathered into one chunk.
    fn gather(&mut self) -> Result<()> {
        let n = self.picks.len();
        let chunk = self.gathered(n)?;
        self.chunks = vec![chunk];
        for (g, pick) in self.picks.iter_mut().enumerate() {
            *pick = (0, g as u32);
        }
        Ok(())
    }

    /// The first groups' columns and is-set flags, taken out.
    fn take(&mut self, emit_to: EmitTo) -> Result<(Vec<ArrayRef>, Vec<bool>)> {
        let n = match emit_to {
            EmitTo::All => self.picks.len(),
            EmitTo::First(n) => n,
        };
        let columns = self.gathered(n)?;
        let set: Vec<bool> = self.set.drain(..n).collect();
        self.picks.drain(..n);
        match self.picks.is_empty() {
            true => self.chunks.clear(),
            false => self.gather()?,
        }
        Ok((columns, set))
    }
}

impl GroupsAccumulator for PreOrdered {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let rows = match self.ordered_picks(values, group_indices, opt_filter, total_num_groups)? {
            Some(rows) => rows,
            None => self.extremes(values, group_indices, opt_filter, total_num_groups)?,
        };
        self.take_in(values, rows, |r| group_indices[r])
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (mut columns, _) = self.take(emit_to)?;
        Ok(columns.swap_remove(0))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (mut columns, set) = self.take(emit_to)?;
        columns.push(Arc::new(BooleanArray::from(set)));
        Ok(columns)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let Some((is_set, columns)) = values.split_last() else {
            return internal_err!("{} state without columns", self.name());
        };
        let Some(is_set) = is_set.as_boolean_opt() else {
            return internal_err!("{} state without its is-set column", self.name());
        };
        let rows = self.extremes(columns, group_indices, Some(is_set), total_num_groups)?;
        self.take_in(columns, rows, |r| group_indices[r])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let mut state = values.to_vec();
        state.push(match opt_filter {
            Some(f) => Arc::new(f.clone()),
            None => Arc::new(BooleanArray::from(vec![true; values[0].len()])),
        });
        Ok(state)
    }

    fn size(&self) -> usize {
        self.chunks
            .iter()
            .flatten()
            .map(|c| c.get_array_memory_size())
            .sum::<usize>()
            + self.picks.capacity() * size_of::<(u32, u32)>()
            + self.set.capacity()
            + self.status.capacity() * size_of::<Walk>()
            + (self.chosen.capacity() + self.touched.capacity()) * size_of::<usize>()
    }
}

impl PreOrdered {
    fn name(&self) -> &'static str {
        if self.last {
            "last_value"
        } else {
            "first_value"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::PhysicalSortExpr;
    use datafusion::physical_expr::expressions::col;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// DataFusion's accumulator (`pre_ordered == false` builds it) or ours.
    fn accumulator(
        last: bool,
        pre_ordered: bool,
        ignore_nulls: bool,
    ) -> Box<dyn GroupsAccumulator> {
        let schema = Schema::new(vec![
            Field::new("v", DataType::Float64, true),
            Field::new("k", DataType::Int64, false),
        ]);
        let order = [PhysicalSortExpr::new_default(col("k", &schema).unwrap())];
        let exprs = [col("v", &schema).unwrap()];
        let fields: Vec<FieldRef> = vec![Arc::new(Field::new("v", DataType::Float64, true))];
        let args = AccumulatorArgs {
            return_field: Arc::new(Field::new("out", DataType::Float64, true)),
            schema: &schema,
            ignore_nulls,
            order_bys: &order,
            is_reversed: false,
            name: "f",
            is_distinct: false,
            exprs: &exprs,
            expr_fields: &fields,
        };
        let function = OrderedFirstLast::new(last, pre_ordered);
        match pre_ordered {
            true => function.create_groups_accumulator(args).unwrap(),
            false => function.inner.create_groups_accumulator(args).unwrap(),
        }
    }

    /// Many small ordered batches over a few groups (more batches than
    /// chunks are kept apart), with emission of the first groups, partial
    /// states merged into a second accumulator, and evaluation: the same
    /// answers and states as DataFusion's accumulator.
    #[test]
    fn answers_and_states_are_datafusions_over_many_batches() {
        for (seed, last, ignore_nulls) in [
            (1, true, false),
            (2, false, false),
            (3, true, true),
            (4, false, true),
        ] {
            let mut rng = SmallRng::seed_from_u64(seed);
            let (mut ours, mut theirs) = (
                accumulator(last, true, ignore_nulls),
                accumulator(last, false, ignore_nulls),
            );
            let groups = 5;
            let mut k = 0i64;
            for _ in 0..(3 * MAX_CHUNKS) {
                // Rows in `k` order, ties common, each to any group.
                let n = rng.random_range(1..6);
                let keys: Vec<i64> = (0..n)
                    .map(|_| {
                        k += rng.random_range(0..2);
                        k
                    })
                    .collect();
                let values: Float64Array = (0..n)
                    .map(|_| (!rng.random_bool(0.2)).then(|| rng.random_range(-9..9) as f64))
                    .collect();
                // Group indices ascend with `k` within a batch: one group per batch here.
                let g = rng.random_range(0..groups);
                let columns: Vec<ArrayRef> =
                    vec![Arc::new(values), Arc::new(Int64Array::from(keys))];
                let indices = vec![g; n];
                let filter =
                    BooleanArray::from((0..n).map(|_| rng.random_bool(0.9)).collect::<Vec<_>>());
                for acc in [&mut ours, &mut theirs] {
                    acc.update_batch(&columns, &indices, Some(&filter), groups)
                        .unwrap();
                }
            }
            let (a, b) = (
                ours.state(EmitTo::First(2)).unwrap(),
                theirs.state(EmitTo::First(2)).unwrap(),
            );
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "seed {seed}");
            // The states of the first groups merged into fresh accumulators.
            let (mut merged, mut reference) = (
                accumulator(last, true, ignore_nulls),
                accumulator(last, false, ignore_nulls),
            );
            merged.merge_batch(&a, &[1, 0], 2).unwrap();
            reference.merge_batch(&b, &[1, 0], 2).unwrap();
            merged.merge_batch(&a, &[0, 1], 2).unwrap();
            reference.merge_batch(&b, &[0, 1], 2).unwrap();
            let (a, b) = (
                merged.evaluate(EmitTo::All).unwrap(),
                reference.evaluate(EmitTo::All).unwrap(),
            );
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "seed {seed}");
            let (a, b) = (
                ours.evaluate(EmitTo::All).unwrap(),
                theirs.evaluate(EmitTo::All).unwrap(),
            );
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "seed {seed}");
        }
    }
}
