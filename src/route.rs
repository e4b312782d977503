//! Path templates, request-path normalisation and method sets.
//!
//! A template is literal segments, `{name}` for exactly one segment, segments that
//! mix literal text and parameters (`{name}.json`, `{from}-{to}`) and a final
//! `{name...}` for the rest of the path. Requests are matched on a *normalised*
//! path: query and fragment dropped, each segment percent-decoded, empty and `.`
//! segments dropped, `..` resolved (RFC 3986 §5.2.4, clamped at the root). A
//! decoded `/`, `\` or control character inside a segment is refused (400), so
//! `%2e%2e`, `%2F` and friends cannot make the filter and the upstream see two
//! different paths. When the normalised form differs from what the client sent,
//! the filter rewrites `:path` to it, so the upstream serves exactly the
//! resource that was authorised.

use crate::config::{ConfigError, Semicolons};
use std::sync::Arc;

/// Longest request path (bytes, before the query) the filter accepts.
pub const MAX_PATH_BYTES: usize = 8 * 1024;
/// Most segments a request path may have.
pub const MAX_SEGMENTS: usize = 128;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(Arc<str>),
    Rest(Arc<str>),
    /// Literal text and parameters in one segment (`{name}.json`), as OpenAPI
    /// path templates allow; two parameters are always separated by text.
    Mixed(Vec<Piece>),
}

/// A part of a [`Segment::Mixed`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Param(Arc<str>),
}

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    segments: Vec<Segment>,
    /// How many parameters a match captures.
    params: usize,
    /// Whether the template ends in `{name...}`, which takes one or more segments.
    takes_rest: bool,
}

/// Captured path parameters, in template order: `(name, decoded value)`. The
/// name is the template's own, shared: a match copies only the values.
pub type Params = Vec<(Arc<str>, String)>;

impl PathTemplate {
    /// The template as configured (`/shops/{shop}/orders`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Parses a template; `path` is the config field path for errors.
    pub fn parse(template: &str, path: &str) -> Result<Self, ConfigError> {
        let err = |m: String| ConfigError::new(path, m);
        if !template.starts_with('/') {
            return Err(err(format!("template {template:?} must start with '/'")));
        }
        if template.contains('?') || template.contains('#') {
            return Err(err("template must not contain a query or fragment".into()));
        }
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let raw: Vec<&str> = template[1..].split('/').collect();
        let count = raw.len();
        for (i, seg) in raw.into_iter().enumerate() {
            if seg.is_empty() {
                if i + 1 == count && count == 1 {
                    break; // the template "/"
                }
                return Err(err(format!("template {template:?} has an empty segment")));
            }
            if seg == "." || seg == ".." {
                return Err(err(format!("template {template:?} has a dot segment")));
            }
            let whole = seg
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .filter(|inner| !inner.contains(['{', '}']));
            if let Some(inner) = whole {
                let (name, rest) = match inner.strip_suffix("...") {
                    Some(n) => (n, true),
                    None => (inner, false),
                };
                if !is_param_name(name) {
                    return Err(err(format!(
                        "parameter {{{inner}}} must be a name of letters, digits or '_'"
                    )));
                }
                if names.contains(&name) {
                    return Err(err(format!("parameter {{{name}}} appears twice")));
                }
                if rest && i + 1 != count {
                    return Err(err(format!("{{{name}...}} must be the last segment")));
                }
                names.push(name);
                segments.push(if rest {
                    Segment::Rest(name.into())
                } else {
                    Segment::Param(name.into())
                });
            } else if seg.contains(';') {
                return Err(err(format!(
                    "segment {seg:?}: ';' is not allowed (path parameters play no part in routing)"
                )));
            } else if seg.contains(['{', '}']) {
                let pieces = parse_mixed(seg, &mut names)
                    .map_err(|m| err(format!("segment {seg:?}: {m}")))?;
                segments.push(Segment::Mixed(pieces));
            } else {
                // Literals are compared with decoded request segments, so decode them too.
                let decoded =
                    decode_segment(seg).map_err(|m| err(format!("segment {seg:?}: {m}")))?;
                if decoded == "." || decoded == ".." {
                    // Request paths have their dot segments resolved first: this
                    // literal could never match.
                    return Err(err(format!("template {template:?} has a dot segment")));
                }
                segments.push(Segment::Literal(decoded));
            }
        }
        Ok(PathTemplate {
            source: template.to_string(),
            takes_rest: matches!(segments.last(), Some(Segment::Rest(_))),
            segments,
            params: names.len(),
        })
    }

