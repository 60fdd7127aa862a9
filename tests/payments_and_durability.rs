//! Allocation under concurrency, payment through the matcher (simulate), expiry and late
//! payments, and durability: SIGKILL after acknowledged writes, SIGTERM under load.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";

async fn create_many(d: &Daemon, key: &str, n: usize, body: Value) -> Vec<(u16, Value)> {
    let c = client();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (c, url, key, body) = (c.clone(), d.url(SESSIONS), key.to_owned(), body.clone());
        tasks.push(tokio::spawn(async move {
            let (st, _, v) = post(&c, &url, &key, body, None).await;
            (st, v)
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("join"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_for_one_amount_get_distinct_payable_amounts() {
    let (d, key) = Daemon::started(&Opts::default());
    // Token method: window 1000 by default, so all 500 fit.
    let results = create_many(&d, &key, 500, json!({"amount": 10_000, "currency": "usd"})).await;
    let mut amounts = BTreeSet::new();
    for (st, v) in &results {
        assert_eq!(*st, 201, "{v}");
        let o = &v["payment_options"][0];
        assert_eq!(o["pay_to"], "0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
        let base: u128 = o["payable_amount_base_units"]
            .as_str()
            .expect("s")
            .parse()
            .expect("n");
        assert!((100_000_000..100_000_000 + 1000).contains(&base), "{base}");
        amounts.insert(base);
    }
    assert_eq!(
        amounts.len(),
        500,
        "every awaiting session has its own payable amount"
    );

    // UPI: window 100, so exactly 100 succeed and the rest are clean 503s.
    let results = create_many(&d, &key, 500, json!({"amount": 20_000, "currency": "inr"})).await;
    let mut upi = BTreeSet::new();
    let mut refused = 0;
    for (st, v) in &results {
        match st {
            201 => {
                upi.insert(
                    v["payment_options"][0]["payable_amount"]
                        .as_str()
                        .expect("s")
                        .to_owned(),
                );
            }
            503 => {
                refused += 1;
                assert_eq!(v["error"]["code"], "no_payment_slot_available");
                assert_eq!(v["error"]["type"], "api_error");
                assert!(v["error"]["message"].as_str().expect("m").contains("upi"));
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(upi.len(), 100);
    assert_eq!(refused, 400);
    assert!(upi.contains("200.00") && upi.contains("200.99"));

    // Reservations are shared across merchants only where the destination is shared: the
    // other merchant's VPA is free at the same amount.
    let other = create_key(&d.config, "other", &[]);
    let c = client();
    let (st, _, v) = post(
        &c,
        &d.url(SESSIONS),
        &other,
        json!({"amount": 20_000, "currency": "inr"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{v}");

    // Canceling one that received nothing frees its slot: with no other left, the next session
    // takes it (late payments matched it until then); then the window is spent again.
    let (first, first_payable) = results
        .iter()
        .find(|(st, _)| *st == 201)
        .map(|(_, v)| {
            (
                v["id"].as_str().expect("id").to_owned(),
                v["payment_options"][0]["payable_amount"].clone(),
            )
        })
        .expect("one");
    let (st, _, _) = post(
        &c,
        &d.url(&format!("{SESSIONS}/{first}/cancel")),
        &key,
        json!({}),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, v) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 20_000, "currency": "inr"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["payment_options"][0]["payable_amount"], first_payable);
    let (st, _, _) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 20_000, "currency": "inr"}),
        None,
    )
    .await;
    assert_eq!(st, 503);
}

#[tokio::test]
async fn simulated_payment_completes_through_the_matcher_with_its_event() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let (_, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 14999, "currency": "inr", "notify_url": "https://shop.example/hook"}),
        None,
    )
    .await;
    let id = s["id"].as_str().expect("id");
    let r = c
        .post(d.url(&format!("/c/{id}/simulate")))
        .send()
        .await
        .expect("sim");
    assert_eq!(r.status().as_u16(), 200);
    let pub_status: Value = r.json().await.expect("json");
    assert_eq!(pub_status["status"], "complete");

    let (_, s) = get(&c, &d.url(&format!("{SESSIONS}/{id}")), &key).await;
    assert_eq!(s["status"], "complete");
    assert_eq!(s["payment_status"], "paid");
    assert_eq!(s["amount_received"], s["amount"]);
    assert!(s["completed_at"].is_string());
    let p = &s["payments"][0];
    assert!(p["id"].as_str().expect("id").starts_with("py_"));
    assert_eq!(p["method"], "upi");
    assert_eq!(p["status"], "confirmed");
    assert_eq!(p["amount"], s["payment_options"][0]["payable_amount"]);
    let utr = p["utr"].as_str().expect("utr");
    assert!(utr.len() == 12 && utr.bytes().all(|b| b.is_ascii_digit()));

    let events = outbox(&c, &d).await;
    let completed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "checkout.session.completed" && e["data"]["object"]["id"] == id)
        .collect();
    assert_eq!(completed.len(), 1, "{events:?}");
    assert_eq!(completed[0]["notify_url"], "https://shop.example/hook");
    assert_eq!(completed[0]["data"]["object"]["status"], "complete");
    let (_, listed) = get(
        &c,
        &d.url("/v1/events?type=checkout.session.completed"),
        &key,
    )
    .await;
    assert_eq!(listed["data"][0]["data"]["object"]["id"], id);

    // A completed session is not cancelable; simulating live sessions is refused.
    let (st, _, _) = post(
        &c,
        &d.url(&format!("{SESSIONS}/{id}/cancel")),
        &key,
        json!({}),
        None,
    )
    .await;
    assert_eq!(st, 409);
    let live = create_key(&d.config, "demo", &["--live"]);
    let (_, _, ls) = post(
        &c,
        &d.url(SESSIONS),
        &live,
        json!({"amount": 100, "currency": "inr"}),
        None,
    )
    .await;
    let r = c
        .post(d.url(&format!("/c/{}/simulate", ls["id"].as_str().expect("id"))))
        .send()
        .await
        .expect("sim");
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn partial_then_full_token_payment() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let (_, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 1000, "currency": "usd"}),
        None,
    )
    .await;
    let id = s["id"].as_str().expect("id");
    let payable: u128 = s["payment_options"][0]["payable_amount_base_units"]
        .as_str()
        .expect("s")
        .parse()
        .expect("n");
    let r = c
        .post(d.url(&format!("/c/{id}/simulate")))
        .json(&json!({"amount": "4.000000"}))
        .send()
        .await
        .expect("sim");
    assert_eq!(r.status().as_u16(), 200);
    let (_, s) = get(&c, &d.url(&format!("{SESSIONS}/{id}")), &key).await;
    assert_eq!(s["status"], "open");
    assert_eq!(s["payment_status"], "partially_paid");
    assert_eq!(s["amount_received"], 400);
    let rest = payable - 4_000_000 + 5;
    let r = c
        .post(d.url(&format!("/c/{id}/simulate")))
        .json(&json!({"method": "usdt_local", "amount": format!("{}.{:06}", rest / 1_000_000, rest % 1_000_000)}))
        .send()
        .await
        .expect("sim");
    assert_eq!(r.status().as_u16(), 200);
    let (_, s) = get(&c, &d.url(&format!("{SESSIONS}/{id}")), &key).await;
    assert_eq!(s["status"], "complete");
    assert_eq!(s["payment_status"], "overpaid");
    let tx = s["payments"][1]["tx_hash"].as_str().expect("tx");
    assert!(tx.starts_with("0x") && tx.len() == 66);
    let types: Vec<String> = outbox(&c, &d)
        .await
        .iter()
        .filter(|e| e["data"]["object"]["id"] == id)
        .map(|e| e["type"].as_str().expect("t").to_owned())
        .collect();
    assert_eq!(
        types,
        vec![
            "checkout.session.partially_paid",
            "checkout.session.completed"
        ]
    );
    let r = c
        .post(d.url(&format!("/c/{id}/simulate")))
        .json(&json!({"amount": "1.1234567"}))
        .send()
        .await
        .expect("sim");
    assert_eq!(r.status().as_u16(), 400, "7 decimals for a 6-decimal token");
}

#[tokio::test]
async fn sweeper_expires_on_time_and_late_payment_is_recorded() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let (_, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 5000, "currency": "inr", "expires_in": 1}),
        None,
    )
    .await;
    let id = s["id"].as_str().expect("id").to_owned();
    let (_, _, keep) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 5000, "currency": "inr", "expires_in": 3600}),
        None,
    )
    .await;
    let mut status = String::new();
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (_, s) = get(&c, &d.url(&format!("{SESSIONS}/{id}")), &key).await;
        status = s["status"].as_str().expect("s").to_owned();
        if status == "expired" {
            break;
        }
    }
    assert_eq!(status, "expired", "expired within ~1 s of expires_at");
    let (_, k) = get(
        &c,
        &d.url(&format!("{SESSIONS}/{}", keep["id"].as_str().expect("id"))),
        &key,
    )
    .await;
    assert_eq!(k["status"], "open", "a session with time left is untouched");
    let expired_events = outbox(&c, &d)
        .await
        .into_iter()
        .filter(|e| {
            e["type"] == "checkout.session.expired" && e["data"]["object"]["id"] == id.as_str()
        })
        .count();
    assert_eq!(expired_events, 1);

    // Money arriving within the grace window is recorded against the expired session.
    let r = c
        .post(d.url(&format!("/c/{id}/simulate")))
        .send()
        .await
        .expect("sim");
    assert_eq!(r.status().as_u16(), 200);
    let (_, s) = get(&c, &d.url(&format!("{SESSIONS}/{id}")), &key).await;
    assert_eq!(s["status"], "expired");
    assert_eq!(s["payment_status"], "paid");
    assert_eq!(s["paid_late"], true);
    assert_eq!(s["payments"][0]["late"], true);
    let late = outbox(&c, &d)
        .await
        .into_iter()
        .filter(|e| {
            e["type"] == "checkout.session.late_payment" && e["data"]["object"]["id"] == id.as_str()
        })
        .count();
    assert_eq!(late, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_after_acknowledged_creates_loses_nothing() {
    let (mut d, key) = Daemon::started(&Opts::default());
    let c = client();
    // A burst of concurrent creates; record exactly what was acknowledged.
    let mut tasks = Vec::new();
    for i in 0..400u64 {
        let (c, url, key) = (c.clone(), d.url(SESSIONS), key.clone());
        tasks.push(tokio::spawn(async move {
            let (st, _, v) = post(
                &c,
                &url,
                &key,
                json!({"amount": 1000 + i, "currency": "inr", "order_id": format!("k{i}")}),
                None,
            )
            .await;
            (st, v)
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        let (st, v) = t.await.expect("join");
        if st == 201 {
            acked.push(v);
        }
    }
    assert_eq!(acked.len(), 400);
    d.kill();
    d.start();
    for v in &acked {
        let id = v["id"].as_str().expect("id");
        let (st, got) = get(&c, &d.url(&format!("{SESSIONS}/{id}")), &key).await;
        assert_eq!(st, 200, "acknowledged session {id} lost after SIGKILL");
        assert_eq!(&got, v);
    }
    // The reservations came back with them: sessions for 10.00..13.99 took the lowest free
    // paisa at or above their amount, so every slot from 10.00 to 10.99 is still held.
    let (st, _, e) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 1000, "currency": "inr"}),
        None,
    )
    .await;
    assert_eq!(st, 503, "{e}");
    let held: BTreeSet<String> = acked
        .iter()
        .map(|v| {
            v["payment_options"][0]["payable_amount"]
                .as_str()
                .expect("s")
                .to_owned()
        })
        .collect();
    assert_eq!(
        held.len(),
        400,
        "no two acknowledged sessions share a payable amount"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_burst_keeps_every_acknowledged_session() {
    let (mut d, key) = Daemon::started(&Opts::default());
    let c = client();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let (c, url, key, stop) = (c.clone(), d.url(SESSIONS), key.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 10_000 {
                i += 1;
                let r = c
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"amount": 100_000 + w * 10_000 + i, "currency": "inr"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => {
                        if let Ok(v) = r.json::<Value>().await {
                            acked.push(v["id"].as_str().unwrap_or_default().to_owned());
                        }
                    }
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    d.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("join"));
    }
    assert!(
        acked.len() > 50,
        "the burst was running when killed ({} acked)",
        acked.len()
    );
    d.start();
    let mut missing = 0;
    for id in &acked {
        let (st, _) = get(&c, &d.url(&format!("{SESSIONS}/{id}")), &key).await;
        if st != 200 {
            missing += 1;
        }
    }
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged sessions lost",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_exits_zero_and_keeps_everything() {
    let (mut d, key) = Daemon::started(&Opts::default());
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let (c, url, key) = (c.clone(), d.url(SESSIONS), key.clone());
        tasks.push(tokio::spawn(async move {
            let (st, _, v) = post(
                &c,
                &url,
                &key,
                json!({"amount": 5000 + i, "currency": "inr"}),
                None,
            )
            .await;
            (st, v)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let code = d.terminate();
    assert_eq!(code, Some(0), "stderr: {}", d.stderr());
    let mut acked = Vec::new();
    for t in tasks {
        if let Ok((201, v)) = t.await {
            acked.push(v);
        }
    }
    d.start();
    for v in &acked {
        let (st, _) = get(
            &c,
            &d.url(&format!("{SESSIONS}/{}", v["id"].as_str().expect("id"))),
            &key,
        )
        .await;
        assert_eq!(st, 200);
    }
}

/// A customer's open live-status stream must not hold the daemon at SIGTERM (systemd would kill
/// it after its stop timeout): the stream ends and the daemon exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_open_status_stream_exits_promptly() {
    let (mut d, key) = Daemon::started(&Opts::default());
    let c = client();
    let (st, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 4200, "currency": "inr"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{s}");
    let id = s["id"].as_str().expect("id").to_owned();
    let mut stream = c
        .get(d.url(&format!("/c/{id}/events")))
        .send()
        .await
        .expect("events");
    assert_eq!(stream.status().as_u16(), 200);
    let first = stream.chunk().await.expect("chunk").expect("first event");
    assert!(String::from_utf8_lossy(&first).contains("status"));
    let started = std::time::Instant::now();
    assert_eq!(d.terminate(), Some(0), "stderr: {}", d.stderr());
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(3),
        "SIGTERM took {took:?} with a status stream open"
    );
}
