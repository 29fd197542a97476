//! Q3, Q4 and Q5 (and Q1, for the cluster path's fixed cost) on one store:
//! locally with one thread, on a cluster of one executor with one slot, and
//! on two executors with one slot each, every executor pinned to a core of
//! its own with `taskset`. The three run interleaved in one process, and the
//! cluster's rows must equal the local ones (floats within 1e-9 relative:
//! sums added in another order differ in their last bits).
//!
//! Beside the p50 times it prints where the cluster path's time goes before
//! the scheduler sees the plan (planning with the cluster's settings, and
//! the plan's encode + decode, with its size in bytes); the rest of the gap
//! to local execution is scheduling, shuffle and fetching results. Q5 gives
//! the sizing figure: stored points scanned per executor slot per second.
//!
//! Run: `cargo bench --bench cluster` (release build). `CLUSTER_BENCH_STORE`
//! names an existing bench store (`forkline bench-data --scale 1 --store …`);
//! without it one of `CLUSTER_BENCH_SCALE` (default 0.1) is generated in a
//! temporary directory. `CLUSTER_BENCH_ITERATIONS` (default 7).
//!
//! Without `--bench` (which `cargo bench` passes), as `cargo test --bench
//! cluster` in `scripts/test.sh` runs it, it is a check that takes seconds:
//! a store of scale 0.003, one iteration, executors not pinned. The rows
//! must still be equal, so the comparison cannot rot between bench runs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use forkline::cluster::codec::ForklineCodec;
use forkline::cluster::remote::{self, Remote};
use forkline::fixtures::bench_data::{self, BenchSpec};
use forkline::{Engine, EngineOptions};
use prost::Message;

const BINARY: &str = env!("CARGO_BIN_EXE_forkline");

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether this is `cargo bench` (which passes `--bench`) rather than the
/// tiny check `cargo test --bench cluster` runs.
fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `forkline ARGS`, pinned to `core` when `taskset` exists.
fn pinned(core: Option<usize>, args: &[String]) -> Command {
    let taskset = Command::new("taskset").arg("-V").output().is_ok();
    match core.filter(|_| taskset) {
        Some(core) => {
            let mut command = Command::new("taskset");
            command.args(["-c", &core.to_string(), BINARY]).args(args);
            command
        }
        None => {
            let mut command = Command::new(BINARY);
            command.args(args);
            command
        }
    }
}

