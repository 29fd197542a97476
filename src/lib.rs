//! forkline: an analytics backend for ML experiment tracking with run forking.
//!
//! The modules are layered so data flows one way (`tests/module_layers.rs`
//! fails on an import cycle): [`store`] holds the Delta tables, [`ingest`]
//! validates what comes in, [`catalog`] keeps runs and lineage, [`query`]
//! answers SQL with lineage table functions, and [`engine::Engine`] ties
//! them together and is the one write path. Above it sit [`auth`],
//! [`liveness`], [`maintenance`], [`report`] and the generated
//! [`fixtures`]; [`interfaces`] are the CLI, HTTP and Flight SQL front doors.
//! [`cluster`] runs the plans forkline makes on a Ballista cluster.

pub mod auth;
pub mod catalog;
pub mod cluster;
pub mod engine;
pub mod error;
pub mod fixtures;
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
