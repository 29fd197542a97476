//! The durable layer: the Delta tables (`runs`, `metrics`, `logs`, `data`, `keys`) under one store URL.

mod append;
pub mod durable_local;
pub mod location;
pub mod parquet_file;
pub mod records;
pub mod schema;
pub mod table_files;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, Remove, StructType, Version};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use tokio::sync::RwLock;

pub use location::{StoreLocation, StoreOptions};
pub use table_files::{DataFile, FileClass, TableFiles};

/// Numeric run id: unique, sequential across the store, never reused. It is
/// the store's key column, so it lives here and the catalog re-exports it.
pub type RunId = u64;

use crate::error::{Error, Result};

/// Which of the store's tables an operation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// The run catalog: one row per run revision.
    Runs,
    /// Metric points, own points of each run only.
    Metrics,
    /// Console output of runs; never inherited by forks.
    Logs,
    /// Structured values (string series, histograms, tables); never inherited.
    Data,
    /// API keys, stored as SHA-256 hashes with the project they open.
    Keys,
    /// Uploaded files of runs (bytes under `files/`); never inherited.
    Uploads,
}

impl TableKind {
    /// Directory name of the table under the store root.
    pub fn dir(self) -> &'static str {
        match self {
            TableKind::Runs => "runs",
            TableKind::Metrics => "metrics",
            TableKind::Logs => "logs",
            TableKind::Data => "data",
            TableKind::Keys => "keys",
            TableKind::Uploads => "files",
        }
    }

    /// Every table of a store.
    pub const ALL: [TableKind; 6] = [
        TableKind::Runs,
        TableKind::Metrics,
        TableKind::Logs,
        TableKind::Data,
        TableKind::Keys,
        TableKind::Uploads,
    ];
}

/// Outcome of a commit that asked for optimistic concurrency.
#[derive(Debug)]
pub enum CommitOutcome {
    /// Committed as this table version.
    Committed(Version),
    /// Another writer committed first; reload and try again.
    Lost,
}

/// What opening a store may do when its tables do not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenMode {
    /// Create the store (a local directory, the missing tables): writers, `demo`.
    #[default]
    Create,
    /// Refuse a store without tables, but write to one that exists
    /// (compaction and vacuum: a typo in the URL must not create a store).
    Existing,
    /// Never write: refuse a store that lacks any table, create no directory,
    /// skip the conditional-put probe (it writes), and refuse every commit.
    /// For read replicas and the reading CLI commands.
    ReadOnly,
}

/// Handle on the store: its location and the latest loaded state of each table.
#[derive(Debug)]
pub struct Store {
    location: StoreLocation,
    /// Opened with [`OpenMode::ReadOnly`]: every commit is refused.
    read_only: bool,
    /// One entry per [`TableKind`], in the order of [`TableKind::ALL`].
    tables: Vec<RwLock<DeltaTable>>,
    /// The data files of the last version listed, per table, in the same order.
    file_lists: Vec<Mutex<Arc<TableFiles>>>,
    /// When each table was last checked for newer versions.
    checked: Vec<Mutex<Option<Instant>>>,
    /// The version each table's cached state was last loaded whole at.
    loaded: Vec<Mutex<Option<Version>>>,
    /// Per table, the version the next append of this process tries first;
    /// holding it serializes this process's log writes to the table.
    next_append: Vec<tokio::sync::Mutex<Option<Version>>>,
    /// Per table, the newest version this process committed: a read must
    /// see it even where the cached state was checked a moment ago.
    own_version: Vec<Mutex<Option<Version>>>,
}

impl Store {
    /// Opens the store at `spec`, creating the tables if they do not exist yet.
    pub async fn open(spec: &str) -> Result<Self> {
        Self::open_with(spec, &StoreOptions::default()).await
    }

    /// As [`Store::open`], with object-store settings the URL does not carry.
    /// A network store must honour conditional puts (checked first).
    pub async fn open_with(spec: &str, options: &StoreOptions) -> Result<Self> {
        Self::open_in(spec, options, OpenMode::Create).await
    }

    /// Opens an existing store without writing anything to it (see
    /// [`OpenMode::ReadOnly`]); a URL without a forkline store is refused.
    pub async fn open_read_only(spec: &str, options: &StoreOptions) -> Result<Self> {
        Self::open_in(spec, options, OpenMode::ReadOnly).await
    }

