//! Group commit of the run catalog, against real `forkline serve` processes
//! on one store: creates and forks arriving together share commits, display
//! ids stay unique and gapless across both servers, and a refused mutation
//! fails alone while its neighbours commit.

mod common;

use std::collections::BTreeSet;

use common::{Server, commit_versions, spawn_server, temp_store};
use serde_json::{Value, json};

async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Logs `loss` at steps `0..steps` to `run`.
async fn log_steps(server: &Server, run: u64, steps: u64) {
    let body: String = (0..steps)
        .map(|s| {
            format!("{{\"time\": 1700000000000, \"step\": {s}, \"data\": {{\"loss\": 0.5}}}}\n")
        })
        .collect();
    let response = reqwest::Client::new()
        .post(format!("{}/ingest/metrics", server.base))
        .header("x-run-id", run.to_string())
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Rows of `sql` as a server answers it.
async fn sql(server: &Server, sql: &str) -> Vec<Value> {
    let (status, rows) = post(&server.base, "/api/sql", &json!({ "sql": sql })).await;
    assert_eq!(status, 200, "{sql}: {rows}");
    rows.as_array().unwrap().clone()
}

fn create(project: &str, name: &str) -> Value {
    json!({ "projectName": project, "runName": name })
}

fn fork(project: &str, name: &str, parent: u64, step: u64) -> Value {
    json!({ "projectName": project, "runName": name, "forkRunId": parent, "forkStep": step })
}

/// Creates one root run with `steps` logged steps; its id.
async fn parent(server: &Server, project: &str, steps: u64) -> u64 {
    let (status, run) = post(&server.base, "/api/runs/create", &create(project, "base")).await;
    assert_eq!(status, 200, "{run}");
    let id = run["runId"].as_u64().unwrap();
    log_steps(server, id, steps).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_creating_and_forking_at_once_share_commits_and_keep_display_ids_gapless() {
    let (_dir, store) = temp_store();
    let servers = [spawn_server(&store), spawn_server(&store)];
    let base = parent(&servers[0], "sweep", 100).await;
    let versions_before = commit_versions(&store, "runs").len();
    const CLIENTS: usize = 120;
    // A sweep through both servers at once; a fifth of its trials are forks.
    let requests = (0..CLIENTS).map(|i| {
        let server = &servers[i % 2];
        let body = if i % 5 == 0 {
            fork("sweep", &format!("fork-{i}"), base, 10 + i as u64 % 80)
        } else {
            create("sweep", &format!("trial-{i}"))
        };
        async move {
            let answer = post(&server.base, "/api/runs/create", &body).await;
            (body, answer)
        }
    });
    let answers = futures::future::join_all(requests).await;
    let mut numbers = BTreeSet::new();
    let mut acknowledged = BTreeSet::new();
    for (asked, (status, run)) in &answers {
        assert_eq!(status, &200, "{asked}: {run}");
        assert_eq!(run["resumed"], json!(false), "{run}");
        assert_eq!(run["forkedFromRunId"].as_u64(), asked["forkRunId"].as_u64());
        assert_eq!(run["forkStep"].as_u64(), asked["forkStep"].as_u64());
        let number = run["number"].as_u64().unwrap();
        assert_eq!(run["displayId"], json!(format!("SWE-{number}")), "{run}");
        assert!(
            numbers.insert(number),
            "display number {number} given twice"
        );
        acknowledged.insert((
            run["runId"].as_u64().unwrap(),
            asked["runName"].as_str().unwrap().to_string(),
        ));
    }
    // Gapless: the parent is 1, the sweep took 2..=CLIENTS+1.
    assert_eq!(numbers, (2..=CLIENTS as u64 + 1).collect::<BTreeSet<_>>());
    // Every acknowledged run is stored once, as the other server reads it
    // (reads see another process's commits within the refresh interval, 250 ms).
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let rows = sql(
        &servers[1],
        "SELECT id, name FROM runs WHERE project = 'sweep' AND name <> 'base'",
    )
    .await;
    let stored: BTreeSet<(u64, String)> = rows
        .iter()
        .map(|r| {
            let name = r["name"].as_str().unwrap().to_string();
            (r["id"].as_u64().unwrap(), name)
        })
        .collect();
    assert_eq!(rows.len(), CLIENTS);
    assert_eq!(stored, acknowledged);
    // Mutations that arrived together shared commits.
    let commits = commit_versions(&store, "runs").len() - versions_before;
    assert!(
        commits < CLIENTS / 2,
        "{CLIENTS} creates and forks took {commits} commits"
    );
    println!("{CLIENTS} creates and forks through two servers: {commits} catalog commits");
    // One creation event per run, none more.
    let events = sql(
        &servers[0],
        "SELECT run_id, count(*) AS n FROM run_status_events GROUP BY run_id HAVING count(*) <> 1",
    )
    .await;
    assert!(events.is_empty(), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_mutations_fail_alone_with_their_own_answers_while_the_batch_commits() {
    let (_dir, store) = temp_store();
    let server = spawn_server(&store);
    let base = parent(&server, "mixed", 50).await;
    let too_long = "n".repeat(600);
    // Good and bad requests interleaved, sent at once so that they share batches.
    let mut requests = Vec::new();
    for i in 0..40u64 {
        let (body, expected) = match i % 8 {
            1 => (create("mixed", &too_long), 400),
            3 => (fork("mixed", "beyond", base, 50 + i), 400),
            5 => (fork("mixed", "nobody", 999_999, 1), 404),
            7 => (
                json!({ "projectName": "mixed", "runName": "big", "config": { "blob": "x".repeat(2 << 20) } }),
                413,
            ),
            0 | 4 => (fork("mixed", &format!("fork-{i}"), base, i), 200),
            _ => (create("mixed", &format!("trial-{i}")), 200),
        };
        let server = &server;
        requests.push(async move {
            let answer = post(&server.base, "/api/runs/create", &body).await;
            (body, expected, answer)
        });
    }
    let mut created = 0;
    for (body, expected, (status, answer)) in futures::future::join_all(requests).await {
        let asked = body["runName"]
            .as_str()
            .unwrap()
            .chars()
            .take(20)
            .collect::<String>();
        assert_eq!(status, expected, "{asked}: {answer}");
        if expected == 200 {
            created += 1;
        } else {
            let error = answer["error"].as_str().unwrap_or_default();
            let reason = match expected {
                400 if asked.starts_with('n') => "longer than the limit",
                400 => "cannot fork",
                404 => "unknown run",
                _ => "limit",
            };
            assert!(error.contains(reason), "{asked}: {answer}");
        }
    }
    // Exactly the good ones are stored, numbered without gaps after the parent.
    let rows = sql(
        &server,
        "SELECT display_id FROM runs WHERE project = 'mixed' ORDER BY id",
    )
    .await;
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r["display_id"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (1..=created + 1).map(|n| format!("MIX-{n}")).collect();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_during_batched_creates_loses_no_acknowledged_run_and_no_half_batch() {
    let (_dir, store) = temp_store();
    let mut server = spawn_server(&store);
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (base, acknowledged) = (server.base.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for i in 0.. {
                    let sent = client
                        .post(format!("{base}/api/runs/create"))
                        .json(&create("crash", &format!("c{c}-{i}")))
                        .send()
                        .await;
                    let Ok(response) = sent else { return };
                    let Ok(run) = response.json::<Value>().await else {
                        return;
                    };
                    let id = run["runId"].as_u64().unwrap_or_else(|| panic!("{run}"));
                    acknowledged.lock().unwrap().insert(id);
                }
            })
        })
        .collect();
    // Kill it mid-stream, once a good number of creates were acknowledged.
    let started = std::time::Instant::now();
    while acknowledged.lock().unwrap().len() < 100 && started.elapsed().as_secs() < 60 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 100, "{}", acknowledged.len());
    let server = spawn_server(&store);
    let rows = sql(
        &server,
        "SELECT id, display_id FROM runs WHERE project = 'crash'",
    )
    .await;
    let stored: BTreeSet<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert!(
        stored.is_superset(&acknowledged),
        "lost: {:?}",
        acknowledged.difference(&stored).collect::<Vec<_>>()
    );
    // A batch lands whole or not at all: the numbers stored have no gap.
    let mut numbers: Vec<u64> = rows
        .iter()
        .map(|r| {
            let display = r["display_id"].as_str().unwrap();
            display.strip_prefix("CRA-").unwrap().parse().unwrap()
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=rows.len() as u64).collect::<Vec<_>>());
    println!(
        "killed after {} acknowledged creates; {} stored",
        acknowledged.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ranks_creating_one_external_id_at_once_all_attach_to_one_run() {
    let (_dir, store) = temp_store();
    let servers = [spawn_server(&store), spawn_server(&store)];
    // Eight ranks of one job, through two servers, in one batch or several.
    let ranks = (0..8).map(|rank| {
        let server = &servers[rank % 2];
        let body = json!({ "projectName": "ddp", "runName": "job", "externalId": "job-42",
                           "config": { format!("rank{rank}"): rank } });
        async move { post(&server.base, "/api/runs/create", &body).await }
    });
    let answers = futures::future::join_all(ranks).await;
    let ids: BTreeSet<u64> = answers
        .iter()
        .map(|(status, run)| {
            assert_eq!(*status, 200, "{run}");
            run["runId"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    let created = answers
        .iter()
        .filter(|(_, run)| run["resumed"] == json!(false))
        .count();
    assert_eq!(created, 1, "{answers:?}");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let rows = sql(
        &servers[0],
        "SELECT id, config FROM runs WHERE project = 'ddp'",
    )
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    // Every rank's config was merged into the one run.
    let config: Value = serde_json::from_str(rows[0]["config"].as_str().unwrap()).unwrap();
    for rank in 0..8 {
        assert_eq!(config[format!("rank{rank}")], json!(rank), "{config}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_list_pages_from_the_creation_index_match_the_filtered_scan() {
    let (_dir, store) = temp_store();
    let server = spawn_server(&store);
    // Created together: many share a millisecond.
    let creates = (0..60).map(|i| {
        let body = create("pages", &format!("t{i}"));
        let server = &server;
        async move { post(&server.base, "/api/runs/create", &body).await }
    });
    for (status, run) in futures::future::join_all(creates).await {
        assert_eq!(status, 200, "{run}");
    }
    let list = |query: String| {
        let url = format!("{}/api/runs/list?projectName=pages{query}", server.base);
        async move {
            let page: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            page["runs"]
                .as_array()
                .unwrap_or_else(|| panic!("{page}"))
                .iter()
                .map(|r| r["id"].as_u64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    for sort in ["", "&sort=-createdAt", "&sort=createdAt"] {
        for (offset, limit) in [(0, 50), (0, 7), (7, 7), (55, 10), (0, 0), (70, 5)] {
            let page = format!("{sort}&offset={offset}&limit={limit}");
            // A search every run matches takes the scan path.
            let indexed = list(page.clone()).await;
            let scanned = list(format!("{page}&search=-")).await;
            assert_eq!(indexed, scanned, "{page}");
            assert_eq!(
                indexed.len(),
                limit.min(60usize.saturating_sub(offset)),
                "{page}"
            );
        }
    }
}
