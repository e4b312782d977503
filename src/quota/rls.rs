//! Envoy's rate-limit service protocol (RLS v3), the few messages a global quota
//! sends and reads, encoded and decoded by hand on the protobuf wire format.
//!
//! Why by hand: the request is three fields deep and the reply is read for five
//! fields; a generated codec (`prost` and its derives) would add several times the
//! bytes of these functions to the module (see docs/design.md, "Crates").
//!
//! Messages (`envoy/service/ratelimit/v3/rls.proto`,
//! `envoy/extensions/common/ratelimit/v3/ratelimit.proto`):
//! - `RateLimitRequest { string domain = 1; repeated RateLimitDescriptor
//!   descriptors = 2; uint32 hits_addend = 3; }`, `RateLimitDescriptor { repeated
//!   Entry entries = 1; }`, `Entry { string key = 1; string value = 2; }`;
//! - `RateLimitResponse { Code overall_code = 1; repeated DescriptorStatus
//!   statuses = 2; repeated HeaderValue response_headers_to_add = 3; ... }`,
//!   `DescriptorStatus { Code code = 1; RateLimit current_limit = 2; uint32
//!   limit_remaining = 3; Duration duration_until_reset = 4; }`, `RateLimit {
//!   uint32 requests_per_unit = 1; Unit unit = 2; }`, `Duration { int64 seconds = 1;
//!   int32 nanos = 2; }`, `HeaderValue { string key = 1; string value = 2; }`;
//!   `Code`: 0 unknown, 1 OK, 2 over limit.
//!
//! The reply comes from the network: the decoder reads it defensively. A truncated
//! field, a wire type that does not fit, an unknown overall code or a reply over
//! [`MAX_REPLY_BYTES`] is an error (the quota's `failure_mode` decides); unknown
//! fields are skipped; nothing here can panic.

use crate::config::pbstruct::Reader;

/// The gRPC service asked.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
/// Its method.
pub const METHOD: &str = "ShouldRateLimit";
/// Largest reply read (a reply for a few descriptors is well under 1 KB).
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Most descriptor statuses kept from one reply.
const MAX_STATUSES: usize = 64;

/// Encodes a `RateLimitRequest` for `domain` with one descriptor per item of
/// `descriptors` (each a list of entries, key and value) and `hits_addend` 1.
pub fn encode_request(domain: &str, descriptors: &[Vec<(&str, &str)>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    push_field(&mut out, 1, domain.as_bytes());
    let mut descriptor = Vec::new();
    let mut entry = Vec::new();
    for entries in descriptors {
        descriptor.clear();
        for (key, value) in entries {
            entry.clear();
            push_field(&mut entry, 1, key.as_bytes());
            push_field(&mut entry, 2, value.as_bytes());
            push_field(&mut descriptor, 1, &entry);
        }
        push_field(&mut out, 2, &descriptor);
    }
    // hits_addend = 1 (field 3, varint)
    out.extend_from_slice(&[3 << 3, 1]);
    out
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited field (wire type 2).
fn push_field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
    out.push((number << 3) | 2);
    push_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// What the service answered for the whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `overall_code` was `OVER_LIMIT` (else `OK`).
    pub over_limit: bool,
    /// One per descriptor, in the order sent (a service may send none).
    pub statuses: Vec<DescriptorStatus>,
    /// Seconds from a `retry-after`, `ratelimit-reset` or `x-ratelimit-reset`
    /// header the service asked to add, if any.
    pub reset_header: Option<u64>,
}

/// What the service answered for one descriptor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DescriptorStatus {
    /// `code` was `OVER_LIMIT`.
    pub over_limit: bool,
    /// `current_limit.requests_per_unit`, if the service named the limit.
    pub limit: Option<u64>,
    /// `limit_remaining`.
    pub remaining: u64,
    /// `duration_until_reset`, rounded up to whole seconds.
    pub reset_seconds: Option<u64>,
}

