//! The delivery worker: drains due deliveries from the durable outbox, signs and POSTs them
//! concurrently, and records every attempt (with its next retry) through the writer. A delivery
//! leaves the outbox only when it succeeded or finally failed, so one in flight at a crash is
//! sent again after the restart: at least once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::ssrf::{GuardedResolver, is_forbidden, literal_ip};
use crate::domain::view::event_json;
use crate::domain::webhook::{
    AfterAttempt, Attempt, Delivery, after_attempt, destination, signature_headers,
};
use crate::store::{SharedStore, WriteOp, write};

/// Deliveries in flight at once.
const CONCURRENCY: usize = 64;
/// Deliveries in flight to one destination: a receiver that hangs holds at most half the
/// slots, so it never stops deliveries to others.
const PER_DESTINATION: usize = 32;
/// Deliveries in flight for one merchant in one mode: a merchant's flood or hung receivers,
/// or its test traffic, hold at most a quarter of the slots, so other merchants and its own
/// live mode keep being served.
const PER_SCOPE: usize = 16;
/// Deliveries in flight for one merchant and mode to one destination: half of `PER_SCOPE`, so
/// one hung endpoint leaves room for the merchant's other destinations.
const PER_LANE: usize = PER_SCOPE / 2;
/// Due deliveries read per lane (merchant, mode, destination) each round: more than
/// `PER_LANE`, so a lane with a free slot always has one not already in flight.
const DUE_PER_LANE: usize = 2 * PER_LANE;
/// A 2xx within this long is success.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Settings {
    pub allow_private_targets: bool,
    pub retry_schedule_secs: Vec<u64>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The HTTP client callbacks use: no redirects, a 10 s budget, and (unless private targets are
/// allowed) the guarded resolver.
pub fn client(allow_private: bool) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve the target itself, past the address check.
        .no_proxy()
        .user_agent(concat!("paywatch/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(8);
    if !allow_private {
        b = b.dns_resolver(Arc::new(GuardedResolver));
    }
    b.build()
}

/// Runs until `stop` turns true, then lets in-flight deliveries finish.
pub async fn run(store: SharedStore, settings: Settings, mut stop: watch::Receiver<bool>) {
    let client = match client(settings.allow_private_targets) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; callbacks stay queued");
            return;
        }
    };
    let settings = Arc::new(settings);
    let signal = store.outbox_signal();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let per_destination: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    // In flight per (merchant, mode) and per (merchant, mode, destination).
    let per_scope: Arc<Mutex<HashMap<(String, bool), usize>>> = Arc::default();
    let per_lane: Arc<InFlight<(String, bool, String)>> = Arc::default();
    let mut tasks = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let due = match store.due_deliveries(now_ms(), DUE_PER_LANE) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox; retrying");
                Vec::new()
            }
        };
        for d in due {
            let dest = destination(&d.url);
            let busy = per_destination
                .lock()
                .map(|m| m.get(&dest).copied().unwrap_or(0) >= PER_DESTINATION)
                .unwrap_or(true);
            let sc = (d.merchant_id.clone(), d.livemode);
            let lane = (d.merchant_id.clone(), d.livemode, dest.clone());
            let scope_busy = per_scope
                .lock()
                .map(|m| m.get(&sc).copied().unwrap_or(0) >= PER_SCOPE)
                .unwrap_or(true);
            let lane_busy = per_lane
                .lock()
                .map(|m| m.get(&lane).copied().unwrap_or(0) >= PER_LANE)
                .unwrap_or(true);
            if busy || scope_busy || lane_busy {
                continue;
            }
            let fresh = in_flight
                .lock()
                .map(|mut s| s.insert(d.id.clone()))
                .unwrap_or(false);
            if !fresh {
                continue;
            }
            if let Ok(mut m) = per_destination.lock() {
                *m.entry(dest.clone()).or_default() += 1;
            }
            if let Ok(mut m) = per_scope.lock() {
                *m.entry(sc.clone()).or_default() += 1;
            }
            if let Ok(mut m) = per_lane.lock() {
                *m.entry(lane.clone()).or_default() += 1;
            }
            let per_dest = per_destination.clone();
            let (scopes, lanes) = (per_scope.clone(), per_lane.clone());
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (store, client, settings, in_flight) = (
                store.clone(),
                client.clone(),
                settings.clone(),
                in_flight.clone(),
            );
            tasks.spawn(async move {
                let id = d.id.clone();
                let span = tracing::info_span!(
                    "delivery",
                    delivery = %d.id,
                    event = %d.event_id,
                    merchant = %d.merchant_id,
                );
                tracing::Instrument::instrument(
                    deliver(store.as_ref(), &client, &settings, d),
                    span,
                )
                .await;
                if let Ok(mut s) = in_flight.lock() {
                    s.remove(&id);
                }
                if let Ok(mut m) = per_dest.lock()
                    && let Some(n) = m.get_mut(&dest)
                {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        m.remove(&dest);
                    }
                }
                release(&scopes, &sc);
                release(&lanes, &lane);
                drop(permit);
            });
        }
        while tasks.try_join_next().is_some() {}
        // Sleep until the next due delivery (or a commit that queued one, or a finished task).
        let next = store.next_delivery_ms().ok().flatten();
        let wait = next.map_or(Duration::from_secs(1), |t| {
            Duration::from_millis(u64::try_from(t - now_ms()).unwrap_or(0).clamp(5, 1000))
        });
        tokio::select! {
            _ = signal.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = stop.changed() => {}
        }
    }
    // Finish what is in flight (each bounded by the attempt timeout).
    while tasks.join_next().await.is_some() {}
}

