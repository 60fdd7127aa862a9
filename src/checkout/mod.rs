//! What the customer sees: payment URIs and the hosted checkout page.

pub mod page;
pub mod uri;
