//! forkline's plans on a Ballista cluster, in this process: the codec
//! carries forkline's own operators across processes, and plans decoded as
//! an executor decodes them give the rows the originals give.

mod common;

use std::sync::Arc;

use arrow::array::RecordBatch;
use common::{product_docs, render, temp_store};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, collect, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use forkline::Engine;
use forkline::cluster::codec::ForklineCodec;
use forkline::cluster::{functions, remote};
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
        (
            format!(
                "SELECT * FROM family_metrics('{c}', 'loss') WHERE step BETWEEN 45 AND 155"
            ),
            "StitchExec",
        ),
        // Functions by name: the executor's registry must know them.
        (
            format!(
                "SELECT downsample(step, value, 10) AS d, lttb(step, value, 5) AS l \
                 FROM stitched_metrics('{c}', 'loss')"
            ),
            "StitchExec",
        ),
        (
            format!(
                "SELECT run_id, step / 20 AS b, min(value), max(value), \
                 last_value(value ORDER BY step), count(*) \
                 FROM family_metrics('{c}', 'loss') GROUP BY run_id, step / 20"
            ),
            "SortedAggregateExec",
        ),
        (
            "SELECT metric, count(*), sum(value), min(value), max(value) FROM metrics GROUP BY metric"
                .to_string(),
            "RunAggregateExec",
        ),
        (
            "SELECT run_id, count(*) FROM logs GROUP BY run_id UNION ALL \
             SELECT run_id, count(*) FROM run_status_events GROUP BY run_id"
                .to_string(),
            "DataSourceExec",
        ),
    ] {
        let df = engine.sql(&sql).await.unwrap();
        let (state, plan) = remote::physical_plan(df).await.unwrap();
        assert!(shown(&plan).contains(operator), "{sql}: {}", shown(&plan));
        let decoded = round_trip(&engine, &plan).await;
        // Node for node: Ballista matches task metrics to stage nodes.
        assert_eq!(shown(&decoded), shown(&plan), "{sql}");
        let ctx = SessionContext::new_with_state(state);
        let expected = collect(plan, ctx.task_ctx()).await.unwrap();
        let got = collect(decoded, ctx.task_ctx()).await.unwrap();
        if operator != "DataSourceExec" {
            let rows: usize = expected.iter().map(|b| b.num_rows()).sum();
            assert!(rows > 0, "{sql}: no rows");
        }
        common::assert_same(&sorted(&got), &sorted(&expected), &sql);
    }
}

#[tokio::test]
async fn a_stitching_operator_reads_its_owners_as_a_stage_of_their_own() {
    let (_dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    let docs = product_docs(&engine).await.unwrap();
    let sql = format!(
        "SELECT * FROM family_metrics('{}', 'loss')",
        docs.a.display_id
    );
    let (_, plan) = remote::physical_plan(engine.sql(&sql).await.unwrap())
        .await
        .unwrap();
    let text = shown(&plan);
    let stitch = text.find("StitchExec").expect("a stitched plan");
    let below = &text[stitch..];
    // One input partition, merged where the scan has several.
    let input = plan_input_partitions(&plan);
    assert_eq!(input, Some(1), "{text}");
    assert!(below.contains("DataSourceExec"), "{text}");
}

/// The job's last stage is one task (Ballista 55 would hand the client the
/// files of a restarted last stage's first attempt too), merged in order
/// where the query orders its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_sent_to_the_cluster_ends_in_one_partition() {
    let (_dir, store) = temp_store();
    let options = forkline::EngineOptions {
        target_partitions: 4,
        ..Default::default()
    };
    let engine = Engine::open_with(&store, options).await.unwrap();
    product_docs(&engine).await.unwrap();
    for (sql, ordered) in [
        (
            "SELECT run_id, metric, count(*) FROM metrics GROUP BY run_id, metric",
            false,
        ),
        (
            "SELECT run_id, step, value FROM metrics ORDER BY run_id, step",
            true,
        ),
    ] {
        let local = engine.sql(sql).await.unwrap();
        let (_, plan) = remote::physical_plan(local).await.unwrap();
        let text = shown(&plan);
        assert_eq!(plan.output_partitioning().partition_count(), 1, "{text}");
        assert_eq!(plan.output_ordering().is_some(), ordered, "{text}");
        // What it merges has several partitions: the merge is the root's.
        let below = plan.children()[0].output_partitioning().partition_count();
        assert!(below > 1, "{text}");
    }
}

/// The number of input partitions of the first `StitchExec` in `plan`.
fn plan_input_partitions(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    if plan.name() == "StitchExec" {
        return Some(plan.children()[0].output_partitioning().partition_count());
    }
    plan.children().into_iter().find_map(plan_input_partitions)
}

#[test]
fn a_cluster_address_is_checked_before_any_query() {
    assert_eq!(
        remote::scheduler_url("df://127.0.0.1:50050").unwrap(),
        "http://127.0.0.1:50050"
    );
    assert_eq!(
        remote::scheduler_url("sched.internal:7000").unwrap(),
        "http://sched.internal:7000"
    );
    for bad in [
        "",
        "df://",
        "df://host",
        "df://host:port",
        "df://:50050",
        "http://x/y:1",
    ] {
        let e = remote::Remote::new(bad).unwrap_err();
        assert_eq!(e.kind(), forkline::ErrorKind::InvalidInput, "{bad}: {e}");
        assert!(e.to_string().contains("df://host:port"), "{bad}: {e}");
    }
}

#[tokio::test]
async fn a_deleted_runs_rows_stay_out_of_plans_sent_to_the_cluster() {
    let (_dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    let docs = product_docs(&engine).await.unwrap();
    let gone = docs.c.id as i64;
    engine
        .delete_runs(
            vec![docs.c.display_id.clone()],
            false,
            &forkline::scope::Scope::unrestricted(),
        )
        .await
        .unwrap();
    for sql in [
        "SELECT run_id, count(*) FROM metrics GROUP BY run_id",
        "SELECT run_id, count(*) FROM metric_writes GROUP BY run_id",
        "SELECT run_id, count(*) FROM logs GROUP BY run_id UNION ALL \
         SELECT run_id, count(*) FROM run_status_events GROUP BY run_id",
    ] {
        let df = engine.sql(sql).await.unwrap();
        let (state, plan) = remote::physical_plan(df).await.unwrap();
        let decoded = round_trip(&engine, &plan).await;
        let ctx = SessionContext::new_with_state(state);
        let rows = sorted(&collect(decoded, ctx.task_ctx()).await.unwrap());
        assert!(!rows.is_empty(), "{sql}");
        assert!(
            rows.iter().all(|row| row[0] != gone.to_string()),
            "{sql}: {rows:?}"
        );
    }
}
