//! The key store: the current key set of every provider, and the fetch schedule of
//! remote ones. Pure: the glue asks it what to fetch ([`KeyStore::due_fetches`]),
//! performs the `dispatch_http_call`s, and hands back the answers
//! ([`KeyStore::on_fetch_response`]).
//!
//! Policy for remote key sets:
//! - The first fetch is due at once (configure time); then every `refresh_seconds`.
//! - A failed fetch (no response, non-200, body over [`MAX_JWKS_BODY_BYTES`], not
//!   JSON, not a JWKS, no usable key) keeps the last good key set and is retried
//!   after 1, 2, 4, ... seconds, at most [`MAX_RETRY_SECONDS`] and at most
//!   `refresh_seconds`.
//! - A JWKS with some unusable keys is accepted with the usable ones; the refused keys
//!   are counted in a warning (never their material). `oct` keys are always refused
//!   from a remote set.
//! - A token with an unknown `kid` may bring the next fetch forward, at most once per
//!   [`UNKNOWN_KID_REFETCH_SECONDS`] per provider, so a flood of made-up kids cannot
//!   turn the filter into a load generator against the identity provider.
//! - Until the first key set arrives, the provider has no keys and its tokens fail
//!   closed with `KeysUnavailable` (503).
//! - A fetch with no answer after its timeout plus 5 s counts as failed.

use crate::jwt::jwks::{parse_jwks, KeyRules, KeySet};
use crate::jwt::provider::{
    parse_api_keys, ApiKey, ApiKeys, KeySource, Kind, Providers, RemoteJwks,
};
use std::collections::BTreeMap;
use std::rc::Rc;

/// Smallest interval between two unknown-`kid` refetches of one provider, seconds.
pub const UNKNOWN_KID_REFETCH_SECONDS: u64 = 30;
/// Longest wait before retrying a failed fetch, seconds.
pub const MAX_RETRY_SECONDS: u64 = 60;
/// Largest JWKS document accepted, bytes.
pub const MAX_JWKS_BODY_BYTES: usize = 512 * 1024;
/// Grace after `timeout_ms` before a fetch with no answer is considered lost.
const LOST_FETCH_GRACE_SECONDS: u64 = 5;

/// One JWKS fetch to perform with `dispatch_http_call` (`GET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Provider the answer is for: pass it back to [`KeyStore::on_fetch_response`].
    pub provider: String,
    /// Envoy cluster to call.
    pub cluster: String,
    /// `:authority` header.
    pub authority: String,
    /// `:path` header.
    pub path: String,
    /// Timeout for the call.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone)]
struct RemoteState {
    cfg: RemoteJwks,
    /// The document is an API key document (`{"keys": [{"id", "sha256", ...}]}`),
    /// not a JWKS.
    api_keys: bool,
    rules: KeyRules,
    next_fetch_at: u64,
    in_flight_since: Option<u64>,
    last_success_at: Option<u64>,
    last_kid_refetch_at: Option<u64>,
    failures: u32,
}

#[derive(Debug, Clone)]
struct Entry {
    keys: Option<Rc<KeySet>>,
    /// The last good key document of a remote `api_key` provider.
    api_keys: Option<Rc<Vec<ApiKey>>>,
    generation: u64,
    remote: Option<RemoteState>,
}

/// The keys of one provider, as seen by a request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyLookup<'a> {
    /// Keys are there. `generation` changes whenever they are replaced, which
    /// invalidates cached verifications.
    Ready { keys: &'a KeySet, generation: u64 },
    /// A remote provider whose first key set has not arrived (or a provider this
    /// store does not know): fail closed.
    Unavailable,
}

/// Current key sets of all providers plus the remote fetch schedule. One per worker
/// (per Wasm VM), owned by the root context.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    entries: BTreeMap<String, Entry>,
}

impl KeyStore {
    /// A store for `providers`: inline providers ready, remote ones due for a fetch now.
    pub fn new(providers: &Providers, now: u64) -> KeyStore {
        let mut entries = BTreeMap::new();
        for p in providers.iter() {
            let entry = match &p.keys {
                KeySource::Inline(keys) => Entry {
                    keys: Some(Rc::clone(keys)),
                    api_keys: None,
                    generation: 0,
                    remote: None,
                },
                KeySource::Remote(cfg) => Entry {
                    keys: None,
                    api_keys: None,
                    generation: 0,
                    remote: Some(RemoteState {
                        cfg: cfg.clone(),
                        api_keys: matches!(p.kind, Kind::ApiKey(ApiKeys::Remote(_))),
                        rules: p.key_rules,
                        next_fetch_at: now,
                        in_flight_since: None,
                        last_success_at: None,
                        last_kid_refetch_at: None,
                        failures: 0,
                    }),
                },
            };
            entries.insert(p.name().to_string(), entry);
        }
        KeyStore { entries }
    }

