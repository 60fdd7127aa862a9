//! What a bank alert is, and what it says about money: pure types plus exact amount parsing.
//!
//! Nothing here does I/O. The parser in [`super::templates`] produces [`ParsedAlert`]s; the
//! matcher decides with [`ParsedAlert::is_money`] (or [`ParsedAlert::is_money_with`]) whether
//! an alert may pay a UPI checkout session.

use std::fmt;

/// The class of a bank alert.
///
/// Incoming-money kinds are split by channel because only some channels can pay a UPI
/// session; everything that is not a credit to the account holder gets its own kind so the
/// daemon can store it as ignored *with a reason* instead of silently dropping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// UPI credit into the account. `utr` is the 12-digit UPI reference (RRN) when the bank
    /// sends it; a few banks (UCO) omit it, then `utr` is `None` and the amount is the key.
    UpiCredit,
    /// IMPS credit; `utr` is the IMPS RRN. UPI apps settle some transfers over IMPS.
    ImpsCredit,
    /// NEFT or RTGS credit; `utr` is the bank's NEFT/RTGS UTR (alphanumeric).
    NeftCredit,
    /// Cash deposited at a branch, CDM or agent.
    CashCredit,
    /// Internal "by transfer" credit (same bank, salary, sweep): channel says nothing of UPI.
    TransferCredit,
    /// Credit with an amount but no reference and no channel: the payable amount is the only key.
    CreditNoRef,
    /// Credit whose channel is not stated but which carries the bank's own transaction id
    /// (kept in `utr`; it may or may not be the NPCI RRN).
    CreditTxnId,
    /// Money left the account (UPI/IMPS/NEFT/card/ATM debit, or a "your beneficiary has
    /// received" confirmation), even when the text says "credited" about the other party.
    Debit,
    /// Money came back because an earlier debit failed or was reversed: not a payment.
    Reversal,
    /// A refund (merchant or card refund): money in, but never a customer payment.
    Refund,
    /// A UPI collect / payment request awaiting approval: no money has moved.
    CollectRequest,
    /// A one-time password or verification code.
    Otp,
    /// Mandate / AutoPay / standing-instruction notice, including pre-debit notices.
    Mandate,
    /// A spend on a (credit or debit) card, including UPI on a credit card.
    CardSpend,
    /// Nothing recognisable, or a recognised non-payment with no kind of its own (a credit
    /// that *will* happen, a credit-card account, a bounced cheque, cashback): not a payment.
    /// `template` tells which: `"none"` or the pattern that recognised it.
    Unknown,
}

impl AlertKind {
    /// Every kind, in declaration order (for tests and reports).
    pub const ALL: [AlertKind; 15] = [
        AlertKind::UpiCredit,
        AlertKind::ImpsCredit,
        AlertKind::NeftCredit,
        AlertKind::CashCredit,
        AlertKind::TransferCredit,
        AlertKind::CreditNoRef,
        AlertKind::CreditTxnId,
        AlertKind::Debit,
        AlertKind::Reversal,
        AlertKind::Refund,
        AlertKind::CollectRequest,
        AlertKind::Otp,
        AlertKind::Mandate,
        AlertKind::CardSpend,
        AlertKind::Unknown,
    ];

