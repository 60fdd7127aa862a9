//! Payment links against the real binary: a link opened twice gives two sessions that name
//! it, both paid by simulate, its count is then 2 and its limit of 2 refuses a third (410 with
//! a page); a customer-entered amount outside the bounds is refused on a form that works
//! without JavaScript; hostile inputs (huge or negative amounts, bad currencies, forged ids,
//! another merchant's link) are refused and change nothing; the printable QR codes decode to
//! the link (zbarimg).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, Opts, client, config_text, create_key, get, post};
use serde_json::{Value, json};

const LINKS: &str = "/v1/payment_links";

fn started_with(server_extra: &str, extra: &str) -> (Daemon, String) {
    let o = Opts {
        extra: extra.to_owned(),
        ..Opts::default()
    };
    let server_extra = server_extra.to_owned();
    let mut d = Daemon::prepare_text(move |dir| {
        config_text(dir, &o).replace("[server]\n", &format!("[server]\n{server_extra}\n"))
    });
    let key = create_key(&d.config, "demo", &["--permissions", "*"]);
    d.start();
    (d, key)
}

async fn make(c: &reqwest::Client, d: &Daemon, key: &str, body: Value) -> Value {
    let (st, _, l) = post(c, &d.url(LINKS), key, body.clone(), None).await;
    assert_eq!(st, 201, "{body}: {l}");
    l
}

/// The path of a link's public URL on this daemon (its URL names the public_url host).
fn path_of(url: &str) -> String {
    url.strip_prefix("http://pay.test")
        .expect("public_url")
        .to_owned()
}

/// Opens a link (GET, or POST with a form `amount`): (status, Location, body).
async fn open(
    c: &reqwest::Client,
    d: &Daemon,
    url: &str,
    amount: Option<&str>,
) -> (u16, String, String) {
    let r = match amount {
        None => c.get(d.url(&path_of(url))).send().await.unwrap(),
        Some(a) => c
            .post(d.url(&path_of(url)))
            .form(&[("amount", a)])
            .send()
            .await
            .unwrap(),
    };
    let st = r.status().as_u16();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (st, loc, r.text().await.unwrap())
}

