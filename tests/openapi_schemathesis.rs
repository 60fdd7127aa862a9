//! docs/openapi.json against the real daemon: schemathesis drives every operation and finds no
//! server error and no answer that breaks the document; and the document lists exactly the
//! routes the router serves, so it cannot go stale silently.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, Opts, client};
use serde_json::Value;

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");

fn spec() -> Value {
    let text = std::fs::read_to_string(SPEC).expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// (METHOD, /path/{param}) of every operation in the document.
fn documented(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Every route of the public listener, from its route table (`src/api/routes.rs`), the one
/// place the dispatcher reads.
fn routed() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for r in paywatch::api::routes::PUBLIC {
        let t = r.path.to_owned();
        assert!(
            t.starts_with("/v1/")
                || t.starts_with("/c/")
                || t.starts_with("/l/")
                || t == "/healthz"
                || t == "/readyz"
                || t.starts_with("/assets/"),
            "cannot place the route {} {t}; teach this test where it lives",
            r.method
        );
        out.insert((r.method.to_owned(), t));
    }
    out
}

#[test]
fn every_route_in_the_router_is_documented_and_nothing_else() {
    let spec = spec();
    let doc = documented(&spec);
    let code = routed();
    assert!(code.len() > 20, "found too few routes in src/api: {code:?}");
    let undocumented: Vec<_> = code.difference(&doc).collect();
    let unrouted: Vec<_> = doc.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from docs/openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "docs/openapi.json documents routes the router does not serve: {unrouted:?}"
    );
}

/// Over HTTP: each documented operation is routed (never 404 `route_missing`) and each other
/// method on a documented path is (404 `route_missing`), on the real binary.
#[tokio::test]
async fn every_documented_operation_is_served_and_other_methods_are_not() {
    let spec = spec();
    let doc = documented(&spec);
    let (d, key) = Daemon::started(&Opts::default());
    let c = client();
    let fill = |p: &str| {
        p.replace("/c/{id}", "/c/cs_0000000000000000")
            .replace("sessions/{id}", "sessions/cs_0000000000000000")
            .replace("events/{id}", "events/evt_0000000000000000")
            .replace("endpoints/{id}", "endpoints/we_0000000000000000")
            .replace("/l/{id}", "/l/pl_0000000000000000")
            .replace("payment_links/{id}", "payment_links/pl_0000000000000000")
            .replace("{name}", "checkout.css")
    };
    let paths: BTreeSet<&String> = doc.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let url = d.url(&fill(path));
            let r = c
                .request(method.parse().expect("method"), &url)
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body("{}")
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            let is_stream = r
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let body: Value = if is_stream {
                Value::Null
            } else {
                r.json().await.unwrap_or(Value::Null)
            };
            let route_missing = status == 404 && body["error"]["code"] == "route_missing";
            let listed = doc.contains(&(method.to_owned(), path.clone()));
            assert_eq!(
                route_missing, !listed,
                "{method} {path}: {status} {body}: documented = {listed}"
            );
        }
    }
}

/// `schemathesis` from PyPI, or a loud failure saying how to get it.
fn schemathesis() -> String {
    let bin = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    match Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => bin,
        _ => panic!(
            "schemathesis is not installed: `python3 -m pip install schemathesis` (scripts/test does it); \
             this test never skips"
        ),
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let bin = schemathesis();
    let (d, key) = Daemon::started(&Opts::default());
    let report = d.dir.join("schemathesis-junit.xml");
    let started = Instant::now();
    let out = Command::new(&bin)
        .args(["--config-file", CONFIG, "run", SPEC, "--url"])
        .arg(&d.base)
        .args(["--header", &format!("Authorization: Bearer {key}")])
        // /readyz answers 503 by design while a chain has no node behind it, as the test
        // daemon's chains do; schemathesis counts any 5xx as a server error. Its 200 and 503
        // bodies are checked in tests/chain_watcher.rs against a real chain going down and up.
        .args(["--exclude-path", "/readyz"])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            "--max-examples",
            "40",
            "--seed",
            "8",
            "--workers",
            "2",
            "--request-timeout",
            "5",
            "--generation-database",
            "none",
            "--generation-with-security-parameters",
            "false",
            "--no-color",
            "--report",
            "junit",
            "--report-junit-path",
        ])
        .arg(&report)
        .env("NO_COLOR", "1")
        .current_dir(&d.dir)
        .output()
        .expect("run schemathesis");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}\nschemathesis took {elapsed:?}");
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}\ndaemon log:\n{}",
        out.status,
        d.stderr()
    );
    // It really ran every operation of the document.
    let ops = documented(&spec()).len();
    let junit = std::fs::read_to_string(&report).expect("junit report");
    let cases = junit.matches("<testcase").count();
    assert!(
        cases >= ops,
        "schemathesis ran {cases} operations, the document has {ops}:\n{stdout}"
    );
    assert!(!junit.contains("<failure"), "{junit}");
    assert!(
        elapsed < Duration::from_secs(120),
        "schemathesis took {elapsed:?}"
    );
}
