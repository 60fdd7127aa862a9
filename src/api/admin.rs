//! The operator API, on its own listener, behind the admin token: API keys and read-only views.
//! The CLI talks to it while the daemon runs (the database file is locked then).

use std::sync::Arc;

use http::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::{ApiError, Code, op_error};
use super::extract::{object_body, query_pairs};
use super::{AppState, Req, Response, error_response, json_response};
use crate::domain::apikey::{Permission, key_json, new_key};
use crate::domain::view::{rfc3339, session_bytes};
use crate::store::{Outcome, WriteOp, write};

fn authorized(state: &AppState, req: &Req) -> bool {
    let presented = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    token_matches(state, presented)
}

/// Whether `presented` is the admin token (also the console's login check).
pub fn token_matches(state: &AppState, presented: &str) -> bool {
    let Some(expected) = state.admin_token.as_deref() else {
        return false;
    };
    // Comparing digests keeps the comparison's timing independent of the token.
    Sha256::digest(presented.as_bytes()) == Sha256::digest(expected.as_bytes())
}

pub async fn route(state: Arc<AppState>, req: Req) -> Response {
    let path = req.path.clone();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["healthz"]) => {
            return json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec());
        }
        // Probes and scrapers run without the token: nothing here is secret or changes state.
        ("GET", ["readyz"]) => return super::health::operator_readyz(&state),
        ("GET", ["metrics"]) => return super::health::metrics(&state),
        _ => {}
    }
    // The console authenticates with its own cookie (after a login with the admin token).
    if segs.first() == Some(&"console") {
        return super::console::route(&state, &req, &segs[1..]).await;
    }
    if !authorized(&state, &req) {
        return error_response(&ApiError::new(
            Code::AdminTokenInvalid,
            "the operator API needs Authorization: Bearer <admin token>",
        ));
    }
    handle(&state, &req, &segs)
        .await
        .unwrap_or_else(|e| error_response(&e))
}

