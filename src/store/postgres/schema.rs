//! The PostgreSQL schema, as numbered migrations applied at start in one transaction under an
//! advisory lock (so two nodes starting at once do not race), recorded in `paywatch_schema`. A
//! database whose recorded version is newer than this binary's is refused, as redb does.
//!
//! Records are JSON text (`body`), as in redb, with the columns the reads filter and order by
//! beside them. Identifiers sort byte-wise (`COLLATE "C"`), so listings and the retention
//! cursors behave as on redb whatever the database's default collation. The money invariants
//! are PostgreSQL's own constraints: the primary keys of `refs` and `idempotency`, the one row
//! per pair of `reservations` with the partial unique index of its awaiting holders, and the
//! ledger's check that refunds never exceed what was received.

use postgres::Client;

/// The newest schema this binary knows.
pub const VERSION: i32 = 3;

/// Migration `n` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: [&str; 3] = [
    r#"
CREATE TABLE counters (name text COLLATE "C" PRIMARY KEY, value bigint NOT NULL);
INSERT INTO counters VALUES ('seq', 0);
CREATE TABLE sessions (
    id text COLLATE "C" PRIMARY KEY,
    scope text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    body text NOT NULL
);
CREATE INDEX sessions_by_scope ON sessions (scope, seq);
CREATE TABLE expiry (
    at bigint NOT NULL,
    id text COLLATE "C" NOT NULL,
    PRIMARY KEY (at, id)
);
CREATE TABLE reservations (
    key text COLLATE "C" NOT NULL,
    amount numeric(39, 0) NOT NULL,
    session_id text NOT NULL,
    held_until_ms bigint,
    reusable boolean NOT NULL DEFAULT false,
    PRIMARY KEY (key, amount)
);
CREATE UNIQUE INDEX one_awaiting_holder_per_pair ON reservations (key, amount)
    WHERE held_until_ms IS NULL;
CREATE INDEX reservations_by_release ON reservations (held_until_ms)
    WHERE held_until_ms IS NOT NULL;
