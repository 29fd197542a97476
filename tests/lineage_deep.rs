//! A chain of 1,000 forks: fork resolution and the stitched view of the
//! deepest run must stay correct (and plannable) however deep the lineage is.
//!
//! Run `k` of the chain forks run `k - 1` at step `k - 1` and logs `loss` at
//! steps `k` and `k + 1` with value `1000 k + step`, so in the deepest run's
//! view step `j ≤ DEPTH` is owned by run `j`, and every run's second point is
//! hidden from its descendants.

mod common;

use std::sync::Arc;

use common::rows;
use forkline::catalog::{ForkRequest, NewRun, Run};
use forkline::ingest::MetricPoint;
use forkline::{Engine, Error};

const DEPTH: usize = 1_000;

fn value(run: usize, step: u64) -> f64 {
    (run * 1000) as f64 + step as f64
}

async fn chain(engine: &Engine) -> Vec<Arc<Run>> {
    let root = engine
        .create_run(NewRun {
            project: "deep".into(),
            name: "root".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut runs = vec![root];
    for k in 0..=DEPTH {
        if k > 0 {
            // Unnamed: the default name replaces the forked run's `-fork@step`
            // suffix, so it stays short however deep the chain grows.
            let request = ForkRequest::new(runs[k - 1].id.to_string(), k as u64 - 1);
            let fork = engine.fork_run(request).await.unwrap();
            assert_eq!(fork.parent.id, runs[k - 1].id, "fork of depth {k}");
            assert_eq!(fork.run.name, format!("root-fork@{}", k - 1));
            runs.push(fork.run);
        }
        let points = [k as u64, k as u64 + 1]
            .map(|s| MetricPoint::new("loss", s, value(k, s)))
            .to_vec();
        engine
            .write_points(&runs[k].id.to_string(), points)
            .await
            .unwrap();
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_and_stitched_views_at_depth_1000() {
    let engine = Engine::open("memory://").await.unwrap();
    let runs = chain(&engine).await;
    let deepest = runs[DEPTH].clone();
    let last_step = DEPTH as u64 + 1;

    // A step owned by the deepest run itself, by its parent, by a run far up
    // the chain, and by the root.
    for (step, owner) in [
        (last_step, DEPTH),
        (DEPTH as u64, DEPTH),
        (DEPTH as u64 - 1, DEPTH - 1),
        (7, 7),
        (0, 0),
    ] {
        let fork = engine
            .fork_run(ForkRequest::new(deepest.display_id.clone(), step))
            .await
            .unwrap();
        assert_eq!(fork.parent.id, runs[owner].id, "fork at step {step}");
        assert_eq!(fork.fork_step, step);
        assert_eq!(fork.run.parent_id, Some(runs[owner].id));
    }
    match engine
        .fork_run(ForkRequest::new(deepest.id.to_string(), last_step + 1))
        .await
    {
        Err(Error::InvalidInput(message)) => assert!(
            message.ends_with(&format!("its logged steps are 0..={last_step}")),
            "{message}"
        ),
        other => panic!("a fork past the last step was not refused: {other:?}"),
    }

    // A view whose own and parent's segments hold no point: its highest step
    // is found far up the chain. `hidden` forks the deepest run at `DEPTH` and
    // logs only past the step `empty` then forks it at.
    let mut request = ForkRequest::new(deepest.id.to_string(), DEPTH as u64);
    request.name = Some("hidden".into());
    let hidden = engine.fork_run(request).await.unwrap().run;
    engine
        .write_points(
            &hidden.id.to_string(),
            vec![MetricPoint::new("loss", 5_000, 0.5)],
        )
        .await
        .unwrap();
    let mut request = ForkRequest::new(hidden.id.to_string(), 4_000);
    request.name = Some("empty".into());
    let empty = engine.fork_run(request).await.unwrap();
    assert_eq!(empty.parent.id, hidden.id);
    for (step, owner) in [(DEPTH as u64, runs[DEPTH].id), (3, runs[3].id)] {
        let fork = engine
            .fork_run(ForkRequest::new(empty.run.id.to_string(), step))
            .await
            .unwrap();
        assert_eq!(
            fork.parent.id, owner,
            "fork of the empty view at step {step}"
        );
    }
    match engine
        .fork_run(ForkRequest::new(empty.run.id.to_string(), DEPTH as u64 + 1))
        .await
    {
        Err(Error::InvalidInput(message)) => assert!(
            message.ends_with(&format!("its logged steps are 0..={DEPTH}")),
            "{message}"
        ),
        other => panic!("a fork past the empty view's last step was not refused: {other:?}"),
    }

    let expected: Vec<Vec<String>> = (0..=last_step)
        .map(|step| {
            let owner = (step as usize).min(DEPTH);
            vec![
                deepest.id.to_string(),
                runs[owner].id.to_string(),
                step.to_string(),
                format!("{:?}", value(owner, step)),
                (owner != DEPTH).to_string(),
            ]
        })
        .collect();
    for metric in ["", ", 'loss'"] {
        let got = rows(
            &engine,
            &format!(
                "SELECT run_id, source_run_id, step, value, inherited \
                 FROM stitched_metrics({}{metric}) ORDER BY step",
                deepest.id
            ),
        )
        .await
        .unwrap();
        assert_eq!(got, expected, "stitched_metrics({}{metric})", deepest.id);
    }
    let lineage = rows(
        &engine,
        &format!("SELECT count(*), max(depth) FROM lineage({})", deepest.id),
    )
    .await
    .unwrap();
    assert_eq!(
        lineage,
        vec![vec![(DEPTH + 1).to_string(), DEPTH.to_string()]]
    );
}