async fn count(c: &reqwest::Client, d: &Daemon, key: &str, path: &str) -> usize {
    let (st, l) = get(c, &d.url(&format!("{path}?limit=100")), key).await;
    assert_eq!(st, 200, "{l}");
    l["data"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_opened_twice_is_paid_twice_then_its_limit_refuses_a_third() {
    let (d, key) = started_with("", "");
    let c = client();
    let l = make(
        &c,
        &d,
        &key,
        json!({"amount": 50000, "currency": "inr", "description": "Workshop ticket",
               "payment_methods": ["upi"], "max_uses": 2, "metadata": {"event": "ws-1"}}),
    )
    .await;
    let id = l["id"].as_str().unwrap();
    assert!(id.starts_with("pl_"), "{l}");
    assert_eq!(l["object"], "payment_link");
    assert_eq!(l["url"], format!("http://pay.test/l/{id}"));
    assert_eq!(
        (
            l["active"].clone(),
            l["uses"].clone(),
            l["max_uses"].clone()
        ),
        (json!(true), json!(0), json!(2))
    );

    let mut sessions = Vec::new();
    for _ in 0..2 {
        let (st, loc, body) = open(&c, &d, l["url"].as_str().unwrap(), None).await;
        assert_eq!(st, 303, "{body}");
        let sid = loc
            .strip_prefix("http://pay.test/c/")
            .expect("a checkout_url")
            .to_owned();
        sessions.push(sid);
    }
    assert_ne!(sessions[0], sessions[1], "each opening is a fresh session");
    for sid in &sessions {
        let (_, s) = get(&c, &d.url(&format!("/v1/checkout/sessions/{sid}")), &key).await;
        assert_eq!(s["amount"], 50000);
        assert_eq!(s["currency"], "inr");
        assert_eq!(s["description"], "Workshop ticket");
        assert_eq!(s["metadata"]["payment_link"], id, "{s}");
        assert_eq!(s["metadata"]["event"], "ws-1", "{s}");
        let r = c
            .post(d.url(&format!("/c/{sid}/simulate")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let (_, s) = get(&c, &d.url(&format!("/v1/checkout/sessions/{sid}")), &key).await;
        assert_eq!(s["status"], "complete", "{s}");
    }
    let (_, got) = get(&c, &d.url(&format!("{LINKS}/{id}")), &key).await;
    assert_eq!(got["completed_payments"], 2, "{got}");
    assert_eq!(got["uses"], 2, "{got}");
    // The completed events carry the link's id.
    let (_, ev) = get(
        &c,
        &d.url("/v1/events?type=checkout.session.completed"),
        &key,
    )
    .await;
    let naming = ev["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["object"]["metadata"]["payment_link"] == id)
        .count();
    assert_eq!(naming, 2, "{ev}");

    let before = count(&c, &d, &key, "/v1/checkout/sessions").await;
    let (st, loc, page) = open(&c, &d, l["url"].as_str().unwrap(), None).await;
    assert_eq!(st, 410, "{page}");
    assert!(loc.is_empty());
    assert!(
        page.contains("This payment link is no longer available"),
        "{page}"
    );
    assert!(page.contains("used as many times as it allows"), "{page}");
    let (st, _, _) = open(&c, &d, l["url"].as_str().unwrap(), Some("500.00")).await;
    assert_eq!(st, 410, "a POST is refused too");
    assert_eq!(
        count(&c, &d, &key, "/v1/checkout/sessions").await,
        before,
        "no session made"
    );

    // Listed; a second link deactivated is closed with its own reason.
    let other = make(&c, &d, &key, json!({"amount": 1000, "currency": "inr"})).await;
    let oid = other["id"].as_str().unwrap();
    let (_, list) = get(&c, &d.url(LINKS), &key).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![oid, id], "newest first");
    let (st, _, off) = post(
        &c,
        &d.url(&format!("{LINKS}/{oid}/deactivate")),
        &key,
        json!({}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{off}");
    assert_eq!(off["active"], false);
    let (st, _, page) = open(&c, &d, other["url"].as_str().unwrap(), None).await;
    assert_eq!(st, 410);
    assert!(page.contains("turned this link off"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_amount_outside_the_bounds_is_refused_on_the_form() {
    let (d, key) = started_with("", "");
    let c = client();
    let l = make(
        &c,
        &d,
        &key,
        json!({"amount_min": 10000, "amount_max": 500000, "currency": "inr", "payment_methods": ["upi"]}),
    )
    .await;
    let url = l["url"].as_str().unwrap();
    // The page is a plain form: no script, POSTing `amount` to the link itself.
    let (st, _, page) = open(&c, &d, url, None).await;
    assert_eq!(st, 200, "{page}");
    assert!(
        page.contains(&format!(
            r#"<form id="link-form" method="post" action="/l/{}">"#,
            l["id"].as_str().unwrap()
        )),
        "{page}"
    );
    assert!(page.contains(r#"name="amount""#), "{page}");
    assert!(
        !page.contains("<script"),
        "works without JavaScript: {page}"
    );
    assert!(page.contains("100.00 – 5000.00"), "{page}");

    let before = count(&c, &d, &key, "/v1/checkout/sessions").await;
    for bad in [
        "99.99",
        "5000.01",
        "0",
        "-5",
        "abc",
        "1e9",
        "12.345",
        "99999999999999999999999",
        "",
    ] {
        let (st, loc, page) = open(&c, &d, url, Some(bad)).await;
        assert_eq!(st, 400, "{bad:?}: {page}");
        assert!(loc.is_empty());
        assert!(page.contains("within the allowed range"), "{bad:?}: {page}");
    }
    assert_eq!(
        count(&c, &d, &key, "/v1/checkout/sessions").await,
        before,
        "nothing was created"
    );
    let (_, got) = get(
        &c,
        &d.url(&format!("{LINKS}/{}", l["id"].as_str().unwrap())),
        &key,
    )
    .await;
    assert_eq!(got["uses"], 0, "refused entries use nothing: {got}");

    let (st, loc, _) = open(&c, &d, url, Some("150.50")).await;
    assert_eq!(st, 303);
    let sid = loc.strip_prefix("http://pay.test/c/").unwrap();
    let (_, s) = get(&c, &d.url(&format!("/v1/checkout/sessions/{sid}")), &key).await;
    assert_eq!(s["amount"], 15050, "{s}");
    let (st, _, _) = open(&c, &d, url, Some("5000.00")).await;
    assert_eq!(st, 303, "the bound itself is allowed");
    // A decimal comma is the decimal point; a "thousands" comma is refused, never misread.
    let (st, loc, _) = open(&c, &d, url, Some("249,5")).await;
    assert_eq!(st, 303);
    let sid = loc.strip_prefix("http://pay.test/c/").unwrap();
    let (_, s) = get(&c, &d.url(&format!("/v1/checkout/sessions/{sid}")), &key).await;
    assert_eq!(s["amount"], 24950, "{s}");
    let (st, _, _) = open(&c, &d, url, Some("1,250")).await;
    assert_eq!(st, 400);
}

/// Attacker: a key holder sends links that are not prices, and anyone on the internet sends
/// forged link ids. Each is refused with a specific error and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_link_inputs_are_refused_and_change_nothing() {
    let (d, key) = started_with("", "");
    let c = client();
    let past = chrono_like_past();
    for (body, code, param) in [
        (
            json!({"amount": 10_000_000_001u64, "currency": "inr"}),
            "parameter_invalid",
            "amount",
        ),
        (
            json!({"amount": 18446744073709551615u64, "currency": "inr"}),
            "parameter_invalid",
            "amount",
        ),
        (
            json!({"amount": -1, "currency": "inr"}),
            "parameter_invalid",
            "amount",
        ),
        (
            json!({"amount": 1.5, "currency": "inr"}),
            "parameter_invalid",
            "amount",
        ),
        (
            json!({"amount": "100", "currency": "inr"}),
            "parameter_invalid",
            "amount",
        ),
        (json!({"currency": "inr"}), "parameter_missing", "amount"),
        (json!({"amount": 100}), "parameter_missing", "currency"),
        (
            json!({"amount": 100, "currency": "xyz"}),
            "parameter_invalid",
            "currency",
        ),
        (
            json!({"amount": 100, "currency": "eur", "payment_methods": ["usdt_local"]}),
            "parameter_invalid",
            "currency",
        ),
        (
            json!({"amount": 100, "amount_min": 10, "currency": "inr"}),
            "parameter_invalid",
            "amount",
        ),
        (
            json!({"amount_min": 500, "amount_max": 100, "currency": "inr"}),
            "parameter_invalid",
            "amount_min",
        ),
        (
            json!({"amount_min": 0, "currency": "inr"}),
            "parameter_invalid",
            "amount_min",
        ),
        (
            json!({"amount": 100, "currency": "inr", "max_uses": 0}),
            "parameter_invalid",
            "max_uses",
        ),
        (
            json!({"amount": 100, "currency": "inr", "max_uses": -2}),
            "parameter_invalid",
            "max_uses",
        ),
        (
            json!({"amount": 100, "currency": "inr", "expires_at": past}),
            "parameter_invalid",
            "expires_at",
        ),
        (
            json!({"amount": 100, "currency": "inr", "expires_at": "tomorrow"}),
            "parameter_invalid",
            "expires_at",
        ),
        (
            json!({"amount": 100, "currency": "inr", "payment_methods": ["usdt_ethereum"]}),
            "payment_method_unavailable",
            "payment_methods",
        ),
        (
            json!({"amount": 100, "currency": "inr", "payment_methods": []}),
            "parameter_invalid",
            "payment_methods",
        ),
        (
            json!({"amount": 100, "currency": "inr", "metadata": {"payment_link": "pl_forged"}}),
            "parameter_invalid",
            "metadata[payment_link]",
        ),
        (
            json!({"amount": 100, "currency": "inr", "counter": "yes"}),
            "parameter_invalid",
            "counter",
        ),
        (
            json!({"amount": 100, "currency": "inr", "counter": true}),
            "parameter_invalid",
            "amount",
        ),
        (
            json!({"amount": 100, "currency": "inr", "uses": 5}),
            "parameter_unknown",
            "uses",
        ),
    ] {
        let (st, _, e) = post(&c, &d.url(LINKS), &key, body.clone(), None).await;
        assert_eq!(st, 400, "{body}: {e}");
        assert_eq!(e["error"]["code"], code, "{body}: {e}");
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
    }
    assert_eq!(count(&c, &d, &key, LINKS).await, 0, "no link was made");

    // Forged ids: a plain 404, no page, no session.
    let l = make(&c, &d, &key, json!({"amount": 100, "currency": "inr"})).await;
    let id = l["id"].as_str().unwrap();
    for path in [
        "/l/pl_0000000000000000".to_owned(),
        "/l/cs_0000000000000000".to_owned(),
        format!("/l/{id}x"),
        "/l/pl_%00%27%3Cscript%3E".to_owned(),
        "/l/pl_0000000000000000/qr.png".to_owned(),
    ] {
        let r = c.get(d.url(&path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "resource_missing", "{path}: {e}");
    }
    let before = count(&c, &d, &key, "/v1/checkout/sessions").await;
    let r = c
        .post(d.url("/l/pl_0000000000000000"))
        .form(&[("amount", "1.00")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(count(&c, &d, &key, "/v1/checkout/sessions").await, before);

    // Another merchant's key sees none of it, and cannot deactivate it.
    let other = create_key(&d.config, "other", &["--permissions", "*"]);
    let (st, e) = get(&c, &d.url(&format!("{LINKS}/{id}")), &other).await;
    assert_eq!(
        (st, e["error"]["code"].clone()),
        (404, json!("resource_missing"))
    );
    let (st, _, _) = post(
        &c,
        &d.url(&format!("{LINKS}/{id}/deactivate")),
        &other,
        json!({}),
        None,
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(count(&c, &d, &other, LINKS).await, 0);
    let (_, still) = get(&c, &d.url(&format!("{LINKS}/{id}")), &key).await;
    assert_eq!(still["active"], true, "{still}");
    // A deactivate with a body is refused.
    let (st, _, e) = post(
        &c,
        &d.url(&format!("{LINKS}/{id}/deactivate")),
        &key,
        json!({"active": true}),
        None,
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].clone()),
        (400, json!("parameter_unknown"))
    );
}

fn chrono_like_past() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now - 60
}

/// Attacker: a bot opens a public link over and over to hold every payment slot. Past
/// `server.link_opens_per_minute` a client is refused (429) before a session is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_opens_are_capped_per_client() {
    let (d, key) = started_with("link_opens_per_minute = 3", "");
    let c = client();
    let l = make(&c, &d, &key, json!({"amount": 100, "currency": "inr"})).await;
    let url = l["url"].as_str().unwrap();
    for _ in 0..3 {
        let (st, _, b) = open(&c, &d, url, None).await;
        assert_eq!(st, 303, "{b}");
    }
    let before = count(&c, &d, &key, "/v1/checkout/sessions").await;
    let (st, _, b) = open(&c, &d, url, None).await;
    assert_eq!(st, 429, "{b}");
    let e: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(e["error"]["code"], "too_many_link_opens");
    assert_eq!(count(&c, &d, &key, "/v1/checkout/sessions").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_link_closes_and_a_priced_link_converts() {
    let (d, key) = started_with(
        "",
        r#"
[rates."USDT/INR"]
fixed = "84.25"
"#,
    );
    let c = client();
    let soon = chrono_like_past() + 60 + 2;
    let l = make(
        &c,
        &d,
        &key,
        json!({"amount": 100, "currency": "inr", "expires_at": soon}),
    )
    .await;
    assert!(l["expires_at"].is_string(), "{l}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (st, _, page) = open(&c, &d, l["url"].as_str().unwrap(), None).await;
    assert_eq!(st, 410, "{page}");
    assert!(page.contains("This link has expired."), "{page}");

    // A rupee link paid in USDT: the session keeps the price and the rate.
    let p = make(
        &c,
        &d,
        &key,
        json!({"amount": 84250, "currency": "inr", "payment_methods": ["usdt_local"]}),
    )
    .await;
    let (st, loc, _) = open(&c, &d, p["url"].as_str().unwrap(), None).await;
    assert_eq!(st, 303);
    let sid = loc.strip_prefix("http://pay.test/c/").unwrap();
    let (_, s) = get(&c, &d.url(&format!("/v1/checkout/sessions/{sid}")), &key).await;
    assert_eq!(s["amount"], 1000, "{s}");
    assert_eq!(s["currency"], "usd");
    assert_eq!(s["price"], json!({"amount": 84250, "currency": "inr"}));
    assert_eq!(s["rate"], "84.25");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printable_qr_codes_decode_to_the_link() {
    let z = Command::new("zbarimg").arg("--version").output();
    assert!(
        z.is_ok_and(|o| o.status.success()),
        "zbarimg (Debian's zbar-tools) is not runnable: run scripts/test, which installs it"
    );
    let (d, key) = started_with("", "");
    let c = client();
    let l = make(&c, &d, &key, json!({"currency": "inr", "counter": true})).await;
    assert_eq!(l["counter"], true);
    let r = c
        .get(d.url(&path_of(l["qr_png_url"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let png = r.bytes().await.unwrap();
    let file = d.dir.join("link.png");
    std::fs::write(&file, &png).unwrap();
    let out = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        l["url"].as_str().unwrap()
    );
    let r = c
        .get(d.url(&path_of(l["qr_svg_url"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert!(r.text().await.unwrap().starts_with("<svg"));
    // A counter link asks for the amount of each sale.
    let (st, _, page) = open(&c, &d, l["url"].as_str().unwrap(), None).await;
    assert_eq!(st, 200);
    assert!(
        page.contains("Enter the amount the cashier tells you"),
        "{page}"
    );
}
