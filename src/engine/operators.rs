//! The operators' rules, run in the writer so each is one atomic step: creating an account,
//! a login attempt (lockouts, TOTP replay, recovery codes, the login record and its audit entry
//! together), revoking a login, and appending to the audit log.
//!
//! These objects live in the store's keyed record table (`Tx::record` and friends) as JSON: a
//! handful of small kinds that need no index of their own beyond key order.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::tx::{R, Tx};
use super::{OpError, Outcome};
use crate::domain::operator::{
    ACCOUNT_MAX_FAILURES, AuditEntry, CLIENT_MAX_FAILURES, Lockout, Login, Operator,
};

/// Record kinds (the first half of the record table's key).
pub const OPERATOR: &str = "operator";
/// Keyed by the SHA-256 of the cookie.
pub const LOGIN: &str = "login";
/// `acct:<name>` and `ip:<address>`.
pub const LOCKOUT: &str = "lockout";
/// Keyed by `AuditEntry::id` (time order).
pub const AUDIT: &str = "audit";

pub fn get<T: DeserializeOwned>(t: &mut dyn Tx, kind: &str, key: &str) -> R<Option<T>> {
    match t.record(kind, key)? {
        Some(b) => Ok(Some(serde_json::from_slice(&b)?)),
        None => Ok(None),
    }
}

pub fn put<T: Serialize>(t: &mut dyn Tx, kind: &str, key: &str, v: &T) -> R<()> {
    t.put_record(kind, key, &serde_json::to_vec(v)?)
}

pub fn account_key(name: &str) -> String {
    format!("acct:{name}")
}

pub fn client_key(client: &str) -> String {
    format!("ip:{client}")
}

/// A login attempt, its expensive checks (argon2, the TOTP code's step) done before the writer.
#[derive(Debug, Clone)]
pub struct LoginAttempt {
    pub name: String,
    pub client: String,
    pub password_ok: bool,
    /// The step the TOTP code belongs to, if it is a valid code of the operator's secret.
    pub totp_step: Option<u64>,
    /// The hash of what was typed, when it was not a TOTP code (a recovery code, perhaps).
    pub recovery_hash: Option<String>,
    /// The login to store if the attempt succeeds (its `operator` is `name`).
    pub login: Login,
}