    /// Names of the parameters, in order.
    pub fn param_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for s in &self.segments {
            match s {
                Segment::Param(n) | Segment::Rest(n) => names.push(n.to_string()),
                Segment::Mixed(pieces) => {
                    for p in pieces {
                        if let Piece::Param(n) = p {
                            names.push(n.to_string());
                        }
                    }
                }
                Segment::Literal(_) => {}
            }
        }
        names
    }

    /// The position of the one-segment parameter `{name}` among the segments of a
    /// matching path; `None` for a `{name...}` parameter or an unknown name.
    pub fn param_segment(&self, name: &str) -> Option<usize> {
        self.segments
            .iter()
            .position(|s| matches!(s, Segment::Param(n) if **n == *name))
    }

    /// Matches normalised segments; returns the captured parameters. With
    /// `ignore_case`, literal segments compare ASCII-case-insensitively.
    pub fn matches(&self, path: &NormalizedPath, ignore_case: bool) -> Option<Params> {
        // A count that cannot match is refused before any segment is read: most
        // of a long route table is passed over this way.
        let len = self.segments.len();
        if path.count < len || (path.count > len && !self.takes_rest) {
            return None;
        }
        let mut params = Params::new();
        // The segments not yet matched, each after its '/' ("/b/c").
        let mut rest = path.decoded.as_str();
        for seg in &self.segments {
            let after = rest.strip_prefix('/')?;
            if let Segment::Rest(n) = seg {
                // `{rest...}` takes one or more segments, '/'-joined as sent.
                capture(&mut params, self.params, n, after);
                rest = "";
                continue;
            }
            let (one, remaining) = after.split_at(after.find('/').unwrap_or(after.len()));
            rest = remaining;
            match seg {
                Segment::Literal(l) => {
                    let same = if ignore_case {
                        one.eq_ignore_ascii_case(l)
                    } else {
                        one == l
                    };
                    if !same {
                        return None;
                    }
                }
                Segment::Param(n) => capture(&mut params, self.params, n, one),
                Segment::Mixed(pieces) => {
                    if !match_mixed(pieces, one, ignore_case, self.params, &mut params) {
                        return None;
                    }
                }
                Segment::Rest(_) => {}
            }
        }
        rest.is_empty().then_some(params)
    }
}

/// Adds a captured parameter. The list is allocated at the first capture, for
/// all `of` the template's parameters: a path that fails a template before its
/// first parameter allocates nothing, and one that matches never grows the list.
fn capture(params: &mut Params, of: usize, name: &Arc<str>, value: &str) {
    if params.capacity() == 0 {
        *params = Params::with_capacity(of);
    }
    params.push((name.clone(), value.to_string()));
}

/// Whether a parameter name is letters, digits and `_`.
fn is_param_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a segment that mixes literal text and `{name}` parameters. `names`: the
/// template's parameter names so far (each name once per template).
fn parse_mixed<'a>(seg: &'a str, names: &mut Vec<&'a str>) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = seg;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let Some((name, tail)) = after.split_once('}') else {
                return Err("a '{' is not closed".into());
            };
            if let Some(n) = name.strip_suffix("...") {
                return Err(format!("{{{n}...}} must be a whole segment, the last one"));
            }
            if !is_param_name(name) {
                return Err(format!(
                    "parameter {{{name}}} must be a name of letters, digits or '_'"
                ));
            }
            if names.contains(&name) {
                return Err(format!("parameter {{{name}}} appears twice"));
            }
            if matches!(pieces.last(), Some(Piece::Param(_))) {
                return Err("two parameters must be separated by literal text".into());
            }
            names.push(name);
            pieces.push(Piece::Param(name.into()));
            rest = tail;
        } else {
            let end = rest.find(['{', '}']).unwrap_or(rest.len());
            if end == 0 {
                return Err("a '}' has no matching '{'".into());
            }
            let decoded = decode_segment(&rest[..end]).map_err(str::to_string)?;
            pieces.push(Piece::Literal(decoded));
            rest = &rest[end..];
        }
    }
    Ok(pieces)
}

