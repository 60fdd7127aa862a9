//! The operator console: server-rendered pages under `/console` on the operator listener.
//!
//! Login is with the admin token; it gives an HttpOnly, SameSite=Strict cookie naming a login
//! kept in memory (a restart logs everyone out), and a per-login CSRF token that every form
//! carries in a hidden field. No script at all; a strict CSP; everything escaped by askama.

use std::collections::HashMap;
use std::sync::Mutex;

use askama::Template;
use http::{HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::error::{ApiError, Code};
use super::{AppState, Req, Response};
use crate::domain::apikey::{Permission, new_key};
use crate::domain::event::Event;
use crate::domain::ids::random_base62;
use crate::domain::money::format_units;
use crate::domain::refund::{Refund, RefundStatus};
use crate::domain::session::{PaymentState, Session, Status};
use crate::domain::view::rfc3339;
use crate::domain::webhook::Delivery;
use crate::store::{EventQuery, MatchResult, Outcome, RefundQuery, SessionQuery, WriteOp, write};

const COOKIE: &str = "pw_console";
/// A login lasts 12 hours.
const LOGIN_TTL_MS: i64 = 12 * 3600 * 1000;
/// Failed logins allowed per minute from one client before it is answered 429 (per client, so
/// one client guessing cannot lock the operator out).
const MAX_FAILED_PER_MINUTE: u32 = 10;
/// No script, nothing from elsewhere, forms only to ourselves.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

struct Login {
    csrf: String,
    expires_ms: i64,
}

/// Logins of the console, by the SHA-256 of their cookie.
#[derive(Default)]
pub struct Logins {
    map: Mutex<HashMap<String, Login>>,
}

fn digest(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Logins {
    /// A new login: (cookie value, csrf token).
    fn create(&self) -> Option<(String, String)> {
        let cookie = random_base62(32);
        let csrf = random_base62(32);
        let now = now_ms();
        let mut m = self.map.lock().ok()?;
        m.retain(|_, l| l.expires_ms > now);
        m.insert(
            digest(&cookie),
            Login {
                csrf: csrf.clone(),
                expires_ms: now + LOGIN_TTL_MS,
            },
        );
        Some((cookie, csrf))
    }

    /// The CSRF token of the request's login, if it has a live one.
    fn csrf_of(&self, req: &Req) -> Option<String> {
        let cookie = cookie_value(req)?;
        let m = self.map.lock().ok()?;
        m.get(&digest(&cookie))
            .filter(|l| l.expires_ms > now_ms())
            .map(|l| l.csrf.clone())
    }

    fn remove(&self, req: &Req) {
        if let (Some(c), Ok(mut m)) = (cookie_value(req), self.map.lock()) {
            m.remove(&digest(&c));
        }
    }
}

fn cookie_value(req: &Req) -> Option<String> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn form(req: &Req) -> HashMap<String, String> {
    url::form_urlencoded::parse(&req.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn query(req: &Req) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn headers(r: &mut Response, content_type: &'static str) {
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    headers(&mut r, "text/html; charset=utf-8");
    r
}

fn render<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(b) => html(status, b),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>error</title><p>The page could not be rendered.</p>".into(),
            )
        }
    }
}

fn redirect(to: &str) -> Response {
    let mut r = Response::new(Vec::new().into());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    headers(&mut r, "text/plain; charset=utf-8");
    r
}

/// `path?notice=…`: where an action sends the operator back, with what happened.
fn back(path: &str, notice: &str) -> Response {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("notice", notice)
        .finish();
    redirect(&format!("{path}?{q}"))
}

/// What every page's layout needs.
pub struct Layout {
    pub title: String,
    pub csrf: String,
    pub nav: &'static str,
    pub notice: Option<String>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/message.html")]
struct MessagePage {
    layout: Layout,
    back: String,
}

pub struct SessionRow {
    pub id: String,
    pub merchant: String,
    pub mode: &'static str,
    pub status: &'static str,
    pub payment_status: &'static str,
    pub amount: String,
    pub received: String,
    pub reference: String,
    pub created: String,
    pub late: bool,
    /// A payment was reversed by the bank.
    pub reversed: bool,
}

fn money(amount_minor: u64, currency: crate::domain::method::Currency) -> String {
    super::display_amount(amount_minor, currency)
}

fn session_row(s: &Session) -> SessionRow {
    SessionRow {
        id: s.id.clone(),
        merchant: s.merchant_id.clone(),
        mode: mode(s.livemode),
        status: s.status.as_str(),
        payment_status: s.payment_status.as_str(),
        amount: money(s.amount, s.currency),
        received: money(s.amount_received, s.currency),
        reference: s.client_reference_id.clone().unwrap_or_default(),
        created: rfc3339(s.created_at_ms),
        late: s.paid_late || s.payments.iter().any(|p| p.late),
        reversed: s.payments.iter().any(|p| p.reversed),
    }
}

fn mode(livemode: bool) -> &'static str {
    if livemode { "live" } else { "test" }
}

pub struct Filters {
    pub status: String,
    pub method: String,
    pub merchant: String,
    pub mode: String,
    pub reference: String,
    pub late: bool,
}

