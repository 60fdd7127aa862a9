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

/// Whether one Authentication-Results value passes DKIM or DMARC for `domain`.
fn passes(ar: &str, domain: &str) -> bool {
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

/// Judges a raw RFC 5322 message.
pub fn judge(raw: &[u8], parser: &Parser, authserv: Option<&str>) -> MailVerdict {
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
    MailVerdict::Trusted {
        bank,
        text: format!("{subject}\n{text}").trim().to_owned(),
    }
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
