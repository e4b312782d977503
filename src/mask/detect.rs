//! Sensitive-data detectors run over the text of a response: every string
//! value, every object member name and every number.
//!
//! The built-in detectors are hand-written single-pass scanners rather than
//! regular expressions: each first looks for a cheap anchor (`@`, `eyJ`,
//! `-----BEGIN `, `AKIA`, a digit) and every scan moves forward only, so the cost
//! is linear in the length of the string whatever its content. User patterns use
//! `regex-lite`, whose matcher is also linear-time (no backtracking).
//!
//! Built-ins, by the name used in `detect.builtin` and in metrics:
//! - `private_key`: a PEM block whose label contains `PRIVATE KEY`, from
//!   `-----BEGIN` to the end of its `-----END ...-----` line (to the end of the
//!   string when the end line is missing: a truncated key is still a key).
//! - `jwt`: three or more dot-separated base64url segments, the first starting
//!   `eyJ` (a JSON object header) and at least 10 characters long (JWS and JWE).
//! - `aws_access_key`: `AKIA` (long-term) or `ASIA` (temporary) followed by 16
//!   upper-case letters or digits, not inside a longer word.
//! - `card`: 13 to 19 digits, optionally in groups of at least 3 digits
//!   separated by one space or dash, passing the Luhn check and starting with a
//!   major network prefix (2221–2720, 3, 4, 5, 6). The prefix rule keeps random
//!   numeric IDs (which pass Luhn one time in ten) from being flagged.
//! - `us_ssn`: `AAA-GG-SSSS` (dashes, or spaces used consistently), excluding
//!   area 000, 666 and 900–999, group 00 and serial 0000. Nine digits without
//!   separators are not flagged: too many other numbers look like that.
//! - `email`: `local@domain.tld` with a dotted domain and an alphabetic TLD of
//!   two or more letters.
//!
//! What is scanned, and what `redact` writes:
//! - String values and member names: their decoded text (escapes resolved, as a
//!   client would read them); each hit is replaced by `[REDACTED:<kind>]` inside
//!   the string ([`Detectors::scan`]). A name is data a client receives like any
//!   value (`{"ann@example.com": {...}}`), so it is held to the same rules.
//! - Numbers: their JSON text as written (`4111111111111111`, `-1.5e3`), with
//!   each detector's own rules (a card number still needs its prefix and Luhn
//!   digit); a number cannot hold a marker, so a hit replaces the whole number by
//!   the string `"[REDACTED:<kind>]"` ([`Detectors::scan_number`]). Only `card`
//!   and user patterns can match a number's characters (`-+.eE` and digits).
//! - `true`, `false` and `null` are not scanned: they carry no text of their own.

use crate::config::check::{self, NameChars, MAX_METRIC_NAME};
use crate::config::{ConfigError, DetectAction, DetectConfig};
use regex_lite::{Regex, RegexBuilder};
use std::borrow::Cow;

/// Rounds of redaction on one text before a text that keeps changing is withheld.
const MAX_REDACTION_ROUNDS: usize = 4;

/// Names accepted in `detect.builtin`, in the order detectors run.
pub const BUILTIN_NAMES: [&str; 6] = [
    "private_key",
    "jwt",
    "aws_access_key",
    "card",
    "us_ssn",
    "email",
];

/// Compiled-program size limit for a user pattern (bytes, `regex-lite` units).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;
/// Longest accepted user pattern name (it becomes part of a metric name).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    PrivateKey,
    Jwt,
    AwsAccessKey,
    Card,
    UsSsn,
    Email,
}

impl Builtin {
    /// Length in bytes of the shortest text the detector can match: `a@b.cc`;
    /// 9 digits and 2 separators; 13 digits; `AKIA` and 16 more; `eyJ` and 7
    /// more, then two dots; `-----BEGIN `, `PRIVATE KEY` and `-----`. Most member
    /// names and numbers are shorter than all of them, so checking this first
    /// keeps the cost of scanning them close to nothing.
    fn min_len(self) -> usize {
        match self {
            Builtin::Email => 6,
            Builtin::UsSsn => 11,
            Builtin::Card => CARD_MIN,
            Builtin::AwsAccessKey => 20,
            Builtin::Jwt => 12,
            Builtin::PrivateKey => 27,
        }
    }
}

const BUILTINS: [Builtin; 6] = [
    Builtin::PrivateKey,
    Builtin::Jwt,
    Builtin::AwsAccessKey,
    Builtin::Card,
    Builtin::UsSsn,
    Builtin::Email,
];

#[derive(Debug, Clone)]
enum Finder {
    Builtin(Builtin),
    Pattern(Regex),
}

#[derive(Debug, Clone)]
struct Detector {
    kind: String,
    marker: String,
    finder: Finder,
}

