//! Unit tests of the quota core: window arithmetic with an injected clock,
//! exactness under simulated interleaving, slot bounding and the no-free-reset
//! rule, client addresses, configuration errors.

use super::key::SipHasher24;
use super::*;
use crate::authz::Claims;
use serde_json::{json, Value};
use std::cell::Cell;
use std::rc::Rc;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn cfg(limit: u64, window_seconds: u64, by: &str) -> QuotaConfig {
    QuotaConfig {
        limit,
        window_seconds,
        by: by.to_string(),
        failure_mode: FailureMode::Closed,
        headers_on_success: true,
        scope: None,
        tiers: None,
    }
}

fn settings(max_keys: u32, retries: u32) -> QuotaSettings {
    QuotaSettings {
        max_keys_per_route: max_keys,
        max_cas_retries: retries,
        key_salt: None,
    }
}

fn policy_with(c: &QuotaConfig, s: &QuotaSettings) -> QuotaPolicy {
    match QuotaPolicy::compile(c, s, "r", "routes[0].quota") {
        Ok(p) => p,
        Err(e) => panic!("compile: {e}"),
    }
}

fn policy(limit: u64, window_seconds: u64, by: &str) -> QuotaPolicy {
    policy_with(&cfg(limit, window_seconds, by), &QuotaSettings::default())
}

fn compile_err(c: &QuotaConfig, s: &QuotaSettings) -> String {
    match QuotaPolicy::compile(c, s, "r", "routes[1].quota") {
        Ok(_) => "<ok>".to_string(),
        Err(e) => e.to_string(),
    }
}

fn no_headers(_: &str) -> Option<String> {
    None
}

/// Key of a caller identified by header `x-k: <value>` (policy `by: header:x-k`).
fn header_key(p: &QuotaPolicy, value: &str) -> CallerKey {
    let v = value.to_string();
    let lookup = move |name: &str| (name == "x-k").then(|| v.clone());
    p.caller_key(&KeyInputs {
        client_ip: None,
        claims: None,
        header: &lookup,
    })
}

fn route_key(p: &QuotaPolicy) -> CallerKey {
    p.caller_key(&KeyInputs {
        client_ip: None,
        claims: None,
        header: &no_headers,
    })
}

/// Two distinct callers that land in the same slot (found by search).
fn colliding_pair(p: &QuotaPolicy) -> (CallerKey, CallerKey) {
    let first = header_key(p, "caller-0");
    for i in 1..100_000 {
        let other = header_key(p, &format!("caller-{i}"));
        if other.slot() == first.slot() {
            return (first, other);
        }
    }
    panic!("no collision found");
}

fn admitted(c: &QuotaCheck) -> bool {
    matches!(c.decision, QuotaDecision::Admitted { .. })
}

/// Expected outcome of one request in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Admitted with (remaining, reset).
    Ok(u64, u64),
    /// Limited with (retry_after, reset).
    No(u64, u64),
}

fn run_table(p: &QuotaPolicy, steps: &[(u64, Want)], name: &str) {
    let mut store = MemoryStore::new();
    let key = route_key(p);
    for (i, (now, want)) in steps.iter().enumerate() {
        let got = p.check(&mut store, &key, *now).decision;
        let got = match got {
            QuotaDecision::Admitted {
                remaining,
                reset_seconds,
                limit,
            } => {
                assert_eq!(limit, p.limit());
                Want::Ok(remaining, reset_seconds)
            }
            QuotaDecision::Limited {
                retry_after_seconds,
                reset_seconds,
                limit,
            } => {
                assert_eq!(limit, p.limit());
                Want::No(retry_after_seconds, reset_seconds)
            }
            QuotaDecision::StoreError(e) => panic!("{name} step {i}: store error {e}"),
        };
        assert_eq!(got, *want, "{name}: step {i} at t={now}ms");
    }
}

// ---------------------------------------------------------------------------
// Window arithmetic (injected clock)
// ---------------------------------------------------------------------------

#[test]
fn window_arithmetic_table() {
    use Want::{No, Ok};
    // limit 5 per 10 s: one request back every 2 s.
    let five_per_ten = policy(5, 10, "route");
    run_table(
        &five_per_ten,
        &[
            // burst of `limit`
            (0, Ok(4, 2)),
            (0, Ok(3, 4)),
            (0, Ok(2, 6)),
            (0, Ok(1, 8)),
            (0, Ok(0, 10)),
            // the next one is refused; retry after exactly one interval
            (0, No(2, 10)),
            (1_000, No(1, 9)),
            (1_999, No(1, 9)),
            // partial refill: exactly one request back after 2 s
            (2_000, Ok(0, 10)),
            (2_001, No(2, 10)),
            // 6 s later: three back, one used
            (8_000, Ok(2, 6)),
            // full refill after a long idle period: a fresh burst, never more
            (60_000, Ok(4, 2)),
            (60_000, Ok(3, 4)),
            (60_000, Ok(2, 6)),
            (60_000, Ok(1, 8)),
            (60_000, Ok(0, 10)),
            (60_000, No(2, 10)),
        ],
        "5/10s",
    );

    // limit 3 per 1 s: the interval (333.33 ms) is not a whole number of ms.
    run_table(
        &policy(3, 1, "route"),
        &[
            (0, Ok(2, 1)),
            (0, Ok(1, 1)),
            (0, Ok(0, 1)),
            (0, No(1, 1)),
            (333, No(1, 1)),
            (334, Ok(0, 1)),
            (666, No(1, 1)),
            (667, Ok(0, 1)),
            (1_000, Ok(0, 1)),
            (1_001, No(1, 1)),
        ],
        "3/1s",
    );

    // limit 1 per hour: retry-after and reset count down in whole seconds.
    run_table(
        &policy(1, 3600, "route"),
        &[
            (0, Ok(0, 3600)),
            (1, No(3600, 3600)),
            (1_000, No(3599, 3599)),
            (3_599_001, No(1, 1)),
            (3_600_000, Ok(0, 3600)),
        ],
        "1/h",
    );
}

