//! `[rates."USDT/INR"]` as written, and its validation into a [`RatePair`]. The config module
//! calls [`resolve`] and reports the problem with the file, line and key.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::domain::money::parse_units;
use crate::domain::price::{self, Ratio};

/// One pair as written: a fixed rate, or HTTP JSON sources whose median is used.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// How many units of the price currency one unit of the method is worth (`"84.25"`).
    pub fixed: Option<String>,
    #[serde(default)]
    pub sources: Vec<RateSourceConfig>,
    /// An answer older than this is stale: creates that need the pair fail with 503.
    pub max_age_secs: Option<u64>,
    /// Added in the merchant's favour (`"0.5%"`).
    pub spread: Option<String>,
    /// How often the sources are asked (default: a fifth of `max_age_secs`, at most 60 s).
    pub poll_secs: Option<u64>,
    /// How far short (in the price currency, `"1.00"`) a payment may fall and still count as
    /// paid; converted at the session's locked rate. Default: the method's own tolerance.
    pub underpayment_tolerance: Option<String>,
    /// How far over (in the price currency) a payment may go and still be `paid`, not
    /// `overpaid`. Default: nothing.
    pub overpayment_tolerance: Option<String>,
}

/// `{ url = "https://…", path = "/data/price", headers = { … } }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSourceConfig {
    pub url: String,
    /// A JSON Pointer (RFC 6901) to the value: a number or a decimal string.
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A header sent to a rate source; its value may be an API key, so `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceHeader {
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for SourceHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: (redacted)", self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateSource {
    pub url: String,
    pub path: String,
    pub headers: Vec<SourceHeader>,
}

/// Where a pair's rate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKind {
    Fixed(Ratio),
    Sources(Vec<RateSource>),
}

/// A validated pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatePair {
    /// `USDT/INR`, as configured.
    pub name: String,
    /// What one unit is being priced: a token symbol (`USDT`) or a settlement currency (`INR`).
    pub unit: String,
    /// The price currency, ISO 4217 lowercase (`inr`).
    pub currency: String,
    pub kind: RateKind,
    pub max_age_ms: i64,
    pub poll_ms: u64,
    pub spread: Ratio,
    pub spread_text: String,
    /// In the price currency's minor units.
    pub underpayment_tolerance: Option<u64>,
    pub overpayment_tolerance: u64,
}

/// Validates one pair; `Err((key suffix, problem))` names the offending key under the pair.
pub fn resolve(name: &str, c: &RateConfig) -> Result<RatePair, (String, String)> {
    let bad = |k: &str, p: String| Err((k.to_owned(), p));
    let Some((unit, cur)) = name.split_once('/') else {
        return bad(
            "",
            format!("{name:?} is not a pair such as \"USDT/INR\" (method unit / price currency)"),
        );
    };
    let unit_ok = (2..=10).contains(&unit.len()) && unit.bytes().all(|b| b.is_ascii_uppercase());
    if !unit_ok {
        return bad(
            "",
            format!("{unit:?} is not a unit such as USDT or INR (2 to 10 capital letters)"),
        );
    }
    let currency = cur.to_ascii_lowercase();
    if cur != cur.to_ascii_uppercase() || !price::is_price_currency(&currency) {
        return bad(
            "",
            format!(
                "{cur:?} is not a price currency (ISO 4217 in capitals, one of {})",
                price::PRICE_CURRENCIES.join(", ").to_ascii_uppercase()
            ),
        );
    }
    if unit.eq_ignore_ascii_case(&currency) {
        return bad("", "a pair of a currency with itself needs no rate".into());
    }
    let kind = match (&c.fixed, c.sources.is_empty()) {
        (Some(_), false) => return bad("fixed", "set fixed or sources, not both".into()),
        (None, true) => return bad("fixed", "give a fixed rate or at least one source".into()),
        (Some(f), true) => {
            RateKind::Fixed(Ratio::parse_positive(f).map_err(|e| ("fixed".into(), e.to_string()))?)
        }
        (None, false) => {
            let mut out = Vec::new();
            for (i, s) in c.sources.iter().enumerate() {
                let at = |f: &str| format!("sources.{i}.{f}");
                match url::Url::parse(&s.url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                    _ => {
                        return bad(
                            &at("url"),
                            format!(
                                "{:?} is not an absolute http(s) URL",
                                crate::redact::redact_url(&s.url)
                            ),
                        );
                    }
                }
                if !(s.path.is_empty() || s.path.starts_with('/')) {
                    return bad(
                        &at("path"),
                        format!("{:?} is not a JSON Pointer such as \"/data/price\"", s.path),
                    );
                }
                let mut headers = Vec::new();
                for (k, v) in &s.headers {
                    if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                        return bad(&at("headers"), format!("{k:?} is not a header name"));
                    }
                    if http::HeaderValue::from_str(v).is_err() {
                        return bad(
                            &at("headers"),
                            format!("the value of {k} holds characters a header cannot carry"),
                        );
                    }
                    headers.push(SourceHeader {
                        name: k.clone(),
                        value: v.clone(),
                    });
                }
                out.push(RateSource {
                    url: s.url.clone(),
                    path: s.path.clone(),
                    headers,
                });
            }
            RateKind::Sources(out)
        }
    };
    let max_age_secs = c.max_age_secs.unwrap_or(300);
    if !(1..=86_400).contains(&max_age_secs) {
        return bad("max_age_secs", "must be from 1 to 86400 seconds".into());
    }
    let poll_secs = c.poll_secs.unwrap_or((max_age_secs / 5).clamp(1, 60));
    if poll_secs == 0 || poll_secs >= max_age_secs.max(2) {
        return bad(
            "poll_secs",
            format!("must be at least 1 and below max_age_secs ({max_age_secs})"),
        );
    }
    let spread_text = c.spread.clone().unwrap_or_else(|| "0%".into());
    let spread =
        price::parse_spread(&spread_text).map_err(|e| ("spread".to_owned(), e.to_string()))?;
    let tolerance = |key: &str, v: &Option<String>| -> Result<Option<u64>, (String, String)> {
        match v {
            None => Ok(None),
            Some(t) => parse_units(t, 2)
                .ok()
                .and_then(|v| u64::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| {
                    (
                        key.to_owned(),
                        format!("{t:?} is not an amount of {cur} such as \"1.00\""),
                    )
                }),
        }
    };
    Ok(RatePair {
        name: name.to_owned(),
        unit: unit.to_owned(),
        currency,
        kind,
        max_age_ms: i64::try_from(max_age_secs).unwrap_or(300) * 1000,
        poll_ms: poll_secs * 1000,
        spread,
        spread_text,
        underpayment_tolerance: tolerance("underpayment_tolerance", &c.underpayment_tolerance)?,
        overpayment_tolerance: tolerance("overpayment_tolerance", &c.overpayment_tolerance)?
            .unwrap_or(0),
    })
}
