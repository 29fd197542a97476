//! `first_value` / `last_value` that use the order their input already has.
//!
//! DataFusion marks these aggregates "pre-ordered" when the input is sorted by
//! the group keys it is sorted on and then by the aggregate's `ORDER BY` (the
//! stitched series are, by `(run_id, step)`), but its grouped accumulator
//! still compares every row's ordering with the group's best so far. Over
//! pre-ordered input the row DataFusion would pick can be found without that:
//! for `first_value` it is the group's first row in the batch, for
//! `last_value` the first of the rows that tie with the group's last one. This
//! module registers both names over DataFusion's own functions and, where the
//! input is pre-ordered, hands DataFusion's accumulator only those rows (as a
//! filter), so the answers, states and tie-breaking are DataFusion's.

use std::any::Any;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array};
use arrow::compute::{LexicographicalComparator, SortColumn, SortOptions, take};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
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
        let options: Vec<SortOptions> = args.order_bys.iter().map(|e| e.options).collect();
        let ignore_nulls = args.ignore_nulls;
        let inner = self.inner.create_groups_accumulator(args)?;
        if !self.pre_ordered || options.is_empty() {
            return Ok(inner);
        }
        Ok(Box::new(PreOrdered {
            inner,
            last: self.last,
            ignore_nulls,
            options,
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

/// DataFusion's grouped accumulator, fed one row per group and batch.
struct PreOrdered {
    inner: Box<dyn GroupsAccumulator>,
    last: bool,
    ignore_nulls: bool,
    options: Vec<SortOptions>,
    status: Vec<Walk>,
    chosen: Vec<usize>,
    touched: Vec<usize>,
}

impl PreOrdered {
    /// The rows DataFusion would pick in this batch, ascending; `None` when
    /// the batch is not ordered as promised (then every row is given).
    fn picks(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<Option<Vec<u32>>> {
        let (vals, ignore_nulls) = (&values[0], self.ignore_nulls);
        let counts = |i: usize| {
            opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i))
                && !(ignore_nulls && vals.is_null(i))
        };
        // Only the groups a batch touches are reset after it, so a batch
        // costs its rows, not the number of groups.
        if self.status.len() < total_num_groups {
            self.status.resize(total_num_groups, Walk::Unseen);
            self.chosen.resize(total_num_groups, 0);
        }
        self.touched.clear();
        let ordered = self.walk(values, group_indices, &counts)?;
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
        counts: &impl Fn(usize) -> bool,
    ) -> Result<bool> {
        if self.last {
            let columns: Vec<SortColumn> = values[1..]
                .iter()
                .zip(&self.options)
                .map(|(values, options)| SortColumn {
                    values: values.clone(),
                    options: Some(*options),
                })
                .collect();
            let comparator = LexicographicalComparator::try_new(&columns)?;
            for (i, &g) in group_indices.iter().enumerate().rev() {
                if self.status[g] == Walk::Done || !counts(i) {
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
                if self.status[g] == Walk::Unseen && counts(i) {
                    self.status[g] = Walk::Done;
                    self.chosen[g] = i;
                    self.touched.push(g);
                }
            }
        }
        Ok(true)
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
        match self.picks(values, group_indices, opt_filter, total_num_groups)? {
            // The picked rows alone: DataFusion's accumulator then visits a
            // row per group, not every row of the batch with a mask.
            Some(rows) => {
                let rows = UInt32Array::from(rows);
                let picked = values
                    .iter()
                    .map(|v| take(v.as_ref(), &rows, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let groups: Vec<usize> = rows
                    .values()
                    .iter()
                    .map(|&r| group_indices[r as usize])
                    .collect();
                self.inner
                    .update_batch(&picked, &groups, None, total_num_groups)
            }
            None => self
                .inner
                .update_batch(values, group_indices, opt_filter, total_num_groups),
        }
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.inner.evaluate(emit_to)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(values, group_indices, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        self.inner.convert_to_state(values, opt_filter)
    }

    fn size(&self) -> usize {
        self.inner.size()
            + self.status.capacity() * size_of::<Walk>()
            + (self.chosen.capacity() + self.touched.capacity()) * size_of::<usize>()
    }
}
