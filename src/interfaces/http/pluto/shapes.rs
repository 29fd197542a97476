//! The SDK's JSON as the OpenAPI document describes it, where a handler does
//! not hold it in a type of its own: the answers of the read API and of
//! `POST /files`, which the handlers build and return as these types (serde's
//! names are the document's), the schemas of fields read leniently
//! (`serde_json::Value`), and the NDJSON lines of ingest. The Python suite
//! validates the SDK's real requests and forkline's real answers against the
//! served document.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

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
pub(in crate::interfaces::http) fn run_reference() -> Schema {
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
// Only for the document: `metric_line` reads the line without a JSON tree.
#[allow(dead_code)]
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
// Only for the document: `ingest::log_record` reads the line's fields leniently.
#[allow(dead_code)]
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
// Only for the document: `ingest::data_record` reads the line's fields leniently.
#[allow(dead_code)]
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
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunInfo {
    pub(super) id: u64,
    pub(super) name: String,
    /// Sequential number within the project.
    pub(super) number: u64,
    #[schema(example = "VS-6")]
    pub(super) display_id: String,
    pub(super) project_name: String,
    pub(super) experiment: String,
    pub(super) status: RunStatus,
    pub(super) tags: Vec<String>,
    #[schema(value_type = Object)]
    pub(super) config: Map<String, Value>,
    pub(super) external_id: Option<String>,
    /// The run this one was forked from.
    pub(super) parent_id: Option<u64>,
    /// The parent's last step this run inherits.
    pub(super) fork_step: Option<u64>,
    /// RFC 3339, UTC.
    pub(super) created_at: String,
    pub(super) updated_at: String,
}

/// `GET /api/runs/details/…`: a `RunInfo` and the names of its metrics.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunDetails {
    #[serde(flatten)]
    pub(super) run: RunInfo,
    pub(super) log_names: Vec<String>,
}

/// `GET /api/runs/projects`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProjectList {
    pub(super) projects: Vec<ProjectInfo>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProjectInfo {
    /// The project's name (projects have no other id).
    pub(super) id: String,
    pub(super) name: String,
    pub(super) run_count: u64,
    pub(super) created_at: String,
    pub(super) updated_at: String,
}

/// `GET /api/runs/list`.
#[derive(Serialize, ToSchema)]
pub(super) struct RunList {
    pub(super) runs: Vec<RunInfo>,
}

/// `GET /api/runs/metric-names`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct MetricNames {
    pub(super) metric_names: Vec<String>,
}

/// `GET /api/runs/metrics`.
// Written by `to_python_json`, not serde: serde_json has no words for non-finite numbers.
#[derive(ToSchema)]
pub(super) struct MetricPoints {
    pub(super) metrics: Vec<MetricPoint>,
}

/// One point; non-finite values are written as the bare tokens `NaN`,
/// `Infinity`, `-Infinity`, as Python's `json` reads them.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub(super) struct MetricPoint {
    pub(super) log_name: String,
    pub(super) step: i64,
    pub(super) value: f64,
    /// RFC 3339, UTC.
    pub(super) time: String,
}

impl MetricPoints {
    /// The answer as Python's `json.dumps` writes it: `", "` and `": "` between
    /// items, non-finite values as `NaN` / `Infinity` / `-Infinity` tokens.
    pub(super) fn to_python_json(&self) -> String {
        let mut body = String::from("{\"metrics\": [");
        for (i, point) in self.metrics.iter().enumerate() {
            if i > 0 {
                body.push_str(", ");
            }
            let _ = write!(
                body,
                "{{\"logName\": {}, \"step\": {}, \"value\": {}, \"time\": {}}}",
                Value::String(point.log_name.clone()),
                point.step,
                py_float(point.value),
                Value::String(point.time.clone()),
            );
        }
        body.push_str("]}");
        body
    }
}

/// A JSON number as Python writes it: non-finite values as `NaN` / `Infinity` tokens.
fn py_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        serde_json::Number::from_f64(v).map_or_else(|| "null".into(), |n| n.to_string())
    }
}

impl IntoResponse for MetricPoints {
    fn into_response(self) -> Response {
        (
            [(header::CONTENT_TYPE, "application/json")],
            self.to_python_json(),
        )
            .into_response()
    }
}

