//! Any bytes as a `POST /v1/webhook_endpoints` body: no panic; an accepted endpoint has an
//! http(s) URL and known event types.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paywatch::api::webhooks::parse_endpoint;

fuzz_target!(|data: &[u8]| {
    let allowed = ["shop.example".to_owned()];
    for list in [&allowed[..], &[]] {
        if let Ok(ep) = parse_endpoint(data, list) {
            // Stored as given: `https:host/x` (no slashes) is accepted, and parsers read it as
            // https://host/x, so the scheme is what is checked here.
            let scheme = ep
                .url
                .split(':')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            assert!(scheme == "http" || scheme == "https", "{}", ep.url);
            assert!(!ep.events.is_empty());
        }
    }
});
