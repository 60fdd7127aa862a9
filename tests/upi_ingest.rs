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
    let test_key = create_key(&d.config, "demo", &["--permissions", "*"]);
    let live_key = create_key(&d.config, "demo", &["--live", "--permissions", "*"]);
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

fn forwarder_opts() -> Opts {
    Opts {
        extra: r#"
[upi.ingest.gateway]
merchant = "demo"
token = "gateway-token-0123456789"
format = "sms_gateway"
signing_key = "gw-signing-key"

[upi.ingest.tourl]
merchant = "demo"
token = "tourl-token-0123456789ab"
format = "sms_to_url"

[upi.ingest.fwd]
merchant = "demo"
token = "fwd-token-0123456789abcd"
format = "smsforwarder"
signing_key = "SECabc123"
"#
        .into(),
        ..Opts::default()
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

#[tokio::test]
async fn every_forwarder_format_pays_a_live_session_and_forgeries_are_refused() {
    use base64::Engine as _;
    let mut d = Daemon::prepare(&forwarder_opts());
    let live = create_key(&d.config, "demo", &["--live"]);
    d.start();
    let c = client();
    let url = d.url(CREDITS);
    let now = chrono::Utc::now();

    // SMS Gateway for Android: JSON event, X-Signature = hex HMAC(body + X-Timestamp).
    let s1 = session(&c, &d, &live, 20_001).await;
    let p1 = s1["payment_options"][0]["payable_amount"]
        .as_str()
        .expect("p")
        .to_owned();
    let body = serde_json::to_vec(&json!({
        "event": "sms:received", "id": "Ey6ECgOkVVFjz3CL48B8C", "deviceId": "ffff",
        "payload": {"messageId": "abc", "message": hdfc_credit(&p1, "611111111111"),
                    "phoneNumber": "VM-HDFCBK", "simNumber": 1, "receivedAt": now.to_rfc3339()}
    }))
    .expect("json");
    let ts = now.timestamp().to_string();
    let good_sig = hex::encode(hmac(b"gw-signing-key", &[&body, ts.as_bytes()]));
    let send = |sig: String, body: Vec<u8>| {
        c.post(format!("{url}?token=gateway-token-0123456789"))
            .header("content-type", "application/json")
            .header("x-timestamp", ts.clone())
            .header("x-signature", sig)
            .body(body)
            .send()
    };
    let r = send("00".repeat(32), body.clone()).await.expect("send");
    assert_eq!(r.status().as_u16(), 401, "a bad signature is refused");
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "signature_invalid");
    let r = send(good_sig, body).await.expect("send");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["outcome"], "matched", "{v}");
    assert_eq!(v["session"], s1["id"]);

    // "SMS to URL forwarder": its JSON template, the token in a header.
    let s2 = session(&c, &d, &live, 20_002).await;
    let p2 = s2["payment_options"][0]["payable_amount"]
        .as_str()
        .expect("p")
        .to_owned();
    let r = c
        .post(&url)
        .header("x-paywatch-token", "tourl-token-0123456789ab")
        .json(&json!({"from": "AD-HDFCBK", "text": hdfc_credit(&p2, "622222222222"),
                      "sentStamp": now.timestamp_millis(), "receivedStamp": now.timestamp_millis(), "sim": "sim1"}))
        .send()
        .await
        .expect("send");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["outcome"], "matched", "{v}");
    assert_eq!(v["session"], s2["id"]);

    // SmsForwarder: form body, sign = urlencode(base64(HMAC(secret, "{ts}\n{secret}"))).
    let s3 = session(&c, &d, &live, 20_003).await;
    let p3 = s3["payment_options"][0]["payable_amount"]
        .as_str()
        .expect("p")
        .to_owned();
    let ms = now.timestamp_millis().to_string();
    let sign = base64::engine::general_purpose::STANDARD
        .encode(hmac(b"SECabc123", &[ms.as_bytes(), b"\n", b"SECabc123"]));
    let form = |sign: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("from", "VM-HDFCBK")
            .append_pair("content", &hdfc_credit(&p3, "633333333333"))
            .append_pair("timestamp", &ms)
            .append_pair("sign", sign)
            .finish()
    };
    let post_form = |body: String| {
        c.post(format!("{url}?token=fwd-token-0123456789abcd"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let r = post_form(form("forged")).await.expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let r = post_form(form(&sign)).await.expect("send");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["outcome"], "matched", "{v}");

    // Forgeries changed nothing; an unknown token is refused; the completed sessions carry the UTRs.
    let r = c
        .post(format!("{url}?token=nope-nope-nope-nope"))
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    for (s, utr) in [
        (&s1, "611111111111"),
        (&s2, "622222222222"),
        (&s3, "633333333333"),
    ] {
        let (_, got) = get(
            &c,
            &d.url(&format!("{SESSIONS}/{}", s["id"].as_str().expect("id"))),
            &live,
        )
        .await;
        assert_eq!(got["status"], "complete");
        assert_eq!(got["payments"].as_array().map(Vec::len), Some(1));
        assert_eq!(got["payments"][0]["utr"], utr);
    }
    let (_, list) = get(&c, &d.url("/v1/credits"), &live).await;
    assert_eq!(
        list["data"].as_array().map(Vec::len),
        Some(0),
        "nothing stored for forged requests: {list}"
    );
}

#[tokio::test]
async fn a_utr_claim_matches_its_credit_before_or_after_it_arrives_and_the_operator_can_assign() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let claim = |id: &str, utr: &str| {
        c.post(d.url(&format!("/c/{id}/claim")))
            .json(&json!({"utr": utr}))
            .send()
    };
    // The claim comes first: the credit (whose amount matches nothing) then goes to this session.
    let a = session(&c, &d, &key, 30_000).await;
    let a_id = a["id"].as_str().expect("id").to_owned();
    let r = claim(&a_id, "700000000001").await.expect("claim");
    assert_eq!(r.status().as_u16(), 202);
    let (_, _, r) = post(
        &c,
        &d.url(CREDITS),
        &key,
        json!({"source": "manual", "amount": "300.05", "utr": "700000000001"}),
        None,
    )
    .await;
    assert_eq!(r["outcome"], "matched", "{r}");
    assert_eq!(r["session"], a_id.as_str());
    let (_, got) = get(&c, &d.url(&format!("{SESSIONS}/{a_id}")), &key).await;
    assert_eq!(got["status"], "complete");
    assert_eq!(got["payment_status"], "overpaid");

    // The credit comes first (unmatched), then the customer's claim: once listed, a UTR may be
    // known to others, so on a shared VPA the claim is queued and the operator assigns it.
    let b = session(&c, &d, &key, 40_000).await;
    let b_id = b["id"].as_str().expect("id").to_owned();
    let (_, _, r) = post(
        &c,
        &d.url(CREDITS),
        &key,
        json!({"source": "manual", "amount": "400.07", "utr": "700000000002"}),
        None,
    )
    .await;
    assert_eq!(r["outcome"], "unmatched");
    let b_credit = r["credit"]["id"].as_str().expect("credit").to_owned();
    let r = claim(&b_id, "700000000002").await.expect("claim");
    assert_eq!(r.status().as_u16(), 202, "the same answer matched or not");
    let (_, got) = get(&c, &d.url(&format!("{SESSIONS}/{b_id}")), &key).await;
    assert_eq!(
        got["status"], "open",
        "queued, not applied on the customer's word"
    );
    let r = c
        .post(format!("{}/admin/v1/credits/{b_credit}/assign", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"session": b_id}))
        .send()
        .await
        .expect("assign");
    assert_eq!(r.status().as_u16(), 200);
    let (_, got) = get(&c, &d.url(&format!("{SESSIONS}/{b_id}")), &key).await;
    assert_eq!(got["status"], "complete");
    assert_eq!(got["payments"][0]["utr"], "700000000002");

    // A reference already used cannot be claimed again, and guessing is bounded.
    let e_sess = session(&c, &d, &key, 50_000).await;
    let e_id = e_sess["id"].as_str().expect("id").to_owned();
    let r = claim(&e_id, "700000000002").await.expect("claim");
    assert_eq!(
        r.status().as_u16(),
        202,
        "no oracle: a used reference gets the same answer"
    );
    let (_, got) = get(&c, &d.url(&format!("{SESSIONS}/{e_id}")), &key).await;
    assert_eq!(got["status"], "open", "and it is not applied");
    for i in 0..4 {
        let r = claim(&e_id, &format!("70000000010{i}"))
            .await
            .expect("claim");
        assert_eq!(r.status().as_u16(), 202);
    }
    let r = claim(&e_id, "700000000199").await.expect("claim");
    assert_eq!(r.status().as_u16(), 400, "at most 5 claims per session");

    // A claim never takes a credit far from the session's amount: it waits for the operator.
    let g = session(&c, &d, &key, 70_000).await;
    let g_id = g["id"].as_str().expect("id").to_owned();
    let (_, _, r) = post(
        &c,
        &d.url(CREDITS),
        &key,
        json!({"source": "manual", "amount": "5000.00", "utr": "700000000004"}),
        None,
    )
    .await;
    assert_eq!(r["outcome"], "unmatched");
    let r = claim(&g_id, "700000000004").await.expect("claim");
    assert_eq!(r.status().as_u16(), 202);
    let (_, got) = get(&c, &d.url(&format!("{SESSIONS}/{g_id}")), &key).await;
    assert_eq!(
        got["status"], "open",
        "a 5000.00 credit is not a 700.00 session's on the customer's word"
    );
    // A claim on a session that is not waiting for UPI money is refused.
    let r = claim(&a_id, "700000000005").await.expect("claim");
    assert_eq!(
        r.status().as_u16(),
        400,
        "a completed session takes no claims"
    );

    // The operator assigns an unmatched credit to a session.
    let f = session(&c, &d, &key, 60_000).await;
    let f_id = f["id"].as_str().expect("id").to_owned();
    let (_, _, r) = post(
        &c,
        &d.url(CREDITS),
        &key,
        json!({"source": "manual", "amount": "600.09", "utr": "700000000003"}),
        None,
    )
    .await;
    let credit = r["credit"]["id"].as_str().expect("credit").to_owned();
    let assign = |session: &str| {
        c.post(format!("{}/admin/v1/credits/{credit}/assign", d.admin))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"session": session}))
            .send()
    };
    let r = assign(&f_id).await.expect("assign");
    assert_eq!(r.status().as_u16(), 200);
    let (_, got) = get(&c, &d.url(&format!("{SESSIONS}/{f_id}")), &key).await;
    assert_eq!(got["status"], "complete");
    let r = assign(&e_id).await.expect("assign again");
    assert_eq!(r.status().as_u16(), 400, "a credit is applied once");
    let (_, list) = get(&c, &d.url("/v1/credits?status=unmatched"), &key).await;
    assert_eq!(
        list["data"].as_array().map(Vec::len),
        Some(1),
        "only the 5000.00 credit waits for the operator: {list}"
    );
    assert_eq!(list["data"][0]["amount"], "5000.00");
}

