//! The one place that builds a DataFusion session: tables, table functions, limits.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::datasource::provider_as_source;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::optimizer::Optimizer;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SessionConfig, SessionContext, col, lit};
use deltalake::DeltaTable;

use super::functions::unnest_keys;
use super::lineage::{self, Lineage};
use super::scan::{FileSetTable, PointSource};
use super::{aggregates, functions, system};
use crate::catalog::CatalogSnapshot;
use crate::error::Result;
use crate::observe::Activity;
use crate::scope::Projects;
use crate::store::schema::{arrow_schema, timestamp_type, timestamps};
use crate::store::{Store, TableKind};

/// Name of the SQL table holding every metric write, superseded ones included.
pub const METRIC_WRITES: &str = "metric_writes";

/// Name of the SQL table of run status changes (one row per change).
pub const RUN_STATUS_EVENTS: &str = "run_status_events";

/// The runtime shared by every session of an engine, so the memory limit is global.
pub fn runtime(memory_limit: usize) -> Result<Arc<RuntimeEnv>> {
    Ok(RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory_limit)))
        .build_arc()?)
}

/// The settings of every query session of an engine, made once when it opens
/// (so a bad variable fails at start-up, and sessions do not re-read them).
/// `DATAFUSION_*` variables tune the engine (`DATAFUSION_EXECUTION_BATCH_SIZE`,
/// …); the settings below, which forkline's plans rely on, win over them.
pub fn config(target_partitions: usize, memory_limit: usize) -> Result<SessionConfig> {
    let mut config = SessionConfig::from_env()?
        .with_target_partitions(target_partitions.max(1))
        .with_information_schema(true);
    // A sort sets this much of the pool aside for merging its spill files
    // before it holds any row (10 MiB by default): of a small pool that left
    // no room to sort at all. A sixteenth of the pool still merges a few
    // dozen spill files at a time.
    let execution = &mut config.options_mut().execution;
    execution.sort_spill_reservation_bytes = execution
        .sort_spill_reservation_bytes
        .min(memory_limit / 16);
    let parquet = &mut config.options_mut().execution.parquet;
    // Off by default in DataFusion; lineage scans live on row-level step predicates.
    parquet.pushdown_filters = true;
    parquet.reorder_filters = true;
    parquet.enable_page_index = true;
    // We write no bloom filters; probing for them costs a read per row group.
    parquet.bloom_filter_on_read = false;
    Ok(config)
}

/// A session with `runs`, `run_status_events`, `metrics`, `logs`, `data`, the
/// lineage table functions, the `downsample` / `lttb` aggregates and the
/// `system` schema registered.
///
/// A session scoped to some projects sees their runs and nothing else: the
/// catalog is restricted (`scoped`, so table functions cannot name other
/// runs, and lineage never leaves a project) and every per-run table is
/// filtered. `snapshot` is the whole catalog `scoped` was restricted from.
pub async fn build(
    runtime: &Arc<RuntimeEnv>,
    config: &SessionConfig,
    refresh: Duration,
    (snapshot, scoped): (Arc<CatalogSnapshot>, Arc<CatalogSnapshot>),
    store: &Store,
    activity: &Arc<Activity>,
    projects: &Projects,
) -> Result<SessionContext> {
    let mut listed = Vec::new();
    for kind in system::LISTED {
        let table = store.refresh_within(kind, refresh).await?;
        listed.push((kind, table, store.files(kind).await?));
    }
    let system = system::Sources {
        activity: activity.clone(),
        tables: Arc::new(listed),
        runs: system::VisibleRuns::of(&snapshot, projects),
        projects: projects.clone(),
    };
    let snapshot = scoped;
    // Deleted runs' rows stay in the files until a purge: every per-run
    // table leaves them out (a scoped caller's list of runs has none).
    let hidden: Vec<i64> = snapshot
        .unpurged()
        .into_iter()
        .map(|id| id as i64)
        .collect();
    let visible: Option<Vec<i64>> = match projects {
        Projects::All => None,
        Projects::Matching(_) => Some(snapshot.runs().map(|r| r.id as i64).collect()),
    };
    let scope = |provider| match &visible {
        Some(ids) => only_runs(provider, ids, false),
        None if hidden.is_empty() => Ok(provider),
        None => only_runs(provider, &hidden, true),
    };
    store.refresh_within(TableKind::Metrics, refresh).await?;
    let files = store.files(TableKind::Metrics).await?;
    let points = Arc::new(PointSource::new(
        &files,
        &store.location().object_store_url(),
        &scope,
    )?);
    let lineage = Arc::new(Lineage::new(snapshot.clone(), points.clone()));
    let ctx = context(runtime, config, lineage.clone());
    // Plain Parquet scans of the snapshot's files, as for metrics: plans any
    // DataFusion engine can serialize (a cluster's executors run them).
    for kind in [TableKind::Logs, TableKind::Data, TableKind::Uploads] {
        store.refresh_within(kind, refresh).await?;
        ctx.register_table(kind.dir(), scope(snapshot_table(store, kind).await?)?)?;
    }
    // `metric_writes` is every write; `metrics` the latest write of each point.
    ctx.register_table(METRIC_WRITES, points.writes())?;
    let latest = points.latest(None, "metrics")?.build()?;
    ctx.register_table("metrics", Arc::new(ViewTable::new(latest, None)))?;
    ctx.register_table("runs", Arc::new(runs_table(&snapshot)?))?;
    let events = scope(status_events(store, refresh).await?)?;
    ctx.register_table(RUN_STATUS_EVENTS, events.clone())?;
    lineage::register(&ctx, lineage);
    functions::register(&ctx);
    // The status history is stored data, listed with the system tables too.
    let deletions: Arc<dyn TableProvider> = Arc::new(deletions_table(&snapshot)?);
    system::register(
        &ctx,
        system,
        vec![(RUN_STATUS_EVENTS, events), ("deletions", deletions)],
    )?;
    Ok(ctx)
}

