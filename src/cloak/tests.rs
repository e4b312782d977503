//! Tokens: the documented construction (checked against an independent HKDF and
//! HMAC), round trips, binding to kind, caller and key, every kind of broken
//! token, random values and random input; `routes[].cloak` and `cloak_key` errors;
//! the path rewrite.

use super::*;
use crate::config::Semicolons;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// A key of 32 bytes `seed, seed + 1, ...`, as configured (standard base64).
fn key_text(seed: u8, len: usize) -> String {
    let bytes: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
    STANDARD.encode(bytes)
}

fn keys_of(cfg: Value) -> Rc<CloakKeys> {
    match CloakKeys::compile(Some(&cfg)) {
        Ok(Some(k)) => k,
        other => unreachable!("{other:?}"),
    }
}

fn keys(seed: u8) -> Rc<CloakKeys> {
    keys_of(json!(key_text(seed, 32)))
}

fn token(k: &CloakKeys, kind: &str, caller: Option<&str>, value: &str) -> String {
    k.cloak(kind, caller, value).unwrap_or_default()
}

fn key_error(cfg: Value) -> String {
    match CloakKeys::compile(Some(&cfg)) {
        Ok(_) => "<ok>".into(),
        Err(e) => e.to_string(),
    }
}

/// HKDF-Expand of `secret` with ring's own HKDF (the filter computes it as HMAC).
fn expand(secret: &[u8], info: &[u8]) -> [u8; 32] {
    struct Len(usize);
    impl ring::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = ring::hkdf::Prk::new_less_safe(ring::hkdf::HKDF_SHA256, secret);
    let mut out = [0u8; 32];
    let filled = prk
        .expand(&[info], Len(32))
        .and_then(|okm| okm.fill(&mut out));
    assert!(filled.is_ok());
    out
}

/// `nonce || ChaCha20-Poly1305(enc, nonce, value, aad) || tag`.
fn seal(enc: &[u8; 32], nonce: [u8; 12], aad: &[u8], value: &str) -> Vec<u8> {
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, enc).unwrap(),
    );
    let mut sealed = value.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        ring::aead::Nonce::assume_unique_for_key(nonce),
        ring::aead::Aad::from(aad),
        &mut sealed,
    )
    .unwrap();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    out
}

#[test]
fn tokens_are_the_documented_construction() {
    // The keys with ring's HKDF, the nonce with an independent HMAC.
    let secret: Vec<u8> = (0..32u8).map(|i| 7 + i).collect();
    let enc = expand(&secret, b"api-guard cloak encryption");
    let mac = expand(&secret, b"api-guard cloak nonce");
    for (kind, caller, value) in [
        ("shop", None, "1001"),
        ("order", Some("alice"), "o-42"),
        ("x", Some(""), "caf\u{e9}/;?#"),
    ] {
        let mut context = vec![kind.len() as u8];
        context.extend_from_slice(kind.as_bytes());
        match caller {
            None => context.push(0),
            Some(sub) => {
                context.push(1);
                context.extend_from_slice(&(sub.len() as u32).to_be_bytes());
                context.extend_from_slice(sub.as_bytes());
            }
        }
        let mut msg = context.clone();
        msg.extend_from_slice(value.as_bytes());
        let full = hmac_sha256::HMAC::mac(&msg, mac);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&full[..12]);
        let want = seal(&enc, nonce, &context, value);
        let k = keys_of(json!(STANDARD.encode(&secret)));
        assert_eq!(
            token(&k, kind, caller, value),
            URL_SAFE_NO_PAD.encode(&want),
            "{kind} {caller:?} {value}"
        );
        // Sealed under the right key, but with a nonce not derived from the
        // value: authentic for ChaCha20-Poly1305, refused as a token.
        nonce[0] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(seal(&enc, nonce, &context, value));
        assert_eq!(k.decloak(kind, caller, &forged), None);
    }
}

#[test]
fn base64url_matches_the_crate() {
    for n in 0..70 {
        let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
        assert_eq!(b64url(&bytes), URL_SAFE_NO_PAD.encode(&bytes), "{n}");
    }
}

#[test]
fn round_trip_and_determinism() {
    let k = keys(1);
    for value in [
        "1001",
        "-7",
        "shop one",
        "caf\u{e9}",
        "a/b?c#d;e",
        "\u{0}",
        "😀",
    ] {
        let t = token(&k, "shop", None, value);
        assert_eq!(t, token(&k, "shop", None, value), "deterministic");
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "URL-safe: {t}"
        );
        // Compact: base64url of nonce, value and tag.
        assert_eq!(t.len(), ((12 + value.len() + 16) * 4).div_ceil(3));
        assert_eq!(k.decloak("shop", None, &t).as_deref(), Some(value));
        assert!(!t.contains(value) || value.len() < 2, "{t} shows {value}");
    }
    assert_ne!(
        token(&k, "shop", None, "1001"),
        token(&k, "shop", None, "1002")
    );
}

