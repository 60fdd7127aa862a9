//! paywatch: a self-hosted payment daemon for USDT and UPI.
//!
//! The domain is pure (`domain`, `matching`); `store` makes it durable; `api` and `checkout`
//! serve merchants and customers; `daemon` wires it together.

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
pub mod redact;
pub mod store;
pub mod watch;
