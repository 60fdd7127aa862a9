//! The hosted checkout page and what it loads: `/c/{id}`, its QR codes and its assets (the
//! live status stream is `checkout::stream`). Everything is served by the daemon under a strict Content-Security-Policy.

use askama::Template;
use http::{HeaderValue, StatusCode};

use super::i18n::{Lang, Strings};
use crate::domain::money::format_units;
use crate::domain::session::{PaymentStatus, Session, Status};
use crate::domain::view::rfc3339;

/// No inline script or style, nothing from elsewhere, forms only to ourselves.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub struct OptionView {
    pub method: String,
    pub label: String,
    pub is_upi: bool,
    pub pay_to: String,
    pub payable: String,
    pub unit: String,
    pub network: String,
    pub chain_id: u64,
    pub uri: String,
}

#[derive(Template)]
#[template(path = "checkout.html")]
pub struct CheckoutPage<'a> {
    pub t: &'a Strings,
    pub lang: &'a str,
    /// `rtl` for Arabic and Urdu: the whole page is mirrored.
    pub dir: &'a str,
    /// The language menu: (code, own name, current).
    pub langs: Vec<(&'static str, &'static str, bool)>,
    pub merchant: &'a str,
    pub description: Option<&'a str>,
    pub amount: String,
    /// A priced session: `1 USDT = ₹84.25` (the rate it was converted at, locked).
    pub rate: Option<String>,
    pub id: &'a str,
    pub status: &'a str,
    pub status_text: &'a str,
    pub partially_paid: bool,
    pub awaiting: bool,
    pub livemode: bool,
    pub options: Vec<OptionView>,
    pub has_upi: bool,
    pub has_token: bool,
    pub expires_at: String,
    pub expires_at_text: String,
    pub expires_at_ms: i64,
    pub success_url: Option<&'a str>,
    pub cancel_url: Option<&'a str>,
}

fn status_text(t: &'static Strings, s: Status) -> &'static str {
    match s {
        Status::Open => &t.status_open,
        Status::Processing => &t.status_processing,
        Status::Complete => &t.status_complete,
        Status::Expired => &t.status_expired,
        Status::Canceled => &t.status_canceled,
    }
}

/// The session's price as `lang` writes numbers (`₹1,23,456.00`, `$1.234,56`).
fn display_amount(
    amount_minor: u64,
    currency: crate::domain::method::Currency,
    lang: Lang,
) -> String {
    // The plain form `domain::view::display_amount` gives ("₹1499.00"): keep its symbol, localise
    // the figure.
    let plain = crate::domain::view::display_amount(amount_minor, currency);
    let at = plain.find(|c: char| c.is_ascii_digit()).unwrap_or(0);
    format!("{}{}", &plain[..at], lang.number(&plain[at..]))
}

/// Renders the page of `s` in `lang`.
pub fn render(s: &Session, merchant: &str, lang: Lang) -> Result<String, askama::Error> {
    let t = lang.strings();
    let options: Vec<OptionView> = s
        .payment_options
        .iter()
        .map(|o| {
            let is_upi = o.chain_id.is_none();
            OptionView {
                method: o.method.clone(),
                label: if is_upi {
                    "UPI".to_owned()
                } else {
                    format!(
                        "{} · {}",
                        o.token.as_deref().unwrap_or("Token"),
                        o.network.as_deref().unwrap_or("")
                    )
                },
                is_upi,
                pay_to: o.pay_to.clone(),
                payable: format_units(o.payable_base, o.decimals),
                unit: if is_upi {
                    "INR".to_owned()
                } else {
                    o.token.clone().unwrap_or_default()
                },
                network: o.network.clone().unwrap_or_default(),
                chain_id: o.chain_id.unwrap_or_default(),
                uri: o.uri.clone(),
            }
        })
        .collect();
    let page = CheckoutPage {
        t,
        lang: lang.code(),
        dir: if lang.rtl() { "rtl" } else { "ltr" },
        langs: Lang::all()
            .map(|l| (l.code(), l.name(), l == lang))
            .collect(),
        merchant,
        description: s.description.as_deref(),
        amount: match &s.price {
            Some(p) => {
                let plain = crate::domain::view::display_price(p.amount, &p.currency);
                let at = plain.find(|c: char| c.is_ascii_digit()).unwrap_or(0);
                format!("{}{}", &plain[..at], lang.number(&plain[at..]))
            }
            None => display_amount(s.amount, s.currency, lang),
        },
        rate: s.price.as_ref().map(|p| {
            let unit = options.first().map_or_else(
                || s.currency.as_str().to_ascii_uppercase(),
                |o| o.unit.clone(),
            );
            format!("1 {unit} = {} {}", p.rate, p.currency.to_ascii_uppercase())
        }),
        id: &s.id,
        status: s.status.as_str(),
        status_text: status_text(t, s.status),
        partially_paid: s.payment_status == PaymentStatus::PartiallyPaid,
        awaiting: s.status.is_awaiting(),
        livemode: s.livemode,
        has_upi: options.iter().any(|o| o.is_upi),
        has_token: options.iter().any(|o| !o.is_upi),
        options,
        expires_at: rfc3339(s.expires_at_ms),
        expires_at_text: chrono::DateTime::from_timestamp_millis(s.expires_at_ms)
            .map(|d| d.format("%H:%M UTC").to_string())
            .unwrap_or_default(),
        expires_at_ms: s.expires_at_ms,
        success_url: s.success_url.as_deref(),
        cancel_url: s.cancel_url.as_deref(),
    };
    page.render()
}

/// Headers every page response carries.
pub fn secure_headers(r: &mut warp::reply::Response, content_type: &'static str) {
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
}

/// The embedded static assets.
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "checkout.js" => Some((
            include_str!("../../assets/checkout.js"),
            "text/javascript; charset=utf-8",
        )),
        "checkout.css" => Some((
            include_str!("../../assets/checkout.css"),
            "text/css; charset=utf-8",
        )),
        _ => None,
    }
}

/// 200 with a body and content type.
pub fn ok_body(body: bytes::Bytes, content_type: &'static str) -> warp::reply::Response {
    let mut r = warp::reply::Response::new(body.into());
    *r.status_mut() = StatusCode::OK;
    secure_headers(&mut r, content_type);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_strings_differ_between_languages() {
        let hi = Lang::parse("hi").expect("hi");
        assert_ne!(hi.strings().pay, Lang::EN.strings().pay);
    }
}
