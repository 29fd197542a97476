//! Accumulator-level tests: partial states merge to the one-pass answer, and
//! a real multi-partition plan agrees with a single-partition one.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::MemTable;
use datafusion::common::ScalarValue;
use datafusion::prelude::{SessionConfig, SessionContext};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::{Kind, Point, SeriesAccumulator};
use datafusion::logical_expr::Accumulator;

fn accumulator(kind: Kind, n: u64) -> SeriesAccumulator {
    SeriesAccumulator {
        kind,
        n,
        points: Vec::new(),
    }
}

fn columns(points: &[Point]) -> Vec<ArrayRef> {
    vec![
        Arc::new(points.iter().map(|p| p.0).collect::<Int64Array>()),
        Arc::new(points.iter().map(|p| p.1).collect::<Float64Array>()),
    ]
}

fn random_points(rng: &mut SmallRng) -> Vec<Point> {
    let len = rng.random_range(0..300);
    let span = rng.random_range(1..1000);
    (0..len)
        .map(|_| {
            let value = match rng.random_range(0..20) {
                0 => None,
                1 => Some(f64::NAN),
                _ => Some(rng.random_range(-100.0..100.0)),
            };
            (rng.random_range(-span..span), value)
        })
        .collect()
}

/// Renders a result so NaN compares equal to NaN.
fn render(value: ScalarValue) -> String {
    format!("{value:?}")
}

#[test]
fn merged_partial_states_equal_one_pass() {
    let mut rng = SmallRng::seed_from_u64(7);
    for case in 0..200 {
        let kind = if case % 2 == 0 {
            Kind::Downsample
        } else {
            Kind::Lttb
        };
        let n = rng.random_range(3..40);
        let mut points = random_points(&mut rng);

        let mut one_pass = accumulator(kind, n);
        one_pass.update_batch(&columns(&points)).unwrap();
        let expected = render(one_pass.evaluate().unwrap());

        // Partials see a shuffled split, and one of them may see nothing.
        points.shuffle(&mut rng);
        let cut = rng.random_range(0..=points.len());
        let mut states = Vec::new();
        for part in [&points[..cut], &points[cut..]] {
            let mut partial = accumulator(kind, n);
            partial.update_batch(&columns(part)).unwrap();
            states.push(partial.state().unwrap());
        }
        let merged_columns: Vec<ArrayRef> = (0..2)
            .map(|c| ScalarValue::iter_to_array(states.iter().map(|s| s[c].clone())).unwrap())
            .collect();
        let mut merged = accumulator(kind, n);
        merged.merge_batch(&merged_columns).unwrap();
        assert_eq!(render(merged.evaluate().unwrap()), expected, "case {case}");
    }
}

#[test]
fn lttb_refuses_small_n_only_for_longer_series() {
    let points: Vec<Point> = (0..5).map(|s| (s, Some(s as f64))).collect();
    let mut short = accumulator(Kind::Lttb, 2);
    short.update_batch(&columns(&points[..2])).unwrap();
    assert!(!short.evaluate().unwrap().is_null());
    let mut long = accumulator(Kind::Lttb, 2);
    long.update_batch(&columns(&points)).unwrap();
    let err = long.evaluate().unwrap_err().to_string();
    assert!(err.contains("n must be at least 3"), "{err}");
}

#[test]
fn empty_groups_are_null() {
    for kind in [Kind::Downsample, Kind::Lttb] {
        let mut acc = accumulator(kind, 10);
        acc.update_batch(&columns(&[])).unwrap();
        assert!(acc.evaluate().unwrap().is_null());
    }
    // lttb skips NULL and NaN values; downsample still counts them.
    let nothing = [(1, None), (2, Some(f64::NAN))];
    let mut lttb = accumulator(Kind::Lttb, 10);
    lttb.update_batch(&columns(&nothing)).unwrap();
    assert!(lttb.evaluate().unwrap().is_null());
    let mut down = accumulator(Kind::Downsample, 10);
    down.update_batch(&columns(&nothing)).unwrap();
    assert!(!down.evaluate().unwrap().is_null());
}

async fn run(partitions: usize, sql: &str, batches: Vec<RecordBatch>) -> Vec<String> {
    let ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(partitions)
            .with_batch_size(64),
    );
    ctx.register_udaf(super::downsample_udaf());
    ctx.register_udaf(super::lttb_udaf());
    let schema = batches[0].schema();
    let chunks = batches.len().div_ceil(partitions);
    let parts = batches.chunks(chunks).map(<[_]>::to_vec).collect();
    ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).unwrap()))
        .unwrap();
    let out = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&out).unwrap();
    text.to_string().lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn partitioned_plans_agree_with_a_single_partition() {
    let mut rng = SmallRng::seed_from_u64(11);
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, false),
        Field::new("step", DataType::Int32, false),
        Field::new("value", DataType::Float32, true),
    ]));
    let batches: Vec<RecordBatch> = (0..16)
        .map(|_| {
            let rows = 200;
            let g: Int64Array = (0..rows).map(|_| rng.random_range(0..3)).collect();
            let step: arrow::array::Int32Array =
                (0..rows).map(|_| rng.random_range(0..5000)).collect();
            let value: arrow::array::Float32Array = (0..rows)
                .map(|_| rng.random_bool(0.95).then(|| rng.random_range(-1.0..1.0)))
                .collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(g), Arc::new(step), Arc::new(value)],
            )
            .unwrap()
        })
        .collect();
    for sql in [
        "SELECT g, downsample(step, value, 37) AS d FROM t GROUP BY g ORDER BY g",
        "SELECT g, lttb(step, value, 25) AS l FROM t GROUP BY g ORDER BY g",
        "SELECT lttb(step, value, 10) AS l, downsample(step, value, 3) AS d FROM t",
    ] {
        let single = run(1, sql, batches.clone()).await;
        let multi = run(4, sql, batches.clone()).await;
        assert_eq!(single, multi, "{sql}");
    }
}
