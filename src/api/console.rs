//! The operator console: server-rendered pages under `/console` on the operator listener.
//!
//! Login is by a named operator with password and TOTP code (or a one-time recovery code); it
//! gives an HttpOnly, SameSite=Strict cookie (Secure behind an https public_url) naming a login
//! stored durably (it survives a restart and can be revoked), and a per-login CSRF token that
//! every form carries in a hidden field. Every request's role is checked here, on the server;
//! every action lands in the audit log. No script at all; a strict CSP; everything escaped by
//! askama. See docs/operators.md.

use std::collections::HashMap;

use askama::Template;
use http::{HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::error::{ApiError, Code};
use super::{AppState, Req, Response};
use crate::domain::apikey::{Permission, new_key};
use crate::domain::event::Event;
use crate::domain::ids::random_base62;
use crate::domain::money::format_units;
use crate::domain::operator::{AuditEntry, Lockout, Login, Operator, Role};
use crate::domain::refund::{Refund, RefundStatus};
use crate::domain::session::{PaymentState, Session, Status};
use crate::domain::view::rfc3339;
use crate::domain::webhook::Delivery;
use crate::engine::operators::{self, LoginAttempt, LoginResult, Refusal};
use crate::store::{EventQuery, MatchResult, Outcome, RefundQuery, SessionQuery, WriteOp, write};

const COOKIE: &str = "pw_console";
/// A login lasts 12 hours.
const LOGIN_TTL_MS: i64 = 12 * 3600 * 1000;
/// No script, nothing from elsewhere, forms only to ourselves.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";
/// Audit entries the console page shows (the exports have all).
const AUDIT_SHOWN: usize = 200;
/// Audit entries one export holds at most.
const AUDIT_EXPORT_MAX: usize = 1_000_000;

/// The operator behind a request, from its login cookie.
pub struct Me {
    pub name: String,
    pub role: Role,
    pub csrf: String,
    /// The login's id (the SHA-256 of its cookie).
    pub login: String,
    pub client: String,
    /// What the audit log calls this request, if it is an action.
    pub action: Option<(String, String)>,
    /// Set when the action's write carried its own audit entry (`audited`).
    pub audited: std::sync::atomic::AtomicBool,
}

fn digest(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn record<T: serde::de::DeserializeOwned>(
    state: &AppState,
    kind: &str,
    key: &str,
) -> Result<Option<T>, ApiError> {
    match state.store.record(kind, key)? {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| ApiError::internal(format!("a stored {kind} is damaged: {e}"))),
        None => Ok(None),
    }
}

fn client_text(state: &AppState, req: &Req) -> String {
    super::limits::client_of(&state.config, req)
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The live login of the request's cookie, and its operator (whose role is read afresh, so a
/// changed role applies at once).
fn me(state: &AppState, req: &Req) -> Result<Option<Me>, ApiError> {
    let Some(cookie) = cookie_value(req) else {
        return Ok(None);
    };
    let id = digest(&cookie);
    let Some(l) = record::<Login>(state, operators::LOGIN, &id)? else {
        return Ok(None);
    };
    if !l.live(now_ms()) {
        return Ok(None);
    }
    let Some(op) = record::<Operator>(state, operators::OPERATOR, &l.operator)? else {
        return Ok(None);
    };
    Ok(Some(Me {
        name: op.name,
        role: op.role,
        csrf: l.csrf,
        login: l.id,
        client: client_text(state, req),
        action: None,
        audited: std::sync::atomic::AtomicBool::new(false),
    }))
}

/// The action's write with its audit entry, in one transaction.
async fn audited(
    state: &AppState,
    me: &Me,
    op: WriteOp,
) -> Result<Result<Outcome, crate::store::OpError>, crate::store::StoreError> {
    let (action, target) = me.action.clone().unwrap_or_default();
    let entry = AuditEntry::new(now_ms(), &me.name, &me.client, &action, &target, "ok");
    let out = write(
        state.store.as_ref(),
        WriteOp::Audited {
            op: Box::new(op),
            audit: Box::new(entry),
        },
        None,
    )
    .await;
    if out.is_ok() {
        me.audited.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    out
}

async fn audit(state: &AppState, me: &Me, action: &str, target: &str, outcome: &str) {
    let e = AuditEntry::new(now_ms(), &me.name, &me.client, action, target, outcome);
    match write(state.store.as_ref(), WriteOp::Audit(Box::new(e)), None).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "audit entry refused"),
        Err(e) => tracing::error!(error = %e, "audit entry not written"),
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
    /// "name (role)" of the operator logged in.
    pub who: String,
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

pub struct OperatorRow {
    pub name: String,
    pub role: &'static str,
    pub created: String,
    pub recovery_left: usize,
    pub locked_until: Option<String>,
}

pub struct LoginRow {
    pub id: String,
    pub operator: String,
    pub created: String,
    pub expires: String,
    pub client: String,
    pub user_agent: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "console/operators.html")]
struct OperatorsPage {
    layout: Layout,
    admin: bool,
    operators: Vec<OperatorRow>,
    logins: Vec<LoginRow>,
}

pub struct AuditRow {
    pub at: String,
    pub operator: String,
    pub client: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
}

#[derive(Template)]
#[template(path = "console/account.html")]
struct AccountPage {
    layout: Layout,
    name: String,
    role: &'static str,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    layout: Layout,
    shown: usize,
    entries: Vec<AuditRow>,
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

/// The least role a request needs: reading is for everyone; logging out and revoking one's own
/// logins too; keys, other operators and lockouts are the admin's; every other action (money)
/// the operator's.
fn required_role(method: &str, segs: &[&str]) -> Role {
    match (method, segs) {
        ("GET", _) | ("POST", ["logout"] | ["logins", _, "revoke"] | ["account", "password"]) => {
            Role::Viewer
        }
        ("POST", ["keys", ..] | ["operators", ..]) => Role::Admin,
        _ => Role::Operator,
    }
}

/// What the audit log calls a console request: (action, target). `None`: not an action (a
/// page read), or one whose rule writes its own entry (logout, revoking a login, unlocking).
fn action_of(method: &str, segs: &[&str]) -> Option<(String, String)> {
    match (method, segs) {
        ("GET", ["exports", name]) => Some((format!("export.{name}"), String::new())),
        ("GET", [name @ ("audit.csv" | "audit.json")]) => {
            Some((format!("export.{name}"), String::new()))
        }
        ("GET", _)
        | ("POST", ["logout"] | ["logins", ..] | ["operators", ..] | ["account", ..]) => None,
        ("POST", [what]) => Some((format!("{what}.create"), String::new())),
        ("POST", [what, id, verb]) => Some((format!("{what}.{verb}"), (*id).to_owned())),
        ("POST", other) => Some((other.join("."), String::new())),
        _ => None,
    }
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
        ("POST", ["login"]) => return login(state, req).await,
        _ => {}
    }
    let mut me = match me(state, req) {
        Ok(Some(m)) => m,
        Ok(None) => {
            return if method == "GET" {
                redirect("/console/login")
            } else {
                render(
                    StatusCode::UNAUTHORIZED,
                    &LoginPage {
                        error: Some("Your login has expired or was revoked; log in again.".into()),
                    },
                )
            };
        }
        Err(e) => return html(e.status, "The login could not be checked.".into()),
    };
    if method == "POST" {
        let f = form(req);
        let sent = f.get("csrf").map(String::as_str).unwrap_or("");
        if digest(sent) != digest(&me.csrf) {
            return message(
                StatusCode::FORBIDDEN,
                &me,
                "The form's security token is missing or stale; reload the page and try again.",
                "/console/sessions",
            );
        }
    }
    let action = action_of(method, segs);
    me.action = action.clone();
    let need = required_role(method, segs);
    if me.role < need {
        if let Some((what, target)) = &action {
            let why = format!("refused: needs the {} role", need.as_str());
            audit(state, &me, what, target, &why).await;
        }
        return message(
            StatusCode::FORBIDDEN,
            &me,
            &format!(
                "Your role ({}) may not do this; it needs the {} role.",
                me.role.as_str(),
                need.as_str()
            ),
            &back_target(segs),
        );
    }
    let out = page(state, req, segs, &me).await;
    let done = me.audited.load(std::sync::atomic::Ordering::Relaxed);
    if let Some((what, target)) = action.as_ref().filter(|_| !done) {
        let outcome = match &out {
            Ok(r) if r.status().is_client_error() || r.status().is_server_error() => {
                format!("refused: {}", r.status())
            }
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("refused: {}", e.message),
        };
        audit(state, &me, what, target, &outcome).await;
    }
    match out {
        Ok(r) => r,
        Err(e) => message(e.status, &me, &e.message, &back_target(segs)),
    }
}

fn back_target(segs: &[&str]) -> String {
    match segs.first().copied() {
        Some(
            s @ ("sessions" | "keys" | "links" | "credits" | "refunds" | "watchers" | "exports"
            | "operators" | "audit" | "account"),
        ) => {
            format!("/console/{s}")
        }
        _ => "/console/sessions".into(),
    }
}

fn message(status: StatusCode, me: &Me, text: &str, back: &str) -> Response {
    render(
        status,
        &MessagePage {
            layout: Layout {
                title: "Not done".into(),
                csrf: me.csrf.clone(),
                who: format!("{} ({})", me.name, me.role.as_str()),
                nav: "",
                notice: None,
                error: Some(text.to_owned()),
            },
            back: back.to_owned(),
        },
    )
}

fn login_page(status: StatusCode, error: &str) -> Response {
    render(
        status,
        &LoginPage {
            error: Some(error.to_owned()),
        },
    )
}

fn lockout_of(state: &AppState, key: &str) -> Lockout {
    record::<Lockout>(state, operators::LOCKOUT, key)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A login: the locks are read first (a locked account costs no argon2 run), the password and
/// code are checked here, and the writer decides atomically (locks again, TOTP replay,
/// recovery codes, counters, the login record and the audit entry).
async fn login(state: &AppState, req: &Req) -> Response {
    let client = client_text(state, req);
    let f = form(req);
    let name = f.get("name").map(|s| s.trim()).unwrap_or("").to_owned();
    let password = f.get("password").cloned().unwrap_or_default();
    let code: String = f
        .get("code")
        .map(|c| c.chars().filter(|c| !c.is_whitespace()).collect())
        .unwrap_or_default();
    let wrong = "The name, password or code is wrong.";
    if name.is_empty() || name.len() > 64 || password.is_empty() || code.is_empty() {
        return login_page(
            StatusCode::UNAUTHORIZED,
            "Enter your operator name, password and code.",
        );
    }
    let now = now_ms();
    let locked = |until: i64| {
        login_page(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many failed logins: locked until {} (an admin can unlock an account).",
                rfc3339(until)
            ),
        )
    };
    let (acct, cl) = (
        lockout_of(state, &operators::account_key(&name)),
        lockout_of(state, &operators::client_key(&client)),
    );
    let op = match record::<Operator>(state, operators::OPERATOR, &name) {
        Ok(op) => op,
        Err(e) => return html(e.status, "The login could not be checked.".into()),
    };
    let (hash, secret) = match &op {
        Some(o) => (o.password_hash.clone(), Some(o.totp_secret.clone())),
        None => (crate::domain::operator::dummy_hash().to_owned(), None),
    };
    // Locked: no argon2 run; the writer finds it locked and writes the audit entry.
    let skip_hash = acct.locked(now) || cl.locked(now);
    let password_ok = !skip_hash
        && tokio::task::spawn_blocking(move || {
            crate::domain::operator::verify_password(&password, &hash)
        })
        .await
        .unwrap_or(false);
    let now_secs = u64::try_from(now / 1000).unwrap_or(0);
    let totp_step = secret
        .as_deref()
        .and_then(|s| crate::domain::operator::totp_step(s, &code, now_secs));
    let recovery_hash = totp_step
        .is_none()
        .then(|| crate::domain::operator::recovery_hash(&code));
    let cookie = random_base62(32);
    let user_agent: String = req
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    let attempt = LoginAttempt {
        name: name.clone(),
        client: client.clone(),
        password_ok,
        totp_step,
        recovery_hash,
        login: Login {
            id: digest(&cookie),
            operator: name.clone(),
            csrf: random_base62(32),
            created_at_ms: now,
            expires_at_ms: now + LOGIN_TTL_MS,
            client,
            user_agent,
            revoked_at_ms: None,
        },
    };
    match write(
        state.store.as_ref(),
        WriteOp::Login(Box::new(attempt)),
        None,
    )
    .await
    {
        Ok(Ok(Outcome::Login(LoginResult::LoggedIn(_)))) => {}
        Ok(Ok(Outcome::Login(LoginResult::Refused(Refusal::Locked { until_ms })))) => {
            return locked(until_ms);
        }
        Ok(Ok(Outcome::Login(LoginResult::Refused(Refusal::Wrong(_))))) => {
            return login_page(StatusCode::UNAUTHORIZED, wrong);
        }
        Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
            return html(StatusCode::INTERNAL_SERVER_ERROR, "login failed".into());
        }
    }
    let mut r = redirect("/console/sessions");
    let secure = if state.config.server.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={cookie}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        LOGIN_TTL_MS / 1000
    )) {
        r.headers_mut().insert(http::header::SET_COOKIE, v);
    }
    r
}

