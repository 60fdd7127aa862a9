//! One task per chain: polls the head, fetches the token's `Transfer` logs from the durable
//! checkpoint to the head, and hands each transfer to a watched address to the matcher.
//!
//! Finality: a block with at least `confirmations` confirmations is final; with `finality =
//! "finalized"` it must also be at or below the chain's `finalized` tag (the count is then the
//! floor, and the fallback when the node serves no tag). Every poll re-reads
//! the logs of the blocks after the checkpoint (the unconfirmed window), so a payment whose log
//! is gone from the canonical chain is reverted, and one that reached its confirmations is
//! confirmed. The checkpoint moves only past blocks whose logs were all recorded as final, so
//! after a restart or an outage the watcher resumes there and misses nothing.
//!
//! Budget: a poll whose head and final block did not move asks nothing more; a chain with no
//! session awaiting payment polls at `idle_poll_interval_ms` (late payments are still caught,
//! from the checkpoint), and goes back to `poll_interval_ms` as soon as one waits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use alloy::rpc::types::Log;
use tokio::sync::watch;

use super::decode::{address_topic, decode_transfer};
use super::rpc::{ChainRpc, RpcError};
use super::status::ChainStatuses;
use crate::config::{Chain, Finality, Merchant};
use crate::domain::address::{self, lower_hex};
use crate::domain::method::{Rail, Strategy, token_destination};
use crate::store::{
    MatchResult, Observed, Outcome, SessionQuery, SharedStore, StoreError, WriteOp, write,
};

/// Up to this many watched addresses, logs are filtered by recipient at the node; beyond, every
/// transfer of the token is fetched and filtered here.
const TOPIC_FILTER_MAX: usize = 100;

/// How long one RPC call may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// An unfiltered `eth_getLogs` answer above this many logs halves the span, so the next stays
/// well under the result caps providers enforce (TRON's JSON-RPC: 10,000).
const UNFILTERED_RESULTS_SOFT_CAP: usize = 5000;

/// Blocks per unfiltered `eth_getLogs` on TRON (~100 USDT transfers a block, 10,000 results at
/// most per answer).
const TRON_UNFILTERED_SPAN: u64 = 50;

/// The newest sessions per merchant looked at to tell whether one awaits payment on a chain.
const AWAITING_LOOKBACK: usize = 100;

/// Longest wait between polls after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why a poll stopped early (the next one retries from the durable checkpoint).
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the node returned a log without {0}")]
    Incomplete(&'static str),
    /// `second_opinion`: the other provider's receipt does not show this transfer as served.
    #[error("second opinion disagrees on {0}: not counted until the providers agree")]
    Disagreement(String),
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
    /// (head, final block, watched addresses) of the last complete poll: when none moved, the
    /// logs are not asked again.
    last_round: Option<(u64, u64, usize)>,
    /// The node answered the `finalized` tag (None = not asked yet).
    tag_served: Option<bool>,
}

