//! HTTP server: SQL endpoint with content negotiation, the pluto SDK API, and health.

mod export;
mod lenient_json;
mod listen;
mod openapi;
mod pluto;
mod report;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::format::{Encoder, Format, encode_stream};
use crate::auth::Keys;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind};
use crate::ingest::GroupCommitter;
use crate::observe::{Interface, QueryInfo};
use crate::scope::Scope;
pub use listen::ConnectionLimits;
pub use openapi::document as openapi_document;
use tower_http::catch_panic::CatchPanicLayer;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Ingest requests arriving within this window share one commit.
    pub commit_window: Duration,
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
            commit_window: server.commit_window(),
            max_body: server.max_body(),
            read_only: server.read_only,
            public_url,
            connections: connections.into(),
            loopback: false,
            stale_after: server.stale_after(),
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
    committer: GroupCommitter,
    keys: Arc<Keys>,
    signer: Arc<pluto::Signer>,
    /// Activity of runs, for the stale-run monitor of every server on the store.
    activity: Arc<crate::liveness::Activity>,
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
            get(export::export),
        ),
        (
            spec(Method::GET, "/api/report", RouteAccess::Read),
            get(report::report),
        ),
        (
            spec(Method::GET, "/metrics", RouteAccess::Monitoring),
            get(metrics),
        ),
    ];
    all.extend(pluto::routes());
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

/// The application router; spawns the group committer, so call it inside a runtime.
pub async fn router(
    engine: Arc<Engine>,
    keys: Arc<Keys>,
    options: &ServerOptions,
) -> crate::Result<Router> {
    let signer = Arc::new(pluto::Signer::shared(engine.store(), !options.read_only).await?);
    let committer = GroupCommitter::spawn(engine.clone(), options.commit_window);
    let activity = Arc::new(crate::liveness::Activity::new(
        engine.clone(),
        crate::liveness::marker_interval(options.stale_after),
    ));
    let state = AppState {
        engine,
        committer,
        keys,
        signer,
        activity,
        public_url: options
            .public_url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1".into())
            .trim_end_matches('/')
            .to_string(),
    };
    let mut groups: HashMap<RouteAccess, Router<AppState>> = HashMap::new();
    for (spec, mut handler) in routes() {
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
    tracing::info!(%addr, commit_window_ms = options.commit_window.as_millis() as u64, read_only = options.read_only, "forkline HTTP listening");
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

/// The answer of a read-only server to every write route.
async fn refuse_writes(request: Request, _next: Next) -> Response {
    ApiError(Error::Forbidden(format!(
        "this forkline server is read-only: {} {} changes the store; send writes to a writable server",
        request.method(),
        request.uri().path()
    )))
    .into_response()
}

/// Refuses a write through a read-only key (runs inside `authenticate`).
async fn require_write_scope(request: Request, next: Next) -> Response {
    match request.extensions().get::<Scope>() {
        Some(scope) => match scope.require_write() {
            Ok(()) => next.run(request).await,
            Err(e) => ApiError(e).into_response(),
        },
        None => ApiError(Error::Unauthenticated("no API key scope".into())).into_response(),
    }
}

/// Every project a request names outside its body: `X-Project-Name` and each
/// `projectName` query parameter.
fn named_projects(request: &Request) -> Vec<String> {
    let mut named: Vec<String> = request
        .headers()
        .get_all("x-project-name")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
        .collect();
    if let Some(query) = request.uri().query() {
        named.extend(
            url::form_urlencoded::parse(query.as_bytes())
                .filter(|(k, _)| k == "projectName")
                .map(|(_, v)| v.trim().to_string()),
        );
    }
    named.retain(|p| !p.is_empty());
    named
}

/// Attaches the request's [`Scope`], from its key alone, to every keyed
/// route: handlers take it as a required extension, so none can run without
/// it. Projects named in the header or query must lie inside it (403) and
/// agree with each other (400).
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let scope = match state.keys.scope_for(authorization.as_deref()).await {
        Ok(scope) => scope,
        Err(e) => return ApiError(e).into_response(),
    };
    let named = named_projects(&request);
    if let Some(first) = named.first() {
        if let Some(other) = named.iter().find(|p| *p != first) {
            return ApiError(Error::invalid(format!(
                "the request names two projects, `{first}` and `{other}`"
            )))
            .into_response();
        }
        if let Err(e) = scope.require_project(first) {
            return ApiError(e).into_response();
        }
    }
    request.extensions_mut().insert(scope);
    next.run(request).await
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

/// Seconds a client refused for lack of a query slot is asked to wait.
const BUSY_RETRY_AFTER_S: &str = "2";

/// An error as an HTTP response: `{"error": …}` with a status chosen by who is at fault.
pub struct ApiError(Error);

/// The body of every error answer, whatever refused the request.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong; `Unauthorized` for a missing or unknown API key.
    error: String,
    /// Why the key was refused (only with `Unauthorized`, as Pluto's server answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl ErrorBody {
    fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            message: None,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

/// The one mapping from errors to HTTP statuses.
pub fn status_of(e: &Error) -> StatusCode {
    status_of_kind(e.kind())
}

/// The HTTP status of each kind of error.
pub fn status_of_kind(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        // The server cannot give this query the memory it needs; retrying
        // the same query will not help, unlike 503.
        ErrorKind::ResourcesExhausted => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Busy | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.0.kind();
        let status = status_of_kind(kind);
        crate::observe::metrics::http_error(status.as_u16());
        if self.0.is_store_failure() {
            crate::observe::metrics::store_error("http");
        }
        let body = axum::Json(match kind {
            // As Pluto's server answers, which the SDK reports.
            ErrorKind::Unauthenticated => ErrorBody {
                error: "Unauthorized".into(),
                message: Some(self.0.to_string()),
            },
            _ => ErrorBody::new(self.0.to_string()),
        });
        match kind {
            // Limits at work, not faults.
            ErrorKind::Busy => {
                (status, [(header::RETRY_AFTER, BUSY_RETRY_AFTER_S)], body).into_response()
            }
            ErrorKind::TimedOut | ErrorKind::ResourcesExhausted => {
                tracing::warn!(error = %self.0, "request over a limit");
                (status, body).into_response()
            }
            _ => {
                if status.is_server_error() {
                    tracing::error!(error = %self.0, "request failed");
                }
                (status, body).into_response()
            }
        }
    }
}

/// Rejections produced by axum itself (body too large, wrong method, …) carry
/// plain text; clients of this API always get `{"error": …}`.
async fn json_rejections(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 64 << 10).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    (status, axum::Json(ErrorBody::new(text))).into_response()
}

