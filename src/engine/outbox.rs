//! Events and their fan-out: every event is written with one delivery per destination that
//! wants it (the session's notify_url and the merchant's endpoints in that mode), in the same
//! transaction as the change it reports, so a committed change always has its callbacks queued.
//! Also the endpoints and signing secrets those deliveries are made with.

use super::tx::{R, Tx};
use super::{Ctx, OpError, Outcome};
use crate::domain::event::{Event, EventType};
use crate::domain::ids::new_id;
use crate::domain::webhook::{
    AfterAttempt, Attempt, Delivery, DeliveryState, SigningSecret, WebhookEndpoint, rotate,
};

/// Endpoints one merchant may register per mode (Stripe allows 16 too): enough for every real
/// integration, and it bounds the fan-out of one event.
pub const MAX_ENDPOINTS: usize = 16;

/// Writes an event and queues it in the outbox.
pub(super) fn emit(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    kind: EventType,
    merchant_id: &str,
    livemode: bool,
    data: serde_json::Value,
    notify_url: Option<String>,
) -> R<()> {
    let e = Event {
        id: new_id("evt"),
        kind,
        merchant_id: merchant_id.to_owned(),
        livemode,
        created_at_ms: cx.now,
        data,
        notify_url,
        seq: t.next_seq()?,
    };
    t.insert_event(&e)?;
    schedule_deliveries(t, &e, cx.now)?;
    Ok(())
}

/// Queues the event for each destination that wants it: the session's notify_url and every
/// matching endpoint of the merchant and mode.
pub(super) fn schedule_deliveries(t: &mut dyn Tx, e: &Event, now: i64) -> R<Vec<Delivery>> {
    let mut targets: Vec<(Option<String>, String)> = Vec::new();
    if let Some(u) = &e.notify_url {
        targets.push((None, u.clone()));
    }
    for ep in t.endpoints_of(&e.merchant_id, e.livemode)? {
        if ep.merchant_id == e.merchant_id && ep.livemode == e.livemode && ep.wants(e.kind) {
            targets.push((Some(ep.id), ep.url));
        }
    }
    let mut out = Vec::with_capacity(targets.len());
    for (endpoint_id, url) in targets {
        let d = Delivery {
            id: new_id("dl"),
            event_id: e.id.clone(),
            merchant_id: e.merchant_id.clone(),
            livemode: e.livemode,
            endpoint_id,
            url,
            attempts: vec![],
            state: DeliveryState::Pending,
            next_attempt_ms: Some(now),
        };
        t.insert_delivery(&d)?;
        out.push(d);
    }
    Ok(out)
}

/// Records an attempt and moves the delivery on (done, or rescheduled in the outbox).
pub(super) fn record_attempt(
    t: &mut dyn Tx,
    delivery_id: &str,
    attempt: Attempt,
    after: AfterAttempt,
) -> R<Result<Outcome, OpError>> {
    let Some(mut d) = t.delivery(delivery_id)? else {
        return Ok(Err(OpError::NotFound("delivery")));
    };
    let was_due = d.next_attempt_ms;
    d.attempts.push(attempt);
    match after {
        AfterAttempt::Succeeded => {
            d.state = DeliveryState::Succeeded;
            d.next_attempt_ms = None;
        }
        AfterAttempt::Failed => {
            d.state = DeliveryState::Failed;
            d.next_attempt_ms = None;
        }
        AfterAttempt::RetryAt(at) => {
            d.state = DeliveryState::Pending;
            d.next_attempt_ms = Some(at);
        }
    }
    t.put_delivery(was_due, &d)?;
    Ok(Ok(Outcome::Deliveries(vec![d])))
}

pub(super) fn ensure_merchant_secret(
    t: &mut dyn Tx,
    merchant_id: &str,
    livemode: bool,
    secret: String,
) -> R<Result<Outcome, OpError>> {
    let secrets = match t.merchant_secrets(merchant_id, livemode)? {
        Some(s) if !s.is_empty() => s,
        _ => {
            let s = vec![SigningSecret {
                secret,
                expires_at_ms: None,
            }];
            t.put_merchant_secrets(merchant_id, livemode, &s)?;
            s
        }
    };
    Ok(Ok(Outcome::Secrets(secrets)))
}

pub(super) fn rotate_merchant_secret(
    t: &mut dyn Tx,
    merchant_id: &str,
    livemode: bool,
    secret: String,
    now: i64,
    old_valid_until_ms: i64,
) -> R<Result<Outcome, OpError>> {
    let existing = t
        .merchant_secrets(merchant_id, livemode)?
        .unwrap_or_default();
    let s = rotate(&existing, secret, now, old_valid_until_ms);
    t.put_merchant_secrets(merchant_id, livemode, &s)?;
    Ok(Ok(Outcome::Secrets(s)))
}

pub(super) fn create_endpoint(
    t: &mut dyn Tx,
    endpoint: Box<WebhookEndpoint>,
) -> R<Result<Outcome, OpError>> {
    // Counted in the transaction, so parallel creates cannot pass the cap.
    if t.endpoint_count(&endpoint.merchant_id, endpoint.livemode)? >= MAX_ENDPOINTS {
        return Ok(Err(OpError::Conflict {
            code: "endpoint_limit_reached",
            message: format!(
                "a merchant may have at most {MAX_ENDPOINTS} webhook endpoints per mode; delete one first"
            ),
        }));
    }
    t.insert_endpoint(&endpoint)?;
    Ok(Ok(Outcome::Endpoint(endpoint)))
}

fn owned_endpoint(
    t: &mut dyn Tx,
    merchant_id: &str,
    livemode: bool,
    id: &str,
) -> R<Option<WebhookEndpoint>> {
    Ok(t.endpoint(id)?
        .filter(|ep| ep.merchant_id == merchant_id && ep.livemode == livemode))
}

pub(super) fn delete_endpoint(
    t: &mut dyn Tx,
    merchant_id: &str,
    livemode: bool,
    id: &str,
) -> R<Result<Outcome, OpError>> {
    match owned_endpoint(t, merchant_id, livemode, id)? {
        Some(ep) => {
            t.drop_endpoint(&ep)?;
            Ok(Ok(Outcome::Endpoint(Box::new(ep))))
        }
        None => Ok(Err(OpError::NotFound("webhook endpoint"))),
    }
}

pub(super) fn rotate_endpoint_secret(
    t: &mut dyn Tx,
    merchant_id: &str,
    livemode: bool,
    id: &str,
    secret: String,
    now: i64,
    old_valid_until_ms: i64,
) -> R<Result<Outcome, OpError>> {
    match owned_endpoint(t, merchant_id, livemode, id)? {
        Some(mut ep) => {
            ep.secrets = rotate(&ep.secrets, secret, now, old_valid_until_ms);
            t.put_endpoint(&ep)?;
            Ok(Ok(Outcome::Endpoint(Box::new(ep))))
        }
        None => Ok(Err(OpError::NotFound("webhook endpoint"))),
    }
}
