//! Closed-loop HTTP load benchmark for the paywatch daemon.
//!
//! It starts the real release binary in a temporary directory (so the numbers include the HTTP
//! stack, auth, JSON and redb's fsync'd group commit, exactly as production sees them), opens
//! N persistent HTTP/1.1 connections and has each one send requests back to back. Every run is
//! a 1 s warm-up followed by the measured window; a row's req/s counts the successful answers
//! that started inside the window, p50/p99 are their latencies (request sent → body read).
//!
//! Run with `cargo bench --bench api_load`. Environment:
//! - `BENCH_SECS=S` measured window per run in seconds (default 5).
//! - `BENCH_FULL=1` the default suite also runs at 256 connections.
//! - `BENCH_SCALE=N` run the scale suite instead of the default one (below).
//!
//! Default suite: at 1, 16 and 64 connections (and 256 with `BENCH_FULL=1`), in this order at
//! each count: `noop` (`GET /healthz`, the same server's ceiling), `create` (durable
//! `POST /v1/checkout/sessions`), `get` (`GET /v1/checkout/sessions/{id}` of a random stored
//! session), `list` (`GET /v1/checkout/sessions?limit=20`) and `page` (`GET /c/{id}`, the
//! checkout page). "vs no-op" is a row's req/s over the `noop` row at the same connection count
//! in the same run. Then one `qr` row at 64 connections: `GET /c/{id}/qr.svg` of random sessions
//! among the hundreds of thousands created, so nearly every request renders a cold QR. The
//! daemon's VmRSS and VmHWM are printed after each connection count.
//!
//! Scale suite (`BENCH_SCALE=N`): pre-loads N sessions at 64 connections, prints the RSS with
//! exactly N stored, then at 64 connections measures `noop`, `create`, `get` and `match`, with
//! the RSS after each. `match` is `POST /c/{id}/simulate` on open test-mode UPI sessions: the
//! payment goes through the matcher and the store like a watcher's would, and every request pays
//! a different open session exactly once (a pool of stored sessions, shuffled, shared by the
//! connections without reuse). Running `BENCH_SCALE=1000` and `BENCH_SCALE=1000000` compares
//! create and match latency and RSS between a thousand and a million stored sessions. The write
//! rows themselves add sessions (`create` adds what it creates; the `match` pool is drawn from
//! those stored, topped up only if too small), so the small case ends with ~10^5 stored; the
//! stored count is printed with each RSS line.
//!
//! The load generator shares the machine with the daemon, so on a small box the client's own
//! CPU use lowers every number; compare rows with each other, not with other machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

const WARMUP: Duration = Duration::from_secs(1);
/// How long the daemon may take to print its "listening" line before we give up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections used by the scale mode (pre-load and measured runs).
const SCALE_CONNS: usize = 64;
/// Connections of the cold-QR row.
const QR_CONNS: usize = 64;
/// The `match` pool holds this many times what the create rate would use in warm-up + window.
/// Paying measures several times slower than creating, so 1.0 is ample, and the small scale
/// case never needs sessions beyond those the `create` row stored; should a pool still run out,
/// the row says so and is rated over the shorter window.
const POOL_MARGIN: f64 = 1.0;
/// The smallest `match` pool.
const MIN_POOL: usize = 1000;
/// Distinct error messages kept per run; enough to diagnose, bounded so a storm stays cheap.
const MAX_ERROR_KINDS: usize = 8;

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let daemon = Daemon::start(Path::new(env!("CARGO_BIN_EXE_paywatch")))?;
    println!(
        "paywatch {} (pid {}), {} CPU(s) shared by daemon and load generator",
        daemon.addr,
        daemon.pid(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let target = Target::new(daemon.addr, &daemon.key)?;
    match settings.scale {
        Some(n) => runtime.block_on(scale_suite(&settings, &daemon, target, n))?,
        None => runtime.block_on(default_suite(&settings, &daemon, target))?,
    }
    daemon.report()?;
    Ok(())
}

/// What to run, from the environment.
struct Settings {
    measure: Duration,
    conn_counts: Vec<usize>,
    scale: Option<usize>,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let secs = env_number("BENCH_SECS")?.unwrap_or(5);
        let mut conn_counts = vec![1, 16, 64];
        if std::env::var("BENCH_FULL").is_ok_and(|v| v == "1") {
            conn_counts.push(256);
        }
        Ok(Self {
            measure: Duration::from_secs(secs as u64),
            conn_counts,
            scale: env_number("BENCH_SCALE")?,
        })
    }
}