#[test]
fn no_double_limit_at_a_window_boundary() {
    // A fixed window would admit 10 just before t=60s and 10 more just after.
    let p = policy(10, 60, "route");
    let key = route_key(&p);
    let mut store = MemoryStore::new();
    let mut in_span = 0;
    for now in 59_990..60_010u64 {
        // 2 requests per ms around the boundary
        for _ in 0..2 {
            if admitted(&p.check(&mut store, &key, now)) {
                in_span += 1;
            }
        }
    }
    assert_eq!(in_span, 10);
    // The 11th comes back only after one interval (6 s) after the burst.
    assert!(!admitted(&p.check(&mut store, &key, 65_989)));
    assert!(admitted(&p.check(&mut store, &key, 65_990)));
}

#[test]
fn long_runs_have_no_rounding_drift() {
    // One request per ms for `span` ms: exactly limit + floor(span*limit/W) pass.
    for (limit, window_s, span_ms) in [
        (3u64, 1u64, 100_000u64),
        (7, 3, 250_000),
        (1000, 10, 30_000),
        (100, 60, 600_000),
    ] {
        let p = policy(limit, window_s, "route");
        let key = route_key(&p);
        let mut store = MemoryStore::new();
        let mut n = 0u64;
        for now in 0..=span_ms {
            if admitted(&p.check(&mut store, &key, now)) {
                n += 1;
            }
        }
        let want = limit + span_ms * limit / (window_s * 1000);
        assert_eq!(n, want, "limit {limit} per {window_s}s over {span_ms}ms");
    }
}

#[test]
fn any_interval_stays_within_burst_plus_refill() {
    // Greedy client (every 10 ms): in every interval of length d starting at
    // any admission, at most limit + floor(d*limit/W) were admitted.
    let p = policy(20, 2, "route");
    let key = route_key(&p);
    let mut store = MemoryStore::new();
    let mut times = Vec::new();
    for now in (0..20_000u64).step_by(10) {
        if admitted(&p.check(&mut store, &key, now)) {
            times.push(now);
        }
    }
    for (i, start) in times.iter().enumerate() {
        for d in [1u64, 100, 999, 2_000, 5_000] {
            let count = times[i..].iter().take_while(|t| **t < start + d).count() as u64;
            assert!(
                count <= 20 + d * 20 / 2_000,
                "from {start} over {d}ms: {count}"
            );
        }
    }
}

#[test]
fn extreme_parameters_do_not_overflow() {
    let p = policy(MAX_LIMIT, MAX_WINDOW_SECONDS, "route");
    let key = route_key(&p);
    let mut store = MemoryStore::new();
    let now = u64::MAX / 2;
    let c = p.check(&mut store, &key, now);
    assert_eq!(
        c.decision,
        QuotaDecision::Admitted {
            limit: MAX_LIMIT,
            remaining: MAX_LIMIT - 1,
            reset_seconds: 1, // one interval: 31.536 ms
        }
    );
    let p1 = policy(1, MAX_WINDOW_SECONDS, "route");
    let mut store = MemoryStore::new();
    assert!(admitted(&p1.check(&mut store, &key, u64::MAX - 10)));
    assert!(!admitted(&p1.check(&mut store, &key, u64::MAX - 5)));
}

// ---------------------------------------------------------------------------
// Concurrency: CAS, interleaving, bounded retries
// ---------------------------------------------------------------------------

