//! The in-memory index of (destination, amount) reservations, owned by the writer thread.
//!
//! Reservations are derived state: an awaiting session's pairs are stored with its expiry (or
//! processing) entry, an ended session's with its release entry. Keeping the index in memory
//! takes every random-key write out of session creation, so a create only appends; the index is
//! rebuilt from those tables at start (and after a failed batch).

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{ReadableDatabase, ReadableTable};

use super::tables::{EXPIRY, FREED, PROCESSING, RELEASES, Reservation, decode_holds};

/// The index key of a physical destination in one mode. Test sessions reserve in a namespace of
/// their own, so test mode never takes live capacity: test money (`simulate`) only ever pays
/// test sessions, real money only live ones. Holds stored before this existed carry the bare
/// destination and count as live until they end.
pub fn res_key(dest: &str, livemode: bool) -> String {
    if livemode {
        dest.to_owned()
    } else {
        format!("test|{dest}")
    }
}

#[derive(Debug, Default)]
pub struct ReservationIndex {
    by_dest: BTreeMap<String, BTreeMap<u128, Reservation>>,
}

impl ReservationIndex {
    pub fn get(&self, dest: &str, amount: u128) -> Option<&Reservation> {
        self.by_dest.get(dest)?.get(&amount)
    }

    /// Amounts at `dest` within [lo, hi] that are held at `now_ms` and may not be reused.
    pub fn held_in(
        &self,
        dest: &str,
        lo: u128,
        hi: u128,
        now_ms: i64,
    ) -> impl Iterator<Item = u128> + '_ {
        self.by_dest
            .get(dest)
            .into_iter()
            .flat_map(move |m| m.range((Bound::Included(lo), Bound::Included(hi))))
            .filter(move |(_, r)| r.is_held(now_ms) && !r.reusable)
            .map(|(a, _)| *a)
    }

    /// (amount, end of grace) of reusable holds at `dest` within [lo, hi]: slots of sessions that
    /// ended with nothing received, still in their grace window.
    pub fn reusable_in(
        &self,
        dest: &str,
        lo: u128,
        hi: u128,
        now_ms: i64,
    ) -> impl Iterator<Item = (u128, i64)> + '_ {
        self.by_dest
            .get(dest)
            .into_iter()
            .flat_map(move |m| m.range((Bound::Included(lo), Bound::Included(hi))))
            .filter(move |(_, r)| r.reusable && r.is_held(now_ms))
            .filter_map(|(a, r)| r.held_until_ms.map(|u| (*a, u)))
    }

    /// Whether anything at `dest` is held at `now_ms`.
    pub fn any_held(&self, dest: &str, now_ms: i64) -> bool {
        self.by_dest
            .get(dest)
            .is_some_and(|m| m.values().any(|r| r.is_held(now_ms)))
    }

    pub fn insert(&mut self, dest: &str, amount: u128, r: Reservation) -> Option<Reservation> {
        self.by_dest
            .entry(dest.to_owned())
            .or_default()
            .insert(amount, r)
    }

    pub fn get_mut(&mut self, dest: &str, amount: u128) -> Option<&mut Reservation> {
        self.by_dest.get_mut(dest)?.get_mut(&amount)
    }

    /// Releases (dest, amount) if it is still the hold that ended at `until`.
    pub fn release(&mut self, dest: &str, amount: u128, until: i64) -> bool {
        let Some(m) = self.by_dest.get_mut(dest) else {
            return false;
        };
        if m.get(&amount)
            .is_some_and(|r| r.held_until_ms == Some(until))
        {
            m.remove(&amount);
            if m.is_empty() {
                self.by_dest.remove(dest);
            }
            return true;
        }
        false
    }

    /// Rebuilds the index from what is committed.
    pub fn load(db: &redb::Database) -> Result<ReservationIndex, String> {
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let mut idx = ReservationIndex::default();
        // Awaiting sessions, from the expiry queue (open) and the processing set.
        let mut awaiting: Vec<(String, Vec<u8>)> = Vec::new();
        let expiry = txn.open_table(EXPIRY).map_err(|e| e.to_string())?;
        for entry in expiry.iter().map_err(|e| e.to_string())? {
            let (k, v) = entry.map_err(|e| e.to_string())?;
            awaiting.push((k.value().1.to_owned(), v.value().to_vec()));
        }
        let processing = txn.open_table(PROCESSING).map_err(|e| e.to_string())?;
        for entry in processing.iter().map_err(|e| e.to_string())? {
            let (k, v) = entry.map_err(|e| e.to_string())?;
            awaiting.push((k.value().to_owned(), v.value().to_vec()));
        }
        for (session, holds) in awaiting {
            let pairs = decode_holds(&holds)
                .ok_or_else(|| format!("damaged reservation list of session {session}"))?;
            for (dest, amount) in pairs {
                let hold = Reservation {
                    session_id: session.clone(),
                    held_until_ms: None,
                    reusable: false,
                };
                idx.insert(&dest, amount, hold);
            }
        }
        let releases = txn.open_table(RELEASES).map_err(|e| e.to_string())?;
        let freed = txn.open_table(FREED).map_err(|e| e.to_string())?;
        for entry in releases.iter().map_err(|e| e.to_string())? {
            let (k, v) = entry.map_err(|e| e.to_string())?;
            let (until, dest, amount) = k.value();
            // An awaiting session's hold wins over an ended one's on the same pair.
            if idx.get(dest, amount).is_none() {
                let reusable = freed
                    .get((until, dest, amount))
                    .map_err(|e| e.to_string())?
                    .is_some();
                idx.insert(
                    dest,
                    amount,
                    Reservation {
                        session_id: v.value().to_owned(),
                        held_until_ms: Some(until),
                        reusable,
                    },
                );
            }
        }
        Ok(idx)
    }
}
