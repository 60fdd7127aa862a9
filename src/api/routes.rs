//! The public listener's routes in one table: method, path pattern, name, who may call it, its
//! metrics label and its handler. The dispatcher matches a request's path once against it, and
//! the same match names the request's span and counts it; the permission check happens here, not
//! in each handler. docs/openapi.json lists exactly these rows (`tests/openapi_schemathesis.rs`).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::StatusCode;

use super::error::ApiError;
use super::{AppState, Req, Response, error_response, json_response};
use crate::config::Merchant;
use crate::domain::apikey::{ApiKey, Permission};

/// What an unauthenticated handler sees.
pub struct Open<'a> {
    pub state: &'a Arc<AppState>,
    pub req: &'a Req,
    /// The `{…}` segments of the path, in order.
    pub params: Vec<&'a str>,
}

impl Open<'_> {
    /// The first `{…}` segment (`{id}`, `{name}`).
    pub fn id(&self) -> &str {
        self.params.first().copied().unwrap_or_default()
    }
}

/// What a handler behind a merchant API key sees.
pub struct Keyed<'a> {
    pub state: &'a Arc<AppState>,
    pub req: &'a Req,
    pub params: Vec<&'a str>,
    pub key: ApiKey,
    pub merchant: &'a Merchant,
}

impl Keyed<'_> {
    /// The first `{…}` segment.
    pub fn id(&self) -> &str {
        self.params.first().copied().unwrap_or_default()
    }
}

pub type Answer<'a> = BoxFuture<'a, Result<Response, ApiError>>;
pub type OpenFn = for<'a> fn(&'a Open<'a>) -> Answer<'a>;
pub type KeyFn = for<'a> fn(&'a Keyed<'a>) -> Answer<'a>;

/// Who may call a route, and the handler that runs once they are let in.
pub enum Access {
    /// Anyone: probes and static assets.
    Open(OpenFn),
    /// The customer pages: the session id in the path is the capability; per-client caps on
    /// claims and streams apply first (`limits::page`).
    Page(OpenFn),
    /// A merchant API key holding the permission; rate-limited per key.
    Key(Permission, KeyFn),
    /// A UPI forwarder's ingest token when one is presented, else a key with the permission.
    TokenOrKey(OpenFn, Permission, KeyFn),
}

pub struct Route {
    pub method: &'static str,
    /// `/v1/checkout/sessions/{id}`: literal segments and `{…}` placeholders.
    pub path: &'static str,
    /// A stable name for logs (`sessions.create`).
    pub name: &'static str,
    /// The metrics label group (one of `metrics::ROUTES`).
    pub metric: &'static str,
    pub access: Access,
}

/// A handler from a block over `cx` (an `Open` or a `Keyed`).
macro_rules! open {
    (|$cx:ident| $body:expr) => {{
        fn handler<'a>($cx: &'a Open<'a>) -> Answer<'a> {
            Box::pin(async move { $body })
        }
        handler as OpenFn
    }};
}

macro_rules! keyed {
    (|$cx:ident| $body:expr) => {{
        fn handler<'a>($cx: &'a Keyed<'a>) -> Answer<'a> {
            Box::pin(async move { $body })
        }
        handler as KeyFn
    }};
}

use Permission::{
    CreditsWrite, EventsRead, RefundsWrite, SessionsRead, SessionsWrite, WebhooksWrite,
};

const fn route(
    method: &'static str,
    path: &'static str,
    name: &'static str,
    metric: &'static str,
    access: Access,
) -> Route {
    Route {
        method,
        path,
        name,
        metric,
        access,
    }
}

