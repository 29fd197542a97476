//! The `system` schema: the engine's own state in SQL, as InfluxDB 3 and
//! GreptimeDB do it, so operators debug with the tool they query data with.
//!
//! - `system.queries`: recent queries of this process (bounded, in memory).
//! - `system.compactions`: recent compactions of this process (bounded, in memory).
//! - `system.commits`: the latest commits of each table, from its Delta log.
//! - `system.files`: the data files of each table's current snapshot.
//!
//! Every table is computed when a query scans it, never when a session is
//! built. Scoping — a key restricted to some projects must learn nothing of
//! the others: it sees the queries of keys with exactly its scope (their SQL
//! may name runs, so a wider or other scope's text never reaches it), files
//! and commits only where every run they hold is one of its runs (so their
//! run ids, sizes and times are its own data's), and no compactions (they
//! span projects). A key of every project sees everything.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};

use crate::catalog::CatalogSnapshot;
use crate::error::{Error, Result};
use crate::observe::Activity;
use crate::scope::Projects;
use crate::store::TableKind;
use crate::store::schema::timestamp_type;
use crate::store::table_files::{TableFiles, add_stats};
use deltalake::DeltaTable;

/// Name of the schema.
pub const SCHEMA: &str = "system";

/// Commits read per table by `system.commits`, newest first: each is one
/// read of the Delta log, so the table stays cheap on long-lived stores.
pub const COMMITS_PER_TABLE: u64 = 1_000;

/// Commit logs read at once.
const LOG_READS: usize = 16;

/// Tables whose commits and files `system.commits` / `system.files` list
/// (`keys` holds key hashes: never listed).
pub const LISTED: [TableKind; 5] = [
    TableKind::Runs,
    TableKind::Metrics,
    TableKind::Logs,
    TableKind::Data,
    TableKind::Uploads,
];

/// What the system tables are computed from.
#[derive(Clone)]
pub struct Sources {
    /// This process's recent queries and compactions.
    pub activity: Arc<Activity>,
    /// The tables listed, as of the session's snapshot, with their files.
    pub tables: Arc<Vec<(TableKind, DeltaTable, Arc<TableFiles>)>>,
    /// Which runs the session's caller sees.
    pub runs: VisibleRuns,
    /// The caller's projects.
    pub projects: Projects,
}

/// Registers the `system` schema in `ctx`, with `also` (stored tables of the
/// default schema that belong with these). Adding a table is one line here.
pub fn register(
    ctx: &SessionContext,
    sources: Sources,
    also: Vec<(&str, Arc<dyn TableProvider>)>,
) -> Result<()> {
    let schema = Arc::new(MemorySchemaProvider::new());
    let s = &sources;
    let tables: Vec<(&str, Arc<dyn TableProvider>)> = vec![
        (
            "queries",
            computed(queries_schema(), s, |s| Box::pin(queries(s))),
        ),
        (
            "compactions",
            computed(compactions_schema(), s, |s| Box::pin(compactions(s))),
        ),
        (
            "commits",
            computed(commits_schema(), s, |s| Box::pin(commits(s))),
        ),
        ("files", computed(files_schema(), s, |s| Box::pin(files(s)))),
    ];
    for (name, table) in tables.into_iter().chain(also) {
        schema.register_table(name.into(), table)?;
    }
    let catalog = ctx
        .catalog(&ctx.state().config_options().catalog.default_catalog)
        .ok_or_else(|| Error::invalid("the session has no default catalog"))?;
    catalog.register_schema(SCHEMA, schema)?;
    Ok(())
}

/// The runs a caller sees, to decide which files and commits are its own.
#[derive(Debug, Clone)]
pub enum VisibleRuns {
    /// Every run (a key of every project).
    All,
    /// Some runs; `hidden` are the ids of the others, sorted.
    Some {
        /// Runs the caller sees.
        visible: Arc<HashSet<i64>>,
        /// Runs it does not, sorted.
        hidden: Arc<Vec<i64>>,
    },
}

impl VisibleRuns {
    /// The runs of `full` that `projects` opens.
    pub fn of(full: &CatalogSnapshot, projects: &Projects) -> Self {
        if *projects == Projects::All {
            return VisibleRuns::All;
        }
        let (mut visible, mut hidden) = (HashSet::new(), Vec::new());
        for run in full.runs() {
            if projects.allows(&run.project) {
                visible.insert(run.id as i64);
            } else {
                hidden.push(run.id as i64);
            }
        }
        hidden.sort_unstable();
        VisibleRuns::Some {
            visible: Arc::new(visible),
            hidden: Arc::new(hidden),
        }
    }

    fn is_all(&self) -> bool {
        matches!(self, VisibleRuns::All)
    }

