//! JWK and JWKS parsing (RFC 7517, RFC 7518 §6, RFC 8037): from JSON to verifying keys.
//!
//! A key is compiled once, when the configuration is loaded or a remote JWKS arrives,
//! into a [`VerifyingKey`]: the key material ready for the signature check (ring,
//! or `p521`/`k256`, see [`crate::jwt::verify`]), for the keys Envoy can verify
//! also their part of its `verify_signature` arguments ([`hostsig`]), and the one
//! [`Algorithm`] it may verify. The algorithm comes from the JWK `alg` member when
//! present (and must agree with `kty`/`crv`), otherwise from the key type:
//!
//! | key | `alg` absent means |
//! | --- | --- |
//! | `oct` | `HS256` (the key must then be at least 32 bytes) |
//! | `RSA` | `RS256` only: a PS* or RS384/512 key must say so with `alg` |
//! | `EC` `P-256` / `P-384` / `P-521` / `secp256k1` | `ES256` / `ES384` / `ES512` / `ES256K` |
//! | `OKP` `Ed25519` | `EdDSA` |
//!
//! Keys that cannot be used safely are refused with a message, never silently
//! ignored: an RSA modulus under `min_rsa_bits` (2048 by default) or over 8192 bits
//! (under 2048 bits, any algorithm but RS256 and RS512, which ring cannot verify), a
//! public exponent that is even or below 3, a modulus with the ROCA fingerprint
//! (CVE-2017-15361), an EC point not on its curve or of the wrong size, a small-order
//! Ed25519 key, an HMAC secret shorter than its hash (RFC 7518 §3.2), a key for
//! encryption (`use: enc`, or `key_ops` without `verify`), an algorithm that is not a
//! JWS signature algorithm, and private key members (`d`, `p`, ...) in what must be a
//! public key set.
//!
//! A whole set is refused when it is ambiguous (Wycheproof `DuplicateKid`,
//! `MixedKeySet`): two keys with the same `kid`, or symmetric and asymmetric keys
//! together. [`parse_jwks`] reports every refused key with its index; the caller decides
//! whether one bad key fails the set (inline keys: a configuration error) or is skipped
//! (remote keys: see [`KeyStore`](crate::jwt::KeyStore)).

use crate::jwt::b64url_decode_lenient;
use crate::jwt::hostsig;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Largest number of keys accepted in one JWKS.
pub const MAX_KEYS_PER_SET: usize = 64;
/// Largest RSA modulus accepted, in bits (verification cost grows with it).
pub const MAX_RSA_BITS: usize = 8192;
/// Smallest `min_rsa_bits` a provider may configure.
pub const MIN_RSA_BITS_FLOOR: u32 = 1024;
/// Default `min_rsa_bits`.
pub const DEFAULT_MIN_RSA_BITS: u32 = 2048;
/// Smallest RSA modulus of ring's `*_2048_8192_*` parameters. Smaller keys (down to
/// `min_rsa_bits`) verify with its legacy PKCS#1 v1.5 parameters, which exist for
/// RS256 and RS512 only.
pub const RING_MIN_RSA_BITS: usize = 2048;

/// A JWS signature algorithm (RFC 7518 §3, RFC 8037 §3.1, RFC 8812 §3.2).
///
/// `none` is not an algorithm here: an unsecured token can never be represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256 (MGF1 SHA-256, salt length 32).
    PS256,
    /// RSASSA-PSS with SHA-384 (MGF1 SHA-384, salt length 48).
    PS384,
    /// RSASSA-PSS with SHA-512 (MGF1 SHA-512, salt length 64).
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// ECDSA P-521 with SHA-512.
    ES512,
    /// ECDSA secp256k1 with SHA-256.
    ES256K,
    /// Ed25519 (the only EdDSA curve accepted).
    EdDSA,
}

