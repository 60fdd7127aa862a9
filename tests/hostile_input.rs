//! Hostile input against the real binary: other merchants and modes, malformed and oversized
//! bodies, slow clients, address tricks for callbacks, and markup in merchant text. Each bad
//! request gets its specific JSON error and changes nothing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Daemon, Opts, client, create_key, get, post};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SESSIONS: &str = "/v1/checkout/sessions";

/// Counts of everything a merchant key can list: a bad request must leave them as they were.
async fn census(c: &reqwest::Client, d: &Daemon, key: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for path in [
        "/v1/checkout/sessions?limit=100",
        "/v1/events?limit=100",
        "/v1/webhook_endpoints",
        "/v1/credits?limit=100",
    ] {
        let (st, v) = get(c, &d.url(path), key).await;
        assert_eq!(st, 200, "{path}: {v}");
        out.push(v["data"].as_array().map_or(0, Vec::len));
    }
    out
}

#[tokio::test]
async fn another_merchant_or_mode_sees_none_of_events_endpoints_or_credits() {
    let mut d = Daemon::prepare(&Opts::default());
    let a = create_key(&d.config, "demo", &["--permissions", "*"]);
    let a_live = create_key(&d.config, "demo", &["--live", "--permissions", "*"]);
    let b = create_key(&d.config, "other", &["--permissions", "*"]);
    d.start();
    let c = client();

    let (st, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &a,
        json!({"amount": 4100, "currency": "inr"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{s}");
    let sid = s["id"].as_str().expect("id").to_owned();
    let (st, _, _) = post(
        &c,
        &d.url(&format!("{SESSIONS}/{sid}/cancel")),
        &a,
        json!({}),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let (_, events) = get(&c, &d.url("/v1/events"), &a).await;
    let evt = events["data"][0]["id"]
        .as_str()
        .expect("an event")
        .to_owned();
    let (st, _, ep) = post(
        &c,
        &d.url("/v1/webhook_endpoints"),
        &a,
        json!({"url": "https://shop.example/hooks/a"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{ep}");
    let we = ep["id"].as_str().expect("id").to_owned();
    let (st, _, cr) = post(
        &c,
        &d.url("/v1/upi/credits"),
        &a,
        json!({"source": "manual", "amount": "1.23", "utr": "555000111222"}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{cr}");
    assert_eq!(cr["outcome"], "unmatched");
    let a_before = census(&c, &d, &a).await;
    assert!(a_before.iter().all(|n| *n > 0), "{a_before:?}");

    for (who, key) in [("merchant B", &b), ("A's live key", &a_live)] {
        let (st, e) = get(&c, &d.url(&format!("/v1/events/{evt}")), key).await;
        assert_eq!(
            (st, e["error"]["code"].as_str()),
            (404, Some("resource_missing")),
            "{who}"
        );
        let (st, _, _) = post(
            &c,
            &d.url(&format!("/v1/events/{evt}/redeliver")),
            key,
            json!({}),
            None,
        )
        .await;
        assert_eq!(st, 404, "{who} redelivers A's event");
        let (st, _, _) = post(
            &c,
            &d.url(&format!("{SESSIONS}/{sid}/expire")),
            key,
            json!({}),
            None,
        )
        .await;
        assert_eq!(st, 404, "{who} expires A's session");
        let (st, _) = get(&c, &d.url(&format!("/v1/webhook_endpoints/{we}")), key).await;
        assert_eq!(st, 404, "{who} reads A's endpoint");
        let (st, _, _) = post(
            &c,
            &d.url(&format!("/v1/webhook_endpoints/{we}/rotate_secret")),
            key,
            json!({}),
            None,
        )
        .await;
        assert_eq!(st, 404, "{who} rotates A's endpoint secret");
        let r = c
            .delete(d.url(&format!("/v1/webhook_endpoints/{we}")))
            .bearer_auth(key)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 404, "{who} deletes A's endpoint");
        assert_eq!(census(&c, &d, key).await, vec![0, 0, 0, 0], "{who} lists");
        let (_, secret) = get(&c, &d.url("/v1/webhook_secret"), key).await;
        let (_, a_secret) = get(&c, &d.url("/v1/webhook_secret"), &a).await;
        if who == "merchant B" {
            assert_ne!(
                secret["secret"], a_secret["secret"],
                "merchants share no secret"
            );
        }
    }
    // A still has all of it, untouched.
    assert_eq!(census(&c, &d, &a).await, a_before);
    let (st, ep_now) = get(&c, &d.url(&format!("/v1/webhook_endpoints/{we}")), &a).await;
    assert_eq!(st, 200);
    assert!(ep_now.get("deleted").is_none());
}

#[tokio::test]
async fn a_key_revoked_through_the_operator_api_is_refused_on_its_next_request() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let (st, _) = get(&c, &d.url(SESSIONS), &key).await;
    assert_eq!(st, 200, "warms the key cache");
    let r = c
        .get(format!("{}/admin/v1/keys?merchant=demo", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("send");
    let keys: Value = r.json().await.expect("json");
    let id = keys["data"][0]["id"].as_str().expect("key id").to_owned();
    let r = c
        .post(format!("{}/admin/v1/keys/{id}/revoke", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    for path in [SESSIONS, "/v1/events", "/v1/methods"] {
        let (st, e) = get(&c, &d.url(path), &key).await;
        assert_eq!(st, 401, "{path}: {e}");
        assert_eq!(e["error"]["type"], "authentication_error");
    }
    let (st, _, e) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 100, "currency": "inr"}),
        Some("after-revoke"),
    )
    .await;
    assert_eq!(st, 401, "{e}");
}

/// Sends raw bytes as a POST body with the given content type; returns status and JSON.
async fn raw_post(
    c: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut rb = c.post(url).header("content-type", content_type).body(body);
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    let r = rb.send().await.expect("send");
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn malformed_bodies_get_a_specific_error_on_every_post_and_change_nothing() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let (_, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 5100, "currency": "inr"}),
        None,
    )
    .await;
    let sid = s["id"].as_str().expect("id").to_owned();
    let before = census(&c, &d, &key).await;
    let routes = [
        SESSIONS.to_owned(),
        "/v1/webhook_endpoints".to_owned(),
        "/v1/upi/credits".to_owned(),
        format!("{SESSIONS}/{sid}/cancel"),
        "/v1/webhook_secret/rotate".to_owned(),
    ];
    let json_ct = "application/json";
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (json_ct, b"{\"amount\": 1".to_vec(), "body_invalid_json"),
        (
            json_ct,
            b"\xff\xfe{\"amount\":1}".to_vec(),
            "body_invalid_json",
        ),
        (
            json_ct,
            b"{\"amount\":\"\xc3\x28\"}".to_vec(),
            "body_invalid_json",
        ),
        (json_ct, b"[]".to_vec(), "body_invalid_json"),
        (json_ct, b"{\"a\":1,\"a\":2}".to_vec(), "parameter_unknown"),
        (
            json_ct,
            br#"{"zzz_unknown": true}"#.to_vec(),
            "parameter_unknown",
        ),
        // A form is read as a form (Stripe's bracket notation, docs/stripe-libraries.md): a
        // malformed one is refused as such. Anything else is read as JSON.
        (
            "application/x-www-form-urlencoded",
            b"amount=100&amount=200".to_vec(),
            "body_invalid_form",
        ),
        (
            "application/x-www-form-urlencoded",
            b"metadata[k=1".to_vec(),
            "body_invalid_form",
        ),
        ("text/plain", b"amount: 100".to_vec(), "body_invalid_json"),
        (
            "multipart/form-data",
            b"--x\r\n".to_vec(),
            "body_invalid_json",
        ),
    ];
    for route in &routes {
        for (ct, body, code) in &cases {
            let (st, e) = raw_post(&c, &d.url(route), Some(&key), ct, body.clone()).await;
            assert_eq!(
                st,
                400,
                "{route} {ct} {:?}: {e}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(e["error"]["code"], *code, "{route} {ct}: {e}");
            assert_eq!(e["error"]["type"], "invalid_request_error");
        }
    }
    // Wrong types, field by field.
    let typed: Vec<(&str, Value, &str)> = vec![
        ("/v1/webhook_endpoints", json!({"url": 5}), "url"),
        (
            "/v1/webhook_endpoints",
            json!({"url": "https://shop.example/h", "events": "*"}),
            "events",
        ),
        (
            "/v1/webhook_endpoints",
            json!({"url": "https://shop.example/h", "events": [1]}),
            "events",
        ),
        (
            "/v1/webhook_endpoints",
            json!({"url": "https://shop.example/h", "description": []}),
            "description",
        ),
        (
            "/v1/webhook_endpoints",
            json!({"url": "ftp://shop.example/h"}),
            "url",
        ),
        ("/v1/upi/credits", json!({"source": 1}), "source"),
        (
            "/v1/upi/credits",
            json!({"source": "manual", "amount": 1.5}),
            "amount",
        ),
        (
            "/v1/upi/credits",
            json!({"source": "manual", "amount": "-1"}),
            "amount",
        ),
        (
            "/v1/upi/credits",
            json!({"source": "manual", "amount": "1", "utr": "12345"}),
            "utr",
        ),
        (
            "/v1/upi/credits",
            json!({"source": "sms", "text": {"a": 1}}),
            "text",
        ),
        (
            "/v1/upi/credits",
            json!({"source": "sms", "text": "x", "received_at": "yesterday"}),
            "received_at",
        ),
        (
            "/v1/webhook_secret/rotate",
            json!({"expires_in": "1"}),
            "expires_in",
        ),
        (
            "/v1/webhook_secret/rotate",
            json!({"expires_in": 604_801}),
            "expires_in",
        ),
        (
            SESSIONS,
            json!({"amount": 100, "currency": ["inr"]}),
            "currency",
        ),
        (
            SESSIONS,
            json!({"amount": 100, "currency": "inr", "customer_name": 7}),
            "customer_name",
        ),
        (
            SESSIONS,
            json!({"amount": 100, "currency": "inr", "payment_methods": "upi"}),
            "payment_methods",
        ),
        (
            SESSIONS,
            json!({"amount": 100, "currency": "inr", "expires_in": "600"}),
            "expires_in",
        ),
        (
            SESSIONS,
            json!({"amount": true, "currency": "inr"}),
            "amount",
        ),
    ];
    for (route, body, param) in &typed {
        let (st, _, e) = post(&c, &d.url(route), &key, body.clone(), None).await;
        assert_eq!(st, 400, "{route} {body}: {e}");
        assert_eq!(e["error"]["param"], *param, "{route} {body}: {e}");
        assert!(
            e["error"]["message"].as_str().is_some_and(|m| m.len() > 10),
            "{e}"
        );
    }
    // The customer's claim: JSON or a form, nothing else gets through.
    let claim = d.url(&format!("/c/{sid}/claim"));
    for (ct, body, code) in [
        (
            json_ct,
            b"{\"utr\": 412345678901}".to_vec(),
            "parameter_invalid",
        ),
        (
            json_ct,
            b"{\"utr\": \"4123456789012\"}".to_vec(),
            "parameter_invalid",
        ),
        (
            json_ct,
            b"{\"utr\": \"41234567890\xff\"}".to_vec(),
            "body_invalid_json",
        ),
        (
            json_ct,
            br#"{"utr": "412345678901", "tx_hash": "0x00"}"#.to_vec(),
            "parameter_invalid",
        ),
        (
            json_ct,
            br#"{"utr": "412345678901", "x": 1}"#.to_vec(),
            "parameter_unknown",
        ),
        (
            "application/x-www-form-urlencoded",
            b"utr=41234567890%FF".to_vec(),
            "parameter_invalid",
        ),
        (
            "application/x-www-form-urlencoded",
            b"utr=%00%00".to_vec(),
            "parameter_invalid",
        ),
        (
            "text/plain",
            b"utr=412345678901".to_vec(),
            "body_invalid_json",
        ),
    ] {
        let (st, e) = raw_post(&c, &claim, None, ct, body.clone()).await;
        assert_eq!(
            st,
            400,
            "claim {ct} {:?}: {e}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(e["error"]["code"], code, "claim {ct}: {e}");
    }
    assert_eq!(
        census(&c, &d, &key).await,
        before,
        "a bad request changed something"
    );
    let (_, now) = get(&c, &d.url(&format!("{SESSIONS}/{sid}")), &key).await;
    assert_eq!(now["status"], "open");
}

#[tokio::test]
async fn bodies_over_64_kib_are_refused_everywhere_even_when_chunked() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let (_, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 5200, "currency": "inr"}),
        None,
    )
    .await;
    let sid = s["id"].as_str().expect("id").to_owned();
    let before = census(&c, &d, &key).await;
    let pad = "x".repeat(64 * 1024 + 1);
    for (route, body, auth) in [
        (
            "/v1/webhook_endpoints".to_owned(),
            json!({"url": "https://shop.example/h", "description": pad}),
            true,
        ),
        (
            "/v1/upi/credits".to_owned(),
            json!({"source": "sms", "text": pad}),
            true,
        ),
        (format!("/c/{sid}/claim"), json!({"utr": pad}), false),
        (format!("/c/{sid}/simulate"), json!({"amount": pad}), false),
    ] {
        let (st, e) = raw_post(
            &c,
            &d.url(&route),
            auth.then_some(key.as_str()),
            "application/json",
            serde_json::to_vec(&body).expect("json"),
        )
        .await;
        assert_eq!(st, 413, "{route}: {e}");
        assert_eq!(e["error"]["code"], "request_too_large");
    }
    // No Content-Length to refuse up front: the reader stops at the limit all the same.
    let addr = d.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST {SESSIONS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b' '; 8192];
    for _ in 0..9 {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .expect("size");
        if s.write_all(&chunk).await.is_err() {
            break;
        }
        let _ = s.write_all(b"\r\n").await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request_too_large"), "{answer}");
    assert_eq!(census(&c, &d, &key).await, before);
}

/// Reads until the server closes the connection (or `limit` passes); returns what it sent and
/// how long it took.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut buf)).await;
    (String::from_utf8_lossy(&buf).into_owned(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_dropped_on_time_and_others_are_served_meanwhile() {
    let (d, key) = Daemon::started(&Opts::default());
    let addr = d.base.trim_start_matches("http://").to_owned();

    // Slowloris: headers one byte a second, never finished.
    let trickle = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.expect("connect");
            let t = Instant::now();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .expect("write");
            let (reader, mut writer) = s.into_split();
            let feeder = tokio::spawn(async move {
                for _ in 0..40 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if writer.write_all(b"a").await.is_err() {
                        break;
                    }
                }
            });
            let mut s = reader;
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(40), s.read_to_end(&mut buf)).await;
            feeder.abort();
            (String::from_utf8_lossy(&buf).into_owned(), t.elapsed())
        })
    };
    // Headers complete, then a body that never comes.
    let stalled = {
        let addr = addr.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.expect("connect");
            let head = format!(
                "POST {SESSIONS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"amount\": 1"
            );
            s.write_all(head.as_bytes()).await.expect("write");
            until_closed(&mut s, Duration::from_secs(40)).await
        })
    };
    // Many idle connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }

    // Meanwhile everybody else is served promptly.
    let c = client();
    let t = Instant::now();
    let mut served = 0;
    while t.elapsed() < Duration::from_secs(8) {
        let started = Instant::now();
        let (st, _) = get(&c, &d.url(SESSIONS), &key).await;
        assert_eq!(st, 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a request waited"
        );
        served += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served > 20, "served only {served}");

    let (sent, took) = trickle.await.expect("join");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(16),
        "the header trickler was dropped after {took:?} (header read timeout 10 s); it got {sent:?}"
    );
    assert!(!sent.contains("200 OK"), "{sent}");
    let (sent, took) = stalled.await.expect("join");
    assert!(
        took >= Duration::from_secs(19) && took < Duration::from_secs(26),
        "the stalled body was dropped after {took:?} (body read timeout 20 s)"
    );
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");
    assert!(sent.contains("request_timeout"), "{sent}");
    // The idle connections were closed by the header timeout as well.
    for mut s in idle {
        let (_, took) = until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(
            took < Duration::from_secs(5),
            "an idle connection is still open"
        );
    }
    let (st, list) = get(&c, &d.url(SESSIONS), &key).await;
    assert_eq!(st, 200);
    assert_eq!(
        list["data"].as_array().map(Vec::len),
        Some(0),
        "nothing was created"
    );
}

