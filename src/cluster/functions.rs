//! What the scheduler and every executor decode plans with: forkline's
//! functions and codec on Ballista's settings.

use std::sync::Arc;

use ballista_core::extension::SessionConfigExt;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};

use super::codec::ForklineCodec;
use crate::query::functions;

/// `config` made cluster-safe (Ballista's restricted settings: no dynamic
/// filter pushdown, no physical uncorrelated scalar subqueries, no
/// round-robin repartition, no forced view types) with forkline's codec.
pub fn cluster_config(config: SessionConfig) -> SessionConfig {
    config
        .upgrade_for_ballista()
        .with_ballista_physical_extension_codec(ForklineCodec::shared())
}

/// A session state with DataFusion's functions and forkline's on
/// [`cluster_config`]: the scheduler's sessions and the executors' registry.
pub fn state(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> SessionState {
    let state = SessionStateBuilder::new()
        .with_config(cluster_config(config))
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    functions::register(&ctx);
    ctx.state()
}