impl Algorithm {
    /// Every supported algorithm.
    pub const ALL: [Algorithm; 14] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::ES256K,
        Algorithm::EdDSA,
    ];

    /// The JOSE name (`"RS256"`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::ES256K => "ES256K",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Parses a JOSE name, case-sensitively (RFC 7515 §4.1.1). `none` and unknown
    /// names are `None`.
    pub(crate) fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.iter().copied().find(|a| a.name() == name)
    }

    /// True for the HMAC algorithms (a shared secret, `kty: oct`).
    pub(crate) fn is_symmetric(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }

    /// Output size of the algorithm's hash, in bytes; the minimum HMAC key size.
    fn hash_len(self) -> usize {
        match self {
            Algorithm::HS256 | Algorithm::RS256 | Algorithm::PS256 => 32,
            Algorithm::ES256 | Algorithm::ES256K | Algorithm::EdDSA => 32,
            Algorithm::HS384 | Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => 48,
            Algorithm::HS512 | Algorithm::RS512 | Algorithm::PS512 | Algorithm::ES512 => 64,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Key material ready for verification. Never printed (see the `Debug` impl of
/// [`VerifyingKey`]).
#[derive(Clone)]
pub(crate) enum KeyMaterial {
    /// HMAC secret, keyed for the key's hash.
    Hmac(ring::hmac::Key),
    /// RSA public key (modulus and exponent big-endian without leading zeros) and
    /// the ring parameters of the key's algorithm: `*_2048_8192_*` from
    /// [`RING_MIN_RSA_BITS`], the legacy PKCS#1 v1.5 ones below (RS256, RS512).
    Rsa {
        key: ring::signature::RsaPublicKeyComponents<Vec<u8>>,
        params: &'static ring::signature::RsaParameters,
    },
    /// P-256 public key (uncompressed SEC1 point, on the curve), verified with ring.
    P256(ring::signature::UnparsedPublicKey<Vec<u8>>),
    /// P-384 public key (uncompressed SEC1 point, on the curve), verified with ring.
    P384(ring::signature::UnparsedPublicKey<Vec<u8>>),
    /// P-521 public key.
    P521(p521::ecdsa::VerifyingKey),
    /// secp256k1 public key.
    K256(k256::ecdsa::VerifyingKey),
    /// Ed25519 public key (canonical, not of small order), verified with ring.
    Ed25519(ring::signature::UnparsedPublicKey<[u8; 32]>),
}

/// One compiled JWK: optional `kid`, the algorithm it verifies, the key material.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    pub(crate) material: KeyMaterial,
    /// The key's part of Envoy's `verify_signature` arguments (hash and
    /// SubjectPublicKeyInfo, see [`hostsig`]), for RS*, ES256, ES384 and ES512 keys.
    pub(crate) host: Option<Box<[u8]>>,
}

impl VerifyingKey {
    /// The JWK `kid`, if any.
    pub(crate) fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key verifies.
    pub(crate) fn alg(&self) -> Algorithm {
        self.alg
    }
}

impl fmt::Debug for VerifyingKey {
    // Key material stays out of logs and panics: an HMAC key is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A compiled key set: the keys of one provider, in JWKS order.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// Builds a set from compiled keys (use [`parse_jwks`] for JSON).
    pub(crate) fn new(keys: Vec<VerifyingKey>) -> KeySet {
        KeySet { keys }
    }

    /// Parses a JWKS document strictly: any refused key, a duplicate `kid`, mixed
    /// symmetric and asymmetric keys or an empty set is an error naming the key
    /// (`keys[1]: ...`). Used for inline keys and for conformance tests.
    pub fn from_jwks_strict(doc: &Value, rules: &KeyRules) -> Result<KeySet, String> {
        let parsed = parse_jwks(doc, rules)?;
        if let Some(first) = parsed.rejected.first() {
            return Err(first.to_string());
        }
        if parsed.keys.is_empty() {
            return Err("keys: the key set has no keys".to_string());
        }
        Ok(parsed.keys)
    }

    /// The keys, in document order.
    pub(crate) fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if the set has no key.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What a key set may contain; from the provider configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRules {
    /// Smallest RSA modulus accepted, in bits (`min_rsa_bits`).
    pub min_rsa_bits: u32,
    /// Whether `oct` (HMAC) keys are accepted. False for remote sets: a shared secret
    /// published at a URL is no secret.
    pub allow_symmetric: bool,
}

impl Default for KeyRules {
    fn default() -> Self {
        KeyRules {
            min_rsa_bits: DEFAULT_MIN_RSA_BITS,
            allow_symmetric: true,
        }
    }
}

/// A key refused from a set: its index in `keys` and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIssue {
    /// Index in the JWKS `keys` array.
    pub index: usize,
    /// Why the key was refused; never contains key material.
    pub message: String,
}

impl fmt::Display for KeyIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "keys[{}]: {}", self.index, self.message)
    }
}

/// Result of [`parse_jwks`]: the usable keys and the refused ones.
#[derive(Debug, Clone, Default)]
pub struct ParsedJwks {
    /// Usable keys, in document order.
    pub keys: KeySet,
    /// Refused keys with their reasons, in document order.
    pub rejected: Vec<KeyIssue>,
}

