//! The transactional storage interface the engine's rules run over. A backend opens one
//! transaction per batch of operations and commits it durably before any of them is
//! acknowledged; the rules see only these typed reads and writes. The backend keeps the
//! indexes (listing orders, the expiry queue, the outbox by lane, the reservation index) and
//! refuses any write that would break a money invariant, whatever the caller checked before.

use crate::domain::apikey::ApiKey;
use crate::domain::event::Event;
use crate::domain::link::PaymentLink;
use crate::domain::refund::{LedgerEntry, Refund};
use crate::domain::session::Session;
use crate::domain::webhook::{Delivery, SigningSecret, WebhookEndpoint};

use super::reservations::Reservation;
use super::{Credit, IdempotencyRecord};

/// A storage failure (fails the whole batch) or a write the store refused because it would
/// break a money invariant (also fails the batch: the rules check first, so this is a bug
/// caught, never a state written).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TxError {
    #[error("{0}")]
    Storage(String),
    /// Which invariant, and what broke it.
    #[error("the store refused a write that breaks an invariant: {0}")]
    Invariant(String),
}

impl From<serde_json::Error> for TxError {
    fn from(e: serde_json::Error) -> Self {
        TxError::Storage(e.to_string())
    }
}

pub type R<T> = Result<T, TxError>;

/// One write transaction. Reads see this transaction's own writes.
pub trait Tx {
    /// The next value of the sequence that orders sessions, events and refunds (monotonic,
    /// rolled back with the transaction).
    fn next_seq(&mut self) -> R<u64>;

    // Sessions.
    fn session(&mut self, id: &str) -> R<Option<Session>>;
    /// Stores `s`; `before` is what was stored (`None`: a new session, listed under its merchant
    /// and mode by `seq`). The store keeps the open sessions' expiry queue and the processing set
    /// in step with the status.
    fn put_session(&mut self, before: Option<&Session>, s: &Session) -> R<()>;
    /// (expires_at_ms, session id) of open sessions due by `now`, earliest first.
    fn due_expiries(&mut self, now: i64, limit: usize) -> R<Vec<(i64, String)>>;
    /// Drops a stale expiry entry (its session is no longer open).
    fn drop_expiry(&mut self, at: i64, id: &str) -> R<()>;

    // Reservations of (destination key, amount) pairs; see `engine::reservations`.
    fn reservation(&mut self, key: &str, amount: u128) -> R<Option<Reservation>>;
    /// Amounts at `key` within [lo, hi] held at `now` that may not be reused.
    fn held_in(&mut self, key: &str, lo: u128, hi: u128, now: i64) -> R<Vec<u128>>;
    /// (amount, end of grace) of reusable holds at `key` within [lo, hi] still in their grace.
    fn reusable_in(&mut self, key: &str, lo: u128, hi: u128, now: i64) -> R<Vec<(u128, i64)>>;
    /// Whether anything at `key` is held at `now`.
    fn any_held(&mut self, key: &str, now: i64) -> R<bool>;
    /// Makes `session_id` the awaiting holder of the pair, replacing an ended hold (returned).
    /// Refused when another session already awaits payment on it: one awaiting holder per
    /// (pay_to, payable_amount).
    fn hold(&mut self, key: &str, amount: u128, session_id: &str) -> R<Option<Reservation>>;
    /// The holder ended: the pair stays its own until `until` (`reusable`: it received nothing,
    /// so a new session may take the slot sooner).
    fn end_hold(
        &mut self,
        key: &str,
        amount: u128,
        session_id: &str,
        until: i64,
        reusable: bool,
    ) -> R<()>;
    /// Late money reached an ended holder: its slot is no longer reusable.
    fn keep_hold(&mut self, key: &str, amount: u128, session_id: &str) -> R<()>;
    /// Releases up to `limit` ended holds whose grace is over by `now`; how many.
    fn release_due(&mut self, now: i64, limit: usize) -> R<usize>;

