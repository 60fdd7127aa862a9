//! Chains as public providers serve them: a real anvil (started with TRON's chain id for the
//! TRON cases), the real daemon, and between them a provider proxy of this test's own.
//!
//! The proxy is a TEST DOUBLE of a public RPC provider (TronGrid and the like), not a real one:
//! it requires its API-key header, answers 429 with `Retry-After` and TronGrid's "exceeds the
//! frequency limit" text in bursts (and above a per-second rate), refuses `eth_getLogs` ranges
//! over its cap with java-tron's wording, serves no subscriptions, and in one mode alters the
//! amount in the logs and receipts it relays (a lying provider). It counts every request, so
//! the daemon's request rate can be checked against the budget in docs/chains.md.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::anvil::{ACCOUNTS, Anvil, TOKEN_6};
use common::config::{Chain, TestConfig, table, token_method};
use common::{ADMIN_TOKEN, BIN, Daemon, client, create_key, get, post};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SESSIONS: &str = "/v1/checkout/sessions";
const TRON_CHAIN_ID: &str = "728126428";
/// The merchant's receiving address (anvil account 5) and a customer (account 2).
const PAY_TO: &str = "0x9965507d1a55bcc2695c58ba16fb37d819b0a4dc";
const ALICE: &str = ACCOUNTS[2];
const KEY_HEADER: &str = "tron-pro-api-key";
const TRANSFER_TOPIC: &str = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";

/// TRON's Base58Check form of a 20-byte hex address.
fn tron_address(hex_addr: &str) -> String {
    let mut b = vec![0x41u8];
    b.extend(hex::decode(hex_addr.trim_start_matches("0x")).unwrap());
    bs58::encode(b).with_check().into_string()
}

#[derive(Default)]
struct ProxyState {
    /// The API key this provider requires.
    key: String,
    /// Every request: when, the JSON-RPC method, the key header it carried.
    requests: Vec<(Instant, String, Option<String>)>,
    rate_limited: u64,
    unauthorized: u64,
    range_refused: u64,
    subscriptions_refused: u64,
    /// Answer 429 to everything until then.
    burst_until: Option<Instant>,
    /// Requests allowed per second before 429s (0 = unlimited).
    per_second: u32,
    second: (u64, u32),
    /// Widest `eth_getLogs` range served.
    range_cap: u64,
    /// Lying mode: every `Transfer` amount relayed (logs and receipts) becomes this.
    lie_amount: Option<u128>,
}

#[derive(Clone)]
struct Proxy {
    url: String,
    state: Arc<Mutex<ProxyState>>,
}