    /// Opens the store at `spec` in `mode`. A store that is missing where
    /// `mode` does not create one is refused with [`Error::NotFound`] naming
    /// the URL.
    pub async fn open_in(spec: &str, options: &StoreOptions, mode: OpenMode) -> Result<Self> {
        let location = if mode == OpenMode::Create {
            StoreLocation::parse_with(spec, options)?
        } else {
            StoreLocation::parse_existing(spec, options)?
        };
        // Readers commit nothing, so they need no conditional puts (and the probe writes).
        if location.is_remote() && mode != OpenMode::ReadOnly {
            location.check_conditional_put().await?;
        }
        let mut found = Vec::with_capacity(TableKind::ALL.len());
        for kind in TableKind::ALL {
            found.push(open_existing(&location, kind).await?);
        }
        let missing: Vec<&str> = TableKind::ALL
            .iter()
            .zip(&found)
            .filter(|(_, t)| t.is_none())
            .map(|(kind, _)| kind.dir())
            .collect();
        if missing.len() == TableKind::ALL.len() && mode != OpenMode::Create {
            return Err(Error::NotFound(format!(
                "no forkline store at {} (no Delta tables under it)",
                location.root
            )));
        }
        if !missing.is_empty() && mode == OpenMode::ReadOnly {
            return Err(Error::NotFound(format!(
                "the forkline store at {} lacks the table(s) {} (made by an older forkline?); \
                 opening it once for writing creates them",
                location.root,
                missing.join(", ")
            )));
        }
        let mut tables = Vec::with_capacity(TableKind::ALL.len());
        let mut loaded = Vec::with_capacity(TableKind::ALL.len());
        for (kind, table) in TableKind::ALL.into_iter().zip(found) {
            let table = match table {
                Some(table) => table,
                None => create(&location, kind).await?,
            };
            loaded.push(Mutex::new(table.version()));
            tables.push(RwLock::new(table));
        }
        let file_lists = TableKind::ALL
            .iter()
            .map(|_| Mutex::new(Arc::new(TableFiles::default())))
            .collect();
        let checked = TableKind::ALL.iter().map(|_| Mutex::new(None)).collect();
        Ok(Self {
            location,
            read_only: mode == OpenMode::ReadOnly,
            tables,
            file_lists,
            checked,
            loaded,
            next_append: TableKind::ALL
                .iter()
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            own_version: TableKind::ALL.iter().map(|_| Mutex::new(None)).collect(),
        })
    }

