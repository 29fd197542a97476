//! Purge to the byte: after deleting runs, `forkline purge` and `forkline
//! vacuum --retention-hours 0`, no file under the store (raw bytes, and
//! every column of every Parquet file, Delta checkpoints included) holds a
//! deleted run's name, config, tags, metric names, values, logs or uploads;
//! the surviving runs answer exactly as before; ingest into other runs
//! during the purge loses nothing acknowledged.

mod common;

use std::path::Path;

use common::{cli, spawn_server, temp_store};
use serde_json::{Value, json};

/// Strings only the deleted runs' data holds.
const SECRETS: [&str; 8] = [
    "zulu-run-name",
    "zulu-config-value",
    "zulu-tag",
    "zulu-metric",
    "zulu-log-line",
    "zulu-data-name",
    "zulu-upload-bytes",
    "zulu-file-name",
];

/// A value only the deleted runs logged.
const SECRET_VALUE: &str = "98765.4321";

async fn post(
    server: &common::Server,
    path: &str,
    run: Option<&str>,
    body: String,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/json")
        .body(body);
    if let Some(run) = run {
        request = request.header("x-run-id", run);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn create(server: &common::Server, body: Value) -> Value {
    let (status, text) = post(server, "/api/runs/create", None, body.to_string()).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

async fn metrics(
    server: &common::Server,
    run: &Value,
    metric: &str,
    steps: std::ops::Range<u64>,
    value: &str,
) {
    let lines: String = steps
        .map(|s| {
            format!(
                "{{\"time\": 1700000000000, \"step\": {s}, \"data\": {{\"{metric}\": {value}}}}}\n"
            )
        })
        .collect();
    let (status, text) = post(
        server,
        "/ingest/metrics",
        Some(&run["runId"].to_string()),
        lines,
    )
    .await;
    assert_eq!(status, 200, "{text}");
}

/// Logs, data and an uploaded file of `run`, named after `tag`.
async fn records(server: &common::Server, run: &Value, tag: &str) {
    let id = run["runId"].to_string();
    let log = format!(
        "{{\"time\": 1700000000000, \"message\": \"{tag}-log-line\", \"lineNumber\": 1, \"logType\": \"INFO\"}}\n"
    );
    let data = format!(
        "{{\"time\": 1700000000000, \"step\": 1, \"logName\": \"{tag}-data-name\", \"dataType\": \"TEXT\", \"data\": \"{tag}\"}}\n"
    );
    for (path, body) in [("/ingest/logs", log), ("/ingest/data", data)] {
        let (status, text) = post(server, path, Some(&id), body).await;
        assert_eq!(status, 200, "{path}: {text}");
    }
    let content = format!("{tag}-upload-bytes");
    let file = format!("{tag}-file-name.txt");
    let spec = json!({"files": [{"fileName": file, "fileSize": content.len(), "fileType": "txt",
                                 "time": 1, "logName": format!("{tag}-file-log"), "step": 1}]});
    let (status, urls) = post(server, "/files", Some(&id), spec.to_string()).await;
    assert_eq!(status, 200, "{urls}");
    let urls: Value = serde_json::from_str(&urls).unwrap();
    let url = urls[format!("{tag}-file-log")][0][&file]
        .as_str()
        .unwrap()
        .to_string();
    let put = reqwest::Client::new()
        .put(&url)
        .body(content)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
}

async fn sql(server: &common::Server, sql: &str) -> String {
    let (status, text) = post(server, "/api/sql", None, json!({ "sql": sql }).to_string()).await;
    assert_eq!(status, 200, "{sql}: {text}");
    text
}

/// What the surviving runs answer, the writer's run left out.
async fn survivors(server: &common::Server, writer: u64) -> Vec<String> {
    let mut out = Vec::new();
    for query in [
        "SELECT id, name, config, tags, status FROM runs WHERE id != {w} ORDER BY id".to_string(),
        "SELECT run_id, metric, step, value FROM metrics WHERE run_id != {w} ORDER BY run_id, metric, step".into(),
        "SELECT run_id, metric, count(*) AS n FROM metric_writes WHERE run_id != {w} GROUP BY run_id, metric ORDER BY run_id, metric".into(),
        "SELECT run_id, message FROM logs ORDER BY run_id, message".into(),
        "SELECT run_id, log_name FROM data ORDER BY run_id".into(),
        "SELECT run_id, file_name, file_size FROM files ORDER BY run_id".into(),
        "SELECT run_id, step, value FROM family_metrics(1, 'loss') ORDER BY run_id, step".into(),
        "SELECT run_id, to_status FROM run_status_events WHERE run_id != {w} ORDER BY run_id, rev".into(),
    ] {
        out.push(sql(server, &query.replace("{w}", &writer.to_string())).await);
    }
    out
}

/// Every secret found in the file at `path`: in its raw bytes, and in every
/// value of every column when it is Parquet.
fn secrets_in(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if bytes.starts_with(b"PAR1") {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(bytes),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            text.push_str(
                &arrow::util::pretty::pretty_format_batches(&[batch])
                    .unwrap()
                    .to_string(),
            );
        }
    }
    SECRETS
        .iter()
        .chain([&SECRET_VALUE])
        .filter(|s| text.contains(**s))
        .map(|s| s.to_string())
        .collect()
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn leaks(store: &str) -> Vec<String> {
    let mut files = Vec::new();
    files_under(Path::new(store), &mut files);
    files
        .iter()
        .flat_map(|f| {
            secrets_in(f)
                .into_iter()
                .map(move |s| format!("{s} in {}", f.display()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_leaves_no_byte_of_deleted_runs() {
    let (_dir, store) = temp_store();
    let server = spawn_server(&store);
    // Project `keep`: a family whose leaf fork is deleted, and a writer's run.
    let root = create(
        &server,
        json!({"runName": "keep-root", "projectName": "keep", "config": {"lr": 1}}),
    )
    .await;
    metrics(&server, &root, "loss", 0..50, "1.5").await;
    records(&server, &root, "keep").await;
    let fork = create(&server, json!({"runName": "keep-fork", "projectName": "keep", "forkRunId": root["runId"], "forkStep": 20})).await;
    metrics(&server, &fork, "loss", 21..60, "2.5").await;
    let doomed_leaf = create(&server, json!({"runName": "zulu-run-name", "projectName": "keep", "forkRunId": fork["runId"], "forkStep": 30,
                                              "config": {"k": "zulu-config-value"}, "tags": ["zulu-tag"]})).await;
    metrics(&server, &doomed_leaf, "zulu-metric", 0..40, SECRET_VALUE).await;
    metrics(&server, &doomed_leaf, "loss", 31..70, SECRET_VALUE).await;
    // Rewritten points leave superseded writes behind.
    metrics(&server, &doomed_leaf, "loss", 31..35, SECRET_VALUE).await;
    records(&server, &doomed_leaf, "zulu").await;
    let writer = create(&server, json!({"runName": "writer", "projectName": "keep"})).await;
    // Project `zulu`: deleted whole.
    let gone = create(&server, json!({"runName": "zulu-run-name", "projectName": "zulu", "config": {"c": "zulu-config-value"}, "tags": ["zulu-tag"]})).await;
    metrics(&server, &gone, "zulu-metric", 0..30, SECRET_VALUE).await;
    records(&server, &gone, "zulu").await;
    let (ok, out, err) = cli(&store, &["compact"]);
    assert!(ok, "{out}{err}");
    metrics(&server, &gone, "zulu-metric", 30..35, SECRET_VALUE).await;

    let response = reqwest::Client::new()
        .delete(format!("{}/api/runs/{}", server.base, doomed_leaf["runId"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = reqwest::Client::new()
        .delete(format!("{}/api/projects/zulu", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let writer_id = writer["runId"].as_u64().unwrap();
    let before = survivors(&server, writer_id).await;
    assert!(
        !leaks(&store).is_empty(),
        "the deleted rows are on disk until the purge"
    );

    // Ingest into the writer's run all through the purge; count what is acknowledged.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ingest = {
        let (stop, base) = (stop.clone(), server.base.clone());
        tokio::spawn(async move {
            let mut acked = 0u64;
            let mut step = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let lines: String = (step..step + 50)
                    .map(|s| {
                        format!(
                            "{{\"time\": 1700000000000, \"step\": {s}, \"data\": {{\"w\": {s}}}}}\n"
                        )
                    })
                    .collect();
                let response = reqwest::Client::new()
                    .post(format!("{base}/ingest/metrics"))
                    .header("x-run-id", writer_id.to_string())
                    .body(lines)
                    .send()
                    .await
                    .unwrap();
                if response.status() == 200 {
                    acked += 50;
                }
                step += 50;
            }
            acked
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (ok, out, err) = tokio::task::spawn_blocking({
        let store = store.clone();
        move || cli(&store, &["purge"])
    })
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    assert!(out.contains("purged 2 deleted run(s)"), "{out}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = ingest.await.unwrap();
    assert!(acked > 0);

    let (ok, out, err) = cli(&store, &["vacuum", "--retention-hours", "0"]);
    assert!(ok, "{out}{err}");
    // Readers see the purge within the refresh interval.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let leaked = leaks(&store);
    assert!(leaked.is_empty(), "{leaked:#?}");
    assert_eq!(survivors(&server, writer_id).await, before);
    let stored = sql(
        &server,
        &format!("SELECT count(*) AS n FROM metrics WHERE run_id = {writer_id}"),
    )
    .await;
    assert_eq!(stored, format!("[{{\"n\":{acked}}}]"));
    // The tombstones keep ids and display ids taken, and the deletions recorded.
    let deletions = sql(
        &server,
        "SELECT run_id, display_id, purged FROM system.deletions ORDER BY run_id",
    )
    .await;
    assert!(
        deletions.contains("\"purged\":true") && !deletions.contains("\"purged\":false"),
        "{deletions}"
    );
    let next = create(&server, json!({"runName": "after", "projectName": "zulu"})).await;
    assert!(next["runId"].as_u64().unwrap() > gone["runId"].as_u64().unwrap());
    assert_eq!(next["displayId"], "ZUL-2");
    let (ok, out, err) = cli(&store, &["check"]);
    assert!(ok, "{out}{err}");
}
