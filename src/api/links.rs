//! Payment links: `/v1/payment_links` for the merchant (create, list, get, deactivate) and the
//! customer's `/l/{id}` (a fixed amount: 303 to a fresh session; an amount the customer enters:
//! a form that works without JavaScript; a closed link: 410 with a page), with the link's
//! printable QR as SVG and PNG. A counter QR is a link with `counter: true`: reusable without
//! limit, the amount entered at each sale.

use std::collections::BTreeMap;

use askama::Template;
use http::{HeaderValue, StatusCode};
use serde_json::{Map, Value, json};

use super::error::{ApiError, Code, op_error};
use super::extract::{object_body, opt_string, parse_limit, query_pairs};
use super::sessions::{MAX_AMOUNT, build_session, list_response, metadata_field, parse_create};
use super::{AppState, Req, Response, idempotency};
use crate::checkout::i18n::{Lang, Strings};
use crate::config::Merchant;
use crate::domain::apikey::ApiKey;
use crate::domain::ids::{looks_like, new_id};
use crate::domain::link::{Closed, LINK_METADATA_KEY, PaymentLink};
use crate::domain::money::{MoneyError, format_units, parse_units};
use crate::domain::view::{display_price, rfc3339};
use crate::store::{OpError, Outcome, WriteOp, write};

const CREATE_FIELDS: &[&str] = &[
    "amount",
    "amount_min",
    "amount_max",
    "currency",
    "description",
    "payment_methods",
    "max_uses",
    "expires_at",
    "metadata",
    "counter",
];

/// Most uses a link may allow (a counter QR has no limit at all).
const MAX_USES: u64 = 1_000_000;

/// The link object of the API.
pub fn link_json(l: &PaymentLink) -> Value {
    let url = &l.url;
    json!({
        "id": l.id, "object": "payment_link", "livemode": l.livemode,
        "url": url, "qr_svg_url": format!("{url}/qr.svg"), "qr_png_url": format!("{url}/qr.png"),
        "active": l.active, "counter": l.counter,
        "amount": l.amount, "amount_min": l.amount_min, "amount_max": l.amount_max,
        "currency": l.currency, "description": l.description,
        "payment_methods": l.payment_methods,
        "uses": l.uses, "max_uses": l.max_uses, "completed_payments": l.completed,
        "expires_at": l.expires_at_ms.map(rfc3339),
        "metadata": l.metadata,
        "created_at": rfc3339(l.created_at_ms),
    })
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// An optional positive amount field, at most `MAX_AMOUNT`.
fn opt_amount(map: &Map<String, Value>, field: &str) -> Result<Option<u64>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|a| (1..=MAX_AMOUNT).contains(a))
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    Code::ParameterInvalid,
                    field,
                    format!(
                        "{field} must be a positive integer of minor units, at most {MAX_AMOUNT}"
                    ),
                )
            }),
    }
}

