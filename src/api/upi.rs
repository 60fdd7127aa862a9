//! `POST /v1/upi/credits`: bank credit alerts fed in (raw SMS, or entered by hand), parsed by the
//! bank templates and matched like any observed payment. `GET /v1/credits`: what matched nothing,
//! and what was ignored and why.

use http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::{ApiError, Code, op_error};
use super::extract::{object_body, parse_limit, query_pairs};
use super::{AppState, Req, Response, json_response};
use crate::config::{IngestFormat, Merchant};
use crate::domain::apikey::ApiKey;
use crate::domain::money::parse_units;
use crate::domain::validate;
use crate::store::{WriteOp, credit_json, write};
use crate::watch::upi::ingest::{self, Alert, IngestError, Recorded};

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
            Code::ParameterInvalid,
            k,
            format!("{k} must be a string"),
        )),
    }
}

/// The first key that appears twice in one JSON object anywhere in `body`, if any. serde_json
/// keeps the last of duplicate keys while other parsers keep the first, so a body with both
/// could mean one thing to a proxy or log and another to paywatch: it is refused instead.
fn duplicate_key(body: &[u8]) -> Option<String> {
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    struct Dup(Option<String>);
    struct DupVisitor;
    impl<'de> Visitor<'de> for DupVisitor {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(Dup(d)) = seq.next_element::<Dup>()? {
                found = found.or(d);
            }
            Ok(found)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut found = None;
            while let Some(k) = map.next_key::<String>()? {
                let Dup(inner) = map.next_value::<Dup>()?;
                if found.is_none() && !seen.insert(k.clone()) {
                    found = Some(k);
                }
                found = found.or(inner);
            }
            Ok(found)
        }
    }
    impl<'de> Deserialize<'de> for Dup {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(DupVisitor).map(Dup)
        }
    }
    serde_json::from_slice::<Dup>(body).ok().and_then(|d| d.0)
}

/// Refuses a JSON body with a duplicate key (400 naming the key).
fn no_duplicate_keys(body: &[u8]) -> Result<(), ApiError> {
    match duplicate_key(body) {
        Some(k) => Err(ApiError::invalid(
            Code::ParameterDuplicate,
            &k,
            format!("{k} appears more than once in the body"),
        )),
        None => Ok(()),
    }
}

/// A forwarder's alert must say who sent the SMS: without a sender any text could pass for a
/// bank's (the sender id is what ties an SMS to a bank).
fn sender_required(sender: Option<String>, field: &str) -> Result<String, ApiError> {
    sender
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                Code::ParameterMissing,
                field,
                format!("{field} (the SMS sender id, e.g. VM-HDFCBK) is required"),
            )
        })
}

/// How long a SmsForwarder `sign` is accepted: it covers only the timestamp, not the content,
/// so the window is short and each `sign` is accepted once.
const SMSFORWARDER_WINDOW_MS: i64 = 5 * 60 * 1000;

/// The SmsForwarder `sign`s seen within the window, per source: a replay within it is refused.
/// In memory: a restart forgets it (the window still bounds a replay to five minutes).
static SEEN_SIGNS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, i64>>> =
    std::sync::LazyLock::new(Default::default);

/// Records `sign` for `source` at `now`; false when it was already seen within the window.
fn first_use(source: &str, sign: &str, now: i64) -> bool {
    let Ok(mut seen) = SEEN_SIGNS.lock() else {
        return false;
    };
    seen.retain(|_, at| now.saturating_sub(*at) <= 2 * SMSFORWARDER_WINDOW_MS);
    seen.insert(format!("{source}\n{sign}"), now).is_none()
}

/// Parses and validates an API-key ingest body (`sms` or `manual`) into an alert, received at
/// `now_ms` unless it says when. Pure, so it can be fuzzed.
pub fn parse_alert(body: &[u8], now_ms: i64) -> Result<Alert, ApiError> {
    let map = object_body(body, FIELDS)?;
    no_duplicate_keys(body)?;
    let source = str_field(&map, "source", 20)?.ok_or_else(|| {
        ApiError::invalid(
            Code::ParameterMissing,
            "source",
            "source is required: sms or manual",
        )
    })?;
    let received_at_ms = match str_field(&map, "received_at", 40)? {
        Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
            .map(|d| d.timestamp_millis())
            .map_err(|_| {
                ApiError::invalid(
                    Code::ParameterInvalid,
                    "received_at",
                    "received_at must be an RFC 3339 time",
                )
            })?,
        None => now_ms,
    };
    Ok(match source.as_str() {
        "sms" => Alert {
            source,
            sender: str_field(&map, "sender", 40)?,
            text: Some(str_field(&map, "text", 2000)?.ok_or_else(|| {
                ApiError::invalid(
                    Code::ParameterMissing,
                    "text",
                    "text (the SMS as received) is required",
                )
            })?),
            manual: None,
            received_at_ms,
        },
        "manual" => {
            let amount = str_field(&map, "amount", 20)?.ok_or_else(|| {
                ApiError::invalid(
                    Code::ParameterMissing,
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
                        Code::ParameterInvalid,
                        "amount",
                        "amount must be a positive rupee amount with at most 2 decimals",
                    )
                })?;
            let utr = str_field(&map, "utr", 40)?;
            if let Some(u) = &utr
                && !(u.len() == 12 && u.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    "utr",
                    "utr must be the 12-digit UPI reference",
                ));
            }
            Alert {
                source,
                sender: None,
                text: None,
                manual: Some((paise, utr)),
                received_at_ms,
            }
        }
        other => {
            return Err(ApiError::invalid(
                Code::ParameterInvalid,
                "source",
                format!("source {other:?} is not one of sms, manual"),
            ));
        }
    })
}