    /// Fetches to start now. Each returned provider is marked in flight until
    /// [`KeyStore::on_fetch_response`] (or until its timeout plus 5 s has passed).
    pub fn due_fetches(&mut self, now: u64) -> Vec<FetchRequest> {
        let mut out = Vec::new();
        for (name, entry) in &mut self.entries {
            let Some(r) = entry.remote.as_mut() else {
                continue;
            };
            if let Some(since) = r.in_flight_since {
                let lost_at = since
                    .saturating_add(r.cfg.timeout_ms.div_ceil(1000))
                    .saturating_add(LOST_FETCH_GRACE_SECONDS);
                if now < lost_at {
                    continue;
                }
                log::warn!("key fetch for provider {name}: no answer; retrying");
                r.in_flight_since = None;
                r.failures = r.failures.saturating_add(1);
                r.next_fetch_at = now;
            }
            if now >= r.next_fetch_at {
                r.in_flight_since = Some(now);
                out.push(FetchRequest {
                    provider: name.clone(),
                    cluster: r.cfg.cluster.clone(),
                    authority: r.cfg.authority.clone(),
                    path: r.cfg.path.clone(),
                    timeout_ms: r.cfg.timeout_ms,
                });
            }
        }
        out
    }

    /// Takes the answer to a fetch: `status` is the HTTP status (`None` when the call
    /// failed or timed out), `body` the response body.
    ///
    /// `Ok(n)`: the new key set with `n` keys replaced the old one. `Err(reason)`: the
    /// last good key set (if any) stays; `reason` is safe to log (it never quotes the
    /// body). The next attempt is scheduled either way.
    pub fn on_fetch_response(
        &mut self,
        provider: &str,
        status: Option<u32>,
        body: &[u8],
        now: u64,
    ) -> Result<usize, String> {
        let Some(entry) = self.entries.get_mut(provider) else {
            return Err(format!("unknown provider `{provider}`"));
        };
        let Some(r) = entry.remote.as_mut() else {
            return Err(format!("provider `{provider}` has inline keys"));
        };
        r.in_flight_since = None;
        if r.api_keys {
            let parsed = parse_api_key_answer(status, body);
            let n = parsed.as_ref().map(Vec::len).map_err(Clone::clone);
            if let Ok(keys) = parsed {
                entry.api_keys = Some(Rc::new(keys));
            }
            r.schedule(n.is_ok(), now);
            return n;
        }
        match parse_answer(status, body, &r.rules) {
            Ok((keys, skipped)) => {
                let n = keys.len();
                if skipped > 0 {
                    log::warn!(
                        "jwks for provider {provider}: {skipped} unusable key(s) skipped, {n} kept"
                    );
                }
                entry.keys = Some(Rc::new(keys));
                entry.generation = entry.generation.wrapping_add(1);
                r.schedule(true, now);
                Ok(n)
            }
            Err(reason) => {
                r.schedule(false, now);
                Err(reason)
            }
        }
    }

    /// A token named a `kid` the provider's keys lack: bring the next fetch forward,
    /// unless one is in flight or one was requested this way in the last
    /// [`UNKNOWN_KID_REFETCH_SECONDS`]. True if a fetch was scheduled (it is returned
    /// by the next [`KeyStore::due_fetches`]). Inline providers: always false.
    pub fn request_refetch_unknown_kid(&mut self, provider: &str, now: u64) -> bool {
        let Some(r) = self
            .entries
            .get_mut(provider)
            .and_then(|e| e.remote.as_mut())
        else {
            return false;
        };
        if r.in_flight_since.is_some()
            || r.last_kid_refetch_at
                .is_some_and(|t| now < t.saturating_add(UNKNOWN_KID_REFETCH_SECONDS))
        {
            return false;
        }
        r.last_kid_refetch_at = Some(now);
        r.next_fetch_at = r.next_fetch_at.min(now);
        true
    }

    /// Seconds since a remote provider's key set was fetched (for a gauge); `None`
    /// for inline providers and before the first successful fetch.
    pub fn key_set_age(&self, provider: &str, now: u64) -> Option<u64> {
        let r = self.entries.get(provider)?.remote.as_ref()?;
        r.last_success_at.map(|t| now.saturating_sub(t))
    }

