//! Bank alert templates: loading from TOML, compiling once, and parsing alert texts.
//!
//! Formats live in data (`watchers/upi/*.toml`) so that a changed bank SMS is fixed by editing
//! a file, not by shipping code. One file per bank plus `generic.toml`, the fallback that also
//! carries the shared safety net (non-credit words), channel words and field extractors.
//!
//! Parsing order, chosen so that a non-credit can never become money:
//! 1. pick candidate banks: the sender id / email domain, else bank names found in the text;
//! 2. run every candidate's **non-credit** patterns, then the generic non-credit patterns — the
//!    first hit decides (a debit that says "credited" about the payee is a debit);
//! 3. only then run the candidates' credit patterns, then the generic credit patterns.
//!
//! Regexes use the `regex` crate syntax plus four macros expanded at load time:
//! `%CUR%` (a currency marker and its separators: `Rs`, `Rs.`, `Rs:`, `INR`, `₹`),
//! `%AMOUNT%` (capture group `amount`), `%UTR%` (group `utr`: 9–18 digits) and
//! `%VPA%` (group `vpa`). Pattern regexes may only use the groups `amount`, `utr`, `vpa`.
//!
//! Adding a bank: drop `watchers/upi/<bank>.toml` and list it in [`DEFAULT_TEMPLATES`] (a test
//! checks that every file there is listed). Operators override or add banks at run time with
//! [`Parser::with_overrides`]; the daemon reads those files, this module does no I/O.

use std::collections::HashMap;

use super::re::{Caps, Re, ReSet, Text};

use serde::Deserialize;
use thiserror::Error;

use super::alert::{AlertKind, ParsedAlert, parse_amount_paise};
use super::general::{Direction, Reader};

/// The bank registry shipped with paywatch (`watchers/upi/banks.toml`): which DLT SMS headers
/// and alert mail domains belong to which bank. A bank there without a template of its own is
/// read by the fallback template and the general reading.
pub const REGISTRY: TemplateSource<'static> = TemplateSource {
    file: "watchers/upi/banks.toml",
    text: include_str!("../../../watchers/upi/banks.toml"),
};

#[derive(Debug, Deserialize)]
struct RawRegistry {
    #[serde(default)]
    bank: Vec<RawBank>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBank {
    id: String,
    name: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    sms_headers: Vec<String>,
    #[serde(default)]
    mail_domains: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    quirks: Option<String>,
}

/// One template file: its path (for error messages) and its TOML text.
#[derive(Debug, Clone, Copy)]
pub struct TemplateSource<'a> {
    /// Path or name shown in errors, e.g. `watchers/upi/hdfc.toml`.
    pub file: &'a str,
    /// The TOML text.
    pub text: &'a str,
}

macro_rules! builtin {
    ($($name:literal),* $(,)?) => {
        &[$(TemplateSource {
            file: concat!("watchers/upi/", $name),
            text: include_str!(concat!("../../../watchers/upi/", $name)),
        }),*]
    };
}

/// The templates shipped with paywatch, embedded at build time.
pub const DEFAULT_TEMPLATES: &[TemplateSource<'static>] = builtin!(
    "generic.toml",
    "sbi.toml",
    "hdfc.toml",
    "icici.toml",
    "axis.toml",
    "kotak.toml",
    "pnb.toml",
    "bob.toml",
    "canara.toml",
    "union.toml",
    "idfc.toml",
    "yes.toml",
    "airtel.toml",
    "paytm.toml",
    "uco.toml",
);

/// The bank name of the fallback template.
pub const GENERIC_BANK: &str = "generic";

