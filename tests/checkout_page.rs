//! The hosted checkout page (`GET /c/{id}`) in a real browser: Debian's Chromium driven by
//! playwright-core (tests/browser/checkout.mjs), screenshots kept under
//! target/test-artifacts/checkout/, and every QR code read back with zbarimg and compared with
//! the payment URI the API returned.
//!
//! Needs node, tests/browser/node_modules, /usr/bin/chromium and zbarimg: scripts/test installs
//! them. A missing part fails the test with that hint; nothing is skipped.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";
const SETUP: &str = "run scripts/test (it installs playwright-core and chromium)";
/// The script's own watchdog; the test kills it a little later still.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

// --- the harness ------------------------------------------------------------------------------

struct Tools {
    node: String,
    chromium: PathBuf,
    zbarimg: String,
    browser_dir: PathBuf,
}

fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        let node = std::env::var("PAYWATCH_NODE").unwrap_or_else(|_| "node".to_owned());
        let v = Command::new(&node).arg("--version").output();
        match v {
            Ok(o) if o.status.success() => {}
            _ => {
                panic!("node ({node}) is not runnable: the browser tests need Node.js 20+; {SETUP}")
            }
        }
        let pw = browser_dir.join("node_modules/playwright-core/package.json");
        assert!(
            pw.is_file(),
            "{} is missing: {SETUP}",
            browser_dir.join("node_modules").display()
        );
        let chromium = PathBuf::from(
            std::env::var("PAYWATCH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()),
        );
        assert!(
            chromium.is_file(),
            "Chromium is missing at {} (Debian's chromium package): {SETUP}",
            chromium.display()
        );
        let zbarimg = "zbarimg".to_owned();
        let z = Command::new(&zbarimg).arg("--version").output();
        assert!(
            z.is_ok_and(|o| o.status.success()),
            "zbarimg (Debian's zbar-tools) is not runnable: {SETUP}"
        );
        Tools {
            node,
            chromium,
            zbarimg,
            browser_dir,
        }
    })
}

/// target/test-artifacts/checkout/ (or under $CARGO_TARGET_DIR), created.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts").join("checkout");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts/checkout");
    dir
}

/// `node checkout.mjs <scenario> <args>`, bounded in time; its JSON report, also saved as
/// `<artifacts>/<name>.<scenario>.json`. Panics when the harness itself failed.
fn browser(scenario: &str, name: &str, args: &Value) -> Value {
    let t = tools();
    let mut child = Command::new(&t.node)
        .arg("checkout.mjs")
        .arg(scenario)
        .arg(args.to_string())
        .current_dir(&t.browser_dir)
        .env("PAYWATCH_CHROMIUM", &t.chromium)
        .env(
            "PAYWATCH_BROWSER_TIMEOUT_MS",
            SCRIPT_TIMEOUT.as_millis().to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node checkout.mjs");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + SCRIPT_TIMEOUT + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "checkout.mjs {scenario} did not finish in {:?} and was killed\nstdout: {stdout}\nstderr: {stderr}",
            SCRIPT_TIMEOUT + Duration::from_secs(20)
        );
    };
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let v: Value = line
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!("checkout.mjs {scenario} printed no JSON report ({status})\nstdout: {stdout}\nstderr: {stderr}")
        });
    let report = artifacts().join(format!("{name}.{scenario}.json"));
    let _ = std::fs::write(
        &report,
        serde_json::to_string_pretty(&v).unwrap_or_default(),
    );
    assert!(
        status.success() && v["ok"] == true,
        "the browser harness failed in {scenario} ({status}): {}\nstderr: {stderr}",
        v["error"].as_str().unwrap_or(&stdout)
    );
    v
}

