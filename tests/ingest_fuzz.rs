//! Random and mutated bodies against the real server's write routes: every
//! answer is a 2xx or a 4xx with a JSON error, the server stays up, and a
//! refused request commits nothing (counts through SQL before and after).

mod common;

use common::{spawn_server_with, temp_store};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const ROUTES: [&str; 4] = [
    "/ingest/metrics",
    "/ingest/logs",
    "/ingest/data",
    "/api/runs/create",
];

/// Edge values: non-finite tokens, nulls, wrong types, out-of-range numbers.
fn edge() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<i64>().prop_map(|i| i.to_string()),
        prop::sample::select(vec![
            "NaN",
            "Infinity",
            "-Infinity",
            "\"NaN\"",
            "null",
            "true",
            "\"x\"",
            "[]",
            "{}",
            "1e300",
            "-1",
            "9.2e15",
            "18446744073709551616",
            "0.5",
        ])
        .prop_map(str::to_string),
    ]
}

/// Mostly what the SDK sends, sometimes an edge.
fn mostly(good: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    prop_oneof![12 => good, 1 => edge()].boxed()
}

fn time() -> BoxedStrategy<String> {
    mostly((0u64..7_258_118_399_999).prop_map(|ms| ms.to_string()))
}

fn step() -> BoxedStrategy<String> {
    mostly((0u64..10_000).prop_map(|s| s.to_string()))
}

fn number() -> BoxedStrategy<String> {
    mostly(any::<f32>().prop_map(|f| format!("{f:?}")))
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "[a-z/_]{1,12}",
        1 => Just(String::new()),
        1 => Just(" ".to_string()),
        1 => "\\PC{0,6}",
    ]
    .prop_map(|s| serde_json::to_string(&s).unwrap())
}

/// One line shaped like the route's, with random values.
fn line(route: usize) -> BoxedStrategy<String> {
    match route {
        0 => (time(), step(), prop::collection::vec((name(), number()), 0..5))
            .prop_map(|(t, s, data)| {
                let data: Vec<String> = data.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{\"time\": {t}, \"step\": {s}, \"data\": {{{}}}}}", data.join(", "))
            })
            .boxed(),
        1 => (time(), name(), step(), name())
            .prop_map(|(t, m, n, k)| {
                format!("{{\"time\": {t}, \"message\": {m}, \"lineNumber\": {n}, \"logType\": {k}}}")
            })
            .boxed(),
        2 => (time(), step(), name(), name(), number())
            .prop_map(|(t, s, l, d, v)| {
                format!("{{\"time\": {t}, \"step\": {s}, \"logName\": {l}, \"dataType\": {d}, \"data\": {v}}}")
            })
            .boxed(),
        _ => (name(), name(), number(), prop::collection::vec(name(), 0..3), prop::option::weighted(0.2, (step(), step())))
            .prop_map(|(p, r, c, tags, fork)| {
                let mut body = format!(
                    "{{\"projectName\": {p}, \"runName\": {r}, \"config\": {{\"lr\": {c}}}, \"tags\": [{}]",
                    tags.join(", ")
                );
                if let Some((run, step)) = fork {
                    body.push_str(&format!(", \"forkRunId\": {run}, \"forkStep\": {step}"));
                }
                body.push('}');
                body
            })
            .boxed(),
    }
}

