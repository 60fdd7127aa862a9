//! `POST /v1/upi/credits`: bank credit alerts fed in (raw SMS, or entered by hand), parsed by the
//! bank templates and matched like any observed payment. `GET /v1/credits`: what matched nothing,
//! and what was ignored and why.

use http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::{ApiError, op_error};
use super::sessions::{object_body, parse_limit};
use super::{AppState, Req, Response, json_response, query_pairs};
use crate::domain::apikey::ApiKey;
use crate::domain::ids::new_id;
use crate::domain::method::{Method, Rail};
use crate::domain::money::parse_units;
use crate::domain::validate;
use crate::store::{Credit, MatchResult, Observed, Outcome, WriteOp, credit_json, write};

const FIELDS: &[&str] = &[
    "source",
    "sender",
    "text",
    "received_at",
    "amount",
    "utr",
    "payer_vpa",
];

fn ok(v: Value) -> Result<Response, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&v).unwrap_or_default(),
    ))
}

fn str_field(
    map: &serde_json::Map<String, Value>,
    k: &str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match map.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            validate::text(k, s, max)?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ApiError::invalid(
            "parameter_invalid",
            k,
            format!("{k} must be a string"),
        )),
    }
}

/// What became of one alert.
enum Verdict {
    Money { paise: u64, utr: Option<String> },
    Ignored(String),
}

