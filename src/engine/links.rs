//! Payment links inside a transaction: creating one, deactivating it, opening a session from
//! it (the use counted in the same step, so concurrent opens never pass `max_uses`), and the
//! counts a session's end changes (a completed sale; a use given back by a session that ended
//! with nothing received).

use super::allocate::create_session;
use super::tx::{R, Tx};
use super::{Ctx, OpError, Outcome};
use crate::domain::link::{Closed, LINK_METADATA_KEY, PaymentLink};
use crate::domain::method::Method;
use crate::domain::session::{PaymentState, Session, Status};

/// The wire code of an open refused because the link is closed (410).
pub const LINK_CLOSED: &str = "payment_link_unavailable";

pub(super) fn create(t: &mut dyn Tx, mut l: PaymentLink) -> R<Result<Outcome, OpError>> {
    l.seq = t.next_seq()?;
    t.insert_payment_link(&l)?;
    Ok(Ok(Outcome::Link(Box::new(l))))
}

pub(super) fn deactivate(
    t: &mut dyn Tx,
    merchant_id: &str,
    livemode: bool,
    id: &str,
) -> R<Result<Outcome, OpError>> {
    let Some(mut l) = t
        .payment_link(id)?
        .filter(|l| l.merchant_id == merchant_id && l.livemode == livemode)
    else {
        return Ok(Err(OpError::NotFound("payment link")));
    };
    if l.active {
        l.active = false;
        t.put_payment_link(&l)?;
    }
    Ok(Ok(Outcome::Link(Box::new(l))))
}

/// Opens a session from link `link_id`: refused when the link is closed or `session` is not
/// the link's (merchant, mode, amount); else the session is created and the use counted, both
/// or neither.
pub(super) fn open(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    link_id: &str,
    price_amount: u64,
    mut session: Session,
    methods: &[Method],
) -> R<Result<Outcome, OpError>> {
    let Some(mut l) = t.payment_link(link_id)? else {
        return Ok(Err(OpError::NotFound("payment link")));
    };
    if l.merchant_id != session.merchant_id || l.livemode != session.livemode {
        return Ok(Err(OpError::NotFound("payment link")));
    }
    if let Some(why) = l.closed(cx.now) {
        return Ok(Err(closed(why)));
    }
    if !l.accepts(price_amount) {
        return Ok(Err(OpError::Invalid(format!(
            "amount {price_amount} is outside this link's bounds"
        ))));
    }
    session
        .metadata
        .insert(LINK_METADATA_KEY.to_owned(), l.id.clone());
    // The session first: a create refused (no free slot) writes nothing, and then neither
    // does the link.
    let created = create_session(t, cx, session, methods)?;
    if created.is_ok() {
        l.uses += 1;
        t.put_payment_link(&l)?;
    }
    Ok(created)
}

fn closed(why: Closed) -> OpError {
    OpError::Conflict {
        code: LINK_CLOSED,
        message: why.message().to_owned(),
    }
}

/// Keeps a link's counts in step when one of its sessions ends: a completed session is a sale;
/// one that expired or was canceled with nothing received gives its use back.
pub(super) fn on_session_end(t: &mut dyn Tx, before: Option<&Session>, s: &Session) -> R<()> {
    let Some(id) = s.metadata.get(LINK_METADATA_KEY) else {
        return Ok(());
    };
    let was_awaiting = before.is_some_and(|b| b.status.is_awaiting());
    if !was_awaiting || s.status.is_awaiting() {
        return Ok(());
    }
    let Some(mut l) = t.payment_link(id)? else {
        return Ok(());
    };
    let empty = s.payments.iter().all(|p| p.state == PaymentState::Reverted);
    match s.status {
        Status::Complete => l.completed += 1,
        Status::Expired | Status::Canceled if empty => l.uses = l.uses.saturating_sub(1),
        _ => return Ok(()),
    }
    t.put_payment_link(&l)
}
