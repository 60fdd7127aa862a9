//! Stripe's official libraries as paywatch clients (issue 17): the Python library from PyPI and
//! the Node library from npm (installed by scripts/test) drive the real binary through
//! tests/stripe/*.{py,js}: create, retrieve, list with auto-pagination, expire, a simulated
//! payment, a refund, webhook endpoints, events, typed errors, and a callback verified at a real
//! receiver by each library's own `construct_event`. The rest checks the form dialect itself
//! against the binary: equivalence with JSON, hostile forms, and the `Stripe-Version` switch.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::receiver::Receiver;
use common::{Daemon, Opts, client, get};
use serde_json::{Value, json};

const STRIPE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stripe");

fn opts() -> Opts {
    Opts {
        extra: "\n[webhooks]\nallow_private_targets = true\nretry_schedule_secs = [1, 1, 1, 1]\n"
            .into(),
        ..Opts::default()
    }
}

/// Runs a library script; fails the test with its output unless it succeeds, and returns the
/// JSON of its last stdout line.
fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new(program);
    cmd.current_dir(STRIPE_DIR).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot run ({e}); scripts/test installs it"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{program} {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{program} printed {last:?}: {e}"))
}

fn node_library_present() {
    assert!(
        Path::new(STRIPE_DIR)
            .join("node_modules/stripe/package.json")
            .exists(),
        "tests/stripe/node_modules has no stripe: run scripts/test (npm ci in tests/stripe)"
    );
}

