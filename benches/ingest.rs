//! Sustained ingest through the SDK's NDJSON format: a loopback load generator
//! against a real `forkline serve` on a fresh local store. Reports points/s and
//! acknowledgment latency (an ack means the points are committed) per commit window.
//!
//! Run: `cargo bench --bench ingest` (env: INGEST_SECONDS, INGEST_CLIENTS, INGEST_WINDOWS_MS).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LINES_PER_REQUEST: u64 = 100; // the SDK's sync batch size
const METRICS_PER_LINE: u64 = 5;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server(std::process::Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(store: &str, window_ms: u64) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_forkline"))
        .args(["--store", store, "serve", "--listen", "127.0.0.1:0"])
        .args(["--flight-listen", "off"])
        .args(["--commit-window-ms", &window_ms.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start forkline serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    Server(child, base)
}

fn body(request: u64) -> String {
    let mut out = String::with_capacity(LINES_PER_REQUEST as usize * 140);
    for line in 0..LINES_PER_REQUEST {
        let step = request * LINES_PER_REQUEST + line;
        out.push_str(&format!(
            "{{\"time\": {}, \"step\": {step}, \"data\": {{",
            1_700_000_000_000u64 + step
        ));
        for m in 0..METRICS_PER_LINE {
            let sep = if m == 0 { "" } else { ", " };
            out.push_str(&format!("{sep}\"m{m}\": {}", 1.0 / (step + m + 1) as f64));
        }
        out.push_str("}}\n");
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let seconds: u64 = env_or("INGEST_SECONDS", 10);
    let clients: u64 = env_or("INGEST_CLIENTS", 16);
    let windows: Vec<u64> = std::env::var("INGEST_WINDOWS_MS")
        .unwrap_or_else(|_| "20,100,250".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("| commit window | clients | points/s | requests/s | ack p50 | ack p99 | commits |");
    println!("|---|---|---|---|---|---|---|");
    for window in windows {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("warehouse");
        let server = start(store.to_str().unwrap(), window);
        rt.block_on(async {
            let client = reqwest::Client::new();
            let run: serde_json::Value = client
                .post(format!("{}/api/runs/create", server.1))
                .json(&serde_json::json!({"runName": "bench", "projectName": "ingest-bench"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let run_id = run["runId"].to_string();
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let tasks: Vec<_> = (0..clients)
                .map(|c| {
                    let (client, base, run_id) = (client.clone(), server.1.clone(), run_id.clone());
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        let mut request = c;
                        while Instant::now() < deadline {
                            let payload = body(request);
                            let start = Instant::now();
                            let resp = client
                                .post(format!("{base}/ingest/metrics"))
                                .header("x-run-id", &run_id)
                                .header("content-type", "application/x-ndjson")
                                .body(payload)
                                .send()
                                .await
                                .unwrap();
                            assert_eq!(resp.status(), 200);
                            latencies.push(start.elapsed());
                            request += clients;
                        }
                        latencies
                    })
                })
                .collect();
            let started = Instant::now();
            let mut latencies: Vec<Duration> = Vec::new();
            for t in tasks {
                latencies.extend(t.await.unwrap());
            }
            let elapsed = started.elapsed().as_secs_f64();
            latencies.sort();
            let requests = latencies.len() as f64;
            let commits = std::fs::read_dir(store.join("metrics/_delta_log"))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "json")
                })
                .count();
            println!(
                "| {window} ms | {clients} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {commits} |",
                requests * (LINES_PER_REQUEST * METRICS_PER_LINE) as f64 / elapsed,
                requests / elapsed,
                percentile(&latencies, 0.5).as_secs_f64() * 1e3,
                percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            );
        });
        drop(server);
    }
}
