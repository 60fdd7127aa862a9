//! Stripe's official libraries as paywatch clients. Wraps the merchant API (`/v1`): a request
//! is normalised before the handlers see it, and, when it carries a `Stripe-Version` header, its
//! response is reshaped as Stripe's libraries read it.
//!
//! Request side, for every client:
//! - form bodies (`application/x-www-form-urlencoded`, bracket notation) become the JSON value a
//!   JSON client would send, with the endpoint's integer fields read as integers;
//! - Stripe's names are aliases: `payment_method_types` of `payment_methods`, `enabled_events`
//!   of `events`; `mode=payment` (the only mode) and `expand[]` are accepted and dropped;
//! - in query strings `expand[]` is dropped and `created[gte]`/`created[lte]` are
//!   `created_gte`/`created_lte`.
//!
//! Response side, only with `Stripe-Version` (Stripe's libraries always send it; a JSON client
//! without it sees paywatch's contract unchanged): every timestamp (`*_at`) is Unix seconds,
//! `created` sits beside `created_at`, a checkout session has `url`, `amount_total` and
//! `payment_method_types`, a webhook endpoint `enabled_events` and `status`.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::error::{ApiError, Code};
use super::form::{self, FormError};
use super::{Req, Response};

/// The request header that selects Stripe's shapes.
pub const VERSION_HEADER: &str = "stripe-version";

/// The `Stripe-Version` a request sent, checked: Stripe's versions are a date with an optional
/// release name (`2026-10-28.endive`). Any such value selects the same shapes.
pub fn version(req: &Req) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers.get(VERSION_HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(
            Code::StripeVersionInvalid,
            "Stripe-Version",
            "Stripe-Version must be a Stripe API version such as 2026-10-28 or 2026-10-28.endive",
        )
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let (date, name) = s.split_once('.').unwrap_or((s, "x"));
    let date_ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let name_ok = (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase());
    if date_ok && name_ok {
        Ok(Some(s.to_owned()))
    } else {
        Err(bad())
    }
}

/// What one POST endpoint takes beyond plain strings.
struct Shape {
    /// Top-level fields that are integers (a form sends every value as a string).
    integers: &'static [&'static str],
    /// (Stripe's name, paywatch's name).
    aliases: &'static [(&'static str, &'static str)],
    /// Accepts `mode`, which must be `payment`.
    mode: bool,
}

const PLAIN: Shape = Shape {
    integers: &[],
    aliases: &[],
    mode: false,
};

fn shape(segs: &[&str]) -> Shape {
    match segs {
        ["v1", "checkout", "sessions"] => Shape {
            integers: &["amount", "expires_in"],
            aliases: &[("payment_method_types", "payment_methods")],
            mode: true,
        },
        ["v1", "refunds"] => Shape {
            integers: &["amount"],
            ..PLAIN
        },
        ["v1", "webhook_endpoints"] => Shape {
            aliases: &[("enabled_events", "events")],
            ..PLAIN
        },
        ["v1", "webhook_endpoints", _, "rotate_secret"] | ["v1", "webhook_secret", "rotate"] => {
            Shape {
                integers: &["expires_in"],
                ..PLAIN
            }
        }
        _ => PLAIN,
    }
}

fn form_error(e: &FormError) -> ApiError {
    let msg = e.to_string();
    match e.param() {
        Some(p) => ApiError::invalid(Code::BodyInvalidForm, p, msg),
        None => ApiError::new(Code::BodyInvalidForm, msg),
    }
}

/// A decimal integer as a form sends it (`14999`), within u64; anything else stays a string
/// and meets the same error a JSON client's string would.
fn integer(s: &str) -> Option<u64> {
    let ok = !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

/// The aliases a request used: (Stripe's name, paywatch's name).
type Aliases = Vec<(&'static str, &'static str)>;

/// Applies an endpoint's aliases and drops what is accepted but has no effect. Returns the
/// aliases used (to name them in errors). Changes nothing when none of them is present.
fn apply_aliases(map: &mut Map<String, Value>, shape: &Shape) -> Result<Aliases, ApiError> {
    let mut used = Vec::new();
    for &(theirs, ours) in shape.aliases {
        let Some(v) = map.remove(theirs) else {
            continue;
        };
        match map.get(ours) {
            Some(existing) if existing != &v => {
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    theirs,
                    format!(
                        "{theirs} and {ours} are both given with different values; {theirs} is an alias of {ours}: give one"
                    ),
                ));
            }
            _ => {
                map.insert(ours.to_owned(), v);
                used.push((theirs, ours));
            }
        }
    }
    if shape.mode
        && let Some(m) = map.remove("mode")
        && m != Value::String("payment".into())
    {
        return Err(ApiError::invalid(
            Code::ParameterInvalid,
            "mode",
            "mode must be payment: paywatch sessions take one payment (no subscription or setup mode)",
        ));
    }
    if let Some(x) = map.remove("expand") {
        let ok = match &x {
            Value::Array(items) => items.iter().all(Value::is_string),
            Value::Null => true,
            _ => false,
        };
        if !ok {
            return Err(ApiError::invalid(
                Code::ParameterInvalid,
                "expand",
                "expand must be an array of field names",
            ));
        }
    }
    Ok(used)
}