/// Why a reply could not be used, as the `global_errors.<kind>` metric names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// Not a well-formed `RateLimitResponse` (truncated, wrong wire types, too
    /// large).
    Malformed,
    /// `overall_code` absent, `UNKNOWN` or a value this module does not know.
    UnknownCode,
}

impl ReplyError {
    /// Metric label.
    pub fn kind(self) -> &'static str {
        match self {
            ReplyError::Malformed => "malformed",
            ReplyError::UnknownCode => "unknown_code",
        }
    }
}

/// Decodes a `RateLimitResponse`.
pub fn decode_reply(bytes: &[u8]) -> Result<Reply, ReplyError> {
    if bytes.len() > MAX_REPLY_BYTES {
        return Err(ReplyError::Malformed);
    }
    let bad = |_| ReplyError::Malformed;
    let mut r = Reader::new(bytes);
    let mut code = 0u64;
    let mut statuses = Vec::new();
    let mut reset_header = None;
    while !r.done() {
        match r.tag().map_err(bad)? {
            (1, 0) => code = r.varint().map_err(bad)?,
            (2, 2) => {
                let status = decode_status(r.len_delimited().map_err(bad)?)?;
                if statuses.len() < MAX_STATUSES {
                    statuses.push(status);
                }
            }
            (3, 2) => {
                if let Some(secs) = reset_from_header(r.len_delimited().map_err(bad)?)? {
                    reset_header = Some(secs);
                }
            }
            (1..=3, _) => return Err(ReplyError::Malformed),
            (_, wire) => r.skip(wire).map_err(bad)?,
        }
    }
    let over_limit = match code {
        1 => false,
        2 => true,
        _ => return Err(ReplyError::UnknownCode),
    };
    Ok(Reply {
        over_limit,
        statuses,
        reset_header,
    })
}

fn decode_status(bytes: &[u8]) -> Result<DescriptorStatus, ReplyError> {
    let bad = |_| ReplyError::Malformed;
    let mut r = Reader::new(bytes);
    let mut status = DescriptorStatus::default();
    while !r.done() {
        match r.tag().map_err(bad)? {
            (1, 0) => status.over_limit = r.varint().map_err(bad)? == 2,
            (2, 2) => {
                let mut limit = Reader::new(r.len_delimited().map_err(bad)?);
                while !limit.done() {
                    match limit.tag().map_err(bad)? {
                        (1, 0) => status.limit = Some(limit.varint().map_err(bad)? & 0xffff_ffff),
                        (_, wire) => limit.skip(wire).map_err(bad)?,
                    }
                }
            }
            (3, 0) => status.remaining = r.varint().map_err(bad)? & 0xffff_ffff,
            (4, 2) => {
                let mut d = Reader::new(r.len_delimited().map_err(bad)?);
                let (mut secs, mut nanos) = (0u64, 0u64);
                while !d.done() {
                    match d.tag().map_err(bad)? {
                        (1, 0) => secs = d.varint().map_err(bad)?,
                        (2, 0) => nanos = d.varint().map_err(bad)?,
                        (_, wire) => d.skip(wire).map_err(bad)?,
                    }
                }
                // int64 / int32 on the wire: a negative value is two's complement.
                let secs = if secs > i64::MAX as u64 { 0 } else { secs };
                let nanos = u64::from(nanos > 0 && nanos <= i32::MAX as u64);
                status.reset_seconds = Some(secs.saturating_add(nanos));
            }
            (1..=4, _) => return Err(ReplyError::Malformed),
            (_, wire) => r.skip(wire).map_err(bad)?,
        }
    }
    Ok(status)
}

