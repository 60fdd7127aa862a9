//! `/v1/refunds` and `/v1/balance` for a merchant key, and the operator's refund and credit
//! actions (shared by the operator API and the console).

use http::StatusCode;
use serde_json::Value;

use super::error::{ApiError, Code, op_error, wire_code};
use super::extract::{object_body, opt_string, parse_limit, query_pairs};
use super::idempotency;
use super::sessions::metadata_field;
use super::{AppState, Req, Response, json_response};
use crate::domain::apikey::ApiKey;
use crate::domain::ids::{looks_like, new_id};
use crate::domain::money::{minor_to_base, parse_units};
use crate::domain::refund::{
    self, Refund, RefundError, RefundStatus, balance_row_json, currency_totals, refund_json,
    refund_method,
};
use crate::domain::session::Session;
use crate::domain::validate;
use crate::store::{Credit, OpError, Outcome, RefundQuery, WriteOp, write};

const CREATE_FIELDS: &[&str] = &["session", "amount", "method", "reason", "metadata"];

fn owned_session(state: &AppState, key: &ApiKey, id: &str) -> Result<Session, ApiError> {
    let missing = || {
        let mut e = ApiError::not_found("checkout session", id);
        e.param = Some("session".into());
        e
    };
    if !looks_like(id, "cs") {
        return Err(missing());
    }
    state
        .store
        .session(id)?
        .filter(|s| s.merchant_id == key.merchant_id && s.livemode == key.livemode)
        .ok_or_else(missing)
}

/// A refund error found before the write (from a read of the session), with its parameter.
fn early(e: RefundError) -> ApiError {
    match e {
        RefundError::NotPaid => ApiError::new(wire_code(e.code()), e.to_string()),
        RefundError::MethodAmbiguous(_) | RefundError::MethodNotPaid(_) => {
            ApiError::invalid(wire_code(e.code()), "method", e.to_string())
        }
        _ => ApiError::invalid(wire_code(e.code()), "amount", e.to_string()),
    }
}

/// `POST /v1/refunds`.
pub async fn create(state: &AppState, key: &ApiKey, req: &Req) -> Result<Response, ApiError> {
    let idem = idempotency::from_request(key, req)?;
    if let Some(r) = idempotency::replay_if_used(state, &idem).await? {
        return Ok(r);
    }
    let map = object_body(&req.body, CREATE_FIELDS)?;
    let session_id = match map.get("session") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                Code::ParameterMissing,
                "session",
                "session (the cs_… id of a paid checkout session) is required",
            ));
        }
        Some(_) => {
            return Err(ApiError::invalid(
                Code::ParameterInvalid,
                "session",
                "session must be a string (cs_…)",
            ));
        }
    };
    let method = opt_string(&map, "method", 64)?;
    let reason = opt_string(&map, "reason", 500)?;
    let metadata = metadata_field(&map)?;
    let s = owned_session(state, key, &session_id)?;
    let (method_name, decimals) = refund_method(&s, method.as_deref()).map_err(early)?;
    let amount_base = match map.get("amount") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) => Some(
            parse_units(a, decimals)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| {
                    ApiError::invalid(
                        Code::ParameterInvalid,
                        "amount",
                        format!(
                            "amount must be a positive decimal string with at most {decimals} places (the unit of {method_name})"
                        ),
                    )
                })?,
        ),
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .filter(|v| *v > 0)
                .and_then(|v| minor_to_base(v, decimals))
                .ok_or_else(|| {
                    ApiError::invalid(
                        Code::ParameterInvalid,
                        "amount",
                        "amount as a number must be a positive integer in minor units (paise, cents)",
                    )
                })?,
        ),
        Some(_) => {
            return Err(ApiError::invalid(
                Code::ParameterInvalid,
                "amount",
                "amount must be a decimal string (\"12.50\") or an integer in minor units",
            ));
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    let r = Refund {
        id: new_id("re"),
        merchant_id: key.merchant_id.clone(),
        livemode: key.livemode,
        session_id: s.id.clone(),
        method: method_name.clone(),
        currency: s.currency,
        amount_base: 0,
        decimals,
        status: RefundStatus::Pending,
        reason,
        metadata,
        tx_hash: None,
        utr: None,
        failure_reason: None,
        created_at_ms: now,
        updated_at_ms: now,
        seq: 0,
        price: None,
    };
    let op = WriteOp::CreateRefund {
        refund: Box::new(r),
        method: Some(method_name),
        amount_base,
    };
    idempotency::run(state, idem, op, render_refund).await
}

