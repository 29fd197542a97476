//! The product docs' lineage example, end to end on a real Delta store on disk.

mod common;

use common::{product_docs, rows, temp_store};
use forkline::catalog::ForkRequest;
use forkline::{Engine, Error};

#[tokio::test]
async fn product_docs_example_holds() {
    let (_dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    let docs = product_docs(&engine).await.unwrap();
    let (a, b, c) = (docs.a.id, docs.b.id, docs.c.id);

    // lineage(C) is A 0–50, B 51–150, C 151–.
    let lineage = rows(
        &engine,
        &format!("SELECT run_id, depth, from_step, to_step FROM lineage({c})"),
    )
    .await
    .unwrap();
    let expect = vec![
        vec![a.to_string(), "0".into(), "0".into(), "50".into()],
        vec![b.to_string(), "1".into(), "51".into(), "150".into()],
        vec![c.to_string(), "2".into(), "151".into(), "NULL".into()],
    ];
    assert_eq!(lineage, expect);
    // The same by display id.
    let by_display = rows(
        &engine,
        &format!(
            "SELECT run_id, depth, from_step, to_step FROM lineage('{}')",
            docs.c.display_id
        ),
    )
    .await
    .unwrap();
    assert_eq!(by_display, expect);

    // Forking C at 75 resolves to B, at 30 to A, and at 160 stays on C.
    for (step, parent) in [(75, b), (30, a), (160, c), (150, b), (50, a), (0, a)] {
        let fork = engine
            .fork_run(ForkRequest::new(docs.c.display_id.clone(), step))
            .await
            .unwrap();
        assert_eq!(fork.parent.id, parent, "fork of C at {step}");
        assert_eq!(fork.fork_step, step);
        assert_eq!(fork.run.parent_id, Some(parent));
    }

    // Forking C at 10_000 is refused with a clear error, and commits nothing.
    let before = engine.catalog().await.unwrap().runs().count();
    let err = engine
        .fork_run(ForkRequest::new(docs.c.display_id.clone(), 10_000))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(
        err.to_string().contains("10000") && err.to_string().contains("0..=180"),
        "{err}"
    );
    assert_eq!(engine.catalog().await.unwrap().runs().count(), before);

    // B's own points at steps ≤ its fork step stay in `metrics` …
    let raw = rows(
        &engine,
        &format!("SELECT count(*), min(value) FROM metrics WHERE run_id = {b} AND step <= 50"),
    )
    .await
    .unwrap();
    assert_eq!(raw, vec![vec!["11".to_string(), "-1.0".to_string()]]);
    // … but not in its stitched view, which takes those steps from A.
    let stitched = rows(
        &engine,
        &format!(
            "SELECT source_run_id, inherited, count(*), min(step), max(step), min(value) \
             FROM stitched_metrics({b}, 'loss') GROUP BY source_run_id, inherited ORDER BY 4"
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        stitched,
        vec![
            vec![
                a.to_string(),
                "true".into(),
                "51".into(),
                "0".into(),
                "50".into(),
                "0.0".into()
            ],
            vec![
                b.to_string(),
                "false".into(),
                "150".into(),
                "51".into(),
                "200".into(),
                "1051.0".into()
            ],
        ]
    );
    // C's stitched loss: A 0–50, B 51–150, C 151–180.
    let c_view = rows(
        &engine,
        &format!(
            "SELECT source_run_id, count(*), min(step), max(step) FROM stitched_metrics('{}', 'loss') \
             GROUP BY source_run_id ORDER BY 3",
            docs.c.display_id
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        c_view,
        vec![
            vec![a.to_string(), "51".into(), "0".into(), "50".into()],
            vec![b.to_string(), "100".into(), "51".into(), "150".into()],
            vec![c.to_string(), "30".into(), "151".into(), "180".into()],
        ]
    );
}

#[tokio::test]
async fn fork_inherits_config_deeply_and_tags_on_request() {
    let engine = Engine::open("memory://").await.unwrap();
    let docs = product_docs(&engine).await.unwrap();
    // B's config was merged: lr inherited, opt.name inherited, opt.beta overridden.
    assert_eq!(
        serde_json::Value::Object(docs.b.config.clone()),
        serde_json::json!({"lr": 0.1, "opt": {"name": "adam", "beta": 0.8}})
    );
    assert!(docs.b.tags.is_empty(), "tags are not inherited by default");
    let mut req = ForkRequest::new(docs.b.display_id.clone(), 60);
    req.inherit_tags = true;
    req.inherit_config = false;
    req.tags = vec!["mine".into(), "base".into()];
    let fork = engine.fork_run(req).await.unwrap();
    assert!(fork.run.config.is_empty());
    assert_eq!(fork.run.experiment, "A");
    assert_eq!(fork.run.display_id, "PD-4");
    // Resolved to B (60 is in B's own segment); B has no tags, so only the requested ones.
    assert_eq!(
        fork.run.tags.iter().cloned().collect::<Vec<_>>(),
        vec!["base", "mine"]
    );
    let mut req = ForkRequest::new(fork.run.display_id.clone(), 10);
    req.inherit_tags = true;
    let deeper = engine.fork_run(req).await.unwrap();
    assert_eq!(deeper.parent.id, docs.a.id);
    assert_eq!(
        deeper.run.tags.iter().cloned().collect::<Vec<_>>(),
        vec!["base"]
    );
}

#[tokio::test]
async fn reopening_the_store_shows_the_same_runs_and_points() {
    let (_dir, store) = temp_store();
    let summary = "SELECT (SELECT count(*) FROM runs) AS r, (SELECT count(*) FROM metrics) AS m, \
                   (SELECT sum(value) FROM stitched_metrics('PD-3')) AS s";
    let before = {
        let engine = Engine::open(&store).await.unwrap();
        product_docs(&engine).await.unwrap();
        rows(&engine, summary).await.unwrap()
    };
    let engine = Engine::open(&store).await.unwrap();
    assert_eq!(rows(&engine, summary).await.unwrap(), before);
    assert_eq!(before[0][0], "3");
}

#[tokio::test]
async fn the_last_write_of_a_point_wins_everywhere() {
    use forkline::ingest::MetricPoint;
    let engine = Engine::open("memory://").await.unwrap();
    let docs = product_docs(&engine).await.unwrap();
    let a = docs.a.display_id.clone();
    // A re-logs step 5 twice more, in separate commits (e.g. a resumed client).
    engine
        .write_points(&a, vec![MetricPoint::new("loss", 5, 50.0)])
        .await
        .unwrap();
    engine
        .write_points(&a, vec![MetricPoint::new("loss", 5, 500.0)])
        .await
        .unwrap();
    let q = |sql: String| {
        let engine = &engine;
        async move { rows(engine, &sql).await.unwrap() }
    };
    let id = docs.a.id;
    assert_eq!(
        q(format!("SELECT count(*), max(value) FROM metrics WHERE run_id = {id} AND metric = 'loss' AND step = 5")).await,
        vec![vec!["1".to_string(), "500.0".to_string()]]
    );
    assert_eq!(
        q(format!("SELECT count(*) FROM metric_writes WHERE run_id = {id} AND metric = 'loss' AND step = 5")).await,
        vec![vec!["3".to_string()]]
    );
    // The stitched views of the descendants see the same last write.
    for run in [docs.b.id, docs.c.id] {
        assert_eq!(
            q(format!(
                "SELECT count(*), max(value) FROM stitched_metrics({run}, 'loss') WHERE step = 5"
            ))
            .await,
            vec![vec!["1".to_string(), "500.0".to_string()]]
        );
    }
    assert_eq!(
        q(format!(
            "SELECT count(*) FROM family_metrics({id}, 'loss') WHERE step = 5"
        ))
        .await,
        vec![vec!["3".to_string()]]
    );
}
