//! The JSONPath subset of `response.mask[].path`, parsed once at configure time.
//!
//! Grammar (a strict subset of RFC 9535 JSONPath):
//!
//! ```text
//! path      = "$" *segment
//! segment   = "." name                    ; member-name shorthand
//!           / "[" ws selector ws "]"
//! selector  = "'" quoted "'" / %x22 quoted %x22   ; member name, RFC 9535 escapes
//!           / index                       ; 0, 1, 2, ... (no sign, no leading zero)
//!           / "*"                         ; every array element or object member value
//! name      = name-first *(name-first / DIGIT)
//! name-first = ALPHA / "_" / any non-ASCII character
//! ```
//!
//! Not supported, each with its own error: recursive descent (`..`), `.*`
//! (write `[*]`), filters (`[?...]`), slices (`[1:2]`), unions (`[0,1]`) and
//! negative indexes (masking works in one pass over the body, before an array's
//! length is known). Errors carry the 1-based column (in characters) where the
//! problem starts.

use std::fmt;

/// One step of a compiled path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// An object member by exact name (`.name`, `['name']`).
    Name(Box<str>),
    /// An array element by 0-based index (`[N]`).
    Index(usize),
    /// Every array element and every object member value (`[*]`).
    Wildcard,
}

/// A compiled path: the segments after `$`. Empty means the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    /// Steps from the root, in order.
    pub segments: Vec<Segment>,
}

/// Why a path does not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// 1-based column, counted in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for PathError {}

