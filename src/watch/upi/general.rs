//! The general reading of an alert text: which way the money went *for the account holder*,
//! the amount next to that statement, and the reference, for formats no template knows.
//!
//! Templates match one wording each; banks have hundreds. This reader works on the grammar
//! every Indian bank alert shares instead: a verb (`credited`, `received`, `Cr`, `debited`,
//! `sent`, `UPI/CR/` …) and the account it is about. Each verb is scored by how clearly it is
//! bound to the holder's account — "to your a/c" (2), a masked "A/c XX1234" (1), nothing (0) —
//! and the strongest statement wins; on a tie the first one does (alerts name the holder's side
//! first: "debited from A/c XX12 and credited to x@ybl" is a debit, "credited to a/c XX12 …
//! and debited from <payer>" a credit). "sent by X" / "paid by X" name the *payer* and are no
//! debit. Anything unclear reads as "no credit": a missed credit is recoverable by hand, a
//! debit read as money is not.
//!
//! Pure and allocation-light: compiled once ([`Reader::new`]), shared by the parser.

use super::re::{Re, Text};

/// Which way the money went for the account holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Money came into the holder's account.
    Credit,
    /// Money left the holder's account (or the text is about the holder paying).
    Debit,
    /// No statement about the holder's account was found.
    Unclear,
}

/// What the general reading found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading<'t> {
    /// The decision.
    pub direction: Direction,
    /// The transaction amount as written next to the deciding verb (balances skipped).
    pub amount: Option<&'t str>,
    /// The reference: by label, after `UPI`/`IMPS`, or inside a slash-separated info string.
    pub utr: Option<&'t str>,
    /// Why, in words, for `paywatch alerts parse` and the ignored-alert reason.
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Polarity {
    Credit,
    Debit,
    /// "sent by X", "transfer from X": names the payer; neither side on its own.
    Neutral,
}

#[derive(Debug, Clone, Copy)]
struct Hit {
    start: usize,
    end: usize,
    polarity: Polarity,
    /// How clearly the verb is about the holder's account: 0, 1 or 2.
    score: u8,
}

/// The compiled general reader.
#[derive(Debug)]
pub struct Reader {
    verbs: Re,
    amount: Re,
    balance_before: Re,
    /// An account phrase ending right before a verb: "ur A/cX9709 ", "Acct XX823 is ".
    passive_account: Re,
    /// A preposition phrase right after a verb leading to an account: "to your a/c", "in A/c".
    account_after: Re,
    /// "your"/"ur" bound to an account word.
    yours: Re,
    /// Right after an account word: it is somebody else's ("a/c of NAME", "a/c linked to").
    other_account: Re,
    /// A key-value line naming the account ("A/c: XX1234"), as multi-line alerts write it.
    field_account: Re,
    /// "to your a/c XX12" (a numbered account, not a name such as "Your Account Services").
    to_yours: Re,
    labelled_ref: Re,
    channel_ref: Re,
    slash_info: Re,
    channel_word: Re,
    twelve: Re,
}

const VERBS: &str = r"(?xi)
      (?P<cr>\bcredited\b|\bcredit(?:\s+of)?\b|\bdeposited\b|\badded\b|\b(?:Cr|CR)\b\.?|/CR/)
    | (?P<rcv>\breceived\b|\bpaid\s+you\b|\bsent\s+you\b)
    | (?P<dr>\bdebited\b|\bdebit\b|\b(?:Dr|DR)\b\.?|/DR/|\bwithdrawn\b|\bspent\b|\bpurchase\b|\bdeducted\b)
    | (?P<mv>\bsent\b|\bpaid\b|\btransferred\b|\btransfer\b|\btrf\b)
";

impl Default for Reader {
    fn default() -> Self {
        Reader::new()
    }
}

