//! JWS compact parsing and verification (`api::verify_jws`, `api::verify_jwt`)
//! against two fixed key sets: two HS256 keys, and ES256 + RS256 + EdDSA keys.
//!
//! Input: first byte even: the rest is a token as it would arrive in a header,
//! and also a JWS ECDSA signature `r || s` for the DER conversion of the host
//! path (`api::fuzzing::ecdsa_der`). Odd: the fuzzer's own signed token: next
//! byte `h`, then `h` bytes of header and the payload; the harness signs it with
//! an independent HMAC-SHA-256 under key `hs-0` (bit 1 set) or `hs-1`, so the
//! claims checks after the signature are reached with arbitrary headers and
//! payloads.
//!
//! Invariants:
//! - nothing panics;
//! - the fuzzer cannot forge: an HS256 acceptance is re-checked with an
//!   independent HMAC over the signing input, and the asymmetric set accepts
//!   nothing but the seeds signed with its private keys;
//! - the host path (`signature_backend: host`, with the native stand-in for
//!   Envoy's `verify_signature`) gives the asymmetric set exactly the module's
//!   verdicts;
//! - `ecdsa_der` encodes exactly the inputs of even length with r and s not zero,
//!   as DER that an independent strict reader takes back to the same r and s;
//! - a token the harness signed is accepted exactly when its header is a JSON
//!   object with `alg` `HS256`, no `crit`, `b64` absent or `true`, and a `kid`
//!   that is absent or names the signing key (and the token is at most 8 KiB);
//!   the payload returned is the payload signed;
//! - `verify_jwt` accepts only what `verify_jws` accepts, and then exactly when
//!   an independent reading of the claims passes: a JSON object, `iss` the issuer,
//!   `aud` naming the audience, `exp` present, numeric and not passed, `nbf` and
//!   `iat` numeric and not in the future (60 s skew).
#![no_main]

