//! The matcher and allocator against a real redb file: one payment matches one session once,
//! what matches nothing becomes a credit, reservations outlive sessions by the grace window.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use paywatch::domain::ids::new_id;
use paywatch::domain::method::{Currency, Direction, Method, Rail, Strategy};
use paywatch::domain::session::{PaymentStatus, Session, Status};
use paywatch::store::{MatchResult, Observed, OpError, Outcome, RedbStore, Store, WriteOp, write};

const GRACE_MS: i64 = 60_000;

fn token_method() -> Method {
    Method {
        name: "usdt_local".into(),
        rail: Rail::Token {
            network: "local".into(),
            chain_id: 31337,
            symbol: "USDT".into(),
            contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3".into(),
            decimals: 6,
            confirmations: 2,
            tron: false,
        },
        currency: Currency::Usd,
        strategy: Strategy::UniqueAmount {
            pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
            step: 1,
            window: 3,
            direction: Direction::Up,
        },
        test: true,
        underpayment_tolerance: 0,
    }
}

fn pool_method() -> Method {
    Method {
        name: "usdt_pool".into(),
        strategy: Strategy::AddressPool {
            addresses: vec![
                "0x90F79bf6EB2c4f870365E785982E1f101E93b906".into(),
                "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65".into(),
            ],
        },
        ..token_method()
    }
}

fn new_session(amount: u64, livemode: bool, expires_in_ms: i64) -> Session {
    let now = chrono::Utc::now().timestamp_millis();
    Session {
        id: new_id("cs"),
        merchant_id: "demo".into(),
        livemode,
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
        expires_at_ms: now + expires_in_ms,
        created_at_ms: now,
        completed_at_ms: None,
        ended_at_ms: None,
        paid_late: false,
        price: None,
        seq: 0,
        locale: None,
    }
}

async fn create(store: &RedbStore, s: Session, m: Method) -> Result<Session, OpError> {
    match write(
        store,
        WriteOp::CreateSession {
            session: Box::new(s),
            methods: vec![m],
        },
        None,
    )
    .await
    .expect("store")
    {
        Ok(Outcome::Session(s)) => Ok(*s),
        Ok(o) => panic!("unexpected {o:?}"),
        Err(e) => Err(e),
    }
}

fn observed(s: &Session, amount: u128, reference: &str) -> Observed {
    let o = &s.payment_options[0];
    Observed {
        destination: o.destination.clone(),
        amount_base: amount,
        decimals: 6,
        reference: reference.into(),
        livemode: s.livemode,
        utr: None,
        tx_hash: Some("0xabc".into()),
        log_index: Some(0),
        block_number: Some(10),
        confirmations: 0,
        confirmed: false,
        received_at_ms: chrono::Utc::now().timestamp_millis(),
        owner: Some(("demo".into(), o.method.clone())),
        only_session: None,
        source: None,
        sender: None,
        from: None,
    }
}

