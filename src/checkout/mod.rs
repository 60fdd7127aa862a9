//! What the customer sees: payment URIs and the hosted checkout page.

pub mod i18n;
pub mod page;
pub mod qr;
pub mod uri;
