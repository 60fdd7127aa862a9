//! Crash consistency under mixed load: the real daemon, a real chain (anvil) and a real webhook
//! receiver that fails a quarter of its requests. While sessions are created, paid by ERC-20
//! transfers and by UPI credit alerts, and callbacks are delivered, the daemon is SIGKILLed at
//! random moments and restarted (on new ports) again and again. Afterwards every acknowledged
//! session, every payment the chain or the bank made and every event must be there exactly as
//! promised: nothing lost, nothing counted twice, no reservation shared.
//!
//! `PAYWATCH_CRASH_KILLS` sets the number of kills (default 8, for the regular suite). The full
//! run: `PAYWATCH_CRASH_KILLS=60 cargo test --release --test crash_consistency -- --nocapture`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::anvil::{ACCOUNTS, Anvil, TOKEN_6};
use common::config::{Chain, TestConfig, table, token_method};
use common::receiver::Receiver;
use common::{ADMIN_TOKEN, Daemon, create_key};
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";
const CREDITS: &str = "/v1/upi/credits";
/// The token method's receiving address (anvil account 5).
const PAY_TO: &str = "0x9965507d1a55bcc2695c58ba16fb37d819b0a4dc";
/// Customers paying by token: anvil accounts 2, 3 and 4.
const CUSTOMERS: [&str; 3] = [ACCOUNTS[2], ACCOUNTS[3], ACCOUNTS[4]];
/// Concurrent session creators.
const CREATORS: u64 = 3;
/// How long the checks may wait for the watcher and the notifier to settle after the last restart.
const SETTLE: Duration = Duration::from_secs(120);

fn config(dir: &Path, rpc: &str) -> String {
    let unique = |mut t: toml::Table| {
        t.insert("strategy".into(), "unique_amount".into());
        t
    };
    TestConfig::base(dir)
        .set("api.rate_limit_per_second", 100_000)
        .set("api.rate_limit_burst", 100_000)
        .set("log.level", "warn")
        .set(
            "webhooks.retry_schedule_secs",
            toml::Value::Array(
                [1, 1, 1, 1, 1, 2, 2, 2, 5, 5]
                    .map(toml::Value::from)
                    .to_vec(),
            ),
        )
        .chain("local", Chain::custom(31337, &[rpc], TOKEN_6, 6, 2))
        .merchant(
            "demo",
            "Demo Store",
            vec![
                ("usdt_local", unique(token_method("local", PAY_TO))),
                ("upi", unique(table([("vpa", "demo@okbank".into())]))),
            ],
        )
        .text()
}

fn hdfc_credit(amount: &str, utr: &str) -> String {
    format!(
        "Rs.{amount} credited to a/c XX1234 on 20-11-26 by a/c linked to VPA cust@okaxis (UPI Ref No {utr})."
    )
}

/// A session whose create was answered 201.
#[derive(Clone, Debug)]
struct Acked {
    id: String,
    order: String,
    amount: u64,
    pay_to: String,
    payable: String,
    payable_base: u128,
}

/// An ERC-20 transfer made on the chain: to a session's (pay_to, payable), or a stray amount.
#[derive(Clone, Debug)]
struct Transfer {
    tx: String,
    session: Option<String>,
    amount: u128,
}

/// A UPI credit alert the daemon acknowledged (2xx).
#[derive(Clone, Debug)]
struct Alert {
    utr: String,
    session: Option<String>,
    outcome: String,
    /// Posts that got no answer (the daemon was killed) before the acknowledged one.
    lost: usize,
}

#[derive(Default)]
struct Record {
    acked: Vec<Acked>,
    replayed: usize,
    lost_creates: usize,
    transfers: Vec<Transfer>,
    alerts: Vec<Alert>,
    /// Answers no client should ever get (the check asserts there are none).
    unexpected: Vec<String>,
}

struct Shared {
    /// The daemon's public base URL now; empty while it is down (killed, not yet restarted).
    live: RwLock<String>,
    stop: AtomicBool,
    record: Mutex<Record>,
    http: reqwest::Client,
    key: String,
    /// The daemon's directory (its stderr.log, for failure messages).
    dir: std::path::PathBuf,
}

