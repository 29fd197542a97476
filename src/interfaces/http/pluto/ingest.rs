//! Ingest requests of the SDK: NDJSON metrics, console logs and structured data.
//!
//! A request is validated whole before anything is written: one bad line
//! refuses the request with its line number, and nothing of it is committed.

use arrow::array::RecordBatch;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::header_run;
use crate::catalog::RunId;
use crate::error::{Error, Result};
use crate::ingest::{MetricPoint, PointBatch};
use crate::interfaces::http::{ApiError, AppState, lenient_json};
use crate::scope::Scope;
use crate::store::TableKind;
use crate::store::records::{DataRecord, LogRecord};

type Reply = std::result::Result<Json<Value>, ApiError>;

/// Non-empty NDJSON lines with their 1-based line numbers, each parsed as an object.
fn ndjson(body: &[u8]) -> Result<Vec<(usize, serde_json::Map<String, Value>)>> {
    let text =
        std::str::from_utf8(body).map_err(|_| Error::invalid("request body is not UTF-8"))?;
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match lenient_json::parse(line) {
            Ok(Value::Object(obj)) => out.push((i + 1, obj)),
            Ok(_) => {
                return Err(Error::invalid(format!(
                    "line {}: expected a JSON object",
                    i + 1
                )));
            }
            Err(e) => return Err(Error::invalid(format!("line {}: invalid JSON: {e}", i + 1))),
        }
    }
    Ok(out)
}

/// `time` in epoch milliseconds (int or float), as microseconds.
fn time_us(line: usize, obj: &serde_json::Map<String, Value>) -> Result<Option<i64>> {
    match obj.get("time") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|ms| ms.is_finite())
            .map(|ms| Some((ms * 1000.0).round() as i64))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "line {line}: time must be epoch milliseconds, got {v}"
                ))
            }),
    }
}

fn step(line: usize, obj: &serde_json::Map<String, Value>) -> Result<u64> {
    match obj.get("step") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.2e18)
                    .map(|f| f as u64)
            })
            .ok_or_else(|| {
                Error::invalid(format!("line {line}: step must be an integer ≥ 0, got {v}"))
            }),
    }
}

/// The run of `X-Run-Id`, among the runs the request's key can see.
async fn run_of(state: &AppState, scope: &Scope, headers: &HeaderMap) -> Result<RunId> {
    header_run(headers, &*super::catalog(state, scope).await?)
}

/// Commits the rows of a logs or data request as one append; empty requests write nothing.
async fn store_rows(
    state: &AppState,
    kind: TableKind,
    rows: usize,
    batch: Result<RecordBatch>,
) -> Reply {
    if rows > 0 {
        state.engine.store().append(kind, vec![batch?]).await?;
    }
    Ok(Json(json!({ "stored": rows })))
}

/// `POST /ingest/metrics`: `{"time": ms, "step": n, "data": {name: number}}` per line.
pub(super) async fn metrics(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<Scope>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let run = run_of(&state, &scope, &headers).await?;
    let mut points = Vec::new();
    for (line, obj) in ndjson(&body)? {
        let time_us = time_us(line, &obj)?;
        let step = step(line, &obj)?;
        let data = match obj.get("data") {
            Some(Value::Object(data)) => data,
            _ => {
                return Err(Error::invalid(format!(
                    "line {line}: `data` must be an object of metric values"
                ))
                .into());
            }
        };
        for (name, value) in data {
            let value = lenient_json::number(value).ok_or_else(|| {
                Error::invalid(format!(
                    "line {line}: value of `{name}` is not a number: {value}"
                ))
            })?;
            points.push(MetricPoint {
                metric: name.clone(),
                step,
                value,
                time_us,
            });
        }
    }
    let mut batch = PointBatch::new();
    batch
        .extend(run, points)
        .map_err(|e| Error::invalid(format!("bad metric point: {e}")))?;
    let stored = state.committer.submit(batch).await?;
    Ok(Json(json!({ "stored": stored })))
}

/// `POST /ingest/logs`: console lines `{"time", "message", "lineNumber", "logType"}`.
pub(super) async fn logs(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<Scope>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let run = run_of(&state, &scope, &headers).await?;
    let mut records = Vec::new();
    for (line, obj) in ndjson(&body)? {
        let message = match obj.get("message") {
            Some(Value::String(m)) => m.clone(),
            _ => {
                return Err(
                    Error::invalid(format!("line {line}: `message` must be a string")).into(),
                );
            }
        };
        records.push(LogRecord {
            run_id: run,
            time_us: time_us(line, &obj)?,
            line_number: obj.get("lineNumber").and_then(Value::as_i64),
            log_type: obj
                .get("logType")
                .and_then(Value::as_str)
                .unwrap_or("INFO")
                .to_ascii_uppercase(),
            message,
        });
    }
    store_rows(
        &state,
        TableKind::Logs,
        records.len(),
        LogRecord::batch(&records),
    )
    .await
}

/// `POST /ingest/data`: structured values `{"time", "data", "dataType", "logName", "step"}`.
pub(super) async fn data(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<Scope>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let run = run_of(&state, &scope, &headers).await?;
    let mut records = Vec::new();
    for (line, obj) in ndjson(&body)? {
        let field = |name: &str| -> Result<String> {
            match obj.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) if name == "data" => Ok(other.to_string()),
                _ => Err(Error::invalid(format!(
                    "line {line}: `{name}` must be a string"
                ))),
            }
        };
        records.push(DataRecord {
            run_id: run,
            log_name: field("logName")?,
            step: step(line, &obj)?,
            time_us: time_us(line, &obj)?,
            data_type: field("dataType")?,
            data: field("data")?,
        });
    }
    store_rows(
        &state,
        TableKind::Data,
        records.len(),
        DataRecord::batch(&records),
    )
    .await
}
