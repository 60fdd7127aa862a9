//! Refunds, returned credits and the balance ledger. The check of what is left to refund and
//! its reservation (the ledger's pending total) happen in one operation of one transaction,
//! and a backend runs a batch's operations one after another, so concurrent refunds can never
//! together exceed what arrived.

use super::outbox::emit;
use super::tx::{R, Tx};
use super::{Ctx, OpError, Outcome};
use crate::domain::event::EventType;
use crate::domain::method::Currency;
use crate::domain::refund::{
    self, Delta, LedgerEntry, Refund, RefundError, RefundStatus, apply_delta, check_amount,
    received_delta, refund_json, refund_method,
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

/// Adds `d` to the ledger row of (merchant, mode, method).
fn ledger_add(
    t: &mut dyn Tx,
    merchant_id: &str,
    livemode: bool,
    method: &str,
    currency: Currency,
    decimals: u32,
    d: Delta,
) -> R<()> {
    let mut e = t
        .ledger(merchant_id, livemode, method)?
        .unwrap_or_else(|| LedgerEntry::new(currency, decimals));
    if !apply_delta(&mut e, d) {
        tracing::error!(
            merchant = merchant_id,
            method,
            ?d,
            "ledger total would go below zero; clamped"
        );
    }
    t.put_ledger(merchant_id, livemode, method, &e)
}

/// Keeps the ledger in step with a session's confirmed payments (called by `save_session`,
/// so every confirmation, late payment or revert is counted in its own transaction).
pub(super) fn ledger_on_save(t: &mut dyn Tx, before: Option<&Session>, s: &Session) -> R<()> {
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
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    mut r: Refund,
    method: Option<&str>,
    amount: Option<u128>,
) -> R<Result<Outcome, OpError>> {
    let Some(s) = t
        .session(&r.session_id)?
        .filter(|s| s.merchant_id == r.merchant_id && s.livemode == r.livemode)
    else {
        return Ok(Err(OpError::NotFound("checkout session")));
    };
    let (method, decimals) = match refund_method(&s, method) {
        Ok(m) => m,
        Err(e) => return Ok(Err(refund_error(e))),
    };
    let existing = t.session_refunds(&s.id)?;
    let amount = match check_amount(&s, &existing, &method, amount) {
        Ok(a) => a,
        Err(e) => return Ok(Err(refund_error(e))),
    };
    r.method = method;
    r.decimals = decimals;
    r.amount_base = amount;
    r.currency = s.currency;
    r.price = s
        .price
        .as_ref()
        .and_then(|p| p.value_of(crate::domain::money::base_to_minor(amount, decimals)));
    r.status = RefundStatus::Pending;
    r.created_at_ms = cx.now;
    r.updated_at_ms = cx.now;
    r.seq = t.next_seq()?;
    t.insert_refund(&r)?;
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
        cx,
        EventType::RefundCreated,
        &r.merchant_id,
        r.livemode,
        refund_json(&r),
        s.notify_url.clone(),
    )?;
    Ok(Ok(Outcome::Refund(Box::new(r))))
}

fn signed(v: u128) -> i128 {
    i128::try_from(v).unwrap_or(i128::MAX)
}

pub(super) fn finish(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    id: &str,
    outcome: refund::Outcome,
) -> R<Result<Outcome, OpError>> {
    let Some(mut r) = t.refund(id)? else {
        return Ok(Err(OpError::NotFound("refund")));
    };
    if let Err(e) = r.finish(outcome, cx.now) {
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
    t.put_refund(&r)?;
    ledger_add(
        t,
        &r.merchant_id,
        r.livemode,
        &r.method,
        r.currency,
        r.decimals,
        delta,
    )?;
    let notify_url = t.session(&r.session_id)?.and_then(|s| s.notify_url);
    emit(
        t,
        cx,
        kind,
        &r.merchant_id,
        r.livemode,
        refund_json(&r),
        notify_url,
    )?;
    Ok(Ok(Outcome::Refund(Box::new(r))))
}

pub(super) fn return_credit(
    t: &mut dyn Tx,
    id: &str,
    reference: &str,
) -> R<Result<Outcome, OpError>> {
    let Some(mut c) = t.credit(id)? else {
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
    t.put_credit(&c)?;
    Ok(Ok(Outcome::Credit(Box::new(c))))
}
