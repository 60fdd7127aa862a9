//! Webhooks, the pure part: signing secrets, endpoints, deliveries and their retry schedule,
//! and the Standard Webhooks signatures.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::event::EventType;

/// A `whsec_…` secret and, after a rotation, when it stops signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningSecret {
    pub secret: String,
    pub expires_at_ms: Option<i64>,
}

impl SigningSecret {
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_none_or(|t| t > now_ms)
    }
}

/// A fresh `whsec_` secret: 32 random bytes, base64.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", B64.encode(bytes))
}

/// The key bytes of a `whsec_` secret.
pub fn secret_bytes(secret: &str) -> Option<Vec<u8>> {
    B64.decode(secret.strip_prefix("whsec_")?).ok()
}

/// Active secrets after a rotation: the new one, and the old ones until `old_valid_until_ms`.
pub fn rotate(
    secrets: &[SigningSecret],
    new: String,
    now_ms: i64,
    old_valid_until_ms: i64,
) -> Vec<SigningSecret> {
    let mut out: Vec<SigningSecret> = secrets
        .iter()
        .filter(|s| s.is_active(now_ms))
        .map(|s| SigningSecret {
            secret: s.secret.clone(),
            expires_at_ms: Some(
                s.expires_at_ms
                    .map_or(old_valid_until_ms, |t| t.min(old_valid_until_ms)),
            ),
        })
        .filter(|s| s.is_active(now_ms))
        .collect();
    out.insert(
        0,
        SigningSecret {
            secret: new,
            expires_at_ms: None,
        },
    );
    out
}

/// A merchant's registered endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub id: String,
    pub merchant_id: String,
    pub livemode: bool,
    pub url: String,
    /// Event type names, or `*`.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub secrets: Vec<SigningSecret>,
    pub created_at_ms: i64,
    /// The `Stripe-Version` it was created with (through Stripe's libraries): its callbacks are
    /// then written in Stripe's shapes, as Stripe renders events in the endpoint's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

impl WebhookEndpoint {
    pub fn wants(&self, kind: EventType) -> bool {
        self.events.iter().any(|e| e == "*" || e == kind.as_str())
    }
}

/// One try to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at_ms: i64,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Succeeded,
    Failed,
}

/// One event on its way to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub merchant_id: String,
    pub livemode: bool,
    /// `None`: the session's notify_url, signed with the merchant's default secret.
    pub endpoint_id: Option<String>,
    pub url: String,
    pub attempts: Vec<Attempt>,
    pub state: DeliveryState,
    pub next_attempt_ms: Option<i64>,
}

/// The scheme, host and port a URL connects to: what "one destination" means for the
/// notifier's concurrency caps and its delivery lanes.
pub fn destination(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| {
            format!(
                "{}://{}:{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.port_or_known_default().unwrap_or(0)
            )
        })
        .unwrap_or_else(|_| url.to_owned())
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    Succeeded,
    RetryAt(i64),
    Failed,
}

/// The decision after attempt number `attempts_made` (1-based): success on a 2xx; otherwise the
/// next retry from the schedule, scaled by `jitter` (≈0.9..1.1) and never sooner than a
/// `Retry-After` the receiver asked for; failed when the schedule is spent.
pub fn after_attempt(
    status: Option<u16>,
    attempts_made: usize,
    schedule_secs: &[u64],
    retry_after_secs: Option<u64>,
    jitter: f64,
    now_ms: i64,
) -> AfterAttempt {
    if status.is_some_and(|s| (200..300).contains(&s)) {
        return AfterAttempt::Succeeded;
    }
    let Some(base) = schedule_secs.get(attempts_made.saturating_sub(1)) else {
        return AfterAttempt::Failed;
    };
    let delay_ms = (*base as f64 * 1000.0 * jitter.clamp(0.5, 1.5)) as i64;
    let asked_ms = retry_after_secs.map_or(0, |s| i64::try_from(s.min(86_400)).unwrap_or(0) * 1000);
    AfterAttempt::RetryAt(now_ms.saturating_add(delay_ms.max(asked_ms)))
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).ok()?;
    for p in parts {
        m.update(p);
    }
    Some(m.finalize().into_bytes().to_vec())
}

/// The signature headers of one delivery: `webhook-signature` (Standard Webhooks, one `v1,…` per
/// secret) and `X-Paywatch-Signature` (`t=…,v1=<hex>` per secret).
pub fn signature_headers(
    secrets: &[&str],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> (String, String) {
    let ts = timestamp.to_string();
    let mut standard = Vec::new();
    let mut paywatch = vec![format!("t={ts}")];
    for s in secrets {
        let Some(key) = secret_bytes(s) else { continue };
        if let Some(sig) = hmac(&key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]) {
            standard.push(format!("v1,{}", B64.encode(sig)));
        }
        if let Some(sig) = hmac(&key, &[ts.as_bytes(), b".", body]) {
            paywatch.push(format!("v1={}", hex::encode(sig)));
        }
    }
    (standard.join(" "), paywatch.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_reference_vector() {
        // The Standard Webhooks specification's example secret, id, timestamp and payload.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let (sig, ours) = signature_headers(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(ours.starts_with("t=1614265330,v1="));
        assert_eq!(ours.len(), "t=1614265330,v1=".len() + 64);
    }

    #[test]
    fn rotation_keeps_the_old_secret_until_it_expires() {
        let old = vec![SigningSecret {
            secret: "whsec_AAAA".into(),
            expires_at_ms: None,
        }];
        let r = rotate(&old, "whsec_BBBB".into(), 1_000, 5_000);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].secret, "whsec_BBBB");
        assert_eq!(r[1].expires_at_ms, Some(5_000));
        let r2 = rotate(&r, "whsec_CCCC".into(), 6_000, 7_000);
        assert_eq!(
            r2.iter().map(|s| s.secret.as_str()).collect::<Vec<_>>(),
            vec!["whsec_CCCC", "whsec_BBBB"]
        );
        let (std_sig, _) = signature_headers(
            &[
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ],
            "m",
            1,
            b"x",
        );
        assert_eq!(std_sig.split(' ').count(), 2);
    }

    #[test]
    fn retry_schedule() {
        let sched = [5, 300];
        assert_eq!(
            after_attempt(Some(204), 1, &sched, None, 1.0, 0),
            AfterAttempt::Succeeded
        );
        assert_eq!(
            after_attempt(Some(500), 1, &sched, None, 1.0, 0),
            AfterAttempt::RetryAt(5_000)
        );
        assert_eq!(
            after_attempt(None, 2, &sched, None, 1.1, 0),
            AfterAttempt::RetryAt(330_000)
        );
        assert_eq!(
            after_attempt(Some(503), 2, &sched, Some(600), 1.0, 0),
            AfterAttempt::RetryAt(600_000)
        );
        assert_eq!(
            after_attempt(Some(500), 3, &sched, None, 1.0, 0),
            AfterAttempt::Failed
        );
        assert_eq!(
            after_attempt(Some(302), 1, &sched, None, 1.0, 0),
            AfterAttempt::RetryAt(5_000),
            "redirects are not followed"
        );
    }
}
