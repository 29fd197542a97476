//! The documented ingest limits on the real server (and the catalog's on every
//! path): each refusal is a 4xx naming the limit, and nothing of it is stored.
//! Also: stray bytes are a clean 400, and null metric values are skipped.

mod common;

use common::{spawn_server_with, temp_store};
use forkline::Engine;
use forkline::catalog::{ForkRequest, NewRun, RunUpdate};
use forkline::ingest::MetricPoint;
use forkline::ingest::limits::{
    MAX_CONFIG_BYTES, MAX_DATA_LINE_BYTES, MAX_LINE_BYTES, MAX_METRIC_NAME, MAX_POINTS_PER_REQUEST,
    MAX_RUN_BODY_BYTES, MAX_TAGS,
};
use serde_json::{Map, Value, json};

struct Api {
    server: common::Server,
    client: reqwest::Client,
}

impl Api {
    async fn post(&self, path: &str, run: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.server.base))
            .header("x-run-id", run)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
        (status, value)
    }

    async fn sql(&self, sql: &str) -> Vec<Value> {
        let (status, rows) = self
            .post("/api/sql", "", json!({ "sql": sql }).to_string())
            .await;
        assert_eq!(status, 200, "{rows}");
        rows.as_array().unwrap().clone()
    }

    async fn count(&self, table: &str) -> i64 {
        self.sql(&format!("SELECT count(*) AS n FROM {table}"))
            .await[0]["n"]
            .as_i64()
            .unwrap()
    }
}

fn refused(reply: (u16, Value), needle: &str) {
    refused_with(400, reply, needle);
}

/// A request over a size limit (a config, a run request's body): 413.
fn too_large(reply: (u16, Value), needle: &str) {
    refused_with(413, reply, needle);
}

