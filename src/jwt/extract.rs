//! Token sources: where a provider finds its token in a request (`from_headers`,
//! `from_params`, `from_cookies`), and the helpers that remove a token before the
//! request goes upstream (`forward: false`).
//!
//! The request is seen through [`RequestTokens`], so this module is testable without
//! a proxy. Header names are matched case-insensitively (the filter asks the host,
//! which already does); a header source's `value_prefix` (`Bearer `) is matched
//! ASCII-case-insensitively, as the auth-scheme of RFC 9110 §11.1 is, and a prefix
//! ending in a space accepts any run of spaces and tabs there. Query parameters are
//! matched after percent-decoding their names and values, names ASCII-case-
//! insensitively, and both `&` and `;` separate them (some servers split on either);
//! cookie names are matched exactly (RFC 6265 §5.4).
//!
//! A credential the filter cannot read must not reach the upstream unverified:
//! - a value in the source's own scheme without a usable token (`Bearer` alone, or
//!   `Bearer` and blanks) is an empty, and so invalid, token;
//! - a value in another scheme (`Basic ...`) is [`Extraction::unreadable`]: it is no
//!   token for this source, and it is removed before the upstream on routes whose
//!   provider does not forward credentials.

use std::borrow::Cow;

/// The request as the token extractor sees it; the proxy-wasm glue implements it over
/// the host's header map.
pub trait RequestTokens {
    /// The value of request header `name` (lowercase), if present. When the header
    /// occurs several times the glue should join the values with `,` (for `cookie`,
    /// with `; `), so a second token cannot hide behind the first.
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;
    /// The raw query string (after `?`, without it), if the request has one.
    fn query(&self) -> Option<&str>;
    /// The downstream connection's client certificate as Envoy saw it: `None` if the
    /// connection is not mutual TLS, else the certificate's first URI SAN, if any.
    /// Only asked for on routes with a `peer` provider, at most once per request.
    fn peer_uri_san(&self) -> Option<Option<String>> {
        None
    }
    /// The SHA-256 of the client certificate (DER), hex, if the connection presented
    /// one. Only asked for when a token must be bound to it, at most once per request.
    fn peer_cert_sha256(&self) -> Option<String> {
        None
    }
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

