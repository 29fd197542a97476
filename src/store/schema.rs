//! Arrow schemas of the stored tables and the Parquet layout chosen for each.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::TableKind;

/// Timestamps are stored as Delta `timestamp`: microseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

static METRICS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Int64, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("step", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
        Field::new("time", timestamp_type(), false),
        // Write order of the point; of several writes of one (run_id, metric, step)
        // queries show the one with the highest seq.
        Field::new("seq", DataType::Int64, false),
    ]))
});

/// The `runs` Delta table is an append-only log of run revisions: every
/// mutation appends the run's whole new state with `rev` + 1, so commits never
/// rewrite other runs and concurrent writers only conflict on the log version.
static RUNS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("rev", DataType::Int64, false),
        Field::new("project", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("display_id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("experiment", DataType::Utf8, false),
        Field::new("parent_id", DataType::Int64, true),
        Field::new("fork_step", DataType::Int64, true),
        Field::new("config", DataType::Utf8, false),
        Field::new("tags", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("external_id", DataType::Utf8, true),
        Field::new("created_at", timestamp_type(), false),
        Field::new("updated_at", timestamp_type(), false),
        // How the status was set (see `catalog::run::StatusChange`); the row
        // whose `rev` equals `status_rev` is a change of status. Added later:
        // older runs tables gain them on their next write, old rows read null.
        Field::new("status_from", DataType::Utf8, true),
        Field::new("status_source", DataType::Utf8, true),
        Field::new("status_key_id", DataType::Utf8, true),
        Field::new("status_rev", DataType::Int64, true),
        // A run's deletion (see `catalog::run::Deletion`): set on its last
        // revision only. Added later, as the status columns were.
        Field::new("deleted_at", timestamp_type(), true),
        Field::new("deleted_key_id", DataType::Utf8, true),
        Field::new("deleted_cascade", DataType::Boolean, true),
        Field::new("purged", DataType::Boolean, true),
    ]))
});

static LOGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Int64, false),
        Field::new("time", timestamp_type(), false),
        Field::new("line_number", DataType::Int64, true),
        Field::new("log_type", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
    ]))
});

static DATA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Int64, false),
        Field::new("log_name", DataType::Utf8, false),
        Field::new("step", DataType::Int64, false),
        Field::new("time", timestamp_type(), false),
        Field::new("data_type", DataType::Utf8, false),
        Field::new("data", DataType::Utf8, false),
    ]))
});

/// API keys, append-only: one row when a key is issued, one more (with
/// `revoked_at`) when it is revoked. `projects`, `read_only` and `revoked_at`
/// came later; keys tables without them are extended on the next write
/// (their old rows read as one-project, read-write keys).
static KEYS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("key_hash", DataType::Utf8, false),
        Field::new("project", DataType::Utf8, false),
        Field::new("created_at", timestamp_type(), false),
        // JSON array of project names or globs; `["*"]` is every project.
        Field::new("projects", DataType::Utf8, true),
        Field::new("read_only", DataType::Boolean, true),
        Field::new("revoked_at", timestamp_type(), true),
        // Added later: keys issued before may not delete.
        Field::new("can_delete", DataType::Boolean, true),
    ]))
});

static FILES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Int64, false),
        Field::new("log_name", DataType::Utf8, false),
        Field::new("file_name", DataType::Utf8, false),
        Field::new("file_type", DataType::Utf8, false),
        Field::new("file_size", DataType::Int64, false),
        Field::new("step", DataType::Int64, true),
        Field::new("time", timestamp_type(), false),
        Field::new("caption", DataType::Utf8, true),
        Field::new("path", DataType::Utf8, false),
    ]))
});

/// Arrow schema of a stored table.
pub fn arrow_schema(kind: TableKind) -> SchemaRef {
    match kind {
        TableKind::Runs => RUNS.clone(),
        TableKind::Metrics => METRICS.clone(),
        TableKind::Logs => LOGS.clone(),
        TableKind::Data => DATA.clone(),
        TableKind::Keys => KEYS.clone(),
        TableKind::Uploads => FILES.clone(),
    }
}

/// A data page of metrics ends where a write call ends once it holds this
/// many rows. Compaction writes each `(run_id, metric)` block with its own
/// calls (a long block in equal parts of at most [`MAX_PAGE_ROWS`]), so a
/// page holds whole blocks or one part of a long one, and the page index
/// prunes a lineage scan to its blocks' rows rather than to fixed-size pages
/// around them. Blocks shorter than this share pages, so tiny runs do not
/// make tiny pages; it is half the maximum so a long block's parts all reach it.
pub const MIN_PAGE_ROWS: usize = MAX_PAGE_ROWS / 2;

/// The most rows a write call of compaction puts in one page (the writer's
/// mini-batch size, after which it checks whether to end the page).
pub const MAX_PAGE_ROWS: usize = 8192;

/// Parquet writer settings per table.
///
/// Metrics files are sorted by `(run_id, metric, step)`: `run_id` and `metric`
/// are long runs of repeats (dictionary + RLE), `step` and `time` grow
/// steadily (delta encoding), and `value` is float noise where byte-stream-split
/// lets zstd find the shared exponent bytes. Page statistics and the page index
/// let a lineage scan prune to the pages of one owner's step range.
pub fn writer_properties(kind: TableKind) -> WriterProperties {
    let base = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page);
    match kind {
        TableKind::Runs
        | TableKind::Logs
        | TableKind::Data
        | TableKind::Keys
        | TableKind::Uploads => base.build(),
        TableKind::Metrics => base
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled(ColumnPath::from("run_id"), true)
            .set_column_dictionary_enabled(ColumnPath::from("metric"), true)
            .set_column_encoding(ColumnPath::from("step"), Encoding::DELTA_BINARY_PACKED)
            .set_column_encoding(ColumnPath::from("time"), Encoding::DELTA_BINARY_PACKED)
            .set_column_encoding(ColumnPath::from("seq"), Encoding::DELTA_BINARY_PACKED)
            .set_column_encoding(ColumnPath::from("value"), Encoding::BYTE_STREAM_SPLIT)
            .set_data_page_row_count_limit(MIN_PAGE_ROWS)
            .set_write_batch_size(MAX_PAGE_ROWS)
            .set_sorting_columns(Some(
                (0..3)
                    .map(|column_idx| SortingColumn {
                        column_idx,
                        descending: false,
                        nulls_first: false,
                    })
                    .collect(),
            ))
            .build(),
    }
}

/// A UTC microsecond timestamp column in the stored type.
pub fn timestamps(micros: Vec<i64>) -> arrow::array::TimestampMicrosecondArray {
    arrow::array::TimestampMicrosecondArray::from(micros).with_timezone("UTC")
}
