//! Request-path normalisation (`route::normalize`, both `paths.semicolons` modes)
//! and template matching.
//!
//! Invariants, for any input:
//! - nothing panics;
//! - a normalised segment is never empty, `.` or `..`, and never holds `/`, `\`,
//!   `;` or a control character; there are at most `MAX_SEGMENTS`;
//! - the path sent upstream (`encoded`) is canonical: only unreserved characters,
//!   RFC 3986 sub-delims, `:`, `@` and `%XX` with upper-case hex that does not
//!   stand for an unreserved character; no `;` unless `;` is stripped;
//! - the upstream reads the same segments as the filter: splitting `encoded` at
//!   `/`, dropping each segment's `;params` and percent-decoding gives exactly the
//!   filter's segments (no dot or empty segment is left for it to resolve);
//! - normalisation is idempotent: normalising the rewritten request target gives
//!   the same segments, path and query, and reports no change;
//! - `reject` accepts only what `strip` accepts, with the same result;
//! - template matching: a case-sensitive match is also the case-insensitive one,
//!   parameters are whole non-empty segments (`{rest...}` the joined tail), or in
//!   a segment that mixes text and parameters, a non-empty part of one segment;
//! - a template the configuration accepts matches its own text as a request path
//!   when each parameter is a whole segment, and with every parameter written as
//!   one character in any case (a parameter inside a segment takes the shortest
//!   match, so `{x}x` cannot match its own text `{x}x`).
#![no_main]

use api_guard::api::fuzzing::{
    match_template, match_template_ignore_case, normalize_path, normalize_path_strip,
    path_template, NormalizedPath, PathTemplate, MAX_PATH_BYTES, MAX_SEGMENTS,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const TEMPLATES: &[&str] = &[
    "/",
    "/healthz",
    "/shops/{shop}/orders/{id}",
    "/shops/{shop}/orders",
    "/files/{rest...}",
    "/admin/{rest...}",
    "/a b",
    "/caf%C3%A9/{x}",
    "/v1/users/{id}/keys",
];

/// Templates with segments that mix text and parameters.
const MIXED_TEMPLATES: &[&str] = &[
    "/files/{name}.json",
    "/range/{from}-{to}",
    "/v1/{name}:cancel",
];

fn templates() -> &'static [(PathTemplate, usize)] {
    static T: OnceLock<Vec<(PathTemplate, usize)>> = OnceLock::new();
    T.get_or_init(|| {
        TEMPLATES
            .iter()
            .map(|t| match path_template(t) {
                Ok(p) => {
                    let n = p.param_names().len();
                    (p, n)
                }
                Err(e) => panic!("fixed template {t}: {e}"),
            })
            .collect()
    })
}

fn mixed_templates() -> &'static [PathTemplate] {
    static T: OnceLock<Vec<PathTemplate>> = OnceLock::new();
    T.get_or_init(|| {
        MIXED_TEMPLATES
            .iter()
            .map(|t| match path_template(t) {
                Ok(p) => p,
                Err(e) => panic!("fixed template {t}: {e}"),
            })
            .collect()
    })
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim_or_colon_at(b: u8) -> bool {
    b"!$&'()*+,;=:@".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes a wire segment written by the filter (so well-formed).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let v = hex(b[i + 1]).unwrap() * 16 + hex(b[i + 2]).unwrap();
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("an encoded segment decodes to UTF-8")
}

