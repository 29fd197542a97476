//! Observability of a real `forkline serve`: `GET /metrics` after a known
//! workload (counted by value, parsed by a Prometheus text parser), who may
//! scrape it, and the `system` tables with their key scoping, over HTTP and
//! Flight SQL.

mod common;

use std::time::Duration;

use common::{Server, spawn_server_with, temp_store};
use prometheus_parse::{Scrape, Value as Sample};
use serde_json::{Value, json};

/// A client that sends `key` (when given) as the bearer token.
struct Client {
    base: String,
    key: Option<String>,
}

impl Client {
    fn of(server: &Server, key: Option<&str>) -> Self {
        Self {
            base: server.base.clone(),
            key: key.map(str::to_string),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, String) {
        let request = match &self.key {
            Some(key) => request.header("authorization", format!("Bearer {key}")),
            None => request,
        };
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: String) -> (u16, String) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.send(request).await
    }

    async fn get(&self, path: &str) -> (u16, String) {
        self.send(reqwest::Client::new().get(format!("{}{path}", self.base)))
            .await
    }

    async fn create_run(&self, project: &str, name: &str) -> u64 {
        let body = json!({"runName": name, "projectName": project}).to_string();
        let (status, text) = self.post("/api/runs/create", &[], body).await;
        assert_eq!(status, 200, "{text}");
        let run: Value = serde_json::from_str(&text).unwrap();
        run["runId"].as_u64().unwrap()
    }

    async fn ingest(&self, kind: &str, run: u64, body: &str) {
        let id = run.to_string();
        let (status, text) = self
            .post(
                &format!("/ingest/{kind}"),
                &[("x-run-id", &id)],
                body.into(),
            )
            .await;
        assert_eq!(status, 200, "{kind}: {text}");
    }

    /// Rows of `sql` as JSON objects; panics unless it answers 200.
    async fn sql(&self, sql: &str) -> Vec<Value> {
        let (status, text) = self.sql_status(sql).await;
        assert_eq!(status, 200, "{sql}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    async fn sql_status(&self, sql: &str) -> (u16, String) {
        let request = reqwest::Client::new()
            .post(format!("{}/api/sql", self.base))
            .header("accept", "application/json")
            .json(&json!({ "sql": sql }));
        self.send(request).await
    }
}

fn key(store: &str, args: &[&str]) -> String {
    let mut all = vec!["keys", "create"];
    all.extend_from_slice(args);
    let (ok, out, err) = common::cli(store, &all);
    assert!(ok, "{err}");
    out.trim().to_string()
}

/// `steps` metric lines of one value each, and their body.
fn metric_lines(first: u64, steps: u64) -> String {
    (first..first + steps)
        .map(|s| {
            format!("{{\"time\": 1700000000000, \"step\": {s}, \"data\": {{\"loss\": {s}}}}}\n")
        })
        .collect()
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

/// The value of the sample `name` whose labels include `labels` (0 when absent,
/// as Prometheus reads a counter never incremented). A histogram reads as
/// its count (the `+Inf` bucket).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
            Sample::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(0.0, |b| b.count),
            Sample::Summary(_) => panic!("{name} is a summary, not a histogram"),
        })
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
    found.first().copied().unwrap_or(0.0)
}

async fn scrape(client: &Client) -> Scrape {
    let (status, text) = client.get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    parse(&text)
}

