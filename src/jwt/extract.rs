//! Token sources: where a provider finds its token in a request (`from_headers`,
//! `from_params`, `from_cookies`), and the helpers that remove a token before the
//! request goes upstream (`forward: false`).
//!
//! The request is seen through [`RequestTokens`], so this module is testable without
//! a proxy. Header names are matched case-insensitively (the glue asks the host, which
//! already does); a header source's `value_prefix` (`Bearer `) is matched
//! ASCII-case-insensitively, as the auth-scheme of RFC 9110 §11.1 is. Query parameters
//! are matched after percent-decoding their names and values; cookie names are matched
//! exactly (RFC 6265 §5.4).

/// The request as the token extractor sees it; the proxy-wasm glue implements it over
/// the host's header map.
pub trait RequestTokens {
    /// The value of request header `name` (lowercase), if present. When the header
    /// occurs several times the glue should join the values with `,` (for `cookie`,
    /// with `; `), so a second token cannot hide behind the first.
    fn header(&self, name: &str) -> Option<String>;
    /// The raw query string (after `?`, without it), if the request has one.
    fn query(&self) -> Option<&str>;
}

/// Where a provider looks for tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A request header, optionally with a prefix before the token.
    Header {
        /// Lowercase header name.
        name: String,
        /// Text before the token (`Bearer `), matched case-insensitively.
        prefix: Option<String>,
    },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// Where a token was found; what `forward: false` removes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TokenLocation {
    /// A request header (lowercase name).
    Header(String),
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

impl TokenSource {
    /// The location this source reads.
    pub fn location(&self) -> TokenLocation {
        match self {
            TokenSource::Header { name, .. } => TokenLocation::Header(name.clone()),
            TokenSource::Param(p) => TokenLocation::Param(p.clone()),
            TokenSource::Cookie(c) => TokenLocation::Cookie(c.clone()),
        }
    }

