//! One UPI alert, judged and recorded: shared by the HTTP ingest routes (API key, forwarder
//! token) and the IMAP watcher, so the rules of which alert is money live in one place and
//! neither side reaches into the other. Nothing here speaks HTTP: callers render `Recorded`
//! and `IngestError` in their own terms.

use sha2::{Digest, Sha256};

use super::mail::MailVerdict;
use super::templates::Parser;
use crate::config::Merchant;
use crate::domain::ids::new_id;
use crate::domain::method::{Method, Rail};
use crate::store::{
    Credit, MatchResult, Observed, OpError, Outcome, Store, StoreError, WriteOp, write,
};

/// Why an alert could not be judged or recorded (it changed nothing).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("this merchant has no UPI method")]
    NoUpiMethod,
    #[error("the UPI alert templates failed to load")]
    ParserUnavailable,
    #[error("the IMAP merchant {0:?} is not configured")]
    UnknownMerchant(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The matcher refused the write.
    #[error("{0}")]
    Refused(OpError),
    #[error("unexpected outcome of {0}")]
    Unexpected(&'static str),
}

impl IngestError {
    /// Whether trying the same alert again later may succeed (storage, a missing parser),
    /// rather than being refused for good.
    pub fn is_transient(&self) -> bool {
        !matches!(self, IngestError::NoUpiMethod | IngestError::Refused(_))
    }
}

/// What one alert became.
#[derive(Debug)]
pub enum Recorded {
    Matched {
        session: String,
        payment: String,
        utr: Option<String>,
    },
    /// A reversal of a payment that had paid a session (the payment is flagged).
    Reversed {
        session: String,
        payment: String,
        utr: String,
    },
    Duplicate {
        existing: String,
        utr: Option<String>,
    },
    Unmatched {
        credit: Box<Credit>,
    },
    /// Not money (or not trusted), kept with the reason for the operator.
    Ignored {
        reason: String,
        credit: Box<Credit>,
    },
}

/// What became of one alert.
enum Verdict {
    Money {
        paise: u64,
        utr: Option<String>,
    },
    /// A reversal naming a UTR: if that UTR paid a session, the payment is flagged.
    Reversal {
        utr: String,
        reason: String,
    },
    Ignored(String),
}

/// An alert as it arrived, before it is judged.
pub struct Alert {
    /// `sms`, `manual`, `notification`, `email`.
    pub source: String,
    pub sender: Option<String>,
    pub text: Option<String>,
    /// For `manual`: the amount and UTR typed in.
    pub manual: Option<(u64, Option<String>)>,
    pub received_at_ms: i64,
}

fn upi_method(merchant: &Merchant) -> Result<(&Method, &str), IngestError> {
    merchant
        .methods
        .iter()
        .find_map(|m| match &m.rail {
            Rail::Upi { vpa, .. } => Some((m, vpa.as_str())),
            Rail::Token { .. } => None,
        })
        .ok_or(IngestError::NoUpiMethod)
}

/// Judges an alert and records what it is: a matched payment, a duplicate, an unmatched credit,
/// or an ignored alert with the reason.
pub async fn process(
    store: &dyn Store,
    parser: Option<&Parser>,
    merchant: &Merchant,
    livemode: bool,
    alert: Alert,
) -> Result<Recorded, IngestError> {
    let (method, vpa) = upi_method(merchant)?;
    let verdict = match &alert.manual {
        Some((paise, utr)) => Verdict::Money {
            paise: *paise,
            utr: utr.clone(),
        },
        None => {
            let parser = parser.ok_or(IngestError::ParserUnavailable)?;
            let text = alert.text.as_deref().unwrap_or_default();
            let notification = alert.source == "notification";
            match &alert.sender {
                Some(s) if notification && super::apps::app_for_package(s).is_none() => {
                    Verdict::Ignored(format!(
                        "notification from {s:?}: not a supported merchant payment app"
                    ))
                }
                // A mailbox alert's sender is its DKIM-proven From address: parsed below with
                // that bank's templates only.
                Some(s) if alert.source == "email" && parser.bank_for_email_domain(s).is_none() => {
                    Verdict::Ignored(format!("mail from {s:?} is not from a known bank"))
                }
                Some(s)
                    if !notification
                        && alert.source != "email"
                        && parser.bank_for_sender(s).is_none() =>
                {
                    Verdict::Ignored(format!("sender {s:?} is not a known bank sender id"))
                }
                _ => {
                    let a = match (&alert.sender, notification) {
                        (Some(pkg), true) => parser.parse_notification(pkg, text),
                        _ => parser.parse(alert.sender.as_deref(), text),
                    };
                    match (a.is_money(), a.amount_paise) {
                        (true, Some(p)) => Verdict::Money {
                            paise: p,
                            utr: a.utr,
                        },
                        _ if a.kind == super::alert::AlertKind::Reversal && a.utr.is_some() => {
                            Verdict::Reversal {
                                utr: a.utr.clone().unwrap_or_default(),
                                reason: a.ignore_reason().unwrap_or("reversal").to_owned(),
                            }
                        }
                        _ => Verdict::Ignored(
                            a.ignore_reason().unwrap_or("not a credit alert").to_owned(),
                        ),
                    }
                }
            }
        }
    };
    let destination = method.destination_key(vpa);
    let manual = alert.manual.is_some();
    let Alert {
        source,
        sender,
        text,
        received_at_ms,
        ..
    } = alert;
    // A receipt time from a body is the sender's word: never later than now, so it cannot make
    // money look received after a session was created.
    let received_at_ms = received_at_ms.min(chrono::Utc::now().timestamp_millis());
    let verdict = match verdict {
        Verdict::Reversal { utr, reason } => {
            let reference = if livemode {
                format!("upi:{utr}")
            } else {
                format!("test:upi:{utr}")
            };
            match write(
                store,
                WriteOp::ReversePayment {
                    reference,
                    merchant_id: merchant.id.clone(),
                    livemode,
                },
                None,
            )
            .await?
            {
                Ok(Outcome::Match(MatchResult::Matched {
                    session,
                    payment_id,
                })) => {
                    crate::metrics::METRICS.upi_alert("reversed");
                    return Ok(Recorded::Reversed {
                        session: session.id,
                        payment: payment_id,
                        utr,
                    });
                }
                Ok(Outcome::Match(MatchResult::Duplicate { existing })) => {
                    return Ok(Recorded::Duplicate {
                        existing,
                        utr: Some(utr),
                    });
                }
                // Not a payment of ours: kept as ignored, as before.
                _ => Verdict::Ignored(reason),
            }
        }
        v => v,
    };
    match verdict {
        Verdict::Reversal { .. } => Err(IngestError::Unexpected("a reversal")),
        Verdict::Ignored(reason) => {
            let credit = record_ignored(
                store,
                merchant,
                livemode,
                received_at_ms,
                reason.clone(),
                source,
                sender,
            )
            .await?;
            crate::metrics::METRICS.upi_alert("ignored");
            Ok(Recorded::Ignored { reason, credit })
        }
        Verdict::Money { paise, utr } => {
            // A credit is unique by UTR; without one, by the alert itself (the same SMS twice
            // is one credit; a different SMS with the same amount is another).
            let reference = match &utr {
                Some(u) => format!("upi:{u}"),
                // Typed in by the operator: each entry is its own credit (retries are what
                // Idempotency-Key is for).
                None if manual => format!("upi-manual:{}", new_id("mc")),
                None => {
                    let mut h = Sha256::new();
                    h.update(sender.as_deref().unwrap_or("").as_bytes());
                    h.update(b"\n");
                    h.update(text.as_deref().unwrap_or("").as_bytes());
                    if source == "notification" {
                        // A notification carries no date of its own: two payments of the same
                        // amount from the same payer read alike, the phone's time tells them apart.
                        h.update(received_at_ms.to_be_bytes());
                    }
                    // Not the receipt time: a forwarder's retry of the same SMS must stay one
                    // credit (bank texts carry their own date, time or balance).
                    format!("upi-noref:{}", hex::encode(&h.finalize()[..16]))
                }
            };
            // Test references live apart from live ones: a test credit carrying a real UTR
            // never makes the live credit with that UTR a duplicate (nor the reverse).
            let reference = if livemode {
                reference
            } else {
                format!("test:{reference}")
            };
            let observed = Observed {
                destination,
                amount_base: u128::from(paise),
                decimals: 2,
                reference,
                livemode,
                utr: utr.clone(),
                tx_hash: None,
                log_index: None,
                block_number: None,
                confirmations: 0,
                confirmed: true,
                received_at_ms,
                owner: Some((merchant.id.clone(), method.name.clone())),
                only_session: None,
                source: Some(source),
                sender,
                from: None,
            };
            match write(store, WriteOp::Observe(Box::new(observed)), None).await? {
                Ok(Outcome::Match(MatchResult::Matched {
                    session,
                    payment_id,
                })) => {
                    crate::metrics::METRICS.upi_alert("matched");
                    Ok(Recorded::Matched {
                        session: session.id,
                        payment: payment_id,
                        utr,
                    })
                }
                Ok(Outcome::Match(MatchResult::Duplicate { existing })) => {
                    crate::metrics::METRICS.upi_alert("duplicate");
                    Ok(Recorded::Duplicate { existing, utr })
                }
                Ok(Outcome::Match(MatchResult::Unmatched { credit })) => {
                    crate::metrics::METRICS.upi_alert("unmatched");
                    Ok(Recorded::Unmatched { credit })
                }
                Ok(_) => Err(IngestError::Unexpected("an observed payment")),
                Err(e) => Err(IngestError::Refused(e)),
            }
        }
    }
}

/// An alert e-mail the IMAP watcher fetched: trusted ones are parsed like an SMS, untrusted ones
/// are kept as ignored with the reason. Credits from the mailbox pay live sessions only.
pub async fn process_email(
    store: &dyn Store,
    parser: Option<&Parser>,
    merchant: &Merchant,
    verdict: MailVerdict,
    received_at_ms: i64,
) -> Result<(), IngestError> {
    let alert = match verdict {
        // Received when the bank says it sent it (never later than delivery), so an alert
        // never pays a session created after it.
        MailVerdict::Trusted {
            text,
            sent_at_ms,
            from,
            ..
        } => Alert {
            source: "email".into(),
            sender: Some(from),
            text: Some(text),
            manual: None,
            received_at_ms: sent_at_ms.min(received_at_ms),
        },
        MailVerdict::Untrusted(reason) => {
            record_ignored(
                store,
                merchant,
                true,
                received_at_ms,
                reason,
                "email".into(),
                None,
            )
            .await?;
            return Ok(());
        }
    };
    process(store, parser, merchant, true, alert)
        .await
        .map(|_| ())
}

/// Keeps an alert that is not money, with the reason, for the operator to see.
async fn record_ignored(
    store: &dyn Store,
    merchant: &Merchant,
    livemode: bool,
    received_at_ms: i64,
    reason: String,
    source: String,
    sender: Option<String>,
) -> Result<Box<Credit>, IngestError> {
    let (method, vpa) = upi_method(merchant)?;
    let credit = Credit {
        id: new_id("cr"),
        merchant_id: Some(merchant.id.clone()),
        method: Some(method.name.clone()),
        destination: method.destination_key(vpa),
        amount_base: 0,
        decimals: 2,
        reference: format!("ignored:{}", new_id("al")),
        utr: None,
        tx_hash: None,
        livemode,
        received_at_ms,
        status: "ignored".into(),
        reason,
        source: Some(source),
        sender,
    };
    match write(
        store,
        WriteOp::RecordIgnored {
            credit: Box::new(credit),
        },
        None,
    )
    .await?
    {
        Ok(Outcome::Match(MatchResult::Unmatched { credit })) => Ok(credit),
        Ok(_) => Err(IngestError::Unexpected("an ignored alert")),
        Err(e) => Err(IngestError::Refused(e)),
    }
}
