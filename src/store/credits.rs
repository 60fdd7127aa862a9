//! Credits apart from ignored alerts: the per-merchant index that lists credits newest first,
//! the table ignored alerts (OTPs, promotions, debits) live in so they never crowd out real
//! credits, and the retention that prunes old ignored alerts and fully delivered events.

use std::ops::Bound;

use redb::{ReadableTable, WriteTransaction};

use super::ops::{R, Tables, WriterState, load_json};
use super::tables::*;
use super::{Credit, scope};
use crate::domain::event::Event;
use crate::domain::ids::id_floor;
use crate::domain::webhook::{Delivery, DeliveryState};

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

/// Lists `c` under its merchant and mode (a credit nobody owns is listed for the operator only).
pub(super) fn index(t: &mut Tables<'_>, c: &Credit) -> R<()> {
    if let Some(m) = &c.merchant_id {
        let sc = scope(m, c.livemode);
        t.credit_index.insert((sc.as_str(), c.id.as_str()), ())?;
    }
    Ok(())
}

/// Keeps an ignored alert in its own table, listed under its merchant and mode.
pub(super) fn record_ignored(t: &mut Tables<'_>, c: &Credit) -> R<()> {
    t.ignored
        .insert(c.id.as_str(), serde_json::to_vec(c)?.as_slice())?;
    if let Some(m) = &c.merchant_id {
        let sc = scope(m, c.livemode);
        t.ignored_index.insert((sc.as_str(), c.id.as_str()), ())?;
    }
    Ok(())
}

/// Drops ignored alerts and fully delivered events past their retention, looking at no more
/// than `budget` records; returns how many it looked at.
pub(super) fn prune(t: &mut Tables<'_>, w: &WriterState, now: i64, budget: usize) -> R<usize> {
    let mut seen = 0;
    if w.retention.ignored_alerts_ms > 0 {
        let cutoff = id_floor("cr", now.saturating_sub(w.retention.ignored_alerts_ms));
        let old: Vec<(String, Vec<u8>)> = t
            .ignored
            .range(..cutoff.as_str())?
            .take(budget)
            .map(|e| e.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        seen += old.len();
        for (id, bytes) in old {
            let c: Credit = serde_json::from_slice(&bytes)?;
            if let Some(m) = &c.merchant_id {
                let sc = scope(m, c.livemode);
                t.ignored_index.remove((sc.as_str(), id.as_str()))?;
            }
            t.ignored.remove(id.as_str())?;
        }
    }
    if w.retention.events_ms > 0 && seen < budget {
        seen += prune_events(t, now, w.retention.events_ms, budget - seen)?;
    }
    Ok(seen)
}

/// Events older than the retention whose every delivery succeeded go, with their deliveries.
/// An event with a delivery pending or given up is kept (the merchant may still need it
/// redelivered); a cursor moves past it so it is looked at once. Ledgers are their own table
/// and sessions are never pruned.
fn prune_events(t: &mut Tables<'_>, now: i64, retention_ms: i64, budget: usize) -> R<usize> {
    let cutoff = id_floor("evt", now.saturating_sub(retention_ms));
    let cursor = t
        .retention
        .get("events")?
        .map(|v| v.value().to_owned())
        .unwrap_or_default();
    if cursor >= cutoff {
        return Ok(0);
    }
    let batch: Vec<(String, Vec<u8>)> = t
        .events
        .range::<&str>((
            Bound::Excluded(cursor.as_str()),
            Bound::Excluded(cutoff.as_str()),
        ))?
        .take(budget)
        .map(|e| e.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())))
        .collect::<Result<_, _>>()?;
    let Some(last) = batch.last().map(|(k, _)| k.clone()) else {
        return Ok(0);
    };
    for (id, bytes) in &batch {
        let e: Event = serde_json::from_slice(bytes)?;
        let dls: Vec<String> = t
            .event_deliveries
            .range((id.as_str(), "")..=(id.as_str(), "\u{10FFFF}"))?
            .map(|e| e.map(|(k, _)| k.value().1.to_owned()))
            .collect::<Result<_, _>>()?;
        let mut delivered = true;
        for d in &dls {
            if let Some(d) = load_json::<Delivery>(&t.deliveries, d)?
                && d.state != DeliveryState::Succeeded
            {
                delivered = false;
            }
        }
        if !delivered {
            continue;
        }
        for d in &dls {
            t.deliveries.remove(d.as_str())?;
            t.event_deliveries.remove((id.as_str(), d.as_str()))?;
        }
        let sc = scope(&e.merchant_id, e.livemode);
        t.event_index.remove((sc.as_str(), e.seq))?;
        t.events.remove(id.as_str())?;
    }
    t.retention.insert("events", last.as_str())?;
    Ok(batch.len())
}

/// Once, on a database from before the credit index: indexes every credit under its merchant
/// and mode and moves ignored alerts out of the credits table.
pub(super) fn migrate(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let mut meta = txn.open_table(META)?;
    if meta.get("credit_index")?.is_some() {
        return Ok(());
    }
    let mut credits = txn.open_table(CREDITS)?;
    let mut index = txn.open_table(CREDIT_INDEX)?;
    let mut ignored = txn.open_table(IGNORED)?;
    let mut ignored_index = txn.open_table(IGNORED_INDEX)?;
    let all: Vec<(String, Vec<u8>)> = credits
        .iter()?
        .map(|e| e.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())))
        .collect::<Result<_, _>>()?;
    for (id, bytes) in all {
        // A record this binary cannot read stays where it is, unlisted, as before.
        let Ok(c) = serde_json::from_slice::<Credit>(&bytes) else {
            continue;
        };
        let sc = c.merchant_id.as_ref().map(|m| scope(m, c.livemode));
        if c.status == "ignored" {
            ignored.insert(id.as_str(), bytes.as_slice())?;
            credits.remove(id.as_str())?;
            if let Some(sc) = &sc {
                ignored_index.insert((sc.as_str(), id.as_str()), ())?;
            }
        } else if let Some(sc) = &sc {
            index.insert((sc.as_str(), id.as_str()), ())?;
        }
    }
    meta.insert("credit_index", 1)?;
    Ok(())
}
