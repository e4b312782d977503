use super::*;
use crate::config::{BlockRuleConfig, QuotaSettings};
use crate::quota::MemoryStore;

fn settings() -> QuotaSettings {
    QuotaSettings {
        key_salt: Some("blocking-test-salt-0123".into()),
        ..QuotaSettings::default()
    }
}

fn rule(name: &str, count: &str) -> BlockRuleConfig {
    BlockRuleConfig {
        name: name.into(),
        count: count.into(),
        by: "ip".into(),
        max: 3,
        window_seconds: 60,
        block_seconds: 30,
        routes: None,
        param: None,
        statuses: Vec::new(),
        mode: None,
    }
}

fn routes() -> Vec<RouteInfo<'static>> {
    vec![
        RouteInfo {
            name: "orders",
            params: vec!["shop".into(), "id".into()],
        },
        RouteInfo {
            name: "login",
            params: vec![],
        },
    ]
}

fn compile(rules: Vec<BlockRuleConfig>) -> Result<BlockingPolicy, ConfigError> {
    BlockingPolicy::compile(
        &BlockingConfig { rules },
        &settings(),
        &routes(),
        Mode::Enforce,
    )
}

fn one(r: BlockRuleConfig) -> Rule {
    compile(vec![r]).unwrap().rules.remove(0)
}

fn ip_key(rule: &Rule, ip: &str) -> CallerKey {
    let header = |_: &str| None;
    rule.caller(&KeyInputs {
        client_ip: Some(ip),
        claims: None,
        header: &header,
    })
    .unwrap()
}

#[test]
fn block_starts_after_max_events_and_ends_by_itself() {
    let r = one(rule("guess", "auth_failures"));
    let mut store = MemoryStore::new();
    let a = ip_key(&r, "10.0.0.1");
    let b = ip_key(&r, "10.0.0.2");
    let t = 1_000_000;
    for i in 0..3 {
        assert_eq!(r.count(&mut store, &a, t + i), Event::Counted, "event {i}");
        assert_eq!(r.blocked_for(&store, &a, t + i), None);
    }
    assert_eq!(r.count(&mut store, &a, t + 3), Event::BlockStarted);
    assert_eq!(r.blocked_for(&store, &a, t + 3), Some(30_000));
    assert_eq!(r.blocked_for(&store, &a, t + 10_003), Some(20_000));
    // One block: more events while it runs do not start another.
    assert_eq!(r.count(&mut store, &a, t + 4), Event::AlreadyBlocked);
    // Another caller is untouched.
    assert_eq!(r.blocked_for(&store, &b, t + 5), None);
    assert_eq!(r.count(&mut store, &b, t + 5), Event::Counted);
    // The block ends by itself.
    assert_eq!(r.blocked_for(&store, &a, t + 30_003), None);
    // After the window refills, counting starts over.
    let later = t + 30_003 + 60_000;
    for i in 0..3 {
        assert_eq!(r.count(&mut store, &a, later + i), Event::Counted);
    }
    assert_eq!(r.count(&mut store, &a, later + 3), Event::BlockStarted);
}

#[test]
fn callers_without_a_key_are_not_counted() {
    let mut cfg = rule("stuffing", "status");
    cfg.by = "claim:sub".into();
    cfg.statuses = vec![401];
    let r = one(cfg);
    let header = |_: &str| None;
    let inputs = KeyInputs {
        client_ip: Some("10.0.0.1"),
        claims: None,
        header: &header,
    };
    assert!(r.caller(&inputs).is_none());
    assert!(!r.keyed_before_auth());
}

