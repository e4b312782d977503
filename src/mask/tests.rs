//! Policy-level tests: compile errors, each action through `apply`, detectors,
//! refusals, and a randomized cross-check against a tree-based reference.

use super::actions::REDACTED;
use super::walk::MAX_DEPTH;
use super::*;
use crate::config::ResponseConfig;
use serde_json::{json, Value};

const SALT: &str = "0123456789abcdef-test-salt";

fn config(v: Value) -> ResponseConfig {
    match serde_json::from_value(v) {
        Ok(c) => c,
        Err(e) => unreachable!("bad test config: {e}"),
    }
}

fn policy(v: Value) -> ResponsePolicy {
    match ResponsePolicy::compile(&config(v), Some(SALT), None, "routes[0].response") {
        Ok(p) => p,
        Err(e) => unreachable!("{e}"),
    }
}

fn compile_err(v: Value, salt: Option<&str>) -> String {
    match ResponsePolicy::compile(&config(v), salt, None, "routes[0].response") {
        Ok(_) => "<ok>".to_string(),
        Err(e) => e.to_string(),
    }
}

fn claims(v: Value) -> Claims {
    match v {
        Value::Object(m) => m,
        _ => Claims::new(),
    }
}

/// The body the client gets (the original when unchanged).
fn masked(p: &ResponsePolicy, body: &str, c: Option<&Claims>) -> String {
    match p.apply(body.as_bytes(), c) {
        Ok(out) => match out.body {
            Some(b) => String::from_utf8(b).unwrap_or_else(|_| "<not utf-8>".into()),
            None => body.to_string(),
        },
        Err(r) => format!("<{}>", r.reason()),
    }
}

fn mask1(path: &str, action: &str, n: Option<u32>, body: &str) -> String {
    let mut rule = json!({"path": path, "action": action});
    if let Some(n) = n {
        rule["n"] = json!(n);
    }
    masked(&policy(json!({"mask": [rule]})), body, None)
}

