//! Maintenance on real stores with the real binary: `check` finds every
//! referenced file (and names a missing one), `vacuum` deletes exactly the
//! files compaction replaced without changing any answer, and
//! `serve --read-only` refuses every write and changes nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{
    cli, delete_object, list_objects, object_size, product_docs, read_object, spawn_server_with,
    temp_store, truncate_object, write_object,
};
use forkline::Engine;
use forkline::store::{TableFiles, TableKind};
use serde_json::{Value, json};

/// The Parquet files of a table (the Delta log left out), by path relative to
/// the table directory, with their sizes.
fn parquet_files(store: &str, table: &str) -> BTreeMap<String, u64> {
    list_objects(store, table)
        .into_iter()
        .filter(|(f, _)| f.ends_with(".parquet"))
        .map(|(f, meta)| (f, meta.size))
        .collect()
}

/// The names of a table's Parquet files.
fn parquet_names(store: &str, table: &str) -> BTreeSet<String> {
    parquet_files(store, table).into_keys().collect()
}

/// The current snapshot's files of a table, as a fresh process sees them.
async fn snapshot(store: &str, kind: TableKind) -> std::sync::Arc<TableFiles> {
    let engine = Engine::open(store).await.unwrap();
    engine.store().refresh(kind).await.unwrap();
    engine.store().files(kind).await.unwrap()
}

/// The product-docs lineage, then more writes, so the metrics table has many small files.
async fn build(store: &str) -> (String, String) {
    let engine = Engine::open(store).await.unwrap();
    let docs = product_docs(&engine).await.unwrap();
    engine
        .write_points(
            &docs.a.display_id,
            vec![forkline::ingest::MetricPoint::new("loss", 7, 70.0)],
        )
        .await
        .unwrap();
    (docs.b.display_id.clone(), docs.c.display_id.clone())
}

fn sql_csv(store: &str, query: &str) -> String {
    let (ok, out, err) = cli(store, &["sql", query, "--format", "csv"]);
    assert!(ok, "{query}: {err}");
    out
}

