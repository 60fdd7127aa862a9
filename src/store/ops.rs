//! Write operations, executed by the writer inside one batch transaction. Each operation checks
//! everything before it writes anything, so a refused operation leaves no trace and the rest of
//! its batch commits.

use std::collections::BTreeSet;

use redb::{ReadableTable, Table, WriteTransaction};

use super::reservations::{ReservationIndex, res_key};
use super::tables::*;
use super::{
    Credit, IdempotencyRecord, IdempotencyWrite, MatchResult, Observed, OpError, Outcome, WriteOp,
    scope,
};
use crate::checkout::uri;
use crate::domain::address::{self, lower_hex};
use crate::domain::apikey::ApiKey;
use crate::domain::event::{Event, EventType};
use crate::domain::ids::new_id;
use crate::domain::method::{Direction, Method, Strategy};
use crate::domain::money::{format_units, minor_to_base};
use crate::domain::session::{Payment, PaymentOption, PaymentState, Session, Status};
use crate::domain::view::{rfc3339, session_json};
use crate::domain::webhook::{
    AfterAttempt, Attempt, Delivery, DeliveryState, SigningSecret, WebhookEndpoint, rotate,
};
use crate::matching::{pick_unique_amount, unique_amount_range};

/// A storage or encoding failure: fails the whole batch.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub(super) String);

macro_rules! exec_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ExecError {
            fn from(e: $t) -> Self { ExecError(e.to_string()) }
        }
    )*};
}
exec_from!(
    redb::StorageError,
    redb::TableError,
    redb::Error,
    serde_json::Error
);

pub(super) type R<T> = Result<T, ExecError>;

/// Every table, opened once per batch.
pub struct Tables<'t> {
    pub meta: Table<'t, &'static str, u64>,
    keys: Table<'t, &'static str, &'static [u8]>,
    key_ids: Table<'t, &'static str, &'static str>,
    sessions: Table<'t, &'static str, &'static [u8]>,
    session_index: Table<'t, (&'static str, u64), &'static str>,
    expiry: Table<'t, (i64, &'static str), &'static [u8]>,
    processing: Table<'t, &'static str, &'static [u8]>,
    releases: Table<'t, (i64, &'static str, u128), &'static str>,
    payments: Table<'t, &'static str, &'static str>,
    refs: Table<'t, &'static str, &'static str>,
    pub(super) credits: Table<'t, &'static str, &'static [u8]>,
    idempotency: Table<'t, &'static str, &'static [u8]>,
    idem_expiry: Table<'t, (i64, &'static str), ()>,
    pub(super) events: Table<'t, &'static str, &'static [u8]>,
    pub(super) event_index: Table<'t, (&'static str, u64), &'static str>,
    pub(super) outbox: Table<'t, (i64, &'static str), ()>,
    pub(super) deliveries: Table<'t, &'static str, &'static [u8]>,
    pub(super) event_deliveries: Table<'t, (&'static str, &'static str), ()>,
    pub(super) endpoints: Table<'t, &'static str, &'static [u8]>,
    merchant_secrets: Table<'t, &'static str, &'static [u8]>,
    pub(super) endpoint_index: Table<'t, (&'static str, &'static str), ()>,
    pub(super) outbox_lanes: Table<'t, (&'static str, i64, &'static str), ()>,
    claims: Table<'t, (&'static str, &'static str), i64>,
    claim_refs: Table<'t, &'static str, &'static str>,
    claim_queue: Table<'t, (&'static str, &'static str), i64>,
    chain_pending: Table<'t, &'static str, &'static str>,
    xpub_addresses: Table<'t, (&'static str, u32), &'static str>,
    pub(super) refunds: Table<'t, &'static str, &'static [u8]>,
    pub(super) refund_index: Table<'t, (&'static str, u64), &'static str>,
    pub(super) session_refunds: Table<'t, (&'static str, &'static str), ()>,
    pub(super) ledger: Table<'t, (&'static str, &'static str), &'static [u8]>,
    freed: Table<'t, (i64, &'static str, u128), ()>,
    pub(super) credit_index: Table<'t, (&'static str, &'static str), ()>,
    pub(super) ignored: Table<'t, &'static str, &'static [u8]>,
    pub(super) ignored_index: Table<'t, (&'static str, &'static str), ()>,
    pub(super) retention: Table<'t, &'static str, &'static str>,
}

