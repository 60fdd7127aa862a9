//! UPI credit alerts fed in over HTTP: a bank SMS of a session's payable amount completes it with
//! the UTR; the same credit again changes nothing; debits, OTPs and strangers' SMS are kept as
//! ignored with the reason; amounts nobody holds become unmatched credits.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";
const CREDITS: &str = "/v1/upi/credits";

fn hdfc_credit(amount: &str, utr: &str) -> String {
    format!(
        "Rs.{amount} credited to a/c XX1234 on 20-11-26 by a/c linked to VPA cust@okaxis (UPI Ref No {utr})."
    )
}

async fn session(c: &reqwest::Client, d: &Daemon, key: &str, amount: u64) -> Value {
    let (st, _, s) = post(
        c,
        &d.url(SESSIONS),
        key,
        json!({"amount": amount, "currency": "inr"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{s}");
    s
}

#[tokio::test]
async fn a_bank_sms_of_the_payable_amount_completes_the_session_once() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    session(&c, &d, &key, 14_999).await; // takes 149.99
    let s = session(&c, &d, &key, 14_999).await; // so this one holds 150.00
    let payable = s["payment_options"][0]["payable_amount"]
        .as_str()
        .expect("payable")
        .to_owned();
    assert_eq!(payable, "150.00");
    let sms = json!({"source": "sms", "sender": "VM-HDFCBK", "text": hdfc_credit(&payable, "432112345678")});
    let (st, _, r) = post(&c, &d.url(CREDITS), &key, sms.clone(), None).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["outcome"], "matched", "{r}");
    assert_eq!(r["session"], s["id"]);
    let (_, got) = get(
        &c,
        &d.url(&format!("{SESSIONS}/{}", s["id"].as_str().expect("id"))),
        &key,
    )
    .await;
    assert_eq!(got["status"], "complete");
    assert_eq!(got["payments"][0]["utr"], "432112345678");
    assert_eq!(got["payments"][0]["amount"], "150.00");

    // The same credit again (the SMS retried, or its e-mail twin): nothing new.
    let (st, _, r) = post(&c, &d.url(CREDITS), &key, sms, None).await;
    assert_eq!(st, 200);
    assert_eq!(r["outcome"], "duplicate");
    let (_, got) = get(
        &c,
        &d.url(&format!("{SESSIONS}/{}", s["id"].as_str().expect("id"))),
        &key,
    )
    .await;
    assert_eq!(got["payments"].as_array().map(Vec::len), Some(1));
    let (_, _, r) = post(
        &c,
        &d.url(CREDITS),
        &key,
        json!({"source": "manual", "amount": "150.00", "utr": "432112345678"}),
        None,
    )
    .await;
    assert_eq!(
        r["outcome"], "duplicate",
        "a UTR is one credit whatever reports it"
    );
}

#[tokio::test]
async fn non_credits_and_strangers_are_ignored_with_the_reason() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let s = session(&c, &d, &key, 50_000).await;
    let cases = [
        json!({"source": "sms", "sender": "VM-HDFCBK", "text": "Rs.500.00 debited from a/c XX1234 on 20-11-26 to VPA shop@okaxis (UPI Ref No 432112345679)."}),
        json!({"source": "sms", "sender": "VM-HDFCBK", "text": "123456 is your OTP for a transaction of Rs.500.00. Do not share it."}),
        json!({"source": "sms", "sender": "VM-FRIEND", "text": hdfc_credit("500.00", "432112345670")}),
    ];
    for body in &cases {
        let (st, _, r) = post(&c, &d.url(CREDITS), &key, body.clone(), None).await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["outcome"], "ignored", "{body}: {r}");
        assert!(r["reason"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (_, got) = get(
        &c,
        &d.url(&format!("{SESSIONS}/{}", s["id"].as_str().expect("id"))),
        &key,
    )
    .await;
    assert_eq!(got["status"], "open", "no ignored alert moved money");
    let (st, list) = get(&c, &d.url("/v1/credits?status=ignored"), &key).await;
    assert_eq!(st, 200);
    assert_eq!(list["data"].as_array().map(Vec::len), Some(3));
    assert!(
        list["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|c| c["reason"].as_str().unwrap_or("").contains("VM-FRIEND"))
    );

    // An amount nobody holds is an unmatched credit, listed for the operator.
    let (_, _, r) = post(&c, &d.url(CREDITS), &key, json!({"source": "sms", "sender": "AD-HDFCBK", "text": hdfc_credit("777.77", "432112345671")}), None).await;
    assert_eq!(r["outcome"], "unmatched", "{r}");
    let (_, list) = get(&c, &d.url("/v1/credits?status=unmatched"), &key).await;
    assert_eq!(list["data"][0]["amount"], "777.77");
    assert_eq!(list["data"][0]["utr"], "432112345671");
}

#[tokio::test]
async fn credits_respect_modes_permissions_and_validation() {
    let mut d = Daemon::prepare(&Opts::default());
    let test_key = create_key(&d.config, "demo", &[]);
    let live_key = create_key(&d.config, "demo", &["--live"]);
    let reader = create_key(&d.config, "demo", &["--permissions", "sessions:read"]);
    d.start();
    let c = client();
    let s = session(&c, &d, &test_key, 12_345).await;
    let payable = s["payment_options"][0]["payable_amount"]
        .as_str()
        .expect("p")
        .to_owned();
    // A credit reported with a live key only ever pays live sessions.
    let (_, _, r) = post(
        &c,
        &d.url(CREDITS),
        &live_key,
        json!({"source": "manual", "amount": payable, "utr": "555555555555"}),
        None,
    )
    .await;
    assert_eq!(r["outcome"], "unmatched", "{r}");
    let (st, _, _) = post(
        &c,
        &d.url(CREDITS),
        &reader,
        json!({"source": "manual", "amount": "1.00"}),
        None,
    )
    .await;
    assert_eq!(st, 403);
    for (body, param) in [
        (json!({}), "source"),
        (json!({"source": "fax"}), "source"),
        (json!({"source": "sms"}), "text"),
        (json!({"source": "manual"}), "amount"),
        (json!({"source": "manual", "amount": "1.001"}), "amount"),
        (
            json!({"source": "manual", "amount": "1.00", "utr": "12ab"}),
            "utr",
        ),
        (
            json!({"source": "sms", "text": "x", "received_at": "yesterday"}),
            "received_at",
        ),
        (json!({"source": "sms", "text": "x", "extra": 1}), "extra"),
    ] {
        let (st, _, e) = post(&c, &d.url(CREDITS), &test_key, body.clone(), None).await;
        assert_eq!(st, 400, "{body}: {e}");
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
    }
    let (_, got) = get(
        &c,
        &d.url(&format!("{SESSIONS}/{}", s["id"].as_str().expect("id"))),
        &test_key,
    )
    .await;
    assert_eq!(got["status"], "open");
}
