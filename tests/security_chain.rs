//! Chain money safety (issue 13, items 2, 5, 6) against the real binary, a real anvil chain and
//! a real webhook receiver: a claim by transaction hash never moves a stranger's transfer on a
//! shared address, a transfer never pays a session created after its block, and no answer or log
//! shows an RPC URL's key.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::anvil::{ACCOUNTS, Anvil, TOKEN_6};
use common::config::{Chain, TestConfig, token_method};
use common::receiver::Receiver;
use common::{ADMIN_TOKEN, Daemon, client, create_key, get, post};
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";
/// The merchant's shared `unique_amount` address (anvil account 5).
const PAY_TO: &str = "0x9965507d1a55bcc2695c58ba16fb37d819b0a4dc";
/// The victim (an exchange's hot wallet) and the honest customer who declares their sender.
const VICTIM: &str = ACCOUNTS[2];
const HONEST: &str = ACCOUNTS[3];

fn config(dir: &Path, rpc: &str, confirmations: u32) -> String {
    let mut method = token_method("local", PAY_TO);
    method.insert("underpayment_tolerance".into(), "1.00".into());
    TestConfig::base(dir)
        .chain(
            "local",
            Chain::custom(31337, &[rpc], TOKEN_6, 6, confirmations),
        )
        .merchant("demo", "Demo Store", vec![("usdt_local", method)])
        .text()
}

async fn chain() -> Anvil {
    let chain = Anvil::start().await;
    assert_eq!(
        chain.deploy_token("USDT", 6).await.to_lowercase(),
        TOKEN_6.to_lowercase()
    );
    for who in [VICTIM, HONEST] {
        chain.mint(TOKEN_6, who, 1_000_000_000_000).await;
    }
    chain
}

fn daemon(rpc: &str, confirmations: u32) -> (Daemon, String) {
    let mut d = Daemon::prepare_text(|dir| config(dir, rpc, confirmations));
    let key = create_key(&d.config, "demo", &["--permissions", "*"]);
    d.start();
    (d, key)
}

