//! API-key authentication and the per-key rate limit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::RwLock;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota};
use http::{HeaderMap, HeaderValue};

use super::error::ApiError;
use super::{AppState, Req, Response, error_response};
use crate::domain::apikey::{ApiKey, hash_secret, secret_mode};

/// Valid keys by hash, so the hot path does not read the database. Revocation goes through this
/// process (the operator API), which evicts the key here in the same step.
#[derive(Default)]
pub struct KeyCache {
    by_hash: RwLock<HashMap<String, ApiKey>>,
    /// Ids revoked while running: a request that read the key just before its revocation must
    /// not put it back.
    revoked: RwLock<std::collections::HashSet<String>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<ApiKey> {
        self.by_hash.read().ok()?.get(hash).cloned()
    }

    fn put(&self, hash: String, key: ApiKey) {
        // Both locks, in the same order as `evict`, so a revoke cannot slip in between.
        let (Ok(revoked), Ok(mut m)) = (self.revoked.read(), self.by_hash.write()) else {
            return;
        };
        if !revoked.contains(&key.id) {
            m.insert(hash, key);
        }
    }

    fn is_revoked(&self, key_id: &str) -> bool {
        self.revoked.read().map_or(true, |r| r.contains(key_id))
    }

    /// Forgets a key for good (after revocation).
    pub fn evict(&self, key_id: &str) {
        if let (Ok(mut revoked), Ok(mut m)) = (self.revoked.write(), self.by_hash.write()) {
            revoked.insert(key_id.to_owned());
            m.retain(|_, k| k.id != key_id);
        }
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, rest) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim());
    }
    headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<ApiKey, ApiError> {
    let Some(secret) = presented_key(headers) else {
        return Err(ApiError::unauthenticated(
            "no API key: send Authorization: Bearer pw_test_… (or X-API-Key)",
        ));
    };
    if secret_mode(secret).is_none() {
        return Err(ApiError::unauthenticated(
            "API keys start with pw_test_ or pw_live_",
        ));
    }
    let hash = hash_secret(secret);
    // On PostgreSQL another node (or the CLI) may revoke the key without this process hearing
    // of it: read the key from the shared database every time instead of caching it.
    let shared_db = state.config.postgres.is_some();
    let cached = if shared_db {
        None
    } else {
        state.keys.get(&hash)
    };
    let key = match cached {
        Some(k) => k,
        None => {
            let k = state
                .store
                .key_by_hash(&hash)?
                .ok_or_else(|| ApiError::unauthenticated("invalid API key"))?;
            if k.revoked_at_ms.is_none() && !shared_db {
                state.keys.put(hash, k.clone());
            }
            k
        }
    };
    if key.revoked_at_ms.is_some() || state.keys.is_revoked(&key.id) {
        return Err(ApiError::unauthenticated("this API key has been revoked"));
    }
    if state.config.merchant(&key.merchant_id).is_none() {
        return Err(ApiError::unauthenticated(
            "this API key's merchant is no longer configured",
        ));
    }
    Ok(key)
}

/// Token bucket per API key (governor's GCRA).
pub struct Limiter {
    inner: DefaultKeyedRateLimiter<String, StateInformationMiddleware>,
    per_second: u32,
    burst: u32,
}

/// The X-RateLimit-* values of one request.
struct RateInfo {
    limit: u32,
    remaining: u32,
    reset_unix: i64,
}

impl Limiter {
    pub fn new(per_second: u32, burst: u32) -> Limiter {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = burst.max(1);
        let quota = Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate));
        Limiter {
            inner: DefaultKeyedRateLimiter::keyed(quota)
                .with_middleware::<StateInformationMiddleware>(),
            per_second: rate.get(),
            burst,
        }
    }

    fn check(&self, key_id: &str) -> Result<RateInfo, ApiError> {
        let now = chrono::Utc::now().timestamp();
        match self.inner.check_key(&key_id.to_owned()) {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity();
                let refill = u64::from(self.burst - remaining.min(self.burst))
                    .div_ceil(u64::from(self.per_second));
                Ok(RateInfo {
                    limit: self.burst,
                    remaining,
                    reset_unix: now + i64::try_from(refill).unwrap_or(0),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(ApiError::rate_limited(wait.as_secs().max(1)))
            }
        }
    }
}

fn put_header(r: &mut Response, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        r.headers_mut().insert(name, v);
    }
}

/// Authenticates, applies the rate limit, runs `f` and stamps the rate-limit headers.
pub async fn authenticated<F, Fut>(state: &AppState, req: &Req, f: F) -> Response
where
    F: FnOnce(ApiKey) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let key = match authenticate(state, &req.headers) {
        Ok(k) => k,
        Err(e) => return error_response(&e),
    };
    match state.limiter.check(&key.id) {
        Ok(info) => {
            let mut r = f(key).await.unwrap_or_else(|e| error_response(&e));
            put_header(&mut r, "x-ratelimit-limit", info.limit);
            put_header(&mut r, "x-ratelimit-remaining", info.remaining);
            put_header(&mut r, "x-ratelimit-reset", info.reset_unix);
            r
        }
        Err(e) => {
            let mut r = error_response(&e);
            put_header(&mut r, "x-ratelimit-limit", state.limiter.burst);
            put_header(&mut r, "x-ratelimit-remaining", 0);
            put_header(
                &mut r,
                "x-ratelimit-reset",
                chrono::Utc::now().timestamp() + e.retry_after.map_or(1, |s| s as i64),
            );
            r
        }
    }
}
