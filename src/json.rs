//! Strict, bounded JSON: RFC 8259 text into a `serde_json::Value` with the threat
//! limits ([`JsonLimits`]) and the duplicate-member check done inline, in one pass
//! over the bytes. Request bodies are parsed here (under the route's limits), and so
//! is the plugin configuration when it arrives as JSON text (under [`CONFIG_LIMITS`]).
//!
//! One pass, not a limit pre-scan followed by serde_json: the same checks without
//! reading the body twice and without serde's per-value indirection (about 4x faster
//! natively on a 10 KB order).
//!
//! Bounded by construction:
//! - no recursion: open arrays and objects live on an explicit stack, which never
//!   holds more than `max_depth` frames (the depth check comes before the push), so a
//!   100,000-deep array costs `max_depth` frames and stops there;
//! - a string is measured before anything is allocated for it, and the scan stops at
//!   the first byte over `max_string_length`, so a 10 MB string costs one bounded scan;
//! - values, members per object and elements per array are counted as they start, so
//!   the tree built before a refusal is never larger than the limits allow.
//!
//! No `unwrap`, indexing that could panic, or `unsafe`: every slice is taken with
//! `get`, and the input is a `&str` (the caller checks UTF-8 first), so string
//! contents are sliced at ASCII delimiters only.
//!
//! The grammar is serde_json's (no BOM, no comments, no trailing commas, no leading
//! zeros, no NaN), and so is the representation of numbers (integers that fit stay
//! `u64`/`i64`; `-0`, fractions, exponents and larger integers become `f64`). Lone
//! UTF-16 surrogates in `\u` escapes are refused, and so are duplicate member names
//! (after unescaping: `"a"` and `"\u0061"` are the same name): RFC 8259 §4 leaves
//! their meaning open, and an upstream parser that keeps the first one would see a
//! value that was never validated. Error messages follow serde_json's (`... at line
//! L column C`); structural errors say what is unbalanced or unclosed.
//!
//! Numbers (`exact_numbers`, on for request bodies). The schema validator compares
//! every number as a double (boon's `as_f64`), while the upstream may read the text
//! exactly: `10.000000000000000001` would pass `maximum: 10` as the double 10 and
//! reach a decimal parser as more than 10. So a number is accepted only if its text
//! is, up to notation, a shortest round-trip decimal of its double: its significant
//! digits (without leading or trailing zeros) and their decimal exponent are those
//! of the shortest decimal that reads back as the same double and, of those, is
//! closest to it, as JavaScript and serde_json (ryu) write doubles. (When the double
//! lies exactly halfway between two such decimals, both are accepted: JavaScript and
//! ryu round that last digit to even, Rust's `{:e}` up.)
//! Comparisons with a schema bound of at most 15 significant digits (or an integer
//! up to 2^53) then agree with an exact decimal reading of the text: text and bound
//! each lie in their own double's rounding interval, and the only decimal that
//! short in the bound's interval is the bound. In practice:
//! - accepted: every integer up to 2^53, every decimal of at most 15 significant
//!   digits in the double's normal range (`1.50`, `1E-7`, `2.5e-3`, `1e007`,
//!   `1.000000000000000000000`), and whatever JavaScript or serde_json write for a
//!   double (`0.30000000000000004`); `-0` and `0` are different texts of equal value,
//!   each its double's shortest form, so both pass (`-0` stays a float);
//! - refused, as a limit naming the line and column, never the digits:
//!   `10.000000000000000001` and `9007199254740993` (they read as 10 and 2^53),
//!   `12345678901234567891` (fits a `u64`, not a double), `0.30000000000000001`
//!   (that double is `0.3`), `1e-400` (the double is 0), and `9223372036854775808`
//!   (2^63 is a double, but its shortest form is `9.223372036854776e18`);
//! - past the largest double (`1e400`) is out of range, a syntax error, in both modes.
//!
//! The double taken is the correctly rounded one: an exact multiplication on the
//! fast path; otherwise serde_json's reading (which without its `float_roundtrip`
//! feature is an ulp off for about one 17-digit number in five) and its nearest
//! neighbours, of which the text must be one's shortest decimal, and a shortest
//! decimal reads back as exactly its double. Integers that pass keep their
//! `u64`/`i64` representation. The largest double's neighbourhood
//! (`1.7976931348623158e308`) may read as out of range. Without `exact_numbers` (the plugin configuration), numbers are
//! read as serde_json reads them: integers that fit are converted here, anything
//! else by serde_json's own number parser.
//!
//! Cost: integers up to 2^53 and numbers of at most 15 significant digits with a
//! decimal exponent within ±22 (prices, quantities, ids) need no formatting; the
//! proof is at the fast path in `Parser::exact_number`. Other numbers are formatted
//! once, on the stack.
//!
//! Precedence: whichever problem comes first in the text is reported, a limit (an
//! inexact number included) or a syntax error. Both are 400s; only the metric reason (`limits` or `not_json`) tells
//! them apart. A duplicate member name is found when its value is complete, so an
//! error inside that value is reported instead (the position in the message is
//! still the duplicate name's).

use serde_json::map::Entry;
use serde_json::{Map, Number, Value};
use std::str::FromStr;

/// Default `limits.max_depth`: nesting levels of arrays and objects (`[]` is 1).
pub const DEFAULT_MAX_DEPTH: u32 = 32;
/// Largest `limits.max_depth` a configuration may set. Keeps boon's recursive
/// evaluation inside the 1 MiB stack of a Rust wasm32 module (the parser does not
/// recurse): measured in V8, a 64-deep document against a recursive schema with
/// four combinators per level needs under 512 KiB, a 100-deep one over 512 KiB.
pub const MAX_DEPTH_CEILING: u32 = 64;
/// Default `limits.max_object_entries`: members of one object.
pub const DEFAULT_MAX_OBJECT_ENTRIES: u32 = 1_000;
/// Default `limits.max_array_length`: elements of one array.
pub const DEFAULT_MAX_ARRAY_LENGTH: u32 = 10_000;
/// Default `limits.max_string_length`: bytes of one string or member name, as
/// written in the body (an escape sequence counts with its backslash).
pub const DEFAULT_MAX_STRING_LENGTH: u32 = 64 * 1024;
/// Default `limits.max_total_values`: every scalar, array and object in the document
/// (member names are not values).
pub const DEFAULT_MAX_TOTAL_VALUES: u32 = 100_000;

/// JSON threat limits: the route's `request.limits` with the defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting of arrays and objects.
    pub max_depth: u32,
    /// Most members in one object.
    pub max_object_entries: u32,
    /// Most elements in one array.
    pub max_array_length: u32,
    /// Most bytes in one string or member name, as written.
    pub max_string_length: u32,
    /// Most values in the whole document.
    pub max_total_values: u32,
    /// Refuse a number whose text is not the shortest round-trip decimal of its
    /// double (see the module documentation), so the validator compares the value
    /// the upstream reads.
    pub exact_numbers: bool,
}

impl Default for JsonLimits {
    fn default() -> Self {
        JsonLimits {
            max_depth: DEFAULT_MAX_DEPTH,
            max_object_entries: DEFAULT_MAX_OBJECT_ENTRIES,
            max_array_length: DEFAULT_MAX_ARRAY_LENGTH,
            max_string_length: DEFAULT_MAX_STRING_LENGTH,
            max_total_values: DEFAULT_MAX_TOTAL_VALUES,
            exact_numbers: true,
        }
    }
}

/// Limits for the plugin configuration: the operator's own document, so only the
/// depth is bounded, at serde's recursion limit, because the configuration is
/// deserialized recursively after this parse. Numbers are read as serde_json reads
/// them: no configuration number needs more than a double, and none is relayed.
pub const CONFIG_LIMITS: JsonLimits = JsonLimits {
    max_depth: 128,
    max_object_entries: u32::MAX,
    max_array_length: u32::MAX,
    max_string_length: u32::MAX,
    max_total_values: u32::MAX,
    exact_numbers: false,
};

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// A threat limit was passed (metric reason `limits`): what and where.
    Limit(String),
    /// Not JSON (metric reason `not_json`): what and where, without the input.
    Syntax(String),
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::Limit(m) | JsonError::Syntax(m) => f.write_str(m),
        }
    }
}

/// One open array or object.
enum Frame {
    /// Elements are pushed on the shared `items` stack from `start` on.
    Array { start: usize, count: u32 },
    /// Members so far; the name of the member whose value is being parsed, and
    /// the byte just after that name (where a duplicate is reported).
    Object {
        map: Map<String, Value>,
        name: String,
        name_end: usize,
        count: u32,
    },
}