/// Every QR code zbarimg finds in a PNG (none is an empty list, not an error).
fn qr_codes(png: &Path) -> Vec<String> {
    let out = Command::new(&tools().zbarimg)
        .args(["--raw", "-q", "-Sdisable", "-Sqrcode.enable"])
        .arg(png)
        .output()
        .expect("run zbarimg");
    match out.status.code() {
        Some(0) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(4) => Vec::new(), // zbarimg: no symbol found
        _ => panic!(
            "zbarimg failed on {} ({}): {}",
            png.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Collects every broken promise of the page contract, then fails once with all of them.
struct Contract {
    what: String,
    report: PathBuf,
    failures: Vec<String>,
}

impl Contract {
    fn new(what: &str, name: &str, scenario: &str) -> Contract {
        Contract {
            what: what.to_owned(),
            report: artifacts().join(format!("{name}.{scenario}.json")),
            failures: Vec::new(),
        }
    }

    fn check(&mut self, ok: bool, msg: impl Into<String>) {
        if !ok {
            self.failures.push(msg.into());
        }
    }

    fn done(self) {
        assert!(
            self.failures.is_empty(),
            "the checkout page breaks its contract ({}):\n  - {}\nbrowser report: {}",
            self.what,
            self.failures.join("\n  - "),
            self.report.display()
        );
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What every page view must hold to: served as HTML with a strict CSP, nothing fetched from
/// elsewhere, no script errors, no CSP violations, no missing assets.
fn check_hygiene(c: &mut Contract, r: &Value, log: &Value) {
    c.check(
        r["httpStatus"] == 200,
        format!("GET /c/{{id}} answered {}", r["httpStatus"]),
    );
    c.check(
        s(r, "contentType").starts_with("text/html"),
        format!("content-type {}, not text/html", r["contentType"]),
    );
    let csp = s(r, "csp");
    c.check(!csp.is_empty(), "no Content-Security-Policy header");
    if !csp.is_empty() {
        let directive = |name: &str| {
            csp.split(';')
                .map(str::trim)
                .find(|d| d.split_whitespace().next() == Some(name))
                .map(str::to_owned)
        };
        let script = directive("script-src").or_else(|| directive("default-src"));
        match script {
            None => c.check(
                false,
                format!("CSP {csp:?} restricts no scripts (no script-src or default-src)"),
            ),
            Some(d) => {
                for bad in [
                    "'unsafe-inline'",
                    "'unsafe-eval'",
                    "*",
                    "http:",
                    "https:",
                    "data:",
                ] {
                    c.check(
                        !d.split_whitespace().any(|t| t == bad),
                        format!("CSP script directive {d:?} allows {bad}"),
                    );
                }
            }
        }
    }
    let external = strings(&log["externalRequests"]);
    c.check(
        external.is_empty(),
        format!("the page fetched from outside the daemon: {external:?}"),
    );
    let errors = strings(&log["pageErrors"]);
    c.check(
        errors.is_empty(),
        format!("uncaught script errors: {errors:?}"),
    );
    let csp_violations: Vec<String> = strings(&log["consoleErrors"])
        .into_iter()
        .filter(|m| m.contains("Content Security Policy"))
        .collect();
    c.check(
        csp_violations.is_empty(),
        format!("CSP violations (inline script/style or a foreign source?): {csp_violations:?}"),
    );
    let bad = strings(&log["badResponses"]);
    c.check(
        bad.is_empty(),
        format!("requests the daemon answered with an error: {bad:?}"),
    );
}

async fn create_session(d: &Daemon, key: &str, body: Value) -> Value {
    let (st, _, s) = post(&client(), &d.url(SESSIONS), key, body, None).await;
    assert_eq!(st, 201, "create session: {s}");
    s
}

/// An unused loopback port for the success page the script serves (the OS picks it; the small
/// window before the script binds it again is harmless on a test machine).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn has_devanagari(text: &str) -> bool {
    text.chars().any(|c| ('\u{0900}'..='\u{097F}').contains(&c))
}

// --- screenshots and QR codes -------------------------------------------------------------------

/// Screenshots at phone and desktop size, every element of the page contract, and each QR read
/// back: alone it must decode to exactly the option's URI; the full phone screenshot must hold
/// one of the options' URIs and nothing else.
fn check_screenshots(d: &Daemon, session: &Value, name: &str, merchant: &str, amount_text: &str) {
    let id = s(session, "id");
    let out_dir = artifacts();
    let r = browser(
        "screenshots",
        name,
        &json!({"url": d.url(&format!("/c/{id}")), "outDir": out_dir, "name": name}),
    );
    let mut c = Contract::new(&format!("{name}, session {id}"), name, "screenshots");
    check_hygiene(&mut c, &r, &r["phoneLog"]);

    for f in ["phone", "desktop"] {
        let p = PathBuf::from(s(&r["files"], f));
        let png = std::fs::read(&p).unwrap_or_default();
        assert!(
            png.starts_with(b"\x89PNG"),
            "no {f} screenshot at {}",
            p.display()
        );
    }

    let options = session["payment_options"]
        .as_array()
        .expect("payment_options")
        .clone();
    assert!(
        !options.is_empty(),
        "the session offers no option: {session}"
    );
    let uris: Vec<String> = options.iter().map(|o| s(o, "uri").to_owned()).collect();

    c.check(
        r["lang"] == "en",
        format!(
            "<html lang> is {}, want \"en\" for an English browser",
            r["lang"]
        ),
    );
    c.check(
        r["merchant"] == merchant,
        format!("#merchant is {}, want {merchant:?}", r["merchant"]),
    );
    c.check(
        s(&r, "amount").contains(amount_text),
        format!("#amount is {}, want it to show {amount_text}", r["amount"]),
    );
    c.check(
        r["description"] == session["description"],
        format!(
            "#description is {}, want {}",
            r["description"], session["description"]
        ),
    );
    c.check(
        r["status"] == "open",
        format!("#status[data-status] is {}, want \"open\"", r["status"]),
    );
    c.check(r["countdown"] == true, "no #countdown");
    c.check(
        r["testBanner"] == true,
        "#test-banner missing or not visible on a test session",
    );
    let sim = &r["simulateForm"];
    c.check(
        sim["method"] == "post"
            && sim["action"] == format!("/c/{id}/simulate").as_str()
            && sim["submit"] == true,
        format!("form#simulate must POST to /c/{id}/simulate with a submit button; got {sim}"),
    );
    c.check(
        r["optionCount"] == options.len(),
        format!(
            "{} section.option, want one per payment option ({})",
            r["optionCount"],
            options.len()
        ),
    );
    if options.len() > 1 {
        let picker = strings(&r["picker"]);
        for o in &options {
            c.check(
                picker.iter().any(|m| m == s(o, "method")),
                format!(
                    "nav#methods has no a[data-method={}] (picker: {picker:?})",
                    o["method"]
                ),
            );
        }
        let visible = r["options"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|o| o["visible"] == true).count());
        c.check(
            visible == 1,
            format!(
                "with JS exactly the selected option shows; {visible} of {} are visible",
                options.len()
            ),
        );
    }

    let empty = Vec::new();
    let shown = r["options"].as_array().unwrap_or(&empty);
    for o in &options {
        let m = s(o, "method");
        let uri = s(o, "uri");
        let Some(p) = shown.iter().find(|p| p["method"] == m) else {
            c.check(false, format!("no section.option[data-method={m:?}]"));
            continue;
        };
        c.check(
            p["deeplink"] == uri,
            format!(
                "a.deeplink of {m} is {}, want the option's uri {uri:?}",
                p["deeplink"]
            ),
        );
        c.check(
            !s(p, "qrAlt").trim().is_empty(),
            format!("img.qr of {m} has no text alternative (alt)"),
        );
        let src = format!("/c/{id}/qr.svg?method={m}");
        c.check(
            p["qrSrc"] == src.as_str(),
            format!("img.qr of {m} has src {}, want {src:?}", p["qrSrc"]),
        );
        c.check(p["qrLoaded"] == true, format!("img.qr of {m} did not load"));
        c.check(
            s(p, "payTo").contains(s(o, "pay_to")),
            format!(".pay-to of {m} is {}, want {}", p["payTo"], o["pay_to"]),
        );
        c.check(
            s(p, "payable").contains(s(o, "payable_amount")),
            format!(
                ".payable of {m} is {}, want the exact {}",
                p["payable"], o["payable_amount"]
            ),
        );
        c.check(
            p["payToCopy"] == true && p["payableCopy"] == true,
            format!("{m}: .pay-to and .payable each need a button.copy"),
        );
        match r["qrFiles"][m].as_str() {
            Some(png) => {
                let got = qr_codes(Path::new(png));
                c.check(
                    got == [uri.to_owned()],
                    format!("the QR of {m} ({png}) decodes to {got:?}, want exactly [{uri:?}]"),
                );
            }
            None => c.check(
                false,
                format!(
                    "no screenshot of the QR of {m}: {}",
                    r["qrErrors"][m].as_str().unwrap_or("img.qr not found")
                ),
            ),
        }
    }

    let phone = PathBuf::from(s(&r["files"], "phone"));
    let codes = qr_codes(&phone);
    c.check(
        codes.iter().any(|code| uris.contains(code)),
        format!(
            "the phone screenshot {} shows no option's QR (decoded {codes:?}, want one of {uris:?})",
            phone.display()
        ),
    );
    let foreign: Vec<&String> = codes.iter().filter(|code| !uris.contains(code)).collect();
    c.check(
        foreign.is_empty(),
        format!("the phone screenshot holds QR codes that are no option's URI: {foreign:?}"),
    );
    c.done();
}

#[tokio::test]
async fn upi_page_screenshots_and_its_qr_decodes_to_the_uri() {
    let (d, key) = Daemon::started(&Opts::default());
    let session = create_session(
        &d,
        &key,
        json!({"amount": 14999, "currency": "inr", "description": "Masala chai x2",
               "success_url": "http://127.0.0.1:9/done?s={CHECKOUT_SESSION_ID}",
               "cancel_url": "http://127.0.0.1:9/cart"}),
    )
    .await;
    assert_eq!(session["payment_options"][0]["method"], "upi", "{session}");
    check_screenshots(&d, &session, "upi", "Demo Store", "149.99");
}

#[tokio::test]
async fn token_page_screenshots_and_its_qr_decodes_to_the_uri() {
    let (d, key) = Daemon::started(&Opts::default());
    let session = create_session(
        &d,
        &key,
        json!({"amount": 2500, "currency": "usd", "description": "Green tea",
               "success_url": "http://127.0.0.1:9/done?s={CHECKOUT_SESSION_ID}"}),
    )
    .await;
    let uri = s(&session["payment_options"][0], "uri");
    assert!(uri.starts_with("ethereum:0x"), "{session}");
    check_screenshots(&d, &session, "token", "Demo Store", "25.00");
}

/// Two options at once (a second test chain for merchant "other"): the picker links both, only
/// the selected one shows, and each QR, picked in turn, decodes to its own URI.
#[tokio::test]
async fn picker_offers_every_option_and_each_qr_decodes() {
    let extra = r#"
[chains.local2]
chain_id = 31338
test = true
rpc_urls = ["http://127.0.0.1:8547"]
token = "USDC"
token_contract = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
decimals = 6
confirmations = 1

[merchants.methods.usdt_local]
chain = "local"
pay_to = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"

[merchants.methods.usdc_local2]
chain = "local2"
pay_to = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"
"#;
    let mut d = Daemon::prepare(&Opts {
        extra: extra.to_owned(),
        ..Opts::default()
    });
    let key = create_key(&d.config, "other", &[]);
    d.start();
    let session = create_session(
        &d,
        &key,
        json!({"amount": 1234, "currency": "usd", "description": "Two ways to pay"}),
    )
    .await;
    let n = session["payment_options"].as_array().map_or(0, Vec::len);
    assert!(
        n >= 2,
        "this test needs a session with two options (config of the test is wrong?): {session}"
    );
    check_screenshots(&d, &session, "picker", "Other Shop", "12.34");
}

// --- live status -------------------------------------------------------------------------------

#[tokio::test]
async fn simulated_payment_turns_the_open_page_to_success_and_redirects() {
    let (d, key) = Daemon::started(&Opts::default());
    let port = free_port();
    let session = create_session(
        &d,
        &key,
        json!({"amount": 14999, "currency": "inr", "description": "Masala chai",
               "success_url": format!("http://127.0.0.1:{port}/done?s={{CHECKOUT_SESSION_ID}}"),
               "cancel_url": format!("http://127.0.0.1:{port}/cart")}),
    )
    .await;
    let id = s(&session, "id");
    let success = s(&session, "success_url");
    assert_eq!(success, format!("http://127.0.0.1:{port}/done?s={id}"));
    let r = browser(
        "simulate_success",
        "live",
        &json!({"url": d.url(&format!("/c/{id}")), "simulateUrl": d.url(&format!("/c/{id}/simulate")),
                "successUrl": success, "waitMs": 10000}),
    );
    let mut c = Contract::new(
        &format!("live status, session {id}"),
        "live",
        "simulate_success",
    );
    check_hygiene(&mut c, &r, &r["log"]);
    assert_eq!(
        r["simulateStatus"], 200,
        "POST /c/{id}/simulate failed: {}",
        r["simulateBody"]
    );
    c.check(
        r["initialStatus"] == "open",
        format!(
            "#status[data-status] is {} before paying, want \"open\"",
            r["initialStatus"]
        ),
    );
    c.check(
        r["liveChannel"]["events"].as_u64().unwrap_or(0) + r["liveChannel"]["status"].as_u64().unwrap_or(0) > 0,
        format!(
            "the page opened neither /c/{id}/events nor polled /c/{id}/status within 3 s of loading ({})",
            r["liveChannel"]
        ),
    );
    c.check(
        r["sawComplete"] == true && r["statusBeforeRedirect"] == "complete",
        format!(
            "#status[data-status] never became \"complete\" on the checkout page before leaving it (last {}; seen {})",
            r["statusBeforeRedirect"], r["statuses"]
        ),
    );
    c.check(
        r["redirected"] == true && s(&r, "finalUrl").starts_with(success),
        format!(
            "the page did not go to the success_url {success} within 10 s of the payment (ended on {})",
            r["finalUrl"]
        ),
    );
    c.check(
        r["reloads"] == 0,
        format!(
            "the page reloaded before redirecting ({} navigations: {})",
            r["reloads"], r["navigations"]
        ),
    );
    let hits = strings(&r["successHits"]);
    if r["redirected"] == true {
        c.check(
            hits.iter().any(|h| h == &format!("/done?s={id}")),
            format!("the success page was not requested as /done?s={id} (hits {hits:?})"),
        );
    }
    c.done();
    eprintln!(
        "live: complete {} ms and redirect {} ms after the payment",
        r["msSimulateToComplete"], r["msSimulateToRedirect"]
    );
}

// --- safety, no-JS, language ---------------------------------------------------------------------

#[tokio::test]
async fn merchant_description_is_shown_as_text_and_runs_nothing() {
    let (d, key) = Daemon::started(&Opts::default());
    let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let session = create_session(
        &d,
        &key,
        json!({"amount": 14999, "currency": "inr", "description": evil}),
    )
    .await;
    let id = s(&session, "id");
    let r = browser("xss", "xss", &json!({"url": d.url(&format!("/c/{id}"))}));
    let mut c = Contract::new(&format!("escaping, session {id}"), "xss", "xss");
    c.check(
        r["dialogFired"] == false,
        format!("the merchant text ran script: dialogs {}", r["dialogs"]),
    );
    c.check(
        r["description"] == evil,
        format!(
            "#description shows {}, want the text {evil:?}",
            r["description"]
        ),
    );
    c.check(
        r["descriptionChildElements"] == 0,
        format!(
            "#description holds {} elements: the merchant text became markup",
            r["descriptionChildElements"]
        ),
    );
    c.done();
}

#[tokio::test]
async fn page_works_without_javascript() {
    let (d, key) = Daemon::started(&Opts::default());
    let session = create_session(
        &d,
        &key,
        json!({"amount": 14999, "currency": "inr", "description": "Masala chai"}),
    )
    .await;
    let id = s(&session, "id");
    let uri = s(&session["payment_options"][0], "uri");
    let dir = artifacts();
    let r = browser(
        "nojs",
        "nojs",
        &json!({"url": d.url(&format!("/c/{id}")), "outDir": dir, "name": "nojs"}),
    );
    let mut c = Contract::new(&format!("no JavaScript, session {id}"), "nojs", "nojs");
    check_hygiene(&mut c, &r, &r["log"]);
    c.check(
        r["qrLoaded"] == true,
        format!("QR images did not load without JS: {}", r["images"]),
    );
    c.check(
        r["images"]
            .as_array()
            .is_some_and(|a| a.iter().all(|i| i["visible"] == true)),
        format!("QR images are hidden without JS: {}", r["images"]),
    );
    let links = strings(&r["deeplinks"]);
    c.check(
        links.iter().any(|l| l == uri),
        format!("no a.deeplink to {uri:?} without JS (got {links:?})"),
    );
    c.check(
        r["status"] == "open",
        format!("#status[data-status] is {}, want \"open\"", r["status"]),
    );
    c.check(
        r["refreshPresent"] == true,
        format!(
            "nothing refreshes the page without JS (meta refresh {}, in noscript {}, Refresh header {})",
            r["metaRefresh"], r["noscriptRefresh"], r["refresh"]
        ),
    );
    c.check(
        r["options"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|o| o["visible"] == true)),
        format!("without JS every option must show: {}", r["options"]),
    );
    if let Some(png) = r["screenshot"].as_str() {
        let codes = qr_codes(Path::new(png));
        c.check(
            codes.iter().any(|x| x == uri),
            format!(
                "the no-JS screenshot {png} shows no readable QR of {uri:?} (decoded {codes:?})"
            ),
        );
    }
    c.done();
}

#[tokio::test]
async fn hindi_page_when_the_browser_asks_for_hindi() {
    let (d, key) = Daemon::started(&Opts::default());
    let session = create_session(
        &d,
        &key,
        json!({"amount": 14999, "currency": "inr", "description": "Masala chai"}),
    )
    .await;
    let id = s(&session, "id");
    let dir = artifacts();
    let r = browser(
        "hindi",
        "hindi",
        &json!({"url": d.url(&format!("/c/{id}")), "outDir": dir, "name": "hindi"}),
    );
    let mut c = Contract::new(&format!("Hindi, session {id}"), "hindi", "hindi");
    c.check(
        r["lang"] == "hi",
        format!(
            "<html lang> is {} for Accept-Language: hi, want \"hi\"",
            r["lang"]
        ),
    );
    c.check(
        has_devanagari(s(&r, "text")),
        format!("no Devanagari in the page text: {}", r["text"]),
    );
    c.check(
        !strings(&r["langSwitch"]).is_empty(),
        "no a.lang-switch link to change the language",
    );
    c.done();
}

// --- the harness itself ---------------------------------------------------------------------------

/// Proves the harness without the daemon's page: a page on disk with a QR rendered by the
/// same qrcode crate goes through Chromium, the screenshots scenario and zbarimg. When this
/// fails, the browser tests above say nothing about the page.
#[test]
fn harness_self_check_chromium_screenshots_and_zbarimg_decode_a_known_qr() {
    let uri = "upi://pay?pa=demo%40okbank&pn=Demo%20Store&am=149.99&cu=INR&tr=cs_selfcheck";
    let code = qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M)
        .expect("qr");
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(264, 264)
        .quiet_zone(true)
        .build();
    let dir = artifacts().join("selfcheck");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("qr.svg"), svg).expect("write svg");
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>self-check</title></head>\
         <body><h1 id=\"merchant\">Self check</h1><section class=\"option\" data-method=\"upi\">\
         <img class=\"qr\" alt=\"{}\" src=\"qr.svg\" width=\"264\" height=\"264\">\
         <a class=\"deeplink\" href=\"{}\">Open</a></section></body></html>",
        uri.replace('&', "&amp;"),
        uri.replace('&', "&amp;")
    );
    let page = dir.join("index.html");
    std::fs::write(&page, html).expect("write html");
    let r = browser(
        "screenshots",
        "selfcheck",
        &json!({"url": format!("file://{}", page.display()), "outDir": dir, "name": "selfcheck"}),
    );
    assert_eq!(strings(&r["deeplinks"]), [uri], "{r}");
    assert_eq!(r["optionCount"], 1, "{r}");
    let qr = r["qrFiles"]["upi"]
        .as_str()
        .unwrap_or_else(|| panic!("no element screenshot: {}", r["qrErrors"]));
    assert_eq!(qr_codes(Path::new(qr)), [uri], "element screenshot {qr}");
    for f in ["phone", "desktop"] {
        let p = PathBuf::from(s(&r["files"], f));
        assert_eq!(qr_codes(&p), [uri], "full {f} screenshot {}", p.display());
    }
}

