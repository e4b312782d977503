//! The mask actions applied to one selected value, and the hash definition.
//!
//! What each action does with each kind of JSON value:
//! - `remove`: the member (key included) or array element is deleted, whatever
//!   its value.
//! - `redact`: the value, whatever it is (`null`, objects and arrays included),
//!   becomes the string `"[REDACTED]"`.
//! - `keep_last` (`n`): a string keeps its last `n` characters; a number or
//!   boolean is first taken as its JSON text as written (`4111111111111111`,
//!   `-12.50`, `true`) and becomes a masked string; an object or array becomes
//!   `"[REDACTED]"` (the tail of its JSON text would be meaningless and could
//!   leak); `null` stays `null`.
//! - `hash`: strings, numbers, booleans, objects and arrays become the hex
//!   string defined below; `null` stays `null`.
//! - `cloak` (`kind`): a string or an integer becomes a token of its text
//!   (`crate::cloak`), so the integer `42` comes back as `42`; `null` and the
//!   empty string stay (nothing to hide, and no path segment is empty); any other
//!   value, and a value over `cloak::MAX_VALUE_BYTES`, becomes `"[REDACTED]"`. On
//!   a `per_caller` route a caller without `sub` gets `"[REDACTED]"`: a token
//!   bound to nobody would open for every such caller.
//!
//! `keep_last` counts Unicode scalar values (not bytes, not grapheme clusters); a
//! value of at most `n` characters stays as it is, and each hidden character
//! becomes one `*`, so the length is preserved. `null` is left alone by
//! `keep_last` and `hash`: there is nothing to hide, and a hash of `null` would be
//! a constant that says the same thing.
//!
//! **Hash.** `hash` writes the lowercase hex of
//! `HMAC-SHA-256(key = mask_salt as UTF-8, message = canonical JSON of the value)`:
//! a keyed hash, so without the salt nobody can test guesses against it, and the
//! same value always gives the same hex, so records stay joinable across
//! responses and routes. The canonical JSON of a string is the string in double
//! quotes with RFC 8785 escaping (`\"`, `\\`, `\b \f \n \r \t`, other control
//! characters as `\u00xx`; nothing else escaped), whatever escapes the upstream
//! used. Numbers are taken exactly as written (`1.0` and `1` differ; re-formatting
//! would lose precision of large numbers). Objects are written without
//! whitespace, members sorted by key in UTF-16 code-unit order (RFC 8785 §3.2.3),
//! duplicate keys kept. To reproduce: for the string `alice`,
//! `printf '%s' '"alice"' | openssl dgst -sha256 -hmac "$MASK_SALT"`.

/// What a `redact` (and `keep_last` on an object or array) writes.
pub const REDACTED: &str = "[REDACTED]";

/// Minimum length of `mask_salt` in bytes: 128 bits, so the salt cannot be
/// guessed and used to test candidate values against the hashes.
pub const MIN_SALT_BYTES: usize = 16;

/// A compiled mask action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Delete the member or element.
    Remove,
    /// Replace with [`REDACTED`].
    Redact,
    /// Salted hash.
    Hash,
    /// Keep the last `n` characters.
    KeepLast(u32),
    /// A token of the kind at this index of the policy's kinds.
    Cloak(u16),
}

impl Action {
    /// When several rules select the same value, the most protective wins:
    /// `remove`, then `redact`, then `cloak` (reversible only by the filter), then
    /// `hash`, then `keep_last` with the smallest `n`; of two `cloak` rules, the first.
    pub(crate) fn protects_more_than(self, other: Action) -> bool {
        fn rank(a: Action) -> (u8, u32) {
            match a {
                Action::Remove => (4, 0),
                Action::Redact => (3, 0),
                Action::Cloak(_) => (2, 0),
                Action::Hash => (1, 0),
                Action::KeepLast(n) => (0, u32::MAX - n),
            }
        }
        rank(self) > rank(other)
    }
}