fn line<'a>(out: &'a str, table: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(table))
        .unwrap_or_else(|| panic!("no {table} line in {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_counts_files_and_names_a_missing_one() {
    let (_dir, store) = temp_store();
    build(&store).await;
    let files = snapshot(&store, TableKind::Metrics).await;
    assert!(files.files.len() > 3, "{:?}", files.files);
    let points: u64 = sql_csv(&store, "SELECT count(*) AS n FROM metric_writes")
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let bytes: u64 = files.files.iter().map(|f| f.size).sum();
    // The Delta file list is what is on disk: nothing more, nothing less.
    let listed: BTreeSet<String> = files.files.iter().map(|f| f.relative.clone()).collect();
    assert_eq!(listed, parquet_names(&store, "metrics"));

    let (ok, out, err) = cli(&store, &["check"]);
    assert!(ok, "{out}{err}");
    let metrics = line(&out, "metrics");
    let expected = format!(
        "{} file(s), {bytes} byte(s), {points} points, ok",
        files.files.len()
    );
    assert!(metrics.ends_with(&expected), "{metrics} vs {expected}");
    for table in ["runs", "logs", "data", "keys", "files"] {
        assert!(line(&out, table).ends_with(" ok"), "{out}");
    }

    // The library gives the same report.
    let engine = Engine::open(&store).await.unwrap();
    let report = forkline::maintenance::check(engine.store()).await.unwrap();
    assert!(report.ok());
    let table = report.table(TableKind::Metrics).unwrap();
    assert_eq!(
        (table.files, table.bytes, table.rows),
        (files.files.len(), bytes, points)
    );

    // One referenced file gone: non-zero exit naming it.
    let victim = &files.files[1];
    delete_object(&store, &format!("metrics/{}", victim.relative));
    let (ok, out, err) = cli(&store, &["check"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("missing file") && err.contains(&victim.relative),
        "{err}"
    );
    assert!(line(&out, "metrics").contains("1 problem(s)"), "{out}");
    assert!(line(&out, "runs").ends_with(" ok"), "{out}");
    // Exactly one file is named.
    let named = files
        .files
        .iter()
        .filter(|f| err.contains(&f.relative))
        .count();
    assert_eq!(named, 1, "{err}");

    // A truncated file is unreadable, and named too.
    let other = &files.files[0];
    truncate_object(
        &store,
        &format!("metrics/{}", other.relative),
        other.size as usize / 2,
    );
    let (ok, _, err) = cli(&store, &["check"]);
    assert!(!ok);
    assert!(
        err.contains("unreadable file") && err.contains(&other.relative),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_removes_exactly_the_replaced_files() {
    let (_dir, store) = temp_store();
    let (b, c) = build(&store).await;
    let queries = [
        "SELECT * FROM metrics ORDER BY run_id, metric, step".to_string(),
        "SELECT run_id, metric, step, value FROM metric_writes ORDER BY 1, 2, 3, 4".into(),
        format!("SELECT * FROM stitched_metrics('{c}') ORDER BY metric, step"),
        format!("SELECT * FROM stitched_metrics('{b}', 'loss') ORDER BY step"),
        "SELECT id, display_id, parent_id, fork_step FROM runs ORDER BY id".into(),
    ];
    let answers =
        |store: &str| -> Vec<String> { queries.iter().map(|q| sql_csv(store, q)).collect() };
    let before = answers(&store);
    let ingest_files = parquet_names(&store, "metrics");

    let (ok, out, err) = cli(&store, &["compact"]);
    assert!(ok, "{out}{err}");
    let compacted = parquet_files(&store, "metrics");
    let compacted_names: BTreeSet<String> = compacted.keys().cloned().collect();
    let referenced: BTreeSet<String> = snapshot(&store, TableKind::Metrics)
        .await
        .files
        .iter()
        .map(|f| f.relative.clone())
        .collect();
    // Compaction replaced every ingest file and left them on disk.
    assert!(referenced.is_disjoint(&ingest_files));
    let unreferenced: BTreeSet<String> = compacted_names.difference(&referenced).cloned().collect();
    assert_eq!(unreferenced, ingest_files);
    let unreferenced_bytes: u64 = unreferenced.iter().map(|f| compacted[f]).sum();

    // A dry run lists them and deletes nothing; the default retention keeps them.
    let (ok, out, err) = cli(&store, &["vacuum", "--retention-hours", "0", "--dry-run"]);
    assert!(ok, "{err}");
    assert_eq!(
        line(&out, "metrics"),
        format!(
            "metrics  would remove {} file(s), {unreferenced_bytes} byte(s)",
            unreferenced.len()
        )
    );
    assert_eq!(parquet_names(&store, "metrics"), compacted_names);
    let (ok, out, err) = cli(&store, &["vacuum"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("total    removed 0 file(s), 0 byte(s)"),
        "{out}"
    );
    assert_eq!(parquet_names(&store, "metrics"), compacted_names);

    // With no retention, exactly the unreferenced files go.
    let (ok, out, err) = cli(&store, &["vacuum", "--retention-hours", "0"]);
    assert!(ok, "{err}");
    assert_eq!(
        line(&out, "metrics"),
        format!(
            "metrics  removed {} file(s), {unreferenced_bytes} byte(s)",
            unreferenced.len()
        )
    );
    assert_eq!(parquet_names(&store, "metrics"), referenced);
    let (ok, out, err) = cli(&store, &["check"]);
    assert!(ok, "{out}{err}");
    assert_eq!(answers(&store), before);

    // Again: nothing left to remove (the tombstones' files are gone already).
    let (ok, out, _) = cli(&store, &["vacuum", "--retention-hours", "0"]);
    assert!(ok && out.contains("total    removed 0 file(s)"), "{out}");

    // A file no commit references is left alone unless --orphans is given.
    let stray = "metrics/stray.parquet";
    write_object(&store, stray, b"not parquet");
    let (ok, _, _) = cli(&store, &["vacuum", "--retention-hours", "0"]);
    assert!(ok && object_size(&store, stray) == Some(11));
    let (ok, out, err) = cli(&store, &["vacuum", "--retention-hours", "0", "--orphans"]);
    assert!(ok, "{err}");
    assert_eq!(object_size(&store, stray), None, "{out}");
    assert_eq!(
        line(&out, "metrics"),
        "metrics  removed 1 file(s), 11 byte(s)"
    );
    assert_eq!(parquet_names(&store, "metrics"), referenced);
    let (ok, out, err) = cli(&store, &["check"]);
    assert!(ok, "{out}{err}");
    assert_eq!(answers(&store), before);
}

/// A request to a write route: path, headers, body.
type Write<'a> = (&'a str, Vec<(&'a str, &'a str)>, String);

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
        (status, body)
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: String) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{path}", self.base)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    async fn sql(&self, query: &str) -> (u16, Value) {
        self.post(
            "/api/sql",
            &[("content-type", "application/json")],
            json!({ "sql": query }).to_string(),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_server_refuses_writes_and_answers_reads() {
    let (_dir, store) = temp_store();
    build(&store).await;
    let run = "1";

    // An uploaded file, through a writable server: its bytes live under files/
    // and no vacuum may take them.
    let blob = {
        let server = spawn_server_with(&store, &["--compact-every-s", "0"]);
        let api = Api {
            base: server.base.clone(),
            client: reqwest::Client::new(),
        };
        let spec = json!({"files": [{"fileName": "notes.txt", "fileSize": 3, "logName": "doc"}]});
        let (status, urls) = api
            .post("/files", &[("x-run-id", run)], spec.to_string())
            .await;
        assert_eq!(status, 200, "{urls}");
        let url = urls["doc"][0]["notes.txt"].as_str().unwrap().to_string();
        let put = api.client.put(url).body("abc").send().await.unwrap();
        assert_eq!(put.status().as_u16(), 200);
        format!("files/{run}/notes.txt")
    };
    assert_eq!(read_object(&store, &blob), b"abc");
    let (ok, _, err) = cli(&store, &["vacuum", "--retention-hours", "0", "--orphans"]);
    assert!(ok, "{err}");
    assert_eq!(
        object_size(&store, &blob),
        Some(3),
        "vacuum deleted an uploaded file"
    );
    let (ok, out, err) = cli(&store, &["check"]);
    assert!(
        ok && line(&out, "files").contains("1 file(s)"),
        "{out}{err}"
    );

    let everything = list_objects(&store, "");
    // Compaction would be due at once if it ran: it must not.
    let server = spawn_server_with(
        &store,
        &[
            "--read-only",
            "--compact-every-s",
            "1",
            "--compact-min-files",
            "1",
        ],
    );
    let api = Api {
        base: server.base.clone(),
        client: reqwest::Client::new(),
    };
    let (status, rows) = api.sql("SELECT count(*) AS n FROM metric_writes").await;
    assert_eq!(status, 200, "{rows}");
    let points = rows[0]["n"].as_i64().unwrap();
    assert!(points > 0);

    let json_ct = ("content-type", "application/json");
    let writes: Vec<Write> = vec![
        (
            "/api/runs/create",
            vec![json_ct],
            json!({"runName": "r", "projectName": "product-docs"}).to_string(),
        ),
        (
            "/api/runs/create",
            vec![json_ct],
            json!({"runName": "f", "projectName": "product-docs", "forkRunId": 1, "forkStep": 10})
                .to_string(),
        ),
        (
            "/ingest/metrics",
            vec![("x-run-id", run), ("content-type", "application/x-ndjson")],
            "{\"time\": 1700000000000, \"step\": 300, \"data\": {\"loss\": 1.0}}\n".into(),
        ),
        (
            "/ingest/logs",
            vec![("x-run-id", run)],
            "{\"time\": 1700000000000, \"message\": \"hi\"}\n".into(),
        ),
        (
            "/api/runs/status/update",
            vec![json_ct],
            json!({"runId": 1, "status": "COMPLETED"}).to_string(),
        ),
        (
            "/api/runs/tags/update",
            vec![json_ct],
            json!({"runId": 1, "tags": ["x"]}).to_string(),
        ),
        (
            "/api/runs/config/update",
            vec![json_ct],
            json!({"runId": 1, "config": {"lr": 1}}).to_string(),
        ),
        (
            "/files",
            vec![("x-run-id", run)],
            json!({"files": [{"fileName": "b.txt", "logName": "doc"}]}).to_string(),
        ),
    ];
    for (path, headers, body) in writes {
        let (status, reply) = api.post(path, &headers, body).await;
        assert_eq!(status, 403, "{path}: {reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(error.contains("read-only"), "{path}: {reply}");
    }
    let (status, reply) = api
        .send(
            api.client
                .put(format!("{}/files/upload/{run}/c.txt", api.base))
                .body("abc"),
        )
        .await;
    assert_eq!(status, 403, "{reply}");

    // Reads work: SQL, the SDK's read API, exports.
    let (status, rows) = api
        .sql("SELECT count(*) AS n FROM stitched_metrics('3')")
        .await;
    assert_eq!(status, 200, "{rows}");
    assert!(rows[0]["n"].as_i64().unwrap() > 0);
    let (status, projects) = api
        .send(api.client.get(format!("{}/api/runs/projects", api.base)))
        .await;
    assert_eq!(status, 200, "{projects}");
    let export = api
        .client
        .get(format!("{}/api/export?run=1&format=csv", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status().as_u16(), 200);

    // Give a compaction the chance it must not take; the store is byte for byte as it was.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (_, rows) = api.sql("SELECT count(*) AS n FROM metric_writes").await;
    assert_eq!(rows[0]["n"].as_i64().unwrap(), points);
    drop(server);
    assert_eq!(list_objects(&store, ""), everything);
}