fn env_number(name: &str) -> Result<Option<usize>> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(
            v.trim().parse().map_err(|e| format!("{name}={v:?}: {e}"))?,
        )),
        Err(_) => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon under test
// ---------------------------------------------------------------------------------------------

/// A running daemon; dropping it kills the process (also while unwinding from a panic), then
/// removes its directory. Field order matters: the process must die before its files go.
struct Daemon {
    child: ChildGuard,
    addr: SocketAddr,
    key: String,
    dir: tempfile::TempDir,
}

/// Kills and reaps the child on drop, so no daemon outlives the bench.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    fn start(bin: &Path) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("paywatch.toml");
        std::fs::write(&config, config_text(&dir.path().join("paywatch.redb")))?;
        let key = create_key(bin, &config)?;
        let log = std::fs::File::create(dir.path().join("daemon.log"))?;
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        // Guard first: if waiting for the listening line fails, the process is still killed.
        let mut child = ChildGuard(child);
        let stdout = child.0.stdout.take().ok_or("daemon stdout not captured")?;
        let addr = wait_listening(stdout)?;
        Ok(Self {
            child,
            addr,
            key,
            dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Resident memory now and at its peak (VmRSS, VmHWM) and the store's size on disk.
    fn memory(&self) -> Result<String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map_or_else(|| "?".to_owned(), |v| v.trim().to_owned())
        };
        let db = std::fs::metadata(self.dir.path().join("paywatch.redb"))?.len();
        Ok(format!(
            "VmRSS {}, VmHWM {}, store file {:.1} MiB",
            field("VmRSS:"),
            field("VmHWM:"),
            db as f64 / (1024.0 * 1024.0)
        ))
    }

    /// The memory line, plus any log lines the daemon wrote (at `warn` level there should be
    /// none).
    fn report(&self) -> Result<()> {
        println!("daemon {}", self.memory()?);
        let log = std::fs::read_to_string(self.dir.path().join("daemon.log"))?;
        let lines: Vec<&str> = log.lines().collect();
        println!("daemon stderr: {} line(s)", lines.len());
        for line in lines.iter().rev().take(5).rev() {
            println!("  {line}");
        }
        Ok(())
    }
}

/// The config from the brief: ports chosen by the OS, rate limits out of the way.
fn config_text(db: &Path) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8080"
admin_token = "bench-admin-token-0123456789"
[storage]
path = {db:?}
[api]
rate_limit_per_second = 10000000
rate_limit_burst = 10000000
[log]
level = "warn"
[chains.local]
chain_id = 31337
test = true
rpc_urls = ["http://127.0.0.1:8545"]
token = "USDT"
token_contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
decimals = 6
[[merchants]]
id = "demo"
name = "Demo Store"
[merchants.methods.upi]
vpa = "demo@okbank"
[merchants.methods.usdt_local]
chain = "local"
pay_to = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
"#
    )
}

/// `paywatch keys create` works on the store file directly, so it runs before `serve`.
fn create_key(bin: &Path, config: &Path) -> Result<String> {
    let out = Command::new(bin)
        .args(["keys", "create", "--merchant", "demo", "--config"])
        .arg(config)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "keys create failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let stdout = String::from_utf8(out.stdout)?;
    let key = stdout.lines().last().map(str::trim).unwrap_or_default();
    if key.is_empty() {
        return Err("keys create printed no secret".into());
    }
    Ok(key.to_owned())
}

