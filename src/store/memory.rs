//! A small in-memory backend of the storage interface: every table a `BTreeMap`, a
//! transaction a copy of the state that replaces it on commit. It is not durable and copies the
//! whole state per batch; it exists to prove the seam (the engine's rules run on it unchanged)
//! and to run the storage conformance suite against a second backend.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Mutex;

use crate::domain::apikey::ApiKey;
use crate::domain::event::Event;
use crate::domain::link::PaymentLink;
use crate::domain::refund::{LedgerEntry, Refund};
use crate::domain::session::Session;
use crate::domain::webhook::{Delivery, SigningSecret, WebhookEndpoint};
use crate::engine::reservations::{Reservation, ReservationIndex};
use crate::engine::{
    Credit, Ctx, Effect, EngineConfig, IdempotencyRecord, IdempotencyWrite, OpError, Outcome, R,
    Tx, TxError, WriteOp, scope,
};

/// Everything the backend stores.
#[derive(Debug, Default, Clone)]
pub struct MemState {
    seq: u64,
    sessions: BTreeMap<String, Session>,
    session_index: BTreeMap<(String, u64), String>,
    expiry: BTreeSet<(i64, String)>,
    processing: BTreeSet<String>,
    res: ReservationIndex,
    /// (until, key, amount): ended holds, released by the sweeper.
    releases: BTreeSet<(i64, String, u128)>,
    payments: BTreeMap<String, String>,
    refs: BTreeMap<String, String>,
    chain_pending: BTreeMap<String, String>,
    claims: BTreeMap<(String, String), i64>,
    claim_refs: BTreeMap<String, String>,
    claim_queue: BTreeMap<(String, String), i64>,
    credits: BTreeMap<String, Credit>,
    ignored: BTreeMap<String, Credit>,
    xpub_next: BTreeMap<String, u64>,
    xpub_addresses: BTreeMap<(String, u32), String>,
    idempotency: BTreeMap<String, IdempotencyRecord>,
    events: BTreeMap<String, Event>,
    retention: BTreeMap<String, String>,
    endpoints: BTreeMap<String, WebhookEndpoint>,
    secrets: BTreeMap<(String, bool), Vec<SigningSecret>>,
    deliveries: BTreeMap<String, Delivery>,
    event_deliveries: BTreeSet<(String, String)>,
    outbox: BTreeSet<(i64, String)>,
    keys: BTreeMap<String, ApiKey>,
    key_ids: BTreeMap<String, String>,
    cursors: BTreeMap<String, u64>,
    refunds: BTreeMap<String, Refund>,
    session_refunds: BTreeSet<(String, String)>,
    ledger: BTreeMap<(String, String), LedgerEntry>,
    records: BTreeMap<(String, String), Vec<u8>>,
    payment_links: BTreeMap<String, PaymentLink>,
}

/// The in-memory store: batches run one at a time, each in its own transaction.
pub struct MemStore {
    state: Mutex<MemState>,
    cfg: EngineConfig,
}

impl MemStore {
    pub fn new(cfg: EngineConfig) -> MemStore {
        MemStore {
            state: Mutex::new(MemState::default()),
            cfg,
        }
    }

    /// Runs `ops` as one batch at `now`: all commit, or (on a storage error or an invariant the
    /// store refused) none does. Effects come back only for a committed batch.
    #[allow(clippy::type_complexity)]
    pub fn batch(
        &self,
        ops: Vec<(WriteOp, Option<IdempotencyWrite>)>,
        now: i64,
    ) -> R<(Vec<Result<Outcome, OpError>>, Vec<Effect>)> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| TxError::Storage("the in-memory store is poisoned".into()))?;
        let mut work = guard.clone();
        let mut results = Vec::with_capacity(ops.len());
        let mut effects = Vec::new();
        {
            let mut tx = MemTx { s: &mut work };
            for (op, idem) in ops {
                let mut cx = Ctx::new(&self.cfg, now);
                results.push(crate::engine::apply(&mut tx, &mut cx, op, idem)?);
                effects.append(&mut cx.effects);
            }
        }
        *guard = work;
        Ok((results, effects))
    }

    /// Runs `f` in one transaction, committed when it returns `Ok`.
    pub fn with_tx<T>(&self, f: impl FnOnce(&mut dyn Tx) -> R<T>) -> R<T> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| TxError::Storage("the in-memory store is poisoned".into()))?;
        let mut work = guard.clone();
        let out = f(&mut MemTx { s: &mut work })?;
        *guard = work;
        Ok(out)
    }
}

