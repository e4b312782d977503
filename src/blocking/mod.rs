//! Automated blocking: rules that count a caller's events (authentication
//! failures, 404s on undeclared endpoints, distinct object ids, upstream statuses)
//! and, when a caller passes `max` within `window_seconds`, refuse every request of
//! that caller on any route for `block_seconds`. The pure core: shared data is a
//! [`SharedStore`], time is passed in.
//!
//! # Counting
//!
//! A rule counts with the quotas' machinery ([`QuotaPolicy`] with `limit = max`):
//! one exact GCRA bucket per caller in a fixed slot table, `apiguard.q.~b.<rule>.<n>`
//! (`~` cannot start a route name, so no route's table is ever shared), exact
//! under concurrent workers. `max` events pass; the event after them starts the
//! block. In any interval of length `d` a caller gets at most
//! `max + floor(d * max / window)` events before the block, as for quotas.
//!
//! `distinct_param` keeps, per caller, the set of distinct values of the path
//! parameter seen since its window began: 32-bit keyed hashes (SipHash under the
//! quota salt, never the raw value) in one slot value of at most `4 * (max + 1)`
//! bytes, `apiguard.d.<rule>.<n>`. A value already in the set is not an event, so
//! repeating one id never counts twice. Two distinct ids count once only if their
//! 32-bit hashes collide: with `max` ids, a probability of about `max² / 2³³`
//! (1.2e-4 at `max = 1000`), never an overcount. The window is fixed: it starts at
//! the caller's first event and is cleared when it ends.
//!
//! # Blocks
//!
//! `apiguard.b.<rule>.<n>` holds up to [`BLOCK_ENTRIES`] blocks of the callers of
//! slot `n`: (64-bit fingerprint, end in ms). A request is refused only if its own
//! fingerprint is in the slot with an end in the future, so another caller in the
//! same slot is never refused: being blocked needs a 64-bit keyed hash equal to the
//! blocked caller's, that is, that caller's key (its address, token subject or
//! header value). A new block replaces an ended entry, else the entry that ends
//! first: to free a blocked caller early, an attacker would need [`BLOCK_ENTRIES`]
//! callers of its own in that caller's slot, which the secret salt (required for
//! blocking) keeps it from aiming at. Blocks end by themselves: nothing is deleted
//! (shared data has no delete), an ended entry is just free.
//!
//! # The horizon: one read per request
//!
//! `apiguard.bh` holds the latest end of any block any rule has written. Every
//! block raises it (to at least the block's end) before its entry is written, so
//! while the current time is past it no block of any rule can be running, and a
//! request reads that one key instead of one block slot per rule. Only when some
//! block may still be running (under attack) are the rules' slots read. The value
//! only grows; a block that gives way early leaves it as it is, which costs reads,
//! never a missed block. A horizon that cannot be raised (shared data failing)
//! does not record the block either: blocking fails open as a whole.
//!
//! A caller without a value for `by` (no token subject, no header) is not counted:
//! blocking the anonymous bucket would block every anonymous caller at once.
//!
//! Blocking fails open: when shared data fails, the event is not counted and no
//! request is refused for it (a store outage must not lock every caller out).

use crate::config::check::{self, in_range};
use crate::config::{BlockingConfig, ConfigError, Mode, QuotaConfig, QuotaSettings};
use crate::quota::{anchor_cas, CallerKey, KeyBy, KeyInputs, QuotaDecision, QuotaPolicy};
use crate::quota::{with_decimal, SharedStore, StoreError};

/// Blocks kept per slot of a rule's block table.
pub const BLOCK_ENTRIES: usize = 4;
/// Largest `max` of a `distinct_param` rule (bounds the size of a slot value).
pub const MAX_DISTINCT: u64 = 1000;
/// Largest `block_seconds` (30 days).
pub const MAX_BLOCK_SECONDS: u64 = 30 * 24 * 3600;
/// Largest `window_seconds` (1 day): behaviour older than that is not a sequence.
pub const MAX_WINDOW_SECONDS: u64 = 24 * 3600;
/// Most rules.
pub const MAX_RULES: usize = 32;

const BLOCK_VERSION: u8 = 1;
const SET_VERSION: u8 = 1;
const HORIZON_VERSION: u8 = 1;
/// Shared-data key of the horizon (outside every rule's `apiguard.b.<rule>.`).
const HORIZON_KEY: &str = "apiguard.bh";
/// Rounds of read-decide-write before an update gives up (fails open).
const MAX_ROUNDS: u32 = 16;

