//! Every error answer: one status per [`ErrorKind`] and one JSON body,
//! whether a handler, axum's own rejections or a panic produced it.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Error, ErrorKind};

/// Seconds a client refused for lack of a query slot is asked to wait.
const BUSY_RETRY_AFTER_S: &str = "2";

/// An error as an HTTP response: `{"error": …}` with a status chosen by who is at fault.
pub struct ApiError(pub(super) Error);

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
    pub(super) fn new(error: impl Into<String>) -> Self {
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
pub(super) async fn json_rejections(response: Response) -> Response {
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
pub(super) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = what, "request handler panicked");
    let body = ErrorBody::new(format!("internal error: {what}"));
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// No two kinds a client must tell apart share a status (Busy and
    /// Unavailable both mean "retry").
    #[test]
    fn every_error_kind_has_its_status() {
        let mut seen = HashMap::new();
        for kind in ErrorKind::ALL {
            let status = status_of_kind(kind);
            assert!(status.is_client_error() || status.is_server_error());
            let documented = crate::error::documented_error_table()
                .into_iter()
                .find(|row| row.0 == kind)
                .map(|row| row.1)
                .unwrap();
            assert!(
                documented.starts_with(status.as_str()),
                "{kind:?}: docs/http-api.md says {documented}, served {status}"
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