#[tokio::test]
async fn callbacks_to_internal_addresses_are_refused_however_they_are_spelled() {
    let (d, _) = Daemon::started(&Opts::default());
    // The merchant without an allow-list, so the address rule itself is what refuses.
    let key = create_key(&d.config, "other", &["--permissions", "*"]);
    let c = client();
    // A name that resolves to loopback through /etc/hosts: the machine's own host name.
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .expect("/etc/hostname");
    let resolved: Vec<std::net::IpAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 80))
            .map(|a| a.map(|s| s.ip()).collect())
            .unwrap_or_default();
    assert!(
        !resolved.is_empty() && resolved.iter().all(|ip| ip.is_loopback()),
        "precondition: the host name {host:?} should resolve to loopback here, got {resolved:?}"
    );
    let before = census(&c, &d, &key).await;
    for url in [
        "http://0x7f000001/hook".to_owned(),
        "http://2130706433/hook".to_owned(),
        "http://0177.0.0.1/hook".to_owned(),
        "http://127.1/hook".to_owned(),
        "http://[::ffff:127.0.0.1]/hook".to_owned(),
        "http://[::ffff:a9fe:a9fe]/latest/meta-data".to_owned(),
        "http://169.254.169.254./latest/meta-data".to_owned(),
        "http://[fd00:ec2::254]/latest/meta-data".to_owned(),
        "http://100.100.100.200/latest/meta-data".to_owned(),
        "http://0.0.0.0:8080/hook".to_owned(),
        "http://LOCALHOST./hook".to_owned(),
        "http://api.localhost/hook".to_owned(),
        format!("http://{host}:8080/hook"),
    ] {
        let (st, _, e) = post(
            &c,
            &d.url(SESSIONS),
            &key,
            json!({"amount": 100, "currency": "inr", "notify_url": url}),
            None,
        )
        .await;
        assert_eq!(st, 400, "{url}: {e}");
        assert_eq!(e["error"]["code"], "url_not_allowed", "{url}: {e}");
        let (st, _, e) = post(
            &c,
            &d.url("/v1/webhook_endpoints"),
            &key,
            json!({"url": url}),
            None,
        )
        .await;
        assert_eq!(st, 400, "{url}: {e}");
        assert_eq!(e["error"]["code"], "url_not_allowed", "{url}: {e}");
    }
    assert_eq!(census(&c, &d, &key).await, before);
}