impl<'t> Tables<'t> {
    pub fn open(txn: &'t WriteTransaction) -> Result<Tables<'t>, redb::TableError> {
        Ok(Tables {
            meta: txn.open_table(META)?,
            keys: txn.open_table(KEYS)?,
            key_ids: txn.open_table(KEY_IDS)?,
            sessions: txn.open_table(SESSIONS)?,
            session_index: txn.open_table(SESSION_INDEX)?,
            expiry: txn.open_table(EXPIRY)?,
            processing: txn.open_table(PROCESSING)?,
            releases: txn.open_table(RELEASES)?,
            payments: txn.open_table(PAYMENTS)?,
            refs: txn.open_table(REFS)?,
            credits: txn.open_table(CREDITS)?,
            idempotency: txn.open_table(IDEMPOTENCY)?,
            idem_expiry: txn.open_table(IDEM_EXPIRY)?,
            events: txn.open_table(EVENTS)?,
            event_index: txn.open_table(EVENT_INDEX)?,
            outbox: txn.open_table(OUTBOX)?,
            deliveries: txn.open_table(DELIVERIES)?,
            event_deliveries: txn.open_table(EVENT_DELIVERIES)?,
            endpoints: txn.open_table(ENDPOINTS)?,
            merchant_secrets: txn.open_table(MERCHANT_SECRETS)?,
            endpoint_index: txn.open_table(ENDPOINT_INDEX)?,
            outbox_lanes: txn.open_table(OUTBOX_LANES)?,
            claims: txn.open_table(CLAIMS)?,
            claim_refs: txn.open_table(CLAIM_REFS)?,
            claim_queue: txn.open_table(CLAIM_QUEUE)?,
            chain_pending: txn.open_table(CHAIN_PENDING)?,
            xpub_addresses: txn.open_table(XPUB_ADDRESSES)?,
            refunds: txn.open_table(REFUNDS)?,
            refund_index: txn.open_table(REFUND_INDEX)?,
            session_refunds: txn.open_table(SESSION_REFUNDS)?,
            ledger: txn.open_table(LEDGER)?,
            freed: txn.open_table(FREED)?,
            credit_index: txn.open_table(CREDIT_INDEX)?,
            ignored: txn.open_table(IGNORED)?,
            ignored_index: txn.open_table(IGNORED_INDEX)?,
            retention: txn.open_table(RETENTION)?,
        })
    }
}

/// Claims one session may make: enough for typos, too few to guess other people's UTRs.
const MAX_CLAIMS_PER_SESSION: usize = 5;

/// The writer's state that outlives a batch.
pub struct WriterState {
    pub seq: u64,
    /// Who holds which (destination, amount): see `reservations`.
    pub res: ReservationIndex,
    /// Set when the batch queued deliveries, so the notifier is woken only then.
    pub queued_deliveries: bool,
    /// How long a reservation outlives its session, for late payments.
    pub grace_ms: i64,
    /// How long ignored alerts and delivered events are kept.
    pub retention: super::credits::Retention,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs one operation (with its idempotency record, if any).
pub fn execute(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    op: WriteOp,
    idem: Option<IdempotencyWrite>,
) -> R<Result<Outcome, OpError>> {
    if let Some(i) = &idem
        && let Some(v) = t.idempotency.get(i.scope_key.as_str())?
    {
        let rec: IdempotencyRecord = serde_json::from_slice(v.value())?;
        return Ok(Ok(Outcome::Replay(rec)));
    }
    let now = now_ms();
    let result = match op {
        WriteOp::CreateSession { session, methods } => {
            create_session(t, w, *session, &methods, now)?
        }
        WriteOp::EndSession {
            merchant_id,
            livemode,
            id,
            expire,
        } => end_session(t, w, &merchant_id, livemode, &id, expire, now)?,
        WriteOp::Observe(o) => observe(t, w, *o, now)?.map(Outcome::Match),
        WriteOp::ConfirmPayment {
            payment_id,
            confirmations,
        } => change_payment(t, w, &payment_id, now, |s| {
            s.confirm_payment(&payment_id, confirmations, now)
        })?,
        WriteOp::ReversePayment {
            reference,
            merchant_id,
            livemode,
        } => reverse_payment(t, w, &reference, &merchant_id, livemode, now)?,
        WriteOp::RevertPayment { payment_id } => {
            let r = change_payment(t, w, &payment_id, now, |s| {
                s.revert_payment(&payment_id, now)
            })?;
            if let Ok(Outcome::Session(s)) = &r
                && let Some(p) = s.payments.iter().find(|p| p.id == payment_id)
            {
                // A reorged transaction may be mined again: let the watcher match it afresh. Only
                // while the reference still names this payment: after a re-mining it names the
                // new one, and a replayed revert must not free it (one transfer, one payment).
                let ours = t
                    .refs
                    .get(p.reference.as_str())?
                    .is_some_and(|v| v.value() == payment_id);
                if ours {
                    t.refs.remove(p.reference.as_str())?;
                }
            }
            r
        }
        WriteOp::Sweep {
            now_ms,
            idempotency_ttl_ms,
            limit,
        } => Ok(sweep(t, w, now_ms, idempotency_ttl_ms, limit)?),
        WriteOp::CreateKey { key, hash } => {
            t.keys
                .insert(hash.as_str(), serde_json::to_vec(&key)?.as_slice())?;
            t.key_ids.insert(key.id.as_str(), hash.as_str())?;
            Ok(Outcome::Key(key))
        }
        WriteOp::RevokeKey { key_id, now_ms } => revoke_key(t, &key_id, now_ms)?,
        WriteOp::RecordAttempt {
            delivery_id,
            attempt,
            after,
        } => record_attempt(t, &delivery_id, attempt, after)?,
        WriteOp::EnsureMerchantSecret {
            merchant_id,
            livemode,
            secret,
        } => {
            let sk = super::webhooks::secret_key(&merchant_id, livemode);
            let existing: Option<Vec<SigningSecret>> = load_json(&t.merchant_secrets, &sk)?;
            let secrets = match existing {
                Some(s) if !s.is_empty() => s,
                _ => {
                    let s = vec![SigningSecret {
                        secret,
                        expires_at_ms: None,
                    }];
                    t.merchant_secrets
                        .insert(sk.as_str(), serde_json::to_vec(&s)?.as_slice())?;
                    s
                }
            };
            Ok(Outcome::Secrets(secrets))
        }
        WriteOp::RotateMerchantSecret {
            merchant_id,
            livemode,
            secret,
            old_valid_until_ms,
        } => {
            let sk = super::webhooks::secret_key(&merchant_id, livemode);
            let existing: Vec<SigningSecret> =
                load_json(&t.merchant_secrets, &sk)?.unwrap_or_default();
            let s = rotate(&existing, secret, now, old_valid_until_ms);
            t.merchant_secrets
                .insert(sk.as_str(), serde_json::to_vec(&s)?.as_slice())?;
            Ok(Outcome::Secrets(s))
        }
        WriteOp::CreateEndpoint { endpoint } => {
            use super::webhooks::{MAX_ENDPOINTS, endpoint_ids, insert_endpoint};
            // Counted in the writer's transaction, so parallel creates cannot pass the cap.
            if endpoint_ids(t, &endpoint.merchant_id, endpoint.livemode)?.len() >= MAX_ENDPOINTS {
                Err(OpError::Conflict {
                    code: "endpoint_limit_reached",
                    message: format!(
                        "a merchant may have at most {MAX_ENDPOINTS} webhook endpoints per mode; delete one first"
                    ),
                })
            } else {
                insert_endpoint(t, &endpoint)?;
                Ok(Outcome::Endpoint(endpoint))
            }
        }
        WriteOp::DeleteEndpoint {
            merchant_id,
            livemode,
            id,
        } => match owned_endpoint(t, &merchant_id, livemode, &id)? {
            Some(ep) => {
                super::webhooks::remove_endpoint(t, &ep)?;
                Ok(Outcome::Endpoint(Box::new(ep)))
            }
            None => Err(OpError::NotFound("webhook endpoint")),
        },
        WriteOp::RotateEndpointSecret {
            merchant_id,
            livemode,
            id,
            secret,
            old_valid_until_ms,
        } => match owned_endpoint(t, &merchant_id, livemode, &id)? {
            Some(mut ep) => {
                ep.secrets = rotate(&ep.secrets, secret, now, old_valid_until_ms);
                t.endpoints
                    .insert(ep.id.as_str(), serde_json::to_vec(&ep)?.as_slice())?;
                Ok(Outcome::Endpoint(Box::new(ep)))
            }
            None => Err(OpError::NotFound("webhook endpoint")),
        },
        WriteOp::RecordIgnored { credit } => {
            super::credits::record_ignored(t, &credit)?;
            Ok(Outcome::Match(MatchResult::Unmatched { credit }))
        }
        WriteOp::Claim {
            session_id,
            reference,
        } => claim(t, w, &session_id, &reference, now)?,
        WriteOp::AssignCredit {
            credit_id,
            session_id,
        } => {
            let r = assign_credit(t, w, &credit_id, &session_id, None, now)?;
            if let Ok(MatchResult::Matched { session, .. }) = &r
                && let Some(c) = load_json::<Credit>(&t.credits, &credit_id)?
            {
                // The operator's decision is audited like any other change.
                let mut data = credit_json(&c);
                data["session"] = serde_json::Value::from(session.id.clone());
                let (m, live) = (session.merchant_id.clone(), session.livemode);
                emit(t, w, EventType::CreditAssigned, &m, live, data, None, now)?;
            }
            r.map(Outcome::Match)
        }
        WriteOp::RejectClaim {
            credit_id,
            session_id,
        } => reject_claim(t, w, &credit_id, session_id.as_deref(), now)?,
        WriteOp::DeclareSender {
            session_id,
            address,
        } => declare_sender(t, &session_id, &address, now)?,
        WriteOp::SetCursor { key, value } => {
            t.meta.insert(format!("cursor:{key}").as_str(), value)?;
            Ok(Outcome::Done)
        }
        WriteOp::Redeliver {
            merchant_id,
            livemode,
            event_id,
        } => {
            let ev: Option<Event> = load_json(&t.events, &event_id)?;
            match ev.filter(|e| e.merchant_id == merchant_id && e.livemode == livemode) {
                Some(e) => Ok(Outcome::Deliveries(schedule_deliveries(t, w, &e, now)?)),
                None => Err(OpError::NotFound("event")),
            }
        }
        WriteOp::CreateRefund {
            refund,
            method,
            amount_base,
        } => super::refunds::create(t, w, *refund, method.as_deref(), amount_base, now)?,
        WriteOp::FinishRefund { refund_id, outcome } => {
            super::refunds::finish(t, w, &refund_id, outcome, now)?
        }
        WriteOp::ReturnCredit {
            credit_id,
            reference,
        } => super::refunds::return_credit(t, &credit_id, &reference)?,
    };
    if let Some(i) = idem
        && let Some((status, body)) = (i.render)(&result)
    {
        let rec = IdempotencyRecord {
            fingerprint: i.fingerprint,
            status,
            body,
            created_at_ms: now,
        };
        t.idempotency
            .insert(i.scope_key.as_str(), serde_json::to_vec(&rec)?.as_slice())?;
        t.idem_expiry.insert((now, i.scope_key.as_str()), ())?;
    }
    Ok(result)
}

pub(super) fn load_session(t: &Tables<'_>, id: &str) -> R<Option<Session>> {
    match t.sessions.get(id)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

/// The session holding (dest, amount) in this mode right now, or holding the whole address. A
/// reused slot has one holder, its most recent session: see `create_session`.
fn holder(w: &WriterState, dest: &str, livemode: bool, amount: u128, now: i64) -> Option<String> {
    let dest = res_key(dest, livemode);
    [amount, 0].into_iter().find_map(|key| {
        w.res
            .get(&dest, key)
            .filter(|r| r.is_held(now))
            .map(|r| r.session_id.clone())
    })
}

/// Amounts at `dest` within [lo, hi] held now, plus any held by this very operation.
fn held_amounts(
    w: &WriterState,
    dest: &str,
    lo: u128,
    hi: u128,
    now: i64,
    pending: &[(String, u128)],
) -> BTreeSet<u128> {
    let mut held: BTreeSet<u128> = w.res.held_in(dest, lo, hi, now).collect();
    held.extend(pending.iter().filter(|(d, _)| d == dest).map(|(_, a)| *a));
    held
}

fn address_busy(w: &WriterState, dest: &str, now: i64, pending: &[(String, u128)]) -> bool {
    pending.iter().any(|(d, _)| d == dest) || w.res.any_held(dest, now)
}

fn create_session(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    mut s: Session,
    methods: &[Method],
    now: i64,
) -> R<Result<Outcome, OpError>> {
    let note = s
        .description
        .clone()
        .or_else(|| s.client_reference_id.clone())
        .unwrap_or_default();
    let mut pending: Vec<(String, u128)> = Vec::new();
    // (counter key, index, address) of xpub addresses handed out, written only once every
    // method found a slot.
    let mut xpub_writes: Vec<(String, u32, String)> = Vec::new();
    let mut options = Vec::with_capacity(methods.len());
    for m in methods {
        let decimals = m.decimals();
        let Some(base) = minor_to_base(s.amount, decimals) else {
            return Ok(Err(OpError::Invalid(format!(
                "amount {} cannot be expressed in {} with {decimals} decimals",
                s.amount, m.name
            ))));
        };
        let (pay_to, payable, res_amount) = match &m.strategy {
            Strategy::UniqueAmount {
                pay_to,
                step,
                window,
                direction,
            } => {
                let dest = res_key(&m.destination_key(pay_to), s.livemode);
                if w.res.get(&dest, 0).is_some_and(|r| r.is_held(now)) {
                    return Ok(Err(no_slot(
                        m,
                        s.amount,
                        "its address is held whole",
                        "retry when that session ends",
                    )));
                }
                let (lo, hi) = unique_amount_range(base, *step, *window, *direction);
                let held = held_amounts(w, &dest, lo, hi, now, &pending);
                let label = (m.name.as_str(), s.livemode, decimals);
                match pick_slot(
                    w, &dest, label, base, *step, *window, *direction, &held, now,
                ) {
                    Some(p) => (pay_to.clone(), p, p),
                    None => {
                        crate::metrics::METRICS.slots_exhausted(&m.name);
                        return Ok(Err(no_slot(
                            m,
                            s.amount,
                            &format!(
                                "all {window} payable amounts of this price ({window} steps of {}) are held by sessions awaiting payment or paid within the grace period",
                                format_units(*step, decimals)
                            ),
                            &format!(
                                "capacity per price is the method's window: raise `window` of method {} in the config (each step is one more step the payable amount may drift from the price), or retry when sessions end",
                                m.name
                            ),
                        )));
                    }
                }
            }
            Strategy::AddressPool { addresses } => {
                let mut chosen = None;
                for a in addresses {
                    let key = res_key(&m.destination_key(a), s.livemode);
                    if !address_busy(w, &key, now, &pending) {
                        chosen = Some(a.clone());
                        break;
                    }
                }
                if chosen.is_none() {
                    // Every address is held: reuse the one released longest ago by a session
                    // that received nothing, if any.
                    chosen = addresses
                        .iter()
                        .filter_map(|a| {
                            let key = res_key(&m.destination_key(a), s.livemode);
                            if pending.iter().any(|(d, _)| *d == key)
                                || w.res.held_in(&key, 0, u128::MAX, now).next().is_some()
                            {
                                return None;
                            }
                            w.res
                                .reusable_in(&key, 0, 0, now)
                                .next()
                                .map(|(_, u)| (u, a))
                        })
                        .min_by_key(|(u, _)| *u)
                        .map(|(_, a)| a.clone());
                }
                match chosen {
                    Some(a) => (a, base, 0),
                    None => {
                        crate::metrics::METRICS.slots_exhausted(&m.name);
                        return Ok(Err(no_slot(
                            m,
                            s.amount,
                            &format!(
                                "all {} pool addresses are held by sessions awaiting payment or paid within the grace period",
                                addresses.len()
                            ),
                            &format!(
                                "add addresses to pay_to_pool of method {} in the config, or retry when sessions end",
                                m.name
                            ),
                        )));
                    }
                }
            }
            Strategy::Xpub { xpub } => {
                let counter = format!("xpub_next:{}", xpub.as_str());
                let used = xpub_writes.iter().filter(|(k, _, _)| *k == counter).count() as u64;
                let next = t.meta.get(counter.as_str())?.map_or(0, |v| v.value()) + used;
                let derived = u32::try_from(next)
                    .ok()
                    .and_then(|i| xpub.address(i).ok().map(|a| (i, a)));
                let Some((index, bytes)) = derived else {
                    return Ok(Err(no_slot(
                        m,
                        s.amount,
                        "the xpub has no derivable address left at this index",
                        "configure a new xpub for this method",
                    )));
                };
                let tron = matches!(
                    m.rail,
                    crate::domain::method::Rail::Token { tron: true, .. }
                );
                xpub_writes.push((counter, index, lower_hex(&bytes)));
                (address::display(&bytes, tron), base, 0)
            }
        };
        let dest = m.destination_key(&pay_to);
        pending.push((res_key(&dest, s.livemode), res_amount));
        let (network, chain_id, token, token_contract) = match &m.rail {
            crate::domain::method::Rail::Token {
                network,
                chain_id,
                symbol,
                contract,
                ..
            } => (
                Some(network.clone()),
                Some(*chain_id),
                Some(symbol.clone()),
                Some(contract.clone()),
            ),
            crate::domain::method::Rail::Upi { .. } => (None, None, None, None),
        };
        options.push(PaymentOption {
            method: m.name.clone(),
            network,
            chain_id,
            token,
            token_contract,
            uri: uri::for_method(m, &pay_to, payable, &s.id, &note),
            pay_to,
            payable_base: payable,
            decimals,
            destination: dest,
            reservation_amount: res_amount,
            confirmations_required: m.confirmations(),
            // At least 90% must arrive whatever the configured tolerance: an absolute tolerance
            // sized for fees must not let a small session complete on dust.
            underpayment_tolerance: m.underpayment_tolerance.min(payable / 10),
        });
    }
    // Everything is free: now write.
    for (counter, index, addr) in &xpub_writes {
        t.meta.insert(counter.as_str(), u64::from(*index) + 1)?;
        let xpub = counter.trim_start_matches("xpub_next:");
        t.xpub_addresses.insert((xpub, *index), addr.as_str())?;
    }
    for (dest, amount) in &pending {
        let r = Reservation {
            session_id: s.id.clone(),
            held_until_ms: None,
            reusable: false,
        };
        // A pair past its grace but not yet swept, or freed by a session that received nothing,
        // is reused: drop its release entries too. This session is now its only holder.
        if let Some(old) = w.res.insert(dest, *amount, r)
            && let Some(until) = old.held_until_ms
        {
            t.releases.remove((until, dest.as_str(), *amount))?;
            if old.reusable {
                t.freed.remove((until, dest.as_str(), *amount))?;
                if old.is_held(now) {
                    crate::metrics::METRICS.slot_reused();
                }
            }
        }
    }
    s.payment_options = options;
    w.seq += 1;
    s.seq = w.seq;
    let sc = scope(&s.merchant_id, s.livemode);
    t.session_index
        .insert((sc.as_str(), s.seq), s.id.as_str())?;
    save_session(t, w, None, &s, now)?;
    Ok(Ok(Outcome::Session(Box::new(s))))
}

/// The 503's text: which limit was hit, why, and what fixes it.
fn no_slot(m: &Method, amount: u64, why: &str, fix: &str) -> OpError {
    OpError::NoSlot(format!(
        "no payment slot is free for {} at amount {amount}: {why}; {fix}",
        m.name
    ))
}

/// Whether `a` is one of the amounts a `unique_amount` allocation at `base` may hand out.
fn on_grid(base: u128, step: u128, direction: Direction, a: u128) -> bool {
    let delta = match direction {
        Direction::Up => a.checked_sub(base),
        Direction::Down => base.checked_sub(a),
    };
    delta.is_some_and(|d| d % step == 0)
}

/// The payable amount for a new session at `base`: the first step nobody holds; else, only when
/// none is left, the step released longest ago by a session that received nothing (so a late
/// payment to a freed slot still reaches its session for as long as possible). Records the
/// price's capacity use for the metrics and the console.
#[allow(clippy::too_many_arguments)]
fn pick_slot(
    w: &WriterState,
    dest: &str,
    (method, livemode, decimals): (&str, bool, u32),
    base: u128,
    step: u128,
    window: u32,
    direction: Direction,
    held: &BTreeSet<u128>,
    now: i64,
) -> Option<u128> {
    let (lo, hi) = unique_amount_range(base, step, window, direction);
    let reusable: Vec<(u128, i64)> = w
        .res
        .reusable_in(dest, lo, hi, now)
        .filter(|(a, _)| on_grid(base, step, direction, *a) && !held.contains(a))
        .collect();
    let mut taken = held.clone();
    taken.extend(reusable.iter().map(|(a, _)| *a));
    let fresh = pick_unique_amount(base, step, window, direction, &taken);
    let picked = fresh.or_else(|| {
        reusable
            .iter()
            .min_by_key(|(a, u)| (*u, *a))
            .map(|(a, _)| *a)
    });
    let fixed = held
        .iter()
        .filter(|a| on_grid(base, step, direction, **a))
        .count();
    let freed = reusable.len() - usize::from(picked.is_some() && fresh.is_none());
    crate::metrics::METRICS.slot_usage(
        method,
        livemode,
        base,
        fixed + usize::from(picked.is_some()),
        freed,
        (window, decimals),
    );
    picked
}

/// Persists a session and keeps the expiry queue, the processing set and the reservations in
/// step with its status.
fn save_session(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    before: Option<&Session>,
    s: &Session,
    now: i64,
) -> R<()> {
    let holds = || {
        let keys: Vec<(String, u128)> = s
            .payment_options
            .iter()
            .map(|o| (res_key(&o.destination, s.livemode), o.reservation_amount))
            .collect();
        encode_holds(keys.iter().map(|(d, a)| (d.as_str(), *a)))
    };
    let was = before.map(|b| b.status);
    if was != Some(s.status) {
        if let Some(b) = before {
            match b.status {
                Status::Open => {
                    t.expiry.remove((b.expires_at_ms, b.id.as_str()))?;
                }
                Status::Processing => {
                    t.processing.remove(b.id.as_str())?;
                }
                _ => {}
            }
        }
        match s.status {
            Status::Open => {
                t.expiry
                    .insert((s.expires_at_ms, s.id.as_str()), holds().as_slice())?;
            }
            Status::Processing => {
                t.processing.insert(s.id.as_str(), holds().as_slice())?;
            }
            _ => {}
        }
    }
    let was_awaiting = before.is_none_or(|b| b.status.is_awaiting());
    // Nothing received (or all of it reverted): the slot may go to a new session before its
    // grace ends, when no free one is left.
    let empty = s.payments.iter().all(|p| p.state == PaymentState::Reverted);
    if !s.status.is_awaiting() {
        let until = now.saturating_add(w.grace_ms);
        for o in &s.payment_options {
            let amount = o.reservation_amount;
            let mut key = res_key(&o.destination, s.livemode);
            if w.res.get(&key, amount).is_none_or(|r| r.session_id != s.id) {
                // Holds written before test mode had a namespace of its own.
                key = o.destination.clone();
            }
            let Some(r) = w.res.get_mut(&key, amount).filter(|r| r.session_id == s.id) else {
                continue;
            };
            if was_awaiting {
                r.held_until_ms = Some(until);
                r.reusable = empty;
                t.releases
                    .insert((until, key.as_str(), amount), s.id.as_str())?;
                if empty {
                    t.freed.insert((until, key.as_str(), amount), ())?;
                }
            } else if r.reusable && !empty {
                // Late money arrived: the slot is this session's again for the rest of its grace.
                r.reusable = false;
                if let Some(u) = r.held_until_ms {
                    t.freed.remove((u, key.as_str(), amount))?;
                }
            }
        }
    }
    super::refunds::ledger_on_save(t, before, s)?;
    t.sessions
        .insert(s.id.as_str(), serde_json::to_vec(s)?.as_slice())?;
    Ok(())
}

/// Writes an event and queues it in the outbox.
#[allow(clippy::too_many_arguments)]
pub(super) fn emit(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    kind: EventType,
    merchant_id: &str,
    livemode: bool,
    data: serde_json::Value,
    notify_url: Option<String>,
    now: i64,
) -> R<()> {
    w.seq += 1;
    let e = Event {
        id: new_id("evt"),
        kind,
        merchant_id: merchant_id.to_owned(),
        livemode,
        created_at_ms: now,
        data,
        notify_url,
        seq: w.seq,
    };
    t.events
        .insert(e.id.as_str(), serde_json::to_vec(&e)?.as_slice())?;
    let sc = scope(merchant_id, livemode);
    t.event_index.insert((sc.as_str(), e.seq), e.id.as_str())?;
    schedule_deliveries(t, w, &e, now)?;
    Ok(())
}

/// Queues the event for each destination that wants it: the session's notify_url and every
/// matching endpoint of the merchant and mode. Same transaction as the event, so a committed
/// change always has its callbacks queued.
fn schedule_deliveries(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    e: &Event,
    now: i64,
) -> R<Vec<Delivery>> {
    let mut targets: Vec<(Option<String>, String)> = Vec::new();
    if let Some(u) = &e.notify_url {
        targets.push((None, u.clone()));
    }
    for id in super::webhooks::endpoint_ids(t, &e.merchant_id, e.livemode)? {
        let Some(ep) = load_json::<WebhookEndpoint>(&t.endpoints, &id)? else {
            continue;
        };
        if ep.merchant_id == e.merchant_id && ep.livemode == e.livemode && ep.wants(e.kind) {
            targets.push((Some(ep.id), ep.url));
        }
    }
    let mut out = Vec::with_capacity(targets.len());
    for (endpoint_id, url) in targets {
        let d = Delivery {
            id: new_id("dl"),
            event_id: e.id.clone(),
            merchant_id: e.merchant_id.clone(),
            livemode: e.livemode,
            endpoint_id,
            url,
            attempts: vec![],
            state: DeliveryState::Pending,
            next_attempt_ms: Some(now),
        };
        t.deliveries
            .insert(d.id.as_str(), serde_json::to_vec(&d)?.as_slice())?;
        t.event_deliveries
            .insert((e.id.as_str(), d.id.as_str()), ())?;
        super::webhooks::enqueue(t, &d, now)?;
        w.queued_deliveries = true;
        out.push(d);
    }
    Ok(out)
}

pub(super) fn load_json<T: serde::de::DeserializeOwned>(
    table: &Table<'_, &'static str, &'static [u8]>,
    key: &str,
) -> R<Option<T>> {
    match table.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

/// Records an attempt and moves the delivery on (done, or rescheduled in the outbox).
fn record_attempt(
    t: &mut Tables<'_>,
    delivery_id: &str,
    attempt: Attempt,
    after: AfterAttempt,
) -> R<Result<Outcome, OpError>> {
    let Some(mut d) = load_json::<Delivery>(&t.deliveries, delivery_id)? else {
        return Ok(Err(OpError::NotFound("delivery")));
    };
    if let Some(due) = d.next_attempt_ms {
        super::webhooks::dequeue(t, &d, due)?;
    }
    d.attempts.push(attempt);
    match after {
        AfterAttempt::Succeeded => {
            d.state = DeliveryState::Succeeded;
            d.next_attempt_ms = None;
        }
        AfterAttempt::Failed => {
            d.state = DeliveryState::Failed;
            d.next_attempt_ms = None;
        }
        AfterAttempt::RetryAt(at) => {
            d.state = DeliveryState::Pending;
            d.next_attempt_ms = Some(at);
            super::webhooks::enqueue(t, &d, at)?;
        }
    }
    t.deliveries
        .insert(d.id.as_str(), serde_json::to_vec(&d)?.as_slice())?;
    Ok(Ok(Outcome::Deliveries(vec![d])))
}

fn emit_session_events(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    s: &Session,
    events: &[EventType],
    now: i64,
) -> R<()> {
    if events.is_empty() {
        return Ok(());
    }
    let data = session_json(s);
    for kind in events {
        crate::metrics::METRICS.session_event(kind.as_str());
        emit(
            t,
            w,
            *kind,
            &s.merchant_id,
            s.livemode,
            data.clone(),
            s.notify_url.clone(),
            now,
        )?;
    }
    Ok(())
}

fn end_session(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    merchant_id: &str,
    livemode: bool,
    id: &str,
    expire: bool,
    now: i64,
) -> R<Result<Outcome, OpError>> {
    let Some(mut s) =
        load_session(t, id)?.filter(|s| s.merchant_id == merchant_id && s.livemode == livemode)
    else {
        return Ok(Err(OpError::NotFound("checkout session")));
    };
    let before = s.clone();
    let r = if expire {
        s.expire_now(now)
    } else {
        s.cancel(now)
    };
    let kind = match r {
        Ok(k) => k,
        Err(e) => return Ok(Err(e.into())),
    };
    save_session(t, w, Some(&before), &s, now)?;
    emit_session_events(t, w, &s, &[kind], now)?;
    Ok(Ok(Outcome::Session(Box::new(s))))
}

fn observe(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    o: Observed,
    now: i64,
) -> R<Result<MatchResult, OpError>> {
    if let Some(existing) = t.refs.get(o.reference.as_str())? {
        return Ok(Ok(MatchResult::Duplicate {
            existing: existing.value().to_owned(),
        }));
    }
    let found = holder(w, &o.destination, o.livemode, o.amount_base, now);
    // A customer may have claimed this reference on a session's page before the money was seen.
    let claimed = if found.is_none() && o.only_session.is_none() {
        t.claim_refs
            .get(o.reference.as_str())?
            .map(|v| v.value().to_owned())
    } else {
        None
    };
    if let Some(sid) = claimed {
        // A claim only ever routes money that plausibly is that session's; anything else stays
        // an unmatched credit for the operator (never an error: a bad claim must not block).
        let chain = is_chain_ref(&o.reference);
        let s = load_session(t, &sid)?;
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
            return Ok(Ok(apply_to_session(t, w, s, o, now)?));
        }
        if !o.confirmed && chain {
            // Not final yet: nothing is recorded (nor queued) until it is.
            return Ok(Ok(MatchResult::Deferred));
        }
        let result = unmatched(t, w, o, now)?;
        if let (Some(s), MatchResult::Unmatched { credit }) = (&s, &result) {
            let mut c = (**credit).clone();
            queue_claim(t, w, &mut c, s, now)?;
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
            let s = load_session(t, only)?;
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
        (None, Some(f)) => load_session(t, &f)?,
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
        return Ok(Ok(unmatched(t, w, o, now)?));
    };
    Ok(Ok(apply_to_session(t, w, s, o, now)?))
}

/// How far a reported receipt time may precede a session's creation (clock skew between phones,
/// banks and this server). Not for chain money: a block time is the chain's own record.
const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Whether a reference names a transfer on a chain (whose receipt time is its block's time).
fn is_chain_ref(reference: &str) -> bool {
    reference.starts_with("evm:")
}

/// Whether money received at `received_at_ms` may pay `s`: a transfer only if its block is no
/// older than the session (block times have whole seconds, so the session's creation second
/// counts), other money within the clock skew of phones and banks.
fn paid_after_creation(s: &Session, received_at_ms: i64, chain: bool) -> bool {
    if chain {
        received_at_ms
            >= s.created_at_ms
                .saturating_sub(s.created_at_ms.rem_euclid(1000))
    } else {
        received_at_ms >= s.created_at_ms.saturating_sub(CLOCK_SKEW_MS)
    }
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
fn claim_tied(
    t: &Tables<'_>,
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
    let declared = t
        .claims
        .get((s.id.as_str(), sender_claim_key(&key).as_str()))?
        .map(|v| v.value());
    Ok(declared.is_some_and(|at| at < received_at_ms))
}

/// Queues a claim of `credit` by `s` for the operator (once per session), and tells the
/// merchant with `credit.claimed`. Nothing moves: the operator assigns or rejects it.
fn queue_claim(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    credit: &mut Credit,
    s: &Session,
    now: i64,
) -> R<()> {
    if credit.status != "unmatched"
        || credit.livemode != s.livemode
        || credit.merchant_id.as_deref() != Some(s.merchant_id.as_str())
        || t.claim_queue
            .get((credit.id.as_str(), s.id.as_str()))?
            .is_some()
    {
        return Ok(());
    }
    t.claim_queue
        .insert((credit.id.as_str(), s.id.as_str()), now)?;
    credit.reason = format!(
        "claimed on the checkout page of {}, but nothing ties it to that customer: for the operator to assign or reject",
        s.id
    );
    t.credits
        .insert(credit.id.as_str(), serde_json::to_vec(&credit)?.as_slice())?;
    let mut data = credit_json(credit);
    data["claimed_by"] = serde_json::Value::from(s.id.clone());
    emit(
        t,
        w,
        EventType::CreditClaimed,
        &s.merchant_id,
        s.livemode,
        data,
        None,
        now,
    )
}

/// The operator rejects the queued claims of a credit (of one session, or all): the credit stays
/// unmatched, and the decision is an event.
fn reject_claim(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    credit_id: &str,
    session_id: Option<&str>,
    now: i64,
) -> R<Result<Outcome, OpError>> {
    let Some(mut credit) = load_json::<Credit>(&t.credits, credit_id)? else {
        return Ok(Err(OpError::NotFound("credit")));
    };
    let queued: Vec<String> = t
        .claim_queue
        .range((credit_id, "")..=(credit_id, "\u{10FFFF}"))?
        .map(|e| e.map(|(k, _)| k.value().1.to_owned()))
        .collect::<Result<_, _>>()?;
    let rejected: Vec<String> = queued
        .into_iter()
        .filter(|sid| session_id.is_none_or(|x| x == sid))
        .collect();
    if rejected.is_empty() {
        return Ok(Err(OpError::NotFound("queued claim")));
    }
    for sid in &rejected {
        t.claim_queue.remove((credit_id, sid.as_str()))?;
    }
    credit.reason = format!(
        "the operator rejected the claim of {}; no session holds this money",
        rejected.join(", ")
    );
    t.credits
        .insert(credit.id.as_str(), serde_json::to_vec(&credit)?.as_slice())?;
    if let Some(m) = credit.merchant_id.clone() {
        let mut data = credit_json(&credit);
        data["rejected_claims"] = serde_json::Value::from(rejected);
        emit(
            t,
            w,
            EventType::CreditClaimRejected,
            &m,
            credit.livemode,
            data,
            None,
            now,
        )?;
    }
    Ok(Ok(Outcome::Credit(Box::new(credit))))
}

/// Records a sender address the customer declared on the page before paying (durably, with
/// its time: only transfers in later blocks count). Counts against the session's claims.
fn declare_sender(
    t: &mut Tables<'_>,
    session_id: &str,
    address: &str,
    now: i64,
) -> R<Result<Outcome, OpError>> {
    let Some(s) = load_session(t, session_id)? else {
        return Ok(Err(OpError::NotFound("checkout session")));
    };
    if !s.status.is_awaiting() || !s.payment_options.iter().any(|o| o.chain_id.is_some()) {
        return Ok(Err(OpError::Invalid(
            "this session is not waiting for a token payment".into(),
        )));
    }
    let key = sender_claim_key(address);
    if t.claims.get((session_id, key.as_str()))?.is_some() {
        return Ok(Ok(Outcome::Claimed));
    }
    let existing = t
        .claims
        .range((session_id, "")..=(session_id, "\u{10FFFF}"))?
        .count();
    if existing >= MAX_CLAIMS_PER_SESSION {
        return Ok(Err(OpError::Invalid(format!(
            "at most {MAX_CLAIMS_PER_SESSION} references or sender addresses can be submitted for one payment"
        ))));
    }
    t.claims.insert((session_id, key.as_str()), now)?;
    Ok(Ok(Outcome::Claimed))
}

fn owner_merchant(o: &Observed) -> Option<&str> {
    o.owner.as_ref().map(|(m, _)| m.as_str())
}

/// Whether money may be applied to `s` on a customer's word (a claimed reference): the session
/// awaits payment, belongs to the money's merchant and mode, was paid at its destination, the
/// money arrived during its life (a transfer: never before it), and the amount is within 10% of
/// what it asked. Anything else is for the operator to assign. Plausible is not enough on a
/// shared address: see `claim_tied`.
fn claim_fits(
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

/// Records `o` as a payment of `s` (whose options include its destination, else it becomes an
/// unmatched credit) and moves the session on.
fn apply_to_session(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    mut s: Session,
    o: Observed,
    now: i64,
) -> R<MatchResult> {
    let Some(option) = s
        .payment_options
        .iter()
        .find(|p| p.destination == o.destination)
        .cloned()
    else {
        return unmatched(t, w, o, now);
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
    crate::metrics::METRICS.payment(&payment.method);
    let before = s.clone();
    let events = s.apply_payment(payment, now);
    t.refs.insert(o.reference.as_str(), payment_id.as_str())?;
    if awaits_confirmations {
        let value = format!("{payment_id}@{}", o.block_number.unwrap_or(0));
        t.chain_pending.insert(
            chain_pending_key(&option.destination, &o.reference).as_str(),
            value.as_str(),
        )?;
    }
    t.payments.insert(payment_id.as_str(), s.id.as_str())?;
    if t.claim_refs.get(o.reference.as_str())?.is_some() {
        t.claim_refs.remove(o.reference.as_str())?;
    }
    save_session(t, w, Some(&before), &s, now)?;
    emit_session_events(t, w, &s, &events, now)?;
    Ok(MatchResult::Matched {
        session: Box::new(s),
        payment_id,
    })
}

/// Attaches an unmatched credit to a session (the operator's decision, or a customer's claim
/// of its UTR): it becomes that session's payment, exactly as if it had matched.
fn assign_credit(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    credit_id: &str,
    session_id: &str,
    scope: Option<(&str, bool)>,
    now: i64,
) -> R<Result<MatchResult, OpError>> {
    let Some(mut credit) = load_json::<Credit>(&t.credits, credit_id)? else {
        return Ok(Err(OpError::NotFound("credit")));
    };
    let Some(s) = load_session(t, session_id)? else {
        return Ok(Err(OpError::NotFound("checkout session")));
    };
    if let Some((merchant, livemode)) = scope
        && (s.merchant_id != merchant
            || s.livemode != livemode
            || credit.merchant_id.as_deref() != Some(merchant))
    {
        return Ok(Err(OpError::NotFound("checkout session")));
    }
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
    let result = apply_to_session(t, w, s, o, now)?;
    if let MatchResult::Matched { session, .. } = &result {
        let queued: Vec<String> = t
            .claim_queue
            .range((credit_id, "")..=(credit_id, "\u{10FFFF}"))?
            .map(|e| e.map(|(k, _)| k.value().1.to_owned()))
            .collect::<Result<_, _>>()?;
        for sid in queued {
            t.claim_queue.remove((credit_id, sid.as_str()))?;
        }
        credit.status = "assigned".into();
        credit.reason = format!("assigned to {}", session.id);
        t.credits
            .insert(credit.id.as_str(), serde_json::to_vec(&credit)?.as_slice())?;
    }
    Ok(Ok(result))
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

fn unmatched(t: &mut Tables<'_>, w: &mut WriterState, o: Observed, now: i64) -> R<MatchResult> {
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
    t.credits
        .insert(credit.id.as_str(), serde_json::to_vec(&credit)?.as_slice())?;
    super::credits::index(t, &credit)?;
    t.refs
        .insert(credit.reference.as_str(), credit.id.as_str())?;
    if let Some(m) = &credit.merchant_id {
        emit(
            t,
            w,
            EventType::CreditUnmatched,
            m,
            credit.livemode,
            credit_json(&credit),
            None,
            now,
        )?;
    }
    Ok(MatchResult::Unmatched {
        credit: Box::new(credit),
    })
}

/// `<destination>|<reference>`: a chain watcher lists its own pending payments by the prefix
/// of its destinations (chain and token contract).
fn chain_pending_key(destination: &str, reference: &str) -> String {
    format!("{destination}|{reference}")
}

fn change_payment(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    payment_id: &str,
    now: i64,
    f: impl FnOnce(&mut Session) -> Result<Vec<EventType>, crate::domain::session::TransitionError>,
) -> R<Result<Outcome, OpError>> {
    let session_id = match t.payments.get(payment_id)? {
        Some(v) => v.value().to_owned(),
        None => return Ok(Err(OpError::NotFound("payment"))),
    };
    let Some(mut s) = load_session(t, &session_id)? else {
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
        if t.chain_pending
            .get(key.as_str())?
            .is_some_and(|v| v.value().split('@').next() == Some(payment_id))
        {
            t.chain_pending.remove(key.as_str())?;
        }
    }
    save_session(t, w, Some(&before), &s, now)?;
    emit_session_events(t, w, &s, &events, now)?;
    Ok(Ok(Outcome::Session(Box::new(s))))
}

fn sweep(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    now: i64,
    idem_ttl: i64,
    limit: usize,
) -> R<Outcome> {
    let due: Vec<(i64, String)> = t
        .expiry
        .range(..(now.saturating_add(1), ""))?
        .take(limit)
        .map(|e| e.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
        .collect::<Result<_, _>>()?;
    let mut expired = 0;
    for (at, id) in due {
        match load_session(t, &id)? {
            Some(mut s) if s.status == Status::Open => {
                let before = s.clone();
                if let Some(kind) = s.expire_if_due(now) {
                    save_session(t, w, Some(&before), &s, now)?;
                    emit_session_events(t, w, &s, &[kind], now)?;
                    expired += 1;
                }
            }
            _ => {
                t.expiry.remove((at, id.as_str()))?;
            }
        }
    }
    let releases: Vec<(i64, String, u128)> = t
        .releases
        .range(..(now.saturating_add(1), "", 0u128))?
        .take(limit)
        .map(|e| {
            e.map(|(k, _)| {
                let (a, b, c) = k.value();
                (a, b.to_owned(), c)
            })
        })
        .collect::<Result<_, _>>()?;
    let released = releases.len();
    for (until, dest, amount) in releases {
        t.releases.remove((until, dest.as_str(), amount))?;
        t.freed.remove((until, dest.as_str(), amount))?;
        w.res.release(&dest, amount, until);
    }
    let old: Vec<(i64, String)> = t
        .idem_expiry
        .range(..(now.saturating_sub(idem_ttl), ""))?
        .take(limit)
        .map(|e| e.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
        .collect::<Result<_, _>>()?;
    let mut forgotten = old.len();
    for (at, key) in old {
        t.idem_expiry.remove((at, key.as_str()))?;
        t.idempotency.remove(key.as_str())?;
    }
    // Retention shares the budget, so a full sweep still reads as "more to do".
    forgotten += super::credits::prune(t, w, now, limit.saturating_sub(forgotten))?;
    Ok(Outcome::Swept {
        expired,
        released,
        forgotten,
    })
}

/// A bank reversed the payment `reference` names: the payment is flagged (once) and
/// `payment.reversed` sent, so a merchant who shipped on `completed` learns the money went back.
/// Not a payment (unknown, or an unmatched credit): `NotFound`, and the alert is kept as ignored.
fn reverse_payment(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    reference: &str,
    merchant_id: &str,
    livemode: bool,
    now: i64,
) -> R<Result<Outcome, OpError>> {
    let Some(payment_id) = t.refs.get(reference)?.map(|v| v.value().to_owned()) else {
        return Ok(Err(OpError::NotFound("payment")));
    };
    let Some(session_id) = t
        .payments
        .get(payment_id.as_str())?
        .map(|v| v.value().to_owned())
    else {
        return Ok(Err(OpError::NotFound("payment")));
    };
    let Some(mut s) = load_session(t, &session_id)? else {
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
    save_session(t, w, Some(&before), &s, now)?;
    emit_session_events(t, w, &s, &[EventType::PaymentReversed], now)?;
    Ok(Ok(Outcome::Match(MatchResult::Matched {
        session: Box::new(s),
        payment_id,
    })))
}

/// A reference a customer handed over on a session's page. A UTR whose credit already arrived
/// (and matched nothing) is applied at once; otherwise the claim waits, and the credit, when it
/// arrives, goes to this session. The money is always what the bank or chain reported.
fn claim(
    t: &mut Tables<'_>,
    w: &mut WriterState,
    session_id: &str,
    reference: &str,
    now: i64,
) -> R<Result<Outcome, OpError>> {
    let Some(s) = load_session(t, session_id)? else {
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
    let existing = t
        .claims
        .range((session_id, "")..=(session_id, "\u{10FFFF}"))?
        .count();
    if existing >= MAX_CLAIMS_PER_SESSION {
        return Ok(Err(OpError::Invalid(format!(
            "at most {MAX_CLAIMS_PER_SESSION} references can be submitted for one payment"
        ))));
    }
    t.claims.insert((session_id, reference), now)?;
    let used_by = t.refs.get(reference)?.map(|v| v.value().to_owned());
    if let Some(id) = used_by {
        if let Some(mut credit) = load_json::<Credit>(&t.credits, &id)?
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
            )? && let Ok(m) = assign_credit(t, w, &id, session_id, None, now)?
            {
                return Ok(Ok(Outcome::Match(m)));
            }
            // Not tied to this customer: the operator decides.
            queue_claim(t, w, &mut credit, &s, now)?;
        }
        // Used, or not this session's on the customer's word: same answer.
        return Ok(Ok(Outcome::Claimed));
    }
    // Not seen yet: the first session to claim it waits for it (a later claim is recorded only).
    if t.claim_refs.get(reference)?.is_none() {
        t.claim_refs.insert(reference, session_id)?;
    }
    Ok(Ok(Outcome::Claimed))
}

fn owned_endpoint(
    t: &Tables<'_>,
    merchant_id: &str,
    livemode: bool,
    id: &str,
) -> R<Option<WebhookEndpoint>> {
    Ok(load_json::<WebhookEndpoint>(&t.endpoints, id)?
        .filter(|ep| ep.merchant_id == merchant_id && ep.livemode == livemode))
}

fn revoke_key(t: &mut Tables<'_>, key_id: &str, now: i64) -> R<Result<Outcome, OpError>> {
    let Some(hash) = t.key_ids.get(key_id)?.map(|v| v.value().to_owned()) else {
        return Ok(Err(OpError::NotFound("API key")));
    };
    let Some(bytes) = t.keys.get(hash.as_str())?.map(|v| v.value().to_vec()) else {
        return Ok(Err(OpError::NotFound("API key")));
    };
    let mut key: ApiKey = serde_json::from_slice(&bytes)?;
    if key.revoked_at_ms.is_none() {
        key.revoked_at_ms = Some(now);
        t.keys
            .insert(hash.as_str(), serde_json::to_vec(&key)?.as_slice())?;
    }
    Ok(Ok(Outcome::Key(Box::new(key))))
}
