//! JSON-RPC to a chain through alloy, over several URLs: a failing URL hands over to the next,
//! a URL that answers for another chain is never used, and a log range the node refuses is
//! split until it is accepted.

use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::{Filter, Log, TransactionReceipt};
use alloy::transports::http::reqwest;
use thiserror::Error;

use crate::redact::{redact_text, redact_url as redact};

/// Why a call failed on every URL.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RpcError {
    #[error("every RPC URL failed; last: {0}")]
    AllDown(String),
    #[error("{url} serves chain id {got}, not {want}")]
    WrongChain { url: String, got: u64, want: u64 },
}

/// One RPC URL and what is known of it.
struct Endpoint {
    url: String,
    provider: RootProvider,
    /// The chain id was checked and matched.
    verified: bool,
    /// Wrong chain: never used again until restart.
    refused: bool,
}

/// The RPC URLs of one chain, tried in order from the one that last worked.
pub struct ChainRpc {
    chain_id: u64,
    endpoints: Vec<Endpoint>,
    current: usize,
    /// Errors seen (for metrics), and the last one.
    pub errors: u64,
    pub last_error: Option<String>,
}

/// What a node says when a log query spans too much (wording differs per client and provider).
fn is_range_error(message: &str) -> bool {
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

impl ChainRpc {
    /// Builds the clients; nothing is contacted yet.
    pub fn new(chain_id: u64, urls: &[String], timeout: Duration) -> Result<ChainRpc, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut endpoints = Vec::with_capacity(urls.len());
        for u in urls {
            let url: reqwest::Url = u.parse().map_err(|e| format!("{}: {e}", redact(u)))?;
            let provider = RootProvider::new(RpcClient::new_http_with_client(client.clone(), url));
            endpoints.push(Endpoint {
                url: u.clone(),
                provider,
                verified: false,
                refused: false,
            });
        }
        Ok(ChainRpc {
            chain_id,
            endpoints,
            current: 0,
            errors: 0,
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

    /// Counts and records a failure; its text is redacted (client errors quote the full URL).
    fn note_error(&mut self, url: &str, e: &str) {
        self.errors += 1;
        let line = format!("{}: {}", redact(url), redact_text(e));
        tracing::warn!(chain_id = self.chain_id, error = %line, "RPC call failed");
        self.last_error = Some(line);
    }

    /// Runs `call` on the current URL, then on each other one, until one answers. A URL is
    /// first checked to serve the configured chain id.
    async fn with_failover<T, F, Fut>(&mut self, call: F) -> Result<T, RpcError>
    where
        F: Fn(RootProvider) -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let n = self.endpoints.len();
        let mut last = String::from("no usable RPC URL");
        for step in 0..n {
            let i = (self.current + step) % n;
            if self.endpoints[i].refused {
                continue;
            }
            let provider = self.endpoints[i].provider.clone();
            let url = self.endpoints[i].url.clone();
            if !self.endpoints[i].verified {
                match provider.get_chain_id().await {
                    Ok(id) if id == self.chain_id => self.endpoints[i].verified = true,
                    Ok(id) => {
                        let e = RpcError::WrongChain {
                            url: redact(&url),
                            got: id,
                            want: self.chain_id,
                        };
                        self.note_error(&url, &e.to_string());
                        self.endpoints[i].refused = true;
                        last = e.to_string();
                        continue;
                    }
                    Err(e) => {
                        last = redact_text(&e.to_string());
                        self.note_error(&url, &last);
                        continue;
                    }
                }
            }
            match call(provider).await {
                Ok(v) => {
                    self.current = i;
                    return Ok(v);
                }
                Err(e) => {
                    // A range refusal is the query's fault, not the URL's: report it as is.
                    if is_range_error(&e) {
                        return Err(RpcError::AllDown(redact_text(&e)));
                    }
                    self.note_error(&url, &e);
                    // Re-check the chain id next time: the URL may now point elsewhere.
                    self.endpoints[i].verified = false;
                    last = redact_text(&e);
                }
            }
        }
        Err(RpcError::AllDown(last))
    }

    pub async fn head(&mut self) -> Result<u64, RpcError> {
        self.with_failover(|p| async move { p.get_block_number().await.map_err(|e| e.to_string()) })
            .await
    }

    /// Block timestamp (Unix seconds) of block `n`, for logs whose node leaves it out.
    pub async fn block_time(&mut self, n: u64) -> Result<Option<u64>, RpcError> {
        self.with_failover(|p| async move {
            p.get_block_by_number(n.into())
                .await
                .map(|b| b.map(|b| b.header.timestamp))
                .map_err(|e| e.to_string())
        })
        .await
    }

    pub async fn receipt(&mut self, tx: B256) -> Result<Option<TransactionReceipt>, RpcError> {
        self.with_failover(|p| async move {
            p.get_transaction_receipt(tx)
                .await
                .map_err(|e| e.to_string())
        })
        .await
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
            let result = self
                .with_failover(|p| {
                    let filter = filter.clone();
                    async move { p.get_logs(&filter).await.map_err(|e| e.to_string()) }
                })
                .await;
            match result {
                Ok(logs) => out.extend(logs),
                Err(RpcError::AllDown(e)) if is_range_error(&e) && b > a => {
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
        }
        assert!(!is_range_error("connection refused"));
    }
}
