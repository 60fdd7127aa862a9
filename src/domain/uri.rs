//! Payment URIs a wallet or UPI app opens: NPCI's `upi://pay` and EIP-681 token transfers.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::domain::method::{Method, Rail};
use crate::domain::money::format_units;

/// Everything but RFC 3986 unreserved characters is escaped; a space is `%20`, never `+`, as
/// several UPI apps read `+` literally.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Payee name and note lengths that every common UPI app displays without truncating oddly.
const PAYEE_NAME_MAX: usize = 40;
const NOTE_MAX: usize = 50;

fn esc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Keeps printable characters only (no control or format characters an app may choke on) and cuts
/// to `max` characters.
fn clean(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// `upi://pay?pa=…&pn=…&am=149.87&cu=INR&tr=<session>&tn=…` per NPCI's UPI linking spec; an
/// empty `reference` leaves `tr` out (personal VPAs).
pub fn upi(
    vpa: &str,
    payee_name: &str,
    merchant_code: Option<&str>,
    amount_paise: u128,
    reference: &str,
    note: &str,
) -> String {
    let mut uri = format!(
        "upi://pay?pa={}&pn={}",
        esc(vpa),
        esc(&clean(payee_name, PAYEE_NAME_MAX))
    );
    if let Some(mc) = merchant_code {
        uri.push_str("&mc=");
        uri.push_str(&esc(mc));
    }
    uri.push_str("&am=");
    uri.push_str(&format_units(amount_paise, 2));
    uri.push_str("&cu=INR");
    if !reference.is_empty() {
        uri.push_str("&tr=");
        uri.push_str(&esc(reference));
    }
    let note = clean(note, NOTE_MAX);
    if !note.is_empty() {
        uri.push_str("&tn=");
        uri.push_str(&esc(&note));
    }
    uri
}

/// `ethereum:<token>@<chainId>/transfer?address=<to>&uint256=<base units>` (EIP-681).
pub fn eip681(contract: &str, chain_id: u64, to: &str, base_units: u128) -> String {
    format!("ethereum:{contract}@{chain_id}/transfer?address={to}&uint256={base_units}")
}

/// The URI of one payment option.
pub fn for_method(
    method: &Method,
    pay_to: &str,
    payable_base: u128,
    session_id: &str,
    note: &str,
) -> String {
    match &method.rail {
        // Apps refuse tap-to-pay to a personal VPA that carries merchant parameters; the
        // session is matched by its unique amount either way.
        Rail::Upi {
            payee_name,
            personal: true,
            ..
        } => upi(pay_to, payee_name, None, payable_base, "", note),
        Rail::Upi {
            payee_name,
            merchant_code,
            personal: false,
            ..
        } => upi(
            pay_to,
            payee_name,
            merchant_code.as_deref(),
            payable_base,
            session_id,
            note,
        ),
        Rail::Token {
            contract,
            chain_id,
            tron: false,
            ..
        } => eip681(contract, *chain_id, pay_to, payable_base),
        Rail::Token {
            contract,
            decimals,
            tron: true,
            ..
        } => tron(contract, pay_to, payable_base, *decimals),
    }
}

/// `tron:<to>?token=<contract>&amount=<decimal>`: TRON has no EIP-681; this is the form TRON
/// wallets that read payment QRs accept (the amount in tokens, the TRC-20 contract named), and
/// the page shows address and amount in words for those that read only the address.
pub fn tron(contract: &str, to: &str, base_units: u128, decimals: u32) -> String {
    format!(
        "tron:{to}?token={contract}&amount={}",
        format_units(base_units, decimals)
    )
}

/// The URI that sends `base_units` of a token to `to` (a refund to the customer): `tron:` on
/// TRON, whose wallets do not read `ethereum:` links (and whose addresses are `T…`), EIP-681
/// elsewhere.
pub fn token_transfer(
    contract: &str,
    chain_id: u64,
    to: &str,
    base_units: u128,
    decimals: u32,
    tron_chain: bool,
) -> String {
    if tron_chain {
        tron(contract, to, base_units, decimals)
    } else {
        eip681(contract, chain_id, to, base_units)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upi_uri_escapes_and_formats() {
        let u = upi(
            "merchant@okbank",
            "Demo & Sons Store",
            None,
            14_987,
            "cs_1",
            "Order #12 for you",
        );
        assert_eq!(
            u,
            "upi://pay?pa=merchant%40okbank&pn=Demo%20%26%20Sons%20Store&am=149.87&cu=INR&tr=cs_1&tn=Order%20%2312%20for%20you"
        );
        assert!(!u.contains('+'));
        let long = "x".repeat(200);
        let u = upi("a@b1", &long, Some("5411"), 5, "cs_1", &long);
        assert!(u.contains("&mc=5411&am=0.05&"));
        assert!(u.contains(&format!("pn={}&", "x".repeat(40))));
        assert!(u.ends_with(&format!("tn={}", "x".repeat(50))));
    }

    #[test]
    fn personal_vpa_links_carry_no_merchant_parameters() {
        let u = upi("ravi@okaxis", "Ravi", None, 14_987, "", "Order 12");
        assert_eq!(
            u,
            "upi://pay?pa=ravi%40okaxis&pn=Ravi&am=149.87&cu=INR&tn=Order%2012"
        );
    }

    #[test]
    fn eip681_uri() {
        assert_eq!(
            eip681("0xT", 137, "0xA", 149_990_137),
            "ethereum:0xT@137/transfer?address=0xA&uint256=149990137"
        );
        assert_eq!(
            tron("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", "TXyz", 149_990_137, 6),
            "tron:TXyz?token=TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t&amount=149.990137"
        );
        assert_eq!(
            token_transfer(
                "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
                728126428,
                "TXyz",
                5_000_000,
                6,
                true
            ),
            "tron:TXyz?token=TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t&amount=5.000000"
        );
        assert_eq!(
            token_transfer("0xT", 1, "0xA", 5, 6, false),
            "ethereum:0xT@1/transfer?address=0xA&uint256=5"
        );
    }
}
