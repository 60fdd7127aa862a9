//! Refunds, the balance and returned credits against the real binary: the amount check holds
//! under concurrent requests, the ledger always equals what GET sessions and refunds add up to,
//! and refund events reach a real webhook receiver.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::receiver::Receiver;
use common::*;
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";

fn opts() -> Opts {
    Opts {
        extra: "\n[webhooks]\nallow_private_targets = true\nretry_schedule_secs = [1, 1, 1, 1]\n"
            .into(),
        ..Opts::default()
    }
}

async fn paid_session(c: &reqwest::Client, d: &Daemon, key: &str, body: Value) -> Value {
    let (st, _, s) = post(c, &d.url(SESSIONS), key, body.clone(), None).await;
    assert_eq!(st, 201, "{s}");
    let id = s["id"].as_str().unwrap();
    let method = body["payment_methods"][0].as_str().unwrap_or("upi");
    let r = c
        .post(d.url(&format!("/c/{id}/simulate")))
        .json(&json!({"method": method}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let (st, s) = get(c, &d.url(&format!("{SESSIONS}/{id}")), key).await;
    assert_eq!(st, 200);
    assert_eq!(s["status"], "complete", "{s}");
    s
}

fn base_units(s: &Value) -> u128 {
    s["payments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"] == "confirmed")
        .map(|p| {
            p["amount_base_units"]
                .as_str()
                .unwrap()
                .parse::<u128>()
                .unwrap()
        })
        .sum()
}

async fn admin_post(c: &reqwest::Client, d: &Daemon, path: &str, body: Value) -> (u16, Value) {
    let r = c
        .post(format!("{}{path}", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn units(v: &str, decimals: u32) -> u128 {
    let (w, f) = v.split_once('.').unwrap_or((v, ""));
    let mut frac = f.to_owned();
    while frac.len() < decimals as usize {
        frac.push('0');
    }
    format!("{w}{frac}").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refunds_never_exceed_what_was_received() {
    let (d, key) = Daemon::started(&opts());
    let c = client();
    let s = paid_session(
        &c,
        &d,
        &key,
        json!({"amount": 100_000, "currency": "inr", "payment_methods": ["upi"]}),
    )
    .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let received = base_units(&s);
    assert!(received >= 100_000);
    // 20 requests of 10% and 20 of 7%, all at once.
    let ten = received / 10;
    let seven = received * 7 / 100;
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let amount = if i % 2 == 0 { ten } else { seven };
        let c = c.clone();
        let url = d.url("/v1/refunds");
        let key = key.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"session": id, "amount": format!("{}.{:02}", amount / 100, amount % 100), "reason": format!("r{i}")});
            let (st, _, v) = post(&c, &url, &key, body, None).await;
            (amount, st, v)
        }));
    }
    let mut ok_sum = 0u128;
    let mut ok = 0;
    let mut refused = Vec::new();
    for t in tasks {
        let (amount, st, v) = t.await.unwrap();
        match st {
            201 => {
                assert_eq!(v["status"], "pending");
                assert_eq!(v["amount_base_units"], amount.to_string());
                assert!(v["id"].as_str().unwrap().starts_with("re_"));
                ok_sum += amount;
                ok += 1;
            }
            409 => {
                assert_eq!(v["error"]["code"], "refund_exceeds_received", "{v}");
                assert_eq!(v["error"]["type"], "invalid_request_error");
                refused.push(amount);
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(ok_sum <= received, "refunded {ok_sum} of {received}");
    // Each refused request asked for more than was left at the end (so it was left at its time).
    let left = received - ok_sum;
    assert!(!refused.is_empty());
    for a in &refused {
        assert!(*a > left, "a refund of {a} was refused with {left} left");
    }
    assert!(ok >= 10, "only {ok} refunds succeeded");
    // The store agrees: the session's refunds, and the balance.
    let (st, list) = get(
        &c,
        &d.url(&format!("/v1/refunds?session={id}&limit=100")),
        &key,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), ok);
    let (_, bal) = get(&c, &d.url("/v1/balance"), &key).await;
    let upi = bal["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == "upi")
        .unwrap()
        .clone();
    assert_eq!(units(upi["pending_refunds"].as_str().unwrap(), 2), ok_sum);
    assert_eq!(units(upi["available"].as_str().unwrap(), 2), left);
    // Nothing more fits than what is left; a failed refund frees its amount again.
    let (st, _, v) = post(
        &c,
        &d.url("/v1/refunds"),
        &key,
        json!({"session": id, "amount": format!("{}.{:02}", (left + 1) / 100, (left + 1) % 100)}),
        None,
    )
    .await;
    assert_eq!(st, 409, "{v}");
    let first = list["data"][0]["id"].as_str().unwrap().to_owned();
    let first_amount: u128 = list["data"][0]["amount_base_units"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (st, v) = admin_post(
        &c,
        &d,
        &format!("/admin/v1/refunds/{first}/fail"),
        json!({"reason": "customer VPA closed"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "failed");
    // Default amount: everything left.
    let (st, _, v) = post(
        &c,
        &d.url("/v1/refunds"),
        &key,
        json!({"session": id}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        v["amount_base_units"]
            .as_str()
            .unwrap()
            .parse::<u128>()
            .unwrap(),
        left + first_amount
    );
    let (st, _, v) = post(
        &c,
        &d.url("/v1/refunds"),
        &key,
        json!({"session": id}),
        None,
    )
    .await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"]["code"], "refund_exceeds_received");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_refund_requests_get_specific_errors_and_change_nothing() {
    let (d, key) = Daemon::started(&opts());
    let c = client();
    let s = paid_session(
        &c,
        &d,
        &key,
        json!({"amount": 5_000, "currency": "inr", "payment_methods": ["upi"]}),
    )
    .await;
    let id = s["id"].as_str().unwrap();
    let (st, _, unpaid) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 700, "currency": "inr"}),
        None,
    )
    .await;
    assert_eq!(st, 201);
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (json!({}), 400, "parameter_missing", Some("session")),
        (
            json!({"session": 5}),
            400,
            "parameter_invalid",
            Some("session"),
        ),
        (
            json!({"session": "cs_nope"}),
            404,
            "resource_missing",
            Some("session"),
        ),
        (
            json!({"session": unpaid["id"]}),
            409,
            "session_not_paid",
            None,
        ),
        (
            json!({"session": id, "amount": "-1"}),
            400,
            "parameter_invalid",
            Some("amount"),
        ),
        (
            json!({"session": id, "amount": "0"}),
            400,
            "parameter_invalid",
            Some("amount"),
        ),
        (
            json!({"session": id, "amount": "1.001"}),
            400,
            "parameter_invalid",
            Some("amount"),
        ),
        (
            json!({"session": id, "amount": 1.5}),
            400,
            "parameter_invalid",
            Some("amount"),
        ),
        (
            json!({"session": id, "amount": "99999"}),
            409,
            "refund_exceeds_received",
            None,
        ),
        (
            json!({"session": id, "method": "usdt_local"}),
            400,
            "parameter_invalid",
            Some("method"),
        ),
        (
            json!({"session": id, "colour": "red"}),
            400,
            "parameter_unknown",
            Some("colour"),
        ),
        (
            json!({"session": id, "metadata": {"a": 1}}),
            400,
            "parameter_invalid",
            Some("metadata[a]"),
        ),
    ];
    for (body, status, code, param) in cases {
        let (st, _, v) = post(&c, &d.url("/v1/refunds"), &key, body.clone(), None).await;
        assert_eq!(st, status, "{body} → {v}");
        assert_eq!(v["error"]["code"], code, "{body} → {v}");
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{body} → {v}");
        }
    }
    let (_, list) = get(&c, &d.url(&format!("/v1/refunds?session={id}")), &key).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
    // Another merchant's key sees neither the session nor the refunds.
    let other = create_key_running(&c, &d, "other").await;
    let (st, _, v) = post(
        &c,
        &d.url("/v1/refunds"),
        &other,
        json!({"session": id}),
        None,
    )
    .await;
    assert_eq!(st, 404, "{v}");
    // Idempotency: the same request twice is one refund; a different body under the key is 409.
    let body = json!({"session": id, "amount": "10.00", "reason": "damaged"});
    let (st1, _, a) = post(&c, &d.url("/v1/refunds"), &key, body.clone(), Some("rf-1")).await;
    let (st2, h2, b) = post(&c, &d.url("/v1/refunds"), &key, body, Some("rf-1")).await;
    assert_eq!((st1, st2), (201, 201));
    assert_eq!(a["id"], b["id"]);
    assert_eq!(h2.get("idempotent-replayed").unwrap(), "true");
    let (st, _, v) = post(
        &c,
        &d.url("/v1/refunds"),
        &key,
        json!({"session": id, "amount": "11.00"}),
        Some("rf-1"),
    )
    .await;
    assert_eq!(st, 409);
    assert_eq!(v["error"]["code"], "idempotency_key_reused");
    let rid = a["id"].as_str().unwrap();
    // The operator's actions validate too.
    for (body, code, param) in [
        (json!({}), "parameter_missing", "utr"),
        (json!({"utr": "12"}), "parameter_invalid", "utr"),
        (json!({"tx_hash": "0x12"}), "parameter_invalid", "tx_hash"),
    ] {
        let (st, v) = admin_post(&c, &d, &format!("/admin/v1/refunds/{rid}/succeed"), body).await;
        assert_eq!(st, 400, "{v}");
        assert_eq!(v["error"]["code"], code);
        assert_eq!(v["error"]["param"], param);
    }
    let (st, v) = admin_post(&c, &d, &format!("/admin/v1/refunds/{rid}/fail"), json!({})).await;
    assert_eq!((st, v["error"]["param"].clone()), (400, json!("reason")));
    let (st, v) = admin_post(
        &c,
        &d,
        "/admin/v1/refunds/re_missing/succeed",
        json!({"utr": "412345678901"}),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (404, json!("resource_missing"))
    );
    let (st, v) = admin_post(
        &c,
        &d,
        &format!("/admin/v1/refunds/{rid}/succeed"),
        json!({"utr": "412345678901"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["utr"], "412345678901");
    let (st, v) = admin_post(
        &c,
        &d,
        &format!("/admin/v1/refunds/{rid}/fail"),
        json!({"reason": "late"}),
    )
    .await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"]["code"], "refund_not_pending");
    let (st, v) = get(&c, &d.url(&format!("/v1/refunds/{rid}")), &key).await;
    assert_eq!(st, 200);
    assert_eq!(v["status"], "succeeded");
}

async fn create_key_running(c: &reqwest::Client, d: &Daemon, merchant: &str) -> String {
    let (st, v) = admin_post(
        c,
        d,
        "/admin/v1/keys",
        json!({"merchant": merchant, "permissions": "*"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    v["secret"].as_str().unwrap().to_owned()
}

/// Recomputes the balance from what the API lists: confirmed payments of every session, and
/// every refund by status; per method, in base units.
async fn recompute(c: &reqwest::Client, d: &Daemon, key: &str) -> BTreeMap<String, [u128; 3]> {
    let mut out: BTreeMap<String, [u128; 3]> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = d.url(&format!("{SESSIONS}?limit=100"));
        if let Some(a) = &after {
            url.push_str(&format!("&starting_after={a}"));
        }
        let (_, page) = get(c, &url, key).await;
        for s in page["data"].as_array().unwrap() {
            for p in s["payments"].as_array().unwrap() {
                if p["status"] == "confirmed" {
                    out.entry(p["method"].as_str().unwrap().into()).or_default()[0] +=
                        p["amount_base_units"]
                            .as_str()
                            .unwrap()
                            .parse::<u128>()
                            .unwrap();
                }
            }
        }
        after = page["data"]
            .as_array()
            .unwrap()
            .last()
            .map(|s| s["id"].as_str().unwrap().to_owned());
        if page["has_more"] != true {
            break;
        }
    }
    let mut after: Option<String> = None;
    loop {
        let mut url = d.url("/v1/refunds?limit=100");
        if let Some(a) = &after {
            url.push_str(&format!("&starting_after={a}"));
        }
        let (_, page) = get(c, &url, key).await;
        for r in page["data"].as_array().unwrap() {
            let slot = match r["status"].as_str().unwrap() {
                "succeeded" => 1,
                "pending" => 2,
                _ => continue,
            };
            out.entry(r["method"].as_str().unwrap().into()).or_default()[slot] +=
                r["amount_base_units"]
                    .as_str()
                    .unwrap()
                    .parse::<u128>()
                    .unwrap();
        }
        after = page["data"]
            .as_array()
            .unwrap()
            .last()
            .map(|s| s["id"].as_str().unwrap().to_owned());
        if page["has_more"] != true {
            break;
        }
    }
    out
}

async fn check_balance(c: &reqwest::Client, d: &Daemon, key: &str) {
    let want = recompute(c, d, key).await;
    let (st, bal) = get(c, &d.url("/v1/balance"), key).await;
    assert_eq!(st, 200);
    let mut got: BTreeMap<String, [u128; 3]> = BTreeMap::new();
    for m in bal["methods"].as_array().unwrap() {
        let dec = if m["currency"] == "inr" { 2 } else { 6 };
        let f = |k: &str| units(m[k].as_str().unwrap(), dec);
        let row = [
            f("received_total"),
            f("refunded_total"),
            f("pending_refunds"),
        ];
        assert_eq!(f("available"), row[0] - row[1] - row[2], "{m}");
        if row != [0, 0, 0] {
            got.insert(m["method"].as_str().unwrap().into(), row);
        }
    }
    assert_eq!(got, want, "ledger {bal} vs recomputed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn balance_always_equals_payments_and_refunds_and_events_reach_a_receiver() {
    let (mut d, key) = Daemon::started(&opts());
    let c = client();
    let rx = Receiver::start(0, &[]).await;
    let (st, _, ep) = post(
        &c,
        &d.url("/v1/webhook_endpoints"),
        &key,
        json!({"url": rx.url, "events": ["refund.created", "refund.succeeded", "refund.failed"]}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{ep}");
    check_balance(&c, &d, &key).await;
    let mut refunds = Vec::new();
    for i in 0..12u64 {
        let method = if i % 3 == 0 { "usdt_local" } else { "upi" };
        let currency = if method == "upi" { "inr" } else { "usd" };
        let s = paid_session(
            &c,
            &d,
            &key,
            json!({"amount": 1_000 + i * 37, "currency": currency, "payment_methods": [method]}),
        )
        .await;
        if i % 2 == 0 {
            let (st, _, r) = post(
                &c,
                &d.url("/v1/refunds"),
                &key,
                json!({"session": s["id"], "amount": "1.5", "reason": "partial"}),
                None,
            )
            .await;
            assert_eq!(st, 201, "{r}");
            refunds.push(r);
        }
        check_balance(&c, &d, &key).await;
    }
    // A partial payment counts as received too (and is refundable).
    let (_, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 9_000, "currency": "inr"}),
        None,
    )
    .await;
    let r = c
        .post(d.url(&format!("/c/{}/simulate", s["id"].as_str().unwrap())))
        .json(&json!({"amount": "20.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    check_balance(&c, &d, &key).await;
    for (i, r) in refunds.iter().enumerate() {
        let id = r["id"].as_str().unwrap();
        let (path, body) = match (i % 3, r["method"].as_str().unwrap()) {
            (0, "upi") => ("succeed", json!({"utr": format!("4123456789{i:02}")})),
            (0, _) => (
                "succeed",
                json!({"tx_hash": format!("0x{}", "ab".repeat(32))}),
            ),
            (1, _) => ("fail", json!({"reason": "bounced"})),
            _ => continue,
        };
        let (st, v) = admin_post(&c, &d, &format!("/admin/v1/refunds/{id}/{path}"), body).await;
        assert_eq!(st, 200, "{v}");
        check_balance(&c, &d, &key).await;
    }
    // The ledger is durable: the same after a kill and restart.
    let (_, before) = get(&c, &d.url("/v1/balance"), &key).await;
    d.kill();
    d.start();
    let (_, after) = get(&c, &d.url("/v1/balance"), &key).await;
    assert_eq!(before, after);
    check_balance(&c, &d, &key).await;
    assert_eq!(after["currencies"].as_array().unwrap().len(), 2, "{after}");
    // Every refund event reached the receiver, signed, with the refund as its object.
    let created = refunds.len();
    let got = rx
        .wait_for(20, "refund events", |g| {
            g.iter()
                .filter(|r| r.json()["type"] == "refund.created")
                .count()
                == created
                && g.iter().any(|r| r.json()["type"] == "refund.succeeded")
                && g.iter().any(|r| r.json()["type"] == "refund.failed")
        })
        .await;
    for r in &got {
        assert!(r.headers.contains_key("webhook-signature"));
        let v = r.json();
        assert_eq!(v["data"]["object"]["object"], "refund", "{v}");
        assert!(
            v["data"]["object"]["id"]
                .as_str()
                .unwrap()
                .starts_with("re_")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_credit_can_be_returned_once() {
    let (d, key) = Daemon::started(&opts());
    let c = client();
    let (st, _, v) = post(
        &c,
        &d.url("/v1/upi/credits"),
        &key,
        json!({"source": "manual", "amount": "77.10", "utr": "512345678901"}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["outcome"], "unmatched");
    let id = v["credit"]["id"].as_str().unwrap();
    let (st, e) = admin_post(&c, &d, &format!("/admin/v1/credits/{id}/return"), json!({})).await;
    assert_eq!((st, e["error"]["param"].clone()), (400, json!("reference")));
    let (st, v) = admin_post(
        &c,
        &d,
        &format!("/admin/v1/credits/{id}/return"),
        json!({"reference": "UTR 612345678901"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "returned");
    let (st, v) = admin_post(
        &c,
        &d,
        &format!("/admin/v1/credits/{id}/return"),
        json!({"reference": "again"}),
    )
    .await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"]["code"], "credit_not_unmatched");
    let (_, list) = get(&c, &d.url("/v1/credits?status=returned"), &key).await;
    assert_eq!(list["data"][0]["id"], id);
    let (_, list) = get(&c, &d.url("/v1/credits?status=unmatched"), &key).await;
    assert!(list["data"].as_array().unwrap().is_empty());
}
