//! Response masking (`ResponsePolicy::apply`): a policy with `remove`, `redact`,
//! `keep_last`, `hash` and `cloak` rules (names, indexes and wildcards) and every
//! built-in detector in `redact` mode, over any body; and the input as a cloak
//! token (`CloakKeys::decloak`).
//!
//! Invariants:
//! - nothing panics;
//! - a body serde_json parses (nesting at most 100) is always masked, never
//!   withheld (the detectors redact, they do not block);
//! - a new body is UTF-8 JSON (and serde_json reads it into a `Value` whenever
//!   it read the original: numbers past the largest double are JSON, but not to
//!   serde_json);
//! - in it, nothing a `remove` rule selected is left, every value a `redact` rule
//!   selected is `"[REDACTED]"`, a `keep_last` string keeps its length and last 4
//!   characters behind `*`s, and a `hash`ed string is the hex HMAC-SHA-256 of its
//!   canonical JSON (re-computed independently); a `cloak`ed string or integer
//!   is a token that opens to its text, any other value but `null` and `""` is
//!   `"[REDACTED]"`;
//! - the input, read as a token, opens only if it is the token of what it opens to;
//! - the raw text of a string under a `remove` or `redact` rule appears nowhere
//!   in the output (checked for texts that occur nowhere else in the input and
//!   that no masking marker could spell);
//! - the detectors leave nothing behind: the same detectors, run again over the
//!   result, find nothing.
#![no_main]

use api_guard::api::{cloaking_response_policy, response_policy, CloakKeys, ResponsePolicy};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::{json, Value};

const SALT: &str = "fuzz-mask-salt-0123456789";
/// 32 bytes of 0x2a, base64.
const CLOAK_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";
const BUILTINS: [&str; 6] = [
    "card",
    "us_ssn",
    "email",
    "aws_access_key",
    "private_key",
    "jwt",
];

#[derive(Clone, Copy)]
enum Seg {
    Name(&'static str),
    Index(usize),
    Any,
}
use Seg::{Any, Index, Name};

const REMOVED: &[&[Seg]] = &[
    &[Name("secret")],
    &[Name("users"), Any, Name("token")],
    &[Any, Name("password")],
];
const REDACTED: &[&[Seg]] = &[
    &[Name("card"), Name("number")],
    &[Name("users"), Any, Name("ssn")],
    &[Name("odd key"), Index(0)],
];
/// Removed by index: checked by the array's length.
const REMOVED_INDEX: &[Seg] = &[Name("list"), Index(1)];
/// Longest value that is cloaked (`cloak::MAX_VALUE_BYTES`).
const MAX_CLOAKED: usize = 512;

struct Fixture {
    full: ResponsePolicy,
    detect_only: ResponsePolicy,
    keys: std::rc::Rc<CloakKeys>,
}

thread_local! {
    // Policies hold `Rc`s (the filter is single-threaded): one fixture per thread,
    // leaked so the target borrows it for the whole run.
    static FIXTURE: &'static Fixture = Box::leak(Box::new(build_fixture()));
}

fn fixture() -> &'static Fixture {
    FIXTURE.with(|f| *f)
}

fn build_fixture() -> Fixture {
    let detect = json!({"builtin": BUILTINS, "action": "redact"});
    let full = json!({
        "mask": [
            {"path": "$.secret", "action": "remove"},
            {"path": "$.users[*].token", "action": "remove"},
            {"path": "$[*].password", "action": "remove"},
            {"path": "$.list[1]", "action": "remove"},
            {"path": "$.card.number", "action": "redact"},
            {"path": "$.users[*].ssn", "action": "redact"},
            {"path": "$['odd key'][0]", "action": "redact"},
            {"path": "$.items[*].pan", "action": "keep_last", "n": 4},
            {"path": "$.email", "action": "hash"},
            {"path": "$.ids[*]", "action": "cloak", "kind": "id"},
        ],
        "detect": detect,
    });
    Fixture {
        full: cloaking_response_policy(&full, Some(SALT), Some(CLOAK_KEY), false)
            .expect("fixed policy compiles"),
        detect_only: response_policy(&json!({"detect": detect}), None)
            .expect("fixed policy compiles"),
        keys: CloakKeys::compile(Some(&json!(CLOAK_KEY)))
            .ok()
            .flatten()
            .expect("fixed key compiles"),
    }
}

