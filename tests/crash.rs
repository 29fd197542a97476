//! kill -9 the server in the middle of a stream of ingest requests: after a
//! restart every acknowledged point is there and no request is half-visible.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{spawn_server_with, temp_store};
use serde_json::{Value, json};

const POINTS_PER_REQUEST: u64 = 50;

async fn sql(base: &str, query: &str) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/sql"))
        .json(&json!({ "sql": query }))
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

#[tokio::test]
async fn acknowledged_points_survive_kill_9() {
    let (_dir, store) = temp_store();
    let mut server = spawn_server_with(&store, &["--commit-window-ms", "20"]);
    let client = reqwest::Client::new();
    let run = server
        .post_json(
            "/api/runs/create",
            &json!({"runName": "crash", "projectName": "crash-test"}),
        )
        .await;
    let run_id = run["runId"].as_u64().unwrap().to_string();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (client, base, run_id, acked, next) = (
            client.clone(),
            server.base.clone(),
            run_id.clone(),
            acked.clone(),
            next.clone(),
        );
        writers.push(tokio::spawn(async move {
            loop {
                let request = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body: String = (0..POINTS_PER_REQUEST)
                    .map(|i| {
                        let step = request * POINTS_PER_REQUEST + i;
                        format!("{{\"time\": 1700000000000, \"step\": {step}, \"data\": {{\"m\": {request}}}}}\n")
                    })
                    .collect();
                let sent = client
                    .post(format!("{base}/ingest/metrics"))
                    .header("x-run-id", &run_id)
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(resp) if resp.status() == 200 => {
                        acked.lock().unwrap().insert(request);
                    }
                    Ok(resp) => panic!("unexpected status {}", resp.status()),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.child.kill().unwrap(); // SIGKILL: no shutdown hook runs.
    server.child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "only {} requests acknowledged before the kill",
        acked.len()
    );

    let restarted = spawn_server_with(&store, &[]);
    let rows = sql(
        &restarted.base,
        &format!(
            "SELECT CAST(value AS BIGINT) AS request, count(*) AS n FROM metrics \
             WHERE run_id = {run_id} GROUP BY 1 ORDER BY 1"
        ),
    )
    .await;
    let stored: Vec<(u64, u64)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["request"].as_u64().unwrap(), r["n"].as_u64().unwrap()))
        .collect();
    // No request is partially visible …
    for (request, n) in &stored {
        assert_eq!(
            *n, POINTS_PER_REQUEST,
            "request {request} is partially stored"
        );
    }
    // … and every acknowledged one is there.
    let present: BTreeSet<u64> = stored.iter().map(|(r, _)| *r).collect();
    let missing: Vec<_> = acked.difference(&present).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}
