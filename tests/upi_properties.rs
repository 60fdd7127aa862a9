//! Property tests: non-credits never become money, credits keep their exact amount, and the
//! parser never panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use paywatch::watch::upi::alert::AlertKind;
use paywatch::watch::upi::templates::Parser;
use proptest::prelude::*;

fn parser() -> &'static Parser {
    static PARSER: OnceLock<Parser> = OnceLock::new();
    PARSER.get_or_init(|| Parser::builtin().unwrap())
}

/// Debits, reversals, refunds, collect requests, OTPs, mandates and card spends, in the
/// shapes banks use (fixtures) and a few invented ones. `{AMT}` has a currency, `{AMTN}` not.
const NON_CREDITS: &[(&str, AlertKind)] = &[
    (
        "Dear UPI user A/C X{ACCT} debited by {AMTN} on date {DATE} trf to {NAME} Refno {REF}. If not u? call 1800111109. -SBI",
        AlertKind::Debit,
    ),
    (
        "{AMT} debited from A/c XX{ACCT} on {DATE} to {VPA} (UPI Ref No {REF})",
        AlertKind::Debit,
    ),
    (
        "Sent {AMT} From HDFC Bank A/C *{ACCT} To {NAME} On {DATE} Ref {REF} Not You? Call 18005556789",
        AlertKind::Debit,
    ),
    (
        "ICICI Bank Acct XX{ACCT} debited for {AMT} on {DATE}; {NAME} credited. UPI:{REF}. Call 18002662 for dispute.",
        AlertKind::Debit,
    ),
    (
        "Your a/c no XX{ACCT} is debited for {AMT} on {DATE} and a/c XX{ACCT} credited (IMPS Ref no {REF}) .If not done by you, report. -PNB",
        AlertKind::Debit,
    ),
    (
        "{AMT} debited from A/C XXXXXX{ACCT} and credited to {VPA} UPI Ref:{REF}. Not you? Call 18005700 -BOB",
        AlertKind::Debit,
    ),
    (
        "Your A/c XX{ACCT} debited by {AMT} on {DATE}; {NAME} credited. RRN {REF}. Team IDFC FIRST Bank",
        AlertKind::Debit,
    ),
    (
        "Sent {AMT} from Kotak Bank AC X{ACCT} to {VPA} on {DATE}.UPI Ref {REF}. Not you, kotak.com/fraud",
        AlertKind::Debit,
    ),
    (
        "{AMT} sent to {VPA} from PPBL a/c 91XX{ACCT}.UPI Ref:{REF};Balance:https://m.paytm.me/pbCheckBal",
        AlertKind::Debit,
    ),
    (
        "Debit {AMT} A/c no. XX{ACCT} {DATE} 20:02:19 UPI/P2A/{REF}/{NAME} SMS BLOCKUPI Cust ID to 01351860002, if not you - Axis Bank",
        AlertKind::Debit,
    ),
    (
        "Dear Customer, Acct XXX{ACCT} Dr. {AMT} on {DATE} to {NAME}; UPI: {REF}; Bal INR 12,345.67.Not you? SMS BLOCKUPI-CanaraBank",
        AlertKind::Debit,
    ),
    (
        "A/c *{ACCT} Debited for {AMT} on {DATE} by Mob Bk ref no {REF} Avl Bal Rs:1870.55.If not you, Call 1800222243 -Union Bank of India",
        AlertKind::Debit,
    ),
    (
        "{AMT} transferred from A/c ...{ACCT} to:UPI/{REF}. Total Bal:Rs.6114.76CR. - Bank of Baroda",
        AlertKind::Debit,
    ),
    (
        "Dear Customer, {AMT} has been debited from account {ACCT} to VPA {VPA} on {DATE}. Reference number is {REF}.",
        AlertKind::Debit,
    ),
    (
        "Dear Customer, Your beneficiary has received {AMT} transferred via NEFT IDFBH{REF}. Team IDFC First Bank.",
        AlertKind::Debit,
    ),
    (
        "A/c XX{ACCT} Debited with {AMT} on {DATE} by UCO-UPI.Avl Bal Rs.32.98.",
        AlertKind::Debit,
    ),
    (
        "{AMT} debited from Airtel Payments Bank a/c Txn ID {REF} Bal:15.56 Call 180023400 for help",
        AlertKind::Debit,
    ),
    (
        "{AMT} paid to {NAME} from your a/c XX{ACCT} credited to {VPA} via UPI Ref {REF}",
        AlertKind::Debit,
    ),
    (
        "Dear SBI UPI User, ur A/cX{ACCT} credited with {AMT} on {DATE} against reversal of txn (Ref no {REF})",
        AlertKind::Reversal,
    ),
    (
        "HDFC Bank : Your UPI transaction of {AMTN} has been reversed in your account due to technical problem (UPI Ref no. {REF})",
        AlertKind::Reversal,
    ),
    (
        "Dear Customer, your ICICI Bank Account XXX{ACCT} has been credited with {AMT} on {DATE} as reversal of transaction with UPI: {REF}.",
        AlertKind::Reversal,
    ),
    (
        "{AMT} credited to your A/c XX{ACCT} on {DATE}. Failed txn reversed. UPI Ref {REF}",
        AlertKind::Reversal,
    ),
    (
        "Refund of {AMT} credited to your {BANK} Credit Card XX{ACCT} on {DATE} from {NAME}. Ref {REF}",
        AlertKind::Refund,
    ),
    (
        "{AMT} credited to your a/c XX{ACCT} towards refund from {NAME} UPI Ref {REF}",
        AlertKind::Refund,
    ),
    (
        "{NAME} has requested money on Google Pay UPI app. On approving, {AMT} will be debited from your A/c - Axis Bank",
        AlertKind::CollectRequest,
    ),
    (
        "{NAME} has requested money from you on PhonePe.{AMT} will be debited from your account on approving the request",
        AlertKind::CollectRequest,
    ),
    (
        "Payment request of {AMT} from {VPA}. Ignore if already paid.",
        AlertKind::CollectRequest,
    ),
    (
        "{VPA} sent you a collect request for {AMT}. Approve to pay. Ref {REF}",
        AlertKind::CollectRequest,
    ),
    (
        "{OTP} is your OTP for a Dr. {AMT} transaction on your Canara Bank card. Do not share it with anyone.-Canara Bank",
        AlertKind::Otp,
    ),
    (
        "{OTP} is the OTP to receive {AMT} credited to your a/c XX{ACCT}. Do not share. -{BANK}",
        AlertKind::Otp,
    ),
    (
        "OTP is {OTP} for txn of {AMT} at {NAME} on your {BANK} a/c XX{ACCT}. Valid 10 mins.",
        AlertKind::Otp,
    ),
    (
        "Dear UPI User, UPI AutoPay for {NAME} debit of {AMT} is scheduled on {DATE}, {VPA}. Please ensure sufficient balance in your account. -SBI",
        AlertKind::Mandate,
    ),
    (
        "Your UPI-Mandate for {AMT} is successfully created towards {NAME} from A/c No: **{ACCT}. UMN:{REF}@ybl. If not you, report.",
        AlertKind::Mandate,
    ),
    (
        "Your account will be debited with {AMT} on {DATE} towards {NAME} for AutoPay MERCHANTMANDATE, RRN {REF}-ICICI Bank.",
        AlertKind::Mandate,
    ),
    (
        "E-mandate registered: {AMT} will be credited to {NAME} from your a/c XX{ACCT} monthly. UMN {REF}",
        AlertKind::Mandate,
    ),
    (
        "INR {AMTN} spent on YES BANK Card X{ACCT} @UPI_{NAME} {DATE} 06:03:40 am. Avl Lmt INR 211,880.60.",
        AlertKind::CardSpend,
    ),
    (
        "ICICI Bank Credit Card XX{ACCT} debited for {AMT} on {DATE} for UPI-{REF}-{NAME}. To dispute call 18001080",
        AlertKind::CardSpend,
    ),
];

