//! The money rules, written once: allocating payment slots (`allocate`), matching observed
//! money to sessions (`observe`), customers' claims (`claims`), refunds and the balance ledger
//! (`refunds`), events and their outbox fan-out (`outbox`), and the sweeper (`sweep`).
//!
//! Every rule is a typed call over a transaction of the storage interface (`tx::Tx`); a
//! backend (redb in production, `store::memory` in the conformance suite) opens the
//! transaction, runs `apply` for each operation of a batch, and commits durably before it
//! acknowledges any. The engine holds no state of its own between calls: who holds a payment
//! slot, the sequence and the outbox are the store's, so any backend can rebuild them. What the
//! rules did beyond the transaction (a payment to count, a slot reused) comes back as
//! `Effect`s, which the caller records only once the commit succeeded: a rolled-back batch
//! counts nothing.
//!
//! Imports: `domain` and `matching`, and `metrics` in `Effect::record` only; never `store`,
//! `checkout` or `api`.

pub mod allocate;
mod claims;
pub mod links;
pub mod observe;
pub mod operators;
pub mod outbox;
pub mod refunds;
pub mod reservations;
mod session;
pub mod sweep;
pub mod tx;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::domain::apikey::ApiKey;
use crate::domain::method::Method;
use crate::domain::session::{Session, TransitionError};
use crate::domain::webhook::{AfterAttempt, Attempt, Delivery, SigningSecret, WebhookEndpoint};

pub use claims::sender_key;
pub use observe::credit_json;
pub use sweep::Retention;
pub use tx::{R, Tx, TxError};

/// Why one operation was refused; the rest of its batch is unaffected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OpError {
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Transition(#[from] TransitionError),
    #[error("{0}")]
    NoSlot(String),
    #[error("{0}")]
    Invalid(String),
    /// Refused by the object's state (a refund beyond what was received, a credit already
    /// used): a 409 with this stable code.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
}

/// A response recorded under an Idempotency-Key, replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// SHA-256 of method, path and body: a different request under the same key is a conflict.
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
    pub created_at_ms: i64,
}

/// Renders an operation's result as (status, body) for the idempotency record; `None` keeps none.
pub type RenderFn = Box<dyn FnOnce(&Result<Outcome, OpError>) -> Option<(u16, String)> + Send>;

/// Asks the writer to record the operation's response under an Idempotency-Key in the same
/// transaction as the operation itself.
pub struct IdempotencyWrite {
    /// `merchant \x1f mode \x1f key`.
    pub scope_key: String,
    pub fingerprint: String,
    /// Renders the outcome as (status, body); `None` keeps nothing (a retryable failure).
    pub render: RenderFn,
}

/// A money movement a watcher (or `simulate`) observed.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Physical destination, as `Method::destination_key` computes it.
    pub destination: String,
    pub amount_base: u128,
    pub decimals: u32,
    /// Unique across all time: `upi:<utr>`, `evm:<chain>:<tx>:<log_index>`.
    pub reference: String,
    pub livemode: bool,
    pub utr: Option<String>,
    pub tx_hash: Option<String>,
    pub log_index: Option<u64>,
    pub block_number: Option<u64>,
    pub confirmations: u32,
    pub confirmed: bool,
    pub received_at_ms: i64,
    /// Who a credit that matches nothing belongs to, when the destination tells.
    pub owner: Option<(String, String)>,
    /// Match only this session (a claim), never another.
    pub only_session: Option<String>,
    /// For the record: which feed reported it (`sms`, `manual`, `simulate`, a chain), and the
    /// SMS sender id.
    pub source: Option<String>,
    pub sender: Option<String>,
    /// The sender's address of a token transfer, when known (refunds go back there).
    pub from: Option<String>,
}

/// An unmatched credit: money that arrived and belongs to no session (yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    pub id: String,
    pub merchant_id: Option<String>,
    pub method: Option<String>,
    pub destination: String,
    pub amount_base: u128,
    pub decimals: u32,
    pub reference: String,
    pub utr: Option<String>,
    pub tx_hash: Option<String>,
    pub livemode: bool,
    pub received_at_ms: i64,
    pub status: String,
    pub reason: String,
    /// Where an alert came from (`sms`, `manual`), and its SMS sender id.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub sender: Option<String>,
}

