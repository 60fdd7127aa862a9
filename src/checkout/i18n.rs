//! The page's words in every language it speaks, chosen by `?lang=`, the browser's
//! Accept-Language, or the session's `locale`.
//!
//! The words are data: one TOML file per language under `locales/`, embedded at build time so
//! the single binary carries them, and parsed once at start (`check` fails the start, and the
//! unit tests fail the build, when a file lacks a key). A translator edits those files only.

use std::sync::LazyLock;

use serde::Deserialize;

/// Every locale file, English first (the fallback).
static FILES: &[(&str, &str)] = &[
    ("en", include_str!("../../locales/en.toml")),
    ("ar", include_str!("../../locales/ar.toml")),
    ("bn", include_str!("../../locales/bn.toml")),
    ("de", include_str!("../../locales/de.toml")),
    ("es", include_str!("../../locales/es.toml")),
    ("fr", include_str!("../../locales/fr.toml")),
    ("gu", include_str!("../../locales/gu.toml")),
    ("hi", include_str!("../../locales/hi.toml")),
    ("id", include_str!("../../locales/id.toml")),
    ("ja", include_str!("../../locales/ja.toml")),
    ("kn", include_str!("../../locales/kn.toml")),
    ("ko", include_str!("../../locales/ko.toml")),
    ("ml", include_str!("../../locales/ml.toml")),
    ("mr", include_str!("../../locales/mr.toml")),
    ("pa", include_str!("../../locales/pa.toml")),
    ("pt", include_str!("../../locales/pt.toml")),
    ("ru", include_str!("../../locales/ru.toml")),
    ("ta", include_str!("../../locales/ta.toml")),
    ("te", include_str!("../../locales/te.toml")),
    ("tr", include_str!("../../locales/tr.toml")),
    ("ur", include_str!("../../locales/ur.toml")),
    ("vi", include_str!("../../locales/vi.toml")),
    ("zh", include_str!("../../locales/zh.toml")),
];

/// A language the pages speak: its words and how it writes numbers.
#[derive(Debug)]
pub struct Locale {
    /// BCP 47 primary language subtag (`"ta"`).
    pub code: &'static str,
    /// The language's own name for itself (`"தமிழ்"`), for the language menu.
    pub name: String,
    /// Written right to left (Arabic, Urdu): the page is mirrored.
    pub rtl: bool,
    decimal: String,
    group: String,
    grouping: Vec<usize>,
    /// The page's words.
    pub t: Strings,
}

/// The words of the checkout page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strings {
    pub title: String,
    pub pay: String,
    pub choose_method: String,
    pub scan: String,
    pub open_upi: String,
    pub open_wallet: String,
    pub pay_exactly: String,
    pub to: String,
    pub copy: String,
    pub copied: String,
    pub upi_note: String,
    pub token_warning: String,
    pub network: String,
    pub expires_in: String,
    pub status_open: String,
    pub status_processing: String,
    pub status_complete: String,
    pub status_expired: String,
    pub status_canceled: String,
    pub partially_paid: String,
    pub redirecting: String,
    pub back_to_merchant: String,
    pub claim_heading: String,
    pub claim_help: String,
    pub claim_label_upi: String,
    pub claim_label_token: String,
    pub claim_submit: String,
    pub sender_heading: String,
    pub sender_help: String,
    pub sender_label: String,
    pub sender_submit: String,
    pub test_banner: String,
    pub simulate: String,
    pub no_js_refresh: String,
    pub qr_alt: String,
    pub language: String,
    pub link_enter_amount: String,
    pub link_counter_prompt: String,
    pub link_bounds: String,
    pub link_continue: String,
    pub link_amount_invalid: String,
    pub link_closed_title: String,
    pub link_closed_inactive: String,
    pub link_closed_expired: String,
    pub link_closed_spent: String,
    pub rate_label: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    locale: Meta,
    strings: Strings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: String,
    dir: String,
    decimal: String,
    group: String,
    grouping: Vec<usize>,
}

/// A locale file that does not parse, or says something impossible.
#[derive(Debug, thiserror::Error)]
#[error("locales/{code}.toml: {problem}")]
pub struct LocaleError {
    code: &'static str,
    problem: String,
}