impl Reader {
    /// Compiles the reader's regexes (fixed, tested: a failure is a build bug).
    #[allow(clippy::expect_used)]
    pub fn new() -> Reader {
        let re = |s: &str| Re::new(s).expect("general reader regex");
        let acct = r"(?:a/?c|acct?|account|ac|a\.c\.|sb)";
        // A masked account number: "XX1234", "*9172", "3XXXXX0208", "NN09089", "...7656".
        let mask = r"(?:\d{0,4}[a-z*#.]{0,12}\d{2,}|[x*#.]{2,}\d*)";
        Reader {
            verbs: re(VERBS),
            amount: re(r"(?i)(?:\b(?:rs|inr)|₹)\s*[.:]?\s*(?P<a>\d(?:[\d,]*\d)?(?:\.\d+)?)"),
            balance_before: re(
                r"(?i)(?:\bbal(?:ance)?|\bavl|\bavbl|\bavlbl|\baval|\bavailable|\blimit|\blmt|\bclr|\bclear)\b[^0-9]{0,20}$",
            ),
            passive_account: re(&format!(
                r"(?i)\b{acct}\.?\s*(?:no\.?|number|ending(?:\s+(?:in|with))?)?\s*[:.-]?\s*{mask}?\s*(?:is\s+|has\s+been\s+|was\s+|got\s+|-\s*)?(?:successfully\s+)?$"
            )),
            account_after: re(&format!(
                r"(?i)^[\s.:,!-]*(?:(?:with|by|for|of|amount|an\s+amount\s+of)\s+)?(?:(?:(?:\brs|\binr|₹)\s*[.:]?\s*){{1,2}}[\d,]+(?:\.\d+)?\s*(?:/-)?\s*)?(?:on\s+\S+\s+)?(?:(?:via|thru|through|by)\s+\S+\s+)?(?:(?:to|in|into|from|at)\s+)?(?:the\s+)?(?:(?:your|ur|yr)\s+)?(?:\S+@\S+\s+)?(?:[A-Za-z&]+\s+){{0,3}}?{acct}(?:[^a-z]|$)"
            )),
            yours: re(&format!(
                r"(?i)\b(?:your|ur|yr)\s+(?:[A-Za-z&]+\s+){{0,3}}?{acct}\b"
            )),
            other_account: re(
                r"(?i)^[\s.:]*(?:no\.?\s*)?[x*.]*\d*\s*(?:of|linked\s+to|held\s+by|belonging\s+to)\b",
            ),
            field_account: re(&format!(
                r"(?im)^\s*(?:to\b[^\n]{{0,40}}?)?\b{acct}(?:\s*(?:no|number))?\.?\s*(?:[:-]|\s{mask})"
            )),
            to_yours: re(&format!(
                r"(?i)\b(?:to|in|into)\s+(?:your|ur|yr)\s+(?:[A-Za-z&]+\s+){{0,3}}?{acct}\.?\s*(?:no\.?\s*)?[:.-]?\s*[x*#.]*\d{{2,}}"
            )),
            labelled_ref: re(
                r"(?i)\b(?:ref(?:erence)?|rrn|utr|txn|transaction|trans|tran)\.?\s*(?:(?:no|number|id|num)\b\.?)?[\s:#/.-]{0,5}(?:is\s+)?(?P<u>\d{9,18})\b",
            ),
            channel_ref: re(r"(?i)\b(?:UPI|IMPS)\b\s*[:-]?\s*(?P<u>\d{9,18})\b"),
            channel_word: re(r"(?i)\b(?:UPI|IMPS)\b"),
            twelve: re(r"(?:^|[^0-9A-Za-z+])(\d{12})(?:$|[^0-9A-Za-z])"),
            slash_info: re(
                r"(?i)\b(?:UPI|IMPS|MMT|UPIAR|UPIRET|P2[APM])[A-Z]*(?:/[^/\s]{0,24}){0,3}?/[A-Z]?(?P<u>\d{9,18})(?:/|\b)",
            ),
        }
    }

