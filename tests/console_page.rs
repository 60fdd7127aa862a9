//! The operator console in a real browser: Debian's Chromium driven by playwright-core
//! (tests/browser/console.mjs). A wrong password does not log in; an admin operator with its
//! password and TOTP code (computed in the page's harness from the secret `paywatch operators
//! create` printed) finds a session by
//! its order id, assigns an unmatched credit and sees the session complete, revokes a key (the
//! API then refuses it), marks a refund succeeded, and is shown an EIP-681 QR (read back with
//! zbarimg) for a token refund whose sender is known. Screenshots under
//! target/test-artifacts/console/.
//!
//! Needs node, tests/browser/node_modules, /usr/bin/chromium and zbarimg: scripts/test installs
//! them. A missing part fails the test with that hint; nothing is skipped.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";
const SETUP: &str = "run scripts/test (it installs playwright-core, chromium and zbar-tools)";
const TOKEN_CONTRACT: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts").join("console");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts/console");
    dir
}

fn run_browser(args: &Value) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "tests/browser/node_modules is missing: {SETUP}"
    );
    let chromium =
        std::env::var("PAYWATCH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).is_file(),
        "Chromium is missing at {chromium}: {SETUP}"
    );
    let node = std::env::var("PAYWATCH_NODE").unwrap_or_else(|_| "node".to_owned());
    let out = Command::new(&node)
        .arg("console.mjs")
        .arg(args.to_string())
        .current_dir(&dir)
        .env("PAYWATCH_CHROMIUM", &chromium)
        .env("PAYWATCH_BROWSER_TIMEOUT_MS", "90000")
        .output()
        .unwrap_or_else(|e| panic!("node ({node}) is not runnable: {e}; {SETUP}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "console.mjs printed no report; stdout {stdout:?}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    std::fs::write(artifacts().join("report.json"), report.to_string()).unwrap();
    assert_eq!(report["ok"], true, "the browser harness failed: {report}");
    report
}

fn zbar(png: &str) -> String {
    let out = Command::new("zbarimg")
        .args(["--quiet", "--raw", png])
        .output()
        .unwrap_or_else(|e| panic!("zbarimg is not runnable: {e}; {SETUP}"));
    assert!(out.status.success(), "zbarimg read no QR code in {png}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn simulate(c: &reqwest::Client, d: &Daemon, id: &str, body: Value) {
    let r = c
        .post(d.url(&format!("/c/{id}/simulate")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
}

async fn refund(c: &reqwest::Client, d: &Daemon, key: &str, session: &str, amount: &str) -> String {
    let (st, _, r) = post(
        c,
        &d.url("/v1/refunds"),
        key,
        json!({"session": session, "amount": amount}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{r}");
    r["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_console_in_chromium() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    // A key to revoke from the console.
    let r = c
        .post(format!("{}/admin/v1/keys", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"merchant": "demo"}))
        .send()
        .await
        .unwrap();
    let victim: Value = r.json().await.unwrap();
    let victim_secret = victim["secret"].as_str().unwrap().to_owned();
    let (st, _) = get(&c, &d.url(SESSIONS), &victim_secret).await;
    assert_eq!(st, 200, "the key works before it is revoked");
    // Money that matched nothing, then the session it was meant for.
    let (st, _, v) = post(
        &c,
        &d.url("/v1/upi/credits"),
        &key,
        json!({"source": "manual", "amount": "123.45", "utr": "712345678901"}),
        None,
    )
    .await;
    assert_eq!((st, v["outcome"].as_str()), (200, Some("unmatched")), "{v}");
    let credit = v["credit"]["id"].as_str().unwrap().to_owned();
    let (st, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 12_345, "currency": "inr", "order_id": "ORD-CONSOLE-7",
               "description": "<b id=\"pwned\">bold</b>"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{s}");
    assert_eq!(s["payment_options"][0]["payable_amount"], "123.45");
    let session = s["id"].as_str().unwrap().to_owned();
    // Refunds: UPI; a token one with a known sender; one without.
    let (_, _, upi) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 5_000, "currency": "inr"}),
        None,
    )
    .await;
    simulate(&c, &d, upi["id"].as_str().unwrap(), json!({})).await;
    let upi_refund = refund(&c, &d, &key, upi["id"].as_str().unwrap(), "10.00").await;
    let sender = "0x90F79bf6EB2c4f870365E785982E1f101E93b906";
    let (_, _, tok) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 2_500, "currency": "usd", "payment_methods": ["usdt_local"]}),
        None,
    )
    .await;
    simulate(&c, &d, tok["id"].as_str().unwrap(), json!({"from": sender})).await;
    let (_, tok_now) = get(
        &c,
        &d.url(&format!("{SESSIONS}/{}", tok["id"].as_str().unwrap())),
        &key,
    )
    .await;
    assert_eq!(tok_now["payments"][0]["from"], sender);
    let token_refund = refund(&c, &d, &key, tok["id"].as_str().unwrap(), "1.5").await;
    let (_, _, tok2) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 2_600, "currency": "usd", "payment_methods": ["usdt_local"]}),
        None,
    )
    .await;
    simulate(&c, &d, tok2["id"].as_str().unwrap(), json!({})).await;
    let unknown_refund = refund(&c, &d, &key, tok2["id"].as_str().unwrap(), "2").await;
    // A bad sender is refused.
    let r = c
        .post(d.url(&format!("/c/{}/simulate", tok2["id"].as_str().unwrap())))
        .json(&json!({"from": "0x12"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    let op = create_operator(&d.config, "alice", "admin");
    let report = run_browser(&json!({
        "admin": d.admin, "name": op.name, "password": op.password, "secret": op.secret,
        "reference": "ORD-CONSOLE-7",
        "session": session, "credit": credit, "key": victim["id"], "refund": upi_refund,
        "token_refund": token_refund, "unknown_refund": unknown_refund,
        "artifacts": artifacts().display().to_string(),
    }));

    // Wrong password: an error, no cookie, and the pages still send to the login.
    assert_eq!(
        report["wrongError"], "The name, password or code is wrong.",
        "{report}"
    );
    assert_eq!(report["wrongCookies"], 0);
    assert_eq!(report["wrongLandedOn"], "/console/login");
    // Password and TOTP code.
    assert_eq!(report["loggedInOn"], "/console/sessions");
    assert_eq!(report["who"], "alice (admin)");
    assert_eq!(report["cookie"]["httpOnly"], true, "{report}");
    assert_eq!(report["cookie"]["secure"], false, "public_url is http here");
    assert_eq!(report["cookie"]["sameSite"], "Strict");
    let csp = report["csp"].as_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(report["external"], json!([]));
    // Found by filter; the credit completes it.
    assert_eq!(report["filteredIds"], json!([session]));
    assert_eq!(report["statusBefore"], "open");
    assert_eq!(report["creditShown"], true);
    assert!(
        report["assignNotice"]
            .as_str()
            .unwrap()
            .contains("complete"),
        "{report}"
    );
    assert_eq!(report["statusAfter"], "complete");
    let (_, s) = get(&c, &d.url(&format!("{SESSIONS}/{session}")), &key).await;
    assert_eq!(s["status"], "complete");
    assert_eq!(s["payments"][0]["utr"], "712345678901");
    // CSRF: the forged form changed nothing, the real one revoked the key.
    assert_eq!(report["forgedStatus"], 403);
    assert!(
        report["keyRow"].as_str().unwrap().contains("revoked"),
        "{report}"
    );
    let (st, e) = get(&c, &d.url(SESSIONS), &victim_secret).await;
    assert_eq!(st, 401, "a revoked key is refused: {e}");
    // Token refund: the EIP-681 URI to the sender, as link and as a QR that reads back the same.
    let want = format!("ethereum:{TOKEN_CONTRACT}@31337/transfer?address={sender}&uint256=1500000");
    assert_eq!(report["tokenUri"], want.as_str());
    assert_eq!(report["tokenQrLoaded"], true);
    assert_eq!(zbar(report["qrShot"].as_str().unwrap()), want);
    assert!(
        report["unknownWarn"]
            .as_str()
            .unwrap()
            .contains("not known"),
        "{report}"
    );
    assert_eq!(report["unknownHasQr"], false);
    assert_eq!(report["overflowX"], false, "the refunds page fits a phone");
    // The UPI refund is succeeded, with its UTR.
    assert!(
        report["refundNotice"]
            .as_str()
            .unwrap()
            .contains("succeeded")
    );
    assert_eq!(report["succeededShown"], true);
    let (_, r) = get(&c, &d.url(&format!("/v1/refunds/{upi_refund}")), &key).await;
    assert_eq!(
        (r["status"].as_str(), r["utr"].as_str()),
        (Some("succeeded"), Some("612345678901"))
    );
    assert_eq!(report["injected"], false, "merchant text is escaped");
    // Every action is in the audit log, by name.
    let actions: Vec<&str> = report["auditActions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in ["login", "credits.assign", "keys.revoke", "refunds.succeed"] {
        assert!(
            actions.contains(&want),
            "{want} not in the audit log: {actions:?}"
        );
    }
}

/// Without the browser: the console refuses forms without a login and pages redirect to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_requires_a_login() {
    let (d, _key) = Daemon::started(&Opts::default());
    let c = client();
    let r = c
        .get(format!("{}/console/keys", d.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    let r = c
        .post(format!("{}/console/keys", d.admin))
        .form(&[("merchant", "demo")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A bearer admin token is not a console login either (the console only takes its cookie).
    let r = c
        .get(format!("{}/console/keys", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let op = create_operator(&d.config, "bob", "viewer");
    let (code, _) = totp_now(&op.secret);
    let r = c
        .post(format!("{}/console/login", d.admin))
        .form(&[
            ("name", "bob"),
            ("password", op.password.as_str()),
            ("code", &code),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && !cookie.contains("Secure"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let r = c
        .get(format!("{}/console/watchers", d.admin))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("Watchers"), "{body}");
}

/// The operator makes, lists and deactivates payment links in the console (plain forms over
/// HTTP, the CSRF token of the login); a bad form changes nothing.
#[tokio::test]
async fn payment_links_are_made_listed_and_deactivated_in_the_console() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let mut op = common::create_operator(&d.config, "links-op", "operator");
    let cookie = common::console_login(&c, &d, &mut op).await;
    let page = |c: reqwest::Client, url: String, cookie: String| async move {
        c.get(url)
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let html = page(
        c.clone(),
        format!("{}/console/links", d.admin),
        cookie.clone(),
    )
    .await;
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a csrf field")
        .to_owned();
    let post_form = |fields: Vec<(&'static str, String)>| {
        let (c, url, cookie) = (
            c.clone(),
            format!("{}/console/links", d.admin),
            cookie.clone(),
        );
        async move {
            c.post(url)
                .header("cookie", cookie)
                .form(&fields)
                .send()
                .await
                .unwrap()
        }
    };
    // Bad forms: a message, no link.
    for bad in [
        vec![
            ("merchant", "nobody".to_owned()),
            ("currency", "inr".to_owned()),
            ("amount", "5".to_owned()),
        ],
        vec![
            ("merchant", "demo".to_owned()),
            ("currency", "inr".to_owned()),
            ("amount", "-5".to_owned()),
        ],
        vec![
            ("merchant", "demo".to_owned()),
            ("currency", "xyz".to_owned()),
            ("amount", "5".to_owned()),
        ],
    ] {
        let mut f = bad.clone();
        f.push(("csrf", csrf.clone()));
        let r = post_form(f).await;
        assert_eq!(r.status().as_u16(), 400, "{bad:?}");
    }
    let (_, list) = get(&c, &d.url("/v1/payment_links"), &key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // Without the CSRF token: refused.
    let r = post_form(vec![
        ("merchant", "demo".to_owned()),
        ("currency", "inr".to_owned()),
        ("amount", "5".to_owned()),
    ])
    .await;
    assert_eq!(r.status().as_u16(), 403);

    let r = post_form(vec![
        ("csrf", csrf.clone()),
        ("merchant", "demo".to_owned()),
        ("mode", "test".to_owned()),
        ("currency", "inr".to_owned()),
        ("amount", "499.00".to_owned()),
        ("description", "Tea leaves 250 g".to_owned()),
        ("max_uses", "5".to_owned()),
    ])
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let (_, list) = get(&c, &d.url("/v1/payment_links"), &key).await;
    let l = &list["data"][0];
    assert_eq!(
        (l["amount"].clone(), l["max_uses"].clone()),
        (json!(49900), json!(5)),
        "{l}"
    );
    let id = l["id"].as_str().unwrap().to_owned();
    let html = page(
        c.clone(),
        format!("{}/console/links", d.admin),
        cookie.clone(),
    )
    .await;
    assert!(
        html.contains(&id) && html.contains("Tea leaves 250 g") && html.contains("₹499.00"),
        "{html}"
    );
    assert!(html.contains("0 / 5"), "{html}");

    let r = c
        .post(format!("{}/console/links/{id}/deactivate", d.admin))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let (_, l) = get(&c, &d.url(&format!("/v1/payment_links/{id}")), &key).await;
    assert_eq!(l["active"], false, "{l}");
    let html = page(
        c.clone(),
        format!("{}/console/links", d.admin),
        cookie.clone(),
    )
    .await;
    assert!(html.contains("inactive"), "{html}");
}
