//! One task per chain: polls the head, fetches the token's `Transfer` logs from the durable
//! checkpoint to the head, and hands each transfer to a watched address to the matcher.
//!
//! Finality: a block with at least `confirmations` confirmations is final. Every poll re-reads
//! the logs of the blocks after the checkpoint (the unconfirmed window), so a payment whose log
//! is gone from the canonical chain is reverted, and one that reached its confirmations is
//! confirmed. The checkpoint moves only past blocks whose logs were all recorded as final, so
//! after a restart or an outage the watcher resumes there and misses nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::rpc::types::Log;
use tokio::sync::watch;

use super::decode::{address_topic, decode_transfer};
use super::rpc::{ChainRpc, RpcError};
use super::status::ChainStatuses;
use crate::config::{Chain, Merchant};
use crate::domain::address::{self, lower_hex};
use crate::domain::method::{Rail, Strategy, token_destination};
use crate::store::{MatchResult, Observed, Outcome, SharedStore, StoreError, WriteOp, write};

/// Up to this many watched addresses, logs are filtered by recipient at the node; beyond, every
/// transfer of the token is fetched and filtered here.
const TOPIC_FILTER_MAX: usize = 100;

/// How long one RPC call may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a poll stopped early (the next one retries from the durable checkpoint).
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the node returned a log without {0}")]
    Incomplete(&'static str),
}

/// Who owns a watched address: the merchant and method a transfer to it belongs to.
#[derive(Debug, Clone)]
struct Owner {
    merchant: String,
    method: String,
}

/// What the watcher knows of a log in the unconfirmed window.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// A payment waiting for confirmations (and the confirmations last recorded).
    Pending {
        payment_id: String,
        confirmations: u32,
    },
    /// Matched nothing and not final yet: nothing recorded until it is.
    Deferred,
    /// Recorded for good (a confirmed payment or an unmatched credit).
    Final,
}

/// One chain's watcher.
pub struct ChainWatcher {
    chain: Chain,
    store: SharedStore,
    rpc: ChainRpc,
    statuses: ChainStatuses,
    contract: Address,
    owners: HashMap<[u8; 20], Owner>,
    /// xpub methods on this chain: (xpub, owner, next index to load from the store).
    xpubs: Vec<(String, Owner, u32)>,
    /// Logs of the unconfirmed window: reference → (block, what is known).
    known: HashMap<String, (u64, Known)>,
    /// Block timestamps for nodes whose logs do not carry them.
    block_times: HashMap<u64, u64>,
    /// The span of blocks per `eth_getLogs` the node accepts.
    span: u64,
}

impl ChainWatcher {
    pub fn new(
        chain: Chain,
        merchants: &[Merchant],
        store: SharedStore,
        statuses: ChainStatuses,
    ) -> Result<ChainWatcher, String> {
        let rpc = ChainRpc::new(chain.chain_id, &chain.rpc_urls, RPC_TIMEOUT)?;
        let mut owners = HashMap::new();
        let mut xpubs = Vec::new();
        for m in merchants {
            for method in &m.methods {
                let Rail::Token { network, .. } = &method.rail else {
                    continue;
                };
                if *network != chain.name {
                    continue;
                }
                let owner = Owner {
                    merchant: m.id.clone(),
                    method: method.name.clone(),
                };
                let fixed: Vec<&String> = match &method.strategy {
                    Strategy::UniqueAmount { pay_to, .. } => vec![pay_to],
                    Strategy::AddressPool { addresses } => addresses.iter().collect(),
                    Strategy::Xpub { xpub } => {
                        xpubs.push((xpub.as_str().to_owned(), owner.clone(), 0));
                        vec![]
                    }
                };
                for a in fixed {
                    if let Ok(bytes) = address::parse(a, chain.tron) {
                        owners.insert(bytes, owner.clone());
                    }
                }
            }
        }
        statuses.update(&chain.name, |s| {
            s.name = chain.name.clone();
            s.chain_id = chain.chain_id;
            s.token = chain.token.clone();
            s.poll_interval_ms = chain.poll_interval_ms;
            s.rpc_url = rpc.current_url();
        });
        Ok(ChainWatcher {
            contract: Address::from(chain.contract),
            span: chain.max_log_range,
            chain,
            store,
            rpc,
            statuses,
            owners,
            xpubs,
            known: HashMap::new(),
            block_times: HashMap::new(),
        })
    }

