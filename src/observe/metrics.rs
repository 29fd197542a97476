//! Prometheus metrics of the server, rendered by `GET /metrics`.
//!
//! Counters and histograms are recorded where things happen through the
//! `metrics` facade (a no-op until [`handle`] installs the recorder, so the
//! CLI pays nothing); gauges that describe state — table versions, runs by
//! status, the query memory pool — are computed from it at scrape time.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::TableKind;

const INGEST_REQUESTS: &str = "forkline_ingest_requests_total";
const INGEST_ROWS: &str = "forkline_ingest_rows_total";
const INGEST_BYTES: &str = "forkline_ingest_bytes_total";
const GROUP_COMMIT_POINTS: &str = "forkline_group_commit_points";
const GROUP_COMMIT_REQUESTS: &str = "forkline_group_commit_requests";
const GROUP_COMMIT_SECONDS: &str = "forkline_group_commit_seconds";
const CATALOG_COMMIT_MUTATIONS: &str = "forkline_catalog_commit_mutations";
const CATALOG_CONFLICTS: &str = "forkline_catalog_commit_conflicts_total";
const CATALOG_RETRIES: &str = "forkline_catalog_commit_retries_total";
const STATUS_CHANGES: &str = "forkline_run_status_changes_total";
const QUERIES: &str = "forkline_queries_total";
const QUERY_SECONDS: &str = "forkline_query_duration_seconds";
const QUERY_ROWS: &str = "forkline_query_rows_total";
const QUERY_BYTES: &str = "forkline_query_bytes_total";
const MEMORY_RESERVED: &str = "forkline_query_memory_reserved_bytes";
const MEMORY_LIMIT: &str = "forkline_query_memory_limit_bytes";
const COMPACTIONS: &str = "forkline_compactions_total";
const COMPACTION_FILES_IN: &str = "forkline_compaction_files_in_total";
const COMPACTION_FILES_OUT: &str = "forkline_compaction_files_out_total";
const COMPACTION_BYTES_IN: &str = "forkline_compaction_bytes_in_total";
const COMPACTION_BYTES_OUT: &str = "forkline_compaction_bytes_out_total";
const COMPACTION_SECONDS: &str = "forkline_compaction_duration_seconds";
const STORE_ERRORS: &str = "forkline_store_errors_total";
const HTTP_ERRORS: &str = "forkline_http_errors_total";
const TABLE_VERSION: &str = "forkline_table_version";
const RUNS: &str = "forkline_runs";

/// Latency buckets, in seconds: a millisecond to the default query timeout.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Points per group commit, up to the group's cap of 2 million.
const POINTS_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 2e6];
/// Requests per group commit.
const REQUESTS_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// How often histogram samples are folded into their buckets between scrapes,
/// so memory stays bounded on a server nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(GROUP_COMMIT_POINTS.into()), POINTS_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(GROUP_COMMIT_REQUESTS.into()),
                    REQUESTS_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(CATALOG_COMMIT_MUTATIONS.into()),
                    REQUESTS_BUCKETS,
                )
            })
            .expect("bucket lists are non-empty constants");
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                // Someone else's recorder (an embedding program): serve empty metrics.
                tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics will be empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        };
        describe();
        handle
    })
}

/// Installs the recorder and keeps its histograms folded; call once inside a runtime.
pub fn start() {
    let handle = handle();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(UPKEEP);
        loop {
            ticks.tick().await;
            handle.run_upkeep();
        }
    });
}

fn describe() {
    describe_counter!(
        INGEST_REQUESTS,
        "Ingest requests accepted, by kind (metrics, logs, data)."
    );
    describe_counter!(
        INGEST_ROWS,
        "Rows committed by ingest requests (metric points, log lines, data values), by kind."
    );
    describe_counter!(
        INGEST_BYTES,
        "Request body bytes of accepted ingest requests, by kind."
    );
    describe_histogram!(GROUP_COMMIT_POINTS, "Metric points per group commit.");
    describe_histogram!(GROUP_COMMIT_REQUESTS, "Ingest requests per group commit.");
    describe_histogram!(
        GROUP_COMMIT_SECONDS,
        "Time of one group commit's Delta write, in seconds."
    );
    describe_histogram!(
        CATALOG_COMMIT_MUTATIONS,
        "Run catalog mutations (creates, forks, status and other changes) per catalog commit."
    );
    describe_counter!(
        CATALOG_CONFLICTS,
        "Run catalog commits that lost an optimistic race to another writer."
    );
    describe_counter!(
        CATALOG_RETRIES,
        "Run catalog commits re-planned after a lost race."
    );
    describe_counter!(
        STATUS_CHANGES,
        "Run status changes this process committed, by source (create, api, resume, \
         stale-monitor, activity) and new status."
    );
    describe_counter!(QUERIES, "Queries finished, by interface and outcome.");
    describe_histogram!(
        QUERY_SECONDS,
        "Query time from arrival (queueing included) to the last row, in seconds."
    );
    describe_counter!(QUERY_ROWS, "Rows returned by queries, by interface.");
    describe_counter!(
        QUERY_BYTES,
        "Arrow bytes returned by queries, by interface."
    );
    describe_gauge!(
        MEMORY_RESERVED,
        "Bytes reserved in the query memory pool now."
    );
    describe_gauge!(
        MEMORY_LIMIT,
        "Size of the query memory pool (--memory-limit)."
    );
    describe_counter!(
        COMPACTIONS,
        "Compactions run by this process, by table and outcome."
    );
    describe_counter!(COMPACTION_FILES_IN, "Files rewritten by compaction.");
    describe_counter!(COMPACTION_FILES_OUT, "Files written by compaction.");
    describe_counter!(
        COMPACTION_BYTES_IN,
        "Bytes of the files rewritten by compaction."
    );
    describe_counter!(
        COMPACTION_BYTES_OUT,
        "Bytes of the files written by compaction."
    );
    describe_histogram!(COMPACTION_SECONDS, "Wall time of a compaction, in seconds.");
    describe_counter!(
        STORE_ERRORS,
        "Requests failed by the object store or a commit, by interface."
    );
    describe_counter!(
        HTTP_ERRORS,
        "HTTP error responses, by status (503: store unavailable or busy)."
    );
    describe_gauge!(
        TABLE_VERSION,
        "Delta version of each table as this server last saw it."
    );
    describe_gauge!(RUNS, "Runs by status, over every project.");
}

