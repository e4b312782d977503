//! Token verification: compact JWS decoding (RFC 7515 §5.2), the signature check
//! over the exact `header.payload` bytes, and the JWT claim checks (RFC 7519 §7.2).
//!
//! Order of the checks, each failing with its own [`VerifyError`]:
//! 1. size cap ([`MAX_TOKEN_BYTES`]), three parts, strict base64url (no padding,
//!    no whitespace, canonical trailing bits) for header, payload and signature;
//! 2. header: a JSON object of at most [`MAX_HEADER_BYTES`]; `alg` present and a
//!    string; `none` and unknown algorithms refused; any `crit` refused (no extension
//!    is understood, RFC 7515 §4.1.11), and so is `b64: false` (RFC 7797);
//! 3. key selection: with a `kid`, the keys with that kid (none: [`VerifyError::UnknownKid`]),
//!    and among them only keys whose algorithm equals the header's `alg`; without a
//!    `kid`, the first [`MAX_KEYS_TRIED_WITHOUT_KID`] keys of that algorithm. Header
//!    members such as `jwk`, `jku`, `x5u`, `x5c` are never used to find a key;
//! 4. signature, by the backend the [`Verifier`] names for the key's algorithm:
//!    Envoy's `verify_signature` ([`hostsig`]) for RS256/384/512, ES256, ES384 and
//!    ES512 when the host passed its check, else the module: `ring` for HMAC, RSA
//!    (RS*/PS* from 2048 bits; under that, down to `min_rsa_bits`, RS256 and RS512
//!    with its legacy PKCS#1 v1.5 parameters), ES256, ES384 and EdDSA (in V8 about
//!    1.5-2x faster than the pure-Rust crates, ES384 about even); the RustCrypto
//!    `p521` and `k256` for ES512 and ES256K, over ring's digests. Every backend
//!    refuses signatures of the wrong length (checked here before the host is
//!    asked) and accepts high-S ECDSA signatures (RFC 7518 does not forbid them);
//! 5. only then the payload: a JSON object, numeric `exp`/`nbf`/`iat`, `iss`, the
//!    times with `clock_skew_seconds`, `max_lifetime_seconds`, and last `aud` (so an
//!    expired token is a 401, not a 403).
//!
//! Duplicate member names in the header or payload: serde_json keeps the last one,
//! which RFC 7515 §4 and RFC 7519 §4 allow.

use crate::authz::Claims;
use crate::jwt::hostsig::{self, Backend, Family, Verifier};
use crate::jwt::jwks::{Algorithm, KeyMaterial, KeySet, VerifyingKey};
use crate::jwt::{b64url_decode, MAX_TOKEN_BYTES};
use crate::reply::Rejection;
use serde_json::{Map, Value};
use std::fmt;

/// Largest decoded JOSE header accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 4096;
/// Keys of the right algorithm tried for a token without `kid`.
pub const MAX_KEYS_TRIED_WITHOUT_KID: usize = 4;