/// Parses a JWKS document (`{"keys": [...]}`) key by key.
///
/// `Err` only when the document itself is unusable (not an object, no `keys` array,
/// more than [`MAX_KEYS_PER_SET`] keys). Otherwise each key is compiled on its own;
/// refused keys are listed in [`ParsedJwks::rejected`]. Keys sharing a `kid` are all
/// refused (which of them is meant is ambiguous), and when a set mixes `oct` and
/// asymmetric keys the `oct` keys are refused.
pub(crate) fn parse_jwks(doc: &Value, rules: &KeyRules) -> Result<ParsedJwks, String> {
    let Some(obj) = doc.as_object() else {
        return Err("must be a JWKS object: {\"keys\": [...]}".to_string());
    };
    let Some(keys) = obj.get("keys") else {
        return Err("keys: missing; a JWKS object is {\"keys\": [...]}".to_string());
    };
    let Some(keys) = keys.as_array() else {
        return Err("keys: must be an array".to_string());
    };
    if keys.len() > MAX_KEYS_PER_SET {
        return Err(format!(
            "keys: {} keys; at most {MAX_KEYS_PER_SET} are accepted",
            keys.len()
        ));
    }
    let mut good: Vec<(usize, VerifyingKey)> = Vec::new();
    let mut rejected = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        match parse_jwk(key, rules) {
            Ok(k) => good.push((index, k)),
            Err(message) => rejected.push(KeyIssue { index, message }),
        }
    }
    // Duplicate kids: RFC 7517 §4.5 expects distinct kids; the verifier cannot tell
    // which key is meant (Wycheproof `DuplicateKid`).
    let mut kid_count: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, k) in &good {
        if let Some(kid) = k.kid() {
            *kid_count.entry(kid).or_insert(0) += 1;
        }
    }
    let duplicated: Vec<String> = kid_count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(kid, _)| kid.to_string())
        .collect();
    // Mixed sets (Wycheproof `MixedKeySet`): a public key set that also holds a
    // shared secret is a configuration mistake waiting to become key confusion.
    let has_asym = good.iter().any(|(_, k)| !k.alg().is_symmetric());
    let has_sym = good.iter().any(|(_, k)| k.alg().is_symmetric());
    let mut kept = Vec::with_capacity(good.len());
    for (index, k) in good {
        if k.kid()
            .is_some_and(|kid| duplicated.iter().any(|d| d == kid))
        {
            rejected.push(KeyIssue {
                index,
                message: "another key has the same `kid`; kids must be unique".to_string(),
            });
        } else if has_asym && has_sym && k.alg().is_symmetric() {
            rejected.push(KeyIssue {
                index,
                message: "symmetric (`oct`) and asymmetric keys must not be mixed in one key set"
                    .to_string(),
            });
        } else {
            kept.push(k);
        }
    }
    rejected.sort_by_key(|i| i.index);
    Ok(ParsedJwks {
        keys: KeySet::new(kept),
        rejected,
    })
}

/// Private members that must never appear in a verifier's key set (RFC 7518 §6.2.2,
/// §6.3.2, RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// Compiles one JWK. The error is a safe message (no key material).
pub(crate) fn parse_jwk(key: &Value, rules: &KeyRules) -> Result<VerifyingKey, String> {
    let Some(obj) = key.as_object() else {
        return Err("must be a JSON object".to_string());
    };
    let kty = str_member(obj, "kty")?.ok_or("missing `kty`")?;
    let kid = str_member(obj, "kid")?.map(str::to_string);
    if let Some(usage) = str_member(obj, "use")? {
        if usage != "sig" {
            return Err(format!(
                "`use` is \"{}\"; only signature keys (`sig`) can verify tokens",
                printable(usage)
            ));
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops
            .as_array()
            .ok_or("`key_ops` must be an array of strings")?;
        if !ops.iter().any(|o| o.as_str() == Some("verify")) {
            return Err("`key_ops` does not include \"verify\"".to_string());
        }
    }
    let alg = match str_member(obj, "alg")? {
        None => None,
        // "ES521" is not a registered name, but RFC 7520-derived key sets (among them
        // Wycheproof's) use it for P-521 keys; it can only mean ES512, and the curve
        // check below still applies.
        Some("ES521") => Some(Algorithm::ES512),
        Some(name) => Some(Algorithm::from_name(name).ok_or_else(|| {
            format!(
                "`alg` \"{}\" is not a supported JWS signature algorithm",
                printable(name)
            )
        })?),
    };
    let asymmetric = kty != "oct";
    if asymmetric {
        if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
            return Err(format!(
                "contains private key member `{m}`; configure only the public key"
            ));
        }
    }
    let (alg, material, host) = match kty {
        "oct" => parse_oct(obj, alg, rules)?,
        "RSA" => parse_rsa(obj, alg, rules)?,
        "EC" => parse_ec(obj, alg)?,
        "OKP" => parse_okp(obj, alg)?,
        other => {
            return Err(format!(
                "`kty` \"{}\" is not supported (use oct, RSA, EC or OKP)",
                printable(other)
            ))
        }
    };
    Ok(VerifyingKey {
        kid,
        alg,
        material,
        host,
    })
}

