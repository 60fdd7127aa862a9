//! paywatch's objects in Stripe's shapes (Unix seconds, `url`, integer refund amounts …), for
//! requests that carry `Stripe-Version` and the callbacks of endpoints created with one. Pure,
//! so the delivery worker uses it without the HTTP layer.

use serde_json::{Map, Value};

/// An event as a callback to an endpoint created with `version` carries it: Stripe's shapes,
/// and Stripe's `api_version` field.
pub fn event(e: &crate::domain::event::Event, version: &str) -> Value {
    let mut v = crate::domain::view::event_json(e);
    stripe_shape(&mut v);
    if let Value::Object(m) = &mut v {
        m.insert("api_version".into(), Value::String(version.to_owned()));
    }
    v
}

/// RFC 3339 text as Unix seconds.
fn unix(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp())
}

/// Rewrites a paywatch object (and everything in it) in Stripe's shapes. Metadata is the
/// merchant's own and is never touched.
pub fn stripe_shape(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(stripe_shape),
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "metadata" {
                    continue;
                }
                if (k.ends_with("_at") || k == "at")
                    && let Some(t) = unix(child)
                {
                    *child = Value::from(t);
                    continue;
                }
                stripe_shape(child);
            }
            if let Some(t) = map.get("created_at").and_then(Value::as_i64) {
                map.entry("created").or_insert(Value::from(t));
            }
            match map.get("object").and_then(Value::as_str) {
                Some("checkout.session") => session_fields(map),
                Some("refund") => refund_fields(map),
                Some("webhook_endpoint") => {
                    if let Some(ev) = map.get("events").cloned() {
                        map.entry("enabled_events").or_insert(ev);
                    }
                    let deleted = map.get("deleted").is_some_and(|d| d == &Value::Bool(true));
                    map.entry("status")
                        .or_insert(if deleted { "disabled" } else { "enabled" }.into());
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// `12.50` (a decimal in the currency's unit) as minor units (`1250`), rounded down: a token
/// payment can leave a fraction of a cent, which Stripe's integer cannot carry.
pub fn minor_units(decimal: &str) -> Option<u64> {
    let (whole, frac) = decimal.split_once('.').unwrap_or((decimal, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let cents: String = frac.chars().chain("00".chars()).take(2).collect();
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(cents.parse::<u64>().ok()?)
}

/// Stripe's refund `amount` is an integer in minor units; paywatch's is a decimal string,
/// kept exact as `amount_decimal` (and `amount_base_units`).
fn refund_fields(map: &mut Map<String, Value>) {
    if let Some(Value::String(a)) = map.get("amount").cloned()
        && let Some(minor) = minor_units(&a)
    {
        map.insert("amount".into(), Value::from(minor));
        map.entry("amount_decimal").or_insert(Value::String(a));
    }
}

fn session_fields(map: &mut Map<String, Value>) {
    if let Some(u) = map.get("checkout_url").cloned() {
        map.entry("url").or_insert(u);
    }
    if let Some(a) = map.get("amount").cloned() {
        map.entry("amount_total").or_insert(a);
    }
    let mut methods: Vec<Value> = Vec::new();
    if let Some(Value::Array(opts)) = map.get("payment_options") {
        for o in opts {
            if let Some(m) = o.get("method")
                && !methods.contains(m)
            {
                methods.push(m.clone());
            }
        }
    }
    map.entry("payment_method_types")
        .or_insert(Value::Array(methods));
    map.entry("mode").or_insert("payment".into());
}
