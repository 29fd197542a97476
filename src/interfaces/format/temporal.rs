//! Dates and times as text for the text formats (CSV, JSON, table), so every
//! stored value renders.
//!
//! Arrow's writers cannot render a timestamp outside chrono's range (about
//! ±262,000 years; an `i64` of microseconds reaches ±292,000): the CSV writer
//! fails, which cuts a streamed answer short, and the JSON and table writers
//! print `ERROR: Cast error …` in the cell. A store may hold such a value (an
//! older build accepted any time; other engines write the tables too), so the
//! text formats get these columns as strings rendered here: a value chrono
//! can represent exactly as Arrow writes it (RFC 3339, e.g.
//! `2023-11-14T22:13:20Z`), any other timestamp or date in ISO 8601's expanded
//! form, a signed year of five or more digits (`+294247-01-10T04:00:54.775807Z`,
//! always in UTC), and a time of day or duration out of range as its raw count
//! with its unit (`90000s`). Nested values (lists, structs, maps of them) are
//! rendered the same way inside.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, StringBuilder};
use arrow::array::{ArrayData, make_array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::Result;

/// Whether a value of `t` may fail to render (a temporal type, or one holding one).
fn has_temporal(t: &DataType) -> bool {
    match t {
        DataType::Timestamp(..)
        | DataType::Date32
        | DataType::Date64
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Duration(_) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_temporal(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| has_temporal(f.data_type())),
        DataType::Dictionary(_, v) => has_temporal(v),
        _ => false,
    }
}

/// `batch` with every date and time value turned into text (see the module doc).
pub fn render_batch(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| has_temporal(f.data_type())) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let rendered = render(column)?;
        fields.push(
            field
                .as_ref()
                .clone()
                .with_data_type(rendered.data_type().clone()),
        );
        columns.push(rendered);
    }
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

fn render(array: &ArrayRef) -> Result<ArrayRef> {
    let t = array.data_type();
    if !has_temporal(t) {
        return Ok(array.clone());
    }
    match t {
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(..)
        | DataType::Map(..)
        | DataType::Struct(_)
        | DataType::Dictionary(..) => render_nested(array),
        _ => render_leaf(array),
    }
}

/// Rebuilds a nested array around its rendered children: same offsets, nulls
/// and keys; only the children's types change.
fn render_nested(array: &ArrayRef) -> Result<ArrayRef> {
    let data = array.to_data();
    let children = data
        .child_data()
        .iter()
        .map(|child| Ok(render(&make_array(child.clone()))?.to_data()))
        .collect::<Result<Vec<ArrayData>>>()?;
    let with = |f: &Field, child: &ArrayData| {
        Arc::new(f.clone().with_data_type(child.data_type().clone()))
    };
    let new_type = match data.data_type() {
        DataType::List(f) => DataType::List(with(f, &children[0])),
        DataType::LargeList(f) => DataType::LargeList(with(f, &children[0])),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(with(f, &children[0]), *n),
        DataType::Map(f, sorted) => DataType::Map(with(f, &children[0]), *sorted),
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .zip(&children)
                .map(|(f, c)| with(f, c))
                .collect(),
        ),
        DataType::Dictionary(k, _) => {
            DataType::Dictionary(k.clone(), Box::new(children[0].data_type().clone()))
        }
        other => other.clone(),
    };
    let rebuilt = data
        .into_builder()
        .data_type(new_type)
        .child_data(children)
        .build()?;
    Ok(make_array(rebuilt))
}

/// A temporal column as text: Arrow's own rendering where it succeeds, else
/// the fallback of the module doc.
fn render_leaf(array: &ArrayRef) -> Result<ArrayRef> {
    let options = FormatOptions::default().with_display_error(false);
    let formatter = ArrayFormatter::try_new(array.as_ref(), &options)?;
    // The raw counts, read only once a value needs the fallback.
    let mut raw: Option<ArrayRef> = None;
    let mut out = StringBuilder::with_capacity(array.len(), array.len() * 24);
    let mut text = String::new();
    for i in 0..array.len() {
        if array.is_null(i) {
            out.append_null();
            continue;
        }
        text.clear();
        if write!(text, "{}", formatter.value(i)).is_err() {
            text.clear();
            let raw = match &raw {
                Some(raw) => raw,
                None => raw.insert(arrow::compute::cast(array, &DataType::Int64)?),
            };
            let value = raw.as_primitive::<arrow::datatypes::Int64Type>().value(i);
            fallback(&mut text, array.data_type(), value);
        }
        out.append_value(&text);
    }
    Ok(Arc::new(out.finish()))
}