#[tokio::test]
async fn an_operator_template_adds_a_bank_without_recompiling() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("example-coop.toml"),
        r#"bank = "Example Co-operative Bank"
sms_senders = ["EXCOOP"]
email_domains = ["excoop.example"]
markers = ['''\bEXCOOP\b''']

[[patterns]]
name = "credit"
kind = "credit"
regex = '''(?i)\bReceived\s+%CUR%%AMOUNT%\s+via\s+UPI\s+ref\s+%UTR%'''
"#,
    )
    .expect("template");
    let extra = format!("\n[upi]\ntemplates_dir = \"{}\"\n", dir.path().display());
    let (d, key) = Daemon::started(&Opts {
        extra,
        ..Opts::default()
    });
    let c = client();
    let s = session(&c, &d, &key, 4_200).await;
    let payable = s["payment_options"][0]["payable_amount"]
        .as_str()
        .expect("p")
        .to_owned();
    let text = format!("EXCOOP: Received Rs.{payable} via UPI ref 990011223344. Thank you.");
    let (_, _, r) = post(
        &c,
        &d.url(CREDITS),
        &key,
        json!({"source": "sms", "sender": "VM-EXCOOP", "text": text}),
        None,
    )
    .await;
    assert_eq!(r["outcome"], "matched", "{r}");
    let events: Vec<Value> = outbox(&c, &d).await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "checkout.session.completed"
                && e["data"]["object"]["id"] == s["id"]),
        "the completion is announced"
    );

    // A template that does not compile stops the daemon at start with the file named.
    std::fs::write(dir.path().join("broken.toml"), "bank = \"Broken\"\nsms_senders = [\"BRKN\"]\n[[patterns]]\nname = \"x\"\nkind = \"credit\"\nregex = '''(unclosed'''\n").expect("broken");
    let out = cli(&d.config, &["serve"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upi.templates_dir") && err.contains("broken.toml"),
        "{err}"
    );
}
