//! Addresses of the token rails: EVM hex (with its EIP-55 checksum) and TRON Base58Check. Inside
//! the daemon every address is 20 bytes, written `0x` + lowercase hex; the `T…` form of TRON exists
//! only at the edges (config, API, pages), because TRON's JSON-RPC speaks hex like Ethereum's.

use sha2::{Digest as _, Sha256};
use sha3::Keccak256;
use thiserror::Error;

/// Why an address was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AddressError {
    #[error("{0:?} is not a 0x-prefixed 40-hex-digit address")]
    NotHex(String),
    #[error("{0:?} fails its EIP-55 checksum (a typo?); expected {1}")]
    Checksum(String, String),
    #[error("{0:?} is not a TRON address (Base58Check, starting with T)")]
    NotTron(String),
    #[error("{0:?} fails its Base58Check checksum (a typo?)")]
    TronChecksum(String),
}

/// TRON's mainnet address prefix byte (what makes every address start with `T`).
const TRON_PREFIX: u8 = 0x41;

/// The 20 bytes of a `0x…` address; mixed case must carry a valid EIP-55 checksum, so a mistyped
/// address is caught before money is sent to it.
pub fn parse_evm(addr: &str) -> Result<[u8; 20], AddressError> {
    let hexpart = addr
        .strip_prefix("0x")
        .filter(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| AddressError::NotHex(addr.to_owned()))?;
    let mut bytes = [0u8; 20];
    hex::decode_to_slice(hexpart, &mut bytes).map_err(|_| AddressError::NotHex(addr.to_owned()))?;
    let mixed = hexpart.bytes().any(|b| b.is_ascii_lowercase())
        && hexpart.bytes().any(|b| b.is_ascii_uppercase());
    if mixed {
        let expected = eip55(&bytes);
        if expected[2..] != *hexpart {
            return Err(AddressError::Checksum(addr.to_owned(), expected));
        }
    }
    Ok(bytes)
}

/// The EIP-55 mixed-case form, `0x…`.
pub fn eip55(bytes: &[u8; 20]) -> String {
    let lower = hex::encode(bytes);
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, ch) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0xf;
        out.push(if ch.is_ascii_alphabetic() && nibble >= 8 {
            ch.to_ascii_uppercase()
        } else {
            ch
        });
    }
    out
}

/// `0x` + lowercase hex: the internal form.
pub fn lower_hex(bytes: &[u8; 20]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// The 20 bytes of a `T…` address (Base58Check of 0x41 ‖ 20 bytes ‖ 4 checksum bytes).
pub fn parse_tron(addr: &str) -> Result<[u8; 20], AddressError> {
    let raw = bs58::decode(addr)
        .into_vec()
        .map_err(|_| AddressError::NotTron(addr.to_owned()))?;
    if raw.len() != 25 || raw[0] != TRON_PREFIX {
        return Err(AddressError::NotTron(addr.to_owned()));
    }
    let check = double_sha256(&raw[..21]);
    if raw[21..] != check[..4] {
        return Err(AddressError::TronChecksum(addr.to_owned()));
    }
    let mut bytes = [0u8; 20];
    bytes.copy_from_slice(&raw[1..21]);
    Ok(bytes)
}

/// The `T…` form of 20 address bytes.
pub fn tron(bytes: &[u8; 20]) -> String {
    let mut raw = Vec::with_capacity(25);
    raw.push(TRON_PREFIX);
    raw.extend_from_slice(bytes);
    let check = double_sha256(&raw);
    raw.extend_from_slice(&check[..4]);
    bs58::encode(raw).into_string()
}

fn double_sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

/// Parses an address in the rail's edge form (`T…` on TRON, `0x…` elsewhere).
pub fn parse(addr: &str, tron_rail: bool) -> Result<[u8; 20], AddressError> {
    if tron_rail {
        parse_tron(addr)
    } else {
        parse_evm(addr)
    }
}

/// The rail's edge form of an address: `T…` on TRON, EIP-55 elsewhere.
pub fn display(bytes: &[u8; 20], tron_rail: bool) -> String {
    if tron_rail { tron(bytes) } else { eip55(bytes) }
}

/// The internal form of an edge-form address, or the input lowercased when it does not parse
/// (config validation has refused bad addresses long before this is used).
pub fn internal(addr: &str, tron_rail: bool) -> String {
    parse(addr, tron_rail)
        .map(|b| lower_hex(&b))
        .unwrap_or_else(|_| addr.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known (T…, hex) pairs: Tether's TRC-20 contract, and TRON's all-zero "black hole" address.
    const TRON_PAIRS: [(&str, &str); 2] = [
        (
            "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
            "0xa614f803b6fd780986a42c78ec9c7f77e6ded13c",
        ),
        (
            "T9yD14Nj9j7xAB4dbGeiX9h8unkKHxuWwb",
            "0x0000000000000000000000000000000000000000",
        ),
    ];

    #[test]
    fn tron_addresses_convert_both_ways() {
        for (t, h) in TRON_PAIRS {
            let bytes = parse_tron(t).expect("valid");
            assert_eq!(lower_hex(&bytes), h);
            assert_eq!(tron(&bytes), t);
            assert_eq!(internal(t, true), h);
        }
    }

    #[test]
    fn tron_typos_are_refused() {
        // One character changed: the checksum catches it.
        assert!(matches!(
            parse_tron("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u"),
            Err(AddressError::TronChecksum(_))
        ));
        assert!(matches!(
            parse_tron("0xa614f803b6fd780986a42c78ec9c7f77e6ded13c"),
            Err(AddressError::NotTron(_))
        ));
        // A valid Base58Check string with Bitcoin's version byte is not a TRON address.
        assert!(matches!(
            parse_tron("1BoatSLRHtKNngkdXEeobR76b53LETtpyT"),
            Err(AddressError::NotTron(_))
        ));
    }

    #[test]
    fn eip55_is_checked_and_produced() {
        // The EIP-55 specification's own examples.
        for a in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let b = parse_evm(a).expect("valid");
            assert_eq!(eip55(&b), a);
        }
        assert!(matches!(
            parse_evm("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),
            Err(AddressError::Checksum(..))
        ));
        assert!(parse_evm("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").is_ok());
        assert!(matches!(parse_evm("0x123"), Err(AddressError::NotHex(_))));
    }
}