/// Why a template set could not be loaded. Messages name the file, the template and the key.
#[derive(Debug, Error)]
pub enum TemplateError {
    /// The file is not valid TOML or does not have the template shape.
    #[error("{file}: invalid template: {source}")]
    Toml {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    /// A regex did not compile.
    #[error("{file}: template {template}: {key}: invalid regex: {source}")]
    Regex {
        file: String,
        template: String,
        key: String,
        #[source]
        source: Box<regex::Error>,
    },
    /// A value is present but not acceptable.
    #[error("{file}: template {template}: {key}: {problem}")]
    Invalid {
        file: String,
        template: String,
        key: String,
        problem: String,
    },
    /// An operator SMS header (`[upi.sms_headers]`) is not acceptable.
    #[error("{header}: {problem}")]
    Header { header: String, problem: String },
    /// No template has `bank = "generic"`, so there is no fallback.
    #[error("no fallback template: one template must have bank = \"{GENERIC_BANK}\"")]
    NoGeneric,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    bank: String,
    #[serde(default)]
    sms_senders: Vec<String>,
    #[serde(default)]
    email_domains: Vec<String>,
    #[serde(default)]
    markers: Vec<String>,
    #[serde(default)]
    patterns: Vec<RawPattern>,
    #[serde(default)]
    channels: Vec<RawChannel>,
    #[serde(default)]
    extract: RawExtract,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPattern {
    name: String,
    kind: String,
    regex: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    kind: String,
    regex: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtract {
    #[serde(default)]
    amount: Vec<String>,
    #[serde(default)]
    utr: Vec<String>,
    #[serde(default)]
    vpa: Vec<String>,
}

/// What a pattern concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternKind {
    Fixed(AlertKind),
    /// `kind = "credit"`: a credit whose channel is decided by the channel words, else by
    /// whether a reference was found (`credit_txn_id`) or not (`credit_no_ref`).
    AutoCredit,
}

#[derive(Debug)]
struct Pattern {
    label: String,
    kind: PatternKind,
    regex: Re,
    amount: Option<usize>,
    utr: Option<usize>,
    vpa: Option<usize>,
}

/// Patterns of one phase of one template, with a set to find the first hit in one pass.
#[derive(Debug)]
struct Group {
    set: ReSet,
    patterns: Vec<Pattern>,
}

impl Group {
    fn first(&self, text: Text<'_>) -> Option<&Pattern> {
        if self.patterns.is_empty() {
            return None;
        }
        // Most texts match none of a phase's patterns: a plain search says so cheaper than
        // the overlapping one that names every match.
        if !self.set.is_match(text) {
            return None;
        }
        let index = self.set.first(text)?;
        self.patterns.get(index)
    }
}

#[derive(Debug, Default)]
struct Extractors {
    amount: Vec<Re>,
    utr: Vec<Re>,
    vpa: Vec<Re>,
}

#[derive(Debug)]
struct Template {
    bank: String,
    email_domains: Vec<String>,
    marker: Option<Re>,
    non_credit: Group,
    credit: Group,
    channels: Vec<(Re, AlertKind)>,
    extract: Extractors,
}

/// Compiled templates; build once, share freely (`Parser` is `Send + Sync`).
#[derive(Debug)]
pub struct Parser {
    banks: Vec<Template>,
    generic: Template,
    senders: HashMap<String, usize>,
    markers: ReSet,
    marker_owner: Vec<usize>,
    reader: Reader,
    /// Merchant-app payment statements, each with an `amount` group.
    app_credit: Vec<Re>,
    /// Merchant-app notifications that are not one payment: summaries, settlements, offers.
    app_not_a_payment: Re,
    /// Registry id per bank (templated banks matched to their registry entry), for reports.
    ids: Vec<Option<String>>,
}

/// How a text was classified, step by step, for `paywatch alerts parse`.
#[derive(Debug, Clone)]
pub struct Explained {
    /// The result, exactly as [`Parser::parse`] returns it.
    pub alert: ParsedAlert,
    /// Why, one line per step that decided something.
    pub why: Vec<String>,
}

impl Parser {
    /// The built-in templates only.
    pub fn builtin() -> Result<Parser, TemplateError> {
        Parser::from_sources(DEFAULT_TEMPLATES)
    }

    /// The built-in templates, then operator files; an operator template replaces the built-in
    /// one with the same `bank` (case-insensitive), otherwise it adds a bank.
    pub fn with_overrides(operator: &[TemplateSource<'_>]) -> Result<Parser, TemplateError> {
        let mut all = DEFAULT_TEMPLATES.to_vec();
        all.extend_from_slice(operator);
        Parser::from_sources(&all)
    }

    /// Exactly these templates, later files overriding earlier ones by bank name.
    pub fn from_sources(sources: &[TemplateSource<'_>]) -> Result<Parser, TemplateError> {
        let mut raws: Vec<(&str, RawTemplate)> = Vec::with_capacity(sources.len());
        for src in sources {
            let raw: RawTemplate =
                toml::from_str(src.text).map_err(|source| TemplateError::Toml {
                    file: src.file.to_owned(),
                    source,
                })?;
            match raws
                .iter_mut()
                .find(|(_, r)| r.bank.eq_ignore_ascii_case(&raw.bank))
            {
                Some(slot) => *slot = (src.file, raw),
                None => raws.push((src.file, raw)),
            }
        }

        let mut banks = Vec::new();
        let mut generic = None;
        let mut senders: HashMap<String, usize> = HashMap::new();
        let mut marker_patterns = Vec::new();
        let mut marker_owner = Vec::new();
        for (file, raw) in &raws {
            let ctx = Ctx {
                file,
                template: &raw.bank,
            };
            let template = compile_template(&ctx, raw)?;
            if raw.bank.eq_ignore_ascii_case(GENERIC_BANK) {
                if !(raw.sms_senders.is_empty()
                    && raw.email_domains.is_empty()
                    && raw.markers.is_empty())
                {
                    return Err(ctx.invalid(
                        "sms_senders",
                        "the fallback template cannot claim senders, domains or markers",
                    ));
                }
                generic = Some(template);
                continue;
            }
            let index = banks.len();
            for (i, sender) in raw.sms_senders.iter().enumerate() {
                let key = format!("sms_senders[{i}]");
                let core = header_root(sender).ok_or_else(|| {
                    ctx.invalid(
                        &key,
                        format!("{sender:?} is not a DLT sender header (3-6 letters or digits)"),
                    )
                })?;
                if let Some(&other) = senders.get(core.as_str()) {
                    let owner = banks.get(other).map_or("", |t: &Template| t.bank.as_str());
                    return Err(ctx.invalid(&key, format!("{sender} already belongs to {owner}")));
                }
                senders.insert(core, index);
            }
            if !raw.markers.is_empty() {
                let joined = raw
                    .markers
                    .iter()
                    .map(|m| format!("(?:{})", expand(m)))
                    .collect::<Vec<_>>()
                    .join("|");
                marker_patterns.push(joined);
                marker_owner.push(index);
            }
            banks.push(template);
        }
        let generic = generic.ok_or(TemplateError::NoGeneric)?;
        let mut ids = vec![None; banks.len()];
        merge_registry(&mut banks, &mut ids, &mut senders)?;
        let markers = ReSet::new(&marker_patterns).map_err(|e| TemplateError::Regex {
            file: "(all templates)".to_owned(),
            template: "(all)".to_owned(),
            key: "markers".to_owned(),
            source: Box::new(e),
        })?;
        Ok(Parser {
            banks,
            generic,
            senders,
            markers,
            marker_owner,
            reader: Reader::new(),
            app_credit: APP_CREDIT
                .iter()
                .map(|r| app_regex(r))
                .collect::<Result<_, _>>()?,
            app_not_a_payment: app_regex(APP_NOT_A_PAYMENT)?,
            ids,
        })
    }

    /// Adds operator SMS headers: `(header, bank)` where `bank` is a registry id, a template's
    /// bank name or a new bank's display name (read by the fallback and the general reading).
    pub fn with_headers(mut self, headers: &[(String, String)]) -> Result<Parser, TemplateError> {
        for (header, bank) in headers {
            let bad = |problem: String| TemplateError::Header {
                header: header.clone(),
                problem,
            };
            let root = header_root(header).ok_or_else(|| {
                bad("is not a DLT sender header: 3-6 letters or digits, without the XX- prefix or -S suffix".into())
            })?;
            if let Some(&owner) = self.senders.get(root.as_str()) {
                let name = self.banks.get(owner).map_or("", |t| t.bank.as_str());
                return Err(bad(format!("already belongs to {name}")));
            }
            if bank.trim().is_empty() {
                return Err(bad("the bank must not be empty".into()));
            }
            let found = self.banks.iter().enumerate().position(|(i, t)| {
                t.bank.eq_ignore_ascii_case(bank.trim())
                    || self
                        .ids
                        .get(i)
                        .and_then(|id| id.as_deref())
                        .is_some_and(|id| id.eq_ignore_ascii_case(bank.trim()))
            });
            let index = match found {
                Some(i) => i,
                None => {
                    self.banks.push(empty_template(bank.trim())?);
                    self.ids.push(None);
                    self.banks.len() - 1
                }
            };
            self.senders.insert(root, index);
        }
        Ok(self)
    }

    /// The registry id (`"hdfc"`, `"indusind"`) of a bank name this parser reports.
    pub fn bank_id(&self, bank: &str) -> Option<&str> {
        self.banks
            .iter()
            .position(|t| t.bank == bank)
            .and_then(|i| self.ids.get(i))
            .and_then(|id| id.as_deref())
    }

    /// The bank whose SMS sender id this is: `"VM-HDFCBK"`, `"AD-HDFCBK-S"`, `"HDFCBK"`.
    pub fn bank_for_sender(&self, sender: &str) -> Option<&str> {
        self.sender_index(sender)
            .and_then(|i| self.banks.get(i))
            .map(|t| t.bank.as_str())
    }

    /// The bank owning an email domain (subdomains included); a full address also works.
    pub fn bank_for_email_domain(&self, domain: &str) -> Option<&str> {
        self.domain_index(domain)
            .and_then(|i| self.banks.get(i))
            .map(|t| t.bank.as_str())
    }

    /// Names of the loaded bank templates (without the fallback).
    pub fn banks(&self) -> impl Iterator<Item = &str> {
        self.banks.iter().map(|t| t.bank.as_str())
    }

    /// Classifies one alert. `sender` is the SMS sender id or the email `From` address.
    pub fn parse(&self, sender: Option<&str>, text: &str) -> ParsedAlert {
        self.run(sender, text, None)
    }

    /// Like [`Parser::parse`], also saying why.
    pub fn explain(&self, sender: Option<&str>, text: &str) -> Explained {
        let mut why = Vec::new();
        let alert = self.run(sender, text, Some(&mut why));
        Explained { alert, why }
    }

    /// Order: the bank's own non-credit patterns; the fallback's safety net (a debit word there
    /// is checked against the general reading, which knows "sent by X" and "debited from
    /// <payer>"); the bank's credit patterns; the fallback's credit patterns; the general reading.
    fn run(
        &self,
        sender: Option<&str>,
        text: &str,
        mut why: Option<&mut Vec<String>>,
    ) -> ParsedAlert {
        let mut note = |line: String| {
            if let Some(w) = why.as_deref_mut() {
                w.push(line);
            }
        };
        let t = Text::new(text);
        let candidates = self.candidates(sender, t);
        let bank = candidates
            .first()
            .and_then(|&i| self.banks.get(i))
            .map(|t| t.bank.as_str());
        match bank {
            Some(b) => note(format!("bank: {b} (from the sender, mail domain or text)")),
            None => note("bank: not recognised; fallback template and general reading only".into()),
        }
        let banks = || candidates.iter().filter_map(|&i| self.banks.get(i));
        for template in banks() {
            if let Some(pattern) = template.non_credit.first(t) {
                note(format!("non-credit pattern {} matched", pattern.label));
                return self.build(template, pattern, t, bank);
            }
        }
        let mut reading = None;
        let generic_non_credit = self
            .generic
            .non_credit
            .set
            .is_match(t)
            .then(|| self.generic.non_credit.set.matches(t));
        for &index in generic_non_credit.iter().flatten() {
            let Some(pattern) = self.generic.non_credit.patterns.get(index) else {
                continue;
            };
            if pattern.kind == PatternKind::Fixed(AlertKind::Debit) {
                let r = reading.get_or_insert_with(|| self.reader.read_text(t));
                if r.direction == Direction::Credit {
                    note(format!(
                        "debit word ({}) overruled by the general reading: {}",
                        pattern.label, r.why
                    ));
                    continue;
                }
            }
            note(format!("non-credit pattern {} matched", pattern.label));
            return self.build(&self.generic, pattern, t, bank);
        }
        for template in banks() {
            if let Some(pattern) = template.credit.first(t) {
                note(format!("credit pattern {} matched", pattern.label));
                return self.build(template, pattern, t, bank);
            }
        }
        let reading = reading.unwrap_or_else(|| self.reader.read_text(t));
        if reading.direction == Direction::Debit {
            note(format!("general reading: debit: {}", reading.why));
            return ParsedAlert {
                kind: AlertKind::Debit,
                bank: bank.map(str::to_owned),
                amount_paise: reading.amount.and_then(parse_amount_paise),
                utr: reading.utr.map(str::to_owned),
                payer_vpa: None,
                template: "general/debit".to_owned(),
            };
        }
        if let Some(pattern) = self.generic.credit.first(t) {
            note(format!("credit pattern {} matched", pattern.label));
            return self.build(&self.generic, pattern, t, bank);
        }
        if reading.direction == Direction::Credit {
            note(format!("general reading: credit: {}", reading.why));
            let utr = reading.utr.map(str::to_owned);
            let kind = self.channel(&self.generic, t).unwrap_or(if utr.is_some() {
                AlertKind::CreditTxnId
            } else {
                AlertKind::CreditNoRef
            });
            let payer_vpa = self
                .generic
                .extract
                .vpa
                .iter()
                .find_map(|r| r.captures(t).and_then(|c| c.name("vpa")))
                .map(|m| m.as_str().to_owned());
            return ParsedAlert {
                kind,
                bank: bank.map(str::to_owned),
                amount_paise: reading.amount.and_then(parse_amount_paise),
                utr,
                payer_vpa,
                template: "general/credit".to_owned(),
            };
        }
        note(format!("general reading: {}", reading.why));
        ParsedAlert::unknown(bank.map(str::to_owned))
    }

    /// A sender is a bank's when it is a DLT header of a registered root: `XX-ROOT`,
    /// `XX-ROOT-S|T|P|G`, the bare `ROOT`, or `XXROOT` (phones that drop the dash). Phone
    /// numbers and anything else are nobody's.
    /// Classifies a merchant-app notification (`title` and `text` joined by a newline).
    /// `package` must be one of [`super::apps::APPS`], otherwise nothing is money. The same
    /// safety net as for bank alerts runs first (requests, refunds, cashback, settlements,
    /// debits); then only "received ₹X" / "₹X received" / "paid you ₹X" statements count.
    pub fn parse_notification(&self, package: &str, text: &str) -> ParsedAlert {
        let Some(app) = super::apps::app_for_package(package) else {
            return ParsedAlert::unknown(None);
        };
        let unknown = || ParsedAlert::unknown(Some(app.name.to_owned()));
        let t = Text::new(text);
        let mut reading = None;
        for index in self.generic.non_credit.set.matches(t) {
            let Some(pattern) = self.generic.non_credit.patterns.get(index) else {
                continue;
            };
            if pattern.kind == PatternKind::Fixed(AlertKind::Debit) {
                let r = reading.get_or_insert_with(|| self.reader.read_text(t));
                if r.direction == Direction::Credit {
                    continue;
                }
            }
            let mut got = self.build(&self.generic, pattern, t, Some(app.name));
            got.payer_vpa = None;
            return got;
        }
        if self.app_not_a_payment.is_match(t) {
            let mut got = unknown();
            got.template = "app/summary_or_notice".to_owned();
            return got;
        }
        let amount = self
            .app_credit
            .iter()
            .find_map(|r| r.captures(t).and_then(|c| c.name("amount")))
            .map(|m| m.as_str());
        match amount {
            None => unknown(),
            Some(a) => ParsedAlert {
                kind: AlertKind::UpiCredit,
                bank: Some(app.name.to_owned()),
                amount_paise: parse_amount_paise(a),
                utr: self.reader.reference_text(t).map(str::to_owned),
                payer_vpa: None,
                template: format!("app/{}", app.package),
            },
        }
    }

    fn sender_index(&self, sender: &str) -> Option<usize> {
        let sender = sender.trim();
        let mut parts = sender.split('-');
        let first = parts.next()?;
        let (root, rest) = if first.len() == 2 && first.bytes().all(|b| b.is_ascii_alphanumeric()) {
            (parts.next()?, parts.next())
        } else {
            (first, parts.next())
        };
        if parts.next().is_some() {
            return None;
        }
        if let Some(suffix) = rest
            && !matches!(suffix, "S" | "T" | "P" | "G" | "s" | "t" | "p" | "g")
        {
            return None;
        }
        if let Some(key) = header_root(root)
            && let Some(&i) = self.senders.get(key.as_str())
        {
            return Some(i);
        }
        // Some phones drop the dash: "VMHDFCBK".
        if rest.is_none() && root.len() == 8 {
            return root
                .get(2..)
                .and_then(header_root)
                .and_then(|k| self.senders.get(k.as_str()).copied());
        }
        None
    }

    fn domain_index(&self, domain: &str) -> Option<usize> {
        let domain = domain.trim().trim_end_matches('>');
        let domain = domain
            .rsplit_once('@')
            .map_or(domain, |(_, d)| d)
            .as_bytes();
        self.banks.iter().position(|t| {
            t.email_domains.iter().any(|d| {
                let d = d.as_bytes();
                domain.len() >= d.len()
                    && domain[domain.len() - d.len()..].eq_ignore_ascii_case(d)
                    && (domain.len() == d.len() || domain[domain.len() - d.len() - 1] == b'.')
            })
        })
    }

    /// Banks this text may come from, most likely first.
    fn candidates(&self, sender: Option<&str>, text: Text<'_>) -> Vec<usize> {
        let known = sender.and_then(|s| {
            if s.contains('@') {
                self.domain_index(s)
            } else {
                self.sender_index(s)
            }
        });
        if let Some(index) = known {
            return vec![index];
        }
        let mut found: Vec<(usize, usize)> = self
            .markers
            .matches(text)
            .into_iter()
            .filter_map(|m| self.marker_owner.get(m).copied())
            .map(|bank| {
                let at = self
                    .banks
                    .get(bank)
                    .and_then(|t| t.marker.as_ref())
                    .and_then(|r| r.find(text))
                    .map_or(usize::MAX, |m| m.start());
                (at, bank)
            })
            .collect();
        if found.len() > 1 {
            found.sort_unstable();
        }
        found.into_iter().map(|(_, bank)| bank).collect()
    }

    fn build(
        &self,
        template: &Template,
        pattern: &Pattern,
        text: Text<'_>,
        bank: Option<&str>,
    ) -> ParsedAlert {
        // Captures cost a second, slower search: run it only when a field read below has a
        // group in this pattern.
        let caps = std::cell::OnceCell::new();
        let field = |group: Option<usize>, own: &[Re], fallback: &[Re], name: &str| {
            let caps =
                group.and_then(|_| caps.get_or_init(|| pattern.regex.captures(text)).as_ref());
            extract(caps, group, own, fallback, text, name)
        };
        let amount_paise = field(
            pattern.amount,
            &template.extract.amount,
            &self.generic.extract.amount,
            "amount",
        )
        .and_then(parse_amount_paise);
        let utr = if pattern.kind == PatternKind::Fixed(AlertKind::CreditNoRef) {
            None
        } else {
            field(
                pattern.utr,
                &template.extract.utr,
                &self.generic.extract.utr,
                "utr",
            )
            .or_else(|| {
                // References inside slash-separated info strings ("UPI/CR/<ref>/NAME") no
                // extractor pattern knows.
                if pattern.kind == PatternKind::Fixed(AlertKind::CreditNoRef) {
                    None
                } else {
                    self.reader.reference_text(text)
                }
            })
        };
        let kind = match pattern.kind {
            PatternKind::Fixed(kind) => kind,
            PatternKind::AutoCredit => self.channel(template, text).unwrap_or(if utr.is_some() {
                AlertKind::CreditTxnId
            } else {
                AlertKind::CreditNoRef
            }),
        };
        let payer_vpa = if kind.is_incoming_transfer() {
            field(
                pattern.vpa,
                &template.extract.vpa,
                &self.generic.extract.vpa,
                "vpa",
            )
        } else {
            None
        };
        let bank = if std::ptr::eq(template, &self.generic) {
            bank
        } else {
            Some(template.bank.as_str())
        };
        ParsedAlert {
            kind,
            bank: bank.map(str::to_owned),
            amount_paise,
            utr: utr.map(str::to_owned),
            payer_vpa: payer_vpa.map(str::to_owned),
            template: pattern.label.clone(),
        }
    }

    /// The channel a generic credit went through, from the template's channel words or the
    /// fallback's.
    fn channel(&self, template: &Template, text: Text<'_>) -> Option<AlertKind> {
        let channels = if template.channels.is_empty() {
            &self.generic.channels
        } else {
            &template.channels
        };
        channels
            .iter()
            .find(|(regex, _)| regex.is_match(text))
            .map(|&(_, kind)| kind)
    }
}

/// A field from the pattern's own group if it captured, else the first extractor that
/// captures. The first capture decides: a malformed amount is not replaced by a later one.
fn extract<'t>(
    caps: Option<&Caps<'t>>,
    group: Option<usize>,
    own: &[Re],
    fallback: &[Re],
    text: Text<'t>,
    name: &str,
) -> Option<&'t str> {
    if let Some(m) = group.and_then(|g| caps.and_then(|c| c.get(g))) {
        return Some(m.as_str());
    }
    own.iter()
        .chain(fallback)
        .find_map(|r| r.captures(text).and_then(|c| c.name(name)))
        .map(|m| m.as_str())
}

/// The uppercase root of a DLT header (`HDFCBK`, `AXISB`): 3-6 letters or digits, one a letter.
fn header_root(part: &str) -> Option<String> {
    let bytes = part.trim().as_bytes();
    if !(3..=6).contains(&bytes.len())
        || !bytes.iter().all(u8::is_ascii_alphanumeric)
        || !bytes.iter().any(u8::is_ascii_alphabetic)
    {
        return None;
    }
    Some(part.trim().to_ascii_uppercase())
}

/// A bank known only from the registry (or operator config): no patterns of its own.
fn empty_template(name: &str) -> Result<Template, TemplateError> {
    let ctx = Ctx {
        file: REGISTRY.file,
        template: name,
    };
    Ok(Template {
        bank: name.to_owned(),
        email_domains: Vec::new(),
        marker: None,
        non_credit: group(&ctx, "patterns", Vec::new())?,
        credit: group(&ctx, "patterns", Vec::new())?,
        channels: Vec::new(),
        extract: Extractors::default(),
    })
}

/// Adds the registry's banks: a registry bank whose header a template already claims merges
/// into that template (its other headers and mail domains join it); the rest become banks
/// with no patterns of their own.
fn merge_registry(
    banks: &mut Vec<Template>,
    ids: &mut Vec<Option<String>>,
    senders: &mut HashMap<String, usize>,
) -> Result<(), TemplateError> {
    let raw: RawRegistry = toml::from_str(REGISTRY.text).map_err(|source| TemplateError::Toml {
        file: REGISTRY.file.to_owned(),
        source,
    })?;
    for entry in raw.bank {
        let roots: Vec<String> = entry
            .sms_headers
            .iter()
            .filter_map(|h| header_root(h))
            .collect();
        let owner = roots
            .iter()
            .find_map(|r| senders.get(r.as_str()).copied())
            .or_else(|| {
                banks.iter().position(|t| {
                    t.bank.eq_ignore_ascii_case(&entry.name)
                        || t.bank.eq_ignore_ascii_case(&entry.id)
                })
            });
        let index = match owner {
            Some(i) => i,
            None => {
                banks.push(empty_template(&entry.name)?);
                ids.push(None);
                banks.len() - 1
            }
        };
        if let Some(slot) = ids.get_mut(index)
            && slot.is_none()
        {
            *slot = Some(entry.id.clone());
        }
        for root in roots {
            senders.entry(root).or_insert(index);
        }
        if let Some(t) = banks.get_mut(index) {
            for d in entry.mail_domains {
                if !t.email_domains.iter().any(|x| x.eq_ignore_ascii_case(&d)) {
                    t.email_domains.push(d);
                }
            }
        }
    }
    Ok(())
}

/// What a merchant app says when one customer paid (PhonePe Business "Received ₹500 from X",
/// Paytm for Business "₹10.21 received" / "Payment of Rs 350.00 received on Paytm QR from X",
/// Google Pay for Business "Payment received: ₹ 750", "X paid you ₹500").
const APP_CREDIT: &[&str] = &[
    r"(?i)\breceived\s+(?:a\s+payment\s+of\s+)?%CUR%%AMOUNT%",
    r"(?i)\bpayment\s+of\s+%CUR%%AMOUNT%\s+(?:has\s+been\s+|is\s+)?(?:received|credited)\b",
    r"(?i)\bpayment\s+received\b[\s:!.-]*%CUR%%AMOUNT%",
    r"(?i)%CUR%%AMOUNT%\s+(?:has\s+been\s+|is\s+)?received\b",
    r"(?i)\b(?:paid|sent)\s+you\s+%CUR%%AMOUNT%",
];

/// Totals, summaries, settlements, offers and loans in merchant-app notifications.
const APP_NOT_A_PAYMENT: &str = r"(?i)\btoday\b|\btotal\b|\bsummary\b|\bcollection|\bsettle|\bpayout|\btransfer(?:red)?\s+to\s+(?:your\s+)?bank\b|\boffer\b|\bloan\b|\bwin\b|\breward|\bvoucher|\bexpir|\bkyc\b|\bpayments\b|\btransactions\b";

fn app_regex(r: &str) -> Result<Re, TemplateError> {
    Re::new(&expand(r)).map_err(|e| TemplateError::Regex {
        file: "(built-in)".to_owned(),
        template: "merchant apps".to_owned(),
        key: "app patterns".to_owned(),
        source: Box::new(e),
    })
}

const MACROS: [(&str, &str); 4] = [
    ("%CUR%", r"(?:\b(?i:rs|inr)|₹)\s*[.:]?\s*"),
    ("%AMOUNT%", r"(?P<amount>\d(?:[\d,]*\d)?(?:\.\d+)?)"),
    ("%UTR%", r"(?P<utr>\d{9,18})\b"),
    (
        "%VPA%",
        r"(?P<vpa>[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z][A-Za-z0-9.]*[A-Za-z0-9])",
    ),
];

fn expand(regex: &str) -> String {
    MACROS.iter().fold(regex.to_owned(), |acc, (name, body)| {
        acc.replace(name, body)
    })
}

/// Where a template is being compiled, for error messages.
struct Ctx<'a> {
    file: &'a str,
    template: &'a str,
}

impl Ctx<'_> {
    fn invalid(&self, key: &str, problem: impl Into<String>) -> TemplateError {
        TemplateError::Invalid {
            file: self.file.to_owned(),
            template: self.template.to_owned(),
            key: key.to_owned(),
            problem: problem.into(),
        }
    }

