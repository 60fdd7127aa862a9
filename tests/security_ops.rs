//! Unauthenticated load and operator-side hardening against the real binary: idle HTTP/2
//! connections, per-client caps on status streams, claims and console logins (and whom a
//! forwarded-for header may name), the operator listener's Host check, secrets read from files,
//! and a bounded writer queue.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Daemon, Opts, client, config_text, create_key, post};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SESSIONS: &str = "/v1/checkout/sessions";

/// A daemon whose `[server]` table also has `server` (and whose config ends with `extra`).
fn daemon_with(server: &str, extra: &str) -> (Daemon, String) {
    daemon_tables(&[("[server]", server)], extra)
}

/// A daemon whose tables get the lines given (each `(header, lines)`).
fn daemon_tables(tables: &[(&str, &str)], extra: &str) -> (Daemon, String) {
    let tables: Vec<(String, String)> = tables
        .iter()
        .map(|(t, l)| ((*t).to_owned(), (*l).to_owned()))
        .collect();
    let opts = Opts {
        extra: extra.to_owned(),
        ..Opts::default()
    };
    let mut d = Daemon::prepare_text(move |dir| {
        let mut text = config_text(dir, &opts);
        for (t, l) in &tables {
            text = text.replacen(&format!("{t}\n"), &format!("{t}\n{l}\n"), 1);
        }
        text
    });
    let key = create_key(&d.config, "demo", &[]);
    d.start();
    (d, key)
}

/// A client whose connections come from `local` (any 127/8 address reaches the loopback).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(local.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

