//! UPI from every bank in the registry: the whole corpus (shared fixtures + the repository's
//! `tests/fixtures/upi_corpus.jsonl`) parsed and reported per bank, a leave-one-bank-out run
//! that measures the general reading on banks it was not written for, and end to end against
//! the real binary: real headers pay, strangers and unknown headers do not, and merchant-app
//! notifications forwarded by the supported forwarders pay.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use paywatch::watch::upi::alert::{AlertKind, ParsedAlert, parse_amount_paise};
use paywatch::watch::upi::templates::{DEFAULT_TEMPLATES, Parser, TemplateSource};
use serde::Deserialize;

#[derive(Debug, Deserialize, Clone)]
struct Row {
    bank: String,
    #[serde(default)]
    bank_id: Option<String>,
    sender: Option<String>,
    text: String,
    kind: String,
    is_credit: bool,
    amount: Option<String>,
    utr: Option<String>,
}

fn read_rows(path: PathBuf) -> Vec<Row> {
    let body = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is required: {e}", path.display()));
    body.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Shared fixtures (bank names as the templates spell them) and the corpus (with `bank_id`).
fn corpus() -> Vec<Row> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut rows = read_rows(root.join("../shared/fixtures/upi_alerts.jsonl"));
    let parser = Parser::builtin().unwrap();
    for r in &mut rows {
        if r.bank_id.is_none() {
            r.bank_id = parser.bank_id(&r.bank).map(str::to_owned);
        }
    }
    rows.extend(read_rows(root.join("tests/fixtures/upi_corpus.jsonl")));
    rows
}

/// Credits that must pay a UPI session (UPI, IMPS, channel-less credits).
fn must_pay(kind: &str) -> bool {
    matches!(
        kind,
        "upi_credit_sms"
            | "upi_credit_email"
            | "imps_credit_sms"
            | "upi_credit_sms_no_ref"
            | "credit_sms_no_ref"
            | "credit_sms_ref"
            | "credit_sms_txn_id"
    )
}

/// Texts that must never be money: every non-credit, and credits that are not a customer
/// paying (interest, cashback, refunds, reversals, loan money).
fn never_money(r: &Row) -> bool {
    !r.is_credit
        || ["interest", "cashback", "refund", "reversal", "loan"]
            .iter()
            .any(|w| r.kind.contains(w))
}

#[derive(Default)]
struct Tally {
    credits: usize,
    exact: usize,
    non_credits: usize,
    wrongly_money: usize,
}

fn exact(got: &ParsedAlert, r: &Row) -> bool {
    got.is_money()
        && got.amount_paise == r.amount.as_deref().and_then(parse_amount_paise)
        && got.utr == r.utr
}

fn score(parser: &Parser, rows: &[&Row], failures: &mut Vec<String>) -> Tally {
    let mut t = Tally::default();
    for r in rows {
        let got = parser.parse(r.sender.as_deref(), &r.text);
        if must_pay(&r.kind) {
            t.credits += 1;
            if exact(&got, r) {
                t.exact += 1;
            } else {
                failures.push(format!(
                    "[{}] credit read as {} {:?} utr {:?} via {} (want {:?} {:?}): {:?}",
                    r.bank,
                    got.kind,
                    got.amount_paise,
                    got.utr,
                    got.template,
                    r.amount,
                    r.utr,
                    r.text
                ));
            }
        } else if never_money(r) {
            t.non_credits += 1;
            if got.is_money() {
                t.wrongly_money += 1;
                failures.push(format!(
                    "[{}] NON-CREDIT ({}) read as money via {}: {:?}",
                    r.bank, r.kind, got.template, r.text
                ));
            }
        }
    }
    t
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        100.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}

