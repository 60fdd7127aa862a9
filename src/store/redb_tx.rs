//! The redb backend's side of the storage interface: `engine::Tx` over the tables of one
//! write transaction, the writer's sequence and its in-memory reservation index. The money
//! invariants are checked here, on every write, whatever the engine checked before.

use std::ops::Bound;

use redb::{ReadableTable, Table, WriteTransaction};

use super::tables::*;
use crate::domain::apikey::ApiKey;
use crate::domain::event::Event;
use crate::domain::link::PaymentLink;
use crate::domain::refund::{LedgerEntry, Refund};
use crate::domain::session::{Session, Status};
use crate::domain::webhook::{Delivery, SigningSecret, WebhookEndpoint, destination};
use crate::engine::reservations::{Reservation, ReservationIndex, res_key};
use crate::engine::{Credit, IdempotencyRecord, R, Tx, TxError, scope};

macro_rules! tx_from {
    ($($t:ty),*) => {$(
        impl From<$t> for TxError {
            fn from(e: $t) -> Self { TxError::Storage(e.to_string()) }
        }
    )*};
}
tx_from!(
    redb::StorageError,
    redb::TableError,
    redb::Error,
    redb::TransactionError,
    redb::CommitError
);

/// What the writer keeps between batches: the sequence (stored in `meta` with each commit) and
/// the reservation index (rebuilt from the tables at start and after a failed batch).
pub struct WriterState {
    pub seq: u64,
    pub res: ReservationIndex,
    /// Set when the batch queued deliveries, so the notifier is woken only then.
    pub queued_deliveries: bool,
    /// Sessions the batch changed, announced on `session_changes` once it commits (and
    /// forgotten if it fails), so live status streams re-read only their own session.
    pub changed_sessions: Vec<std::sync::Arc<str>>,
}

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
    credits: Table<'t, &'static str, &'static [u8]>,
    idempotency: Table<'t, &'static str, &'static [u8]>,
    idem_expiry: Table<'t, (i64, &'static str), ()>,
    events: Table<'t, &'static str, &'static [u8]>,
    event_index: Table<'t, (&'static str, u64), &'static str>,
    outbox: Table<'t, (i64, &'static str), ()>,
    deliveries: Table<'t, &'static str, &'static [u8]>,
    event_deliveries: Table<'t, (&'static str, &'static str), ()>,
    endpoints: Table<'t, &'static str, &'static [u8]>,
    merchant_secrets: Table<'t, &'static str, &'static [u8]>,
    endpoint_index: Table<'t, (&'static str, &'static str), ()>,
    outbox_lanes: Table<'t, (&'static str, i64, &'static str), ()>,
    claims: Table<'t, (&'static str, &'static str), i64>,
    claim_refs: Table<'t, &'static str, &'static str>,
    claim_queue: Table<'t, (&'static str, &'static str), i64>,
    chain_pending: Table<'t, &'static str, &'static str>,
    xpub_addresses: Table<'t, (&'static str, u32), &'static str>,
    refunds: Table<'t, &'static str, &'static [u8]>,
    refund_index: Table<'t, (&'static str, u64), &'static str>,
    session_refunds: Table<'t, (&'static str, &'static str), ()>,
    ledger: Table<'t, (&'static str, &'static str), &'static [u8]>,
    freed: Table<'t, (i64, &'static str, u128), ()>,
    credit_index: Table<'t, (&'static str, &'static str), ()>,
    ignored: Table<'t, &'static str, &'static [u8]>,
    ignored_index: Table<'t, (&'static str, &'static str), ()>,
    retention: Table<'t, &'static str, &'static str>,
    records: Table<'t, (&'static str, &'static str), &'static [u8]>,
    payment_links: Table<'t, &'static str, &'static [u8]>,
    payment_link_index: Table<'t, (&'static str, u64), &'static str>,
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
            records: txn.open_table(RECORDS)?,
            payment_links: txn.open_table(PAYMENT_LINKS)?,
            payment_link_index: txn.open_table(PAYMENT_LINK_INDEX)?,
        })
    }
}

/// One batch's transaction: its tables and the writer's state.
pub struct RedbTx<'a, 't> {
    pub t: &'a mut Tables<'t>,
    pub w: &'a mut WriterState,
}