/// Reads stdout until "listening public=ADDR …" and returns ADDR. A thread keeps draining the
/// pipe afterwards so the daemon can never block on a full stdout.
fn wait_listening(stdout: std::process::ChildStdout) -> Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::io::Result::ok)
        {
            if line.starts_with("listening ") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(STARTUP_TIMEOUT)
        .map_err(|e| format!("daemon did not print its listening line: {e}"))?;
    let public = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("public="))
        .ok_or_else(|| format!("no public= in {line:?}"))?;
    Ok(public.parse()?)
}

// ---------------------------------------------------------------------------------------------
// Scenarios and requests
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    /// `GET /healthz`: the HTTP stack alone, the ceiling every other row is compared with.
    Noop,
    /// `POST /v1/checkout/sessions`: auth, allocation and a durable write.
    Create,
    /// `GET /v1/checkout/sessions/{id}`: a point read of a random stored session.
    Get,
    /// `GET /v1/checkout/sessions?limit=20`: an index scan plus 20 serialisations.
    List,
    /// `GET /c/{id}`: the customer-facing HTML page.
    Page,
    /// `GET /c/{id}/qr.svg`: the page's QR code (rendered once per URI, then cached).
    Qr,
    /// `POST /c/{id}/simulate` on an open test session, each session paid once: a payment
    /// through the matcher and a durable write, as a watcher reports one.
    Match,
}

impl Scenario {
    /// The default suite at each connection count; `noop` first, so every later row at that
    /// count has its ceiling from the same run, and `create` before the rows that read its
    /// sessions.
    const SUITE: [Scenario; 5] = [Self::Noop, Self::Create, Self::Get, Self::List, Self::Page];
    /// The scale suite, all at `SCALE_CONNS`: `create` first, so it starts from exactly the
    /// pre-loaded store; `match` last, since it pays (changes) sessions the others read.
    const SCALE: [Scenario; 4] = [Self::Noop, Self::Create, Self::Get, Self::Match];

    fn name(self) -> &'static str {
        match self {
            Self::Noop => "noop",
            Self::Create => "create",
            Self::Get => "get",
            Self::List => "list",
            Self::Page => "page",
            Self::Qr => "qr",
            Self::Match => "match",
        }
    }

    fn expected(self) -> StatusCode {
        match self {
            Self::Create => StatusCode::CREATED,
            _ => StatusCode::OK,
        }
    }

    fn needs_ids(self) -> bool {
        matches!(self, Self::Get | Self::Page | Self::Qr)
    }
}

/// Open sessions for `match`, each handed out once across all connections: a second simulate
/// of a paid session would be a different request (an extra payment on a paid session).
struct Pool {
    ids: Vec<String>,
    next: AtomicUsize,
}

impl Pool {
    fn new(ids: Vec<String>) -> Self {
        Self {
            ids,
            next: AtomicUsize::new(0),
        }
    }

    /// The next unused session, or `None` once all are used.
    fn take(&self) -> Option<&str> {
        self.ids
            .get(self.next.fetch_add(1, Ordering::Relaxed))
            .map(String::as_str)
    }

    fn used(&self) -> usize {
        self.next.load(Ordering::Relaxed).min(self.ids.len())
    }
}

/// Everything a connection task needs to build requests; cheap to clone (all shared).
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    auth: HeaderValue,
    /// Sessions created so far, for `get` and `page` to pick from.
    ids: Arc<Vec<String>>,
    /// Open sessions `match` pays, each once.
    pool: Arc<Pool>,
}

