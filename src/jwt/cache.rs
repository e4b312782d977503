//! The verified-token cache: one per worker, so a token seen again costs a hash and a
//! lookup instead of a signature check.
//!
//! - Key: the bytes `provider NUL token`, compared in full on every hit (as
//!   Envoy's `jwt_authn` keys its cache by the token), so a token verified for one
//!   provider never counts for another. A digest key was measured: SHA-256 over
//!   the token costs a few microseconds per request in V8, more than the rest of
//!   a cache hit.
//! - Value: the verified claims (shared, `Rc`), their time claims, and the key-set
//!   generation they were verified under. A hit re-runs the time checks
//!   (`exp`/`nbf`/`iat`/lifetime with the skew) at the current `now`; a hit under
//!   another key-set generation (keys were refetched, so a key may have been revoked)
//!   is a miss. Issuer and audience do not depend on time and were checked before
//!   insertion.
//! - Bound: `capacity` entries (default [`DEFAULT_TOKEN_CACHE_ENTRIES`]) and
//!   [`MAX_CACHE_KEY_BYTES`] of keys; inserting into a full cache evicts the oldest
//!   insertions (FIFO: O(1), no bookkeeping on hits). Entries leave at `exp` at the
//!   latest, and at most [`MAX_CACHE_ENTRY_AGE_SECONDS`] after insertion (tokens
//!   without `exp`).
//! - A hash map with a fixed, fast word-at-a-time hash. Hash flooding needs many
//!   colliding entries, and only tokens whose signature verified are ever inserted:
//!   a caller cannot choose them. Lookups with arbitrary tokens only probe.
//!
//! Create a new cache whenever the configuration (and so the providers) changes.

use crate::authz::Claims;
use crate::jwt::verify::{check_times, ClaimsRules, TimeClaims};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

/// Default number of cached tokens per worker.
pub const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 1024;
/// Longest time an entry is kept, whatever its `exp`, seconds.
pub const MAX_CACHE_ENTRY_AGE_SECONDS: u64 = 300;
/// Bytes of keys (provider names and tokens) kept per worker.
pub const MAX_CACHE_KEY_BYTES: usize = 2 << 20;

/// `provider NUL token`: shared by the map and the eviction queue.
type Key = Rc<[u8]>;

/// FxHash (the rustc hasher): one rotate, xor and multiply per 8 bytes.
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, Clone)]
struct Entry {
    claims: Rc<Claims>,
    times: TimeClaims,
    generation: u64,
    inserted_at: u64,
    seq: u64,
}