#[test]
fn corpus_per_bank_no_non_credit_is_money_and_credits_are_exact() {
    let parser = Parser::builtin().unwrap();
    let rows = corpus();
    let mut by_bank: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        by_bank
            .entry(r.bank_id.clone().unwrap_or_else(|| r.bank.clone()))
            .or_default()
            .push(r);
    }
    let mut failures = Vec::new();
    let mut total = Tally::default();
    println!("corpus: {} texts from {} banks", rows.len(), by_bank.len());
    for (bank, list) in &by_bank {
        let t = score(&parser, list, &mut failures);
        println!(
            "  {bank:<16} credits {}/{} exact, non-credits {} ({} as money)",
            t.exact, t.credits, t.non_credits, t.wrongly_money
        );
        total.credits += t.credits;
        total.exact += t.exact;
        total.non_credits += t.non_credits;
        total.wrongly_money += t.wrongly_money;
    }
    println!(
        "corpus total: credits {}/{} exact ({:.1}%), non-credits {} of which {} as money",
        total.exact,
        total.credits,
        pct(total.exact, total.credits),
        total.non_credits,
        total.wrongly_money
    );
    for f in &failures {
        println!("  {f}");
    }
    assert_eq!(total.wrongly_money, 0, "a non-credit became money");
    assert!(
        pct(total.exact, total.credits) >= 95.0,
        "exact amount+reference on {:.1}% of credits, below 95%",
        pct(total.exact, total.credits)
    );
}

/// Each templated bank's own template removed: how the fallback and the general reading do on
/// that bank's texts. Non-credits must still never be money.
#[test]
fn leave_one_bank_out_general_reading() {
    let full = Parser::builtin().unwrap();
    let rows = corpus();
    let mut failures = Vec::new();
    let mut total = Tally::default();
    for (i, src) in DEFAULT_TEMPLATES.iter().enumerate() {
        if src.file.ends_with("generic.toml") {
            continue;
        }
        let bank_name = src
            .text
            .lines()
            .find_map(|l| l.strip_prefix("bank = "))
            .map(|b| b.trim().trim_matches('"').to_owned())
            .unwrap();
        let id = full.bank_id(&bank_name).map(str::to_owned);
        let without: Vec<TemplateSource<'_>> = DEFAULT_TEMPLATES
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| *s)
            .collect();
        let parser = Parser::from_sources(&without).unwrap();
        let list: Vec<&Row> = rows
            .iter()
            .filter(|r| r.bank_id.is_some() && r.bank_id == id)
            .collect();
        let t = score(&parser, &list, &mut failures);
        println!(
            "  without {:<22} credits {}/{} exact, non-credits {} ({} as money)",
            src.file, t.exact, t.credits, t.non_credits, t.wrongly_money
        );
        total.credits += t.credits;
        total.exact += t.exact;
        total.non_credits += t.non_credits;
        total.wrongly_money += t.wrongly_money;
    }
    println!(
        "leave-one-bank-out: credits {}/{} exact ({:.1}%), non-credits {} of which {} as money",
        total.exact,
        total.credits,
        pct(total.exact, total.credits),
        total.non_credits,
        total.wrongly_money
    );
    for f in &failures {
        println!("  {f}");
    }
    assert_eq!(total.wrongly_money, 0, "a non-credit became money");

    // For the record: every bank template removed at once (registry + fallback + general
    // reading only), over the whole corpus.
    let generic_only: Vec<TemplateSource<'_>> = DEFAULT_TEMPLATES
        .iter()
        .filter(|s| s.file.ends_with("generic.toml"))
        .copied()
        .collect();
    let parser = Parser::from_sources(&generic_only).unwrap();
    let all: Vec<&Row> = rows.iter().collect();
    let mut ignored = Vec::new();
    let t = score(&parser, &all, &mut ignored);
    println!(
        "no bank templates at all: credits {}/{} exact ({:.1}%), non-credits {} of which {} as money",
        t.exact,
        t.credits,
        pct(t.exact, t.credits),
        t.non_credits,
        t.wrongly_money
    );
    for f in ignored.iter().filter(|f| f.contains("NON-CREDIT")) {
        println!("  {f}");
    }
    let _ = AlertKind::Unknown;
}