    fn cursor_key(&self) -> String {
        format!(
            "chain:{}:{}",
            self.chain.chain_id,
            lower_hex(&self.chain.contract)
        )
    }

    /// Reference prefix of this chain's transfers.
    fn prefix(&self) -> String {
        format!("evm:{}:", self.chain.chain_id)
    }

    /// Polls until `stop` turns true; failures are reported in the status and retried with
    /// backoff (up to a minute). With a `ws_url`, each announced head polls at once.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let interval = Duration::from_millis(self.chain.poll_interval_ms);
        let wake = Arc::new(tokio::sync::Notify::new());
        let heads = self.chain.ws_url.clone().map(|url| {
            tokio::spawn(super::heads::run(
                self.chain.name.clone(),
                url,
                wake.clone(),
                self.statuses.clone(),
                stop.clone(),
            ))
        });
        let mut backoff = interval;
        loop {
            let wait = match self.poll().await {
                Ok(()) => {
                    backoff = interval;
                    interval
                }
                Err(e) => {
                    tracing::warn!(chain = %self.chain.name, error = %crate::redact::redact_text(&e.to_string()), "chain poll failed");
                    let down = matches!(e, PollError::Rpc(RpcError::AllDown(_)));
                    let (errors, last) = (self.rpc.errors, self.rpc.last_error.clone());
                    self.statuses.update(&self.chain.name, |s| {
                        s.rpc_down = down;
                        s.rpc_errors = errors;
                        s.last_error =
                            last.or_else(|| Some(crate::redact::redact_text(&e.to_string())));
                    });
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    backoff
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                if let Some(h) = heads {
                    let _ = h.await;
                }
                return;
            }
        }
    }

    /// Learns the xpub addresses handed out since the last poll.
    fn refresh_xpub_addresses(&mut self) -> Result<(), StoreError> {
        for (xpub, owner, next) in &mut self.xpubs {
            for (index, addr) in self.store.xpub_addresses(xpub, *next)? {
                if let Ok(bytes) = address::parse_evm(&addr) {
                    self.owners.insert(bytes, owner.clone());
                }
                *next = index.saturating_add(1);
            }
        }
        Ok(())
    }