fn refused_with(status: u16, reply: (u16, Value), needle: &str) {
    assert_eq!(reply.0, status, "{}", reply.1);
    let msg = reply.1["error"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

fn config_of(bytes: usize) -> Map<String, Value> {
    // `{"blob":"…"}` is 11 bytes around the text.
    json!({ "blob": "x".repeat(bytes - 11) })
        .as_object()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn stray_bytes_null_values_and_line_limits_over_http() {
    let (_dir, store) = temp_store();
    let api = Api {
        server: spawn_server_with(&store, &["--commit-window-ms", "1"]),
        client: reqwest::Client::new(),
    };
    let (status, run) = api
        .post(
            "/api/runs/create",
            "",
            r#"{"projectName": "lim", "runName": "r"}"#,
        )
        .await;
    assert_eq!(status, 200, "{run}");
    let run = run["runId"].to_string();

    // A multi-byte character outside any string: a clean 400, on both parsers.
    refused(
        api.post("/ingest/metrics", &run, "{\"step\":5,\"data\":{\"a\":1}} é")
            .await,
        "line 1: invalid JSON",
    );
    refused(
        api.post("/api/runs/create", "", "{\"projectName\": \"lim\"} é")
            .await,
        "not valid JSON",
    );
    refused(
        api.post("/ingest/logs", &run, vec![0xff, 0xfe]).await,
        "not UTF-8",
    );

    // Null values are skipped; the line's other values are stored; a line left
    // with none is no error. Other non-numbers are refused with the line.
    let (status, reply) = api
        .post(
            "/ingest/metrics",
            &run,
            "{\"step\": 1, \"data\": {\"a\": null, \"b\": 2, \"c\": \"NaN\"}}\n{\"step\": 2, \"data\": {\"a\": null}}\n",
        )
        .await;
    assert_eq!(
        (status, reply["stored"].as_i64()),
        (200, Some(2)),
        "{reply}"
    );
    let stored = api
        .sql("SELECT metric, step FROM metrics ORDER BY metric")
        .await;
    assert_eq!(
        stored,
        vec![
            json!({"metric": "b", "step": 1}),
            json!({"metric": "c", "step": 1})
        ]
    );
    refused(
        api.post(
            "/ingest/metrics",
            &run,
            "{\"step\": 1, \"data\": {\"b\": 2}}\n{\"step\": 2, \"data\": {\"a\": \"high\"}}",
        )
        .await,
        "line 2: value of `a` is not a number",
    );
    refused(
        api.post(
            "/ingest/metrics",
            &run,
            "{\"step\": 1, \"data\": {\"b\": [1]}}",
        )
        .await,
        "line 1: value of `b` is not a number",
    );

    // Metric names up to the limit.
    let name = |n: usize| "m".repeat(n);
    let line = |n: usize| format!("{{\"step\": 3, \"data\": {{\"{}\": 1}}}}", name(n));
    let (status, reply) = api
        .post("/ingest/metrics", &run, line(MAX_METRIC_NAME))
        .await;
    assert_eq!(status, 200, "{reply}");
    refused(
        api.post(
            "/ingest/metrics",
            &run,
            format!("{}\n{}", line(1), line(MAX_METRIC_NAME + 1)),
        )
        .await,
        "line 2: metric name `mmm",
    );

    // Line sizes: refused before parsing, naming the line and the limit.
    let padded = |bytes: usize| {
        let head = "{\"message\": \"";
        format!("{head}{}\"}}", "x".repeat(bytes - head.len() - 2))
    };
    let (status, reply) = api.post("/ingest/logs", &run, padded(MAX_LINE_BYTES)).await;
    assert_eq!(status, 200, "{reply}");
    let before = api.count("logs").await;
    refused(
        api.post(
            "/ingest/logs",
            &run,
            format!("{}\n{}", padded(100), padded(MAX_LINE_BYTES + 1)),
        )
        .await,
        &format!(
            "line 2: {} bytes is over the limit of {MAX_LINE_BYTES} bytes per line (MAX_LINE_BYTES)",
            MAX_LINE_BYTES + 1
        ),
    );
    assert_eq!(api.count("logs").await, before);
    // Structured data may be larger than a metrics line, up to its own limit.
    let data = |bytes: usize| {
        let head = "{\"logName\": \"t\", \"dataType\": \"TEXT\", \"data\": \"";
        format!("{head}{}\"}}", "x".repeat(bytes - head.len() - 2))
    };
    let (status, reply) = api
        .post("/ingest/data", &run, data(2 * MAX_LINE_BYTES))
        .await;
    assert_eq!(status, 200, "{reply}");
    refused(
        api.post("/ingest/data", &run, data(MAX_DATA_LINE_BYTES + 1))
            .await,
        "MAX_DATA_LINE_BYTES",
    );
    assert_eq!(api.count("data").await, 1);
    let metrics = api.count("metric_writes").await;
    refused(
        api.post(
            "/ingest/metrics",
            &run,
            format!("{{\"data\": {{\"a\": 1}}}}\n{}", padded(MAX_LINE_BYTES + 1)),
        )
        .await,
        "MAX_LINE_BYTES",
    );
    assert_eq!(api.count("metric_writes").await, metrics);
    // Values per request: lines of 10,000 metrics, one line too many.
    let wide: String = (0..10_000)
        .map(|i| format!("\"m{i}\": 1"))
        .collect::<Vec<_>>()
        .join(", ");
    let lines = MAX_POINTS_PER_REQUEST / 10_000 + 1;
    let body: String = (0..lines)
        .map(|s| format!("{{\"step\": {s}, \"data\": {{{wide}}}}}\n"))
        .collect();
    refused(
        api.post("/ingest/metrics", &run, body).await,
        &format!(
            "line {lines}: the request holds more than {MAX_POINTS_PER_REQUEST} metric values"
        ),
    );
    assert_eq!(api.count("metric_writes").await, metrics);
}

#[tokio::test]
async fn config_and_tag_limits_over_http() {
    let (_dir, store) = temp_store();
    let api = Api {
        server: spawn_server_with(&store, &["--commit-window-ms", "1"]),
        client: reqwest::Client::new(),
    };
    let create = |config: Value, extra: Value| {
        let mut body = json!({"projectName": "cfg", "runName": "r", "config": config});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body.to_string()
    };
    let (status, run) = api
        .post(
            "/api/runs/create",
            "",
            create(Value::Object(config_of(MAX_CONFIG_BYTES)), json!({})),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    let id = run["runId"].as_u64().unwrap();
    too_large(
        api.post(
            "/api/runs/create",
            "",
            create(Value::Object(config_of(MAX_CONFIG_BYTES + 1)), json!({})),
        )
        .await,
        "over the limit of 1048576 bytes",
    );
    // The SDK sends config as a string too.
    let as_text = Value::String(Value::Object(config_of(MAX_CONFIG_BYTES + 1)).to_string());
    too_large(
        api.post("/api/runs/create", "", create(as_text, json!({})))
            .await,
        "config",
    );
    // A merge that would pass the limit is refused and changes nothing.
    let commits = || common::commit_versions(&store, "runs").len();
    let before = commits();
    too_large(
        api.post(
            "/api/runs/config/update",
            "",
            json!({"runId": id, "config": {"more": "y"}}).to_string(),
        )
        .await,
        "over the limit",
    );
    assert_eq!(commits(), before, "a refused merge commits nothing");
    let (status, reply) = api
        .post(
            "/api/runs/config/update",
            "",
            json!({"runId": id, "config": {"blob": "short"}}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["config"], json!({"blob": "short"}));
    // Bodies beyond any config's room are refused before parsing.
    too_large(
        api.post("/api/runs/create", "", " ".repeat(MAX_RUN_BODY_BYTES + 1))
            .await,
        "over the limit of 4194304 bytes",
    );
    // Tags: count and length.
    let tags: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
    refused(
        api.post(
            "/api/runs/create",
            "",
            create(json!({}), json!({ "tags": tags })),
        )
        .await,
        &format!("at most {MAX_TAGS} tags"),
    );
    refused(
        api.post(
            "/api/runs/create",
            "",
            create(json!({}), json!({ "tags": ["x".repeat(513)] })),
        )
        .await,
        "longer than the limit of 512 bytes",
    );
    let (status, reply) = api
        .post(
            "/api/runs/tags/update",
            "",
            json!({"runId": id, "tags": tags}).to_string(),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(api.count("runs").await, 1);
}

/// The config limit lives in the catalog's planning, so the engine (CLI, fork)
/// obeys it too, and a fork whose inherited merge would pass it is refused.
#[tokio::test]
async fn config_limit_holds_for_forks_and_engine_updates() {
    let (_dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    let parent = engine
        .create_run(NewRun {
            project: "fork-cfg".into(),
            name: "p".into(),
            config: config_of(MAX_CONFIG_BYTES - 100),
            ..Default::default()
        })
        .await
        .unwrap();
    engine
        .write_points(&parent.display_id, vec![MetricPoint::new("loss", 5, 1.0)])
        .await
        .unwrap();
    let commits = || common::commit_versions(&store, "runs").len();
    let before = commits();
    let mut fork = ForkRequest::new(parent.display_id.clone(), 3);
    fork.config = json!({"extra": "z".repeat(200)})
        .as_object()
        .unwrap()
        .clone();
    let err = engine.fork_run(fork.clone()).await.unwrap_err().to_string();
    assert!(err.contains("over the limit"), "{err}");
    // Without inheritance the same fork fits.
    fork.inherit_config = false;
    engine.fork_run(fork).await.unwrap();
    let err = engine
        .update_run(
            &parent.display_id,
            RunUpdate::MergeConfig(
                json!({"extra": "z".repeat(200)})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("over the limit"), "{err}");
    // One commit: the fork that fit; neither refusal wrote anything.
    assert_eq!(commits(), before + 1);
    let err = engine
        .create_run(NewRun {
            project: "fork-cfg".into(),
            name: "big".into(),
            config: config_of(MAX_CONFIG_BYTES + 1),
            ..Default::default()
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("over the limit"), "{err}");
}
