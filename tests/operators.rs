//! Operator accounts against the real binary: `paywatch operators create` prints the set-up
//! once and refuses bad input; a viewer reads but cannot act; wrong and replayed TOTP codes are
//! refused, a recovery code works once; logins survive a restart and a revoked one is refused;
//! a locked account stays locked across a SIGKILL and restart until an admin unlocks it; the
//! audit log records each action and exports as CSV and JSON. The browser login is in
//! tests/console_page.rs.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn page(c: &reqwest::Client, d: &Daemon, cookie: &str, path: &str) -> (u16, String) {
    let r = c
        .get(format!("{}{path}", d.admin))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The CSRF token of the login behind `cookie`, read from a page's form.
async fn csrf(c: &reqwest::Client, d: &Daemon, cookie: &str) -> String {
    let (st, body) = page(c, d, cookie, "/console/keys").await;
    assert_eq!(st, 200, "{body}");
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..at + 32].to_owned()
}

async fn form(
    c: &reqwest::Client,
    d: &Daemon,
    cookie: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let r = c
        .post(format!("{}{path}", d.admin))
        .header("cookie", cookie)
        .form(fields)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn audit_json(c: &reqwest::Client, d: &Daemon, cookie: &str) -> Vec<Value> {
    let r = c
        .get(format!("{}/console/audit.json", d.admin))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    v["data"].as_array().unwrap().clone()
}

fn has(entries: &[Value], who: &str, action: &str, outcome_prefix: &str) -> bool {
    entries.iter().any(|e| {
        e["operator"] == who
            && e["action"] == action
            && e["outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with(outcome_prefix))
            && e["client"] == "127.0.0.1"
            && e["at"].as_str().is_some_and(|t| t.ends_with('Z'))
    })
}

async fn key_count(c: &reqwest::Client, d: &Daemon) -> usize {
    let r = c
        .get(format!("{}/admin/v1/keys", d.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    v["data"].as_array().unwrap().len()
}

#[test]
fn operators_create_prints_the_setup_once_and_refuses_bad_input() {
    let d = Daemon::prepare(&Opts::default());
    let op = create_operator(&d.config, "alice", "operator");
    assert_eq!(op.password.len(), 20);
    assert!(
        // SHA-1, 6 digits and 30 s are every app's defaults, so the URI leaves them out.
        op.uri.starts_with("otpauth://totp/paywatch:alice?")
            && op.uri.contains("issuer=paywatch")
            && !op.uri.contains("digits=")
            && !op.uri.contains("period="),
        "{}",
        op.uri
    );
    assert_eq!(op.secret.len(), 32, "160 bits of base32");
    assert_eq!(op.recovery.len(), 10);
    // Taken, bad role, bad name: one line each, exit 2, nothing made.
    let again = cli(
        &d.config,
        &["operators", "create", "--name", "alice", "--role", "admin"],
    );
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("exists already"),
        "{}",
        stderr(&again)
    );
    let role = cli(
        &d.config,
        &["operators", "create", "--name", "bob", "--role", "root"],
    );
    assert_eq!(role.status.code(), Some(2));
    assert!(
        stderr(&role).contains("--role: \"root\" is not a role"),
        "{}",
        stderr(&role)
    );
    let name = cli(
        &d.config,
        &["operators", "create", "--name", "<b>", "--role", "viewer"],
    );
    assert_eq!(name.status.code(), Some(2));
    assert!(stderr(&name).contains("--name:"), "{}", stderr(&name));
    // The list shows names and roles, never a secret.
    let list = cli(&d.config, &["operators", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let text = stdout(&list);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("alice\toperator\t"), "{text}");
    assert!(!text.contains(&op.password) && !text.contains(&op.secret));
}

/// Who: an operator account with the viewer role (or a stolen viewer login). Worst case: it
/// acts on money or keys. Every console action checks the role on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_but_cannot_act() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let mut viewer = create_operator(&d.config, "val", "viewer");
    let cookie = console_login(&c, &d, &mut viewer).await;
    for p in [
        "/console/sessions",
        "/console/keys",
        "/console/credits",
        "/console/audit",
    ] {
        let (st, body) = page(&c, &d, &cookie, p).await;
        assert_eq!(st, 200, "{p}: {body}");
    }
    let token = csrf(&c, &d, &cookie).await;
    let before = key_count(&c, &d).await;
    let (st, body) = form(
        &c,
        &d,
        &cookie,
        "/console/keys",
        &[("csrf", &token), ("merchant", "demo")],
    )
    .await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("needs the admin role"), "{body}");
    assert_eq!(key_count(&c, &d).await, before, "no key was made");
    // Money: an unmatched credit the viewer may not assign.
    let (_, _, v) = post(
        &c,
        &d.url("/v1/upi/credits"),
        &key,
        json!({"source": "manual", "amount": "77.00", "utr": "733345678901"}),
        None,
    )
    .await;
    let credit = v["credit"]["id"].as_str().unwrap().to_owned();
    let (st, _) = form(
        &c,
        &d,
        &cookie,
        &format!("/console/credits/{credit}/assign"),
        &[("csrf", &token), ("session", "cs_x")],
    )
    .await;
    assert_eq!(st, 403);
    let (_, credits) = get(&c, &d.url("/v1/credits"), &key).await;
    assert_eq!(credits["data"][0]["status"], "unmatched", "{credits}");
    // The refusals are in the audit log.
    let log = audit_json(&c, &d, &cookie).await;
    assert!(
        has(&log, "val", "keys.create", "refused: needs the admin role"),
        "{log:?}"
    );
    assert!(
        has(
            &log,
            "val",
            "credits.assign",
            "refused: needs the operator role"
        ),
        "{log:?}"
    );
    // Logging out is every role's.
    let (st, _) = form(&c, &d, &cookie, "/console/logout", &[("csrf", &token)]).await;
    assert_eq!(st, 303);
    let (st, _) = page(&c, &d, &cookie, "/console/keys").await;
    assert_eq!(st, 303, "a logged-out cookie is no login");
}

/// Who: someone holding an operator's password (phished, reused) and a code they watched
/// being typed. Worst case: they log in. A wrong code and an already used one are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_replayed_totp_codes_are_refused() {
    let (d, _) = Daemon::started(&Opts::default());
    let c = client();
    let op = create_operator(&d.config, "carol", "operator");
    let (code, _) = totp_now(&op.secret);
    let wrong = if code == "123456" { "654321" } else { "123456" };
    let (st, cookie) = console_login_with(&c, &d, "carol", &op.password, wrong).await;
    assert_eq!((st, cookie), (401, None));
    let (st, first) = console_login_with(&c, &d, "carol", &op.password, &code).await;
    assert_eq!(st, 303);
    let first = first.unwrap();
    // The same code again (same step, seconds later): a replay.
    let (st, cookie) = console_login_with(&c, &d, "carol", &op.password, &code).await;
    assert_eq!((st, cookie), (401, None), "a used TOTP code logs in once");
    // A recovery code works once, typed loosely.
    let rc = op.recovery[0].to_uppercase();
    let (st, second) = console_login_with(&c, &d, "carol", &op.password, &rc).await;
    assert_eq!(st, 303);
    let (st, _) = console_login_with(&c, &d, "carol", &op.password, &op.recovery[0]).await;
    assert_eq!(st, 401, "a used recovery code is spent");
    // A right code with a wrong password is nothing.
    let (st, _) = console_login_with(&c, &d, "carol", "wrong-password", &op.recovery[1]).await;
    assert_eq!(st, 401);
    let log = audit_json(&c, &d, &first).await;
    assert!(
        has(&log, "carol", "login", "refused: wrong TOTP"),
        "{log:?}"
    );
    assert!(
        has(&log, "carol", "login", "refused: TOTP code replayed"),
        "{log:?}"
    );
    assert!(
        has(&log, "carol", "login", "ok: recovery code used"),
        "{log:?}"
    );
    assert!(
        has(&log, "carol", "login", "refused: wrong password"),
        "{log:?}"
    );
    assert!(second.is_some());
}

/// Logins are stored: they survive a restart; a revoked one (from another login) is refused at
/// once, and a non-admin cannot revoke another operator's login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_survive_a_restart_and_a_revoked_one_is_refused() {
    let (mut d, _) = Daemon::started(&Opts::default());
    let c = client();
    let mut dave = create_operator(&d.config, "dave", "operator");
    let mut erin = create_operator(&d.config, "erin", "operator");
    let a = console_login(&c, &d, &mut dave).await;
    let b = console_login(&c, &d, &mut dave).await;
    let e = console_login(&c, &d, &mut erin).await;
    assert_eq!(d.terminate(), Some(0));
    d.start();
    for cookie in [&a, &b, &e] {
        let (st, _) = page(&c, &d, cookie, "/console/sessions").await;
        assert_eq!(st, 200, "a login survives the restart");
    }
    let id_of = |cookie: &str| hex::encode(Sha256::digest(cookie.split_once('=').unwrap().1));
    let (_, list) = page(&c, &d, &a, "/console/operators").await;
    assert!(list.contains(&id_of(&b)), "dave sees his other login");
    assert!(!list.contains(&id_of(&e)), "not erin's");
    // erin cannot revoke dave's login; dave revokes his other one.
    let token_e = csrf(&c, &d, &e).await;
    let (st, _) = form(
        &c,
        &d,
        &e,
        &format!("/console/logins/{}/revoke", id_of(&b)),
        &[("csrf", &token_e)],
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = page(&c, &d, &b, "/console/sessions").await;
    assert_eq!(st, 200);
    let token_a = csrf(&c, &d, &a).await;
    let (st, _) = form(
        &c,
        &d,
        &a,
        &format!("/console/logins/{}/revoke", id_of(&b)),
        &[("csrf", &token_a)],
    )
    .await;
    assert_eq!(st, 303);
    let (st, _) = page(&c, &d, &b, "/console/sessions").await;
    assert_eq!(st, 303, "a revoked login is sent to the login page");
    let token_b_stale = token_a.clone();
    let (st, _) = form(&c, &d, &b, "/console/logout", &[("csrf", &token_b_stale)]).await;
    assert_eq!(st, 401, "a revoked login cannot post either");
    let (st, _) = page(&c, &d, &a, "/console/sessions").await;
    assert_eq!(st, 200, "the revoking login is untouched");
    let log = audit_json(&c, &d, &a).await;
    assert!(has(&log, "dave", "login.revoke", "ok"), "{log:?}");
}

/// Who: anyone who can reach the operator listener, guessing a password. Worst case: the
/// guessing goes on, or a restart resets the count. Five wrong passwords lock the account for
/// 15 minutes, durably: after a SIGKILL and restart the right password is still refused, until
/// an admin unlocks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_account_stays_locked_across_a_restart() {
    let (mut d, _) = Daemon::started(&Opts::default());
    let c = client();
    let mut frank = create_operator(&d.config, "frank", "operator");
    let mut admin = create_operator(&d.config, "root", "admin");
    for i in 0..5 {
        let (st, _) = console_login_with(&c, &d, "frank", "guess-guess", "000000").await;
        assert_eq!(st, 401, "attempt {i}");
    }
    let (code, _) = totp_now(&frank.secret);
    let (st, _) = console_login_with(&c, &d, "frank", &frank.password, &code).await;
    assert_eq!(st, 429, "locked, even with the right password and code");
    d.kill();
    d.start();
    let (st, _) = console_login_with(&c, &d, "frank", &frank.password, &code).await;
    assert_eq!(st, 429, "still locked after a SIGKILL and restart");
    // Another account from the same address is not locked.
    let root = console_login(&c, &d, &mut admin).await;
    let (_, ops) = page(&c, &d, &root, "/console/operators").await;
    assert!(ops.contains("locked until"), "{ops}");
    // The admin unlocks it from the console; frank logs in.
    let token = csrf(&c, &d, &root).await;
    let (st, _) = form(
        &c,
        &d,
        &root,
        "/console/operators/frank/unlock",
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(st, 303);
    console_login(&c, &d, &mut frank).await;
    let log = audit_json(&c, &d, &root).await;
    assert!(
        has(&log, "frank", "login", "refused: account locked"),
        "{log:?}"
    );
    assert!(has(&log, "root", "operator.unlock", "ok"), "{log:?}");
}

/// Each console action is in the audit log (who, when, what, from where, how it ended), shown
/// on the page and exported as CSV and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_each_action_and_exports() {
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let mut admin = create_operator(&d.config, "grace", "admin");
    let cookie = console_login(&c, &d, &mut admin).await;
    let token = csrf(&c, &d, &cookie).await;
    // Create a key, revoke it, assign a credit, export sessions.
    let (st, body) = form(
        &c,
        &d,
        &cookie,
        "/console/keys",
        &[("csrf", &token), ("merchant", "demo")],
    )
    .await;
    assert_eq!(st, 201, "{body}");
    // The key made from the console: the one the page showed once.
    let at = body.find("Key <code>").expect("the new key on the page") + 10;
    let made = body[at..].split('<').next().unwrap().to_owned();
    assert!(made.starts_with("key_"), "{made}");
    let (st, _) = form(
        &c,
        &d,
        &cookie,
        &format!("/console/keys/{made}/revoke"),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(st, 303);
    let (_, _, v) = post(
        &c,
        &d.url("/v1/upi/credits"),
        &key,
        json!({"source": "manual", "amount": "55.00", "utr": "755345678901"}),
        None,
    )
    .await;
    let credit = v["credit"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned();
    // A refused action is logged as refused: no such session.
    let (st, _) = form(
        &c,
        &d,
        &cookie,
        &format!("/console/credits/{credit}/assign"),
        &[("csrf", &token), ("session", "cs_nope")],
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = page(
        &c,
        &d,
        &cookie,
        "/console/exports/sessions.csv?merchant=demo",
    )
    .await;
    assert_eq!(st, 200);
    let log = audit_json(&c, &d, &cookie).await;
    assert!(has(&log, "grace", "login", "ok"), "{log:?}");
    assert!(has(&log, "grace", "keys.create", "ok"), "{log:?}");
    assert!(
        log.iter().any(|e| e["action"] == "keys.revoke"
            && e["target"] == made.as_str()
            && e["outcome"] == "ok"),
        "{log:?}"
    );
    assert!(
        has(&log, "grace", "credits.assign", "refused: no such"),
        "{log:?}"
    );
    assert!(has(&log, "grace", "export.sessions.csv", "ok"), "{log:?}");
    assert!(
        has(&log, "(admin token)", "operator.create", "ok: role admin"),
        "{log:?}"
    );
    // The CSV holds the same entries, oldest first, with a header.
    let r = c
        .get(format!("{}/console/audit.csv", d.admin))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("audit.csv")
    );
    let csv = r.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("id,at,operator,client,action,target,outcome")
    );
    // The CSV export itself is logged after it is made: one entry fewer than now.
    assert!(lines.clone().count() >= log.len(), "{csv}");
    assert!(
        csv.contains(&format!(",grace,127.0.0.1,keys.revoke,{made},ok")),
        "{csv}"
    );
    // The page shows them, newest first.
    let (st, html) = page(&c, &d, &cookie, "/console/audit").await;
    assert_eq!(st, 200);
    let revoke_at = html.find("keys.revoke").unwrap();
    let create_at = html.find("keys.create").unwrap();
    assert!(revoke_at < create_at, "newest first");
}

/// Behind an https public URL the login cookie is also `Secure` (never sent over plain HTTP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_cookie_is_secure_behind_an_https_public_url() {
    let mut d = Daemon::prepare_text(|dir| {
        config_text(dir, &Opts::default()).replace(
            "public_url = \"http://pay.test\"",
            "public_url = \"https://pay.test\"",
        )
    });
    d.start();
    let op = create_operator(&d.config, "ivy", "viewer");
    let (code, _) = totp_now(&op.secret);
    let r = client()
        .post(format!("{}/console/login", d.admin))
        .form(&[
            ("name", "ivy"),
            ("password", op.password.as_str()),
            ("code", &code),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("; Secure")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}

/// The printed password is replaced from the console: a wrong current password, a short or
/// mismatched new one change nothing; afterwards the old password is refused and the new works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replaces_the_printed_password() {
    let (d, _) = Daemon::started(&Opts::default());
    let c = client();
    let mut op = create_operator(&d.config, "judy", "viewer");
    let cookie = console_login(&c, &d, &mut op).await;
    let token = csrf(&c, &d, &cookie).await;
    let change = |current: String, new: &'static str, repeat: &'static str| {
        let (c, d, cookie, token) = (c.clone(), &d, cookie.clone(), token.clone());
        async move {
            form(
                &c,
                d,
                &cookie,
                "/console/account/password",
                &[
                    ("csrf", token.as_str()),
                    ("current", current.as_str()),
                    ("new", new),
                    ("repeat", repeat),
                ],
            )
            .await
        }
    };
    let (st, body) = change("not-it".into(), "a-new-password-1", "a-new-password-1").await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("current password is wrong"), "{body}");
    let (st, body) = change(op.password.clone(), "short", "short").await;
    assert_eq!(st, 400);
    assert!(body.contains("at least 12 characters"), "{body}");
    let (st, _) = change(op.password.clone(), "a-new-password-1", "a-new-password-2").await;
    assert_eq!(st, 400);
    let (st, _) = change(op.password.clone(), "a-new-password-1", "a-new-password-1").await;
    assert_eq!(st, 303);
    let old = op.password.clone();
    let (st, _) = console_login_with(&c, &d, "judy", &old, &op.recovery[0]).await;
    assert_eq!(st, 401, "the printed password no longer works");
    op.password = "a-new-password-1".into();
    console_login(&c, &d, &mut op).await;
    let log = audit_json(&c, &d, &cookie).await;
    assert!(
        has(&log, "judy", "account.password", "refused: wrong current"),
        "{log:?}"
    );
    assert!(has(&log, "judy", "account.password", "ok"), "{log:?}");
}
