//! The storage conformance suite: every backend of `engine::Tx` must keep the money invariants
//! itself (one awaiting holder per (pay_to, payable_amount), one payment per reference, one
//! idempotency record per key), roll a refused transaction back whole, and give the engine's
//! rules the same answers under races (two sessions for one pair, two refunds at once, one
//! reference observed twice). `conformance!` runs every check on a backend; it is run on redb
//! and on the in-memory backend, as cashubtc/cdk runs its database test macro on every backend.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;

use crate::domain::ids::new_id;
use crate::domain::method::{Currency, Direction, Method, Rail, Strategy};
use crate::domain::refund::{LedgerEntry, Refund, RefundStatus};
use crate::domain::session::{PaymentStatus, Session, Status};
use crate::engine::{
    EngineConfig, IdempotencyRecord, MatchResult, Observed, OpError, Outcome, R, Retention, Tx,
    TxError, WriteOp,
};

const GRACE_MS: i64 = 60_000;

fn cfg() -> EngineConfig {
    EngineConfig {
        grace_ms: GRACE_MS,
        retention: Retention::default(),
    }
}

/// A backend under test.
pub(crate) trait Backend {
    /// Submits every operation at once and waits for all: they race for the store (on redb
    /// they queue for the writer together and usually share one batch).
    fn race(&self, ops: Vec<WriteOp>) -> Vec<Result<Outcome, OpError>>;
    /// Runs `f` in one transaction, committed when it returns `Ok`, rolled back otherwise.
    fn with_tx(&self, f: &mut dyn FnMut(&mut dyn Tx) -> R<()>) -> R<()>;
    /// The ledger row of merchant `demo`, test mode, `method`, as committed.
    fn ledger(&self, method: &str) -> Option<LedgerEntry>;
}

/// redb: the real store (writer thread, group commit) for races, and a second file driven
/// through the backend's `Tx` directly for the invariants.
pub(crate) struct RedbBackend {
    _dir: tempfile::TempDir,
    store: super::RedbStore,
    tx: super::redb_store::Standalone,
    rt: tokio::runtime::Runtime,
}

impl RedbBackend {
    pub(crate) fn new() -> RedbBackend {
        let dir = tempfile::tempdir().unwrap();
        let store = super::RedbStore::open(&dir.path().join("store.redb"), GRACE_MS).unwrap();
        let tx = super::redb_store::Standalone::open(&dir.path().join("tx.redb")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        RedbBackend {
            _dir: dir,
            store,
            tx,
            rt,
        }
    }
}

impl Backend for RedbBackend {
    fn race(&self, ops: Vec<WriteOp>) -> Vec<Result<Outcome, OpError>> {
        use super::Store as _;
        let pending: Vec<_> = ops
            .into_iter()
            .map(|op| self.store.submit(op, None))
            .collect();
        self.rt.block_on(async {
            let mut out = Vec::new();
            for rx in pending {
                out.push(rx.await.unwrap().unwrap());
            }
            out
        })
    }

    fn with_tx(&self, f: &mut dyn FnMut(&mut dyn Tx) -> R<()>) -> R<()> {
        self.tx.with_tx(f)
    }

    fn ledger(&self, method: &str) -> Option<LedgerEntry> {
        use super::Store as _;
        let rows = self.store.ledger("demo", false).unwrap();
        rows.into_iter().find(|(m, _)| m == method).map(|(_, e)| e)
    }
}

/// The in-memory backend: a race is one batch.
pub(crate) struct MemBackend(super::memory::MemStore);

impl MemBackend {
    pub(crate) fn new() -> MemBackend {
        MemBackend(super::memory::MemStore::new(cfg()))
    }
}

impl Backend for MemBackend {
    fn race(&self, ops: Vec<WriteOp>) -> Vec<Result<Outcome, OpError>> {
        let now = crate::engine::now_ms();
        let ops = ops.into_iter().map(|o| (o, None)).collect();
        self.0.batch(ops, now).unwrap().0
    }