    // Payments and external references.
    fn payment_session(&mut self, payment_id: &str) -> R<Option<String>>;
    fn put_payment(&mut self, payment_id: &str, session_id: &str) -> R<()>;
    /// The payment or credit an external reference (UTR, transfer) was recorded as.
    fn reference(&mut self, reference: &str) -> R<Option<String>>;
    /// Refused when the reference is already recorded: one payment per reference.
    fn put_reference(&mut self, reference: &str, id: &str) -> R<()>;
    fn drop_reference(&mut self, reference: &str) -> R<()>;
    /// `<destination>|<reference>` → `<payment id>@<block>` of chain payments awaiting
    /// confirmations.
    fn chain_pending(&mut self, key: &str) -> R<Option<String>>;
    fn put_chain_pending(&mut self, key: &str, value: &str) -> R<()>;
    fn drop_chain_pending(&mut self, key: &str) -> R<()>;

    // Claims a checkout page made.
    /// How many references and sender addresses a session has claimed.
    fn claim_count(&mut self, session_id: &str) -> R<usize>;
    fn claim_at(&mut self, session_id: &str, key: &str) -> R<Option<i64>>;
    fn put_claim(&mut self, session_id: &str, key: &str, at: i64) -> R<()>;
    /// The session waiting for a reference not seen yet.
    fn claim_ref(&mut self, reference: &str) -> R<Option<String>>;
    fn put_claim_ref(&mut self, reference: &str, session_id: &str) -> R<()>;
    fn drop_claim_ref(&mut self, reference: &str) -> R<()>;
    /// Sessions whose claim of a credit waits for the operator.
    fn queued_claims(&mut self, credit_id: &str) -> R<Vec<String>>;
    fn claim_queued(&mut self, credit_id: &str, session_id: &str) -> R<bool>;
    fn queue_claim(&mut self, credit_id: &str, session_id: &str, at: i64) -> R<()>;
    fn unqueue_claim(&mut self, credit_id: &str, session_id: &str) -> R<()>;

    // Credits and ignored alerts.
    fn credit(&mut self, id: &str) -> R<Option<Credit>>;
    /// A new credit, listed under its merchant and mode.
    fn insert_credit(&mut self, c: &Credit) -> R<()>;
    fn put_credit(&mut self, c: &Credit) -> R<()>;
    fn insert_ignored(&mut self, c: &Credit) -> R<()>;
    /// Drops up to `limit` ignored alerts whose id sorts below `before_id`; how many.
    fn prune_ignored(&mut self, before_id: &str, limit: usize) -> R<usize>;

    // Addresses derived from an xpub.
    fn xpub_next(&mut self, xpub: &str) -> R<u64>;
    fn put_xpub_address(&mut self, xpub: &str, index: u32, address: &str) -> R<()>;

    // Idempotency records.
    fn idempotency(&mut self, key: &str) -> R<Option<IdempotencyRecord>>;
    /// Refused when the key already has a record: one idempotency record per key.
    fn put_idempotency(&mut self, key: &str, rec: &IdempotencyRecord) -> R<()>;
    /// Drops up to `limit` records created before `before_ms`; how many.
    fn forget_idempotency(&mut self, before_ms: i64, limit: usize) -> R<usize>;

