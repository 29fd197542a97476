//! An all-families report versus the same numbers from per-run queries.
//!
//! Builds a store of `REPORT_BENCH_RUNS` runs (default 1,000) in families of
//! ten (binary fork trees, depth ≤ 3) holding about `REPORT_BENCH_POINTS`
//! points (default 50M: `train/loss` every step, `val/loss` every 50 steps),
//! then times
//! - the report: `forkline report --all-families --metrics train/loss,val/loss`
//!   as a library call, JSON rendered (one scan per metric over all families);
//! - per-run queries one by one: `stitched_metrics(run, metric)` for every run
//!   and metric, each series collected and the same per-run numbers computed,
//!   and checks that both give the same last and best values.
//!
//! Run: `cargo bench --bench report` (release), or in the dev profile
//! `cargo test --bench report -- --bench` (at a smaller scale:
//! `REPORT_BENCH_POINTS=5000000 cargo test --bench report -- --bench`).
//! `REPORT_BENCH_STORE=DIR` keeps (and on later runs reuses) the store.
//!
//! Without `--bench` (which `cargo bench` passes), as `cargo test --bench
//! report` in `scripts/test.sh` runs it, it is a check that takes seconds:
//! 20 runs, 20,000 points. Both ways must still agree on every row, so the
//! comparison cannot rot between bench runs.

use std::collections::HashMap;
use std::time::Instant;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use forkline::catalog::{ForkRequest, NewRun, RunId};
use forkline::ingest::{MetricPoint, PointBatch};
use forkline::report::{self, Goals, ReportFormat, ReportRequest, stats};
use forkline::{Engine, EngineOptions};

const FAMILY_SIZE: usize = 10;
const EVAL_EVERY: u64 = 50;
const METRICS: [&str; 2] = ["train/loss", "val/loss"];
/// Points per commit while generating, to bound memory.
const COMMIT_POINTS: usize = 2_000_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Own points of a run on steps `from..from + steps`, a noisy decaying loss.
fn points(run: RunId, from: u64, steps: u64) -> Vec<MetricPoint> {
    let mut out = Vec::with_capacity(steps as usize + steps as usize / EVAL_EVERY as usize + 1);
    for step in from..from + steps {
        let x = step as f64;
        let noise =
            ((step.wrapping_mul(2_654_435_761) ^ run.wrapping_mul(40_503)) % 1000) as f64 / 1e4;
        let loss = 0.2 + 5.0 / (1.0 + x / 500.0) + noise + run as f64 % 7.0 * 1e-3;
        out.push(MetricPoint {
            metric: METRICS[0].into(),
            step,
            value: loss,
            time_us: Some(step as i64),
        });
        if step % EVAL_EVERY == 0 {
            out.push(MetricPoint {
                metric: METRICS[1].into(),
                step,
                value: loss * 1.1,
                time_us: Some(step as i64),
            });
        }
    }
    out
}

async fn flush(engine: &Engine, batch: &mut PointBatch) {
    let full = std::mem::take(batch);
    engine.ingest(full).await.unwrap();
}

