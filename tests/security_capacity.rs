//! Issue 13, items 4 and 8, against the real binary: nobody can exhaust a merchant's payment
//! slots (test mode has capacity of its own, ended sessions free theirs, the 503 says why and
//! what fixes it, a busy merchant gets 1,000 live sessions at one price), and unmatched credits
//! stay visible (newest first, paginated per merchant and mode, ignored alerts apart, retention).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::receiver::Receiver;
use common::*;
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";
const CREDITS: &str = "/v1/upi/credits";
const PERMS: &str = "sessions:read,sessions:write,credits:write";

/// A merchant whose UPI method has `window` steps per price.
fn merchant(id: &str, window: u32) -> String {
    format!(
        "\n[[merchants]]\nid = \"{id}\"\nname = \"{id}\"\n\n[merchants.methods.upi]\nvpa = \"{id}@okbank\"\nwindow = {window}\n"
    )
}

async fn create(c: &reqwest::Client, d: &Daemon, key: &str, amount: u64) -> (u16, Value) {
    let (st, _, v) = post(
        c,
        &d.url(SESSIONS),
        key,
        json!({"amount": amount, "currency": "inr"}),
        None,
    )
    .await;
    (st, v)
}

async fn created(c: &reqwest::Client, d: &Daemon, key: &str, amount: u64) -> (String, String) {
    let (st, v) = create(c, d, key, amount).await;
    assert_eq!(st, 201, "{v}");
    (
        v["id"].as_str().expect("id").to_owned(),
        v["payment_options"][0]["payable_amount"]
            .as_str()
            .expect("payable")
            .to_owned(),
    )
}

