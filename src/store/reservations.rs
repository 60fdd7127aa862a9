//! Rebuilding the redb backend's in-memory reservation index from what is committed: an
//! awaiting session's pairs are stored with its expiry (or processing) entry, an ended session's
//! with its release entry.

use redb::{ReadableDatabase, ReadableTable};

use super::tables::{EXPIRY, FREED, PROCESSING, RELEASES, decode_holds};
use crate::engine::reservations::{Reservation, ReservationIndex};

pub fn load_index(db: &redb::Database) -> Result<ReservationIndex, String> {
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