async fn observe(store: &RedbStore, o: Observed) -> MatchResult {
    match write(store, WriteOp::Observe(Box::new(o)), None)
        .await
        .expect("store")
    {
        Ok(Outcome::Match(m)) => m,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn one_payment_matches_one_session_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = RedbStore::open(&dir.path().join("db.redb"), GRACE_MS).expect("open");
    let a = create(&store, new_session(100, false, 60_000), token_method())
        .await
        .expect("a");
    let b = create(&store, new_session(100, false, 60_000), token_method())
        .await
        .expect("b");
    let pa = a.payment_options[0].payable_base;
    let pb = b.payment_options[0].payable_base;
    assert_eq!((pa, pb), (1_000_000, 1_000_001));

    // b's exact amount pays b, not a.
    let MatchResult::Matched {
        session,
        payment_id,
    } = observe(&store, observed(&b, pb, "evm:31337:0xabc:0")).await
    else {
        panic!("no match")
    };
    assert_eq!(session.id, b.id);
    assert_eq!(session.status, Status::Processing, "2 confirmations needed");
    // The same transfer again changes nothing.
    let again = observe(&store, observed(&b, pb, "evm:31337:0xabc:0")).await;
    assert_eq!(
        again,
        MatchResult::Duplicate {
            existing: payment_id.clone()
        }
    );
    assert_eq!(
        store
            .session(&b.id)
            .expect("read")
            .expect("b")
            .payments
            .len(),
        1
    );

    // Confirmations complete it; a reorg of a confirmed payment is refused.
    let out = write(
        &store,
        WriteOp::ConfirmPayment {
            payment_id: payment_id.clone(),
            confirmations: 2,
        },
        None,
    )
    .await
    .expect("store")
    .expect("confirm");
    let Outcome::Session(s) = out else { panic!() };
    assert_eq!(s.status, Status::Complete);

    // An amount nobody holds, not final yet: nothing is recorded (a reorg may still remove it).
    assert_eq!(
        observe(&store, observed(&a, 999_999, "evm:31337:0xdef:3")).await,
        MatchResult::Deferred
    );
    assert!(store.credits(10).expect("credits").is_empty());
    // Final, it becomes an unmatched credit, with its event.
    let mut final_one = observed(&a, 999_999, "evm:31337:0xdef:3");
    final_one.confirmed = true;
    let MatchResult::Unmatched { credit } = observe(&store, final_one).await else {
        panic!("expected unmatched")
    };
    assert!(credit.id.starts_with("cr_"));
    assert_eq!(credit.amount_base, 999_999);
    assert_eq!(store.credits(10).expect("credits").len(), 1);
    let events = store.recent_events(100).expect("outbox");
    assert!(events.iter().any(|e| e.kind.as_str() == "credit.unmatched"));
    // And its reference is spent too.
    assert!(matches!(
        observe(&store, observed(&a, pa, "evm:31337:0xdef:3")).await,
        MatchResult::Duplicate { .. }
    ));

    // A live payment never pays a test session.
    let mut live = observed(&a, pa, "evm:31337:0x111:0");
    live.livemode = true;
    live.confirmed = true;
    assert!(matches!(
        observe(&store, live).await,
        MatchResult::Unmatched { .. }
    ));
    assert_eq!(
        store.session(&a.id).expect("read").expect("a").status,
        Status::Open
    );
}

#[tokio::test]
async fn reorged_payment_reverts_and_can_match_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = RedbStore::open(&dir.path().join("db.redb"), GRACE_MS).expect("open");
    let a = create(&store, new_session(250, false, 60_000), token_method())
        .await
        .expect("a");
    let pa = a.payment_options[0].payable_base;
    let MatchResult::Matched { payment_id, .. } =
        observe(&store, observed(&a, pa, "evm:31337:0x77:1")).await
    else {
        panic!()
    };
    let out = write(&store, WriteOp::RevertPayment { payment_id }, None)
        .await
        .expect("store")
        .expect("revert");
    let Outcome::Session(s) = out else { panic!() };
    assert_eq!(
        (s.status, s.payment_status),
        (Status::Open, PaymentStatus::Unpaid)
    );
    assert!(
        store
            .recent_events(100)
            .expect("outbox")
            .iter()
            .any(|e| e.kind.as_str() == "payment.reverted")
    );
    // Mined again after the reorg: matched again.
    assert!(matches!(
        observe(&store, observed(&a, pa, "evm:31337:0x77:1")).await,
        MatchResult::Matched { .. }
    ));
}

#[tokio::test]
async fn window_exhaustion_and_release_after_grace() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = RedbStore::open(&dir.path().join("db.redb"), GRACE_MS).expect("open");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            create(&store, new_session(100, false, 60_000), token_method())
                .await
                .expect("slot"),
        );
    }
    // Test mode never takes live capacity.
    create(&store, new_session(100, true, 60_000), token_method())
        .await
        .expect("live has slots of its own");
    let err = create(&store, new_session(100, false, 60_000), token_method())
        .await
        .expect_err("full");
    assert!(matches!(err, OpError::NoSlot(_)), "{err:?}");

    // Cancel one: late payments still match it while its slot is not reused.
    write(
        &store,
        WriteOp::EndSession {
            merchant_id: "demo".into(),
            livemode: false,
            id: held[0].id.clone(),
            expire: false,
        },
        None,
    )
    .await
    .expect("store")
    .expect("cancel");
    let late = observe(
        &store,
        observed(
            &held[0],
            held[0].payment_options[0].payable_base,
            "evm:31337:0x5:0",
        ),
    )
    .await;
    let MatchResult::Matched { session, .. } = late else {
        panic!("late payment must match")
    };
    assert_eq!(session.status, Status::Canceled);
    // Paid late, it keeps its slot through the grace window.
    assert!(
        create(&store, new_session(100, false, 60_000), token_method())
            .await
            .is_err()
    );

    // After the grace window the sweeper releases it and the slot is reused.
    let now = chrono::Utc::now().timestamp_millis();
    let out = write(
        &store,
        WriteOp::Sweep {
            now_ms: now + GRACE_MS + 1_000,
            idempotency_ttl_ms: 1,
            limit: 100,
        },
        None,
    )
    .await
    .expect("store")
    .expect("sweep");
    let Outcome::Swept {
        expired, released, ..
    } = out
    else {
        panic!()
    };
    assert_eq!(released, 1);
    assert_eq!(
        expired, 3,
        "the three still-open sessions (two test, one live) had passed their expiry at that time"
    );
    let reused = create(&store, new_session(100, false, 60_000), token_method())
        .await
        .expect("reused");
    assert_eq!(
        reused.payment_options[0].payable_base,
        held[0].payment_options[0].payable_base
    );
}

