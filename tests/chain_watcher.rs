//! The chain watcher against a real local chain: anvil, the project's own ERC-20 token (6 and 18
//! decimals) deployed by the test, the real daemon, and a real webhook receiver.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::anvil::{ACCOUNTS, ACCOUNTS_XPUB, Anvil, TOKEN_6, TOKEN_18};
use common::config::{Chain, TestConfig, table, token_method};
use common::receiver::Receiver;
use common::{Daemon, client, create_key, get, post};
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";
/// The merchant's receiving address of the unique_amount method (anvil account 5).
const PAY_TO: &str = "0x9965507d1a55bcc2695c58ba16fb37d819b0a4dc";
/// Customers: anvil accounts 2 and 3 (funded with test tokens).
const ALICE: &str = ACCOUNTS[2];
const BOB: &str = ACCOUNTS[3];

struct Setup {
    rpc_urls: Vec<String>,
    confirmations: u32,
    /// What chain `local` differs in from the defaults (its id, its poll interval, a `ws_url`).
    local: Box<dyn Fn(Chain) -> Chain>,
}

fn config(dir: &Path, s: &Setup) -> String {
    let urls: Vec<&str> = s.rpc_urls.iter().map(String::as_str).collect();
    let chain =
        |contract, decimals| Chain::custom(31337, &urls, contract, decimals, s.confirmations);
    let mut usdt_local = token_method("local", PAY_TO);
    usdt_local.insert("underpayment_tolerance".into(), "1.00".into());
    let xpub = table([
        ("chain", "local".into()),
        ("strategy", "xpub".into()),
        ("xpub", ACCOUNTS_XPUB.into()),
    ]);
    TestConfig::base(dir)
        .chain("local", (s.local)(chain(TOKEN_6, 6)))
        .chain("local18", chain(TOKEN_18, 18))
        .merchant(
            "demo",
            "Demo Store",
            vec![
                ("usdt_local", usdt_local),
                ("usdt_xpub", xpub),
                ("usdt_bsc_like", token_method("local18", PAY_TO)),
            ],
        )
        .text()
}

/// anvil with both tokens deployed and the customers funded; the daemon configured for it.
async fn setup(confirmations: u32, dead_first_rpc: bool) -> (Anvil, Daemon, String) {
    let chain = Anvil::start().await;
    assert_eq!(
        chain.deploy_token("USDT", 6).await.to_lowercase(),
        TOKEN_6.to_lowercase()
    );
    assert_eq!(
        chain.deploy_token("USDT", 18).await.to_lowercase(),
        TOKEN_18.to_lowercase()
    );
    for who in [ALICE, BOB] {
        chain.mint(TOKEN_6, who, 1_000_000_000_000).await;
        chain.mint(TOKEN_18, who, 10u128.pow(24)).await;
    }
    let rpc_urls = if dead_first_rpc {
        // Nothing listens on port 9 (discard): every call to it fails at once.
        vec!["http://127.0.0.1:9".to_owned(), chain.url.clone()]
    } else {
        vec![chain.url.clone()]
    };
    let setup = Setup {
        rpc_urls,
        confirmations,
        local: Box::new(|c| c),
    };
    let mut d = Daemon::prepare_text(|dir| config(dir, &setup));
    let key = create_key(&d.config, "demo", &[]);
    d.start();
    (chain, d, key)
}

async fn create(
    c: &reqwest::Client,
    d: &Daemon,
    key: &str,
    amount: u64,
    method: &str,
    notify: Option<&str>,
) -> Value {
    let mut body = json!({"amount": amount, "currency": "usd", "payment_methods": [method]});
    if let Some(u) = notify {
        body["notify_url"] = json!(u);
    }
    let (st, _, s) = post(c, &d.url(SESSIONS), key, body, None).await;
    assert_eq!(st, 201, "{s}");
    s
}

fn option(s: &Value) -> (&str, u128) {
    let o = &s["payment_options"][0];
    (
        o["pay_to"].as_str().unwrap(),
        o["payable_amount_base_units"]
            .as_str()
            .expect("payable_amount_base_units")
            .parse()
            .unwrap(),
    )
}