/// Worker A sends `requests` requests; before some of A's writes (every `every`th
/// set) worker B's request runs to completion, so A's CAS fails and retries.
fn interleaved(limit: u64, requests: u32, every: u32, b_per_gap: u32) -> (u64, u64, u32) {
    let p = policy_with(&cfg(limit, 60, "route"), &settings(16, 1_000));
    let key = route_key(&p);
    let mut store = MemoryStore::new();
    let b_admitted = Rc::new(Cell::new(0u64));
    let sets_seen = Rc::new(Cell::new(0u32));
    {
        let (p, b_admitted, sets_seen) = (p.clone(), b_admitted.clone(), sets_seen.clone());
        store.set_before_set(Some(Box::new(move |s: &mut MemoryStore, k: &str| {
            if !k.starts_with(KEY_PREFIX) {
                return;
            }
            sets_seen.set(sets_seen.get() + 1);
            if sets_seen.get() % every == 0 {
                for _ in 0..b_per_gap {
                    if admitted(&p.check(s, &key, 1_000)) {
                        b_admitted.set(b_admitted.get() + 1);
                    }
                }
            }
        })));
    }
    let mut a_admitted = 0;
    let mut retries = 0;
    for _ in 0..requests {
        let c = p.check(&mut store, &key, 1_000);
        assert!(!matches!(c.decision, QuotaDecision::StoreError(_)), "{c:?}");
        retries += c.cas_retries;
        if admitted(&c) {
            a_admitted += 1;
        }
    }
    (a_admitted, b_admitted.get(), retries)
}

#[test]
fn exact_under_interleaved_workers() {
    for (limit, every, b_per_gap) in [
        (20u64, 1u32, 1u32),
        (20, 2, 1),
        (50, 3, 2),
        (100, 1, 15),
        (1, 1, 1),
    ] {
        let (a, b, retries) = interleaved(limit, 400, every, b_per_gap);
        assert_eq!(
            a + b,
            limit,
            "limit {limit}, every {every}, b {b_per_gap}: a {a} b {b}"
        );
        assert!(retries > 0, "conflicts were injected");
        assert!(b > 0);
    }
}

#[test]
fn racing_creation_of_a_slot_is_exact() {
    // Both workers find the slot missing; B creates it between A's read and write.
    let p = policy(10, 60, "route");
    let key = route_key(&p);
    let mut store = MemoryStore::new();
    let fired = Rc::new(Cell::new(false));
    {
        let (p, fired) = (p.clone(), fired.clone());
        store.set_before_set(Some(Box::new(move |s: &mut MemoryStore, k: &str| {
            if k.starts_with(KEY_PREFIX) && !fired.get() {
                fired.set(true);
                assert!(admitted(&p.check(s, &key, 0)));
            }
        })));
    }
    let c = p.check(&mut store, &key, 0);
    assert!(admitted(&c));
    assert_eq!(
        c.cas_retries, 1,
        "A's creation must conflict, not overwrite"
    );
    store.set_before_set(None);
    // 2 used: 8 left.
    let mut left = 0;
    while admitted(&p.check(&mut store, &key, 0)) {
        left += 1;
    }
    assert_eq!(left, 8);
}

#[test]
fn store_semantics_match_the_host() {
    let mut s = MemoryStore::new();
    assert_eq!(s.get("a"), Ok((None, None)));
    assert_eq!(s.set("anchor", b"x", None), Ok(()));
    let anchor = match s.get("anchor") {
        Ok((_, Some(c))) => c,
        other => panic!("{other:?}"),
    };
    // A token of another key creates a missing key...
    assert_eq!(s.set("a", b"1", Some(anchor)), Ok(()));
    // ...but never matches an existing one.
    assert_eq!(s.set("a", b"2", Some(anchor)), Err(StoreError::CasMismatch));
    let (v, cas) = match s.get("a") {
        Ok((Some(v), Some(c))) => (v, c),
        other => panic!("{other:?}"),
    };
    assert_eq!(v, b"1");
    assert_eq!(s.set("a", b"3", Some(cas)), Ok(()));
    assert_eq!(s.set("a", b"4", Some(cas)), Err(StoreError::CasMismatch));
    assert_eq!(s.set("a", b"5", None), Ok(()));
    assert_eq!(s.raw("a"), Some(&b"5"[..]));
}

#[test]
fn retries_are_bounded_then_a_store_error() {
    for max in [0u32, 1, 5, 16] {
        let p = policy_with(&cfg(10, 60, "route"), &settings(16, max));
        let key = route_key(&p);
        let mut store = MemoryStore::new();
        assert!(admitted(&p.check(&mut store, &key, 0)));
        let slot_sets_before = store.set_calls();
        // Another writer always gets in first.
        store.set_before_set(Some(Box::new(|s: &mut MemoryStore, k: &str| {
            if let Some(v) = s.raw(k).map(<[u8]>::to_vec) {
                s.put_raw(k, &v);
            }
        })));
        let c = p.check(&mut store, &key, 0);
        assert_eq!(
            c.decision,
            QuotaDecision::StoreError(StoreError::CasMismatch)
        );
        assert_eq!(c.cas_retries, max);
        assert_eq!(store.set_calls() - slot_sets_before, u64::from(max) + 1);
    }
}

