//! forkline: an analytics backend for ML experiment tracking with run forking.
//!
//! The tree follows the data flow: [`ingest`] validates points, [`store`]
//! commits them to Delta tables, [`catalog`] keeps runs and lineage,
//! [`query`] answers SQL with lineage table functions, and [`interfaces`]
//! are the CLI and HTTP front doors over one [`engine::Engine`]; [`liveness`]
//! is how `forkline serve` tells live runs from silent ones; [`cluster`]
//! (feature `cluster`) runs the plans forkline makes on a Ballista cluster.

pub mod auth;
pub mod bench_data;
pub mod catalog;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod compact;
pub mod demo;
pub mod engine;
pub mod error;
pub mod import;
pub mod ingest;
pub mod interfaces;
pub mod liveness;
pub mod logging;
pub mod maintenance;
pub mod observe;
pub mod options;
pub mod query;
pub mod report;
pub mod scope;
pub mod store;

pub use engine::{Engine, EngineOptions, ForkOutcome};
pub use error::{Error, ErrorKind, Result};
