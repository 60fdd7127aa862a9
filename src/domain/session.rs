//! The checkout session and its state machine. Pure: callers pass `now` and persist the result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::event::EventType;
use super::method::Currency;
use super::money::base_to_minor;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    Processing,
    Complete,
    Expired,
    Canceled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Processing => "processing",
            Status::Complete => "complete",
            Status::Expired => "expired",
            Status::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "open" => Status::Open,
            "processing" => Status::Processing,
            "complete" => Status::Complete,
            "expired" => Status::Expired,
            "canceled" => Status::Canceled,
            _ => return None,
        })
    }

    /// Open and processing sessions still await money; the others have ended.
    pub fn is_awaiting(self) -> bool {
        matches!(self, Status::Open | Status::Processing)
    }
}

/// How much of the payable amount has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Unpaid,
    PartiallyPaid,
    Paid,
    Overpaid,
}

/// A payment's finality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Seen on chain, waiting for confirmations.
    Pending,
    Confirmed,
    /// Dropped by a reorg.
    Reverted,
}

/// One way to pay a session: where, how much, and the URI a wallet or UPI app opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentOption {
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_contract: Option<String>,
    pub pay_to: String,
    /// Payable amount in the method's base units (paise, token base units).
    pub payable_base: u128,
    pub decimals: u32,
    pub uri: String,
    /// The reservation this option holds (see `Method::destination_key`).
    pub destination: String,
    /// The reservation's amount key: the payable amount, or 0 when the whole address is held.
    pub reservation_amount: u128,
    pub confirmations_required: u32,
    pub underpayment_tolerance: u128,
    /// A payment above the payable amount by at most this much is `paid`, not `overpaid` (a
    /// priced session's tolerance, converted from the price currency).
    #[serde(default)]
    pub overpayment_tolerance: u128,
}

/// Money seen arriving for a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    pub method: String,
    pub amount_base: u128,
    pub decimals: u32,
    pub utr: Option<String>,
    pub tx_hash: Option<String>,
    pub log_index: Option<u64>,
    pub block_number: Option<u64>,
    pub confirmations: u32,
    pub state: PaymentState,
    pub received_at_ms: i64,
    /// The unique external reference (`upi:<utr>`, `evm:<chain>:<tx>:<log>`).
    pub reference: String,
    /// True when it arrived after the session had ended.
    #[serde(default)]
    pub late: bool,
    /// The sender's address of a token transfer, when the watcher knows it: where a refund goes.
    #[serde(default)]
    pub from: Option<String>,
    /// A reversal alert named this payment's reference: the money may have gone back to the
    /// payer. Flagged for the merchant (`payment.reversed`); the session's status is unchanged.
    #[serde(default)]
    pub reversed: bool,
}

/// A checkout session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub merchant_id: String,
    pub livemode: bool,
    pub status: Status,
    pub payment_status: PaymentStatus,
    pub amount: u64,
    pub currency: Currency,
    pub amount_received: u64,
    pub description: Option<String>,
    pub customer_email: Option<String>,
    pub customer_name: Option<String>,
    pub client_reference_id: Option<String>,
    pub payment_options: Vec<PaymentOption>,
    pub checkout_url: String,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    pub notify_url: Option<String>,
    pub payments: Vec<Payment>,
    pub metadata: BTreeMap<String, String>,
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
    pub completed_at_ms: Option<i64>,
    /// When the session left open/processing for good (complete, expired, canceled).
    pub ended_at_ms: Option<i64>,
    pub paid_late: bool,
    /// Insertion order within the merchant's mode, for newest-first listing and cursors.
    pub seq: u64,
    /// The language the merchant asked the customer's pages to speak (`"ta"`), used when the
    /// browser names none the pages speak. `None`: the browser decides (Stripe's `auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// The price as asked when it is in another currency than the methods settle in, with the
    /// rate it was converted at (locked at creation); `amount`/`currency` are what is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<super::price::Price>,
}

/// A transition the state machine refuses.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TransitionError {
    #[error("only an open session with nothing received can be {action}; this one is {status}")]
    NotCancelable {
        action: &'static str,
        status: &'static str,
    },
    #[error("payment {0} is not part of this session")]
    UnknownPayment(String),
    #[error("payment {0} is already confirmed and cannot be reverted")]
    AlreadyConfirmed(String),
}