/// What the matcher did with an observed payment.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchResult {
    Matched {
        session: Box<Session>,
        payment_id: String,
    },
    /// The reference was recorded before: nothing changed.
    Duplicate {
        existing: String,
    },
    Unmatched {
        credit: Box<Credit>,
    },
    /// Matches no session and is not final yet (`Observed::confirmed == false`): nothing was
    /// recorded; the watcher reports it again once final.
    Deferred,
}

/// One write, executed by the writer inside a batch transaction.
pub enum WriteOp {
    CreateSession {
        session: Box<Session>,
        methods: Vec<Method>,
    },
    /// Cancel (`expire == false`) or end now as expired.
    EndSession {
        merchant_id: String,
        livemode: bool,
        id: String,
        expire: bool,
    },
    Observe(Box<Observed>),
    ConfirmPayment {
        payment_id: String,
        confirmations: u32,
    },
    RevertPayment {
        payment_id: String,
    },
    /// A reversal alert named `reference`: flag its payment (`payment.reversed`). Only a
    /// payment of this merchant and mode: another merchant's alert (anyone who can SMS or mail
    /// that merchant's forwarder) must not flag it.
    ReversePayment {
        reference: String,
        merchant_id: String,
        livemode: bool,
    },
    /// Expires due sessions, releases reservations past their grace, drops old idempotency keys.
    Sweep {
        now_ms: i64,
        idempotency_ttl_ms: i64,
        limit: usize,
    },
    CreateKey {
        key: Box<ApiKey>,
        hash: String,
    },
    RevokeKey {
        key_id: String,
        now_ms: i64,
    },
    /// The notifier's result for one delivery attempt.
    RecordAttempt {
        delivery_id: String,
        attempt: Attempt,
        after: AfterAttempt,
    },
    /// Gives a merchant a default signing secret for one mode if it has none (at start).
    EnsureMerchantSecret {
        merchant_id: String,
        livemode: bool,
        secret: String,
    },
    RotateMerchantSecret {
        merchant_id: String,
        livemode: bool,
        secret: String,
        old_valid_until_ms: i64,
    },
    CreateEndpoint {
        endpoint: Box<WebhookEndpoint>,
    },
    DeleteEndpoint {
        merchant_id: String,
        livemode: bool,
        id: String,
    },
    RotateEndpointSecret {
        merchant_id: String,
        livemode: bool,
        id: String,
        secret: String,
        old_valid_until_ms: i64,
    },
    /// An alert that is not money (a debit, an OTP, a stranger's SMS…), kept with the reason.
    RecordIgnored {
        credit: Box<Credit>,
    },
    /// A reference (UTR or tx hash) a customer submitted on the page.
    Claim {
        session_id: String,
        reference: String,
    },
    /// The operator attaches an unmatched credit to a session.
    AssignCredit {
        credit_id: String,
        session_id: String,
    },
    /// The operator rejects queued claims of a credit (one session's, or all of them).
    RejectClaim {
        credit_id: String,
        session_id: Option<String>,
    },
    /// The customer names, before paying, the address a token payment will come from
    /// (`sender_key` form), so a claim of a transfer from it can be tied to them.
    DeclareSender {
        session_id: String,
        address: String,
    },
    /// A watcher's durable cursor (e.g. the last IMAP UID processed).
    SetCursor {
        key: String,
        value: u64,
    },
    /// Queues an event again for every destination that wants it now.
    Redeliver {
        merchant_id: String,
        livemode: bool,
        event_id: String,
    },
    /// A merchant asks for a refund: checked against what the session received and reserved
    /// in the same step. `amount_base: None` refunds everything left; `method: None` means the
    /// only method that received money.
    CreateRefund {
        refund: Box<crate::domain::refund::Refund>,
        method: Option<String>,
        amount_base: Option<u128>,
    },
    /// The operator reports how a pending refund ended.
    FinishRefund {
        refund_id: String,
        outcome: crate::domain::refund::Outcome,
    },
    /// The operator sent an unmatched credit back to its payer.
    ReturnCredit {
        credit_id: String,
        reference: String,
    },
    // Operators (see `operators`): accounts, logins, lockouts, the audit log.
    /// A new operator account (refused if the name is taken).
    CreateOperator {
        operator: Box<crate::domain::operator::Operator>,
        audit: Box<crate::domain::operator::AuditEntry>,
    },
    /// A console login attempt: lockouts, the second factor and the audit entry in one step.
    Login(Box<operators::LoginAttempt>),
    /// Ends a login; `owner`: only if it is this operator's.
    RevokeLogin {
        id: String,
        owner: Option<String>,
        audit: Box<crate::domain::operator::AuditEntry>,
    },
    /// Lifts an account's lockout.
    UnlockOperator {
        name: String,
        audit: Box<crate::domain::operator::AuditEntry>,
    },
    /// Replaces an operator's password (hash); the current one was verified by the caller.
    SetPassword {
        name: String,
        password_hash: String,
        audit: Box<crate::domain::operator::AuditEntry>,
    },
    /// Appends one entry to the audit log.
    Audit(Box<crate::domain::operator::AuditEntry>),
    /// An operator's action and its audit entry in one transaction. The entry is written even
    /// when the action is refused (its outcome then says why); the action's own writes are not.
    Audited {
        op: Box<WriteOp>,
        audit: Box<crate::domain::operator::AuditEntry>,
    },
    CreateLink {
        link: Box<crate::domain::link::PaymentLink>,
    },
    DeactivateLink {
        merchant_id: String,
        livemode: bool,
        id: String,
    },
    /// A customer opens a payment link: the session is created and the link's use counted in
    /// one step. `price_amount` is what the link was asked for (in the link's currency).
    OpenLink {
        link_id: String,
        price_amount: u64,
        session: Box<Session>,
        methods: Vec<Method>,
    },
}