#[tokio::test]
async fn address_pool_hands_out_whole_addresses() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = RedbStore::open(&dir.path().join("db.redb"), GRACE_MS).expect("open");
    let a = create(&store, new_session(100, false, 60_000), pool_method())
        .await
        .expect("a");
    let b = create(&store, new_session(100, false, 60_000), pool_method())
        .await
        .expect("b");
    assert_ne!(a.payment_options[0].pay_to, b.payment_options[0].pay_to);
    assert_eq!(a.payment_options[0].payable_base, 1_000_000, "exact amount");
    assert!(matches!(
        create(&store, new_session(500, false, 60_000), pool_method()).await,
        Err(OpError::NoSlot(_))
    ));
    // Any amount to a pool address pays its holder; short is partial.
    let MatchResult::Matched { session, .. } =
        observe(&store, observed(&b, 400_000, "evm:31337:0x9:0")).await
    else {
        panic!()
    };
    assert_eq!(session.id, b.id);
    assert_eq!(session.payment_status, PaymentStatus::PartiallyPaid);
}

#[tokio::test]
async fn everything_survives_reopening_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("db.redb");
    let id = {
        let store = RedbStore::open(&path, GRACE_MS).expect("open");
        let a = create(&store, new_session(100, false, 60_000), token_method())
            .await
            .expect("a");
        observe(
            &store,
            observed(&a, a.payment_options[0].payable_base, "evm:31337:0xaa:0"),
        )
        .await;
        store.close();
        a.id
    };
    let store = RedbStore::open(&path, GRACE_MS).expect("reopen");
    let s = store.session(&id).expect("read").expect("session");
    assert_eq!(s.payments.len(), 1);
    assert_eq!(s.status, Status::Processing);
    let b = create(&store, new_session(100, false, 60_000), token_method())
        .await
        .expect("b");
    assert!(b.seq > s.seq, "sequence numbers continue after a restart");
    assert_ne!(
        b.payment_options[0].payable_base,
        s.payment_options[0].payable_base
    );
}

#[tokio::test]
async fn a_replayed_revert_never_lets_one_transfer_count_twice() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = RedbStore::open(&dir.path().join("db.redb"), GRACE_MS).expect("open");
    let a = create(&store, new_session(100, false, 600_000), token_method())
        .await
        .expect("a");
    let pay = a.payment_options[0].payable_base;
    let reference = "evm:31337:0xabc:0";
    let MatchResult::Matched {
        payment_id: py1, ..
    } = observe(&store, observed(&a, pay, reference)).await
    else {
        panic!("first sighting must match")
    };
    let revert = |id: String| WriteOp::RevertPayment { payment_id: id };
    write(&store, revert(py1.clone()), None)
        .await
        .expect("store")
        .expect("revert");
    // The reorged transfer is mined again: matched afresh.
    assert!(matches!(
        observe(&store, observed(&a, pay, reference)).await,
        MatchResult::Matched { .. }
    ));
    // A watcher that rescans after a restart replays the old revert, then sees the log again.
    write(&store, revert(py1), None)
        .await
        .expect("store")
        .expect("replayed revert");
    let again = observe(&store, observed(&a, pay, reference)).await;
    assert!(matches!(again, MatchResult::Duplicate { .. }), "{again:?}");
    let s = store.session(&a.id).expect("read").expect("session");
    let live = s
        .payments
        .iter()
        .filter(|p| p.state != paywatch::domain::session::PaymentState::Reverted)
        .count();
    assert_eq!(live, 1, "one transfer, one payment");
}
