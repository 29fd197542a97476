//! `metric_writes` holds every acknowledged write, rewrites of one point
//! included, whether they shared a group commit or a request and while
//! compaction runs; `metrics` shows the newest write of each point.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{rows, temp_store};
use forkline::catalog::NewRun;
use forkline::ingest::{MetricPoint, PointBatch};
use forkline::maintenance::compact::{CompactOptions, compact};
use forkline::store::{FileClass, TableKind};
use forkline::{Engine, EngineOptions, Error};

const WRITERS: usize = 8;
const ROUNDS: usize = 12;
const STEPS: u64 = 100;

fn count(rows: &[Vec<String>]) -> usize {
    rows[0][0].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_rewrite_is_kept_across_group_commits_and_compaction() {
    let (_dir, store) = temp_store();
    // A window long enough that concurrent writers share commits.
    let options = EngineOptions {
        commit_window: Duration::from_millis(30),
        ..EngineOptions::default()
    };
    let engine = Arc::new(Engine::open_with(&store, options).await.unwrap());
    let run = engine
        .create_run(NewRun {
            project: "rewrites".into(),
            name: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let compactor = {
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::spawn(async move {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                match compact(&engine, &CompactOptions::default()).await {
                    Ok(report) if report.version.is_some() => runs += 1,
                    Ok(_) | Err(Error::Conflict(_)) => {}
                    Err(e) => panic!("compaction failed: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            runs
        })
    };
    // Every writer rewrites the same points, round after round; each request
    // also writes step 0 twice.
    let run_id = run.id;
    let writers = (0..WRITERS).map(|w| {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut acknowledged = 0;
            for round in 0..ROUNDS {
                let mut batch = PointBatch::new();
                let points = (0..STEPS).chain([0]).map(|step| MetricPoint {
                    metric: "loss".into(),
                    step,
                    value: (w * 1000 + round) as f64,
                    time_us: Some(1_700_000_000_000_000),
                });
                batch.extend(run_id, points).unwrap();
                acknowledged += engine.ingest(batch).await.unwrap();
            }
            acknowledged
        })
    });
    let writers: Vec<_> = writers.collect();
    let mut acknowledged = 0;
    for writer in writers {
        acknowledged += writer.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let compactions = compactor.await.unwrap();
    let last = compact(&engine, &CompactOptions::default()).await.unwrap();
    assert!(compactions + usize::from(last.version.is_some()) > 0);
    let files = engine.store().files(TableKind::Metrics).await.unwrap();
    assert!(
        files.of_class(FileClass::Superseded).count() > 0,
        "compaction set superseded writes aside"
    );

    assert_eq!(acknowledged, WRITERS * ROUNDS * (STEPS as usize + 1));
    // Writers shared commits (appends add files and remove none; compactions remove).
    let appends = common::commit_versions(&store, "metrics")
        .into_iter()
        .filter(|v| {
            let log = common::read_object(&store, &format!("metrics/_delta_log/{v:020}.json"));
            let log = String::from_utf8(log).unwrap();
            log.contains("\"add\":") && !log.contains("\"remove\":")
        })
        .count();
    assert!(
        appends <= WRITERS * ROUNDS / 2,
        "{appends} commits for {} requests: group commit did not coalesce",
        WRITERS * ROUNDS
    );
    let writes = rows(&engine, "SELECT count(*) FROM metric_writes")
        .await
        .unwrap();
    assert_eq!(
        count(&writes),
        acknowledged,
        "every acknowledged write is kept"
    );
    let points = rows(&engine, "SELECT count(*) FROM metrics").await.unwrap();
    assert_eq!(count(&points), STEPS as usize);
    // No two writes of a point share a sequence number, so "newest" is defined.
    let ties = rows(
        &engine,
        "SELECT count(*) FROM (SELECT step, seq FROM metric_writes GROUP BY step, seq HAVING count(*) > 1)",
    )
    .await
    .unwrap();
    assert_eq!(count(&ties), 0);
    // `metrics` shows the write with the highest sequence number of each point.
    let newest = rows(
        &engine,
        "SELECT step, last_value(value ORDER BY seq) FROM metric_writes GROUP BY step ORDER BY step",
    )
    .await
    .unwrap();
    let shown = rows(&engine, "SELECT step, value FROM metrics ORDER BY step")
        .await
        .unwrap();
    assert_eq!(shown, newest);
}

#[tokio::test]
async fn a_request_that_writes_a_point_twice_keeps_both_and_shows_the_later() {
    let (_dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    let run = engine
        .create_run(NewRun {
            project: "twice".into(),
            name: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let stored = engine
        .write_points(
            &run.display_id,
            vec![
                MetricPoint::new("loss", 3, 1.0),
                MetricPoint::new("acc", 3, 0.5),
                MetricPoint::new("loss", 3, 2.0),
            ],
        )
        .await
        .unwrap();
    assert_eq!(stored, 3);
    for compacted in [false, true] {
        let writes = rows(
            &engine,
            "SELECT metric, value FROM metric_writes ORDER BY metric, seq",
        )
        .await
        .unwrap();
        assert_eq!(
            writes,
            [["acc", "0.5"], ["loss", "1.0"], ["loss", "2.0"]].map(|r| r.map(String::from)),
            "compacted: {compacted}"
        );
        let shown = rows(&engine, "SELECT metric, value FROM metrics ORDER BY metric")
            .await
            .unwrap();
        assert_eq!(
            shown,
            [["acc", "0.5"], ["loss", "2.0"]].map(|r| r.map(String::from))
        );
        compact(&engine, &CompactOptions::default()).await.unwrap();
    }
}