// ---------------------------------------------------------------------------------------------
// End to end: the real binary, one daemon, many sessions.

use common::*;
use serde_json::{Value, json};

const SESSIONS: &str = "/v1/checkout/sessions";
const CREDITS: &str = "/v1/upi/credits";
const TOURL_TOKEN: &str = "tourl-token-0123456789ab";
const FWD_TOKEN: &str = "fwd-token-0123456789abcd";
const FWD_SECRET: &str = "SECabc123";

fn daemon_opts() -> Opts {
    Opts {
        extra: format!(
            r#"
[[merchants]]
id = "person"
name = "Ravi Kumar"

[merchants.methods.upi]
vpa = "ravi.kumar@okaxis"
personal_vpa = true

[upi.sms_headers]
NEWCOB = "New Co-operative Bank"

[upi.ingest.tourl]
merchant = "demo"
token = "{TOURL_TOKEN}"
format = "sms_to_url"

[upi.ingest.fwd]
merchant = "demo"
token = "{FWD_TOKEN}"
format = "smsforwarder"
signing_key = "{FWD_SECRET}"
"#
        ),
        ..Opts::default()
    }
}

async fn open_session(c: &reqwest::Client, d: &Daemon, key: &str, paise: u64) -> (String, String) {
    let (st, _, s) = post(
        c,
        &d.url(SESSIONS),
        key,
        json!({"amount": paise, "currency": "inr"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{s}");
    let payable = s["payment_options"][0]["payable_amount"]
        .as_str()
        .expect("payable")
        .to_owned();
    (s["id"].as_str().expect("id").to_owned(), payable)
}

async fn status(c: &reqwest::Client, d: &Daemon, key: &str, id: &str) -> String {
    let (_, got) = get(c, &d.url(&format!("{SESSIONS}/{id}")), key).await;
    got["status"].as_str().unwrap_or_default().to_owned()
}

async fn post_sms(c: &reqwest::Client, d: &Daemon, key: &str, sender: &str, text: &str) -> Value {
    let (st, _, r) = post(
        c,
        &d.url(CREDITS),
        key,
        json!({"source": "sms", "sender": sender, "text": text}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{r}");
    r
}

/// A header of `bank_id` as a phone shows it: the corpus row's own sender when it is that
/// bank's, else `VM-<first registry header>-S`.
fn header_for(parser: &Parser, row: &Row) -> Option<String> {
    if let Some(s) = &row.sender
        && parser
            .bank_for_sender(s)
            .and_then(|b| parser.bank_id(b))
            .is_some_and(|id| Some(id) == row.bank_id.as_deref())
    {
        return Some(s.clone());
    }
    let registry: toml::Value =
        toml::from_str(include_str!("../watchers/upi/banks.toml")).expect("registry");
    registry["bank"]
        .as_array()?
        .iter()
        .find(|b| b["id"].as_str() == row.bank_id.as_deref())?["sms_headers"]
        .as_array()?
        .first()?
        .as_str()
        .map(|h| format!("VM-{h}-S"))
}

#[tokio::test]
async fn every_registry_bank_with_a_corpus_credit_pays_with_its_real_header() {
    let mut d = Daemon::prepare(&daemon_opts());
    let key = create_key(&d.config, "demo", &["--live", "--permissions", "*"]);
    // Completed sessions keep their amount reserved for a while; banks' texts share amounts
    // (500.00, 2000.00), so a clash moves on to another merchant's VPA.
    let keys = [
        key.clone(),
        create_key(&d.config, "other", &["--live", "--permissions", "*"]),
        create_key(&d.config, "person", &["--live", "--permissions", "*"]),
    ];
    d.start();
    let c = client();
    let parser = Parser::builtin().unwrap();
    let rows = corpus();

    // One credit per bank, the first the corpus has.
    let mut firsts: BTreeMap<String, &Row> = BTreeMap::new();
    for r in &rows {
        if must_pay(&r.kind)
            && let Some(id) = &r.bank_id
        {
            firsts.entry(id.clone()).or_insert(r);
        }
    }
    let mut used_utrs = std::collections::HashSet::new();
    let mut paid = 0;
    let mut fresh: u64 = 777_000_000_000;
    let mut no_header = Vec::new();
    for (id, row) in &firsts {
        let Some(sender) = header_for(&parser, row) else {
            no_header.push(id.clone());
            continue;
        };
        // Corpus texts reuse placeholder references across banks; a reused one would be (rightly)
        // a duplicate here, so it is swapped for a fresh one of the same length.
        let (mut text, mut utr) = (row.text.clone(), row.utr.clone());
        if let Some(u) = &row.utr
            && !used_utrs.insert(u.clone())
        {
            fresh += 1;
            let new = fresh.to_string()[..u.len().min(12)].to_owned();
            text = text.replace(u.as_str(), &new);
            utr = Some(new);
        }
        let paise = parse_amount_paise(row.amount.as_deref().expect("amount")).expect("amount");
        let mut chosen = None;
        for k in &keys {
            let (sid, payable) = open_session(&c, &d, k, paise).await;
            if parse_amount_paise(&payable) == Some(paise) {
                chosen = Some((k, sid));
                break;
            }
        }
        let (k, sid) =
            chosen.unwrap_or_else(|| panic!("{id}: no merchant could hold {paise} exactly"));
        let r = post_sms(&c, &d, k, &sender, &text).await;
        assert_eq!(r["outcome"], "matched", "{id} via {sender}: {r}\n{text}");
        assert_eq!(r["session"], sid.as_str(), "{id}");
        assert_eq!(r["utr"], json!(utr), "{id}");
        assert_eq!(status(&c, &d, k, &sid).await, "complete", "{id}");
        paid += 1;
    }
    println!(
        "end to end: {paid} registry banks paid with their header; without an SMS header: {no_header:?}"
    );
    assert!(paid >= 35, "only {paid} banks paid");

    // An operator's one-line header ([upi.sms_headers] NEWCOB = "…") makes a new bank's SMS pay.
    let (sid, payable) = open_session(&c, &d, &key, 43_210).await;
    let text = format!(
        "Dear Customer, your A/c XX4321 is credited with INR {payable} on 01-12-26 by UPI Ref No 688812345678 from ravi@okaxis. -New Co-op Bank"
    );
    let r = post_sms(&c, &d, &key, "JD-NEWCOB-S", &text).await;
    assert_eq!(r["outcome"], "matched", "{r}");
    assert_eq!(r["session"], sid.as_str());

    // A stranger's SMS (a phone number) and an unknown header never pay, whatever they say.
    let (sid, payable) = open_session(&c, &d, &key, 54_321).await;
    let text = format!(
        "Rs.{payable} credited to your A/c XX1234 on 01-12-26 by UPI Ref No 699912345678 -IndusInd Bank"
    );
    for sender in [
        "+919876543210",
        "9876543210",
        "VM-FAKEBK-S",
        "JD-INDUSB-X",
        "XX-YY-INDUSB",
    ] {
        let r = post_sms(&c, &d, &key, sender, &text).await;
        assert_eq!(r["outcome"], "ignored", "{sender}: {r}");
        assert!(
            r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("not a known bank sender id")),
            "{sender}: {r}"
        );
    }
    assert_eq!(status(&c, &d, &key, &sid).await, "open");
    // The same text from the bank's real header does pay.
    let r = post_sms(&c, &d, &key, "JD-INDUSB-S", &text).await;
    assert_eq!(r["outcome"], "matched", "{r}");
}

fn smsforwarder_form(from: &str, title: &str, content: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let ms = chrono::Utc::now().timestamp_millis().to_string();
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(FWD_SECRET.as_bytes()).expect("key");
    m.update(ms.as_bytes());
    m.update(b"\n");
    m.update(FWD_SECRET.as_bytes());
    let sign = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("from", from)
        .append_pair("title", title)
        .append_pair("content", content)
        .append_pair("timestamp", &ms)
        .append_pair("sign", &sign)
        .finish()
}

#[tokio::test]
async fn merchant_app_notifications_pay_from_the_supported_apps_only() {
    let mut d = Daemon::prepare(&daemon_opts());
    let key = create_key(&d.config, "demo", &["--live", "--permissions", "*"]);
    let person = create_key(&d.config, "person", &["--live", "--permissions", "*"]);
    d.start();
    let c = client();
    let url = d.url(CREDITS);

    // (package, title, text with {AMT}) as each app words a received payment.
    let apps = [
        (
            "com.phonepe.app.business",
            "PhonePe Business",
            "Received ₹{AMT} from Rohit Sharma",
        ),
        (
            "com.paytm.business",
            "Paytm for Business",
            "Payment of Rs {AMT} received on Paytm QR from Pooja Jain",
        ),
        (
            "com.google.android.apps.nbu.paisa.merchant",
            "Payment received",
            "Payment received: ₹ {AMT}",
        ),
        (
            "com.bharatpe.app",
            "BharatPe",
            "₹{AMT} received from Amit via UPI. UPI Ref No 612398765432",
        ),
    ];
    let mut n = 0u64;
    for (package, title, words) in apps {
        for via in ["sms_to_url", "smsforwarder"] {
            n += 1;
            let (sid, payable) = open_session(&c, &d, &key, 30_000 + n).await;
            let text = words.replace("{AMT}", &payable);
            let text = if text.contains("612398765432") {
                text.replace("612398765432", &format!("61239876{:04}", n))
            } else {
                text
            };
            let r = if via == "sms_to_url" {
                c.post(&url)
                    .header("x-paywatch-token", TOURL_TOKEN)
                    .json(&json!({"package": package, "title": title, "text": text,
                                  "receivedStamp": chrono::Utc::now().timestamp_millis()}))
                    .send()
                    .await
            } else {
                c.post(format!("{url}?token={FWD_TOKEN}"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(smsforwarder_form(package, title, &text))
                    .send()
                    .await
            }
            .expect("send");
            assert_eq!(r.status().as_u16(), 200);
            let v: Value = r.json().await.expect("json");
            assert_eq!(v["outcome"], "matched", "{package} via {via}: {v}");
            assert_eq!(v["session"], sid.as_str(), "{package} via {via}");
        }
    }

    // Another app saying the same thing, and the apps' non-payments, never pay.
    let (sid, payable) = open_session(&c, &d, &key, 39_999).await;
    for (package, text) in [
        (
            "com.whatsapp",
            format!("Received ₹{payable} from Rohit Sharma"),
        ),
        (
            "com.phonepe.app",
            format!("Received ₹{payable} from Rohit Sharma"),
        ),
        (
            "com.phonepe.app.business",
            format!("Settlement of ₹{payable} to your bank account is complete"),
        ),
        (
            "com.paytm.business",
            format!("Today's total collection ₹{payable} from 3 payments"),
        ),
        (
            "com.google.android.apps.nbu.paisa.merchant",
            format!("Rohit Sharma requested ₹{payable}"),
        ),
        ("com.bharatpe.app", format!("Refund of ₹{payable} received")),
        (
            "com.phonepe.app.business",
            format!("You paid ₹{payable} to Ravi Stores"),
        ),
    ] {
        let r = c
            .post(&url)
            .header("x-paywatch-token", TOURL_TOKEN)
            .json(&json!({"package": package, "title": "", "text": text}))
            .send()
            .await
            .expect("send");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["outcome"], "ignored", "{package}: {text}: {v}");
    }
    assert_eq!(status(&c, &d, &key, &sid).await, "open");
    // A personal VPA's link carries no merchant parameters (apps refuse those on personal VPAs);
    // a merchant VPA's keeps its transaction reference.
    let (st, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &person,
        json!({"amount": 12_345, "currency": "inr"}),
        None,
    )
    .await;
    assert_eq!(st, 201, "{s}");
    let uri = s["payment_options"][0]["uri"].as_str().expect("uri");
    assert!(
        uri.starts_with("upi://pay?pa=ravi.kumar%40okaxis&"),
        "{uri}"
    );
    assert!(!uri.contains("&tr=") && !uri.contains("&mc="), "{uri}");
    assert!(uri.contains("&am=123.45&cu=INR"), "{uri}");
    let (_, _, s) = post(
        &c,
        &d.url(SESSIONS),
        &key,
        json!({"amount": 12_345, "currency": "inr"}),
        None,
    )
    .await;
    let uri = s["payment_options"][0]["uri"].as_str().expect("uri");
    assert!(uri.contains("&tr=cs_"), "{uri}");

    // Without the ingest token a notification is refused outright.
    let r = c
        .post(&url)
        .json(&json!({"package": "com.paytm.business", "text": format!("₹{payable} received")}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(status(&c, &d, &key, &sid).await, "open");
}

/// A bad `[upi.sms_headers]` line or `personal_vpa` setting stops the binary with one line naming
/// the file, the key and the problem.
#[test]
fn bad_header_and_personal_vpa_settings_name_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = config_text(dir.path(), &Opts::default());
    for (extra, key, problem) in [
        (
            "\n[upi.sms_headers]\nHDFCBK = \"mybank\"\n",
            "upi.sms_headers.HDFCBK",
            "already belongs to HDFC",
        ),
        (
            "\n[upi.sms_headers]\n\"VM-NEWBNK-S\" = \"New Bank\"\n",
            "upi.sms_headers.VM-NEWBNK-S",
            "not a DLT sender header",
        ),
        (
            "\n[upi.sms_headers]\nNEWBNK = \" \"\n",
            "upi.sms_headers.NEWBNK",
            "must not be empty",
        ),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("{good}{extra}")).expect("write");
        let out = cli(&path, &["keys", "list"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(key) && err.contains(problem), "{key}: {err}");
    }
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        good.replace(
            "vpa = \"demo@okbank\"",
            "vpa = \"demo@okbank\"\npersonal_vpa = true\nmerchant_code = \"5411\"",
        ),
    )
    .expect("write");
    let out = cli(&path, &["keys", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("personal_vpa") && err.contains("merchant_code"),
        "{err}"
    );
}

/// `paywatch alerts parse` on a bank no template knows shows the bank, the reading and why.
#[test]
fn alerts_parse_explains_the_general_reading() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config_text(dir.path(), &Opts::default())).expect("write");
    let text = "Rs.1,00,000.00 credited to your A/c XX1234 on 01-12-26 and debited from A/c of RAVI KUMAR. Info: UPI/SBIN/612345678901/RAVI";
    let out = cli(&path, &["alerts", "parse", "--sender", "AD-INDUSB-S", text]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["bank"], "IndusInd Bank", "{v}");
    assert_eq!(v["sender_is_bank"], true);
    assert_eq!(v["is_money"], true, "{v}");
    assert_eq!(v["amount_paise"], 10_000_000);
    assert_eq!(v["utr"], "612345678901");
    let why = v["why"].as_array().expect("why");
    assert!(
        why.iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("outranks"))),
        "{v}"
    );
    let out = cli(
        &path,
        &[
            "alerts",
            "parse",
            "--sender",
            "com.paytm.business",
            "₹10.21 received",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v["is_money"].as_bool(), v["amount_paise"].as_u64()),
        (Some(true), Some(1021)),
        "{v}"
    );
    assert_eq!(v["bank"], "Paytm for Business");
}
