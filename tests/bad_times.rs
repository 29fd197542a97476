//! A store that already holds times no calendar library renders (written
//! before ingest checked times, or by another engine) still answers in every
//! output format, whole: each value rendered, never an `ERROR:` cell or a body
//! cut short. And ingest refuses such times, naming the line.

mod common;

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::ipc::reader::StreamReader;
use bytes::Bytes;
use common::{cli, spawn_server, temp_store};
use forkline::Engine;
use forkline::catalog::NewRun;
use forkline::store::TableKind;
use forkline::store::records::LogRecord;
use forkline::store::schema::{arrow_schema, timestamps};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

/// Times of the planted rows (µs): an ordinary one, the extremes of `i64`, and
/// what `"time": 9.2e15` (ms) or `1e300` (saturated) became in older builds.
const TIMES: [i64; 5] = [
    1_700_000_000_000_000,
    i64::MAX,
    i64::MIN + 1,
    9_200_000_000_000_000_000,
    -9_200_000_000_000_000_000,
];

/// How the text formats render them (RFC 3339, or ISO 8601 with an expanded year).
const RENDERED: [&str; 5] = [
    "2023-11-14T22:13:20Z",
    "+294247-01-10T04:00:54.775807Z",
    "-290308-12-21T19:59:05.224193Z",
    "+293506-05-25T11:33:20Z",
    "-289567-08-09T12:26:40Z",
];

const QUERY: &str = "SELECT step, value, time FROM metrics ORDER BY step";

