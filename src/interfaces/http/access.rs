//! Who may call a route: the key's scope attached to every keyed request,
//! projects named in headers and queries checked against it, writes refused
//! through read-only keys and on read-only servers.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::error::Error;
use crate::observe::{Interface, RequestContext, RequestId};

/// The answer of a read-only server to every write route.
pub(super) async fn refuse_writes(request: Request, _next: Next) -> Response {
    ApiError(Error::Forbidden(format!(
        "this forkline server is read-only: {} {} changes the store; send writes to a writable server",
        request.method(),
        request.uri().path()
    )))
    .into_response()
}

/// Refuses a write through a read-only key (runs inside `authenticate`).
pub(super) async fn require_write_scope(request: Request, next: Next) -> Response {
    match request.extensions().get::<RequestContext>() {
        Some(context) => match context.scope.require_write() {
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

/// Attaches the request's [`RequestContext`] — its scope, from its key
/// alone, its interface and its id — to every keyed route: handlers take it
/// as a required extension, so none can run without it. Projects named in
/// the header or query must lie inside the scope (403) and agree with each
/// other (400).
pub(super) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
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
    let id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_default();
    let interface = interface_of(request.uri().path());
    let context = RequestContext::new(scope, interface, id);
    request.extensions_mut().insert(context);
    next.run(request).await
}

/// The front door a route belongs to, as `system.queries` and the metrics name it.
fn interface_of(path: &str) -> Interface {
    match path {
        "/api/sql" | "/metrics" => Interface::Http,
        "/api/export" => Interface::Export,
        "/api/report" => Interface::Report,
        console if console.starts_with("/api/console/") => Interface::Console,
        _ => Interface::Sdk,
    }
}
