//! The state machine, case by case: every transition the API contract names.

use std::collections::BTreeMap;

use super::event::EventType as E;
use super::method::Currency;
use super::session::*;

const NOW: i64 = 1_000_000;

fn option(method: &str, payable: u128, confirmations: u32, tolerance: u128) -> PaymentOption {
    PaymentOption {
        method: method.into(),
        network: None,
        chain_id: None,
        token: None,
        token_contract: None,
        pay_to: "x".into(),
        payable_base: payable,
        decimals: 2,
        uri: String::new(),
        destination: format!("d:{method}"),
        reservation_amount: payable,
        confirmations_required: confirmations,
        underpayment_tolerance: tolerance,
        overpayment_tolerance: 0,
    }
}

fn session(options: Vec<PaymentOption>) -> Session {
    Session {
        id: "cs_test".into(),
        merchant_id: "m".into(),
        livemode: false,
        status: Status::Open,
        payment_status: PaymentStatus::Unpaid,
        amount: 10_000,
        currency: Currency::Inr,
        amount_received: 0,
        description: None,
        customer_email: None,
        customer_name: None,
        client_reference_id: None,
        payment_options: options,
        checkout_url: String::new(),
        success_url: None,
        cancel_url: None,
        notify_url: None,
        payments: vec![],
        metadata: BTreeMap::new(),
        expires_at_ms: NOW + 1_000,
        created_at_ms: NOW - 1_000,
        completed_at_ms: None,
        ended_at_ms: None,
        paid_late: false,
        price: None,
        seq: 1,
        locale: None,
    }
}

fn pay(id: &str, method: &str, amount: u128, state: PaymentState) -> Payment {
    Payment {
        id: id.into(),
        method: method.into(),
        amount_base: amount,
        decimals: 2,
        utr: None,
        tx_hash: None,
        log_index: None,
        block_number: None,
        confirmations: 0,
        state,
        received_at_ms: NOW,
        reference: format!("ref:{id}"),
        late: false,
        reversed: false,
        from: None,
    }
}

#[test]
fn exact_confirmed_payment_completes() {
    let mut s = session(vec![option("upi", 10_003, 0, 0)]);
    let ev = s.apply_payment(pay("p1", "upi", 10_003, PaymentState::Confirmed), NOW);
    assert_eq!(ev, vec![E::SessionCompleted]);
    assert_eq!(s.status, Status::Complete);
    assert_eq!(s.payment_status, PaymentStatus::Paid);
    assert_eq!(s.amount_received, 10_003);
    assert_eq!(s.completed_at_ms, Some(NOW));
}

#[test]
fn partial_then_rest_completes() {
    let mut s = session(vec![option("upi", 10_000, 0, 0)]);
    let ev = s.apply_payment(pay("p1", "upi", 4_000, PaymentState::Confirmed), NOW);
    assert_eq!(ev, vec![E::SessionPartiallyPaid]);
    assert_eq!(
        (s.status, s.payment_status),
        (Status::Open, PaymentStatus::PartiallyPaid)
    );
    assert!(s.cancel(NOW).is_err(), "money received: not cancelable");
    let ev = s.apply_payment(pay("p2", "upi", 6_001, PaymentState::Confirmed), NOW);
    assert_eq!(ev, vec![E::SessionCompleted]);
    assert_eq!(s.payment_status, PaymentStatus::Overpaid);
}

#[test]
fn tolerance_counts_a_small_shortfall_as_paid() {
    let mut s = session(vec![option("usdt", 10_000, 0, 50)]);
    let ev = s.apply_payment(pay("p1", "usdt", 9_950, PaymentState::Confirmed), NOW);
    assert_eq!(ev, vec![E::SessionCompleted]);
    assert_eq!(s.payment_status, PaymentStatus::Paid);
    let mut s = session(vec![option("usdt", 10_000, 0, 50)]);
    let ev = s.apply_payment(pay("p1", "usdt", 9_949, PaymentState::Confirmed), NOW);
    assert_eq!(ev, vec![E::SessionPartiallyPaid]);
}

#[test]
fn pending_payment_processes_then_confirms() {
    let mut s = session(vec![option("usdt", 10_000, 3, 0)]);
    let ev = s.apply_payment(pay("p1", "usdt", 10_000, PaymentState::Pending), NOW);
    assert_eq!(ev, vec![E::SessionProcessing]);
    assert_eq!(s.status, Status::Processing);
    assert_eq!(s.confirm_payment("p1", 2, NOW), Ok(vec![]));
    assert_eq!(s.status, Status::Processing);
    assert_eq!(
        s.confirm_payment("p1", 3, NOW),
        Ok(vec![E::SessionCompleted])
    );
    assert_eq!(s.status, Status::Complete);
    assert!(
        s.revert_payment("p1", NOW).is_err(),
        "confirmed payments are final"
    );
}

#[test]
fn reorg_sends_processing_back_to_open() {
    let mut s = session(vec![option("usdt", 10_000, 3, 0)]);
    s.apply_payment(pay("p1", "usdt", 10_000, PaymentState::Pending), NOW);
    let ev = s.revert_payment("p1", NOW).expect("revert");
    assert_eq!(ev, vec![E::PaymentReverted]);
    assert_eq!(
        (s.status, s.payment_status),
        (Status::Open, PaymentStatus::Unpaid)
    );
    assert_eq!(s.amount_received, 0);
    assert_eq!(
        s.revert_payment("p1", NOW),
        Ok(vec![]),
        "reverting twice is a no-op"
    );
    assert!(s.revert_payment("nope", NOW).is_err());
}