/// What a rule counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Count {
    /// The filter's 401s and 403s.
    AuthFailures,
    /// The filter's 404s on undeclared endpoints.
    NotFound,
    /// Distinct values of a path parameter on the listed routes.
    DistinctParam(String),
    /// Upstream responses with one of these statuses on the listed routes.
    Status(Vec<u32>),
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Its name (metrics, audit).
    pub name: String,
    /// What it counts.
    pub count: Count,
    /// Route indices it counts on; `None`: every route.
    routes: Option<Vec<usize>>,
    counter: QuotaPolicy,
    block_ms: u64,
    window_ms: u64,
    max: u64,
    /// Under `report` a block is recorded and counted but no request is refused.
    pub mode: Mode,
    /// `apiguard.b.<rule>.`: the block table's keys, made once at load.
    block_prefix: String,
    /// `apiguard.d.<rule>.`: the distinct-value sets' keys.
    set_prefix: String,
}

/// The compiled `blocking` section.
#[derive(Debug, Default)]
pub struct BlockingPolicy {
    /// Rules in configuration order.
    pub rules: Vec<Rule>,
}

/// A route as the rules see it at load: name and path parameter names.
pub struct RouteInfo<'a> {
    /// Route name.
    pub name: &'a str,
    /// Its template's parameter names.
    pub params: Vec<String>,
}

