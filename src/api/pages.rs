//! `/c/{id}`: what the customer's browser talks to. No key: the unguessable session id is the
//! capability, so these answers never include e-mail, metadata or the notify_url.

use std::fmt::Write as _;

use http::{HeaderValue, StatusCode};
use rand::Rng;

use super::error::{ApiError, op_error};
use super::sessions::{display_amount, object_body};
use super::{AppState, Req, Response, error_response, json_response};
use crate::domain::ids::looks_like;
use crate::domain::money::{format_units, parse_units};
use crate::domain::session::Session;
use crate::domain::view::public_status;
use crate::store::{MatchResult, Observed, Outcome, WriteOp, write};

pub async fn route(state: &AppState, req: &Req, id: &str, rest: &[&str]) -> Response {
    let result = match (req.method.as_str(), rest) {
        ("GET", []) => page(state, id),
        ("GET", ["status"]) => status(state, id),
        ("POST", ["simulate"]) => simulate(state, req, id).await,
        _ => Err(ApiError::route_missing(&req.method, &req.path)),
    };
    result.unwrap_or_else(|e| error_response(&e))
}

fn load(state: &AppState, id: &str) -> Result<Session, ApiError> {
    if !looks_like(id, "cs") {
        return Err(ApiError::not_found("checkout session", id));
    }
    state
        .store
        .session(id)?
        .ok_or_else(|| ApiError::not_found("checkout session", id))
}

fn status(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let s = load(state, id)?;
    let mut r = json_response(
        StatusCode::OK,
        serde_json::to_vec(&public_status(&s)).unwrap_or_default(),
    );
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A minimal server-rendered page; the full checkout page replaces it (issue: hosted page).
fn page(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let s = load(state, id)?;
    let merchant = state
        .config
        .merchant(&s.merchant_id)
        .map_or("", |m| m.name.as_str());
    let mut h = String::with_capacity(2048);
    h.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if s.status.is_awaiting() {
        h.push_str("<meta http-equiv=\"refresh\" content=\"5\">");
    }
    let _ = write!(
        h,
        "<title>Pay {}</title></head><body>",
        html_escape(merchant)
    );
    if !s.livemode {
        h.push_str("<p role=\"status\"><strong>Test mode</strong>: no real money moves.</p>");
    }
    let _ = write!(
        h,
        "<h1>{}</h1><p>{}</p><p id=\"amount\">{}</p><p id=\"status\">Status: {} ({})</p>",
        html_escape(merchant),
        html_escape(s.description.as_deref().unwrap_or("")),
        html_escape(&display_amount(s.amount, s.currency)),
        s.status.as_str(),
        s.payment_status.as_str()
    );
    if s.status.is_awaiting() {
        for o in &s.payment_options {
            let _ = write!(
                h,
                "<section><h2>{}</h2><p>Pay exactly <strong>{}</strong> to <code>{}</code></p><p><a href=\"{}\">Open in app</a></p></section>",
                html_escape(&o.method),
                html_escape(&format_units(o.payable_base, o.decimals)),
                html_escape(&o.pay_to),
                html_escape(&o.uri)
            );
        }
        if !s.livemode {
            let _ = write!(
                h,
                "<form method=\"post\" action=\"/c/{}/simulate\"><button type=\"submit\">Simulate payment</button></form>",
                html_escape(&s.id)
            );
        }
    }
    h.push_str("</body></html>");
    let mut r = Response::new(h.into());
    let hs = r.headers_mut();
    hs.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    hs.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    hs.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    hs.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    hs.insert("cache-control", HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Pays a test session through the matcher, exactly as a watcher would report the money: the
/// payable amount (or `amount`, to rehearse partial and over payments) to the option's pay_to.
async fn simulate(state: &AppState, req: &Req, id: &str) -> Result<Response, ApiError> {
    let s = load(state, id)?;
    if s.livemode {
        return Err(ApiError::forbidden(
            "simulate pays test sessions only; this session is live",
        ));
    }
    let is_form = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let (method, amount) = if is_form {
        let mut method = None;
        let mut amount = None;
        for (k, v) in url::form_urlencoded::parse(&req.body) {
            match k.as_ref() {
                "method" if !v.is_empty() => method = Some(v.into_owned()),
                "amount" if !v.is_empty() => amount = Some(v.into_owned()),
                _ => {}
            }
        }
        (method, amount)
    } else {
        let map = object_body(&req.body, &["method", "amount"])?;
        let get = |k: &str| -> Result<Option<String>, ApiError> {
            match map.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(v)) => Ok(Some(v.clone())),
                Some(_) => Err(ApiError::invalid(
                    "parameter_invalid",
                    k,
                    format!("{k} must be a string"),
                )),
            }
        };
        (get("method")?, get("amount")?)
    };
    let option = match &method {
        Some(m) => s
            .payment_options
            .iter()
            .find(|o| &o.method == m)
            .ok_or_else(|| {
                ApiError::invalid(
                    "parameter_invalid",
                    "method",
                    format!("this session offers no method {m:?}"),
                )
            })?,
        None => s
            .payment_options
            .first()
            .ok_or_else(|| ApiError::bad_request("parameter_invalid", "no payment option"))?,
    };
    let amount_base = match &amount {
        Some(a) => parse_units(a, option.decimals)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| {
                ApiError::invalid(
                    "parameter_invalid",
                    "amount",
                    format!(
                        "amount must be a positive decimal with at most {} places",
                        option.decimals
                    ),
                )
            })?,
        None => option.payable_base,
    };
    let (reference, utr, tx_hash, log_index) = {
        let mut rng = rand::rng();
        match option.chain_id {
            None => {
                let utr: String = (0..12)
                    .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                    .collect();
                (format!("upi:{utr}"), Some(utr), None, None)
            }
            Some(chain) => {
                let bytes: [u8; 32] = rng.random();
                let tx = format!("0x{}", hex::encode(bytes));
                (format!("evm:{chain}:{tx}:0"), None, Some(tx), Some(0))
            }
        }
    };
    let observed = Observed {
        destination: option.destination.clone(),
        amount_base,
        decimals: option.decimals,
        reference,
        livemode: false,
        utr,
        tx_hash,
        log_index,
        block_number: None,
        confirmations: option.confirmations_required,
        confirmed: true,
        received_at_ms: chrono::Utc::now().timestamp_millis(),
        owner: Some((s.merchant_id.clone(), option.method.clone())),
        only_session: Some(s.id.clone()),
    };
    let out = write(
        state.store.as_ref(),
        WriteOp::Observe(Box::new(observed)),
        None,
    )
    .await?;
    let session = match out {
        Ok(Outcome::Match(MatchResult::Matched { session, .. })) => *session,
        Ok(_) => return Err(ApiError::internal("the simulated payment did not match")),
        Err(e) => return Err(op_error(&e)),
    };
    if is_form {
        let mut r = Response::new(Vec::new().into());
        *r.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(&format!("/c/{}", session.id)) {
            r.headers_mut().insert(http::header::LOCATION, v);
        }
        return Ok(r);
    }
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&public_status(&session)).unwrap_or_default(),
    ))
}
