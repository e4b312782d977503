//! Signatures verified by Envoy: the `verify_signature` foreign function (Envoy 1.30
//! and later), which checks a signature with BoringSSL inside Envoy. In V8 that is
//! about six times cheaper for ES256 and five times for RS256 than ring compiled to
//! Wasm (README, "Performance").
//!
//! The contract, as Envoy implements it:
//! - Arguments: the protobuf `VerifySignatureArguments`: field 1 `hash_function`
//!   (`sha256`, `sha384`, `sha512`), 2 `public_key` (DER SubjectPublicKeyInfo),
//!   3 `signature`, 4 `text` (the JWS signing input `header.payload`). Written here
//!   by hand (length-delimited fields only); fields 1 and 2 are written once per
//!   key, when the key is loaded ([`rsa_key`], [`ec_key`]).
//! - Answer: a `VerifySignatureResult`. Only the exact bytes `08 01` (`result:
//!   true`, nothing else) mean valid. A bad signature still comes back with status
//!   Ok and an error text; any other status, answer or extra byte is invalid: the
//!   filter fails closed.
//! - The host infers the algorithm from the key. The filter has already bound the
//!   token's `alg` to the key's type, curve and hash ([`crate::jwt::verify`]), so the
//!   host only makes the last, cryptographic step.
//! - JWS ECDSA signatures are `r || s` (RFC 7518 §3.4); BoringSSL reads DER
//!   (`SEQUENCE { INTEGER r, INTEGER s }`, RFC 3279 §2.2.3), see [`ecdsa_der`]. Their
//!   length is checked before, as the module checks it.
//! - RSA on the host is PKCS#1 v1.5 only: RS256/384/512 go there; PS*, EdDSA, HMAC
//!   and ES256K always stay in the module.
//!
//! Whether the host can be used is checked once per configuration ([`probe`]): per
//! family, a built-in valid signature must come back exactly valid, and the same
//! signature over other text must not (a host that says yes to everything fails).
//! [`choose`] turns that and `signature_backend` into the [`Verifier`] of the
//! worker.

use crate::config::{ConfigError, SignatureBackend};
use crate::jwt::jwks::Algorithm;
use std::fmt;

/// Which code checked a signature: `apiguard.provider.<name>.signature.host` or
/// `.signature.module`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Envoy's `verify_signature`.
    Host,
    /// ring or the RustCrypto curves, inside the module.
    Module,
}

impl Backend {
    /// The provider counter for a signature check by this backend.
    pub fn counter(self) -> &'static str {
        match self {
            Backend::Host => "signature.host",
            Backend::Module => "signature.module",
        }
    }
}

/// The key families Envoy can verify: a key type, a curve for ECDSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// RSA keys of RS256, RS384 and RS512 (PKCS#1 v1.5).
    Rsa,
    /// P-256 keys (ES256).
    P256,
    /// P-384 keys (ES384).
    P384,
    /// P-521 keys (ES512).
    P521,
}

impl Family {
    /// The family of an algorithm, if the host can verify it.
    pub(crate) fn of(alg: Algorithm) -> Option<Family> {
        match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => Some(Family::Rsa),
            Algorithm::ES256 => Some(Family::P256),
            Algorithm::ES384 => Some(Family::P384),
            Algorithm::ES512 => Some(Family::P521),
            _ => None,
        }
    }
}

/// A set of [`Family`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Families(u8);

impl Families {
    /// No family: everything in the module.
    pub const NONE: Families = Families(0);
    /// Every family.
    pub const ALL: Families = Families(15);

    /// True if `family` is in the set.
    pub fn contains(self, family: Family) -> bool {
        self.0 & (1 << family as u8) != 0
    }

    fn insert(&mut self, family: Family) {
        self.0 |= 1 << family as u8;
    }
}

/// Envoy's `verify_signature` behind a seam: `host::EnvoySignatures` in the filter,
/// [`NativeVerifySignature`](crate::jwt::standin::NativeVerifySignature) in tests.
pub trait SignatureHost {
    /// Calls the function with serialized arguments: the serialized answer, or the
    /// proxy-wasm status the host returned instead of Ok ([`STATUS_NOT_FOUND`] when
    /// Envoy has no such function).
    fn verify_signature(&self, arguments: &[u8]) -> Result<Vec<u8>, u32>;
}

/// The proxy-wasm status of a foreign function the host does not have.
pub const STATUS_NOT_FOUND: u32 = 1;
/// The proxy-wasm status of arguments the function cannot use.
pub const STATUS_BAD_ARGUMENT: u32 = 2;

/// Which backend verifies which algorithms in a worker: decided once per
/// configuration, then copied into every signature check.
#[derive(Clone, Copy, Default)]
pub struct Verifier {
    host: Option<&'static dyn SignatureHost>,
    families: Families,
}

impl Verifier {
    /// Everything in the module.
    pub fn module() -> Verifier {
        Verifier::default()
    }

    /// `families` on `host`, the rest in the module.
    pub fn host(host: &'static dyn SignatureHost, families: Families) -> Verifier {
        Verifier {
            host: Some(host),
            families,
        }
    }

    /// The host, if it verifies `alg`.
    pub(crate) fn host_for(&self, alg: Algorithm) -> Option<&'static dyn SignatureHost> {
        let family = Family::of(alg)?;
        self.host.filter(|_| self.families.contains(family))
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("host", &self.host.is_some())
            .field("families", &self.families)
            .finish()
    }
}

// DER (X.690), only what a SubjectPublicKeyInfo and an ECDSA signature need.

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;

/// `AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }` (RFC 3279 §2.3.1).
const RSA_ALGORITHM: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// The SubjectPublicKeyInfo of a P-256 key up to its uncompressed point:
/// `SEQUENCE { SEQUENCE { id-ecPublicKey (1.2.840.10045.2.1), prime256v1
/// (1.2.840.10045.3.1.7) }, BIT STRING (no unused bits) ...` (RFC 5480 §2). Every
/// length in it is fixed by the curve.
const P256_SPKI: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// As [`P256_SPKI`], for P-384 (secp384r1, 1.3.132.0.34).
const P384_SPKI: [u8; 23] = [
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];
/// As [`P256_SPKI`], for P-521 (secp521r1, 1.3.132.0.35).
const P521_SPKI: [u8; 25] = [
    0x30, 0x81, 0x9b, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05,
    0x2b, 0x81, 0x04, 0x00, 0x23, 0x03, 0x81, 0x86, 0x00,
];

