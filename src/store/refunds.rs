//! Refunds, returned credits and the balance ledger, inside the writer's transaction. The check
//! of what is left to refund and its reservation happen in one operation, and the writer runs
//! operations one after another, so concurrent refunds can never together exceed what arrived.

use redb::{ReadableTable, WriteTransaction};

use super::ops::{ExecError, R, Tables, emit, load_json, load_session};
use super::tables::{LEDGER, REFUNDS, SESSIONS};
use super::{Credit, OpError, Outcome, scope};
use crate::domain::event::EventType;
use crate::domain::method::Currency;
use crate::domain::refund::{
    self, Delta, LedgerEntry, Refund, RefundError, RefundStatus, apply_delta, check_amount,
    received_by_method, received_delta, refund_json, refund_method,
};
use crate::domain::session::Session;

fn refund_error(e: RefundError) -> OpError {
    match e {
        RefundError::NotPaid
        | RefundError::ExceedsReceived { .. }
        | RefundError::NotPending { .. } => OpError::Conflict {
            code: e.code(),
            message: e.to_string(),
        },
        RefundError::MethodAmbiguous(_) | RefundError::MethodNotPaid(_) | RefundError::Zero => {
            OpError::Invalid(e.to_string())
        }
    }
}

/// A session's refunds, in creation order.
fn of_session(t: &Tables<'_>, session_id: &str) -> R<Vec<Refund>> {
    let ids: Vec<String> = t
        .session_refunds
        .range((session_id, "")..=(session_id, "\u{10FFFF}"))?
        .map(|e| e.map(|(k, _)| k.value().1.to_owned()))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = load_json::<Refund>(&t.refunds, &id)? {
            out.push(r);
        }
    }
    Ok(out)
}

fn save(t: &mut Tables<'_>, r: &Refund) -> R<()> {
    t.refunds
        .insert(r.id.as_str(), serde_json::to_vec(r)?.as_slice())?;
    Ok(())
}

/// Adds `d` to the ledger row of (merchant, mode, method).
fn ledger_add(
    t: &mut Tables<'_>,
    merchant_id: &str,
    livemode: bool,
    method: &str,
    currency: Currency,
    decimals: u32,
    d: Delta,
) -> R<()> {
    let sc = scope(merchant_id, livemode);
    let mut e: LedgerEntry = match t.ledger.get((sc.as_str(), method))? {
        Some(v) => serde_json::from_slice(v.value())?,
        None => LedgerEntry::new(currency, decimals),
    };
    if !apply_delta(&mut e, d) {
        tracing::error!(
            merchant = merchant_id,
            method,
            ?d,
            "ledger total would go below zero; clamped"
        );
    }
    t.ledger
        .insert((sc.as_str(), method), serde_json::to_vec(&e)?.as_slice())?;
    Ok(())
}

/// Keeps the ledger in step with a session's confirmed payments (called by `save_session`,
/// so every confirmation, late payment or revert is counted in its own transaction).
pub(super) fn ledger_on_save(t: &mut Tables<'_>, before: Option<&Session>, s: &Session) -> R<()> {
    for (method, decimals, delta) in received_delta(before, s) {
        ledger_add(
            t,
            &s.merchant_id,
            s.livemode,
            &method,
            s.currency,
            decimals,
            Delta {
                received: delta,
                ..Delta::default()
            },
        )?;
    }
    Ok(())
}

