//! The chain watcher end to end, against a real anvil chain and the release daemon:
//! - latency from a block being mined to the merchant's callback being received, compared with
//!   the target "poll interval + 50 ms";
//! - catch-up speed: blocks and transfer logs per second when the daemon restarts behind a long
//!   range of blocks.
//!
//! `cargo bench --bench chain_e2e` (needs anvil: `cd tests/chain && npm ci`). Environment:
//! `BENCH_PAYMENTS` (default 30), `BENCH_BLOCKS` (default 20000), `BENCH_LOGS` (default 5000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolValue;
use common::anvil::{ACCOUNTS, Anvil, TOKEN_6};
use common::config::{Chain, TestConfig, token_method};
use common::receiver::Receiver;
use common::{Daemon, create_key};
use serde_json::{Value, json};

const POLL_MS: u64 = 250;
const PAY_TO: &str = "0x9965507d1a55bcc2695c58ba16fb37d819b0a4dc";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(dir: &std::path::Path, rpc: &str) -> String {
    let chain = Chain::custom(31337, &[rpc], TOKEN_6, 6, 1)
        .with("poll_interval_ms", i64::try_from(POLL_MS).unwrap())
        .with("max_log_range", 2000);
    TestConfig::base(dir)
        .set("log.level", "warn")
        .chain("local", chain)
        .merchant(
            "demo",
            "Demo",
            vec![("usdt", token_method("local", PAY_TO))],
        )
        .text()
}

async fn metric(c: &reqwest::Client, d: &Daemon, name: &str) -> Option<f64> {
    let text = c
        .get(format!("{}/metrics", d.admin))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn selector(sig: &str) -> Vec<u8> {
    alloy::primitives::keccak256(sig.as_bytes())[..4].to_vec()
}

#[tokio::main]
async fn main() {
    let payments = env("BENCH_PAYMENTS", 30);
    let blocks = env("BENCH_BLOCKS", 20_000) as u64;
    let logs = env("BENCH_LOGS", 5_000);
    let chain = Anvil::start().await;
    chain.deploy_token("USDT", 6).await;
    chain.mint(TOKEN_6, ACCOUNTS[2], 10u128.pow(15)).await;
    let mut d = Daemon::prepare_text(|dir| config(dir, &chain.url));
    let key = create_key(&d.config, "demo", &[]);
    d.start();
    let c = common::client();
    let hook = Receiver::start(0, &[]).await;

    // 1. Block mined → callback received.
    tokio::time::sleep(Duration::from_millis(2 * POLL_MS)).await;
    let mut lat = Vec::new();
    for i in 0..payments {
        let (st, _, s) = common::post(
            &c,
            &d.url("/v1/checkout/sessions"),
            &key,
            json!({"amount": 1000 + i, "currency": "usd", "notify_url": hook.url}),
            None,
        )
        .await;
        assert_eq!(st, 201, "{s}");
        let id = s["id"].as_str().unwrap().to_owned();
        let payable: u128 = s["payment_options"][0]["payable_amount_base_units"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        // Spread the payments over the poll cycle, as real ones are.
        tokio::time::sleep(Duration::from_millis(37 * (i as u64 % 7))).await;
        let tx = chain.transfer(TOKEN_6, ACCOUNTS[2], PAY_TO, payable).await;
        let mined = Instant::now(); // automine: mined when eth_sendTransaction returns
        let _ = tx;
        hook.wait_for(10, "completed callback", |r| {
            r.iter().any(|x| {
                let v: Value = x.json();
                v["type"] == "checkout.session.completed" && v["data"]["object"]["id"] == json!(id)
            })
        })
        .await;
        lat.push(mined.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    println!(
        "block mined → callback received, {payments} payments, poll interval {POLL_MS} ms: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms (target ≤ {} ms)",
        q(0.5),
        q(0.9),
        lat[lat.len() - 1],
        POLL_MS + 50
    );

    // 2. Catch-up: the daemon is stopped while the chain moves on.
    assert_eq!(d.terminate(), Some(0));
    let per_tx = 100usize;
    let mut sent = 0usize;
    let mut k = 0u128;
    while sent < logs {
        let n = per_tx.min(logs - sent);
        let to: Vec<Address> = (0..n).map(|_| PAY_TO.parse().unwrap()).collect();
        let value: Vec<U256> = (0..n)
            .map(|_| {
                k += 1;
                U256::from(7_000_000_000u128 + k) // amounts no session holds: unmatched credits
            })
            .collect();
        let mut data = selector("batchTransfer(address[],uint256[])");
        data.extend((to, value).abi_encode_params());
        let tx = chain.send(ACCOUNTS[2], Some(TOKEN_6), data).await;
        chain.receipt(&tx).await;
        sent += n;
        chain.mine(blocks / (logs / per_tx).max(1) as u64).await;
    }
    let head = chain.head().await;
    let started = Instant::now();
    d.start();
    let from = loop {
        if let Some(cp) = metric(&c, &d, "paywatch_chain_checkpoint_block{").await
            && cp > 0.0
        {
            break cp;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = from;
    loop {
        let cp = metric(&c, &d, "paywatch_chain_checkpoint_block{")
            .await
            .unwrap_or(0.0);
        if cp as u64 >= head {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "catch-up stalled at {cp}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let seen = metric(&c, &d, "paywatch_chain_logs_total{")
        .await
        .unwrap_or(0.0);
    println!(
        "catch-up after a restart: {} blocks with {sent} transfer logs (each recorded as an unmatched credit) in {secs:.2} s (start included): {:.0} blocks/s, {:.0} logs/s; logs seen {seen}",
        head,
        head as f64 / secs,
        sent as f64 / secs
    );
}
