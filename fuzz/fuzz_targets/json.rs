//! The strict, bounded JSON parser of request bodies (`json::parse`): with no
//! effective limit as the plugin configuration is read (numbers as serde_json reads
//! them), with no effective limit but `exact_numbers`, under the default limits of
//! a request body, and under tight limits.
//!
//! Invariants, for any UTF-8 input (the filter checks UTF-8 first):
//! - nothing panics;
//! - differential against serde_json with a visitor that refuses duplicate member
//!   names (serde_json alone keeps the last one): without `exact_numbers` and
//!   without an effective limit, ours accepts exactly what it accepts, with the
//!   same `Value`; a refusal of ours that it accepts is a limit (nesting over 100);
//! - `exact_numbers` refuses a document, as a limit, exactly when one of its
//!   numbers is not a shortest round-trip decimal of its double, by an independent
//!   check: the text's significant digits and exponent against those of Rust's
//!   `{:e}` of `str::parse`, or of the other decimal of an exact tie (checked on the
//!   double's full decimal expansion); its values equal serde_json's up to one
//!   unit in the last place (serde_json's default float reading is not always
//!   correctly rounded);
//! - an accepted value is within the limits it was parsed under: depth, members
//!   per object, elements per array, bytes per string or member name, values;
//! - limits only ever remove documents: accepted under tight limits means accepted
//!   under the default ones with the same value, and the same for default limits
//!   and none;
//! - an accepted value, re-serialised by serde_json, is accepted again under the
//!   same limits with the same value (exactly under `exact_numbers`, whose
//!   doubles are correctly rounded; to one unit in the last place otherwise).
#![no_main]

use api_guard::api::fuzzing::{parse_json, JsonError, JsonLimits};
use libfuzzer_sys::fuzz_target;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Limits that never fire before serde_json's own recursion limit (128), with
/// numbers read as serde_json reads them (the configuration's mode).
fn open() -> JsonLimits {
    JsonLimits {
        max_depth: 100,
        max_object_entries: u32::MAX,
        max_array_length: u32::MAX,
        max_string_length: u32::MAX,
        max_total_values: u32::MAX,
        exact_numbers: false,
    }
}

/// As [`open`], numbers checked as in request bodies.
fn open_exact() -> JsonLimits {
    JsonLimits {
        exact_numbers: true,
        ..open()
    }
}

fn tight() -> JsonLimits {
    JsonLimits {
        max_depth: 3,
        max_object_entries: 3,
        max_array_length: 4,
        max_string_length: 8,
        max_total_values: 12,
        ..JsonLimits::default()
    }
}

/// serde_json, refusing duplicate member names.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not finite"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let StrictValue(v) = map.next_value()?;
            if out.insert(k, v).is_some() {
                return Err(de::Error::custom("duplicate member name"));
            }
        }
        Ok(Value::Object(out))
    }
}

fn strict_serde(text: &str) -> Option<Value> {
    serde_json::from_str::<StrictValue>(text).ok().map(|v| v.0)
}

/// Checks `v` against `l`; returns its depth.
fn within(v: &Value, l: &JsonLimits, total: &mut u64) -> u32 {
    *total += 1;
    match v {
        Value::String(s) => {
            // Decoded bytes are never more than the bytes as written.
            assert!(
                s.len() as u64 <= u64::from(l.max_string_length),
                "string over the limit"
            );
            0
        }
        Value::Array(a) => {
            assert!(
                a.len() as u64 <= u64::from(l.max_array_length),
                "array over the limit"
            );
            1 + a.iter().map(|x| within(x, l, total)).max().unwrap_or(0)
        }
        Value::Object(o) => {
            assert!(
                o.len() as u64 <= u64::from(l.max_object_entries),
                "object over the limit"
            );
            let mut depth = 0;
            for (k, x) in o {
                assert!(
                    k.len() as u64 <= u64::from(l.max_string_length),
                    "name over the limit"
                );
                depth = depth.max(within(x, l, total));
            }
            1 + depth
        }
        _ => 0,
    }
}

fn check_limits(v: &Value, l: &JsonLimits) {
    let mut total = 0;
    let depth = within(v, l, &mut total);
    assert!(depth <= l.max_depth, "depth {depth} over {}", l.max_depth);
    assert!(total <= u64::from(l.max_total_values), "{total} values");
}

/// Equal, floats to within two units in the last place.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) => {
                    p == q || (p.to_bits().abs_diff(q.to_bits()) <= 2 && p.signum() == q.signum())
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| same(p, q)))
        }
        _ => a == b,
    }
}