/// The compiled `response.detect` section.
#[derive(Debug, Clone)]
pub(crate) struct Detectors {
    detectors: Vec<Detector>,
    action: DetectAction,
    /// The shortest text any detector can match (1 with a user pattern): most
    /// member names and numbers are shorter and are not scanned at all.
    min_len: usize,
}

/// What scanning one string found.
pub(crate) enum Scan {
    /// Nothing to change (no hit, or `report`).
    Unchanged,
    /// `redact`: the string with every hit replaced (for a number: the marker
    /// that replaces it whole).
    Redacted(String),
    /// `block`: the index of the first detector that hit.
    Blocked(usize),
}

impl Detectors {
    /// Compiles `detect`; `path` is the config path of the `detect` object.
    pub(crate) fn compile(cfg: &DetectConfig, path: &str) -> Result<Self, ConfigError> {
        if cfg.builtin.is_empty() && cfg.patterns.is_empty() {
            return Err(ConfigError::new(
                path,
                "name at least one detector in `builtin` or `patterns`",
            ));
        }
        let mut wanted = [false; BUILTINS.len()];
        for (i, name) in cfg.builtin.iter().enumerate() {
            let at = format!("{path}.builtin[{i}]");
            let Some(idx) = BUILTIN_NAMES.iter().position(|n| n == name) else {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "unknown detector `{name}`; known: {}",
                        BUILTIN_NAMES.join(", ")
                    ),
                ));
            };
            if let Some(w) = wanted.get_mut(idx) {
                if *w {
                    return Err(ConfigError::new(at, format!("`{name}` is listed twice")));
                }
                *w = true;
            }
        }
        let mut detectors: Vec<Detector> = BUILTINS
            .iter()
            .zip(BUILTIN_NAMES)
            .zip(wanted)
            .filter(|(_, w)| *w)
            .map(|((b, name), _)| Detector {
                kind: name.to_string(),
                marker: format!("[REDACTED:{name}]"),
                finder: Finder::Builtin(*b),
            })
            .collect();
        for (i, p) in cfg.patterns.iter().enumerate() {
            let at = format!("{path}.patterns[{i}]");
            let name = &p.name;
            check::metric_name(
                name,
                MAX_METRIC_NAME,
                NameChars::Lower,
                &format!("{at}.name"),
            )?;
            if BUILTIN_NAMES.contains(&name.as_str()) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("`{name}` is the name of a built-in detector"),
                ));
            }
            if detectors.iter().any(|d| &d.kind == name) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("`{name}` is already used by another pattern"),
                ));
            }
            let re = RegexBuilder::new(&p.regex)
                .size_limit(PATTERN_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    ConfigError::new(
                        format!("{at}.regex"),
                        format!("invalid regex-lite pattern: {e}"),
                    )
                })?;
            if re.is_match("") {
                return Err(ConfigError::new(
                    format!("{at}.regex"),
                    "pattern matches the empty string; it would flag every value",
                ));
            }
            detectors.push(Detector {
                kind: name.clone(),
                marker: format!("[REDACTED:{name}]"),
                finder: Finder::Pattern(re),
            });
        }
        let min_len = detectors
            .iter()
            .map(|d| match d.finder {
                Finder::Builtin(b) => b.min_len(),
                Finder::Pattern(_) => 1,
            })
            .min()
            .unwrap_or(1);
        Ok(Detectors {
            detectors,
            action: cfg.action,
            min_len,
        })
    }

    /// The detector kinds, in the order hits are reported.
    pub(crate) fn kinds(&self) -> impl Iterator<Item = &str> {
        self.detectors.iter().map(|d| d.kind.as_str())
    }

    /// Number of detectors.
    pub(crate) fn len(&self) -> usize {
        self.detectors.len()
    }

    /// Scans one decoded string (a value or a member name), adding hits to
    /// `hits` (indexed like [`Self::kinds`]). Under `redact` each detector runs on
    /// the output of the previous one, so a span already replaced is not counted
    /// twice.
    pub(crate) fn scan(
        &self,
        text: &str,
        hits: &mut [u32],
        ranges: &mut Vec<(usize, usize)>,
    ) -> Scan {
        self.scan_text(text, hits, ranges, false)
    }

    /// Scans the JSON text of one number, adding hits to `hits` like
    /// [`Self::scan`]. Under `redact` the first detector that hits replaces the
    /// whole number by its marker (`Scan::Redacted` holds the marker; the caller
    /// writes it as a JSON string), and later detectors have nothing left to see.
    pub(crate) fn scan_number(
        &self,
        text: &str,
        hits: &mut [u32],
        ranges: &mut Vec<(usize, usize)>,
    ) -> Scan {
        self.scan_text(text, hits, ranges, true)
    }

    /// The scan of [`Self::scan`] and [`Self::scan_number`]; `whole`: a hit under
    /// `redact` replaces the whole text by the marker.
    fn scan_text(
        &self,
        text: &str,
        hits: &mut [u32],
        ranges: &mut Vec<(usize, usize)>,
        whole: bool,
    ) -> Scan {
        if text.len() < self.min_len {
            return Scan::Unchanged;
        }
        let mut current: Cow<'_, str> = Cow::Borrowed(text);
        // A redaction changes the text the next detectors (and the earlier ones)
        // see: joining what stood around a secret can make a new one (an e-mail
        // address removed from inside a PEM label leaves a label). So redaction
        // repeats until a round changes nothing, and what leaves holds nothing a
        // detector finds. Rounds after the first are rare (only after a redaction)
        // and bounded; a text still changing then is withheld.
        for round in 0..MAX_REDACTION_ROUNDS {
            let mut changed = false;
            for (i, d) in self.detectors.iter().enumerate() {
                ranges.clear();
                d.find(&current, ranges);
                if ranges.is_empty() {
                    continue;
                }
                if let Some(h) = hits.get_mut(i) {
                    *h = h.saturating_add(u32::try_from(ranges.len()).unwrap_or(u32::MAX));
                }
                match self.action {
                    DetectAction::Block => return Scan::Blocked(i),
                    DetectAction::Report => {}
                    DetectAction::Redact if whole => return Scan::Redacted(d.marker.clone()),
                    DetectAction::Redact => {
                        current = Cow::Owned(replace_ranges(&current, ranges, &d.marker));
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
            if round + 1 == MAX_REDACTION_ROUNDS {
                let first = self.detectors.iter().position(|d| {
                    ranges.clear();
                    d.find(&current, ranges);
                    !ranges.is_empty()
                });
                if let Some(i) = first {
                    return Scan::Blocked(i);
                }
            }
        }
        match current {
            Cow::Owned(s) => Scan::Redacted(s),
            Cow::Borrowed(_) => Scan::Unchanged,
        }
    }
}

/// `text` with each of the sorted, disjoint byte `ranges` replaced by `marker`.
fn replace_ranges(text: &str, ranges: &[(usize, usize)], marker: &str) -> String {
    let mut out = String::with_capacity(text.len() + ranges.len() * marker.len());
    let mut last = 0;
    for &(start, end) in ranges {
        out.push_str(text.get(last..start).unwrap_or(""));
        out.push_str(marker);
        last = end;
    }
    out.push_str(text.get(last..).unwrap_or(""));
    out
}

impl Detector {
    /// Appends the byte ranges of hits in `s`: sorted, disjoint, on char boundaries.
    fn find(&self, s: &str, out: &mut Vec<(usize, usize)>) {
        match &self.finder {
            Finder::Pattern(re) => {
                out.extend(
                    re.find_iter(s)
                        .filter(|m| !m.is_empty())
                        .map(|m| (m.start(), m.end())),
                );
            }
            Finder::Builtin(b) if s.len() < b.min_len() => {}
            Finder::Builtin(b) => {
                let bytes = s.as_bytes();
                match b {
                    Builtin::PrivateKey => find_private_keys(bytes, out),
                    Builtin::Jwt => find_jwts(bytes, out),
                    Builtin::AwsAccessKey => find_aws_keys(bytes, out),
                    Builtin::Card => find_cards(bytes, out),
                    Builtin::UsSsn => find_ssns(bytes, out),
                    Builtin::Email => find_emails(bytes, out),
                }
            }
        }
    }
}

fn is_alnum(b: Option<&u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_alphanumeric())
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Finds `needle` in `hay` at or after `from`.
fn find_from(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let (&first, tail) = needle.split_first()?;
    let mut i = from;
    while let Some(p) = hay.get(i..)?.iter().position(|&c| c == first) {
        let at = i + p;
        if hay.get(at + 1..at + needle.len()) == Some(tail) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

fn find_private_keys(b: &[u8], out: &mut Vec<(usize, usize)>) {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    const DASHES: &[u8] = b"-----";
    let mut from = 0;
    while let Some(start) = find_from(b, BEGIN, from) {
        let label_start = start + BEGIN.len();
        let label_end = match pem_label(b, label_start) {
            Ok(end) => end,
            Err(stop) => {
                from = stop.max(label_start);
                continue;
            }
        };
        let label = b.get(label_start..label_end).unwrap_or(&[]);
        if find_from(label, b"PRIVATE KEY", 0).is_none() {
            from = label_end;
            continue;
        }
        // To the end of the first well-formed END line (`-----END <label>-----`);
        // to the end of the string when there is none, so a malformed END line
        // never ends the match early and never takes the dashes of a BEGIN line
        // that follows. END searches cover disjoint regions: linear overall.
        let mut search = label_end + DASHES.len();
        let end = loop {
            let Some(e) = find_from(b, END, search) else {
                break b.len();
            };
            match pem_label(b, e + END.len()) {
                Ok(close) if close > e + END.len() => break close + DASHES.len(),
                Ok(close) => search = close,
                Err(stop) => search = stop.max(e + END.len()),
            }
        };
        out.push((start, end));
        from = end;
    }
}

/// The end of an RFC 7468 label starting at `at`: printable characters with single
/// hyphens, up to the next `-----` (`Ok` with its position). `Err` with the position
/// where the label broke off. Judging a label by its characters rather than by a
/// length bound means a redaction elsewhere in the string, which changes lengths,
/// cannot turn a non-label into a label; each byte is looked at once, as the next
/// search starts where this one stopped.
fn pem_label(b: &[u8], at: usize) -> Result<usize, usize> {
    let mut i = at;
    loop {
        match b.get(i) {
            Some(b'-') if b.get(i..).is_some_and(|rest| rest.starts_with(b"-----")) => {
                return Ok(i)
            }
            Some(b'-') if b.get(i + 1) == Some(&b'-') => return Err(i),
            Some(0x20..=0x7e) => i += 1,
            _ => return Err(i),
        }
    }
}

fn b64_run(b: &[u8], from: usize) -> usize {
    let mut i = from;
    while b.get(i).is_some_and(|&c| is_b64url(c)) {
        i += 1;
    }
    i
}

fn find_jwts(b: &[u8], out: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(start) = find_from(b, b"eyJ", from) {
        let prev = start.checked_sub(1).and_then(|p| b.get(p)).copied();
        if prev.is_some_and(|c| is_b64url(c) || c == b'.') {
            // Inside a longer base64 run: skip the whole run, so each byte is seen once.
            from = b64_run(b, start);
            continue;
        }
        let first_end = b64_run(b, start);
        let mut end = first_end;
        let mut segments = 1;
        while b.get(end) == Some(&b'.') {
            let next = b64_run(b, end + 1);
            if next == end + 1 && segments >= 3 {
                break;
            }
            end = next;
            segments += 1;
        }
        // An unsecured JWT ends with an empty third segment ("a.b."): keep the dot.
        if segments >= 3 && first_end - start >= 10 {
            out.push((start, end));
        }
        from = end.max(start + 3);
    }
}

fn find_aws_keys(b: &[u8], out: &mut Vec<(usize, usize)>) {
    let mut i = 0;
    while i + 20 <= b.len() {
        let head = b.get(i..i + 4);
        if (head == Some(b"AKIA") || head == Some(b"ASIA"))
            && !is_alnum(i.checked_sub(1).and_then(|p| b.get(p)))
            && b.get(i + 4..i + 20).is_some_and(|t| {
                t.iter()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            })
            && !is_alnum(b.get(i + 20))
        {
            out.push((i, i + 20));
            i += 20;
        } else {
            i += 1;
        }
    }
}

/// Luhn check over ASCII digits (separators skipped).
fn luhn(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0'));
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

/// Major card network prefixes (ISO/IEC 7812 IINs of Visa, Mastercard, Amex,
/// Diners, JCB, Discover, UnionPay, Maestro).
fn card_prefix_ok(digits: &[u8]) -> bool {
    match digits.first() {
        Some(b'3'..=b'6') => true,
        Some(b'2') => {
            let four = digits.get(..4).map(|d| {
                d.iter()
                    .fold(0u32, |acc, c| acc * 10 + u32::from(c.wrapping_sub(b'0')))
            });
            four.is_some_and(|v| (2221..=2720).contains(&v))
        }
        _ => false,
    }
}

const CARD_MIN: usize = 13;
const CARD_MAX: usize = 19;
const CARD_MIN_GROUP: usize = 3;

/// End of the digit group starting at `i`, and where the next group of the same
/// run starts (after one space or dash), if one follows.
fn card_group(b: &[u8], mut i: usize) -> (usize, Option<usize>) {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let sep = b.get(i).is_some_and(|&c| c == b' ' || c == b'-');
    let next = (sep && b.get(i + 1).is_some_and(u8::is_ascii_digit)).then_some(i + 1);
    (i, next)
}

fn find_cards(b: &[u8], out: &mut Vec<(usize, usize)>) {
    // Groups of one run: (start, end) byte offsets of digit groups joined by one
    // separator. Reused across runs; allocated only for a run long enough to
    // hold a card, since this runs on every string, name and number.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut digits = [0u8; CARD_MAX];
    let mut i = 0;
    while i < b.len() {
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
            continue;
        }
        let run_start = i;
        // Most digit runs (quantities, prices, dates, most numbers) are shorter
        // than a card: measure the run first and skip those.
        let mut total = 0;
        let run_end = loop {
            let (end, next) = card_group(b, i);
            total += end - i;
            match next {
                Some(n) => i = n,
                None => break end,
            }
        };
        i = run_end;
        if total < CARD_MIN {
            continue;
        }
        groups.clear();
        let mut g_start = run_start;
        loop {
            let (end, next) = card_group(b, g_start);
            groups.push((g_start, end));
            match next {
                Some(n) => g_start = n,
                None => break,
            }
        }
        let prefixed = is_alnum(run_start.checked_sub(1).and_then(|p| b.get(p)));
        let suffixed = is_alnum(b.get(run_end));
        let single = groups.len() == 1;
        let mut g = 0;
        while g < groups.len() {
            let mut best: Option<usize> = None;
            let mut count = 0;
            for (j, &(gs, ge)) in groups.iter().enumerate().skip(g) {
                let len = ge - gs;
                if !single && len < CARD_MIN_GROUP {
                    break;
                }
                count += len;
                if count > CARD_MAX {
                    break;
                }
                if count < CARD_MIN || (g == 0 && prefixed) || (j + 1 == groups.len() && suffixed) {
                    continue;
                }
                // `count` <= CARD_MAX, so the digits fit.
                let mut n = 0;
                for &(s, e) in groups.get(g..=j).unwrap_or(&[]) {
                    for &c in b.get(s..e).unwrap_or(&[]) {
                        if let Some(slot) = digits.get_mut(n) {
                            *slot = c;
                            n += 1;
                        }
                    }
                }
                let window = digits.get(..n).unwrap_or(&[]);
                if card_prefix_ok(window) && luhn(window.iter().copied()) {
                    best = Some(j);
                }
            }
            match (best, groups.get(g)) {
                (Some(j), Some(&(gs, _))) => {
                    let ge = groups.get(j).map_or(gs, |x| x.1);
                    out.push((gs, ge));
                    g = j + 1;
                }
                _ => g += 1,
            }
        }
    }
}

fn digits_value(b: &[u8]) -> u32 {
    b.iter()
        .fold(0, |acc, c| acc * 10 + u32::from(c.wrapping_sub(b'0')))
}

fn find_ssns(b: &[u8], out: &mut Vec<(usize, usize)>) {
    let mut i = 0;
    while i + 11 <= b.len() {
        let prev = i.checked_sub(1).and_then(|p| b.get(p));
        let Some(w) = b.get(i..i + 11) else { break };
        let shape = |idx: &[usize]| {
            idx.iter()
                .all(|&k| w.get(k).is_some_and(u8::is_ascii_digit))
        };
        let sep = w.get(3).copied();
        let ok = shape(&[0, 1, 2, 4, 5, 7, 8, 9, 10])
            && matches!(sep, Some(b'-' | b' '))
            && w.get(6).copied() == sep
            && !is_alnum(prev)
            && prev != Some(&b'-')
            && !is_alnum(b.get(i + 11))
            && b.get(i + 11) != Some(&b'-');
        if ok {
            let area = digits_value(w.get(0..3).unwrap_or(&[]));
            let group = digits_value(w.get(4..6).unwrap_or(&[]));
            let serial = digits_value(w.get(7..11).unwrap_or(&[]));
            if area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 {
                out.push((i, i + 11));
                i += 11;
                continue;
            }
        }
        i += 1;
    }
}

fn is_local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-'
}

fn find_emails(b: &[u8], out: &mut Vec<(usize, usize)>) {
    // `floor` keeps the backward scan of the local part from re-reading bytes that
    // an earlier address (or an earlier `@`) already covered: linear overall.
    let mut floor = 0;
    let mut from = 0;
    while let Some(at) = b
        .get(from..)
        .and_then(|r| r.iter().position(|&c| c == b'@'))
        .map(|p| p + from)
    {
        let mut start = at;
        while start > floor && b.get(start - 1).is_some_and(|&c| is_local_char(c)) {
            start -= 1;
        }
        while start < at && b.get(start) == Some(&b'.') {
            start += 1;
        }
        let mut end = at + 1;
        while b.get(end).is_some_and(|&c| is_domain_char(c)) {
            end += 1;
        }
        while end > at + 1 && b.get(end - 1).is_some_and(|&c| c == b'.' || c == b'-') {
            end -= 1;
        }
        let domain = b.get(at + 1..end).unwrap_or(&[]);
        if start < at && valid_domain(domain) {
            out.push((start, end));
            floor = end;
            from = end;
        } else {
            floor = at + 1;
            from = at + 1;
        }
    }
}

fn valid_domain(d: &[u8]) -> bool {
    let mut labels = d.split(|&c| c == b'.');
    let mut count = 0;
    let mut last: &[u8] = &[];
    for label in labels.by_ref() {
        if label.is_empty() || label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            return false;
        }
        count += 1;
        last = label;
    }
    count >= 2 && last.len() >= 2 && last.iter().all(u8::is_ascii_alphabetic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PatternConfig;

    fn detectors(
        builtin: &[&str],
        patterns: &[(&str, &str)],
        action: DetectAction,
    ) -> Result<Detectors, String> {
        let cfg = DetectConfig {
            builtin: builtin.iter().map(|s| s.to_string()).collect(),
            patterns: patterns
                .iter()
                .map(|(n, r)| PatternConfig {
                    name: n.to_string(),
                    regex: r.to_string(),
                })
                .collect(),
            action,
        };
        Detectors::compile(&cfg, "routes[0].response.detect").map_err(|e| e.to_string())
    }

    fn redact(kind: &str, text: &str) -> String {
        let d = match detectors(&[kind], &[], DetectAction::Redact) {
            Ok(d) => d,
            Err(e) => unreachable!("{e}"),
        };
        let mut hits = vec![0; d.len()];
        match d.scan(text, &mut hits, &mut Vec::new()) {
            Scan::Redacted(s) => s,
            Scan::Unchanged => text.to_string(),
            Scan::Blocked(_) => unreachable!(),
        }
    }

    #[test]
    fn detector_table() {
        // (detector, input, expected after redaction)
        let cases: &[(&str, &str, &str)] = &[
            // card: Luhn-valid test numbers of several networks and formats.
            ("card", "4111111111111111", "[REDACTED:card]"),
            (
                "card",
                "card 4111 1111 1111 1111 exp 12/29",
                "card [REDACTED:card] exp 12/29",
            ),
            ("card", "4111-1111-1111-1111", "[REDACTED:card]"),
            ("card", "amex 378282246310005.", "amex [REDACTED:card]."),
            ("card", "3782 822463 10005", "[REDACTED:card]"),
            (
                "card",
                "mc 5555555555554444 and 2223003122003222",
                "mc [REDACTED:card] and [REDACTED:card]",
            ),
            ("card", "4111 1111 1111 1111 2024", "[REDACTED:card] 2024"),
            ("card", "4111111111111112", "4111111111111112"), // Luhn fails
            ("card", "1234567812345670", "1234567812345670"), // Luhn ok, no network prefix
            ("card", "411111111111", "411111111111"),         // 12 digits
            ("card", "41111111111111111111", "41111111111111111111"), // 20 digits in one run
            ("card", "id4111111111111111", "id4111111111111111"), // inside a word
            ("card", "4111111111111111x", "4111111111111111x"),
            (
                "card",
                "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
                "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
            ),
            ("card", "4111--1111-1111-1111", "4111--1111-1111-1111"), // "--" splits the run
            ("card", "", ""),
            // us_ssn
            ("us_ssn", "ssn 123-45-6789", "ssn [REDACTED:us_ssn]"),
            ("us_ssn", "123 45 6789", "[REDACTED:us_ssn]"),
            ("us_ssn", "000-12-3456", "000-12-3456"),
            ("us_ssn", "666-12-3456", "666-12-3456"),
            ("us_ssn", "912-12-3456", "912-12-3456"),
            ("us_ssn", "123-00-4567", "123-00-4567"),
            ("us_ssn", "123-45-0000", "123-45-0000"),
            ("us_ssn", "123456789", "123456789"),
            ("us_ssn", "123-45 6789", "123-45 6789"),
            ("us_ssn", "1123-45-6789", "1123-45-6789"),
            ("us_ssn", "555-123-45-6789", "555-123-45-6789"),
            ("us_ssn", "123-45-67890", "123-45-67890"),
            // email
            (
                "email",
                "mail alice.b+x@mail.example.com now",
                "mail [REDACTED:email] now",
            ),
            ("email", "<bob@example.org>.", "<[REDACTED:email]>."),
            ("email", "a@b@example.com", "a@[REDACTED:email]"),
            ("email", "user@localhost", "user@localhost"),
            ("email", "user@example.c0m", "user@example.c0m"),
            ("email", "@example.com", "@example.com"),
            ("email", "x@-bad.com", "x@-bad.com"),
            ("email", "see @ here", "see @ here"),
            ("email", "ü@example.com", "ü@example.com"),
            // aws_access_key
            (
                "aws_access_key",
                "key=AKIAIOSFODNN7EXAMPLE;",
                "key=[REDACTED:aws_access_key];",
            ),
            (
                "aws_access_key",
                "ASIAY34FZKBOKMUTVV7A",
                "[REDACTED:aws_access_key]",
            ),
            (
                "aws_access_key",
                "XAKIAIOSFODNN7EXAMPLE",
                "XAKIAIOSFODNN7EXAMPLE",
            ),
            (
                "aws_access_key",
                "AKIAIOSFODNN7EXAMPLEX",
                "AKIAIOSFODNN7EXAMPLEX",
            ),
            (
                "aws_access_key",
                "AKIAiosfodnn7example",
                "AKIAiosfodnn7example",
            ),
            ("aws_access_key", "AKIA1234", "AKIA1234"),
            // private_key
            (
                "private_key",
                "k: -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n!",
                "k: [REDACTED:private_key]\n!",
            ),
            (
                "private_key",
                "-----BEGIN PRIVATE KEY-----\nMIIEvQ",
                "[REDACTED:private_key]",
            ),
            (
                "private_key",
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----",
                "[REDACTED:private_key]",
            ),
            (
                "private_key",
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            ),
            (
                "private_key",
                "-----BEGIN PUBLIC KEY-----",
                "-----BEGIN PUBLIC KEY-----",
            ),
            // jwt
            (
                "jwt",
                "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl end",
                "Bearer [REDACTED:jwt] end",
            ),
            (
                "jwt",
                "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
                "[REDACTED:jwt]",
            ),
            (
                "jwt",
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0",
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0",
            ),
            ("jwt", "eyJ.a.b", "eyJ.a.b"),
            (
                "jwt",
                "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
                "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
            ),
            (
                "jwt",
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
                "[REDACTED:jwt]",
            ),
        ];
        for (kind, input, want) in cases {
            assert_eq!(&redact(kind, input), want, "{kind}: {input:?}");
        }
    }

    #[test]
    fn hits_are_counted_per_kind_and_report_changes_nothing() {
        let d = detectors(
            &["email", "card"],
            &[("order_ref", "ORD-[0-9]{6}")],
            DetectAction::Report,
        );
        let Ok(d) = d else { unreachable!() };
        assert_eq!(
            d.kinds().collect::<Vec<_>>(),
            ["card", "email", "order_ref"]
        );
        let mut hits = vec![0; d.len()];
        let s = "a@example.com b@example.com 4111111111111111 ORD-123456";
        assert!(matches!(
            d.scan(s, &mut hits, &mut Vec::new()),
            Scan::Unchanged
        ));
        assert_eq!(hits, [1, 2, 1]);
    }

    #[test]
    fn block_stops_at_first_hit() {
        let Ok(d) = detectors(&["email", "jwt"], &[], DetectAction::Block) else {
            unreachable!()
        };
        let mut hits = vec![0; d.len()];
        assert!(matches!(
            d.scan("x@example.com", &mut hits, &mut Vec::new()),
            Scan::Blocked(1)
        ));
        assert!(matches!(
            d.scan("nothing here", &mut hits, &mut Vec::new()),
            Scan::Unchanged
        ));
    }

    #[test]
    fn min_len_is_the_shortest_match() {
        // The length check before each scanner must never hide a real match:
        // each built-in finds a text of exactly its minimum length.
        let shortest = [
            (Builtin::Email, "a@b.cc"),
            (Builtin::UsSsn, "123-45-6789"),
            (Builtin::Card, "4222222222222"),
            (Builtin::AwsAccessKey, "AKIAIOSFODNN7EXAMPLE"),
            (Builtin::Jwt, "eyJhbGciOi.."),
            (Builtin::PrivateKey, "-----BEGIN PRIVATE KEY-----"),
        ];
        for (b, text) in shortest {
            assert_eq!(text.len(), b.min_len(), "{b:?}");
            let d = Detector {
                kind: String::new(),
                marker: String::new(),
                finder: Finder::Builtin(b),
            };
            let mut out = Vec::new();
            d.find(text, &mut out);
            assert_eq!(out, [(0, text.len())], "{b:?}");
            // The same through a set holding only this detector (its gate is
            // this detector's minimum).
            let name = BUILTIN_NAMES
                .iter()
                .zip(BUILTINS)
                .find(|(_, x)| *x == b)
                .map_or("", |(n, _)| n);
            let Ok(set) = detectors(&[name], &[], DetectAction::Report) else {
                unreachable!()
            };
            let mut hits = vec![0; set.len()];
            let _ = set.scan(text, &mut hits, &mut Vec::new());
            assert_eq!(hits, [1], "{b:?}");
        }
        // With a user pattern the gate is one byte.
        let Ok(set) = detectors(&["private_key"], &[("x", "x")], DetectAction::Report) else {
            unreachable!()
        };
        let mut hits = vec![0; set.len()];
        let _ = set.scan("x", &mut hits, &mut Vec::new());
        let _ = set.scan_number("1", &mut hits, &mut Vec::new());
        assert_eq!(hits, [0, 1]);
    }

    #[test]
    fn numbers_are_replaced_whole_by_the_first_hit() {
        // Kinds: card, us_ssn, acct. (action, number text, expected result,
        // expected hits of card and acct)
        #[derive(Debug, PartialEq)]
        enum Want {
            Unchanged,
            Redacted(&'static str),
            Blocked(usize),
        }
        let cases: &[(DetectAction, &str, Want, [u32; 2])] = &[
            (
                DetectAction::Redact,
                "4111111111111111",
                Want::Redacted("[REDACTED:card]"),
                [1, 0],
            ),
            (
                DetectAction::Redact,
                "-4111111111111111.0",
                Want::Redacted("[REDACTED:card]"),
                [1, 0],
            ),
            // Both detectors match; the first replaces the number and is the only one counted.
            (
                DetectAction::Redact,
                "4900123456111114",
                Want::Redacted("[REDACTED:card]"),
                [1, 0],
            ),
            (
                DetectAction::Redact,
                "900123456",
                Want::Redacted("[REDACTED:acct]"),
                [0, 1],
            ),
            (
                DetectAction::Redact,
                "4111111111111112",
                Want::Unchanged,
                [0, 0],
            ),
            (
                DetectAction::Redact,
                "1234567812345670",
                Want::Unchanged,
                [0, 0],
            ),
            (DetectAction::Redact, "123456789", Want::Unchanged, [0, 0]),
            (DetectAction::Redact, "-1.5e-3", Want::Unchanged, [0, 0]),
            (
                DetectAction::Report,
                "4900123456111114",
                Want::Unchanged,
                [1, 1],
            ),
            (DetectAction::Block, "900123456", Want::Blocked(2), [0, 1]),
            (
                DetectAction::Block,
                "5555555555554444",
                Want::Blocked(0),
                [1, 0],
            ),
        ];
        for (action, text, want, want_hits) in cases {
            let Ok(d) = detectors(&["card", "us_ssn"], &[("acct", "9001[0-9]{5}")], *action) else {
                unreachable!()
            };
            let mut hits = vec![0; d.len()];
            let got = match d.scan_number(text, &mut hits, &mut Vec::new()) {
                Scan::Unchanged => Want::Unchanged,
                Scan::Redacted(s) if s == "[REDACTED:card]" => Want::Redacted("[REDACTED:card]"),
                Scan::Redacted(s) if s == "[REDACTED:acct]" => Want::Redacted("[REDACTED:acct]"),
                Scan::Redacted(s) => unreachable!("{s}"),
                Scan::Blocked(i) => Want::Blocked(i),
            };
            assert_eq!(&got, want, "{action:?} {text}");
            assert_eq!([hits[0], hits[2]], *want_hits, "{action:?} {text}");
            assert_eq!(hits[1], 0, "us_ssn never matches a number: {text}");
        }
    }

    #[test]
    fn user_patterns_redact_and_skip_empty_matches() {
        let Ok(d) = detectors(
            &[],
            &[("iban", r"\bDE[0-9]{20}\b"), ("opt", r"x?y")],
            DetectAction::Redact,
        ) else {
            unreachable!()
        };
        let mut hits = vec![0; d.len()];
        let out = d.scan(
            "pay DE89370400440532013000 now y",
            &mut hits,
            &mut Vec::new(),
        );
        assert!(
            matches!(out, Scan::Redacted(ref s) if s == "pa[REDACTED:opt] [REDACTED:iban] now [REDACTED:opt]")
        );
        assert_eq!(hits, [1, 2]);
    }

    #[test]
    fn config_errors_name_the_field() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (&[], &[], "routes[0].response.detect: name at least one detector in `builtin` or `patterns`"),
            (&["card", "cc"], &[], "routes[0].response.detect.builtin[1]: unknown detector `cc`; known: private_key, jwt, aws_access_key, card, us_ssn, email"),
            (&["card", "card"], &[], "routes[0].response.detect.builtin[1]: `card` is listed twice"),
            (&[], &[("x", "(")], "routes[0].response.detect.patterns[0].regex: invalid regex-lite pattern: "),
            (&[], &[("x", "a*")], "routes[0].response.detect.patterns[0].regex: pattern matches the empty string; it would flag every value"),
            (&[], &[("Bad-Name", "a")], "routes[0].response.detect.patterns[0].name: \"Bad-Name\" must be 1-64 a-z, 0-9 or '_' (it is used in metric names)"),
            (&[], &[("email", "a")], "routes[0].response.detect.patterns[0].name: `email` is the name of a built-in detector"),
            (&[], &[("a", "a"), ("a", "b")], "routes[0].response.detect.patterns[1].name: `a` is already used by another pattern"),
        ];
        for (builtin, patterns, want) in cases {
            let got = detectors(builtin, patterns, DetectAction::Redact)
                .err()
                .unwrap_or_default();
            assert!(got.starts_with(want), "{got}\nwant: {want}");
        }
    }

    #[test]
    fn scanners_are_linear_on_adversarial_input() {
        let Ok(d) = detectors(&BUILTIN_NAMES, &[], DetectAction::Report) else {
            unreachable!()
        };
        let inputs = [
            "a@".repeat(50_000),
            "eyJ".repeat(50_000),
            "eyJhbGciOiJIUzI1NiJ9.".repeat(10_000),
            "-----BEGIN ".repeat(20_000),
            "1 ".repeat(50_000),
            "4111 ".repeat(50_000),
            "AKIA".repeat(50_000),
            "123-45-".repeat(50_000),
            ".@.".repeat(50_000),
        ];
        for input in &inputs {
            let t = std::time::Instant::now();
            let mut hits = vec![0; d.len()];
            let _ = d.scan(input, &mut hits, &mut Vec::new());
            // Generous bound (debug build, shared CI core): quadratic would take seconds.
            assert!(
                t.elapsed().as_millis() < 1500,
                "{:?}: {:?}",
                input.get(..12),
                t.elapsed()
            );
        }
    }
}