#[derive(Template)]
#[template(path = "console/sessions.html")]
struct SessionsPage {
    layout: Layout,
    f: Filters,
    merchants: Vec<String>,
    methods: Vec<String>,
    rows: Vec<SessionRow>,
}

pub struct PaymentRow {
    pub id: String,
    pub method: String,
    pub amount: String,
    pub status: String,
    pub late: bool,
    pub reference: String,
    pub from: String,
    pub received: String,
}

pub struct AttemptRow {
    pub at: String,
    pub status: String,
    pub error: String,
}

pub struct DeliveryRow {
    pub url: String,
    pub state: String,
    pub attempts: Vec<AttemptRow>,
}

pub struct EventRow {
    pub id: String,
    pub kind: &'static str,
    pub created: String,
    pub deliveries: Vec<DeliveryRow>,
}

pub struct RefundRow {
    pub id: String,
    pub session: String,
    pub merchant: String,
    pub mode: &'static str,
    pub method: String,
    pub amount: String,
    pub status: &'static str,
    pub pending: bool,
    pub is_upi: bool,
    pub reason: String,
    pub reference: String,
    pub created: String,
    /// EIP-681 URI of the transfer back, when the customer's sending address is known.
    pub uri: Option<String>,
    /// Why there is no URI (for token refunds).
    pub no_uri: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "console/session.html")]
struct SessionPage {
    layout: Layout,
    s: SessionRow,
    description: String,
    email: String,
    expires: String,
    options: Vec<(String, String, String)>,
    payments: Vec<PaymentRow>,
    refunds: Vec<RefundRow>,
    events: Vec<EventRow>,
}

pub struct KeyRow {
    pub id: String,
    pub merchant: String,
    pub mode: &'static str,
    pub prefix: String,
    pub permissions: String,
    pub created: String,
    pub revoked: Option<String>,
}

pub struct LinkRow {
    pub id: String,
    pub merchant: String,
    pub mode: &'static str,
    pub url: String,
    pub amount: String,
    pub description: String,
    pub uses: String,
    pub completed: u64,
    pub expires: String,
    pub active: bool,
    pub counter: bool,
}

#[derive(Template)]
#[template(path = "console/links.html")]
struct LinksPage {
    layout: Layout,
    merchants: Vec<String>,
    links: Vec<LinkRow>,
}

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    layout: Layout,
    merchants: Vec<String>,
    keys: Vec<KeyRow>,
    /// A key just created: (id, secret), shown once.
    created: Option<(String, String)>,
}

pub struct CreditRow {
    pub id: String,
    pub merchant: String,
    pub mode: &'static str,
    pub status: String,
    pub amount: String,
    pub utr: String,
    pub tx_hash: String,
    pub received: String,
    pub reason: String,
    pub source: String,
}

#[derive(Template)]
#[template(path = "console/credits.html")]
struct CreditsPage {
    layout: Layout,
    status: String,
    credits: Vec<CreditRow>,
    claims: Vec<ClaimRow>,
    slots: Vec<SlotRow>,
}

/// A customer's claim the store could not tie to them, waiting for the operator.
struct ClaimRow {
    credit: String,
    session: String,
    claimed: String,
}

/// One price's payment capacity, as of its last checkout (see `metrics::SlotUse`).
pub struct SlotRow {
    pub method: String,
    pub mode: &'static str,
    pub price: String,
    pub in_use: usize,
    pub freed: usize,
    pub capacity: usize,
}

#[derive(Template)]
#[template(path = "console/refunds.html")]
struct RefundsPage {
    layout: Layout,
    status: String,
    refunds: Vec<RefundRow>,
}

/// One line of the watcher status: what the daemon knows about a feed of money.
pub struct WatcherStatus {
    /// `imap`, `forwarder`, later `chain`.
    pub kind: &'static str,
    pub name: String,
    pub state: String,
    pub last_seen: String,
}

#[derive(Template)]
#[template(path = "console/watchers.html")]
struct WatchersPage {
    layout: Layout,
    rows: Vec<WatcherStatus>,
}

#[derive(Template)]
#[template(path = "console/exports.html")]
struct ExportsPage {
    layout: Layout,
    merchants: Vec<String>,
}

