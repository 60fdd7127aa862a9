//! JSON-RPC to a chain over several URLs, spoken directly over HTTP so that what a provider
//! says in its status line and headers is read: a rate limit (429, `Retry-After`, TronGrid's
//! "exceed the frequency limit") rests that URL for the time asked and hands over to the next,
//! and is never mistaken for a log range the node refuses (which is split until accepted). A
//! URL that answers for another chain is never used. Each URL carries its own headers (a
//! provider's API key), which are never logged.

use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U64};
use alloy::rpc::types::{Filter, Log, TransactionReceipt};
use serde_json::{Value, json};
use thiserror::Error;

use crate::config::RpcHeader;
use crate::redact::{redact_text, redact_url as redact};

/// Why a call failed on every URL.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RpcError {
    #[error("every RPC URL failed; last: {0}")]
    AllDown(String),
    #[error("{url} serves chain id {got}, not {want}")]
    WrongChain { url: String, got: u64, want: u64 },
    /// Every usable URL is resting after a rate limit; nothing was sent.
    #[error("every RPC URL is rate-limited; next try in {0:?}")]
    RateLimited(Duration),
    /// The node refused the log query's size (the query's fault, not the URL's).
    #[error("the node refused the log range: {0}")]
    Range(String),
    /// Every URL answered the call with a JSON-RPC error (the node is up; the call is not
    /// served, e.g. a block tag it does not know).
    #[error("every RPC URL refused the call; last: {0}")]
    Refused(String),
}

/// Longest a `Retry-After` is honoured (a misconfigured provider must not silence a chain for
/// a day); longest rest after repeated failures.
const MAX_REST: Duration = Duration::from_secs(600);
const MAX_FAILURE_REST: Duration = Duration::from_secs(60);
/// How much of an error body is kept for the status page.
const BODY_EXCERPT: usize = 200;

/// What one URL is doing, for logs (on change only) and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UrlState {
    Up,
    RateLimited,
    Failing,
    WrongChain,
}

/// One RPC URL and what is known of it.
struct Endpoint {
    url: String,
    /// Carries the URL's headers as defaults (marked sensitive).
    client: reqwest::Client,
    /// The chain id was checked and matched.
    verified: bool,
    state: UrlState,
    /// Not asked again before this (a rate limit's `Retry-After`, or a failure's backoff).
    resting_until: Option<Instant>,
    /// Consecutive failures or rate limits, for the backoff.
    strikes: u32,
}

/// One URL's state as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UrlStatus {
    /// Credentials hidden.
    pub url: String,
    pub state: UrlState,
}

/// Why one request to one URL failed.
#[derive(Debug)]
enum CallError {
    /// A rate limit: rest the URL (`Retry-After` when the provider gave one).
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// The query is too big for the node.
    Range(String),
    /// A JSON-RPC error answer: the URL works, the call is not served.
    Refused(String),
    /// Anything else: the URL is failing (down, broken, lagging).
    Other(String),
}

/// The RPC URLs of one chain, tried in order from the one that last worked.
pub struct ChainRpc {
    chain_id: u64,
    endpoints: Vec<Endpoint>,
    current: usize,
    /// Failed calls (rate limits included), requests sent, rate limits met, and the last error.
    pub errors: u64,
    pub requests: u64,
    pub rate_limited: u64,
    pub last_error: Option<String>,
}

/// What a provider says when it rate-limits (checked before the range phrases: TronGrid's
/// "exceed the frequency limit" contains "exceed").
fn is_rate_limit(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "frequency limit",
        "rate limit",
        "ratelimit",
        "rate exceeded",
        "too many requests",
        "request limit",
        "compute units per second",
        "throughput",
        "capacity exceeded",
        "quota",
        "daily limit",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// What a node says when a log query spans too much (wording differs per client and provider).
fn is_range_error(message: &str) -> bool {
    if is_rate_limit(message) {
        return false;
    }
    let m = message.to_ascii_lowercase();
    [
        "range",
        "too many",
        "limit exceeded",
        "more than",
        "too large",
        "response size",
        "exceed",
        "-32005",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// `Retry-After` as seconds or an HTTP date, capped.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            let ms = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
            Duration::from_millis(u64::try_from(ms).unwrap_or(0))
        }
    };
    Some(d.min(MAX_REST))
}

