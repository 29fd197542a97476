//! The group-after-group aggregate (`SortedAggregateExec`) changes no answer
//! and is planned exactly where the input's order makes groups contiguous:
//! random sorted tables (NULL keys, string keys, descending order, groups
//! across batches, several partitions) against plain DataFusion, and lineage
//! views over a real Delta store against forkline's session without the rule.

mod common;

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext, col};
use forkline::Engine;
use forkline::query::aggregates::sorted::{RULE_NAME, with_rule};
use forkline::query::functions;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Rows sorted by `(g, k)` (`s` is a name of `g`, short or long, declared
/// sorted only where `strings` asks), `g` NULL now and then (first), `k`
/// tied often, `v` NULL now and then; batches of 7 so groups cross batches;
/// `desc` sorts `k` descending.
fn table(seed: u64, desc: bool, strings: bool) -> MemTable {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut rows: Vec<(Option<i64>, i64, Option<f64>)> = (0..500)
        .map(|_| {
            let g = (!rng.random_bool(0.1)).then(|| rng.random_range(0..9));
            let v = (!rng.random_bool(0.15)).then(|| rng.random_range(-5..5) as f64);
            (g, rng.random_range(0..40), v)
        })
        .collect();
    let name = |g: Option<i64>| {
        g.map(|g| {
            if g % 2 == 0 {
                format!("g{g}")
            } else {
                format!("a-long-group-name-{g}")
            }
        })
    };
    // Names are one per `g`, so rows sorted by (name, g, k) are sorted by (name, k).
    rows.sort_by_key(|r| {
        (
            strings.then(|| name(r.0)),
            r.0,
            if desc { -r.1 } else { r.1 },
        )
    });
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
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
                    Arc::new(chunk.iter().map(|r| name(r.0)).collect::<StringArray>()),
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
        .with_sort_order(vec![if strings {
            vec![col("s").sort(true, true), col("k").sort(!desc, false)]
        } else {
            vec![col("g").sort(true, true), col("k").sort(!desc, false)]
        }])
}

/// How many of the plan's operators are the sorted aggregate.
fn sorted_aggregates(plan: &Arc<dyn ExecutionPlan>) -> usize {
    usize::from(plan.name() == "SortedAggregateExec")
        + plan
            .children()
            .into_iter()
            .map(sorted_aggregates)
            .sum::<usize>()
}

/// The rows of `sql` (sorted, rendered) and how many sorted aggregates its plan has.
async fn answer(ctx: &SessionContext, sql: &str) -> (Vec<String>, usize) {
    let df = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let plan = df.clone().create_physical_plan().await.unwrap();
    if std::env::var("SHOW_PLANS").is_ok() {
        eprintln!(
            "{sql}\n{}",
            datafusion::physical_plan::displayable(plan.as_ref()).indent(true)
        );
    }
    let batches = df.collect().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rendered = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    let mut lines: Vec<String> = rendered.lines().map(str::to_string).collect();
    lines.sort();
    (lines, sorted_aggregates(&plan))
}

#[tokio::test]
async fn sorted_aggregates_answer_as_datafusion_does_where_groups_are_contiguous() {
    let every = "count(*) AS n, count(v) AS nv, sum(v) AS sv, min(v) AS lo, max(v) AS hi, \
                 avg(v) AS mean, last_value(v ORDER BY k) AS l, first_value(v ORDER BY k) AS f";
    let queries: Vec<(String, bool)> = vec![
        // Chart buckets within each group, in either key order.
        (format!("SELECT g, k / 3 AS b, {every} FROM t GROUP BY g, k / 3"), true),
        (format!("SELECT k / 5 AS b, g, {every} FROM t GROUP BY k / 5, g"), true),
        // The leading keys alone, a string among them.
        (format!("SELECT g, {every} FROM t GROUP BY g"), true),
        // String keys (`u` is sorted by `(s, k)`).
        (format!("SELECT s, {every} FROM u GROUP BY s"), true),
        (format!("SELECT s, k / 4 AS b, {every} FROM u GROUP BY s, k / 4"), true),
        // FILTER clauses, and a filter below that keeps the order.
        (
            "SELECT g, k / 2 AS b, sum(v) FILTER (WHERE v > 0) AS p, count(*) FILTER (WHERE k % 3 = 1) AS c \
             FROM t GROUP BY g, k / 2"
                .into(),
            true,
        ),
        (
            "SELECT g, k / 3 AS b, count(*) AS n FROM t WHERE v IS NOT NULL GROUP BY g, k / 3".into(),
            true,
        ),
        // Groups that are not contiguous: DataFusion's operator keeps them.
        ("SELECT k / 3 AS b, count(*) AS n, sum(v) AS sv FROM t GROUP BY k / 3".into(), false),
        ("SELECT g / 2 AS h, k, count(*) AS n FROM t GROUP BY g / 2, k".into(), false),
        ("SELECT s, count(*) AS n FROM t GROUP BY s".into(), false),
        ("SELECT g, count(*) AS n FROM u GROUP BY g".into(), false),
        ("SELECT g, k / -3 AS b, count(*) AS n FROM t GROUP BY g, k / -3".into(), false),
        ("SELECT g, v, count(*) AS n FROM t GROUP BY g, v".into(), false),
    ];
    for desc in [false, true] {
        for seed in 0..4 {
            for partitions in [1, 3] {
                let config = SessionConfig::new()
                    .with_target_partitions(partitions)
                    .with_batch_size(5);
                let state = SessionStateBuilder::new()
                    .with_config(config.clone())
                    .with_default_features()
                    .with_physical_optimizer_rules(with_rule(PhysicalOptimizer::new().rules))
                    .build();
                let ours = SessionContext::new_with_state(state);
                functions::register(&ours);
                let plain = SessionContext::new_with_config(config);
                for ctx in [&ours, &plain] {
                    ctx.register_table("t", Arc::new(table(seed, desc, false)))
                        .unwrap();
                    ctx.register_table("u", Arc::new(table(seed, desc, true)))
                        .unwrap();
                }
                for (sql, sorted) in &queries {
                    let (expected, none) = answer(&plain, sql).await;
                    assert_eq!(none, 0);
                    let (got, used) = answer(&ours, sql).await;
                    let case = format!("{sql} (seed {seed}, desc {desc}, {partitions} partitions)");
                    assert_eq!(got, expected, "{case}");
                    assert_eq!(used > 0, *sorted, "sorted aggregate planned? {case}");
                }
            }
        }
    }
}

/// forkline's session for `engine` and its twin without the rule.
async fn sessions(engine: &Engine) -> (SessionContext, SessionContext) {
    let state = engine.session().await.unwrap().state();
    let rules = state
        .physical_optimizers()
        .iter()
        .filter(|r| r.name() != RULE_NAME)
        .cloned()
        .collect();
    let without = SessionStateBuilder::new_from_existing(state.clone())
        .with_physical_optimizer_rules(rules)
        .build();
    (
        SessionContext::new_with_state(state),
        SessionContext::new_with_state(without),
    )
}

#[tokio::test]
async fn lineage_views_aggregate_group_after_group() {
    let (_dir, url) = common::temp_store();
    let engine = Engine::open(&url).await.unwrap();
    let docs = common::product_docs(&engine).await.unwrap();
    let (a, c) = (&docs.a.display_id, &docs.c.display_id);
    let (ours, plain) = sessions(&engine).await;
    let queries = [
        // A family downsampled into chart buckets.
        (
            true,
            format!(
                "SELECT run_id, step / 7 AS bucket, min(value) AS lo, max(value) AS hi, \
             last_value(value ORDER BY step) AS last, count(*) AS n \
             FROM family_metrics('{a}', 'loss') GROUP BY run_id, step / 7 ORDER BY run_id, bucket"
            ),
        ),
        // Every run's last point (a leaderboard) and per-metric summaries.
        (
            true,
            "SELECT run_id, max(step) AS step, last_value(value ORDER BY step) AS value \
         FROM project_metrics('product-docs', 'loss') GROUP BY run_id ORDER BY run_id"
                .into(),
        ),
        // Every metric of a family is planned as a join, in no order: not ours.
        (
            false,
            format!(
                "SELECT run_id, metric, count(*) AS n, max(value) AS hi, first_value(value ORDER BY step) AS first \
             FROM family_metrics('{a}', '%') GROUP BY run_id, metric ORDER BY run_id, metric"
            ),
        ),
        (
            true,
            format!(
                "SELECT metric, count(*) AS n, max(step) AS s FROM stitched_metrics('{c}', '%') \
             GROUP BY metric ORDER BY metric"
            ),
        ),
    ];
    for (sorted, sql) in &queries {
        let (expected, none) = answer(&plain, sql).await;
        assert_eq!(none, 0, "{sql}");
        let (got, used) = answer(&ours, sql).await;
        assert_eq!(got, expected, "{sql}");
        assert_eq!(used > 0, *sorted, "sorted aggregate planned? {sql}");
        // The rows are there, not an empty agreement.
        assert!(got.len() > 4, "{sql}: {got:?}");
        // In the order asked for, which the groups' order gives without a sort.
        assert_eq!(
            in_order(&ours, sql).await,
            in_order(&plain, sql).await,
            "{sql}"
        );
    }
    let plan = ours
        .sql(&queries[0].1)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let shown = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(true)
        .to_string();
    assert!(!shown.contains("SortExec"), "{shown}");
}

/// The rows of `sql` as they come, rendered.
async fn in_order(ctx: &SessionContext, sql: &str) -> String {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}
