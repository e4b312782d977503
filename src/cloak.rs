//! Identifier cloaking: object ids leave in responses as opaque tokens (the mask
//! action `cloak`) and come back as path parameters, which the filter turns into
//! the real ids before anything reads them (`routes[].cloak`).
//!
//! **Construction.** A token is deterministic authenticated encryption of the value
//! under `cloak_key`, bound to a kind and, with `per_caller`, to the caller's `sub`:
//! SIV (Rogaway and Shrimpton's synthetic-IV composition, as in RFC 5297 and
//! RFC 8452) over ring's ChaCha20-Poly1305.
//!
//! ```text
//! enc_key  = HKDF-Expand(PRK = cloak_key, info = "api-guard cloak encryption", 32)
//! mac_key  = HKDF-Expand(PRK = cloak_key, info = "api-guard cloak nonce", 32)
//! context  = len(kind) as 1 byte || kind || 0x00                      (not per caller)
//!          | len(kind) as 1 byte || kind || 0x01 || len(sub) as u32 BE || sub
//! nonce    = HMAC-SHA-256(mac_key, context || value)[..12]
//! sealed   = ChaCha20-Poly1305(enc_key, nonce, plaintext = value, aad = context)
//! token    = base64url, no padding (nonce || ciphertext || 16-byte tag)
//! ```
//!
//! The nonce is a pseudorandom function of everything the token stands for, so one
//! (kind, caller, value) always gives one token, and two different inputs share a
//! nonce only by a 96-bit collision: nonce reuse, the failure of a deterministic
//! AEAD, cannot be provoked by choosing values. Opening checks the Poly1305 tag
//! (which covers the kind and caller through the additional data), then derives
//! the nonce again from the decrypted value, and it must be the token's: a token
//! that was not made by this construction under this key, for this kind and
//! caller, is refused, whatever bytes were changed. Both keys come from
//! `cloak_key` with one HKDF-Expand block each (`cloak_key` is random, so it
//! serves as the pseudorandom key).
//!
//! ChaCha20-Poly1305 rather than AES: ring's AES-GCM costs 15.4 KB of the module
//! (constant-time AES without hardware support is large), the `aes-siv` crate
//! 14.3 KB and `aes-gcm-siv` 13.2 KB; ring's ChaCha20-Poly1305 6.3 KB.
//!
//! Nothing here logs, and no error carries a value, a token or a key.

use crate::config::check;
use crate::config::ConfigError;
use crate::route::{self, NormalizedPath, Params, PathTemplate};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::{aead, hmac};
use serde_json::Value;
use std::rc::Rc;

/// Accepted lengths of a decoded `cloak_key`, in bytes.
pub const KEY_LENGTHS: [usize; 2] = [32, 64];
/// Most keys in a `cloak_key` list (the current one and previous ones): each
/// costs one more decryption on every refused token.
pub const MAX_KEYS: usize = 5;
/// Longest value that is cloaked, in bytes (longer ones are redacted): ids are
/// short, and a token must fit in a path segment.
pub const MAX_VALUE_BYTES: usize = 512;

const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// Longest token that can open: one of a [`MAX_VALUE_BYTES`] value. Longer input
/// is refused before it is decoded.
pub const MAX_TOKEN_CHARS: usize = (MAX_VALUE_BYTES + NONCE_BYTES + TAG_BYTES).div_ceil(3) * 4;

/// One key's derived pair.
struct Key {
    aead: aead::LessSafeKey,
    mac: hmac::Key,
}

/// The keys of `cloak_key`, derived once at configure time. Tokens are made with
/// the first; any of them opens one, so tokens issued before a rotation keep
/// working while the previous key is listed.
pub struct CloakKeys {
    keys: Vec<Key>,
}

impl std::fmt::Debug for CloakKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CloakKeys({} key(s))", self.keys.len())
    }
}

