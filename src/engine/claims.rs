//! What a customer hands over on the checkout page (a UTR or transfer reference, the address a
//! token payment will come from) and the operator's decisions on claimed credits. The money is
//! always what the bank or chain reported; a claim only says whose it may be.

use super::observe::{CLOCK_SKEW_MS, apply_to_session, is_chain_ref, paid_after_creation};
use super::outbox::emit;
use super::tx::{R, Tx};
use super::{Credit, Ctx, MatchResult, Observed, OpError, Outcome};
use crate::domain::address::{self, lower_hex};
use crate::domain::event::EventType;
use crate::domain::session::Session;

/// Claims one session may make: enough for typos, too few to guess other people's UTRs.
const MAX_CLAIMS_PER_SESSION: usize = 5;

/// Attaches an unmatched credit to a session (the operator's decision, or a customer's claim
/// of its UTR): it becomes that session's payment, exactly as if it had matched.
fn assign_credit(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    credit_id: &str,
    session_id: &str,
) -> R<Result<MatchResult, OpError>> {
    let Some(mut credit) = t.credit(credit_id)? else {
        return Ok(Err(OpError::NotFound("credit")));
    };
    let Some(s) = t.session(session_id)? else {
        return Ok(Err(OpError::NotFound("checkout session")));
    };
    let fits = credit.status == "unmatched"
        && credit.livemode == s.livemode
        && s.payment_options
            .iter()
            .any(|p| p.destination == credit.destination);
    if !fits {
        return Ok(Err(OpError::Invalid(
            "this credit cannot be applied to this session (already used, another mode, or paid to another destination)".into(),
        )));
    }
    let o = Observed {
        destination: credit.destination.clone(),
        amount_base: credit.amount_base,
        decimals: credit.decimals,
        reference: credit.reference.clone(),
        livemode: credit.livemode,
        utr: credit.utr.clone(),
        tx_hash: credit.tx_hash.clone(),
        log_index: None,
        block_number: None,
        confirmations: 0,
        confirmed: true,
        received_at_ms: credit.received_at_ms,
        owner: None,
        only_session: Some(s.id.clone()),
        source: credit.source.clone(),
        sender: credit.sender.clone(),
        // A transfer's credit keeps its sender address there: refunds go back to it.
        from: is_chain_ref(&credit.reference)
            .then(|| credit.sender.clone())
            .flatten(),
    };
    // The credit holds the reference until now: it moves to the payment.
    t.drop_reference(&credit.reference)?;
    let result = apply_to_session(t, cx, s, o)?;
    if let MatchResult::Matched { session, .. } = &result {
        for sid in t.queued_claims(credit_id)? {
            t.unqueue_claim(credit_id, &sid)?;
        }
        credit.status = "assigned".into();
        credit.reason = format!("assigned to {}", session.id);
        t.put_credit(&credit)?;
    }
    Ok(Ok(result))
}

/// The operator attaches a credit to a session; the decision is audited as an event.
pub(super) fn operator_assign(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    credit_id: &str,
    session_id: &str,
) -> R<Result<Outcome, OpError>> {
    let r = assign_credit(t, cx, credit_id, session_id)?;
    if let Ok(MatchResult::Matched { session, .. }) = &r
        && let Some(c) = t.credit(credit_id)?
    {
        let mut data = super::credit_json(&c);
        data["session"] = serde_json::Value::from(session.id.clone());
        let (m, live) = (session.merchant_id.clone(), session.livemode);
        emit(t, cx, EventType::CreditAssigned, &m, live, data, None)?;
    }
    Ok(r.map(Outcome::Match))
}

/// The `claims` key under which a session records a declared sender address.
fn sender_claim_key(address: &str) -> String {
    format!("sender:{address}")
}

/// A token sender's address in the one form declarations are stored and compared in (internal
/// lower-case hex), or None when it is not an address.
pub fn sender_key(address: &str) -> Option<String> {
    let a = address.trim();
    address::parse(a, !a.starts_with("0x"))
        .ok()
        .map(|b| lower_hex(&b))
}