impl ChainWatcher {
    pub fn new(
        chain: Chain,
        merchants: &[Merchant],
        store: SharedStore,
        statuses: ChainStatuses,
    ) -> Result<ChainWatcher, String> {
        let rpc = ChainRpc::new(
            chain.chain_id,
            &chain.rpc_urls,
            &chain.rpc_headers,
            RPC_TIMEOUT,
        )?;
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
            s.urls = rpc.url_states();
            s.finality = match chain.finality {
                Finality::Finalized => "finalized".into(),
                Finality::Confirmations => "confirmations".into(),
            };
            s.second_opinion = chain.second_opinion;
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
            last_round: None,
            tag_served: None,
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

    /// Polls until `stop` turns true, at `poll_interval_ms` while a session awaits payment on
    /// this chain and at `idle_poll_interval_ms` otherwise. Failures back off (up to a minute)
    /// and are logged when the state changes, not on every retry; the state is always in the
    /// status. With a `ws_url`, each announced head polls at once while a session waits.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let active = Duration::from_millis(self.chain.poll_interval_ms);
        let idle = Duration::from_millis(self.chain.idle_poll_interval_ms);
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
        let mut backoff = active;
        let mut last_poll: Option<Instant> = None;
        let mut retry_at: Option<Instant> = None;
        // (since, failed polls, the state shown) while polls fail.
        let mut failing: Option<(Instant, u64, &'static str)> = None;
        let mut woken = false;
        loop {
            let awaiting = idle == active || self.awaiting();
            let interval = if awaiting { active } else { idle };
            let now = Instant::now();
            let due = retry_at.map_or_else(
                || woken || last_poll.is_none_or(|t| now.duration_since(t) >= interval),
                |r| now >= r,
            );
            let wait = if due {
                last_poll = Some(now);
                retry_at = None;
                let result = self.poll().await;
                let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
                self.statuses.update(&self.chain.name, |s| {
                    s.poll_interval_ms = interval_ms;
                    s.idle = !awaiting;
                });
                match result {
                    Ok(()) => {
                        if let Some((since, polls, _)) = failing.take() {
                            tracing::info!(chain = %self.chain.name, failed_polls = polls, down_for = ?since.elapsed(), "chain polls succeed again");
                        }
                        backoff = active;
                        active
                    }
                    Err(e) => {
                        let text = crate::redact::redact_text(&e.to_string());
                        let (state, pause) = match &e {
                            PollError::Rpc(RpcError::RateLimited(d)) => ("rate_limited", *d),
                            PollError::Rpc(RpcError::WrongChain { .. }) => ("wrong_chain", backoff),
                            PollError::Rpc(_) => ("down", backoff),
                            PollError::Disagreement(_) => ("disagreement", backoff),
                            _ => ("failing", backoff),
                        };
                        match &mut failing {
                            Some((_, polls, shown)) if *shown == state => {
                                *polls += 1;
                                tracing::debug!(chain = %self.chain.name, error = %text, "chain poll failed again");
                            }
                            _ => {
                                tracing::warn!(chain = %self.chain.name, error = %text, state, "chain poll failed; retrying with backoff, logged again when the state changes");
                                let since = failing.map_or_else(Instant::now, |f| f.0);
                                failing = Some((since, 1, state));
                            }
                        }
                        let (errors, last) = (self.rpc.errors, self.rpc.last_error.clone());
                        let (requests, limited, urls) = (
                            self.rpc.requests,
                            self.rpc.rate_limited,
                            self.rpc.url_states(),
                        );
                        self.statuses.update(&self.chain.name, |s| {
                            s.rpc_down = state == "down" || state == "wrong_chain";
                            s.rate_limited = state == "rate_limited";
                            s.state = state.to_owned();
                            s.rpc_errors = errors;
                            s.rpc_requests = requests;
                            s.rpc_rate_limited = limited;
                            s.urls = urls;
                            s.last_error = if state == "disagreement" {
                                Some(text.clone())
                            } else {
                                last.or_else(|| Some(text.clone()))
                            };
                        });
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        let pause = pause.max(active).min(MAX_BACKOFF);
                        retry_at = Some(Instant::now() + pause);
                        pause
                    }
                }
            } else {
                // Not due (idle): look again at the next tick whether a session now waits.
                active
            };
            woken = false;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified(), if awaiting => { woken = true; }
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

    /// Whether anything on this chain waits: a payment in the unconfirmed window, or an open
    /// session (among each merchant's newest) offering this chain. A store error counts as yes:
    /// polling faster costs requests, polling slower costs a customer's wait.
    fn awaiting(&self) -> bool {
        if !self.known.is_empty() {
            return true;
        }
        match self.store.chain_pending(&format!(
            "evm:{}:{}:",
            self.chain.chain_id,
            lower_hex(&self.chain.contract)
        )) {
            Ok(p) if !p.is_empty() => return true,
            Err(_) => return true,
            Ok(_) => {}
        }
        let mut merchants: Vec<&str> = self
            .owners
            .values()
            .map(|o| o.merchant.as_str())
            .chain(self.xpubs.iter().map(|(_, o, _)| o.merchant.as_str()))
            .collect();
        merchants.sort_unstable();
        merchants.dedup();
        for m in merchants {
            let q = SessionQuery {
                merchant_id: m.to_owned(),
                livemode: !self.chain.test,
                limit: AWAITING_LOOKBACK,
                ..Default::default()
            };
            match self.store.list_sessions(&q) {
                Ok(page) => {
                    if page.items.iter().any(|s| {
                        s.status.is_awaiting()
                            && s.payment_options
                                .iter()
                                .any(|o| o.network.as_deref() == Some(self.chain.name.as_str()))
                    }) {
                        return true;
                    }
                }
                Err(_) => return true,
            }
        }
        false
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
        // The head first, the addresses after: an address handed out before a payment to it
        // was mined is then always in this poll's filter (read the other way round, a session
        // created between the two reads could be paid in a block this poll finalizes unwatched).
        let head = self.rpc.head().await?;
        self.refresh_xpub_addresses()?;
        let confirmations = u64::from(self.chain.confirmations);
        // Blocks up to `final_upto` have at least `confirmations` confirmations (and, with
        // `finality = "finalized"`, are at or below the chain's finalized block).
        let counted = (head + 1).saturating_sub(confirmations);
        let final_upto = match self.chain.finality {
            Finality::Confirmations => counted,
            Finality::Finalized => {
                let tag = self.rpc.finalized().await?;
                if self.tag_served != Some(tag.is_some()) {
                    match tag {
                        Some(f) => {
                            tracing::info!(chain = %self.chain.name, finalized = f, "finality from the chain's finalized tag")
                        }
                        None => {
                            tracing::warn!(chain = %self.chain.name, "the node serves no finalized tag: finality from the confirmation count")
                        }
                    }
                    self.tag_served = Some(tag.is_some());
                }
                let f = tag.map_or(counted, |f| f.min(counted));
                self.statuses
                    .update(&self.chain.name, |s| s.finalized_block = tag);
                f
            }
        };
        let round = (head, final_upto, self.owners.len());
        if self.last_round == Some(round) {
            // Nothing moved since the last complete poll: no logs to ask for.
            tracing::trace!(chain = %self.chain.name, head, "poll: nothing moved");
            self.report_ok(head, None, 0);
            return Ok(());
        }
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
            // Unfiltered on TRON, where each block holds ~100 USDT transfers: ranges small
            // enough to stay under its 10,000-result cap from the first request.
            let span = if recipients.is_none() && self.chain.tron {
                self.span.min(TRON_UNFILTERED_SPAN)
            } else {
                self.span
            };
            let mut b = a.saturating_add(span - 1).min(head);
            // A chunk never straddles the final boundary, so the checkpoint can follow it.
            if a <= final_upto && b > final_upto {
                b = final_upto;
            }
            let (logs, accepted) = self
                .rpc
                .transfer_logs(self.contract, recipients.as_deref(), a, b)
                .await?;
            let served_by = self.rpc.current_index();
            tracing::debug!(chain = %self.chain.name, from = a, to = b, head, final_upto, logs = logs.len(), "poll: logs read");
            if let Some(accepted) = accepted
                && accepted < self.span
            {
                tracing::info!(chain = %self.chain.name, span = accepted, "the node limits log ranges; using smaller ones");
                self.span = accepted.max(1);
            }
            if recipients.is_none() && logs.len() > UNFILTERED_RESULTS_SOFT_CAP && self.span > 1 {
                self.span = (self.span / 2).max(1);
                tracing::info!(chain = %self.chain.name, span = self.span, logs = logs.len(), "many transfers per range: using smaller ranges to stay under the provider's result cap");
            }
            self.process(&logs, head, final_upto, served_by, &pending_ids, &mut seen)
                .await?;
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
        self.last_round = Some(round);
        self.report_ok(head, Some(checkpoint), reverted);
        Ok(())
    }

    /// A successful poll, in the status.
    fn report_ok(&self, head: u64, checkpoint: Option<u64>, reverted: u64) {
        let (errors, url, urls) = (
            self.rpc.errors,
            self.rpc.current_url(),
            self.rpc.url_states(),
        );
        let (requests, limited, span) = (self.rpc.requests, self.rpc.rate_limited, self.span);
        self.statuses.update(&self.chain.name, |s| {
            s.head = head;
            if let Some(c) = checkpoint {
                s.checkpoint = c;
            }
            s.last_ok_ms = chrono::Utc::now().timestamp_millis();
            s.rpc_down = false;
            s.rate_limited = false;
            s.state = "ok".into();
            s.rpc_errors = errors;
            s.rpc_requests = requests;
            s.rpc_rate_limited = limited;
            s.rpc_url = url;
            s.urls = urls;
            s.payments_reverted += reverted;
            s.log_span = span;
        });
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
    #[allow(clippy::too_many_arguments)]
    async fn process(
        &mut self,
        logs: &[Log],
        head: u64,
        final_upto: u64,
        served_by: usize,
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
            let counted = u32::try_from(head.saturating_sub(block) + 1).unwrap_or(u32::MAX);
            let is_final = block <= final_upto;
            // Below finality the count stops one short of the requirement, so the matcher (which
            // confirms at the count) waits for the finalized tag too.
            let confirmations = if is_final {
                counted
            } else {
                counted.min(self.chain.confirmations.saturating_sub(1))
            };
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
            if is_final && self.chain.second_opinion {
                self.second_opinion(log, served_by, &reference).await?;
            }
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

    /// `second_opinion`: the transaction's receipt from another URL must hold this very log
    /// (same block, index, contract, topics and amount), successfully executed. Otherwise the
    /// poll stops before it is counted (the checkpoint stays, the next poll asks again from the
    /// other URL first): one provider cannot invent money, and the disagreement is shown.
    async fn second_opinion(
        &mut self,
        log: &Log,
        served_by: usize,
        reference: &str,
    ) -> Result<(), PollError> {
        let tx = log
            .transaction_hash
            .ok_or(PollError::Incomplete("transactionHash"))?;
        let receipt = self.rpc.receipt_from(Some(served_by), tx).await?;
        let agrees = receipt.is_some_and(|r| {
            r.status()
                && r.block_number == log.block_number
                && r.inner.logs().iter().any(|l| {
                    l.log_index == log.log_index
                        && !l.removed
                        && l.address() == log.address()
                        && l.topics() == log.topics()
                        && l.data().data == log.data().data
                })
        });
        if agrees {
            return Ok(());
        }
        self.statuses
            .update(&self.chain.name, |s| s.second_opinion_refused += 1);
        tracing::warn!(chain = %self.chain.name, %reference, "second opinion disagrees: another RPC URL does not return this transfer; not counted");
        // Read the logs from another URL next time.
        self.rpc.prefer_other_than(served_by);
        self.last_round = None;
        Err(PollError::Disagreement(reference.to_owned()))
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
