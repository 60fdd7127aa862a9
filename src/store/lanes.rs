//! The outbox read by lane, (merchant, mode, destination), so the notifier serves every lane in
//! turn and one backlog never hides another's deliveries.

use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable};

use super::tables::OUTBOX_LANES;

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