/// A session of `lineage`'s reads: as `SessionContext::new_with_config_rt`,
/// plus the guard that keeps `unnest` results (how `downsample` / `lttb` are
/// read) correct, the group-after-group aggregate for ordered input (lineage
/// views) and the run-at-a-time partial aggregate for sorted string keys.
fn context(
    runtime: &Arc<RuntimeEnv>,
    config: &SessionConfig,
    lineage: Arc<Lineage>,
) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(config.clone().with_extension(lineage))
        .with_runtime_env(runtime.clone())
        .with_default_features()
        .with_optimizer_rules(unnest_keys::guard(Optimizer::new().rules))
        .with_physical_optimizer_rules(aggregates::with_rules(PhysicalOptimizer::new().rules))
        .build();
    SessionContext::new_with_state(state)
}

/// A session with the lineage reads over every run's points and no tables:
/// what a writer checking a fork's step needs. [`build`] makes the `runs`
/// table and the system tables from the whole catalog, a cost growing with
/// the runs of the store that a fork, made while the catalog moves with
/// every commit, would pay each time (and hold in memory meanwhile).
pub async fn lineage_only(
    runtime: &Arc<RuntimeEnv>,
    config: &SessionConfig,
    snapshot: Arc<CatalogSnapshot>,
    store: &Store,
) -> Result<SessionContext> {
    let files = store.files(TableKind::Metrics).await?;
    let points = Arc::new(PointSource::new(
        &files,
        &store.location().object_store_url(),
        &Ok,
    )?);
    Ok(context(
        runtime,
        config,
        Arc::new(Lineage::new(snapshot, points)),
    ))
}

/// The files of `kind`'s latest known snapshot, as one table.
async fn snapshot_table(store: &Store, kind: TableKind) -> Result<Arc<dyn TableProvider>> {
    let files = store.files(kind).await?;
    Ok(Arc::new(FileSetTable::new(
        arrow_schema(kind),
        store.location().object_store_url(),
        files.files.clone(),
    )))
}

/// `provider` restricted to the rows of the runs `ids` (of the other runs
/// when `except`).
fn only_runs(
    provider: Arc<dyn TableProvider>,
    ids: &[i64],
    except: bool,
) -> Result<Arc<dyn TableProvider>> {
    let visible = if ids.is_empty() {
        lit(except)
    } else {
        col("run_id").in_list(ids.iter().map(|id| lit(*id)).collect(), except)
    };
    let plan = LogicalPlanBuilder::scan("scoped", provider_as_source(provider), None)?
        .filter(visible)?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// Reads every row of a Delta table (used for the small `runs` table).
pub async fn scan_all(runtime: &Arc<RuntimeEnv>, table: &DeltaTable) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime.clone());
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    Ok(ctx.read_table(provider)?.collect().await?)
}