/// Parses one JSON document under `limits`. `text` must be the whole body.
pub fn parse(text: &str, limits: &JsonLimits) -> Result<Value, JsonError> {
    let bytes = text.as_bytes();
    let mut p = Parser {
        text,
        bytes,
        pos: 0,
        limits,
        total: 0,
    };
    // Elements of every open array, innermost last: one growing buffer instead of
    // one growing Vec per array; each array is moved out at its `]` into a Vec of
    // exactly its length.
    let mut items: Vec<Value> = Vec::new();
    let mut frames: Vec<Frame> = Vec::new();

    'value: loop {
        // A value starts here (the document, an element, or a member's value).
        p.skip_ws();
        let at = p.pos;
        let Some(&byte) = bytes.get(at) else {
            return Err(if frames.is_empty() {
                p.syntax("EOF while parsing a value", bytes.len())
            } else {
                unclosed()
            });
        };
        let mut value = match byte {
            b'{' | b'[' => {
                p.count_value(&mut frames, at)?;
                if frames.len() >= limits.max_depth as usize {
                    return Err(JsonError::Limit(format!(
                        "JSON nesting is deeper than {} levels (at byte {at})",
                        limits.max_depth
                    )));
                }
                p.pos += 1;
                p.skip_ws();
                if byte == b'[' {
                    if p.peek() == Some(b']') {
                        p.pos += 1;
                        Value::Array(Vec::new())
                    } else {
                        frames.push(Frame::Array {
                            start: items.len(),
                            count: 0,
                        });
                        continue 'value;
                    }
                } else {
                    match p.peek() {
                        Some(b'}') => {
                            p.pos += 1;
                            Value::Object(Map::new())
                        }
                        Some(b'"') => {
                            let mut count = 0;
                            let (name, name_end) = p.member_name(&mut count)?;
                            frames.push(Frame::Object {
                                map: Map::new(),
                                name,
                                name_end,
                                count,
                            });
                            continue 'value;
                        }
                        Some(b']') => return Err(unbalanced(p.pos)),
                        Some(_) => return Err(p.peek_syntax("key must be a string")),
                        None => return Err(unclosed()),
                    }
                }
            }
            b'"' => {
                let (end, escaped) = p.scan_string(at)?;
                p.count_value(&mut frames, at)?;
                Value::String(p.string(at, end, escaped)?)
            }
            b'-' | b'0'..=b'9' => {
                p.count_value(&mut frames, at)?;
                Value::Number(p.number()?)
            }
            b't' | b'f' | b'n' => {
                p.count_value(&mut frames, at)?;
                p.literal()?
            }
            b']' | b'}' => {
                // Where a value was expected: after `[`/`{` these were handled above.
                let closes_top = match frames.last() {
                    Some(Frame::Array { .. }) => byte == b']',
                    Some(Frame::Object { .. }) => byte == b'}',
                    None => false,
                };
                return Err(match (closes_top, byte) {
                    (true, b']') => p.peek_syntax("trailing comma"),
                    (true, _) => p.peek_syntax("expected value"),
                    _ => unbalanced(at),
                });
            }
            _ => return Err(p.peek_syntax("expected value")),
        };

        // `value` is complete: add it to its container, then close as many
        // containers as end here, until another value is due or the document ends.
        loop {
            match frames.last_mut() {
                None => {
                    p.skip_ws();
                    return match p.peek() {
                        None => Ok(value),
                        Some(b']' | b'}') => Err(unbalanced(p.pos)),
                        Some(_) => Err(p.peek_syntax("trailing characters")),
                    };
                }
                Some(Frame::Array { start, .. }) => {
                    let start = *start;
                    items.push(value);
                    p.skip_ws();
                    match p.peek() {
                        Some(b',') => {
                            p.pos += 1;
                            continue 'value;
                        }
                        Some(b']') => {
                            p.pos += 1;
                            frames.pop();
                            value = Value::Array(items.drain(start..).collect());
                        }
                        Some(b'}') => return Err(unbalanced(p.pos)),
                        Some(_) => return Err(p.peek_syntax("expected `,` or `]`")),
                        None => return Err(unclosed()),
                    }
                }
                Some(Frame::Object {
                    map,
                    name,
                    name_end,
                    count,
                }) => {
                    match map.entry(std::mem::take(name)) {
                        Entry::Vacant(slot) => {
                            slot.insert(value);
                        }
                        Entry::Occupied(_) => {
                            // The name itself is not echoed: it comes from the request.
                            return Err(p.syntax("duplicate member name in an object", *name_end));
                        }
                    }
                    p.skip_ws();
                    match p.peek() {
                        Some(b',') => {
                            p.pos += 1;
                            p.skip_ws();
                            match p.peek() {
                                Some(b'"') => {
                                    let (next, end) = p.member_name(count)?;
                                    *name = next;
                                    *name_end = end;
                                    continue 'value;
                                }
                                Some(b'}') => return Err(p.peek_syntax("trailing comma")),
                                Some(_) => return Err(p.peek_syntax("key must be a string")),
                                None => return Err(unclosed()),
                            }
                        }
                        Some(b'}') => {
                            p.pos += 1;
                            let Some(Frame::Object { map, .. }) = frames.pop() else {
                                return Err(p.peek_syntax("internal error"));
                            };
                            value = Value::Object(map);
                        }
                        Some(b']') => return Err(unbalanced(p.pos)),
                        Some(_) => return Err(p.peek_syntax("expected `,` or `}`")),
                        None => return Err(unclosed()),
                    }
                }
            }
        }
    }
}

fn unclosed() -> JsonError {
    JsonError::Syntax("unclosed array or object".to_string())
}

fn unbalanced(at: usize) -> JsonError {
    JsonError::Syntax(format!("unbalanced brackets (at byte {at})"))
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    /// The next byte to read.
    pos: usize,
    limits: &'a JsonLimits,
    /// Values started so far.
    total: u32,
}