/// The request as the handlers expect it, or `None` when it is already that (a JSON client
/// using none of Stripe's names: its bytes reach the handlers untouched).
fn normalise(req: &Req, segs: &[&str]) -> Result<(Option<Req>, Aliases), ApiError> {
    let query = normalise_query(&req.query);
    let mut body: Option<Bytes> = None;
    let mut used = Vec::new();
    // Errors about a renamed query parameter name the one the client sent.
    if query.is_some() {
        for (theirs, ours) in [
            ("created[gte]", "created_gte"),
            ("created[lte]", "created_lte"),
        ] {
            let sent = url::form_urlencoded::parse(req.query.as_bytes()).any(|(k, _)| k == theirs);
            if sent {
                used.push((theirs, ours));
            }
        }
    }
    if req.method == http::Method::POST {
        let shape = shape(segs);
        let content_type = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let parsed = if form::is_form(content_type) {
            let mut map = form::parse(&req.body).map_err(|e| form_error(&e))?;
            for f in shape.integers {
                if let Some(Value::String(s)) = map.get(*f)
                    && let Some(n) = integer(s)
                {
                    map.insert((*f).to_owned(), Value::from(n));
                }
            }
            Some((map, true))
        } else if !mentions_stripe_names(&req.body, &shape) {
            // The hot path: a JSON body using none of Stripe's names is not parsed here.
            None
        } else {
            match serde_json::from_slice::<Value>(&req.body) {
                Ok(Value::Object(map)) => Some((map, false)),
                // Not an object: the handler gives its usual error.
                _ => None,
            }
        };
        if let Some((mut map, is_form)) = parsed {
            let aliased = shape
                .aliases
                .iter()
                .any(|(theirs, _)| map.contains_key(*theirs))
                || map.contains_key("expand")
                || (shape.mode && map.contains_key("mode"));
            if aliased {
                used = apply_aliases(&mut map, &shape)?;
            }
            if is_form || aliased {
                let v = form::canonical(&Value::Object(map));
                body = Some(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()));
            }
        }
    }
    if body.is_none() && query.is_none() {
        return Ok((None, used));
    }
    let mut headers = req.headers.clone();
    if body.is_some() {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    Ok((
        Some(Req {
            method: req.method.clone(),
            path: req.path.clone(),
            query: query.unwrap_or_else(|| req.query.clone()),
            headers,
            body: body.unwrap_or_else(|| req.body.clone()),
            peer: req.peer,
            authority: req.authority.clone(),
        }),
        used,
    ))
}

/// Whether a JSON body may use one of the names `apply_aliases` handles (a cheap scan of the
/// bytes; a false positive only costs a parse).
fn mentions_stripe_names(body: &[u8], shape: &Shape) -> bool {
    let has = |name: &str| body.windows(name.len()).any(|w| w == name.as_bytes());
    has("expand")
        || (shape.mode && has("mode"))
        || shape.aliases.iter().any(|(theirs, _)| has(theirs))
}

/// Drops `expand` and maps `created[gte]`/`created[lte]`; `None` when nothing changes.
fn normalise_query(query: &str) -> Option<String> {
    if !query.contains("expand") && !query.contains("created") {
        return None;
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let touched = pairs
        .iter()
        .any(|(k, _)| k == "expand" || k.starts_with("expand[") || k.starts_with("created["));
    if !touched {
        return None;
    }
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        if k == "expand" || k.starts_with("expand[") {
            continue;
        }
        let k = match k.as_str() {
            "created[gte]" => "created_gte",
            "created[lte]" => "created_lte",
            other => other,
        };
        out.append_pair(k, v);
    }
    Some(out.finish())
}

/// A keyed request read in Stripe's dialect (see the module doc): the version it asked for,
/// the request rewritten to paywatch's names when it used Stripe's, and which names it used.
pub struct Prepared {
    stripe: Option<String>,
    owned: Option<Req>,
    used: Aliases,
}

impl Prepared {
    /// The request the handler sees: the rewritten one, or the original.
    pub fn req<'a>(&'a self, original: &'a Req) -> &'a Req {
        self.owned.as_ref().unwrap_or(original)
    }
}

/// Reads the `Stripe-Version` header, a form body and Stripe's parameter names, before the
/// route's handler runs.
pub fn prepare(req: &Req, segs: &[&str]) -> Result<Prepared, ApiError> {
    let stripe = version(req)?;
    let (owned, used) = normalise(req, segs)?;
    Ok(Prepared {
        stripe,
        owned,
        used,
    })
}