/// base64url without padding (RFC 4648 §5). Written out: the crate's generic
/// encoder costs 2 KB of module, and the filter encodes nothing else.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        // A chunk of n bytes gives n + 1 characters.
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(bits >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

impl Key {
    fn new(secret: &[u8]) -> Option<Key> {
        // HKDF-Expand (RFC 5869 §2.3) of one 32-byte block is HMAC(PRK, info || 0x01).
        let prk = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let enc = hmac::sign(&prk, b"api-guard cloak encryption\x01");
        let mac = hmac::sign(&prk, b"api-guard cloak nonce\x01");
        let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, enc.as_ref()).ok()?;
        Some(Key {
            aead: aead::LessSafeKey::new(unbound),
            mac: hmac::Key::new(hmac::HMAC_SHA256, mac.as_ref()),
        })
    }

    /// The synthetic nonce of `value` in `context`.
    fn nonce(&self, context: &[u8], value: &[u8]) -> Option<[u8; NONCE_BYTES]> {
        let mut msg = context.to_vec();
        msg.extend_from_slice(value);
        hmac::sign(&self.mac, &msg)
            .as_ref()
            .get(..NONCE_BYTES)?
            .try_into()
            .ok()
    }

    /// The token's bytes: `nonce || ChaCha20-Poly1305(value) || tag`.
    fn seal(&self, context: &[u8], value: &[u8]) -> Option<Vec<u8>> {
        let nonce = self.nonce(context, value)?;
        let mut out = Vec::with_capacity(NONCE_BYTES + value.len() + TAG_BYTES);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(value);
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(context),
                out.get_mut(NONCE_BYTES..)?,
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }
}

/// What a token is bound to besides the key: its kind and, per caller, the `sub`.
/// Length-prefixed, so no two (kind, caller) pairs give the same bytes.
fn context(kind: &str, caller: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(kind.len() + caller.map_or(0, str::len) + 6);
    // Kinds are at most 64 bytes (checked at configure time).
    out.push(kind.len() as u8);
    out.extend_from_slice(kind.as_bytes());
    match caller {
        None => out.push(0),
        Some(sub) => {
            out.push(1);
            out.extend_from_slice(&(sub.len() as u32).to_be_bytes());
            out.extend_from_slice(sub.as_bytes());
        }
    }
    out
}

/// Reads one key: standard base64 (as `openssl rand -base64 32` prints it) of 32
/// or 64 bytes. The message never repeats the key.
fn read_key(text: &str, field: &str) -> Result<Key, ConfigError> {
    STANDARD
        .decode(text.trim_ascii())
        .ok()
        .filter(|k| KEY_LENGTHS.contains(&k.len()))
        .and_then(|k| Key::new(&k))
        .ok_or_else(|| {
            ConfigError::new(
                field,
                "must be base64 of 32 or 64 random bytes (openssl rand -base64 32)",
            )
        })
}

impl CloakKeys {
    /// Compiles `cloak_key`: one key, or a list whose first key makes tokens;
    /// `None` without it.
    pub fn compile(cfg: Option<&Value>) -> Result<Option<Rc<CloakKeys>>, ConfigError> {
        let list = match cfg {
            None => return Ok(None),
            Some(Value::Array(list)) => list.as_slice(),
            Some(key) => std::slice::from_ref(key),
        };
        if !(1..=MAX_KEYS).contains(&list.len()) {
            return Err(ConfigError::new("cloak_key", "a list holds 1 to 5 keys"));
        }
        let mut keys = Vec::with_capacity(list.len());
        for key in list {
            keys.push(read_key(key.as_str().unwrap_or_default(), "cloak_key")?);
        }
        Ok(Some(Rc::new(CloakKeys { keys })))
    }

    /// The token of `value` (at most [`MAX_VALUE_BYTES`]) under the current key;
    /// `None` if the value is too long.
    pub fn cloak(&self, kind: &str, caller: Option<&str>, value: &str) -> Option<String> {
        if value.len() > MAX_VALUE_BYTES {
            return None;
        }
        let sealed = self
            .keys
            .first()?
            .seal(&context(kind, caller), value.as_bytes())?;
        Some(b64url(&sealed))
    }

