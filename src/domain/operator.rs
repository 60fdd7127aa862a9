//! Operators of the console: named accounts with a role, an argon2id password hash, a TOTP
//! secret (RFC 6238) and one-time recovery codes; their logins, lockouts and the audit log.
//! Pure types and checks (hashing is computation, not I/O); the rules that change them run in
//! `engine::operators`, inside the writer.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ids::random_base62;

/// What an operator may do. Checked on the server for every console request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads every page; changes nothing (except logging itself out).
    Viewer,
    /// Also acts on money: assigns credits, rejects claims, finishes refunds, redelivers.
    Operator,
    /// Also manages API keys, other operators' logins and lockouts.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// A named operator account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    pub name: String,
    pub role: Role,
    /// argon2id PHC string (`$argon2id$v=19$…`).
    pub password_hash: String,
    /// The TOTP secret, base32 (as in the `otpauth://` URI).
    pub totp_secret: String,
    /// The last TOTP time step accepted: a code of this step or an earlier one is a replay.
    #[serde(default)]
    pub last_totp_step: u64,
    /// SHA-256 (hex) of each recovery code not used yet; a used one is removed.
    pub recovery_codes: Vec<String>,
    pub created_at_ms: i64,
}

/// A console login: the cookie's SHA-256 is its key, so the store never holds the cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// SHA-256 (hex) of the cookie value.
    pub id: String,
    pub operator: String,
    /// The CSRF token every form of this login carries.
    pub csrf: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// The client address it logged in from, and its User-Agent (truncated).
    pub client: String,
    pub user_agent: String,
    #[serde(default)]
    pub revoked_at_ms: Option<i64>,
}

impl Login {
    pub fn live(&self, now_ms: i64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms > now_ms
    }
}

/// Failed logins of one account or one client address, and whether it is locked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockout {
    pub failures: u32,
    /// When the current run of failures began (the client window starts here).
    pub first_failure_ms: i64,
    pub locked_until_ms: i64,
}

/// Consecutive failed logins that lock an account.
pub const ACCOUNT_MAX_FAILURES: u32 = 5;
/// Failed logins from one client address within the window that lock the address (higher than
/// the account's: one office behind one NAT address has several operators).
pub const CLIENT_MAX_FAILURES: u32 = 20;
/// How long a lock lasts, and the client's counting window.
pub const LOCK_MS: i64 = 15 * 60 * 1000;

impl Lockout {
    pub fn locked(&self, now_ms: i64) -> bool {
        self.locked_until_ms > now_ms
    }

    /// Counts one failure at `now`; locks once `max` are reached (within `LOCK_MS` of the first).
    pub fn fail(&mut self, now_ms: i64, max: u32) {
        if now_ms - self.first_failure_ms > LOCK_MS {
            self.failures = 0;
            self.first_failure_ms = now_ms;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= max {
            self.locked_until_ms = now_ms + LOCK_MS;
            self.failures = 0;
            self.first_failure_ms = now_ms;
        }
    }
}

/// One line of the audit log: who did what, when, from where, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sorts by time: `<at_ms, 13 digits>-<random>`.
    pub id: String,
    pub at_ms: i64,
    /// The operator's name (as typed, for a failed login).
    pub operator: String,
    pub client: String,
    /// `login`, `login.failed`, `logout`, `credit.assign`, `key.revoke`, …
    pub action: String,
    /// What it acted on (an id), if anything.
    pub target: String,
    /// `ok`, or why it was refused.
    pub outcome: String,
}

impl AuditEntry {
    pub fn new(
        at_ms: i64,
        operator: &str,
        client: &str,
        action: &str,
        target: &str,
        outcome: &str,
    ) -> AuditEntry {
        AuditEntry {
            id: format!("{at_ms:013}-{}", random_base62(8)),
            at_ms,
            operator: operator.to_owned(),
            client: client.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: outcome.to_owned(),
        }
    }
}

/// Why a name is not an operator name; names are what the audit log shows.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("an operator name has 1 to 64 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
    {
        return Err(format!(
            "{name:?}: an operator name may hold letters, digits and . _ - @ only"
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("the password could not be hashed: {0}")]
    Hash(String),
    #[error("the TOTP secret is unusable: {0}")]
    Totp(String),
}

/// argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's recommendation).
pub fn hash_password(password: &str) -> Result<String, CredentialError> {
    use argon2::PasswordHasher;
    let salt = argon2::password_hash::SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| CredentialError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CredentialError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string (false for a damaged one).
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::PasswordVerifier;
    match argon2::PasswordHash::new(phc) {
        Ok(h) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// Shortest password an operator may choose.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Why a chosen password is refused.
pub fn check_new_password(password: &str, name: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!(
            "a password has at least {MIN_PASSWORD_LEN} characters"
        ));
    }
    if password.chars().count() > 256 {
        return Err("a password has at most 256 characters".into());
    }
    if password.eq_ignore_ascii_case(name) {
        return Err("the password may not be the operator name".into());
    }
    Ok(())
}

/// A hash to verify against when the name is unknown, so the answer takes as long.
pub fn dummy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$ZtjMEkfX3L2YdkD0sSJpTNkzk2kaz8GNa8ZT4dnwGOU"
}

/// TOTP step length and digits: what every authenticator app assumes.
pub const TOTP_STEP_SECS: u64 = 30;
pub const TOTP_DIGITS: usize = 6;

