//! Refunds and the balance ledger. Pure: the store calls these inside the write transaction, so
//! the check of what may still be refunded and the reservation of it are one atomic step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::method::Currency;
use super::money::format_units;
use super::session::{PaymentState, Session};
use super::view::rfc3339;

/// Where a refund is: money leaves by the operator's hand, so `pending` until they say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<RefundStatus> {
        Some(match s {
            "pending" => RefundStatus::Pending,
            "succeeded" => RefundStatus::Succeeded,
            "failed" => RefundStatus::Failed,
            _ => return None,
        })
    }

    /// Pending and succeeded refunds hold money against what was received; a failed one frees it.
    pub fn holds_money(self) -> bool {
        !matches!(self, RefundStatus::Failed)
    }
}

/// A refund of (part of) what a session received through one method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub merchant_id: String,
    pub livemode: bool,
    pub session_id: String,
    pub method: String,
    pub currency: Currency,
    /// In the method's base units (paise, token base units).
    pub amount_base: u128,
    pub decimals: u32,
    pub status: RefundStatus,
    pub reason: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// How the money went back: a transaction hash (tokens) or a UTR (UPI, bank transfer).
    pub tx_hash: Option<String>,
    pub utr: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Listing order within the merchant's mode.
    pub seq: u64,
    /// The refunded amount valued in the session's price currency at its locked rate, for a
    /// session priced in another currency (`None`: not converted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<crate::domain::price::PriceAmount>,
}

/// Why a refund cannot be created or moved on; each maps to one stable API error code.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RefundError {
    #[error("this session has no confirmed payment to refund")]
    NotPaid,
    #[error(
        "this session was paid through several methods ({0}); say which one to refund with method"
    )]
    MethodAmbiguous(String),
    #[error("this session received no confirmed payment through {0}")]
    MethodNotPaid(String),
    #[error(
        "refund of {requested} exceeds what is left to refund ({refundable} of {received} received through {method}; pending and succeeded refunds count)"
    )]
    ExceedsReceived {
        method: String,
        requested: String,
        refundable: String,
        received: String,
    },
    #[error("amount must be greater than zero")]
    Zero,
    #[error("refund {id} is already {status}; only a pending refund can succeed or fail")]
    NotPending { id: String, status: &'static str },
}

impl RefundError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            RefundError::NotPaid => "session_not_paid",
            RefundError::MethodAmbiguous(_) => "parameter_missing",
            RefundError::MethodNotPaid(_) => "parameter_invalid",
            RefundError::ExceedsReceived { .. } => "refund_exceeds_received",
            RefundError::Zero => "parameter_invalid",
            RefundError::NotPending { .. } => "refund_not_pending",
        }
    }
}

/// Confirmed money a session received, per method: (base units, decimals). Late payments and
/// overpayments count: they are the customer's money too.
pub fn received_by_method(s: &Session) -> BTreeMap<String, (u128, u32)> {
    let mut out: BTreeMap<String, (u128, u32)> = BTreeMap::new();
    for p in s
        .payments
        .iter()
        .filter(|p| p.state == PaymentState::Confirmed)
    {
        let e = out.entry(p.method.clone()).or_insert((0, p.decimals));
        e.0 = e.0.saturating_add(p.amount_base);
    }
    out
}

/// What refunds already hold against `method` (pending and succeeded).
pub fn committed(refunds: &[Refund], method: &str) -> u128 {
    refunds
        .iter()
        .filter(|r| r.method == method && r.status.holds_money())
        .fold(0, |acc, r| acc.saturating_add(r.amount_base))
}

/// The method a refund draws on: the one given, or the only one that received money.
pub fn refund_method(s: &Session, method: Option<&str>) -> Result<(String, u32), RefundError> {
    let received = received_by_method(s);
    match method {
        Some(m) => received
            .get(m)
            .map(|(_, d)| (m.to_owned(), *d))
            .ok_or_else(|| RefundError::MethodNotPaid(m.to_owned())),
        None => {
            let mut it = received.iter();
            match (it.next(), it.next()) {
                (None, _) => Err(RefundError::NotPaid),
                (Some((m, (_, d))), None) => Ok((m.clone(), *d)),
                _ => Err(RefundError::MethodAmbiguous(
                    received.keys().cloned().collect::<Vec<_>>().join(", "),
                )),
            }
        }
    }
}