impl Proxy {
    async fn start(upstream: &str, key: &str, range_cap: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState {
            key: key.to_owned(),
            range_cap,
            ..Default::default()
        }));
        let (st, up) = (state.clone(), upstream.to_owned());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, st.clone(), up.clone(), http.clone()));
            }
        });
        Proxy {
            url: format!("http://127.0.0.1:{port}/jsonrpc"),
            state,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut ProxyState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Requests within the last `window`.
    fn requests_within(&self, window: Duration) -> usize {
        let now = Instant::now();
        self.with(|s| {
            s.requests
                .iter()
                .filter(|(t, _, _)| now.duration_since(*t) <= window)
                .count()
        })
    }

    /// Requests since `t`.
    fn requests_since(&self, t: Instant) -> usize {
        self.with(|s| s.requests.iter().filter(|r| r.0 >= t).count())
    }

    /// The most requests in any `window` (sliding over the recorded ones).
    fn peak_within(&self, window: Duration) -> usize {
        self.with(|s| {
            let times: Vec<Instant> = s.requests.iter().map(|r| r.0).collect();
            let mut peak = 0;
            let mut j = 0;
            for i in 0..times.len() {
                while times[i].duration_since(times[j]) > window {
                    j += 1;
                }
                peak = peak.max(i - j + 1);
            }
            peak
        })
    }
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

fn hex_u64(v: &Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok()
}

async fn respond(sock: &mut TcpStream, status: u16, extra: &str, body: &str) -> bool {
    let r = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    sock.write_all(r.as_bytes()).await.is_ok()
}

/// Rewrites the amount of every `Transfer` log in `logs` (the lying provider).
fn lie(logs: &mut Value, amount: u128) {
    if let Some(a) = logs.as_array_mut() {
        for l in a {
            if l["topics"][0] == json!(TRANSFER_TOPIC) {
                l["data"] = json!(format!("0x{amount:064x}"));
            }
        }
    }
}

async fn serve(
    mut sock: TcpStream,
    state: Arc<Mutex<ProxyState>>,
    up: String,
    http: reqwest::Client,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut headers = HashMap::new();
        for l in head.split("\r\n").skip(1) {
            if let Some((k, v)) = l.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 8192];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Value =
            serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
        buf.drain(..head_end + len);
        let method = body["method"].as_str().unwrap_or_default().to_owned();
        let id = body["id"].clone();
        // What the provider decides before relaying.
        enum Verdict {
            Upgrade,
            Unauthorized,
            Limited,
            Subscribe,
            Range(u64),
            Relay(Option<u128>),
        }
        let verdict = {
            let mut s = state.lock().unwrap();
            let now = Instant::now();
            s.requests
                .push((now, method.clone(), headers.get(KEY_HEADER).cloned()));
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            if s.second.0 != wall {
                s.second = (wall, 0);
            }
            s.second.1 += 1;
            if headers.contains_key("upgrade") {
                s.subscriptions_refused += 1;
                Verdict::Upgrade
            } else if headers.get(KEY_HEADER) != Some(&s.key) {
                s.unauthorized += 1;
                Verdict::Unauthorized
            } else if s.burst_until.is_some_and(|u| now < u)
                || (s.per_second > 0 && s.second.1 > s.per_second)
            {
                s.rate_limited += 1;
                Verdict::Limited
            } else if method == "eth_subscribe" {
                s.subscriptions_refused += 1;
                Verdict::Subscribe
            } else if method == "eth_getLogs"
                && let (Some(a), Some(b)) = (
                    hex_u64(&body["params"][0]["fromBlock"]),
                    hex_u64(&body["params"][0]["toBlock"]),
                )
                && b + 1 - a.min(b + 1) > s.range_cap
            {
                s.range_refused += 1;
                Verdict::Range(s.range_cap)
            } else {
                Verdict::Relay(s.lie_amount)
            }
        };
        let ok = match verdict {
            Verdict::Upgrade => {
                respond(&mut sock, 400, "", r#"{"Error":"subscriptions are not served"}"#).await;
                return;
            }
            Verdict::Unauthorized => {
                respond(&mut sock, 401, "", r#"{"Error":"ApiKey not exists"}"#).await
            }
            Verdict::Limited => {
                respond(
                    &mut sock,
                    429,
                    "retry-after: 1\r\n",
                    r#"{"Error":"The key exceeds the frequency limit(15), and the query server is suspended for 1s"}"#,
                )
                .await
            }
            Verdict::Subscribe => {
                let b = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "the method eth_subscribe does not exist/is not available"}});
                respond(&mut sock, 200, "", &b.to_string()).await
            }
            Verdict::Range(cap) => {
                let b = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32005, "message": format!("exceed max block range: {cap}")}});
                respond(&mut sock, 200, "", &b.to_string()).await
            }
            Verdict::Relay(lie_amount) => {
                let r = http.post(&up).json(&body).send().await;
                let mut v: Value = match r {
                    Ok(r) => r.json().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                };
                if let Some(amount) = lie_amount {
                    if method == "eth_getLogs" {
                        lie(&mut v["result"], amount);
                    } else if method == "eth_getTransactionReceipt" {
                        lie(&mut v["result"]["logs"], amount);
                    }
                }
                respond(&mut sock, 200, "", &v.to_string()).await
            }
        };
        if !ok {
            return;
        }
    }
}

struct TronSetup<'a> {
    urls: &'a [&'a str],
    /// (url, header value as `value`, or as a file).
    headers: Vec<(&'a str, &'a str, bool)>,
    /// Fields of `[chains.tron_local]` that differ from the defaults here.
    extra: Vec<(&'a str, toml::Value)>,
}