#[test]
fn tokens_are_bound_to_kind_caller_and_key() {
    let k = keys(1);
    let shop = token(&k, "shop", None, "1001");
    assert_eq!(k.decloak("order", None, &shop), None, "another kind");
    assert_eq!(k.decloak("shop", Some("alice"), &shop), None, "a caller");
    assert_eq!(keys(2).decloak("shop", None, &shop), None, "another key");
    let alice = token(&k, "shop", Some("alice"), "1001");
    assert_ne!(alice, shop);
    assert_ne!(alice, token(&k, "shop", Some("bob"), "1001"));
    assert_eq!(
        k.decloak("shop", Some("alice"), &alice).as_deref(),
        Some("1001")
    );
    assert_eq!(k.decloak("shop", Some("bob"), &alice), None);
    assert_eq!(k.decloak("shop", None, &alice), None);
    // Framing: ("ab", sub "c") and ("a", sub "bc") are different contexts.
    let t = token(&k, "ab", Some("c"), "v");
    assert_eq!(k.decloak("a", Some("bc"), &t), None);
    assert_eq!(k.decloak("abc", None, &t), None);
}

#[test]
fn every_changed_character_is_refused() {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let k = keys(3);
    for value in ["42", "shop-0001"] {
        let t = token(&k, "shop", Some("alice"), value);
        for i in 0..t.len() {
            for &c in ALPHABET {
                let mut bad = t.clone().into_bytes();
                if bad[i] == c {
                    continue;
                }
                bad[i] = c;
                let bad = String::from_utf8(bad).unwrap_or_default();
                assert_eq!(k.decloak("shop", Some("alice"), &bad), None, "{bad}");
            }
        }
        // Every byte of the decoded token, every bit.
        let bytes = URL_SAFE_NO_PAD.decode(&t).unwrap_or_default();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                let bad = URL_SAFE_NO_PAD.encode(&bad);
                assert_eq!(
                    k.decloak("shop", Some("alice"), &bad),
                    None,
                    "byte {i} bit {bit}"
                );
            }
        }
    }
}

#[test]
fn broken_tokens_are_refused() {
    let k = keys(4);
    let t = token(&k, "shop", None, "1001");
    for n in 0..t.len() {
        assert_eq!(k.decloak("shop", None, &t[..n]), None, "prefix {n}");
    }
    let long = format!("{t}A");
    let padded = format!("{t}=");
    let doubled = format!("{t}{t}");
    let huge = "A".repeat(10 * 1024 * 1024);
    for bad in [
        "",
        "1001",
        "shop-1",
        "%41",
        "....",
        "AAAA",
        &long,
        &padded,
        &doubled,
        &t.replace('-', "+"),
        &t.replace('_', "/"),
        " AAAA",
        "\u{e9}",
        &huge,
    ] {
        assert_eq!(
            k.decloak("shop", None, bad),
            None,
            "{}",
            &bad[..bad.len().min(40)]
        );
    }
    // The empty value has a token, which opens as nothing: an empty segment
    // would change the route.
    let empty = token(&k, "shop", None, "");
    assert!(!empty.is_empty());
    assert_eq!(k.decloak("shop", None, &empty), None);
    // The longest value that is cloaked still opens; a longer one is not cloaked.
    let longest = "x".repeat(MAX_VALUE_BYTES);
    let t = token(&k, "shop", None, &longest);
    assert!(t.len() <= MAX_TOKEN_CHARS);
    assert_eq!(
        k.decloak("shop", None, &t).as_deref(),
        Some(longest.as_str())
    );
    assert_eq!(k.cloak("shop", None, &format!("{longest}x")), None);
}

