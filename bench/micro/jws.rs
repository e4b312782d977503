#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Cost of one JWS signature check in the module (`signature_backend: module`), for
//! the algorithms only the module's RustCrypto code verifies where Envoy's
//! `verify_signature` is missing or cannot (ES512, ES256K), next to ring's ES256.
//! The curve crates are built for size (Cargo.toml); this is the figure that trade
//! is judged by.
//!
//! `cargo bench --bench jws`; in V8 (Node 20, as for `schema_validate`):
//! `cargo bench --bench jws --target wasm32-wasip1 --no-run`, then
//! `node bench/micro/wasi_run.js target/wasm32-wasip1/release/deps/jws-*.wasm`.

use api_guard::api::{verify_jws, KeyRules, KeySet};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::json;
use std::hint::black_box;

#[path = "rounds.rs"]
mod rounds;
use rounds::time;

fn token(alg: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(format!(r#"{{"alg":"{alg}","kid":"k"}}"#)),
        B64.encode(r#"{"sub":"bench"}"#)
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig))
}

fn keys(crv: &str, point: &[u8], half: usize) -> KeySet {
    let (x, y) = point[1..].split_at(half);
    let jwk = json!({"kty": "EC", "crv": crv, "kid": "k", "x": B64.encode(x), "y": B64.encode(y)});
    KeySet::from_jwks_strict(&json!({ "keys": [jwk] }), &KeyRules::default()).unwrap()
}

fn main() {
    use p256::ecdsa::signature::{RandomizedSigner, Signer};
    let p521_key = p521::ecdsa::SigningKey::from_slice(&[1; 66]).unwrap();
    let p521_point = p521::ecdsa::VerifyingKey::from(&p521_key).to_encoded_point(false);
    let es512 = token("ES512", |m| {
        let s: p521::ecdsa::Signature = p521_key.sign_with_rng(&mut rand::thread_rng(), m);
        s.to_bytes().to_vec()
    });
    let k256_key = k256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
    let k256_point = k256_key.verifying_key().to_encoded_point(false);
    let es256k = token("ES256K", |m| {
        let s: k256::ecdsa::Signature = k256_key.sign(m);
        s.to_bytes().to_vec()
    });
    let p256_key = p256::ecdsa::SigningKey::from_slice(&[3; 32]).unwrap();
    let p256_point = p256_key.verifying_key().to_encoded_point(false);
    let es256 = token("ES256", |m| {
        let s: p256::ecdsa::Signature = p256_key.sign(m);
        s.to_bytes().to_vec()
    });
    let cases = [
        (
            "ES512 (p521)",
            es512,
            keys("P-521", p521_point.as_bytes(), 66),
            50,
        ),
        (
            "ES256K (k256)",
            es256k,
            keys("secp256k1", k256_point.as_bytes(), 32),
            100,
        ),
        (
            "ES256 (ring, for scale)",
            es256,
            keys("P-256", p256_point.as_bytes(), 32),
            200,
        ),
    ];
    for (label, token, keys, n) in &cases {
        assert!(verify_jws(token, keys).is_ok(), "{label}");
        time(label, *n, || {
            black_box(verify_jws(black_box(token), keys).unwrap());
        });
    }
}