fn layout(title: &str, me: &Me, nav: &'static str, req: &Req) -> Layout {
    Layout {
        title: title.to_owned(),
        csrf: me.csrf.clone(),
        who: format!("{} ({})", me.name, me.role.as_str()),
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

async fn page(state: &AppState, req: &Req, segs: &[&str], me: &Me) -> Result<Response, ApiError> {
    let f = form(req);
    let field = |k: &str| f.get(k).map(String::as_str);
    match (req.method.as_str(), segs) {
        ("GET", [] | [""]) => Ok(redirect("/console/sessions")),
        ("POST", ["logout"]) => {
            let entry = AuditEntry::new(now_ms(), &me.name, &me.client, "logout", "", "ok");
            let op = WriteOp::RevokeLogin {
                id: me.login.clone(),
                owner: Some(me.name.clone()),
                audit: Box::new(entry),
            };
            if let Err(e) = write(state.store.as_ref(), op, None).await? {
                return Err(super::error::op_error(&e));
            }
            let mut r = redirect("/console/login");
            r.headers_mut().insert(
                http::header::SET_COOKIE,
                HeaderValue::from_static(
                    "pw_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
                ),
            );
            Ok(r)
        }
        ("GET", ["operators"]) => operators_page(state, req, me),
        ("GET", ["account"]) => Ok(render(
            StatusCode::OK,
            &AccountPage {
                layout: layout("Account", me, "", req),
                name: me.name.clone(),
                role: me.role.as_str(),
            },
        )),
        ("POST", ["account", "password"]) => {
            let current = field("current").unwrap_or("").to_owned();
            let new = field("new").unwrap_or("").to_owned();
            if field("repeat") != Some(new.as_str()) {
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    "repeat",
                    "The two new passwords differ; nothing was changed.",
                ));
            }
            crate::domain::operator::check_new_password(&new, &me.name)
                .map_err(|m| ApiError::invalid(Code::ParameterInvalid, "new", m))?;
            let op = record::<Operator>(state, operators::OPERATOR, &me.name)?
                .ok_or_else(|| ApiError::not_found("operator", &me.name))?;
            let hash = op.password_hash.clone();
            let ok = tokio::task::spawn_blocking(move || {
                crate::domain::operator::verify_password(&current, &hash)
            })
            .await
            .unwrap_or(false);
            if !ok {
                audit(
                    state,
                    me,
                    "account.password",
                    &me.name,
                    "refused: wrong current password",
                )
                .await;
                return Err(ApiError::invalid(
                    Code::ParameterInvalid,
                    "current",
                    "The current password is wrong; nothing was changed.",
                ));
            }
            let password_hash =
                tokio::task::spawn_blocking(move || crate::domain::operator::hash_password(&new))
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            let entry = AuditEntry::new(
                now_ms(),
                &me.name,
                &me.client,
                "account.password",
                &me.name,
                "ok",
            );
            let op = WriteOp::SetPassword {
                name: me.name.clone(),
                password_hash,
                audit: Box::new(entry),
            };
            match write(state.store.as_ref(), op, None).await? {
                Ok(_) => Ok(back("/console/account", "Your password was changed.")),
                Err(e) => Err(super::error::op_error(&e)),
            }
        }
        ("POST", ["logins", id, "revoke"]) => {
            let entry = AuditEntry::new(now_ms(), &me.name, &me.client, "login.revoke", id, "ok");
            let op = WriteOp::RevokeLogin {
                id: (*id).to_owned(),
                owner: (me.role != Role::Admin).then(|| me.name.clone()),
                audit: Box::new(entry),
            };
            match write(state.store.as_ref(), op, None).await? {
                Ok(_) => Ok(back("/console/operators", "The login was revoked.")),
                Err(e) => Err(super::error::op_error(&e).with_id(id)),
            }
        }
        ("POST", ["operators", name, "unlock"]) => {
            let entry = AuditEntry::new(
                now_ms(),
                &me.name,
                &me.client,
                "operator.unlock",
                name,
                "ok",
            );
            let op = WriteOp::UnlockOperator {
                name: (*name).to_owned(),
                audit: Box::new(entry),
            };
            match write(state.store.as_ref(), op, None).await? {
                Ok(_) => Ok(back("/console/operators", &format!("{name} was unlocked."))),
                Err(e) => Err(super::error::op_error(&e).with_id(name)),
            }
        }
        ("GET", ["audit"]) => {
            let entries = audit_entries(state, AUDIT_SHOWN, true)?
                .into_iter()
                .map(|e| AuditRow {
                    at: rfc3339(e.at_ms),
                    operator: e.operator,
                    client: e.client,
                    action: e.action,
                    target: e.target,
                    outcome: e.outcome,
                })
                .collect();
            Ok(render(
                StatusCode::OK,
                &AuditPage {
                    layout: layout("Audit log", me, "audit", req),
                    shown: AUDIT_SHOWN,
                    entries,
                },
            ))
        }
        ("GET", ["audit.json"]) => {
            let all = audit_entries(state, AUDIT_EXPORT_MAX, false)?;
            let body = serde_json::to_vec(&serde_json::json!({
                "object": "list",
                "data": all.iter().map(|e| serde_json::json!({
                    "id": e.id, "at": rfc3339(e.at_ms), "operator": e.operator,
                    "client": e.client, "action": e.action, "target": e.target,
                    "outcome": e.outcome,
                })).collect::<Vec<_>>(),
            }))
            .map_err(|e| ApiError::internal(e.to_string()))?;
            let mut r = Response::new(body.into());
            headers(&mut r, "application/json");
            attachment(&mut r, "audit.json");
            Ok(r)
        }
        ("GET", ["audit.csv"]) => {
            let all = audit_entries(state, AUDIT_EXPORT_MAX, false)?;
            let mut out = String::from("id,at,operator,client,action,target,outcome\r\n");
            for e in &all {
                let row = [
                    e.id.as_str(),
                    &rfc3339(e.at_ms),
                    &e.operator,
                    &e.client,
                    &e.action,
                    &e.target,
                    &e.outcome,
                ]
                .map(csv_field)
                .join(",");
                out.push_str(&row);
                out.push_str("\r\n");
            }
            let mut r = Response::new(out.into());
            headers(&mut r, "text/csv; charset=utf-8");
            attachment(&mut r, "audit.csv");
            Ok(r)
        }
        ("GET", ["sessions"]) => sessions(state, req, me),
        ("GET", ["sessions", id]) => session(state, req, me, id),
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
            match audited(state, me, op).await? {
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
        ("GET", ["keys"]) => keys(state, req, me, None),
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
            match audited(
                state,
                me,
                WriteOp::CreateKey {
                    key: Box::new(key),
                    hash,
                },
            )
            .await?
            {
                Ok(Outcome::Key(k)) => keys(state, req, me, Some((k.id.clone(), secret))),
                Ok(_) => Err(ApiError::internal("unexpected outcome")),
                Err(e) => Err(super::error::op_error(&e)),
            }
        }
        ("POST", ["keys", id, "revoke"]) => {
            let op = WriteOp::RevokeKey {
                key_id: (*id).to_owned(),
                now_ms: now_ms(),
            };
            match audited(state, me, op).await? {
                Ok(Outcome::Key(k)) => {
                    state.keys.evict(&k.id);
                    Ok(back("/console/keys", &format!("Key {} revoked.", k.id)))
                }
                Ok(_) => Err(ApiError::internal("unexpected outcome")),
                Err(e) => Err(super::error::op_error(&e).with_id(id)),
            }
        }
        ("GET", ["links"]) => links(state, req, me),
        ("POST", ["links"]) => create_link(state, me, &f).await,
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
            match audited(state, me, op).await? {
                Ok(Outcome::Link(l)) => Ok(back(
                    "/console/links",
                    &format!("Link {} deactivated.", l.id),
                )),
                Ok(_) => Err(ApiError::internal("unexpected outcome")),
                Err(e) => Err(super::error::op_error(&e).with_id(id)),
            }
        }
        ("GET", ["credits"]) => credits(state, req, me),
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
            match audited(state, me, op).await? {
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
            match audited(state, me, op).await? {
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
        ("GET", ["refunds"]) => refunds(state, req, me),
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
                layout: layout("Watchers", me, "watchers", req),
                rows: watcher_status(state)?,
            },
        )),
        ("GET", ["exports"]) => Ok(render(
            StatusCode::OK,
            &ExportsPage {
                layout: layout("Exports", me, "exports", req),
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

/// A CSV field, quoted when needed, with formula-leading text defused (a spreadsheet must not
/// run what an attacker typed as an operator name).
fn csv_field(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

fn attachment(r: &mut Response, name: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        r.headers_mut().insert(http::header::CONTENT_DISPOSITION, v);
    }
}

/// Audit entries, oldest first or newest first.
fn audit_entries(
    state: &AppState,
    limit: usize,
    newest_first: bool,
) -> Result<Vec<AuditEntry>, ApiError> {
    state
        .store
        .records(operators::AUDIT, None, limit, newest_first)?
        .into_iter()
        .map(|(_, b)| {
            serde_json::from_slice(&b)
                .map_err(|e| ApiError::internal(format!("a stored audit entry is damaged: {e}")))
        })
        .collect()
}

fn operators_page(state: &AppState, req: &Req, me: &Me) -> Result<Response, ApiError> {
    let now = now_ms();
    let mut ops = Vec::new();
    for (_, b) in state
        .store
        .records(operators::OPERATOR, None, 10_000, false)?
    {
        let o: Operator = serde_json::from_slice(&b)
            .map_err(|e| ApiError::internal(format!("a stored operator is damaged: {e}")))?;
        let lock = lockout_of(state, &operators::account_key(&o.name));
        ops.push(OperatorRow {
            role: o.role.as_str(),
            created: rfc3339(o.created_at_ms),
            recovery_left: o.recovery_codes.len(),
            locked_until: lock.locked(now).then(|| rfc3339(lock.locked_until_ms)),
            name: o.name,
        });
    }
    let mut logins = Vec::new();
    for (_, b) in state
        .store
        .records(operators::LOGIN, None, 100_000, false)?
    {
        let l: Login = serde_json::from_slice(&b)
            .map_err(|e| ApiError::internal(format!("a stored login is damaged: {e}")))?;
        if !l.live(now) || (me.role != Role::Admin && l.operator != me.name) {
            continue;
        }
        logins.push(LoginRow {
            current: l.id == me.login,
            created: rfc3339(l.created_at_ms),
            expires: rfc3339(l.expires_at_ms),
            id: l.id,
            operator: l.operator,
            client: l.client,
            user_agent: l.user_agent,
        });
    }
    Ok(render(
        StatusCode::OK,
        &OperatorsPage {
            layout: layout("Operators", me, "operators", req),
            admin: me.role == Role::Admin,
            operators: ops,
            logins,
        },
    ))
}

fn sessions(state: &AppState, req: &Req, me: &Me) -> Result<Response, ApiError> {
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
                me,
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

fn session(state: &AppState, req: &Req, me: &Me, id: &str) -> Result<Response, ApiError> {
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
            layout: layout(&format!("Session {}", s.id), me, "sessions", req),
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
    me: &Me,
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
            layout: layout("API keys", me, "keys", req),
            merchants: merchants(state),
            keys,
            created,
        },
    ))
}

/// Every merchant's links in both modes, newest first (100 per merchant and mode).
fn links(state: &AppState, req: &Req, me: &Me) -> Result<Response, ApiError> {
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
            layout: layout("Payment links", me, "links", req),
            merchants: merchants(state),
            links,
        },
    ))
}

/// The console's form, read into the API's create body (amounts typed as decimals) and
/// validated by the same rules.
async fn create_link(
    state: &AppState,
    me: &Me,
    f: &HashMap<String, String>,
) -> Result<Response, ApiError> {
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
    let op = WriteOp::CreateLink {
        link: Box::new(link),
    };
    match audited(state, me, op).await? {
        Ok(Outcome::Link(l)) => Ok(back(
            "/console/links",
            &format!("Link {} created: {}", l.id, l.url),
        )),
        Ok(_) => Err(ApiError::internal("unexpected outcome")),
        Err(e) => Err(super::error::op_error(&e)),
    }
}

fn credits(state: &AppState, req: &Req, me: &Me) -> Result<Response, ApiError> {
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
            layout: layout("Credits", me, "credits", req),
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

fn refunds(state: &AppState, req: &Req, me: &Me) -> Result<Response, ApiError> {
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
            layout: layout("Refunds", me, "refunds", req),
            status,
            refunds: page.items.iter().map(|r| refund_row(state, r)).collect(),
        },
    ))
}