impl Target {
    fn new(addr: SocketAddr, key: &str) -> Result<Self> {
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            auth: HeaderValue::from_str(&format!("Bearer {key}"))?,
            ids: Arc::new(Vec::new()),
            pool: Arc::new(Pool::new(Vec::new())),
        })
    }

    fn with_pool(&self, ids: Vec<String>) -> Self {
        Self {
            pool: Arc::new(Pool::new(ids)),
            ..self.clone()
        }
    }

    fn with_ids(&self, more: Vec<String>) -> Self {
        let mut ids = Vec::with_capacity(self.ids.len() + more.len());
        ids.extend(self.ids.iter().cloned());
        ids.extend(more);
        Self {
            ids: Arc::new(ids),
            ..self.clone()
        }
    }

    fn random_id(&self, rng: &mut SmallRng) -> Result<&str> {
        if self.ids.is_empty() {
            return Err("no sessions created yet".into());
        }
        Ok(&self.ids[rng.random_range(0..self.ids.len())])
    }

    /// The next request of `scenario`; `None` when `match` has used up its pool.
    fn request(
        &self,
        scenario: Scenario,
        rng: &mut SmallRng,
    ) -> Result<Option<Request<Full<Bytes>>>> {
        let builder = Request::builder().header(HOST, self.host.clone());
        let req = match scenario {
            Scenario::Noop => builder.uri("/healthz").body(Full::default())?,
            Scenario::Create => {
                // Varied amounts: one amount can be held by at most 100 open UPI sessions.
                let amount: u64 = rng.random_range(100..100_000_000);
                let body = format!(r#"{{"amount": {amount}, "currency": "inr"}}"#);
                builder
                    .method(Method::POST)
                    .uri("/v1/checkout/sessions")
                    .header(AUTHORIZATION, self.auth.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))?
            }
            Scenario::Get => {
                let uri = format!("/v1/checkout/sessions/{}", self.random_id(rng)?);
                builder
                    .uri(uri)
                    .header(AUTHORIZATION, self.auth.clone())
                    .body(Full::default())?
            }
            Scenario::List => builder
                .uri("/v1/checkout/sessions?limit=20")
                .header(AUTHORIZATION, self.auth.clone())
                .body(Full::default())?,
            Scenario::Page => builder
                .uri(format!("/c/{}", self.random_id(rng)?))
                .body(Full::default())?,
            Scenario::Qr => builder
                .uri(format!("/c/{}/qr.svg?method=upi", self.random_id(rng)?))
                .body(Full::default())?,
            Scenario::Match => {
                let Some(id) = self.pool.take() else {
                    return Ok(None);
                };
                // The page's own call: no key, the payable amount of the session's UPI option.
                builder
                    .method(Method::POST)
                    .uri(format!("/c/{id}/simulate"))
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from_static(br#"{"method": "upi"}"#)))?
            }
        };
        Ok(Some(req))
    }
}

/// Only the field we keep from a created session.
#[derive(serde::Deserialize)]
struct Created {
    id: String,
}

// ---------------------------------------------------------------------------------------------
// The closed-loop driver
// ---------------------------------------------------------------------------------------------

/// One persistent HTTP/1.1 connection; its driver task runs in the background.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    // Small request/response pairs: without NODELAY, Nagle + delayed ACK add ~40 ms stalls.
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// When a run stops sending, and from when its requests count.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    until: Instant,
}

/// How many requests a task may still send; `None` means "until the window closes".
type Budget = Option<Arc<AtomicUsize>>;

/// What one connection saw.
#[derive(Default)]
struct TaskOutcome {
    /// Latency of each successful request completed inside the measured window, in µs.
    latencies_us: Vec<u32>,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    /// Ids of sessions this task created (warm-up included: they exist in the store too).
    ids: Vec<String>,
    /// When the last counted request finished.
    last_done: Option<Instant>,
    /// The `match` pool ran out before the window closed.
    ran_out: bool,
}

impl TaskOutcome {
    fn error(&mut self, kind: String) {
        self.errors += 1;
        if let Some(n) = self.error_kinds.get_mut(&kind) {
            *n += 1;
        } else if self.error_kinds.len() < MAX_ERROR_KINDS {
            self.error_kinds.insert(kind, 1);
        }
    }

    fn merge(&mut self, other: TaskOutcome) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        for (kind, n) in other.error_kinds {
            *self.error_kinds.entry(kind).or_default() += n;
        }
        self.ids.extend(other.ids);
        self.last_done = self.last_done.max(other.last_done);
        self.ran_out |= other.ran_out;
    }
}

