//! `paywatch backup` while the daemon is under load: the copy, restored into a new daemon, serves
//! every session that was acknowledged before the backup began; offline backups work too.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_every_acknowledged_session() {
    let (mut d, key) = Daemon::started(&Opts::default());
    // An operator account (the keyed records table) must come back too.
    common::create_operator(&d.config, "backup-alice", "viewer");
    let c = client();
    let mut before: Vec<Value> = Vec::new();
    for i in 0..100u64 {
        let (st, _, s) = post(
            &c,
            &d.url(SESSIONS),
            &key,
            json!({"amount": 10_000 + i * 100, "currency": "inr"}),
            None,
        )
        .await;
        assert_eq!(st, 201);
        before.push(s);
    }
    let paid = before[0]["id"].as_str().expect("id").to_owned();
    let r = c
        .post(d.url(&format!("/c/{paid}/simulate")))
        .send()
        .await
        .expect("simulate");
    assert_eq!(r.status().as_u16(), 200);

    // Load keeps running while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for w in 0..8u64 {
        let (c, url, key, stop) = (c.clone(), d.url(SESSIONS), key.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let _ = post(
                    &c,
                    &url,
                    &key,
                    json!({"amount": 2_000_000 + w * 100_000 + n, "currency": "inr"}),
                    None,
                )
                .await;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let backup = d.dir.join("backup.redb");
    let out = tokio::task::spawn_blocking({
        let (config, backup) = (d.config.clone(), backup.clone());
        move || cli(&config, &["backup", backup.to_str().expect("p")])
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load");
    }
    d.terminate();

    // Restore: a fresh daemon on the copy.
    let mut r = Daemon::prepare(&Opts::default());
    std::fs::copy(&backup, r.dir.join("paywatch.redb")).expect("restore");
    r.start();
    for s in &before {
        let id = s["id"].as_str().expect("id");
        let (st, got) = get(&c, &r.url(&format!("{SESSIONS}/{id}")), &key).await;
        assert_eq!(st, 200, "session {id} missing from the restored backup");
        if id == paid {
            assert_eq!(got["status"], "complete");
        } else {
            assert_eq!(&got, s);
        }
    }
    // Offline: with no daemon running the CLI copies the file; an existing target is refused.
    r.terminate();
    let out = cli(&r.config, &["operators", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("backup-alice"),
        "the operator is missing from the restored backup: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let offline = r.dir.join("offline.redb");
    let out = cli(&r.config, &["backup", offline.to_str().expect("p")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&r.config, &["backup", offline.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(2));
}