#[test]
fn distinct_values_count_once_and_pass_max_on_the_next_new_one() {
    let mut cfg = rule("walk", "distinct_param");
    cfg.param = Some("id".into());
    cfg.routes = Some(vec!["orders".into()]);
    let r = one(cfg);
    assert!(r.counts_on(Some(0)) && !r.counts_on(Some(1)) && !r.counts_on(None));
    let mut store = MemoryStore::new();
    let a = ip_key(&r, "10.0.0.1");
    let t = 5_000_000;
    for id in ["1", "2", "3"] {
        assert_eq!(
            r.count_distinct(&mut store, &a, id, t),
            Event::Counted,
            "{id}"
        );
        // Repeating an id is never an event.
        for _ in 0..5 {
            assert_eq!(
                r.count_distinct(&mut store, &a, id, t),
                Event::Ignored,
                "{id}"
            );
        }
    }
    assert_eq!(r.blocked_for(&store, &a, t), None);
    assert_eq!(
        r.count_distinct(&mut store, &a, "4", t + 1),
        Event::BlockStarted
    );
    assert!(r.blocked_for(&store, &a, t + 1).is_some());
    // The set stays bounded: max + 1 values.
    let raw = store.raw(&r.set_key(&a)).unwrap();
    assert_eq!(raw.len(), 17 + 4 * 4);
    // A new window clears the set.
    let b = ip_key(&r, "10.0.0.2");
    for id in ["1", "2", "3"] {
        assert_eq!(r.count_distinct(&mut store, &b, id, t), Event::Counted);
    }
    assert_eq!(
        r.count_distinct(&mut store, &b, "4", t + 60_000),
        Event::Counted
    );
}

#[test]
fn a_full_block_slot_gives_way_to_the_block_that_ends_last() {
    let r = one(rule("scan", "not_found"));
    let mut store = MemoryStore::new();
    let key = ip_key(&r, "10.0.0.9");
    // Five callers made to share one slot: fingerprints differ.
    let callers: Vec<CallerKey> = (0..5u64)
        .map(|i| CallerKey::for_tests(key.slot(), 1000 + i))
        .collect();
    for (i, c) in callers.iter().enumerate() {
        assert_eq!(
            r.start_block(&mut store, c, 1_000 + i as u64),
            Event::BlockStarted
        );
    }
    // The first (ending first) gave way to the fifth; the other four still hold.
    assert_eq!(r.blocked_for(&store, &callers[0], 2_000), None);
    for c in &callers[1..] {
        assert!(r.blocked_for(&store, c, 2_000).is_some());
    }
    // Sharing a slot never blocks a caller whose fingerprint is not there.
    let stranger = CallerKey::for_tests(key.slot(), 7);
    assert_eq!(r.blocked_for(&store, &stranger, 2_000), None);
}

#[test]
fn store_values_of_another_layout_are_not_trusted_and_never_panic() {
    let r = one(rule("scan", "not_found"));
    let mut store = MemoryStore::new();
    let a = ip_key(&r, "10.0.0.1");
    for junk in [
        &b""[..],
        b"\x02",
        b"\x01abc",
        &[1u8; 1 + 16 * 5],
        &[9u8; 40],
    ] {
        store.put_raw(&r.block_key(&a), junk);
        assert_eq!(r.blocked_for(&store, &a, 1), None);
        // Starting a block over garbage replaces it.
        assert_eq!(r.start_block(&mut store, &a, 1), Event::BlockStarted);
        assert!(r.blocked_for(&store, &a, 2).is_some());
    }
    let mut cfg = rule("walk", "distinct_param");
    cfg.param = Some("id".into());
    cfg.routes = Some(vec!["orders".into()]);
    let d = one(cfg);
    for junk in [&b""[..], b"\x01short", &[1u8; 17 + 3], &[1u8; 17 + 8]] {
        store.put_raw(&d.set_key(&a), junk);
        assert_eq!(d.count_distinct(&mut store, &a, "x", 10), Event::Counted);
    }
}

#[test]
fn store_failures_fail_open() {
    let r = one(rule("guess", "auth_failures"));
    let mut store = MemoryStore::new();
    let a = ip_key(&r, "10.0.0.1");
    store.set_unavailable(true);
    for _ in 0..10 {
        assert_eq!(r.count(&mut store, &a, 1), Event::Ignored);
    }
    assert_eq!(r.blocked_for(&store, &a, 1), None);
}

#[test]
fn concurrent_writers_lose_no_event() {
    // Another worker counts the same caller between each read and write.
    let r = one(rule("guess", "auth_failures"));
    let mut store = MemoryStore::new();
    let a = ip_key(&r, "10.0.0.1");
    let twin = one(rule("guess", "auth_failures"));
    let mut fired = 0;
    store.set_before_set(Some(Box::new(move |s: &mut MemoryStore, key: &str| {
        if key.starts_with("apiguard.q.~b.guess.") && fired < 1 {
            fired += 1;
            let k = ip_key(&twin, "10.0.0.1");
            assert_eq!(twin.count(s, &k, 10), Event::Counted);
        }
    })));
    // One event of ours plus one of the other worker: two of three.
    assert_eq!(r.count(&mut store, &a, 10), Event::Counted);
    assert_eq!(r.count(&mut store, &a, 11), Event::Counted);
    assert_eq!(r.count(&mut store, &a, 12), Event::BlockStarted);
}

