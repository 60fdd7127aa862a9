//! The IMAP watcher against a real IMAP server (Debian's dovecot on loopback, TLS with a CA made
//! by the test): a bank mail with DKIM passing completes a session, a spoofed one does not, and a
//! restart does not read the same mails again.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::dovecot::{dovecot, sh};
use common::*;
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";

/// Delivers a message into the Maildir, as the mail server would.
fn deliver(dir: &Path, name: &str, from: &str, auth_results: &str, body: &str) {
    let mail = format!(
        "Return-Path: <{from}>\r\nAuthentication-Results: {auth_results}\r\nFrom: Bank Alerts <{from}>\r\nTo: shop@shop.example\r\n\
         Subject: Alert: credit to your account\r\nDate: {}\r\nMessage-ID: <{name}@bank>\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        chrono::Utc::now().to_rfc2822()
    );
    let tmp = dir.join(format!("home/shop/Maildir/tmp/{name}"));
    std::fs::write(&tmp, mail).expect("mail");
    std::fs::rename(&tmp, dir.join(format!("home/shop/Maildir/new/{name}"))).expect("deliver");
    sh(dir, "chown -R nobody:nogroup home");
}

fn credit_text(amount: &str, utr: &str) -> String {
    format!(
        "Rs.{amount} credited to a/c XX1234 on 20-11-26 by a/c linked to VPA cust@okaxis (UPI Ref No {utr})."
    )
}

async fn wait_status(c: &reqwest::Client, d: &Daemon, key: &str, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, s) = get(c, &d.url(&format!("{SESSIONS}/{id}")), key).await;
        if s["status"] == want || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dkim_passing_bank_mail_pays_and_a_spoofed_one_does_not() {
    let mail_dir = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("a")
        .port();
    let _dovecot = dovecot(mail_dir.path(), port);
    let extra = format!(
        "\n[upi.imap]\nhost = \"localhost\"\nport = {port}\nusername = \"shop\"\npassword = \"secretpass\"\n\
         merchant = \"demo\"\naccounts = [\"1234\"]\nbanks = [\"HDFC\"]\naddresses = [\"shop@shop.example\"]\nca_file = \"{}\"\nauthserv_id = \"mx.shop.example\"\npoll_interval_secs = 1\n",
        mail_dir.path().join("ca.pem").display()
    );
    let mut d = Daemon::prepare(&Opts {
        extra,
        ..Opts::default()
    });
    let live = create_key(&d.config, "demo", &["--live"]);
    d.start();
    let c = client();
    let (_, _, paid) = post(
        &c,
        &d.url(SESSIONS),
        &live,
        json!({"amount": 31_000, "currency": "inr"}),
        None,
    )
    .await;
    let (_, _, spoofed) = post(
        &c,
        &d.url(SESSIONS),
        &live,
        json!({"amount": 32_000, "currency": "inr"}),
        None,
    )
    .await;
    let amount = |s: &Value| {
        s["payment_options"][0]["payable_amount"]
            .as_str()
            .expect("p")
            .to_owned()
    };

    deliver(
        mail_dir.path(),
        "m1",
        "alerts@hdfcbank.net",
        "mx.shop.example; dkim=pass header.d=hdfcbank.net; dmarc=pass header.from=hdfcbank.net",
        &credit_text(&amount(&paid), "801111111111"),
    );
    deliver(
        mail_dir.path(),
        "m2",
        "alerts@hdfcbank.net",
        "mx.shop.example; dkim=fail header.d=hdfcbank.net; dmarc=fail header.from=hdfcbank.net",
        &credit_text(&amount(&spoofed), "802222222222"),
    );
    let s = wait_status(&c, &d, &live, paid["id"].as_str().expect("id"), "complete").await;
    let (_, all_credits) = get(&c, &d.url("/v1/credits"), &live).await;
    assert_eq!(
        s["status"],
        "complete",
        "the DKIM-passing mail was not applied; credits {all_credits}; stderr: {}",
        d.stderr()
    );
    assert_eq!(s["payments"][0]["utr"], "801111111111");
    let (_, s2) = get(
        &c,
        &d.url(&format!(
            "{SESSIONS}/{}",
            spoofed["id"].as_str().expect("id")
        )),
        &live,
    )
    .await;
    assert_eq!(s2["status"], "open", "a spoofed mail never moves money");
    // The two mails may be fetched in separate rounds (IDLE wakes on the first): wait for the
    // spoofed one to be judged.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let reasons: Vec<String> = loop {
        let (_, ignored) = get(&c, &d.url("/v1/credits?status=ignored"), &live).await;
        let reasons: Vec<String> = ignored["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|c| c["reason"].as_str().unwrap_or("").to_owned())
            .collect();
        if !reasons.is_empty() || std::time::Instant::now() > deadline {
            break reasons;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("DKIM"), "{reasons:?}");

    // A restart reads nothing twice: still one ignored mail, still one payment.
    d.terminate();
    d.start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, ignored) = get(&c, &d.url("/v1/credits?status=ignored"), &live).await;
    assert_eq!(ignored["data"].as_array().map(Vec::len), Some(1));
    // And a mail arriving now is picked up by the reconnected watcher.
    let (_, _, later) = post(
        &c,
        &d.url(SESSIONS),
        &live,
        json!({"amount": 33_000, "currency": "inr"}),
        None,
    )
    .await;
    deliver(
        mail_dir.path(),
        "m3",
        "alerts@hdfcbank.net",
        "mx.shop.example; dkim=pass header.d=hdfcbank.net",
        &credit_text(&amount(&later), "803333333333"),
    );
    let s3 = wait_status(&c, &d, &live, later["id"].as_str().expect("id"), "complete").await;
    assert_eq!(s3["status"], "complete");
    let (_, s1) = get(
        &c,
        &d.url(&format!("{SESSIONS}/{}", paid["id"].as_str().expect("id"))),
        &live,
    )
    .await;
    assert_eq!(s1["payments"].as_array().map(Vec::len), Some(1));
}