impl Parser<'_> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// `what at line L column C`, as serde_json reports a position: `index` is the
    /// number of bytes read.
    fn syntax(&self, what: &str, index: usize) -> JsonError {
        JsonError::Syntax(format!("{what} at {}", self.position(index)))
    }

    /// `line L column C` after `index` bytes read.
    fn position(&self, index: usize) -> String {
        let before = self.bytes.get(..index).unwrap_or(self.bytes);
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        format!("line {line} column {}", before.len() - line_start)
    }

    /// An error about the byte at `pos` (serde_json's "peek" position).
    fn peek_syntax(&self, what: &str) -> JsonError {
        self.syntax(what, (self.pos + 1).min(self.bytes.len()))
    }

    /// A value starts at byte `at`: count it in the document and in its array.
    #[inline(always)]
    fn count_value(&mut self, frames: &mut [Frame], at: usize) -> Result<(), JsonError> {
        self.total = self.total.saturating_add(1);
        if self.total > self.limits.max_total_values {
            return Err(JsonError::Limit(format!(
                "JSON document has more than {} values (at byte {at})",
                self.limits.max_total_values
            )));
        }
        if let Some(Frame::Array { count, .. }) = frames.last_mut() {
            *count = count.saturating_add(1);
            if *count > self.limits.max_array_length {
                return Err(JsonError::Limit(format!(
                    "JSON array has more than {} elements (at byte {at})",
                    self.limits.max_array_length
                )));
            }
        }
        Ok(())
    }

    /// A member name at `pos` (its opening quote), counted in its object, and the
    /// `:` after it. Returns the name and the byte just after its closing quote.
    #[inline(always)]
    fn member_name(&mut self, count: &mut u32) -> Result<(String, usize), JsonError> {
        let start = self.pos;
        let (end, escaped) = self.scan_string(start)?;
        *count = count.saturating_add(1);
        if *count > self.limits.max_object_entries {
            return Err(JsonError::Limit(format!(
                "JSON object has more than {} members (at byte {start})",
                self.limits.max_object_entries
            )));
        }
        let name = self.string(start, end, escaped)?;
        let name_end = self.pos;
        self.skip_ws();
        match self.peek() {
            Some(b':') => {
                self.pos += 1;
                Ok((name, name_end))
            }
            Some(_) => Err(self.peek_syntax("expected `:`")),
            None => Err(unclosed()),
        }
    }

    /// Measures the string whose opening quote is at `start`: the index of its
    /// closing quote and whether it has escapes. Refuses it as soon as it is longer
    /// than `max_string_length` bytes as written (before anything is allocated), and
    /// on an unescaped control character. Does not move `pos`.
    #[inline(always)]
    fn scan_string(&self, start: usize) -> Result<(usize, bool), JsonError> {
        let max = self.limits.max_string_length as usize;
        // The content may end at most here (exclusive) and stay within the limit.
        let limit = start.saturating_add(1).saturating_add(max);
        let mut escaped = false;
        let mut j = start + 1;
        loop {
            match self.bytes.get(j) {
                None => {
                    return Err(JsonError::Syntax(format!(
                        "unterminated string (from byte {start})"
                    )))
                }
                Some(b'"') => return Ok((j, escaped)),
                Some(b'\\') => {
                    escaped = true;
                    j += 2;
                }
                Some(&b) if b < 0x20 => {
                    return Err(self.syntax(
                        "control character (\\u0000-\\u001F) found while parsing a string",
                        j + 1,
                    ));
                }
                Some(_) => j += 1,
            }
            if j > limit {
                break;
            }
        }
        Err(JsonError::Limit(format!(
            "JSON string is longer than {max} bytes (from byte {start})"
        )))
    }

    /// The string between the quotes at `start` and `end` (from [`Self::scan_string`]),
    /// unescaped; moves `pos` past the closing quote.
    #[inline(always)]
    fn string(&mut self, start: usize, end: usize, escaped: bool) -> Result<String, JsonError> {
        let Some(raw) = self.text.get(start + 1..end) else {
            return Err(self.peek_syntax("invalid string"));
        };
        let out = if escaped {
            self.unescape(raw, start + 1)?
        } else {
            raw.to_owned()
        };
        self.pos = end + 1;
        Ok(out)
    }

    /// Decodes the escapes of `raw` (a string's content, starting at byte `offset`
    /// of the body). Unpaired UTF-16 surrogates are refused.
    fn unescape(&self, raw: &str, offset: usize) -> Result<String, JsonError> {
        let bytes = raw.as_bytes();
        let mut out = String::with_capacity(raw.len());
        let mut i = 0;
        let mut run = 0;
        while let Some(&b) = bytes.get(i) {
            if b != b'\\' {
                i += 1;
                continue;
            }
            let err = |what: &str, at: usize| self.syntax(what, offset + at);
            out.push_str(raw.get(run..i).ok_or_else(|| err("invalid string", i))?);
            let c = match bytes.get(i + 1) {
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'/') => '/',
                Some(b'b') => '\u{8}',
                Some(b'f') => '\u{c}',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => {
                    let n = hex4(bytes, i + 2).ok_or_else(|| err("invalid escape", i + 6))?;
                    let code = match n {
                        0xDC00..=0xDFFF => {
                            return Err(err("lone leading surrogate in hex escape", i + 6))
                        }
                        0xD800..=0xDBFF => {
                            if bytes.get(i + 6) != Some(&b'\\') || bytes.get(i + 7) != Some(&b'u') {
                                return Err(err("unexpected end of hex escape", i + 7));
                            }
                            let low =
                                hex4(bytes, i + 8).ok_or_else(|| err("invalid escape", i + 12))?;
                            if !(0xDC00..=0xDFFF).contains(&low) {
                                return Err(err("lone leading surrogate in hex escape", i + 12));
                            }
                            i += 6;
                            0x1_0000 + ((n - 0xD800) << 10) + (low - 0xDC00)
                        }
                        n => n,
                    };
                    i += 4;
                    char::from_u32(code).ok_or_else(|| err("invalid unicode code point", i + 2))?
                }
                _ => return Err(err("invalid escape", i + 2)),
            };
            out.push(c);
            i += 2;
            run = i;
        }
        let tail = raw
            .get(run..)
            .ok_or_else(|| self.syntax("invalid string", offset + run))?;
        out.push_str(tail);
        Ok(out)
    }

    /// A number at `pos` (RFC 8259 §6 grammar).
    ///
    /// Without `exact_numbers`, integers that fit a `u64` or `i64` are converted here
    /// and every other number (fractions, exponents, `-0`, integers past 64 bits) is
    /// handed, as validated text, to serde_json's own number parser, so the values
    /// are exactly those serde_json produces. With it, see [`Self::exact_number`].
    #[inline(always)]
    fn number(&mut self) -> Result<Number, JsonError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(self.peek_syntax("invalid number"));
                }
            }
            Some(b'1'..=b'9') => self.skip_digits(),
            Some(_) => return Err(self.peek_syntax("invalid number")),
            None => return Err(self.syntax("EOF while parsing a value", self.bytes.len())),
        }
        let digits_end = self.pos;
        let mut integer = true;
        let mut fraction = digits_end..digits_end;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            let from = self.pos;
            self.digits_required()?;
            fraction = from..self.pos;
        }
        let mut exponent = 0;
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.pos += 1;
            let exponent_negative = self.peek() == Some(b'-');
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            let from = self.pos;
            self.digits_required()?;
            if self.limits.exact_numbers {
                let digits = self.bytes.get(from..self.pos).unwrap_or(&[]);
                exponent = exponent_value(digits, exponent_negative);
            }
        }
        let digits = self.bytes.get(digits_start..digits_end).unwrap_or(&[]);
        // Integers of at most 15 digits are exact doubles and their own shortest
        // form, so `exact_numbers` has nothing to check on them.
        if integer && (digits.len() <= 15 || !self.limits.exact_numbers) {
            // 19 digits always fit a u64, 18 an i64.
            if !negative && digits.len() <= 19 {
                return Ok(Number::from(decimal(digits)));
            }
            if negative && digits.len() <= 18 {
                let magnitude = decimal(digits) as i64;
                if magnitude != 0 {
                    return Ok(Number::from(-magnitude));
                }
            }
        }
        if self.limits.exact_numbers {
            let fraction = self.bytes.get(fraction).unwrap_or(&[]);
            return self.exact_number(start, negative, integer, digits, fraction, exponent);
        }
        let text = self.text.get(start..self.pos).unwrap_or("");
        Number::from_str(text).map_err(|_| self.syntax("number out of range", self.pos))
    }

    /// The number that starts at `start` and ends at `pos`, under `exact_numbers`:
    /// `negative`, its integer digits, its fraction digits (empty without a `.`) and
    /// its exponent; `integer` if it has neither `.` nor exponent.
    ///
    /// Accepted only if the text is, up to notation, a shortest round-trip decimal
    /// of its nearest double ([`is_shortest`]); refused otherwise, as a limit (see
    /// the module documentation). The double taken is the correctly rounded one. Integers
    /// that fit a `u64` (or, negative, an `i64`) keep that representation, as in
    /// serde_json; `-0` is a float.
    #[inline(always)]
    fn exact_number(
        &self,
        start: usize,
        negative: bool,
        integer: bool,
        digits: &[u8],
        fraction: &[u8],
        exponent: i64,
    ) -> Result<Number, JsonError> {
        let as_integer = if integer {
            integer_number(negative, digits)
        } else {
            None
        };
        if let Some((number, magnitude)) = &as_integer {
            // Every integer up to 2^53 is a double and its own shortest decimal:
            // below 2^53 doubles are at most 1 apart, so any other decimal rounding
            // to the same double is not an integer and has more significant digits.
            if *magnitude <= 1 << 53 {
                return Ok(number.clone());
            }
        }
        let sent = Decimal::of(digits, fraction, exponent);
        let pow10 = POW10.get(usize::try_from(sent.exp10.unsigned_abs()).unwrap_or(usize::MAX));
        let magnitude = match pow10 {
            _ if sent.count == 0 => 0.0,
            // Fast path, no formatting: at most 15 significant digits and
            // |exp10| <= 22.
            // - The double is the nearest one: the digits (< 10^15 < 2^53) and
            //   10^|exp10| (= 2^|exp10| x 5^|exp10|, 5^22 < 2^53) are exact doubles,
            //   and one IEEE multiplication or division of exact operands is
            //   correctly rounded (Clinger's fast path, the value `str::parse`
            //   returns).
            // - Its shortest round-trip decimal is the text's. The value is normal
            //   (10^-22 to 10^37), and a decimal of n significant digits comes back
            //   unchanged from decimal -> nearest double -> nearest n-digit decimal
            //   whenever 10^n < 2^(53-1) (Matula, "In-and-out conversions", 1968):
            //   true for n = 15 (10^15 < 2^52 = 4.5 x 10^15, hence DBL_DIG = 15),
            //   false for 16. So no other decimal of at most 15 digits rounds to
            //   the same double (it would come back as itself instead), and the
            //   shortest decimal that does, which has at most as many digits as the
            //   text, is the text's.
            Some(&pow) if sent.count <= 15 => {
                let digits = sent.digits as f64;
                if sent.exp10 >= 0 {
                    digits * pow
                } else {
                    digits / pow
                }
            }
            _ => {
                let text = self.text.get(start..self.pos).unwrap_or("");
                // serde_json's parser (already in the module, unlike the standard
                // library's correctly rounded one, which would add 18 KB) may be an
                // ulp or two off. So its neighbours are tried as well: the text is
                // accepted only as the shortest decimal of one of them, and a shortest
                // decimal reads back as exactly its double, so the value taken is the
                // correctly rounded one. An off-by-more answer could only refuse a
                // number wrongly, never accept one.
                // Near the largest double serde_json may overflow where the
                // correctly rounded value is still finite: start from the largest.
                let parsed = Number::from_str(text).ok().and_then(|n| n.as_f64());
                let out_of_range = !parsed.is_some_and(f64::is_finite);
                let approx = parsed
                    .map(f64::abs)
                    .filter(|v| v.is_finite())
                    .unwrap_or(f64::MAX);
                let candidates = [
                    approx,
                    approx.next_up(),
                    approx.next_down(),
                    approx.next_up().next_up(),
                    approx.next_down().next_down(),
                ];
                let exact = candidates
                    .into_iter()
                    .find(|v| v.is_finite() && *v >= 0.0 && is_shortest(*v, &sent));
                let Some(value) = exact else {
                    if out_of_range {
                        return Err(self.syntax("number out of range", self.pos));
                    }
                    // Not quoted: the number comes from the request.
                    return Err(JsonError::Limit(format!(
                        "number at {} has more precision than a 64-bit float holds, so \
                         the schema would check a rounded value; send it as a string or \
                         with at most 15 significant digits",
                        self.position(start + 1)
                    )));
                };
                value
            }
        };
        if let Some((number, _)) = as_integer {
            return Ok(number);
        }
        let value = if negative { -magnitude } else { magnitude };
        Number::from_f64(value).ok_or_else(|| self.syntax("number out of range", self.pos))
    }

    #[inline(always)]
    fn skip_digits(&mut self) {
        while let Some(b'0'..=b'9') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// At least one digit (after `.` or an exponent sign).
    #[inline(always)]
    fn digits_required(&mut self) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'0'..=b'9') => {
                self.skip_digits();
                Ok(())
            }
            Some(_) => Err(self.peek_syntax("invalid number")),
            None => Err(self.syntax("EOF while parsing a value", self.bytes.len())),
        }
    }

    /// `true`, `false` or `null` at `pos`.
    #[inline(always)]
    fn literal(&mut self) -> Result<Value, JsonError> {
        let rest = self.bytes.get(self.pos..).unwrap_or(&[]);
        let (word, value): (&[u8], Value) = match rest.first() {
            Some(b't') => (b"true", Value::Bool(true)),
            Some(b'f') => (b"false", Value::Bool(false)),
            _ => (b"null", Value::Null),
        };
        // Byte by byte, as serde_json does, to report where it goes wrong.
        for &want in word {
            match self.peek() {
                Some(b) if b == want => self.pos += 1,
                Some(_) => return Err(self.peek_syntax("expected ident")),
                None => return Err(self.syntax("EOF while parsing a value", self.bytes.len())),
            }
        }
        Ok(value)
    }
}

/// The value of at most 19 ASCII digits.
fn decimal(digits: &[u8]) -> u64 {
    digits.iter().fold(0u64, |n, &d| {
        n.wrapping_mul(10)
            .wrapping_add(u64::from(d.wrapping_sub(b'0')))
    })
}

