//! Any bytes as a `POST /v1/checkout/sessions` body, for a merchant with UPI and two chains, in
//! test and live mode: no panic, and whatever is accepted is within the documented bounds.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use paywatch::api::parse_create;
use paywatch::config::Config;

const CONFIG: &str = r#"
[chains.local]
chain_id = 31337
test = true
rpc_urls = ["http://127.0.0.1:8545"]
token = "USDT"
token_contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
decimals = 6
confirmations = 2

[[merchants]]
id = "demo"
name = "Demo Store"
allowed_domains = ["shop.example"]

[merchants.methods.upi]
vpa = "demo@okbank"

[merchants.methods.usdt_local]
chain = "local"
pay_to = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
"#;

static CFG: OnceLock<Option<Config>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some(cfg) = CFG.get_or_init(|| paywatch::config::parse("fuzz", CONFIG, &[]).ok()) else {
        panic!("the fuzz target's own config does not load");
    };
    let Some(merchant) = cfg.merchant("demo") else {
        panic!("no merchant demo");
    };
    for livemode in [false, true] {
        if let Ok(p) = parse_create(data, merchant, livemode, &cfg.sessions) {
            assert!(p.amount > 0 && p.amount <= paywatch::api::MAX_AMOUNT);
            assert!(!p.methods.is_empty());
            assert!(p.methods.iter().all(|m| m.currency == p.currency));
            assert!(p.expires_in <= 86_400);
            assert!(p.metadata.len() <= 50);
            assert!(
                p.description
                    .as_ref()
                    .is_none_or(|d| d.chars().count() <= 500)
            );
        }
    }
});