async fn handle(state: &AppState, req: &Req, segs: &[&str]) -> Result<Response, ApiError> {
    match (req.method.as_str(), segs) {
        ("GET", ["admin", "v1", "keys"]) => {
            let pairs = query_pairs(&req.query, &["merchant"])?;
            let merchant = pairs
                .iter()
                .find(|(k, _)| k == "merchant")
                .map(|(_, v)| v.as_str());
            let keys = state.store.list_keys(merchant)?;
            let data: Vec<Value> = keys.iter().map(key_json).collect();
            ok(serde_json::json!({"object": "list", "data": data, "has_more": false}))
        }
        ("POST", ["admin", "v1", "keys"]) => create_key(state, req).await,
        ("POST", ["admin", "v1", "operators"]) => create_operator(state, req).await,
        ("GET", ["admin", "v1", "operators"]) => {
            let mut data = Vec::new();
            for (_, b) in
                state
                    .store
                    .records(crate::engine::operators::OPERATOR, None, 10_000, false)?
            {
                let o: crate::domain::operator::Operator =
                    serde_json::from_slice(&b).map_err(|e| {
                        ApiError::internal(format!("a stored operator is damaged: {e}"))
                    })?;
                data.push(operator_json(&o));
            }
            ok(serde_json::json!({"object": "list", "data": data, "has_more": false}))
        }
        ("POST", ["admin", "v1", "operators", name, "unlock"]) => {
            let entry = crate::domain::operator::AuditEntry::new(
                chrono::Utc::now().timestamp_millis(),
                "(admin token)",
                &client_label(state, req),
                "operator.unlock",
                name,
                "ok",
            );
            let op = WriteOp::UnlockOperator {
                name: (*name).to_owned(),
                audit: Box::new(entry),
            };
            match write(state.store.as_ref(), op, None).await? {
                Ok(_) => ok(serde_json::json!({"object": "operator_unlock", "name": name})),
                Err(e) => Err(op_error(&e).with_id(name)),
            }
        }
        ("POST", ["admin", "v1", "keys", id, "revoke"]) => {
            let out = write(
                state.store.as_ref(),
                WriteOp::RevokeKey {
                    key_id: (*id).to_owned(),
                    now_ms: chrono::Utc::now().timestamp_millis(),
                },
                None,
            )
            .await?;
            match out {
                Ok(Outcome::Key(k)) => {
                    state.keys.evict(&k.id);
                    ok(key_json(&k))
                }
                Ok(_) => Err(ApiError::internal("unexpected outcome")),
                Err(e) => Err(op_error(&e)),
            }
        }
        ("GET", ["admin", "v1", "sessions", id]) => {
            let s = state
                .store
                .session(id)?
                .ok_or_else(|| ApiError::not_found("checkout session", id))?;
            Ok(json_response(StatusCode::OK, session_bytes(&s)))
        }
        ("GET", ["admin", "v1", "events"]) => {
            let events = state.store.recent_events(1000)?;
            let data: Vec<Value> = events
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "id": e.id, "object": "event", "type": e.kind.as_str(),
                        "merchant": e.merchant_id, "livemode": e.livemode,
                        "created_at": rfc3339(e.created_at_ms), "notify_url": e.notify_url,
                        "data": {"object": e.data},
                    })
                })
                .collect();
            ok(serde_json::json!({"object": "list", "data": data, "has_more": false}))
        }
        ("POST", ["admin", "v1", "credits", id, "assign"]) => {
            let map = object_body(&req.body, &["session"])?;
            let session = map.get("session").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid(
                    Code::ParameterMissing,
                    "session",
                    "session (cs_…) is required",
                )
            })?;
            let op = WriteOp::AssignCredit {
                credit_id: (*id).to_owned(),
                session_id: session.to_owned(),
            };
            match write(state.store.as_ref(), op, None).await? {
                Ok(Outcome::Match(crate::store::MatchResult::Matched {
                    session,
                    payment_id,
                })) => ok(
                    serde_json::json!({"object": "credit_assignment", "session": session.id, "payment": payment_id, "status": session.status.as_str()}),
                ),
                Ok(_) => Err(ApiError::internal("unexpected outcome")),
                Err(e) => Err(op_error(&e).with_id(id)),
            }
        }
        ("POST", ["admin", "v1", "backup"]) => {
            let map = object_body(&req.body, &["path"])?;
            let path = map
                .get("path")
                .and_then(Value::as_str)
                .filter(|p| std::path::Path::new(p).is_absolute())
                .ok_or_else(|| {
                    ApiError::invalid(
                        Code::ParameterInvalid,
                        "path",
                        "path must be an absolute file path on the server",
                    )
                })?
                .to_owned();
            let Some(db) = state.database.as_ref().and_then(|h| h.get()) else {
                return Err(ApiError::new(
                    Code::BackupUnavailable,
                    "this store cannot be backed up online",
                ));
            };
            let rows = tokio::task::spawn_blocking(move || {
                crate::store::backup::backup(&db, std::path::Path::new(&path))
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::new(Code::BackupFailed, e))?;
            ok(serde_json::json!({"object": "backup", "rows": rows}))
        }
        ("GET", ["admin", "v1", "claims"]) => {
            let data: Vec<Value> = state
                .store
                .claim_queue(1000)?
                .into_iter()
                .map(|(credit, session, at)| {
                    serde_json::json!({"object": "claim", "credit": credit, "session": session, "claimed_at": rfc3339(at)})
                })
                .collect();
            ok(serde_json::json!({"object": "list", "data": data, "has_more": false}))
        }
        ("POST", ["admin", "v1", "credits", id, "reject"]) => {
            let map = object_body(&req.body, &["session"])?;
            let session = match map.get("session") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(ApiError::invalid(
                        Code::ParameterInvalid,
                        "session",
                        "session must be the id (cs_…) of the claiming session",
                    ));
                }
            };
            let op = WriteOp::RejectClaim {
                credit_id: (*id).to_owned(),
                session_id: session,
            };
            match write(state.store.as_ref(), op, None).await? {
                Ok(Outcome::Credit(c)) => ok(crate::store::credit_json(&c)),
                Ok(_) => Err(ApiError::internal("unexpected outcome")),
                Err(e) => Err(op_error(&e).with_id(id)),
            }
        }
        ("POST", ["admin", "v1", "credits", id, "return"]) => {
            let map = object_body(&req.body, &["reference"])?;
            let reference = super::extract::body_str(&map, "reference")?;
            let c = super::refunds::return_credit(state, id, reference).await?;
            ok(crate::store::credit_json(&c))
        }
        ("GET", ["admin", "v1", "refunds"]) => {
            let pairs = query_pairs(&req.query, &["status", "limit"])?;
            let mut q = crate::store::RefundQuery {
                limit: 100,
                ..Default::default()
            };
            for (k, v) in pairs {
                match k.as_str() {
                    "status" => {
                        q.status = Some(crate::domain::refund::RefundStatus::parse(&v).ok_or_else(
                            || {
                                ApiError::invalid(
                                    Code::ParameterInvalid,
                                    "status",
                                    "status must be pending, succeeded or failed",
                                )
                            },
                        )?)
                    }
                    "limit" => q.limit = super::extract::parse_limit(&v)?,
                    _ => {}
                }
            }
            let page = state.store.list_refunds(&q)?;
            let data: Vec<Value> = page
                .items
                .iter()
                .map(crate::domain::refund::refund_json)
                .collect();
            ok(serde_json::json!({"object": "list", "data": data, "has_more": page.has_more}))
        }
        ("POST", ["admin", "v1", "refunds", id, "succeed"]) => {
            let map = object_body(&req.body, &["tx_hash", "utr"])?;
            let r = super::refunds::succeed(
                state,
                id,
                super::extract::body_str(&map, "tx_hash")?,
                super::extract::body_str(&map, "utr")?,
            )
            .await?;
            ok(crate::domain::refund::refund_json(&r))
        }
        ("POST", ["admin", "v1", "refunds", id, "fail"]) => {
            let map = object_body(&req.body, &["reason"])?;
            let r =
                super::refunds::fail(state, id, super::extract::body_str(&map, "reason")?).await?;
            ok(crate::domain::refund::refund_json(&r))
        }
        ("GET", ["admin", "v1", "credits"]) => {
            let q = crate::store::CreditQuery {
                merchant_id: None,
                limit: 1000,
                ..Default::default()
            };
            let credits = state
                .store
                .list_credits(&q)?
                .map(|p| p.items)
                .unwrap_or_default();
            let data: Vec<Value> = credits.iter().map(crate::store::credit_json).collect();
            ok(serde_json::json!({"object": "list", "data": data, "has_more": false}))
        }
        _ => Err(ApiError::route_missing(&req.method, &req.path)),
    }
}

