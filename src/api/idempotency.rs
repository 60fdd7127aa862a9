//! Idempotency-Key: the first response to a key is stored with the write it describes (same
//! transaction) and replayed for the same request; a different request under the key is a 409.

use http::{HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::error::{ApiError, Code};
use super::{AppState, Req, Response, json_response};
use crate::domain::apikey::ApiKey;
use crate::store::{
    IdempotencyRecord, IdempotencyWrite, OpError, Outcome, WriteOp, idempotency_scope, write,
};

/// How long a key is remembered.
pub const TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// Turns an operation's outcome into (status, body, keep under the key).
pub type Render = fn(&Result<Outcome, OpError>) -> (StatusCode, Vec<u8>, bool);

pub struct Idem {
    scope_key: String,
    fingerprint: String,
    /// The fingerprint of the raw bytes, as recorded before fingerprints hashed the parsed
    /// body: a retry across the upgrade still replays (keys live 24 h).
    legacy: Option<String>,
}

/// The request's Idempotency-Key, validated, if it sent one.
pub fn from_request(key: &ApiKey, req: &Req) -> Result<Option<Idem>, ApiError> {
    let Some(v) = req.headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid(
                Code::IdempotencyKeyInvalid,
                "Idempotency-Key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })?;
    let hash = |body: &[u8]| {
        let mut h = Sha256::new();
        h.update(req.method.as_str().as_bytes());
        h.update(b"\n");
        h.update(req.path.as_bytes());
        h.update(b"\n");
        h.update(body);
        hex::encode(h.finalize())
    };
    // The parsed body, not its bytes: a form and the equivalent JSON (or the same JSON with
    // its keys in another order) are the same request.
    let fingerprint = hash(&super::form::fingerprint_bytes(&req.body));
    Ok(Some(Idem {
        scope_key: idempotency_scope(&key.merchant_id, key.livemode, k),
        legacy: Some(hash(&req.body)).filter(|l| *l != fingerprint),
        fingerprint,
    }))
}

fn replay(
    rec: IdempotencyRecord,
    fingerprint: &str,
    legacy: Option<&str>,
) -> Result<Response, ApiError> {
    if rec.fingerprint != fingerprint && Some(rec.fingerprint.as_str()) != legacy {
        return Err(ApiError::new(
            Code::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request; use a new key",
        ));
    }
    let status = StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK);
    let mut r = json_response(status, rec.body.into_bytes());
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(r)
}

/// The stored response for this key, if the key was used: checked before the body is
/// validated, so a retry gets its original answer (or the 409) whatever has changed since.
pub async fn replay_if_used(
    state: &AppState,
    idem: &Option<Idem>,
) -> Result<Option<Response>, ApiError> {
    let Some(i) = idem else { return Ok(None) };
    match state.store.idempotency(&i.scope_key)? {
        Some(rec) => replay(rec, &i.fingerprint, i.legacy.as_deref()).map(Some),
        None => Ok(None),
    }
}

/// Runs a write under the request's Idempotency-Key (if any).
pub async fn run(
    state: &AppState,
    idem: Option<Idem>,
    op: WriteOp,
    render: Render,
) -> Result<Response, ApiError> {
    if let Some(i) = &idem
        && let Some(rec) = state.store.idempotency(&i.scope_key)?
    {
        return replay(rec, &i.fingerprint, i.legacy.as_deref());
    }
    let fingerprint = idem.as_ref().map(|i| i.fingerprint.clone());
    let legacy = idem.as_ref().and_then(|i| i.legacy.clone());
    let iw = idem.map(|i| IdempotencyWrite {
        scope_key: i.scope_key,
        fingerprint: i.fingerprint,
        render: Box::new(move |r: &Result<Outcome, OpError>| {
            let (status, body, keep) = render(r);
            keep.then(|| (status.as_u16(), String::from_utf8_lossy(&body).into_owned()))
        }),
    });
    let out = write(state.store.as_ref(), op, iw).await?;
    if let Ok(Outcome::Replay(rec)) = out {
        return replay(
            rec,
            fingerprint.as_deref().unwrap_or_default(),
            legacy.as_deref(),
        );
    }
    let (status, body, _) = render(&out);
    Ok(json_response(status, body))
}