/// An accepted ingest request of `kind` that committed `rows` from a body of `bytes`.
pub fn ingest(kind: TableKind, rows: usize, bytes: usize) {
    counter!(INGEST_REQUESTS, "kind" => kind.dir()).increment(1);
    counter!(INGEST_ROWS, "kind" => kind.dir()).increment(rows as u64);
    counter!(INGEST_BYTES, "kind" => kind.dir()).increment(bytes as u64);
}

/// One group commit of `requests` requests holding `points` points.
pub fn group_commit(requests: usize, points: usize, took: Duration, committed: bool) {
    histogram!(GROUP_COMMIT_REQUESTS).record(requests as f64);
    histogram!(GROUP_COMMIT_POINTS).record(points as f64);
    histogram!(GROUP_COMMIT_SECONDS).record(took.as_secs_f64());
    if !committed {
        store_error("ingest");
    }
}

/// A run catalog commit landed `mutations` planned together.
pub fn catalog_commit(mutations: usize) {
    histogram!(CATALOG_COMMIT_MUTATIONS).record(mutations as f64);
}

/// A run catalog commit lost its race; `retried` when it is planned again.
pub fn catalog_conflict(retried: bool) {
    counter!(CATALOG_CONFLICTS).increment(1);
    if retried {
        counter!(CATALOG_RETRIES).increment(1);
    }
}

/// A run status change this process committed (`stale-monitor`: a run the
/// monitor terminated).
pub fn status_change(source: &'static str, to: &'static str) {
    counter!(STATUS_CHANGES, "source" => source, "status" => to).increment(1);
}

/// A finished query of `interface` that ended with `outcome`, having sent
/// `(rows, bytes)`.
pub(super) fn query(
    interface: &'static str,
    outcome: &'static str,
    took: Duration,
    sent: (u64, u64),
) {
    counter!(QUERIES, "interface" => interface, "outcome" => outcome).increment(1);
    histogram!(QUERY_SECONDS, "interface" => interface, "outcome" => outcome)
        .record(took.as_secs_f64());
    counter!(QUERY_ROWS, "interface" => interface).increment(sent.0);
    counter!(QUERY_BYTES, "interface" => interface).increment(sent.1);
}

/// A compaction run of `table`: files and bytes `(in, out)`.
pub(super) fn compaction(
    table: &'static str,
    ok: bool,
    took: Duration,
    files: (u64, u64),
    bytes: (u64, u64),
) {
    let outcome = if ok { "ok" } else { "error" };
    counter!(COMPACTIONS, "table" => table, "outcome" => outcome).increment(1);
    counter!(COMPACTION_FILES_IN, "table" => table).increment(files.0);
    counter!(COMPACTION_FILES_OUT, "table" => table).increment(files.1);
    counter!(COMPACTION_BYTES_IN, "table" => table).increment(bytes.0);
    counter!(COMPACTION_BYTES_OUT, "table" => table).increment(bytes.1);
    histogram!(COMPACTION_SECONDS, "table" => table).record(took.as_secs_f64());
}

/// A request of `interface` failed because of the store (or a commit).
pub fn store_error(interface: &'static str) {
    counter!(STORE_ERRORS, "interface" => interface).increment(1);
}

/// An HTTP error response.
pub fn http_error(status: u16) {
    counter!(HTTP_ERRORS, "status" => status.to_string()).increment(1);
}

/// The state the gauges report, read from the engine when scraped.
#[derive(Debug, Default)]
pub struct Gauges {
    /// The latest version of each table that has one.
    pub table_versions: Vec<(TableKind, u64)>,
    /// Runs of the latest catalog by status name.
    pub runs_by_status: std::collections::BTreeMap<&'static str, u64>,
    /// Bytes reserved in the query memory pool now.
    pub memory_reserved: usize,
    /// The query memory pool's limit.
    pub memory_limit: usize,
}

/// The text exposition of every metric, with the state gauges set from `now`.
pub fn render(now: &Gauges) -> String {
    let handle = handle();
    for (kind, version) in &now.table_versions {
        gauge!(TABLE_VERSION, "table" => kind.dir()).set(*version as f64);
    }
    // A status that had runs and has none now must read 0, not its last count.
    static SEEN: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().expect("status set poisoned");
    seen.extend(now.runs_by_status.keys().copied());
    for status in seen.iter() {
        let n = now.runs_by_status.get(status).copied().unwrap_or(0);
        gauge!(RUNS, "status" => *status).set(n as f64);
    }
    drop(seen);
    gauge!(MEMORY_RESERVED).set(now.memory_reserved as f64);
    gauge!(MEMORY_LIMIT).set(now.memory_limit as f64);
    handle.render()
}
