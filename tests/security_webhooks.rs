//! Issue 13, the webhook items, against the real binary and real HTTP receivers: test keys do
//! not control live callbacks (a secret per merchant and mode), keys default to least
//! privilege, and deliveries are fair (lanes per merchant and mode, an endpoint cap).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::receiver::{Received, Receiver};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SESSIONS: &str = "/v1/checkout/sessions";

fn opts(retry: &str) -> Opts {
    Opts {
        extra: format!(
            "\n[webhooks]\nallow_private_targets = true\nretry_schedule_secs = {retry}\n"
        ),
        ..Opts::default()
    }
}

/// Whether `secret` produced one of the Standard Webhooks signatures of this delivery.
fn signed_with(secret: &str, r: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(&secret["whsec_".len()..])
        .expect("b64");
    let mut m = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    m.update(
        format!(
            "{}.{}.",
            r.headers["webhook-id"], r.headers["webhook-timestamp"]
        )
        .as_bytes(),
    );
    m.update(&r.body);
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    );
    r.headers["webhook-signature"].split(' ').any(|s| s == want)
}

async fn secret(c: &reqwest::Client, d: &Daemon, key: &str) -> Value {
    let (st, v) = get(c, &d.url("/v1/webhook_secret"), key).await;
    assert_eq!(st, 200, "{v}");
    v
}

