//! One Parquet data file of a table and the Delta `add` action that names it:
//! the one encoder of the files forkline writes itself (ingest appends and
//! compaction), so both lay out pages and record statistics alike.

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use bytes::Bytes;
use deltalake::kernel::Add;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use serde_json::{Map, Value, json};

use super::schema::{MAX_PAGE_ROWS, arrow_schema, writer_properties};
use super::{StoreLocation, TableKind};
use crate::error::{Error, Result};

/// Whether the rows of a file are new to the table (an append) or moved
/// from other files (a compaction), as the Delta log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// New rows.
    Data,
    /// Rows rewritten from files the same commit removes.
    Rearrange,
}

/// Encodes `batches` as one Parquet file of `kind` under the table's
/// directory as `name`, stores it, and returns the `add` action naming it.
/// Metrics batches must be sorted by `(run_id, metric, step)`. Encoding runs
/// on the blocking pool: a large file takes a core for a while.
pub async fn put(
    location: &StoreLocation,
    kind: TableKind,
    name: &str,
    batches: Vec<RecordBatch>,
    change: Change,
) -> Result<(Add, Path)> {
    let path = Path::parse(format!("{}/{name}", location.path(kind.dir())?))
        .map_err(|e| Error::invalid(format!("bad file name {name}: {e}")))?;
    let (bytes, stats) = tokio::task::spawn_blocking(move || {
        let batches = conform(kind, &batches)?;
        Ok::<_, Error>((encode(kind, &batches)?, stats(&batches)))
    })
    .await
    .map_err(|e| Error::invalid(format!("encoding a {} file failed: {e}", kind.dir())))??;
    let size = bytes.len() as i64;
    location
        .object_store
        .put(&path, PutPayload::from_bytes(bytes))
        .await?;
    let add = Add {
        path: name.to_string(),
        partition_values: Default::default(),
        size,
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: change == Change::Data,
        stats: Some(stats.to_string()),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    };
    Ok((add, path))
}