/// A store with one run whose metrics and logs hold [`TIMES`], written through
/// the store's append (below every validation).
async fn planted() -> (tempfile::TempDir, String, u64) {
    let (dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    let run = engine
        .create_run(NewRun {
            project: "times".into(),
            name: "planted".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let n = TIMES.len();
    let batch = RecordBatch::try_new(
        arrow_schema(TableKind::Metrics),
        vec![
            Arc::new(Int64Array::from(vec![run.id as i64; n])),
            Arc::new(StringArray::from(vec!["loss"; n])),
            Arc::new(Int64Array::from_iter_values(0..n as i64)),
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
            Arc::new(timestamps(TIMES.to_vec())),
            Arc::new(Int64Array::from(vec![1; n])),
        ],
    )
    .unwrap();
    engine
        .store()
        .append(TableKind::Metrics, vec![batch])
        .await
        .unwrap();
    let logs: Vec<LogRecord> = TIMES
        .iter()
        .map(|t| LogRecord {
            run_id: run.id,
            time_us: Some(*t),
            line_number: Some(1),
            log_type: "INFO".into(),
            message: "planted".into(),
        })
        .collect();
    engine
        .store()
        .append(TableKind::Logs, vec![LogRecord::batch(&logs).unwrap()])
        .await
        .unwrap();
    (dir, store, run.id)
}

/// Text output holds every rendered time and no error cell.
fn check_text(what: &str, text: &str) {
    assert!(!text.contains("ERROR"), "{what}: {text}");
    for t in RENDERED {
        assert!(text.contains(t), "{what} lacks {t}: {text}");
    }
}

/// A JSON array of row objects, whole, with each time rendered in order.
fn check_json(what: &str, body: &[u8]) {
    let rows: Vec<Value> = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{what}: not whole JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    let times: Vec<&str> = rows.iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert_eq!(times, RENDERED, "{what}");
}

/// A CSV with its header and one line per row, each time rendered in order.
fn check_csv(what: &str, body: &[u8]) {
    let text = String::from_utf8(body.to_vec()).unwrap();
    check_text(what, &text);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + TIMES.len(), "{what}: {text}");
    for (line, t) in lines[1..].iter().zip(RENDERED) {
        assert!(line.ends_with(t), "{what}: {line} should end with {t}");
    }
}

/// Binary formats keep the raw values exactly.
fn raw_times(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let col = b.column_by_name("time").expect("time column");
            let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Int64).unwrap();
            col.as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

fn arrow_batches(what: &str, body: &[u8]) -> Vec<RecordBatch> {
    StreamReader::try_new(std::io::Cursor::new(body.to_vec()), None)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{what}: stream cut short: {e}"))
}

fn parquet_batches(what: &str, body: &[u8]) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(Bytes::from(body.to_vec()))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Checks one answer in `format`: rendered and whole, or (table) refused visibly.
fn check_answer(what: &str, format: &str, body: &[u8]) {
    match format {
        "json" => check_json(what, body),
        "csv" => check_csv(what, body),
        "table" => check_text(what, &String::from_utf8_lossy(body)),
        "arrow" => assert_eq!(raw_times(&arrow_batches(what, body)), TIMES, "{what}"),
        "parquet" => assert_eq!(raw_times(&parquet_batches(what, body)), TIMES, "{what}"),
        other => unreachable!("{other}"),
    }
}

#[test]
fn every_cli_format_renders_out_of_range_times() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (dir, store, run) = runtime.block_on(planted());
    for format in ["table", "csv", "json", "arrow", "parquet"] {
        let out = dir.path().join(format!("sql.{format}"));
        let (ok, _, err) = cli(
            &store,
            &[
                "sql",
                "--format",
                format,
                "-o",
                out.to_str().unwrap(),
                QUERY,
            ],
        );
        assert!(ok, "sql --format {format}: {err}");
        check_answer(
            &format!("sql --format {format}"),
            format,
            &std::fs::read(&out).unwrap(),
        );
    }
    // Logs go through the same encoders.
    let (ok, text, err) = cli(
        &store,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT time FROM logs ORDER BY line_number, time",
        ],
    );
    assert!(ok, "{err}");
    check_text("logs as csv", &text);
    for format in ["csv", "json", "arrow", "parquet"] {
        let out = dir.path().join(format!("export.{format}"));
        let (ok, _, err) = cli(
            &store,
            &[
                "export",
                &run.to_string(),
                "--format",
                format,
                "-o",
                out.to_str().unwrap(),
            ],
        );
        assert!(ok, "export --format {format}: {err}");
        let body = std::fs::read(&out).unwrap();
        match format {
            "csv" | "json" => {
                check_text(&format!("export {format}"), &String::from_utf8_lossy(&body))
            }
            _ => {
                let batches = match format {
                    "arrow" => arrow_batches("export arrow", &body),
                    _ => parquet_batches("export parquet", &body),
                };
                let mut times = raw_times(&batches);
                times.sort_unstable();
                let mut want = TIMES.to_vec();
                want.sort_unstable();
                assert_eq!(times, want, "export {format}");
            }
        }
    }
}

