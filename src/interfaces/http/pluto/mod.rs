//! The HTTP API that the `pluto-ml` Python SDK speaks (see docs/pluto-wire-protocol.md),
//! so the unchanged SDK logs runs to forkline.

mod filters;
mod ingest;
mod metric_line;
mod ndjson;
mod reads;
mod runs;
mod shapes;
mod uploads;

use std::sync::Arc;

use arrow::array::RecordBatch;
use axum::http::{HeaderMap, Method};
use axum::routing::{get, post, put};
use datafusion::prelude::{DataFrame, SessionContext};

pub(super) use shapes::run_reference;
pub use uploads::Signer;

use super::{AppState, Route, RouteAccess};
use crate::catalog::{CatalogSnapshot, Run, RunId};
use crate::error::{Error, Result};
use crate::observe::RequestContext;
use crate::scope::Scope;

/// Routes of the SDK. `Write` routes (run lifecycle, ingest, upload URLs)
/// are refused to read-only keys and servers; `trigger` and `logName/add`
/// are POSTs that change nothing.
pub(super) fn routes() -> Vec<Route> {
    use RouteAccess::{Read, Signed, Write};
    let r = |method, path, access| super::spec(method, path, access);
    vec![
        (
            r(Method::POST, "/api/runs/create", Write),
            post(runs::create),
        ),
        (
            r(Method::POST, "/api/runs/resume", Write),
            post(runs::resume),
        ),
        (
            r(Method::POST, "/api/runs/status/update", Write),
            post(runs::status),
        ),
        (
            r(Method::POST, "/api/runs/tags/update", Write),
            post(runs::tags),
        ),
        (
            r(Method::POST, "/api/runs/config/update", Write),
            post(runs::config),
        ),
        (
            r(Method::POST, "/ingest/metrics", Write),
            post(ingest::metrics),
        ),
        (r(Method::POST, "/ingest/logs", Write), post(ingest::logs)),
        (r(Method::POST, "/ingest/data", Write), post(ingest::data)),
        (r(Method::POST, "/files", Write), post(uploads::presign)),
        (
            r(Method::PUT, "/files/upload/{run}/{file}", Signed),
            put(uploads::upload),
        ),
        (
            r(Method::GET, "/files/download/{run}/{file}", Signed),
            get(uploads::download),
        ),
        (r(Method::POST, "/api/slug", Read), post(runs::slug)),
        (
            r(Method::POST, "/api/runs/trigger", Read),
            post(runs::trigger),
        ),
        (
            r(Method::POST, "/api/runs/logName/add", Read),
            post(runs::log_names),
        ),
        (
            r(Method::GET, "/api/runs/projects", Read),
            get(reads::projects),
        ),
        (r(Method::GET, "/api/runs/list", Read), get(reads::list)),
        (
            r(
                Method::GET,
                "/api/runs/details/by-display-id/{display_id}",
                Read,
            ),
            get(reads::details_by_display),
        ),
        (
            r(Method::GET, "/api/runs/details/{id}", Read),
            get(reads::details),
        ),
        (
            r(Method::GET, "/api/runs/metric-names", Read),
            get(reads::names),
        ),
        (
            r(Method::GET, "/api/runs/metrics", Read),
            get(reads::metrics),
        ),
        (
            r(Method::GET, "/api/runs/statistics", Read),
            get(reads::statistics),
        ),
        (
            r(Method::GET, "/api/runs/compare", Read),
            get(reads::compare),
        ),
        (
            r(Method::GET, "/api/runs/leaderboard", Read),
            get(reads::leaderboard),
        ),
        (r(Method::GET, "/api/runs/logs", Read), get(reads::logs)),
        (r(Method::GET, "/api/runs/files", Read), get(reads::files)),
    ]
}

/// The description of these routes in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        runs::slug,
        runs::create,
        runs::resume,
        runs::trigger,
        runs::log_names,
        runs::status,
        runs::tags,
        runs::config,
        ingest::metrics,
        ingest::logs,
        ingest::data,
        uploads::presign,
        uploads::upload,
        uploads::download,
        reads::projects,
        reads::list,
        reads::details,
        reads::details_by_display,
        reads::names,
        reads::metrics,
        reads::stats::statistics,
        reads::stats::compare,
        reads::stats::leaderboard,
        reads::records::logs,
        reads::records::files,
    ),
    components(schemas(shapes::MetricLine, shapes::LogLine, shapes::DataLine))
)]
pub(super) struct ApiDoc;

/// The catalog as the request's key sees it: runs of other projects are unknown.
async fn catalog(state: &AppState, scope: &Scope) -> Result<Arc<CatalogSnapshot>> {
    state.engine.scoped_catalog(&scope.projects).await
}

/// Records activity of `run` for the stale-run monitor (see
/// [`crate::liveness`]): a run the monitor terminated is RUNNING again.
/// Requests through read-only keys are no activity: they may change nothing.
async fn active(state: &AppState, scope: &Scope, run: &Arc<Run>) -> Result<Arc<Run>> {
    if scope.read_only {
        return Ok(run.clone());
    }
    state.run_activity.seen(run, scope.key_id.as_deref()).await
}

/// Runs an internal query in the request's scope, as one admitted query
/// (slot, queue and deadline of the query gate), and collects it. `plan`
/// builds the query from typed fields on the caller's scoped session (no
/// request text becomes SQL); `what` describes it in the query activity.
async fn collect<F, Fut>(
    state: &AppState,
    request: &RequestContext,
    what: String,
    plan: F,
) -> Result<Vec<RecordBatch>>
where
    F: FnOnce(SessionContext) -> Fut,
    Fut: Future<Output = Result<DataFrame>>,
{
    let engine = &state.engine;
    engine
        .query(request, what, |ctx| async move {
            engine.gate().collect(plan(ctx).await?).await
        })
        .await
}

/// The header naming the run of an ingest or upload-URL request.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Never built: the handlers read the header through `header_run`.
struct RunHeader {
    /// The run's numeric id.
    #[param(rename = "X-Run-Id", example = "42")]
    run_id: String,
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
