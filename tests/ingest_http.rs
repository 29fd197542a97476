//! The SDK's ingest and lifecycle API on the real server: bad input is refused
//! whole with a clear 4xx, NaN tokens are values, and concurrent requests share commits.

mod common;

use common::{commit_versions, spawn_server_with, temp_store};
use serde_json::{Value, json};

struct Api {
    server: common::Server,
    client: reqwest::Client,
}

impl Api {
    async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.server.base))
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}")),
        )
    }

    async fn create(&self, body: Value) -> (u16, Value) {
        self.post(
            "/api/runs/create",
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    async fn ingest(&self, run: &str, project: &str, ndjson: &str) -> (u16, Value) {
        let headers = [
            ("x-run-id", run),
            ("x-project-name", project),
            ("content-type", "application/x-ndjson"),
        ];
        self.post("/ingest/metrics", &headers, ndjson.to_string())
            .await
    }

    async fn count(&self, run: &str) -> i64 {
        let (_, rows) = self
            .post(
                "/api/sql",
                &[("content-type", "application/json")],
                json!({"sql": format!("SELECT count(*) AS n FROM metrics WHERE run_id = {run}")})
                    .to_string(),
            )
            .await;
        rows[0]["n"].as_i64().unwrap()
    }
}

fn api(store: &str, extra: &[&str]) -> Api {
    Api {
        server: spawn_server_with(store, extra),
        client: reqwest::Client::new(),
    }
}

/// POSTs `body` to `path` on `base` for run `run` the way a client that
/// keeps sending would, and reads the answer while it sends.
///
/// The server answers a body past `--max-body-mb` once it has read that
/// much (413) and closes the connection with the rest unread, so the
/// client's next writes fail (the kernel resets the connection). reqwest
/// (hyper's client) then reports the failed write ("error writing a body to
/// connection: Broken pipe") instead of the answer it has already received,
/// whenever more of the body is left than the sockets' buffers hold: about
/// a third of the tries with 10 MB over a 1 MiB limit on loopback here, and
/// with less on a machine with smaller buffers or more load. Reading from
/// the start, on a socket of its own, gets the answer whatever the writes meet.
async fn post_while_reading(base: &str, path: &str, run: &str, body: String) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\nx-run-id: {run}\r\n\
         content-type: application/x-ndjson\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let sending = tokio::spawn(async move {
        // Fails once the server has closed; the answer is read regardless.
        let sent = writer.write_all(head.as_bytes()).await;
        sent.and(writer.write_all(body.as_bytes()).await)
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let complete = |answer: &[u8]| {
        let text = String::from_utf8_lossy(answer);
        let Some((head, rest)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        });
        length.is_some_and(|n| rest.len() >= n)
    };
    while !complete(&answer) {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "{e} after {} bytes of the answer ({:?})",
                answer.len(),
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    let _ = sending.await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer: {text:?}"));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let json = serde_json::from_str(rest).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, json)
}

fn expect_error(reply: (u16, Value), status: u16, needle: &str) {
    assert_eq!(reply.0, status, "{}", reply.1);
    let msg = reply.1["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {}", reply.1));
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

#[tokio::test]
async fn bad_ingest_is_refused_whole() {
    let (_dir, store) = temp_store();
    let api = api(&store, &["--max-body-mb", "1"]);
    let (status, run) = api
        .create(json!({"runName": "r", "projectName": "ingest-test"}))
        .await;
    assert_eq!(status, 200, "{run}");
    let id = run["runId"].as_u64().unwrap().to_string();
    let ok = "{\"time\": 1700000000000, \"step\": 0, \"data\": {\"loss\": 1.0}}\n";

    // Python's NaN / Infinity tokens are values.
    let (status, _) = api
        .ingest(&id, "ingest-test", "{\"time\": 1700000000000, \"step\": 1, \"data\": {\"a\": NaN, \"b\": -Infinity, \"c\": Infinity}}\n")
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.count(&id).await, 3);

    let bad_line = format!("{ok}{{\"time\": 1, \"step\": 2, \"data\": {{\"loss\": 1.0}}\n");
    expect_error(
        api.ingest(&id, "ingest-test", &bad_line).await,
        400,
        "line 2",
    );
    expect_error(
        api.ingest(
            &id,
            "ingest-test",
            &format!("{ok}{{\"step\": 3, \"data\": {{\"loss\": \"high\"}}}}\n"),
        )
        .await,
        400,
        "line 2: value of `loss` is not a number",
    );
    expect_error(
        api.ingest(
            &id,
            "ingest-test",
            "{\"step\": -1, \"data\": {\"loss\": 1}}\n",
        )
        .await,
        400,
        "step must be an integer",
    );
    expect_error(
        api.ingest("9999", "ingest-test", ok).await,
        404,
        "unknown run `9999`",
    );
    expect_error(
        api.ingest(&id, "other-project", ok).await,
        400,
        "belongs to project `ingest-test`",
    );
    expect_error(api.ingest("None", "ingest-test", ok).await, 400, "X-Run-Id");
    // Over the 1 MiB limit: 413, with the JSON error, however much of the
    // body is left unread (10 MB here).
    let huge = ok.repeat(200_000);
    let (status, body) = post_while_reading(&api.server.base, "/ingest/metrics", &id, huge).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("length limit exceeded"),
        "{body}"
    );
    // Nothing of a refused request was committed.
    assert_eq!(api.count(&id).await, 3);

    // Fork requests need both halves and a step inside the parent's range.
    expect_error(
        api.create(json!({"runName": "f", "projectName": "ingest-test", "forkRunId": 1}))
            .await,
        400,
        "both forkRunId and forkStep",
    );
    expect_error(
        api.create(json!({"runName": "f", "projectName": "ingest-test", "forkStep": 1}))
            .await,
        400,
        "both forkRunId and forkStep",
    );
    expect_error(
        api.create(
            json!({"runName": "f", "projectName": "ingest-test", "forkRunId": 1, "forkStep": 50}),
        )
        .await,
        400,
        "cannot fork",
    );
    expect_error(
        api.create(
            json!({"runName": "f", "projectName": "ingest-test", "forkRunId": 1, "forkStep": -5}),
        )
        .await,
        400,
        "forkStep must be an integer",
    );
    let (status, fork) = api
        .create(json!({"runName": "f", "projectName": "ingest-test", "forkRunId": 1, "forkStep": 1, "inheritConfig": false}))
        .await;
    assert_eq!(status, 200, "{fork}");
    assert_eq!(fork["forkedFromRunId"], 1);
    expect_error(
        api.post(
            "/api/runs/status/update",
            &[],
            json!({"runId": 1, "status": "DONE"}).to_string(),
        )
        .await,
        400,
        "unknown run status",
    );
    expect_error(
        api.post("/api/runs/create", &[], "{not json").await,
        400,
        "not valid JSON",
    );
    expect_error(
        api.create(json!({"runName": "r"})).await,
        400,
        "projectName is required",
    );
}

