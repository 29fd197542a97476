//! The `downsample(step, value, n)` and `lttb(step, value, n)` aggregate
//! functions: the [`min_max_last`](super::series::min_max_last) and
//! [`lttb`](super::series::lttb) strategies, usable on any query.
//!
//! Both buffer the group's points (two List columns in the partial state, so
//! two-phase aggregation merges them) and sort by (step, value) before
//! computing, so the answer never depends on partitioning.
//!
//! `n` is checked when the accumulator is built (it must be a positive
//! integer literal after constant folding). `lttb` with `n < 3` fails only for
//! a series longer than `n`: it always keeps both ends, so it has nothing to
//! choose with, while a short series is returned whole as for any `n`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StructArray};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::cast::{as_float64_array, as_int64_array, as_list_array};
use datafusion::common::utils::SingleRowListArrayBuilder;
use datafusion::common::{ScalarValue, internal_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;

use super::series::{self, Point};

/// `downsample(step, value, n)`: one struct per non-empty bucket of the group's step range.
pub fn downsample_udaf() -> AggregateUDF {
    AggregateUDF::from(SeriesUdaf::new(Kind::Downsample))
}

/// `lttb(step, value, n)`: at most `n` points chosen by Largest-Triangle-Three-Buckets.
pub fn lttb_udaf() -> AggregateUDF {
    AggregateUDF::from(SeriesUdaf::new(Kind::Lttb))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Downsample,
    Lttb,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Downsample => "downsample",
            Kind::Lttb => "lttb",
        }
    }

    fn element_fields(self) -> Fields {
        let step = Field::new("step", DataType::Int64, false);
        match self {
            Kind::Downsample => vec![
                step,
                Field::new("min", DataType::Float64, true),
                Field::new("max", DataType::Float64, true),
                Field::new("last", DataType::Float64, true),
                Field::new("count", DataType::Int64, false),
            ],
            Kind::Lttb => vec![step, Field::new("value", DataType::Float64, false)],
        }
        .into()
    }

    fn return_type(self) -> DataType {
        list_of(DataType::Struct(self.element_fields()))
    }
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, true)))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SeriesUdaf {
    kind: Kind,
    signature: Signature,
}

impl SeriesUdaf {
    fn new(kind: Kind) -> Self {
        // User-defined so `coerce_types` can name the bad argument in its error.
        let signature = Signature::user_defined(Volatility::Immutable);
        SeriesUdaf { kind, signature }
    }
}

impl AggregateUDFImpl for SeriesUdaf {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        let [step, value, n] = arg_types else {
            return plan_err!(
                "{name}(step, value, n) takes 3 arguments, got {}",
                arg_types.len()
            );
        };
        if !(step.is_integer() || step.is_null()) {
            return plan_err!("{name}: step must be an integer, got {step}");
        }
        if !(value.is_numeric() || value.is_null()) {
            return plan_err!("{name}: value must be numeric, got {value}");
        }
        if !n.is_integer() {
            return plan_err!("{name}: n must be a positive integer constant, got type {n}");
        }
        Ok(vec![DataType::Int64, DataType::Float64, DataType::Int64])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.kind.return_type())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "steps"),
                list_of(DataType::Int64),
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "values"),
                list_of(DataType::Float64),
                true,
            )),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return plan_err!("{}: DISTINCT is not supported", self.name());
        }
        let n = constant_n(self.name(), args.exprs.get(2))?;
        Ok(Box::new(SeriesAccumulator {
            kind: self.kind,
            n,
            points: Vec::new(),
        }))
    }

    // Points are sorted in `evaluate`, so an `ORDER BY` inside the call changes nothing.
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
}

/// `n` as planned: it must be a literal (constant folding has already run), positive.
fn constant_n(name: &str, expr: Option<&Arc<dyn PhysicalExpr>>) -> Result<u64> {
    let Some(expr) = expr else {
        return plan_err!("{name}(step, value, n) takes 3 arguments");
    };
    let Some(literal) = expr.downcast_ref::<Literal>() else {
        return plan_err!("{name}: n must be a positive integer constant, got `{expr}`");
    };
    match literal.value() {
        ScalarValue::Int64(Some(n)) if *n > 0 => Ok(*n as u64),
        other => plan_err!("{name}: n must be a positive integer constant, got {other}"),
    }
}

