//! Streaming exports over HTTP and the `export` CLI, against a real store and server.

mod common;

use std::io::Write;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::ipc::reader::StreamDecoder;
use common::{peak_rss_mib, product_docs, spawn_server_with, temp_store};
use forkline::Engine;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Rows of the result larger than the server's memory pool (16 MiB): 2 × 8 bytes each.
const BIG_ROWS: usize = 20_000_000;
const BIG_QUERY: &str = "SELECT value AS n, random() AS r FROM range(0, 20000000)";

async fn fixture() -> (tempfile::TempDir, String) {
    let (dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    product_docs(&engine).await.unwrap();
    (dir, store)
}

/// Reads an Arrow IPC stream chunk by chunk as it arrives, counting its rows.
async fn count_arrow_rows(mut resp: reqwest::Response) -> (usize, usize) {
    let mut decoder = StreamDecoder::new();
    let mut rows = 0usize;
    let mut sum = 0i64;
    let mut bytes = 0usize;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        bytes += chunk.len();
        let mut buffer = Buffer::from(chunk.to_vec());
        while !buffer.is_empty() {
            if let Some(batch) = decoder.decode(&mut buffer).unwrap() {
                let n = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .unwrap();
                sum += n.iter().map(|v| v.expect("n is never null")).sum::<i64>();
                rows += batch.num_rows();
            }
        }
    }
    decoder.finish().unwrap();
    // Partitions interleave, so check that each of 0..rows arrived once by its sum.
    let n = rows as i64;
    assert_eq!(sum, n * (n - 1) / 2, "every row arrives exactly once");
    (rows, bytes)
}

#[tokio::test]
async fn results_larger_than_the_memory_pool_stream_as_arrow_and_parquet() {
    let (dir, store) = temp_store();
    Engine::open(&store).await.unwrap();
    let server = spawn_server_with(&store, &["--memory-mb", "16"]);
    let client = reqwest::Client::new();
    let before = peak_rss_mib(server.child.id());

    let resp = client
        .post(format!("{}/api/sql", server.base))
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&serde_json::json!({ "sql": BIG_QUERY }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("content-length").is_none(),
        "the body is chunked, not buffered"
    );
    let (rows, arrow_bytes) = count_arrow_rows(resp).await;
    assert_eq!(rows, BIG_ROWS);
    let after_arrow = peak_rss_mib(server.child.id());

    let mut resp = client
        .post(format!("{}/api/sql", server.base))
        .header("accept", "application/vnd.apache.parquet")
        .json(&serde_json::json!({ "sql": BIG_QUERY }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let path = dir.path().join("big.parquet");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut bytes = 0usize;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        bytes += chunk.len();
        file.write_all(&chunk).unwrap();
    }
    drop(file);
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, BIG_ROWS);

    // The Arrow result is ~300 MiB, the Parquet one ~170 MiB: the server never held one whole.
    let (arrow_mib, parquet_mib) = ((arrow_bytes >> 20) as u64, (bytes >> 20) as u64);
    let peak = peak_rss_mib(server.child.id());
    eprintln!(
        "server peak RSS {before} -> {after_arrow} (Arrow) -> {peak} MiB (Parquet); results: arrow {arrow_mib} MiB, parquet {parquet_mib} MiB"
    );
    assert!(
        arrow_mib >= 80,
        "the result ({arrow_mib} MiB) must dwarf the 16 MiB pool"
    );
    assert!(
        peak < before + arrow_mib / 3,
        "server peak RSS grew from {before} to {peak} MiB for a {arrow_mib} MiB result"
    );
}

fn parquet_rows(path: &std::path::Path) -> Vec<Vec<String>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    common::render(&batches)
}

#[tokio::test]
async fn api_export_downloads_stitched_series_and_families() {
    let (dir, store) = fixture().await;
    let expected_run = {
        let engine = Engine::open(&store).await.unwrap();
        let run = common::rows(
            &engine,
            "SELECT * FROM stitched_metrics('PD-3', 'loss') ORDER BY run_id, metric, step",
        )
        .await
        .unwrap();
        let family = common::rows(
            &engine,
            "SELECT * FROM family_metrics('PD-1') ORDER BY run_id, metric, step",
        )
        .await
        .unwrap();
        let own = common::rows(
            &engine,
            "SELECT * FROM metrics WHERE run_id = 2 ORDER BY run_id, metric, step",
        )
        .await
        .unwrap();
        (run, family, own)
    };
    let server = spawn_server_with(&store, &[]);
    let client = reqwest::Client::new();
    let get = |query: &str| {
        client
            .get(format!("{}/api/export?{query}", server.base))
            .send()
    };

    let resp = get("run=PD-3&metrics=loss&format=parquet").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"PD-3-run-stitched.parquet\""
    );
    let path = dir.path().join("run.parquet");
    std::fs::write(&path, resp.bytes().await.unwrap()).unwrap();
    assert_eq!(parquet_rows(&path), expected_run.0);
    assert_eq!(expected_run.0.len(), 181);

    // A whole family, every metric, through a glob and as Arrow IPC.
    let resp = get("run=PD-2&family=true&metrics=l*,acc&format=arrow")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    let reader = arrow::ipc::reader::StreamReader::try_new(&body[..], None).unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(common::render(&batches), expected_run.1);

    // A run's own points, CSV.
    let resp = get("run=PD-2&stitched=false&format=csv").await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert_eq!(text.lines().count(), expected_run.2.len() + 1);
    assert!(text.starts_with("run_id,metric,step,value,time"), "{text}");

    for (query, status) in [
        ("run=PD-99", 404),
        ("metrics=loss", 400),
        ("run=PD-1&format=xml", 400),
        ("run=PD-1&stitched=maybe", 400),
    ] {
        let resp = get(query).await.unwrap();
        assert_eq!(resp.status(), status, "{query}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(body["error"].is_string(), "{query}: {body}");
    }
}