/// Checks a refund of `amount` (all that is left when `None`) against what `s` received
/// through `method` and what `existing` refunds hold; returns the amount to reserve.
pub fn check_amount(
    s: &Session,
    existing: &[Refund],
    method: &str,
    amount: Option<u128>,
) -> Result<u128, RefundError> {
    let received = received_by_method(s);
    let Some((got, decimals)) = received.get(method).copied() else {
        return Err(if received.is_empty() {
            RefundError::NotPaid
        } else {
            RefundError::MethodNotPaid(method.to_owned())
        });
    };
    let left = got.saturating_sub(committed(existing, method));
    let want = amount.unwrap_or(left);
    if amount == Some(0) {
        return Err(RefundError::Zero);
    }
    if want == 0 || want > left {
        return Err(RefundError::ExceedsReceived {
            method: method.to_owned(),
            requested: format_units(want, decimals),
            refundable: format_units(left, decimals),
            received: format_units(got, decimals),
        });
    }
    Ok(want)
}

/// How the operator says the money went back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded {
        tx_hash: Option<String>,
        utr: Option<String>,
    },
    Failed {
        reason: String,
    },
}

impl Refund {
    /// Moves a pending refund to succeeded or failed.
    pub fn finish(&mut self, outcome: Outcome, now_ms: i64) -> Result<(), RefundError> {
        if self.status != RefundStatus::Pending {
            return Err(RefundError::NotPending {
                id: self.id.clone(),
                status: self.status.as_str(),
            });
        }
        match outcome {
            Outcome::Succeeded { tx_hash, utr } => {
                self.status = RefundStatus::Succeeded;
                self.tx_hash = tx_hash;
                self.utr = utr;
            }
            Outcome::Failed { reason } => {
                self.status = RefundStatus::Failed;
                self.failure_reason = Some(reason);
            }
        }
        self.updated_at_ms = now_ms;
        Ok(())
    }
}

/// The refund object of the API.
pub fn refund_json(r: &Refund) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "object": "refund",
        "livemode": r.livemode,
        "session": r.session_id,
        "method": r.method,
        "currency": r.currency.as_str(),
        "amount": format_units(r.amount_base, r.decimals),
        "amount_base_units": r.amount_base.to_string(),
        "status": r.status.as_str(),
        "reason": r.reason,
        "metadata": r.metadata,
        "tx_hash": r.tx_hash,
        "utr": r.utr,
        "failure_reason": r.failure_reason,
        "created_at": rfc3339(r.created_at_ms),
        "updated_at": rfc3339(r.updated_at_ms),
        "price": r.price,
    })
}

/// One row of the balance ledger: a merchant's mode and method. Kept in the store and updated
/// in the same transaction as every payment and refund change, so it never drifts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub currency: Currency,
    pub decimals: u32,
    /// Confirmed payments.
    pub received: u128,
    /// Succeeded refunds.
    pub refunded: u128,
    /// Pending refunds.
    pub pending: u128,
}

impl LedgerEntry {
    pub fn new(currency: Currency, decimals: u32) -> Self {
        LedgerEntry {
            currency,
            decimals,
            received: 0,
            refunded: 0,
            pending: 0,
        }
    }

    /// What is left: received − refunded − pending (never below zero: refunds are capped by
    /// confirmed payments, which never go away).
    pub fn available(&self) -> u128 {
        self.received
            .saturating_sub(self.refunded)
            .saturating_sub(self.pending)
    }
}

/// A ledger change: signed deltas in base units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    pub received: i128,
    pub refunded: i128,
    pub pending: i128,
}

/// Applies a delta; `false` when a total would go below zero (a bug the caller logs; the total
/// is clamped at zero rather than wrapping).
pub fn apply_delta(e: &mut LedgerEntry, d: Delta) -> bool {
    fn add(v: &mut u128, d: i128) -> bool {
        let mag = d.unsigned_abs();
        if d >= 0 {
            *v = v.saturating_add(mag);
            true
        } else {
            let ok = *v >= mag;
            *v = v.saturating_sub(mag);
            ok
        }
    }
    let a = add(&mut e.received, d.received);
    let b = add(&mut e.refunded, d.refunded);
    let c = add(&mut e.pending, d.pending);
    a && b && c
}

