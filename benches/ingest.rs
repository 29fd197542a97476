//! Sustained ingest through the SDK's NDJSON format, open loop: requests leave
//! at a fixed rate whether or not earlier ones were answered, from many runs
//! at once, against a real `forkline serve` on a fresh local store. An ack
//! means the points are committed.
//!
//! A closed-loop phase (one writer per run, each waiting for its ack) finds
//! the maximum acknowledged rate; open-loop phases then offer 25%, 50%, 75%
//! and 100% of it. Latency counts from when a request was due to leave, so a
//! generator that falls behind shows as latency, not as a lower offered rate.
//!
//! The generator holds a fixed number of connections (two per run, as if
//! each run's SDK sent on two): an open-loop request that finds them all busy
//! waits for one, and that wait counts as latency. Without the cap the
//! generator opens a connection per request in flight, past the server's
//! `--max-connections`, and the kernel's dropped handshakes (retried after 1,
//! 3, 7, 15, 31 s) measure the listen backlog instead of ingest.
//!
//! Run: `cargo bench --bench ingest`. Environment: `INGEST_SECONDS` (per
//! phase, 10), `INGEST_RUNS` (256), `INGEST_CONNECTIONS` (2 per run),
//! `INGEST_WINDOW_MS` (the server's commit window, 100), `INGEST_LINES`
//! (lines per request, 100: the SDK's batch), `INGEST_METRICS` (metrics per
//! line, 5), `FORKLINE_BIN` (the server binary, this build's by default: set
//! it to compare two builds on one machine).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod support;

use support::{Server, env_or, percentile};

/// A server with the given commit window.
fn start(store: &str, window_ms: u64) -> Server {
    support::start(store, &["--commit-window-ms", &window_ms.to_string()])
}

/// The shape of every request.
#[derive(Clone, Copy)]
struct Shape {
    lines: u64,
    metrics: u64,
    values: &'static [String],
}

/// Values as the SDK prints them (shortest round-trip, full precision),
/// rendered once: the generator shares the cores with the server, and
/// formatting each float anew cost it a third of a core.
fn rendered_values() -> &'static [String] {
    let values: Vec<String> = (0..4096u64)
        .map(|k| (1.0 / (k as f64 + 1.0) + k as f64 * 1e-7).to_string())
        .collect();
    Box::leak(values.into_boxed_slice())
}

impl Shape {
    fn points(self) -> u64 {
        self.lines * self.metrics
    }

    /// Request `n` of a run: the next `lines` steps, as the SDK writes them.
    fn body(self, n: u64) -> String {
        let mut out =
            String::with_capacity(self.lines as usize * (40 + 24 * self.metrics as usize));
        for line in 0..self.lines {
            let step = n * self.lines + line;
            let _ = write!(
                out,
                "{{\"time\": {}, \"step\": {step}, \"data\": {{",
                1_700_000_000_000u64 + step
            );
            for m in 0..self.metrics {
                let sep = if m == 0 { "" } else { ", " };
                let value = &self.values[((step * self.metrics + m) % 4096) as usize];
                let _ = write!(out, "{sep}\"train/m{m}\": {value}");
            }
            out.push_str("}}\n");
        }
        out
    }
}

/// What a phase measured.
struct Phase {
    offered: f64,
    acked_points: u64,
    elapsed: f64,
    latencies: Vec<Duration>,
    errors: u64,
}

impl Phase {
    /// A phase that began at `started` and has just ended.
    fn new(
        offered: f64,
        latencies: Vec<Duration>,
        errors: u64,
        started: Instant,
        shape: Shape,
    ) -> Self {
        Self {
            offered,
            acked_points: latencies.len() as u64 * shape.points(),
            elapsed: started.elapsed().as_secs_f64(),
            latencies,
            errors,
        }
    }
}

async fn send(client: &reqwest::Client, base: &str, run: &str, body: String) -> bool {
    let resp = client
        .post(format!("{base}/ingest/metrics"))
        .header("x-run-id", run)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await;
    matches!(resp, Ok(r) if r.status() == 200)
}

/// Each run's next request number, shared by the phases so steps only grow.
struct Runs {
    ids: Vec<String>,
    next: Vec<AtomicU64>,
}

impl Runs {
    fn take(&self, i: usize) -> (&str, u64) {
        (&self.ids[i], self.next[i].fetch_add(1, Ordering::Relaxed))
    }
}

