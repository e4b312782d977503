//! Test-only keys and token minting. The keys here are fixtures, not secrets: fixed
//! scalars and seeds, and RSA keys generated for these tests (`testdata/*.test.pem`).

use crate::jwt::b64url_encode;
use crate::jwt::jwks::{Algorithm, KeyRules, KeySet};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

/// 64-byte HMAC secret (enough for HS512), base64url.
pub const HS_SECRET_B64: &str =
    "c2VjcmV0LWZvci11bml0LXRlc3RzLW9ubHktbm90LWEtcmVhbC1rZXktMDEyMzQ1Njc4OWFiY2RlZmdoaWprbA";

const RSA2048_PEM: &str = include_str!("testdata/rsa2048.test.pem");
const RSA1024_PEM: &str = include_str!("testdata/rsa1024.test.pem");
const P256_SCALAR: [u8; 32] = [7; 32];
const P384_SCALAR: [u8; 48] = [7; 48];
const P521_SCALAR: [u8; 66] = [1; 66];
const K256_SCALAR: [u8; 32] = [7; 32];
const ED25519_SEED: [u8; 32] = [9; 32];

/// A minted token.
pub struct Minted {
    /// The compact JWS.
    pub token: String,
}

pub fn hs_secret() -> Vec<u8> {
    crate::jwt::b64url_decode(HS_SECRET_B64).unwrap()
}

/// Parsed once per test binary: PKCS#8 parsing and key validation are slow unoptimised.
fn rsa_private(pem: &str) -> rsa::RsaPrivateKey {
    use std::sync::OnceLock;
    static K2048: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    static K1024: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    let cell = if pem == RSA2048_PEM { &K2048 } else { &K1024 };
    cell.get_or_init(|| rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap())
        .clone()
}

fn rsa_components(pem: &str) -> (Vec<u8>, Vec<u8>) {
    let k = rsa_private(pem);
    (k.n().to_bytes_be(), k.e().to_bytes_be())
}

/// The lowercase algorithm name, used as the test kid.
pub fn kid_of(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "hs256",
        Algorithm::HS384 => "hs384",
        Algorithm::HS512 => "hs512",
        Algorithm::RS256 => "rs256",
        Algorithm::RS384 => "rs384",
        Algorithm::RS512 => "rs512",
        Algorithm::PS256 => "ps256",
        Algorithm::PS384 => "ps384",
        Algorithm::PS512 => "ps512",
        Algorithm::ES256 => "es256",
        Algorithm::ES384 => "es384",
        Algorithm::ES512 => "es512",
        Algorithm::ES256K => "es256k",
        Algorithm::EdDSA => "eddsa",
    }
}

fn with_kid(mut v: Value, kid: Option<&str>) -> Value {
    if let Some(kid) = kid {
        v["kid"] = json!(kid);
    }
    v
}

pub fn hs256_jwk(kid: Option<&str>) -> Value {
    with_kid(json!({"kty": "oct", "k": HS_SECRET_B64}), kid)
}

pub fn rsa_jwk(kid: Option<&str>) -> Value {
    let (n, e) = rsa_components(RSA2048_PEM);
    with_kid(
        json!({"kty": "RSA", "n": b64url_encode(&n), "e": b64url_encode(&e)}),
        kid,
    )
}

pub fn rsa1024_jwk() -> Value {
    let (n, e) = rsa_components(RSA1024_PEM);
    json!({"kty": "RSA", "n": b64url_encode(&n), "e": b64url_encode(&e)})
}

/// A token signed with the 1024-bit RSA key (RS256 or RS512), for ring's legacy
/// parameters that keys under 2048 bits take.
pub fn mint_rsa1024(alg: Algorithm, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64url_encode(json!({"alg": alg.name()}).to_string().as_bytes()),
        b64url_encode(claims.to_string().as_bytes())
    );
    let key = rsa_private(RSA1024_PEM).clone();
    let sig = match alg {
        Algorithm::RS256 => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key)
            .sign(input.as_bytes())
            .to_vec(),
        Algorithm::RS512 => rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(key)
            .sign(input.as_bytes())
            .to_vec(),
        other => panic!("no 1024-bit minting for {other}"),
    };
    format!("{input}.{}", b64url_encode(&sig))
}

pub fn rsa_modulus() -> Vec<u8> {
    rsa_components(RSA2048_PEM).0
}

