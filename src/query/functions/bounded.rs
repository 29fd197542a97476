//! Functions whose result size comes from an argument's value rather than
//! from the size of their input — `repeat('ab', 1000000000)` is 23 bytes of
//! SQL and 2 GB of result — are registered here in place of DataFusion's,
//! wrapped with a check of that size from the arguments before anything is
//! allocated. Such allocations bypass the memory pool, and one that fails
//! aborts the process.
//!
//! Audited in DataFusion 55's scalar functions: `repeat`, `lpad`, `rpad`
//! (a count or a width), `replace`, `regexp_replace` (every match may grow
//! by the replacement), `array_repeat`, `array_resize` (a count),
//! `range` / `generate_series` as list values (bounds and step). The others
//! produce at most a small constant factor of their input (`concat`,
//! `overlay`, `translate`, `to_hex`, `encode`, …), or are aggregates, which
//! the memory pool accounts for.

use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::{DataType, FieldRef, IntervalUnit};
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::SessionContext;

/// Most bytes one call of a bounded function may produce for one batch of rows.
pub const MAX_GENERATED_BYTES: u64 = 64 << 20;

/// Each bounded function and how its result size follows from its arguments.
const BOUNDED: [(&str, Growth); 9] = [
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
    ("array_repeat", Growth::ArrayRepeat),
    ("array_resize", Growth::ArrayResize),
    ("range", Growth::Series),
    ("generate_series", Growth::Series),
];

/// Replaces the session's functions listed in [`BOUNDED`] by bounded ones.
pub fn register(ctx: &SessionContext) {
    let functions = ctx.state().scalar_functions().clone();
    for (name, growth) in BOUNDED {
        if let Some(udf) = functions.get(name) {
            ctx.register_udf(bounded(udf.as_ref().clone(), growth));
        }
    }
}

fn bounded(inner: ScalarUDF, growth: Growth) -> ScalarUDF {
    ScalarUDF::new_from_impl(Bounded { inner, growth })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: the text `n` times.
    Repeat,
    /// `lpad(text, n[, fill])`: `n` characters.
    Pad,
    /// `replace(text, from, to)`: every `from` becomes `to`.
    Replace,
    /// `regexp_replace(text, pattern, replacement[, flags])`: every match,
    /// which may be empty, becomes the replacement with its group references.
    RegexpReplace,
    /// `array_repeat(element, n)`: `n` elements.
    ArrayRepeat,
    /// `array_resize(list, n[, value])`: `n` elements.
    ArrayResize,
    /// `range([start, ]stop[, step])`: one element per step.
    Series,
}

/// Per-element overhead counted for list results (offsets, validity, slack).
const ELEMENT_OVERHEAD: u64 = 8;

impl Growth {
    /// An upper bound of the bytes the call produces for `args`.
    fn bytes(self, args: &[ColumnarValue], rows: usize) -> Result<u64> {
        let rows = if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            1
        } else {
            rows
        };
        let mut total = 0u64;
        match self {
            Growth::Repeat => {
                let times = Ints::of(&args[1])?;
                for row in 0..rows {
                    total =
                        total.saturating_add(byte_len(&args[0], row).saturating_mul(times.at(row)));
                }
            }
            Growth::Pad => {
                let width = Ints::of(&args[1])?;
                // Characters of up to four bytes, unless every text is ASCII.
                let char_bytes = if args.iter().all(is_ascii_text) { 1 } else { 4 };
                for row in 0..rows {
                    total = total.saturating_add(width.at(row).saturating_mul(char_bytes));
                }
            }
            Growth::Replace => {
                for row in 0..rows {
                    let text = byte_len(&args[0], row);
                    let (from, to) = (byte_len(&args[1], row), byte_len(&args[2], row));
                    let grown = if to <= from {
                        text
                    } else {
                        let matches = text / from.max(1) + 1;
                        text.saturating_add(matches.saturating_mul(to - from))
                    };
                    total = total.saturating_add(grown);
                }
            }
            Growth::RegexpReplace => {
                let references = Refs::of(&args[2]);
                for row in 0..rows {
                    let text = byte_len(&args[0], row);
                    let replacement = byte_len(&args[2], row);
                    // Matches do not overlap, so group references copy at most
                    // the text once each; every match, even an empty one, adds
                    // the replacement.
                    let grown = text
                        .saturating_mul(1 + references.at(row))
                        .saturating_add((text + 1).saturating_mul(replacement));
                    total = total.saturating_add(grown);
                }
            }
            Growth::ArrayRepeat => {
                let times = Ints::of(&args[1])?;
                for row in 0..rows {
                    let element = byte_len(&args[0], row) + ELEMENT_OVERHEAD;
                    total = total.saturating_add(times.at(row).saturating_mul(element));
                }
            }
            Growth::ArrayResize => {
                let size = Ints::of(&args[1])?;
                for row in 0..rows {
                    let element = args.get(2).map_or(0, |v| byte_len(v, row)) + ELEMENT_OVERHEAD;
                    let kept = byte_len(&args[0], row);
                    total = total
                        .saturating_add(kept.saturating_add(size.at(row).saturating_mul(element)));
                }
            }
            Growth::Series => {
                for row in 0..rows {
                    let at = |i: usize| args.get(i).map(|a| scalar_at(a, row)).transpose();
                    let (start, stop, step) = match args.len() {
                        1 => (None, at(0)?, None),
                        _ => (at(0)?, at(1)?, at(2)?),
                    };
                    let Some(stop) = stop else { continue };
                    let elements = series_len(start.as_ref(), &stop, step.as_ref());
                    total = total.saturating_add(elements.saturating_mul(ELEMENT_OVERHEAD + 8));
                }
            }
        }
        Ok(total)
    }
}

