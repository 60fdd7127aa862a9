//! Durable state behind the `Store` trait. Writes are operations sent to one writer that runs
//! each through the engine's rules (`engine::apply`) over this backend's transaction
//! (`redb_tx`), commits every pending one in a single transaction (group commit), and only then
//! acknowledges them; reads use MVCC read transactions and never wait for the writer. The store
//! keeps durability, indexes and the money invariants; the rules live in `engine`.

pub mod backup;
#[cfg(test)]
pub mod conformance;
mod lanes;
pub mod memory;
mod migrate;
pub mod postgres;
mod redb_store;
mod redb_tx;
mod reservations;
mod tables;
#[cfg(test)]
mod writer_load;

use std::sync::Arc;

use thiserror::Error;
use tokio::sync::oneshot;

use crate::domain::apikey::ApiKey;
use crate::domain::event::Event;
use crate::domain::session::{Session, Status};
use crate::domain::webhook::{Delivery, SigningSecret, WebhookEndpoint};

pub use self::postgres::{PgOptions, PgStore};
pub use crate::engine::outbox::MAX_ENDPOINTS;
pub use crate::engine::reservations::{Reservation, ReservationIndex};
pub use crate::engine::{
    Credit, IdempotencyRecord, IdempotencyWrite, MatchResult, Observed, OpError, Outcome, RenderFn,
    Retention, WriteOp, credit_json, sender_key,
};
pub use redb_store::{DbHandle, RedbStore};

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
    // ---- Payment links (issue #19): a new backend implements these two. ----
    fn payment_link(
        &self,
        id: &str,
    ) -> Result<Option<crate::domain::link::PaymentLink>, StoreError>;
    /// One merchant's links in one mode, newest first, after the link `starting_after`.
    fn list_payment_links(
        &self,
        merchant_id: &str,
        livemode: bool,
        limit: usize,
        starting_after: Option<&str>,
    ) -> Result<Page<crate::domain::link::PaymentLink>, StoreError>;

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
    /// The ids of sessions each committed batch changed, announced after the commit and before
    /// the writers hear back, so a live status stream re-reads its session only when it moved
    /// instead of polling. A receiver that falls behind gets `Lagged` and should re-read.
    fn session_changes(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<str>>;
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

    // ---- Keyed records (operators, console logins, lockouts, the audit log) ----
    /// The record of `kind` under `key` (JSON).
    fn record(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` records of `kind` in key order (`newest_first`: descending), starting after
    /// `after` (exclusive; `None` from the first).
    fn records(
        &self,
        kind: &str,
        after: Option<&str>,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
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