    /// One round: head, logs from the checkpoint, matching, confirmations and reverts.
    pub async fn poll(&mut self) -> Result<(), PollError> {
        self.refresh_xpub_addresses()?;
        let head = self.rpc.head().await?;
        let confirmations = u64::from(self.chain.confirmations);
        // Blocks up to `final_upto` have at least `confirmations` confirmations.
        let final_upto = (head + 1).saturating_sub(confirmations);
        let key = self.cursor_key();
        let mut checkpoint = match self.store.cursor(&key)? {
            Some(c) => c,
            None => {
                // First start: from the configured block, else from the unconfirmed window.
                let start = self
                    .chain
                    .start_block
                    .map_or(final_upto, |b| b.saturating_sub(1));
                self.set_checkpoint(start).await?;
                start
            }
        };
        let pending = self.store.chain_pending(&format!(
            "evm:{}:{}:",
            self.chain.chain_id,
            lower_hex(&self.chain.contract)
        ))?;
        let recipients: Option<Vec<B256>> = (self.owners.len() <= TOPIC_FILTER_MAX)
            .then(|| self.owners.keys().map(address_topic).collect());
        let pending_ids: HashMap<&str, &str> = pending
            .iter()
            .map(|(r, p, _)| (r.as_str(), p.as_str()))
            .collect();
        let mut seen: HashSet<String> = HashSet::new();
        let from = checkpoint + 1;
        let mut a = from;
        while a <= head {
            let mut b = a.saturating_add(self.span - 1).min(head);
            // A chunk never straddles the final boundary, so the checkpoint can follow it.
            if a <= final_upto && b > final_upto {
                b = final_upto;
            }
            let (logs, accepted) = self
                .rpc
                .transfer_logs(self.contract, recipients.as_deref(), a, b)
                .await?;
            if let Some(accepted) = accepted
                && accepted < self.span
            {
                tracing::info!(chain = %self.chain.name, span = accepted, "the node limits log ranges; using smaller ones");
                self.span = accepted.max(1);
            }
            self.process(&logs, head, &pending_ids, &mut seen).await?;
            if b <= final_upto {
                self.set_checkpoint(b).await?;
                checkpoint = b;
            }
            a = b + 1;
        }
        // A pending payment in the re-read window whose log is gone was reorged out.
        let mut reverted = 0;
        for (reference, payment_id, block) in &pending {
            if *block >= from && !seen.contains(reference) {
                let op = WriteOp::RevertPayment {
                    payment_id: payment_id.clone(),
                };
                match write(self.store.as_ref(), op, None).await? {
                    Ok(_) => {
                        reverted += 1;
                        tracing::warn!(chain = %self.chain.name, payment = %payment_id, %reference, "payment reverted: its log left the canonical chain");
                    }
                    Err(e) => {
                        tracing::warn!(chain = %self.chain.name, payment = %payment_id, error = %e, "cannot revert payment")
                    }
                }
                self.known.remove(reference);
            }
        }
        self.known.retain(|_, (block, _)| *block > checkpoint);
        self.block_times.retain(|b, _| *b > checkpoint);
        let (errors, url) = (self.rpc.errors, self.rpc.current_url());
        self.statuses.update(&self.chain.name, |s| {
            s.head = head;
            s.checkpoint = checkpoint;
            s.last_ok_ms = chrono::Utc::now().timestamp_millis();
            s.rpc_down = false;
            s.rpc_errors = errors;
            s.rpc_url = url;
            s.payments_reverted += reverted;
        });
        Ok(())
    }

    async fn set_checkpoint(&self, value: u64) -> Result<(), PollError> {
        let op = WriteOp::SetCursor {
            key: self.cursor_key(),
            value,
        };
        // A cursor write cannot be refused; only storage can fail.
        let _ = write(self.store.as_ref(), op, None).await?;
        Ok(())
    }

