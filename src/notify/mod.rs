//! Callbacks: the delivery worker that drains the outbox, and the guard that keeps them off
//! private networks.

pub mod ssrf;
pub mod stripe_signature;
pub mod worker;
