//! Payment methods as the merchant's configuration resolves them: what rail, where money goes,
//! and how each session gets a (pay_to, payable_amount) pair of its own.

use serde::{Deserialize, Serialize};

use crate::domain::address;
use crate::domain::xpub::Xpub;

/// Currencies a session can be priced in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Currency {
    Inr,
    Usd,
}

impl Currency {
    pub fn as_str(self) -> &'static str {
        match self {
            Currency::Inr => "inr",
            Currency::Usd => "usd",
        }
    }

    pub fn parse(s: &str) -> Option<Currency> {
        match s {
            "inr" => Some(Currency::Inr),
            "usd" => Some(Currency::Usd),
            _ => None,
        }
    }
}

/// Which way a unique amount moves away from the requested one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The customer pays a little more (the merchant never receives less than asked).
    Up,
    /// The customer pays a little less.
    Down,
}

/// How a method hands out (pay_to, payable_amount) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// One destination; the amount varies by `step` base units, at most `window` steps away.
    UniqueAmount {
        pay_to: String,
        step: u128,
        window: u32,
        direction: Direction,
    },
    /// Each awaiting session holds one of the listed destinations; the amount is exact.
    AddressPool { addresses: Vec<String> },
    /// Each session gets a fresh address derived from the merchant's xpub (`<xpub>/i`, `i`
    /// counted per merchant and method); the amount is exact.
    Xpub { xpub: Xpub },
}

/// The rail a method pays on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rail {
    Upi {
        vpa: String,
        payee_name: String,
        merchant_code: Option<String>,
        /// A person's VPA: its links drop the merchant parameters (`mc`, `tr`).
        personal: bool,
    },
    Token {
        /// The config key of the chain (`local`, `polygon`): shown as `network`.
        network: String,
        chain_id: u64,
        symbol: String,
        contract: String,
        decimals: u32,
        confirmations: u32,
        /// Address format at the edges: EVM hex, or TRON Base58Check.
        tron: bool,
    },
}

/// One enabled payment method of one merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// `upi`, `usdt_polygon`, …: the name merchants use in `payment_methods`.
    pub name: String,
    pub rail: Rail,
    pub currency: Currency,
    pub strategy: Strategy,
    /// Test rails pay only test sessions, live rails only live ones.
    pub test: bool,
    /// A payment short of the payable amount by at most this many base units still counts as paid.
    pub underpayment_tolerance: u128,
}

impl Method {
    /// Decimal places of the method's base unit (paise: 2).
    pub fn decimals(&self) -> u32 {
        match &self.rail {
            Rail::Upi { .. } => 2,
            Rail::Token { decimals, .. } => *decimals,
        }
    }

    /// Confirmations a payment needs before the session completes (UPI credits are final).
    pub fn confirmations(&self) -> u32 {
        match &self.rail {
            Rail::Upi { .. } => 0,
            Rail::Token { confirmations, .. } => *confirmations,
        }
    }

    /// The physical destination a reservation is keyed by: shared by every merchant, method and
    /// mode that could receive money at the same place, so no two of them ever hold the same pair.
    pub fn destination_key(&self, pay_to: &str) -> String {
        destination_key(&self.rail, pay_to)
    }
}

/// See [`Method::destination_key`].
pub fn destination_key(rail: &Rail, pay_to: &str) -> String {
    match rail {
        Rail::Upi { .. } => format!("upi:{}", pay_to.to_ascii_lowercase()),
        Rail::Token {
            chain_id,
            contract,
            tron,
            ..
        } => token_destination(
            *chain_id,
            &address::internal(contract, *tron),
            &address::internal(pay_to, *tron),
        ),
    }
}

/// The destination key of a token transfer: chain, contract and recipient in internal form
/// (`0x` + lowercase hex), whatever the rail shows at its edges.
pub fn token_destination(chain_id: u64, contract_hex: &str, to_hex: &str) -> String {
    format!("evm:{chain_id}:{contract_hex}:{to_hex}")
}
