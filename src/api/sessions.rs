//! `/v1`: checkout sessions, methods, events and credits for an authenticated merchant key.

use std::collections::BTreeMap;

use http::StatusCode;
use serde_json::{Map, Value};

use super::error::{ApiError, Code, op_error};
use super::extract::{object_body, opt_string, parse_limit, query_pairs};
use super::idempotency;
use super::webhooks;
use super::{AppState, Req, Response, json_response};
use crate::config::Merchant;
use crate::domain::apikey::ApiKey;
use crate::domain::ids::{looks_like, new_id};
use crate::domain::method::{Currency, Method, Rail};
use crate::domain::session::{PaymentStatus, Session, Status};
use crate::domain::validate::{self, FieldError, substitute_id};
use crate::domain::view::session_bytes;
use crate::store::{OpError, Outcome, SessionQuery, WriteOp};

/// Largest accepted amount in minor units (₹1,000 crore / $100 million): catches unit mistakes.
pub const MAX_AMOUNT: u64 = 10_000_000_000;

/// `GET /v1/checkout/sessions/{id}`.
pub(super) fn get(state: &AppState, key: &ApiKey, id: &str) -> Result<Response, ApiError> {
    let s = owned_session(state, key, id)?;
    Ok(json_response(StatusCode::OK, session_bytes(&s)))
}

/// A session this key may see: its merchant's and its mode's; anything else is a 404.
fn owned_session(state: &AppState, key: &ApiKey, id: &str) -> Result<Session, ApiError> {
    let missing = || ApiError::not_found("checkout session", id);
    if !looks_like(id, "cs") {
        return Err(missing());
    }
    state
        .store
        .session(id)?
        .filter(|s| s.merchant_id == key.merchant_id && s.livemode == key.livemode)
        .ok_or_else(missing)
}

/// Methods a session of this mode may offer: UPI always (it has no test rail), tokens when the
/// chain's test flag matches the mode.
fn available(merchant: &Merchant, livemode: bool) -> impl Iterator<Item = &Method> {
    merchant
        .methods
        .iter()
        .filter(move |m| matches!(m.rail, Rail::Upi { .. }) || m.test != livemode)
}

pub(super) fn methods(merchant: &Merchant, livemode: bool) -> Response {
    let data: Vec<Value> = available(merchant, livemode)
        .map(|m| {
            let mut o = Map::new();
            o.insert("object".into(), "payment_method".into());
            o.insert("method".into(), m.name.clone().into());
            o.insert("currency".into(), m.currency.as_str().into());
            match &m.rail {
                Rail::Upi { vpa, .. } => {
                    o.insert("rail".into(), "upi".into());
                    o.insert("pay_to".into(), vpa.clone().into());
                }
                Rail::Token {
                    network,
                    chain_id,
                    symbol,
                    contract,
                    decimals,
                    confirmations,
                    ..
                } => {
                    o.insert("rail".into(), "token".into());
                    o.insert("network".into(), network.clone().into());
                    o.insert("chain_id".into(), (*chain_id).into());
                    o.insert("token".into(), symbol.clone().into());
                    o.insert("token_contract".into(), contract.clone().into());
                    o.insert("decimals".into(), (*decimals).into());
                    o.insert("confirmations".into(), (*confirmations).into());
                }
            }
            let (strategy, pay_to) = match &m.strategy {
                crate::domain::method::Strategy::UniqueAmount { pay_to, .. } => {
                    ("unique_amount", Value::from(pay_to.clone()))
                }
                crate::domain::method::Strategy::AddressPool { addresses } => {
                    ("address_pool", Value::from(addresses.clone()))
                }
                // A fresh address per session: see the session's payment_options.
                crate::domain::method::Strategy::Xpub { .. } => ("xpub", Value::Null),
            };
            o.insert("strategy".into(), strategy.into());
            o.insert("pay_to".into(), pay_to);
            o.insert("livemode".into(), livemode.into());
            Value::Object(o)
        })
        .collect();
    list_response(data, false, "/v1/methods")
}

/// What a method's amounts are counted in, as rate pairs name it: the token (`USDT`) or `INR`.
pub(super) fn unit_of(m: &Method) -> String {
    match &m.rail {
        Rail::Upi { .. } => "INR".to_owned(),
        Rail::Token { symbol, .. } => symbol.to_ascii_uppercase(),
    }
}