fn client_label(state: &AppState, req: &Req) -> String {
    super::limits::client_of(&state.config, req)
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// An operator as the operator API lists it (never its hashes or secret).
pub fn operator_json(o: &crate::domain::operator::Operator) -> Value {
    serde_json::json!({
        "object": "operator", "name": o.name, "role": o.role.as_str(),
        "created_at": rfc3339(o.created_at_ms), "recovery_codes_left": o.recovery_codes.len(),
    })
}

/// Creates an operator: the reply holds the password, the `otpauth://` URI and the recovery
/// codes, shown this once (only their hashes and the TOTP secret are stored).
async fn create_operator(state: &AppState, req: &Req) -> Result<Response, ApiError> {
    use crate::domain::operator::{AuditEntry, Role, new_operator, otpauth_uri, validate_name};
    let map = object_body(&req.body, &["name", "role"])?;
    let name = map
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(Code::ParameterMissing, "name", "name is required"))?
        .to_owned();
    validate_name(&name).map_err(|m| ApiError::invalid(Code::ParameterInvalid, "name", m))?;
    let role = map
        .get("role")
        .and_then(Value::as_str)
        .and_then(Role::parse)
        .ok_or_else(|| {
            ApiError::invalid(
                Code::ParameterInvalid,
                "role",
                "role must be viewer, operator or admin",
            )
        })?;
    let now = chrono::Utc::now().timestamp_millis();
    let made = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || new_operator(&name, role, now))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(e.to_string()))?
    };
    let (op, password, codes) = made;
    let uri = otpauth_uri(&op.totp_secret, &name, "paywatch")
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let entry = AuditEntry::new(
        now,
        "(admin token)",
        &client_label(state, req),
        "operator.create",
        &name,
        &format!("ok: role {}", role.as_str()),
    );
    let w = WriteOp::CreateOperator {
        operator: Box::new(op),
        audit: Box::new(entry),
    };
    match write(state.store.as_ref(), w, None).await? {
        Ok(Outcome::Operator(o)) => {
            let mut v = operator_json(&o);
            v["password"] = Value::from(password);
            v["otpauth_uri"] = Value::from(uri);
            v["recovery_codes"] = Value::from(codes);
            Ok(json_response(
                StatusCode::CREATED,
                serde_json::to_vec(&v).unwrap_or_default(),
            ))
        }
        Ok(_) => Err(ApiError::internal("unexpected outcome")),
        Err(e) => Err(op_error(&e)),
    }
}

