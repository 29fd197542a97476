//! `forkline scheduler`: a Ballista scheduler that decodes forkline's plans.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::SessionConfigExt;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use tokio::net::TcpListener;

use super::codec::ForklineCodec;
use super::functions::{cluster_config, state};
use crate::error::{Error, Result};
use crate::options::{GlobalArgs, SchedulerArgs};
use crate::store::StoreLocation;

/// A scheduler bound to its port: [`Scheduler::address`] is known before it serves.
pub struct Scheduler {
    listener: TcpListener,
    config: SchedulerConfig,
}

impl Scheduler {
    /// Binds `args.listen` and prepares the scheduler for plans over the
    /// store of `global` (decoding a scan looks its object store up).
    pub async fn bind(args: &SchedulerArgs, global: &GlobalArgs) -> Result<Self> {
        let location = StoreLocation::parse_existing(&global.store, &global.store_options())?;
        let listener = TcpListener::bind(&args.listen)
            .await
            .map_err(|e| Error::invalid(format!("scheduler --listen {}: {e}", args.listen)))?;
        let bound = listener.local_addr()?;
        let runtime = Arc::new(RuntimeEnv::default());
        runtime.register_object_store(
            location.object_store_url().as_ref(),
            location.object_store.clone(),
        );
        let config = SchedulerConfig {
            bind_host: bound.ip().to_string(),
            bind_port: bound.port(),
            external_host: args
                .external_host
                .clone()
                .unwrap_or_else(|| bound.ip().to_string()),
            // Executors ask for tasks when they have a free slot: after an
            // executor is lost, the others still pick up its reset tasks.
            scheduling_policy: TaskSchedulingPolicy::PullStaged,
            // A stage's tasks spread over the executors rather than filling one.
            task_distribution: TaskDistributionPolicy::RoundRobin,
            executor_timeout_seconds: args.executor_timeout_s.max(1),
            // A job whose tasks were reset (an executor was lost) is offered
            // again to the executors that remain.
            job_resubmit_interval_ms: Some(500),
            expire_dead_executor_interval_seconds: args.executor_timeout_s.clamp(1, 5),
            no_executors_grace_period_seconds: args.executor_timeout_s.max(1),
            override_session_builder: Some(Arc::new(move |config: SessionConfig| {
                Ok(state(config, runtime.clone()))
            })),
            override_config_producer: Some(Arc::new(|| {
                cluster_config(SessionConfig::new_with_ballista())
            })),
            override_physical_codec: Some(ForklineCodec::shared()),
            ..Default::default()
        };
        Ok(Self { listener, config })
    }

    /// Where forkline processes and executors reach it.
    pub fn address(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> Result<()> {
        let config = Arc::new(self.config);
        let cluster = BallistaCluster::new_from_config(&config)
            .await
            .map_err(|e| Error::invalid(format!("scheduler: {e}")))?;
        let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config)
            .await
            .map_err(|e| Error::invalid(format!("scheduler: {e}")))?;
        start_grpc_service_with_listener(self.listener, scheduler)
            .await
            .map_err(|e| Error::Unavailable(format!("scheduler stopped: {e}")))
    }
}
