//! Compaction of the metrics table: small ingest files become large files
//! sorted by `(run_id, metric, step)` without changing any query result.
//!
//! Every ingest file is rewritten together with the latest files of the same
//! runs. Each output chunk is a run range: its newest write of every key goes to
//! a `compacted-latest-…` file (run-disjoint from every other latest file, no
//! key twice, so reads of those runs skip last-write-wins), and the writes it
//! supersedes go to a `compacted-superseded-…` file that only `metric_writes`
//! reads. New files are written first and swapped in by one Delta commit, so a
//! crash leaves the table as it was (plus unreferenced files).

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch, UInt64Array};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int64Type, UInt64Type};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use rand::Rng;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::observe::CompactionRecord;
use crate::query::scan::FileSetTable;
use crate::store::parquet_file::{self, Change};
use crate::store::schema::arrow_schema;
use crate::store::table_files::{LATEST_PREFIX, SUPERSEDED_PREFIX};
use crate::store::{DataFile, FileClass, TableKind};

/// Knobs of a compaction.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Rows per output file (a chunk never splits a run, so files may be larger).
    pub target_rows: u64,
    /// Do nothing while fewer ingest files than this exist.
    pub min_ingest_files: usize,
    /// Rewrite every file, latest ones included (after a layout change).
    pub full: bool,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self::from(&crate::options::CompactArgs::default())
    }
}

impl From<&crate::options::CompactArgs> for CompactOptions {
    /// `forkline compact`'s: whatever ingest files there are.
    fn from(args: &crate::options::CompactArgs) -> Self {
        Self {
            target_rows: args.target_rows.max(1),
            min_ingest_files: 1,
            full: args.full,
        }
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Default)]
pub struct CompactReport {
    /// Files rewritten (ingest files and the latest files of the same runs).
    pub files_in: usize,
    /// Files written.
    pub files_out: usize,
    /// Bytes of the files rewritten.
    pub bytes_in: u64,
    /// Bytes of the files written.
    pub bytes_out: u64,
    /// Rows read.
    pub rows: u64,
    /// Of them, superseded writes set aside for `metric_writes`.
    pub superseded: u64,
    /// Table version of the swap, `None` when there was nothing to do.
    pub version: Option<u64>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// `runs` files merged into one (0 when there were few).
    pub runs_files_merged: usize,
}

impl std::fmt::Display for CompactReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.runs_files_merged > 0 {
            write!(f, "merged {} runs files into one; ", self.runs_files_merged)?;
        }
        match self.version {
            None => write!(f, "nothing to compact"),
            Some(v) => write!(
                f,
                "compacted {} files into {} ({} rows, {} superseded writes kept aside) as metrics version {v} in {:.1} s",
                self.files_in, self.files_out, self.rows, self.superseded, self.seconds
            ),
        }
    }
}

/// Compacts the metrics table of `engine`'s store, and merges the `runs` log
/// into one file once it has [`RUNS_FILES`] (every run change adds a file, and
/// every process start reads them all).
///
/// Each compaction that did something, or failed, is recorded in the
/// engine's activity (`system.compactions`, the compaction metrics).
pub async fn compact(engine: &Engine, options: &CompactOptions) -> Result<CompactReport> {
    let runs = recorded(engine, TableKind::Runs, merge_runs(engine)).await?;
    let mut report = recorded(engine, TableKind::Metrics, compact_metrics(engine, options)).await?;
    report.runs_files_merged = runs.files_in;
    Ok(report)
}

/// Runs one table's compaction and records it when it did something or failed.
async fn recorded(
    engine: &Engine,
    kind: TableKind,
    work: impl Future<Output = Result<CompactReport>>,
) -> Result<CompactReport> {
    let start = chrono::Utc::now();
    let clock = Instant::now();
    let outcome = work.await;
    let mut record = CompactionRecord {
        table: kind.dir(),
        start,
        duration: clock.elapsed(),
        files_in: 0,
        files_out: 0,
        bytes_in: 0,
        bytes_out: 0,
        rows: 0,
        version: None,
        error: None,
    };
    match &outcome {
        Ok(report) if report.version.is_none() => return outcome,
        Ok(report) => {
            record.files_in = report.files_in as u64;
            record.files_out = report.files_out as u64;
            record.bytes_in = report.bytes_in;
            record.bytes_out = report.bytes_out;
            record.rows = report.rows;
            record.version = report.version;
        }
        Err(e) => record.error = Some(e.to_string()),
    }
    engine.activity().record_compaction(record);
    outcome
}

