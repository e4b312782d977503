//! One forward pass over a JSON body that collects edits: byte ranges to
//! replace or delete. The body is then rebuilt by splicing, so every byte no rule
//! or detector touched (number spelling, key order, duplicate keys, whitespace)
//! leaves exactly as the upstream sent it, and a body nothing matched is not
//! rebuilt at all.
//!
//! Paths are matched while walking, like a small automaton: each value carries
//! the set of `(rule, segments matched)` states that reached it; a state whose
//! segments are all matched selects the value. All rules see the original
//! document (indexes are positions in the upstream's arrays), and a selected
//! value is replaced whole, so rules below it no longer matter.
//!
//! Detectors see everything a client will read that no rule replaced whole:
//! string values, the names of members that stay in the output (a removed
//! member's name goes with it; a member whose value is redacted, hashed or
//! partly kept still shows its name) and numbers. Each is scanned where the walk
//! reads it, so a `block` hit stops the walk at the first hit in document order.
//!
//! The text has already been checked by serde_json, so the walker only needs
//! structure; it still never indexes out of bounds and reports any surprise as
//! [`Fault::Malformed`] rather than panicking.

use super::actions::{self, Action, KeyedHash, REDACTED};
use super::detect::{Detectors, Scan};
use super::path::Segment;
use crate::cloak::CloakKeys;
use std::borrow::Cow;

/// Deepest nesting of objects and arrays accepted (serde_json's default limit).
pub const MAX_DEPTH: usize = 128;

/// A compiled mask rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub segments: Vec<Segment>,
    pub action: Action,
}

/// Why the walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Not the JSON the walker expected (cannot happen after validation).
    Malformed,
    /// A detector in `block` mode hit; its index.
    Blocked(usize),
}

#[derive(Debug, Clone, Copy)]
struct State {
    rule: usize,
    matched: usize,
}

/// What `cloak` rules need: the keys, the kinds, and the caller of this response.
#[derive(Clone, Copy)]
pub(crate) struct Tokens<'a> {
    pub keys: &'a CloakKeys,
    pub kinds: &'a [Box<str>],
    /// The caller's `sub`, on a `per_caller` route.
    pub caller: Option<&'a str>,
    pub per_caller: bool,
}

impl Tokens<'_> {
    /// The JSON string of the token of `text`; `None` when no token may be made:
    /// the value is too long, or a `per_caller` route has no caller (a token bound
    /// to nobody would open for every such caller).
    fn token(&self, kind: u16, text: &str) -> Option<Vec<u8>> {
        if self.per_caller && self.caller.is_none() {
            return None;
        }
        let kind = self.kinds.get(usize::from(kind))?;
        let token = self.keys.cloak(kind, self.caller, text)?;
        Some(actions::json_string(&token))
    }
}

/// Replace `start..end` of the body with `with` (empty: delete).
#[derive(Debug)]
struct Edit {
    start: usize,
    end: usize,
    with: Vec<u8>,
}

/// A member or element of the container being walked: where it starts and ends,
/// and whether a rule removes it.
#[derive(Debug, Clone, Copy)]
struct Item {
    start: usize,
    end: usize,
    removed: bool,
}

