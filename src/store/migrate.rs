//! One-time upgrades of databases written by older versions, run when the store opens.

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::tables::*;
use crate::domain::refund::{LedgerEntry, Refund, RefundStatus, received_by_method};
use crate::domain::session::Session;
use crate::domain::webhook::WebhookEndpoint;
use crate::engine::{Credit, TxError, scope};

/// Once, on a database from before the credit index: indexes every credit under its merchant
/// and mode and moves ignored alerts out of the credits table.
pub(super) fn migrate(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let mut meta = txn.open_table(META)?;
    if meta.get("credit_index")?.is_some() {
        return Ok(());
    }
    let mut credits = txn.open_table(CREDITS)?;
    let mut index = txn.open_table(CREDIT_INDEX)?;
    let mut ignored = txn.open_table(IGNORED)?;
    let mut ignored_index = txn.open_table(IGNORED_INDEX)?;
    let all: Vec<(String, Vec<u8>)> = credits
        .iter()?
        .map(|e| e.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())))
        .collect::<Result<_, _>>()?;
    for (id, bytes) in all {
        // A record this binary cannot read stays where it is, unlisted, as before.
        let Ok(c) = serde_json::from_slice::<Credit>(&bytes) else {
            continue;
        };
        let sc = c.merchant_id.as_ref().map(|m| scope(m, c.livemode));
        if c.status == "ignored" {
            ignored.insert(id.as_str(), bytes.as_slice())?;
            credits.remove(id.as_str())?;
            if let Some(sc) = &sc {
                ignored_index.insert((sc.as_str(), id.as_str()), ())?;
            }
        } else if let Some(sc) = &sc {
            index.insert((sc.as_str(), id.as_str()), ())?;
        }
    }
    meta.insert("credit_index", 1)?;
    Ok(())
}

/// Builds the ledger from the sessions and refunds already stored (a database from before the
/// ledger existed); runs once, marked by `ledger` in `meta`.
pub(super) fn rebuild_ledger(txn: &WriteTransaction) -> Result<(), TxError> {
    let mut meta = txn.open_table(META)?;
    if meta.get("ledger")?.is_some() {
        return Ok(());
    }
    let mut rows: std::collections::BTreeMap<(String, String), LedgerEntry> =
        std::collections::BTreeMap::new();
    {
        let sessions = txn.open_table(SESSIONS)?;
        for e in sessions.iter()? {
            let (_, v) = e?;
            let s: Session = serde_json::from_slice(v.value())?;
            for (m, (amount, d)) in received_by_method(&s) {
                let row = rows
                    .entry((scope(&s.merchant_id, s.livemode), m))
                    .or_insert_with(|| LedgerEntry::new(s.currency, d));
                row.received = row.received.saturating_add(amount);
            }
        }
        let refunds = txn.open_table(REFUNDS)?;
        for e in refunds.iter()? {
            let (_, v) = e?;
            let r: Refund = serde_json::from_slice(v.value())?;
            let row = rows
                .entry((scope(&r.merchant_id, r.livemode), r.method.clone()))
                .or_insert_with(|| LedgerEntry::new(r.currency, r.decimals));
            match r.status {
                RefundStatus::Pending => row.pending = row.pending.saturating_add(r.amount_base),
                RefundStatus::Succeeded => {
                    row.refunded = row.refunded.saturating_add(r.amount_base)
                }
                RefundStatus::Failed => {}
            }
        }
    }
    let mut ledger = txn.open_table(LEDGER)?;
    for ((sc, m), e) in rows {
        ledger.insert(
            (sc.as_str(), m.as_str()),
            serde_json::to_vec(&e)?.as_slice(),
        )?;
    }
    meta.insert("ledger", 1)?;
    Ok(())
}

/// Indexes the endpoints of a database written before the index existed (once: the index is
/// empty only then, or when there are no endpoints at all).
pub(super) fn backfill(txn: &WriteTransaction) -> Result<(), String> {
    let s = |x: &dyn std::fmt::Display| x.to_string();
    let eps = txn.open_table(ENDPOINTS).map_err(|x| s(&x))?;
    let mut idx = txn.open_table(ENDPOINT_INDEX).map_err(|x| s(&x))?;
    txn.open_table(OUTBOX_LANES).map_err(|x| s(&x))?;
    if !idx.is_empty().map_err(|x| s(&x))? {
        return Ok(());
    }
    for entry in eps.iter().map_err(|x| s(&x))? {
        let (k, v) = entry.map_err(|x| s(&x))?;
        let ep: WebhookEndpoint = serde_json::from_slice(v.value()).map_err(|x| s(&x))?;
        let sc = scope(&ep.merchant_id, ep.livemode);
        idx.insert((sc.as_str(), k.value()), ())
            .map_err(|x| s(&x))?;
    }
    Ok(())
}