impl Shared {
    /// The current public base URL, waiting while the daemon is down.
    async fn base(&self) -> String {
        loop {
            let b = self.live.read().unwrap().clone();
            if !b.is_empty() {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One POST; `None` when no complete answer came back (killed mid-request, or down).
    async fn try_post(
        &self,
        path: &str,
        body: &Value,
        idem: Option<&str>,
    ) -> Result<(u16, bool, Value), String> {
        let url = format!("{}{path}", self.base().await);
        let mut rb = self.http.post(&url).bearer_auth(&self.key).json(body);
        if let Some(k) = idem {
            rb = rb.header("Idempotency-Key", k);
        }
        let r = rb.send().await.map_err(|e| format!("{url}: {e:?}"))?;
        let status = r.status().as_u16();
        let replayed = r.headers().contains_key("idempotent-replayed");
        let bytes = r.bytes().await.map_err(|e| format!("{url}: {e:?}"))?;
        let v = serde_json::from_slice(&bytes).map_err(|e| format!("{url}: {e}"))?;
        Ok((status, replayed, v))
    }

    /// POSTs until an answer comes back, as a merchant's server or an SMS forwarder retries
    /// (the same Idempotency-Key, the same alert). Returns the answer and how many were lost.
    async fn post_until_answered(
        &self,
        path: &str,
        body: &Value,
        idem: Option<&str>,
    ) -> ((u16, bool, Value), usize) {
        let mut lost = 0;
        loop {
            let e = match self.try_post(path, body, idem).await {
                Ok(a) => return (a, lost),
                Err(e) => e,
            };
            lost += 1;
            assert!(
                lost < 500,
                "{path}: no answer after 500 tries; last: {e}\ndaemon stderr (tail): {}",
                self.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    fn stderr_tail(&self) -> String {
        let all = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn unexpected(&self, what: String) {
        self.record.lock().unwrap().unexpected.push(what);
    }
}

/// Creates sessions (alternately token and UPI) until stopped; hands acknowledged ones to payers.
async fn creator(
    sh: Arc<Shared>,
    n: Arc<AtomicU64>,
    notify: String,
    token_tx: tokio::sync::mpsc::UnboundedSender<Acked>,
    upi_tx: tokio::sync::mpsc::UnboundedSender<Acked>,
) {
    while !sh.stop.load(Ordering::Relaxed) {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let token = i.is_multiple_of(2);
        let order = format!("ord-{i}");
        let (amount, body) = if token {
            let amount = rand::random_range(100..=5_000u64);
            let body = json!({"amount": amount, "currency": "usd", "payment_methods": ["usdt_local"],
                "notify_url": notify, "client_reference_id": order});
            (amount, body)
        } else {
            let amount = rand::random_range(100..=400u64) * 100;
            let body = json!({"amount": amount, "currency": "inr", "payment_methods": ["upi"],
                "notify_url": notify, "client_reference_id": order});
            (amount, body)
        };
        let idem = format!("idem-{i}");
        let ((status, replayed, v), lost) =
            sh.post_until_answered(SESSIONS, &body, Some(&idem)).await;
        if status != 201 {
            sh.unexpected(format!("create {order}: {status} {v}"));
            continue;
        }
        let o = &v["payment_options"][0];
        let acked = Acked {
            id: v["id"].as_str().unwrap().to_owned(),
            order,
            amount,
            pay_to: o["pay_to"].as_str().unwrap().to_lowercase(),
            payable: o["payable_amount"].as_str().unwrap().to_owned(),
            payable_base: o["payable_amount_base_units"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        };
        {
            let mut r = sh.record.lock().unwrap();
            r.acked.push(acked.clone());
            r.lost_creates += lost;
            r.replayed += usize::from(replayed);
        }
        let _ = if token {
            token_tx.send(acked)
        } else {
            upi_tx.send(acked)
        };
        tokio::time::sleep(Duration::from_millis(rand::random_range(5..30))).await;
    }
}

/// Pays about 60% of the token sessions with a real transfer of their exact payable amount, and
/// now and then sends a stray amount nobody holds (it must become one unmatched credit).
async fn token_payer(
    sh: Arc<Shared>,
    chain: Arc<Anvil>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Acked>,
) {
    let mut n: u128 = 0;
    while let Some(s) = rx.recv().await {
        if rand::random_range(0..100) >= 60 {
            continue;
        }
        n += 1;
        let from = CUSTOMERS[usize::try_from(n).unwrap() % CUSTOMERS.len()];
        let tx = chain
            .transfer(TOKEN_6, from, &s.pay_to, s.payable_base)
            .await;
        chain.receipt(&tx).await;
        sh.record.lock().unwrap().transfers.push(Transfer {
            tx: tx.to_lowercase(),
            session: Some(s.id.clone()),
            amount: s.payable_base,
        });
        if n.is_multiple_of(10) {
            // 0.5xxxxx USDT: below every session's amount (at least 1.00), so nobody's.
            let amount = 500_000 + n;
            let tx = chain.transfer(TOKEN_6, from, PAY_TO, amount).await;
            chain.receipt(&tx).await;
            sh.record.lock().unwrap().transfers.push(Transfer {
                tx: tx.to_lowercase(),
                session: None,
                amount,
            });
        }
    }
}

/// Posts a bank credit alert for about 60% of the UPI sessions (a unique UTR each), re-posting
/// an alert that got no answer, and now and then an alert of an amount nobody holds.
async fn upi_payer(sh: Arc<Shared>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Acked>) {
    let mut n: u64 = 0;
    while let Some(s) = rx.recv().await {
        if rand::random_range(0..100) >= 60 {
            continue;
        }
        n += 1;
        let mut alerts = vec![(
            format!("{}", 600_000_000_000 + n),
            s.payable.clone(),
            Some(s.id.clone()),
        )];
        if n.is_multiple_of(10) {
            // 10.00 to 89.99 rupees: below every session's amount (at least 100), so nobody's.
            let amount = format!("{}.{:02}", 10 + n % 80, n % 100);
            alerts.push((format!("{}", 700_000_000_000 + n), amount, None));
        }
        for (utr, amount, session) in alerts {
            let body =
                json!({"source": "sms", "sender": "VM-HDFCBK", "text": hdfc_credit(&amount, &utr)});
            let ((status, _, v), lost) = sh.post_until_answered(CREDITS, &body, None).await;
            if status != 200 {
                sh.unexpected(format!("alert {utr}: {status} {v}"));
                continue;
            }
            let outcome = v["outcome"].as_str().unwrap_or("").to_owned();
            let expected = match (&session, outcome.as_str()) {
                (Some(id), "matched") => v["session"].as_str() == Some(id.as_str()),
                (None, "unmatched") => true,
                // Only after a lost answer: the first post was committed.
                (_, "duplicate") => lost > 0,
                _ => false,
            };
            if !expected {
                sh.unexpected(format!("alert {utr} for {session:?} (lost {lost}): {v}"));
            }
            sh.record.lock().unwrap().alerts.push(Alert {
                utr,
                session,
                outcome,
                lost,
            });
        }
    }
}

/// Every page of a list endpoint.
async fn list_all(c: &reqwest::Client, base: &str, path: &str, key: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let mut url = format!("{base}{path}?limit=100");
        if let Some(last) = out.last() {
            url.push_str(&format!("&starting_after={}", last["id"].as_str().unwrap()));
        }
        let (st, v) = common::get(c, &url, key).await;
        assert_eq!(st, 200, "{url}: {v}");
        out.extend(v["data"].as_array().unwrap().iter().cloned());
        if v["has_more"] != json!(true) {
            return out;
        }
    }
}

/// A decimal string in base units (`decimals` places).
fn base_units(s: &str, decimals: u32) -> u128 {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    assert!(frac.len() <= decimals as usize, "{s}");
    let frac = format!("{frac:0<width$}", width = decimals as usize);
    int.parse::<u128>().unwrap() * 10u128.pow(decimals) + frac.parse::<u128>().unwrap_or(0)
}

/// What the daemon holds after the run.
struct Snapshot {
    sessions: Vec<Value>,
    events: Vec<Value>,
    credits: Vec<Value>,
    delivered: BTreeSet<String>,
}

async fn snapshot(c: &reqwest::Client, d: &Daemon, key: &str, hook: &Receiver) -> Snapshot {
    let sessions = list_all(c, &d.base, SESSIONS, key).await;
    let events = list_all(c, &d.base, "/v1/events", key).await;
    let (st, v) = common::get(c, &format!("{}/admin/v1/credits", d.admin), ADMIN_TOKEN).await;
    assert_eq!(st, 200, "{v}");
    let credits = v["data"].as_array().unwrap().clone();
    let delivered = hook
        .received()
        .iter()
        .filter_map(|r| r.headers.get("webhook-id").cloned())
        .collect();
    Snapshot {
        sessions,
        events,
        credits,
        delivered,
    }
}

/// Whether the watcher and the notifier are done: every transfer made is recorded and
/// confirmed, and every event reached the receiver.
fn settled(s: &Snapshot, transfers: &[Transfer]) -> bool {
    let mut confirmed = BTreeSet::new();
    for sess in &s.sessions {
        for p in sess["payments"].as_array().unwrap() {
            if p["status"] == "confirmed"
                && let Some(tx) = p["tx_hash"].as_str()
            {
                confirmed.insert(tx.to_lowercase());
            }
        }
    }
    for c in &s.credits {
        if let Some(tx) = c["tx_hash"].as_str() {
            confirmed.insert(tx.to_lowercase());
        }
    }
    transfers.iter().all(|t| confirmed.contains(&t.tx))
        && s.events
            .iter()
            .all(|e| s.delivered.contains(e["id"].as_str().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_under_mixed_load_loses_and_doubles_nothing() {
    let started = Instant::now();
    let kills: usize = std::env::var("PAYWATCH_CRASH_KILLS")
        .ok()
        .map(|v| v.parse().expect("PAYWATCH_CRASH_KILLS must be a number"))
        .unwrap_or(8);

    let chain = Arc::new(Anvil::start().await);
    assert_eq!(
        chain.deploy_token("USDT", 6).await.to_lowercase(),
        TOKEN_6.to_lowercase()
    );
    for who in CUSTOMERS {
        chain.mint(TOKEN_6, who, 1_000_000_000_000).await;
    }
    let hook = Receiver::start(0, &[]).await;
    hook.fail_randomly(25);
    let endpoint_url = format!("http://127.0.0.1:{}/endpoint", hook.port);

    let rpc = chain.url.clone();
    let mut d = Daemon::prepare_text(|dir| config(dir, &rpc));
    let key = create_key(&d.config, "demo", &["--permissions", "*"]);
    d.start();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    // A registered endpoint for every event (credit.unmatched has no notify_url).
    let (st, _, v) = common::post(
        &http,
        &d.url("/v1/webhook_endpoints"),
        &key,
        json!({"url": endpoint_url, "events": ["*"]}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{v}");

    let sh = Arc::new(Shared {
        live: RwLock::new(d.base.clone()),
        stop: AtomicBool::new(false),
        record: Mutex::new(Record::default()),
        http: http.clone(),
        key: key.clone(),
        dir: d.dir.clone(),
    });

    // The load.
    let (token_tx, token_rx) = tokio::sync::mpsc::unbounded_channel();
    let (upi_tx, upi_rx) = tokio::sync::mpsc::unbounded_channel();
    let counter = Arc::new(AtomicU64::new(0));
    let mut creators = Vec::new();
    for _ in 0..CREATORS {
        creators.push(tokio::spawn(creator(
            sh.clone(),
            counter.clone(),
            hook.url.clone(),
            token_tx.clone(),
            upi_tx.clone(),
        )));
    }
    drop((token_tx, upi_tx));
    let token_payer = tokio::spawn(token_payer(sh.clone(), chain.clone(), token_rx));
    let upi_payer = tokio::spawn(upi_payer(sh.clone(), upi_rx));
    let miner = {
        let (sh, chain) = (sh.clone(), chain.clone());
        tokio::spawn(async move {
            while !sh.stop.load(Ordering::Relaxed) {
                chain.mine(1).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    // The crashes: SIGKILL at a random moment, restart at once (on new ports).
    let load_started = Instant::now();
    let mut down = Vec::with_capacity(kills);
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rand::random_range(100..=600))).await;
        sh.live.write().unwrap().clear();
        let killed = Instant::now();
        d = tokio::task::spawn_blocking(move || {
            d.kill();
            d.start();
            d
        })
        .await
        .unwrap();
        *sh.live.write().unwrap() = d.base.clone();
        down.push(killed.elapsed());
    }
    let longest_down = down.iter().max().copied().unwrap_or_default();
    let mean_down = down.iter().sum::<Duration>() / u32::try_from(down.len().max(1)).unwrap();
    let load_time = load_started.elapsed();

    // Stop the load; what is in flight finishes against the last daemon.
    sh.stop.store(true, Ordering::Relaxed);
    for c in creators {
        c.await.unwrap();
    }
    token_payer.await.unwrap();
    upi_payer.await.unwrap();
    miner.await.unwrap();
    let rec = std::mem::take(&mut *sh.record.lock().unwrap());
    assert!(
        rec.unexpected.is_empty(),
        "unexpected answers under load:\n{}",
        rec.unexpected.join("\n")
    );

    // Let the watcher confirm and the notifier deliver (blocks keep coming).
    let settle_started = Instant::now();
    let deadline = Instant::now() + SETTLE;
    let snap = loop {
        chain.mine(1).await;
        let s = snapshot(&http, &d, &key, &hook).await;
        if settled(&s, &rec.transfers) || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let settle_time = settle_started.elapsed();

    // 1. Every acknowledged session exists, as acknowledged; a retried create (same
    //    Idempotency-Key after a crash) never made a second session.
    let by_id: BTreeMap<&str, &Value> = snap
        .sessions
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s))
        .collect();
    assert_eq!(by_id.len(), snap.sessions.len(), "a session listed twice");
    let mut per_order: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &snap.sessions {
        *per_order
            .entry(s["client_reference_id"].as_str().unwrap_or(""))
            .or_default() += 1;
    }
    let doubled: Vec<_> = per_order.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "orders with more than one session: {doubled:?}"
    );
    let acked_ids: BTreeSet<&str> = rec.acked.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        acked_ids.len(),
        rec.acked.len(),
        "one session acknowledged for two orders"
    );
    for a in &rec.acked {
        let s = by_id
            .get(a.id.as_str())
            .unwrap_or_else(|| panic!("acknowledged session {} ({}) lost", a.id, a.order));
        let o = &s["payment_options"][0];
        assert_eq!(s["client_reference_id"], a.order.as_str());
        assert_eq!(s["amount"], a.amount);
        assert_eq!(
            o["pay_to"].as_str().unwrap().to_lowercase(),
            a.pay_to,
            "{s}"
        );
        assert_eq!(o["payable_amount"], a.payable.as_str(), "{s}");
    }

    // 2. Every payment is recorded exactly once, on the session it paid; none on two sessions.
    let mut refs: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for s in &snap.sessions {
        let sid = s["id"].as_str().unwrap();
        for p in s["payments"].as_array().unwrap() {
            let r = match (p["tx_hash"].as_str(), p["utr"].as_str()) {
                (Some(tx), _) => format!(
                    "tx:{}:{}",
                    tx.to_lowercase(),
                    p["log_index"].as_u64().unwrap_or(0)
                ),
                (None, Some(utr)) => format!("utr:{utr}"),
                _ => panic!("a payment with no reference: {p}"),
            };
            refs.entry(r).or_default().push(sid);
        }
    }
    for c in &snap.credits {
        if c["status"] == "unmatched" {
            let r = match (c["tx_hash"].as_str(), c["utr"].as_str()) {
                (Some(tx), _) => format!("tx:{}:credit", tx.to_lowercase()),
                (None, Some(utr)) => format!("utr:{utr}"),
                _ => continue,
            };
            refs.entry(r).or_default().push("(unmatched credit)");
        }
    }
    let twice: Vec<_> = refs.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(twice.is_empty(), "money counted twice: {twice:?}");
    assert!(
        snap.credits.len() < 1000,
        "the operator's credit list is cut at 1000"
    );
    let on = |prefix: &str| -> Vec<&str> {
        refs.iter()
            .filter(|(r, _)| r.starts_with(prefix))
            .flat_map(|(_, v)| v.iter().copied())
            .collect()
    };
    let mut token_payments = 0;
    let mut stray_transfers = 0;
    for t in &rec.transfers {
        let holders = on(&format!("tx:{}:", t.tx));
        match &t.session {
            Some(sid) => {
                assert_eq!(
                    holders,
                    vec![sid.as_str()],
                    "transfer {} of {} for {sid}",
                    t.tx,
                    t.amount
                );
                token_payments += 1;
            }
            None => {
                assert_eq!(
                    holders,
                    vec!["(unmatched credit)"],
                    "stray transfer {} of {}",
                    t.tx,
                    t.amount
                );
                stray_transfers += 1;
            }
        }
    }
    let mut upi_payments = 0;
    let mut stray_alerts = 0;
    let mut reposted = 0;
    for a in &rec.alerts {
        let holders = on(&format!("utr:{}", a.utr));
        reposted += usize::from(a.lost > 0);
        match &a.session {
            Some(sid) => {
                assert_eq!(holders, vec![sid.as_str()], "UTR {} ({})", a.utr, a.outcome);
                upi_payments += 1;
            }
            None => {
                assert_eq!(holders, vec!["(unmatched credit)"], "stray UTR {}", a.utr);
                stray_alerts += 1;
            }
        }
    }
    // Nothing recorded that nobody paid.
    let made: BTreeSet<String> = rec
        .transfers
        .iter()
        .map(|t| t.tx.clone())
        .chain(rec.alerts.iter().map(|a| a.utr.clone()))
        .collect();
    for r in refs.keys() {
        let id = r.split(':').nth(1).unwrap();
        assert!(made.contains(id), "recorded money nobody sent: {r}");
    }

    // 3. No two sessions awaiting payment share a (pay_to, payable amount).
    let mut held: BTreeMap<(String, String), &str> = BTreeMap::new();
    for s in &snap.sessions {
        if !matches!(s["status"].as_str(), Some("open" | "processing")) {
            continue;
        }
        for o in s["payment_options"].as_array().unwrap() {
            let k = (
                o["pay_to"].as_str().unwrap().to_lowercase(),
                o["payable_amount_base_units"].as_str().unwrap().to_owned(),
            );
            if let Some(other) = held.insert(k.clone(), s["id"].as_str().unwrap()) {
                panic!("{other} and {} both hold {k:?}", s["id"]);
            }
        }
    }

    // 4. Session states agree with their payments.
    for s in &snap.sessions {
        let payments = s["payments"].as_array().unwrap();
        let o = &s["payment_options"][0];
        let decimals = if o["method"] == "upi" { 2 } else { 6 };
        let payable: u128 = o["payable_amount_base_units"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let confirmed: u128 = payments
            .iter()
            .filter(|p| p["status"] == "confirmed")
            .map(|p| base_units(p["amount"].as_str().unwrap(), decimals))
            .sum();
        let status = s["status"].as_str().unwrap();
        if payments.is_empty() {
            assert_eq!(status, "open", "{s}");
            assert_eq!(s["payment_status"], "unpaid", "{s}");
        } else if confirmed >= payable {
            assert_eq!(status, "complete", "{s}");
            assert_eq!(s["payment_status"], "paid", "{s}");
        } else {
            panic!("a session with payments that do not cover it (none were sent): {s}");
        }
    }

    // 5. Every event reached the receiver at least once.
    let missing: Vec<&str> = snap
        .events
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .filter(|id| !snap.delivered.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events never reached the receiver: {:?}",
        missing.len(),
        snap.events.len(),
        &missing[..missing.len().min(10)]
    );
    let requests = hook.received().len();

    println!(
        "crash consistency: {kills} SIGKILLs in {:.1} s of load (down {:.2} s on average, \
         {:.2} s at most, kill to listening); {} sessions acknowledged \
         ({} creates re-sent after a kill, {} answered as replays), {} sessions stored; \
         {token_payments} token payments + {stray_transfers} stray transfers; \
         {upi_payments} UPI credits + {stray_alerts} stray alerts ({reposted} re-posted after a kill); \
         {} events, all delivered ({requests} requests to the receiver, 25% answered 500); \
         duplicates found: 0; settle {:.1} s; elapsed {:.1} s",
        load_time.as_secs_f64(),
        mean_down.as_secs_f64(),
        longest_down.as_secs_f64(),
        rec.acked.len(),
        rec.lost_creates,
        rec.replayed,
        snap.sessions.len(),
        snap.events.len(),
        settle_time.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        !rec.acked.is_empty() && token_payments > 0 && upi_payments > 0,
        "the load did not run"
    );
    d.terminate();
}
