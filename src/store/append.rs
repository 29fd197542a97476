//! The log entries forkline writes itself: appends of rows it encodes
//! (metric points, logs, data and file records: one Parquet file, one
//! entry) and compaction's file swaps.
//!
//! After every commit delta-rs brings its snapshot up to the new version,
//! and materializes the table's whole file list to do it, so a commit cost
//! time in the number of live files: ten group commits a second on a metrics
//! table between compactions spent a quarter of the server's CPU there, and
//! ingest slowed as the table grew. These commits need none of it. An entry
//! is put at the next free version; the cached snapshot catches up when a
//! reader next asks (`Store::refresh`), once for any number of commits, and
//! the checkpoints delta-rs wrote after a commit that closes a checkpoint
//! interval are written here at the same versions.
//!
//! An append adds new files and reads nothing, so no other commit conflicts
//! with it. A swap conflicts only with a commit that removed one of the
//! files it removes (another compaction): the entries other writers put
//! since the swap's base version are read for such removals before each try
//! (delta-rs's own conflict check ignores removals without data change, so
//! two compactions of the same files would both land).

use std::collections::{HashMap, HashSet};

use arrow::array::RecordBatch;
use deltalake::DeltaTableError;
use deltalake::kernel::transaction::{CommitData, TransactionError};
use deltalake::kernel::{Action, Version};
use deltalake::logstore::{CommitOrBytes, LogStoreRef};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::config::TablePropertiesExt;
use deltalake::{DeltaTable, checkpoints};
use object_store::ObjectStoreExt;

use super::parquet_file::{self, Change};
use super::{Store, TableKind};
use crate::error::{Error, Result};

/// How often a commit moves past versions other writers took first.
const COMMIT_ATTEMPTS: usize = 64;

/// Whether appends to `kind` go through [`Store::append_file`]. The `runs`
/// and `keys` tables do not: their appends may add columns to tables made by
/// an older forkline (delta-rs's schema merge), and they commit rarely.
pub(super) fn writes_own_files(kind: TableKind, table: &DeltaTable) -> bool {
    puts_entries(table)
        && matches!(
            kind,
            TableKind::Metrics | TableKind::Logs | TableKind::Data | TableKind::Uploads
        )
}

/// Whether `table` has every column forkline writes to `kind`, so that an
/// append needs no schema merge (a table made by an older forkline may
/// lack some; its first append then goes through delta-rs, which adds them).
pub(super) fn holds_every_column(kind: TableKind, table: &DeltaTable) -> bool {
    let Ok(snapshot) = table.snapshot() else {
        return false;
    };
    let schema = snapshot.schema();
    let held: HashSet<&str> = schema.fields().map(|f| f.name().as_str()).collect();
    super::schema::arrow_schema(kind)
        .fields()
        .iter()
        .all(|f| held.contains(f.name().as_str()))
}

/// Whether the table's log store commits by a conditional put of the entry,
/// as every store forkline opens does (the others rename a temporary file).
pub(super) fn puts_entries(table: &DeltaTable) -> bool {
    ["DefaultLogStore", "LakeFSLogStore"].contains(&table.log_store().name().as_str())
}

impl Store {
    /// Writes `batches` as one new data file of `kind` and commits it.
    pub(super) async fn append_file(
        &self,
        kind: TableKind,
        batches: Vec<RecordBatch>,
    ) -> Result<Version> {
        let (add, path) = self.put_data_file(kind, batches).await?;
        let base = self.cached(kind).await.version();
        let committed = self
            .commit_entry(kind, base, vec![Action::Add(add)], appended())
            .await;
        // A conflict means no log entry names the file. After another error
        // (a timeout, say) the entry may have landed, so the file stays;
        // `vacuum --orphans` removes it if nothing refers to it.
        if let Err(Error::Conflict(_)) = committed {
            let _ = self.location.object_store.delete(&path).await;
        }
        committed
    }

    /// Writes `batches` as one new data file of `kind` and commits it at
    /// exactly the version after `base`'s, or not at all
    /// ([`CommitOutcome::Lost`]: another writer took that version): the
    /// catalog's commits, which are planned on `base` (see
    /// `engine::catalog_commit`). Through delta-rs each cost three listings
    /// of the whole log directory to bring its snapshot up to date (on a
    /// local store, a `stat` of every entry), a time growing with the
    /// table's commits.
    pub(super) async fn append_file_at(
        &self,
        kind: TableKind,
        base: &DeltaTable,
        batches: Vec<RecordBatch>,
    ) -> Result<super::CommitOutcome> {
        let version = base.version().map_or(0, |v| v + 1);
        let (add, path) = self.put_data_file(kind, batches).await?;
        let entry = entry_bytes(vec![Action::Add(add)], appended())?;
        let put = CommitOrBytes::LogBytes(entry);
        match base
            .log_store()
            .write_commit_entry(version, put, uuid::Uuid::new_v4())
            .await
        {
            Ok(()) => {
                self.landed(kind, base, version).await?;
                Ok(super::CommitOutcome::Committed(version))
            }
            Err(TransactionError::VersionAlreadyExists(_)) => {
                // No entry names the file: it goes.
                let _ = self.location.object_store.delete(&path).await;
                Ok(super::CommitOutcome::Lost)
            }
            // After another error (a timeout, say) the entry may have
            // landed, so the file stays; `vacuum --orphans` removes it if
            // nothing refers to it.
            Err(e) => Err(DeltaTableError::from(e).into()),
        }
    }

