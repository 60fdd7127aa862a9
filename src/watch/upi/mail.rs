//! Bank alert e-mails: which ones to believe, and their text. Pure: the IMAP watcher fetches,
//! this decides.
//!
//! A mail is trusted only when all of these hold, since a genuine DKIM-signed alert about
//! someone else's account (or an old one) can be re-sent to the merchant's mailbox:
//! - its From domain belongs to a bank (from the templates) this mailbox accepts
//!   (`upi.imap.banks`);
//! - the topmost `Authentication-Results` header (the receiving server adds its own on top; any
//!   below it may be forged by the sender) carries the configured `authserv_id` and shows DKIM
//!   passing for a domain of that same bank (or DMARC passing for the From domain);
//! - it is addressed to this mailbox (To/Cc, and the topmost Delivered-To when present);
//! - its own dates (Date, DKIM `t=`) are close to when it was delivered (IMAP INTERNALDATE);
//! - the credited account in its text is one of the merchant's (`upi.imap.accounts`).

use mail_parser::{HeaderValue, MessageParser};

use super::account::{credited_account, is_merchant_account};
use super::templates::Parser;

/// What the watcher should do with one mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailVerdict {
    /// Believed: the bank, the alert text, and when the bank sent it (the earliest of its own
    /// dates and the delivery time: the matcher never pays a session created after it).
    Trusted {
        bank: String,
        /// The From address, whose domain DKIM proved is `bank`'s: the text is read with that
        /// bank's templates only, never with another bank's that a remark in the mail imitates.
        from: String,
        text: String,
        sent_at_ms: i64,
    },
    /// Not believed, with the reason (kept for the operator).
    Untrusted(String),
}

/// What one mailbox accepts (from `[upi.imap]`).
#[derive(Debug, Clone, Copy)]
pub struct Mailbox<'a> {
    /// The receiving server's authserv-id: its `Authentication-Results` must be the topmost.
    pub authserv_id: &'a str,
    /// Bank names (as in the templates) whose mails this mailbox accepts.
    pub banks: &'a [String],
    /// The merchant's account digits; the credited account must be one.
    pub accounts: &'a [String],
    /// The mailbox's own addresses; the mail must be addressed to one.
    pub addresses: &'a [String],
    /// How far the mail's own dates may be from its delivery.
    pub max_delay_ms: i64,
}

/// The domain of an address, lowercased.
fn domain_of(addr: &str) -> Option<String> {
    addr.rsplit_once('@')
        .map(|(_, d)| d.trim().trim_end_matches('>').to_ascii_lowercase())
}

/// Removes RFC 8601 comments `(…)` and quoted strings `"…"`, so text a sender controls (echoed
/// in a comment or a quoted local part) cannot inject a `;dkim=pass` clause.
fn strip_comments(ar: &str) -> String {
    let mut out = String::with_capacity(ar.len());
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for c in ar.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            c if !quoted && depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Whether one Authentication-Results value passes DKIM for a domain of `bank`, or DMARC for
/// the From `domain`.
fn passes(ar: &str, parser: &Parser, bank: &str, domain: &str) -> bool {
    let ar = strip_comments(ar);
    ar.split(';').skip(1).any(|clause| {
        let c = clause.trim().to_ascii_lowercase();
        let prop = |name: &str| {
            c.split_whitespace()
                .find_map(|t| t.strip_prefix(name))
                .map(|v| v.trim_matches(|ch| ch == '"' || ch == ';').to_owned())
        };
        (c.starts_with("dkim=pass")
            && prop("header.d=").is_some_and(|d| parser.bank_for_email_domain(&d) == Some(bank)))
            || (c.starts_with("dmarc=pass") && prop("header.from=").is_some_and(|d| d == domain))
    })
}

fn authserv_id(ar: &str) -> &str {
    let first = ar.split(';').next().unwrap_or("");
    first.split_whitespace().next().unwrap_or("")
}

/// The raw text of every header named `name`, topmost first.
fn raw_headers(msg: &mail_parser::Message<'_>, name: &str) -> Vec<String> {
    msg.header_values(name)
        .filter_map(|v| match v {
            HeaderValue::Text(t) => Some(t.to_string()),
            HeaderValue::Address(a) => Some(
                a.iter()
                    .filter_map(|x| x.address())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            _ => None,
        })
        .collect()
}

/// The `t=` (signing time, unix seconds) of each DKIM signature by a domain of `bank`.
fn dkim_times(raw: &[u8], parser: &Parser, bank: &str) -> Vec<i64> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..head_end]);
    // Unfold, then take each DKIM-Signature header's tags.
    let unfolded = head
        .replace("\r\n", "\n")
        .replace("\n ", " ")
        .replace("\n\t", " ");
    unfolded
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("DKIM-Signature")
                .then_some(value)
        })
        .filter_map(|v| {
            let tag = |k: &str| {
                v.split(';').find_map(|t| {
                    let (n, val) = t.split_once('=')?;
                    (n.trim() == k).then(|| val.split_whitespace().collect::<String>())
                })
            };
            let d = tag("d")?;
            (parser.bank_for_email_domain(&d) == Some(bank))
                .then(|| tag("t").and_then(|t| t.parse::<i64>().ok()))?
        })
        .collect()
}