/// What the daemon knows about its watchers. The chain watcher adds its rows here.
pub fn watcher_status(state: &AppState) -> Result<Vec<WatcherStatus>, ApiError> {
    let mut rows = Vec::new();
    let now = chrono::Utc::now().timestamp_millis();
    for c in state.chains.snapshot() {
        rows.push(WatcherStatus {
            kind: "chain",
            name: format!("{} (chain {}, {})", c.name, c.chain_id, c.token),
            state: if c.rpc_down || c.rate_limited || c.state == "disagreement" {
                format!(
                    "{}: {}",
                    match c.state.as_str() {
                        "rate_limited" => "RPC rate-limited (resting, retried as the provider allows)",
                        "disagreement" => "second opinion disagrees",
                        _ => "RPC down",
                    },
                    crate::redact::redact_text(c.last_error.as_deref().unwrap_or_default())
                )
            } else if c.progressing(now) {
                format!(
                    "ok via {}: head {}, final checkpoint {}, lag {} blocks, {} RPC errors, {} requests, {} rate limits, {} polling{}",
                    c.rpc_url,
                    c.head,
                    c.checkpoint,
                    c.lag(),
                    c.rpc_errors,
                    c.rpc_requests,
                    c.rpc_rate_limited,
                    if c.idle { "idle" } else { "active" },
                    if c.ws_connected {
                        ", new-heads subscription live"
                    } else {
                        ""
                    }
                )
            } else {
                "stalled: no successful poll recently".into()
            },
            last_seen: if c.last_ok_ms > 0 {
                rfc3339(c.last_ok_ms)
            } else {
                "never".into()
            },
        });
    }
    let imap_cursors = state.store.cursors("imap:")?;
    if let Some(cfg) = &state.config.imap {
        let prefix = format!("imap:{}@{}/{}/", cfg.username, cfg.host, cfg.mailbox);
        let mine: Vec<&(String, u64)> = imap_cursors
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .collect();
        rows.push(WatcherStatus {
            kind: "imap",
            name: format!("{}@{}/{}", cfg.username, cfg.host, cfg.mailbox),
            state: "configured".into(),
            last_seen: match mine.last() {
                Some((_, uid)) => format!("last mail read: UID {uid}"),
                None => "no mail read yet".into(),
            },
        });
    }
    for (k, uid) in &imap_cursors {
        if state.config.imap.is_none() {
            rows.push(WatcherStatus {
                kind: "imap",
                name: k.clone(),
                state: "not configured now".into(),
                last_seen: format!("last mail read: UID {uid}"),
            });
        }
    }
    let seen = state.store.cursors("seen:forwarder:")?;
    for src in &state.config.ingest {
        let key = format!("seen:forwarder:{}", src.name);
        let last = seen.iter().find(|(k, _)| *k == key).map(|(_, ms)| *ms);
        rows.push(WatcherStatus {
            kind: "forwarder",
            name: format!("{} ({:?}, merchant {})", src.name, src.format, src.merchant),
            state: "configured".into(),
            last_seen: match last.and_then(|ms| i64::try_from(ms).ok()) {
                Some(ms) => rfc3339(ms),
                None => "never (since this was recorded)".into(),
            },
        });
    }
    Ok(rows)
}

/// Routes `/console/…` (`segs` without the `console`).
pub async fn route(state: &AppState, req: &Req, segs: &[&str]) -> Response {
    let method = req.method.as_str();
    match (method, segs) {
        ("GET", ["assets", "console.css"]) => {
            let mut r = Response::new(include_str!("../../assets/console.css").into());
            headers(&mut r, "text/css; charset=utf-8");
            return r;
        }
        ("GET", ["login"]) => return render(StatusCode::OK, &LoginPage { error: None }),
        ("POST", ["login"]) => return login(state, req),
        _ => {}
    }
    let Some(csrf) = state.console.csrf_of(req) else {
        return if method == "GET" {
            redirect("/console/login")
        } else {
            render(
                StatusCode::UNAUTHORIZED,
                &LoginPage {
                    error: Some("Your login has expired; log in again.".into()),
                },
            )
        };
    };
    if method == "POST" {
        let f = form(req);
        let sent = f.get("csrf").map(String::as_str).unwrap_or("");
        if digest(sent) != digest(&csrf) {
            return message(
                StatusCode::FORBIDDEN,
                &csrf,
                "The form's security token is missing or stale; reload the page and try again.",
                "/console/sessions",
            );
        }
    }
    match page(state, req, segs, &csrf).await {
        Ok(r) => r,
        Err(e) => message(e.status, &csrf, &e.message, &back_target(segs)),
    }
}

fn back_target(segs: &[&str]) -> String {
    match segs.first().copied() {
        Some(
            s @ ("sessions" | "keys" | "links" | "credits" | "refunds" | "watchers" | "exports"),
        ) => {
            format!("/console/{s}")
        }
        _ => "/console/sessions".into(),
    }
}

fn message(status: StatusCode, csrf: &str, text: &str, back: &str) -> Response {
    render(
        status,
        &MessagePage {
            layout: Layout {
                title: "Not done".into(),
                csrf: csrf.to_owned(),
                nav: "",
                notice: None,
                error: Some(text.to_owned()),
            },
            back: back.to_owned(),
        },
    )
}

fn login(state: &AppState, req: &Req) -> Response {
    let client = super::limits::client_of(&state.config, req)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    if !state.limits.login_allowed(client, MAX_FAILED_PER_MINUTE) {
        return render(
            StatusCode::TOO_MANY_REQUESTS,
            &LoginPage {
                error: Some("Too many failed logins; wait a minute.".into()),
            },
        );
    }
    let f = form(req);
    let token = f.get("token").map(String::as_str).unwrap_or("");
    if token.is_empty() || !super::admin::token_matches(state, token) {
        state.limits.login_failed(client);
        return render(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                error: Some("That is not the admin token.".into()),
            },
        );
    }
    let Some((cookie, _)) = state.console.create() else {
        return html(StatusCode::INTERNAL_SERVER_ERROR, "login failed".into());
    };
    let mut r = redirect("/console/sessions");
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={cookie}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        LOGIN_TTL_MS / 1000
    )) {
        r.headers_mut().insert(http::header::SET_COOKIE, v);
    }
    r
}