/// `POST /v1/upi/credits` with an API key (`credits:write`): `sms` or `manual`.
pub async fn ingest(state: &AppState, key: &ApiKey, req: &Req) -> Result<Response, ApiError> {
    let merchant = state
        .config
        .merchant(&key.merchant_id)
        .ok_or_else(|| ApiError::unauthenticated("unknown merchant"))?;
    let alert = parse_alert(&req.body, chrono::Utc::now().timestamp_millis())?;
    record(state, merchant, key.livemode, alert).await
}

/// Judges and records `alert` (see `watch::upi::ingest`), answered as `upi_credit_result`.
async fn record(
    state: &AppState,
    merchant: &Merchant,
    livemode: bool,
    alert: Alert,
) -> Result<Response, ApiError> {
    let store = state.store.as_ref();
    let recorded = ingest::process(store, state.upi.as_deref(), merchant, livemode, alert)
        .await
        .map_err(ingest_error)?;
    ok(match recorded {
        Recorded::Matched {
            session,
            payment,
            utr,
        } => paid("matched", &session, &payment, json!(utr)),
        Recorded::Reversed {
            session,
            payment,
            utr,
        } => paid("reversed", &session, &payment, json!(utr)),
        Recorded::Duplicate { existing, utr } => json!({
            "object": "upi_credit_result", "outcome": "duplicate", "existing": existing, "utr": utr,
        }),
        Recorded::Unmatched { credit } => json!({
            "object": "upi_credit_result", "outcome": "unmatched", "credit": credit_json(&credit),
        }),
        Recorded::Ignored { reason, credit } => json!({
            "object": "upi_credit_result", "outcome": "ignored", "reason": reason, "credit": credit_json(&credit),
        }),
    })
}

/// A result naming the session and payment an alert paid (or reversed).
fn paid(outcome: &str, session: &str, payment: &str, utr: Value) -> Value {
    json!({
        "object": "upi_credit_result", "outcome": outcome, "session": session,
        "payment": payment, "utr": utr,
    })
}

fn ingest_error(e: IngestError) -> ApiError {
    match e {
        IngestError::NoUpiMethod => ApiError::new(Code::PaymentMethodUnavailable, e.to_string()),
        IngestError::ParserUnavailable => ApiError::new(Code::ParserUnavailable, e.to_string()),
        IngestError::Store(e) => e.into(),
        IngestError::Refused(e) => op_error(&e),
        IngestError::UnknownMerchant(_) | IngestError::Unexpected(_) => {
            ApiError::internal(e.to_string())
        }
    }
}

