//! The web console: `GET /` and the pages under it.
//!
//! The page routes (`/`, `/p/…`, `/sql`) and the assets answer one static
//! shell, public because it holds no data; its script asks a keyed route
//! under `/api/console/…` (the page's own path) for the page's HTML, which
//! the server renders from the key's scoped catalog and queries admitted by
//! the query gate. The SQL page runs `POST /api/sql` itself.

mod chart;
mod compare;
mod family;
mod openapi;
mod pages;
mod panel;
mod params;

pub(crate) use openapi::operations as openapi_operations;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use datafusion::prelude::{col, lit};

use super::{ApiError, AppState, Route, RouteAccess, spec};
use crate::catalog::{CatalogSnapshot, Run};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::observe::RequestContext;
use crate::query::admission::gate::Delivered;
use crate::scope::Scope;

const SHELL: &str = include_str!("assets/shell.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// Log lines a run page shows.
const LOG_LINES: usize = 500;
/// Files a run page lists.
const FILE_ROWS: usize = 500;

/// Every route of the console; `--no-console` leaves them all out.
pub(super) fn routes() -> Vec<Route> {
    use axum::http::Method;
    let shell_paths = [
        "/",
        "/sql",
        "/p/{project}",
        "/p/{project}/f/{run}",
        "/p/{project}/r/{run}",
        "/p/{project}/compare",
    ];
    let mut all: Vec<Route> = shell_paths
        .into_iter()
        .map(|path| (spec(Method::GET, path, RouteAccess::Public), get(shell)))
        .collect();
    all.extend([
        (
            spec(Method::GET, "/console/console.js", RouteAccess::Public),
            get(script),
        ),
        (
            spec(Method::GET, "/console/console.css", RouteAccess::Public),
            get(style),
        ),
        (
            spec(Method::GET, "/api/console/p", RouteAccess::Read),
            get(projects_page),
        ),
        (
            spec(Method::GET, "/api/console/p/{project}", RouteAccess::Read),
            get(project_page),
        ),
        (
            spec(
                Method::GET,
                "/api/console/p/{project}/f/{run}",
                RouteAccess::Read,
            ),
            get(family::family_page),
        ),
        (
            spec(
                Method::GET,
                "/api/console/p/{project}/r/{run}",
                RouteAccess::Read,
            ),
            get(run_page),
        ),
        (
            spec(
                Method::GET,
                "/api/console/p/{project}/compare",
                RouteAccess::Read,
            ),
            get(compare::compare_page),
        ),
    ]);
    all
}

/// Whether `path` is a console route.
pub(super) fn is_console(path: &str) -> bool {
    routes().iter().any(|(s, _)| s.path == path)
}

/// The shell forbids everything but its own script and style: a page holds
/// store text (run names, configs, logs), escaped, and nothing may run from it.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn shell() -> Response {
    asset("text/html; charset=utf-8", SHELL)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// A rendered page fragment.
struct Fragment(String);

impl Delivered for Fragment {
    fn delivered(&self) -> (u64, u64) {
        (1, self.0.len() as u64)
    }
}

impl IntoResponse for Fragment {
    fn into_response(self) -> Response {
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            self.0,
        )
            .into_response()
    }
}

/// Renders a page as one admitted query of the caller, described by its URL.
async fn render(
    state: &AppState,
    request: &RequestContext,
    uri: &Uri,
    work: impl Future<Output = Result<String>>,
) -> std::result::Result<Fragment, ApiError> {
    let work = async { work.await.map(Fragment) };
    Ok(state
        .engine
        .admitted(request, format!("GET {uri}"), work)
        .await?)
}

async fn projects_page(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<RequestContext>,
    uri: Uri,
) -> std::result::Result<Fragment, ApiError> {
    let engine = &state.engine;
    render(&state, &scope, &uri, async {
        let catalog = engine.scoped_catalog(&scope.projects).await?;
        Ok(pages::projects(&catalog))
    })
    .await
}

/// The key's catalog, once the project named in the path is one it opens.
async fn catalog_of(
    engine: &Engine,
    scope: &Scope,
    project: &str,
) -> Result<std::sync::Arc<CatalogSnapshot>> {
    scope.require_project(project)?;
    let catalog = engine.scoped_catalog(&scope.projects).await?;
    if !catalog.projects().iter().any(|p| p == project) {
        return Err(Error::NotFound(format!("unknown project `{project}`")));
    }
    Ok(catalog)
}

/// A run of `project`: a run of another project is unknown here.
fn run_of<'a>(catalog: &'a CatalogSnapshot, project: &str, run: &str) -> Result<&'a Run> {
    let found = catalog.lookup(run)?;
    if found.project != project {
        return Err(Error::NotFound(format!(
            "no run `{run}` in project `{project}`"
        )));
    }
    Ok(&**found)
}

async fn project_page(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<RequestContext>,
    Path(project): Path<String>,
    uri: Uri,
) -> std::result::Result<Fragment, ApiError> {
    let engine = &state.engine;
    render(&state, &scope, &uri, async {
        let catalog = catalog_of(engine, &scope, &project).await?;
        pages::project(&catalog, &project)
    })
    .await
}

async fn run_page(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<RequestContext>,
    Path((project, run)): Path<(String, String)>,
    uri: Uri,
) -> std::result::Result<Fragment, ApiError> {
    let engine = &state.engine;
    render(&state, &scope, &uri, async {
        let catalog = catalog_of(engine, &scope, &project).await?;
        let run = run_of(&catalog, &project, &run)?;
        let id = lit(run.id as i64);
        let ctx = engine.scoped_session(&scope.projects).await?;
        let history = ctx
            .table(crate::query::session::RUN_STATUS_EVENTS)
            .await?
            .filter(col("run_id").eq(id.clone()))?
            .select(vec![
                col("time"),
                col("from_status"),
                col("to_status"),
                col("source"),
                col("key_id"),
                col("rev"),
            ])?
            .sort(vec![col("rev").sort(true, false)])?;
        let logs = ctx
            .table("logs")
            .await?
            .filter(col("run_id").eq(id))?
            .sort(vec![
                col("time").sort(true, false),
                col("line_number").sort(true, false),
            ])?
            .limit(0, Some(LOG_LINES))?
            .select(vec![col("time"), col("log_type"), col("message")])?;
        let files = ctx
            .table("files")
            .await?
            .filter(col("run_id").eq(lit(run.id as i64)))?
            .sort(vec![
                col("time").sort(true, false),
                col("file_name").sort(true, false),
            ])?
            .limit(0, Some(FILE_ROWS))?
            .select(vec![
                col("time"),
                col("log_name"),
                col("file_name"),
                col("file_type"),
                col("file_size"),
                col("step"),
            ])?;
        let root = catalog.require(catalog.root(run.id)?)?;
        Ok(pages::run(&pages::RunPage {
            run,
            parent: run.parent_id.and_then(|p| catalog.get(p)).map(|p| &**p),
            root,
            history: pages::table(&engine.gate().collect(history).await?, "history")?,
            logs: pages::table(&engine.gate().collect(logs).await?, "logs")?,
            log_limit: LOG_LINES,
            files: pages::table(&engine.gate().collect(files).await?, "files")?,
            deletable: scope.require_delete().is_ok().then(|| {
                catalog
                    .subtree(run.id)
                    .into_iter()
                    .skip(1)
                    .filter_map(|id| catalog.get(id).map(|r| &**r))
                    .collect()
            }),
        }))
    })
    .await
}