fn layout(title: &str, csrf: &str, nav: &'static str, req: &Req) -> Layout {
    Layout {
        title: title.to_owned(),
        csrf: csrf.to_owned(),
        nav,
        notice: query(req).remove("notice").filter(|n| !n.is_empty()),
        error: None,
    }
}

fn merchants(state: &AppState) -> Vec<String> {
    state
        .config
        .merchants
        .iter()
        .map(|m| m.id.clone())
        .collect()
}

async fn page(
    state: &AppState,
    req: &Req,
    segs: &[&str],
    csrf: &str,
) -> Result<Response, ApiError> {
    let f = form(req);
    let field = |k: &str| f.get(k).map(String::as_str);
    match (req.method.as_str(), segs) {
        ("GET", [] | [""]) => Ok(redirect("/console/sessions")),
        ("POST", ["logout"]) => {
            state.console.remove(req);
            let mut r = redirect("/console/login");
            r.headers_mut().insert(
                http::header::SET_COOKIE,
                HeaderValue::from_static(
                    "pw_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
                ),
            );
            Ok(r)
        }
        ("GET", ["sessions"]) => sessions(state, req, csrf),
        ("GET", ["sessions", id]) => session(state, req, csrf, id),
        ("POST", ["events", id, "redeliver"]) => {
            let e = state
                .store
                .event(id)?
                .ok_or_else(|| ApiError::not_found("event", id))?;
            let op = WriteOp::Redeliver {
                merchant_id: e.merchant_id.clone(),
                livemode: e.livemode,
                event_id: e.id.clone(),
            };
            match write(state.store.as_ref(), op, None).await? {
                Ok(Outcome::Deliveries(d)) => {
                    let to = field("session").unwrap_or("");
                    let path = if to.starts_with("cs_")
                        && to.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        format!("/console/sessions/{to}")
                    } else {
                        "/console/sessions".into()
                    };
                    Ok(back(
                        &path,
                        &format!("Event {id} queued again for {} destination(s).", d.len()),
                    ))
                }
                Ok(_) => Err(ApiError::internal("unexpected outcome")),
                Err(e) => Err(super::error::op_error(&e)),
            }
        }
        ("GET", ["keys"]) => keys(state, req, csrf, None),
        ("POST", ["keys"]) => {
            let merchant = field("merchant").unwrap_or("");
            if state.config.merchant(merchant).is_none() {
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    "merchant",
                    format!("no merchant {merchant:?} in the configuration"),
                ));
            }
            let livemode = match field("mode") {
                Some("live") => true,
                Some("test") | None => false,
                Some(other) => {
                    return Err(ApiError::invalid(
                        Code::ParameterInvalid,
                        "mode",
                        format!("mode must be test or live, not {other:?}"),
                    ));
                }
            };
            let permissions = match field("permissions")
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                None => Permission::DEFAULT.to_vec(),
                Some(p) => Permission::parse_list(p)
                    .map_err(|m| ApiError::invalid(Code::ParameterInvalid, "permissions", m))?,
            };
            let (key, secret, hash) = new_key(merchant, livemode, permissions, now_ms());
            match write(
                state.store.as_ref(),
                WriteOp::CreateKey {
                    key: Box::new(key),
                    hash,
                },
                None,
            )
            .await?
            {
                Ok(Outcome::Key(k)) => keys(state, req, csrf, Some((k.id.clone(), secret))),
                Ok(_) => Err(ApiError::internal("unexpected outcome")),
                Err(e) => Err(super::error::op_error(&e)),
            }
        }
        ("POST", ["keys", id, "revoke"]) => {
            let op = WriteOp::RevokeKey {
                key_id: (*id).to_owned(),
                now_ms: now_ms(),
            };
            match write(state.store.as_ref(), op, None).await? {
                Ok(Outcome::Key(k)) => {
                    state.keys.evict(&k.id);
                    Ok(back("/console/keys", &format!("Key {} revoked.", k.id)))
                }
                Ok(_) => Err(ApiError::internal("unexpected outcome")),
                Err(e) => Err(super::error::op_error(&e).with_id(id)),
            }
        }
        ("GET", ["links"]) => links(state, req, csrf),
        ("POST", ["links"]) => create_link(state, &f).await,
        ("POST", ["links", id, "deactivate"]) => {
            let l = state
                .store
                .payment_link(id)?
                .ok_or_else(|| ApiError::not_found("payment link", id))?;
            let op = WriteOp::DeactivateLink {
                merchant_id: l.merchant_id.clone(),
                livemode: l.livemode,
                id: l.id.clone(),
            };
            match write(state.store.as_ref(), op, None).await? {
                Ok(Outcome::Link(l)) => Ok(back(
                    "/console/links",
                    &format!("Link {} deactivated.", l.id),
                )),
                Ok(_) => Err(ApiError::internal("unexpected outcome")),
                Err(e) => Err(super::error::op_error(&e).with_id(id)),
            }
        }
        ("GET", ["credits"]) => credits(state, req, csrf),
        ("POST", ["credits", id, "assign"]) => {
            let session = field("session").map(str::trim).unwrap_or("");
            if session.is_empty() {
                return Err(ApiError::invalid(
                    Code::ParameterMissing,
                    "session",
                    "Enter the id (cs_…) of the session to assign the credit to.",
                ));
            }
            let op = WriteOp::AssignCredit {
                credit_id: (*id).to_owned(),
                session_id: session.to_owned(),
            };
            match write(state.store.as_ref(), op, None).await? {
                Ok(Outcome::Match(MatchResult::Matched { session, .. })) => Ok(back(
                    "/console/credits",
                    &format!(
                        "Credit {id} assigned to {}; the session is now {}.",
                        session.id,
                        session.status.as_str()
                    ),
                )),
                Ok(_) => Err(ApiError::internal("unexpected outcome")),
                Err(e) => Err(super::error::op_error(&e).with_id(id)),
            }
        }
        ("POST", ["credits", id, "reject"]) => {
            let session = field("session").map(str::trim).filter(|s| !s.is_empty());
            let op = WriteOp::RejectClaim {
                credit_id: (*id).to_owned(),
                session_id: session.map(str::to_owned),
            };
            match write(state.store.as_ref(), op, None).await? {
                Ok(_) => Ok(back(
                    "/console/credits",
                    &format!("The claim of credit {id} was rejected; the credit stays unmatched."),
                )),
                Err(e) => Err(super::error::op_error(&e).with_id(id)),
            }
        }
        ("POST", ["credits", id, "return"]) => {
            let c = super::refunds::return_credit(state, id, field("reference")).await?;
            Ok(back(
                "/console/credits",
                &format!("Credit {} marked returned.", c.id),
            ))
        }
        ("GET", ["refunds"]) => refunds(state, req, csrf),
        ("GET", ["refunds", id, "qr.svg"]) => {
            let r = state
                .store
                .refund(id)?
                .ok_or_else(|| ApiError::not_found("refund", id))?;
            let s = state.store.session(&r.session_id)?;
            let uri = s
                .as_ref()
                .and_then(|s| refund_uri(s, &r).ok())
                .ok_or_else(|| ApiError::not_found("refund QR", id))?;
            let svg = state
                .qr
                .svg(&uri)
                .ok_or_else(|| ApiError::internal("the QR could not be drawn"))?;
            let mut resp = Response::new(svg.as_str().to_owned().into());
            headers(&mut resp, "image/svg+xml");
            Ok(resp)
        }
        ("POST", ["refunds", id, "succeed"]) => {
            let r = super::refunds::succeed(state, id, field("tx_hash"), field("utr")).await?;
            Ok(back(
                "/console/refunds",
                &format!("Refund {} marked succeeded.", r.id),
            ))
        }
        ("POST", ["refunds", id, "fail"]) => {
            let r = super::refunds::fail(state, id, field("reason")).await?;
            Ok(back(
                "/console/refunds",
                &format!("Refund {} marked failed.", r.id),
            ))
        }
        ("GET", ["watchers"]) => Ok(render(
            StatusCode::OK,
            &WatchersPage {
                layout: layout("Watchers", csrf, "watchers", req),
                rows: watcher_status(state)?,
            },
        )),
        ("GET", ["exports"]) => Ok(render(
            StatusCode::OK,
            &ExportsPage {
                layout: layout("Exports", csrf, "exports", req),
                merchants: merchants(state),
            },
        )),
        ("GET", ["exports", name @ ("sessions.csv" | "payments.csv")]) => {
            let q = query(req);
            let merchant = q.get("merchant").map(String::as_str).unwrap_or("");
            if state.config.merchant(merchant).is_none() {
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    "merchant",
                    "choose a merchant",
                ));
            }
            let livemode = q.get("mode").map(String::as_str) == Some("live");
            let day = |k: &str, end: bool| -> Result<Option<i64>, ApiError> {
                match q.get(k).map(String::as_str).filter(|v| !v.is_empty()) {
                    None => Ok(None),
                    Some(v) => {
                        let d = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
                            ApiError::invalid(
                                Code::ParameterInvalid,
                                k,
                                format!("{k} must be a date (YYYY-MM-DD)"),
                            )
                        })?;
                        let t = if end {
                            d.and_hms_milli_opt(23, 59, 59, 999)
                        } else {
                            d.and_hms_opt(0, 0, 0)
                        };
                        Ok(t.map(|t| t.and_utc().timestamp_millis()))
                    }
                }
            };
            let w = super::exports::Window {
                gte_ms: day("from", false)?,
                lte_ms: day("to", true)?,
            };
            let kind = if *name == "sessions.csv" {
                super::exports::Kind::Sessions
            } else {
                super::exports::Kind::Payments
            };
            Ok(super::exports::stream(
                state.store.clone(),
                merchant.to_owned(),
                livemode,
                kind,
                w,
            ))
        }
        _ => Err(ApiError::route_missing(&req.method, &req.path)),
    }
}