/// Confirmed payments that changed between two versions of a session, per method:
/// (method, decimals, delta in base units).
pub fn received_delta(before: Option<&Session>, after: &Session) -> Vec<(String, u32, i128)> {
    let old = before.map(received_by_method).unwrap_or_default();
    let new = received_by_method(after);
    let mut out = Vec::new();
    for (m, (v, d)) in &new {
        let was = old.get(m).map_or(0, |x| x.0);
        if *v != was {
            out.push((m.clone(), *d, to_i128(*v) - to_i128(was)));
        }
    }
    for (m, (v, d)) in &old {
        if !new.contains_key(m) {
            out.push((m.clone(), *d, -to_i128(*v)));
        }
    }
    out
}

fn to_i128(v: u128) -> i128 {
    i128::try_from(v).unwrap_or(i128::MAX)
}

/// The balance of one method as the API shows it.
pub fn balance_row_json(method: &str, e: &LedgerEntry) -> serde_json::Value {
    serde_json::json!({
        "method": method,
        "currency": e.currency.as_str(),
        "received_total": format_units(e.received, e.decimals),
        "refunded_total": format_units(e.refunded, e.decimals),
        "pending_refunds": format_units(e.pending, e.decimals),
        "available": format_units(e.available(), e.decimals),
    })
}