/// Parses and validates a link create for `merchant` in the key's mode: the same method and
/// currency rules as a session create (checked by building one), plus the link's own.
pub(super) fn parse_link(
    state: &AppState,
    merchant: &Merchant,
    livemode: bool,
    body: &[u8],
) -> Result<PaymentLink, ApiError> {
    let map = object_body(body, CREATE_FIELDS)?;
    let amount = opt_amount(&map, "amount")?;
    let amount_min = opt_amount(&map, "amount_min")?;
    let amount_max = opt_amount(&map, "amount_max")?;
    let counter = match map.get("counter") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                Code::ParameterInvalid,
                "counter",
                "counter must be true or false",
            ));
        }
    };
    if amount.is_some() && (amount_min.is_some() || amount_max.is_some()) {
        return Err(ApiError::invalid(
            Code::ParameterInvalid,
            "amount",
            "give amount (a fixed price) or amount_min/amount_max (the customer enters it), not both",
        ));
    }
    if counter && amount.is_some() {
        return Err(ApiError::invalid(
            Code::ParameterInvalid,
            "amount",
            "a counter link's amount is entered at each sale: give amount_min/amount_max or none",
        ));
    }
    if amount.is_none() && amount_min.is_none() && amount_max.is_none() && !counter {
        return Err(ApiError::invalid(
            Code::ParameterMissing,
            "amount",
            "amount is required (minor units), or amount_min/amount_max for an amount the customer enters",
        ));
    }
    if let (Some(lo), Some(hi)) = (amount_min, amount_max)
        && lo > hi
    {
        return Err(ApiError::invalid(
            Code::ParameterInvalid,
            "amount_min",
            format!("amount_min ({lo}) is above amount_max ({hi})"),
        ));
    }
    let Some(currency) = opt_string(&map, "currency", 10)? else {
        return Err(ApiError::invalid(
            Code::ParameterMissing,
            "currency",
            "currency is required: the ISO 4217 code the link's amounts are in",
        ));
    };
    let currency = currency.to_ascii_lowercase();
    let description = opt_string(&map, "description", 500)?;
    let methods: Vec<String> = match map.get("payment_methods") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .filter(|v| !v.is_empty() && v.len() <= 16)
            .ok_or_else(|| {
                ApiError::invalid(
                    Code::ParameterInvalid,
                    "payment_methods",
                    "payment_methods must be a non-empty array of at most 16 method names",
                )
            })?,
        Some(_) => {
            return Err(ApiError::invalid(
                Code::ParameterInvalid,
                "payment_methods",
                "payment_methods must be an array of method names",
            ));
        }
    };
    let max_uses = match map.get("max_uses") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (1..=MAX_USES).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        Code::ParameterInvalid,
                        "max_uses",
                        format!("max_uses must be an integer from 1 to {MAX_USES}"),
                    )
                })?,
        ),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let expires_at_ms = match map.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let bad = || {
                ApiError::invalid(
                    Code::ParameterInvalid,
                    "expires_at",
                    "expires_at must be a time in the next five years: unix seconds or RFC 3339",
                )
            };
            let ms = match v {
                Value::Number(n) => n
                    .as_i64()
                    .and_then(|s| s.checked_mul(1000))
                    .ok_or_else(bad)?,
                Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|_| bad())?
                    .timestamp_millis(),
                _ => return Err(bad()),
            };
            if ms <= now || ms > now + 5 * 366 * 86_400_000 {
                return Err(bad());
            }
            Some(ms)
        }
    };
    let metadata = metadata_field(&map)?;
    if metadata.contains_key(LINK_METADATA_KEY) {
        return Err(ApiError::invalid(
            Code::ParameterInvalid,
            &format!("metadata[{LINK_METADATA_KEY}]"),
            format!("metadata key {LINK_METADATA_KEY} is set by paywatch to the link's id"),
        ));
    }
    // The same rules as a session create, checked now so a link never opens into an error:
    // methods enabled in this mode, the currency known, a rate configured when it is converted.
    let probe = amount.or(amount_min).unwrap_or(100);
    let params = parse_create(
        &session_body(probe, &currency, &methods, description.as_deref()),
        merchant,
        livemode,
        &state.config.sessions,
    )?;
    if let (Some(cur), Some(first)) = (&params.price_currency, params.methods.first()) {
        let unit = super::sessions::unit_of(first);
        if let Err(e @ crate::rates::RateError::NotConfigured { .. }) =
            state.rates.lookup(&unit, cur, now)
        {
            return Err(ApiError::invalid(
                Code::ParameterInvalid,
                "currency",
                e.to_string(),
            ));
        }
    }
    let id = new_id("pl");
    Ok(PaymentLink {
        url: format!("{}/l/{id}", state.config.public_url),
        id,
        merchant_id: merchant.id.clone(),
        livemode,
        amount,
        amount_min,
        amount_max,
        currency,
        description,
        payment_methods: methods,
        max_uses,
        uses: 0,
        completed: 0,
        expires_at_ms,
        active: true,
        counter,
        metadata,
        created_at_ms: now,
        seq: 0,
    })
}

/// The session create body a link opens with.
fn session_body(
    amount: u64,
    currency: &str,
    methods: &[String],
    description: Option<&str>,
) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("amount".into(), amount.into());
    m.insert("currency".into(), currency.into());
    if !methods.is_empty() {
        m.insert("payment_methods".into(), methods.to_vec().into());
    }
    if let Some(d) = description {
        m.insert("description".into(), d.into());
    }
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

fn render_link(r: &Result<Outcome, OpError>, ok: StatusCode) -> (StatusCode, Vec<u8>, bool) {
    match r {
        Ok(Outcome::Link(l)) => (ok, json_bytes(&link_json(l)), true),
        Ok(_) => {
            let e = ApiError::internal("unexpected outcome");
            (e.status, e.body(), false)
        }
        Err(e) => {
            let e = op_error(e);
            (
                e.status,
                e.body(),
                e.status != StatusCode::SERVICE_UNAVAILABLE,
            )
        }
    }
}

