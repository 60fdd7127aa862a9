//! Any text as config.toml, with and without environment overrides: the loader never panics
//! and every refusal names where the problem is.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The last line, when it looks like KEY=value, doubles as an environment override.
    let env: Vec<(String, String)> = text
        .lines()
        .last()
        .and_then(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("PAYWATCH_"))
        .map(|(k, v)| vec![(k.to_owned(), v.to_owned())])
        .unwrap_or_default();
    for env in [&[][..], &env[..]] {
        if let Err(e) = paywatch::config::parse("fuzz.toml", text, env) {
            assert!(!e.to_string().is_empty());
        }
    }
});
