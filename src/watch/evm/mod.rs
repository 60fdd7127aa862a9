//! The chain watcher: ERC-20 `Transfer` logs on EVM chains (and TRON's Ethereum-compatible
//! JSON-RPC), counted once final enough and reverted when a reorg removes them.

pub mod claim;
pub mod decode;
pub mod heads;
pub mod preset;
pub mod rpc;
pub mod status;
pub mod watcher;
