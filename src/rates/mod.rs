//! Exchange rates for sessions priced in another currency than their methods settle in: each
//! configured pair's latest quote (a fixed rate, or the median of its HTTP JSON sources, asked
//! every `poll_secs`), and the lookup a create locks its rate from. A quote older than the
//! pair's `max_age_secs` is stale: the create fails (503 `rate_unavailable`) rather than price a
//! sale at an old rate, and succeeds again once a source answers.
//!
//! Imports: `domain` and `redact`.

pub mod config;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;

use crate::domain::price::{self, Ratio};
pub use config::{RateConfig, RateKind, RatePair};

/// Why a create cannot have a rate now.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RateError {
    /// No pair converts the price currency into the methods' unit: the request's fault.
    #[error(
        "no exchange rate is configured from {unit} to {currency}: configure [rates.\"{unit}/{currency}\"] or price the session in the methods' currency"
    )]
    NotConfigured { unit: String, currency: String },
    /// The pair exists but has no fresh quote: the operator's (or the source's) problem.
    #[error(
        "the {pair} exchange rate is unavailable: {why}; sessions priced in {currency} are refused until a rate source answers"
    )]
    Unavailable {
        pair: String,
        currency: String,
        why: String,
    },
}

/// One quote of a pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Price-currency units per one unit.
    pub rate: Ratio,
    pub source: String,
    pub at_ms: i64,
}

/// A rate a create locks: the quote, oriented price-per-unit, with the pair's spread and
/// tolerances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    pub pair: String,
    pub rate: Ratio,
    pub source: String,
    pub at_ms: i64,
    pub spread: Ratio,
    pub spread_text: String,
    /// In the price currency's minor units (only for a pair configured in this direction).
    pub underpayment_tolerance: Option<u64>,
    pub overpayment_tolerance: u64,
}

struct Pair {
    cfg: RatePair,
    latest: Mutex<Option<Quote>>,
    /// What went wrong at the last poll, for the 503's message.
    last_error: Mutex<Option<String>>,
}

/// Every configured pair and its latest quote.
pub struct Rates {
    pairs: Vec<Pair>,
}

impl Rates {
    pub fn new(pairs: Vec<RatePair>) -> Rates {
        Rates {
            pairs: pairs
                .into_iter()
                .map(|cfg| Pair {
                    cfg,
                    latest: Mutex::new(None),
                    last_error: Mutex::new(None),
                })
                .collect(),
        }
    }

    /// The rate to price `currency` (ISO lowercase) in `unit` (a token symbol or `INR`) at
    /// `now_ms`: the pair `UNIT/CUR`, or the inverse of `CUR/UNIT`.
    pub fn lookup(&self, unit: &str, currency: &str, now_ms: i64) -> Result<Locked, RateError> {
        let cur_upper = currency.to_ascii_uppercase();
        let direct = self
            .pairs
            .iter()
            .find(|p| p.cfg.unit == unit && p.cfg.currency == currency);
        let inverse = || {
            self.pairs
                .iter()
                .find(|p| p.cfg.unit == cur_upper && p.cfg.currency.eq_ignore_ascii_case(unit))
        };
        let (pair, inverted) = match direct {
            Some(p) => (p, false),
            None => match inverse() {
                Some(p) => (p, true),
                None => {
                    return Err(RateError::NotConfigured {
                        unit: unit.to_owned(),
                        currency: cur_upper,
                    });
                }
            },
        };
        let quote = match &pair.cfg.kind {
            RateKind::Fixed(r) => Quote {
                rate: *r,
                source: format!("{} fixed", pair.cfg.name),
                at_ms: now_ms,
            },
            RateKind::Sources(_) => {
                let latest = pair.latest.lock().ok().and_then(|q| q.clone());
                let why = || {
                    pair.last_error
                        .lock()
                        .ok()
                        .and_then(|e| e.clone())
                        .unwrap_or_else(|| "no source has answered yet".into())
                };
                match latest {
                    None => {
                        return Err(RateError::Unavailable {
                            pair: pair.cfg.name.clone(),
                            currency: cur_upper,
                            why: why(),
                        });
                    }
                    Some(q) if now_ms - q.at_ms > pair.cfg.max_age_ms => {
                        return Err(RateError::Unavailable {
                            pair: pair.cfg.name.clone(),
                            currency: cur_upper,
                            why: format!(
                                "its last quote is {} s old, past max_age_secs = {} ({})",
                                (now_ms - q.at_ms) / 1000,
                                pair.cfg.max_age_ms / 1000,
                                why()
                            ),
                        });
                    }
                    Some(q) => q,
                }
            }
        };
        Ok(Locked {
            pair: pair.cfg.name.clone(),
            rate: if inverted {
                quote.rate.inverse()
            } else {
                quote.rate
            },
            source: quote.source,
            at_ms: quote.at_ms,
            spread: pair.cfg.spread,
            spread_text: pair.cfg.spread_text.clone(),
            underpayment_tolerance: if inverted {
                None
            } else {
                pair.cfg.underpayment_tolerance
            },
            overpayment_tolerance: if inverted {
                0
            } else {
                pair.cfg.overpayment_tolerance
            },
        })
    }