/// `POST /v1/payment_links`.
pub(super) async fn create(
    state: &AppState,
    merchant: &Merchant,
    key: &ApiKey,
    req: &Req,
) -> Result<Response, ApiError> {
    let idem = idempotency::from_request(key, req)?;
    if let Some(r) = idempotency::replay_if_used(state, &idem).await? {
        return Ok(r);
    }
    let link = parse_link(state, merchant, key.livemode, &req.body)?;
    let op = WriteOp::CreateLink {
        link: Box::new(link),
    };
    idempotency::run(state, idem, op, |r| render_link(r, StatusCode::CREATED)).await
}

fn owned(state: &AppState, key: &ApiKey, id: &str) -> Result<PaymentLink, ApiError> {
    let missing = || ApiError::not_found("payment link", id);
    if !looks_like(id, "pl") {
        return Err(missing());
    }
    state
        .store
        .payment_link(id)?
        .filter(|l| l.merchant_id == key.merchant_id && l.livemode == key.livemode)
        .ok_or_else(missing)
}

/// `GET /v1/payment_links/{id}`.
pub(super) fn get(state: &AppState, key: &ApiKey, id: &str) -> Result<Response, ApiError> {
    let l = owned(state, key, id)?;
    Ok(super::json_response(
        StatusCode::OK,
        json_bytes(&link_json(&l)),
    ))
}

/// `GET /v1/payment_links`.
pub(super) fn list(state: &AppState, key: &ApiKey, req: &Req) -> Result<Response, ApiError> {
    let mut limit = 20;
    let mut after = None;
    for (k, v) in query_pairs(&req.query, &["limit", "starting_after"])? {
        match k.as_str() {
            "limit" => limit = parse_limit(&v)?,
            "starting_after" => {
                owned(state, key, &v).map_err(|_| {
                    ApiError::invalid(
                        Code::ParameterInvalid,
                        "starting_after",
                        format!("no such payment link: {v}"),
                    )
                })?;
                after = Some(v);
            }
            _ => {}
        }
    }
    let page =
        state
            .store
            .list_payment_links(&key.merchant_id, key.livemode, limit, after.as_deref())?;
    let data = page.items.iter().map(link_json).collect();
    Ok(list_response(data, page.has_more, "/v1/payment_links"))
}

/// `POST /v1/payment_links/{id}/deactivate`: the link opens no more sessions (those opened
/// stay payable).
pub(super) async fn deactivate(
    state: &AppState,
    key: &ApiKey,
    req: &Req,
    id: &str,
) -> Result<Response, ApiError> {
    let idem = idempotency::from_request(key, req)?;
    if let Some(r) = idempotency::replay_if_used(state, &idem).await? {
        return Ok(r);
    }
    object_body(&req.body, &[])?;
    owned(state, key, id)?;
    let op = WriteOp::DeactivateLink {
        merchant_id: key.merchant_id.clone(),
        livemode: key.livemode,
        id: id.to_owned(),
    };
    idempotency::run(state, idem, op, |r| render_link(r, StatusCode::OK)).await
}

// ---- The customer's side: /l/{id}. ----

#[derive(Template)]
#[template(path = "link.html")]
struct LinkPage<'a> {
    t: &'a Strings,
    lang: &'a str,
    dir: &'a str,
    merchant: &'a str,
    description: Option<&'a str>,
    id: &'a str,
    /// The form (an amount the customer enters), or `None` on a closed link's page.
    form: Option<Form>,
    /// Why the link is closed.
    closed: Option<&'a str>,
    /// A refused entry: what to fix.
    error: Option<&'a str>,
    livemode: bool,
}

struct Form {
    /// `₹`, `$`, or the ISO code.
    unit: String,
    /// `"100.00 – 5000.00"`, when bounded.
    bounds: Option<String>,
    min: String,
    max: String,
    /// What the customer typed, given back with the error.
    value: String,
    /// The fixed amount, shown (a fixed link POSTs no amount field).
    fixed: Option<String>,
    counter: bool,
}

