//! Which account a bank alert says was credited. Pure: the mail judge (and the alert parser)
//! call it to tie a credit to the merchant's own account.
//!
//! Finding the account's digits anywhere in the text is not enough: a payer's VPA
//! (`shop1234@okaxis`), a payer's account ("by a/c XX1234") or a debited account also carry
//! digits. Only an account named in the clause that is credited counts: "A/c XX1234 credited",
//! "credited to a/c **1234", "received in your account ending 1234".

use std::sync::LazyLock;

use regex::Regex;

/// An account mention: the word, an optional "no."/"ending", a mask, then the digits.
static ACCOUNT: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // a constant pattern, checked by the unit tests
    Regex::new(
        r"(?i)\b(?:account|acct|a/c|ac)(?:\s*(?:no\.?|number|num\.?)|\s+ending(?:\s+(?:with|in))?)?\s*[:\-]?\s*[x*.\s]*(\d{3,})\b",
    )
    .expect("account pattern")
});

/// A word saying money came in.
static CREDIT: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // a constant pattern, checked by the unit tests
    Regex::new(r"(?i)\b(?:credited|received|deposited)\b").expect("credit pattern")
});

/// Words that, between an account and a credit word, mean the account is not the credited one.
static BREAKS: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // a constant pattern, checked by the unit tests
    Regex::new(r"(?i)\b(?:debited|debit|sent|transferred|paid|from|by)\b|[;@]|\.\s")
        .expect("break pattern")
});

/// Words just before an account that make it the payer's ("from a/c …", "by a/c …").
static PAYER: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // a constant pattern, checked by the unit tests
    Regex::new(r"(?i)\b(?:from|by|debited|to\s+VPA)\s*(?:your\s+)?(?:[a-z]+\s+){0,2}$")
        .expect("payer pattern")
});

/// How far a credit word may follow the credited account ("A/c XX1234 is credited").
const AFTER_GAP: usize = 24;
/// How far the credited account may follow the credit word ("credited to your HDFC Bank A/c").
const BEFORE_GAP: usize = 48;

/// The digits of the account the alert says was credited, or `None` when no clause credits an
/// account (a credit to a VPA, a debit, or no account named).
pub fn credited_account(text: &str) -> Option<String> {
    let accounts: Vec<(usize, usize, &str)> = ACCOUNT
        .captures_iter(text)
        .filter_map(|c| {
            let all = c.get(0)?;
            Some((all.start(), all.end(), c.get(1)?.as_str()))
        })
        .collect();
    let credits: Vec<(usize, usize)> = CREDIT
        .find_iter(text)
        .map(|m| (m.start(), m.end()))
        .collect();
    for &(a_start, a_end, digits) in &accounts {
        let before = &text[text.floor_char_boundary(a_start.saturating_sub(30))..a_start];
        if PAYER.is_match(before) {
            continue;
        }
        let bound = credits.iter().any(|&(c_start, c_end)| {
            let gap = if c_start >= a_end {
                // "A/c XX1234 credited": the account, then (soon) the credit word.
                (c_start - a_end <= AFTER_GAP).then(|| &text[a_end..c_start])
            } else if a_start >= c_end {
                // "credited to a/c XX1234": the credit word, then (soon) the account.
                (a_start - c_end <= BEFORE_GAP).then(|| &text[c_end..a_start])
            } else {
                None
            };
            gap.is_some_and(|g| !BREAKS.is_match(g) && !ACCOUNT.is_match(g))
        });
        if bound {
            return Some(digits.to_owned());
        }
    }
    None
}

