//! Caller keys: what a quota counts by (`quota.by`), the client address for
//! `by: ip`, and the keyed hash (SipHash-2-4 under the salt) that places a caller in
//! a slot without keeping its raw value.

use crate::authz::{lookup_claim, scalar_text, Claims};
use crate::config::ConfigError;
use crate::http;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// SipHash key used when no `key_salt` is configured (and to derive one from it).
pub(super) const DEFAULT_HASH_KEY: (u64, u64) = (0x6170_692d_6775_6172, 0x642e_7175_6f74_612e);
/// Longest `by` value echoed back in a configuration error.
const MAX_ECHO: usize = 64;

/// What a quota counts by (`quota.by`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBy {
    /// The client address ([`client_ip`]).
    Ip,
    /// One bucket for the whole route.
    Route,
    /// A verified claim (dotted names reach nested objects).
    Claim(String),
    /// A request header, name lowercased.
    Header(String),
}

/// Parses `quota.by`; `path` is the field path for errors.
pub(super) fn parse_by(by: &str, path: &str) -> Result<KeyBy, ConfigError> {
    let bad = |why: &str| {
        let shown: String = by.chars().take(MAX_ECHO).collect();
        ConfigError::new(path, format!("{why}, got `{shown}`"))
    };
    match by {
        "ip" => Ok(KeyBy::Ip),
        "route" => Ok(KeyBy::Route),
        _ => {
            if let Some(name) = by.strip_prefix("claim:") {
                if name.is_empty() || name.trim() != name {
                    return Err(bad("expected a claim name after `claim:`"));
                }
                Ok(KeyBy::Claim(name.to_string()))
            } else if let Some(name) = by.strip_prefix("header:") {
                if name.is_empty() || !http::is_token(name) {
                    return Err(bad(
                        "expected a header name (RFC 9110 token) after `header:`",
                    ));
                }
                Ok(KeyBy::Header(name.to_ascii_lowercase()))
            } else {
                Err(bad(
                    "expected `ip`, `route`, `claim:<name>` or `header:<name>`",
                ))
            }
        }
    }
}

const KIND_ANONYMOUS: u8 = 0;
const KIND_IP: u8 = 1;
const KIND_ROUTE: u8 = 2;
const KIND_CLAIM: u8 = 3;
const KIND_CLAIM_JSON: u8 = 4;
const KIND_HEADER: u8 = 5;

/// What [`super::QuotaPolicy::caller_key`] may look at, gathered by the filter.
pub struct KeyInputs<'a> {
    /// The client address, as returned by [`client_ip`] (an `ip:port` form is
    /// accepted too; the port is ignored).
    pub client_ip: Option<&'a str>,
    /// Verified claims, if the request carried a valid token.
    pub claims: Option<&'a Claims>,
    /// Request header lookup by lowercase name (first value, or all values joined
    /// by `,`). Called only for `by: header:<name>`.
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

impl fmt::Debug for KeyInputs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never prints claim values.
        f.debug_struct("KeyInputs")
            .field("client_ip", &self.client_ip)
            .field("claims", &self.claims.map(|c| c.len()))
            .finish_non_exhaustive()
    }
}

/// A caller's identity for one route's quota: its slot and fingerprint (a keyed
/// hash; the raw value is not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallerKey {
    pub(super) slot: u32,
    pub(super) fingerprint: u64,
    anonymous: bool,
}

impl CallerKey {
    /// Derives the caller's key from the request for route `route` with `slots`
    /// slots. A missing value (claim, header, address) gives the route's anonymous
    /// key (see the module docs).
    pub(super) fn derive(
        by: &KeyBy,
        route: &str,
        hash_key: (u64, u64),
        slots: u32,
        inputs: &KeyInputs<'_>,
    ) -> CallerKey {
        let mut h = SipHasher24::new(hash_key.0, hash_key.1);
        write_field(&mut h, route.as_bytes());
        let found = match by {
            KeyBy::Route => {
                h.write(&[KIND_ROUTE]);
                true
            }
            KeyBy::Ip => match inputs.client_ip.and_then(parse_ip) {
                Some(ip) => {
                    h.write(&[KIND_IP]);
                    match ip {
                        IpAddr::V4(v4) => h.write(&v4.octets()),
                        IpAddr::V6(v6) => h.write(&v6.octets()),
                    }
                    true
                }
                None => false,
            },
            KeyBy::Claim(name) => match inputs.claims.and_then(|c| lookup_claim(c, name)) {
                Some(value) => {
                    match scalar_text(value) {
                        Some(text) => {
                            h.write(&[KIND_CLAIM]);
                            h.write(text.as_bytes());
                        }
                        // Arrays and objects: their canonical JSON text (serde_json
                        // maps are sorted), tagged apart from strings.
                        None => {
                            h.write(&[KIND_CLAIM_JSON]);
                            h.write(value.to_string().as_bytes());
                        }
                    }
                    true
                }
                None => false,
            },
            KeyBy::Header(name) => match (inputs.header)(name) {
                Some(value) => {
                    h.write(&[KIND_HEADER]);
                    h.write(value.as_bytes());
                    true
                }
                None => false,
            },
        };
        if !found {
            h.write(&[KIND_ANONYMOUS]);
        }
        let hash = h.finish();
        // Multiply-shift maps the hash onto 0..slots without modulo bias.
        let slot = ((u128::from(hash) * u128::from(slots.max(1))) >> 64) as u32;
        CallerKey {
            slot,
            fingerprint: hash,
            anonymous: !found,
        }
    }