    /// Whether data holding runs `lo..=hi` (`None`: unknown) is entirely the caller's.
    fn holds_only_own(&self, runs: Option<(i64, i64)>) -> bool {
        match self {
            VisibleRuns::All => true,
            VisibleRuns::Some { visible, hidden } => runs.is_some_and(|(lo, hi)| {
                let first_hidden = hidden.partition_point(|&id| id < lo);
                visible.contains(&lo)
                    && visible.contains(&hi)
                    && hidden.get(first_hidden).is_none_or(|&id| id > hi)
            }),
        }
    }
}

type Rows = Pin<Box<dyn Future<Output = Result<Vec<ArrayRef>>> + Send>>;

/// A table computed at scan time by `rows` from `sources`.
struct Computed {
    schema: SchemaRef,
    sources: Sources,
    rows: fn(Sources) -> Rows,
}

fn computed(
    schema: SchemaRef,
    sources: &Sources,
    rows: fn(Sources) -> Rows,
) -> Arc<dyn TableProvider> {
    Arc::new(Computed {
        schema,
        sources: sources.clone(),
        rows,
    })
}

impl std::fmt::Debug for Computed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Computed")
            .field("schema", &self.schema)
            .finish()
    }
}

#[async_trait]
impl TableProvider for Computed {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let columns = (self.rows)(self.sources.clone())
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

fn field(name: &str, data_type: DataType, nullable: bool) -> Field {
    Field::new(name, data_type, nullable)
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

fn ints(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(values.collect::<Int64Array>())
}

fn times(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        values
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}

fn millis(values: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(values.map(Some).collect::<Float64Array>())
}

fn queries_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("start", timestamp_type(), false),
        field("duration_ms", DataType::Float64, false),
        field("interface", DataType::Utf8, false),
        field("outcome", DataType::Utf8, false),
        field("rows", DataType::Int64, false),
        field("bytes", DataType::Int64, false),
        field("error", DataType::Utf8, true),
        field("sql", DataType::Utf8, false),
        field("scope", DataType::Utf8, false),
        field("key_id", DataType::Utf8, true),
        field("request_id", DataType::Utf8, false),
    ]))
}

async fn queries(s: Sources) -> Result<Vec<ArrayRef>> {
    let q = s.activity.queries.snapshot(|q| q.visible_to(&s.projects));
    Ok(vec![
        times(q.iter().map(|q| Some(q.start.timestamp_micros()))),
        millis(q.iter().map(|q| q.duration.as_secs_f64() * 1e3)),
        strings(q.iter().map(|q| Some(q.info.interface.name()))),
        strings(q.iter().map(|q| Some(q.outcome.name()))),
        ints(q.iter().map(|q| Some(q.rows as i64))),
        ints(q.iter().map(|q| Some(q.bytes as i64))),
        strings(q.iter().map(|q| q.error.as_deref())),
        strings(q.iter().map(|q| Some(q.info.text.as_str()))),
        Arc::new(
            q.iter()
                .map(|q| Some(q.info.projects.describe()))
                .collect::<StringArray>(),
        ),
        strings(q.iter().map(|q| q.info.key_id.as_deref())),
        strings(q.iter().map(|q| Some(q.info.request_id.as_str()))),
    ])
}

fn compactions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("start", timestamp_type(), false),
        field("duration_ms", DataType::Float64, false),
        field("table", DataType::Utf8, false),
        field("files_in", DataType::Int64, false),
        field("files_out", DataType::Int64, false),
        field("bytes_in", DataType::Int64, false),
        field("bytes_out", DataType::Int64, false),
        field("rows", DataType::Int64, false),
        field("version", DataType::Int64, true),
        field("error", DataType::Utf8, true),
    ]))
}

async fn compactions(s: Sources) -> Result<Vec<ArrayRef>> {
    let all = s.projects == Projects::All;
    let c = s.activity.compactions.snapshot(|_| all);
    Ok(vec![
        times(c.iter().map(|c| Some(c.start.timestamp_micros()))),
        millis(c.iter().map(|c| c.duration.as_secs_f64() * 1e3)),
        strings(c.iter().map(|c| Some(c.table))),
        ints(c.iter().map(|c| Some(c.files_in as i64))),
        ints(c.iter().map(|c| Some(c.files_out as i64))),
        ints(c.iter().map(|c| Some(c.bytes_in as i64))),
        ints(c.iter().map(|c| Some(c.bytes_out as i64))),
        ints(c.iter().map(|c| Some(c.rows as i64))),
        ints(c.iter().map(|c| c.version.map(|v| v as i64))),
        strings(c.iter().map(|c| c.error.as_deref())),
    ])
}

/// Who wrote a data file, told by its name (compaction names its files `compacted-…`).
fn written_by(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.starts_with("compacted-") {
        "compaction"
    } else {
        "ingest"
    }
}