/// Every language the page speaks, in Chromium: `<html lang dir>` say which, the words are the
/// locale file's (none left in English), the amount and address read left to right, and
/// Arabic and Urdu are mirrored (the merchant's name on the right, the language menu on the
/// left). A phone screenshot per language is kept in the artifacts folder.
#[tokio::test]
async fn every_locale_renders_its_own_words_and_rtl_pages_are_mirrored() {
    let (d, key) = Daemon::started(&Opts::default());
    let session = create_session(
        &d,
        &key,
        json!({"amount": 12345678, "currency": "inr", "description": "Thali"}),
    )
    .await;
    let id = s(&session, "id");
    let payable = s(&session["payment_options"][0], "payable_amount").to_owned();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("locales");
    let mut files: Vec<(String, toml::Value)> = std::fs::read_dir(&root)
        .expect("locales/")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            let code = p.file_stem()?.to_str()?.to_owned();
            (p.extension()? == "toml").then(|| {
                let v = std::fs::read_to_string(&p).expect("locale file");
                (code, toml::from_str(&v).expect("locale toml"))
            })
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(files.len() >= 20, "{} locales", files.len());
    let codes: Vec<&str> = files.iter().map(|(c, _)| c.as_str()).collect();
    let r = browser(
        "locales",
        "locales",
        &json!({"url": d.url(&format!("/c/{id}")), "outDir": artifacts(), "codes": codes}),
    );
    let en = &files.iter().find(|(c, _)| c == "en").expect("en").1["strings"];
    let mut c = Contract::new(&format!("every locale, session {id}"), "locales", "locales");
    for (code, file) in &files {
        let p = &r["pages"][code.as_str()];
        let t = &file["strings"];
        let word = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
        let text = s(p, "text");
        c.check(
            p["lang"] == code.as_str(),
            format!("{code}: <html lang> is {}", p["lang"]),
        );
        let rtl = file["locale"]["dir"].as_str() == Some("rtl");
        let want_dir = if rtl { "rtl" } else { "ltr" };
        c.check(
            p["dir"] == want_dir && p["computedDir"] == want_dir,
            format!(
                "{code}: dir {} / computed {}, want {want_dir}",
                p["dir"], p["computedDir"]
            ),
        );
        for k in [
            "status_open",
            "expires_in",
            "scan",
            "pay_exactly",
            "claim_heading",
            "language",
        ] {
            c.check(
                text.contains(&word(k)),
                format!("{code}: the page lacks its {k} {:?}", word(k)),
            );
        }
        if code != "en" {
            for k in ["status_open", "scan", "claim_heading", "upi_note"] {
                let english = en[k].as_str().unwrap_or_default();
                c.check(
                    !text.contains(english),
                    format!("{code}: English {k} {english:?} on the page"),
                );
            }
        }
        c.check(
            p["emptyVisible"].as_array().is_some_and(|a| a.is_empty()),
            format!(
                "{code}: visible text elements are empty: {}",
                p["emptyVisible"]
            ),
        );
        c.check(
            p["switches"].as_u64() == Some(files.len() as u64),
            format!(
                "{code}: {} language links, want {}",
                p["switches"],
                files.len()
            ),
        );
        c.check(
            p["tofu"].as_array().is_some_and(|a| a.is_empty()),
            format!(
                "{code}: {} of {} letters render as empty boxes (a font is missing): {}",
                p["tofu"].as_array().map_or(0, Vec::len),
                p["letters"],
                p["tofu"]
            ),
        );
        c.check(
            p["amountDir"] == "ltr",
            format!("{code}: the amount reads {}", p["amountDir"]),
        );
        let merchant_left = p["merchant"]["left"].as_f64().unwrap_or(0.0);
        let langs_left = p["langs"]["left"].as_f64().unwrap_or(0.0);
        c.check(
            if rtl {
                merchant_left > langs_left
            } else {
                merchant_left < langs_left
            },
            format!(
                "{code}: merchant name at x={merchant_left}, language menu at x={langs_left}: {}",
                if rtl {
                    "not mirrored"
                } else {
                    "mirrored in a left-to-right language"
                }
            ),
        );
        let grouped = match code.as_str() {
            "hi" | "bn" | "ta" | "te" | "mr" | "gu" | "kn" | "ml" | "pa" => "1,23,456.78",
            "de" | "es" | "pt" | "tr" | "vi" | "id" => "123.456,78",
            "en" | "zh" | "ja" | "ko" | "ar" => "123,456.78",
            _ => "",
        };
        if !grouped.is_empty() {
            c.check(
                text.contains(grouped),
                format!("{code}: the amount is not written {grouped}"),
            );
        }
        // What a customer copies into an app stays plain, in every language.
        c.check(
            text.contains(&payable),
            format!("{code}: the payable amount is not {payable} to copy"),
        );
    }
    c.done();
}