fn select<'a>(v: &'a Value, path: &[Seg], out: &mut Vec<&'a Value>) {
    let Some((first, rest)) = path.split_first() else {
        out.push(v);
        return;
    };
    match (first, v) {
        (Name(n), Value::Object(o)) => {
            if let Some(c) = o.get(*n) {
                select(c, rest, out);
            }
        }
        (Index(i), Value::Array(a)) => {
            if let Some(c) = a.get(*i) {
                select(c, rest, out);
            }
        }
        (Any, Value::Array(a)) => a.iter().for_each(|c| select(c, rest, out)),
        (Any, Value::Object(o)) => o.values().for_each(|c| select(c, rest, out)),
        _ => {}
    }
}

fn selected<'a>(v: &'a Value, path: &[Seg]) -> Vec<&'a Value> {
    let mut out = Vec::new();
    select(v, path, &mut out);
    out
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Every string value in `v`, and, with `keys`, every member name.
fn strings<'a>(v: &'a Value, keys: bool, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|c| strings(c, keys, out)),
        Value::Object(o) => {
            for (k, c) in o {
                if keys {
                    out.push(k);
                }
                strings(c, keys, out);
            }
        }
        _ => {}
    }
}

fn hmac_hex(text: &str) -> String {
    let mac = hmac_sha256::HMAC::mac(text.as_bytes(), SALT.as_bytes());
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

/// Could masking itself write `s` (a marker, a hash, stars, a number's text)?
fn could_be_written(s: &str) -> bool {
    const MARKERS: &str = "[REDACTED][REDACTED:private_key][REDACTED:jwt][REDACTED:aws_access_key]\
                           [REDACTED:card][REDACTED:us_ssn][REDACTED:email]";
    s.chars().count() < 6
        || s.contains(['*', '[', ']'])
        || s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        || s.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        || MARKERS.contains(s)
}

/// The input with every value under a remove/redact rule replaced by `null`.
fn without_masked(v: &Value) -> Value {
    fn blank(v: &mut Value, path: &[Seg]) {
        let Some((first, rest)) = path.split_first() else {
            *v = Value::Null;
            return;
        };
        match (first, v) {
            (Name(n), Value::Object(o)) => {
                if let Some(c) = o.get_mut(*n) {
                    blank(c, rest);
                }
            }
            (Index(i), Value::Array(a)) => {
                if let Some(c) = a.get_mut(*i) {
                    blank(c, rest);
                }
            }
            (Any, Value::Array(a)) => a.iter_mut().for_each(|c| blank(c, rest)),
            (Any, Value::Object(o)) => o.values_mut().for_each(|c| blank(c, rest)),
            _ => {}
        }
    }
    let mut out = v.clone();
    for p in REMOVED.iter().chain(REDACTED).chain([&REMOVED_INDEX]) {
        blank(&mut out, p);
    }
    out
}

fn check_masked(input: &Value, output: &Value) {
    for p in REMOVED {
        let left = selected(output, p);
        assert!(left.is_empty(), "removed value left: {left:?}");
    }
    for p in REDACTED {
        for v in selected(output, p) {
            assert_eq!(v, "[REDACTED]", "a redacted value is {v:?}");
        }
    }
    if let (Some(Value::Array(a)), Some(Value::Array(b))) = (input.get("list"), output.get("list"))
    {
        if a.len() >= 2 {
            assert_eq!(b.len(), a.len() - 1, "$.list[1] not removed");
        }
    }
    // keep_last: element by element (no rule removes elements of `items`; a value
    // missing from the output was under a stronger rule, and a member whose name a
    // detector redacted is not compared).
    let pairs: Vec<(&Value, &Value)> = match (input.get("items"), output.get("items")) {
        (Some(Value::Array(a)), Some(Value::Array(b))) => a.iter().zip(b).collect(),
        (Some(Value::Object(a)), Some(Value::Object(b))) => a
            .iter()
            .filter_map(|(k, v)| b.get(k).map(|w| (v, w)))
            .collect(),
        _ => Vec::new(),
    };
    for (i, o) in pairs {
        if let (Some(Value::String(s)), Some(Value::String(t))) = (i.get("pan"), o.get("pan")) {
            let n = s.chars().count();
            let keep: String = s.chars().skip(n.saturating_sub(4)).collect();
            let want = "*".repeat(n.saturating_sub(4)) + &keep;
            assert_eq!(*t, want, "keep_last 4 of {s:?}");
        }
    }
    if let (Some(i), Some(o)) = (input.get("email"), output.get("email")) {
        match i {
            Value::Null => assert_eq!(o, &Value::Null, "hash of null"),
            Value::String(s) => {
                let canonical = serde_json::to_string(s).expect("a string serialises");
                assert_eq!(o, &Value::String(hmac_hex(&canonical)), "hash of {s:?}");
            }
            _ => assert!(
                o.as_str()
                    .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())),
                "hash of {i:?} is {o:?}"
            ),
        }
    }

    check_cloaked(input.get("ids"), output.get("ids"));

    // No raw text of a masked string survives anywhere.
    let mut gone = Vec::new();
    for p in REMOVED.iter().chain(REDACTED) {
        for v in selected(input, p) {
            strings(v, false, &mut gone);
        }
    }
    let kept_input = without_masked(input);
    let mut elsewhere = Vec::new();
    strings(&kept_input, true, &mut elsewhere);
    let mut out_strings = Vec::new();
    strings(output, true, &mut out_strings);
    for s in gone {
        if could_be_written(s) || elsewhere.iter().any(|e| e.contains(s)) {
            continue;
        }
        assert!(
            !out_strings.iter().any(|o| o.contains(s)),
            "masked text {s:?} is in the output"
        );
    }
}