    /// Compiles `regex` (after macro expansion), allowing only the named groups in `groups`
    /// and requiring `required` when given.
    fn regex(
        &self,
        key: &str,
        regex: &str,
        groups: &[&str],
        required: Option<&str>,
    ) -> Result<Re, TemplateError> {
        if regex.trim().is_empty() {
            return Err(self.invalid(key, "must not be empty"));
        }
        let compiled = Re::new(&expand(regex)).map_err(|e| TemplateError::Regex {
            file: self.file.to_owned(),
            template: self.template.to_owned(),
            key: key.to_owned(),
            source: Box::new(e),
        })?;
        for name in compiled.capture_names().flatten() {
            if !groups.contains(&name) {
                return Err(self.invalid(
                    key,
                    format!(
                        "unknown capture group {name:?} (allowed: {})",
                        groups.join(", ")
                    ),
                ));
            }
        }
        if let Some(req) = required
            && !compiled.capture_names().flatten().any(|n| n == req)
        {
            return Err(self.invalid(key, format!("needs a capture group named {req:?}")));
        }
        Ok(compiled)
    }
}

fn group_index(regex: &Re, name: &str) -> Option<usize> {
    regex.capture_names().position(|n| n == Some(name))
}

fn compile_template(ctx: &Ctx<'_>, raw: &RawTemplate) -> Result<Template, TemplateError> {
    if raw.bank.trim().is_empty() {
        return Err(ctx.invalid("bank", "must not be empty"));
    }
    for (i, domain) in raw.email_domains.iter().enumerate() {
        if domain.is_empty() || domain.contains(['@', ' ']) || !domain.contains('.') {
            return Err(ctx.invalid(
                &format!("email_domains[{i}]"),
                format!("{domain:?} is not a domain name"),
            ));
        }
    }
    let mut marker = None;
    if !raw.markers.is_empty() {
        let mut parts = Vec::with_capacity(raw.markers.len());
        for (i, m) in raw.markers.iter().enumerate() {
            ctx.regex(&format!("markers[{i}]"), m, &[], None)?;
            parts.push(format!("(?:{})", expand(m)));
        }
        marker = Some(ctx.regex("markers", &parts.join("|"), &[], None)?);
    }

    let mut non_credit = Vec::new();
    let mut credit = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, p) in raw.patterns.iter().enumerate() {
        let name = p.name.trim();
        if name.is_empty() {
            return Err(ctx.invalid(&format!("patterns[{i}].name"), "must not be empty"));
        }
        if names.contains(&name) {
            return Err(ctx.invalid(
                &format!("patterns[{i}].name"),
                format!("duplicate pattern name {name:?}"),
            ));
        }
        names.push(name);
        let kind = match p.kind.as_str() {
            "credit" => PatternKind::AutoCredit,
            other => match AlertKind::from_name(other) {
                None => {
                    return Err(ctx.invalid(
                        &format!("patterns[{i}].kind"),
                        format!("unknown kind {other:?}"),
                    ));
                }
                Some(kind) => PatternKind::Fixed(kind),
            },
        };
        let regex = ctx.regex(
            &format!("patterns[{i}].regex"),
            &p.regex,
            &["amount", "utr", "vpa"],
            None,
        )?;
        let pattern = Pattern {
            label: format!("{}/{}", raw.bank, name),
            kind,
            amount: group_index(&regex, "amount"),
            utr: group_index(&regex, "utr"),
            vpa: group_index(&regex, "vpa"),
            regex,
        };
        let is_credit = match kind {
            PatternKind::AutoCredit => true,
            PatternKind::Fixed(k) => k.is_incoming_transfer(),
        };
        if is_credit {
            credit.push(pattern);
        } else {
            non_credit.push(pattern);
        }
    }

    let mut channels = Vec::with_capacity(raw.channels.len());
    for (i, c) in raw.channels.iter().enumerate() {
        let kind = AlertKind::from_name(&c.kind)
            .filter(|k| {
                k.is_incoming_transfer()
                    && !matches!(k, AlertKind::CreditNoRef | AlertKind::CreditTxnId)
            })
            .ok_or_else(|| {
                ctx.invalid(
                    &format!("channels[{i}].kind"),
                    format!("{:?} is not a channel credit kind", c.kind),
                )
            })?;
        channels.push((
            ctx.regex(&format!("channels[{i}].regex"), &c.regex, &[], None)?,
            kind,
        ));
    }

    let extractors = |key: &str, list: &[String]| -> Result<Vec<Re>, TemplateError> {
        list.iter()
            .enumerate()
            .map(|(i, r)| ctx.regex(&format!("extract.{key}[{i}]"), r, &[key], Some(key)))
            .collect()
    };
    let extract = Extractors {
        amount: extractors("amount", &raw.extract.amount)?,
        utr: extractors("utr", &raw.extract.utr)?,
        vpa: extractors("vpa", &raw.extract.vpa)?,
    };

    Ok(Template {
        bank: raw.bank.trim().to_owned(),
        email_domains: raw.email_domains.clone(),
        marker,
        non_credit: group(ctx, "patterns (non-credit)", non_credit)?,
        credit: group(ctx, "patterns (credit)", credit)?,
        channels,
        extract,
    })
}

