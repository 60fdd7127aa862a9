//! An optional WebSocket subscription to new heads (`ws_url`): a wake-up, so a payment is seen as
//! soon as its block is announced instead of at the next poll. The poll over HTTP stays the
//! source of truth for logs, confirmations and reorgs; a lost subscription only costs latency.

use std::sync::Arc;
use std::time::Duration;

use alloy::providers::{Provider, RootProvider, WsConnect};
use alloy::rpc::client::RpcClient;
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};

use super::status::ChainStatuses;
use crate::redact::redact_url as redact;

/// Follows new heads on `url`, waking the chain's poll on each; reconnects with backoff.
pub async fn run(
    name: String,
    url: String,
    wake: Arc<Notify>,
    statuses: ChainStatuses,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let result = follow(&name, &url, &wake, &statuses, &mut stop).await;
        statuses.update(&name, |s| s.ws_connected = false);
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(chain = %name, url = %redact(&url), error = %crate::redact::redact_text(&e), retry_in = ?backoff, "new-heads subscription lost; polling continues");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// One connection: `Ok` when asked to stop, `Err` when the subscription failed or ended.
async fn follow(
    name: &str,
    url: &str,
    wake: &Notify,
    statuses: &ChainStatuses,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        RpcClient::connect_pubsub(WsConnect::new(url)),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let provider: RootProvider = RootProvider::new(client);
    let sub = provider
        .subscribe_blocks()
        .await
        .map_err(|e| e.to_string())?;
    statuses.update(name, |s| s.ws_connected = true);
    let mut heads = sub.into_stream();
    loop {
        tokio::select! {
            head = heads.next() => match head {
                Some(_) => wake.notify_one(),
                None => return Err("the node ended the subscription".into()),
            },
            _ = stop.changed() => {
                if *stop.borrow() {
                    return Ok(());
                }
            }
        }
    }
}