fn sessions(state: &AppState, req: &Req, csrf: &str) -> Result<Response, ApiError> {
    let q = query(req);
    let get = |k: &str| q.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let f = Filters {
        status: get("status"),
        method: get("method"),
        merchant: get("merchant"),
        mode: get("mode"),
        reference: get("client_reference_id"),
        late: q.get("late").is_some_and(|v| v == "1"),
    };
    let status = match f.status.as_str() {
        "" => None,
        s => Some(Status::parse(s).ok_or_else(|| {
            ApiError::invalid(Code::ParameterInvalid, "status", "unknown status")
        })?),
    };
    let modes: Vec<bool> = match f.mode.as_str() {
        "test" => vec![false],
        "live" => vec![true],
        _ => vec![false, true],
    };
    let chosen: Vec<String> = if f.merchant.is_empty() {
        merchants(state)
    } else {
        vec![f.merchant.clone()]
    };
    const SHOWN: usize = 100;
    let mut found: Vec<Session> = Vec::new();
    for m in &chosen {
        for &livemode in &modes {
            let mut sq = SessionQuery {
                merchant_id: m.clone(),
                livemode,
                // Late payments are rarer: look further back for them.
                limit: if f.late { 2000 } else { SHOWN },
                status,
                payment_method: Some(f.method.clone()).filter(|v| !v.is_empty()),
                client_reference_id: Some(f.reference.clone()).filter(|v| !v.is_empty()),
                ..SessionQuery::default()
            };
            if f.late {
                sq.limit = sq.limit.min(2000);
            }
            let page = state.store.list_sessions(&sq)?;
            found.extend(
                page.items
                    .into_iter()
                    .filter(|s| !f.late || s.paid_late || s.payments.iter().any(|p| p.late)),
            );
        }
    }
    found.sort_by_key(|s| std::cmp::Reverse(s.created_at_ms));
    found.truncate(SHOWN);
    let mut methods: Vec<String> = state
        .config
        .merchants
        .iter()
        .flat_map(|m| m.methods.iter().map(|x| x.name.clone()))
        .collect();
    methods.sort();
    methods.dedup();
    Ok(render(
        StatusCode::OK,
        &SessionsPage {
            layout: layout(
                if f.late { "Late payments" } else { "Sessions" },
                csrf,
                if f.late { "late" } else { "sessions" },
                req,
            ),
            f,
            merchants: merchants(state),
            methods,
            rows: found.iter().map(session_row).collect(),
        },
    ))
}

