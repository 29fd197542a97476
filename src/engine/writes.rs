//! Every append to the store goes through here: metric points (one commit
//! per batch, coalesced by the group committer), imported files, and the
//! logs, data, files and keys records the interfaces receive.

use std::path::Path;

use arrow::array::RecordBatch;

use super::Engine;
use crate::error::{Error, Result};
use crate::ingest::{MetricPoint, PointBatch, import};
use crate::store::TableKind;

impl Engine {
    /// Appends points of one run as one commit; returns how many were stored.
    pub async fn write_points(&self, run: &str, points: Vec<MetricPoint>) -> Result<usize> {
        let snapshot = self.catalog().await?;
        let id = snapshot.lookup(run)?.id;
        let mut batch = PointBatch::new();
        batch.extend(id, points)?;
        self.write_batch(batch).await
    }

    /// Commits a batch gathered from any number of runs (which must exist).
    pub async fn write_batch(&self, batch: PointBatch) -> Result<usize> {
        if batch.is_empty() {
            return Ok(0);
        }
        let records: RecordBatch = batch.into_record_batch()?;
        let n = records.num_rows();
        self.store.append(TableKind::Metrics, vec![records]).await?;
        Ok(n)
    }

    /// Imports a CSV or Parquet history into `run` as one commit; returns
    /// the number of points stored. A bad row leaves the store untouched.
    pub async fn import_file(&self, run: &str, path: &Path) -> Result<usize> {
        let run = self.resolve_run(run).await?;
        self.write_batch(import::read_points(run.id, path)?).await
    }

    /// Appends records of a side table (logs, data, files, keys) as one
    /// commit. Metric points and runs have their own paths (batching,
    /// conditional catalog commits), so they are refused here.
    pub async fn append_records(&self, kind: TableKind, batches: Vec<RecordBatch>) -> Result<()> {
        match kind {
            TableKind::Logs | TableKind::Data | TableKind::Files | TableKind::Keys => {}
            other => {
                return Err(Error::invalid(format!(
                    "{other:?} records are not appended through append_records"
                )));
            }
        }
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(());
        }
        self.store.append(kind, batches).await?;
        Ok(())
    }
}
