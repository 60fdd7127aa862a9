//! The per-connection service around warp's: it tags every request with the connection's peer
//! (per-client limits), tracks whether a request is in flight (the idle timeout, which HTTP/2
//! otherwise lacks), and keeps a response's stream slot alive until its body has ended.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::limits::{Peer, StreamSlot};

/// Requests in flight on one connection, and when the last one ended.
pub struct Activity {
    active: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            active: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    /// How long the connection has had nothing in flight (`None` while something is).
    pub fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        self.last.lock().ok().map(|l| l.elapsed())
    }
}

/// One request (and later its response body) in flight.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: Arc<Activity>) -> InFlight {
        a.active.fetch_add(1, Ordering::SeqCst);
        InFlight(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut l) = self.0.last.lock() {
            *l = Instant::now();
        }
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that holds its request's in-flight mark (and stream slot) until it ends.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
    _slot: Option<StreamSlot>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// warp's service for one connection.
#[derive(Clone)]
pub struct ConnService<S> {
    pub inner: S,
    pub peer: SocketAddr,
    pub activity: Arc<Activity>,
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for ConnService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: http_body::Body + Unpin,
{
    type Response = http::Response<Tracked<RB>>;
    type Error = S::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(Peer(self.peer));
        let in_flight = InFlight::new(self.activity.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let (mut parts, body) = fut.await?.into_parts();
            let slot = parts.extensions.remove::<StreamSlot>();
            Ok(http::Response::from_parts(
                parts,
                Tracked {
                    inner: body,
                    _in_flight: in_flight,
                    _slot: slot,
                },
            ))
        })
    }
}
