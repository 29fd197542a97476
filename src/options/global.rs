//! The options every command takes — the store and how to reach it, the
//! query engine's memory and parallelism — and the keys of `--config-file`.

use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::store::StoreOptions;

/// Global options: flags of every command, `FORKLINE_*` variables, and the
/// keys of a `--config-file` (the long names, `s3-endpoint = "…"`).
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct GlobalArgs {
    /// Store URL: a local path, memory://, s3://bucket/prefix, gs://bucket/prefix or
    /// az://container/prefix (credentials from the standard AWS_*, GOOGLE_*, AZURE_* variables).
    #[arg(
        long,
        global = true,
        env = "FORKLINE_STORE",
        default_value = "./data/warehouse"
    )]
    pub store: String,
    /// S3 endpoint of an S3-compatible server [default: AWS_ENDPOINT_URL, else AWS].
    #[arg(long, global = true, env = "FORKLINE_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: AWS_REGION, else us-east-1].
    #[arg(long, global = true, env = "FORKLINE_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Permit a plain-HTTP S3 endpoint [default: AWS_ALLOW_HTTP, else false].
    #[arg(
        long,
        global = true,
        env = "FORKLINE_S3_ALLOW_HTTP",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub s3_allow_http: Option<bool>,
    /// Path-style S3 requests (endpoint/bucket/key, the default); `=false` for
    /// virtual-hosted ones (bucket.endpoint/key) [default: AWS_VIRTUAL_HOSTED_STYLE_REQUEST].
    #[arg(
        long,
        global = true,
        env = "FORKLINE_S3_PATH_STYLE",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub s3_path_style: Option<bool>,
    /// Seconds a request to a network store is retried (connection refused,
    /// 5xx) before the operation fails with 503; a longer outage fails fast.
    #[arg(
        long,
        global = true,
        env = "FORKLINE_STORE_RETRY_S",
        value_name = "SECONDS",
        default_value_t = crate::store::location::DEFAULT_RETRY_TIMEOUT.as_secs_f64(),
        value_parser = super::values::retry_seconds
    )]
    pub store_retry_s: f64,
    /// Reads trust table versions checked this recently: commits by other
    /// processes on the same store become visible within this interval.
    #[arg(
        long,
        global = true,
        env = "FORKLINE_REFRESH_INTERVAL_MS",
        value_name = "MS",
        default_value_t = 250
    )]
    pub refresh_interval_ms: u64,
    /// Memory pool for query execution in MiB; sorts and joins spill beyond it.
    #[arg(
        long,
        global = true,
        env = "FORKLINE_MEMORY_MB",
        default_value_t = 2048
    )]
    pub memory_mb: usize,
    /// Query parallelism (default: the number of cores).
    #[arg(long, global = true, env = "FORKLINE_THREADS")]
    pub threads: Option<usize>,
}

impl Default for GlobalArgs {
    fn default() -> Self {
        super::defaults()
    }
}

impl GlobalArgs {
    /// The object-store settings.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            s3_allow_http: self.s3_allow_http,
            s3_path_style: self.s3_path_style,
            retry_timeout: Some(Duration::from_secs_f64(self.store_retry_s)),
        }
    }

    /// The query memory pool in bytes (16 MiB at least: less cannot run a scan).
    pub fn memory_limit(&self) -> usize {
        self.memory_mb.max(16) << 20
    }

    /// Partitions of a query plan: `--threads`, else the number of cores.
    pub fn target_partitions(&self) -> usize {
        self.threads.map_or_else(
            || std::thread::available_parallelism().map_or(2, |n| n.get()),
            |n| n.max(1),
        )
    }

    /// How recently checked a table version reads may trust.
    pub fn refresh_interval(&self) -> Duration {
        Duration::from_millis(self.refresh_interval_ms)
    }
}