/// Whether `text` starts with `prefix`, ASCII case ignored with `ignore_case`.
fn starts_with(text: &str, prefix: &str, ignore_case: bool) -> bool {
    match text.as_bytes().get(..prefix.len()) {
        Some(head) if ignore_case => head.eq_ignore_ascii_case(prefix.as_bytes()),
        Some(head) => head == prefix.as_bytes(),
        None => false,
    }
}

/// Matches one decoded request segment against a mixed segment, left to right,
/// each parameter taking the shortest run of one or more characters after which
/// the next literal follows (no backtracking). Pushes the captured parameters.
fn match_mixed(
    pieces: &[Piece],
    seg: &str,
    ignore_case: bool,
    all: usize,
    params: &mut Params,
) -> bool {
    let mut pos = 0;
    for (i, piece) in pieces.iter().enumerate() {
        let rest = &seg[pos..];
        match piece {
            Piece::Literal(l) => {
                if !starts_with(rest, l, ignore_case) {
                    return false;
                }
                pos += l.len();
            }
            Piece::Param(name) => {
                // At least one character.
                if rest.is_empty() {
                    return false;
                }
                let len = match pieces.get(i + 1) {
                    Some(Piece::Literal(next)) => {
                        let found = rest
                            .char_indices()
                            .skip(1)
                            .find(|(k, _)| starts_with(&rest[*k..], next, ignore_case));
                        match found {
                            Some((k, _)) => k,
                            None => return false,
                        }
                    }
                    // The parse refuses two parameters in a row: this one ends the segment.
                    _ => rest.len(),
                };
                capture(params, all, name, &rest[..len]);
                pos += len;
            }
        }
    }
    pos == seg.len()
}

/// A request path after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    /// Decoded segments as routes see them, each after a '/' (`/a/b`, empty for
    /// the root): no empty or dot segments, and under `paths.semicolons: strip`
    /// without their `;` parameters. One string rather than a list: a decoded
    /// segment never holds a '/' (refused), so the '/'s delimit them exactly, and
    /// a request's path costs one allocation, not one per segment.
    decoded: String,
    /// How many segments `decoded` holds.
    count: usize,
    /// The normalised path as the upstream should see it, without query: dot and
    /// empty segments resolved, unreserved characters decoded, every other
    /// percent-encoding kept (hex upper-cased), parameters kept.
    pub encoded: String,
    /// The query string without `?` (empty if none).
    pub query: String,
    /// True when `encoded` differs from the path the client sent.
    pub changed: bool,
}

impl NormalizedPath {
    /// The decoded segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.decoded.split('/').skip(1)
    }

    /// `encoded` plus `?query` when there is one: the value for `:path`.
    pub fn request_target(&self) -> String {
        if self.query.is_empty() {
            self.encoded.clone()
        } else {
            format!("{}?{}", self.encoded, self.query)
        }
    }
}