    /// Puts one log entry of `actions` at the next free version after
    /// `base`, the version the actions were decided on. If a version another
    /// writer took since `base` removed a file these actions remove, nothing
    /// is committed ([`Error::Conflict`]).
    pub(super) async fn commit_entry(
        &self,
        kind: TableKind,
        base: Option<Version>,
        actions: Vec<Action>,
        operation: DeltaOperation,
    ) -> Result<Version> {
        let table = self.cached(kind).await;
        let base = base.ok_or_else(|| {
            Error::Conflict(format!("the `{}` table has no version yet", kind.dir()))
        })?;
        let log_store = table.log_store();
        let removed: HashSet<String> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove(r) => Some(r.path.clone()),
                _ => None,
            })
            .collect();
        let entry = entry_bytes(actions, operation)?;
        let operation_id = uuid::Uuid::new_v4();
        let mut next = self.next_append[kind as usize].lock().await;
        let mut version = next
            .unwrap_or(0)
            .max(table.version().map_or(0, |v| v + 1))
            .max(base + 1);
        // Versions up to this one were read and remove none of `removed`.
        let mut checked = base;
        for _ in 0..COMMIT_ATTEMPTS {
            if !removed.is_empty() {
                for taken in checked + 1..version {
                    if let Some(gone) = removes_any(&log_store, taken, &removed).await? {
                        return Err(Error::Conflict(format!(
                            "{gone} of the files being replaced in `{}` was replaced \
                             concurrently (another compaction?); nothing was committed",
                            kind.dir()
                        )));
                    }
                }
                checked = version - 1;
            }
            let put = CommitOrBytes::LogBytes(entry.clone());
            match log_store
                .write_commit_entry(version, put, operation_id)
                .await
            {
                Ok(()) => {
                    *next = Some(version + 1);
                    drop(next);
                    self.landed(kind, &table, version).await?;
                    return Ok(version);
                }
                // Another writer (a compaction, another process) took it.
                Err(TransactionError::VersionAlreadyExists(_)) => {
                    version = log_store.get_latest_version(version).await? + 1;
                }
                Err(e) => return Err(DeltaTableError::from(e).into()),
            }
        }
        Err(Error::Conflict(format!(
            "`{}` kept moving while committing; nothing was committed",
            kind.dir()
        )))
    }

    /// Writes `batches` as a new data file of `kind`: the action that adds
    /// it, and its path.
    async fn put_data_file(
        &self,
        kind: TableKind,
        batches: Vec<RecordBatch>,
    ) -> Result<(deltalake::kernel::Add, object_store::path::Path)> {
        let name = format!("part-{}.zstd.parquet", uuid::Uuid::new_v4());
        parquet_file::put(&self.location, kind, &name, batches, Change::Data).await
    }

    /// After this process's entry landed at `version` of `kind` (`table`
    /// being a state of that table): reads must see it at once, and a
    /// version that closes a checkpoint interval gets its checkpoint.
    async fn landed(&self, kind: TableKind, table: &DeltaTable, version: Version) -> Result<()> {
        {
            let mut own = self.own_version[kind as usize]
                .lock()
                .expect("own version lock poisoned");
            *own = Some(own.map_or(version, |o| o.max(version)));
        }
        let interval = table.snapshot()?.table_config().checkpoint_interval();
        if (version + 1).is_multiple_of(interval.get()) {
            self.checkpoint(kind, version).await;
        }
        Ok(())
    }

    /// Writes the checkpoint of `version` and drops log entries past their
    /// retention, as delta-rs's post-commit hook did. The commit it follows
    /// is already durable, so a failure is logged, not returned: the next
    /// interval writes one again, and until then loads replay more entries.
    async fn checkpoint(&self, kind: TableKind, version: Version) {
        let outcome: Result<()> = async {
            // A copy brought up to `version` alone: the store's cached state
            // moves when a reader asks, and then loads from this checkpoint.
            let mut at = self.cached(kind).await;
            at.update_incremental(Some(version)).await?;
            checkpoints::create_checkpoint(&at, None).await?;
            if at.snapshot()?.table_config().enable_expired_log_cleanup() {
                checkpoints::cleanup_metadata(&at, None).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(table = kind.dir(), version, "checkpoint not written: {e}");
        }
    }
}

/// The operation of an append, as its log entry records it.
fn appended() -> DeltaOperation {
    DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: None,
        predicate: None,
    }
}

/// A log entry of `actions` (with its commit info), as written.
fn entry_bytes(actions: Vec<Action>, operation: DeltaOperation) -> Result<bytes::Bytes> {
    Ok(
        CommitData::new(actions, operation, HashMap::new(), Vec::new())
            .get_bytes()
            .map_err(DeltaTableError::from)?,
    )
}

/// The first of `paths` that the entry of `version` removes, if any.
async fn removes_any(
    log_store: &LogStoreRef,
    version: Version,
    paths: &HashSet<String>,
) -> Result<Option<String>> {
    let Some(entry) = log_store.read_commit_entry(version).await? else {
        return Err(Error::Conflict(format!(
            "version {version} of the log was expected but is missing"
        )));
    };
    for line in entry.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let action: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
            Error::invalid(format!("unreadable entry in log version {version}: {e}"))
        })?;
        if let Some(path) = action
            .get("remove")
            .and_then(|r| r.get("path"))
            .and_then(|p| p.as_str())
        {
            // Both entries name the file as the snapshot's file list did.
            if paths.contains(path) {
                return Ok(Some(path.to_string()));
            }
        }
    }
    Ok(None)
}
