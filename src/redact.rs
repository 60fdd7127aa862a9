//! The one redaction of URLs for everything shown or logged. RPC providers put their API key in
//! the user info, the path (`…/v2/<key>`) or the query (`?apikey=`), so only the scheme and the
//! host (with its port) are kept.

/// `scheme://host[:port]` of `u`; anything that does not parse as a URL is hidden whole.
pub fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(p) => match (p.host_str(), p.port()) {
            (Some(h), Some(port)) => format!("{}://{h}:{port}", p.scheme()),
            (Some(h), None) => format!("{}://{h}", p.scheme()),
            (None, _) => format!("{}:(redacted)", p.scheme()),
        },
        Err(_) => "(redacted URL)".into(),
    }
}

/// `text` (an error message, say) with every URL in it redacted: error texts of HTTP clients
/// quote the full URL they failed on.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme runs back from `://` over letters, digits, `+`, `-` and `.`.
        let start = rest[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map_or(at, |(i, _)| i);
        let end = rest[at..]
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '(' | ')' | '`' | ',')
            })
            .map_or(rest.len(), |i| at + i);
        // Punctuation right after a URL ("…/key: connection refused") is the sentence's.
        let end = start.max(at)
            + rest[start.max(at)..end]
                .trim_end_matches([':', ';', '.', '!', '?'])
                .len();
        out.push_str(&rest[..start]);
        if start == at {
            // No scheme: not a URL, but what follows `://` may still be one's tail.
            out.push_str("(redacted URL)");
        } else {
            out.push_str(&redact_url(&rest[start..end]));
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_only_scheme_and_host() {
        assert_eq!(
            redact_url("https://user:pw@rpc.example.com/?key=secret"),
            "https://rpc.example.com"
        );
        assert_eq!(
            redact_url("https://eth-mainnet.g.alchemy.com/v2/abcdefghijklmnop"),
            "https://eth-mainnet.g.alchemy.com"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:8545/k/s3cret?apikey=x"),
            "http://127.0.0.1:8545"
        );
        assert_eq!(redact_url("wss://[::1]:8546/ws/key"), "wss://[::1]:8546");
        assert_eq!(redact_url("not a url s3cret"), "(redacted URL)");
    }

    #[test]
    fn urls_inside_text_are_redacted() {
        assert_eq!(
            redact_text(
                "error sending request for url (http://127.0.0.1:9/v2/s3cret?apikey=k3y): connection refused"
            ),
            "error sending request for url (http://127.0.0.1:9): connection refused"
        );
        assert_eq!(
            redact_text("a https://x.io/a/s3cret and wss://y.io:1/b?k=s3cret."),
            "a https://x.io and wss://y.io:1."
        );
        assert_eq!(redact_text("no url here"), "no url here");
        assert_eq!(
            redact_text("http://127.0.0.1:9/k/s3cret: error"),
            "http://127.0.0.1:9: error"
        );
        assert!(!redact_text("://s3cret/x").contains("s3cret"));
    }
}