/// How many `runs` files make them worth merging.
pub const RUNS_FILES: usize = 32;

/// Merges the `runs` files into one once there are [`RUNS_FILES`] of them.
async fn merge_runs(engine: &Engine) -> Result<CompactReport> {
    let kind = TableKind::Runs;
    let store = engine.store();
    let base = store.refresh(kind).await?;
    let files = store.files(kind).await?;
    if files.version != base.version() || files.files.len() < RUNS_FILES {
        return Ok(CompactReport::default());
    }
    let ctx = private_context(engine);
    let batches = super::read_files(&ctx, engine, kind, files.files.clone(), None).await?;
    let tag: u32 = rand::rng().random();
    let name = format!("compacted-{tag:08x}.parquet");
    let rows_in = rows(&batches);
    let (add, location) =
        parquet_file::put(store.location(), kind, &name, batches, Change::Rearrange).await?;
    let report = CompactReport {
        files_in: files.files.len(),
        files_out: 1,
        bytes_in: files.files.iter().map(|f| f.size).sum(),
        bytes_out: add.size.max(0) as u64,
        rows: rows_in,
        ..Default::default()
    };
    match store
        .replace_files(kind, &base, vec![add], &files.files)
        .await
    {
        Ok(version) => Ok(CompactReport {
            version: Some(version),
            ..report
        }),
        Err(e) => {
            if uncommitted(&e) {
                let _ = store.location().object_store.delete(&location).await;
            }
            Err(e)
        }
    }
}

/// A bare context on the engine's runtime, so compaction's own tables never
/// appear in the sessions queries share.
fn private_context(engine: &Engine) -> SessionContext {
    SessionContext::new_with_config_rt(
        datafusion::prelude::SessionConfig::new(),
        engine.runtime().clone(),
    )
}

