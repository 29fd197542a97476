//! Options of the query gate (`forkline serve`): how long a query may take,
//! how many run and wait at once, and how many finished ones are remembered.

use std::time::Duration;

use clap::Args;

/// Query limits and history of a server.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Cancel a query this many seconds after it arrives (waiting included);
    /// the client gets 504 (Flight: DEADLINE_EXCEEDED), or a cut stream.
    #[arg(long, env = "FORKLINE_QUERY_TIMEOUT_S", default_value_t = 300.0, value_parser = super::values::timeout_seconds)]
    pub query_timeout_s: f64,
    /// Queries run at once [default: twice the cores, at least 4].
    #[arg(long, env = "FORKLINE_MAX_CONCURRENT_QUERIES", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_queries: Option<u32>,
    /// Queries that may wait for a slot; more get 503 with Retry-After (Flight: UNAVAILABLE).
    #[arg(long, env = "FORKLINE_QUERY_QUEUE", default_value_t = 64)]
    pub query_queue: usize,
    /// Finished queries kept in memory for `system.queries` (0 keeps none).
    #[arg(long, env = "FORKLINE_QUERY_HISTORY", default_value_t = 1_000)]
    pub query_history: usize,
}

impl Default for QueryArgs {
    fn default() -> Self {
        super::defaults()
    }
}

impl QueryArgs {
    /// Longest a query may take, from arrival to its last row.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.query_timeout_s)
    }

    /// Queries running at once: the flag, else twice the cores (at least 4).
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent_queries.map_or_else(
            || {
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                (2 * cores).max(4)
            },
            |n| n as usize,
        )
    }
}
