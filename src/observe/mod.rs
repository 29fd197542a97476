//! What this process is doing, for the people who run it: Prometheus
//! counters ([`metrics`]) and the bounded recent history behind the
//! per-process system tables ([`activity`]), and the context each request
//! carries to them ([`request`]).

pub mod activity;
pub mod metrics;
pub mod request;

pub use activity::{Activity, CompactionRecord, QueryInfo, QueryRecord};
pub use request::{Interface, RequestContext, RequestId};