/// A bug must cost one request a 500, never the connection or the server.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = what, "request handler panicked");
    let body = ErrorBody::new(format!("internal error: {what}"));
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
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
    let text = crate::observe::metrics::render(&state.engine).await?;
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

/// The body of `POST /api/sql`.
#[derive(Deserialize, utoipa::ToSchema)]
struct SqlRequest {
    /// One read-only statement (`SELECT`, `WITH`, `EXPLAIN`, `SHOW`, `DESCRIBE`)
    /// over `runs`, `metrics`, `logs`, `data`, `files` and the lineage table functions.
    #[schema(example = "SELECT * FROM lineage('VS-6')")]
    sql: String,
}

/// A SQL query over the key's projects, its result streamed in the format the
/// `Accept` header names (JSON rows by default).
///
/// DDL, DML, `COPY` and `SET` are refused with 400.
#[utoipa::path(
    post,
    path = "/api/sql",
    tag = "sql",
    request_body = SqlRequest,
    params(
        ("Accept" = Option<String>, Header,
            description = "`application/json` (default), `text/csv`, `text/plain` (an aligned table of at most 10,000 rows), `application/vnd.apache.arrow.stream` or `application/vnd.apache.parquet`")
    ),
    responses(
        (status = 200, description = "The result, streamed batch by batch", content(
            (Vec<HashMap<String, serde_json::Value>> = "application/json"),
            (String = "text/csv"),
            (String = "text/plain"),
            ("application/vnd.apache.arrow.stream"),
            ("application/vnd.apache.parquet"),
        )),
        (status = 504, description = "The query ran past `--query-timeout-s` and was cancelled", body = ErrorBody),
    )
)]
async fn sql(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<Scope>,
    headers: HeaderMap,
    body: Result<axum::Json<SqlRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let axum::Json(req) =
        body.map_err(|e| Error::invalid(format!("bad request body: {}", e.body_text())))?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let engine = &state.engine;
    let recorded = QueryInfo::new(Interface::Http, req.sql.clone(), &scope);
    let batches = engine
        .gate()
        .stream(recorded, async {
            let df = engine.scoped_sql(&req.sql, &scope.projects).await?;
            Ok(match format {
                // One row past the cap tells a result that is too long.
                Format::Table => df.limit(0, Some(MAX_TABLE_ROWS + 1))?,
                _ => df,
            })
        })
        .await?;
    stream_response(batches, format, None).await
}