    /// Reads `text`.
    pub fn read<'t>(&self, text: &'t str) -> Reading<'t> {
        self.read_text(Text::new(text))
    }

    /// [`Reader::read`] on a text whose ASCII-ness is known.
    pub(crate) fn read_text<'t>(&self, t: Text<'t>) -> Reading<'t> {
        let text = t.as_str();
        // `find_iter`, not `captures_iter`: the group a verb belongs to follows from its
        // words, and a plain search stays in the lazy DFA (captures need the slower engines).
        let raw: Vec<(usize, usize, &str)> = self
            .verbs
            .find_iter(t)
            .map(|m| (m.start(), m.end(), verb_kind(m.as_str())))
            .collect();
        let mut hits: Vec<Hit> = Vec::with_capacity(raw.len());
        for (i, &(start, end, kind)) in raw.iter().enumerate() {
            let prev_end = if i == 0 { 0 } else { raw[i - 1].1 };
            let next_start = raw.get(i + 1).map_or(text.len(), |r| r.0);
            let left = &text[floor(text, prev_end.max(start.saturating_sub(60)))..start];
            let right = &text[end..ceil(text, next_start.min(end + 70))];
            let word = &text[start..end];
            if let Some(hit) = self.score(kind, word, left, right, start, end) {
                hits.push(hit);
            }
        }

        // Multi-line alerts ("Credit Alert\nAmount: Rs 500\nA/c: XX12"): the account is a field
        // of its own; with no debit wording, the credit verb is about it.
        if !hits.iter().any(|h| h.polarity == Polarity::Debit) && self.field_account.is_match(t) {
            for h in hits.iter_mut().filter(|h| h.polarity == Polarity::Credit) {
                h.score = h.score.max(1);
            }
        }
        let best = |p: Polarity| {
            hits.iter()
                .filter(|h| h.polarity == p)
                .max_by(|a, b| a.score.cmp(&b.score).then(b.start.cmp(&a.start)))
                .copied()
        };
        let credit = best(Polarity::Credit);
        let debit = best(Polarity::Debit);
        let (direction, decider, why) = match (credit, debit) {
            (None, None) => (
                Direction::Unclear,
                None,
                "no credit or debit verb".to_owned(),
            ),
            (None, Some(d)) => (
                Direction::Debit,
                Some(d),
                format!("debit wording {:?}", &text[d.start..d.end]),
            ),
            (Some(c), None) if c.score == 0 => (
                Direction::Unclear,
                None,
                format!(
                    "credit wording {:?} is not about the holder's account",
                    &text[c.start..c.end]
                ),
            ),
            (Some(c), None) => (
                Direction::Credit,
                Some(c),
                format!(
                    "credit wording {:?} about the holder's account (strength {})",
                    &text[c.start..c.end],
                    c.score
                ),
            ),
            (Some(c), Some(d)) => {
                let credit_wins = c.score > d.score || (c.score == d.score && c.start < d.start);
                let words = |h: Hit| &text[h.start..h.end];
                if credit_wins && c.score > 0 {
                    (
                        Direction::Credit,
                        Some(c),
                        format!(
                            "credit wording {:?} (strength {}) outranks debit wording {:?} (strength {}): the debit is the payer's side",
                            words(c),
                            c.score,
                            words(d),
                            d.score
                        ),
                    )
                } else {
                    (
                        Direction::Debit,
                        Some(d),
                        format!(
                            "debit wording {:?} (strength {}) is about the holder; credit wording {:?} (strength {}) is the payee's side",
                            words(d),
                            d.score,
                            words(c),
                            c.score
                        ),
                    )
                }
            }
        };
        let amount = decider.and_then(|h| self.amount_near(t, h));
        let utr = self.reference_text(t);
        Reading {
            direction,
            amount,
            utr,
            why,
        }
    }

    fn score(
        &self,
        kind: &str,
        word: &str,
        left: &str,
        right: &str,
        start: usize,
        end: usize,
    ) -> Option<Hit> {
        let lower = word.to_ascii_lowercase();
        let right_lower_head: String = right
            .chars()
            .take(12)
            .collect::<String>()
            .to_ascii_lowercase();
        let right_head = right_lower_head.trim_start();
        // A balance written "Rs.500.00 CR" / "Bal: 20 Dr" is no statement about a transaction.
        if (lower.starts_with("cr") || lower.starts_with("dr"))
            && self
                .balance_before
                .is_match(Text::new(left.trim_end_matches(|c: char| {
                    c.is_ascii_digit() || c == '.' || c == ',' || c == ' '
                })))
        {
            return None;
        }
        // Short forms count only next to an amount or a preposition: "Cr INR 500", "500 Dr",
        // "Cr. to" (not "Dr. Sharma").
        if matches!(lower.as_str(), "cr" | "dr" | "cr." | "dr.") {
            let after_ok = right_head.starts_with("rs")
                || right_head.starts_with("inr")
                || right_head.starts_with('₹')
                || right_head.starts_with(|c: char| c.is_ascii_digit())
                || right_head.starts_with("to ")
                || right_head.starts_with("-")
                || right_head.starts_with("in ");
            let before_ok = left
                .trim_end()
                .ends_with(|c: char| c.is_ascii_digit() || c == '-');
            if !(after_ok || before_ok) {
                return None;
            }
        }
        let holder = self.holder(left, right, kind == "cr" || kind == "rcv");
        let (polarity, score) = match kind {
            "cr" => (Polarity::Credit, holder),
            "rcv"
                if right_head.starts_with("by ") || {
                    let l = left.trim_end().to_ascii_lowercase();
                    l.ends_with("we have") || l.ends_with("we've") || l.ends_with("we")
                } =>
            {
                (Polarity::Neutral, 0)
            }
            "rcv"
                if holder == 0 && {
                    let l = left.trim_end().to_ascii_lowercase();
                    l.ends_with("been") || l.ends_with(" is") || l.ends_with(" was")
                } =>
            {
                // "Your request … has been received": no money moved to an account.
                (Polarity::Credit, 0)
            }
            "rcv" => {
                let l = left.to_ascii_lowercase();
                if l.contains("beneficiary") || l.trim_end().ends_with("has") && l.contains("payee")
                {
                    (Polarity::Debit, 1)
                } else {
                    (Polarity::Credit, holder.max(1))
                }
            }
            "dr" => (Polarity::Debit, holder.max(1)),
            _ if (lower == "transfer" || lower == "trf") && !right_head.starts_with("to ") => {
                (Polarity::Neutral, 0)
            }
            _ => {
                // sent / paid / transferred: the preposition decides.
                if (right_head.starts_with("by ") || right_head.starts_with("from "))
                    && self.to_yours.is_match(Text::new(right))
                {
                    (Polarity::Credit, 2)
                } else if right_head.starts_with("by ")
                    || right_head.starts_with("from ")
                        && !self.account_after.is_match(Text::new(right))
                    || right_head.starts_with("to you ")
                    || right_head.starts_with("to you,")
                {
                    if right_head.starts_with("to you") {
                        (Polarity::Credit, 1)
                    } else {
                        (Polarity::Neutral, 0)
                    }
                } else if right_head.starts_with("to ")
                    && self
                        .to_yours
                        .find(Text::new(right))
                        .is_some_and(|m| m.start() < 3)
                {
                    (Polarity::Credit, holder.max(1))
                } else {
                    (Polarity::Debit, holder.max(1))
                }
            }
        };
        if polarity == Polarity::Neutral {
            return None;
        }
        Some(Hit {
            start,
            end,
            polarity,
            score,
        })
    }

    /// 2 when "your/ur … a/c" is bound to the verb, 1 for a plain (masked) account, else 0.
    fn holder(&self, left: &str, right: &str, credit: bool) -> u8 {
        let mut score = 0;
        if let Some(m) = self.passive_account.find(Text::new(left)) {
            let before = &left[floor(left, m.start().saturating_sub(35))..];
            // "… from your a/c XX12 credited to x@ybl": that account is the object of "from",
            // not the subject of "credited".
            let pre = left[..m.start()].trim_end().to_ascii_lowercase();
            let pre = pre
                .strip_suffix("your")
                .or_else(|| pre.strip_suffix("ur"))
                .unwrap_or(&pre)
                .trim_end();
            let object = [" from", " to", " by", " frm", " of"]
                .iter()
                .any(|p| pre.ends_with(p) || pre == p.trim_start());
            if !object {
                score = if self.yours.is_match(Text::new(before)) {
                    2
                } else {
                    1
                };
            }
        }
        if let Some(m) = self.account_after.find(Text::new(right)) {
            let phrase = &right[..m.end()];
            let rest = &right[floor(right, m.end().saturating_sub(1))..];
            // One preposition at most ("CREDITED TRADERS from your a/c" is a name, then the
            // payer's account), and money is credited *to* an account, never *from* one.
            let words: Vec<String> = phrase
                .split(|c: char| !c.is_ascii_alphabetic())
                .map(str::to_ascii_lowercase)
                .collect();
            let preps = words
                .iter()
                .filter(|w| matches!(w.as_str(), "to" | "in" | "into" | "from" | "at" | "and"))
                .count();
            let from = words.iter().any(|w| w == "from");
            let theirs =
                self.other_account.is_match(Text::new(rest)) || preps > 1 || (credit && from);
            if !theirs {
                let s = if self.yours.is_match(Text::new(phrase)) {
                    2
                } else {
                    1
                };
                score = score.max(s);
            }
        }
        score
    }

    /// The amount closest to the deciding verb, skipping balances and limits.
    fn amount_near<'t>(&self, t: Text<'t>, h: Hit) -> Option<&'t str> {
        let text = t.as_str();
        self.amount
            .find_iter(t)
            .filter_map(|whole| {
                // The figure is the match from its first digit (the prefix has none).
                let a = &whole.as_str()[whole.as_str().find(|c: char| c.is_ascii_digit())?..];
                let before = &text[floor(text, whole.start().saturating_sub(24))..whole.start()];
                if self.balance_before.is_match(Text::new(before)) {
                    return None;
                }
                let distance = if whole.start() >= h.end {
                    whole.start() - h.end
                } else {
                    h.start.saturating_sub(whole.end())
                };
                Some((distance, a))
            })
            .min_by_key(|(d, _)| *d)
            .map(|(_, a)| a)
    }

    /// The transaction reference: labelled first, then after `UPI`/`IMPS`, then the first
    /// long number inside a slash-separated info string (`UPI/CR/<ref>/NAME/…`).
    pub fn reference<'t>(&self, text: &'t str) -> Option<&'t str> {
        self.reference_text(Text::new(text))
    }

    /// [`Reader::reference`] on a text whose ASCII-ness is known.
    pub(crate) fn reference_text<'t>(&self, t: Text<'t>) -> Option<&'t str> {
        // Each pattern ends with its reference (then at most a `/`): the trailing digits of
        // a plain match, found without captures.
        [&self.labelled_ref, &self.channel_ref, &self.slash_info]
            .iter()
            .find_map(|r| r.find(t))
            .map(|m| trailing_digits(m.as_str().strip_suffix('/').unwrap_or(m.as_str())))
            .or_else(|| self.bare_rrn(t))
    }

    /// Last resort for "For IMPS -NAME- 618502233593": a lone 12-digit number (the RRN's
    /// length) in a UPI/IMPS text, unless it reads as a phone number (`91…`, `1800…`, or after
    /// "call"/"SMS"/"to").
    fn bare_rrn<'t>(&self, t: Text<'t>) -> Option<&'t str> {
        let text = t.as_str();
        if !self.channel_word.is_match(t) {
            return None;
        }
        self.twelve
            .find_iter(t)
            .map(|m| {
                // The twelve digits inside the match (which may include one delimiter each side).
                let s = m.as_str();
                let from = s.find(|c: char| c.is_ascii_digit()).unwrap_or(0);
                (m.start() + from, &s[from..from + 12.min(s.len() - from)])
            })
            .find(|&(at, n)| {
                let before = text[floor(text, at.saturating_sub(14))..at].to_ascii_lowercase();
                !(n.starts_with("91")
                    || n.starts_with("1800")
                    || before.ends_with('+')
                    || [
                        "call", "sms", " to", "helpline", "toll", "dial", "whatsapp", "contact",
                    ]
                    .iter()
                    .any(|w| before.contains(w)))
            })
            .map(|(_, n)| n)
    }
}

