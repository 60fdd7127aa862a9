//! Regexes compiled twice: ASCII-only for ASCII texts, Unicode for the rest.
//!
//! Nearly every alert is plain ASCII, yet the patterns are Unicode-aware (`\b`, `\s`, `(?i)`,
//! `.`). Unicode classes make the automata several times larger, and a Unicode `\b` makes the
//! capture engines look each character up in the Unicode tables. On an ASCII text the ASCII
//! build of the same pattern matches exactly the same spans (every Unicode class agrees with
//! its ASCII counterpart on ASCII characters), so it is used whenever the text is ASCII; texts
//! with `₹` or other non-ASCII characters keep the Unicode build and its exact semantics.
//!
//! A pattern whose ASCII build does not compile (an operator's `\p{…}` class, say) keeps the
//! Unicode build for every text.
//!
//! The Unicode builds are compiled at start (so a bad pattern still stops the start) but kept
//! only from the first non-ASCII text on: they were 12 of a parser's 28.5 MB, and most alerts
//! never need them (the first non-ASCII alert pays their compilation once).

use std::sync::OnceLock;

use regex::bytes;
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

/// The lazy DFA cache each compiled pattern may grow to. regex's default (2 MiB) is too small
/// for the large case-insensitive sets here: the cache is cleared and rebuilt mid-text, and
/// parsing falls back to the slower engines (about 2.5x slower on the corpus). The cache
/// grows only with the states a text actually visits.
pub(crate) const DFA_CACHE: usize = 32 << 20;

/// An alert text with its ASCII-ness, computed once per parse rather than per regex.
#[derive(Debug, Clone, Copy)]
pub struct Text<'t> {
    s: &'t str,
    ascii: bool,
}

impl<'t> Text<'t> {
    /// Wraps `s`.
    pub fn new(s: &'t str) -> Text<'t> {
        Text {
            s,
            ascii: s.is_ascii(),
        }
    }

    /// The text itself.
    pub fn as_str(self) -> &'t str {
        self.s
    }
}

/// A match: its byte range in the text and the matched text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'t> {
    start: usize,
    end: usize,
    s: &'t str,
}

impl<'t> Found<'t> {
    fn new(text: &'t str, start: usize, end: usize) -> Option<Found<'t>> {
        text.get(start..end).map(|s| Found { start, end, s })
    }

    fn from_match(m: regex::Match<'t>) -> Found<'t> {
        Found {
            start: m.start(),
            end: m.end(),
            s: m.as_str(),
        }
    }

    /// Byte offset of the match start.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Byte offset just past the match.
    pub fn end(&self) -> usize {
        self.end
    }

    /// The matched text.
    pub fn as_str(&self) -> &'t str {
        self.s
    }
}

/// One pattern, in both builds.
#[derive(Debug, Clone)]
pub struct Re {
    pattern: String,
    /// Built on first use when there is an ASCII build, at once otherwise.
    unicode: OnceLock<Option<Regex>>,
    ascii: Option<bytes::Regex>,
}

fn unicode_build(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern).dfa_size_limit(DFA_CACHE).build()
}

impl Re {
    /// Compiles `pattern` (regex crate syntax). An error is the Unicode build's.
    pub fn new(pattern: &str) -> Result<Re, regex::Error> {
        let unicode = unicode_build(pattern)?;
        let ascii = bytes::RegexBuilder::new(pattern)
            .unicode(false)
            .dfa_size_limit(DFA_CACHE)
            .build()
            .ok();
        let cell = OnceLock::new();
        if ascii.is_none() {
            let _ = cell.set(Some(unicode));
        }
        Ok(Re {
            pattern: pattern.to_owned(),
            unicode: cell,
            ascii,
        })
    }

    /// The Unicode build (compiled at construction, so it builds again; `None` only if it
    /// did not, which `new` rules out).
    fn unicode(&self) -> Option<&Regex> {
        self.unicode
            .get_or_init(|| unicode_build(&self.pattern).ok())
            .as_ref()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The capture group names, by index (the same in both builds).
    pub fn capture_names(&self) -> Box<dyn Iterator<Item = Option<&str>> + '_> {
        match (&self.ascii, self.unicode()) {
            (Some(a), _) => Box::new(a.capture_names()),
            (None, Some(u)) => Box::new(u.capture_names()),
            (None, None) => Box::new(std::iter::empty()),
        }
    }

