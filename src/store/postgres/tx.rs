//! `engine::Tx` over one PostgreSQL transaction. Every call is one statement (prepared once
//! per connection); what redb keeps in the writer's memory lives in tables here (the sequence
//! in `counters`, who holds a pair in `reservations`), because several nodes share it. The
//! money invariants are the database's constraints: a unique or check violation comes back as
//! `TxError::Invariant` and fails the batch.

use std::collections::HashMap;
use std::sync::Arc;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Row, Statement, Transaction};

use crate::domain::apikey::ApiKey;
use crate::domain::event::Event;
use crate::domain::link::PaymentLink;
use crate::domain::refund::{LedgerEntry, Refund};
use crate::domain::session::{Session, Status};
use crate::domain::webhook::{Delivery, SigningSecret, WebhookEndpoint, destination};
use crate::engine::reservations::Reservation;
use crate::engine::{Credit, IdempotencyRecord, R, Tx, TxError, scope};

/// Statements prepared on one connection, by their text (valid for the connection's life).
#[derive(Default)]
pub struct Stmts(HashMap<&'static str, Statement>);

/// A database error as the engine sees it: the constraints that carry a money invariant are
/// refusals, anything else a storage failure.
pub fn tx_error(e: &postgres::Error) -> TxError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::CHECK_VIOLATION => {
            let what = e
                .as_db_error()
                .map(|d| {
                    format!(
                        "{} ({})",
                        d.message(),
                        d.constraint().unwrap_or("constraint")
                    )
                })
                .unwrap_or_else(|| e.to_string());
            TxError::Invariant(what)
        }
        _ => TxError::Storage(format!("postgres: {e}")),
    }
}