/// Bytes an attacker might use as an HMAC secret: the RSA public modulus.
pub fn rsa_public_der() -> Vec<u8> {
    rsa_modulus()
}

fn ec_xy(alg: Algorithm) -> (Vec<u8>, Vec<u8>, &'static str) {
    match alg {
        Algorithm::ES256 => {
            let p = p256::ecdsa::SigningKey::from_slice(&P256_SCALAR).unwrap();
            let pt = p.verifying_key().to_encoded_point(false);
            (pt.x().unwrap().to_vec(), pt.y().unwrap().to_vec(), "P-256")
        }
        Algorithm::ES384 => {
            let p = p384::ecdsa::SigningKey::from_slice(&P384_SCALAR).unwrap();
            let pt = p.verifying_key().to_encoded_point(false);
            (pt.x().unwrap().to_vec(), pt.y().unwrap().to_vec(), "P-384")
        }
        Algorithm::ES512 => {
            let p = p521::ecdsa::SigningKey::from_slice(&P521_SCALAR).unwrap();
            let pt = p521::ecdsa::VerifyingKey::from(&p).to_encoded_point(false);
            (pt.x().unwrap().to_vec(), pt.y().unwrap().to_vec(), "P-521")
        }
        Algorithm::ES256K => {
            let p = k256::ecdsa::SigningKey::from_slice(&K256_SCALAR).unwrap();
            let pt = p.verifying_key().to_encoded_point(false);
            (
                pt.x().unwrap().to_vec(),
                pt.y().unwrap().to_vec(),
                "secp256k1",
            )
        }
        other => panic!("{other} is not an EC algorithm"),
    }
}

/// The uncompressed SEC1 point (`04 || x || y`) of `alg`'s test key.
pub fn ec_point(alg: Algorithm) -> Vec<u8> {
    let (x, y, _) = ec_xy(alg);
    [&[4u8][..], &x, &y].concat()
}

/// The test RSA key's modulus and exponent, big-endian.
pub fn rsa_n_e() -> (Vec<u8>, Vec<u8>) {
    rsa_components(RSA2048_PEM)
}

pub fn ec_jwk(alg: Algorithm, kid: Option<&str>) -> Value {
    let (x, y, crv) = ec_xy(alg);
    with_kid(
        json!({"kty": "EC", "crv": crv, "x": b64url_encode(&x), "y": b64url_encode(&y)}),
        kid,
    )
}

fn ed25519_pair() -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(ED25519_SEED))
}

pub fn ed25519_jwk(kid: Option<&str>) -> Value {
    let kp = ed25519_pair();
    with_kid(
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(kp.pk.as_ref())}),
        kid,
    )
}

/// The JWK of `alg`'s test key, with `alg` and `kid` set.
pub fn jwk_for(alg: Algorithm) -> Value {
    let kid = Some(kid_of(alg));
    let mut jwk = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => hs256_jwk(kid),
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => rsa_jwk(kid),
        Algorithm::EdDSA => ed25519_jwk(kid),
        ec => ec_jwk(ec, kid),
    };
    jwk["alg"] = json!(alg.name());
    jwk
}

/// A JWKS with one test key per algorithm.
pub fn jwks(algs: &[Algorithm]) -> Value {
    json!({"keys": algs.iter().map(|a| jwk_for(*a)).collect::<Vec<_>>()})
}

/// A compiled key set with one test key per algorithm.
pub fn keyset(algs: &[Algorithm]) -> KeySet {
    KeySet::from_jwks_strict(&jwks(algs), &KeyRules::default()).unwrap()
}

