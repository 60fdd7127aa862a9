//! What the customer sees: payment URIs and the hosted checkout page.

pub mod i18n;
pub mod page;
pub mod qr;
pub mod stream;
/// Payment URIs are the rails' (`domain::uri`); kept here under their old path.
pub use crate::domain::uri;
