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
//! | `store` | durability: the redb writer, indexes, group commit | `domain`, `matching`, `metrics`, `checkout` (payment URIs; moving to `engine`) |
//! | `rates` | exchange rates: `[rates]` pairs, their sources' polling, the locked quote a priced session uses | `domain`, `redact` |
//! | `config` | the configuration: schema, overlay with `file:line`, validation | `domain`, `rates`, `redact`, `store`, `watch` (UPI templates, see below) |
//! | `notify` | webhook delivery | `domain`, `metrics`, `redact`, `store` |
//! | `watch` | chain and mailbox watchers | `config`, `domain`, `redact`, `store`, `api` (see below) |
//! | `api` | the HTTP surface: route table (`api::routes`), error registry (`api::error`), handlers | everything above except `daemon`, `cli`, `doctor` |
//! | `daemon` | wires store, listeners, watchers and workers | all of the above |
//! | `doctor` | `paywatch doctor`'s checks | `config`, `daemon`, `redact`, `store`, `watch` |
//! | `cli` | the command line | all of the above |
//!
//! Two ties still break that promise and are the next steps: `watch` ↔ `api` (the IMAP watcher
//! takes `AppState` and calls `api::upi::process_email`; the UPI pipeline belongs in
//! `watch::upi`), and `config` ↔ `watch` (config validation compiles `watch::upi::templates`).
//! `store` → `checkout` goes with the engine seam.

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