/// Parses a path of the supported subset.
pub fn parse(src: &str) -> Result<JsonPath, PathError> {
    Parser {
        chars: src.chars().collect(),
        pos: 0,
    }
    .path()
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

fn err<T>(index: usize, message: impl Into<String>) -> Result<T, PathError> {
    Err(PathError {
        column: index + 1,
        message: message.into(),
    })
}

fn is_name_first(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_name_char(c: char) -> bool {
    is_name_first(c) || c.is_ascii_digit()
}

/// Shows a character in an error message without echoing control characters.
fn show(c: char) -> String {
    if c.is_control() {
        format!("U+{:04X}", u32::from(c))
    } else {
        format!("`{c}`")
    }
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn path(mut self) -> Result<JsonPath, PathError> {
        match self.peek() {
            None => return err(0, "must not be empty; write `$` followed by segments"),
            Some('$') => self.pos += 1,
            Some(c) => return err(0, format!("must start with `$`, found {}", show(c))),
        }
        let mut segments = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                '.' => segments.push(self.dot()?),
                '[' => segments.push(self.bracket()?),
                c => return err(self.pos, format!("expected `.` or `[`, found {}", show(c))),
            }
        }
        Ok(JsonPath { segments })
    }

    /// `.name` (the dot is at `self.pos`).
    fn dot(&mut self) -> Result<Segment, PathError> {
        let dot = self.pos;
        self.pos += 1;
        match self.peek() {
            None => err(dot, "expected a member name after `.`"),
            Some('.') => err(dot, "recursive descent `..` is not supported"),
            Some('*') => err(self.pos, "`.*` is not supported; write `[*]`"),
            Some(c) if is_name_first(c) => {
                let start = self.pos;
                while self.peek().is_some_and(is_name_char) {
                    self.pos += 1;
                }
                if let Some(c) = self.peek() {
                    if c != '.' && c != '[' {
                        return err(
                            self.pos,
                            format!(
                                "unexpected {} in member name; write ['...'] for names \
                                 that are not identifiers",
                                show(c)
                            ),
                        );
                    }
                }
                let name: String = self
                    .chars
                    .get(start..self.pos)
                    .unwrap_or(&[])
                    .iter()
                    .collect();
                Ok(Segment::Name(name.into_boxed_str()))
            }
            Some(c) => err(
                self.pos,
                format!(
                    "expected a member name after `.`, found {}; write ['...'] for names \
                     that are not identifiers",
                    show(c)
                ),
            ),
        }
    }

    fn skip_blank(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.pos += 1;
        }
    }

    /// `[...]` (the bracket is at `self.pos`).
    fn bracket(&mut self) -> Result<Segment, PathError> {
        let open = self.pos;
        self.pos += 1;
        self.skip_blank();
        let seg = match self.peek() {
            None => return err(open, "unclosed `[`"),
            Some(q @ ('\'' | '"')) => Segment::Name(self.quoted(q)?.into_boxed_str()),
            Some('*') => {
                self.pos += 1;
                Segment::Wildcard
            }
            Some('0'..='9') => Segment::Index(self.index()?),
            Some('-') => return err(self.pos, "negative indexes are not supported"),
            Some('?') => return err(self.pos, "filter expressions are not supported"),
            Some(':') => return err(self.pos, "slices are not supported"),
            Some(']') => {
                return err(
                    open,
                    "empty brackets; expected a quoted name, an index or `*`",
                )
            }
            Some(c) => {
                return err(
                    self.pos,
                    format!(
                        "expected a quoted name, an index or `*` inside `[...]`, found {}",
                        show(c)
                    ),
                )
            }
        };
        self.skip_blank();
        match self.peek() {
            Some(']') => {
                self.pos += 1;
                Ok(seg)
            }
            None => err(open, "unclosed `[`"),
            Some(',') => err(
                self.pos,
                "unions (`[a,b]`) are not supported; write one rule per path",
            ),
            Some(':') => err(self.pos, "slices are not supported"),
            Some(c) => err(self.pos, format!("expected `]`, found {}", show(c))),
        }
    }

    fn index(&mut self) -> Result<usize, PathError> {
        let start = self.pos;
        let mut value: usize = 0;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            if self.pos > start && value == 0 {
                return err(start, "leading zeros are not allowed in an index");
            }
            value = match value
                .checked_mul(10)
                .and_then(|v| v.checked_add(d as usize))
            {
                Some(v) if v <= u32::MAX as usize => v,
                _ => return err(start, "index is too large"),
            };
            self.pos += 1;
        }
        Ok(value)
    }

    /// A quoted member name with RFC 9535 escapes; the quote is at `self.pos`.
    fn quoted(&mut self, quote: char) -> Result<String, PathError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return err(open, "unterminated quoted name");
            };
            let here = self.pos;
            self.pos += 1;
            match c {
                c if c == quote => return Ok(out),
                '\\' => out.push(self.escape(here)?),
                c if u32::from(c) < 0x20 => {
                    return err(
                        here,
                        format!("{} must be escaped in a quoted name", show(c)),
                    )
                }
                c => out.push(c),
            }
        }
    }

    /// After a backslash at `at`.
    fn escape(&mut self, at: usize) -> Result<char, PathError> {
        let Some(c) = self.peek() else {
            return err(at, "unterminated escape");
        };
        self.pos += 1;
        Ok(match c {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            '/' => '/',
            '\\' => '\\',
            '\'' => '\'',
            '"' => '"',
            'u' => return self.unicode_escape(at),
            c => return err(at, format!("invalid escape `\\{c}`")),
        })
    }

    /// `\uXXXX`, with a surrogate pair spelled as two escapes.
    fn unicode_escape(&mut self, at: usize) -> Result<char, PathError> {
        let hi = self.hex4(at)?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if self.peek() != Some('\\') || self.peek_at(1) != Some('u') {
                return err(
                    at,
                    "high surrogate must be followed by a `\\u` low surrogate",
                );
            }
            self.pos += 2;
            let lo = self.hex4(at)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return err(at, "high surrogate must be followed by a low surrogate");
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else if (0xDC00..0xE000).contains(&hi) {
            return err(at, "lone low surrogate");
        } else {
            hi
        };
        match char::from_u32(code) {
            Some(c) => Ok(c),
            None => err(at, "invalid `\\u` escape"),
        }
    }

    fn hex4(&mut self, at: usize) -> Result<u32, PathError> {
        let mut v = 0u32;
        for _ in 0..4 {
            match self.peek().and_then(|c| c.to_digit(16)) {
                Some(d) => v = v * 16 + d,
                None => return err(at, "`\\u` needs four hex digits"),
            }
            self.pos += 1;
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Segment {
        Segment::Name(s.into())
    }

    #[test]
    fn valid_paths() {
        use Segment::{Index, Wildcard};
        let cases: Vec<(&str, Vec<Segment>)> = vec![
            ("$", vec![]),
            ("$.a", vec![name("a")]),
            ("$.card.number", vec![name("card"), name("number")]),
            ("$._x9", vec![name("_x9")]),
            ("$.héllo", vec![name("héllo")]),
            ("$['a b']", vec![name("a b")]),
            ("$[\"a'b\"]", vec![name("a'b")]),
            ("$['it\\'s']", vec![name("it's")]),
            ("$['x-y'].z", vec![name("x-y"), name("z")]),
            ("$['a\\nb\\\\c\\/d']", vec![name("a\nb\\c/d")]),
            ("$['\\u00e9\\uD83D\\uDE00']", vec![name("é😀")]),
            ("$['']", vec![name("")]),
            ("$[0]", vec![Index(0)]),
            ("$[10].a", vec![Index(10), name("a")]),
            ("$[ 3 ]", vec![Index(3)]),
            ("$[*]", vec![Wildcard]),
            (
                "$.items[*].cost",
                vec![name("items"), Wildcard, name("cost")],
            ),
            (
                "$.orders[*].items[*].card",
                vec![
                    name("orders"),
                    Wildcard,
                    name("items"),
                    Wildcard,
                    name("card"),
                ],
            ),
            ("$[*][*]", vec![Wildcard, Wildcard]),
            ("$['a'][\"b\"][2]", vec![name("a"), name("b"), Index(2)]),
        ];
        for (src, want) in cases {
            assert_eq!(parse(src), Ok(JsonPath { segments: want }), "{src}");
        }
    }

    #[test]
    fn invalid_paths_name_the_column() {
        let cases = [
            ("", "column 1: must not be empty; write `$` followed by segments"),
            ("a.b", "column 1: must start with `$`, found `a`"),
            ("$a", "column 2: expected `.` or `[`, found `a`"),
            ("$.", "column 2: expected a member name after `.`"),
            ("$..a", "column 2: recursive descent `..` is not supported"),
            ("$.*", "column 3: `.*` is not supported; write `[*]`"),
            ("$.a.", "column 4: expected a member name after `.`"),
            ("$.1a", "column 3: expected a member name after `.`, found `1`; write ['...'] for names that are not identifiers"),
            ("$.x-y", "column 4: unexpected `-` in member name; write ['...'] for names that are not identifiers"),
            ("$.a b", "column 4: unexpected ` ` in member name; write ['...'] for names that are not identifiers"),
            ("$[", "column 2: unclosed `[`"),
            ("$[0", "column 2: unclosed `[`"),
            ("$[]", "column 2: empty brackets; expected a quoted name, an index or `*`"),
            ("$[-1]", "column 3: negative indexes are not supported"),
            ("$[01]", "column 3: leading zeros are not allowed in an index"),
            ("$[99999999999]", "column 3: index is too large"),
            ("$[1:2]", "column 4: slices are not supported"),
            ("$[:2]", "column 3: slices are not supported"),
            ("$[0,1]", "column 4: unions (`[a,b]`) are not supported; write one rule per path"),
            ("$[?(@.a)]", "column 3: filter expressions are not supported"),
            ("$[a]", "column 3: expected a quoted name, an index or `*` inside `[...]`, found `a`"),
            ("$['a'", "column 2: unclosed `[`"),
            ("$['a]", "column 3: unterminated quoted name"),
            ("$['a' x]", "column 7: expected `]`, found `x`"),
            ("$['\\x']", "column 4: invalid escape `\\x`"),
            ("$['\\u12']", "column 4: `\\u` needs four hex digits"),
            ("$['\\uD800']", "column 4: high surrogate must be followed by a `\\u` low surrogate"),
            ("$['\\uD800\\u0041']", "column 4: high surrogate must be followed by a low surrogate"),
            ("$['\\uDC00']", "column 4: lone low surrogate"),
            ("$['a\u{1}']", "column 5: U+0001 must be escaped in a quoted name"),
            ("$.a\u{7}", "column 4: unexpected U+0007 in member name; write ['...'] for names that are not identifiers"),
            ("$.é-", "column 4: unexpected `-` in member name; write ['...'] for names that are not identifiers"),
        ];
        for (src, want) in cases {
            let got = parse(src).map_err(|e| e.to_string());
            assert_eq!(got.err().as_deref(), Some(want), "{src:?}");
        }
    }
}