fn tron_config(dir: &Path, s: &TronSetup) -> String {
    let mut chain = Chain::custom(
        TRON_CHAIN_ID.parse().unwrap(),
        s.urls,
        &tron_address(TOKEN_6),
        6,
        1,
    )
    .remove("poll_interval_ms")
    .with("tron", true)
    .with("finality", "finalized");
    let mut headers = Vec::new();
    for (i, (url, value, in_file)) in s.headers.iter().enumerate() {
        let v = if *in_file {
            let f = dir.join(format!("key{i}"));
            std::fs::write(&f, format!("{value}\n")).unwrap();
            ("value_file", f.display().to_string().into())
        } else {
            ("value", (*value).into())
        };
        headers.push(toml::Value::Table(table([
            ("url", (*url).into()),
            ("name", "TRON-PRO-API-KEY".into()),
            v,
        ])));
    }
    if !headers.is_empty() {
        chain = chain.with("rpc_headers", headers);
    }
    for (k, v) in &s.extra {
        chain = chain.with(k, v.clone());
    }
    TestConfig::base(dir)
        .chain("tron_local", chain)
        .merchant(
            "demo",
            "Demo Store",
            vec![(
                "usdt_tron",
                token_method("tron_local", &tron_address(PAY_TO)),
            )],
        )
        .text()
}

/// anvil with TRON's chain id, a block a second (so the `finalized` tag, two blocks behind
/// with one slot per epoch, moves), the token deployed and the customer funded.
async fn tron_chain() -> Anvil {
    let chain = Anvil::start_with(
        0,
        &[
            "--chain-id",
            TRON_CHAIN_ID,
            "--block-time",
            "1",
            "--slots-in-an-epoch",
            "1",
        ],
    )
    .await;
    assert_eq!(
        chain.deploy_token("USDT", 6).await.to_lowercase(),
        TOKEN_6.to_lowercase()
    );
    chain.mint(TOKEN_6, ALICE, 1_000_000_000_000).await;
    chain
}

async fn create(c: &reqwest::Client, d: &Daemon, key: &str, amount: u64) -> Value {
    let body = json!({"amount": amount, "currency": "usd", "payment_methods": ["usdt_tron"]});
    let (st, _, s) = post(c, &d.url(SESSIONS), key, body, None).await;
    assert_eq!(st, 201, "{s}");
    s
}