/// One library's whole flow, then every callback its endpoint got verified by that library.
async fn library_flow(program: &str, flow: &str, verify: &str) {
    let rx = Receiver::start(0, &[]).await;
    let (d, key) = Daemon::started(&opts());
    let env = [
        ("PAYWATCH_BASE", d.base.as_str()),
        ("PAYWATCH_KEY", key.as_str()),
        ("RECEIVER_URL", rx.url.as_str()),
    ];
    let out = run(program, &[flow, "flow"], &env);
    let session = out["session"].as_str().unwrap().to_owned();
    let secret = out["endpoint_secret"].as_str().unwrap().to_owned();
    assert!(
        out["paged"].as_u64().unwrap() >= 5,
        "auto-pagination: {out}"
    );
    let got = rx
        .wait_for(15, "the completed and refund callbacks", |got| {
            let types: Vec<String> = got
                .iter()
                .map(|r| r.json()["type"].as_str().unwrap_or_default().to_owned())
                .collect();
            types.iter().any(|t| t == "checkout.session.completed")
                && types.iter().any(|t| t == "refund.created")
        })
        .await;
    let tmp = tempfile::tempdir().unwrap();
    for (i, r) in got.iter().enumerate() {
        let header = r
            .headers
            .get("stripe-signature")
            .expect("a Stripe-Signature header")
            .clone();
        // The Standard Webhooks headers are still there beside it.
        assert!(r.headers.contains_key("webhook-signature"));
        assert!(r.headers.contains_key("x-paywatch-signature"));
        let file = tmp.path().join(format!("body{i}.json"));
        std::fs::write(&file, &r.body).unwrap();
        let v = run(
            program,
            &[verify, file.to_str().unwrap(), &header, &secret],
            &[],
        );
        let body = r.json();
        assert_eq!(v["id"], body["id"], "{v}");
        assert_eq!(v["type"], body["type"]);
        assert_eq!(
            v["refused"],
            json!(["tampered body", "wrong secret"]),
            "construct_event must refuse a tampered body and a wrong secret: {v}"
        );
        // The endpoint was made through the library, so its callbacks are in Stripe's shapes.
        assert!(body["created"].is_i64(), "{body}");
        assert!(
            body["api_version"].as_str().unwrap().starts_with("20"),
            "{body}"
        );
        assert!(body["data"]["object"]["created"].is_i64(), "{body}");
        if v["type"] == "checkout.session.completed" {
            assert_eq!(v["object"], "checkout.session");
            assert_eq!(v["object_id"], session.as_str());
            let s = &body["data"]["object"];
            assert!(
                s["expires_at"].is_i64() && s["completed_at"].is_i64(),
                "{s}"
            );
            assert_eq!(s["url"], s["checkout_url"]);
            // Metadata is the merchant's: a timestamp-looking value there stays text.
            if let Some(m) = s["metadata"].get("shipped_at") {
                assert_eq!(m, "2026-01-01T00:00:00Z");
            }
        }
    }
    rx.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_library_drives_paywatch_and_verifies_its_callbacks() {
    library_flow("python3", "flow.py", "verify.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_library_drives_paywatch_and_verifies_its_callbacks() {
    node_library_present();
    library_flow("node", "flow.js", "verify.js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_the_libraries_rate_limit_errors() {
    node_library_present();
    let (d, key) = Daemon::started(&Opts {
        rate_per_second: 1,
        burst: 3,
        ..Opts::default()
    });
    let env = [
        ("PAYWATCH_BASE", d.base.as_str()),
        ("PAYWATCH_KEY", key.as_str()),
    ];
    let py = run("python3", &["flow.py", "ratelimit"], &env);
    assert!(py["rate_limited_after"].as_u64().unwrap() <= 3, "{py}");
    let node = run("node", &["flow.js", "ratelimit"], &env);
    assert!(node["rate_limited_after"].as_u64().unwrap() <= 3, "{node}");
}

/// POSTs a form body; returns status, the idempotent-replayed header and the JSON body.
async fn post_form(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    body: &[u8],
    idem: Option<&str>,
    stripe_version: Option<&str>,
) -> (u16, bool, Value) {
    let mut rb = c
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_vec());
    if let Some(k) = idem {
        rb = rb.header("idempotency-key", k);
    }
    if let Some(v) = stripe_version {
        rb = rb.header("stripe-version", v);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    (status, replayed, r.json().await.unwrap_or(Value::Null))
}

async fn post_json(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    body: &str,
    idem: Option<&str>,
) -> (u16, bool, Value) {
    let mut rb = c
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(k) = idem {
        rb = rb.header("idempotency-key", k);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    (status, replayed, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_body_is_the_same_request_as_its_json() {
    let (d, key) = Daemon::started(&opts());
    let c = client();
    let url = d.url("/v1/checkout/sessions");
    let form = b"amount=14999&currency=inr&payment_method_types[0]=upi&metadata[order_id]=ORD-1&metadata[note]=a+b%26c";
    let (st, replayed, created) = post_form(&c, &url, &key, form, Some("same-request"), None).await;
    assert_eq!(st, 201, "{created}");
    assert!(!replayed);
    assert_eq!(
        created["metadata"],
        json!({"order_id": "ORD-1", "note": "a b&c"})
    );
    assert_eq!(created["payment_options"][0]["method"], "upi");
    // Without Stripe-Version: paywatch's own shape.
    assert!(created["created_at"].is_string() && created.get("url").is_none());

    // The same request as JSON, keys in another order, under the same key: a replay.
    let json_body = r#"{"metadata": {"note": "a b&c", "order_id": "ORD-1"}, "currency": "inr", "payment_methods": ["upi"], "amount": 14999}"#;
    let (st, replayed, again) = post_json(&c, &url, &key, json_body, Some("same-request")).await;
    assert_eq!((st, replayed), (201, true), "{again}");
    assert_eq!(again["id"], created["id"]);
    // A different request under it: 409, as for JSON.
    let (st, _, e) = post_form(
        &c,
        &url,
        &key,
        b"amount=15000&currency=inr",
        Some("same-request"),
        None,
    )
    .await;
    assert_eq!(st, 409);
    assert_eq!(e["error"]["code"], "idempotency_key_reused");
    // The other way round: JSON first, then its form.
    let (st, _, first) = post_json(
        &c,
        &url,
        &key,
        r#"{"amount":100,"currency":"inr"}"#,
        Some("k2"),
    )
    .await;
    assert_eq!(st, 201);
    let (st, replayed, second) =
        post_form(&c, &url, &key, b"currency=inr&amount=100", Some("k2"), None).await;
    assert_eq!((st, replayed), (201, true));
    assert_eq!(first["id"], second["id"]);

    // Errors are the JSON client's errors, byte for byte.
    for (form, json_body) in [
        (
            &b"amount=abc&currency=inr"[..],
            r#"{"amount":"abc","currency":"inr"}"#,
        ),
        (
            b"amount=-5&currency=inr",
            r#"{"amount":"-5","currency":"inr"}"#,
        ),
        (b"amount=0&currency=inr", r#"{"amount":0,"currency":"inr"}"#),
        (
            b"amount=100&currency=eur",
            r#"{"amount":100,"currency":"eur"}"#,
        ),
        (
            b"amount=100&currency=inr&surprise=1",
            r#"{"amount":100,"currency":"inr","surprise":"1"}"#,
        ),
        (
            b"amount=100&currency=inr&metadata[k][x]=1",
            r#"{"amount":100,"currency":"inr","metadata":{"k":{"x":"1"}}}"#,
        ),
        (
            b"amount=100&currency=inr&payment_methods[0]=card",
            r#"{"amount":100,"currency":"inr","payment_methods":["card"]}"#,
        ),
        (
            b"amount[]=100&currency=inr",
            r#"{"amount":["100"],"currency":"inr"}"#,
        ),
        (
            b"amount=100&currency=inr&expires_in=99999999",
            r#"{"amount":100,"currency":"inr","expires_in":99999999}"#,
        ),
    ] {
        let (fs, _, fe) = post_form(&c, &url, &key, form, None, None).await;
        let (js, _, je) = post_json(&c, &url, &key, json_body, None).await;
        assert_eq!(fs, 400, "{}: {fe}", String::from_utf8_lossy(form));
        assert_eq!((fs, &fe), (js, &je), "{}", String::from_utf8_lossy(form));
    }
    // Stripe's alias is named as the client named it.
    let (_, _, e) = post_form(
        &c,
        &url,
        &key,
        b"amount=100&currency=inr&payment_method_types[0]=card",
        None,
        None,
    )
    .await;
    assert_eq!(e["error"]["param"], "payment_method_types", "{e}");
    assert_eq!(e["error"]["code"], "payment_method_unavailable");
    let (_, _, e) = post_json(
        &c,
        &url,
        &key,
        r#"{"amount":100,"payment_method_types":["upi"],"payment_methods":["usdt_local"]}"#,
        None,
    )
    .await;
    assert_eq!(e["error"]["param"], "payment_method_types", "{e}");

    // An endpoint made without Stripe-Version has no api_version: its callbacks keep the contract.
    let (st, _, plain_ep) = post_json(
        &c,
        &d.url("/v1/webhook_endpoints"),
        &key,
        r#"{"url":"https://shop.example/plain"}"#,
        None,
    )
    .await;
    assert_eq!(st, 201);
    assert!(plain_ep.get("api_version").is_none(), "{plain_ep}");
    // Refunds and endpoints take forms too.
    let (st, _, ep) = post_form(&c, &d.url("/v1/webhook_endpoints"), &key,
        b"url=https%3A%2F%2Fshop.example%2Fhooks&enabled_events[]=refund.created&enabled_events[]=checkout.session.completed", None, None).await;
    assert_eq!(st, 201, "{ep}");
    assert_eq!(
        ep["events"],
        json!(["refund.created", "checkout.session.completed"])
    );
    let (st, _, e) = post_form(
        &c,
        &d.url("/v1/refunds"),
        &key,
        b"session=cs_test_nope&amount=10",
        None,
        None,
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (404, Some("resource_missing")),
        "{e}"
    );
    let (st, _, e) = post_form(
        &c,
        &d.url(&format!(
            "/v1/checkout/sessions/{}/expire",
            first["id"].as_str().unwrap()
        )),
        &key,
        b"",
        None,
        None,
    )
    .await;
    assert_eq!((st, e["status"].as_str()), (200, Some("expired")), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_forms_are_refused_by_name_and_change_nothing() {
    let (d, key) = Daemon::started(&opts());
    let c = client();
    let url = d.url("/v1/checkout/sessions");
    let deep = format!("amount=1&currency=inr&metadata{}=x", "[a]".repeat(40));
    let many = format!(
        "amount=1&currency=inr&{}",
        (0..2000)
            .map(|i| format!("payment_methods[{i}]=upi"))
            .collect::<Vec<_>>()
            .join("&")
    );
    for (body, param) in [
        ("amount=100&amount=200&currency=inr", Some("amount")),
        (
            "amount=100&currency=inr&metadata=x&metadata[k]=y",
            Some("metadata[k]"),
        ),
        (
            "amount=100&currency=inr&payment_methods[4000000000]=upi",
            Some("payment_methods[4000000000]"),
        ),
        (
            "amount=100&currency=inr&payment_methods[1]=upi",
            Some("payment_methods[1]"),
        ),
        (
            "amount=100&currency=inr&payment_methods[0]=upi&payment_methods[0]=upi",
            Some("payment_methods[0]"),
        ),
        ("amount=100&currency=inr&metadata[k=1", Some("metadata[k")),
        ("amount=100&currency=inr&[x]=1", Some("[x]")),
        ("amount=100&currency=inr&=1", None),
        ("amount=100&currency=%FF", None),
        (deep.as_str(), Some(&deep[22..deep.len() - 2])),
    ] {
        let (st, _, e) = post_form(&c, &url, &key, body.as_bytes(), None, None).await;
        assert_eq!(st, 400, "{body}: {e}");
        assert_eq!(e["error"]["code"], "body_invalid_form", "{body}: {e}");
        assert_eq!(e["error"]["param"].as_str(), param, "{body}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().len() < 400);
    }
    // A huge array of one method is one method (as in JSON); a body over the cap is 413 unread.
    let (st, _, s) = post_form(&c, &url, &key, many.as_bytes(), None, None).await;
    assert_eq!(st, 201, "{s}");
    assert_eq!(s["payment_options"].as_array().unwrap().len(), 1);
    let big = format!("amount=1&currency=inr&description={}", "x".repeat(70_000));
    let (st, _, _) = post_form(&c, &url, &key, big.as_bytes(), None, None).await;
    assert_eq!(st, 413);
    // Nothing but the one valid session was created.
    let (_, list) = get(&c, &d.url("/v1/checkout/sessions?limit=100"), &key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    // A form cannot smuggle a session across merchants or modes: the key decides, as for JSON.
    let (st, _, e) = post_form(
        &c,
        &url,
        &key,
        b"amount=1&currency=inr&merchant_id=other&livemode=true",
        None,
        None,
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("parameter_unknown")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_version_selects_stripes_shapes_and_only_it() {
    let (d, key) = Daemon::started(&opts());
    let c = client();
    let url = d.url("/v1/checkout/sessions");
    let (st, _, s) = post_form(
        &c,
        &url,
        &key,
        b"amount=500&currency=inr&metadata[paid_at]=2026-01-01T00:00:00Z",
        None,
        Some("2026-10-28.endive"),
    )
    .await;
    assert_eq!(st, 201, "{s}");
    assert!(
        s["created"].is_i64() && s["expires_at"].is_i64() && s["created_at"].is_i64(),
        "{s}"
    );
    assert_eq!(s["url"], s["checkout_url"]);
    assert_eq!(s["amount_total"], 500);
    assert_eq!(s["metadata"]["paid_at"], "2026-01-01T00:00:00Z");
    let id = s["id"].as_str().unwrap();

    // The same session read without the header: the contract as before, no Stripe fields.
    let (_, plain) = get(&c, &d.url(&format!("/v1/checkout/sessions/{id}")), &key).await;
    assert!(
        plain["expires_at"].as_str().unwrap().ends_with('Z'),
        "{plain}"
    );
    for k in ["url", "created", "amount_total", "payment_method_types"] {
        assert!(
            plain.get(k).is_none(),
            "{k} leaked into the JSON contract: {plain}"
        );
    }
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(plain["expires_at"].as_str().unwrap())
            .unwrap()
            .timestamp(),
        s["expires_at"].as_i64().unwrap()
    );
    // Lists, with Stripe's created[gte] and expand[] in the query.
    let r = c
        .get(format!(
            "{url}?limit=1&expand[]=data.payment_intent&created[gte]=1"
        ))
        .bearer_auth(&key)
        .header("stripe-version", "2026-10-28")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let l: Value = r.json().await.unwrap();
    assert_eq!(l["data"][0]["id"], id);
    assert!(l["data"][0]["created"].is_i64());
    // A far-future created[gte] finds nothing: the mapping is real, not dropped.
    let (_, l) = get(&c, &format!("{url}?created%5Bgte%5D=4102444800"), &key).await;
    assert_eq!(l["data"], json!([]), "{l}");
    // A replay is written in the shape of the request that replays it; the stored answer is one.
    let (st, _, plain_first) = post_json(
        &c,
        &url,
        &key,
        r#"{"amount":700,"currency":"inr"}"#,
        Some("shape"),
    )
    .await;
    assert_eq!(st, 201);
    assert!(plain_first["expires_at"].is_string());
    let (st, replayed, stripe_again) = post_form(
        &c,
        &url,
        &key,
        b"amount=700&currency=inr",
        Some("shape"),
        Some("2026-10-28"),
    )
    .await;
    assert_eq!((st, replayed), (201, true));
    assert_eq!(stripe_again["id"], plain_first["id"]);
    assert!(
        stripe_again["expires_at"].is_i64() && stripe_again["url"].is_string(),
        "{stripe_again}"
    );
    // A malformed version is refused by name, and nothing is created.
    for bad in [
        "latest",
        "2026-10-28.",
        "2026-10-28.ENDIVE",
        "26-10-28",
        "2026-10-28.endive;x",
    ] {
        let (st, _, e) = post_form(&c, &url, &key, b"amount=1&currency=inr", None, Some(bad)).await;
        assert_eq!(st, 400, "{bad}: {e}");
        assert_eq!(e["error"]["code"], "stripe_version_invalid");
        assert_eq!(e["error"]["param"], "Stripe-Version");
    }
    let (_, list) = get(&c, &d.url("/v1/checkout/sessions"), &key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    // Errors keep the one error shape (Stripe's libraries read it as is).
    let r = c
        .get(d.url("/v1/checkout/sessions/cs_test_nope"))
        .bearer_auth(&key)
        .header("stripe-version", "2026-10-28")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
}