    /// The snake_case name used in template files and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::UpiCredit => "upi_credit",
            AlertKind::ImpsCredit => "imps_credit",
            AlertKind::NeftCredit => "neft_credit",
            AlertKind::CashCredit => "cash_credit",
            AlertKind::TransferCredit => "transfer_credit",
            AlertKind::CreditNoRef => "credit_no_ref",
            AlertKind::CreditTxnId => "credit_txn_id",
            AlertKind::Debit => "debit",
            AlertKind::Reversal => "reversal",
            AlertKind::Refund => "refund",
            AlertKind::CollectRequest => "collect_request",
            AlertKind::Otp => "otp",
            AlertKind::Mandate => "mandate",
            AlertKind::CardSpend => "card_spend",
            AlertKind::Unknown => "unknown",
        }
    }

    /// Inverse of [`AlertKind::as_str`].
    pub fn from_name(name: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Money came into the account (includes reversals and refunds, which are still not payments).
    pub fn is_credit(self) -> bool {
        matches!(
            self,
            AlertKind::UpiCredit
                | AlertKind::ImpsCredit
                | AlertKind::NeftCredit
                | AlertKind::CashCredit
                | AlertKind::TransferCredit
                | AlertKind::CreditNoRef
                | AlertKind::CreditTxnId
                | AlertKind::Reversal
                | AlertKind::Refund
        )
    }

    /// A credit from a third party into the account (a credit that is not money coming *back*).
    pub fn is_incoming_transfer(self) -> bool {
        self.is_credit() && !matches!(self, AlertKind::Reversal | AlertKind::Refund)
    }

    /// Whether this kind may pay a UPI session under `policy`.
    ///
    /// UPI, IMPS and channel-less credits always may; NEFT/RTGS, cash and internal transfer
    /// credits only when the operator opted in; nothing else ever does.
    pub fn may_pay(self, policy: CreditPolicy) -> bool {
        match self {
            AlertKind::UpiCredit
            | AlertKind::ImpsCredit
            | AlertKind::CreditNoRef
            | AlertKind::CreditTxnId => true,
            AlertKind::NeftCredit => policy.accept_neft,
            AlertKind::CashCredit => policy.accept_cash,
            AlertKind::TransferCredit => policy.accept_transfer,
            _ => false,
        }
    }

    /// Why an alert of this kind is stored as ignored under the default policy, if it is.
    pub fn ignore_reason(self) -> Option<&'static str> {
        match self {
            AlertKind::UpiCredit
            | AlertKind::ImpsCredit
            | AlertKind::CreditNoRef
            | AlertKind::CreditTxnId => None,
            AlertKind::NeftCredit => Some("NEFT/RTGS credit: not a UPI payment (operator opt-in)"),
            AlertKind::CashCredit => Some("cash credit: not a UPI payment (operator opt-in)"),
            AlertKind::TransferCredit => {
                Some("internal transfer credit: not a UPI payment (operator opt-in)")
            }
            AlertKind::Debit => Some("debit: money left the account"),
            AlertKind::Reversal => Some("reversal of an earlier debit: not a payment"),
            AlertKind::Refund => Some("refund: not a payment"),
            AlertKind::CollectRequest => Some("collect request: no money moved"),
            AlertKind::Otp => Some("OTP message"),
            AlertKind::Mandate => Some("mandate/AutoPay notice: no money received"),
            AlertKind::CardSpend => Some("card spend: money left the account"),
            AlertKind::Unknown => Some("unrecognised alert"),
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which non-UPI credits the operator lets pay a session.
///
/// All off by default: NEFT, cash and internal transfer credits are recorded but are not UPI
/// payments, because nothing ties them to the checkout the payer saw (no UPI reference, often
/// batched or delayed). An operator who takes bank transfers can turn them on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreditPolicy {
    /// NEFT / RTGS credits may pay (amount must still match exactly).
    pub accept_neft: bool,
    /// Cash deposits may pay.
    pub accept_cash: bool,
    /// "By transfer" credits may pay.
    pub accept_transfer: bool,
}

/// The result of parsing one alert text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAlert {
    /// What the alert is.
    pub kind: AlertKind,
    /// Bank display name (from the sender id, email domain or text), when known.
    pub bank: Option<String>,
    /// Transaction amount in paise, exact. `None` when absent or not exactly parseable.
    pub amount_paise: Option<u64>,
    /// UTR / RRN / bank reference as written, when present.
    pub utr: Option<String>,
    /// The payer's VPA, only for incoming transfers and only when the bank names it.
    pub payer_vpa: Option<String>,
    /// Which template pattern decided, as `"<template>/<pattern>"`, or `"none"`.
    pub template: String,
}

impl ParsedAlert {
    /// An alert nothing recognised.
    pub fn unknown(bank: Option<String>) -> ParsedAlert {
        ParsedAlert {
            kind: AlertKind::Unknown,
            bank,
            amount_paise: None,
            utr: None,
            payer_vpa: None,
            template: "none".to_owned(),
        }
    }

    /// True only for a credit that may pay a UPI session under the default policy:
    /// a UPI, IMPS or channel-less credit with a non-zero amount.
    pub fn is_money(&self) -> bool {
        self.is_money_with(CreditPolicy::default())
    }

    /// Like [`ParsedAlert::is_money`], letting the operator admit NEFT / cash / transfer credits.
    pub fn is_money_with(&self, policy: CreditPolicy) -> bool {
        self.kind.may_pay(policy) && self.amount_paise.is_some_and(|p| p > 0)
    }

    /// Why this alert is not a payment, or `None` when [`ParsedAlert::is_money`] holds.
    pub fn ignore_reason(&self) -> Option<&'static str> {
        match self.kind.ignore_reason() {
            Some(reason) => Some(reason),
            None if self.is_money() => None,
            None => Some("credit without a usable amount"),
        }
    }
}

/// Parses an amount as banks write it into exact paise, with integer arithmetic only.
///
/// Accepts an optional currency prefix (`Rs`, `Rs.`, `Rs:`, `INR`, `₹`, any case), spaces,
/// digits with grouping commas in any position between digits (Indian `1,00,000` and western
/// `100,000` both occur), and at most two decimals. Anything else — more than two decimals,
/// stray characters, overflow — is `None`: a wrong amount is worse than no amount.
///
/// ```
/// use paywatch::watch::upi::alert::parse_amount_paise;
/// assert_eq!(parse_amount_paise("Rs519"), Some(51_900));
/// assert_eq!(parse_amount_paise("Rs.6,226.50"), Some(622_650));
/// assert_eq!(parse_amount_paise("INR 1,00,000.00"), Some(10_000_000));
/// assert_eq!(parse_amount_paise("₹ 20.0"), Some(2_000));
/// assert_eq!(parse_amount_paise("1.005"), None);
/// ```
pub fn parse_amount_paise(text: &str) -> Option<u64> {
    let number = strip_currency(text.trim())?;
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (number, None),
    };
    let rupees = parse_grouped_digits(int_part)?;
    let paise = match frac_part {
        None => 0,
        Some(f) => parse_fraction(f)?,
    };
    rupees.checked_mul(100)?.checked_add(paise)
}

