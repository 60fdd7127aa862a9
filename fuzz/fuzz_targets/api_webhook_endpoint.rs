//! Any bytes as a `POST /v1/webhook_endpoints` body: no panic; an accepted endpoint has an
//! http(s) URL on the allow-list and known event types.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paywatch::api::webhooks::parse_endpoint;

fuzz_target!(|data: &[u8]| {
    let allowed = ["shop.example".to_owned()];
    for list in [&allowed[..], &[]] {
        if let Ok(ep) = parse_endpoint(data, list) {
            assert!(ep.url.starts_with("http://") || ep.url.starts_with("https://"));
            assert!(!ep.events.is_empty());
        }
    }
});
