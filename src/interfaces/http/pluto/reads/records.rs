//! A run's uploaded files (`/api/runs/files`) and console lines
//! (`/api/runs/logs`) for the read API.

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use axum::Json;
use axum::extract::{Query, State};
use datafusion::prelude::{col, lit};

use super::{
    Params, Reply, Scoped, ascending_by, collect, iso, micros, selectors, shapes, strings,
};
use crate::interfaces::http::AppState;

/// A run's uploaded files with signed download URLs.
#[utoipa::path(
    get,
    path = "/api/runs/files",
    operation_id = "run_files",
    tag = "query",
    params(
        selectors::RunSelector,
        ("logName" = Option<String>, Query, description = "The name a file was logged under, or its file name"),
    ),
    responses((status = 200, description = "The files", body = shapes::FileList))
)]
pub(in super::super) async fn files(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply<shapes::FileList> {
    let run = p.run(&state, &scope).await?;
    let (id, name) = (run.id, p.log_name.clone().filter(|n| !n.is_empty()));
    let what = format!("files of run {id} named {name:?}");
    let batches = collect(&state, &scope, what, |ctx| async move {
        let mut df = ctx
            .table("files")
            .await?
            .filter(col("run_id").eq(lit(id as i64)))?;
        if let Some(name) = name {
            df = df.filter(
                col("log_name")
                    .eq(lit(name.clone()))
                    .or(col("file_name").eq(lit(name))),
            )?;
        }
        Ok(df
            .select_columns(&[
                "file_name",
                "file_type",
                "file_size",
                "log_name",
                "step",
                "time",
            ])?
            .sort(vec![ascending_by("time"), ascending_by("file_name")])?)
    })
    .await?;
    let mut files = Vec::new();
    for b in &batches {
        let (name, kind, log) = (
            strings(b.column(0))?,
            strings(b.column(1))?,
            strings(b.column(3))?,
        );
        let size = b.column(2).as_primitive::<Int64Type>();
        let step = b.column(4).as_primitive::<Int64Type>();
        let time = micros(b.column(5))?;
        for i in 0..b.num_rows() {
            let t = chrono::DateTime::from_timestamp_micros(time.value(i)).unwrap_or_default();
            files.push(shapes::FileEntry {
                file_name: name.value(i).to_string(),
                file_type: kind.value(i).to_string(),
                file_size: size.value(i),
                log_name: log.value(i).to_string(),
                step: (!step.is_null(i)).then(|| step.value(i)),
                time: iso(&t),
                download_url: super::super::uploads::download_url(&state, run.id, name.value(i)),
            });
        }
    }
    Ok(Json(shapes::FileList { files }))
}

/// A run's console lines (never inherited from a parent).
#[utoipa::path(
    get,
    path = "/api/runs/logs",
    operation_id = "run_logs",
    tag = "query",
    params(
        selectors::RunSelector,
        ("logType" = Option<String>, Query, description = "Only lines of this type (`INFO`, `ERROR`, …)"),
        ("limit" = Option<u64>, Query, description = "Most lines answered (at most 10,000)"),
        ("offset" = Option<u64>, Query, description = "Items skipped first"),
    ),
    responses((status = 200, description = "The lines, in time order", body = shapes::LogList))
)]
pub(in super::super) async fn logs(
    State(state): State<AppState>,
    axum::Extension(scope): Scoped,
    Query(p): Query<Params>,
) -> Reply<shapes::LogList> {
    let run = p.run(&state, &scope).await?;
    let id = run.id;
    let kind = p
        .log_type
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_uppercase);
    let limit = p.limit.unwrap_or(10_000).min(10_000);
    let offset = p.offset.unwrap_or(0);
    let what = format!("logs of run {id} of type {kind:?}, {limit} from {offset}");
    let batches = collect(&state, &scope, what, |ctx| async move {
        let mut df = ctx
            .table("logs")
            .await?
            .filter(col("run_id").eq(lit(id as i64)))?;
        if let Some(kind) = kind {
            df = df.filter(col("log_type").eq(lit(kind)))?;
        }
        Ok(df
            .select_columns(&["message", "log_type", "time", "line_number"])?
            .sort(vec![ascending_by("time"), ascending_by("line_number")])?
            .limit(offset, Some(limit))?)
    })
    .await?;
    let mut logs = Vec::new();
    for b in &batches {
        let message = strings(b.column(0))?;
        let kind = strings(b.column(1))?;
        let time = micros(b.column(2))?;
        let line = b.column(3).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let t = chrono::DateTime::from_timestamp_micros(time.value(i)).unwrap_or_default();
            logs.push(shapes::LogEntry {
                message: message.value(i).to_string(),
                log_type: kind.value(i).to_string(),
                time: iso(&t),
                line_number: (!line.is_null(i)).then(|| line.value(i)),
            });
        }
    }
    Ok(Json(shapes::LogList { logs }))
}