/// Normalises a `:path` header value. Errors are safe, fixed descriptions.
///
/// Servlet containers (Tomcat, Jetty) and some other frameworks strip `;params`
/// from each segment before they resolve dot segments and route, so `/a/..;/admin`
/// is `/admin` to them and `/admin;/users` is `/admin/users`. Under
/// [`Semicolons::Reject`] (the default) a `;` in a segment is refused; under
/// [`Semicolons::Strip`] the filter reads segments the way those frameworks do. An
/// encoded `;` (`%3B`) is refused either way: a framework that decodes before it
/// strips would see a parameter where the filter saw data.
pub fn normalize(raw: &str, semicolons: Semicolons) -> Result<NormalizedPath, &'static str> {
    let (before_fragment, _) = raw.split_once('#').unwrap_or((raw, ""));
    let (path, query) = before_fragment
        .split_once('?')
        .unwrap_or((before_fragment, ""));
    if path.len() > MAX_PATH_BYTES {
        return Err("request path is too long");
    }
    if !path.starts_with('/') {
        return Err("request path must start with '/'");
    }
    // Decoding never lengthens a segment, and each kept segment brings back the
    // '/' that split it off: sized once, no growth on the request path.
    let mut decoded = String::with_capacity(path.len());
    let mut kept = 0;
    // Built as the segments are kept: a segment's wire form never holds a '/' (it
    // came from splitting on '/', and an encoded one stays encoded), so `..` cuts
    // `decoded` and `encoded` back to their last '/'.
    let mut encoded = String::with_capacity(path.len());
    for seg in path.split('/') {
        let name = match semicolons {
            Semicolons::Reject if seg.contains(';') => {
                return Err("request path has a ';' in a segment");
            }
            Semicolons::Reject => seg,
            Semicolons::Strip => match seg.split_once(';') {
                Some((name, params)) => {
                    check_params(params)?;
                    name
                }
                None => seg,
            },
        };
        let start = decoded.len();
        decoded.push('/');
        decode_into(name, &mut decoded)?;
        match &decoded[start + 1..] {
            "" | "." => decoded.truncate(start),
            ".." => {
                decoded.truncate(start);
                if kept > 0 {
                    kept -= 1;
                    decoded.truncate(decoded.rfind('/').unwrap_or(0));
                    encoded.truncate(encoded.rfind('/').unwrap_or(0));
                }
            }
            _ => {
                if kept >= MAX_SEGMENTS {
                    return Err("request path has too many segments");
                }
                kept += 1;
                encoded.push('/');
                wire_form(seg, &mut encoded);
            }
        }
    }
    if encoded.is_empty() || (path.ends_with('/') && kept > 0) {
        // Keep a trailing slash: upstreams often treat `/a/` and `/a` differently.
        encoded.push('/');
    }
    let changed = encoded != path;
    Ok(NormalizedPath {
        decoded,
        count: kept,
        encoded,
        query: query.to_string(),
        changed,
    })
}

/// Percent-decodes one segment. Refuses encodings that would change the
/// segment structure or smuggle control characters.
fn decode_segment(seg: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(seg.len());
    decode_into(seg, &mut out)?;
    Ok(out)
}

/// [`decode_segment`], appended to `out`.
fn decode_into(seg: &str, out: &mut String) -> Result<(), &'static str> {
    if !seg.contains('%') {
        // Nothing encoded (most requests): the segment is its own decoding, and
        // already UTF-8.
        check_decoded(seg.as_bytes())?;
        out.push_str(seg);
        return Ok(());
    }
    let bytes = percent_decode(seg)?;
    check_decoded(&bytes)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| "request path is not valid UTF-8 after decoding")?;
    out.push_str(text);
    Ok(())
}

/// A decoded segment must not change the path's structure or carry control
/// characters.
fn check_decoded(out: &[u8]) -> Result<(), &'static str> {
    if out.iter().any(|&c| c == b'/' || c == b'\\') {
        return Err("request path has an encoded '/' or '\\' inside a segment");
    }
    if out.contains(&b';') {
        return Err("request path has an encoded ';' inside a segment");
    }
    no_control_characters(out)
}

/// Checks the `;params` of a segment (only read under `semicolons: strip`): valid
/// percent-encoding and no control characters, as for the segment itself.
fn check_params(params: &str) -> Result<(), &'static str> {
    no_control_characters(&percent_decode(params)?)
}

fn no_control_characters(out: &[u8]) -> Result<(), &'static str> {
    if out.iter().any(|&c| c < 0x20 || c == 0x7f) {
        return Err("request path has a control character");
    }
    Ok(())
}

fn percent_decode(seg: &str) -> Result<Vec<u8>, &'static str> {
    let bytes = seg.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| hex(*c));
            let lo = bytes.get(i + 2).and_then(|c| hex(*c));
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h * 16 + l),
                _ => return Err("request path has an invalid percent-encoding"),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// RFC 3986 §2.3 unreserved characters: their encoded and plain forms are
/// equivalent, so they are decoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` characters other than unreserved ones: sub-delims, `:` and
/// `@`. They mean something to some upstream when plain, so their plain and
/// encoded forms are kept apart.
fn is_reserved_pchar(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@'
    )
}

fn push_encoded(b: u8, out: &mut String) {
    out.push('%');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 15) as usize] as char);
}

