//! Prices in any currency against the real binary: a session priced in INR (or EUR) paid in
//! USDT at a rate locked on create — a fixed rate, or the median of HTTP JSON sources served by
//! a rate API test double of the test's own (`common::rate_source`, real HTTP on loopback);
//! a stale rate refuses creates with 503 `rate_unavailable` and they succeed again once a
//! source answers; and an INR-priced session paid in the sandbox USDT on anvil.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::anvil::{ACCOUNTS, Anvil, TOKEN_6};
use common::rate_source::RateSource;
use common::{ADMIN_TOKEN, Daemon, Opts, client, create_key, get, post};
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";

fn opts(extra: &str) -> Opts {
    Opts {
        extra: extra.to_owned(),
        ..Opts::default()
    }
}

async fn sessions_count(c: &reqwest::Client, d: &Daemon, key: &str) -> usize {
    let (st, l) = get(c, &d.url(&format!("{SESSIONS}?limit=100")), key).await;
    assert_eq!(st, 200, "{l}");
    l["data"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inr_price_is_converted_at_the_fixed_rate_and_locked() {
    let (d, key) = Daemon::started(&opts(
        r#"
[rates."USDT/INR"]
fixed = "84.25"
spread = "0.5%"
underpayment_tolerance = "5.00"
"#,
    ));
    let c = client();
    // The issue's example: ₹842.50 at 84.25 INR per USDT is 10 USDT, plus the 0.5% spread.
    let (st, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 84250, "currency": "inr", "payment_methods": ["usdt_local"]}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{s}");
    assert_eq!(s["currency"], "usd");
    assert_eq!(
        s["amount"], 1005,
        "10.05 USDT: rounded up, spread added: {s}"
    );
    assert_eq!(s["price"], json!({"amount": 84250, "currency": "inr"}));
    assert_eq!(s["rate"], "84.25");
    assert_eq!(s["rate_spread"], "0.5%");
    assert_eq!(s["rate_source"], "USDT/INR fixed");
    assert!(s["rate_at"].is_string(), "{s}");
    let o = &s["payment_options"][0];
    assert_eq!(o["payable_amount"], "10.050000", "{o}");
    // The page shows the price in rupees and the rate.
    let id = s["id"].as_str().unwrap();
    let page = c
        .get(d.url(&format!("/c/{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("₹842.50"), "{page}");
    assert!(page.contains("1 USDT = 84.25 INR"), "{page}");
    assert!(page.contains("10.050000"), "{page}");

    // Tolerance in rupees: ₹5.00 short at 84.25 is 0.059347… USDT, rounded down to 0.05.
    let (_, _, t) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 84250, "currency": "inr", "payment_methods": ["usdt_local"]}),
        None,
    )
    .await;
    let tid = t["id"].as_str().unwrap();
    let payable: f64 = t["payment_options"][0]["payable_amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let short = format!("{:.6}", payable - 0.05);
    let r = c
        .post(d.url(&format!("/c/{tid}/simulate")))
        .json(&json!({"amount": short}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, t) = get(&c, &d.url(&format!("{SESSIONS}/{tid}")), &key).await;
    assert_eq!(t["status"], "complete", "₹5 short is within tolerance: {t}");
    assert_eq!(t["price"], json!({"amount": 84250, "currency": "inr"}));
    assert_eq!(
        t["amount_received"], 1000,
        "what was paid, in the methods' currency: {t}"
    );
    // A refund keeps both: what goes back in USDT, and its value in rupees at the locked rate.
    let (st, _, refund) = post(
        &c,
        &d.url("/v1/refunds"),
        &key,
        json!({"session": tid, "amount": "5.00"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{refund}");
    assert_eq!(refund["amount_base_units"], "5000000", "{refund}");
    assert_eq!(
        refund["price"],
        json!({"amount": 42125, "currency": "inr"}),
        "{refund}"
    );

    // An unpriced session is unchanged: its price is its own amount, no rate.
    let (st, _, u) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 1000, "currency": "usd", "payment_methods": ["usdt_local"]}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{u}");
    assert_eq!(u["price"], json!({"amount": 1000, "currency": "usd"}));
    assert_eq!(u["rate"], Value::Null);
}

/// Attacker: anyone holding a key sends currencies and amounts that are not prices. Each is
/// refused with a specific error and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_currencies_and_unconvertible_amounts_are_refused_and_change_nothing() {
    let (d, key) = Daemon::started(&opts(
        r#"
[rates."USDT/INR"]
fixed = "0.000000000001"
"#,
    ));
    let c = client();
    let before = sessions_count(&c, &d, &key).await;
    for (body, code, param) in [
        (
            json!({"amount": 100, "currency": "xyz", "payment_methods": ["usdt_local"]}),
            "parameter_invalid",
            "currency",
        ),
        (
            json!({"amount": 100, "currency": "jpy", "payment_methods": ["usdt_local"]}),
            "parameter_invalid",
            "currency",
        ),
        (
            json!({"amount": 100, "currency": "", "payment_methods": ["usdt_local"]}),
            "parameter_invalid",
            "currency",
        ),
        // No EUR pair configured.
        (
            json!({"amount": 100, "currency": "eur", "payment_methods": ["usdt_local"]}),
            "parameter_invalid",
            "currency",
        ),
        // ₹100 crore at a near-zero rate would ask more USDT than any session may.
        (
            json!({"amount": 10_000_000_000u64, "currency": "inr", "payment_methods": ["usdt_local"]}),
            "parameter_invalid",
            "amount",
        ),
        // Methods settling in two currencies cannot share one converted amount.
        (
            json!({"amount": 100, "currency": "eur", "payment_methods": ["usdt_local", "upi"]}),
            "parameter_invalid",
            "payment_methods",
        ),
        (
            json!({"amount": -5, "currency": "inr", "payment_methods": ["usdt_local"]}),
            "parameter_invalid",
            "amount",
        ),
    ] {
        let (st, _, e) = post(&c, &d.url(SESSIONS), &key, body.clone(), None).await;
        assert_eq!(st, 400, "{body}: {e}");
        assert_eq!(e["error"]["code"], code, "{body}: {e}");
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
    }
    assert_eq!(sessions_count(&c, &d, &key).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sources_give_their_median_go_stale_with_a_503_and_recover() {
    let a = RateSource::start(json!(84)).await;
    let b = RateSource::start(json!("85")).await;
    let z = RateSource::start(json!(90.5)).await;
    let (d, key) = Daemon::started(&opts(&format!(
        r#"
[rates."USDT/INR"]
sources = [
  {{ url = "{}", path = "/data/price", headers = {{ "X-Api-Key" = "k-123" }} }},
  {{ url = "{}", path = "/data/price" }},
  {{ url = "{}", path = "/data/price" }},
]
max_age_secs = 2
poll_secs = 1
"#,
        a.url, b.url, z.url
    )));
    let c = client();
    let create = |amount: u64| {
        let (c, d, key) = (c.clone(), d.url(SESSIONS), key.clone());
        async move {
            post(
                &c,
                &d,
                &key,
                json!({"amount": amount, "currency": "inr", "payment_methods": ["usdt_local"]}),
                None,
            )
            .await
        }
    };
    // The first poll runs at start; wait for its answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let (st, _, s) = create(8500).await;
        if st == 201 {
            break s;
        }
        assert_eq!(s["error"]["code"], "rate_unavailable", "{s}");
        assert!(Instant::now() < deadline, "no rate within 10 s: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s["rate"], "85", "the median of 84, 85 and 90.5: {s}");
    assert_eq!(s["amount"], 100, "₹85.00 at 85 is 1.00 USDT");
    assert!(
        s["rate_source"]
            .as_str()
            .unwrap()
            .starts_with("USDT/INR median of 3 of 3 sources"),
        "{s}"
    );
    assert!(
        a.headers()
            .iter()
            .any(|h| h.get("x-api-key").map(String::as_str) == Some("k-123")),
        "the source's header was sent"
    );
    assert!(
        b.headers().iter().all(|h| !h.contains_key("x-api-key")),
        "headers go to their own source only"
    );

    // One source down: the median of the other two.
    z.set(None);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (st, _, s) = create(8450).await;
    assert_eq!(st, 201, "{s}");
    assert_eq!(s["rate"], "84.5", "{s}");

    // All down: once the last quote is older than max_age_secs, priced creates fail loudly…
    a.set(None);
    b.set(None);
    let before = sessions_count(&c, &d, &key).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (hdrs, e) = loop {
        let (st, h, e) = create(8500).await;
        if st == 503 {
            break (h, e);
        }
        assert_eq!(st, 201, "{e}");
        assert!(Instant::now() < deadline, "the rate never went stale");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(e["error"]["code"], "rate_unavailable", "{e}");
    assert_eq!(e["error"]["type"], "api_error");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("USDT/INR") && msg.contains("max_age_secs"),
        "{msg}"
    );
    assert!(hdrs.get("retry-after").is_some(), "{hdrs:?}");
    let created_while_fresh = sessions_count(&c, &d, &key).await - before;
    // …an unpriced session still works…
    let (st, _, u) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 100, "currency": "usd", "payment_methods": ["usdt_local"]}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{u}");
    let (st, _, _) = create(8500).await;
    assert_eq!(st, 503, "still stale");
    assert_eq!(
        sessions_count(&c, &d, &key).await,
        before + created_while_fresh + 1,
        "a refused create made nothing"
    );
    // …and they recover when a source answers again.
    b.set(Some(json!(86)));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _, s) = create(8600).await;
        if st == 201 {
            assert_eq!(s["rate"], "86", "{s}");
            assert!(
                s["rate_source"]
                    .as_str()
                    .unwrap()
                    .contains("median of 1 of 3 sources"),
                "{s}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn a_bad_rate_configuration_names_its_file_line_and_key() {
    for (table, key, problem) in [
        (
            "[rates.\"USDT/INR\"]\nfixed = \"abc\"\n",
            "rates.USDT/INR.fixed",
            "not a positive decimal",
        ),
        (
            "[rates.\"USDT/INR\"]\n",
            "rates.USDT/INR.fixed",
            "give a fixed rate or at least one source",
        ),
        (
            "[rates.\"USDT/XYZ\"]\nfixed = \"1\"\n",
            "rates.USDT/XYZ",
            "not a price currency",
        ),
        (
            "[rates.\"USDT/INR\"]\nfixed = \"84\"\nspread = \"60%\"\n",
            "rates.USDT/INR.spread",
            "below 50%",
        ),
        (
            "[rates.\"USDT/INR\"]\nsources = [{ url = \"ftp://x\", path = \"/p\" }]\n",
            "rates.USDT/INR.sources.0.url",
            "http(s)",
        ),
        (
            "[rates.\"USDT/INR\"]\nfixed = \"84\"\nmax_age_secs = 10\npoll_secs = 20\n",
            "rates.USDT/INR.poll_secs",
            "below max_age_secs",
        ),
    ] {
        let d = Daemon::prepare(&opts(table));
        let out = common::cli(&d.config, &["keys", "list"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{table}: accepted");
        assert!(err.contains(key) && err.contains(problem), "{table}: {err}");
        assert!(
            err.contains("config.toml:"),
            "names the file and line: {err}"
        );
    }
}

/// The issue's end-to-end case: a session priced in rupees, paid in the sandbox USDT on a real
/// local chain (anvil, the project's token), at a rate served by the rate API double.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inr_priced_session_is_paid_in_usdt_on_anvil() {
    const PAY_TO: &str = "0x9965507d1a55bcc2695c58ba16fb37d819b0a4dc";
    let chain = Anvil::start().await;
    assert_eq!(
        chain.deploy_token("USDT", 6).await.to_lowercase(),
        TOKEN_6.to_lowercase()
    );
    chain.mint(TOKEN_6, ACCOUNTS[2], 1_000_000_000).await;
    let source = RateSource::start(json!("84.25")).await;
    let mut d = Daemon::prepare_text(|dir| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
public_url = "http://pay.test"
admin_token = "{ADMIN_TOKEN}"

[storage]
path = "{db}"

[log]
level = "info"

[chains.local]
chain_id = 31337
rpc_urls = ["{rpc}"]
token = "USDT"
token_contract = "{TOKEN_6}"
decimals = 6
confirmations = 2
poll_interval_ms = 100

[[merchants]]
id = "demo"
name = "Demo Store"

[merchants.methods.usdt_local]
chain = "local"
pay_to = "{PAY_TO}"

[rates."USDT/INR"]
sources = [{{ url = "{src}", path = "/data/price" }}]
max_age_secs = 60
poll_secs = 1
"#,
            db = dir.join("paywatch.redb").display(),
            rpc = chain.url,
            src = source.url,
        )
    });
    let key = create_key(&d.config, "demo", &[]);
    d.start();
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let (st, _, s) = post(
            &c,
            &d.url(SESSIONS),
            &key,
            json!({"amount": 84250, "currency": "inr", "payment_methods": ["usdt_local"]}),
            None,
        )
        .await;
        if st == 201 {
            break s;
        }
        assert!(Instant::now() < deadline, "no rate: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s["amount"], 1000, "₹842.50 at 84.25: 10 USDT: {s}");
    let id = s["id"].as_str().unwrap();
    let payable: u128 = s["payment_options"][0]["payable_amount_base_units"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((10_000_000..10_001_000).contains(&payable), "{payable}");
    // The rate moves after creation: the session's amount does not.
    source.set(Some(json!("90")));
    let tx = chain.transfer(TOKEN_6, ACCOUNTS[2], PAY_TO, payable).await;
    chain.receipt(&tx).await;
    chain.mine(2).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, s) = get(&c, &d.url(&format!("{SESSIONS}/{id}")), &key).await;
        if s["status"] == "complete" {
            assert_eq!(s["payments"][0]["tx_hash"], json!(tx));
            assert_eq!(s["price"], json!({"amount": 84250, "currency": "inr"}));
            assert_eq!(s["rate"], "84.25", "locked at creation: {s}");
            assert_eq!(s["amount_received"], 1000);
            break;
        }
        assert!(Instant::now() < deadline, "not paid: {s}\n{}", d.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