#[tokio::test]
async fn concurrent_ingest_shares_commits() {
    let (_dir, store) = temp_store();
    let api = api(&store, &["--commit-window-ms", "200"]);
    let (_, run) = api
        .create(json!({"runName": "r", "projectName": "group"}))
        .await;
    let id = run["runId"].as_u64().unwrap().to_string();
    let commits = || commit_versions(&store, "metrics").len();
    let before = commits();
    let requests = (0..32).map(|i| {
        let body = (0..50)
            .map(|s| {
                format!(
                    "{{\"time\": 1700000000000, \"step\": {}, \"data\": {{\"m\": {s}}}}}\n",
                    i * 50 + s
                )
            })
            .collect::<String>();
        let api = &api;
        let id = id.clone();
        async move { api.ingest(&id, "group", &body).await }
    });
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
    }
    // Every acknowledged point is visible, and 32 requests took far fewer commits.
    assert_eq!(api.count(&id).await, 32 * 50);
    let used = commits() - before;
    // Generous bound so a loaded CI machine does not flake; without grouping it would be 32.
    assert!(used <= 16, "{used} commits for 32 concurrent requests");
}

#[tokio::test]
async fn api_keys_are_required_once_issued() {
    let (_dir, store) = temp_store();
    let (ok, key, err) = common::cli(&store, &["keys", "create", "--project", "secure"]);
    assert!(ok, "{err}");
    let key = key.trim().to_string();
    assert!(key.starts_with("fk_") && key.len() > 20, "{key}");
    // Only the hash is stored.
    let (_, dump, _) = common::cli(&store, &["sql", "SELECT 1"]);
    assert!(!dump.contains(&key));
    let api = api(&store, &[]);
    let body = json!({"runName": "r", "projectName": "secure"}).to_string();
    let json_ct = ("content-type", "application/json");

    let (status, err) = api.post("/api/runs/create", &[json_ct], body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(err["error"], "Unauthorized");
    assert!(err["message"].as_str().unwrap().contains("Missing API key"));
    let (status, err) = api
        .post(
            "/api/runs/create",
            &[json_ct, ("authorization", "Bearer fk_wrong")],
            body.clone(),
        )
        .await;
    assert_eq!(
        (status, err["message"].as_str().unwrap()),
        (401, "Invalid API key")
    );
    let auth = format!("Bearer {key}");
    let (status, run) = api
        .post(
            "/api/runs/create",
            &[
                json_ct,
                ("authorization", &auth),
                ("x-project-name", "secure"),
            ],
            body,
        )
        .await;
    assert_eq!(status, 200, "{run}");
    let (status, err) = api
        .post(
            "/api/runs/create",
            &[
                json_ct,
                ("authorization", &auth),
                ("x-project-name", "elsewhere"),
            ],
            "{}",
        )
        .await;
    assert_eq!(status, 403, "{err}");
    // /health stays open for load balancers.
    let health = api
        .client
        .get(format!("{}/health", api.server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[test]
fn without_keys_the_server_refuses_non_loopback_addresses() {
    let (_dir, store) = temp_store();
    let (ok, _, err) = common::cli(
        &store,
        &["serve", "--listen", "0.0.0.0:0", "--flight-listen", "off"],
    );
    assert!(!ok);
    assert!(
        err.contains("loopback") && err.contains("keys create"),
        "{err}"
    );
    // The Flight SQL endpoint follows the same rule.
    let (ok, _, err) = common::cli(
        &store,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--flight-listen",
            "0.0.0.0:0",
        ],
    );
    assert!(!ok);
    assert!(err.contains("loopback"), "{err}");
}

#[tokio::test]
async fn upload_urls_are_signed() {
    let (_dir, store) = temp_store();
    let api = api(&store, &[]);
    let (_, run) = api
        .create(json!({"runName": "r", "projectName": "files"}))
        .await;
    let id = run["runId"].as_u64().unwrap().to_string();
    let spec = json!({"files": [{"fileName": "a.txt", "fileSize": 3, "fileType": "txt", "time": 1, "logName": "doc", "step": 1}]});
    let (status, urls) = api
        .post(
            "/files",
            &[("x-run-id", &id), ("content-type", "application/json")],
            spec.to_string(),
        )
        .await;
    assert_eq!(status, 200, "{urls}");
    let url = urls["doc"][0]["a.txt"].as_str().unwrap().to_string();
    let put = |url: String| {
        let client = api.client.clone();
        async move {
            client
                .put(url)
                .body("abc")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(put(url.replace("logName=doc", "logName=other")).await, 400);
    assert_eq!(put(format!("{}0", url)).await, 400);
    assert_eq!(put(url.clone()).await, 200);
    let bad = json!({"files": [{"fileName": "../escape", "logName": "doc"}]});
    expect_error(
        api.post("/files", &[("x-run-id", &id)], bad.to_string())
            .await,
        400,
        "bad file name",
    );
}