/// Why a token is not accepted. Descriptions are written by this module and never
/// contain token, claim or key content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// Not a well-formed compact JWS/JWT, or a claim has the wrong type.
    Malformed(&'static str),
    /// The signature does not verify, or the algorithm is refused.
    BadSignature(&'static str),
    /// No key has the token's `kid` (the keys may have rotated).
    UnknownKid,
    /// `exp` has passed, or the lifetime exceeds `max_lifetime_seconds`.
    Expired(&'static str),
    /// `nbf` or `iat` is in the future beyond the clock skew.
    NotYetValid(&'static str),
    /// `iss` is missing or not the provider's issuer.
    Issuer,
    /// `aud` holds none of the provider's audiences (a 403).
    Audience,
    /// The provider's remote key set has not arrived yet (fail closed, 503).
    KeysUnavailable,
    /// An API key no `api_key` provider of the route knows.
    UnknownKey,
    /// `require_cert_binding`: the token is not bound to this connection's client
    /// certificate.
    CertBinding(&'static str),
}

impl VerifyError {
    /// Metric reason: `malformed`, `bad_signature`, `unknown_kid`, `expired`,
    /// `not_yet_valid`, `issuer`, `audience` or `keys_unavailable`.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) => "malformed",
            VerifyError::BadSignature(_) => "bad_signature",
            VerifyError::UnknownKid => "unknown_kid",
            VerifyError::Expired(_) => "expired",
            VerifyError::NotYetValid(_) => "not_yet_valid",
            VerifyError::Issuer => "issuer",
            VerifyError::Audience => "audience",
            VerifyError::KeysUnavailable => "keys_unavailable",
            VerifyError::UnknownKey => "unknown_key",
            VerifyError::CertBinding(_) => "cert_binding",
        }
    }

    /// Safe text for `error_description` and the problem `detail`.
    pub(crate) fn description(&self) -> &'static str {
        match self {
            VerifyError::Malformed(d)
            | VerifyError::BadSignature(d)
            | VerifyError::Expired(d)
            | VerifyError::NotYetValid(d)
            | VerifyError::CertBinding(d) => d,
            VerifyError::UnknownKey => "the API key is not valid",
            VerifyError::UnknownKid => "the token's signing key (kid) is not known",
            VerifyError::Issuer => "the token's issuer is not accepted",
            VerifyError::Audience => "the token is not intended for this API (audience)",
            VerifyError::KeysUnavailable => "verification keys are not loaded yet",
        }
    }

    /// The rejection to answer with: 403 for an audience mismatch, 503 while keys are
    /// unavailable, 401 `invalid_token` otherwise.
    pub(crate) fn to_rejection(&self) -> Rejection {
        match self {
            VerifyError::Audience => Rejection::Forbidden {
                reason: self.reason(),
                description: self.description().to_string(),
                rule: "audiences".to_string(),
            },
            VerifyError::KeysUnavailable => Rejection::KeysUnavailable,
            _ => Rejection::InvalidToken {
                reason: self.reason(),
                description: self.description().to_string(),
            },
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason(), self.description())
    }
}

/// A check's result and which backend checked the signature: `None` when the
/// token was refused before any key was tried.
pub type Checked<T> = (Result<T, VerifyError>, Option<Backend>);

/// A compact JWS split and decoded, signature not yet checked.
#[derive(Debug, Clone)]
pub struct DecodedJws<'a> {
    /// The header's `alg`.
    pub alg: Algorithm,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// `BASE64URL(header) '.' BASE64URL(payload)`, the signed bytes.
    pub signing_input: &'a str,
    /// The decoded payload bytes (not yet trusted).
    pub payload: Vec<u8>,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS and checks its header (steps 1–2 above).
pub(crate) fn decode(token: &str) -> Result<DecodedJws<'_>, VerifyError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::Malformed("the token is too large"));
    }
    const SHAPE: VerifyError =
        VerifyError::Malformed("the token is not a compact JWS (header.payload.signature)");
    let (signing_input, sig_b64) = token.rsplit_once('.').ok_or(SHAPE)?;
    let (header_b64, payload_b64) = signing_input.split_once('.').ok_or(SHAPE)?;
    if payload_b64.contains('.') {
        return Err(SHAPE);
    }
    if header_b64.len() > MAX_HEADER_BYTES.div_ceil(3) * 4 {
        return Err(VerifyError::Malformed("the token header is too large"));
    }
    let header = b64url_decode(header_b64)
        .ok_or(VerifyError::Malformed("the token header is not base64url"))?;
    let header: Map<String, Value> = serde_json::from_slice(&header)
        .map_err(|_| VerifyError::Malformed("the token header is not a JSON object"))?;
    let alg = match header.get("alg") {
        None => return Err(VerifyError::Malformed("the token header has no alg")),
        Some(Value::String(name)) => {
            if name.eq_ignore_ascii_case("none") {
                return Err(VerifyError::BadSignature(
                    "unsecured tokens (alg none) are not accepted",
                ));
            }
            Algorithm::from_name(name).ok_or(VerifyError::BadSignature(
                "the token's algorithm is not supported",
            ))?
        }
        Some(_) => {
            return Err(VerifyError::Malformed(
                "the token header's alg is not a string",
            ))
        }
    };
    // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; none is.
    if header.contains_key("crit") {
        return Err(VerifyError::Malformed(
            "the token uses a critical header extension (crit) that is not supported",
        ));
    }
    // RFC 7797 unencoded payloads change what is signed; not supported.
    if header.get("b64").is_some_and(|v| v != &Value::Bool(true)) {
        return Err(VerifyError::Malformed(
            "unencoded payloads (b64) are not supported",
        ));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => {
            return Err(VerifyError::Malformed(
                "the token header's kid is not a string",
            ))
        }
    };
    let payload = b64url_decode(payload_b64)
        .ok_or(VerifyError::Malformed("the token payload is not base64url"))?;
    let signature = b64url_decode(sig_b64).ok_or(VerifyError::Malformed(
        "the token signature is not base64url",
    ))?;
    if signature.is_empty() {
        return Err(VerifyError::BadSignature("the token is not signed"));
    }
    Ok(DecodedJws {
        alg,
        kid,
        signing_input,
        payload,
        signature,
    })
}

/// Checks the signature of a decoded JWS with `keys` (steps 3–4 above). Also
/// returns which backend checked it, if a key was tried (all keys tried share the
/// token's algorithm, so one backend).
pub(crate) fn verify_signature(
    jws: &DecodedJws<'_>,
    keys: &KeySet,
    verifier: &Verifier,
) -> Checked<()> {
    let mut tried = 0usize;
    let mut verified = false;
    let mut kid_matched = false;
    let mut backend = None;
    for key in keys.keys() {
        match &jws.kid {
            Some(kid) => {
                if key.kid() != Some(kid.as_str()) {
                    continue;
                }
                kid_matched = true;
            }
            None => {
                if tried >= MAX_KEYS_TRIED_WITHOUT_KID {
                    break;
                }
            }
        }
        // The key fixes the algorithm: a token labelled HS256 is never checked with an
        // RSA key's bytes as HMAC secret, nor the reverse.
        if key.alg() != jws.alg {
            continue;
        }
        tried += 1;
        let (ok, by) = verify_with_key(key, jws.signing_input.as_bytes(), &jws.signature, verifier);
        backend = Some(by);
        if ok {
            verified = true;
            break;
        }
    }
    let result = if verified {
        Ok(())
    } else if jws.kid.is_some() && !kid_matched {
        Err(VerifyError::UnknownKid)
    } else if tried == 0 {
        Err(VerifyError::BadSignature(
            "the token's algorithm does not match its key",
        ))
    } else {
        Err(VerifyError::BadSignature("the token signature is invalid"))
    };
    (result, backend)
}

/// Verifies only the signature of a compact JWS, in the module, and returns the
/// payload bytes, whatever they are (Wycheproof's `foo`). Not a JWT check: see
/// [`verify_jwt`].
pub fn verify_jws(token: &str, keys: &KeySet) -> Result<Vec<u8>, VerifyError> {
    verify_jws_with(token, keys, &Verifier::module()).0
}

/// [`verify_jws`] with the backends of `verifier`; also returns which backend
/// checked the signature (`None`: refused before any key was tried).
pub fn verify_jws_with(token: &str, keys: &KeySet, verifier: &Verifier) -> Checked<Vec<u8>> {
    let jws = match decode(token) {
        Ok(jws) => jws,
        Err(e) => return (Err(e), None),
    };
    let (result, backend) = verify_signature(&jws, keys, verifier);
    (result.map(|()| jws.payload), backend)
}

