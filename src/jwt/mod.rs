//! JWT authentication core: providers, key sets, token extraction, verification,
//! the verified-token cache and the compiled per-route [`AuthPolicy`].
//!
//! Everything here is pure: no proxy-wasm call, time passed in as `now` (Unix
//! seconds), the request seen through the small [`RequestTokens`] trait. The root
//! and HTTP contexts drive it:
//!
//! 1. `on_configure`: [`Providers::compile`] (inline keys are parsed here), then one
//!    [`AuthPolicy::compile`] per route with `auth`; a new [`AuthState`] (key store
//!    and token cache) from the providers.
//! 2. Timer tick: [`KeyStore::due_fetches`] → one `dispatch_http_call` per
//!    [`keystore::FetchRequest`]; its answer goes to [`KeyStore::on_fetch_response`].
//!    Until the first key set of a remote provider arrives, its tokens fail closed
//!    with [`Rejection::KeysUnavailable`](crate::reply::Rejection::KeysUnavailable).
//! 3. Request headers (after the filter has removed every client copy of the headers
//!    any provider sets): [`AuthPolicy::authenticate`]; on success
//!    [`AuthPolicy::authorize`] with the route's path parameters, then apply
//!    [`auth::AuthOutcome::set_headers`] and [`auth::AuthOutcome::strip`]
//!    ([`remove_query_params`], [`remove_cookies`]). On failure send
//!    [`auth::AuthFailure::rejection`], count [`auth::AuthFailure::reason`] for
//!    [`auth::AuthFailure::provider`], and if [`auth::AuthFailure::refetch_keys`] call
//!    [`KeyStore::request_refetch_unknown_kid`].
//!
//! # Why not jwt-simple's verifier
//! jwt-simple's `verify_token` decodes the payload into its own claims struct before
//! it reports anything, so it cannot tell "signature valid, payload not a JSON object"
//! (RFC 7519 §7.2 step 10) from a bad signature, accepts what its struct accepts
//! (e.g. it has its own rules for `crit`, `aud` and time types) and chooses the key
//! by the token's header. [`verify`] instead implements RFC 7515 §5.2 step by step and
//! checks the signature over the exact `header.payload` bytes: with Envoy's
//! BoringSSL through the `verify_signature` foreign function ([`hostsig`]) for RS*,
//! ES256, ES384 and ES512 where the host passed its check, otherwise with `ring`
//! (HMAC, RSA, ES256, ES384, EdDSA) and, for what ring lacks, the RustCrypto curves
//! jwt-simple is built on (`k256` for ES256K) plus `p521` for ES512. jwt-simple
//! remains useful to the tests as an independent implementation that mints tokens.
//!
//! # Security rules in one place
//! - The algorithm is fixed by the key ([`jwks`]): the token's `alg` must equal the
//!   key's, so an HMAC key never verifies an RSA/EC token and the reverse;
//!   `alg: none` is never accepted.
//! - Size caps come before any decoding: [`MAX_TOKEN_BYTES`] for the token,
//!   [`verify::MAX_HEADER_BYTES`] for the decoded header.
//! - Nothing here panics on any input; nothing logs a token, a key or a claim value.

mod auth;
mod cache;
mod extract;
pub mod hostsig;
pub mod jwks;
mod keystore;
mod provider;
pub mod standin;
pub mod verify;

#[cfg(test)]
pub(crate) mod testkeys;

pub use auth::AuthPolicy;
pub use cache::TokenCache;
pub use extract::{remove_cookies, remove_query_params, RequestTokens};
pub use hostsig::Verifier;
pub use jwks::{KeyRules, KeySet};
pub use keystore::KeyStore;
pub use provider::Providers;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use std::cell::RefCell;

/// Authentication state of one worker's VM, shared by the root context (which
/// fetches key sets into it) and every request (which verifies against it). A new
/// configuration gets a new one: fresh key store, empty cache.
pub struct AuthState {
    /// Current key sets and the fetch schedule.
    pub keys: RefCell<KeyStore>,
    /// Verified-token cache.
    pub cache: RefCell<TokenCache>,
    /// Which backend verifies which signatures (`signature_backend`).
    pub verifier: Verifier,
}

impl AuthState {
    /// The state for `providers` at `now` (Unix seconds): inline key sets loaded,
    /// remote ones due for their first fetch; signatures checked as `verifier` says.
    pub fn new(providers: &Providers, now: u64, verifier: Verifier) -> AuthState {
        AuthState {
            keys: RefCell::new(KeyStore::new(providers, now)),
            cache: RefCell::new(TokenCache::default()),
            verifier,
        }
    }
}

/// Largest token accepted, in bytes, checked before anything is decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Strict base64url (RFC 7515 §2): URL-safe alphabet, no padding, no whitespace,
/// unused trailing bits zero (so every byte string has exactly one encoding).
pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// base64url for key documents: as [`b64url_decode`], but tolerates `=` padding and
/// non-zero unused trailing bits, which some key publishers emit. Key documents come
/// from the configuration or the identity provider, never from the client.
pub(crate) fn b64url_decode_lenient(s: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(s).ok()
}

/// base64url without padding.
#[cfg(test)]
pub(crate) fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
