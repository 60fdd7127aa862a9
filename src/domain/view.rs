//! The API representation of stored objects: what GET returns and what events carry.

use serde::Serialize;

use serde_json::{Value, json};

use super::event::Event;
use super::method::Currency;
use super::money::format_units;
use super::session::{Payment, PaymentOption, Session};

/// Milliseconds since the epoch as RFC 3339 UTC with seconds precision.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

#[derive(Serialize)]
struct OptionView<'a> {
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chain_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_contract: Option<&'a str>,
    pay_to: &'a str,
    payable_amount: String,
    payable_amount_base_units: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    confirmations_required: Option<u32>,
    uri: &'a str,
}

impl<'a> OptionView<'a> {
    fn of(o: &'a PaymentOption) -> Self {
        OptionView {
            method: &o.method,
            network: o.network.as_deref(),
            chain_id: o.chain_id,
            token: o.token.as_deref(),
            token_contract: o.token_contract.as_deref(),
            pay_to: &o.pay_to,
            payable_amount: format_units(o.payable_base, o.decimals),
            payable_amount_base_units: o.payable_base.to_string(),
            confirmations_required: o.chain_id.map(|_| o.confirmations_required),
            uri: &o.uri,
        }
    }
}

#[derive(Serialize)]
struct PaymentView<'a> {
    id: &'a str,
    method: &'a str,
    amount: String,
    amount_base_units: String,
    utr: Option<&'a str>,
    tx_hash: Option<&'a str>,
    log_index: Option<u64>,
    block_number: Option<u64>,
    confirmations: u32,
    status: super::session::PaymentState,
    late: bool,
    /// A reversal alert named this payment (see `Payment::reversed`).
    reversed: bool,
    /// The sender of a token payment, when the watcher recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    received_at: String,
}

impl<'a> PaymentView<'a> {
    fn of(p: &'a Payment) -> Self {
        PaymentView {
            id: &p.id,
            method: &p.method,
            amount: format_units(p.amount_base, p.decimals),
            amount_base_units: p.amount_base.to_string(),
            utr: p.utr.as_deref(),
            tx_hash: p.tx_hash.as_deref(),
            log_index: p.log_index,
            block_number: p.block_number,
            confirmations: p.confirmations,
            status: p.state,
            late: p.late,
            reversed: p.reversed,
            from: p.from.as_deref(),
            received_at: rfc3339(p.received_at_ms),
        }
    }
}

#[derive(Serialize)]
struct SessionView<'a> {
    id: &'a str,
    object: &'static str,
    livemode: bool,
    status: &'static str,
    payment_status: &'static str,
    amount: u64,
    currency: &'static str,
    amount_received: u64,
    description: Option<&'a str>,
    customer_email: Option<&'a str>,
    customer_name: Option<&'a str>,
    /// `null` is Stripe's `auto`: the browser's language.
    locale: Option<&'a str>,
    client_reference_id: Option<&'a str>,
    payment_options: Vec<OptionView<'a>>,
    checkout_url: &'a str,
    success_url: Option<&'a str>,
    cancel_url: Option<&'a str>,
    notify_url: Option<&'a str>,
    payments: Vec<PaymentView<'a>>,
    paid_late: bool,
    /// A payment of this session was reversed by the bank: do not ship, or claw back.
    payment_reversed: bool,
    metadata: &'a std::collections::BTreeMap<String, String>,
    expires_at: String,
    created_at: String,
    completed_at: Option<String>,
    /// What the merchant priced: the session's own amount, or a price in another currency.
    price: PriceView<'a>,
    /// Price-currency units per one unit of what the methods settle in (`null`: no conversion).
    rate: Option<&'a str>,
    rate_spread: Option<&'a str>,
    rate_source: Option<&'a str>,
    rate_at: Option<String>,
}

#[derive(Serialize)]
struct PriceView<'a> {
    amount: u64,
    currency: &'a str,
}

fn price_view(s: &Session) -> PriceView<'_> {
    match &s.price {
        Some(p) => PriceView {
            amount: p.amount,
            currency: &p.currency,
        },
        None => PriceView {
            amount: s.amount,
            currency: s.currency.as_str(),
        },
    }
}