fn int(v: u64) -> R<i64> {
    i64::try_from(v).map_err(|_| TxError::Storage(format!("{v} does not fit a bigint")))
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn amount(s: &str) -> R<u128> {
    s.parse()
        .map_err(|_| TxError::Storage(format!("stored amount {s:?} is not an integer")))
}

fn json<T: serde::de::DeserializeOwned>(row: &Row, i: usize) -> R<T> {
    let s: &str = row.get(i);
    Ok(serde_json::from_str(s)?)
}

/// A delivery's lane: merchant, mode and destination (scheme, host, port), as on redb.
pub fn lane(d: &Delivery) -> String {
    format!(
        "{}\x1f{}",
        scope(&d.merchant_id, d.livemode),
        destination(&d.url)
    )
}

/// One batch's transaction and what it collects for after the commit.
pub struct PgTx<'a, 'c> {
    pub t: &'a mut Transaction<'c>,
    pub stmts: &'a mut Stmts,
    /// The sequence as read at the first `next_seq` (locked) and as it is now.
    seq: Option<(u64, u64)>,
    /// Sessions the batch changed, announced once it commits.
    pub changed_sessions: Vec<Arc<str>>,
    /// Whether the batch queued deliveries (the notifiers are woken after the commit).
    pub queued_deliveries: bool,
}

impl<'a, 'c> PgTx<'a, 'c> {
    pub fn new(t: &'a mut Transaction<'c>, stmts: &'a mut Stmts) -> PgTx<'a, 'c> {
        PgTx {
            t,
            stmts,
            seq: None,
            changed_sessions: Vec::new(),
            queued_deliveries: false,
        }
    }

    /// Writes the sequence back (if it moved); call before the commit.
    pub fn finish(&mut self) -> R<()> {
        if let Some((start, now)) = self.seq
            && now != start
        {
            let v = int(now)?;
            self.x("UPDATE counters SET value = $1 WHERE name = 'seq'", &[&v])?;
            self.seq = Some((now, now));
        }
        Ok(())
    }

    fn st(&mut self, sql: &'static str) -> R<Statement> {
        if let Some(s) = self.stmts.0.get(sql) {
            return Ok(s.clone());
        }
        let s = self.t.prepare(sql).map_err(|e| tx_error(&e))?;
        self.stmts.0.insert(sql, s.clone());
        Ok(s)
    }

    fn q(&mut self, sql: &'static str, p: &[&(dyn ToSql + Sync)]) -> R<Vec<Row>> {
        let s = self.st(sql)?;
        self.t.query(&s, p).map_err(|e| tx_error(&e))
    }

    fn q1(&mut self, sql: &'static str, p: &[&(dyn ToSql + Sync)]) -> R<Option<Row>> {
        let s = self.st(sql)?;
        self.t.query_opt(&s, p).map_err(|e| tx_error(&e))
    }

    fn x(&mut self, sql: &'static str, p: &[&(dyn ToSql + Sync)]) -> R<u64> {
        let s = self.st(sql)?;
        self.t.execute(&s, p).map_err(|e| tx_error(&e))
    }

    fn body<T: serde::de::DeserializeOwned>(
        &mut self,
        sql: &'static str,
        p: &[&(dyn ToSql + Sync)],
    ) -> R<Option<T>> {
        match self.q1(sql, p)? {
            Some(r) => Ok(Some(json(&r, 0)?)),
            None => Ok(None),
        }
    }

    fn text(&mut self, sql: &'static str, p: &[&(dyn ToSql + Sync)]) -> R<Option<String>> {
        Ok(self.q1(sql, p)?.map(|r| r.get(0)))
    }

    fn texts(&mut self, sql: &'static str, p: &[&(dyn ToSql + Sync)]) -> R<Vec<String>> {
        Ok(self.q(sql, p)?.iter().map(|r| r.get(0)).collect())
    }

    fn bodies<T: serde::de::DeserializeOwned>(
        &mut self,
        sql: &'static str,
        p: &[&(dyn ToSql + Sync)],
    ) -> R<Vec<T>> {
        self.q(sql, p)?.iter().map(|r| json(r, 0)).collect()
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Tx for PgTx<'_, '_> {
    fn next_seq(&mut self) -> R<u64> {
        let (start, now) = match self.seq {
            Some(s) => s,
            None => {
                let row = self
                    .q1(
                        "SELECT value FROM counters WHERE name = 'seq' FOR UPDATE",
                        &[],
                    )?
                    .ok_or_else(|| TxError::Storage("the sequence row is missing".into()))?;
                let v = unsigned(row.get(0));
                (v, v)
            }
        };
        self.seq = Some((start, now + 1));
        Ok(now + 1)
    }

    fn session(&mut self, id: &str) -> R<Option<Session>> {
        self.body("SELECT body FROM sessions WHERE id = $1", &[&id])
    }

    fn put_session(&mut self, before: Option<&Session>, s: &Session) -> R<()> {
        let body = serde_json::to_string(s)?;
        let sc = scope(&s.merchant_id, s.livemode);
        let seq = int(s.seq)?;
        self.x(
            "INSERT INTO sessions (id, scope, seq, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
            &[&s.id, &sc, &seq, &body],
        )?;
        let was_open = before.filter(|b| b.status == Status::Open);
        let same = was_open
            .is_some_and(|b| s.status == Status::Open && b.expires_at_ms == s.expires_at_ms);
        if !same {
            if let Some(b) = was_open {
                self.x(
                    "DELETE FROM expiry WHERE at = $1 AND id = $2",
                    &[&b.expires_at_ms, &b.id],
                )?;
            }
            if s.status == Status::Open {
                self.x(
                    "INSERT INTO expiry (at, id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&s.expires_at_ms, &s.id],
                )?;
            }
        }
        if before.is_some() {
            self.changed_sessions.push(s.id.as_str().into());
        }
        Ok(())
    }

    fn due_expiries(&mut self, now: i64, n: usize) -> R<Vec<(i64, String)>> {
        Ok(self
            .q(
                "SELECT at, id FROM expiry WHERE at <= $1 ORDER BY at, id LIMIT $2",
                &[&now, &limit(n)],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn drop_expiry(&mut self, at: i64, id: &str) -> R<()> {
        self.x("DELETE FROM expiry WHERE at = $1 AND id = $2", &[&at, &id])?;
        Ok(())
    }

    fn reservation(&mut self, key: &str, amt: u128) -> R<Option<Reservation>> {
        let a = amt.to_string();
        Ok(self
            .q1(
                "SELECT session_id, held_until_ms, reusable FROM reservations \
                 WHERE key = $1 AND amount = ($2::text)::numeric",
                &[&key, &a],
            )?
            .map(|r| Reservation {
                session_id: r.get(0),
                held_until_ms: r.get(1),
                reusable: r.get(2),
            }))
    }

    fn held_in(&mut self, key: &str, lo: u128, hi: u128, now: i64) -> R<Vec<u128>> {
        let (lo, hi) = (lo.to_string(), hi.to_string());
        self.texts(
            "SELECT amount::text FROM reservations WHERE key = $1 \
             AND amount BETWEEN ($2::text)::numeric AND ($3::text)::numeric \
             AND (held_until_ms IS NULL OR held_until_ms > $4) AND NOT reusable ORDER BY amount",
            &[&key, &lo, &hi, &now],
        )?
        .iter()
        .map(|s| amount(s))
        .collect()
    }

    fn reusable_in(&mut self, key: &str, lo: u128, hi: u128, now: i64) -> R<Vec<(u128, i64)>> {
        let (lo, hi) = (lo.to_string(), hi.to_string());
        let rows = self.q(
            "SELECT amount::text, held_until_ms FROM reservations WHERE key = $1 \
             AND amount BETWEEN ($2::text)::numeric AND ($3::text)::numeric \
             AND reusable AND held_until_ms > $4 ORDER BY amount",
            &[&key, &lo, &hi, &now],
        )?;
        rows.iter()
            .map(|r| Ok((amount(r.get(0))?, r.get(1))))
            .collect()
    }

    fn any_held(&mut self, key: &str, now: i64) -> R<bool> {
        Ok(self
            .q1(
                "SELECT EXISTS (SELECT 1 FROM reservations WHERE key = $1 \
                 AND (held_until_ms IS NULL OR held_until_ms > $2))",
                &[&key, &now],
            )?
            .is_some_and(|r| r.get(0)))
    }

    fn hold(&mut self, key: &str, amt: u128, session_id: &str) -> R<Option<Reservation>> {
        let a = amt.to_string();
        let old = self
            .q1(
                "SELECT session_id, held_until_ms, reusable FROM reservations \
                 WHERE key = $1 AND amount = ($2::text)::numeric FOR UPDATE",
                &[&key, &a],
            )?
            .map(|r| Reservation {
                session_id: r.get(0),
                held_until_ms: r.get(1),
                reusable: r.get(2),
            });
        // The statement itself refuses to replace an awaiting holder, whatever was read.
        let n = self.x(
            "INSERT INTO reservations (key, amount, session_id, held_until_ms, reusable) \
             VALUES ($1, ($2::text)::numeric, $3, NULL, false) \
             ON CONFLICT (key, amount) DO UPDATE \
             SET session_id = EXCLUDED.session_id, held_until_ms = NULL, reusable = false \
             WHERE reservations.held_until_ms IS NOT NULL \
                OR reservations.session_id = EXCLUDED.session_id",
            &[&key, &a, &session_id],
        )?;
        if n == 0 {
            let holder = old.map(|o| o.session_id).unwrap_or_default();
            return Err(TxError::Invariant(format!(
                "({key}, {amt}) already has an awaiting holder, {holder}"
            )));
        }
        Ok(old)
    }

    fn end_hold(
        &mut self,
        key: &str,
        amt: u128,
        session_id: &str,
        until: i64,
        reusable: bool,
    ) -> R<()> {
        let a = amt.to_string();
        self.x(
            "UPDATE reservations SET held_until_ms = $4, reusable = $5 \
             WHERE key = $1 AND amount = ($2::text)::numeric AND session_id = $3",
            &[&key, &a, &session_id, &until, &reusable],
        )?;
        Ok(())
    }

    fn keep_hold(&mut self, key: &str, amt: u128, session_id: &str) -> R<()> {
        let a = amt.to_string();
        self.x(
            "UPDATE reservations SET reusable = false \
             WHERE key = $1 AND amount = ($2::text)::numeric AND session_id = $3",
            &[&key, &a, &session_id],
        )?;
        Ok(())
    }

    fn release_due(&mut self, now: i64, n: usize) -> R<usize> {
        let gone = self.x(
            "DELETE FROM reservations WHERE (key, amount) IN (SELECT key, amount FROM reservations \
             WHERE held_until_ms <= $1 ORDER BY held_until_ms LIMIT $2)",
            &[&now, &limit(n)],
        )?;
        Ok(usize::try_from(gone).unwrap_or(usize::MAX))
    }

    fn payment_session(&mut self, payment_id: &str) -> R<Option<String>> {
        self.text(
            "SELECT session_id FROM payments WHERE id = $1",
            &[&payment_id],
        )
    }

    fn put_payment(&mut self, payment_id: &str, session_id: &str) -> R<()> {
        self.x(
            "INSERT INTO payments (id, session_id) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET session_id = EXCLUDED.session_id",
            &[&payment_id, &session_id],
        )?;
        Ok(())
    }

    fn reference(&mut self, reference: &str) -> R<Option<String>> {
        self.text("SELECT id FROM refs WHERE reference = $1", &[&reference])
    }

    fn put_reference(&mut self, reference: &str, id: &str) -> R<()> {
        // The primary key refuses a second record: one payment per reference.
        self.x(
            "INSERT INTO refs (reference, id) VALUES ($1, $2)",
            &[&reference, &id],
        )?;
        Ok(())
    }

    fn drop_reference(&mut self, reference: &str) -> R<()> {
        self.x("DELETE FROM refs WHERE reference = $1", &[&reference])?;
        Ok(())
    }

    fn chain_pending(&mut self, key: &str) -> R<Option<String>> {
        self.text("SELECT value FROM chain_pending WHERE key = $1", &[&key])
    }

    fn put_chain_pending(&mut self, key: &str, value: &str) -> R<()> {
        self.x(
            "INSERT INTO chain_pending (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&key, &value],
        )?;
        Ok(())
    }

    fn drop_chain_pending(&mut self, key: &str) -> R<()> {
        self.x("DELETE FROM chain_pending WHERE key = $1", &[&key])?;
        Ok(())
    }

    fn claim_count(&mut self, session_id: &str) -> R<usize> {
        let n: i64 = self
            .q1(
                "SELECT count(*) FROM claims WHERE session_id = $1",
                &[&session_id],
            )?
            .map_or(0, |r| r.get(0));
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn claim_at(&mut self, session_id: &str, key: &str) -> R<Option<i64>> {
        Ok(self
            .q1(
                "SELECT at FROM claims WHERE session_id = $1 AND key = $2",
                &[&session_id, &key],
            )?
            .map(|r| r.get(0)))
    }

    fn put_claim(&mut self, session_id: &str, key: &str, at: i64) -> R<()> {
        self.x(
            "INSERT INTO claims (session_id, key, at) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id, key) DO UPDATE SET at = EXCLUDED.at",
            &[&session_id, &key, &at],
        )?;
        Ok(())
    }

    fn claim_ref(&mut self, reference: &str) -> R<Option<String>> {
        self.text(
            "SELECT session_id FROM claim_refs WHERE reference = $1",
            &[&reference],
        )
    }

    fn put_claim_ref(&mut self, reference: &str, session_id: &str) -> R<()> {
        self.x(
            "INSERT INTO claim_refs (reference, session_id) VALUES ($1, $2) \
             ON CONFLICT (reference) DO UPDATE SET session_id = EXCLUDED.session_id",
            &[&reference, &session_id],
        )?;
        Ok(())
    }

    fn drop_claim_ref(&mut self, reference: &str) -> R<()> {
        self.x("DELETE FROM claim_refs WHERE reference = $1", &[&reference])?;
        Ok(())
    }

    fn queued_claims(&mut self, credit_id: &str) -> R<Vec<String>> {
        self.texts(
            "SELECT session_id FROM claim_queue WHERE credit_id = $1 ORDER BY session_id",
            &[&credit_id],
        )
    }

    fn claim_queued(&mut self, credit_id: &str, session_id: &str) -> R<bool> {
        Ok(self
            .q1(
                "SELECT 1 FROM claim_queue WHERE credit_id = $1 AND session_id = $2",
                &[&credit_id, &session_id],
            )?
            .is_some())
    }

    fn queue_claim(&mut self, credit_id: &str, session_id: &str, at: i64) -> R<()> {
        self.x(
            "INSERT INTO claim_queue (credit_id, session_id, at) VALUES ($1, $2, $3) \
             ON CONFLICT (credit_id, session_id) DO UPDATE SET at = EXCLUDED.at",
            &[&credit_id, &session_id, &at],
        )?;
        Ok(())
    }

    fn unqueue_claim(&mut self, credit_id: &str, session_id: &str) -> R<()> {
        self.x(
            "DELETE FROM claim_queue WHERE credit_id = $1 AND session_id = $2",
            &[&credit_id, &session_id],
        )?;
        Ok(())
    }

    fn credit(&mut self, id: &str) -> R<Option<Credit>> {
        self.body("SELECT body FROM credits WHERE id = $1", &[&id])
    }

    fn insert_credit(&mut self, c: &Credit) -> R<()> {
        let sc = c.merchant_id.as_ref().map(|m| scope(m, c.livemode));
        let body = serde_json::to_string(c)?;
        self.x(
            "INSERT INTO credits (id, scope, body) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET scope = EXCLUDED.scope, body = EXCLUDED.body",
            &[&c.id, &sc, &body],
        )?;
        Ok(())
    }

    fn put_credit(&mut self, c: &Credit) -> R<()> {
        let body = serde_json::to_string(c)?;
        self.x(
            "INSERT INTO credits (id, scope, body) VALUES ($1, NULL, $2) \
             ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
            &[&c.id, &body],
        )?;
        Ok(())
    }

    fn insert_ignored(&mut self, c: &Credit) -> R<()> {
        let sc = c.merchant_id.as_ref().map(|m| scope(m, c.livemode));
        let body = serde_json::to_string(c)?;
        self.x(
            "INSERT INTO ignored (id, scope, body) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET scope = EXCLUDED.scope, body = EXCLUDED.body",
            &[&c.id, &sc, &body],
        )?;
        Ok(())
    }

    fn prune_ignored(&mut self, before_id: &str, n: usize) -> R<usize> {
        let gone = self.x(
            "DELETE FROM ignored WHERE id IN \
             (SELECT id FROM ignored WHERE id < $1 ORDER BY id LIMIT $2)",
            &[&before_id, &limit(n)],
        )?;
        Ok(usize::try_from(gone).unwrap_or(usize::MAX))
    }

    fn record(&mut self, kind: &str, key: &str) -> R<Option<Vec<u8>>> {
        Ok(self
            .q1(
                "SELECT value FROM records WHERE kind = $1 AND key = $2",
                &[&kind, &key],
            )?
            .map(|r| r.get(0)))
    }

    fn put_record(&mut self, kind: &str, key: &str, value: &[u8]) -> R<()> {
        self.x(
            "INSERT INTO records (kind, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value",
            &[&kind, &key, &value],
        )?;
        Ok(())
    }

    fn drop_record(&mut self, kind: &str, key: &str) -> R<()> {
        self.x(
            "DELETE FROM records WHERE kind = $1 AND key = $2",
            &[&kind, &key],
        )?;
        Ok(())
    }

    fn xpub_next(&mut self, xpub: &str) -> R<u64> {
        Ok(self
            .q1("SELECT next FROM xpub_next WHERE xpub = $1", &[&xpub])?
            .map_or(0, |r| unsigned(r.get(0))))
    }

    fn put_xpub_address(&mut self, xpub: &str, index: u32, address: &str) -> R<()> {
        let (i, next) = (i64::from(index), i64::from(index) + 1);
        self.x(
            "INSERT INTO xpub_next (xpub, next) VALUES ($1, $2) \
             ON CONFLICT (xpub) DO UPDATE SET next = EXCLUDED.next",
            &[&xpub, &next],
        )?;
        self.x(
            "INSERT INTO xpub_addresses (xpub, idx, address) VALUES ($1, $2, $3) \
             ON CONFLICT (xpub, idx) DO UPDATE SET address = EXCLUDED.address",
            &[&xpub, &i, &address],
        )?;
        Ok(())
    }

    fn idempotency(&mut self, key: &str) -> R<Option<IdempotencyRecord>> {
        self.body("SELECT body FROM idempotency WHERE key = $1", &[&key])
    }

    fn put_idempotency(&mut self, key: &str, rec: &IdempotencyRecord) -> R<()> {
        // The primary key refuses a second record under the key.
        let body = serde_json::to_string(rec)?;
        self.x(
            "INSERT INTO idempotency (key, created_at_ms, body) VALUES ($1, $2, $3)",
            &[&key, &rec.created_at_ms, &body],
        )?;
        Ok(())
    }

    fn forget_idempotency(&mut self, before_ms: i64, n: usize) -> R<usize> {
        let gone = self.x(
            "DELETE FROM idempotency WHERE key IN (SELECT key FROM idempotency \
             WHERE created_at_ms < $1 ORDER BY created_at_ms, key LIMIT $2)",
            &[&before_ms, &limit(n)],
        )?;
        Ok(usize::try_from(gone).unwrap_or(usize::MAX))
    }

    fn event(&mut self, id: &str) -> R<Option<Event>> {
        self.body("SELECT body FROM events WHERE id = $1", &[&id])
    }

    fn insert_event(&mut self, e: &Event) -> R<()> {
        let sc = scope(&e.merchant_id, e.livemode);
        let seq = int(e.seq)?;
        let body = serde_json::to_string(e)?;
        self.x(
            "INSERT INTO events (id, scope, seq, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
            &[&e.id, &sc, &seq, &body],
        )?;
        Ok(())
    }

    fn events_between(&mut self, after: &str, before: &str, n: usize) -> R<Vec<Event>> {
        self.bodies(
            "SELECT body FROM events WHERE id > $1 AND id < $2 ORDER BY id LIMIT $3",
            &[&after, &before, &limit(n)],
        )
    }

    fn drop_event(&mut self, e: &Event) -> R<()> {
        self.x("DELETE FROM events WHERE id = $1", &[&e.id])?;
        Ok(())
    }

    fn retention_cursor(&mut self, name: &str) -> R<Option<String>> {
        self.text("SELECT value FROM retention WHERE name = $1", &[&name])
    }

    fn set_retention_cursor(&mut self, name: &str, value: &str) -> R<()> {
        self.x(
            "INSERT INTO retention (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            &[&name, &value],
        )?;
        Ok(())
    }

    fn endpoints_of(&mut self, merchant_id: &str, livemode: bool) -> R<Vec<WebhookEndpoint>> {
        let sc = scope(merchant_id, livemode);
        self.bodies(
            "SELECT body FROM endpoints WHERE scope = $1 ORDER BY id",
            &[&sc],
        )
    }

    fn endpoint_count(&mut self, merchant_id: &str, livemode: bool) -> R<usize> {
        let sc = scope(merchant_id, livemode);
        let n: i64 = self
            .q1("SELECT count(*) FROM endpoints WHERE scope = $1", &[&sc])?
            .map_or(0, |r| r.get(0));
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn endpoint(&mut self, id: &str) -> R<Option<WebhookEndpoint>> {
        self.body("SELECT body FROM endpoints WHERE id = $1", &[&id])
    }

    fn insert_endpoint(&mut self, ep: &WebhookEndpoint) -> R<()> {
        self.put_endpoint(ep)
    }

    fn put_endpoint(&mut self, ep: &WebhookEndpoint) -> R<()> {
        let sc = scope(&ep.merchant_id, ep.livemode);
        let body = serde_json::to_string(ep)?;
        self.x(
            "INSERT INTO endpoints (id, scope, body) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
            &[&ep.id, &sc, &body],
        )?;
        Ok(())
    }

    fn drop_endpoint(&mut self, ep: &WebhookEndpoint) -> R<()> {
        self.x("DELETE FROM endpoints WHERE id = $1", &[&ep.id])?;
        Ok(())
    }

    fn merchant_secrets(
        &mut self,
        merchant_id: &str,
        livemode: bool,
    ) -> R<Option<Vec<SigningSecret>>> {
        let key = super::super::redb_tx::secret_key(merchant_id, livemode);
        self.body("SELECT body FROM merchant_secrets WHERE key = $1", &[&key])
    }

    fn put_merchant_secrets(
        &mut self,
        merchant_id: &str,
        livemode: bool,
        s: &[SigningSecret],
    ) -> R<()> {
        let key = super::super::redb_tx::secret_key(merchant_id, livemode);
        let body = serde_json::to_string(s)?;
        self.x(
            "INSERT INTO merchant_secrets (key, body) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET body = EXCLUDED.body",
            &[&key, &body],
        )?;
        Ok(())
    }

    fn delivery(&mut self, id: &str) -> R<Option<Delivery>> {
        self.body("SELECT body FROM deliveries WHERE id = $1", &[&id])
    }

    fn insert_delivery(&mut self, d: &Delivery) -> R<()> {
        self.put_delivery(None, d)?;
        self.queued_deliveries = true;
        Ok(())
    }

    fn put_delivery(&mut self, _was_due: Option<i64>, d: &Delivery) -> R<()> {
        // Recording an attempt also gives up the node's claim on it.
        let body = serde_json::to_string(d)?;
        let l = lane(d);
        self.x(
            "INSERT INTO deliveries (id, event_id, lane, next_attempt_ms, claimed_until_ms, body) \
             VALUES ($1, $2, $3, $4, NULL, $5) ON CONFLICT (id) DO UPDATE \
             SET next_attempt_ms = EXCLUDED.next_attempt_ms, claimed_until_ms = NULL, \
                 body = EXCLUDED.body",
            &[&d.id, &d.event_id, &l, &d.next_attempt_ms, &body],
        )?;
        Ok(())
    }

    fn event_delivery_ids(&mut self, event_id: &str) -> R<Vec<String>> {
        self.texts(
            "SELECT id FROM deliveries WHERE event_id = $1 ORDER BY id",
            &[&event_id],
        )
    }

    fn drop_delivery(&mut self, _event_id: &str, delivery_id: &str) -> R<()> {
        self.x("DELETE FROM deliveries WHERE id = $1", &[&delivery_id])?;
        Ok(())
    }

    fn put_key(&mut self, hash: &str, key: &ApiKey) -> R<()> {
        let body = serde_json::to_string(key)?;
        self.x(
            "INSERT INTO api_keys (hash, body) VALUES ($1, $2) \
             ON CONFLICT (hash) DO UPDATE SET body = EXCLUDED.body",
            &[&hash, &body],
        )?;
        self.x(
            "INSERT INTO api_key_ids (key_id, hash) VALUES ($1, $2) \
             ON CONFLICT (key_id) DO UPDATE SET hash = EXCLUDED.hash",
            &[&key.id, &hash],
        )?;
        Ok(())
    }

    fn key_hash(&mut self, key_id: &str) -> R<Option<String>> {
        self.text("SELECT hash FROM api_key_ids WHERE key_id = $1", &[&key_id])
    }

    fn key(&mut self, hash: &str) -> R<Option<ApiKey>> {
        self.body("SELECT body FROM api_keys WHERE hash = $1", &[&hash])
    }

    fn set_cursor(&mut self, key: &str, value: u64) -> R<()> {
        let v = int(value)?;
        self.x(
            "INSERT INTO cursors (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&key, &v],
        )?;
        Ok(())
    }

    fn payment_link(&mut self, id: &str) -> R<Option<PaymentLink>> {
        self.body("SELECT body FROM payment_links WHERE id = $1", &[&id])
    }

    fn insert_payment_link(&mut self, l: &PaymentLink) -> R<()> {
        self.put_payment_link(l)
    }

    fn put_payment_link(&mut self, l: &PaymentLink) -> R<()> {
        crate::engine::tx::check_link_uses(l)?;
        let sc = scope(&l.merchant_id, l.livemode);
        let (seq, uses) = (int(l.seq)?, int(l.uses)?);
        let max = l.max_uses.map(int).transpose()?;
        let body = serde_json::to_string(l)?;
        self.x(
            "INSERT INTO payment_links (id, scope, seq, uses, max_uses, body) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET uses = EXCLUDED.uses, body = EXCLUDED.body",
            &[&l.id, &sc, &seq, &uses, &max, &body],
        )?;
        Ok(())
    }

    fn refund(&mut self, id: &str) -> R<Option<Refund>> {
        self.body("SELECT body FROM refunds WHERE id = $1", &[&id])
    }

    fn insert_refund(&mut self, r: &Refund) -> R<()> {
        let sc = scope(&r.merchant_id, r.livemode);
        let seq = int(r.seq)?;
        let body = serde_json::to_string(r)?;
        self.x(
            "INSERT INTO refunds (id, scope, seq, session_id, body) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
            &[&r.id, &sc, &seq, &r.session_id, &body],
        )?;
        Ok(())
    }

    fn put_refund(&mut self, r: &Refund) -> R<()> {
        let body = serde_json::to_string(r)?;
        let n = self.x(
            "UPDATE refunds SET body = $2 WHERE id = $1",
            &[&r.id, &body],
        )?;
        if n == 0 {
            return self.insert_refund(r);
        }
        Ok(())
    }

    fn session_refunds(&mut self, session_id: &str) -> R<Vec<Refund>> {
        self.bodies(
            "SELECT body FROM refunds WHERE session_id = $1 ORDER BY id",
            &[&session_id],
        )
    }

    fn ledger(
        &mut self,
        merchant_id: &str,
        livemode: bool,
        method: &str,
    ) -> R<Option<LedgerEntry>> {
        let sc = scope(merchant_id, livemode);
        self.body(
            "SELECT body FROM ledger WHERE scope = $1 AND method = $2",
            &[&sc, &method],
        )
    }

    fn put_ledger(
        &mut self,
        merchant_id: &str,
        livemode: bool,
        method: &str,
        e: &LedgerEntry,
    ) -> R<()> {
        let sc = scope(merchant_id, livemode);
        let body = serde_json::to_string(e)?;
        let (rc, rf, pe) = (
            e.received.to_string(),
            e.refunded.to_string(),
            e.pending.to_string(),
        );
        // The table's check refuses refunds above what was received.
        self.x(
            "INSERT INTO ledger (scope, method, received, refunded, pending, body) \
             VALUES ($1, $2, ($3::text)::numeric, ($4::text)::numeric, ($5::text)::numeric, $6) \
             ON CONFLICT (scope, method) DO UPDATE SET received = EXCLUDED.received, \
             refunded = EXCLUDED.refunded, pending = EXCLUDED.pending, body = EXCLUDED.body",
            &[&sc, &method, &rc, &rf, &pe, &body],
        )?;
        Ok(())
    }
}
