//! The request id of every HTTP and Flight call: taken from the client's
//! `x-request-id` where sane (see [`RequestId::from_client`]) or made, put
//! back on the request for the handlers (and as an extension), echoed on the
//! answer whatever its status, and named by the span every log line of the
//! call is written in.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tower_http::trace::{GrpcMakeClassifier, HttpMakeClassifier, TraceLayer};

use crate::observe::request::{REQUEST_ID_HEADER, RequestId};

/// Sets and echoes the request id; outermost, so every answer carries it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService(inner)
    }
}

/// See [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIdService<S>(S);

impl<S, B, R> Service<Request<B>> for RequestIdService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let sent = request.headers().get(REQUEST_ID_HEADER);
        let id = RequestId::from_client(sent.map(HeaderValue::as_bytes));
        // Printable ASCII by construction, so always a valid header value.
        let value = HeaderValue::from_str(id.as_str()).expect("a request id is printable ASCII");
        request
            .headers_mut()
            .insert(REQUEST_ID_HEADER, value.clone());
        request.extensions_mut().insert(id);
        let answer = self.0.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
            Ok(response)
        })
    }
}

/// The span a call's log lines are written in: its id, method and path.
fn span<B>(request: &Request<B>) -> tracing::Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .map_or("", RequestId::as_str);
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// Answers logged at DEBUG, failures (5xx, panics) at ERROR, each in its call's span.
pub fn http_trace()
-> TraceLayer<HttpMakeClassifier, fn(&Request<axum::body::Body>) -> tracing::Span> {
    TraceLayer::new_for_http()
        .make_span_with(span as fn(&Request<axum::body::Body>) -> tracing::Span)
}

/// As [`http_trace`], for Flight's gRPC calls.
pub fn grpc_trace<B>() -> TraceLayer<GrpcMakeClassifier, fn(&Request<B>) -> tracing::Span> {
    TraceLayer::new_for_grpc().make_span_with(span::<B> as fn(&Request<B>) -> tracing::Span)
}