/// The session object of the API contract.
pub fn session_json(s: &Session) -> serde_json::Value {
    serde_json::to_value(session_view(s)).unwrap_or(serde_json::Value::Null)
}

/// The session object serialized straight to bytes (the hot path: no intermediate tree).
pub fn session_bytes(s: &Session) -> Vec<u8> {
    serde_json::to_vec(&session_view(s)).unwrap_or_default()
}

fn session_view(s: &Session) -> SessionView<'_> {
    SessionView {
        id: &s.id,
        object: "checkout.session",
        livemode: s.livemode,
        status: s.status.as_str(),
        payment_status: s.payment_status.as_str(),
        amount: s.amount,
        currency: s.currency.as_str(),
        amount_received: s.amount_received,
        description: s.description.as_deref(),
        customer_email: s.customer_email.as_deref(),
        customer_name: s.customer_name.as_deref(),
        locale: s.locale.as_deref(),
        client_reference_id: s.client_reference_id.as_deref(),
        payment_options: s.payment_options.iter().map(OptionView::of).collect(),
        checkout_url: &s.checkout_url,
        success_url: s.success_url.as_deref(),
        cancel_url: s.cancel_url.as_deref(),
        notify_url: s.notify_url.as_deref(),
        payments: s.payments.iter().map(PaymentView::of).collect(),
        paid_late: s.paid_late,
        payment_reversed: s.payments.iter().any(|p| p.reversed),
        metadata: &s.metadata,
        expires_at: rfc3339(s.expires_at_ms),
        created_at: rfc3339(s.created_at_ms),
        completed_at: s.completed_at_ms.map(rfc3339),
        price: price_view(s),
        rate: s.price.as_ref().map(|p| p.rate.as_str()),
        rate_spread: s.price.as_ref().map(|p| p.spread.as_str()),
        rate_source: s.price.as_ref().map(|p| p.rate_source.as_str()),
        rate_at: s.price.as_ref().map(|p| rfc3339(p.rate_at_ms)),
    }
}

/// What the customer's page may see: no e-mail, no metadata, no notify_url.
#[derive(Serialize)]
pub struct PublicStatus<'a> {
    id: &'a str,
    livemode: bool,
    status: &'static str,
    payment_status: &'static str,
    amount: u64,
    currency: &'static str,
    amount_received: u64,
    expires_at: String,
    success_url: Option<&'a str>,
    cancel_url: Option<&'a str>,
    price: PriceView<'a>,
    rate: Option<&'a str>,
}

pub fn public_status(s: &Session) -> PublicStatus<'_> {
    PublicStatus {
        id: &s.id,
        livemode: s.livemode,
        status: s.status.as_str(),
        payment_status: s.payment_status.as_str(),
        amount: s.amount,
        currency: s.currency.as_str(),
        amount_received: s.amount_received,
        expires_at: rfc3339(s.expires_at_ms),
        success_url: s.success_url.as_deref(),
        cancel_url: s.cancel_url.as_deref(),
        price: price_view(s),
        rate: s.price.as_ref().map(|p| p.rate.as_str()),
    }
}

/// Formats a price in any currency of `price::PRICE_CURRENCIES` for humans (`€12.50`,
/// `AED 12.50`).
pub fn display_price(amount_minor: u64, currency: &str) -> String {
    let n = format_units(u128::from(amount_minor), 2);
    match currency {
        "inr" => format!("₹{n}"),
        "usd" => format!("${n}"),
        "eur" => format!("€{n}"),
        "gbp" => format!("£{n}"),
        other => format!("{} {n}", other.to_ascii_uppercase()),
    }
}

/// The event object of the API (and of webhook bodies).
pub fn event_json(e: &Event) -> Value {
    json!({
        "id": e.id, "object": "event", "type": e.kind.as_str(), "livemode": e.livemode,
        "created_at": rfc3339(e.created_at_ms), "data": {"object": e.data},
    })
}

/// Formats an amount for humans on pages and messages.
pub fn display_amount(amount_minor: u64, currency: Currency) -> String {
    let n = format_units(u128::from(amount_minor), 2);
    match currency {
        Currency::Inr => format!("₹{n}"),
        Currency::Usd => format!("${n}"),
    }
}