/// `$.ids[*]` is cloaked: each string or integer is a token that opens to its
/// text, `null` and `""` stay, anything else is redacted. Members a `remove` rule
/// took (`$[*].password`) are not compared.
fn check_cloaked(input: Option<&Value>, output: Option<&Value>) {
    let pairs: Vec<(&Value, &Value)> = match (input, output) {
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            assert_eq!(a.len(), b.len(), "cloaking changed $.ids's length");
            a.iter().zip(b).collect()
        }
        (Some(Value::Object(a)), Some(Value::Object(b))) => a
            .iter()
            .filter_map(|(k, v)| b.get(k).map(|w| (v, w)))
            .collect(),
        _ => return,
    };
    let keys = &fixture().keys;
    let opened = |token: &Value| {
        let token = token
            .as_str()
            .unwrap_or_else(|| panic!("not a token: {token:?}"));
        keys.decloak("id", None, token)
            .unwrap_or_else(|| panic!("token {token:?} does not open"))
    };
    for (i, o) in pairs {
        match i {
            Value::Null => assert_eq!(o, &Value::Null),
            Value::String(s) if s.is_empty() => assert_eq!(o, ""),
            Value::String(s) if s.len() > MAX_CLOAKED => assert_eq!(o, "[REDACTED]"),
            Value::String(s) => assert_eq!(&opened(o), s),
            Value::Number(n) if n.is_i64() || n.is_u64() => {
                assert_eq!(opened(o).parse::<f64>().ok(), n.as_f64(), "{n}");
            }
            // A number serde_json reads as a double: an integer past 64 bits is
            // still an integer (its digits), a fraction or an exponent is redacted.
            // (serde_json's reading may be one unit in the last place off.)
            Value::Number(n) => {
                if o != "[REDACTED]" {
                    let text = opened(o);
                    let digits = text.trim_start_matches('-');
                    assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{text}");
                    let (ours, theirs) = (
                        text.parse::<f64>().unwrap_or(0.0),
                        n.as_f64().unwrap_or(0.0),
                    );
                    assert!((ours - theirs).abs() <= ours.abs() * 1e-15, "{text} vs {n}");
                }
            }
            _ => assert_eq!(o, "[REDACTED]", "{i:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    // The input as a token: it opens only if it is exactly the token of its value.
    if let Ok(token) = std::str::from_utf8(data) {
        if let Some(value) = f.keys.decloak("id", None, token) {
            assert_eq!(f.keys.cloak("id", None, &value).as_deref(), Some(token));
        }
    }
    let parsed = serde_json::from_slice::<Value>(data).ok();
    let outcome = f.full.apply(data, None);
    let outcome = match (outcome, &parsed) {
        (Ok(o), _) => o,
        (Err(e), Some(v)) if depth(v) <= 100 => {
            panic!("a JSON body was withheld: {e:?}")
        }
        (Err(_), _) => return,
    };
    let result: &[u8] = match &outcome.body {
        Some(b) => {
            let text = std::str::from_utf8(b).expect("a masked body is UTF-8");
            // The grammar, as the filter checks it (numbers of any size are JSON).
            if let Err(e) = serde_json::from_str::<IgnoredAny>(text) {
                panic!("masked body is not JSON ({e}): {text:?}");
            }
            if let Some(input) = &parsed {
                // serde_json reads numbers as doubles and refuses those past the
                // largest one, so only a body it read before is read again.
                match serde_json::from_str::<Value>(text) {
                    Ok(out) => check_masked(input, &out),
                    Err(e) => panic!("masked body no longer parses ({e}): {text:?}"),
                }
            }
            b
        }
        None => {
            if let Some(input) = &parsed {
                check_masked(input, input);
            }
            data
        }
    };
    // Detectors leave nothing to detect.
    if let Ok(again) = f.detect_only.apply(result, None) {
        assert!(
            again.detector_hits.is_empty(),
            "detectors find {:?} after redaction in {:?}",
            again.detector_hits,
            String::from_utf8_lossy(result)
        );
    }
});