#[tokio::test]
async fn merchant_text_is_escaped_on_the_page_and_the_policy_forbids_inline_script() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let evil = "\"'><img src=x onerror=alert(1)></title><svg onload=alert(2)>\u{202e}gnp.exe <script>alert(3)</script>";
    let (st, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 9900, "currency": "inr", "description": evil,
               "customer_name": "<b>Eve</b>", "customer_email": "eve@example.com",
               "metadata": {"secret": "<script>meta()</script>"}}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{s}");
    assert_eq!(s["description"], evil, "the API keeps the text as given");
    let id = s["id"].as_str().expect("id");
    let r = c
        .get(d.url(&format!("/c/{id}")))
        .send()
        .await
        .expect("page");
    assert_eq!(r.status().as_u16(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    for want in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(want), "CSP {csp:?} lacks {want}");
    }
    assert!(!csp.contains("unsafe"), "CSP {csp:?} allows unsafe-*");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let html = r.text().await.expect("html");
    for raw in [
        "<img src=x",
        "<svg onload",
        "<b>Eve",
        "<script>alert",
        "</title><",
        "meta()",
        "eve@example.com",
    ] {
        assert!(
            !html.contains(raw),
            "the page carries {raw:?} unescaped or leaks it"
        );
    }
    assert!(
        html.contains("img src=x onerror=alert(1)") && html.contains("alert(3)"),
        "the text is not shown escaped"
    );
    // Every script element loads a file from this origin: nothing inline for an injection to join.
    for (i, _) in html.match_indices("<script") {
        let tag = &html[i..html[i..].find('>').map_or(html.len(), |j| i + j)];
        assert!(
            tag.contains("src=\"/assets/"),
            "inline or foreign script: {tag}"
        );
    }
    // The public status carries none of the merchant's private fields.
    let (st, status) = get(&c, &d.url(&format!("/c/{id}/status")), "").await;
    assert_eq!(st, 200);
    let text = status.to_string();
    for private in [
        "description",
        "metadata",
        "customer_email",
        "eve@",
        "notify_url",
    ] {
        assert!(!text.contains(private), "status leaks {private}: {text}");
    }
}