impl Session {
    fn option(&self, method: &str) -> Option<&PaymentOption> {
        self.payment_options.iter().find(|o| o.method == method)
    }

    /// Base units received for `method`, counting pending payments or only confirmed ones.
    fn received_for(&self, method: &str, confirmed_only: bool) -> u128 {
        self.payments
            .iter()
            .filter(|p| p.method == method)
            .filter(|p| match p.state {
                PaymentState::Confirmed => true,
                PaymentState::Pending => !confirmed_only,
                PaymentState::Reverted => false,
            })
            .fold(0u128, |acc, p| acc.saturating_add(p.amount_base))
    }

    /// Whether what arrived covers some option's payable amount (within its tolerance). An
    /// option that received nothing never counts, whatever its tolerance.
    fn covered(&self, confirmed_only: bool) -> bool {
        self.payment_options.iter().any(|o| {
            let got = self.received_for(&o.method, confirmed_only);
            got > 0 && got >= o.payable_base.saturating_sub(o.underpayment_tolerance)
        })
    }

    /// Recomputes `amount_received` and `payment_status` from the payments.
    fn recompute(&mut self) {
        let mut best = PaymentStatus::Unpaid;
        for o in &self.payment_options {
            let got = self.received_for(&o.method, false);
            let st = if got == 0 {
                PaymentStatus::Unpaid
            } else if got > o.payable_base.saturating_add(o.overpayment_tolerance) {
                PaymentStatus::Overpaid
            } else if got >= o.payable_base.saturating_sub(o.underpayment_tolerance) {
                PaymentStatus::Paid
            } else {
                PaymentStatus::PartiallyPaid
            };
            best = best.max_by_rank(st);
        }
        self.payment_status = best;
        self.amount_received = self
            .payments
            .iter()
            .filter(|p| p.state != PaymentState::Reverted)
            .map(|p| base_to_minor(p.amount_base, p.decimals))
            .fold(0u64, u64::saturating_add);
    }

    fn end(&mut self, status: Status, now_ms: i64) {
        self.status = status;
        self.ended_at_ms = Some(now_ms);
        if status == Status::Complete {
            self.completed_at_ms = Some(now_ms);
        }
    }

    fn check_cancelable(&self, action: &'static str) -> Result<(), TransitionError> {
        let nothing_received = self
            .payments
            .iter()
            .all(|p| p.state == PaymentState::Reverted);
        if self.status == Status::Open && nothing_received {
            Ok(())
        } else {
            Err(TransitionError::NotCancelable {
                action,
                status: self.status.as_str(),
            })
        }
    }

    /// The merchant cancels: only while open with nothing received.
    pub fn cancel(&mut self, now_ms: i64) -> Result<EventType, TransitionError> {
        self.check_cancelable("canceled")?;
        self.end(Status::Canceled, now_ms);
        Ok(EventType::SessionCanceled)
    }

    /// The merchant ends the session now as expired: same rule as cancel.
    pub fn expire_now(&mut self, now_ms: i64) -> Result<EventType, TransitionError> {
        self.check_cancelable("expired")?;
        self.end(Status::Expired, now_ms);
        Ok(EventType::SessionExpired)
    }

    /// The clock ran out: an open session (even partially paid) expires; one that is processing
    /// is paid and waits for confirmations instead.
    pub fn expire_if_due(&mut self, now_ms: i64) -> Option<EventType> {
        if self.status == Status::Open && now_ms >= self.expires_at_ms {
            self.end(Status::Expired, now_ms);
            Some(EventType::SessionExpired)
        } else {
            None
        }
    }