/// `batches` carried by `kind`'s schema, so the file and its statistics
/// name the table's columns; a batch whose columns do not fit is refused.
fn conform(kind: TableKind, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    let schema = arrow_schema(kind);
    Ok(batches
        .iter()
        .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

/// The Parquet bytes of `batches` (in `kind`'s schema) in `kind`'s layout.
fn encode(kind: TableKind, batches: &[RecordBatch]) -> Result<Bytes> {
    let mut writer = ArrowWriter::try_new(
        Vec::new(),
        arrow_schema(kind),
        Some(writer_properties(kind)),
    )?;
    if kind == TableKind::Metrics {
        write_by_block(&mut writer, batches)?;
    } else {
        for batch in batches {
            writer.write(batch)?;
        }
    }
    Ok(Bytes::from(writer.into_inner()?))
}

/// Writes sorted metric batches with one call per `(run_id, metric)` block,
/// a block cut by a batch boundary included, so data pages end on block
/// boundaries (see `schema::MIN_PAGE_ROWS`).
fn write_by_block(writer: &mut ArrowWriter<Vec<u8>>, batches: &[RecordBatch]) -> Result<()> {
    let keys = |b: &RecordBatch| -> [ArrayRef; 2] { [b.column(0).clone(), b.column(1).clone()] };
    // The last block of the previous batch, which the next batch may continue.
    let mut open: Option<RecordBatch> = None;
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let ranges = arrow::compute::partition(&keys(batch))?.ranges();
        let last = ranges.len() - 1;
        for (i, range) in ranges.into_iter().enumerate() {
            let mut block = batch.slice(range.start, range.end - range.start);
            if i == 0
                && let Some(previous) = open.take()
            {
                if same_block(&keys(&previous), &keys(&block))? {
                    block = arrow::compute::concat_batches(&block.schema(), [&previous, &block])?;
                } else {
                    write_block(writer, &previous)?;
                }
            }
            if i == last {
                open = Some(block);
            } else {
                write_block(writer, &block)?;
            }
        }
    }
    if let Some(block) = open {
        write_block(writer, &block)?;
    }
    Ok(())
}

/// Writes one block in equal calls of at most `MAX_PAGE_ROWS` rows: a long
/// block's last page is then not a short remainder (below `MIN_PAGE_ROWS` it
/// would run on into the next block).
fn write_block(writer: &mut ArrowWriter<Vec<u8>>, block: &RecordBatch) -> Result<()> {
    let rows = block.num_rows();
    let calls = rows.div_ceil(MAX_PAGE_ROWS).max(1);
    let size = rows.div_ceil(calls);
    for start in (0..rows).step_by(size.max(1)) {
        writer.write(&block.slice(start, size.min(rows - start)))?;
    }
    Ok(())
}

/// Whether the last row of `a` and the first of `b` have the same keys.
fn same_block(a: &[ArrayRef; 2], b: &[ArrayRef; 2]) -> Result<bool> {
    for (x, y) in a.iter().zip(b) {
        let compare = arrow::array::make_comparator(x, y, Default::default())?;
        if compare(x.len() - 1, 0) != std::cmp::Ordering::Equal {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Delta file statistics: the row count, the null count of every column,
/// and the bounds of the integer columns (what readers prune by, the
/// `run_id` range the read path plans with among them).
fn stats(batches: &[RecordBatch]) -> Value {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let (mut min, mut max, mut nulls) = (Map::new(), Map::new(), Map::new());
    let Some(first) = batches.first() else {
        return json!({ "numRecords": 0 });
    };
    for (column, field) in first.schema().fields().iter().enumerate() {
        let nulls_here: usize = batches.iter().map(|b| b.column(column).null_count()).sum();
        nulls.insert(field.name().clone(), json!(nulls_here));
        if field.data_type() != &DataType::Int64 {
            continue;
        }
        let mut bounds: Option<(i64, i64)> = None;
        for b in batches {
            let a = b.column(column).as_primitive::<Int64Type>();
            if let (Some(lo), Some(hi)) = (arrow::compute::min(a), arrow::compute::max(a)) {
                bounds = Some(bounds.map_or((lo, hi), |(l, h)| (l.min(lo), h.max(hi))));
            }
        }
        if let Some((lo, hi)) = bounds {
            min.insert(field.name().clone(), json!(lo));
            max.insert(field.name().clone(), json!(hi));
        }
    }
    json!({
        "numRecords": rows,
        "minValues": min,
        "maxValues": max,
        "nullCount": nulls,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};

    use super::*;
    use crate::store::table_files::add_stats;

    fn points(runs: &[i64]) -> RecordBatch {
        let n = runs.len();
        RecordBatch::try_new(
            arrow_schema(TableKind::Metrics),
            vec![
                Arc::new(Int64Array::from(runs.to_vec())),
                Arc::new(StringArray::from(vec!["loss"; n])),
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
                Arc::new(Float64Array::from(vec![0.5; n])),
                Arc::new(TimestampMicrosecondArray::from(vec![0; n]).with_timezone("UTC")),
                Arc::new(Int64Array::from_iter_values(10..10 + n as i64)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn statistics_carry_rows_run_bounds_and_null_counts() {
        let stats = stats(&[points(&[4, 4, 7]), points(&[2, 9])]);
        let (rows, runs) = add_stats(Some(&stats.to_string()));
        assert_eq!((rows, runs), (Some(5), Some((2, 9))));
        assert_eq!(stats["nullCount"]["value"], json!(0));
        assert_eq!(stats["minValues"]["seq"], json!(10));
        assert!(stats["minValues"].get("metric").is_none());
    }

    #[test]
    fn a_batch_off_the_schema_is_refused() {
        let wrong = RecordBatch::try_new(
            Arc::new(arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new("run_id", DataType::Int64, false),
            ])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        assert!(conform(TableKind::Metrics, &[wrong]).is_err());
        let right = conform(TableKind::Metrics, &[points(&[1, 1, 2])]).unwrap();
        assert!(encode(TableKind::Metrics, &right).is_ok());
    }
}