/// Takes one unit from the budget; false once it is spent.
fn take(budget: &Budget) -> bool {
    budget.as_ref().is_none_or(|b| {
        b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    })
}

/// One connection sending requests back to back until the window closes or the budget runs out.
/// Transport errors are counted and the connection re-opened, so one reset does not end the run.
async fn connection_loop(
    target: Target,
    scenario: Scenario,
    window: Window,
    budget: Budget,
    mut rng: SmallRng,
) -> Result<TaskOutcome> {
    let mut out = TaskOutcome::default();
    let mut sender = connect(target.addr).await?;
    while Instant::now() < window.until && take(&budget) {
        let Some(req) = target.request(scenario, &mut rng)? else {
            out.ran_out = true;
            break;
        };
        let started = Instant::now();
        let result = send(&mut sender, req).await;
        let done = Instant::now();
        if done >= window.until && budget.is_none() {
            break; // finished after the window: neither counted nor an error
        }
        match result {
            Ok((status, body)) if status == scenario.expected() => {
                if scenario == Scenario::Create {
                    out.ids.push(serde_json::from_slice::<Created>(&body)?.id);
                }
                if started >= window.measure_from {
                    let us = done.duration_since(started).as_micros();
                    out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                    out.last_done = Some(done);
                }
            }
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                out.error(format!("{status}: {text}"));
            }
            Err(e) => {
                out.error(format!("transport: {e}"));
                sender = connect(target.addr).await?;
            }
        }
    }
    Ok(out)
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    // Reading the whole body is part of the request, and keep-alive needs it drained anyway.
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Runs `conns` connection tasks and merges what they saw.
async fn drive(
    target: &Target,
    scenario: Scenario,
    conns: usize,
    window: Window,
    budget: Budget,
) -> Result<TaskOutcome> {
    // Seeded from the thread RNG in a scope of its own: `ThreadRng` must not live across an await.
    let rngs: Vec<SmallRng> = {
        let mut seeder = rand::rng();
        (0..conns)
            .map(|_| SmallRng::from_rng(&mut seeder))
            .collect()
    };
    let tasks: Vec<_> = rngs
        .into_iter()
        .map(|rng| {
            tokio::spawn(connection_loop(
                target.clone(),
                scenario,
                window,
                budget.clone(),
                rng,
            ))
        })
        .collect();
    let mut total = TaskOutcome::default();
    for task in tasks {
        total.merge(task.await??);
    }
    Ok(total)
}

/// One row of the table.
struct Measurement {
    scenario: Scenario,
    conns: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// A warm-up, then a measured window; returns the row and the ids of sessions created.
async fn measure(
    target: &Target,
    scenario: Scenario,
    conns: usize,
    secs: Duration,
) -> Result<(Measurement, Vec<String>)> {
    let measure_from = Instant::now() + WARMUP;
    let window = Window {
        measure_from,
        until: measure_from + secs,
    };
    let mut out = drive(target, scenario, conns, window, None).await?;
    for (kind, n) in &out.error_kinds {
        eprintln!("  {} x{conns}: {n} error(s): {kind}", scenario.name());
    }
    // A `match` pool that runs out early ends the window at the last counted answer; the rate
    // is then over that shorter window (and said so), never diluted by idle time.
    let mut measured = secs;
    if out.ran_out {
        measured = out.last_done.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(measure_from)
        });
        eprintln!(
            "  {} x{conns}: the pool of {} sessions ran out {:.2} s into the {:.0} s window",
            scenario.name(),
            target.pool.ids.len(),
            measured.as_secs_f64(),
            secs.as_secs_f64()
        );
        if measured.is_zero() {
            return Err(format!("{}: the pool ran out during the warm-up", scenario.name()).into());
        }
    }
    out.latencies_us.sort_unstable();
    let row = Measurement {
        scenario,
        conns,
        rps: out.latencies_us.len() as f64 / measured.as_secs_f64(),
        p50_ms: percentile_ms(&out.latencies_us, 0.50),
        p99_ms: percentile_ms(&out.latencies_us, 0.99),
        errors: out.errors,
    };
    eprintln!(
        "  {:<6} x{:<3} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms",
        row.scenario.name(),
        row.conns,
        row.rps,
        row.p50_ms,
        row.p99_ms
    );
    Ok((row, out.ids))
}

