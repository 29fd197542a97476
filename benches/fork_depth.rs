//! Fork latency against lineage depth, and what a deep fork costs other writers.
//!
//! Builds one chain in a store on local disk: run `k` forks run `k - 1` at
//! step `k - 1` and logs two points (`loss` at `k` and `k + 1`), so the run at
//! depth `k` has `k + 1` segments. Then, in that same store:
//! - forks the run at each depth of `FORK_BENCH_DEPTHS` (default `1,100,1000`)
//!   at its last step, `FORK_BENCH_REPS` times (default 7), interleaved by depth,
//!   and reports the median;
//! - times `stitched_metrics` of the runs at those depths (same medians);
//! - times run create + status update of another project, alone and while
//!   forks at the deepest depth run back to back in another task;
//! - compacts the store and times forks and series again.
//!
//! Run: `cargo bench --bench fork_depth` (release), or in the dev profile:
//! `cargo test --bench fork_depth -- --bench`.
//! `FORK_BENCH_STORE=DIR` keeps (and on later runs reuses) the chain.
//!
//! Without `--bench` (which `cargo bench` passes), as `cargo test --bench
//! fork_depth` in `scripts/test.sh` runs it, it is a check that takes
//! seconds: depths 1, 4 and 8, one repetition, 3 creates a phase. Its
//! checks (a fork at the last step stays on the run; a stitched series at
//! depth `d` has `d + 2` points) still run, so they cannot rot between bench runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use forkline::Engine;
use forkline::catalog::{ForkRequest, NewRun, RunId, RunStatus, RunUpdate};
use forkline::ingest::MetricPoint;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.split(',')
                .map(|d| d.trim().replace('_', "").parse().expect("a list of depths"))
                .collect()
        })
        .unwrap_or_else(|| default.to_vec())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The chain's run ids by depth, extended to `depth` (reusing a kept store's).
async fn chain(engine: &Engine, depth: usize) -> Vec<RunId> {
    let catalog = engine.catalog().await.unwrap();
    let mut runs: Vec<RunId> = Vec::new();
    // The chain is the root of project `chain` and, at each depth, the run
    // forked at step `k - 1` (the measured forks are other children).
    let mut current = catalog
        .runs()
        .find(|r| r.project == "chain" && r.parent_id.is_none())
        .map(|r| r.id);
    while let Some(id) = current {
        runs.push(id);
        let k = runs.len() as u64;
        current = catalog
            .runs()
            .find(|r| r.parent_id == Some(id) && r.fork_step == Some(k - 1) && r.name == "link")
            .map(|r| r.id);
    }
    let started = Instant::now();
    let mut lap = Instant::now();
    while runs.len() <= depth {
        let k = runs.len();
        let id = if k == 0 {
            let run = NewRun {
                project: "chain".into(),
                name: "root".into(),
                ..Default::default()
            };
            engine.create_run(run).await.unwrap().id
        } else {
            let mut fork = ForkRequest::new(runs[k - 1].to_string(), k as u64 - 1);
            fork.name = Some("link".into());
            engine.fork_run(fork).await.unwrap().run.id
        };
        let points = [k as u64, k as u64 + 1]
            .map(|s| MetricPoint::new("loss", s, s as f64))
            .to_vec();
        engine.write_points(&id.to_string(), points).await.unwrap();
        runs.push(id);
        if k.is_multiple_of(100) && k > 0 {
            eprintln!(
                "chain at depth {k}: last 100 links (fork + write) took {} each on average",
                ms(lap.elapsed() / 100)
            );
            lap = Instant::now();
        }
    }
    eprintln!(
        "chain of depth {depth} ready ({} to extend)",
        ms(started.elapsed())
    );
    runs
}

async fn fork_at(engine: &Engine, run: RunId, depth: usize) -> Duration {
    let start = Instant::now();
    let fork = engine
        .fork_run(ForkRequest::new(run.to_string(), depth as u64 + 1))
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(
        fork.parent.id, run,
        "a fork at the last step stays on the run"
    );
    took
}