fn render_refund(r: &Result<Outcome, OpError>) -> (StatusCode, Vec<u8>, bool) {
    match r {
        Ok(Outcome::Refund(r)) => (
            StatusCode::CREATED,
            serde_json::to_vec(&refund_json(r)).unwrap_or_default(),
            true,
        ),
        Ok(_) => {
            let e = ApiError::internal("unexpected outcome");
            (e.status, e.body(), false)
        }
        Err(e) => {
            let e = op_error(e);
            let keep = e.status != StatusCode::SERVICE_UNAVAILABLE;
            (e.status, e.body(), keep)
        }
    }
}

fn ok(v: &Value) -> Result<Response, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(v).unwrap_or_default(),
    ))
}

/// `GET /v1/refunds/{id}`.
pub fn get(state: &AppState, key: &ApiKey, id: &str) -> Result<Response, ApiError> {
    let r = state
        .store
        .refund(id)?
        .filter(|r| r.merchant_id == key.merchant_id && r.livemode == key.livemode)
        .ok_or_else(|| ApiError::not_found("refund", id))?;
    ok(&refund_json(&r))
}

/// `GET /v1/refunds?session=&status=&limit=&starting_after=`.
pub fn list(state: &AppState, key: &ApiKey, req: &Req) -> Result<Response, ApiError> {
    let pairs = query_pairs(
        &req.query,
        &["session", "status", "limit", "starting_after"],
    )?;
    let mut q = RefundQuery {
        merchant_id: Some(key.merchant_id.clone()),
        livemode: key.livemode,
        limit: 20,
        ..RefundQuery::default()
    };
    for (k, v) in pairs {
        match k.as_str() {
            "session" => {
                owned_session(state, key, &v)?;
                q.session_id = Some(v);
            }
            "status" => {
                q.status = Some(RefundStatus::parse(&v).ok_or_else(|| {
                    ApiError::invalid(
                        Code::ParameterInvalid,
                        "status",
                        "status must be pending, succeeded or failed",
                    )
                })?)
            }
            "limit" => q.limit = parse_limit(&v)?,
            "starting_after" => {
                state
                    .store
                    .refund(&v)?
                    .filter(|r| r.merchant_id == key.merchant_id && r.livemode == key.livemode)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            Code::ParameterInvalid,
                            "starting_after",
                            format!("no such refund: {v}"),
                        )
                    })?;
                q.starting_after = Some(v);
            }
            _ => {}
        }
    }
    let page = state.store.list_refunds(&q)?;
    let data: Vec<Value> = page.items.iter().map(refund_json).collect();
    ok(&serde_json::json!({
        "object": "list", "data": data, "has_more": page.has_more, "url": "/v1/refunds",
    }))
}

/// `GET /v1/balance`.
pub fn balance(state: &AppState, key: &ApiKey, req: &Req) -> Result<Response, ApiError> {
    query_pairs(&req.query, &[])?;
    let rows = state.store.ledger(&key.merchant_id, key.livemode)?;
    let methods: Vec<Value> = rows.iter().map(|(m, e)| balance_row_json(m, e)).collect();
    ok(&serde_json::json!({
        "object": "balance",
        "livemode": key.livemode,
        "methods": methods,
        "currencies": currency_totals(&rows),
    }))
}

// --- the operator's actions -----------------------------------------------------------------