    /// Names of the remote providers.
    pub fn remote_providers(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|(_, e)| e.remote.is_some())
            .map(|(n, _)| n.as_str())
    }

    /// The earliest time a fetch will be due; `None` without remote providers.
    #[cfg(test)]
    fn next_fetch_at(&self) -> Option<u64> {
        self.entries
            .values()
            .filter_map(|e| e.remote.as_ref())
            .map(|r| r.next_fetch_at)
            .min()
    }

    /// The current key document of a remote `api_key` provider; `None` before the
    /// first one arrives.
    pub(crate) fn api_keys(&self, provider: &str) -> Option<&[ApiKey]> {
        self.entries
            .get(provider)?
            .api_keys
            .as_deref()
            .map(Vec::as_slice)
    }

    pub(crate) fn lookup(&self, provider: &str) -> KeyLookup<'_> {
        match self.entries.get(provider) {
            Some(Entry {
                keys: Some(keys),
                generation,
                ..
            }) => KeyLookup::Ready {
                keys,
                generation: *generation,
            },
            _ => KeyLookup::Unavailable,
        }
    }
}

impl RemoteState {
    /// After an answer: the next fetch at the refresh period, or after back-off.
    fn schedule(&mut self, ok: bool, now: u64) {
        if ok {
            self.failures = 0;
            self.last_success_at = Some(now);
            self.next_fetch_at = now.saturating_add(self.cfg.refresh_seconds);
        } else {
            self.failures = self.failures.saturating_add(1);
            let backoff = 1u64
                .checked_shl(self.failures.saturating_sub(1).min(16))
                .unwrap_or(MAX_RETRY_SECONDS)
                .min(MAX_RETRY_SECONDS)
                .min(self.cfg.refresh_seconds)
                .max(1);
            self.next_fetch_at = now.saturating_add(backoff);
        }
    }
}

/// Validates a fetched API key document, `{"keys": [{"id", "sha256", "claims"}]}`:
/// every entry must be valid, as in the configuration, or the whole document is
/// refused (a half-read list would silently lock out the keys it dropped).
fn parse_api_key_answer(status: Option<u32>, body: &[u8]) -> Result<Vec<ApiKey>, String> {
    let doc = answer_json(status, body, "key document")?;
    let keys = doc
        .as_object()
        .and_then(|o| o.get("keys"))
        .ok_or_else(|| "the key document has no `keys`".to_string())?;
    parse_api_keys(keys, "keys").map_err(|e| e.to_string())
}

/// The JSON of a fetched document (`what`: "JWKS document", "key document"), or
/// why the answer is unusable: no response, a status other than 200, too large,
/// not JSON.
fn answer_json(status: Option<u32>, body: &[u8], what: &str) -> Result<serde_json::Value, String> {
    match status {
        None => return Err("no response (connection failure or timeout)".to_string()),
        Some(200) => {}
        Some(s) => return Err(format!("HTTP status {s}")),
    }
    if body.len() > MAX_JWKS_BODY_BYTES {
        return Err(format!(
            "{what} is {} bytes; at most {MAX_JWKS_BODY_BYTES} are accepted",
            body.len()
        ));
    }
    serde_json::from_slice(body).map_err(|_| format!("the {what} is not JSON"))
}

