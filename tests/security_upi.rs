//! Issue 13, the UPI side: only the merchant's own bank alerts pay, against the real binary and
//! a real dovecot (mails) or `POST /v1/upi/credits` (SMS forwarders, manual credits).
//!
//! Mailbox: a genuine DKIM-passing alert about another account, from a bank the mailbox is not
//! bound to, addressed elsewhere, re-sent long after it was written, written before the session,
//! or passing only in a forged second `Authentication-Results` header pays nothing. The watcher
//! reads headers first: a foreign mail is never judged (nor listed), a large one is not fetched.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::dovecot::{dovecot, sh};
use common::*;
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";
const AUTHSERV: &str = "mx.shop.example";

/// One alert mail, as the receiving server stores it: its own Authentication-Results on top.
struct Mail<'a> {
    from: &'a str,
    auth_results: Vec<String>,
    to: &'a str,
    /// Seconds before now of the Date header (and the DKIM `t=`).
    written_secs_ago: i64,
    body: String,
}

impl<'a> Mail<'a> {
    fn hdfc(body: String) -> Mail<'a> {
        Mail {
            from: "alerts@hdfcbank.net",
            auth_results: vec![format!(
                "{AUTHSERV}; dkim=pass header.d=hdfcbank.net; dmarc=pass header.from=hdfcbank.net"
            )],
            to: "shop@shop.example",
            written_secs_ago: 5,
            body,
        }
    }

    fn deliver(&self, dir: &Path, name: &str) {
        let written = chrono::Utc::now() - chrono::Duration::seconds(self.written_secs_ago);
        let mut m = String::new();
        m.push_str(&format!("Return-Path: <{}>\r\n", self.from));
        for a in &self.auth_results {
            m.push_str(&format!("Authentication-Results: {a}\r\n"));
        }
        let d = self.from.rsplit_once('@').map_or("", |x| x.1);
        m.push_str(&format!(
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={d}; s=s1;\r\n\tt={}; h=from:to:date:subject; bh=x; b=x\r\n",
            written.timestamp()
        ));
        m.push_str(&format!(
            "From: Bank Alerts <{}>\r\nTo: {}\r\nSubject: Alert: credit to your account\r\nDate: {}\r\n\
             Message-ID: <{name}@bank>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
            self.from,
            self.to,
            written.to_rfc2822(),
            self.body
        ));
        let tmp = dir.join(format!("home/shop/Maildir/tmp/{name}"));
        std::fs::write(&tmp, m).expect("mail");
        std::fs::rename(&tmp, dir.join(format!("home/shop/Maildir/new/{name}"))).expect("deliver");
        sh(dir, "chown -R nobody:nogroup home");
    }
}