/// A DER length: short form under 128, else the minimal long form (X.690 §10.1).
fn push_der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(8);
    out.push(0x80 | digits as u8);
    for i in (0..digits).rev() {
        out.push((len >> (8 * i)) as u8);
    }
}

fn push_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    push_der_len(out, content.len());
    out.extend_from_slice(content);
}

/// An unsigned big-endian number as a DER INTEGER: leading zeros dropped (DER is
/// minimal), a 0x00 put in front when the top bit is set (else it reads as
/// negative), and zero as `02 01 00`.
fn push_uint(out: &mut Vec<u8>, be: &[u8]) {
    let zeros = be.iter().take_while(|b| **b == 0).count();
    let digits = be.get(zeros..).unwrap_or_default();
    let pad = digits.first().is_none_or(|b| b & 0x80 != 0);
    out.push(INTEGER);
    push_der_len(out, digits.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
}

/// The SubjectPublicKeyInfo of an RSA key (RFC 5280 §4.1, RFC 3279 §2.3.1):
/// `RSAPublicKey { n, e }` (RFC 8017 §A.1.1) in a BIT STRING under rsaEncryption.
/// `n` and `e` are big-endian.
pub(crate) fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut ints = Vec::with_capacity(n.len() + e.len() + 10);
    push_uint(&mut ints, n);
    push_uint(&mut ints, e);
    let mut bits = vec![0]; // no unused bits
    push_tlv(&mut bits, SEQUENCE, &ints);
    let mut body = RSA_ALGORITHM.to_vec();
    push_tlv(&mut body, BIT_STRING, &bits);
    let mut out = Vec::with_capacity(body.len() + 4);
    push_tlv(&mut out, SEQUENCE, &body);
    out
}

/// The SubjectPublicKeyInfo of an EC key of `family` from its uncompressed SEC1
/// point (`04 || x || y`, checked by the caller): `None` for RSA or a point of
/// another size.
pub(crate) fn ec_spki(family: Family, point: &[u8]) -> Option<Vec<u8>> {
    let (prefix, size): (&[u8], usize) = match family {
        Family::Rsa => return None,
        Family::P256 => (&P256_SPKI, 65),
        Family::P384 => (&P384_SPKI, 97),
        Family::P521 => (&P521_SPKI, 133),
    };
    if point.len() != size {
        return None;
    }
    let mut out = prefix.to_vec();
    out.extend_from_slice(point);
    Some(out)
}

/// A JWS ECDSA signature `r || s` as DER `SEQUENCE { INTEGER r, INTEGER s }`.
/// `None` for an odd length, or when r or s is zero (so also for no bytes at all):
/// never a valid signature (SEC 1 §4.1.4 wants 1 <= r, s < n), so the host is not
/// asked.
pub fn ecdsa_der(rs: &[u8]) -> Option<Vec<u8>> {
    if rs.len() % 2 != 0 {
        return None;
    }
    let (r, s) = rs.split_at(rs.len() / 2);
    if r.iter().all(|b| *b == 0) || s.iter().all(|b| *b == 0) {
        return None;
    }
    let mut ints = Vec::with_capacity(rs.len() + 6);
    push_uint(&mut ints, r);
    push_uint(&mut ints, s);
    let mut out = Vec::with_capacity(ints.len() + 3);
    push_tlv(&mut out, SEQUENCE, &ints);
    Some(out)
}

// Protobuf: length-delimited fields only (wire type 2), lengths as varints.

fn push_varint(out: &mut Vec<u8>, mut value: usize) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn push_field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
    out.push(number << 3 | 2);
    push_varint(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// The `hash_function` of an algorithm the host verifies.
fn hash_function(alg: Algorithm) -> Option<&'static str> {
    match alg {
        Algorithm::RS256 | Algorithm::ES256 => Some("sha256"),
        Algorithm::RS384 | Algorithm::ES384 => Some("sha384"),
        Algorithm::RS512 | Algorithm::ES512 => Some("sha512"),
        _ => None,
    }
}

/// Fields 1 (`hash_function`) and 2 (`public_key`) of the arguments.
fn key_arguments(alg: Algorithm, spki: &[u8]) -> Option<Box<[u8]>> {
    let hash = hash_function(alg)?;
    let mut out = Vec::with_capacity(hash.len() + spki.len() + 6);
    push_field(&mut out, 1, hash.as_bytes());
    push_field(&mut out, 2, spki);
    Some(out.into_boxed_slice())
}

/// The key part of the host's arguments for an RSA key of `alg`; `None` for PS*.
pub(crate) fn rsa_key(alg: Algorithm, n: &[u8], e: &[u8]) -> Option<Box<[u8]>> {
    match Family::of(alg)? {
        Family::Rsa => key_arguments(alg, &rsa_spki(n, e)),
        _ => None,
    }
}

/// The key part of the host's arguments for an EC key of `alg` (its uncompressed
/// point); `None` for ES256K.
pub(crate) fn ec_key(alg: Algorithm, point: &[u8]) -> Option<Box<[u8]>> {
    key_arguments(alg, &ec_spki(Family::of(alg)?, point)?)
}

/// True only for the exact answer `08 01`.
pub(crate) fn is_valid(answer: &[u8]) -> bool {
    answer == [0x08, 0x01]
}

/// The host's verdict on `signature` as the token carries it (`r || s` for ECDSA,
/// its length checked by the caller) over `text`, with the key whose part of the
/// arguments `key` holds: `Ok(valid)`, or the status of a failed call. An ECDSA
/// signature with r or s zero is `Ok(false)` without asking.
pub(crate) fn verify(
    host: &dyn SignatureHost,
    key: &[u8],
    family: Family,
    signature: &[u8],
    text: &[u8],
) -> Result<bool, u32> {
    let der;
    let signature = if family == Family::Rsa {
        signature
    } else {
        match ecdsa_der(signature) {
            Some(d) => {
                der = d;
                &der
            }
            None => return Ok(false),
        }
    };
    let mut args = Vec::with_capacity(key.len() + signature.len() + text.len() + 12);
    args.extend_from_slice(key);
    push_field(&mut args, 3, signature);
    push_field(&mut args, 4, text);
    host.verify_signature(&args).map(|answer| is_valid(&answer))
}

/// What the configure-time check found: the families that passed, and why the
/// others failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    passed: Families,
    /// `ES512: <reason>; ...`.
    failures: String,
}

/// The text the probe signatures sign; the same signatures over
/// [`PROBE_OTHER_TEXT`] must be refused.
const PROBE_TEXT: &[u8] = b"api-guard probe";
const PROBE_OTHER_TEXT: &[u8] = b"api-guard probf";