/// What a successful operation produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Session(Box<Session>),
    Match(MatchResult),
    Swept {
        expired: usize,
        released: usize,
        /// Idempotency records past their 24 hours.
        forgotten: usize,
    },
    Key(Box<ApiKey>),
    /// The Idempotency-Key was already used: its stored response.
    Replay(IdempotencyRecord),
    Deliveries(Vec<Delivery>),
    Secrets(Vec<SigningSecret>),
    Endpoint(Box<WebhookEndpoint>),
    /// A claim was recorded (and waits for its money).
    Claimed,
    Refund(Box<crate::domain::refund::Refund>),
    Credit(Box<Credit>),
    Operator(Box<crate::domain::operator::Operator>),
    Login(operators::LoginResult),
    Link(Box<crate::domain::link::PaymentLink>),
    /// Written; nothing to report.
    Done,
}

/// What the engine is configured with (not state: the same for every call).
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// How long a reservation outlives its session, for late payments.
    pub grace_ms: i64,
    /// How long ignored alerts and delivered events are kept.
    pub retention: Retention,
}

/// Something an operation did that is counted outside the transaction, once it committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A payment was recorded for `method`.
    Payment { method: String },
    /// A session event was emitted.
    SessionEvent(&'static str),
    /// A create found no free slot for `method`.
    SlotsExhausted { method: String },
    /// A create took a freed slot still in its grace window.
    SlotReused,
    /// The capacity use of one price of a `unique_amount` method after an allocation.
    SlotUsage {
        method: String,
        livemode: bool,
        base: u128,
        used: usize,
        freed: usize,
        window: u32,
        decimals: u32,
    },
}