fn files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("table", DataType::Utf8, false),
        field("path", DataType::Utf8, false),
        field("size", DataType::Int64, false),
        field("rows", DataType::Int64, true),
        field("run_id_min", DataType::Int64, true),
        field("run_id_max", DataType::Int64, true),
        field("written_by", DataType::Utf8, false),
    ]))
}

async fn files(s: Sources) -> Result<Vec<ArrayRef>> {
    let mut rows = Vec::new();
    for (kind, _, listed) in s.tables.iter() {
        let kind = *kind;
        rows.extend(
            listed
                .files
                .iter()
                .filter(|f| s.runs.holds_only_own(f.runs))
                .map(|f| (kind.dir(), f.clone())),
        );
    }
    Ok(vec![
        strings(rows.iter().map(|(t, _)| Some(*t))),
        strings(rows.iter().map(|(_, f)| Some(f.relative.as_str()))),
        ints(rows.iter().map(|(_, f)| Some(f.size as i64))),
        ints(rows.iter().map(|(_, f)| f.rows.map(|r| r as i64))),
        ints(rows.iter().map(|(_, f)| f.runs.map(|r| r.0))),
        ints(rows.iter().map(|(_, f)| f.runs.map(|r| r.1))),
        strings(rows.iter().map(|(_, f)| Some(written_by(&f.relative)))),
    ])
}

fn commits_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("table", DataType::Utf8, false),
        field("version", DataType::Int64, false),
        field("time", timestamp_type(), true),
        field("operation", DataType::Utf8, true),
        field("files_added", DataType::Int64, false),
        field("files_removed", DataType::Int64, false),
        field("rows_added", DataType::Int64, true),
    ]))
}

/// One commit of a table's Delta log.
struct Commit {
    table: &'static str,
    version: i64,
    time_ms: Option<i64>,
    operation: Option<String>,
    added: i64,
    removed: i64,
    rows: Option<i64>,
    /// Run range of the files added, `None` when any is unknown.
    runs: Option<(i64, i64)>,
}

/// Reads commit `version` of `kind`'s log; `None` once the log no longer holds it.
async fn commit(
    table: &deltalake::DeltaTable,
    kind: TableKind,
    version: u64,
) -> Result<Option<Commit>> {
    use deltalake::kernel::Action;
    let Some(bytes) = table.log_store().read_commit_entry(version).await? else {
        return Ok(None);
    };
    let mut c = Commit {
        table: kind.dir(),
        version: version as i64,
        time_ms: None,
        operation: None,
        added: 0,
        removed: 0,
        rows: Some(0),
        runs: None,
    };
    let mut runs: Option<Option<(i64, i64)>> = None;
    for action in deltalake::logstore::get_actions(version, &bytes)? {
        match action {
            Action::CommitInfo(info) => {
                c.time_ms = info.timestamp;
                c.operation = info.operation;
            }
            Action::Add(add) => {
                c.added += 1;
                let (rows, range) = add_stats(add.stats.as_deref());
                let rows = rows.and_then(|r| i64::try_from(r).ok());
                c.rows = c.rows.zip(rows).map(|(a, b)| a + b);
                runs = Some(match (runs, range) {
                    (None, r) => r,
                    (Some(Some((lo, hi))), Some((l, h))) => Some((lo.min(l), hi.max(h))),
                    _ => None,
                });
            }
            Action::Remove(_) => c.removed += 1,
            _ => {}
        }
    }
    if c.added == 0 {
        c.rows = None;
    }
    c.runs = runs.flatten();
    Ok(Some(c))
}

async fn commits(s: Sources) -> Result<Vec<ArrayRef>> {
    let mut rows: Vec<Commit> = Vec::new();
    for (kind, table, _) in s.tables.iter() {
        let kind = *kind;
        let Some(latest) = table.version() else {
            continue;
        };
        let first = (latest + 1).saturating_sub(COMMITS_PER_TABLE);
        let read: Vec<Option<Commit>> = futures::stream::iter((first..=latest).rev())
            .map(|v| commit(table, kind, v))
            .buffered(LOG_READS)
            .try_collect()
            .await?;
        // A key of some projects sees commits that only added files of its runs.
        rows.extend(read.into_iter().flatten().filter(|c| {
            s.runs.is_all() || (c.removed == 0 && c.added > 0 && s.runs.holds_only_own(c.runs))
        }));
    }
    Ok(vec![
        strings(rows.iter().map(|c| Some(c.table))),
        ints(rows.iter().map(|c| Some(c.version))),
        times(rows.iter().map(|c| c.time_ms.map(|t| t * 1000))),
        strings(rows.iter().map(|c| c.operation.as_deref())),
        ints(rows.iter().map(|c| Some(c.added))),
        ints(rows.iter().map(|c| Some(c.removed))),
        ints(rows.iter().map(|c| c.rows)),
    ])
}