impl BlockingPolicy {
    /// Compiles `blocking`; `routes` are the configured routes in order.
    pub(crate) fn compile(
        cfg: &BlockingConfig,
        settings: &QuotaSettings,
        routes: &[RouteInfo<'_>],
        top_mode: Mode,
    ) -> Result<BlockingPolicy, ConfigError> {
        if cfg.rules.len() > MAX_RULES {
            return Err(ConfigError::new(
                "blocking.rules",
                format!("at most {MAX_RULES} rules"),
            ));
        }
        if !cfg.rules.is_empty() && settings.key_salt.is_none() {
            // Without a secret, the slot of any caller can be computed from the
            // published code, and colliding on purpose becomes possible.
            return Err(ConfigError::new(
                "quota_settings.key_salt",
                "required when blocking rules are configured",
            ));
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(cfg.rules.len());
        for (i, r) in cfg.rules.iter().enumerate() {
            let base = format!("blocking.rules[{i}]");
            check::entry_name(
                &r.name,
                rules.iter().map(|o| o.name.as_str()),
                &base,
                "blocking.rules",
            )?;
            let route_ids = match &r.routes {
                None => None,
                Some(names) if names.is_empty() => {
                    return Err(ConfigError::new(
                        format!("{base}.routes"),
                        "must not be empty (leave it out for every route)",
                    ))
                }
                Some(names) => {
                    let mut ids = Vec::with_capacity(names.len());
                    for (k, n) in names.iter().enumerate() {
                        match routes.iter().position(|ro| ro.name == n) {
                            Some(id) => ids.push(id),
                            None => {
                                return Err(ConfigError::new(
                                    format!("{base}.routes[{k}]"),
                                    format!("no route is named {:?}", check::clip(n)),
                                ))
                            }
                        }
                    }
                    Some(ids)
                }
            };
            let count = match r.count.as_str() {
                "auth_failures" => Count::AuthFailures,
                "not_found" => Count::NotFound,
                "distinct_param" => {
                    let Some(param) = &r.param else {
                        return Err(ConfigError::new(
                            format!("{base}.param"),
                            "required when count is \"distinct_param\"",
                        ));
                    };
                    let Some(ids) = &route_ids else {
                        return Err(ConfigError::new(
                            format!("{base}.routes"),
                            "required when count is \"distinct_param\" (the routes whose parameter is counted)",
                        ));
                    };
                    for (k, id) in ids.iter().enumerate() {
                        if !routes[*id].params.iter().any(|p| p == param) {
                            return Err(ConfigError::new(
                                format!("{base}.param"),
                                format!(
                                    "{:?} is not a parameter of route {:?} (routes[{k}])",
                                    check::clip(param),
                                    routes[*id].name
                                ),
                            ));
                        }
                    }
                    in_range(r.max, 1, MAX_DISTINCT, &format!("{base}.max"))?;
                    Count::DistinctParam(param.clone())
                }
                "status" => {
                    if r.statuses.is_empty() {
                        return Err(ConfigError::new(
                            format!("{base}.statuses"),
                            "required (non-empty) when count is \"status\"",
                        ));
                    }
                    let mut statuses = Vec::with_capacity(r.statuses.len());
                    for (k, s) in r.statuses.iter().enumerate() {
                        statuses.push(in_range(*s, 100, 599, &format!("{base}.statuses[{k}]"))? as u32);
                    }
                    Count::Status(statuses)
                }
                other => {
                    return Err(ConfigError::new(
                        format!("{base}.count"),
                        format!(
                            "unknown variant `{}`, expected one of `auth_failures`, `not_found`, `distinct_param`, `status`",
                            check::clip(other)
                        ),
                    ))
                }
            };
            if r.param.is_some() && !matches!(count, Count::DistinctParam(_)) {
                return Err(ConfigError::new(
                    format!("{base}.param"),
                    "only for count \"distinct_param\"",
                ));
            }
            if !r.statuses.is_empty() && !matches!(count, Count::Status(_)) {
                return Err(ConfigError::new(
                    format!("{base}.statuses"),
                    "only for count \"status\"",
                ));
            }
            in_range(r.max, 1, crate::quota::MAX_LIMIT, &format!("{base}.max"))?;
            in_range(
                r.window_seconds,
                1,
                MAX_WINDOW_SECONDS,
                &format!("{base}.window_seconds"),
            )?;
            in_range(
                r.block_seconds,
                1,
                MAX_BLOCK_SECONDS,
                &format!("{base}.block_seconds"),
            )?;
            let counter = QuotaPolicy::compile(
                &QuotaConfig {
                    limit: r.max,
                    window_seconds: r.window_seconds,
                    by: r.by.clone(),
                    failure_mode: Default::default(),
                    headers_on_success: false,
                    scope: None,
                    tiers: None,
                },
                settings,
                &format!("~b.{}", r.name),
                &base,
            )?;
            if *counter.by() == KeyBy::Route {
                return Err(ConfigError::new(
                    format!("{base}.by"),
                    "`route` would block every caller at once: use `ip`, `claim:<name>` or `header:<name>`",
                ));
            }
            let mode = Mode::parse(r.mode.as_deref(), &format!("{base}.mode"))?.unwrap_or(top_mode);
            rules.push(Rule {
                name: r.name.clone(),
                count,
                routes: route_ids,
                counter,
                block_ms: r.block_seconds * 1000,
                window_ms: r.window_seconds * 1000,
                max: r.max,
                mode,
                block_prefix: format!("apiguard.b.{}.", r.name),
                set_prefix: format!("apiguard.d.{}.", r.name),
            });
        }
        Ok(BlockingPolicy { rules })
    }

    /// True if no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// False when no block of any rule can be running at `now_ms` (the horizon
    /// is past, or no block was ever written): the rules' block slots need not be
    /// read. A horizon of another layout reads as "may run"; a store failure as
    /// "none" (blocking fails open, as [`Rule::blocked_for`] does).
    pub fn blocks_may_run(&self, store: &dyn SharedStore, now_ms: u64) -> bool {
        match store.get(HORIZON_KEY) {
            Ok((Some(value), _)) => decode_horizon(&value).is_none_or(|end| end > now_ms),
            Ok((None, _)) | Err(_) => false,
        }
    }
}

/// Raises the horizon to at least `until`; false if shared data failed.
fn raise_horizon(store: &mut dyn SharedStore, until: u64) -> bool {
    for _ in 0..MAX_ROUNDS {
        let Ok((bytes, cas)) = store.get(HORIZON_KEY) else {
            return false;
        };
        if bytes
            .as_deref()
            .and_then(decode_horizon)
            .is_some_and(|end| end >= until)
        {
            return true;
        }
        let Some(token) = write_token(store, bytes.is_some(), cas) else {
            return false;
        };
        let mut value = Vec::with_capacity(9);
        value.push(HORIZON_VERSION);
        value.extend_from_slice(&until.to_le_bytes());
        match store.set(HORIZON_KEY, &value, Some(token)) {
            Ok(()) => return true,
            Err(StoreError::CasMismatch) => continue,
            Err(_) => return false,
        }
    }
    false
}

fn decode_horizon(bytes: &[u8]) -> Option<u64> {
    match bytes.split_first() {
        Some((&HORIZON_VERSION, end)) if end.len() == 8 => Some(le_u64(end)),
        _ => None,
    }
}

/// What counting one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Not counted: no key, not on this rule's routes, a repeated value, or the
    /// store failed (blocking fails open).
    Ignored,
    /// Counted, below the threshold.
    Counted,
    /// This event passed `max`: a block of the caller starts now and lasts
    /// `block_seconds`.
    BlockStarted,
    /// Passed `max` while a block of the caller is already running.
    AlreadyBlocked,
}

impl Rule {
    /// True if this rule counts events on route `route` (an index; `None`: no route).
    pub fn counts_on(&self, route: Option<usize>) -> bool {
        match (&self.routes, route) {
            (None, _) => true,
            (Some(ids), Some(r)) => ids.contains(&r),
            (Some(_), None) => false,
        }
    }

