//! Watchers: what sees money arrive. They talk to the rest only through the matcher.

pub mod evm;
pub mod upi;
