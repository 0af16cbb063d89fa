//! The HTTP/1.1 accept loop shared by every listener, the operator's webhook too: bounded
//! connections, a deadline for the handshake and request headers (slow clients cannot pin
//! sockets), graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// Bounds on every request of an API; each protocol picks its values (`Limits::ATTO`, ...).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// From the first byte of the request to the response.
    pub request_timeout: Duration,
    /// Sign requests handled at once; past it the client is told to retry.
    pub max_in_flight: usize,
}

impl Limits {
    /// An Atto block is < 1 KiB of JSON and a challenge at most 8 KiB of hex.
    pub const ATTO: Limits =
        Limits { max_body_bytes: 64 * 1024, request_timeout: Duration::from_secs(10), max_in_flight: 256 };
    /// Octez operations are at most 32 KiB: 64 KiB of hex plus the JSON quotes.
    pub const TEZOS: Limits =
        Limits { max_body_bytes: 128 * 1024, request_timeout: Duration::from_secs(10), max_in_flight: 256 };
}

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// How long in-flight requests get to finish after shutdown is asked for.
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `app` over plain TCP until `shutdown`, then drains (see [`serve_with`]).
pub async fn serve(listener: TcpListener, app: Router, limits: ConnectionLimits, shutdown: impl Future<Output = ()>) {
    serve_with(listener, app, limits, shutdown, |stream| async move { Some((stream, ())) }).await
}

/// The accept loop of every listener, the signer's APIs and the operator's webhook: at most
/// `limits.max_connections` at once (more are closed at accept), `handshake` (TLS, for the
/// webhook) and the request headers each within `limits.header_read_timeout`, a growing pause
/// after a failed accept (out of file descriptors, say) instead of a busy loop, and on `shutdown`
/// up to `limits.drain_timeout` for requests in flight. `handshake` turns the accepted stream into
/// the one HTTP runs over, and gives a value that every request of the connection carries as an
/// extension (with its [`ConnectInfo`]).
pub async fn serve_with<H, Fut, Io, Extra>(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    handshake: H,
) where
    H: Fn(TcpStream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<(Io, Extra)>> + Send + 'static,
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Extra: Clone + Send + Sync + 'static,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let mut pause = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    pause = Duration::ZERO;
                    accepted
                }
                Err(error) => {
                    pause = (pause * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                    tracing::warn!(%error, ?pause, "accept failed; pausing");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = &mut shutdown => break,
                    }
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "connection limit reached; closing new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, http, handshake, watcher) = (app.clone(), http.clone(), handshake.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(Some((io, extra))) = tokio::time::timeout(limits.header_read_timeout, handshake(stream)).await
            else {
                tracing::debug!(%peer, "handshake failed or timed out");
                return;
            };
            // Handlers that check the client's address (the Tezos allow-list) read it from here.
            let service = app.map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(extra.clone());
                request
            });
            let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// What every API router gets around its routes: the body-size limit, the whole-request deadline
/// (answered with `timeout_status`, which each protocol picks for its clients' retry rules), and
/// [`observe`] outermost so that those refusals are counted too.
pub fn bounded<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    limits: Limits,
    timeout_status: StatusCode,
    observed: Observed,
) -> Router<S> {
    routes
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(timeout_status, limits.request_timeout))
        .layer(axum::middleware::from_fn_with_state(observed, observe))
}

/// What [`observe`] needs: where to count, under which protocol, and how to name an endpoint.
#[derive(Clone)]
pub struct Observed {
    pub metrics: Arc<Metrics>,
    pub protocol: &'static str,
    /// Maps a path to a bounded endpoint label (paths are user input; labels must not be).
    pub endpoint: fn(&str) -> &'static str,
}

/// Middleware for every API: counts each answer by endpoint and status, times it, and counts the
/// refusals the layers below produce without reaching a handler (timeouts, oversized bodies).
pub async fn observe(State(observed): State<Observed>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = (observed.endpoint)(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    observed.metrics.observe_request(observed.protocol, endpoint, status.as_u16(), started.elapsed());
    match status {
        StatusCode::REQUEST_TIMEOUT => observed.metrics.refuse(observed.protocol, "timeout"),
        StatusCode::PAYLOAD_TOO_LARGE => observed.metrics.refuse(observed.protocol, "too_large"),
        _ => {}
    }
    response
}
