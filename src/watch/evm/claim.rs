//! A transaction hash a customer hands over on the checkout page: the chain is asked for its
//! receipt, and a `Transfer` of the token to this session's address is applied to the session
//! (within the claim rules). The customer's word alone never moves anything.

use std::time::Duration;

use alloy::primitives::{Address, B256};

use super::decode::decode_transfer;
use super::rpc::ChainRpc;
use crate::config::Chain;
use crate::domain::address::lower_hex;
use crate::domain::method::token_destination;
use crate::domain::session::Session;
use crate::store::{SharedStore, WriteOp, write};

/// How long the receipt is looked for (the transaction may still be in the mempool).
const RECEIPT_ATTEMPTS: u32 = 10;
const RECEIPT_WAIT: Duration = Duration::from_secs(3);

/// Checks `tx` against the chain and applies its matching transfer to `session`. Runs in the
/// background: the page answers the same whatever happens here.
pub async fn check(store: SharedStore, chain: Chain, session: Session, tx: B256) {
    let Ok(mut rpc) = ChainRpc::new(
        chain.chain_id,
        &chain.rpc_urls,
        &chain.rpc_headers,
        Duration::from_secs(10),
    ) else {
        return;
    };
    for attempt in 0..RECEIPT_ATTEMPTS {
        match rpc.receipt(tx).await {
            Ok(Some(receipt)) => {
                apply(&store, &chain, &session, tx, &receipt).await;
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

/// Hands each `Transfer` of the token to this session's address over to the matcher as a claim
/// of its exact reference. The claim rules (the session still awaits payment, same merchant and
/// mode, money received during its life, within 10% of the payable amount, and on a shared
/// address sent from a sender the customer declared before its block) are checked inside the
/// writer's transaction: an unmatched credit the watcher already kept is attached at once or
/// queued for the operator, a transfer it has not seen yet is checked when it does.
async fn apply(
    store: &SharedStore,
    chain: &Chain,
    session: &Session,
    tx: B256,
    receipt: &alloy::rpc::types::TransactionReceipt,
) {
    if !receipt.status() {
        return;
    }
    let contract = Address::from(chain.contract);
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
        let ours = session
            .payment_options
            .iter()
            .any(|p| p.destination == destination);
        let Some(index) = log.log_index.filter(|_| ours) else {
            continue;
        };
        let op = WriteOp::Claim {
            session_id: session.id.clone(),
            reference: format!("evm:{}:{tx:#x}:{index}", chain.chain_id),
        };
        match write(store.as_ref(), op, None).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::info!(session = %session.id, error = %e, "claimed transfer not applied")
            }
            Err(e) => tracing::warn!(error = %e, "cannot record a claimed transfer"),
        }
    }
}