    /// The URL this store was opened at.
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// Whether the store was opened with [`OpenMode::ReadOnly`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Refuses a write to a store opened read-only.
    pub fn ensure_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::invalid(format!(
                "the store {} is opened read-only: nothing may be written to it",
                self.location.root
            )));
        }
        Ok(())
    }

    fn table(&self, kind: TableKind) -> &RwLock<DeltaTable> {
        &self.tables[kind as usize]
    }

    /// Brings the cached table state up to the latest committed version and returns it.
    pub async fn refresh(&self, kind: TableKind) -> Result<DeltaTable> {
        let started = Instant::now();
        let lock = self.table(kind);
        let current = lock.read().await.version();
        let moved = match current {
            Some(version) => self.committed_after(kind, version).await?,
            None => true,
        };
        if moved {
            let mut table = lock.write().await;
            if table.version() == current {
                table.update_incremental(None).await?;
                self.consolidate(kind, &mut table).await?;
            }
        }
        {
            let mut checked = self.checked[kind as usize]
                .lock()
                .expect("check time lock poisoned");
            if checked.is_none_or(|t| t < started) {
                *checked = Some(started);
            }
        }
        Ok(lock.read().await.clone())
    }

    /// Whether a version after `version` has been committed. Delta versions
    /// are consecutive, so one HEAD of the next commit file answers it, where
    /// listing the log costs time in its length (a local directory is listed
    /// whole: 10 ms a query on a 10,000-commit table).
    async fn committed_after(&self, kind: TableKind, version: Version) -> Result<bool> {
        use object_store::ObjectStoreExt;
        let next = self.location.path(&format!(
            "{}/_delta_log/{:020}.json",
            kind.dir(),
            version + 1
        ))?;
        match self.location.object_store.head(&next).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// As [`Store::refresh`], but trusting the cached state if it was checked
    /// less than `max_age` ago: reads see other processes' commits within that
    /// interval (this process's own commits at once), and a burst of queries
    /// does not list the log once per query.
    pub async fn refresh_within(&self, kind: TableKind, max_age: Duration) -> Result<DeltaTable> {
        let checked = *self.checked[kind as usize]
            .lock()
            .expect("check time lock poisoned");
        if checked.is_some_and(|t| t.elapsed() < max_age) {
            let cached = self.cached(kind).await;
            let own = *self.own_version[kind as usize]
                .lock()
                .expect("own version lock poisoned");
            if own.is_none_or(|own| cached.version().is_some_and(|v| v >= own)) {
                return Ok(cached);
            }
        }
        self.refresh(kind).await
    }

    /// The table's directory as a path in the store's object store.
    pub fn table_path(&self, kind: TableKind) -> Result<object_store::path::Path> {
        self.location.path(kind.dir())
    }

    /// The data files of the cached table state (listed once per version);
    /// refresh the table first to see the latest.
    pub async fn files(&self, kind: TableKind) -> Result<Arc<TableFiles>> {
        let table = self.cached(kind).await;
        let slot = &self.file_lists[kind as usize];
        let cached = slot.lock().expect("file list lock poisoned").clone();
        if cached.version.is_some() && cached.version == table.version() {
            return Ok(cached);
        }
        let prefix = self.table_path(kind)?;
        let mut files = Vec::new();
        for file in table.snapshot()?.log_data().iter() {
            files.push(DataFile::from_log(
                &prefix,
                &file.path(),
                file.size(),
                file.stats().as_deref(),
            )?);
        }
        let listed = Arc::new(TableFiles {
            version: table.version(),
            files,
        });
        let mut slot = slot.lock().expect("file list lock poisoned");
        if slot
            .version
            .is_none_or(|v| listed.version.is_some_and(|l| l >= v))
        {
            *slot = listed.clone();
        }
        Ok(listed)
    }

    /// The cached table state, without checking the store for newer versions.
    pub async fn cached(&self, kind: TableKind) -> DeltaTable {
        self.table(kind).read().await.clone()
    }

    /// Appends `batches` as one atomic commit, letting concurrent appends interleave.
    pub async fn append(&self, kind: TableKind, batches: Vec<RecordBatch>) -> Result<Version> {
        self.ensure_writable()?;
        let table = self.cached(kind).await;
        if append::writes_own_files(kind, &table) {
            return self.append_file(kind, batches).await;
        }
        let written = write(table, kind, batches, CommitProperties::default()).await?;
        self.install(kind, written).await
    }

    /// Appends `batches` only if `base` is still the latest version of the table.
    pub async fn append_if_unchanged(
        &self,
        kind: TableKind,
        base: &DeltaTable,
        batches: Vec<RecordBatch>,
    ) -> Result<CommitOutcome> {
        self.ensure_writable()?;
        if append::puts_entries(base) && append::holds_every_column(kind, base) {
            return self.append_file_at(kind, base, batches).await;
        }
        let props = CommitProperties::default().with_max_retries(0);
        match write(base.clone(), kind, batches, props).await {
            Ok(table) => Ok(CommitOutcome::Committed(self.install(kind, table).await?)),
            Err(Error::Storage(e)) if is_lost_race(&e) => Ok(CommitOutcome::Lost),
            Err(e) => Err(e),
        }
    }

    /// Swaps files in one commit on top of `base` (compaction): `added` are
    /// already written under the table directory, `removed` are paths of
    /// `base`'s files. Concurrent appends are fine; if another writer removed
    /// any of the same files first (a compaction in another process), this
    /// commit is refused with [`Error::Conflict`].
    pub async fn replace_files(
        &self,
        kind: TableKind,
        base: &DeltaTable,
        added: Vec<Add>,
        removed: &[DataFile],
    ) -> Result<Version> {
        self.ensure_writable()?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut actions: Vec<Action> = added.into_iter().map(Action::Add).collect();
        actions.extend(removed.iter().map(|f| {
            Action::Remove(Remove {
                path: f.relative.clone(),
                data_change: false,
                deletion_timestamp: Some(now),
                extended_file_metadata: Some(true),
                partition_values: Some(Default::default()),
                size: Some(f.size as i64),
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
            })
        }));
        if !append::puts_entries(base) {
            return Err(Error::invalid(format!(
                "the store {} commits by renaming files, which compaction does not support",
                self.location.root
            )));
        }
        let operation = DeltaOperation::Optimize {
            predicate: None,
            target_size: 0,
        };
        let version = self
            .commit_entry(kind, base.version(), actions, operation)
            .await?;
        // The swap is durable: a failed reload must not read as a failed swap
        // (compaction would delete the files it just committed).
        if let Err(e) = self.refresh(kind).await {
            tracing::warn!(
                table = kind.dir(),
                version,
                "reload after a file swap failed: {e}"
            );
        }
        Ok(version)
    }

    async fn install(&self, kind: TableKind, written: DeltaTable) -> Result<Version> {
        let version = written
            .version()
            .ok_or_else(|| Error::Conflict("commit returned no version".into()))?;
        let mut cached = self.table(kind).write().await;
        if cached.version().is_none_or(|v| v < version) {
            *cached = written;
            self.consolidate(kind, &mut cached).await?;
        }
        Ok(version)
    }

    /// Loads `table` whole again at its version once it has been updated
    /// across a checkpoint (or, should a checkpoint be missing, across two
    /// intervals). delta-rs applies each new version to a cached state as one
    /// more batch of file actions and replays every batch on each later
    /// update, so in a long-lived process every commit cost more than the
    /// last (a run create on a 1,000-run store went from 57 to 173 ms over
    /// 300 commits, debug build); a whole load starts from the checkpoint.
    async fn consolidate(&self, kind: TableKind, table: &mut DeltaTable) -> Result<()> {
        use deltalake::table::config::TablePropertiesExt;
        let Some(version) = table.version() else {
            return Ok(());
        };
        let interval = table.snapshot()?.table_config().checkpoint_interval().get();
        let loaded = *self.loaded[kind as usize]
            .lock()
            .expect("load version lock poisoned");
        let due = match loaded {
            None => true,
            // Checkpoints are written at the versions `k * interval - 1`.
            Some(loaded) => {
                (version + 1) / interval > (loaded + 1) / interval
                    || version >= loaded + 2 * interval
            }
        };
        if due {
            let mut whole = table_builder(&self.location, kind)?.build()?;
            whole.load_version(version).await?;
            *table = whole;
            *self.loaded[kind as usize]
                .lock()
                .expect("load version lock poisoned") = Some(version);
        }
        Ok(())
    }
}

