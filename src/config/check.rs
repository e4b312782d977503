//! Checks that recur across the configuration. Each names the field in its
//! [`ConfigError`], and a rule reads the same wherever it applies: a header name in
//! `claim_to_headers`, `security_headers.remove` or `quota.by` is checked by
//! [`header_name`], a bound on any number by [`in_range`].

use super::ConfigError;
use crate::http;
use serde_json::Value;
use std::fmt::Display;

/// Longest name that becomes part of a metric name (routes, providers, detectors).
pub const MAX_METRIC_NAME: usize = 64;

/// `value` if it lies in `min..=max`; else `<field>: must be > 0` (for a minimum
/// of 1), `must be >= <min>` or `must be <= <max>`.
pub fn in_range<T>(value: T, min: T, max: T, field: &str) -> Result<T, ConfigError>
where
    T: PartialOrd + Display + Copy + From<u8>,
{
    if value < min {
        let message = if min == T::from(1) {
            "must be > 0".to_string()
        } else {
            format!("must be >= {min}")
        };
        return Err(ConfigError::new(field, message));
    }
    if value > max {
        return Err(ConfigError::new(field, format!("must be <= {max}")));
    }
    Ok(value)
}

/// A header name (RFC 9110 token; pseudo-headers are not tokens), lowercased as
/// Envoy keeps header names.
pub fn header_name(name: &str, field: &str) -> Result<String, ConfigError> {
    if !http::is_token(name) {
        return Err(ConfigError::new(
            field,
            format!("{:?} is not a valid HTTP header name", clip(name)),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// A header value the filter writes: printable ASCII (RFC 9110 §5.5 allows more,
/// but nothing the filter sets needs it, and it keeps control bytes out).
pub fn header_value(value: &str, field: &str) -> Result<(), ConfigError> {
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        Ok(())
    } else {
        Err(ConfigError::new(field, "must be printable ASCII"))
    }
}

/// Which characters a name inside a metric name may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameChars {
    /// `A-Z a-z 0-9 - _` (routes, providers).
    Mixed,
    /// `a-z 0-9 _` (detector kinds, which also appear in `[REDACTED:<kind>]`).
    Lower,
}

/// A name that becomes one dot-free part of a metric name (so Prometheus tags
/// can split on dots): 1 to `max` characters of `chars`.
pub fn metric_name(
    name: &str,
    max: usize,
    chars: NameChars,
    field: &str,
) -> Result<(), ConfigError> {
    let allowed = |b: u8| match chars {
        NameChars::Mixed => b.is_ascii_alphanumeric() || b == b'-' || b == b'_',
        NameChars::Lower => b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_',
    };
    if !name.is_empty() && name.len() <= max && name.bytes().all(allowed) {
        return Ok(());
    }
    let set = match chars {
        NameChars::Mixed => "letters, digits, '-' or '_'",
        NameChars::Lower => "a-z, 0-9 or '_'",
    };
    Err(ConfigError::new(
        field,
        format!(
            "{:?} must be 1-{max} {set} (it is used in metric names)",
            clip(name)
        ),
    ))
}

/// The `name` of entry `base` (`routes[2]`) of a list whose earlier names are
/// `earlier`: a metric-name part ([`metric_name`]) that no earlier entry has.
pub fn entry_name<'a>(
    name: &str,
    earlier: impl Iterator<Item = &'a str>,
    base: &str,
    list: &str,
) -> Result<(), ConfigError> {
    let field = format!("{base}.name");
    metric_name(name, MAX_METRIC_NAME, NameChars::Mixed, &field)?;
    match earlier.enumerate().find(|(_, n)| *n == name) {
        Some((j, _)) => Err(ConfigError::new(
            field,
            format!("{name:?} is already the name of {list}[{j}]"),
        )),
        None => Ok(()),
    }
}

/// At most 64 characters of a configured value, for an error message.
pub fn clip(value: &str) -> String {
    value.chars().take(64).collect()
}

/// `v` as an object with no member outside `allowed`.
pub fn object<'a>(
    v: &'a Value,
    path: &str,
    allowed: &[&str],
) -> Result<&'a serde_json::Map<String, Value>, ConfigError> {
    let Some(o) = v.as_object() else {
        return Err(ConfigError::new(path, "must be an object"));
    };
    if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ConfigError::new(
            format!("{path}.{}", clip(k)),
            format!("unknown field, expected one of {}", allowed.join(", ")),
        ));
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_name_the_field_and_the_bound() {
        assert_eq!(in_range(5u64, 1, 10, "a.b"), Ok(5));
        let msg = |r: Result<u64, ConfigError>| r.err().map(|e| e.to_string());
        assert_eq!(
            msg(in_range(0, 1, 10, "a.b")).as_deref(),
            Some("a.b: must be > 0")
        );
        assert_eq!(
            msg(in_range(512, 1024, 8192, "p.bits")).as_deref(),
            Some("p.bits: must be >= 1024")
        );
        assert_eq!(
            msg(in_range(11, 1, 10, "a.b")).as_deref(),
            Some("a.b: must be <= 10")
        );
        assert_eq!(in_range(0u32, 0, 3, "x"), Ok(0));
    }

    #[test]
    fn header_names_are_tokens_lowercased() {
        assert_eq!(header_name("X-User_Id", "f"), Ok("x-user_id".to_string()));
        for bad in ["", ":path", "x y", "x\u{e9}", "a:b", "x\n"] {
            let e = header_name(bad, "f.name").err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.starts_with("f.name: ")
                        && e.ends_with("is not a valid HTTP header name")),
                "{bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn header_values_are_printable_ascii() {
        assert!(header_value("DENY", "v").is_ok());
        assert!(header_value("a\r\nb", "v").is_err());
        assert!(header_value("caf\u{e9}", "v").is_err());
    }

    #[test]
    fn metric_names() {
        assert!(metric_name("get-order_2", 64, NameChars::Mixed, "n").is_ok());
        assert!(metric_name("Get", 64, NameChars::Lower, "n").is_err());
        assert!(metric_name("a.b", 64, NameChars::Mixed, "n").is_err());
        assert!(metric_name("", 64, NameChars::Mixed, "n").is_err());
        assert!(metric_name(&"a".repeat(65), 64, NameChars::Mixed, "n").is_err());
        let e = metric_name("a b", 64, NameChars::Mixed, "routes[0].name")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("routes[0].name: \"a b\" must be 1-64 letters, digits, '-' or '_' (it is used in metric names)")
        );
    }
}