async fn compact_metrics(engine: &Engine, options: &CompactOptions) -> Result<CompactReport> {
    let started = Instant::now();
    let store = engine.store();
    let base = store.refresh(TableKind::Metrics).await?;
    let files = store.files(TableKind::Metrics).await?;
    if files.version != base.version() {
        return Err(Error::Conflict(
            "the metrics table moved while compaction started; try again".into(),
        ));
    }
    let ingest = files.of_class(FileClass::Ingest).count();
    let due = ingest > 0 && ingest >= options.min_ingest_files;
    let rewrite_all = options.full && files.of_class(FileClass::Latest).count() > 0;
    if !(due || rewrite_all) {
        return Ok(CompactReport::default());
    }
    let touched = match options.full {
        true => vec![(i64::MIN, i64::MAX)],
        false => files.ingest_runs(),
    };
    let inputs: Vec<DataFile> = files
        .files
        .iter()
        .filter(|f| match f.class {
            FileClass::Ingest => true,
            FileClass::Latest => touched.iter().any(|&(lo, hi)| f.overlaps(lo, hi)),
            FileClass::Superseded => false,
        })
        .cloned()
        .collect();
    // Latest files left alone: no output chunk may straddle one of them.
    let mut fences: Vec<i64> = files
        .of_class(FileClass::Latest)
        .filter(|f| !inputs.iter().any(|i| i.location == f.location))
        .filter_map(|f| f.runs.map(|r| r.0))
        .collect();
    fences.sort_unstable();

    let ctx = private_context(engine);
    ctx.register_table(
        "compaction_input",
        Arc::new(FileSetTable::new(
            arrow_schema(TableKind::Metrics),
            store.location().object_store_url(),
            inputs.clone(),
        )),
    )?;
    let counts = run_counts(&ctx).await?;
    let chunks = chunk(&counts, &fences, options.target_rows);

    let tag: u32 = rand::rng().random();
    let mut report = CompactReport {
        files_in: inputs.len(),
        bytes_in: inputs.iter().map(|f| f.size).sum(),
        ..Default::default()
    };
    let mut added = Vec::new();
    let mut written = Vec::new();
    let outcome: Result<()> = async {
        for (n, &(lo, hi)) in chunks.iter().enumerate() {
            let (latest, superseded) = dedup_chunk(&ctx, lo, hi).await?;
            report.rows += rows(&latest) + rows(&superseded);
            report.superseded += rows(&superseded);
            for (prefix, batches) in [(LATEST_PREFIX, latest), (SUPERSEDED_PREFIX, superseded)] {
                if rows(&batches) == 0 {
                    continue;
                }
                let name = format!("{prefix}{:08x}-{n:05}.parquet", tag);
                let (add, location) = parquet_file::put(
                    store.location(),
                    TableKind::Metrics,
                    &name,
                    batches,
                    Change::Rearrange,
                )
                .await?;
                written.push(location);
                report.bytes_out += add.size.max(0) as u64;
                added.push(add);
            }
        }
        Ok(())
    }
    .await;
    // Failing before the swap, nothing references the files written so far.
    let (committed, attempted) = match outcome {
        Ok(()) => (
            store
                .replace_files(TableKind::Metrics, &base, added, &inputs)
                .await,
            true,
        ),
        Err(e) => (Err(e), false),
    };
    match committed {
        Ok(version) => {
            report.files_out = written.len();
            report.version = Some(version);
            report.seconds = started.elapsed().as_secs_f64();
            Ok(report)
        }
        Err(e) => {
            if !attempted || uncommitted(&e) {
                for location in written {
                    let _ = store.location().object_store.delete(&location).await;
                }
            }
            Err(e)
        }
    }
}

/// Whether a failed swap surely committed nothing, so the files it wrote can
/// go. After another error (a timeout on the log put, say) the swap may have
/// landed and the files be the table's only copy of their rows: they stay,
/// and `vacuum --orphans` removes them if nothing refers to them.
fn uncommitted(e: &Error) -> bool {
    matches!(e, Error::Conflict(_))
}

/// Starts [`every`] on a thread of its own at a lower CPU priority (nice
/// 10, which the threads it starts inherit): on a busy machine ingest and
/// queries keep the cores and compaction takes what they leave, where on the
/// server's runtime it took a core from them for seconds at a time; on an
/// idle machine it runs at full speed.
pub fn in_background(
    engine: Arc<Engine>,
    period: std::time::Duration,
    options: CompactOptions,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("compaction".into())
        .spawn(move || {
            if let Err(e) = lower_priority() {
                tracing::warn!("compaction runs at normal priority: {e}");
            }
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(every(engine, period, options)),
                Err(e) => tracing::error!("background compaction cannot start: {e}"),
            }
        })?;
    Ok(())
}

/// Nice 10 for the calling thread: Linux keeps a nice value per thread.
#[cfg(target_os = "linux")]
fn lower_priority() -> std::io::Result<()> {
    // SAFETY: setpriority takes plain integers and touches no memory of
    // ours; with `who` 0 it changes the calling thread only.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() -> std::io::Result<()> {
    Ok(())
}

/// Compacts whenever enough ingest files have gathered, checking every `every`,
/// for as long as the server runs. Failures (a concurrent compaction won, the
/// store is unreachable) are logged and retried at the next tick.
pub async fn every(engine: Arc<Engine>, every: std::time::Duration, options: CompactOptions) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match compact(&engine, &options).await {
            Ok(report) if report.version.is_some() => tracing::info!("{report}"),
            Ok(_) => {}
            // Another process sharing the store compacted the same files first.
            Err(e @ Error::Conflict(_)) => tracing::info!("compaction skipped: {e}"),
            Err(e) => tracing::warn!("compaction failed, will retry: {e}"),
        }
        match super::purge(&engine, super::purge::BACKGROUND_GRACE).await {
            Ok(report) if !report.runs.is_empty() => tracing::info!("{report}"),
            Ok(_) => {}
            Err(e) => tracing::warn!("purge failed, will retry: {e}"),
        }
    }
}

