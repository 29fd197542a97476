//! Command-line interface: `demo`, `bench-data`, `sql`, `run …`, `import`, `serve`,
//! and the maintenance verbs `compact`, `check`, `vacuum`.

mod args;
mod catalog_commands;
mod demo_command;
mod export_command;
#[cfg(test)]
mod option_tables;
mod report_command;

use std::io::Write;
use std::sync::Arc;

use futures::StreamExt;

use super::format::{Encoder, Format};
use crate::engine::{Engine, EngineOptions};
use crate::error::{Error, Result};
use crate::options::QueryArgs;
use crate::store::OpenMode;

use args::check_public_url;
pub use args::*;
use catalog_commands::{keys_command, project_command, run_command};

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
            Command::Compact(_) | Command::Vacuum(_) | Command::Project(_) | Command::Purge => {
                OpenMode::Existing
            }
            Command::Serve(_)
            | Command::Demo(_)
            | Command::BenchData(_)
            | Command::Run(_)
            | Command::Import(_)
            | Command::Keys(_) => OpenMode::Create,
            // They open no store as an engine (see `run`).
            Command::Scheduler(_) | Command::Executor(_) => OpenMode::ReadOnly,
        }
    }

    /// The cluster the command's queries run on, if it names one.
    fn cluster(&self) -> Option<&str> {
        match &self.command {
            Command::Sql(args) => args.cluster.cluster.as_deref(),
            Command::Serve(args) => args.cluster.cluster.as_deref(),
            Command::Report(args) => args.cluster.cluster.as_deref(),
            _ => None,
        }
    }

    async fn engine(&self) -> Result<Engine> {
        let open = self.open_mode();
        let queries = match &self.command {
            Command::Serve(args) => &args.queries,
            _ => &QueryArgs::default(),
        };
        let mut options = EngineOptions {
            open,
            ..EngineOptions::new(&self.global, queries)
        };
        if let Command::Serve(args) = &self.command {
            options.commit_window = args.server.commit_window();
        }
        if let Some(cluster) = self.cluster() {
            options.runner = Arc::new(crate::cluster::remote::Remote::new(cluster)?);
        }
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
        crate::fixtures::bench_data::plan(&crate::fixtures::bench_data::BenchSpec {
            scale: args.scale,
            seed: args.seed,
            commits: args.commits,
            compact_every: args.compact_every,
        })?;
    }
    match &cli.command {
        Command::Scheduler(args) => {
            let scheduler = crate::cluster::scheduler::Scheduler::bind(args, &cli.global).await?;
            // Printed so a script that asked for port 0 learns the port.
            println!(
                "forkline scheduler listening on df://{}",
                scheduler.address()?
            );
            return scheduler.serve().await;
        }
        Command::Executor(args) => return crate::cluster::executor::run(args, &cli.global).await,
        _ => {}
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
                let options = crate::maintenance::compact::CompactOptions {
                    min_ingest_files: args.compaction.compact_min_files.max(1),
                    ..Default::default()
                };
                crate::maintenance::compact::in_background(engine.clone(), every, options)?;
            }
            if let Some(stale_after) = server.stale_after().filter(|_| !server.read_only) {
                tokio::spawn(crate::liveness::monitor(engine.clone(), stale_after));
            }
            super::http::serve(engine, listener, flight, options).await?;
            Ok(())
        }
        Command::Compact(args) => {
            let options = crate::maintenance::compact::CompactOptions::from(&args);
            let report = crate::maintenance::compact::compact(&engine, &options).await?;
            println!("{report}");
            Ok(())
        }
        Command::Purge => {
            let report = crate::maintenance::purge(&engine, std::time::Duration::ZERO).await?;
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
        Command::Demo(args) => demo_command::run(&engine, args.queries.as_deref(), args.seed).await,
        Command::BenchData(args) => {
            let spec = crate::fixtures::bench_data::BenchSpec {
                scale: args.scale,
                seed: args.seed,
                commits: args.commits,
                compact_every: args.compact_every,
            };
            crate::fixtures::bench_data::run(&engine, &spec).await
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
            let export = crate::query::lineage::SeriesExport {
                run: args.run,
                metrics: crate::query::lineage::SeriesExport::parse_metrics(
                    args.metrics.as_deref(),
                ),
                stitched: !args.no_stitch,
                family: args.family,
            };
            let written =
                export_command::export_to(&engine, &export, args.format, &args.output).await?;
            println!(
                "exported {} row(s), {} byte(s) to {}",
                written.rows, written.bytes, args.output
            );
            Ok(())
        }
        Command::Report(args) => report_command::report(&engine, args).await,
        Command::Import(args) => {
            let n = engine.import_file(&args.run, &args.file).await?;
            println!("imported {n} point(s) into {}", args.run);
            Ok(())
        }
        Command::Run(cmd) => run_command(&engine, cmd).await,
        Command::Keys(cmd) => keys_command(&engine, cmd).await,
        Command::Project(cmd) => project_command(&engine, cmd).await,
        // Served above, without an engine.
        Command::Scheduler(_) | Command::Executor(_) => Ok(()),
    }
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
    let mut stream = engine.gate().execute(df).await?;
    let mut encoder = Encoder::new(format, &schema)?;
    while let Some(batch) = stream.next().await {
        out.write_all(&encoder.write(&batch?)?)?;
    }
    out.write_all(&encoder.finish()?)?;
    out.flush()?;
    Ok(())
}
