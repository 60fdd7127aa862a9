//! `/v1/events`, `/v1/webhook_endpoints` and `/v1/webhook_secret`.

use http::StatusCode;
use serde_json::{Value, json};

use super::error::{ApiError, Code, op_error};
use super::extract::{object_body, parse_limit, query_pairs};
use super::{AppState, Req, Response, json_response};
use crate::domain::apikey::ApiKey;
use crate::domain::event::{Event, EventType};
use crate::domain::ids::{looks_like, new_id};
use crate::domain::validate;
use crate::domain::view::{event_json, rfc3339};
use crate::domain::webhook::{Delivery, SigningSecret, WebhookEndpoint, new_secret};
use crate::notify::ssrf;
use crate::store::{EventQuery, Outcome, WriteOp, write};

fn ok(status: StatusCode, v: Value) -> Result<Response, ApiError> {
    Ok(json_response(
        status,
        serde_json::to_vec(&v).unwrap_or_default(),
    ))
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "object": "webhook_delivery",
        "url": d.url,
        "endpoint": d.endpoint_id,
        "status": d.state,
        "next_attempt_at": d.next_attempt_ms.map(rfc3339),
        "attempts": d.attempts.iter().map(|a| json!({
            "at": rfc3339(a.at_ms), "status_code": a.status, "latency_ms": a.latency_ms, "error": a.error,
        })).collect::<Vec<_>>(),
    })
}

fn endpoint_json(ep: &WebhookEndpoint, secret: Option<&str>) -> Value {
    let mut v = json!({
        "id": ep.id, "object": "webhook_endpoint", "livemode": ep.livemode, "url": ep.url,
        "events": ep.events, "description": ep.description, "created_at": rfc3339(ep.created_at_ms),
    });
    if let Some(s) = secret {
        v["secret"] = Value::String(s.to_owned());
    }
    if let Some(a) = &ep.api_version {
        v["api_version"] = Value::String(a.clone());
    }
    v
}

fn secrets_json(secrets: &[SigningSecret], livemode: bool) -> Value {
    json!({
        "object": "webhook_secret",
        "livemode": livemode,
        "secret": secrets.first().map(|s| s.secret.as_str()),
        "previous": secrets.iter().skip(1).map(|s| json!({
            "secret": s.secret, "expires_at": s.expires_at_ms.map(rfc3339),
        })).collect::<Vec<_>>(),
    })
}

pub async fn list_events(state: &AppState, key: &ApiKey, req: &Req) -> Result<Response, ApiError> {
    let mut q = EventQuery {
        merchant_id: key.merchant_id.clone(),
        livemode: key.livemode,
        limit: 20,
        ..EventQuery::default()
    };
    for (k, v) in query_pairs(&req.query, &["limit", "type", "starting_after"])? {
        match k.as_str() {
            "limit" => q.limit = parse_limit(&v)?,
            "type" => {
                q.kind = Some(EventType::parse(&v).ok_or_else(|| {
                    ApiError::invalid(
                        Code::ParameterInvalid,
                        "type",
                        format!("unknown event type {v:?}"),
                    )
                })?)
            }
            "starting_after" => q.starting_after = Some(v),
            _ => {}
        }
    }
    let page = state.store.list_events(&q)?;
    let data: Vec<Value> = page.items.iter().map(event_json).collect();
    ok(
        StatusCode::OK,
        json!({"object": "list", "data": data, "has_more": page.has_more, "url": "/v1/events"}),
    )
}

fn owned_event(state: &AppState, key: &ApiKey, id: &str) -> Result<Event, ApiError> {
    let missing = || ApiError::not_found("event", id);
    if !looks_like(id, "evt") {
        return Err(missing());
    }
    state
        .store
        .event(id)?
        .filter(|e| e.merchant_id == key.merchant_id && e.livemode == key.livemode)
        .ok_or_else(missing)
}

pub fn get_event(state: &AppState, key: &ApiKey, id: &str) -> Result<Response, ApiError> {
    let e = owned_event(state, key, id)?;
    let mut v = event_json(&e);
    let deliveries: Vec<Value> = state
        .store
        .event_deliveries(id)?
        .iter()
        .map(delivery_json)
        .collect();
    v["deliveries"] = Value::Array(deliveries);
    ok(StatusCode::OK, v)
}

