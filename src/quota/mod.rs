//! Per-route quotas over proxy-wasm shared data: the pure core (no host calls).
//!
//! The filter glue derives a [`CallerKey`] for the request with
//! [`QuotaPolicy::caller_key`] and asks [`QuotaPolicy::check`] for a decision against a
//! [`SharedStore`] (the real one wraps `proxy_wasm::hostcalls::{get,set}_shared_data`;
//! [`MemoryStore`] is the in-process fake for tests and benchmarks). Time is passed
//! in (`now_ms`), so every rule here is tested with an injected clock.
//!
//! # Algorithm: GCRA (a token bucket stored as one timestamp)
//!
//! A key may send `limit` requests at once (burst), then one more every
//! `window_seconds / limit`; after `window_seconds` idle the full burst is back. The
//! state is the *theoretical arrival time* (TAT): the instant at which the bucket will
//! be full again. A request at `now` is admitted iff `max(TAT, now) + T - now <= W`
//! (`T` = cost of one request = `W / limit`, `W` = the window), and then TAT becomes
//! `max(TAT, now) + T`. Why GCRA rather than a sliding window:
//! - one number per key, updated with a single compare-and-swap: cheap and exact
//!   under concurrency; a sliding *log* needs `limit` timestamps per key, and a
//!   sliding-window *counter* is an approximation that can overshoot;
//! - no boundary effect: unlike a fixed window, no instant lets `2 × limit` through;
//!   after a burst of `limit`, capacity returns at the steady rate only;
//! - rejected requests write nothing, so a flood of rejected requests costs one
//!   shared-data read each and causes no CAS contention.
//!
//! Bound, stated exactly: in any interval of length `d`, a key gets at most
//! `limit + floor(d * limit / W)` requests (burst plus refill); a burst is never more
//! than `limit`.
//!
//! Arithmetic is integer-only and exact: time is counted in units of `1/limit` ms, so
//! `T = W_ms` units and the capacity is `W_ms * limit` units (in `u128`), with no
//! rounding drift however long a caller keeps pace with the refill rate. Values sent
//! to clients are rounded *up* to whole seconds (`retry_after_seconds >= 1`).
//!
//! # Storage: a fixed slot table per route (bounded keys)
//!
//! Shared data has no delete, so a route owns exactly `max_keys_per_route` possible
//! keys, `apiguard.q.<route>.<slot>` (one key, slot 0, for `by: route`), created on
//! first use. The slot is `SipHash-2-4(key_salt; route, key kind, key value)`
//! reduced to `0..N` (multiply-shift), N = `max_keys_per_route`: the
//! key names and values never contain a raw IP, claim or header value, and with a
//! `key_salt` the stored fingerprints cannot be reversed by a dictionary either.
//! A slot value is 21 bytes: version `1`, the 64-bit fingerprint of the slot's
//! owner, and the TAT (`u64` ms + `u32` fraction in `1/limit` ms), little-endian.
//!
//! # Eviction rule: there is none that can reset a bucket
//!
//! A caller always maps to the same slot, and every slot is one exact GCRA bucket.
//! When a caller finds its slot owned by another caller (a hash collision):
//! - if that bucket has fully refilled (TAT <= now), the caller takes the slot over.
//!   A full bucket is indistinguishable from a fresh one, so neither the newcomer nor
//!   the former owner gains or loses anything by the takeover;
//! - otherwise the caller *shares* the bucket: its requests draw from, and are
//!   refused by, the same state as the owner's (stricter for both, never looser).
//!   This is reported as [`QuotaCheck::collision`] so the operator can size
//!   `max_keys_per_route` (expected share of colliding callers is roughly
//!   active callers / `max_keys_per_route`; give it 10–20× the callers active within
//!   one window).
//!
//! So no sequence of requests, from any number of callers, ever moves a bucket to a
//! state with more capacity than its own refill gives it: an evicted or colliding
//! caller gets *at most* what it would have had alone, and no caller can force a reset
//! of another's bucket. Probing for a free neighbour slot was rejected: a caller that
//! moves between slots can leave its debt behind (a free reset).
//!
//! A slot value that does not decode (other version, truncated, foreign writer) is
//! never free capacity: it is replaced, under CAS, by an *exhausted* bucket owned by
//! the caller (full penalty: one request comes back after `T`), and the request is
//! refused ([`QuotaCheck::repaired`]). If `limit` or `window_seconds` change on a
//! config reload, the stored TAT is kept (a debt in time, capped at one window), so a
//! reload is not a reset either.
//!
//! # Concurrency
//!
//! Each check is read → decide → `set` with the CAS token of the read; on
//! `CasMismatch` it starts over, at most `max_cas_retries` times, then reports
//! [`StoreError::CasMismatch`]. Creating a missing slot needs care: Envoy's `set`
//! with no CAS token overwrites unconditionally, so two workers creating the same key
//! would lose one admission. Instead the slot is created by `set` with the CAS token
//! of another key ([`ANCHOR_KEY`]): proxy-wasm-cpp-host's `SharedData::set` ignores
//! the token for a missing key (so the creation succeeds) but compares it for an
//! existing key, and tokens come from one process-wide counter, so a token of the
//! anchor never matches a slot's: if another worker created the slot first, the
//! creation fails with `CasMismatch` and is retried. Creation is thus exact too.
//!
//! # Caller keys
//!
//! `by` is `ip`, `route`, `claim:<name>` or `header:<name>`. A request without the
//! value (no such claim, e.g. under `auth.allow_missing`; no such header; no IP
//! address, e.g. a Unix socket) is counted in one shared *anonymous* bucket of the
//! route: never unlimited, never mixed with a named
//! caller's bucket except through an ordinary collision. `header:` keys are only as
//! trustworthy as the header: a client that sets the header itself can rotate values
//! (use it for headers set by a trusted hop). For `ip`, see [`client_ip`].

