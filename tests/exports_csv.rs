//! CSV exports against the real binary, read back with Python's csv module and compared with
//! what the JSON API says; hostile text stays text (no spreadsheet formulas), and an export
//! longer than one page of the streaming reader comes out whole.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";

/// Parses CSV with Python's csv module; returns the rows as lists of strings.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import csv, io, json, sys; print(json.dumps(list(csv.reader(io.StringIO(sys.stdin.read(), newline='')))))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed to read the CSV back");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn export(c: &reqwest::Client, d: &Daemon, key: &str, path: &str) -> (u16, String, String) {
    let r = c.get(d.url(path)).bearer_auth(key).send().await.unwrap();
    let st = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (st, ct, r.text().await.unwrap())
}

async fn all_sessions(c: &reqwest::Client, d: &Daemon, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let (_, page) = get(c, &d.url(&format!("{SESSIONS}?limit=100{after}")), key).await;
        let data = page["data"].as_array().unwrap().clone();
        if let Some(last) = data.last() {
            after = format!("&starting_after={}", last["id"].as_str().unwrap());
        }
        out.extend(data);
        if page["has_more"] != true {
            return out;
        }
    }
}

fn money(minor: &Value) -> String {
    let v = minor.as_u64().unwrap();
    format!("{}.{:02}", v / 100, v % 100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_match_the_api_and_defuse_formulas() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let nasty = [
        "=HYPERLINK(\"http://evil.example\",\"click\")",
        "+91 98765 43210",
        "-2+3",
        "@SUM(A1:A9)",
        "plain, with \"quotes\"\nand a second line",
        "चाय, masala",
    ];
    for (i, text) in nasty.iter().enumerate() {
        let (st, _, s) = post(
            &c,
            &d.url(SESSIONS),
            &key,
            json!({"amount": 1_000 + i as u64, "currency": "inr", "description": text, "order_id": text, "metadata": {"k": text}}),
            None,
        )
        .await;
        assert_eq!(st, 201, "{s}");
        if i % 2 == 0 {
            let r = c
                .post(d.url(&format!("/c/{}/simulate", s["id"].as_str().unwrap())))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    }
    let api = all_sessions(&c, &d, &key).await;
    let (st, ct, text) = export(&c, &d, &key, "/v1/exports/sessions.csv").await;
    assert_eq!(st, 200, "{text}");
    assert_eq!(ct, "text/csv; charset=utf-8");
    let rows = parse_csv(&text);
    let header = &rows[0];
    assert_eq!(header[0], "id");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows.len() - 1, api.len());
    for (row, s) in rows[1..].iter().zip(&api) {
        assert_eq!(row.len(), header.len());
        assert_eq!(row[col("id")], s["id"].as_str().unwrap());
        assert_eq!(row[col("status")], s["status"].as_str().unwrap());
        assert_eq!(
            row[col("payment_status")],
            s["payment_status"].as_str().unwrap()
        );
        assert_eq!(row[col("amount")], money(&s["amount"]));
        assert_eq!(row[col("amount_received")], money(&s["amount_received"]));
        assert_eq!(row[col("created_at")], s["created_at"].as_str().unwrap());
        let desc = s["description"].as_str().unwrap();
        let cell = &row[col("description")];
        if desc.starts_with(['=', '+', '-', '@']) {
            assert_eq!(cell, &format!("'{desc}"), "formula defused");
        } else {
            assert_eq!(cell, desc, "text kept exactly");
        }
        assert!(!row[col("client_reference_id")].starts_with(['=', '+', '-', '@']));
        let meta: Value = serde_json::from_str(&row[col("metadata")]).unwrap();
        assert_eq!(meta, s["metadata"]);
    }
    // Payments: one row per payment, same amounts and references as the API.
    let (st, _, text) = export(&c, &d, &key, "/v1/exports/payments.csv").await;
    assert_eq!(st, 200);
    let rows = parse_csv(&text);
    let header = rows[0].clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let payments: Vec<(&Value, &Value)> = api
        .iter()
        .flat_map(|s| {
            s["payments"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |p| (s, p))
        })
        .collect();
    assert_eq!(payments.len(), 3);
    assert_eq!(rows.len() - 1, payments.len());
    for (row, (s, p)) in rows[1..].iter().zip(&payments) {
        assert_eq!(row[col("id")], p["id"].as_str().unwrap());
        assert_eq!(row[col("session")], s["id"].as_str().unwrap());
        assert_eq!(row[col("amount")], p["amount"].as_str().unwrap());
        assert_eq!(
            row[col("amount_base_units")],
            p["amount_base_units"].as_str().unwrap()
        );
        assert_eq!(row[col("utr")], p["utr"].as_str().unwrap());
        assert_eq!(row[col("status")], "confirmed");
        assert_eq!(row[col("received_at")], p["received_at"].as_str().unwrap());
    }
    // Time filters: nothing before the first session, nothing after now + 1 h.
    let later = chrono::Utc::now().timestamp() + 3600;
    let (_, _, text) = export(
        &c,
        &d,
        &key,
        &format!("/v1/exports/sessions.csv?created[gte]={later}"),
    )
    .await;
    assert_eq!(parse_csv(&text).len(), 1, "header only");
    let (_, _, text) = export(
        &c,
        &d,
        &key,
        "/v1/exports/payments.csv?created%5Blte%5D=2001-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(parse_csv(&text).len(), 1, "header only");
    let (st, _, text) = export(
        &c,
        &d,
        &key,
        "/v1/exports/sessions.csv?created[gte]=yesterday",
    )
    .await;
    assert_eq!(st, 400);
    let e: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(e["error"]["param"], "created[gte]");
    let (st, _, _) = export(&c, &d, &key, "/v1/exports/sessions.csv?colour=red").await;
    assert_eq!(st, 400);
    let (st, _, _) = export(&c, &d, &key, "/v1/exports/sessions.csv?x").await;
    assert_eq!(st, 400);
    // Another merchant's export holds none of these.
    let r = c
        .post(format!("{}/admin/v1/keys", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"merchant": "other"}))
        .send()
        .await
        .unwrap();
    let other: Value = r.json().await.unwrap();
    let (_, _, text) = export(
        &c,
        &d,
        other["secret"].as_str().unwrap(),
        "/v1/exports/sessions.csv",
    )
    .await;
    assert_eq!(parse_csv(&text).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_export_streams_every_page() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    // More sessions than one page of the exporter (500).
    let n = 1_150u64;
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let c = c.clone();
        let url = d.url(SESSIONS);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                let (st, _, _) = post(
                    &c,
                    &url,
                    &key,
                    json!({"amount": 100 + i, "currency": "inr", "order_id": format!("ORD-{i}")}),
                    None,
                )
                .await;
                assert_eq!(st, 201);
                i += 16;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (st, _, text) = export(&c, &d, &key, "/v1/exports/sessions.csv").await;
    assert_eq!(st, 200);
    let rows = parse_csv(&text);
    assert_eq!(rows.len() as u64, n + 1);
    let mut ids: Vec<&String> = rows[1..].iter().map(|r| &r[0]).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, n, "no session twice, none missing");
}