fn lang_of(req: &Req) -> Lang {
    let q = url::form_urlencoded::parse(req.query.as_bytes())
        .find(|(k, _)| k == "lang")
        .map(|(_, v)| v.into_owned());
    Lang::choose(
        q.as_deref(),
        req.headers
            .get(http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
        None,
    )
}

fn html(status: StatusCode, body: String, lang: Lang) -> Response {
    let mut r =
        crate::checkout::page::ok_body(bytes::Bytes::from(body), "text/html; charset=utf-8");
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert("content-language", HeaderValue::from_static(lang.code()));
    h.insert("vary", HeaderValue::from_static("Accept-Language"));
    r
}

fn symbol(currency: &str) -> String {
    let shown = display_price(0, currency);
    shown.trim_end_matches("0.00").trim().to_owned()
}

fn page(
    state: &AppState,
    req: &Req,
    l: &PaymentLink,
    status: StatusCode,
    closed: Option<Closed>,
    error: Option<&str>,
    value: &str,
) -> Result<Response, ApiError> {
    let lang = lang_of(req);
    let t = lang.strings();
    let merchant = state
        .config
        .merchant(&l.merchant_id)
        .map_or("", |m| m.name.as_str());
    let fmt = |a: u64| format_units(u128::from(a), 2);
    let form = closed.is_none().then(|| Form {
        unit: symbol(&l.currency),
        bounds: match (l.amount_min, l.amount_max) {
            (None, None) => None,
            (lo, hi) => Some(format!(
                "{} – {}",
                lo.map_or_else(|| "0.01".to_owned(), fmt),
                hi.map_or_else(|| fmt(MAX_AMOUNT), fmt)
            )),
        },
        min: l.amount_min.map_or_else(|| "0.01".to_owned(), fmt),
        max: l.amount_max.map_or_else(|| fmt(MAX_AMOUNT), fmt),
        value: value.to_owned(),
        fixed: l.amount.map(|a| display_price(a, &l.currency)),
        counter: l.counter,
    });
    let closed_text = closed.map(|c| match c {
        Closed::Inactive => t.link_closed_inactive.as_str(),
        Closed::Expired => t.link_closed_expired.as_str(),
        Closed::Spent => t.link_closed_spent.as_str(),
    });
    let p = LinkPage {
        t,
        lang: lang.code(),
        dir: if lang.rtl() { "rtl" } else { "ltr" },
        merchant,
        description: l.description.as_deref(),
        id: &l.id,
        form,
        closed: closed_text,
        error,
        livemode: l.livemode,
    };
    let body = p
        .render()
        .map_err(|e| ApiError::internal(format!("page rendering failed: {e}")))?;
    Ok(html(status, body, lang))
}

/// The link a public request names; an unknown or malformed id is a plain 404 (no page: it
/// tells a prober nothing).
fn public_link(state: &AppState, id: &str) -> Result<PaymentLink, ApiError> {
    let missing = || ApiError::not_found("payment link", id);
    if !looks_like(id, "pl") {
        return Err(missing());
    }
    state.store.payment_link(id)?.ok_or_else(missing)
}

fn see_other(url: &str) -> Response {
    let mut r = Response::new(Vec::new().into());
    *r.status_mut() = StatusCode::SEE_OTHER;
    crate::checkout::page::secure_headers(&mut r, "text/plain; charset=utf-8");
    if let Ok(v) = HeaderValue::from_str(url) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

/// Per-client cap on link opens (each makes a session holding a payment slot).
fn check_open_cap(state: &AppState, req: &Req) -> Result<(), ApiError> {
    let max = state.config.server.link_opens_per_minute;
    if let Some(ip) = super::limits::client_of(&state.config, req)
        && !state.limits.link_open(ip, max)
    {
        return Err(ApiError::new(
            Code::TooManyLinkOpens,
            format!("at most {max} payment link opens a minute from one client; retry later"),
        )
        .retry_after(60));
    }
    Ok(())
}

/// Opens a session from `l` for `amount` (in the link's currency) and answers 303 to it.
async fn open(
    state: &AppState,
    req: &Req,
    l: &PaymentLink,
    amount: u64,
) -> Result<Response, ApiError> {
    let Some(merchant) = state.config.merchant(&l.merchant_id) else {
        return Err(ApiError::not_found("payment link", &l.id));
    };
    check_open_cap(state, req)?;
    let mut params = parse_create(
        &session_body(
            amount,
            &l.currency,
            &l.payment_methods,
            l.description.as_deref(),
        ),
        merchant,
        l.livemode,
        &state.config.sessions,
    )?;
    let mut metadata: BTreeMap<String, String> = l.metadata.clone();
    metadata.insert(LINK_METADATA_KEY.to_owned(), l.id.clone());
    params.metadata = metadata;
    let (session, methods) = build_session(state, &l.merchant_id, l.livemode, params)?;
    let op = WriteOp::OpenLink {
        link_id: l.id.clone(),
        price_amount: amount,
        session: Box::new(session),
        methods,
    };
    match write(state.store.as_ref(), op, None).await? {
        Ok(Outcome::Session(s)) => Ok(see_other(&s.checkout_url)),
        Ok(_) => Err(ApiError::internal("unexpected outcome")),
        Err(e) => Err(op_error(&e)),
    }
}

/// Answers a refused open: a closed link's 410 page, an amount's error on the form, else the
/// JSON error.
fn refused(
    state: &AppState,
    req: &Req,
    l: &PaymentLink,
    e: ApiError,
    value: &str,
) -> Result<Response, ApiError> {
    if e.code == Code::PaymentLinkUnavailable {
        let now = chrono::Utc::now().timestamp_millis();
        let why = l.closed(now).unwrap_or(Closed::Spent);
        return page(state, req, l, StatusCode::GONE, Some(why), None, value);
    }
    if e.code == Code::ParameterInvalid && l.amount.is_none() {
        let t = lang_of(req).strings();
        return page(
            state,
            req,
            l,
            StatusCode::BAD_REQUEST,
            None,
            Some(&t.link_amount_invalid),
            value,
        );
    }
    Err(e)
}

/// `GET /l/{id}`.
pub(super) async fn show(state: &AppState, req: &Req, id: &str) -> Result<Response, ApiError> {
    let l = public_link(state, id)?;
    let now = chrono::Utc::now().timestamp_millis();
    if let Some(why) = l.closed(now) {
        return page(state, req, &l, StatusCode::GONE, Some(why), None, "");
    }
    match l.amount {
        Some(a) => match open(state, req, &l, a).await {
            Ok(r) => Ok(r),
            Err(e) => refused(state, req, &l, e, ""),
        },
        None => page(state, req, &l, StatusCode::OK, None, None, ""),
    }
}

/// `POST /l/{id}`: `amount=149.50` (a form, in the link's currency) → 303 to a fresh session.
pub(super) async fn submit(state: &AppState, req: &Req, id: &str) -> Result<Response, ApiError> {
    let l = public_link(state, id)?;
    let now = chrono::Utc::now().timestamp_millis();
    if let Some(why) = l.closed(now) {
        return page(state, req, &l, StatusCode::GONE, Some(why), None, "");
    }
    let typed: Option<String> = url::form_urlencoded::parse(&req.body)
        .find(|(k, _)| k == "amount")
        .map(|(_, v)| v.trim().to_owned());
    let value = typed.clone().unwrap_or_default();
    let amount = match (l.amount, typed) {
        (Some(a), _) => a,
        // A decimal comma is read as the decimal point (`249,50`), as the form's pattern
        // allows; never as a thousands separator, which would misread it a hundredfold.
        (None, Some(t)) => match parse_units(&t.replace(',', "."), 2) {
            Ok(v) => match u64::try_from(v) {
                Ok(a) if l.accepts(a) && a <= MAX_AMOUNT => a,
                _ => {
                    let e = ApiError::invalid(Code::ParameterInvalid, "amount", "out of bounds");
                    return refused(state, req, &l, e, &value);
                }
            },
            Err(MoneyError::Malformed | MoneyError::TooPrecise(_) | MoneyError::Overflow) => {
                let e = ApiError::invalid(Code::ParameterInvalid, "amount", "not an amount");
                return refused(state, req, &l, e, &value);
            }
        },
        (None, None) => {
            let e = ApiError::invalid(Code::ParameterInvalid, "amount", "amount is required");
            return refused(state, req, &l, e, "");
        }
    };
    match open(state, req, &l, amount).await {
        Ok(r) => Ok(r),
        Err(e) => refused(state, req, &l, e, &value),
    }
}

/// `GET /l/{id}/qr.svg` and `/qr.png`: the link's URL as a QR code, for printing.
pub(super) fn qr(state: &AppState, id: &str, png: bool) -> Result<Response, ApiError> {
    let l = public_link(state, id)?;
    let url = l.url;
    let (body, kind) = if png {
        let b = crate::checkout::qr::png(&url, 8)
            .ok_or_else(|| ApiError::internal("the QR code could not be drawn"))?;
        (bytes::Bytes::from(b), "image/png")
    } else {
        let s = state
            .qr
            .svg(&url)
            .ok_or_else(|| ApiError::internal("the QR code could not be drawn"))?;
        (bytes::Bytes::from(s.as_bytes().to_vec()), "image/svg+xml")
    };
    let mut r = crate::checkout::page::ok_body(body, kind);
    r.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=3600"),
    );
    Ok(r)
}
