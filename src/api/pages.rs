//! `/c/{id}`: what the customer's browser talks to. No key: the unguessable session id is the
//! capability, so these answers never include e-mail, metadata or the notify_url.

use http::{HeaderValue, StatusCode};
use rand::Rng;

use super::error::{ApiError, Code, op_error};
use super::extract::object_body;
use super::{AppState, Req, Response, json_response};
use crate::checkout::i18n::Lang;
use crate::checkout::page;
use crate::domain::ids::looks_like;
use crate::domain::money::parse_units;
use crate::domain::session::Session;
use crate::domain::view::public_status;
use crate::store::{MatchResult, Observed, Outcome, WriteOp, write};

/// `GET /c/{id}/events`: the live status stream.
pub(super) fn events(state: &AppState, id: &str) -> Result<Response, ApiError> {
    load(state, id).and_then(|s| {
        crate::checkout::stream::status_stream(
            state.store.clone(),
            s.id,
            state.streams.clone(),
            state.closing.clone(),
        )
        .ok_or_else(|| {
            ApiError::new(
                Code::TooManyStreams,
                "too many live status streams; the page falls back to polling",
            )
            .capacity()
        })
    })
}

/// `GET /assets/{name}`: the pages' stylesheet and script.
pub(super) fn asset(req: &Req, name: &str) -> Result<Response, ApiError> {
    match page::asset(name) {
        Some((body, ct)) => {
            let mut r = page::ok_body(bytes::Bytes::from_static(body.as_bytes()), ct);
            r.headers_mut().insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            Ok(r)
        }
        None => Err(ApiError::route_missing(&req.method, &req.path)),
    }
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

pub(super) fn status(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let s = load(state, id)?;
    let mut r = json_response(
        StatusCode::OK,
        serde_json::to_vec(&public_status(&s)).unwrap_or_default(),
    );
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Whether the body is an HTML form post (the no-JavaScript page) rather than JSON.
fn is_form(req: &Req) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

fn query_param(req: &Req, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub(super) fn page(state: &AppState, req: &Req, id: &str) -> Result<Response, ApiError> {
    let s = load(state, id)?;
    let merchant = state
        .config
        .merchant(&s.merchant_id)
        .map_or("", |m| m.name.as_str());
    let lang = Lang::choose(
        query_param(req, "lang").as_deref(),
        req.headers
            .get(http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
        s.locale.as_deref(),
    );
    let html = page::render(&s, merchant, lang)
        .map_err(|e| ApiError::internal(format!("page rendering failed: {e}")))?;
    let mut r = page::ok_body(bytes::Bytes::from(html), "text/html; charset=utf-8");
    let h = r.headers_mut();
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert("content-language", HeaderValue::from_static(lang.code()));
    h.insert("vary", HeaderValue::from_static("Accept-Language"));
    Ok(r)
}

/// `GET /c/{id}/qr.svg?method=…`: the option's payment URI as a QR code (rendered once, cached).
pub(super) fn qr(state: &AppState, req: &Req, id: &str) -> Result<Response, ApiError> {
    let s = load(state, id)?;
    let method = query_param(req, "method");
    let option = match &method {
        Some(m) => s.payment_options.iter().find(|o| &o.method == m),
        None => s.payment_options.first(),
    }
    .ok_or_else(|| {
        ApiError::invalid(
            Code::ParameterInvalid,
            "method",
            format!(
                "this session offers no method {:?}",
                method.unwrap_or_default()
            ),
        )
    })?;
    let svg = state
        .qr
        .svg(&option.uri)
        .ok_or_else(|| ApiError::internal("QR rendering failed"))?;
    let mut r = page::ok_body(bytes::Bytes::from(svg.as_bytes().to_vec()), "image/svg+xml");
    r.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("private, max-age=86400, immutable"),
    );
    Ok(r)
}

/// Asks each chain the session can be paid on for the claimed transaction, in the background.
fn check_tx_claim(state: &AppState, s: &Session, tx: &str) {
    let Ok(hash) = tx.parse::<alloy::primitives::B256>() else {
        return;
    };
    for option in &s.payment_options {
        let Some(network) = &option.network else {
            continue;
        };
        if let Some(chain) = state.config.chains.iter().find(|c| &c.name == network) {
            tokio::spawn(crate::watch::evm::claim::check(
                state.store.clone(),
                chain.clone(),
                s.clone(),
                hash,
            ));
        }
    }
}

/// A claim body (JSON, or a form from the no-JS page) to the reference the matcher looks for:
/// `upi:<12 digits>` or `tx:<0x…, lower case>`. Pure, so it can be fuzzed.
pub fn parse_claim(body: &[u8], is_form: bool) -> Result<String, ApiError> {
    let (utr, tx) = if is_form {
        let mut utr = None;
        let mut tx = None;
        for (k, v) in url::form_urlencoded::parse(body) {
            match k.as_ref() {
                "utr" => utr = Some(v.trim().to_owned()),
                "tx_hash" => tx = Some(v.trim().to_owned()),
                _ => {}
            }
        }
        (utr, tx)
    } else {
        let map = object_body(body, &["utr", "tx_hash"])?;
        (
            map.get("utr").and_then(|v| v.as_str()).map(str::to_owned),
            map.get("tx_hash")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        )
    };
    match (utr, tx) {
        (Some(u), None) if u.len() == 12 && u.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(format!("upi:{u}"))
        }
        (None, Some(t))
            if t.len() == 66
                && t.starts_with("0x")
                && t[2..].bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(format!("tx:{}", t.to_ascii_lowercase()))
        }
        _ => Err(ApiError::new(
            Code::ParameterInvalid,
            "give either utr (the 12-digit UPI reference) or tx_hash (0x and 64 hex digits)",
        )),
    }
}

/// `POST /c/{id}/claim`: the customer hands over a UTR or transaction hash. It is validated and
/// recorded for the matcher, which checks it against the bank credit or the chain; a claim alone
/// never moves money.
pub(super) async fn claim(state: &AppState, req: &Req, id: &str) -> Result<Response, ApiError> {
    let s = load(state, id)?;
    let is_form = is_form(req);
    let reference = parse_claim(&req.body, is_form)?;
    let op = WriteOp::Claim {
        session_id: s.id.clone(),
        reference: reference.clone(),
    };
    // The same answer whether or not it matched at once: the page's live status tells the
    // customer, and the answer gives nobody a way to test guessed references.
    if let Err(e) = write(state.store.as_ref(), op, None).await? {
        return Err(op_error(&e));
    }
    if let Some(tx) = reference.strip_prefix("tx:") {
        check_tx_claim(state, &s, tx);
    }
    if is_form {
        let mut r = Response::new(Vec::new().into());
        *r.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(&format!("/c/{}", s.id)) {
            r.headers_mut().insert(http::header::LOCATION, v);
        }
        return Ok(r);
    }
    Ok(json_response(
        StatusCode::ACCEPTED,
        br#"{"status":"received","message":"The reference was recorded; the payment is applied once the bank or the chain confirms it."}"#.to_vec(),
    ))
}

/// `POST /c/{id}/sender {"address"}`: the customer names, before paying, the address a token
/// payment will come from. Stored on the session with its time; a later claim of a transfer that
/// matched nothing (a short exchange withdrawal) is applied only if it came from this address in
/// a later block, since a transaction hash alone is public.
pub(super) async fn sender(state: &AppState, req: &Req, id: &str) -> Result<Response, ApiError> {
    let s = load(state, id)?;
    let is_form = is_form(req);
    let address = if is_form {
        url::form_urlencoded::parse(&req.body)
            .find(|(k, _)| k == "address")
            .map(|(_, v)| v.into_owned())
    } else {
        let map = object_body(&req.body, &["address"])?;
        map.get("address")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let key = address
        .as_deref()
        .and_then(crate::store::sender_key)
        .ok_or_else(|| {
            ApiError::invalid(
                Code::ParameterInvalid,
                "address",
                "address must be the 0x address (40 hex digits) or TRON address you pay from",
            )
        })?;
    let op = WriteOp::DeclareSender {
        session_id: s.id.clone(),
        address: key,
    };
    if let Err(e) = write(state.store.as_ref(), op, None).await? {
        return Err(op_error(&e));
    }
    if is_form {
        let mut r = Response::new(Vec::new().into());
        *r.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(&format!("/c/{}", s.id)) {
            r.headers_mut().insert(http::header::LOCATION, v);
        }
        return Ok(r);
    }
    Ok(json_response(
        StatusCode::ACCEPTED,
        br#"{"status":"received","message":"The sender address was recorded; transfers from it in later blocks can be matched to this payment."}"#.to_vec(),
    ))
}

/// Simulated payments one test session accepts.
const MAX_SIMULATED_PAYMENTS: usize = 10;

/// Pays a test session through the matcher, exactly as a watcher would report the money: the
/// payable amount (or `amount`, to rehearse partial and over payments) to the option's pay_to.
pub(super) async fn simulate(state: &AppState, req: &Req, id: &str) -> Result<Response, ApiError> {
    let s = load(state, id)?;
    if s.livemode {
        return Err(ApiError::forbidden(
            "simulate pays test sessions only; this session is live",
        ));
    }
    // Unauthenticated: bounded per session, so nobody can grow a session (and its callbacks)
    // without limit.
    if s.payments.len() >= MAX_SIMULATED_PAYMENTS {
        return Err(ApiError::new(
            Code::SimulateLimit,
            format!("a test session takes at most {MAX_SIMULATED_PAYMENTS} simulated payments"),
        ));
    }
    let is_form = is_form(req);
    // Test mode may name the sender of a token payment, to rehearse refunds to it.
    let mut sim_from: Option<String> = None;
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
        let map = object_body(&req.body, &["method", "amount", "from"])?;
        let get = |k: &str| -> Result<Option<String>, ApiError> {
            match map.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(v)) => Ok(Some(v.clone())),
                Some(_) => Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    k,
                    format!("{k} must be a string"),
                )),
            }
        };
        sim_from = get("from")?;
        (get("method")?, get("amount")?)
    };
    let option = match &method {
        Some(m) => s
            .payment_options
            .iter()
            .find(|o| &o.method == m)
            .ok_or_else(|| {
                ApiError::invalid(
                    Code::ParameterInvalid,
                    "method",
                    format!("this session offers no method {m:?}"),
                )
            })?,
        None => s
            .payment_options
            .first()
            .ok_or_else(|| ApiError::new(Code::ParameterInvalid, "no payment option"))?,
    };
    let amount_base = match &amount {
        Some(a) => parse_units(a, option.decimals)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| {
                ApiError::invalid(
                    Code::ParameterInvalid,
                    "amount",
                    format!(
                        "amount must be a positive decimal with at most {} places",
                        option.decimals
                    ),
                )
            })?,
        None => option.payable_base,
    };
    if let Some(f) = &sim_from
        && (option.chain_id.is_none()
            || f.len() != 42
            || !f.starts_with("0x")
            || !f[2..].bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::invalid(
            Code::ParameterInvalid,
            "from",
            "from must be a 0x address (40 hex digits), for a token payment",
        ));
    }
    let (reference, utr, tx_hash, log_index) = {
        let mut rng = rand::rng();
        match option.chain_id {
            None => {
                let utr: String = (0..12)
                    .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                    .collect();
                // Own namespace: a simulated UTR can never collide with a real credit's.
                (format!("sim:upi:{utr}"), Some(utr), None, None)
            }
            Some(chain) => {
                let bytes: [u8; 32] = rng.random();
                let tx = format!("0x{}", hex::encode(bytes));
                (format!("sim:evm:{chain}:{tx}:0"), None, Some(tx), Some(0))
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
        source: Some("simulate".into()),
        sender: None,
        from: sim_from,
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
