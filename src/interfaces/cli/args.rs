//! The command line: every command and its arguments (option groups shared
//! by several commands are declared in [`crate::options`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::interfaces::format::Format;
use crate::options::{
    AutoCompactArgs, ClusterArgs, CompactArgs, ConnectionArgs, ExecutorArgs, GlobalArgs, QueryArgs,
    SchedulerArgs, ServerArgs,
};

/// forkline: SQL over forked ML experiment runs, stored as Delta Lake tables.
#[derive(Debug, Parser)]
#[command(name = "forkline", version, about)]
pub struct Cli {
    /// Options of every command, and the keys of `--config-file`.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// TOML file with any of the global options below (and `store`), keyed by
    /// their long names; flags and `FORKLINE_*` variables win over it.
    #[arg(long, global = true, env = "FORKLINE_CONFIG_FILE", value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a demo store (two projects, forked families, >1M points) and run queries/*.sql.
    Demo(DemoArgs),
    /// Write a synthetic benchmark store: project `bench`, forked families, ~50M points per scale unit.
    BenchData(BenchDataArgs),
    /// Run one read-only SQL query and print its result.
    Sql(SqlArgs),
    /// Create, fork and change runs.
    #[command(subcommand)]
    Run(RunCommand),
    /// Import a run's history from CSV or Parquet (columns metric, step, value[, time]).
    Import(ImportArgs),
    /// Write a run's or a family's (stitched) metrics to a Parquet, Arrow, CSV or JSON file.
    Export(ExportArgs),
    /// Compare the runs of forked experiment families: charts and tables as HTML, Markdown, JSON or CSV.
    Report(ReportArgs),
    /// Start the HTTP and Arrow Flight SQL servers.
    Serve(ServeArgs),
    /// Rewrite small metric files into large sorted ones; query results do not change.
    Compact(CompactArgs),
    /// Verify that every file the tables' current snapshots reference exists and is readable Parquet.
    Check,
    /// Delete files that no table snapshot within the retention period needs (e.g. files compaction replaced).
    Vacuum(VacuumArgs),
    /// Remove every row and upload of deleted runs from the store, keeping a
    /// tombstone (ids, project, deletion) per run; then `vacuum` deletes the
    /// replaced files. Background compaction purges deletions over 10 minutes old.
    Purge,
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Start a cluster scheduler (Apache DataFusion Ballista) that `--cluster` queries are sent to.
    Scheduler(SchedulerArgs),
    /// Start a cluster executor: it registers with a scheduler and runs query tasks over the store.
    Executor(ExecutorArgs),
}

/// `project` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Delete a project: every run of it, as a cascade.
    Delete {
        /// Project name.
        name: String,
    },
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue a key; it is printed once and stored only as a hash. Without
    /// `--project` it opens every project, existing or new (as Pluto's keys).
    Create {
        /// A project the key opens: a name or a glob (`vision-*`); repeatable
        /// or comma-separated. Default: all projects.
        #[arg(long, value_delimiter = ',')]
        project: Vec<String>,
        /// Reads only: SQL, exports, reports and the SDK's read API; no writes.
        #[arg(long)]
        read_only: bool,
        /// May also delete runs and projects of its scope (no key may otherwise).
        #[arg(long, conflicts_with = "read_only")]
        can_delete: bool,
    },
    /// List issued keys: id (hash prefix), scope, created, last used, revoked.
    List,
    /// Revoke a key by its id (at least 6 hex digits of it, see `keys list`);
    /// servers refuse it within their refresh interval.
    Revoke {
        /// The key's id or a unique prefix of it.
        id: String,
    },
}

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory of .sql files to run after building the store (default: the
    /// repository's `queries/`, compiled into the binary, so `demo` runs from
    /// any directory).
    #[arg(long, value_name = "DIR")]
    pub queries: Option<PathBuf>,
    /// Random seed of the generated curves.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Arguments of `bench-data`.
#[derive(Debug, Args)]
pub struct BenchDataArgs {
    /// Size: round(1000 × scale) runs in families of 100, 50,000 points per run (scale 1 ≈ 50M points).
    #[arg(long, allow_negative_numbers = true)]
    pub scale: f64,
    /// Seed of the generated lineage and values (same seed and scale, same store contents).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Split the same points into exactly this many small commits, in a live-ingest-like order.
    #[arg(long)]
    pub commits: Option<u64>,
    /// With --commits: compact after every this many commits, as `serve` does while clients log.
    #[arg(long, value_name = "COMMITS")]
    pub compact_every: Option<u64>,
}

/// Arguments of `sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query text.
    #[arg(conflicts_with = "file", required_unless_present = "file")]
    pub query: Option<String>,
    /// Read the query from a file.
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write the result here instead of standard output (required for parquet and arrow).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Where the query runs.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `run` subcommands.
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Create a root run (the project is created on first use).
    Create {
        /// Project name.
        #[arg(long)]
        project: String,
        /// Run name.
        #[arg(long)]
        name: String,
        /// Config as a JSON object.
        #[arg(long)]
        config: Option<String>,
        /// A tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Fork a run at a step; the parent is resolved from the run's lineage.
    Fork {
        /// Run to fork (numeric id or display id).
        run: String,
        /// Last step the fork inherits.
        #[arg(long)]
        step: u64,
        /// Name of the new run.
        #[arg(long)]
        name: Option<String>,
        /// Config of the new run as a JSON object (deep-merged onto the parent's).
        #[arg(long)]
        config: Option<String>,
        /// Do not inherit the parent's config.
        #[arg(long)]
        no_inherit_config: bool,
        /// Inherit the parent's tags.
        #[arg(long)]
        inherit_tags: bool,
        /// A tag of the new run (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Set a run's status (RUNNING, COMPLETED, FAILED, TERMINATED, CANCELLED);
    /// a terminal status never replaces a higher one (FAILED > CANCELLED > TERMINATED > COMPLETED).
    Status {
        /// Run (numeric id or display id).
        run: String,
        /// New status.
        status: String,
    },
    /// Mark a run RUNNING again.
    Resume {
        /// Run (numeric id or display id).
        run: String,
    },
    /// Deep-merge a JSON object into a run's config.
    Config {
        /// Run (numeric id or display id).
        run: String,
        /// JSON object to merge.
        config: String,
    },
    /// Delete runs, all or none; a run with forks only with --cascade, which
    /// deletes its whole subtree. Deleted runs vanish from every read at once;
    /// `forkline purge` removes their data from the store.
    Delete {
        /// Runs (numeric ids or display ids).
        #[arg(required = true)]
        runs: Vec<String>,
        /// Also delete every run forked from them, directly or not.
        #[arg(long)]
        cascade: bool,
    },
    /// Add or remove tags.
    Tag {
        /// Run (numeric id or display id).
        run: String,
        /// Tags to add.
        #[arg(long = "add")]
        add: Vec<String>,
        /// Tags to remove.
        #[arg(long = "remove")]
        remove: Vec<String>,
    },
}

/// Arguments of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Run receiving the points (numeric id or display id).
    #[arg(long)]
    pub run: String,
    /// CSV or Parquet file.
    pub file: PathBuf,
}

/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run (numeric id or display id); with --family, any run of the family.
    pub run: String,
    /// Export every run of the run's family, each with its own stitched view.
    #[arg(long)]
    pub family: bool,
    /// Comma-separated metric names or patterns (`*` matches any text); all when absent.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Each run's own points only, without inherited history.
    #[arg(long)]
    pub no_stitch: bool,
    /// File format.
    #[arg(long, value_enum, default_value = "parquet")]
    pub format: Format,
    /// Destination: a local path or an object-store URL (s3://bucket/key.parquet).
    #[arg(short = 'o', long)]
    pub output: String,
}