#[test]
fn failure_mode_closed_rejects_and_open_admits() {
    for (mode, want) in [
        (FailureMode::Closed, Some(Rejection::QuotaUnavailable)),
        (FailureMode::Open, None),
    ] {
        let mut c = cfg(10, 60, "route");
        c.failure_mode = mode;
        let p = policy_with(&c, &QuotaSettings::default());
        let key = route_key(&p);
        let mut store = MemoryStore::new();
        store.set_unavailable(true);
        let check = p.check(&mut store, &key, 0);
        assert_eq!(
            check.decision,
            QuotaDecision::StoreError(StoreError::Unavailable)
        );
        assert_eq!(check.decision.label(), "store_error");
        assert_eq!(p.rejection(&check.decision), want, "{mode:?}");
        assert_eq!(p.success_headers(&check.decision), None);
        // A write failure after a good read counts the same way.
        store.set_unavailable(false);
        store.set_before_set(Some(Box::new(|s: &mut MemoryStore, _: &str| {
            s.set_unavailable(true)
        })));
        let check = p.check(&mut store, &key, 0);
        assert_eq!(
            check.decision,
            QuotaDecision::StoreError(StoreError::Unavailable)
        );
    }
}

// ---------------------------------------------------------------------------
// Bounded keys and no free reset
// ---------------------------------------------------------------------------

#[test]
fn keys_stay_bounded_by_max_keys_per_route() {
    let p = policy_with(&cfg(5, 1, "header:x-k"), &settings(64, 16));
    let mut store = MemoryStore::new();
    for i in 0..20_000u64 {
        let key = header_key(&p, &format!("caller-{i}"));
        let _ = p.check(&mut store, &key, i * 7);
    }
    // 64 slots + the anchor key
    assert!(store.key_count() <= 65, "{}", store.key_count());
    assert!(
        store.key_count() > 60,
        "slots are spread: {}",
        store.key_count()
    );
    for k in store.keys() {
        assert!(k == ANCHOR_KEY || k.starts_with("apiguard.q.r."), "{k}");
        assert!(!k.contains("caller"), "raw key value in {k}");
    }
    // by: route uses a single slot
    let p = policy(5, 1, "route");
    let mut store = MemoryStore::new();
    for i in 0..1_000 {
        let _ = p.check(&mut store, &route_key(&p), i);
    }
    assert_eq!(store.key_count(), 2);
}

#[test]
fn colliding_newcomer_gets_no_free_reset() {
    let p = policy_with(&cfg(5, 10, "header:x-k"), &settings(8, 16));
    let (victim, attacker) = colliding_pair(&p);
    let mut store = MemoryStore::new();
    // The victim uses 3 of 5.
    for _ in 0..3 {
        assert!(admitted(&p.check(&mut store, &victim, 0)));
    }
    // The newcomer shares the bucket: only the 2 left, flagged as a collision.
    let c = p.check(&mut store, &attacker, 0);
    assert!(admitted(&c) && c.collision, "{c:?}");
    assert!(admitted(&p.check(&mut store, &attacker, 0)));
    let c = p.check(&mut store, &attacker, 0);
    assert!(!admitted(&c) && c.collision, "{c:?}");
    // And the victim is not reset by the newcomer either.
    assert!(!admitted(&p.check(&mut store, &victim, 0)));
    // Alternating between the two never beats one bucket.
    let mut total = 0;
    for now in (0..100_000u64).step_by(100) {
        for k in [&victim, &attacker] {
            if admitted(&p.check(&mut store, k, now)) {
                total += 1;
            }
        }
    }
    // t in [0, 100 s): one back every 2 s, minus what t=0 already used.
    assert_eq!(total, (99_900 / 2_000) as usize);
}