#[tokio::test]
async fn every_http_format_renders_out_of_range_times_and_ingest_refuses_them() {
    let (_dir, store, run) = planted().await;
    let server = spawn_server(&store);
    let client = reqwest::Client::new();
    for (accept, format) in [
        ("application/json", "json"),
        ("text/csv", "csv"),
        ("application/vnd.apache.arrow.stream", "arrow"),
        ("application/vnd.apache.parquet", "parquet"),
        ("text/plain", "table"),
    ] {
        let what = format!("/api/sql as {accept}");
        let resp = client
            .post(format!("{}/api/sql", server.base))
            .header("accept", accept)
            .json(&json!({ "sql": QUERY }))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        // A body cut short fails here rather than passing as a shorter answer.
        let body = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{what}: body cut short: {e}"));
        if !status.is_success() {
            // Refusing a format outright is fine, if it says why.
            let err: Value = serde_json::from_slice(&body).unwrap();
            assert!(err["error"].is_string(), "{what}: {err}");
            assert!(format == "table", "{what}: {status} {err}");
            continue;
        }
        check_answer(&what, format, &body);
    }
    for format in ["csv", "json", "arrow", "parquet"] {
        let what = format!("/api/export?format={format}");
        let resp = client
            .get(format!(
                "{}/api/export?run={run}&format={format}&stitched=false",
                server.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{what}");
        let body = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{what}: body cut short: {e}"));
        match format {
            "csv" | "json" => check_text(&what, &String::from_utf8_lossy(&body)),
            "arrow" => assert_eq!(
                arrow_batches(&what, &body)
                    .iter()
                    .map(|b| b.num_rows())
                    .sum::<usize>(),
                TIMES.len()
            ),
            _ => assert_eq!(
                parquet_batches(&what, &body)
                    .iter()
                    .map(|b| b.num_rows())
                    .sum::<usize>(),
                TIMES.len()
            ),
        }
    }
    // The SDK's read API answers whole JSON for the same rows.
    for path in [
        format!("/api/runs/metrics?runId={run}"),
        format!("/api/runs/logs?runId={run}"),
    ] {
        let resp = reqwest::get(format!("{}{path}", server.base))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let text = resp.text().await.unwrap();
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        assert!(!text.contains("ERROR:"), "{path}: {body}");
    }

    // Ingest refuses each such time with its line number, and stores nothing of the request.
    let count = |table: &'static str| {
        let client = client.clone();
        let base = server.base.clone();
        async move {
            let rows: Value = client
                .post(format!("{base}/api/sql"))
                .json(&json!({ "sql": format!("SELECT count(*) AS n FROM {table}") }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            rows[0]["n"].as_i64().unwrap()
        }
    };
    let ok = |table: &str| match table {
        "metrics" => r#"{"time": 1700000000000, "step": 9, "data": {"loss": 1}}"#,
        "logs" => r#"{"time": 1700000000000, "message": "m", "lineNumber": 1, "logType": "INFO"}"#,
        _ => {
            r#"{"time": 1700000000000, "step": 1, "logName": "t", "dataType": "TEXT", "data": "x"}"#
        }
    };
    for table in ["metrics", "logs", "data"] {
        let before = count(table).await;
        for bad in [
            "1e300",
            "-1e300",
            "9.2e15",
            "-9.2e15",
            "-1",
            "7258118400000",
        ] {
            let body = format!(
                "{}\n{}\n",
                ok(table),
                ok(table).replace("1700000000000", bad)
            );
            let resp = client
                .post(format!("{}/ingest/{table}", server.base))
                .header("x-run-id", run.to_string())
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 400, "{table} {bad}");
            let err: Value = resp.json().await.unwrap();
            let msg = err["error"].as_str().unwrap();
            assert!(
                msg.starts_with("line 2: time") && msg.contains("outside 1970"),
                "{table} {bad}: {msg}"
            );
        }
        assert_eq!(
            count(table).await,
            before,
            "{table}: a refused request stored rows"
        );
    }
    // A file's time is checked when its upload URL is handed out.
    let resp = client
        .post(format!("{}/files", server.base))
        .header("x-run-id", run.to_string())
        .json(&json!({"files": [{"fileName": "a.txt", "fileSize": 1, "time": 1e300, "logName": "doc"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("outside 1970"),
        "{err}"
    );
}

#[test]
fn import_refuses_out_of_range_times_by_row() {
    let (dir, store) = temp_store();
    let (ok, _, err) = cli(
        &store,
        &["run", "create", "--project", "imp", "--name", "r"],
    );
    assert!(ok, "{err}");
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "metric,step,value,time\nloss,0,1.0,1700000000\nloss,1,1.0,1e300\n",
    )
    .unwrap();
    let (ok, _, err) = cli(&store, &["import", "--run", "1", csv.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("row 2") && err.contains("outside 1970"),
        "{err}"
    );
    let (_, out, _) = cli(
        &store,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM metrics",
        ],
    );
    assert_eq!(out.lines().nth(1), Some("0"), "{out}");
}
