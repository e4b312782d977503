#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Cost of `RequestPolicy::validate` (UTF-8 check, bounded strict parse with the
//! threat limits inline, JSON Schema) on a 615-byte and a ~10 KB order body,
//! natively, with a breakdown and the heap allocations per call.
//!
//! `cargo bench --bench schema_validate`
//!
//! The same bench in V8 (Node 20, the engine Envoy embeds, with wasi-libc's
//! dlmalloc as in the filter), without Envoy:
//! `cargo bench --bench schema_validate --target wasm32-wasip1 --no-run`, then
//! `node bench/micro/wasi_run.js target/wasm32-wasip1/release/deps/schema_validate-*.wasm`.
//!
//! `SCHEMA_BENCH_ONLY=<label prefix>` runs only the cases whose label starts with it,
//! for `perf record` (e.g. `SCHEMA_BENCH_ONLY="  + validate_value (boon) 10"`).
//!
//! A plain timing loop (`std::time::Instant`), not a harness: five rounds per case,
//! the best and the median round are printed in µs per call. The breakdown lines:
//! - `parse_body`: UTF-8 check and the bounded parse into a `serde_json::Value`,
//!   including freeing the tree;
//! - `validate_value`: boon alone, on a body parsed beforehand;
//! - `Value clone + drop`: building and freeing the same tree without parsing, the
//!   allocation floor of any parser that produces a `serde_json::Value`;
//! - `serde_json::from_slice`: the plain serde_json parser, for reference (no limits,
//!   duplicates allowed).

use api_guard::api::{parse_body, request_policy, SchemaRegistry};
use serde_json::{json, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The system allocator, counting allocations (reallocations count as one) while
/// `COUNTING` is set: outside the timed loops, so the count costs them nothing.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A realistic create-order schema: `$ref`s into `$defs`, patterns, enum, formats
/// (annotation only, as in 2020-12 by default), bounds, closed objects.
fn schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["order_id", "customer", "items", "currency"],
        "additionalProperties": false,
        "properties": {
            "order_id": { "type": "string", "pattern": "^ord_[A-Za-z0-9]{8,32}$" },
            "customer": { "$ref": "#/$defs/customer" },
            "items": { "type": "array", "minItems": 1, "maxItems": 500, "items": { "$ref": "#/$defs/item" } },
            "currency": { "enum": ["EUR", "USD", "GBP"] },
            "note": { "type": "string", "maxLength": 500 },
            "shipping": { "$ref": "#/$defs/address" },
            "coupon": { "type": ["string", "null"], "maxLength": 32 },
            "gift": { "type": "boolean" }
        },
        "$defs": {
            "customer": {
                "type": "object", "required": ["id", "email"], "additionalProperties": false,
                "properties": {
                    "id": { "type": "integer", "minimum": 1 },
                    "email": { "type": "string", "format": "email", "maxLength": 254 },
                    "name": { "type": "string", "minLength": 1, "maxLength": 100 }
                }
            },
            "address": {
                "type": "object", "required": ["line1", "city", "country"], "additionalProperties": false,
                "properties": {
                    "line1": { "type": "string", "maxLength": 200 },
                    "line2": { "type": "string", "maxLength": 200 },
                    "city": { "type": "string", "maxLength": 100 },
                    "postcode": { "type": "string", "pattern": "^[A-Z0-9 -]{3,10}$" },
                    "country": { "type": "string", "pattern": "^[A-Z]{2}$" }
                }
            },
            "item": {
                "type": "object", "required": ["sku", "qty", "unit_price"], "additionalProperties": false,
                "properties": {
                    "sku": { "type": "string", "pattern": "^[A-Z]{3}-[0-9]{4,8}$" },
                    "qty": { "type": "integer", "minimum": 1, "maximum": 1000 },
                    "unit_price": { "type": "number", "exclusiveMinimum": 0 },
                    "options": { "type": "object", "maxProperties": 10,
                                 "additionalProperties": { "type": "string", "maxLength": 50 } }
                }
            }
        }
    })
}

