//! The PostgreSQL backend: any number of paywatch nodes share one database.
//!
//! Writes go, as on redb, to one writer thread per node that takes every queued operation as a
//! batch, runs each through `engine::apply` over one PostgreSQL transaction (`tx::PgTx`) and
//! commits once before answering any (group commit). Batches from every node serialize on one
//! transaction-scoped advisory lock, so the engine's read-then-write rules see a database no
//! other node changes under them (READ COMMITTED plus that lock is as strict as SERIALIZABLE
//! for these transactions, and never fails a batch for a serialization conflict); the
//! invariants are the schema's constraints besides. Reads use a pool of connections and plain
//! MVCC snapshots: they take no lock a write waits for.
//!
//! The `Store` read methods are synchronous; on the daemon's multi-threaded runtime each runs in
//! `tokio::task::block_in_place`, so a slow database blocks one worker thread, not the runtime.
//!
//! Other nodes learn of a commit by LISTEN/NOTIFY: the batch notifies `paywatch_sessions` with
//! each changed session (live status streams re-read it) and `paywatch_outbox` when it queued
//! deliveries; a listener thread per node forwards both. Due deliveries are claimed with
//! `FOR UPDATE SKIP LOCKED` for a bounded time, so one node attempts each and a node that
//! dies mid-attempt leaves it to another once the claim runs out.

pub mod schema;
#[cfg(test)]
#[path = "../../../tests/support/pg_cluster.rs"]
pub(crate) mod test_cluster;
pub mod tx;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, NoTls};
use r2d2_postgres::PostgresConnectionManager;
use tokio::sync::{broadcast, mpsc, oneshot};

use self::tx::{PgTx, Stmts};
use super::{
    Credit, CreditQuery, EventQuery, IdempotencyRecord, IdempotencyWrite, OpError, Outcome, Page,
    RefundQuery, SessionQuery, Store, StoreError, WriteOp, scope,
};
use crate::domain::apikey::ApiKey;
use crate::domain::event::Event;
use crate::domain::link::PaymentLink;
use crate::domain::refund::{LedgerEntry, Refund};
use crate::domain::session::Session;
use crate::domain::webhook::{Delivery, SigningSecret, WebhookEndpoint};
use crate::engine::{R, Tx, TxError};

/// How the backend connects (`[storage]` with `backend = "postgres"`).
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A libpq URL or key=value string (`postgres://user:pass@host/db`).
    pub url: String,
    /// Read connections per node (the writer and the listener hold one each besides).
    pub pool_size: u32,
    /// Statements running longer are cancelled by the server.
    pub statement_timeout_ms: u64,
}

/// The advisory lock every write batch holds until it commits: writes of all nodes serialize.
const WRITE_LOCK: i64 = 0x7061_7977_7772_6974;

/// How long a node holds a due delivery it is attempting before another may take it.
pub const DELIVERY_CLAIM_MS: i64 = 60_000;

/// Most operations one transaction takes.
const MAX_BATCH: usize = 1024;

/// Session ids the announcement channel holds for a slow listener before it lags.
const CHANGES_BUFFER: usize = 4096;

const SESSIONS_CHANNEL: &str = "paywatch_sessions";
const OUTBOX_CHANNEL: &str = "paywatch_outbox";

type Reply = oneshot::Sender<Result<Result<Outcome, OpError>, StoreError>>;

struct Job {
    op: WriteOp,
    idempotency: Option<IdempotencyWrite>,
    reply: Reply,
}

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

fn storage<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Storage(format!("postgres: {e}"))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn pg_config(o: &PgOptions) -> Result<postgres::Config, StoreError> {
    let mut c: postgres::Config = o
        .url
        .parse()
        .map_err(|e| StoreError::Storage(format!("storage.url is not a PostgreSQL URL: {e}")))?;
    c.options(&format!("-c statement_timeout={}", o.statement_timeout_ms));
    c.application_name("paywatch");
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(Duration::from_secs(5));
    }
    Ok(c)
}

/// Runs blocking database work without stalling the async runtime: on a worker of a
/// multi-threaded runtime the worker hands its other tasks off first (`block_in_place`). The
/// synchronous client drives its own small runtime and refuses to start inside another, so
/// where a runtime is still entered after that (a `block_on` thread, a current-thread runtime)
/// the work runs on a short-lived thread of its own; outside any runtime it simply runs.
fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let aside = |f: Box<dyn FnOnce() -> T + Send + '_>| -> T {
        if Handle::try_current().is_err() {
            return f();
        }
        std::thread::scope(|s| match s.spawn(f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    };
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| aside(Box::new(f)))
        }
        Ok(_) => aside(Box::new(f)),
        Err(_) => f(),
    }
}

/// Connects and applies the migrations: the schema version the database is at.
fn connect_and_migrate(o: &PgOptions) -> Result<(Client, i32), StoreError> {
    let cfg = pg_config(o)?;
    blocking(|| {
        let mut c = cfg.connect(NoTls).map_err(storage)?;
        let v = schema::migrate(&mut c).map_err(|e| StoreError::Storage(e.to_string()))?;
        Ok((c, v))
    })
}

/// The PostgreSQL-backed store of one node.
pub struct PgStore {
    /// `None` only while dropping: the synchronous client closes its connections by blocking,
    /// so the pool is dropped off the async runtime.
    pool: Option<Pool>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    stop: Arc<AtomicBool>,
    listener: Mutex<Option<JoinHandle<()>>>,
    outbox_signal: Arc<tokio::sync::Notify>,
    session_changes: broadcast::Sender<Arc<str>>,
    retention: super::Retention,
}

