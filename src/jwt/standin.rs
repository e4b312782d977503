//! A native stand-in for Envoy's `verify_signature`, for the conformance tests, the
//! unit tests and the `jws` fuzz target: it reads the arguments back as a protobuf
//! decoder does, parses the SubjectPublicKeyInfo, and verifies the DER signature
//! with ring (RSA PKCS#1 v1.5 over the `RSAPublicKey` inside the key, ECDSA P-256
//! and P-384 with ring's ASN.1 verifiers) or `p521`, as BoringSSL does inside
//! Envoy. So the encoding of [`crate::jwt::hostsig`] is checked on every test vector
//! without an Envoy. Its parsers are strict (minimal DER lengths and integers, each
//! protobuf field once, nothing left over): an encoding that only a lenient reader
//! would take fails here. The filter never uses it, and the `.wasm` module does not
//! contain it.

use crate::jwt::hostsig::{SignatureHost, STATUS_BAD_ARGUMENT};
use ring::signature::{self as rs, UnparsedPublicKey, VerificationAlgorithm};

/// The stand-in; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct NativeVerifySignature;

impl SignatureHost for NativeVerifySignature {
    fn verify_signature(&self, arguments: &[u8]) -> Result<Vec<u8>, u32> {
        // Envoy answers BadArgument for arguments it cannot parse or a key it cannot
        // import; everything else is Ok with a result.
        let args = Arguments::decode(arguments).ok_or(STATUS_BAD_ARGUMENT)?;
        let key = PublicKey::parse(args.public_key).ok_or(STATUS_BAD_ARGUMENT)?;
        if key.verify(args.hash_function, args.signature, args.text) {
            Ok(vec![0x08, 0x01])
        } else {
            // `VerifySignatureResult { error: "..." }`: `result: false` is the
            // default and not written.
            let error = b"signature verification failed";
            let mut out = vec![0x12, error.len() as u8];
            out.extend_from_slice(error);
            Ok(out)
        }
    }
}

/// `VerifySignatureArguments`, read back.
struct Arguments<'a> {
    hash_function: &'a [u8],
    public_key: &'a [u8],
    signature: &'a [u8],
    text: &'a [u8],
}

