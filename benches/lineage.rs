//! Lineage queries through the table functions versus the same answers written
//! as a plain SQL join of `metrics` with a segments table, on the demo store
//! (25 runs, ~1.3M points) on local disk. Both formulations run interleaved in
//! one process after a warm-up, and must return the same numbers (sums are
//! rounded: float addition order differs between the two plans).
//!
//! Run: `cargo bench --bench lineage` (release build).

use std::time::{Duration, Instant};

use forkline::Engine;

const ITERATIONS: usize = 15;

struct Case {
    name: &'static str,
    table_function: String,
    naive: String,
}

fn segments_sql(viewers: &[String]) -> String {
    viewers
        .iter()
        .map(|v| {
            format!(
                "SELECT {v} AS viewer, run_id AS owner, from_step, \
                 coalesce(to_step, 9223372036854775807) AS to_step FROM lineage({v})"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

fn naive(viewers: &[String], metric: Option<&str>) -> String {
    let filter = metric.map_or(String::new(), |m| format!("WHERE m.metric = '{m}'"));
    format!(
        "WITH seg AS ({}) SELECT count(*) AS n, round(sum(m.value), 6) AS s FROM metrics m \
         JOIN seg ON m.run_id = seg.owner AND m.step BETWEEN seg.from_step AND seg.to_step {filter}",
        segments_sql(viewers)
    )
}

async fn scalar_rows(engine: &Engine, sql: &str) -> Vec<String> {
    let batches = engine.sql(sql).await.unwrap().collect().await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    text.lines().map(str::to_string).collect()
}

async fn time(engine: &Engine, sql: &str) -> Duration {
    let start = Instant::now();
    let batches = engine.sql(sql).await.unwrap().collect().await.unwrap();
    std::hint::black_box(batches);
    start.elapsed()
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("warehouse");
        let engine = Engine::open(store.to_str().unwrap()).await.unwrap();
        forkline::fixtures::demo::build(&engine, 7).await.unwrap();

        let family: Vec<String> = scalar_rows(&engine, "SELECT run_id FROM family_runs('VS-1') ORDER BY run_id")
            .await
            .into_iter()
            .filter_map(|l| l.trim_matches(|c| c == '|' || c == ' ').parse::<u64>().ok())
            .map(|id| id.to_string())
            .collect();
        let deepest = "6".to_string();
        let cases = vec![
            Case {
                name: "stitched, one metric, depth-5 run",
                table_function: "SELECT count(*) AS n, round(sum(value), 6) AS s FROM stitched_metrics(6, 'train/loss')".into(),
                naive: naive(std::slice::from_ref(&deepest), Some("train/loss")),
            },
            Case {
                name: "stitched, all metrics, depth-5 run",
                table_function: "SELECT count(*) AS n, round(sum(value), 6) AS s FROM stitched_metrics(6)".into(),
                naive: naive(std::slice::from_ref(&deepest), None),
            },
            Case {
                name: "family, one metric, 9 runs",
                table_function: "SELECT count(*) AS n, round(sum(value), 6) AS s FROM family_metrics('VS-1', 'train/loss')"
                    .into(),
                naive: naive(&family, Some("train/loss")),
            },
        ];

        println!("| query | table function p50 | naive join p50 | naive / table function |");
        println!("|---|---|---|---|");
        for case in cases {
            let expected = scalar_rows(&engine, &case.naive).await;
            assert_eq!(scalar_rows(&engine, &case.table_function).await, expected, "{}", case.name);
            let (mut tf, mut nv) = (Vec::new(), Vec::new());
            for _ in 0..ITERATIONS {
                tf.push(time(&engine, &case.table_function).await);
                nv.push(time(&engine, &case.naive).await);
            }
            let (tf, nv) = (p50(tf), p50(nv));
            println!(
                "| {} | {:.1} ms | {:.1} ms | {:.2}x |",
                case.name,
                tf.as_secs_f64() * 1e3,
                nv.as_secs_f64() * 1e3,
                nv.as_secs_f64() / tf.as_secs_f64()
            );
        }
    });
}