#[derive(Debug)]
struct SeriesAccumulator {
    kind: Kind,
    n: u64,
    /// Every point of the group with a non-NULL step, in arrival order.
    points: Vec<Point>,
}

impl SeriesAccumulator {
    fn push(&mut self, steps: &Int64Array, values: &Float64Array) -> Result<()> {
        if steps.len() != values.len() {
            return internal_err!("{}: step and value lengths differ", self.kind.name());
        }
        self.points.reserve(steps.len() - steps.null_count());
        for i in 0..steps.len() {
            if steps.is_valid(i) {
                self.points
                    .push((steps.value(i), values.is_valid(i).then(|| values.value(i))));
            }
        }
        Ok(())
    }

    fn evaluate_downsample(&self) -> Result<ArrayRef> {
        let buckets = series::min_max_last(&self.points, self.n);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(buckets.iter().map(|b| b.step).collect::<Int64Array>()),
            Arc::new(buckets.iter().map(|b| b.min).collect::<Float64Array>()),
            Arc::new(buckets.iter().map(|b| b.max).collect::<Float64Array>()),
            Arc::new(buckets.iter().map(|b| b.last).collect::<Float64Array>()),
            Arc::new(buckets.iter().map(|b| b.count).collect::<Int64Array>()),
        ];
        Ok(Arc::new(StructArray::try_new(
            Kind::Downsample.element_fields(),
            columns,
            None,
        )?))
    }

    fn evaluate_lttb(&self) -> Result<ArrayRef> {
        let points: Vec<(i64, f64)> = self
            .points
            .iter()
            .filter_map(|&(s, v)| v.filter(|v| !v.is_nan()).map(|v| (s, v)))
            .collect();
        let n = usize::try_from(self.n).unwrap_or(usize::MAX);
        let Some(picked) = series::lttb(&points, n) else {
            return Err(crate::Error::invalid(format!(
                "lttb: n must be at least 3 to downsample a series of {} points, got {n}",
                points.len()
            ))
            .into());
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(picked.iter().map(|&i| points[i].0).collect::<Int64Array>()),
            Arc::new(
                picked
                    .iter()
                    .map(|&i| points[i].1)
                    .collect::<Float64Array>(),
            ),
        ];
        Ok(Arc::new(StructArray::try_new(
            Kind::Lttb.element_fields(),
            columns,
            None,
        )?))
    }
}

/// Wraps `array` as a one-row List scalar, refusing lists too long for i32 offsets.
fn list_scalar(array: ArrayRef) -> Result<ScalarValue> {
    if i32::try_from(array.len()).is_err() {
        let e = format!("series of {} points is too long for one list", array.len());
        return Err(crate::Error::invalid(e).into());
    }
    Ok(SingleRowListArrayBuilder::new(array).build_list_scalar())
}

impl Accumulator for SeriesAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [steps, vals, ..] = values else {
            return internal_err!("{}: expected step and value columns", self.kind.name());
        };
        self.push(as_int64_array(steps)?, as_float64_array(vals)?)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [steps, vals] = states else {
            return internal_err!("{}: expected two state columns", self.kind.name());
        };
        let (steps, vals) = (as_list_array(steps)?, as_list_array(vals)?);
        for row in 0..steps.len() {
            if steps.is_valid(row) && vals.is_valid(row) {
                let (s, v) = (steps.value(row), vals.value(row));
                self.push(as_int64_array(&s)?, as_float64_array(&v)?)?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let steps: Int64Array = self.points.iter().map(|p| p.0).collect();
        let values: Float64Array = self.points.iter().map(|p| p.1).collect();
        Ok(vec![
            list_scalar(Arc::new(steps))?,
            list_scalar(Arc::new(values))?,
        ])
    }

    /// NULL for a group without points (like `array_agg`); otherwise a list
    /// ordered by step.
    fn evaluate(&mut self) -> Result<ScalarValue> {
        series::sort_points(&mut self.points);
        let array = match self.kind {
            Kind::Downsample => self.evaluate_downsample()?,
            Kind::Lttb => self.evaluate_lttb()?,
        };
        if array.is_empty() {
            return ScalarValue::try_from(self.kind.return_type());
        }
        list_scalar(array)
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.points.capacity() * size_of::<Point>()
    }
}

#[cfg(test)]
mod tests;