/// The ingest token a forwarder presents, if any.
pub fn presented_token(req: &Req) -> Option<String> {
    if let Some(t) = url::form_urlencoded::parse(req.query.as_bytes()).find(|(k, _)| k == "token") {
        return Some(t.1.into_owned());
    }
    req.headers
        .get("x-paywatch-token")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

fn eq_ct(a: &[u8], b: &[u8]) -> bool {
    // Digests first, so the comparison's time does not depend on where they differ.
    Sha256::digest(a) == Sha256::digest(b)
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::Mac;
    let Ok(mut m) = hmac::Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn forged(why: &str) -> ApiError {
    ApiError::new(
        Code::SignatureInvalid,
        format!("the forwarder's signature does not verify: {why}"),
    )
}

/// Milliseconds from a forwarder's timestamp (seconds or milliseconds, number or string).
fn stamp_ms(v: Option<&Value>) -> Option<i64> {
    let n = match v? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some(if n < 100_000_000_000 {
        n.saturating_mul(1000)
    } else {
        n
    })
}

/// `POST /v1/upi/credits` from a forwarder app with its ingest token. Its credits pay only live
/// sessions (a forwarder reports real bank SMS).
pub async fn ingest_with_token(
    state: &AppState,
    req: &Req,
    token: &str,
) -> Result<Response, ApiError> {
    let src = state
        .config
        .ingest
        .iter()
        .find(|s| eq_ct(s.token.as_bytes(), token.as_bytes()))
        .ok_or_else(|| ApiError::unauthenticated("unknown ingest token"))?;
    let merchant = state
        .config
        .merchant(&src.merchant)
        .ok_or_else(|| ApiError::unauthenticated("unknown merchant"))?;
    let key = src.signing_key.as_deref().unwrap_or_default().as_bytes();
    let now = chrono::Utc::now().timestamp_millis();
    let bad = |m: &str| ApiError::new(Code::BodyInvalid, format!("{}: {m}", src.name));
    let alert = match src.format {
        IngestFormat::Sms => {
            let v: Value =
                serde_json::from_slice(&req.body).map_err(|e| bad(&format!("not JSON: {e}")))?;
            no_duplicate_keys(&req.body)?;
            Alert {
                source: "sms".into(),
                sender: Some(sender_required(
                    v["sender"].as_str().map(str::to_owned),
                    "sender",
                )?),
                text: Some(v["text"].as_str().ok_or_else(|| bad("no text"))?.to_owned()),
                manual: None,
                received_at_ms: v["received_at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map_or(now, |d| d.timestamp_millis()),
            }
        }
        IngestFormat::SmsGateway => {
            let ts = req
                .headers
                .get("x-timestamp")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| forged("no X-Timestamp"))?;
            let sig = req
                .headers
                .get("x-signature")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| forged("no X-Signature"))?;
            let secs: i64 = ts
                .trim()
                .parse()
                .map_err(|_| forged("X-Timestamp is not unix seconds"))?;
            if (now / 1000).saturating_sub(secs).saturating_abs() > 300 {
                return Err(forged("X-Timestamp is more than 5 minutes from now"));
            }
            let expected = hex::encode(hmac_sha256(key, &[&req.body, ts.as_bytes()]));
            if !eq_ct(
                expected.as_bytes(),
                sig.trim().to_ascii_lowercase().as_bytes(),
            ) {
                return Err(forged("X-Signature"));
            }
            let v: Value =
                serde_json::from_slice(&req.body).map_err(|e| bad(&format!("not JSON: {e}")))?;
            no_duplicate_keys(&req.body)?;
            if v["event"] != "sms:received" {
                return ok(
                    json!({"object": "upi_credit_result", "outcome": "ignored", "reason": "not an sms:received event"}),
                );
            }
            let p = &v["payload"];
            Alert {
                source: "sms".into(),
                sender: Some(sender_required(
                    p["phoneNumber"]
                        .as_str()
                        .or(p["sender"].as_str())
                        .map(str::to_owned),
                    "payload.phoneNumber",
                )?),
                text: Some(
                    p["message"]
                        .as_str()
                        .ok_or_else(|| bad("no payload.message"))?
                        .to_owned(),
                ),
                manual: None,
                received_at_ms: p["receivedAt"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map_or(now, |d| d.timestamp_millis()),
            }
        }
        IngestFormat::SmsToUrl => {
            let v: Value =
                serde_json::from_slice(&req.body).map_err(|e| bad(&format!("not JSON: {e}")))?;
            no_duplicate_keys(&req.body)?;
            let text = v["text"].as_str().ok_or_else(|| bad("no text"))?;
            let received_at_ms = stamp_ms(v.get("receivedStamp")).unwrap_or(now);
            match notification_from(&v) {
                Some(package) => {
                    notification_alert(package, v["title"].as_str(), text, received_at_ms)
                }
                None => Alert {
                    source: "sms".into(),
                    sender: Some(sender_required(
                        v["from"].as_str().map(str::to_owned),
                        "from",
                    )?),
                    text: Some(text.to_owned()),
                    manual: None,
                    received_at_ms,
                },
            }
        }
        IngestFormat::Smsforwarder => {
            let mut from = None;
            let mut content = None;
            let mut timestamp = None;
            let mut sign = None;
            let mut title = None;
            for (k, v) in url::form_urlencoded::parse(&req.body) {
                match k.as_ref() {
                    "title" => title = Some(v.into_owned()),
                    "from" => from = Some(v.into_owned()),
                    "content" => content = Some(v.into_owned()),
                    "timestamp" => timestamp = Some(v.into_owned()),
                    "sign" => sign = Some(v.into_owned()),
                    _ => {}
                }
            }
            let ts = timestamp.ok_or_else(|| forged("no timestamp"))?;
            let sign = sign.ok_or_else(|| forged("no sign"))?;
            let ms = stamp_ms(Some(&Value::String(ts.clone())))
                .ok_or_else(|| forged("timestamp is not a number"))?;
            if now.saturating_sub(ms).saturating_abs() > SMSFORWARDER_WINDOW_MS {
                return Err(forged("timestamp is more than 5 minutes from now"));
            }
            // The app signs like DingTalk: base64(HMAC-SHA256(secret, "{timestamp}\n{secret}")),
            // URL-encoded once more inside the form.
            let expected = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                hmac_sha256(key, &[ts.as_bytes(), b"\n", key]),
            );
            let once: String = url::form_urlencoded::parse(format!("s={sign}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            if !(eq_ct(expected.as_bytes(), sign.as_bytes())
                || eq_ct(expected.as_bytes(), once.as_bytes()))
            {
                return Err(forged("sign"));
            }
            // The content is not signed: a captured request could be replayed with other text,
            // so each sign is accepted once (within its short window).
            if !first_use(&src.name, &expected, now) {
                return Err(forged("this sign was already used (a replay)"));
            }
            let content = content.ok_or_else(|| bad("no content"))?;
            match from.as_deref() {
                // SmsForwarder reports an app notification with the package name as `from`.
                Some(pkg) if crate::watch::upi::apps::looks_like_package(pkg) => {
                    notification_alert(pkg, title.as_deref(), &content, ms)
                }
                _ => Alert {
                    source: "sms".into(),
                    sender: Some(sender_required(from, "from")?),
                    text: Some(content),
                    manual: None,
                    received_at_ms: ms,
                },
            }
        }
    };
    if alert
        .text
        .as_ref()
        .is_some_and(|t| t.chars().count() > 2000)
    {
        return Err(bad("the text is longer than 2000 characters"));
    }
    // Authenticated: the operator console shows when each forwarder was last heard from.
    let seen = WriteOp::SetCursor {
        key: format!("seen:forwarder:{}", src.name),
        value: u64::try_from(now).unwrap_or(0),
    };
    if let Err(e) = write(state.store.as_ref(), seen, None).await {
        tracing::warn!(error = %e, source = %src.name, "could not record the forwarder's last contact");
    }
    record(state, merchant, true, alert).await
}

/// The package name of a forwarded app notification ("SMS to URL forwarder" fork: `package`
/// or `packageName`, or a package name in `from`), if the body is one.
fn notification_from(v: &Value) -> Option<&str> {
    v["package"]
        .as_str()
        .or(v["packageName"].as_str())
        .or(v["from"]
            .as_str()
            .filter(|f| crate::watch::upi::apps::looks_like_package(f)))
}

/// A forwarded app notification: title and text joined, judged by the merchant-app rules.
fn notification_alert(
    package: &str,
    title: Option<&str>,
    text: &str,
    received_at_ms: i64,
) -> Alert {
    let text = match title.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => format!("{t}\n{text}"),
        None => text.to_owned(),
    };
    Alert {
        source: "notification".into(),
        sender: Some(package.trim().to_owned()),
        text: Some(text),
        manual: None,
        received_at_ms,
    }
}

/// `GET /v1/credits?status=&limit=&starting_after=`: this merchant's and mode's credits, newest
/// first; `status=ignored` lists the ignored alerts, which are kept apart.
pub fn list(state: &AppState, key: &ApiKey, req: &Req) -> Result<Response, ApiError> {
    let mut status = None;
    let mut limit = 20;
    let mut starting_after = None;
    for (k, v) in query_pairs(&req.query, &["status", "limit", "starting_after"])? {
        match k.as_str() {
            "status"
                if matches!(
                    v.as_str(),
                    "unmatched" | "ignored" | "assigned" | "returned"
                ) =>
            {
                status = Some(v)
            }
            "status" => {
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    "status",
                    "status must be unmatched, ignored, assigned or returned",
                ));
            }
            "limit" => limit = parse_limit(&v)?,
            "starting_after" => starting_after = Some(v),
            _ => {}
        }
    }
    let q = crate::store::CreditQuery {
        merchant_id: Some(key.merchant_id.clone()),
        livemode: key.livemode,
        limit,
        starting_after: starting_after.clone(),
        status,
    };
    let Some(page) = state.store.list_credits(&q)? else {
        return Err(ApiError::invalid(
            Code::ParameterInvalid,
            "starting_after",
            format!(
                "no such credit in this list: {}",
                starting_after.unwrap_or_default()
            ),
        ));
    };
    let data: Vec<Value> = page.items.iter().map(credit_json).collect();
    ok(json!({"object": "list", "data": data, "has_more": page.has_more, "url": "/v1/credits"}))
}