    /// True if the rule's caller is known before authentication (`ip`, `header:`).
    pub fn keyed_before_auth(&self) -> bool {
        !matches!(self.counter.by(), KeyBy::Claim(_))
    }

    /// True if the rule keys on the client address.
    pub fn needs_client_ip(&self) -> bool {
        matches!(self.counter.by(), KeyBy::Ip)
    }

    /// The caller's key for this rule; `None` without a value for `by`.
    pub fn caller(&self, inputs: &KeyInputs<'_>) -> Option<CallerKey> {
        let key = self.counter.caller_key(inputs);
        (!key.is_anonymous()).then_some(key)
    }

    fn block_key(&self, key: &CallerKey) -> String {
        with_decimal(&self.block_prefix, u64::from(key.slot()))
    }

    fn set_key(&self, key: &CallerKey) -> String {
        with_decimal(&self.set_prefix, u64::from(key.slot()))
    }

    /// Milliseconds left of `key`'s block at `now_ms`, if it is blocked.
    pub fn blocked_for(
        &self,
        store: &dyn SharedStore,
        key: &CallerKey,
        now_ms: u64,
    ) -> Option<u64> {
        let (value, _) = store.get(&self.block_key(key)).ok()?;
        let entries = decode_blocks(&value?)?;
        entries
            .iter()
            .find(|(fp, until)| *fp == key.fingerprint() && *until > now_ms)
            .map(|(_, until)| until - now_ms)
    }

    /// Counts one event of `key` at `now_ms`.
    pub fn count(&self, store: &mut dyn SharedStore, key: &CallerKey, now_ms: u64) -> Event {
        let check = self.counter.check(store, key, now_ms);
        match check.decision {
            QuotaDecision::Admitted { .. } => Event::Counted,
            QuotaDecision::Limited { .. } => self.start_block(store, key, now_ms),
            QuotaDecision::StoreError(_) => Event::Ignored,
        }
    }

    /// Counts `value` of the rule's parameter for `key` at `now_ms`: an event only
    /// the first time the value is seen in the caller's window.
    pub fn count_distinct(
        &self,
        store: &mut dyn SharedStore,
        key: &CallerKey,
        value: &str,
        now_ms: u64,
    ) -> Event {
        let h = self.counter.value_hash(value.as_bytes()) as u32;
        let slot_key = self.set_key(key);
        for _ in 0..MAX_ROUNDS {
            let (bytes, cas) = match store.get(&slot_key) {
                Ok(found) => found,
                Err(_) => return Event::Ignored,
            };
            let current = bytes.as_deref().and_then(DistinctSet::decode);
            let mut set = match current {
                // A running window: the caller's own, or shared with a colliding
                // caller (stricter for both, never looser, as quota slots are).
                Some(s) if s.start_ms.saturating_add(self.window_ms) > now_ms => s,
                // None yet, ended, or unreadable: a fresh window from now.
                _ => DistinctSet {
                    owner: key.fingerprint(),
                    start_ms: now_ms,
                    hashes: Vec::new(),
                },
            };
            let Err(pos) = set.hashes.binary_search(&h) else {
                return Event::Ignored;
            };
            set.hashes.insert(pos, h);
            let passed = set.hashes.len() as u64 > self.max;
            if passed {
                // The set never grows past `max + 1`: the caller is blocked now.
                set.hashes.truncate(self.max as usize + 1);
            }
            let Some(token) = write_token(store, bytes.is_some(), cas) else {
                return Event::Ignored;
            };
            match store.set(&slot_key, &set.encode(), Some(token)) {
                Ok(()) if passed => return self.start_block(store, key, now_ms),
                Ok(()) => return Event::Counted,
                Err(StoreError::CasMismatch) => continue,
                Err(_) => return Event::Ignored,
            }
        }
        Event::Ignored
    }