/// A session's `locale` speaks for a customer whose browser names no language the page has;
/// the browser's own choice and `?lang=` still win; a locale the page does not speak is a 400
/// naming the parameter and creates nothing.
#[tokio::test]
async fn a_sessions_locale_is_the_pages_language_unless_the_browser_names_one() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let session = create_session(
        &d,
        &key,
        json!({"amount": 5000, "currency": "inr", "locale": "ta-IN"}),
    )
    .await;
    assert_eq!(session["locale"], "ta", "{session}");
    let url = d.url(&format!("/c/{}", s(&session, "id")));
    let page = |accept: Option<&'static str>, query: &'static str| {
        let mut r = c.get(format!("{url}{query}"));
        if let Some(a) = accept {
            r = r.header("accept-language", a);
        }
        async move { r.send().await.expect("page").text().await.expect("html") }
    };
    assert!(
        page(None, "")
            .await
            .contains("<html lang=\"ta\" dir=\"ltr\">")
    );
    assert!(page(Some("xx-YY"), "").await.contains("<html lang=\"ta\""));
    assert!(
        page(Some("bn-IN,bn;q=0.9"), "")
            .await
            .contains("<html lang=\"bn\"")
    );
    assert!(
        page(Some("bn"), "?lang=ar")
            .await
            .contains("<html lang=\"ar\" dir=\"rtl\">")
    );
    let auto = create_session(
        &d,
        &key,
        json!({"amount": 5000, "currency": "inr", "locale": "auto"}),
    )
    .await;
    assert!(auto["locale"].is_null(), "{auto}");
    let (st, _, e) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 5000, "currency": "inr", "locale": "tlh"}),
        None,
    )
    .await;
    assert_eq!(st, 400, "{e}");
    assert_eq!(e["error"]["param"], "locale", "{e}");
    assert_eq!(e["error"]["code"], "parameter_invalid", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ta")),
        "{e}"
    );
    let (_, list) = get(&c, &d.url(&format!("{SESSIONS}?limit=100")), &key).await;
    assert_eq!(
        list["data"].as_array().map(Vec::len),
        Some(2),
        "the refused create stored nothing: {list}"
    );
}