/// Bytes of `value`'s value in `row`: its data for text, binary and lists
/// (an upper bound for nested values), its width otherwise; 0 when null.
fn byte_len(value: &ColumnarValue, row: usize) -> u64 {
    match value {
        ColumnarValue::Scalar(scalar) => scalar_len(scalar),
        ColumnarValue::Array(array) => {
            if array.is_null(row) {
                return 0;
            }
            let len = match array.data_type() {
                DataType::Utf8 => array.as_string::<i32>().value(row).len(),
                DataType::LargeUtf8 => array.as_string::<i64>().value(row).len(),
                DataType::Utf8View => array.as_string_view().value(row).len(),
                DataType::Binary => array.as_binary::<i32>().value(row).len(),
                DataType::LargeBinary => array.as_binary::<i64>().value(row).len(),
                DataType::BinaryView => array.as_binary_view().value(row).len(),
                other => other.primitive_width().unwrap_or_else(|| {
                    let data = array.slice(row, 1).to_data();
                    data.get_slice_memory_size()
                        .unwrap_or_else(|_| data.get_buffer_memory_size())
                }),
            };
            len as u64
        }
    }
}

fn scalar_len(scalar: &ScalarValue) -> u64 {
    let len = match scalar {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.len(),
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::BinaryView(Some(b))
        | ScalarValue::FixedSizeBinary(_, Some(b)) => b.len(),
        other if other.is_null() => 0,
        other => other.size(),
    };
    len as u64
}

fn is_ascii_text(value: &ColumnarValue) -> bool {
    match value {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s),
        ) => s.as_deref().is_none_or(str::is_ascii),
        ColumnarValue::Scalar(scalar) => !scalar.data_type().is_nested(),
        ColumnarValue::Array(array) => match array.data_type() {
            DataType::Utf8 => array.as_string::<i32>().value_data().is_ascii(),
            DataType::LargeUtf8 => array.as_string::<i64>().value_data().is_ascii(),
            DataType::Utf8View => array.as_string_view().iter().flatten().all(str::is_ascii),
            other => other.is_primitive(),
        },
    }
}

fn scalar_at(value: &ColumnarValue, row: usize) -> Result<ScalarValue> {
    match value {
        ColumnarValue::Scalar(scalar) => Ok(scalar.clone()),
        ColumnarValue::Array(array) => ScalarValue::try_from_array(array, row),
    }
}

/// An integer argument (a count or a width), negative and null as 0.
enum Ints {
    Scalar(u64),
    Array(Int64Array),
}

impl Ints {
    fn of(value: &ColumnarValue) -> Result<Self> {
        Ok(match value {
            ColumnarValue::Scalar(scalar) => match scalar.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(n)) => Ints::Scalar(n.max(0) as u64),
                _ => Ints::Scalar(0),
            },
            ColumnarValue::Array(array) => {
                let cast = arrow::compute::cast(array, &DataType::Int64)?;
                Ints::Array(cast.as_primitive().clone())
            }
        })
    }

    fn at(&self, row: usize) -> u64 {
        match self {
            Ints::Scalar(n) => *n,
            Ints::Array(array) if array.is_valid(row) => array.value(row).max(0) as u64,
            Ints::Array(_) => 0,
        }
    }
}

/// Group references (`\1`, `$1`, `${name}`) in a `regexp_replace` replacement.
enum Refs {
    Scalar(u64),
    Array(Vec<u64>),
}

