//! The sweeper: expires due sessions, releases reservations past their grace, forgets old
//! idempotency records, and prunes ignored alerts and fully delivered events past their
//! retention, all within one budget so a sweep stays short.

use super::session::{emit_session_events, save_session};
use super::tx::{R, Tx};
use super::{Ctx, Outcome};
use crate::domain::ids::id_floor;
use crate::domain::session::Status;
use crate::domain::webhook::DeliveryState;

/// How long ignored alerts and delivered events are kept, milliseconds; 0 keeps them forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub ignored_alerts_ms: i64,
    pub events_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        let days30 = 30 * 86_400 * 1000;
        Retention {
            ignored_alerts_ms: days30,
            events_ms: days30,
        }
    }
}

pub(super) fn sweep(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    now: i64,
    idem_ttl: i64,
    limit: usize,
) -> R<Outcome> {
    // The sweep's own clock reading is the one its rules use.
    cx.now = now;
    let mut expired = 0;
    for (at, id) in t.due_expiries(now, limit)? {
        match t.session(&id)? {
            Some(mut s) if s.status == Status::Open => {
                let before = s.clone();
                if let Some(kind) = s.expire_if_due(now) {
                    save_session(t, cx, Some(&before), &s)?;
                    emit_session_events(t, cx, &s, &[kind])?;
                    expired += 1;
                }
            }
            _ => t.drop_expiry(at, &id)?,
        }
    }
    let released = t.release_due(now, limit)?;
    let mut forgotten = t.forget_idempotency(now.saturating_sub(idem_ttl), limit)?;
    // Retention shares the budget, so a full sweep still reads as "more to do".
    forgotten += prune(t, cx, now, limit.saturating_sub(forgotten))?;
    Ok(Outcome::Swept {
        expired,
        released,
        forgotten,
    })
}

/// Drops ignored alerts and fully delivered events past their retention, looking at no more
/// than `budget` records; returns how many it looked at.
fn prune(t: &mut dyn Tx, cx: &Ctx<'_>, now: i64, budget: usize) -> R<usize> {
    let retention = cx.cfg.retention;
    let mut seen = 0;
    if retention.ignored_alerts_ms > 0 {
        let cutoff = id_floor("cr", now.saturating_sub(retention.ignored_alerts_ms));
        seen += t.prune_ignored(&cutoff, budget)?;
    }
    if retention.events_ms > 0 && seen < budget {
        seen += prune_events(t, now, retention.events_ms, budget - seen)?;
    }
    Ok(seen)
}

/// Events older than the retention whose every delivery succeeded go, with their deliveries.
/// An event with a delivery pending or given up is kept (the merchant may still need it
/// redelivered); a cursor moves past it so it is looked at once. Ledgers are their own table
/// and sessions are never pruned.
fn prune_events(t: &mut dyn Tx, now: i64, retention_ms: i64, budget: usize) -> R<usize> {
    let cutoff = id_floor("evt", now.saturating_sub(retention_ms));
    let cursor = t.retention_cursor("events")?.unwrap_or_default();
    if cursor >= cutoff {
        return Ok(0);
    }
    let batch = t.events_between(&cursor, &cutoff, budget)?;
    let Some(last) = batch.last().map(|e| e.id.clone()) else {
        return Ok(0);
    };
    for e in &batch {
        let dls = t.event_delivery_ids(&e.id)?;
        let mut delivered = true;
        for d in &dls {
            if let Some(d) = t.delivery(d)?
                && d.state != DeliveryState::Succeeded
            {
                delivered = false;
            }
        }
        if !delivered {
            continue;
        }
        for d in &dls {
            t.drop_delivery(&e.id, d)?;
        }
        t.drop_event(e)?;
    }
    t.set_retention_cursor("events", &last)?;
    Ok(batch.len())
}