pub(super) fn list_response(data: Vec<Value>, has_more: bool, url: &str) -> Response {
    let body =
        serde_json::json!({"object": "list", "data": data, "has_more": has_more, "url": url});
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

const CREATE_FIELDS: &[&str] = &[
    "amount",
    "currency",
    "payment_methods",
    "description",
    "customer_email",
    "customer_name",
    "locale",
    "client_reference_id",
    "order_id",
    "merchant_ref",
    "note",
    "success_url",
    "cancel_url",
    "notify_url",
    "expires_in",
    "metadata",
];

fn opt_url(
    map: &Map<String, Value>,
    field: &str,
    merchant: &Merchant,
) -> Result<Option<String>, ApiError> {
    let v = opt_string(map, field, 2048)?;
    if let Some(u) = &v {
        validate::url(field, u, &merchant.allowed_domains)?;
    }
    Ok(v)
}

/// A session create request, validated: everything but the I/O (the notify_url's DNS check).
pub struct CreateParams {
    /// In `price_currency`'s minor units when that is set, else in `currency`'s.
    pub amount: u64,
    /// What the methods settle in.
    pub currency: Currency,
    /// A price in another currency (ISO lowercase), converted into `currency` at a rate.
    pub price_currency: Option<String>,
    pub methods: Vec<Method>,
    pub description: Option<String>,
    pub customer_email: Option<String>,
    pub customer_name: Option<String>,
    /// The pages' language when the browser names none they speak (`None`: `auto`).
    pub locale: Option<String>,
    pub client_reference_id: Option<String>,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    pub notify_url: Option<String>,
    pub expires_in: u64,
    pub metadata: BTreeMap<String, String>,
}

/// Parses and validates a create body for `merchant` in the key's mode. Pure, so it can be
/// fuzzed: the handler adds the idempotency and SSRF checks around it.
pub fn parse_create(
    body: &[u8],
    merchant: &Merchant,
    livemode: bool,
    sessions: &crate::config::SessionsConfig,
) -> Result<CreateParams, ApiError> {
    let map = object_body(body, CREATE_FIELDS)?;
    let amount = match map.get("amount") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                Code::ParameterMissing,
                "amount",
                "amount is required: a positive integer in minor units (paise, cents)",
            ));
        }
        Some(v) => v.as_u64().filter(|a| *a > 0).ok_or_else(|| {
            ApiError::invalid(
                Code::ParameterInvalid,
                "amount",
                "amount must be a positive integer (minor units)",
            )
        })?,
    };
    if amount > MAX_AMOUNT {
        return Err(ApiError::invalid(
            Code::ParameterInvalid,
            "amount",
            format!("amount must be at most {MAX_AMOUNT} (minor units)"),
        ));
    }
    let price_currency = match opt_string(&map, "currency", 10)? {
        Some(c) => {
            let lower = c.to_ascii_lowercase();
            if !crate::domain::price::is_price_currency(&lower) {
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    "currency",
                    format!(
                        "currency must be an ISO 4217 code of {}, not {c:?}",
                        crate::domain::price::PRICE_CURRENCIES.join(", ")
                    ),
                ));
            }
            Some(lower)
        }
        None => None,
    };
    // The currency a method settles in, when the price is in one (else a rate converts it).
    let currency = price_currency.as_deref().and_then(Currency::parse);
    let offered: Vec<&Method> = available(merchant, livemode).collect();
    let chosen: Vec<Method> = match map.get("payment_methods") {
        None | Some(Value::Null) if price_currency.is_some() && currency.is_none() => {
            // A price in a currency no method settles in: every method, when they settle in one.
            let mut cs: Vec<Currency> = offered.iter().map(|m| m.currency).collect();
            cs.dedup();
            if cs.len() > 1 {
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    "currency",
                    format!(
                        "no method settles in {}: this merchant's settle in inr and usd; to convert the price at a configured rate, name the payment_methods it is paid by",
                        price_currency.as_deref().unwrap_or_default()
                    ),
                ));
            }
            offered.iter().map(|m| (*m).clone()).collect()
        }
        None | Some(Value::Null) => {
            let cur = match currency {
                Some(c) => c,
                None => {
                    let mut cs: Vec<Currency> = offered.iter().map(|m| m.currency).collect();
                    cs.dedup();
                    match cs.as_slice() {
                        [one] => *one,
                        [] => {
                            return Err(ApiError::new(
                                Code::PaymentMethodUnavailable,
                                "this merchant has no payment method enabled in this mode",
                            ));
                        }
                        _ => {
                            return Err(ApiError::invalid(
                                Code::ParameterMissing,
                                "currency",
                                "currency is required (inr or usd): this merchant accepts both",
                            ));
                        }
                    }
                }
            };
            offered
                .iter()
                .filter(|m| m.currency == cur)
                .map(|m| (*m).clone())
                .collect()
        }
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    "payment_methods",
                    "payment_methods must not be empty",
                ));
            }
            let mut out: Vec<Method> = Vec::new();
            for item in items {
                let name = item.as_str().ok_or_else(|| {
                    ApiError::invalid(
                        Code::ParameterInvalid,
                        "payment_methods",
                        "payment_methods must be an array of method names",
                    )
                })?;
                let m = offered.iter().find(|m| m.name == name).ok_or_else(|| {
                    let names: Vec<&str> = offered.iter().map(|m| m.name.as_str()).collect();
                    ApiError::invalid(
                        Code::PaymentMethodUnavailable,
                        "payment_methods",
                        format!(
                            "{name:?} is not enabled for this merchant in {} mode (available: {})",
                            if livemode { "live" } else { "test" },
                            names.join(", ")
                        ),
                    )
                })?;
                if !out.iter().any(|o| o.name == m.name) {
                    out.push((*m).clone());
                }
            }
            out
        }
        Some(_) => {
            return Err(ApiError::invalid(
                Code::ParameterInvalid,
                "payment_methods",
                "payment_methods must be an array of method names",
            ));
        }
    };
    let Some(first) = chosen.first() else {
        return Err(ApiError::new(
            Code::PaymentMethodUnavailable,
            format!(
                "no payment method is enabled for {} in this mode",
                currency.map_or("this currency", |c| c.as_str())
            ),
        ));
    };
    let settle = first.currency;
    // Converted at a rate, the methods must count in one unit (one converted amount); in their
    // own currency, USDT and USDC may share a USD session as before.
    let converted = price_currency
        .as_deref()
        .is_some_and(|c| Currency::parse(c) != Some(settle));
    if let Some(m) = chosen
        .iter()
        .find(|m| m.currency != settle || (converted && unit_of(m) != unit_of(first)))
    {
        return Err(ApiError::invalid(
            Code::ParameterInvalid,
            "payment_methods",
            format!(
                "method {} settles in {}, but method {} in {}: a session's methods settle in one unit (the price is converted into it)",
                m.name,
                unit_of(m),
                first.name,
                unit_of(first)
            ),
        ));
    }
    // Priced in another currency than the methods settle in: converted at a rate on create.
    let price_currency = price_currency.filter(|c| Currency::parse(c) != Some(settle));
    let description = opt_string(&map, "description", 500)?;
    let customer_email = opt_string(&map, "customer_email", 254)?;
    if let Some(e) = &customer_email {
        validate::email("customer_email", e)?;
    }
    let customer_name = opt_string(&map, "customer_name", 200)?;
    let locale = match opt_string(&map, "locale", 35)? {
        None => None,
        Some(l) if l.eq_ignore_ascii_case("auto") => None,
        Some(l) => match crate::checkout::i18n::Lang::parse(&l) {
            Some(lang) => Some(lang.code().to_owned()),
            None => {
                let known: Vec<&str> = crate::checkout::i18n::Lang::all()
                    .map(|l| l.code())
                    .collect();
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    "locale",
                    format!(
                        "locale {l:?} is not a language the checkout page speaks: use auto or one of {}",
                        known.join(", ")
                    ),
                ));
            }
        },
    };
    let mut reference: Option<(String, String)> = None;
    for field in ["client_reference_id", "order_id", "merchant_ref", "note"] {
        if let Some(v) = opt_string(&map, field, 200)? {
            match &reference {
                Some((f, existing)) if existing != &v => {
                    return Err(ApiError::invalid(
                        Code::ParameterInvalid,
                        field,
                        format!(
                            "{field} and {f} are both given with different values; they are aliases of client_reference_id: give one"
                        ),
                    ));
                }
                _ => reference = Some((field.to_owned(), v)),
            }
        }
    }
    let success_url = opt_url(&map, "success_url", merchant)?;
    let cancel_url = opt_url(&map, "cancel_url", merchant)?;
    let notify_url = opt_url(&map, "notify_url", merchant)?;
    let expires_in = match map.get("expires_in") {
        None | Some(Value::Null) => sessions.default_expires_in,
        Some(v) => {
            let min = sessions.min_expires_in;
            v.as_u64()
                .filter(|s| (min..=86_400).contains(s))
                .ok_or_else(|| {
                    ApiError::invalid(
                        Code::ParameterInvalid,
                        "expires_in",
                        format!(
                            "expires_in must be an integer number of seconds from {min} to 86400"
                        ),
                    )
                })?
        }
    };
    let metadata = metadata_field(&map)?;
    Ok(CreateParams {
        amount,
        currency: settle,
        price_currency,
        methods: chosen,
        description,
        customer_email,
        customer_name,
        locale,
        client_reference_id: reference.map(|(_, v)| v),
        success_url,
        cancel_url,
        notify_url,
        expires_in,
        metadata,
    })
}

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
    let params = parse_create(&req.body, merchant, key.livemode, &state.config.sessions)?;
    if let Some(u) = &params.notify_url {
        webhooks::check_destination(
            state,
            "notify_url",
            &u.replace(validate::SESSION_ID_PLACEHOLDER, "cs_x"),
        )
        .await?;
    }
    let (session, chosen) = build_session(state, &merchant.id, key.livemode, params)?;
    let op = WriteOp::CreateSession {
        session: Box::new(session),
        methods: chosen,
    };
    idempotency::run(state, idem, op, |r| render_session(r, StatusCode::CREATED)).await
}

