//! Several nodes, one truth: three real paywatch processes on one PostgreSQL database (a real
//! server the test starts, tests/support/pg_cluster.rs). Racing creates spread over the three
//! never hand one pair to two sessions; a session made on one node is read, simulated and paid
//! on another, the customer's live status stream on a third sees it complete (LISTEN/NOTIFY),
//! and a real webhook receiver gets the callback exactly once (deliveries are claimed with
//! `FOR UPDATE SKIP LOCKED`, so no two nodes attempt one).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::*;
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";

/// The common config with `[storage]` on PostgreSQL, a busy merchant whose UPI window holds
/// `window` sessions per price, and private callback targets allowed (the receiver is local).
fn pg_config(dir: &std::path::Path, url: &str, window: u32) -> String {
    let base = config_text(
        dir,
        &Opts {
            extra: format!(
                "\n[webhooks]\nallow_private_targets = true\nretry_schedule_secs = [1, 1, 1]\n\
                 \n[[merchants]]\nid = \"busy\"\nname = \"busy\"\n\n[merchants.methods.upi]\n\
                 vpa = \"busy@okbank\"\nwindow = {window}\n"
            ),
            ..Opts::default()
        },
    );
    let file = format!("path = \"{}\"", dir.join("paywatch.redb").display());
    assert!(base.contains(&file));
    base.replace(
        &file,
        &format!(
            "backend = \"postgres\"\nurl = \"{url}\"\npool_size = 8\nstatement_timeout_ms = 10000"
        ),
    )
}

fn nodes(url: &str, window: u32) -> Vec<Daemon> {
    (0..3)
        .map(|_| Daemon::prepare_text(|dir| pg_config(dir, url, window)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_over_three_nodes_get_distinct_pairs_or_clean_503s() {
    let url = pg_cluster::fresh_database();
    let window = 450;
    let mut ns = nodes(&url, window);
    // The CLI is one more node: the key it writes is in the shared database.
    let key = create_key(&ns[0].config, "busy", &["--permissions", "*"]);
    for n in &mut ns {
        n.start();
    }
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let (c, key, url) = (c.clone(), key.clone(), ns[i % 3].url(SESSIONS));
        tasks.push(tokio::spawn(async move {
            let (st, _, v) = post(
                &c,
                &url,
                &key,
                json!({"amount": 10000, "currency": "inr"}),
                None,
            )
            .await;
            (st, v)
        }));
    }
    let mut payable = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (st, v) = t.await.unwrap();
        match st {
            201 => payable.push(
                v["payment_options"][0]["payable_amount"]
                    .as_str()
                    .expect("payable")
                    .to_owned(),
            ),
            503 => {
                assert_eq!(v["error"]["code"], "no_payment_slot_available", "{v}");
                refused += 1;
            }
            other => panic!("a create answered {other}: {v}"),
        }
    }
    let distinct: BTreeSet<&String> = payable.iter().collect();
    assert_eq!(
        distinct.len(),
        payable.len(),
        "two sessions share a payable amount"
    );
    // The window holds exactly `window` pairs: every one handed out once, the rest refused.
    assert_eq!(payable.len(), window as usize, "{refused} refused");
    assert_eq!(refused, 500 - window as usize);
    // Every node lists the same sessions: one database.
    for n in &ns {
        let (st, v) = get(&c, &n.url(&format!("{SESSIONS}?limit=100")), &key).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["data"].as_array().unwrap().len(), 100);
        assert_eq!(v["has_more"], true);
    }
    // Paging through all of them (past the store's 256-row read pages) gives each created
    // session exactly once, newest first, and ends with has_more false.
    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("{SESSIONS}?limit=100&starting_after={a}"),
            None => format!("{SESSIONS}?limit=100"),
        };
        let (st, v) = get(&c, &ns[1].url(&q), &key).await;
        assert_eq!(st, 200, "{v}");
        let page = v["data"].as_array().unwrap();
        seen.extend(page.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
        if v["has_more"] != true {
            break;
        }
        after = seen.last().cloned();
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), window as usize, "every session listed once");
    assert_eq!(unique.len(), seen.len());
    let (_, paid_filter) = get(&c, &ns[2].url(&format!("{SESSIONS}?status=complete")), &key).await;
    assert_eq!(
        paid_filter["data"].as_array().map(Vec::len),
        Some(0),
        "{paid_filter}"
    );
}

