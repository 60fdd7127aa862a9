//! A transaction hash a customer hands over on the checkout page: the chain is asked for its
//! receipt, and a `Transfer` of the token to this session's address is applied to the session
//! (within the claim rules). The customer's word alone never moves anything.

use std::time::Duration;

use alloy::primitives::{Address, B256};

use super::decode::decode_transfer;
use super::rpc::ChainRpc;
use crate::config::Chain;
use crate::domain::address::{self, lower_hex};
use crate::domain::method::token_destination;
use crate::domain::session::Session;
use crate::store::{CLOCK_SKEW_MS, MatchResult, Observed, Outcome, SharedStore, WriteOp, write};

/// How long the receipt is looked for (the transaction may still be in the mempool).
const RECEIPT_ATTEMPTS: u32 = 10;
const RECEIPT_WAIT: Duration = Duration::from_secs(3);

/// Checks `tx` against the chain and applies its matching transfer to `session`. Runs in the
/// background: the page answers the same whatever happens here.
pub async fn check(store: SharedStore, chain: Chain, session: Session, tx: B256) {
    let Ok(mut rpc) = ChainRpc::new(chain.chain_id, &chain.rpc_urls, Duration::from_secs(10))
    else {
        return;
    };
    for attempt in 0..RECEIPT_ATTEMPTS {
        match rpc.receipt(tx).await {
            Ok(Some(receipt)) => {
                apply(&store, &chain, &session, &mut rpc, tx, &receipt).await;
                return;
            }
            Ok(None) | Err(_) if attempt + 1 < RECEIPT_ATTEMPTS => {
                tokio::time::sleep(RECEIPT_WAIT).await;
            }
            _ => {
                tracing::info!(session = %session.id, tx = %format!("{tx:#x}"), "claimed transaction not found on chain");
                return;
            }
        }
    }
}

async fn apply(
    store: &SharedStore,
    chain: &Chain,
    session: &Session,
    rpc: &mut ChainRpc,
    tx: B256,
    receipt: &alloy::rpc::types::TransactionReceipt,
) {
    if !receipt.status() {
        return;
    }
    let contract = Address::from(chain.contract);
    let Ok(head) = rpc.head().await else {
        return;
    };
    for log in receipt.inner.logs() {
        if log.address() != contract || log.removed {
            continue;
        }
        let Some(t) = decode_transfer(log.topics(), &log.data().data) else {
            continue;
        };
        let destination = token_destination(
            chain.chain_id,
            &lower_hex(&chain.contract),
            &lower_hex(&t.to),
        );
        let Some(option) = session
            .payment_options
            .iter()
            .find(|p| p.destination == destination)
        else {
            continue;
        };
        // Within 10% of what the session asked: an exchange fee, not another payment.
        let band = option.payable_base / 10;
        if t.value < option.payable_base.saturating_sub(band)
            || t.value > option.payable_base.saturating_add(band)
        {
            continue;
        }
        let (Some(block), Some(index)) = (log.block_number, log.log_index) else {
            continue;
        };
        let confirmations = u32::try_from(head.saturating_sub(block) + 1).unwrap_or(u32::MAX);
        let received_at_ms = match log.block_timestamp {
            Some(t) => Some(t),
            None => rpc.block_time(block).await.ok().flatten(),
        }
        .and_then(|s| i64::try_from(s).ok())
        .map_or(session.created_at_ms, |s| s.saturating_mul(1000));
        // The claim rules of UPI claims: money that arrived during the session's life, for a
        // session still waiting for it. Anything else is the operator's to assign.
        let fresh = store.session(&session.id).ok().flatten();
        let in_life = received_at_ms >= session.created_at_ms.saturating_sub(CLOCK_SKEW_MS)
            && received_at_ms <= session.expires_at_ms.saturating_add(CLOCK_SKEW_MS);
        if !in_life || !fresh.is_some_and(|s| s.status.is_awaiting()) {
            continue;
        }
        let reference = format!("evm:{}:{tx:#x}:{index}", chain.chain_id);
        let observed = Observed {
            destination,
            amount_base: t.value,
            decimals: chain.decimals,
            reference,
            livemode: !chain.test,
            utr: None,
            tx_hash: Some(format!("{tx:#x}")),
            log_index: Some(index),
            block_number: Some(block),
            confirmations,
            confirmed: confirmations >= chain.confirmations,
            received_at_ms,
            owner: None,
            only_session: Some(session.id.clone()),
            source: Some(format!("{} (claimed)", chain.name)),
            sender: None,
            from: Some(address::display(&t.from, chain.tron)),
        };
        match write(store.as_ref(), WriteOp::Observe(Box::new(observed)), None).await {
            Ok(Ok(Outcome::Match(MatchResult::Duplicate { existing })))
                if existing.starts_with("cr_") =>
            {
                // The watcher recorded it as unmatched (the amount was altered): attach it.
                let op = WriteOp::AssignCredit {
                    credit_id: existing,
                    session_id: session.id.clone(),
                };
                let _ = write(store.as_ref(), op, None).await;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::info!(session = %session.id, error = %e, "claimed transfer not applied")
            }
            Err(e) => tracing::warn!(error = %e, "cannot record a claimed transfer"),
        }
    }
}