fn hdfc_text(amount: &str, utr: &str) -> String {
    format!(
        "Rs.{amount} credited to a/c XX1234 on 20-11-26 by a/c linked to VPA cust@okaxis (UPI Ref No {utr})."
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("a")
        .port()
}

fn imap_extra(port: u16, mail_dir: &Path, more: &str) -> String {
    format!(
        "\n[upi.imap]\nhost = \"localhost\"\nport = {port}\nusername = \"shop\"\npassword = \"secretpass\"\n\
         merchant = \"demo\"\naccounts = [\"1234\"]\nbanks = [\"HDFC\"]\naddresses = [\"shop@shop.example\"]\n\
         ca_file = \"{}\"\nauthserv_id = \"{AUTHSERV}\"\npoll_interval_secs = 1\n{more}",
        mail_dir.join("ca.pem").display()
    )
}

async fn live_session(c: &reqwest::Client, d: &Daemon, key: &str, amount: u64) -> (String, String) {
    let (st, _, s) = post(
        c,
        &d.url(SESSIONS),
        key,
        json!({"amount": amount, "currency": "inr"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{s}");
    (
        s["id"].as_str().expect("id").to_owned(),
        s["payment_options"][0]["payable_amount"]
            .as_str()
            .expect("payable")
            .to_owned(),
    )
}

async fn status(c: &reqwest::Client, d: &Daemon, key: &str, id: &str) -> Value {
    get(c, &d.url(&format!("{SESSIONS}/{id}")), key).await.1
}

async fn wait_status(c: &reqwest::Client, d: &Daemon, key: &str, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(c, d, key, id).await;
        if s["status"] == want || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The reasons of ignored credits, once at least `n` are there (or after 15 s).
async fn ignored_reasons(c: &reqwest::Client, d: &Daemon, key: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, ignored) = get(c, &d.url("/v1/credits?status=ignored&limit=100"), key).await;
        let reasons: Vec<String> = ignored["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|c| c["reason"].as_str().unwrap_or("").to_owned())
            .collect();
        if reasons.len() >= n || Instant::now() > deadline {
            return reasons;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_fresh_alert_for_the_merchants_account_to_this_mailbox_pays() {
    let mail_dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let _dovecot = dovecot(mail_dir.path(), port);
    let mut d = Daemon::prepare(&Opts {
        extra: imap_extra(port, mail_dir.path(), ""),
        ..Opts::default()
    });
    let live = create_key(&d.config, "demo", &["--live"]);
    d.start();
    let c = client();
    let dir = mail_dir.path();

    // Each attack targets its own open session, by its payable amount.
    let (vpa_only, a1) = live_session(&c, &d, &live, 41_000).await;
    let mut m = Mail::hdfc(format!(
        "Rs.{a1} credited to a/c XX9999 on 20-11-26 by a/c linked to VPA shop1234@okaxis (UPI Ref No 811111111111)."
    ));
    m.deliver(dir, "another-account");

    let (forged_ar, a2) = live_session(&c, &d, &live, 42_000).await;
    m = Mail::hdfc(hdfc_text(&a2, "812222222222"));
    m.auth_results = vec![
        format!("{AUTHSERV}; dkim=fail header.d=hdfcbank.net; dmarc=fail header.from=hdfcbank.net"),
        format!("{AUTHSERV}; dkim=pass header.d=hdfcbank.net"),
    ];
    m.deliver(dir, "forged-second-header");

    let (other_bank, a3) = live_session(&c, &d, &live, 43_000).await;
    m = Mail::hdfc(format!(
        "Dear Customer, Acct XX1234 is credited with Rs {a3} on 26-Jun-25 from NAME. UPI:813333333333-ICICI Bank"
    ));
    m.from = "alerts@icicibank.com";
    m.auth_results = vec![format!(
        "{AUTHSERV}; dkim=pass header.d=icicibank.com; dmarc=pass header.from=icicibank.com"
    )];
    m.deliver(dir, "unbound-bank");

    let (elsewhere, a4) = live_session(&c, &d, &live, 44_000).await;
    m = Mail::hdfc(hdfc_text(&a4, "814444444444"));
    m.to = "victim@customer.example";
    m.deliver(dir, "addressed-elsewhere");

    let (resent, a5) = live_session(&c, &d, &live, 45_000).await;
    m = Mail::hdfc(hdfc_text(&a5, "815555555555"));
    m.written_secs_ago = 3 * 86_400;
    m.deliver(dir, "old-alert-resent");

    let (before, a6) = live_session(&c, &d, &live, 46_000).await;
    m = Mail::hdfc(hdfc_text(&a6, "816666666666"));
    m.written_secs_ago = 20 * 60; // within the delivery window, but before the session existed
    m.deliver(dir, "written-before-the-session");

    // And the control: a genuine fresh alert for the merchant's account pays.
    let (good, a7) = live_session(&c, &d, &live, 47_000).await;
    Mail::hdfc(hdfc_text(&a7, "817777777777")).deliver(dir, "good");

    let s = wait_status(&c, &d, &live, &good, "complete").await;
    assert_eq!(s["status"], "complete", "stderr: {}", d.stderr());
    // (The unbound bank's mail is skipped at its header: never judged, never listed.)
    let reasons = ignored_reasons(&c, &d, &live, 4).await;
    let (_, unmatched) = get(&c, &d.url("/v1/credits?status=unmatched"), &live).await;
    for (id, what) in [
        (
            &vpa_only,
            "an alert crediting another account (digits only in a VPA)",
        ),
        (
            &forged_ar,
            "a pass only in a forged second Authentication-Results",
        ),
        (&other_bank, "a bank the mailbox is not bound to"),
        (&elsewhere, "a mail addressed to someone else"),
        (&resent, "an old alert re-sent"),
        (&before, "an alert written before the session"),
    ] {
        let s = status(&c, &d, &live, id).await;
        assert_eq!(
            s["status"], "open",
            "{what} paid {id}; ignored: {reasons:?}; unmatched: {unmatched}"
        );
    }
    for needle in [
        "credits account …9999",
        "topmost Authentication-Results",
        "not addressed to this mailbox",
        "own date",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no ignored mail says {needle:?}: {reasons:?}"
        );
    }
    // The alert written before its session is real money of the merchant's: kept unmatched.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, unmatched) = get(&c, &d.url("/v1/credits?status=unmatched"), &live).await;
        if unmatched.to_string().contains("816666666666") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unmatched}; stderr: {}",
            d.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reads_headers_first_and_skips_foreign_or_oversized_mail() {
    let mail_dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let _dovecot = dovecot(mail_dir.path(), port);
    let mut d = Daemon::prepare(&Opts {
        extra: imap_extra(port, mail_dir.path(), "max_message_bytes = 8192\n"),
        ..Opts::default()
    });
    let live = create_key(&d.config, "demo", &["--live"]);
    d.start();
    let c = client();
    let dir = mail_dir.path();

    let mut newsletter = Mail::hdfc("Our autumn sale starts today!".into());
    newsletter.from = "news@shop-supplies.example";
    newsletter.auth_results = vec![format!(
        "{AUTHSERV}; dkim=pass header.d=shop-supplies.example"
    )];
    newsletter.deliver(dir, "newsletter");

    let (big, a1) = live_session(&c, &d, &live, 51_000).await;
    let padding = "x".repeat(20_000);
    Mail::hdfc(format!("{}\n\n{padding}", hdfc_text(&a1, "821111111111"))).deliver(dir, "big");

    let (good, a2) = live_session(&c, &d, &live, 52_000).await;
    Mail::hdfc(hdfc_text(&a2, "822222222222")).deliver(dir, "good");

    let s = wait_status(&c, &d, &live, &good, "complete").await;
    assert_eq!(s["status"], "complete", "stderr: {}", d.stderr());
    let reasons = ignored_reasons(&c, &d, &live, 1).await;
    assert_eq!(
        status(&c, &d, &live, &big).await["status"],
        "open",
        "an oversized mail was fetched and paid: {reasons:?}"
    );
    assert_eq!(
        reasons.len(),
        1,
        "only the oversized bank mail is listed: {reasons:?}"
    );
    assert!(reasons[0].contains("max_message_bytes"), "{reasons:?}");
}

#[test]
fn a_mailbox_without_authserv_id_or_banks_is_a_config_error_naming_the_key() {
    let mail_dir = tempfile::tempdir().expect("tmp");
    std::fs::write(mail_dir.path().join("ca.pem"), "").expect("ca");
    let full = imap_extra(993, mail_dir.path(), "");
    for (drop, key) in [
        (
            format!("authserv_id = \"{AUTHSERV}\"\n"),
            "upi.imap.authserv_id",
        ),
        ("banks = [\"HDFC\"]\n".to_owned(), "upi.imap.banks"),
        (
            "addresses = [\"shop@shop.example\"]\n".to_owned(),
            "upi.imap.addresses",
        ),
    ] {
        let d = Daemon::prepare(&Opts {
            extra: full.replace(&drop, ""),
            ..Opts::default()
        });
        let out = cli(&d.config, &["keys", "list"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(key), "{key}: {err}");
    }
    let d = Daemon::prepare(&Opts {
        extra: full.replace("[\"HDFC\"]", "[\"NOSUCHBANK\"]"),
        ..Opts::default()
    });
    let out = cli(&d.config, &["keys", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upi.imap.banks") && err.contains("NOSUCHBANK"),
        "{err}"
    );
}

const CREDITS: &str = "/v1/upi/credits";
const PERMS: &str = "sessions:read,sessions:write,credits:write";

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn forwarders() -> Opts {
    Opts {
        extra: r#"
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

async fn raw_post(c: &reqwest::Client, url: &str, ctype: &str, body: String) -> (u16, Value) {
    let r = c
        .post(url)
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .expect("send");
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn forwarder_alerts_need_a_sender_unique_keys_and_a_fresh_unreplayed_sign() {
    use base64::Engine as _;
    let mut d = Daemon::prepare(&forwarders());
    let live = create_key(&d.config, "demo", &["--live", "--permissions", PERMS]);
    d.start();
    let c = client();
    let tourl = format!("{}?token=tourl-token-0123456789ab", d.url(CREDITS));
    let fwd = format!("{}?token=fwd-token-0123456789abcd", d.url(CREDITS));

    // No sender: any text could pass for a bank's.
    let (s1, a1) = live_session(&c, &d, &live, 61_000).await;
    let body = json!({"text": hdfc_text(&a1, "911111111111")}).to_string();
    let (st, e) = raw_post(&c, &tourl, "application/json", body).await;
    assert_eq!(st, 400, "{e}");
    assert_eq!(e["error"]["param"], "from", "{e}");

    // Duplicate keys: one parser's "text" is not another's.
    let (s2, a2) = live_session(&c, &d, &live, 62_000).await;
    let body = format!(
        r#"{{"from": "AD-HDFCBK", "text": "hello", "text": {}}}"#,
        json!(hdfc_text(&a2, "922222222222"))
    );
    let (st, e) = raw_post(&c, &tourl, "application/json", body).await;
    assert_eq!(st, 400, "{e}");
    assert_eq!(e["error"]["code"], "parameter_duplicate", "{e}");
    assert_eq!(e["error"]["param"], "text", "{e}");
    let r = c
        .post(d.url(CREDITS))
        .bearer_auth(&live)
        .header("content-type", "application/json")
        .body(r#"{"source": "manual", "amount": "1.00", "amount": "620.00"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["param"], "amount", "{e}");

    // SmsForwarder's sign covers only the timestamp: a short window, and each sign once.
    let form = |ms: &str, sign: &str, text: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("from", "VM-HDFCBK")
            .append_pair("content", text)
            .append_pair("timestamp", ms)
            .append_pair("sign", sign)
            .finish()
    };
    let sign_for = |ms: &str| {
        base64::engine::general_purpose::STANDARD
            .encode(hmac(b"SECabc123", &[ms.as_bytes(), b"\n", b"SECabc123"]))
    };
    let (s3, a3) = live_session(&c, &d, &live, 63_000).await;
    let old = (chrono::Utc::now() - chrono::Duration::minutes(30))
        .timestamp_millis()
        .to_string();
    let (st, e) = raw_post(
        &c,
        &fwd,
        "application/x-www-form-urlencoded",
        form(&old, &sign_for(&old), &hdfc_text(&a3, "933333333333")),
    )
    .await;
    assert_eq!(st, 401, "a 30-minute-old sign is refused: {e}");
    let (s4, a4) = live_session(&c, &d, &live, 64_000).await;
    let ms = chrono::Utc::now().timestamp_millis().to_string();
    let sign = sign_for(&ms);
    let (st, v) = raw_post(
        &c,
        &fwd,
        "application/x-www-form-urlencoded",
        form(&ms, &sign, "Your OTP is 123456"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, e) = raw_post(
        &c,
        &fwd,
        "application/x-www-form-urlencoded",
        form(&ms, &sign, &hdfc_text(&a4, "944444444444")),
    )
    .await;
    assert_eq!(
        st, 401,
        "a replayed sign with other content is refused: {e}"
    );
    assert_eq!(e["error"]["code"], "signature_invalid");

    for s in [&s1, &s2, &s3, &s4] {
        assert_eq!(status(&c, &d, &live, s).await["status"], "open", "{s}");
    }

    // A receipt time from the body is never later than now.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).timestamp_millis();
    let body = json!({"from": "AD-HDFCBK", "text": hdfc_text("777.77", "955555555555"), "receivedStamp": tomorrow}).to_string();
    let (st, v) = raw_post(&c, &tourl, "application/json", body).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["outcome"], "unmatched", "{v}");
    let at = chrono::DateTime::parse_from_rfc3339(v["credit"]["received_at"].as_str().expect("at"))
        .expect("rfc3339");
    assert!(
        at.timestamp_millis() <= chrono::Utc::now().timestamp_millis(),
        "received_at {at} is in the future"
    );
}

#[tokio::test]
async fn manual_credits_are_each_their_own_and_test_references_live_apart() {
    let mut d = Daemon::prepare(&Opts::default());
    let live = create_key(&d.config, "demo", &["--live", "--permissions", PERMS]);
    let test = create_key(&d.config, "demo", &["--permissions", PERMS]);
    d.start();
    let c = client();
    let url = d.url(CREDITS);

    // Two different payments of the same amount, typed in without a UTR: two credits.
    let manual = json!({"source": "manual", "amount": "777.01"});
    let (st, _, r1) = post(&c, &url, &live, manual.clone(), None).await;
    assert_eq!(st, 200, "{r1}");
    assert_eq!(r1["outcome"], "unmatched", "{r1}");
    let (_, _, r2) = post(&c, &url, &live, manual, None).await;
    assert_eq!(
        r2["outcome"], "unmatched",
        "the second manual credit was dropped: {r2}"
    );
    assert_ne!(r1["credit"]["id"], r2["credit"]["id"]);

    // A test credit carrying a real UTR first, then the real live credit with that UTR.
    let utr = "966666666666";
    let (_, _, t) = post(
        &c,
        &url,
        &test,
        json!({"source": "manual", "amount": "5.00", "utr": utr}),
        None,
    )
    .await;
    assert_eq!(t["outcome"], "unmatched", "{t}");
    let (s, a) = live_session(&c, &d, &live, 66_000).await;
    let sms = json!({"source": "sms", "sender": "VM-HDFCBK", "text": hdfc_text(&a, utr)});
    let (_, _, r) = post(&c, &url, &live, sms.clone(), None).await;
    assert_eq!(
        r["outcome"], "matched",
        "a test credit made the live one a duplicate: {r}"
    );
    assert_eq!(r["session"], s.as_str());
    // And the reverse: a live credit first, then a test one with its UTR.
    let utr = "977777777777";
    let sms = json!({"source": "sms", "sender": "VM-HDFCBK", "text": hdfc_text("888.88", utr)});
    let (_, _, l) = post(&c, &url, &live, sms, None).await;
    assert_eq!(l["outcome"], "unmatched", "{l}");
    let (_, _, t2) = post(
        &c,
        &url,
        &test,
        json!({"source": "manual", "amount": "5.00", "utr": utr}),
        None,
    )
    .await;
    assert_eq!(t2["outcome"], "unmatched", "{t2}");
}

#[tokio::test]
async fn a_reversal_of_a_paid_sessions_utr_flags_it_and_sends_payment_reversed() {
    let mut d = Daemon::prepare(&Opts::default());
    let live = create_key(&d.config, "demo", &["--live", "--permissions", "*"]);
    d.start();
    let c = client();
    let url = d.url(CREDITS);
    let (s, a) = live_session(&c, &d, &live, 71_000).await;
    let utr = "988888888888";
    let sms = json!({"source": "sms", "sender": "VM-HDFCBK", "text": hdfc_text(&a, utr)});
    let (_, _, r) = post(&c, &url, &live, sms, None).await;
    assert_eq!(r["outcome"], "matched", "{r}");
    let reversal = json!({"source": "sms", "sender": "VM-HDFCBK",
        "text": format!("Your UPI transaction of {a} has been reversed in your account XX1234 (UPI Ref no. {utr})")});
    let (st, _, r) = post(&c, &url, &live, reversal.clone(), None).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["outcome"], "reversed", "{r}");
    assert_eq!(r["session"], s.as_str());
    let got = status(&c, &d, &live, &s).await;
    assert_eq!(got["payment_reversed"], true, "{got}");
    assert_eq!(got["payments"][0]["reversed"], true, "{got}");
    let (_, events) = get(&c, &d.url("/v1/events?limit=100"), &live).await;
    let reversed: Vec<&Value> = events["data"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "payment.reversed")
        .collect();
    assert_eq!(reversed.len(), 1, "{events}");
    assert_eq!(reversed[0]["data"]["object"]["id"], s.as_str(), "{events}");
    // The same reversal again sends nothing new.
    let (_, _, r) = post(&c, &url, &live, reversal, None).await;
    assert_eq!(r["outcome"], "duplicate", "{r}");
}

/// Attack: anyone who can SMS another merchant's forwarder sends "reversed" for a UTR that paid
/// this merchant. The reversal is that merchant's alert and must not flag this merchant's
/// payment (it is kept as ignored there); this merchant's session stays paid and unflagged.
#[tokio::test]
async fn another_merchants_reversal_alert_does_not_flag_this_merchants_payment() {
    let mut d = Daemon::prepare(&Opts::default());
    let live = create_key(&d.config, "demo", &["--live", "--permissions", "*"]);
    let other = create_key(&d.config, "other", &["--live", "--permissions", "*"]);
    d.start();
    let c = client();
    let url = d.url(CREDITS);
    let (s, a) = live_session(&c, &d, &live, 72_000).await;
    let utr = "977777777777";
    let sms = json!({"source": "sms", "sender": "VM-HDFCBK", "text": hdfc_text(&a, utr)});
    let (_, _, r) = post(&c, &url, &live, sms, None).await;
    assert_eq!(r["outcome"], "matched", "{r}");
    let reversal = json!({"source": "sms", "sender": "VM-HDFCBK",
        "text": format!("Your UPI transaction of {a} has been reversed in your account XX1234 (UPI Ref no. {utr})")});
    let (st, _, r) = post(&c, &url, &other, reversal.clone(), None).await;
    assert_eq!(st, 200, "{r}");
    assert_ne!(r["outcome"], "reversed", "{r}");
    assert_ne!(r["outcome"], "duplicate", "{r}");
    let got = status(&c, &d, &live, &s).await;
    assert_eq!(got["status"], "complete", "{got}");
    assert_ne!(got["payment_reversed"], true, "{got}");
    assert_ne!(got["payments"][0]["reversed"], true, "{got}");
    let (_, events) = get(&c, &d.url("/v1/events?limit=100"), &live).await;
    assert!(
        !events["data"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["type"] == "payment.reversed"),
        "{events}"
    );
    // The merchant's own reversal still flags it.
    let (_, _, r) = post(&c, &url, &live, reversal, None).await;
    assert_eq!(r["outcome"], "reversed", "{r}");
}