    /// A key with this slot and fingerprint (tests of slot sharing).
    #[cfg(test)]
    pub(crate) fn for_tests(slot: u32, fingerprint: u64) -> CallerKey {
        CallerKey {
            slot,
            fingerprint,
            anonymous: false,
        }
    }

    /// Slot index in the route's table.
    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    /// 64-bit keyed hash identifying the caller within the route.
    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// True if the request had no value for `by` and counts in the route's
    /// anonymous bucket.
    pub(crate) fn is_anonymous(&self) -> bool {
        self.anonymous
    }
}

/// The client address for `by: ip`, canonical (`1.2.3.4`, `2001:db8::1`;
/// IPv4-mapped IPv6 as IPv4), or `None` if there is none (then the request is
/// counted as anonymous).
///
/// `source_address` is Envoy's `source.address` attribute (`127.0.0.1:54321`,
/// `[::1]:5432`). With `trusted_hops == 0` (default) it is the answer and
/// `X-Forwarded-For` is ignored. With `N` trusted hops, the answer is the `N`th
/// entry from the right of `xff` (all `X-Forwarded-For` lines joined by `,` in
/// order): the entries to its right were appended by the trusted proxies, and it was
/// appended by the farthest one, so the client cannot choose it. If Envoy itself
/// appends to `X-Forwarded-For` (`use_remote_address: true`), that append is one of
/// the `N`. If the header has fewer than `N` entries (the request bypassed a proxy)
/// or the `N`th is not an address, the answer falls back to `source_address`:
/// never to an entry the client wrote.
pub fn client_ip(
    source_address: Option<&str>,
    xff: Option<&str>,
    trusted_hops: u32,
) -> Option<String> {
    let from_xff = match (trusted_hops, xff) {
        (0, _) | (_, None) => None,
        (n, Some(xff)) => xff.rsplit(',').nth(n as usize - 1).and_then(parse_ip),
    };
    from_xff
        .or_else(|| source_address.and_then(parse_ip))
        .map(|ip| ip.to_string())
}

/// Parses `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]` or `[::1]:80`; canonical form.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let ip = if let Ok(sa) = text.parse::<SocketAddr>() {
        sa.ip()
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else {
        text.strip_prefix('[')?
            .strip_suffix(']')?
            .parse::<IpAddr>()
            .ok()?
    };
    Some(ip.to_canonical())
}

/// Hashes a length-prefixed field, so `("ab", "c")` and `("a", "bc")` differ.
/// SipHash-2-4 of `bytes` under `hash_key`.
pub(super) fn keyed_hash(hash_key: (u64, u64), bytes: &[u8]) -> u64 {
    let mut h = SipHasher24::new(hash_key.0, hash_key.1);
    write_field(&mut h, bytes);
    h.finish()
}

fn write_field(h: &mut SipHasher24, bytes: &[u8]) {
    h.write(&(bytes.len() as u64).to_le_bytes());
    h.write(bytes);
}

/// The 128-bit SipHash key derived from `quota_settings.key_salt`.
pub(super) fn derive_hash_key(salt: &[u8]) -> (u64, u64) {
    let half = |label: u8| {
        let mut h = SipHasher24::new(DEFAULT_HASH_KEY.0, DEFAULT_HASH_KEY.1);
        h.write(&[label]);
        h.write(salt);
        h.finish()
    };
    (half(0), half(1))
}

/// SipHash-2-4 (Aumasson & Bernstein), written out so the slot of a caller is the
/// same in every worker and across Rust versions (std's hasher promises neither).
#[derive(Debug, Clone)]
pub(super) struct SipHasher24 {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
    tail: u64,
    ntail: u32,
    length: u64,
}

impl SipHasher24 {
    pub(super) fn new(k0: u64, k1: u64) -> Self {
        SipHasher24 {
            v0: k0 ^ 0x736f_6d65_7073_6575,
            v1: k1 ^ 0x646f_7261_6e64_6f6d,
            v2: k0 ^ 0x6c79_6765_6e65_7261,
            v3: k1 ^ 0x7465_6462_7974_6573,
            tail: 0,
            ntail: 0,
            length: 0,
        }
    }

    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    fn compress(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.round();
        self.v0 ^= m;
    }

    pub(super) fn write(&mut self, bytes: &[u8]) {
        self.length = self.length.wrapping_add(bytes.len() as u64);
        let mut rest = bytes;
        // Fill a pending partial word first.
        while self.ntail != 0 {
            let Some((&b, more)) = rest.split_first() else {
                return;
            };
            self.push_byte(b);
            rest = more;
        }
        let mut words = rest.chunks_exact(8);
        for w in &mut words {
            let m = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            self.compress(m);
        }
        for &b in words.remainder() {
            self.push_byte(b);
        }
    }

    fn push_byte(&mut self, b: u8) {
        self.tail |= u64::from(b) << (8 * self.ntail);
        self.ntail += 1;
        if self.ntail == 8 {
            let m = self.tail;
            self.compress(m);
            self.tail = 0;
            self.ntail = 0;
        }
    }

    pub(super) fn finish(mut self) -> u64 {
        let last = ((self.length & 0xff) << 56) | self.tail;
        self.compress(last);
        self.v2 ^= 0xff;
        for _ in 0..4 {
            self.round();
        }
        self.v0 ^ self.v1 ^ self.v2 ^ self.v3
    }
}