/// Every route of the public listener.
pub static PUBLIC: &[Route] = &[
    route(
        "GET",
        "/healthz",
        "healthz",
        "healthz",
        Access::Open(open!(|_cx| Ok(json_response(
            StatusCode::OK,
            br#"{"status":"ok"}"#.to_vec()
        )))),
    ),
    route(
        "GET",
        "/readyz",
        "readyz",
        "readyz",
        Access::Open(open!(|cx| Ok(super::health::readyz(cx.state)))),
    ),
    route(
        "GET",
        "/v1/methods",
        "methods.list",
        "v1_other",
        Access::Key(
            SessionsRead,
            keyed!(|cx| Ok(super::sessions::methods(cx.merchant, cx.key.livemode))),
        ),
    ),
    route(
        "POST",
        "/v1/checkout/sessions",
        "sessions.create",
        "sessions",
        Access::Key(
            SessionsWrite,
            keyed!(|cx| super::sessions::create(cx.state, cx.merchant, &cx.key, cx.req).await),
        ),
    ),
    route(
        "GET",
        "/v1/checkout/sessions",
        "sessions.list",
        "sessions",
        Access::Key(
            SessionsRead,
            keyed!(|cx| super::sessions::list(cx.state, &cx.key, cx.req)),
        ),
    ),
    route(
        "GET",
        "/v1/checkout/sessions/{id}",
        "sessions.get",
        "sessions",
        Access::Key(
            SessionsRead,
            keyed!(|cx| super::sessions::get(cx.state, &cx.key, cx.id())),
        ),
    ),
    route(
        "POST",
        "/v1/checkout/sessions/{id}/cancel",
        "sessions.cancel",
        "sessions",
        Access::Key(
            SessionsWrite,
            keyed!(|cx| super::sessions::end(cx.state, &cx.key, cx.req, cx.id(), false).await),
        ),
    ),
    route(
        "POST",
        "/v1/checkout/sessions/{id}/expire",
        "sessions.expire",
        "sessions",
        Access::Key(
            SessionsWrite,
            keyed!(|cx| super::sessions::end(cx.state, &cx.key, cx.req, cx.id(), true).await),
        ),
    ),
    route(
        "GET",
        "/v1/events",
        "events.list",
        "v1_other",
        Access::Key(
            EventsRead,
            keyed!(|cx| super::webhooks::list_events(cx.state, &cx.key, cx.req).await),
        ),
    ),
    route(
        "GET",
        "/v1/events/{id}",
        "events.get",
        "v1_other",
        Access::Key(
            EventsRead,
            keyed!(|cx| super::webhooks::get_event(cx.state, &cx.key, cx.id())),
        ),
    ),
    route(
        "POST",
        "/v1/events/{id}/redeliver",
        "events.redeliver",
        "v1_other",
        Access::Key(
            WebhooksWrite,
            keyed!(|cx| super::webhooks::redeliver(cx.state, &cx.key, cx.req, cx.id()).await),
        ),
    ),
    route(
        "POST",
        "/v1/webhook_endpoints",
        "webhook_endpoints.create",
        "v1_other",
        Access::Key(
            WebhooksWrite,
            keyed!(|cx| super::webhooks::create_endpoint(
                cx.state,
                &cx.key,
                cx.req,
                &cx.merchant.allowed_domains
            )
            .await),
        ),
    ),
    route(
        "GET",
        "/v1/webhook_endpoints",
        "webhook_endpoints.list",
        "v1_other",
        Access::Key(
            WebhooksWrite,
            keyed!(|cx| super::webhooks::list_endpoints(cx.state, &cx.key)),
        ),
    ),
    route(
        "GET",
        "/v1/webhook_endpoints/{id}",
        "webhook_endpoints.get",
        "v1_other",
        Access::Key(
            WebhooksWrite,
            keyed!(|cx| super::webhooks::get_endpoint(cx.state, &cx.key, cx.id())),
        ),
    ),
    route(
        "DELETE",
        "/v1/webhook_endpoints/{id}",
        "webhook_endpoints.delete",
        "v1_other",
        Access::Key(
            WebhooksWrite,
            keyed!(|cx| super::webhooks::endpoint_action(
                cx.state,
                &cx.key,
                cx.req,
                cx.id(),
                false
            )
            .await),
        ),
    ),
    route(
        "POST",
        "/v1/webhook_endpoints/{id}/rotate_secret",
        "webhook_endpoints.rotate_secret",
        "v1_other",
        Access::Key(
            WebhooksWrite,
            keyed!(
                |cx| super::webhooks::endpoint_action(cx.state, &cx.key, cx.req, cx.id(), true)
                    .await
            ),
        ),
    ),
    route(
        "POST",
        "/v1/upi/credits",
        "upi.ingest",
        "upi_ingest",
        Access::TokenOrKey(
            open!(|cx| {
                let token = super::upi::presented_token(cx.req).unwrap_or_default();
                super::upi::ingest_with_token(cx.state, cx.req, &token).await
            }),
            CreditsWrite,
            keyed!(|cx| super::upi::ingest(cx.state, &cx.key, cx.req).await),
        ),
    ),
    route(
        "GET",
        "/v1/credits",
        "credits.list",
        "v1_other",
        Access::Key(
            SessionsRead,
            keyed!(|cx| super::upi::list(cx.state, &cx.key, cx.req)),
        ),
    ),
    route(
        "POST",
        "/v1/refunds",
        "refunds.create",
        "v1_other",
        Access::Key(
            RefundsWrite,
            keyed!(|cx| super::refunds::create(cx.state, &cx.key, cx.req).await),
        ),
    ),
    route(
        "GET",
        "/v1/refunds",
        "refunds.list",
        "v1_other",
        Access::Key(
            SessionsRead,
            keyed!(|cx| super::refunds::list(cx.state, &cx.key, cx.req)),
        ),
    ),
    route(
        "GET",
        "/v1/refunds/{id}",
        "refunds.get",
        "v1_other",
        Access::Key(
            SessionsRead,
            keyed!(|cx| super::refunds::get(cx.state, &cx.key, cx.id())),
        ),
    ),
    route(
        "GET",
        "/v1/balance",
        "balance.get",
        "v1_other",
        Access::Key(
            SessionsRead,
            keyed!(|cx| super::refunds::balance(cx.state, &cx.key, cx.req)),
        ),
    ),
    route(
        "GET",
        "/v1/exports/sessions.csv",
        "exports.sessions",
        "v1_other",
        Access::Key(
            SessionsRead,
            keyed!(|cx| super::exports::get(
                cx.state,
                &cx.key,
                cx.req,
                super::exports::Kind::Sessions
            )),
        ),
    ),
    route(
        "GET",
        "/v1/exports/payments.csv",
        "exports.payments",
        "v1_other",
        Access::Key(
            SessionsRead,
            keyed!(|cx| super::exports::get(
                cx.state,
                &cx.key,
                cx.req,
                super::exports::Kind::Payments
            )),
        ),
    ),
    route(
        "GET",
        "/v1/webhook_secret",
        "webhook_secret.get",
        "v1_other",
        Access::Key(
            WebhooksWrite,
            keyed!(|cx| super::webhooks::get_secret(cx.state, &cx.key)),
        ),
    ),
    route(
        "POST",
        "/v1/webhook_secret/rotate",
        "webhook_secret.rotate",
        "v1_other",
        Access::Key(
            WebhooksWrite,
            keyed!(|cx| super::webhooks::rotate_secret(cx.state, &cx.key, cx.req).await),
        ),
    ),
    route(
        "POST",
        "/v1/payment_links",
        "payment_links.create",
        "v1_other",
        Access::Key(
            SessionsWrite,
            keyed!(|cx| super::links::create(cx.state, cx.merchant, &cx.key, cx.req).await),
        ),
    ),
    route(
        "GET",
        "/v1/payment_links",
        "payment_links.list",
        "v1_other",
        Access::Key(
            SessionsRead,
            keyed!(|cx| super::links::list(cx.state, &cx.key, cx.req)),
        ),
    ),
    route(
        "GET",
        "/v1/payment_links/{id}",
        "payment_links.get",
        "v1_other",
        Access::Key(
            SessionsRead,
            keyed!(|cx| super::links::get(cx.state, &cx.key, cx.id())),
        ),
    ),
    route(
        "POST",
        "/v1/payment_links/{id}/deactivate",
        "payment_links.deactivate",
        "v1_other",
        Access::Key(
            SessionsWrite,
            keyed!(|cx| super::links::deactivate(cx.state, &cx.key, cx.req, cx.id()).await),
        ),
    ),
    route(
        "GET",
        "/l/{id}",
        "link.show",
        "page",
        Access::Open(open!(
            |cx| super::links::show(cx.state, cx.req, cx.id()).await
        )),
    ),
    route(
        "POST",
        "/l/{id}",
        "link.submit",
        "page",
        Access::Open(open!(
            |cx| super::links::submit(cx.state, cx.req, cx.id()).await
        )),
    ),
    route(
        "GET",
        "/l/{id}/qr.svg",
        "link.qr_svg",
        "page",
        Access::Open(open!(|cx| super::links::qr(cx.state, cx.id(), false))),
    ),
    route(
        "GET",
        "/l/{id}/qr.png",
        "link.qr_png",
        "page",
        Access::Open(open!(|cx| super::links::qr(cx.state, cx.id(), true))),
    ),
    route(
        "GET",
        "/c/{id}",
        "page.show",
        "page",
        Access::Page(open!(|cx| super::pages::page(cx.state, cx.req, cx.id()))),
    ),
    route(
        "GET",
        "/c/{id}/status",
        "page.status",
        "page",
        Access::Page(open!(|cx| super::pages::status(cx.state, cx.id()))),
    ),
    route(
        "GET",
        "/c/{id}/qr.svg",
        "page.qr",
        "page",
        Access::Page(open!(|cx| super::pages::qr(cx.state, cx.req, cx.id()))),
    ),
    route(
        "GET",
        "/c/{id}/events",
        "page.events",
        "page",
        Access::Page(open!(|cx| super::pages::events(cx.state, cx.id()))),
    ),
    route(
        "POST",
        "/c/{id}/claim",
        "page.claim",
        "page",
        Access::Page(open!(
            |cx| super::pages::claim(cx.state, cx.req, cx.id()).await
        )),
    ),
    route(
        "POST",
        "/c/{id}/sender",
        "page.sender",
        "page",
        Access::Page(open!(
            |cx| super::pages::sender(cx.state, cx.req, cx.id()).await
        )),
    ),
    route(
        "POST",
        "/c/{id}/simulate",
        "page.simulate",
        "page",
        Access::Page(open!(|cx| super::pages::simulate(
            cx.state,
            cx.req,
            cx.id()
        )
        .await)),
    ),
    route(
        "GET",
        "/assets/{name}",
        "assets",
        "assets",
        Access::Open(open!(|cx| super::pages::asset(cx.req, cx.id()))),
    ),
];

