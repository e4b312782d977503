//! Micro-benchmark of response masking on a ~10 KB JSON body (not a test).
//!
//! Run: `cargo bench --bench mask` (release profile). Prints µs per body for each
//! scenario, best of several rounds, plus a plain serde_json parse + serialize of
//! the same body for scale.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use api_guard::api::{cloaking_response_policy, response_policy, ResponsePolicy};
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::Instant;

const SALT: &str = "bench-salt-0123456789abcdef";

/// An order list of about 10 KB (compact JSON, as APIs usually send it): nested customers, cards and line items.
fn body() -> Vec<u8> {
    let orders: Vec<Value> = (0..19)
        .map(|i| {
            json!({
                "id": format!("ord_{i:06}"),
                "status": "shipped",
                "total": 129.95 + f64::from(i),
                "customer": {
                    "name": format!("Customer Number {i}"),
                    "email": format!("customer{i}@example.com"),
                    "ssn": "123-45-6789",
                    "phone": "+1 555 0100",
                    "address": {"street": "1 Main Street", "city": "Springfield", "zip": "12345"}
                },
                "card": {"number": "4111111111111111", "exp": "12/29", "brand": "visa"},
                "items": [
                    {"sku": "SKU-1001", "qty": 2, "cost": 19.99, "name": "Widget, large"},
                    {"sku": "SKU-1002", "qty": 1, "cost": 5.25, "name": "Gadget"},
                    {"sku": "SKU-1003", "qty": 4, "cost": 1.5, "name": "Sprocket"}
                ],
                "notes": "Leave at the door. Ring twice."
            })
        })
        .collect();
    serde_json::to_vec(&json!({"orders": orders, "count": 19, "next": null})).unwrap()
}

fn policy(cfg: Value) -> ResponsePolicy {
    response_policy(&cfg, Some(SALT)).unwrap()
}

fn bench(name: &str, body: &[u8], mut f: impl FnMut(&[u8]) -> usize) {
    let iters = 2000;
    let mut best = f64::MAX;
    let mut out = 0;
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..iters {
            out = f(black_box(body));
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
        best = best.min(per);
    }
    println!("{name:<72} {best:>7.1} µs/op  (output {out} bytes)");
}

fn main() {
    let body = body();
    println!("body: {} bytes", body.len());
    let contract = policy(json!({"mask": [
        {"path": "$.orders[*].card.number", "action": "keep_last", "n": 4},
        {"path": "$.orders[*].customer.ssn", "action": "remove"},
        {"path": "$.orders[*].items[*].cost", "action": "redact"},
        {"path": "$.orders[*].customer.email", "action": "hash"}
    ]}));
    let no_match = policy(json!({"mask": [{"path": "$.absent[*].x", "action": "redact"}]}));
    let detect = policy(json!({"detect": {
        "builtin": ["private_key", "jwt", "aws_access_key", "card", "us_ssn", "email"],
        "action": "redact"
    }}));
    let both = policy(json!({
        "mask": [
            {"path": "$.orders[*].card.number", "action": "keep_last", "n": 4},
            {"path": "$.orders[*].customer.ssn", "action": "remove"}
        ],
        "detect": {"builtin": ["card", "us_ssn", "email", "jwt"], "action": "report"}
    }));
    let no_hash = policy(json!({"mask": [
        {"path": "$.orders[*].card.number", "action": "keep_last", "n": 4},
        {"path": "$.orders[*].customer.ssn", "action": "remove"},
        {"path": "$.orders[*].items[*].cost", "action": "redact"}
    ]}));
    // Identifier cloaking: the order ids as tokens, against the same ids redacted
    // (the difference is the cost of the tokens), shared and per caller.
    let cloak_rules =
        json!({"mask": [{"path": "$.orders[*].id", "action": "cloak", "kind": "order"}]});
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let cloak = cloaking_response_policy(&cloak_rules, None, Some(key), false).unwrap();
    let cloak_bound = cloaking_response_policy(&cloak_rules, None, Some(key), true).unwrap();
    let redact_ids = policy(json!({"mask": [{"path": "$.orders[*].id", "action": "redact"}]}));
    let scenarios = [
        ("mask: 4 rules (keep_last, remove, redact, hash)", &contract),
        ("mask: the same without hash", &no_hash),
        ("mask: a rule matching nothing (body unchanged)", &no_match),
        ("detect: 6 built-ins, redact", &detect),
        ("mask: 2 rules + detect: 4 built-ins, report", &both),
        ("mask: the order ids redacted", &redact_ids),
        ("cloak: the order ids as tokens", &cloak),
    ];
    for (name, p) in scenarios {
        let once = p.apply(&body, None).unwrap();
        let hits: u32 = once.detector_hits.iter().map(|(_, n)| n).sum();
        let label = format!("{name} [{} fields, {hits} hits]", once.fields_masked);
        bench(&label, &body, |b| {
            let out = p.apply(b, None).unwrap();
            out.body.map_or(b.len(), |v| v.len())
        });
    }
    let alice: serde_json::Map<String, Value> =
        serde_json::from_value(json!({"sub": "alice"})).unwrap();
    bench(
        "cloak: the order ids as tokens bound to the caller",
        &body,
        |b| {
            let out = cloak_bound.apply(b, Some(&alice)).unwrap();
            out.body.map_or(b.len(), |v| v.len())
        },
    );
    bench("reference: serde_json syntax check only", &body, |b| {
        serde_json::from_slice::<serde::de::IgnoredAny>(b).unwrap();
        b.len()
    });
    bench("reference: serde_json Value parse + to_vec", &body, |b| {
        let v: Value = serde_json::from_slice(b).unwrap();
        serde_json::to_vec(&v).unwrap().len()
    });
}
