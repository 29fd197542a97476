//! Stitched views whose owners' points exceed the memory pool complete, in
//! order and within the pool, on a real server with `--memory-mb 16`.
//!
//! A root logs `loss` = step at 2.1M steps; nine forks of it, near its end,
//! each inherit almost all of them, so the family's stitched `loss` holds
//! ~21M points and its one owner's points alone are ~4× the pool.

mod common;

use common::{peak_rss_mib, spawn_server_with, temp_store};
use forkline::Engine;
use forkline::catalog::{ForkRequest, NewRun};
use forkline::ingest::MetricPoint;
use serde_json::{Value, json};

/// Steps the root logs (0..ROOT_STEPS).
const ROOT_STEPS: u64 = 2_100_000;
/// Steps each fork logs after its fork step.
const OWN_STEPS: u64 = 10;
const FORKS: u64 = 9;
/// Points per write, so no single commit holds the whole series.
const CHUNK: u64 = 1_000_000;

/// The step fork `k` (1-based) forks the root at.
fn fork_step(k: u64) -> u64 {
    ROOT_STEPS - 1 - 1000 * k
}

/// Writes the family; returns the root's run id and its forks'.
async fn family(store: &str) -> (i64, Vec<i64>) {
    let engine = Engine::open(store).await.unwrap();
    let root = engine
        .create_run(NewRun {
            project: "bounded".into(),
            name: "root".into(),
            config: Default::default(),
            tags: vec![],
            external_id: None,
        })
        .await
        .unwrap();
    for from in (0..ROOT_STEPS).step_by(CHUNK as usize) {
        let points = (from..(from + CHUNK).min(ROOT_STEPS))
            .map(|s| MetricPoint::new("loss", s, s as f64))
            .collect();
        engine.write_points(&root.display_id, points).await.unwrap();
    }
    // A host metric: the root's own, never inherited.
    engine
        .write_points(
            &root.display_id,
            (0..100)
                .map(|s| MetricPoint::new("sys/gpu", s, 1.0))
                .collect(),
        )
        .await
        .unwrap();
    let mut forks = Vec::new();
    for k in 1..=FORKS {
        let mut request = ForkRequest::new(root.display_id.clone(), fork_step(k));
        request.name = Some(format!("fork-{k}"));
        let fork = engine.fork_run(request).await.unwrap().run;
        let own = fork_step(k) + 1..=fork_step(k) + OWN_STEPS;
        engine
            .write_points(
                &fork.display_id,
                own.map(|s| MetricPoint::new("loss", s, -(s as f64)))
                    .collect(),
            )
            .await
            .unwrap();
        forks.push(fork.id as i64);
    }
    (root.id as i64, forks)
}

async fn sql(server: &common::Server, sql: &str) -> Vec<Value> {
    let answer = server.post_json("/api/sql", &json!({ "sql": sql })).await;
    answer
        .as_array()
        .unwrap_or_else(|| panic!("{sql}: {answer}"))
        .clone()
}

#[tokio::test]
async fn stitched_views_larger_than_the_memory_pool_complete_in_order() {
    let (_dir, store) = temp_store();
    let (root, forks) = family(&store).await;
    let server = spawn_server_with(&store, &["--memory-mb", "16"]);
    let before = peak_rss_mib(server.child.id());

    // Per viewer: points, their steps' and values' sums, inherited points,
    // and rows out of `(run_id, step)` order (`lag` over the operator's
    // promised order: no sort is planned for it, so a row out of place
    // shows); checked against the lineage's arithmetic.
    let per_run = |view: &str| {
        format!(
            "SELECT run_id, count(*) AS n, sum(step) AS steps, sum(value) AS total, \
             sum(CASE WHEN inherited THEN 1 ELSE 0 END) AS inherited, \
             min(source_run_id) AS first_owner, \
             sum(CASE WHEN prev_run > run_id OR (prev_run = run_id AND prev_step >= step) \
                 THEN 1 ELSE 0 END) AS disorder \
             FROM (SELECT *, lag(run_id) OVER w AS prev_run, lag(step) OVER w AS prev_step \
                   FROM {view} WINDOW w AS (ORDER BY run_id, step)) \
             GROUP BY run_id ORDER BY run_id"
        )
    };
    let triangle = |n: u64| (n * (n - 1) / 2) as i64;
    let mut expected = vec![json!({
        "run_id": root, "n": ROOT_STEPS, "steps": triangle(ROOT_STEPS),
        "total": triangle(ROOT_STEPS) as f64, "inherited": 0, "first_owner": root,
        "disorder": 0,
    })];
    for (k, fork) in (1..=FORKS).zip(&forks) {
        let f = fork_step(k);
        let own: i64 = (f + 1..=f + OWN_STEPS).map(|s| s as i64).sum();
        expected.push(json!({
            "run_id": fork, "n": f + 1 + OWN_STEPS, "steps": triangle(f + 1) + own,
            "total": (triangle(f + 1) - own) as f64, "inherited": f + 1,
            "first_owner": root, "disorder": 0,
        }));
    }
    let total: u64 = expected.iter().map(|r| r["n"].as_u64().unwrap()).sum();
    assert!(total >= 20_000_000, "{total} stitched points");
    for view in [
        format!("family_metrics('{root}', 'loss')"),
        "project_metrics('bounded', 'loss')".to_string(),
    ] {
        assert_eq!(sql(&server, &per_run(&view)).await, expected, "{view}");
    }
    // Every metric: the joined plan streams (no order to keep), and
    // `sys/gpu` stays the root's.
    let all = sql(
        &server,
        &format!(
            "SELECT run_id, count(*) AS n, sum(step) AS steps, \
             sum(CASE WHEN inherited THEN 1 ELSE 0 END) AS inherited \
             FROM family_metrics('{root}') GROUP BY run_id ORDER BY run_id"
        ),
    )
    .await;
    assert_eq!(all.len(), expected.len());
    assert_eq!(all[0]["n"], ROOT_STEPS + 100);
    for (all, one) in all[1..].iter().zip(&expected[1..]) {
        for field in ["run_id", "n", "steps", "inherited"] {
            assert_eq!(all[field], one[field], "{field} of {all}");
        }
    }

    // A fork's own points follow its inherited ones.
    let f = fork_step(1) as i64;
    let seam = sql(
        &server,
        &format!(
            "SELECT step, value, inherited FROM stitched_metrics('{}', 'loss') \
             ORDER BY step LIMIT 2 OFFSET {f}",
            forks[0]
        ),
    )
    .await;
    assert_eq!(
        seam,
        vec![
            json!({"step": f, "value": f as f64, "inherited": true}),
            json!({"step": f + 1, "value": -(f + 1) as f64, "inherited": false}),
        ]
    );

    // The 21M stitched rows (~690 MiB as Arrow) never sat in memory.
    let peak = peak_rss_mib(server.child.id());
    eprintln!("server peak RSS {before} -> {peak} MiB with a 16 MiB pool");
    assert!(
        peak < before + 200,
        "server peak RSS grew from {before} to {peak} MiB"
    );
}
