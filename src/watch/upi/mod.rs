//! UPI: bank credit alerts (SMS and e-mail), parsed by data-driven templates.

pub mod account;
pub mod alert;
pub mod apps;
pub mod general;
pub mod imap;
pub mod ingest;
pub mod mail;
pub mod templates;
