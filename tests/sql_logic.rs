//! Runs the sqllogictest files under `tests/sql/` against the product-docs fixture store.
//!
//! Every failing record of every file is reported, not only the first.
//! `FORKLINE_SLT_COMPLETE=1 cargo test --test sql_logic` rewrites the files
//! with the results forkline gives (DataFusion's `--complete`): review the diff.
//!
//! `EXPLAIN` answers the physical plan's shape only: one row per operator,
//! indented as DataFusion indents it, without its details (file names, sizes,
//! partition counts), so plan pins fail on a moved or added operator and on
//! nothing else. An `EXPLAIN /* with predicates */ …` also keeps each scan's
//! `predicate=…`, for pins of what reaches a scan.

mod common;

use std::sync::Arc;

use arrow::datatypes::DataType;
use forkline::Engine;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

struct Db(Arc<Engine>);

#[derive(Debug)]
struct SqlError(String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SqlError {}

#[async_trait::async_trait]
impl AsyncDB for Db {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let df = self.0.sql(sql).await.map_err(|e| SqlError(e.to_string()))?;
        let head = sql.trim_start().get(..7);
        if head.is_some_and(|h| h.eq_ignore_ascii_case("explain")) {
            let batches = df.collect().await.map_err(|e| SqlError(e.to_string()))?;
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Text],
                rows: plan_shape(
                    &common::render(&batches),
                    sql.contains("/* with predicates */"),
                ),
            });
        }
        let types = df
            .schema()
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt64 => DefaultColumnType::Integer,
                DataType::Float32 | DataType::Float64 => DefaultColumnType::FloatingPoint,
                _ => DefaultColumnType::Text,
            })
            .collect();
        let batches = df.collect().await.map_err(|e| SqlError(e.to_string()))?;
        Ok(DBOutput::Rows {
            types,
            rows: common::render(&batches),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "forkline"
    }
}

/// The operator names of the `physical_plan` row of an `EXPLAIN` answer, one
/// per row with their indentation (dots for spaces, as slt trims cells); with
/// `predicates`, a scan's name is followed by its `predicate=…`.
fn plan_shape(rows: &[Vec<String>], predicates: bool) -> Vec<Vec<String>> {
    rows.iter()
        .filter(|row| row.first().is_some_and(|kind| kind == "physical_plan"))
        .flat_map(|row| row[1].lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let depth = line.len() - line.trim_start().len();
            let name = line
                .trim_start()
                .split([':', ' '])
                .next()
                .unwrap_or_default();
            let predicate = line
                .split(", ")
                .find(|part| part.starts_with("predicate="))
                .filter(|_| predicates && name == "DataSourceExec")
                .map(|p| format!(" {p}"))
                .unwrap_or_default();
            vec![format!("{}{name}{predicate}", ".".repeat(depth))]
        })
        .collect()
}

#[tokio::test]
async fn sqllogictest_files() {
    let engine = Arc::new(Engine::open("memory://").await.unwrap());
    common::product_docs(&engine).await.unwrap();
    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sql"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let complete = std::env::var_os("FORKLINE_SLT_COMPLETE").is_some();
    let mut failures = Vec::new();
    for file in files {
        let engine = engine.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let engine = engine.clone();
            async move { Ok(Db(engine)) }
        });
        if complete {
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            continue;
        }
        let records =
            sqllogictest::parse_file(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for record in records {
            if let Err(e) = runner.run_async(record).await {
                failures.push(format!("{}: {}", file.display(), e.display(false)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing record(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