/// Removes a leading currency marker and the separators after it.
fn strip_currency(text: &str) -> Option<&str> {
    let lower_prefix = |p: &str| {
        text.get(..p.len())
            .filter(|head| head.eq_ignore_ascii_case(p))
            .map(|_| &text[p.len()..])
    };
    let rest = if let Some(rest) = text.strip_prefix('₹') {
        rest
    } else if let Some(rest) = lower_prefix("inr") {
        rest
    } else if let Some(rest) = lower_prefix("rs") {
        rest
    } else {
        return Some(text);
    };
    let rest = rest.trim_start();
    let rest = rest
        .strip_prefix('.')
        .or_else(|| rest.strip_prefix(':'))
        .unwrap_or(rest);
    Some(rest.trim_start())
}

/// Digits with commas strictly between digits, e.g. `1,00,000`; at least one digit.
fn parse_grouped_digits(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.first().is_none_or(|b| !b.is_ascii_digit())
        || bytes.last().is_none_or(|b| !b.is_ascii_digit())
    {
        return None;
    }
    let mut value: u64 = 0;
    let mut prev_comma = false;
    for &b in bytes {
        match b {
            b'0'..=b'9' => {
                value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
                prev_comma = false;
            }
            b',' if !prev_comma => prev_comma = true,
            _ => return None,
        }
    }
    Some(value)
}

/// One or two decimal digits, as paise.
fn parse_fraction(text: &str) -> Option<u64> {
    match text.as_bytes() {
        [d] if d.is_ascii_digit() => Some(u64::from(d - b'0') * 10),
        [d1, d2] if d1.is_ascii_digit() && d2.is_ascii_digit() => {
            Some(u64::from(d1 - b'0') * 10 + u64::from(d2 - b'0'))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_from_the_brief() {
        assert_eq!(parse_amount_paise("Rs519"), Some(51_900));
        assert_eq!(parse_amount_paise("Rs.6,226.50"), Some(622_650));
        assert_eq!(parse_amount_paise("INR 1,00,000.00"), Some(10_000_000));
        assert_eq!(parse_amount_paise("₹ 20.0"), Some(2_000));
    }

    #[test]
    fn amount_variants() {
        assert_eq!(parse_amount_paise("20.0"), Some(2_000));
        assert_eq!(parse_amount_paise("Rs:501.00"), Some(50_100));
        assert_eq!(parse_amount_paise("Rs. 1,172.06"), Some(117_206));
        assert_eq!(parse_amount_paise("inr 211,880.60"), Some(21_188_060));
        assert_eq!(parse_amount_paise("₹20"), Some(2_000));
        assert_eq!(parse_amount_paise("0.05"), Some(5));
        assert_eq!(parse_amount_paise("  7 "), Some(700));
    }

    #[test]
    fn amount_rejects() {
        for bad in [
            "",
            "Rs",
            "Rs.",
            ".50",
            "1.005",
            "1.",
            "1,",
            ",1",
            "1,,000",
            "1.2.3",
            "12a",
            "-5",
            "1 000",
            "Rs 1.0.0",
            "USD 5",
            "99999999999999999999",
        ] {
            assert_eq!(parse_amount_paise(bad), None, "{bad:?}");
        }
        assert_eq!(parse_amount_paise("184467440737095516.15"), Some(u64::MAX));
        assert_eq!(parse_amount_paise("184467440737095516.16"), None);
    }

    #[test]
    fn money_policy() {
        let mut alert = ParsedAlert::unknown(None);
        alert.amount_paise = Some(100);
        for kind in AlertKind::ALL {
            alert.kind = kind;
            let expected = matches!(
                kind,
                AlertKind::UpiCredit
                    | AlertKind::ImpsCredit
                    | AlertKind::CreditNoRef
                    | AlertKind::CreditTxnId
            );
            assert_eq!(alert.is_money(), expected, "{kind}");
            assert_eq!(alert.ignore_reason().is_none(), expected, "{kind}");
            assert_eq!(AlertKind::from_name(kind.as_str()), Some(kind));
        }
        alert.kind = AlertKind::NeftCredit;
        let neft = CreditPolicy {
            accept_neft: true,
            ..CreditPolicy::default()
        };
        assert!(alert.is_money_with(neft));
        alert.amount_paise = Some(0);
        assert!(!alert.is_money_with(neft));
        alert.kind = AlertKind::UpiCredit;
        assert!(!alert.is_money());
        assert_eq!(
            alert.ignore_reason(),
            Some("credit without a usable amount")
        );
    }
}