mod global;
mod key;
pub mod rls;
mod slot;
mod store;

pub use global::{
    closest_headers, closest_of, GlobalAsk, LocalOutcome, RateLimitService, RouteQuotas, Taken,
};
pub use key::{client_ip, CallerKey, KeyBy, KeyInputs};
pub use store::{MemoryStore, SharedStore, StoreError};

use crate::config::check::in_range;
use crate::config::{ConfigError, FailureMode, QuotaConfig, QuotaSettings};
use crate::reply::Rejection;
use key::{derive_hash_key, keyed_hash, parse_by, DEFAULT_HASH_KEY};
use slot::SlotState;
use std::fmt;

/// Prefix of every slot key: `apiguard.q.<route>.<slot>`.
pub const KEY_PREFIX: &str = "apiguard.q.";
/// Shared-data key whose CAS token is used to create missing slots exactly
/// (see the module docs). Its value is irrelevant.
pub const ANCHOR_KEY: &str = "apiguard.anchor";
/// Largest accepted `quota.limit`.
pub const MAX_LIMIT: u64 = 1_000_000_000;
/// Largest accepted `quota.window_seconds` (365 days).
pub const MAX_WINDOW_SECONDS: u64 = 365 * 24 * 3600;
/// Largest accepted `quota_settings.max_keys_per_route`.
pub const MAX_KEYS_PER_ROUTE: u32 = 1_000_000;
/// Largest accepted `quota_settings.max_cas_retries`.
pub const MAX_CAS_RETRIES: u32 = 1_000;
/// Shortest accepted `quota_settings.key_salt`.
pub const MIN_KEY_SALT_LEN: usize = 16;

/// Exact GCRA parameters, in units of `1/limit` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gcra {
    /// `limit`, as the number of units per millisecond.
    units_per_ms: u128,
    /// Cost of one request: `window_ms` units.
    cost: u128,
    /// Bucket size: `window_ms * limit` units.
    capacity: u128,
    /// `limit * 1000` units.
    units_per_second: u128,
}

