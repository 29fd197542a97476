//! Run creation as a sweep does it: many clients, each creating runs one
//! after another through `POST /api/runs/create` (a fifth of them forks of a
//! run with logged steps), against a real `forkline serve` on a fresh local
//! store. An answer means the run is committed; at the end the runs stored
//! are checked against the runs acknowledged.
//!
//! Each phase is closed loop (a client sends its next create once answered)
//! at one concurrency: the rate the catalog sustains, and the latency a
//! client sees at it. Before the phases the store is filled with
//! `CATALOG_PREFILL` runs (through the server, 256 clients), and an idle
//! server's single create is timed (one client, one create at a time).
//!
//! Run: `cargo bench --bench catalog`. Environment: `CATALOG_SECONDS` (per
//! phase, 10), `CATALOG_CLIENTS` (comma-separated concurrencies, `1,16,64`),
//! `CATALOG_PREFILL` (runs in the store before the phases, 0),
//! `CATALOG_FORK_EVERY` (one request in this many is a fork, 5; 0: none),
//! `CATALOG_SERVER` (the URL of a server to use instead of starting one),
//! `CATALOG_SCOPED` (1: every request with a key scoped to the project),
//! `FORKLINE_BIN` (the server binary, this build's by default: set it to
//! compare two builds on one machine). `cargo test --bench catalog` is the
//! test suite's smoke run: one second at 4 clients, with the same checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;

use support::{env_or, percentile};

/// Resident memory of `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: &Value) -> Option<Value> {
    let response = client
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Request `n` of the sweep: one in `CATALOG_FORK_EVERY` (5) a fork of
/// `parent` (0: none).
fn request(n: u64, parent: u64) -> Value {
    static EVERY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let every = *EVERY.get_or_init(|| env_or("CATALOG_FORK_EVERY", 5));
    if every > 0 && n.is_multiple_of(every) {
        json!({ "projectName": "sweep", "runName": format!("trial-{n}"),
                "forkRunId": parent, "forkStep": n % 100, "config": { "lr": 1e-3, "trial": n } })
    } else {
        json!({ "projectName": "sweep", "runName": format!("trial-{n}"),
                "config": { "lr": 1e-3, "trial": n } })
    }
}

/// What a phase measured.
struct Phase {
    clients: usize,
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: f64,
}