/// Statistics of one metric of one run (own points, NaN skipped). A
/// statistic is null where there is none, or where it is not finite.
#[derive(Serialize, ToSchema, Clone)]
#[serde(rename_all = "camelCase")]
pub(super) struct MetricStatistics {
    pub(super) run_id: u64,
    pub(super) log_name: String,
    pub(super) count: i64,
    pub(super) min: Option<f64>,
    pub(super) max: Option<f64>,
    pub(super) mean: Option<f64>,
    pub(super) variance: Option<f64>,
    pub(super) last: Option<f64>,
    pub(super) last_step: i64,
    pub(super) first_step: i64,
    /// In `compare` answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) display_id: Option<String>,
    /// In `compare` answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<String>,
}

/// `GET /api/runs/statistics`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunStatistics {
    pub(super) run_id: u64,
    pub(super) display_id: String,
    pub(super) statistics: Vec<MetricStatistics>,
}

/// `GET /api/runs/compare`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Comparison {
    pub(super) log_name: String,
    pub(super) runs: Vec<MetricStatistics>,
    /// The best run by last value; null when no run has one.
    pub(super) best_run: Option<MetricStatistics>,
}

/// `GET /api/runs/leaderboard`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Leaderboard {
    pub(super) leaderboard: Vec<LeaderboardRow>,
    pub(super) log_name: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct LeaderboardRow {
    pub(super) rank: u64,
    pub(super) run_id: u64,
    pub(super) display_id: Option<String>,
    pub(super) name: Option<String>,
    pub(super) status: Option<RunStatus>,
    pub(super) value: f64,
    pub(super) log_name: String,
    /// `MIN`, `MAX`, `MEAN`, `LAST` or `VARIANCE`.
    pub(super) aggregation: String,
}

/// `GET /api/runs/logs`.
#[derive(Serialize, ToSchema)]
pub(super) struct LogList {
    pub(super) logs: Vec<LogEntry>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct LogEntry {
    pub(super) message: String,
    pub(super) log_type: String,
    /// RFC 3339, UTC.
    pub(super) time: String,
    pub(super) line_number: Option<i64>,
}

/// `GET /api/runs/files`.
#[derive(Serialize, ToSchema)]
pub(super) struct FileList {
    pub(super) files: Vec<FileEntry>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct FileEntry {
    pub(super) file_name: String,
    pub(super) file_type: String,
    pub(super) file_size: i64,
    pub(super) log_name: String,
    pub(super) step: Option<i64>,
    /// RFC 3339, UTC.
    pub(super) time: String,
    /// A signed URL, valid for an hour.
    pub(super) download_url: String,
}

/// `POST /files`: per `logName`, one `{fileName: signed upload URL}` per file.
#[derive(Serialize, ToSchema)]
pub(super) struct UploadUrls(pub(super) BTreeMap<String, Vec<BTreeMap<String, String>>>);

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;

    use super::*;

    /// The property names of an object schema.
    fn properties<T: PartialSchema>() -> Vec<String> {
        match T::schema() {
            RefOr::T(Schema::Object(object)) => object.properties.keys().cloned().collect(),
            _ => panic!("not an object schema"),
        }
    }

    #[test]
    fn metric_points_are_written_as_the_document_names_them() {
        let points = MetricPoints {
            metrics: [0.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e300]
                .into_iter()
                .enumerate()
                .map(|(i, value)| MetricPoint {
                    log_name: format!("train/\"loss\" {i}"),
                    step: i as i64 - 1,
                    value,
                    time: "2024-01-01T00:00:00.000Z".into(),
                })
                .collect(),
        };
        let text = points.to_python_json();
        assert!(
            text.starts_with(
                "{\"metrics\": [{\"logName\": \"train/\\\"loss\\\" 0\", \"step\": -1, \
                 \"value\": 0.5, \"time\": \"2024-01-01T00:00:00.000Z\"}, {\"logName\": "
            ),
            "{text}"
        );
        for token in [
            ": NaN,",
            ": Infinity,",
            ": -Infinity,",
            ": -0.0,",
            ": 1e+300,",
        ] {
            assert!(text.contains(token), "{token} in {text}");
        }
        let finite = text
            .replace("NaN", "0")
            .replace("-Infinity", "0")
            .replace("Infinity", "0");
        let body: Value = serde_json::from_str(&finite).unwrap();
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        let mut top = properties::<MetricPoints>();
        top.sort();
        assert_eq!(keys(&body), top);
        let mut point = properties::<MetricPoint>();
        point.sort();
        for p in body["metrics"].as_array().unwrap() {
            assert_eq!(keys(p), point);
        }
        assert_eq!(body["metrics"].as_array().unwrap().len(), 6);
        assert_eq!(
            MetricPoints { metrics: vec![] }.to_python_json(),
            "{\"metrics\": []}"
        );
    }
}
