//! Test harness: the real `paywatch` binary on OS-chosen loopback ports, in a temp directory,
//! driven over HTTP and killed with real signals.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

pub mod anvil;
pub mod config;
pub mod dovecot;
#[path = "../support/pg_cluster.rs"]
pub mod pg_cluster;
pub mod rate_source;
pub mod receiver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_paywatch");
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// Variables that steer the tests, not the daemon: kept from the binary, whose config refuses
/// unknown `PAYWATCH_` keys.
pub const TEST_ONLY_ENV: [&str; 1] = ["PAYWATCH_CRASH_KILLS"];

/// Knobs a test may turn in the generated config.
#[derive(Clone)]
pub struct Opts {
    pub rate_per_second: u32,
    pub burst: u32,
    /// Appended verbatim (whole tables only).
    pub extra: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            rate_per_second: 100_000,
            burst: 100_000,
            extra: String::new(),
        }
    }
}

pub fn config_text(dir: &Path, o: &Opts) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
public_url = "http://pay.test"
admin_token = "{ADMIN_TOKEN}"

[storage]
path = "{db}"

[api]
rate_limit_per_second = {rps}
rate_limit_burst = {burst}

[sessions]
min_expires_in = 1
sweep_interval_ms = 100
grace_period_secs = 3600

[log]
level = "warn"

[chains.local]
chain_id = 31337
test = true
rpc_urls = ["http://127.0.0.1:8545"]
token = "USDT"
token_contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
decimals = 6
confirmations = 2

[chains.mainnet]
chain_id = 1
test = false
rpc_urls = ["http://127.0.0.1:8546"]
token = "USDT"
token_contract = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
decimals = 6
confirmations = 12

[[merchants]]
id = "demo"
name = "Demo Store"
allowed_domains = ["shop.example", "127.0.0.1"]

[merchants.methods.upi]
vpa = "demo@okbank"

[merchants.methods.usdt_local]
chain = "local"
pay_to = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

[merchants.methods.usdt_ethereum]
chain = "mainnet"
pay_to = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"

[[merchants]]
id = "other"
name = "Other Shop"

[merchants.methods.upi]
vpa = "other@okbank"
{extra}
"#,
        db = dir.join("paywatch.redb").display(),
        rps = o.rate_per_second,
        burst = o.burst,
        extra = o.extra,
    )
}

/// A running daemon and the keys made for it.
pub struct Daemon {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    child: Option<Child>,
    pub base: String,
    pub admin: String,
    pub config: PathBuf,
}

/// Runs the CLI against a config; panics with its output if it fails.
pub fn cli(config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    for v in TEST_ONLY_ENV {
        cmd.env_remove(v);
    }
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run paywatch")
}

/// `paywatch keys create …`, returning the secret (the last line of stdout).
pub fn create_key(config: &Path, merchant: &str, extra: &[&str]) -> String {
    let mut args = vec!["keys", "create", "--merchant", merchant];
    args.extend_from_slice(extra);
    let out = cli(config, &args);
    assert!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let key = stdout.lines().last().expect("a line").trim().to_owned();
    assert!(key.starts_with("pw_"), "unexpected key line {key:?}");
    key
}

impl Daemon {
    /// A fresh directory, config written, not started.
    pub fn prepare(o: &Opts) -> Daemon {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let config = dir.join("config.toml");
        std::fs::write(&config, config_text(&dir, o)).expect("write config");
        Daemon {
            dir,
            _tmp: Some(tmp),
            child: None,
            base: String::new(),
            admin: String::new(),
            config,
        }
    }

    /// A fresh directory with the config `text(dir)` returns, not started.
    pub fn prepare_text(text: impl FnOnce(&Path) -> String) -> Daemon {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let config = dir.join("config.toml");
        std::fs::write(&config, text(&dir)).expect("write config");
        Daemon {
            dir,
            _tmp: Some(tmp),
            child: None,
            base: String::new(),
            admin: String::new(),
            config,
        }
    }

