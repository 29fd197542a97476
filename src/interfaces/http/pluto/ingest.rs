//! Ingest requests of the SDK: NDJSON metrics, console logs and structured data.
//!
//! A request is validated whole before anything is written: one bad line
//! refuses the request with its line number, and nothing of it is committed.
//! Null metric values are skipped, as Pluto's ingest does.

use arrow::array::RecordBatch;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use super::metric_line::{self, Reading};
use super::ndjson::{Object, for_each_line, lines, shown, step, time_us};
use std::sync::Arc;

use super::{RunHeader, header_run};
use crate::catalog::{Run, RunId};
use crate::error::{Error, Result};
use crate::ingest::PointBatch;
use crate::ingest::limits::{MAX_DATA_LINE_BYTES, MAX_LINE_BYTES};
use crate::interfaces::http::{ApiError, AppState};
use crate::observe::RequestContext;
use crate::observe::metrics;
use crate::scope::Scope;
use crate::store::TableKind;
use crate::store::records::{DataRecord, LogRecord};

type Reply = std::result::Result<Json<Stored>, ApiError>;

/// How many rows (metric values, lines) a request stored.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Stored {
    stored: usize,
}

/// The run of `X-Run-Id`, among the runs the request's key can see.
async fn run_of(state: &AppState, scope: &Scope, headers: &HeaderMap) -> Result<Arc<Run>> {
    let snapshot = super::catalog(state, scope).await?;
    let id = header_run(headers, &snapshot)?;
    Ok(snapshot.require(id)?.clone())
}

/// A logs or data request: every line parsed into a record of the
/// `X-Run-Id` run by `parse`, the whole request validated, then committed as
/// one append (an empty request writes nothing). A stored request is
/// activity of its run.
async fn side_records<R>(
    state: &AppState,
    scope: &Scope,
    headers: &HeaderMap,
    body: &Bytes,
    kind: TableKind,
    parse: impl Fn(usize, RunId, Object) -> Result<R>,
    encode: fn(&[R]) -> Result<RecordBatch>,
) -> Reply {
    let target = run_of(state, scope, headers).await?;
    let (max_line, limit_name) = match kind {
        TableKind::Data => (MAX_DATA_LINE_BYTES, "MAX_DATA_LINE_BYTES"),
        _ => (MAX_LINE_BYTES, "MAX_LINE_BYTES"),
    };
    let mut records = Vec::new();
    for_each_line(body, max_line, limit_name, |line, obj| {
        records.push(parse(line, target.id, obj)?);
        Ok(())
    })?;
    if !records.is_empty() {
        state
            .engine
            .append_records(kind, vec![encode(&records)?])
            .await?;
    }
    metrics::ingest(kind, records.len(), body.len());
    super::active(state, scope, &target).await?;
    Ok(Json(Stored {
        stored: records.len(),
    }))
}