/// N ingest requests, M queries, one compaction: each counter is what the
/// workload did, read from the scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload() {
    const N: u64 = 4;
    const STEPS: u64 = 25;
    let (_dir, store) = temp_store();
    // Compaction is due once all N ingest files exist, so it runs exactly once.
    let server = spawn_server_with(
        &store,
        &[
            "--compact-every-s",
            "1",
            "--compact-min-files",
            &N.to_string(),
        ],
    );
    let client = Client::of(&server, None);
    let run = client.create_run("obs", "workload").await;
    let mut metric_bytes = 0;
    for i in 0..N {
        let body = metric_lines(i * STEPS, STEPS);
        metric_bytes += body.len();
        // Sequential: each request is its own group commit.
        client.ingest("metrics", run, &body).await;
    }
    let logs = "{\"time\": 1700000000000, \"message\": \"a\"}\n{\"time\": 1700000000001, \"message\": \"b\"}\n";
    client.ingest("logs", run, logs).await;
    // Wait for the compaction: the metrics table gets its swap commit.
    let mut compacted = false;
    for _ in 0..100 {
        let s = scrape(&client).await;
        if value(&s, "forkline_compactions_total", &[("table", "metrics")]) >= 1.0 {
            compacted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(compacted, "no compaction within 10 s");

    let all = client.sql("SELECT * FROM metrics").await;
    assert_eq!(all.len() as u64, N * STEPS);
    let count = client.sql("SELECT count(*) AS n FROM logs").await;
    assert_eq!(count[0]["n"], json!(2));
    let (status, _) = client.sql_status("SELECT nope FROM metrics").await;
    assert_eq!(status, 400);

    let s = scrape(&client).await;
    let m = [("kind", "metrics")];
    assert_eq!(value(&s, "forkline_ingest_requests_total", &m), N as f64);
    assert_eq!(
        value(&s, "forkline_ingest_rows_total", &m),
        (N * STEPS) as f64
    );
    assert_eq!(
        value(&s, "forkline_ingest_bytes_total", &m),
        metric_bytes as f64
    );
    let l = [("kind", "logs")];
    assert_eq!(value(&s, "forkline_ingest_requests_total", &l), 1.0);
    assert_eq!(value(&s, "forkline_ingest_rows_total", &l), 2.0);
    assert_eq!(
        value(&s, "forkline_ingest_bytes_total", &l),
        logs.len() as f64
    );
    assert_eq!(value(&s, "forkline_group_commit_requests", &[]), N as f64);
    assert_eq!(value(&s, "forkline_group_commit_points", &[]), N as f64);
    assert_eq!(value(&s, "forkline_group_commit_seconds", &[]), N as f64);

    let http_ok = [("interface", "http"), ("outcome", "ok")];
    assert_eq!(value(&s, "forkline_queries_total", &http_ok), 2.0);
    let http_bad = [("interface", "http"), ("outcome", "invalid_input")];
    assert_eq!(value(&s, "forkline_queries_total", &http_bad), 1.0);
    assert_eq!(value(&s, "forkline_query_duration_seconds", &http_ok), 2.0);
    assert_eq!(
        value(&s, "forkline_query_rows_total", &[("interface", "http")]),
        (N * STEPS + 1) as f64
    );
    assert!(value(&s, "forkline_query_bytes_total", &[("interface", "http")]) > 0.0);

    let t = [("table", "metrics")];
    assert_eq!(
        value(
            &s,
            "forkline_compactions_total",
            &[("table", "metrics"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        value(&s, "forkline_compaction_files_in_total", &t),
        N as f64
    );
    assert_eq!(value(&s, "forkline_compaction_files_out_total", &t), 1.0);
    let sizes: u64 = common::list_objects(&store, "metrics")
        .iter()
        .filter(|(path, _)| path.ends_with(".parquet") && !path.contains("compacted-"))
        .map(|(_, meta)| meta.size)
        .sum();
    assert_eq!(
        value(&s, "forkline_compaction_bytes_in_total", &t),
        sizes as f64
    );
    assert!(value(&s, "forkline_compaction_bytes_out_total", &t) > 0.0);
    assert_eq!(value(&s, "forkline_compaction_duration_seconds", &t), 1.0);

    // Versions: created at 0, N appends, one compaction.
    assert_eq!(
        value(&s, "forkline_table_version", &[("table", "metrics")]),
        (N + 1) as f64
    );
    assert_eq!(value(&s, "forkline_runs", &[("status", "RUNNING")]), 1.0);
    let created = [("source", "create"), ("status", "RUNNING")];
    assert_eq!(
        value(&s, "forkline_run_status_changes_total", &created),
        1.0
    );
    assert!(value(&s, "forkline_query_memory_limit_bytes", &[]) > 0.0);
    assert_eq!(
        value(&s, "forkline_catalog_commit_conflicts_total", &[]),
        0.0
    );
    // One catalog commit so far: the run's creation.
    assert_eq!(value(&s, "forkline_catalog_commit_mutations", &[]), 1.0);
    assert_eq!(
        value(&s, "forkline_http_errors_total", &[("status", "400")]),
        1.0
    );

    // The same compaction in `system.compactions`.
    let rows = client
        .sql("SELECT \"table\", files_in, files_out, rows, error FROM system.compactions")
        .await;
    assert_eq!(
        rows,
        vec![
            json!({"table": "metrics", "files_in": N, "files_out": 1, "rows": N * STEPS, "error": null})
        ]
    );
}

/// Serves on every address (so not loopback only), with keys.
fn spawn_public(store: &str) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = common::forkline_command()
        .args(["--store", store, "serve", "--listen", "0.0.0.0:0"])
        .args(["--flight-listen", "off"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().rsplit(':').next().unwrap().to_string();
    (child, format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_key_off_loopback() {
    let (_dir, store) = temp_store();
    let read_only = key(&store, &["--project", "p", "--read-only"]);
    let (mut child, base) = spawn_public(&store);
    let get = |key: Option<String>| {
        let base = base.clone();
        async move {
            let mut request = reqwest::Client::new().get(format!("{base}/metrics"));
            if let Some(key) = key {
                request = request.header("authorization", format!("Bearer {key}"));
            }
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, _) = get(None).await;
    assert_eq!(status, 401);
    let (status, _) = get(Some(format!("fk_{}", "0".repeat(49)))).await;
    assert_eq!(status, 401);
    let (status, text) = get(Some(read_only)).await;
    assert_eq!(status, 200, "{text}");
    parse(&text);
    assert!(text.contains("forkline_table_version"), "{text}");
    let _ = child.kill();
    let _ = child.wait();
}

/// What a key of one project reads in the system tables: its own queries,
/// files and commits, nothing of the other project; a key of every project
/// reads everything. Flight queries are recorded as `flight`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_tables_are_scoped_by_key() {
    let (_dir, store) = temp_store();
    let alpha_key = key(&store, &["--project", "alpha"]);
    let beta_key = key(&store, &["--project", "beta"]);
    let all_key = key(&store, &[]);
    // Compaction is due at the 4th metrics file, which comes last.
    let server = spawn_server_with(
        &store,
        &["--compact-every-s", "1", "--compact-min-files", "4"],
    );
    let alpha = Client::of(&server, Some(&alpha_key));
    let beta = Client::of(&server, Some(&beta_key));
    let all = Client::of(&server, Some(&all_key));
    let a = alpha.create_run("alpha", "a").await;
    let b = beta.create_run("beta", "b").await;
    alpha.ingest("metrics", a, &metric_lines(0, 10)).await;
    beta.ingest("metrics", b, &metric_lines(0, 7)).await;
    beta.ingest("metrics", b, &metric_lines(7, 3)).await;
    beta.ingest("logs", b, "{\"time\": 1700000000000, \"message\": \"m\"}\n")
        .await;

    alpha.sql("SELECT 'alpha-secret-sql' AS s").await;
    beta.sql("SELECT 'beta-secret-sql' AS s").await;
    let (status, _) = beta.sql_status("SELECT 'beta-bad-sql' FROM nowhere").await;
    assert_eq!(status, 400);
    flight_query(
        server.flight.as_deref().unwrap(),
        &beta_key,
        "SELECT 'beta-flight-sql'",
    )
    .await;

    // system.queries: each key its own scope's queries.
    let texts = |rows: Vec<Value>| -> Vec<String> {
        rows.iter()
            .map(|r| r["sql"].as_str().unwrap().to_string())
            .collect()
    };
    let seen_by_alpha = texts(alpha.sql("SELECT sql FROM system.queries").await);
    assert!(
        seen_by_alpha.iter().any(|s| s.contains("alpha-secret-sql")),
        "{seen_by_alpha:?}"
    );
    assert!(
        !seen_by_alpha.iter().any(|s| s.contains("beta")),
        "{seen_by_alpha:?}"
    );
    let beta_rows = beta
        .sql(
            "SELECT interface, outcome, rows, error, sql, scope FROM system.queries \
             WHERE sql LIKE '%beta-%' AND sql NOT LIKE '%system.queries%' ORDER BY start",
        )
        .await;
    assert_eq!(beta_rows.len(), 3, "{beta_rows:?}");
    assert_eq!(beta_rows[0]["interface"], "http");
    assert_eq!(beta_rows[0]["outcome"], "ok");
    assert_eq!(beta_rows[0]["rows"], 1);
    assert_eq!(beta_rows[0]["scope"], "beta");
    assert_eq!(beta_rows[1]["outcome"], "invalid_input");
    assert!(
        beta_rows[1]["error"].as_str().unwrap().contains("nowhere"),
        "{beta_rows:?}"
    );
    assert_eq!(beta_rows[2]["interface"], "flight");
    assert_eq!(beta_rows[2]["outcome"], "ok");
    assert_eq!(beta_rows[2]["rows"], 1);
    assert!(
        !texts(beta.sql("SELECT sql FROM system.queries").await)
            .iter()
            .any(|s| s.contains("alpha"))
    );
    let seen_by_all = texts(all.sql("SELECT sql FROM system.queries").await);
    for q in ["alpha-secret-sql", "beta-secret-sql", "beta-flight-sql"] {
        assert!(
            seen_by_all.iter().any(|s| s.contains(q)),
            "{q} not in {seen_by_all:?}"
        );
    }

    // system.files: a scoped key sees only files of its own runs.
    let files = |rows: Vec<Value>| -> Vec<(String, i64, i64)> {
        rows.iter()
            .map(|r| {
                (
                    r["table"].as_str().unwrap().to_string(),
                    r["run_id_min"].as_i64().unwrap_or(-1),
                    r["run_id_max"].as_i64().unwrap_or(-1),
                )
            })
            .collect()
    };
    let sql = "SELECT \"table\", run_id_min, run_id_max, rows, written_by FROM system.files \
               ORDER BY \"table\", rows";
    let beta_files = beta.sql(sql).await;
    let b = b as i64;
    assert_eq!(
        files(beta_files.clone()),
        vec![
            ("logs".into(), b, b),
            ("metrics".into(), b, b),
            ("metrics".into(), b, b)
        ]
    );
    assert_eq!(beta_files[1]["rows"], 3);
    assert_eq!(beta_files[2]["rows"], 7);
    assert_eq!(beta_files[2]["written_by"], "ingest");
    let all_files = files(all.sql(sql).await);
    assert!(
        all_files.contains(&("metrics".into(), a as i64, a as i64)),
        "{all_files:?}"
    );
    assert!(all_files.iter().any(|f| f.0 == "runs"), "{all_files:?}");
    let in_store: usize = common::list_objects(&store, "metrics")
        .keys()
        .filter(|p| p.ends_with(".parquet"))
        .count();
    assert_eq!(
        all_files.iter().filter(|f| f.0 == "metrics").count(),
        in_store
    );

    // system.commits: a scoped key sees the commits that added only its data.
    let sql = "SELECT \"table\", version, operation, files_added, files_removed, rows_added \
               FROM system.commits ORDER BY \"table\", version";
    let beta_commits = beta.sql(sql).await;
    let summary: Vec<(String, i64)> = beta_commits
        .iter()
        .map(|c| {
            (
                c["table"].as_str().unwrap().into(),
                c["rows_added"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("logs".into(), 1),
            ("metrics".into(), 7),
            ("metrics".into(), 3)
        ]
    );
    assert_eq!(beta_commits[1]["operation"], "WRITE");
    let all_commits = all.sql(sql).await;
    let metrics_versions: Vec<i64> = all_commits
        .iter()
        .filter(|c| c["table"] == "metrics")
        .map(|c| c["version"].as_i64().unwrap())
        .collect();
    assert_eq!(metrics_versions, vec![0, 1, 2, 3]);
    assert!(
        all_commits
            .iter()
            .any(|c| c["table"] == "runs" && c["rows_added"] == 1)
    );

    // Compaction merges both projects' runs into one file: a key of one
    // project sees neither it nor the compaction.
    alpha.ingest("metrics", a, &metric_lines(10, 5)).await;
    let mut compactions = Vec::new();
    for _ in 0..100 {
        compactions = all
            .sql("SELECT files_in, files_out FROM system.compactions")
            .await;
        if !compactions.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(compactions, vec![json!({"files_in": 4, "files_out": 1})]);
    assert!(
        beta.sql("SELECT * FROM system.compactions")
            .await
            .is_empty()
    );
    let beta_metric_files = beta
        .sql("SELECT path FROM system.files WHERE \"table\" = 'metrics'")
        .await;
    assert!(beta_metric_files.is_empty(), "{beta_metric_files:?}");
    let merged = all
        .sql("SELECT run_id_min, run_id_max, written_by FROM system.files WHERE \"table\" = 'metrics'")
        .await;
    assert_eq!(
        merged,
        vec![json!({"run_id_min": a, "run_id_max": b, "written_by": "compaction"})]
    );
}

/// Runs `sql` over Flight SQL with `key`: one row comes back.
async fn flight_query(endpoint: &str, key: &str, sql: &str) {
    let batches = common::flight_batches(endpoint, Some(key), sql).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}
