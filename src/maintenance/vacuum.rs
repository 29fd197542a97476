//! `forkline vacuum`: deletes the data files that no snapshot within the
//! retention period needs, using delta-rs's own vacuum (which records a
//! `VACUUM START` / `VACUUM END` pair of commits in each table's log).
//!
//! By default only files that a commit removed (compaction's replaced files)
//! longer ago than the retention period go. With `orphans`, files that no
//! commit ever added (left by a crashed writer) and older than the retention
//! period go too — in every table but `files`, whose directory also holds the
//! bytes of uploaded files, which are not Delta data files.

use std::collections::{HashMap, HashSet};

use deltalake::operations::vacuum::VacuumMode;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::error::{Error, Result};
use crate::store::{Store, TableKind};

/// Knobs of a vacuum.
#[derive(Debug, Clone)]
pub struct VacuumOptions {
    /// Files removed from the table less than this long ago are kept, so
    /// readers of recent snapshots (and time travel) still find them.
    pub retention: std::time::Duration,
    /// Only list what would be deleted.
    pub dry_run: bool,
    /// Also delete files that no commit references (see the module docs).
    pub orphans: bool,
}

impl Default for VacuumOptions {
    fn default() -> Self {
        Self {
            retention: std::time::Duration::from_secs(DEFAULT_RETENTION_HOURS * 3600),
            dry_run: false,
            orphans: false,
        }
    }
}

/// Default retention: one week, as Delta's own default.
pub const DEFAULT_RETENTION_HOURS: u64 = 168;

/// What a vacuum did (or, dry, would do) in one table.
#[derive(Debug, Clone)]
pub struct TableVacuum {
    /// The table.
    pub kind: TableKind,
    /// Paths deleted (or to delete), relative to the table directory.
    pub files: Vec<String>,
    /// Their bytes.
    pub bytes: u64,
}

/// What a vacuum did in the store.
#[derive(Debug, Clone, Default)]
pub struct VacuumReport {
    /// Whether nothing was deleted on purpose.
    pub dry_run: bool,
    /// One entry per table, in [`TableKind::ALL`] order.
    pub tables: Vec<TableVacuum>,
}

impl VacuumReport {
    /// Files deleted in every table.
    pub fn files(&self) -> usize {
        self.tables.iter().map(|t| t.files.len()).sum()
    }

    /// Bytes deleted in every table.
    pub fn bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.bytes).sum()
    }
}

impl std::fmt::Display for VacuumReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for t in &self.tables {
            writeln!(
                f,
                "{:<8} {verb} {} file(s), {} byte(s)",
                t.kind.dir(),
                t.files.len(),
                t.bytes
            )?;
        }
        write!(
            f,
            "total    {verb} {} file(s), {} byte(s)",
            self.files(),
            self.bytes()
        )
    }
}

/// Vacuums every table of `store`.
pub async fn vacuum(store: &Store, options: &VacuumOptions) -> Result<VacuumReport> {
    let mut report = VacuumReport {
        dry_run: options.dry_run,
        tables: Vec::new(),
    };
    for kind in TableKind::ALL {
        report
            .tables
            .push(vacuum_table(store, kind, options).await?);
    }
    Ok(report)
}

async fn vacuum_table(
    store: &Store,
    kind: TableKind,
    options: &VacuumOptions,
) -> Result<TableVacuum> {
    let retention = chrono::Duration::from_std(options.retention)
        .map_err(|_| Error::invalid("retention period is too long"))?;
    let mode = match options.orphans && kind != TableKind::Uploads {
        true => VacuumMode::Full,
        false => VacuumMode::Lite,
    };
    let table = store.refresh(kind).await?;
    let current: HashSet<String> = store
        .files(kind)
        .await?
        .files
        .iter()
        .map(|f| f.relative.clone())
        .collect();
    let builder = |dry_run: bool| {
        table
            .clone()
            .vacuum()
            .with_retention_period(retention)
            // Our default is Delta's; a shorter period is the caller's explicit choice.
            .with_enforce_retention_duration(false)
            .with_mode(mode.clone())
            .with_dry_run(dry_run)
    };
    // Plan first: sizes are read before the files go, and the plan is checked
    // against the snapshot we know, so a current file can never be deleted.
    let (_, planned) = builder(true).await?;
    if let Some(live) = planned.files_deleted.iter().find(|p| current.contains(*p)) {
        return Err(Error::Conflict(format!(
            "vacuum of {} planned to delete {live}, which the current snapshot references; nothing deleted",
            kind.dir()
        )));
    }
    // Tombstones outlive their files (a vacuum deletes the files, the log
    // keeps the removes), so only files still there count.
    let prefixed = table.log_store().object_store(None);
    let sizes: HashMap<String, u64> = futures::stream::iter(planned.files_deleted.clone())
        .map(|p| {
            let prefixed = prefixed.clone();
            async move {
                let path = Path::parse(&p).unwrap_or_else(|_| Path::from(p.as_str()));
                prefixed.head(&path).await.ok().map(|meta| (p, meta.size))
            }
        })
        .buffer_unordered(16)
        .filter_map(std::future::ready)
        .collect()
        .await;
    let files = match options.dry_run || sizes.is_empty() {
        true => planned.files_deleted,
        false => {
            let (_, done) = builder(false).await?;
            store.refresh(kind).await?;
            done.files_deleted
        }
    };
    let files: Vec<String> = files
        .into_iter()
        .filter(|f| sizes.contains_key(f))
        .collect();
    let bytes = files.iter().filter_map(|f| sizes.get(f)).sum();
    Ok(TableVacuum { kind, files, bytes })
}