/// Metric values, one `MetricLine` a line: `{"time": ms, "step": n, "data": {name: number}}`.
#[utoipa::path(
    post,
    path = "/ingest/metrics",
    operation_id = "ingest_metrics",
    tag = "ingest",
    params(RunHeader),
    request_body(content = String, content_type = "application/x-ndjson",
        description = "One JSON object a line, each a `#/components/schemas/MetricLine`; validated whole before anything is stored",
        example = json!("{\"time\": 1700000000000, \"step\": 1, \"data\": {\"train/loss\": 0.5}}\n")),
    responses((status = 200, description = "The values stored", body = Stored))
)]
pub(super) async fn metrics(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<RequestContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let target = run_of(&state, &scope, &headers).await?;
    let run = target.id;
    let mut batch = PointBatch::for_request();
    let mut reserved = false;
    lines(&body, MAX_LINE_BYTES, "MAX_LINE_BYTES", |line, text| {
        metric_line::parse(line, text, |parsed| {
            let time_us = time_us(line, parsed.time.as_ref())?;
            let step = step(line, parsed.step.as_ref())?;
            let Some(values) = parsed.data else {
                return Err(Error::invalid(format!(
                    "line {line}: `data` must be an object of metric values"
                )));
            };
            if !reserved {
                reserved = true;
                // Lines of one request log the same metrics as a rule.
                let lines = memchr::memchr_iter(b'\n', &body).count() + 1;
                batch.reserve(lines * values.len());
            }
            let mut count = 0;
            for (name, value) in &values {
                match value {
                    // `run.log({"a": None})`: Pluto stores the line's other values.
                    Reading::Null => {}
                    Reading::Number(_) => count += 1,
                    Reading::Other(v) => {
                        return Err(Error::invalid(format!(
                            "line {line}: value of `{name}` is not a number: {}",
                            shown(v)
                        )));
                    }
                }
            }
            batch
                .ensure_room(count)
                .map_err(|e| Error::invalid(format!("line {line}: {e}")))?;
            for (name, value) in &values {
                if let Reading::Number(value) = value {
                    batch
                        .push(run, name, step, *value, time_us)
                        .map_err(|e| Error::invalid(format!("line {line}: {e}")))?;
                }
            }
            Ok(())
        })
    })?;
    let stored = state.engine.ingest(batch).await?;
    metrics::ingest(TableKind::Metrics, stored, body.len());
    super::active(&state, &scope, &target).await?;
    Ok(Json(Stored { stored }))
}

/// Console lines, one `LogLine` a line: `{"time", "message", "lineNumber", "logType"}`.
#[utoipa::path(
    post,
    path = "/ingest/logs",
    operation_id = "ingest_logs",
    tag = "ingest",
    params(RunHeader),
    request_body(content = String, content_type = "application/x-ndjson",
        description = "One JSON object a line, each a `#/components/schemas/LogLine`"),
    responses((status = 200, description = "The lines stored", body = Stored))
)]
pub(super) async fn logs(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<RequestContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    side_records(
        &state,
        &scope,
        &headers,
        &body,
        TableKind::Logs,
        log_record,
        LogRecord::batch,
    )
    .await
}

/// One console line of `run`.
fn log_record(line: usize, run: RunId, mut obj: Object) -> Result<LogRecord> {
    let Some(Value::String(message)) = obj.remove("message") else {
        return Err(Error::invalid(format!(
            "line {line}: `message` must be a string"
        )));
    };
    Ok(LogRecord {
        run_id: run,
        time_us: time_us(line, obj.get("time"))?,
        line_number: obj.get("lineNumber").and_then(Value::as_i64),
        log_type: obj
            .get("logType")
            .and_then(Value::as_str)
            .unwrap_or("INFO")
            .to_ascii_uppercase(),
        message,
    })
}

/// Structured values, one `DataLine` a line: `{"time", "data", "dataType", "logName", "step"}`.
#[utoipa::path(
    post,
    path = "/ingest/data",
    operation_id = "ingest_data",
    tag = "ingest",
    params(RunHeader),
    request_body(content = String, content_type = "application/x-ndjson",
        description = "One JSON object a line, each a `#/components/schemas/DataLine`"),
    responses((status = 200, description = "The values stored", body = Stored))
)]
pub(super) async fn data(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<RequestContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    side_records(
        &state,
        &scope,
        &headers,
        &body,
        TableKind::Data,
        data_record,
        DataRecord::batch,
    )
    .await
}

/// One structured value of `run`.
fn data_record(line: usize, run: RunId, obj: Object) -> Result<DataRecord> {
    let field = |name: &str| -> Result<String> {
        match obj.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) if name == "data" => Ok(other.to_string()),
            _ => Err(Error::invalid(format!(
                "line {line}: `{name}` must be a string"
            ))),
        }
    };
    Ok(DataRecord {
        run_id: run,
        log_name: field("logName")?,
        step: step(line, obj.get("step"))?,
        time_us: time_us(line, obj.get("time"))?,
        data_type: field("dataType")?,
        data: field("data")?,
    })
}