/// UPI credits of known formats: they must be money with exactly the generated amount and ref.
const CREDITS: &[(&str, &str)] = &[
    (
        "Dear SBI UPI User, ur A/cX{ACCT} credited by {AMT} on {DATE} by  (Ref no {REF})",
        "JD-SBIUPI-S",
    ),
    (
        "Dear SBI User, your A/c X{ACCT}-credited by {AMT} on {DATE} transfer from {NAME} Ref No {REF} -SBI",
        "VM-SBIUPI",
    ),
    (
        "Credit Alert!\n{AMT} credited to HDFC Bank A/c xx{ACCT} on {DATE} from VPA {VPA} (UPI {REF})",
        "AM-HDFCBK",
    ),
    (
        "HDFC Bank: {AMT} credited to a/c XXXXXX{ACCT} on {DATE} by a/c linked to VPA {VPA} (UPI Ref No {REF}).",
        "VM-HDFCBK-S",
    ),
    (
        "Received {AMT} in your Kotak Bank AC X{ACCT} from {VPA} on {DATE}.UPI Ref:{REF}.",
        "VM-KOTAKB",
    ),
    (
        "INR {AMTN} credited to A/c no. XX{ACCT} on {DATE} at 11:59:28 IST. Info- UPI/P2A/{REF}/{NAME}/Axis Bank - Axis Bank",
        "AX-AXISBK-S",
    ),
    (
        "Dear Customer, Acct XX{ACCT} is credited with {AMT} on {DATE} from {NAME}. UPI:{REF}-ICICI Bank",
        "ICICIB",
    ),
    (
        "Ac XX{ACCT} Credited with {AMT} {DATE} 08:53:21 thru UPI . Aval Bal Rs.82431.67 CR. (UPI Ref ID:{REF}) Helpline 18001800-PNB",
        "VM-PNBSMS-S",
    ),
    (
        "{AMT} Credited to A/c ...{ACCT} thru UPI/{REF} by {NAME}. Total Bal:Rs.33438.48CR. - Bank of Baroda",
        "VM-BOBSMS",
    ),
    (
        "A/c *{ACCT} Credited for {AMT} on {DATE} by Mob Bk ref no {REF} Avl Bal Rs:556.00.Never Share OTP/PIN/CVV-Union Bank of India",
        "VM-UNIONB",
    ),
    (
        "Dear Customer, {AMT} is successfully credited to your account **{ACCT} by VPA {VPA} on {DATE}. Reference number is {REF}.",
        "alerts@hdfcbank.net",
    ),
];

