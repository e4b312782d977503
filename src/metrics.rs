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

use crate::policy::Route;
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
pub fn route_decision(route: &Route, decision: &str) {
    route_counter(route, "decision", decision, 1);
}

/// Adds `n` to `apiguard.route.<route>.<area>.<counter>`. The metric id is cached
/// in the route, so only the first use formats the name.
pub fn route_counter(route: &Route, area: &'static str, counter: &str, n: u64) {
    let cached = route
        .metric_ids
        .borrow()
        .get(area)
        .and_then(|by_counter| by_counter.get(counter))
        .copied();
    let id = match cached {
        Some(id) => id,
        None => {
            let name = format!("apiguard.route.{}.{area}.{counter}", route.name);
            let Some(id) = id(MetricType::Counter, &name) else {
                return;
            };
            route
                .metric_ids
                .borrow_mut()
                .entry(area)
                .or_default()
                .insert(counter.to_string(), id);
            id
        }
    };
    let _ = hostcalls::increment_metric(id, n as i64);
}

/// `apiguard.provider.<provider>.<counter>`.
pub fn provider_counter(provider: &str, counter: &str) {
    inc(&format!("apiguard.provider.{provider}.{counter}"));
}
