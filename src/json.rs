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
//! zeros, no NaN), and so are the numbers (integers that fit stay `u64`/`i64`, `-0`
//! and larger ones become `f64`, anything else is parsed by serde_json itself). Lone
//! UTF-16 surrogates in `\u` escapes are refused, and so are duplicate member names
//! (after unescaping: `"a"` and `"\u0061"` are the same name): RFC 8259 §4 leaves
//! their meaning open, and an upstream parser that keeps the first one would see a
//! value that was never validated. Error messages follow serde_json's (`... at line
//! L column C`); structural errors say what is unbalanced or unclosed.
//!
//! Precedence: whichever problem comes first in the text is reported, a limit or a
//! syntax error. Both are 400s; only the metric reason (`limits` or `not_json`) tells
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
}

impl Default for JsonLimits {
    fn default() -> Self {
        JsonLimits {
            max_depth: DEFAULT_MAX_DEPTH,
            max_object_entries: DEFAULT_MAX_OBJECT_ENTRIES,
            max_array_length: DEFAULT_MAX_ARRAY_LENGTH,
            max_string_length: DEFAULT_MAX_STRING_LENGTH,
            max_total_values: DEFAULT_MAX_TOTAL_VALUES,
        }
    }
}

/// Limits for the plugin configuration: the operator's own document, so only the
/// depth is bounded, at serde's recursion limit, because the configuration is
/// deserialized recursively after this parse.
pub const CONFIG_LIMITS: JsonLimits = JsonLimits {
    max_depth: 128,
    max_object_entries: u32::MAX,
    max_array_length: u32::MAX,
    max_string_length: u32::MAX,
    max_total_values: u32::MAX,
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
        let before = self.bytes.get(..index).unwrap_or(self.bytes);
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        JsonError::Syntax(format!(
            "{what} at line {line} column {}",
            before.len() - line_start
        ))
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

    /// A number at `pos` (RFC 8259 §6 grammar). Integers that fit a `u64` or `i64`
    /// are converted here; every other number (fractions, exponents, `-0`, integers
    /// past 64 bits) is handed, as validated text, to serde_json's own number parser,
    /// so the values are exactly those serde_json produces.
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
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            self.digits_required()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits_required()?;
        }
        if integer {
            let digits = self.bytes.get(digits_start..digits_end).unwrap_or(&[]);
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
        let text = self.text.get(start..self.pos).unwrap_or("");
        Number::from_str(text).map_err(|_| self.syntax("number out of range", self.pos))
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

/// Four hex digits at `at`.
fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at + 4)?;
    digits.iter().try_fold(0u32, |n, &d| {
        let v = char::from(d).to_digit(16)?;
        Some(n * 16 + v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    /// Limits that never fire (within serde_json's own recursion limit of 128).
    const OPEN: JsonLimits = JsonLimits {
        max_depth: 100,
        max_object_entries: u32::MAX,
        max_array_length: u32::MAX,
        max_string_length: u32::MAX,
        max_total_values: u32::MAX,
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
            };
            // (serde_json, without its `float_roundtrip` feature, may read a float
            // back 1 ulp off what it wrote; the parser keeps its numbers exactly.)
            let old = prescan(text.as_bytes(), &limits).map(|()| oracle(&text).unwrap());
            let new = parse(&text, &limits);
            assert_eq!(new, old, "{text} {limits:?}");
            if new.is_err() {
                refused += 1;
            }
        }
        assert!(refused > 1_000 && refused < 4_900, "{refused}");
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
    /// one (same verdict, same value).
    #[test]
    fn agrees_with_serde_json_on_mutated_documents() {
        let seeds = [
            r#"{"order_id":"ord_1","items":[{"sku":"ABC-1","qty":2,"p":19.99},{"sku":"X\"Y","qty":-1}],"n":null,"t":true}"#,
            r#"[0,-0,1e5,-2.5E-3,"\u00e9\ud83d\ude00",{"a":{"b":[[],{}]}},false]"#,
            r#"{"a":"\\","b":"\/","c":[1,2,3],"d":{"e":"f"},"a\u0062":9}"#,
        ];
        let alphabet: &[&str] = &[
            "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u", "d800", "dc00", "0", "1", "-", ".",
            "e", "+", " ", "\n", "a", "true", "null", "\"a\"", "\"b\":", "é", "\u{1}",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut accepted = 0;
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
            agrees(&doc);
        }
        // The mutations must exercise both verdicts.
        assert!(accepted > 1_000 && accepted < 19_000, "{accepted}");
    }
}
