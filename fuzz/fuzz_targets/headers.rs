//! Header parsing: the proxy-wasm header map (`host::Headers::parse`), media types
//! (`http::MediaType::parse`), and token extraction from the `Authorization`
//! header, a query parameter and a cookie (`TokenSource::extract`,
//! `remove_query_params`, `remove_cookies`), as the filter reads a request.
//!
//! Input: first byte even: the rest is a serialized header map, as the host sends
//! it. Odd: the rest is header lines, `name:value` (any bytes), serialized by the
//! harness into a well-formed map.
//!
//! Invariants:
//! - nothing panics;
//! - the parser accepts exactly the byte strings an independent reading of the
//!   format accepts (count, lengths, then each name and value followed by one byte);
//! - a well-formed map round-trips: every name's values, joined in order, and its
//!   first value are those serialized (converted lossily when not UTF-8), names
//!   compared ASCII-case-insensitively;
//! - `MediaType::parse` ignores ASCII case entirely, and calls only
//!   `application/json` and `application/*+json` JSON;
//! - header tokens carry no surrounding blanks, and a source finds at most one;
//! - the query-parameter source finds exactly the parameters an independent
//!   reading finds (names percent-decoded, ASCII-case-insensitive, pairs split at
//!   `&` and `;`);
//! - after `remove_query_params` / `remove_cookies`, as the filter applies them
//!   under `forward: false`, the parameter and cookie sources find nothing.
#![no_main]

use api_guard::api::fuzzing::{
    parse_header_map, remove_cookies, remove_query_params, token_sources, Headers, MediaType,
    RequestTokens, TokenSources,
};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use std::borrow::Cow;

const PARAM: &str = "access_token";
const COOKIE: &str = "session";

fn providers() -> TokenSources {
    let providers = json!({"p": {
        "issuer": "https://issuer.example/",
        "jwks": {"inline": {"keys": [{"kty": "oct", "k":
            "ZnV6ei1oczI1Ni1zZWNyZXQtb25lLTAxMjM0NTY3ODlhYmNkZWZnaA"}]}},
        "from_headers": [
            {"name": "authorization", "value_prefix": "Bearer "},
            {"name": "x-token"}
        ],
        "from_params": [PARAM],
        "from_cookies": [COOKIE],
    }});
    match token_sources(&providers) {
        Ok(s) => s,
        Err(e) => panic!("fixed providers: {e}"),
    }
}

thread_local! {
    // Compiled providers hold `Rc`s, as in the filter's single-threaded VM.
    static SOURCES: TokenSources = providers();
}

/// What each source finds in `req`.
fn extract(req: &dyn RequestTokens) -> Vec<Vec<String>> {
    SOURCES.with(|s| s.extract(req))
}

/// The request as the filter's `HostTokens` presents it.
struct Request<'a> {
    headers: &'a Headers,
    cookie: Option<Option<String>>,
    query: String,
}

impl RequestTokens for Request<'_> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        if name.eq_ignore_ascii_case("cookie") {
            if let Some(c) = &self.cookie {
                return c.as_deref().map(Cow::Borrowed);
            }
            return self.headers.joined_borrowed(name, "; ");
        }
        self.headers.joined_borrowed(name, ",")
    }
    fn query(&self) -> Option<&str> {
        (!self.query.is_empty()).then_some(self.query.as_str())
    }
}