    fn with_tx(&self, f: &mut dyn FnMut(&mut dyn Tx) -> R<()>) -> R<()> {
        self.0.with_tx(f)
    }

    fn ledger(&self, method: &str) -> Option<LedgerEntry> {
        let mut out = None;
        self.0
            .with_tx(|t| {
                out = t.ledger("demo", false, method)?;
                Ok(())
            })
            .unwrap();
        out
    }
}

/// PostgreSQL: a real server (tests/support/pg_cluster.rs), a fresh database per check; races
/// through the real writer and group commit, invariants through the backend's `Tx`.
pub(crate) struct PgBackend {
    store: super::PgStore,
    rt: tokio::runtime::Runtime,
}

impl PgBackend {
    pub(crate) fn new() -> PgBackend {
        let url = super::postgres::test_cluster::fresh_database();
        let store = super::PgStore::open(
            &super::PgOptions {
                url,
                pool_size: 4,
                statement_timeout_ms: 10_000,
            },
            GRACE_MS,
            Retention::default(),
            1_000,
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        PgBackend { store, rt }
    }
}

impl Backend for PgBackend {
    fn race(&self, ops: Vec<WriteOp>) -> Vec<Result<Outcome, OpError>> {
        use super::Store as _;
        let pending: Vec<_> = ops
            .into_iter()
            .map(|op| self.store.submit(op, None))
            .collect();
        self.rt.block_on(async {
            let mut out = Vec::new();
            for rx in pending {
                out.push(rx.await.unwrap().unwrap());
            }
            out
        })
    }

    fn with_tx(&self, f: &mut dyn FnMut(&mut dyn Tx) -> R<()>) -> R<()> {
        self.store.with_tx(f)
    }