/// Why a login was refused. The page says only "wrong" or "locked"; the audit log says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Locked { until_ms: i64 },
    Wrong(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginResult {
    LoggedIn(Box<Login>),
    Refused(Refusal),
}

fn audit(t: &mut dyn Tx, e: &AuditEntry) -> R<()> {
    put(t, AUDIT, &e.id, e)
}

pub(super) fn create_operator(
    t: &mut dyn Tx,
    op: Operator,
    entry: &AuditEntry,
) -> R<Result<Outcome, OpError>> {
    if t.record(OPERATOR, &op.name)?.is_some() {
        return Ok(Err(OpError::Conflict {
            code: "operator_exists",
            message: format!("an operator named {:?} exists already", op.name),
        }));
    }
    put(t, OPERATOR, &op.name, &op)?;
    audit(t, entry)?;
    Ok(Ok(Outcome::Operator(Box::new(op))))
}

pub(super) fn login(t: &mut dyn Tx, now: i64, a: LoginAttempt) -> R<Result<Outcome, OpError>> {
    let (akey, ckey) = (account_key(&a.name), client_key(&a.client));
    let mut acct: Lockout = get(t, LOCKOUT, &akey)?.unwrap_or_default();
    let mut client: Lockout = get(t, LOCKOUT, &ckey)?.unwrap_or_default();
    let entry = |outcome: &str| AuditEntry::new(now, &a.name, &a.client, "login", "", outcome);
    if acct.locked(now) || client.locked(now) {
        let until_ms = acct.locked_until_ms.max(client.locked_until_ms);
        let which = if acct.locked(now) {
            "refused: account locked"
        } else {
            "refused: client address locked"
        };
        audit(t, &entry(which))?;
        return Ok(Ok(Outcome::Login(LoginResult::Refused(Refusal::Locked {
            until_ms,
        }))));
    }
    let operator: Option<Operator> = get(t, OPERATOR, &a.name)?;
    let verdict: Result<(Operator, &'static str), &'static str> = match operator {
        None => Err("refused: no such operator"),
        Some(_) if !a.password_ok => Err("refused: wrong password"),
        Some(mut op) => match (a.totp_step, &a.recovery_hash) {
            (Some(step), _) if step <= op.last_totp_step => Err("refused: TOTP code replayed"),
            (Some(step), _) => {
                op.last_totp_step = step;
                Ok((op, "ok"))
            }
            (None, Some(h)) if op.recovery_codes.contains(h) => {
                op.recovery_codes.retain(|c| c != h);
                Ok((op, "ok: recovery code used"))
            }
            _ => Err("refused: wrong TOTP or recovery code"),
        },
    };
    match verdict {
        Ok((op, outcome)) => {
            put(t, OPERATOR, &op.name, &op)?;
            t.drop_record(LOCKOUT, &akey)?;
            let mut login = a.login.clone();
            login.operator = op.name.clone();
            put(t, LOGIN, &login.id, &login)?;
            audit(t, &entry(outcome))?;
            Ok(Ok(Outcome::Login(LoginResult::LoggedIn(Box::new(login)))))
        }
        Err(why) => {
            client.fail(now, CLIENT_MAX_FAILURES);
            put(t, LOCKOUT, &ckey, &client)?;
            // Only a real account has a counter: guessed names leave no records behind.
            if why != "refused: no such operator" {
                acct.fail(now, ACCOUNT_MAX_FAILURES);
                put(t, LOCKOUT, &akey, &acct)?;
            }
            audit(t, &entry(why))?;
            Ok(Ok(Outcome::Login(LoginResult::Refused(Refusal::Wrong(
                why,
            )))))
        }
    }
}

/// Ends a login. `owner`: only if it is this operator's (a non-admin revokes its own only).
pub(super) fn revoke_login(
    t: &mut dyn Tx,
    now: i64,
    id: &str,
    owner: Option<&str>,
    entry: &AuditEntry,
) -> R<Result<Outcome, OpError>> {
    let found: Option<Login> = get(t, LOGIN, id)?;
    let Some(mut l) = found.filter(|l| owner.is_none_or(|o| o == l.operator)) else {
        return Ok(Err(OpError::NotFound("login")));
    };
    if l.revoked_at_ms.is_none() {
        l.revoked_at_ms = Some(now);
        put(t, LOGIN, id, &l)?;
    }
    audit(t, entry)?;
    Ok(Ok(Outcome::Done))
}

/// Lifts an account's lock (an admin's action).
pub(super) fn unlock(
    t: &mut dyn Tx,
    name: &str,
    entry: &AuditEntry,
) -> R<Result<Outcome, OpError>> {
    if t.record(OPERATOR, name)?.is_none() {
        return Ok(Err(OpError::NotFound("operator")));
    }
    t.drop_record(LOCKOUT, &account_key(name))?;
    audit(t, entry)?;
    Ok(Ok(Outcome::Done))
}

pub(super) fn append_audit(t: &mut dyn Tx, entry: &AuditEntry) -> R<Result<Outcome, OpError>> {
    audit(t, entry)?;
    Ok(Ok(Outcome::Done))
}

/// Replaces an operator's password hash (the caller verified the current password).
pub(super) fn set_password(
    t: &mut dyn Tx,
    name: &str,
    password_hash: String,
    entry: &AuditEntry,
) -> R<Result<Outcome, OpError>> {
    let Some(mut op) = get::<Operator>(t, OPERATOR, name)? else {
        return Ok(Err(OpError::NotFound("operator")));
    };
    op.password_hash = password_hash;
    put(t, OPERATOR, name, &op)?;
    audit(t, entry)?;
    Ok(Ok(Outcome::Done))
}