/// The `run_status_events` SQL table: the revisions of the `runs` log that
/// changed a status (see `catalog::run::StatusChange`), read from the stored
/// table, so every change any process committed is there exactly once.
async fn status_events(store: &Store, refresh: Duration) -> Result<Arc<dyn TableProvider>> {
    store.refresh_within(TableKind::Runs, refresh).await?;
    // Rows written before runs carried a status history read `status_rev`
    // as null, so they are no events.
    let provider = snapshot_table(store, TableKind::Runs).await?;
    let plan = LogicalPlanBuilder::scan("runs_log", provider_as_source(provider), None)?
        .filter(col("status_rev").eq(col("rev")))?
        .project(vec![
            col("id").alias("run_id"),
            col("project"),
            col("status_from").alias("from_status"),
            col("status").alias("to_status"),
            col("status_source").alias("source"),
            col("updated_at").alias("time"),
            col("status_key_id").alias("key_id"),
            // Orders one run's events exactly, whichever servers' clocks stamped them.
            col("rev"),
        ])?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// `system.deletions`: every deleted run the caller's projects held, who
/// deleted it and when, and whether a purge has removed its data.
fn deletions_table(snapshot: &CatalogSnapshot) -> Result<MemTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Int64, false),
        Field::new("project", DataType::Utf8, false),
        Field::new("display_id", DataType::Utf8, false),
        Field::new("deleted_at", timestamp_type(), false),
        Field::new("key_id", DataType::Utf8, true),
        Field::new("cascade", DataType::Boolean, false),
        Field::new("purged", DataType::Boolean, false),
    ]));
    let gone: Vec<_> = snapshot
        .deleted()
        .filter_map(|r| Some((r, r.deleted.as_ref()?)))
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            gone.iter()
                .map(|(r, _)| r.id as i64)
                .collect::<Int64Array>(),
        ),
        Arc::new(
            gone.iter()
                .map(|(r, _)| Some(r.project.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            gone.iter()
                .map(|(r, _)| Some(r.display_id.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(timestamps(
            gone.iter().map(|(_, d)| d.at.timestamp_micros()).collect(),
        )),
        Arc::new(
            gone.iter()
                .map(|(_, d)| d.key_id.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(
            gone.iter()
                .map(|(_, d)| Some(d.cascade))
                .collect::<BooleanArray>(),
        ),
        Arc::new(
            gone.iter()
                .map(|(_, d)| Some(d.purged))
                .collect::<BooleanArray>(),
        ),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(MemTable::try_new(schema, vec![vec![batch]])?)
}

/// The `runs` SQL table: the current state of every run (latest revision).
fn runs_table(snapshot: &CatalogSnapshot) -> Result<MemTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("project", DataType::Utf8, false),
        Field::new("display_id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("experiment", DataType::Utf8, false),
        Field::new("parent_id", DataType::Int64, true),
        Field::new("fork_step", DataType::Int64, true),
        Field::new("config", DataType::Utf8, false),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            false,
        ),
        Field::new("status", DataType::Utf8, false),
        Field::new("created_at", timestamp_type(), false),
        Field::new("updated_at", timestamp_type(), false),
    ]));
    let runs: Vec<_> = snapshot.runs().collect();
    let strs = |f: &dyn Fn(&crate::catalog::Run) -> String| -> ArrayRef {
        Arc::new(runs.iter().map(|r| Some(f(r))).collect::<StringArray>())
    };
    let mut tags = ListBuilder::new(StringBuilder::new());
    for run in &runs {
        tags.append_value(run.tags.iter().map(Some));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(runs.iter().map(|r| r.id as i64).collect::<Int64Array>()),
        strs(&|r| r.project.clone()),
        strs(&|r| r.display_id.clone()),
        strs(&|r| r.name.clone()),
        strs(&|r| r.experiment.clone()),
        Arc::new(
            runs.iter()
                .map(|r| r.parent_id.map(|p| p as i64))
                .collect::<Int64Array>(),
        ),
        Arc::new(
            runs.iter()
                .map(|r| r.fork_step.map(|s| s as i64))
                .collect::<Int64Array>(),
        ),
        strs(&|r| serde_json::Value::Object(r.config.clone()).to_string()),
        Arc::new(tags.finish()),
        strs(&|r| r.status.to_string()),
        Arc::new(timestamps(
            runs.iter()
                .map(|r| r.created_at.timestamp_micros())
                .collect(),
        )),
        Arc::new(timestamps(
            runs.iter()
                .map(|r| r.updated_at.timestamp_micros())
                .collect(),
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(MemTable::try_new(schema, vec![vec![batch]])?)
}