/// A scheduler and `executors` executors of one slot, executor `i` on core `i`.
fn cluster(store: &str, executors: usize) -> (Vec<Process>, String) {
    let mut scheduler = pinned(
        None,
        &["--store", store, "scheduler", "--listen", "127.0.0.1:0"].map(String::from),
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(scheduler.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .split_whitespace()
        .find(|w| w.starts_with("df://"))
        .unwrap()
        .to_string();
    let mut processes = vec![Process(scheduler)];
    for i in 0..executors {
        let flight = free_port();
        let args: Vec<String> = [
            "--store",
            store,
            "executor",
            "--scheduler",
            &address,
            "--slots",
            "1",
            "--listen",
            &format!("127.0.0.1:{flight}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let core = full_run().then_some(i);
        processes.push(Process(pinned(core, &args).spawn().unwrap()));
        while std::net::TcpStream::connect(("127.0.0.1", flight)).is_err() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    (processes, address)
}

fn render(batches: &[arrow::array::RecordBatch]) -> Vec<Vec<String>> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let columns: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(columns.iter().map(|c| c.value(row).to_string()).collect());
        }
    }
    rows.sort();
    rows
}

/// Cell for cell the same, floats within 1e-9 relative.
fn same(got: &[Vec<String>], expected: &[Vec<String>]) -> bool {
    got.len() == expected.len()
        && got.iter().zip(expected).all(|(g, e)| {
            g.len() == e.len()
                && g.iter().zip(e).all(|(a, b)| {
                    a == b
                        || matches!((a.parse::<f64>(), b.parse::<f64>()),
                            (Ok(x), Ok(y)) if (x - y).abs() <= 1e-9 * x.abs().max(y.abs()))
                })
        })
}

async fn time(engine: &Engine, sql: &str) -> (Duration, Vec<Vec<String>>) {
    let start = Instant::now();
    let batches = engine.collect(sql).await.unwrap();
    (start.elapsed(), render(&batches))
}

/// What the cluster path does before the scheduler has the plan: planning
/// with the cluster's settings, then the plan's protobuf encode and decode
/// (the scheduler decodes it, as does each executor for its stage); and the
/// encoded size.
async fn before_submission(engine: &Engine, sql: &str) -> (Duration, Duration, usize) {
    let start = Instant::now();
    let (state, plan) = remote::physical_plan(engine.sql(sql).await.unwrap())
        .await
        .unwrap();
    let planned = start.elapsed();
    let start = Instant::now();
    let codec = ForklineCodec::default();
    let bytes = PhysicalPlanNode::try_from_physical_plan(plan, &codec)
        .unwrap()
        .encode_to_vec();
    PhysicalPlanNode::decode(bytes.as_slice())
        .unwrap()
        .try_into_physical_plan(state.task_ctx().as_ref(), &codec)
        .unwrap();
    (planned, start.elapsed(), bytes.len())
}

fn p50(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    let full = full_run();
    let iterations = env("CLUSTER_BENCH_ITERATIONS", if full { 7usize } else { 1 });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = std::env::var("CLUSTER_BENCH_STORE").unwrap_or_else(|_| {
            tmp.path().join("warehouse").to_string_lossy().into_owned()
        });
        let one_thread = EngineOptions {
            target_partitions: 1,
            ..Default::default()
        };
        let local = Engine::open_with(&store, one_thread.clone()).await.unwrap();
        if local.catalog().await.unwrap().runs().count() == 0 {
            let spec = BenchSpec {
                scale: env("CLUSTER_BENCH_SCALE", if full { 0.1 } else { 0.003 }),
                seed: 42,
                commits: None,
                compact_every: None,
            };
            eprintln!("generating a bench store of scale {} in {store}", spec.scale);
            bench_data::run(&local, &spec).await.unwrap();
        }
        let first = |sql: &'static str| {
            let local = &local;
            async move {
                let (_, rows) = time(local, sql).await;
                rows[0][0].clone()
            }
        };
        let deep = first(
            "SELECT display_id FROM runs WHERE project = 'bench' AND parent_id IS NOT NULL ORDER BY id DESC LIMIT 1",
        )
        .await;
        let family = first(
            "SELECT display_id FROM runs WHERE project = 'bench' AND parent_id IS NULL ORDER BY id LIMIT 1",
        )
        .await;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/queries");
        let queries: Vec<(&str, String)> = [
            ("Q1", "q1_stitched_one_metric.sql"),
            ("Q3", "q3_family_one_metric.sql"),
            ("Q4", "q4_leaderboard.sql"),
            ("Q5", "q5_full_scan.sql"),
        ]
        .iter()
        .map(|(name, file)| {
            let sql = std::fs::read_to_string(format!("{dir}/{file}"))
                .unwrap()
                .replace("{run}", &deep)
                .replace("{family}", &family)
                .replace("{metric}", "train/loss");
            (*name, sql)
        })
        .collect();

        let (_one, one_address) = cluster(&store, 1);
        let (_two, two_address) = cluster(&store, 2);
        // Plans split scans into as many partitions as the cluster has slots.
        let on = |address: &str, slots: usize| EngineOptions {
            runner: Arc::new(Remote::new(address).unwrap()),
            target_partitions: slots,
            ..Default::default()
        };
        let one = Engine::open_with(&store, on(&one_address, 1)).await.unwrap();
        let two = Engine::open_with(&store, on(&two_address, 2)).await.unwrap();

        let points: f64 = time(&local, "SELECT count(*) FROM metrics").await.1[0][0]
            .parse()
            .unwrap();
        println!(
            "| query | local, 1 thread | 1 executor × 1 slot | 2 executors × 1 slot | 2 executors / 1 executor | cluster − local (1 slot) | of which planning | of which plan encode + decode | plan size |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (name, sql) in &queries {
            let (_, expected) = time(&local, sql).await;
            assert!(!expected.is_empty(), "{name}: no rows to compare");
            let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
            let (mut planning, mut wire, mut size) = (Vec::new(), Vec::new(), 0);
            for _ in 0..iterations {
                let (t, rows) = time(&local, sql).await;
                a.push(t);
                assert!(same(&rows, &expected), "{name} locally");
                let (t, rows) = time(&one, sql).await;
                b.push(t);
                assert!(same(&rows, &expected), "{name} on one executor");
                let (t, rows) = time(&two, sql).await;
                c.push(t);
                assert!(same(&rows, &expected), "{name} on two executors");
                let (p, w, bytes) = before_submission(&one, sql).await;
                planning.push(p);
                wire.push(w);
                size = bytes;
            }
            let (a, b, c) = (p50(a), p50(b), p50(c));
            println!(
                "| {name} | {a:.1} ms | {b:.1} ms | {c:.1} ms | {:.2}× | {:.1} ms | {:.1} ms | {:.1} ms | {size} B |",
                b / c,
                b - a,
                p50(planning),
                p50(wire),
            );
            if *name == "Q5" {
                println!(
                    "\nQ5 scans {points} stored points: {:.1} M points per executor slot per second (1 × 1), {:.1} M with 2 × 1",
                    points / b * 1e3 / 1e6,
                    points / c * 1e3 / 1e6 / 2.0
                );
            }
        }
    });
}