/// Whether claimed money can be tied to the claiming session's customer, beyond knowing its
/// public reference. On an address the session held whole, money that arrived during its life is
/// its own. On an address other sessions share (unique amounts), a transfer counts only when it
/// came from a sender the customer declared before its block time; a UTR only when the customer
/// handed it over before the bank's alert arrived (`before_arrival`), because once a credit is
/// listed as unmatched its UTR may be known to others.
pub(super) fn claim_tied(
    t: &mut dyn Tx,
    s: &Session,
    destination: &str,
    from: Option<&str>,
    received_at_ms: i64,
    before_arrival: bool,
) -> R<bool> {
    let Some(option) = s
        .payment_options
        .iter()
        .find(|p| p.destination == destination)
    else {
        return Ok(false);
    };
    if option.reservation_amount == 0 {
        return Ok(true);
    }
    if option.chain_id.is_none() {
        return Ok(before_arrival);
    }
    let Some(key) = from.and_then(sender_key) else {
        return Ok(false);
    };
    let declared = t.claim_at(&s.id, &sender_claim_key(&key))?;
    Ok(declared.is_some_and(|at| at < received_at_ms))
}

/// Whether money may be applied to `s` on a customer's word (a claimed reference): the session
/// awaits payment, belongs to the money's merchant and mode, was paid at its destination, the
/// money arrived during its life (a transfer: never before it), and the amount is within 10% of
/// what it asked. Anything else is for the operator to assign. Plausible is not enough on a
/// shared address: see `claim_tied`.
pub(super) fn claim_fits(
    s: &Session,
    destination: &str,
    amount: u128,
    received_at_ms: i64,
    livemode: bool,
    merchant: Option<&str>,
) -> bool {
    let Some(option) = s
        .payment_options
        .iter()
        .find(|p| p.destination == destination)
    else {
        return false;
    };
    let band = option.payable_base / 10;
    s.status.is_awaiting()
        && s.livemode == livemode
        && merchant.is_none_or(|m| m == s.merchant_id)
        && paid_after_creation(s, received_at_ms, option.chain_id.is_some())
        && received_at_ms <= s.expires_at_ms.saturating_add(CLOCK_SKEW_MS)
        && amount >= option.payable_base.saturating_sub(band)
        && amount <= option.payable_base.saturating_add(band)
}

/// Queues a claim of `credit` by `s` for the operator (once per session), and tells the
/// merchant with `credit.claimed`. Nothing moves: the operator assigns or rejects it.
pub(super) fn queue_claim(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    credit: &mut Credit,
    s: &Session,
) -> R<()> {
    if credit.status != "unmatched"
        || credit.livemode != s.livemode
        || credit.merchant_id.as_deref() != Some(s.merchant_id.as_str())
        || t.claim_queued(&credit.id, &s.id)?
    {
        return Ok(());
    }
    t.queue_claim(&credit.id, &s.id, cx.now)?;
    credit.reason = format!(
        "claimed on the checkout page of {}, but nothing ties it to that customer: for the operator to assign or reject",
        s.id
    );
    t.put_credit(credit)?;
    let mut data = super::credit_json(credit);
    data["claimed_by"] = serde_json::Value::from(s.id.clone());
    emit(
        t,
        cx,
        EventType::CreditClaimed,
        &s.merchant_id,
        s.livemode,
        data,
        None,
    )
}