/// A compiled key: its algorithm, its material and its part of the host's
/// arguments (`None` where only the module can verify it).
type Compiled = (Algorithm, KeyMaterial, Option<Box<[u8]>>);

fn parse_oct(
    obj: &Map<String, Value>,
    alg: Option<Algorithm>,
    rules: &KeyRules,
) -> Result<Compiled, String> {
    if !rules.allow_symmetric {
        return Err("symmetric (`oct`) keys are not accepted from a remote key set".to_string());
    }
    let alg = alg.unwrap_or(Algorithm::HS256);
    if !alg.is_symmetric() {
        return Err(format!("`alg` {alg} does not fit `kty` oct"));
    }
    let k = bytes_member(obj, "k")?;
    // RFC 7518 §3.2: "A key of the same size as the hash output ... or larger MUST
    // be used with this algorithm."
    if k.len() < alg.hash_len() {
        return Err(format!(
            "HMAC key is {} bytes; {alg} requires at least {} (RFC 7518 §3.2)",
            k.len(),
            alg.hash_len()
        ));
    }
    let hash = match alg {
        Algorithm::HS256 => ring::hmac::HMAC_SHA256,
        Algorithm::HS384 => ring::hmac::HMAC_SHA384,
        _ => ring::hmac::HMAC_SHA512,
    };
    Ok((alg, KeyMaterial::Hmac(ring::hmac::Key::new(hash, &k)), None))
}

fn parse_rsa(
    obj: &Map<String, Value>,
    alg: Option<Algorithm>,
    rules: &KeyRules,
) -> Result<Compiled, String> {
    // Without `alg`, an RSA key verifies RS256 only: the algorithm must come from
    // the key, and RS256 is what RFC 7518 §3.1 recommends and IdPs publish.
    let alg = alg.unwrap_or(Algorithm::RS256);
    if !matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
    ) {
        return Err(format!("`alg` {alg} does not fit `kty` RSA"));
    }
    let n = strip_leading_zeros(bytes_member(obj, "n")?);
    let e = strip_leading_zeros(bytes_member(obj, "e")?);
    let bits = bit_len(&n);
    if bits < rules.min_rsa_bits as usize {
        return Err(format!(
            "RSA modulus is {bits} bits; at least {} required (set min_rsa_bits to allow)",
            rules.min_rsa_bits
        ));
    }
    if bits > MAX_RSA_BITS {
        return Err(format!(
            "RSA modulus is {bits} bits; at most {MAX_RSA_BITS} are accepted"
        ));
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err("RSA modulus is even".to_string());
    }
    // e = 1 makes every signature its own message (Wycheproof `exponentOne`); an
    // even e is not a valid RSA exponent. 2^32 bounds the verification cost.
    if e.len() > 4 || e.last().is_none_or(|b| b & 1 == 0) || e.as_slice() == [1u8] {
        return Err("RSA public exponent must be odd, at least 3 and below 2^32".to_string());
    }
    if roca_fingerprint(&n) {
        return Err(
            "RSA modulus has the ROCA fingerprint (CVE-2017-15361); the key is factorable"
                .to_string(),
        );
    }
    use ring::signature as rs;
    // The checks above are all of ring's too: odd modulus without leading zeros,
    // at most 8192 bits, odd exponent in 3..2^33.
    let params: &'static rs::RsaParameters = match (alg, bits >= RING_MIN_RSA_BITS) {
        (Algorithm::RS256, true) => &rs::RSA_PKCS1_2048_8192_SHA256,
        (Algorithm::RS384, true) => &rs::RSA_PKCS1_2048_8192_SHA384,
        (Algorithm::RS512, true) => &rs::RSA_PKCS1_2048_8192_SHA512,
        (Algorithm::PS256, true) => &rs::RSA_PSS_2048_8192_SHA256,
        (Algorithm::PS384, true) => &rs::RSA_PSS_2048_8192_SHA384,
        (Algorithm::PS512, true) => &rs::RSA_PSS_2048_8192_SHA512,
        (Algorithm::RS256, false) => &rs::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
        (Algorithm::RS512, false) => &rs::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
        _ => {
            return Err(format!(
                "RSA modulus is {bits} bits; {alg} needs at least {RING_MIN_RSA_BITS} (keys under {RING_MIN_RSA_BITS} bits verify RS256 or RS512 only)"
            ))
        }
    };
    let host = hostsig::rsa_key(alg, &n, &e);
    Ok((
        alg,
        KeyMaterial::Rsa {
            key: rs::RsaPublicKeyComponents { n, e },
            params,
        },
        host,
    ))
}

