//! HTTP grammar shared by the request and the response side (RFC 9110): tokens,
//! media types as they arrive in `Content-Type`, and the media ranges a route
//! accepts. One notion of "a JSON media type" for both directions.

use std::borrow::Cow;
use std::fmt;

/// The standard methods (RFC 9110 §9, and PATCH).
const STANDARD_METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT",
];

/// A request's method as the filter keeps it for the request's life: a standard
/// method as a static string, anything else copied. Every request has a method;
/// most are standard, and need no allocation.
pub fn method_name(method: &str) -> Cow<'static, str> {
    match STANDARD_METHODS.iter().find(|m| **m == method) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(method.to_string()),
    }
}

/// RFC 9110 §5.6.2 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 §5.6.2 `token`: header names, media type parts, methods.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// True if two header names reach an upstream as the same header. Names compare
/// ASCII-case-insensitively (RFC 9110 §5.1), and `-` equals `_`: CGI and WSGI
/// servers (and Envoy passing underscores by default) turn both into `_`, so
/// `x_user-id` reads as `x-user-id` there.
pub fn same_header_name(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let fold = |c: u8| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            };
            fold(x) == fold(y)
        })
}

/// A `Content-Type` value: type and subtype lowercased (they compare
/// case-insensitively), and what its `charset` parameter says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    type_: String,
    subtype: String,
    /// No `charset`, or `utf-8` / `utf8` (any case, optionally quoted).
    utf8: bool,
}

impl MediaType {
    /// Parses a header value; `None` unless it starts with `type/subtype`, both
    /// tokens. Parameters other than `charset` are ignored.
    pub fn parse(value: &str) -> Option<MediaType> {
        let mut parts = value.split(';');
        let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let (type_, subtype) = essence.split_once('/')?;
        if !is_token(type_) || !is_token(subtype) {
            return None;
        }
        let mut utf8 = true;
        for param in parts {
            if let Some((name, value)) = param.split_once('=') {
                if name.trim().eq_ignore_ascii_case("charset") {
                    let value = value.trim().trim_matches('"');
                    utf8 =
                        value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8");
                }
            }
        }
        Some(MediaType {
            type_: type_.to_string(),
            subtype: subtype.to_string(),
            utf8,
        })
    }

    /// True when the charset is absent or UTF-8, the only encoding of JSON
    /// (RFC 8259 §8.1).
    pub fn charset_is_utf8(&self) -> bool {
        self.utf8
    }

    /// `application/json` or any `application/<x>+json` (RFC 6839).
    pub fn is_json(&self) -> bool {
        JSON_TYPES.iter().any(|r| r.matches(self))
    }
}

/// What "JSON" means for a response: `application/json` and `application/*+json`.
const JSON_TYPES: [MediaRange<&str>; 2] = [
    MediaRange::Exact {
        type_: "application",
        subtype: "json",
    },
    MediaRange::JsonSuffix {
        type_: "application",
    },
];

/// One media range a route accepts (`request.content_types`), lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaRange<S = Box<str>> {
    /// `application/json`, `application/problem+json`, ...
    Exact {
        /// Top-level type.
        type_: S,
        /// Subtype.
        subtype: S,
    },
    /// `application/*+json`: every subtype of `type_` with the `+json` suffix.
    JsonSuffix {
        /// Top-level type.
        type_: S,
    },
}

/// `application/json`, the default of `request.content_types`.
pub fn application_json() -> MediaRange {
    MediaRange::Exact {
        type_: "application".into(),
        subtype: "json".into(),
    }
}

impl MediaRange {
    /// Parses a configured entry. Only JSON media types are accepted: the body
    /// checks that follow parse JSON.
    pub fn parse(entry: &str) -> Result<MediaRange, String> {
        let lower = entry.trim().to_ascii_lowercase();
        let shown: String = entry.chars().take(100).collect();
        if lower.contains(';') {
            return Err(format!(
                "\"{shown}\": parameters are not allowed here (they are ignored when matching)"
            ));
        }
        let not_json = || {
            format!(
                "\"{shown}\" is not a JSON media type; use application/json, a +json type \
                 (RFC 6839) or application/*+json"
            )
        };
        let Some((type_, subtype)) = lower.split_once('/') else {
            return Err(not_json());
        };
        if !is_token(type_) {
            return Err(not_json());
        }
        if subtype == "*+json" {
            return Ok(MediaRange::JsonSuffix {
                type_: type_.into(),
            });
        }
        if !is_token(subtype) || subtype.contains('*') || !is_json_subtype(subtype) {
            return Err(not_json());
        }
        Ok(MediaRange::Exact {
            type_: type_.into(),
            subtype: subtype.into(),
        })
    }
}