fn check(raw: &str, n: &NormalizedPath, strip: bool) {
    let mode = if strip { "strip" } else { "reject" };
    let segments: Vec<&str> = n.segments().collect();
    assert!(segments.len() <= MAX_SEGMENTS, "{mode}: too many segments");
    for &s in &segments {
        assert!(
            !s.is_empty() && s != "." && s != "..",
            "{mode}: segment {s:?} of {raw:?}"
        );
        assert!(
            !s.bytes()
                .any(|c| c == b'/' || c == b'\\' || c == b';' || c < 0x20 || c == 0x7f),
            "{mode}: segment {s:?} of {raw:?}"
        );
    }

    // The query is what follows the first `?` before any `#`.
    let before_fragment = raw.split('#').next().unwrap_or("");
    let (path, query) = before_fragment
        .split_once('?')
        .unwrap_or((before_fragment, ""));
    assert_eq!(n.query, query, "{mode}: query of {raw:?}");
    assert_eq!(n.changed, n.encoded != path, "{mode}: changed of {raw:?}");

    // Canonical wire form.
    let e = n.encoded.as_bytes();
    assert_eq!(e.first(), Some(&b'/'), "{mode}: {:?}", n.encoded);
    let mut i = 0;
    while i < e.len() {
        let c = e[i];
        if c == b'%' {
            let (h, l) = (e.get(i + 1).copied(), e.get(i + 2).copied());
            let ok =
                |x: Option<u8>| x.is_some_and(|x| x.is_ascii_digit() || (b'A'..=b'F').contains(&x));
            assert!(ok(h) && ok(l), "{mode}: bad escape in {:?}", n.encoded);
            let v = hex(h.unwrap()).unwrap() * 16 + hex(l.unwrap()).unwrap();
            assert!(
                !is_unreserved(v),
                "{mode}: encoded unreserved character in {:?}",
                n.encoded
            );
            i += 3;
            continue;
        }
        assert!(
            c == b'/' || is_unreserved(c) || is_sub_delim_or_colon_at(c),
            "{mode}: raw byte {c:#04x} in {:?}",
            n.encoded
        );
        assert!(strip || c != b';', "{mode}: ';' in {:?}", n.encoded);
        i += 1;
    }

    // What an upstream that strips `;params` (or has none to strip) reads.
    let mut parts: Vec<&str> = n.encoded[1..].split('/').collect();
    if parts.last() == Some(&"") {
        parts.pop();
    }
    let upstream: Vec<String> = parts
        .iter()
        .map(|p| decode(p.split(';').next().unwrap_or("")))
        .collect();
    assert_eq!(upstream, segments, "{mode}: upstream view of {raw:?}");

    // Idempotence.
    let target = n.request_target();
    let again = if strip {
        normalize_path_strip(&target)
    } else {
        normalize_path(&target)
    };
    match again {
        Ok(m) => {
            assert!(
                m.segments().eq(n.segments()),
                "{mode}: {raw:?} then {target:?}"
            );
            assert_eq!(m.encoded, n.encoded, "{mode}: {raw:?} then {target:?}");
            assert_eq!(m.query, n.query, "{mode}: {raw:?} then {target:?}");
            assert!(
                !m.changed,
                "{mode}: {target:?} (from {raw:?}) is not canonical"
            );
        }
        // Re-encoding can lengthen a path that used raw non-ASCII bytes.
        Err(e) => assert!(
            n.encoded.len() > MAX_PATH_BYTES,
            "{mode}: {raw:?} normalises to {target:?}, which is refused: {e}"
        ),
    }

    // Template matching: a mixed segment's parameters are parts of one segment.
    for t in mixed_templates() {
        let exact = match_template(t, n);
        if exact.is_some() {
            assert_eq!(match_template_ignore_case(t, n), exact, "{mode}: case");
        }
        for (_, v) in exact.iter().flatten() {
            assert!(
                !v.is_empty() && segments.iter().any(|s| s.contains(v.as_str())),
                "{mode}: parameter {v:?} is not part of a segment of {raw:?}"
            );
        }
    }
    for (t, params) in templates() {
        let exact = match_template(t, n);
        let folded = match_template_ignore_case(t, n);
        if exact.is_some() {
            assert_eq!(folded, exact, "{mode}: case-insensitive match differs");
        }
        for m in [exact, folded].into_iter().flatten() {
            assert_eq!(m.len(), *params, "{mode}: parameters of {raw:?}");
            for (_, v) in &m {
                assert!(!v.is_empty(), "{mode}: empty parameter for {raw:?}");
                assert!(
                    segments.iter().any(|s| *s == v.as_str())
                        || segments.join("/").ends_with(&format!("/{v}"))
                        || segments.join("/") == *v,
                    "{mode}: parameter {v:?} is not made of segments of {raw:?}"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let reject = normalize_path(&raw);
    let strip = normalize_path_strip(&raw);
    if let Ok(n) = &reject {
        check(&raw, n, false);
        assert_eq!(
            strip.as_ref().ok(),
            Some(n),
            "reject accepts {raw:?}, strip differs"
        );
    }
    if let Ok(n) = &strip {
        check(&raw, n, true);
    }

    // A template matches its own text (when its parameters are whole segments),
    // and its text with each parameter written as one character.
    if let Ok(t) = path_template(&raw) {
        let whole = raw.split('/').all(|seg| {
            !seg.contains(['{', '}'])
                || (seg.starts_with('{') && seg.ends_with('}') && seg.matches('{').count() == 1)
        });
        if whole {
            if let Ok(n) = normalize_path(&raw) {
                assert!(
                    match_template(&t, &n).is_some(),
                    "template {raw:?} does not match its own path (segments {:?})",
                    n.segments().collect::<Vec<_>>()
                );
            }
        }
        let mut filled = String::new();
        let mut rest = raw.as_ref();
        while let Some((head, tail)) = rest.split_once('{') {
            filled.push_str(head);
            filled.push('1');
            rest = tail.split_once('}').map_or("", |(_, after)| after);
        }
        filled.push_str(rest);
        if let Ok(n) = normalize_path(&filled) {
            assert!(
                match_template(&t, &n).is_some(),
                "template {raw:?} does not match {filled:?} (segments {:?})",
                n.segments().collect::<Vec<_>>()
            );
        }
    }
});
