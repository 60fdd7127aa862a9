//! The `xpub` strategy: a fresh receiving address per session, derived from the merchant's
//! extended public key (BIP32 public derivation, `<xpub>/i`). No private key is ever on the
//! server: an extended private key given as an xpub is refused.

use std::str::FromStr;

use bip32::{ChildNumber, ExtendedKey, XPub};
use sha3::{Digest, Keccak256};
use thiserror::Error;

/// Why an extended key or a derivation was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum XpubError {
    #[error("is not an extended public key (xpub…): {0}")]
    Malformed(String),
    #[error(
        "is an extended PRIVATE key: give the xpub of the account (m/44'/60'/0'/0), never a private key"
    )]
    Private,
    #[error("index {0} cannot be derived (hardened or invalid child)")]
    Index(u32),
}

/// A parsed extended public key, ready to derive receiving addresses.
#[derive(Clone)]
pub struct Xpub {
    key: XPub,
    text: String,
}

impl std::fmt::Debug for Xpub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Xpub({})", self.text)
    }
}

impl PartialEq for Xpub {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Xpub {}

impl Xpub {
    pub fn parse(text: &str) -> Result<Xpub, XpubError> {
        let extended =
            ExtendedKey::from_str(text).map_err(|e| XpubError::Malformed(e.to_string()))?;
        if !extended.prefix.is_public() {
            return Err(XpubError::Private);
        }
        let key = XPub::try_from(extended).map_err(|e| XpubError::Malformed(e.to_string()))?;
        Ok(Xpub {
            key,
            text: text.to_owned(),
        })
    }

    /// The text the merchant configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The 20-byte address of child `index` (non-hardened): Keccak-256 of the uncompressed public
    /// key, last 20 bytes, as Ethereum and TRON both define it.
    pub fn address(&self, index: u32) -> Result<[u8; 20], XpubError> {
        let child_number = ChildNumber::new(index, false).map_err(|_| XpubError::Index(index))?;
        let child = self
            .key
            .derive_child(child_number)
            .map_err(|_| XpubError::Index(index))?;
        let point = child.public_key().to_encoded_point(false);
        let hash = Keccak256::digest(&point.as_bytes()[1..]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::address::eip55;

    /// The xpub at m/44'/60'/0'/0 of anvil's default mnemonic ("test test … junk"); the test below
    /// derives it from the mnemonic again, so the constant cannot drift from what it claims.
    const ANVIL_ACCOUNT_XPUB: &str = "xpub6DyUKdwoLWmUJ4Tn9Bbsdtx7B5Ws18mEN19e5HT52ikE53FiUheSQXrZUNPovqfyKmw4579A1Mm3GXXKM39N64uooBfJ4tNAzFsEbodRTx4";

    #[test]
    fn derives_anvils_default_accounts() {
        // m/44'/60'/0'/0 of "test test test test test test test test test test test junk".
        let x = Xpub::parse(ANVIL_ACCOUNT_XPUB).expect("parses");
        assert_eq!(
            eip55(&x.address(0).expect("derives")),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        assert_eq!(
            eip55(&x.address(1).expect("derives")),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        );
    }

    #[test]
    fn the_constant_is_anvils_account_xpub() {
        use bip32::{Prefix, XPrv};
        // BIP39: the seed is PBKDF2-HMAC-SHA512(phrase, "mnemonic" ‖ passphrase, 2048 rounds).
        let phrase = "test test test test test test test test test test test junk";
        let mut seed = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<sha2::Sha512>(phrase.as_bytes(), b"mnemonic", 2048, &mut seed);
        let xprv =
            XPrv::derive_from_path(seed, &"m/44'/60'/0'/0".parse().expect("path")).expect("derive");
        assert_eq!(
            XPub::from(&xprv).to_string(Prefix::XPUB).as_str(),
            ANVIL_ACCOUNT_XPUB
        );
    }

    #[test]
    fn refuses_private_and_malformed_keys() {
        let xprv = "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi";
        assert_eq!(Xpub::parse(xprv), Err(XpubError::Private));
        assert!(matches!(
            Xpub::parse("xpub-not-a-key"),
            Err(XpubError::Malformed(_))
        ));
        assert!(Xpub::parse(ANVIL_ACCOUNT_XPUB).is_ok());
    }
}
