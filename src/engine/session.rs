//! A session's life after creation: saving it with its reservations and ledger in step, ending
//! it, and the payment changes a watcher reports (confirmed, reverted, reversed).

use super::outbox::emit;
use super::reservations::res_key;
use super::tx::{R, Tx};
use super::{Ctx, Effect, MatchResult, OpError, Outcome};
use crate::domain::event::EventType;
use crate::domain::session::{PaymentState, Session, TransitionError};
use crate::domain::view::session_json;

/// Persists a session and keeps its reservations and the ledger in step with its status.
pub(super) fn save_session(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    before: Option<&Session>,
    s: &Session,
) -> R<()> {
    let was_awaiting = before.is_none_or(|b| b.status.is_awaiting());
    // Nothing received (or all of it reverted): the slot may go to a new session before its
    // grace ends, when no free one is left.
    let empty = s.payments.iter().all(|p| p.state == PaymentState::Reverted);
    if !s.status.is_awaiting() {
        let until = cx.now.saturating_add(cx.cfg.grace_ms);
        for o in &s.payment_options {
            let amount = o.reservation_amount;
            let mut key = res_key(&o.destination, s.livemode);
            if t.reservation(&key, amount)?
                .is_none_or(|r| r.session_id != s.id)
            {
                // Holds written before test mode had a namespace of its own.
                key = o.destination.clone();
            }
            let Some(r) = t
                .reservation(&key, amount)?
                .filter(|r| r.session_id == s.id)
            else {
                continue;
            };
            if was_awaiting {
                t.end_hold(&key, amount, &s.id, until, empty)?;
            } else if r.reusable && !empty {
                // Late money arrived: the slot is this session's again for the rest of its grace.
                t.keep_hold(&key, amount, &s.id)?;
            }
        }
    }
    super::refunds::ledger_on_save(t, before, s)?;
    super::links::on_session_end(t, before, s)?;
    t.put_session(before, s)
}

pub(super) fn emit_session_events(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    s: &Session,
    events: &[EventType],
) -> R<()> {
    if events.is_empty() {
        return Ok(());
    }
    let data = session_json(s);
    for kind in events {
        cx.effects.push(Effect::SessionEvent(kind.as_str()));
        emit(
            t,
            cx,
            *kind,
            &s.merchant_id,
            s.livemode,
            data.clone(),
            s.notify_url.clone(),
        )?;
    }
    Ok(())
}

pub(super) fn end_session(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    merchant_id: &str,
    livemode: bool,
    id: &str,
    expire: bool,
) -> R<Result<Outcome, OpError>> {
    let Some(mut s) = t
        .session(id)?
        .filter(|s| s.merchant_id == merchant_id && s.livemode == livemode)
    else {
        return Ok(Err(OpError::NotFound("checkout session")));
    };
    let before = s.clone();
    let r = if expire {
        s.expire_now(cx.now)
    } else {
        s.cancel(cx.now)
    };
    let kind = match r {
        Ok(k) => k,
        Err(e) => return Ok(Err(e.into())),
    };
    save_session(t, cx, Some(&before), &s)?;
    emit_session_events(t, cx, &s, &[kind])?;
    Ok(Ok(Outcome::Session(Box::new(s))))
}

/// `<destination>|<reference>`: a chain watcher lists its own pending payments by the prefix
/// of its destinations (chain and token contract).
pub(super) fn chain_pending_key(destination: &str, reference: &str) -> String {
    format!("{destination}|{reference}")
}

pub(super) fn change_payment(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    payment_id: &str,
    f: impl FnOnce(&mut Session) -> Result<Vec<EventType>, TransitionError>,
) -> R<Result<Outcome, OpError>> {
    let Some(session_id) = t.payment_session(payment_id)? else {
        return Ok(Err(OpError::NotFound("payment")));
    };
    let Some(mut s) = t.session(&session_id)? else {
        return Ok(Err(OpError::NotFound("checkout session")));
    };
    let before = s.clone();
    let events = match f(&mut s) {
        Ok(e) => e,
        Err(e) => return Ok(Err(e.into())),
    };
    if let Some(p) = s.payments.iter().find(|p| p.id == payment_id)
        && p.state != PaymentState::Pending
        && let Some(option) = s.payment_options.iter().find(|o| o.method == p.method)
    {
        let key = chain_pending_key(&option.destination, &p.reference);
        if t.chain_pending(&key)?
            .is_some_and(|v| v.split('@').next() == Some(payment_id))
        {
            t.drop_chain_pending(&key)?;
        }
    }
    save_session(t, cx, Some(&before), &s)?;
    emit_session_events(t, cx, &s, &events)?;
    Ok(Ok(Outcome::Session(Box::new(s))))
}

pub(super) fn revert_payment(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    payment_id: &str,
) -> R<Result<Outcome, OpError>> {
    let now = cx.now;
    let r = change_payment(t, cx, payment_id, |s| s.revert_payment(payment_id, now))?;
    if let Ok(Outcome::Session(s)) = &r
        && let Some(p) = s.payments.iter().find(|p| p.id == payment_id)
    {
        // A reorged transaction may be mined again: let the watcher match it afresh. Only
        // while the reference still names this payment: after a re-mining it names the new
        // one, and a replayed revert must not free it (one transfer, one payment).
        if t.reference(&p.reference)?.is_some_and(|v| v == payment_id) {
            t.drop_reference(&p.reference)?;
        }
    }
    Ok(r)
}

/// A bank reversed the payment `reference` names: the payment is flagged (once) and
/// `payment.reversed` sent, so a merchant who shipped on `completed` learns the money went back.
/// Not a payment (unknown, or an unmatched credit): `NotFound`, and the alert is kept as ignored.
pub(super) fn reverse_payment(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    reference: &str,
    merchant_id: &str,
    livemode: bool,
) -> R<Result<Outcome, OpError>> {
    let Some(payment_id) = t.reference(reference)? else {
        return Ok(Err(OpError::NotFound("payment")));
    };
    let Some(session_id) = t.payment_session(&payment_id)? else {
        return Ok(Err(OpError::NotFound("payment")));
    };
    let Some(mut s) = t.session(&session_id)? else {
        return Ok(Err(OpError::NotFound("payment")));
    };
    // Another merchant's (or mode's) payment is not this alert's to flag.
    if s.merchant_id != merchant_id || s.livemode != livemode {
        return Ok(Err(OpError::NotFound("payment")));
    }
    let before = s.clone();
    let Some(p) = s.payments.iter_mut().find(|p| p.id == payment_id) else {
        return Ok(Err(OpError::NotFound("payment")));
    };
    if p.reversed {
        return Ok(Ok(Outcome::Match(MatchResult::Duplicate {
            existing: payment_id,
        })));
    }
    p.reversed = true;
    save_session(t, cx, Some(&before), &s)?;
    emit_session_events(t, cx, &s, &[EventType::PaymentReversed])?;
    Ok(Ok(Outcome::Match(MatchResult::Matched {
        session: Box::new(s),
        payment_id,
    })))
}