impl Effect {
    /// Counts the effect in the process metrics.
    pub fn record(&self) {
        let m = &crate::metrics::METRICS;
        match self {
            Effect::Payment { method } => m.payment(method),
            Effect::SessionEvent(kind) => m.session_event(kind),
            Effect::SlotsExhausted { method } => m.slots_exhausted(method),
            Effect::SlotReused => m.slot_reused(),
            Effect::SlotUsage {
                method,
                livemode,
                base,
                used,
                freed,
                window,
                decimals,
            } => m.slot_usage(
                method,
                *livemode,
                *base,
                *used,
                *freed,
                (*window, *decimals),
            ),
        }
    }
}

/// One call's context: configuration, the clock reading every rule of the call uses, and the
/// effects gathered so far.
pub struct Ctx<'a> {
    pub cfg: &'a EngineConfig,
    pub now: i64,
    pub effects: Vec<Effect>,
}

impl<'a> Ctx<'a> {
    pub fn new(cfg: &'a EngineConfig, now: i64) -> Ctx<'a> {
        Ctx {
            cfg,
            now,
            effects: Vec::new(),
        }
    }
}

/// The clock every write reads (once per operation).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The listing scope of one merchant and mode.
pub(crate) fn scope(merchant_id: &str, livemode: bool) -> String {
    format!(
        "{merchant_id}\x1f{}",
        if livemode { "live" } else { "test" }
    )
}

/// Runs one operation (with its idempotency record, if any) in `t`. `Err` fails the whole
/// batch; `Ok(Err(_))` refuses this operation only, having written nothing.
pub fn apply(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    op: WriteOp,
    idem: Option<IdempotencyWrite>,
) -> R<Result<Outcome, OpError>> {
    if let Some(i) = &idem
        && let Some(rec) = t.idempotency(&i.scope_key)?
    {
        return Ok(Ok(Outcome::Replay(rec)));
    }
    let now = cx.now;
    let result = match op {
        WriteOp::CreateSession { session, methods } => {
            allocate::create_session(t, cx, *session, &methods)?
        }
        WriteOp::EndSession {
            merchant_id,
            livemode,
            id,
            expire,
        } => session::end_session(t, cx, &merchant_id, livemode, &id, expire)?,
        WriteOp::Observe(o) => observe::observe(t, cx, *o)?.map(Outcome::Match),
        WriteOp::ConfirmPayment {
            payment_id,
            confirmations,
        } => session::change_payment(t, cx, &payment_id, |s| {
            s.confirm_payment(&payment_id, confirmations, now)
        })?,
        WriteOp::ReversePayment {
            reference,
            merchant_id,
            livemode,
        } => session::reverse_payment(t, cx, &reference, &merchant_id, livemode)?,
        WriteOp::RevertPayment { payment_id } => session::revert_payment(t, cx, &payment_id)?,
        WriteOp::Sweep {
            now_ms,
            idempotency_ttl_ms,
            limit,
        } => Ok(sweep::sweep(t, cx, now_ms, idempotency_ttl_ms, limit)?),
        WriteOp::CreateKey { key, hash } => {
            t.put_key(&hash, &key)?;
            Ok(Outcome::Key(key))
        }
        WriteOp::RevokeKey { key_id, now_ms } => revoke_key(t, &key_id, now_ms)?,
        WriteOp::RecordAttempt {
            delivery_id,
            attempt,
            after,
        } => outbox::record_attempt(t, &delivery_id, attempt, after)?,
        WriteOp::EnsureMerchantSecret {
            merchant_id,
            livemode,
            secret,
        } => outbox::ensure_merchant_secret(t, &merchant_id, livemode, secret)?,
        WriteOp::RotateMerchantSecret {
            merchant_id,
            livemode,
            secret,
            old_valid_until_ms,
        } => outbox::rotate_merchant_secret(
            t,
            &merchant_id,
            livemode,
            secret,
            now,
            old_valid_until_ms,
        )?,
        WriteOp::CreateEndpoint { endpoint } => outbox::create_endpoint(t, endpoint)?,
        WriteOp::DeleteEndpoint {
            merchant_id,
            livemode,
            id,
        } => outbox::delete_endpoint(t, &merchant_id, livemode, &id)?,
        WriteOp::RotateEndpointSecret {
            merchant_id,
            livemode,
            id,
            secret,
            old_valid_until_ms,
        } => outbox::rotate_endpoint_secret(
            t,
            &merchant_id,
            livemode,
            &id,
            secret,
            now,
            old_valid_until_ms,
        )?,
        WriteOp::RecordIgnored { credit } => {
            t.insert_ignored(&credit)?;
            Ok(Outcome::Match(MatchResult::Unmatched { credit }))
        }
        WriteOp::Claim {
            session_id,
            reference,
        } => claims::claim(t, cx, &session_id, &reference)?,
        WriteOp::AssignCredit {
            credit_id,
            session_id,
        } => claims::operator_assign(t, cx, &credit_id, &session_id)?,
        WriteOp::RejectClaim {
            credit_id,
            session_id,
        } => claims::reject_claim(t, cx, &credit_id, session_id.as_deref())?,
        WriteOp::DeclareSender {
            session_id,
            address,
        } => claims::declare_sender(t, cx, &session_id, &address)?,
        WriteOp::SetCursor { key, value } => {
            t.set_cursor(&key, value)?;
            Ok(Outcome::Done)
        }
        WriteOp::Redeliver {
            merchant_id,
            livemode,
            event_id,
        } => {
            let ev = t.event(&event_id)?;
            match ev.filter(|e| e.merchant_id == merchant_id && e.livemode == livemode) {
                Some(e) => Ok(Outcome::Deliveries(outbox::schedule_deliveries(
                    t, &e, now,
                )?)),
                None => Err(OpError::NotFound("event")),
            }
        }
        WriteOp::CreateRefund {
            refund,
            method,
            amount_base,
        } => refunds::create(t, cx, *refund, method.as_deref(), amount_base)?,
        WriteOp::FinishRefund { refund_id, outcome } => {
            refunds::finish(t, cx, &refund_id, outcome)?
        }
        WriteOp::ReturnCredit {
            credit_id,
            reference,
        } => refunds::return_credit(t, &credit_id, &reference)?,
        WriteOp::CreateOperator { operator, audit } => {
            operators::create_operator(t, *operator, &audit)?
        }
        WriteOp::Login(a) => operators::login(t, now, *a)?,
        WriteOp::RevokeLogin { id, owner, audit } => {
            operators::revoke_login(t, now, &id, owner.as_deref(), &audit)?
        }
        WriteOp::UnlockOperator { name, audit } => operators::unlock(t, &name, &audit)?,
        WriteOp::SetPassword {
            name,
            password_hash,
            audit,
        } => operators::set_password(t, &name, password_hash, &audit)?,
        WriteOp::Audit(e) => operators::append_audit(t, &e)?,
        WriteOp::Audited { op, audit } => {
            let r = apply(t, cx, *op, None)?;
            let mut e = *audit;
            if let Err(why) = &r {
                e.outcome = format!("refused: {why}");
            }
            operators::put(t, operators::AUDIT, &e.id, &e)?;
            r
        }
        WriteOp::CreateLink { link } => links::create(t, *link)?,
        WriteOp::DeactivateLink {
            merchant_id,
            livemode,
            id,
        } => links::deactivate(t, &merchant_id, livemode, &id)?,
        WriteOp::OpenLink {
            link_id,
            price_amount,
            session,
            methods,
        } => links::open(t, cx, &link_id, price_amount, *session, &methods)?,
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
        t.put_idempotency(&i.scope_key, &rec)?;
    }
    Ok(result)
}

fn revoke_key(t: &mut dyn Tx, key_id: &str, now: i64) -> R<Result<Outcome, OpError>> {
    let Some(hash) = t.key_hash(key_id)? else {
        return Ok(Err(OpError::NotFound("API key")));
    };
    let Some(mut key) = t.key(&hash)? else {
        return Ok(Err(OpError::NotFound("API key")));
    };
    if key.revoked_at_ms.is_none() {
        key.revoked_at_ms = Some(now);
        t.put_key(&hash, &key)?;
    }
    Ok(Ok(Outcome::Key(Box::new(key))))
}
