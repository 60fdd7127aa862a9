//! Callback delivery: payments → signed callbacks received by a local HTTP receiver.
//!
//! Starts the release binary (private targets allowed, so the receiver can be on loopback),
//! pays N test sessions through `simulate` from 32 concurrent clients, and measures how fast the
//! callbacks arrive and how long each took from the payment's acknowledgement to its receipt.
//! Run: `cargo bench --bench webhook_delivery` (`BENCH_N`, default 5000).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Session id → when its callback arrived.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receiver(arrivals: Arrivals) -> Result<u16, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(head_end) =
                        buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
                    else {
                        let mut chunk = [0u8; 8192];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 8192];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: serde_json::Value =
                        serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or_default();
                    buf.drain(..head_end + len);
                    if body["type"] == "checkout.session.completed"
                        && let Some(id) = body["data"]["object"]["id"].as_str()
                        && let Ok(mut a) = arrivals.lock()
                    {
                        a.entry(id.to_owned()).or_insert_with(Instant::now);
                    }
                    if sock
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

fn main() -> Result<(), BoxError> {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("paywatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = \"bench-admin-token-0123456789\"\n\
             [storage]\npath = \"{}\"\n[api]\nrate_limit_per_second = 10000000\nrate_limit_burst = 10000000\n\
             [webhooks]\nallow_private_targets = true\n[log]\nlevel = \"warn\"\n\
             [[merchants]]\nid = \"demo\"\nname = \"Demo\"\n[merchants.methods.upi]\nvpa = \"demo@okbank\"\nwindow = 100000\n",
            dir.path().join("db.redb").display()
        ),
    )?;
    let bin = env!("CARGO_BIN_EXE_paywatch");
    let out = Command::new(bin)
        .args(["keys", "create", "--merchant", "demo", "--config"])
        .arg(&cfg)
        .output()?;
    let key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .ok_or("no key")?
        .to_owned();
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("stdout")?).read_line(&mut line)?;
    let base = format!(
        "http://{}",
        line.split_whitespace()
            .find_map(|p| p.strip_prefix("public="))
            .ok_or("no address")?
    );
    let result = rt.block_on(async {
        let arrivals: Arrivals = Arc::default();
        let port = receiver(arrivals.clone()).await?;
        let hook = format!("http://127.0.0.1:{port}/hook");
        let client = reqwest::Client::new();
        let paid: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..32usize {
            let (client, base, key, hook, paid) = (client.clone(), base.clone(), key.clone(), hook.clone(), paid.clone());
            tasks.push(tokio::spawn(async move {
                for i in (w..n).step_by(32) {
                    let s: serde_json::Value = client
                        .post(format!("{base}/v1/checkout/sessions"))
                        .bearer_auth(&key)
                        .json(&serde_json::json!({"amount": 1000 + i, "currency": "inr", "notify_url": hook}))
                        .send()
                        .await?
                        .json()
                        .await?;
                    let id = s["id"].as_str().ok_or("no id")?.to_owned();
                    client.post(format!("{base}/c/{id}/simulate")).send().await?.error_for_status()?;
                    if let Ok(mut p) = paid.lock() {
                        p.insert(id, Instant::now());
                    }
                }
                Ok::<_, BoxError>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let paid_elapsed = start.elapsed();
        let deadline = Instant::now() + Duration::from_secs(120);
        while arrivals.lock().map(|a| a.len()).unwrap_or(0) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let total = start.elapsed();
        let arrivals = arrivals.lock().map(|a| a.clone()).unwrap_or_default();
        let paid = paid.lock().map(|p| p.clone()).unwrap_or_default();
        let mut lat: Vec<f64> = paid
            .iter()
            .filter_map(|(id, t)| arrivals.get(id).map(|a| a.saturating_duration_since(*t).as_secs_f64() * 1000.0))
            .collect();
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(f64::NAN);
        println!("| payments | callbacks received | payments/s | callbacks/s | payment ack → callback p50 ms | p99 ms |");
        println!("|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {n} | {} | {:.0} | {:.0} | {:.2} | {:.2} |",
            arrivals.len(),
            n as f64 / paid_elapsed.as_secs_f64(),
            arrivals.len() as f64 / total.as_secs_f64(),
            pct(0.5),
            pct(0.99)
        );
        Ok::<_, BoxError>(())
    });
    let _ = child.kill();
    let _ = child.wait();
    result
}