/// The session a validated create asks for, priced at the current rate when its price is in
/// another currency; with the methods to allocate.
pub(super) fn build_session(
    state: &AppState,
    merchant_id: &str,
    livemode: bool,
    params: CreateParams,
) -> Result<(Session, Vec<Method>), ApiError> {
    let CreateParams {
        amount,
        currency,
        price_currency,
        methods: chosen,
        description,
        customer_email,
        customer_name,
        locale,
        client_reference_id,
        success_url,
        cancel_url,
        notify_url,
        expires_in,
        metadata,
    } = params;
    let now = chrono::Utc::now().timestamp_millis();
    let (amount, price) = priced(state, amount, price_currency.as_deref(), &chosen, now)?;
    let id = new_id("cs");
    let session = Session {
        checkout_url: format!("{}/c/{id}", state.config.public_url),
        success_url: success_url.map(|u| substitute_id(&u, &id)),
        cancel_url: cancel_url.map(|u| substitute_id(&u, &id)),
        notify_url: notify_url.map(|u| substitute_id(&u, &id)),
        id,
        merchant_id: merchant_id.to_owned(),
        livemode,
        status: Status::Open,
        payment_status: PaymentStatus::Unpaid,
        amount,
        currency,
        amount_received: 0,
        description,
        customer_email,
        customer_name,
        client_reference_id,
        payment_options: Vec::new(),
        payments: Vec::new(),
        metadata,
        expires_at_ms: now + i64::try_from(expires_in).unwrap_or(1800) * 1000,
        created_at_ms: now,
        completed_at_ms: None,
        ended_at_ms: None,
        paid_late: false,
        price,
        seq: 0,
        locale,
    };
    Ok((session, chosen))
}