impl Refs {
    fn of(value: &ColumnarValue) -> Self {
        let count = |s: &str| s.bytes().filter(|b| *b == b'\\' || *b == b'$').count() as u64;
        match value {
            ColumnarValue::Scalar(scalar) => Refs::Scalar(match scalar {
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)) => count(s),
                _ => 0,
            }),
            ColumnarValue::Array(array) => {
                let strings: Box<dyn Iterator<Item = Option<&str>>> = match array.data_type() {
                    DataType::Utf8 => Box::new(array.as_string::<i32>().iter()),
                    DataType::LargeUtf8 => Box::new(array.as_string::<i64>().iter()),
                    DataType::Utf8View => Box::new(array.as_string_view().iter()),
                    _ => Box::new(std::iter::empty()),
                };
                Refs::Array(strings.map(|s| s.map_or(0, count)).collect())
            }
        }
    }

    fn at(&self, row: usize) -> u64 {
        match self {
            Refs::Scalar(n) => *n,
            Refs::Array(counts) => counts.get(row).copied().unwrap_or(0),
        }
    }
}

/// Elements of `range` / `generate_series` from `start` (0 when absent) to
/// `stop` by `step` (1 when absent): an upper bound, 0 where the arguments
/// make no series (the function itself then explains why).
fn series_len(start: Option<&ScalarValue>, stop: &ScalarValue, step: Option<&ScalarValue>) -> u64 {
    let (Some(start), Some(stop)) = (start.map_or(Some(0), position), position(stop)) else {
        return 0;
    };
    let step = match step {
        None => 1,
        Some(step) => match shortest_step(step) {
            Some(0) | None => return 0,
            Some(step) => step,
        },
    };
    let steps = (stop - start) / step;
    if steps < 0 {
        0
    } else {
        (steps as u64).saturating_add(1)
    }
}

/// A series bound as a number: itself for integers, nanoseconds for dates and times.
fn position(value: &ScalarValue) -> Option<i128> {
    const DAY: i128 = 86_400_000_000_000;
    Some(match value {
        ScalarValue::Int64(v) => (*v)? as i128,
        ScalarValue::Date32(v) => (*v)? as i128 * DAY,
        ScalarValue::Date64(v) => (*v)? as i128 * 1_000_000,
        ScalarValue::TimestampSecond(v, _) => (*v)? as i128 * 1_000_000_000,
        ScalarValue::TimestampMillisecond(v, _) => (*v)? as i128 * 1_000_000,
        ScalarValue::TimestampMicrosecond(v, _) => (*v)? as i128 * 1_000,
        ScalarValue::TimestampNanosecond(v, _) => (*v)? as i128,
        other => match other.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(v) => v? as i128,
            _ => return None,
        },
    })
}

/// A step in the units of [`position`], taking months as their shortest
/// (28 days), so the count is an upper bound; at least 1 in size.
fn shortest_step(step: &ScalarValue) -> Option<i128> {
    const DAY: i128 = 86_400_000_000_000;
    let nanos = match step {
        ScalarValue::IntervalYearMonth(v) => (*v)? as i128 * 28 * DAY,
        ScalarValue::IntervalDayTime(v) => {
            let v = (*v)?;
            v.days as i128 * DAY + v.milliseconds as i128 * 1_000_000
        }
        ScalarValue::IntervalMonthDayNano(v) => {
            let v = (*v)?;
            v.months as i128 * 28 * DAY + v.days as i128 * DAY + v.nanoseconds as i128
        }
        other => return position(other),
    };
    // A step mixing signs (`1 month -30 days`) may be shorter than its
    // shortest reading: count it as the shortest possible.
    Some(match nanos {
        0 if matches!(
            step.data_type(),
            DataType::Interval(IntervalUnit::MonthDayNano)
        ) =>
        {
            1
        }
        n => n,
    })
}

/// A DataFusion function that refuses, before running, a call whose result
/// would pass [`MAX_GENERATED_BYTES`].
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    growth: Growth,
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[datafusion::prelude::Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let updated = self.inner.inner().with_updated_config(config)?;
        Some(bounded(updated, self.growth))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.growth.bytes(&args.args, args.number_rows)?;
        if bytes > MAX_GENERATED_BYTES {
            return Err(crate::Error::invalid(format!(
                "{}: the result would take {} MiB, more than the {} MiB a function may produce \
                 for one batch of rows; use smaller counts or lengths",
                self.name(),
                bytes >> 20,
                MAX_GENERATED_BYTES >> 20
            ))
            .into());
        }
        self.inner.invoke_with_args(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}