/// The URI that sends a token refund back to the address the customer paid from (EIP-681, or
/// `tron:` on TRON).
pub fn refund_uri(s: &Session, r: &Refund) -> Result<String, &'static str> {
    let option = s
        .payment_options
        .iter()
        .find(|o| o.method == r.method)
        .ok_or("the session no longer lists this method")?;
    let (Some(contract), Some(chain_id)) = (&option.token_contract, option.chain_id) else {
        return Err("not a token payment");
    };
    let from = s
        .payments
        .iter()
        .rev()
        .filter(|p| p.method == r.method && p.state == PaymentState::Confirmed)
        .find_map(|p| p.from.clone())
        .ok_or("the customer's sending address is not known (the watcher did not record it): ask the customer for an address")?;
    // TRON options carry a `tron:` URI (and `T…` addresses): the refund is sent the same way.
    let tron = option.uri.starts_with("tron:");
    Ok(crate::checkout::uri::token_transfer(
        contract,
        chain_id,
        &from,
        r.amount_base,
        r.decimals,
        tron,
    ))
}

fn refund_row(state: &AppState, r: &Refund) -> RefundRow {
    let is_upi = r.currency == crate::domain::method::Currency::Inr;
    let (uri, no_uri) = if is_upi {
        (None, None)
    } else {
        match state.store.session(&r.session_id) {
            Ok(Some(s)) => match refund_uri(&s, r) {
                Ok(u) => (Some(u), None),
                Err(why) => (None, Some(why)),
            },
            _ => (None, Some("the session could not be read")),
        }
    };
    RefundRow {
        id: r.id.clone(),
        session: r.session_id.clone(),
        merchant: r.merchant_id.clone(),
        mode: mode(r.livemode),
        method: r.method.clone(),
        amount: format_units(r.amount_base, r.decimals),
        status: r.status.as_str(),
        pending: r.status == RefundStatus::Pending,
        is_upi,
        reason: r
            .failure_reason
            .clone()
            .or_else(|| r.reason.clone())
            .unwrap_or_default(),
        reference: r
            .tx_hash
            .clone()
            .or_else(|| r.utr.clone())
            .unwrap_or_default(),
        created: rfc3339(r.created_at_ms),
        uri,
        no_uri,
    }
}

/// Events of the session (or of its refunds), newest first, looking back over recent events.
fn session_events(state: &AppState, s: &Session) -> Result<Vec<Event>, ApiError> {
    let mut out = Vec::new();
    let mut q = EventQuery {
        merchant_id: s.merchant_id.clone(),
        livemode: s.livemode,
        limit: 500,
        ..EventQuery::default()
    };
    for _ in 0..10 {
        let page = state.store.list_events(&q)?;
        let last = page.items.last().map(|e| e.id.clone());
        for e in page.items {
            let obj = &e.data;
            if obj["id"] == s.id.as_str() || obj["session"] == s.id.as_str() {
                out.push(e);
            }
        }
        if !page.has_more || out.len() >= 200 {
            break;
        }
        q.starting_after = last;
    }
    Ok(out)
}