pub(super) fn create(
    t: &mut Tables<'_>,
    w: &mut super::ops::WriterState,
    mut r: Refund,
    method: Option<&str>,
    amount: Option<u128>,
    now: i64,
) -> R<Result<Outcome, OpError>> {
    let Some(s) = load_session(t, &r.session_id)?
        .filter(|s| s.merchant_id == r.merchant_id && s.livemode == r.livemode)
    else {
        return Ok(Err(OpError::NotFound("checkout session")));
    };
    let (method, decimals) = match refund_method(&s, method) {
        Ok(m) => m,
        Err(e) => return Ok(Err(refund_error(e))),
    };
    let existing = of_session(t, &s.id)?;
    let amount = match check_amount(&s, &existing, &method, amount) {
        Ok(a) => a,
        Err(e) => return Ok(Err(refund_error(e))),
    };
    r.method = method;
    r.decimals = decimals;
    r.amount_base = amount;
    r.currency = s.currency;
    r.status = RefundStatus::Pending;
    r.created_at_ms = now;
    r.updated_at_ms = now;
    w.seq += 1;
    r.seq = w.seq;
    save(t, &r)?;
    let sc = scope(&r.merchant_id, r.livemode);
    t.refund_index.insert((sc.as_str(), r.seq), r.id.as_str())?;
    t.session_refunds
        .insert((r.session_id.as_str(), r.id.as_str()), ())?;
    ledger_add(
        t,
        &r.merchant_id,
        r.livemode,
        &r.method,
        r.currency,
        r.decimals,
        Delta {
            pending: signed(r.amount_base),
            ..Delta::default()
        },
    )?;
    emit(
        t,
        w,
        EventType::RefundCreated,
        &r.merchant_id,
        r.livemode,
        refund_json(&r),
        s.notify_url.clone(),
        now,
    )?;
    Ok(Ok(Outcome::Refund(Box::new(r))))
}

fn signed(v: u128) -> i128 {
    i128::try_from(v).unwrap_or(i128::MAX)
}

pub(super) fn finish(
    t: &mut Tables<'_>,
    w: &mut super::ops::WriterState,
    id: &str,
    outcome: refund::Outcome,
    now: i64,
) -> R<Result<Outcome, OpError>> {
    let Some(mut r) = load_json::<Refund>(&t.refunds, id)? else {
        return Ok(Err(OpError::NotFound("refund")));
    };
    if let Err(e) = r.finish(outcome, now) {
        return Ok(Err(refund_error(e)));
    }
    let amount = signed(r.amount_base);
    let (kind, delta) = match r.status {
        RefundStatus::Succeeded => (
            EventType::RefundSucceeded,
            Delta {
                pending: -amount,
                refunded: amount,
                ..Delta::default()
            },
        ),
        _ => (
            EventType::RefundFailed,
            Delta {
                pending: -amount,
                ..Delta::default()
            },
        ),
    };
    save(t, &r)?;
    ledger_add(
        t,
        &r.merchant_id,
        r.livemode,
        &r.method,
        r.currency,
        r.decimals,
        delta,
    )?;
    let notify_url = load_session(t, &r.session_id)?.and_then(|s| s.notify_url);
    emit(
        t,
        w,
        kind,
        &r.merchant_id,
        r.livemode,
        refund_json(&r),
        notify_url,
        now,
    )?;
    Ok(Ok(Outcome::Refund(Box::new(r))))
}

pub(super) fn return_credit(
    t: &mut Tables<'_>,
    id: &str,
    reference: &str,
) -> R<Result<Outcome, OpError>> {
    let Some(mut c) = load_json::<Credit>(&t.credits, id)? else {
        return Ok(Err(OpError::NotFound("credit")));
    };
    if c.status != "unmatched" {
        return Ok(Err(OpError::Conflict {
            code: "credit_not_unmatched",
            message: format!(
                "credit {id} is {}; only an unmatched credit can be returned",
                c.status
            ),
        }));
    }
    c.status = "returned".into();
    c.reason = format!("returned to the payer: {reference}");
    t.credits
        .insert(c.id.as_str(), serde_json::to_vec(&c)?.as_slice())?;
    Ok(Ok(Outcome::Credit(Box::new(c))))
}

/// Builds the ledger from the sessions and refunds already stored (a database from before the
/// ledger existed); runs once, marked by `ledger` in `meta`.
pub(super) fn rebuild_ledger(txn: &WriteTransaction) -> Result<(), ExecError> {
    let mut meta = txn.open_table(super::tables::META)?;
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
