//! The command-line contract: exit codes, one-line config errors naming file, line and key,
//! the embedded defaults, and key management on the file when no daemon runs.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

/// Runs the CLI to completion, failing the test if it has not exited within 30 s (a command
/// that should have refused its config and instead started serving would otherwise hang).
fn run(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("paywatch {args:?} did not exit within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn bad_config_exits_2_with_file_line_key_and_problem() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = config_text(dir.path(), &Opts::default());
    let cases: Vec<(String, &str, &str)> = vec![
        (
            good.replace("listen = \"127.0.0.1:0\"", "listen = \"nowhere\""),
            "server.listen",
            "is not an address",
        ),
        (
            good.replace(
                "decimals = 6\nconfirmations = 2",
                "decimals = \"six\"\nconfirmations = 2",
            ),
            "chains.local.decimals",
            "invalid type",
        ),
        (
            good.replace("[api]", "[api]\nrate_limt = 5"),
            "api.rate_limt",
            "unknown key",
        ),
        (
            good.replace("vpa = \"demo@okbank\"", "vpa = \"not a vpa\""),
            "merchants.0.methods.upi.vpa",
            "is not a VPA",
        ),
        (
            good.replace(
                "pay_to = \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"",
                "pay_to = \"0x70997970C51812dc3A010C7d01b50e0d17dc79c8\"",
            ),
            "merchants.0.methods.usdt_local.pay_to",
            "EIP-55",
        ),
        (
            good.replace("chain = \"local\"", "chain = \"nochain\""),
            "merchants.0.methods.usdt_local.chain",
            "no [chains.nochain]",
        ),
        (
            good.replace("[sessions]", "[sessions]\ndefault_expires_in = 100000"),
            "sessions.default_expires_in",
            "between",
        ),
        (
            good.replace("id = \"other\"", "id = \"demo\""),
            "merchants.1.id",
            "defined twice",
        ),
        (good.replace("[server]", "[server\n"), "(syntax)", ""),
    ];
    for (text, key, problem) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &text).expect("write");
        let out = run(
            dir.path(),
            &["serve", "--config", path.to_str().expect("p")],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{key}");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        let line = lines[0];
        assert!(line.contains("bad.toml:"), "{line}");
        assert!(line.contains(key), "{key}: {line}");
        assert!(line.contains(problem), "{problem}: {line}");
        if key != "(syntax)" && key != "merchants.1.id" {
            // The line number points at the offending key.
            let n: usize = line
                .split("bad.toml:")
                .nth(1)
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse().ok())
                .expect("line number");
            let at = text.lines().nth(n - 1).expect("line exists");
            let leaf = key.rsplit('.').next().expect("leaf");
            assert!(at.contains(leaf), "{key}: line {n} is {at:?}");
        }
    }
    // An environment override is named when it is the problem.
    let path = dir.path().join("good.toml");
    std::fs::write(&path, &good).expect("write");
    let out = run(
        dir.path(),
        &["serve", "--config", path.to_str().expect("p")],
        &[("PAYWATCH_API__RATE_LIMIT_BURST", "lots")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("environment PAYWATCH_API__RATE_LIMIT_BURST")
    );
    let out = run(
        dir.path(),
        &["serve", "--config", "/nonexistent/paywatch.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn usage_errors_and_version() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = run(dir.path(), &["--version"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("paywatch "));
    assert_eq!(run(dir.path(), &["frobnicate"], &[]).status.code(), Some(2));
    let out = run(dir.path(), &["keys", "create", "--merchant", "nobody"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no merchant \"nobody\""));
    let out = run(
        dir.path(),
        &[
            "keys",
            "create",
            "--merchant",
            "demo",
            "--permissions",
            "everything",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown permission"));
}

#[test]
fn embedded_defaults_run_in_an_empty_directory() {
    let dir = tempfile::tempdir().expect("tmp");
    // Keys on the file while no daemon runs, then the daemon on its embedded config.
    let out = run(dir.path(), &["keys", "create", "--merchant", "demo"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("line")
        .to_owned();
    assert!(key.starts_with("pw_test_"));
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env("PAYWATCH_SERVER__LISTEN", "127.0.0.1:0")
        .env("PAYWATCH_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let public = line
        .split_whitespace()
        .find_map(|p| p.strip_prefix("public="))
        .expect("public")
        .to_owned();
    let resp = reqwest::blocking::Client::new()
        .post(format!("http://{public}/v1/checkout/sessions"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"amount": 100, "currency": "inr"}))
        .send()
        .expect("send");
    assert_eq!(resp.status().as_u16(), 201);
    let v: serde_json::Value = resp.json().expect("json");
    assert!(
        v["checkout_url"]
            .as_str()
            .expect("url")
            .starts_with("http://127.0.0.1:8080/c/cs_")
    );
    // The embedded config keeps data under ./data and the admin token private.
    assert!(dir.path().join("data/paywatch.redb").exists());
    let token = dir.path().join("data/admin.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token)
            .expect("token")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn alerts_parse_prints_the_credit_as_json() {
    let dir = tempfile::tempdir().expect("tmp");
    let text = "Rs.149.87 credited to a/c XX1234 on 20-11-26 by a/c linked to VPA cust@okaxis (UPI Ref No 432112345678).";
    let out = run(
        dir.path(),
        &["alerts", "parse", "--sender", "VM-HDFCBK", text],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["is_money"], true);
    assert_eq!(v["amount_paise"], 14987);
    assert_eq!(v["utr"], "432112345678");
    assert_eq!(v["sender_is_bank"], true);
    let debit = "Rs.500.00 debited from a/c XX1234 on 20-11-26 to VPA shop@okaxis (UPI Ref No 432112345679).";
    let path = dir.path().join("alert.txt");
    std::fs::write(&path, debit).expect("write");
    let out = run(
        dir.path(),
        &["alerts", "parse", "--file", path.to_str().expect("p")],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["is_money"], false, "{v}");
    assert!(v["ignore_reason"].is_string());
    assert_eq!(
        run(dir.path(), &["alerts", "parse"], &[]).status.code(),
        Some(2)
    );
}
