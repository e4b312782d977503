//! The audit log: one JSON record per decision, written to Envoy's log at `info`
//! as `api-guard audit: {...}` and stored in the stream's filter state for
//! Envoy's access log (`%FILTER_STATE(wasm.api_guard_audit:PLAIN)%`).
//!
//! A record names the caller only by a pseudonym: lowercase hex HMAC-SHA-256,
//! under `audit.pseudonym_key`, of the primary identity's `sub`, else of the
//! client address. The same caller always gets the same pseudonym, and without
//! the key nobody can link it back. Everything else in a record is written by the
//! filter (route, template, reason, status) or is a bounded, checked copy of a
//! request id: never a token, a key, a raw address or `sub`, a body, or a value
//! that masking hid.

use crate::config::{check, ConfigError};
use ring::hmac;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The fields of `audit`.
const FIELDS: [&str; 2] = ["records", "pseudonym_key"];

/// Shortest accepted `audit.pseudonym_key`, in bytes: below 128 bits a
/// pseudonym could be reversed by guessing the key.
pub const MIN_PSEUDONYM_KEY_BYTES: usize = 16;

/// Filter state name of the record (`wasm.` is added by Envoy).
pub const PROPERTY: &str = "api_guard_audit";

/// Longest `x-request-id` copied into a record; a longer or odd value is left
/// out rather than cut, so a record never carries arbitrary client text.
const MAX_REQUEST_ID: usize = 64;

/// The compiled `audit` section (present only when `records` is not `off`).
pub struct AuditPolicy {
    all: bool,
    key: hmac::Key,
}

impl std::fmt::Debug for AuditPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of every debug print.
        f.debug_struct("AuditPolicy")
            .field("all", &self.all)
            .finish_non_exhaustive()
    }
}

impl AuditPolicy {
    /// Compiles `audit` (`records`, `pseudonym_key`); `None` when records are off.
    pub fn compile(cfg: &BTreeMap<String, String>) -> Result<Option<AuditPolicy>, ConfigError> {
        if let Some(name) = cfg.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            let name = check::clip(name);
            return Err(ConfigError::new(
                format!("audit.{name}"),
                format!("unknown field `{name}`, expected `records` or `pseudonym_key`"),
            ));
        }
        let all = match cfg.get("records").map(String::as_str) {
            None | Some("off") => return Ok(None),
            Some("rejections") => false,
            Some("all") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    "audit.records",
                    format!(
                        "unknown variant `{}`, expected one of `off`, `rejections`, `all`",
                        check::clip(other)
                    ),
                ))
            }
        };
        let key = match cfg.get("pseudonym_key") {
            None => {
                return Err(ConfigError::new(
                    "audit.pseudonym_key",
                    "required when audit.records is not \"off\"",
                ))
            }
            Some(k) if k.len() < MIN_PSEUDONYM_KEY_BYTES => {
                return Err(ConfigError::new(
                    "audit.pseudonym_key",
                    format!(
                        "must be at least {MIN_PSEUDONYM_KEY_BYTES} bytes (it has {})",
                        k.len()
                    ),
                ))
            }
            Some(k) => k,
        };
        Ok(Some(AuditPolicy {
            all,
            key: hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()),
        }))
    }

    /// True if allowed requests are recorded too (`records: all`).
    pub fn records_all(&self) -> bool {
        self.all
    }

    /// The pseudonym of `value`: lowercase hex HMAC-SHA-256.
    pub fn pseudonym(&self, value: &str) -> String {
        let tag = hmac::sign(&self.key, value.as_bytes());
        hex(tag.as_ref())
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Who the caller is, as a record names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// The primary identity's `sub`.
    Sub,
    /// The client address (no verified identity).
    Address,
}

impl CallerKind {
    fn as_str(self) -> &'static str {
        match self {
            CallerKind::Sub => "sub",
            CallerKind::Address => "address",
        }
    }
}

/// The fields of one record. Strings are the filter's own (route, template,
/// reason, detector kind) except `method` and `request_id`, which [`Record::to_json`]
/// checks before copying.
#[derive(Debug, Default)]
pub struct Record<'a> {
    /// Route name; `None` for a request that matched no route.
    pub route: Option<&'a str>,
    /// Request method.
    pub method: &'a str,
    /// The route's path template.
    pub path: Option<&'a str>,
    /// Status sent, or under `report` the status that would have been sent; 0 if
    /// no response was sent (the stream was reset).
    pub status: u32,
    /// `allowed` or the reason, as in the metrics.
    pub decision: &'a str,
    /// False when the decision was a refusal made under `mode: report`.
    pub enforced: bool,
    /// The pseudonym and what it was made from.
    pub caller: Option<(CallerKind, String)>,
    /// The provider that verified the primary identity.
    pub provider: Option<&'a str>,
    /// Kinds of sensitive data detected in the response (never the values).
    pub detectors: Vec<&'a str>,
    /// `x-request-id`, when it is a plain identifier.
    pub request_id: Option<&'a str>,
    /// The blocking rule of a block's record.
    pub rule: Option<&'a str>,
}