/// Streams a query's result in `format`, as a download named `filename` when given.
///
/// The first chunk is computed before answering, so errors found early still get
/// a proper status; later ones cut the chunked body short, which clients see.
async fn stream_response(
    batches: datafusion::execution::SendableRecordBatchStream,
    format: Format,
    filename: Option<String>,
) -> Result<Response, ApiError> {
    if format == Format::Table {
        return table_response(batches).await;
    }
    let mut chunks = Box::pin(encode_stream(format, batches)?);
    let first = chunks.next().await.transpose()?;
    let body = futures::stream::iter(first.map(Ok))
        .chain(chunks)
        .map(|chunk| {
            chunk.map_err(|e| {
                tracing::error!(error = %e, "query failed while streaming");
                std::io::Error::other(e.to_string())
            })
        });
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.content_type());
    if let Some(name) = filename {
        response = response.header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        );
    }
    Ok(response
        .body(Body::from_stream(body))
        .map_err(|e| Error::invalid(e.to_string()))?)
}

/// A `text/plain` answer: an aligned table, so built whole, and only for
/// results within [`MAX_TABLE_ROWS`] and [`MAX_TABLE_BYTES`] (refused before
/// anything is sent, and before more than that is held).
async fn table_response(
    mut batches: datafusion::execution::SendableRecordBatchStream,
) -> Result<Response, ApiError> {
    let mut encoder = Encoder::new(Format::Table, &batches.schema())?;
    let (mut rows, mut bytes) = (0, 0);
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(Error::from)?;
        rows += batch.num_rows();
        bytes += batch.get_array_memory_size();
        if rows > MAX_TABLE_ROWS || bytes > MAX_TABLE_BYTES {
            return Err(Error::invalid(format!(
                "a text/plain answer holds at most {MAX_TABLE_ROWS} rows and {} MiB, and this \
                 result is larger: add a LIMIT, or ask for text/csv, application/json, Arrow or \
                 Parquet in the Accept header, which stream any size",
                MAX_TABLE_BYTES >> 20
            ))
            .into());
        }
        encoder.write(&batch)?;
    }
    let text = encoder.finish()?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, Format::Table.content_type())],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No two kinds a client must tell apart share a status (Busy and
    /// Unavailable both mean "retry").
    #[test]
    fn every_error_kind_has_its_status() {
        let mut seen = HashMap::new();
        for kind in ErrorKind::ALL {
            let status = status_of_kind(kind);
            assert!(status.is_client_error() || status.is_server_error());
            let documented = crate::error::readme_error_table()
                .into_iter()
                .find(|row| row.0 == kind)
                .map(|row| row.1)
                .unwrap();
            assert!(
                documented.starts_with(status.as_str()),
                "{kind:?}: README says {documented}, served {status}"
            );
            if let Some(other) = seen.insert(status, kind) {
                assert_eq!(
                    [other, kind],
                    [ErrorKind::Busy, ErrorKind::Unavailable],
                    "{status}"
                );
            }
        }
    }
}
