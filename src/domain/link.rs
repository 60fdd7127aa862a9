//! Payment links: a reusable page that opens a fresh checkout session per customer, with a
//! fixed amount or one the customer enters within bounds, an optional limit of uses and an
//! expiry. Pure: the engine opens links inside a transaction (`engine::links`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The session metadata key that names the link a session was opened from (and so appears in
/// the session's events).
pub const LINK_METADATA_KEY: &str = "payment_link";

/// A payment link as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentLink {
    pub id: String,
    pub merchant_id: String,
    pub livemode: bool,
    /// `<public_url>/l/<id>`, fixed at creation as a session's `checkout_url` is.
    pub url: String,
    /// A fixed amount (minor units of `currency`), or `None` when the customer enters it.
    pub amount: Option<u64>,
    pub amount_min: Option<u64>,
    pub amount_max: Option<u64>,
    /// The price currency (ISO 4217 lowercase): converted at a rate when no method settles in it.
    pub currency: String,
    pub description: Option<String>,
    /// Method names; empty: every method of the currency, as a session create without
    /// `payment_methods`.
    pub payment_methods: Vec<String>,
    /// Sessions opened from the link that may still be paid or were paid (see `uses`).
    pub max_uses: Option<u64>,
    /// Sessions opened and not given back: an open session counts (so concurrent customers can
    /// never pay more than `max_uses` times), one that ended with nothing received returns its
    /// use.
    pub uses: u64,
    /// Sessions of the link that completed: the merchant's count of sales.
    pub completed: u64,
    pub expires_at_ms: Option<i64>,
    pub active: bool,
    /// A counter QR: the customer (or the cashier) enters the amount each time; the page shows
    /// the session's QR and turns "paid" live.
    #[serde(default)]
    pub counter: bool,
    pub metadata: BTreeMap<String, String>,
    pub created_at_ms: i64,
    /// Insertion order within the merchant's mode, for newest-first listing.
    pub seq: u64,
}

/// Why a link opens no session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Inactive,
    Expired,
    Spent,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Inactive => "inactive",
            Closed::Expired => "expired",
            Closed::Spent => "spent",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Closed::Inactive => "this payment link was deactivated by the merchant",
            Closed::Expired => "this payment link has expired",
            Closed::Spent => "this payment link has been used as many times as it allows",
        }
    }
}

impl PaymentLink {
    /// Whether the link may open a session at `now`, and why not.
    pub fn closed(&self, now_ms: i64) -> Option<Closed> {
        if !self.active {
            Some(Closed::Inactive)
        } else if self.expires_at_ms.is_some_and(|e| now_ms >= e) {
            Some(Closed::Expired)
        } else if self.max_uses.is_some_and(|m| self.uses >= m) {
            Some(Closed::Spent)
        } else {
            None
        }
    }

    /// Whether `amount` may be paid through this link: the fixed amount, or within the bounds.
    pub fn accepts(&self, amount: u64) -> bool {
        match self.amount {
            Some(a) => a == amount,
            None => {
                amount > 0
                    && self.amount_min.is_none_or(|m| amount >= m)
                    && self.amount_max.is_none_or(|m| amount <= m)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> PaymentLink {
        PaymentLink {
            id: "pl_1".into(),
            merchant_id: "demo".into(),
            livemode: false,
            url: "http://x/l/pl_1".into(),
            amount: None,
            amount_min: Some(100),
            amount_max: Some(500),
            currency: "inr".into(),
            description: None,
            payment_methods: vec![],
            max_uses: Some(2),
            uses: 0,
            completed: 0,
            expires_at_ms: Some(1_000),
            active: true,
            counter: false,
            metadata: BTreeMap::new(),
            created_at_ms: 0,
            seq: 0,
        }
    }

    #[test]
    fn a_link_closes_when_inactive_expired_or_spent() {
        let mut l = link();
        assert_eq!(l.closed(999), None);
        assert_eq!(l.closed(1_000), Some(Closed::Expired));
        l.uses = 2;
        assert_eq!(l.closed(0), Some(Closed::Spent));
        l.active = false;
        assert_eq!(l.closed(0), Some(Closed::Inactive));
    }

    #[test]
    fn bounds_and_fixed_amounts() {
        let mut l = link();
        assert!(l.accepts(100) && l.accepts(500));
        assert!(!l.accepts(99) && !l.accepts(501) && !l.accepts(0));
        l.amount = Some(300);
        assert!(l.accepts(300) && !l.accepts(301));
    }
}