/// `text` with all but the last `n` characters replaced by `*`.
pub(crate) fn keep_last(text: &str, n: u32) -> String {
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    let total = text.chars().count();
    let hidden = total.saturating_sub(n);
    let mut out = String::with_capacity(text.len());
    out.extend(std::iter::repeat_n('*', hidden));
    out.extend(text.chars().skip(hidden));
    out
}

pub(crate) use crate::json::push_string as push_json_string;

/// `text` as a JSON string.
pub(crate) fn json_string(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    push_json_string(&mut out, text);
    out
}

/// HMAC-SHA-256 (RFC 2104) with the key schedule done once: ring's key keeps the
/// inner and outer hash states after the padded key, so each value costs two
/// SHA-256 compressions fewer. `Debug` does not show the key.
#[derive(Clone)]
pub(crate) struct KeyedHash(ring::hmac::Key);

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHash(<salt>)")
    }
}

impl KeyedHash {
    /// Keys the hash with `key` (a key longer than the 64-byte block is hashed
    /// first, as RFC 2104 §2 says).
    pub(crate) fn new(key: &[u8]) -> Self {
        KeyedHash(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key))
    }

    /// HMAC-SHA-256 of `message`.
    pub(crate) fn mac(&self, message: &[u8]) -> ring::hmac::Tag {
        ring::hmac::sign(&self.0, message)
    }

    /// The replacement of a hashed value: `"` + lowercase hex MAC of the
    /// canonical JSON + `"`.
    pub(crate) fn hash_json(&self, canonical: &[u8]) -> Vec<u8> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = Vec::with_capacity(66);
        out.push(b'"');
        for &byte in self.mac(canonical).as_ref() {
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        }
        out.push(b'"');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_last_counts_characters() {
        let cases = [
            ("4111111111111111", 4, "************1111"),
            ("1234", 4, "1234"),
            ("12", 4, "12"),
            ("", 4, ""),
            ("abc", 0, "***"),
            ("ñandú€😀x", 2, "******😀x"),
        ];
        for (input, n, want) in cases {
            assert_eq!(keep_last(input, n), want, "{input} {n}");
        }
    }

    #[test]
    fn json_string_matches_serde_json() {
        for s in [
            "plain",
            "q\"b\\s",
            "\u{0}\u{1f}\u{7f}\n\t\r\u{8}\u{c}",
            "é😀/<>",
            "\u{2028}",
        ] {
            let ours = String::from_utf8(json_string(s)).unwrap_or_default();
            assert_eq!(ours, serde_json::to_string(s).unwrap_or_default(), "{s:?}");
        }
    }

    #[test]
    fn keyed_hash_is_hmac_sha256() {
        let hex = |v: Vec<u8>| String::from_utf8(v).unwrap_or_default();
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            hex(KeyedHash::new(b"Jefe").hash_json(b"what do ya want for nothing?")),
            "\"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843\""
        );
        // RFC 4231 test case 6: a 131-byte key is hashed first.
        assert_eq!(
            hex(KeyedHash::new(&[0xaa; 131])
                .hash_json(b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "\"60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54\""
        );
        // RFC 4231 test case 3 (a 20-byte key, 50 bytes of 0xdd), and the key is
        // reusable.
        let k = KeyedHash::new(&[0xaa; 20]);
        for _ in 0..2 {
            assert_eq!(
                hex(k.hash_json(&[0xdd; 50])),
                "\"773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe\""
            );
        }
        assert_eq!(
            format!("{:?}", KeyedHash::new(b"secret")),
            "KeyedHash(<salt>)"
        );
    }

    #[test]
    fn most_protective_action_wins() {
        use Action::*;
        assert!(Remove.protects_more_than(Redact));
        assert!(Redact.protects_more_than(Cloak(0)));
        assert!(Cloak(0).protects_more_than(Hash));
        assert!(!Cloak(1).protects_more_than(Cloak(0)));
        assert!(Redact.protects_more_than(Hash));
        assert!(Hash.protects_more_than(KeepLast(0)));
        assert!(KeepLast(2).protects_more_than(KeepLast(4)));
        assert!(!KeepLast(4).protects_more_than(KeepLast(4)));
    }
}
