//! HTTP server: SQL endpoint with content negotiation, the pluto SDK API, the
//! web console, and health.

mod access;
mod console;
mod delete_route;
mod errors;
mod export_route;
mod lenient_json;
mod listen;
mod openapi;
mod pluto;
mod report_route;
mod sql_route;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Serialize;

use crate::auth::Keys;
use crate::engine::Engine;
use crate::error::Error;
use crate::interfaces::request_id::{self, RequestIdLayer};

pub use crate::interfaces::ConnectionLimits;
use access::{authenticate, refuse_writes, require_write_scope};
pub use errors::{ApiError, ErrorBody, status_of, status_of_kind};
use errors::{json_rejections, panic_response};
pub use openapi::document as openapi_document;
use sql_route::{sql, stream_response};
use tower_http::catch_panic::CatchPanicLayer;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest request body accepted, in bytes (larger ones get 413).
    pub max_body: usize,
    /// A read replica: every route that would change the store answers 403.
    pub read_only: bool,
    /// Base URL clients reach this server at, for the URLs it hands out (run
    /// pages, file uploads and downloads); the listening address when unset.
    pub public_url: Option<String>,
    /// Timeouts and the cap of connections, of HTTP and (timeouts aside) Flight SQL.
    pub connections: ConnectionLimits,
    /// The HTTP listener is on a loopback address: monitoring routes need no key.
    pub loopback: bool,
    /// `--stale-after` (`None`: off); sets how often activity markers are written.
    pub stale_after: Option<Duration>,
    /// Serve the web console (`/`, `/p/…`, `/sql`, `/api/console/…`); `--no-console` turns it off.
    pub console: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self::new(&Default::default(), &Default::default(), None)
    }
}

impl ServerOptions {
    /// The settings `serve`'s options describe; `public_url` is the checked
    /// `--public-url`, and `loopback` is for `serve` to set from its address.
    pub fn new(
        server: &crate::options::ServerArgs,
        connections: &crate::options::ConnectionArgs,
        public_url: Option<String>,
    ) -> Self {
        Self {
            max_body: server.max_body(),
            read_only: server.read_only,
            public_url,
            connections: connections.into(),
            loopback: false,
            stale_after: server.stale_after(),
            console: !server.no_console,
        }
    }
}

/// Most rows of a `text/plain` answer, which is aligned over all its rows and so built whole.
pub const MAX_TABLE_ROWS: usize = 10_000;

/// Most bytes of Arrow data behind a `text/plain` answer.
const MAX_TABLE_BYTES: usize = 64 << 20;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    engine: Arc<Engine>,
    keys: Arc<Keys>,
    signer: Arc<pluto::Signer>,
    /// Activity of runs, for the stale-run monitor of every server on the store.
    run_activity: Arc<crate::liveness::RunActivity>,
    /// Base of every URL the server hands out (`--public-url`), never the request's `Host`.
    public_url: String,
}

/// Who may call a route: the layers every route of a group gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteAccess {
    /// No key, no scope (health).
    Public,
    /// A key of any scope, read-only ones included.
    Read,
    /// A key that may write; refused by read-only keys and read-only servers.
    Write,
    /// No key: the URL carries its own signature (the SDK sends no key there).
    Signed,
    /// Monitoring (`/metrics`): no key on a server that listens on loopback
    /// only (a scraper on the same host), a key of any scope otherwise.
    Monitoring,
}

/// One route of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The method it answers.
    pub method: axum::http::Method,
    /// The path pattern, as axum writes it (`/api/runs/details/{id}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: RouteAccess,
}

type Route = (RouteSpec, axum::routing::MethodRouter<AppState>);

/// Every route of the server: the router is built from this list and the
/// scope tests enumerate it, so a new route cannot miss either.
fn routes() -> Vec<Route> {
    use axum::http::Method;
    let mut all: Vec<Route> = vec![
        (
            spec(Method::GET, "/health", RouteAccess::Public),
            get(health),
        ),
        (
            spec(Method::GET, "/api/openapi.json", RouteAccess::Public),
            get(openapi::serve),
        ),
        (spec(Method::POST, "/api/sql", RouteAccess::Read), post(sql)),
        (
            spec(Method::GET, "/api/export", RouteAccess::Read),
            get(export_route::export),
        ),
        (
            spec(Method::GET, "/api/report", RouteAccess::Read),
            get(report_route::report),
        ),
        (
            spec(Method::GET, "/metrics", RouteAccess::Monitoring),
            get(metrics),
        ),
        (
            spec(Method::DELETE, "/api/runs/{id}", RouteAccess::Write),
            delete(delete_route::delete_run),
        ),
        (
            spec(Method::POST, "/api/runs/delete", RouteAccess::Write),
            post(delete_route::delete_runs),
        ),
        (
            spec(Method::DELETE, "/api/projects/{name}", RouteAccess::Write),
            delete(delete_route::delete_project),
        ),
    ];
    all.extend(pluto::routes());
    all.extend(console::routes());
    all
}

fn spec(method: axum::http::Method, path: &'static str, access: RouteAccess) -> RouteSpec {
    RouteSpec {
        method,
        path,
        access,
    }
}

