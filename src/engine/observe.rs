//! Matching observed money: a reference is recorded once, ever; money goes to the session
//! awaiting its (destination, amount), to the session that claimed its reference when it
//! plausibly is that session's, and otherwise becomes an unmatched credit.

use super::allocate::holder;
use super::claims::{claim_fits, claim_tied, queue_claim};
use super::session::{chain_pending_key, emit_session_events, save_session};
use super::tx::{R, Tx};
use super::{Credit, Ctx, Effect, MatchResult, Observed, OpError};
use crate::domain::event::EventType;
use crate::domain::ids::new_id;
use crate::domain::money::format_units;
use crate::domain::session::{Payment, PaymentState, Session};
use crate::domain::view::rfc3339;

pub(super) fn observe(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    o: Observed,
) -> R<Result<MatchResult, OpError>> {
    if let Some(existing) = t.reference(&o.reference)? {
        return Ok(Ok(MatchResult::Duplicate { existing }));
    }
    let found = holder(t, &o.destination, o.livemode, o.amount_base, cx.now)?;
    // A customer may have claimed this reference on a session's page before the money was seen.
    let claimed = if found.is_none() && o.only_session.is_none() {
        t.claim_ref(&o.reference)?
    } else {
        None
    };
    if let Some(sid) = claimed {
        // A claim only ever routes money that plausibly is that session's; anything else stays
        // an unmatched credit for the operator (never an error: a bad claim must not block).
        let chain = is_chain_ref(&o.reference);
        let s = t.session(&sid)?;
        if let Some(s) = &s
            && claim_fits(
                s,
                &o.destination,
                o.amount_base,
                o.received_at_ms,
                o.livemode,
                owner_merchant(&o),
            )
            && claim_tied(
                t,
                s,
                &o.destination,
                o.from.as_deref(),
                o.received_at_ms,
                true,
            )?
        {
            let s = s.clone();
            return Ok(Ok(apply_to_session(t, cx, s, o)?));
        }
        if !o.confirmed && chain {
            // Not final yet: nothing is recorded (nor queued) until it is.
            return Ok(Ok(MatchResult::Deferred));
        }
        let result = unmatched(t, cx, o)?;
        if let (Some(s), MatchResult::Unmatched { credit }) = (&s, &result) {
            let mut c = (**credit).clone();
            queue_claim(t, cx, &mut c, s)?;
            return Ok(Ok(MatchResult::Unmatched {
                credit: Box::new(c),
            }));
        }
        return Ok(Ok(result));
    }
    let target = match (&o.only_session, found) {
        (Some(only), Some(f)) if &f != only => {
            return Ok(Err(OpError::Invalid(
                "this payment cannot be applied to this session".into(),
            )));
        }
        (Some(only), _) => {
            let s = t.session(only)?;
            if !s.as_ref().is_some_and(|s| {
                s.payment_options
                    .iter()
                    .any(|p| p.destination == o.destination)
            }) {
                return Ok(Err(OpError::Invalid(
                    "this payment cannot be applied to this session".into(),
                )));
            }
            s
        }
        (None, Some(f)) => t.session(&f)?,
        (None, None) => None,
    };
    // Money received before a session existed is not that session's (an old alert, a re-read
    // mailbox, a transfer adopted at finality by whoever holds its amount by then): it stays
    // unmatched.
    let chain = is_chain_ref(&o.reference);
    let target = target
        .filter(|s| s.livemode == o.livemode && paid_after_creation(s, o.received_at_ms, chain));
    let Some(s) = target else {
        if !o.confirmed {
            // Not final yet and nobody's: it may still vanish in a reorg, so nothing is recorded
            // until the watcher reports it final.
            return Ok(Ok(MatchResult::Deferred));
        }
        return Ok(Ok(unmatched(t, cx, o)?));
    };
    Ok(Ok(apply_to_session(t, cx, s, o)?))
}