use api_guard::api::fuzzing::ecdsa_der;
use api_guard::api::{
    verify_jws, verify_jws_with, verify_jwt, ClaimsRules, Families, KeyRules, KeySet,
    NativeVerifySignature, Verifier,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// The asymmetric key set: the demo ES256 key (envoy/demo-keys), the 2048-bit RSA
/// test key (src/jwt/testdata) and an Ed25519 key from a fixed seed.
const ASYM_JWKS: &str = r#"{"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "demo-1", "x": "uJo1WyfYlDA41TCrm2z6P24C8u3zeUyoac-nS4CPLJI", "y": "tWlhlPu5AKhHksW-Itl91H1zmrp9wr32-kClCpl8o1U"}, {"kty": "RSA", "kid": "rs-1", "alg": "RS256", "n": "0lkgQguUSjFLvYSwIyQCuujJywoviAn1tccQxVFMkn7zdcjil9e81h4fsgK9Q2X6XFktFNYIlk47_M6vXtjtz8LRr73UZHoh_V5PaqccqZG3dlHvj9GPd3nqIFMpiY4ADvdzbPn8nJ_cvehXj5IcTc8YFcdfjigHVzrBg10KqfOHKPHJPcUjGeQQ7NFKGRuS5gvVvmj9tiOGMG8DWjanB584y5jpphGsSYT0dXHmcyZp6ocjXqZMvC8h3RXO2-qo7xo5wLZo-GqPgxVjQhiTMaRakt_wS94xxbMXeZ7oXt7bDIilKrmNykZGfaI92vzd1lWN7rtOZCJOs4CWTtisiw", "e": "AQAB"}, {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": "_RckOFqgx1tk-3jNYC-h2ZH96_drE8WO1wLqyDXp9hg"}]}"#;
/// Two HS256 keys.
const HS_JWKS: &str = r#"{"keys": [{"kty": "oct", "kid": "hs-0", "alg": "HS256", "k": "ZnV6ei1oczI1Ni1zZWNyZXQtemVyby0wMTIzNDU2Nzg5YWJjZGVm"}, {"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": "ZnV6ei1oczI1Ni1zZWNyZXQtb25lLTAxMjM0NTY3ODlhYmNkZWZnaA"}]}"#;
/// The only tokens the asymmetric set may accept: the seeds, signed with the
/// private keys (fuzz/corpus/jws/{es256,es256_nokid,rs256,eddsa}).
const ASYM_VALID: &[&str] = &[
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImRlbW8tMSIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlLyIsInN1YiI6ImFsaWNlIiwiYXVkIjoiYXBpIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQwMDAwMDAwMDAsInJvbGVzIjpbImNsZXJrIl0sInNob3BfaWQiOiJzMSJ9.9uB0_g5KZvR29zkvQAZbr47hYJ2GCEU3Pi4HtEYc64lkt3hbqj_xTAl9G7nbp2l7MF2wu1giLhEWyxdpNLuvFQ",
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlLyIsInN1YiI6ImFsaWNlIiwiYXVkIjoiYXBpIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQwMDAwMDAwMDAsInJvbGVzIjpbImNsZXJrIl0sInNob3BfaWQiOiJzMSJ9.343Ec_yG30q6obviRQOxiUl8CAM6YYH4a9_H5VA5V0CrBXzQDfUHYqeMYUr4YgzRYai2Eg9teIXbkcoq0jucYA",
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzLTEiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlLyIsInN1YiI6ImFsaWNlIiwiYXVkIjoiYXBpIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQwMDAwMDAwMDAsInJvbGVzIjpbImNsZXJrIl0sInNob3BfaWQiOiJzMSJ9.iELyOIhR-8A4zb4RIlLELkcLCKwuhLQb7FVnP1ZA83B6hkwj0ucWQIFF4vV84A0YtnpiwZ1b47CsvRyUDp94oJdatViJimpGmii5CXPU7h9SKDMMVe8paeUwb6wSssTIfLoPl8qeLKS6H-shYpYG7jAXcJGa7qRY1tarpUwtqfMaQhqwV2CrH5vaKiy1slyPT37Rt2TnyGx8p-whQl9SaigtQxqx0fwDdSTaw_rli-3y_PPQruDVerK5Cs1iowTAcjWRtmiWfvwSs_YHvlfh6bllophKlPtBviSZz03sg290_W4vqYC45b2JOEaeOc_mNE7iZr_JKQ0MfwicsGS89w",
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImVkLTEiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlLyIsInN1YiI6ImFsaWNlIiwiYXVkIjoiYXBpIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQwMDAwMDAwMDAsInJvbGVzIjpbImNsZXJrIl0sInNob3BfaWQiOiJzMSJ9.nosLDWA0TXD8Y2sO2VYSS7vOPDPDSozxEbhSj5LVNcQ2zSEGotgqI4NRmeKxS2GPW7a8fi-eZOMe9ftm807JDQ",
];

const SECRET0: &[u8] = b"fuzz-hs256-secret-zero-0123456789abcdef";
const SECRET1: &[u8] = b"fuzz-hs256-secret-one-0123456789abcdefgh";
const ISSUER: &str = "https://issuer.example/";
const AUDIENCE: &str = "api";
const NOW: u64 = 1_800_000_000;
const SKEW: u64 = 60;
const MAX_TOKEN_BYTES: usize = 8 * 1024;

struct Fixture {
    hs: KeySet,
    asym: KeySet,
    rules: ClaimsRules,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let set = |text: &str| {
            let doc: Value = serde_json::from_str(text).expect("fixed JWKS");
            KeySet::from_jwks_strict(&doc, &KeyRules::default()).expect("fixed JWKS loads")
        };
        Fixture {
            hs: set(HS_JWKS),
            asym: set(ASYM_JWKS),
            rules: ClaimsRules {
                issuer: ISSUER.to_string(),
                audiences: vec![AUDIENCE.to_string()],
                clock_skew_seconds: SKEW,
                max_lifetime_seconds: None,
                require_expiration: true,
            },
        }
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    hmac_sha256::HMAC::mac(msg, key)
}

/// The header checks of RFC 7515 as the filter applies them, for a token signed
/// with HS256 key `kid_of_signer`.
fn header_accepts(header: &[u8], kid_of_signer: &str) -> bool {
    let Ok(h) = serde_json::from_slice::<Map<String, Value>>(header) else {
        return false;
    };
    h.get("alg") == Some(&Value::from("HS256"))
        && !h.contains_key("crit")
        && h.get("b64").is_none_or(|v| *v == Value::Bool(true))
        && match h.get("kid") {
            None => true,
            Some(Value::String(k)) => k == kid_of_signer,
            Some(_) => false,
        }
}

/// A NumericDate as the filter reads it: whole seconds, saturating.
fn seconds(v: &Value) -> Option<i128> {
    let n = v.as_number()?;
    Some(if let Some(i) = n.as_i64() {
        i128::from(i)
    } else if n.as_u64().is_some() {
        i128::from(i64::MAX)
    } else {
        i128::from(n.as_f64()?.floor() as i64)
    })
}

/// An independent reading of the claims rules.
fn claims_accept(payload: &[u8]) -> bool {
    let Ok(c) = serde_json::from_slice::<Map<String, Value>>(payload) else {
        return false;
    };
    let now = i128::from(NOW);
    let skew = i128::from(SKEW);
    let mut times = [None; 3];
    for (i, name) in ["exp", "nbf", "iat"].iter().enumerate() {
        match c.get(*name) {
            None => {}
            Some(v) => match seconds(v) {
                Some(s) => times[i] = Some(s),
                None => return false,
            },
        }
    }
    let [exp, nbf, iat] = times;
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    c.get("iss").and_then(Value::as_str) == Some(ISSUER)
        && exp.is_some_and(|e| now < e + skew)
        && nbf.is_none_or(|n| n <= now + skew)
        && iat.is_none_or(|i| i <= now + skew)
        && aud_ok
}

fn check_jwt(token: &str, keys: &KeySet, jws_ok: Option<&[u8]>) {
    let f = fixture();
    let jwt = verify_jwt(token, keys, &f.rules, NOW);
    match jws_ok {
        None => assert!(
            jwt.is_err(),
            "verify_jwt accepts what verify_jws refuses: {token:?}"
        ),
        Some(payload) => {
            let want = claims_accept(payload);
            assert_eq!(
                jwt.is_ok(),
                want,
                "claims of {:?}: verify_jwt says {jwt:?}",
                String::from_utf8_lossy(payload)
            );
        }
    }
}

fn raw_token(token: &str) {
    let f = fixture();
    let hs = verify_jws(token, &f.hs);
    if let Ok(payload) = &hs {
        let (input, sig) = token.rsplit_once('.').expect("an accepted token has dots");
        let (_, body) = input
            .split_once('.')
            .expect("an accepted token has two dots");
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .expect("accepted signature is base64url");
        let ok = [SECRET0, SECRET1]
            .iter()
            .any(|k| hmac(k, input.as_bytes()).as_slice() == sig.as_slice());
        assert!(ok, "HS256 acceptance without a valid HMAC: {token:?}");
        assert_eq!(
            Some(payload),
            URL_SAFE_NO_PAD.decode(body).ok().as_ref(),
            "payload of {token:?}"
        );
    }
    check_jwt(token, &f.hs, hs.as_deref().ok());

    let asym = verify_jws(token, &f.asym);
    static STAND_IN: NativeVerifySignature = NativeVerifySignature;
    let (on_host, _) = verify_jws_with(token, &f.asym, &Verifier::host(&STAND_IN, Families::ALL));
    assert_eq!(
        on_host.as_deref().ok(),
        asym.as_deref().ok(),
        "the host path disagrees: {token:?}"
    );
    if asym.is_ok() {
        assert!(
            ASYM_VALID.contains(&token),
            "forged asymmetric signature: {token:?}"
        );
    }
    check_jwt(token, &f.asym, asym.as_deref().ok());
}

/// Reads a DER `SEQUENCE { INTEGER, INTEGER }` strictly (minimal lengths,
/// minimal non-negative integers, nothing left over): the two integers' digits.
fn read_der_pair(der: &[u8]) -> Option<(&[u8], &[u8])> {
    fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        if t != tag {
            return None;
        }
        let (len, rest) = match first {
            0..=0x7f => (usize::from(first), rest),
            0x81 => {
                let (&len, rest) = rest.split_first()?;
                if len < 0x80 {
                    return None;
                }
                (usize::from(len), rest)
            }
            _ => return None,
        };
        Some((rest.get(..len)?, rest.get(len..)?))
    }
    fn integer(content: &[u8]) -> Option<&[u8]> {
        match content {
            [] => None,
            [0, next, ..] if next & 0x80 == 0 => None,
            [0, rest @ ..] if !rest.is_empty() => Some(rest),
            [first, ..] if first & 0x80 != 0 => None,
            digits => Some(digits),
        }
    }
    let (seq, after) = element(der, 0x30)?;
    let (r, seq) = element(seq, 0x02)?;
    let (s, seq) = element(seq, 0x02)?;
    if !after.is_empty() || !seq.is_empty() {
        return None;
    }
    Some((integer(r)?, integer(s)?))
}