    fn ledger(&self, method: &str) -> Option<LedgerEntry> {
        use super::Store as _;
        let rows = self.store.ledger("demo", false).unwrap();
        rows.into_iter().find(|(m, _)| m == method).map(|(_, e)| e)
    }
}

pub(crate) fn method(window: u32) -> Method {
    Method {
        name: "usdt_local".into(),
        rail: Rail::Token {
            network: "local".into(),
            chain_id: 31337,
            symbol: "USDT".into(),
            contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3".into(),
            decimals: 6,
            confirmations: 1,
            tron: false,
        },
        currency: Currency::Usd,
        strategy: Strategy::UniqueAmount {
            pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
            step: 1,
            window,
            direction: Direction::Up,
        },
        test: true,
        underpayment_tolerance: 0,
    }
}

/// An open test-mode session of `amount` with nothing set beyond what a create needs (shared
/// with the writer load probe).
pub(crate) fn session(amount: u64) -> Session {
    let now = crate::engine::now_ms();
    Session {
        id: new_id("cs"),
        merchant_id: "demo".into(),
        livemode: false,
        status: Status::Open,
        payment_status: PaymentStatus::Unpaid,
        amount,
        currency: Currency::Usd,
        amount_received: 0,
        description: None,
        customer_email: None,
        customer_name: None,
        client_reference_id: None,
        payment_options: vec![],
        checkout_url: String::new(),
        success_url: None,
        cancel_url: None,
        notify_url: None,
        payments: vec![],
        metadata: BTreeMap::new(),
        expires_at_ms: now + 3_600_000,
        created_at_ms: now,
        completed_at_ms: None,
        ended_at_ms: None,
        paid_late: false,
        price: None,
        seq: 0,
        locale: None,
    }
}

fn create(amount: u64, window: u32) -> WriteOp {
    WriteOp::CreateSession {
        session: Box::new(session(amount)),
        methods: vec![method(window)],
    }
}

fn paid(s: &Session, reference: &str) -> WriteOp {
    let o = &s.payment_options[0];
    WriteOp::Observe(Box::new(Observed {
        destination: o.destination.clone(),
        amount_base: o.payable_base,
        decimals: o.decimals,
        reference: reference.into(),
        livemode: s.livemode,
        utr: None,
        tx_hash: Some("0xabc".into()),
        log_index: Some(0),
        block_number: Some(10),
        confirmations: 1,
        confirmed: true,
        received_at_ms: crate::engine::now_ms(),
        owner: Some(("demo".into(), o.method.clone())),
        only_session: None,
        source: None,
        sender: None,
        from: None,
    }))
}

fn refund(s: &Session, amount_base: u128) -> WriteOp {
    WriteOp::CreateRefund {
        refund: Box::new(Refund {
            id: new_id("re"),
            merchant_id: s.merchant_id.clone(),
            livemode: s.livemode,
            session_id: s.id.clone(),
            method: String::new(),
            currency: s.currency,
            amount_base: 0,
            decimals: 0,
            status: RefundStatus::Pending,
            reason: None,
            metadata: BTreeMap::new(),
            tx_hash: None,
            utr: None,
            failure_reason: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            seq: 0,
            price: None,
        }),
        method: None,
        amount_base: Some(amount_base),
    }
}

fn one_session(b: &dyn Backend, op: WriteOp) -> Session {
    match b.race(vec![op]).pop() {
        Some(Ok(Outcome::Session(s))) => *s,
        other => panic!("expected a session, got {other:?}"),
    }
}

fn invariant(r: R<()>) -> String {
    match r {
        Err(TxError::Invariant(why)) => why,
        other => panic!("expected the store to refuse the write, got {other:?}"),
    }
}

pub(crate) fn one_awaiting_holder_per_pair(b: &dyn Backend) {
    let key = "test|evm:31337:0xc:0xa";
    b.with_tx(&mut |t| t.hold(key, 100, "cs_a").map(drop))
        .unwrap();
    let why = invariant(b.with_tx(&mut |t| t.hold(key, 100, "cs_b").map(drop)));
    assert!(why.contains("cs_a"), "{why}");
    // Another amount at the same address, or the same holder again, is fine.
    b.with_tx(&mut |t| t.hold(key, 101, "cs_b").map(drop))
        .unwrap();
    b.with_tx(&mut |t| t.hold(key, 100, "cs_a").map(drop))
        .unwrap();
    // Once its holder ended with nothing received, the pair may be handed on.
    b.with_tx(&mut |t| t.end_hold(key, 100, "cs_a", i64::MAX, true))
        .unwrap();
    b.with_tx(&mut |t| {
        let old = t.hold(key, 100, "cs_b")?;
        assert_eq!(old.map(|r| r.session_id).as_deref(), Some("cs_a"));
        Ok(())
    })
    .unwrap();
}

pub(crate) fn one_payment_per_reference(b: &dyn Backend) {
    let r = "evm:31337:0xfeed:0";
    b.with_tx(&mut |t| t.put_reference(r, "py_1")).unwrap();
    invariant(b.with_tx(&mut |t| t.put_reference(r, "py_2")));
    b.with_tx(&mut |t| {
        assert_eq!(t.reference(r)?.as_deref(), Some("py_1"));
        Ok(())
    })
    .unwrap();
}

pub(crate) fn one_idempotency_record_per_key(b: &dyn Backend) {
    let rec = |body: &str| IdempotencyRecord {
        fingerprint: "f".into(),
        status: 200,
        body: body.into(),
        created_at_ms: 1,
    };
    b.with_tx(&mut |t| t.put_idempotency("demo\x1ftest\x1fk1", &rec("first")))
        .unwrap();
    invariant(b.with_tx(&mut |t| t.put_idempotency("demo\x1ftest\x1fk1", &rec("second"))));
    b.with_tx(&mut |t| {
        assert_eq!(t.idempotency("demo\x1ftest\x1fk1")?.unwrap().body, "first");
        Ok(())
    })
    .unwrap();
}

pub(crate) fn a_refused_write_rolls_back_its_whole_transaction(b: &dyn Backend) {
    b.with_tx(&mut |t| t.put_reference("upi:1", "py_1"))
        .unwrap();
    invariant(b.with_tx(&mut |t| {
        t.put_reference("upi:2", "py_2")?;
        t.hold("upi:demo@bank", 5, "cs_x")?;
        t.put_reference("upi:1", "py_3")
    }));
    b.with_tx(&mut |t| {
        assert_eq!(
            t.reference("upi:2")?,
            None,
            "a refused transaction left a write"
        );
        assert_eq!(t.reservation("upi:demo@bank", 5)?, None);
        // And the sequence did not move for it.
        let a = t.next_seq()?;
        assert!(a >= 1);
        Ok(())
    })
    .unwrap();
}

pub(crate) fn two_sessions_for_one_pair(b: &dyn Backend) {
    // A window of one: one payable amount per price. Both race for it; one wins.
    let r = b.race(vec![create(1_500, 1), create(1_500, 1)]);
    let won = r
        .iter()
        .filter(|x| matches!(x, Ok(Outcome::Session(_))))
        .count();
    let refused = r
        .iter()
        .filter(|x| matches!(x, Err(OpError::NoSlot(_))))
        .count();
    assert_eq!((won, refused), (1, 1), "{r:?}");
    // A wider window: every racer gets a pair of its own.
    let r = b.race(vec![create(2_500, 3), create(2_500, 3), create(2_500, 3)]);
    let mut amounts: Vec<u128> = r
        .iter()
        .map(|x| match x {
            Ok(Outcome::Session(s)) => s.payment_options[0].payable_base,
            other => panic!("{other:?}"),
        })
        .collect();
    amounts.sort();
    amounts.dedup();
    assert_eq!(amounts.len(), 3, "two sessions hold one pair: {amounts:?}");
}

pub(crate) fn one_reference_observed_twice(b: &dyn Backend) {
    let s = one_session(b, create(3_000, 3));
    let r = b.race(vec![
        paid(&s, "evm:31337:0xdup:0"),
        paid(&s, "evm:31337:0xdup:0"),
    ]);
    let matched: Vec<_> = r
        .iter()
        .filter_map(|x| match x {
            Ok(Outcome::Match(MatchResult::Matched { payment_id, .. })) => Some(payment_id),
            _ => None,
        })
        .collect();
    assert_eq!(matched.len(), 1, "{r:?}");
    assert!(
        r.iter().any(|x| matches!(
            x,
            Ok(Outcome::Match(MatchResult::Duplicate { existing })) if existing == matched[0]
        )),
        "{r:?}"
    );
    // The session counted the money once.
    let again = match b.race(vec![paid(&s, "evm:31337:0xdup:0")]).pop() {
        Some(Ok(Outcome::Match(m))) => m,
        other => panic!("{other:?}"),
    };
    assert!(matches!(again, MatchResult::Duplicate { .. }), "{again:?}");
}

pub(crate) fn two_refunds_at_once(b: &dyn Backend) {
    let s = one_session(b, create(1_000, 3));
    let got = match b.race(vec![paid(&s, "evm:31337:0xrefund:0")]).pop() {
        Some(Ok(Outcome::Match(MatchResult::Matched { session, .. }))) => *session,
        other => panic!("{other:?}"),
    };
    assert_eq!(got.status, Status::Complete);
    let paid_base = got.payment_options[0].payable_base;
    // Each asks for 60% of what arrived: together they would refund more than was received.
    let part = paid_base * 6 / 10;
    let r = b.race(vec![refund(&got, part), refund(&got, part)]);
    let ok = r
        .iter()
        .filter(|x| matches!(x, Ok(Outcome::Refund(_))))
        .count();
    let refused = r
        .iter()
        .filter(|x| {
            matches!(x, Err(OpError::Conflict { code, .. }) if *code == "refund_exceeds_received")
        })
        .count();
    assert_eq!((ok, refused), (1, 1), "{r:?}");
    // The ledger holds exactly one refund's worth pending.
    let e = b.ledger("usdt_local").expect("a ledger row");
    assert_eq!(e.pending, part);
    assert_eq!(e.received, paid_base);
}

pub(crate) fn a_paid_pair_is_held_through_the_grace_then_released(b: &dyn Backend) {
    let a = one_session(b, create(4_000, 1));
    match b.race(vec![paid(&a, "evm:31337:0xgrace:0")]).pop() {
        Some(Ok(Outcome::Match(MatchResult::Matched { .. }))) => {}
        other => panic!("{other:?}"),
    }
    // Paid: the pair stays its session's for late money, so a new session finds no slot.
    let r = b.race(vec![create(4_000, 1)]);
    assert!(matches!(r[0], Err(OpError::NoSlot(_))), "{r:?}");
    let later = crate::engine::now_ms() + GRACE_MS + 1_000;
    let swept = b.race(vec![WriteOp::Sweep {
        now_ms: later,
        idempotency_ttl_ms: 86_400_000,
        limit: 100,
    }]);
    assert!(
        matches!(swept[0], Ok(Outcome::Swept { released, .. }) if released >= 1),
        "{swept:?}"
    );
    let c = one_session(b, create(4_000, 1));
    assert_eq!(
        c.payment_options[0].payable_base,
        a.payment_options[0].payable_base
    );
}

pub(crate) fn an_assigned_credit_moves_its_reference_to_the_payment(b: &dyn Backend) {
    let s = one_session(b, create(5_000, 3));
    // Money at the session's address but of an amount nobody holds: an unmatched credit.
    let mut stray = paid(&s, "evm:31337:0xstray:0");
    if let WriteOp::Observe(o) = &mut stray {
        o.amount_base += 77;
    }
    let credit = match b.race(vec![stray]).pop() {
        Some(Ok(Outcome::Match(MatchResult::Unmatched { credit }))) => credit,
        other => panic!("{other:?}"),
    };
    let r = b.race(vec![WriteOp::AssignCredit {
        credit_id: credit.id.clone(),
        session_id: s.id.clone(),
    }]);
    let payment_id = match &r[0] {
        Ok(Outcome::Match(MatchResult::Matched { payment_id, .. })) => payment_id.clone(),
        other => panic!("{other:?}"),
    };
    // The transfer is now that payment's, once: seen again, it is a duplicate of the payment.
    let mut again = paid(&s, "evm:31337:0xstray:0");
    if let WriteOp::Observe(o) = &mut again {
        o.amount_base += 77;
    }
    let r = b.race(vec![again]);
    assert!(
        matches!(&r[0], Ok(Outcome::Match(MatchResult::Duplicate { existing })) if *existing == payment_id),
        "{r:?}"
    );
    // And assigning the (now used) credit again changes nothing.
    let r = b.race(vec![WriteOp::AssignCredit {
        credit_id: credit.id.clone(),
        session_id: s.id.clone(),
    }]);
    assert!(matches!(r[0], Err(OpError::Invalid(_))), "{r:?}");
}

/// A console login of `alice` (TOTP step `step`), presenting cookie `cookie`.
fn login_attempt(step: Option<u64>, password_ok: bool, cookie: &str) -> WriteOp {
    use crate::domain::operator::Login;
    WriteOp::Login(Box::new(crate::engine::operators::LoginAttempt {
        name: "alice".into(),
        client: "192.0.2.7".into(),
        password_ok,
        totp_step: step,
        recovery_hash: None,
        login: Login {
            id: cookie.into(),
            operator: "alice".into(),
            csrf: "c".into(),
            created_at_ms: 1,
            expires_at_ms: i64::MAX,
            client: "192.0.2.7".into(),
            user_agent: String::new(),
            revoked_at_ms: None,
        },
    }))
}

/// Two logins racing with one TOTP code: one logs in, the other is a replay; five failures in
/// a row lock the account, and the lock holds against the right password.
pub(crate) fn a_totp_code_logs_in_once_and_failures_lock(b: &dyn Backend) {
    use crate::domain::operator::{AuditEntry, Operator, Role};
    use crate::engine::operators::{LoginResult, Refusal};
    let op = Operator {
        name: "alice".into(),
        role: Role::Operator,
        password_hash: String::new(),
        totp_secret: String::new(),
        last_totp_step: 0,
        recovery_codes: vec![],
        created_at_ms: 1,
    };
    let create = || WriteOp::CreateOperator {
        operator: Box::new(op.clone()),
        audit: Box::new(AuditEntry::new(
            1,
            "t",
            "t",
            "operator.create",
            "alice",
            "ok",
        )),
    };
    let made = b.race(vec![create(), create()]);
    assert_eq!(made.iter().filter(|r| r.is_ok()).count(), 1, "{made:?}");
    let out = b.race(vec![
        login_attempt(Some(100), true, "k1"),
        login_attempt(Some(100), true, "k2"),
    ]);
    let logged_in = out
        .iter()
        .filter(|r| matches!(r, Ok(Outcome::Login(LoginResult::LoggedIn(_)))))
        .count();
    assert_eq!(logged_in, 1, "{out:?}");
    assert!(out.iter().any(|r| matches!(
        r,
        Ok(Outcome::Login(LoginResult::Refused(Refusal::Wrong(
            "refused: TOTP code replayed"
        ))))
    )));
    // The replay was the first failure in a row; four wrong passwords make five.
    for i in 0..4 {
        let r = b.race(vec![login_attempt(Some(200 + i), false, "k3")]);
        assert!(
            matches!(
                r[0],
                Ok(Outcome::Login(LoginResult::Refused(Refusal::Wrong(_))))
            ),
            "{r:?}"
        );
    }
    let r = b.race(vec![login_attempt(Some(300), true, "k4")]);
    assert!(
        matches!(
            r[0],
            Ok(Outcome::Login(LoginResult::Refused(Refusal::Locked { .. })))
        ),
        "{r:?}"
    );
}

/// A link of the demo merchant with `max_uses`.
fn link(max_uses: u64) -> crate::domain::link::PaymentLink {
    crate::domain::link::PaymentLink {
        id: new_id("pl"),
        merchant_id: "demo".into(),
        livemode: false,
        url: String::new(),
        amount: Some(4_000),
        amount_min: None,
        amount_max: None,
        currency: "usd".into(),
        description: None,
        payment_methods: vec![],
        max_uses: Some(max_uses),
        uses: 0,
        completed: 0,
        expires_at_ms: None,
        active: true,
        counter: false,
        metadata: BTreeMap::new(),
        created_at_ms: crate::engine::now_ms(),
        seq: 0,
    }
}

fn open_link(id: &str) -> WriteOp {
    WriteOp::OpenLink {
        link_id: id.to_owned(),
        price_amount: 4_000,
        session: Box::new(session(4_000)),
        methods: vec![method(100)],
    }
}

/// Five customers open a link of two uses at once: two sessions, three refusals, and the link
/// counts two uses; a sixth use written past the limit is refused by the store itself.
pub(crate) fn a_link_limit_holds_under_concurrent_opens(b: &dyn Backend) {
    let l = link(2);
    let id = l.id.clone();
    let made = b.race(vec![WriteOp::CreateLink { link: Box::new(l) }]);
    assert!(matches!(made[0], Ok(Outcome::Link(_))), "{made:?}");
    let r = b.race((0..5).map(|_| open_link(&id)).collect());
    let opened: Vec<&Session> = r
        .iter()
        .filter_map(|x| match x {
            Ok(Outcome::Session(s)) => Some(s.as_ref()),
            _ => None,
        })
        .collect();
    let refused = r
        .iter()
        .filter(|x| matches!(x, Err(OpError::Conflict { code, .. }) if *code == crate::engine::links::LINK_CLOSED))
        .count();
    assert_eq!((opened.len(), refused), (2, 3), "{r:?}");
    assert!(
        opened
            .iter()
            .all(|s| s.metadata.get("payment_link") == Some(&id)),
        "the sessions name their link"
    );
    let deact = b.race(vec![WriteOp::DeactivateLink {
        merchant_id: "demo".into(),
        livemode: false,
        id: id.clone(),
    }]);
    match &deact[0] {
        Ok(Outcome::Link(l)) => assert_eq!((l.uses, l.active), (2, false)),
        other => panic!("{other:?}"),
    }
    // Whatever the rules checked, the store refuses a link past its limit.
    let mut full = link(2);
    full.uses = 2;
    let r = b.with_tx(&mut |t| {
        t.insert_payment_link(&full)?;
        let mut over = full.clone();
        over.uses = 3;
        t.put_payment_link(&over)
    });
    assert!(matches!(r, Err(TxError::Invariant(_))), "{r:?}");
}

/// A link's sale is counted when its session completes; a session canceled with nothing
/// received gives its use back.
pub(crate) fn a_link_counts_sales_and_returns_unused_uses(b: &dyn Backend) {
    let l = link(2);
    let id = l.id.clone();
    b.race(vec![WriteOp::CreateLink { link: Box::new(l) }]);
    let r = b.race(vec![open_link(&id), open_link(&id)]);
    let sessions: Vec<Session> = r
        .into_iter()
        .map(|x| match x {
            Ok(Outcome::Session(s)) => *s,
            other => panic!("{other:?}"),
        })
        .collect();
    let paid_r = b.race(vec![paid(
        &sessions[0],
        &format!("evm:31337:0x{}:0", sessions[0].id),
    )]);
    assert!(
        matches!(paid_r[0], Ok(Outcome::Match(MatchResult::Matched { .. }))),
        "{paid_r:?}"
    );
    let ended = b.race(vec![WriteOp::EndSession {
        merchant_id: "demo".into(),
        livemode: false,
        id: sessions[1].id.clone(),
        expire: false,
    }]);
    assert!(matches!(ended[0], Ok(Outcome::Session(_))), "{ended:?}");
    // One use back: a third customer may open it; a fourth may not.
    let r = b.race(vec![open_link(&id), open_link(&id)]);
    let ok = r
        .iter()
        .filter(|x| matches!(x, Ok(Outcome::Session(_))))
        .count();
    assert_eq!(ok, 1, "{r:?}");
    let deact = b.race(vec![WriteOp::DeactivateLink {
        merchant_id: "demo".into(),
        livemode: false,
        id: id.clone(),
    }]);
    match &deact[0] {
        Ok(Outcome::Link(l)) => {
            assert_eq!((l.completed, l.uses, l.active), (1, 2, false));
        }
        other => panic!("{other:?}"),
    }
}

/// Runs every conformance check on the backend `$make` builds (a fresh one per check).
macro_rules! conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn one_awaiting_holder_per_pair() {
                super::one_awaiting_holder_per_pair(&$make);
            }
            #[test]
            fn one_payment_per_reference() {
                super::one_payment_per_reference(&$make);
            }
            #[test]
            fn one_idempotency_record_per_key() {
                super::one_idempotency_record_per_key(&$make);
            }
            #[test]
            fn a_refused_write_rolls_back_its_whole_transaction() {
                super::a_refused_write_rolls_back_its_whole_transaction(&$make);
            }
            #[test]
            fn two_sessions_for_one_pair() {
                super::two_sessions_for_one_pair(&$make);
            }
            #[test]
            fn one_reference_observed_twice() {
                super::one_reference_observed_twice(&$make);
            }
            #[test]
            fn two_refunds_at_once() {
                super::two_refunds_at_once(&$make);
            }
            #[test]
            fn a_paid_pair_is_held_through_the_grace_then_released() {
                super::a_paid_pair_is_held_through_the_grace_then_released(&$make);
            }
            #[test]
            fn an_assigned_credit_moves_its_reference_to_the_payment() {
                super::an_assigned_credit_moves_its_reference_to_the_payment(&$make);
            }
            #[test]
            fn a_totp_code_logs_in_once_and_failures_lock() {
                super::a_totp_code_logs_in_once_and_failures_lock(&$make);
            }
            #[test]
            fn a_link_limit_holds_under_concurrent_opens() {
                super::a_link_limit_holds_under_concurrent_opens(&$make);
            }
            #[test]
            fn a_link_counts_sales_and_returns_unused_uses() {
                super::a_link_counts_sales_and_returns_unused_uses(&$make);
            }
        }
    };
}

conformance!(redb, RedbBackend::new());
conformance!(memory, MemBackend::new());
conformance!(postgres, PgBackend::new());