const NAMES: &[&str] = &[
    "XXXXXX XXXX",
    "RAMESH KUMAR",
    "Acme Traders",
    "CREDITED TRADERS",
    "RECEIVED LOGISTICS",
    "UPI SOLUTIONS",
    "CASH N CARRY",
    "Money Received Pvt Ltd",
    "Your Account Services",
    "SRI LAKSHMI STORES",
];
const DATES: &[&str] = &[
    "03Dec23",
    "07-12-24",
    "26-Jun-25",
    "11-07-2025",
    "30/04/2026",
];
const BANKS: &[&str] = &["HDFC", "SBI", "ICICI Bank", "Axis Bank", "Some New Bank"];
const SENDERS: &[Option<&str>] = &[
    None,
    Some("VM-HDFCBK"),
    Some("JD-SBIUPI-S"),
    Some("ICICIB"),
    Some("AX-IDFCFB-S"),
    Some("VK-CANBNK-S"),
    Some("JX-PHONPE-S"),
    Some("VM-NEWBNK-S"),
];

/// An amount in paise rendered the way one bank or another writes it.
fn render_amount(paise: u64, style: u8, with_currency: bool) -> String {
    let rupees = paise / 100;
    let frac = paise % 100;
    let number = match style % 5 {
        0 => format!("{rupees}.{frac:02}"),
        1 if frac.is_multiple_of(10) => format!("{rupees}.{}", frac / 10),
        2 if frac == 0 => rupees.to_string(),
        3 => format!("{}.{frac:02}", indian_grouping(rupees)),
        _ => format!("{}.{frac:02}", western_grouping(rupees)),
    };
    if !with_currency {
        return number;
    }
    let currency =
        ["Rs.", "Rs ", "INR ", "₹ ", "Rs:", "Rs", "Rs. ", "₹"][usize::from(style / 5) % 8];
    format!("{currency}{number}")
}

fn indian_grouping(n: u64) -> String {
    let s = n.to_string();
    if s.len() <= 3 {
        return s;
    }
    let (head, tail) = s.split_at(s.len() - 3);
    let mut groups: Vec<&str> = Vec::new();
    let mut rest = head;
    while rest.len() > 2 {
        let (h, t) = rest.split_at(rest.len() - 2);
        groups.push(t);
        rest = h;
    }
    groups.push(rest);
    groups.reverse();
    format!("{},{tail}", groups.join(","))
}

fn western_grouping(n: u64) -> String {
    let s = n.to_string();
    let bytes = s.as_bytes();
    let mut out = String::new();
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && (bytes.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(char::from(*b));
    }
    out
}

fn recase(text: &str, mode: u8, flips: &[bool]) -> String {
    match mode % 4 {
        0 => text.to_owned(),
        1 => text.to_ascii_uppercase(),
        2 => text.to_ascii_lowercase(),
        _ => text
            .chars()
            .zip(flips.iter().cycle())
            .map(|(c, &flip)| {
                if flip && c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else if flip {
                    c.to_ascii_lowercase()
                } else {
                    c
                }
            })
            .collect(),
    }
}