/// How far a reported receipt time may precede a session's creation (clock skew between phones,
/// banks and this server). Not for chain money: a block time is the chain's own record.
pub(super) const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Whether a reference names a transfer on a chain (whose receipt time is its block's time).
pub(super) fn is_chain_ref(reference: &str) -> bool {
    reference.starts_with("evm:")
}

/// Whether money received at `received_at_ms` may pay `s`: a transfer only if its block is no
/// older than the session (block times have whole seconds, so the session's creation second
/// counts), other money within the clock skew of phones and banks.
pub(super) fn paid_after_creation(s: &Session, received_at_ms: i64, chain: bool) -> bool {
    if chain {
        received_at_ms
            >= s.created_at_ms
                .saturating_sub(s.created_at_ms.rem_euclid(1000))
    } else {
        received_at_ms >= s.created_at_ms.saturating_sub(CLOCK_SKEW_MS)
    }
}

fn owner_merchant(o: &Observed) -> Option<&str> {
    o.owner.as_ref().map(|(m, _)| m.as_str())
}

/// Records `o` as a payment of `s` (whose options include its destination, else it becomes an
/// unmatched credit) and moves the session on.
pub(super) fn apply_to_session(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    mut s: Session,
    o: Observed,
) -> R<MatchResult> {
    let Some(option) = s
        .payment_options
        .iter()
        .find(|p| p.destination == o.destination)
        .cloned()
    else {
        return unmatched(t, cx, o);
    };
    let payment = Payment {
        id: new_id("py"),
        method: option.method.clone(),
        amount_base: o.amount_base,
        decimals: option.decimals,
        utr: o.utr,
        tx_hash: o.tx_hash,
        log_index: o.log_index,
        block_number: o.block_number,
        confirmations: o.confirmations,
        state: if o.confirmed || o.confirmations >= option.confirmations_required {
            PaymentState::Confirmed
        } else {
            PaymentState::Pending
        },
        received_at_ms: o.received_at_ms,
        reference: o.reference.clone(),
        late: false,
        from: o.from,
        reversed: false,
    };
    let payment_id = payment.id.clone();
    let awaits_confirmations = payment.state == PaymentState::Pending;
    cx.effects.push(Effect::Payment {
        method: payment.method.clone(),
    });
    let before = s.clone();
    let events = s.apply_payment(payment, cx.now);
    t.put_reference(&o.reference, &payment_id)?;
    if awaits_confirmations {
        let value = format!("{payment_id}@{}", o.block_number.unwrap_or(0));
        t.put_chain_pending(
            &chain_pending_key(&option.destination, &o.reference),
            &value,
        )?;
    }
    t.put_payment(&payment_id, &s.id)?;
    if t.claim_ref(&o.reference)?.is_some() {
        t.drop_claim_ref(&o.reference)?;
    }
    save_session(t, cx, Some(&before), &s)?;
    emit_session_events(t, cx, &s, &events)?;
    Ok(MatchResult::Matched {
        session: Box::new(s),
        payment_id,
    })
}

/// The API representation of a credit.
pub fn credit_json(c: &Credit) -> serde_json::Value {
    serde_json::json!({
        "id": c.id,
        "object": "credit",
        "livemode": c.livemode,
        "status": c.status,
        "reason": c.reason,
        "method": c.method,
        "amount": format_units(c.amount_base, c.decimals),
        "amount_base_units": c.amount_base.to_string(),
        "utr": c.utr,
        "tx_hash": c.tx_hash,
        "received_at": rfc3339(c.received_at_ms),
        "source": c.source,
        "sender": c.sender,
    })
}

pub(super) fn unmatched(t: &mut dyn Tx, cx: &mut Ctx<'_>, o: Observed) -> R<MatchResult> {
    let (merchant_id, method) = match o.owner {
        Some((m, me)) => (Some(m), Some(me)),
        None => (None, None),
    };
    let credit = Credit {
        id: new_id("cr"),
        merchant_id,
        method,
        destination: o.destination,
        amount_base: o.amount_base,
        decimals: o.decimals,
        reference: o.reference,
        utr: o.utr,
        tx_hash: o.tx_hash,
        livemode: o.livemode,
        received_at_ms: o.received_at_ms,
        status: "unmatched".into(),
        reason: "no session awaiting payment holds this destination and amount".into(),
        source: o.source,
        // A transfer's sender address, so a claim can be checked against a declared sender.
        sender: o.sender.or(o.from),
    };
    t.insert_credit(&credit)?;
    t.put_reference(&credit.reference, &credit.id)?;
    if let Some(m) = &credit.merchant_id {
        super::outbox::emit(
            t,
            cx,
            EventType::CreditUnmatched,
            m,
            credit.livemode,
            credit_json(&credit),
            None,
        )?;
    }
    Ok(MatchResult::Unmatched {
        credit: Box::new(credit),
    })
}
