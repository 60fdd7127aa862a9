//! Any bytes as a `POST /v1/upi/credits` body (API key): no panic, an answer either way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paywatch::api::upi::parse_alert;

fuzz_target!(|data: &[u8]| {
    let _ = parse_alert(data, 1_700_000_000_000);
});