    /// Records a block of `key` from `now_ms`, unless one is already running.
    fn start_block(&self, store: &mut dyn SharedStore, key: &CallerKey, now_ms: u64) -> Event {
        let slot_key = self.block_key(key);
        let until = now_ms.saturating_add(self.block_ms);
        for _ in 0..MAX_ROUNDS {
            let (bytes, cas) = match store.get(&slot_key) {
                Ok(found) => found,
                Err(_) => return Event::Ignored,
            };
            let mut entries = bytes.as_deref().and_then(decode_blocks).unwrap_or_default();
            if entries
                .iter()
                .any(|(fp, end)| *fp == key.fingerprint() && *end > now_ms)
            {
                return Event::AlreadyBlocked;
            }
            entries.retain(|(fp, end)| *end > now_ms && *fp != key.fingerprint());
            if entries.len() >= BLOCK_ENTRIES {
                // Full of running blocks: the one that ends first gives way.
                if let Some(i) = (0..entries.len()).min_by_key(|&i| entries[i].1) {
                    entries.remove(i);
                }
            }
            entries.push((key.fingerprint(), until));
            // Readers skip every slot while the horizon is past: it must cover
            // this block before the block exists.
            if !raise_horizon(store, until) {
                return Event::Ignored;
            }
            let Some(token) = write_token(store, bytes.is_some(), cas) else {
                return Event::Ignored;
            };
            match store.set(&slot_key, &encode_blocks(&entries), Some(token)) {
                Ok(()) => return Event::BlockStarted,
                Err(StoreError::CasMismatch) => continue,
                Err(_) => return Event::Ignored,
            }
        }
        Event::Ignored
    }

    /// `block_seconds`.
    pub fn block_seconds(&self) -> u64 {
        self.block_ms / 1000
    }
}

/// The CAS token a write of a slot read as `exists` with `cas` must carry: the
/// read's own, or for a missing slot the anchor's (see `quota`, "Concurrency").
/// `None` when the slot cannot be written safely (fail open).
fn write_token(store: &mut dyn SharedStore, exists: bool, cas: Option<u32>) -> Option<u32> {
    if exists {
        cas
    } else {
        anchor_cas(store).ok()
    }
}

fn encode_blocks(entries: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 16 * entries.len());
    out.push(BLOCK_VERSION);
    for (fp, until) in entries {
        out.extend_from_slice(&fp.to_le_bytes());
        out.extend_from_slice(&until.to_le_bytes());
    }
    out
}

/// The entries of a block slot; `None` for a value of another layout.
fn decode_blocks(bytes: &[u8]) -> Option<Vec<(u64, u64)>> {
    let (&version, rest) = bytes.split_first()?;
    if version != BLOCK_VERSION || rest.len() % 16 != 0 || rest.len() / 16 > BLOCK_ENTRIES {
        return None;
    }
    Some(
        rest.chunks_exact(16)
            .map(|c| (le_u64(&c[..8]), le_u64(&c[8..])))
            .collect(),
    )
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// A caller's distinct values in the current window.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DistinctSet {
    owner: u64,
    start_ms: u64,
    /// Sorted 32-bit keyed hashes.
    hashes: Vec<u32>,
}

impl DistinctSet {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + 4 * self.hashes.len());
        out.push(SET_VERSION);
        out.extend_from_slice(&self.owner.to_le_bytes());
        out.extend_from_slice(&self.start_ms.to_le_bytes());
        for h in &self.hashes {
            out.extend_from_slice(&h.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<DistinctSet> {
        let (&version, rest) = bytes.split_first()?;
        if version != SET_VERSION || rest.len() < 16 || (rest.len() - 16) % 4 != 0 {
            return None;
        }
        let hashes: Vec<u32> = rest[16..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // Only this module writes these, sorted; anything else is not trusted.
        if hashes.windows(2).any(|w| w[0] >= w[1]) || hashes.len() > MAX_DISTINCT as usize + 1 {
            return None;
        }
        Some(DistinctSet {
            owner: le_u64(&rest[..8]),
            start_ms: le_u64(&rest[8..16]),
            hashes,
        })
    }
}

#[cfg(test)]
mod tests;
