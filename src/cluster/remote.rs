//! Plans made here, executed on the cluster: the [`PlanRunner`] of an engine
//! opened with `--cluster df://host:port`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result as DFResult;
use datafusion::execution::{SendableRecordBatchStream, SessionState};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, execute_stream};
use datafusion::prelude::DataFrame;
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::StreamExt;

use super::attempts::is_mixed_attempts;
use super::codec::ForklineCodec;
use super::functions::cluster_config;
use crate::error::{Error, Result};
use crate::query::admission::runner::PlanRunner;

/// How long reaching the scheduler may take before a query fails: a cluster
/// that is down is an error, not a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a query whose job failed for shuffle input of two stage
/// attempts (see [`super::attempts`]) is submitted again.
const RERUNS: usize = 2;

/// Runs plans on the Ballista cluster whose scheduler listens at `url`.
#[derive(Debug, Clone)]
pub struct Remote {
    /// `df://host:port`, as given.
    cluster: String,
    /// `http://host:port`, the scheduler's gRPC address.
    url: String,
}

impl Remote {
    /// The cluster whose scheduler is `cluster` (`df://host:port`, Ballista's
    /// scheme, or `host:port`). Nothing is contacted until a query runs.
    pub fn new(cluster: &str) -> Result<Self> {
        Ok(Self {
            cluster: cluster.to_string(),
            url: scheduler_url(cluster)?,
        })
    }
}

/// The gRPC address of a scheduler given as `df://host:port` or `host:port`.
pub fn scheduler_url(cluster: &str) -> Result<String> {
    let (host, port) = scheduler_address(cluster)?;
    Ok(format!("http://{host}:{port}"))
}

/// The host and port of a scheduler given as `df://host:port` or `host:port`.
pub fn scheduler_address(cluster: &str) -> Result<(String, u16)> {
    let address = cluster.strip_prefix("df://").unwrap_or(cluster);
    let (host, port) = address
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && !host.contains('/'))
        .ok_or_else(|| {
            Error::invalid(format!(
                "--cluster `{cluster}`: expected df://host:port, the scheduler's address"
            ))
        })?;
    let port: u16 = port.parse().map_err(|_| {
        Error::invalid(format!(
            "--cluster `{cluster}`: bad port `{port}` (expected df://host:port)"
        ))
    })?;
    Ok((host.to_string(), port))
}

/// `state` with the cluster's planning settings (see [`cluster_config`]):
/// the same tables, functions and optimizer rules, so what it plans is what
/// the executors can run.
pub fn planning_state(mut state: SessionState) -> SessionState {
    let config = cluster_config(state.config().clone()).set_u64(
        "ballista.client.grpc_connect_timeout_seconds",
        CONNECT_TIMEOUT.as_secs(),
    );
    *state.config_mut() = config;
    state
}

/// The physical plan of `df` as the cluster runs it.
pub async fn physical_plan(df: DataFrame) -> Result<(SessionState, Arc<dyn ExecutionPlan>)> {
    let (state, plan) = df.into_parts();
    let state = planning_state(state);
    let physical = state.create_physical_plan(&plan).await?;
    Ok((state, stage_for_cluster(physical)?))
}

/// `plan` adjusted for the cluster: [`union_inputs_as_stages`], then
/// [`one_final_task`].
pub fn stage_for_cluster(plan: Arc<dyn ExecutionPlan>) -> DFResult<Arc<dyn ExecutionPlan>> {
    Ok(one_final_task(union_inputs_as_stages(plan)?))
}

/// Each input of a union becomes a stage of its own (by merging it: the
/// scheduler cuts a stage below each merge). Ballista hands each task of a
/// union's stage only the inputs its partitions come from, and inputs whose
/// partitions do not come from their leaves (an aggregate behind a hash
/// exchange) are otherwise run whole, or not at all, by the wrong tasks.
/// Read through shuffles, every input divides cleanly.
fn union_inputs_as_stages(plan: Arc<dyn ExecutionPlan>) -> DFResult<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.downcast_ref::<UnionExec>().is_none() {
            return Ok(Transformed::no(node));
        }
        let inputs: Vec<Arc<dyn ExecutionPlan>> = node
            .children()
            .into_iter()
            .map(|input| -> Arc<dyn ExecutionPlan> {
                if input.downcast_ref::<CoalescePartitionsExec>().is_some() {
                    return input.clone();
                }
                Arc::new(CoalescePartitionsExec::new(input.clone()))
            })
            .collect();
        let options = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
        Ok(Transformed::yes(node.replace_children(inputs, options)?))
    })
    .map(|t| t.data)
}