/// The provider's claim requirements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsRules {
    /// Required `iss`.
    pub issuer: String,
    /// If non-empty, `aud` must hold one of these.
    pub audiences: Vec<String>,
    /// Leeway for `exp`, `nbf` and `iat`, seconds.
    pub clock_skew_seconds: u64,
    /// Largest `exp - iat` (or `exp - now` without `iat`).
    pub max_lifetime_seconds: Option<u64>,
    /// Refuse tokens without `exp`.
    pub require_expiration: bool,
}

/// The time claims of a token, as whole seconds (fractions rounded down).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeClaims {
    /// `exp`.
    pub exp: Option<i64>,
    /// `nbf`.
    pub nbf: Option<i64>,
    /// `iat`.
    pub iat: Option<i64>,
}

/// A token whose signature and claims passed.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The payload object.
    pub claims: Claims,
    /// Its time claims, re-checked on every cache hit.
    pub times: TimeClaims,
}

/// Full check of a JWT against one provider's keys and rules at `now` (Unix
/// seconds), signatures verified in the module.
pub fn verify_jwt(
    token: &str,
    keys: &KeySet,
    rules: &ClaimsRules,
    now: u64,
) -> Result<VerifiedToken, VerifyError> {
    verify_jwt_with(token, keys, rules, now, &Verifier::module()).0
}

/// [`verify_jwt`] with the backends of `verifier`; also returns which backend
/// checked the signature (`None`: refused before any key was tried).
pub(crate) fn verify_jwt_with(
    token: &str,
    keys: &KeySet,
    rules: &ClaimsRules,
    now: u64,
    verifier: &Verifier,
) -> Checked<VerifiedToken> {
    let jws = match decode(token) {
        Ok(jws) => jws,
        Err(e) => return (Err(e), None),
    };
    let (result, backend) = verify_signature(&jws, keys, verifier);
    (
        result.and_then(|()| check_claims(&jws.payload, rules, now)),
        backend,
    )
}

/// Checks a verified payload (step 5 above).
pub(crate) fn check_claims(
    payload: &[u8],
    rules: &ClaimsRules,
    now: u64,
) -> Result<VerifiedToken, VerifyError> {
    // RFC 7519 §7.2 step 10: the payload must be a JSON object.
    let claims: Claims = serde_json::from_slice(payload)
        .map_err(|_| VerifyError::Malformed("the token payload is not a JSON object"))?;
    let times = TimeClaims {
        exp: numeric_date(&claims, "exp")?,
        nbf: numeric_date(&claims, "nbf")?,
        iat: numeric_date(&claims, "iat")?,
    };
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == rules.issuer => {}
        _ => return Err(VerifyError::Issuer),
    }
    check_times(&times, rules, now)?;
    if !rules.audiences.is_empty() {
        let accepted = |v: &Value| {
            v.as_str()
                .is_some_and(|a| rules.audiences.iter().any(|x| x == a))
        };
        let ok = match claims.get("aud") {
            Some(Value::Array(items)) => items.iter().any(accepted),
            Some(v) => accepted(v),
            None => false,
        };
        if !ok {
            return Err(VerifyError::Audience);
        }
    }
    Ok(VerifiedToken { claims, times })
}

/// The time checks: also run on every cache hit, since they depend on `now`.
pub(crate) fn check_times(
    times: &TimeClaims,
    rules: &ClaimsRules,
    now: u64,
) -> Result<(), VerifyError> {
    let now = i128::from(now);
    let skew = i128::from(rules.clock_skew_seconds);
    match times.exp {
        // RFC 7519 §4.1.4: the token must not be accepted on or after exp.
        Some(exp) if now >= i128::from(exp) + skew => {
            return Err(VerifyError::Expired("the token has expired"))
        }
        Some(_) => {}
        None if rules.require_expiration || rules.max_lifetime_seconds.is_some() => {
            return Err(VerifyError::Malformed("the token has no exp claim"))
        }
        None => {}
    }
    if times.nbf.is_some_and(|nbf| now + skew < i128::from(nbf)) {
        return Err(VerifyError::NotYetValid("the token is not valid yet (nbf)"));
    }
    if times.iat.is_some_and(|iat| now + skew < i128::from(iat)) {
        return Err(VerifyError::NotYetValid(
            "the token was issued in the future (iat)",
        ));
    }
    if let (Some(max), Some(exp)) = (rules.max_lifetime_seconds, times.exp) {
        let start = times.iat.map_or(now, i128::from);
        if i128::from(exp) - start > i128::from(max) {
            return Err(VerifyError::Expired(
                "the token's lifetime exceeds the allowed maximum",
            ));
        }
    }
    Ok(())
}

/// A NumericDate claim (RFC 7519 §2): absent, or a JSON number.
fn numeric_date(claims: &Claims, name: &str) -> Result<Option<i64>, VerifyError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(if let Some(i) = n.as_i64() {
            i
        } else if n.as_u64().is_some() {
            i64::MAX
        } else {
            // `as` saturates; JSON has no NaN or infinity.
            n.as_f64().map_or(0, |f| f.floor() as i64)
        })),
        Some(_) => Err(VerifyError::Malformed(match name {
            "exp" => "the token's exp claim is not a number",
            "nbf" => "the token's nbf claim is not a number",
            _ => "the token's iat claim is not a number",
        })),
    }
}

/// Checks `sig` over `msg` with `key`, under the key's own algorithm, on the
/// backend `verifier` names for it.
fn verify_with_key(
    key: &VerifyingKey,
    msg: &[u8],
    sig: &[u8],
    verifier: &Verifier,
) -> (bool, Backend) {
    match (
        &key.host,
        verifier.host_for(key.alg()),
        Family::of(key.alg()),
    ) {
        (Some(args), Some(host), Some(family)) => {
            // The lengths the module's primitives insist on (RFC 8017 §8.2.2 step 1,
            // RFC 7518 §3.4): a signature of another size never reaches the host.
            // Only these key materials come with host arguments.
            let len = match &key.material {
                KeyMaterial::Rsa { key, .. } => Some(key.n.len()),
                KeyMaterial::P256(_) => Some(64),
                KeyMaterial::P384(_) => Some(96),
                KeyMaterial::P521(_) => Some(132),
                _ => None,
            };
            let ok = len == Some(sig.len())
                && hostsig::verify(host, args, family, sig, msg).unwrap_or(false);
            (ok, Backend::Host)
        }
        _ => (verify_in_module(key, msg, sig), Backend::Module),
    }
}