/// The counter QR from scan to "paid", in Chromium on a phone-sized screen, with and without
/// JavaScript: the printed QR (the link's PNG) is decoded by zbarimg into the URL the phone
/// opens; the customer types the amount on the link's form; the checkout page of that one
/// session shows a QR that zbarimg decodes to the session's payment URI; a payment arriving
/// from elsewhere turns the page "paid" live (JS: its live channel; no JS: its own refresh).
#[tokio::test]
async fn the_counter_qr_from_scan_to_paid() {
    // The public URL must be reachable by the browser: the daemon's own address.
    let port = free_port();
    let mut d = Daemon::prepare_text(|dir| {
        config_text(dir, &Opts::default())
            .replace(
                "\nlisten = \"127.0.0.1:0\"\n",
                &format!("\nlisten = \"127.0.0.1:{port}\"\n"),
            )
            .replace(
                "public_url = \"http://pay.test\"",
                &format!("public_url = \"http://127.0.0.1:{port}\""),
            )
    });
    let key = create_key(&d.config, "demo", &["--permissions", "*"]);
    d.start();
    assert_eq!(d.base, format!("http://127.0.0.1:{port}"));
    let (st, _, link) = post(
        &client(),
        &d.url("/v1/payment_links"),
        &key,
        json!({"currency": "inr", "counter": true, "payment_methods": ["upi"],
               "description": "Counter 1", "amount_max": 2_000_000}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{link}");
    let png = client()
        .get(s(&link, "qr_png_url"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let printed = artifacts().join("counter-printed-qr.png");
    std::fs::write(&printed, &png).unwrap();
    let scanned = qr_codes(&printed);
    assert_eq!(scanned, vec![s(&link, "url").to_owned()], "the printed QR");

    for (js, amount, minor) in [(true, "249.50", 24950), (false, "1250,5", 125050)] {
        let name = if js { "counter-js" } else { "counter-nojs" };
        let r = browser(
            "counter",
            name,
            &json!({"url": scanned[0], "amount": amount, "outDir": artifacts().display().to_string(),
                    "name": name, "javascript": js, "waitMs": 25000}),
        );
        assert_eq!(r["linkStatus"], 200, "{r}");
        assert_eq!(r["linkHasForm"], true, "{r}");
        let checkout = s(&r, "checkoutUrl");
        let id = checkout
            .strip_prefix(&format!("{}/c/", d.base))
            .unwrap_or_else(|| panic!("landed on {checkout}"));
        let (_, session) = get(
            &client(),
            &d.url(&format!("/v1/checkout/sessions/{id}")),
            &key,
        )
        .await;
        assert_eq!(session["amount"], minor, "{session}");
        assert_eq!(session["metadata"]["payment_link"], link["id"]);
        assert_eq!(r["initialStatus"], "open", "{r}");
        let uri = session["payment_options"][0]["uri"].as_str().unwrap();
        assert_eq!(
            qr_codes(Path::new(s(&r["files"], "qr"))),
            vec![uri.to_owned()],
            "the screenshot's QR is this session's payment URI"
        );
        assert_eq!(r["simulateStatus"], 200, "{r}");
        assert_eq!(
            r["finalStatus"], "complete",
            "the page never turned paid: {r}"
        );
        assert_eq!(s(&r, "statusText"), "Payment received. Thank you!", "{r}");
        if js {
            assert_eq!(r["reloads"], 0, "live without reloading: {r}");
        } else {
            assert!(
                r["reloads"].as_u64().unwrap() >= 1,
                "the no-JS page refreshed: {r}"
            );
        }
    }
    let (_, l) = get(
        &client(),
        &d.url(&format!("/v1/payment_links/{}", s(&link, "id"))),
        &key,
    )
    .await;
    assert_eq!(l["completed_payments"], 2, "{l}");
}