    // Events, endpoints, the outbox.
    fn event(&mut self, id: &str) -> R<Option<Event>>;
    /// A new event, listed under its merchant and mode by `seq`.
    fn insert_event(&mut self, e: &Event) -> R<()>;
    /// Up to `limit` events with ids in (after, before), oldest first.
    fn events_between(&mut self, after: &str, before: &str, limit: usize) -> R<Vec<Event>>;
    fn drop_event(&mut self, e: &Event) -> R<()>;
    fn retention_cursor(&mut self, name: &str) -> R<Option<String>>;
    fn set_retention_cursor(&mut self, name: &str, value: &str) -> R<()>;
    /// One merchant's endpoints in one mode, oldest id first.
    fn endpoints_of(&mut self, merchant_id: &str, livemode: bool) -> R<Vec<WebhookEndpoint>>;
    fn endpoint_count(&mut self, merchant_id: &str, livemode: bool) -> R<usize>;
    fn endpoint(&mut self, id: &str) -> R<Option<WebhookEndpoint>>;
    fn insert_endpoint(&mut self, ep: &WebhookEndpoint) -> R<()>;
    fn put_endpoint(&mut self, ep: &WebhookEndpoint) -> R<()>;
    fn drop_endpoint(&mut self, ep: &WebhookEndpoint) -> R<()>;
    fn merchant_secrets(
        &mut self,
        merchant_id: &str,
        livemode: bool,
    ) -> R<Option<Vec<SigningSecret>>>;
    fn put_merchant_secrets(
        &mut self,
        merchant_id: &str,
        livemode: bool,
        s: &[SigningSecret],
    ) -> R<()>;
    fn delivery(&mut self, id: &str) -> R<Option<Delivery>>;
    /// A new delivery of its event, in the outbox at `next_attempt_ms` (the store wakes the
    /// notifier after the commit).
    fn insert_delivery(&mut self, d: &Delivery) -> R<()>;
    /// Stores `d`, moving it in the outbox from `was_due` to its `next_attempt_ms`.
    fn put_delivery(&mut self, was_due: Option<i64>, d: &Delivery) -> R<()>;
    fn event_delivery_ids(&mut self, event_id: &str) -> R<Vec<String>>;
    fn drop_delivery(&mut self, event_id: &str, delivery_id: &str) -> R<()>;

    // API keys and watcher cursors.
    fn put_key(&mut self, hash: &str, key: &ApiKey) -> R<()>;
    fn key_hash(&mut self, key_id: &str) -> R<Option<String>>;
    fn key(&mut self, hash: &str) -> R<Option<ApiKey>>;
    fn set_cursor(&mut self, key: &str, value: u64) -> R<()>;

    // Refunds and the balance ledger.
    fn refund(&mut self, id: &str) -> R<Option<Refund>>;
    /// A new refund, listed under its merchant and mode and under its session.
    fn insert_refund(&mut self, r: &Refund) -> R<()>;
    fn put_refund(&mut self, r: &Refund) -> R<()>;
    /// A session's refunds, in creation order.
    fn session_refunds(&mut self, session_id: &str) -> R<Vec<Refund>>;
    fn ledger(&mut self, merchant_id: &str, livemode: bool, method: &str)
    -> R<Option<LedgerEntry>>;
    fn put_ledger(
        &mut self,
        merchant_id: &str,
        livemode: bool,
        method: &str,
        e: &LedgerEntry,
    ) -> R<()>;

    // ---- Keyed records (operators, console logins, lockouts, the audit log) ----
    // One small table of JSON values keyed by (kind, key), read in key order: these objects
    // need no index beyond that. Backends: one table, or a (kind, key) primary key.
    /// The record of `kind` under `key`.
    fn record(&mut self, kind: &str, key: &str) -> R<Option<Vec<u8>>>;
    fn put_record(&mut self, kind: &str, key: &str, value: &[u8]) -> R<()>;
    fn drop_record(&mut self, kind: &str, key: &str) -> R<()>;
    // ---- Payment links (issue #19): a new backend implements these three. ----
    fn payment_link(&mut self, id: &str) -> R<Option<PaymentLink>>;
    /// A new link, listed under its merchant and mode by `seq`.
    fn insert_payment_link(&mut self, l: &PaymentLink) -> R<()>;
    /// Stores `l`. Refused (`TxError::Invariant`) when its `uses` pass its `max_uses`: a link's
    /// limit holds whatever the rules checked.
    fn put_payment_link(&mut self, l: &PaymentLink) -> R<()>;
}

/// The invariant `put_payment_link` enforces, shared by the backends.
pub fn check_link_uses(l: &PaymentLink) -> R<()> {
    match l.max_uses {
        Some(m) if l.uses > m => Err(TxError::Invariant(format!(
            "payment link {} would have {} uses, past its max_uses of {m}",
            l.id, l.uses
        ))),
        _ => Ok(()),
    }
}