/// The amount the methods ask for `amount` in `price_currency` (`None`: already theirs), and
/// the price with its locked rate: `ceil(price · (1 + spread) / rate)` in the methods' minor
/// units, so the merchant never receives less than the price at the quoted rate.
pub(super) fn priced(
    state: &AppState,
    amount: u64,
    price_currency: Option<&str>,
    methods: &[Method],
    now: i64,
) -> Result<(u64, Option<crate::domain::price::Price>), ApiError> {
    let (Some(cur), Some(first)) = (price_currency, methods.first()) else {
        return Ok((amount, None));
    };
    let unit = unit_of(first);
    let locked = state.rates.lookup(&unit, cur, now).map_err(|e| match e {
        // A price in one settlement currency offered to methods of the other (usd paid by
        // UPI) is the methods' mismatch, as it was before rates; any other currency is the
        // currency's.
        crate::rates::RateError::NotConfigured { .. } => ApiError::invalid(
            Code::ParameterInvalid,
            if Currency::parse(cur).is_some() {
                "payment_methods"
            } else {
                "currency"
            },
            e.to_string(),
        ),
        crate::rates::RateError::Unavailable { .. } => {
            ApiError::new(Code::RateUnavailable, e.to_string()).retry_after(30)
        }
    })?;
    let too_large = || {
        ApiError::invalid(
            Code::ParameterInvalid,
            "amount",
            format!(
                "amount converted into {unit} at {} exceeds {MAX_AMOUNT} minor units",
                locked.rate.to_decimal()
            ),
        )
    };
    let converted = crate::domain::price::convert(amount, locked.rate, locked.spread)
        .map_err(|_| too_large())?;
    if converted > MAX_AMOUNT {
        return Err(too_large());
    }
    if converted == 0 {
        return Err(ApiError::invalid(
            Code::ParameterInvalid,
            "amount",
            "amount converts to nothing at this rate",
        ));
    }
    let down = |t: u64| crate::domain::price::convert_down(t, locked.rate);
    Ok((
        converted,
        Some(crate::domain::price::Price {
            amount,
            currency: cur.to_owned(),
            rate: locked.rate.to_decimal(),
            spread: locked.spread_text.clone(),
            rate_source: locked.source.clone(),
            rate_at_ms: locked.at_ms,
            underpayment_tolerance: locked.underpayment_tolerance.map(down),
            overpayment_tolerance: down(locked.overpayment_tolerance),
        }),
    ))
}

