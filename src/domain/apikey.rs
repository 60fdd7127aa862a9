//! API keys: shown once, stored only as a SHA-256 hash, scoped to one merchant and one mode.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ids::random_base62;

/// What a key may do. Keys created without a list get [`Permission::DEFAULT`]; `All`,
/// `credits:write` and `webhooks:write` must be asked for by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Permission {
    #[serde(rename = "*")]
    All,
    #[serde(rename = "sessions:read")]
    SessionsRead,
    #[serde(rename = "sessions:write")]
    SessionsWrite,
    #[serde(rename = "credits:write")]
    CreditsWrite,
    #[serde(rename = "events:read")]
    EventsRead,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    #[serde(rename = "refunds:write")]
    RefundsWrite,
}

impl Permission {
    pub const ALL: [Permission; 7] = [
        Permission::All,
        Permission::SessionsRead,
        Permission::SessionsWrite,
        Permission::CreditsWrite,
        Permission::EventsRead,
        Permission::WebhooksWrite,
        Permission::RefundsWrite,
    ];

    /// What a key created without a list may do: create and read sessions, read events. Not
    /// `credits:write` (it mints payments), `webhooks:write` (it reads and rotates the signing
    /// secrets receivers trust), `refunds:write` (it moves money back out) or `*`: least
    /// privilege, so a key leaked from a storefront cannot forge a completed payment.
    pub const DEFAULT: [Permission; 3] = [
        Permission::SessionsRead,
        Permission::SessionsWrite,
        Permission::EventsRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::All => "*",
            Permission::SessionsRead => "sessions:read",
            Permission::SessionsWrite => "sessions:write",
            Permission::CreditsWrite => "credits:write",
            Permission::EventsRead => "events:read",
            Permission::WebhooksWrite => "webhooks:write",
            Permission::RefundsWrite => "refunds:write",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Parses a comma-separated list such as `sessions:read,sessions:write`.
    pub fn parse_list(list: &str) -> Result<Vec<Permission>, String> {
        let mut out = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let p = Permission::parse(part).ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|p| p.as_str()).collect();
                format!("unknown permission {part:?} (known: {})", known.join(", "))
            })?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if out.is_empty() {
            return Err("the permission list is empty".into());
        }
        out.sort();
        Ok(out)
    }
}

/// A stored key: everything but the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub merchant_id: String,
    pub livemode: bool,
    pub permissions: Vec<Permission>,
    /// The first characters of the key (`pw_test_Ab12`), to recognise it in a list.
    pub prefix: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl ApiKey {
    pub fn allows(&self, p: Permission) -> bool {
        self.permissions.contains(&Permission::All) || self.permissions.contains(&p)
    }
}

/// A freshly generated secret key: `pw_test_…` or `pw_live_…` with 190 random bits.
pub fn generate_secret(livemode: bool) -> String {
    let mode = if livemode { "live" } else { "test" };
    format!("pw_{mode}_{}", random_base62(32))
}

/// The hash a key is stored and looked up by. Keys are high-entropy, so a fast hash is enough.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether a presented string has the shape of one of our keys, and which mode it claims.
pub fn secret_mode(secret: &str) -> Option<bool> {
    if secret.starts_with("pw_live_") {
        Some(true)
    } else if secret.starts_with("pw_test_") {
        Some(false)
    } else {
        None
    }
}

/// A new key record with its secret (shown once) and the hash it is stored under.
pub fn new_key(
    merchant_id: &str,
    livemode: bool,
    permissions: Vec<Permission>,
    now_ms: i64,
) -> (ApiKey, String, String) {
    let secret = generate_secret(livemode);
    let hash = hash_secret(&secret);
    let key = ApiKey {
        id: super::ids::new_id("key"),
        merchant_id: merchant_id.to_owned(),
        livemode,
        permissions,
        prefix: secret.chars().take(12).collect(),
        created_at_ms: now_ms,
        revoked_at_ms: None,
    };
    (key, secret, hash)
}

/// The API representation of a key (never the secret).
pub fn key_json(k: &ApiKey) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "object": "api_key",
        "merchant": k.merchant_id,
        "livemode": k.livemode,
        "permissions": k.permissions,
        "prefix": k.prefix,
        "created_at": super::view::rfc3339(k.created_at_ms),
        "revoked_at": k.revoked_at_ms.map(super::view::rfc3339),
    })
}