/// Signs `msg` with `alg`'s test key.
pub fn sign(alg: Algorithm, msg: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let secret = hs_secret();
    let mut rng = rand::thread_rng();
    match alg {
        Algorithm::HS256 => {
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        Algorithm::HS384 => {
            let mut m = hmac::Hmac::<sha2::Sha384>::new_from_slice(&secret).unwrap();
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        Algorithm::HS512 => {
            let mut m = hmac::Hmac::<sha2::Sha512>::new_from_slice(&secret).unwrap();
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        Algorithm::RS256 => {
            rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa_private(RSA2048_PEM))
                .sign(msg)
                .to_vec()
        }
        Algorithm::RS384 => {
            rsa::pkcs1v15::SigningKey::<sha2::Sha384>::new(rsa_private(RSA2048_PEM))
                .sign(msg)
                .to_vec()
        }
        Algorithm::RS512 => {
            rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(rsa_private(RSA2048_PEM))
                .sign(msg)
                .to_vec()
        }
        Algorithm::PS256 => rsa::pss::SigningKey::<sha2::Sha256>::new(rsa_private(RSA2048_PEM))
            .sign_with_rng(&mut rng, msg)
            .to_vec(),
        Algorithm::PS384 => rsa::pss::SigningKey::<sha2::Sha384>::new(rsa_private(RSA2048_PEM))
            .sign_with_rng(&mut rng, msg)
            .to_vec(),
        Algorithm::PS512 => rsa::pss::SigningKey::<sha2::Sha512>::new(rsa_private(RSA2048_PEM))
            .sign_with_rng(&mut rng, msg)
            .to_vec(),
        Algorithm::ES256 => {
            let k = p256::ecdsa::SigningKey::from_slice(&P256_SCALAR).unwrap();
            let s: p256::ecdsa::Signature = k.sign(msg);
            s.to_bytes().to_vec()
        }
        Algorithm::ES384 => {
            let k = p384::ecdsa::SigningKey::from_slice(&P384_SCALAR).unwrap();
            let s: p384::ecdsa::Signature = k.sign(msg);
            s.to_bytes().to_vec()
        }
        Algorithm::ES512 => {
            let k = p521::ecdsa::SigningKey::from_slice(&P521_SCALAR).unwrap();
            let s: p521::ecdsa::Signature = k.sign_with_rng(&mut rng, msg);
            s.to_bytes().to_vec()
        }
        Algorithm::ES256K => {
            let k = k256::ecdsa::SigningKey::from_slice(&K256_SCALAR).unwrap();
            let s: k256::ecdsa::Signature = k.sign(msg);
            s.to_bytes().to_vec()
        }
        Algorithm::EdDSA => ed25519_pair().sk.sign(msg, None).to_vec(),
    }
}

/// `header.payload.signature` from raw header and payload bytes, signed with `alg`'s key.
pub fn mint_raw(alg: Algorithm, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64url_encode(header), b64url_encode(payload));
    let sig = sign(alg, input.as_bytes());
    format!("{input}.{}", b64url_encode(&sig))
}

/// A token with the given header object, signed with `alg`'s key.
pub fn mint_with_header(alg: Algorithm, header: &Value, claims: &Value) -> String {
    mint_raw(
        alg,
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
    )
}

/// A token `{"alg": alg, "typ": "JWT", "kid": kid}` . `claims`.
pub fn mint(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let header = with_kid(json!({"alg": alg.name(), "typ": "JWT"}), kid);
    mint_with_header(alg, &header, claims)
}

/// A token MACed with an arbitrary secret, labelled `alg_name`.
pub fn mint_hmac_with(secret: &[u8], alg_name: &str, claims: &Value) -> String {
    use hmac::Mac;
    let input = format!(
        "{}.{}",
        b64url_encode(json!({"alg": alg_name}).to_string().as_bytes()),
        b64url_encode(claims.to_string().as_bytes())
    );
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    m.update(input.as_bytes());
    format!("{input}.{}", b64url_encode(&m.finalize().into_bytes()))
}

const OTHER_P256_SCALAR: [u8; 32] = [42; 32];

/// The attacker's P-256 public key, as a JWK.
pub fn other_ec_jwk() -> Value {
    let p = p256::ecdsa::SigningKey::from_slice(&OTHER_P256_SCALAR).unwrap();
    let pt = p.verifying_key().to_encoded_point(false);
    json!({"kty": "EC", "crv": "P-256", "x": b64url_encode(pt.x().unwrap()), "y": b64url_encode(pt.y().unwrap())})
}

/// A token signed with the attacker's P-256 key.
pub fn mint_with_other_ec_key(header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64url_encode(header.to_string().as_bytes()),
        b64url_encode(claims.to_string().as_bytes())
    );
    let k = p256::ecdsa::SigningKey::from_slice(&OTHER_P256_SCALAR).unwrap();
    let s: p256::ecdsa::Signature = k.sign(input.as_bytes());
    format!("{input}.{}", b64url_encode(&s.to_bytes()))
}