/// Deliveries in flight, counted by a key.
type InFlight<K> = Mutex<HashMap<K, usize>>;

/// Gives back one in-flight slot counted under `k`.
fn release<K: std::hash::Hash + Eq>(counts: &InFlight<K>, k: &K) {
    if let Ok(mut m) = counts.lock()
        && let Some(n) = m.get_mut(k)
    {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(k);
        }
    }
}

/// One attempt for one delivery, recorded through the writer.
async fn deliver(
    store: &dyn crate::store::Store,
    client: &reqwest::Client,
    s: &Settings,
    d: Delivery,
) {
    let now = now_ms();
    let (attempt, after) = match attempt(store, client, s, &d, now).await {
        Ok((status, latency_ms, retry_after)) => {
            let jitter = rand::rng().random_range(0.9..1.1);
            let after = after_attempt(
                Some(status),
                d.attempts.len() + 1,
                &s.retry_schedule_secs,
                retry_after,
                jitter,
                now,
            );
            (
                Attempt {
                    at_ms: now,
                    status: Some(status),
                    latency_ms,
                    error: None,
                },
                after,
            )
        }
        Err(Failure::Retry(error, latency_ms)) => {
            let jitter = rand::rng().random_range(0.9..1.1);
            let after = after_attempt(
                None,
                d.attempts.len() + 1,
                &s.retry_schedule_secs,
                None,
                jitter,
                now,
            );
            (
                Attempt {
                    at_ms: now,
                    status: None,
                    latency_ms,
                    error: Some(error),
                },
                after,
            )
        }
        Err(Failure::Final(error)) => (
            Attempt {
                at_ms: now,
                status: None,
                latency_ms: 0,
                error: Some(error),
            },
            AfterAttempt::Failed,
        ),
    };
    crate::metrics::METRICS.delivery(
        attempt.status.is_some_and(|c| (200..300).contains(&c)),
        matches!(after, AfterAttempt::Failed),
        attempt.latency_ms,
    );
    match &after {
        AfterAttempt::Succeeded => {
            tracing::debug!(delivery = %d.id, event = %d.event_id, "delivered")
        }
        AfterAttempt::RetryAt(t) => {
            tracing::info!(delivery = %d.id, event = %d.event_id, url = %crate::redact::redact_url(&d.url), status = ?attempt.status, error = ?attempt.error, retry_in_ms = t - now, "callback not acknowledged; will retry")
        }
        AfterAttempt::Failed => {
            tracing::warn!(delivery = %d.id, event = %d.event_id, url = %crate::redact::redact_url(&d.url), "callback failed for good")
        }
    }
    let op = WriteOp::RecordAttempt {
        delivery_id: d.id.clone(),
        attempt,
        after,
    };
    if let Err(e) = write(store, op, None).await {
        // Not recorded: the delivery stays due and is attempted again (at least once).
        tracing::warn!(error = %e, delivery = %d.id, "cannot record a delivery attempt");
    }
}

enum Failure {
    /// Worth retrying (network error, timeout): error text and latency.
    Retry(String, u64),
    /// Never deliverable (forbidden target, deleted endpoint, missing event).
    Final(String),
}

async fn attempt(
    store: &dyn crate::store::Store,
    client: &reqwest::Client,
    s: &Settings,
    d: &Delivery,
    now: i64,
) -> Result<(u16, u64, Option<u64>), Failure> {
    let storage = |e: crate::store::StoreError| Failure::Retry(e.to_string(), 0);
    let event = store
        .event(&d.event_id)
        .map_err(storage)?
        .ok_or_else(|| Failure::Final("event not found".into()))?;
    // An endpoint created through Stripe's libraries gets its callbacks in Stripe's shapes.
    let (secrets, stripe_version) = match &d.endpoint_id {
        Some(id) => {
            let ep = store
                .endpoint(id)
                .map_err(storage)?
                .ok_or_else(|| Failure::Final("the endpoint was deleted".into()))?;
            (ep.secrets, ep.api_version)
        }
        None => (
            store
                .merchant_secrets(&d.merchant_id, d.livemode)
                .map_err(storage)?,
            None,
        ),
    };
    let secrets: Vec<String> = secrets
        .into_iter()
        .filter(|x| x.is_active(now))
        .map(|x| x.secret)
        .collect();
    if secrets.is_empty() {
        return Err(Failure::Retry("no active signing secret".into(), 0));
    }
    if !s.allow_private_targets && literal_ip(&d.url).is_some_and(is_forbidden) {
        return Err(Failure::Final(
            "the target is a loopback, private or metadata address".into(),
        ));
    }
    let body = match stripe_version {
        None => serde_json::to_vec(&event_json(&event)).unwrap_or_default(),
        Some(v) => {
            serde_json::to_vec(&crate::domain::stripe_view::event(&event, &v)).unwrap_or_default()
        }
    };
    let ts = now / 1000;
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let (standard, ours) = signature_headers(&refs, &event.id, ts, &body);
    let start = Instant::now();
    let resp = client
        .post(&d.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", standard)
        .header("x-paywatch-signature", ours)
        .header(
            "stripe-signature",
            super::stripe_signature::header(&refs, ts, &body),
        )
        .body(body)
        .send()
        .await;
    let latency = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    match resp {
        Ok(r) => {
            let retry_after = r
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            Ok((r.status().as_u16(), latency, retry_after))
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(inner) = src {
                msg.push_str(": ");
                msg.push_str(&inner.to_string());
                src = inner.source();
            }
            msg.truncate(300);
            Err(Failure::Retry(msg, latency))
        }
    }
}
