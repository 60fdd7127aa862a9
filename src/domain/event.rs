//! Events: every state change a merchant hears about, written to the outbox with the change.

use serde::{Deserialize, Serialize};

/// The event types of the API contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "checkout.session.processing")]
    SessionProcessing,
    #[serde(rename = "checkout.session.completed")]
    SessionCompleted,
    #[serde(rename = "checkout.session.expired")]
    SessionExpired,
    #[serde(rename = "checkout.session.canceled")]
    SessionCanceled,
    #[serde(rename = "checkout.session.partially_paid")]
    SessionPartiallyPaid,
    #[serde(rename = "checkout.session.late_payment")]
    SessionLatePayment,
    #[serde(rename = "payment.reverted")]
    PaymentReverted,
    #[serde(rename = "payment.reversed")]
    PaymentReversed,
    #[serde(rename = "credit.unmatched")]
    CreditUnmatched,
    /// A customer claimed money that cannot be tied to them: queued for the operator.
    #[serde(rename = "credit.claimed")]
    CreditClaimed,
    /// The operator assigned a credit to a session (audit).
    #[serde(rename = "credit.assigned")]
    CreditAssigned,
    /// The operator rejected a queued claim (audit).
    #[serde(rename = "credit.claim_rejected")]
    CreditClaimRejected,
    #[serde(rename = "refund.created")]
    RefundCreated,
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
    #[serde(rename = "refund.failed")]
    RefundFailed,
}

impl EventType {
    pub const ALL: [EventType; 15] = [
        EventType::SessionProcessing,
        EventType::SessionCompleted,
        EventType::SessionExpired,
        EventType::SessionCanceled,
        EventType::SessionPartiallyPaid,
        EventType::SessionLatePayment,
        EventType::PaymentReverted,
        EventType::PaymentReversed,
        EventType::CreditUnmatched,
        EventType::CreditClaimed,
        EventType::CreditAssigned,
        EventType::CreditClaimRejected,
        EventType::RefundCreated,
        EventType::RefundSucceeded,
        EventType::RefundFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SessionProcessing => "checkout.session.processing",
            EventType::SessionCompleted => "checkout.session.completed",
            EventType::SessionExpired => "checkout.session.expired",
            EventType::SessionCanceled => "checkout.session.canceled",
            EventType::SessionPartiallyPaid => "checkout.session.partially_paid",
            EventType::SessionLatePayment => "checkout.session.late_payment",
            EventType::PaymentReverted => "payment.reverted",
            EventType::PaymentReversed => "payment.reversed",
            EventType::CreditUnmatched => "credit.unmatched",
            EventType::CreditClaimed => "credit.claimed",
            EventType::CreditAssigned => "credit.assigned",
            EventType::CreditClaimRejected => "credit.claim_rejected",
            EventType::RefundCreated => "refund.created",
            EventType::RefundSucceeded => "refund.succeeded",
            EventType::RefundFailed => "refund.failed",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// An event as stored; `data` is the object's API representation at the time of the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub merchant_id: String,
    pub livemode: bool,
    pub created_at_ms: i64,
    pub data: serde_json::Value,
    /// Where the session asked for its callbacks, if anywhere.
    pub notify_url: Option<String>,
    pub seq: u64,
}