/// A route's quota, compiled from `routes[].quota` at configure time.
#[derive(Clone, PartialEq, Eq)]
pub struct QuotaPolicy {
    route: String,
    key_prefix: String,
    limit: u64,
    window_seconds: u64,
    by: KeyBy,
    failure_mode: FailureMode,
    headers_on_success: bool,
    slots: u32,
    max_cas_retries: u32,
    hash_key: (u64, u64),
    gcra: Gcra,
}

impl QuotaPolicy {
    /// Validates and compiles `routes[N].quota` of route `route_name`. `path` is the
    /// config path of the quota object (`routes[1].quota`), used in error messages
    /// (`routes[1].quota.window_seconds: must be > 0`); errors in `settings` name
    /// `quota_settings.*`.
    pub(crate) fn compile(
        cfg: &QuotaConfig,
        settings: &QuotaSettings,
        route_name: &str,
        path: &str,
    ) -> Result<QuotaPolicy, ConfigError> {
        in_range(cfg.limit, 1, MAX_LIMIT, &format!("{path}.limit"))?;
        in_range(
            cfg.window_seconds,
            1,
            MAX_WINDOW_SECONDS,
            &format!("{path}.window_seconds"),
        )?;
        let by = parse_by(&cfg.by, &format!("{path}.by"))?;
        validate_settings(settings)?;

        let hash_key = match &settings.key_salt {
            Some(salt) => derive_hash_key(salt.as_bytes()),
            None => DEFAULT_HASH_KEY,
        };
        let slots = if by == KeyBy::Route {
            1
        } else {
            settings.max_keys_per_route
        };
        let units_per_ms = u128::from(cfg.limit);
        let window_ms = u128::from(cfg.window_seconds) * 1000;
        Ok(QuotaPolicy {
            route: route_name.to_string(),
            key_prefix: format!("{KEY_PREFIX}{route_name}."),
            limit: cfg.limit,
            window_seconds: cfg.window_seconds,
            by,
            failure_mode: cfg.failure_mode,
            headers_on_success: cfg.headers_on_success,
            slots,
            max_cas_retries: settings.max_cas_retries,
            hash_key,
            gcra: Gcra {
                units_per_ms,
                cost: window_ms,
                capacity: window_ms * units_per_ms,
                units_per_second: units_per_ms * 1000,
            },
        })
    }

    /// The same policy counting under `apiguard.q.<route_key>.<slot>`: the other
    /// entries of an array quota and the local fallback of a global one each
    /// have their own table, while the caller's key (and pseudonym) stays the
    /// route's.
    pub(crate) fn with_table(mut self, route_key: &str) -> QuotaPolicy {
        self.key_prefix = format!("{KEY_PREFIX}{route_key}.");
        self
    }

    /// The same policy with another `limit` (a tier), checked like `limit`;
    /// `path` names the field in errors.
    pub(crate) fn with_limit(&self, limit: u64, path: &str) -> Result<QuotaPolicy, ConfigError> {
        in_range(limit, 1, MAX_LIMIT, path)?;
        let mut p = self.clone();
        let units_per_ms = u128::from(limit);
        let window_ms = u128::from(self.window_seconds) * 1000;
        p.limit = limit;
        p.gcra = Gcra {
            units_per_ms,
            cost: window_ms,
            capacity: window_ms * units_per_ms,
            units_per_second: units_per_ms * 1000,
        };
        Ok(p)
    }

    /// Gives back the request [`QuotaPolicy::check`] admitted for `key`: the TAT
    /// moves back by one request's cost, so the bucket holds at most what it
    /// would have held had the request never been counted (never more). Used
    /// when another limit of the same request refuses it. Best effort: a store
    /// failure or a slot that no longer decodes leaves the count as it is (the
    /// stricter outcome).
    pub fn refund(&self, store: &mut dyn SharedStore, key: &CallerKey) {
        let slot_key = self.slot_key(key);
        for _ in 0..=self.max_cas_retries {
            let Ok((Some(bytes), Some(cas))) = store.get(&slot_key) else {
                return;
            };
            let Some(state) = SlotState::decode(&bytes) else {
                return;
            };
            let frac = u128::from(state.tat_frac).min(self.gcra.units_per_ms);
            let tat = u128::from(state.tat_ms) * self.gcra.units_per_ms + frac;
            let back = self.state_at(state.owner, tat.saturating_sub(self.gcra.cost));
            match store.set(&slot_key, &back.encode(), Some(cas)) {
                Err(StoreError::CasMismatch) => continue,
                _ => return,
            }
        }
    }