/// Which group of [`VERBS`] a matched verb belongs to, from its words.
fn verb_kind(word: &str) -> &'static str {
    let w = word.to_ascii_lowercase();
    let first = w.split_whitespace().next().unwrap_or("");
    let you = w.split_whitespace().nth(1) == Some("you");
    match first.trim_end_matches('.') {
        "credited" | "credit" | "deposited" | "added" | "cr" | "/cr/" => "cr",
        "received" => "rcv",
        "paid" | "sent" if you => "rcv",
        "debited" | "debit" | "dr" | "/dr/" | "withdrawn" | "spent" | "purchase" | "deducted" => {
            "dr"
        }
        _ => "mv",
    }
}

/// The run of ASCII digits `s` ends with.
fn trailing_digits(s: &str) -> &str {
    let digits = s.bytes().rev().take_while(u8::is_ascii_digit).count();
    &s[s.len() - digits..]
}

fn floor(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i.min(s.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn read(text: &str) -> (Direction, Option<&str>, Option<&str>) {
        let r = Reader::new().read(text);
        (r.direction, r.amount, r.utr)
    }

    #[test]
    fn sent_by_is_a_credit_sent_to_a_debit() {
        assert_eq!(
            read("Rs.500.00 credited to your A/c XX1234 sent by RAM KUMAR. UPI Ref 612345678901").0,
            Direction::Credit
        );
        assert_eq!(
            read("Rs.500.00 sent to RAM KUMAR from A/c XX1234. UPI Ref 612345678901").0,
            Direction::Debit
        );
    }

    #[test]
    fn credited_and_debited_from_payer_is_a_credit() {
        let (d, a, u) = read(
            "Your A/c XX1234 is credited with INR 5,000.00 and debited from A/c of RAM KUMAR on 01-02-26. IMPS Ref 612345678901",
        );
        assert_eq!(
            (d, a, u),
            (Direction::Credit, Some("5,000.00"), Some("612345678901"))
        );
        assert_eq!(
            read("Rs 918.00 debited from A/C XXXXXX9130 and credited to user12@apl UPI Ref:466970233165").0,
            Direction::Debit
        );
        assert_eq!(
            read("Your a/c no XX847 is debited for Rs 3200 on 11-07-25 and a/c XX291 credited (IMPS Ref no 712845931206)").0,
            Direction::Debit
        );
    }

    #[test]
    fn terse_and_slash_forms() {
        assert_eq!(
            read(
                "A/c XX1234 Cr INR 1,00,000.00 on 01-02-26 UPI/CR/612345678901/RAM/SBIN. Bal INR 2,00,000.00 CR"
            ),
            (Direction::Credit, Some("1,00,000.00"), Some("612345678901"))
        );
        assert_eq!(
            read("Rs 5500--UPI/CR/612345678902/ASHA/HDFC credited to A/c XX99"),
            (Direction::Credit, Some("5500"), Some("612345678902"))
        );
        assert_eq!(
            read(
                "INR 250.00 credited to A/c XX12.\nInfo: UPI/SBIN/612345678903/PAYER\nAvl Bal INR 900.00"
            ),
            (Direction::Credit, Some("250.00"), Some("612345678903"))
        );
    }

    #[test]
    fn balances_are_not_the_amount() {
        let (d, a, _) = read("Avl Bal Rs 9,999.00. Rs 10.00 credited to your a/c XX12");
        assert_eq!((d, a), (Direction::Credit, Some("10.00")));
    }

    #[test]
    fn payer_phrases_and_fields() {
        assert_eq!(
            read(
                "Rs.500.00 sent by RAVI KUMAR to your A/c XX1234 on 01-12-26. UPI Ref 612345678901"
            ),
            (Direction::Credit, Some("500.00"), Some("612345678901"))
        );
        assert_eq!(
            read("INR 500.00 credited to your a/c XX1234 by a/c of RAVI XX9876 (IMPS Ref 612345678901)").0,
            Direction::Credit
        );
        assert_eq!(
            read("Rs 500 debited from your a/c XX1234 and credited to a/c XX5678 of RAVI").0,
            Direction::Debit
        );
        assert_eq!(
            read("Credit Alert\nAmount: Rs 500.00\nA/c: XX1234\nRef: 612345678901"),
            (Direction::Credit, Some("500.00"), Some("612345678901"))
        );
        assert_eq!(
            read("Your request for Rs 500 has been received. Ref 612345678901").0,
            Direction::Unclear
        );
    }

    #[test]
    fn unbound_credit_is_unclear() {
        assert_eq!(
            read("REDBUS credited. RRN 060649915527").0,
            Direction::Unclear
        );
    }
}