fn ok(v: Value) -> Result<Response, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&v).unwrap_or_default(),
    ))
}

async fn create_key(state: &AppState, req: &Req) -> Result<Response, ApiError> {
    let map = object_body(&req.body, &["merchant", "livemode", "permissions"])?;
    let merchant = map.get("merchant").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid(Code::ParameterMissing, "merchant", "merchant is required")
    })?;
    if state.config.merchant(merchant).is_none() {
        return Err(ApiError::invalid(
            Code::ParameterInvalid,
            "merchant",
            format!("no merchant {merchant:?} in the configuration"),
        ));
    }
    let livemode = match map.get("livemode") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                Code::ParameterInvalid,
                "livemode",
                "livemode must be a boolean",
            ));
        }
    };
    let permissions = match map.get("permissions") {
        None | Some(Value::Null) => Permission::DEFAULT.to_vec(),
        Some(Value::String(s)) => Permission::parse_list(s)
            .map_err(|m| ApiError::invalid(Code::ParameterInvalid, "permissions", m))?,
        Some(Value::Array(a)) => {
            let joined: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
            if joined.len() != a.len() {
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    "permissions",
                    "permissions must be strings",
                ));
            }
            Permission::parse_list(&joined.join(","))
                .map_err(|m| ApiError::invalid(Code::ParameterInvalid, "permissions", m))?
        }
        Some(_) => {
            return Err(ApiError::invalid(
                Code::ParameterInvalid,
                "permissions",
                "permissions must be a list",
            ));
        }
    };
    let (key, secret, hash) = new_key(
        merchant,
        livemode,
        permissions,
        chrono::Utc::now().timestamp_millis(),
    );
    let out = write(
        state.store.as_ref(),
        WriteOp::CreateKey {
            key: Box::new(key),
            hash,
        },
        None,
    )
    .await?;
    match out {
        Ok(Outcome::Key(k)) => {
            let mut v = key_json(&k);
            v["secret"] = Value::String(secret);
            let mut r = json_response(
                StatusCode::CREATED,
                serde_json::to_vec(&v).unwrap_or_default(),
            );
            *r.status_mut() = StatusCode::CREATED;
            Ok(r)
        }
        Ok(_) => Err(ApiError::internal("unexpected outcome")),
        Err(e) => Err(op_error(&e)),
    }
}