async fn session(c: &reqwest::Client, d: &Daemon, key: &str) -> String {
    let (st, _, s) = post(
        c,
        &d.url(SESSIONS),
        key,
        json!({"amount": 5000, "currency": "inr"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{s}");
    s["id"].as_str().expect("id").to_owned()
}

async fn claim(
    c: &reqwest::Client,
    d: &Daemon,
    id: &str,
    utr: &str,
    xff: Option<&str>,
) -> (u16, Value) {
    let mut rb = c
        .post(d.url(&format!("/c/{id}/claim")))
        .json(&json!({ "utr": utr }));
    if let Some(x) = xff {
        rb = rb.header("X-Forwarded-For", x);
    }
    let r = rb.send().await.expect("send");
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_idle_h2c_connection_is_closed_after_the_idle_timeout() {
    let (d, _) = daemon_with("idle_timeout_secs = 2", "");
    let addr = d.base.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    // The HTTP/2 preface and an empty SETTINGS frame, then nothing.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "an idle h2c connection was still open after 15 s"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "closed too early: {took:?}"
    );
    // It said goodbye (a GOAWAY frame, type 7) rather than just dropping the socket.
    let mut i = 0;
    let mut goaway = false;
    while i + 9 <= got.len() {
        let len =
            (usize::from(got[i]) << 16) | (usize::from(got[i + 1]) << 8) | usize::from(got[i + 2]);
        goaway |= got[i + 3] == 7;
        i += 9 + len;
    }
    assert!(goaway, "no GOAWAY before the close");
}

#[tokio::test]
async fn status_streams_are_capped_per_client_not_globally() {
    let (d, key) = daemon_with("streams_per_client = 2", "");
    let c = client();
    let id = session(&c, &d, &key).await;
    let url = d.url(&format!("/c/{id}/events"));
    let a = client_from("127.0.0.1");
    let s1 = a.get(&url).send().await.expect("s1");
    let s2 = a.get(&url).send().await.expect("s2");
    assert_eq!((s1.status().as_u16(), s2.status().as_u16()), (200, 200));
    let third = a.get(&url).send().await.expect("s3");
    assert_eq!(third.status().as_u16(), 429);
    let v: Value = third.json().await.expect("json");
    assert_eq!(v["error"]["code"], "too_many_streams", "{v}");
    // Another client still gets one.
    let b = client_from("127.0.0.2");
    let other = b.get(&url).send().await.expect("other");
    assert_eq!(other.status().as_u16(), 200);
    // A stream that ends frees its slot.
    drop(s1);
    let mut freed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = a.get(&url).send().await.expect("again");
        if r.status().as_u16() == 200 {
            freed = true;
            break;
        }
    }
    assert!(freed, "the closed stream's slot was not released");
    drop((s2, other));
}

#[tokio::test]
async fn claims_past_the_per_client_cap_are_429_and_write_nothing() {
    let (d, key) = daemon_with("claims_per_minute = 3", "");
    let c = client();
    let id = session(&c, &d, &key).await;
    let a = client_from("127.0.0.1");
    for n in 0..3 {
        let (st, v) = claim(&a, &d, &id, &format!("61111111111{n}"), None).await;
        assert_eq!(st, 202, "{v}");
    }
    for n in 3..6 {
        let (st, v) = claim(&a, &d, &id, &format!("61111111111{n}"), None).await;
        assert_eq!(st, 429, "{v}");
        assert_eq!(v["error"]["code"], "too_many_claims", "{v}");
        assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    }
    // The session takes five references in all: if the refused three had been recorded, the
    // other client would get none in; it gets exactly the two that are left.
    let b = client_from("127.0.0.2");
    for n in 0..2 {
        let (st, v) = claim(&b, &d, &id, &format!("62222222222{n}"), None).await;
        assert_eq!(st, 202, "{v}");
    }
    let (st, v) = claim(&b, &d, &id, "622222222229", None).await;
    assert_eq!(st, 400, "{v}");
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let (d, key) = daemon_with(
        "claims_per_minute = 1\ntrusted_proxy_header = \"X-Forwarded-For\"\ntrusted_proxies = [\"127.0.0.1\"]",
        "",
    );
    let c = client();
    let ids = [
        session(&c, &d, &key).await,
        session(&c, &d, &key).await,
        session(&c, &d, &key).await,
        session(&c, &d, &key).await,
    ];
    let proxy = client_from("127.0.0.1");
    // Through the trusted proxy each named client has its own allowance; a spoofed entry to the
    // left of what the proxy appended proves nothing.
    let (st, v) = claim(&proxy, &d, &ids[0], "611111111111", Some("203.0.113.1")).await;
    assert_eq!(st, 202, "{v}");
    let (st, _) = claim(
        &proxy,
        &d,
        &ids[0],
        "611111111112",
        Some("198.51.100.7, 203.0.113.1"),
    )
    .await;
    assert_eq!(st, 429);
    let (st, v) = claim(&proxy, &d, &ids[1], "611111111113", Some("203.0.113.2")).await;
    assert_eq!(st, 202, "{v}");
    // A proxy that appends `address:port` (some do): the client is that address, and a fresh
    // forged entry to its left each time does not buy a fresh allowance.
    let (st, _) = claim(
        &proxy,
        &d,
        &ids[1],
        "611111111116",
        Some("198.51.100.9, 203.0.113.2:50123"),
    )
    .await;
    assert_eq!(st, 429);
    // An entry that is no address ends the walk at the peer (the proxy), not at the forged one.
    let (st, v) = claim(
        &proxy,
        &d,
        &ids[3],
        "611111111117",
        Some("198.51.100.10, unknown"),
    )
    .await;
    assert_eq!(st, 202, "{v}");
    let (st, _) = claim(
        &proxy,
        &d,
        &ids[3],
        "611111111118",
        Some("198.51.100.11, unknown"),
    )
    .await;
    assert_eq!(st, 429);
    // From an address that is not a trusted proxy the header is ignored: one client.
    let direct = client_from("127.0.0.3");
    let (st, v) = claim(&direct, &d, &ids[2], "611111111114", Some("203.0.113.50")).await;
    assert_eq!(st, 202, "{v}");
    let (st, v) = claim(&direct, &d, &ids[2], "611111111115", Some("203.0.113.51")).await;
    assert_eq!(st, 429, "{v}");
}

/// Who: anyone who reaches the operator listener. Worst case: guessing an operator's
/// password, or locking the operators out. Failed logins lock the guessing client's address
/// (20 in 15 minutes) apart from the account (5 in a row): the operator, from elsewhere, still
/// logs in.
#[tokio::test]
async fn console_login_lockout_is_per_client() {
    let (d, _) = daemon_with("", "");
    let mut op = common::create_operator(&d.config, "alice", "operator");
    let guesser = client_from("127.0.0.1");
    for i in 0..20 {
        let (st, cookie) =
            common::console_login_with(&guesser, &d, &format!("guess{i}"), "pw", "000000").await;
        assert_eq!((st, cookie), (401, None), "attempt {i}");
    }
    let (code, _) = common::totp_now(&op.secret);
    let (st, _) = common::console_login_with(&guesser, &d, &op.name, &op.password, &code).await;
    assert_eq!(
        st, 429,
        "the guessing address is locked, even with the right credentials"
    );
    // The operator, from elsewhere, is not locked out by the guesser.
    let operator = client_from("127.0.0.2");
    common::console_login(&operator, &d, &mut op).await;
}

async fn admin_status(d: &Daemon, host: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}/admin/v1/keys", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .header("Host", host)
        .send()
        .await
        .expect("send");
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_operator_listener_refuses_foreign_host_names() {
    let (d, _) = daemon_with("", "");
    let port = d.admin.rsplit(':').next().unwrap().to_owned();
    let (st, v) = admin_status(&d, &format!("rebound.attacker.example:{port}")).await;
    assert_eq!(st, 421, "{v}");
    assert_eq!(v["error"]["code"], "host_not_allowed", "{v}");
    for ok in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (st, v) = admin_status(&d, &ok).await;
        assert_eq!(st, 200, "{ok}: {v}");
    }
    drop(d);
    let (d, _) = daemon_with("admin_allowed_hosts = [\"paywatch.internal\"]", "");
    let (st, v) = admin_status(&d, "paywatch.internal:8081").await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = admin_status(&d, "localhost").await;
    assert_eq!(st, 421);
}

#[tokio::test]
async fn an_ingest_token_can_be_read_from_a_file_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let token_path = dir.path().join("ingest.token");
    std::fs::write(&token_path, "file-token-0123456789abcd\n").expect("write");
    let extra = format!(
        "\n[upi.ingest.tourl]\nmerchant = \"demo\"\ntoken_file = \"{}\"\nformat = \"sms_to_url\"\n",
        token_path.display()
    );
    let (d, _) = daemon_with("", &extra);
    let c = client();
    let url = d.url("/v1/upi/credits");
    let wrong = c
        .post(format!("{url}?token=nope-nope-nope-nope"))
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status().as_u16(), 401);
    let right = c
        .post(format!("{url}?token=file-token-0123456789abcd"))
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_ne!(
        right.status().as_u16(),
        401,
        "the token from the file was not accepted"
    );
    drop(d);

    // A missing file stops the start with one line naming the file, the key and the problem.
    let missing = dir.path().join("absent.token");
    let extra = extra.replace(
        &token_path.display().to_string(),
        &missing.display().to_string(),
    );
    let d = Daemon::prepare_text(move |dir| {
        config_text(
            dir,
            &Opts {
                extra,
                ..Opts::default()
            },
        )
    });
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&d.config)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml:")
            && err.contains("upi.ingest.tourl.token_file")
            && err.contains("cannot read")
            && err.contains("absent.token"),
        "{err}"
    );
    // And an empty one.
    std::fs::write(&missing, "  \n").expect("write");
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&d.config)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upi.ingest.tourl.token_file") && err.contains("is empty"),
        "{err}"
    );
}

