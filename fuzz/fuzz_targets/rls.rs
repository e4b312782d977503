//! The rate-limit service's messages (`quota::rls`): the reply decoder, which reads
//! bytes from the network, and the request encoder.
//!
//! Input: first byte even: the rest is a reply as the service sends it. Odd: the
//! rest chooses the fields of a reply, written by the independent encoder below,
//! and the descriptors of a request.
//!
//! Invariants:
//! - nothing panics, whatever the bytes;
//! - a well-formed reply decodes to the fields written (unknown fields skipped,
//!   durations rounded up to whole seconds), and every strict prefix that cuts a
//!   field is refused;
//! - an encoded request reads back, with an independent reader, as the domain,
//!   the descriptors and their entries given, and `hits_addend` 1.
#![no_main]

use api_guard::api::fuzzing::{decode_rls_reply, encode_rls_request, RlsStatus};
use libfuzzer_sys::fuzz_target;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(out: &mut Vec<u8>, number: u64, wire: u64) {
    varint(out, (number << 3) | wire);
}

fn bytes_field(out: &mut Vec<u8>, number: u64, b: &[u8]) {
    field(out, number, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A byte reader over the fuzz input that never fails (zeros when empty).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u64 {
        u64::from(u32::from_le_bytes([
            self.u8(),
            self.u8(),
            self.u8(),
            self.u8(),
        ]))
    }
    fn text(&mut self) -> String {
        let n = usize::from(self.u8() % 12);
        (0..n).map(|_| char::from(b'a' + self.u8() % 26)).collect()
    }
}

/// An independent reader of `RateLimitRequest`: (domain, descriptors, hits_addend).
fn read_request(b: &[u8]) -> (String, Vec<Vec<(String, String)>>, u64) {
    fn var(b: &[u8], at: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[*at];
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    fn fields(b: &[u8]) -> Vec<(u64, Vec<u8>, u64)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < b.len() {
            let tag = var(b, &mut at);
            if tag & 7 == 2 {
                let n = var(b, &mut at) as usize;
                out.push((tag >> 3, b[at..at + n].to_vec(), 0));
                at += n;
            } else {
                let v = var(b, &mut at);
                out.push((tag >> 3, Vec::new(), v));
            }
        }
        out
    }
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let (mut domain, mut descriptors, mut hits) = (String::new(), Vec::new(), 0);
    for (n, body, v) in fields(b) {
        match n {
            1 => domain = text(&body),
            2 => descriptors.push(
                fields(&body)
                    .into_iter()
                    .map(|(_, entry, _)| {
                        let kv = fields(&entry);
                        (text(&kv[0].1), text(&kv[1].1))
                    })
                    .collect(),
            ),
            3 => hits = v,
            _ => panic!("unexpected field {n}"),
        }
    }
    (domain, descriptors, hits)
}

fn structured(mut inp: Bytes<'_>) {
    // A reply.
    let code = 1 + u64::from(inp.u8() & 1);
    let mut reply = Vec::new();
    field(&mut reply, 1, 0);
    varint(&mut reply, code);
    let mut want = Vec::new();
    for _ in 0..inp.u8() % 4 {
        let mut s = Vec::new();
        let over = inp.u8() & 1 == 1;
        field(&mut s, 1, 0);
        varint(&mut s, if over { 2 } else { 1 });
        let limit = inp.u32();
        let mut l = Vec::new();
        field(&mut l, 1, 0);
        varint(&mut l, limit);
        bytes_field(&mut l, 3, inp.text().as_bytes());
        bytes_field(&mut s, 2, &l);
        let remaining = inp.u32();
        field(&mut s, 3, 0);
        varint(&mut s, remaining);
        let (secs, nanos) = (inp.u32(), inp.u32() % 1_000_000_000);
        let mut d = Vec::new();
        field(&mut d, 1, 0);
        varint(&mut d, secs);
        field(&mut d, 2, 0);
        varint(&mut d, nanos);
        bytes_field(&mut s, 4, &d);
        // An unknown field of a later version.
        bytes_field(&mut s, 9, inp.text().as_bytes());
        bytes_field(&mut reply, 2, &s);
        want.push(RlsStatus {
            over_limit: over,
            limit: Some(limit),
            remaining,
            reset_seconds: Some(secs + u64::from(nanos > 0)),
        });
    }
    bytes_field(&mut reply, 5, inp.text().as_bytes());
    let got = match decode_rls_reply(&reply) {
        Ok(r) => r,
        Err(e) => panic!("a well-formed reply is refused: {e:?}"),
    };
    assert_eq!(got.over_limit, code == 2);
    assert_eq!(got.statuses, want);
    for n in 1..reply.len() {
        // A cut inside the last field (raw_body) always; elsewhere a cut may end
        // exactly between fields, which is a shorter valid reply.
        let _ = decode_rls_reply(&reply[..n]);
    }
    assert!(decode_rls_reply(&reply[..reply.len() - 1]).is_err());

    // A request.
    let domain = inp.text();
    let descriptors: Vec<Vec<(String, String)>> = (0..inp.u8() % 4)
        .map(|_| {
            (0..1 + inp.u8() % 4)
                .map(|_| (inp.text(), inp.text()))
                .collect()
        })
        .collect();
    let borrowed: Vec<Vec<(&str, &str)>> = descriptors
        .iter()
        .map(|d| d.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .collect();
    let bytes = encode_rls_request(&domain, &borrowed);
    let (d, ds, hits) = read_request(&bytes);
    assert_eq!(d, domain);
    assert_eq!(ds, descriptors);
    assert_eq!(hits, 1);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = decode_rls_reply(rest);
    } else {
        structured(Bytes(rest));
    }
});
