//! Object ids: a type prefix, then 8 base62 characters of the creation time in milliseconds and
//! 14 random base62 characters (83 random bits, above the contract's 72). The time prefix makes
//! ids sort by creation, so new records append to the end of the B-tree instead of dirtying a
//! random page each: commits stay small and as fast with a million rows as with a thousand.

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Random base62 text of `len` characters from the OS-seeded thread RNG.
pub fn random_base62(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Fixed-width base62 of `value` (`width` characters, most significant first), so that the
/// text order is the numeric order (the alphabet is in ASCII order).
fn base62_fixed(mut value: u64, width: usize, out: &mut String) {
    let mut buf = vec![b'0'; width];
    for slot in buf.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out.extend(buf.into_iter().map(char::from));
}

/// A new id such as `cs_0Sx3kQ1b…`.
pub fn new_id(prefix: &str) -> String {
    let ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let mut s = String::with_capacity(prefix.len() + 23);
    s.push_str(prefix);
    s.push('_');
    base62_fixed(ms, 8, &mut s);
    s.push_str(&random_base62(14));
    s
}

/// The smallest id with `prefix` created at `ms`: ids below it were created earlier (what the
/// retention pruner ranges up to).
pub fn id_floor(prefix: &str, ms: i64) -> String {
    let mut s = String::with_capacity(prefix.len() + 9);
    s.push_str(prefix);
    s.push('_');
    base62_fixed(u64::try_from(ms).unwrap_or(0), 8, &mut s);
    s
}

/// When an id made by [`new_id`] was created, in milliseconds.
pub fn created_ms(id: &str) -> Option<i64> {
    let body = id.split_once('_')?.1.get(..8)?;
    let mut v: u64 = 0;
    for b in body.bytes() {
        let d = ALPHABET.iter().position(|a| *a == b)?;
        v = v.checked_mul(62)?.checked_add(d as u64)?;
    }
    i64::try_from(v).ok()
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
        let ms = created_ms(&a).expect("time");
        assert!(id_floor("cs", ms).as_str() <= a.as_str());
        assert!(id_floor("cs", ms + 1).as_str() > a.as_str());
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let a = new_id("cs");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("cs");
        assert!(a[..11] < b[..11], "{a} {b}");
        let mut x = String::new();
        let mut y = String::new();
        base62_fixed(61, 3, &mut x);
        base62_fixed(62, 3, &mut y);
        assert_eq!((x.as_str(), y.as_str()), ("00z", "010"));
        assert!(x < y);
    }
}