/// The root merged to one partition (in order where it is ordered), so the
/// job's last stage is one task. Ballista 55 keeps the output of a last
/// stage's finished tasks when it restarts that stage after an executor was
/// lost, and hands both attempts' files to the client; a stage of one task
/// has none finished to keep (the reads of every earlier stage are checked,
/// see `attempts`).
fn one_final_task(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if plan.output_partitioning().partition_count() <= 1 {
        return plan;
    }
    match plan.output_ordering() {
        Some(ordering) => Arc::new(SortPreservingMergeExec::new(ordering.clone(), plan)),
        None => Arc::new(CoalescePartitionsExec::new(plan)),
    }
}

/// Whether the cluster can run `plan` as it is. Ballista matches each task's
/// metrics to its stage node by node, so a plan that the wire format
/// rebuilds with other nodes (DataFusion's drops the target field of a cast,
/// and a union whose inputs then differ in nullability gains a projection at
/// each decode) would never finish there; one the codec cannot write at all
/// cannot be sent.
fn survives_the_wire(plan: &Arc<dyn ExecutionPlan>, state: &SessionState) -> bool {
    let codec = ForklineCodec::default();
    let task = state.task_ctx();
    let round_trip = |plan: &Arc<dyn ExecutionPlan>| {
        PhysicalPlanNode::try_from_physical_plan(plan.clone(), &codec)
            .and_then(|node| node.try_into_physical_plan(task.as_ref(), &codec))
    };
    // The scheduler decodes the plan, and executors decode what it sends on.
    let twice = round_trip(plan).and_then(|once| round_trip(&once));
    match twice {
        Ok(decoded) => nodes(&decoded) == nodes(plan),
        Err(e) => {
            tracing::debug!(error = %e, "plan not serializable");
            false
        }
    }
}

fn nodes(plan: &Arc<dyn ExecutionPlan>) -> usize {
    1 + plan.children().into_iter().map(nodes).sum::<usize>()
}

#[async_trait]
impl PlanRunner for Remote {
    async fn execute(&self, df: DataFrame) -> Result<SendableRecordBatchStream> {
        let (state, plan) = physical_plan(df).await?;
        if !survives_the_wire(&plan, &state) {
            tracing::warn!(
                cluster = %self.cluster,
                "a plan the cluster cannot run as planned runs in this process"
            );
            return Ok(execute_stream(plan, state.task_ctx())?);
        }
        let config = state.config().clone();
        let ballista = config.ballista_config();
        let mut reruns = 0;
        loop {
            let submitted = execute_physical_plan::<PhysicalPlanNode>(
                self.url.clone(),
                &ballista,
                plan.clone(),
                &ForklineCodec::default(),
                state.session_id().to_string(),
                config.clone(),
            )
            .await;
            match first_batch(submitted).await {
                Err(e) if reruns < RERUNS && is_mixed_attempts(&e) => {
                    reruns += 1;
                    tracing::warn!(
                        cluster = %self.cluster,
                        reruns,
                        "a stage restarted after an executor was lost; the query runs again"
                    );
                }
                result => return result.map_err(|e| cluster_error(&self.cluster, e)),
            }
        }
    }

    fn describe(&self) -> String {
        format!("cluster {}", self.cluster)
    }
}

/// `submitted` with its first batch already read: a job that failed does so
/// before the cluster sends any row, so whether to run it again is known here.
async fn first_batch(
    submitted: DFResult<SendableRecordBatchStream>,
) -> DFResult<SendableRecordBatchStream> {
    let mut stream = submitted?;
    let schema = stream.schema();
    let first = stream.next().await.transpose()?;
    let head = futures::stream::iter(first.map(Ok));
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        schema,
        head.chain(stream),
    )))
}

/// Ballista's errors say little of where they came from.
fn cluster_error(cluster: &str, e: datafusion::error::DataFusionError) -> Error {
    let text = e.to_string();
    if text.contains("transport error") || text.contains("Connection refused") {
        return Error::Unavailable(format!(
            "the cluster's scheduler at {cluster} cannot be reached: {text}"
        ));
    }
    // Ballista carries an executor's error as text inside its own.
    if text.contains("ResourcesExhausted(") {
        return Error::from(datafusion::error::DataFusionError::ResourcesExhausted(
            format!(
                "the query needs more memory than an executor of the cluster {cluster} \
             gives one task (its --memory-mb, shared by its --slots): {text}"
            ),
        ));
    }
    Error::from(e)
}
