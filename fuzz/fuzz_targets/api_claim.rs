//! Any bytes as a `POST /c/{id}/claim` body, JSON or form: no panic, and an accepted claim is
//! exactly a 12-digit UTR or a 32-byte transaction hash in lower case.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paywatch::api::parse_claim;

fuzz_target!(|data: &[u8]| {
    for is_form in [false, true] {
        if let Ok(r) = parse_claim(data, is_form) {
            if let Some(u) = r.strip_prefix("upi:") {
                assert!(
                    u.len() == 12 && u.bytes().all(|b| b.is_ascii_digit()),
                    "{r}"
                );
            } else if let Some(t) = r.strip_prefix("tx:0x") {
                assert!(
                    t.len() == 64 && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                    "{r}"
                );
            } else {
                panic!("unexpected reference {r:?}");
            }
        }
    }
});