impl Record<'_> {
    /// The record as one line of JSON: members in a fixed order, strings escaped
    /// (no raw control character, so never a second line). Written by hand: the
    /// record is flat, and a `serde_json::Map` costs a map per request.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(320);
        out.push('{');
        member(&mut out, "route", self.route);
        member(&mut out, "method", Some(&safe_method(self.method)));
        member(&mut out, "path", self.path);
        let _ = write!(out, ",\"status\":{}", self.status);
        member(&mut out, "decision", Some(self.decision));
        let _ = write!(out, ",\"enforced\":{}", self.enforced);
        match &self.caller {
            Some((kind, p)) => {
                member(&mut out, "caller", Some(p));
                member(&mut out, "caller_kind", Some(kind.as_str()));
            }
            None => member(&mut out, "caller", None),
        }
        if self.provider.is_some() {
            member(&mut out, "provider", self.provider);
        }
        if !self.detectors.is_empty() {
            out.push_str(",\"detectors\":[");
            for (i, kind) in self.detectors.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(&mut out, kind);
            }
            out.push(']');
        }
        if let Some(id) = self.request_id.filter(|id| is_plain_id(id)) {
            member(&mut out, "request_id", Some(id));
        }
        if self.rule.is_some() {
            member(&mut out, "rule", self.rule);
        }
        out.push('}');
        out
    }
}

/// `"name":value` (after a comma unless first), `null` for `None`.
fn member(out: &mut String, name: &str, value: Option<&str>) {
    if out.len() > 1 {
        out.push(',');
    }
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    match value {
        Some(v) => string(out, v),
        None => out.push_str("null"),
    }
}

/// A JSON string (RFC 8259 §7): quotes, backslashes and control characters escaped.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A method as Envoy accepted it is an HTTP token; anything longer than any real
/// method is shortened, so a record stays small.
fn safe_method(method: &str) -> String {
    if !method.is_empty() && method.len() <= 32 && crate::http::is_token(method) {
        method.to_string()
    } else {
        "OTHER".to_string()
    }
}