/// The route `method` and `segs` (the path split on `/`, outer slashes trimmed) name, with its
/// `{…}` segments; `None` when no row matches.
pub fn find<'a>(method: &str, segs: &[&'a str]) -> Option<(&'static Route, Vec<&'a str>)> {
    PUBLIC.iter().find_map(|r| {
        if r.method != method {
            return None;
        }
        let pattern = r.path.trim_matches('/').split('/');
        if pattern.clone().count() != segs.len() {
            return None;
        }
        let mut params = Vec::new();
        for (p, s) in pattern.zip(segs) {
            if p.starts_with('{') {
                params.push(*s);
            } else if p != *s {
                return None;
            }
        }
        Some((r, params))
    })
}

/// The path's segments, as every router of this listener reads them.
pub fn segments(path: &str) -> Vec<&str> {
    path.trim_matches('/').split('/').collect()
}

/// Serves one request of the public listener: the matched row's access rule, then its handler.
pub async fn dispatch(state: Arc<AppState>, req: Req) -> Response {
    let path = req.path.clone();
    let segs = segments(&path);
    let Some((route, params)) = find(req.method.as_str(), &segs) else {
        // A path under /v1 needs a key before it is told the route does not exist.
        if segs.first() == Some(&"v1") {
            return super::auth::authenticated(&state, &req, |_| async {
                Err(ApiError::route_missing(&req.method, &req.path))
            })
            .await;
        }
        return error_response(&ApiError::route_missing(&req.method, &req.path));
    };
    let open = || Open {
        state: &state,
        req: &req,
        params: params.clone(),
    };
    match &route.access {
        Access::Open(f) => f(&open()).await.unwrap_or_else(|e| error_response(&e)),
        Access::Page(f) => {
            let cx = open();
            let rest = segs.get(2..).unwrap_or_default();
            super::limits::page(&state, &req, rest, async {
                f(&cx).await.unwrap_or_else(|e| error_response(&e))
            })
            .await
        }
        Access::TokenOrKey(f, ..) if super::upi::presented_token(&req).is_some() => {
            f(&open()).await.unwrap_or_else(|e| error_response(&e))
        }
        Access::Key(permission, f) | Access::TokenOrKey(_, permission, f) => {
            let (state, req, params) = (&state, &req, &params);
            super::auth::authenticated(state, req, |key| async move {
                let merchant = state
                    .config
                    .merchant(&key.merchant_id)
                    .ok_or_else(|| ApiError::unauthenticated("unknown merchant"))?;
                if !key.allows(*permission) {
                    return Err(ApiError::forbidden(format!(
                        "this API key lacks the {} permission",
                        permission.as_str()
                    )));
                }
                // Stripe's libraries: form bodies, Stripe's names and shapes (`api::stripe`).
                let prepared = super::stripe::prepare(req, &segments(&req.path))?;
                let cx = Keyed {
                    state,
                    req: prepared.req(req),
                    params: params.clone(),
                    key,
                    merchant,
                };
                let result = f(&cx).await;
                super::stripe::finish(prepared, result).await
            })
            .await
        }
    }
}

