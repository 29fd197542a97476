//! Rows of the `logs` and `data` tables, as written by the ingest API.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};

use super::TableKind;
use super::schema::{arrow_schema, timestamps};
use crate::error::Result;
use crate::store::RunId;

/// One console line of a run.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Run that printed it.
    pub run_id: RunId,
    /// Capture time (µs since the epoch); `None` means now.
    pub time_us: Option<i64>,
    /// Per-stream line counter of the client.
    pub line_number: Option<i64>,
    /// `INFO` (stdout) or `ERROR` (stderr), upper-cased.
    pub log_type: String,
    /// The line, without its newline.
    pub message: String,
}

/// One structured value of a run (string series, histogram, table, graph).
#[derive(Debug, Clone)]
pub struct DataRecord {
    /// Run that logged it.
    pub run_id: RunId,
    /// The key it was logged under.
    pub log_name: String,
    /// Step of the log call.
    pub step: u64,
    /// Log time (µs since the epoch); `None` means now.
    pub time_us: Option<i64>,
    /// `string-series`, `HISTOGRAM`, `TABLE`, …
    pub data_type: String,
    /// The value: the raw string for string series, else a JSON document.
    pub data: String,
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl LogRecord {
    /// Encodes records in the `logs` table schema.
    pub fn batch(records: &[LogRecord]) -> Result<RecordBatch> {
        let now = now_us();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                records
                    .iter()
                    .map(|r| r.run_id as i64)
                    .collect::<Int64Array>(),
            ),
            Arc::new(timestamps(
                records.iter().map(|r| r.time_us.unwrap_or(now)).collect(),
            )),
            Arc::new(
                records
                    .iter()
                    .map(|r| r.line_number)
                    .collect::<Int64Array>(),
            ),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.log_type.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.message.as_str()),
            )),
        ];
        Ok(RecordBatch::try_new(
            arrow_schema(TableKind::Logs),
            columns,
        )?)
    }
}

impl DataRecord {
    /// Encodes records in the `data` table schema.
    pub fn batch(records: &[DataRecord]) -> Result<RecordBatch> {
        let now = now_us();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                records
                    .iter()
                    .map(|r| r.run_id as i64)
                    .collect::<Int64Array>(),
            ),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.log_name.as_str()),
            )),
            Arc::new(
                records
                    .iter()
                    .map(|r| r.step as i64)
                    .collect::<Int64Array>(),
            ),
            Arc::new(timestamps(
                records.iter().map(|r| r.time_us.unwrap_or(now)).collect(),
            )),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.data_type.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.data.as_str()),
            )),
        ];
        Ok(RecordBatch::try_new(
            arrow_schema(TableKind::Data),
            columns,
        )?)
    }
}

/// One uploaded file of a run.
#[derive(Debug, Clone)]
pub struct FileRecord {
    /// Run that logged it.
    pub run_id: RunId,
    /// The key it was logged under.
    pub log_name: String,
    /// File name, unique within the run.
    pub file_name: String,
    /// Extension or kind (`png`, `mask`, …).
    pub file_type: String,
    /// Size in bytes.
    pub file_size: i64,
    /// Step of the log call, if any.
    pub step: Option<u64>,
    /// Log time (µs since the epoch); `None` means now.
    pub time_us: Option<i64>,
    /// Caption given by the user.
    pub caption: Option<String>,
    /// Object path of the bytes under the store.
    pub path: String,
}

impl FileRecord {
    /// Encodes records in the `files` table schema.
    pub fn batch(records: &[FileRecord]) -> Result<RecordBatch> {
        let now = now_us();
        let strs = |f: &dyn Fn(&FileRecord) -> Option<&str>| -> ArrayRef {
            Arc::new(records.iter().map(f).collect::<StringArray>())
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                records
                    .iter()
                    .map(|r| r.run_id as i64)
                    .collect::<Int64Array>(),
            ),
            strs(&|r| Some(&r.log_name)),
            strs(&|r| Some(&r.file_name)),
            strs(&|r| Some(&r.file_type)),
            Arc::new(records.iter().map(|r| r.file_size).collect::<Int64Array>()),
            Arc::new(
                records
                    .iter()
                    .map(|r| r.step.map(|s| s as i64))
                    .collect::<Int64Array>(),
            ),
            Arc::new(timestamps(
                records.iter().map(|r| r.time_us.unwrap_or(now)).collect(),
            )),
            strs(&|r| r.caption.as_deref()),
            strs(&|r| Some(&r.path)),
        ];
        Ok(RecordBatch::try_new(
            arrow_schema(TableKind::Uploads),
            columns,
        )?)
    }
}
