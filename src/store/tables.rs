//! The redb tables. Values are JSON so records stay readable and evolve with serde defaults.

use redb::TableDefinition;

/// Counters: `seq` (sessions and events, monotonic), `schema`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// API key hash → key record.
pub const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
/// API key id → hash.
pub const KEY_IDS: TableDefinition<&str, &str> = TableDefinition::new("api_key_ids");
/// Session id → session.
pub const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (merchant/mode scope, seq) → session id: newest-first listing.
pub const SESSION_INDEX: TableDefinition<(&str, u64), &str> = TableDefinition::new("session_index");
/// (expires_at_ms, session id) for open sessions: the sweeper's queue.
pub const EXPIRY: TableDefinition<(i64, &str), ()> = TableDefinition::new("expiry");
/// (destination, amount or 0 for the whole address) → (held_until_ms or `HELD_OPEN`, session id).
/// A fixed tuple, not JSON: the allocator scans these on every create.
pub const RESERVATIONS: TableDefinition<(&str, u128), (i64, &str)> =
    TableDefinition::new("reservations");

/// `held_until_ms` of a reservation whose session still awaits payment.
pub const HELD_OPEN: i64 = i64::MAX;
/// (held_until_ms, destination, amount): reservations to release once their grace has passed.
pub const RELEASES: TableDefinition<(i64, &str, u128), ()> = TableDefinition::new("releases");
/// Payment id → session id.
pub const PAYMENTS: TableDefinition<&str, &str> = TableDefinition::new("payments");
/// External reference (UTR, tx/log) → payment or credit id: a reference is used once, ever.
pub const REFS: TableDefinition<&str, &str> = TableDefinition::new("references");
/// Credit id → unmatched credit.
pub const CREDITS: TableDefinition<&str, &[u8]> = TableDefinition::new("credits");
/// Idempotency scope key → recorded response.
pub const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// (created_at_ms, scope key): idempotency records to drop after 24 h.
pub const IDEM_EXPIRY: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("idempotency_expiry");
/// Event id → event.
pub const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
/// (merchant/mode scope, seq) → event id.
pub const EVENT_INDEX: TableDefinition<(&str, u64), &str> = TableDefinition::new("event_index");
/// seq → event id: events not yet delivered (drained by the notifier).
pub const OUTBOX: TableDefinition<u64, &str> = TableDefinition::new("outbox");

/// A reservation of one (destination, amount) pair by one session.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub session_id: String,
    /// `None` while the session awaits payment; then the end of its grace window.
    pub held_until_ms: Option<i64>,
}

impl Reservation {
    pub fn is_held(&self, now_ms: i64) -> bool {
        self.held_until_ms.is_none_or(|t| t > now_ms)
    }

    pub fn from_row((until, session): (i64, &str)) -> Reservation {
        Reservation {
            session_id: session.to_owned(),
            held_until_ms: (until != HELD_OPEN).then_some(until),
        }
    }

    pub fn row(&self) -> (i64, &str) {
        (
            self.held_until_ms.unwrap_or(HELD_OPEN),
            self.session_id.as_str(),
        )
    }
}

/// Whether a stored reservation row is held at `now_ms`, without allocating.
pub fn row_is_held(until: i64, now_ms: i64) -> bool {
    until > now_ms
}
