//! Every append to the store goes through here: metric points (coalesced by
//! the group committer, whichever interface sends them), imported files, and
//! the logs, data, files and keys records the interfaces receive.

use std::path::Path;

use arrow::array::RecordBatch;

use super::Engine;
use super::group_commit::GroupCommitter;
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
        self.ingest(batch).await
    }

    /// Commits a batch gathered from any number of runs (which must exist)
    /// together with the batches other callers send within the engine's
    /// commit window; returns how many points were stored, once they are.
    pub async fn ingest(&self, batch: PointBatch) -> Result<usize> {
        let window = self.options.commit_window;
        self.committer
            .get_or_init(|| GroupCommitter::spawn(self.store.clone(), window))
            .submit(batch)
            .await
    }

    /// Imports a CSV or Parquet history into `run` as one commit; returns
    /// the number of points stored. A bad row leaves the store untouched.
    pub async fn import_file(&self, run: &str, path: &Path) -> Result<usize> {
        let run = self.resolve_run(run).await?;
        self.ingest(import::read_points(run.id, path)?).await
    }

    /// Appends records of a side table (logs, data, files, keys) as one
    /// commit. Metric points and runs have their own paths (batching,
    /// conditional catalog commits), so they are refused here.
    pub async fn append_records(&self, kind: TableKind, batches: Vec<RecordBatch>) -> Result<()> {
        match kind {
            TableKind::Logs | TableKind::Data | TableKind::Uploads | TableKind::Keys => {}
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