/// A bounded cache of verified tokens. See the module documentation.
#[derive(Debug, Clone)]
pub struct TokenCache {
    map: HashMap<Key, Entry, BuildHasherDefault<FastHasher>>,
    order: VecDeque<(Key, u64)>,
    capacity: usize,
    /// Bytes of the keys in `map`.
    key_bytes: usize,
    seq: u64,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::new(DEFAULT_TOKEN_CACHE_ENTRIES)
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 disables caching.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            map: HashMap::default(),
            order: VecDeque::new(),
            capacity,
            key_bytes: 0,
            seq: 0,
        }
    }

    /// Number of cached tokens.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }

    /// True if nothing is cached.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn key(provider: &str, token: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(provider.len() + 1 + token.len());
        k.extend_from_slice(provider.as_bytes());
        k.push(0);
        k.extend_from_slice(token.as_bytes());
        k
    }

    fn remove(&mut self, key: &[u8]) {
        if self.map.remove(key).is_some() {
            self.key_bytes = self.key_bytes.saturating_sub(key.len());
        }
    }

    /// The claims of `token` if it was verified for `provider` under key-set
    /// `generation` and still passes the time checks at `now`. Stale entries are removed.
    pub(crate) fn get(
        &mut self,
        provider: &str,
        token: &str,
        generation: u64,
        rules: &ClaimsRules,
        now: u64,
    ) -> Option<Rc<Claims>> {
        if self.capacity == 0 {
            return None;
        }
        let key = Self::key(provider, token);
        let fresh = match self.map.get(key.as_slice()) {
            None => {
                return None;
            }
            Some(e) => {
                e.generation == generation
                    && now < e.inserted_at.saturating_add(MAX_CACHE_ENTRY_AGE_SECONDS)
                    && check_times(&e.times, rules, now).is_ok()
            }
        };
        if fresh {
            self.map.get(key.as_slice()).map(|e| Rc::clone(&e.claims))
        } else {
            // Expired, revoked by a key refresh, or not valid at this `now`: verify
            // afresh (which re-inserts it if it is still valid).
            self.remove(&key);
            None
        }
    }

    /// Remembers a verified token.
    pub(crate) fn insert(
        &mut self,
        provider: &str,
        token: &str,
        claims: Rc<Claims>,
        times: TimeClaims,
        generation: u64,
        now: u64,
    ) {
        let key: Key = Self::key(provider, token).into();
        if self.capacity == 0 || key.len() > MAX_CACHE_KEY_BYTES {
            return;
        }
        self.remove(&key);
        while self.map.len() >= self.capacity || self.key_bytes + key.len() > MAX_CACHE_KEY_BYTES {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.seq == seq) {
                self.remove(&old);
            }
        }
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.key_bytes += key.len();
        self.map.insert(
            Rc::clone(&key),
            Entry {
                claims,
                times,
                generation,
                inserted_at: now,
                seq,
            },
        );
        self.order.push_back((key, seq));
        // Entries removed by `get` leave their slot in `order`; compact now and then
        // so `order` stays within twice the capacity.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> ClaimsRules {
        ClaimsRules {
            issuer: "i".into(),
            audiences: vec![],
            clock_skew_seconds: 10,
            max_lifetime_seconds: None,
            require_expiration: false,
        }
    }

    fn claims(sub: &str) -> Rc<Claims> {
        Rc::new(json!({ "sub": sub }).as_object().cloned().unwrap())
    }

    fn times(exp: i64) -> TimeClaims {
        TimeClaims {
            exp: Some(exp),
            nbf: None,
            iat: None,
        }
    }

    #[test]
    fn hits_until_exp_plus_skew() {
        let mut c = TokenCache::new(4);
        c.insert("p", "tok", claims("a"), times(100), 0, 50);
        assert!(c.get("p", "tok", 0, &rules(), 60).is_some());
        assert!(c.get("p", "tok", 0, &rules(), 109).is_some());
        assert!(
            c.get("p", "tok", 0, &rules(), 110).is_none(),
            "expired at exp + skew"
        );
        assert!(c.is_empty(), "expired entries are dropped");
    }

    #[test]
    fn provider_generation_and_age_are_part_of_validity() {
        let mut c = TokenCache::new(4);
        c.insert("p", "tok", claims("a"), TimeClaims::default(), 3, 0);
        assert!(
            c.get("q", "tok", 3, &rules(), 1).is_none(),
            "other provider"
        );
        assert!(c.get("p", "tok2", 3, &rules(), 1).is_none(), "other token");
        assert!(c
            .get("p", "tok", 3, &rules(), MAX_CACHE_ENTRY_AGE_SECONDS - 1)
            .is_some());
        assert!(c.get("p", "tok", 4, &rules(), 2).is_none(), "keys replaced");
        c.insert("p", "tok", claims("a"), TimeClaims::default(), 3, 0);
        assert!(
            c.get("p", "tok", 3, &rules(), MAX_CACHE_ENTRY_AGE_SECONDS)
                .is_none(),
            "too old"
        );
    }

    #[test]
    fn nbf_is_rechecked_at_lookup() {
        let mut c = TokenCache::new(4);
        let t = TimeClaims {
            exp: Some(1000),
            nbf: Some(100),
            iat: None,
        };
        c.insert("p", "tok", claims("a"), t, 0, 95);
        assert!(
            c.get("p", "tok", 0, &rules(), 80).is_none(),
            "clock went back before nbf - skew"
        );
    }

    #[test]
    fn eviction_is_fifo_and_bounded() {
        let mut c = TokenCache::new(3);
        for i in 0..10 {
            c.insert("p", &format!("t{i}"), claims("x"), times(10_000), 0, 0);
            assert!(c.len() <= 3);
        }
        assert!(c.get("p", "t6", 0, &rules(), 1).is_none());
        assert!(c.get("p", "t7", 0, &rules(), 1).is_some());
        assert!(c.get("p", "t9", 0, &rules(), 1).is_some());
        // Churn through expiring entries: `order` stays bounded.
        for i in 0..100 {
            c.insert("p", &format!("e{i}"), claims("x"), times(5), 0, 0);
            let _ = c.get("p", &format!("e{i}"), 0, &rules(), 100);
        }
        assert!(c.order.len() <= 6, "{}", c.order.len());
        // The key-byte budget evicts the oldest too.
        let big = |c: char| c.to_string().repeat(MAX_CACHE_KEY_BYTES / 2 - 8);
        let mut b = TokenCache::new(100);
        for c in ['a', 'b', 'c'] {
            b.insert("p", &big(c), claims("x"), times(10_000), 0, 0);
        }
        assert_eq!(b.len(), 2);
        assert!(b.key_bytes <= MAX_CACHE_KEY_BYTES);
        assert!(b.get("p", &big('a'), 0, &rules(), 1).is_none());
        assert!(b.get("p", &big('c'), 0, &rules(), 1).is_some());
        b.insert(
            "p",
            &"d".repeat(MAX_CACHE_KEY_BYTES),
            claims("x"),
            times(10_000),
            0,
            0,
        );
        assert_eq!(b.len(), 2, "a key over the budget is not cached");
        let mut off = TokenCache::new(0);
        off.insert("p", "t", claims("x"), times(10), 0, 0);
        assert!(off.get("p", "t", 0, &rules(), 1).is_none() && off.is_empty());
    }
}
