//! Bank alert e-mails: which ones to believe, and their text. Pure: the IMAP watcher fetches,
//! this decides.
//!
//! A mail is trusted only when its From domain belongs to a bank (from the templates) and the
//! receiving server's `Authentication-Results` shows DKIM passing for that domain (or DMARC
//! passing for it). Only the receiving server's own header counts: the one carrying the
//! configured authserv-id, or else the topmost, since a sender can forge any header below it.

use mail_parser::{HeaderValue, MessageParser};

use super::templates::Parser;

/// What the watcher should do with one mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailVerdict {
    /// Believed: the bank and the alert text.
    Trusted { bank: String, text: String },
    /// Not believed, with the reason (kept for the operator).
    Untrusted(String),
}

/// The domain of an address, lowercased.
fn domain_of(addr: &str) -> Option<String> {
    addr.rsplit_once('@')
        .map(|(_, d)| d.trim().trim_end_matches('>').to_ascii_lowercase())
}

/// `d` is `want` or one of its subdomains.
fn same_org(d: &str, want: &str) -> bool {
    d == want || d.ends_with(&format!(".{want}"))
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

/// Whether one Authentication-Results value passes DKIM or DMARC for `domain`.
fn passes(ar: &str, domain: &str) -> bool {
    let ar = strip_comments(ar);
    ar.split(';').skip(1).any(|clause| {
        let c = clause.trim().to_ascii_lowercase();
        let prop = |name: &str| {
            c.split_whitespace()
                .find_map(|t| t.strip_prefix(name))
                .map(|v| v.trim_matches(|ch| ch == '"' || ch == ';').to_owned())
        };
        (c.starts_with("dkim=pass")
            && prop("header.d=").is_some_and(|d| same_org(domain, &d) || same_org(&d, domain)))
            || (c.starts_with("dmarc=pass") && prop("header.from=").is_some_and(|d| d == domain))
    })
}

fn authserv_id(ar: &str) -> &str {
    ar.split(';')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("")
}

/// Whether `text` names one of the merchant's accounts (by their last digits, as banks mask them:
/// "a/c XX1234", "A/c ...1234", "account ending 1234"). A genuine bank mail about someone else's
/// account, re-sent to this mailbox, still passes DKIM: this is what ties it to the merchant.
pub fn mentions_account(text: &str, suffixes: &[String]) -> bool {
    let bytes = text.as_bytes();
    suffixes.iter().filter(|s| !s.is_empty()).any(|suffix| {
        text.match_indices(suffix.as_str()).any(|(i, _)| {
            let before = i.checked_sub(1).and_then(|j| bytes.get(j));
            let after = bytes.get(i + suffix.len());
            before.is_none_or(|b| !b.is_ascii_digit()) && after.is_none_or(|b| !b.is_ascii_digit())
        })
    })
}

/// Judges a raw RFC 5322 message for a merchant whose accounts end in `accounts`.
pub fn judge(
    raw: &[u8],
    parser: &Parser,
    authserv: Option<&str>,
    accounts: &[String],
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
    let results: Vec<String> = msg
        .header_values("Authentication-Results")
        .filter_map(|v| match v {
            HeaderValue::Text(t) => Some(t.to_string()),
            _ => None,
        })
        .collect();
    let ours: Vec<&String> = match authserv {
        Some(id) => results
            .iter()
            .filter(|r| authserv_id(r).eq_ignore_ascii_case(id))
            .collect(),
        None => results.first().into_iter().collect(),
    };
    if !ours.iter().any(|r| passes(r, &domain)) {
        return MailVerdict::Untrusted(format!(
            "no DKIM or DMARC pass for {domain} from the receiving server"
        ));
    }
    let text = msg
        .body_text(0)
        .map(|t| t.into_owned())
        .or_else(|| msg.body_html(0).map(|h| strip_tags(&h)))
        .unwrap_or_default();
    let subject = msg.subject().unwrap_or_default();
    let text = format!("{subject}\n{text}").trim().to_owned();
    if !mentions_account(&text, accounts) {
        return MailVerdict::Untrusted(
            "the alert does not name one of the merchant's accounts (upi.imap.accounts)".into(),
        );
    }
    MailVerdict::Trusted { bank, text }
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

    fn mail(from: &str, ar: &[&str], body: &str) -> Vec<u8> {
        let mut m = String::new();
        for a in ar {
            m.push_str(&format!("Authentication-Results: {a}\r\n"));
        }
        m.push_str(&format!("From: HDFC Bank InstaAlerts <{from}>\r\nTo: shop@example.com\r\nSubject: Account update\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"));
        m.into_bytes()
    }

    #[test]
    fn trusts_only_a_bank_domain_with_dkim_or_dmarc_from_the_receiving_server() {
        let p = Parser::builtin().expect("templates");
        let acct = vec!["1234".to_owned()];
        let judge = |raw: &[u8], p: &Parser, id: Option<&str>| judge(raw, p, id, &acct);
        let body = "Rs.150.00 credited to a/c XX1234 on 20-11-26 by a/c linked to VPA cust@okaxis (UPI Ref No 432112345678).";
        let good = mail(
            "alerts@hdfcbank.net",
            &[
                "mx.shop.example; dkim=pass header.d=hdfcbank.net; dmarc=pass header.from=hdfcbank.net",
            ],
            body,
        );
        assert!(matches!(
            judge(&good, &p, None),
            MailVerdict::Trusted { .. }
        ));
        assert!(matches!(
            judge(&good, &p, Some("mx.shop.example")),
            MailVerdict::Trusted { .. }
        ));
        assert!(matches!(
            judge(&good, &p, Some("other.mx")),
            MailVerdict::Untrusted(_)
        ));
        let failed = mail(
            "alerts@hdfcbank.net",
            &[
                "mx.shop.example; dkim=fail header.d=hdfcbank.net; dmarc=fail header.from=hdfcbank.net",
            ],
            body,
        );
        assert!(matches!(
            judge(&failed, &p, None),
            MailVerdict::Untrusted(_)
        ));
        // A forged pass below the receiving server's own header does not count.
        let forged = mail(
            "alerts@hdfcbank.net",
            &[
                "mx.shop.example; dkim=none; dmarc=fail header.from=hdfcbank.net",
                "mx.shop.example; dkim=pass header.d=hdfcbank.net",
            ],
            body,
        );
        assert!(matches!(
            judge(&forged, &p, None),
            MailVerdict::Untrusted(_)
        ));
        let signed_by_other = mail(
            "alerts@hdfcbank.net",
            &["mx.shop.example; dkim=pass header.d=evil.example"],
            body,
        );
        assert!(matches!(
            judge(&signed_by_other, &p, None),
            MailVerdict::Untrusted(_)
        ));
        let stranger = mail(
            "alerts@evil.example",
            &["mx.shop.example; dkim=pass header.d=evil.example"],
            body,
        );
        assert!(
            matches!(judge(&stranger, &p, None), MailVerdict::Untrusted(r) if r.contains("evil.example"))
        );
    }
}