#[test]
fn configuration_errors_name_the_field() {
    let cases: Vec<(BlockRuleConfig, &str, &str)> = vec![
        (
            BlockRuleConfig {
                max: 0,
                ..rule("a", "not_found")
            },
            "blocking.rules[0].max",
            "must be > 0",
        ),
        (
            BlockRuleConfig {
                routes: Some(vec!["nope".into()]),
                ..rule("a", "not_found")
            },
            "blocking.rules[0].routes[0]",
            "no route is named \"nope\"",
        ),
        (
            BlockRuleConfig {
                param: Some("sku".into()),
                routes: Some(vec!["orders".into()]),
                ..rule("a", "distinct_param")
            },
            "blocking.rules[0].param",
            "\"sku\" is not a parameter of route \"orders\"",
        ),
        (
            BlockRuleConfig {
                param: Some("id".into()),
                ..rule("a", "distinct_param")
            },
            "blocking.rules[0].routes",
            "required",
        ),
        (
            rule("a", "distinct_param"),
            "blocking.rules[0].param",
            "required",
        ),
        (
            rule("a", "status"),
            "blocking.rules[0].statuses",
            "required",
        ),
        (
            BlockRuleConfig {
                statuses: vec![99],
                ..rule("a", "status")
            },
            "blocking.rules[0].statuses[0]",
            ">= 100",
        ),
        (
            BlockRuleConfig {
                statuses: vec![401],
                ..rule("a", "not_found")
            },
            "blocking.rules[0].statuses",
            "only for count \"status\"",
        ),
        (
            rule("a", "guesses"),
            "blocking.rules[0].count",
            "unknown variant `guesses`",
        ),
        (
            BlockRuleConfig {
                by: "route".into(),
                ..rule("a", "not_found")
            },
            "blocking.rules[0].by",
            "every caller",
        ),
        (
            BlockRuleConfig {
                by: "cookie:x".into(),
                ..rule("a", "not_found")
            },
            "blocking.rules[0].by",
            "expected `ip`",
        ),
        (
            BlockRuleConfig {
                block_seconds: 0,
                ..rule("a", "not_found")
            },
            "blocking.rules[0].block_seconds",
            "must be > 0",
        ),
        (
            BlockRuleConfig {
                mode: Some("shadow".into()),
                ..rule("a", "not_found")
            },
            "blocking.rules[0].mode",
            "unknown variant",
        ),
        (
            rule("a b", "not_found"),
            "blocking.rules[0].name",
            "must be",
        ),
    ];
    for (cfg, path, words) in cases {
        let e = compile(vec![cfg]).unwrap_err();
        assert_eq!(e.path, path, "{e}");
        assert!(e.message.contains(words), "{e}");
    }
    let e = compile(vec![rule("a", "not_found"), rule("a", "not_found")]).unwrap_err();
    assert_eq!(e.path, "blocking.rules[1].name");
    let e = BlockingPolicy::compile(
        &BlockingConfig {
            rules: vec![rule("a", "not_found")],
        },
        &QuotaSettings::default(),
        &routes(),
        Mode::Enforce,
    )
    .unwrap_err();
    assert_eq!(e.path, "quota_settings.key_salt");
    // No rules, no salt needed.
    assert!(BlockingPolicy::compile(
        &BlockingConfig::default(),
        &QuotaSettings::default(),
        &routes(),
        Mode::Enforce
    )
    .unwrap()
    .is_empty());
}

#[test]
fn rule_mode_overrides_the_top_level_one() {
    let r = BlockingPolicy::compile(
        &BlockingConfig {
            rules: vec![
                rule("a", "not_found"),
                BlockRuleConfig {
                    mode: Some("enforce".into()),
                    ..rule("b", "not_found")
                },
            ],
        },
        &settings(),
        &routes(),
        Mode::Report,
    )
    .unwrap();
    assert_eq!(r.rules[0].mode, Mode::Report);
    assert_eq!(r.rules[1].mode, Mode::Enforce);
}