fn parse_ec(obj: &Map<String, Value>, alg: Option<Algorithm>) -> Result<Compiled, String> {
    let crv = str_member(obj, "crv")?.ok_or("missing `crv`")?;
    let (curve_alg, size) = match crv {
        "P-256" => (Algorithm::ES256, 32),
        "P-384" => (Algorithm::ES384, 48),
        "P-521" => (Algorithm::ES512, 66),
        "secp256k1" => (Algorithm::ES256K, 32),
        other => {
            return Err(format!(
                "`crv` \"{}\" is not supported for EC keys (use P-256, P-384, P-521 or secp256k1)",
                printable(other)
            ))
        }
    };
    if let Some(a) = alg {
        if a != curve_alg {
            return Err(format!(
                "`alg` {a} does not fit `crv` {crv} (expected {curve_alg})"
            ));
        }
    }
    let x = bytes_member(obj, "x")?;
    let y = bytes_member(obj, "y")?;
    // RFC 7518 §6.2.1.2/3: x and y are the full field size, leading zeros kept.
    if x.len() != size || y.len() != size {
        return Err(format!(
            "`x` and `y` must each be {size} bytes for {crv} (got {} and {})",
            x.len(),
            y.len()
        ));
    }
    let mut sec1 = Vec::with_capacity(1 + 2 * size);
    sec1.push(0x04);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    // The point must be on the curve (Wycheproof's invalid-curve keys): P-256 and
    // P-384 are checked here and verified with ring over the same SEC1 bytes
    // (`*_FIXED`: the signature is R || S, as in JWS); p521/k256's from_sec1_bytes
    // check their own.
    let host = hostsig::ec_key(curve_alg, &sec1);
    let not_on_curve = || format!("the point (x, y) is not on curve {crv}");
    let bad = |_| not_on_curve();
    let material = match curve_alg {
        Algorithm::ES256 => {
            if !on_nist_curve::<{ crypto_bigint::U256::LIMBS }>(&x, &y, &P256_P, &P256_B) {
                return Err(not_on_curve());
            }
            KeyMaterial::P256(ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                sec1,
            ))
        }
        Algorithm::ES384 => {
            if !on_nist_curve::<{ crypto_bigint::U384::LIMBS }>(&x, &y, &P384_P, &P384_B) {
                return Err(not_on_curve());
            }
            KeyMaterial::P384(ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P384_SHA384_FIXED,
                sec1,
            ))
        }
        Algorithm::ES512 => {
            KeyMaterial::P521(p521::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(bad)?)
        }
        _ => KeyMaterial::K256(k256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(bad)?),
    };
    Ok((curve_alg, material, host))
}

// NIST P-256 and P-384 (SEC 2 §2.4.2, §2.5.1): field prime p and coefficient b of
// y^2 = x^3 - 3x + b.
const P256_P: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
];
const P256_B: [u8; 32] = [
    0x5a, 0xc6, 0x35, 0xd8, 0xaa, 0x3a, 0x93, 0xe7, 0xb3, 0xeb, 0xbd, 0x55, 0x76, 0x98, 0x86, 0xbc,
    0x65, 0x1d, 0x06, 0xb0, 0xcc, 0x53, 0xb0, 0xf6, 0x3b, 0xce, 0x3c, 0x3e, 0x27, 0xd2, 0x60, 0x4b,
];
const P384_P: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
];
const P384_B: [u8; 48] = [
    0xb3, 0x31, 0x2f, 0xa7, 0xe2, 0x3e, 0xe7, 0xe4, 0x98, 0x8e, 0x05, 0x6b, 0xe3, 0xf8, 0x2d, 0x19,
    0x18, 0x1d, 0x9c, 0x6e, 0xfe, 0x81, 0x41, 0x12, 0x03, 0x14, 0x08, 0x8f, 0x50, 0x13, 0x87, 0x5a,
    0xc6, 0x56, 0x39, 0x8d, 0x8a, 0x2e, 0xd1, 0x9d, 0x2a, 0x85, 0xc8, 0xed, 0xd3, 0xec, 0x2a, 0xef,
];

/// True if the affine point (x, y), big-endian, lies on the NIST curve
/// y^2 = x^3 - 3x + b over GF(p), with x, y < p. P-256 and P-384 have prime order
/// (cofactor 1), so every such point is a valid public key, and the identity has
/// no affine form. Load time only, with the fixed-size integers of crypto-bigint
/// (already linked by p521 and k256): no curve crate. Every slice is exactly
/// `L` limbs long (the callers checked the coordinate sizes).
fn on_nist_curve<const L: usize>(x: &[u8], y: &[u8], p: &[u8], b: &[u8]) -> bool {
    use crypto_bigint::Uint;
    let p = Uint::<L>::from_be_slice(p);
    let (x, y, b) = (
        Uint::<L>::from_be_slice(x),
        Uint::<L>::from_be_slice(y),
        Uint::<L>::from_be_slice(b),
    );
    if x >= p || y >= p {
        return false;
    }
    let mul = |u: &Uint<L>, v: &Uint<L>| Uint::const_rem_wide(u.mul_wide(v), &p).0;
    let three_x = x.add_mod(&x, &p).add_mod(&x, &p);
    let rhs = mul(&mul(&x, &x), &x).sub_mod(&three_x, &p).add_mod(&b, &p);
    mul(&y, &y) == rhs
}