/// A transaction hash: `0x` and 64 hex digits (EVM), or 64 hex digits (TRON).
fn valid_tx_hash(h: &str) -> bool {
    let hex = h.strip_prefix("0x").unwrap_or(h);
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A bank reference: UPI's 12-digit UTR, or a NEFT/IMPS/RTGS reference (6 to 35 letters and
/// digits).
fn valid_utr(u: &str) -> bool {
    (6..=35).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Marks a pending refund succeeded: a token refund needs the `tx_hash` of the transfer back,
/// a UPI refund the `utr` of the payment back.
pub async fn succeed(
    state: &AppState,
    id: &str,
    tx_hash: Option<&str>,
    utr: Option<&str>,
) -> Result<Refund, ApiError> {
    let r = state
        .store
        .refund(id)?
        .ok_or_else(|| ApiError::not_found("refund", id))?;
    let is_upi = r.method == "upi" || r.currency == crate::domain::method::Currency::Inr;
    let tx_hash = tx_hash.map(str::trim).filter(|s| !s.is_empty());
    let utr = utr.map(str::trim).filter(|s| !s.is_empty());
    let outcome = match (tx_hash, utr) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                Code::ParameterInvalid,
                "give either tx_hash or utr, not both",
            ));
        }
        (None, None) => {
            let p = if is_upi { "utr" } else { "tx_hash" };
            return Err(ApiError::invalid(
                Code::ParameterMissing,
                p,
                format!("{p} of the money sent back is required to mark a refund succeeded"),
            ));
        }
        (Some(h), None) => {
            if !valid_tx_hash(h) {
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    "tx_hash",
                    "tx_hash must be 0x followed by 64 hex digits",
                ));
            }
            refund::Outcome::Succeeded {
                tx_hash: Some(h.to_owned()),
                utr: None,
            }
        }
        (None, Some(u)) => {
            if !valid_utr(u) {
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    "utr",
                    "utr must be 6 to 35 letters and digits (a UPI UTR has 12 digits)",
                ));
            }
            refund::Outcome::Succeeded {
                tx_hash: None,
                utr: Some(u.to_owned()),
            }
        }
    };
    finish(state, id, outcome).await
}

/// Marks a pending refund failed (the money never left), freeing its amount.
pub async fn fail(state: &AppState, id: &str, reason: Option<&str>) -> Result<Refund, ApiError> {
    let reason = reason
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                Code::ParameterMissing,
                "reason",
                "reason (why the refund failed) is required",
            )
        })?;
    validate::text("reason", reason, 500)?;
    finish(
        state,
        id,
        refund::Outcome::Failed {
            reason: reason.to_owned(),
        },
    )
    .await
}

async fn finish(state: &AppState, id: &str, outcome: refund::Outcome) -> Result<Refund, ApiError> {
    let op = WriteOp::FinishRefund {
        refund_id: id.to_owned(),
        outcome,
    };
    match write(state.store.as_ref(), op, None).await? {
        Ok(Outcome::Refund(r)) => Ok(*r),
        Ok(_) => Err(ApiError::internal("unexpected outcome")),
        Err(e) => Err(op_error(&e).with_id(id)),
    }
}

/// Marks an unmatched credit returned to its payer, with the operator's reference.
pub async fn return_credit(
    state: &AppState,
    id: &str,
    reference: Option<&str>,
) -> Result<Credit, ApiError> {
    let reference = reference
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                Code::ParameterMissing,
                "reference",
                "reference (the UTR or transaction of the money sent back) is required",
            )
        })?;
    validate::text("reference", reference, 200)?;
    let op = WriteOp::ReturnCredit {
        credit_id: id.to_owned(),
        reference: reference.to_owned(),
    };
    match write(state.store.as_ref(), op, None).await? {
        Ok(Outcome::Credit(c)) => Ok(*c),
        Ok(_) => Err(ApiError::internal("unexpected outcome")),
        Err(e) => Err(op_error(&e).with_id(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_checked() {
        assert!(valid_tx_hash(&format!("0x{}", "ab".repeat(32))));
        assert!(!valid_tx_hash("0x1234"));
        assert!(valid_utr("412345678901"));
        assert!(!valid_utr("41234-5678901"));
        assert!(!valid_utr("123"));
    }
}