fn payable(s: &Value) -> u128 {
    s["payment_options"][0]["payable_amount_base_units"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn session(c: &reqwest::Client, d: &Daemon, key: &str, id: &str) -> Value {
    let (st, s) = get(c, &d.url(&format!("{SESSIONS}/{id}")), key).await;
    assert_eq!(st, 200, "{s}");
    s
}

async fn metrics(c: &reqwest::Client, d: &Daemon) -> String {
    let r = c.get(format!("{}/metrics", d.admin)).send().await.unwrap();
    r.text().await.unwrap()
}

/// The value of `name{chain="tron_local"}` in the metrics text.
fn metric(text: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{chain=\"tron_local\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
        .parse()
        .unwrap()
}

async fn readyz(c: &reqwest::Client, d: &Daemon) -> (u16, Value) {
    let r = c.get(format!("{}/readyz", d.admin)).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Payments made during 429 bursts on both providers are all recorded once and on time; the
/// 429s rest the URL (never read as range errors); the range cap is met by splitting; each
/// provider gets only its own key; the request rate stays within the documented budget, and
/// drops to the idle rate once no session waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tron_payments_during_rate_limit_bursts_are_recorded_once_and_on_time() {
    let chain = tron_chain().await;
    // A history longer than the proxy's range cap before the first poll.
    chain.mine(300).await;
    let (key_a, key_b) = ("trongrid-key-a-5f1e9c", "other-provider-key-b-77d2");
    let a = Proxy::start(&chain.url, key_a, 100).await;
    let b = Proxy::start(&chain.url, key_b, 100).await;
    for p in [&a, &b] {
        p.with(|s| s.per_second = 15);
    }
    let urls = [a.url.as_str(), b.url.as_str()];
    let setup = TronSetup {
        urls: &urls,
        headers: vec![(&a.url, key_a, true), (&b.url, key_b, false)],
        extra: vec![
            ("poll_interval_ms", 500.into()),
            ("idle_poll_interval_ms", 5000.into()),
            ("start_block", 1.into()),
        ],
    };
    let mut d = Daemon::prepare_text(|dir| tron_config(dir, &setup));
    let key = create_key(&d.config, "demo", &["--permissions", "*"]);
    d.start();
    let c = client();

    // Bursts: A refuses everything for 1.5 s of every 4 s, B for 1.5 s of every 4 s, 2 s later.
    let (ba, bb) = (a.clone(), b.clone());
    let bursts = tokio::spawn(async move {
        loop {
            ba.with(|s| s.burst_until = Some(Instant::now() + Duration::from_millis(1500)));
            tokio::time::sleep(Duration::from_secs(2)).await;
            bb.with(|s| s.burst_until = Some(Instant::now() + Duration::from_millis(1500)));
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });

    let started = Instant::now();
    let mut paid = Vec::new();
    for i in 0..5u64 {
        let s = create(&c, &d, &key, 1_000 + i).await;
        let amount = payable(&s);
        let tx = chain.transfer(TOKEN_6, ALICE, PAY_TO, amount).await;
        paid.push((
            s["id"].as_str().unwrap().to_owned(),
            amount,
            tx,
            Instant::now(),
        ));
        tokio::time::sleep(Duration::from_millis(1700)).await;
    }
    // On time: each complete within 20 s of its transfer (finality is ~3 blocks here).
    for (id, amount, tx, at) in &paid {
        loop {
            let s = session(&c, &d, &key, id).await;
            if s["status"] == "complete" {
                let payments = s["payments"].as_array().unwrap();
                assert_eq!(payments.len(), 1, "exactly once: {s}");
                assert_eq!(payments[0]["tx_hash"], json!(tx));
                assert_eq!(
                    payments[0]["amount_base_units"]
                        .as_str()
                        .map(|v| v.parse::<u128>().unwrap()),
                    Some(*amount),
                    "{s}"
                );
                break;
            }
            assert!(
                at.elapsed() < Duration::from_secs(20),
                "session {id} not complete 20 s after its payment: {s}\nstderr: {}",
                d.stderr()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The budget is measured from 3 s after the first session: by then the watcher has caught
    // up with the 300 blocks of history (split by the proxy's 100-block cap), which is not the
    // steady cost of waiting sessions.
    let steady = started + Duration::from_secs(3);
    let active = steady.elapsed();
    // Counted now: the checks below (refund, console, metrics) take seconds more of polling
    // that `active` does not cover.
    let total = a.requests_since(steady) + b.requests_since(steady);
    bursts.abort();

    // A refund of a TRC-20 payment is shown with a TRON URI to the customer's T… address.
    let (st, _, r) = post(
        &c,
        &d.url("/v1/refunds"),
        &key,
        json!({"session": paid[0].0, "amount": "1.5"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{r}");
    let login = c
        .post(format!("{}/console/login", d.admin))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    let page = c
        .get(format!("{}/console/refunds", d.admin))
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let want = format!(
        "tron:{}?token={}&#38;amount=1.500000",
        tron_address(ALICE),
        tron_address(TOKEN_6)
    );
    assert!(
        page.contains(&want),
        "{want} not on the refunds page:\n{page}"
    );
    assert!(!page.contains("ethereum:"), "{page}");

    let (limited, ranges) = (
        a.with(|s| s.rate_limited) + b.with(|s| s.rate_limited),
        a.with(|s| s.range_refused) + b.with(|s| s.range_refused),
    );
    assert!(limited >= 5, "the bursts were met: {limited} 429s");
    assert!(ranges >= 1, "the range cap was met");
    let m = metrics(&c, &d).await;
    assert!(
        metric(&m, "paywatch_chain_rpc_rate_limited_total") >= 1.0,
        "{m}"
    );
    // The span was cut by the range cap alone: a 429 read as a range error would halve it on
    // every burst, towards 1.
    let span = metric(&m, "paywatch_chain_log_span_blocks");
    assert!((50.0..=100.0).contains(&span), "log span {span}\n{m}");
    assert!(m.contains("paywatch_chain_rpc_url_up{chain=\"tron_local\",url=\"http://127.0.0.1:"));

    // Each provider got its own key, and only it; no key reaches a log, /metrics or /readyz.
    for (p, k) in [(&a, key_a), (&b, key_b)] {
        p.with(|s| {
            assert!(
                s.requests.iter().all(|r| r.2.as_deref() == Some(k)),
                "a request without its key"
            );
            assert_eq!(s.unauthorized, 0);
        });
    }
    let (_, ready) = readyz(&c, &d).await;
    for k in [key_a, key_b] {
        assert!(!d.stderr().contains(k), "a key in the log");
        assert!(!m.contains(k) && !ready.to_string().contains(k));
    }

    // The budget while sessions wait (docs/chains.md: 3 requests per poll at most, 2 polls a
    // second here = 360 a minute; 429s answered during bursts count too, retries included).
    let per_minute = total as f64 * 60.0 / active.as_secs_f64();
    let peak = a
        .peak_within(Duration::from_secs(60))
        .max(b.peak_within(Duration::from_secs(60)));
    println!(
        "active: {total} requests in {active:?} = {per_minute:.0}/min; one provider's peak minute {peak}"
    );
    assert!(
        // 360 served at most, plus the attempts a burst answers with 429 (each retried on the
        // other URL): measured 400-460 with the catch-up counted, ~400 without.
        per_minute <= 480.0,
        "{per_minute:.0} requests a minute while sessions wait"
    );

    // No session waits now: the idle interval (5 s) applies, still watching the chain.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before =
        a.requests_within(Duration::from_secs(3600)) + b.requests_within(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after =
        a.requests_within(Duration::from_secs(3600)) + b.requests_within(Duration::from_secs(3600));
    let idle_per_minute = (after - before) as f64 * 4.0;
    println!(
        "idle: {} requests in 15 s = {idle_per_minute:.0}/min",
        after - before
    );
    assert!(
        idle_per_minute <= 60.0,
        "{idle_per_minute} requests a minute with nothing awaiting"
    );
    let m = metrics(&c, &d).await;
    assert_eq!(metric(&m, "paywatch_chain_idle"), 1.0);

    // A payment while idle (no session): still recorded, as an unmatched credit, within the
    // idle interval plus finality.
    let tx = chain.transfer(TOKEN_6, ALICE, PAY_TO, 4_242).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = get(&c, &d.url("/v1/credits"), &key).await;
        if v.to_string().contains(&tx) {
            break;
        }
        assert!(Instant::now() < deadline, "idle payment not recorded: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// With every RPC URL down, the log gets a line when the state changes, not one per retry;
/// `/readyz` and the metrics show it; recovery is logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_down_is_logged_on_change_and_shown_until_it_recovers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let urls = [url.as_str()];
    let setup = TronSetup {
        urls: &urls,
        headers: vec![],
        extra: vec![
            ("poll_interval_ms", 100.into()),
            ("finality", "confirmations".into()),
        ],
    };
    let mut d = Daemon::prepare_text(|dir| tron_config(dir, &setup));
    d.start();
    let c = client();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let warns = d.stderr().lines().filter(|l| l.contains("WARN")).count();
    assert!(
        warns <= 3,
        "{warns} WARN lines in 8 s down:\n{}",
        d.stderr()
    );
    let (st, body) = readyz(&c, &d).await;
    assert_eq!(st, 503, "{body}");
    assert!(
        body["checks"]["chains"]["tron_local"]
            .as_str()
            .unwrap()
            .starts_with("RPC down"),
        "{body}"
    );
    let m = metrics(&c, &d).await;
    assert_eq!(metric(&m, "paywatch_chain_rpc_up"), 0.0);

    let chain = Anvil::start_with(port, &["--chain-id", TRON_CHAIN_ID]).await;
    let deadline = Instant::now() + Duration::from_secs(70);
    loop {
        let (st, body) = readyz(&c, &d).await;
        if st == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery: {body}\n{}",
            d.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        d.stderr().contains("chain polls succeed again"),
        "{}",
        d.stderr()
    );
    drop(chain);
}

/// TRON's JSON-RPC serves no subscriptions: a `ws_url` on a TRON chain stops the start with
/// one line naming the key; a header value is never echoed in a config error.
#[test]
fn tron_ws_url_and_bad_headers_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let urls = ["http://127.0.0.1:9/jsonrpc"];
    let cases = [
        (
            TronSetup {
                urls: &urls,
                headers: vec![],
                extra: vec![("ws_url", "wss://tron.example/ws".into())],
            },
            "chains.tron_local.ws_url: TRON's JSON-RPC is served over HTTP only",
        ),
        (
            TronSetup {
                urls: &urls,
                headers: vec![("http://127.0.0.1:10/jsonrpc", "sekret-value-123", false)],
                extra: vec![],
            },
            "chains.tron_local.rpc_headers.0.url",
        ),
        (
            TronSetup {
                urls: &urls,
                headers: vec![],
                extra: vec![("max_log_range", 6000.into())],
            },
            "refuses ranges over 5000 blocks",
        ),
    ];
    for (setup, want) in cases {
        let config = dir.path().join("config.toml");
        std::fs::write(&config, tron_config(dir.path(), &setup)).unwrap();
        // A config that is wrongly accepted would serve forever: killed after 20 s.
        let mut child = std::process::Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{want:?}: the config was accepted and the daemon started");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{want:?} not in {err}");
        assert!(!err.contains("sekret-value-123"), "{err}");
    }
}

/// `second_opinion`: a provider that invents money (it relays a customer's 1-unit transfer as
/// the session's full amount) is not believed: the other provider's receipt disagrees, the
/// session stays open and the disagreement is shown. The same lie without the second opinion
/// completes the session: the check is what stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_opinion_refuses_a_receipt_one_provider_invented() {
    let chain = tron_chain().await;
    for second_opinion in [false, true] {
        let liar = Proxy::start(&chain.url, "k1", 5000).await;
        let honest = Proxy::start(&chain.url, "k2", 5000).await;
        let urls = [liar.url.as_str(), honest.url.as_str()];
        let setup = TronSetup {
            urls: &urls,
            headers: vec![(&liar.url, "k1", false), (&honest.url, "k2", false)],
            extra: vec![
                ("poll_interval_ms", 300.into()),
                ("second_opinion", second_opinion.into()),
            ],
        };
        let mut d = Daemon::prepare_text(|dir| tron_config(dir, &setup));
        let key = create_key(&d.config, "demo", &[]);
        d.start();
        let c = client();
        let s = create(&c, &d, &key, 1_000).await;
        let id = s["id"].as_str().unwrap().to_owned();
        liar.with(|st| st.lie_amount = Some(payable(&s)));
        chain.transfer(TOKEN_6, ALICE, PAY_TO, 1).await;
        let deadline = Instant::now() + Duration::from_secs(12);
        let mut last;
        loop {
            last = session(&c, &d, &key, &id).await;
            if last["status"] == "complete" || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !second_opinion {
            assert_eq!(
                last["status"], "complete",
                "the lie was believed without the check: {last}"
            );
            continue;
        }
        assert_ne!(last["status"], "complete", "invented money counted: {last}");
        assert!(
            last["payments"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["status"] != "confirmed"),
            "{last}"
        );
        let m = metrics(&c, &d).await;
        assert!(
            metric(&m, "paywatch_chain_second_opinion_refused_total") >= 1.0,
            "{m}"
        );
        let (st, body) = readyz(&c, &d).await;
        assert_eq!(st, 503, "{body}");
        assert!(
            body["checks"]["chains"]["tron_local"]
                .as_str()
                .unwrap()
                .contains("second opinion"),
            "{body}"
        );
        assert!(d.stderr().contains("second opinion disagrees"));
    }
}