/// Checks, per family, that the host verifies a built-in signature and refuses it
/// over other text. Keys and signatures go through the same encoding as a token's,
/// so a host that cannot read it fails here, not per request.
pub(crate) fn probe(host: &dyn SignatureHost) -> Probe {
    use vectors::*;
    let table: [(Algorithm, &[u8], &[u8]); 4] = [
        (Algorithm::RS256, &RSA_N, &RSA_SIG),
        (Algorithm::ES256, &P256_POINT, &P256_SIG),
        (Algorithm::ES384, &P384_POINT, &P384_SIG),
        (Algorithm::ES512, &P521_POINT, &P521_SIG),
    ];
    let mut probe = Probe::default();
    for (alg, key, signature) in table {
        let Some(family) = Family::of(alg) else {
            continue;
        };
        let key = match family {
            Family::Rsa => rsa_key(alg, key, &[1, 0, 1]),
            _ => ec_key(alg, key),
        }
        .unwrap_or_default();
        let check = |text| verify(host, &key, family, signature, text);
        let failure = match (check(PROBE_TEXT), check(PROBE_OTHER_TEXT)) {
            (Ok(true), Ok(false) | Err(_)) => {
                probe.passed.insert(family);
                continue;
            }
            (Err(STATUS_NOT_FOUND), _) => "no such function".to_string(),
            (Err(status), _) => format!("status {status}"),
            (Ok(false), _) => "a valid signature refused".to_string(),
            (Ok(true), Ok(true)) => "an invalid signature accepted".to_string(),
        };
        if !probe.failures.is_empty() {
            probe.failures.push_str("; ");
        }
        probe.failures.push_str(alg.name());
        probe.failures.push_str(": ");
        probe.failures.push_str(&failure);
    }
    probe
}

/// The backend decision of one configuration: which families go to the host, and
/// the line the root context logs about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    /// Families verified by the host.
    pub families: Families,
    /// What was chosen and why, for the log.
    pub summary: String,
}

/// Decides the backends for `setting`. `probe` runs only when the host may be
/// used. `host` refuses the configuration unless every family passed.
pub(crate) fn choose(
    setting: SignatureBackend,
    probe: impl FnOnce() -> Probe,
) -> Result<Choice, ConfigError> {
    if setting == SignatureBackend::Module {
        return Ok(Choice {
            families: Families::NONE,
            summary: "signatures: all verified in the module (signature_backend: module)"
                .to_string(),
        });
    }
    let Probe { passed, failures } = probe();
    if setting == SignatureBackend::Host && passed != Families::ALL {
        return Err(ConfigError::new(
            "signature_backend",
            format!("`host` needs Envoy's verify_signature (Envoy 1.30 or later), which failed its check: {failures}"),
        ));
    }
    let summary = match passed {
        Families::NONE => "signatures: all verified in the module; Envoy's verify_signature failed its check: ",
        Families::ALL => "signatures: RS256/384/512 and ES256/384/512 verified by Envoy (verify_signature), the other algorithms in the module",
        _ => "signatures: RS256/384/512 and ES256/384/512 verified by Envoy (verify_signature) except where it failed its check, those and the other algorithms in the module: ",
    };
    Ok(Choice {
        families: passed,
        summary: format!("{summary}{failures}"),
    })
}

