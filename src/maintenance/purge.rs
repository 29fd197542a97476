//! `forkline purge`: makes deletions physical. Every data file holding rows
//! of deleted runs (points, superseded writes, logs, data, upload records)
//! is rewritten without them, their uploaded objects are deleted, and the
//! `runs` log keeps of each only a tombstone: id, display id, project and
//! who deleted it when (so ids and display ids are never given again) —
//! no name, config, tags or external id. After `vacuum --retention-hours 0`
//! removes the replaced files, no byte of a purged run is left in the store.
//!
//! Each table is one swap committed like compaction's: conditional on the
//! version read, concurrent appends (ingest into other runs) kept, a lost
//! race re-planned. The data tables go first; only then do the tombstones
//! mark the runs purged, which is what lets scans stop filtering them out.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::Int64Type;
use chrono::Utc;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use super::read_files;
use crate::catalog::run::{Deletion, runs_from_batch, runs_to_batch};
use crate::catalog::{Run, RunId};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::store::parquet_file::{self, Change};
use crate::store::table_files::{LATEST_PREFIX, SUPERSEDED_PREFIX};
use crate::store::{FileClass, TableKind};

/// How long background compaction leaves a deletion before purging it: a
/// write a client started before the deletion (checked against the run
/// before it was deleted) lands well within this.
pub const BACKGROUND_GRACE: Duration = Duration::from_secs(600);

/// How often a table's swap is re-planned after losing a race.
const ATTEMPTS: usize = 8;

/// The tables whose rows belong to runs, purged before the runs log.
const RUN_TABLES: [TableKind; 4] = [
    TableKind::Metrics,
    TableKind::Logs,
    TableKind::Data,
    TableKind::Uploads,
];

/// What a purge did.
#[derive(Debug, Clone, Default)]
pub struct PurgeReport {
    /// Runs purged.
    pub runs: Vec<RunId>,
    /// Data files rewritten (or dropped, when nothing of them was left).
    pub files: usize,
    /// Rows removed from them.
    pub rows: u64,
    /// Uploaded objects deleted.
    pub objects: usize,
}

impl std::fmt::Display for PurgeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.runs.is_empty() {
            return write!(f, "nothing to purge");
        }
        write!(
            f,
            "purged {} deleted run(s): {} rows removed from {} file(s), {} uploaded object(s) deleted; \
             `forkline vacuum` removes the replaced files",
            self.runs.len(),
            self.rows,
            self.files,
            self.objects
        )
    }
}

/// Purges the runs deleted at least `grace` ago (a write a client started
/// before a run's deletion may still land moments after it: background
/// purges leave recent deletions for a later pass).
pub async fn purge(engine: &Engine, grace: Duration) -> Result<PurgeReport> {
    let catalog = engine.catalog().await?;
    let cutoff = Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
    let doomed: Vec<Arc<Run>> = catalog
        .deleted()
        .filter(|r| {
            r.deleted
                .as_ref()
                .is_some_and(|d| !d.purged && d.at <= cutoff)
        })
        .cloned()
        .collect();
    let mut report = PurgeReport {
        runs: doomed.iter().map(|r| r.id).collect(),
        ..Default::default()
    };
    if doomed.is_empty() {
        return Ok(report);
    }
    let ids: BTreeSet<i64> = doomed.iter().map(|r| r.id as i64).collect();
    for kind in RUN_TABLES {
        let (files, rows) = retry(|| purge_table(engine, kind, &ids)).await?;
        report.files += files;
        report.rows += rows;
    }
    for run in &report.runs {
        report.objects += delete_uploads(engine, *run).await?;
    }
    retry(|| tombstones(engine, &ids)).await?;
    Ok(report)
}

/// Runs `attempt` again while it loses races to other writers.
async fn retry<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(Error::Conflict(_)) if tries < ATTEMPTS => continue,
            other => return other,
        }
    }
}

/// A context reading one partition, so a file's rows come back in its order
/// (metrics files must stay sorted).
fn ordered_context(engine: &Engine) -> SessionContext {
    SessionContext::new_with_config_rt(
        SessionConfig::new().with_target_partitions(1),
        engine.runtime().clone(),
    )
}

/// Rewrites the files of `kind` that hold rows of `ids` without them, in
/// one swap. Returns the files replaced and the rows removed.
async fn purge_table(
    engine: &Engine,
    kind: TableKind,
    ids: &BTreeSet<i64>,
) -> Result<(usize, u64)> {
    let store = engine.store();
    let base = store.refresh(kind).await?;
    let files = store.files(kind).await?;
    if files.version != base.version() {
        return Err(Error::Conflict(format!("the {} table moved", kind.dir())));
    }
    let (lo, hi) = (*ids.first().expect("ids"), *ids.last().expect("ids"));
    let ctx = ordered_context(engine);
    let (mut added, mut removed, mut written, mut dropped) =
        (Vec::new(), Vec::new(), Vec::new(), 0);
    for file in files
        .files
        .iter()
        .filter(|f| f.runs.is_none_or(|_| f.overlaps(lo, hi)))
    {
        let rows = read_files(&ctx, engine, kind, vec![file.clone()], None).await?;
        let (kept, gone) = without_runs(rows, ids)?;
        if gone == 0 {
            continue;
        }
        dropped += gone;
        removed.push(file.clone());
        if kept.iter().all(|b| b.num_rows() == 0) {
            continue;
        }
        let (add, location) = parquet_file::put(
            store.location(),
            kind,
            &rewritten_name(file.class),
            kept,
            Change::Data,
        )
        .await?;
        written.push(location);
        added.push(add);
    }
    if removed.is_empty() {
        return Ok((0, 0));
    }
    match store.replace_files(kind, &base, added, &removed).await {
        Ok(_) => Ok((removed.len(), dropped)),
        Err(e) => {
            // A refused swap referenced nothing it wrote.
            if matches!(e, Error::Conflict(_)) {
                for location in written {
                    let _ = store.location().object_store.delete(&location).await;
                }
            }
            Err(e)
        }
    }
}

