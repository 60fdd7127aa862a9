//! Every shared fixture must parse right: credit class, fine kind, amount in paise and UTR.
//!
//! The fixture file lives outside the crate (`<manifest>/../shared/fixtures/upi_alerts.jsonl`);
//! a missing file fails the test, it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use paywatch::watch::upi::alert::{AlertKind, parse_amount_paise};
use paywatch::watch::upi::templates::{Parser, TemplateSource};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Fixture {
    bank: String,
    sender: Option<String>,
    text: String,
    kind: String,
    is_credit: bool,
    amount: Option<String>,
    utr: Option<String>,
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/upi_alerts.jsonl")
}

fn load_fixtures() -> Vec<Fixture> {
    let path = fixture_path();
    let body = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "fixture file {} is required and could not be read: {e}",
            path.display()
        )
    });
    let fixtures: Vec<Fixture> = body
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: bad fixture: {e}", path.display(), i + 1))
        })
        .collect();
    assert!(!fixtures.is_empty(), "{} has no fixtures", path.display());
    fixtures
}

/// The fixture's `kind` string mapped to the parser's kind. Unknown strings fail the test so a
/// new fixture kind forces a decision here.
fn expected_kind(kind: &str) -> AlertKind {
    match kind {
        "upi_credit_sms" | "upi_credit_email" | "upi_credit_sms_no_ref" => AlertKind::UpiCredit,
        "imps_credit_sms" => AlertKind::ImpsCredit,
        "neft_credit_sms" => AlertKind::NeftCredit,
        "cash_credit_sms" => AlertKind::CashCredit,
        "transfer_credit_sms" => AlertKind::TransferCredit,
        "credit_sms_no_ref" => AlertKind::CreditNoRef,
        "credit_sms_txn_id" => AlertKind::CreditTxnId,
        "reversal_credit_sms" => AlertKind::Reversal,
        "card_refund_credit" => AlertKind::Refund,
        "collect_request" => AlertKind::CollectRequest,
        "otp" => AlertKind::Otp,
        "mandate_created" | "autopay_pre_debit_notice" => AlertKind::Mandate,
        "credit_card_upi_spend" => AlertKind::CardSpend,
        k if k.contains("debit") || k == "outgoing_neft_confirmation" => AlertKind::Debit,
        other => panic!("fixture kind {other:?} has no mapping; decide one in expected_kind()"),
    }
}

#[test]
fn every_fixture_parses_right() {
    let parser = Parser::builtin().unwrap();
    let fixtures = load_fixtures();
    let mut per_bank: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for (line, fx) in fixtures.iter().enumerate() {
        let got = parser.parse(fx.sender.as_deref(), &fx.text);
        let want_kind = expected_kind(&fx.kind);
        let want_amount = fx.amount.as_deref().map(|a| {
            parse_amount_paise(a).unwrap_or_else(|| panic!("line {}: bad amount {a:?}", line + 1))
        });
        let mut problems = Vec::new();
        if got.kind.is_credit() != fx.is_credit {
            problems.push(format!(
                "credit class: got is_credit={} want {}",
                got.kind.is_credit(),
                fx.is_credit
            ));
        }
        if got.kind != want_kind {
            problems.push(format!(
                "kind: got {} want {want_kind} ({})",
                got.kind, fx.kind
            ));
        }
        if got.amount_paise != want_amount {
            problems.push(format!(
                "amount: got {:?} want {want_amount:?}",
                got.amount_paise
            ));
        }
        if got.utr != fx.utr {
            problems.push(format!("utr: got {:?} want {:?}", got.utr, fx.utr));
        }
        let must_be_money = matches!(
            want_kind,
            AlertKind::UpiCredit
                | AlertKind::ImpsCredit
                | AlertKind::CreditNoRef
                | AlertKind::CreditTxnId
        );
        if got.is_money() != must_be_money {
            problems.push(format!(
                "is_money: got {} want {must_be_money}",
                got.is_money()
            ));
        }
        let entry = per_bank.entry(fx.bank.as_str()).or_default();
        entry.1 += 1;
        if problems.is_empty() {
            entry.0 += 1;
        } else {
            failures.push(format!(
                "line {} [{}] via {}: {}\n    text: {:?}",
                line + 1,
                fx.bank,
                got.template,
                problems.join("; "),
                fx.text
            ));
        }
    }
    println!("fixture report ({} alerts):", fixtures.len());
    for (bank, (ok, total)) in &per_bank {
        println!("  {bank}: {ok}/{total} ok");
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// With only the generic template (a bank we have never seen), no fixture non-credit may
/// become money, and credits the fallback does catch must carry the right amount.
#[test]
fn generic_fallback_alone_is_safe_on_fixtures() {
    let generic_only = Parser::from_sources(&[TemplateSource {
        file: "watchers/upi/generic.toml",
        text: include_str!("../watchers/upi/generic.toml"),
    }])
    .unwrap();
    let mut caught = 0;
    let mut credits = 0;
    for fx in load_fixtures() {
        let got = generic_only.parse(None, &fx.text);
        let want = expected_kind(&fx.kind);
        let payable = matches!(
            want,
            AlertKind::UpiCredit
                | AlertKind::ImpsCredit
                | AlertKind::CreditNoRef
                | AlertKind::CreditTxnId
        );
        if !payable {
            assert!(
                !got.is_money(),
                "generic made money of {:?}: {got:?}",
                fx.text
            );
            continue;
        }
        credits += 1;
        if got.is_money() {
            caught += 1;
            let want_amount = fx.amount.as_deref().and_then(parse_amount_paise);
            assert_eq!(got.amount_paise, want_amount, "{:?}", fx.text);
        }
    }
    println!("generic fallback alone: {caught}/{credits} payable credits caught");
}

#[test]
fn bank_detection_from_fixture_senders() {
    let parser = Parser::builtin().unwrap();
    for fx in load_fixtures() {
        let Some(sender) = fx.sender.as_deref() else {
            continue;
        };
        if let Some(bank) = parser.bank_for_sender(sender) {
            assert_eq!(bank, fx.bank, "{sender}");
        }
    }
}
