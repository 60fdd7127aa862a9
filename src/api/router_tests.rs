//! In-process router tests: both listeners' filters built over a real redb store in a temporary
//! directory and driven with `warp::test`, no binary, no sockets. They pin what the route table
//! decides (access before route, the permission check, names and labels) and that no process
//! global is left in the way: two states in one process keep their own admin tokens.
//! The real-binary suites in `tests/` stay the authority on everything else.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::Value;

use super::{AppState, admin_routes, public_routes};
use crate::store::{RedbStore, SharedStore};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
public_url = "http://pay.test"

[storage]
path = "STORE"

[log]
level = "warn"

[[merchants]]
id = "demo"
name = "Demo Store"
allowed_domains = ["shop.example"]

[merchants.methods.upi]
vpa = "demo@okbank"
"#;

/// A state over a fresh store, with `admin_token` as the operator listener's token.
fn state(dir: &tempfile::TempDir, admin_token: &str) -> Arc<AppState> {
    let db = dir.path().join("paywatch.redb");
    let text = CONFIG.replace("STORE", &db.display().to_string());
    let config = crate::config::parse("router_tests.toml", &text, &[]).expect("config");
    let store: SharedStore = Arc::new(RedbStore::open(&db, 3_600_000).expect("store"));
    AppState::new(Arc::new(config), store, None, Some(admin_token.to_owned()))
}

async fn public(
    state: &Arc<AppState>,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut r = warp::test::request()
        .method(method)
        .path(path)
        .header("host", "pay.test")
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    let res = r.reply(&public_routes(state.clone())).await;
    let v = serde_json::from_slice(res.body()).unwrap_or(Value::Null);
    (res.status().as_u16(), v)
}

async fn operator(
    state: &Arc<AppState>,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, Value) {
    let res = warp::test::request()
        .method(method)
        .path(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body)
        .reply(&admin_routes(state.clone()))
        .await;
    let v = serde_json::from_slice(res.body()).unwrap_or(Value::Null);
    (res.status().as_u16(), v)
}

/// A test-mode key for `demo` with `permissions`, made through the operator API.
async fn key(state: &Arc<AppState>, token: &str, permissions: &str) -> String {
    let body = format!(r#"{{"merchant": "demo", "permissions": "{permissions}"}}"#);
    let (status, v) = operator(state, "POST", "/admin/v1/keys", token, &body).await;
    assert_eq!(status, 201, "{v}");
    v["secret"].as_str().expect("secret").to_owned()
}

#[tokio::test]
async fn probes_answer_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(&dir, "adm_one");
    assert_eq!(public(&s, "GET", "/healthz", None, "").await.0, 200);
    let (status, v) = public(&s, "GET", "/nowhere", None, "").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("route_missing"))
    );
}

/// Under /v1 the key is checked before the path: an unknown route is 401 without a key and
/// 404 `route_missing` with one, so the route list cannot be probed anonymously.
#[tokio::test]
async fn v1_asks_for_the_key_before_saying_a_route_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(&dir, "adm_one");
    let (status, v) = public(&s, "GET", "/v1/nowhere", None, "").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("api_key_invalid"))
    );
    let k = key(&s, "adm_one", "sessions:read").await;
    let (status, v) = public(&s, "GET", "/v1/nowhere", Some(&k), "").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("route_missing"))
    );
    // A known path with a method it does not serve is missing too.
    let (status, v) = public(&s, "PUT", "/v1/checkout/sessions", Some(&k), "").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("route_missing"))
    );
}

/// The table's permission is enforced for every keyed row: a read-only key may list but not
/// create, refund or manage webhooks, and the refusal names the permission it lacks.
#[tokio::test]
async fn each_keyed_route_checks_its_permission_from_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(&dir, "adm_one");
    let k = key(&s, "adm_one", "sessions:read").await;
    assert_eq!(
        public(&s, "GET", "/v1/checkout/sessions", Some(&k), "")
            .await
            .0,
        200
    );
    for (method, path, needs) in [
        ("POST", "/v1/checkout/sessions", "sessions:write"),
        ("POST", "/v1/refunds", "refunds:write"),
        ("GET", "/v1/webhook_endpoints", "webhooks:write"),
        ("GET", "/v1/events", "events:read"),
        ("POST", "/v1/upi/credits", "credits:write"),
    ] {
        let (status, v) = public(&s, method, path, Some(&k), "{}").await;
        assert_eq!(status, 403, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "permission_denied");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(needs),
            "{method} {path}: {v}"
        );
    }
}

#[tokio::test]
async fn a_session_made_in_process_is_served_to_the_merchant_and_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(&dir, "adm_one");
    let k = key(&s, "adm_one", "sessions:read,sessions:write").await;
    let body = r#"{"amount": 49900, "currency": "inr", "success_url": "https://shop.example/ok"}"#;
    let (status, v) = public(&s, "POST", "/v1/checkout/sessions", Some(&k), body).await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    let (status, got) = public(
        &s,
        "GET",
        &format!("/v1/checkout/sessions/{id}"),
        Some(&k),
        "",
    )
    .await;
    assert_eq!((status, &got["id"]), (200, &v["id"]));
    let (status, page) = public(&s, "GET", &format!("/c/{id}/status"), None, "").await;
    assert_eq!(status, 200, "{page}");
    // Another merchant's id space is not this key's: a made-up id is a 404, not a 500.
    let (status, v) = public(
        &s,
        "GET",
        "/v1/checkout/sessions/cs_0000000000000000",
        Some(&k),
        "",
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );
}

/// The admin token lives in the state, not in a process global: two daemons' states in one
/// process each accept only their own token.
#[tokio::test]
async fn each_state_keeps_its_own_admin_token() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, two) = (state(&d1, "adm_one"), state(&d2, "adm_two"));
    assert_eq!(
        operator(&one, "GET", "/admin/v1/keys", "adm_one", "")
            .await
            .0,
        200
    );
    assert_eq!(
        operator(&two, "GET", "/admin/v1/keys", "adm_two", "")
            .await
            .0,
        200
    );
    let (status, v) = operator(&one, "GET", "/admin/v1/keys", "adm_two", "").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("admin_token_invalid"))
    );
    let (status, _) = operator(&two, "GET", "/admin/v1/keys", "adm_one", "").await;
    assert_eq!(status, 401);
}