#[test]
fn processing_does_not_expire() {
    let mut s = session(vec![option("usdt", 10_000, 3, 0)]);
    s.apply_payment(pay("p1", "usdt", 10_000, PaymentState::Pending), NOW);
    assert_eq!(s.expire_if_due(NOW + 10_000), None);
    assert_eq!(s.status, Status::Processing);
}

#[test]
fn expiry_on_time_and_not_before() {
    let mut s = session(vec![option("upi", 10_000, 0, 0)]);
    assert_eq!(s.expire_if_due(NOW + 999), None);
    assert_eq!(s.expire_if_due(NOW + 1_000), Some(E::SessionExpired));
    assert_eq!(s.status, Status::Expired);
    assert_eq!(s.expire_if_due(NOW + 2_000), None, "expires once");
}

#[test]
fn payment_after_expiry_is_late_and_keeps_status() {
    let mut s = session(vec![option("upi", 10_000, 0, 0)]);
    // The sweeper has not run yet: the payment, received after expires_at, notices it first.
    let mut p = pay("p1", "upi", 10_000, PaymentState::Confirmed);
    p.received_at_ms = NOW + 5_000;
    let ev = s.apply_payment(p, NOW + 5_000);
    assert_eq!(ev, vec![E::SessionExpired, E::SessionLatePayment]);
    assert_eq!(s.status, Status::Expired);
    assert_eq!(s.payment_status, PaymentStatus::Paid);
    assert!(s.paid_late);
    assert!(s.payments[0].late);
}

#[test]
fn late_token_payment_is_announced_when_confirmed() {
    let mut s = session(vec![option("usdt", 10_000, 2, 0)]);
    s.expire_if_due(NOW + 1_000);
    let ev = s.apply_payment(
        pay("p1", "usdt", 10_000, PaymentState::Pending),
        NOW + 2_000,
    );
    assert_eq!(ev, vec![]);
    assert!(!s.paid_late);
    let ev = s.confirm_payment("p1", 2, NOW + 3_000).expect("confirm");
    assert_eq!(ev, vec![E::SessionLatePayment]);
    assert!(s.paid_late);
}

#[test]
fn cancel_and_expire_now_rules() {
    let mut s = session(vec![option("upi", 10_000, 0, 0)]);
    assert_eq!(s.cancel(NOW), Ok(E::SessionCanceled));
    assert_eq!(s.status, Status::Canceled);
    assert!(matches!(
        s.cancel(NOW),
        Err(TransitionError::NotCancelable {
            status: "canceled",
            ..
        })
    ));
    assert!(s.expire_now(NOW).is_err());
    let mut s = session(vec![option("upi", 10_000, 0, 0)]);
    assert_eq!(s.expire_now(NOW), Ok(E::SessionExpired));
    assert_eq!(s.ended_at_ms, Some(NOW));
}

#[test]
fn payment_after_completion_is_recorded_as_late_overpayment() {
    let mut s = session(vec![option("upi", 10_000, 0, 0)]);
    s.apply_payment(pay("p1", "upi", 10_000, PaymentState::Confirmed), NOW);
    let ev = s.apply_payment(pay("p2", "upi", 10_000, PaymentState::Confirmed), NOW);
    assert_eq!(ev, vec![E::SessionLatePayment]);
    assert_eq!(s.status, Status::Complete);
    assert_eq!(s.payment_status, PaymentStatus::Overpaid);
    assert!(
        !s.paid_late,
        "paid_late is for sessions that expired or were canceled"
    );
}

#[test]
fn tolerance_never_completes_an_option_that_received_nothing() {
    // A tolerance as large as the payable amount on one option must not make a dust payment on
    // another option complete the session.
    let mut s = session(vec![
        option("usdt_a", 100, 0, 100),
        option("usdt_b", 100, 0, 0),
    ]);
    let ev = s.apply_payment(pay("p1", "usdt_b", 1, PaymentState::Confirmed), NOW);
    assert_eq!(ev, vec![E::SessionPartiallyPaid]);
    assert_eq!(s.status, Status::Open);
}

#[test]
fn on_time_payment_reported_late_is_on_time() {
    let mut s = session(vec![option("upi", 10_000, 0, 0)]);
    let mut p = pay("p1", "upi", 10_000, PaymentState::Confirmed);
    p.received_at_ms = NOW + 500; // before expires_at (NOW + 1000)
    let ev = s.apply_payment(p, NOW + 60_000); // reported a minute later
    assert_eq!(ev, vec![E::SessionCompleted]);
    assert!(!s.paid_late);
}

#[test]
fn cancel_is_allowed_after_the_only_payment_was_reverted() {
    let mut s = session(vec![option("usdt", 10_000, 3, 0)]);
    s.apply_payment(pay("p1", "usdt", 10_000, PaymentState::Pending), NOW);
    s.revert_payment("p1", NOW).expect("revert");
    assert_eq!(s.cancel(NOW), Ok(E::SessionCanceled));
}