    /// The value `token` stands for, if it is a token of this kind and caller under
    /// one of the keys; `None` for anything else (a raw id, another kind's or
    /// caller's token, a changed byte, another key, bad base64, any length).
    pub fn decloak(&self, kind: &str, caller: Option<&str>, token: &str) -> Option<String> {
        if token.len() > MAX_TOKEN_CHARS {
            return None;
        }
        // Strict: no padding, unused bits zero, so each token has one spelling.
        let bytes = crate::jwt::b64url_decode(token)?;
        // No value is empty: an empty path segment would change the route.
        if bytes.len() <= NONCE_BYTES + TAG_BYTES {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let context = context(kind, caller);
        for key in &self.keys {
            let mut buf = sealed.to_vec();
            let n = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
            let Ok(value) = key
                .aead
                .open_in_place(n, aead::Aad::from(&context), &mut buf)
            else {
                continue;
            };
            // The tag authenticated nonce, kind, caller and value; the nonce must
            // also be the one derived from the value, as only `cloak` makes it.
            if key.nonce(&context, value)? != nonce {
                return None;
            }
            return String::from_utf8(value.to_vec()).ok();
        }
        None
    }
}

/// A route's `cloak` section, compiled.
#[derive(Debug)]
pub struct RouteCloak {
    keys: Rc<CloakKeys>,
    /// (parameter, its segment in the template, kind).
    params: Vec<(String, usize, String)>,
    /// Tokens issued and accepted on the route are bound to the caller's `sub`.
    pub per_caller: bool,
}

/// A kind (`shop`, `order`): 1-64 letters, digits, `-` or `_`.
pub fn is_kind(kind: &str) -> bool {
    (1..=64).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl RouteCloak {
    /// Compiles `routes[].cloak` (read as a JSON value: a derived struct costs
    /// several KB of module). `path` names the section; `authenticated`: the route
    /// has `auth` without `allow_missing`.
    pub fn compile(
        v: &Value,
        keys: Option<&Rc<CloakKeys>>,
        template: &PathTemplate,
        authenticated: bool,
        path: &str,
    ) -> Result<RouteCloak, ConfigError> {
        let err = |field: &str, message: &str| ConfigError::new(format!("{path}{field}"), message);
        let keys = keys.ok_or_else(|| err("", "needs the top-level `cloak_key`"))?;
        let map = v.as_object().ok_or_else(|| err("", "must be an object"))?;
        let mut params = Vec::new();
        let mut per_caller = false;
        for (name, value) in map {
            match (name.as_str(), value) {
                ("params", Value::Object(kinds)) => {
                    for (p, kind) in kinds {
                        match (kind.as_str(), template.param_segment(p)) {
                            (Some(kind), Some(segment)) if is_kind(kind) => {
                                params.push((p.clone(), segment, kind.to_string()));
                            }
                            _ => {
                                return Err(err(
                                    &format!(".params.{}", check::clip(p)),
                                    "must be a `{name}` parameter of the template, mapped to its kind; a kind is 1-64 letters, digits, '-' or '_'",
                                ))
                            }
                        }
                    }
                }
                ("per_caller", Value::Bool(b)) => per_caller = *b,
                _ => {
                    return Err(err(
                        &format!(".{}", check::clip(name)),
                        "expected `params` (parameters to kinds) or `per_caller` (a boolean)",
                    ))
                }
            }
        }
        if per_caller && !authenticated {
            return Err(err(
                ".per_caller",
                "needs `auth` without `allow_missing`: tokens are bound to the caller's `sub`",
            ));
        }
        Ok(RouteCloak {
            keys: keys.clone(),
            params,
            per_caller,
        })
    }

    /// True if the route has cloaked parameters (else it only binds the tokens it
    /// issues to the caller).
    pub fn accepts(&self) -> bool {
        !self.params.is_empty()
    }

    /// Turns each cloaked path parameter into its real value: in `params` (what
    /// `bind` and blocking rules read) and in `path` (what the upstream gets).
    /// False if one is not a valid token for this route and caller (then the
    /// request is refused, and what was rewritten so far is not used).
    pub fn decloak(
        &self,
        caller: Option<&str>,
        params: &mut Params,
        path: &mut NormalizedPath,
    ) -> bool {
        self.open(caller, params, path).is_some()
    }

    fn open(
        &self,
        caller: Option<&str>,
        params: &mut Params,
        path: &mut NormalizedPath,
    ) -> Option<()> {
        let caller = match (self.per_caller, caller) {
            (false, _) => None,
            (true, Some(sub)) => Some(sub),
            // Without a `sub` no token of this caller exists.
            (true, None) => return None,
        };
        for (name, segment, kind) in &self.params {
            let (_, value) = params.iter_mut().find(|(n, _)| **n == **name)?;
            let real = self.keys.decloak(kind, caller, value)?;
            // Never a segment the upstream would drop or resolve.
            if real == "." || real == ".." {
                return None;
            }
            // `encoded` is `/` + each segment's wire form; a `;params` suffix
            // (paths.semicolons: strip) stays.
            let encoded = &mut path.encoded;
            let mut slashes = 0;
            let mut range = 0..encoded.len();
            for (i, b) in encoded.bytes().enumerate() {
                if b == b'/' || b == b';' {
                    if slashes == *segment + 1 {
                        range.end = i;
                        break;
                    }
                    if b == b'/' {
                        slashes += 1;
                        range.start = i + 1;
                    }
                }
            }
            if slashes != *segment + 1 {
                return None;
            }
            let mut wire = String::with_capacity(real.len());
            route::push_component(&real, &mut wire);
            encoded.replace_range(range, &wire);
            *value = real;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests;
