//! What each chain watcher last saw, shared with `/readyz`, `/metrics` and the console: a
//! stalled watcher or a chain whose RPCs are all down is reported, not silent.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// One chain watcher's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChainStatus {
    pub name: String,
    pub chain_id: u64,
    pub token: String,
    /// The chain's head at the last successful poll.
    pub head: u64,
    /// Every block up to here has been processed as final.
    pub checkpoint: u64,
    /// When a poll last succeeded (ms since the epoch; 0 = never).
    pub last_ok_ms: i64,
    pub poll_interval_ms: u64,
    /// The URL in use (credentials hidden).
    pub rpc_url: String,
    pub rpc_errors: u64,
    pub last_error: Option<String>,
    /// The last poll failed on every RPC URL.
    pub rpc_down: bool,
    pub logs_seen: u64,
    pub payments_matched: u64,
    pub payments_reverted: u64,
    /// A `ws_url` new-heads subscription is live (false when none is configured).
    pub ws_connected: bool,
    /// `ok`, `rate_limited`, `down`, `wrong_chain`, `disagreement` (second opinion) or
    /// `failing` (storage, a malformed answer): the last poll's outcome.
    pub state: String,
    /// Every usable URL was resting after a rate limit at the last poll (not down: polls resume
    /// when the provider allows).
    pub rate_limited: bool,
    /// Requests sent and rate limits met since start.
    pub rpc_requests: u64,
    pub rpc_rate_limited: u64,
    /// Each URL's state (credentials hidden).
    pub urls: Vec<super::rpc::UrlStatus>,
    /// `finalized` or `confirmations`, and the finalized block the node last named.
    pub finality: String,
    pub finalized_block: Option<u64>,
    /// No session awaits payment: polled at the idle interval.
    pub idle: bool,
    pub second_opinion: bool,
    /// Transfers a second provider did not confirm.
    pub second_opinion_refused: u64,
    /// Blocks per `eth_getLogs` now (smaller than `max_log_range` once a node refused a range).
    pub log_span: u64,
}

impl ChainStatus {
    /// Blocks between the head and the final checkpoint.
    pub fn lag(&self) -> u64 {
        self.head.saturating_sub(self.checkpoint)
    }

    /// Whether the watcher is keeping up: polled successfully within a few intervals (at least
    /// 30 s, so one slow RPC answer or a rate limit does not flap readiness), and its providers
    /// do not disagree on a transfer.
    pub fn progressing(&self, now_ms: i64) -> bool {
        let allowed = (self.poll_interval_ms.saturating_mul(5)).max(30_000);
        !self.rpc_down
            && self.state != "disagreement"
            && self.last_ok_ms > 0
            && now_ms.saturating_sub(self.last_ok_ms) <= i64::try_from(allowed).unwrap_or(i64::MAX)
    }
}

/// Every chain's status, by config name.
#[derive(Debug, Clone, Default)]
pub struct ChainStatuses(Arc<RwLock<BTreeMap<String, ChainStatus>>>);

impl ChainStatuses {
    pub fn update(&self, name: &str, f: impl FnOnce(&mut ChainStatus)) {
        if let Ok(mut map) = self.0.write() {
            f(map.entry(name.to_owned()).or_default());
        }
    }

    pub fn snapshot(&self) -> Vec<ChainStatus> {
        self.0
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progressing_needs_a_recent_successful_poll() {
        let mut s = ChainStatus {
            poll_interval_ms: 1000,
            ..Default::default()
        };
        assert!(!s.progressing(100_000), "never polled");
        s.last_ok_ms = 90_000;
        assert!(s.progressing(100_000));
        assert!(!s.progressing(121_000), "31 s without a successful poll");
        s.rpc_down = true;
        assert!(!s.progressing(90_001));
    }
}