fn order(items: usize, note: &str) -> Value {
    let items: Vec<Value> = (0..items)
        .map(|i| {
            json!({ "sku": format!("ABC-{:06}", 1000 + i), "qty": 1 + i % 7,
                    "unit_price": 19.99 + i as f64, "options": { "color": "blue", "size": "M" } })
        })
        .collect();
    json!({
        "order_id": "ord_8f3a9c2b7d1e4f60",
        "customer": { "id": 4711, "email": "jane.doe@example.com", "name": "Jane Doe" },
        "items": items,
        "currency": "EUR",
        "note": note,
        "shipping": { "line1": "221B Baker Street", "line2": "Flat 2", "city": "London",
                      "postcode": "NW1 6XE", "country": "GB" },
        "coupon": null,
        "gift": false
    })
}

/// A 3-item order padded to exactly 615 bytes, and the smallest order of 10 KB or more.
fn bodies() -> (Vec<u8>, Vec<u8>) {
    let base = order(3, "").to_string().len();
    let small = order(3, &"x".repeat(615 - base)).to_string().into_bytes();
    let mut n = 1;
    let big = loop {
        let body = order(n, "Ring twice.").to_string().into_bytes();
        if body.len() >= 10 * 1024 {
            break body;
        }
        n += 1;
    };
    (small, big)
}

fn time(label: &str, iterations: u32, mut f: impl FnMut()) {
    if let Ok(only) = std::env::var("SCHEMA_BENCH_ONLY") {
        if !label.starts_with(&only) {
            return;
        }
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    f();
    COUNTING.store(false, Ordering::Relaxed);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    for _ in 0..iterations / 10 {
        f();
    }
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..iterations {
                f();
            }
            started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    println!(
        "{label:<48} best {:>8.2} µs   median {:>8.2} µs   {allocations:>5} allocations",
        rounds[0], rounds[2]
    );
}

fn main() {
    let cfg = json!({ "schema": schema() });
    let registry = SchemaRegistry::default();
    let policy = request_policy(&cfg, &registry).unwrap();
    let (small, big) = bodies();
    assert!(policy.validate(&small).is_ok());
    assert!(policy.validate(&big).is_ok());
    let mut bad: Value = serde_json::from_slice(&big).unwrap();
    bad["items"][3]["qty"] = json!(0);
    bad["items"][7]["sku"] = json!("nope");
    let bad = bad.to_string().into_bytes();
    assert!(policy.validate(&bad).is_err());

    println!(
        "schema_validate: {}, {} build",
        if cfg!(target_arch = "wasm32") {
            "wasm32"
        } else {
            "native"
        },
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    time("compile the order schema (configure time)", 200, || {
        black_box(request_policy(black_box(&cfg), &registry).unwrap());
    });
    for (name, body) in [("615 B", &small), ("10 KB", &big)] {
        let n = if body.len() < 1000 { 100_000 } else { 10_000 };
        let parsed: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(parse_body(body, policy.limits()).unwrap(), parsed);
        time(
            &format!("validate() {name} ({} bytes)", body.len()),
            n,
            || {
                black_box(policy.validate(black_box(body)).is_ok());
            },
        );
        time(&format!("  = parse_body {name}"), n, || {
            black_box(parse_body(black_box(body), policy.limits()).is_ok());
        });
        time(&format!("  + validate_value (boon) {name}"), n, || {
            black_box(policy.validate_value(black_box(&parsed)).is_ok());
        });
        time(&format!("  (floor: Value clone + drop {name})"), n, || {
            black_box(black_box(&parsed).clone());
        });
        time(
            &format!("  (reference: serde_json::from_slice {name})"),
            n,
            || {
                black_box(serde_json::from_slice::<Value>(black_box(body)).is_ok());
            },
        );
    }
    time(
        &format!("validate() 10 KB invalid, 2 errors ({} bytes)", bad.len()),
        10_000,
        || {
            black_box(policy.validate(black_box(&bad)).is_err());
        },
    );
}
