//! Pure types and rules: money, sessions and their state machine, events, keys. No I/O here.

pub mod address;
pub mod apikey;
pub mod csv;
pub mod event;
pub mod ids;
pub mod link;
pub mod method;
pub mod money;
pub mod operator;
pub mod price;
pub mod refund;
pub mod session;
pub mod stripe_view;
pub mod uri;
pub mod validate;
pub mod view;
pub mod webhook;
pub mod xpub;

#[cfg(test)]
mod session_tests;
