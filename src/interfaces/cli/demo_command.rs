//! `forkline demo`: builds the demo store when it is missing, then prints the
//! demo queries' answers as tables.

use std::path::Path;

use super::print_query;
use crate::engine::Engine;
use crate::error::Result;
use crate::fixtures::demo::{QUERIES, build};
use crate::interfaces::format::Format;

/// Builds the demo store (unless already present) and runs the demo queries:
/// those of `queries` when given, else the ones compiled in.
pub async fn run(engine: &Engine, queries: Option<&Path>, seed: u64) -> Result<()> {
    let catalog = engine.catalog().await?;
    if catalog.projects().iter().any(|p| p == "vision-sweep") {
        println!(
            "demo store already present at {}; running the queries",
            engine.store().location().root
        );
    } else {
        build(engine, seed).await?;
    }
    match queries {
        Some(dir) => run_queries(engine, dir).await,
        None => {
            for (name, sql) in QUERIES {
                run_query(engine, &format!("queries/{name}"), sql).await?;
            }
            Ok(())
        }
    }
}

/// Runs every `.sql` file of `dir` in name order and prints each result as a table.
pub async fn run_queries(engine: &Engine, dir: &Path) -> Result<()> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| crate::Error::invalid(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    for file in files {
        let sql = std::fs::read_to_string(&file)?;
        run_query(engine, &file.display().to_string(), &sql).await?;
    }
    Ok(())
}

/// Prints a query's name and leading comment, then its result as a table.
async fn run_query(engine: &Engine, name: &str, sql: &str) -> Result<()> {
    println!("\n== {name} ==");
    for line in sql.lines().take_while(|l| l.starts_with("--")) {
        println!("{line}");
    }
    print_query(engine, sql, Format::Table, std::io::stdout().lock()).await
}