/// Seconds from a reset header the service added (`HeaderValue`), if it is one.
fn reset_from_header(bytes: &[u8]) -> Result<Option<u64>, ReplyError> {
    let bad = |_| ReplyError::Malformed;
    let mut r = Reader::new(bytes);
    let (mut key, mut value): (&[u8], &[u8]) = (b"", b"");
    while !r.done() {
        match r.tag().map_err(bad)? {
            (1, 2) => key = r.len_delimited().map_err(bad)?,
            (2 | 3, 2) => value = r.len_delimited().map_err(bad)?,
            (_, wire) => r.skip(wire).map_err(bad)?,
        }
    }
    let named = [
        &b"retry-after"[..],
        b"ratelimit-reset",
        b"x-ratelimit-reset",
    ]
    .iter()
    .any(|n| key.eq_ignore_ascii_case(n));
    if !named || value.is_empty() || value.len() > 12 || !value.iter().all(u8::is_ascii_digit) {
        return Ok(None);
    }
    Ok(value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test-side encoder of a reply, field by field.
    fn varint_field(out: &mut Vec<u8>, number: u8, value: u64) {
        out.push(number << 3);
        push_varint(out, value);
    }

    fn status(code: u64, limit: u64, remaining: u64, reset: Option<(u64, u64)>) -> Vec<u8> {
        let mut s = Vec::new();
        varint_field(&mut s, 1, code);
        let mut l = Vec::new();
        varint_field(&mut l, 1, limit);
        varint_field(&mut l, 2, 2); // MINUTE
        push_field(&mut l, 3, b"per-minute");
        push_field(&mut s, 2, &l);
        varint_field(&mut s, 3, remaining);
        if let Some((secs, nanos)) = reset {
            let mut d = Vec::new();
            varint_field(&mut d, 1, secs);
            varint_field(&mut d, 2, nanos);
            push_field(&mut s, 4, &d);
        }
        s
    }

    fn reply(code: u64, statuses: &[Vec<u8>]) -> Vec<u8> {
        let mut r = Vec::new();
        varint_field(&mut r, 1, code);
        for s in statuses {
            push_field(&mut r, 2, s);
        }
        r
    }

    /// A tiny deterministic generator (xorshift), so the random tests repeat.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn request_is_the_expected_wire_bytes() {
        let bytes = encode_request("apiguard", &[vec![("route", "orders"), ("caller", "ab")]]);
        let mut want = vec![0x0a, 8];
        want.extend_from_slice(b"apiguard");
        // descriptor: two entries of 2+2+6=... built by hand
        let e1 = [&[0x0a, 5][..], b"route", &[0x12, 6], b"orders"].concat();
        let e2 = [&[0x0a, 6][..], b"caller", &[0x12, 2], b"ab"].concat();
        let d = [
            &[0x0a, e1.len() as u8][..],
            &e1,
            &[0x0a, e2.len() as u8],
            &e2,
        ]
        .concat();
        want.extend_from_slice(&[0x12, d.len() as u8]);
        want.extend_from_slice(&d);
        want.extend_from_slice(&[0x18, 1]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn long_values_get_multi_byte_lengths() {
        let long = "x".repeat(300);
        let bytes = encode_request(&long, &[]);
        assert_eq!(&bytes[..3], &[0x0a, 0xac, 0x02]);
        assert_eq!(bytes.len(), 3 + 300 + 2);
    }

    #[test]
    fn ok_and_over_limit_replies_are_read() {
        let ok = decode_reply(&reply(1, &[status(1, 100, 42, Some((30, 0)))])).unwrap();
        assert!(!ok.over_limit);
        assert_eq!(
            ok.statuses,
            vec![DescriptorStatus {
                over_limit: false,
                limit: Some(100),
                remaining: 42,
                reset_seconds: Some(30)
            }]
        );
        let over = decode_reply(&reply(2, &[status(2, 5, 0, Some((7, 1)))])).unwrap();
        assert!(over.over_limit);
        assert!(over.statuses[0].over_limit);
        // A fraction of a second rounds up.
        assert_eq!(over.statuses[0].reset_seconds, Some(8));
    }

    #[test]
    fn minimal_and_empty_replies() {
        // overall_code alone (Limitador answers OK this way).
        let r = decode_reply(&[0x08, 1]).unwrap();
        assert!(!r.over_limit && r.statuses.is_empty() && r.reset_header.is_none());
        // Proto3 omits a zero: an empty reply is code UNKNOWN.
        assert_eq!(decode_reply(&[]), Err(ReplyError::UnknownCode));
        assert_eq!(decode_reply(&[0x08, 0]), Err(ReplyError::UnknownCode));
        assert_eq!(decode_reply(&[0x08, 9]), Err(ReplyError::UnknownCode));
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut bytes = reply(2, &[status(2, 5, 0, None)]);
        // raw_body (5, bytes), a fixed64 and a fixed32 field of a later version.
        push_field(&mut bytes, 5, b"body");
        bytes.extend_from_slice(&[(9 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.extend_from_slice(&[(10 << 3) | 5, 1, 2, 3, 4]);
        let r = decode_reply(&bytes).unwrap();
        assert!(r.over_limit);
        assert_eq!(r.statuses.len(), 1);
    }

    #[test]
    fn reset_header_is_read() {
        for (key, value, want) in [
            ("retry-after", "12", Some(12)),
            ("X-RateLimit-Reset", "3", Some(3)),
            ("retry-after", "soon", None),
            ("x-other", "5", None),
            ("retry-after", "99999999999999", None),
        ] {
            let mut h = Vec::new();
            push_field(&mut h, 1, key.as_bytes());
            push_field(&mut h, 2, value.as_bytes());
            let mut bytes = reply(2, &[]);
            push_field(&mut bytes, 3, &h);
            assert_eq!(
                decode_reply(&bytes).unwrap().reset_header,
                want,
                "{key}: {value}"
            );
        }
    }

    #[test]
    fn negative_durations_are_zero() {
        let s = status(2, 5, 0, Some((u64::MAX, 0)));
        let r = decode_reply(&reply(2, &[s])).unwrap();
        assert_eq!(r.statuses[0].reset_seconds, Some(0));
    }

    #[test]
    fn every_truncation_of_a_reply_is_an_error_or_a_prefix_reply() {
        let full = reply(2, &[status(2, 5, 0, Some((7, 0))), status(1, 9, 3, None)]);
        for n in 0..full.len() {
            // Never a panic; a cut inside a field is malformed.
            let _ = decode_reply(&full[..n]);
        }
        assert_eq!(
            decode_reply(&full[..full.len() - 1]),
            Err(ReplyError::Malformed)
        );
        assert_eq!(decode_reply(&full[..3]), Err(ReplyError::Malformed));
    }

    #[test]
    fn wrong_wire_types_for_known_fields_are_malformed() {
        assert_eq!(decode_reply(&[0x0a, 0]), Err(ReplyError::Malformed));
        assert_eq!(
            decode_reply(&[0x08, 1, 0x10, 1]),
            Err(ReplyError::Malformed)
        );
        // Groups (wire types 3 and 4) are not read.
        assert_eq!(decode_reply(&[0x08, 1, 0x33]), Err(ReplyError::Malformed));
        // An over-long varint.
        assert_eq!(
            decode_reply(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(ReplyError::Malformed)
        );
    }

    #[test]
    fn oversized_replies_are_malformed() {
        let mut bytes = reply(1, &[]);
        push_field(&mut bytes, 5, &vec![0u8; MAX_REPLY_BYTES]);
        assert_eq!(decode_reply(&bytes), Err(ReplyError::Malformed));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = (rng.next() % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = decode_reply(&bytes);
        }
    }

    #[test]
    fn random_mutations_of_a_valid_reply_never_panic() {
        let base = reply(2, &[status(2, 5, 0, Some((7, 5))), status(1, 9, 3, None)]);
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let mut bytes = base.clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() as usize) % bytes.len();
                match rng.next() % 3 {
                    0 => bytes[at] = rng.next() as u8,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, rng.next() as u8),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let _ = decode_reply(&bytes);
        }
    }

    #[test]
    fn a_reply_with_many_statuses_keeps_a_bounded_number() {
        let statuses: Vec<Vec<u8>> = (0..200).map(|_| status(1, 1, 1, None)).collect();
        let r = decode_reply(&reply(1, &statuses)).unwrap();
        assert_eq!(r.statuses.len(), MAX_STATUSES);
    }
}