/// Reads the stream until an event names `status`, or panics after `secs`.
async fn until_status(stream: &mut reqwest::Response, status: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = String::new();
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(b))) => {
                seen.push_str(&String::from_utf8_lossy(&b));
                if seen.contains(&format!("\"status\":\"{status}\"")) {
                    return seen;
                }
            }
            Ok(Ok(None)) => panic!("the stream ended before {status}: {seen}"),
            Ok(Err(e)) => panic!("the stream failed before {status}: {e}; {seen}"),
            Err(_) => break,
        }
    }
    panic!("no {status} on the stream within {secs} s: {seen}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_made_on_one_node_is_paid_on_another_and_seen_complete_on_a_third() {
    let url = pg_cluster::fresh_database();
    let mut ns = nodes(&url, 20);
    let key = create_key(&ns[0].config, "demo", &["--permissions", "*"]);
    for n in &mut ns {
        n.start();
    }
    let receiver = Receiver::start(0, &[]).await;
    let c = client();
    // Made on node 1.
    let (st, _, s) = post(
        &c,
        &ns[0].url(SESSIONS),
        &key,
        json!({"amount": 14999, "currency": "inr", "notify_url": receiver.url}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{s}");
    let id = s["id"].as_str().unwrap().to_owned();
    // Read on node 2.
    let (st, v) = get(&c, &ns[1].url(&format!("{SESSIONS}/{id}")), &key).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "open");
    // The customer's live status stream, served by node 3.
    let mut stream = c
        .get(ns[2].url(&format!("/c/{id}/events")))
        .send()
        .await
        .expect("events");
    assert_eq!(stream.status().as_u16(), 200);
    until_status(&mut stream, "open", 5).await;
    // Paid through node 2.
    let r = c
        .post(ns[1].url(&format!("/c/{id}/simulate")))
        .send()
        .await
        .expect("simulate");
    assert_eq!(
        r.status().as_u16(),
        200,
        "{}",
        r.text().await.unwrap_or_default()
    );
    // Node 3's stream hears of it, though node 3 wrote nothing.
    until_status(&mut stream, "complete", 10).await;
    // Node 1 reads it complete too.
    let (_, v) = get(&c, &ns[0].url(&format!("{SESSIONS}/{id}")), &key).await;
    assert_eq!(v["status"], "complete", "{v}");
    // The receiver gets the callback, and only once, though three notifiers watch the outbox.
    receiver
        .wait_for(20, "the completed callback", |got| {
            got.iter()
                .any(|r| r.json()["type"] == "checkout.session.completed")
        })
        .await;
    // Long enough for every node's notifier to have looked at the outbox many times.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got: Vec<Value> = receiver.received().iter().map(|r| r.json()).collect();
    let completed: Vec<&Value> = got
        .iter()
        .filter(|e| e["type"] == "checkout.session.completed")
        .collect();
    assert_eq!(
        completed.len(),
        1,
        "the callback arrived {} times: {got:?}",
        completed.len()
    );
    let ids: BTreeSet<&str> = got.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(
        ids.len(),
        got.len(),
        "an event was delivered twice: {got:?}"
    );

    // A key revoked elsewhere (here by the CLI, one more client of the database) is refused
    // at once by every node, though each has just accepted it.
    let (st, listed) = get(&c, &format!("{}/admin/v1/keys", ns[0].admin), ADMIN_TOKEN).await;
    assert_eq!(st, 200, "{listed}");
    let key_id = listed["data"][0]["id"].as_str().expect("key id").to_owned();
    let out = cli(&ns[0].config, &["keys", "revoke", &key_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in &ns {
        let (st, v) = get(&c, &n.url(&format!("{SESSIONS}/{id}")), &key).await;
        assert_eq!(st, 401, "a node still accepts a revoked key: {v}");
    }
}

/// `paywatch doctor` checks the connection, the schema version and the privileges, and says
/// when the database is newer than the binary (a node that was not upgraded).
#[test]
fn doctor_checks_the_connection_the_schema_and_the_privileges() {
    let url = pg_cluster::fresh_database();
    let ns = nodes(&url, 5);
    let report = |d: &Daemon| {
        let out = cli(&d.config, &["doctor"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let r = report(&ns[0]);
    assert!(r.contains("PostgreSQL 1"), "{r}");
    assert!(r.contains("empty database"), "{r}");
    assert!(r.contains("may create the schema's tables"), "{r}");
    // The CLI is a node too: keys create migrates the schema.
    create_key(&ns[0].config, "demo", &[]);
    let r = report(&ns[1]);
    assert!(r.contains("as this binary"), "{r}");
    assert!(r.contains("reads and writes every table"), "{r}");
    let db = url.rsplit('/').next().unwrap();
    pg_cluster::cluster().psql(db, "INSERT INTO paywatch_schema (version) VALUES (99)");
    let r = report(&ns[2]);
    assert!(r.contains("version 99 is newer than this binary"), "{r}");
    // And a node refuses to start on it, naming why.
    let out = cli(&ns[2].config, &["keys", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("newer than this binary"), "{err}");
    // A database the server does not have is named as a connection failure, not a panic.
    let bad = Daemon::prepare_text(|dir| pg_config(dir, &format!("{url}_missing"), 5));
    let r = report(&bad);
    assert!(r.contains("cannot connect to PostgreSQL"), "{r}");
}