fn totp(secret_b32: &str, account: &str, issuer: &str) -> Result<totp_rs::TOTP, CredentialError> {
    let bytes = totp_rs::Secret::Encoded(secret_b32.to_owned())
        .to_bytes()
        .map_err(|e| CredentialError::Totp(format!("{e:?}")))?;
    totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        TOTP_DIGITS,
        1,
        TOTP_STEP_SECS,
        bytes,
        Some(issuer.to_owned()),
        account.to_owned(),
    )
    .map_err(|e| CredentialError::Totp(e.to_string()))
}

/// A new 160-bit TOTP secret (base32).
pub fn new_totp_secret() -> String {
    totp_rs::Secret::Raw(rand::random::<[u8; 20]>().to_vec())
        .to_encoded()
        .to_string()
}

/// The `otpauth://totp/…` URI an authenticator app imports.
pub fn otpauth_uri(
    secret_b32: &str,
    account: &str,
    issuer: &str,
) -> Result<String, CredentialError> {
    Ok(totp(secret_b32, account, issuer)?.get_url())
}

/// The time step whose code `code` is, among the one before, this one and the one after (clock
/// drift); `None` if none matches. Replays are the writer's check (`last_totp_step`).
pub fn totp_step(secret_b32: &str, code: &str, now_secs: u64) -> Option<u64> {
    if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret_b32, "x", "paywatch").ok()?;
    let now_step = now_secs / TOTP_STEP_SECS;
    let mut found = None;
    for step in now_step.saturating_sub(1)..=now_step + 1 {
        let want = t.generate(step * TOTP_STEP_SECS);
        // Every candidate is compared in full, matching or not.
        if Sha256::digest(want.as_bytes()) == Sha256::digest(code.as_bytes()) {
            found = Some(step);
        }
    }
    found
}

/// How many recovery codes an account gets.
pub const RECOVERY_CODES: usize = 10;

/// New recovery codes: (the codes to show once, their hashes to store).
pub fn new_recovery_codes() -> (Vec<String>, Vec<String>) {
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let r = random_base62(12).to_ascii_lowercase();
            format!("{}-{}-{}", &r[..4], &r[4..8], &r[8..])
        })
        .collect();
    let hashes = codes.iter().map(|c| recovery_hash(c)).collect();
    (codes, hashes)
}

/// The stored form of a recovery code (typed with or without its dashes, any case).
pub fn recovery_hash(code: &str) -> String {
    let norm: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex::encode(Sha256::digest(norm.as_bytes()))
}

/// A new operator's credentials: (account, password, recovery codes), all shown once.
pub fn new_operator(
    name: &str,
    role: Role,
    now_ms: i64,
) -> Result<(Operator, String, Vec<String>), CredentialError> {
    let password = random_base62(20);
    let (codes, hashes) = new_recovery_codes();
    let op = Operator {
        name: name.to_owned(),
        role,
        password_hash: hash_password(&password)?,
        totp_secret: new_totp_secret(),
        last_totp_step: 0,
        recovery_codes: hashes,
        created_at_ms: now_ms,
    };
    Ok((op, password, codes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 (secret "12345678901234567890", 8 digits).
    #[test]
    fn rfc6238_test_vectors() {
        let t = totp_rs::TOTP::new_unchecked(
            totp_rs::Algorithm::SHA1,
            8,
            1,
            30,
            b"12345678901234567890".to_vec(),
            None,
            "x".into(),
        );
        for (time, code) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(t.generate(time), code, "T = {time}");
        }
    }

    #[test]
    fn a_code_is_tied_to_its_step_and_drift_is_one_step() {
        let secret = new_totp_secret();
        let t = totp(&secret, "a", "paywatch").unwrap();
        let now = 1_700_000_000u64;
        let step = now / 30;
        assert_eq!(totp_step(&secret, &t.generate(now), now), Some(step));
        assert_eq!(
            totp_step(&secret, &t.generate(now - 30), now),
            Some(step - 1)
        );
        assert_eq!(totp_step(&secret, &t.generate(now - 90), now), None);
        assert_eq!(totp_step(&secret, "12345", now), None);
        assert_eq!(totp_step(&secret, "abcdef", now), None);
        let uri = otpauth_uri(&secret, "alice", "paywatch").unwrap();
        assert!(uri.starts_with("otpauth://totp/paywatch:alice?"), "{uri}");
        assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsf", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(!verify_password("x", dummy_hash()));
    }

    #[test]
    fn recovery_codes_are_typed_loosely_and_stored_hashed() {
        let (codes, hashes) = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert_eq!(
            recovery_hash(&codes[0].to_uppercase().replace('-', "")),
            hashes[0]
        );
        assert!(!hashes.contains(&recovery_hash("nope")));
    }

    #[test]
    fn lockout_counts_and_expires() {
        let mut l = Lockout::default();
        for i in 0..ACCOUNT_MAX_FAILURES {
            assert!(!l.locked(1000 + i64::from(i)));
            l.fail(1000 + i64::from(i), ACCOUNT_MAX_FAILURES);
        }
        assert!(l.locked(2000));
        assert!(!l.locked(1004 + LOCK_MS + 1));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("alice.ops@shop").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("<script>").is_err());
    }
}
