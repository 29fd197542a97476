//! Deleting runs and projects against a real `forkline serve` (HTTP, Flight
//! SQL, the SDK's read API) and the real CLI: leaf, refused parent, cascade,
//! bulk all-or-nothing, project, ids never reused, who may delete, bad
//! input, and a deletion racing a fork of the same parent.

mod common;

use common::{cli, create_key, spawn_server, temp_store};
use reqwest::Method;
use serde_json::{Value, json};

struct World {
    server: common::Server,
    /// `p` with the delete right, `p` without it, `p` read-only, `q` with it.
    del: String,
    rw: String,
    ro: String,
    other: String,
}

impl World {
    async fn send(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.server.base))
            .header("authorization", format!("Bearer {key}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.send(&self.del, method, path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    }

    async fn sql(&self, sql: &str) -> Vec<Value> {
        let answer = self
            .ok(Method::POST, "/api/sql", Some(json!({ "sql": sql })))
            .await;
        answer["rows"]
            .as_array()
            .or_else(|| answer.as_array())
            .cloned()
            .unwrap_or_else(|| panic!("{sql}: {answer}"))
    }

    /// A run of `project` logging `loss` (and a log line and a data row) at `steps`.
    async fn run(
        &self,
        project: &str,
        name: &str,
        fork: Option<(u64, u64)>,
        steps: std::ops::Range<u64>,
    ) -> Value {
        let mut body = json!({"runName": name, "projectName": project, "config": {"secret": name}});
        if let Some((parent, step)) = fork {
            body["forkRunId"] = json!(parent);
            body["forkStep"] = json!(step);
        }
        let key = if project == "p" {
            &self.del
        } else {
            &self.other
        };
        let (status, run) = self
            .send(key, Method::POST, "/api/runs/create", Some(body))
            .await;
        assert_eq!(status, 200, "{run}");
        let id = run["runId"].to_string();
        let lines: String = steps
            .map(|s| {
                format!("{{\"time\": 1700000000000, \"step\": {s}, \"data\": {{\"loss\": {s}}}}}\n")
            })
            .collect();
        let log = format!(
            "{{\"time\": 1700000000000, \"message\": \"{name}-log\", \"lineNumber\": 1, \"logType\": \"INFO\"}}\n"
        );
        for (path, body) in [("/ingest/metrics", lines), ("/ingest/logs", log)] {
            let response = reqwest::Client::new()
                .post(format!("{}{path}", self.server.base))
                .header("authorization", format!("Bearer {key}"))
                .header("x-run-id", &id)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
        }
        run
    }
}

async fn world() -> (tempfile::TempDir, World) {
    let (dir, store) = temp_store();
    let del = create_key(&store, &["--project", "p", "--can-delete"]);
    let rw = create_key(&store, &["--project", "p"]);
    let ro = create_key(&store, &["--project", "p", "--read-only"]);
    let other = create_key(&store, &["--project", "q", "--can-delete"]);
    let server = spawn_server(&store);
    (
        dir,
        World {
            server,
            del,
            rw,
            ro,
            other,
        },
    )
}

fn id(run: &Value) -> u64 {
    run["runId"].as_u64().unwrap()
}

/// Every place a run of `p` shows up, as one string: what a deleted run
/// must be absent from.
async fn everything(w: &World, key: &str) -> String {
    let mut seen = String::new();
    for sql in [
        "SELECT id, name, config FROM runs ORDER BY id",
        "SELECT run_id, metric, step FROM metrics ORDER BY run_id, step",
        "SELECT run_id, message FROM logs ORDER BY run_id",
        "SELECT run_id, to_status FROM run_status_events ORDER BY run_id, rev",
        "SELECT run_id, step FROM project_metrics('p', 'loss') ORDER BY run_id, step",
        "SELECT run_id, step FROM project_metrics('q', 'loss') ORDER BY run_id, step",
        "SELECT run_id, step FROM metric_writes ORDER BY run_id, step",
    ] {
        let (status, answer) = w
            .send(key, Method::POST, "/api/sql", Some(json!({"sql": sql})))
            .await;
        // Another key's project, or one deleted whole, does not exist.
        let unknown = status == 400 && answer.to_string().contains("unknown project");
        assert!(status == 200 || unknown, "{sql}: {answer}");
        seen.push_str(&answer.to_string());
    }
    for path in ["/api/runs/list?projectName=p", "/api/runs/projects"] {
        let (status, answer) = w.send(key, Method::GET, path, None).await;
        assert!(status == 200 || status == 403, "{path}: {answer}");
        seen.push_str(&answer.to_string());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_runs_over_http() {
    let (_dir, w) = world().await;
    // A logs 0–100; B forks A at 50; C forks B at 150; D is a lone root.
    let a = w.run("p", "alpha-run", None, 0..101).await;
    let b = w.run("p", "bravo-run", Some((id(&a), 50)), 51..201).await;
    let c = w
        .run("p", "charlie-run", Some((id(&b), 150)), 151..301)
        .await;
    let d = w.run("p", "delta-run", None, 0..10).await;
    let q = w.run("q", "quebec-run", None, 0..10).await;
    let stitched = format!(
        "SELECT count(*) AS n FROM stitched_metrics({}, 'loss')",
        id(&c)
    );
    assert_eq!(w.sql(&stitched).await[0]["n"], 301);

    // Who may delete: a key without the right, a read-only key: 403.
    let leaf = format!("/api/runs/{}", id(&d));
    for key in [&w.rw, &w.ro] {
        let (status, answer) = w.send(key, Method::DELETE, &leaf, None).await;
        assert_eq!(status, 403, "{answer}");
    }
    // Bad input.
    let other_project = format!("/api/runs/{}", id(&q));
    for (path, want) in [
        ("/api/runs/999999".to_string(), 404),
        ("/api/runs/P-99".to_string(), 404),
        (other_project.clone(), 404),
        ("/api/runs/not_a_run".to_string(), 400),
        ("/api/runs/99999999999999999999999".to_string(), 400),
        (format!("{leaf}?cascade=maybe"), 400),
        (format!("{leaf}?cascade=1"), 400),
    ] {
        let (status, answer) = w.send(&w.del, Method::DELETE, &path, None).await;
        assert_eq!(status, want, "{path}: {answer}");
    }
    for body in [
        json!({"runIds": [id(&d)], "cascade": "yes"}),
        json!({"runIds": id(&d)}),
        json!({"runIds": [{"id": 1}]}),
        json!({"runIds": []}),
        json!({"runs": [id(&d)]}),
        json!({"runIds": [id(&d), -1]}),
    ] {
        let (status, answer) = w
            .send(&w.del, Method::POST, "/api/runs/delete", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    // The console's run page offers the deletion to keys that may delete,
    // listing the forks that would go with the run.
    let page = format!("/api/console/p/p/r/{}", a["displayId"].as_str().unwrap());
    let (status, html) = w.send(&w.del, Method::GET, &page, None).await;
    assert_eq!(status, 200, "{html}");
    let html = html.as_str().unwrap().to_string();
    assert!(
        html.contains("class=\"delete-run\"") && html.contains("name=\"cascade\""),
        "{html}"
    );
    for fork in [&b, &c] {
        assert!(html.contains(fork["displayId"].as_str().unwrap()), "{html}");
    }
    for key in [&w.rw, &w.ro] {
        let (status, html) = w.send(key, Method::GET, &page, None).await;
        assert_eq!(status, 200);
        assert!(!html.to_string().contains("delete-run"), "{html}");
    }

    // Oversized and deeply nested bodies: refused whole, the server stays up.
    let huge = format!("{{\"runIds\": [{}]}}", vec!["1"; 2_200_000].join(","));
    let response = reqwest::Client::new()
        .post(format!("{}/api/runs/delete", w.server.base))
        .header("authorization", format!("Bearer {}", w.del))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let nested = format!("{{\"runIds\": {}1{}}}", "[".repeat(5000), "]".repeat(5000));
    let response = reqwest::Client::new()
        .post(format!("{}/api/runs/delete", w.server.base))
        .header("authorization", format!("Bearer {}", w.del))
        .header("content-type", "application/json")
        .body(nested)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let too_many = json!({"runIds": vec![id(&d); 10_001]});
    let (status, _) = w
        .send(&w.del, Method::POST, "/api/runs/delete", Some(too_many))
        .await;
    assert_eq!(status, 400);
    assert!(
        everything(&w, &w.del).await.contains("delta-run"),
        "nothing was deleted"
    );

    // A run with forks: refused, naming them; the fork still stitches all its points.
    let (status, answer) = w
        .send(
            &w.del,
            Method::DELETE,
            &format!("/api/runs/{}", id(&a)),
            None,
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    let text = answer.to_string();
    for fork in [&b, &c] {
        assert!(text.contains(fork["displayId"].as_str().unwrap()), "{text}");
    }
    assert_eq!(w.sql(&stitched).await[0]["n"], 301);
    // Bulk, all or nothing: one unknown run refuses the request.
    let (status, _) = w
        .send(
            &w.del,
            Method::POST,
            "/api/runs/delete",
            Some(json!({"runIds": [id(&d), 999999]})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = w
        .send(
            &w.del,
            Method::POST,
            "/api/runs/delete",
            Some(json!({"runIds": [id(&d), id(&a)]})),
        )
        .await;
    assert_eq!(status, 409);
    assert!(everything(&w, &w.del).await.contains("delta-run"));

    // Leaf delete, by display id.
    let gone = w
        .ok(
            Method::DELETE,
            &format!("/api/runs/{}", d["displayId"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(gone["deleted"][0]["runId"], id(&d));
    let seen = everything(&w, &w.del).await;
    assert!(
        !seen.contains("delta-run") && seen.contains("alpha-run"),
        "{seen}"
    );
    for path in [
        format!("/api/runs/details/{}", id(&d)),
        format!("/api/runs/metrics?runId={}&stitched=true", id(&d)),
        format!("/api/runs/logs?runId={}", id(&d)),
        format!("/api/export?run={}&format=csv", id(&d)),
        leaf.clone(),
    ] {
        let (status, answer) = w.send(&w.del, Method::GET.clone(), &path, None).await;
        let want = if path == leaf { 405 } else { 404 };
        assert!(status == want || status == 404, "{path}: {status} {answer}");
    }
    let (status, _) = w.send(&w.del, Method::DELETE, &leaf, None).await;
    assert_eq!(status, 404, "a deleted run is unknown");
    let deletions = w
        .sql("SELECT run_id, key_id, cascade FROM system.deletions")
        .await;
    assert_eq!(deletions.len(), 1, "{deletions:?}");
    assert_eq!(deletions[0]["run_id"], id(&d));
    assert!(deletions[0]["key_id"].is_string(), "{deletions:?}");

    // Cascade: the subtree goes; the other project is untouched.
    let q_before = everything(&w, &w.other).await;
    let gone = w
        .ok(
            Method::DELETE,
            &format!("/api/runs/{}?cascade=true", id(&a)),
            None,
        )
        .await;
    let ids: Vec<u64> = gone["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["runId"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [id(&a), id(&b), id(&c)]);
    let seen = everything(&w, &w.del).await;
    for name in ["alpha-run", "bravo-run", "charlie-run", "delta-run"] {
        assert!(!seen.contains(name), "{name} in {seen}");
    }
    let (status, _) = w
        .send(
            &w.del,
            Method::POST,
            "/api/sql",
            Some(json!({"sql": stitched})),
        )
        .await;
    assert_eq!(
        status, 400,
        "the lineage functions do not know a deleted run"
    );
    assert_eq!(everything(&w, &w.other).await, q_before);

    // Ids and display ids are never given again.
    let e = w.run("p", "echo-run", None, 0..3).await;
    assert!(id(&e) > id(&q), "{e}");
    assert_eq!(e["displayId"], "P-5", "{e}");

    // Flight SQL sees what HTTP sees.
    let flight = flight_rows(
        &w,
        "SELECT r.name, m.run_id FROM runs r FULL JOIN metrics m ON m.run_id = r.id",
    )
    .await;
    assert!(flight.contains("echo-run"), "{flight}");
    for name in ["alpha-run", "bravo-run", "charlie-run", "delta-run"] {
        assert!(!flight.contains(name), "{name} in {flight}");
    }

    // A project: every run of it; another project's key cannot see it.
    let (status, _) = w
        .send(&w.del, Method::DELETE, "/api/projects/q", None)
        .await;
    assert_eq!(status, 403);
    let (status, answer) = w
        .send(&w.other, Method::DELETE, "/api/projects/q", None)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deleted"][0]["runId"], id(&q));
    let (status, _) = w
        .send(&w.other, Method::DELETE, "/api/projects/q", None)
        .await;
    assert_eq!(status, 404);
    let seen = everything(&w, &w.other).await;
    assert!(!seen.contains("quebec-run"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_racing_a_fork_never_orphans_it() {
    let (_dir, w) = world().await;
    for round in 0..8 {
        let parent = w.run("p", &format!("parent-{round}"), None, 0..5).await;
        let fork = w.send(
            &w.del,
            Method::POST,
            "/api/runs/create",
            Some(json!({"runName": "fork", "projectName": "p", "forkRunId": id(&parent), "forkStep": 2})),
        );
        let path = format!("/api/runs/{}", id(&parent));
        let delete = w.send(&w.del, Method::DELETE, &path, None);
        let ((forked, fork_answer), (deleted, delete_answer)) = tokio::join!(fork, delete);
        match (forked, deleted) {
            (200, 409) => {
                let fork_id = fork_answer["runId"].as_u64().unwrap();
                let rows = w
                    .sql(&format!(
                        "SELECT count(*) AS n FROM stitched_metrics({fork_id}, 'loss')"
                    ))
                    .await;
                assert_eq!(rows[0]["n"], 3, "round {round}");
            }
            (404, 200) => {}
            other => panic!("round {round}: {other:?} {fork_answer} {delete_answer}"),
        }
    }
}

#[test]
fn delete_runs_and_projects_from_the_cli() {
    let (_dir, store) = temp_store();
    let make = |args: &[&str]| {
        let (ok, out, err) = cli(&store, args);
        assert!(ok, "{args:?}: {err}");
        out
    };
    make(&["run", "create", "--project", "cli", "--name", "root"]);
    let csv = tempfile::NamedTempFile::with_suffix(".csv").unwrap();
    std::fs::write(csv.path(), "metric,step,value\nloss,0,1.0\nloss,1,0.5\n").unwrap();
    make(&["import", "--run", "CLI-1", csv.path().to_str().unwrap()]);
    make(&["run", "fork", "CLI-1", "--step", "1"]);
    let (ok, _, err) = cli(&store, &["run", "delete", "CLI-1"]);
    assert!(
        !ok && err.contains("CLI-2"),
        "refused, naming the fork: {err}"
    );
    let (ok, _, err) = cli(&store, &["run", "delete", "CLI-404"]);
    assert!(!ok && err.contains("unknown run"), "{err}");
    let out = make(&["run", "delete", "CLI-1", "--cascade"]);
    assert!(
        out.contains("display_id=CLI-1") && out.contains("display_id=CLI-2"),
        "{out}"
    );
    let (ok, _, err) = cli(&store, &["run", "delete", "CLI-2"]);
    assert!(!ok && err.contains("unknown run"), "{err}");
    make(&["run", "create", "--project", "cli", "--name", "third"]);
    let out = make(&["project", "delete", "cli"]);
    assert!(out.contains("display_id=CLI-3"), "{out}");
    let (ok, _, err) = cli(&store, &["project", "delete", "cli"]);
    assert!(!ok && err.contains("unknown project"), "{err}");
    let out = make(&["run", "create", "--project", "cli", "--name", "again"]);
    assert!(out.contains("display_id=CLI-4"), "{out}");
    let out = make(&["sql", "SELECT count(*) AS n FROM metrics"]);
    assert!(out.contains('0'), "{out}");
    let out = make(&[
        "sql",
        "SELECT display_id, cascade FROM system.deletions ORDER BY run_id",
    ]);
    for gone in ["CLI-1", "CLI-2", "CLI-3"] {
        assert!(out.contains(gone), "{out}");
    }
    let (ok, _, err) = cli(&store, &["keys", "create", "--read-only", "--can-delete"]);
    assert!(!ok, "{err}");
}

/// A Flight SQL statement's result as text, through the deleting key.
async fn flight_rows(w: &World, sql: &str) -> String {
    let endpoint = w
        .server
        .flight
        .clone()
        .expect("the server serves Flight SQL");
    let batches = common::flight_batches(&endpoint, Some(&w.del), sql).await;
    arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}