/// The probe's keys and signatures over [`PROBE_TEXT`]: RSA-2048 (e = 65537,
/// PKCS#1 v1.5, SHA-256), and ECDSA on P-256/SHA-256, P-384/SHA-384 and
/// P-521/SHA-512 as JWS `r || s` (the P-384 r has its top bit set and the P-521 r
/// a leading zero byte, so both DER cases are on the way). Generated for this
/// purpose; no private key is kept.
mod vectors {
    pub const RSA_N: [u8; 256] = [
        0xa6, 0x7a, 0xda, 0x0c, 0x11, 0xb9, 0x20, 0x2a, 0x15, 0xe8, 0x62, 0xe8, 0xbe, 0xa8, 0x35,
        0x5c, 0x8a, 0x68, 0x22, 0xdd, 0x42, 0xed, 0xe8, 0x11, 0xa6, 0x72, 0xbe, 0x64, 0x50, 0x57,
        0xbd, 0x3f, 0x0e, 0x24, 0xcc, 0x21, 0x97, 0x48, 0x5a, 0xc7, 0xb2, 0xe5, 0x55, 0x85, 0x28,
        0xba, 0x03, 0xfa, 0xbb, 0xcf, 0x41, 0x72, 0x47, 0xc9, 0x55, 0x0d, 0x85, 0x76, 0x0b, 0xa2,
        0xd5, 0x5a, 0x86, 0xb9, 0xc3, 0x67, 0xb8, 0xe0, 0x00, 0x76, 0x7e, 0x2f, 0x2c, 0x0f, 0x81,
        0x7a, 0x6f, 0x5c, 0xdd, 0x00, 0x84, 0x6d, 0x86, 0x55, 0x93, 0x64, 0x4f, 0xfe, 0x91, 0xd5,
        0xcb, 0x7f, 0x15, 0x00, 0x27, 0x28, 0x48, 0xa3, 0x5b, 0xcf, 0xb3, 0x9b, 0x93, 0x8e, 0xd5,
        0xe7, 0xd3, 0xca, 0x79, 0x4a, 0x5c, 0x04, 0xbc, 0x0e, 0x4c, 0x39, 0x4e, 0xf9, 0x43, 0xf3,
        0x6e, 0xe6, 0x1b, 0x95, 0xd9, 0x1f, 0xa0, 0x58, 0x85, 0x8a, 0x4d, 0x1d, 0x77, 0xdb, 0x2d,
        0xa2, 0x19, 0xf6, 0xfc, 0xde, 0x12, 0x6e, 0x53, 0xac, 0xcc, 0x85, 0xa1, 0xb9, 0x36, 0x2e,
        0x5e, 0xbb, 0x1b, 0x02, 0x92, 0xb3, 0xd1, 0x51, 0x29, 0xb8, 0x37, 0xbb, 0xa8, 0x10, 0x1e,
        0xef, 0x1a, 0x33, 0x24, 0x1c, 0xff, 0xa3, 0x3e, 0x71, 0xea, 0xb5, 0x89, 0x12, 0x68, 0x5e,
        0xc5, 0xb8, 0x8c, 0x29, 0xd3, 0x3f, 0x6c, 0x07, 0xae, 0x67, 0x20, 0x32, 0xd7, 0x2a, 0x15,
        0x3e, 0x43, 0xe8, 0x52, 0x5e, 0xc3, 0x92, 0xbe, 0x96, 0x94, 0xe6, 0x84, 0x3e, 0xf7, 0x9c,
        0xab, 0x8b, 0xb1, 0x3f, 0x2b, 0x61, 0x99, 0xe8, 0x10, 0x5c, 0x08, 0x71, 0xbc, 0xf6, 0xd9,
        0x0c, 0xb6, 0x54, 0x7a, 0x4b, 0x04, 0x97, 0xee, 0x33, 0x60, 0xb7, 0x41, 0x3e, 0x77, 0xb3,
        0x3f, 0xee, 0x43, 0xf7, 0x55, 0x90, 0xdf, 0xe4, 0x2c, 0x31, 0xa5, 0x52, 0xe0, 0x52, 0xee,
        0x49,
    ];
    pub const RSA_SIG: [u8; 256] = [
        0x1c, 0xd1, 0x89, 0x7f, 0xf0, 0x20, 0xf9, 0xf9, 0x8a, 0xa2, 0x0c, 0x2f, 0x17, 0x5f, 0xb3,
        0x74, 0xb8, 0x4a, 0x21, 0x68, 0x24, 0x06, 0x8f, 0xa0, 0x17, 0x15, 0xfc, 0xa9, 0x8e, 0xa4,
        0xaf, 0xd5, 0x22, 0x27, 0xd8, 0x7f, 0x0b, 0x1c, 0x0a, 0x28, 0xc0, 0xe0, 0xf4, 0xd0, 0xb5,
        0xb7, 0x20, 0x9e, 0x92, 0xfd, 0x4e, 0x42, 0xbe, 0x73, 0xb3, 0x82, 0x00, 0xfd, 0x0d, 0xfe,
        0x1b, 0x79, 0x7f, 0xa8, 0x50, 0xd2, 0x27, 0x73, 0x3e, 0x6e, 0xd4, 0xa6, 0x3b, 0x1b, 0x1c,
        0xd4, 0x1e, 0x1c, 0x1e, 0x3e, 0xc5, 0x2e, 0xf1, 0x73, 0x9f, 0x79, 0x91, 0x8e, 0x76, 0x46,
        0xcd, 0xf2, 0x49, 0xd3, 0xe9, 0xbe, 0x31, 0xae, 0x17, 0x8a, 0x30, 0xca, 0x21, 0xd3, 0xc0,
        0xcf, 0x78, 0x93, 0xdb, 0xc0, 0x21, 0x61, 0x25, 0x7c, 0x1b, 0xfe, 0xed, 0x03, 0x0e, 0x4b,
        0x9c, 0x59, 0x53, 0xd8, 0xc6, 0xc9, 0x89, 0xa8, 0xe7, 0x4c, 0x3e, 0x75, 0xe5, 0x1b, 0x85,
        0xb7, 0x6f, 0x29, 0x52, 0x60, 0x8e, 0x4a, 0x76, 0xd1, 0xaa, 0x41, 0xbb, 0xed, 0x8a, 0x13,
        0xf1, 0xce, 0x47, 0xa6, 0x46, 0x48, 0xf0, 0x40, 0xd9, 0x92, 0xa7, 0xc6, 0xc9, 0x98, 0x22,
        0x3f, 0xd8, 0x7c, 0x37, 0x8f, 0x8e, 0x86, 0xcf, 0x88, 0xd9, 0x78, 0x48, 0xf6, 0x19, 0x24,
        0x01, 0x4b, 0x97, 0x06, 0x6c, 0xcb, 0x66, 0x6f, 0xff, 0x49, 0x53, 0x03, 0x36, 0x79, 0x15,
        0xd4, 0x4e, 0x36, 0x77, 0x2a, 0x52, 0xd0, 0x07, 0x52, 0x3a, 0x23, 0x92, 0x32, 0xb5, 0x84,
        0xf0, 0x4b, 0xd5, 0x84, 0xac, 0x11, 0x57, 0x3f, 0xd8, 0xa2, 0xbe, 0xb2, 0x5a, 0x9f, 0xf1,
        0x30, 0x81, 0x44, 0x67, 0x87, 0x6e, 0xcb, 0x7b, 0xd4, 0x96, 0xd8, 0x12, 0xd0, 0x89, 0x21,
        0x58, 0xa7, 0x8b, 0x60, 0xc2, 0x56, 0x96, 0xfa, 0x01, 0x3c, 0xe8, 0xc7, 0xc5, 0x15, 0xdb,
        0x0c,
    ];
    pub const P256_POINT: [u8; 65] = [
        0x04, 0x19, 0xe4, 0xfb, 0xcf, 0x15, 0x73, 0xc6, 0x06, 0xbf, 0xa8, 0x3b, 0x99, 0xdb, 0x2b,
        0x94, 0x35, 0x78, 0xa3, 0x67, 0x95, 0x52, 0x35, 0x5c, 0x6e, 0x1f, 0x99, 0x82, 0x67, 0x74,
        0x9b, 0xdc, 0x6f, 0x0c, 0x81, 0x02, 0x8d, 0xa6, 0x85, 0x06, 0xce, 0x63, 0xe1, 0x57, 0x10,
        0x50, 0x62, 0x91, 0x53, 0x7b, 0xd0, 0x90, 0x2e, 0xcc, 0x7a, 0x4a, 0xda, 0x8e, 0x12, 0x6d,
        0xe5, 0x7c, 0x1b, 0xb5, 0x57,
    ];
    pub const P256_SIG: [u8; 64] = [
        0x99, 0xb7, 0x48, 0xbc, 0xd1, 0x17, 0xd0, 0x7e, 0xac, 0x1d, 0x32, 0x4d, 0xeb, 0x60, 0xc2,
        0x2c, 0xae, 0x56, 0xc6, 0xb8, 0x97, 0x47, 0x88, 0x8a, 0x52, 0xdd, 0x66, 0x48, 0xe0, 0x00,
        0xc0, 0x39, 0xf1, 0x56, 0x8e, 0xa6, 0x99, 0x3a, 0x48, 0x33, 0x71, 0xdc, 0x03, 0x9d, 0x8c,
        0xf7, 0x3c, 0x36, 0x6d, 0x93, 0x90, 0x37, 0xa4, 0x62, 0x5c, 0x6d, 0xcc, 0xfc, 0xb6, 0xd2,
        0x4e, 0xbb, 0x8c, 0x76,
    ];
    pub const P384_POINT: [u8; 97] = [
        0x04, 0x05, 0x23, 0xc3, 0xcb, 0xc5, 0x89, 0xa7, 0x28, 0xe7, 0x26, 0xba, 0x35, 0x36, 0xfd,
        0x6a, 0x82, 0xa8, 0x66, 0x1e, 0xf5, 0x42, 0x78, 0x2d, 0x14, 0xe9, 0x26, 0xf0, 0x6d, 0x15,
        0x9d, 0xcf, 0xab, 0xf9, 0x75, 0x56, 0x23, 0xf8, 0xbd, 0x8b, 0xe2, 0x00, 0x0a, 0x60, 0x8a,
        0x39, 0xe5, 0xff, 0x29, 0x0e, 0x93, 0xb5, 0x20, 0x37, 0x64, 0xcb, 0xa9, 0xe8, 0xe4, 0x5a,
        0xd8, 0x8e, 0x16, 0x4e, 0x69, 0xcc, 0x04, 0x09, 0x90, 0x88, 0x88, 0x2d, 0x4b, 0x6e, 0xc6,
        0x7a, 0x88, 0x0c, 0x27, 0x36, 0xf0, 0x6b, 0xc6, 0x5e, 0xa9, 0xa0, 0xdc, 0x38, 0x04, 0xb0,
        0xad, 0xc2, 0x6d, 0x4d, 0xb8, 0x7b, 0x91,
    ];
    pub const P384_SIG: [u8; 96] = [
        0xd7, 0x93, 0x79, 0xc3, 0x57, 0xb6, 0xa1, 0x15, 0xd4, 0xeb, 0x7f, 0xb5, 0x5b, 0x81, 0x60,
        0xcc, 0x9a, 0x54, 0xdd, 0xd2, 0x3d, 0x54, 0xff, 0x8b, 0x87, 0x1b, 0x65, 0x9a, 0xb5, 0x4f,
        0x4b, 0x86, 0xaa, 0x46, 0x77, 0xcc, 0x3e, 0xaa, 0x51, 0xf6, 0xa6, 0x96, 0xf2, 0x22, 0x9b,
        0xd0, 0x76, 0x7c, 0xa8, 0x21, 0x1a, 0x87, 0x80, 0x8c, 0x55, 0x2d, 0xdf, 0x19, 0xdc, 0x06,
        0x0a, 0xa8, 0x2b, 0xcd, 0x95, 0x46, 0x4b, 0x56, 0x44, 0xc8, 0x52, 0x72, 0xcb, 0x1a, 0xab,
        0x21, 0x7e, 0x22, 0x0e, 0xbf, 0xd9, 0xeb, 0xc8, 0x9d, 0x8c, 0xe2, 0xb1, 0x67, 0xff, 0x24,
        0x68, 0x7e, 0x3e, 0x81, 0x3f, 0xd2,
    ];
    pub const P521_POINT: [u8; 133] = [
        0x04, 0x01, 0x10, 0x34, 0x0a, 0xe8, 0x55, 0xe5, 0xff, 0x16, 0x89, 0x99, 0x30, 0x8f, 0x39,
        0x69, 0x05, 0x92, 0x89, 0xa7, 0x6e, 0xb6, 0x68, 0x53, 0x61, 0x61, 0x10, 0xc3, 0xb5, 0x23,
        0xdb, 0x3c, 0x83, 0xa8, 0x25, 0xc6, 0xc7, 0xfd, 0xc7, 0x61, 0x32, 0xad, 0xa1, 0xf7, 0xfa,
        0x67, 0xac, 0xf8, 0x36, 0x9c, 0xd1, 0x01, 0x2b, 0x5f, 0x92, 0x6b, 0xe9, 0x78, 0x15, 0x64,
        0xbf, 0x50, 0x7e, 0x7f, 0x7c, 0x6d, 0x08, 0x00, 0x00, 0xf7, 0x74, 0x11, 0x08, 0x1d, 0xf5,
        0xfc, 0xce, 0x47, 0x89, 0x41, 0x80, 0x15, 0x34, 0x87, 0x1b, 0xe0, 0xad, 0x1e, 0x02, 0xde,
        0xd4, 0xb3, 0x1f, 0x61, 0x4a, 0xc1, 0x8d, 0x4d, 0x3c, 0x8f, 0x96, 0xf5, 0xe3, 0x8a, 0x61,
        0x1d, 0x6c, 0x68, 0x62, 0xaa, 0xfd, 0x4a, 0x91, 0xb4, 0x87, 0xcf, 0x0c, 0x5c, 0x3f, 0xe7,
        0xaa, 0xd1, 0x99, 0x11, 0x10, 0x36, 0x58, 0x1f, 0x48, 0x0a, 0x0c, 0xe1, 0x18,
    ];
    pub const P521_SIG: [u8; 132] = [
        0x00, 0xe2, 0x66, 0x70, 0xe8, 0xdf, 0xe9, 0x47, 0x82, 0x16, 0xf4, 0xe9, 0x04, 0xdd, 0x90,
        0xc0, 0x5b, 0x20, 0xcc, 0x72, 0x2c, 0x0e, 0xc5, 0xd8, 0x6f, 0x18, 0x82, 0xea, 0xa1, 0x40,
        0x33, 0x0b, 0xc5, 0xf0, 0xa0, 0xfe, 0xbf, 0x19, 0x83, 0x42, 0x25, 0xfa, 0x59, 0x17, 0xa8,
        0x96, 0x53, 0x2b, 0x73, 0x7d, 0x91, 0xe3, 0xeb, 0x38, 0x49, 0xf5, 0xf5, 0x05, 0xf9, 0x0b,
        0xd3, 0xe2, 0x18, 0xd5, 0xed, 0x23, 0x01, 0xad, 0xb1, 0xc6, 0x25, 0x5d, 0x05, 0x32, 0x8e,
        0x4e, 0x6d, 0x2a, 0xbe, 0x26, 0xd7, 0x64, 0xb7, 0x2e, 0x2f, 0xd5, 0x9f, 0x79, 0x19, 0xb6,
        0xf2, 0xed, 0x94, 0x30, 0x22, 0xf7, 0x79, 0x54, 0xc9, 0xd7, 0xcf, 0xad, 0x38, 0x56, 0xad,
        0x97, 0x31, 0xe9, 0x9b, 0xd1, 0x44, 0x74, 0x2d, 0x91, 0xcc, 0xc3, 0x29, 0x55, 0xb2, 0x5e,
        0x41, 0xc9, 0xa7, 0x44, 0xd5, 0x56, 0xac, 0x22, 0xf1, 0x0c, 0xec, 0x72,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::standin::NativeVerifySignature;
    use crate::jwt::testkeys;
    use ring::signature::{self as rs, UnparsedPublicKey};
    use rsa::pkcs8::der::Decode;
    use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;
    use std::cell::RefCell;

    fn uint(be: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_uint(&mut out, be);
        out
    }

    #[test]
    fn der_integers_are_minimal_and_positive() {
        let cases: &[(&[u8], &[u8])] = &[
            (&[], &[0x02, 0x01, 0x00]),
            (&[0, 0, 0], &[0x02, 0x01, 0x00]),
            (&[1], &[0x02, 0x01, 0x01]),
            (&[0, 0, 1], &[0x02, 0x01, 0x01]),
            (&[0x7f, 0xff], &[0x02, 0x02, 0x7f, 0xff]),
            (&[0x80], &[0x02, 0x02, 0x00, 0x80]),
            (&[0, 0xff, 0], &[0x02, 0x03, 0x00, 0xff, 0x00]),
            (&[0, 0, 0x7f, 0], &[0x02, 0x02, 0x7f, 0x00]),
        ];
        for (be, want) in cases {
            assert_eq!(uint(be), *want, "{be:02x?}");
        }
    }

    #[test]
    fn der_lengths_use_the_short_form_then_the_minimal_long_form() {
        let cases: &[(usize, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0x81, 0x80]),
            (255, &[0x81, 0xff]),
            (256, &[0x82, 0x01, 0x00]),
            (65_535, &[0x82, 0xff, 0xff]),
            (65_536, &[0x83, 0x01, 0x00, 0x00]),
        ];
        for (len, want) in cases {
            let mut out = Vec::new();
            push_der_len(&mut out, *len);
            assert_eq!(out, *want, "{len}");
        }
    }

