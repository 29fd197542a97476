//! The HTTP API that the `pluto-ml` Python SDK speaks (see docs/pluto-wire-protocol.md),
//! so the unchanged SDK logs runs to forkline.

mod files;
mod filters;
mod ingest;
mod ndjson;
mod query;
mod runs;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post, put};

pub use files::Signer;

use super::AppState;
use crate::catalog::{CatalogSnapshot, Run, RunId};
use crate::error::{Error, Result};

/// Routes of the SDK that change the store: run lifecycle, ingest, file uploads.
/// A read-only server refuses all of them (see `super::router`).
pub fn write_routes() -> Router<AppState> {
    Router::new()
        .route("/api/runs/create", post(runs::create))
        .route("/api/runs/resume", post(runs::resume))
        .route("/api/runs/status/update", post(runs::status))
        .route("/api/runs/tags/update", post(runs::tags))
        .route("/api/runs/config/update", post(runs::config))
        .route("/ingest/metrics", post(ingest::metrics))
        .route("/ingest/logs", post(ingest::logs))
        .route("/ingest/data", post(ingest::data))
        .route("/files", post(files::presign))
        .route("/files/upload/{run}/{file}", put(files::upload))
}

/// Routes of the SDK that only read (some are POSTs that check a run and change nothing).
pub fn read_routes() -> Router<AppState> {
    Router::new()
        .route("/api/slug", post(runs::slug))
        .route("/api/runs/trigger", post(runs::trigger))
        .route("/api/runs/logName/add", post(runs::log_names))
        .route("/api/runs/projects", get(query::projects))
        .route("/api/runs/list", get(query::list))
        .route(
            "/api/runs/details/by-display-id/{display_id}",
            get(query::details_by_display),
        )
        .route("/api/runs/details/{id}", get(query::details))
        .route("/api/runs/metric-names", get(query::names))
        .route("/api/runs/metrics", get(query::metrics))
        .route("/api/runs/statistics", get(query::statistics))
        .route("/api/runs/compare", get(query::compare))
        .route("/api/runs/leaderboard", get(query::leaderboard))
        .route("/api/runs/logs", get(query::logs))
        .route("/api/runs/files", get(query::files))
        .route("/files/download/{run}/{file}", get(files::download))
}

/// Paths that carry their own signature instead of an API key (the SDK sends none there).
pub fn is_signed_path(path: &str) -> bool {
    path.starts_with("/files/upload/") || path.starts_with("/files/download/")
}

/// The run an ingest request is for: the SDK names it only in `X-Run-Id`,
/// and `X-Project-Name` (when present) must be the run's project.
fn header_run(headers: &HeaderMap, snapshot: &CatalogSnapshot) -> Result<RunId> {
    let id = headers
        .get("x-run-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "None")
        .ok_or_else(|| Error::invalid("missing X-Run-Id header"))?;
    let id: RunId = id
        .parse()
        .map_err(|_| Error::invalid(format!("X-Run-Id `{id}` is not a run id")))?;
    let run = snapshot.require(id)?;
    check_project(headers, run)?;
    Ok(id)
}

fn check_project(headers: &HeaderMap, run: &Run) -> Result<()> {
    if let Some(project) = headers.get("x-project-name").and_then(|v| v.to_str().ok())
        && !project.is_empty()
        && project != run.project
    {
        return Err(Error::invalid(format!(
            "run {} belongs to project `{}`, not `{project}`",
            run.display_id, run.project
        )));
    }
    Ok(())
}

/// Decodes a JSON body written by Python's `json.dumps` (NaN tokens allowed).
fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| Error::invalid("request body is not UTF-8"))?;
    let value = super::lenient_json::parse(text)
        .map_err(|e| Error::invalid(format!("request body is not valid JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| Error::invalid(format!("bad request body: {e}")))
}
