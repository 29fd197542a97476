//! The SDK's JSON as the OpenAPI document describes it, where a handler does
//! not hold it in a type of its own: bodies read leniently (`serde_json::Value`
//! fields, NDJSON lines) and answers the read API writes with `json!`. The
//! Python suite validates the SDK's real requests and forkline's real answers
//! against the served document, so these cannot drift from the handlers.
// Never built: each type only describes JSON for the document.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use utoipa::openapi::schema::{
    AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::catalog::RunStatus;

/// A numeric run id: the SDK sends a number, other clients may send a string.
pub(super) fn run_id() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^\s*[0-9]+\s*$")),
        )
        .description(Some("A numeric run id, as a number or a string of digits"))
        .build()
        .into()
}

/// A run by numeric id or (a string) display id, as a fork's parent.
pub(super) fn run_reference() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .item(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(
            "A run's numeric id, or its id or display id as a string",
        ))
        .build()
        .into()
}

/// A config: a JSON object, or (as the SDK sends it) a string holding one.
pub(super) fn config() -> Schema {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Object))
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "A JSON object, or a string holding one (the SDK sends `json.dumps(config)`)",
        ))
        .build()
        .into()
}

/// An integer ≥ 0.
pub(super) fn non_negative() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .build()
        .into()
}

/// A metric value: a number, a non-finite token as Python's `json.dumps`
/// writes it (`NaN`, `Infinity`, `-Infinity`), or null (skipped).
pub(super) fn metric_value() -> Schema {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["NaN", "Infinity", "-Infinity"])),
        )
        .build()
        .into()
}

/// One line of `POST /ingest/metrics` (`application/x-ndjson`, one JSON object a line).
#[derive(ToSchema)]
pub(super) struct MetricLine {
    /// Epoch milliseconds; the server's clock when absent.
    time: Option<f64>,
    /// The step, an integer ≥ 0; 0 when absent.
    #[schema(minimum = 0)]
    step: Option<u64>,
    /// Metric name → value.
    #[schema(schema_with = metric_values)]
    data: HashMap<String, f64>,
}

fn metric_values() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(metric_value()))
        .build()
        .into()
}

/// One line of `POST /ingest/logs`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct LogLine {
    /// Epoch milliseconds; the server's clock when absent.
    time: Option<f64>,
    /// The console line.
    message: String,
    /// Its number in the run's console output.
    line_number: Option<i64>,
    /// `INFO` when absent; stored upper-case.
    #[schema(example = "INFO")]
    log_type: Option<String>,
}

/// One line of `POST /ingest/data`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct DataLine {
    /// Epoch milliseconds; the server's clock when absent.
    time: Option<f64>,
    /// The step, an integer ≥ 0; 0 when absent.
    #[schema(minimum = 0)]
    step: Option<u64>,
    /// The name it was logged under.
    log_name: String,
    /// The SDK's type name (`TABLE`, `HISTOGRAM`, …).
    #[schema(example = "HISTOGRAM")]
    data_type: String,
    /// The value: a string holding JSON (as the SDK sends it), or JSON itself (stored as text).
    data: Value,
}

/// A run as the read API answers it.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct RunInfo {
    id: u64,
    name: String,
    /// Sequential number within the project.
    number: u64,
    #[schema(example = "VS-6")]
    display_id: String,
    project_name: String,
    experiment: String,
    status: RunStatus,
    tags: Vec<String>,
    #[schema(value_type = Object)]
    config: Value,
    external_id: Option<String>,
    /// The run this one was forked from.
    parent_id: Option<u64>,
    /// The parent's last step this run inherits.
    fork_step: Option<u64>,
    /// RFC 3339, UTC.
    created_at: String,
    updated_at: String,
}

/// `GET /api/runs/details/…`: a [`RunInfo`] and the names of its metrics.
pub(super) struct RunDetails;

impl utoipa::PartialSchema for RunDetails {
    fn schema() -> RefOr<Schema> {
        let names = ObjectBuilder::new()
            .property(
                "logNames",
                ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)),
            )
            .required("logNames");
        AllOfBuilder::new()
            .item(Ref::from_schema_name(RunInfo::name()))
            .item(names)
            .into()
    }
}

impl ToSchema for RunDetails {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((RunInfo::name().into(), RunInfo::schema()));
        <RunInfo as ToSchema>::schemas(schemas);
    }
}

/// `GET /api/runs/projects`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct ProjectList {
    projects: Vec<ProjectInfo>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct ProjectInfo {
    /// The project's name (projects have no other id).
    id: String,
    name: String,
    run_count: u64,
    created_at: String,
    updated_at: String,
}

/// `GET /api/runs/list`.
#[derive(ToSchema)]
pub(super) struct RunList {
    runs: Vec<RunInfo>,
}

/// `GET /api/runs/metric-names`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct MetricNames {
    metric_names: Vec<String>,
}

/// `GET /api/runs/metrics`.
#[derive(ToSchema)]
pub(super) struct MetricPoints {
    metrics: Vec<MetricPoint>,
}

/// One point; non-finite values are written as the bare tokens `NaN`,
/// `Infinity`, `-Infinity`, as Python's `json` reads them.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct MetricPoint {
    log_name: String,
    step: i64,
    value: f64,
    time: String,
}

/// Statistics of one metric of one run (own points, NaN skipped).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct MetricStatistics {
    run_id: u64,
    log_name: String,
    count: i64,
    min: Option<f64>,
    max: Option<f64>,
    mean: Option<f64>,
    variance: Option<f64>,
    last: Option<f64>,
    last_step: i64,
    first_step: i64,
    /// In `compare` answers.
    display_id: Option<String>,
    /// In `compare` answers.
    name: Option<String>,
}

/// `GET /api/runs/statistics`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct RunStatistics {
    run_id: u64,
    display_id: String,
    statistics: Vec<MetricStatistics>,
}

/// `GET /api/runs/compare`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct Comparison {
    log_name: String,
    runs: Vec<MetricStatistics>,
    /// The best run by last value; null when no run has one.
    best_run: Option<MetricStatistics>,
}

/// `GET /api/runs/leaderboard`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct Leaderboard {
    leaderboard: Vec<LeaderboardRow>,
    log_name: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct LeaderboardRow {
    rank: u64,
    run_id: u64,
    display_id: Option<String>,
    name: Option<String>,
    status: Option<RunStatus>,
    value: f64,
    log_name: String,
    /// `MIN`, `MAX`, `MEAN`, `LAST` or `VARIANCE`.
    aggregation: String,
}

/// `GET /api/runs/logs`.
#[derive(ToSchema)]
pub(super) struct LogList {
    logs: Vec<LogEntry>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct LogEntry {
    message: String,
    log_type: String,
    time: String,
    line_number: Option<i64>,
}

/// `GET /api/runs/files`.
#[derive(ToSchema)]
pub(super) struct FileList {
    files: Vec<FileEntry>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct FileEntry {
    file_name: String,
    file_type: String,
    file_size: i64,
    log_name: String,
    step: Option<i64>,
    time: String,
    /// A signed URL, valid for an hour.
    download_url: String,
}

/// `POST /files`: per `logName`, one `{fileName: signed upload URL}` per file.
#[derive(ToSchema)]
pub(super) struct UploadUrls(BTreeMap<String, Vec<BTreeMap<String, String>>>);