/// Polls the session until `pred` holds, or panics with the last state after `secs`.
async fn wait_session(
    c: &reqwest::Client,
    d: &Daemon,
    key: &str,
    id: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (st, s) = get(c, &d.url(&format!("{SESSIONS}/{id}")), key).await;
        assert_eq!(st, 200, "{s}");
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "session {id}: {what} did not happen within {secs} s; last state {s}\nstderr: {}",
            d.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status(s: &Value) -> &str {
    s["status"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_payment_processes_then_completes_and_a_wrong_amount_is_unmatched() {
    let (chain, d, key) = setup(3, false).await;
    let c = client();
    let hook = Receiver::start(0, &[]).await;
    let s = create(&c, &d, &key, 1_000, "usdt_local", Some(&hook.url)).await;
    let id = s["id"].as_str().unwrap();
    let (pay_to, payable) = option(&s);
    assert_eq!(pay_to.to_lowercase(), PAY_TO);
    assert_ne!(pay_to, PAY_TO, "shown in its EIP-55 form");
    let uri = s["payment_options"][0]["uri"].as_str().unwrap();
    assert_eq!(
        uri,
        format!("ethereum:{TOKEN_6}@31337/transfer?address={pay_to}&uint256={payable}")
    );

    let tx = chain.transfer(TOKEN_6, ALICE, PAY_TO, payable).await;
    chain.receipt(&tx).await;
    let s = wait_session(&c, &d, &key, id, 10, "processing", |s| {
        status(s) == "processing"
    })
    .await;
    let p = &s["payments"][0];
    assert_eq!(p["status"], "pending");
    assert_eq!(p["tx_hash"], json!(tx));
    assert_eq!(p["confirmations"], 1);

    chain.mine(2).await;
    let s = wait_session(&c, &d, &key, id, 10, "complete", |s| {
        status(s) == "complete"
    })
    .await;
    let p = &s["payments"][0];
    assert_eq!(p["status"], "confirmed");
    assert_eq!(p["confirmations"], 3);
    assert!(p["log_index"].is_u64(), "{p}");
    assert!(p["block_number"].is_u64(), "{p}");
    assert_eq!(s["payment_status"], "paid");
    let got = hook
        .wait_for(10, "processing and completed callbacks", |r| {
            let types: Vec<String> = r
                .iter()
                .map(|x| x.json()["type"].as_str().unwrap_or("").to_owned())
                .collect();
            types.contains(&"checkout.session.processing".to_owned())
                && types.contains(&"checkout.session.completed".to_owned())
        })
        .await;
    assert!(!got.is_empty());

    // An amount no session holds: recorded as an unmatched credit once final, never matched.
    let other = create(&c, &d, &key, 2_000, "usdt_local", None).await;
    let (_, other_payable) = option(&other);
    let wrong = other_payable + 7_777;
    let tx = chain.transfer(TOKEN_6, BOB, PAY_TO, wrong).await;
    chain.receipt(&tx).await;
    chain.mine(3).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, list) = get(&c, &d.url("/v1/credits?status=unmatched"), &key).await;
        assert_eq!(st, 200, "{list}");
        let found = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|cr| cr["tx_hash"] == json!(tx));
        if let Some(cr) = found {
            assert_eq!(cr["amount_base_units"], json!(wrong.to_string()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no unmatched credit for {tx}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, other) = get(
        &c,
        &d.url(&format!("{SESSIONS}/{}", other["id"].as_str().unwrap())),
        &key,
    )
    .await;
    assert_eq!(
        status(&other),
        "open",
        "a wrong amount pays nothing: {other}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_payments_in_one_block_both_match() {
    let (chain, d, key) = setup(1, false).await;
    let c = client();
    let a = create(&c, &d, &key, 500, "usdt_local", None).await;
    let b = create(&c, &d, &key, 500, "usdt_local", None).await;
    let (_, pa) = option(&a);
    let (_, pb) = option(&b);
    assert_ne!(
        pa, pb,
        "one amount, two sessions: two unique payable amounts"
    );
    chain.automine(false).await;
    let ta = chain.transfer(TOKEN_6, ALICE, PAY_TO, pa).await;
    let tb = chain.transfer(TOKEN_6, BOB, PAY_TO, pb).await;
    chain.mine(1).await;
    chain.automine(true).await;
    let ra = chain.receipt(&ta).await;
    let rb = chain.receipt(&tb).await;
    assert_eq!(ra["blockNumber"], rb["blockNumber"], "both in one block");
    for (s, tx) in [(&a, &ta), (&b, &tb)] {
        let id = s["id"].as_str().unwrap();
        let s = wait_session(&c, &d, &key, id, 10, "complete", |s| {
            status(s) == "complete"
        })
        .await;
        assert_eq!(s["payments"][0]["tx_hash"], json!(tx));
        assert_eq!(s["payments"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_reverts_an_unconfirmed_payment() {
    let (chain, d, key) = setup(5, false).await;
    let c = client();
    let hook = Receiver::start(0, &[]).await;
    let s = create(&c, &d, &key, 750, "usdt_local", Some(&hook.url)).await;
    let id = s["id"].as_str().unwrap();
    let (_, payable) = option(&s);
    let snap = chain.snapshot().await;
    let tx = chain.transfer(TOKEN_6, ALICE, PAY_TO, payable).await;
    chain.receipt(&tx).await;
    wait_session(&c, &d, &key, id, 10, "processing", |s| {
        status(s) == "processing"
    })
    .await;

    // The block holding the payment leaves the canonical chain; a longer chain without it wins.
    chain.revert(snap).await;
    // The revert also took anvil's clock back to the snapshot; a real chain's new blocks are
    // dated now (and a transfer pays only sessions created before its block).
    let now = chrono::Utc::now().timestamp() + 1;
    chain.rpc("evm_setNextBlockTimestamp", json!([now])).await;
    chain.mine(3).await;
    let s = wait_session(&c, &d, &key, id, 10, "back to open", |s| {
        status(s) == "open"
    })
    .await;
    assert_eq!(s["payments"][0]["status"], "reverted");
    assert_eq!(s["payment_status"], "unpaid");
    hook.wait_for(10, "payment.reverted callback", |r| {
        r.iter().any(|x| x.json()["type"] == "payment.reverted")
    })
    .await;
    // Nothing is confirmed later from the vanished block.
    chain.mine(6).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, s) = get(&c, &d.url(&format!("{SESSIONS}/{id}")), &key).await;
    assert_eq!(status(&s), "open", "{s}");

    // Paid again for real: completes.
    let tx = chain.transfer(TOKEN_6, ALICE, PAY_TO, payable).await;
    chain.receipt(&tx).await;
    chain.mine(4).await;
    wait_session(&c, &d, &key, id, 10, "complete", |s| {
        status(s) == "complete"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_while_stopped_are_found_after_restart_through_the_second_rpc() {
    let (chain, mut d, key) = setup(2, true).await;
    let c = client();
    let mut sessions = Vec::new();
    for i in 0..3 {
        sessions.push(create(&c, &d, &key, 300 + i, "usdt_local", None).await);
    }
    // Let the watcher set its checkpoint, then stop the daemon.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(d.terminate(), Some(0));
    for s in &sessions {
        let (_, payable) = option(s);
        let tx = chain.transfer(TOKEN_6, BOB, PAY_TO, payable).await;
        chain.receipt(&tx).await;
        chain.mine(5).await;
    }
    d.start();
    for s in &sessions {
        let id = s["id"].as_str().unwrap();
        wait_session(&c, &d, &key, id, 15, "complete after catch-up", |s| {
            status(s) == "complete"
        })
        .await;
    }
    assert!(
        d.stderr().contains("127.0.0.1:9"),
        "the dead first RPC URL was tried and reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xpub_addresses_are_anvils_accounts_and_get_paid() {
    let (chain, d, key) = setup(1, false).await;
    let c = client();
    let s0 = create(&c, &d, &key, 100, "usdt_xpub", None).await;
    let s1 = create(&c, &d, &key, 100, "usdt_xpub", None).await;
    let s2 = create(&c, &d, &key, 100, "usdt_xpub", None).await;
    // m/44'/60'/0'/0/i of anvil's mnemonic: its own accounts 0, 1, 2.
    assert_eq!(option(&s0).0.to_lowercase(), ACCOUNTS[0]);
    assert_eq!(option(&s1).0.to_lowercase(), ACCOUNTS[1]);
    assert_eq!(option(&s2).0.to_lowercase(), ACCOUNTS[2]);
    // Exact amount: 1.00 USD = 1_000_000 base units, no unique-amount offset.
    assert_eq!(option(&s1).1, 1_000_000);
    let tx = chain.transfer(TOKEN_6, BOB, ACCOUNTS[1], 1_000_000).await;
    chain.receipt(&tx).await;
    let id = s1["id"].as_str().unwrap();
    let s = wait_session(&c, &d, &key, id, 10, "complete", |s| {
        status(s) == "complete"
    })
    .await;
    assert_eq!(s["payments"][0]["tx_hash"], json!(tx));
    let (_, s0) = get(
        &c,
        &d.url(&format!("{SESSIONS}/{}", s0["id"].as_str().unwrap())),
        &key,
    )
    .await;
    assert_eq!(status(&s0), "open");

    // Past 100 watched addresses the node is no longer asked to filter by recipient: every
    // transfer of the token is fetched and filtered here. A payment to the 120th still matches.
    let mut last = Value::Null;
    for _ in 0..117 {
        last = create(&c, &d, &key, 100, "usdt_xpub", None).await;
    }
    let (to, amount) = option(&last);
    let to = to.to_owned();
    // Unrelated transfers of the token in the same blocks are ignored.
    chain
        .transfer(
            TOKEN_6,
            BOB,
            "0x000000000000000000000000000000000000dead",
            5_000_000,
        )
        .await;
    let tx = chain.transfer(TOKEN_6, BOB, &to, amount).await;
    chain.receipt(&tx).await;
    let id = last["id"].as_str().unwrap();
    wait_session(&c, &d, &key, id, 10, "complete past 100 addresses", |s| {
        status(s) == "complete"
    })
    .await;
    let (_, credits) = get(&c, &d.url("/v1/credits"), &key).await;
    assert_eq!(
        credits["data"].as_array().map(Vec::len),
        Some(0),
        "a transfer between strangers is nobody's credit: {credits}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_18_decimals_token_and_a_claimed_short_payment() {
    let (chain, d, key) = setup(1, false).await;
    let c = client();
    // 18 decimals (USDT on BSC): 2.50 USD is 2.5e18 base units plus the unique offset.
    let s = create(&c, &d, &key, 250, "usdt_bsc_like", None).await;
    let (_, payable) = option(&s);
    assert!(
        (2_500_000_000_000_000_000..2_600_000_000_000_000_000).contains(&payable),
        "{payable}"
    );
    let tx = chain.transfer(TOKEN_18, ALICE, PAY_TO, payable).await;
    chain.receipt(&tx).await;
    wait_session(
        &c,
        &d,
        &key,
        s["id"].as_str().unwrap(),
        10,
        "complete",
        |s| status(s) == "complete",
    )
    .await;

    // An exchange took a 0.50 fee: the transfer matches no unique amount and becomes an
    // unmatched credit; the customer's claim of its hash attaches it (within the tolerance),
    // because they declared the address they pay from before paying (the address is shared).
    let s = create(&c, &d, &key, 2_000, "usdt_local", None).await;
    let id = s["id"].as_str().unwrap();
    let (_, payable) = option(&s);
    let r = c
        .post(d.url(&format!("/c/{id}/sender")))
        .json(&json!({"address": BOB}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let short = payable - 500_000;
    let tx = chain.transfer(TOKEN_6, BOB, PAY_TO, short).await;
    chain.receipt(&tx).await;
    chain.mine(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, now) = get(&c, &d.url(&format!("{SESSIONS}/{id}")), &key).await;
    assert_eq!(
        status(&now),
        "open",
        "a short payment alone does not match: {now}"
    );
    // A made-up hash: same answer, nothing happens.
    let fake = format!("0x{}", "ab".repeat(32));
    let r = c
        .post(d.url(&format!("/c/{id}/claim")))
        .json(&json!({"tx_hash": fake}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = c
        .post(d.url(&format!("/c/{id}/claim")))
        .json(&json!({"tx_hash": tx}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let s = wait_session(&c, &d, &key, id, 15, "complete by claim", |s| {
        status(s) == "complete"
    })
    .await;
    assert_eq!(s["payments"][0]["tx_hash"], json!(tx));
    assert_eq!(s["payments"].as_array().unwrap().len(), 1, "{s}");
}

/// Parses Prometheus text with the reference Python parser (prometheus_client) and returns
/// {"name{label=value,...}": value}.
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    use std::io::Write;
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics (is it installed? scripts/test installs it): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn readyz(c: &reqwest::Client, d: &Daemon) -> (u16, Value) {
    let r = c.get(format!("{}/readyz", d.admin)).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn wait_ready(c: &reqwest::Client, d: &Daemon, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, body) = readyz(c, d).await;
        if st == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz did not become {want}: {st} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_rpc_and_metrics_count_payments() {
    let (chain, d, key) = setup(1, false).await;
    let c = client();
    let body = wait_ready(&c, &d, 200).await;
    assert_eq!(body["checks"]["chains"]["local"], "ok", "{body}");

    let metrics = async || {
        let r = c.get(format!("{}/metrics", d.admin)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        parse_metrics(&r.text().await.unwrap())
    };
    let before = metrics().await;
    let paid_before = before
        .get("paywatch_payments_total{method=usdt_local}")
        .copied()
        .unwrap_or(0.0);
    let s = create(&c, &d, &key, 900, "usdt_local", None).await;
    let (_, payable) = option(&s);
    let tx = chain.transfer(TOKEN_6, ALICE, PAY_TO, payable).await;
    chain.receipt(&tx).await;
    wait_session(
        &c,
        &d,
        &key,
        s["id"].as_str().unwrap(),
        10,
        "complete",
        |s| status(s) == "complete",
    )
    .await;
    let after = metrics().await;
    assert_eq!(
        after["paywatch_payments_total{method=usdt_local}"],
        paid_before + 1.0
    );
    assert!(after["paywatch_chain_logs_total{chain=local}"] >= 1.0);
    assert!(after["paywatch_chain_head_block{chain=local}"] >= 1.0);
    assert!(
        after["paywatch_http_requests_total{route=sessions,status=2xx}"]
            > before
                .get("paywatch_http_requests_total{route=sessions,status=2xx}")
                .copied()
                .unwrap_or(0.0)
    );
    assert!(after.contains_key("paywatch_session_events_total{type=checkout.session.completed}"));
    assert!(
        after.contains_key("paywatch_outbox_depth{}"),
        "outbox depth is exported"
    );

    // The chain's only RPC goes away: unready, naming the chain; back: ready again.
    let port = chain.stop();
    // Both chain entries use this node; each notices at its own next poll.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, body) = readyz(&c, &d).await;
        let local = body["checks"]["chains"]["local"].as_str().unwrap_or("");
        if local.starts_with("RPC down") {
            assert_eq!(st, 503, "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the chain's RPC going down was not reported: {st} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _chain = Anvil::start_on(port).await;
    wait_ready(&c, &d, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_wrong_chain_id_and_a_dead_rpc() {
    let chain = Anvil::start().await;
    let dir = tempfile::tempdir().unwrap();
    // anvil is chain 31337; the config says 1. The second URL has nothing behind it.
    let setup = Setup {
        rpc_urls: vec![chain.url.clone(), "http://127.0.0.1:9".into()],
        confirmations: 1,
        local: Box::new(|c| c.with("chain_id", 1)),
    };
    let text = config(dir.path(), &setup);
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["doctor", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = |needle: &str| {
        stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{stdout}"))
            .to_owned()
    };
    let wrong = line("chains.local.rpc_urls.0");
    assert!(wrong.starts_with("FAIL"), "{wrong}");
    assert!(wrong.contains("serves chain id 31337, not 1"), "{wrong}");
    let dead = line("chains.local.rpc_urls.1");
    assert!(
        dead.starts_with("FAIL") && dead.contains("no answer"),
        "{dead}"
    );
    // The other chain entry (same node, right chain id) is fine, and so is the storage.
    assert!(line("chains.local18.rpc_urls.0").starts_with("ok"));
    assert!(line("storage").starts_with("ok"));
    assert!(line("server.listen").starts_with("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_heads_subscription_wakes_the_watcher_between_polls() {
    let chain = Anvil::start().await;
    assert_eq!(
        chain.deploy_token("USDT", 6).await.to_lowercase(),
        TOKEN_6.to_lowercase()
    );
    chain.deploy_token("USDT", 18).await;
    chain.mint(TOKEN_6, ALICE, 1_000_000_000).await;
    // Polls 30 s apart: only the subscription can make the payment visible within seconds.
    let ws = format!("ws://127.0.0.1:{}", chain.port);
    let setup = Setup {
        rpc_urls: vec![chain.url.clone()],
        confirmations: 1,
        local: Box::new(move |c| {
            c.with("poll_interval_ms", 30_000)
                .with("ws_url", ws.as_str())
        }),
    };
    let mut d = Daemon::prepare_text(|dir| config(dir, &setup));
    let key = create_key(&d.config, "demo", &[]);
    d.start();
    let c = client();
    wait_ready(&c, &d, 200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = create(&c, &d, &key, 1_250, "usdt_local", None).await;
    let (_, payable) = option(&s);
    let paid_at = Instant::now();
    let tx = chain.transfer(TOKEN_6, ALICE, PAY_TO, payable).await;
    chain.receipt(&tx).await;
    wait_session(
        &c,
        &d,
        &key,
        s["id"].as_str().unwrap(),
        10,
        "complete",
        |s| status(s) == "complete",
    )
    .await;
    assert!(
        paid_at.elapsed() < Duration::from_secs(10),
        "seen through the subscription, not the 30 s poll"
    );
}