fn is_lost_race(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
                    | TransactionError::CommitConflict(_)
            }
    )
}

async fn write(
    table: DeltaTable,
    kind: TableKind,
    batches: Vec<RecordBatch>,
    props: CommitProperties,
) -> Result<DeltaTable> {
    let mut builder = table.write(batches);
    if matches!(kind, TableKind::Keys | TableKind::Runs) {
        // Keys tables made before key scopes, and runs tables made before
        // status history, lack some columns.
        builder = builder.with_schema_mode(deltalake::operations::write::SchemaMode::Merge);
    }
    Ok(builder
        .with_save_mode(SaveMode::Append)
        .with_writer_properties(schema::writer_properties(kind))
        .with_commit_properties(props)
        .await?)
}

fn table_builder(location: &StoreLocation, kind: TableKind) -> Result<DeltaTableBuilder> {
    let url = location.table_url(kind.dir());
    Ok(DeltaTableBuilder::from_url(url.clone())?
        .with_storage_backend(location.object_store.clone(), url))
}

/// The table, loaded, or `None` where it does not exist; writes nothing.
async fn open_existing(location: &StoreLocation, kind: TableKind) -> Result<Option<DeltaTable>> {
    let mut table = table_builder(location, kind)?.build()?;
    if !table.verify_deltatable_existence().await? {
        return Ok(None);
    }
    table.load().await?;
    Ok(Some(table))
}

async fn create(location: &StoreLocation, kind: TableKind) -> Result<DeltaTable> {
    let table = table_builder(location, kind)?.build()?;
    let columns: StructType = schema::arrow_schema(kind).as_ref().try_into_kernel()?;
    let created = table
        .create()
        .with_columns(columns.fields().cloned())
        .with_save_mode(SaveMode::ErrorIfExists)
        .with_table_name(kind.dir())
        .await;
    match created {
        Ok(table) => Ok(table),
        // Another process may have created it between our check and our commit.
        Err(create_error) => match open_existing(location, kind).await {
            Ok(Some(table)) => Ok(table),
            _ => Err(create_error.into()),
        },
    }
}