    /// Whether ASCII texts get the fast build.
    #[cfg(test)]
    pub(crate) fn has_ascii(&self) -> bool {
        self.ascii.is_some()
    }

    fn ascii_for(&self, text: Text<'_>) -> Option<&bytes::Regex> {
        self.ascii.as_ref().filter(|_| text.ascii)
    }

    /// Whether the pattern matches anywhere in `text`.
    pub fn is_match(&self, text: Text<'_>) -> bool {
        match self.ascii_for(text) {
            Some(a) => a.is_match(text.s.as_bytes()),
            None => self.unicode().is_some_and(|u| u.is_match(text.s)),
        }
    }

    /// The leftmost-first match.
    pub fn find<'t>(&self, text: Text<'t>) -> Option<Found<'t>> {
        match self.ascii_for(text) {
            Some(a) => a
                .find(text.s.as_bytes())
                .and_then(|m| Found::new(text.s, m.start(), m.end())),
            None => self.unicode()?.find(text.s).map(Found::from_match),
        }
    }

    /// Every successive non-overlapping match.
    pub fn find_iter<'r, 't>(&'r self, text: Text<'t>) -> impl Iterator<Item = Found<'t>> + 'r
    where
        't: 'r,
    {
        let (ascii, unicode) = match self.ascii_for(text) {
            Some(a) => (Some(a.find_iter(text.s.as_bytes())), None),
            None => (None, self.unicode().map(|u| u.find_iter(text.s))),
        };
        let s = text.s;
        ascii
            .into_iter()
            .flatten()
            .filter_map(move |m| Found::new(s, m.start(), m.end()))
            .chain(unicode.into_iter().flatten().map(Found::from_match))
    }

    /// The groups of the leftmost-first match.
    pub fn captures<'t>(&self, text: Text<'t>) -> Option<Caps<'t>> {
        match self.ascii_for(text) {
            Some(a) => a.captures(text.s.as_bytes()).map(|c| Caps {
                text: text.s,
                inner: CapsInner::Ascii(c),
            }),
            None => self.unicode()?.captures(text.s).map(|c| Caps {
                text: text.s,
                inner: CapsInner::Unicode(c),
            }),
        }
    }
}

/// The groups of one match, from either build.
#[derive(Debug)]
pub struct Caps<'t> {
    text: &'t str,
    inner: CapsInner<'t>,
}

#[derive(Debug)]
enum CapsInner<'t> {
    Unicode(regex::Captures<'t>),
    Ascii(bytes::Captures<'t>),
}

impl<'t> Caps<'t> {
    /// Group `i` (0 is the whole match), when it took part.
    pub fn get(&self, i: usize) -> Option<Found<'t>> {
        match &self.inner {
            CapsInner::Unicode(c) => c.get(i).map(Found::from_match),
            CapsInner::Ascii(c) => c
                .get(i)
                .and_then(|m| Found::new(self.text, m.start(), m.end())),
        }
    }

    /// The group called `name`, when it took part.
    pub fn name(&self, name: &str) -> Option<Found<'t>> {
        match &self.inner {
            CapsInner::Unicode(c) => c.name(name).map(Found::from_match),
            CapsInner::Ascii(c) => c
                .name(name)
                .and_then(|m| Found::new(self.text, m.start(), m.end())),
        }
    }
}

/// A set of patterns, in both builds (the Unicode one kept from its first use, as for `Re`).
#[derive(Debug, Clone)]
pub struct ReSet {
    patterns: Vec<String>,
    unicode: OnceLock<Option<RegexSet>>,
    ascii: Option<bytes::RegexSet>,
}

fn unicode_set(patterns: &[String]) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns)
        .dfa_size_limit(DFA_CACHE)
        .build()
}

