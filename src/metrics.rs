//! Envoy stats: counters and gauges defined on first use and cached per worker.
//!
//! Names follow one scheme so that `stats_tags` can turn them into Prometheus
//! labels (see README, "Metrics"):
//! - `apiguard.route.<route>.decision.<decision>`: every request, `allowed` or the
//!   rejection reason;
//! - `apiguard.route.<route>.<area>.<counter>`: per-route detail (`quota`,
//!   `request`, `response`);
//! - `apiguard.provider.<provider>.<counter>`: JWT provider detail;
//! - `apiguard.unmatched.<decision>`: requests that matched no route.
//!
//! Envoy prefixes Wasm-defined stats with `wasmcustom.` internally and strips it
//! again in the admin output, so Prometheus sees `apiguard_...`.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    static IDS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

fn id(kind: MetricType, name: &str) -> Option<u32> {
    IDS.with(|ids| {
        if let Some(id) = ids.borrow().get(name) {
            return Some(*id);
        }
        match hostcalls::define_metric(kind, name) {
            Ok(id) => {
                ids.borrow_mut().insert(name.to_string(), id);
                Some(id)
            }
            Err(s) => {
                log::warn!("api-guard: defining metric {name} failed: {s:?}");
                None
            }
        }
    })
}

/// Adds `n` to a counter.
pub fn add(name: &str, n: u64) {
    if let Some(id) = id(MetricType::Counter, name) {
        let _ = hostcalls::increment_metric(id, n as i64);
    }
}

/// Adds one to a counter.
pub fn inc(name: &str) {
    add(name, 1);
}

/// Sets a gauge.
pub fn gauge(name: &str, value: u64) {
    if let Some(id) = id(MetricType::Gauge, name) {
        let _ = hostcalls::record_metric(id, value);
    }
}

/// `apiguard.route.<route>.decision.<decision>`.
pub fn route_decision(route: &str, decision: &str) {
    inc(&format!("apiguard.route.{route}.decision.{decision}"));
}

/// `apiguard.route.<route>.<area>.<counter>`.
pub fn route_counter(route: &str, area: &str, counter: &str, n: u64) {
    add(&format!("apiguard.route.{route}.{area}.{counter}"), n);
}

/// `apiguard.provider.<provider>.<counter>`.
pub fn provider_counter(provider: &str, counter: &str) {
    inc(&format!("apiguard.provider.{provider}.{counter}"));
}