impl<S: AsRef<str>> MediaRange<S> {
    /// True if `media` falls in this range (parameters play no part).
    pub fn matches(&self, media: &MediaType) -> bool {
        match self {
            MediaRange::Exact { type_, subtype } => {
                type_.as_ref() == media.type_ && subtype.as_ref() == media.subtype
            }
            MediaRange::JsonSuffix { type_ } => {
                type_.as_ref() == media.type_
                    && media.subtype != "json"
                    && is_json_subtype(&media.subtype)
            }
        }
    }
}

/// `json` or `<x>+json` with a non-empty `<x>`.
fn is_json_subtype(subtype: &str) -> bool {
    subtype == "json"
        || subtype
            .strip_suffix("+json")
            .is_some_and(|prefix| !prefix.is_empty())
}

impl<S: AsRef<str>> fmt::Display for MediaRange<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaRange::Exact { type_, subtype } => {
                write!(f, "{}/{}", type_.as_ref(), subtype.as_ref())
            }
            MediaRange::JsonSuffix { type_ } => write!(f, "{}/*+json", type_.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_are_kept_without_a_copy_and_others_as_sent() {
        for m in STANDARD_METHODS {
            assert!(matches!(method_name(m), Cow::Borrowed(s) if s == m), "{m}");
        }
        // Methods are case-sensitive (RFC 9110 §9.1): `get` is not GET.
        for m in ["get", "PROPFIND", "", "GET "] {
            assert!(
                matches!(method_name(m), Cow::Owned(ref s) if s == m),
                "{m:?}"
            );
        }
    }

    fn media(v: &str) -> Option<MediaType> {
        MediaType::parse(v)
    }

    #[test]
    fn header_names_compare_as_upstreams_read_them() {
        for (a, b) in [
            ("x-user-id", "x-user-id"),
            ("x-user-id", "X_USER_ID"),
            ("x_user-id", "x-user_id"),
        ] {
            assert!(same_header_name(a, b), "{a} {b}");
        }
        for (a, b) in [
            ("x-user-id", "x-user-ids"),
            ("x-user-id", "xuser-id"),
            ("x-user-id", "x.user.id"),
        ] {
            assert!(!same_header_name(a, b), "{a} {b}");
        }
    }

    #[test]
    fn tokens() {
        assert!(is_token("x-user_id") && is_token("GET") && is_token("a.b~c"));
        for bad in ["", "a b", "a:b", ":path", "caf\u{e9}", "a/b", "a\"b"] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn content_types_parse_case_insensitively_with_their_charset() {
        let m = media(" Application/JSON ; charset=\"UTF-8\"");
        assert!(m
            .as_ref()
            .is_some_and(|m| m.is_json() && m.charset_is_utf8()));
        assert!(media("application/json; charset=latin1").is_some_and(|m| !m.charset_is_utf8()));
        assert!(media("application/json;foo=bar").is_some_and(|m| m.charset_is_utf8()));
        for bad in [
            "",
            "json",
            "application/",
            "/json",
            "appli cation/json",
            "text/json x",
        ] {
            assert_eq!(media(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn json_means_application_json_or_a_json_suffix() {
        for yes in [
            "application/json",
            "application/problem+json",
            "APPLICATION/vnd.api+json",
        ] {
            assert!(media(yes).is_some_and(|m| m.is_json()), "{yes}");
        }
        for no in [
            "text/json",
            "application/+json",
            "application/jsonx",
            "text/plain",
            "application/json+x",
        ] {
            assert!(!media(no).is_some_and(|m| m.is_json()), "{no}");
        }
    }

    #[test]
    fn ranges() {
        let exact = MediaRange::parse("application/merge-patch+json");
        let suffix = MediaRange::parse("application/*+json");
        assert!(exact
            .as_ref()
            .is_ok_and(|r| r.to_string() == "application/merge-patch+json"));
        assert!(suffix
            .as_ref()
            .is_ok_and(|r| r.to_string() == "application/*+json"));
        let (Ok(exact), Ok(suffix)) = (exact, suffix) else {
            return;
        };
        let m = |v: &str| {
            media(v).unwrap_or(MediaType {
                type_: String::new(),
                subtype: String::new(),
                utf8: true,
            })
        };
        assert!(exact.matches(&m("Application/Merge-Patch+JSON")));
        assert!(!exact.matches(&m("application/json")));
        assert!(suffix.matches(&m("application/problem+json")));
        assert!(!suffix.matches(&m("application/json")));
        assert!(application_json().matches(&m("application/json; charset=utf-8")));
        for bad in [
            "text/plain",
            "application/json; charset=utf-8",
            "application/*",
            "*/*",
            "json",
        ] {
            assert!(MediaRange::parse(bad).is_err(), "{bad}");
        }
    }
}