    #[test]
    fn ecdsa_der_edge_cases() {
        // r with leading zeros and s with the top bit set.
        let mut rs = vec![0u8; 64];
        rs[2] = 0x01;
        rs[31] = 0x02;
        rs[32] = 0x80;
        rs[63] = 0x03;
        // 2 + 30 bytes for r, 2 + 33 for s.
        let mut want = vec![0x30, 0x43, 0x02, 0x1e, 0x01];
        want.extend_from_slice(&[0; 28]);
        want.push(0x02);
        want.extend_from_slice(&[0x02, 0x21, 0x00, 0x80]);
        want.extend_from_slice(&[0; 30]);
        want.push(0x03);
        assert_eq!(ecdsa_der(&rs), Some(want));
        // One-byte components.
        assert_eq!(
            ecdsa_der(&[0, 1, 0, 0x81]),
            Some(vec![0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x81])
        );
        // Never valid: refused without a DER encoding.
        assert_eq!(ecdsa_der(&[]), None);
        assert_eq!(ecdsa_der(&[1, 2, 3]), None);
        assert_eq!(ecdsa_der(&[0; 64]), None);
        let mut r_zero = vec![0u8; 64];
        r_zero[40] = 1;
        assert_eq!(ecdsa_der(&r_zero), None);
        let mut s_zero = vec![0u8; 64];
        s_zero[3] = 1;
        assert_eq!(ecdsa_der(&s_zero), None);
        // P-521 sizes take the long length form: 2 * (66 + 2 + 1) > 127.
        let big = vec![0xffu8; 132];
        let der = ecdsa_der(&big).unwrap_or_default();
        assert_eq!(der[..3], [0x30, 0x81, 0x8a]);
        assert_eq!(der.len(), 3 + 2 * (2 + 67));
    }