impl PgStore {
    /// The rows of `table` (`sessions` or `events`) in `scope` below sequence `upper`, newest
    /// first, that `keep` accepts: up to `limit`, and whether more were there. Read 256 rows a
    /// page, so a filter that keeps few does not load the whole scope at once.
    fn newest_first<T: serde::de::DeserializeOwned + Send>(
        &self,
        table: &'static str,
        what: &'static str,
        scope: &str,
        mut upper: i64,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Page<T>, StoreError> {
        let sql = format!(
            "SELECT seq, body FROM {table} WHERE scope = $1 AND seq < $2 ORDER BY seq DESC LIMIT 256"
        );
        let mut items = Vec::new();
        loop {
            let page: Vec<(i64, T)> = self.read(|c| {
                c.query(sql.as_str(), &[&scope, &upper])
                    .map_err(storage)?
                    .iter()
                    .map(|r| Ok((r.get(0), decode(what, r.get(1))?)))
                    .collect()
            })?;
            let Some((last, _)) = page.last() else {
                return Ok(Page {
                    items,
                    has_more: false,
                });
            };
            upper = *last;
            for (_, x) in page {
                if !keep(&x) {
                    continue;
                }
                if items.len() == limit {
                    return Ok(Page {
                        items,
                        has_more: true,
                    });
                }
                items.push(x);
            }
        }
    }

    /// Connects, migrates the schema (refusing one newer than this binary), and starts the
    /// writer and the listener.
    pub fn open(
        o: &PgOptions,
        grace_ms: i64,
        retention: super::Retention,
        queue: usize,
    ) -> Result<PgStore, StoreError> {
        // Wholly off the runtime: a connection dropped on a failed start closes by blocking.
        blocking(|| PgStore::open_here(o, grace_ms, retention, queue))
    }

    fn open_here(
        o: &PgOptions,
        grace_ms: i64,
        retention: super::Retention,
        queue: usize,
    ) -> Result<PgStore, StoreError> {
        let cfg = pg_config(o)?;
        let (writer_client, _) = connect_and_migrate(o)?;
        let pool = blocking(|| {
            r2d2::Pool::builder()
                .max_size(o.pool_size.max(1))
                .min_idle(Some(1))
                .connection_timeout(Duration::from_secs(5))
                .build(PostgresConnectionManager::new(cfg.clone(), NoTls))
        })
        .map_err(storage)?;
        let engine = crate::engine::EngineConfig {
            grace_ms,
            retention,
        };
        let outbox_signal = Arc::new(tokio::sync::Notify::new());
        let (session_changes, _) = broadcast::channel(CHANGES_BUFFER);
        let (jobs, rx) = mpsc::channel::<Job>(queue.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (cfg, signal, changes) =
                (cfg.clone(), outbox_signal.clone(), session_changes.clone());
            std::thread::Builder::new()
                .name("paywatch-pg-writer".into())
                .spawn(move || writer_loop(writer_client, cfg, engine, rx, signal, changes))
                .map_err(storage)?
        };
        let listener = {
            let (cfg, signal, changes, stop) = (
                cfg,
                outbox_signal.clone(),
                session_changes.clone(),
                stop.clone(),
            );
            std::thread::Builder::new()
                .name("paywatch-pg-listen".into())
                .spawn(move || listen_loop(cfg, signal, changes, stop))
                .map_err(storage)?
        };
        Ok(PgStore {
            pool: Some(pool),
            jobs: Mutex::new(Some(jobs)),
            writer: Mutex::new(Some(writer)),
            stop,
            listener: Mutex::new(Some(listener)),
            outbox_signal,
            session_changes,
            retention,
        })
    }

    /// Stops taking writes, lets the writer commit what is queued, and waits for both threads.
    pub fn close(&self) {
        if let Ok(mut g) = self.jobs.lock() {
            g.take();
        }
        self.stop.store(true, Ordering::SeqCst);
        for slot in [&self.writer, &self.listener] {
            let handle = slot.lock().ok().and_then(|mut g| g.take());
            if let Some(h) = handle {
                let _ = blocking(|| h.join());
            }
        }
    }

    fn pool(&self) -> Result<&Pool, StoreError> {
        self.pool
            .as_ref()
            .ok_or_else(|| StoreError::Storage("the store is closing".into()))
    }

    /// Runs `f` on a pooled connection, off the async runtime's back.
    fn read<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        blocking(|| {
            let mut c = self.pool()?.get().map_err(storage)?;
            f(&mut c)
        })
    }

