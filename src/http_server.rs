//! Serves an axum router over HTTP/1.1 with the limits `axum::serve` cannot set: a deadline
//! for reading a request head (slow-loris), a cap on its size (431), a handler timeout (503
//! JSON, never on the never-ending event streams), and graceful shutdown.

use crate::api_error::ApiError;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Limits every HTTP listener applies.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// A client must send a whole request head within this time, or the connection closes.
    pub header_read_timeout: Duration,
    /// Largest total size of a request's header names and values in bytes: a bigger one gets
    /// a 431 JSON error. Hyper's own read buffer stops at about twice this (431, no body), and
    /// it caps the number of headers at 100.
    pub max_header_bytes: usize,
    /// Longest a request may take from head to response (body upload included), except the
    /// event streams.
    pub request_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Paths whose responses never end (server-sent events): no request timeout.
fn is_event_stream(path: &str) -> bool {
    path == "/events"
}

/// Refuses requests whose headers add up to more than `max_bytes` (hyper's buffer limit is
/// only checked between reads, so it lets somewhat bigger heads through).
pub fn with_header_limit(router: axum::Router, max_bytes: usize) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| async move {
            let size: usize = request
                .headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum();
            if size > max_bytes {
                return ApiError::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    format!("request headers are larger than {max_bytes} bytes"),
                )
                .into_response();
            }
            next.run(request).await
        },
    ))
}

/// Adds the request timeout to `router`.
pub fn with_request_timeout(router: axum::Router, timeout: Duration) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| async move {
            if is_event_stream(request.uri().path()) {
                return next.run(request).await;
            }
            let (method, path) = (request.method().clone(), request.uri().path().to_owned());
            match tokio::time::timeout(timeout, next.run(request)).await {
                Ok(response) => response,
                Err(_) => {
                    tracing::warn!(%method, %path, ?timeout, "request timed out");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("request not completed within {} s", timeout.as_secs_f64()),
                    )
                    .into_response()
                }
            }
        },
    ))
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets every
/// connection finish its current request, and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let router = with_request_timeout(router, limits.request_timeout);
    let router = with_header_limit(router, limits.max_header_bytes);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes.saturating_mul(2))
        // Hyper needs room for at least one 8 KiB read.
        .max_buf_size(limits.max_header_bytes.saturating_mul(2).max(8192));
    // Dropped when shutdown starts; every connection then finishes gracefully.
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection holds a receiver; `closed()` resolves when the last one is gone.
    let (open_tx, open_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(err) = served {
                        tracing::debug!(%remote, error = %err, "connection ended with an error");
                    }
                }
                _ = async move { let _ = stop.wait_for(|stopping| *stopping).await; } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(open);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
}