    /// Asks every pair's sources every `poll_secs` until `stop` turns true.
    pub async fn run(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the rate sources' HTTP client");
                return;
            }
        };
        let mut tasks = Vec::new();
        for i in 0..self.pairs.len() {
            let RateKind::Sources(_) = &self.pairs[i].cfg.kind else {
                continue;
            };
            let (me, client, mut stop) = (self.clone(), client.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    me.poll(i, &client).await;
                    let every = Duration::from_millis(me.pairs[i].cfg.poll_ms);
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.changed() => return,
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn poll(&self, i: usize, client: &reqwest::Client) {
        let Some(pair) = self.pairs.get(i) else {
            return;
        };
        let RateKind::Sources(sources) = &pair.cfg.kind else {
            return;
        };
        let answers = futures_util::future::join_all(sources.iter().map(|s| ask(client, s))).await;
        let mut rates = Vec::new();
        let mut hosts = Vec::new();
        let mut errors = Vec::new();
        for (s, a) in sources.iter().zip(answers) {
            let host = crate::redact::redact_url(&s.url);
            match a {
                Ok(r) => {
                    rates.push(r);
                    hosts.push(host);
                }
                Err(e) => {
                    tracing::warn!(pair = %pair.cfg.name, source = %host, error = %e, "a rate source did not answer");
                    errors.push(format!("{host}: {e}"));
                }
            }
        }
        if let Ok(mut last) = pair.last_error.lock() {
            *last = (!errors.is_empty()).then(|| errors.join("; "));
        }
        let Some(rate) = price::median(rates) else {
            return;
        };
        let quote = Quote {
            rate,
            source: format!(
                "{} median of {} of {} sources ({})",
                pair.cfg.name,
                hosts.len(),
                sources.len(),
                hosts.join(", ")
            ),
            at_ms: chrono::Utc::now().timestamp_millis(),
        };
        if let Ok(mut latest) = pair.latest.lock() {
            *latest = Some(quote);
        }
    }
}

/// Largest answer read from a rate source.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One source's rate: the value at its JSON Pointer, a positive number or decimal string.
async fn ask(client: &reqwest::Client, s: &config::RateSource) -> Result<Ratio, String> {
    let mut req = client.get(&s.url);
    for h in &s.headers {
        req = req.header(&h.name, &h.value);
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| crate::redact::redact_text(&e.to_string()))?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| crate::redact::redact_text(&e.to_string()))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "the answer is larger than {MAX_ANSWER_BYTES} bytes"
            ));
        }
    }
    value_at(&body, &s.path)
}

/// The rate at `path` in a JSON answer.
pub fn value_at(body: &[u8], path: &str) -> Result<Ratio, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let text = match v.pointer(path) {
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err(format!("the value at {path} is not a number")),
        None => return Err(format!("the answer has no value at {path}")),
    };
    Ratio::parse_positive(&text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str, kind: RateKind) -> RatePair {
        let c = RateConfig {
            fixed: Some("1".into()),
            ..RateConfig::default()
        };
        RatePair {
            kind,
            ..config::resolve(name, &c).expect("pair")
        }
    }

    #[test]
    fn reads_numbers_and_strings_at_a_pointer() {
        assert_eq!(
            value_at(br#"{"data":{"price":84.25}}"#, "/data/price"),
            Ok(Ratio::parse_positive("84.25").expect("r"))
        );
        assert_eq!(
            value_at(br#"{"p":"84.5"}"#, "/p"),
            Ok(Ratio::parse_positive("84.5").expect("r"))
        );
        for (body, path) in [
            (&br#"{"p":-1}"#[..], "/p"),
            (br#"{"p":0}"#, "/p"),
            (br#"{"p":true}"#, "/p"),
            (br#"{"q":1}"#, "/p"),
            (b"not json", "/p"),
            (br#"{"p":1e400}"#, "/p"),
        ] {
            assert!(value_at(body, path).is_err(), "{body:?}");
        }
    }

    #[test]
    fn finds_a_pair_or_its_inverse() {
        let r = |s| Ratio::parse_positive(s).expect("r");
        let rates = Rates::new(vec![
            pair("USDT/INR", RateKind::Fixed(r("84.25"))),
            pair("USD/INR", RateKind::Fixed(r("80"))),
        ]);
        assert_eq!(
            rates.lookup("USDT", "inr", 5).expect("direct").rate,
            r("84.25")
        );
        // A USD price paid by UPI: INR per… no, USD per INR, the inverse of USD/INR.
        assert_eq!(
            rates.lookup("INR", "usd", 5).expect("inverse").rate,
            r("0.0125")
        );
        assert!(matches!(
            rates.lookup("USDT", "eur", 5),
            Err(RateError::NotConfigured { .. })
        ));
    }

    #[test]
    fn a_source_pair_is_unavailable_until_it_answers_and_when_stale() {
        let rates = Rates::new(vec![pair("USDT/INR", RateKind::Sources(vec![]))]);
        assert!(matches!(
            rates.lookup("USDT", "inr", 0),
            Err(RateError::Unavailable { .. })
        ));
        let q = Quote {
            rate: Ratio { num: 84, den: 1 },
            source: "test".into(),
            at_ms: 1_000,
        };
        *rates.pairs[0].latest.lock().expect("lock") = Some(q);
        assert!(rates.lookup("USDT", "inr", 1_000 + 300_000).is_ok());
        assert!(matches!(
            rates.lookup("USDT", "inr", 1_000 + 300_001),
            Err(RateError::Unavailable { .. })
        ));
    }
}