    #[test]
    fn ecdsa_der_is_read_back_by_independent_parsers() {
        for _ in 0..32 {
            let msg = rand::random::<[u8; 16]>();
            // P-256 (deterministic signatures: vary the message).
            let raw = testkeys::sign(Algorithm::ES256, &msg);
            let der = ecdsa_der(&raw).unwrap_or_default();
            let parsed = p256::ecdsa::Signature::from_der(&der).map(|s| s.to_bytes().to_vec());
            assert_eq!(parsed.ok(), Some(raw.clone()));
            let point = testkeys::ec_point(Algorithm::ES256);
            let ring_key = UnparsedPublicKey::new(&rs::ECDSA_P256_SHA256_ASN1, &point);
            assert!(ring_key.verify(&msg, &der).is_ok());
            // The same signature as r || s is refused by the ASN.1 verifier.
            assert!(ring_key.verify(&msg, &raw).is_err());
            // P-384.
            let raw = testkeys::sign(Algorithm::ES384, &msg);
            let der = ecdsa_der(&raw).unwrap_or_default();
            let point = testkeys::ec_point(Algorithm::ES384);
            let ring_key = UnparsedPublicKey::new(&rs::ECDSA_P384_SHA384_ASN1, &point);
            assert!(ring_key.verify(&msg, &der).is_ok());
            // P-521, by the RustCrypto DER reader.
            let raw = testkeys::sign(Algorithm::ES512, &msg);
            let der = ecdsa_der(&raw).unwrap_or_default();
            let parsed = p521::ecdsa::Signature::from_der(&der).map(|s| s.to_bytes().to_vec());
            assert_eq!(parsed.ok(), Some(raw));
        }
    }

    /// The algorithm OID, its parameters and the key bits of a SubjectPublicKeyInfo,
    /// read by the RustCrypto `spki` crate.
    fn read_spki(der: &[u8]) -> (String, Option<Vec<u8>>, Vec<u8>) {
        let info = SubjectPublicKeyInfoRef::from_der(der).unwrap();
        let params = info.algorithm.parameters.map(|p| p.value().to_vec());
        let bits = info.subject_public_key.as_bytes().unwrap_or_default();
        (info.algorithm.oid.to_string(), params, bits.to_vec())
    }

