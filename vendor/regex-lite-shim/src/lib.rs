//! The part of the `regex` API that boon (the JSON Schema validator) uses, served
//! by `regex-lite`: [`Regex::new`], [`Regex::is_match`], [`Regex::as_str`] and
//! [`Error`]. Patched in for the real crate by api-guard's `[patch.crates-io]`: the
//! real one brings Unicode tables, DFA engines and aho-corasick, 0.69 MB of the
//! Wasm module; regex-lite is also linear-time.
//!
//! boon first translates a schema's ECMA-262 pattern into Rust regex syntax (`\d`
//! -> `[0-9]`, `\w` -> `[A-Za-z0-9_]`, `\s` -> an explicit class, `\cX`). Two things
//! in the result are beyond regex-lite and are rewritten here before compiling:
//! classes nested in a bracketed class (boon writes `[a-z\d]` as `[a-z[0-9]]`)
//! become one flat class; ECMA-262 `\p{..}`/`\P{..}` with a General_Category value
//! (`\p{Letter}`, `\p{L}`, `\p{gc=Lu}`, `\p{General_Category=Decimal_Number}`,
//! `\p{digit}`, as JSON-Schema-Test-Suite requires) become explicit classes from a
//! 16 KB table (`gencat.rs`, Unicode 16.0). Other properties (`Script=`,
//! `Script_Extensions=`, binary ones such as `Alphabetic`) and class set operations
//! (`&&`, `--`, `~~`) are refused with an [`Error`] when the schema is compiled, so
//! at configuration load, never on a request.
//!
//! Matching: regex-lite runs a PikeVM, which made schema validation about a
//! quarter slower than with `regex`. Patterns of the shape schemas mostly use are
//! matched by a greedy single pass instead (`Sequence`), the rest by regex-lite.

mod gencat;

use regex_syntax::ast::{self, Ast, ClassSet, ClassSetItem, ClassUnicodeKind};
use std::borrow::Cow;
use std::fmt;

/// A compiled pattern.
#[derive(Clone, Debug)]
pub struct Regex {
    re: regex_lite::Regex,
    /// The same pattern as a [`Sequence`], when it is one: matched without
    /// regex-lite's PikeVM, several times faster on the anchored patterns
    /// schemas are full of (`^[A-Z]{3}-[0-9]{4,8}$`).
    sequence: Option<Sequence>,
    /// The pattern as given (before `\p{..}` expansion), for [`Regex::as_str`].
    source: Box<str>,
}

impl Regex {
    /// Compiles `pattern` (Rust regex syntax as regex-lite reads it, plus `\p{..}`
    /// and `\P{..}` General_Category classes).
    pub fn new(pattern: &str) -> Result<Regex, Error> {
        // Not parseable: regex-lite then reports the syntax error itself.
        let ast = ast::parse::Parser::new().parse(pattern).ok();
        let expanded = match &ast {
            Some(ast) => expand_classes(pattern, ast)?,
            None => Cow::Borrowed(pattern),
        };
        let re = regex_lite::Regex::new(&expanded).map_err(Error::Syntax)?;
        Ok(Regex {
            re,
            sequence: ast.as_ref().and_then(Sequence::from_ast),
            source: pattern.into(),
        })
    }

    /// True if the pattern matches somewhere in `haystack`.
    pub fn is_match(&self, haystack: &str) -> bool {
        match &self.sequence {
            Some(sequence) => sequence.is_match(haystack),
            None => self.re.is_match(haystack),
        }
    }

    /// The pattern this was compiled from.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// Why a pattern was refused.
#[derive(Clone, Debug)]
pub enum Error {
    /// regex-lite refused the pattern.
    Syntax(regex_lite::Error),
    /// A `\p{..}`/`\P{..}` class that is not a General_Category value.
    UnsupportedProperty(String),
    /// Syntax regex-lite has no equivalent for.
    Unsupported(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Syntax(e) => write!(f, "{e}"),
            Error::UnsupportedProperty(name) => write!(
                f,
                "Unicode property \\p{{{name}}} is not supported (only General_Category values such as \\p{{Letter}} or \\p{{Lu}})"
            ),
            Error::Unsupported(what) => write!(f, "{what} are not supported"),
        }
    }
}

impl std::error::Error for Error {}