    fn body<T: serde::de::DeserializeOwned + Send>(
        &self,
        what: &str,
        sql: &str,
        p: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<T>, StoreError> {
        self.read(|c| match c.query_opt(sql, p).map_err(storage)? {
            Some(r) => decode(what, r.get(0)).map(Some),
            None => Ok(None),
        })
    }

    fn bodies<T: serde::de::DeserializeOwned + Send>(
        &self,
        what: &str,
        sql: &str,
        p: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<T>, StoreError> {
        self.read(|c| {
            c.query(sql, p)
                .map_err(storage)?
                .iter()
                .map(|r| decode(what, r.get(0)))
                .collect()
        })
    }

    /// Runs `f` in one write transaction under the write lock, committed when it returns `Ok`
    /// (the conformance suite drives the backend's `Tx` through this).
    /// Not for an async context: it blocks the calling thread.
    pub fn with_tx<T>(&self, f: &mut dyn FnMut(&mut dyn Tx) -> R<T>) -> R<T> {
        let mut stmts = Stmts::default();
        (|| {
            let mut c = self
                .pool()
                .map_err(|e| TxError::Storage(e.to_string()))?
                .get()
                .map_err(|e| TxError::Storage(e.to_string()))?;
            let mut t = c.transaction().map_err(|e| tx::tx_error(&e))?;
            t.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                .map_err(|e| tx::tx_error(&e))?;
            let out = {
                let mut tx = PgTx::new(&mut t, &mut stmts);
                let v = f(&mut tx)?;
                tx.finish()?;
                v
            };
            t.commit().map_err(|e| tx::tx_error(&e))?;
            Ok(out)
        })()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.close();
        if let Some(pool) = self.pool.take() {
            blocking(move || drop(pool));
        }
    }
}

/// The writer: batches, one transaction each, answers after the commit. A failed batch is
/// rolled back whole and every job in it answered with the error; nothing it did is kept in
/// memory, so the next batch starts clean (on a fresh connection if this one broke).
fn writer_loop(
    client: Client,
    cfg: postgres::Config,
    engine: crate::engine::EngineConfig,
    mut rx: mpsc::Receiver<Job>,
    signal: Arc<tokio::sync::Notify>,
    changes: broadcast::Sender<Arc<str>>,
) {
    let mut client = Some(client);
    let mut stmts = Stmts::default();
    let mut batch: Vec<Job> = Vec::with_capacity(256);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            stmts = Stmts::default();
            client = match cfg.connect(NoTls) {
                Ok(c) => Some(c),
                Err(e) => {
                    let e = StoreError::Storage(format!(
                        "postgres is unreachable ({e}); nothing was written"
                    ));
                    for job in batch.drain(..) {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
        }
        let Some(c) = client.as_mut() else { continue };
        match run_batch(c, &mut stmts, &engine, &mut batch) {
            Ok((results, effects, changed, queued)) => {
                for e in &effects {
                    e.record();
                }
                for id in changed {
                    let _ = changes.send(id);
                }
                if queued {
                    signal.notify_one();
                }
                for (job, r) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(Ok(r));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = batch.len(), "write batch failed; nothing in it was acknowledged");
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(e.clone()));
                }
                // A statement may have broken the connection's prepared state: start afresh.
                stmts = Stmts::default();
                if c.is_closed() {
                    client = None;
                }
            }
        }
    }
}

type BatchOut = (
    Vec<Result<Outcome, OpError>>,
    Vec<crate::engine::Effect>,
    Vec<Arc<str>>,
    bool,
);

fn run_batch(
    c: &mut Client,
    stmts: &mut Stmts,
    engine: &crate::engine::EngineConfig,
    batch: &mut [Job],
) -> Result<BatchOut, StoreError> {
    let mut t = c.transaction().map_err(storage)?;
    t.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
        .map_err(storage)?;
    let mut results = Vec::with_capacity(batch.len());
    let mut effects = Vec::new();
    let (changed, queued) = {
        let mut tx = PgTx::new(&mut t, stmts);
        for job in batch.iter_mut() {
            let op = std::mem::replace(
                &mut job.op,
                WriteOp::Sweep {
                    now_ms: 0,
                    idempotency_ttl_ms: 0,
                    limit: 0,
                },
            );
            let mut cx = crate::engine::Ctx::new(engine, crate::engine::now_ms());
            let r = crate::engine::apply(&mut tx, &mut cx, op, job.idempotency.take())
                .map_err(|e| StoreError::Storage(e.to_string()))?;
            effects.append(&mut cx.effects);
            results.push(r);
        }
        tx.finish()
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        (
            std::mem::take(&mut tx.changed_sessions),
            tx.queued_deliveries,
        )
    };
    // Delivered to every node's listener when (and only if) the transaction commits.
    if !changed.is_empty() {
        let ids: Vec<String> = changed.iter().map(|s| s.to_string()).collect();
        t.execute(
            "SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id",
            &[&SESSIONS_CHANNEL, &ids],
        )
        .map_err(storage)?;
    }
    if queued {
        t.execute("SELECT pg_notify($1, '')", &[&OUTBOX_CHANNEL])
            .map_err(storage)?;
    }
    t.commit().map_err(storage)?;
    Ok((results, effects, changed, queued))
}

/// Forwards other nodes' (and this node's) commits: session changes to the live streams, queued
/// deliveries to the notifier. Reconnects when the connection drops; a stream that missed an
/// announcement meanwhile re-reads on its own timer.
fn listen_loop(
    cfg: postgres::Config,
    signal: Arc<tokio::sync::Notify>,
    changes: broadcast::Sender<Arc<str>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let mut c = match cfg.connect(NoTls) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to postgres to listen for other nodes' commits; retrying");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        if let Err(e) = c.batch_execute(&format!(
            "LISTEN {SESSIONS_CHANNEL}; LISTEN {OUTBOX_CHANNEL}"
        )) {
            tracing::warn!(error = %e, "cannot LISTEN on postgres; retrying");
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        // Whatever was announced while not listening is unknown: wake the notifier once.
        signal.notify_one();
        'conn: while !stop.load(Ordering::SeqCst) {
            let mut n = c.notifications();
            let mut it = n.timeout_iter(Duration::from_millis(250));
            let mut broken = false;
            loop {
                use postgres::fallible_iterator::FallibleIterator as _;
                match it.next() {
                    Ok(Some(note)) => {
                        if note.channel() == SESSIONS_CHANNEL {
                            let _ = changes.send(note.payload().into());
                        } else {
                            signal.notify_one();
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the postgres listen connection; reconnecting");
                        broken = true;
                        break;
                    }
                }
            }
            drop(it);
            drop(n);
            if broken || c.is_closed() {
                break 'conn;
            }
        }
    }
}