fn fallback(out: &mut String, t: &DataType, raw: i64) {
    let unit = match t {
        DataType::Timestamp(u, _)
        | DataType::Time32(u)
        | DataType::Time64(u)
        | DataType::Duration(u) => *u,
        DataType::Date64 => TimeUnit::Millisecond,
        _ => TimeUnit::Second,
    };
    let (per_second, unit) = match unit {
        TimeUnit::Second => (1, "s"),
        TimeUnit::Millisecond => (1_000, "ms"),
        TimeUnit::Microsecond => (1_000_000, "us"),
        TimeUnit::Nanosecond => (1_000_000_000, "ns"),
    };
    match t {
        DataType::Timestamp(..) | DataType::Date64 => expanded_datetime(
            out,
            raw.div_euclid(per_second),
            raw.rem_euclid(per_second),
            per_second,
        ),
        DataType::Date32 => {
            let (y, m, d) = civil_from_days(raw);
            let _ = write!(out, "{}-{m:02}-{d:02}", expanded_year(y));
        }
        _ => {
            let _ = write!(out, "{raw}{unit}");
        }
    }
}

/// `secs` + `frac`/`per_second` since the epoch as ISO 8601 with an expanded year, in UTC.
fn expanded_datetime(out: &mut String, secs: i64, frac: i64, per_second: i64) {
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    let _ = write!(
        out,
        "{}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}",
        expanded_year(y)
    );
    // chrono's `AutoSi`: no fraction, or 3, 6 or 9 digits as the value needs.
    let nanos = frac * (1_000_000_000 / per_second);
    let _ = match nanos {
        0 => Ok(()),
        n if n % 1_000_000 == 0 => write!(out, ".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => write!(out, ".{:06}", n / 1_000),
        n => write!(out, ".{n:09}"),
    };
    out.push('Z');
}

/// A year as ISO 8601's expanded representation: a sign and at least five digits.
fn expanded_year(y: i64) -> String {
    format!("{}{:05}", if y < 0 { '-' } else { '+' }, y.unsigned_abs())
}

/// (year, month, day) of the proleptic Gregorian calendar for days since
/// 1970-01-01 (Howard Hinnant's `civil_from_days`), in `i128` so no `i64`
/// count of days overflows.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days as i128 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i128::from(m <= 2);
    (y as i64, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Date32Array, ListArray, StringArray, TimestampMicrosecondArray, TimestampSecondArray,
    };
    use proptest::prelude::*;

    fn texts(array: ArrayRef) -> Vec<Option<String>> {
        let out = render(&array).unwrap();
        out.as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect()
    }

    #[test]
    fn in_range_values_render_as_arrow_writes_them_and_the_rest_expanded() {
        let micros = TimestampMicrosecondArray::from(vec![
            Some(1_700_000_000_123_000),
            None,
            Some(i64::MAX),
            Some(i64::MIN + 1),
            Some(0),
        ])
        .with_timezone("UTC");
        assert_eq!(
            texts(Arc::new(micros)),
            vec![
                Some("2023-11-14T22:13:20.123Z".into()),
                None,
                Some("+294247-01-10T04:00:54.775807Z".into()),
                Some("-290308-12-21T19:59:05.224193Z".into()),
                Some("1970-01-01T00:00:00Z".into()),
            ]
        );
        assert_eq!(
            texts(Arc::new(TimestampSecondArray::from(vec![i64::MAX]))),
            vec![Some("+292277026596-12-04T15:30:07Z".into())]
        );
        assert_eq!(
            texts(Arc::new(Date32Array::from(vec![0, i32::MAX]))),
            vec![Some("1970-01-01".into()), Some("+5881580-07-11".into())]
        );
    }

    #[test]
    fn nested_timestamps_are_rendered_inside_their_lists() {
        let values = TimestampMicrosecondArray::from(vec![0, i64::MAX, 1]).with_timezone("UTC");
        let list = ListArray::new(
            Arc::new(Field::new_list_field(values.data_type().clone(), true)),
            arrow::buffer::OffsetBuffer::from_lengths([2, 1]),
            Arc::new(values),
            None,
        );
        let out = render(&(Arc::new(list) as ArrayRef)).unwrap();
        let list = out.as_list::<i32>();
        let first = list.value(0);
        let first: &StringArray = first.as_string();
        assert_eq!(first.value(1), "+294247-01-10T04:00:54.775807Z");
        assert_eq!(
            list.value(1).as_string::<i32>().value(0),
            "1970-01-01T00:00:00.000001Z"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Where chrono can render a value, the fallback agrees with it, so the
        /// two renderings are one calendar.
        #[test]
        fn the_fallback_agrees_with_chrono(us in -8_000_000_000_000_000_000i64..8_000_000_000_000_000_000) {
            let chrono = chrono::DateTime::from_timestamp_micros(us).unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            let mut ours = String::new();
            expanded_datetime(&mut ours, us.div_euclid(1_000_000), us.rem_euclid(1_000_000), 1_000_000);
            // chrono writes four-digit years plainly and others with a sign.
            let (year, rest) = chrono.split_at(chrono[1..].find('-').unwrap() + 1);
            let year: i64 = year.parse().unwrap();
            prop_assert_eq!(format!("{}{rest}", expanded_year(year)), ours);
        }

        #[test]
        fn any_timestamp_renders(us in any::<i64>()) {
            let array: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![us]).with_timezone("UTC"));
            let text = texts(array).remove(0).unwrap();
            prop_assert!(!text.contains("ERROR"));
        }
    }
}