    /// Hands the chunk's transfers to the matcher: all submitted at once, so they share one
    /// commit, and in log order, so two payments of one session apply in chain order.
    async fn process(
        &mut self,
        logs: &[Log],
        head: u64,
        pending: &HashMap<&str, &str>,
        seen: &mut HashSet<String>,
    ) -> Result<(), PollError> {
        let mut submitted = Vec::new();
        let mut logs_seen = 0u64;
        for log in logs {
            if log.removed || log.address() != self.contract {
                continue;
            }
            let Some(t) = decode_transfer(log.topics(), &log.data().data) else {
                continue;
            };
            let Some(owner) = self.owners.get(&t.to).cloned() else {
                continue;
            };
            logs_seen += 1;
            let block = log
                .block_number
                .ok_or(PollError::Incomplete("blockNumber"))?;
            let tx = log
                .transaction_hash
                .ok_or(PollError::Incomplete("transactionHash"))?;
            let index = log.log_index.ok_or(PollError::Incomplete("logIndex"))?;
            let reference = format!("{}{tx:#x}:{index}", self.prefix());
            seen.insert(reference.clone());
            let confirmations = u32::try_from(head.saturating_sub(block) + 1).unwrap_or(u32::MAX);
            let is_final = confirmations >= self.chain.confirmations;
            // The payment whose confirmations this log updates, if it was recorded before (in
            // this run, or before a restart).
            let confirming = match self.known.get(&reference) {
                Some((_, Known::Final)) => continue,
                Some((_, Known::Deferred)) if !is_final => continue,
                Some((
                    _,
                    Known::Pending {
                        payment_id,
                        confirmations: recorded,
                    },
                )) => {
                    if confirmations == *recorded {
                        continue;
                    }
                    Some(payment_id.clone())
                }
                _ => pending.get(reference.as_str()).map(|p| (*p).to_owned()),
            };
            let op = match &confirming {
                Some(payment_id) => WriteOp::ConfirmPayment {
                    payment_id: payment_id.clone(),
                    confirmations,
                },
                None => {
                    let received_at = self.received_at(log, block).await?;
                    WriteOp::Observe(Box::new(Observed {
                        destination: token_destination(
                            self.chain.chain_id,
                            &lower_hex(&self.chain.contract),
                            &lower_hex(&t.to),
                        ),
                        amount_base: t.value,
                        decimals: self.chain.decimals,
                        reference: reference.clone(),
                        livemode: !self.chain.test,
                        utr: None,
                        tx_hash: Some(format!("{tx:#x}")),
                        log_index: Some(index),
                        block_number: Some(block),
                        confirmations,
                        confirmed: is_final,
                        received_at_ms: received_at,
                        owner: Some((owner.merchant.clone(), owner.method.clone())),
                        only_session: None,
                        source: Some(self.chain.name.clone()),
                        sender: None,
                        from: Some(address::display(&t.from, self.chain.tron)),
                    }))
                }
            };
            submitted.push((
                reference,
                block,
                confirmations,
                is_final,
                confirming,
                self.store.submit(op, None),
            ));
        }
        let mut matched = 0u64;
        for (reference, block, confirmations, is_final, confirming, rx) in submitted {
            let result = rx.await.map_err(|_| StoreError::WriterGone)??;
            let known = match result {
                Ok(Outcome::Match(MatchResult::Matched {
                    session,
                    payment_id,
                })) => {
                    matched += 1;
                    tracing::info!(chain = %self.chain.name, session = %session.id, payment = %payment_id, %reference, confirmations, "transfer matched");
                    if awaits_confirmations(&session, &payment_id) {
                        Known::Pending {
                            payment_id,
                            confirmations,
                        }
                    } else {
                        Known::Final
                    }
                }
                Ok(Outcome::Match(MatchResult::Deferred)) => Known::Deferred,
                Ok(Outcome::Match(MatchResult::Unmatched { credit })) => {
                    tracing::info!(chain = %self.chain.name, credit = %credit.id, %reference, "transfer matched no session: kept as an unmatched credit");
                    Known::Final
                }
                Ok(Outcome::Match(MatchResult::Duplicate { .. })) => Known::Final,
                // A confirmation update: pending until the payment is final.
                Ok(Outcome::Session(s)) => match confirming {
                    Some(payment_id) if awaits_confirmations(&s, &payment_id) => Known::Pending {
                        payment_id,
                        confirmations,
                    },
                    _ => Known::Final,
                },
                Ok(_) => Known::Final,
                Err(e) => {
                    tracing::warn!(chain = %self.chain.name, %reference, error = %e, "transfer refused by the matcher");
                    if is_final {
                        Known::Final
                    } else {
                        Known::Deferred
                    }
                }
            };
            self.known.insert(reference, (block, known));
        }
        self.statuses.update(&self.chain.name, |s| {
            s.logs_seen += logs_seen;
            s.payments_matched += matched;
        });
        Ok(())
    }

    /// When the money arrived: the block's timestamp (from the log, or asked once per block).
    async fn received_at(&mut self, log: &Log, block: u64) -> Result<i64, PollError> {
        let secs = match log.block_timestamp {
            Some(t) => t,
            None => match self.block_times.get(&block) {
                Some(t) => *t,
                None => {
                    let t = self
                        .rpc
                        .block_time(block)
                        .await?
                        .ok_or(PollError::Incomplete("a block timestamp"))?;
                    self.block_times.insert(block, t);
                    t
                }
            },
        };
        Ok(i64::try_from(secs)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000))
    }
}

/// Whether `payment_id` of `s` still waits for confirmations.
fn awaits_confirmations(s: &crate::domain::session::Session, payment_id: &str) -> bool {
    s.payments
        .iter()
        .any(|p| p.id == payment_id && p.state == crate::domain::session::PaymentState::Pending)
}