/// Totals per currency across its methods, at the finest precision among them (USDT on one
/// chain may have 6 decimals and 18 on another).
pub fn currency_totals(rows: &[(String, LedgerEntry)]) -> Vec<serde_json::Value> {
    let mut by: BTreeMap<&'static str, Vec<&LedgerEntry>> = BTreeMap::new();
    for (_, e) in rows {
        by.entry(e.currency.as_str()).or_default().push(e);
    }
    by.into_iter()
        .map(|(cur, es)| {
            let d = es.iter().map(|e| e.decimals).max().unwrap_or(2);
            let scale = |v: u128, from: u32| {
                super::money::pow10(d - from).map_or(v, |m| v.saturating_mul(m))
            };
            let sum = |f: fn(&LedgerEntry) -> u128| {
                es.iter()
                    .fold(0u128, |acc, e| acc.saturating_add(scale(f(e), e.decimals)))
            };
            serde_json::json!({
                "currency": cur,
                "received_total": format_units(sum(|e| e.received), d),
                "refunded_total": format_units(sum(|e| e.refunded), d),
                "pending_refunds": format_units(sum(|e| e.pending), d),
                "available": format_units(sum(LedgerEntry::available), d),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::session::{Payment, PaymentStatus, Status};

    fn session(payments: &[(&str, u128, PaymentState)]) -> Session {
        Session {
            id: "cs_x".into(),
            merchant_id: "m".into(),
            livemode: false,
            status: Status::Complete,
            payment_status: PaymentStatus::Paid,
            amount: 10_000,
            currency: Currency::Inr,
            amount_received: 0,
            description: None,
            customer_email: None,
            customer_name: None,
            client_reference_id: None,
            payment_options: vec![],
            checkout_url: String::new(),
            success_url: None,
            cancel_url: None,
            notify_url: None,
            payments: payments
                .iter()
                .enumerate()
                .map(|(i, (m, a, st))| Payment {
                    id: format!("py_{i}"),
                    method: (*m).into(),
                    amount_base: *a,
                    decimals: 2,
                    utr: None,
                    tx_hash: None,
                    log_index: None,
                    block_number: None,
                    confirmations: 0,
                    state: *st,
                    received_at_ms: 0,
                    reference: format!("r{i}"),
                    late: false,
                    reversed: false,
                    from: None,
                })
                .collect(),
            metadata: BTreeMap::new(),
            expires_at_ms: 0,
            created_at_ms: 0,
            completed_at_ms: None,
            ended_at_ms: None,
            paid_late: false,
            price: None,
            seq: 0,
            locale: None,
        }
    }

    fn refund(amount: u128, status: RefundStatus) -> Refund {
        Refund {
            id: "re_x".into(),
            merchant_id: "m".into(),
            livemode: false,
            session_id: "cs_x".into(),
            method: "upi".into(),
            currency: Currency::Inr,
            amount_base: amount,
            decimals: 2,
            status,
            reason: None,
            metadata: BTreeMap::new(),
            tx_hash: None,
            utr: None,
            failure_reason: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            seq: 0,
            price: None,
        }
    }

    #[test]
    fn only_confirmed_money_is_refundable_and_failed_refunds_free_it() {
        let s = session(&[
            ("upi", 6_000, PaymentState::Confirmed),
            ("upi", 4_000, PaymentState::Pending),
            ("upi", 9_000, PaymentState::Reverted),
        ]);
        assert_eq!(check_amount(&s, &[], "upi", None), Ok(6_000));
        let held = [
            refund(2_000, RefundStatus::Pending),
            refund(1_000, RefundStatus::Succeeded),
            refund(3_000, RefundStatus::Failed),
        ];
        assert_eq!(check_amount(&s, &held, "upi", Some(3_000)), Ok(3_000));
        assert!(matches!(
            check_amount(&s, &held, "upi", Some(3_001)),
            Err(RefundError::ExceedsReceived { .. })
        ));
        assert_eq!(
            check_amount(&s, &held, "upi", Some(0)),
            Err(RefundError::Zero)
        );
        let all = [refund(6_000, RefundStatus::Succeeded)];
        assert!(matches!(
            check_amount(&s, &all, "upi", None),
            Err(RefundError::ExceedsReceived { .. })
        ));
    }

    #[test]
    fn method_is_inferred_only_when_unambiguous() {
        assert_eq!(
            refund_method(&session(&[]), None),
            Err(RefundError::NotPaid)
        );
        let one = session(&[("upi", 1, PaymentState::Confirmed)]);
        assert_eq!(refund_method(&one, None), Ok(("upi".into(), 2)));
        assert!(matches!(
            refund_method(&one, Some("usdt_x")),
            Err(RefundError::MethodNotPaid(_))
        ));
        let two = session(&[
            ("upi", 1, PaymentState::Confirmed),
            ("usdt_x", 1, PaymentState::Confirmed),
        ]);
        assert!(matches!(
            refund_method(&two, None),
            Err(RefundError::MethodAmbiguous(_))
        ));
    }

    #[test]
    fn finishing_twice_is_refused() {
        let mut r = refund(5, RefundStatus::Pending);
        r.finish(
            Outcome::Failed {
                reason: "bounced".into(),
            },
            1,
        )
        .expect("first");
        assert_eq!(r.status, RefundStatus::Failed);
        assert!(matches!(
            r.finish(
                Outcome::Succeeded {
                    tx_hash: None,
                    utr: Some("1".into())
                },
                2
            ),
            Err(RefundError::NotPending { .. })
        ));
    }

    #[test]
    fn ledger_deltas_follow_confirmed_payments() {
        let before = session(&[("upi", 100, PaymentState::Pending)]);
        let after = session(&[("upi", 100, PaymentState::Confirmed)]);
        assert_eq!(
            received_delta(Some(&before), &after),
            vec![("upi".to_owned(), 2, 100)]
        );
        assert!(received_delta(Some(&after), &after).is_empty());
        let mut e = LedgerEntry::new(Currency::Inr, 2);
        assert!(apply_delta(
            &mut e,
            Delta {
                received: 100,
                pending: 30,
                ..Delta::default()
            }
        ));
        assert_eq!(e.available(), 70);
        assert!(!apply_delta(
            &mut e,
            Delta {
                refunded: -1,
                ..Delta::default()
            }
        ));
        assert_eq!(e.refunded, 0, "clamped, not wrapped");
    }

    #[test]
    fn currency_totals_use_the_finest_precision() {
        let mut a = LedgerEntry::new(Currency::Usd, 6);
        a.received = 1_500_000;
        let mut b = LedgerEntry::new(Currency::Usd, 18);
        b.received = 500_000_000_000_000_000;
        let t = currency_totals(&[("a".into(), a), ("b".into(), b)]);
        assert_eq!(t[0]["received_total"], "2.000000000000000000");
    }
}