/// Judges a raw RFC 5322 message delivered to `mailbox` at `delivered_at_ms`.
pub fn judge(
    raw: &[u8],
    parser: &Parser,
    mailbox: &Mailbox<'_>,
    delivered_at_ms: i64,
) -> MailVerdict {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return MailVerdict::Untrusted("not a parseable e-mail".into());
    };
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_owned);
    let Some(domain) = from.as_deref().and_then(domain_of) else {
        return MailVerdict::Untrusted("no From address".into());
    };
    let Some(bank) = parser.bank_for_email_domain(&domain).map(str::to_owned) else {
        return MailVerdict::Untrusted(format!("sender domain {domain} is not a known bank's"));
    };
    if !mailbox.banks.iter().any(|b| b.eq_ignore_ascii_case(&bank)) {
        return MailVerdict::Untrusted(format!(
            "mail from {bank} ({domain}), a bank this mailbox does not accept (upi.imap.banks)"
        ));
    }
    let results = raw_headers(&msg, "Authentication-Results");
    let topmost = results.first();
    if !topmost.is_some_and(|r| {
        authserv_id(r).eq_ignore_ascii_case(mailbox.authserv_id)
            && passes(r, parser, &bank, &domain)
    }) {
        return MailVerdict::Untrusted(format!(
            "no DKIM or DMARC pass for {domain} in the topmost Authentication-Results (of {})",
            mailbox.authserv_id
        ));
    }
    let ours = |a: &str| {
        mailbox
            .addresses
            .iter()
            .any(|m| a.split(',').any(|x| x.trim().eq_ignore_ascii_case(m)))
    };
    let mut to = raw_headers(&msg, "To");
    to.extend(raw_headers(&msg, "Cc"));
    let delivered_to = raw_headers(&msg, "Delivered-To");
    if !to.iter().any(|a| ours(a)) || delivered_to.first().is_some_and(|a| !ours(a)) {
        return MailVerdict::Untrusted(
            "the mail is not addressed to this mailbox (To/Delivered-To; upi.imap.addresses)"
                .into(),
        );
    }
    let Some(date_ms) = msg.date().map(|d| d.to_timestamp().saturating_mul(1000)) else {
        return MailVerdict::Untrusted("the mail has no Date".into());
    };
    let mut own_times = vec![date_ms];
    own_times.extend(
        dkim_times(raw, parser, &bank)
            .into_iter()
            .map(|t| t.saturating_mul(1000)),
    );
    if own_times
        .iter()
        .any(|t| t.saturating_sub(delivered_at_ms).saturating_abs() > mailbox.max_delay_ms)
    {
        return MailVerdict::Untrusted(format!(
            "the mail's own date (Date or DKIM t=) is more than {} minutes from its delivery: an old alert re-sent",
            mailbox.max_delay_ms / 60_000
        ));
    }
    let sent_at_ms = own_times
        .iter()
        .copied()
        .chain(std::iter::once(delivered_at_ms))
        .min()
        .unwrap_or(delivered_at_ms);
    let text = msg
        .body_text(0)
        .map(|t| t.into_owned())
        .or_else(|| msg.body_html(0).map(|h| strip_tags(&h)))
        .unwrap_or_default();
    let subject = msg.subject().unwrap_or_default();
    let text = format!("{subject}\n{text}").trim().to_owned();
    match credited_account(&text) {
        Some(a) if is_merchant_account(&a, mailbox.accounts) => {}
        Some(a) => {
            return MailVerdict::Untrusted(format!(
                "the alert credits account …{a}, not one of the merchant's (upi.imap.accounts)"
            ));
        }
        None => {
            return MailVerdict::Untrusted(
                "the alert names no credited account (upi.imap.accounts)".into(),
            );
        }
    }
    MailVerdict::Trusted {
        bank,
        from: from.unwrap_or_default(),
        text,
        sent_at_ms,
    }
}

/// Just enough of a mail's header to decide whether its body is worth fetching: the From
/// domain is a bank this mailbox accepts. Pure, for the IMAP watcher's header pass.
pub fn from_accepted_bank(header: &[u8], parser: &Parser, banks: &[String]) -> bool {
    MessageParser::default()
        .parse_headers(header)
        .and_then(|m| {
            let domain = domain_of(m.from()?.first()?.address()?)?;
            let bank = parser.bank_for_email_domain(&domain)?;
            Some(banks.iter().any(|b| b.eq_ignore_ascii_case(bank)))
        })
        .unwrap_or(false)
}

