//! `forkline executor`: a Ballista executor that runs forkline's operators
//! and reads the store's objects.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::RuntimeProducer;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::error::BallistaError;
use ballista_core::extension::SessionConfigExt;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::utils::{create_grpc_server, create_grpc_server_incoming};
use ballista_executor::ArrowFlightServerProvider;
use ballista_executor::execution_engine::DefaultExecutionEngine;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_executor::flight_service::BallistaFlightService;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::SessionConfig;
use tonic::transport::server::TcpIncoming;

use super::attempts::AttemptTagging;
use super::codec::ForklineCodec;
use super::functions::{cluster_config, state};
use super::remote::scheduler_address;
use crate::error::{Error, Result};
use crate::options::{ExecutorArgs, GlobalArgs};
use crate::store::StoreLocation;

/// How often an executor tells the scheduler it is alive (the scheduler's
/// `--executor-timeout-s` must be several of these).
const HEARTBEAT_S: u64 = 3;

/// Registers with the scheduler and runs tasks until the process ends.
pub async fn run(args: &ExecutorArgs, global: &GlobalArgs) -> Result<()> {
    let location = StoreLocation::parse_existing(&global.store, &global.store_options())?;
    let (scheduler_host, scheduler_port) = scheduler_address(&args.scheduler)?;
    let flight = address("--listen", &args.listen)?;
    // The Flight port is bound here, before anything registers: Ballista
    // binds it only after registering, and a failed bind there is logged
    // while the process goes on to exit 0, registered at a port it never had.
    let defaults = ExecutorProcessConfig::default();
    let incoming =
        create_grpc_server_incoming(flight, &defaults.grpc_server_config).map_err(|e| {
            Error::Unavailable(format!(
                "the executor's Flight port {flight} (--listen) cannot be bound: {e}"
            ))
        })?;
    let bound = incoming.local_addr()?;
    let work_dir = args
        .work_dir
        .as_ref()
        .map(|d| {
            std::fs::create_dir_all(d)?;
            Ok::<_, std::io::Error>(d.display().to_string())
        })
        .transpose()?;
    let store_url = location.object_store_url();
    let object_store = location.object_store.clone();
    let spill_dir = work_dir.clone();
    // Every task's runtime reads the store; Ballista adds the memory pool.
    let runtime: RuntimeProducer = Arc::new(move |_: &SessionConfig| {
        let mut builder = RuntimeEnvBuilder::new();
        if let Some(dir) = &spill_dir {
            builder = builder.with_temp_file_path(dir.clone());
        }
        let runtime = builder.build()?;
        runtime.register_object_store(store_url.as_ref(), object_store.clone());
        Ok(Arc::new(runtime))
    });
    let functions = state(SessionConfig::new(), Arc::new(RuntimeEnv::default()));
    let flight_error = Arc::new(Mutex::new(None));
    let config = ExecutorProcessConfig {
        bind_host: bound.ip().to_string(),
        // The bound port (`--listen HOST:0` takes a free one).
        port: bound.port(),
        // Executors ask the scheduler for tasks (pull), so they serve no gRPC.
        grpc_port: 0,
        external_host: args.external_host.clone(),
        scheduler_host,
        scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: args.slots.map_or(0, |n| n as usize),
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        work_dir,
        executor_heartbeat_interval_seconds: HEARTBEAT_S,
        memory_pool_size: Some(global.memory_limit() as u64),
        override_function_registry: Some(Arc::new(BallistaFunctionRegistry::from(&functions))),
        override_runtime_producer: Some(runtime),
        override_config_producer: Some(Arc::new(|| {
            cluster_config(SessionConfig::new_with_ballista())
        })),
        override_physical_codec: Some(ForklineCodec::shared()),
        // Ballista 55 does not export its connection pool, so shuffle reads
        // connect per fetch.
        override_execution_engine: Some(Arc::new(AttemptTagging::new(Arc::new(
            DefaultExecutionEngine::new(),
        )))),
        override_arrow_flight_service: Some(flight_service(
            incoming,
            defaults.grpc_max_encoding_message_size as usize,
            defaults.grpc_max_decoding_message_size as usize,
            flight_error.clone(),
        )),
        print_thread_info: false,
        ..defaults
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| Error::Unavailable(format!("executor stopped: {e}")))?;
    // Ballista ends the process normally when a service stops with an error.
    match flight_error.lock().expect("flight error lock").take() {
        Some(e) => Err(Error::Unavailable(format!(
            "the executor's Flight server at {bound} stopped: {e}"
        ))),
        None => Ok(()),
    }
}

/// Ballista's Flight service (task output for other executors and clients)
/// on the port bound in [`run`]; an error it stops with is kept in `error`.
fn flight_service(
    incoming: TcpIncoming,
    max_encoding: usize,
    max_decoding: usize,
    error: Arc<Mutex<Option<String>>>,
) -> Arc<ArrowFlightServerProvider> {
    let incoming = Mutex::new(Some(incoming));
    Arc::new(move |work_dir, _address, mut shutdown, grpc| {
        let incoming = incoming.lock().expect("flight listener lock").take();
        let error = error.clone();
        tokio::spawn(async move {
            let Some(incoming) = incoming else {
                return Err(BallistaError::General(
                    "the executor's Flight service was started twice".into(),
                ));
            };
            let service = FlightServiceServer::new(BallistaFlightService::new(work_dir))
                .max_encoding_message_size(max_encoding)
                .max_decoding_message_size(max_decoding);
            let served = create_grpc_server(&grpc)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, shutdown.recv())
                .await;
            served.map_err(|e| {
                *error.lock().expect("flight error lock") = Some(e.to_string());
                BallistaError::TonicError(e)
            })
        })
    })
}

fn address(flag: &str, value: &str) -> Result<SocketAddr> {
    value
        .parse()
        .map_err(|e| Error::invalid(format!("{flag} {value}: {e} (expected ip:port)")))
}
