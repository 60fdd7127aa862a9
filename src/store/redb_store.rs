//! The redb backend: one database file, one writer thread that group-commits, MVCC readers.

use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::redb_tx::{RedbTx, Tables, WriterState};
use super::reservations::load_index;
use super::tables::*;
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

type Reply = oneshot::Sender<Result<Result<Outcome, OpError>, StoreError>>;

struct Job {
    op: WriteOp,
    idempotency: Option<IdempotencyWrite>,
    reply: Reply,
}

/// Most operations one transaction takes; bounds the latency of a batch.
const MAX_BATCH: usize = 4096;

/// Writes that may wait for the writer unless configured otherwise (`storage.writer_queue`).
pub const DEFAULT_QUEUE: usize = 10_000;

/// The open database, shared by readers and the writer. redb fails every operation on a handle
/// that once saw an I/O error (a full disk), so the writer replaces the handle by reopening the
/// file once writing works again; everyone else asks for the current one.
#[derive(Clone)]
pub struct DbHandle(std::sync::Arc<std::sync::RwLock<Option<std::sync::Arc<Database>>>>);

impl DbHandle {
    /// The database now (`None` only while the writer is reopening it).
    pub fn get(&self) -> Option<std::sync::Arc<Database>> {
        self.0.read().ok().and_then(|g| g.clone())
    }
}

/// How often the writer retries reopening the database after a storage error.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Bytes the writer must be able to write and sync beside the database before it reopens it.
const SPACE_PROBE: usize = 256 * 1024;

/// Session ids the announcement channel holds for a slow listener before it lags (a lagging
/// stream re-reads its session, so nothing is missed, only a read spent).
const CHANGES_BUFFER: usize = 4096;

/// The redb-backed store.
pub struct RedbStore {
    db: DbHandle,
    outbox_signal: std::sync::Arc<tokio::sync::Notify>,
    session_changes: broadcast::Sender<std::sync::Arc<str>>,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    retention: super::Retention,
}

fn storage<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Storage(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

impl RedbStore {
    /// Opens (or creates) the database and starts the writer thread, with the default retention
    /// and queue bound.
    pub fn open(path: &Path, grace_ms: i64) -> Result<RedbStore, StoreError> {
        RedbStore::open_with(path, grace_ms, super::Retention::default(), DEFAULT_QUEUE)
    }

    /// As `open`, with the configured retention and at most `queue` writes waiting for the
    /// writer; past that a write is refused with `StoreError::Overloaded` at once instead of
    /// queueing without bound.
    pub fn open_with(
        path: &Path,
        grace_ms: i64,
        retention: super::Retention,
        queue: usize,
    ) -> Result<RedbStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Storage(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let db = open_db(path)?;
        let db = std::sync::Arc::new(db);
        let seq = init_tables(&db)?;
        let res = load_index(&db).map_err(StoreError::Storage)?;
        let mut state = WriterState {
            seq,
            res,
            queued_deliveries: false,
            changed_sessions: Vec::new(),
        };
        let cfg = crate::engine::EngineConfig {
            grace_ms,
            retention,
        };
        let (tx, mut rx) = mpsc::channel::<Job>(queue.max(1));
        let handle = DbHandle(std::sync::Arc::new(std::sync::RwLock::new(Some(db))));
        let whandle = handle.clone();
        let wpath = path.to_path_buf();
        let outbox_signal = std::sync::Arc::new(tokio::sync::Notify::new());
        let signal = outbox_signal.clone();
        let (session_changes, _) = broadcast::channel(CHANGES_BUFFER);
        let changes = session_changes.clone();
        let writer = std::thread::Builder::new()
            .name("paywatch-writer".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(256);
                // Why writes fail, from a failed batch until the database is reopened.
                let mut broken: Option<String> = None;
                let mut last_try: Option<std::time::Instant> = None;
                loop {
                    let first = if broken.is_some() {
                        // Retry on a timer too, so reads recover even when no write comes.
                        if last_try.is_none_or(|t| t.elapsed() >= REOPEN_EVERY) {
                            last_try = Some(std::time::Instant::now());
                            match reopen(&whandle, &wpath, &mut state) {
                                Ok(()) => {
                                    tracing::warn!("storage works again; the database was reopened and writes resume");
                                    broken = None;
                                }
                                Err(e) => broken = Some(e),
                            }
                        }
                        match rx.try_recv() {
                            Ok(j) => j,
                            Err(mpsc::error::TryRecvError::Empty) => {
                                std::thread::sleep(std::time::Duration::from_millis(50));
                                continue;
                            }
                            Err(mpsc::error::TryRecvError::Disconnected) => break,
                        }
                    } else {
                        match rx.blocking_recv() {
                            Some(j) => j,
                            None => break,
                        }
                    };
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    let db = match (&broken, whandle.get()) {
                        (None, Some(db)) => db,
                        (why, _) => {
                            let why = why.clone().unwrap_or_else(|| "the database is not open".into());
                            let e = StoreError::Storage(format!(
                                "{why}; nothing was written, writes resume once storage works again"
                            ));
                            for job in batch.drain(..) {
                                let _ = job.reply.send(Err(e.clone()));
                            }
                            continue;
                        }
                    };
                    if let Err(e) = run_batch(&db, &cfg, &mut state, &mut batch, &changes) {
                        broken = Some(e.to_string());
                        last_try = None;
                    }
                    drop(db);
                    if std::mem::take(&mut state.queued_deliveries) {
                        signal.notify_one();
                    }
                }
            })
            .map_err(storage)?;
        Ok(RedbStore {
            db: handle,
            outbox_signal,
            session_changes,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            retention,
        })
    }

    /// Stops taking writes, lets the writer commit what is queued, and waits for it.
    pub fn close(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut g| g.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db
            .get()
            .ok_or_else(|| {
                StoreError::Storage("the database is being reopened after a storage error".into())
            })?
            .begin_read()
            .map_err(storage)
    }

    /// The database, for online backups: ask it for the current handle each time.
    pub fn database(&self) -> DbHandle {
        self.db.clone()
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn open_db(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        // A modest cache keeps idle memory small; the OS page cache does the rest.
        .set_cache_size(32 * 1024 * 1024)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked,
            other => StoreError::Storage(format!("cannot open {}: {other}", path.display())),
        })
}

