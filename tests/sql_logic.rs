//! Runs the sqllogictest files under `tests/sql/` against the product-docs fixture store.

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
    for file in files {
        let engine = engine.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let engine = engine.clone();
            async move { Ok(Db(engine)) }
        });
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {e}", file.display());
        }
    }
}