/// A body for `route`: well-formed lines, mutated at one byte, or raw bytes.
fn body(route: usize) -> impl Strategy<Value = Vec<u8>> {
    // A run request is one JSON document, not lines.
    let most = if route == 3 { 1 } else { 4 };
    let lines =
        prop::collection::vec(line(route), 1..=most).prop_map(|l| l.join("\n").into_bytes());
    prop_oneof![
        5 => lines.clone(),
        2 => (lines, any::<prop::sample::Index>(), any::<u8>(), 0..3u8).prop_map(|(mut b, at, byte, edit)| {
            let at = at.index(b.len());
            match edit {
                0 => b.insert(at, byte),
                1 => b.truncate(at),
                _ => b[at] = byte,
            }
            b
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

struct Target {
    server: common::Server,
    client: reqwest::Client,
    run: String,
    /// Accepted and refused requests per route, so a generator that only
    /// ever produces refusals (or only acceptances) is noticed.
    outcomes: std::sync::Mutex<[[usize; 2]; 4]>,
}

impl Target {
    /// Rows of every table a write route adds to, in one query.
    async fn counts(&self) -> Vec<i64> {
        let sql = "SELECT (SELECT count(*) FROM metric_writes) AS m, (SELECT count(*) FROM logs) AS l, \
                   (SELECT count(*) FROM data) AS d, (SELECT count(*) FROM runs) AS r";
        let rows: Value = self
            .client
            .post(format!("{}/api/sql", self.server.base))
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ["m", "l", "d", "r"]
            .iter()
            .map(|k| rows[0][k].as_i64().unwrap())
            .collect()
    }

    async fn check(&self, route: usize, body: Vec<u8>) -> Result<(), TestCaseError> {
        let before = self.counts().await;
        let resp = self
            .client
            .post(format!("{}{}", self.server.base, ROUTES[route]))
            .header("x-run-id", &self.run)
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await
            .map_err(|e| TestCaseError::fail(format!("no answer (server down?): {e}")))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let reply: Value = serde_json::from_str(&text)
            .map_err(|_| TestCaseError::fail(format!("{status}: not JSON: {text}")))?;
        let after = self.counts().await;
        let shown = String::from_utf8_lossy(&body);
        if let Some(slot) = match status {
            200..=299 => Some(0),
            400..=499 => Some(1),
            _ => None,
        } {
            self.outcomes.lock().unwrap()[route][slot] += 1;
        }
        match status {
            200..=299 => {
                let added: Vec<i64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
                let stored = reply["stored"].as_i64();
                let want = match route {
                    0 => vec![stored.unwrap(), 0, 0, 0],
                    1 => vec![0, stored.unwrap(), 0, 0],
                    2 => vec![0, 0, stored.unwrap(), 0],
                    // A create adds one run, or resumes none.
                    _ => vec![0, 0, 0, added[3].clamp(0, 1)],
                };
                prop_assert_eq!(added, want, "{} {}: {}", ROUTES[route], shown, reply);
            }
            400..=499 => {
                prop_assert!(reply["error"].is_string(), "{}: {}", status, reply);
                prop_assert_eq!(
                    &after,
                    &before,
                    "refused but committed: {} {}",
                    ROUTES[route],
                    shown
                );
            }
            _ => {
                return Err(TestCaseError::fail(format!(
                    "{status} for {} {shown:?}: {reply}",
                    ROUTES[route]
                )));
            }
        }
        Ok(())
    }
}

#[test]
fn random_write_requests_get_2xx_or_4xx_and_refusals_commit_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_dir, store) = temp_store();
    let server = spawn_server_with(&store, &["--commit-window-ms", "1"]);
    let client = reqwest::Client::new();
    let run = runtime.block_on(async {
        let created: Value = client
            .post(format!("{}/api/runs/create", server.base))
            .json(&json!({"projectName": "fuzz", "runName": "target"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        created["runId"].as_u64().unwrap().to_string()
    });
    let target = Target {
        server,
        client,
        run,
        outcomes: Default::default(),
    };
    let mut runner = TestRunner::new(Config {
        cases: 160,
        failure_persistence: None,
        ..Config::default()
    });
    let cases = (0..ROUTES.len()).prop_flat_map(|r| (Just(r), body(r)));
    runner
        .run(&cases, |(route, body)| {
            runtime.block_on(target.check(route, body))
        })
        .unwrap();
    let health = runtime
        .block_on(reqwest::get(format!("{}/health", target.server.base)))
        .unwrap();
    assert_eq!(health.status(), 200);
    let outcomes = target.outcomes.lock().unwrap();
    eprintln!("[accepted, refused] per route {ROUTES:?}: {outcomes:?}");
    for (route, [accepted, refused]) in ROUTES.iter().zip(outcomes.iter()) {
        assert!(
            *accepted > 0 && *refused > 0,
            "{route}: {accepted} accepted, {refused} refused"
        );
    }
}
