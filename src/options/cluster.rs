//! Options of the cluster: where queries run, and the scheduler and executor
//! processes (`forkline scheduler`, `forkline executor`).

use clap::Args;

/// Where the queries of `sql`, `serve` and `report` run.
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// Run queries on the Ballista cluster whose scheduler is at this address;
    /// this process still plans them (and reads the catalog), executors scan
    /// and aggregate.
    #[arg(long, env = "FORKLINE_CLUSTER", value_name = "df://HOST:PORT")]
    pub cluster: Option<String>,
}

/// Arguments of `scheduler`.
#[derive(Debug, Clone, Args)]
pub struct SchedulerArgs {
    /// Address of the scheduler's gRPC port, which takes plans from forkline
    /// processes and registers executors. It checks no key: keep it on a
    /// private network (port 0 picks a free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub listen: String,
    /// Host name executors and forkline processes reach the scheduler at (default: the --listen host).
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,
    /// An executor silent for this long is dead; its tasks run elsewhere.
    #[arg(long, env = "FORKLINE_EXECUTOR_TIMEOUT_S", default_value_t = 20)]
    pub executor_timeout_s: u64,
}

/// Arguments of `executor`.
#[derive(Debug, Clone, Args)]
pub struct ExecutorArgs {
    /// The scheduler to register with.
    #[arg(
        long,
        env = "FORKLINE_SCHEDULER",
        default_value = "df://127.0.0.1:50050",
        value_name = "df://HOST:PORT"
    )]
    pub scheduler: String,
    /// Address of the executor's Arrow Flight port, from which other
    /// executors and forkline processes fetch task output. It checks no key.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Host name the scheduler and other executors reach this one at (default: the --listen host).
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,
    /// Tasks this executor runs at once (default: its cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: Option<u32>,
    /// Directory for task output (shuffle files) and spills (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<std::path::PathBuf>,
}