    /// The tokens this source finds in the request (a parameter may repeat), and
    /// whether its location holds a credential it cannot read.
    pub fn extract(&self, req: &dyn RequestTokens) -> Extraction {
        match self {
            TokenSource::Header { name, prefix } => {
                let Some(value) = req.header(name) else {
                    return Extraction::default();
                };
                let value = value.trim_matches(is_blank);
                let Some(prefix) = prefix else {
                    return Extraction::tokens(vec![value.to_string()]);
                };
                match strip_scheme(value, prefix) {
                    Some(token) => Extraction::tokens(vec![token.to_string()]),
                    None => Extraction {
                        tokens: Vec::new(),
                        unreadable: true,
                    },
                }
            }
            TokenSource::Param(param) => Extraction::tokens(
                req.query()
                    .map(|q| {
                        query_pairs(q)
                            .filter(|(k, _)| percent_decode(k).eq_ignore_ascii_case(param))
                            .map(|(_, v)| percent_decode(v))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            TokenSource::Cookie(cookie) => Extraction::tokens(
                req.header("cookie")
                    .map(|h| {
                        cookie_pairs(&h)
                            .filter(|(k, _)| k == cookie)
                            .map(|(_, v)| unquote(v).to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
        }
    }
}

/// What one source found in a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extraction {
    /// Tokens, in order; an empty string is a token that is present but empty.
    pub tokens: Vec<String>,
    /// The location holds a credential of another scheme (`Authorization: Basic`
    /// for a `Bearer ` source).
    pub unreadable: bool,
}

impl Extraction {
    fn tokens(tokens: Vec<String>) -> Self {
        Extraction {
            tokens,
            unreadable: false,
        }
    }
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The token after `prefix` in a header value. A prefix that ends in a space is a
/// scheme name: the name (any case), then one or more spaces or tabs, then the
/// token; the name with nothing usable after it gives an empty token. Other prefixes
/// are matched as they are, case-insensitively. `None`: the value is not in this
/// scheme.
fn strip_scheme<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let scheme = prefix.trim_end_matches(is_blank);
    if scheme.len() == prefix.len() {
        return strip_prefix_ignore_case(value, prefix).map(|t| t.trim_matches(is_blank));
    }
    let rest = strip_prefix_ignore_case(value, scheme)?;
    if !rest.is_empty() && !rest.starts_with(is_blank) {
        // `Bearerx`: another scheme name.
        return None;
    }
    Some(rest.trim_matches(is_blank))
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
/// Pairs are separated by `&` or `;`.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split(['&', ';'])
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
/// (compared after percent-decoding, ASCII-case-insensitively; pairs separated by
/// `&` or `;`, as [`TokenSource::extract`] reads them). The other parameters keep
/// their order, encoding and separators; the `?` goes when no parameter is left.
///
/// `remove_query_params("/a?access_token=x&b=1", &["access_token".into()])` is `/a?b=1`.
pub fn remove_query_params(path_and_query: &str, names: &[String]) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let removed = |pair: &&str| {
        let name = pair.split_once('=').map_or(*pair, |(k, _)| k);
        let name = percent_decode(name);
        names.iter().any(|n| n.eq_ignore_ascii_case(&name))
    };
    let kept: Vec<String> = query
        .split('&')
        .map(|group| {
            group
                .split(';')
                .filter(|p| !p.is_empty() && !removed(p))
                .collect::<Vec<_>>()
                .join(";")
        })
        .filter(|group| !group.is_empty())
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
    use std::cell::Cell;
    use std::collections::BTreeMap;

    /// A request for tests: lowercase header names, one value each, a query, and
    /// the mTLS peer, whose reads are counted.
    #[derive(Debug, Default, Clone)]
    pub struct FakeRequest {
        pub headers: BTreeMap<String, String>,
        pub query: Option<String>,
        /// `None`: not mTLS.
        pub san: Option<Option<String>>,
        pub cert: Option<String>,
        pub san_reads: Cell<u32>,
        pub cert_reads: Cell<u32>,
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
        fn header(&self, name: &str) -> Option<Cow<'_, str>> {
            self.headers.get(name).map(|v| Cow::Borrowed(v.as_str()))
        }
        fn query(&self) -> Option<&str> {
            self.query.as_deref()
        }
        fn peer_uri_san(&self) -> Option<Option<String>> {
            self.san_reads.set(self.san_reads.get() + 1);
            self.san.clone()
        }
        fn peer_cert_sha256(&self) -> Option<String> {
            self.cert_reads.set(self.cert_reads.get() + 1);
            self.cert.clone()
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
                vec![""],
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
            assert_eq!(src.extract(&req).tokens, want, "{src:?} {req:?}");
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
            assert_eq!(src.extract(&req).tokens, want, "{src:?} {req:?}");
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
    fn credentials_in_the_sources_scheme_are_read_whatever_the_blanks() {
        // (header value, tokens, unreadable)
        let cases: [(&str, &[&str], bool); 11] = [
            ("Bearer\tforged", &["forged"], false),
            ("Bearer \t forged", &["forged"], false),
            ("bEaReR\t\tforged\t", &["forged"], false),
            ("Bearer", &[""], false),
            ("Bearer \t ", &[""], false),
            ("Bearerforged", &[], true),
            ("Basic YTpi", &[], true),
            ("Digest username=x", &[], true),
            ("forged", &[], true),
            ("", &[], true),
            ("Bear", &[], true),
        ];
        for (value, tokens, unreadable) in cases {
            let got = bearer().extract(&FakeRequest::new().header("authorization", value));
            assert_eq!(got.tokens, tokens, "{value:?}");
            assert_eq!(got.unreadable, unreadable, "{value:?}");
        }
        // A prefix that is not a scheme name is matched as it is.
        let raw = TokenSource::Header {
            name: "x-auth".into(),
            prefix: Some("Token=".into()),
        };
        let got = raw.extract(&FakeRequest::new().header("x-auth", "token=a.b.c"));
        assert_eq!(got.tokens, ["a.b.c"]);
        assert!(
            raw.extract(&FakeRequest::new().header("x-auth", "Tok a"))
                .unreadable
        );
    }

    #[test]
    fn query_credentials_hide_behind_no_separator_or_case() {
        let p = TokenSource::Param("access_token".into());
        let cases: [(&str, &[&str]); 6] = [
            ("a=1;access_token=forged", &["forged"]),
            ("a=1&b=2;access_token=forged;c=3", &["forged"]),
            ("ACCESS_TOKEN=forged", &["forged"]),
            ("Access%5FToken=forged", &["forged"]),
            ("a=x;y&access_token=t", &["t"]),
            ("a=access_token", &[]),
        ];
        for (query, want) in cases {
            assert_eq!(
                p.extract(&FakeRequest::new().query(query)).tokens,
                want,
                "{query}"
            );
        }
        let names = vec!["access_token".to_string()];
        let removed = [
            ("/a?x=1;access_token=t;y=2&z=3", "/a?x=1;y=2&z=3"),
            ("/a?access_token=t;y=2", "/a?y=2"),
            ("/a?ACCESS_TOKEN=t", "/a"),
            ("/a?x=1;access_token=t", "/a?x=1"),
            ("/a?x=1&Access%5ftoken=t;&y", "/a?x=1&y"),
        ];
        for (input, want) in removed {
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