    /// Requests allowed per window (and the burst size).
    pub(crate) fn limit_value(&self) -> u64 {
        self.limit
    }

    /// Window length in seconds.
    pub(crate) fn window(&self) -> u64 {
        self.window_seconds
    }

    /// Whether admitted responses carry `RateLimit-*` headers.
    pub(crate) fn sends_headers(&self) -> bool {
        self.headers_on_success
    }

    /// Route name the policy belongs to.
    #[cfg(test)]
    pub(crate) fn route(&self) -> &str {
        &self.route
    }

    /// Requests allowed per window (and the burst size).
    #[cfg(test)]
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Window length in seconds.
    #[cfg(test)]
    pub(crate) fn window_seconds(&self) -> u64 {
        self.window_seconds
    }

    /// What the quota counts by.
    pub(crate) fn by(&self) -> &KeyBy {
        &self.by
    }

    /// What happens when the store fails.
    #[cfg(test)]
    pub(crate) fn failure_mode(&self) -> FailureMode {
        self.failure_mode
    }

    /// Whether admitted responses carry `RateLimit-*` headers.
    #[cfg(test)]
    pub(crate) fn headers_on_success(&self) -> bool {
        self.headers_on_success
    }

    /// Number of slots (shared-data keys) this route can ever use.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> u32 {
        self.slots
    }

    /// Shared-data key of `key`'s slot: `apiguard.q.<route>.<slot>`.
    pub fn slot_key(&self, key: &CallerKey) -> String {
        // `% slots` keeps a key made by another policy inside this table.
        with_decimal(&self.key_prefix, u64::from(key.slot % self.slots.max(1)))
    }

    /// A keyed hash of `bytes` under the quota salt (for values that must not be
    /// kept raw, such as the object ids a blocking rule counts).
    pub(crate) fn value_hash(&self, bytes: &[u8]) -> u64 {
        keyed_hash(self.hash_key, bytes)
    }

    /// Derives the caller's key from the request. A missing value (claim, header,
    /// address) gives the route's anonymous key (see the module docs).
    pub fn caller_key(&self, inputs: &KeyInputs<'_>) -> CallerKey {
        CallerKey::derive(&self.by, &self.route, self.hash_key, self.slots, inputs)
    }

    /// Counts one request of `key` at `now_ms` (Unix ms, or any monotonic ms clock
    /// shared by all workers) and decides. Exact under concurrent workers; see the
    /// module docs for the algorithm, the slot rule and the retry bound.
    pub fn check(&self, store: &mut dyn SharedStore, key: &CallerKey, now_ms: u64) -> QuotaCheck {
        let slot_key = self.slot_key(key);
        let now = u128::from(now_ms) * self.gcra.units_per_ms;
        let mut retries = 0u32;
        loop {
            match self.attempt(store, &slot_key, key, now) {
                Attempt::Done {
                    decision,
                    collision,
                    repaired,
                } => {
                    return QuotaCheck {
                        decision,
                        cas_retries: retries,
                        collision,
                        repaired,
                    }
                }
                Attempt::Conflict if retries < self.max_cas_retries => retries += 1,
                Attempt::Conflict => return QuotaCheck::error(StoreError::CasMismatch, retries),
                Attempt::Failed(e) => return QuotaCheck::error(e, retries),
            }
        }
    }

    /// One read → decide → CAS write round.
    fn attempt(
        &self,
        store: &mut dyn SharedStore,
        slot_key: &str,
        key: &CallerKey,
        now: u128,
    ) -> Attempt {
        let (value, cas) = match store.get(slot_key) {
            Ok(found) => found,
            Err(e) => return Attempt::Failed(e),
        };
        let Some(bytes) = value else {
            return self.create(store, slot_key, key, now);
        };
        // A value without a token cannot be updated safely.
        let Some(cas) = cas else {
            return Attempt::Failed(StoreError::Unavailable);
        };
        let Some(state) = SlotState::decode(&bytes) else {
            // Never free capacity: an exhausted bucket as of now.
            let penalty = self.state_at(key.fingerprint, now + self.gcra.capacity);
            return match store.set(slot_key, &penalty.encode(), Some(cas)) {
                Ok(()) => Attempt::Done {
                    decision: self.limited(self.gcra.capacity),
                    collision: false,
                    repaired: true,
                },
                Err(e) => Attempt::from_write_error(e),
            };
        };
        let debt = self.debt(&state, now);
        if debt > self.gcra.capacity {
            // More than one window ahead: the clock stepped back or a reload
            // shortened the window. Store "exhausted as of now", so the bucket
            // refills from here instead of staying shut for the excess.
            let capped = self.state_at(state.owner, now + self.gcra.capacity);
            return match store.set(slot_key, &capped.encode(), Some(cas)) {
                Ok(()) => Attempt::Done {
                    decision: self.limited(self.gcra.capacity),
                    collision: state.owner != key.fingerprint,
                    repaired: false,
                },
                Err(e) => Attempt::from_write_error(e),
            };
        }
        let collision = state.owner != key.fingerprint && debt > 0;
        let owner = if collision {
            state.owner
        } else {
            key.fingerprint
        };
        if debt + self.gcra.cost > self.gcra.capacity {
            // Refused requests write nothing.
            return Attempt::Done {
                decision: self.limited(debt),
                collision,
                repaired: false,
            };
        }
        let next = self.state_at(owner, now + debt + self.gcra.cost);
        match store.set(slot_key, &next.encode(), Some(cas)) {
            Ok(()) => Attempt::Done {
                decision: self.admitted(debt + self.gcra.cost),
                collision,
                repaired: false,
            },
            Err(e) => Attempt::from_write_error(e),
        }
    }

    /// Creates a missing slot with this request admitted, failing with a conflict if
    /// another worker created it first (see "Concurrency" in the module docs).
    fn create(
        &self,
        store: &mut dyn SharedStore,
        slot_key: &str,
        key: &CallerKey,
        now: u128,
    ) -> Attempt {
        let anchor = match anchor_cas(store) {
            Ok(cas) => cas,
            Err(e) => return Attempt::Failed(e),
        };
        let next = self.state_at(key.fingerprint, now + self.gcra.cost);
        match store.set(slot_key, &next.encode(), Some(anchor)) {
            Ok(()) => Attempt::Done {
                decision: self.admitted(self.gcra.cost),
                collision: false,
                repaired: false,
            },
            Err(e) => Attempt::from_write_error(e),
        }
    }

    /// Outstanding debt (units until the bucket is full) of `state` at `now`. More
    /// than the capacity only after a clock step back or a reload (see `attempt`).
    fn debt(&self, state: &SlotState, now: u128) -> u128 {
        // A fraction >= limit can only come from a reload that lowered `limit`:
        // round it up to the next ms (stricter, never looser).
        let frac = u128::from(state.tat_frac).min(self.gcra.units_per_ms);
        let tat = u128::from(state.tat_ms) * self.gcra.units_per_ms + frac;
        tat.saturating_sub(now)
    }

    /// The slot state with TAT `tat` (in units).
    fn state_at(&self, owner: u64, tat: u128) -> SlotState {
        let ms = tat / self.gcra.units_per_ms;
        SlotState {
            owner,
            tat_ms: u64::try_from(ms).unwrap_or(u64::MAX),
            // < limit <= MAX_LIMIT < u32::MAX
            tat_frac: (tat % self.gcra.units_per_ms) as u32,
        }
    }

    fn admitted(&self, debt_after: u128) -> QuotaDecision {
        let g = &self.gcra;
        QuotaDecision::Admitted {
            limit: self.limit,
            remaining: to_u64((g.capacity - debt_after) / g.cost),
            reset_seconds: to_u64(ceil_div(debt_after, g.units_per_second)).max(1),
        }
    }

    fn limited(&self, debt: u128) -> QuotaDecision {
        let g = &self.gcra;
        let wait = (debt + g.cost).saturating_sub(g.capacity);
        QuotaDecision::Limited {
            limit: self.limit,
            retry_after_seconds: to_u64(ceil_div(wait, g.units_per_second)).max(1),
            reset_seconds: to_u64(ceil_div(debt, g.units_per_second)).max(1),
        }
    }

    /// The rejection for `decision`, or `None` to let the request continue:
    /// [`Rejection::TooManyRequests`] when limited; on a store error
    /// [`Rejection::QuotaUnavailable`] under `failure_mode: closed`, `None` under
    /// `open` (the glue counts store errors either way).
    pub(crate) fn rejection(&self, decision: &QuotaDecision) -> Option<Rejection> {
        match decision {
            QuotaDecision::Admitted { .. } => None,
            QuotaDecision::Limited {
                limit,
                retry_after_seconds,
                reset_seconds,
            } => Some(Rejection::TooManyRequests {
                limit: *limit,
                retry_after: *retry_after_seconds,
                reset: *reset_seconds,
            }),
            QuotaDecision::StoreError(_) => match self.failure_mode {
                FailureMode::Closed | FailureMode::Local => Some(Rejection::QuotaUnavailable),
                FailureMode::Open => None,
            },
        }
    }

    /// `RateLimit-*` headers for an admitted response, if `headers_on_success` is
    /// set (rejections get theirs from [`Rejection::render`]).
    #[cfg(test)]
    pub(crate) fn success_headers(
        &self,
        decision: &QuotaDecision,
    ) -> Option<[(&'static str, String); 3]> {
        if self.headers_on_success {
            decision.rate_limit_headers()
        } else {
            None
        }
    }
}

