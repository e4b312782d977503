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
//! 16 KB table ([`gencat`], Unicode 16.0). Other properties (`Script=`,
//! `Script_Extensions=`, binary ones such as `Alphabetic`) and class set operations
//! (`&&`, `--`, `~~`) are refused with an [`Error`] when the schema is compiled, so
//! at configuration load, never on a request.

mod gencat;

use regex_syntax::ast::{self, Ast, ClassSet, ClassSetItem, ClassUnicodeKind};
use std::borrow::Cow;
use std::fmt;

/// A compiled pattern.
#[derive(Clone, Debug)]
pub struct Regex {
    re: regex_lite::Regex,
    /// The pattern as given (before `\p{..}` expansion), for [`Regex::as_str`].
    source: Box<str>,
}

impl Regex {
    /// Compiles `pattern` (Rust regex syntax as regex-lite reads it, plus `\p{..}`
    /// and `\P{..}` General_Category classes).
    pub fn new(pattern: &str) -> Result<Regex, Error> {
        let expanded = expand_classes(pattern)?;
        let re = regex_lite::Regex::new(&expanded).map_err(Error::Syntax)?;
        Ok(Regex {
            re,
            source: pattern.into(),
        })
    }

    /// True if the pattern matches somewhere in `haystack`.
    pub fn is_match(&self, haystack: &str) -> bool {
        self.re.is_match(haystack)
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
fn expand_classes(pattern: &str) -> Result<Cow<'_, str>, Error> {
    if !pattern.contains("\\p") && !pattern.contains("\\P") && !pattern.contains('[') {
        return Ok(Cow::Borrowed(pattern));
    }
    // Not parseable: regex-lite then reports the syntax error itself.
    let Ok(ast) = ast::parse::Parser::new().parse(pattern) else {
        return Ok(Cow::Borrowed(pattern));
    };
    let mut edits = Vec::new();
    collect_edits(&ast, &mut edits)?;
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
        // regex-lite's Perl classes are ASCII (boon has replaced them already).
        ClassSetItem::Perl(p) => {
            let ranges: &[(u32, u32)] = match p.kind {
                ast::ClassPerlKind::Digit => &[(0x30, 0x39)],
                ast::ClassPerlKind::Space => &[(0x09, 0x0D), (0x20, 0x20)],
                ast::ClassPerlKind::Word => {
                    &[(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
                }
            };
            let set = normalize(ranges.to_vec());
            out.extend(if p.negated { complement(&set) } else { set });
        }
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
    fn runs_cover_every_code_point_in_order() {
        assert_eq!(gencat::RUNS[0] >> 5, 0);
        assert!(gencat::RUNS.windows(2).all(|w| w[0] >> 5 < w[1] >> 5));
        assert!(gencat::RUNS
            .iter()
            .all(|r| (r & 0x1f) < gencat::LEAVES.len() as u32));
    }
}