/// Nearest-rank percentile of sorted µs samples, in ms.
fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

// ---------------------------------------------------------------------------------------------
// Suites and output
// ---------------------------------------------------------------------------------------------

/// One row: measures `scenario` at `conns` connections, adds the row, and returns the target
/// with the sessions the run created added to those later rows read.
async fn run_row(
    target: Target,
    scenario: Scenario,
    conns: usize,
    secs: Duration,
    rows: &mut Vec<Measurement>,
) -> Result<Target> {
    if scenario.needs_ids() && target.ids.is_empty() {
        return Err(format!("{}: no sessions to read", scenario.name()).into());
    }
    let (row, ids) = measure(&target, scenario, conns, secs).await?;
    rows.push(row);
    Ok(if ids.is_empty() {
        target
    } else {
        target.with_ids(ids)
    })
}

/// Records (and shows at once) the daemon's memory at a point of the run.
fn note_memory(daemon: &Daemon, notes: &mut Vec<String>, when: String) -> Result<()> {
    let line = format!("{when}: {}", daemon.memory()?);
    eprintln!("  {line}");
    notes.push(line);
    Ok(())
}

/// Every scenario at every connection count, connection count by connection count: `noop`
/// first, so each row's "vs no-op" is the same run's ceiling at the same count; `create`
/// before the rows that read its sessions. Then the cold QR row at `QR_CONNS`.
async fn default_suite(settings: &Settings, daemon: &Daemon, mut target: Target) -> Result<()> {
    let mut rows = Vec::new();
    let mut memory = Vec::new();
    for &conns in &settings.conn_counts {
        for scenario in Scenario::SUITE {
            target = run_row(target, scenario, conns, settings.measure, &mut rows).await?;
        }
        let when = format!(
            "after {conns} connection(s), {} sessions created",
            target.ids.len()
        );
        note_memory(daemon, &mut memory, when)?;
    }
    // The ceiling for the QR row, if 64 was not among the counts above.
    if !rows
        .iter()
        .any(|r| r.scenario == Scenario::Noop && r.conns == QR_CONNS)
    {
        target = run_row(
            target,
            Scenario::Noop,
            QR_CONNS,
            settings.measure,
            &mut rows,
        )
        .await?;
    }
    target = run_row(target, Scenario::Qr, QR_CONNS, settings.measure, &mut rows).await?;
    note_memory(daemon, &mut memory, "after qr".to_owned())?;
    println!();
    println!("{}", table(&rows));
    for line in &memory {
        println!("daemon {line}");
    }
    println!(
        "sessions stored (201s seen by the bench): {}",
        target.ids.len()
    );
    Ok(())
}

/// Fills the store with `n` sessions, then measures `noop`, `create`, `get` and `match` against
/// it at `SCALE_CONNS` connections, with the daemon's memory after the pre-load and each row.
async fn scale_suite(settings: &Settings, daemon: &Daemon, target: Target, n: usize) -> Result<()> {
    let (ids, took) = preload(&target, n).await?;
    if ids.len() != n {
        return Err(format!("pre-load stored {} of {n} sessions", ids.len()).into());
    }
    println!(
        "pre-loaded {} sessions in {:.1} s ({:.0} creates/s at {SCALE_CONNS} connections)",
        ids.len(),
        took.as_secs_f64(),
        ids.len() as f64 / took.as_secs_f64()
    );
    let mut memory = Vec::new();
    note_memory(daemon, &mut memory, format!("after pre-load, {n} stored"))?;
    let mut target = target.with_ids(ids);
    let mut rows: Vec<Measurement> = Vec::new();
    for scenario in Scenario::SCALE {
        if scenario == Scenario::Match {
            // Sized from this run's create rate: paying is a write of the same kind.
            let create_rps = rows
                .iter()
                .find(|r| r.scenario == Scenario::Create)
                .map_or(0.0, |r| r.rps);
            target = match_pool(target, settings.measure, create_rps).await?;
        }
        target = run_row(target, scenario, SCALE_CONNS, settings.measure, &mut rows).await?;
        let when = format!(
            "after {}, {} sessions created",
            scenario.name(),
            target.ids.len()
        );
        note_memory(daemon, &mut memory, when)?;
    }
    println!();
    println!("scale: {n} sessions pre-loaded");
    println!("{}", table(&rows));
    for line in &memory {
        println!("daemon {line}");
    }
    println!(
        "match paid {} sessions from a pool of {}",
        target.pool.used(),
        target.pool.ids.len()
    );
    Ok(())
}

