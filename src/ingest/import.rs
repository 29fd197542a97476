//! `forkline import`: a run's history from another tracker, as CSV or Parquet.
//!
//! The whole file is validated before anything is written and lands as one
//! commit, so a bad row leaves the store untouched.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::ingest::{MetricPoint, PointBatch, limits};
use crate::store::RunId;

/// Reads and validates every row of `path` as points of `run`; the caller
/// commits the batch whole.
pub fn read_points(run: RunId, path: &Path) -> Result<PointBatch> {
    let batches = read_file(path)?;
    let mut points = PointBatch::new();
    let mut first_row = 1;
    for batch in &batches {
        points.extend(run, points_from_batch(batch, first_row)?)?;
        first_row += batch.num_rows();
    }
    if points.is_empty() {
        return Err(Error::invalid(format!("{} holds no rows", path.display())));
    }
    Ok(points)
}

fn read_file(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path)
        .map_err(|e| Error::invalid(format!("cannot open {}: {e}", path.display())))?;
    let is_parquet = {
        use std::io::Read;
        let mut magic = [0u8; 4];
        let mut probe = File::open(path)?;
        probe.read(&mut magic)? == 4 && &magic == b"PAR1"
    };
    if is_parquet {
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| {
                Error::invalid(format!(
                    "{} is not a readable Parquet file: {e}",
                    path.display()
                ))
            })?
            .build()?;
        return Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?);
    }
    // CSV columns are read as text and parsed here, so NaN/inf and row numbers in errors work.
    let header = {
        let mut r = arrow::csv::reader::Format::default().with_header(true);
        r = r.with_delimiter(b',');
        r.infer_schema(File::open(path)?, Some(1))
            .map_err(|e| {
                Error::invalid(format!(
                    "{} is not a readable CSV file: {e}",
                    path.display()
                ))
            })?
            .0
    };
    let schema = Arc::new(Schema::new(
        header
            .fields()
            .iter()
            .map(|f| Field::new(f.name().trim(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let reader = arrow::csv::ReaderBuilder::new(schema)
        .with_header(true)
        .build(file)
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a ArrayRef> {
    let schema = batch.schema();
    let idx = schema
        .fields()
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(name))?;
    Some(batch.column(idx))
}

fn required<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    column(batch, name).ok_or_else(|| {
        Error::invalid(format!(
            "missing column `{name}` (expected metric, step, value[, time])"
        ))
    })
}

fn points_from_batch(batch: &RecordBatch, first_row: usize) -> Result<Vec<MetricPoint>> {
    let metric = cast(required(batch, "metric")?, &DataType::Utf8)?;
    let metric = metric.as_string::<i32>();
    let step = required(batch, "step")?;
    let value = required(batch, "value")?;
    let time = column(batch, "time");
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let row = first_row + i;
        if metric.is_null(i) {
            return Err(Error::invalid(format!("row {row}: metric is empty")));
        }
        out.push(MetricPoint {
            metric: metric.value(i).to_string(),
            step: step_at(step, i, row)?,
            value: value_at(value, i, row)?,
            time_us: time.map(|t| time_at(t, i, row)).transpose()?.flatten(),
        });
    }
    Ok(out)
}

fn step_at(col: &ArrayRef, i: usize, row: usize) -> Result<u64> {
    let bad = |v: &dyn std::fmt::Display| {
        Error::invalid(format!("row {row}: step `{v}` is not an integer ≥ 0"))
    };
    if col.is_null(i) {
        return Err(Error::invalid(format!("row {row}: step is empty")));
    }
    let v: i64 = match col.data_type() {
        DataType::Utf8 => {
            let s = col.as_string::<i32>().value(i).trim();
            s.parse().map_err(|_| bad(&s))?
        }
        _ => {
            let c = cast(col, &DataType::Int64).map_err(|_| bad(&"?"))?;
            c.as_primitive::<Int64Type>().value(i)
        }
    };
    u64::try_from(v).map_err(|_| bad(&v))
}

fn value_at(col: &ArrayRef, i: usize, row: usize) -> Result<f64> {
    if col.is_null(i) {
        return Err(Error::invalid(format!("row {row}: value is empty")));
    }
    match col.data_type() {
        DataType::Utf8 => {
            let s = col.as_string::<i32>().value(i).trim();
            s.parse::<f64>()
                .map_err(|_| Error::invalid(format!("row {row}: value `{s}` is not a number")))
        }
        _ => {
            let c = cast(col, &DataType::Float64)
                .map_err(|_| Error::invalid(format!("row {row}: value is not a number")))?;
            Ok(c.as_primitive::<Float64Type>().value(i))
        }
    }
}

/// Times are seconds since the epoch (number) or RFC 3339 text, inside the
/// accepted window (see `ingest::limits`).
fn time_at(col: &ArrayRef, i: usize, row: usize) -> Result<Option<i64>> {
    match parse_time(col, i, row)? {
        Some(us) if !limits::time_in_window(us) => Err(Error::invalid(format!(
            "row {row}: time ({us} µs since the epoch) is outside {}",
            limits::TIME_WINDOW
        ))),
        us => Ok(us),
    }
}

fn parse_time(col: &ArrayRef, i: usize, row: usize) -> Result<Option<i64>> {
    if col.is_null(i) {
        return Ok(None);
    }
    let from_secs = |s: f64| {
        if s.is_finite() {
            Ok((s * 1e6).round() as i64)
        } else {
            Err(Error::invalid(format!(
                "row {row}: time `{s}` is not a time"
            )))
        }
    };
    match col.data_type() {
        DataType::Utf8 => {
            let s = col.as_string::<i32>().value(i).trim();
            if s.is_empty() {
                return Ok(None);
            }
            if let Ok(secs) = s.parse::<f64>() {
                return from_secs(secs).map(Some);
            }
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.timestamp_micros()))
                .map_err(|_| {
                    Error::invalid(format!(
                        "row {row}: time `{s}` is neither epoch seconds nor RFC 3339"
                    ))
                })
        }
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            let c = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            // A cast that overflows yields null, which must not read as the epoch.
            if c.is_null(i) {
                return Err(Error::invalid(format!(
                    "row {row}: time is outside {}",
                    limits::TIME_WINDOW
                )));
            }
            Ok(Some(c.as_primitive::<TimestampMicrosecondType>().value(i)))
        }
        _ => {
            let c = cast(col, &DataType::Float64)
                .map_err(|_| Error::invalid(format!("row {row}: time is not a time")))?;
            from_secs(c.as_primitive::<Float64Type>().value(i)).map(Some)
        }
    }
}
