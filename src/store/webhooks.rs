//! The webhook side of the store: each (merchant, mode)'s default signing secret, endpoints
//! indexed by merchant and mode (an event reads only its own merchant's endpoints, and the cap
//! is counted there), and the outbox indexed by lane, (merchant, mode, destination), so the
//! notifier serves every lane in turn and one backlog never hides another's deliveries.

use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::ops::{R, Tables};
use super::scope;
use super::tables::{ENDPOINT_INDEX, ENDPOINTS, OUTBOX_LANES};
use crate::domain::webhook::{Delivery, WebhookEndpoint, destination};

/// Endpoints one merchant may register per mode (Stripe allows 16 too): enough for every real
/// integration, and it bounds the fan-out of one event.
pub const MAX_ENDPOINTS: usize = 16;

/// The `merchant_secrets` key of a (merchant, mode). Live keeps the bare merchant id, which is
/// what databases before per-mode secrets stored: on upgrade the one existing secret stays the
/// live secret and a fresh test secret is made at start.
pub(crate) fn secret_key(merchant_id: &str, livemode: bool) -> String {
    if livemode {
        merchant_id.to_owned()
    } else {
        scope(merchant_id, false)
    }
}

/// The endpoint ids of one merchant and mode, oldest id first.
pub(super) fn endpoint_ids(t: &Tables<'_>, merchant_id: &str, livemode: bool) -> R<Vec<String>> {
    let sc = scope(merchant_id, livemode);
    let mut out = Vec::new();
    for entry in t
        .endpoint_index
        .range((sc.as_str(), "")..=(sc.as_str(), "\u{10FFFF}"))?
    {
        out.push(entry?.0.value().1.to_owned());
    }
    Ok(out)
}

/// Stores a new endpoint and its index entry.
pub(super) fn insert_endpoint(t: &mut Tables<'_>, ep: &WebhookEndpoint) -> R<()> {
    t.endpoints
        .insert(ep.id.as_str(), serde_json::to_vec(ep)?.as_slice())?;
    let sc = scope(&ep.merchant_id, ep.livemode);
    t.endpoint_index.insert((sc.as_str(), ep.id.as_str()), ())?;
    Ok(())
}

/// Removes an endpoint and its index entry.
pub(super) fn remove_endpoint(t: &mut Tables<'_>, ep: &WebhookEndpoint) -> R<()> {
    t.endpoints.remove(ep.id.as_str())?;
    let sc = scope(&ep.merchant_id, ep.livemode);
    t.endpoint_index.remove((sc.as_str(), ep.id.as_str()))?;
    Ok(())
}

/// A delivery's lane: merchant, mode and destination (scheme, host, port).
fn lane(d: &Delivery) -> String {
    format!(
        "{}\x1f{}",
        scope(&d.merchant_id, d.livemode),
        destination(&d.url)
    )
}

/// Puts a delivery in the outbox (due at `at`) and in its lane.
pub(super) fn enqueue(t: &mut Tables<'_>, d: &Delivery, at: i64) -> R<()> {
    t.outbox.insert((at, d.id.as_str()), ())?;
    let l = lane(d);
    t.outbox_lanes.insert((l.as_str(), at, d.id.as_str()), ())?;
    Ok(())
}

/// Takes a delivery due at `due` out of the outbox and its lane.
pub(super) fn dequeue(t: &mut Tables<'_>, d: &Delivery, due: i64) -> R<()> {
    t.outbox.remove((due, d.id.as_str()))?;
    let l = lane(d);
    t.outbox_lanes.remove((l.as_str(), due, d.id.as_str()))?;
    Ok(())
}

/// Indexes the endpoints of a database written before the index existed (once: the index is
/// empty only then, or when there are no endpoints at all).
pub(super) fn backfill(txn: &WriteTransaction) -> Result<(), String> {
    let s = |x: &dyn std::fmt::Display| x.to_string();
    let eps = txn.open_table(ENDPOINTS).map_err(|x| s(&x))?;
    let mut idx = txn.open_table(ENDPOINT_INDEX).map_err(|x| s(&x))?;
    txn.open_table(OUTBOX_LANES).map_err(|x| s(&x))?;
    if !idx.is_empty().map_err(|x| s(&x))? {
        return Ok(());
    }
    for entry in eps.iter().map_err(|x| s(&x))? {
        let (k, v) = entry.map_err(|x| s(&x))?;
        let ep: WebhookEndpoint = serde_json::from_slice(v.value()).map_err(|x| s(&x))?;
        let sc = scope(&ep.merchant_id, ep.livemode);
        idx.insert((sc.as_str(), k.value()), ())
            .map_err(|x| s(&x))?;
    }
    Ok(())
}

/// The ids of due deliveries, at most `per_lane` from each lane, interleaved
/// round-robin (first of every lane, then second of every lane…). Lanes are found by seeking
/// past each one, so the cost grows with the number of lanes, not with a backlog.
pub(super) fn due_by_lane(
    txn: &ReadTransaction,
    now_ms: i64,
    per_lane: usize,
) -> Result<Vec<String>, String> {
    let s = |x: &dyn std::fmt::Display| x.to_string();
    let t = txn.open_table(OUTBOX_LANES).map_err(|x| s(&x))?;
    // Above every delivery id (ids are ASCII), so "past this lane" skips all of its entries.
    let top = "\u{10FFFF}".repeat(8);
    let mut lanes: Vec<Vec<String>> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let next = match &after {
            None => t.first().map_err(|x| s(&x))?,
            Some(l) => {
                let lo: (&str, i64, &str) = (l.as_str(), i64::MAX, top.as_str());
                t.range((Bound::Excluded(lo), Bound::Unbounded))
                    .map_err(|x| s(&x))?
                    .next()
                    .transpose()
                    .map_err(|x| s(&x))?
            }
        };
        let Some(lane) = next.map(|(k, _)| k.value().0.to_owned()) else {
            break;
        };
        let mut ids = Vec::new();
        let due_end = now_ms.saturating_add(1);
        for entry in t
            .range((lane.as_str(), i64::MIN, "")..(lane.as_str(), due_end, ""))
            .map_err(|x| s(&x))?
            .take(per_lane)
        {
            ids.push(entry.map_err(|x| s(&x))?.0.value().2.to_owned());
        }
        if !ids.is_empty() {
            lanes.push(ids);
        }
        after = Some(lane);
    }
    let mut out = Vec::new();
    let longest = lanes.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for lane in &lanes {
            if let Some(id) = lane.get(i) {
                out.push(id.clone());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_secrets_keep_the_pre_upgrade_key_and_test_ones_have_their_own() {
        assert_eq!(secret_key("demo", true), "demo");
        assert_ne!(secret_key("demo", false), secret_key("demo", true));
        assert_ne!(secret_key("demo", false), secret_key("other", false));
    }
}