async fn paid_session(c: &reqwest::Client, d: &Daemon, key: &str, notify: &str) -> String {
    let body = json!({"amount": 14999, "currency": "inr", "notify_url": notify,
        "client_reference_id": "order-4711"});
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

/// A live session pointed at `notify`, then canceled: a live `checkout.session.canceled`
/// (simulate is test-only).
async fn canceled_live_session(c: &reqwest::Client, d: &Daemon, key: &str, notify: &str) {
    let body = json!({"amount": 14999, "currency": "inr", "notify_url": notify});
    let (st, _, s) = post(c, &d.url(SESSIONS), key, body, None).await;
    assert_eq!(st, 201, "{s}");
    let id = s["id"].as_str().expect("id");
    let (st, _, v) = post(
        c,
        &d.url(&format!("{SESSIONS}/{id}/cancel")),
        key,
        json!({}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
}

fn canceled(g: &[Received]) -> Vec<Received> {
    g.iter()
        .filter(|r| r.json()["type"] == "checkout.session.canceled")
        .cloned()
        .collect()
}

fn completed(g: &[Received]) -> Vec<Received> {
    g.iter()
        .filter(|r| r.json()["type"] == "checkout.session.completed")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_key_cannot_read_or_rotate_the_live_secret_and_test_callbacks_do_not_verify_with_it()
{
    let mut d = Daemon::prepare(&opts("[1, 1]"));
    let test = create_key(&d.config, "demo", &["--permissions", "*"]);
    let live = create_key(&d.config, "demo", &["--live", "--permissions", "*"]);
    d.start();
    let c = client();
    let live_secret = secret(&c, &d, &live).await;
    let test_secret = secret(&c, &d, &test).await;
    assert_ne!(
        live_secret["secret"], test_secret["secret"],
        "a test key must never see the live signing secret"
    );
    assert_eq!(live_secret["livemode"], true);
    assert_eq!(test_secret["livemode"], false);
    let live_s = live_secret["secret"].as_str().expect("s").to_owned();

    // Rotating with a test key (old secret dropped at once) leaves the live secret alone.
    let (st, _, rot) = post(
        &c,
        &d.url("/v1/webhook_secret/rotate"),
        &test,
        json!({"expires_in": 0}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{rot}");
    assert_eq!(rot["livemode"], false);
    let after = secret(&c, &d, &live).await;
    assert_eq!(
        after["secret"],
        live_s.as_str(),
        "the live secret is unchanged"
    );
    assert_eq!(after["previous"], json!([]));
    let test_s = rot["secret"].as_str().expect("s").to_owned();

    // A test session pointed at the merchant's production receiver and "paid" by the public
    // simulate button: its callback says livemode false and does not verify with the live secret.
    let prod = Receiver::start(0, &[]).await;
    paid_session(&c, &d, &test, &prod.url).await;
    let got = prod
        .wait_for(10, "the test completed event", |g| !completed(g).is_empty())
        .await;
    let r = &completed(&got)[0];
    assert_eq!(r.json()["livemode"], false);
    assert!(signed_with(&test_s, r), "signed with the test secret");
    assert!(
        !signed_with(&live_s, r),
        "a test-mode callback must not verify with the live secret"
    );

    // A live one is signed with the live secret only.
    canceled_live_session(&c, &d, &live, &prod.url).await;
    let got = prod
        .wait_for(10, "the live canceled event", |g| !canceled(g).is_empty())
        .await;
    let r = canceled(&got).remove(0);
    assert_eq!(r.json()["livemode"], true);
    assert!(signed_with(&live_s, &r));
    assert!(!signed_with(&test_s, &r));

    // Endpoints belong to one mode: a live endpoint is invisible to the test key and gets no
    // test events.
    let live_rx = Receiver::start(0, &[]).await;
    let (st, _, ep) = post(
        &c,
        &d.url("/v1/webhook_endpoints"),
        &live,
        json!({"url": live_rx.url}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{ep}");
    let we = ep["id"].as_str().expect("id");
    let (st, _) = get(&c, &d.url(&format!("/v1/webhook_endpoints/{we}")), &test).await;
    assert_eq!(st, 404);
    let (st, _, _) = post(
        &c,
        &d.url(&format!("/v1/webhook_endpoints/{we}/rotate_secret")),
        &test,
        json!({"expires_in": 0}),
        None,
    )
    .await;
    assert_eq!(st, 404, "a test key cannot rotate a live endpoint's secret");
    paid_session(&c, &d, &test, &prod.url).await;
    canceled_live_session(&c, &d, &live, &prod.url).await;
    let got = live_rx
        .wait_for(10, "the live endpoint's event", |g| !canceled(g).is_empty())
        .await;
    prod.wait_for(10, "both notify_url events", |g| {
        completed(g).len() >= 2 && canceled(g).len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        live_rx
            .received()
            .iter()
            .all(|r| r.json()["livemode"] == true),
        "no test event reached the live endpoint: {:?}",
        got.iter().map(Received::json).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_without_permissions_cannot_mint_payments_or_touch_signing_secrets() {
    let mut d = Daemon::prepare(&opts("[1, 1]"));
    let plain = create_key(&d.config, "demo", &[]);
    let plain_live = create_key(&d.config, "demo", &["--live"]);
    d.start();
    let c = client();
    // The operator API's default is the same.
    let r = c
        .post(format!("{}/admin/v1/keys", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"merchant": "demo"}))
        .send()
        .await
        .expect("send");
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v["permissions"],
        json!(["sessions:read", "sessions:write", "events:read"]),
        "{v}"
    );
    let api_key = v["secret"].as_str().expect("secret").to_owned();
    for key in [&plain, &plain_live, &api_key] {
        let (st, _, s) = post(
            &c,
            &d.url(SESSIONS),
            key,
            json!({"amount": 14999, "currency": "inr"}),
            None,
        )
        .await;
        assert_eq!(st, 201, "a default key creates sessions: {s}");
        let id = s["id"].as_str().expect("id");
        let (st, _) = get(&c, &d.url(&format!("{SESSIONS}/{id}")), key).await;
        assert_eq!(st, 200);
        let (st, _) = get(&c, &d.url("/v1/events"), key).await;
        assert_eq!(st, 200);
        let (st, _, e) = post(
            &c,
            &d.url("/v1/upi/credits"),
            key,
            json!({"source": "manual", "amount": "149.99", "utr": "512345678901"}),
            None,
        )
        .await;
        assert_eq!(st, 403, "a default key must not mint payments: {e}");
        assert_eq!(e["error"]["type"], "permission_error", "{e}");
        let (st, e) = get(&c, &d.url("/v1/webhook_secret"), key).await;
        assert_eq!(
            st, 403,
            "a default key must not read the signing secret: {e}"
        );
        let (st, _, _) = post(
            &c,
            &d.url("/v1/webhook_secret/rotate"),
            key,
            json!({}),
            None,
        )
        .await;
        assert_eq!(st, 403);
        let (st, _, _) = post(
            &c,
            &d.url("/v1/webhook_endpoints"),
            key,
            json!({"url": "http://127.0.0.1:9/hook"}),
            None,
        )
        .await;
        assert_eq!(st, 403);
        let (st, _, _) = post(
            &c,
            &d.url("/v1/refunds"),
            key,
            json!({"session": id, "amount": "1.00"}),
            None,
        )
        .await;
        assert_eq!(st, 403);
    }
    // Asked for by name, they work.
    let powerful = create_key(
        &d.config,
        "demo",
        &["--permissions", "credits:write,webhooks:write"],
    );
    let (st, _) = get(&c, &d.url("/v1/webhook_secret"), &powerful).await;
    assert_eq!(st, 200);
    // And the help says which permissions are powerful.
    let out = std::process::Command::new(BIN)
        .args(["keys", "create", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("default: sessions:read,sessions:write,events:read")
            && help.contains("credits:write (mints payments)")
            && help.contains("webhooks:write"),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_capped_per_merchant_and_mode() {
    let mut d = Daemon::prepare(&opts("[1, 1]"));
    let test = create_key(&d.config, "demo", &["--permissions", "*"]);
    let live = create_key(&d.config, "demo", &["--live", "--permissions", "*"]);
    let other = create_key(&d.config, "other", &["--permissions", "*"]);
    d.start();
    let c = client();
    let create = |key: String, n: u32| {
        let c = c.clone();
        let url = d.url("/v1/webhook_endpoints");
        async move {
            post(
                &c,
                &url,
                &key,
                json!({"url": format!("http://127.0.0.1:9/hook/{n}")}),
                None,
            )
            .await
        }
    };
    // Concurrently, so a check outside the writer's transaction would let extras through.
    let tasks: Vec<_> = (0..20)
        .map(|n| tokio::spawn(create(test.clone(), n)))
        .collect();
    let mut created = Vec::new();
    let mut refused = Vec::new();
    for t in tasks {
        let (st, _, v) = t.await.expect("task");
        match st {
            201 => created.push(v["id"].as_str().expect("id").to_owned()),
            _ => refused.push((st, v)),
        }
    }
    assert_eq!(created.len(), 16, "{refused:?}");
    assert_eq!(refused.len(), 4);
    for (st, e) in &refused {
        assert_eq!(*st, 409, "{e}");
        assert_eq!(e["error"]["code"], "endpoint_limit_reached", "{e}");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
        assert!(
            e["error"]["message"].as_str().expect("m").contains("16"),
            "{e}"
        );
    }
    let (_, list) = get(&c, &d.url("/v1/webhook_endpoints"), &test).await;
    assert_eq!(list["data"].as_array().expect("data").len(), 16);
    // Other modes and merchants have their own budget.
    for key in [&live, &other] {
        let (st, _, v) = create(key.clone(), 99).await;
        assert_eq!(st, 201, "{v}");
    }
    // Deleting one makes room again.
    let r = c
        .delete(d.url(&format!("/v1/webhook_endpoints/{}", created[0])))
        .bearer_auth(&test)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    let (st, _, v) = create(test.clone(), 100).await;
    assert_eq!(st, 201, "{v}");
    let (st, _, _) = create(test.clone(), 101).await;
    assert_eq!(st, 409);
}

/// Posts a manual credit that matches nothing: one `credit.unmatched` event.
async fn unmatched_credit(c: &reqwest::Client, d: &Daemon, key: &str, utr: u64) {
    let (st, _, v) = post(
        c,
        &d.url("/v1/upi/credits"),
        key,
        json!({"source": "manual", "amount": "1.23", "utr": utr.to_string()}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_test_deliveries_to_a_hung_receiver_does_not_delay_live_or_other_merchants() {
    // Retries far away, so only first attempts matter within the test.
    let mut d = Daemon::prepare(&opts("[60, 60]"));
    let test = create_key(&d.config, "demo", &["--permissions", "*"]);
    let live = create_key(&d.config, "demo", &["--live", "--permissions", "*"]);
    let other = create_key(&d.config, "other", &["--permissions", "*"]);
    d.start();
    let c = client();
    // A receiver that never answers: every attempt holds a slot for the 10 s attempt timeout.
    let hung = Receiver::start(0, &[0; 4000]).await;
    let live_rx = Receiver::start(0, &[]).await;
    let other_rx = Receiver::start(0, &[]).await;
    for n in 0..16 {
        let (st, _, v) = post(
            &c,
            &d.url("/v1/webhook_endpoints"),
            &test,
            json!({"url": format!("{}/{n}", hung.url)}),
            None,
        )
        .await;
        assert_eq!(st, 201, "{v}");
    }
    for (key, rx) in [(&live, &live_rx), (&other, &other_rx)] {
        let (st, _, v) = post(
            &c,
            &d.url("/v1/webhook_endpoints"),
            key,
            json!({"url": rx.url}),
            None,
        )
        .await;
        assert_eq!(st, 201, "{v}");
    }
    // 40 test events × 16 endpoints = 640 deliveries, all due before the live one.
    for i in 0..40 {
        unmatched_credit(&c, &d, &test, 300_000_000_000 + i).await;
    }
    hung.wait_for(10, "the flood to start", |g| g.len() >= 8)
        .await;
    let t0 = Instant::now();
    unmatched_credit(&c, &d, &live, 400_000_000_001).await;
    unmatched_credit(&c, &d, &other, 400_000_000_002).await;
    live_rx
        .wait_for(30, "the live delivery", |g| !g.is_empty())
        .await;
    let live_ms = t0.elapsed().as_millis();
    other_rx
        .wait_for(30, "the other merchant's delivery", |g| !g.is_empty())
        .await;
    let other_ms = t0.elapsed().as_millis();
    let flood_seen = hung.received().len();
    eprintln!(
        "live delivered after {live_ms} ms, other merchant after {other_ms} ms; \
         the hung receiver had seen {flood_seen} of 640 test deliveries"
    );
    assert!(
        flood_seen < 640,
        "the flood was still queued when the live event was delivered"
    );
    assert!(
        live_ms < 3_000,
        "a test flood delayed a live delivery by {live_ms} ms"
    );
    assert!(
        other_ms < 3_000,
        "one merchant's flood delayed another's delivery by {other_ms} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_keeps_the_one_old_secret_as_live_and_indexes_old_endpoints() {
    let mut d = Daemon::prepare(&opts("[1, 1]"));
    let test = create_key(&d.config, "demo", &["--permissions", "*"]);
    let live = create_key(&d.config, "demo", &["--live", "--permissions", "*"]);
    d.start();
    let c = client();
    let rx = Receiver::start(0, &[]).await;
    let (st, _, ep) = post(
        &c,
        &d.url("/v1/webhook_endpoints"),
        &test,
        json!({"url": rx.url}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{ep}");
    let live_before = secret(&c, &d, &live).await["secret"].clone();
    let test_before = secret(&c, &d, &test).await["secret"].clone();
    const ROTATE_WARNING: &str = "predates per-mode secrets";
    assert!(!d.stderr().contains(ROTATE_WARNING), "{}", d.stderr());
    assert_eq!(d.terminate(), Some(0));
    // Make the file look like one written before this change: one default secret per merchant
    // (under the bare merchant id) and no endpoint index.
    {
        let db = redb::Database::open(d.dir.join("paywatch.redb")).expect("open");
        let txn = db.begin_write().expect("txn");
        {
            let mut t = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new(
                    "merchant_secrets",
                ))
                .expect("secrets");
            t.remove("demo\u{1f}test")
                .expect("remove")
                .expect("a test secret");
        }
        assert!(
            txn.delete_table(redb::TableDefinition::<(&str, &str), ()>::new(
                "webhook_endpoint_index"
            ))
            .expect("delete")
        );
        txn.commit().expect("commit");
    }
    d.start();
    let live_after = secret(&c, &d, &live).await["secret"].clone();
    let test_after = secret(&c, &d, &test).await["secret"].clone();
    assert_eq!(
        live_after, live_before,
        "the old secret stays the live secret"
    );
    assert_ne!(test_after, test_before, "a fresh test secret was made");
    assert_ne!(test_after, live_after);
    // The merchant is told to rotate the inherited live secret.
    assert!(d.stderr().contains(ROTATE_WARNING), "{}", d.stderr());
    // The old endpoint is indexed again: listed, and it still gets its mode's events.
    let (_, list) = get(&c, &d.url("/v1/webhook_endpoints"), &test).await;
    assert_eq!(list["data"][0]["id"], ep["id"], "{list}");
    unmatched_credit(&c, &d, &test, 500_000_000_001).await;
    rx.wait_for(10, "the old endpoint's delivery", |g| !g.is_empty())
        .await;
}