CREATE TABLE payments (id text COLLATE "C" PRIMARY KEY, session_id text NOT NULL);
CREATE TABLE refs (reference text COLLATE "C" PRIMARY KEY, id text NOT NULL);
CREATE TABLE chain_pending (key text COLLATE "C" PRIMARY KEY, value text NOT NULL);
CREATE TABLE claims (
    session_id text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    at bigint NOT NULL,
    PRIMARY KEY (session_id, key)
);
CREATE TABLE claim_refs (reference text COLLATE "C" PRIMARY KEY, session_id text NOT NULL);
CREATE TABLE claim_queue (
    credit_id text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    at bigint NOT NULL,
    PRIMARY KEY (credit_id, session_id)
);
CREATE TABLE credits (
    id text COLLATE "C" PRIMARY KEY,
    scope text COLLATE "C",
    body text NOT NULL
);
CREATE INDEX credits_by_scope ON credits (scope, id);
CREATE TABLE ignored (
    id text COLLATE "C" PRIMARY KEY,
    scope text COLLATE "C",
    body text NOT NULL
);
CREATE INDEX ignored_by_scope ON ignored (scope, id);
CREATE TABLE xpub_next (xpub text COLLATE "C" PRIMARY KEY, next bigint NOT NULL);
CREATE TABLE xpub_addresses (
    xpub text COLLATE "C" NOT NULL,
    idx bigint NOT NULL,
    address text NOT NULL,
    PRIMARY KEY (xpub, idx)
);
CREATE TABLE idempotency (
    key text COLLATE "C" PRIMARY KEY,
    created_at_ms bigint NOT NULL,
    body text NOT NULL
);
CREATE INDEX idempotency_by_age ON idempotency (created_at_ms, key);
CREATE TABLE events (
    id text COLLATE "C" PRIMARY KEY,
    scope text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    body text NOT NULL
);
CREATE INDEX events_by_scope ON events (scope, seq);
CREATE TABLE retention (name text COLLATE "C" PRIMARY KEY, value text NOT NULL);
CREATE TABLE endpoints (
    id text COLLATE "C" PRIMARY KEY,
    scope text COLLATE "C" NOT NULL,
    body text NOT NULL
);
CREATE INDEX endpoints_by_scope ON endpoints (scope, id);
CREATE TABLE merchant_secrets (key text COLLATE "C" PRIMARY KEY, body text NOT NULL);
CREATE TABLE deliveries (
    id text COLLATE "C" PRIMARY KEY,
    event_id text COLLATE "C" NOT NULL,
    lane text COLLATE "C" NOT NULL,
    next_attempt_ms bigint,
    -- A node attempting the delivery holds it until then; after, another may (it died).
    claimed_until_ms bigint,
    body text NOT NULL
);
CREATE INDEX deliveries_by_event ON deliveries (event_id, id);
CREATE INDEX deliveries_due ON deliveries (next_attempt_ms, id) WHERE next_attempt_ms IS NOT NULL;
CREATE TABLE api_keys (hash text COLLATE "C" PRIMARY KEY, body text NOT NULL);
CREATE TABLE api_key_ids (key_id text COLLATE "C" PRIMARY KEY, hash text NOT NULL);
CREATE TABLE cursors (key text COLLATE "C" PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE refunds (
    id text COLLATE "C" PRIMARY KEY,
    scope text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    body text NOT NULL
);
CREATE INDEX refunds_by_scope ON refunds (scope, seq);
CREATE INDEX refunds_by_session ON refunds (session_id, id);
CREATE TABLE ledger (
    scope text COLLATE "C" NOT NULL,
    method text COLLATE "C" NOT NULL,
    received numeric(39, 0) NOT NULL,
    refunded numeric(39, 0) NOT NULL,
    pending numeric(39, 0) NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (scope, method),
    CONSTRAINT refunds_never_above_received CHECK (refunded + pending <= received)
);
"#,
    // 1 → 2: payment links (issue #19); a link's use limit is also the database's own check.
    r#"
CREATE TABLE payment_links (
    id text COLLATE "C" PRIMARY KEY,
    scope text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    uses bigint NOT NULL,
    max_uses bigint,
    body text NOT NULL,
    CHECK (max_uses IS NULL OR uses <= max_uses)
);
CREATE INDEX payment_links_by_scope ON payment_links (scope, seq);
"#,
    // 2 → 3: keyed records: operators, console logins, lockouts, the audit log (read in key order).
    r#"
CREATE TABLE records (
    kind text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (kind, key)
);
"#,
];

/// Why the schema cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("database error while migrating the schema: {0}")]
    Db(#[from] postgres::Error),
    #[error(
        "the database's schema is version {found}, newer than this binary understands ({VERSION}); upgrade paywatch"
    )]
    Newer { found: i32 },
}

/// An arbitrary constant: the advisory lock migrations take.
const MIGRATION_LOCK: i64 = 0x7061_7977_6d69_6772;

/// Applies the migrations this database lacks; the version it is at afterwards.
pub fn migrate(c: &mut Client) -> Result<i32, SchemaError> {
    let mut t = c.transaction()?;
    t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    t.batch_execute("CREATE TABLE IF NOT EXISTS paywatch_schema (version integer NOT NULL)")?;
    let found: Option<i32> = t
        .query_opt("SELECT max(version) FROM paywatch_schema", &[])?
        .and_then(|r| r.get(0));
    let found = found.unwrap_or(0);
    if found > VERSION {
        return Err(SchemaError::Newer { found });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        t.batch_execute(sql)?;
        let v = i32::try_from(i + 1).unwrap_or(i32::MAX);
        t.execute("INSERT INTO paywatch_schema (version) VALUES ($1)", &[&v])?;
    }
    t.commit()?;
    Ok(VERSION)
}

/// The recorded version, without migrating (`paywatch doctor`).
pub fn version(c: &mut Client) -> Result<Option<i32>, postgres::Error> {
    let exists: bool = c
        .query_one("SELECT to_regclass('paywatch_schema') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(
        c.query_one("SELECT max(version) FROM paywatch_schema", &[])?
            .get(0),
    )
}