/// The wire form of a raw segment (already checked by [`decode_segment`]):
/// percent-encoding normalised as RFC 3986 §6.2.2 allows without changing what a
/// server sees. Encoded unreserved characters are decoded, other encodings keep
/// their encoding (hex upper-cased), plain reserved characters stay plain, and
/// anything else is encoded.
fn wire_form(seg: &str, out: &mut String) {
    let bytes = seg.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|c| hex(*c)),
                bytes.get(i + 2).and_then(|c| hex(*c)),
            ) {
                let decoded = h * 16 + l;
                if is_unreserved(decoded) {
                    out.push(decoded as char);
                } else {
                    push_encoded(decoded, out);
                }
                i += 3;
                continue;
            }
        }
        if is_unreserved(b) || is_reserved_pchar(b) {
            out.push(b as char);
        } else {
            push_encoded(b, out);
        }
        i += 1;
    }
}

/// Percent-encodes every byte but the unreserved characters: a value written into
/// a path segment or a query parameter as data, where a reserved character (`/`,
/// `?`, `;`, `=`, `&`, ...) must not mean anything.
pub fn push_component(value: &str, out: &mut String) {
    for &b in value.as_bytes() {
        if is_unreserved(b) {
            out.push(b as char);
        } else {
            push_encoded(b, out);
        }
    }
}

/// Encodes a decoded segment with RFC 3986 `pchar` left as is (for log patterns).
fn encode_segment(seg: &str, out: &mut String) {
    for &b in seg.as_bytes() {
        if is_unreserved(b) || is_reserved_pchar(b) {
            out.push(b as char);
        } else {
            push_encoded(b, out);
        }
    }
}

