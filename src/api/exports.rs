//! CSV exports of sessions and payments for accounting: `GET /v1/exports/sessions.csv` and
//! `payments.csv` (and the same from the operator console). The rows are streamed: a blocking
//! task reads the store a page at a time and hands chunks to the response through a small
//! channel, so a million sessions never sit in memory at once and a slow client slows the
//! reader instead of filling memory.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::error::{ApiError, Code};
use super::extract::query_pairs;
use super::{AppState, Req, Response};
use crate::domain::apikey::ApiKey;
use crate::domain::csv::push_row;
use crate::domain::money::format_units;
use crate::domain::session::Session;
use crate::domain::view::rfc3339;
use crate::store::{SessionQuery, SharedStore};

/// Sessions read per store transaction.
const PAGE: usize = 500;
/// Chunks waiting for the client; with `PAGE` this bounds memory to a few MB per download.
const CHANNEL: usize = 4;

/// Which export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sessions,
    Payments,
}

/// The time window of an export: `created[gte]`/`created[lte]` (aliases `created_gte`,
/// `created_lte`), unix seconds or RFC 3339. Sessions are filtered by when they were created,
/// payments by when the money arrived.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub gte_ms: Option<i64>,
    pub lte_ms: Option<i64>,
}

impl Window {
    fn contains(&self, ms: i64) -> bool {
        self.gte_ms.is_none_or(|g| ms >= g) && self.lte_ms.is_none_or(|l| ms <= l)
    }
}

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

/// Parses the window from a query string, rejecting anything else.
pub fn window(query: &str, extra: &[&str]) -> Result<(Window, Vec<(String, String)>), ApiError> {
    let mut allowed = vec!["created[gte]", "created[lte]", "created_gte", "created_lte"];
    allowed.extend_from_slice(extra);
    let pairs = query_pairs(query, &allowed)?;
    let mut w = Window::default();
    let mut rest = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "created[gte]" | "created_gte" if !v.is_empty() => w.gte_ms = Some(parse_time(&k, &v)?),
            "created[lte]" | "created_lte" if !v.is_empty() => w.lte_ms = Some(parse_time(&k, &v)?),
            "created[gte]" | "created_gte" | "created[lte]" | "created_lte" => {}
            _ => rest.push((k, v)),
        }
    }
    Ok((w, rest))
}

const SESSION_HEADER: &[&str] = &[
    "id",
    "created_at",
    "livemode",
    "status",
    "payment_status",
    "currency",
    "amount",
    "amount_received",
    "client_reference_id",
    "description",
    "customer_email",
    "customer_name",
    "paid_late",
    "completed_at",
    "metadata",
];

const PAYMENT_HEADER: &[&str] = &[
    "id",
    "session",
    "client_reference_id",
    "method",
    "currency",
    "amount",
    "amount_base_units",
    "status",
    "late",
    "utr",
    "tx_hash",
    "log_index",
    "block_number",
    "from",
    "received_at",
];

fn opt(v: Option<&str>) -> String {
    v.unwrap_or_default().to_owned()
}

fn session_row(out: &mut String, s: &Session) {
    let cells = [
        s.id.clone(),
        rfc3339(s.created_at_ms),
        s.livemode.to_string(),
        s.status.as_str().to_owned(),
        s.payment_status.as_str().to_owned(),
        s.currency.as_str().to_owned(),
        format_units(u128::from(s.amount), 2),
        format_units(u128::from(s.amount_received), 2),
        opt(s.client_reference_id.as_deref()),
        opt(s.description.as_deref()),
        opt(s.customer_email.as_deref()),
        opt(s.customer_name.as_deref()),
        s.paid_late.to_string(),
        s.completed_at_ms.map(rfc3339).unwrap_or_default(),
        if s.metadata.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&s.metadata).unwrap_or_default()
        },
    ];
    push_row(out, &cells);
}

fn payment_rows(out: &mut String, s: &Session, w: &Window) {
    for p in s.payments.iter().filter(|p| w.contains(p.received_at_ms)) {
        let status = serde_json::to_value(p.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let cells = [
            p.id.clone(),
            s.id.clone(),
            opt(s.client_reference_id.as_deref()),
            p.method.clone(),
            s.currency.as_str().to_owned(),
            format_units(p.amount_base, p.decimals),
            p.amount_base.to_string(),
            status,
            p.late.to_string(),
            opt(p.utr.as_deref()),
            opt(p.tx_hash.as_deref()),
            p.log_index.map(|v| v.to_string()).unwrap_or_default(),
            p.block_number.map(|v| v.to_string()).unwrap_or_default(),
            opt(p.from.as_deref()),
            rfc3339(p.received_at_ms),
        ];
        push_row(out, &cells);
    }
}

/// Streams the export of one merchant and mode, newest first.
/// `GET /v1/exports/{sessions,payments}.csv` for a key's merchant and mode.
pub(super) fn get(
    state: &AppState,
    key: &ApiKey,
    req: &Req,
    kind: Kind,
) -> Result<Response, ApiError> {
    let (w, _) = window(&req.query, &[])?;
    Ok(stream(
        state.store.clone(),
        key.merchant_id.clone(),
        key.livemode,
        kind,
        w,
    ))
}

pub fn stream(
    store: SharedStore,
    merchant_id: String,
    livemode: bool,
    kind: Kind,
    w: Window,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL);
    tokio::task::spawn_blocking(move || {
        let mut chunk = String::new();
        push_row(
            &mut chunk,
            match kind {
                Kind::Sessions => SESSION_HEADER,
                Kind::Payments => PAYMENT_HEADER,
            },
        );
        let mut q = SessionQuery {
            merchant_id,
            livemode,
            limit: PAGE,
            ..SessionQuery::default()
        };
        if kind == Kind::Sessions {
            q.created_gte_ms = w.gte_ms;
            q.created_lte_ms = w.lte_ms;
        }
        loop {
            let page = match store.list_sessions(&q) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "export: reading sessions failed; download aborted");
                    // An error, not an end: the client sees a failed download, never a short file.
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            };
            for s in &page.items {
                match kind {
                    Kind::Sessions => session_row(&mut chunk, s),
                    Kind::Payments => payment_rows(&mut chunk, s, &w),
                }
            }
            if !chunk.is_empty()
                && tx
                    .blocking_send(Ok(Bytes::from(std::mem::take(&mut chunk))))
                    .is_err()
            {
                return; // the client went away
            }
            match page.items.last() {
                Some(last) if page.has_more => q.starting_after = Some(last.id.clone()),
                _ => return,
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let name = match kind {
        Kind::Sessions => "sessions.csv",
        Kind::Payments => "payments.csv",
    };
    let mut r = warp::reply::Reply::into_response(warp::reply::stream(body));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(http::header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}