fn group(ctx: &Ctx<'_>, key: &str, patterns: Vec<Pattern>) -> Result<Group, TemplateError> {
    let set = ReSet::new(patterns.iter().map(|p| p.regex.as_str())).map_err(|e| {
        TemplateError::Regex {
            file: ctx.file.to_owned(),
            template: ctx.template.to_owned(),
            key: key.to_owned(),
            source: Box::new(e),
        }
    })?;
    Ok(Group { set, patterns })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn err(files: &[(&str, &str)]) -> String {
        let mut sources: Vec<TemplateSource<'_>> = vec![TemplateSource {
            file: "g.toml",
            text: "bank = \"generic\"",
        }];
        sources.extend(
            files
                .iter()
                .map(|(file, text)| TemplateSource { file, text }),
        );
        Parser::from_sources(&sources).unwrap_err().to_string()
    }

    #[test]
    fn builtin_templates_load() {
        let parser = Parser::builtin().unwrap();
        assert!(parser.banks().count() >= 10);
    }

    #[test]
    fn error_names_file_template_and_key() {
        let msg = err(&[(
            "watchers/upi/hdfc.toml",
            "bank = \"HDFC\"\n[[patterns]]\nname=\"a\"\nkind=\"debit\"\nregex=\"x\"\n[[patterns]]\nname=\"b\"\nkind=\"debit\"\nregex=\"y\"\n[[patterns]]\nname=\"c\"\nkind=\"upi_credit\"\nregex=\"(unclosed\"\n",
        )]);
        assert!(
            msg.starts_with(
                "watchers/upi/hdfc.toml: template HDFC: patterns[2].regex: invalid regex:"
            ),
            "{msg}"
        );
        let msg = err(&[(
            "x.toml",
            "bank = \"X\"\n[[patterns]]\nname=\"a\"\nkind=\"salary\"\nregex=\"x\"\n",
        )]);
        assert_eq!(
            msg,
            "x.toml: template X: patterns[0].kind: unknown kind \"salary\""
        );
        let msg = err(&[(
            "x.toml",
            "bank = \"X\"\n[[patterns]]\nname=\"a\"\nkind=\"debit\"\nregex=\"(?P<amt>x)\"\n",
        )]);
        assert!(
            msg.contains("patterns[0].regex: unknown capture group \"amt\""),
            "{msg}"
        );
        let msg = err(&[("x.toml", "bank = \"X\"\nsms_senders = [\"HD\"]\n")]);
        assert!(msg.contains("x.toml: template X: sms_senders[0]"), "{msg}");
        let msg = err(&[("x.toml", "bank = \"X\"\nbogus = 1\n")]);
        assert!(
            msg.starts_with("x.toml: invalid template:") && msg.contains("bogus"),
            "{msg}"
        );
        let msg = err(&[("x.toml", "bank = \"X\"\n[extract]\nutr = [\"\\\\d+\"]\n")]);
        assert!(
            msg.contains("extract.utr[0]: needs a capture group named \"utr\""),
            "{msg}"
        );
        let msg = err(&[
            ("a.toml", "bank = \"A\"\nsms_senders = [\"ABCDEF\"]\n"),
            ("b.toml", "bank = \"B\"\nsms_senders = [\"VM-ABCDEF\"]\n"),
        ]);
        assert!(msg.contains("b.toml: template B: sms_senders[0]"), "{msg}");
        let none = Parser::from_sources(&[]).unwrap_err().to_string();
        assert!(none.contains("no fallback template"), "{none}");
    }

    #[test]
    fn senders_and_domains() {
        let parser = Parser::builtin().unwrap();
        for s in [
            "VM-HDFCBK",
            "AD-HDFCBK-S",
            "HDFCBK",
            "hdfcbk",
            "VMHDFCBK",
            " CP-HDFCBK-T ",
        ] {
            assert_eq!(parser.bank_for_sender(s), Some("HDFC"), "{s}");
        }
        assert_eq!(parser.bank_for_sender("JD-SBIUPI-S"), Some("SBI"));
        assert_eq!(parser.bank_for_sender("JX-PHONPE-S"), None);
        assert_eq!(parser.bank_for_sender("+919876543210"), None);
        assert_eq!(
            parser.bank_for_email_domain("alerts.hdfcbank.net"),
            Some("HDFC")
        );
        assert_eq!(
            parser.bank_for_email_domain("alerts@HDFCBANK.NET"),
            Some("HDFC")
        );
        assert_eq!(parser.bank_for_email_domain("nothdfcbank.net"), None);
        assert_eq!(parser.bank_for_email_domain("sbi.co.in"), Some("SBI"));
    }

    #[test]
    fn operator_file_overrides_by_bank_name() {
        let op = TemplateSource {
            file: "/etc/paywatch/upi/hdfc.toml",
            text: "bank = \"hdfc\"\nsms_senders = [\"HDFCBK\"]\n[[patterns]]\nname = \"gift\"\nkind = \"upi_credit\"\nregex = 'GIFT %CUR%%AMOUNT% ref %UTR%'\n",
        };
        let parser = Parser::with_overrides(&[op]).unwrap();
        let got = parser.parse(Some("VM-HDFCBK"), "GIFT Rs.5 ref 123456789012");
        assert_eq!(got.kind, AlertKind::UpiCredit);
        assert_eq!(got.amount_paise, Some(500));
        assert_eq!(got.template, "hdfc/gift");
        assert_eq!(
            parser
                .banks()
                .filter(|b| b.eq_ignore_ascii_case("hdfc"))
                .count(),
            1
        );
    }

    #[test]
    fn every_watcher_file_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/watchers/upi");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".toml") && name != "banks.toml" {
                let file = format!("watchers/upi/{name}");
                assert!(
                    DEFAULT_TEMPLATES.iter().any(|t| t.file == file),
                    "{file} is not listed in DEFAULT_TEMPLATES"
                );
            }
        }
    }

    #[test]
    fn every_builtin_regex_has_its_ascii_build() {
        let parser = Parser::builtin().unwrap();
        let mut missing = Vec::new();
        for t in parser.banks.iter().chain([&parser.generic]) {
            for p in t.non_credit.patterns.iter().chain(&t.credit.patterns) {
                if !p.regex.has_ascii() {
                    missing.push(p.label.clone());
                }
            }
            for (i, g) in [&t.non_credit, &t.credit].iter().enumerate() {
                if !g.set.has_ascii() {
                    missing.push(format!("{} set {i}", t.bank));
                }
            }
            let e = &t.extract;
            for r in e
                .amount
                .iter()
                .chain(&e.utr)
                .chain(&e.vpa)
                .chain(t.marker.iter())
            {
                if !r.has_ascii() {
                    missing.push(format!("{}: {}", t.bank, r.as_str()));
                }
            }
            for (r, _) in &t.channels {
                if !r.has_ascii() {
                    missing.push(format!("{}: {}", t.bank, r.as_str()));
                }
            }
        }
        if !parser.markers.has_ascii() {
            missing.push("markers".into());
        }
        for r in parser.app_credit.iter().chain([&parser.app_not_a_payment]) {
            if !r.has_ascii() {
                missing.push(r.as_str().to_owned());
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn parser_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Parser>();
    }

    #[test]
    fn generic_fallback_on_unseen_banks() {
        let parser = Parser::builtin().unwrap();
        let got = parser.parse(
            Some("VM-NEWBNK-S"),
            "Dear Customer, your A/c XX1234 has been credited with INR 1,250.50 on 01-02-26 by UPI Ref No 612345678901 from abc.d@ybl -New Bank",
        );
        assert_eq!(got.kind, AlertKind::UpiCredit, "{got:?}");
        assert_eq!(got.amount_paise, Some(125_050));
        assert_eq!(got.utr.as_deref(), Some("612345678901"));
        assert_eq!(got.payer_vpa.as_deref(), Some("abc.d@ybl"));
        assert!(got.template.starts_with("generic/"));

        let got = parser.parse(
            None,
            "Rs.75 received in your Bank A/c XX77 via IMPS RRN 612345678902.",
        );
        assert_eq!(
            (got.kind, got.amount_paise),
            (AlertKind::ImpsCredit, Some(7_500))
        );
        assert_eq!(got.utr.as_deref(), Some("612345678902"));

        for text in [
            "Rs 500.00 will be credited to your a/c XX1234 after verification",
            "Rs 5000 credited to your credit card account XX1234 on 01-02-26",
            "Cashback of Rs 10 credited to your a/c XX1234",
            "Your a/c XX1234 credited with Rs 900; cheque 0012 returned unpaid",
            "Dear Customer, INR 250.00 is debited from your a/c XX12 and credited to abc@ybl",
            "Your a/c balance is Rs 1,000.00 as on 01-02-26",
        ] {
            let got = parser.parse(None, text);
            assert!(!got.is_money(), "{text}: {got:?}");
        }
    }

    #[test]
    fn amounts_with_three_decimals_are_not_money() {
        let parser = Parser::builtin().unwrap();
        let got = parser.parse(
            Some("JD-SBIUPI-S"),
            "Dear SBI UPI User, ur A/cX9709 credited by Rs519.005 on 03Dec23 by  (Ref no 333785625735)",
        );
        assert_eq!(got.amount_paise, None);
        assert!(!got.is_money());
    }

    #[test]
    fn payer_vpa_only_for_incoming() {
        let parser = Parser::builtin().unwrap();
        let got = parser.parse(
            Some("AM-HDFCBK"),
            "Credit Alert!\nRs.2.00 credited to HDFC Bank A/c xx2536 on 07-12-24 from VPA user34@axisbank (UPI 526830463424)",
        );
        assert_eq!(got.payer_vpa.as_deref(), Some("user34@axisbank"));
        let got = parser.parse(None, "Rs.500.00 debited from A/c XX1234 on 20-Oct-25 from VPA me@upi (UPI Ref No 123456789012)");
        assert_eq!(got.kind, AlertKind::Debit);
        assert_eq!(got.payer_vpa, None);
    }
}