/// Create + status update of a run of another project, as an SDK's `init`
/// and `finish` do.
async fn other_project_write(engine: &Engine, i: usize) -> Duration {
    let start = Instant::now();
    let run = engine
        .create_run(NewRun {
            project: "other".into(),
            name: format!("other-{i}"),
            ..Default::default()
        })
        .await
        .unwrap();
    engine
        .update_run(&run.id.to_string(), RunUpdate::Status(RunStatus::Completed))
        .await
        .unwrap();
    start.elapsed()
}

/// Median fork latency and median `stitched_metrics` latency at each depth,
/// interleaved by depth, printed as two tables.
async fn forks_and_series(engine: &Engine, runs: &[RunId], depths: &[usize], reps: usize) {
    let mut forks: Vec<Vec<Duration>> = vec![Vec::new(); depths.len()];
    let mut series: Vec<Vec<Duration>> = vec![Vec::new(); depths.len()];
    for _ in 0..reps {
        for (i, &depth) in depths.iter().enumerate() {
            forks[i].push(fork_at(engine, runs[depth], depth).await);
        }
    }
    for _ in 0..reps {
        for (i, &depth) in depths.iter().enumerate() {
            let sql = format!("SELECT * FROM stitched_metrics({}, 'loss')", runs[depth]);
            let start = Instant::now();
            let batches = engine.collect(&sql).await.unwrap();
            series[i].push(start.elapsed());
            let n: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert_eq!(n, depth + 2, "stitched series of depth {depth}");
        }
    }
    for (what, samples) in [("fork", forks), ("`stitched_metrics(run, 'loss')`", series)] {
        let medians: Vec<Duration> = samples.into_iter().map(median).collect();
        println!();
        println!(
            "| lineage depth | {what} p50 ({reps} each) | / depth {} |",
            depths[0]
        );
        println!("|---:|---:|---:|");
        for (depth, m) in depths.iter().zip(&medians) {
            println!(
                "| {depth} | {} | {:.2}x |",
                ms(*m),
                m.as_secs_f64() / medians[0].as_secs_f64()
            );
        }
    }
}

/// Another project's writes alone, then while forks at `depth` run back to
/// back: `creates` timed of each.
async fn other_project(engine: &Arc<Engine>, run: RunId, depth: usize, creates: usize) {
    let mut idle = Vec::new();
    for i in 0..creates {
        idle.push(other_project_write(engine, i).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let forks = Arc::new(AtomicUsize::new(0));
    let forker = {
        let (engine, stop, forks) = (engine.clone(), stop.clone(), forks.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                fork_at(&engine, run, depth).await;
                forks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Let the first deep fork get under way.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut busy = Vec::new();
    for i in 0..creates {
        busy.push(other_project_write(engine, creates + i).await);
    }
    stop.store(true, Ordering::Relaxed);
    forker.await.unwrap();
    let max = |s: &[Duration]| *s.iter().max().unwrap();
    println!();
    println!("| another project's create + status update ({creates} each) | p50 | max |");
    println!("|---|---:|---:|");
    println!(
        "| alone | {} | {} |",
        ms(median(idle.clone())),
        ms(max(&idle))
    );
    println!(
        "| while depth-{depth} forks run back to back ({} forks meanwhile) | {} | {} |",
        forks.load(Ordering::Relaxed),
        ms(median(busy.clone())),
        ms(max(&busy))
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let depths = env_list(
        "FORK_BENCH_DEPTHS",
        if full { &[1, 100, 1000] } else { &[1, 4, 8] },
    );
    let reps = env_list("FORK_BENCH_REPS", if full { &[7] } else { &[1] })[0];
    let deepest = *depths.iter().max().expect("at least one depth");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let temp = tempfile::tempdir().unwrap();
        let store = std::env::var("FORK_BENCH_STORE")
            .unwrap_or_else(|_| temp.path().join("warehouse").to_string_lossy().into_owned());
        let engine = Arc::new(Engine::open(&store).await.unwrap());
        let runs = chain(&engine, deepest).await;

        println!("Store as written (a metrics file per commit):");
        forks_and_series(&engine, &runs, &depths, reps).await;
        let creates = if full { 15 } else { 3 };
        other_project(&engine, runs[deepest], deepest, creates).await;

        let report = forkline::maintenance::compact::compact(&engine, &Default::default())
            .await
            .unwrap();
        println!();
        println!("After `forkline compact` ({report}):");
        forks_and_series(&engine, &runs, &depths, reps).await;
    });
}