fn delivery_row(d: &Delivery) -> DeliveryRow {
    DeliveryRow {
        url: d.url.clone(),
        state: serde_json::to_value(d.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        attempts: d
            .attempts
            .iter()
            .map(|a| AttemptRow {
                at: rfc3339(a.at_ms),
                status: a
                    .status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                error: a.error.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

fn session(state: &AppState, req: &Req, csrf: &str, id: &str) -> Result<Response, ApiError> {
    let s = state
        .store
        .session(id)?
        .ok_or_else(|| ApiError::not_found("checkout session", id))?;
    let refunds = state.store.list_refunds(&RefundQuery {
        session_id: Some(s.id.clone()),
        limit: 100,
        ..RefundQuery::default()
    })?;
    let mut events = Vec::new();
    for e in session_events(state, &s)? {
        let deliveries = state.store.event_deliveries(&e.id)?;
        events.push(EventRow {
            id: e.id.clone(),
            kind: e.kind.as_str(),
            created: rfc3339(e.created_at_ms),
            deliveries: deliveries.iter().map(delivery_row).collect(),
        });
    }
    Ok(render(
        StatusCode::OK,
        &SessionPage {
            layout: layout(&format!("Session {}", s.id), csrf, "sessions", req),
            description: s.description.clone().unwrap_or_default(),
            email: s.customer_email.clone().unwrap_or_default(),
            expires: rfc3339(s.expires_at_ms),
            options: s
                .payment_options
                .iter()
                .map(|o| {
                    (
                        o.method.clone(),
                        o.pay_to.clone(),
                        format_units(o.payable_base, o.decimals),
                    )
                })
                .collect(),
            payments: s
                .payments
                .iter()
                .map(|p| PaymentRow {
                    id: p.id.clone(),
                    method: p.method.clone(),
                    amount: format_units(p.amount_base, p.decimals),
                    status: serde_json::to_value(p.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    late: p.late,
                    reference: p
                        .utr
                        .clone()
                        .or_else(|| p.tx_hash.clone())
                        .unwrap_or_default(),
                    from: p.from.clone().unwrap_or_default(),
                    received: rfc3339(p.received_at_ms),
                })
                .collect(),
            refunds: refunds.items.iter().map(|r| refund_row(state, r)).collect(),
            events,
            s: session_row(&s),
        },
    ))
}

fn keys(
    state: &AppState,
    req: &Req,
    csrf: &str,
    created: Option<(String, String)>,
) -> Result<Response, ApiError> {
    let keys = state
        .store
        .list_keys(None)?
        .iter()
        .map(|k| KeyRow {
            id: k.id.clone(),
            merchant: k.merchant_id.clone(),
            mode: mode(k.livemode),
            prefix: k.prefix.clone(),
            permissions: k
                .permissions
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            created: rfc3339(k.created_at_ms),
            revoked: k.revoked_at_ms.map(rfc3339),
        })
        .collect();
    Ok(render(
        if created.is_some() {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &KeysPage {
            layout: layout("API keys", csrf, "keys", req),
            merchants: merchants(state),
            keys,
            created,
        },
    ))
}

/// Every merchant's links in both modes, newest first (100 per merchant and mode).
fn links(state: &AppState, req: &Req, csrf: &str) -> Result<Response, ApiError> {
    let mut all = Vec::new();
    for m in &state.config.merchants {
        for livemode in [false, true] {
            all.extend(
                state
                    .store
                    .list_payment_links(&m.id, livemode, 100, None)?
                    .items,
            );
        }
    }
    all.sort_by_key(|l| std::cmp::Reverse(l.created_at_ms));
    let shown = |a: u64, cur: &str| crate::domain::view::display_price(a, cur);
    let links = all
        .iter()
        .map(|l| LinkRow {
            id: l.id.clone(),
            merchant: l.merchant_id.clone(),
            mode: mode(l.livemode),
            url: l.url.clone(),
            amount: match (l.amount, l.amount_min, l.amount_max) {
                (Some(a), _, _) => shown(a, &l.currency),
                (None, None, None) => format!("entered ({})", l.currency.to_ascii_uppercase()),
                (None, lo, hi) => format!(
                    "entered, {} – {}",
                    lo.map_or_else(|| "…".to_owned(), |a| shown(a, &l.currency)),
                    hi.map_or_else(|| "…".to_owned(), |a| shown(a, &l.currency))
                ),
            },
            description: l.description.clone().unwrap_or_default(),
            uses: match l.max_uses {
                Some(m) => format!("{} / {m}", l.uses),
                None => l.uses.to_string(),
            },
            completed: l.completed,
            expires: l.expires_at_ms.map(rfc3339).unwrap_or_default(),
            active: l.active,
            counter: l.counter,
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &LinksPage {
            layout: layout("Payment links", csrf, "links", req),
            merchants: merchants(state),
            links,
        },
    ))
}

/// The console's form, read into the API's create body (amounts typed as decimals) and
/// validated by the same rules.
async fn create_link(state: &AppState, f: &HashMap<String, String>) -> Result<Response, ApiError> {
    let field = |k: &str| f.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let merchant_id = field("merchant").unwrap_or("");
    let merchant = state.config.merchant(merchant_id).ok_or_else(|| {
        ApiError::invalid(
            Code::ParameterInvalid,
            "merchant",
            format!("no merchant {merchant_id:?} in the configuration"),
        )
    })?;
    let livemode = match field("mode") {
        Some("live") => true,
        Some("test") | None => false,
        Some(other) => {
            return Err(ApiError::invalid(
                Code::ParameterInvalid,
                "mode",
                format!("mode must be test or live, not {other:?}"),
            ));
        }
    };
    let mut body = serde_json::Map::new();
    for k in ["amount", "amount_min", "amount_max"] {
        if let Some(v) = field(k) {
            let minor = crate::domain::money::parse_units(v, 2)
                .ok()
                .and_then(|m| u64::try_from(m).ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        Code::ParameterInvalid,
                        k,
                        format!("{k} must be a decimal amount such as 149.50, not {v:?}"),
                    )
                })?;
            body.insert(k.into(), minor.into());
        }
    }
    if let Some(v) = field("max_uses") {
        let n: u64 = v.parse().map_err(|_| {
            ApiError::invalid(
                Code::ParameterInvalid,
                "max_uses",
                "max_uses must be a whole number",
            )
        })?;
        body.insert("max_uses".into(), n.into());
    }
    for k in ["currency", "description", "expires_at"] {
        if let Some(v) = field(k) {
            body.insert(k.into(), v.into());
        }
    }
    if let Some(m) = field("payment_methods") {
        let names: Vec<serde_json::Value> =
            m.split(',').map(|s| s.trim().to_owned().into()).collect();
        body.insert("payment_methods".into(), names.into());
    }
    if field("counter").is_some() {
        body.insert("counter".into(), true.into());
    }
    let bytes = serde_json::to_vec(&serde_json::Value::Object(body)).unwrap_or_default();
    let link = super::links::parse_link(state, merchant, livemode, &bytes)?;
    match write(
        state.store.as_ref(),
        WriteOp::CreateLink {
            link: Box::new(link),
        },
        None,
    )
    .await?
    {
        Ok(Outcome::Link(l)) => Ok(back(
            "/console/links",
            &format!("Link {} created: {}", l.id, l.url),
        )),
        Ok(_) => Err(ApiError::internal("unexpected outcome")),
        Err(e) => Err(super::error::op_error(&e)),
    }
}

fn credits(state: &AppState, req: &Req, csrf: &str) -> Result<Response, ApiError> {
    let q = query(req);
    let status = q
        .get("status")
        .cloned()
        .unwrap_or_else(|| "unmatched".into());
    let q = crate::store::CreditQuery {
        merchant_id: None,
        limit: 200,
        status: (status != "all").then(|| status.clone()),
        ..Default::default()
    };
    let credits = state
        .store
        .list_credits(&q)?
        .map(|p| p.items)
        .unwrap_or_default()
        .into_iter()
        .map(|c| CreditRow {
            merchant: c.merchant_id.clone().unwrap_or_else(|| "(unknown)".into()),
            mode: mode(c.livemode),
            amount: format_units(c.amount_base, c.decimals),
            utr: c.utr.clone().unwrap_or_default(),
            tx_hash: c.tx_hash.clone().unwrap_or_default(),
            received: rfc3339(c.received_at_ms),
            source: c.source.clone().unwrap_or_default(),
            id: c.id,
            status: c.status,
            reason: c.reason,
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &CreditsPage {
            layout: layout("Credits", csrf, "credits", req),
            status,
            credits,
            claims: state
                .store
                .claim_queue(200)?
                .into_iter()
                .map(|(credit, session, at)| ClaimRow {
                    credit,
                    session,
                    claimed: rfc3339(at),
                })
                .collect(),
            slots: crate::metrics::METRICS
                .slot_rows()
                .into_iter()
                .take(50)
                .map(|((method, live, price), u)| SlotRow {
                    method,
                    mode: mode(live),
                    price: format_units(price, u.decimals),
                    in_use: u.in_use,
                    freed: u.freed,
                    capacity: u.capacity,
                })
                .collect(),
        },
    ))
}

fn refunds(state: &AppState, req: &Req, csrf: &str) -> Result<Response, ApiError> {
    let q = query(req);
    let status = q.get("status").cloned().unwrap_or_else(|| "pending".into());
    let page = state.store.list_refunds(&RefundQuery {
        status: RefundStatus::parse(&status),
        limit: 200,
        ..RefundQuery::default()
    })?;
    Ok(render(
        StatusCode::OK,
        &RefundsPage {
            layout: layout("Refunds", csrf, "refunds", req),
            status,
            refunds: page.items.iter().map(|r| refund_row(state, r)).collect(),
        },
    ))
}