/// A reference a customer handed over on a session's page. A UTR whose credit already arrived
/// (and matched nothing) is applied at once; otherwise the claim waits, and the credit, when it
/// arrives, goes to this session. The money is always what the bank or chain reported.
pub(super) fn claim(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    session_id: &str,
    reference: &str,
) -> R<Result<Outcome, OpError>> {
    let Some(s) = t.session(session_id)? else {
        return Ok(Err(OpError::NotFound("checkout session")));
    };
    let upi = reference.starts_with("upi:");
    // A test session's UTR names a test credit: test references live apart (see api::upi).
    let scoped;
    let reference = if upi && !s.livemode {
        scoped = format!("test:{reference}");
        scoped.as_str()
    } else {
        reference
    };
    let has_rail = s
        .payment_options
        .iter()
        .any(|o| o.chain_id.is_none() == upi);
    if !s.status.is_awaiting() || !has_rail {
        return Ok(Err(OpError::Invalid(
            "this session is not waiting for a payment of that kind".into(),
        )));
    }
    if t.claim_count(session_id)? >= MAX_CLAIMS_PER_SESSION {
        return Ok(Err(OpError::Invalid(format!(
            "at most {MAX_CLAIMS_PER_SESSION} references can be submitted for one payment"
        ))));
    }
    t.put_claim(session_id, reference, cx.now)?;
    if let Some(id) = t.reference(reference)? {
        if let Some(mut credit) = t.credit(&id)?
            && credit.status == "unmatched"
        {
            let from = is_chain_ref(&credit.reference)
                .then_some(credit.sender.as_deref())
                .flatten();
            if claim_fits(
                &s,
                &credit.destination,
                credit.amount_base,
                credit.received_at_ms,
                credit.livemode,
                credit.merchant_id.as_deref(),
            ) && claim_tied(
                t,
                &s,
                &credit.destination,
                from,
                credit.received_at_ms,
                false,
            )? && let Ok(m) = assign_credit(t, cx, &id, session_id)?
            {
                return Ok(Ok(Outcome::Match(m)));
            }
            // Not tied to this customer: the operator decides.
            queue_claim(t, cx, &mut credit, &s)?;
        }
        // Used, or not this session's on the customer's word: same answer.
        return Ok(Ok(Outcome::Claimed));
    }
    // Not seen yet: the first session to claim it waits for it (a later claim is recorded only).
    if t.claim_ref(reference)?.is_none() {
        t.put_claim_ref(reference, session_id)?;
    }
    Ok(Ok(Outcome::Claimed))
}

/// The operator rejects the queued claims of a credit (of one session, or all): the credit stays
/// unmatched, and the decision is an event.
pub(super) fn reject_claim(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    credit_id: &str,
    session_id: Option<&str>,
) -> R<Result<Outcome, OpError>> {
    let Some(mut credit) = t.credit(credit_id)? else {
        return Ok(Err(OpError::NotFound("credit")));
    };
    let rejected: Vec<String> = t
        .queued_claims(credit_id)?
        .into_iter()
        .filter(|sid| session_id.is_none_or(|x| x == sid))
        .collect();
    if rejected.is_empty() {
        return Ok(Err(OpError::NotFound("queued claim")));
    }
    for sid in &rejected {
        t.unqueue_claim(credit_id, sid)?;
    }
    credit.reason = format!(
        "the operator rejected the claim of {}; no session holds this money",
        rejected.join(", ")
    );
    t.put_credit(&credit)?;
    if let Some(m) = credit.merchant_id.clone() {
        let mut data = super::credit_json(&credit);
        data["rejected_claims"] = serde_json::Value::from(rejected);
        emit(
            t,
            cx,
            EventType::CreditClaimRejected,
            &m,
            credit.livemode,
            data,
            None,
        )?;
    }
    Ok(Ok(Outcome::Credit(Box::new(credit))))
}

/// Records a sender address the customer declared on the page before paying (durably, with
/// its time: only transfers in later blocks count). Counts against the session's claims.
pub(super) fn declare_sender(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    session_id: &str,
    address: &str,
) -> R<Result<Outcome, OpError>> {
    let Some(s) = t.session(session_id)? else {
        return Ok(Err(OpError::NotFound("checkout session")));
    };
    if !s.status.is_awaiting() || !s.payment_options.iter().any(|o| o.chain_id.is_some()) {
        return Ok(Err(OpError::Invalid(
            "this session is not waiting for a token payment".into(),
        )));
    }
    let key = sender_claim_key(address);
    if t.claim_at(session_id, &key)?.is_some() {
        return Ok(Ok(Outcome::Claimed));
    }
    if t.claim_count(session_id)? >= MAX_CLAIMS_PER_SESSION {
        return Ok(Err(OpError::Invalid(format!(
            "at most {MAX_CLAIMS_PER_SESSION} references or sender addresses can be submitted for one payment"
        ))));
    }
    t.put_claim(session_id, &key, cx.now)?;
    Ok(Ok(Outcome::Claimed))
}
