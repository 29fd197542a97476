//! Run status history and precedence, resume, and the stale-run monitor,
//! against real `forkline serve` processes (two on one store where it matters).

mod common;

use std::time::Duration;

use common::{Server, spawn_server_with, temp_store};
use serde_json::{Value, json};

/// A key made with `forkline keys create`: the secret and its id.
fn key(store: &str, args: &[&str]) -> (String, String) {
    let mut all = vec!["keys", "create"];
    all.extend_from_slice(args);
    let (ok, out, err) = common::cli(store, &all);
    assert!(ok, "{err}");
    let id = err
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no key id in {err:?}"))
        .to_string();
    (out.trim().to_string(), id)
}

/// `POST path` to `server` with `key`: the status and the JSON answer.
async fn post(server: &Server, key: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .header("authorization", format!("Bearer {key}"))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Rows of a query through `/api/sql` as `key` sees them.
async fn sql(server: &Server, key: &str, sql: &str) -> Vec<Value> {
    let (status, rows) = post(server, key, "/api/sql", json!({ "sql": sql })).await;
    assert_eq!(status, 200, "{sql}: {rows}");
    rows.as_array().unwrap().clone()
}

async fn create(server: &Server, key: &str, project: &str, name: &str) -> u64 {
    let (status, run) = post(
        server,
        key,
        "/api/runs/create",
        json!({ "projectName": project, "runName": name }),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    run["runId"].as_u64().unwrap()
}

async fn set_status(server: &Server, key: &str, run: u64, status: &str) -> Value {
    let (code, reply) = post(
        server,
        key,
        "/api/runs/status/update",
        json!({ "runId": run, "status": status }),
    )
    .await;
    assert_eq!(code, 200, "{status}: {reply}");
    reply
}

async fn status_of(server: &Server, key: &str, run: u64) -> String {
    let rows = sql(
        server,
        key,
        &format!("SELECT status FROM runs WHERE id = {run}"),
    )
    .await;
    rows[0]["status"].as_str().unwrap().to_string()
}

/// The run's status changes, oldest first: (from, to, source, key id).
async fn events(server: &Server, key: &str, run: u64) -> Vec<(Value, String, String, Value)> {
    sql(
        server,
        key,
        &format!(
            "SELECT from_status, to_status, source, key_id FROM run_status_events \
             WHERE run_id = {run} ORDER BY rev"
        ),
    )
    .await
    .into_iter()
    .map(|e| {
        (
            e["from_status"].clone(),
            e["to_status"].as_str().unwrap().to_string(),
            e["source"].as_str().unwrap().to_string(),
            e["key_id"].clone(),
        )
    })
    .collect()
}

/// Each event starts where the one before ended, and changes something: no
/// change is recorded twice, none is missing.
fn assert_chain(events: &[(Value, String, String, Value)]) {
    assert_eq!(events[0].0, Value::Null, "{events:?}");
    assert_eq!(
        (events[0].1.as_str(), events[0].2.as_str()),
        ("RUNNING", "create")
    );
    for pair in events.windows(2) {
        assert_eq!(pair[1].0, json!(pair[0].1), "{events:?}");
        assert_ne!(pair[1].1, pair[0].1, "{events:?}");
    }
}

fn serve(store: &str, stale_after: &str) -> Server {
    spawn_server_with(store, &["--stale-after", stale_after])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_finish_from_eight_clients_ends_failed_with_one_event_per_change() {
    let (_dir, store) = temp_store();
    let (secret, key_id) = key(&store, &[]);
    let servers = [serve(&store, "0"), serve(&store, "0")];
    for round in 0..4 {
        let run = create(&servers[0], &secret, "ddp", &format!("ranks-{round}")).await;
        // Eight ranks finish at once through two servers: three fail.
        let finishes = (0..8).map(|rank| {
            let (server, secret) = (&servers[rank % 2], &secret);
            let status = if rank % 3 == round % 3 {
                "FAILED"
            } else {
                "COMPLETED"
            };
            async move { (status, set_status(server, secret, run, status).await) }
        });
        // Every answer is the run's status after the request: FAILED always
        // applies, COMPLETED only where no FAILED came first.
        for (asked, reply) in futures::future::join_all(finishes).await {
            let status = reply["status"].as_str().unwrap();
            assert!(asked == "COMPLETED" || status == "FAILED", "{reply}");
            assert_eq!(reply["applied"], json!(status == asked), "{reply}");
        }
        // Commits of the other server show within the refresh interval (250 ms).
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(status_of(&servers[1], &secret, run).await, "FAILED");
        let history = events(&servers[1], &secret, run).await;
        assert_chain(&history);
        let changes: Vec<&str> = history[1..].iter().map(|e| e.1.as_str()).collect();
        assert!(
            changes == ["FAILED"] || changes == ["COMPLETED", "FAILED"],
            "round {round}: {history:?}"
        );
        for event in &history {
            assert_eq!(event.3, json!(key_id), "{history:?}");
            assert_eq!(event.2, if event.0.is_null() { "create" } else { "api" });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_the_precedence_of_terminal_statuses() {
    let (_dir, store) = temp_store();
    let (secret, _) = key(&store, &[]);
    let server = serve(&store, "0");
    let run = create(&server, &secret, "prec", "r").await;
    let reply = set_status(&server, &secret, run, "CANCELLED").await;
    assert_eq!(reply["status"], "CANCELLED");
    assert_eq!(reply["applied"], true);
    // Lower terminal statuses are refused, 200 with the status unchanged.
    for lower in ["COMPLETED", "TERMINATED", "CANCELLED"] {
        let reply = set_status(&server, &secret, run, lower).await;
        assert_eq!(reply["status"], "CANCELLED", "{lower}: {reply}");
        assert_eq!(reply["applied"], lower == "CANCELLED");
    }
    // The heartbeat answers CANCELLED (the SDK exits on it).
    let (_, beat) = post(
        &server,
        &secret,
        "/api/runs/trigger",
        json!({ "runId": run }),
    )
    .await;
    assert_eq!(beat["status"], "CANCELLED");
    assert_eq!(
        set_status(&server, &secret, run, "FAILED").await["status"],
        "FAILED"
    );
    // RUNNING from a client is allowed from any status.
    assert_eq!(
        set_status(&server, &secret, run, "RUNNING").await["status"],
        "RUNNING"
    );
    assert_eq!(
        set_status(&server, &secret, run, "COMPLETED").await["status"],
        "COMPLETED"
    );
    let (code, error) = post(
        &server,
        &secret,
        "/api/runs/status/update",
        json!({ "runId": run, "status": "DONE" }),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        error["error"].as_str().unwrap().contains("CANCELLED"),
        "{error}"
    );
    let history = events(&server, &secret, run).await;
    assert_chain(&history);
    let to: Vec<&str> = history.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        to,
        ["RUNNING", "CANCELLED", "FAILED", "RUNNING", "COMPLETED"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_reopens_a_finished_run_and_logging_without_finish_keeps_it_running() {
    let (_dir, store) = temp_store();
    let (secret, key_id) = key(&store, &[]);
    let server = serve(&store, "0");
    let run = create(&server, &secret, "eval", "train").await;
    set_status(&server, &secret, run, "COMPLETED").await;
    let (code, reply) = post(
        &server,
        &secret,
        "/api/runs/resume",
        json!({ "runId": run }),
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["resumed"], true);
    assert_eq!(status_of(&server, &secret, run).await, "RUNNING");
    // An eval client logs and closes: the SDK's close() sends no status.
    let response = reqwest::Client::new()
        .post(format!("{}/ingest/metrics", server.base))
        .header("authorization", format!("Bearer {secret}"))
        .header("x-run-id", run.to_string())
        .body("{\"step\": 1, \"data\": {\"eval/acc\": 0.9}}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(status_of(&server, &secret, run).await, "RUNNING");
    // Resuming a RUNNING run changes nothing, and records nothing.
    post(
        &server,
        &secret,
        "/api/runs/resume",
        json!({ "runId": run }),
    )
    .await;
    let history = events(&server, &secret, run).await;
    assert_chain(&history);
    let steps: Vec<(&str, &str)> = history
        .iter()
        .map(|e| (e.1.as_str(), e.2.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("RUNNING", "create"),
            ("COMPLETED", "api"),
            ("RUNNING", "resume")
        ]
    );
    assert_eq!(history[2].3, json!(key_id));

    // A create naming an existing external id (a restarted multi-node job)
    // re-opens the run too; attaching to a RUNNING one changes nothing.
    let attach = json!({ "projectName": "eval", "runName": "job", "externalId": "job-7" });
    let (_, first) = post(&server, &secret, "/api/runs/create", attach.clone()).await;
    let job = first["runId"].as_u64().unwrap();
    let (_, again) = post(&server, &secret, "/api/runs/create", attach.clone()).await;
    assert_eq!(
        (again["runId"].as_u64(), &again["resumed"]),
        (Some(job), &json!(true))
    );
    set_status(&server, &secret, job, "FAILED").await;
    let (_, restarted) = post(&server, &secret, "/api/runs/create", attach).await;
    assert_eq!(restarted["runId"].as_u64(), Some(job));
    assert_eq!(status_of(&server, &secret, job).await, "RUNNING");
    let sources: Vec<String> = events(&server, &secret, job)
        .await
        .into_iter()
        .map(|e| e.2)
        .collect();
    assert_eq!(sources, ["create", "api", "resume"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_monitor_terminates_a_silent_run_once_with_two_servers() {
    let (_dir, store) = temp_store();
    let (secret, _) = key(&store, &[]);
    // Two spellings of one period: a duration and seconds.
    let servers = [serve(&store, "3s"), serve(&store, "3")];
    let silent = create(&servers[0], &secret, "stale", "silent").await;
    let busy = create(&servers[0], &secret, "stale", "busy").await;
    let beating = create(&servers[0], &secret, "stale", "beating").await;
    // `busy` logs and `beating` sends heartbeats, only through the second
    // server: the first one's monitor must see that activity in the store.
    let started = std::time::Instant::now();
    let mut step = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let response = reqwest::Client::new()
            .post(format!("{}/ingest/metrics", servers[1].base))
            .header("authorization", format!("Bearer {secret}"))
            .header("x-run-id", busy.to_string())
            .body(format!(
                "{{\"step\": {step}, \"data\": {{\"loss\": 1.0}}}}\n"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let (code, beat) = post(
            &servers[1],
            &secret,
            "/api/runs/trigger",
            json!({ "runId": beating }),
        )
        .await;
        assert_eq!((code, beat["status"].as_str()), (200, Some("RUNNING")));
        step += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status_of(&servers[0], &secret, silent).await, "TERMINATED");
    let history = events(&servers[0], &secret, silent).await;
    assert_chain(&history);
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(
        (history[1].1.as_str(), history[1].2.as_str(), &history[1].3),
        ("TERMINATED", "stale-monitor", &Value::Null)
    );
    for run in [busy, beating] {
        assert_eq!(status_of(&servers[0], &secret, run).await, "RUNNING");
        assert_eq!(events(&servers[0], &secret, run).await.len(), 1);
    }
    // Both monitors kept looking, and recorded the change once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(events(&servers[1], &secret, silent).await.len(), 2);
    // The silent run logs again: RUNNING again, and the heartbeat says so.
    let (code, beat) = post(
        &servers[1],
        &secret,
        "/api/runs/trigger",
        json!({ "runId": silent }),
    )
    .await;
    assert_eq!((code, beat["status"].as_str()), (200, Some("RUNNING")));
    // Read where the change was made: another server sees it within its
    // refresh interval, not at once.
    let history = events(&servers[1], &secret, silent).await;
    assert_chain(&history);
    assert_eq!(
        (history[2].1.as_str(), history[2].2.as_str()),
        ("RUNNING", "activity")
    );
    // A run a client finished stays finished, whatever it sends later.
    set_status(&servers[0], &secret, busy, "COMPLETED").await;
    post(
        &servers[0],
        &secret,
        "/api/runs/trigger",
        json!({ "runId": busy }),
    )
    .await;
    assert_eq!(status_of(&servers[0], &secret, busy).await, "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_status_events_are_scoped_by_key() {
    let (_dir, store) = temp_store();
    let (all, _) = key(&store, &[]);
    let (alpha, _) = key(&store, &["--project", "alpha"]);
    let (beta, _) = key(&store, &["--project", "beta"]);
    let server = serve(&store, "0");
    let a = create(&server, &all, "alpha", "a").await;
    let b = create(&server, &all, "beta", "b").await;
    set_status(&server, &all, a, "FAILED").await;
    set_status(&server, &all, b, "COMPLETED").await;
    let seen = |rows: Vec<Value>| -> Vec<(u64, String)> {
        rows.iter()
            .map(|r| {
                (
                    r["run_id"].as_u64().unwrap(),
                    r["project"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // The same table is listed with the system tables, scoped alike.
    for table in ["run_status_events", "system.run_status_events"] {
        let q = format!("SELECT run_id, project FROM {table} ORDER BY run_id, rev");
        let a_rows = seen(sql(&server, &alpha, &q).await);
        assert_eq!(a_rows, [(a, "alpha".into()), (a, "alpha".into())]);
        let b_rows = seen(sql(&server, &beta, &q).await);
        assert_eq!(b_rows, [(b, "beta".into()), (b, "beta".into())]);
        assert_eq!(sql(&server, &all, &q).await.len(), 4);
    }
    // Named outright, another project's run is still not there.
    let other = format!("SELECT count(*) AS n FROM run_status_events WHERE run_id = {b}");
    assert_eq!(sql(&server, &alpha, &other).await[0]["n"], 0);
}

/// A store whose `runs` table predates status history: it reads, its runs
/// have no events, and the first change adds the columns and its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_table_without_status_history_reads_and_gains_it() {
    use forkline::catalog::run::{Run, runs_to_batch};
    use forkline::catalog::{RunStatus, RunUpdate};
    use forkline::store::TableKind;
    use forkline::store::schema::arrow_schema;

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("warehouse");
    let now = chrono::Utc::now();
    let old = Run {
        id: 1,
        rev: 1,
        project: "legacy".into(),
        seq: 1,
        display_id: "LEG-1".into(),
        name: "old".into(),
        experiment: "old".into(),
        parent_id: None,
        fork_step: None,
        config: Default::default(),
        tags: Default::default(),
        status: RunStatus::Completed,
        external_id: None,
        created_at: now,
        updated_at: now,
        status_change: None,
        deleted: None,
    };
    // The columns of the runs table before status history.
    let batch = runs_to_batch(&[old]).unwrap();
    let before = arrow_schema(TableKind::Runs)
        .index_of("status_from")
        .unwrap();
    let batch = batch.project(&(0..before).collect::<Vec<_>>()).unwrap();
    std::fs::create_dir_all(store.join("runs")).unwrap();
    let url = url::Url::from_directory_path(store.join("runs")).unwrap();
    deltalake::DeltaTableBuilder::from_url(url)
        .unwrap()
        .build()
        .unwrap()
        .write(vec![batch])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .await
        .unwrap();

    let engine = forkline::Engine::open(store.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        engine.resolve_run("LEG-1").await.unwrap().status,
        RunStatus::Completed
    );
    let events =
        "SELECT run_id, from_status, to_status, source FROM run_status_events ORDER BY rev";
    assert!(common::rows(&engine, events).await.unwrap().is_empty());
    let run = engine.update_run("LEG-1", RunUpdate::Resume).await.unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(
        common::rows(&engine, events).await.unwrap(),
        [["1", "COMPLETED", "RUNNING", "resume"]]
    );
    // Merging the runs log keeps old and new rows, and the event.
    for i in 0..forkline::maintenance::compact::RUNS_FILES {
        let tags = RunUpdate::SetTags(vec![format!("t{i}")]);
        engine.update_run("LEG-1", tags).await.unwrap();
    }
    let report = forkline::maintenance::compact::compact(&engine, &Default::default())
        .await
        .unwrap();
    assert!(report.runs_files_merged > forkline::maintenance::compact::RUNS_FILES);
    // A fresh process reads both revisions, old and new.
    drop(engine);
    let engine = forkline::Engine::open(store.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        engine.resolve_run("1").await.unwrap().status,
        RunStatus::Running
    );
    assert_eq!(common::rows(&engine, events).await.unwrap().len(), 1);
}
