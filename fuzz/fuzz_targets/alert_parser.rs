//! Any text, with any sender id, through the bank alert templates: no panic, and anything
//! judged money carries a positive amount.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use paywatch::watch::upi::templates::Parser;

static PARSER: OnceLock<Option<Parser>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some(parser) = PARSER.get_or_init(|| Parser::builtin().ok()) else {
        return;
    };
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // First line: the sender id (empty for none); the rest: the alert.
    let (sender, text) = s.split_once('\n').unwrap_or(("", s));
    let a = parser.parse((!sender.is_empty()).then_some(sender), text);
    if a.is_money() {
        assert!(a.amount_paise.is_some_and(|p| p > 0));
    }
    let _ = paywatch::watch::upi::alert::parse_amount_paise(text);
});
