//! A cluster inside this process, on loopback: a scheduler and executors as
//! Ballista's standalone helpers start them, with forkline's codec and
//! functions. For tests and single-machine trials of the cluster path.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::BallistaCodec;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_executor::new_standalone_executor_from_state;
use ballista_scheduler::standalone::new_standalone_scheduler_with_builder;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionConfig;

use super::codec::ForklineCodec;
use super::functions::{cluster_config, state};
use crate::error::{Error, Result};

/// Starts a scheduler and `executors` executors of `slots` task slots each,
/// all reading through `runtime`'s object stores; returns the scheduler's
/// address as `df://host:port`. They run until the process ends.
pub async fn start(executors: usize, slots: usize, runtime: Arc<RuntimeEnv>) -> Result<String> {
    let session_runtime = runtime.clone();
    let codec = BallistaCodec::new(
        Arc::new(BallistaLogicalExtensionCodec::default()),
        ForklineCodec::shared(),
    );
    let address: SocketAddr = new_standalone_scheduler_with_builder(
        Arc::new(move |config: SessionConfig| {
            Ok::<_, DataFusionError>(state(config, session_runtime.clone()))
        }),
        Arc::new(|| cluster_config(SessionConfig::new_with_ballista())),
        codec,
    )
    .await
    .map_err(|e| Error::invalid(format!("starting a scheduler: {e}")))?;
    let url = format!("http://{address}");
    let executor_state = state(SessionConfig::new(), runtime);
    for _ in 0..executors {
        let scheduler = SchedulerGrpcClient::connect(url.clone())
            .await
            .map_err(|e| Error::invalid(format!("reaching the scheduler at {url}: {e}")))?;
        new_standalone_executor_from_state(scheduler, slots.max(1), &executor_state)
            .await
            .map_err(|e| Error::invalid(format!("starting an executor: {e}")))?;
    }
    Ok(format!("df://{address}"))
}