async fn create(c: &reqwest::Client, d: &Daemon, key: &str, amount: u64) -> (String, u128) {
    let body = json!({"amount": amount, "currency": "usd", "payment_methods": ["usdt_local"]});
    let (st, _, s) = post(c, &d.url(SESSIONS), key, body, None).await;
    assert_eq!(st, 201, "{s}");
    let payable = s["payment_options"][0]["payable_amount_base_units"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (s["id"].as_str().unwrap().to_owned(), payable)
}

async fn session(c: &reqwest::Client, d: &Daemon, key: &str, id: &str) -> Value {
    let (st, s) = get(c, &d.url(&format!("{SESSIONS}/{id}")), key).await;
    assert_eq!(st, 200, "{s}");
    s
}

async fn wait_until<F, Fut>(secs: u64, what: &str, mut f: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The unmatched credit of a transaction, once the watcher recorded it.
async fn credit_of(c: &reqwest::Client, d: &Daemon, key: &str, tx: &str) -> Value {
    wait_until(
        15,
        "the transfer is kept as an unmatched credit",
        || async {
            let (_, list) = get(c, &d.url("/v1/credits"), key).await;
            list["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|cr| cr["tx_hash"] == json!(tx))
                .cloned()
        },
    )
    .await
}

async fn claim(c: &reqwest::Client, d: &Daemon, id: &str, tx: &str) {
    let r = c
        .post(d.url(&format!("/c/{id}/claim")))
        .json(&json!({"tx_hash": tx}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

async fn declare(c: &reqwest::Client, d: &Daemon, id: &str, address: &str) -> (u16, Value) {
    let r = c
        .post(d.url(&format!("/c/{id}/sender")))
        .json(&json!({"address": address}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn admin_get(c: &reqwest::Client, d: &Daemon, path: &str) -> Value {
    c.get(format!("{}{path}", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn admin_post(c: &reqwest::Client, d: &Daemon, path: &str, body: Value) -> (u16, Value) {
    let r = c
        .post(format!("{}{path}", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn console_login(c: &reqwest::Client, d: &Daemon) -> String {
    let r = c
        .post(format!("{}/console/login", d.admin))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    cookie.split(';').next().unwrap().to_owned()
}

async fn console_get(c: &reqwest::Client, d: &Daemon, cookie: &str, path: &str) -> String {
    let r = c
        .get(format!("{}{path}", d.admin))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.unwrap()
}

fn events_of(got: &[common::receiver::Received], kind: &str) -> Vec<Value> {
    got.iter()
        .map(|r| r.json())
        .filter(|e| e["type"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_transfer_on_a_shared_address_is_queued_unless_it_comes_from_the_declared_sender()
{
    let chain = chain().await;
    let (d, key) = daemon(&chain.url, 1);
    let c = client();
    let hook = Receiver::start(0, &[]).await;
    let (st, _, ep) = post(
        &c,
        &d.url("/v1/webhook_endpoints"),
        &key,
        json!({"url": hook.url, "events": ["*"]}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{ep}");

    // The victim's session at 20.00, and the attacker's cheaper one at 19.00 on the same address.
    let (victim, victim_payable) = create(&c, &d, &key, 2_000).await;
    let (attacker, _) = create(&c, &d, &key, 1_900).await;
    // The victim's exchange withdrawal arrives 0.50 short: it matches no unique amount.
    let short = victim_payable - 500_000;
    let tx = chain.transfer(TOKEN_6, VICTIM, PAY_TO, short).await;
    chain.receipt(&tx).await;
    let credit = credit_of(&c, &d, &key, &tx).await;
    let credit_id = credit["id"].as_str().unwrap().to_owned();
    assert_eq!(
        credit["sender"].as_str().map(str::to_lowercase).as_deref(),
        Some(VICTIM),
        "{credit}"
    );

    // The hash is public: the attacker declares the victim's address only now, then claims.
    let (st, body) = declare(&c, &d, &attacker, VICTIM).await;
    assert_eq!(st, 202, "{body}");
    claim(&c, &d, &attacker, &tx).await;
    let got = hook
        .wait_for(15, "credit.claimed", |g| {
            !events_of(g, "credit.claimed").is_empty()
        })
        .await;
    let ev = &events_of(&got, "credit.claimed")[0];
    assert_eq!(ev["data"]["object"]["id"], json!(credit_id), "{ev}");
    assert_eq!(ev["data"]["object"]["claimed_by"], json!(attacker), "{ev}");
    // Give the receipt check time to do anything it would do.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = session(&c, &d, &key, &attacker).await;
    assert_eq!(a["status"], "open", "the victim's money moved: {a}");
    assert_eq!(a["payments"].as_array().map(Vec::len), Some(0), "{a}");
    let (_, now) = get(&c, &d.url("/v1/credits"), &key).await;
    let queue = admin_get(&c, &d, "/admin/v1/claims").await;
    assert_eq!(
        queue["data"],
        json!([{"object": "claim", "credit": credit_id, "session": attacker,
                "claimed_at": queue["data"][0]["claimed_at"]}]),
        "queued for the operator: {queue} {now}"
    );

    // The console lists it; the operator rejects the attacker's claim there and gives the money
    // to the victim's session.
    let cookie = console_login(&c, &d).await;
    let page = console_get(&c, &d, &cookie, "/console/credits").await;
    let claims = &page[page.find("Claims awaiting a decision").expect(&page)..];
    assert!(
        claims.contains(&attacker) && claims.contains(&credit_id),
        "{page}"
    );
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let r = c
        .post(format!("{}/console/credits/{credit_id}/reject", d.admin))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("session", attacker.as_str())])
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert!(st == 200 || st == 303, "{st} {body}");
    let (st, r) = admin_post(
        &c,
        &d,
        &format!("/admin/v1/credits/{credit_id}/reject"),
        json!({"session": attacker}),
    )
    .await;
    assert_eq!(st, 404, "nothing left to reject: {r}");
    assert_eq!(
        admin_get(&c, &d, "/admin/v1/claims").await["data"],
        json!([])
    );
    let (st, r) = admin_post(
        &c,
        &d,
        &format!("/admin/v1/credits/{credit_id}/assign"),
        json!({"session": victim}),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["status"], "complete", "{r}");
    let got = hook
        .wait_for(15, "the operator's decisions as events", |g| {
            !events_of(g, "credit.claim_rejected").is_empty()
                && !events_of(g, "credit.assigned").is_empty()
        })
        .await;
    let rejected = &events_of(&got, "credit.claim_rejected")[0];
    assert_eq!(
        rejected["data"]["object"]["rejected_claims"],
        json!([attacker])
    );
    let assigned = &events_of(&got, "credit.assigned")[0];
    assert_eq!(assigned["data"]["object"]["session"], json!(victim));
    let v = session(&c, &d, &key, &victim).await;
    assert_eq!(
        v["payments"][0]["from"]
            .as_str()
            .map(str::to_lowercase)
            .as_deref(),
        Some(VICTIM),
        "refunds go back to the sender: {v}"
    );

    // The honest customer declares the address they pay from before paying: their own short
    // transfer is then theirs by its hash.
    let (honest, honest_payable) = create(&c, &d, &key, 3_000).await;
    let (st, body) = declare(&c, &d, &honest, "not an address").await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["error"]["param"], "address", "{body}");
    let (st, _) = declare(&c, &d, &honest, &HONEST.to_uppercase().replace("0X", "0x")).await;
    assert_eq!(st, 202);
    // Block times have whole seconds: the transfer's block is in a later second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let tx = chain
        .transfer(TOKEN_6, HONEST, PAY_TO, honest_payable - 500_000)
        .await;
    chain.receipt(&tx).await;
    credit_of(&c, &d, &key, &tx).await;
    claim(&c, &d, &honest, &tx).await;
    let s = wait_until(
        15,
        "the declared sender's transfer completes by claim",
        || async {
            let s = session(&c, &d, &key, &honest).await;
            (s["status"] == "complete").then_some(s)
        },
    )
    .await;
    assert_eq!(s["payments"][0]["tx_hash"], json!(tx), "{s}");
    assert_eq!(
        admin_get(&c, &d, "/admin/v1/claims").await["data"],
        json!([]),
        "nothing queued for a tied claim"
    );
}

/// The latest block's timestamp (seconds).
async fn latest_block_time(chain: &Anvil) -> u64 {
    let b = chain
        .rpc("eth_getBlockByNumber", json!(["latest", false]))
        .await;
    u64::from_str_radix(
        b["timestamp"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_mined_before_a_session_was_created_never_pays_it() {
    let chain = chain().await;
    let (d, key) = daemon(&chain.url, 3);
    let c = client();

    // At first sight: the transfer's block is seconds older than the session holding its amount
    // (a node lagging, or the watcher catching up) and is seen while the session awaits payment.
    chain.automine(false).await;
    let before = latest_block_time(&chain).await + 1;
    while chrono::Utc::now().timestamp() < i64::try_from(before).unwrap() + 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (first, payable) = create(&c, &d, &key, 700).await;
    assert_eq!(
        payable, 7_000_000,
        "the first session at a price holds the price itself"
    );
    chain
        .rpc("evm_setNextBlockTimestamp", json!([before]))
        .await;
    let tx = chain.transfer(TOKEN_6, VICTIM, PAY_TO, payable).await;
    chain.mine(1).await;
    chain.automine(true).await;
    chain.receipt(&tx).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    chain.mine(3).await;
    let credit = credit_of(&c, &d, &key, &tx).await;
    assert_eq!(credit["status"], "unmatched", "{credit}");
    let s = session(&c, &d, &key, &first).await;
    assert_eq!(
        s["status"], "open",
        "an older transfer paid a newer session: {s}"
    );
    assert_eq!(s["payments"].as_array().map(Vec::len), Some(0), "{s}");

    // At finality: a transfer of 8.00 that matched nothing while unconfirmed is not adopted by a
    // session at 8.00 created after its block.
    let tx = chain.transfer(TOKEN_6, VICTIM, PAY_TO, 8_000_000).await;
    chain.receipt(&tx).await;
    // The watcher sees it unconfirmed (1 of 3) with nobody holding 8.00.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (later, payable) = create(&c, &d, &key, 800).await;
    assert_eq!(payable, 8_000_000);
    chain.mine(3).await;
    let credit = credit_of(&c, &d, &key, &tx).await;
    assert_eq!(credit["status"], "unmatched", "{credit}");
    let s = session(&c, &d, &key, &later).await;
    assert_eq!(
        s["status"], "open",
        "adopted at finality by a newer session: {s}"
    );
    assert_eq!(s["payments"].as_array().map(Vec::len), Some(0), "{s}");
    // A claim of it is no way around: the money arrived before the session existed.
    claim(&c, &d, &later, &tx).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = session(&c, &d, &key, &later).await;
    assert_eq!(s["status"], "open", "a claim moved older money: {s}");

    // And a session that existed before the transfer is paid as usual.
    let (paid, payable) = create(&c, &d, &key, 900).await;
    // The chain's clock now lags (its timestamp was set back above): the next block is dated now.
    let next = chrono::Utc::now().timestamp() + 1;
    chain.rpc("evm_setNextBlockTimestamp", json!([next])).await;
    let tx = chain.transfer(TOKEN_6, VICTIM, PAY_TO, payable).await;
    chain.receipt(&tx).await;
    chain.mine(3).await;
    wait_until(15, "an ordinary payment completes", || async {
        let s = session(&c, &d, &key, &paid).await;
        (s["status"] == "complete").then_some(s)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_logs_never_show_the_rpc_key() {
    // Nothing listens on port 9: every call fails, and the error quotes the URL it failed on.
    let rpc = "http://127.0.0.1:9/v2/SECRETPATHKEY123?apikey=SECRETQUERYKEY456";
    let (d, key) = daemon(rpc, 1);
    let c = client();
    let public = wait_until(20, "the public /readyz reports the RPC down", || async {
        let r = c.get(d.url("/readyz")).send().await.unwrap();
        let st = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        (st == 503 && v["checks"]["chains"]["local"] == "RPC down").then_some(v)
    })
    .await;
    assert_eq!(public["status"], "unready");
    let operator = c
        .get(format!("{}/readyz", d.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        operator.contains("RPC down: http://127.0.0.1:9"),
        "the operator sees the reason, with the host: {operator}"
    );
    let doctor = common::cli(&d.config, &["doctor"]);
    let doctor = format!(
        "{}{}",
        String::from_utf8_lossy(&doctor.stdout),
        String::from_utf8_lossy(&doctor.stderr)
    );
    assert!(
        doctor.contains("127.0.0.1:9"),
        "doctor names the host: {doctor}"
    );
    let cookie = console_login(&c, &d).await;
    let console = console_get(&c, &d, &cookie, "/console/watchers").await;
    assert!(
        console.contains("RPC down: http://127.0.0.1:9"),
        "{console}"
    );
    let log = d.stderr();
    assert!(log.contains("RPC call failed"), "{log}");
    for (what, text) in [
        ("public /readyz", public.to_string()),
        ("operator /readyz", operator),
        ("doctor", doctor),
        ("console", console),
        ("log", log),
    ] {
        for secret in ["SECRETPATHKEY123", "SECRETQUERYKEY456", "/v2/"] {
            assert!(!text.contains(secret), "{what} shows {secret}: {text}");
        }
    }
    let _ = key;
}
