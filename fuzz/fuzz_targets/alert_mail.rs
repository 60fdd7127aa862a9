//! Any bytes as an alert e-mail: judging it never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use paywatch::watch::upi::templates::Parser;

static PARSER: OnceLock<Option<Parser>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    if let Some(parser) = PARSER.get_or_init(|| Parser::builtin().ok()) {
        let accounts = ["1234".to_owned()];
        let _ = paywatch::watch::upi::mail::judge(data, parser, None, &[]);
        let _ = paywatch::watch::upi::mail::judge(data, parser, Some("mx.example"), &accounts);
    }
});
