//! The `Stripe-Signature` header on callbacks, so a receiver written for Stripe verifies
//! paywatch's callbacks with its library's own `Webhook.construct_event`: as Stripe computes it,
//! `t={unix seconds},v1={hex HMAC-SHA256 of "{t}.{raw body}"}`, keyed by the signing secret's
//! whole text (`whsec_…` as UTF-8, unlike Standard Webhooks, which keys by the decoded bytes).
//! During a rotation every active secret adds its own `v1=`, as Stripe does.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's value for `body` sent at `timestamp` (Unix seconds).
pub fn header(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mut out = format!("t={ts}");
    for s in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(s.as_bytes()) else {
            continue;
        };
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(body);
        out.push_str(",v1=");
        out.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_stripes_scheme() {
        // Computed by the stripe Python library:
        // stripe.WebhookSignature._compute_signature("1700000000.{}", "whsec_test_secret")
        assert_eq!(
            header(&["whsec_test_secret"], 1_700_000_000, b"{}"),
            "t=1700000000,v1=ceb8863f7208fa249a6cd8f951e993c7563412aca65866f6272283debe143ab3"
        );
    }

    #[test]
    fn every_active_secret_signs() {
        let h = header(&["whsec_a", "whsec_b"], 1, b"x");
        assert_eq!(h.matches(",v1=").count(), 2);
        assert_ne!(header(&["whsec_a"], 1, b"x"), header(&["whsec_a"], 1, b"y"));
    }
}