/// `clients` clients creating runs for `seconds`.
async fn phase(
    client: &reqwest::Client,
    base: &str,
    parent: u64,
    next: &Arc<AtomicU64>,
    clients: usize,
    seconds: f64,
) -> Phase {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, base, next) = (client.clone(), base.to_string(), next.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    match post(&client, &base, "/api/runs/create", &request(n, parent)).await {
                        Some(_) => latencies.push(sent.elapsed()),
                        None => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (l, e) = task.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    Phase {
        clients,
        latencies,
        errors,
        elapsed: started.elapsed().as_secs_f64(),
    }
}

#[tokio::main]
async fn main() {
    // `cargo test --bench catalog` (no `--bench` argument): a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let seconds: f64 = env_or("CATALOG_SECONDS", if full { 10.0 } else { 1.0 });
    let prefill: u64 = env_or("CATALOG_PREFILL", 0);
    println!("scoped key: {}", env_or("CATALOG_SCOPED", 0) == 1);
    let concurrencies: Vec<usize> = std::env::var("CATALOG_CLIENTS")
        .unwrap_or_else(|_| if full { "1,16,64" } else { "4" }.into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    // `CATALOG_SERVER=http://…`: a server started elsewhere (under a
    // profiler, say), on a store with no project `sweep` yet.
    let external = std::env::var("CATALOG_SERVER").ok();
    // `CATALOG_SCOPED=1`: every request through a key scoped to the sweep's
    // project, as a team's keys are (a scoped catalog per request).
    let scoped = env_or("CATALOG_SCOPED", 0) == 1 && external.is_none();
    let mut headers = reqwest::header::HeaderMap::new();
    if scoped {
        let key = support::project_key(&store, "sweep");
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
    }
    let server = external.is_none().then(|| support::start(&store, &[]));
    let base = external.unwrap_or_else(|| server.as_ref().unwrap().1.clone());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .default_headers(headers)
        .build()
        .unwrap();

    // The run the sweep forks, with 100 logged steps.
    let parent = post(
        &client,
        &base,
        "/api/runs/create",
        &json!({ "projectName": "sweep", "runName": "base" }),
    )
    .await
    .expect("create the parent");
    let parent = parent["runId"].as_u64().unwrap();
    let points: String = (0..100)
        .map(|s| {
            format!("{{\"time\": 1700000000000, \"step\": {s}, \"data\": {{\"loss\": 0.5}}}}\n")
        })
        .collect();
    let logged = client
        .post(format!("{base}/ingest/metrics"))
        .header("x-run-id", parent.to_string())
        .header("content-type", "application/x-ndjson")
        .body(points)
        .send()
        .await
        .unwrap();
    assert!(logged.status().is_success());

    let next = Arc::new(AtomicU64::new(1));
    let mut acknowledged = 0u64;
    if prefill > 0 {
        let started = Instant::now();
        while acknowledged < prefill {
            let p = phase(&client, &base, parent, &next, 256, 5.0).await;
            acknowledged += p.latencies.len() as u64;
        }
        println!(
            "prefill: {acknowledged} runs in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    // One create at a time on an otherwise idle server.
    let mut single = Vec::new();
    for _ in 0..20 {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        post(&client, &base, "/api/runs/create", &request(n, parent))
            .await
            .expect("a single create");
        single.push(sent.elapsed());
        acknowledged += 1;
    }
    single.sort();

    let mut phases = Vec::new();
    for &clients in &concurrencies {
        let p = phase(&client, &base, parent, &next, clients, seconds).await;
        acknowledged += p.latencies.len() as u64;
        phases.push(p);
    }
    let rss = server.as_ref().map_or(0, |s| rss_mib(s.0.id()));

    // The runs list's first page, as the front page asks for it.
    let mut list = Vec::new();
    for _ in 0..10 {
        let sent = Instant::now();
        let page = client
            .get(format!("{base}/api/runs/list?projectName=sweep&limit=50"))
            .send()
            .await
            .unwrap();
        assert!(page.status().is_success());
        page.bytes().await.unwrap();
        list.push(sent.elapsed());
    }
    list.sort();

    // Every acknowledged run is stored, once.
    let stored = post(
        &client,
        &base,
        "/api/sql",
        &json!({ "sql": "SELECT count(*) AS n, count(DISTINCT display_id) AS d FROM runs WHERE project = 'sweep' AND name <> 'base'" }),
    )
    .await
    .expect("count the runs");
    let (n, d) = (
        stored[0]["n"].as_u64().unwrap(),
        stored[0]["d"].as_u64().unwrap(),
    );
    assert_eq!(n, acknowledged, "runs stored vs acknowledged");
    assert_eq!(d, n, "display ids are unique");

    println!(
        "\nidle server, one create at a time ({} runs stored before): p50 {} ms, max {} ms",
        prefill,
        ms(percentile(&single, 0.5)),
        ms(percentile(&single, 1.0))
    );
    println!("\n| clients | creates/s | p50 ms | p99 ms | p99.9 ms | errors |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for p in &phases {
        println!(
            "| {} | {:.0} | {} | {} | {} | {} |",
            p.clients,
            p.latencies.len() as f64 / p.elapsed,
            ms(percentile(&p.latencies, 0.5)),
            ms(percentile(&p.latencies, 0.99)),
            ms(percentile(&p.latencies, 0.999)),
            p.errors
        );
    }
    println!(
        "\n{acknowledged} runs acknowledged and stored; server RSS {rss} MiB; \
         /api/runs/list first page p50 {} ms",
        ms(percentile(&list, 0.5))
    );
}