#[tokio::test]
async fn a_full_writer_queue_refuses_with_503_and_loses_nothing_it_accepted() {
    let (d, key) = daemon_tables(&[("[storage]", "writer_queue = 1")], "");
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..300u64 {
        let c = c.clone();
        let url = d.url(SESSIONS);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            post(
                &c,
                &url,
                &key,
                json!({"amount": 10_000 + i * 100, "currency": "inr"}),
                None,
            )
            .await
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        let (st, h, v) = t.await.expect("task");
        match st {
            201 => created += 1,
            503 => {
                assert_eq!(v["error"]["code"], "storage_overloaded", "{v}");
                assert!(h.get("retry-after").is_some());
                refused += 1;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(
        refused > 0,
        "300 concurrent writes never found the one-slot queue full"
    );
    let (_, v) = common::get(&c, &d.url(&format!("{SESSIONS}?limit=100")), &key).await;
    let listed = v["data"].as_array().map_or(0, Vec::len);
    assert_eq!(
        listed,
        created.min(100),
        "{created} created, {listed} listed"
    );
}

/// Unmounts the test's filesystem however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_is_a_clear_error_reads_go_on_and_writes_resume_when_space_returns() {
    let mnt = tempfile::tempdir().expect("tmp");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "cannot mount a 4 MB tmpfs for the full-disk test (it needs root)"
    );
    let _mounted = Mounted(mnt.path().to_path_buf());
    let db = mnt.path().join("paywatch.redb");
    let db_text = db.display().to_string();
    let mut d = Daemon::prepare_text(move |dir| {
        config_text(dir, &Opts::default())
            .replace(&dir.join("paywatch.redb").display().to_string(), &db_text)
    });
    let key = create_key(&d.config, "demo", &[]);
    d.start();
    let c = client();
    let first = session(&c, &d, &key).await;

    // Fill the filesystem, then write until the daemon cannot.
    let filler = mnt.path().join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
    }
    let mut failed = None;
    for i in 0..500u64 {
        let (st, _, v) = post(
            &c,
            &d.url(SESSIONS),
            &key,
            json!({"amount": 20_000 + i * 100, "currency": "inr"}),
            None,
        )
        .await;
        if st != 201 {
            failed = Some((st, v));
            break;
        }
    }
    let (st, v) = failed.expect("500 writes on a full 4 MB filesystem all succeeded");
    assert!(st == 500 || st == 503, "{st}: {v}");
    assert!(
        v["error"]["code"].is_string() && v["error"]["message"].is_string(),
        "{v}"
    );
    assert!(
        d.stderr().contains("No space left on device") || d.stderr().contains("os error 28"),
        "the log does not say the disk is full: {}",
        d.stderr()
    );

    // Reads go on while the disk is full.
    let (st, got) = common::get(&c, &d.url(&format!("{SESSIONS}/{first}")), &key).await;
    assert_eq!(st, 200, "{got}");

    // Space returns: writes resume without a restart.
    std::fs::remove_file(&filler).expect("rm filler");
    let deadline = Instant::now() + Duration::from_secs(20);
    let resumed = loop {
        let (st, _, v) = post(
            &c,
            &d.url(SESSIONS),
            &key,
            json!({"amount": 90_000, "currency": "inr"}),
            None,
        )
        .await;
        if st == 201 {
            break v["id"].as_str().expect("id").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "writes still fail 20 s after space returned: {st} {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for id in [&first, &resumed] {
        let (st, got) = common::get(&c, &d.url(&format!("{SESSIONS}/{id}")), &key).await;
        assert_eq!(st, 200, "{got}");
    }
    // What it acknowledged is on disk: a restart still has it.
    assert_eq!(d.terminate(), Some(0));
    d.start();
    let (st, got) = common::get(&c, &d.url(&format!("{SESSIONS}/{resumed}")), &key).await;
    assert_eq!(st, 200, "{got}");
}

/// A JSON-RPC node on loopback that is chain 31337, knows no transaction and no block, and records
/// every request body.
async fn fake_node() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let rec = rec.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // One request: headers, then Content-Length bytes.
                    let (head_end, len) = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (p + 4, len);
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    while buf.len() < head_end + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
                    let text = String::from_utf8_lossy(&body).into_owned();
                    rec.lock().unwrap().push(text);
                    let answer = |req: &Value| {
                        let result = match req["method"].as_str() {
                            Some("eth_chainId") => json!("0x7a69"),
                            Some("eth_blockNumber") => json!("0x1"),
                            _ => Value::Null,
                        };
                        json!({"jsonrpc": "2.0", "id": req["id"], "result": result})
                    };
                    let reply = match serde_json::from_slice::<Value>(&body) {
                        Ok(Value::Array(reqs)) => Value::Array(reqs.iter().map(answer).collect()),
                        Ok(req) => answer(&req),
                        Err(_) => {
                            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse"}})
                        }
                    };
                    let out = reply.to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{out}",
                        out.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, bodies)
}

