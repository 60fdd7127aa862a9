//! Durable state behind the `Store` trait. Writes are operations sent to one writer that commits
//! every pending one in a single transaction (group commit) before any of them is acknowledged;
//! reads use MVCC read transactions and never wait for the writer.

pub mod backup;
mod credits;
mod ops;
mod redb_store;
mod refunds;
mod reservations;
mod tables;
mod webhooks;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::domain::apikey::ApiKey;
use crate::domain::event::Event;
use crate::domain::method::Method;
use crate::domain::session::{Session, Status, TransitionError};
use crate::domain::webhook::{AfterAttempt, Attempt, Delivery, SigningSecret, WebhookEndpoint};

pub use credits::Retention;
pub use ops::{credit_json, sender_key};
pub use redb_store::{DbHandle, RedbStore};
pub use reservations::ReservationIndex;
pub use tables::Reservation;
pub use webhooks::MAX_ENDPOINTS;

/// The storage itself failed: the whole batch was rolled back, nothing was acknowledged.
#[derive(Debug, Error, Clone)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Storage(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("the writer has stopped")]
    WriterGone,
    /// The writer's queue is full: refused at once rather than queued without bound.
    #[error("the writer is overloaded; retry shortly")]
    Overloaded,
    #[error("the database is in use by another process (is the daemon running?)")]
    Locked,
}

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
    /// Written; nothing to report.
    Done,
}

/// A page of a newest-first list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

/// Filters of `GET /v1/events`.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub merchant_id: String,
    pub livemode: bool,
    pub limit: usize,
    pub starting_after: Option<String>,
    pub kind: Option<crate::domain::event::EventType>,
}

/// Filters of `GET /v1/credits` (and the operator's lists, every merchant's when `merchant_id`
/// is `None`). `status: ignored` lists the ignored alerts, any other the credits.
#[derive(Debug, Clone, Default)]
pub struct CreditQuery {
    pub merchant_id: Option<String>,
    pub livemode: bool,
    pub limit: usize,
    pub starting_after: Option<String>,
    pub status: Option<String>,
}

/// Filters of `GET /v1/checkout/sessions`.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    pub merchant_id: String,
    pub livemode: bool,
    pub limit: usize,
    pub starting_after: Option<String>,
    pub status: Option<Status>,
    pub payment_method: Option<String>,
    pub created_gte_ms: Option<i64>,
    pub created_lte_ms: Option<i64>,
    pub client_reference_id: Option<String>,
}

/// Filters of `GET /v1/refunds` (and the console's list, across merchants when `merchant_id`
/// is `None`).
#[derive(Debug, Clone, Default)]
pub struct RefundQuery {
    pub merchant_id: Option<String>,
    pub livemode: bool,
    pub limit: usize,
    pub starting_after: Option<String>,
    pub session_id: Option<String>,
    pub status: Option<crate::domain::refund::RefundStatus>,
}

/// The operations the daemon needs from storage.
pub trait Store: Send + Sync {
    /// Queues a write; the receiver answers after the batch holding it is durably committed.
    fn submit(
        &self,
        op: WriteOp,
        idempotency: Option<IdempotencyWrite>,
    ) -> oneshot::Receiver<Result<Result<Outcome, OpError>, StoreError>>;

