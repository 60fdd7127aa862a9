//! `/readyz` and `/metrics`: whether the daemon can do its job now, and what it has done.

use std::fmt::Write as _;

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::{AppState, Response, json_response};
use crate::metrics::{METRICS, escape};
use crate::redact::redact_text;

/// A delivery due longer ago than this means the notifier is not draining the outbox.
const OUTBOX_STUCK_MS: i64 = 10 * 60 * 1000;

/// The public `/readyz`: ready or not, and which check fails, never error text (RPC errors
/// quote URLs, whose path or query often carries the provider's key).
pub fn readyz(state: &AppState) -> Response {
    readiness(state, false)
}

/// The operator listener's `/readyz`: the same verdicts with the reasons, URLs redacted.
pub fn operator_readyz(state: &AppState) -> Response {
    readiness(state, true)
}

/// Ready when storage answers, the outbox drains, and every chain watcher is progressing; 503
/// with the failing checks otherwise (a load balancer or systemd probe reads the status code).
fn readiness(state: &AppState, detail: bool) -> Response {
    let now = chrono::Utc::now().timestamp_millis();
    let mut ready = true;
    let mut checks = Map::new();
    match state.store.next_delivery_ms() {
        Ok(due) => {
            checks.insert("storage".into(), json!("ok"));
            let stuck = due.is_some_and(|d| now.saturating_sub(d) > OUTBOX_STUCK_MS);
            if stuck {
                ready = false;
                checks.insert(
                    "outbox".into(),
                    json!("stuck: a delivery has been due for over 10 minutes"),
                );
            } else {
                checks.insert("outbox".into(), json!("ok"));
            }
        }
        Err(e) => {
            ready = false;
            let verdict = if detail {
                format!("failing: {}", redact_text(&e.to_string()))
            } else {
                "failing".to_owned()
            };
            checks.insert("storage".into(), json!(verdict));
        }
    }
    let mut chains = Map::new();
    for c in state.chains.snapshot() {
        let verdict = if c.progressing(now) {
            "ok".to_owned()
        } else if c.rpc_down || c.rate_limited || c.state == "disagreement" {
            ready = false;
            let what = match c.state.as_str() {
                "rate_limited" => "RPC rate-limited",
                "disagreement" => "second opinion disagrees",
                _ => "RPC down",
            };
            if detail {
                format!(
                    "{what}: {}",
                    redact_text(c.last_error.as_deref().unwrap_or("no answer"))
                )
            } else {
                what.to_owned()
            }
        } else {
            ready = false;
            "stalled: no successful poll recently".to_owned()
        };
        chains.insert(c.name.clone(), Value::from(verdict));
    }
    checks.insert("chains".into(), Value::Object(chains));
    let body = json!({"status": if ready { "ready" } else { "unready" }, "checks": checks});
    json_response(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// Prometheus text format: the process counters plus gauges read now (chains, outbox).
pub fn metrics(state: &AppState) -> Response {
    let now = chrono::Utc::now().timestamp_millis();
    let mut g = String::new();
    let oldest_due = state
        .store
        .next_delivery_ms()
        .ok()
        .flatten()
        .map_or(0.0, |d| (now.saturating_sub(d).max(0)) as f64 / 1000.0);
    let _ = writeln!(
        g,
        "# HELP paywatch_outbox_oldest_due_seconds How overdue the oldest queued webhook delivery is (0 = none overdue).\n# TYPE paywatch_outbox_oldest_due_seconds gauge\npaywatch_outbox_oldest_due_seconds {oldest_due}"
    );
    if let Ok(depth) = state.store.outbox_depth() {
        let _ = writeln!(
            g,
            "# HELP paywatch_outbox_depth Webhook deliveries waiting in the outbox.\n# TYPE paywatch_outbox_depth gauge\npaywatch_outbox_depth {depth}"
        );
    }
    let chains = state.chains.snapshot();
    for (name, help, kind) in [
        (
            "paywatch_chain_head_block",
            "The chain head at the last successful poll.",
            "gauge",
        ),
        (
            "paywatch_chain_checkpoint_block",
            "The last block processed as final.",
            "gauge",
        ),
        (
            "paywatch_chain_lag_blocks",
            "Blocks between the head and the final checkpoint.",
            "gauge",
        ),
        (
            "paywatch_chain_rpc_up",
            "1 when the last poll reached an RPC URL.",
            "gauge",
        ),
        (
            "paywatch_chain_rpc_errors_total",
            "Failed RPC calls.",
            "counter",
        ),
        (
            "paywatch_chain_logs_total",
            "Transfer logs to watched addresses.",
            "counter",
        ),
        (
            "paywatch_chain_payments_reverted_total",
            "Payments reverted by reorgs.",
            "counter",
        ),
        (
            "paywatch_chain_rpc_requests_total",
            "JSON-RPC requests sent (the provider's budget).",
            "counter",
        ),
        (
            "paywatch_chain_rpc_rate_limited_total",
            "Rate-limit answers (429, Retry-After, a provider's limit text).",
            "counter",
        ),
        (
            "paywatch_chain_rpc_rate_limited",
            "1 when every RPC URL is resting after a rate limit.",
            "gauge",
        ),
        (
            "paywatch_chain_idle",
            "1 when no session awaits payment and the chain polls at its idle interval.",
            "gauge",
        ),
        (
            "paywatch_chain_finalized_block",
            "The block the chain's finalized tag named at the last poll (0 = not served).",
            "gauge",
        ),
        (
            "paywatch_chain_log_span_blocks",
            "Blocks per eth_getLogs now (below max_log_range once a node refused a range).",
            "gauge",
        ),
        (
            "paywatch_chain_second_opinion_refused_total",
            "Transfers not counted because a second RPC URL did not return them.",
            "counter",
        ),
    ] {
        let _ = writeln!(g, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for c in &chains {
            let v = match name {
                "paywatch_chain_head_block" => c.head,
                "paywatch_chain_checkpoint_block" => c.checkpoint,
                "paywatch_chain_lag_blocks" => c.lag(),
                "paywatch_chain_rpc_up" => u64::from(c.progressing(now)),
                "paywatch_chain_rpc_errors_total" => c.rpc_errors,
                "paywatch_chain_logs_total" => c.logs_seen,
                "paywatch_chain_rpc_requests_total" => c.rpc_requests,
                "paywatch_chain_rpc_rate_limited_total" => c.rpc_rate_limited,
                "paywatch_chain_rpc_rate_limited" => u64::from(c.rate_limited),
                "paywatch_chain_idle" => u64::from(c.idle),
                "paywatch_chain_finalized_block" => c.finalized_block.unwrap_or(0),
                "paywatch_chain_second_opinion_refused_total" => c.second_opinion_refused,
                "paywatch_chain_log_span_blocks" => c.log_span,
                _ => c.payments_reverted,
            };
            let _ = writeln!(g, "{name}{{chain=\"{}\"}} {v}", escape(&c.name));
        }
    }
    let _ = writeln!(
        g,
        "# HELP paywatch_chain_rpc_url_up 1 when the RPC URL answered its last call (0: failing, rate-limited or another chain).\n# TYPE paywatch_chain_rpc_url_up gauge"
    );
    for c in &chains {
        for u in &c.urls {
            let up = u64::from(u.state == crate::watch::evm::rpc::UrlState::Up);
            let _ = writeln!(
                g,
                "paywatch_chain_rpc_url_up{{chain=\"{}\",url=\"{}\"}} {up}",
                escape(&c.name),
                escape(&u.url)
            );
        }
    }
    let mut r = Response::new(METRICS.render(&g).into());
    if let Ok(v) = http::HeaderValue::from_str("text/plain; version=0.0.4; charset=utf-8") {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}
