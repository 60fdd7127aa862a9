//! ERC-20 `Transfer(address indexed from, address indexed to, uint256 value)` logs, decoded
//! without allocating: pure, and the part of the watcher that runs once per log.

use alloy::primitives::{B256, b256};

/// `keccak256("Transfer(address,address,uint256)")`.
pub const TRANSFER_TOPIC: B256 =
    b256!("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");

/// One decoded transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub from: [u8; 20],
    pub to: [u8; 20],
    /// Base units. A value beyond u128 is no real payment and is not decoded.
    pub value: u128,
}

/// Decodes a standard `Transfer` log: three topics (signature, from, to) with clean address
/// padding, and a 32-byte value. Anything else (ERC-721's four topics, a non-standard token that
/// does not index its addresses, a dirty padding) is `None`.
pub fn decode_transfer(topics: &[B256], data: &[u8]) -> Option<Transfer> {
    let [sig, from, to] = topics else {
        return None;
    };
    if *sig != TRANSFER_TOPIC || data.len() != 32 {
        return None;
    }
    let from = address_of(from)?;
    let to = address_of(to)?;
    if data[..16].iter().any(|b| *b != 0) {
        return None;
    }
    let mut v = [0u8; 16];
    v.copy_from_slice(&data[16..]);
    Some(Transfer {
        from,
        to,
        value: u128::from_be_bytes(v),
    })
}

/// The address in an indexed topic (12 zero bytes, then 20).
fn address_of(topic: &B256) -> Option<[u8; 20]> {
    let b = topic.as_slice();
    if b[..12].iter().any(|x| *x != 0) {
        return None;
    }
    let mut a = [0u8; 20];
    a.copy_from_slice(&b[12..]);
    Some(a)
}

/// The topic that filters logs by recipient: the address left-padded to 32 bytes.
pub fn address_topic(addr: &[u8; 20]) -> B256 {
    let mut t = [0u8; 32];
    t[12..].copy_from_slice(addr);
    B256::from(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address, U256, keccak256};
    use alloy::sol;
    use alloy::sol_types::SolEvent;

    sol! {
        event Transfer(address indexed from, address indexed to, uint256 value);
    }

    #[test]
    fn matches_the_abi_encoding() {
        assert_eq!(
            TRANSFER_TOPIC,
            keccak256("Transfer(address,address,uint256)")
        );
        assert_eq!(TRANSFER_TOPIC, Transfer::SIGNATURE_HASH);
        let from = Address::repeat_byte(0x11);
        let to = Address::repeat_byte(0x22);
        let ev = Transfer {
            from,
            to,
            value: U256::from(149_990_137u64),
        };
        let log = ev.encode_log_data();
        let got = decode_transfer(log.topics(), &log.data).expect("decodes");
        assert_eq!(got.from, from.0.0);
        assert_eq!(got.to, to.0.0);
        assert_eq!(got.value, 149_990_137);
        assert_eq!(address_topic(&to.0.0), log.topics()[2]);
    }

    #[test]
    fn refuses_what_is_not_a_standard_transfer() {
        let t = address_topic(&[7; 20]);
        let value = [0u8; 32];
        assert!(decode_transfer(&[TRANSFER_TOPIC, t, t], &value).is_some());
        // ERC-721 Transfer: the token id is a fourth topic, no data.
        assert!(decode_transfer(&[TRANSFER_TOPIC, t, t, t], &[]).is_none());
        // Unindexed addresses.
        assert!(decode_transfer(&[TRANSFER_TOPIC], &[0u8; 96]).is_none());
        // Another event.
        assert!(decode_transfer(&[t, t, t], &value).is_none());
        // Dirty padding in an address topic.
        let mut dirty = t;
        dirty.0[0] = 1;
        assert!(decode_transfer(&[TRANSFER_TOPIC, t, dirty], &value).is_none());
        // A value above u128.
        let mut huge = [0u8; 32];
        huge[0] = 1;
        assert!(decode_transfer(&[TRANSFER_TOPIC, t, t], &huge).is_none());
    }
}