#[derive(Debug, Clone)]
struct Fill {
    paise: u64,
    style: u8,
    reference: String,
    name: &'static str,
    date: &'static str,
    bank: &'static str,
    acct: u16,
    otp: u32,
    vpa: String,
}

fn fill() -> impl Strategy<Value = Fill> {
    (
        1u64..10_000_000_000,
        any::<u8>(),
        "[0-9]{12}",
        prop::sample::select(NAMES),
        prop::sample::select(DATES),
        prop::sample::select(BANKS),
        any::<u16>(),
        100_000u32..1_000_000,
        "[a-z0-9][a-z0-9._-]{1,11}@(ybl|oksbi|okicici|paytm|axl|ibl|upi)",
    )
        .prop_map(
            |(paise, style, reference, name, date, bank, acct, otp, vpa)| Fill {
                paise,
                style,
                reference,
                name,
                date,
                bank,
                acct,
                otp,
                vpa,
            },
        )
}

fn render(template: &str, f: &Fill) -> String {
    template
        .replace("{AMTN}", &render_amount(f.paise, f.style, false))
        .replace("{AMT}", &render_amount(f.paise, f.style, true))
        .replace("{REF}", &f.reference)
        .replace("{NAME}", f.name)
        .replace("{DATE}", f.date)
        .replace("{BANK}", f.bank)
        .replace("{ACCT}", &format!("{:04}", f.acct % 10_000))
        .replace("{OTP}", &f.otp.to_string())
        .replace("{VPA}", &f.vpa)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn non_credits_never_become_money(
        index in 0..NON_CREDITS.len(),
        f in fill(),
        case_mode in any::<u8>(),
        flips in prop::collection::vec(any::<bool>(), 1..16),
        sender in prop::sample::select(SENDERS),
        double_spaces in any::<bool>(),
    ) {
        let (template, kind) = NON_CREDITS[index];
        let mut text = recase(&render(template, &f), case_mode, &flips);
        if double_spaces {
            text = text.replace(' ', "  ");
        }
        let got = parser().parse(sender, &text);
        prop_assert!(!got.is_money(), "money from {:?}: {:?}", text, got);
        prop_assert!(!got.kind.is_incoming_transfer(), "credit from {:?}: {:?}", text, got);
        prop_assert_eq!(got.kind, kind, "{:?}", text);
    }

    #[test]
    fn upi_credits_keep_exact_amount_and_ref(
        index in 0..CREDITS.len(),
        f in fill(),
        case_mode in any::<u8>(),
        flips in prop::collection::vec(any::<bool>(), 1..16),
    ) {
        let (template, sender) = CREDITS[index];
        let text = recase(&render(template, &f), case_mode, &flips);
        let got = parser().parse(Some(sender), &text);
        prop_assert_eq!(got.kind, AlertKind::UpiCredit, "{:?} {:?}", text, got);
        prop_assert!(got.is_money());
        prop_assert_eq!(got.amount_paise, Some(f.paise), "{:?}", text);
        prop_assert_eq!(got.utr.as_deref(), Some(f.reference.as_str()), "{:?}", text);
    }

    #[test]
    fn never_panics_on_arbitrary_text(text in any::<String>(), sender in proptest::option::of(any::<String>())) {
        let _ = parser().parse(sender.as_deref(), &text);
    }

    #[test]
    fn never_panics_on_alert_like_soup(
        words in prop::collection::vec(prop::sample::select(&[
            "Rs.", "INR", "₹", "1,00,000.00", "519", ".", ",", "credited", "debited", "to", "your",
            "A/c", "XX1234", "UPI", "Ref", "no", "123456789012", "by", "VPA", "a@ybl", "reversal",
            "OTP", "-SBI", "HDFC Bank", "ICICI", "Cr.", "Dr.", "(", ")", ":", "/", "\n", "ur", "A/cX1",
            "Rs1.005", "999999999999999999999", "NEFT Cr-ABCD0123456-", "-", "Received", "in",
        ][..]), 0..60),
        sender in prop::sample::select(SENDERS),
    ) {
        let text = words.join(" ");
        let got = parser().parse(sender, &text);
        if let Some(paise) = got.amount_paise {
            prop_assert!(paise < u64::MAX);
        }
    }
}

#[test]
fn rendered_amounts_parse_back() {
    use paywatch::watch::upi::alert::parse_amount_paise;
    for paise in [1u64, 99, 100, 123_456, 10_000_000, 9_999_999_999] {
        for style in 0..=u8::MAX {
            for with_currency in [true, false] {
                let s = render_amount(paise, style, with_currency);
                assert_eq!(parse_amount_paise(&s), Some(paise), "{s}");
            }
        }
    }
}