#[test]
fn random_values_round_trip_and_random_input_never_opens() {
    let k = keys(5);
    let mut rng = StdRng::seed_from_u64(0x00c1_0a4e);
    let mut seen = std::collections::HashMap::new();
    for _ in 0..2000 {
        let len = rng.gen_range(1..40);
        let value: String = (0..len)
            .map(|_| match rng.gen_range(0..4) {
                0 => char::from(rng.gen_range(b'0'..=b'9')),
                1 => char::from(rng.gen_range(0x20u8..0x7f)),
                2 => char::from_u32(rng.gen_range(0xa0..0x3000)).unwrap_or('x'),
                _ => char::from_u32(rng.gen_range(0x1f600..0x1f650)).unwrap_or('y'),
            })
            .collect();
        let caller = rng.gen_bool(0.5).then_some("sub-1");
        let t = token(&k, "kind", caller, &value);
        assert_eq!(
            k.decloak("kind", caller, &t).as_deref(),
            Some(value.as_str())
        );
        // One token per (value, caller), never one for two.
        let before = seen.insert(t.clone(), (value.clone(), caller));
        assert!(before.is_none_or(|b| b == (value.clone(), caller)), "{t}");
        // Random strings of the token alphabet and random bytes: never a value.
        let junk: String = (0..rng.gen_range(0..120))
            .map(|_| char::from(b"ABCxyz019-_+/=%. "[rng.gen_range(0..17)]))
            .collect();
        assert_eq!(k.decloak("kind", caller, &junk), None, "{junk}");
        let bytes: Vec<u8> = (0..rng.gen_range(29..80)).map(|_| rng.gen()).collect();
        assert_eq!(
            k.decloak("kind", caller, &URL_SAFE_NO_PAD.encode(bytes)),
            None
        );
    }
}

#[test]
fn previous_keys_still_open_their_tokens() {
    let (old, new) = (key_text(1, 32), key_text(9, 64));
    let before = keys_of(json!(old));
    let after = keys_of(json!([new, old]));
    let t = token(&before, "shop", None, "1001");
    assert_eq!(after.decloak("shop", None, &t).as_deref(), Some("1001"));
    // New tokens are made with the first key of the list.
    let fresh = token(&after, "shop", None, "1001");
    assert_ne!(fresh, t);
    assert_eq!(fresh, token(&keys_of(json!(new)), "shop", None, "1001"));
    assert_eq!(before.decloak("shop", None, &fresh), None);
    // Once the old key is dropped, its tokens are refused.
    assert_eq!(keys_of(json!([new])).decloak("shop", None, &t), None);
}

#[test]
fn cloak_key_errors_name_the_field_and_never_the_key() {
    assert!(matches!(CloakKeys::compile(None), Ok(None)));
    let bad = "must be base64 of 32 or 64 random bytes (openssl rand -base64 32)";
    let short = key_text(1, 31);
    for cfg in [
        json!(short),
        json!(key_text(1, 48)),
        json!("not base64!"),
        json!(URL_SAFE_NO_PAD.encode([7u8; 32])),
        json!(7),
        json!({"key": key_text(1, 32)}),
        json!([key_text(1, 32), short]),
    ] {
        let e = key_error(cfg);
        assert_eq!(e, format!("cloak_key: {bad}"));
        assert!(!e.contains(&short));
    }
    let six: Vec<String> = (0..6).map(|i| key_text(i, 32)).collect();
    for cfg in [json!([]), json!(six)] {
        assert_eq!(key_error(cfg), "cloak_key: a list holds 1 to 5 keys");
    }
    // `openssl rand -base64 32` ends with a newline; YAML block scalars too.
    assert_eq!(key_error(json!(format!("{}\n", key_text(1, 32)))), "<ok>");
}

fn template(t: &str) -> PathTemplate {
    match PathTemplate::parse(t, "t") {
        Ok(t) => t,
        Err(e) => unreachable!("{e}"),
    }
}

fn route_cloak(v: Value, tpl: &str, authenticated: bool) -> Result<RouteCloak, String> {
    RouteCloak::compile(
        &v,
        Some(&keys(1)),
        &template(tpl),
        authenticated,
        "routes[2].cloak",
    )
    .map_err(|e| e.to_string())
}

#[test]
fn route_cloak_errors_name_the_field() {
    let tpl = "/shops/{shop}/files/{rest...}";
    let kind_rule = "must be a `{name}` parameter of the template, mapped to its kind; a kind is 1-64 letters, digits, '-' or '_'";
    let cases = [
        (json!([]), "routes[2].cloak: must be an object".to_string()),
        (
            json!({"param": {}}),
            "routes[2].cloak.param: expected `params` (parameters to kinds) or `per_caller` (a boolean)".into(),
        ),
        (
            json!({"params": ["shop"]}),
            "routes[2].cloak.params: expected `params` (parameters to kinds) or `per_caller` (a boolean)".into(),
        ),
        (
            json!({"per_caller": "yes"}),
            "routes[2].cloak.per_caller: expected `params` (parameters to kinds) or `per_caller` (a boolean)".into(),
        ),
        (json!({"params": {"id": "shop"}}), format!("routes[2].cloak.params.id: {kind_rule}")),
        (json!({"params": {"rest": "file"}}), format!("routes[2].cloak.params.rest: {kind_rule}")),
        (json!({"params": {"shop": "a.b"}}), format!("routes[2].cloak.params.shop: {kind_rule}")),
        (json!({"params": {"shop": 1}}), format!("routes[2].cloak.params.shop: {kind_rule}")),
        (json!({"params": {"shop": ""}}), format!("routes[2].cloak.params.shop: {kind_rule}")),
        (
            json!({"params": {"shop": "shop"}, "per_caller": true}),
            "routes[2].cloak.per_caller: needs `auth` without `allow_missing`: tokens are bound to the caller's `sub`".into(),
        ),
    ];
    for (cfg, want) in cases {
        assert_eq!(
            route_cloak(cfg.clone(), tpl, false).err(),
            Some(want),
            "{cfg}"
        );
    }
    assert!(route_cloak(
        json!({"params": {"shop": "shop"}, "per_caller": true}),
        tpl,
        true
    )
    .is_ok());
    let no_key = RouteCloak::compile(&json!({}), None, &template(tpl), false, "routes[0].cloak");
    assert_eq!(
        no_key.err().map(|e| e.to_string()).as_deref(),
        Some("routes[0].cloak: needs the top-level `cloak_key`")
    );
}