    #[test]
    fn rsa_spki_is_read_back_and_verifies_with_ring() {
        use rsa::pkcs8::DecodePublicKey;
        use rsa::traits::PublicKeyParts;
        let (n, e) = testkeys::rsa_n_e();
        let spki = rsa_spki(&n, &e);
        let key = rsa::RsaPublicKey::from_public_key_der(&spki).unwrap();
        assert_eq!(
            (key.n().to_bytes_be(), key.e().to_bytes_be()),
            (n.clone(), e)
        );
        let (oid, params, bits) = read_spki(&spki);
        assert_eq!(oid, "1.2.840.113549.1.1.1");
        assert_eq!(params, Some(vec![]), "NULL parameters");
        // The BIT STRING holds the RSAPublicKey that ring reads.
        let msg = b"header.payload";
        let sig = testkeys::sign(Algorithm::RS256, msg);
        let ring_key = UnparsedPublicKey::new(&rs::RSA_PKCS1_2048_8192_SHA256, &bits);
        assert!(ring_key.verify(msg, &sig).is_ok());
        // Leading zeros do not change the encoding (DER is minimal).
        let padded = [&[0u8, 0][..], &n].concat();
        assert_eq!(rsa_spki(&padded, &[0, 1, 0, 1]), spki);
    }

    #[test]
    fn ec_spki_is_read_back_for_each_curve() {
        use p256::pkcs8::DecodePublicKey;
        let cases = [
            (Algorithm::ES256, Family::P256, "1.2.840.10045.3.1.7"),
            (Algorithm::ES384, Family::P384, "1.3.132.0.34"),
            (Algorithm::ES512, Family::P521, "1.3.132.0.35"),
        ];
        for (alg, family, curve) in cases {
            let point = testkeys::ec_point(alg);
            let spki = ec_spki(family, &point).unwrap_or_default();
            let (oid, params, bits) = read_spki(&spki);
            assert_eq!(oid, "1.2.840.10045.2.1", "{alg}");
            let curve_oid = rsa::pkcs8::der::asn1::ObjectIdentifier::new(curve).unwrap();
            let mut want_params = Vec::new();
            rsa::pkcs8::der::Encode::encode_to_vec(&curve_oid, &mut want_params).unwrap();
            assert_eq!(params, Some(want_params[2..].to_vec()), "{alg}");
            assert_eq!(bits, point, "{alg}");
            assert!(ec_spki(family, &point[1..]).is_none(), "{alg}: short point");
        }
        let p256 = ec_spki(Family::P256, &testkeys::ec_point(Algorithm::ES256)).unwrap_or_default();
        assert!(p256::PublicKey::from_public_key_der(&p256).is_ok());
        let p384 = ec_spki(Family::P384, &testkeys::ec_point(Algorithm::ES384)).unwrap_or_default();
        assert!(p384::PublicKey::from_public_key_der(&p384).is_ok());
        assert!(ec_spki(Family::Rsa, &[4; 65]).is_none());
    }

    #[test]
    fn key_arguments_name_the_hash_and_carry_the_spki() {
        let point = testkeys::ec_point(Algorithm::ES384);
        let args = ec_key(Algorithm::ES384, &point).unwrap_or_default();
        let spki = ec_spki(Family::P384, &point).unwrap_or_default();
        let mut want = vec![0x0a, 0x06];
        want.extend_from_slice(b"sha384");
        want.extend_from_slice(&[0x12, 0x78]);
        want.extend_from_slice(&spki);
        assert_eq!(&*args, want.as_slice());
        let (n, e) = testkeys::rsa_n_e();
        for (alg, hash) in [
            (Algorithm::RS256, "sha256"),
            (Algorithm::RS384, "sha384"),
            (Algorithm::RS512, "sha512"),
        ] {
            let args = rsa_key(alg, &n, &e).unwrap_or_default();
            let spki = rsa_spki(&n, &e);
            // 294 bytes of SPKI: a two-byte varint length.
            assert_eq!(spki.len(), 294);
            let mut want = vec![0x0a, 0x06];
            want.extend_from_slice(hash.as_bytes());
            want.extend_from_slice(&[0x12, 0xa6, 0x02]);
            want.extend_from_slice(&spki);
            assert_eq!(&*args, want.as_slice(), "{alg}");
        }
        // Only the algorithms the host verifies get arguments.
        for alg in [Algorithm::PS256, Algorithm::HS256, Algorithm::EdDSA] {
            assert!(rsa_key(alg, &n, &e).is_none(), "{alg}");
        }
        assert!(ec_key(Algorithm::ES256K, &testkeys::ec_point(Algorithm::ES256K)).is_none());
        assert!(
            ec_key(Algorithm::ES256, &point).is_none(),
            "P-384 point for ES256"
        );
    }