pub(super) fn render_session(
    r: &Result<Outcome, OpError>,
    ok: StatusCode,
) -> (StatusCode, Vec<u8>, bool) {
    match r {
        Ok(Outcome::Session(s)) => (ok, session_bytes(s), true),
        Ok(_) => {
            let e = ApiError::internal("unexpected outcome");
            (e.status, e.body(), false)
        }
        Err(e) => {
            let e = op_error(e);
            // A 503 is worth retrying under the same key; everything else is the answer.
            let keep = e.status != StatusCode::SERVICE_UNAVAILABLE;
            (e.status, e.body(), keep)
        }
    }
}

pub(super) async fn end(
    state: &AppState,
    key: &ApiKey,
    req: &Req,
    id: &str,
    expire: bool,
) -> Result<Response, ApiError> {
    let idem = idempotency::from_request(key, req)?;
    if let Some(r) = idempotency::replay_if_used(state, &idem).await? {
        return Ok(r);
    }
    object_body(&req.body, &[])?;
    owned_session(state, key, id)?;
    let op = WriteOp::EndSession {
        merchant_id: key.merchant_id.clone(),
        livemode: key.livemode,
        id: id.to_owned(),
        expire,
    };
    idempotency::run(state, idem, op, |r| render_session(r, StatusCode::OK)).await
}

/// `created_gte=` and friends: unix seconds or RFC 3339.
fn parse_time(param: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = v.parse::<i64>() {
        return Ok(secs.saturating_mul(1000));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::invalid(
                Code::ParameterInvalid,
                param,
                format!("{param} must be unix seconds or an RFC 3339 time"),
            )
        })
}

pub(super) fn list(state: &AppState, key: &ApiKey, req: &Req) -> Result<Response, ApiError> {
    let pairs = query_pairs(
        &req.query,
        &[
            "limit",
            "starting_after",
            "status",
            "payment_method",
            "created_gte",
            "created_lte",
            "client_reference_id",
        ],
    )?;
    let mut q = SessionQuery {
        merchant_id: key.merchant_id.clone(),
        livemode: key.livemode,
        limit: 20,
        ..SessionQuery::default()
    };
    for (k, v) in pairs {
        match k.as_str() {
            "limit" => q.limit = parse_limit(&v)?,
            "starting_after" => {
                owned_session(state, key, &v).map_err(|_| {
                    ApiError::invalid(
                        Code::ParameterInvalid,
                        "starting_after",
                        format!("no such checkout session: {v}"),
                    )
                })?;
                q.starting_after = Some(v);
            }
            "status" => {
                q.status = Some(Status::parse(&v).ok_or_else(|| {
                    ApiError::invalid(
                        Code::ParameterInvalid,
                        "status",
                        "status must be open, processing, complete, expired or canceled",
                    )
                })?)
            }
            "payment_method" => q.payment_method = Some(v),
            "created_gte" => q.created_gte_ms = Some(parse_time("created_gte", &v)?),
            "created_lte" => q.created_lte_ms = Some(parse_time("created_lte", &v)?),
            "client_reference_id" => q.client_reference_id = Some(v),
            _ => {}
        }
    }
    let page = state.store.list_sessions(&q)?;
    let mut body = Vec::with_capacity(512 * page.items.len() + 64);
    body.extend_from_slice(br#"{"object":"list","data":["#);
    for (i, s) in page.items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&session_bytes(s));
    }
    body.extend_from_slice(
        format!(
            r#"],"has_more":{},"url":"/v1/checkout/sessions"}}"#,
            page.has_more
        )
        .as_bytes(),
    );
    Ok(json_response(StatusCode::OK, body))
}

/// `metadata`: an object of string values (absent or null: empty), validated.
pub(super) fn metadata_field(
    map: &Map<String, Value>,
) -> Result<BTreeMap<String, String>, ApiError> {
    match map.get("metadata") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let Value::String(s) = v else {
                    return Err(FieldError::invalid(
                        &format!("metadata[{k}]"),
                        "metadata values must be strings",
                    )
                    .into());
                };
                out.insert(k.clone(), s.clone());
            }
            validate::metadata(&out)?;
            Ok(out)
        }
        Some(_) => Err(ApiError::invalid(
            Code::ParameterInvalid,
            "metadata",
            "metadata must be an object of string values",
        )),
    }
}