/// Validates a fetch answer; returns the usable keys and how many were skipped.
fn parse_answer(
    status: Option<u32>,
    body: &[u8],
    rules: &KeyRules,
) -> Result<(KeySet, usize), String> {
    let doc = answer_json(status, body, "JWKS document")?;
    let parsed = parse_jwks(&doc, rules).map_err(|e| format!("not a JWKS document: {e}"))?;
    if parsed.keys.is_empty() {
        let first = parsed
            .rejected
            .first()
            .map(|i| format!("; first: {i}"))
            .unwrap_or_default();
        return Err(format!(
            "no usable key ({} refused{first})",
            parsed.rejected.len()
        ));
    }
    Ok((parsed.keys, parsed.rejected.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderConfig;
    use crate::jwt::jwks::Algorithm;
    use crate::jwt::testkeys;
    use serde_json::json;

    fn providers() -> Providers {
        let cfg: BTreeMap<String, ProviderConfig> = serde_json::from_value(json!({
            "inl": {"issuer": "i", "jwks": {"inline": testkeys::jwks(&[Algorithm::ES256])}},
            "rem": {"issuer": "r", "jwks": {"remote": {"cluster": "idp", "authority": "idp.example.com",
                     "path": "/jwks", "refresh_seconds": 300, "timeout_ms": 1500}}}
        }))
        .unwrap();
        Providers::compile(&cfg).unwrap()
    }

    fn body(algs: &[Algorithm]) -> Vec<u8> {
        testkeys::jwks(algs).to_string().into_bytes()
    }

    #[test]
    fn first_fetch_is_due_at_once_and_keys_fail_closed_until_then() {
        let mut ks = KeyStore::new(&providers(), 1000);
        assert!(matches!(ks.lookup("inl"), KeyLookup::Ready { .. }));
        assert!(matches!(ks.lookup("rem"), KeyLookup::Unavailable));
        assert!(matches!(ks.lookup("nope"), KeyLookup::Unavailable));
        assert_eq!(ks.next_fetch_at(), Some(1000));
        let due = ks.due_fetches(1000);
        assert_eq!(
            due,
            vec![FetchRequest {
                provider: "rem".into(),
                cluster: "idp".into(),
                authority: "idp.example.com".into(),
                path: "/jwks".into(),
                timeout_ms: 1500,
            }]
        );
        assert!(ks.due_fetches(1001).is_empty(), "in flight");
        assert_eq!(
            ks.on_fetch_response(
                "rem",
                Some(200),
                &body(&[Algorithm::RS256, Algorithm::ES384]),
                1002
            ),
            Ok(2)
        );
        assert!(matches!(
            ks.lookup("rem"),
            KeyLookup::Ready { generation: 1, .. }
        ));
        assert_eq!(ks.key_set_age("rem", 1010), Some(8));
        assert_eq!(ks.key_set_age("inl", 1010), None);
        assert!(ks.due_fetches(1301).is_empty());
        assert_eq!(ks.due_fetches(1302).len(), 1);
        assert_eq!(ks.remote_providers().collect::<Vec<_>>(), vec!["rem"]);
    }

    #[test]
    fn failures_keep_the_last_good_keys_and_back_off() {
        let mut ks = KeyStore::new(&providers(), 0);
        ks.due_fetches(0);
        assert_eq!(
            ks.on_fetch_response("rem", Some(200), &body(&[Algorithm::ES256]), 0),
            Ok(1)
        );
        let failures: Vec<(Option<u32>, Vec<u8>, &str)> = vec![
            (None, vec![], "no response"),
            (Some(503), vec![], "HTTP status 503"),
            (Some(200), b"<html>".to_vec(), "not JSON"),
            (
                Some(200),
                b"{\"nokeys\":1}".to_vec(),
                "not a JWKS document: keys: missing",
            ),
            (
                Some(200),
                br#"{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#
                    .to_vec(),
                "no usable key (1 refused; first: keys[0]: symmetric",
            ),
            (
                Some(200),
                vec![b' '; MAX_JWKS_BODY_BYTES + 1],
                "at most 524288",
            ),
        ];
        let mut now = 300;
        let mut waits = Vec::new();
        for (status, b, want) in failures {
            assert_eq!(ks.due_fetches(now).len(), 1, "{want}");
            let e = ks.on_fetch_response("rem", status, &b, now).err().unwrap();
            assert!(e.contains(want), "{e} vs {want}");
            assert!(
                matches!(ks.lookup("rem"), KeyLookup::Ready { generation: 1, .. }),
                "kept"
            );
            let next = ks.next_fetch_at().unwrap();
            waits.push(next - now);
            now = next;
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32]);
        assert_eq!(ks.key_set_age("rem", now), Some(now));
    }

    #[test]
    fn partially_bad_remote_sets_keep_the_good_keys() {
        let mut ks = KeyStore::new(&providers(), 0);
        ks.due_fetches(0);
        let doc = json!({"keys": [testkeys::jwk_for(Algorithm::ES256), {"kty": "RSA", "n": "AQAB", "e": "AQAB"}, testkeys::hs256_jwk(None)]});
        assert_eq!(
            ks.on_fetch_response("rem", Some(200), doc.to_string().as_bytes(), 0),
            Ok(1)
        );
    }

    #[test]
    fn unknown_kid_refetch_is_rate_limited() {
        let mut ks = KeyStore::new(&providers(), 0);
        ks.due_fetches(0);
        ks.on_fetch_response("rem", Some(200), &body(&[Algorithm::ES256]), 0)
            .unwrap();
        assert!(!ks.request_refetch_unknown_kid("inl", 10));
        assert!(ks.request_refetch_unknown_kid("rem", 10));
        assert!(
            !ks.request_refetch_unknown_kid("rem", 11),
            "already scheduled within 30 s"
        );
        assert_eq!(ks.due_fetches(10).len(), 1);
        assert!(!ks.request_refetch_unknown_kid("rem", 45), "in flight");
        ks.on_fetch_response("rem", Some(200), &body(&[Algorithm::ES256]), 12)
            .unwrap();
        assert!(!ks.request_refetch_unknown_kid("rem", 39));
        assert!(ks.request_refetch_unknown_kid("rem", 40));
        assert_eq!(ks.due_fetches(40).len(), 1);
    }

    #[test]
    fn a_lost_fetch_is_retried() {
        let mut ks = KeyStore::new(&providers(), 0);
        assert_eq!(ks.due_fetches(0).len(), 1);
        assert!(ks.due_fetches(6).is_empty());
        assert_eq!(
            ks.due_fetches(7).len(),
            1,
            "timeout 1.5 s -> 2 s + 5 s grace"
        );
        assert!(ks.on_fetch_response("inl", Some(200), b"", 7).is_err());
        assert!(ks.on_fetch_response("zzz", Some(200), b"", 7).is_err());
    }
}

#[cfg(test)]
mod api_key_tests {
    use super::*;
    use crate::config::ProviderConfig;
    use crate::jwt::provider::{api_key_digest, find_api_key};
    use serde_json::json;

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn store() -> KeyStore {
        let cfg: BTreeMap<String, ProviderConfig> = serde_json::from_value(json!({
            "k": {"api_key": {"remote": {"cluster": "keys", "path": "/keys.json", "refresh_seconds": 100}}}
        }))
        .unwrap();
        KeyStore::new(&Providers::compile(&cfg).unwrap(), 0)
    }

    fn doc(keys: &[(&str, &str)]) -> Vec<u8> {
        let keys: Vec<_> = keys
            .iter()
            .map(|(id, k)| json!({"id": id, "sha256": hex(&api_key_digest(k)), "claims": {"plan": "gold"}}))
            .collect();
        serde_json::to_vec(&json!({ "keys": keys })).unwrap()
    }

    fn knows(s: &KeyStore, key: &str) -> Option<String> {
        let list = s.api_keys("k")?;
        find_api_key(list, &api_key_digest(key))
            .and_then(|c| c.get("key_id").and_then(|v| v.as_str()).map(str::to_string))
    }

    #[test]
    fn fetched_keys_replace_the_old_ones_and_failures_keep_them() {
        let mut s = store();
        assert!(s.api_keys("k").is_none());
        let due = s.due_fetches(0);
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].cluster.as_str(), due[0].path.as_str()),
            ("keys", "/keys.json")
        );
        assert_eq!(
            s.on_fetch_response("k", Some(200), &doc(&[("a", "key-a")]), 0),
            Ok(1)
        );
        assert_eq!(knows(&s, "key-a").as_deref(), Some("a"));
        assert!(s.due_fetches(99).is_empty());
        assert_eq!(s.due_fetches(100).len(), 1);
        // A failed or invalid answer keeps the last good document and backs off.
        let bad: Vec<(Option<u32>, Vec<u8>)> = vec![
            (None, Vec::new()),
            (Some(500), doc(&[("b", "key-b")])),
            (Some(200), b"not json".to_vec()),
            (Some(200), b"{\"keys\": []}".to_vec()),
            (Some(200), b"{\"kys\": []}".to_vec()),
            (
                Some(200),
                br#"{"keys": [{"id": "x", "sha256": "00"}]}"#.to_vec(),
            ),
            (Some(200), vec![b' '; MAX_JWKS_BODY_BYTES + 1]),
        ];
        let mut now = 100;
        for (i, (status, body)) in bad.iter().enumerate() {
            let err = s.on_fetch_response("k", *status, body, now).unwrap_err();
            assert!(!err.contains("key-b"), "{err}");
            assert_eq!(knows(&s, "key-a").as_deref(), Some("a"), "case {i}");
            let wait = (1u64 << i).min(MAX_RETRY_SECONDS);
            assert!(s.due_fetches(now + wait - 1).is_empty(), "case {i}");
            assert_eq!(s.due_fetches(now + wait).len(), 1, "case {i}");
            now += wait;
        }
        assert_eq!(
            s.on_fetch_response("k", Some(200), &doc(&[("b", "key-b")]), now),
            Ok(1)
        );
        assert_eq!(knows(&s, "key-b").as_deref(), Some("b"));
        assert_eq!(knows(&s, "key-a"), None);
        assert!(matches!(s.lookup("k"), KeyLookup::Unavailable));
    }
}
