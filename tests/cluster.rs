//! forkline's plans on a Ballista cluster (issue #18): the codec carries
//! forkline's own operators across processes, and a cluster of a scheduler
//! and two executors started in this process answers forkline's queries with
//! the rows forkline answers them with.
#![cfg(feature = "cluster")]

mod common;

use std::sync::Arc;

use arrow::array::RecordBatch;
use common::{product_docs, render, temp_store};
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use forkline::Engine;
use forkline::bench_data::{self, BenchSpec};
use forkline::cluster::codec::ForklineCodec;
use forkline::cluster::{functions, standalone, submit};
use futures::TryStreamExt;
use prost::Message;

fn shown(plan: &Arc<dyn ExecutionPlan>) -> String {
    displayable(plan.as_ref()).indent(true).to_string()
}

fn sorted(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut rows = render(batches);
    rows.sort();
    rows
}

/// `plan` encoded to bytes and decoded in a session that has forkline's
/// functions but none of its tables, as an executor has.
async fn round_trip(engine: &Engine, plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    let codec = ForklineCodec::default();
    let bytes = PhysicalPlanNode::try_from_physical_plan(plan.clone(), &codec)
        .unwrap()
        .encode_to_vec();
    let executor = functions::state(SessionConfig::new(), engine.runtime().clone());
    let ctx = SessionContext::new_with_state(executor);
    PhysicalPlanNode::decode(bytes.as_slice())
        .unwrap()
        .try_into_physical_plan(ctx.task_ctx().as_ref(), &codec)
        .unwrap()
}

#[tokio::test]
async fn forkline_operators_round_trip_through_the_codec() {
    let (_dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    let docs = product_docs(&engine).await.unwrap();
    let ctx = submit::planning_session(&engine.session().await.unwrap());
    let c = &docs.c.display_id;
    for (sql, operator) in [
        (
            format!(
                "SELECT run_id, source_run_id, metric, step, value, inherited \
                 FROM stitched_metrics('{c}', 'loss')"
            ),
            "StitchExec",
        ),
        (
            format!("SELECT * FROM stitched_metrics('{c}')"),
            "StitchExec",
        ),
        // A downsample by name: the executor's registry must know it.
        (
            format!(
                "SELECT downsample(step, value, 10) AS d, lttb(step, value, 5) AS l \
                 FROM stitched_metrics('{c}', 'loss')"
            ),
            "StitchExec",
        ),
        (
            "SELECT metric, count(*), sum(value), min(value), max(value) FROM metrics GROUP BY metric"
                .to_string(),
            "RunAggregateExec",
        ),
    ] {
        let plan = submit::plan(&ctx, &sql).await.unwrap();
        assert!(shown(&plan).contains(operator), "{sql}: {}", shown(&plan));
        let decoded = round_trip(&engine, &plan).await;
        assert_eq!(shown(&decoded), shown(&plan), "{sql}");
        let expected = collect(plan, ctx.task_ctx()).await.unwrap();
        let got = collect(decoded, ctx.task_ctx()).await.unwrap();
        let rows: usize = expected.iter().map(|b| b.num_rows()).sum();
        assert!(rows > 0, "{sql}: no rows");
        assert_eq!(sorted(&got), sorted(&expected), "{sql}");
    }
}

/// Runs `sql` locally and on the cluster; returns both results, rows sorted.
async fn both(
    engine: &Engine,
    cluster: &str,
    sql: &str,
) -> (Vec<Vec<String>>, Vec<Vec<String>>, String) {
    let local = sorted(&engine.collect(sql).await.unwrap());
    let ctx = submit::planning_session(&engine.session().await.unwrap());
    let plan = submit::plan(&ctx, sql).await.unwrap();
    let shown = shown(&plan);
    let stream = submit::execute(cluster, &ctx, plan)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let batches: Vec<RecordBatch> = stream
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    (local, sorted(&batches), shown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_answers_the_documented_queries_as_forkline_does() {
    let (_dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    let docs = product_docs(&engine).await.unwrap();
    forkline::demo::build(&engine, 7).await.unwrap();
    bench_data::run(
        &engine,
        &BenchSpec {
            scale: 0.01,
            seed: 3,
            commits: None,
            compact_every: None,
        },
    )
    .await
    .unwrap();
    let cluster = standalone::start(2, 2, engine.runtime().clone())
        .await
        .unwrap();

    let scalar = |rows: Vec<Vec<String>>| rows[0][0].clone();
    let deep = scalar(
        common::rows(
            &engine,
            "SELECT display_id FROM runs WHERE project = 'bench' AND parent_id IS NOT NULL \
             ORDER BY id DESC LIMIT 1",
        )
        .await
        .unwrap(),
    );
    let family = scalar(
        common::rows(
            &engine,
            "SELECT display_id FROM runs WHERE project = 'bench' AND parent_id IS NULL \
             ORDER BY id LIMIT 1",
        )
        .await
        .unwrap(),
    );
    let mut queries = vec![(
        "product docs".to_string(),
        format!(
            "SELECT run_id, step, value, source_run_id, inherited FROM stitched_metrics('{}', 'loss')",
            docs.c.display_id
        ),
    )];
    for dir in ["queries", "benches/queries"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        for file in files {
            let sql = std::fs::read_to_string(&file)
                .unwrap()
                .replace("{run}", &deep)
                .replace("{family}", &family)
                .replace("{metric}", "train/loss")
                .replace("{width}", "100");
            queries.push((file.display().to_string(), sql));
        }
    }
    let mut stitched = 0;
    for (name, sql) in &queries {
        let (local, remote, plan) = both(&engine, &cluster, sql).await;
        assert!(!local.is_empty(), "{name}: no rows");
        assert_eq!(remote, local, "{name}\n{plan}");
        stitched += usize::from(plan.contains("StitchExec"));
    }
    assert!(stitched >= 5, "{stitched} of the plans stitched");
}