#[test]
fn takeover_only_once_the_incumbent_has_fully_refilled() {
    let p = policy_with(&cfg(4, 8, "header:x-k"), &settings(8, 16));
    let (incumbent, newcomer) = colliding_pair(&p);
    let mut store = MemoryStore::new();
    let slot = p.slot_key(&incumbent);
    let owner = |s: &MemoryStore| s.raw(&slot).and_then(SlotState::decode).map(|st| st.owner);
    for _ in 0..4 {
        assert!(admitted(&p.check(&mut store, &incumbent, 0)));
    }
    // 1 ms before full refill the slot is still the incumbent's (shared).
    assert!(admitted(&p.check(&mut store, &newcomer, 7_999)));
    assert_eq!(owner(&store), Some(incumbent.fingerprint()));
    // Once full (idle for a window), the newcomer takes it over: a fresh bucket,
    // which is what the incumbent would have had too.
    let c = p.check(&mut store, &newcomer, 20_000);
    assert!(admitted(&c) && !c.collision, "{c:?}");
    assert_eq!(owner(&store), Some(newcomer.fingerprint()));
    assert_eq!(
        c.decision,
        QuotaDecision::Admitted {
            limit: 4,
            remaining: 3,
            reset_seconds: 2
        }
    );
    // The former owner now shares the newcomer's bucket.
    let mut n = 0;
    while admitted(&p.check(&mut store, &incumbent, 20_000)) {
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn many_callers_in_one_slot_never_exceed_the_limit() {
    // max_keys_per_route: 1, so everyone collides: an attacker rotating keys gets
    // nothing more than one bucket.
    let p = policy_with(&cfg(10, 60, "header:x-k"), &settings(1, 16));
    let mut store = MemoryStore::new();
    let mut n = 0;
    for i in 0..1_000 {
        if admitted(&p.check(&mut store, &header_key(&p, &format!("k{i}")), 5)) {
            n += 1;
        }
    }
    assert_eq!(n, 10);
    assert_eq!(store.key_count(), 2);
}

#[test]
fn corrupt_slot_values_are_an_exhausted_bucket() {
    let p = policy(5, 10, "route");
    let key = route_key(&p);
    let slot = p.slot_key(&key);
    let mut good = MemoryStore::new();
    assert!(admitted(&p.check(&mut good, &key, 0)));
    let valid = good.raw(&slot).map(<[u8]>::to_vec).unwrap_or_default();
    let mut wrong_version = valid.clone();
    wrong_version[0] = 2;
    for bad in [
        vec![],
        b"garbage".to_vec(),
        wrong_version,
        valid[..20].to_vec(),
        [valid.clone(), vec![0]].concat(),
    ] {
        let mut store = MemoryStore::new();
        store.put_raw(&slot, &bad);
        let c = p.check(&mut store, &key, 50_000);
        assert!(c.repaired, "{bad:?}");
        assert_eq!(
            c.decision,
            QuotaDecision::Limited {
                limit: 5,
                retry_after_seconds: 2,
                reset_seconds: 10
            }
        );
        // Repaired to a valid, exhausted bucket: one request back after 2 s.
        assert!(!admitted(&p.check(&mut store, &key, 51_999)));
        let c = p.check(&mut store, &key, 52_000);
        assert!(admitted(&c) && !c.repaired);
        assert!(!admitted(&p.check(&mut store, &key, 52_000)));
    }
}

#[test]
fn reload_with_new_parameters_is_not_a_reset() {
    let key_of = |p: &QuotaPolicy| route_key(p);
    let mut store = MemoryStore::new();
    let small = policy(5, 10, "route");
    for _ in 0..5 {
        assert!(admitted(&small.check(&mut store, &key_of(&small), 1_000)));
    }
    // A higher limit keeps the debt (10 s of it): one request per 100 ms now.
    let big = policy(100, 10, "route");
    assert!(!admitted(&big.check(&mut store, &key_of(&big), 1_000)));
    assert!(admitted(&big.check(&mut store, &key_of(&big), 1_100)));
    // A shorter window caps the debt at one (new) window, no more.
    let short = policy(5, 1, "route");
    let c = short.check(&mut store, &key_of(&short), 1_100);
    assert!(!admitted(&c));
    assert!(admitted(&short.check(&mut store, &key_of(&short), 1_300)));
}

#[test]
fn clock_stepping_back_is_capped_at_one_window() {
    let p = policy(2, 10, "route");
    let key = route_key(&p);
    let mut store = MemoryStore::new();
    assert!(admitted(&p.check(&mut store, &key, 10_000_000)));
    assert!(admitted(&p.check(&mut store, &key, 10_000_000)));
    // Clock goes back an hour: exhausted, but back after one interval, not an hour.
    let back = 10_000_000 - 3_600_000;
    let c = p.check(&mut store, &key, back);
    assert_eq!(
        c.decision,
        QuotaDecision::Limited {
            limit: 2,
            retry_after_seconds: 5,
            reset_seconds: 10
        }
    );
    assert!(!admitted(&p.check(&mut store, &key, back + 4_999)));
    assert!(admitted(&p.check(&mut store, &key, back + 5_000)));
}

#[test]
fn slot_values_round_trip_compactly() {
    let st = SlotState {
        owner: 0x0123_4567_89ab_cdef,
        tat_ms: 1_700_000_000_123,
        tat_frac: 999,
    };
    let bytes = st.encode();
    assert_eq!(bytes.len(), 21);
    assert_eq!(bytes[0], 1);
    assert_eq!(SlotState::decode(&bytes), Some(st));
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

fn claims(v: Value) -> Claims {
    match v {
        Value::Object(m) => m,
        _ => Claims::new(),
    }
}

#[test]
fn caller_keys_by_kind() {
    let alice = claims(json!({"sub": "alice", "org": {"id": 7}, "groups": ["a", "b"]}));
    let bob = claims(json!({"sub": "bob"}));
    let by_sub = policy(10, 60, "claim:sub");
    let k = |p: &QuotaPolicy, ip: Option<&str>, c: Option<&Claims>| {
        p.caller_key(&KeyInputs {
            client_ip: ip,
            claims: c,
            header: &no_headers,
        })
    };
    let a = k(&by_sub, None, Some(&alice));
    assert!(!a.is_anonymous());
    assert_eq!(
        a,
        k(&by_sub, Some("9.9.9.9"), Some(&alice)),
        "only the claim counts"
    );
    assert_ne!(a.fingerprint(), k(&by_sub, None, Some(&bob)).fingerprint());
    // Missing claim / no token: the route's anonymous bucket.
    let anon = k(&by_sub, None, Some(&Claims::new()));
    assert!(anon.is_anonymous());
    assert_eq!(anon, k(&by_sub, None, None));
    assert_ne!(anon.fingerprint(), a.fingerprint());
    // Nested and non-scalar claims.
    let by_org = policy(10, 60, "claim:org.id");
    assert!(!k(&by_org, None, Some(&alice)).is_anonymous());
    let by_groups = policy(10, 60, "claim:groups");
    let g = k(&by_groups, None, Some(&alice));
    assert!(!g.is_anonymous());
    // A string claim that happens to read like the array's JSON is another caller.
    let lookalike = claims(json!({"groups": "[\"a\",\"b\"]"}));
    assert_ne!(
        g.fingerprint(),
        k(&by_groups, None, Some(&lookalike)).fingerprint()
    );

    // by: ip canonicalises: port, brackets, IPv4-mapped IPv6.
    let by_ip = policy(10, 60, "ip");
    let base = k(&by_ip, Some("10.0.0.1"), None);
    for same in [
        "10.0.0.1:1234",
        " 10.0.0.1 ",
        "[::ffff:10.0.0.1]:80",
        "::ffff:10.0.0.1",
    ] {
        assert_eq!(k(&by_ip, Some(same), None), base, "{same}");
    }
    assert_eq!(
        k(&by_ip, Some("[2001:db8::1]:443"), None),
        k(&by_ip, Some("2001:0db8:0:0::1"), None)
    );
    assert_ne!(k(&by_ip, Some("10.0.0.2"), None), base);
    assert!(k(&by_ip, None, None).is_anonymous());
    assert!(k(&by_ip, Some("/var/run/envoy.sock"), None).is_anonymous());

    // by: header: lowercased name, missing header is anonymous.
    let by_h = policy(10, 60, "header:X-K");
    assert_eq!(by_h.by(), &KeyBy::Header("x-k".into()));
    assert!(!header_key(&by_h, "t1").is_anonymous());
    assert_ne!(header_key(&by_h, "t1"), header_key(&by_h, "t2"));
    assert!(route_key(&by_h).is_anonymous());

    // by: route: one key for everyone.
    let by_route = policy(10, 60, "route");
    assert_eq!(
        k(&by_route, Some("1.1.1.1"), Some(&alice)),
        route_key(&by_route)
    );
    assert!(!route_key(&by_route).is_anonymous());
    assert_eq!(by_route.slots(), 1);
}

#[test]
fn keys_depend_on_route_and_salt() {
    let c = cfg(10, 60, "header:x-k");
    let plain = QuotaSettings::default();
    let salted = QuotaSettings {
        key_salt: Some("0123456789abcdef-secret".into()),
        ..QuotaSettings::default()
    };
    let compile = |s: &QuotaSettings, route: &str| match QuotaPolicy::compile(&c, s, route, "q") {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let a = header_key(&compile(&plain, "a"), "v");
    let b = header_key(&compile(&plain, "b"), "v");
    let a_salted = header_key(&compile(&salted, "a"), "v");
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_ne!(a.fingerprint(), a_salted.fingerprint());
    // Deterministic: every worker computes the same key.
    assert_eq!(a, header_key(&compile(&plain, "a"), "v"));
    assert_eq!(
        compile(&plain, "orders").slot_key(&a),
        format!("apiguard.q.orders.{}", a.slot())
    );
}

#[test]
fn siphash_matches_the_reference_vectors() {
    let (k0, k1) = (0x0706_0504_0302_0100u64, 0x0f0e_0d0c_0b0a_0908u64);
    let msg: Vec<u8> = (0u8..64).collect();
    let one_shot = |m: &[u8]| {
        let mut h = SipHasher24::new(k0, k1);
        h.write(m);
        h.finish()
    };
    // From the SipHash paper (Appendix A) and its reference implementation.
    assert_eq!(one_shot(&[]), 0x726f_db47_dd0e_0e31);
    assert_eq!(one_shot(&msg[..15]), 0xa129_ca61_49be_45e5);
    // Against std's (deprecated, still SipHash-2-4) hasher, split writes included.
    for len in 0..64 {
        let reference = std_siphash(k0, k1, &msg[..len]);
        let mut split = SipHasher24::new(k0, k1);
        let (x, y) = msg[..len].split_at(len / 3);
        split.write(x);
        split.write(y);
        assert_eq!(split.finish(), reference, "len {len}");
        assert_eq!(one_shot(&msg[..len]), reference, "len {len}");
    }
}

#[allow(deprecated)]
fn std_siphash(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
    h.write(bytes);
    h.finish()
}

// ---------------------------------------------------------------------------
// client_ip / X-Forwarded-For
// ---------------------------------------------------------------------------

#[test]
fn client_ip_table() {
    let src = Some("192.0.2.9:40000");
    /// (source.address, X-Forwarded-For, trusted hops, expected client address)
    type Case<'a> = (Option<&'a str>, Option<&'a str>, u32, Option<&'a str>);
    let cases: Vec<Case> = vec![
        // source.address forms
        (Some("127.0.0.1:54321"), None, 0, Some("127.0.0.1")),
        (Some("[::1]:5432"), None, 0, Some("::1")),
        (Some("[2001:DB8:0::1]:80"), None, 0, Some("2001:db8::1")),
        (Some("[::ffff:192.0.2.1]:80"), None, 0, Some("192.0.2.1")),
        (Some("10.1.2.3"), None, 0, Some("10.1.2.3")),
        (Some("/tmp/envoy.sock"), None, 0, None),
        (Some(""), None, 0, None),
        (None, None, 0, None),
        // trusted_hops 0: XFF is ignored whatever it says
        (src, Some("203.0.113.7"), 0, Some("192.0.2.9")),
        // N hops: the Nth from the right
        (src, Some("203.0.113.7"), 1, Some("203.0.113.7")),
        (src, Some("6.6.6.6, 203.0.113.7"), 1, Some("203.0.113.7")),
        (
            src,
            Some("6.6.6.6, 203.0.113.7, 10.0.0.2"),
            2,
            Some("203.0.113.7"),
        ),
        (
            src,
            Some("6.6.6.6,203.0.113.7,10.0.0.2"),
            2,
            Some("203.0.113.7"),
        ),
        (
            src,
            Some("6.6.6.6, [2001:db8::7]:1234"),
            1,
            Some("2001:db8::7"),
        ),
        (
            src,
            Some("6.6.6.6, 203.0.113.7:8080"),
            1,
            Some("203.0.113.7"),
        ),
        (src, Some("6.6.6.6, 2001:db8::7"), 1, Some("2001:db8::7")),
        // client-written junk to the left never shifts the trusted entries
        (
            src,
            Some("junk,,, 1.1.1.1, , 203.0.113.7"),
            1,
            Some("203.0.113.7"),
        ),
        // fewer entries than hops (request bypassed a proxy): the real peer
        (src, Some("203.0.113.7"), 2, Some("192.0.2.9")),
        (src, None, 1, Some("192.0.2.9")),
        (src, Some(""), 1, Some("192.0.2.9")),
        // the Nth entry is not an address: the real peer, not a neighbour entry
        (src, Some("1.1.1.1, unknown"), 1, Some("192.0.2.9")),
        (src, Some("1.1.1.1, 203.0.113.7 evil"), 1, Some("192.0.2.9")),
        (src, Some("1.1.1.1, "), 1, Some("192.0.2.9")),
        (src, Some("1.1.1.1, 2.2.2.2"), u32::MAX, Some("192.0.2.9")),
        (None, Some("1.1.1.1, unknown"), 1, None),
    ];
    for (source, xff, hops, want) in cases {
        assert_eq!(
            client_ip(source, xff, hops).as_deref(),
            want,
            "source {source:?}, xff {xff:?}, hops {hops}"
        );
    }
}

// ---------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------

#[test]
fn config_errors_name_the_field() {
    let ok = QuotaSettings::default();
    let cases: Vec<(QuotaConfig, QuotaSettings, &str)> = vec![
        (cfg(0, 60, "ip"), ok.clone(), "routes[1].quota.limit: must be > 0"),
        (cfg(MAX_LIMIT + 1, 60, "ip"), ok.clone(), "routes[1].quota.limit: must be <= 1000000000"),
        (cfg(10, 0, "ip"), ok.clone(), "routes[1].quota.window_seconds: must be > 0"),
        (
            cfg(10, MAX_WINDOW_SECONDS + 1, "ip"),
            ok.clone(),
            "routes[1].quota.window_seconds: must be <= 31536000",
        ),
        (
            cfg(10, 60, "user"),
            ok.clone(),
            "routes[1].quota.by: expected `ip`, `route`, `claim:<name>` or `header:<name>`, got `user`",
        ),
        (cfg(10, 60, ""), ok.clone(), "routes[1].quota.by: expected `ip`, `route`, `claim:<name>` or `header:<name>`, got ``"),
        (cfg(10, 60, "IP"), ok.clone(), "routes[1].quota.by: expected `ip`, `route`, `claim:<name>` or `header:<name>`, got `IP`"),
        (cfg(10, 60, "claim:"), ok.clone(), "routes[1].quota.by: expected a claim name after `claim:`, got `claim:`"),
        (cfg(10, 60, "claim: sub"), ok.clone(), "routes[1].quota.by: expected a claim name after `claim:`, got `claim: sub`"),
        (
            cfg(10, 60, "header:"),
            ok.clone(),
            "routes[1].quota.by: expected a header name (RFC 9110 token) after `header:`, got `header:`",
        ),
        (
            cfg(10, 60, "header:x forwarded"),
            ok.clone(),
            "routes[1].quota.by: expected a header name (RFC 9110 token) after `header:`, got `header:x forwarded`",
        ),
        (cfg(10, 60, "ip"), settings(0, 16), "quota_settings.max_keys_per_route: must be > 0"),
        (cfg(10, 60, "ip"), settings(MAX_KEYS_PER_ROUTE + 1, 16), "quota_settings.max_keys_per_route: must be <= 1000000"),
        (cfg(10, 60, "ip"), settings(10, MAX_CAS_RETRIES + 1), "quota_settings.max_cas_retries: must be <= 1000"),
        (
            cfg(10, 60, "ip"),
            QuotaSettings {
                key_salt: Some("short".into()),
                ..QuotaSettings::default()
            },
            "quota_settings.key_salt: must be at least 16 bytes",
        ),
    ];
    for (c, s, want) in cases {
        assert_eq!(compile_err(&c, &s), want);
    }
    // A long bad value is not echoed in full.
    let long = format!("x{}", "y".repeat(500));
    assert!(compile_err(&cfg(1, 1, &long), &ok).len() < 200);
}

#[test]
fn valid_configs_compile() {
    for by in [
        "ip",
        "route",
        "claim:sub",
        "claim:https://example.com/tenant",
        "header:x-api-key",
    ] {
        let p = policy(1, 1, by);
        assert_eq!(p.limit(), 1);
        assert_eq!(p.window_seconds(), 1);
        assert_eq!(p.route(), "r");
    }
    let p = policy_with(
        &cfg(MAX_LIMIT, MAX_WINDOW_SECONDS, "ip"),
        &settings(MAX_KEYS_PER_ROUTE, 0),
    );
    assert_eq!(p.slots(), MAX_KEYS_PER_ROUTE);
    assert_eq!(p.failure_mode(), FailureMode::Closed);
    assert!(p.headers_on_success());
}

#[test]
fn contract_json_compiles_with_defaults() {
    let raw = br#"{"routes":[{"name":"get-order","match":{"path":"/x"},
        "quota":{"limit":100,"window_seconds":60,"by":"claim:sub"}}]}"#;
    let parsed = match crate::config::parse(raw) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let route = &parsed.routes[0];
    let q = route.quota.as_ref().map(|q| {
        let entries = crate::config::quota_entries(q, "routes[0].quota").unwrap();
        QuotaPolicy::compile(
            &entries[0].0,
            &parsed.quota_settings,
            &route.name,
            "routes[0].quota",
        )
    });
    match q {
        Some(Ok(p)) => {
            assert_eq!(p.by(), &KeyBy::Claim("sub".into()));
            assert_eq!(p.slots(), 10_000);
            assert_eq!(p.failure_mode(), FailureMode::Closed);
        }
        other => panic!("{other:?}"),
    }
    let bad = br#"{"routes":[],"quota_settings":{"key_salt":1}}"#;
    assert!(crate::config::parse(bad).is_err());
}