async fn end(c: &reqwest::Client, d: &Daemon, key: &str, id: &str, action: &str) {
    let (st, _, v) = post(
        c,
        &d.url(&format!("{SESSIONS}/{id}/{action}")),
        key,
        json!({}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{action} {id}: {v}");
}

async fn session(c: &reqwest::Client, d: &Daemon, key: &str, id: &str) -> Value {
    let (st, v) = get(c, &d.url(&format!("{SESSIONS}/{id}")), key).await;
    assert_eq!(st, 200, "{v}");
    v
}

async fn manual_credit(
    c: &reqwest::Client,
    d: &Daemon,
    key: &str,
    amount: &str,
    utr: &str,
) -> Value {
    let (st, _, v) = post(
        c,
        &d.url(CREDITS),
        key,
        json!({"source": "manual", "amount": amount, "utr": utr}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    v
}

async fn metrics(c: &reqwest::Client, d: &Daemon) -> String {
    c.get(format!("{}/metrics", d.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test]
async fn test_sessions_never_take_live_capacity_and_the_503_names_limit_and_fix() {
    let mut d = Daemon::prepare(&Opts::default());
    let test = create_key(&d.config, "demo", &["--permissions", PERMS]);
    let live = create_key(&d.config, "demo", &["--live", "--permissions", PERMS]);
    d.start();
    let c = client();
    // A test-key holder takes every one of the 100 default UPI slots at ₹100.00 …
    for _ in 0..100 {
        created(&c, &d, &test, 10_000).await;
    }
    let (st, e) = create(&c, &d, &test, 10_000).await;
    assert_eq!(st, 503, "{e}");
    assert_eq!(e["error"]["code"], "no_payment_slot_available");
    let msg = e["error"]["message"].as_str().expect("message");
    for part in [
        "all 100 payable amounts of this price (100 steps of 0.01)",
        "grace period",
        "raise `window` of method upi",
    ] {
        assert!(msg.contains(part), "the 503 says {part:?}: {msg}");
    }
    // … and a live checkout at that price is still served, at the price itself.
    let (_, payable) = created(&c, &d, &live, 10_000).await;
    assert_eq!(payable, "100.00", "test sessions hold nothing in live mode");
    let m = metrics(&c, &d).await;
    assert!(
        m.contains(
            r#"paywatch_payment_slots_in_use{method="upi",livemode="false",price="10000"} 100"#
        ),
        "{m}"
    );
    assert!(
        m.contains(
            r#"paywatch_payment_slots_capacity{method="upi",livemode="true",price="10000"} 100"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"paywatch_payment_slots_exhausted_total{method="upi"} 1"#),
        "{m}"
    );

    // The console shows each price's capacity.
    let mut op = create_operator(&d.config, "ops", "viewer");
    let pair = console_login(&c, &d, &mut op).await;
    let page = c
        .get(format!("{}/console/credits", d.admin))
        .header("cookie", &pair)
        .send()
        .await
        .expect("console")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains(
            "<tr><td>upi</td><td>test</td><td>100.00</td><td>100</td><td>0</td><td>100</td></tr>"
        ),
        "{page}"
    );

    // Test money (simulate) still pays the test session holding its amount, live money the live.
    let (tid, tpay) = created(&c, &d, &test, 20_000).await;
    let (lid, lpay) = created(&c, &d, &live, 20_000).await;
    assert_eq!((tpay.as_str(), lpay.as_str()), ("200.00", "200.00"));
    let r = c
        .post(d.url(&format!("/c/{tid}/simulate")))
        .json(&json!({}))
        .send()
        .await
        .expect("simulate");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(session(&c, &d, &test, &tid).await["status"], "complete");
    assert_eq!(session(&c, &d, &live, &lid).await["status"], "open");
    let r = manual_credit(&c, &d, &live, "200.00", "813000000001").await;
    assert_eq!(r["outcome"], "matched", "{r}");
    assert_eq!(r["session"], lid.as_str());

    // A restart rebuilds both namespaces as they were.
    d.terminate();
    d.start();
    let (st, e) = create(&c, &d, &test, 10_000).await;
    assert_eq!(st, 503, "the 100 test holds survive a restart: {e}");
    let (_, payable) = created(&c, &d, &live, 10_000).await;
    assert_eq!(payable, "100.01", "and the live one too");
}

#[tokio::test]
async fn ended_sessions_free_their_slots_and_late_money_goes_to_the_latest_holder() {
    let mut d = Daemon::prepare(&Opts {
        extra: merchant("tiny", 3),
        ..Opts::default()
    });
    let live = create_key(&d.config, "tiny", &["--live", "--permissions", PERMS]);
    d.start();
    let c = client();
    let (a, pa) = created(&c, &d, &live, 10_000).await;
    let (b, pb) = created(&c, &d, &live, 10_000).await;
    assert_eq!((pa.as_str(), pb.as_str()), ("100.00", "100.01"));
    end(&c, &d, &live, &a, "cancel").await;
    // A fresh slot goes before a freed one, so A's late payment still finds A.
    let (cc, pc) = created(&c, &d, &live, 10_000).await;
    assert_eq!(pc, "100.02");
    let r = manual_credit(&c, &d, &live, "100.00", "813000000010").await;
    assert_eq!(r["session"], a.as_str(), "late money to a freed slot: {r}");
    let got = session(&c, &d, &live, &a).await;
    assert_eq!(got["status"], "canceled");
    assert_eq!(got["paid_late"], true);
    // A, now paid, keeps its slot for its grace; B and C hold theirs: the window is spent.
    let (st, e) = create(&c, &d, &live, 10_000).await;
    assert_eq!(st, 503, "{e}");

    // Sessions that ended with nothing free their slots, least recently released first.
    end(&c, &d, &live, &b, "expire").await;
    end(&c, &d, &live, &cc, "cancel").await;
    let (dd, pd) = created(&c, &d, &live, 10_000).await;
    assert_eq!(pd, "100.01", "B's slot, released before C's");
    let (e_id, pe) = created(&c, &d, &live, 10_000).await;
    assert_eq!(pe, "100.02");
    let (st, _) = create(&c, &d, &live, 10_000).await;
    assert_eq!(st, 503, "nothing left to reuse");

    // Money to a reused slot goes to its most recent holder, never to the earlier one.
    let r = manual_credit(&c, &d, &live, "100.01", "813000000011").await;
    assert_eq!(r["session"], dd.as_str(), "{r}");
    assert_eq!(session(&c, &d, &live, &dd).await["status"], "complete");
    let got = session(&c, &d, &live, &b).await;
    assert_eq!(got["status"], "expired");
    assert_eq!(got["payment_status"], "unpaid");
    let m = metrics(&c, &d).await;
    assert!(m.contains("paywatch_payment_slots_reused_total 2"), "{m}");

    // A restart rebuilds the same holders and the same freed slots.
    end(&c, &d, &live, &e_id, "cancel").await;
    d.terminate();
    d.start();
    let (_, pf) = created(&c, &d, &live, 10_000).await;
    assert_eq!(pf, "100.02", "E's freed slot survives a restart");
    let (st, _) = create(&c, &d, &live, 10_000).await;
    assert_eq!(st, 503, "A's and D's paid slots stay held after a restart");
}

#[tokio::test]
async fn a_thousand_live_sessions_at_one_price_get_distinct_amounts() {
    // The documented setting for a busy UPI merchant: window = 1000 (payable up to ₹9.99 above
    // the price). Test sessions at the same price first, which must not count.
    let mut d = Daemon::prepare(&Opts {
        extra: merchant("busy", 1000),
        ..Opts::default()
    });
    let test = create_key(&d.config, "busy", &["--permissions", PERMS]);
    let live = create_key(&d.config, "busy", &["--live", "--permissions", PERMS]);
    d.start();
    let c = client();
    for _ in 0..100 {
        created(&c, &d, &test, 49_900).await;
    }
    let started = std::time::Instant::now();
    let mut amounts = BTreeSet::new();
    for chunk in 0..50 {
        let batch: Vec<_> = (0..20).map(|_| created(&c, &d, &live, 49_900)).collect();
        for (_, p) in futures_util::future::join_all(batch).await {
            amounts.insert(p);
        }
        assert_eq!(
            amounts.len(),
            (chunk + 1) * 20,
            "every payable amount is distinct"
        );
    }
    let took = started.elapsed();
    assert_eq!(amounts.len(), 1000);
    assert_eq!(amounts.first().map(String::as_str), Some("499.00"));
    assert_eq!(amounts.last().map(String::as_str), Some("508.99"));
    eprintln!("1000 live creates at one price took {took:?}");
    let (st, e) = create(&c, &d, &live, 49_900).await;
    assert_eq!(st, 503, "{e}");
    let m = metrics(&c, &d).await;
    assert!(
        m.contains(
            r#"paywatch_payment_slots_in_use{method="upi",livemode="true",price="49900"} 1000"#
        ),
        "{m}"
    );
}

const OTP: &str = "123456 is your OTP for a transaction of Rs.500.00. Do not share it.";

async fn ignored_alert(c: &reqwest::Client, d: &Daemon, key: &str) {
    let (st, _, v) = post(
        c,
        &d.url(CREDITS),
        key,
        json!({"source": "sms", "sender": "VM-HDFCBK", "text": OTP}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["outcome"], "ignored", "{v}");
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn credits_are_paginated_newest_first_per_merchant_and_mode_apart_from_ignored_alerts() {
    let mut d = Daemon::prepare(&Opts::default());
    let live = create_key(&d.config, "demo", &["--live", "--permissions", PERMS]);
    let test = create_key(&d.config, "demo", &["--permissions", PERMS]);
    let other = create_key(&d.config, "other", &["--live", "--permissions", PERMS]);
    d.start();
    let c = client();
    let mut made = Vec::new();
    for i in 0..25 {
        let r = manual_credit(
            &c,
            &d,
            &live,
            &format!("1.{i:02}"),
            &format!("8140000000{i:02}"),
        )
        .await;
        assert_eq!(r["outcome"], "unmatched", "{r}");
        made.push(r["credit"]["id"].as_str().expect("credit id").to_owned());
    }
    for i in 0..3 {
        manual_credit(
            &c,
            &d,
            &test,
            &format!("2.{i:02}"),
            &format!("8150000000{i:02}"),
        )
        .await;
    }
    let r = manual_credit(&c, &d, &other, "3.00", "816000000000").await;
    let others = r["credit"]["id"].as_str().expect("id").to_owned();
    // Alerts that are not money, newer than every credit, in numbers.
    for _ in 0..30 {
        ignored_alert(&c, &d, &live).await;
    }

    // Newest first, ten at a time, every credit exactly once, no ignored alert among them.
    made.reverse();
    let mut seen = Vec::new();
    let mut url = "/v1/credits?limit=10".to_owned();
    loop {
        let (st, page) = get(&c, &d.url(&url), &live).await;
        assert_eq!(st, 200, "{page}");
        seen.extend(ids(&page));
        if page["has_more"] != true {
            break;
        }
        url = format!(
            "/v1/credits?limit=10&starting_after={}",
            seen.last().unwrap()
        );
    }
    assert_eq!(seen, made, "every credit once, newest first");
    let (_, unmatched) = get(&c, &d.url("/v1/credits?status=unmatched&limit=100"), &live).await;
    assert_eq!(ids(&unmatched), made);
    let (_, ignored) = get(&c, &d.url("/v1/credits?status=ignored&limit=100"), &live).await;
    assert_eq!(ignored["data"].as_array().map(Vec::len), Some(30));
    assert_eq!(ignored["data"][0]["status"], "ignored");
    let (_, ign2) = get(
        &c,
        &d.url(&format!(
            "/v1/credits?status=ignored&limit=100&starting_after={}",
            ignored["data"][9]["id"].as_str().unwrap()
        )),
        &live,
    )
    .await;
    assert_eq!(ign2["data"].as_array().map(Vec::len), Some(20));

    // Each merchant and mode sees its own only, and cannot page from another's credit.
    let (_, t) = get(&c, &d.url("/v1/credits?limit=100"), &test).await;
    assert_eq!(t["data"].as_array().map(Vec::len), Some(3));
    assert!(
        t["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["livemode"] == false)
    );
    let (_, o) = get(&c, &d.url("/v1/credits?limit=100"), &other).await;
    assert_eq!(ids(&o), vec![others.clone()]);
    let (st, e) = get(
        &c,
        &d.url(&format!("/v1/credits?starting_after={others}")),
        &live,
    )
    .await;
    assert_eq!(st, 400, "{e}");
    assert_eq!(e["error"]["param"], "starting_after");

    // The operator's list is newest first too, and holds credits only.
    let r = c
        .get(format!("{}/admin/v1/credits", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin");
    let all: Value = r.json().await.expect("json");
    let all_ids = ids(&all);
    assert_eq!(all_ids.len(), 29, "{all}");
    assert_eq!(all_ids[0], others, "newest first");

    // A restart keeps the index.
    d.terminate();
    d.start();
    let (_, again) = get(&c, &d.url("/v1/credits?limit=5"), &live).await;
    assert_eq!(ids(&again), made[..5].to_vec());
}

#[tokio::test]
async fn retention_prunes_old_ignored_alerts_and_delivered_events_but_keeps_the_rest() {
    let mut d = Daemon::prepare(&Opts {
        extra: "\n[webhooks]\nallow_private_targets = true\nretry_schedule_secs = [1]\n\n[retention]\nignored_alert_secs = 4\nevent_secs = 4\n".into(),
        ..Opts::default()
    });
    let test = create_key(
        &d.config,
        "demo",
        &[
            "--permissions",
            "sessions:read,sessions:write,credits:write,events:read",
        ],
    );
    d.start();
    let c = client();
    let ok = Receiver::start(0, &[]).await;
    let dead = Receiver::start(0, &[500; 10]).await;
    let mut paid = Vec::new();
    for url in [&ok.url, &dead.url] {
        let (st, _, s) = post(
            &c,
            &d.url(SESSIONS),
            &test,
            json!({"amount": 14999, "currency": "inr", "notify_url": url}),
            None,
        )
        .await;
        assert_eq!(st, 201, "{s}");
        let id = s["id"].as_str().expect("id").to_owned();
        let r = c
            .post(d.url(&format!("/c/{id}/simulate")))
            .send()
            .await
            .expect("simulate");
        assert_eq!(r.status().as_u16(), 200);
        paid.push(id);
    }
    ignored_alert(&c, &d, &test).await;
    let unmatched = manual_credit(&c, &d, &test, "9.99", "817000000001").await;
    assert_eq!(unmatched["outcome"], "unmatched");
    let delivered = ok.wait_for(10, "the delivery", |g| !g.is_empty()).await[0].json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let failing = dead.wait_for(10, "two attempts", |g| g.len() >= 2).await[0].json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (_, ign) = get(&c, &d.url("/v1/credits?status=ignored"), &test).await;
    assert_eq!(ign["data"].as_array().map(Vec::len), Some(1));

    // Past the retention: the ignored alert and the delivered event go, nothing else.
    let mut gone = false;
    for _ in 0..150 {
        let (_, ign) = get(&c, &d.url("/v1/credits?status=ignored"), &test).await;
        let (st, _) = get(&c, &d.url(&format!("/v1/events/{delivered}")), &test).await;
        if ign["data"].as_array().is_some_and(Vec::is_empty) && st == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "the ignored alert and the delivered event were pruned"
    );
    let (st, e) = get(&c, &d.url(&format!("/v1/events/{failing}")), &test).await;
    assert_eq!(st, 200, "an event not delivered is kept: {e}");
    let (_, cr) = get(&c, &d.url("/v1/credits"), &test).await;
    assert_eq!(
        ids(&cr),
        vec![unmatched["credit"]["id"].as_str().unwrap().to_owned()]
    );
    for id in &paid {
        assert_eq!(session(&c, &d, &test, id).await["status"], "complete");
    }
}

#[tokio::test]
async fn a_pool_address_freed_by_an_unpaid_session_is_reused_and_the_503_says_what_to_add() {
    let mut d = Daemon::prepare(&Opts {
        extra: "\n[[merchants]]\nid = \"pool\"\nname = \"pool\"\n\n[merchants.methods.upi]\nvpa = \"pool@okbank\"\nstrategy = \"address_pool\"\npay_to_pool = [\"pool1@okbank\"]\n".into(),
        ..Opts::default()
    });
    let live = create_key(&d.config, "pool", &["--live", "--permissions", PERMS]);
    d.start();
    let c = client();
    let (a, _) = created(&c, &d, &live, 10_000).await;
    let (st, e) = create(&c, &d, &live, 25_000).await;
    assert_eq!(st, 503, "{e}");
    let msg = e["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("add addresses to pay_to_pool of method upi"),
        "{msg}"
    );
    end(&c, &d, &live, &a, "cancel").await;
    let (st, v) = create(&c, &d, &live, 25_000).await;
    assert_eq!(st, 201, "the canceled session's address is reused: {v}");
    assert_eq!(v["payment_options"][0]["pay_to"], "pool1@okbank");
}