/// `batches` without the rows of `ids` (in their order), and how many went.
fn without_runs(batches: Vec<RecordBatch>, ids: &BTreeSet<i64>) -> Result<(Vec<RecordBatch>, u64)> {
    let mut gone = 0;
    let mut kept = Vec::with_capacity(batches.len());
    for batch in batches {
        let runs = batch
            .column_by_name("run_id")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| Error::Damaged("a data file lacks its BIGINT run_id".into()))?;
        let keep: BooleanArray = runs
            .iter()
            .map(|id| Some(!id.is_some_and(|id| ids.contains(&id))))
            .collect();
        gone += (batch.num_rows() - keep.true_count()) as u64;
        kept.push(filter_record_batch(&batch, &keep)?);
    }
    Ok((kept, gone))
}

/// A rewritten file's name keeps the class its name tells (see [`FileClass`]).
fn rewritten_name(class: FileClass) -> String {
    let tag = uuid::Uuid::new_v4().simple();
    match class {
        FileClass::Latest => format!("{LATEST_PREFIX}purged-{tag}.parquet"),
        FileClass::Superseded => format!("{SUPERSEDED_PREFIX}purged-{tag}.parquet"),
        FileClass::Ingest => format!("part-purged-{tag}.zstd.parquet"),
    }
}

/// Deletes the uploaded objects of `run`; returns how many there were.
async fn delete_uploads(engine: &Engine, run: RunId) -> Result<usize> {
    let objects = &engine.store().location().object_store;
    let prefix = engine.upload_dir(run)?;
    let listed: Vec<_> = objects.list(Some(&prefix)).try_collect().await?;
    for meta in &listed {
        objects.delete(&meta.location).await?;
    }
    Ok(listed.len())
}

/// Rewrites the `runs` log with every revision of `ids` replaced by one
/// tombstone each, in one swap.
async fn tombstones(engine: &Engine, ids: &BTreeSet<i64>) -> Result<()> {
    let store = engine.store();
    let kind = TableKind::Runs;
    let base = store.refresh(kind).await?;
    let files = store.files(kind).await?;
    if files.version != base.version() {
        return Err(Error::Conflict("the runs table moved".into()));
    }
    let ctx = ordered_context(engine);
    let batches = read_files(&ctx, engine, kind, files.files.clone(), None).await?;
    let mut kept = Vec::new();
    let mut last: std::collections::BTreeMap<RunId, Run> = Default::default();
    for batch in &batches {
        for run in runs_from_batch(batch)? {
            if !ids.contains(&(run.id as i64)) {
                kept.push(run);
                continue;
            }
            if last.get(&run.id).is_none_or(|held| held.rev < run.rev) {
                last.insert(run.id, run);
            }
        }
    }
    let now = Utc::now();
    for run in last.into_values() {
        let Some(deletion) = run.deleted.clone() else {
            // Not deleted as of this version: nothing to purge.
            return Err(Error::Internal(format!("run {} is not deleted", run.id)));
        };
        kept.push(tombstone(run, deletion, now));
    }
    let (add, location) = parquet_file::put(
        store.location(),
        kind,
        &format!("compacted-purged-{}.parquet", uuid::Uuid::new_v4().simple()),
        vec![runs_to_batch(&kept)?],
        Change::Data,
    )
    .await?;
    match store
        .replace_files(kind, &base, vec![add], &files.files)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            if matches!(e, Error::Conflict(_)) {
                let _ = store.location().object_store.delete(&location).await;
            }
            Err(e)
        }
    }
}

/// What the `runs` log keeps of a purged run.
fn tombstone(run: Run, deletion: Deletion, now: chrono::DateTime<Utc>) -> Run {
    Run {
        id: run.id,
        rev: run.rev + 1,
        project: run.project,
        seq: run.seq,
        display_id: run.display_id,
        name: String::new(),
        experiment: String::new(),
        parent_id: None,
        fork_step: None,
        config: Default::default(),
        tags: Default::default(),
        status: run.status,
        external_id: None,
        created_at: run.created_at,
        updated_at: now,
        status_change: None,
        deleted: Some(Deletion {
            purged: true,
            ..deletion
        }),
    }
}
