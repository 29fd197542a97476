//! What this process is doing, for the people who run it: Prometheus
//! counters ([`metrics`]) and the bounded recent history behind the
//! per-process system tables ([`activity`]).

pub mod activity;
pub mod metrics;

pub use activity::{Activity, CompactionRecord, Interface, QueryInfo, QueryRecord};