/// Whether `credited` (digits as the alert shows them, often only the last 3 or 4) is one of the
/// configured accounts: the shorter of the two must end the longer (banks mask all but the last
/// digits; an operator may configure the full number or its last digits).
pub fn is_merchant_account(credited: &str, accounts: &[String]) -> bool {
    credited.len() >= 3
        && accounts
            .iter()
            .filter(|a| a.len() >= 3)
            .any(|a| a.ends_with(credited) || credited.ends_with(a.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(t: &str) -> Option<String> {
        credited_account(t)
    }

    #[test]
    fn finds_the_credited_account_in_each_bank_phrasing() {
        let cases = [
            (
                "Rs.150.00 credited to a/c XX1234 on 20-11-26 by a/c linked to VPA cust@okaxis (UPI Ref No 432112345678).",
                "1234",
            ),
            (
                "INR 5590.00 credited to A/c no. XX8926 on 09-11-23 at 11:59:28 IST. Info- UPI/P2A/334365332111/NAME",
                "8926",
            ),
            (
                "Rs.1600 Credited to A/c ...7656 thru UPI/069871591309 by NAME.",
                "7656",
            ),
            (
                "INR 25,000.00 has been CREDITED to your A/c XXX810 on 17/06/2025 by CASH.",
                "810",
            ),
            (
                "Rs.2.00 credited to HDFC Bank A/c xx2536 on 07-12-24 from VPA a@b (UPI 526830463424)",
                "2536",
            ),
            (
                "Money Received - INR 1.00 in your HDFC Bank A/c xx2536 (IMPS Ref No. 435202444399)",
                "2536",
            ),
            (
                "Update! INR 1.00 deposited in HDFC Bank A/c XX9999 on 30-MAR-26 for NEFT",
                "9999",
            ),
            (
                "ICICI Bank Account XX508 is credited with Rs 1,800.00 on 07-Jan-25 by Account linked to mobile",
                "508",
            ),
            (
                "Dear Customer, Acct XX823 is credited with Rs 6000.00 on 26-Jun-25 from NAME.",
                "823",
            ),
            (
                "Your A/C XXXXX037696 is credited with INR 25,000.00 on 26/12/25 06:24.",
                "037696",
            ),
            (
                "Ac XXXXXXXX00007271 Credited with Rs.200000.00 , 28-11-2022",
                "00007271",
            ),
            ("ur A/cX9709 credited by Rs519 on 03Dec23", "9709"),
            (
                "your A/c X6710-credited by Rs.6226 on 27Apr25 transfer from NAME",
                "6710",
            ),
            (
                "Your SB A/c **23618 is Credited for Rs.1743 on 01-01-26 by Transfer.",
                "23618",
            ),
            (
                "Rs 500.00 received in your account ending 1234 from cust@okaxis",
                "1234",
            ),
            ("Rs 500.00 credited to a/c **1234 on 01-01-26", "1234"),
        ];
        for (text, want) in cases {
            assert_eq!(acct(text).as_deref(), Some(want), "{text}");
        }
    }

    #[test]
    fn digits_outside_the_credited_clause_do_not_count() {
        for text in [
            // The digits are only in the payer's VPA.
            "Rs.150.00 credited to a/c XX9999 on 20-11-26 by a/c linked to VPA shop1234@okaxis (UPI Ref No 432112345678).",
            // The payer's account.
            "Rs.150.00 credited to VPA shop@okaxis from a/c XX1234 (UPI Ref No 432112345678).",
            // A debit, and a credit to someone's VPA.
            "Rs 918.00 debited from A/C XXXXXX1234 and credited to user12@apl UPI Ref:466970233165.",
            "ICICI Bank Acct XX1234 debited for Rs 180.00 on 10-Nov-25; NAME credited. UPI:568069174081.",
            // No account at all.
            "Your account has been credited with Rs 50.00 on 27-Sep-22 as reversal of transaction 1234.",
        ] {
            assert_ne!(acct(text).as_deref(), Some("1234"), "{text}");
        }
        assert_eq!(
            acct("Rs.150.00 credited to a/c XX9999 by VPA shop1234@okaxis").as_deref(),
            Some("9999")
        );
        assert_eq!(
            acct("Rs 918.00 debited from A/C XXXXXX1234 and credited to user12@apl"),
            None
        );
    }

    #[test]
    fn masked_digits_match_by_suffix_only() {
        let mine = vec!["1234".to_owned()];
        assert!(is_merchant_account("1234", &mine));
        assert!(is_merchant_account("0001234", &mine));
        assert!(is_merchant_account("234", &mine));
        assert!(!is_merchant_account("12345", &mine));
        assert!(!is_merchant_account("34", &mine));
        assert!(!is_merchant_account("9999", &mine));
        assert!(!is_merchant_account("1234", &[]));
    }
}