/// Whether `SPACE_PROBE` bytes can be written and synced beside the database.
fn space_to_write(path: &Path) -> Result<(), String> {
    use std::io::Write as _;
    let probe = path.with_extension("space-probe");
    let r = (|| {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(&vec![0u8; SPACE_PROBE])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    r.map_err(|e| format!("cannot write beside {}: {e}", path.display()))
}

/// After a storage error: once writing works again, closes the failed handle, opens the file
/// afresh (redb recovers it to the last commit) and rebuilds what the writer keeps in memory.
/// Until then the old handle keeps serving reads.
fn reopen(handle: &DbHandle, path: &Path, w: &mut WriterState) -> Result<(), String> {
    space_to_write(path)?;
    let old = handle.0.write().ok().and_then(|mut g| g.take());
    if let Some(mut old) = old {
        // Readers hold the handle for a moment each; wait for them to let go.
        let mut tries = 0;
        loop {
            match std::sync::Arc::try_unwrap(old) {
                Ok(db) => {
                    drop(db);
                    break;
                }
                Err(still) if tries < 200 => {
                    old = still;
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(still) => {
                    if let Ok(mut g) = handle.0.write() {
                        *g = Some(still);
                    }
                    return Err("the database is busy; will retry".into());
                }
            }
        }
    }
    // A read transaction that outlived the handle may hold the file for a moment longer.
    let mut tries = 0;
    let db = loop {
        match open_db(path) {
            Ok(db) => break db,
            Err(StoreError::Locked) if tries < 40 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let seq = init_tables(&db).map_err(|e| e.to_string())?;
    let res = load_index(&db)?;
    w.seq = seq;
    w.res = res;
    if let Ok(mut g) = handle.0.write() {
        *g = Some(std::sync::Arc::new(db));
    }
    Ok(())
}

/// Creates every table so readers never meet a missing one; returns the stored sequence.
fn init_tables(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_write().map_err(storage)?;
    let seq = {
        let mut meta = txn.open_table(META).map_err(storage)?;
        txn.open_table(KEYS).map_err(storage)?;
        txn.open_table(KEY_IDS).map_err(storage)?;
        txn.open_table(SESSIONS).map_err(storage)?;
        txn.open_table(SESSION_INDEX).map_err(storage)?;
        txn.open_table(EXPIRY).map_err(storage)?;
        txn.open_table(PROCESSING).map_err(storage)?;
        txn.open_table(RELEASES).map_err(storage)?;
        txn.open_table(PAYMENTS).map_err(storage)?;
        txn.open_table(REFS).map_err(storage)?;
        txn.open_table(CREDITS).map_err(storage)?;
        txn.open_table(IDEMPOTENCY).map_err(storage)?;
        txn.open_table(IDEM_EXPIRY).map_err(storage)?;
        txn.open_table(EVENTS).map_err(storage)?;
        txn.open_table(EVENT_INDEX).map_err(storage)?;
        txn.open_table(OUTBOX).map_err(storage)?;
        txn.open_table(DELIVERIES).map_err(storage)?;
        txn.open_table(EVENT_DELIVERIES).map_err(storage)?;
        txn.open_table(ENDPOINTS).map_err(storage)?;
        txn.open_table(MERCHANT_SECRETS).map_err(storage)?;
        super::migrate::backfill(&txn).map_err(StoreError::Storage)?;
        txn.open_table(CLAIMS).map_err(storage)?;
        txn.open_table(CLAIM_REFS).map_err(storage)?;
        txn.open_table(CLAIM_QUEUE).map_err(storage)?;
        txn.open_table(CHAIN_PENDING).map_err(storage)?;
        txn.open_table(XPUB_ADDRESSES).map_err(storage)?;
        txn.open_table(REFUNDS).map_err(storage)?;
        txn.open_table(REFUND_INDEX).map_err(storage)?;
        txn.open_table(PAYMENT_LINKS).map_err(storage)?;
        txn.open_table(PAYMENT_LINK_INDEX).map_err(storage)?;
        txn.open_table(SESSION_REFUNDS).map_err(storage)?;
        txn.open_table(LEDGER).map_err(storage)?;
        txn.open_table(FREED).map_err(storage)?;
        txn.open_table(CREDIT_INDEX).map_err(storage)?;
        txn.open_table(IGNORED).map_err(storage)?;
        txn.open_table(IGNORED_INDEX).map_err(storage)?;
        txn.open_table(RETENTION).map_err(storage)?;
        txn.open_table(RECORDS).map_err(storage)?;
        let schema = meta.get("schema").map_err(storage)?.map(|g| g.value());
        match schema {
            None => {
                meta.insert("schema", 1).map_err(storage)?;
            }
            Some(1) => {}
            Some(v) => {
                return Err(StoreError::Storage(format!(
                    "database schema {v} is newer than this binary understands (1); upgrade paywatch"
                )));
            }
        }
        meta.get("seq").map_err(storage)?.map_or(0, |g| g.value())
    };
    super::migrate::rebuild_ledger(&txn).map_err(storage)?;
    super::migrate::migrate(&txn).map_err(storage)?;
    txn.commit().map_err(storage)?;
    Ok(seq)
}

/// Executes a batch in one transaction, each operation through the engine, and answers every
/// job after the commit; only then are the operations' effects counted.
fn run_batch(
    db: &Database,
    cfg: &crate::engine::EngineConfig,
    w: &mut WriterState,
    batch: &mut Vec<Job>,
    changes: &broadcast::Sender<std::sync::Arc<str>>,
) -> Result<(), StoreError> {
    let start_seq = w.seq;
    let mut effects = Vec::new();
    let result = (|| -> Result<Vec<Result<Outcome, OpError>>, StoreError> {
        let txn = db.begin_write().map_err(storage)?;
        let mut results = Vec::with_capacity(batch.len());
        {
            let mut t = Tables::open(&txn).map_err(storage)?;
            let mut tx = RedbTx { t: &mut t, w };
            for job in batch.iter_mut() {
                let op = std::mem::replace(
                    &mut job.op,
                    WriteOp::Sweep {
                        now_ms: 0,
                        idempotency_ttl_ms: 0,
                        limit: 0,
                    },
                );
                let mut cx = crate::engine::Ctx::new(cfg, crate::engine::now_ms());
                let r = crate::engine::apply(&mut tx, &mut cx, op, job.idempotency.take())
                    .map_err(storage)?;
                effects.append(&mut cx.effects);
                results.push(r);
            }
            let seq = tx.w.seq;
            t.meta.insert("seq", seq).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(results)
    })();
    match result {
        Ok(results) => {
            // Committed: count what it did before anyone hears back, so a client that reads the
            // metrics after its answer sees its own payment.
            for e in &effects {
                e.record();
            }
            // Announced before the replies too, so a stream hears of a payment no later than
            // the caller that wrote it. No listener is not an error.
            for id in w.changed_sessions.drain(..) {
                let _ = changes.send(id);
            }
            for (job, r) in batch.drain(..).zip(results) {
                let _ = job.reply.send(Ok(r));
            }
            Ok(())
        }
        Err(e) => {
            w.seq = start_seq;
            w.changed_sessions.clear();
            // The batch may have changed the in-memory reservations before it failed. The caller
            // writes nothing more until `reopen` has rebuilt them from the reopened file, so a
            // stale index can never hand one pair to two sessions.
            tracing::error!(error = %e, jobs = batch.len(), "write batch failed; nothing in it was acknowledged; writes pause until storage works again");
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(e.clone()));
            }
            Err(e)
        }
    }
}

impl Store for RedbStore {
    fn payment_link(&self, id: &str) -> Result<Option<PaymentLink>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(PAYMENT_LINKS).map_err(storage)?;
        match t.get(id).map_err(storage)? {
            Some(v) => decode("payment link", v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn list_payment_links(
        &self,
        merchant_id: &str,
        livemode: bool,
        limit: usize,
        starting_after: Option<&str>,
    ) -> Result<Page<PaymentLink>, StoreError> {
        let txn = self.read()?;
        let links = txn.open_table(PAYMENT_LINKS).map_err(storage)?;
        let idx = txn.open_table(PAYMENT_LINK_INDEX).map_err(storage)?;
        let sc = scope(merchant_id, livemode);
        let before = match starting_after {
            Some(id) => match links.get(id).map_err(storage)? {
                Some(v) => decode::<PaymentLink>("payment link", v.value())?.seq,
                None => {
                    return Ok(Page {
                        items: vec![],
                        has_more: false,
                    });
                }
            },
            None => u64::MAX,
        };
        let mut items = Vec::new();
        let mut has_more = false;
        for e in idx
            .range((sc.as_str(), 0u64)..(sc.as_str(), before))
            .map_err(storage)?
            .rev()
        {
            let (_, id) = e.map_err(storage)?;
            if items.len() == limit {
                has_more = true;
                break;
            }
            if let Some(v) = links.get(id.value()).map_err(storage)? {
                items.push(decode("payment link", v.value())?);
            }
        }
        Ok(Page { items, has_more })
    }

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
        let guard = self.tx.lock().ok();
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

    fn cursor(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(META).map_err(storage)?;
        Ok(t.get(format!("cursor:{key}").as_str())
            .map_err(storage)?
            .map(|v| v.value()))
    }

    fn chain_pending(&self, prefix: &str) -> Result<Vec<(String, String, u64)>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(CHAIN_PENDING).map_err(storage)?;
        let mut out = Vec::new();
        for row in t.range(prefix..).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            let (payment, block) = v.value().split_once('@').unwrap_or((v.value(), "0"));
            let reference = k.value().split_once('|').map_or(k.value(), |(_, r)| r);
            out.push((
                reference.to_owned(),
                payment.to_owned(),
                block.parse().unwrap_or(0),
            ));
        }
        Ok(out)
    }

    fn xpub_addresses(
        &self,
        xpub: &str,
        from_index: u32,
    ) -> Result<Vec<(u32, String)>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(XPUB_ADDRESSES).map_err(storage)?;
        let mut out = Vec::new();
        for row in t
            .range((xpub, from_index)..=(xpub, u32::MAX))
            .map_err(storage)?
        {
            let (k, v) = row.map_err(storage)?;
            out.push((k.value().1, v.value().to_owned()));
        }
        Ok(out)
    }

    fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        crate::metrics::METRICS.session_read();
        let txn = self.read()?;
        let t = txn.open_table(SESSIONS).map_err(storage)?;
        match t.get(id).map_err(storage)? {
            Some(v) => decode("session", v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn list_sessions(&self, q: &SessionQuery) -> Result<Page<Session>, StoreError> {
        let txn = self.read()?;
        let sessions = txn.open_table(SESSIONS).map_err(storage)?;
        let index = txn.open_table(SESSION_INDEX).map_err(storage)?;
        let sc = scope(&q.merchant_id, q.livemode);
        let upper = match &q.starting_after {
            Some(id) => {
                let s: Session = match sessions.get(id.as_str()).map_err(storage)? {
                    Some(v) => decode("session", v.value())?,
                    None => {
                        return Ok(Page {
                            items: vec![],
                            has_more: false,
                        });
                    }
                };
                if s.merchant_id != q.merchant_id || s.livemode != q.livemode {
                    return Ok(Page {
                        items: vec![],
                        has_more: false,
                    });
                }
                s.seq
            }
            None => u64::MAX,
        };
        let mut items = Vec::new();
        let mut has_more = false;
        let range = index
            .range((sc.as_str(), 0u64)..(sc.as_str(), upper))
            .map_err(storage)?;
        for entry in range.rev() {
            let (_, id) = entry.map_err(storage)?;
            let Some(v) = sessions.get(id.value()).map_err(storage)? else {
                continue;
            };
            let s: Session = decode("session", v.value())?;
            if q.created_lte_ms.is_some_and(|t| s.created_at_ms > t) {
                continue;
            }
            if q.created_gte_ms.is_some_and(|t| s.created_at_ms < t) {
                // Not `break`: creation stamps and storage order can differ by a few ms.
                continue;
            }
            if q.status.is_some_and(|st| s.status != st)
                || q.payment_method
                    .as_ref()
                    .is_some_and(|m| !s.payment_options.iter().any(|o| &o.method == m))
                || q.client_reference_id
                    .as_ref()
                    .is_some_and(|c| s.client_reference_id.as_ref() != Some(c))
            {
                continue;
            }
            if items.len() == q.limit {
                has_more = true;
                break;
            }
            items.push(s);
        }
        Ok(Page { items, has_more })
    }

    fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(KEYS).map_err(storage)?;
        match t.get(hash).map_err(storage)? {
            Some(v) => decode("api key", v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn list_keys(&self, merchant_id: Option<&str>) -> Result<Vec<ApiKey>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(KEYS).map_err(storage)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(storage)? {
            let (_, v) = entry.map_err(storage)?;
            let k: ApiKey = decode("api key", v.value())?;
            if merchant_id.is_none_or(|m| m == k.merchant_id) {
                out.push(k);
            }
        }
        out.sort_by_key(|k| std::cmp::Reverse(k.created_at_ms));
        Ok(out)
    }

    fn idempotency(&self, scope_key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(IDEMPOTENCY).map_err(storage)?;
        match t.get(scope_key).map_err(storage)? {
            Some(v) => decode("idempotency record", v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn list_events(&self, q: &EventQuery) -> Result<Page<Event>, StoreError> {
        let txn = self.read()?;
        let events = txn.open_table(EVENTS).map_err(storage)?;
        let index = txn.open_table(EVENT_INDEX).map_err(storage)?;
        let sc = scope(&q.merchant_id, q.livemode);
        let upper = match &q.starting_after {
            Some(id) => match events.get(id.as_str()).map_err(storage)? {
                Some(v) => {
                    let e: Event = decode("event", v.value())?;
                    if e.merchant_id != q.merchant_id || e.livemode != q.livemode {
                        return Ok(Page {
                            items: vec![],
                            has_more: false,
                        });
                    }
                    e.seq
                }
                None => {
                    return Ok(Page {
                        items: vec![],
                        has_more: false,
                    });
                }
            },
            None => u64::MAX,
        };
        let mut items = Vec::new();
        let mut has_more = false;
        for entry in index
            .range((sc.as_str(), 0u64)..(sc.as_str(), upper))
            .map_err(storage)?
            .rev()
        {
            let (_, id) = entry.map_err(storage)?;
            let Some(v) = events.get(id.value()).map_err(storage)? else {
                continue;
            };
            let e: Event = decode("event", v.value())?;
            if q.kind.is_some_and(|k| e.kind != k) {
                continue;
            }
            if items.len() == q.limit {
                has_more = true;
                break;
            }
            items.push(e);
        }
        Ok(Page { items, has_more })
    }

    fn event(&self, id: &str) -> Result<Option<Event>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(EVENTS).map_err(storage)?;
        match t.get(id).map_err(storage)? {
            Some(v) => decode("event", v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(EVENTS).map_err(storage)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(storage)?.rev().take(limit) {
            let (_, v) = entry.map_err(storage)?;
            out.push(decode("event", v.value())?);
        }
        out.reverse();
        Ok(out)
    }

    fn event_deliveries(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let txn = self.read()?;
        let idx = txn.open_table(EVENT_DELIVERIES).map_err(storage)?;
        let t = txn.open_table(DELIVERIES).map_err(storage)?;
        let mut out = Vec::new();
        for entry in idx
            .range((event_id, "")..=(event_id, "\u{10FFFF}"))
            .map_err(storage)?
        {
            let (k, _) = entry.map_err(storage)?;
            if let Some(v) = t.get(k.value().1).map_err(storage)? {
                out.push(decode("delivery", v.value())?);
            }
        }
        Ok(out)
    }

    fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let txn = self.read()?;
        let outbox = txn.open_table(OUTBOX).map_err(storage)?;
        let t = txn.open_table(DELIVERIES).map_err(storage)?;
        // Every lane first, so a backlog in one never hides the others; then the earliest
        // overall, which also covers entries queued before the lane index existed.
        let mut ids =
            super::lanes::due_by_lane(&txn, now_ms, limit).map_err(StoreError::Storage)?;
        for entry in outbox
            .range(..(now_ms.saturating_add(1), ""))
            .map_err(storage)?
            .take(limit)
        {
            let (k, _) = entry.map_err(storage)?;
            ids.push(k.value().1.to_owned());
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for id in ids {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(v) = t.get(id.as_str()).map_err(storage)? {
                out.push(decode("delivery", v.value())?);
            }
        }
        Ok(out)
    }

    fn outbox_depth(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(OUTBOX).map_err(storage)?;
        t.len().map_err(storage)
    }

    fn next_delivery_ms(&self) -> Result<Option<i64>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(OUTBOX).map_err(storage)?;
        Ok(t.first().map_err(storage)?.map(|(k, _)| k.value().0))
    }

    fn endpoints(
        &self,
        merchant_id: &str,
        livemode: bool,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(ENDPOINTS).map_err(storage)?;
        let idx = txn.open_table(ENDPOINT_INDEX).map_err(storage)?;
        let sc = super::scope(merchant_id, livemode);
        let mut out = Vec::new();
        for entry in idx
            .range((sc.as_str(), "")..=(sc.as_str(), "\u{10FFFF}"))
            .map_err(storage)?
            .rev()
        {
            let (k, _) = entry.map_err(storage)?;
            if let Some(v) = t.get(k.value().1).map_err(storage)? {
                out.push(decode("webhook endpoint", v.value())?);
            }
        }
        Ok(out)
    }

    fn endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(ENDPOINTS).map_err(storage)?;
        match t.get(id).map_err(storage)? {
            Some(v) => decode("webhook endpoint", v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn merchant_secrets(
        &self,
        merchant_id: &str,
        livemode: bool,
    ) -> Result<Vec<SigningSecret>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(MERCHANT_SECRETS).map_err(storage)?;
        let key = super::redb_tx::secret_key(merchant_id, livemode);
        match t.get(key.as_str()).map_err(storage)? {
            Some(v) => decode("merchant secrets", v.value()),
            None => Ok(vec![]),
        }
    }

    fn outbox_signal(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.outbox_signal.clone()
    }

    fn session_changes(&self) -> broadcast::Receiver<std::sync::Arc<str>> {
        self.session_changes.subscribe()
    }

    fn claim_queue(&self, limit: usize) -> Result<Vec<(String, String, i64)>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(CLAIM_QUEUE).map_err(storage)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(storage)?.take(limit) {
            let (k, v) = entry.map_err(storage)?;
            let (credit, session) = k.value();
            out.push((credit.to_owned(), session.to_owned(), v.value()));
        }
        Ok(out)
    }

    fn list_credits(&self, q: &CreditQuery) -> Result<Option<Page<Credit>>, StoreError> {
        let txn = self.read()?;
        let ignored = q.status.as_deref() == Some("ignored");
        let (data, index) = if ignored {
            (IGNORED, IGNORED_INDEX)
        } else {
            (CREDITS, CREDIT_INDEX)
        };
        let data = txn.open_table(data).map_err(storage)?;
        let index = txn.open_table(index).map_err(storage)?;
        let ours = |c: &Credit| {
            q.merchant_id
                .as_ref()
                .is_none_or(|m| c.merchant_id.as_ref() == Some(m) && c.livemode == q.livemode)
        };
        if let Some(after) = &q.starting_after {
            let known = match data.get(after.as_str()).map_err(storage)? {
                Some(v) => ours(&decode::<Credit>("credit", v.value())?),
                None => false,
            };
            if !known {
                return Ok(None);
            }
        }
        let upper = q
            .starting_after
            .clone()
            .unwrap_or_else(|| "\u{10FFFF}".into());
        let mut items = Vec::new();
        let mut has_more = false;
        let mut take = |c: Credit| -> bool {
            if q.status.as_ref().is_some_and(|s| *s != c.status) {
                return true;
            }
            if items.len() == q.limit {
                has_more = true;
                return false;
            }
            items.push(c);
            true
        };
        if let Some(m) = &q.merchant_id {
            let sc = scope(m, q.livemode);
            for e in index
                .range((sc.as_str(), "")..(sc.as_str(), upper.as_str()))
                .map_err(storage)?
                .rev()
            {
                let (k, _) = e.map_err(storage)?;
                if let Some(v) = data.get(k.value().1).map_err(storage)?
                    && !take(decode("credit", v.value())?)
                {
                    break;
                }
            }
        } else {
            // Every merchant (the operator): ids sort by creation time.
            for e in data.range(..upper.as_str()).map_err(storage)?.rev() {
                let (_, v) = e.map_err(storage)?;
                if !take(decode("credit", v.value())?) {
                    break;
                }
            }
        }
        Ok(Some(Page { items, has_more }))
    }

    fn credits(&self, limit: usize) -> Result<Vec<Credit>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(CREDITS).map_err(storage)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(storage)?.take(limit) {
            let (_, v) = entry.map_err(storage)?;
            out.push(decode("credit", v.value())?);
        }
        Ok(out)
    }

    fn next_sweep_ms(&self, idempotency_ttl_ms: i64) -> Result<Option<i64>, StoreError> {
        let txn = self.read()?;
        let expiry = txn.open_table(EXPIRY).map_err(storage)?;
        let releases = txn.open_table(RELEASES).map_err(storage)?;
        let idem = txn.open_table(IDEM_EXPIRY).map_err(storage)?;
        let after = |ms: i64, id: Option<String>| {
            id.filter(|_| ms > 0)
                .and_then(|id| crate::domain::ids::created_ms(&id))
                .map(|t| t.saturating_add(ms))
        };
        let ignored = txn.open_table(IGNORED).map_err(storage)?;
        let first_ignored = ignored
            .first()
            .map_err(storage)?
            .map(|(k, _)| k.value().to_owned());
        let cursor = txn
            .open_table(RETENTION)
            .map_err(storage)?
            .get("events")
            .map_err(storage)?
            .map(|v| v.value().to_owned())
            .unwrap_or_default();
        let events = txn.open_table(EVENTS).map_err(storage)?;
        let next_event = events
            .range::<&str>((
                std::ops::Bound::Excluded(cursor.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .map_err(storage)?
            .next()
            .transpose()
            .map_err(storage)?
            .map(|(k, _)| k.value().to_owned());
        let times = [
            after(self.retention.ignored_alerts_ms, first_ignored),
            after(self.retention.events_ms, next_event),
            expiry.first().map_err(storage)?.map(|(k, _)| k.value().0),
            releases.first().map_err(storage)?.map(|(k, _)| k.value().0),
            idem.first()
                .map_err(storage)?
                .map(|(k, _)| k.value().0.saturating_add(idempotency_ttl_ms)),
        ];
        Ok(times.into_iter().flatten().min())
    }

    fn refund(&self, id: &str) -> Result<Option<Refund>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(REFUNDS).map_err(storage)?;
        match t.get(id).map_err(storage)? {
            Some(v) => decode("refund", v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn list_refunds(&self, q: &RefundQuery) -> Result<Page<Refund>, StoreError> {
        let txn = self.read()?;
        let refunds = txn.open_table(REFUNDS).map_err(storage)?;
        let keep = |r: &Refund| {
            q.merchant_id
                .as_ref()
                .is_none_or(|m| *m == r.merchant_id && q.livemode == r.livemode)
                && q.session_id.as_ref().is_none_or(|s| *s == r.session_id)
                && q.status.is_none_or(|st| st == r.status)
        };
        let after_seq = match &q.starting_after {
            Some(id) => match refunds.get(id.as_str()).map_err(storage)? {
                Some(v) => Some(decode::<Refund>("refund", v.value())?.seq),
                None => {
                    return Ok(Page {
                        items: vec![],
                        has_more: false,
                    });
                }
            },
            None => None,
        };
        let mut items = Vec::new();
        let mut has_more = false;
        let mut take = |r: Refund| -> bool {
            if !keep(&r) || after_seq.is_some_and(|s| r.seq >= s) {
                return true;
            }
            if items.len() == q.limit {
                has_more = true;
                return false;
            }
            items.push(r);
            true
        };
        if let Some(session) = &q.session_id {
            // A session has few refunds: read them all, newest first.
            let idx = txn.open_table(SESSION_REFUNDS).map_err(storage)?;
            let mut all = Vec::new();
            for e in idx
                .range((session.as_str(), "")..=(session.as_str(), "\u{10FFFF}"))
                .map_err(storage)?
            {
                let (k, _) = e.map_err(storage)?;
                if let Some(v) = refunds.get(k.value().1).map_err(storage)? {
                    all.push(decode::<Refund>("refund", v.value())?);
                }
            }
            all.sort_by_key(|r| std::cmp::Reverse(r.seq));
            for r in all {
                if !take(r) {
                    break;
                }
            }
        } else if let Some(m) = &q.merchant_id {
            let idx = txn.open_table(REFUND_INDEX).map_err(storage)?;
            let sc = scope(m, q.livemode);
            for e in idx
                .range((sc.as_str(), 0u64)..(sc.as_str(), u64::MAX))
                .map_err(storage)?
                .rev()
            {
                let (_, id) = e.map_err(storage)?;
                if let Some(v) = refunds.get(id.value()).map_err(storage)?
                    && !take(decode("refund", v.value())?)
                {
                    break;
                }
            }
        } else {
            // Every merchant (the operator): ids sort by creation time.
            for e in refunds.iter().map_err(storage)?.rev() {
                let (_, v) = e.map_err(storage)?;
                if !take(decode("refund", v.value())?) {
                    break;
                }
            }
        }
        Ok(Page { items, has_more })
    }

    fn ledger(
        &self,
        merchant_id: &str,
        livemode: bool,
    ) -> Result<Vec<(String, LedgerEntry)>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(LEDGER).map_err(storage)?;
        let sc = scope(merchant_id, livemode);
        let mut out = Vec::new();
        for e in t
            .range((sc.as_str(), "")..=(sc.as_str(), "\u{10FFFF}"))
            .map_err(storage)?
        {
            let (k, v) = e.map_err(storage)?;
            out.push((k.value().1.to_owned(), decode("ledger entry", v.value())?));
        }
        Ok(out)
    }

    fn cursors(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(META).map_err(storage)?;
        let from = format!("cursor:{prefix}");
        let mut out = Vec::new();
        for e in t.range(from.as_str()..).map_err(storage)? {
            let (k, v) = e.map_err(storage)?;
            let Some(key) = k.value().strip_prefix("cursor:") else {
                break;
            };
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_owned(), v.value()));
        }
        Ok(out)
    }

    fn record(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(RECORDS).map_err(storage)?;
        Ok(t.get((kind, key))
            .map_err(storage)?
            .map(|v| v.value().to_vec()))
    }

    fn records(
        &self,
        kind: &str,
        after: Option<&str>,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(RECORDS).map_err(storage)?;
        let lo = match (after, newest_first) {
            (Some(a), false) => Bound::Excluded((kind, a)),
            _ => Bound::Included((kind, "")),
        };
        let hi = match (after, newest_first) {
            (Some(a), true) => Bound::Excluded((kind, a)),
            // Every key of `kind` sorts below `kind` followed by U+10FFFF.
            _ => Bound::Included((kind, "\u{10FFFF}")),
        };
        let range = t.range::<(&str, &str)>((lo, hi)).map_err(storage)?;
        let rows: Box<dyn Iterator<Item = _>> = if newest_first {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut out = Vec::new();
        for e in rows.take(limit) {
            let (k, v) = e.map_err(storage)?;
            out.push((k.value().1.to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn credit(&self, id: &str) -> Result<Option<Credit>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(CREDITS).map_err(storage)?;
        match t.get(id).map_err(storage)? {
            Some(v) => decode("credit", v.value()).map(Some),
            None => Ok(None),
        }
    }
}

/// A redb database opened without the writer thread, for the conformance suite to drive the
/// backend's `Tx` directly: the same tables, sequence and reservation index the writer keeps.
#[cfg(test)]
pub(crate) struct Standalone {
    db: Database,
    w: Mutex<WriterState>,
}

#[cfg(test)]
impl Standalone {
    pub(crate) fn open(path: &Path) -> Result<Standalone, StoreError> {
        let db = open_db(path)?;
        let seq = init_tables(&db)?;
        let res = load_index(&db).map_err(StoreError::Storage)?;
        Ok(Standalone {
            db,
            w: Mutex::new(WriterState {
                seq,
                res,
                queued_deliveries: false,
                changed_sessions: Vec::new(),
            }),
        })
    }

    /// Runs `f` in one write transaction, committed when it returns `Ok`; on `Err` the
    /// transaction is dropped (rolled back) and the in-memory state rebuilt, as the writer does.
    pub(crate) fn with_tx<T>(
        &self,
        f: &mut dyn FnMut(&mut dyn crate::engine::Tx) -> crate::engine::R<T>,
    ) -> crate::engine::R<T> {
        use crate::engine::TxError;
        let st = |e: &dyn std::fmt::Display| TxError::Storage(e.to_string());
        let mut w = self.w.lock().map_err(|e| st(&e))?;
        let txn = self.db.begin_write()?;
        let start_seq = w.seq;
        let out = {
            let mut t = Tables::open(&txn)?;
            let r = f(&mut RedbTx {
                t: &mut t,
                w: &mut w,
            });
            if r.is_ok() {
                let seq = w.seq;
                t.meta.insert("seq", seq)?;
            }
            r
        };
        match out {
            Ok(v) => {
                txn.commit()?;
                w.changed_sessions.clear();
                Ok(v)
            }
            Err(e) => {
                drop(txn);
                w.changed_sessions.clear();
                w.seq = start_seq;
                w.res = load_index(&self.db).map_err(|e| st(&e))?;
                Err(e)
            }
        }
    }
}