/// Request ids are UUIDs (Envoy's) or similar: letters, digits, `-` and `_`,
/// bounded in length. A compact JWS needs dots, so a token sent as a request id
/// never gets in.
fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn strings_are_escaped_and_read_back_exactly() {
        for text in [
            "plain",
            "q\"uote",
            "back\\slash",
            "new\nline\r\t",
            "nul\u{0}\u{1f}\u{7f}",
            "ünï €",
        ] {
            let r = Record {
                route: Some(text),
                path: Some(text),
                decision: text,
                detectors: vec![text, "email"],
                ..Record::default()
            };
            let line = r.to_json();
            assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(v["route"], text);
            assert_eq!(v["path"], text);
            assert_eq!(v["decision"], text);
            assert_eq!(v["detectors"], serde_json::json!([text, "email"]));
        }
    }

    fn policy(records: &str, key: Option<&str>) -> Result<Option<AuditPolicy>, ConfigError> {
        let mut cfg = BTreeMap::new();
        cfg.insert("records".to_string(), records.to_string());
        if let Some(k) = key {
            cfg.insert("pseudonym_key".to_string(), k.to_string());
        }
        AuditPolicy::compile(&cfg)
    }

    #[test]
    fn key_is_required_and_long_enough_when_records_are_on() {
        assert!(AuditPolicy::compile(&BTreeMap::new()).unwrap().is_none());
        assert!(policy("off", None).unwrap().is_none());
        assert!(policy("off", Some("short")).unwrap().is_none());
        for records in ["rejections", "all"] {
            let e = policy(records, None).unwrap_err();
            assert_eq!(e.path, "audit.pseudonym_key");
            assert!(e.message.contains("required"), "{e}");
            let e = policy(records, Some("fifteen-bytes!!")).unwrap_err();
            assert_eq!(e.path, "audit.pseudonym_key");
            assert!(e.message.contains("at least 16 bytes"), "{e}");
            assert!(!e.message.contains("fifteen"), "the key leaked: {e}");
            assert!(policy(records, Some("sixteen-bytes!!!")).unwrap().is_some());
        }
        let all = policy("all", Some("0123456789abcdef")).unwrap().unwrap();
        assert!(all.records_all());
        let rej = policy("rejections", Some("0123456789abcdef"))
            .unwrap()
            .unwrap();
        assert!(!rej.records_all());
        assert!(!format!("{rej:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn unknown_fields_and_values_name_the_field() {
        let e = policy("some", Some("0123456789abcdef")).unwrap_err();
        assert_eq!(e.path, "audit.records");
        assert!(e.message.contains("unknown variant `some`"), "{e}");
        let mut cfg = BTreeMap::new();
        cfg.insert("record".to_string(), "all".to_string());
        let e = AuditPolicy::compile(&cfg).unwrap_err();
        assert_eq!(e.path, "audit.record");
        assert!(e.message.contains("unknown field `record`"), "{e}");
    }

    #[test]
    fn pseudonyms_are_hmac_sha256_hex_stable_and_keyed() {
        // RFC 4231 test case 2: key "Jefe" is too short for a policy, so check the
        // construction with a long key against an independent HMAC computation.
        let p = policy("all", Some("key-of-at-least-16")).unwrap().unwrap();
        let expected = {
            let k = hmac::Key::new(hmac::HMAC_SHA256, b"key-of-at-least-16");
            hex(hmac::sign(&k, b"alice").as_ref())
        };
        assert_eq!(p.pseudonym("alice"), expected);
        assert_eq!(p.pseudonym("alice").len(), 64);
        assert!(p
            .pseudonym("alice")
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(p.pseudonym("alice"), p.pseudonym("alice"));
        assert_ne!(p.pseudonym("alice"), p.pseudonym("bob"));
        let q = policy("all", Some("another-key-16-bytes"))
            .unwrap()
            .unwrap();
        assert_ne!(p.pseudonym("alice"), q.pseudonym("alice"));
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn records_are_one_line_of_json_with_the_contract_fields() {
        let r = Record {
            route: Some("orders"),
            method: "POST",
            path: Some("/shops/{shop}/orders"),
            status: 403,
            decision: "bind",
            enforced: false,
            caller: Some((CallerKind::Sub, "ab".repeat(32))),
            provider: Some("demo"),
            detectors: vec!["email", "us_ssn"],
            request_id: Some("0f8e2c1a-1b2c-4d5e-8f90-123456789abc"),
            rule: None,
        };
        let line = r.to_json();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["route"], "orders");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/shops/{shop}/orders");
        assert_eq!(v["status"], 403);
        assert_eq!(v["decision"], "bind");
        assert_eq!(v["enforced"], false);
        assert_eq!(v["caller"], "ab".repeat(32));
        assert_eq!(v["caller_kind"], "sub");
        assert_eq!(v["provider"], "demo");
        assert_eq!(v["detectors"], serde_json::json!(["email", "us_ssn"]));
        assert_eq!(v["request_id"], "0f8e2c1a-1b2c-4d5e-8f90-123456789abc");
    }

    #[test]
    fn client_text_is_checked_before_it_enters_a_record() {
        let base = Record {
            decision: "not_found",
            enforced: true,
            status: 404,
            ..Record::default()
        };
        for (method, want) in [
            ("GET", "GET"),
            ("X-CUSTOM", "X-CUSTOM"),
            ("", "OTHER"),
            ("GET /x", "OTHER"),
            ("G\"ET", "OTHER"),
            (&"A".repeat(33), "OTHER"),
        ] {
            let line = Record {
                method,
                ..base_clone(&base)
            }
            .to_json();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["method"], want, "{method:?}");
        }
        for (id, kept) in [
            ("abc-123", true),
            ("eyJhbGciOiJIUzI1NiJ9.e30.sig", false),
            ("a/b", false),
            ("has space", false),
            ("quote\"", false),
            ("new\nline", false),
            (&"a".repeat(64), true),
            (&"a".repeat(65), false),
            ("", false),
        ] {
            let line = Record {
                request_id: Some(id),
                ..base_clone(&base)
            }
            .to_json();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v.get("request_id").is_some(), kept, "{id:?}");
            assert!(!line.contains('\n'));
        }
        let v: Value = serde_json::from_str(&base_clone(&base).to_json()).unwrap();
        assert_eq!(v["route"], Value::Null);
        assert_eq!(v["path"], Value::Null);
        assert_eq!(v["caller"], Value::Null);
        assert!(v.get("provider").is_none() && v.get("detectors").is_none());
    }

    fn base_clone<'a>(r: &Record<'a>) -> Record<'a> {
        Record {
            route: r.route,
            method: r.method,
            path: r.path,
            status: r.status,
            decision: r.decision,
            enforced: r.enforced,
            caller: r.caller.clone(),
            provider: r.provider,
            detectors: r.detectors.clone(),
            request_id: r.request_id,
            rule: r.rule,
        }
    }
}
