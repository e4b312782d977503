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
//! route ([`CallerKey::is_anonymous`]): never unlimited, never mixed with a named
//! caller's bucket except through an ordinary collision. `header:` keys are only as
//! trustworthy as the header: a client that sets the header itself can rotate values
//! (use it for headers set by a trusted hop). For `ip`, see [`client_ip`].

use crate::authz::{lookup_claim, scalar_text, Claims};
use crate::config::{ConfigError, FailureMode, QuotaConfig, QuotaSettings};
use crate::reply::Rejection;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

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

/// Version byte of the slot value layout.
const SLOT_VERSION: u8 = 1;
/// Length of an encoded slot value: version, owner, TAT ms, TAT fraction.
const SLOT_LEN: usize = 1 + 8 + 8 + 4;
/// SipHash key used when no `key_salt` is configured (and to derive one from it).
const DEFAULT_HASH_KEY: (u64, u64) = (0x6170_692d_6775_6172, 0x642e_7175_6f74_612e);
/// Longest `by` value echoed back in a configuration error.
const MAX_ECHO: usize = 64;

// ---------------------------------------------------------------------------
// Store seam
// ---------------------------------------------------------------------------

/// Why a shared-data operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The CAS token no longer matches (another worker wrote the key); also what
    /// [`QuotaPolicy::check`] reports once its retries are exhausted.
    CasMismatch,
    /// Any other host failure.
    Unavailable,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CasMismatch => f.write_str("shared data CAS retries exhausted"),
            StoreError::Unavailable => f.write_str("shared data unavailable"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The shared-data operations the quota needs, mirroring proxy-wasm's
/// `get_shared_data` / `set_shared_data`.
///
/// Implementations must keep proxy-wasm-cpp-host's semantics, on which exact
/// counting relies: every successful `set` gives the key a new CAS token, unique
/// across all keys; `set` with `Some(cas)` fails with [`StoreError::CasMismatch`] if
/// the key exists with another token and *creates* the key if it is missing; `set`
/// with `None` writes unconditionally.
pub trait SharedStore {
    /// The value and CAS token of `key`; `(None, None)` if the key does not exist.
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError>;
    /// Writes `value`, conditionally on `cas` (see the trait docs).
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

// ---------------------------------------------------------------------------
// Compiled policy
// ---------------------------------------------------------------------------

/// What a quota counts by (`quota.by`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBy {
    /// The client address ([`client_ip`]).
    Ip,
    /// One bucket for the whole route.
    Route,
    /// A verified claim (dotted names reach nested objects).
    Claim(String),
    /// A request header, name lowercased.
    Header(String),
}

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
    pub fn compile(
        cfg: &QuotaConfig,
        settings: &QuotaSettings,
        route_name: &str,
        path: &str,
    ) -> Result<QuotaPolicy, ConfigError> {
        if cfg.limit == 0 {
            return Err(ConfigError::new(format!("{path}.limit"), "must be > 0"));
        }
        if cfg.limit > MAX_LIMIT {
            return Err(ConfigError::new(
                format!("{path}.limit"),
                format!("must be <= {MAX_LIMIT}"),
            ));
        }
        if cfg.window_seconds == 0 {
            return Err(ConfigError::new(
                format!("{path}.window_seconds"),
                "must be > 0",
            ));
        }
        if cfg.window_seconds > MAX_WINDOW_SECONDS {
            return Err(ConfigError::new(
                format!("{path}.window_seconds"),
                format!("must be <= {MAX_WINDOW_SECONDS} (365 days)"),
            ));
        }
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

    /// Route name the policy belongs to.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Requests allowed per window (and the burst size).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Window length in seconds.
    pub fn window_seconds(&self) -> u64 {
        self.window_seconds
    }

    /// What the quota counts by.
    pub fn by(&self) -> &KeyBy {
        &self.by
    }

    /// What happens when the store fails.
    pub fn failure_mode(&self) -> FailureMode {
        self.failure_mode
    }

    /// Whether admitted responses carry `RateLimit-*` headers.
    pub fn headers_on_success(&self) -> bool {
        self.headers_on_success
    }

    /// Number of slots (shared-data keys) this route can ever use.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Shared-data key of `key`'s slot: `apiguard.q.<route>.<slot>`.
    pub fn slot_key(&self, key: &CallerKey) -> String {
        // `% slots` keeps a key made by another policy inside this table.
        format!("{}{}", self.key_prefix, key.slot % self.slots.max(1))
    }

    // -----------------------------------------------------------------------
    // Keys
    // -----------------------------------------------------------------------

    /// Derives the caller's key from the request. A missing value (claim, header,
    /// address) gives the route's anonymous key (see the module docs).
    pub fn caller_key(&self, inputs: &KeyInputs<'_>) -> CallerKey {
        let mut h = SipHasher24::new(self.hash_key.0, self.hash_key.1);
        write_field(&mut h, self.route.as_bytes());
        let found = match &self.by {
            KeyBy::Route => {
                h.write(&[KIND_ROUTE]);
                true
            }
            KeyBy::Ip => match inputs.client_ip.and_then(parse_ip) {
                Some(ip) => {
                    h.write(&[KIND_IP]);
                    match ip {
                        IpAddr::V4(v4) => h.write(&v4.octets()),
                        IpAddr::V6(v6) => h.write(&v6.octets()),
                    }
                    true
                }
                None => false,
            },
            KeyBy::Claim(name) => match inputs.claims.and_then(|c| lookup_claim(c, name)) {
                Some(value) => {
                    match scalar_text(value) {
                        Some(text) => {
                            h.write(&[KIND_CLAIM]);
                            h.write(text.as_bytes());
                        }
                        // Arrays and objects: their canonical JSON text (serde_json
                        // maps are sorted), tagged apart from strings.
                        None => {
                            h.write(&[KIND_CLAIM_JSON]);
                            h.write(value.to_string().as_bytes());
                        }
                    }
                    true
                }
                None => false,
            },
            KeyBy::Header(name) => match (inputs.header)(name) {
                Some(value) => {
                    h.write(&[KIND_HEADER]);
                    h.write(value.as_bytes());
                    true
                }
                None => false,
            },
        };
        if !found {
            h.write(&[KIND_ANONYMOUS]);
        }
        let hash = h.finish();
        // Multiply-shift maps the hash onto 0..slots without modulo bias.
        let slot = ((u128::from(hash) * u128::from(self.slots.max(1))) >> 64) as u32;
        CallerKey {
            slot,
            fingerprint: hash,
            anonymous: !found,
        }
    }

    // -----------------------------------------------------------------------
    // Decision
    // -----------------------------------------------------------------------

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

    // -----------------------------------------------------------------------
    // Mapping to the reply
    // -----------------------------------------------------------------------

    /// The rejection for `decision`, or `None` to let the request continue:
    /// [`Rejection::TooManyRequests`] when limited; on a store error
    /// [`Rejection::QuotaUnavailable`] under `failure_mode: closed`, `None` under
    /// `open` (the glue counts store errors either way).
    pub fn rejection(&self, decision: &QuotaDecision) -> Option<Rejection> {
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
                FailureMode::Closed => Some(Rejection::QuotaUnavailable),
                FailureMode::Open => None,
            },
        }
    }

    /// `RateLimit-*` headers for an admitted response, if `headers_on_success` is
    /// set (rejections get theirs from [`Rejection::render`]).
    pub fn success_headers(&self, decision: &QuotaDecision) -> Option<[(&'static str, String); 3]> {
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
    let path = "quota_settings";
    if settings.max_keys_per_route == 0 {
        return Err(ConfigError::new(
            format!("{path}.max_keys_per_route"),
            "must be > 0",
        ));
    }
    if settings.max_keys_per_route > MAX_KEYS_PER_ROUTE {
        return Err(ConfigError::new(
            format!("{path}.max_keys_per_route"),
            format!("must be <= {MAX_KEYS_PER_ROUTE}"),
        ));
    }
    if settings.max_cas_retries > MAX_CAS_RETRIES {
        return Err(ConfigError::new(
            format!("{path}.max_cas_retries"),
            format!("must be <= {MAX_CAS_RETRIES}"),
        ));
    }
    if let Some(salt) = &settings.key_salt {
        if salt.len() < MIN_KEY_SALT_LEN {
            return Err(ConfigError::new(
                format!("{path}.key_salt"),
                format!("must be at least {MIN_KEY_SALT_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

/// Parses `quota.by`; `path` is the field path for errors.
fn parse_by(by: &str, path: &str) -> Result<KeyBy, ConfigError> {
    let bad = |why: &str| {
        let shown: String = by.chars().take(MAX_ECHO).collect();
        ConfigError::new(path, format!("{why}, got `{shown}`"))
    };
    match by {
        "ip" => Ok(KeyBy::Ip),
        "route" => Ok(KeyBy::Route),
        _ => {
            if let Some(name) = by.strip_prefix("claim:") {
                if name.is_empty() || name.trim() != name {
                    return Err(bad("expected a claim name after `claim:`"));
                }
                Ok(KeyBy::Claim(name.to_string()))
            } else if let Some(name) = by.strip_prefix("header:") {
                if name.is_empty() || !name.bytes().all(is_tchar) {
                    return Err(bad(
                        "expected a header name (RFC 9110 token) after `header:`",
                    ));
                }
                Ok(KeyBy::Header(name.to_ascii_lowercase()))
            } else {
                Err(bad(
                    "expected `ip`, `route`, `claim:<name>` or `header:<name>`",
                ))
            }
        }
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

const KIND_ANONYMOUS: u8 = 0;
const KIND_IP: u8 = 1;
const KIND_ROUTE: u8 = 2;
const KIND_CLAIM: u8 = 3;
const KIND_CLAIM_JSON: u8 = 4;
const KIND_HEADER: u8 = 5;

/// What [`QuotaPolicy::caller_key`] may look at, gathered by the glue.
pub struct KeyInputs<'a> {
    /// The client address, as returned by [`client_ip`] (an `ip:port` form is
    /// accepted too; the port is ignored).
    pub client_ip: Option<&'a str>,
    /// Verified claims, if the request carried a valid token.
    pub claims: Option<&'a Claims>,
    /// Request header lookup by lowercase name (first value, or all values joined
    /// by `,`). Called only for `by: header:<name>`.
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

impl fmt::Debug for KeyInputs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never prints claim values.
        f.debug_struct("KeyInputs")
            .field("client_ip", &self.client_ip)
            .field("claims", &self.claims.map(|c| c.len()))
            .finish_non_exhaustive()
    }
}

/// A caller's identity for one route's quota: its slot and fingerprint (a keyed
/// hash; the raw value is not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallerKey {
    slot: u32,
    fingerprint: u64,
    anonymous: bool,
}

impl CallerKey {
    /// Slot index in the route's table.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// 64-bit keyed hash identifying the caller within the route.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// True if the request had no value for `by` and counts in the route's
    /// anonymous bucket.
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }
}

/// The client address for `by: ip`, canonical (`1.2.3.4`, `2001:db8::1`;
/// IPv4-mapped IPv6 as IPv4), or `None` if there is none (then the request is
/// counted as anonymous).
///
/// `source_address` is Envoy's `source.address` attribute (`127.0.0.1:54321`,
/// `[::1]:5432`). With `trusted_hops == 0` (default) it is the answer and
/// `X-Forwarded-For` is ignored. With `N` trusted hops, the answer is the `N`th
/// entry from the right of `xff` (all `X-Forwarded-For` lines joined by `,` in
/// order): the entries to its right were appended by the trusted proxies, and it was
/// appended by the farthest one, so the client cannot choose it. If Envoy itself
/// appends to `X-Forwarded-For` (`use_remote_address: true`), that append is one of
/// the `N`. If the header has fewer than `N` entries (the request bypassed a proxy)
/// or the `N`th is not an address, the answer falls back to `source_address`:
/// never to an entry the client wrote.
pub fn client_ip(
    source_address: Option<&str>,
    xff: Option<&str>,
    trusted_hops: u32,
) -> Option<String> {
    let from_xff = match (trusted_hops, xff) {
        (0, _) | (_, None) => None,
        (n, Some(xff)) => xff.rsplit(',').nth(n as usize - 1).and_then(parse_ip),
    };
    from_xff
        .or_else(|| source_address.and_then(parse_ip))
        .map(|ip| ip.to_string())
}

/// Parses `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]` or `[::1]:80`; canonical form.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let ip = if let Ok(sa) = text.parse::<SocketAddr>() {
        sa.ip()
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else {
        text.strip_prefix('[')?
            .strip_suffix(']')?
            .parse::<IpAddr>()
            .ok()?
    };
    Some(ip.to_canonical())
}

// ---------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------

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
    pub fn label(&self) -> &'static str {
        match self {
            QuotaDecision::Admitted { .. } => "admitted",
            QuotaDecision::Limited { .. } => "limited",
            QuotaDecision::StoreError(_) => "store_error",
        }
    }

    /// `ratelimit-limit`, `ratelimit-remaining`, `ratelimit-reset` (lowercase names,
    /// draft-ietf-httpapi-ratelimit-headers) for an admitted request; `None` otherwise.
    pub fn rate_limit_headers(&self) -> Option<[(&'static str, String); 3]> {
        match self {
            QuotaDecision::Admitted {
                limit,
                remaining,
                reset_seconds,
            } => Some([
                ("ratelimit-limit", limit.to_string()),
                ("ratelimit-remaining", remaining.to_string()),
                ("ratelimit-reset", reset_seconds.to_string()),
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
fn anchor_cas(store: &mut dyn SharedStore) -> Result<u32, StoreError> {
    if let (Some(_), Some(cas)) = store.get(ANCHOR_KEY)? {
        return Ok(cas);
    }
    store.set(ANCHOR_KEY, b"1", None)?;
    match store.get(ANCHOR_KEY)? {
        (Some(_), Some(cas)) => Ok(cas),
        _ => Err(StoreError::Unavailable),
    }
}

fn ceil_div(a: u128, b: u128) -> u128 {
    a.div_ceil(b)
}

fn to_u64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------
// Slot values
// ---------------------------------------------------------------------------

/// Decoded slot value (layout version 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotState {
    /// Fingerprint of the caller the slot belongs to.
    owner: u64,
    /// TAT, whole milliseconds.
    tat_ms: u64,
    /// TAT, fraction of a millisecond in `1/limit` units.
    tat_frac: u32,
}

impl SlotState {
    fn encode(&self) -> [u8; SLOT_LEN] {
        let mut out = [0u8; SLOT_LEN];
        out[0] = SLOT_VERSION;
        out[1..9].copy_from_slice(&self.owner.to_le_bytes());
        out[9..17].copy_from_slice(&self.tat_ms.to_le_bytes());
        out[17..21].copy_from_slice(&self.tat_frac.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<SlotState> {
        let b: &[u8; SLOT_LEN] = bytes.try_into().ok()?;
        if b[0] != SLOT_VERSION {
            return None;
        }
        Some(SlotState {
            owner: u64::from_le_bytes([b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]]),
            tat_ms: u64::from_le_bytes([b[9], b[10], b[11], b[12], b[13], b[14], b[15], b[16]]),
            tat_frac: u32::from_le_bytes([b[17], b[18], b[19], b[20]]),
        })
    }
}

// ---------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------

/// Hashes a length-prefixed field, so `("ab", "c")` and `("a", "bc")` differ.
fn write_field(h: &mut SipHasher24, bytes: &[u8]) {
    h.write(&(bytes.len() as u64).to_le_bytes());
    h.write(bytes);
}

/// The 128-bit SipHash key derived from `quota_settings.key_salt`.
fn derive_hash_key(salt: &[u8]) -> (u64, u64) {
    let half = |label: u8| {
        let mut h = SipHasher24::new(DEFAULT_HASH_KEY.0, DEFAULT_HASH_KEY.1);
        h.write(&[label]);
        h.write(salt);
        h.finish()
    };
    (half(0), half(1))
}

/// SipHash-2-4 (Aumasson & Bernstein), written out so the slot of a caller is the
/// same in every worker and across Rust versions (std's hasher promises neither).
#[derive(Debug, Clone)]
struct SipHasher24 {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
    tail: u64,
    ntail: u32,
    length: u64,
}

impl SipHasher24 {
    fn new(k0: u64, k1: u64) -> Self {
        SipHasher24 {
            v0: k0 ^ 0x736f_6d65_7073_6575,
            v1: k1 ^ 0x646f_7261_6e64_6f6d,
            v2: k0 ^ 0x6c79_6765_6e65_7261,
            v3: k1 ^ 0x7465_6462_7974_6573,
            tail: 0,
            ntail: 0,
            length: 0,
        }
    }

    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    fn compress(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.round();
        self.v0 ^= m;
    }

    fn write(&mut self, bytes: &[u8]) {
        self.length = self.length.wrapping_add(bytes.len() as u64);
        let mut rest = bytes;
        // Fill a pending partial word first.
        while self.ntail != 0 {
            let Some((&b, more)) = rest.split_first() else {
                return;
            };
            self.push_byte(b);
            rest = more;
        }
        let mut words = rest.chunks_exact(8);
        for w in &mut words {
            let m = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            self.compress(m);
        }
        for &b in words.remainder() {
            self.push_byte(b);
        }
    }

    fn push_byte(&mut self, b: u8) {
        self.tail |= u64::from(b) << (8 * self.ntail);
        self.ntail += 1;
        if self.ntail == 8 {
            let m = self.tail;
            self.compress(m);
            self.tail = 0;
            self.ntail = 0;
        }
    }

    fn finish(mut self) -> u64 {
        let last = ((self.length & 0xff) << 56) | self.tail;
        self.compress(last);
        self.v2 ^= 0xff;
        for _ in 0..4 {
            self.round();
        }
        self.v0 ^ self.v1 ^ self.v2 ^ self.v3
    }
}

// ---------------------------------------------------------------------------
// In-memory store
// ---------------------------------------------------------------------------

/// Hook run by [`MemoryStore`] just before a `set` reaches the map: it sees the store
/// and the key being written, and may write to the store (a concurrent worker).
pub type BeforeSetHook = Box<dyn FnMut(&mut MemoryStore, &str)>;

/// In-memory [`SharedStore`] with proxy-wasm-cpp-host's semantics (one CAS counter
/// for all keys, `set` with a token creates a missing key), for unit tests and
/// benchmarks. It can fail on demand and run a hook between a read and the
/// following write, to simulate other workers interleaving.
pub struct MemoryStore {
    entries: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    unavailable: bool,
    before_set: Option<BeforeSetHook>,
    sets: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.entries.len())
            .field("unavailable", &self.unavailable)
            .field("sets", &self.sets)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            entries: HashMap::new(),
            next_cas: 1,
            unavailable: false,
            before_set: None,
            sets: 0,
        }
    }

    /// Makes every following operation fail with [`StoreError::Unavailable`] (or
    /// work again).
    pub fn set_unavailable(&mut self, unavailable: bool) {
        self.unavailable = unavailable;
    }

    /// Installs (or removes) the hook run before each `set`. The hook is not run
    /// for writes made from inside itself.
    pub fn set_before_set(&mut self, hook: Option<BeforeSetHook>) {
        self.before_set = hook;
    }

    /// Writes raw bytes unconditionally (e.g. a corrupt value), bypassing the hook.
    pub fn put_raw(&mut self, key: &str, value: &[u8]) {
        let cas = self.next_cas();
        self.entries.insert(key.to_string(), (value.to_vec(), cas));
    }

    /// The stored bytes of `key`, if any.
    pub fn raw(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(|(v, _)| v.as_slice())
    }

    /// Number of keys in the store.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of `set` calls that reached the map (successful or not).
    pub fn set_calls(&self) -> u64 {
        self.sets
    }

    fn next_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(1);
        if self.next_cas == 0 {
            self.next_cas = 1; // 0 means "no CAS" in the ABI
        }
        cas
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        if self.unavailable {
            return Err(StoreError::Unavailable);
        }
        Ok(match self.entries.get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        if let Some(mut hook) = self.before_set.take() {
            hook(self, key);
            if self.before_set.is_none() {
                self.before_set = Some(hook);
            }
        }
        if self.unavailable {
            return Err(StoreError::Unavailable);
        }
        self.sets += 1;
        if let (Some(expected), Some((_, current))) = (cas, self.entries.get(key)) {
            if expected != 0 && expected != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        let next = self.next_cas();
        self.entries.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