impl ReSet {
    /// Compiles every pattern into one set.
    pub fn new<I, S>(patterns: I) -> Result<ReSet, regex::Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns: Vec<String> = patterns
            .into_iter()
            .map(|p| p.as_ref().to_owned())
            .collect();
        let unicode = unicode_set(&patterns)?;
        let ascii = bytes::RegexSetBuilder::new(&patterns)
            .unicode(false)
            .dfa_size_limit(DFA_CACHE)
            .build()
            .ok();
        let cell = OnceLock::new();
        if ascii.is_none() {
            let _ = cell.set(Some(unicode));
        }
        Ok(ReSet {
            patterns,
            unicode: cell,
            ascii,
        })
    }

    fn unicode(&self) -> Option<&RegexSet> {
        self.unicode
            .get_or_init(|| unicode_set(&self.patterns).ok())
            .as_ref()
    }

    /// Whether ASCII texts get the fast build.
    #[cfg(test)]
    pub(crate) fn has_ascii(&self) -> bool {
        self.ascii.is_some()
    }

    /// Whether any pattern matches.
    pub fn is_match(&self, text: Text<'_>) -> bool {
        match self.ascii.as_ref().filter(|_| text.ascii) {
            Some(a) => a.is_match(text.s.as_bytes()),
            None => self.unicode().is_some_and(|u| u.is_match(text.s)),
        }
    }

    /// The indices of every pattern that matches, in ascending order.
    pub fn matches(&self, text: Text<'_>) -> Vec<usize> {
        match self.ascii.as_ref().filter(|_| text.ascii) {
            Some(a) => a.matches(text.s.as_bytes()).into_iter().collect(),
            None => self
                .unicode()
                .map(|u| u.matches(text.s).into_iter().collect())
                .unwrap_or_default(),
        }
    }

    /// The lowest-index pattern that matches.
    pub fn first(&self, text: Text<'_>) -> Option<usize> {
        match self.ascii.as_ref().filter(|_| text.ascii) {
            Some(a) => a.matches(text.s.as_bytes()).iter().next(),
            None => self.unicode()?.matches(text.s).iter().next(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ascii_build_compiles_unicode_literals_and_classes() {
        let re = Re::new(r"(?i)(?:\b(?:rs|inr)|₹)\s*[.:]?\s*(?P<a>\d+)[^0-9]{0,3}.").unwrap();
        assert!(re.ascii.is_some());
        for s in ["Rs. 500 x", "₹500 x", "INR 7 ₹ "] {
            let t = Text::new(s);
            let u = re
                .unicode()
                .unwrap()
                .captures(s)
                .map(|c| c.name("a").unwrap().range());
            let got = re
                .captures(t)
                .and_then(|c| c.name("a"))
                .map(|f| f.start()..f.end());
            assert_eq!(got, u, "{s}");
        }
    }

    #[test]
    fn non_ascii_texts_use_unicode_semantics() {
        // Unicode \w takes é; the ASCII build would not: a non-ASCII text keeps Unicode.
        let re = Re::new(r"\w+").unwrap();
        assert_eq!(re.find(Text::new("café")).unwrap().as_str(), "café");
        assert_eq!(re.find(Text::new("cafe")).unwrap().as_str(), "cafe");
    }

    #[test]
    fn unicode_only_patterns_still_work() {
        let re = Re::new(r"\p{Greek}+").unwrap();
        assert!(re.ascii.is_none());
        assert!(!re.is_match(Text::new("abc")));
        assert!(re.is_match(Text::new("αβγ")));
        let set = ReSet::new([r"\p{Greek}", "b"]).unwrap();
        assert!(set.ascii.is_none());
        assert_eq!(set.matches(Text::new("abc")), vec![1]);
    }

    #[test]
    fn sets_agree() {
        let set = ReSet::new([r"(?i)\bdebit", r"\bsent\b", r"(?i)credit"]).unwrap();
        let t = Text::new("Credited; sent by X");
        assert!(set.is_match(t));
        assert_eq!(set.matches(t), vec![1, 2]);
        assert_eq!(set.first(t), Some(1));
        assert_eq!(set.first(Text::new("nothing")), None);
    }
}
