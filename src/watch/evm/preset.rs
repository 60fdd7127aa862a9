//! Built-in chain presets: `watchers/chains/*.toml`, embedded in the binary. A `[chains.NAME]`
//! entry starts from the preset of its name (or its `preset = "…"`) and overrides any key.

use crate::config::ChainConfig;

/// (name, TOML text) of every preset.
const PRESETS: [(&str, &str); 7] = [
    (
        "arbitrum",
        include_str!("../../../watchers/chains/arbitrum.toml"),
    ),
    ("base", include_str!("../../../watchers/chains/base.toml")),
    ("bsc", include_str!("../../../watchers/chains/bsc.toml")),
    (
        "ethereum",
        include_str!("../../../watchers/chains/ethereum.toml"),
    ),
    (
        "optimism",
        include_str!("../../../watchers/chains/optimism.toml"),
    ),
    (
        "polygon",
        include_str!("../../../watchers/chains/polygon.toml"),
    ),
    ("tron", include_str!("../../../watchers/chains/tron.toml")),
];

/// The preset called `name`, if there is one.
pub fn find(name: &str) -> Option<ChainConfig> {
    let (_, text) = PRESETS.iter().find(|(n, _)| *n == name)?;
    // The presets are checked to parse by the test below; a broken one is simply absent.
    toml::from_str(text).ok()
}

/// The names of every preset, for error messages.
pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::address;

    #[test]
    fn every_preset_parses_and_is_complete() {
        for (name, text) in PRESETS {
            let c: ChainConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let tron = c.tron.unwrap_or(false);
            let contract = c.token_contract.as_deref().expect("contract");
            let bytes = address::parse(contract, tron).unwrap_or_else(|e| panic!("{name}: {e}"));
            // Stored in its checksummed edge form, so a typo in a preset is caught here.
            assert_eq!(address::display(&bytes, tron), contract, "{name}");
            assert!(c.chain_id.is_some() && c.decimals.is_some(), "{name}");
            assert!(c.confirmations.is_some_and(|n| n >= 1), "{name}");
            assert_eq!(c.test, Some(false), "{name} is a live chain");
            assert!(
                c.rpc_urls.is_empty(),
                "{name}: RPC URLs are the operator's choice"
            );
        }
        assert_eq!(
            find("bsc").and_then(|c| c.decimals),
            Some(18),
            "USDT has 18 decimals on BSC"
        );
        assert_eq!(find("tron").and_then(|c| c.tron), Some(true));
        assert!(find("nope").is_none());
    }
}
