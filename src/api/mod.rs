//! The HTTP surface: the merchant API under `/v1`, the customer pages under `/c`, and the
//! operator API on its own listener. warp serves; routing is one `match` so every response,
//! errors included, gets the same shape and headers.

pub mod admin;
mod auth;
pub mod console;
pub mod error;
mod exports;
pub mod extract;
mod form;
mod health;
mod idempotency;
pub mod limits;
pub(crate) mod links;
mod listener;
mod pages;
mod refunds;
#[cfg(test)]
mod router_tests;
pub mod routes;
mod sessions;
pub mod stripe;
pub mod upi;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::Filter;

use crate::config::Config;
pub use crate::domain::view::display_amount;
use crate::store::SharedStore;
pub use auth::KeyCache;
use error::{ApiError, Code};
pub use extract::query_pairs;
pub use idempotency::TTL_MS as IDEMPOTENCY_TTL_MS;
pub use pages::parse_claim;
pub use sessions::{CreateParams, MAX_AMOUNT, parse_create};

/// Request bodies larger than this are refused (413) before they are parsed.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Everything a handler needs.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub keys: KeyCache,
    pub limiter: auth::Limiter,
    pub qr: crate::checkout::qr::QrCache,
    /// The bank alert templates, compiled once.
    pub upi: Option<Arc<crate::watch::upi::templates::Parser>>,
    /// Live status streams open now (capped).
    pub streams: Arc<std::sync::atomic::AtomicUsize>,
    /// The database, for online backups (absent for stores that are not redb).
    pub database: Option<crate::store::DbHandle>,
    /// What each chain watcher last saw (readiness, metrics, console).
    pub chains: crate::watch::evm::status::ChainStatuses,
    /// Per-client caps on streams, claims and console logins.
    pub limits: Arc<limits::ClientLimits>,
    /// The operator listener's token, resolved once at start (from the config or its file).
    pub admin_token: Option<String>,
    /// Set when a listener begins shutting down: long-lived responses (status streams) end.
    pub closing: Arc<std::sync::atomic::AtomicBool>,
    /// Exchange rates for priced sessions; the daemon polls their sources.
    pub rates: Arc<crate::rates::Rates>,
}

impl AppState {
    /// `admin_token` is the one the operator listener requires when the config names none
    /// inline (the daemon reads or creates its file).
    pub fn new(
        config: Arc<Config>,
        store: SharedStore,
        database: Option<crate::store::DbHandle>,
        admin_token: Option<String>,
    ) -> Arc<AppState> {
        let limiter = auth::Limiter::new(
            config.api.rate_limit_per_second,
            config.api.rate_limit_burst,
        );
        let upi = match config.upi_parser() {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                tracing::error!(error = %e, "the UPI alert templates do not compile");
                None
            }
        };
        Arc::new(AppState {
            store,
            keys: KeyCache::default(),
            limiter,
            qr: crate::checkout::qr::QrCache::default(),
            upi,
            streams: Arc::default(),
            database,
            chains: Default::default(),
            limits: Arc::default(),
            admin_token: config.admin_token.clone().or(admin_token),
            closing: Arc::default(),
            rates: Arc::new(crate::rates::Rates::new(config.rates.clone())),
            config,
        })
    }
}

/// One request, read whole (bodies are small and capped).
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The connection's peer (absent only outside the listener).
    pub peer: Option<SocketAddr>,
    /// The Host header, or the HTTP/2 `:authority`.
    pub authority: Option<String>,
}

pub type Response = warp::reply::Response;

/// A JSON response.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.status, e.body());
    if let Some(s) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    r
}

/// Reads the body up to `BODY_LIMIT`; `None` when it is larger.
async fn read_body<S, B>(mut stream: S) -> Result<Option<Bytes>, warp::Error>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk?;
        if buf.len() + chunk.remaining() > BODY_LIMIT {
            return Ok(None);
        }
        while chunk.has_remaining() {
            let c = chunk.chunk();
            buf.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    Ok(Some(buf.freeze()))
}

type Handler = fn(Arc<AppState>, Req) -> futures_util::future::BoxFuture<'static, Response>;

/// A warp filter that hands every request to `handler`.
fn catch_all(
    state: Arc<AppState>,
    admin: bool,
    handler: Handler,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<limits::Peer>())
        .and(warp::host::optional())
        .and(warp::body::stream())
        .and_then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers,
                  peer: Option<limits::Peer>,
                  authority: Option<http::uri::Authority>,
                  body| {
                let state = state.clone();
                async move {
                    let read = tokio::time::timeout(BODY_READ_TIMEOUT, read_body(Box::pin(body)));
                    let body = match read.await {
                        Err(_) => {
                            return Ok(error_response(&ApiError::new(
                                Code::RequestTimeout,
                                format!(
                                    "the request body did not arrive within {} s",
                                    BODY_READ_TIMEOUT.as_secs()
                                ),
                            )));
                        }
                        Ok(Ok(Some(b))) => b,
                        Ok(Ok(None)) => {
                            return Ok::<_, warp::Rejection>(error_response(&ApiError::too_large(
                                BODY_LIMIT,
                            )));
                        }
                        Ok(Err(_)) => {
                            return Ok(error_response(&ApiError::new(
                                Code::BodyUnreadable,
                                "the request body could not be read",
                            )));
                        }
                    };
                    // The table names the request for its span and its metrics label.
                    let (route, name) = routes::label(method.as_str(), path.as_str(), admin);
                    let req = Req {
                        method,
                        path: path.as_str().to_owned(),
                        query,
                        headers,
                        body,
                        peer: peer.map(|p| p.0),
                        authority: authority.map(|a| a.to_string()),
                    };
                    // Every log line of the request carries its method, route group and, when
                    // the path names one, the session id.
                    let session = path
                        .as_str()
                        .split('/')
                        .find(|seg| seg.starts_with("cs_"))
                        .unwrap_or_default()
                        .to_owned();
                    let span = tracing::info_span!(
                        "request",
                        method = %req.method,
                        route = crate::metrics::ROUTES[route],
                        name = name,
                        session = %session,
                    );
                    let response = tracing::Instrument::instrument(handler(state, req), span).await;
                    crate::metrics::METRICS.request(route, response.status().as_u16());
                    Ok(response)
                }
            },
        )
        .recover(|_r: warp::Rejection| async {
            Ok::<_, std::convert::Infallible>(error_response(&ApiError::new(
                Code::RequestMalformed,
                "the request could not be read",
            )))
        })
        .unify()
}

