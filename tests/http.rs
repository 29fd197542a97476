//! The real `forkline serve` binary on 127.0.0.1: result formats, errors, read-only rule.

mod common;

use arrow::array::RecordBatch;
use common::{product_docs, spawn_server, temp_store};
use forkline::Engine;
use serde_json::{Value, json};

const QUERY: &str =
    "SELECT step, value, inherited FROM stitched_metrics('PD-3', 'loss') ORDER BY step";

async fn fixture_server() -> (tempfile::TempDir, common::Server) {
    let (dir, store) = temp_store();
    {
        let engine = Engine::open(&store).await.unwrap();
        product_docs(&engine).await.unwrap();
    }
    let server = spawn_server(&store);
    (dir, server)
}

async fn post(server: &common::Server, accept: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/sql", server.base))
        .json(&body);
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    req.send().await.unwrap()
}

fn check_batches(batches: &[RecordBatch]) {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 181);
    let rendered = common::render(batches);
    assert_eq!(rendered[0], vec!["0", "0.0", "true"]);
    assert_eq!(rendered[180], vec!["180", "2180.0", "false"]);
}

#[tokio::test]
async fn all_four_formats_and_errors() {
    let (_dir, server) = fixture_server().await;
    let client = reqwest::Client::new();

    let health = client
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // JSON by default: an array of row objects.
    let resp = post(&server, None, json!({ "sql": QUERY })).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let rows: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(rows.len(), 181);
    assert_eq!(rows[0], json!({"step": 0, "value": 0.0, "inherited": true}));
    assert_eq!(
        rows[151],
        json!({"step": 151, "value": 2151.0, "inherited": false})
    );

    // CSV.
    let resp = post(&server, Some("text/csv"), json!({ "sql": QUERY })).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 182);
    assert_eq!(lines[0], "step,value,inherited");
    assert_eq!(lines[52], "51,1051.0,true");

    // Arrow IPC stream.
    let resp = post(
        &server,
        Some("application/vnd.apache.arrow.stream"),
        json!({ "sql": QUERY }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = resp.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    check_batches(&batches);

    // Parquet.
    let resp = post(
        &server,
        Some("application/vnd.apache.parquet"),
        json!({ "sql": QUERY }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    check_batches(&batches);

    // An empty result is still a well-formed document.
    let resp = post(
        &server,
        None,
        json!({ "sql": "SELECT * FROM runs WHERE id < 0" }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Vec<Value>>().await.unwrap(),
        Vec::<Value>::new()
    );
}

async fn expect_error(server: &common::Server, body: Value, status: u16, needle: &str) {
    let resp = post(server, None, body.clone()).await;
    assert_eq!(resp.status(), status, "{body}");
    let err: Value = resp.json().await.unwrap();
    let msg = err["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {err}"));
    assert!(msg.contains(needle), "{body}: {msg:?} lacks {needle:?}");
}

#[tokio::test]
async fn bad_sql_and_writes_are_refused_with_400() {
    let (_dir, server) = fixture_server().await;
    expect_error(&server, json!({"sql": "SELEC 1"}), 400, "SELEC").await;
    expect_error(
        &server,
        json!({"sql": "SELECT nope FROM runs"}),
        400,
        "nope",
    )
    .await;
    expect_error(
        &server,
        json!({"sql": "SELECT * FROM lineage('PD-77')"}),
        400,
        "unknown run `PD-77`",
    )
    .await;
    expect_error(
        &server,
        json!({"sql": "SELECT * FROM stitched_metrics(1.5)"}),
        400,
        "display id",
    )
    .await;
    for write in [
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO runs SELECT * FROM runs",
        "DROP TABLE metrics",
        "COPY (SELECT 1) TO '/tmp/forkline-copy.csv'",
        "SET datafusion.execution.batch_size = 1",
        "CREATE VIEW v AS SELECT 1",
    ] {
        expect_error(&server, json!({ "sql": write }), 400, "read-only").await;
    }
    assert!(!std::path::Path::new("/tmp/forkline-copy.csv").exists());
    expect_error(&server, json!({"query": "SELECT 1"}), 400, "sql").await;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/sql", server.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    // The store is untouched by the refused statements.
    let resp = post(
        &server,
        None,
        json!({"sql": "SELECT count(*) AS n FROM runs"}),
    )
    .await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!([{"n": 3}]));
}