/// Parses and checks a `methods` list: upper-case RFC 9110 tokens, no duplicates.
pub fn parse_methods(methods: &[String], path: &str) -> Result<Vec<String>, ConfigError> {
    if methods.is_empty() {
        return Err(ConfigError::new(
            path,
            "must not be empty (omit `methods` to allow any method)",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, m) in methods.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if m.is_empty()
            || !m
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::new(
                p,
                format!("{m:?} is not an upper-case HTTP method name"),
            ));
        }
        if out.contains(m) {
            return Err(ConfigError::new(p, format!("{m} is listed twice")));
        }
        out.push(m.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpl(s: &str) -> PathTemplate {
        match PathTemplate::parse(s, "t") {
            Ok(t) => t,
            Err(e) => unreachable!("{e}"),
        }
    }

    fn norm(s: &str) -> NormalizedPath {
        match normalize(s, Semicolons::Reject) {
            Ok(n) => n,
            Err(e) => unreachable!("{s}: {e}"),
        }
    }

    #[test]
    fn template_matching_table() {
        type Case<'a> = (&'a str, &'a str, Option<Vec<(&'a str, &'a str)>>);
        let cases: Vec<Case> = vec![
            ("/healthz", "/healthz", Some(vec![])),
            ("/healthz", "/healthz/", Some(vec![])),
            ("/healthz", "/healthz/x", None),
            ("/", "/", Some(vec![])),
            ("/", "/a", None),
            (
                "/shops/{shop}/orders/{id}",
                "/shops/s1/orders/42",
                Some(vec![("shop", "s1"), ("id", "42")]),
            ),
            ("/shops/{shop}/orders/{id}", "/shops/s1/orders", None),
            ("/shops/{shop}/orders/{id}", "/shops/s1/orders/42/x", None),
            (
                "/files/{rest...}",
                "/files/a/b/c.txt",
                Some(vec![("rest", "a/b/c.txt")]),
            ),
            ("/files/{rest...}", "/files", None),
            ("/files/{rest...}", "/files/", None),
            (
                "/shops/{shop}",
                "/shops/caf%C3%A9",
                Some(vec![("shop", "café")]),
            ),
            ("/a b", "/a%20b", Some(vec![])),
        ];
        for (t, p, want) in cases {
            let got = tpl(t).matches(&norm(p), false);
            let want: Option<Params> = want.map(|v| {
                v.into_iter()
                    .map(|(a, b)| (a.into(), b.to_string()))
                    .collect()
            });
            assert_eq!(got, want, "{t} vs {p}");
        }
    }

    #[test]
    fn segments_mix_literals_and_parameters() {
        type Case<'a> = (&'a str, &'a str, Option<Vec<(&'a str, &'a str)>>);
        let cases: Vec<Case> = vec![
            (
                "/files/{name}.json",
                "/files/a.json",
                Some(vec![("name", "a")]),
            ),
            (
                "/files/{name}.json",
                "/files/a.b.json",
                Some(vec![("name", "a.b")]),
            ),
            ("/files/{name}.json", "/files/.json", None),
            ("/files/{name}.json", "/files/a.txt", None),
            // Shortest match, no backtracking: the first ".json" ends the name.
            ("/files/{name}.json", "/files/a.json.json", None),
            (
                "/v1/{name}:cancel",
                "/v1/job-7:cancel",
                Some(vec![("name", "job-7")]),
            ),
            ("/v1/{name}:cancel", "/v1/job-7", None),
            (
                "/range/{from}-{to}",
                "/range/1-10",
                Some(vec![("from", "1"), ("to", "10")]),
            ),
            (
                "/range/{from}-{to}",
                "/range/1-2-3",
                Some(vec![("from", "1"), ("to", "2-3")]),
            ),
            ("/range/{from}-{to}", "/range/1-", None),
            ("/range/{from}-{to}", "/range/-1", None),
            ("/p/v{major}", "/p/v2", Some(vec![("major", "2")])),
            ("/p/v{major}", "/p/v", None),
            ("/p/{x}caf%C3%A9", "/p/1caf%C3%A9", Some(vec![("x", "1")])),
            ("/p/{x}é", "/p/éé", Some(vec![("x", "é")])),
            ("/p/{x}é", "/p/ééé", None),
        ];
        for (t, p, want) in cases {
            let got = tpl(t).matches(&norm(p), false);
            let want: Option<Params> = want.map(|v| {
                v.into_iter()
                    .map(|(a, b)| (a.into(), b.to_string()))
                    .collect()
            });
            assert_eq!(got, want, "{t} vs {p}");
        }
        let t = tpl("/files/{name}.JSON");
        assert_eq!(t.matches(&norm("/files/a.json"), false), None);
        assert_eq!(
            t.matches(&norm("/files/a.json"), true),
            Some(vec![("name".into(), "a".to_string())])
        );
        assert_eq!(tpl("/r/{from}-{to}/x").param_names(), ["from", "to"]);
    }

    #[test]
    fn template_errors_are_explained() {
        let cases = [
            ("healthz", "must start with '/'"),
            ("/a//b", "empty segment"),
            ("/a/{}", "must be a name"),
            ("/a/{x-y}", "must be a name"),
            ("/a/{id}/{id}", "appears twice"),
            ("/a/{rest...}/b", "must be the last segment"),
            ("/a/{x...}.json", "must be a whole segment"),
            ("/a/{x}{y}", "separated by literal text"),
            ("/a/x{id", "not closed"),
            ("/a/x}id", "no matching"),
            ("/a/{id}/{id}.json", "appears twice"),
            ("/a/{x-y}.json", "must be a name"),
            ("/a?x=1", "query"),
            ("/a/../b", "dot segment"),
            ("/a/%2e%2E/b", "dot segment"),
            ("/a/%2e", "dot segment"),
            ("/a/%zz", "percent-encoding"),
        ];
        for (t, msg) in cases {
            let e = PathTemplate::parse(t, "routes[3].match.path").map_err(|e| e.to_string());
            let e = e.err().unwrap_or_default();
            assert!(e.starts_with("routes[3].match.path: "), "{t}: {e}");
            assert!(e.contains(msg), "{t}: {e}");
        }
    }

    #[test]
    fn normalisation_table() {
        let cases = [
            ("/a/b", "/a/b", false),
            ("/a/../admin", "/admin", true),
            ("/a/%2e%2e/admin", "/admin", true),
            ("/a/%2E%2E/admin", "/admin", true),
            ("/a/./b", "/a/b", true),
            ("//a///b", "/a/b", true),
            ("/../../etc", "/etc", true),
            ("/a/b/", "/a/b/", false),
            ("/a?x=../y", "/a", false),
            ("/caf%c3%a9", "/caf%C3%A9", true),
            ("/%61dmin", "/admin", true),
            ("/a%20b", "/a%20b", false),
            ("/", "/", false),
            ("/..", "/", true),
        ];
        for (raw, want, changed) in cases {
            let n = norm(raw);
            assert_eq!(n.encoded, want, "{raw}");
            assert_eq!(n.changed, changed, "{raw}");
        }
        assert_eq!(norm("/a/../b?q=1&r=2").request_target(), "/b?q=1&r=2");
    }

    #[test]
    fn hostile_paths_are_refused() {
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        let many = "/a".repeat(MAX_SEGMENTS + 1);
        let cases = [
            "/a/..%2fadmin",
            "/a/%2F",
            "/a/%5c..%5cadmin",
            "/a/%00",
            "/a/%0d%0a",
            // The same bytes sent plain: a segment with nothing encoded is checked alike.
            "/a\\..\\admin",
            "/a/b\u{1}",
            "/a/\r\n",
            "/a/b\u{7f}",
            "/a/%",
            "/a/%4",
            "/a/%g0",
            "/%ff%fe",
            "a/b",
            "",
            "*",
            long.as_str(),
            many.as_str(),
        ];
        for raw in cases {
            assert!(
                normalize(raw, Semicolons::Reject).is_err(),
                "{raw:?} should be refused"
            );
        }
    }

    #[test]
    fn semicolons_are_refused_by_default() {
        for raw in [
            "/public/..;/admin/keys",
            "/public/%2e%2e;/admin/keys",
            "/admin;/users",
            "/admin;jsessionid=1/users",
            "/a/b;",
            "/;/admin",
        ] {
            assert_eq!(
                normalize(raw, Semicolons::Reject).err(),
                Some("request path has a ';' in a segment"),
                "{raw}"
            );
        }
        // Encoded, in either mode: a framework that decodes first would split there.
        for raw in ["/admin%3B/users", "/admin%3b/users", "/public/..%3B/admin"] {
            for mode in [Semicolons::Reject, Semicolons::Strip] {
                assert_eq!(
                    normalize(raw, mode).err(),
                    Some("request path has an encoded ';' inside a segment"),
                    "{raw} {mode:?}"
                );
            }
        }
        // The query is not the path.
        assert!(normalize("/a?x=1;y=2", Semicolons::Reject).is_ok());
    }

    #[test]
    fn semicolon_parameters_are_read_as_servlet_containers_read_them() {
        let strip = |raw: &str| match normalize(raw, Semicolons::Strip) {
            Ok(n) => n,
            Err(e) => unreachable!("{raw}: {e}"),
        };
        // (request, segments routes see, path the upstream receives)
        let cases: [(&str, &[&str], &str); 9] = [
            ("/public/..;/admin/keys", &["admin", "keys"], "/admin/keys"),
            (
                "/public/%2e%2e;x=1/admin/keys",
                &["admin", "keys"],
                "/admin/keys",
            ),
            (
                "/shops/s1/.;/orders",
                &["shops", "s1", "orders"],
                "/shops/s1/orders",
            ),
            (
                "/shops/s1/..;a=b/s2/orders",
                &["shops", "s2", "orders"],
                "/shops/s2/orders",
            ),
            ("/admin;/users", &["admin", "users"], "/admin;/users"),
            (
                "/admin;jsessionid=AB12/users",
                &["admin", "users"],
                "/admin;jsessionid=AB12/users",
            ),
            ("/a;p=%2F/b", &["a", "b"], "/a;p=%2F/b"),
            ("/;x/admin", &["admin"], "/admin"),
            ("/a/b;c=d", &["a", "b"], "/a/b;c=d"),
        ];
        for (raw, segments, upstream) in cases {
            let n = strip(raw);
            assert_eq!(n.segments().collect::<Vec<_>>(), segments, "{raw}");
            assert_eq!(n.encoded, upstream, "{raw}");
            assert_eq!(n.changed, upstream != raw, "{raw}");
        }
        assert!(normalize("/a;p=%0a/b", Semicolons::Strip).is_err());
        assert!(normalize("/a;p=%zz/b", Semicolons::Strip).is_err());
    }

    #[test]
    fn reserved_characters_keep_their_encoding_when_the_path_is_rewritten() {
        // (request, path the upstream receives)
        let cases = [
            ("/a/../b%3Dc", "/b%3Dc"),
            ("/a/../b=c", "/b=c"),
            ("/x/../files/a%3ab", "/files/a%3Ab"),
            ("/x/../u/me%40example.com", "/u/me%40example.com"),
            ("/x/../u/me@example.com", "/u/me@example.com"),
            ("/x/../%7euser/%2a", "/~user/%2A"),
            ("/x/../a%2Cb,c", "/a%2Cb,c"),
            ("/x/../sp%20ace", "/sp%20ace"),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw).encoded, want, "{raw}");
        }
        // Normalising the normalised path changes nothing.
        for (raw, _) in cases {
            let once = norm(raw);
            let twice = norm(&once.encoded);
            assert_eq!(
                (twice.encoded.as_str(), twice.changed),
                (once.encoded.as_str(), false)
            );
            assert!(twice.segments().eq(once.segments()));
        }
    }

    #[test]
    fn literals_can_match_ignoring_case() {
        let t = tpl("/admin/users/{id}");
        let p = norm("/ADMIN/Users/Ab");
        assert_eq!(t.matches(&p, false), None);
        assert_eq!(
            t.matches(&p, true),
            Some(vec![("id".into(), "Ab".to_string())])
        );
        assert!(PathTemplate::parse("/a;b", "t").is_err());
    }

    #[test]
    fn methods_are_validated() {
        assert!(parse_methods(&["GET".into(), "POST".into()], "m").is_ok());
        let e = |v: Vec<&str>| {
            parse_methods(
                &v.into_iter().map(String::from).collect::<Vec<_>>(),
                "routes[0].match.methods",
            )
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default()
        };
        assert_eq!(
            e(vec!["get"]),
            "routes[0].match.methods[0]: \"get\" is not an upper-case HTTP method name"
        );
        assert_eq!(
            e(vec!["GET", "GET"]),
            "routes[0].match.methods[1]: GET is listed twice"
        );
        assert!(e(vec![]).contains("must not be empty"));
    }
}

