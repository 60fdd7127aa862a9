//! A consistent copy of the whole database, taken from one MVCC read transaction while the daemon
//! keeps writing: every table is copied into a new redb file, which is then a complete database.

use std::path::Path;

use redb::{
    Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
    Value,
};

use super::tables::*;

fn copy<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, redb::Error> {
    let from = src.open_table(def)?;
    let mut to = dst.open_table(def)?;
    let mut n = 0;
    for entry in from.iter()? {
        let (k, v) = entry?;
        to.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

/// Copies `db` into a new database file at `dest` (which must not exist); returns the rows copied.
pub fn backup(db: &Database, dest: &Path) -> Result<u64, String> {
    if dest.exists() {
        return Err(format!(
            "{} already exists; back up to a new file",
            dest.display()
        ));
    }
    let src = db.begin_read().map_err(|e| e.to_string())?;
    let out =
        Database::create(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let w = out.begin_write().map_err(|e| e.to_string())?;
    let rows = (|| -> Result<u64, redb::Error> {
        Ok(copy(&src, &w, META)?
            + copy(&src, &w, KEYS)?
            + copy(&src, &w, KEY_IDS)?
            + copy(&src, &w, SESSIONS)?
            + copy(&src, &w, SESSION_INDEX)?
            + copy(&src, &w, EXPIRY)?
            + copy(&src, &w, PROCESSING)?
            + copy(&src, &w, RELEASES)?
            + copy(&src, &w, FREED)?
            + copy(&src, &w, PAYMENTS)?
            + copy(&src, &w, REFS)?
            + copy(&src, &w, CREDITS)?
            + copy(&src, &w, CREDIT_INDEX)?
            + copy(&src, &w, IGNORED)?
            + copy(&src, &w, IGNORED_INDEX)?
            + copy(&src, &w, RETENTION)?
            + copy(&src, &w, IDEMPOTENCY)?
            + copy(&src, &w, IDEM_EXPIRY)?
            + copy(&src, &w, EVENTS)?
            + copy(&src, &w, EVENT_INDEX)?
            + copy(&src, &w, OUTBOX)?
            + copy(&src, &w, DELIVERIES)?
            + copy(&src, &w, EVENT_DELIVERIES)?
            + copy(&src, &w, ENDPOINTS)?
            + copy(&src, &w, MERCHANT_SECRETS)?
            + copy(&src, &w, ENDPOINT_INDEX)?
            + copy(&src, &w, OUTBOX_LANES)?
            + copy(&src, &w, CLAIMS)?
            + copy(&src, &w, CLAIM_REFS)?
            + copy(&src, &w, CLAIM_QUEUE)?
            + copy(&src, &w, CHAIN_PENDING)?
            + copy(&src, &w, XPUB_ADDRESSES)?
            + copy(&src, &w, REFUNDS)?
            + copy(&src, &w, REFUND_INDEX)?
            + copy(&src, &w, SESSION_REFUNDS)?
            + copy(&src, &w, LEDGER)?
            + copy(&src, &w, PAYMENT_LINKS)?
            + copy(&src, &w, PAYMENT_LINK_INDEX)?
            + copy(&src, &w, RECORDS)?)
    })()
    .map_err(|e| e.to_string())?;
    // A table this copy does not know (added without updating this list) fails the backup
    // loudly rather than restoring a database that silently lacks it.
    let copied: Vec<String> = w
        .list_tables()
        .map_err(|e| e.to_string())?
        .map(|t| t.name().to_owned())
        .collect();
    for t in src.list_tables().map_err(|e| e.to_string())? {
        if !copied.iter().any(|c| c == t.name()) {
            return Err(format!(
                "table {:?} is not covered by paywatch backup (a bug: report it)",
                t.name()
            ));
        }
    }
    w.commit().map_err(|e| e.to_string())?;
    Ok(rows)
}