#[tokio::test]
async fn a_claim_past_the_cap_asks_no_chain() {
    // The chain's RPC is a recording receiver: a transaction-hash claim makes the daemon ask it
    // about that hash, so a refused claim must leave no request naming its hash.
    let (rpc_port, bodies) = fake_node().await;
    let rpc_url = format!("http://127.0.0.1:{rpc_port}");
    let opts = Opts::default();
    let mut d = Daemon::prepare_text(move |dir| {
        config_text(dir, &opts)
            .replacen("[server]\n", "[server]\nclaims_per_minute = 1\n", 1)
            .replace("http://127.0.0.1:8545", &rpc_url)
    });
    let key = create_key(&d.config, "demo", &[]);
    d.start();
    let c = client();
    let (st, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 500, "currency": "usd"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{s}");
    assert_eq!(s["payment_options"][0]["method"], "usdt_local", "{s}");
    let id = s["id"].as_str().expect("id");
    let claim_tx = |hash: String| {
        let c = c.clone();
        let url = d.url(&format!("/c/{id}/claim"));
        async move {
            c.post(url)
                .json(&json!({ "tx_hash": hash }))
                .send()
                .await
                .expect("claim")
                .status()
                .as_u16()
        }
    };
    let first = format!("0x{}", "a1".repeat(32));
    let second = format!("0x{}", "b2".repeat(32));
    let asked = |hash: &str| bodies.lock().unwrap().iter().any(|b| b.contains(hash));
    assert_eq!(claim_tx(first.clone()).await, 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !asked(&first) {
        assert!(
            Instant::now() < deadline,
            "the accepted claim never reached the RPC"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(claim_tx(second.clone()).await, 429);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !asked(&second),
        "a refused claim still made the daemon ask the chain"
    );
}