fn parse(code: &'static str, text: &str) -> Result<Locale, LocaleError> {
    let bad = |problem: String| LocaleError { code, problem };
    let f: File = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let rtl = match f.locale.dir.as_str() {
        "ltr" => false,
        "rtl" => true,
        other => {
            return Err(bad(format!(
                "locale.dir is {other:?}, want \"ltr\" or \"rtl\""
            )));
        }
    };
    if f.locale.grouping.is_empty() || f.locale.grouping.contains(&0) {
        return Err(bad(
            "locale.grouping must be a list of positive group sizes".into(),
        ));
    }
    Ok(Locale {
        code,
        name: f.locale.name,
        rtl,
        decimal: f.locale.decimal,
        group: f.locale.group,
        grouping: f.locale.grouping,
        t: f.strings,
    })
}

fn load() -> Result<Vec<Locale>, LocaleError> {
    FILES.iter().map(|(code, text)| parse(code, text)).collect()
}

#[allow(clippy::expect_used)] // forced by `check` at start-up, and by the unit tests
static LOCALES: LazyLock<Vec<Locale>> =
    LazyLock::new(|| load().expect("the embedded locale files are checked at start-up"));

/// Parses every embedded locale: called at start so a broken file stops the daemon there,
/// with the file and the problem, instead of on a customer's first page view.
pub fn check() -> Result<(), LocaleError> {
    load().map(|_| ())
}

/// One of the pages' languages (an index into the embedded locales).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lang(usize);

impl Lang {
    /// English, the fallback.
    pub const EN: Lang = Lang(0);

    /// Every language, English first.
    pub fn all() -> impl Iterator<Item = Lang> {
        (0..LOCALES.len()).map(Lang)
    }