/// One transaction over a copy of the state.
pub struct MemTx<'a> {
    s: &'a mut MemState,
}

fn seconds<V>(m: &BTreeMap<(String, String), V>, first: &str) -> Vec<String> {
    m.range((first.to_owned(), String::new())..)
        .take_while(|((a, _), _)| a == first)
        .map(|((_, b), _)| b.clone())
        .collect()
}

fn seconds_set(m: &BTreeSet<(String, String)>, first: &str) -> Vec<String> {
    m.range((first.to_owned(), String::new())..)
        .take_while(|(a, _)| a == first)
        .map(|(_, b)| b.clone())
        .collect()
}

impl Tx for MemTx<'_> {
    fn next_seq(&mut self) -> R<u64> {
        self.s.seq += 1;
        Ok(self.s.seq)
    }

    fn session(&mut self, id: &str) -> R<Option<Session>> {
        Ok(self.s.sessions.get(id).cloned())
    }

    fn put_session(&mut self, before: Option<&Session>, s: &Session) -> R<()> {
        use crate::domain::session::Status;
        if before.is_none() {
            self.s
                .session_index
                .insert((scope(&s.merchant_id, s.livemode), s.seq), s.id.clone());
        }
        if let Some(b) = before {
            self.s.expiry.remove(&(b.expires_at_ms, b.id.clone()));
            self.s.processing.remove(&b.id);
        }
        match s.status {
            Status::Open => {
                self.s.expiry.insert((s.expires_at_ms, s.id.clone()));
            }
            Status::Processing => {
                self.s.processing.insert(s.id.clone());
            }
            _ => {}
        }
        self.s.sessions.insert(s.id.clone(), s.clone());
        Ok(())
    }

    fn due_expiries(&mut self, now: i64, limit: usize) -> R<Vec<(i64, String)>> {
        Ok(self
            .s
            .expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .cloned()
            .collect())
    }

    fn drop_expiry(&mut self, at: i64, id: &str) -> R<()> {
        self.s.expiry.remove(&(at, id.to_owned()));
        Ok(())
    }

    fn reservation(&mut self, key: &str, amount: u128) -> R<Option<Reservation>> {
        Ok(self.s.res.get(key, amount).cloned())
    }

    fn held_in(&mut self, key: &str, lo: u128, hi: u128, now: i64) -> R<Vec<u128>> {
        Ok(self.s.res.held_in(key, lo, hi, now).collect())
    }

    fn reusable_in(&mut self, key: &str, lo: u128, hi: u128, now: i64) -> R<Vec<(u128, i64)>> {
        Ok(self.s.res.reusable_in(key, lo, hi, now).collect())
    }

    fn any_held(&mut self, key: &str, now: i64) -> R<bool> {
        Ok(self.s.res.any_held(key, now))
    }

    fn hold(&mut self, key: &str, amount: u128, session_id: &str) -> R<Option<Reservation>> {
        if let Some(r) = self.s.res.get(key, amount)
            && r.held_until_ms.is_none()
            && r.session_id != session_id
        {
            return Err(TxError::Invariant(format!(
                "({key}, {amount}) already has an awaiting holder, {}",
                r.session_id
            )));
        }
        let old = self.s.res.insert(
            key,
            amount,
            Reservation {
                session_id: session_id.to_owned(),
                held_until_ms: None,
                reusable: false,
            },
        );
        if let Some(until) = old.as_ref().and_then(|o| o.held_until_ms) {
            self.s.releases.remove(&(until, key.to_owned(), amount));
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
        if let Some(r) = self
            .s
            .res
            .get_mut(key, amount)
            .filter(|r| r.session_id == session_id)
        {
            r.held_until_ms = Some(until);
            r.reusable = reusable;
            self.s.releases.insert((until, key.to_owned(), amount));
        }
        Ok(())
    }

    fn keep_hold(&mut self, key: &str, amount: u128, session_id: &str) -> R<()> {
        if let Some(r) = self
            .s
            .res
            .get_mut(key, amount)
            .filter(|r| r.session_id == session_id)
        {
            r.reusable = false;
        }
        Ok(())
    }

    fn release_due(&mut self, now: i64, limit: usize) -> R<usize> {
        let due: Vec<(i64, String, u128)> = self
            .s
            .releases
            .iter()
            .take_while(|(u, _, _)| *u <= now)
            .take(limit)
            .cloned()
            .collect();
        for (until, key, amount) in &due {
            self.s.releases.remove(&(*until, key.clone(), *amount));
            self.s.res.release(key, *amount, *until);
        }
        Ok(due.len())
    }

    fn payment_session(&mut self, payment_id: &str) -> R<Option<String>> {
        Ok(self.s.payments.get(payment_id).cloned())
    }

    fn put_payment(&mut self, payment_id: &str, session_id: &str) -> R<()> {
        self.s
            .payments
            .insert(payment_id.to_owned(), session_id.to_owned());
        Ok(())
    }

    fn reference(&mut self, reference: &str) -> R<Option<String>> {
        Ok(self.s.refs.get(reference).cloned())
    }

    fn put_reference(&mut self, reference: &str, id: &str) -> R<()> {
        if let Some(v) = self.s.refs.get(reference) {
            return Err(TxError::Invariant(format!(
                "reference {reference} is already recorded as {v}"
            )));
        }
        self.s.refs.insert(reference.to_owned(), id.to_owned());
        Ok(())
    }

    fn drop_reference(&mut self, reference: &str) -> R<()> {
        self.s.refs.remove(reference);
        Ok(())
    }

    fn chain_pending(&mut self, key: &str) -> R<Option<String>> {
        Ok(self.s.chain_pending.get(key).cloned())
    }

    fn put_chain_pending(&mut self, key: &str, value: &str) -> R<()> {
        self.s
            .chain_pending
            .insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn drop_chain_pending(&mut self, key: &str) -> R<()> {
        self.s.chain_pending.remove(key);
        Ok(())
    }

    fn claim_count(&mut self, session_id: &str) -> R<usize> {
        Ok(seconds(&self.s.claims, session_id).len())
    }

    fn claim_at(&mut self, session_id: &str, key: &str) -> R<Option<i64>> {
        Ok(self
            .s
            .claims
            .get(&(session_id.to_owned(), key.to_owned()))
            .copied())
    }

    fn put_claim(&mut self, session_id: &str, key: &str, at: i64) -> R<()> {
        self.s
            .claims
            .insert((session_id.to_owned(), key.to_owned()), at);
        Ok(())
    }

    fn claim_ref(&mut self, reference: &str) -> R<Option<String>> {
        Ok(self.s.claim_refs.get(reference).cloned())
    }

    fn put_claim_ref(&mut self, reference: &str, session_id: &str) -> R<()> {
        self.s
            .claim_refs
            .insert(reference.to_owned(), session_id.to_owned());
        Ok(())
    }

    fn drop_claim_ref(&mut self, reference: &str) -> R<()> {
        self.s.claim_refs.remove(reference);
        Ok(())
    }

    fn queued_claims(&mut self, credit_id: &str) -> R<Vec<String>> {
        Ok(seconds(&self.s.claim_queue, credit_id))
    }

    fn claim_queued(&mut self, credit_id: &str, session_id: &str) -> R<bool> {
        Ok(self
            .s
            .claim_queue
            .contains_key(&(credit_id.to_owned(), session_id.to_owned())))
    }

    fn queue_claim(&mut self, credit_id: &str, session_id: &str, at: i64) -> R<()> {
        self.s
            .claim_queue
            .insert((credit_id.to_owned(), session_id.to_owned()), at);
        Ok(())
    }

    fn unqueue_claim(&mut self, credit_id: &str, session_id: &str) -> R<()> {
        self.s
            .claim_queue
            .remove(&(credit_id.to_owned(), session_id.to_owned()));
        Ok(())
    }

    fn credit(&mut self, id: &str) -> R<Option<Credit>> {
        Ok(self.s.credits.get(id).cloned())
    }

    fn insert_credit(&mut self, c: &Credit) -> R<()> {
        self.s.credits.insert(c.id.clone(), c.clone());
        Ok(())
    }

    fn put_credit(&mut self, c: &Credit) -> R<()> {
        self.s.credits.insert(c.id.clone(), c.clone());
        Ok(())
    }

    fn insert_ignored(&mut self, c: &Credit) -> R<()> {
        self.s.ignored.insert(c.id.clone(), c.clone());
        Ok(())
    }

    fn prune_ignored(&mut self, before_id: &str, limit: usize) -> R<usize> {
        let old: Vec<String> = self
            .s
            .ignored
            .range::<str, _>((Bound::Unbounded, Bound::Excluded(before_id)))
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect();
        for id in &old {
            self.s.ignored.remove(id);
        }
        Ok(old.len())
    }

    fn xpub_next(&mut self, xpub: &str) -> R<u64> {
        Ok(self.s.xpub_next.get(xpub).copied().unwrap_or(0))
    }

    fn put_xpub_address(&mut self, xpub: &str, index: u32, address: &str) -> R<()> {
        self.s
            .xpub_next
            .insert(xpub.to_owned(), u64::from(index) + 1);
        self.s
            .xpub_addresses
            .insert((xpub.to_owned(), index), address.to_owned());
        Ok(())
    }

    fn idempotency(&mut self, key: &str) -> R<Option<IdempotencyRecord>> {
        Ok(self.s.idempotency.get(key).cloned())
    }

    fn put_idempotency(&mut self, key: &str, rec: &IdempotencyRecord) -> R<()> {
        if self.s.idempotency.contains_key(key) {
            return Err(TxError::Invariant(format!(
                "idempotency key {key:?} already has a record"
            )));
        }
        self.s.idempotency.insert(key.to_owned(), rec.clone());
        Ok(())
    }

    fn forget_idempotency(&mut self, before_ms: i64, limit: usize) -> R<usize> {
        let mut old: Vec<(i64, String)> = self
            .s
            .idempotency
            .iter()
            .filter(|(_, r)| r.created_at_ms < before_ms)
            .map(|(k, r)| (r.created_at_ms, k.clone()))
            .collect();
        old.sort();
        old.truncate(limit);
        for (_, k) in &old {
            self.s.idempotency.remove(k);
        }
        Ok(old.len())
    }

    fn event(&mut self, id: &str) -> R<Option<Event>> {
        Ok(self.s.events.get(id).cloned())
    }

    fn insert_event(&mut self, e: &Event) -> R<()> {
        self.s.events.insert(e.id.clone(), e.clone());
        Ok(())
    }

    fn events_between(&mut self, after: &str, before: &str, limit: usize) -> R<Vec<Event>> {
        if after >= before {
            return Ok(vec![]);
        }
        Ok(self
            .s
            .events
            .range::<str, _>((Bound::Excluded(after), Bound::Excluded(before)))
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn drop_event(&mut self, e: &Event) -> R<()> {
        self.s.events.remove(&e.id);
        Ok(())
    }

    fn retention_cursor(&mut self, name: &str) -> R<Option<String>> {
        Ok(self.s.retention.get(name).cloned())
    }

    fn set_retention_cursor(&mut self, name: &str, value: &str) -> R<()> {
        self.s.retention.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    fn endpoints_of(&mut self, merchant_id: &str, livemode: bool) -> R<Vec<WebhookEndpoint>> {
        Ok(self
            .s
            .endpoints
            .values()
            .filter(|e| e.merchant_id == merchant_id && e.livemode == livemode)
            .cloned()
            .collect())
    }

    fn endpoint_count(&mut self, merchant_id: &str, livemode: bool) -> R<usize> {
        Ok(self.endpoints_of(merchant_id, livemode)?.len())
    }

    fn endpoint(&mut self, id: &str) -> R<Option<WebhookEndpoint>> {
        Ok(self.s.endpoints.get(id).cloned())
    }

    fn insert_endpoint(&mut self, ep: &WebhookEndpoint) -> R<()> {
        self.s.endpoints.insert(ep.id.clone(), ep.clone());
        Ok(())
    }

    fn put_endpoint(&mut self, ep: &WebhookEndpoint) -> R<()> {
        self.s.endpoints.insert(ep.id.clone(), ep.clone());
        Ok(())
    }

    fn drop_endpoint(&mut self, ep: &WebhookEndpoint) -> R<()> {
        self.s.endpoints.remove(&ep.id);
        Ok(())
    }

    fn merchant_secrets(
        &mut self,
        merchant_id: &str,
        livemode: bool,
    ) -> R<Option<Vec<SigningSecret>>> {
        Ok(self
            .s
            .secrets
            .get(&(merchant_id.to_owned(), livemode))
            .cloned())
    }

    fn put_merchant_secrets(
        &mut self,
        merchant_id: &str,
        livemode: bool,
        s: &[SigningSecret],
    ) -> R<()> {
        self.s
            .secrets
            .insert((merchant_id.to_owned(), livemode), s.to_vec());
        Ok(())
    }

    fn delivery(&mut self, id: &str) -> R<Option<Delivery>> {
        Ok(self.s.deliveries.get(id).cloned())
    }

    fn insert_delivery(&mut self, d: &Delivery) -> R<()> {
        self.s
            .event_deliveries
            .insert((d.event_id.clone(), d.id.clone()));
        self.put_delivery(None, d)
    }

    fn put_delivery(&mut self, was_due: Option<i64>, d: &Delivery) -> R<()> {
        if let Some(due) = was_due {
            self.s.outbox.remove(&(due, d.id.clone()));
        }
        if let Some(at) = d.next_attempt_ms {
            self.s.outbox.insert((at, d.id.clone()));
        }
        self.s.deliveries.insert(d.id.clone(), d.clone());
        Ok(())
    }

    fn event_delivery_ids(&mut self, event_id: &str) -> R<Vec<String>> {
        Ok(seconds_set(&self.s.event_deliveries, event_id))
    }

    fn drop_delivery(&mut self, event_id: &str, delivery_id: &str) -> R<()> {
        self.s.deliveries.remove(delivery_id);
        self.s
            .event_deliveries
            .remove(&(event_id.to_owned(), delivery_id.to_owned()));
        Ok(())
    }

    fn put_key(&mut self, hash: &str, key: &ApiKey) -> R<()> {
        self.s.keys.insert(hash.to_owned(), key.clone());
        self.s.key_ids.insert(key.id.clone(), hash.to_owned());
        Ok(())
    }

    fn key_hash(&mut self, key_id: &str) -> R<Option<String>> {
        Ok(self.s.key_ids.get(key_id).cloned())
    }

    fn key(&mut self, hash: &str) -> R<Option<ApiKey>> {
        Ok(self.s.keys.get(hash).cloned())
    }

    fn set_cursor(&mut self, key: &str, value: u64) -> R<()> {
        self.s.cursors.insert(key.to_owned(), value);
        Ok(())
    }

    fn refund(&mut self, id: &str) -> R<Option<Refund>> {
        Ok(self.s.refunds.get(id).cloned())
    }

    fn insert_refund(&mut self, r: &Refund) -> R<()> {
        self.s
            .session_refunds
            .insert((r.session_id.clone(), r.id.clone()));
        self.put_refund(r)
    }

    fn put_refund(&mut self, r: &Refund) -> R<()> {
        self.s.refunds.insert(r.id.clone(), r.clone());
        Ok(())
    }

    fn session_refunds(&mut self, session_id: &str) -> R<Vec<Refund>> {
        Ok(seconds_set(&self.s.session_refunds, session_id)
            .iter()
            .filter_map(|id| self.s.refunds.get(id).cloned())
            .collect())
    }

    fn ledger(
        &mut self,
        merchant_id: &str,
        livemode: bool,
        method: &str,
    ) -> R<Option<LedgerEntry>> {
        Ok(self
            .s
            .ledger
            .get(&(scope(merchant_id, livemode), method.to_owned()))
            .cloned())
    }

    fn put_ledger(
        &mut self,
        merchant_id: &str,
        livemode: bool,
        method: &str,
        e: &LedgerEntry,
    ) -> R<()> {
        self.s
            .ledger
            .insert((scope(merchant_id, livemode), method.to_owned()), e.clone());
        Ok(())
    }

    fn record(&mut self, kind: &str, key: &str) -> R<Option<Vec<u8>>> {
        Ok(self
            .s
            .records
            .get(&(kind.to_owned(), key.to_owned()))
            .cloned())
    }

    fn put_record(&mut self, kind: &str, key: &str, value: &[u8]) -> R<()> {
        self.s
            .records
            .insert((kind.to_owned(), key.to_owned()), value.to_vec());
        Ok(())
    }

    fn drop_record(&mut self, kind: &str, key: &str) -> R<()> {
        self.s.records.remove(&(kind.to_owned(), key.to_owned()));
        Ok(())
    }

    fn payment_link(&mut self, id: &str) -> R<Option<PaymentLink>> {
        Ok(self.s.payment_links.get(id).cloned())
    }

    fn insert_payment_link(&mut self, l: &PaymentLink) -> R<()> {
        self.put_payment_link(l)
    }

    fn put_payment_link(&mut self, l: &PaymentLink) -> R<()> {
        crate::engine::tx::check_link_uses(l)?;
        self.s.payment_links.insert(l.id.clone(), l.clone());
        Ok(())
    }
}