/// Decloaks `raw` on `tpl`: the path the upstream gets and the parameters, or
/// `None` when refused.
fn decloak(
    rc: &RouteCloak,
    tpl: &str,
    raw: &str,
    semicolons: Semicolons,
    caller: Option<&str>,
) -> Option<(String, Params)> {
    let mut path = route::normalize(raw, semicolons).ok()?;
    let mut params = template(tpl).matches(&path, false)?;
    rc.decloak(caller, &mut params, &mut path)
        .then(|| (path.request_target(), params))
}

#[test]
fn paths_are_rewritten_with_the_real_values() {
    let k = keys(1);
    let tpl = "/shops/{shop}/orders/{id}";
    let rc = route_cloak(
        json!({"params": {"shop": "shop", "id": "order"}}),
        tpl,
        false,
    );
    let rc = rc.unwrap_or_else(|e| unreachable!("{e}"));
    let shop = token(&k, "shop", None, "s 1/é;x");
    let order = token(&k, "order", None, "42");
    let raw = format!("/shops/{shop}/orders/{order}/?q=%41");
    let got = decloak(&rc, tpl, &raw, Semicolons::Reject, None);
    assert_eq!(
        got,
        Some((
            "/shops/s%201%2F%C3%A9%3Bx/orders/42/?q=%41".to_string(),
            vec![
                ("shop".into(), "s 1/é;x".to_string()),
                ("id".into(), "42".to_string())
            ]
        ))
    );
    // A servlet `;param` stays with its segment.
    let raw = format!("/shops/{shop};v=1/orders/{order}");
    let got = decloak(&rc, tpl, &raw, Semicolons::Strip, None).map(|(p, _)| p);
    assert_eq!(
        got.as_deref(),
        Some("/shops/s%201%2F%C3%A9%3Bx;v=1/orders/42")
    );
    // A raw id, a swapped kind, a token of a caller: refused.
    for raw in [
        format!("/shops/1001/orders/{order}"),
        format!("/shops/{shop}/orders/42"),
        format!("/shops/{order}/orders/{shop}"),
        format!(
            "/shops/{}/orders/{order}",
            token(&k, "shop", Some("alice"), "1")
        ),
    ] {
        assert_eq!(
            decloak(&rc, tpl, &raw, Semicolons::Reject, None),
            None,
            "{raw}"
        );
    }
    // Ids the upstream would resolve as dot segments are never written.
    for id in [".", ".."] {
        let raw = format!("/shops/{shop}/orders/{}", token(&k, "order", None, id));
        assert_eq!(
            decloak(&rc, tpl, &raw, Semicolons::Reject, None),
            None,
            "{id}"
        );
    }
}

#[test]
fn per_caller_routes_need_the_callers_token() {
    let k = keys(1);
    let tpl = "/shops/{shop}";
    let rc = route_cloak(
        json!({"params": {"shop": "shop"}, "per_caller": true}),
        tpl,
        true,
    );
    let rc = rc.unwrap_or_else(|e| unreachable!("{e}"));
    let alice = format!("/shops/{}", token(&k, "shop", Some("alice"), "1001"));
    let got = decloak(&rc, tpl, &alice, Semicolons::Reject, Some("alice"));
    assert_eq!(got.map(|(p, _)| p).as_deref(), Some("/shops/1001"));
    assert_eq!(
        decloak(&rc, tpl, &alice, Semicolons::Reject, Some("bob")),
        None
    );
    assert_eq!(decloak(&rc, tpl, &alice, Semicolons::Reject, None), None);
    let shared = format!("/shops/{}", token(&k, "shop", None, "1001"));
    assert_eq!(
        decloak(&rc, tpl, &shared, Semicolons::Reject, Some("alice")),
        None
    );
}
