//! Callbacks end to end: the real daemon delivers to a real HTTP receiver on loopback, signatures
//! verified by hand and by the `standardwebhooks` Python package, retries until a failing
//! receiver recovers, nothing lost across SIGKILL, endpoint filters, and the SSRF refusal.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::Command;

use base64::Engine as _;
use common::receiver::Receiver;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SESSIONS: &str = "/v1/checkout/sessions";

fn opts_private_allowed() -> Opts {
    Opts {
        extra: "\n[webhooks]\nallow_private_targets = true\nretry_schedule_secs = [1, 1, 1, 1]\n"
            .into(),
        ..Opts::default()
    }
}

async fn paid_session(c: &reqwest::Client, d: &Daemon, key: &str, notify: Option<&str>) -> String {
    let mut body = json!({"amount": 14999, "currency": "inr"});
    if let Some(u) = notify {
        body["notify_url"] = json!(u);
    }
    let (st, _, s) = post(c, &d.url(SESSIONS), key, body, None).await;
    assert_eq!(st, 201, "{s}");
    let id = s["id"].as_str().expect("id").to_owned();
    let r = c
        .post(d.url(&format!("/c/{id}/simulate")))
        .send()
        .await
        .expect("simulate");
    assert_eq!(r.status().as_u16(), 200);
    id
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("key");
    m.update(msg);
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

/// Verifies with the reference Python library; the test command installs it.
fn verify_with_python(
    secret: &str,
    body: &[u8],
    headers: &std::collections::HashMap<String, String>,
) {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("body"), body).expect("body");
    std::fs::write(
        dir.path().join("headers.json"),
        serde_json::to_vec(headers).expect("h"),
    )
    .expect("headers");
    let script = "import sys, json\nfrom standardwebhooks.webhooks import Webhook\n\
        body = open(sys.argv[2], 'rb').read()\nheaders = json.load(open(sys.argv[3]))\n\
        Webhook(sys.argv[1]).verify(body, headers)\n\
        try:\n    Webhook(sys.argv[1]).verify(body + b' ', headers)\n    sys.exit('tampered body verified')\n\
        except Exception:\n    print('verified')\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(secret)
        .arg(dir.path().join("body"))
        .arg(dir.path().join("headers.json"))
        .output()
        .expect("python3 must be installed (scripts/test installs the standardwebhooks package)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("verified"),
        "standardwebhooks refused the delivery (is it installed? scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_session_is_delivered_signed_and_verifiable() {
    let (d, key) = Daemon::started(&opts_private_allowed());
    let rx = Receiver::start(0, &[]).await;
    let c = client();
    let id = paid_session(&c, &d, &key, Some(&rx.url)).await;
    let got = rx
        .wait_for(10, "the completed event", |g| {
            g.iter()
                .any(|r| r.json()["type"] == "checkout.session.completed")
        })
        .await;
    let r = got
        .iter()
        .find(|r| r.json()["type"] == "checkout.session.completed")
        .expect("completed");
    let ev = r.json();
    assert_eq!(ev["object"], "event");
    assert_eq!(ev["data"]["object"]["id"], id.as_str());
    assert_eq!(ev["data"]["object"]["status"], "complete");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["webhook-id"], ev["id"].as_str().expect("id"));
    assert!(r.headers["user-agent"].starts_with("paywatch/"));
    assert!(
        !r.headers.values().any(|v| v.contains("pw_test_")),
        "no key in any header"
    );

    // By hand, with the merchant's default secret.
    let (st, sec) = get(&c, &d.url("/v1/webhook_secret"), &key).await;
    assert_eq!(st, 200);
    let secret = sec["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"));
    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(&secret["whsec_".len()..])
        .expect("b64");
    let ts = &r.headers["webhook-timestamp"];
    let now = chrono::Utc::now().timestamp();
    assert!((now - ts.parse::<i64>().expect("ts")).abs() < 60);
    let signed = [
        r.headers["webhook-id"].as_bytes(),
        b".",
        ts.as_bytes(),
        b".",
        &r.body,
    ]
    .concat();
    assert_eq!(
        r.headers["webhook-signature"],
        format!("v1,{}", hmac_b64(&key_bytes, &signed))
    );
    let mut m = Hmac::<Sha256>::new_from_slice(&key_bytes).expect("key");
    m.update(&[ts.as_bytes(), b".", &r.body].concat());
    assert_eq!(
        r.headers["x-paywatch-signature"],
        format!("t={ts},v1={}", hex::encode(m.finalize().into_bytes()))
    );
    // And by the Standard Webhooks reference library.
    verify_with_python(&secret, &r.body, &r.headers);

    // The event shows its delivery.
    let (st, e) = get(
        &c,
        &d.url(&format!("/v1/events/{}", ev["id"].as_str().expect("id"))),
        &key,
    )
    .await;
    assert_eq!(st, 200);
    let dl = &e["deliveries"][0];
    assert_eq!(dl["url"], rx.url.as_str());
    assert_eq!(dl["status"], "succeeded");
    assert_eq!(dl["attempts"][0]["status_code"], 200);

    // After a rotation both secrets sign, so receivers can switch over.
    let (st, _, rot) = post(
        &c,
        &d.url("/v1/webhook_secret/rotate"),
        &key,
        json!({"expires_in": 3600}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{rot}");
    assert_eq!(rot["previous"][0]["secret"], secret.as_str());
    let before = rx.received().len();
    paid_session(&c, &d, &key, Some(&rx.url)).await;
    let got = rx
        .wait_for(10, "a delivery after rotation", |g| g.len() > before)
        .await;
    let sigs = &got.last().expect("one").headers["webhook-signature"];
    assert_eq!(sigs.split(' ').count(), 2, "{sigs}");
    verify_with_python(
        &secret,
        &got.last().expect("one").body,
        &got.last().expect("one").headers,
    );
    verify_with_python(
        rot["secret"].as_str().expect("new"),
        &got.last().expect("one").body,
        &got.last().expect("one").headers,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_event_once_it_recovers() {
    let (d, key) = Daemon::started(&opts_private_allowed());
    // 500, 503, connection-level success but 404, then 200.
    let rx = Receiver::start(0, &[500, 503, 404]).await;
    let c = client();
    let id = paid_session(&c, &d, &key, Some(&rx.url)).await;
    let got = rx
        .wait_for(20, "the fourth attempt", |g| {
            g.iter()
                .filter(|r| r.json()["type"] == "checkout.session.completed")
                .count()
                >= 4
        })
        .await;
    let ids: Vec<Value> = got.iter().map(|r| r.json()["id"].clone()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "retries carry the same event id"
    );
    let evt = got[0].json()["id"].as_str().expect("id").to_owned();
    let mut dl = Value::Null;
    for _ in 0..100 {
        let (_, e) = get(&c, &d.url(&format!("/v1/events/{evt}")), &key).await;
        dl = e["deliveries"][0].clone();
        if dl["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(dl["status"], "succeeded", "{dl}");
    let codes: Vec<Value> = dl["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, vec![json!(500), json!(503), json!(404), json!(200)]);
    let _ = id;

    // A receiver that never answers 2xx: failed after the schedule, visible, and redeliverable.
    let dead = Receiver::start(0, &[500; 10]).await;
    paid_session(&c, &d, &key, Some(&dead.url)).await;
    dead.wait_for(20, "five attempts", |g| g.len() >= 5).await;
    let evt = dead.received()[0].json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut status = Value::Null;
    for _ in 0..100 {
        let (_, e) = get(&c, &d.url(&format!("/v1/events/{evt}")), &key).await;
        status = e["deliveries"][0]["status"].clone();
        if status == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, "failed");
    assert_eq!(dead.received().len(), 5, "1 try + 4 retries, then stop");
    let (st, _, r) = post(
        &c,
        &d.url(&format!("/v1/events/{evt}/redeliver")),
        &key,
        json!({}),
        None,
    )
    .await;
    assert_eq!(st, 202, "{r}");
    dead.wait_for(10, "the redelivery", |g| g.len() >= 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_while_the_receiver_is_down_survive_sigkill() {
    let (mut d, key) = Daemon::started(&opts_private_allowed());
    // A port with nothing listening yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("a")
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let c = client();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(paid_session(&c, &d, &key, Some(&url)).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    d.kill();
    let rx = Receiver::start(port, &[]).await;
    d.start();
    let got = rx
        .wait_for(20, "all five completed events", |g| {
            let done: std::collections::BTreeSet<String> = g
                .iter()
                .filter(|r| r.json()["type"] == "checkout.session.completed")
                .map(|r| {
                    r.json()["data"]["object"]["id"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned()
                })
                .collect();
            ids.iter().all(|i| done.contains(i))
        })
        .await;
    assert!(got.len() >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_gets_only_the_types_it_asked_for() {
    let (d, key) = Daemon::started(&opts_private_allowed());
    let all = Receiver::start(0, &[]).await;
    let expired_only = Receiver::start(0, &[]).await;
    let c = client();
    let (st, _, ep) = post(
        &c,
        &d.url("/v1/webhook_endpoints"),
        &key,
        json!({"url": expired_only.url, "events": ["checkout.session.expired"]}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{ep}");
    let ep_secret = ep["secret"].as_str().expect("secret shown once").to_owned();
    let (st, _, _) = post(
        &c,
        &d.url("/v1/webhook_endpoints"),
        &key,
        json!({"url": all.url, "events": ["*"]}),
        None,
    )
    .await;
    assert_eq!(st, 201);
    let (_, listed) = get(&c, &d.url("/v1/webhook_endpoints"), &key).await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2));
    assert!(
        listed["data"][0].get("secret").is_none(),
        "the secret is shown only at creation"
    );

    paid_session(&c, &d, &key, None).await; // completed
    let (_, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 500, "currency": "inr"}),
        None,
    )
    .await;
    let (st, _, _) = post(
        &c,
        &d.url(&format!(
            "{SESSIONS}/{}/expire",
            s["id"].as_str().expect("id")
        )),
        &key,
        json!({}),
        None,
    )
    .await;
    assert_eq!(st, 200);
    all.wait_for(10, "both events at the catch-all endpoint", |g| {
        g.len() >= 2
    })
    .await;
    let got = expired_only
        .wait_for(10, "the expired event", |g| !g.is_empty())
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let types: Vec<String> = expired_only
        .received()
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(types, vec!["checkout.session.expired"]);
    verify_with_python(&ep_secret, &got[0].body, &got[0].headers);

    // Deleted: nothing more arrives there; another merchant cannot see or delete it.
    let other = create_key(&d.config, "other", &["--permissions", "*"]);
    let r = c
        .delete(d.url(&format!(
            "/v1/webhook_endpoints/{}",
            ep["id"].as_str().expect("id")
        )))
        .bearer_auth(&other)
        .send()
        .await
        .expect("del");
    assert_eq!(r.status().as_u16(), 404);
    let r = c
        .delete(d.url(&format!(
            "/v1/webhook_endpoints/{}",
            ep["id"].as_str().expect("id")
        )))
        .bearer_auth(&key)
        .send()
        .await
        .expect("del");
    assert_eq!(r.status().as_u16(), 200);
    let (st, _, e) = post(
        &c,
        &d.url("/v1/webhook_endpoints"),
        &key,
        json!({"url": all.url, "events": ["checkout.session.paid"]}),
        None,
    )
    .await;
    assert_eq!(st, 400, "unknown event type: {e}");
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let (d, _) = Daemon::started(&Opts::default());
    // The merchant without an allow-list, so the address rule itself is what refuses.
    let key = create_key(&d.config, "other", &["--permissions", "*"]);
    let c = client();
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:8080/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://10.0.0.5/hook",
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
        assert_eq!(e["error"]["param"], "notify_url");
        assert_eq!(e["error"]["code"], "url_not_allowed");
        assert!(
            e["error"]["message"]
                .as_str()
                .expect("m")
                .contains("allow_private_targets")
        );
        let (st, _, _) = post(
            &c,
            &d.url("/v1/webhook_endpoints"),
            &key,
            json!({"url": url}),
            None,
        )
        .await;
        assert_eq!(st, 400, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_endpoint_never_holds_up_other_destinations() {
    let (d, key) = Daemon::started(&opts_private_allowed());
    let hung = Receiver::start(0, &[0; 1000]).await;
    let healthy = Receiver::start(0, &[]).await;
    let c = client();
    let (st, _, _) = post(
        &c,
        &d.url("/v1/webhook_endpoints"),
        &key,
        json!({"url": hung.url, "events": ["*"]}),
        None,
    )
    .await;
    assert_eq!(st, 201);
    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(paid_session(&c, &d, &key, Some(&healthy.url)).await);
    }
    healthy
        .wait_for(5, "all 20 callbacks at the healthy receiver", |g| {
            g.len() >= 20
        })
        .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the hung endpoint (10 s timeouts) delayed the others"
    );
    assert!(
        hung.received().len() <= 32,
        "at most 32 in flight to one destination"
    );
}
