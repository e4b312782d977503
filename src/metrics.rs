//! Envoy stats: counters and gauges defined on first use and cached per worker.
//!
//! Names follow one scheme so that `stats_tags` can turn them into Prometheus
//! labels (see README, "Metrics"):
//! - `apiguard.route.<route>.decision.<decision>`: every request, `allowed` or the
//!   rejection reason;
//! - `apiguard.route.<route>.<area>.<counter>`: per-route detail (`quota`,
//!   `request`, `response`, `cloak`);
//! - `apiguard.provider.<provider>.<counter>`: provider detail (JWT, peer, API key);
//! - `apiguard.unmatched.<decision>`: requests that matched no route.
//!
//! Envoy prefixes Wasm-defined stats with `wasmcustom.` internally and strips it
//! again in the admin output, so Prometheus sees `apiguard_...`. The demo's
//! `stats_tags` (`envoy/envoy.yaml`) also make labels of the route, the provider, the
//! decision, and the reason or kind that ends a provider counter or a `request.`,
//! `response.withheld.`, `response.unmasked.` or `response.detect.` counter. No
//! counter totals what its per-reason siblings add up to, so each family sums by
//! label.
//!
//! Batching: a host call costs about as much as a whole no-op filter callback in
//! V8, so counts are added up per worker in Wasm memory and handed to Envoy by
//! [`flush`], which the root context calls every `metrics_flush_ms` (default 1 s).
//! With `metrics_flush_ms: 0` every count is added at once.

use crate::host::{self, MetricType};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// (family, scope, counter, metric id) of a counter named
/// `<family>.<scope>.<counter>` (`<family>.<counter>` when the scope is empty).
type ScopedMetric = (&'static str, Box<str>, Box<str>, u32);

thread_local! {
    static IDS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
    /// Counts not yet handed to Envoy: `(metric id, amount)`, one entry per id.
    static PENDING: RefCell<Vec<(u32, u64)>> = const { RefCell::new(Vec::new()) };
    /// Provider and unmatched counter ids: a handful per provider.
    static SCOPED_IDS: RefCell<Vec<ScopedMetric>> = const { RefCell::new(Vec::new()) };
    /// Whether counts are batched (set from the policy by the root context).
    static BATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Distinct counters held between flushes before they are flushed at once (a
/// bound on memory; a worker normally touches a few dozen).
const MAX_PENDING: usize = 512;

/// Batch counts until [`flush`] (`true`), or add each at once (`false`).
pub fn set_batching(on: bool) {
    if !on {
        flush();
    }
    BATCHING.with(|b| b.set(on));
}

/// Hands every pending count to Envoy.
pub fn flush() {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    for (id, n) in pending {
        increment(id, n);
    }
}

fn increment(id: u32, n: u64) {
    host::increment_metric(id, n);
}

/// Counts `n` for counter `id`: at once, or at the next flush.
fn count(id: u32, n: u64) {
    if !BATCHING.with(Cell::get) {
        increment(id, n);
        return;
    }
    let full = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        match p.iter_mut().find(|(i, _)| *i == id) {
            Some((_, total)) => *total = total.saturating_add(n),
            None => p.push((id, n)),
        }
        p.len() >= MAX_PENDING
    });
    if full {
        flush();
    }
}

fn id(kind: MetricType, name: &str) -> Option<u32> {
    IDS.with(|ids| {
        if let Some(id) = ids.borrow().get(name) {
            return Some(*id);
        }
        let id = host::define_metric(kind, name)?;
        ids.borrow_mut().insert(name.to_string(), id);
        Some(id)
    })
}

/// Sets a gauge.
pub fn gauge(name: &str, value: u64) {
    if let Some(id) = id(MetricType::Gauge, name) {
        host::record_metric(id, value);
    }
}

/// One route's counters: `apiguard.route.<route>.<area>.<counter>`. Metric ids
/// are cached here, filled on first use, so a later request neither formats nor
/// hashes a metric name: a route uses a handful of counters, found by a short scan
/// (the first, usually `decision.allowed`, on nearly every request).
#[derive(Debug)]
pub struct RouteMetrics {
    route: String,
    ids: RefCell<Vec<(&'static str, Box<str>, u32)>>,
}

impl RouteMetrics {
    /// The counters of route `route`.
    pub fn new(route: &str) -> Self {
        RouteMetrics {
            route: route.to_string(),
            ids: RefCell::new(Vec::new()),
        }
    }

    /// `apiguard.route.<route>.decision.<decision>`: one per request.
    pub fn decision(&self, decision: &str) {
        self.count("decision", decision, 1);
    }

    /// Records `value` in the histogram `apiguard.route.<route>.<area>.<name>`
    /// (not batched: Envoy keeps the distribution).
    pub fn record(&self, area: &'static str, name: &str, value: u64) {
        if let Some(id) = self.id(MetricType::Histogram, area, name) {
            host::record_metric(id, value);
        }
    }

    /// Adds `n` to `apiguard.route.<route>.<area>.<counter>`.
    pub fn count(&self, area: &'static str, counter: &str, n: u64) {
        if let Some(id) = self.id(MetricType::Counter, area, counter) {
            count(id, n);
        }
    }

    fn id(&self, kind: MetricType, area: &'static str, counter: &str) -> Option<u32> {
        let cached = self
            .ids
            .borrow()
            .iter()
            .find(|(a, c, _)| *a == area && &**c == counter)
            .map(|(_, _, id)| *id);
        if cached.is_some() {
            return cached;
        }
        let name = format!("apiguard.route.{}.{area}.{counter}", self.route);
        let id = id(kind, &name)?;
        self.ids.borrow_mut().push((area, counter.into(), id));
        Some(id)
    }
}

/// `apiguard.provider.<provider>.<counter>`.
pub fn provider_counter(provider: &str, counter: &str) {
    scoped_counter("apiguard.provider", provider, counter);
}

/// `apiguard.blocking.<rule>.<counter>`.
pub fn blocking_counter(rule: &str, counter: &str) {
    scoped_counter("apiguard.blocking", rule, counter);
}

/// `apiguard.unmatched.<decision>`: a request that matched no route.
pub fn unmatched(decision: &str) {
    scoped_counter("apiguard.unmatched", "", decision);
}

/// Adds one to `<family>.<scope>.<counter>`. Ids are remembered per worker by
/// (family, scope, counter), so a request neither formats nor hashes the name.
fn scoped_counter(family: &'static str, scope: &str, counter: &str) {
    let cached = SCOPED_IDS.with(|ids| {
        ids.borrow()
            .iter()
            .find(|(f, s, c, _)| *f == family && &**s == scope && &**c == counter)
            .map(|(_, _, _, id)| *id)
    });
    let id = match cached {
        Some(id) => id,
        None => {
            let name = if scope.is_empty() {
                format!("{family}.{counter}")
            } else {
                format!("{family}.{scope}.{counter}")
            };
            let Some(id) = id(MetricType::Counter, &name) else {
                return;
            };
            SCOPED_IDS.with(|ids| {
                ids.borrow_mut()
                    .push((family, scope.into(), counter.into(), id));
            });
            id
        }
    };
    count(id, 1);
}