// ---------------------------------------------------------------------------
// Mapping to replies and headers
// ---------------------------------------------------------------------------

#[test]
fn decisions_map_to_rejections_and_headers() {
    let p = policy(10, 60, "route");
    let ok = QuotaDecision::Admitted {
        limit: 10,
        remaining: 7,
        reset_seconds: 18,
    };
    assert_eq!(p.rejection(&ok), None);
    assert_eq!(ok.label(), "admitted");
    assert_eq!(
        p.success_headers(&ok),
        Some([
            ("ratelimit-limit", "10".to_string()),
            ("ratelimit-remaining", "7".to_string()),
            ("ratelimit-reset", "18".to_string()),
        ])
    );
    let mut quiet = cfg(10, 60, "route");
    quiet.headers_on_success = false;
    assert_eq!(
        policy_with(&quiet, &QuotaSettings::default()).success_headers(&ok),
        None
    );

    let no = QuotaDecision::Limited {
        limit: 10,
        retry_after_seconds: 6,
        reset_seconds: 60,
    };
    assert_eq!(no.label(), "limited");
    assert_eq!(no.rate_limit_headers(), None);
    let rej = p.rejection(&no);
    assert_eq!(
        rej,
        Some(Rejection::TooManyRequests {
            limit: 10,
            retry_after: 6,
            reset: 60
        })
    );
    let reply = rej.map(|r| r.render());
    assert_eq!(reply.as_ref().map(|r| r.status), Some(429));
    assert!(reply.is_some_and(|r| r.headers.contains(&("retry-after".into(), "6".into()))));
}

#[test]
fn debug_output_hides_secrets_and_values() {
    let s = QuotaSettings {
        key_salt: Some("0123456789abcdef-secret".into()),
        ..QuotaSettings::default()
    };
    let p = policy_with(&cfg(1, 1, "claim:sub"), &s);
    let shown = format!("{p:?}");
    assert!(
        !shown.contains("hash_key") && !shown.contains("secret"),
        "{shown}"
    );
    let c = claims(json!({"sub": "alice-private"}));
    let inputs = KeyInputs {
        client_ip: None,
        claims: Some(&c),
        header: &no_headers,
    };
    assert!(!format!("{inputs:?}").contains("alice"));
    assert!(!format!("{:?}", p.caller_key(&inputs)).contains("alice"));
}

#[test]
fn decimals_are_written_as_format_writes_them() {
    let mut n = 1u64;
    let mut cases = vec![0, 7, u64::MAX, u64::MAX - 1];
    while let Some(next) = n.checked_mul(10) {
        cases.extend([n - 1, n, n + 1]);
        n = next;
    }
    for n in cases {
        assert_eq!(
            with_decimal("apiguard.q.r.", n),
            format!("apiguard.q.r.{n}")
        );
        assert_eq!(with_decimal("", n), n.to_string());
    }
}
