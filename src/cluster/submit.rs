//! Plans made here, executed on the cluster.

use std::sync::Arc;

use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion_proto::protobuf::PhysicalPlanNode;

use super::codec::ForklineCodec;
use super::functions::cluster_config;
use crate::error::{Error, Result};

/// The gRPC address of a scheduler given as `df://host:port` (Ballista's
/// scheme) or `host:port`.
pub fn scheduler_url(cluster: &str) -> Result<String> {
    let address = cluster.strip_prefix("df://").unwrap_or(cluster);
    let (host, port) = address
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && !host.contains('/'))
        .ok_or_else(|| {
            Error::invalid(format!(
                "cluster `{cluster}`: expected df://host:port, the scheduler's address"
            ))
        })?;
    let port: u16 = port
        .parse()
        .map_err(|_| Error::invalid(format!("cluster `{cluster}`: bad port `{port}`")))?;
    Ok(format!("http://{host}:{port}"))
}

/// `ctx` with the cluster's planning settings (see [`cluster_config`]): the
/// same tables, functions and optimizer rules, so what it plans is what the
/// executors can run.
pub fn planning_session(ctx: &SessionContext) -> SessionContext {
    let mut state = ctx.state();
    let config = cluster_config(state.config().clone());
    *state.config_mut() = config;
    SessionContext::new_with_state(state)
}

/// Plans `sql` in `ctx` (made by [`planning_session`]) to the physical plan
/// the cluster runs.
pub async fn plan(ctx: &SessionContext, sql: &str) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(ctx.sql(sql).await?.create_physical_plan().await?)
}

/// Runs `plan`, made in `ctx`, on the cluster whose scheduler is `cluster`
/// (see [`scheduler_url`]); the stream yields the plan's rows.
pub async fn execute(
    cluster: &str,
    ctx: &SessionContext,
    plan: Arc<dyn ExecutionPlan>,
) -> Result<SendableRecordBatchStream> {
    let url = scheduler_url(cluster)?;
    let config = cluster_config(ctx.copied_config());
    let ballista = config.ballista_config();
    let stream = execute_physical_plan::<PhysicalPlanNode>(
        url,
        &ballista,
        plan,
        &ForklineCodec::default(),
        ctx.session_id(),
        config,
    )
    .await?;
    Ok(stream)
}