    #[test]
    fn varints_take_seven_bits_a_byte() {
        let cases: &[(usize, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (16_384, &[0x80, 0x80, 0x01]),
        ];
        for (v, want) in cases {
            let mut out = Vec::new();
            push_varint(&mut out, *v);
            assert_eq!(out, *want, "{v}");
        }
    }

    /// A host that records the arguments and answers with fixed bytes or a status.
    struct Scripted {
        answer: Result<Vec<u8>, u32>,
        calls: RefCell<Vec<Vec<u8>>>,
    }

    impl Scripted {
        fn new(answer: Result<Vec<u8>, u32>) -> Scripted {
            Scripted {
                answer,
                calls: RefCell::new(Vec::new()),
            }
        }
    }

    impl SignatureHost for Scripted {
        fn verify_signature(&self, arguments: &[u8]) -> Result<Vec<u8>, u32> {
            self.calls.borrow_mut().push(arguments.to_vec());
            self.answer.clone()
        }
    }

    #[test]
    fn only_the_exact_answer_08_01_is_valid() {
        let answers: &[(&[u8], bool)] = &[
            (&[0x08, 0x01], true),
            (&[0x08, 0x00], false),
            (&[], false),
            (&[0x08], false),
            (&[0x08, 0x01, 0x00], false),
            (&[0x08, 0x01, 0x12, 0x00], false),
            (&[0x08, 0x02], false),
            (&[0x01, 0x08], false),
            (b"\x12\x05error", false),
            (b"true", false),
        ];
        for (answer, want) in answers {
            assert_eq!(is_valid(answer), *want, "{answer:02x?}");
            let host = Scripted::new(Ok(answer.to_vec()));
            let got = verify(&host, b"key", Family::Rsa, b"sig", b"text");
            assert_eq!(got, Ok(*want), "{answer:02x?}");
        }
        // Any status but Ok is reported, and a caller reads it as invalid.
        for status in [1, 2, 3, 10, 12, 99] {
            let host = Scripted::new(Err(status));
            assert_eq!(
                verify(&host, b"key", Family::P256, &[1; 64], b"t"),
                Err(status)
            );
        }
    }

    #[test]
    fn the_arguments_are_the_key_part_then_signature_and_text() {
        let host = Scripted::new(Ok(vec![0x08, 0x01]));
        let text = vec![b'a'; 200];
        let raw = [[0u8; 31].as_slice(), &[0x90], &[0x11; 32]].concat();
        assert_eq!(verify(&host, b"KEY", Family::P256, &raw, &text), Ok(true));
        let der = ecdsa_der(&raw).unwrap_or_default();
        let mut want = b"KEY".to_vec();
        want.push(0x1a);
        want.push(der.len() as u8);
        want.extend_from_slice(&der);
        want.extend_from_slice(&[0x22, 0xc8, 0x01]);
        want.extend_from_slice(&text);
        assert_eq!(host.calls.borrow().as_slice(), &[want]);
        // RSA signatures go as they are; a zero ECDSA component is never sent.
        let host = Scripted::new(Ok(vec![0x08, 0x01]));
        assert_eq!(verify(&host, b"K", Family::Rsa, &[0; 4], b"t"), Ok(true));
        assert_eq!(
            host.calls.borrow()[0],
            b"K\x1a\x04\x00\x00\x00\x00\x22\x01t"
        );
        let host = Scripted::new(Ok(vec![0x08, 0x01]));
        assert_eq!(verify(&host, b"K", Family::P384, &[0; 96], b"t"), Ok(false));
        assert!(host.calls.borrow().is_empty());
    }

    static STAND_IN: NativeVerifySignature = NativeVerifySignature;

    #[test]
    fn the_probe_vectors_pass_the_stand_in_and_fail_over_other_text() {
        assert_eq!(
            probe(&STAND_IN),
            Probe {
                passed: Families::ALL,
                failures: String::new()
            }
        );
    }

    /// The stand-in, except that keys of one curve are "not found".
    struct WithoutP521;

    impl SignatureHost for WithoutP521 {
        fn verify_signature(&self, arguments: &[u8]) -> Result<Vec<u8>, u32> {
            let p521 = &P521_SPKI[5..21];
            if arguments.windows(p521.len()).any(|w| w == p521) {
                return Err(STATUS_NOT_FOUND);
            }
            STAND_IN.verify_signature(arguments)
        }
    }

    #[test]
    fn the_probe_names_each_family_that_fails() {
        let yes = Scripted::new(Ok(vec![0x08, 0x01]));
        let no = Scripted::new(Ok(b"\x12\x06failed".to_vec()));
        let absent = Scripted::new(Err(STATUS_NOT_FOUND));
        let broken = Scripted::new(Err(10));
        let cases: Vec<(&dyn SignatureHost, Families, &str)> = vec![
            (
                &yes,
                Families::NONE,
                "RS256: an invalid signature accepted; ES256: an invalid signature accepted; \
                 ES384: an invalid signature accepted; ES512: an invalid signature accepted",
            ),
            (
                &no,
                Families::NONE,
                "RS256: a valid signature refused; ES256: a valid signature refused; \
                 ES384: a valid signature refused; ES512: a valid signature refused",
            ),
            (
                &absent,
                Families::NONE,
                "RS256: no such function; ES256: no such function; ES384: no such function; \
                 ES512: no such function",
            ),
            (
                &broken,
                Families::NONE,
                "RS256: status 10; ES256: status 10; ES384: status 10; ES512: status 10",
            ),
            (&WithoutP521, Families(7), "ES512: no such function"),
        ];
        for (host, passed, failures) in cases {
            let got = probe(host);
            assert_eq!(got.passed, passed, "{failures}");
            assert_eq!(got.failures, failures);
        }
        // Two calls per family: the valid vector and the same signature over other text.
        assert_eq!(yes.calls.borrow().len(), 8);
        let first = &yes.calls.borrow()[0];
        assert!(first.starts_with(b"\x0a\x06sha256\x12\xa6\x02\x30\x82\x01\x22"));
        assert!(first.ends_with(b"\x22\x0fapi-guard probe"));
    }

    #[test]
    fn the_backend_follows_the_setting_and_the_probe() {
        let all = || Probe {
            passed: Families::ALL,
            failures: String::new(),
        };
        let none = || Probe {
            passed: Families::NONE,
            failures: "RS256: no such function; ES256: no such function".to_string(),
        };
        let some = || Probe {
            passed: Families(7),
            failures: "ES512: status 10".to_string(),
        };
        let not_called = || -> Probe { panic!("module must not probe the host") };

        let module = choose(SignatureBackend::Module, not_called).map(|c| c.families);
        assert_eq!(module, Ok(Families::NONE));

        let auto = choose(SignatureBackend::Auto, all).unwrap();
        assert_eq!(auto.families, Families::ALL);
        assert_eq!(
            auto.summary,
            "signatures: RS256/384/512 and ES256/384/512 verified by Envoy (verify_signature), the other algorithms in the module"
        );
        let auto = choose(SignatureBackend::Auto, none).unwrap();
        assert_eq!(auto.families, Families::NONE);
        assert!(auto
            .summary
            .starts_with("signatures: all verified in the module; "));
        assert!(auto
            .summary
            .ends_with("RS256: no such function; ES256: no such function"));
        let auto = choose(SignatureBackend::Auto, some).unwrap();
        assert_eq!(auto.families, Families(7));
        assert!(!auto.families.contains(Family::P521) && auto.families.contains(Family::Rsa));
        assert!(auto
            .summary
            .ends_with("those and the other algorithms in the module: ES512: status 10"));

        assert_eq!(
            choose(SignatureBackend::Host, all).map(|c| c.families),
            Ok(Families::ALL)
        );
        for probe in [none, some] {
            let e = choose(SignatureBackend::Host, probe)
                .err()
                .map(|e| e.to_string());
            let e = e.unwrap_or_default();
            assert!(
                e.starts_with("signature_backend: `host` needs Envoy's verify_signature (Envoy 1.30 or later), which failed its check: "),
                "{e}"
            );
        }
    }

    #[test]
    fn the_verifier_sends_only_host_families_to_the_host() {
        let module = Verifier::module();
        let partial = Verifier::host(&STAND_IN, Families(1 << Family::P256 as u8));
        let all = Verifier::host(&STAND_IN, Families::ALL);
        for alg in Algorithm::ALL {
            assert!(module.host_for(alg).is_none(), "{alg}");
            let host_capable = Family::of(alg).is_some();
            assert_eq!(all.host_for(alg).is_some(), host_capable, "{alg}");
            assert_eq!(
                partial.host_for(alg).is_some(),
                alg == Algorithm::ES256,
                "{alg}"
            );
        }
        assert_eq!(
            format!("{all:?}"),
            "Verifier { host: true, families: Families(15) }"
        );
    }
}