    /// Records a payment for one of the session's options and moves the session on.
    /// Returns the events the change causes, in order.
    pub fn apply_payment(&mut self, mut payment: Payment, now_ms: i64) -> Vec<EventType> {
        let mut events = Vec::new();
        // Expiry is judged by when the money arrived, not when a (possibly lagging) watcher
        // reported it: a payment made before expires_at keeps an open session on time.
        if payment.received_at_ms >= self.expires_at_ms
            && let Some(e) = self.expire_if_due(now_ms)
        {
            events.push(e);
        }
        let confirmed = payment.state == PaymentState::Confirmed;
        if !self.status.is_awaiting() {
            payment.late = true;
            self.payments.push(payment);
            self.recompute();
            if confirmed {
                self.mark_late();
                events.push(EventType::SessionLatePayment);
            }
            return events;
        }
        self.payments.push(payment);
        self.recompute();
        events.extend(self.advance(now_ms));
        events
    }

    fn mark_late(&mut self) {
        if matches!(self.status, Status::Expired | Status::Canceled) && self.covered(true) {
            self.paid_late = true;
        }
    }

    /// Moves an awaiting session according to what it has received.
    fn advance(&mut self, now_ms: i64) -> Vec<EventType> {
        let was = self.status;
        if self.covered(true) {
            self.end(Status::Complete, now_ms);
            return vec![EventType::SessionCompleted];
        }
        if self.covered(false) {
            self.status = Status::Processing;
            return if was == Status::Processing {
                vec![]
            } else {
                vec![EventType::SessionProcessing]
            };
        }
        self.status = Status::Open;
        if self.payment_status == PaymentStatus::PartiallyPaid {
            vec![EventType::SessionPartiallyPaid]
        } else {
            vec![]
        }
    }

    /// A watcher counted more confirmations for one of this session's payments.
    pub fn confirm_payment(
        &mut self,
        payment_id: &str,
        confirmations: u32,
        now_ms: i64,
    ) -> Result<Vec<EventType>, TransitionError> {
        let idx = self
            .payments
            .iter()
            .position(|p| p.id == payment_id)
            .ok_or_else(|| TransitionError::UnknownPayment(payment_id.to_owned()))?;
        let required = self
            .option(&self.payments[idx].method)
            .map_or(0, |o| o.confirmations_required);
        let p = &mut self.payments[idx];
        p.confirmations = p.confirmations.max(confirmations);
        let became_final = p.state == PaymentState::Pending && p.confirmations >= required;
        let late = p.late;
        if !became_final {
            return Ok(vec![]);
        }
        if let Some(p) = self.payments.iter_mut().find(|p| p.id == payment_id) {
            p.state = PaymentState::Confirmed;
        }
        self.recompute();
        if late || !self.status.is_awaiting() {
            self.mark_late();
            return Ok(vec![EventType::SessionLatePayment]);
        }
        Ok(self.advance(now_ms))
    }

    /// A reorg dropped an unconfirmed payment: it no longer counts and a processing session
    /// goes back to open.
    pub fn revert_payment(
        &mut self,
        payment_id: &str,
        now_ms: i64,
    ) -> Result<Vec<EventType>, TransitionError> {
        let p = self
            .payments
            .iter_mut()
            .find(|p| p.id == payment_id)
            .ok_or_else(|| TransitionError::UnknownPayment(payment_id.to_owned()))?;
        match p.state {
            PaymentState::Confirmed => {
                return Err(TransitionError::AlreadyConfirmed(payment_id.to_owned()));
            }
            PaymentState::Reverted => return Ok(vec![]),
            PaymentState::Pending => p.state = PaymentState::Reverted,
        }
        self.recompute();
        let mut events = vec![EventType::PaymentReverted];
        if self.status.is_awaiting() {
            // A reverted payment never makes anything new happen beyond going back.
            let _ = self.advance(now_ms);
        }
        events.dedup();
        Ok(events)
    }
}

impl PaymentStatus {
    fn rank(self) -> u8 {
        match self {
            PaymentStatus::Unpaid => 0,
            PaymentStatus::PartiallyPaid => 1,
            PaymentStatus::Paid => 2,
            PaymentStatus::Overpaid => 3,
        }
    }

    fn max_by_rank(self, other: PaymentStatus) -> PaymentStatus {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Unpaid => "unpaid",
            PaymentStatus::PartiallyPaid => "partially_paid",
            PaymentStatus::Paid => "paid",
            PaymentStatus::Overpaid => "overpaid",
        }
    }
}
