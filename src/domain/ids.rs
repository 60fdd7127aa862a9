//! Object ids: a type prefix plus 22 base62 characters (about 131 random bits).

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Random base62 text of `len` characters from the OS-seeded thread RNG.
pub fn random_base62(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// A new id such as `cs_4fJ…`.
pub fn new_id(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 23);
    s.push_str(prefix);
    s.push('_');
    s.push_str(&random_base62(22));
    s
}

/// True when `id` has the given prefix and a plausible body; a cheap guard before any lookup.
pub fn looks_like(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|body| {
            (8..=64).contains(&body.len()) && body.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = new_id("cs");
        let b = new_id("cs");
        assert!(looks_like(&a, "cs"));
        assert!(!looks_like(&a, "py"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 25);
    }
}
