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
/// (expires_at_ms, session id) → the session's reservations, for open sessions: the sweeper's
/// queue, and with `PROCESSING` the source of the in-memory reservation index at start.
pub const EXPIRY: TableDefinition<(i64, &str), &[u8]> = TableDefinition::new("expiry");
/// Session id → its reservations, for sessions that are processing (paid, awaiting confirmations).
pub const PROCESSING: TableDefinition<&str, &[u8]> = TableDefinition::new("processing");
/// (held_until_ms, destination, amount) → session id: reservations of ended sessions, kept
/// through the grace window for late payments, then released by the sweeper.
pub const RELEASES: TableDefinition<(i64, &str, u128), &str> = TableDefinition::new("releases");
/// The `RELEASES` entries whose session ended with nothing received: the allocator may hand such
/// a slot to a new session before its grace ends (least recently released first).
pub const FREED: TableDefinition<(i64, &str, u128), ()> = TableDefinition::new("freed_slots");
/// (merchant/mode scope, credit id) → (): a merchant's credits newest-first (ids sort by time).
pub const CREDIT_INDEX: TableDefinition<(&str, &str), ()> = TableDefinition::new("credit_index");
/// Credit id → ignored alert (OTP, promotion, debit): kept apart from credits, pruned after
/// the retention period.
pub const IGNORED: TableDefinition<&str, &[u8]> = TableDefinition::new("ignored_alerts");
/// (merchant/mode scope, credit id) → (): a merchant's ignored alerts newest-first.
pub const IGNORED_INDEX: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("ignored_alert_index");
/// Retention cursors (`events`: the last event id the pruner looked at).
pub const RETENTION: TableDefinition<&str, &str> = TableDefinition::new("retention");
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
/// (due_ms, delivery id): the outbox, deliveries waiting for their next attempt (the notifier
/// drains it; an entry leaves only when its delivery succeeded or finally failed).
pub const OUTBOX: TableDefinition<(i64, &str), ()> = TableDefinition::new("deliveries_due");
/// Delivery id → delivery (destination, attempts, state).
pub const DELIVERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("deliveries");
/// (event id, delivery id): an event's deliveries.
pub const EVENT_DELIVERIES: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("event_deliveries");
/// Endpoint id → webhook endpoint.
pub const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhook_endpoints");
/// (session id, reference) → when: references customers handed over on the page, waiting for
/// the matcher to check them against the bank or the chain.
pub const CLAIMS: TableDefinition<(&str, &str), i64> = TableDefinition::new("claims");
/// Reference → the session whose page claimed it, until the money arrives.
pub const CLAIM_REFS: TableDefinition<&str, &str> = TableDefinition::new("claim_refs");
/// (credit id, session id) → when: claims of money that cannot be tied to the claimant, queued
/// for the operator to assign or reject (never applied on the customer's word).
pub const CLAIM_QUEUE: TableDefinition<(&str, &str), i64> = TableDefinition::new("claim_queue");
/// Reference → payment id, for chain payments still waiting for confirmations: what a chain
/// watcher re-checks against the canonical chain after a restart or a reorg.
pub const CHAIN_PENDING: TableDefinition<&str, &str> = TableDefinition::new("chain_pending");
/// (xpub, index) → derived address (internal hex): what an xpub method has handed out, so its
/// watcher knows every address to look at.
pub const XPUB_ADDRESSES: TableDefinition<(&str, u32), &str> =
    TableDefinition::new("xpub_addresses");
/// Merchant id (live) or merchant/mode scope (test) → that mode's default signing secrets
/// (JSON list, newest first); see `webhooks::secret_key`.
pub const MERCHANT_SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("merchant_secrets");
/// (merchant/mode scope, endpoint id): a merchant's endpoints in one mode.
pub const ENDPOINT_INDEX: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("webhook_endpoint_index");
/// (lane: merchant/mode scope and destination, due_ms, delivery id): the outbox by lane, so
/// the notifier serves every merchant, mode and destination in turn. `OUTBOX` stays the
/// source of truth.
pub const OUTBOX_LANES: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("deliveries_due_by_scope");

/// Refund id → refund.
pub const REFUNDS: TableDefinition<&str, &[u8]> = TableDefinition::new("refunds");
/// (merchant/mode scope, seq) → refund id: newest-first listing.
pub const REFUND_INDEX: TableDefinition<(&str, u64), &str> = TableDefinition::new("refund_index");
/// (session id, refund id): a session's refunds, read when a new one is checked.
pub const SESSION_REFUNDS: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("session_refunds");
/// (merchant/mode scope, method) → `LedgerEntry` (JSON): received, refunded and pending totals,
/// updated in the transaction of every payment and refund change.
pub const LEDGER: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("ledger");

/// (kind, key) → JSON: the keyed records of `engine::operators` (operators, console logins,
/// lockouts, the audit log), read in key order.
pub const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");

/// Encodes a session's (destination, amount) pairs for the expiry and processing tables.
pub fn encode_holds<'a>(holds: impl Iterator<Item = (&'a str, u128)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (dest, amount) in holds {
        let len = u16::try_from(dest.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&dest.as_bytes()[..usize::from(len)]);
        out.extend_from_slice(&amount.to_le_bytes());
    }
    out
}

/// Decodes what `encode_holds` wrote; `None` if it is damaged.
pub fn decode_holds(mut b: &[u8]) -> Option<Vec<(String, u128)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = usize::from(u16::from_le_bytes(b.get(..2)?.try_into().ok()?));
        let dest = std::str::from_utf8(b.get(2..2 + len)?).ok()?.to_owned();
        let amount = u128::from_le_bytes(b.get(2 + len..18 + len)?.try_into().ok()?);
        out.push((dest, amount));
        b = &b[18 + len..];
    }
    Some(out)
}

// Payment links (issue #19).
/// Link id → payment link.
pub const PAYMENT_LINKS: TableDefinition<&str, &[u8]> = TableDefinition::new("payment_links");
/// (merchant/mode scope, seq) → link id: newest-first listing.
pub const PAYMENT_LINK_INDEX: TableDefinition<(&str, u64), &str> =
    TableDefinition::new("payment_link_index");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_round_trip() {
        let holds = [("upi:demo@okbank", 14_999u128), ("evm:1:0xa:0xb", 0)];
        let enc = encode_holds(holds.iter().map(|(d, a)| (*d, *a)));
        let dec = decode_holds(&enc).expect("decode");
        assert_eq!(
            dec,
            vec![
                ("upi:demo@okbank".to_owned(), 14_999),
                ("evm:1:0xa:0xb".to_owned(), 0)
            ]
        );
        assert!(decode_holds(&enc[..enc.len() - 1]).is_none());
    }
}
