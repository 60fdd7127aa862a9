//! `/c/{id}/events`: the live status stream. A stream waits on the store's announcements of
//! changed sessions and re-reads its own session only when that session's id is announced, so
//! an idle stream costs no store reads (it once polled four times a second).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderValue;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::domain::view::public_status;
use crate::store::SharedStore;

/// At most this many streams at once; past it the page polls `/status` instead.
const MAX_STREAMS: usize = 2000;
/// A connection is closed after this long; the page reconnects or falls back to polling.
const STREAM_CAP: Duration = Duration::from_secs(3600);
/// A re-read even when nothing was announced, should an announcement ever be missed.
const SAFETY_REREAD: Duration = Duration::from_secs(15);
/// How often a waiting stream looks at the shutdown flag and its cap (no store read).
const FLAG_CHECK: Duration = Duration::from_millis(500);

/// What one stream carries between events.
struct State {
    store: SharedStore,
    changes: broadcast::Receiver<Arc<str>>,
    id: String,
    /// The last status sent, as JSON (empty before the first).
    last: String,
    /// The session ended: the last event went out, the stream ends.
    done: bool,
    ends_at: Instant,
    closing: Arc<AtomicBool>,
    _slot: StreamSlot,
}

/// Server-Sent Events: the public status now, then on every change, until the session ends
/// (bounded to an hour per connection). `None` when too many streams are open.
pub fn status_stream(
    store: SharedStore,
    id: String,
    open: Arc<AtomicUsize>,
    closing: Arc<AtomicBool>,
) -> Option<warp::reply::Response> {
    use warp::Reply as _;
    if open.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        open.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    // Subscribed before the first read, so a change between the two is not lost.
    let state = State {
        changes: store.session_changes(),
        store,
        id,
        last: String::new(),
        done: false,
        ends_at: Instant::now() + STREAM_CAP,
        closing,
        _slot: StreamSlot(open),
    };
    let stream = futures_util::stream::unfold(state, next_event);
    let mut r = warp::sse::reply(warp::sse::keep_alive().stream(stream)).into_response();
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    Some(r)
}

/// The next status event: at once for the first, then after the session is announced changed
/// (or the safety re-read) and its public status differs from the last one sent.
async fn next_event(mut st: State) -> Option<(Result<warp::sse::Event, Infallible>, State)> {
    if st.done {
        return None;
    }
    let mut read_now = st.last.is_empty();
    loop {
        if !read_now {
            let _ = tokio::time::timeout(SAFETY_REREAD, announced(&mut st)).await;
        }
        read_now = false;
        if Instant::now() >= st.ends_at || st.closing.load(Ordering::Relaxed) {
            return None;
        }
        let s = st.store.session(&st.id).ok().flatten()?;
        let json = serde_json::to_string(&public_status(&s)).ok()?;
        if json != st.last {
            st.done = !s.status.is_awaiting();
            let ev = warp::sse::Event::default()
                .event("status")
                .data(json.clone());
            st.last = json;
            return Some((Ok(ev), st));
        }
    }
}

/// Returns when this stream's session was announced, when announcements were missed (lagged),
/// or when the stream should end (shutdown, its cap); the caller then re-reads or ends.
async fn announced(st: &mut State) {
    let mut check = Instant::now() + FLAG_CHECK;
    // The store is gone: only the safety re-read and the flags are left.
    let mut store_gone = false;
    loop {
        tokio::select! {
            r = st.changes.recv(), if !store_gone => match r {
                Ok(changed) if *changed == *st.id => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => store_gone = true,
            },
            _ = tokio::time::sleep_until(check) => {
                if st.closing.load(Ordering::Relaxed) || Instant::now() >= st.ends_at {
                    return;
                }
                check = Instant::now() + FLAG_CHECK;
            }
        }
    }
}

/// Counts an open stream; released when the stream (and its state) is dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