/// Crude HTML to text: enough for bank alert templates, which match words and numbers.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&nbsp;", " ").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000;

    fn mail(from: &str, ar: &[&str], to: &str, body: &str) -> Vec<u8> {
        let mut m = String::new();
        for a in ar {
            m.push_str(&format!("Authentication-Results: {a}\r\n"));
        }
        let date = chrono::DateTime::from_timestamp_millis(NOW)
            .expect("date")
            .to_rfc2822();
        m.push_str(&format!("From: HDFC Bank InstaAlerts <{from}>\r\nTo: {to}\r\nDate: {date}\r\nSubject: Account update\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"));
        m.into_bytes()
    }

    fn trusted(v: &MailVerdict) -> bool {
        matches!(v, MailVerdict::Trusted { .. })
    }

    #[test]
    fn trusts_only_the_topmost_header_of_the_receiving_server_for_an_accepted_bank() {
        let p = Parser::builtin().expect("templates");
        let acct = vec!["1234".to_owned()];
        let banks = vec!["HDFC".to_owned()];
        let addrs = vec!["shop@example.com".to_owned()];
        let mb = Mailbox {
            authserv_id: "mx.shop.example",
            banks: &banks,
            accounts: &acct,
            addresses: &addrs,
            max_delay_ms: 3_600_000,
        };
        let judge = |raw: &[u8], mb: &Mailbox<'_>| judge(raw, &p, mb, NOW + 60_000);
        let to = "shop@example.com";
        let body = "Rs.150.00 credited to a/c XX1234 on 20-11-26 by a/c linked to VPA cust@okaxis (UPI Ref No 432112345678).";
        let pass =
            "mx.shop.example; dkim=pass header.d=hdfcbank.net; dmarc=pass header.from=hdfcbank.net";
        let good = mail("alerts@hdfcbank.net", &[pass], to, body);
        assert!(trusted(&judge(&good, &mb)), "{:?}", judge(&good, &mb));
        let other_id = Mailbox {
            authserv_id: "other.mx",
            ..mb
        };
        assert!(!trusted(&judge(&good, &other_id)));
        let other_bank = vec!["ICICI".to_owned()];
        assert!(!trusted(&judge(
            &good,
            &Mailbox {
                banks: &other_bank,
                ..mb
            }
        )));
        let failed = mail(
            "alerts@hdfcbank.net",
            &[
                "mx.shop.example; dkim=fail header.d=hdfcbank.net; dmarc=fail header.from=hdfcbank.net",
            ],
            to,
            body,
        );
        assert!(!trusted(&judge(&failed, &mb)));
        // A forged pass below the receiving server's own header does not count, even with its id.
        let forged = mail(
            "alerts@hdfcbank.net",
            &[
                "mx.shop.example; dkim=none; dmarc=fail header.from=hdfcbank.net",
                pass,
            ],
            to,
            body,
        );
        assert!(!trusted(&judge(&forged, &mb)));
        for d in ["evil.example", "net"] {
            let signed_by_other = mail(
                "alerts@hdfcbank.net",
                &[&format!("mx.shop.example; dkim=pass header.d={d}")],
                to,
                body,
            );
            assert!(!trusted(&judge(&signed_by_other, &mb)), "{d}");
        }
        let stranger = mail(
            "alerts@evil.example",
            &["mx.shop.example; dkim=pass header.d=evil.example"],
            to,
            body,
        );
        assert!(
            matches!(judge(&stranger, &mb), MailVerdict::Untrusted(r) if r.contains("evil.example"))
        );
        let elsewhere = mail("alerts@hdfcbank.net", &[pass], "victim@example.org", body);
        assert!(!trusted(&judge(&elsewhere, &mb)));
        let vpa_only = mail(
            "alerts@hdfcbank.net",
            &[pass],
            to,
            "Rs.150.00 credited to a/c XX9999 on 20-11-26 by a/c linked to VPA shop1234@okaxis (UPI Ref No 432112345678).",
        );
        assert!(!trusted(&judge(&vpa_only, &mb)));
    }

    #[test]
    fn refuses_a_mail_whose_own_dates_are_far_from_its_delivery() {
        let p = Parser::builtin().expect("templates");
        let acct = vec!["1234".to_owned()];
        let banks = vec!["HDFC".to_owned()];
        let addrs = vec!["shop@example.com".to_owned()];
        let mb = Mailbox {
            authserv_id: "mx",
            banks: &banks,
            accounts: &acct,
            addresses: &addrs,
            max_delay_ms: 3_600_000,
        };
        let body = "Rs.150.00 credited to a/c XX1234 on 20-11-26 (UPI Ref No 432112345678).";
        let raw = mail(
            "alerts@hdfcbank.net",
            &["mx; dkim=pass header.d=hdfcbank.net"],
            "shop@example.com",
            body,
        );
        match judge(&raw, &p, &mb, NOW + 1000) {
            MailVerdict::Trusted { sent_at_ms, .. } => assert_eq!(sent_at_ms, NOW),
            v => panic!("{v:?}"),
        }
        assert!(!trusted(&judge(&raw, &p, &mb, NOW + 2 * 3_600_000)));
        // An old DKIM signing time gives it away even under a fresh Date.
        let t = NOW / 1000 - 86_400;
        let mut signed = format!("DKIM-Signature: v=1; a=rsa-sha256; d=hdfcbank.net; s=s1;\r\n\tt={t}; h=from:to:date; b=abc\r\n").into_bytes();
        signed.extend_from_slice(&raw);
        assert!(!trusted(&judge(&signed, &p, &mb, NOW + 1000)));
    }
}