/// What `paywatch doctor` reports of one check.
pub enum Check {
    Ok(String),
    Fail(String),
}

/// `paywatch doctor` on PostgreSQL, without changing anything: the connection, the schema
/// version against this binary's, and the privileges the daemon needs (read and write every
/// table, or create them on a fresh database).
pub fn doctor(o: &PgOptions) -> Vec<(&'static str, Check)> {
    let cfg = match pg_config(o) {
        Ok(c) => c,
        Err(e) => return vec![("storage.url", Check::Fail(e.to_string()))],
    };
    blocking(move || {
        let mut out = Vec::new();
        let mut c = match cfg.connect(NoTls) {
            Ok(c) => c,
            Err(e) => {
                out.push((
                    "storage.url",
                    Check::Fail(format!(
                        "cannot connect to PostgreSQL: {e} — fix: check the host, port, user and password of storage.url"
                    )),
                ));
                return out;
            }
        };
        let server = c
            .query_one(
                "SELECT current_setting('server_version'), current_user, current_database()",
                &[],
            )
            .map(|r| {
                let (v, u, d): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                format!("PostgreSQL {v}, database {d} as {u}")
            });
        match server {
            Ok(s) => out.push(("storage.url", Check::Ok(s))),
            Err(e) => {
                out.push(("storage.url", Check::Fail(e.to_string())));
                return out;
            }
        }
        let version = schema::version(&mut c);
        let fresh = matches!(version, Ok(None));
        out.push((
            "storage schema",
            match version {
                Ok(None) => Check::Ok(format!(
                    "empty database: the schema (version {}) is created at the first start",
                    schema::VERSION
                )),
                Ok(Some(v)) if v > schema::VERSION => Check::Fail(format!(
                    "version {v} is newer than this binary understands ({}) — fix: upgrade paywatch on this node",
                    schema::VERSION
                )),
                Ok(Some(v)) if v < schema::VERSION => Check::Ok(format!(
                    "version {v}: migrated to {} at the next start",
                    schema::VERSION
                )),
                Ok(Some(v)) => Check::Ok(format!("version {v}, as this binary")),
                Err(e) => Check::Fail(e.to_string()),
            },
        ));
        let privileges = if fresh {
            c.query_one(
                "SELECT has_schema_privilege(current_user, current_schema(), 'CREATE')",
                &[],
            )
            .map(|r| {
                if r.get::<_, bool>(0) {
                    Check::Ok("may create the schema's tables".into())
                } else {
                    Check::Fail(
                        "cannot create tables in the current schema — fix: GRANT CREATE ON SCHEMA public TO the daemon's user"
                            .into(),
                    )
                }
            })
        } else {
            c.query(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'r' AND n.nspname = current_schema() \
                 AND NOT has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE') ORDER BY 1",
                &[],
            )
            .map(|rows| {
                let missing: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                if missing.is_empty() {
                    Check::Ok("reads and writes every table".into())
                } else {
                    Check::Fail(format!(
                        "may not read and write {} — fix: GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO the daemon's user",
                        missing.join(", ")
                    ))
                }
            })
        };
        out.push((
            "storage privileges",
            privileges.unwrap_or_else(|e| Check::Fail(e.to_string())),
        ));
        out
    })
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn seq_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store for PgStore {
    fn submit(
        &self,
        op: WriteOp,
        idempotency: Option<IdempotencyWrite>,
    ) -> oneshot::Receiver<Result<Result<Outcome, OpError>, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            op,
            idempotency,
            reply,
        };
        let guard = self.jobs.lock().ok();
        match guard.as_ref().and_then(|g| g.as_ref()) {
            Some(sender) => match sender.try_send(job) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(j)) => {
                    let _ = j.reply.send(Err(StoreError::Overloaded));
                }
                Err(mpsc::error::TrySendError::Closed(j)) => {
                    let _ = j.reply.send(Err(StoreError::WriterGone));
                }
            },
            None => {
                let _ = job.reply.send(Err(StoreError::WriterGone));
            }
        }
        rx
    }

    fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        crate::metrics::METRICS.session_read();
        self.body("session", "SELECT body FROM sessions WHERE id = $1", &[&id])
    }

    fn cursor(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.read(|c| {
            Ok(
                c.query_opt("SELECT value FROM cursors WHERE key = $1", &[&key])
                    .map_err(storage)?
                    .map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)),
            )
        })
    }

    fn chain_pending(&self, prefix: &str) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.read(|c| {
            let rows = c
                .query(
                    "SELECT key, value FROM chain_pending WHERE starts_with(key, $1) ORDER BY key",
                    &[&prefix],
                )
                .map_err(storage)?;
            Ok(rows
                .iter()
                .map(|r| {
                    let (k, v): (&str, &str) = (r.get(0), r.get(1));
                    let (payment, block) = v.split_once('@').unwrap_or((v, "0"));
                    let reference = k.split_once('|').map_or(k, |(_, r)| r);
                    (
                        reference.to_owned(),
                        payment.to_owned(),
                        block.parse().unwrap_or(0),
                    )
                })
                .collect())
        })
    }

    fn record(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT value FROM records WHERE kind = $1 AND key = $2",
                &[&kind, &key],
            )
            .map_err(storage)?
            .map(|r| r.get(0)))
        })
    }

    fn records(
        &self,
        kind: &str,
        after: Option<&str>,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // `after` is exclusive in the direction of travel.
        let sql = match (newest_first, after.is_some()) {
            (false, false) => {
                "SELECT key, value FROM records WHERE kind = $1 ORDER BY key LIMIT $2"
            }
            (true, false) => {
                "SELECT key, value FROM records WHERE kind = $1 ORDER BY key DESC LIMIT $2"
            }
            (false, true) => {
                "SELECT key, value FROM records WHERE kind = $1 AND key > $3 ORDER BY key LIMIT $2"
            }
            (true, true) => {
                "SELECT key, value FROM records WHERE kind = $1 AND key < $3 ORDER BY key DESC LIMIT $2"
            }
        };
        self.read(|c| {
            let rows = match after {
                Some(a) => c.query(sql, &[&kind, &limit, &a]),
                None => c.query(sql, &[&kind, &limit]),
            }
            .map_err(storage)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn xpub_addresses(
        &self,
        xpub: &str,
        from_index: u32,
    ) -> Result<Vec<(u32, String)>, StoreError> {
        let from = i64::from(from_index);
        self.read(|c| {
            Ok(c.query(
                "SELECT idx, address FROM xpub_addresses WHERE xpub = $1 AND idx >= $2 ORDER BY idx",
                &[&xpub, &from],
            )
            .map_err(storage)?
            .iter()
            .map(|r| (u32::try_from(r.get::<_, i64>(0)).unwrap_or(u32::MAX), r.get(1)))
            .collect())
        })
    }

    fn list_sessions(&self, q: &SessionQuery) -> Result<Page<Session>, StoreError> {
        let empty = Page {
            items: vec![],
            has_more: false,
        };
        let mut upper = i64::MAX;
        if let Some(id) = &q.starting_after {
            let Some(s) = self.session(id)? else {
                return Ok(empty);
            };
            if s.merchant_id != q.merchant_id || s.livemode != q.livemode {
                return Ok(empty);
            }
            upper = seq_of(s.seq);
        }
        let sc = scope(&q.merchant_id, q.livemode);
        self.newest_first("sessions", "session", &sc, upper, q.limit, |s: &Session| {
            !(q.created_lte_ms.is_some_and(|t| s.created_at_ms > t)
                || q.created_gte_ms.is_some_and(|t| s.created_at_ms < t)
                || q.status.is_some_and(|st| s.status != st)
                || q.payment_method
                    .as_ref()
                    .is_some_and(|m| !s.payment_options.iter().any(|o| &o.method == m))
                || q.client_reference_id
                    .as_ref()
                    .is_some_and(|c| s.client_reference_id.as_ref() != Some(c)))
        })
    }

    fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        self.body(
            "api key",
            "SELECT body FROM api_keys WHERE hash = $1",
            &[&hash],
        )
    }

    fn list_keys(&self, merchant_id: Option<&str>) -> Result<Vec<ApiKey>, StoreError> {
        let mut out: Vec<ApiKey> = self
            .bodies("api key", "SELECT body FROM api_keys", &[])?
            .into_iter()
            .filter(|k: &ApiKey| merchant_id.is_none_or(|m| m == k.merchant_id))
            .collect();
        out.sort_by_key(|k| std::cmp::Reverse(k.created_at_ms));
        Ok(out)
    }

    fn idempotency(&self, scope_key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.body(
            "idempotency record",
            "SELECT body FROM idempotency WHERE key = $1",
            &[&scope_key],
        )
    }

    fn list_events(&self, q: &EventQuery) -> Result<Page<Event>, StoreError> {
        let empty = Page {
            items: vec![],
            has_more: false,
        };
        let mut upper = i64::MAX;
        if let Some(id) = &q.starting_after {
            let Some(e) = self.event(id)? else {
                return Ok(empty);
            };
            if e.merchant_id != q.merchant_id || e.livemode != q.livemode {
                return Ok(empty);
            }
            upper = seq_of(e.seq);
        }
        let sc = scope(&q.merchant_id, q.livemode);
        self.newest_first("events", "event", &sc, upper, q.limit, |e: &Event| {
            q.kind.is_none_or(|k| e.kind == k)
        })
    }

    fn event(&self, id: &str) -> Result<Option<Event>, StoreError> {
        self.body("event", "SELECT body FROM events WHERE id = $1", &[&id])
    }

    fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut out: Vec<Event> = self.bodies(
            "event",
            "SELECT body FROM events ORDER BY id DESC LIMIT $1",
            &[&count(limit)],
        )?;
        out.reverse();
        Ok(out)
    }

    fn event_deliveries(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        self.bodies(
            "delivery",
            "SELECT body FROM deliveries WHERE event_id = $1 ORDER BY id",
            &[&event_id],
        )
    }

    /// Claims what it returns: each due delivery goes to one node at a time (`SKIP LOCKED`
    /// passes over rows another node is claiming), for `DELIVERY_CLAIM_MS` or until its attempt
    /// is recorded.
    fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let until = now_ms.saturating_add(DELIVERY_CLAIM_MS);
        self.read(|c| {
            let rows = c
                .query(
                    "WITH ranked AS ( \
                        SELECT id, next_attempt_ms, \
                               row_number() OVER (PARTITION BY lane ORDER BY next_attempt_ms, id) AS n \
                        FROM deliveries \
                        WHERE next_attempt_ms <= $1 \
                          AND (claimed_until_ms IS NULL OR claimed_until_ms <= $1)), \
                     picked AS ( \
                        SELECT d.id FROM deliveries d \
                        WHERE d.id IN (SELECT id FROM ranked WHERE n <= $2) \
                          AND d.next_attempt_ms <= $1 \
                          AND (d.claimed_until_ms IS NULL OR d.claimed_until_ms <= $1) \
                        FOR UPDATE SKIP LOCKED) \
                     UPDATE deliveries SET claimed_until_ms = $3 \
                     WHERE id IN (SELECT id FROM picked) \
                     RETURNING next_attempt_ms, id, body",
                    &[&now_ms, &count(limit), &until],
                )
                .map_err(storage)?;
            let mut out: Vec<(i64, String, Delivery)> = rows
                .iter()
                .map(|r| Ok((r.get(0), r.get(1), decode("delivery", r.get(2))?)))
                .collect::<Result<_, StoreError>>()?;
            out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            Ok(out.into_iter().map(|(_, _, d)| d).collect())
        })
    }

    fn next_delivery_ms(&self) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            Ok(c.query_one(
                "SELECT min(GREATEST(next_attempt_ms, COALESCE(claimed_until_ms, 0))) \
                 FROM deliveries WHERE next_attempt_ms IS NOT NULL",
                &[],
            )
            .map_err(storage)?
            .get(0))
        })
    }

    fn outbox_depth(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM deliveries WHERE next_attempt_ms IS NOT NULL",
                    &[],
                )
                .map_err(storage)?
                .get(0);
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn endpoints(
        &self,
        merchant_id: &str,
        livemode: bool,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let sc = scope(merchant_id, livemode);
        self.bodies(
            "webhook endpoint",
            "SELECT body FROM endpoints WHERE scope = $1 ORDER BY id DESC",
            &[&sc],
        )
    }

    fn endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.body(
            "webhook endpoint",
            "SELECT body FROM endpoints WHERE id = $1",
            &[&id],
        )
    }

    fn merchant_secrets(
        &self,
        merchant_id: &str,
        livemode: bool,
    ) -> Result<Vec<SigningSecret>, StoreError> {
        let key = super::redb_tx::secret_key(merchant_id, livemode);
        Ok(self
            .body(
                "merchant secrets",
                "SELECT body FROM merchant_secrets WHERE key = $1",
                &[&key],
            )?
            .unwrap_or_default())
    }

    fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_signal.clone()
    }

    fn session_changes(&self) -> broadcast::Receiver<Arc<str>> {
        self.session_changes.subscribe()
    }

    fn credits(&self, limit: usize) -> Result<Vec<Credit>, StoreError> {
        self.bodies(
            "credit",
            "SELECT body FROM credits ORDER BY id LIMIT $1",
            &[&count(limit)],
        )
    }

    fn list_credits(&self, q: &CreditQuery) -> Result<Option<Page<Credit>>, StoreError> {
        let ignored = q.status.as_deref() == Some("ignored");
        let ours = |c: &Credit| {
            q.merchant_id
                .as_ref()
                .is_none_or(|m| c.merchant_id.as_ref() == Some(m) && c.livemode == q.livemode)
        };
        let one = if ignored {
            "SELECT body FROM ignored WHERE id = $1"
        } else {
            "SELECT body FROM credits WHERE id = $1"
        };
        if let Some(after) = &q.starting_after {
            let known = self
                .body::<Credit>("credit", one, &[after])?
                .is_some_and(|c| ours(&c));
            if !known {
                return Ok(None);
            }
        }
        let mut upper = q
            .starting_after
            .clone()
            .unwrap_or_else(|| "\u{10FFFF}".into());
        let sc = q.merchant_id.as_ref().map(|m| scope(m, q.livemode));
        let sql = match (ignored, sc.is_some()) {
            (true, true) => {
                "SELECT id, body FROM ignored WHERE scope = $1 AND id < $2 ORDER BY id DESC LIMIT 256"
            }
            (false, true) => {
                "SELECT id, body FROM credits WHERE scope = $1 AND id < $2 ORDER BY id DESC LIMIT 256"
            }
            (true, false) => {
                "SELECT id, body FROM ignored WHERE $1::text IS NULL AND id < $2 ORDER BY id DESC LIMIT 256"
            }
            (false, false) => {
                "SELECT id, body FROM credits WHERE $1::text IS NULL AND id < $2 ORDER BY id DESC LIMIT 256"
            }
        };
        let mut items = Vec::new();
        let mut has_more = false;
        'pages: loop {
            let page: Vec<(String, Credit)> = self.read(|c| {
                c.query(sql, &[&sc, &upper])
                    .map_err(storage)?
                    .iter()
                    .map(|r| Ok((r.get(0), decode("credit", r.get(1))?)))
                    .collect()
            })?;
            let Some((last, _)) = page.last() else { break };
            upper = last.clone();
            for (_, c) in page {
                if q.status.as_ref().is_some_and(|s| *s != c.status) {
                    continue;
                }
                if items.len() == q.limit {
                    has_more = true;
                    break 'pages;
                }
                items.push(c);
            }
        }
        Ok(Some(Page { items, has_more }))
    }

    fn next_sweep_ms(&self, idempotency_ttl_ms: i64) -> Result<Option<i64>, StoreError> {
        let retention = self.retention;
        self.read(|c| {
            let r = c
                .query_one(
                    "SELECT (SELECT min(at) FROM expiry), \
                            (SELECT min(held_until_ms) FROM reservations), \
                            (SELECT min(created_at_ms) FROM idempotency), \
                            (SELECT min(id) FROM ignored), \
                            (SELECT min(id) FROM events WHERE id > \
                                COALESCE((SELECT value FROM retention WHERE name = 'events'), ''))",
                    &[],
                )
                .map_err(storage)?;
            let after = |ms: i64, id: Option<String>| {
                id.filter(|_| ms > 0)
                    .and_then(|id| crate::domain::ids::created_ms(&id))
                    .map(|t| t.saturating_add(ms))
            };
            let idem: Option<i64> = r.get(2);
            let times = [
                after(retention.ignored_alerts_ms, r.get(3)),
                after(retention.events_ms, r.get(4)),
                r.get(0),
                r.get(1),
                idem.map(|t| t.saturating_add(idempotency_ttl_ms)),
            ];
            Ok(times.into_iter().flatten().min())
        })
    }

    fn payment_link(&self, id: &str) -> Result<Option<PaymentLink>, StoreError> {
        self.body(
            "payment link",
            "SELECT body FROM payment_links WHERE id = $1",
            &[&id],
        )
    }

    fn list_payment_links(
        &self,
        merchant_id: &str,
        livemode: bool,
        limit: usize,
        starting_after: Option<&str>,
    ) -> Result<Page<PaymentLink>, StoreError> {
        let sc = scope(merchant_id, livemode);
        let before: i64 = match starting_after {
            Some(id) => match self.payment_link(id)? {
                Some(l) => i64::try_from(l.seq).unwrap_or(i64::MAX),
                None => {
                    return Ok(Page {
                        items: vec![],
                        has_more: false,
                    });
                }
            },
            None => i64::MAX,
        };
        let take = i64::try_from(limit).unwrap_or(100) + 1;
        let mut items: Vec<PaymentLink> = self.bodies(
            "payment link",
            "SELECT body FROM payment_links WHERE scope = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
            &[&sc, &before, &take],
        )?;
        let has_more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, has_more })
    }

    fn refund(&self, id: &str) -> Result<Option<Refund>, StoreError> {
        self.body("refund", "SELECT body FROM refunds WHERE id = $1", &[&id])
    }

    fn list_refunds(&self, q: &RefundQuery) -> Result<Page<Refund>, StoreError> {
        let keep = |r: &Refund| {
            q.merchant_id
                .as_ref()
                .is_none_or(|m| *m == r.merchant_id && q.livemode == r.livemode)
                && q.session_id.as_ref().is_none_or(|s| *s == r.session_id)
                && q.status.is_none_or(|st| st == r.status)
        };
        let after_seq = match &q.starting_after {
            Some(id) => match self.refund(id)? {
                Some(r) => Some(r.seq),
                None => {
                    return Ok(Page {
                        items: vec![],
                        has_more: false,
                    });
                }
            },
            None => None,
        };
        let all: Vec<Refund> = if let Some(session) = &q.session_id {
            self.bodies(
                "refund",
                "SELECT body FROM refunds WHERE session_id = $1 ORDER BY seq DESC",
                &[session],
            )?
        } else if let Some(m) = &q.merchant_id {
            let sc = scope(m, q.livemode);
            self.bodies(
                "refund",
                "SELECT body FROM refunds WHERE scope = $1 ORDER BY seq DESC",
                &[&sc],
            )?
        } else {
            self.bodies("refund", "SELECT body FROM refunds ORDER BY id DESC", &[])?
        };
        let mut items = Vec::new();
        let mut has_more = false;
        for r in all {
            if !keep(&r) || after_seq.is_some_and(|s| r.seq >= s) {
                continue;
            }
            if items.len() == q.limit {
                has_more = true;
                break;
            }
            items.push(r);
        }
        Ok(Page { items, has_more })
    }

    fn ledger(
        &self,
        merchant_id: &str,
        livemode: bool,
    ) -> Result<Vec<(String, LedgerEntry)>, StoreError> {
        let sc = scope(merchant_id, livemode);
        self.read(|c| {
            c.query(
                "SELECT method, body FROM ledger WHERE scope = $1 ORDER BY method",
                &[&sc],
            )
            .map_err(storage)?
            .iter()
            .map(|r| Ok((r.get(0), decode("ledger entry", r.get(1))?)))
            .collect()
        })
    }

    fn cursors(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|c| {
            Ok(c.query(
                "SELECT key, value FROM cursors WHERE starts_with(key, $1) ORDER BY key",
                &[&prefix],
            )
            .map_err(storage)?
            .iter()
            .map(|r| (r.get(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
            .collect())
        })
    }

    fn credit(&self, id: &str) -> Result<Option<Credit>, StoreError> {
        self.body("credit", "SELECT body FROM credits WHERE id = $1", &[&id])
    }

    fn claim_queue(&self, limit: usize) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.read(|c| {
            Ok(c.query(
                "SELECT credit_id, session_id, at FROM claim_queue \
                 ORDER BY credit_id, session_id LIMIT $1",
                &[&count(limit)],
            )
            .map_err(storage)?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn opts(url: &str) -> PgOptions {
        PgOptions {
            url: url.to_owned(),
            pool_size: 4,
            statement_timeout_ms: 10_000,
        }
    }

    fn node(url: &str) -> PgStore {
        PgStore::open(
            &opts(url),
            60_000,
            super::super::Retention::default(),
            10_000,
        )
        .unwrap()
    }

    #[test]
    fn a_database_newer_than_the_binary_is_refused() {
        let url = test_cluster::fresh_database();
        drop(node(&url));
        let mut c = postgres::Client::connect(&url, NoTls).unwrap();
        c.execute(
            "INSERT INTO paywatch_schema (version) VALUES ($1)",
            &[&(schema::VERSION + 1)],
        )
        .unwrap();
        let err = PgStore::open(&opts(&url), 60_000, Default::default(), 10)
            .err()
            .expect("a newer schema must be refused");
        assert!(err.to_string().contains("newer than this binary"), "{err}");
        // And nothing was changed: the version stays the newer one.
        assert_eq!(schema::version(&mut c).unwrap(), Some(schema::VERSION + 1));
    }

    #[test]
    fn migrations_are_applied_once_and_recorded() {
        let url = test_cluster::fresh_database();
        drop(node(&url));
        drop(node(&url));
        let mut c = postgres::Client::connect(&url, NoTls).unwrap();
        let n: i64 = c
            .query_one("SELECT count(*) FROM paywatch_schema", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, i64::from(schema::VERSION));
    }

    /// Two stores on one database are two nodes: each has its own writer, and their batches
    /// race for the same pairs. Every session must get a pair of its own.
    #[test]
    fn two_nodes_racing_creates_never_share_a_pair() {
        use crate::store::conformance::session;
        let url = test_cluster::fresh_database();
        let (a, b) = (node(&url), node(&url));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let op = || WriteOp::CreateSession {
            session: Box::new(session(7_000)),
            methods: vec![crate::store::conformance::method(40)],
        };
        let mut pending = Vec::new();
        for i in 0..60 {
            let n = if i % 2 == 0 { &a } else { &b };
            pending.push(n.submit(op(), None));
        }
        let results = rt.block_on(async {
            let mut out = Vec::new();
            for rx in pending {
                out.push(rx.await.unwrap().unwrap());
            }
            out
        });
        let mut amounts: Vec<u128> = results
            .iter()
            .filter_map(|r| match r {
                Ok(Outcome::Session(s)) => Some(s.payment_options[0].payable_base),
                Err(OpError::NoSlot(_)) => None,
                other => panic!("{other:?}"),
            })
            .collect();
        let won = amounts.len();
        amounts.sort();
        amounts.dedup();
        assert_eq!(amounts.len(), won, "two sessions share a pair");
        assert_eq!(won, 40, "a window of 40 gives exactly 40 sessions");
    }

    /// A session changed through one node is announced on the other's `session_changes`
    /// (LISTEN/NOTIFY), which is what wakes a status stream served there.
    #[test]
    fn a_change_on_one_node_is_announced_on_another() {
        use crate::store::conformance::session;
        let url = test_cluster::fresh_database();
        let (a, b) = (node(&url), node(&url));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut heard = b.session_changes();
        let created = rt
            .block_on(a.submit(
                WriteOp::CreateSession {
                    session: Box::new(session(8_000)),
                    methods: vec![crate::store::conformance::method(3)],
                },
                None,
            ))
            .unwrap()
            .unwrap()
            .unwrap();
        let Outcome::Session(s) = created else {
            panic!("{created:?}")
        };
        let cancel = WriteOp::EndSession {
            merchant_id: s.merchant_id.clone(),
            livemode: s.livemode,
            id: s.id.clone(),
            expire: false,
        };
        rt.block_on(a.submit(cancel, None))
            .unwrap()
            .unwrap()
            .unwrap();
        let got = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), heard.recv()).await });
        let id = got.expect("node b heard nothing within 10 s").unwrap();
        assert_eq!(&*id, s.id.as_str());
        assert_ne!(b.session(&s.id).unwrap().unwrap().status, s.status);
    }

    /// An immediate PostgreSQL restart (as a crash): writes meanwhile fail with a storage
    /// error and nothing is acknowledged; afterwards the writer, the pool and the listener
    /// reconnect on their own and what was acknowledged before is all there.
    #[test]
    fn a_postgres_restart_fails_writes_meanwhile_and_the_node_reconnects() {
        use crate::store::conformance::session;
        let cluster = test_cluster::own_cluster();
        cluster.psql("postgres", "CREATE DATABASE restart");
        let store = node(&cluster.url("restart"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let create = |amount| WriteOp::CreateSession {
            session: Box::new(session(amount)),
            methods: vec![crate::store::conformance::method(5)],
        };
        let before = match rt.block_on(store.submit(create(9_100), None)).unwrap() {
            Ok(Ok(Outcome::Session(s))) => s,
            other => panic!("{other:?}"),
        };
        cluster.stop_immediate();
        let during = rt.block_on(store.submit(create(9_200), None)).unwrap();
        assert!(
            matches!(during, Err(StoreError::Storage(_))),
            "a write with the server down must fail, not succeed: {during:?}"
        );
        assert!(
            store.session(&before.id).is_err(),
            "a read must fail, not answer stale"
        );
        cluster.start_again();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let after = loop {
            match rt.block_on(store.submit(create(9_300), None)).unwrap() {
                Ok(Ok(Outcome::Session(s))) => break s,
                Err(StoreError::Storage(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => panic!("the node did not recover: {other:?}"),
            }
        };
        assert_eq!(store.session(&before.id).unwrap().unwrap().id, before.id);
        assert!(store.session(&after.id).unwrap().is_some());
        assert!(after.seq > before.seq, "the sequence went backwards");
    }
}
