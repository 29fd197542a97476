//! The run-at-a-time partial aggregate (`RunAggregateExec`) changes no answer:
//! every query is run in forkline's session and in a twin session without the
//! rule, on real Delta tables, and floats are compared bit for bit.

mod common;
#[path = "run_aggregate/ordered_first_last.rs"]
mod ordered_first_last;

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::common::collect as common_collect;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use forkline::Engine;
use forkline::catalog::NewRun;
use forkline::ingest::MetricPoint;
use forkline::maintenance::compact::{CompactOptions, compact};
use forkline::query::aggregates::run::{FALLBACK_METRIC, MIN_MEAN_RUN, RULE_NAME, RunAggregate};

/// Values DataFusion's float min/max/sum treat specially, and plain ones.
const SPECIALS: [f64; 12] = [
    f64::NAN,
    -0.0,
    0.0,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1.5,
    -2.25,
    -f64::NAN,
    f64::MIN,
    f64::MAX,
    3.0,
    1e-300,
];

/// Metric names: inline in a Utf8View view (≤ 12 bytes) and not.
const METRICS: [&str; 9] = [
    "a",
    "acc",
    "loss",
    "twelve_bytes",
    "thirteen_byte",
    "train/a/very/long/metric/name",
    "zz/only_neg_inf",
    "zz/signed_zeros",
    "zz/signed_zeros_min",
];

/// The points of metric `m` of run `r`: run lengths that are not multiples
/// of the test batch size (7), so runs of keys cross batch boundaries.
fn points(r: usize, m: usize) -> Vec<MetricPoint> {
    let name = METRICS[m];
    let steps = 3 + 11 * m + 5 * r;
    (0..steps as u64)
        .map(|s| {
            let i = s as usize + 3 * m + r;
            let value = match name {
                "zz/only_neg_inf" => f64::NEG_INFINITY,
                // Zeros of both signs, the first one at step 1 and one of the
                // other sign at step 8: a fold by lanes of 8 sees that one first.
                "zz/signed_zeros" if s == 0 => -1.0,
                "zz/signed_zeros" => [0.0, -0.0][s as usize % 2],
                "zz/signed_zeros_min" if s == 0 => 1.0,
                "zz/signed_zeros_min" => [-0.0, 0.0][s as usize % 2],
                // Mostly plain values with a special one every few rows.
                _ if i.is_multiple_of(4) => SPECIALS[(i / 4) % SPECIALS.len()],
                _ => (i % 9) as f64 - 4.0 + 0.125 * r as f64,
            };
            MetricPoint {
                metric: name.into(),
                step: s,
                value,
                time_us: Some(1_700_000_000_000_000 + s as i64 * 1000),
            }
        })
        .collect()
}