fn hmac_hex(canonical: &str) -> String {
    hmac_sha256::HMAC::mac(canonical.as_bytes(), SALT.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn actions_on_nested_paths_and_arrays() {
    let cases: &[(&str, &str, Option<u32>, &str, &str)] = &[
        (
            "$.card.number",
            "keep_last",
            Some(4),
            r#"{"card": {"number": "4111111111111111", "exp": "12/29"}, "id": 7}"#,
            r#"{"card": {"number": "************1111", "exp": "12/29"}, "id": 7}"#,
        ),
        (
            "$.customer.ssn",
            "remove",
            None,
            "{\n  \"customer\": {\n    \"name\": \"Ann\",\n    \"ssn\": \"123-45-6789\"\n  }\n}",
            "{\n  \"customer\": {\n    \"name\": \"Ann\"\n  }\n}",
        ),
        (
            "$.items[*].cost",
            "redact",
            None,
            r#"{"items":[{"sku":"a","cost":1.5},{"sku":"b"},{"sku":"c","cost":{"net":2}}]}"#,
            r#"{"items":[{"sku":"a","cost":"[REDACTED]"},{"sku":"b"},{"sku":"c","cost":"[REDACTED]"}]}"#,
        ),
        (
            "$.orders[*].items[*].card",
            "keep_last",
            Some(2),
            r#"{"orders":[{"items":[{"card":"1234"},{"card":"5678"}]},{"items":[]},{"items":[{"x":1}]},{"items":[{"card":"90"}]}]}"#,
            r#"{"orders":[{"items":[{"card":"**34"},{"card":"**78"}]},{"items":[]},{"items":[{"x":1}]},{"items":[{"card":"90"}]}]}"#,
        ),
        (
            "$[1]",
            "redact",
            None,
            r#"["a", "b", "c"]"#,
            r#"["a", "[REDACTED]", "c"]"#,
        ),
        (
            "$.a[0][1]",
            "redact",
            None,
            r#"{"a":[[1,2],[3,4]]}"#,
            r#"{"a":[[1,"[REDACTED]"],[3,4]]}"#,
        ),
        (
            "$['x-y']['a b']",
            "redact",
            None,
            r#"{"x-y":{"a b":1,"a":2}}"#,
            r#"{"x-y":{"a b":"[REDACTED]","a":2}}"#,
        ),
        // `[*]` on an object selects every member value.
        (
            "$.users[*].pin",
            "redact",
            None,
            r#"{"users":{"u1":{"pin":"1"},"u2":{"pin":"2"}}}"#,
            r#"{"users":{"u1":{"pin":"[REDACTED]"},"u2":{"pin":"[REDACTED]"}}}"#,
        ),
        // `.name` does not select from arrays, `[N]` not from objects.
        (
            "$.a.b",
            "redact",
            None,
            r#"{"a":[{"b":1}]}"#,
            r#"{"a":[{"b":1}]}"#,
        ),
        (
            "$.a[0]",
            "redact",
            None,
            r#"{"a":{"0":1}}"#,
            r#"{"a":{"0":1}}"#,
        ),
        // Removal keeps arrays and objects well-formed wherever the item sits.
        ("$[0]", "remove", None, "[1, 2, 3]", "[2, 3]"),
        ("$[1]", "remove", None, "[1, 2, 3]", "[1, 3]"),
        ("$[2]", "remove", None, "[1, 2, 3]", "[1, 2]"),
        ("$[0]", "remove", None, "[1]", "[]"),
        ("$[*]", "remove", None, "[1, 2, 3]", "[]"),
        ("$.a", "remove", None, r#"{"a":1,"b":2}"#, r#"{"b":2}"#),
        ("$.b", "remove", None, r#"{"a":1,"b":2}"#, r#"{"a":1}"#),
        ("$[*]", "remove", None, r#"{"a":1,"b":2}"#, "{}"),
        (
            "$[*].s",
            "remove",
            None,
            r#"[{"s":1,"t":2},{"t":3,"s":4},{"s":5}]"#,
            r#"[{"t":2},{"t":3},{}]"#,
        ),
        // Upstream spelling of untouched values survives (no re-serialization).
        (
            "$.ssn",
            "remove",
            None,
            r#"{"big":123456789012345678901234567890,"f":1.10,"e":1E+2,"ssn":"x","z":"\u00e9"}"#,
            r#"{"big":123456789012345678901234567890,"f":1.10,"e":1E+2,"z":"\u00e9"}"#,
        ),
        // Escaped keys match their decoded name; duplicate keys are all masked.
        (
            "$.ssn",
            "redact",
            None,
            r#"{"s\u0073n":"1","ssn":"2"}"#,
            r#"{"s\u0073n":"[REDACTED]","ssn":"[REDACTED]"}"#,
        ),
        // Paths that match nothing are a no-op.
        (
            "$.nope.deeper[3]",
            "remove",
            None,
            r#"{"nope":{"deeper":[1]}}"#,
            r#"{"nope":{"deeper":[1]}}"#,
        ),
        ("$.a", "remove", None, "[1]", "[1]"),
        ("$.a", "remove", None, "\"text\"", "\"text\""),
        // `$` itself.
        ("$", "redact", None, r#"{"a":1}"#, r#""[REDACTED]""#),
        ("$", "keep_last", Some(3), r#" "secret" "#, r#" "***ret" "#),
    ];
    for (path, action, n, body, want) in cases {
        assert_eq!(&mask1(path, action, *n, body), want, "{path} {action}");
    }
}

#[test]
fn non_string_values() {
    let cases: &[(&str, Option<u32>, &str, &str)] = &[
        (
            "keep_last",
            Some(4),
            r#"{"v":4111111111111111}"#,
            r#"{"v":"************1111"}"#,
        ),
        ("keep_last", Some(2), r#"{"v":-12.50}"#, r#"{"v":"****50"}"#),
        ("keep_last", Some(1), r#"{"v":true}"#, r#"{"v":"***e"}"#),
        ("keep_last", Some(4), r#"{"v":null}"#, r#"{"v":null}"#),
        (
            "keep_last",
            Some(4),
            r#"{"v":{"a":"12345"}}"#,
            r#"{"v":"[REDACTED]"}"#,
        ),
        (
            "keep_last",
            Some(4),
            r#"{"v":[1,2]}"#,
            r#"{"v":"[REDACTED]"}"#,
        ),
        (
            "keep_last",
            Some(2),
            r#"{"v":"\u00e9\u00e9\u00e9"}"#,
            r#"{"v":"*éé"}"#,
        ),
        ("keep_last", Some(1), r#"{"v":"a\"b"}"#, r#"{"v":"**b"}"#),
        ("redact", None, r#"{"v":null}"#, r#"{"v":"[REDACTED]"}"#),
        ("redact", None, r#"{"v":false}"#, r#"{"v":"[REDACTED]"}"#),
        ("hash", None, r#"{"v":null}"#, r#"{"v":null}"#),
    ];
    for (action, n, body, want) in cases {
        assert_eq!(&mask1("$.v", action, *n, body), want, "{action} {body}");
    }
}

#[test]
fn hash_is_keyed_stable_and_canonical() {
    let h = |body: &str| mask1("$.v", "hash", None, body);
    // Definition: HMAC-SHA-256(salt, canonical JSON), lowercase hex, as a string.
    assert_eq!(
        h(r#"{"v":"alice"}"#),
        format!(r#"{{"v":"{}"}}"#, hmac_hex(r#""alice""#))
    );
    assert_eq!(h(r#"{"v":42}"#), format!(r#"{{"v":"{}"}}"#, hmac_hex("42")));
    assert_eq!(
        h(r#"{"v":true}"#),
        format!(r#"{{"v":"{}"}}"#, hmac_hex("true"))
    );
    // Stable, and escapes do not change the hash of a string.
    assert_eq!(h(r#"{"v":"alice"}"#), h(r#"{"v":"\u0061lice"}"#));
    assert_eq!(h(r#"{"v":"a/b"}"#), h(r#"{"v":"a\/b"}"#));
    // The string "42" and the number 42 are different values.
    assert_ne!(h(r#"{"v":"42"}"#), h(r#"{"v":42}"#));
    // Objects: key order and whitespace do not matter; nested too.
    let a = h(r#"{"v":{"b":1,"a":{"y":[1, "x"],"x":null}}}"#);
    let b = h(r#"{"v":{ "a": {"x": null, "y": [1,"\u0078"]}, "b": 1 }}"#);
    assert_eq!(a, b);
    assert_eq!(
        a,
        format!(
            r#"{{"v":"{}"}}"#,
            hmac_hex(r#"{"a":{"x":null,"y":[1,"x"]},"b":1}"#)
        )
    );
    // Another salt gives another hash.
    let other = match ResponsePolicy::compile(
        &config(json!({"mask": [{"path": "$.v", "action": "hash"}]})),
        Some("another-salt-of-16+bytes"),
        None,
        "r",
    ) {
        Ok(p) => p,
        Err(e) => unreachable!("{e}"),
    };
    assert_ne!(
        masked(&other, r#"{"v":"alice"}"#, None),
        h(r#"{"v":"alice"}"#)
    );
    // Joinable across records.
    let p = policy(json!({"mask": [{"path": "$[*].email", "action": "hash"}]}));
    let out = masked(
        &p,
        r#"[{"email":"a@x.io"},{"email":"b@x.io"},{"email":"a@x.io"}]"#,
        None,
    );
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    assert_eq!(v[0]["email"], v[2]["email"]);
    assert_ne!(v[0]["email"], v[1]["email"]);
    assert_eq!(v[0]["email"].as_str().map(str::len), Some(64));
}

#[test]
fn overlapping_rules_most_protective_wins() {
    let p = policy(json!({"mask": [
        {"path": "$.a.b", "action": "remove"},
        {"path": "$.a", "action": "redact"},
        {"path": "$.c", "action": "keep_last", "n": 4},
        {"path": "$.c", "action": "remove"},
        {"path": "$.d", "action": "keep_last", "n": 4},
        {"path": "$.d", "action": "keep_last", "n": 1},
        {"path": "$.e", "action": "keep_last", "n": 1},
        {"path": "$.e", "action": "hash"},
    ]}));
    let out = masked(
        &p,
        r#"{"a":{"b":1,"c":2},"c":"123456","d":"123456","e":"x","f":1}"#,
        None,
    );
    let want = format!(
        r#"{{"a":"[REDACTED]","d":"*****6","e":"{}","f":1}}"#,
        hmac_hex("\"x\"")
    );
    assert_eq!(out, want);
}

#[test]
fn outcome_counts_and_unchanged_bodies() {
    let p = policy(
        json!({"mask": [{"path": "$[*].n", "action": "redact"}, {"path": "$.zz", "action": "remove"}]}),
    );
    let out = p.apply(br#"[{"n":1},{"m":2},{"n":null}]"#, None);
    assert!(
        matches!(&out, Ok(o) if o.fields_masked == 2 && o.body.is_some() && o.detector_hits.is_empty())
    );
    let out = p.apply(br#"[{"m":2}]"#, None);
    assert_eq!(out, Ok(MaskOutcome::default()));
    // Empty and whitespace-only bodies have nothing to leak.
    assert_eq!(p.apply(b"", None), Ok(MaskOutcome::default()));
    assert_eq!(p.apply(b" \r\n", None), Ok(MaskOutcome::default()));
}

#[test]
fn unmasked_for_lifts_masking_only_for_matching_callers() {
    let p = policy(json!({
        "mask": [{"path": "$.ssn", "action": "redact"}],
        "unmasked_for": {"claim": "roles", "any_of": ["admin"]}
    }));
    let body = r#"{"ssn":"123-45-6789"}"#;
    let admin = claims(json!({"sub": "a", "roles": ["admin"]}));
    let clerk = claims(json!({"sub": "c", "roles": ["clerk"]}));
    assert_eq!(masked(&p, body, Some(&admin)), body);
    assert_eq!(masked(&p, body, Some(&clerk)), r#"{"ssn":"[REDACTED]"}"#);
    assert_eq!(masked(&p, body, None), r#"{"ssn":"[REDACTED]"}"#);
    assert!(!p.applies_to(Some(&admin)));
    assert!(p.applies_to(Some(&clerk)));
    assert!(p.applies_to(None));
    // An unmasked caller gets the original even for a body that is not JSON:
    // nothing applies, so nothing is parsed.
    assert_eq!(p.apply(b"<html>", Some(&admin)), Ok(MaskOutcome::default()));
}

#[test]
fn detectors_still_apply_to_unmasked_callers() {
    let p = policy(json!({
        "mask": [{"path": "$.ssn", "action": "redact"}],
        "unmasked_for": {"claim": "roles", "any_of": ["admin"]},
        "detect": {"builtin": ["private_key"], "action": "redact"}
    }));
    let admin = claims(json!({"roles": "admin"}));
    assert!(p.applies_to(Some(&admin)));
    let body =
        r#"{"ssn":"1","k":"-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----"}"#;
    assert_eq!(
        masked(&p, body, Some(&admin)),
        r#"{"ssn":"1","k":"[REDACTED:private_key]"}"#
    );
    assert_eq!(
        masked(&p, body, None),
        r#"{"ssn":"[REDACTED]","k":"[REDACTED:private_key]"}"#
    );
}

#[test]
fn detectors_redact_report_and_block() {
    let body = r#"{"user":{"mail":"Mail: ann@example.com","card":"4111 1111 1111 1111"},
        "notes":["ok","\u0034111111111111111"],"n":4111111111111111,"ann@example.com":1}"#;
    let redact = policy(json!({"detect": {"builtin": ["email", "card"], "action": "redact"}}));
    let out = redact.apply(body.as_bytes(), None);
    let Ok(out) = out else {
        unreachable!("{out:?}")
    };
    assert_eq!(
        out.detector_hits,
        vec![("card".to_string(), 3), ("email".to_string(), 2)]
    );
    assert_eq!(out.fields_masked, 0);
    let text = String::from_utf8(out.body.unwrap_or_default()).unwrap_or_default();
    // Escaped text is decoded before scanning; numbers and member names are
    // scanned too.
    assert_eq!(
        text,
        r#"{"user":{"mail":"Mail: [REDACTED:email]","card":"[REDACTED:card]"},
        "notes":["ok","[REDACTED:card]"],"n":"[REDACTED:card]","[REDACTED:email]":1}"#
    );

    let report = policy(json!({"detect": {"builtin": ["email", "card"], "action": "report"}}));
    let out = report.apply(body.as_bytes(), None);
    assert!(
        matches!(&out, Ok(o) if o.body.is_none() && o.detector_hits.len() == 2),
        "{out:?}"
    );

    let block = policy(json!({"detect": {"builtin": ["card"], "action": "block"}}));
    let out = block.apply(body.as_bytes(), None);
    assert!(
        matches!(&out, Err(Rejection::ResponseWithheld { reason: "sensitive_data", description, .. }) if description.contains("(card)")),
        "{out:?}"
    );
    assert!(block.apply(br#"{"a":"nothing"}"#, None).is_ok());
}

#[test]
fn masked_values_are_not_scanned_again() {
    let p = policy(json!({
        "mask": [{"path": "$.card", "action": "keep_last", "n": 4}],
        "detect": {"builtin": ["card"], "action": "block"}
    }));
    let out = p.apply(br#"{"card":"4111111111111111","x":"y"}"#, None);
    assert!(
        matches!(&out, Ok(o) if o.fields_masked == 1 && o.detector_hits.is_empty()),
        "{out:?}"
    );
    let out = p.apply(br#"{"card":"1","x":"4111111111111111"}"#, None);
    assert!(matches!(
        out,
        Err(Rejection::ResponseWithheld {
            reason: "sensitive_data",
            ..
        })
    ));
}

#[test]
fn user_patterns_through_apply() {
    let p = policy(
        json!({"detect": {"patterns": [{"name": "order_ref", "regex": "ORD-[0-9]{6}"}], "action": "redact"}}),
    );
    assert_eq!(
        masked(&p, r#"{"a":"ref ORD-123456."}"#, None),
        r#"{"a":"ref [REDACTED:order_ref]."}"#
    );
    assert_eq!(p.detector_kinds().collect::<Vec<_>>(), ["order_ref"]);
}

#[test]
fn bodies_that_cannot_be_masked_are_refused() {
    let p = policy(json!({"mask": [{"path": "$.a", "action": "redact"}]}));
    let d = policy(json!({"detect": {"builtin": ["email"], "action": "redact"}}));
    let cases: &[&[u8]] = &[
        b"<html>hi</html>",
        b"{\"a\":1",
        b"{\"a\":1} x",
        b"{\"a\":1}{}",
        b"\xef\xbb\xbf{\"a\":1}",
        b"{\"a\":\"\xff\"}",
        b"{\"b\":\"\xc3\x28\"}",
        b"{a:1}",
        b"[1,]",
        b"{\"a\":01}",
        b"{\"a\":\"tab\there\"}",
        b"nul",
        b"\x00",
    ];
    for body in cases {
        for policy in [&p, &d] {
            let out = policy.apply(body, None);
            assert!(
                matches!(
                    out,
                    Err(Rejection::ResponseWithheld {
                        reason: "not_json",
                        ..
                    })
                ),
                "{:?}: {out:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
    // A lone surrogate cannot be decoded for scanning: refused where it is read.
    let out = d.apply(br#"{"x":"\ud800@example.com"}"#, None);
    assert!(
        matches!(
            out,
            Err(Rejection::ResponseWithheld {
                reason: "not_json",
                ..
            })
        ),
        "{out:?}"
    );
}

#[test]
fn nesting_is_bounded() {
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let obj = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    // 200,000 levels of `{"a":` are 1.2 MB: raise the cap so depth, not size, decides.
    let p = policy(
        json!({"mask": [{"path": "$[0]", "action": "redact"}], "max_body_bytes": 4_194_304}),
    );
    let deep = policy(
        json!({"mask": [{"path": "$.a.a.a", "action": "redact"}], "detect": {"builtin": ["email"], "action": "report"}, "max_body_bytes": 4_194_304}),
    );
    for pol in [&p, &deep] {
        assert!(pol.apply(nest(MAX_DEPTH).as_bytes(), None).is_ok());
        assert!(pol.apply(obj(MAX_DEPTH).as_bytes(), None).is_ok());
        for n in [MAX_DEPTH + 1, 10_000, 200_000] {
            for body in [nest(n), obj(n)] {
                let out = pol.apply(body.as_bytes(), None);
                assert!(
                    matches!(&out, Err(Rejection::ResponseWithheld { reason: "not_json", description, .. }) if description.contains("128")),
                    "{n}: {out:?}"
                );
            }
        }
    }
    // `hash` of a deep object walks it too.
    let h = policy(json!({"mask": [{"path": "$.a", "action": "hash"}]}));
    assert!(h.apply(obj(MAX_DEPTH).as_bytes(), None).is_ok());
    assert!(h.apply(obj(MAX_DEPTH + 1).as_bytes(), None).is_err());
}

#[test]
fn size_cap_and_status_helpers() {
    let p = policy(
        json!({"mask": [{"path": "$.a", "action": "redact"}], "max_body_bytes": 10, "mask_errors": false, "failure_mode": "open"}),
    );
    assert_eq!(p.max_body_bytes, 10);
    assert_eq!(p.failure_mode, FailureMode::Open);
    assert!(matches!(
        p.apply(br#"{"a":"0123456789"}"#, None),
        Err(Rejection::ResponseWithheld {
            reason: "too_large",
            ..
        })
    ));
    assert!(p.applies_to_status(200) && p.applies_to_status(299));
    assert!(!p.applies_to_status(404) && !p.applies_to_status(500) && !p.applies_to_status(302));
    let d = policy(json!({"mask": [{"path": "$.a", "action": "redact"}]}));
    assert!(d.applies_to_status(500) && d.mask_errors);
    assert_eq!(d.max_body_bytes, DEFAULT_MAX_RESPONSE_BYTES);
    assert_eq!(d.failure_mode, FailureMode::Closed);
    assert_eq!(d.rules.len(), 1);
    // Nothing configured: nothing applies.
    let none = policy(json!({}));
    assert!(!none.applies_to(None));
    assert_eq!(none.apply(b"not json", None), Ok(MaskOutcome::default()));
}

#[test]
fn config_errors_name_the_field() {
    let short = "short";
    let cases: &[(Value, Option<&str>, &str)] = &[
        (json!({"mask": [{"path": "$.a", "action": "redact"}, {"path": "$.a b", "action": "redact"}]}), Some(SALT),
         "routes[0].response.mask[1].path: column 4: unexpected ` ` in member name; write ['...'] for names that are not identifiers"),
        (json!({"mask": [{"path": "card", "action": "redact"}]}), Some(SALT),
         "routes[0].response.mask[0].path: column 1: must start with `$`, found `c`"),
        (json!({"mask": [{"path": "$.a", "action": "keep_last"}]}), Some(SALT),
         "routes[0].response.mask[0].n: `keep_last` requires `n`, the number of characters to keep"),
        (json!({"mask": [{"path": "$.a", "action": "redact", "n": 2}]}), Some(SALT),
         "routes[0].response.mask[0].n: `n` applies only to `keep_last`"),
        (json!({"mask": [{"path": "$", "action": "remove"}]}), Some(SALT),
         "routes[0].response.mask[0].path: `remove` cannot delete `$`, the whole body; use `redact`"),
        (json!({"mask": [{"path": "$.a", "action": "redact"}, {"path": "$.b", "action": "hash"}]}), None,
         "routes[0].response.mask[1].action: `hash` needs the top-level `mask_salt` (at least 16 bytes)"),
        (json!({"mask": [{"path": "$.b", "action": "hash"}]}), Some(short),
         "mask_salt: must be at least 16 bytes, is 5"),
        (json!({"unmasked_for": {"claim": "roles", "any_of": ["admin"]}}), Some(SALT),
         "routes[0].response.unmasked_for: has no effect without `mask` rules"),
        (json!({"mask": [{"path": "$.a", "action": "redact"}], "unmasked_for": {"claim": "roles"}}), Some(SALT),
         "routes[0].response.unmasked_for: exactly one of `any_of`, `all_of`, `equals` is required"),
        (json!({"mask": [{"path": "$.a", "action": "redact"}], "unmasked_for": {"claim": "roles", "any_of": []}}), Some(SALT),
         "routes[0].response.unmasked_for.any_of: must not be empty"),
        (json!({"detect": {"builtin": ["card", "iban"], "action": "redact"}}), Some(SALT),
         "routes[0].response.detect.builtin[1]: unknown detector `iban`; known: private_key, jwt, aws_access_key, card, us_ssn, email"),
        (json!({"detect": {"patterns": [{"name": "x", "regex": "[a-"}], "action": "block"}}), Some(SALT),
         "routes[0].response.detect.patterns[0].regex: invalid regex-lite pattern"),
        (json!({"mask": [{"path": "$.a", "action": "redact"}], "max_body_bytes": 0}), Some(SALT),
         "routes[0].response.max_body_bytes: must be > 0"),
        (json!({"mask": [{"path": "$.a", "action": "redact"}], "max_body_bytes": 67108865}), Some(SALT),
         "routes[0].response.max_body_bytes: must be <= 67108864"),
    ];
    for (cfg, salt, want) in cases {
        let got = compile_err(cfg.clone(), *salt);
        assert!(got.starts_with(want), "got:  {got}\nwant: {want}");
    }
    // No salt is needed (nor checked) without `hash`.
    assert_eq!(
        compile_err(json!({"mask": [{"path": "$.a", "action": "redact"}]}), None),
        "<ok>"
    );
}

// ---------------------------------------------------------------------------
// Detectors over member names and numbers: everything a client reads that no
// rule replaced whole is scanned, not only string values.

const ALL_BUILTINS: [&str; 6] = [
    "private_key",
    "jwt",
    "aws_access_key",
    "card",
    "us_ssn",
    "email",
];

/// A policy with only detectors: the built-ins named, the user patterns
/// `order_ref` (`ORD-[0-9]{6}`) and `acct` (`9001[0-9]{5}`), and `action`.
fn detect_only(builtin: &[&str], action: &str) -> ResponsePolicy {
    policy(json!({"detect": {
        "builtin": builtin,
        "patterns": [
            {"name": "order_ref", "regex": "ORD-[0-9]{6}"},
            {"name": "acct", "regex": "9001[0-9]{5}"}
        ],
        "action": action
    }}))
}

#[test]
fn detectors_redact_member_names() {
    // (built-in, body, expected body)
    let cases: &[(&str, &str, &str)] = &[
        (
            "email",
            r#"{"users":{"ann@example.com":{}}}"#,
            r#"{"users":{"[REDACTED:email]":{}}}"#,
        ),
        // Only the matching text of the name is replaced.
        (
            "email",
            r#"{"contact ann@example.com now":1}"#,
            r#"{"contact [REDACTED:email] now":1}"#,
        ),
        (
            "aws_access_key",
            r#"{"AKIAIOSFODNN7EXAMPLE":"x"}"#,
            r#"{"[REDACTED:aws_access_key]":"x"}"#,
        ),
        (
            "card",
            r#"{"4111111111111111":{"exp":"12/29"}}"#,
            r#"{"[REDACTED:card]":{"exp":"12/29"}}"#,
        ),
        (
            "card",
            r#"{"pan 4111 1111 1111 1111":true}"#,
            r#"{"pan [REDACTED:card]":true}"#,
        ),
        // A Luhn failure in a name is not a card, as in a value.
        (
            "card",
            r#"{"4111111111111112":true}"#,
            r#"{"4111111111111112":true}"#,
        ),
        (
            "us_ssn",
            r#"{"123-45-6789":"Ann"}"#,
            r#"{"[REDACTED:us_ssn]":"Ann"}"#,
        ),
        (
            "jwt",
            r#"{"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl":1}"#,
            r#"{"[REDACTED:jwt]":1}"#,
        ),
        (
            "private_key",
            r#"{"-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----":0}"#,
            r#"{"[REDACTED:private_key]":0}"#,
        ),
        (
            "private_key",
            r#"{"-----BEGIN PRIVATE KEY-----":null}"#,
            r#"{"[REDACTED:private_key]":null}"#,
        ),
        // Escaped names are decoded before scanning, like string values, and the
        // new name is written with the same escaping as a redacted value.
        (
            "email",
            r#"{"ann\u0040example.com":1}"#,
            r#"{"[REDACTED:email]":1}"#,
        ),
        (
            "aws_access_key",
            r#"{"\u0041KIAIOSFODNN7EXAMPLE":1}"#,
            r#"{"[REDACTED:aws_access_key]":1}"#,
        ),
        (
            "email",
            r#"{"\"ann@example.com\"\n":1}"#,
            r#"{"\"[REDACTED:email]\"\n":1}"#,
        ),
        // Names in arrays of objects, at any depth.
        (
            "email",
            r#"[{"id":1,"by":{"ann@example.com":true}},{"bob@example.org":[{"x":"y"}]}]"#,
            r#"[{"id":1,"by":{"[REDACTED:email]":true}},{"[REDACTED:email]":[{"x":"y"}]}]"#,
        ),
        // Two names of one object may become equal; the output stays JSON.
        (
            "email",
            r#"{"a@example.com":1,"b@example.com":2}"#,
            r#"{"[REDACTED:email]":1,"[REDACTED:email]":2}"#,
        ),
        // Names without hits keep their bytes and the whitespace around them.
        (
            "email",
            "{ \"a\" :\t{ \"b@c\" : 1 , \"d\\u0040e\": 2 } }",
            "{ \"a\" :\t{ \"b@c\" : 1 , \"d\\u0040e\": 2 } }",
        ),
    ];
    for (builtin, body, want) in cases {
        let p = detect_only(&[*builtin], "redact");
        assert_eq!(&masked(&p, body, None), want, "{builtin}: {body}");
    }
    // A user pattern reads names too.
    let p = detect_only(&[], "redact");
    assert_eq!(
        masked(&p, r#"{"orders":{"ORD-123456":{"qty":1}}}"#, None),
        r#"{"orders":{"[REDACTED:order_ref]":{"qty":1}}}"#
    );
}

#[test]
fn detectors_redact_numbers_whole() {
    // (built-ins, body, expected body)
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["card"],
            r#"{"pan":4111111111111111}"#,
            r#"{"pan":"[REDACTED:card]"}"#,
        ),
        (
            &["card"],
            "[378282246310005, 5555555555554444,2223003122003222]",
            r#"["[REDACTED:card]", "[REDACTED:card]","[REDACTED:card]"]"#,
        ),
        // The digits of a card are a card whatever the sign or a zero fraction.
        (
            &["card"],
            r#"{"n":-4111111111111111}"#,
            r#"{"n":"[REDACTED:card]"}"#,
        ),
        (
            &["card"],
            r#"{"n":4111111111111111.0}"#,
            r#"{"n":"[REDACTED:card]"}"#,
        ),
        // A whole body that is one number.
        (&["card"], " 4111111111111111\n", " \"[REDACTED:card]\"\n"),
        // Nested in arrays of objects; untouched neighbours keep their spelling.
        (
            &["card"],
            r#"{ "a" : [ {"n": 1.10}, {"n" : 4111111111111111 } , 2.5e-3 ] }"#,
            r#"{ "a" : [ {"n": 1.10}, {"n" : "[REDACTED:card]" } , 2.5e-3 ] }"#,
        ),
        // The card rules hold for numbers: Luhn, network prefix, length.
        (
            &["card"],
            r#"{"pan":4111111111111112}"#,
            r#"{"pan":4111111111111112}"#,
        ),
        (
            &["card"],
            r#"{"id":1234567812345670}"#,
            r#"{"id":1234567812345670}"#,
        ),
        (
            &["card"],
            r#"{"n":41111111111111111111}"#,
            r#"{"n":41111111111111111111}"#,
        ),
        (&["card"], r#"{"n":411111111111}"#, r#"{"n":411111111111}"#),
        // us_ssn never flags nine bare digits, so a number is never an SSN.
        (&["us_ssn"], r#"{"ssn":123456789}"#, r#"{"ssn":123456789}"#),
        // Negative, fractional and exponent numbers without hits are not touched.
        (
            &ALL_BUILTINS,
            r#"[-12.50,1E+2,-0.5e-10,6.02e23,-0,0.0,123456789012345678901234567890]"#,
            r#"[-12.50,1E+2,-0.5e-10,6.02e23,-0,0.0,123456789012345678901234567890]"#,
        ),
        // `true`, `false` and `null` are not scanned.
        (
            &ALL_BUILTINS,
            r#"{"a":true,"b":false,"c":null}"#,
            r#"{"a":true,"b":false,"c":null}"#,
        ),
        // User patterns: a match anywhere in the number's text replaces it whole.
        (
            &[],
            r#"{"acct":900123456}"#,
            r#"{"acct":"[REDACTED:acct]"}"#,
        ),
        (&[], r#"{"v":-19001234567.5}"#, r#"{"v":"[REDACTED:acct]"}"#),
        (&[], r#"{"v":900123}"#, r#"{"v":900123}"#),
    ];
    for (builtin, body, want) in cases {
        let p = detect_only(builtin, "redact");
        assert_eq!(&masked(&p, body, None), want, "{builtin:?}: {body}");
    }
    // A number matched by several detectors is replaced once, by the first, and
    // counted once.
    let p = policy(json!({"detect": {
        "builtin": ["card"],
        "patterns": [{"name": "visa", "regex": "4[0-9]{15}"}],
        "action": "redact"
    }}));
    let out = p.apply(br#"{"pan":4111111111111111}"#, None);
    assert!(
        matches!(&out, Ok(o) if o.body.as_deref() == Some(br#"{"pan":"[REDACTED:card]"}"#.as_slice())
            && o.detector_hits == vec![("card".to_string(), 1)]),
        "{out:?}"
    );
}

#[test]
fn detectors_block_on_names_and_numbers() {
    // (built-ins, body, kind named in the refusal; "" = passes)
    let cases: &[(&[&str], &str, &str)] = &[
        (&["email"], r#"{"users":{"ann@example.com":{}}}"#, "email"),
        (
            &["aws_access_key"],
            r#"{"AKIAIOSFODNN7EXAMPLE":"x"}"#,
            "aws_access_key",
        ),
        (&["card"], r#"{"pan":4111111111111111}"#, "card"),
        (&["card"], r#"[1,2,[{"x":-5555555555554444}]]"#, "card"),
        (&["us_ssn"], r#"{"123 45 6789":1}"#, "us_ssn"),
        (
            &["jwt"],
            r#"[{"a":{"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.":1}}]"#,
            "jwt",
        ),
        (
            &["private_key"],
            r#"{"-----BEGIN EC PRIVATE KEY-----":1}"#,
            "private_key",
        ),
        (&["email"], r#"{"ann\u0040example.com":1}"#, "email"),
        (&[], r#"{"ORD-123456":1}"#, "order_ref"),
        (&[], r#"{"acct":900123456}"#, "acct"),
        // The first hit in document order is the one named: a name before its value.
        (
            &ALL_BUILTINS,
            r#"{"ann@example.com":4111111111111111}"#,
            "email",
        ),
        (
            &ALL_BUILTINS,
            r#"{"a":4111111111111111,"ann@example.com":1}"#,
            "card",
        ),
        // Nothing to find.
        (
            &ALL_BUILTINS,
            r#"{"-12.5":[1E+2,-0.5e-10],"ssn":123456789,"n":4111111111111112}"#,
            "",
        ),
    ];
    for (builtin, body, kind) in cases {
        let p = detect_only(builtin, "block");
        let out = p.apply(body.as_bytes(), None);
        if kind.is_empty() {
            assert_eq!(out, Ok(MaskOutcome::default()), "{body}");
        } else {
            assert!(
                matches!(&out, Err(Rejection::ResponseWithheld { reason: "sensitive_data", description, .. })
                    if description.contains(&format!("({kind})"))),
                "{body}: {out:?}"
            );
        }
    }
}

#[test]
fn detectors_report_names_and_numbers_without_changing_the_body() {
    // (body, expected hits)
    let cases: &[(&str, &[(&str, u32)])] = &[
        (
            r#"{"users":{"ann@example.com":{"pan":4111111111111111}}}"#,
            &[("card", 1), ("email", 1)],
        ),
        (
            r#"[{"AKIAIOSFODNN7EXAMPLE":1},{"AKIAIOSFODNN7EXAMPLE":2},378282246310005]"#,
            &[("aws_access_key", 2), ("card", 1)],
        ),
        (
            r#"{"123-45-6789":900123456,"ORD-123456":"ORD-654321"}"#,
            &[("us_ssn", 1), ("order_ref", 2), ("acct", 1)],
        ),
        (r#"{"ssn":123456789,"n":-1.5e3}"#, &[]),
    ];
    let p = detect_only(&ALL_BUILTINS, "report");
    for (body, want) in cases {
        let out = p.apply(body.as_bytes(), None);
        let want: Vec<(String, u32)> = want.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        assert!(
            matches!(&out, Ok(o) if o.body.is_none() && o.detector_hits == want),
            "{body}: {out:?}"
        );
    }
}

#[test]
fn member_names_under_mask_rules() {
    // (rule path, action, body, expected body, expected email hits)
    let cases: &[(&str, &str, &str, &str, u32)] = &[
        // Removed members leave with their names: nothing left to scan.
        (
            "$.users[*]",
            "remove",
            r#"{"users":{"ann@example.com":{"ssn":"1"}},"n":1}"#,
            r#"{"users":{},"n":1}"#,
            0,
        ),
        // A member whose value is replaced still shows its name.
        (
            "$.users[*]",
            "redact",
            r#"{"users":{"ann@example.com":{"ssn":"1"}}}"#,
            r#"{"users":{"[REDACTED:email]":"[REDACTED]"}}"#,
            1,
        ),
        (
            "$.users[*]",
            "keep_last",
            r#"{"users":{"ann@example.com":"abcdef"}}"#,
            r#"{"users":{"[REDACTED:email]":"****ef"}}"#,
            1,
        ),
        // A path matches the upstream's name, not the redacted one.
        (
            "$['ann@example.com'].pin",
            "redact",
            r#"{"ann@example.com":{"pin":"1","x":2}}"#,
            r#"{"[REDACTED:email]":{"pin":"[REDACTED]","x":2}}"#,
            1,
        ),
        // Names inside a value replaced whole are not looked into.
        (
            "$.x",
            "redact",
            r#"{"x":{"ann@example.com":1},"y":2}"#,
            r#"{"x":"[REDACTED]","y":2}"#,
            0,
        ),
        // Removing one member keeps the others' names scanned and the object valid.
        (
            "$.a",
            "remove",
            r#"{"a":1,"bob@example.org":2,"c":3}"#,
            r#"{"[REDACTED:email]":2,"c":3}"#,
            1,
        ),
        (
            "$.c",
            "remove",
            r#"{"bob@example.org":2, "c":3}"#,
            r#"{"[REDACTED:email]":2}"#,
            1,
        ),
    ];
    for (path, action, body, want, hits) in cases {
        let mut rule = json!({"path": path, "action": action});
        if *action == "keep_last" {
            rule["n"] = json!(2);
        }
        let p = policy(json!({
            "mask": [rule],
            "detect": {"builtin": ["email", "card"], "action": "redact"}
        }));
        let out = p.apply(body.as_bytes(), None);
        let Ok(out) = out else {
            unreachable!("{body}: {out:?}")
        };
        let text = String::from_utf8(out.body.unwrap_or_else(|| body.as_bytes().to_vec()))
            .unwrap_or_default();
        assert_eq!(&text, want, "{path} {action}");
        let got = out
            .detector_hits
            .iter()
            .find(|(k, _)| k == "email")
            .map_or(0, |(_, n)| *n);
        assert_eq!(got, *hits, "{path} {action}: {:?}", out.detector_hits);
        assert!(serde_json::from_str::<Value>(&text).is_ok(), "{text}");
    }
    // A masked number is not scanned again; a hashed member keeps its name scanned.
    let p = policy(json!({
        "mask": [{"path": "$.pan", "action": "keep_last", "n": 4}, {"path": "$[*].v", "action": "hash"}],
        "detect": {"builtin": ["card", "email"], "action": "block"}
    }));
    let out = p.apply(br#"{"pan":4111111111111111}"#, None);
    assert!(
        matches!(&out, Ok(o) if o.fields_masked == 1 && o.detector_hits.is_empty()),
        "{out:?}"
    );
    let out = p.apply(br#"{"ann@example.com":{"v":1}}"#, None);
    assert!(
        matches!(
            &out,
            Err(Rejection::ResponseWithheld {
                reason: "sensitive_data",
                ..
            })
        ),
        "{out:?}"
    );
}

#[test]
fn detectors_scan_names_and_numbers_for_unmasked_callers() {
    let p = policy(json!({
        "mask": [{"path": "$.ssn", "action": "redact"}],
        "unmasked_for": {"claim": "roles", "any_of": ["admin"]},
        "detect": {"builtin": ["card", "email"], "action": "redact"}
    }));
    let admin = claims(json!({"roles": ["admin"]}));
    let body = r#"{"ssn":"1","ann@example.com":{"pan":4111111111111111}}"#;
    assert_eq!(
        masked(&p, body, Some(&admin)),
        r#"{"ssn":"1","[REDACTED:email]":{"pan":"[REDACTED:card]"}}"#
    );
    assert_eq!(
        masked(&p, body, None),
        r#"{"ssn":"[REDACTED]","[REDACTED:email]":{"pan":"[REDACTED:card]"}}"#
    );
    let block = policy(json!({
        "mask": [{"path": "$.ssn", "action": "redact"}],
        "unmasked_for": {"claim": "roles", "any_of": ["admin"]},
        "detect": {"builtin": ["card"], "action": "block"}
    }));
    assert!(matches!(
        block.apply(br#"{"n":4111111111111111}"#, Some(&admin)),
        Err(Rejection::ResponseWithheld {
            reason: "sensitive_data",
            ..
        })
    ));
}

#[test]
fn untouched_bytes_survive_name_and_number_redaction() {
    let p = detect_only(&ALL_BUILTINS, "redact");
    // Spacing, escapes, duplicate names, number spelling and key order around the
    // two hits are kept byte for byte.
    let body = "{\n  \"z\\u00e9\" : \"\\u00e9\\/x\",\n  \"dup\": 1, \"dup\": 1.10,\n  \
                \"ann@example.com\" :\t[ 4111111111111111 ,1E+2 ],\n  \"big\": 123456789012345678901234567890\n}\n";
    let want = "{\n  \"z\\u00e9\" : \"\\u00e9\\/x\",\n  \"dup\": 1, \"dup\": 1.10,\n  \
                \"[REDACTED:email]\" :\t[ \"[REDACTED:card]\" ,1E+2 ],\n  \"big\": 123456789012345678901234567890\n}\n";
    assert_eq!(masked(&p, body, None), want);
    // Nothing found: the body is not rebuilt at all.
    let clean = r#"{"ann":{"n":-1.5e3,"m":[1,2,3],"s":"text"},"k\u0040":0}"#;
    assert_eq!(p.apply(clean.as_bytes(), None), Ok(MaskOutcome::default()));
}

// ---------------------------------------------------------------------------
// Randomized cross-check: the byte-splicing walker against a tree-based
// reference on generated documents, and no panic on mutated bytes.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

fn gen_value(rng: &mut Rng, depth: u32) -> Value {
    match if depth > 4 {
        rng.below(4)
    } else {
        rng.below(7)
    } {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.below(1000)),
        3 => json!(["x", "héllo", "4111111111111111", "a\"b", ""][rng.below(5) as usize]),
        4 | 5 => {
            let mut m = serde_json::Map::new();
            for k in KEYS {
                if rng.below(2) == 0 {
                    m.insert(k.to_string(), gen_value(rng, depth + 1));
                }
            }
            Value::Object(m)
        }
        _ => Value::Array(
            (0..rng.below(4))
                .map(|_| gen_value(rng, depth + 1))
                .collect(),
        ),
    }
}

fn gen_path(rng: &mut Rng) -> String {
    let mut p = String::from("$");
    for _ in 0..=rng.below(3) {
        match rng.below(3) {
            0 => p.push_str(&format!(".{}", KEYS[rng.below(4) as usize])),
            1 => p.push_str(&format!("[{}]", rng.below(3))),
            _ => p.push_str("[*]"),
        }
    }
    p
}

/// Reference semantics on a tree: `None` = removed.
fn reference(
    v: &Value,
    states: &[(usize, usize)],
    rules: &[(Vec<path::Segment>, Action)],
) -> Option<Value> {
    let mut best: Option<Action> = None;
    for &(r, m) in states {
        let (segs, action) = &rules[r];
        if m == segs.len() && best.is_none_or(|b| action.protects_more_than(b)) {
            best = Some(*action);
        }
    }
    match best {
        Some(Action::Remove) => return None,
        Some(Action::Redact) => return Some(json!(REDACTED)),
        Some(Action::KeepLast(n)) => {
            return Some(match v {
                Value::Null => Value::Null,
                Value::String(s) => json!(actions::keep_last(s, n)),
                Value::Object(_) | Value::Array(_) => json!(REDACTED),
                other => json!(actions::keep_last(&other.to_string(), n)),
            })
        }
        Some(Action::Hash | Action::Cloak(_)) => unreachable!("not generated"),
        None => {}
    }
    let step = |seg_ok: &dyn Fn(&path::Segment) -> bool| -> Vec<(usize, usize)> {
        states
            .iter()
            .filter(|&&(r, m)| rules[r].0.get(m).is_some_and(seg_ok))
            .map(|&(r, m)| (r, m + 1))
            .collect()
    };
    Some(match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter_map(|(k, child)| {
                    let st = step(&|s| {
                        matches!(s, path::Segment::Wildcard)
                            || matches!(s, path::Segment::Name(n) if **n == **k)
                    });
                    reference(child, &st, rules).map(|c| (k.clone(), c))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, child)| {
                    let st = step(&|s| {
                        matches!(s, path::Segment::Wildcard)
                            || matches!(s, path::Segment::Index(n) if *n == i)
                    });
                    reference(child, &st, rules)
                })
                .collect(),
        ),
        other => other.clone(),
    })
}

#[test]
fn randomized_against_tree_reference() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let actions = ["remove", "redact", "keep_last"];
    for _ in 0..3000 {
        let doc = gen_value(&mut rng, 0);
        let mut rules_cfg = Vec::new();
        let mut rules_ref = Vec::new();
        for _ in 0..=rng.below(3) {
            let path = gen_path(&mut rng);
            let action = actions[rng.below(3) as usize];
            let n = rng.below(5) as u32;
            let mut rule = json!({"path": path, "action": action});
            let act = match action {
                "remove" => Action::Remove,
                "redact" => Action::Redact,
                _ => {
                    rule["n"] = json!(n);
                    Action::KeepLast(n)
                }
            };
            let Ok(parsed) = path::parse(&path) else {
                unreachable!("{path}")
            };
            rules_cfg.push(rule);
            rules_ref.push((parsed.segments, act));
        }
        let p = policy(json!({"mask": rules_cfg}));
        // Pretty and compact spellings must give the same masked tree.
        for text in [
            doc.to_string(),
            serde_json::to_string_pretty(&doc).unwrap_or_default(),
        ] {
            let out = masked(&p, &text, None);
            let got: Value = match serde_json::from_str(&out) {
                Ok(v) => v,
                Err(e) => unreachable!("invalid output {out:?} for {text} with {rules_cfg:?}: {e}"),
            };
            let states: Vec<(usize, usize)> = (0..rules_ref.len()).map(|r| (r, 0)).collect();
            let want = reference(&doc, &states, &rules_ref).unwrap_or(Value::Null);
            assert_eq!(got, want, "doc {text} rules {rules_cfg:?}");
        }
    }
}

#[test]
fn mutated_bodies_never_panic_and_output_is_json() {
    let mut rng = Rng(42);
    let p = policy(json!({
        "mask": [{"path": "$[*].a", "action": "remove"}, {"path": "$.b[*]", "action": "hash"}, {"path": "$.c", "action": "keep_last", "n": 2}],
        "detect": {"builtin": ["card", "email", "jwt", "us_ssn", "aws_access_key", "private_key"], "action": "redact"}
    }));
    let seeds = [
        r#"{"a":{"x":"ann@example.com"},"b":[1,"two",{"k":[true,null]}],"c":"4111 1111 1111 1111","d":"\u00e9\ud83d\ude00"}"#,
        r#"[{"a":1,"z":"123-45-6789"},{"a":[],"y":"AKIAIOSFODNN7EXAMPLE"},"eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln"]"#,
    ];
    let alphabet = br#"{}[]:,"\ u0123456789abcdefAKIAeyJ@.-tnrl"#;
    for _ in 0..20_000 {
        let seed = seeds[rng.below(2) as usize].as_bytes();
        let mut body = seed.to_vec();
        for _ in 0..=rng.below(4) {
            let i = rng.below(body.len() as u64) as usize;
            match rng.below(3) {
                0 => body[i] = alphabet[rng.below(alphabet.len() as u64) as usize],
                1 => {
                    body.remove(i);
                }
                _ => body.insert(i, alphabet[rng.below(alphabet.len() as u64) as usize]),
            }
        }
        if let Ok(MaskOutcome {
            body: Some(out), ..
        }) = p.apply(&body, None)
        {
            assert!(
                serde_json::from_slice::<Value>(&out).is_ok(),
                "{} -> {}",
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&out)
            );
        }
    }
}

/// Secrets placed in member names, numbers and strings of generated documents,
/// with how many detector hits each is.
const SECRET_NAMES: [&str; 4] = [
    "ann@example.com",
    "AKIAIOSFODNN7EXAMPLE",
    "id 4111 1111 1111 1111",
    "123-45-6789",
];
const SECRET_NUMBERS: [u64; 2] = [4111111111111111, 5555555555554444];
const PLAIN_NUMBERS: [&str; 4] = ["-12.5e3", "123456789", "4111111111111112", "0"];

/// A document with secrets anywhere, written as JSON text, and its number of
/// secrets (each is exactly one hit).
fn gen_leaky(rng: &mut Rng, depth: u32, out: &mut String) -> u32 {
    match rng.below(if depth > 3 { 3 } else { 5 }) {
        0 => {
            if rng.below(2) == 0 {
                out.push_str(&SECRET_NUMBERS[rng.below(2) as usize].to_string());
                1
            } else {
                out.push_str(PLAIN_NUMBERS[rng.below(4) as usize]);
                0
            }
        }
        1 => {
            let secret = rng.below(2) == 0;
            let s = if secret {
                SECRET_NAMES[rng.below(4) as usize]
            } else {
                "plain"
            };
            out.push_str(&serde_json::to_string(s).unwrap_or_default());
            u32::from(secret)
        }
        2 => {
            out.push_str(["true", "null"][rng.below(2) as usize]);
            0
        }
        3 => {
            out.push('{');
            let mut n = 0;
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push_str(", ");
                }
                // Distinct plain names, so a parsed copy keeps every member.
                let secret = rng.below(2) == 0;
                let name = if secret {
                    SECRET_NAMES[i as usize].to_string()
                } else {
                    format!("k{i}")
                };
                // Escape some names: decoded text is what is scanned.
                let quoted = serde_json::to_string(&name).unwrap_or_default().replacen(
                    '@',
                    "\\u0040",
                    usize::from(rng.below(2) == 0),
                );
                out.push_str(&quoted);
                out.push_str(" : ");
                n += u32::from(secret) + gen_leaky(rng, depth + 1, out);
            }
            out.push('}');
            n
        }
        _ => {
            out.push('[');
            let mut n = 0;
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push(',');
                }
                n += gen_leaky(rng, depth + 1, out);
            }
            out.push(']');
            n
        }
    }
}

/// True if any name, string or number of `v` still holds a secret.
fn leaks(v: &Value) -> bool {
    let text = |s: &str| {
        s.contains("@example.com")
            || s.contains("AKIA")
            || s.contains("4111 1111")
            || s.contains("123-45-6789")
    };
    match v {
        Value::String(s) => text(s),
        Value::Number(n) => n.as_u64().is_some_and(|n| SECRET_NUMBERS.contains(&n)),
        Value::Array(a) => a.iter().any(leaks),
        Value::Object(m) => m.iter().any(|(k, v)| text(k) || leaks(v)),
        _ => false,
    }
}

#[test]
fn randomized_secrets_in_names_and_numbers_never_leave() {
    let mut rng = Rng(0xA5A5_0123_4567_89AB);
    let redact = detect_only(&ALL_BUILTINS, "redact");
    let report = detect_only(&ALL_BUILTINS, "report");
    let block = detect_only(&ALL_BUILTINS, "block");
    let total = |o: &MaskOutcome| o.detector_hits.iter().map(|(_, n)| n).sum::<u32>();
    for _ in 0..3000 {
        let mut body = String::new();
        let secrets = gen_leaky(&mut rng, 0, &mut body);
        let Ok(doc) = serde_json::from_str::<Value>(&body) else {
            unreachable!("generated invalid JSON: {body}")
        };
        assert_eq!(leaks(&doc), secrets > 0, "{body}");

        let out = redact.apply(body.as_bytes(), None);
        let Ok(out) = out else {
            unreachable!("{body}: {out:?}")
        };
        assert_eq!(total(&out), secrets, "{body}");
        let text = out
            .body
            .map_or(body.clone(), |b| String::from_utf8(b).unwrap_or_default());
        let Ok(masked_doc) = serde_json::from_str::<Value>(&text) else {
            unreachable!("invalid output {text} for {body}")
        };
        assert!(!leaks(&masked_doc), "{body} -> {text}");
        assert_eq!(text == body, secrets == 0, "{body} -> {text}");

        let out = report.apply(body.as_bytes(), None);
        assert!(
            matches!(&out, Ok(o) if o.body.is_none() && total(o) == secrets),
            "{body}: {out:?}"
        );

        let out = block.apply(body.as_bytes(), None);
        assert_eq!(out.is_err(), secrets > 0, "{body}: {out:?}");
    }
}

#[test]
fn a_redaction_never_creates_what_a_detector_finds() {
    // Found by fuzzing: the card's marker is shorter than the card, and a length
    // bound on the PEM label then let a non-label become one after redaction.
    let p = policy(json!({"detect": {"builtin": ["card", "private_key"], "action": "redact"}}));
    let p2 = policy(json!({"detect": {"builtin": ["private_key", "email"], "action": "redact"}}));
    // An e-mail address removed from inside a would-be label leaves a label: the
    // redaction repeats until nothing is left to find.
    let body = br#"{"n":"-----BEGIN PRIVATE KEY)--@e.en-----\nMIIB"}"#;
    let once = p2.apply(body, None).unwrap();
    let out = once.body.clone().unwrap();
    assert!(
        p2.apply(&out, None).unwrap().detector_hits.is_empty(),
        "{once:?}"
    );
    assert!(!String::from_utf8_lossy(&out).contains("MIIB"));
    // A malformed END line never ends a match early, nor takes the dashes of the
    // BEGIN line after it: the second key's body does not leave.
    let body = br#"{"n":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END -----BEGIN PRIVATE KEY-----\nSECRETKEY"}"#;
    let out = p2.apply(body, None).unwrap().body.unwrap();
    assert!(
        !String::from_utf8_lossy(&out).contains("SECRETKEY"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let bodies = [
        "{\"n\":\"-----BEGIN PRIVATE KEQ---m-\\nabc\\n----4111 1111 1111 1111-END PRIVATE KEY-----\"}",
        "{\"n\":\"-----BEGIN PRIVATE KEY\\n4111111111111111-----\"}",
        "{\"n\":\"-----BEGIN A--B PRIVATE KEY-----x-----END A--B PRIVATE KEY-----\"}",
    ];
    for body in bodies {
        let once = p.apply(body.as_bytes(), None).unwrap();
        let out = once.body.unwrap_or_else(|| body.as_bytes().to_vec());
        let again = p.apply(&out, None).unwrap();
        assert!(again.detector_hits.is_empty(), "{body}: {again:?}");
    }
    // A real key is still found.
    let key = "{\"k\":\"-----BEGIN RSA PRIVATE KEY-----\\nMIIB\\n-----END RSA PRIVATE KEY-----\"}";
    let found = p.apply(key.as_bytes(), None).unwrap();
    assert_eq!(found.detector_hits, [("private_key".to_string(), 1)]);
}

/// A policy whose `cloak` rules issue tokens under a fixed key, and the keys.
fn cloaking(v: Value, per_caller: bool) -> (ResponsePolicy, Rc<CloakKeys>) {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
    let keys = match CloakKeys::compile(Some(&json!(key))) {
        Ok(Some(k)) => k,
        other => unreachable!("{other:?}"),
    };
    let issuer = Issuer {
        keys: keys.clone(),
        per_caller,
    };
    match ResponsePolicy::compile(&config(v), Some(SALT), Some(issuer), "routes[0].response") {
        Ok(p) => (p, keys),
        Err(e) => unreachable!("{e}"),
    }
}

/// The masked body as a value.
fn masked_value(p: &ResponsePolicy, body: &str, c: Option<&Claims>) -> Value {
    serde_json::from_str(&masked(p, body, c)).unwrap_or(Value::Null)
}

#[test]
fn cloak_replaces_strings_and_integers_with_tokens() {
    let (p, keys) = cloaking(
        json!({"mask": [{"path": "$[*]", "action": "cloak", "kind": "shop"}]}),
        false,
    );
    let body = r#"{"s":"1001","i":1001,"n":-7,"u":"caf\u00e9","f":1.5,"e":1e3,"b":true,"o":{"a":1},"a":[1],"z":null,"empty":""}"#;
    let out = masked_value(&p, body, None);
    let open = |k: &str| keys.decloak("shop", None, out[k].as_str().unwrap_or_default());
    // The integer 1001 and the string "1001" are one id: one token, and the
    // upstream gets `1001` back either way.
    assert_eq!(out["s"], out["i"]);
    assert_eq!(open("s").as_deref(), Some("1001"));
    assert_eq!(open("n").as_deref(), Some("-7"));
    assert_eq!(open("u").as_deref(), Some("café"));
    for k in ["f", "e", "b", "o", "a"] {
        assert_eq!(out[k], REDACTED, "{k}");
    }
    assert_eq!(out["z"], Value::Null);
    assert_eq!(out["empty"], "");
    let outcome = p.apply(body.as_bytes(), None).unwrap_or_default();
    assert_eq!((outcome.cloaked, outcome.fields_masked), (4, 11));
    // Deterministic: the same body, the same tokens.
    assert_eq!(masked_value(&p, body, None), out);
    // Too long to be a path segment: redacted, not cloaked.
    let long = format!(
        r#"{{"s":"{}"}}"#,
        "x".repeat(crate::cloak::MAX_VALUE_BYTES + 1)
    );
    assert_eq!(masked_value(&p, &long, None)["s"], REDACTED);
}

#[test]
fn cloak_runs_in_the_single_pass_with_the_other_rules() {
    let (p, keys) = cloaking(
        json!({"mask": [
            {"path": "$.shops[*].id", "action": "cloak", "kind": "shop"},
            {"path": "$.shops[*].owner", "action": "cloak", "kind": "user"},
            {"path": "$.shops[*].owner", "action": "hash"},
            {"path": "$.shops[0].id", "action": "remove"},
            {"path": "$.shops[*].ssn", "action": "redact"}
        ],
        "unmasked_for": {"claim": "role", "equals": "admin"}}),
        false,
    );
    let body = r#"{"shops":[{"id":1,"owner":"ann","ssn":"1"},{"id":2,"owner":"bob","ssn":"2"}],"next":"3"}"#;
    let out = masked_value(&p, body, None);
    let shops = &out["shops"];
    // `remove` wins over `cloak`, `cloak` over `hash`.
    assert!(shops[0].get("id").is_none());
    let id = shops[1]["id"].as_str().unwrap_or_default();
    assert_eq!(keys.decloak("shop", None, id).as_deref(), Some("2"));
    let owner = shops[1]["owner"].as_str().unwrap_or_default();
    assert_eq!(keys.decloak("user", None, owner).as_deref(), Some("bob"));
    assert_eq!(keys.decloak("shop", None, owner), None);
    assert_eq!(shops[1]["ssn"], REDACTED);
    assert_eq!(out["next"], "3");
    // A caller the rules are lifted for still gets tokens, and only tokens.
    let admin = claims(json!({"role": "admin"}));
    let out = masked_value(&p, body, Some(&admin));
    let shops = &out["shops"];
    assert_eq!(shops[0]["ssn"], "1");
    let id = shops[0]["id"].as_str().unwrap_or_default();
    assert_eq!(keys.decloak("shop", None, id).as_deref(), Some("1"));
    let owner = shops[0]["owner"].as_str().unwrap_or_default();
    assert_eq!(keys.decloak("user", None, owner).as_deref(), Some("ann"));
}

#[test]
fn per_caller_tokens_are_bound_to_the_sub() {
    let rule = json!({"mask": [{"path": "$.id", "action": "cloak", "kind": "shop"}]});
    let (p, keys) = cloaking(rule, true);
    let alice = claims(json!({"sub": "alice"}));
    let bob = claims(json!({"sub": "bob"}));
    let body = r#"{"id":"s1"}"#;
    let a = masked_value(&p, body, Some(&alice))["id"].clone();
    let b = masked_value(&p, body, Some(&bob))["id"].clone();
    assert_ne!(a, b);
    let a = a.as_str().unwrap_or_default();
    assert_eq!(
        keys.decloak("shop", Some("alice"), a).as_deref(),
        Some("s1")
    );
    assert_eq!(keys.decloak("shop", Some("bob"), a), None);
    assert_eq!(keys.decloak("shop", None, a), None);
    // A caller without `sub` gets no token that would open for every such caller.
    let nobody = claims(json!({"role": "x"}));
    assert_eq!(masked_value(&p, body, Some(&nobody))["id"], REDACTED);
    assert_eq!(masked_value(&p, body, None)["id"], REDACTED);
}

#[test]
fn cloak_rules_need_a_kind_and_the_key() {
    let msg = "routes[0].response.mask[0]: `cloak` needs `kind` (1-64 letters, digits, '-' or '_') and the top-level `cloak_key`; `kind` goes only with `cloak`";
    for rule in [
        json!({"path": "$.id", "action": "cloak"}),
        json!({"path": "$.id", "action": "cloak", "kind": "a.b"}),
        json!({"path": "$.id", "action": "cloak", "kind": ""}),
        json!({"path": "$.id", "action": "redact", "kind": "shop"}),
    ] {
        let cfg = config(json!({"mask": [rule.clone()]}));
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [3u8; 32]);
        let keys = CloakKeys::compile(Some(&json!(key))).ok().flatten();
        let issuer = keys.map(|keys| Issuer {
            keys,
            per_caller: false,
        });
        let e = ResponsePolicy::compile(&cfg, None, issuer, "routes[0].response");
        assert_eq!(
            e.err().map(|e| e.to_string()).as_deref(),
            Some(msg),
            "{rule}"
        );
    }
    assert_eq!(
        compile_err(
            json!({"mask": [{"path": "$.id", "action": "cloak", "kind": "shop"}]}),
            None
        ),
        msg
    );
}