#[test]
fn the_horizon_covers_every_running_block_and_only_grows() {
    let mut long = rule("long", "not_found");
    long.block_seconds = 60;
    let policy = compile(vec![rule("short", "auth_failures"), long]).unwrap();
    let (short, long) = (&policy.rules[0], &policy.rules[1]);
    let mut store = MemoryStore::new();
    let a = ip_key(short, "10.0.0.1");
    let b = ip_key(long, "10.0.0.2");
    let t = 5_000_000;
    // Nothing ever blocked: no slot needs reading.
    assert!(!policy.blocks_may_run(&store, t));
    assert_eq!(short.start_block(&mut store, &a, t), Event::BlockStarted);
    assert_eq!(
        long.start_block(&mut store, &b, t + 10),
        Event::BlockStarted
    );
    // A later, shorter block leaves the horizon where the longest one put it.
    let c = ip_key(short, "10.0.0.3");
    assert_eq!(
        short.start_block(&mut store, &c, t + 20),
        Event::BlockStarted
    );
    for now in (t - 1_000..t + 70_000).step_by(250) {
        let running = [(short, &a), (long, &b), (short, &c)]
            .iter()
            .any(|(r, k)| r.blocked_for(&store, k, now).is_some());
        if running {
            assert!(policy.blocks_may_run(&store, now), "at {now}");
        }
    }
    assert!(policy.blocks_may_run(&store, t + 60_009));
    assert!(!policy.blocks_may_run(&store, t + 60_010));
}

#[test]
fn a_block_whose_horizon_cannot_be_raised_is_not_recorded() {
    let policy = compile(vec![rule("guess", "auth_failures")]).unwrap();
    let r = &policy.rules[0];
    let mut store = MemoryStore::new();
    let a = ip_key(r, "10.0.0.1");
    store.set_before_set(Some(Box::new(|s: &mut MemoryStore, key: &str| {
        s.set_unavailable(key == "apiguard.bh");
    })));
    assert_eq!(r.start_block(&mut store, &a, 1_000), Event::Ignored);
    store.set_unavailable(false);
    store.set_before_set(None);
    // Neither the horizon nor a block: fail open, as a whole.
    assert_eq!(r.blocked_for(&store, &a, 1_001), None);
    assert!(!policy.blocks_may_run(&store, 1_001));
    assert_eq!(r.start_block(&mut store, &a, 2_000), Event::BlockStarted);
    assert!(policy.blocks_may_run(&store, 2_001));
}

#[test]
fn a_horizon_raised_concurrently_keeps_the_later_end() {
    let mut long = rule("long", "not_found");
    long.block_seconds = 600;
    let policy = compile(vec![rule("short", "auth_failures"), long]).unwrap();
    let long = &policy.rules[1];
    let twin = one(rule("short", "auth_failures"));
    let mut store = MemoryStore::new();
    let mut fired = false;
    // Another worker starts a 30 s block between our read of the horizon and our
    // write of it: our write must not be lost to its earlier end.
    store.set_before_set(Some(Box::new(move |s: &mut MemoryStore, key: &str| {
        if key == "apiguard.bh" && !fired {
            fired = true;
            let k = ip_key(&twin, "10.0.0.9");
            assert_eq!(twin.start_block(s, &k, 1_000), Event::BlockStarted);
        }
    })));
    let a = ip_key(long, "10.0.0.1");
    assert_eq!(long.start_block(&mut store, &a, 1_000), Event::BlockStarted);
    assert!(long.blocked_for(&store, &a, 1_000 + 599_999).is_some());
    assert!(policy.blocks_may_run(&store, 1_000 + 599_999));
    assert!(!policy.blocks_may_run(&store, 1_000 + 600_000));
}

#[test]
fn a_horizon_of_another_layout_means_the_slots_are_read() {
    let policy = compile(vec![rule("guess", "auth_failures")]).unwrap();
    let r = &policy.rules[0];
    let mut store = MemoryStore::new();
    for junk in [&b""[..], b"\x02", b"\x01abc", &[1u8; 10], &[2u8; 9]] {
        store.put_raw("apiguard.bh", junk);
        assert!(policy.blocks_may_run(&store, u64::MAX - 1), "{junk:?}");
        // The next block writes a horizon of this layout over it.
        let a = ip_key(r, "10.0.0.1");
        assert_eq!(r.start_block(&mut store, &a, 10), Event::BlockStarted);
        assert!(!policy.blocks_may_run(&store, 10 + 30_000));
        store.put_raw(&r.block_key(&a), b"");
    }
    store.set_unavailable(true);
    assert!(!policy.blocks_may_run(&store, 0));
}