/// A compacted store of `runs` runs logging every metric, in one sorted
/// file or, with `file_per_run`, one per run.
async fn store(runs: usize, file_per_run: bool) -> (tempfile::TempDir, Engine) {
    let (dir, url) = common::temp_store();
    let engine = Engine::open(&url).await.unwrap();
    for r in 0..runs {
        let run = engine
            .create_run(NewRun {
                project: "p".into(),
                name: format!("r{r}"),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut batch = Vec::new();
        // Written out of order; compaction sorts by (run_id, metric, step).
        for m in (0..METRICS.len()).rev() {
            batch.extend(points(r, m));
        }
        engine.write_points(&run.display_id, batch).await.unwrap();
    }
    let options = CompactOptions {
        // A file never splits a run: one row per file is one run per file.
        target_rows: if file_per_run { 1 } else { 4_000_000 },
        ..CompactOptions::default()
    };
    compact(&engine, &options).await.unwrap();
    (dir, engine)
}

/// forkline's session and its twin without the rule, both reading batches
/// of `batch_size` rows, and each partition reading whole files in order: round-robin
/// repartitioning would interleave batches of several files into a
/// partition by timing, and with it the order in which NaNs, ±0 and float
/// sums are folded (DataFusion's answers then vary from run to run).
/// In forkline's, the rule hands partitions whose runs average under
/// `min_mean_run` rows to DataFusion's aggregate (0: never, so that the run
/// path is what short-run test data exercises).
async fn sessions(
    engine: &Engine,
    batch_size: usize,
    min_mean_run: usize,
) -> (SessionContext, SessionContext) {
    let state = engine.session().await.unwrap().state();
    // Not a fresh default catalog over the one holding forkline's tables.
    let mut config = state
        .config()
        .clone()
        .with_batch_size(batch_size)
        .with_create_default_catalog_and_schema(false);
    config
        .options_mut()
        .optimizer
        .enable_round_robin_repartition = false;
    let with_rules = state
        .physical_optimizers()
        .iter()
        .map(|r| {
            if r.name() == RULE_NAME {
                Arc::new(RunAggregate::with_min_mean_run(min_mean_run)) as _
            } else {
                Arc::clone(r)
            }
        })
        .collect();
    let with = SessionStateBuilder::new_from_existing(state.clone())
        .with_config(config.clone())
        .with_physical_optimizer_rules(with_rules)
        .build();
    let rules = state
        .physical_optimizers()
        .iter()
        .filter(|r| r.name() != RULE_NAME)
        .cloned()
        .collect();
    let without = SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .with_physical_optimizer_rules(rules)
        .build();
    (
        SessionContext::new_with_state(with),
        SessionContext::new_with_state(without),
    )
}

async fn physical(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    ctx.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .create_physical_plan()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The partial aggregate of `plan`: forkline's or DataFusion's.
fn partial(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let is_partial = plan.name() == "RunAggregateExec"
        || plan
            .downcast_ref::<AggregateExec>()
            .is_some_and(|a| *a.mode() == AggregateMode::Partial);
    if is_partial {
        return Some(Arc::clone(plan));
    }
    plan.children().into_iter().find_map(partial)
}

fn uses_rule(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.name() == "RunAggregateExec" || plan.children().into_iter().any(uses_rule)
}

/// Rows as strings, floats as their bits (so -0.0 and 0.0 differ), except
/// that every NaN is `NaN`: Rust (like LLVM) leaves the sign and payload of
/// a NaN that arithmetic produces unspecified (`NaN + -NaN`, `inf + -inf`),
/// so two builds of the same sum may differ in them.
fn exact(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            out.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(row) {
                            return "NULL".to_string();
                        }
                        match c.data_type() {
                            DataType::Float64 => {
                                let v = c.as_primitive::<Float64Type>().value(row);
                                if v.is_nan() {
                                    "NaN".into()
                                } else {
                                    format!("f64:{:016x}", v.to_bits())
                                }
                            }
                            DataType::Float32 => {
                                let v = c.as_primitive::<Float32Type>().value(row);
                                if v.is_nan() {
                                    "NaN".into()
                                } else {
                                    format!("f32:{:08x}", v.to_bits())
                                }
                            }
                            _ => ArrayFormatter::try_new(c.as_ref(), &options)
                                .unwrap()
                                .value(row)
                                .to_string(),
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

/// `sql` gives the same rows with and without the rule, which it uses.
async fn assert_same_answer(with: &SessionContext, without: &SessionContext, sql: &str) {
    let (a, b) = (physical(with, sql).await, physical(without, sql).await);
    assert!(uses_rule(&a), "not rewritten: {sql}");
    assert!(!uses_rule(&b), "the twin session rewrote: {sql}");
    let a = exact(&collect(a, with.task_ctx()).await.unwrap());
    let b = exact(&collect(b, without.task_ctx()).await.unwrap());
    assert!(!a.is_empty(), "{sql}");
    assert_eq!(a, b, "{sql}");
}

/// The queries the rule rewrites: Q5, nullable arguments and keys, integer
/// and timestamp min/max, integer sums, count of a nullable column.
const REWRITTEN: [&str; 5] = [
    "SELECT metric, count(*) AS n, sum(value) AS sum, min(value) AS min, max(value) AS max \
     FROM metrics GROUP BY metric ORDER BY metric",
    "SELECT metric, count(v), sum(v), min(v), max(v), count(*) FROM \
     (SELECT metric, CASE WHEN step % 3 = 1 THEN NULL ELSE value END AS v FROM metrics) \
     GROUP BY metric ORDER BY metric",
    "SELECT k, count(*), sum(value), min(value), max(value), min(step), max(step), \
     sum(step), min(time), max(time) FROM \
     (SELECT CASE WHEN step % 5 = 2 THEN NULL ELSE metric END AS k, value, step, time FROM metrics) \
     GROUP BY k ORDER BY k NULLS FIRST",
    "SELECT metric, sum(CASE WHEN step > 1000 THEN value END) AS all_null, \
     min(CASE WHEN step > 1000 THEN value END), count(CASE WHEN step > 1000 THEN value END) \
     FROM metrics GROUP BY metric ORDER BY metric",
    "SELECT metric, max(run_id), min(CAST(value AS FLOAT)), max(CAST(value AS FLOAT)) \
     FROM metrics GROUP BY metric ORDER BY metric",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_with_and_without_the_rewrite() {
    // One run, so one file and one scan partition: each group then reaches the
    // final aggregate as one partial state, and DataFusion's own answer does
    // not depend on which partition's state arrives first (it does for float
    // min/max around NaNs, and in the last bits of float sums).
    let (_dir, engine) = store(1, false).await;
    // Runs cut by batch boundaries, and long enough for the lanes of the
    // float min/max fast path; the run path forced, and as chosen by default
    // (which gives the short runs of NULL keys to DataFusion's aggregate).
    for batch_size in [7, 8192] {
        for min_mean_run in [0, MIN_MEAN_RUN] {
            let (with, without) = sessions(&engine, batch_size, min_mean_run).await;
            for sql in REWRITTEN {
                assert_same_answer(&with, &without, sql).await;
            }
        }
    }
    let with = engine.session().await.unwrap();
    // The values DataFusion 55's grouped min/max give, which the rewrite keeps:
    // max of only -inf is f64::MIN, and of equal zeros the first (at step 1).
    let rows = exact(
        &with
            .sql("SELECT metric, max(value), min(value) FROM metrics WHERE metric LIKE 'zz/%' GROUP BY metric ORDER BY metric")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap(),
    );
    let bits = |v: f64| format!("f64:{:016x}", v.to_bits());
    assert_eq!(
        rows[0][1..],
        [bits(f64::MIN), bits(f64::NEG_INFINITY)],
        "{rows:?}"
    );
    assert_eq!(
        rows[1][1..],
        [bits(-0.0), bits(-1.0)],
        "first of equal zeros: {rows:?}"
    );
    assert_eq!(
        rows[2][1..],
        [bits(1.0), bits(0.0)],
        "first of equal zeros: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_partial_states_in_every_partition() {
    // Several files over two partitions: compare what each partition's partial
    // aggregate emits. Partitions of one plan steal files from each other as
    // they go (DataFusion 55), so each partition runs alone on a fresh plan,
    // where it reads its own files then its sibling's, in a fixed order.
    let (_dir, engine) = store(5, true).await;
    let (with, without) = sessions(&engine, 7, 0).await;
    for sql in REWRITTEN {
        let partitions = partial(&physical(&with, sql).await)
            .unwrap()
            .properties()
            .output_partitioning()
            .partition_count();
        assert!(partitions > 1, "{sql}: {partitions} partition");
        for p in 0..partitions {
            let mut states = Vec::new();
            for (ctx, name) in [(&with, "RunAggregateExec"), (&without, "AggregateExec")] {
                let plan = partial(&physical(ctx, sql).await).unwrap();
                assert_eq!(plan.name(), name, "{sql}");
                let stream = plan.execute(p, ctx.task_ctx()).unwrap();
                let mut rows = exact(&common_collect(stream).await.unwrap());
                rows.sort();
                assert!(!rows.is_empty(), "{sql}: partition {p} is empty");
                states.push(rows);
            }
            assert_eq!(states[0], states[1], "{sql}: partition {p}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_only_shapes_it_computes() {
    let (_dir, engine) = store(2, false).await;
    // forkline's own session, as queries get it.
    let with = engine.session().await.unwrap();
    for sql in REWRITTEN {
        assert!(
            uses_rule(&physical(&with, sql).await),
            "not rewritten: {sql}"
        );
    }
    let kept = [
        // (One DISTINCT aggregate alone is planned as a plain count over a
        // GROUP BY metric, step, which is rewritten.)
        "SELECT metric, count(DISTINCT step), count(DISTINCT value) FROM metrics GROUP BY metric",
        "SELECT metric, count(*) FILTER (WHERE step > 3) FROM metrics GROUP BY metric",
        "SELECT metric, sum(value) FILTER (WHERE value > 0) FROM metrics GROUP BY metric",
        "SELECT metric, run_id, count(*) FROM metrics GROUP BY metric, run_id",
        "SELECT run_id, count(*), sum(value) FROM metrics GROUP BY run_id",
        "SELECT metric, avg(value) FROM metrics GROUP BY metric",
        "SELECT metric, array_agg(value ORDER BY step) FROM metrics GROUP BY metric",
        "SELECT metric, count(*) FROM metrics GROUP BY GROUPING SETS ((metric), ())",
        "SELECT count(*), sum(value) FROM metrics",
    ];
    for sql in kept {
        assert!(!uses_rule(&physical(&with, sql).await), "rewritten: {sql}");
    }
}

/// How many partitions of the run aggregate in `plan` (executed) were handed
/// to DataFusion's aggregate.
fn fallbacks(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let node = partial(plan).unwrap();
    assert_eq!(node.name(), "RunAggregateExec");
    node.metrics()
        .unwrap()
        .sum_by_name(FALLBACK_METRIC)
        .map_or(0, |m| m.as_usize())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_runs_go_to_datafusions_aggregate() {
    let (_dir, engine) = store(1, false).await;
    // A key per row, and runs of 2: short; Q5's metric runs (3 to 91 rows,
    // cut by 7-row batches): long.
    let short = [
        "SELECT k, count(*), sum(value), min(value), max(value) FROM \
         (SELECT arrow_cast(CAST(step AS VARCHAR), 'Utf8View') AS k, value FROM metrics) \
         GROUP BY k ORDER BY k",
        "SELECT k, count(*), sum(value), min(value), max(value) FROM \
         (SELECT arrow_cast(concat(metric, CAST(step / 2 AS VARCHAR)), 'Utf8View') AS k, value \
         FROM metrics) GROUP BY k ORDER BY k",
    ];
    for batch_size in [7, 8192] {
        let (with, without) = sessions(&engine, batch_size, MIN_MEAN_RUN).await;
        for (sql, short) in short
            .iter()
            .map(|s| (*s, true))
            .chain([(REWRITTEN[0], false)])
        {
            let plan = physical(&with, sql).await;
            let a = exact(&collect(Arc::clone(&plan), with.task_ctx()).await.unwrap());
            let b = physical(&without, sql).await;
            assert!(!uses_rule(&b), "{sql}");
            let b = exact(&collect(b, without.task_ctx()).await.unwrap());
            assert!(!a.is_empty(), "{sql}");
            assert_eq!(a, b, "{sql}");
            let n = fallbacks(&plan);
            assert_eq!(n > 0, short, "{sql}: {n} partitions fell back");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_state_is_reserved_and_emitted_when_the_pool_is_full() {
    let (_dir, engine) = store(1, false).await;
    let (with, _) = sessions(&engine, 7, 0).await;
    let total = with
        .sql("SELECT count(*) FROM metrics")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0);
    // 90 groups, each coming back every 10 rows (forced onto the run path),
    // in a pool too small for them all.
    let sql = "SELECT k, count(*), sum(value) FROM \
               (SELECT arrow_cast(concat(metric, CAST(step % 10 AS VARCHAR)), 'Utf8View') AS k, \
               value FROM metrics) GROUP BY k";
    for (limit, early) in [(4096, true), (1 << 30, false)] {
        let pool = Arc::new(GreedyMemoryPool::new(limit));
        let runtime = RuntimeEnvBuilder::from_runtime_env(&with.runtime_env())
            .with_memory_pool(Arc::clone(&pool) as Arc<dyn MemoryPool>)
            .build_arc()
            .unwrap();
        let ctx = SessionStateBuilder::new_from_existing(with.state())
            .with_runtime_env(runtime)
            .build()
            .task_ctx();
        // Partition 0 alone reads every file (see above).
        let plan = partial(&physical(&with, sql).await).unwrap();
        assert_eq!(plan.name(), "RunAggregateExec");
        let states = common_collect(plan.execute(0, ctx).unwrap()).await.unwrap();
        let rows: usize = states.iter().map(|b| b.num_rows()).sum();
        let counted: i64 = states
            .iter()
            .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
            .sum();
        assert_eq!(counted, total, "limit {limit}");
        // Groups emitted more than once only when the pool ran short.
        let distinct = rows_distinct(&states);
        assert_eq!(
            rows > distinct,
            early,
            "limit {limit}: {rows} rows, {distinct} groups"
        );
        assert_eq!(pool.reserved(), 0, "limit {limit}: released at the end");
    }
}

fn rows_distinct(states: &[RecordBatch]) -> usize {
    let mut keys: Vec<String> = exact(states).into_iter().map(|r| r[0].clone()).collect();
    keys.sort();
    keys.dedup();
    keys.len()
}