#[tokio::test]
async fn guessed_utrs_all_get_the_same_answer_and_are_bounded_per_session() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    // A real credit that matches nothing: the thing a guesser would like to find.
    let (st, _, cr) = post(
        &c,
        &d.url("/v1/upi/credits"),
        &key,
        json!({"source": "manual", "amount": "7.77", "utr": "912345678901"}),
        None,
    )
    .await;
    assert_eq!(
        (st, cr["outcome"].as_str()),
        (200, Some("unmatched")),
        "{cr}"
    );
    let (_, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 150_000, "currency": "inr"}),
        None,
    )
    .await;
    let id = s["id"].as_str().expect("id").to_owned();
    let claim = |utr: &'static str| {
        let c = c.clone();
        let url = d.url(&format!("/c/{id}/claim"));
        async move {
            let r = c
                .post(url)
                .json(&json!({"utr": utr}))
                .send()
                .await
                .expect("claim");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    // Wrong guesses and the real (but far too small) credit look exactly alike.
    let first = claim("100000000001").await;
    assert_eq!(first.0, 202, "{}", first.1);
    for utr in [
        "100000000002",
        "912345678901",
        "100000000003",
        "100000000004",
    ] {
        assert_eq!(claim(utr).await, first, "{utr} answered differently");
    }
    // Then the session takes no more, and the refusal is the same whatever is guessed.
    let refused = claim("100000000005").await;
    assert_eq!(refused.0, 400, "{}", refused.1);
    assert_eq!(claim("912345678901").await, refused);
    assert_eq!(claim("100000000006").await, refused);
    let (_, now) = get(&c, &d.url(&format!("{SESSIONS}/{id}")), &key).await;
    assert_eq!(
        now["amount_received"], 0,
        "a claim alone moved money: {now}"
    );
    let (_, credits) = get(&c, &d.url("/v1/credits?status=unmatched"), &key).await;
    assert_eq!(
        credits["data"][0]["utr"], "912345678901",
        "the credit is still unmatched"
    );
}