fn load_json<T: serde::de::DeserializeOwned>(
    table: &Table<'_, &'static str, &'static [u8]>,
    key: &str,
) -> R<Option<T>> {
    match table.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

fn put_json<T: serde::Serialize>(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    v: &T,
) -> R<()> {
    table.insert(key, serde_json::to_vec(v)?.as_slice())?;
    Ok(())
}

/// The `merchant_secrets` key of a (merchant, mode). Live keeps the bare merchant id, which is
/// what databases before per-mode secrets stored: on upgrade the one existing secret stays the
/// live secret and a fresh test secret is made at start.
pub(crate) fn secret_key(merchant_id: &str, livemode: bool) -> String {
    if livemode {
        merchant_id.to_owned()
    } else {
        scope(merchant_id, false)
    }
}

/// A delivery's lane: merchant, mode and destination (scheme, host, port).
fn lane(d: &Delivery) -> String {
    format!(
        "{}\x1f{}",
        scope(&d.merchant_id, d.livemode),
        destination(&d.url)
    )
}

/// The (destination key, amount) pairs a session holds, as stored with its expiry or
/// processing entry.
fn holds(s: &Session) -> Vec<u8> {
    let keys: Vec<(String, u128)> = s
        .payment_options
        .iter()
        .map(|o| (res_key(&o.destination, s.livemode), o.reservation_amount))
        .collect();
    encode_holds(keys.iter().map(|(d, a)| (d.as_str(), *a)))
}

/// Every key of a (prefix, _) range of a two-part string key.
fn second_keys(
    table: &Table<'_, (&'static str, &'static str), impl redb::Value + 'static>,
    first: &str,
) -> R<Vec<String>> {
    let mut out = Vec::new();
    for e in table.range((first, "")..=(first, "\u{10FFFF}"))? {
        out.push(e?.0.value().1.to_owned());
    }
    Ok(out)
}

impl Tx for RedbTx<'_, '_> {
    fn next_seq(&mut self) -> R<u64> {
        self.w.seq += 1;
        Ok(self.w.seq)
    }

    fn session(&mut self, id: &str) -> R<Option<Session>> {
        load_json(&self.t.sessions, id)
    }

    fn put_session(&mut self, before: Option<&Session>, s: &Session) -> R<()> {
        let t = &mut *self.t;
        if before.is_none() {
            let sc = scope(&s.merchant_id, s.livemode);
            t.session_index
                .insert((sc.as_str(), s.seq), s.id.as_str())?;
        }
        if before.map(|b| b.status) != Some(s.status) {
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
                        .insert((s.expires_at_ms, s.id.as_str()), holds(s).as_slice())?;
                }
                Status::Processing => {
                    t.processing.insert(s.id.as_str(), holds(s).as_slice())?;
                }
                _ => {}
            }
        }
        put_json(&mut t.sessions, &s.id, s)?;
        // A session just created has no stream open on it yet.
        if before.is_some() {
            self.w.changed_sessions.push(s.id.as_str().into());
        }
        Ok(())
    }

    fn due_expiries(&mut self, now: i64, limit: usize) -> R<Vec<(i64, String)>> {
        let mut out = Vec::new();
        for e in self
            .t
            .expiry
            .range(..(now.saturating_add(1), ""))?
            .take(limit)
        {
            let (k, _) = e?;
            out.push((k.value().0, k.value().1.to_owned()));
        }
        Ok(out)
    }

    fn drop_expiry(&mut self, at: i64, id: &str) -> R<()> {
        self.t.expiry.remove((at, id))?;
        Ok(())
    }

    fn reservation(&mut self, key: &str, amount: u128) -> R<Option<Reservation>> {
        Ok(self.w.res.get(key, amount).cloned())
    }

    fn held_in(&mut self, key: &str, lo: u128, hi: u128, now: i64) -> R<Vec<u128>> {
        Ok(self.w.res.held_in(key, lo, hi, now).collect())
    }

    fn reusable_in(&mut self, key: &str, lo: u128, hi: u128, now: i64) -> R<Vec<(u128, i64)>> {
        Ok(self.w.res.reusable_in(key, lo, hi, now).collect())
    }

    fn any_held(&mut self, key: &str, now: i64) -> R<bool> {
        Ok(self.w.res.any_held(key, now))
    }

    fn hold(&mut self, key: &str, amount: u128, session_id: &str) -> R<Option<Reservation>> {
        if let Some(r) = self.w.res.get(key, amount)
            && r.held_until_ms.is_none()
            && r.session_id != session_id
        {
            return Err(TxError::Invariant(format!(
                "({key}, {amount}) already has an awaiting holder, {}",
                r.session_id
            )));
        }
        let r = Reservation {
            session_id: session_id.to_owned(),
            held_until_ms: None,
            reusable: false,
        };
        let old = self.w.res.insert(key, amount, r);
        // A pair past its grace but not yet swept, or freed by a session that received
        // nothing: its release entries go with it.
        if let Some(old) = &old
            && let Some(until) = old.held_until_ms
        {
            self.t.releases.remove((until, key, amount))?;
            if old.reusable {
                self.t.freed.remove((until, key, amount))?;
            }
        }
        Ok(old)
    }

    fn end_hold(
        &mut self,
        key: &str,
        amount: u128,
        session_id: &str,
        until: i64,
        reusable: bool,
    ) -> R<()> {
        let Some(r) = self
            .w
            .res
            .get_mut(key, amount)
            .filter(|r| r.session_id == session_id)
        else {
            return Ok(());
        };
        r.held_until_ms = Some(until);
        r.reusable = reusable;
        self.t.releases.insert((until, key, amount), session_id)?;
        if reusable {
            self.t.freed.insert((until, key, amount), ())?;
        }
        Ok(())
    }

    fn keep_hold(&mut self, key: &str, amount: u128, session_id: &str) -> R<()> {
        let Some(r) = self
            .w
            .res
            .get_mut(key, amount)
            .filter(|r| r.session_id == session_id)
        else {
            return Ok(());
        };
        r.reusable = false;
        if let Some(u) = r.held_until_ms {
            self.t.freed.remove((u, key, amount))?;
        }
        Ok(())
    }

    fn release_due(&mut self, now: i64, limit: usize) -> R<usize> {
        let mut due: Vec<(i64, String, u128)> = Vec::new();
        for e in self
            .t
            .releases
            .range(..(now.saturating_add(1), "", 0u128))?
            .take(limit)
        {
            let (k, _) = e?;
            let (a, b, c) = k.value();
            due.push((a, b.to_owned(), c));
        }
        for (until, dest, amount) in &due {
            self.t.releases.remove((*until, dest.as_str(), *amount))?;
            self.t.freed.remove((*until, dest.as_str(), *amount))?;
            self.w.res.release(dest, *amount, *until);
        }
        Ok(due.len())
    }

    fn payment_session(&mut self, payment_id: &str) -> R<Option<String>> {
        Ok(self
            .t
            .payments
            .get(payment_id)?
            .map(|v| v.value().to_owned()))
    }

    fn put_payment(&mut self, payment_id: &str, session_id: &str) -> R<()> {
        self.t.payments.insert(payment_id, session_id)?;
        Ok(())
    }

    fn reference(&mut self, reference: &str) -> R<Option<String>> {
        Ok(self.t.refs.get(reference)?.map(|v| v.value().to_owned()))
    }

    fn put_reference(&mut self, reference: &str, id: &str) -> R<()> {
        // One lookup: the refusal fails the whole transaction, so the overwrite never commits.
        if let Some(v) = self.t.refs.insert(reference, id)? {
            return Err(TxError::Invariant(format!(
                "reference {reference} is already recorded as {}",
                v.value()
            )));
        }
        Ok(())
    }

    fn drop_reference(&mut self, reference: &str) -> R<()> {
        self.t.refs.remove(reference)?;
        Ok(())
    }

    fn chain_pending(&mut self, key: &str) -> R<Option<String>> {
        Ok(self.t.chain_pending.get(key)?.map(|v| v.value().to_owned()))
    }

    fn put_chain_pending(&mut self, key: &str, value: &str) -> R<()> {
        self.t.chain_pending.insert(key, value)?;
        Ok(())
    }

    fn drop_chain_pending(&mut self, key: &str) -> R<()> {
        self.t.chain_pending.remove(key)?;
        Ok(())
    }

    fn claim_count(&mut self, session_id: &str) -> R<usize> {
        Ok(self
            .t
            .claims
            .range((session_id, "")..=(session_id, "\u{10FFFF}"))?
            .count())
    }

    fn claim_at(&mut self, session_id: &str, key: &str) -> R<Option<i64>> {
        Ok(self.t.claims.get((session_id, key))?.map(|v| v.value()))
    }

    fn put_claim(&mut self, session_id: &str, key: &str, at: i64) -> R<()> {
        self.t.claims.insert((session_id, key), at)?;
        Ok(())
    }

    fn claim_ref(&mut self, reference: &str) -> R<Option<String>> {
        Ok(self
            .t
            .claim_refs
            .get(reference)?
            .map(|v| v.value().to_owned()))
    }

    fn put_claim_ref(&mut self, reference: &str, session_id: &str) -> R<()> {
        self.t.claim_refs.insert(reference, session_id)?;
        Ok(())
    }

    fn drop_claim_ref(&mut self, reference: &str) -> R<()> {
        self.t.claim_refs.remove(reference)?;
        Ok(())
    }

    fn queued_claims(&mut self, credit_id: &str) -> R<Vec<String>> {
        second_keys(&self.t.claim_queue, credit_id)
    }

    fn claim_queued(&mut self, credit_id: &str, session_id: &str) -> R<bool> {
        Ok(self.t.claim_queue.get((credit_id, session_id))?.is_some())
    }

    fn queue_claim(&mut self, credit_id: &str, session_id: &str, at: i64) -> R<()> {
        self.t.claim_queue.insert((credit_id, session_id), at)?;
        Ok(())
    }

    fn unqueue_claim(&mut self, credit_id: &str, session_id: &str) -> R<()> {
        self.t.claim_queue.remove((credit_id, session_id))?;
        Ok(())
    }

    fn credit(&mut self, id: &str) -> R<Option<Credit>> {
        load_json(&self.t.credits, id)
    }

    fn insert_credit(&mut self, c: &Credit) -> R<()> {
        put_json(&mut self.t.credits, &c.id, c)?;
        if let Some(m) = &c.merchant_id {
            let sc = scope(m, c.livemode);
            self.t
                .credit_index
                .insert((sc.as_str(), c.id.as_str()), ())?;
        }
        Ok(())
    }

    fn put_credit(&mut self, c: &Credit) -> R<()> {
        put_json(&mut self.t.credits, &c.id, c)
    }

    fn insert_ignored(&mut self, c: &Credit) -> R<()> {
        put_json(&mut self.t.ignored, &c.id, c)?;
        if let Some(m) = &c.merchant_id {
            let sc = scope(m, c.livemode);
            self.t
                .ignored_index
                .insert((sc.as_str(), c.id.as_str()), ())?;
        }
        Ok(())
    }

    fn prune_ignored(&mut self, before_id: &str, limit: usize) -> R<usize> {
        let mut old: Vec<(String, Vec<u8>)> = Vec::new();
        for e in self.t.ignored.range(..before_id)?.take(limit) {
            let (k, v) = e?;
            old.push((k.value().to_owned(), v.value().to_vec()));
        }
        for (id, bytes) in &old {
            let c: Credit = serde_json::from_slice(bytes)?;
            if let Some(m) = &c.merchant_id {
                let sc = scope(m, c.livemode);
                self.t.ignored_index.remove((sc.as_str(), id.as_str()))?;
            }
            self.t.ignored.remove(id.as_str())?;
        }
        Ok(old.len())
    }

    fn xpub_next(&mut self, xpub: &str) -> R<u64> {
        let counter = format!("xpub_next:{xpub}");
        Ok(self.t.meta.get(counter.as_str())?.map_or(0, |v| v.value()))
    }

    fn put_xpub_address(&mut self, xpub: &str, index: u32, address: &str) -> R<()> {
        let counter = format!("xpub_next:{xpub}");
        self.t.meta.insert(counter.as_str(), u64::from(index) + 1)?;
        self.t.xpub_addresses.insert((xpub, index), address)?;
        Ok(())
    }

    fn idempotency(&mut self, key: &str) -> R<Option<IdempotencyRecord>> {
        load_json(&self.t.idempotency, key)
    }

    fn put_idempotency(&mut self, key: &str, rec: &IdempotencyRecord) -> R<()> {
        if self.t.idempotency.get(key)?.is_some() {
            return Err(TxError::Invariant(format!(
                "idempotency key {key:?} already has a record"
            )));
        }
        put_json(&mut self.t.idempotency, key, rec)?;
        self.t.idem_expiry.insert((rec.created_at_ms, key), ())?;
        Ok(())
    }

    fn forget_idempotency(&mut self, before_ms: i64, limit: usize) -> R<usize> {
        let mut old: Vec<(i64, String)> = Vec::new();
        for e in self.t.idem_expiry.range(..(before_ms, ""))?.take(limit) {
            let (k, _) = e?;
            old.push((k.value().0, k.value().1.to_owned()));
        }
        for (at, key) in &old {
            self.t.idem_expiry.remove((*at, key.as_str()))?;
            self.t.idempotency.remove(key.as_str())?;
        }
        Ok(old.len())
    }

    fn event(&mut self, id: &str) -> R<Option<Event>> {
        load_json(&self.t.events, id)
    }

    fn insert_event(&mut self, e: &Event) -> R<()> {
        put_json(&mut self.t.events, &e.id, e)?;
        let sc = scope(&e.merchant_id, e.livemode);
        self.t
            .event_index
            .insert((sc.as_str(), e.seq), e.id.as_str())?;
        Ok(())
    }

    fn events_between(&mut self, after: &str, before: &str, limit: usize) -> R<Vec<Event>> {
        let mut out = Vec::new();
        for e in self
            .t
            .events
            .range::<&str>((Bound::Excluded(after), Bound::Excluded(before)))?
            .take(limit)
        {
            let (_, v) = e?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    fn drop_event(&mut self, e: &Event) -> R<()> {
        let sc = scope(&e.merchant_id, e.livemode);
        self.t.event_index.remove((sc.as_str(), e.seq))?;
        self.t.events.remove(e.id.as_str())?;
        Ok(())
    }

    fn retention_cursor(&mut self, name: &str) -> R<Option<String>> {
        Ok(self.t.retention.get(name)?.map(|v| v.value().to_owned()))
    }

    fn set_retention_cursor(&mut self, name: &str, value: &str) -> R<()> {
        self.t.retention.insert(name, value)?;
        Ok(())
    }

    fn endpoints_of(&mut self, merchant_id: &str, livemode: bool) -> R<Vec<WebhookEndpoint>> {
        let sc = scope(merchant_id, livemode);
        let mut out = Vec::new();
        for id in second_keys(&self.t.endpoint_index, &sc)? {
            if let Some(ep) = load_json(&self.t.endpoints, &id)? {
                out.push(ep);
            }
        }
        Ok(out)
    }

    fn endpoint_count(&mut self, merchant_id: &str, livemode: bool) -> R<usize> {
        let sc = scope(merchant_id, livemode);
        Ok(second_keys(&self.t.endpoint_index, &sc)?.len())
    }

    fn endpoint(&mut self, id: &str) -> R<Option<WebhookEndpoint>> {
        load_json(&self.t.endpoints, id)
    }

    fn insert_endpoint(&mut self, ep: &WebhookEndpoint) -> R<()> {
        put_json(&mut self.t.endpoints, &ep.id, ep)?;
        let sc = scope(&ep.merchant_id, ep.livemode);
        self.t
            .endpoint_index
            .insert((sc.as_str(), ep.id.as_str()), ())?;
        Ok(())
    }

    fn put_endpoint(&mut self, ep: &WebhookEndpoint) -> R<()> {
        put_json(&mut self.t.endpoints, &ep.id, ep)
    }

    fn drop_endpoint(&mut self, ep: &WebhookEndpoint) -> R<()> {
        self.t.endpoints.remove(ep.id.as_str())?;
        let sc = scope(&ep.merchant_id, ep.livemode);
        self.t
            .endpoint_index
            .remove((sc.as_str(), ep.id.as_str()))?;
        Ok(())
    }

    fn merchant_secrets(
        &mut self,
        merchant_id: &str,
        livemode: bool,
    ) -> R<Option<Vec<SigningSecret>>> {
        load_json(&self.t.merchant_secrets, &secret_key(merchant_id, livemode))
    }

    fn put_merchant_secrets(
        &mut self,
        merchant_id: &str,
        livemode: bool,
        s: &[SigningSecret],
    ) -> R<()> {
        put_json(
            &mut self.t.merchant_secrets,
            &secret_key(merchant_id, livemode),
            &s,
        )
    }

    fn delivery(&mut self, id: &str) -> R<Option<Delivery>> {
        load_json(&self.t.deliveries, id)
    }

    fn insert_delivery(&mut self, d: &Delivery) -> R<()> {
        put_json(&mut self.t.deliveries, &d.id, d)?;
        self.t
            .event_deliveries
            .insert((d.event_id.as_str(), d.id.as_str()), ())?;
        if let Some(at) = d.next_attempt_ms {
            self.enqueue(d, at)?;
        }
        self.w.queued_deliveries = true;
        Ok(())
    }

    fn put_delivery(&mut self, was_due: Option<i64>, d: &Delivery) -> R<()> {
        if let Some(due) = was_due {
            self.t.outbox.remove((due, d.id.as_str()))?;
            let l = lane(d);
            self.t
                .outbox_lanes
                .remove((l.as_str(), due, d.id.as_str()))?;
        }
        if let Some(at) = d.next_attempt_ms {
            self.enqueue(d, at)?;
        }
        put_json(&mut self.t.deliveries, &d.id, d)
    }

    fn event_delivery_ids(&mut self, event_id: &str) -> R<Vec<String>> {
        second_keys(&self.t.event_deliveries, event_id)
    }

    fn drop_delivery(&mut self, event_id: &str, delivery_id: &str) -> R<()> {
        self.t.deliveries.remove(delivery_id)?;
        self.t.event_deliveries.remove((event_id, delivery_id))?;
        Ok(())
    }

    fn put_key(&mut self, hash: &str, key: &ApiKey) -> R<()> {
        put_json(&mut self.t.keys, hash, key)?;
        self.t.key_ids.insert(key.id.as_str(), hash)?;
        Ok(())
    }

    fn key_hash(&mut self, key_id: &str) -> R<Option<String>> {
        Ok(self.t.key_ids.get(key_id)?.map(|v| v.value().to_owned()))
    }

    fn key(&mut self, hash: &str) -> R<Option<ApiKey>> {
        load_json(&self.t.keys, hash)
    }

    fn set_cursor(&mut self, key: &str, value: u64) -> R<()> {
        self.t
            .meta
            .insert(format!("cursor:{key}").as_str(), value)?;
        Ok(())
    }

    fn payment_link(&mut self, id: &str) -> R<Option<PaymentLink>> {
        load_json(&self.t.payment_links, id)
    }

    fn insert_payment_link(&mut self, l: &PaymentLink) -> R<()> {
        crate::engine::tx::check_link_uses(l)?;
        put_json(&mut self.t.payment_links, &l.id, l)?;
        let sc = scope(&l.merchant_id, l.livemode);
        self.t
            .payment_link_index
            .insert((sc.as_str(), l.seq), l.id.as_str())?;
        Ok(())
    }

    fn put_payment_link(&mut self, l: &PaymentLink) -> R<()> {
        crate::engine::tx::check_link_uses(l)?;
        put_json(&mut self.t.payment_links, &l.id, l)
    }

    fn refund(&mut self, id: &str) -> R<Option<Refund>> {
        load_json(&self.t.refunds, id)
    }

    fn insert_refund(&mut self, r: &Refund) -> R<()> {
        put_json(&mut self.t.refunds, &r.id, r)?;
        let sc = scope(&r.merchant_id, r.livemode);
        self.t
            .refund_index
            .insert((sc.as_str(), r.seq), r.id.as_str())?;
        self.t
            .session_refunds
            .insert((r.session_id.as_str(), r.id.as_str()), ())?;
        Ok(())
    }

    fn put_refund(&mut self, r: &Refund) -> R<()> {
        put_json(&mut self.t.refunds, &r.id, r)
    }

    fn session_refunds(&mut self, session_id: &str) -> R<Vec<Refund>> {
        let mut out = Vec::new();
        for id in second_keys(&self.t.session_refunds, session_id)? {
            if let Some(r) = load_json(&self.t.refunds, &id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn ledger(
        &mut self,
        merchant_id: &str,
        livemode: bool,
        method: &str,
    ) -> R<Option<LedgerEntry>> {
        let sc = scope(merchant_id, livemode);
        match self.t.ledger.get((sc.as_str(), method))? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    fn put_ledger(
        &mut self,
        merchant_id: &str,
        livemode: bool,
        method: &str,
        e: &LedgerEntry,
    ) -> R<()> {
        let sc = scope(merchant_id, livemode);
        self.t
            .ledger
            .insert((sc.as_str(), method), serde_json::to_vec(e)?.as_slice())?;
        Ok(())
    }

    fn record(&mut self, kind: &str, key: &str) -> R<Option<Vec<u8>>> {
        Ok(self.t.records.get((kind, key))?.map(|v| v.value().to_vec()))
    }

    fn put_record(&mut self, kind: &str, key: &str, value: &[u8]) -> R<()> {
        self.t.records.insert((kind, key), value)?;
        Ok(())
    }

    fn drop_record(&mut self, kind: &str, key: &str) -> R<()> {
        self.t.records.remove((kind, key))?;
        Ok(())
    }
}

impl RedbTx<'_, '_> {
    /// Puts a delivery in the outbox (due at `at`) and in its lane.
    fn enqueue(&mut self, d: &Delivery, at: i64) -> R<()> {
        self.t.outbox.insert((at, d.id.as_str()), ())?;
        let l = lane(d);
        self.t
            .outbox_lanes
            .insert((l.as_str(), at, d.id.as_str()), ())?;
        Ok(())
    }
}
