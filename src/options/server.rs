//! Options of `forkline serve`: where it listens, how it commits and what
//! it accepts, and the limits of its connections.

use std::time::Duration;

use clap::Args;

/// The server's listeners, ingest and run-liveness settings.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Address of the Arrow Flight SQL endpoint (`off` to disable it).
    #[arg(long, default_value = "127.0.0.1:7071")]
    pub flight_listen: String,
    /// Ingest requests arriving within this many milliseconds share one commit.
    #[arg(long, env = "FORKLINE_COMMIT_WINDOW_MS", default_value_t = 100)]
    pub commit_window_ms: u64,
    /// Largest request body accepted, in MiB (larger requests get 413).
    #[arg(long, env = "FORKLINE_MAX_BODY_MB", default_value_t = 32)]
    pub max_body_mb: usize,
    /// Base URL clients reach this server at (`https://forkline.example.com`),
    /// used in the run and file URLs it hands out; default: the listening
    /// address. A request's `Host` header is never used for them.
    #[arg(long, env = "FORKLINE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Serve as a read replica: write routes answer 403, no compaction runs.
    #[arg(long, env = "FORKLINE_READ_ONLY")]
    pub read_only: bool,
    /// A RUNNING run with no heartbeat, ingest or status call for this long
    /// becomes TERMINATED: seconds or a duration (`15m`, `900s`); 0 turns the
    /// monitor off. Servers sharing a store should agree on it.
    #[arg(long, env = "FORKLINE_STALE_AFTER", value_name = "DURATION", default_value = "15m", value_parser = super::values::parse_duration)]
    pub stale_after: Duration,
    /// Do not serve the web console (`GET /` and the pages under it answer 404).
    #[arg(long, env = "FORKLINE_NO_CONSOLE")]
    pub no_console: bool,
}

impl Default for ServerArgs {
    fn default() -> Self {
        super::defaults()
    }
}

impl ServerArgs {
    /// The commit window, at most 10 s (a longer one would outlast clients' timeouts).
    pub fn commit_window(&self) -> Duration {
        Duration::from_millis(self.commit_window_ms.min(10_000))
    }

    /// The largest body in bytes (1 MiB at least).
    pub fn max_body(&self) -> usize {
        self.max_body_mb.max(1) << 20
    }

    /// The stale-run period; `None` when the monitor is off.
    pub fn stale_after(&self) -> Option<Duration> {
        (!self.stale_after.is_zero()).then_some(self.stale_after)
    }
}

/// Limits of the HTTP and Flight SQL connections.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Open connections per listener (HTTP, Flight SQL); more wait in the listen backlog.
    #[arg(long, env = "FORKLINE_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Seconds a connection may take to send a request head — counted from
    /// connecting or from the previous response, so idle keep-alive
    /// connections close after it too (Flight: its HTTP/2 preface).
    #[arg(long, env = "FORKLINE_HTTP_HEADER_TIMEOUT_S", default_value_t = 30.0, value_parser = super::values::timeout_seconds)]
    pub http_header_timeout_s: f64,
    /// Seconds a request body may take to arrive (else 408).
    #[arg(long, env = "FORKLINE_HTTP_BODY_TIMEOUT_S", default_value_t = 60.0, value_parser = super::values::timeout_seconds)]
    pub http_body_timeout_s: f64,
}

impl Default for ConnectionArgs {
    fn default() -> Self {
        super::defaults()
    }
}
