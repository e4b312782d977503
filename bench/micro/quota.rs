//! Micro-benchmark of the quota path against the in-memory store (not a test).
//!
//! Run with `cargo bench --bench quota`. Reports ns per operation for: deriving a
//! caller key, an admitted check (owner hit, one read + one CAS write), a limited
//! check (one read, no write), and a check on a fresh slot (creation via the anchor).
//! The host's shared-data calls cost more than a `HashMap` (a copy across the Wasm
//! boundary and a process-wide mutex), so these figures are the core's own cost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use api_guard::api::{quota_policy, CallerKey, KeyInputs, MemoryStore, QuotaPolicy};
use serde_json::json;
use std::hint::black_box;
use std::time::Instant;

fn policy(limit: u64, by: &str) -> QuotaPolicy {
    quota_policy(
        &json!({ "limit": limit, "window_seconds": 60, "by": by }),
        "bench-route",
    )
    .expect("valid config")
}

fn keys(p: &QuotaPolicy, n: usize) -> Vec<CallerKey> {
    (0..n)
        .map(|i| {
            let value = format!("caller-{i}");
            let lookup = move |_: &str| Some(value.clone());
            p.caller_key(&KeyInputs {
                client_ip: None,
                claims: None,
                header: &lookup,
            })
        })
        .collect()
}

fn report(name: &str, ops: u64, start: Instant) {
    let ns = start.elapsed().as_nanos() as f64 / ops as f64;
    println!("{name:<44} {ns:>8.1} ns/op  ({ops} ops)");
}

fn main() {
    const OPS: u64 = 2_000_000;
    let admit = policy(1_000_000_000, "header:x-api-key");
    let callers = keys(&admit, 1_000);

    // Key derivation (SipHash of route + header value).
    let value = "0123456789abcdef-api-key".to_string();
    let lookup = |_: &str| Some(value.clone());
    let inputs = KeyInputs {
        client_ip: None,
        claims: None,
        header: &lookup,
    };
    let start = Instant::now();
    for _ in 0..OPS {
        black_box(admit.caller_key(black_box(&inputs)));
    }
    report("caller_key (header)", OPS, start);

    // Admitted: 1,000 callers spread over the slot table, all admitted.
    let mut store = MemoryStore::new();
    for k in &callers {
        admit.check(&mut store, k, 0);
    }
    let start = Instant::now();
    for i in 0..OPS {
        let k = &callers[(i % 1_000) as usize];
        black_box(admit.check(&mut store, black_box(k), 1 + i / 1_000));
    }
    report("check: admitted (get + CAS set)", OPS, start);

    // Limited: an exhausted bucket; reads only.
    let limited = policy(10, "route");
    let key = keys(&limited, 1)[0];
    let mut store = MemoryStore::new();
    for _ in 0..10 {
        limited.check(&mut store, &key, 0);
    }
    let start = Instant::now();
    for i in 0..OPS {
        black_box(limited.check(&mut store, black_box(&key), i % 1_000));
    }
    report("check: limited (get only)", OPS, start);

    // Creation of fresh slots (first request of a caller in an unused slot).
    let fresh = policy(10, "header:x-api-key");
    let many = keys(&fresh, 10_000);
    let mut created = 0u64;
    let start = Instant::now();
    let mut store = MemoryStore::new();
    for k in &many {
        if store.raw(&fresh.slot_key(k)).is_none() {
            created += 1;
        }
        black_box(fresh.check(&mut store, black_box(k), 0));
    }
    report(
        "check: 10k callers, mostly slot creation",
        many.len() as u64,
        start,
    );
    println!(
        "slots created: {created}, keys in store: {}",
        store.key_count()
    );
}
