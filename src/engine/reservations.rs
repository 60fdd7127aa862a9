//! Reservations of (destination, amount) pairs, and the in-memory index a backend may keep of
//! them. Who holds a pair is the store's to keep (see `Tx::hold`); the redb backend derives it
//! from append-only tables and keeps this index in memory, so a create writes no random key; the
//! in-memory backend keeps the index as its storage.

use std::collections::BTreeMap;
use std::ops::Bound;

/// A reservation of one (destination, amount) pair by one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub session_id: String,
    /// `None` while the session awaits payment; then the end of its grace window.
    pub held_until_ms: Option<i64>,
    /// The session ended with nothing received: a new session may take the slot at once when no
    /// free one is left.
    pub reusable: bool,
}

impl Reservation {
    pub fn is_held(&self, now_ms: i64) -> bool {
        self.held_until_ms.is_none_or(|t| t > now_ms)
    }
}

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

#[derive(Debug, Default, Clone)]
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
}
