//! Input rules for merchant-supplied fields. Each failure names the parameter and says what is
//! wrong, so the API can answer with a precise error and change nothing.

use std::collections::BTreeMap;

/// One rejected field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub param: String,
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn invalid(param: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            param: param.to_owned(),
            code: "parameter_invalid",
            message: message.into(),
        }
    }
}

pub const SESSION_ID_PLACEHOLDER: &str = "{CHECKOUT_SESSION_ID}";
pub const METADATA_MAX_KEYS: usize = 50;
pub const METADATA_KEY_MAX: usize = 40;
pub const METADATA_VALUE_MAX: usize = 500;

/// A text field: no control characters but newlines and tabs, at most `max` characters.
pub fn text(param: &str, value: &str, max: usize) -> Result<(), FieldError> {
    let n = value.chars().count();
    if n > max {
        return Err(FieldError::invalid(
            param,
            format!("{param} must be at most {max} characters (got {n})"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(FieldError::invalid(
            param,
            format!("{param} must not contain control characters"),
        ));
    }
    Ok(())
}

/// An absolute http(s) URL whose host is on the merchant's allow-list when it has one.
/// `{CHECKOUT_SESSION_ID}` may appear anywhere and is checked as if it were an id.
pub fn url(param: &str, value: &str, allowed_domains: &[String]) -> Result<(), FieldError> {
    if value.len() > 2048 {
        return Err(FieldError::invalid(
            param,
            format!("{param} must be at most 2048 characters"),
        ));
    }
    // The URL parser strips these silently, but the URL is stored and shown as given.
    if value.starts_with(|c: char| c <= ' ') || value.ends_with(|c: char| c <= ' ') {
        return Err(FieldError::invalid(
            param,
            format!("{param} must not start or end with spaces or control characters"),
        ));
    }
    let probe = value.replace(SESSION_ID_PLACEHOLDER, "cs_placeholder");
    let parsed = url::Url::parse(&probe).map_err(|e| {
        FieldError::invalid(
            param,
            format!("{param} must be an absolute http(s) URL ({e})"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FieldError::invalid(
            param,
            format!("{param} must use http or https, not {}", parsed.scheme()),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(FieldError::invalid(
            param,
            format!("{param} must not contain credentials"),
        ));
    }
    let Some(host) = parsed.host_str() else {
        return Err(FieldError::invalid(param, format!("{param} has no host")));
    };
    if !allowed_domains.is_empty() {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ok = allowed_domains.iter().any(|d| {
            let d = d.to_ascii_lowercase();
            host == d || host.ends_with(&format!(".{d}"))
        });
        if !ok {
            return Err(FieldError {
                param: param.to_owned(),
                code: "url_not_allowed",
                message: format!(
                    "{param} host {host} is not in this merchant's allowed_domains ({})",
                    allowed_domains.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// Replaces the session id placeholder in a validated URL.
pub fn substitute_id(url: &str, id: &str) -> String {
    url.replace(SESSION_ID_PLACEHOLDER, id)
}

/// A plausible e-mail address: one `@`, a local part, a dotted domain, no spaces.
pub fn email(param: &str, value: &str) -> Result<(), FieldError> {
    let bad = || FieldError::invalid(param, format!("{param} must be an e-mail address"));
    if value.len() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = value.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return Err(bad());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels.iter().any(|l| {
            l.is_empty()
                || l.starts_with('-')
                || l.ends_with('-')
                || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
    {
        return Err(bad());
    }
    Ok(())
}

/// Metadata: at most 50 keys of at most 40 characters, values of at most 500.
pub fn metadata(map: &BTreeMap<String, String>) -> Result<(), FieldError> {
    if map.len() > METADATA_MAX_KEYS {
        return Err(FieldError::invalid(
            "metadata",
            format!(
                "metadata may have at most {METADATA_MAX_KEYS} keys (got {})",
                map.len()
            ),
        ));
    }
    for (k, v) in map {
        let param = format!("metadata[{k}]");
        if k.is_empty() || k.chars().count() > METADATA_KEY_MAX {
            return Err(FieldError::invalid(
                &param,
                format!("metadata keys must be 1 to {METADATA_KEY_MAX} characters"),
            ));
        }
        if v.chars().count() > METADATA_VALUE_MAX {
            return Err(FieldError::invalid(
                &param,
                format!("metadata values must be at most {METADATA_VALUE_MAX} characters"),
            ));
        }
        text(&param, k, METADATA_KEY_MAX)?;
        text(&param, v, METADATA_VALUE_MAX)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let none: Vec<String> = vec![];
        let shop = vec!["shop.example".to_owned()];
        assert!(
            url(
                "u",
                "https://shop.example/ok?id={CHECKOUT_SESSION_ID}",
                &none
            )
            .is_ok()
        );
        assert!(url("u", "https://pay.shop.example/x", &shop).is_ok());
        assert_eq!(
            url("u", "https://evilshop.example/x", &shop).map_err(|e| e.code),
            Err("url_not_allowed")
        );
        assert!(url("u", "ftp://shop.example/", &none).is_err());
        assert!(url("u", "/relative", &none).is_err());
        assert!(url("u", "javascript:alert(1)", &none).is_err());
        assert!(url("u", "https://user:pw@shop.example/", &none).is_err());
        assert_eq!(
            substitute_id("https://a.b/s?id={CHECKOUT_SESSION_ID}", "cs_1"),
            "https://a.b/s?id=cs_1"
        );
    }

    #[test]
    fn emails() {
        assert!(email("e", "a.b+c@example.co.in").is_ok());
        for bad in ["", "a", "a@b", "a@@b.c", "a b@c.d", "@b.c", "a@-b.c"] {
            assert!(email("e", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_limits() {
        let mut m = BTreeMap::new();
        m.insert("k".repeat(41), "v".into());
        assert!(metadata(&m).is_err());
        let m: BTreeMap<String, String> = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(metadata(&m).is_err());
        let m: BTreeMap<String, String> = (0..50).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(metadata(&m).is_ok());
    }
}