/// The metrics label and the route name of a request (the name is empty when no row matches).
/// Paths outside the table are grouped by their prefix, as they always were.
pub fn label(method: &str, path: &str, admin: bool) -> (usize, &'static str) {
    if !admin && let Some((r, _)) = find(method, &segments(path)) {
        let group = crate::metrics::ROUTES
            .iter()
            .position(|g| *g == r.metric)
            .unwrap_or(crate::metrics::ROUTES.len() - 1);
        return (group, r.name);
    }
    (crate::metrics::Metrics::route_of(path, admin), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_unique_and_its_metric_label_exists() {
        let mut seen = std::collections::HashSet::new();
        for r in PUBLIC {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            assert!(
                crate::metrics::ROUTES.contains(&r.metric),
                "{}: no metric label {}",
                r.name,
                r.metric
            );
            assert!(r.path.starts_with('/'), "{}", r.path);
        }
    }

    #[test]
    fn paths_match_their_rows_with_parameters() {
        let (r, p) = find("GET", &segments("/v1/checkout/sessions/cs_1")).expect("route");
        assert_eq!((r.name, p), ("sessions.get", vec!["cs_1"]));
        let (r, _) = find("POST", &segments("/v1/checkout/sessions/cs_1/expire")).expect("route");
        assert_eq!(r.name, "sessions.expire");
        assert!(find("PUT", &segments("/v1/checkout/sessions")).is_none());
        assert!(find("GET", &segments("/v1/checkout/sessions/cs_1/x")).is_none());
        assert!(find("GET", &segments("/v1/exports/other.csv")).is_none());
        let (r, p) = find("GET", &segments("/c/cs_9/")).expect("route");
        assert_eq!((r.name, p), ("page.show", vec!["cs_9"]));
    }

    /// The labels are what the old path-only grouping gave, for matched and unmatched paths.
    #[test]
    fn labels_keep_the_old_groups() {
        for (method, path, admin) in [
            ("GET", "/healthz", false),
            ("GET", "/readyz", false),
            ("POST", "/v1/upi/credits", false),
            ("GET", "/v1/upi/credits", false),
            ("POST", "/v1/checkout/sessions", false),
            ("GET", "/v1/checkout/sessions/cs_1/nope", false),
            ("GET", "/v1/refunds", false),
            ("GET", "/v1/nope", false),
            ("GET", "/c/cs_1", false),
            ("POST", "/c/cs_1/claim", false),
            ("GET", "/assets/checkout.css", false),
            ("GET", "/nope", false),
            ("GET", "/metrics", true),
            ("GET", "/admin/v1/keys", true),
        ] {
            assert_eq!(
                label(method, path, admin).0,
                crate::metrics::Metrics::route_of(path, admin),
                "{method} {path}"
            );
        }
    }
}
