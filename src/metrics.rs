//! Process counters for `/metrics` (Prometheus text format). Atomics on the hot paths, a small
//! lock only where a label set is open-ended and the event is rare (a payment, an alert).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Route groups requests are counted under (a bounded label set: never the raw path).
pub const ROUTES: [&str; 10] = [
    "healthz",
    "readyz",
    "metrics",
    "sessions",
    "v1_other",
    "upi_ingest",
    "page",
    "assets",
    "admin",
    "unknown",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Webhook delivery latency buckets, milliseconds.
const LATENCY_BUCKETS_MS: [u64; 9] = [10, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

pub struct Metrics {
    requests: [[AtomicU64; 5]; 10],
    deliveries_ok: AtomicU64,
    deliveries_failed_attempts: AtomicU64,
    deliveries_given_up: AtomicU64,
    latency_buckets: [AtomicU64; 9],
    latency_sum_ms: AtomicU64,
    latency_count: AtomicU64,
    /// (method) → payments recorded.
    payments: Mutex<BTreeMap<String, u64>>,
    /// (event type) → session events emitted: sessions by the state they moved to.
    session_events: Mutex<BTreeMap<String, u64>>,
    /// (outcome) → UPI alerts.
    upi_alerts: Mutex<BTreeMap<String, u64>>,
    /// (method, livemode, price in base units) → capacity use at its last checkout.
    slots: Mutex<BTreeMap<(String, bool, u128), SlotUse>>,
    /// (method) → creates refused for want of a free slot.
    slots_exhausted: Mutex<BTreeMap<String, u64>>,
    slots_reused: AtomicU64,
    /// Sessions read from the store (live status streams' cost shows here).
    session_reads: AtomicU64,
}

/// How much of one price's capacity was in use when a session at that price was last created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotUse {
    /// Slots held by awaiting sessions, or by paid ones within the grace period.
    pub in_use: usize,
    /// Slots of sessions that ended with nothing received, still in their grace (reusable).
    pub freed: usize,
    /// The method's window: the capacity of one price.
    pub capacity: usize,
    /// Of the method's unit, to show the price.
    pub decimals: u32,
    pub at_ms: i64,
}

/// Prices tracked for the capacity gauges; the least recently used is dropped beyond this.
const MAX_SLOT_PRICES: usize = 500;

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ROW: [AtomicU64; 5] = [ZERO; 5];

/// The process's counters.
pub static METRICS: Metrics = Metrics::new();

fn bump(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
    if let Ok(mut m) = map.lock() {
        *m.entry(key.to_owned()).or_default() += 1;
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub const fn new() -> Metrics {
        Metrics {
            requests: [ROW; 10],
            deliveries_ok: ZERO,
            deliveries_failed_attempts: ZERO,
            deliveries_given_up: ZERO,
            latency_buckets: [ZERO; 9],
            latency_sum_ms: ZERO,
            latency_count: ZERO,
            payments: Mutex::new(BTreeMap::new()),
            session_events: Mutex::new(BTreeMap::new()),
            upi_alerts: Mutex::new(BTreeMap::new()),
            slots: Mutex::new(BTreeMap::new()),
            slots_exhausted: Mutex::new(BTreeMap::new()),
            slots_reused: ZERO,
            session_reads: ZERO,
        }
    }

    /// The route group of a request path, on the public (`admin == false`) or operator listener.
    pub fn route_of(path: &str, admin: bool) -> usize {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let name = match segs.as_slice() {
            ["healthz"] => "healthz",
            ["readyz"] => "readyz",
            ["metrics"] => "metrics",
            _ if admin => "admin",
            ["v1", "upi", "credits"] => "upi_ingest",
            ["v1", "checkout", "sessions", ..] => "sessions",
            ["v1", ..] => "v1_other",
            ["c", ..] => "page",
            ["assets", ..] => "assets",
            _ => "unknown",
        };
        ROUTES
            .iter()
            .position(|r| *r == name)
            .unwrap_or(ROUTES.len() - 1)
    }

    pub fn request(&self, route: usize, status: u16) {
        let class = usize::from(status / 100).saturating_sub(1).min(4);
        if let Some(row) = self.requests.get(route) {
            row[class].fetch_add(1, Relaxed);
        }
    }

    /// One delivery attempt: its latency, and whether it succeeded or the delivery gave up.
    pub fn delivery(&self, ok: bool, given_up: bool, latency_ms: u64) {
        if ok {
            self.deliveries_ok.fetch_add(1, Relaxed);
        } else {
            self.deliveries_failed_attempts.fetch_add(1, Relaxed);
        }
        if given_up {
            self.deliveries_given_up.fetch_add(1, Relaxed);
        }
        for (i, b) in LATENCY_BUCKETS_MS.iter().enumerate() {
            if latency_ms <= *b {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_sum_ms.fetch_add(latency_ms, Relaxed);
        self.latency_count.fetch_add(1, Relaxed);
    }

    pub fn payment(&self, method: &str) {
        bump(&self.payments, method);
    }

    pub fn session_event(&self, kind: &str) {
        bump(&self.session_events, kind);
    }

    pub fn upi_alert(&self, outcome: &str) {
        bump(&self.upi_alerts, outcome);
    }

    /// A `unique_amount` create at `price`: how many of its `capacity` slots are now in use.
    pub fn slot_usage(
        &self,
        method: &str,
        livemode: bool,
        price: u128,
        in_use: usize,
        freed: usize,
        (capacity, decimals): (u32, u32),
    ) {
        let Ok(mut m) = self.slots.lock() else {
            return;
        };
        let key = (method.to_owned(), livemode, price);
        if !m.contains_key(&key)
            && m.len() >= MAX_SLOT_PRICES
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, u)| u.at_ms)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(
            key,
            SlotUse {
                in_use,
                freed,
                capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
                decimals,
                at_ms: chrono::Utc::now().timestamp_millis(),
            },
        );
    }

    pub fn slots_exhausted(&self, method: &str) {
        bump(&self.slots_exhausted, method);
    }

    pub fn slot_reused(&self) {
        self.slots_reused.fetch_add(1, Relaxed);
    }

    pub fn session_read(&self) {
        self.session_reads.fetch_add(1, Relaxed);
    }

    /// Capacity use per (method, livemode, price), busiest first (the console's table).
    pub fn slot_rows(&self) -> Vec<((String, bool, u128), SlotUse)> {
        let mut rows: Vec<_> = self
            .slots
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        rows.sort_by_key(|(_, u)| std::cmp::Reverse((u.in_use * 1000) / u.capacity.max(1)));
        rows
    }

    /// The counters in Prometheus text format; `extra` is appended (gauges read at scrape time).
    pub fn render(&self, extra: &str) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP paywatch_http_requests_total HTTP requests by route group and status class.\n# TYPE paywatch_http_requests_total counter\n");
        for (r, row) in self.requests.iter().enumerate() {
            for (c, n) in row.iter().enumerate() {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "paywatch_http_requests_total{{route=\"{}\",status=\"{}\"}} {n}",
                        ROUTES[r], CLASSES[c]
                    );
                }
            }
        }
        out.push_str("# HELP paywatch_webhook_deliveries_total Webhook delivery attempts by result.\n# TYPE paywatch_webhook_deliveries_total counter\n");
        let _ = writeln!(
            out,
            "paywatch_webhook_deliveries_total{{result=\"ok\"}} {}\npaywatch_webhook_deliveries_total{{result=\"failed\"}} {}",
            self.deliveries_ok.load(Relaxed),
            self.deliveries_failed_attempts.load(Relaxed)
        );
        out.push_str("# HELP paywatch_webhook_deliveries_given_up_total Deliveries that exhausted their retries.\n# TYPE paywatch_webhook_deliveries_given_up_total counter\n");
        let _ = writeln!(
            out,
            "paywatch_webhook_deliveries_given_up_total {}",
            self.deliveries_given_up.load(Relaxed)
        );
        out.push_str("# HELP paywatch_webhook_delivery_seconds Webhook delivery attempt latency.\n# TYPE paywatch_webhook_delivery_seconds histogram\n");
        for (i, b) in LATENCY_BUCKETS_MS.iter().enumerate() {
            let _ = writeln!(
                out,
                "paywatch_webhook_delivery_seconds_bucket{{le=\"{}\"}} {}",
                *b as f64 / 1000.0,
                self.latency_buckets[i].load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            out,
            "paywatch_webhook_delivery_seconds_bucket{{le=\"+Inf\"}} {count}\npaywatch_webhook_delivery_seconds_sum {}\npaywatch_webhook_delivery_seconds_count {count}",
            self.latency_sum_ms.load(Relaxed) as f64 / 1000.0
        );
        for (name, help, label, map) in [
            (
                "paywatch_payments_total",
                "Payments recorded, by method.",
                "method",
                &self.payments,
            ),
            (
                "paywatch_session_events_total",
                "Session state changes, by event type.",
                "type",
                &self.session_events,
            ),
            (
                "paywatch_upi_alerts_total",
                "UPI alerts received, by outcome.",
                "outcome",
                &self.upi_alerts,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            if let Ok(m) = map.lock() {
                for (k, n) in m.iter() {
                    let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(k));
                }
            }
        }
        for (name, help, pick) in [
            (
                "paywatch_payment_slots_capacity",
                "Payable amounts one price may use (the method's window), by price in base units.",
                (|u: &SlotUse| u.capacity) as fn(&SlotUse) -> usize,
            ),
            (
                "paywatch_payment_slots_in_use",
                "Slots of a price held by awaiting sessions or paid ones in their grace, at its last checkout.",
                |u: &SlotUse| u.in_use,
            ),
            (
                "paywatch_payment_slots_freed",
                "Slots of a price freed by sessions that ended with nothing received (reusable), at its last checkout.",
                |u: &SlotUse| u.freed,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for ((method, live, price), u) in self.slot_rows() {
                let _ = writeln!(
                    out,
                    "{name}{{method=\"{}\",livemode=\"{live}\",price=\"{price}\"}} {}",
                    escape(&method),
                    pick(&u)
                );
            }
        }
        out.push_str("# HELP paywatch_payment_slots_exhausted_total Session creates refused with 503 for want of a free slot, by method.\n# TYPE paywatch_payment_slots_exhausted_total counter\n");
        if let Ok(m) = self.slots_exhausted.lock() {
            for (k, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "paywatch_payment_slots_exhausted_total{{method=\"{}\"}} {n}",
                    escape(k)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP paywatch_payment_slots_reused_total Slots handed to a new session while a previous session's grace still ran.\n# TYPE paywatch_payment_slots_reused_total counter\npaywatch_payment_slots_reused_total {}",
            self.slots_reused.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP paywatch_store_session_reads_total Sessions read from the store, by anyone (idle status streams add none).\n# TYPE paywatch_store_session_reads_total counter\npaywatch_store_session_reads_total {}",
            self.session_reads.load(Relaxed)
        );
        out.push_str(extra);
        out
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_grouped_and_rendered() {
        let m = Metrics::new();
        m.request(Metrics::route_of("/v1/checkout/sessions/cs_1", false), 201);
        m.request(Metrics::route_of("/c/cs_1", false), 404);
        m.request(Metrics::route_of("/v1/keys", true), 200);
        m.delivery(true, false, 30);
        m.payment("usdt \"x\"");
        let text = m.render("");
        assert!(text.contains("paywatch_http_requests_total{route=\"sessions\",status=\"2xx\"} 1"));
        assert!(text.contains("paywatch_http_requests_total{route=\"page\",status=\"4xx\"} 1"));
        assert!(text.contains("paywatch_http_requests_total{route=\"admin\",status=\"2xx\"} 1"));
        assert!(text.contains("paywatch_webhook_delivery_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("paywatch_webhook_delivery_seconds_bucket{le=\"0.01\"} 0"));
        assert!(text.contains("paywatch_payments_total{method=\"usdt \\\"x\\\"\"} 1"));
    }
}