    /// Starts (or restarts) the binary and waits for its "listening" line.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .expect("stderr log");
        let mut cmd = Command::new(BIN);
        for v in TEST_ONLY_ENV {
            cmd.env_remove(v);
        }
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn paywatch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("listening ") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "daemon did not start; stderr: {}",
                    std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
                );
            }
        };
        let mut public = "";
        let mut admin = "";
        for part in line.split_whitespace() {
            if let Some(p) = part.strip_prefix("public=") {
                public = p;
            }
            if let Some(a) = part.strip_prefix("admin=") {
                admin = a;
            }
        }
        self.base = format!("http://{public}");
        self.admin = format!("http://{admin}");
        self.child = Some(child);
    }

    pub fn started(o: &Opts) -> (Daemon, String) {
        let mut d = Daemon::prepare(o);
        // Everything: the suites exercise every endpoint (keys default to least privilege).
        let key = create_key(&d.config, "demo", &["--permissions", "*"]);
        d.start();
        (d, key)
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill");
            c.wait().expect("wait");
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = c.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(ok.success());
        for _ in 0..200 {
            if let Some(st) = c.try_wait().expect("try_wait") {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        panic!("daemon did not exit within 10 s of SIGTERM");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP client for tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(512)
        .build()
        .expect("client")
}

/// POST JSON with a key; returns status, headers and the JSON body.
pub async fn post(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    body: serde_json::Value,
    idem: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut rb = c.post(url).bearer_auth(key).json(&body);
    if let Some(k) = idem {
        rb = rb.header("Idempotency-Key", k);
    }
    let r = rb.send().await.expect("send");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let v = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, headers, v)
}

pub async fn get(c: &reqwest::Client, url: &str, key: &str) -> (u16, serde_json::Value) {
    let r = c.get(url).bearer_auth(key).send().await.expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// The operator API's view of the outbox.
pub async fn outbox(c: &reqwest::Client, d: &Daemon) -> Vec<serde_json::Value> {
    let r = c
        .get(format!("{}/admin/v1/events", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("outbox");
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    v["data"].as_array().cloned().unwrap_or_default()
}

/// A console operator made by `paywatch operators create`, with what it printed once.
pub struct OperatorLogin {
    pub name: String,
    pub password: String,
    /// The TOTP secret (base32), from the printed `otpauth://` URI.
    pub secret: String,
    pub uri: String,
    pub recovery: Vec<String>,
    /// The last TOTP step this test logged in with (a step logs in once).
    pub last_step: u64,
}

/// `paywatch operators create --name NAME --role ROLE` (through the operator API when the
/// daemon runs), parsed.
pub fn create_operator(config: &Path, name: &str, role: &str) -> OperatorLogin {
    let out = cli(
        config,
        &["operators", "create", "--name", name, "--role", role],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "operators create failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |p: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("no {p:?} line in {stdout}"))
            .trim()
            .to_owned()
    };
    let uri = field("totp: ");
    let secret = url::Url::parse(&uri)
        .expect("otpauth URI")
        .query_pairs()
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.into_owned())
        .expect("secret in the URI");
    OperatorLogin {
        name: name.to_owned(),
        password: field("password: "),
        secret,
        uri,
        recovery: field("recovery codes (each works once): ")
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        last_step: 0,
    }
}

/// The TOTP code of `secret` at this step (RFC 6238: SHA-1, 6 digits, 30 s), and the step.
pub fn totp_now(secret: &str) -> (String, u64) {
    let bytes = totp_rs::Secret::Encoded(secret.to_owned())
        .to_bytes()
        .expect("base32 secret");
    let t =
        totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes, None, "t".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    (t.generate(now), now / 30)
}

/// Posts the console's login form; returns (status, the cookie pair if one was set).
pub async fn console_login_with(
    c: &reqwest::Client,
    d: &Daemon,
    name: &str,
    password: &str,
    code: &str,
) -> (u16, Option<String>) {
    let r = c
        .post(format!("{}/console/login", d.admin))
        .form(&[("name", name), ("password", password), ("code", code)])
        .send()
        .await
        .expect("login");
    let cookie = r.headers().get("set-cookie").map(|v| {
        v.to_str()
            .expect("cookie")
            .split(';')
            .next()
            .expect("pair")
            .to_owned()
    });
    (r.status().as_u16(), cookie)
}

/// Logs `op` in (with the current TOTP code, or a recovery code if this step was used) and
/// returns the cookie pair.
pub async fn console_login(c: &reqwest::Client, d: &Daemon, op: &mut OperatorLogin) -> String {
    let (code, step) = totp_now(&op.secret);
    let code = if step > op.last_step {
        op.last_step = step;
        code
    } else {
        op.recovery.pop().expect("a recovery code left")
    };
    let (st, cookie) = console_login_with(c, d, &op.name, &op.password, &code).await;
    assert_eq!(st, 303, "the operator's login failed");
    cookie.expect("a login cookie")
}