/// An ES256K token whose signature has a high S (n - s of the low-S signature).
pub fn mint_es256k_high_s(claims: &Value) -> Minted {
    use k256::elliptic_curve::scalar::IsHigh;
    use k256::elliptic_curve::PrimeField;
    let header = json!({"alg": "ES256K", "kid": "es256k"});
    let input = format!(
        "{}.{}",
        b64url_encode(header.to_string().as_bytes()),
        b64url_encode(claims.to_string().as_bytes())
    );
    let k = k256::ecdsa::SigningKey::from_slice(&K256_SCALAR).unwrap();
    let s: k256::ecdsa::Signature = k.sign(input.as_bytes());
    let (r, s_bytes) = s.split_bytes();
    let s_scalar = k256::Scalar::from_repr(s_bytes).unwrap();
    let high = k256::ecdsa::Signature::from_scalars(r, (-s_scalar).to_repr()).unwrap();
    assert!(bool::from(high.s().is_high()));
    let mut sig = high.r().to_bytes().to_vec();
    sig.extend_from_slice(&high.s().to_bytes());
    Minted {
        token: format!("{input}.{}", b64url_encode(&sig)),
    }
}

/// The current Unix time, for tokens minted by jwt-simple (which reads the clock).
pub fn wall_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Tokens minted by jwt-simple for every algorithm it supports (all but ES512),
/// with the same test keys and kids.
pub fn jwt_simple_tokens(iss: &str, aud: &str) -> Vec<(Algorithm, String)> {
    use jwt_simple::prelude::*;
    let claims = || {
        Claims::create(Duration::from_mins(10))
            .with_issuer(iss)
            .with_audience(aud)
            .with_subject("alice")
    };
    let secret = hs_secret();
    let p256 = ES256KeyPair::from_bytes(&P256_SCALAR)
        .unwrap()
        .with_key_id("es256");
    let p384 = ES384KeyPair::from_bytes(&P384_SCALAR)
        .unwrap()
        .with_key_id("es384");
    let k256 = ES256kKeyPair::from_bytes(&K256_SCALAR)
        .unwrap()
        .with_key_id("es256k");
    let ed = Ed25519KeyPair::from_bytes(ed25519_pair().sk.as_ref())
        .unwrap()
        .with_key_id("eddsa");
    vec![
        (
            Algorithm::HS256,
            HS256Key::from_bytes(&secret)
                .with_key_id("hs256")
                .authenticate(claims())
                .unwrap(),
        ),
        (
            Algorithm::HS384,
            HS384Key::from_bytes(&secret)
                .with_key_id("hs384")
                .authenticate(claims())
                .unwrap(),
        ),
        (
            Algorithm::HS512,
            HS512Key::from_bytes(&secret)
                .with_key_id("hs512")
                .authenticate(claims())
                .unwrap(),
        ),
        (
            Algorithm::RS256,
            RS256KeyPair::from_pem(RSA2048_PEM)
                .unwrap()
                .with_key_id("rs256")
                .sign(claims())
                .unwrap(),
        ),
        (
            Algorithm::RS384,
            RS384KeyPair::from_pem(RSA2048_PEM)
                .unwrap()
                .with_key_id("rs384")
                .sign(claims())
                .unwrap(),
        ),
        (
            Algorithm::RS512,
            RS512KeyPair::from_pem(RSA2048_PEM)
                .unwrap()
                .with_key_id("rs512")
                .sign(claims())
                .unwrap(),
        ),
        (
            Algorithm::PS256,
            PS256KeyPair::from_pem(RSA2048_PEM)
                .unwrap()
                .with_key_id("ps256")
                .sign(claims())
                .unwrap(),
        ),
        (
            Algorithm::PS384,
            PS384KeyPair::from_pem(RSA2048_PEM)
                .unwrap()
                .with_key_id("ps384")
                .sign(claims())
                .unwrap(),
        ),
        (
            Algorithm::PS512,
            PS512KeyPair::from_pem(RSA2048_PEM)
                .unwrap()
                .with_key_id("ps512")
                .sign(claims())
                .unwrap(),
        ),
        (Algorithm::ES256, p256.sign(claims()).unwrap()),
        (Algorithm::ES384, p384.sign(claims()).unwrap()),
        (Algorithm::ES256K, k256.sign(claims()).unwrap()),
        (Algorithm::EdDSA, ed.sign(claims()).unwrap()),
    ]
}