pub async fn redeliver(
    state: &AppState,
    key: &ApiKey,
    req: &Req,
    id: &str,
) -> Result<Response, ApiError> {
    object_body(&req.body, &[])?;
    owned_event(state, key, id)?;
    let op = WriteOp::Redeliver {
        merchant_id: key.merchant_id.clone(),
        livemode: key.livemode,
        event_id: id.to_owned(),
    };
    match write(state.store.as_ref(), op, None).await? {
        Ok(Outcome::Deliveries(ds)) => ok(
            StatusCode::ACCEPTED,
            json!({"object": "list", "data": ds.iter().map(delivery_json).collect::<Vec<_>>(), "has_more": false}),
        ),
        Ok(_) => Err(ApiError::internal("unexpected outcome")),
        Err(e) => Err(op_error(&e)),
    }
}

/// Checks a destination URL: scheme, allow-list, and (unless allowed) that it does not resolve
/// to a private, loopback or metadata address.
pub async fn check_destination(state: &AppState, param: &str, url: &str) -> Result<(), ApiError> {
    if state.config.webhooks.allow_private_targets {
        return Ok(());
    }
    ssrf::check_url(url).await.map_err(|why| {
        ApiError::invalid(
            Code::UrlNotAllowed,
            param,
            format!("{param} {why}; callbacks never go to loopback, private, link-local or metadata addresses (an operator can allow them with webhooks.allow_private_targets = true)"),
        )
    })
}

/// A webhook endpoint create request, validated.
pub struct EndpointParams {
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
}

/// Parses and validates a create body. Pure, so it can be fuzzed: the handler adds the SSRF
/// check (DNS) after it.
pub fn parse_endpoint(body: &[u8], allowed_domains: &[String]) -> Result<EndpointParams, ApiError> {
    let map = object_body(body, &["url", "events", "description"])?;
    let url = map
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(Code::ParameterMissing, "url", "url is required"))?
        .to_owned();
    validate::url("url", &url, allowed_domains)?;
    let events: Vec<String> = match map.get("events") {
        None | Some(Value::Null) => vec!["*".to_owned()],
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut out = Vec::new();
            for it in items {
                let name = it.as_str().unwrap_or_default();
                if name != "*" && EventType::parse(name).is_none() {
                    return Err(ApiError::invalid(
                        Code::ParameterInvalid,
                        "events",
                        format!("unknown event type {name:?}; use event type names or \"*\""),
                    ));
                }
                out.push(name.to_owned());
            }
            out
        }
        Some(_) => {
            return Err(ApiError::invalid(
                Code::ParameterInvalid,
                "events",
                "events must be a non-empty array of event types, or [\"*\"]",
            ));
        }
    };
    let description = match map.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            validate::text("description", s, 500)?;
            Some(s.clone())
        }
        Some(_) => {
            return Err(ApiError::invalid(
                Code::ParameterInvalid,
                "description",
                "description must be a string",
            ));
        }
    };
    Ok(EndpointParams {
        url,
        events,
        description,
    })
}

pub async fn create_endpoint(
    state: &AppState,
    key: &ApiKey,
    req: &Req,
    allowed_domains: &[String],
) -> Result<Response, ApiError> {
    let EndpointParams {
        url,
        events,
        description,
    } = parse_endpoint(&req.body, allowed_domains)?;
    check_destination(state, "url", &url).await?;
    let secret = new_secret();
    let ep = WebhookEndpoint {
        id: new_id("we"),
        merchant_id: key.merchant_id.clone(),
        livemode: key.livemode,
        url,
        events,
        description,
        secrets: vec![SigningSecret {
            secret: secret.clone(),
            expires_at_ms: None,
        }],
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        api_version: super::stripe::version(req)?,
    };
    match write(
        state.store.as_ref(),
        WriteOp::CreateEndpoint {
            endpoint: Box::new(ep),
        },
        None,
    )
    .await?
    {
        Ok(Outcome::Endpoint(ep)) => ok(StatusCode::CREATED, endpoint_json(&ep, Some(&secret))),
        Ok(_) => Err(ApiError::internal("unexpected outcome")),
        Err(e) => Err(op_error(&e)),
    }
}

