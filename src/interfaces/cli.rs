//! Command-line interface: `demo`, `bench-data`, `sql`, `run …`, `import`, `serve`,
//! and the maintenance verbs `compact`, `check`, `vacuum`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use serde_json::{Map, Value};

use super::format::{Encoder, Format};
use crate::catalog::{ForkRequest, NewRun, RunStatus, RunUpdate};
use crate::engine::{Engine, EngineOptions};
use crate::error::{Error, Result};
use crate::options::{
    AutoCompactArgs, CompactArgs, ConnectionArgs, GlobalArgs, QueryArgs, ServerArgs,
};
use crate::store::OpenMode;

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
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
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
}

impl Command {
    /// The verb on the command line.
    fn name(&self) -> &'static str {
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
            Command::Keys(_) => "keys",
        }
    }
}

/// `--public-url` must be an absolute http(s) URL without query or fragment.
fn check_public_url(text: &str) -> Result<String> {
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

impl Cli {
    /// What the command may do to a store that does not exist: only the
    /// commands that put something in it create it; the reading ones (and a
    /// read-only server) write nothing at all, so a typo in `--store` is an
    /// error rather than a new empty store.
    pub fn open_mode(&self) -> OpenMode {
        match &self.command {
            Command::Serve(args) if args.server.read_only => OpenMode::ReadOnly,
            Command::Sql(_) | Command::Check | Command::Export(_) | Command::Report(_) => {
                OpenMode::ReadOnly
            }
            Command::Compact(_) | Command::Vacuum(_) => OpenMode::Existing,
            Command::Serve(_)
            | Command::Demo(_)
            | Command::BenchData(_)
            | Command::Run(_)
            | Command::Import(_)
            | Command::Keys(_) => OpenMode::Create,
        }
    }

    async fn engine(&self) -> Result<Engine> {
        let open = self.open_mode();
        let queries = match &self.command {
            Command::Serve(args) => &args.queries,
            _ => &QueryArgs::default(),
        };
        let options = EngineOptions {
            open,
            ..EngineOptions::new(&self.global, queries)
        };
        match Engine::open_with(&self.global.store, options).await {
            Err(Error::NotFound(why)) if open != OpenMode::Create => {
                let hint = match &self.command {
                    Command::Serve(_) => "a read-only server does not create one: check --store, \
                         or start a writer (`forkline serve` without --read-only) on it first"
                        .to_string(),
                    command => format!(
                        "`forkline {}` does not create one: check --store \
                         (default ./data/warehouse, which `forkline demo` builds)",
                        command.name()
                    ),
                };
                Err(Error::NotFound(format!("{why}; {hint}")))
            }
            opened => opened,
        }
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    if let Command::BenchData(args) = &cli.command {
        // Refuse bad input before the store is opened (and created).
        crate::bench_data::plan(&crate::bench_data::BenchSpec {
            scale: args.scale,
            seed: args.seed,
            commits: args.commits,
            compact_every: args.compact_every,
        })?;
    }
    let engine = cli.engine().await?;
    match cli.command {
        Command::Serve(args) => {
            let engine = Arc::new(engine);
            let server = &args.server;
            let listener = tokio::net::TcpListener::bind(&server.listen).await?;
            let public_url = server
                .public_url
                .as_deref()
                .map(check_public_url)
                .transpose()?;
            let options = super::http::ServerOptions::new(server, &args.connections, public_url);
            let flight = match server.flight_listen.as_str() {
                "off" => None,
                addr => Some(tokio::net::TcpListener::bind(addr).await?),
            };
            if args.compaction.compact_every_s > 0 && !server.read_only {
                let every = std::time::Duration::from_secs(args.compaction.compact_every_s);
                let options = crate::compact::CompactOptions {
                    min_ingest_files: args.compaction.compact_min_files.max(1),
                    ..Default::default()
                };
                tokio::spawn(crate::compact::every(engine.clone(), every, options));
            }
            if let Some(stale_after) = server.stale_after().filter(|_| !server.read_only) {
                tokio::spawn(crate::liveness::monitor(engine.clone(), stale_after));
            }
            super::http::serve(engine, listener, flight, options).await?;
            Ok(())
        }
        Command::Compact(args) => {
            let options = crate::compact::CompactOptions::from(&args);
            let report = crate::compact::compact(&engine, &options).await?;
            println!("{report}");
            Ok(())
        }
        Command::Check => {
            let report = crate::maintenance::check(engine.store()).await?;
            print!("{report}");
            if report.ok() {
                return Ok(());
            }
            Err(Error::Damaged(format!(
                "store check failed: {}",
                report.problems().join("; ")
            )))
        }
        Command::Vacuum(args) => {
            let hours = args.retention_hours;
            let options = crate::maintenance::VacuumOptions {
                retention: std::time::Duration::from_secs(hours.saturating_mul(3600)),
                dry_run: args.dry_run,
                orphans: args.orphans,
            };
            let report = crate::maintenance::vacuum(engine.store(), &options).await?;
            println!("{report}");
            Ok(())
        }
        Command::Demo(args) => crate::demo::run(&engine, args.queries.as_deref(), args.seed).await,
        Command::BenchData(args) => {
            let spec = crate::bench_data::BenchSpec {
                scale: args.scale,
                seed: args.seed,
                commits: args.commits,
                compact_every: args.compact_every,
            };
            crate::bench_data::run(&engine, &spec).await
        }
        Command::Sql(args) => {
            let query = match (&args.query, &args.file) {
                (Some(q), _) => q.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| Error::invalid(format!("cannot read {}: {e}", f.display())))?,
                (None, None) => return Err(Error::invalid("give a query or -f FILE")),
            };
            if args.format.is_binary() && args.output.is_none() {
                return Err(Error::invalid(
                    format!(
                        "--format {:?} writes binary data: give --output FILE",
                        args.format
                    )
                    .to_lowercase(),
                ));
            }
            let out: Box<dyn Write> = match &args.output {
                Some(path) => Box::new(std::fs::File::create(path)?),
                None => Box::new(std::io::stdout().lock()),
            };
            print_query(&engine, &query, args.format, out).await
        }
        Command::Export(args) => {
            let export = crate::query::export::SeriesExport {
                run: args.run,
                metrics: crate::query::export::SeriesExport::parse_metrics(args.metrics.as_deref()),
                stitched: !args.no_stitch,
                family: args.family,
            };
            let written =
                super::export::export_to(&engine, &export, args.format, &args.output).await?;
            println!(
                "exported {} row(s), {} byte(s) to {}",
                written.rows, written.bytes, args.output
            );
            Ok(())
        }
        Command::Report(args) => super::report::report(&engine, args).await,
        Command::Import(args) => {
            let n = crate::import::import_file(&engine, &args.run, &args.file).await?;
            println!("imported {n} point(s) into {}", args.run);
            Ok(())
        }
        Command::Run(cmd) => run_command(&engine, cmd).await,
        Command::Keys(cmd) => keys_command(&engine, cmd).await,
    }
}

async fn keys_command(engine: &Engine, cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Create { project, read_only } => {
            let projects = crate::scope::Projects::from_patterns(&project)?;
            let (key, id) = crate::auth::create_key(engine, &projects, read_only).await?;
            println!("{key}");
            eprintln!(
                "key {id} for {}{} created; it is shown only once",
                projects.describe(),
                if read_only { ", read-only" } else { "" }
            );
        }
        KeysCommand::List => {
            let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("-".to_string(), |t| {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
            };
            println!("id\tscope\taccess\tcreated\tlast_used\trevoked");
            for k in crate::auth::list_keys(engine).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.projects.describe(),
                    if k.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    when(Some(k.created_at)),
                    when(k.last_used),
                    when(k.revoked_at)
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let id = crate::auth::revoke_key(engine, &id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

async fn run_command(engine: &Engine, cmd: RunCommand) -> Result<()> {
    let run = match cmd {
        RunCommand::Create {
            project,
            name,
            config,
            tags,
        } => {
            engine
                .create_run(NewRun {
                    project,
                    name,
                    config: parse_config(config.as_deref())?,
                    tags,
                    external_id: None,
                })
                .await?
        }
        RunCommand::Fork {
            run,
            step,
            name,
            config,
            no_inherit_config,
            inherit_tags,
            tags,
        } => {
            let mut req = ForkRequest::new(run, step);
            req.name = name;
            req.config = parse_config(config.as_deref())?;
            req.inherit_config = !no_inherit_config;
            req.inherit_tags = inherit_tags;
            req.tags = tags;
            let fork = engine.fork_run(req).await?;
            println!(
                "id={} display_id={} parent_id={} parent_display_id={} fork_step={}",
                fork.run.id,
                fork.run.display_id,
                fork.parent.id,
                fork.parent.display_id,
                fork.fork_step
            );
            return Ok(());
        }
        RunCommand::Status { run, status } => {
            let status: RunStatus = status.parse()?;
            engine.update_run(&run, RunUpdate::Status(status)).await?
        }
        RunCommand::Resume { run } => engine.update_run(&run, RunUpdate::Resume).await?,
        RunCommand::Config { run, config } => {
            engine
                .update_run(&run, RunUpdate::MergeConfig(parse_config(Some(&config))?))
                .await?
        }
        RunCommand::Tag { run, add, remove } => {
            if !add.is_empty() {
                engine.update_run(&run, RunUpdate::AddTags(add)).await?;
            }
            engine
                .update_run(&run, RunUpdate::RemoveTags(remove))
                .await?
        }
    };
    println!(
        "id={} display_id={} project={} status={}",
        run.id, run.display_id, run.project, run.status
    );
    Ok(())
}

/// Runs `query` and writes its result in `format` to `out`, batch by batch.
pub async fn print_query(
    engine: &Engine,
    query: &str,
    format: Format,
    mut out: impl Write,
) -> Result<()> {
    let df = engine.sql(query).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let mut encoder = Encoder::new(format, &schema)?;
    while let Some(batch) = stream.next().await {
        out.write_all(&encoder.write(&batch?)?)?;
    }
    out.write_all(&encoder.finish()?)?;
    out.flush()?;
    Ok(())
}