/// The handler's answer in the dialect of the request: errors name the parameter the client
/// sent, and a request with `Stripe-Version` gets Stripe's shapes.
pub async fn finish(p: Prepared, result: Result<Response, ApiError>) -> Result<Response, ApiError> {
    let result = result.map_err(|mut e| {
        // Name the parameter the client sent, not paywatch's name for it.
        if let Some(param) = &e.param
            && let Some((theirs, _)) = p.used.iter().find(|(_, ours)| param == ours)
        {
            e.param = Some((*theirs).to_owned());
        }
        e
    });
    match (p.stripe, result) {
        (Some(_), Ok(r)) => Ok(reshape(r).await),
        (_, r) => r,
    }
}

/// Reads a response body whole (API responses are small JSON documents).
async fn collect<B>(mut body: B) -> Option<Vec<u8>>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut out = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        if let Ok(data) = frame.ok()?.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Some(out)
}

/// A JSON success response in Stripe's shapes; anything else passes unchanged.
async fn reshape(r: Response) -> Response {
    let is_json = r
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json || !r.status().is_success() {
        return r;
    }
    let (parts, body) = r.into_parts();
    let Some(bytes) = collect(body).await else {
        let e = ApiError::internal("the response could not be read");
        return super::error_response(&e);
    };
    let out = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut v) => {
            stripe_shape(&mut v);
            serde_json::to_vec(&v).unwrap_or(bytes)
        }
        Err(_) => bytes,
    };
    Response::from_parts(parts, out.into())
}

#[cfg(test)]
use crate::domain::stripe_view::minor_units;
pub use crate::domain::stripe_view::{event, stripe_shape};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_are_read_as_a_json_client_would_send_them() {
        assert_eq!(integer("14999"), Some(14999));
        assert_eq!(integer("0"), Some(0));
        assert_eq!(integer("007"), None, "JSON has no leading zeros");
        assert_eq!(integer("-5"), None);
        assert_eq!(integer("1.5"), None);
        assert_eq!(integer("99999999999999999999"), None);
        assert_eq!(integer(""), None);
    }

    #[test]
    fn stripe_shapes_use_unix_seconds_and_leave_metadata_alone() {
        let mut v = json!({
            "object": "list",
            "data": [{
                "object": "checkout.session", "id": "cs_1", "amount": 14999,
                "checkout_url": "http://pay.test/c/cs_1",
                "created_at": "2026-01-02T03:04:05Z", "expires_at": "2026-01-02T03:34:05Z",
                "completed_at": null,
                "payment_options": [{"method": "upi"}, {"method": "upi"}, {"method": "usdt_local"}],
                "payments": [{"received_at": "2026-01-02T03:05:00Z"}],
                "metadata": {"shipped_at": "2026-01-02T03:04:05Z"}
            }],
            "has_more": false, "url": "/v1/checkout/sessions"
        });
        stripe_shape(&mut v);
        let s = &v["data"][0];
        assert_eq!(s["created"], json!(1767323045));
        assert_eq!(s["created_at"], json!(1767323045));
        assert_eq!(s["expires_at"], json!(1767324845));
        assert_eq!(s["completed_at"], Value::Null);
        assert_eq!(s["payments"][0]["received_at"], json!(1767323100));
        assert_eq!(s["url"], json!("http://pay.test/c/cs_1"));
        assert_eq!(s["amount_total"], json!(14999));
        assert_eq!(s["payment_method_types"], json!(["upi", "usdt_local"]));
        assert_eq!(s["metadata"]["shipped_at"], json!("2026-01-02T03:04:05Z"));
        assert_eq!(v["url"], json!("/v1/checkout/sessions"));
    }

    #[test]
    fn refund_amounts_become_minor_units_rounded_down() {
        assert_eq!(minor_units("50.00"), Some(5000));
        assert_eq!(minor_units("12.5"), Some(1250));
        assert_eq!(minor_units("7"), Some(700));
        assert_eq!(minor_units("10.000123"), Some(1000));
        assert_eq!(minor_units("0.009"), Some(0));
        assert_eq!(minor_units("-1.00"), None);
        assert_eq!(minor_units("1e3"), None);
        assert_eq!(minor_units("99999999999999999999.00"), None);
        let mut v = json!({"object": "refund", "amount": "10.000123", "created_at": "2026-01-02T03:04:05Z"});
        stripe_shape(&mut v);
        assert_eq!(v["amount"], json!(1000));
        assert_eq!(v["amount_decimal"], json!("10.000123"));
        assert_eq!(v["created"], json!(1767323045));
    }

    #[test]
    fn query_strings_drop_expand_and_map_created_ranges() {
        assert_eq!(normalise_query("limit=3"), None);
        assert_eq!(
            normalise_query("expand%5B0%5D=data.x&limit=3&created%5Bgte%5D=5"),
            Some("limit=3&created_gte=5".into())
        );
    }
}