/// The value of an exponent's digits, saturated far beyond any finite double's.
fn exponent_value(digits: &[u8], negative: bool) -> i64 {
    let magnitude = digits.iter().fold(0i64, |n, &d| {
        n.saturating_mul(10)
            .saturating_add(i64::from(d.wrapping_sub(b'0')))
    });
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// `digits` (no leading zeros) as an integer, with its magnitude, if serde_json
/// keeps it as one: non-negative up to `u64::MAX`, negative down to `i64::MIN`
/// (`-0` is a float).
fn integer_number(negative: bool, digits: &[u8]) -> Option<(Number, u64)> {
    let magnitude = digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    })?;
    if !negative {
        return Some((Number::from(magnitude), magnitude));
    }
    if magnitude == 0 {
        return None;
    }
    0i64.checked_sub_unsigned(magnitude)
        .map(|n| (Number::from(n), magnitude))
}

/// 10^0 to 10^22: the powers of ten that are exact doubles.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A number's text as a decimal, whatever its notation.
struct Decimal {
    /// How many significant digits (from the first non-zero digit to the last; 0
    /// for zero).
    count: usize,
    /// Their value, while `count` is at most 19.
    digits: u64,
    /// The number is `digits` x 10^`exp10`.
    exp10: i64,
}

impl Decimal {
    /// The decimal of a number's integer digits, fraction digits and exponent.
    #[inline(always)]
    fn of(int: &[u8], fraction: &[u8], exponent: i64) -> Decimal {
        let exp10 = exponent.saturating_sub(i64::try_from(fraction.len()).unwrap_or(i64::MAX));
        // Without leading zeros (before the point only a lone `0` can be one).
        let (int, fraction) = match int.iter().position(|&d| d != b'0') {
            Some(first) => (int.get(first..).unwrap_or(&[]), fraction),
            None => match fraction.iter().position(|&d| d != b'0') {
                Some(first) => (&[][..], fraction.get(first..).unwrap_or(&[])),
                None => {
                    return Decimal {
                        count: 0,
                        digits: 0,
                        exp10: 0,
                    }
                }
            },
        };
        // Without trailing zeros, which raise the exponent instead.
        let (int, fraction, zeros) = match fraction.iter().rposition(|&d| d != b'0') {
            Some(last) => (
                int,
                fraction.get(..=last).unwrap_or(&[]),
                fraction.len() - 1 - last,
            ),
            None => {
                let last = int.iter().rposition(|&d| d != b'0').unwrap_or(0);
                let zeros = fraction.len() + int.len() - 1 - last;
                (int.get(..=last).unwrap_or(&[]), &[][..], zeros)
            }
        };
        let digits = int.iter().chain(fraction).take(19).fold(0u64, |n, &d| {
            n.wrapping_mul(10)
                .wrapping_add(u64::from(d.wrapping_sub(b'0')))
        });
        Decimal {
            count: int.len() + fraction.len(),
            digits,
            exp10: exp10.saturating_add(i64::try_from(zeros).unwrap_or(i64::MAX)),
        }
    }
}

/// True if `sent` is a shortest round-trip decimal of `value` (finite, positive:
/// the double `sent` reads as): the one serde_json writes (ryu: the fewest digits
/// that read back as `value`, of those the closest, an exact tie to even), or the
/// other one of an exact tie. Another decimal of as many digits that also reads
/// back as `value`, less closely, is refused.
fn is_shortest(value: f64, sent: &Decimal) -> bool {
    // A shortest round-trip decimal never needs more than 17 digits.
    if sent.count > 17 {
        return false;
    }
    // serde_json writes a finite double with ryu (`1e16`, `0.30000000000000004`,
    // `5e-324`): at most 24 bytes, here on the stack, several times faster than
    // `{:e}`.
    let mut buf = [0u8; 32];
    let len = {
        let mut rest = &mut buf[..];
        if serde_json::to_writer(&mut rest, &value).is_err() {
            return false;
        }
        32 - rest.len()
    };
    let written = buf.get(..len).unwrap_or(&[]);
    let (mantissa, exponent) = match written.iter().position(|&b| b == b'e') {
        Some(e) => {
            let exponent = written
                .get(e + 1..)
                .and_then(|x| std::str::from_utf8(x).ok())
                .and_then(|x| x.parse::<i64>().ok());
            let Some(exponent) = exponent else {
                return false;
            };
            (written.get(..e).unwrap_or(&[]), exponent)
        }
        None => (written, 0),
    };
    let (int, fraction) = match mantissa.iter().position(|&b| b == b'.') {
        Some(dot) => (
            mantissa.get(..dot).unwrap_or(&[]),
            mantissa.get(dot + 1..).unwrap_or(&[]),
        ),
        None => (mantissa, &[][..]),
    };
    let shortest = Decimal::of(int, fraction, exponent);
    if shortest.count != sent.count || shortest.exp10 != sent.exp10 {
        return false;
    }
    // When the double lies exactly halfway between two shortest decimals, writers
    // differ: for 1044528281431767.25 ryu and JavaScript write ...767.2, the even
    // one, Rust's `{:e}` writes ...767.3. Both are as short and as close. (At most
    // 17 digits each: no overflow.)
    let (a, b) = (shortest.digits, sent.digits);
    a == b || (a.abs_diff(b) == 1 && equals_decimal(value, (a + b) * 5, sent.exp10 - 1))
}

/// True if `value` (positive, finite) is exactly `digits` (non-zero) x 10^`exp10`.
/// Both sides are an odd integer times a power of two (10^n = 5^n x 2^n), and such
/// a factorisation is unique.
fn equals_decimal(value: f64, digits: u64, exp10: i64) -> bool {
    let bits = value.to_bits();
    let biased = i64::try_from((bits >> 52) & 0x7ff).unwrap_or(0);
    let fraction = bits & ((1 << 52) - 1);
    // value = mantissa x 2^exp2
    let (mantissa, exp2) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | 1 << 52, biased - 1075)
    };
    if mantissa == 0 || digits == 0 {
        return false;
    }
    let (m_odd, m_twos) = (
        mantissa >> mantissa.trailing_zeros(),
        exp2 + i64::from(mantissa.trailing_zeros()),
    );
    let (d_odd, d_twos) = (
        digits >> digits.trailing_zeros(),
        i64::from(digits.trailing_zeros()),
    );
    let pow5 = |n: i64| u32::try_from(n).ok().and_then(|n| 5u64.checked_pow(n));
    if exp10 >= 0 {
        pow5(exp10).and_then(|p| d_odd.checked_mul(p)) == Some(m_odd) && d_twos + exp10 == m_twos
    } else {
        pow5(-exp10).and_then(|p| m_odd.checked_mul(p)) == Some(d_odd) && m_twos - exp10 == d_twos
    }
}

/// Four hex digits at `at`.
fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at + 4)?;
    digits.iter().try_fold(0u32, |n, &d| {
        let v = char::from(d).to_digit(16)?;
        Some(n * 16 + v)
    })
}