fn read_varint(input: &mut &[u8]) -> Option<usize> {
    let mut value = 0usize;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= usize::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

impl<'a> Arguments<'a> {
    fn decode(mut input: &'a [u8]) -> Option<Arguments<'a>> {
        let mut fields: [Option<&'a [u8]>; 4] = [None; 4];
        while !input.is_empty() {
            let tag = read_varint(&mut input)?;
            // Every field is length-delimited (wire type 2), numbered 1 to 4.
            if tag & 7 != 2 {
                return None;
            }
            let len = read_varint(&mut input)?;
            let value = input.get(..len)?;
            input = input.get(len..)?;
            let slot = fields.get_mut((tag >> 3).checked_sub(1)?)?;
            if slot.replace(value).is_some() {
                return None;
            }
        }
        let [Some(hash_function), Some(public_key), Some(signature), Some(text)] = fields else {
            return None;
        };
        Some(Arguments {
            hash_function,
            public_key,
            signature,
            text,
        })
    }
}

/// A DER reader over one level of content.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The content of the next element, which must have tag `tag`. Lengths must be
    /// minimal (X.690 §10.1).
    fn read(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (&t, rest) = self.0.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        if t != tag {
            return None;
        }
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            let digits = rest.get(..n)?;
            rest = rest.get(n..)?;
            if n == 0 || n > 4 || digits.first() == Some(&0) {
                return None;
            }
            let len = digits
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            if len < 0x80 {
                return None;
            }
            len
        };
        let content = rest.get(..len)?;
        self.0 = rest.get(len..)?;
        Some(content)
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// A DER INTEGER that is positive and minimally encoded, as its big-endian digits.
fn positive_integer(content: &[u8]) -> Option<&[u8]> {
    match content {
        [] => None,
        [0] => None,
        [0, next, ..] if next & 0x80 == 0 => None,
        [0, rest @ ..] => Some(rest),
        [first, ..] if first & 0x80 != 0 => None,
        digits => Some(digits),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    P521,
}

/// What a SubjectPublicKeyInfo holds.
enum PublicKey<'a> {
    /// The DER `RSAPublicKey`.
    Rsa(&'a [u8]),
    /// The SEC1 point.
    Ec(Curve, &'a [u8]),
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

impl<'a> PublicKey<'a> {
    fn parse(spki: &'a [u8]) -> Option<PublicKey<'a>> {
        let mut outer = Der(spki);
        let mut body = Der(outer.read(0x30)?);
        let mut algorithm = Der(body.read(0x30)?);
        let bits = body.read(0x03)?;
        if !outer.done() || !body.done() {
            return None;
        }
        let (&unused, key) = bits.split_first()?;
        if unused != 0 {
            return None;
        }
        let oid = algorithm.read(0x06)?;
        let key = if oid == OID_RSA {
            // RFC 3279 §2.3.1: the parameters are NULL.
            if !algorithm.read(0x05)?.is_empty() {
                return None;
            }
            PublicKey::Rsa(key)
        } else if oid == OID_EC {
            let curve = match algorithm.read(0x06)? {
                c if c == OID_P256 => Curve::P256,
                c if c == OID_P384 => Curve::P384,
                c if c == OID_P521 => Curve::P521,
                _ => return None,
            };
            PublicKey::Ec(curve, key)
        } else {
            return None;
        };
        algorithm.done().then_some(key)
    }

    fn verify(&self, hash: &[u8], signature: &[u8], text: &[u8]) -> bool {
        let ring_verify = |alg: &'static dyn VerificationAlgorithm, key: &[u8]| {
            UnparsedPublicKey::new(alg, key)
                .verify(text, signature)
                .is_ok()
        };
        match (self, hash) {
            // ring reads the DER RSAPublicKey strictly. BoringSSL takes keys from
            // 1024 bits; so do ring's legacy parameters for SHA-256 and SHA-512 (it
            // has none for SHA-384 under 2048 bits, nor has the filter).
            (PublicKey::Rsa(key), b"sha256") => {
                ring_verify(&rs::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, key)
            }
            (PublicKey::Rsa(key), b"sha384") => ring_verify(&rs::RSA_PKCS1_2048_8192_SHA384, key),
            (PublicKey::Rsa(key), b"sha512") => {
                ring_verify(&rs::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY, key)
            }
            (PublicKey::Ec(Curve::P256, point), b"sha256") => {
                ring_verify(&rs::ECDSA_P256_SHA256_ASN1, point)
            }
            (PublicKey::Ec(Curve::P384, point), b"sha384") => {
                ring_verify(&rs::ECDSA_P384_SHA384_ASN1, point)
            }
            (PublicKey::Ec(Curve::P521, point), b"sha512") => verify_p521(point, signature, text),
            _ => false,
        }
    }
}

/// ECDSA P-521 with SHA-512 over a DER signature, which ring cannot check.
fn verify_p521(point: &[u8], signature: &[u8], text: &[u8]) -> bool {
    use p521::ecdsa::signature::hazmat::PrehashVerifier;
    let mut outer = Der(signature);
    let Some(seq) = outer.read(0x30) else {
        return false;
    };
    let mut ints = Der(seq);
    let (Some(r), Some(s)) = (ints.read(0x02), ints.read(0x02)) else {
        return false;
    };
    let (Some(r), Some(s)) = (positive_integer(r), positive_integer(s)) else {
        return false;
    };
    if !outer.done() || !ints.done() || r.len() > 66 || s.len() > 66 {
        return false;
    }
    let mut fixed = [0u8; 132];
    fixed[66 - r.len()..66].copy_from_slice(r);
    fixed[132 - s.len()..].copy_from_slice(s);
    let hash = ring::digest::digest(&ring::digest::SHA512, text);
    let (Ok(key), Ok(sig)) = (
        p521::ecdsa::VerifyingKey::from_sec1_bytes(point),
        p521::ecdsa::Signature::from_slice(&fixed),
    ) else {
        return false;
    };
    key.verify_prehash(hash.as_ref(), &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::hostsig::{ec_spki, ecdsa_der, Family};
    use crate::jwt::jwks::Algorithm;
    use crate::jwt::testkeys;

    fn args(hash: &[u8], key: &[u8], sig: &[u8], text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (number, bytes) in [(1u8, hash), (2, key), (3, sig), (4, text)] {
            out.push(number << 3 | 2);
            out.extend_from_slice(&[0x80 | (bytes.len() & 0x7f) as u8, (bytes.len() >> 7) as u8]);
            out.extend_from_slice(bytes);
        }
        out
    }

    fn answer(arguments: &[u8]) -> Result<bool, u32> {
        NativeVerifySignature
            .verify_signature(arguments)
            .map(|a| a == [0x08, 0x01])
    }

    #[test]
    fn the_stand_in_is_as_strict_as_its_documentation_says() {
        let text = b"header.payload";
        let raw = testkeys::sign(Algorithm::ES256, text);
        let der = ecdsa_der(&raw).unwrap_or_default();
        let spki = ec_spki(Family::P256, &testkeys::ec_point(Algorithm::ES256)).unwrap_or_default();
        assert_eq!(answer(&args(b"sha256", &spki, &der, text)), Ok(true));
        // (The fields' two-byte length varints are not minimal; protobuf allows that.)
        // Wrong hash, r || s instead of DER, other text: invalid, not an error.
        assert_eq!(answer(&args(b"sha384", &spki, &der, text)), Ok(false));
        assert_eq!(answer(&args(b"sha256", &spki, &raw, text)), Ok(false));
        assert_eq!(answer(&args(b"sha256", &spki, &der, b"other")), Ok(false));
        // Arguments or keys it cannot read: BadArgument, as Envoy answers.
        let good = args(b"sha256", &spki, &der, text);
        let mut twice = good.clone();
        twice.extend_from_slice(&good[..8]);
        let mut trailing_key = spki.clone();
        trailing_key.push(0);
        let mut long_length = spki.clone();
        long_length.splice(1..2, [0x81, 0x59]);
        for bad in [
            twice,
            good[..good.len() - 1].to_vec(),
            [&[0x08, 0x01][..], &good].concat(),
            args(b"sha256", &trailing_key, &der, text),
            args(b"sha256", &long_length, &der, text),
            args(b"sha256", &spki[..spki.len() - 1], &der, text),
        ] {
            assert_eq!(answer(&bad), Err(STATUS_BAD_ARGUMENT));
        }
        // A non-minimal DER integer in a P-521 signature is refused.
        let text = b"p521";
        let raw = testkeys::sign(Algorithm::ES512, text);
        let der = ecdsa_der(&raw).unwrap_or_default();
        let spki = ec_spki(Family::P521, &testkeys::ec_point(Algorithm::ES512)).unwrap_or_default();
        assert_eq!(answer(&args(b"sha512", &spki, &der, text)), Ok(true));
        let tlv = |tag: u8, content: &[u8]| {
            let mut out = vec![tag];
            if content.len() >= 0x80 {
                out.push(0x81);
            }
            out.push(content.len() as u8);
            out.extend_from_slice(content);
            out
        };
        let (r, s) = raw.split_at(66);
        let strip = |v: &[u8]| {
            v.iter()
                .skip_while(|b| **b == 0)
                .copied()
                .collect::<Vec<u8>>()
        };
        let r_padded = [&[0u8, 0][..], &strip(r)].concat();
        let mut s_int = strip(s);
        if s_int.first().is_some_and(|b| b & 0x80 != 0) {
            s_int.insert(0, 0);
        }
        let mut r_int = strip(r);
        if r_int.first().is_some_and(|b| b & 0x80 != 0) {
            r_int.insert(0, 0);
        }
        let minimal = tlv(0x30, &[tlv(0x02, &r_int), tlv(0x02, &s_int)].concat());
        assert_eq!(answer(&args(b"sha512", &spki, &minimal, text)), Ok(true));
        let padded = tlv(0x30, &[tlv(0x02, &r_padded), tlv(0x02, &s_int)].concat());
        assert_eq!(answer(&args(b"sha512", &spki, &padded, text)), Ok(false));
    }
}