fn round_trip(v: &Value, l: &JsonLimits) {
    let text = serde_json::to_string(v).expect("a Value serialises");
    match parse_json(&text, l) {
        Ok(w) if l.exact_numbers => assert_eq!(*v, w, "re-parse of {text:?} differs"),
        Ok(w) => assert!(same(v, &w), "re-parse of {text:?} differs: {w:?}"),
        Err(e) => panic!("re-serialised {text:?} refused: {e}"),
    }
}

/// The number texts of a valid JSON document, in order.
fn numbers(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && b"0123456789+-.eE".contains(&b[i]) {
                    i += 1;
                }
                out.push(&text[start..i]);
            }
            _ => i += 1,
        }
    }
    out
}

/// A decimal's significant digits (no leading or trailing zeros; empty for zero)
/// and the power of ten they are multiplied by.
fn significant(text: &str) -> (String, i64) {
    let t = text.trim_start_matches('-');
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, "0"),
    };
    let exp: i64 = exp.trim_start_matches('+').parse().unwrap_or_else(|_| {
        if exp.starts_with('-') {
            i64::MIN / 2
        } else {
            i64::MAX / 2
        }
    });
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{int}{frac}");
    let digits = all.trim_start_matches('0');
    let sig = digits.trim_end_matches('0');
    let trailing = (digits.len() - sig.len()) as i64;
    (
        sig.to_string(),
        exp.saturating_sub(frac.len() as i64)
            .saturating_add(trailing),
    )
}

/// Is `text` (a finite JSON number) a shortest round-trip decimal of its double?
fn exact(text: &str) -> bool {
    let (sig, exp10) = significant(text);
    if sig.is_empty() {
        return true;
    }
    if sig.len() > 17 {
        return false;
    }
    let value: f64 = text.parse().expect("a JSON number parses");
    if value == 0.0 || !value.is_finite() {
        return false;
    }
    let (shortest, shortest_exp) = significant(&format!("{:e}", value.abs()));
    if (&sig, exp10) == (&shortest, shortest_exp) {
        return true;
    }
    if sig.len() != shortest.len() || exp10 != shortest_exp {
        return false;
    }
    let (a, b): (u128, u128) = (sig.parse().unwrap(), shortest.parse().unwrap());
    if a.abs_diff(b) != 1 {
        return false;
    }
    // A tie: the double is exactly halfway between the two.
    let midpoint = significant(&format!("{}e{}", (a + b) * 5, exp10 - 1));
    significant(&format!("{:.800e}", value.abs())) == midpoint
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    // Differential: no effective limit, numbers as serde_json reads them.
    let open_result = parse_json(text, &open());
    let oracle = strict_serde(text);
    match (&open_result, &oracle) {
        (Ok(ours), Some(theirs)) => assert_eq!(ours, theirs, "values differ for {text:?}"),
        (Ok(ours), None) => panic!("accepted {text:?} ({ours:?}), strict serde_json refuses"),
        (Err(JsonError::Syntax(e)), Some(_)) => {
            panic!("refused {text:?} as not JSON ({e}), strict serde_json accepts")
        }
        // Nesting deeper than 100.
        (Err(JsonError::Limit(_)), _) => {}
        (Err(JsonError::Syntax(_)), None) => {}
    }
    if let Ok(v) = &open_result {
        check_limits(v, &open());
        round_trip(v, &open());
    }

    // exact_numbers.
    let exact_result = parse_json(text, &open_exact());
    if let Ok(v) = &open_result {
        let all_exact = numbers(text).into_iter().all(exact);
        match &exact_result {
            Ok(w) => {
                assert!(
                    all_exact,
                    "exact_numbers accepts an inexact number in {text:?}"
                );
                assert!(same(v, w), "exact_numbers reads {text:?} as {w:?}");
                round_trip(w, &open_exact());
            }
            Err(JsonError::Limit(e)) => {
                assert!(!all_exact, "exact_numbers refuses {text:?}: {e}")
            }
            Err(JsonError::Syntax(e)) => panic!("exact_numbers: {text:?} is not JSON? {e}"),
        }
    } else {
        assert!(exact_result.is_err(), "exact_numbers accepts {text:?}");
    }

    let default = parse_json(text, &JsonLimits::default());
    if let Ok(v) = &default {
        check_limits(v, &JsonLimits::default());
        assert_eq!(
            Some(v),
            exact_result.as_ref().ok(),
            "default limits accept more than none"
        );
        round_trip(v, &JsonLimits::default());
    }

    let tight_result = parse_json(text, &tight());
    if let Ok(v) = &tight_result {
        check_limits(v, &tight());
        assert_eq!(
            Some(v),
            default.as_ref().ok(),
            "tight limits accept more than default"
        );
        round_trip(v, &tight());
    }
});