impl fmt::Debug for QuotaPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash key is derived from the secret `key_salt`: not printed.
        f.debug_struct("QuotaPolicy")
            .field("route", &self.route)
            .field("limit", &self.limit)
            .field("window_seconds", &self.window_seconds)
            .field("by", &self.by)
            .field("failure_mode", &self.failure_mode)
            .field("headers_on_success", &self.headers_on_success)
            .field("slots", &self.slots)
            .field("max_cas_retries", &self.max_cas_retries)
            .finish_non_exhaustive()
    }
}

/// Checks `quota_settings`; errors name `quota_settings.<field>`.
fn validate_settings(settings: &QuotaSettings) -> Result<(), ConfigError> {
    in_range(
        settings.max_keys_per_route,
        1,
        MAX_KEYS_PER_ROUTE,
        "quota_settings.max_keys_per_route",
    )?;
    in_range(
        settings.max_cas_retries,
        0,
        MAX_CAS_RETRIES,
        "quota_settings.max_cas_retries",
    )?;
    if let Some(salt) = &settings.key_salt {
        if salt.len() < MIN_KEY_SALT_LEN {
            return Err(ConfigError::new(
                "quota_settings.key_salt",
                format!("must be at least {MIN_KEY_SALT_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

/// The quota's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaDecision {
    /// Counted and let through.
    Admitted {
        /// Configured limit (`RateLimit-Limit`).
        limit: u64,
        /// Requests that would pass right now (`RateLimit-Remaining`).
        remaining: u64,
        /// Seconds until the quota is full again, rounded up (`RateLimit-Reset`).
        reset_seconds: u64,
    },
    /// Refused; nothing was counted.
    Limited {
        /// Configured limit.
        limit: u64,
        /// Seconds until one request would pass, rounded up, >= 1 (`Retry-After`).
        retry_after_seconds: u64,
        /// Seconds until the quota is full again, rounded up (`RateLimit-Reset`).
        reset_seconds: u64,
    },
    /// The store failed or CAS retries ran out; `failure_mode` decides.
    StoreError(StoreError),
}

impl QuotaDecision {
    /// Metric label: `admitted`, `limited` or `store_error`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            QuotaDecision::Admitted { .. } => "admitted",
            QuotaDecision::Limited { .. } => "limited",
            QuotaDecision::StoreError(_) => "store_error",
        }
    }

    /// `ratelimit-limit`, `ratelimit-remaining`, `ratelimit-reset` (lowercase names,
    /// draft-ietf-httpapi-ratelimit-headers) for an admitted request; `None` otherwise.
    pub(crate) fn rate_limit_headers(&self) -> Option<[(&'static str, String); 3]> {
        match self {
            QuotaDecision::Admitted {
                limit,
                remaining,
                reset_seconds,
            } => Some([
                ("ratelimit-limit", with_decimal("", *limit)),
                ("ratelimit-remaining", with_decimal("", *remaining)),
                ("ratelimit-reset", with_decimal("", *reset_seconds)),
            ]),
            _ => None,
        }
    }
}

/// Result of [`QuotaPolicy::check`]: the decision and what it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaCheck {
    /// The decision.
    pub decision: QuotaDecision,
    /// CAS conflicts retried (the `cas_retries` metric).
    pub cas_retries: u32,
    /// The slot belonged to another caller whose bucket was in use, so the two
    /// share it (a metric for sizing `max_keys_per_route`).
    pub collision: bool,
    /// The slot held an undecodable value and was reset to an exhausted bucket.
    pub repaired: bool,
}

impl QuotaCheck {
    fn error(e: StoreError, retries: u32) -> QuotaCheck {
        QuotaCheck {
            decision: QuotaDecision::StoreError(e),
            cas_retries: retries,
            collision: false,
            repaired: false,
        }
    }
}

/// Outcome of one CAS round.
enum Attempt {
    Done {
        decision: QuotaDecision,
        collision: bool,
        repaired: bool,
    },
    Conflict,
    Failed(StoreError),
}

impl Attempt {
    fn from_write_error(e: StoreError) -> Attempt {
        match e {
            StoreError::CasMismatch => Attempt::Conflict,
            StoreError::Unavailable => Attempt::Failed(e),
        }
    }
}

/// A CAS token of the anchor key, creating the key if needed (an unconditional
/// write is harmless there: only its token matters).
pub(crate) fn anchor_cas(store: &mut dyn SharedStore) -> Result<u32, StoreError> {
    if let (Some(_), Some(cas)) = store.get(ANCHOR_KEY)? {
        return Ok(cas);
    }
    store.set(ANCHOR_KEY, b"1", None)?;
    match store.get(ANCHOR_KEY)? {
        (Some(_), Some(cas)) => Ok(cas),
        _ => Err(StoreError::Unavailable),
    }
}

/// `prefix` followed by `n` in decimal. Shared-data keys and `RateLimit-*` values
/// are made on every counted request, and `format!` would bring the formatting
/// machinery into each request's code for a few digits.
pub(crate) fn with_decimal(prefix: &str, n: u64) -> String {
    let mut digits = [0u8; 20]; // u64::MAX has 20
    let mut start = digits.len();
    let mut rest = n;
    for slot in digits.iter_mut().rev() {
        // `rest % 10` is a digit, so the cast keeps it whole.
        *slot = b'0' + (rest % 10) as u8;
        start -= 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = digits.get(start..).unwrap_or_default();
    let mut out = String::with_capacity(prefix.len() + digits.len());
    out.push_str(prefix);
    out.extend(digits.iter().map(|&d| char::from(d)));
    out
}

fn ceil_div(a: u128, b: u128) -> u128 {
    a.div_ceil(b)
}

fn to_u64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