/// The pool `match` pays from: a random sample (in random order) of the sessions stored, all
/// still open and unpaid, large enough for the warm-up and the window at `POOL_MARGIN` times the
/// create rate. Only if the store holds too few does it create more, which it reports.
async fn match_pool(target: Target, secs: Duration, create_rps: f64) -> Result<Target> {
    let needed =
        ((create_rps * POOL_MARGIN * (WARMUP + secs).as_secs_f64()).ceil() as usize).max(MIN_POOL);
    let target = if target.ids.len() < needed {
        let (more, took) = preload(&target, needed - target.ids.len()).await?;
        eprintln!(
            "  match: created {} more open sessions for its pool in {:.1} s",
            more.len(),
            took.as_secs_f64()
        );
        target.with_ids(more)
    } else {
        target
    };
    // A top-up that hit errors left fewer; the run then says if the pool ran out.
    let size = needed.min(target.ids.len());
    let picked = rand::seq::index::sample(&mut rand::rng(), target.ids.len(), size);
    let pool = picked.iter().map(|i| target.ids[i].clone()).collect();
    Ok(target.with_pool(pool))
}

/// Creates exactly `n` sessions as fast as `SCALE_CONNS` closed-loop connections allow,
/// reporting progress on stderr because a million takes minutes.
async fn preload(target: &Target, n: usize) -> Result<(Vec<String>, Duration)> {
    let budget = Arc::new(AtomicUsize::new(n));
    let progress = tokio::spawn(report_progress(budget.clone(), n));
    let started = Instant::now();
    let window = Window {
        measure_from: started,
        until: started + Duration::from_secs(24 * 3600),
    };
    let out = drive(target, Scenario::Create, SCALE_CONNS, window, Some(budget)).await;
    let took = started.elapsed();
    progress.abort();
    let out = out?;
    for (kind, count) in &out.error_kinds {
        eprintln!("  preload: {count} error(s): {kind}");
    }
    Ok((out.ids, took))
}

async fn report_progress(budget: Arc<AtomicUsize>, n: usize) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tick.tick().await;
        let done = n - budget.load(Ordering::Relaxed);
        eprintln!(
            "  preload: {done}/{n} after {:.0} s ({:.0}/s)",
            started.elapsed().as_secs_f64(),
            done as f64 / started.elapsed().as_secs_f64()
        );
    }
}

/// The markdown table; every row but `noop` also shows its throughput relative to `noop` at the
/// same connection count in the same run, i.e. what the route costs over the bare HTTP round
/// trip.
fn table(rows: &[Measurement]) -> String {
    let mut s = String::from(
        "| scenario | conns | req/s | p50 ms | p99 ms | errors | vs no-op |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let ratio = match r.scenario {
            Scenario::Noop => String::new(),
            _ => rows
                .iter()
                .find(|n| n.scenario == Scenario::Noop && n.conns == r.conns)
                .map_or_else(String::new, |n| format!("{:.3}", r.rps / n.rps)),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.3} | {:.3} | {} | {} |",
            r.scenario.name(),
            r.conns,
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            ratio
        );
    }
    s
}