/// A loggable pattern for an undeclared path: segments that look like object
/// identifiers (numbers, UUIDs, long hex or mixed tokens) become `{id}`, so logs
/// show API shapes (`/v1/users/{id}/keys`) and not caller data.
pub fn shadow_pattern(path: &NormalizedPath) -> String {
    let mut out = String::new();
    for seg in path.segments() {
        out.push('/');
        if looks_like_id(seg) {
            out.push_str("{id}");
        } else {
            encode_segment(seg, &mut out);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn looks_like_id(seg: &str) -> bool {
    let digits = seg.bytes().filter(u8::is_ascii_digit).count();
    let hexish = seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let wordish = seg
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'_');
    digits == seg.len()
        || (hexish && seg.len() >= 8 && digits > 0)
        || (!wordish && seg.len() > 24)
        || (digits >= 3 && !wordish)
        || !seg.is_ascii()
}

#[cfg(test)]
mod shadow_tests {
    use super::*;

    #[test]
    fn identifiers_are_hidden_in_shadow_patterns() {
        let cases = [
            ("/v1/users/42/keys", "/v1/users/{id}/keys"),
            (
                "/v1/orders/3f2b8c1e-9d4a-4c5e-8b7a-1234567890ab",
                "/v1/orders/{id}",
            ),
            ("/v1/blobs/deadbeef12", "/v1/blobs/{id}"),
            ("/v1/users/alice", "/v1/users/alice"),
            (
                "/v1/sessions/AbCdEfGhIjKlMnOpQrStUvWxYz",
                "/v1/sessions/{id}",
            ),
            ("/v1/u/caf%C3%A9", "/v1/u/{id}"),
            ("/", "/"),
            ("/internal/debug-vars", "/internal/debug-vars"),
        ];
        for (raw, want) in cases {
            let n = normalize(raw, Semicolons::Reject).map(|n| shadow_pattern(&n));
            assert_eq!(n.as_deref(), Ok(want), "{raw}");
        }
    }
}
