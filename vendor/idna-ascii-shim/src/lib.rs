//! The part of `idna` 1.x that `url` and boon call, for ASCII domain names only.
//!
//! For a name of ASCII letters, digits, hyphens and dots (and, under the URL deny
//! list, the other ASCII characters it allows) the results are those of the real
//! crate: UTS #46 maps ASCII by lowercasing it. A name with a non-ASCII character or
//! a Punycode label (`xn--`) would need the UTS #46 tables to be mapped, normalised
//! and checked, so it is refused: a schema `$id` with such a host is a
//! configuration error, and such a value fails the `idn-hostname` and `idn-email`
//! formats. Refusing is the safe side of a format check.

use std::borrow::Cow;

/// A refused domain name (the real crate's error type carries no detail either).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Errors {}

impl std::fmt::Display for Errors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid domain name (only ASCII names are supported)")
    }
}

impl std::error::Error for Errors {}

impl From<Errors> for Result<(), Errors> {
    fn from(e: Errors) -> Self {
        Err(e)
    }
}

/// Which ASCII characters a name may not contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsciiDenyList {
    /// Denied bytes below 0x80, one bit each.
    bits: u128,
}

/// Bytes 0x00-0x20 and 0x7F (what the real crate calls glyphless).
const GLYPHLESS: u128 = ((1u128 << 0x21) - 1) | (1u128 << 0x7f);

const fn deny(glyphless: bool, list: &[u8]) -> u128 {
    let mut bits = if glyphless { GLYPHLESS } else { 0 };
    let mut i = 0;
    while i < list.len() {
        bits |= 1u128 << list[i];
        i += 1;
    }
    bits
}

/// Everything but letters, digits, hyphen and dot.
const fn ldh() -> u128 {
    let mut bits = 0u128;
    let mut b = 0u8;
    while b < 0x80 {
        if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            bits |= 1u128 << b;
        }
        b += 1;
    }
    bits
}

impl AsciiDenyList {
    /// Nothing denied (_UseSTD3ASCIIRules=false_).
    pub const EMPTY: Self = Self { bits: 0 };
    /// Letters, digits, hyphens and dots only (_UseSTD3ASCIIRules=true_).
    pub const STD3: Self = Self { bits: ldh() };
    /// The WHATWG URL Standard's forbidden domain code points.
    pub const URL: Self = Self {
        bits: deny(true, b"%#/:<>?@[\\]^|"),
    };

    fn denies(self, b: u8) -> bool {
        b < 0x80 && self.bits & (1u128 << b) != 0
    }
}

/// Lowercases an ASCII name after checking it, or refuses it.
fn to_ascii<'a>(
    domain: Cow<'a, [u8]>,
    deny: AsciiDenyList,
    strict: bool,
) -> Result<Cow<'a, str>, Errors> {
    if domain.iter().any(|&b| !b.is_ascii() || deny.denies(b)) {
        return Err(Errors {});
    }
    let labels = domain.split(|&b| b == b'.');
    for label in labels.clone() {
        if label.len() >= 4 && label[..4].eq_ignore_ascii_case(b"xn--") {
            return Err(Errors {});
        }
    }
    if strict {
        // CheckHyphens and VerifyDnsLength: every label, the last one included,
        // has 1 to 63 characters.
        let name = &domain[..];
        if name.is_empty() || name.len() > 253 {
            return Err(Errors {});
        }
        for label in name.split(|&b| b == b'.') {
            let hyphens = label.first() == Some(&b'-')
                || label.last() == Some(&b'-')
                || label.get(2..4) == Some(b"--");
            if label.is_empty() || label.len() > 63 || hyphens {
                return Err(Errors {});
            }
        }
    }
    let lower = |b: Vec<u8>| String::from_utf8(b).map_err(|_| Errors {});
    match domain {
        Cow::Borrowed(b) if !b.iter().any(u8::is_ascii_uppercase) => std::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|_| Errors {}),
        other => lower(other.to_ascii_lowercase()).map(Cow::Owned),
    }
}

/// The WHATWG URL Standard's domain to ASCII, for ASCII names (see the crate docs).
pub fn domain_to_ascii_from_cow(
    domain: Cow<'_, [u8]>,
    ascii_deny_list: AsciiDenyList,
) -> Result<Cow<'_, str>, Errors> {
    to_ascii(domain, ascii_deny_list, false)
}

/// Domain to ASCII with the STD3 rules, hyphen checks and DNS lengths.
pub fn domain_to_ascii_strict(domain: &str) -> Result<String, Errors> {
    to_ascii(Cow::Borrowed(domain.as_bytes()), AsciiDenyList::STD3, true).map(Cow::into_owned)
}

/// Domain to Unicode: an ASCII name without Punycode labels is itself, lowercased.
pub fn domain_to_unicode(domain: &str) -> (String, Result<(), Errors>) {
    match to_ascii(
        Cow::Borrowed(domain.as_bytes()),
        AsciiDenyList::EMPTY,
        false,
    ) {
        Ok(name) => (name.into_owned(), Ok(())),
        Err(e) => (domain.to_owned(), Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Result<String, Errors> {
        domain_to_ascii_from_cow(Cow::Borrowed(s.as_bytes()), AsciiDenyList::URL)
            .map(Cow::into_owned)
    }

    #[test]
    fn ascii_names_are_lowercased_as_uts46_maps_them() {
        assert_eq!(url("Example.COM").as_deref(), Ok("example.com"));
        assert_eq!(url("api_guard.local").as_deref(), Ok("api_guard.local"));
        assert_eq!(url("a..b.").as_deref(), Ok("a..b."));
        assert!(matches!(
            domain_to_ascii_from_cow(Cow::Borrowed(b"example.com"), AsciiDenyList::URL),
            Ok(Cow::Borrowed("example.com"))
        ));
        assert_eq!(
            domain_to_unicode("WWW.Example.org"),
            ("www.example.org".into(), Ok(()))
        );
    }

    #[test]
    fn url_forbidden_code_points_are_refused() {
        for bad in [
            "a b", "a%41", "a#b", "a/b", "a:b", "a<b", "a>b", "a?b", "a@b", "a[b", "a\\b", "a]b",
            "a^b", "a|b", "a\u{0}b", "a\u{7f}b", "a\tb",
        ] {
            assert_eq!(url(bad), Err(Errors {}), "{bad:?}");
        }
    }

    #[test]
    fn names_that_need_the_unicode_tables_are_refused() {
        for bad in [
            "bücher.example",
            "xn--bcher-kva.example",
            "a.XN--bcher-kva",
            "例え.jp",
        ] {
            assert_eq!(url(bad), Err(Errors {}), "{bad:?}");
            assert!(domain_to_ascii_strict(bad).is_err(), "{bad:?}");
            assert!(domain_to_unicode(bad).1.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn strict_applies_std3_hyphen_and_length_rules() {
        assert_eq!(
            domain_to_ascii_strict("Host-1.Example").as_deref(),
            Ok("host-1.example")
        );
        let long_label = "a".repeat(64);
        let long_name = ["a".repeat(63).as_str(); 4].join(".");
        for bad in [
            "",
            ".",
            "a..b",
            "a.b.",
            "-a.b",
            "a-.b",
            "ab--c.d",
            "a_b.c",
            "a b",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(domain_to_ascii_strict(bad).is_err(), "{bad:?}");
        }
        assert!(domain_to_ascii_strict(&["a".repeat(63).as_str(); 3].join(".")).is_ok());
    }
}