/// Arguments of `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Project whose families to report on.
    #[arg(long)]
    pub project: String,
    /// A run of a family to cover (repeatable or comma-separated; any member names its family).
    #[arg(
        long = "family",
        conflicts_with = "all_families",
        required_unless_present = "all_families"
    )]
    pub families: Vec<String>,
    /// Cover every family of the project.
    #[arg(long)]
    pub all_families: bool,
    /// Comma-separated metric names or patterns (`*` matches any text).
    #[arg(long, required = true)]
    pub metrics: String,
    /// `min` or `max` for every metric, or per metric: `train/loss=min,val/acc=max` (default min).
    #[arg(long)]
    pub goal: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "html")]
    pub format: crate::report::ReportFormat,
    /// Write the report here (standard output when absent).
    #[arg(short = 'o', long)]
    pub out: Option<PathBuf>,
    /// Where the report's scans run.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Arguments of `vacuum`.
#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// Keep files removed from a table less than this many hours ago (readers of
    /// recent snapshots may still need them); 0 deletes every replaced file.
    #[arg(long, default_value_t = crate::maintenance::vacuum::DEFAULT_RETENTION_HOURS)]
    pub retention_hours: u64,
    /// Only list what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete files no commit ever referenced (left by crashed writers),
    /// once older than the retention period; never in `files/`, which holds uploads.
    /// With a short retention, use it only while nothing writes to the store.
    #[arg(long)]
    pub orphans: bool,
}

/// Arguments of `serve`: its option groups.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listeners, ingest, liveness.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Background compaction.
    #[command(flatten)]
    pub compaction: AutoCompactArgs,
    /// Query limits and history.
    #[command(flatten)]
    pub queries: QueryArgs,
    /// Connection limits.
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// Where queries run.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl Command {
    /// The verb on the command line.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Command::Demo(_) => "demo",
            Command::BenchData(_) => "bench-data",
            Command::Sql(_) => "sql",
            Command::Run(_) => "run",
            Command::Import(_) => "import",
            Command::Export(_) => "export",
            Command::Report(_) => "report",
            Command::Serve(_) => "serve",
            Command::Compact(_) => "compact",
            Command::Check => "check",
            Command::Vacuum(_) => "vacuum",
            Command::Purge => "purge",
            Command::Keys(_) => "keys",
            Command::Project(_) => "project",
            Command::Scheduler(_) => "scheduler",
            Command::Executor(_) => "executor",
        }
    }
}

/// `--public-url` must be an absolute http(s) URL without query or fragment.
pub(super) fn check_public_url(text: &str) -> Result<String> {
    let url = url::Url::parse(text.trim())
        .map_err(|e| Error::invalid(format!("--public-url `{text}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(Error::invalid(format!(
            "--public-url `{text}` must be an http(s) URL like https://forkline.example.com"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Parses a `--config` value: it must be a JSON object.
pub fn parse_config(text: Option<&str>) -> Result<Map<String, Value>> {
    let Some(text) = text else {
        return Ok(Map::new());
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::invalid("config must be a JSON object")),
        Err(e) => Err(Error::invalid(format!("config is not valid JSON: {e}"))),
    }
}