/// The walk over one body.
pub(crate) struct Walker<'a> {
    text: &'a str,
    b: &'a [u8],
    pos: usize,
    rules: &'a [Rule],
    detectors: Option<&'a Detectors>,
    keyed: Option<&'a KeyedHash>,
    tokens: Option<Tokens<'a>>,
    /// Only `cloak` rules select (the caller is `unmasked_for`).
    only_cloak: bool,
    /// Stack of active states; each value's states are one slice of it.
    states: Vec<State>,
    /// Stack of the items of the containers being walked.
    items: Vec<Item>,
    edits: Vec<Edit>,
    /// Scratch for detector hit ranges.
    ranges: Vec<(usize, usize)>,
    /// Values selected by a rule.
    pub fields_masked: u32,
    /// Detector hits, indexed like `Detectors::kinds`.
    pub hits: Vec<u32>,
    /// Values replaced by tokens.
    pub cloaked: u32,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(
        text: &'a str,
        rules: &'a [Rule],
        detectors: Option<&'a Detectors>,
        keyed: Option<&'a KeyedHash>,
        tokens: Option<Tokens<'a>>,
        only_cloak: bool,
    ) -> Self {
        Walker {
            text,
            b: text.as_bytes(),
            pos: 0,
            rules,
            detectors,
            keyed,
            tokens,
            only_cloak,
            states: Vec::new(),
            items: Vec::new(),
            edits: Vec::new(),
            ranges: Vec::new(),
            fields_masked: 0,
            hits: vec![0; detectors.map_or(0, Detectors::len)],
            cloaked: 0,
        }
    }

    /// Walks the whole body, then returns the rebuilt body, or `None` when nothing
    /// changed.
    pub(crate) fn run(&mut self) -> Result<Option<Vec<u8>>, Fault> {
        self.states
            .extend((0..self.rules.len()).map(|rule| State { rule, matched: 0 }));
        self.skip_ws();
        let removed = self.value(0, self.states.len(), 0)?;
        self.skip_ws();
        if removed || self.pos != self.b.len() {
            return Err(Fault::Malformed);
        }
        self.splice()
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Fault> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Fault::Malformed)
        }
    }

    fn edit(&mut self, start: usize, end: usize, with: Vec<u8>) {
        self.edits.push(Edit { start, end, with });
    }

    /// The most protective action among the states that selected this value.
    fn target(&self, lo: usize, hi: usize) -> Option<Action> {
        let mut best: Option<Action> = None;
        for st in self.states.get(lo..hi).unwrap_or(&[]) {
            let Some(rule) = self.rules.get(st.rule) else {
                continue;
            };
            if st.matched == rule.segments.len()
                && (!self.only_cloak || matches!(rule.action, Action::Cloak(_)))
                && best.is_none_or(|b| rule.action.protects_more_than(b))
            {
                best = Some(rule.action);
            }
        }
        best
    }

    /// Walks the value at `pos` whose states are `states[lo..hi]`; `depth` is the
    /// number of enclosing containers. Returns true if a rule removes it.
    fn value(&mut self, lo: usize, hi: usize, depth: usize) -> Result<bool, Fault> {
        let start = self.pos;
        if let Some(action) = self.target(lo, hi) {
            self.fields_masked = self.fields_masked.saturating_add(1);
            return self.mask(action, start, depth);
        }
        if lo == hi && self.detectors.is_none() {
            self.skip_value(depth)?;
            return Ok(false);
        }
        match self.peek() {
            Some(b'{') => self.object(lo, hi, depth + 1)?,
            Some(b'[') => self.array(lo, hi, depth + 1)?,
            Some(b'"') => {
                let (end, escaped) = self.string()?;
                if let Some(detectors) = self.detectors {
                    let text = self.string_text(start, end, escaped)?;
                    self.detect(detectors, &text, start, end, false)?;
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                self.scalar();
                if let Some(detectors) = self.detectors {
                    let text = self.text;
                    let number = text.get(start..self.pos).ok_or(Fault::Malformed)?;
                    self.detect(detectors, number, start, self.pos, true)?;
                }
            }
            Some(_) => self.scalar(),
            None => return Err(Fault::Malformed),
        }
        Ok(false)
    }

    fn object(&mut self, lo: usize, hi: usize, depth: usize) -> Result<(), Fault> {
        if depth > MAX_DEPTH {
            return Err(Fault::TooDeep);
        }
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        let first_item = self.items.len();
        let rules = self.rules;
        loop {
            self.skip_ws();
            let start = self.pos;
            if self.peek() != Some(b'"') {
                return Err(Fault::Malformed);
            }
            let (key_end, escaped) = self.string()?;
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            let child_lo = self.states.len();
            // Decoded only when it has escapes and some rule compares names (or
            // a detector reads it, below).
            let mut decoded: Option<String> = None;
            if lo < hi {
                let text = self.text;
                let raw = text.get(start + 1..key_end.saturating_sub(1)).unwrap_or("");
                for i in lo..hi {
                    let Some(st) = self.states.get(i).copied() else {
                        continue;
                    };
                    let selects = match rules.get(st.rule).and_then(|r| r.segments.get(st.matched))
                    {
                        Some(Segment::Wildcard) => true,
                        Some(Segment::Name(name)) if escaped => {
                            if decoded.is_none() {
                                decoded = Some(self.decode(start, key_end)?);
                            }
                            decoded.as_deref() == Some(&**name)
                        }
                        Some(Segment::Name(name)) => raw == &**name,
                        _ => false,
                    };
                    if selects {
                        self.advance(st);
                    }
                }
            }
            if let Some(detectors) = self.detectors {
                // The name leaves with its member only when a rule removes the
                // member; whatever else happens to the value, the client reads
                // the name, so it is scanned like a string value.
                let child_hi = self.states.len();
                if child_lo == child_hi || self.target(child_lo, child_hi) != Some(Action::Remove) {
                    let name = match decoded {
                        Some(d) => Cow::Owned(d),
                        None => self.string_text(start, key_end, escaped)?,
                    };
                    self.detect(detectors, &name, start, key_end, false)?;
                }
            }
            self.member(start, child_lo, depth)?;
            if self.closes(b'}')? {
                break;
            }
        }
        self.removals(first_item);
        Ok(())
    }

    /// After a member or element: consumes `,` (false: another follows) or the
    /// container's `close` byte (true); anything else is malformed.
    fn closes(&mut self, close: u8) -> Result<bool, Fault> {
        self.skip_ws();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(false)
            }
            Some(c) if c == close => {
                self.pos += 1;
                Ok(true)
            }
            _ => Err(Fault::Malformed),
        }
    }

    /// A rule state that selects this member or element: one more segment matched.
    fn advance(&mut self, st: State) {
        self.states.push(State {
            rule: st.rule,
            matched: st.matched + 1,
        });
    }

    /// Walks one object member's or array element's value, with the states
    /// pushed since `child_lo`, and records it as an item starting at `start`.
    fn member(&mut self, start: usize, child_lo: usize, depth: usize) -> Result<(), Fault> {
        let child_hi = self.states.len();
        let removed = self.value(child_lo, child_hi, depth)?;
        self.states.truncate(child_lo);
        self.items.push(Item {
            start,
            end: self.pos,
            removed,
        });
        Ok(())
    }

    fn array(&mut self, lo: usize, hi: usize, depth: usize) -> Result<(), Fault> {
        if depth > MAX_DEPTH {
            return Err(Fault::TooDeep);
        }
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        let first_item = self.items.len();
        let rules = self.rules;
        let mut index = 0usize;
        loop {
            self.skip_ws();
            let start = self.pos;
            let child_lo = self.states.len();
            for i in lo..hi {
                let Some(st) = self.states.get(i).copied() else {
                    continue;
                };
                let selects = match rules.get(st.rule).and_then(|r| r.segments.get(st.matched)) {
                    Some(Segment::Wildcard) => true,
                    Some(Segment::Index(n)) => *n == index,
                    _ => false,
                };
                if selects {
                    self.advance(st);
                }
            }
            self.member(start, child_lo, depth)?;
            index += 1;
            if self.closes(b']')? {
                break;
            }
        }
        self.removals(first_item);
        Ok(())
    }

    /// Deletes the removed items of the container whose items start at
    /// `items[first..]`, with their separators, so the container stays valid JSON:
    /// removed items before the first kept one take the gap after them, the others
    /// take the gap before them.
    fn removals(&mut self, first: usize) {
        let items = self.items.get(first..).unwrap_or(&[]);
        if items.iter().any(|it| it.removed) {
            let mut deletions = Vec::new();
            match items.iter().position(|it| !it.removed) {
                None => {
                    if let (Some(a), Some(z)) = (items.first(), items.last()) {
                        deletions.push((a.start, z.end));
                    }
                }
                Some(kept) => {
                    for (i, pair) in items.windows(2).enumerate() {
                        if let [prev, next] = pair {
                            if i < kept && prev.removed {
                                deletions.push((prev.start, next.start));
                            } else if i >= kept && next.removed {
                                deletions.push((prev.end, next.end));
                            }
                        }
                    }
                }
            }
            for (start, end) in deletions {
                self.edit(start, end, Vec::new());
            }
        }
        self.items.truncate(first);
    }

    /// Applies `action` to the value at `start`. Returns true for `remove`.
    fn mask(&mut self, action: Action, start: usize, depth: usize) -> Result<bool, Fault> {
        let kind = self.peek().ok_or(Fault::Malformed)?;
        match action {
            Action::Remove => {
                self.skip_value(depth)?;
                return Ok(true);
            }
            Action::Redact => {
                self.skip_value(depth)?;
                self.edit(start, self.pos, actions::json_string(REDACTED));
            }
            Action::KeepLast(n) => match kind {
                b'"' => {
                    let (end, escaped) = self.string()?;
                    let text = self.string_text(start, end, escaped)?;
                    let masked = actions::keep_last(&text, n);
                    self.edit(start, end, actions::json_string(&masked));
                }
                b'{' | b'[' => {
                    self.skip_value(depth)?;
                    self.edit(start, self.pos, actions::json_string(REDACTED));
                }
                b'n' => self.scalar(),
                _ => {
                    self.scalar();
                    let raw = self.text.get(start..self.pos).ok_or(Fault::Malformed)?;
                    let masked = actions::keep_last(raw, n);
                    self.edit(start, self.pos, actions::json_string(&masked));
                }
            },
            Action::Hash => {
                if kind == b'n' {
                    self.scalar();
                    return Ok(false);
                }
                let mut canonical = Vec::new();
                self.canonical(depth, &mut canonical)?;
                // Compile guarantees the key whenever a rule hashes; without it,
                // refusing beats leaking.
                let keyed = self.keyed.ok_or(Fault::Malformed)?;
                let hashed = keyed.hash_json(&canonical);
                self.edit(start, self.pos, hashed);
            }
            Action::Cloak(k) => {
                self.skip_value(depth)?;
                let raw = self.text.get(start..self.pos).ok_or(Fault::Malformed)?;
                // A string is its text and an integer its digits; `null` and `""`
                // have nothing to hide; a fraction, an exponent, a boolean or a
                // container is no id and is redacted.
                let text = match kind {
                    b'"' => self.decode(start, self.pos)?,
                    b'n' => return Ok(false),
                    _ if raw
                        .trim_start_matches('-')
                        .bytes()
                        .all(|b| b.is_ascii_digit()) =>
                    {
                        raw.to_string()
                    }
                    _ => String::new(),
                };
                if raw == "\"\"" {
                    return Ok(false);
                }
                // Compile guarantees the keys whenever a rule cloaks; a value
                // without a token is redacted, never left as it was.
                let token = match (self.tokens, text.is_empty()) {
                    (Some(t), false) => t.token(k, &text),
                    _ => None,
                };
                if token.is_some() {
                    self.cloaked = self.cloaked.saturating_add(1);
                }
                let with = token.unwrap_or_else(|| actions::json_string(REDACTED));
                self.edit(start, self.pos, with);
            }
        }
        Ok(false)
    }

    /// Writes the canonical JSON (see `actions`) of the value at `pos` and moves
    /// past it.
    fn canonical(&mut self, depth: usize, out: &mut Vec<u8>) -> Result<(), Fault> {
        let start = self.pos;
        match self.peek() {
            Some(b'{') => {
                if depth + 1 > MAX_DEPTH {
                    return Err(Fault::TooDeep);
                }
                self.pos += 1;
                let mut members: Vec<(String, Vec<u8>)> = Vec::new();
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                } else {
                    loop {
                        self.skip_ws();
                        let key_start = self.pos;
                        let (key_end, escaped) = self.string()?;
                        let key = self.string_text(key_start, key_end, escaped)?.into_owned();
                        self.skip_ws();
                        self.expect(b':')?;
                        self.skip_ws();
                        let mut value = Vec::new();
                        self.canonical(depth + 1, &mut value)?;
                        members.push((key, value));
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => self.pos += 1,
                            Some(b'}') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(Fault::Malformed),
                        }
                    }
                }
                // RFC 8785 §3.2.3: sort by UTF-16 code units; stable for duplicates.
                members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
                out.push(b'{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    actions::push_json_string(out, key);
                    out.push(b':');
                    out.extend_from_slice(value);
                }
                out.push(b'}');
            }
            Some(b'[') => {
                if depth + 1 > MAX_DEPTH {
                    return Err(Fault::TooDeep);
                }
                self.pos += 1;
                out.push(b'[');
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                } else {
                    let mut first = true;
                    loop {
                        self.skip_ws();
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        self.canonical(depth + 1, out)?;
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => self.pos += 1,
                            Some(b']') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(Fault::Malformed),
                        }
                    }
                }
                out.push(b']');
            }
            Some(b'"') => {
                let (end, escaped) = self.string()?;
                if escaped {
                    let text = self.decode(start, end)?;
                    actions::push_json_string(out, &text);
                } else {
                    // Without escapes the upstream's bytes are already canonical:
                    // valid JSON cannot hold a raw quote, backslash or control byte.
                    out.extend_from_slice(self.b.get(start..end).ok_or(Fault::Malformed)?);
                }
            }
            Some(_) => {
                self.scalar();
                out.extend_from_slice(self.b.get(start..self.pos).ok_or(Fault::Malformed)?);
            }
            None => return Err(Fault::Malformed),
        }
        Ok(())
    }

    /// Runs the detectors over `text`, the content of the token `start..end`:
    /// a string value or member name (decoded), or a number's JSON text
    /// (`number`). Under `redact` the token is replaced by a JSON string: the
    /// string with its hits replaced, or for a number the marker alone.
    fn detect(
        &mut self,
        detectors: &Detectors,
        text: &str,
        start: usize,
        end: usize,
        number: bool,
    ) -> Result<(), Fault> {
        let scan = if number {
            detectors.scan_number(text, &mut self.hits, &mut self.ranges)
        } else {
            detectors.scan(text, &mut self.hits, &mut self.ranges)
        };
        match scan {
            Scan::Unchanged => {}
            Scan::Redacted(new) => self.edit(start, end, actions::json_string(&new)),
            Scan::Blocked(i) => return Err(Fault::Blocked(i)),
        }
        Ok(())
    }

    /// The decoded content of the string token `start..end`.
    fn string_text(&self, start: usize, end: usize, escaped: bool) -> Result<Cow<'a, str>, Fault> {
        if escaped {
            self.decode(start, end).map(Cow::Owned)
        } else {
            let text = self.text;
            text.get(start + 1..end.saturating_sub(1))
                .map(Cow::Borrowed)
                .ok_or(Fault::Malformed)
        }
    }

    /// Decodes a string token with escapes. serde_json rejects lone surrogates,
    /// which the validation pass (that only skips strings) lets through: such a
    /// body cannot be scanned reliably, so it is malformed.
    fn decode(&self, start: usize, end: usize) -> Result<String, Fault> {
        let token = self.text.get(start..end).ok_or(Fault::Malformed)?;
        serde_json::from_str::<String>(token).map_err(|_| Fault::Malformed)
    }

    /// Moves past the string token at `pos`; returns its end and whether it has
    /// escapes.
    fn string(&mut self) -> Result<(usize, bool), Fault> {
        self.expect(b'"')?;
        let mut escaped = false;
        loop {
            let rest = self.b.get(self.pos..).ok_or(Fault::Malformed)?;
            let off = rest
                .iter()
                .position(|&c| c == b'"' || c == b'\\')
                .ok_or(Fault::Malformed)?;
            self.pos += off;
            if self.peek() == Some(b'"') {
                self.pos += 1;
                return Ok((self.pos, escaped));
            }
            // A backslash: skip it and the escaped byte (`\uXXXX` digits are plain).
            escaped = true;
            self.pos += 2;
        }
    }

    /// Moves past a number, `true`, `false` or `null`.
    fn scalar(&mut self) {
        while self
            .peek()
            .is_some_and(|c| !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.pos += 1;
        }
    }

    /// Moves past the value at `pos` without looking inside, still bounding its
    /// depth, so a body is refused for nesting whether or not a rule reaches down.
    fn skip_value(&mut self, depth: usize) -> Result<(), Fault> {
        match self.peek() {
            Some(b'"') => {
                self.string()?;
                return Ok(());
            }
            Some(b'{' | b'[') => {}
            Some(_) => {
                self.scalar();
                return Ok(());
            }
            None => return Err(Fault::Malformed),
        }
        let mut nest = 0usize;
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'{' | b'[') => {
                    nest += 1;
                    if depth + nest > MAX_DEPTH {
                        return Err(Fault::TooDeep);
                    }
                    self.pos += 1;
                }
                Some(b'}' | b']') => {
                    nest = nest.checked_sub(1).ok_or(Fault::Malformed)?;
                    self.pos += 1;
                    if nest == 0 {
                        return Ok(());
                    }
                }
                Some(_) => self.pos += 1,
                None => return Err(Fault::Malformed),
            }
        }
    }

    /// Applies the edits in order. Edits never overlap by construction; if they
    /// ever did, refusing is the only safe answer.
    fn splice(&mut self) -> Result<Option<Vec<u8>>, Fault> {
        if self.edits.is_empty() {
            return Ok(None);
        }
        self.edits.sort_by_key(|e| e.start);
        let extra: usize = self.edits.iter().map(|e| e.with.len()).sum();
        let mut out = Vec::with_capacity(self.b.len() + extra);
        let mut last = 0;
        for e in &self.edits {
            if e.start < last || e.end < e.start {
                return Err(Fault::Malformed);
            }
            out.extend_from_slice(self.b.get(last..e.start).ok_or(Fault::Malformed)?);
            out.extend_from_slice(&e.with);
            last = e.end;
        }
        out.extend_from_slice(self.b.get(last..).ok_or(Fault::Malformed)?);
        Ok(Some(out))
    }
}
