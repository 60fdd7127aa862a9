//! The writer's own cost of a create and of a match, without HTTP in front: 64 tasks submit
//! back to back to a real redb file, first creates, then matches of distinct open sessions in
//! random order. `cargo test --release --lib writer_load -- --ignored --nocapture`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use super::{Observed, Outcome, RedbStore, WriteOp};
use crate::domain::ids::new_id;
use crate::domain::method::{Currency, Direction, Method, Rail, Strategy};
use crate::domain::session::Session;

fn upi() -> Method {
    Method {
        name: "upi_demo".into(),
        rail: Rail::Upi {
            vpa: "demo@okbank".into(),
            payee_name: "Demo".into(),
            merchant_code: None,
            personal: false,
        },
        currency: Currency::Inr,
        strategy: Strategy::UniqueAmount {
            pay_to: "demo@okbank".into(),
            step: 1,
            window: 100,
            direction: Direction::Up,
        },
        test: true,
        underpayment_tolerance: 0,
    }
}

fn session(amount: u64) -> Session {
    Session {
        currency: Currency::Inr,
        description: Some("order".into()),
        client_reference_id: Some("ref-1".into()),
        checkout_url: "http://localhost/c/x".into(),
        expires_at_ms: crate::engine::now_ms() + 1_800_000,
        ..super::conformance::session(amount)
    }
}

async fn run(
    store: Arc<RedbStore>,
    conns: usize,
    secs: f64,
    mut next: impl FnMut() -> Option<WriteOp> + Send + 'static,
) -> (usize, Vec<Outcome>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteOp>(conns * 2);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let feeder = tokio::spawn(async move {
        while Instant::now() < deadline {
            let Some(op) = next() else { break };
            if tx.send(op).await.is_err() {
                break;
            }
        }
    });
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (rx, store) = (rx.clone(), store.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let op = rx.lock().await.recv().await;
                let Some(op) = op else { break };
                match super::write(store.as_ref(), op, None).await {
                    Ok(Ok(o)) => out.push(o),
                    other => panic!("{other:?}"),
                }
            }
            out
        }));
    }
    feeder.await.unwrap();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all.len(), all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn writer_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("load.redb"), 600_000).unwrap());
    let secs = 4.0;
    let t0 = Instant::now();
    let (n, created) = run(store.clone(), 64, secs, || {
        let amount = 100 + rand::random_range(0..1_000_000u64);
        Some(WriteOp::CreateSession {
            session: Box::new(session(amount)),
            methods: vec![upi()],
        })
    })
    .await;
    let create_rate = n as f64 / t0.elapsed().as_secs_f64();
    let mut open: Vec<Session> = created
        .into_iter()
        .filter_map(|o| match o {
            Outcome::Session(s) => Some(*s),
            _ => None,
        })
        .collect();
    open.shuffle(&mut rand::rng());
    let mut it = open.into_iter();
    let t1 = Instant::now();
    let (m, _) = run(store.clone(), 64, secs, move || {
        let s = it.next()?;
        let o = &s.payment_options[0];
        Some(WriteOp::Observe(Box::new(Observed {
            destination: o.destination.clone(),
            amount_base: o.payable_base,
            decimals: o.decimals,
            reference: format!("sim:upi:{}", new_id("u")),
            livemode: false,
            utr: Some("123456789012".into()),
            tx_hash: None,
            log_index: None,
            block_number: None,
            confirmations: 0,
            confirmed: true,
            received_at_ms: crate::engine::now_ms(),
            owner: Some(("demo".into(), o.method.clone())),
            only_session: Some(s.id.clone()),
            source: Some("simulate".into()),
            sender: None,
            from: None,
        })))
    })
    .await;
    let match_rate = m as f64 / t1.elapsed().as_secs_f64();
    println!(
        "writer_load: creates {create_rate:.0}/s ({n}), matches {match_rate:.0}/s ({m}), matches / creates = {:.2}",
        match_rate / create_rate
    );
}