fn ecdsa_signature(rs: &[u8]) {
    let (r, s) = rs.split_at(rs.len() / 2);
    let nonzero = |v: &[u8]| v.iter().any(|b| *b != 0);
    let encodable = rs.len() % 2 == 0 && nonzero(r) && nonzero(s);
    let der = ecdsa_der(rs);
    assert_eq!(der.is_some(), encodable, "r || s = {rs:02x?}");
    if let Some(der) = der {
        let strip = |v: &[u8]| {
            v.iter()
                .skip_while(|b| **b == 0)
                .copied()
                .collect::<Vec<u8>>()
        };
        let (dr, ds) = read_der_pair(&der).expect("our DER is strict DER");
        assert_eq!((strip(dr), strip(ds)), (strip(r), strip(s)), "{rs:02x?}");
    }
}

fn signed_token(flags: u8, rest: &[u8]) {
    let f = fixture();
    let Some((&h, rest)) = rest.split_first() else {
        return;
    };
    let h = usize::from(h).min(rest.len());
    let (header, payload) = rest.split_at(h);
    let (secret, kid) = if flags & 2 != 0 {
        (SECRET0, "hs-0")
    } else {
        (SECRET1, "hs-1")
    };
    let input = format!("{}.{}", b64(header), b64(payload));
    let token = format!("{input}.{}", b64(&hmac(secret, input.as_bytes())));

    let got = verify_jws(&token, &f.hs);
    let want = token.len() <= MAX_TOKEN_BYTES && header_accepts(header, kid);
    assert_eq!(
        got.is_ok(),
        want,
        "header {:?}: verify_jws says {got:?}",
        String::from_utf8_lossy(header)
    );
    if let Ok(p) = &got {
        assert_eq!(p.as_slice(), payload, "payload changed");
    }
    check_jwt(&token, &f.hs, got.as_deref().ok());

    // An HMAC-signed token never passes asymmetric keys.
    assert!(
        verify_jws(&token, &f.asym).is_err(),
        "asymmetric set accepts HS256"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if rest.len() <= 240 {
            ecdsa_signature(rest);
        }
        if let Ok(token) = std::str::from_utf8(rest) {
            raw_token(token);
        }
    } else {
        signed_token(mode, rest);
    }
});