/// The routes of the HTTP API, for tests and documentation.
pub fn route_specs() -> Vec<RouteSpec> {
    routes().into_iter().map(|(spec, _)| spec).collect()
}

/// The application router; call it inside a runtime (it spawns the liveness tasks).
pub async fn router(
    engine: Arc<Engine>,
    keys: Arc<Keys>,
    options: &ServerOptions,
) -> crate::Result<Router> {
    let signer = Arc::new(pluto::Signer::shared(engine.store(), !options.read_only).await?);
    let run_activity = Arc::new(crate::liveness::RunActivity::new(
        engine.clone(),
        crate::liveness::marker_interval(options.stale_after),
    ));
    let state = AppState {
        engine,
        keys,
        signer,
        run_activity,
        public_url: options
            .public_url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1".into())
            .trim_end_matches('/')
            .to_string(),
    };
    let mut groups: HashMap<RouteAccess, Router<AppState>> = HashMap::new();
    for (spec, mut handler) in routes() {
        if !options.console && console::is_console(spec.path) {
            continue;
        }
        // A signed upload writes too: a read replica refuses it before anything else.
        if options.read_only
            && spec.access == RouteAccess::Signed
            && spec.method != axum::http::Method::GET
        {
            handler = handler.route_layer(axum::middleware::from_fn(refuse_writes));
        }
        let group = groups.remove(&spec.access).unwrap_or_default();
        groups.insert(spec.access, group.route(spec.path, handler));
    }
    let mut group = |access| groups.remove(&access).unwrap_or_default();
    let mut monitoring = group(RouteAccess::Monitoring);
    if !options.loopback {
        monitoring = monitoring.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    }
    let public = group(RouteAccess::Public).merge(monitoring);
    let signed = group(RouteAccess::Signed);
    let read = group(RouteAccess::Read).route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        authenticate,
    ));
    // Every route that changes the store is in this one group, gated here:
    // the key must be allowed to write, and so must the server.
    let mut writes = group(RouteAccess::Write)
        .route_layer(axum::middleware::from_fn(require_write_scope))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    if options.read_only {
        writes = writes.route_layer(axum::middleware::from_fn(refuse_writes));
    }
    Ok(Router::new()
        .merge(public)
        .merge(signed)
        .merge(read)
        .merge(writes)
        .layer(DefaultBodyLimit::max(options.max_body))
        .layer(axum::middleware::map_response(json_rejections))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(request_id::http_trace())
        .layer(RequestIdLayer)
        .with_state(state))
}

/// Serves the router on `listener`, and Flight SQL on `flight` when given,
/// until the process is stopped.
///
/// Without any API key the server answers unauthenticated requests, which is
/// only allowed on loopback addresses.
pub async fn serve(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    flight: Option<tokio::net::TcpListener>,
    options: ServerOptions,
) -> crate::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    let flight_addr = flight.as_ref().map(|l| l.local_addr()).transpose()?;
    let engine_root = engine.store().location().root.clone();
    let keys = Arc::new(Keys::load(engine.clone()).await?);
    let mut options = options;
    options
        .public_url
        .get_or_insert_with(|| format!("http://{addr}"));
    options.loopback = addr.ip().is_loopback();
    crate::observe::metrics::start();
    let app = router(engine.clone(), keys.clone(), &options).await?;
    if !keys.any().await? {
        for a in std::iter::once(addr).chain(flight_addr) {
            if !a.ip().is_loopback() {
                return Err(Error::invalid(format!(
                    "no API keys exist, so forkline only serves on a loopback address (not {a}); \
                     create one with `forkline keys create`"
                )));
            }
        }
        tracing::warn!(%addr, "no API keys exist: accepting unauthenticated requests (loopback only)");
    }
    // Tests and scripts read the addresses from these first lines of standard output.
    // One write, whose failure is ignored: a reader may close the pipe once it has the addresses.
    let mut banner = format!("forkline serving {engine_root} on http://{addr}\n");
    if let Some(flight_addr) = flight_addr {
        banner.push_str(&format!("forkline flight sql on grpc://{flight_addr}\n"));
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    }
    tracing::info!(%addr, commit_window_ms = engine.options().commit_window.as_millis() as u64, read_only = options.read_only, queries = %engine.gate().runner().describe(), "forkline HTTP listening");
    let http = async {
        listen::serve(listener, app, &options.connections, shutdown_signal()).await;
        Ok(())
    };
    match flight {
        Some(flight) => {
            let flight = crate::interfaces::flight::serve(
                engine,
                keys,
                flight,
                &options.connections,
                shutdown_signal(),
            );
            tokio::try_join!(http, flight)?;
        }
        None => http.await?,
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM, so in-flight requests finish before exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The answer of `/health`.
#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// Prometheus metrics of the whole server: counters, gauges and histograms in
/// the text exposition format (every project: counts and sizes, no names).
/// Served without a key on a loopback listener, behind any valid key otherwise.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "server",
    responses((status = 200, description = "The metrics", content_type = "text/plain", body = String))
)]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = crate::observe::metrics::render(&state.engine.gauges().await?);
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Liveness: answers while the server runs, without a key.
#[utoipa::path(
    get,
    path = "/health",
    tag = "server",
    responses((status = 200, description = "The server is up", body = Health))
)]
async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}