fn le_u32(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// An independent reading of the format: `None` if malformed.
fn reference(b: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if b.is_empty() {
        return Some(Vec::new());
    }
    let count = le_u32(b, 0)? as u64;
    let mut at = 4 + 8 * count;
    if at > b.len() as u64 {
        return None;
    }
    let mut out = Vec::new();
    for i in 0..count as usize {
        let n = le_u32(b, 4 + 8 * i)? as u64;
        let v = le_u32(b, 8 + 8 * i)? as u64;
        let end = at + n + 1 + v + 1;
        if end > b.len() as u64 {
            return None;
        }
        let name = b[at as usize..(at + n) as usize].to_vec();
        let value = b[(at + n + 1) as usize..(at + n + 1 + v) as usize].to_vec();
        out.push((name, value));
        at = end;
    }
    Some(out)
}

fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check_media_type(value: &str) {
    let m = MediaType::parse(value);
    assert_eq!(
        MediaType::parse(&value.to_ascii_uppercase()),
        m,
        "upper case of {value:?}"
    );
    assert_eq!(
        MediaType::parse(&value.to_ascii_lowercase()),
        m,
        "lower case of {value:?}"
    );
    if m.as_ref().is_some_and(MediaType::is_json) {
        let essence = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        assert!(
            essence.starts_with("application/") && essence.ends_with("json"),
            "{value:?} is not JSON"
        );
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let digit = |i: usize| b.get(i).and_then(|c| (*c as char).to_digit(16));
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if let (b'%', Some(h), Some(l)) = (b[i], digit(i + 1), digit(i + 2)) {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_tokens(h: &Headers) {
    let path = h.first(":path").unwrap_or("/");
    // The query as route normalisation reads it.
    let before_fragment = path.split('#').next().unwrap_or("");
    let query = before_fragment
        .split_once('?')
        .map_or("", |(_, q)| q)
        .to_string();
    let req = Request {
        headers: h,
        cookie: None,
        query: query.clone(),
    };
    let found = extract(&req);
    assert_eq!(found.len(), 4, "four sources");
    for tokens in &found[..2] {
        assert!(
            tokens.len() <= 1,
            "a header gives at most one token: {tokens:?}"
        );
        for t in tokens {
            assert_eq!(
                t.trim_matches([' ', '\t']),
                t,
                "blanks around a header token"
            );
        }
    }
    let want: Vec<String> = query
        .split(['&', ';'])
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .filter(|(k, _)| percent_decode(k).eq_ignore_ascii_case(PARAM))
        .map(|(_, v)| percent_decode(v))
        .collect();
    assert_eq!(found[2], want, "parameter tokens in {query:?}");

    // forward: false.
    let target = if query.is_empty() {
        "/p".to_string()
    } else {
        format!("/p?{query}")
    };
    let stripped = remove_query_params(&target, &[PARAM.to_string()]);
    assert!(stripped.starts_with("/p"), "{stripped:?}");
    let cookie = req.header("cookie");
    let req2 = Request {
        headers: h,
        cookie: Some(
            cookie
                .as_deref()
                .and_then(|c| remove_cookies(c, &[COOKIE.to_string()])),
        ),
        query: stripped.split_once('?').map_or("", |(_, q)| q).to_string(),
    };
    let after = extract(&req2);
    assert!(
        after[2].is_empty(),
        "{target:?} -> {stripped:?} still has {:?}",
        after[2]
    );
    assert!(
        after[3].is_empty(),
        "cookie {cookie:?} -> {:?} still has {:?}",
        req2.cookie,
        after[3]
    );
}

fn check_map(h: &Headers, pairs: &[(Vec<u8>, Vec<u8>)]) {
    let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (lossy(k), lossy(v))).collect();
    for (name, _) in &pairs {
        let values: Vec<&str> = pairs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(h.first(name), values.first().copied(), "first {name:?}");
        assert_eq!(
            h.joined(name, "\u{1}"),
            Some(values.join("\u{1}")),
            "all of {name:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let h = parse_header_map(rest.to_vec());
        let r = reference(rest);
        assert_eq!(h.is_some(), r.is_some(), "verdicts differ");
        if let Some(h) = h {
            for name in [":path", "content-type", "cookie", "authorization"] {
                let _ = h.first(name);
                let _ = h.get(name);
            }
            check_tokens(&h);
        }
        return;
    }
    let lines: Vec<(&[u8], &[u8])> = rest
        .split(|&b| b == b'\n')
        .map(|l| match l.iter().position(|&b| b == b':') {
            // Keep pseudo-headers: a colon in the first place belongs to the name.
            Some(0) => match l[1..].iter().position(|&b| b == b':') {
                Some(i) => (&l[..i + 1], &l[i + 2..]),
                None => (l, &[][..]),
            },
            Some(i) => (&l[..i], &l[i + 1..]),
            None => (l, &[][..]),
        })
        .collect();
    let bytes = serialize(&lines);
    let Some(h) = parse_header_map(bytes) else {
        panic!("a well-formed map is refused");
    };
    let owned: Vec<(Vec<u8>, Vec<u8>)> = lines
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    check_map(&h, &owned);
    for (_, v) in &owned {
        check_media_type(&lossy(v));
    }
    check_tokens(&h);
});