    fn session(&self, id: &str) -> Result<Option<Session>, StoreError>;
    /// A watcher's cursor (see `WriteOp::SetCursor`).
    fn cursor(&self, key: &str) -> Result<Option<u64>, StoreError>;
    /// (reference, payment id, block number) of chain payments awaiting confirmations whose
    /// destination starts with `prefix` (`evm:<chain id>:<contract>:`).
    fn chain_pending(&self, prefix: &str) -> Result<Vec<(String, String, u64)>, StoreError>;
    /// (index, internal address) of the addresses an xpub handed out, from `from_index` on.
    fn xpub_addresses(&self, xpub: &str, from_index: u32)
    -> Result<Vec<(u32, String)>, StoreError>;
    fn list_sessions(&self, q: &SessionQuery) -> Result<Page<Session>, StoreError>;
    fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError>;
    fn list_keys(&self, merchant_id: Option<&str>) -> Result<Vec<ApiKey>, StoreError>;
    fn idempotency(&self, scope_key: &str) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// Events of one merchant and mode, newest first, after the cursor, of one type if given.
    fn list_events(&self, q: &EventQuery) -> Result<Page<Event>, StoreError>;
    fn event(&self, id: &str) -> Result<Option<Event>, StoreError>;
    /// All events, oldest first (the operator's view).
    fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError>;
    fn event_deliveries(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError>;
    /// Deliveries whose next attempt is due at `now_ms`: up to `limit` from each lane (merchant,
    /// mode, destination) in turn, then the earliest `limit` overall.
    fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StoreError>;
    /// When the earliest pending delivery is due.
    fn next_delivery_ms(&self) -> Result<Option<i64>, StoreError>;
    /// Deliveries waiting in the outbox (due now or later).
    fn outbox_depth(&self) -> Result<u64, StoreError>;
    fn endpoints(
        &self,
        merchant_id: &str,
        livemode: bool,
    ) -> Result<Vec<WebhookEndpoint>, StoreError>;
    fn endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError>;
    /// The default signing secrets of one merchant in one mode (each mode has its own).
    fn merchant_secrets(
        &self,
        merchant_id: &str,
        livemode: bool,
    ) -> Result<Vec<SigningSecret>, StoreError>;
    /// Wakes the notifier when a commit queued deliveries.
    fn outbox_signal(&self) -> std::sync::Arc<tokio::sync::Notify>;
    fn credits(&self, limit: usize) -> Result<Vec<Credit>, StoreError>;
    /// Credits (or ignored alerts) newest first; `None` when `starting_after` names none of the
    /// query's merchant and mode.
    fn list_credits(&self, q: &CreditQuery) -> Result<Option<Page<Credit>>, StoreError>;
    /// When the sweeper next has work (an expiry, a release, an idempotency record to drop), so an
    /// idle daemon does not write at all.
    fn next_sweep_ms(&self, idempotency_ttl_ms: i64) -> Result<Option<i64>, StoreError>;
    fn refund(&self, id: &str) -> Result<Option<crate::domain::refund::Refund>, StoreError>;
    fn list_refunds(
        &self,
        q: &RefundQuery,
    ) -> Result<Page<crate::domain::refund::Refund>, StoreError>;
    /// The balance ledger of one merchant and mode: (method, entry), by method.
    fn ledger(
        &self,
        merchant_id: &str,
        livemode: bool,
    ) -> Result<Vec<(String, crate::domain::refund::LedgerEntry)>, StoreError>;
    /// Every cursor whose key starts with `prefix` (the operator's watcher status).
    fn cursors(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError>;
    fn credit(&self, id: &str) -> Result<Option<Credit>, StoreError>;
    /// Claims queued for the operator: (credit id, session id, when claimed), oldest credit first.
    fn claim_queue(&self, limit: usize) -> Result<Vec<(String, String, i64)>, StoreError>;
}

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// Submits and waits: the common case.
pub async fn write(
    store: &dyn Store,
    op: WriteOp,
    idempotency: Option<IdempotencyWrite>,
) -> Result<Result<Outcome, OpError>, StoreError> {
    store
        .submit(op, idempotency)
        .await
        .map_err(|_| StoreError::WriterGone)?
}

/// The idempotency scope of one merchant and mode.
pub fn idempotency_scope(merchant_id: &str, livemode: bool, key: &str) -> String {
    format!(
        "{merchant_id}\x1f{}\x1f{key}",
        if livemode { "live" } else { "test" }
    )
}

/// The listing scope of one merchant and mode.
pub(crate) fn scope(merchant_id: &str, livemode: bool) -> String {
    format!(
        "{merchant_id}\x1f{}",
        if livemode { "live" } else { "test" }
    )
}