    /// The tokens this source finds in the request (a parameter may repeat). A header
    /// whose value lacks the prefix, or has nothing after it (`Authorization: Bearer`),
    /// holds no token for this source; an empty parameter or cookie value is an
    /// (invalid) token.
    pub fn extract(&self, req: &dyn RequestTokens) -> Vec<String> {
        match self {
            TokenSource::Header { name, prefix } => {
                let Some(value) = req.header(name) else {
                    return Vec::new();
                };
                let value = value.trim_matches(|c| c == ' ' || c == '\t');
                match prefix {
                    None => vec![value.to_string()],
                    Some(prefix) => strip_prefix_ignore_case(value, prefix)
                        .map(|rest| rest.trim_matches(|c| c == ' ' || c == '\t'))
                        .filter(|t| !t.is_empty())
                        .map(|t| vec![t.to_string()])
                        .unwrap_or_default(),
                }
            }
            TokenSource::Param(param) => req
                .query()
                .map(|q| {
                    query_pairs(q)
                        .filter(|(k, _)| percent_decode(k) == *param)
                        .map(|(_, v)| percent_decode(v))
                        .collect()
                })
                .unwrap_or_default(),
            TokenSource::Cookie(cookie) => req
                .header("cookie")
                .map(|h| {
                    cookie_pairs(&h)
                        .filter(|(k, _)| k == cookie)
                        .map(|(_, v)| unquote(v).to_string())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        value.get(prefix.len()..)
    } else {
        None
    }
}

/// `k=v` pairs of a raw query string, still encoded; `k` alone gives an empty value.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// `name=value` pairs of a `Cookie` header (RFC 6265 §4.2.1), trimmed.
fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header
        .split(';')
        .map(|p| p.trim_matches(|c| c == ' ' || c == '\t'))
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .map(|(k, v)| (k.trim(), v.trim()))
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
}

/// Percent-decodes `%XX` (RFC 3986 §2.1); anything else, including a broken escape,
/// is kept as is. `+` is kept: a token never contains a space.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16));
            let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Rewrites a `:path` (path and query) without the query parameters in `names`
/// (compared after percent-decoding). The other parameters keep their order and
/// encoding; the `?` goes when no parameter is left.
///
/// `remove_query_params("/a?access_token=x&b=1", &["access_token".into()])` is `/a?b=1`.
pub fn remove_query_params(path_and_query: &str, names: &[String]) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split_once('=').map_or(*p, |(k, _)| k);
            !names.iter().any(|n| *n == percent_decode(name))
        })
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Rewrites a `Cookie` header without the cookies in `names`; `None` when no cookie
/// is left (remove the header).
///
/// `remove_cookies("session=x; theme=dark", &["session".into()])` is `Some("theme=dark")`.
pub fn remove_cookies(cookie_header: &str, names: &[String]) -> Option<String> {
    let kept: Vec<&str> = cookie_header
        .split(';')
        .map(|p| p.trim_matches(|c| c == ' ' || c == '\t'))
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split_once('=').map_or(*p, |(k, _)| k).trim();
            !names.iter().any(|n| n == name)
        })
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("; "))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A request for tests: lowercase header names, one value each, and a query.
    #[derive(Debug, Default, Clone)]
    pub struct FakeRequest {
        pub headers: BTreeMap<String, String>,
        pub query: Option<String>,
    }

    impl FakeRequest {
        pub fn new() -> Self {
            Self::default()
        }
        pub fn header(mut self, k: &str, v: &str) -> Self {
            self.headers.insert(k.to_ascii_lowercase(), v.to_string());
            self
        }
        pub fn query(mut self, q: &str) -> Self {
            self.query = Some(q.to_string());
            self
        }
    }

    impl RequestTokens for FakeRequest {
        fn header(&self, name: &str) -> Option<String> {
            self.headers.get(name).cloned()
        }
        fn query(&self) -> Option<&str> {
            self.query.as_deref()
        }
    }

    fn bearer() -> TokenSource {
        TokenSource::Header {
            name: "authorization".into(),
            prefix: Some("Bearer ".into()),
        }
    }

    #[test]
    fn header_sources_table() {
        let raw = TokenSource::Header {
            name: "x-token".into(),
            prefix: None,
        };
        let cases: Vec<(TokenSource, FakeRequest, Vec<&str>)> = vec![
            (
                bearer(),
                FakeRequest::new().header("authorization", "Bearer abc"),
                vec!["abc"],
            ),
            (
                bearer(),
                FakeRequest::new().header("authorization", "bearer  abc "),
                vec!["abc"],
            ),
            (
                bearer(),
                FakeRequest::new().header("authorization", "BEARER abc"),
                vec!["abc"],
            ),
            (
                bearer(),
                FakeRequest::new().header("authorization", "Bearer "),
                vec![],
            ),
            (
                bearer(),
                FakeRequest::new().header("authorization", "Basic dXNlcg=="),
                vec![],
            ),
            (
                bearer(),
                FakeRequest::new().header("authorization", "Bear"),
                vec![],
            ),
            (
                bearer(),
                FakeRequest::new().header("authorization", "Béarer x"),
                vec![],
            ),
            (bearer(), FakeRequest::new(), vec![]),
            (
                raw.clone(),
                FakeRequest::new().header("x-token", " t.t.t "),
                vec!["t.t.t"],
            ),
        ];
        for (src, req, want) in cases {
            assert_eq!(src.extract(&req), want, "{src:?} {req:?}");
        }
    }

    #[test]
    fn param_and_cookie_sources_table() {
        let p = TokenSource::Param("access_token".into());
        let c = TokenSource::Cookie("session".into());
        let cases: Vec<(TokenSource, FakeRequest, Vec<&str>)> = vec![
            (
                p.clone(),
                FakeRequest::new().query("access_token=a.b.c&x=1"),
                vec!["a.b.c"],
            ),
            (
                p.clone(),
                FakeRequest::new().query("x=1&access%5Ftoken=a%2Eb"),
                vec!["a.b"],
            ),
            (
                p.clone(),
                FakeRequest::new().query("access_token=a&access_token=b"),
                vec!["a", "b"],
            ),
            (
                p.clone(),
                FakeRequest::new().query("access_token"),
                vec![""],
            ),
            (p.clone(), FakeRequest::new().query("other=1"), vec![]),
            (
                p.clone(),
                FakeRequest::new().query("access_token=%zz"),
                vec!["%zz"],
            ),
            (p.clone(), FakeRequest::new(), vec![]),
            (
                c.clone(),
                FakeRequest::new().header("cookie", "theme=dark; session=s.t.u"),
                vec!["s.t.u"],
            ),
            (
                c.clone(),
                FakeRequest::new().header("cookie", "session=\"q.r.s\""),
                vec!["q.r.s"],
            ),
            (
                c.clone(),
                FakeRequest::new().header("cookie", "Session=x; sessionx=y"),
                vec![],
            ),
            (
                c.clone(),
                FakeRequest::new().header("cookie", ";;session=a;session=b"),
                vec!["a", "b"],
            ),
            (c.clone(), FakeRequest::new(), vec![]),
        ];
        for (src, req, want) in cases {
            assert_eq!(src.extract(&req), want, "{src:?} {req:?}");
        }
    }

    #[test]
    fn removing_query_params() {
        let names = vec!["access_token".to_string()];
        let cases = [
            ("/a?access_token=x&b=1", "/a?b=1"),
            ("/a?b=1&access_token=x", "/a?b=1"),
            ("/a?access_token=x", "/a"),
            ("/a?access%5Ftoken=x&c", "/a?c"),
            (
                "/a?b=1&&access_token=x&access_token=y&c=%20",
                "/a?b=1&c=%20",
            ),
            ("/a", "/a"),
            ("/a?", "/a"),
            ("/a?access_tokens=1", "/a?access_tokens=1"),
        ];
        for (input, want) in cases {
            assert_eq!(remove_query_params(input, &names), want, "{input}");
        }
    }

    #[test]
    fn removing_cookies() {
        let names = vec!["session".to_string()];
        assert_eq!(
            remove_cookies("session=x; theme=dark", &names).as_deref(),
            Some("theme=dark")
        );
        assert_eq!(
            remove_cookies("a=1;session=x;b=2", &names).as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(remove_cookies("session=x", &names), None);
        assert_eq!(
            remove_cookies("sessions=x", &names).as_deref(),
            Some("sessions=x")
        );
    }
}