/// A transport error with its causes ("error sending request: … connection refused"), without
/// the URL (it may carry a key).
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    redact_text(&text)
}

/// The first characters of a body, for an error message.
fn excerpt(body: &str) -> String {
    body.chars().take(BODY_EXCERPT).collect()
}

impl ChainRpc {
    /// Builds the clients (each URL with its `headers`); nothing is contacted yet.
    pub fn new(
        chain_id: u64,
        urls: &[String],
        headers: &[RpcHeader],
        timeout: Duration,
    ) -> Result<ChainRpc, String> {
        let mut endpoints = Vec::with_capacity(urls.len());
        for u in urls {
            let _: reqwest::Url = u.parse().map_err(|e| format!("{}: {e}", redact(u)))?;
            let mut defaults = reqwest::header::HeaderMap::new();
            for h in headers.iter().filter(|h| &h.url == u) {
                let name = reqwest::header::HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| format!("{}: invalid header name {:?}", redact(u), h.name))?;
                let mut value = reqwest::header::HeaderValue::from_str(&h.value.0)
                    .map_err(|_| format!("{}: invalid value for header {}", redact(u), h.name))?;
                value.set_sensitive(true);
                defaults.insert(name, value);
            }
            let client = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .default_headers(defaults)
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
            endpoints.push(Endpoint {
                url: u.clone(),
                client,
                verified: false,
                state: UrlState::Up,
                resting_until: None,
                strikes: 0,
            });
        }
        Ok(ChainRpc {
            chain_id,
            endpoints,
            current: 0,
            errors: 0,
            requests: 0,
            rate_limited: 0,
            last_error: None,
        })
    }

    /// The URL calls go to first, for status pages (credentials in it are not shown).
    pub fn current_url(&self) -> String {
        self.endpoints
            .get(self.current)
            .map(|e| redact(&e.url))
            .unwrap_or_default()
    }

    /// Index of the URL calls go to first.
    pub fn current_index(&self) -> usize {
        self.current
    }

    /// Makes the next call start at the URL after `i` (the second opinion disagreed with `i`).
    pub fn prefer_other_than(&mut self, i: usize) {
        if self.endpoints.len() > 1 && self.current == i {
            self.current = (i + 1) % self.endpoints.len();
        }
    }

    /// Number of URLs.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether no URL is configured.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Every URL's state (credentials hidden).
    pub fn url_states(&self) -> Vec<UrlStatus> {
        self.endpoints
            .iter()
            .map(|e| UrlStatus {
                url: redact(&e.url),
                state: e.state,
            })
            .collect()
    }

    /// Sets URL `i`'s state, logging only when it changes: a URL down for an hour is two
    /// lines (down, back), not one per poll.
    fn set_state(&mut self, i: usize, state: UrlState, why: &str) {
        let old = self.endpoints[i].state;
        self.endpoints[i].state = state;
        if old == state {
            tracing::debug!(chain_id = self.chain_id, url = %redact(&self.endpoints[i].url), ?state, error = %why, "RPC URL still not answering");
            return;
        }
        let url = redact(&self.endpoints[i].url);
        match state {
            UrlState::Up => {
                tracing::info!(chain_id = self.chain_id, %url, "RPC URL answering again")
            }
            UrlState::RateLimited => {
                tracing::warn!(chain_id = self.chain_id, %url, reason = %why, "RPC call failed: the URL is rate-limited; it rests, the other URLs carry on")
            }
            UrlState::Failing | UrlState::WrongChain => {
                tracing::warn!(chain_id = self.chain_id, %url, error = %why, "RPC call failed: the URL rests, the other URLs carry on")
            }
        }
    }

    /// Counts and records a failure; its text is redacted (client errors quote the full URL).
    fn note_error(&mut self, url: &str, e: &str) {
        self.errors += 1;
        self.last_error = Some(format!("{}: {}", redact(url), redact_text(e)));
    }

    /// Rests URL `i` after a failure or a rate limit: `retry_after` when the provider said,
    /// else 1 s doubling per consecutive strike (up to a minute).
    fn rest(&mut self, i: usize, retry_after: Option<Duration>) {
        let e = &mut self.endpoints[i];
        e.strikes = e.strikes.saturating_add(1);
        let backoff =
            Duration::from_secs(1u64 << e.strikes.saturating_sub(1).min(6)).min(MAX_FAILURE_REST);
        e.resting_until = Some(Instant::now() + retry_after.unwrap_or(backoff));
    }

    /// One JSON-RPC request to URL `i`.
    async fn call_one(
        &mut self,
        i: usize,
        method: &str,
        params: &Value,
    ) -> Result<Value, CallError> {
        self.requests += 1;
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let e = &self.endpoints[i];
        let resp = e
            .client
            .post(&e.url)
            .json(&body)
            .send()
            .await
            .map_err(|err| CallError::Other(describe(err)))?;
        let status = resp.status();
        let after = retry_after(resp.headers());
        let text = resp
            .text()
            .await
            .map_err(|err| CallError::Other(describe(err)))?;
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || (after.is_some() && status == reqwest::StatusCode::SERVICE_UNAVAILABLE)
            || (!status.is_success() && is_rate_limit(&text))
        {
            return Err(CallError::RateLimited {
                retry_after: after,
                message: format!("HTTP {}: {}", status.as_u16(), excerpt(&text)),
            });
        }
        let v: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) if !status.is_success() => {
                return Err(CallError::Other(format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    excerpt(&text)
                )));
            }
            Err(err) => return Err(CallError::Other(format!("not JSON-RPC: {err}"))),
        };
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let message = match err.get("message").and_then(Value::as_str) {
                Some(m) => format!(
                    "error code {}: {m}",
                    err.get("code").map(Value::to_string).unwrap_or_default()
                ),
                None => err.to_string(),
            };
            if is_rate_limit(&message) {
                return Err(CallError::RateLimited {
                    retry_after: after,
                    message,
                });
            }
            if is_range_error(&message) {
                return Err(CallError::Range(message));
            }
            return Err(CallError::Refused(message));
        }
        if !status.is_success() {
            return Err(CallError::Other(format!(
                "HTTP {}: {}",
                status.as_u16(),
                excerpt(&text)
            )));
        }
        match v.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(CallError::Other("a JSON-RPC answer without result".into())),
        }
    }

    /// Handles a failed call on URL `i`: rests it, counts it, and says whether failover goes on
    /// (a range refusal stops it: another URL would refuse the same query).
    fn failed(&mut self, i: usize, e: CallError) -> Result<String, RpcError> {
        let url = self.endpoints[i].url.clone();
        match e {
            CallError::RateLimited {
                retry_after,
                message,
            } => {
                self.rate_limited += 1;
                self.note_error(&url, &message);
                self.rest(i, retry_after);
                self.set_state(i, UrlState::RateLimited, &redact_text(&message));
                Ok(redact_text(&message))
            }
            CallError::Range(m) => Err(RpcError::Range(redact_text(&m))),
            CallError::Refused(m) => {
                // The URL answered: no rest, but the next URL may serve the call.
                self.note_error(&url, &m);
                Ok(redact_text(&m))
            }
            CallError::Other(m) => {
                self.note_error(&url, &m);
                self.rest(i, None);
                // Re-check the chain id next time: the URL may now point elsewhere.
                self.endpoints[i].verified = false;
                self.set_state(i, UrlState::Failing, &redact_text(&m));
                Ok(redact_text(&m))
            }
        }
    }

    /// Runs `method` on the current URL, then on each other one not resting, until one
    /// answers. A URL is first checked to serve the configured chain id.
    async fn with_failover(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.with_failover_from(None, method, params).await
    }

    /// As `with_failover`, but never on URL `skip` (the second opinion asks another provider).
    async fn with_failover_from(
        &mut self,
        skip: Option<usize>,
        method: &str,
        params: Value,
    ) -> Result<Value, RpcError> {
        let n = self.endpoints.len();
        let mut last: Option<String> = None;
        let mut soonest: Option<Instant> = None;
        // Every URL asked answered with a JSON-RPC error.
        let mut refused = 0usize;
        let mut asked = 0usize;
        for step in 0..n {
            let i = (self.current + step) % n;
            if Some(i) == skip || self.endpoints[i].state == UrlState::WrongChain {
                continue;
            }
            let now = Instant::now();
            if let Some(until) = self.endpoints[i].resting_until.filter(|u| *u > now) {
                soonest = Some(soonest.map_or(until, |s| s.min(until)));
                continue;
            }
            if !self.endpoints[i].verified {
                match self.call_one(i, "eth_chainId", &json!([])).await {
                    Ok(v) => match serde_json::from_value::<U64>(v) {
                        Ok(id) if id.to::<u64>() == self.chain_id => {
                            self.endpoints[i].verified = true
                        }
                        Ok(id) => {
                            let url = self.endpoints[i].url.clone();
                            let e = RpcError::WrongChain {
                                url: redact(&url),
                                got: id.to::<u64>(),
                                want: self.chain_id,
                            };
                            self.note_error(&url, &e.to_string());
                            self.set_state(i, UrlState::WrongChain, &e.to_string());
                            if n == 1 {
                                return Err(e);
                            }
                            last = Some(e.to_string());
                            continue;
                        }
                        Err(e) => {
                            last = Some(
                                self.failed(i, CallError::Other(format!("eth_chainId: {e}")))?,
                            );
                            continue;
                        }
                    },
                    Err(e) => {
                        last = Some(self.failed(i, e)?);
                        continue;
                    }
                }
            }
            asked += 1;
            match self.call_one(i, method, &params).await {
                Err(CallError::Refused(m)) => {
                    refused += 1;
                    last = Some(self.failed(i, CallError::Refused(m))?);
                }
                Ok(v) => {
                    self.current = i;
                    self.endpoints[i].strikes = 0;
                    self.endpoints[i].resting_until = None;
                    if self.endpoints[i].state != UrlState::Up {
                        self.set_state(i, UrlState::Up, "");
                    }
                    return Ok(v);
                }
                Err(e) => last = Some(self.failed(i, e)?),
            }
        }
        if asked > 0 && refused == asked {
            return Err(RpcError::Refused(last.unwrap_or_default()));
        }
        // Rate-limited only when no URL is failing: then the chain is merely slowed down.
        let usable = || {
            self.endpoints
                .iter()
                .enumerate()
                .filter(|(i, e)| Some(*i) != skip && e.state != UrlState::WrongChain)
        };
        if usable().count() > 0 && usable().all(|(_, e)| e.state == UrlState::RateLimited) {
            let now = Instant::now();
            let next = usable()
                .filter_map(|(_, e)| e.resting_until)
                .chain(soonest)
                .min()
                .map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
            return Err(RpcError::RateLimited(next));
        }
        Err(RpcError::AllDown(last.unwrap_or_else(|| {
            "every RPC URL is resting after failures".into()
        })))
    }

    /// A hex quantity from a result.
    fn quantity(v: Value, what: &str) -> Result<u64, RpcError> {
        serde_json::from_value::<U64>(v)
            .map(|n| n.to::<u64>())
            .map_err(|e| RpcError::AllDown(format!("{what}: {e}")))
    }

    pub async fn head(&mut self) -> Result<u64, RpcError> {
        let v = self.with_failover("eth_blockNumber", json!([])).await?;
        Self::quantity(v, "eth_blockNumber")
    }

    /// The number of the block the chain's `finalized` tag names; `Ok(None)` when the node does
    /// not serve the tag (it answers with an error or no block).
    pub async fn finalized(&mut self) -> Result<Option<u64>, RpcError> {
        match self
            .with_failover("eth_getBlockByNumber", json!(["finalized", false]))
            .await
        {
            Ok(Value::Null) => Ok(None),
            Ok(b) => match b.get("number") {
                Some(n) => Self::quantity(n.clone(), "finalized block").map(Some),
                None => Ok(None),
            },
            // A node that refuses the tag answered: fall back to confirmations.
            Err(RpcError::Range(_) | RpcError::Refused(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Block timestamp (Unix seconds) of block `n`, for logs whose node leaves it out.
    pub async fn block_time(&mut self, n: u64) -> Result<Option<u64>, RpcError> {
        let v = self
            .with_failover("eth_getBlockByNumber", json!([format!("{n:#x}"), false]))
            .await?;
        match v.get("timestamp") {
            Some(t) => Self::quantity(t.clone(), "block timestamp").map(Some),
            None => Ok(None),
        }
    }

    pub async fn receipt(&mut self, tx: B256) -> Result<Option<TransactionReceipt>, RpcError> {
        self.receipt_from(None, tx).await
    }

    /// The receipt of `tx` from any URL but `skip`.
    pub async fn receipt_from(
        &mut self,
        skip: Option<usize>,
        tx: B256,
    ) -> Result<Option<TransactionReceipt>, RpcError> {
        let v = self
            .with_failover_from(skip, "eth_getTransactionReceipt", json!([tx]))
            .await?;
        serde_json::from_value(v).map_err(|e| RpcError::AllDown(format!("receipt: {e}")))
    }

    /// `Transfer` logs of `token` in `[from, to]` (to the `recipients` when given), split in
    /// halves while the node refuses the range. Returns the logs and, when the range had to be
    /// split, the span that was accepted, so the caller can remember it.
    pub async fn transfer_logs(
        &mut self,
        token: Address,
        recipients: Option<&[B256]>,
        from: u64,
        to: u64,
    ) -> Result<(Vec<Log>, Option<u64>), RpcError> {
        let mut out = Vec::new();
        let mut pending = vec![(from, to)];
        let mut accepted: Option<u64> = None;
        while let Some((a, b)) = pending.pop() {
            let mut filter = Filter::new()
                .address(token)
                .event_signature(super::decode::TRANSFER_TOPIC)
                .from_block(a)
                .to_block(b);
            if let Some(r) = recipients {
                filter = filter.topic2(r.to_vec());
            }
            let params = json!([filter]);
            match self.with_failover("eth_getLogs", params).await {
                Ok(v) => {
                    let logs: Vec<Log> = serde_json::from_value(v)
                        .map_err(|e| RpcError::AllDown(format!("eth_getLogs: {e}")))?;
                    out.extend(logs);
                }
                Err(RpcError::Range(_)) if b > a => {
                    let mid = a + (b - a) / 2;
                    let half = mid - a + 1;
                    accepted = Some(accepted.map_or(half, |x| x.min(half)));
                    // Later half pushed first: the earlier half is fetched first.
                    pending.push((mid + 1, b));
                    pending.push((a, mid));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((out, accepted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_errors_are_recognised() {
        for m in [
            "query returned more than 10000 results",
            "block range is too large",
            "exceed maximum block range: 5000",
            "Log response size exceeded",
            "server returned an error response: error code -32005: limit exceeded",
        ] {
            assert!(is_range_error(m), "{m}");
            assert!(!is_rate_limit(m), "{m}");
        }
        assert!(!is_range_error("connection refused"));
    }

    #[test]
    fn rate_limits_are_not_range_errors() {
        for m in [
            "The key exceeds the frequency limit(15), and the query server is suspended for 1s",
            "exceed the frequency limit",
            "Too Many Requests",
            "project ID request rate exceeded",
            "Your app has exceeded its compute units per second capacity",
            "error code -32005: rate limit exceeded",
        ] {
            assert!(is_rate_limit(m), "{m}");
            assert!(!is_range_error(m), "{m}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(reqwest::header::RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_REST));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        h.insert(reqwest::header::RETRY_AFTER, soon.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