/// Rewrites what regex-lite cannot read into what it can, through regex-syntax's
/// parser (boon's ECMA-262 translation already links it): every `\p{..}`/`\P{..}`
/// becomes an explicit class, and every bracketed class holding a nested class
/// (boon writes `[a-z\d]` as `[a-z[0-9]]`) or a property class becomes one flat
/// class of explicit ranges. Everything else is copied as written.
fn expand_classes<'p>(pattern: &'p str, ast: &Ast) -> Result<Cow<'p, str>, Error> {
    let mut edits = Vec::new();
    collect_edits(ast, &mut edits)?;
    if edits.is_empty() {
        return Ok(Cow::Borrowed(pattern));
    }
    let mut out = String::with_capacity(pattern.len());
    let mut at = 0;
    for (span, text) in edits {
        out.push_str(&pattern[at..span.start.offset]);
        out.push_str(&text);
        at = span.end.offset;
    }
    out.push_str(&pattern[at..]);
    Ok(Cow::Owned(out))
}

/// The replacements, in pattern order, for the outermost classes that need one.
fn collect_edits(node: &Ast, edits: &mut Vec<(ast::Span, String)>) -> Result<(), Error> {
    match node {
        Ast::ClassUnicode(class) => {
            let set = unicode_set(class)?;
            edits.push((class.span, class_text(&set)));
        }
        Ast::ClassBracketed(class) if needs_flattening(&class.kind) => {
            let set = bracketed_set(class)?;
            edits.push((class.span, class_text(&set)));
        }
        Ast::Repetition(rep) => collect_edits(&rep.ast, edits)?,
        Ast::Group(group) => collect_edits(&group.ast, edits)?,
        Ast::Alternation(alt) => {
            for a in &alt.asts {
                collect_edits(a, edits)?;
            }
        }
        Ast::Concat(cat) => {
            for a in &cat.asts {
                collect_edits(a, edits)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// True if the class holds a nested class, a property class or a set operation.
fn needs_flattening(set: &ClassSet) -> bool {
    fn item(i: &ClassSetItem) -> bool {
        match i {
            ClassSetItem::Bracketed(_) | ClassSetItem::Unicode(_) => true,
            ClassSetItem::Union(u) => u.items.iter().any(item),
            _ => false,
        }
    }
    match set {
        ClassSet::Item(i) => item(i),
        ClassSet::BinaryOp(_) => true,
    }
}

/// Sorted, merged, inclusive code point ranges.
type Set = Vec<(u32, u32)>;

fn bracketed_set(class: &ast::ClassBracketed) -> Result<Set, Error> {
    let ClassSet::Item(item) = &class.kind else {
        return Err(Error::Unsupported(
            "class set operations (&&, --, ~~)".to_string(),
        ));
    };
    let mut set = Vec::new();
    item_ranges(item, &mut set)?;
    let set = normalize(set);
    Ok(if class.negated { complement(&set) } else { set })
}

fn item_ranges(item: &ClassSetItem, out: &mut Set) -> Result<(), Error> {
    match item {
        ClassSetItem::Empty(_) => {}
        ClassSetItem::Literal(l) => out.push((l.c as u32, l.c as u32)),
        ClassSetItem::Range(r) => out.push((r.start.c as u32, r.end.c as u32)),
        ClassSetItem::Ascii(a) => {
            let set = normalize(ascii_ranges(&a.kind).to_vec());
            out.extend(if a.negated { complement(&set) } else { set });
        }
        ClassSetItem::Perl(p) => out.extend(perl_set(p)),
        ClassSetItem::Unicode(u) => out.extend(unicode_set(u)?),
        ClassSetItem::Bracketed(b) => out.extend(bracketed_set(b)?),
        ClassSetItem::Union(u) => {
            for i in &u.items {
                item_ranges(i, out)?;
            }
        }
    }
    Ok(())
}

/// regex-lite's Perl classes are ASCII (boon has replaced them already).
fn perl_set(p: &ast::ClassPerl) -> Set {
    let ranges: &[(u32, u32)] = match p.kind {
        ast::ClassPerlKind::Digit => &[(0x30, 0x39)],
        ast::ClassPerlKind::Space => &[(0x09, 0x0D), (0x20, 0x20)],
        ast::ClassPerlKind::Word => &[(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    };
    let set = normalize(ranges.to_vec());
    if p.negated {
        complement(&set)
    } else {
        set
    }
}

fn ascii_ranges(kind: &ast::ClassAsciiKind) -> &'static [(u32, u32)] {
    use ast::ClassAsciiKind as K;
    match kind {
        K::Alnum => &[(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
        K::Alpha => &[(0x41, 0x5A), (0x61, 0x7A)],
        K::Ascii => &[(0x00, 0x7F)],
        K::Blank => &[(0x09, 0x09), (0x20, 0x20)],
        K::Cntrl => &[(0x00, 0x1F), (0x7F, 0x7F)],
        K::Digit => &[(0x30, 0x39)],
        K::Graph => &[(0x21, 0x7E)],
        K::Lower => &[(0x61, 0x7A)],
        K::Print => &[(0x20, 0x7E)],
        K::Punct => &[(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
        K::Space => &[(0x09, 0x0D), (0x20, 0x20)],
        K::Upper => &[(0x41, 0x5A)],
        K::Word => &[(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
        K::Xdigit => &[(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
    }
}

/// The code points of a `\p{..}`/`\P{..}` General_Category class.
fn unicode_set(class: &ast::ClassUnicode) -> Result<Set, Error> {
    let (name, negated) = match &class.kind {
        ClassUnicodeKind::OneLetter(c) => (c.to_string(), class.negated),
        ClassUnicodeKind::Named(name) => (name.clone(), class.negated),
        ClassUnicodeKind::NamedValue { op, name, value } => (
            format!("{name}={value}"),
            class.negated != matches!(op, ast::ClassUnicodeOpKind::NotEqual),
        ),
    };
    let mask = category_mask(&name).ok_or(Error::UnsupportedProperty(name))?;
    let set = category_set(mask);
    Ok(if negated { complement(&set) } else { set })
}

/// A pattern anchored at the start (`^` or `\\A`) that is a plain sequence of
/// characters, classes and repetitions of them, optionally anchored at the end,
/// in which no repetition of variable length shares a character with what could
/// take the character after it (the following elements, up to the first one that
/// cannot be empty). Then a match, if there is one, takes the longest run each
/// repetition allows, so one greedy left-to-right pass decides it: no
/// backtracking, no state sets. Anything else (groups,
/// alternation, flags, other assertions, unanchored patterns) is left to regex-lite.
#[derive(Clone, Debug)]
struct Sequence {
    elements: Vec<Element>,
    /// Ends with `$` or `\\z`: the whole input must be consumed.
    to_end: bool,
}

/// `min..=max` characters of `set` (`max` `None`: unbounded).
#[derive(Clone, Debug)]
struct Element {
    set: Set,
    min: u32,
    max: Option<u32>,
}

impl Sequence {
    fn from_ast(ast: &Ast) -> Option<Sequence> {
        let nodes: &[Ast] = match ast {
            Ast::Concat(cat) => &cat.asts,
            single => std::slice::from_ref(single),
        };
        let (first, mut rest) = nodes.split_first()?;
        let Ast::Assertion(a) = first else {
            return None;
        };
        if !matches!(
            a.kind,
            ast::AssertionKind::StartLine | ast::AssertionKind::StartText
        ) {
            return None;
        }
        let mut to_end = false;
        if let Some((Ast::Assertion(a), init)) = rest.split_last() {
            if matches!(
                a.kind,
                ast::AssertionKind::EndLine | ast::AssertionKind::EndText
            ) {
                to_end = true;
                rest = init;
            }
        }
        let elements = rest.iter().map(element).collect::<Option<Vec<_>>>()?;
        // Greedy is exact only where a variable repetition cannot give characters
        // back to what follows it: whatever could take the next character (the
        // following elements up to the first one that must take one) shares none
        // with it.
        for (i, e) in elements.iter().enumerate() {
            if e.max == Some(e.min) {
                continue;
            }
            for next in &elements[i + 1..] {
                if !disjoint(&e.set, &next.set) {
                    return None;
                }
                if next.min > 0 {
                    break;
                }
            }
        }
        Some(Sequence { elements, to_end })
    }

    fn is_match(&self, haystack: &str) -> bool {
        let mut chars = haystack.chars().peekable();
        for e in &self.elements {
            let mut n = 0u32;
            while e.max.is_none_or(|max| n < max) {
                match chars.peek() {
                    Some(&c) if contains(&e.set, c as u32) => {
                        chars.next();
                        n += 1;
                    }
                    _ => break,
                }
            }
            if n < e.min {
                return false;
            }
        }
        !self.to_end || chars.next().is_none()
    }
}

/// One element of a [`Sequence`]: a character, a class, `.`, or a repetition of one.
fn element(node: &Ast) -> Option<Element> {
    let one = |set: Set| Element {
        set,
        min: 1,
        max: Some(1),
    };
    Some(match node {
        Ast::Literal(l) => one(vec![(l.c as u32, l.c as u32)]),
        // Without the `s` flag (flags are not sequences), `.` is anything but `\\n`.
        Ast::Dot(_) => one(normalize(vec![(0, 0x09), (0x0B, MAX_CHAR)])),
        Ast::ClassBracketed(c) => one(bracketed_set(c).ok()?),
        Ast::ClassUnicode(c) => one(unicode_set(c).ok()?),
        Ast::ClassPerl(p) => one(perl_set(p)),
        Ast::Repetition(r) => {
            let inner = element(&r.ast)?;
            if inner.max != Some(1) || inner.min != 1 {
                return None;
            }
            // Lazy or greedy does not change whether a match exists.
            let (min, max) = match &r.op.kind {
                ast::RepetitionKind::ZeroOrOne => (0, Some(1)),
                ast::RepetitionKind::ZeroOrMore => (0, None),
                ast::RepetitionKind::OneOrMore => (1, None),
                ast::RepetitionKind::Range(ast::RepetitionRange::Exactly(n)) => (*n, Some(*n)),
                ast::RepetitionKind::Range(ast::RepetitionRange::AtLeast(n)) => (*n, None),
                ast::RepetitionKind::Range(ast::RepetitionRange::Bounded(m, n)) => (*m, Some(*n)),
            };
            Element {
                set: inner.set,
                min,
                max,
            }
        }
        _ => return None,
    })
}

/// Is `c` in the normalized `set`?
fn contains(set: &Set, c: u32) -> bool {
    set.binary_search_by(|&(s, e)| {
        if e < c {
            std::cmp::Ordering::Less
        } else if s > c {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    })
    .is_ok()
}

/// Do the normalized sets share no code point?
fn disjoint(a: &Set, b: &Set) -> bool {
    let (mut i, mut j) = (0, 0);
    while let (Some(&(s1, e1)), Some(&(s2, e2))) = (a.get(i), b.get(j)) {
        if e1 < s2 {
            i += 1;
        } else if e2 < s1 {
            j += 1;
        } else {
            return false;
        }
    }
    true
}

/// The leaf categories a General_Category name or alias stands for (ECMA-262
/// table "Value aliases and canonical values for the Unicode property
/// General_Category"), as a bit mask over [`gencat::LEAVES`]. Names are exact, as
/// in ECMA-262 (no loose matching).
fn category_mask(name: &str) -> Option<u32> {
    let value = match name.split_once('=') {
        Some(("General_Category" | "gc", value)) => value,
        Some(_) => return None,
        None => name,
    };
    let leaves: &[&str] = match value {
        "L" | "Letter" => &["Lu", "Ll", "Lt", "Lm", "Lo"],
        "LC" | "Cased_Letter" => &["Lu", "Ll", "Lt"],
        "Lu" | "Uppercase_Letter" => &["Lu"],
        "Ll" | "Lowercase_Letter" => &["Ll"],
        "Lt" | "Titlecase_Letter" => &["Lt"],
        "Lm" | "Modifier_Letter" => &["Lm"],
        "Lo" | "Other_Letter" => &["Lo"],
        "M" | "Mark" | "Combining_Mark" => &["Mn", "Mc", "Me"],
        "Mn" | "Nonspacing_Mark" => &["Mn"],
        "Mc" | "Spacing_Mark" => &["Mc"],
        "Me" | "Enclosing_Mark" => &["Me"],
        "N" | "Number" => &["Nd", "Nl", "No"],
        "Nd" | "Decimal_Number" | "digit" => &["Nd"],
        "Nl" | "Letter_Number" => &["Nl"],
        "No" | "Other_Number" => &["No"],
        "P" | "Punctuation" | "punct" => &["Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"],
        "Pc" | "Connector_Punctuation" => &["Pc"],
        "Pd" | "Dash_Punctuation" => &["Pd"],
        "Ps" | "Open_Punctuation" => &["Ps"],
        "Pe" | "Close_Punctuation" => &["Pe"],
        "Pi" | "Initial_Punctuation" => &["Pi"],
        "Pf" | "Final_Punctuation" => &["Pf"],
        "Po" | "Other_Punctuation" => &["Po"],
        "S" | "Symbol" => &["Sm", "Sc", "Sk", "So"],
        "Sm" | "Math_Symbol" => &["Sm"],
        "Sc" | "Currency_Symbol" => &["Sc"],
        "Sk" | "Modifier_Symbol" => &["Sk"],
        "So" | "Other_Symbol" => &["So"],
        "Z" | "Separator" => &["Zs", "Zl", "Zp"],
        "Zs" | "Space_Separator" => &["Zs"],
        "Zl" | "Line_Separator" => &["Zl"],
        "Zp" | "Paragraph_Separator" => &["Zp"],
        "C" | "Other" => &["Cc", "Cf", "Cs", "Co", "Cn"],
        "Cc" | "Control" | "cntrl" => &["Cc"],
        "Cf" | "Format" => &["Cf"],
        "Cs" | "Surrogate" => &["Cs"],
        "Co" | "Private_Use" => &["Co"],
        "Cn" | "Unassigned" => &["Cn"],
        _ => return None,
    };
    Some(leaves.iter().fold(0, |mask, leaf| {
        mask | gencat::LEAVES
            .iter()
            .position(|l| l == leaf)
            .map_or(0, |i| 1 << i)
    }))
}

/// The code points whose leaf category is in `mask`.
fn category_set(mask: u32) -> Set {
    let mut set: Set = Vec::new();
    for (i, run) in gencat::RUNS.iter().enumerate() {
        if mask & (1 << (run & 0x1f)) != 0 {
            let end = gencat::RUNS
                .get(i + 1)
                .map_or(MAX_CHAR, |next| (next >> 5) - 1);
            set.push((run >> 5, end));
        }
    }
    normalize(set)
}

const MAX_CHAR: u32 = 0x10_FFFF;

/// Sorts and merges ranges, and drops the surrogates (not `char`s: never matched).
fn normalize(mut set: Set) -> Set {
    set.sort_unstable();
    let mut out: Set = Vec::with_capacity(set.len());
    for (start, end) in set {
        for (s, e) in [(start, end.min(0xD7FF)), (start.max(0xE000), end)] {
            if s > e {
                continue;
            }
            match out.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
    }
    out
}

/// Every `char` not in the normalized `set`.
fn complement(set: &Set) -> Set {
    let mut out = Vec::with_capacity(set.len() + 1);
    let mut next = 0u32;
    for &(s, e) in set {
        if s > next {
            out.push((next, s - 1));
        }
        next = e + 1;
    }
    if next <= MAX_CHAR {
        out.push((next, MAX_CHAR));
    }
    normalize(out)
}

/// A flat class of explicit ranges (`[^\s\S]`, which matches nothing, if empty).
fn class_text(set: &Set) -> String {
    if set.is_empty() {
        return r"[^\s\S]".to_string();
    }
    let mut out = String::from("[");
    for &(s, e) in set {
        if s == e {
            out.push_str(&format!("\\x{{{s:X}}}"));
        } else {
            out.push_str(&format!("\\x{{{s:X}}}-\\x{{{e:X}}}"));
        }
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn general_category_classes_match_like_ecma_262() {
        let cases: &[(&str, &str, bool)] = &[
            (r"^\p{Letter}+$", "héllo", true),
            (r"^\p{Letter}+$", "ß漢字", true),
            (r"^\p{Letter}+$", "abc1", false),
            (r"^\p{L}$", "Ж", true),
            (r"^\pL$", "Ж", true),
            (r"^\P{L}+$", "123 !", true),
            (r"^\P{L}+$", "12a", false),
            (r"^\p{digit}+$", "42٣", true),
            (r"^\p{gc=Lu}$", "É", true),
            (r"^\p{General_Category=Lu}$", "é", false),
            (r"^[\p{Lu}0-9]+$", "AB12", true),
            (r"^[\p{Lu}0-9]+$", "Ab", false),
            (r"^[^\p{Lu}]+$", "ab", true),
            (r"^[^\p{Lu}]+$", "aB", false),
            (r"^\p{Cs}$", "a", false),
            (r"^\P{Cs}$", "a", true),
            (r"^\\p$", r"\p", true),
            (r"^a\d$", "a5", true),
            // boon's translation of `[\d.]` and `[^\W]`.
            (r"^[[0-9].]+$", "1.5", true),
            (r"^[[0-9].]+$", "1,5", false),
            (r"^[^[^A-Za-z0-9_]]+$", "a_1", true),
            (r"^[^[^A-Za-z0-9_]]+$", "a-1", false),
            (r"^[[:alpha:]\p{Nd}]+$", "a٣", true),
            (r"^[[:^alpha:]]+$", "1!", true),
        ];
        for (pattern, input, want) in cases {
            let re = Regex::new(pattern).map_err(|e| e.to_string());
            assert_eq!(
                re.map(|re| re.is_match(input)),
                Ok(*want),
                "{pattern} on {input}"
            );
        }
        assert_eq!(
            Regex::new(r"\p{L}").map(|r| r.as_str().to_string()).ok(),
            Some(r"\p{L}".to_string())
        );
    }

    #[test]
    fn other_properties_and_set_operations_are_refused() {
        for pattern in [
            r"\p{Script=Greek}",
            r"\p{Alphabetic}",
            r"\p{letter}",
            r"\p{L",
            r"[a-z&&[aeiou]]",
        ] {
            assert!(Regex::new(pattern).is_err(), "{pattern}");
        }
        let e = Regex::new(r"\p{Greek}").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                r"Unicode property \p{Greek} is not supported (only General_Category values such as \p{Letter} or \p{Lu})"
            )
        );
    }

    #[test]
    fn sequences_match_exactly_like_regex_lite() {
        // (pattern, whether it is matched as a Sequence).
        let patterns = [
            (r"^ord_[A-Za-z0-9]{8,32}$", true),
            (r"^[A-Z]{3}-[0-9]{4,8}$", true),
            (r"^[A-Z0-9 -]{3,10}$", true),
            (r"^[a-z]*[0-9]$", true),
            (r"^[^,]*,", true),
            (r"^.{2,3}$", true),
            (r"^\p{Lu}+[0-9]*$", true),
            (r"^a?b", true),
            (r"^x*$", true),
            (r"\Aa+?b\z", true),
            (r"^$", true),
            (r"^", true),
            (r"^a*a$", false),
            (r"^[a-z]+[a-c]$", false),
            (r"^a*b?c$", true),
            (r"^a*b?a$", false),
            (r"^(ab)+$", false),
            (r"^ab|cd$", false),
            (r"a+$", false),
            (r"^(?i)ab$", false),
            (r"^a\bb", false),
        ];
        let alphabet = [
            'a', 'b', 'c', 'z', 'A', 'Z', '0', '9', ',', '-', ' ', '\n', 'É', '٣', '_',
        ];
        let mut inputs: Vec<String> = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = inputs
                .iter()
                .filter(|s| s.chars().count() == inputs.last().map_or(0, |l| l.chars().count()))
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            inputs.extend(longer);
        }
        // Longer inputs from a fixed linear congruential sequence.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let len = (x >> 58) as usize;
            let mut s = String::from("ord_");
            for _ in 0..len {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                s.push(alphabet[(x >> 59) as usize % alphabet.len()]);
            }
            inputs.push(s.clone());
            inputs.push(s[4..].to_string());
        }
        for (pattern, fast) in patterns {
            // The reference: regex-lite on the same (expanded) pattern.
            let Ok(ours) = Regex::new(pattern) else {
                unreachable!("{pattern} does not compile");
            };
            assert_eq!(ours.sequence.is_some(), fast, "{pattern}");
            for input in &inputs {
                assert_eq!(
                    ours.is_match(input),
                    ours.re.is_match(input),
                    "{pattern} on {input:?}"
                );
            }
        }
    }

    #[test]
    fn runs_cover_every_code_point_in_order() {
        assert_eq!(gencat::RUNS[0] >> 5, 0);
        assert!(gencat::RUNS.windows(2).all(|w| w[0] >> 5 < w[1] >> 5));
        assert!(gencat::RUNS
            .iter()
            .all(|r| (r & 0x1f) < gencat::LEAVES.len() as u32));
    }
}
