//! paywatch: a self-hosted payment daemon for USDT and UPI.
//!
//! # Layout
//!
//! Each top-level module, what it is for, and the modules it may use. Imports point down this
//! list's dependencies only; no two top-level modules import each other.
//!
//! | module | job | may use |
//! |---|---|---|
//! | `domain` | the pure types and rules: sessions, methods, money, refunds, views (JSON renderings) | nothing of paywatch |
//! | `redact` | secret scrubbing for logs and errors | nothing |
//! | `metrics` | the counters and their Prometheus text | nothing |
//! | `matching` | pure payment matching | `domain` |
//! | `checkout` | the customer pages, payment URIs and QR codes | `domain`, `store` |
//! | `engine` | the money rules over a storage transaction (`engine::Tx`) | `domain`, `matching`, `metrics` |
//! | `store` | durability: the redb writer, indexes, group commit; the in-memory backend | `domain`, `engine`, `metrics` |
//! | `rates` | exchange rates: `[rates]` pairs, their sources' polling, the locked quote a priced session uses | `domain`, `redact` |
//! | `config` | the configuration: schema, overlay with `file:line`, validation | `domain`, `rates`, `redact`, `store`, `watch` (UPI templates, see below) |
//! | `notify` | webhook delivery | `domain`, `metrics`, `redact`, `store` |
//! | `watch` | chain and mailbox watchers; the UPI alert pipeline (`watch::upi::ingest`) | `config`, `domain`, `metrics`, `redact`, `store` |
//! | `api` | the HTTP surface: route table (`api::routes`), error registry (`api::error`), handlers | everything above except `daemon`, `cli`, `doctor` |
//! | `daemon` | wires store, listeners, watchers and workers | all of the above |
//! | `doctor` | `paywatch doctor`'s checks | `config`, `daemon`, `redact`, `store`, `watch` |
//! | `cli` | the command line | all of the above |
//!
//! One tie still breaks that promise and is the next step: `config` ↔ `watch` (config validation
//! compiles `watch::upi::templates`). The UPI pipeline lives in `watch::upi::ingest`, so the IMAP
//! watcher no longer reaches into `api` (it gets a `watch::upi::imap::Context`); the routes
//! only render its outcome.

pub mod api;
pub mod checkout;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod domain;
pub mod engine;
pub mod matching;
pub mod metrics;
pub mod notify;
pub mod rates;
pub mod redact;
pub mod store;
pub mod watch;
