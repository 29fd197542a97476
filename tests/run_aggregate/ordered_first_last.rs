//! `first_value` / `last_value` over input that is already ordered give
//! DataFusion's own answers: random sorted tables (ties, NULLs, groups across
//! batches) queried in forkline's session and in a plain DataFusion session,
//! with the fast path shown to be in the plan.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::MemTable;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::prelude::{SessionConfig, SessionContext, col};
use forkline::query::aggregates::ordered_first_last::is_pre_ordered;
use forkline::query::functions;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Rows sorted by `(g, k)` (with `k` tied often), `v` NULL now and then, cut
/// into batches of 7 so groups cross batches (and a partition's picks span
/// more batches than the accumulator keeps apart before gathering them);
/// `desc` sorts `k` descending.
fn table(seed: u64, desc: bool) -> MemTable {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut rows: Vec<(i64, i64, Option<f64>)> = (0..2000)
        .map(|_| {
            let v = (!rng.random_bool(0.15)).then(|| rng.random_range(-5..5) as f64);
            (rng.random_range(0..9), rng.random_range(0..12), v)
        })
        .collect();
    rows.sort_by_key(|r| (r.0, if desc { -r.1 } else { r.1 }));
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Float64, true),
    ]));
    let batches: Vec<RecordBatch> = rows
        .chunks(7)
        .map(|chunk| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(chunk.iter().map(|r| r.0).collect::<Int64Array>()),
                    Arc::new(chunk.iter().map(|r| r.1).collect::<Int64Array>()),
                    Arc::new(chunk.iter().map(|r| r.2).collect::<Float64Array>()),
                ],
            )
            .unwrap()
        })
        .collect();
    // One partition per third of the batches: partial aggregates merge.
    let third = batches.len().div_ceil(3);
    let partitions: Vec<Vec<RecordBatch>> = batches.chunks(third).map(<[_]>::to_vec).collect();
    MemTable::try_new(schema, partitions)
        .unwrap()
        .with_sort_order(vec![vec![
            col("g").sort(true, false),
            col("k").sort(!desc, false),
        ]])
}

async fn answer(ctx: &SessionContext, sql: &str) -> (Vec<String>, usize) {
    let df = ctx.sql(sql).await.unwrap();
    let plan = df.clone().create_physical_plan().await.unwrap();
    let rows = arrow::util::pretty::pretty_format_batches(&df.collect().await.unwrap())
        .unwrap()
        .to_string();
    let mut lines: Vec<String> = rows.lines().map(str::to_string).collect();
    lines.sort();
    (lines, pre_ordered_aggregates(&plan))
}

/// How many of the plan's aggregate functions run the pre-ordered path.
fn pre_ordered_aggregates(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let here = plan.downcast_ref::<AggregateExec>().map_or(0, |agg| {
        agg.aggr_expr()
            .iter()
            .filter(|e| is_pre_ordered(e.fun()))
            .count()
    });
    here + plan
        .children()
        .into_iter()
        .map(pre_ordered_aggregates)
        .sum::<usize>()
}

#[tokio::test]
async fn ordered_first_and_last_value_answer_as_datafusion_does() {
    let queries = [
        // Pre-ordered, grouped: the fast path, ties on `k` within groups.
        (
            "SELECT g, last_value(v ORDER BY k) AS l, first_value(v ORDER BY k) AS f, count(*) AS n FROM t GROUP BY g",
            true,
        ),
        (
            "SELECT g, last_value(v ORDER BY k) IGNORE NULLS AS l, first_value(v ORDER BY k) IGNORE NULLS AS f FROM t GROUP BY g",
            true,
        ),
        (
            "SELECT g, last_value(v ORDER BY k) FILTER (WHERE v > 0) AS l, first_value(v ORDER BY k) FILTER (WHERE k % 3 = 1) AS f FROM t GROUP BY g",
            true,
        ),
        // Grouped finer than the order: each group is a subsequence.
        (
            "SELECT g, k % 4 AS b, last_value(v ORDER BY k) AS l, first_value(v ORDER BY k) AS f FROM t GROUP BY g, k % 4",
            true,
        ),
        // Other shapes, pre-ordered or not: the answers are alike either way.
        (
            "SELECT k, last_value(v ORDER BY g) AS l, first_value(v ORDER BY g) AS f FROM t GROUP BY k",
            false,
        ),
        (
            "SELECT g, last_value(v ORDER BY v) AS l FROM t GROUP BY g",
            false,
        ),
        (
            "SELECT last_value(v ORDER BY g, k) AS l, first_value(v ORDER BY g, k) AS f FROM t",
            false,
        ),
    ];
    for desc in [false, true] {
        for seed in 0..6 {
            for partitions in [1, 3] {
                let config = SessionConfig::new()
                    .with_target_partitions(partitions)
                    .with_batch_size(5);
                let ours = SessionContext::new_with_config(config.clone());
                functions::register(&ours);
                let plain = SessionContext::new_with_config(config);
                for ctx in [&ours, &plain] {
                    ctx.register_table("t", Arc::new(table(seed, desc)))
                        .unwrap();
                }
                for (sql, fast) in queries {
                    // With `k` descending, the ascending orders are the reverse
                    // of the input's: DataFusion swaps first and last for them.
                    let (expected, _) = answer(&plain, sql).await;
                    let (got, used) = answer(&ours, sql).await;
                    assert_eq!(
                        got, expected,
                        "{sql} (seed {seed}, desc {desc}, {partitions} partitions)"
                    );
                    if fast {
                        assert!(
                            used > 0,
                            "the pre-ordered path is not planned: {sql} (desc {desc})"
                        );
                    }
                }
            }
        }
    }
}
