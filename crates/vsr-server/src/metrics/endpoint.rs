//! The HTTP/1.1 endpoint that serves [`Metrics`] as Prometheus text on `GET /metrics`, and the
//! replica's health for probes: `/healthz` answers 200 while the process runs, `/readyz` 200
//! while [`Metrics::readiness`] holds and 503 with its one-line reason otherwise (both to GET
//! and HEAD).
//!
//! The accept loop hands each connection to its own task, which runs hyper's HTTP/1.1 server
//! on it. Nothing a client does can hold the endpoint: a connection that has not sent a whole
//! request head within [`Limits::header_read_timeout`] (a slow or silent client, or an idle
//! keep-alive connection) is closed, every connection is closed once it has been open for
//! [`Limits::lifetime`], and past [`Limits::connections_max`] open connections a new one evicts
//! the oldest, so a scrape always gets through however many connections sit idle. Request bodies
//! are never read: hyper drains at most what it already buffered and closes the rest. A scrape
//! reads the data directory's sizes and `/proc` ([`Metrics::scrape`]) on a blocking thread, so
//! a slow disk holds neither the runtime's threads nor the replica's event loop.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};

use super::Metrics;

/// The content type of the Prometheus text exposition format.
const CONTENT_TYPE_METRICS: &str = "text/plain; version=0.0.4";
/// The content type of the error and health responses.
const CONTENT_TYPE_ERROR: &str = "text/plain; charset=utf-8";
/// The methods the health paths answer.
const HEALTH_METHODS: &str = "GET, HEAD";
/// Largest request head (request line and headers) read; a larger one gets a 431.
const REQUEST_HEAD_SIZE_MAX: usize = 8 * 1024;
/// Largest read buffer of one connection: bounds what a connection can make the endpoint hold.
const BUFFER_SIZE_MAX: usize = 16 * 1024;
// hyper refuses (panics on) a smaller buffer.
const _: () = assert!(BUFFER_SIZE_MAX >= 8 * 1024 && BUFFER_SIZE_MAX >= REQUEST_HEAD_SIZE_MAX);
/// Pause after a failed accept (out of file descriptors, say) before accepting again.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// The endpoint's timeouts and bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Time a client has to send a whole request head, counted from the connection's accept or
    /// from the previous response: bounds slow clients and idle connections alike.
    pub(crate) header_read_timeout: Duration,
    /// Time after which a connection is closed (once its request in flight, if any, is answered).
    pub(crate) lifetime: Duration,
    /// Time a connection past its lifetime has to finish its request in flight.
    pub(crate) shutdown_grace: Duration,
    /// Open connections; the next one accepted closes the oldest.
    pub(crate) connections_max: usize,
}

impl Limits {
    /// The limits of `vsr start --metrics`.
    pub(crate) const DEFAULT: Limits = Limits {
        header_read_timeout: Duration::from_secs(5),
        lifetime: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(5),
        connections_max: 64,
    };
}

/// Binds the metrics endpoint.
pub(crate) async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves the metrics and the health on `listener` with the [`Limits::DEFAULT`] until the task
/// is dropped.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    serve_with(listener, metrics, Limits::DEFAULT).await;
}

/// Serves the metrics and the health on `listener` within `limits` until the task is dropped
/// (which closes every connection).
pub(crate) async fn serve_with(listener: TcpListener, metrics: Arc<Metrics>, limits: Limits) {
    let mut connections = JoinSet::new();
    // The open connections' tasks, oldest first.
    let mut open: VecDeque<AbortHandle> = VecDeque::with_capacity(limits.connections_max + 1);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint cannot accept");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        open.retain(|task| !task.is_finished());
        while open.len() >= limits.connections_max.max(1)
            && let Some(oldest) = open.pop_front()
        {
            tracing::debug!("metrics endpoint full: closing its oldest connection");
            oldest.abort();
        }
        let task = connections.spawn(connection(stream, Arc::clone(&metrics), limits));
        open.push_back(task);
    }
}

/// Runs HTTP/1.1 on one connection until the client closes it, a limit closes it, or the task
/// is aborted.
async fn connection(stream: TcpStream, metrics: Arc<Metrics>, limits: Limits) {
    let service = service_fn(move |request: Request<Incoming>| {
        // The request, and with it its unread body, is dropped here.
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let metrics = Arc::clone(&metrics);
        async move { Ok::<_, Infallible>(respond(&method, &path, metrics).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(REQUEST_HEAD_SIZE_MAX)
        .max_buf_size(BUFFER_SIZE_MAX);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "metrics connection closed");
            }
            return;
        }
        () = tokio::time::sleep(limits.lifetime) => {}
    }
    // Past its lifetime: answer the request in flight, if any, then close.
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.shutdown_grace, connection).await;
}

/// The response to `method path`: the metrics, the health, 404 for another path, 405 for
/// another method.
async fn respond(method: &Method, path: &str, metrics: Arc<Metrics>) -> Response<Full<Bytes>> {
    match path {
        "/metrics" if method == Method::GET => {
            // A scrape lists the data directory and reads /proc: off the runtime's threads.
            match tokio::task::spawn_blocking(move || metrics.scrape()).await {
                Ok(body) => text(StatusCode::OK, CONTENT_TYPE_METRICS, body.into()),
                Err(error) => {
                    tracing::warn!(%error, "the metrics could not be gathered");
                    let body = "the metrics could not be gathered\n";
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        CONTENT_TYPE_ERROR,
                        body.into(),
                    )
                }
            }
        }
        "/metrics" => not_allowed("the metrics are at GET /metrics", "GET"),
        "/healthz" | "/readyz" if method != Method::GET && method != Method::HEAD => {
            not_allowed("health answers GET and HEAD", HEALTH_METHODS)
        }
        "/healthz" => text(StatusCode::OK, CONTENT_TYPE_ERROR, "ok\n".into()),
        "/readyz" => match metrics.readiness() {
            Ok(()) => text(StatusCode::OK, CONTENT_TYPE_ERROR, "ready\n".into()),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                CONTENT_TYPE_ERROR,
                format!("not ready: {reason}\n").into(),
            ),
        },
        _ => {
            let body = "not found: the metrics are at GET /metrics, the health at /healthz and \
                        /readyz\n";
            text(StatusCode::NOT_FOUND, CONTENT_TYPE_ERROR, body.into())
        }
    }
}

/// A 405 saying `what`, with the `allow`ed methods.
fn not_allowed(what: &str, allow: &'static str) -> Response<Full<Bytes>> {
    let body = format!("method not allowed: {what}\n");
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        CONTENT_TYPE_ERROR,
        body.into(),
    );
    let _ = response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// A response of `status` with the text `body` of type `content_type`.
fn text(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let _ = response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
pub(super) mod tests;