    fn locale(self) -> &'static Locale {
        LOCALES.get(self.0).unwrap_or(&LOCALES[0])
    }

    pub fn code(self) -> &'static str {
        self.locale().code
    }

    /// The language's own name.
    pub fn name(self) -> &'static str {
        &self.locale().name
    }

    pub fn rtl(self) -> bool {
        self.locale().rtl
    }

    pub fn strings(self) -> &'static Strings {
        &self.locale().t
    }

    /// `?lang=` wins; then the first supported language in Accept-Language (q > 0); then the
    /// session's `locale`; then English.
    pub fn choose(
        query: Option<&str>,
        accept_language: Option<&str>,
        session: Option<&str>,
    ) -> Lang {
        if let Some(l) = query.and_then(Self::parse) {
            return l;
        }
        let mut prefs: Vec<(f32, Lang)> = accept_language
            .unwrap_or("")
            .split(',')
            .filter_map(|part| {
                let mut it = part.trim().split(';');
                let tag = it.next()?.trim();
                let q = it
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some((q, Self::parse(tag)?))
            })
            .filter(|(q, _)| *q > 0.0)
            .collect();
        prefs.sort_by(|a, b| b.0.total_cmp(&a.0));
        prefs
            .first()
            .map(|p| p.1)
            .or_else(|| session.and_then(Self::parse))
            .unwrap_or(Lang::EN)
    }

    /// A BCP 47 tag's language (`"pt-BR"` → Portuguese, `"zh-Hans-CN"` → Chinese).
    pub fn parse(tag: &str) -> Option<Lang> {
        let primary = tag.split(['-', '_']).next()?.trim().to_ascii_lowercase();
        LOCALES.iter().position(|l| l.code == primary).map(Lang)
    }

    /// `units` as this language writes numbers: its digit groups and decimal sign
    /// (`1,23,456.78` in Hindi, `123.456,78` in German). Display only: amounts a customer
    /// copies into an app stay in the plain `123456.78` form.
    pub fn number(self, plain: &str) -> String {
        let l = self.locale();
        let (int, frac) = plain.split_once('.').unwrap_or((plain, ""));
        let digits: Vec<char> = int.chars().collect();
        let mut groups: Vec<String> = Vec::new();
        let mut end = digits.len();
        let mut sizes = l.grouping.iter();
        let mut size = sizes.next().copied().unwrap_or(3);
        while end > 0 {
            let start = end.saturating_sub(size);
            groups.push(digits[start..end].iter().collect());
            end = start;
            if let Some(&next) = sizes.next() {
                size = next;
            }
        }
        groups.reverse();
        let mut out = groups.join(&l.group);
        if !frac.is_empty() {
            out.push_str(&l.decimal);
            out.push_str(frac);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(code: &str) -> Lang {
        Lang::parse(code).unwrap_or_else(|| panic!("no locale {code}"))
    }

    #[test]
    fn every_locale_file_parses_with_every_string_filled() {
        let all = load().unwrap_or_else(|e| panic!("{e}"));
        assert!(all.len() >= 20, "{} locales", all.len());
        let en = serde_json::to_value(
            toml::from_str::<toml::Value>(FILES[0].1).unwrap()["strings"].clone(),
        )
        .unwrap();
        for (code, text) in FILES {
            let v: toml::Value = toml::from_str(text).unwrap();
            let strings = v["strings"].as_table().unwrap();
            for (k, s) in strings {
                let s = s
                    .as_str()
                    .unwrap_or_else(|| panic!("{code}: {k} is not a string"));
                assert!(!s.trim().is_empty(), "{code}: {k} is empty");
                if *code != "en" && !matches!(k.as_str(), "network") {
                    assert_ne!(Some(s), en[k].as_str(), "{code}: {k} is still English");
                }
            }
        }
    }

    #[test]
    fn a_file_missing_a_key_or_with_an_unknown_one_is_an_error_naming_it() {
        let en = FILES[0].1;
        let missing = en.replace("copied = ", "# copied = ");
        let e = parse("xx", &missing).unwrap_err().to_string();
        assert!(e.contains("locales/xx.toml") && e.contains("copied"), "{e}");
        let extra = format!("{en}\nbogus = \"x\"\n");
        let e = parse("xx", &extra).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let rtl = en.replace("dir = \"ltr\"", "dir = \"up\"");
        assert!(
            parse("xx", &rtl)
                .unwrap_err()
                .to_string()
                .contains("locale.dir")
        );
    }

    #[test]
    fn chooses_language() {
        let hi = lang("hi");
        assert_eq!(
            Lang::choose(None, Some("hi-IN,hi;q=0.9,en;q=0.8"), None),
            hi
        );
        assert_eq!(
            Lang::choose(None, Some("en-US,en;q=0.9,hi;q=0.8"), None),
            Lang::EN
        );
        assert_eq!(Lang::choose(None, Some("xx-XX,hi;q=0.5"), None), hi);
        assert_eq!(Lang::choose(None, Some("xx-XX"), None), Lang::EN);
        assert_eq!(Lang::choose(Some("en"), Some("hi"), None), Lang::EN);
        assert_eq!(Lang::choose(Some("xx"), Some("hi"), None), hi);
        assert_eq!(Lang::choose(None, Some("hi;q=0"), None), Lang::EN);
        assert_eq!(Lang::choose(None, Some("pt-BR"), None), lang("pt"));
        assert_eq!(Lang::choose(None, Some("zh-Hans-CN"), None), lang("zh"));
        // The session's locale only when the browser names nothing we speak.
        assert_eq!(Lang::choose(None, None, Some("ta")), lang("ta"));
        assert_eq!(Lang::choose(None, Some("xx"), Some("ta")), lang("ta"));
        assert_eq!(Lang::choose(None, Some("bn"), Some("ta")), lang("bn"));
        assert_eq!(Lang::choose(Some("ar"), Some("bn"), Some("ta")), lang("ar"));
        assert!(lang("ar").rtl() && lang("ur").rtl() && !lang("hi").rtl());
    }

    #[test]
    fn numbers_in_each_languages_form() {
        assert_eq!(Lang::EN.number("1234567.89"), "1,234,567.89");
        assert_eq!(lang("hi").number("1234567.89"), "12,34,567.89");
        assert_eq!(lang("de").number("1234567.89"), "1.234.567,89");
        assert_eq!(lang("ru").number("1234.50"), "1\u{a0}234,50");
        assert_eq!(Lang::EN.number("149.99"), "149.99");
        assert_eq!(lang("hi").number("999"), "999");
        assert_eq!(lang("ta").number("100000"), "1,00,000");
    }
}
