//! The HTTP accept loop. `axum::serve` keeps every connection as long as the
//! client likes; here a connection must send its request head within
//! `header_timeout` (which also closes idle keep-alive connections: the
//! timer runs from the moment a connection waits for its next request), its
//! body within `body_timeout`, and at most `max_connections` are open.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::interfaces::ConnectionLimits;

/// Serves `app` on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish (idle connections close at once).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let app = app.layer(axum::middleware::from_fn_with_state(
        limits.body_timeout,
        body_in_time,
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = tokio::sync::watch::channel(());
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, slot) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // Timeouts and clients going away are how connections end.
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection closed");
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop.send(());
    while connections.join_next().await.is_some() {}
}

/// The next connection, once fewer than the limit are open.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, OwnedSemaphorePermit) {
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the connection semaphore is never closed");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return (stream, slot);
            }
            // Out of file descriptors and the like: wait for some to close rather than spin.
            Err(e) => {
                tracing::warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Cuts a request body that has not fully arrived by its deadline; the
/// handler's read fails, and the client gets 408 whatever the handler made of it.
async fn body_in_time(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    if request.body().size_hint().exact() == Some(0) {
        return next.run(request).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + timeout;
    let (parts, body) = request.into_parts();
    let mut data = body.into_data_stream();
    let flag = expired.clone();
    let timed = async_stream::stream! {
        loop {
            tokio::select! {
                chunk = data.next() => match chunk {
                    Some(chunk) => yield chunk,
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => {
                    flag.store(true, Ordering::SeqCst);
                    yield Err(axum::Error::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request body timed out",
                    )));
                    break;
                }
            }
        }
    };
    let response = next
        .run(Request::from_parts(parts, Body::from_stream(timed)))
        .await;
    if !expired.load(Ordering::SeqCst) {
        return response;
    }
    let body = json!({
        "error": format!(
            "the request body did not arrive within {} s (--http-body-timeout-s)",
            timeout.as_secs_f64()
        )
    });
    (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        axum::Json(body),
    )
        .into_response()
}