fn rows(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}

/// Rows per run of the input, by run.
async fn run_counts(ctx: &SessionContext) -> Result<Vec<(i64, u64)>> {
    let batches = ctx
        .sql("SELECT run_id, count(*) AS n FROM compaction_input GROUP BY run_id ORDER BY run_id")
        .await?
        .collect()
        .await?;
    let mut counts = Vec::new();
    for b in &batches {
        let runs = b.column(0).as_primitive::<Int64Type>();
        let n = b.column(1).as_primitive::<Int64Type>();
        counts.extend((0..b.num_rows()).map(|i| (runs.value(i), n.value(i) as u64)));
    }
    Ok(counts)
}

/// Consecutive runs grouped into `(first, last)` ranges of about `target` rows,
/// cut before any fence (the first run of a latest file kept as it is).
fn chunk(counts: &[(i64, u64)], fences: &[i64], target: u64) -> Vec<(i64, i64)> {
    let mut chunks = Vec::new();
    let mut current: Option<(i64, i64, u64)> = None;
    for &(run, n) in counts {
        if let Some((lo, hi, rows)) = current {
            let fenced = fences.iter().any(|&f| lo < f && f <= run);
            if fenced || rows >= target {
                chunks.push((lo, hi));
                current = None;
            }
        }
        current = Some(match current {
            Some((lo, _, rows)) => (lo, run, rows + n),
            None => (run, run, n),
        });
    }
    if let Some((lo, hi, _)) = current {
        chunks.push((lo, hi));
    }
    chunks
}

/// The chunk's rows sorted by key, split into the newest write of each key and the rest.
async fn dedup_chunk(
    ctx: &SessionContext,
    lo: i64,
    hi: i64,
) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    let sql = format!(
        "SELECT run_id, metric, step, value, time, seq, \
           row_number() OVER (PARTITION BY run_id, metric, step ORDER BY seq DESC) AS version_rank \
         FROM compaction_input WHERE run_id BETWEEN {lo} AND {hi} \
         ORDER BY run_id, metric, step, seq DESC"
    );
    let schema = arrow_schema(TableKind::Metrics);
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    let (mut latest, mut superseded) = (Vec::new(), Vec::new());
    while let Some(batch) = stream.try_next().await? {
        let rank: &UInt64Array = batch.column(6).as_primitive::<UInt64Type>();
        let newest = arrow::compute::kernels::cmp::eq(rank, &UInt64Array::new_scalar(1))?;
        let older = arrow::compute::not(&newest)?;
        let mut columns = batch.columns()[..6].to_vec();
        columns[1] = arrow::compute::cast(&columns[1], &arrow::datatypes::DataType::Utf8)?;
        let stored = RecordBatch::try_new(schema.clone(), columns)?;
        let keep = filter_record_batch(&stored, &newest)?;
        if keep.num_rows() > 0 {
            latest.push(keep);
        }
        if older.true_count() > 0 {
            superseded.push(filter_record_batch(&stored, &older)?);
        }
    }
    Ok((latest, superseded))
}

#[cfg(test)]
mod tests {
    use super::chunk;

    #[test]
    fn chunks_keep_runs_whole_and_stop_at_fences() {
        let counts = [(1, 5), (2, 5), (3, 5), (7, 5), (8, 1)];
        assert_eq!(chunk(&counts, &[], 10), vec![(1, 2), (3, 7), (8, 8)]);
        assert_eq!(chunk(&counts, &[5], 100), vec![(1, 3), (7, 8)]);
        assert_eq!(
            chunk(&counts, &[], 1),
            vec![(1, 1), (2, 2), (3, 3), (7, 7), (8, 8)]
        );
    }
}