/// Creates the runs level by level (all roots, then all depth-1 forks, …) so
/// that points go in few large commits; returns the number of points.
async fn generate(engine: &Engine, runs: usize, total_points: usize) -> usize {
    // Rounded up, so the store holds at least the points asked for.
    let steps =
        (total_points as f64 / runs as f64 / (1.0 + 1.0 / EVAL_EVERY as f64)).ceil() as u64 + 1;
    let families = runs.div_ceil(FAMILY_SIZE);
    // Per family member k: (run id, first own step).
    let mut members: Vec<Vec<(RunId, u64)>> = vec![Vec::new(); families];
    let mut written = 0usize;
    let mut batch = PointBatch::new();
    let started = Instant::now();
    for level in 0..4u32 {
        let ks: Vec<usize> = (0..FAMILY_SIZE)
            .filter(|k| (usize::BITS - (k + 1).leading_zeros() - 1) == level)
            .collect();
        for (f, family) in members.iter_mut().enumerate() {
            for &k in &ks {
                if f * FAMILY_SIZE + k >= runs {
                    continue;
                }
                let (id, from) = if k == 0 {
                    let run = engine
                        .create_run(NewRun {
                            project: "bench".into(),
                            name: format!("family-{f}"),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    (run.id, 0)
                } else {
                    let (parent, parent_from) = family[(k - 1) / 2];
                    // Sibling forks branch at different points of the parent's segment.
                    let fork_step = parent_from + steps / 3 + (k as u64 % 2) * steps / 3;
                    let mut req = ForkRequest::new(parent.to_string(), fork_step);
                    req.name = Some(format!("family-{f}-{k}"));
                    let fork = engine.fork_run(req).await.unwrap();
                    (fork.run.id, fork_step + 1)
                };
                family.push((id, from));
                let own = points(id, from, steps);
                written += own.len();
                batch.extend(id, own).unwrap();
                if batch.len() >= COMMIT_POINTS {
                    flush(engine, &mut batch).await;
                }
            }
        }
        flush(engine, &mut batch).await;
        eprintln!(
            "  level {level} written: {written} points, {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    written
}

/// The per-run way: one `stitched_metrics` query per run and metric, the
/// series collected, and the same numbers computed from it.
async fn per_run(engine: &Engine, query_s: &mut f64) -> HashMap<(String, RunId), stats::RunStats> {
    let catalog = engine.catalog().await.unwrap();
    let mut runs: Vec<_> = catalog
        .runs()
        .filter(|r| r.project == "bench")
        .cloned()
        .collect();
    // Parents before children, so a child's parent series is at hand.
    runs.sort_by_key(|r| r.id);
    let mut out = HashMap::new();
    for metric in METRICS {
        let mut series: HashMap<RunId, Vec<report::Point>> = HashMap::new();
        for run in &runs {
            let sql = format!(
                "SELECT step, value, inherited FROM stitched_metrics({}, '{metric}') ORDER BY step",
                run.id
            );
            let asked = Instant::now();
            let batches = engine.collect(&sql).await.unwrap();
            *query_s += asked.elapsed().as_secs_f64();
            let mut points = Vec::new();
            for b in &batches {
                let steps = b.column(0).as_primitive::<Int64Type>();
                let values = b.column(1).as_primitive::<Float64Type>();
                let inherited = b.column(2).as_boolean();
                for i in 0..b.num_rows() {
                    points.push(report::Point {
                        step: steps.value(i) as u64,
                        value: if values.is_null(i) {
                            f64::NAN
                        } else {
                            values.value(i)
                        },
                        inherited: inherited.value(i),
                    });
                }
            }
            let parent = run
                .parent_id
                .zip(run.fork_step)
                .and_then(|(p, f)| series.get(&p).map(|s| (s.as_slice(), f)));
            let st = stats::run_stats(&points, parent, stats::Goal::Min);
            out.insert((metric.to_string(), run.id), st);
            series.insert(run.id, points);
        }
    }
    out
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runs = env("REPORT_BENCH_RUNS", if full { 1_000 } else { 20 });
    let total = env(
        "REPORT_BENCH_POINTS",
        if full { 50_000_000 } else { 20_000 },
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let kept = std::env::var("REPORT_BENCH_STORE").ok();
        let store = kept
            .clone()
            .unwrap_or_else(|| tmp.path().join("warehouse").to_string_lossy().into_owned());
        let engine = Engine::open_with(&store, EngineOptions::default())
            .await
            .unwrap();
        let existing = engine.catalog().await.unwrap().runs().count();
        if existing == 0 {
            eprintln!("generating {runs} runs, ~{total} points in {store}");
            let started = Instant::now();
            let written = generate(&engine, runs, total).await;
            eprintln!(
                "generated {written} points in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        } else {
            eprintln!("reusing {store} ({existing} runs)");
        }
        let catalog = engine.catalog().await.unwrap();
        let n_runs = catalog.runs().filter(|r| r.project == "bench").count();
        let points = engine
            .collect("SELECT count(*) FROM metrics")
            .await
            .unwrap()[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0);

        let request = ReportRequest {
            project: "bench".into(),
            families: Vec::new(),
            all_families: true,
            metrics: METRICS.iter().map(|m| m.to_string()).collect(),
            goals: Goals::default(),
        };
        // Time inside the scans (first event of a scan to its end) versus the rest.
        let scanning = std::sync::Mutex::new((None::<Instant>, 0f64));
        let on_progress = |p: report::Progress| {
            let mut s = scanning.lock().unwrap();
            match p {
                report::Progress::Scan { rows: 0, .. } => s.0 = Some(Instant::now()),
                report::Progress::ScanDone { .. } => {
                    if let Some(t) = s.0.take() {
                        s.1 += t.elapsed().as_secs_f64();
                    }
                }
                _ => {}
            }
        };
        let started = Instant::now();
        let built = report::build(&engine, &request, &forkline::scope::Projects::All, &on_progress)
            .await
            .unwrap();
        let scan_s = scanning.lock().unwrap().1;
        let json = report::render::render(&built, ReportFormat::Json).unwrap();
        let report_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let html = report::render::render(&built, ReportFormat::Html).unwrap();
        let html_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut naive_query_s = 0.0;
        let naive = per_run(&engine, &mut naive_query_s).await;
        let naive_s = started.elapsed().as_secs_f64();

        let mut compared = 0;
        for family in &built.families {
            for section in &family.metrics {
                for row in &section.runs {
                    let other = &naive[&(section.metric.clone(), row.run_id)];
                    assert_eq!(row.stats.last_value, other.last_value, "{}", row.display_id);
                    assert_eq!(row.stats.best_value, other.best_value, "{}", row.display_id);
                    assert_eq!(row.stats.delta_last_common, other.delta_last_common);
                    compared += 1;
                }
            }
        }
        assert_eq!(
            compared,
            n_runs * METRICS.len(),
            "a row per run and metric"
        );
        println!(
            "store: {n_runs} runs, {points} points, {} families; {compared} (run, metric) rows agree",
            built.families.len()
        );
        println!(
            "all-families report (2 metrics, JSON {} KiB): {report_s:.2} s ({scan_s:.2} s in the 2 scans); HTML rendering {html_s:.2} s ({} KiB)",
            json.len() >> 10,
            html.len() >> 10
        );
        println!(
            "per-run stitched_metrics queries one by one ({} queries): {naive_s:.2} s ({naive_query_s:.2} s in the queries)",
            n_runs * METRICS.len()
        );
        println!("per-run / report: {:.1}x", naive_s / report_s);
    });
}