/// Checks `sig` over `msg` with `key` in the module.
fn verify_in_module(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    use p521::ecdsa::signature::hazmat::PrehashVerifier;
    use ring::digest;
    match (&key.material, key.alg()) {
        // Constant-time comparison of the full tag (a truncated tag never passes).
        (KeyMaterial::Hmac(k), _) => ring::hmac::verify(k, msg, sig).is_ok(),
        // The parameters were chosen with the key (src/jwt/jwks.rs). ring checks the
        // length too (RFC 8017 §8.2.2 step 1).
        (KeyMaterial::Rsa { key, params }, _) => {
            sig.len() == key.n.len() && key.verify(params, msg, sig).is_ok()
        }
        // ECDSA signatures are R || S, each the field size (RFC 7518 §3.4). ring's
        // `*_FIXED` and the RustCrypto `from_slice` refuse other lengths (so DER) and
        // r or s of zero or >= n; both accept high S, which JOSE does not forbid.
        (KeyMaterial::P256(pk), Algorithm::ES256) | (KeyMaterial::P384(pk), Algorithm::ES384) => {
            pk.verify(msg, sig).is_ok()
        }
        // The RustCrypto curves get ring's digest, so no second SHA-2 is linked.
        (KeyMaterial::P521(vk), Algorithm::ES512) => {
            let hash = digest::digest(&digest::SHA512, msg);
            p521::ecdsa::Signature::from_slice(sig)
                .is_ok_and(|s| vk.verify_prehash(hash.as_ref(), &s).is_ok())
        }
        // k256 refuses high-S signatures (a Bitcoin rule); JOSE (RFC 8812) does not
        // require low S, so normalise first: (r, s) and (r, n - s) are equally valid.
        (KeyMaterial::K256(vk), Algorithm::ES256K) => {
            let hash = digest::digest(&digest::SHA256, msg);
            k256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| {
                vk.verify_prehash(hash.as_ref(), &s.normalize_s().unwrap_or(s))
                    .is_ok()
            })
        }
        // ring refuses signatures that are not 64 bytes and S >= L (RFC 8032 §5.1.7).
        (KeyMaterial::Ed25519(pk), Algorithm::EdDSA) => pk.verify(msg, sig).is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::hostsig::{Families, SignatureHost};
    use crate::jwt::jwks::{parse_jwk, KeyRules};
    use crate::jwt::standin::NativeVerifySignature;
    use crate::jwt::testkeys::{self, mint, mint_raw, Minted};
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "https://idp.example.com/";

    fn rules() -> ClaimsRules {
        ClaimsRules {
            issuer: ISS.to_string(),
            audiences: vec!["orders-api".to_string()],
            clock_skew_seconds: 60,
            max_lifetime_seconds: None,
            require_expiration: true,
        }
    }

    /// `{"iss": ISS, "aud": "orders-api", "sub": "alice", "iat": NOW-10, "exp": NOW+600}`
    fn good_claims() -> Value {
        json!({"iss": ISS, "aud": "orders-api", "sub": "alice", "iat": NOW - 10, "exp": NOW + 600})
    }

    #[test]
    fn every_algorithm_verifies_its_own_tokens() {
        for alg in Algorithm::ALL {
            let keys = testkeys::keyset(&[alg]);
            let token = mint(alg, Some(testkeys::kid_of(alg)), &good_claims());
            let res = verify_jwt(&token, &keys, &rules(), NOW);
            assert!(res.is_ok(), "{alg}: {res:?}");
            let claims = res.map(|t| t.claims).unwrap_or_default();
            assert_eq!(claims.get("sub"), Some(&json!("alice")), "{alg}");
        }
    }

    /// Envoy's verify_signature as the native stand-in plays it, for every family.
    fn on_host() -> Verifier {
        static STAND_IN: NativeVerifySignature = NativeVerifySignature;
        Verifier::host(&STAND_IN, Families::ALL)
    }

    #[test]
    fn every_algorithm_verifies_on_its_backend() {
        for alg in Algorithm::ALL {
            let keys = testkeys::keyset(&[alg]);
            let token = mint(alg, Some(testkeys::kid_of(alg)), &good_claims());
            let want = if Family::of(alg).is_some() {
                Backend::Host
            } else {
                Backend::Module
            };
            let (res, backend) = verify_jwt_with(&token, &keys, &rules(), NOW, &on_host());
            assert!(res.is_ok(), "{alg}: {res:?}");
            assert_eq!(backend, Some(want), "{alg}");
            let (res, backend) = verify_jwt_with(&token, &keys, &rules(), NOW, &Verifier::module());
            assert!(res.is_ok(), "{alg}: {res:?}");
            assert_eq!(backend, Some(Backend::Module), "{alg}");
            // A different signature byte fails on either backend, as a signature error.
            let (input, sig) = token.rsplit_once('.').unwrap_or_default();
            let mut bytes = crate::jwt::b64url_decode(sig).unwrap_or_default();
            let at = bytes.len() / 3;
            bytes[at] ^= 0x10;
            let bad = format!("{input}.{}", crate::jwt::b64url_encode(&bytes));
            for verifier in [on_host(), Verifier::module()] {
                let (res, backend) = verify_jwt_with(&bad, &keys, &rules(), NOW, &verifier);
                assert_eq!(
                    res.err(),
                    Some(VerifyError::BadSignature("the token signature is invalid")),
                    "{alg}"
                );
                assert!(backend.is_some(), "{alg}");
            }
        }
    }

    /// A host that answers every call with `answer` and counts the calls.
    struct Counting {
        answer: Result<Vec<u8>, u32>,
        calls: std::cell::Cell<usize>,
    }

    impl SignatureHost for Counting {
        fn verify_signature(&self, _arguments: &[u8]) -> Result<Vec<u8>, u32> {
            self.calls.set(self.calls.get() + 1);
            self.answer.clone()
        }
    }

    fn counting(answer: Result<Vec<u8>, u32>) -> &'static Counting {
        Box::leak(Box::new(Counting {
            answer,
            calls: std::cell::Cell::new(0),
        }))
    }

    #[test]
    fn the_host_decides_only_signatures_of_the_right_length() {
        // A host that says yes to everything: what reaches it passes, so this shows
        // exactly which signatures are refused before it is asked.
        let yes = counting(Ok(vec![0x08, 0x01]));
        let verifier = Verifier::host(yes, Families::ALL);
        for (alg, len) in [
            (Algorithm::RS256, 256),
            (Algorithm::ES256, 64),
            (Algorithm::ES384, 96),
            (Algorithm::ES512, 132),
        ] {
            let keys = testkeys::keyset(&[alg]);
            let header = format!(r#"{{"alg":"{alg}"}}"#);
            let input = format!(
                "{}.{}",
                crate::jwt::b64url_encode(header.as_bytes()),
                crate::jwt::b64url_encode(b"{}")
            );
            for (sig_len, fill, reaches_host) in [
                (len, 7u8, true),
                (len - 1, 7, false),
                (len + 1, 7, false),
                (len * 2, 7, false),
                (1, 7, false),
            ] {
                let before = yes.calls.get();
                let token = format!(
                    "{input}.{}",
                    crate::jwt::b64url_encode(&vec![fill; sig_len])
                );
                let (res, backend) = verify_jws_with(&token, &keys, &verifier);
                assert_eq!(res.is_ok(), reaches_host, "{alg} {sig_len}");
                assert_eq!(
                    yes.calls.get() - before,
                    usize::from(reaches_host),
                    "{alg} {sig_len}"
                );
                assert_eq!(backend, Some(Backend::Host), "{alg} {sig_len}");
            }
            // ECDSA with r or s zero is never sent.
            if alg != Algorithm::RS256 {
                let before = yes.calls.get();
                let mut zero_s = vec![1u8; len];
                zero_s[len / 2..].fill(0);
                let token = format!("{input}.{}", crate::jwt::b64url_encode(&zero_s));
                assert!(
                    verify_jws_with(&token, &keys, &verifier).0.is_err(),
                    "{alg}"
                );
                assert_eq!(yes.calls.get(), before, "{alg}");
            }
        }
    }

    #[test]
    fn a_failing_host_call_is_an_invalid_signature() {
        let keys = testkeys::keyset(&[Algorithm::ES256]);
        let token = mint(Algorithm::ES256, Some("es256"), &good_claims());
        for answer in [Err(1), Err(2), Err(10), Ok(vec![]), Ok(vec![0x08, 0x00])] {
            let host = counting(answer.clone());
            let (res, backend) = verify_jwt_with(
                &token,
                &keys,
                &rules(),
                NOW,
                &Verifier::host(host, Families::ALL),
            );
            assert_eq!(
                res.err(),
                Some(VerifyError::BadSignature("the token signature is invalid")),
                "{answer:?}"
            );
            assert_eq!((backend, host.calls.get()), (Some(Backend::Host), 1));
        }
        // Refused before any key: no backend.
        let (res, backend) = verify_jws_with("a.b", &keys, &on_host());
        assert!(res.is_err() && backend.is_none());
        let hs = mint(Algorithm::HS256, Some("es256"), &good_claims());
        let (res, backend) = verify_jws_with(&hs, &keys, &on_host());
        assert!(res.is_err() && backend.is_none());
    }

    #[test]
    fn tokens_minted_by_jwt_simple_verify() {
        // An independent implementation signs; ours verifies.
        for (alg, token) in testkeys::jwt_simple_tokens(ISS, "orders-api") {
            let keys = testkeys::keyset(&[alg]);
            let res = verify_jwt(&token, &keys, &rules(), testkeys::wall_clock());
            assert!(res.is_ok(), "{alg}: {res:?}");
            let (res, _) =
                verify_jwt_with(&token, &keys, &rules(), testkeys::wall_clock(), &on_host());
            assert!(res.is_ok(), "{alg} on the host: {res:?}");
        }
    }

    #[test]
    fn key_confusion_is_refused_for_every_pair() {
        // A token signed with one algorithm, presented to a key of another: never valid,
        // even when the header claims the key's algorithm.
        let keysets: Vec<KeySet> = Algorithm::ALL
            .iter()
            .map(|a| testkeys::keyset(&[*a]))
            .collect();
        let tokens: Vec<String> = Algorithm::ALL
            .iter()
            .map(|a| mint(*a, None, &good_claims()))
            .collect();
        for (si, signer) in Algorithm::ALL.iter().enumerate() {
            // RSA signing is slow unoptimised: relabel with one PKCS#1 and one PSS signer.
            let relabel = !matches!(
                signer,
                Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS384 | Algorithm::PS512
            );
            for (vi, verifier) in Algorithm::ALL.iter().enumerate() {
                if si == vi {
                    continue;
                }
                let res = verify_jwt(&tokens[si], &keysets[vi], &rules(), NOW);
                assert_eq!(
                    res.map(|_| ()).map_err(|e| e.reason()),
                    Err("bad_signature"),
                    "{signer} token vs {verifier} key"
                );
                // The host infers the algorithm from the key: the binding is ours.
                let (res, _) =
                    verify_jwt_with(&tokens[si], &keysets[vi], &rules(), NOW, &on_host());
                assert_eq!(
                    res.map(|_| ()).map_err(|e| e.reason()),
                    Err("bad_signature"),
                    "{signer} token vs {verifier} key on the host"
                );
                if relabel {
                    // Relabelled: header says the verifier's alg, signature is the signer's.
                    let forged = testkeys::mint_with_header(
                        *signer,
                        &json!({"alg": verifier.name()}),
                        &good_claims(),
                    );
                    assert!(
                        verify_jwt(&forged, &keysets[vi], &rules(), NOW).is_err(),
                        "{signer} as {verifier}"
                    );
                    let (res, _) =
                        verify_jwt_with(&forged, &keysets[vi], &rules(), NOW, &on_host());
                    assert!(res.is_err(), "{signer} as {verifier} on the host");
                }
            }
        }
    }

    #[test]
    fn hmac_with_public_key_bytes_is_refused() {
        // The classic RS256 -> HS256 attack: HMAC keyed with the RSA public key.
        let keys = testkeys::keyset(&[Algorithm::RS256]);
        let secret = testkeys::rsa_public_der();
        let token = testkeys::mint_hmac_with(&secret, "HS256", &good_claims());
        assert_eq!(
            verify_jwt(&token, &keys, &rules(), NOW).err(),
            Some(VerifyError::BadSignature(
                "the token's algorithm does not match its key"
            ))
        );
    }

    #[test]
    fn malformed_tokens_table() {
        let keys = testkeys::keyset(&[Algorithm::HS256]);
        let good = mint(Algorithm::HS256, None, &good_claims());
        let parts: Vec<&str> = good.split('.').collect();
        let (h, p, s) = (parts[0], parts[1], parts[2]);
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        let cases: Vec<(String, VerifyError)> = vec![
            (
                String::new(),
                VerifyError::Malformed("the token is not a compact JWS (header.payload.signature)"),
            ),
            (
                format!("{h}.{p}"),
                VerifyError::Malformed("the token is not a compact JWS (header.payload.signature)"),
            ),
            (
                format!("{h}.{p}.{s}.x"),
                VerifyError::Malformed("the token is not a compact JWS (header.payload.signature)"),
            ),
            (
                format!("{h}.{p}."),
                VerifyError::BadSignature("the token is not signed"),
            ),
            (
                format!("{h}=.{p}.{s}"),
                VerifyError::Malformed("the token header is not base64url"),
            ),
            (
                format!("{h}.{p} .{s}"),
                VerifyError::Malformed("the token payload is not base64url"),
            ),
            (
                format!("{h}.{p}.{s}="),
                VerifyError::Malformed("the token signature is not base64url"),
            ),
            (
                format!(" {h}.{p}.{s}"),
                VerifyError::Malformed("the token header is not base64url"),
            ),
            (big, VerifyError::Malformed("the token is too large")),
            (
                mint_raw(Algorithm::HS256, br#"{"alg":"HS256"}"#, b"[1]"),
                VerifyError::Malformed("the token payload is not a JSON object"),
            ),
            (
                mint_raw(Algorithm::HS256, br#"{"alg":"HS256"}"#, b"foo"),
                VerifyError::Malformed("the token payload is not a JSON object"),
            ),
            (
                mint_raw(Algorithm::HS256, br#"["HS256"]"#, b"{}"),
                VerifyError::Malformed("the token header is not a JSON object"),
            ),
            (
                mint_raw(Algorithm::HS256, br#"{"typ":"JWT"}"#, b"{}"),
                VerifyError::Malformed("the token header has no alg"),
            ),
            (
                mint_raw(Algorithm::HS256, br#"{"alg":256}"#, b"{}"),
                VerifyError::Malformed("the token header's alg is not a string"),
            ),
            (
                mint_raw(
                    Algorithm::HS256,
                    br#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
                    b"{}",
                ),
                VerifyError::Malformed(
                    "the token uses a critical header extension (crit) that is not supported",
                ),
            ),
            (
                mint_raw(Algorithm::HS256, br#"{"alg":"HS256","crit":[]}"#, b"{}"),
                VerifyError::Malformed(
                    "the token uses a critical header extension (crit) that is not supported",
                ),
            ),
            (
                mint_raw(Algorithm::HS256, br#"{"alg":"HS256","b64":false}"#, b"{}"),
                VerifyError::Malformed("unencoded payloads (b64) are not supported"),
            ),
            (
                mint_raw(Algorithm::HS256, br#"{"alg":"HS256","kid":1}"#, b"{}"),
                VerifyError::Malformed("the token header's kid is not a string"),
            ),
            (
                mint_raw(Algorithm::HS256, br#"{"alg":"none"}"#, b"{}"),
                VerifyError::BadSignature("unsecured tokens (alg none) are not accepted"),
            ),
            (
                mint_raw(Algorithm::HS256, br#"{"alg":"nOnE"}"#, b"{}"),
                VerifyError::BadSignature("unsecured tokens (alg none) are not accepted"),
            ),
            (
                mint_raw(Algorithm::HS256, br#"{"alg":"hs256"}"#, b"{}"),
                VerifyError::BadSignature("the token's algorithm is not supported"),
            ),
            (
                mint_raw(Algorithm::HS256, br#"{"alg":"HS256","kid":"nope"}"#, b"{}"),
                VerifyError::UnknownKid,
            ),
        ];
        for (token, want) in cases {
            assert_eq!(
                verify_jwt(&token, &keys, &rules(), NOW).err(),
                Some(want.clone()),
                "{want:?}"
            );
        }
        // alg none with an empty signature, as attackers send it.
        let none = format!("{}.{p}.", crate::jwt::b64url_encode(br#"{"alg":"none"}"#));
        assert_eq!(
            verify_jwt(&none, &keys, &rules(), NOW)
                .map_err(|e| e.reason())
                .err(),
            Some("bad_signature")
        );
    }

    #[test]
    fn tampering_is_detected() {
        let keys = testkeys::keyset(&[Algorithm::ES256]);
        let good = mint(Algorithm::ES256, Some("es256"), &good_claims());
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        parts[1] = crate::jwt::b64url_encode(
            br#"{"iss":"https://idp.example.com/","aud":"orders-api","sub":"admin"}"#,
        );
        let tampered = parts.join(".");
        assert_eq!(
            verify_jwt(&tampered, &keys, &rules(), NOW).err(),
            Some(VerifyError::BadSignature("the token signature is invalid"))
        );
    }

    #[test]
    fn claim_checks_table() {
        let keys = testkeys::keyset(&[Algorithm::HS256]);
        let r = rules();
        let lifetime = ClaimsRules {
            max_lifetime_seconds: Some(3600),
            ..rules()
        };
        let optional_exp = ClaimsRules {
            require_expiration: false,
            audiences: vec![],
            ..rules()
        };
        let any_aud = ClaimsRules {
            audiences: vec!["a".into(), "orders-api".into()],
            ..rules()
        };
        let lifetime_no_exp = ClaimsRules {
            require_expiration: false,
            ..lifetime.clone()
        };
        let t = NOW as i64;
        let cases: Vec<(&str, Value, &ClaimsRules, Result<(), &str>)> = vec![
            ("good", good_claims(), &r, Ok(())),
            (
                "aud array",
                json!({"iss": ISS, "aud": ["x", "orders-api"], "exp": t + 5}),
                &r,
                Ok(()),
            ),
            (
                "aud other",
                json!({"iss": ISS, "aud": "other", "exp": t + 5}),
                &r,
                Err("audience"),
            ),
            (
                "aud missing",
                json!({"iss": ISS, "exp": t + 5}),
                &r,
                Err("audience"),
            ),
            (
                "aud number",
                json!({"iss": ISS, "aud": 5, "exp": t + 5}),
                &r,
                Err("audience"),
            ),
            (
                "aud any of",
                json!({"iss": ISS, "aud": "a", "exp": t + 5}),
                &any_aud,
                Ok(()),
            ),
            (
                "iss other",
                json!({"iss": "https://evil/", "aud": "orders-api", "exp": t + 5}),
                &r,
                Err("issuer"),
            ),
            (
                "iss missing",
                json!({"aud": "orders-api", "exp": t + 5}),
                &r,
                Err("issuer"),
            ),
            (
                "iss not string",
                json!({"iss": 1, "aud": "orders-api", "exp": t + 5}),
                &r,
                Err("issuer"),
            ),
            (
                "expired",
                json!({"iss": ISS, "aud": "orders-api", "exp": t - 61}),
                &r,
                Err("expired"),
            ),
            (
                "expired beats aud",
                json!({"iss": ISS, "aud": "x", "exp": t - 61}),
                &r,
                Err("expired"),
            ),
            (
                "exp in skew",
                json!({"iss": ISS, "aud": "orders-api", "exp": t - 59}),
                &r,
                Ok(()),
            ),
            (
                "exp at skew edge",
                json!({"iss": ISS, "aud": "orders-api", "exp": t - 60}),
                &r,
                Err("expired"),
            ),
            (
                "exp float",
                json!({"iss": ISS, "aud": "orders-api", "exp": (t + 5) as f64 + 0.5}),
                &r,
                Ok(()),
            ),
            (
                "exp huge",
                json!({"iss": ISS, "aud": "orders-api", "exp": u64::MAX}),
                &r,
                Ok(()),
            ),
            (
                "exp negative",
                json!({"iss": ISS, "aud": "orders-api", "exp": -5}),
                &r,
                Err("expired"),
            ),
            (
                "exp string",
                json!({"iss": ISS, "aud": "orders-api", "exp": "2000000000"}),
                &r,
                Err("malformed"),
            ),
            (
                "exp missing",
                json!({"iss": ISS, "aud": "orders-api"}),
                &r,
                Err("malformed"),
            ),
            ("exp optional", json!({"iss": ISS}), &optional_exp, Ok(())),
            (
                "nbf future",
                json!({"iss": ISS, "aud": "orders-api", "exp": t + 500, "nbf": t + 61}),
                &r,
                Err("not_yet_valid"),
            ),
            (
                "nbf in skew",
                json!({"iss": ISS, "aud": "orders-api", "exp": t + 500, "nbf": t + 60}),
                &r,
                Ok(()),
            ),
            (
                "nbf bool",
                json!({"iss": ISS, "aud": "orders-api", "exp": t + 500, "nbf": true}),
                &r,
                Err("malformed"),
            ),
            (
                "iat future",
                json!({"iss": ISS, "aud": "orders-api", "exp": t + 500, "iat": t + 61}),
                &r,
                Err("not_yet_valid"),
            ),
            (
                "iat null",
                json!({"iss": ISS, "aud": "orders-api", "exp": t + 500, "iat": null}),
                &r,
                Err("malformed"),
            ),
            (
                "lifetime ok",
                json!({"iss": ISS, "aud": "orders-api", "iat": t - 100, "exp": t + 3500}),
                &lifetime,
                Ok(()),
            ),
            (
                "lifetime long",
                json!({"iss": ISS, "aud": "orders-api", "iat": t - 100, "exp": t + 3501}),
                &lifetime,
                Err("expired"),
            ),
            (
                "lifetime no iat",
                json!({"iss": ISS, "aud": "orders-api", "exp": t + 3601}),
                &lifetime,
                Err("expired"),
            ),
            (
                "lifetime no exp",
                json!({"iss": ISS, "aud": "orders-api"}),
                &lifetime_no_exp,
                Err("malformed"),
            ),
        ];
        for (name, claims, rules, want) in cases {
            let token = mint(Algorithm::HS256, None, &claims);
            let got = verify_jwt(&token, &keys, rules, NOW)
                .map(|_| ())
                .map_err(|e| e.reason());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn kid_selects_the_key_and_kidless_tokens_try_matching_keys() {
        let keys = testkeys::keyset(&[Algorithm::ES256, Algorithm::ES384, Algorithm::RS256]);
        let with_kid = mint(Algorithm::ES384, Some("es384"), &good_claims());
        assert!(verify_jwt(&with_kid, &keys, &rules(), NOW).is_ok());
        let wrong_kid = mint(Algorithm::ES384, Some("es256"), &good_claims());
        assert_eq!(
            verify_jwt(&wrong_kid, &keys, &rules(), NOW).err(),
            Some(VerifyError::BadSignature(
                "the token's algorithm does not match its key"
            ))
        );
        let kidless = mint(Algorithm::RS256, None, &good_claims());
        assert!(verify_jwt(&kidless, &keys, &rules(), NOW).is_ok());
        let unknown = mint(Algorithm::RS256, Some("rotated"), &good_claims());
        assert_eq!(
            verify_jwt(&unknown, &keys, &rules(), NOW).err(),
            Some(VerifyError::UnknownKid)
        );
    }

    #[test]
    fn embedded_jwk_is_never_trusted() {
        // The header carries the attacker's own key; only configured keys count.
        let keys = testkeys::keyset(&[Algorithm::ES256]);
        let header = json!({"alg": "ES256", "kid": "es256", "jwk": testkeys::other_ec_jwk()});
        let token = testkeys::mint_with_other_ec_key(&header, &good_claims());
        assert_eq!(
            verify_jwt(&token, &keys, &rules(), NOW).err(),
            Some(VerifyError::BadSignature("the token signature is invalid"))
        );
    }

    #[test]
    fn rsa_keys_under_2048_bits_verify_rs256_and_rs512() {
        // ring's JWS parameters start at 2048 bits; under that (allowed by
        // `min_rsa_bits`) its legacy PKCS#1 v1.5 parameters verify RS256 and RS512.
        let lowered = KeyRules {
            min_rsa_bits: 1024,
            allow_symmetric: false,
        };
        for alg in [Algorithm::RS256, Algorithm::RS512] {
            let mut jwk = testkeys::rsa1024_jwk();
            jwk["alg"] = json!(alg.name());
            let keys: Vec<VerifyingKey> = parse_jwk(&jwk, &lowered).into_iter().collect();
            let keys = KeySet::new(keys);
            let token = testkeys::mint_rsa1024(alg, &good_claims());
            assert!(verify_jwt(&token, &keys, &rules(), NOW).is_ok(), "{alg}");
            let (res, backend) = verify_jwt_with(&token, &keys, &rules(), NOW, &on_host());
            assert!(res.is_ok() && backend == Some(Backend::Host), "{alg}");
            // A different signature byte (first character of the signature part).
            let (input, sig) = token.rsplit_once('.').unwrap_or_default();
            let flipped = if sig.starts_with('A') { "B" } else { "A" };
            let bad = format!("{input}.{flipped}{}", &sig[1..]);
            assert!(verify_jwt(&bad, &keys, &rules(), NOW).is_err(), "{alg}");
            let (res, _) = verify_jwt_with(&bad, &keys, &rules(), NOW, &on_host());
            assert!(res.is_err(), "{alg}");
        }
        // The other RSA algorithms have no parameters that small: refused at load.
        for alg in [Algorithm::RS384, Algorithm::PS256, Algorithm::PS512] {
            let mut jwk = testkeys::rsa1024_jwk();
            jwk["alg"] = json!(alg.name());
            assert_eq!(
                parse_jwk(&jwk, &lowered).err(),
                Some(format!("RSA modulus is 1024 bits; {alg} needs at least 2048 (keys under 2048 bits verify RS256 or RS512 only)"))
            );
        }
    }

    #[test]
    fn high_s_es256k_signatures_are_accepted() {
        let keys = testkeys::keyset(&[Algorithm::ES256K]);
        let Minted { token, .. } = testkeys::mint_es256k_high_s(&good_claims());
        assert!(verify_jwt(&token, &keys, &rules(), NOW).is_ok());
    }

    #[test]
    fn no_input_panics() {
        // Every single-character substitution, truncation and duplication of a good
        // token is an error, never a panic (and never a pass, except the original).
        let keys = testkeys::keyset(&[Algorithm::HS256, Algorithm::HS512]);
        let good = mint(Algorithm::HS256, Some("hs256"), &good_claims());
        let chars: Vec<char> = good.chars().collect();
        for i in 0..chars.len() {
            for c in ['.', '=', 'A', '_', '-', ' ', 'é', '\0'] {
                if chars[i] == c {
                    continue;
                }
                let mut m = chars.clone();
                m[i] = c;
                let t: String = m.into_iter().collect();
                assert!(verify_jwt(&t, &keys, &rules(), NOW).is_err(), "{t}");
            }
            let cut: String = chars[..i].iter().collect();
            assert!(verify_jwt(&cut, &keys, &rules(), NOW).is_err());
        }
        for weird in [
            "..",
            "...",
            ".a.",
            "a..",
            "é.é.é",
            "\u{0}.\u{0}.\u{0}",
            "eyJ9.e30.AA",
        ] {
            assert!(verify_jwt(weird, &keys, &rules(), NOW).is_err(), "{weird}");
        }
        assert!(verify_jwt(&format!("{good}{good}"), &keys, &rules(), NOW).is_err());
        // Deeply nested JSON in the header stops at serde_json's recursion limit.
        let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
        let t = testkeys::mint_raw(Algorithm::HS256, deep.as_bytes(), b"{}");
        assert!(verify_jwt(&t, &keys, &rules(), NOW).is_err());
    }

    #[test]
    fn errors_map_to_rejections() {
        assert_eq!(VerifyError::Audience.to_rejection().status(), 403);
        assert_eq!(VerifyError::KeysUnavailable.to_rejection().status(), 503);
        for e in [
            VerifyError::UnknownKid,
            VerifyError::Issuer,
            VerifyError::Expired("x"),
        ] {
            let r = e.to_rejection();
            assert_eq!(r.status(), 401);
            assert_eq!(r.reason(), e.reason());
        }
    }
}