pub fn list_endpoints(state: &AppState, key: &ApiKey) -> Result<Response, ApiError> {
    let eps = state.store.endpoints(&key.merchant_id, key.livemode)?;
    let data: Vec<Value> = eps.iter().map(|e| endpoint_json(e, None)).collect();
    ok(
        StatusCode::OK,
        json!({"object": "list", "data": data, "has_more": false, "url": "/v1/webhook_endpoints"}),
    )
}

pub fn get_endpoint(state: &AppState, key: &ApiKey, id: &str) -> Result<Response, ApiError> {
    let ep = state
        .store
        .endpoint(id)?
        .filter(|e| e.merchant_id == key.merchant_id && e.livemode == key.livemode)
        .ok_or_else(|| ApiError::not_found("webhook endpoint", id))?;
    ok(StatusCode::OK, endpoint_json(&ep, None))
}

/// How long the previous secret keeps signing after a rotation (`expires_in`, default 24 h).
fn old_valid_until(req: &Req) -> Result<i64, ApiError> {
    let map = object_body(&req.body, &["expires_in"])?;
    let secs = match map.get("expires_in") {
        None | Some(Value::Null) => 86_400,
        Some(v) => v.as_u64().filter(|s| *s <= 7 * 86_400).ok_or_else(|| {
            ApiError::invalid(
                Code::ParameterInvalid,
                "expires_in",
                "expires_in must be 0 to 604800 seconds",
            )
        })?,
    };
    Ok(chrono::Utc::now().timestamp_millis() + i64::try_from(secs).unwrap_or(0) * 1000)
}

pub async fn endpoint_action(
    state: &AppState,
    key: &ApiKey,
    req: &Req,
    id: &str,
    rotate: bool,
) -> Result<Response, ApiError> {
    let secret = new_secret();
    let op = if rotate {
        WriteOp::RotateEndpointSecret {
            merchant_id: key.merchant_id.clone(),
            livemode: key.livemode,
            id: id.to_owned(),
            secret: secret.clone(),
            old_valid_until_ms: old_valid_until(req)?,
        }
    } else {
        WriteOp::DeleteEndpoint {
            merchant_id: key.merchant_id.clone(),
            livemode: key.livemode,
            id: id.to_owned(),
        }
    };
    match write(state.store.as_ref(), op, None).await? {
        Ok(Outcome::Endpoint(ep)) if rotate => {
            ok(StatusCode::OK, endpoint_json(&ep, Some(&secret)))
        }
        Ok(Outcome::Endpoint(ep)) => {
            let mut v = endpoint_json(&ep, None);
            v["deleted"] = Value::Bool(true);
            ok(StatusCode::OK, v)
        }
        Ok(_) => Err(ApiError::internal("unexpected outcome")),
        Err(e) => Err(op_error(&e).with_id(id)),
    }
}

/// The default secret of the key's own mode: a test key never sees the live one.
pub fn get_secret(state: &AppState, key: &ApiKey) -> Result<Response, ApiError> {
    ok(
        StatusCode::OK,
        secrets_json(
            &state
                .store
                .merchant_secrets(&key.merchant_id, key.livemode)?,
            key.livemode,
        ),
    )
}

pub async fn rotate_secret(
    state: &AppState,
    key: &ApiKey,
    req: &Req,
) -> Result<Response, ApiError> {
    let op = WriteOp::RotateMerchantSecret {
        merchant_id: key.merchant_id.clone(),
        livemode: key.livemode,
        secret: new_secret(),
        old_valid_until_ms: old_valid_until(req)?,
    };
    match write(state.store.as_ref(), op, None).await? {
        Ok(Outcome::Secrets(s)) => ok(StatusCode::OK, secrets_json(&s, key.livemode)),
        Ok(_) => Err(ApiError::internal("unexpected outcome")),
        Err(e) => Err(op_error(&e)),
    }
}