pub async fn ingest(state: &AppState, key: &ApiKey, req: &Req) -> Result<Response, ApiError> {
    let merchant = state
        .config
        .merchant(&key.merchant_id)
        .ok_or_else(|| ApiError::unauthenticated("unknown merchant"))?;
    let method: &Method = merchant
        .methods
        .iter()
        .find(|m| matches!(m.rail, Rail::Upi { .. }))
        .ok_or_else(|| {
            ApiError::bad_request(
                "payment_method_unavailable",
                "this merchant has no UPI method",
            )
        })?;
    let Rail::Upi { vpa, .. } = &method.rail else {
        return Err(ApiError::internal("UPI method without a VPA"));
    };
    let map = object_body(&req.body, FIELDS)?;
    let source = str_field(&map, "source", 20)?.ok_or_else(|| {
        ApiError::invalid(
            "parameter_missing",
            "source",
            "source is required: sms or manual",
        )
    })?;
    let sender = str_field(&map, "sender", 40)?;
    let text = str_field(&map, "text", 2000)?;
    let received_at_ms = match str_field(&map, "received_at", 40)? {
        Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
            .map(|d| d.timestamp_millis())
            .map_err(|_| {
                ApiError::invalid(
                    "parameter_invalid",
                    "received_at",
                    "received_at must be an RFC 3339 time",
                )
            })?,
        None => chrono::Utc::now().timestamp_millis(),
    };
    let verdict = match source.as_str() {
        "sms" => {
            let text = text.clone().ok_or_else(|| {
                ApiError::invalid(
                    "parameter_missing",
                    "text",
                    "text (the SMS as received) is required",
                )
            })?;
            let parser = state.upi.as_ref().ok_or_else(|| {
                ApiError::unavailable(
                    "parser_unavailable",
                    "the UPI alert templates failed to load",
                )
            })?;
            match &sender {
                Some(s) if parser.bank_for_sender(s).is_none() => {
                    Verdict::Ignored(format!("sender {s:?} is not a known bank sender id"))
                }
                _ => {
                    let a = parser.parse(sender.as_deref(), &text);
                    match (a.is_money(), a.amount_paise) {
                        (true, Some(p)) => Verdict::Money {
                            paise: p,
                            utr: a.utr,
                        },
                        _ => Verdict::Ignored(
                            a.ignore_reason().unwrap_or("not a credit alert").to_owned(),
                        ),
                    }
                }
            }
        }
        "manual" => {
            let amount = str_field(&map, "amount", 20)?.ok_or_else(|| {
                ApiError::invalid(
                    "parameter_missing",
                    "amount",
                    "amount is required, e.g. \"149.87\"",
                )
            })?;
            let paise = parse_units(&amount, 2)
                .ok()
                .and_then(|p| u64::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "parameter_invalid",
                        "amount",
                        "amount must be a positive rupee amount with at most 2 decimals",
                    )
                })?;
            let utr = str_field(&map, "utr", 40)?;
            if let Some(u) = &utr
                && !(u.len() == 12 && u.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(ApiError::invalid(
                    "parameter_invalid",
                    "utr",
                    "utr must be the 12-digit UPI reference",
                ));
            }
            Verdict::Money { paise, utr }
        }
        other => {
            return Err(ApiError::invalid(
                "parameter_invalid",
                "source",
                format!("source {other:?} is not one of sms, manual"),
            ));
        }
    };
    let destination = method.destination_key(vpa);
    match verdict {
        Verdict::Ignored(reason) => {
            let credit = Credit {
                id: new_id("cr"),
                merchant_id: Some(merchant.id.clone()),
                method: Some(method.name.clone()),
                destination,
                amount_base: 0,
                decimals: 2,
                reference: format!("ignored:{}", new_id("al")),
                utr: None,
                tx_hash: None,
                livemode: key.livemode,
                received_at_ms,
                status: "ignored".into(),
                reason: reason.clone(),
                source: Some(source),
                sender,
            };
            match write(
                state.store.as_ref(),
                WriteOp::RecordIgnored {
                    credit: Box::new(credit),
                },
                None,
            )
            .await?
            {
                Ok(Outcome::Match(MatchResult::Unmatched { credit })) => ok(json!({
                    "object": "upi_credit_result", "outcome": "ignored", "reason": reason, "credit": credit_json(&credit),
                })),
                Ok(_) => Err(ApiError::internal("unexpected outcome")),
                Err(e) => Err(op_error(&e)),
            }
        }
        Verdict::Money { paise, utr } => {
            // A credit is unique by UTR; without one, by the alert itself (the same SMS twice
            // is one credit; a different SMS with the same amount is another).
            let reference = match &utr {
                Some(u) => format!("upi:{u}"),
                None => {
                    let mut h = Sha256::new();
                    h.update(sender.as_deref().unwrap_or("").as_bytes());
                    h.update(b"\n");
                    h.update(text.as_deref().unwrap_or("").as_bytes());
                    h.update(received_at_ms.to_le_bytes());
                    format!("upi-noref:{}", hex::encode(&h.finalize()[..16]))
                }
            };
            let observed = Observed {
                destination,
                amount_base: u128::from(paise),
                decimals: 2,
                reference,
                livemode: key.livemode,
                utr: utr.clone(),
                tx_hash: None,
                log_index: None,
                block_number: None,
                confirmations: 0,
                confirmed: true,
                received_at_ms,
                owner: Some((merchant.id.clone(), method.name.clone())),
                only_session: None,
                source: Some(source),
                sender,
            };
            match write(
                state.store.as_ref(),
                WriteOp::Observe(Box::new(observed)),
                None,
            )
            .await?
            {
                Ok(Outcome::Match(MatchResult::Matched {
                    session,
                    payment_id,
                })) => ok(json!({
                    "object": "upi_credit_result", "outcome": "matched", "session": session.id,
                    "payment": payment_id, "utr": utr,
                })),
                Ok(Outcome::Match(MatchResult::Duplicate { existing })) => ok(json!({
                    "object": "upi_credit_result", "outcome": "duplicate", "existing": existing, "utr": utr,
                })),
                Ok(Outcome::Match(MatchResult::Unmatched { credit })) => ok(json!({
                    "object": "upi_credit_result", "outcome": "unmatched", "credit": credit_json(&credit),
                })),
                Ok(_) => Err(ApiError::internal("unexpected outcome")),
                Err(e) => Err(op_error(&e)),
            }
        }
    }
}

/// `GET /v1/credits?status=unmatched|ignored`: this merchant's and mode's credits, newest first.
pub fn list(state: &AppState, key: &ApiKey, req: &Req) -> Result<Response, ApiError> {
    let mut status = None;
    let mut limit = 20;
    for (k, v) in query_pairs(&req.query, &["status", "limit"])? {
        match k.as_str() {
            "status" if matches!(v.as_str(), "unmatched" | "ignored") => status = Some(v),
            "status" => {
                return Err(ApiError::invalid(
                    "parameter_invalid",
                    "status",
                    "status must be unmatched or ignored",
                ));
            }
            "limit" => limit = parse_limit(&v)?,
            _ => {}
        }
    }
    let mut data: Vec<Value> = state
        .store
        .credits(100_000)?
        .into_iter()
        .rev()
        .filter(|c| {
            c.merchant_id.as_deref() == Some(key.merchant_id.as_str()) && c.livemode == key.livemode
        })
        .filter(|c| status.as_ref().is_none_or(|s| &c.status == s))
        .map(|c| credit_json(&c))
        .collect();
    let has_more = data.len() > limit;
    data.truncate(limit);
    ok(json!({"object": "list", "data": data, "has_more": has_more, "url": "/v1/credits"}))
}