/// One writer per connection, each waiting for its ack before it sends
/// again (run `w % runs` for writer `w`): the maximum rate.
async fn closed_loop(
    client: &reqwest::Client,
    base: &str,
    runs: &Arc<Runs>,
    shape: Shape,
    seconds: u64,
    connections: usize,
) -> Phase {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let writers: Vec<_> = (0..connections)
        .map(|w| {
            let (client, base, runs) = (client.clone(), base.to_string(), runs.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0);
                while Instant::now() < deadline {
                    let (run, n) = runs.take(w % runs.ids.len());
                    let sent = Instant::now();
                    if send(&client, &base, run, shape.body(n)).await {
                        latencies.push(sent.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for w in writers {
        let (answered, failed) = w.await.unwrap();
        latencies.extend(answered);
        errors += failed;
    }
    Phase::new(f64::NAN, latencies, errors, started, shape)
}

/// Requests fall due at `rate` points/s, round robin over the runs, for
/// `seconds`, and go out on the first free one of `connections`; the phase
/// ends when the last one is answered.
async fn open_loop(
    client: &reqwest::Client,
    base: &str,
    runs: &Arc<Runs>,
    shape: Shape,
    seconds: u64,
    rate: f64,
    connections: usize,
) -> Phase {
    let free = Arc::new(tokio::sync::Semaphore::new(connections));
    let per_second = rate / shape.points() as f64;
    let total = (per_second * seconds as f64).round() as u64;
    let started = Instant::now();
    let mut answers = Vec::with_capacity(total as usize);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * per_second) as u64).min(total);
        while sent < due {
            // When this request was due: queueing in the generator counts.
            let at = started + Duration::from_secs_f64(sent as f64 / per_second);
            let (run, n) = runs.take(sent as usize % runs.ids.len());
            let (client, base, run) = (client.clone(), base.to_string(), run.to_string());
            let free = free.clone();
            answers.push(tokio::spawn(async move {
                let _connection = free.acquire_owned().await;
                let ok = send(&client, &base, &run, shape.body(n)).await;
                (ok, at.elapsed())
            }));
            sent += 1;
        }
    }
    let (mut latencies, mut errors) = (Vec::with_capacity(answers.len()), 0);
    for a in answers {
        match a.await.unwrap() {
            (true, latency) => latencies.push(latency),
            (false, _) => errors += 1,
        }
    }
    Phase::new(rate, latencies, errors, started, shape)
}

fn report(label: &str, mut phase: Phase) -> f64 {
    phase.latencies.sort();
    let ms = |p: f64| percentile(&phase.latencies, p).as_secs_f64() * 1e3;
    let acked = phase.acked_points as f64 / phase.elapsed;
    let offered = if phase.offered.is_nan() {
        "closed loop".to_string()
    } else {
        format!("{:.0}", phase.offered)
    };
    println!(
        "| {label} | {offered} | {acked:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        phase.errors,
    );
    acked
}

fn main() {
    let seconds: u64 = env_or("INGEST_SECONDS", 10);
    let run_count: usize = env_or("INGEST_RUNS", 256);
    let connections: usize = env_or("INGEST_CONNECTIONS", 2 * run_count);
    let window: u64 = env_or("INGEST_WINDOW_MS", 100);
    let shape = Shape {
        lines: env_or("INGEST_LINES", 100),
        metrics: env_or("INGEST_METRICS", 5),
        values: rendered_values(),
    };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("warehouse");
    let server = start(store.to_str().unwrap(), window);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut ids = Vec::with_capacity(run_count);
        for r in 0..run_count {
            let run: serde_json::Value = client
                .post(format!("{}/api/runs/create", server.1))
                .json(&serde_json::json!({"runName": format!("bench-{r}"), "projectName": "ingest-bench"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ids.push(run["runId"].to_string());
        }
        let runs = Arc::new(Runs {
            next: ids.iter().map(|_| AtomicU64::new(0)).collect(),
            ids,
        });
        println!(
            "{run_count} runs on {connections} connections, {} lines × {} metrics per request, commit window {window} ms, {seconds} s per phase",
            shape.lines, shape.metrics
        );
        println!();
        println!("| load | offered points/s | acknowledged points/s | ack p50 | ack p99 | ack p99.9 | errors |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let base = server.1.clone();
        let max = report(
            "max (closed loop)",
            closed_loop(&client, &base, &runs, shape, seconds, connections).await,
        );
        for percent in [25, 50, 75, 100] {
            let rate = max * percent as f64 / 100.0;
            let phase = open_loop(&client, &base, &runs, shape, seconds, rate, connections).await;
            report(&format!("{percent}%"), phase);
        }
    });
    drop(server);
}