/// The public listener's routes.
pub fn public_routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone {
    catch_all(state, false, |s, r| Box::pin(routes::dispatch(s, r)))
}

/// The operator listener's routes.
pub fn admin_routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone {
    catch_all(state, true, |s, r| {
        Box::pin(async move {
            match limits::admin_host_refused(&s.config, &r) {
                Some(refused) => refused,
                None => admin::route(s, r).await,
            }
        })
    })
}

/// A client must finish sending a request's headers within this time, or its connection is
/// closed: a slowloris client trickling header bytes cannot hold a connection (and its task)
/// forever. hyper's own default is 30 s, but it only applies when a timer is set, which warp's
/// server does not do.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A request's body (at most `BODY_LIMIT`) must arrive within this time after its headers, or
/// the request is answered 408 and the connection closed: a client that stops mid-body cannot
/// park a handler.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// How long graceful shutdown waits for open connections.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// HTTP/2 pings a quiet connection this often and closes it when a ping goes unanswered for
/// `H2_KEEPALIVE_TIMEOUT`: a peer that vanished does not hold its connection.
const H2_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long an idle connection being closed may take to say goodbye before it is dropped.
const ENDING_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `filter` on `addr` until `shutdown` resolves; returns the bound address and the task.
/// The accept loop is ours rather than `warp::serve` so the connection gets a timer and a
/// header read timeout; otherwise it does what warp's graceful server does. `closing` is set
/// when shutdown begins (the state's flag: status streams watch it).
pub async fn serve<F>(
    addr: SocketAddr,
    idle_timeout: std::time::Duration,
    filter: F,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    closing: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)>
where
    F: Filter<Extract = (Response,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let service = warp::service(filter);
    let server = async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        // Tells connections still waiting for their first byte to give up at shutdown: they
        // hold no request, and graceful shutdown would otherwise wait out their 10 s timeout.
        let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (io, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Small writes go out at once: a status stream's event would otherwise wait for the
            // ACK of the one before (Nagle against delayed ACK, about 40 ms on Linux).
            if let Err(e) = io.set_nodelay(true) {
                tracing::debug!(error = %e, %peer, "cannot set TCP_NODELAY");
            }
            let activity = listener::Activity::new();
            let svc = hyper_util::service::TowerToHyperService::new(listener::ConnService {
                inner: service.clone(),
                peer,
                activity: activity.clone(),
            });
            // Held until the connection ends: graceful shutdown waits for every watcher.
            let watcher = graceful.watcher();
            let mut closing = closing_rx.clone();
            tokio::spawn(async move {
                // hyper's timer starts once it reads a request head, but the HTTP/1-or-2 sniffing
                // before the first request waits for bytes with no limit: a connection that
                // never sends one would be held forever.
                let mut first = [0u8; 1];
                tokio::select! {
                    r = tokio::time::timeout(HEADER_READ_TIMEOUT, io.peek(&mut first)) => match r {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    },
                    _ = closing.wait_for(|c| *c) => return,
                }
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
                let conn = builder.serve_connection(TokioIo::new(io), svc);
                let mut conn = std::pin::pin!(conn);
                // Shutdown and the idle timeout both end the connection gracefully (HTTP/2
                // GOAWAY, HTTP/1 close after the response in progress).
                // A peer that ignores the goodbye (HTTP/2 waits for a PING ack) is dropped
                // after `ENDING_GRACE`.
                let mut ending = false;
                let mut deadline = tokio::time::Instant::now();
                let check = (idle_timeout / 4).clamp(
                    std::time::Duration::from_millis(100),
                    std::time::Duration::from_secs(5),
                );
                loop {
                    tokio::select! {
                        r = conn.as_mut() => {
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                            break;
                        }
                        _ = closing.wait_for(|c| *c), if !ending => {
                            conn.as_mut().graceful_shutdown();
                            ending = true;
                            deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
                        }
                        _ = tokio::time::sleep_until(deadline), if ending => break,
                        _ = tokio::time::sleep(check), if !ending => {
                            if activity.idle_for().is_some_and(|d| d >= idle_timeout) {
                                tracing::debug!(%peer, "closing an idle connection");
                                conn.as_mut().graceful_shutdown();
                                ending = true;
                                deadline = tokio::time::Instant::now() + ENDING_GRACE;
                            }
                        }
                    }
                }
                drop(watcher);
            });
        }
        drop(listener);
        let _ = closing_tx.send(true);
        closing.store(true, std::sync::atomic::Ordering::SeqCst);
        // In-flight requests finish in milliseconds; live status streams see `closing` and end
        // within a quarter second. The deadline is a backstop, well inside systemd's stop timeout.
        if tokio::time::timeout(SHUTDOWN_DEADLINE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "connections still open {SHUTDOWN_DEADLINE:?} after shutdown began; closing them"
            );
        }
    };
    Ok((bound, tokio::spawn(server)))
}