fn parse_okp(obj: &Map<String, Value>, alg: Option<Algorithm>) -> Result<Compiled, String> {
    let crv = str_member(obj, "crv")?.ok_or("missing `crv`")?;
    if crv != "Ed25519" {
        return Err(format!(
            "`crv` \"{}\" is not supported for OKP keys (use Ed25519)",
            printable(crv)
        ));
    }
    if let Some(a) = alg {
        if a != Algorithm::EdDSA {
            return Err(format!(
                "`alg` {a} does not fit `crv` Ed25519 (expected EdDSA)"
            ));
        }
    }
    let x = bytes_member(obj, "x")?;
    let pk = ed25519_compact::PublicKey::from_slice(&x)
        .map_err(|_| format!("`x` must be 32 bytes for Ed25519 (got {})", x.len()))?;
    // Small-order keys would accept forged signatures for any message.
    pk.validate()
        .map_err(|_| "`x` is not a valid Ed25519 public key (non-canonical or small order)")?;
    Ok((
        Algorithm::EdDSA,
        KeyMaterial::Ed25519(ring::signature::UnparsedPublicKey::new(
            &ring::signature::ED25519,
            *pk,
        )),
        None,
    ))
}

/// A string member; `Ok(None)` if absent, `Err` if present but not a string.
fn str_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{name}` must be a string")),
    }
}

/// A required base64url member, decoded.
fn bytes_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let s = str_member(obj, name)?.ok_or_else(|| format!("missing `{name}`"))?;
    b64url_decode_lenient(s).ok_or_else(|| format!("`{name}` is not valid base64url"))
}

fn strip_leading_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros);
    v
}

fn bit_len(be: &[u8]) -> usize {
    match be.first() {
        None => 0,
        Some(top) => be.len() * 8 - top.leading_zeros() as usize,
    }
}

/// Text from a key document made safe for a log line or error message.
fn printable(s: &str) -> String {
    s.chars()
        .take(32)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Small primes of the ROCA fingerprint test (Nemec et al., "The Return of
/// Coppersmith's Attack", CCS 2017). Moduli from the affected Infineon library are
/// products of primes `k * M + (65537^a mod M)`, so modulo each of these primes they
/// fall in the subgroup generated by 65537; a random modulus does so for all of them
/// with negligible probability.
const ROCA_PRIMES: [u32; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

/// True if the big-endian modulus has the ROCA fingerprint (CVE-2017-15361).
pub(crate) fn roca_fingerprint(n_be: &[u8]) -> bool {
    ROCA_PRIMES.iter().all(|&p| {
        let r = n_be
            .iter()
            .fold(0u32, |acc, &b| (acc * 256 + u32::from(b)) % p);
        in_subgroup_of_65537(r, p)
    })
}

/// Is `r` in the multiplicative subgroup generated by 65537 modulo the prime `p`?
fn in_subgroup_of_65537(r: u32, p: u32) -> bool {
    let g = 65537 % p;
    let mut x = 1u32;
    // The subgroup has at most p - 1 elements.
    for _ in 0..p {
        if x == r {
            return true;
        }
        x = (x * g) % p;
        if x == 1 {
            break;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::testkeys;
    use serde_json::json;

    fn err_of(key: Value) -> String {
        match parse_jwk(&key, &KeyRules::default()) {
            Ok(k) => format!("<ok {k:?}>"),
            Err(e) => e,
        }
    }

    #[test]
    fn alg_is_inferred_from_the_key_type() {
        let cases = [
            (testkeys::hs256_jwk(None), Algorithm::HS256),
            (testkeys::rsa_jwk(None), Algorithm::RS256),
            (testkeys::ec_jwk(Algorithm::ES256, None), Algorithm::ES256),
            (testkeys::ec_jwk(Algorithm::ES384, None), Algorithm::ES384),
            (testkeys::ec_jwk(Algorithm::ES512, None), Algorithm::ES512),
            (testkeys::ec_jwk(Algorithm::ES256K, None), Algorithm::ES256K),
            (testkeys::ed25519_jwk(None), Algorithm::EdDSA),
        ];
        for (jwk, want) in cases {
            let k = parse_jwk(&jwk, &KeyRules::default());
            assert_eq!(k.map(|k| k.alg()).ok(), Some(want), "{jwk}");
        }
        let mut ps = testkeys::rsa_jwk(Some("k"));
        ps["alg"] = json!("PS384");
        assert_eq!(
            parse_jwk(&ps, &KeyRules::default()).map(|k| k.alg()).ok(),
            Some(Algorithm::PS384)
        );
    }

    #[test]
    fn unusable_keys_are_refused_with_a_reason() {
        let mut wrong_curve = testkeys::ec_jwk(Algorithm::ES256, None);
        wrong_curve["crv"] = json!("P-384");
        let mut alg_curve = testkeys::ec_jwk(Algorithm::ES256, None);
        alg_curve["alg"] = json!("ES384");
        let mut off_curve = testkeys::ec_jwk(Algorithm::ES256, None);
        off_curve["y"] = off_curve["x"].clone();
        let mut enc = testkeys::rsa_jwk(None);
        enc["use"] = json!("enc");
        let mut ops = testkeys::rsa_jwk(None);
        ops["key_ops"] = json!(["encrypt"]);
        let mut private = testkeys::ec_jwk(Algorithm::ES256, None);
        private["d"] = json!("AAAA");
        let mut even_e = testkeys::rsa_jwk(None);
        even_e["e"] = json!("AAE"); // 1
        let mut rsa_as_ec = testkeys::rsa_jwk(None);
        rsa_as_ec["alg"] = json!("ES256");
        let mut hs_on_rsa = testkeys::rsa_jwk(None);
        hs_on_rsa["alg"] = json!("HS256");
        let mut bad_b64 = testkeys::rsa_jwk(None);
        bad_b64["n"] = json!("not base64!");
        let mut no_n = testkeys::rsa_jwk(None);
        no_n.as_object_mut().map(|o| o.remove("n"));
        let cases: Vec<(Value, &str)> = vec![
            (wrong_curve, "must each be 48 bytes for P-384"),
            (alg_curve, "`alg` ES384 does not fit `crv` P-256"),
            (off_curve, "not on curve P-256"),
            (enc, "`use` is \"enc\""),
            (ops, "does not include \"verify\""),
            (private, "private key member `d`"),
            (even_e, "exponent must be odd, at least 3"),
            (rsa_as_ec, "`alg` ES256 does not fit `kty` RSA"),
            (hs_on_rsa, "`alg` HS256 does not fit `kty` RSA"),
            (bad_b64, "`n` is not valid base64url"),
            (no_n, "missing `n`"),
            (
                json!({"kty": "oct", "k": "c2hvcnQ"}),
                "HMAC key is 5 bytes; HS256 requires at least 32",
            ),
            (
                json!({"kty": "oct", "alg": "A256GCM", "k": testkeys::HS_SECRET_B64}),
                "\"A256GCM\" is not a supported",
            ),
            (
                json!({"kty": "oct", "alg": "none", "k": testkeys::HS_SECRET_B64}),
                "\"none\" is not a supported",
            ),
            (
                json!({"kty": "OKP", "crv": "X25519", "x": "AAAA"}),
                "`crv` \"X25519\" is not supported",
            ),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
                "small order",
            ),
            (
                json!({"kty": "EC", "crv": "P-224", "x": "AA", "y": "AA"}),
                "`crv` \"P-224\" is not supported",
            ),
            (json!({"kty": "foo"}), "`kty` \"foo\" is not supported"),
            (json!({"n": "AA"}), "missing `kty`"),
            (json!({"kty": "RSA", "kid": 7}), "`kid` must be a string"),
            (json!("RSA"), "must be a JSON object"),
        ];
        for (jwk, want) in cases {
            let e = err_of(jwk.clone());
            assert!(e.contains(want), "{jwk}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn nist_points_must_be_on_the_curve_and_in_the_field() {
        for (alg, p) in [
            (Algorithm::ES256, &P256_P[..]),
            (Algorithm::ES384, &P384_P[..]),
        ] {
            let good = testkeys::ec_jwk(alg, None);
            assert!(parse_jwk(&good, &KeyRules::default()).is_ok(), "{alg}");
            let y = b64url_decode_lenient(good["y"].as_str().unwrap_or_default());
            let mut y = y.unwrap_or_default();
            if let Some(last) = y.last_mut() {
                *last ^= 1;
            }
            let mut off = good.clone();
            off["y"] = json!(crate::jwt::b64url_encode(&y));
            let mut outside = good.clone();
            outside["x"] = json!(crate::jwt::b64url_encode(p));
            for bad in [off, outside] {
                assert!(err_of(bad).contains("is not on curve"), "{alg}");
            }
        }
    }

    #[test]
    fn short_rsa_keys_need_min_rsa_bits() {
        let jwk = testkeys::rsa1024_jwk();
        let e = err_of(jwk.clone());
        assert_eq!(
            e,
            "RSA modulus is 1024 bits; at least 2048 required (set min_rsa_bits to allow)"
        );
        let lowered = KeyRules {
            min_rsa_bits: 1024,
            allow_symmetric: true,
        };
        assert!(parse_jwk(&jwk, &lowered).is_ok());
    }

    #[test]
    fn remote_sets_refuse_symmetric_keys() {
        let rules = KeyRules {
            min_rsa_bits: 2048,
            allow_symmetric: false,
        };
        let e = parse_jwk(&testkeys::hs256_jwk(None), &rules).err();
        assert!(e.is_some_and(|e| e.contains("not accepted from a remote key set")));
    }

    #[test]
    fn ambiguous_sets_are_reported_per_key() {
        let doc = json!({"keys": [
            testkeys::ec_jwk(Algorithm::ES256, Some("a")),
            testkeys::ed25519_jwk(Some("a")),
            testkeys::rsa_jwk(Some("b")),
            testkeys::hs256_jwk(Some("c")),
            {"kty": "EC"},
        ]});
        let parsed = parse_jwks(&doc, &KeyRules::default()).map_err(|e| e.to_string());
        let parsed = parsed.unwrap_or_default();
        assert_eq!(parsed.keys.len(), 1);
        assert_eq!(parsed.keys.keys()[0].kid(), Some("b"));
        let idx: Vec<usize> = parsed.rejected.iter().map(|r| r.index).collect();
        assert_eq!(idx, vec![0, 1, 3, 4]);
        assert!(parsed.rejected[0].message.contains("same `kid`"));
        assert!(parsed.rejected[2].message.contains("must not be mixed"));
        let strict = KeySet::from_jwks_strict(&doc, &KeyRules::default()).err();
        assert_eq!(
            strict.as_deref(),
            Some("keys[0]: another key has the same `kid`; kids must be unique")
        );
    }

    #[test]
    fn document_shape_errors() {
        let r = KeyRules::default();
        assert!(parse_jwks(&json!([]), &r).is_err_and(|e| e.contains("must be a JWKS object")));
        assert!(parse_jwks(&json!({}), &r).is_err_and(|e| e.contains("keys: missing")));
        assert!(parse_jwks(&json!({"keys": {}}), &r).is_err_and(|e| e.contains("must be an array")));
        let many: Vec<Value> = (0..65).map(|_| json!({})).collect();
        assert!(parse_jwks(&json!({ "keys": many }), &r).is_err_and(|e| e.contains("at most 64")));
        assert_eq!(
            KeySet::from_jwks_strict(&json!({"keys": []}), &r)
                .err()
                .as_deref(),
            Some("keys: the key set has no keys")
        );
    }

    #[test]
    fn roca_fingerprint_detects_only_structured_moduli() {
        // Build n = p * q with p, q of the vulnerable library's form
        // k * M + (65537^a mod M), M the product of the test primes.
        use rsa::BigUint;
        let m = ROCA_PRIMES
            .iter()
            .fold(BigUint::from(1u32), |acc, p| acc * BigUint::from(*p));
        let g = BigUint::from(65537u32);
        let p = BigUint::from(1_000_003u32) * &m + g.modpow(&BigUint::from(1234u32), &m);
        let q = BigUint::from(999_983u32) * &m + g.modpow(&BigUint::from(98_765u32), &m);
        assert!(roca_fingerprint(&(p * q).to_bytes_be()));
        // Random primes (the test key) do not have it.
        assert!(!roca_fingerprint(&testkeys::rsa_modulus()));
    }

    #[test]
    fn keys_envoy_can_verify_carry_their_part_of_its_arguments() {
        for alg in Algorithm::ALL {
            let key = parse_jwk(&testkeys::jwk_for(alg), &KeyRules::default());
            let host = key.map(|k| k.host.is_some());
            assert_eq!(
                host,
                Ok(hostsig::Family::of(alg).is_some()),
                "{alg}: only RS*, ES256, ES384 and ES512"
            );
        }
        // Legacy-size RSA keys too: Envoy verifies them as well.
        let lowered = KeyRules {
            min_rsa_bits: 1024,
            allow_symmetric: false,
        };
        let key = parse_jwk(&testkeys::rsa1024_jwk(), &lowered);
        assert!(key.is_ok_and(|k| k.host.is_some()));
    }

    #[test]
    fn debug_never_prints_key_material() {
        let k = parse_jwk(&testkeys::hs256_jwk(Some("kid1")), &KeyRules::default());
        let text = format!("{k:?}");
        assert!(text.contains("kid1") && !text.contains("Hmac"), "{text}");
    }
}