/// Appends `text` as a JSON string with RFC 8785 escaping (the same bytes
/// serde_json writes): masked values and problem documents.
pub(crate) fn push_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut last = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(last..i).unwrap_or(&[]));
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        last = i + 1;
    }
    out.extend_from_slice(bytes.get(last..).unwrap_or(&[]));
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    /// Limits that never fire (within serde_json's own recursion limit of 128), with
    /// numbers read as serde_json reads them, like the oracle below.
    const OPEN: JsonLimits = JsonLimits {
        max_depth: 100,
        max_object_entries: u32::MAX,
        max_array_length: u32::MAX,
        max_string_length: u32::MAX,
        max_total_values: u32::MAX,
        exact_numbers: false,
    };

    /// [`OPEN`] with `exact_numbers`, as request bodies are parsed by default.
    const EXACT: JsonLimits = JsonLimits {
        exact_numbers: true,
        ..OPEN
    };

    /// serde_json with a visitor that refuses duplicate member names (serde_json
    /// alone keeps the last one): an independent parser to compare against.
    struct StrictValue(Value);

    impl<'de> Deserialize<'de> for StrictValue {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(StrictVisitor).map(StrictValue)
        }
    }

    struct StrictVisitor;

    impl<'de> Visitor<'de> for StrictVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
            Number::from_f64(v)
                .map(Value::Number)
                .ok_or_else(|| E::custom("number out of range"))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_none<E: de::Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            while let Some(StrictValue(item)) = seq.next_element()? {
                items.push(item);
            }
            Ok(Value::Array(items))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut members = Map::new();
            while let Some(name) = map.next_key::<String>()? {
                if members.contains_key(&name) {
                    return Err(de::Error::custom("duplicate member name in an object"));
                }
                let StrictValue(value) = map.next_value()?;
                members.insert(name, value);
            }
            Ok(Value::Object(members))
        }
    }

    /// The oracle: serde_json with the duplicate-refusing visitor below.
    fn oracle(text: &str) -> Option<Value> {
        serde_json::from_str::<StrictValue>(text).ok().map(|s| s.0)
    }

    /// Same verdict as the oracle, and the same value when accepted.
    fn agrees(text: &str) {
        let ours = parse(text, &OPEN);
        let theirs = oracle(text);
        match (&ours, &theirs) {
            (Ok(a), Some(b)) => {
                assert_eq!(a, b, "{text:?}");
                // Same number representation too (u64, i64 or f64).
                assert_eq!(a.to_string(), b.to_string(), "{text:?}");
            }
            (Err(_), None) => {}
            _ => panic!("{text:?}: ours {ours:?}, serde_json {theirs:?}"),
        }
    }

    /// A number's text as (negative, significant digits, exponent of the last
    /// one): equal for equal decimals, whatever the notation. String operations,
    /// independent of the parser's digit loop.
    fn canonical(text: &str) -> (bool, String, i64) {
        let negative = text.starts_with('-');
        let text = text.trim_start_matches('-');
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(at) => (&text[..at], &text[at + 1..]),
            None => (text, "0"),
        };
        // An exponent past i64 only comes with an infinite or zero double; any
        // huge value stands for it.
        let huge = if exponent.starts_with('-') {
            -(1 << 40)
        } else {
            1 << 40
        };
        let exponent: i64 = exponent.trim_start_matches('+').parse().unwrap_or(huge);
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all = format!("{int}{frac}");
        let trimmed = all.trim_start_matches('0');
        let digits = trimmed.trim_end_matches('0');
        if digits.is_empty() {
            return (negative, String::new(), 0);
        }
        let zeros = (trimmed.len() - digits.len()) as i64;
        (
            negative,
            digits.to_string(),
            exponent - frac.len() as i64 + zeros,
        )
    }

    /// The number rule, written independently: the text and the shortest
    /// round-trip form (`{:e}`) of its correctly rounded double (`str::parse`) are
    /// the same decimal.
    fn exact(text: &str) -> bool {
        let value: f64 = text.parse().unwrap();
        if !value.is_finite() {
            return false;
        }
        let (sent, shortest) = (canonical(text), canonical(&format!("{value:e}")));
        if sent == shortest {
            return true;
        }
        // Or the other half of an exact tie: as many digits, one unit apart in the
        // last, and the double's exact expansion (768 digits cover any double) is
        // their midpoint.
        let ((_, t, e), (_, s, es)) = (&sent, &shortest);
        if t.len() != s.len() || e != es {
            return false;
        }
        let (t, s): (u128, u128) = (t.parse().unwrap(), s.parse().unwrap());
        let expansion = canonical(&format!("{:.800e}", value.abs()));
        t.abs_diff(s) == 1 && canonical(&format!("{}e{}", (t + s) * 5, e - 1)) == expansion
    }

    /// The numbers of a valid JSON text, with their byte offsets: outside strings,
    /// each run of number characters (a scan of its own).
    fn number_tokens(text: &str) -> Vec<(usize, &str)> {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'-' | b'0'..=b'9' => {
                    let start = i;
                    while i < bytes.len()
                        && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                    {
                        i += 1;
                    }
                    out.push((start, &text[start..i]));
                }
                _ => i += 1,
            }
        }
        out
    }

    /// `value` with each number replaced by its kind (`u64`, `i64` or `f64`); the
    /// numbers go to `numbers`, integers in decimal, doubles by their bits.
    fn shape(value: &Value, numbers: &mut Vec<String>) -> Value {
        match value {
            Value::Number(n) => {
                let (key, kind) = if n.is_u64() {
                    (n.to_string(), "u64")
                } else if n.is_i64() {
                    (n.to_string(), "i64")
                } else {
                    (format!("f{:x}", n.as_f64().unwrap().to_bits()), "f64")
                };
                numbers.push(key);
                Value::String(format!("\0{kind}"))
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| shape(v, numbers)).collect()),
            Value::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), shape(v, numbers)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// A number as [`shape`] lists it, from its text: serde_json's integers (a
    /// `u64`, or a negative `i64` other than -0) in decimal, any other number by
    /// the bits of its correctly rounded double (`str::parse`).
    fn number_key(text: &str) -> String {
        if !text.contains(['.', 'e', 'E']) {
            if let Ok(n) = text.parse::<u64>() {
                return n.to_string();
            }
            if let Ok(n) = text.parse::<i64>().map(|n| n.to_string()) {
                if n != "0" {
                    return n;
                }
            }
        }
        format!("f{:x}", text.parse::<f64>().unwrap().to_bits())
    }

    /// Under `exact_numbers`, an accepted document is serde_json's, with each
    /// number in serde_json's representation but exactly the double nearest its
    /// text (serde_json's own can be an ulp off): the same numbers as the text's.
    fn same_exact(text: &str, ours: &Value, theirs: &Value) {
        let mut our_numbers = Vec::new();
        assert_eq!(
            shape(ours, &mut our_numbers),
            shape(theirs, &mut Vec::new()),
            "{text:?}"
        );
        let mut sent: Vec<_> = number_tokens(text)
            .iter()
            .map(|(_, t)| number_key(t))
            .collect();
        our_numbers.sort();
        sent.sort();
        assert_eq!(our_numbers, sent, "{text:?}");
    }

    /// The refusal of the number at byte `at` of `text`, by its line and column.
    fn assert_number_limit(text: &str, got: &Result<Value, JsonError>, at: usize) {
        let line = 1 + text[..at].matches('\n').count();
        let column = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
        let want = format!("number at line {line} column {column} has more precision");
        match got {
            Err(JsonError::Limit(m)) if m.starts_with(&want) => {}
            other => panic!("{text:?}: want {want:?}, got {other:?}"),
        }
    }

    /// Under `exact_numbers`: accepted if serde_json accepts the text and each of
    /// its numbers passes [`exact`], with the value of [`same_exact`]; else refused,
    /// for the first inexact number if that is the only fault.
    fn agrees_exact(text: &str) {
        let ours = parse(text, &EXACT);
        let theirs = oracle(text);
        let inexact = theirs
            .as_ref()
            .and_then(|_| number_tokens(text).into_iter().find(|(_, t)| !exact(t)));
        match (&ours, &theirs, inexact) {
            (Ok(a), Some(b), None) => same_exact(text, a, b),
            (_, Some(_), Some((at, _))) => assert_number_limit(text, &ours, at),
            (Err(_), None, _) => {}
            _ => panic!("{text:?}: ours {ours:?}, serde_json {theirs:?}"),
        }
    }

    fn syntax(text: &str) -> String {
        match parse(text, &OPEN) {
            Err(JsonError::Syntax(m)) => m,
            other => panic!("{text:?}: expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn agrees_with_serde_json_on_valid_documents() {
        let docs = [
            "0",
            "-0",
            "1",
            "-1",
            "1.0",
            "-1.5e3",
            "1e2",
            "1E+2",
            "1e-2",
            "0.1",
            "2.5E-3",
            "18446744073709551615",
            "18446744073709551616",
            "9999999999999999999",
            "99999999999999999999",
            "-9223372036854775808",
            "-9223372036854775809",
            "-999999999999999999",
            "-9999999999999999999",
            "123456789012345678901234567890",
            "1.7976931348623157e308",
            "5e-324",
            "1e-400",
            "0.30000000000000004",
            "3.141592653589793238462643383279",
            "1e22",
            "1e23",
            "9007199254740993",
            "true",
            "false",
            "null",
            "\"\"",
            "\"a\"",
            " \t\r\n[ ] ",
            "{}",
            "[[[]]]",
            r#""\"\\\/\b\f\n\r\t""#,
            r#""\u0000\u001f\u0041\u00e9\u20ac""#,
            r#""\ud83d\ude00 and \uD834\uDD1E""#,
            "\"é €😀\"",
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e","f":-0.5}}"#,
            r#"[1,"two",{"three":[3.0,{}]},[],[[]],""]"#,
            "{\n  \"k\" : [ 1 , 2 ] ,\n  \"l\" : { }\n}\n",
            r#"{"a":{"a":{"a":1}},"b":{"a":2}}"#,
            r#"{"\u0061":1,"b":2}"#,
        ];
        for doc in docs {
            assert!(oracle(doc).is_some(), "{doc}");
            agrees(doc);
            agrees_exact(doc);
        }
        // -0 is a float, as in serde_json.
        assert_eq!(parse("-0", &OPEN).unwrap().to_string(), "-0.0");
        assert!(parse("18446744073709551615", &OPEN).unwrap().is_u64());
        assert!(parse("-9223372036854775808", &OPEN).unwrap().is_i64());
        assert!(parse("18446744073709551616", &OPEN).unwrap().is_f64());
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        let bad = [
            "",
            " ",
            "\u{feff}{}",
            "01",
            "-01",
            "00",
            "1.",
            ".5",
            "-",
            "+1",
            "1e",
            "1e+",
            "1.e3",
            "0x10",
            "NaN",
            "Infinity",
            "-Infinity",
            "1e400",
            "-1e400",
            "tru",
            "nul",
            "True",
            "[1,]",
            "[,1]",
            "{,}",
            "{\"a\":1,}",
            "{\"a\"}",
            "{\"a\" 1}",
            "{\"a\":}",
            "{1:2}",
            "{'a':1}",
            "[1 2]",
            "[1}",
            "{\"a\":1]",
            "]",
            "}",
            "[",
            "{",
            "[1",
            "{\"a\":1",
            "\"abc",
            "\"a\\\"",
            "{} x",
            "[]]",
            "1 2",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "\"\\U0041\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\ud800x\"",
            "\"\\ud800\\n\"",
            "\"\\udbff\\udbff\"",
            "\"a\u{1}b\"",
            "\"tab\there\"",
            "\"new\nline\"",
            "/* c */ 1",
            "[1]//",
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"ab":1,"a\u0062":2}"#,
            r#"{"x":{"a":[],"a":{}}}"#,
            r#"[{"a":1},{"b":1,"b":1}]"#,
        ];
        for doc in bad {
            assert!(oracle(doc).is_none(), "oracle accepts {doc:?}");
            assert!(parse(doc, &OPEN).is_err(), "{doc:?}");
            assert!(parse(doc, &EXACT).is_err(), "{doc:?}");
        }
    }

    #[test]
    fn messages_name_the_position_not_the_input() {
        let cases = [
            ("", "EOF while parsing a value at line 1 column 0"),
            ("  ", "EOF while parsing a value at line 1 column 2"),
            ("x", "expected value at line 1 column 1"),
            ("{\"a\":1} x", "trailing characters at line 1 column 9"),
            ("{\n\"a\":}", "expected value at line 2 column 5"),
            ("[1,]", "trailing comma at line 1 column 4"),
            ("{\"a\":1,}", "trailing comma at line 1 column 8"),
            ("{1:2}", "key must be a string at line 1 column 2"),
            ("{\"a\" 1}", "expected `:` at line 1 column 6"),
            ("[1 2]", "expected `,` or `]` at line 1 column 4"),
            ("{\"a\":1 2}", "expected `,` or `}` at line 1 column 8"),
            ("01", "invalid number at line 1 column 2"),
            ("1e400", "number out of range at line 1 column 5"),
            ("tru", "EOF while parsing a value at line 1 column 3"),
            ("trux", "expected ident at line 1 column 4"),
            ("\"\\x\"", "invalid escape at line 1 column 3"),
            ("\"\\ud800\"", "unexpected end of hex escape at line 1 column 8"),
            ("\"\\udc00\"", "lone leading surrogate in hex escape at line 1 column 7"),
            ("\"a\u{1}\"", "control character (\\u0000-\\u001F) found while parsing a string at line 1 column 3"),
            ("[1}", "unbalanced brackets (at byte 2)"),
            ("]", "unbalanced brackets (at byte 0)"),
            ("{}]", "unbalanced brackets (at byte 2)"),
            ("[1", "unclosed array or object"),
            ("\"abc", "unterminated string (from byte 0)"),
            (r#"{"role":"user","role":"admin"}"#, "duplicate member name in an object at line 1 column 21"),
            (r#"{"a":1,"\u0061":2}"#, "duplicate member name in an object at line 1 column 15"),
        ];
        for (doc, want) in cases {
            assert_eq!(syntax(doc), want, "{doc:?}");
        }
    }

    /// `exact_numbers`: a number passes only if its text is, up to notation, the
    /// shortest round-trip decimal of its double; the value is that double, in
    /// serde_json's representation.
    #[test]
    fn exact_numbers_accept_shortest_round_trip_texts() {
        let accepted = [
            ("0", "u64"),
            // -0 and 0 are different texts of equal value: each is its double's
            // shortest form (`-0e0`, `0e0`), so both pass; -0 stays a float, as
            // in serde_json.
            ("-0", "f64"),
            ("0.0", "f64"),
            ("-0.0", "f64"),
            ("0e5", "f64"),
            ("-0E-7", "f64"),
            ("0e99999999999999999999", "f64"),
            ("0.000e-99999999999999999999", "f64"),
            ("1", "u64"),
            ("10", "u64"),
            ("100", "u64"),
            ("-1", "i64"),
            ("1.5", "f64"),
            // Trailing zeros are notation: the value is exactly 1.5, or 1.
            ("1.50", "f64"),
            ("1.000000000000000000000", "f64"),
            ("100000000000000000000.0e-20", "f64"),
            ("0.1", "f64"),
            ("1e2", "f64"),
            ("1E-7", "f64"),
            ("2.5e-3", "f64"),
            ("-12.75", "f64"),
            // Leading zeros in an exponent, and its sign, are notation too.
            ("1e007", "f64"),
            ("1E+007", "f64"),
            ("1e-007", "f64"),
            ("10e-1", "f64"),
            ("0.00100", "f64"),
            ("999999999999999", "u64"),
            ("0.999999999999999", "f64"),
            ("123456789012345e-22", "f64"),
            ("123456789012345e22", "f64"),
            ("1e-22", "f64"),
            ("1e22", "f64"),
            // Past the fast path: formatted and compared.
            ("1e-23", "f64"),
            ("1e23", "f64"),
            ("1.5e300", "f64"),
            ("9007199254740991", "u64"),
            ("9007199254740992", "u64"),
            ("-9007199254740992", "i64"),
            ("9007199254740992.0", "f64"),
            // Above 2^53, integers that are doubles and their own shortest form.
            ("9007199254740994", "u64"),
            ("1000000000000000000", "u64"),
            ("10000000000000000000", "u64"),
            ("-1000000000000000000", "i64"),
            ("100000000000000000000", "f64"),
            // 17 significant digits, as JavaScript and Rust write these doubles.
            ("0.30000000000000004", "f64"),
            ("41.989999999999995", "f64"),
            ("5e-324", "f64"),
            ("-5e-324", "f64"),
            // The double 1044528281431767.25 is halfway between both: Rust writes
            // the first, JavaScript and serde_json the second.
            ("1044528281431767.3", "f64"),
            ("1044528281431767.2", "f64"),
            ("690981788708426.3", "f64"),
            ("690981788708426.2", "f64"),
            ("-2213086782193295.3", "f64"),
            ("-2213086782193295.2", "f64"),
            ("2.2250738585072014e-308", "f64"),
            ("1.7976931348623157e308", "f64"),
            ("-1.7976931348623157E+308", "f64"),
        ];
        for (text, kind) in accepted {
            assert!(exact(text), "{text}");
            let Ok(Value::Number(n)) = parse(text, &EXACT) else {
                panic!("{text}: {:?}", parse(text, &EXACT));
            };
            let got = if n.is_u64() {
                "u64"
            } else if n.is_i64() {
                "i64"
            } else {
                "f64"
            };
            assert_eq!(got, kind, "{text}");
            // The correctly rounded double (the sign of zero included).
            let want: f64 = text.parse().unwrap();
            assert_eq!(n.as_f64().unwrap().to_bits(), want.to_bits(), "{text}");
            agrees(text);
            agrees_exact(text);
        }
    }

    #[test]
    fn exact_numbers_refuse_what_a_double_rounds() {
        let refused = [
            // Each would compare as its neighbour double: 10, 2^53, ...
            "10.000000000000000001",
            "9007199254740993",
            "-9007199254740993",
            // Fits a u64, not a double.
            "12345678901234567891",
            "123456789012345678",
            "18446744073709551615",
            "18446744073709551616",
            // A double, but not its shortest form (which is 9.223372036854776e18):
            // the rule is about the text, and 2^63 written out does not pass.
            "9223372036854775808",
            "-9223372036854775808",
            // The double's shortest form is 0.3.
            "0.30000000000000001",
            "1.00000000000000000001",
            "3.141592653589793238462643383279",
            "123456789012345678901234567890",
            "100000000000000000000000000000000000001",
            // The exact value of 0.1's double: not its shortest form either.
            "0.1000000000000000055511151231257827021181583404541015625",
            // Underflow: the double is 0 (or the smallest subnormal).
            "1e-400",
            "-1e-400",
            "1e-325",
            "2.4703282292062328e-324",
            "1e-99999999999999999999",
            // Round to the double 1044528281431767.25 too, but are not one of the
            // two shortest decimals closest to it (...767.2 and ...767.3).
            "1044528281431767.21",
            "1044528281431767.25",
        ];
        for text in refused {
            assert!(!exact(text), "{text}");
            match parse(text, &EXACT) {
                Err(JsonError::Limit(m)) => {
                    assert!(m.starts_with("number at line 1 column 1 "), "{text}: {m}");
                    assert!(!m.contains(text), "{m}");
                }
                other => panic!("{text}: {other:?}"),
            }
            agrees_exact(text);
            // Without `exact_numbers`, accepted as before, as serde_json reads it.
            assert!(parse(text, &OPEN).is_ok(), "{text}");
            agrees(text);
        }
        // Rounds to the largest double, whose shortest form ends in 7: refused, as
        // out of range like serde_json (which reads it so) in both modes; the
        // largest double's own shortest form is accepted.
        let near_max = "1.7976931348623158e308";
        assert!(!exact(near_max));
        assert!(matches!(parse(near_max, &EXACT), Err(JsonError::Syntax(_))));
        assert!(matches!(parse(near_max, &OPEN), Err(JsonError::Syntax(_))));
        agrees(near_max);
        assert_eq!(
            parse("1.7976931348623157e308", &EXACT)
                .ok()
                .and_then(|v| v.as_f64()),
            Some(f64::MAX)
        );
        // Past the largest double is out of range, as before, in both modes.
        for text in ["1e400", "-1e400", "1.8e308", "1e99999999999999999999"] {
            let want = format!("number out of range at line 1 column {}", text.len());
            for limits in [OPEN, EXACT] {
                assert_eq!(parse(text, &limits), Err(JsonError::Syntax(want.clone())));
            }
        }
    }

    #[test]
    fn an_inexact_number_is_named_by_position_not_value() {
        let cases = [
            (r#"{"qty":10.000000000000000001}"#, 1, 8),
            ("[\n  1,\n  -9007199254740993\n]", 3, 3),
            ("[1.5,\r\n\t0.30000000000000001]", 2, 2),
        ];
        for (doc, line, column) in cases {
            let want = format!(
                "number at line {line} column {column} has more precision than a 64-bit \
                 float holds, so the schema would check a rounded value; send it as a \
                 string or with at most 15 significant digits"
            );
            assert_eq!(parse(doc, &EXACT), Err(JsonError::Limit(want)), "{doc:?}");
            assert!(parse(doc, &OPEN).is_ok(), "{doc:?}");
        }
        // Whichever comes first in the text: a syntax error, a limit or the number.
        assert!(matches!(
            parse("[x,1e-400]", &EXACT),
            Err(JsonError::Syntax(_))
        ));
        assert!(matches!(
            parse("[1e-400,x]", &EXACT),
            Err(JsonError::Limit(_))
        ));
        let two = JsonLimits {
            max_total_values: 2,
            ..EXACT
        };
        assert_eq!(
            parse("[1,1e-400]", &two),
            Err(JsonError::Limit(
                "JSON document has more than 2 values (at byte 3)".to_string()
            ))
        );
    }

    /// The fast path's claim (no formatting for at most 15 significant digits and
    /// |exp10| <= 22), and the 15-digit round trip it rests on, checked against the
    /// formatting rule on random decimals in every notation, from subnormal to
    /// overflow; and the values are the correctly rounded doubles.
    #[test]
    fn fast_path_agrees_with_shortest_formatting() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut fifteen = 0;
        for _ in 0..40_000 {
            let n = rng.gen_range(1..=18);
            let mut digits: String = (0..n)
                .map(|i| char::from(b'0' + rng.gen_range(u8::from(i == 0)..10)))
                .collect();
            if rng.gen_ratio(1, 4) {
                digits.push_str(&"0".repeat(rng.gen_range(1..25)));
            }
            let point = rng.gen_range(0..=digits.len());
            let mut text = if rng.gen() { "-" } else { "" }.to_string();
            match point {
                0 => {
                    text.push_str("0.");
                    text.push_str(&"0".repeat(rng.gen_range(0..4)));
                    text.push_str(&digits);
                }
                p if p == digits.len() => text.push_str(&digits),
                p => {
                    text.push_str(&digits[..p]);
                    text.push('.');
                    text.push_str(&digits[p..]);
                }
            }
            if rng.gen() {
                let e = rng.gen_range(-340..=330);
                text.push_str(&format!("{}{e:+}", if rng.gen() { 'e' } else { 'E' }));
            }
            let value: f64 = text.parse().unwrap();
            let ours = parse(&text, &EXACT);
            if !value.is_finite() {
                assert!(matches!(ours, Err(JsonError::Syntax(_))), "{text}");
                continue;
            }
            assert_eq!(ours.is_ok(), exact(&text), "{text}");
            if let Ok(v) = &ours {
                assert_eq!(v.as_f64().unwrap().to_bits(), value.to_bits(), "{text}");
            }
            // Any decimal of at most 15 significant digits in the normal range
            // round-trips (DBL_DIG), not only those the fast path takes.
            if canonical(&text).1.len() <= 15 && value.abs() >= f64::MIN_POSITIVE {
                assert!(ours.is_ok(), "{text}");
                fifteen += 1;
            }
        }
        assert!(fifteen > 10_000, "{fifteen}");
        // Every integer up to 2^53 is its double's shortest form; 2^53 + 1 is not.
        let edge = 1u64 << 53;
        let mut integers: Vec<u64> = (0..1000).chain(edge - 1000..=edge).collect();
        integers.extend((0..10_000).map(|_| rng.gen_range(0..=edge)));
        for n in integers {
            for text in [n.to_string(), format!("-{n}")] {
                assert!(exact(&text), "{text}");
                agrees_exact(&text);
            }
        }
        assert!(parse("9007199254740993", &EXACT).is_err());
    }

    /// What Rust, JavaScript or serde_json write for a double is its shortest
    /// form: always accepted, and read back to the same bits.
    #[test]
    fn written_doubles_are_read_back_exactly() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for i in 0..20_000 {
            let x = if i % 2 == 0 {
                f64::from_bits(rng.gen())
            } else {
                rng.gen_range(-1e6..1e6)
            };
            if !x.is_finite() {
                continue;
            }
            for text in [
                format!("{x:e}"),
                format!("{x}"),
                serde_json::to_string(&x).unwrap(),
            ] {
                let got = parse(&text, &EXACT).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(got.as_f64().unwrap().to_bits(), x.to_bits(), "{text}");
            }
        }
        // Exact ties, where writers differ (quarters and eighths from 2^48 to 2^53):
        // what each writes is accepted, and a last digit one off is judged as the
        // independent rule judges it.
        let mut ties = 0;
        for _ in 0..5_000 {
            let x =
                rng.gen_range(1u64 << 48..1 << 53) as f64 + f64::from(rng.gen_range(0..8u8)) / 8.0;
            let (rust, ryu) = (format!("{x}"), serde_json::to_string(&x).unwrap());
            if rust != ryu {
                ties += 1;
            }
            for text in [&rust, &ryu] {
                let got = parse(text, &EXACT).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(got.as_f64().unwrap().to_bits(), x.to_bits(), "{text}");
                let last = text.as_bytes()[text.len() - 1];
                for other in [last.wrapping_sub(1), last + 1] {
                    if other.is_ascii_digit() && other != b'0' {
                        let near = format!("{}{}", &text[..text.len() - 1], char::from(other));
                        assert_eq!(parse(&near, &EXACT).is_ok(), exact(&near), "{near}");
                    }
                }
            }
        }
        assert!(ties > 250, "{ties}");
    }

    #[test]
    fn limits_are_checked_inline_with_bounded_work() {
        let limits = JsonLimits::default();
        let limit = |text: &str| match parse(text, &limits) {
            Err(JsonError::Limit(m)) => m,
            other => panic!("expected a limit, got {other:?}"),
        };
        // 100,000-deep: refused at the 33rd bracket, whatever follows.
        let deep = "[".repeat(100_000);
        assert_eq!(
            limit(&deep),
            "JSON nesting is deeper than 32 levels (at byte 32)"
        );
        let deep_objects = "{\"a\":".repeat(100_000);
        assert_eq!(
            limit(&deep_objects),
            "JSON nesting is deeper than 32 levels (at byte 160)"
        );
        // A 900 KB string, terminated or not, escaped or not.
        let long = "a".repeat(900 * 1024);
        for text in [
            format!("\"{long}\""),
            format!("\"{long}"),
            format!("[\"\\n{long}\"]"),
            format!("{{\"{long}\":1}}"),
        ] {
            assert!(
                limit(&text).starts_with("JSON string is longer than 65536 bytes"),
                "{}",
                &text[..5]
            );
        }
        let exactly = format!("\"{}\"", "a".repeat(65_536));
        assert!(parse(&exactly, &limits).is_ok());
        // Values count as they start: a syntax error after the excess is not reached.
        let small = JsonLimits {
            max_total_values: 3,
            ..JsonLimits::default()
        };
        assert_eq!(
            parse("[1,2,3", &small),
            Err(JsonError::Limit(
                "JSON document has more than 3 values (at byte 5)".to_string()
            ))
        );
        // A syntax error before the excess is reported first.
        assert_eq!(
            parse("[1,x,2,3", &small),
            Err(JsonError::Syntax(
                "expected value at line 1 column 4".to_string()
            ))
        );
    }

    #[test]
    fn limits_fire_at_the_same_bytes_as_the_old_prescan() {
        let one = |max_object_entries, max_array_length, max_string_length| JsonLimits {
            max_depth: 4,
            max_object_entries,
            max_array_length,
            max_string_length,
            max_total_values: 1_000,
            exact_numbers: true,
        };
        let cases = [
            (
                one(2, 9, 9),
                r#"{"a":1,"b":{"c":1,"d":2,"e":3}}"#,
                "JSON object has more than 2 members (at byte 24)",
            ),
            (
                one(9, 2, 9),
                r#"[[1,2],[3,4,"five"]]"#,
                "JSON array has more than 2 elements (at byte 12)",
            ),
            (
                one(9, 9, 3),
                r#"{"abc":"abcd"}"#,
                "JSON string is longer than 3 bytes (from byte 7)",
            ),
            (
                one(9, 9, 3),
                r#"{"ab\"":1}"#,
                "JSON string is longer than 3 bytes (from byte 1)",
            ),
            (
                one(9, 9, 9),
                "[[[[[]]]]]",
                "JSON nesting is deeper than 4 levels (at byte 4)",
            ),
        ];
        for (limits, doc, want) in cases {
            assert_eq!(
                parse(doc, &limits),
                Err(JsonError::Limit(want.to_string())),
                "{doc}"
            );
        }
    }

    /// An independent limit checker (a pre-scan of the bytes, with its own frame
    /// stack), as an oracle for where limits fire.
    struct Frame {
        object: bool,
        count: u32,
        expect_name: bool,
    }

    fn prescan(body: &[u8], limits: &JsonLimits) -> Result<(), JsonError> {
        let mut stack: Vec<Frame> =
            Vec::with_capacity(limits.max_depth.min(MAX_DEPTH_CEILING) as usize);
        let mut total: u32 = 0;
        let mut i = 0usize;
        let n = body.len();

        // A value starts at byte `at`: count it in the document and in its array.
        let count_value =
            |stack: &mut Vec<Frame>, total: &mut u32, at: usize| -> Result<(), JsonError> {
                *total = total.saturating_add(1);
                if *total > limits.max_total_values {
                    return Err(JsonError::Limit(format!(
                        "JSON document has more than {} values (at byte {at})",
                        limits.max_total_values
                    )));
                }
                if let Some(top) = stack.last_mut() {
                    if !top.object {
                        top.count = top.count.saturating_add(1);
                        if top.count > limits.max_array_length {
                            return Err(JsonError::Limit(format!(
                                "JSON array has more than {} elements (at byte {at})",
                                limits.max_array_length
                            )));
                        }
                    }
                }
                Ok(())
            };

        while i < n {
            let byte = body[i];
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' => i += 1,
                b',' => {
                    if let Some(top) = stack.last_mut() {
                        top.expect_name = top.object;
                    }
                    i += 1;
                }
                b':' => {
                    if let Some(top) = stack.last_mut() {
                        top.expect_name = false;
                    }
                    i += 1;
                }
                b'{' | b'[' => {
                    count_value(&mut stack, &mut total, i)?;
                    if stack.len() >= limits.max_depth as usize {
                        return Err(JsonError::Limit(format!(
                            "JSON nesting is deeper than {} levels (at byte {i})",
                            limits.max_depth
                        )));
                    }
                    let object = byte == b'{';
                    stack.push(Frame {
                        object,
                        count: 0,
                        expect_name: object,
                    });
                    i += 1;
                }
                b'}' | b']' => {
                    match stack.pop() {
                        Some(frame) if frame.object == (byte == b'}') => {}
                        _ => {
                            return Err(JsonError::Syntax(format!(
                                "request body is not valid JSON: unbalanced brackets (at byte {i})"
                            )))
                        }
                    }
                    i += 1;
                }
                b'"' => {
                    let start = i;
                    let max = limits.max_string_length as usize;
                    let mut j = i + 1;
                    loop {
                        match body.get(j) {
                            None => {
                                return Err(JsonError::Syntax(format!(
                                    "request body is not valid JSON: unterminated string (from byte {start})"
                                )))
                            }
                            Some(b'"') => break,
                            // Skip the escaped byte; a multi-byte escape (\uXXXX) needs no
                            // special care as its digits are plain bytes.
                            Some(b'\\') => j += 2,
                            Some(_) => j += 1,
                        }
                        if j - start - 1 > max {
                            return Err(JsonError::Limit(format!(
                                "JSON string is longer than {max} bytes (from byte {start})"
                            )));
                        }
                    }
                    let name = stack
                        .last()
                        .is_some_and(|top| top.object && top.expect_name);
                    if name {
                        if let Some(top) = stack.last_mut() {
                            top.expect_name = false;
                            top.count = top.count.saturating_add(1);
                            if top.count > limits.max_object_entries {
                                return Err(JsonError::Limit(format!(
                                    "JSON object has more than {} members (at byte {start})",
                                    limits.max_object_entries
                                )));
                            }
                        }
                    } else {
                        count_value(&mut stack, &mut total, start)?;
                    }
                    i = j + 1;
                }
                _ => {
                    // A number or literal (or garbage the parser will refuse): one value,
                    // up to the next structural byte.
                    count_value(&mut stack, &mut total, i)?;
                    i += 1;
                    while i < n
                        && !matches!(
                            body[i],
                            b' ' | b'\t'
                                | b'\n'
                                | b'\r'
                                | b','
                                | b':'
                                | b'{'
                                | b'}'
                                | b'['
                                | b']'
                                | b'"'
                        )
                    {
                        i += 1;
                    }
                }
            }
        }
        if !stack.is_empty() {
            return Err(JsonError::Syntax(
                "request body is not valid JSON: unclosed array or object".to_string(),
            ));
        }
        Ok(())
    }

    /// A random JSON document of bounded size.
    fn random_value(rng: &mut rand::rngs::StdRng, depth: u32) -> Value {
        let pick = if depth >= 6 {
            rng.gen_range(0..4)
        } else {
            rng.gen_range(0..6)
        };
        match pick {
            0 => Value::Null,
            1 => Value::Bool(rng.gen()),
            2 => match rng.gen_range(0..3) {
                0 => Value::from(rng.gen_range(-1000i64..1000)),
                1 => Value::from(rng.gen::<u64>()),
                _ => Value::from(rng.gen_range(-1e6..1e6f64)),
            },
            3 => {
                let chars = ['a', 'b', '"', '\\', '\n', 'é', '😀', '\u{1}', '/'];
                let n = rng.gen_range(0..8);
                Value::String(
                    (0..n)
                        .map(|_| chars[rng.gen_range(0..chars.len())])
                        .collect(),
                )
            }
            4 => Value::Array(
                (0..rng.gen_range(0..5))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.gen_range(0..5))
                    .map(|i| {
                        (
                            format!("k{}{}", i, "x".repeat(rng.gen_range(0..4))),
                            random_value(rng, depth + 1),
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// On valid documents, each limit fires exactly where (and with the message)
    /// the old pre-scan reported it.
    #[test]
    fn limits_match_the_old_prescan_on_random_documents() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut refused = 0;
        let mut inexact_refused = 0;
        let mut exact_accepted = 0;
        for _ in 0..5_000 {
            let value = random_value(&mut rng, 0);
            let text = if rng.gen() {
                value.to_string()
            } else {
                serde_json::to_string_pretty(&value).unwrap()
            };
            let limits = JsonLimits {
                max_depth: rng.gen_range(1..8),
                max_object_entries: rng.gen_range(1..6),
                max_array_length: rng.gen_range(1..6),
                max_string_length: rng.gen_range(1..12),
                max_total_values: rng.gen_range(1..40),
                exact_numbers: rng.gen(),
            };
            let new = parse(&text, &limits);
            let old = prescan(text.as_bytes(), &limits);
            // Under `exact_numbers`, the first inexact number (random u64s are,
            // mostly) is refused where it stands, unless a limit fires first: both
            // are checked as the parse reaches them, a value's count before its
            // digits.
            let inexact = number_tokens(&text)
                .into_iter()
                .find(|(_, t)| limits.exact_numbers && !exact(t))
                .map(|(at, _)| at);
            let limit_at = |e: &JsonError| -> usize {
                let m = e.to_string();
                m.rsplit("byte ")
                    .next()
                    .unwrap()
                    .trim_end_matches(')')
                    .parse()
                    .unwrap()
            };
            match (&old, inexact) {
                (Err(e), Some(at)) if at < limit_at(e) => {
                    assert_number_limit(&text, &new, at);
                    inexact_refused += 1;
                }
                (Ok(()), Some(at)) => {
                    assert_number_limit(&text, &new, at);
                    inexact_refused += 1;
                }
                (Err(e), _) => assert_eq!(&new, &Err(e.clone()), "{text} {limits:?}"),
                // serde_json, without its `float_roundtrip` feature, may read a float
                // 1 ulp off what it wrote: so does the parser without
                // `exact_numbers` (it hands such numbers to serde_json), not with it.
                (Ok(()), None) if limits.exact_numbers => {
                    same_exact(&text, new.as_ref().unwrap(), &oracle(&text).unwrap());
                    exact_accepted += 1;
                }
                (Ok(()), None) => assert_eq!(new, Ok(oracle(&text).unwrap()), "{text} {limits:?}"),
            }
            if new.is_err() {
                refused += 1;
            }
        }
        assert!(refused > 1_000 && refused < 4_900, "{refused}");
        // Both number verdicts are exercised.
        assert!(inexact_refused > 100, "{inexact_refused}");
        assert!(exact_accepted > 1_000, "{exact_accepted}");
    }

    /// Strings of every length around the limit, with a special byte at every
    /// position: the same verdicts as the old pre-scan and serde_json.
    #[test]
    fn string_scan_matches_the_byte_loop_at_every_length() {
        for max in 1..20u32 {
            let limits = JsonLimits {
                max_string_length: max,
                ..JsonLimits::default()
            };
            for len in 0..40 {
                let plain = "é".repeat(len / 2) + &"a".repeat(len % 2);
                let mut docs = vec![
                    format!("\"{plain}\""),
                    format!("[\"{plain}\"]"),
                    format!("\"{plain}"),
                    format!("{{\"{plain}\":1}}"),
                ];
                for at in 0..=plain.len() {
                    if plain.is_char_boundary(at) {
                        for special in ["\\n", "\\\"", "\u{1}", "\\u00e9", "\\"] {
                            let mut s = plain.clone();
                            s.insert_str(at, special);
                            docs.push(format!("[\"{s}\",1]"));
                        }
                    }
                }
                for doc in docs {
                    let new = parse(&doc, &limits);
                    match prescan(doc.as_bytes(), &limits) {
                        // On valid JSON, the same limit at the same byte; on a
                        // malformed body, an earlier syntax error may come first.
                        Err(JsonError::Limit(m)) if oracle(&doc).is_some() => {
                            assert_eq!(new, Err(JsonError::Limit(m)), "{doc:?} {max}")
                        }
                        Err(JsonError::Limit(_)) => assert!(new.is_err(), "{doc:?}"),
                        Err(JsonError::Syntax(_)) => assert!(new.is_err(), "{doc:?}"),
                        Ok(()) => assert_eq!(new.ok(), oracle(&doc), "{doc:?} {max}"),
                    }
                }
            }
        }
    }

    /// Random mutations of valid documents: the parser and the oracle agree on every
    /// one (same verdict, same value), with and without `exact_numbers`.
    #[test]
    fn agrees_with_serde_json_on_mutated_documents() {
        let seeds = [
            r#"{"order_id":"ord_1","items":[{"sku":"ABC-1","qty":2,"p":19.99},{"sku":"X\"Y","qty":-1}],"n":null,"t":true}"#,
            r#"[0,-0,1e5,-2.5E-3,"\u00e9\ud83d\ude00",{"a":{"b":[[],{}]}},false]"#,
            r#"{"a":"\\","b":"\/","c":[1,2,3],"d":{"e":"f"},"a\u0062":9}"#,
            r#"[10.000000000000000001,9007199254740993,0.30000000000000004,1e-400,12.75e0]"#,
        ];
        let alphabet: &[&str] = &[
            "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u", "d800", "dc00", "0", "1", "-", ".",
            "e", "+", " ", "\n", "a", "true", "null", "\"a\"", "\"b\":", "é", "\u{1}",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut accepted = 0;
        let mut exact_accepted = 0;
        for round in 0..20_000 {
            let mut doc = seeds[round % seeds.len()].to_string();
            for _ in 0..rng.gen_range(1..4) {
                let mut at = rng.gen_range(0..=doc.len());
                while !doc.is_char_boundary(at) {
                    at -= 1;
                }
                match rng.gen_range(0..3) {
                    0 => doc.insert_str(at, alphabet[rng.gen_range(0..alphabet.len())]),
                    1 => {
                        let mut end = (at + rng.gen_range(1..4)).min(doc.len());
                        while !doc.is_char_boundary(end) {
                            end += 1;
                        }
                        doc.replace_range(at..end, "");
                    }
                    _ => {
                        let mut end = (at + 1).min(doc.len());
                        while !doc.is_char_boundary(end) {
                            end += 1;
                        }
                        doc.replace_range(at..end, alphabet[rng.gen_range(0..alphabet.len())]);
                    }
                }
            }
            if parse(&doc, &OPEN).is_ok() {
                accepted += 1;
            }
            if parse(&doc, &EXACT).is_ok() {
                exact_accepted += 1;
            }
            agrees(&doc);
            agrees_exact(&doc);
        }
        // The mutations must exercise both verdicts, in both modes.
        assert!(accepted > 1_000 && accepted < 19_000, "{accepted}");
        assert!(
            exact_accepted > 1_000 && exact_accepted < accepted,
            "{exact_accepted}"
        );
    }
}