#[tokio::test]
async fn cli_export_writes_files_and_store_urls() {
    let (dir, store) = fixture().await;
    let expected = {
        let engine = Engine::open(&store).await.unwrap();
        common::rows(
            &engine,
            "SELECT * FROM family_metrics('PD-1', 'loss') ORDER BY run_id, metric, step",
        )
        .await
        .unwrap()
    };
    let out = dir.path().join("exports/family.parquet");
    let (ok, stdout, stderr) = common::cli(
        &store,
        &[
            "export",
            "PD-3",
            "--family",
            "--metrics",
            "loss",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("exported {} row(s)", expected.len())),
        "{stdout}"
    );
    assert_eq!(parquet_rows(&out), expected);

    // The same through an object-store URL.
    let url = format!("file://{}/via-url/family.parquet", dir.path().display());
    std::fs::create_dir_all(dir.path().join("via-url")).unwrap();
    let (ok, _, stderr) = common::cli(
        &store,
        &[
            "export",
            "PD-3",
            "--family",
            "--metrics",
            "loss",
            "-o",
            &url,
        ],
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        parquet_rows(&dir.path().join("via-url/family.parquet")),
        expected
    );

    // CSV of one run's own points.
    let csv = dir.path().join("own.csv");
    let (ok, _, stderr) = common::cli(
        &store,
        &[
            "export",
            "PD-2",
            "--no-stitch",
            "--format",
            "csv",
            "-o",
            csv.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("run_id,metric,step,value,time\n"),
        "{text}"
    );

    // Errors are one line and write nothing.
    let missing = dir.path().join("missing.parquet");
    let (ok, _, stderr) = common::cli(
        &store,
        &["export", "PD-42", "-o", missing.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(stderr.contains("unknown run"), "{stderr}");
    assert!(!missing.exists(), "a failed export leaves no file");
}

#[tokio::test]
async fn a_project_key_sees_only_its_project_in_sql_and_exports() {
    let (_dir, store) = fixture().await;
    let other = {
        let engine = Engine::open(&store).await.unwrap();
        let run = engine
            .create_run(forkline::catalog::NewRun {
                project: "other".into(),
                name: "x".into(),
                config: Default::default(),
                tags: vec![],
                external_id: None,
            })
            .await
            .unwrap();
        let points = (0..5)
            .map(|s| forkline::ingest::MetricPoint::new("loss", s, s as f64))
            .collect();
        engine.write_points(&run.display_id, points).await.unwrap();
        run
    };
    let (ok, key, err) = common::cli(&store, &["keys", "create", "--project", "other"]);
    assert!(ok, "{err}");
    let server = spawn_server_with(&store, &[]);
    let client = reqwest::Client::new();
    let auth = format!("Bearer {}", key.trim());
    let sql = |q: &str| {
        client
            .post(format!("{}/api/sql", server.base))
            .header("authorization", &auth)
            .json(&serde_json::json!({ "sql": q }))
            .send()
    };
    let rows: serde_json::Value = sql("SELECT DISTINCT project FROM runs")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rows, serde_json::json!([{"project": "other"}]));
    for table in ["metrics", "metric_writes"] {
        let rows: serde_json::Value = sql(&format!(
            "SELECT count(*) AS n, max(run_id) AS r FROM {table}"
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(
            rows,
            serde_json::json!([{"n": 5, "r": other.id}]),
            "{table}"
        );
    }
    let resp = sql("SELECT * FROM stitched_metrics('PD-3')").await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("unknown run"),
        "{body}"
    );
    let resp = client
        .get(format!("{}/api/export?run=PD-3", server.base))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client
        .get(format!(
            "{}/api/export?run={}&format=csv",
            server.base, other.display_id
        ))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap().lines().count(), 6);
}

#[tokio::test]
async fn csv_writes_nested_values_as_text_and_a_header_for_empty_results() {
    let (_dir, store) = fixture().await;
    let (ok, out, err) = common::cli(
        &store,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT display_id, tags FROM runs WHERE display_id = 'PD-1'",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "display_id,tags\nPD-1,[base]\n");
    let (ok, out, err) = common::cli(
        &store,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT run_id, step FROM metrics WHERE false",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "run_id,step\n");
}
