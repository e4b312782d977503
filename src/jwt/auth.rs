//! The compiled `routes[].auth` section: which providers a route requires, and the
//! per-request decision.
//!
//! Semantics (`docs/configuration.md`, "Authentication"):
//! - `requires` is a provider name, `{any: [...]}` or `{all: [...]}`, nestable up to
//!   [`MAX_REQUIREMENT_DEPTH`] levels.
//! - Tokens are looked for at every source of every provider the route names. Every
//!   token found must be valid, whatever the requirement (Envoy `jwt_authn` does the
//!   same): one bad token fails the request. At most [`MAX_TOKENS_PER_REQUEST`]
//!   distinct tokens are considered; more fail as malformed.
//! - A token found at a location only one provider reads is verified by that
//!   provider. A location several providers read (e.g. all use `Authorization:
//!   Bearer`) hands the token to the providers whose `issuer` equals its `iss`
//!   (read before verification only to pick the provider; verified after).
//! - The same token at several locations counts once; two different valid tokens for
//!   one provider are refused (`malformed`): which identity is meant is ambiguous.
//! - No token at all: `MissingToken` (plain 401), or, with `allow_missing`, success
//!   without claims. Tokens present but the requirement unmet (`all: [a, b]` with only
//!   `a`'s token): `MissingToken` naming the first missing provider.
//! - `allow_missing` cannot be combined with `claims` or `bind`: an anonymous request
//!   would skip the rules a token holder must pass.
//! - `peer` providers have no token: the connection's client certificate is their
//!   credential, asked for once per request, and only on routes that name one. No
//!   client certificate counts as missing; a peer none of them lists is 403 when a
//!   peer provider is what the unmet requirement lacks.
//! - `api_key` providers read keys like tokens (their locations are theirs alone);
//!   an empty key is a missing one, an unknown key is invalid like a bad token.
//! - `require_cert_binding`: a JWT provider's verified token (from the cache too)
//!   must name the client certificate's SHA-256 in `cnf["x5t#S256"]`.
//! - The "primary" identity, whose claims [`AuthPolicy::authorize`] checks, is the
//!   identity of the first provider in `requires` order that succeeded. Each verified
//!   provider sets its own `claim_to_headers` and `forward_payload_header`; when two
//!   set the same header, the first wins.

use crate::authz::{binds, lookup_claim, ClaimRule, Claims};
use crate::config::{AuthConfig, Combination, ConfigError, Requirement};
use crate::jwt::cache::TokenCache;
use crate::jwt::extract::{RequestTokens, TokenLocation};
use crate::jwt::hostsig::{Backend, Verifier};
use crate::jwt::keystore::{KeyLookup, KeyStore};
use crate::jwt::provider::{
    api_key_digest, find_api_key, match_peer, parse_sha256_hex, ApiKeys, Kind, Provider, Providers,
};
use crate::jwt::verify::{self, Checked, VerifyError};
use crate::reply::Rejection;
use base64::Engine;
use serde_json::Value;
use std::borrow::Cow;
use std::rc::Rc;

/// Most distinct tokens considered in one request.
pub const MAX_TOKENS_PER_REQUEST: usize = 4;
/// Deepest nesting of `any`/`all`.
pub const MAX_REQUIREMENT_DEPTH: usize = 8;
/// Longest header value set from a claim; longer values are not forwarded.
pub const MAX_CLAIM_HEADER_BYTES: usize = 8 * 1024;

/// A compiled requirement; providers are indexes into [`AuthPolicy`]'s list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Provider(usize),
    Any(Vec<Req>),
    All(Vec<Req>),
}

impl Req {
    fn satisfied(&self, verified: &[bool]) -> bool {
        match self {
            Req::Provider(i) => verified.get(*i).copied().unwrap_or(false),
            Req::Any(v) => v.iter().any(|r| r.satisfied(verified)),
            Req::All(v) => v.iter().all(|r| r.satisfied(verified)),
        }
    }

    /// The first provider whose token would help satisfy the requirement.
    fn first_missing(&self, verified: &[bool]) -> Option<usize> {
        match self {
            Req::Provider(i) => (!verified.get(*i).copied().unwrap_or(false)).then_some(*i),
            Req::Any(v) | Req::All(v) => {
                if self.satisfied(verified) {
                    None
                } else {
                    v.iter().find_map(|r| r.first_missing(verified))
                }
            }
        }
    }
}

/// One verified token's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedIdentity {
    /// The provider that verified it.
    pub provider: String,
    /// Its claims.
    pub claims: Rc<Claims>,
    /// True if the verification came from the [`TokenCache`].
    pub from_cache: bool,
}

/// What to remove from the request before it goes upstream (`forward: false`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StripPlan {
    /// Request headers to remove (lowercase).
    pub headers: Vec<String>,
    /// Query parameters to remove: rewrite `:path` with
    /// [`remove_query_params`](crate::jwt::remove_query_params).
    pub query_params: Vec<String>,
    /// Cookies to remove: rewrite `cookie` with
    /// [`remove_cookies`](crate::jwt::remove_cookies).
    pub cookies: Vec<String>,
}

/// A successful authentication.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthOutcome {
    /// Claims of the primary identity; `None` only under `allow_missing` without token.
    pub claims: Option<Rc<Claims>>,
    /// Provider of the primary identity.
    pub provider: Option<String>,
    /// Every verified token, in `requires` order of their providers.
    pub identities: Vec<VerifiedIdentity>,
    /// Headers to set on the request (`claim_to_headers`, `forward_payload_header`),
    /// lowercase names. Set, not append: client copies were removed beforehand.
    pub set_headers: Vec<(String, String)>,
    /// Token locations to remove (`forward: false`).
    pub strip: StripPlan,
    /// Every signature check made for the request (cache hits make none): the
    /// provider and the backend, for its `signature.*` counters.
    pub signatures: Vec<(String, Backend)>,
}

/// A failed authentication or authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// What to answer (via [`Rejection::render`]); boxed, so a `Result` with this
    /// error stays small on the path that succeeds.
    pub rejection: Box<Rejection>,
    /// Provider for the metric label; `None` from [`AuthPolicy::authorize`] (label it
    /// with [`AuthOutcome::provider`]).
    pub provider: Option<String>,
    /// Metric reason: `missing`, `malformed`, `bad_signature`, `expired`,
    /// `not_yet_valid`, `issuer`, `audience`, `unknown_kid`, `claims`, `bind`,
    /// `keys_unavailable`, `cert_binding`, `peer` or `unknown_key`.
    pub reason: &'static str,
    /// The token named an unknown `kid` of a remote provider: call
    /// [`KeyStore::request_refetch_unknown_kid`] for [`AuthFailure::provider`].
    pub refetch_keys: bool,
    /// As [`AuthOutcome::signatures`]: the checks made before the failure.
    pub signatures: Vec<(String, Backend)>,
}

/// The compiled `auth` section of one route.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    requirement: Req,
    providers: Vec<Rc<Provider>>,
    allow_missing: bool,
    claim_rules: Vec<ClaimRule>,
    bind: Vec<(String, String)>,
}

/// What the route's token sources found in the request.
#[derive(Default)]
struct Found {
    tokens: Vec<FoundToken>,
    /// Locations of non-forwarding providers that hold an unreadable credential.
    unreadable: Vec<TokenLocation>,
}

/// A token found in the request.
struct FoundToken {
    token: String,
    locations: Vec<TokenLocation>,
    /// Providers (indexes) that read the locations it was found at.
    finders: Vec<usize>,
}

impl AuthPolicy {
    /// Compiles `routes[i].auth`. `route_params` are the parameter names of the route's
    /// path template; `path` is the field path of the section (`routes[0].auth`).
    ///
    /// Errors: `routes[0].auth.requires: unknown provider `x``,
    /// `routes[0].auth.requires.any: must not be empty`, `routes[0].auth.bind.shop:
    /// path parameter `shop` is not in the route template`, claim rule errors
    /// (`routes[0].auth.claims.roles.any_of: must not be empty`), and
    /// `routes[0].auth.allow_missing: ...` when combined with `claims` or `bind`.
    pub fn compile(
        cfg: &AuthConfig,
        providers: &Providers,
        route_params: &[String],
        path: &str,
    ) -> Result<AuthPolicy, ConfigError> {
        let mut list = Vec::new();
        let requirement = compile_req(
            &cfg.requires,
            providers,
            &mut list,
            &format!("{path}.requires"),
            0,
        )?;
        let mut claim_rules = Vec::new();
        for (name, cond) in &cfg.claims {
            claim_rules.push(ClaimRule::compile(
                name,
                cond,
                &format!("{path}.claims.{name}"),
            )?);
        }
        let mut bind = Vec::new();
        for (param, claim) in &cfg.bind {
            let at = format!("{path}.bind.{param}");
            if !route_params.iter().any(|p| p == param) {
                return Err(ConfigError::new(
                    at,
                    format!("path parameter `{param}` is not in the route template"),
                ));
            }
            if claim.is_empty() {
                return Err(ConfigError::new(at, "claim name must not be empty"));
            }
            bind.push((param.clone(), claim.clone()));
        }
        if cfg.allow_missing && !(claim_rules.is_empty() && bind.is_empty()) {
            return Err(ConfigError::new(
                format!("{path}.allow_missing"),
                "cannot be combined with `claims` or `bind`: a request without a token would skip them",
            ));
        }
        Ok(AuthPolicy {
            requirement,
            providers: list,
            allow_missing: cfg.allow_missing,
            claim_rules,
            bind,
        })
    }

    /// Authenticates a request at `now` (Unix seconds). See the module documentation
    /// for the rules. Verified tokens are cached in `cache`; signatures are checked
    /// by the backends `verifier` names.
    pub fn authenticate(
        &self,
        req: &dyn RequestTokens,
        keys: &KeyStore,
        cache: &mut TokenCache,
        verifier: &Verifier,
        now: u64,
    ) -> Result<AuthOutcome, AuthFailure> {
        let mut checks = Vec::new();
        let mut result = self.authenticate_recording(req, keys, cache, verifier, now, &mut checks);
        if !checks.is_empty() {
            match &mut result {
                Ok(o) => o.signatures = checks,
                Err(f) => f.signatures = checks,
            }
        }
        result
    }

    /// [`AuthPolicy::authenticate`], recording each signature check in `checks`.
    fn authenticate_recording(
        &self,
        req: &dyn RequestTokens,
        keys: &KeyStore,
        cache: &mut TokenCache,
        verifier: &Verifier,
        now: u64,
        checks: &mut Vec<(String, Backend)>,
    ) -> Result<AuthOutcome, AuthFailure> {
        let found = self.find_tokens(req)?;
        // Per provider: (index into `found`, claims, from cache); peers have no
        // token and use `NO_TOKEN`.
        let mut verified: Vec<Option<(usize, Rc<Claims>, bool)>> = vec![None; self.providers.len()];
        let mut unlisted_peer = false;
        if self
            .providers
            .iter()
            .any(|p| matches!(p.kind, Kind::Peer(_)))
        {
            let san = req.peer_uri_san();
            for (pi, p) in self.providers.iter().enumerate() {
                let Kind::Peer(ids) = &p.kind else { continue };
                match &san {
                    // Not mutual TLS: no peer identity, as if no token was sent.
                    None => {}
                    Some(san) => match san.as_deref().and_then(|s| match_peer(ids, s)) {
                        Some(id) => {
                            let mut claims = Claims::new();
                            claims.insert("sub".to_string(), Value::String(id.to_string()));
                            if let Some(slot) = verified.get_mut(pi) {
                                *slot = Some((NO_TOKEN, Rc::new(claims), false));
                            }
                        }
                        None => unlisted_peer = true,
                    },
                }
            }
        }
        if found.tokens.is_empty() && verified.iter().all(Option::is_none) {
            if self.allow_missing {
                let mut out = AuthOutcome::default();
                strip_locations(&mut out.strip, &found.unreadable);
                return Ok(out);
            }
            let pi = self
                .requirement
                .first_missing(&vec![false; self.providers.len()])
                .unwrap_or(0);
            return Err(self.missing(pi, unlisted_peer));
        }
        // The client certificate's digest, read once and only if a token needs it.
        let mut cert: Option<Option<String>> = None;
        for (fi, f) in found.tokens.iter().enumerate() {
            let candidates = self.candidates(f)?;
            let mut first_err: Option<(usize, VerifyError)> = None;
            let mut any_ok = false;
            for &pi in candidates.iter() {
                let (mut result, backend) =
                    self.verify_for(pi, &f.token, keys, cache, verifier, now);
                if let Some(b) = backend {
                    if let Some(name) = self.provider_name(pi) {
                        checks.push((name, b));
                    }
                }
                if let (Ok((claims, _)), Some(p)) = (&result, self.providers.get(pi)) {
                    if p.require_cert_binding {
                        let digest = cert.get_or_insert_with(|| req.peer_cert_sha256());
                        if let Err(e) = check_binding(claims, digest.as_deref()) {
                            result = Err(e);
                        }
                    }
                }
                match result {
                    Ok((claims, from_cache)) => {
                        if let Some(Some((other, _, _))) = verified.get(pi) {
                            if *other != fi {
                                return Err(self.failure(
                                    pi,
                                    VerifyError::Malformed(
                                        "the request carries two different tokens for the same provider",
                                    ),
                                ));
                            }
                        }
                        if let Some(slot) = verified.get_mut(pi) {
                            *slot = Some((fi, claims, from_cache));
                        }
                        any_ok = true;
                    }
                    Err(e) => {
                        if first_err.is_none() {
                            first_err = Some((pi, e));
                        }
                    }
                }
            }
            if !any_ok {
                let (pi, e) = first_err.unwrap_or((0, VerifyError::Issuer));
                return Err(self.failure(pi, e));
            }
        }
        let ok: Vec<bool> = verified.iter().map(Option::is_some).collect();
        if let Some(pi) = self.requirement.first_missing(&ok) {
            return Err(self.missing(pi, unlisted_peer));
        }
        Ok(self.outcome(&found, &verified))
    }

    /// Checks the route's `claims` rules and `bind` against the primary identity's
    /// claims and the route's path parameters (`(name, value)` as the router
    /// extracted them). Failures are 403 with reason `claims` or `bind`; the
    /// description never names a claim value.
    pub fn authorize(
        &self,
        claims: &Claims,
        params: &[(std::sync::Arc<str>, String)],
    ) -> Result<(), AuthFailure> {
        let forbidden = |reason: &'static str, description: &str, rule: String| AuthFailure {
            rejection: Box::new(Rejection::Forbidden {
                reason,
                description: description.to_string(),
                rule,
            }),
            provider: None,
            reason,
            refetch_keys: false,
            signatures: Vec::new(),
        };
        if let Some(rule) = self.claim_rules.iter().find(|r| !r.matches(claims)) {
            return Err(forbidden(
                "claims",
                "the token's claims do not permit this request",
                format!("claims.{}", rule.claim),
            ));
        }
        for (param, claim) in &self.bind {
            let value = params.iter().find(|(k, _)| **k == **param).map(|(_, v)| v);
            if !value.is_some_and(|v| binds(claims, claim, v)) {
                return Err(forbidden(
                    "bind",
                    "the token does not grant access to this resource",
                    format!("bind.{param}"),
                ));
            }
        }
        Ok(())
    }

    /// The tokens of the request, and the locations of non-forwarding providers that
    /// hold a credential no source can read (removed before the upstream).
    fn find_tokens(&self, req: &dyn RequestTokens) -> Result<Found, AuthFailure> {
        let mut found = Found::default();
        for (pi, p) in self.providers.iter().enumerate() {
            for src in &p.sources {
                let extraction = src.extract(req);
                let loc = src.location();
                if extraction.unreadable && !p.forward && !found.unreadable.contains(&loc) {
                    found.unreadable.push(loc.clone());
                }
                for token in extraction.tokens {
                    // An empty API key is a missing one.
                    if token.is_empty() && matches!(p.kind, Kind::ApiKey(_)) {
                        if !p.forward && !found.unreadable.contains(&loc) {
                            found.unreadable.push(loc.clone());
                        }
                        continue;
                    }
                    if let Some(f) = found.tokens.iter_mut().find(|f| f.token == token) {
                        if !f.locations.contains(&loc) {
                            f.locations.push(loc.clone());
                        }
                        if !f.finders.contains(&pi) {
                            f.finders.push(pi);
                        }
                        continue;
                    }
                    if found.tokens.len() >= MAX_TOKENS_PER_REQUEST {
                        return Err(self.failure(
                            pi,
                            VerifyError::Malformed("the request carries too many tokens"),
                        ));
                    }
                    found.tokens.push(FoundToken {
                        token,
                        locations: vec![loc.clone()],
                        finders: vec![pi],
                    });
                }
            }
        }
        Ok(found)
    }

    /// The providers that should verify `f`.
    fn candidates<'f>(&self, f: &'f FoundToken) -> Result<Cow<'f, [usize]>, AuthFailure> {
        let first = f.finders.first().copied().unwrap_or(0);
        if f.finders.len() <= 1 {
            return Ok(Cow::Borrowed(&f.finders));
        }
        let iss = peek_issuer(&f.token).map_err(|e| self.failure(first, e))?;
        let picked: Vec<usize> = f
            .finders
            .iter()
            .copied()
            .filter(|pi| {
                self.providers
                    .get(*pi)
                    .is_some_and(|p| iss.as_deref() == Some(p.rules.issuer.as_str()))
            })
            .collect();
        if picked.is_empty() {
            return Err(self.failure(first, VerifyError::Issuer));
        }
        Ok(Cow::Owned(picked))
    }

    /// Verifies `token` for provider `pi`: its claims and whether they came from the
    /// cache, and the backend if a signature was checked.
    fn verify_for(
        &self,
        pi: usize,
        token: &str,
        keys: &KeyStore,
        cache: &mut TokenCache,
        verifier: &Verifier,
        now: u64,
    ) -> Checked<(Rc<Claims>, bool)> {
        let Some(p) = self.providers.get(pi) else {
            return (Err(VerifyError::KeysUnavailable), None);
        };
        match &p.kind {
            Kind::Jwt => {}
            Kind::ApiKey(source) => {
                let list = match source {
                    ApiKeys::Inline(list) => list.as_slice(),
                    ApiKeys::Remote(_) => match keys.api_keys(p.name()) {
                        Some(list) => list,
                        None => return (Err(VerifyError::KeysUnavailable), None),
                    },
                };
                let found = find_api_key(list, &api_key_digest(token));
                return (
                    found
                        .map(|c| (Rc::clone(c), false))
                        .ok_or(VerifyError::UnknownKey),
                    None,
                );
            }
            Kind::Peer(_) => return (Err(VerifyError::UnknownKey), None),
        }
        let (keys, generation) = match keys.lookup(p.name()) {
            KeyLookup::Ready { keys, generation } => (keys, generation),
            KeyLookup::Unavailable => {
                // A token that is garbage anyway is a 401, not a 503.
                let e = verify::decode(token).err();
                return (Err(e.unwrap_or(VerifyError::KeysUnavailable)), None);
            }
        };
        if let Some(claims) = cache.get(p.name(), token, generation, &p.rules, now) {
            return (Ok((claims, true)), None);
        }
        let (v, backend) = verify::verify_jwt_with(token, keys, &p.rules, now, verifier);
        let result = v.map(|v| {
            let claims = Rc::new(v.claims);
            cache.insert(
                p.name(),
                token,
                Rc::clone(&claims),
                v.times,
                generation,
                now,
            );
            (claims, false)
        });
        (result, backend)
    }

    fn provider_name(&self, pi: usize) -> Option<String> {
        self.providers.get(pi).map(|p| p.name().to_string())
    }

    fn failure(&self, pi: usize, e: VerifyError) -> AuthFailure {
        let remote = self.providers.get(pi).is_some_and(|p| p.is_remote());
        AuthFailure {
            rejection: Box::new(e.to_rejection()),
            provider: self.provider_name(pi),
            reason: e.reason(),
            refetch_keys: remote && e == VerifyError::UnknownKid,
            signatures: Vec::new(),
        }
    }

    /// Provider `pi` is missing: 401, or 403 when it is a `peer` provider and the
    /// connection's peer is not one it lists.
    fn missing(&self, pi: usize, unlisted_peer: bool) -> AuthFailure {
        let peer = self
            .providers
            .get(pi)
            .is_some_and(|p| matches!(p.kind, Kind::Peer(_)));
        if peer && unlisted_peer {
            return AuthFailure {
                rejection: Box::new(Rejection::Forbidden {
                    reason: "peer",
                    description: "the client certificate's identity is not permitted here"
                        .to_string(),
                    rule: "peer.spiffe_ids".to_string(),
                }),
                provider: self.provider_name(pi),
                reason: "peer",
                refetch_keys: false,
                signatures: Vec::new(),
            };
        }
        AuthFailure {
            rejection: Box::new(Rejection::MissingToken),
            provider: self.provider_name(pi),
            reason: "missing",
            refetch_keys: false,
            signatures: Vec::new(),
        }
    }

    fn outcome(
        &self,
        found: &Found,
        verified: &[Option<(usize, Rc<Claims>, bool)>],
    ) -> AuthOutcome {
        let mut out = AuthOutcome::default();
        for (pi, slot) in verified.iter().enumerate() {
            let (Some((fi, claims, from_cache)), Some(p)) = (slot, self.providers.get(pi)) else {
                continue;
            };
            if out.claims.is_none() {
                out.claims = Some(Rc::clone(claims));
                out.provider = Some(p.name().to_string());
            }
            out.identities.push(VerifiedIdentity {
                provider: p.name().to_string(),
                claims: Rc::clone(claims),
                from_cache: *from_cache,
            });
            for (claim, header) in &p.claim_to_headers {
                if let Some(v) = lookup_claim(claims, claim).and_then(header_value) {
                    set_once(&mut out.set_headers, header, v);
                }
            }
            if let Some(header) = &p.forward_payload_header {
                // The payload segment of the token is the base64url of the verified
                // payload bytes, exactly as signed.
                let payload = found
                    .tokens
                    .get(*fi)
                    .and_then(|f| f.token.split('.').nth(1))
                    .unwrap_or_default();
                set_once(&mut out.set_headers, header, payload.to_string());
            }
        }
        for (fi, f) in found.tokens.iter().enumerate() {
            let hidden = verified.iter().enumerate().any(|(pi, slot)| {
                slot.as_ref().is_some_and(|(i, _, _)| *i == fi)
                    && self.providers.get(pi).is_some_and(|p| !p.forward)
            });
            if hidden {
                strip_locations(&mut out.strip, &f.locations);
            }
        }
        strip_locations(&mut out.strip, &found.unreadable);
        out
    }
}

/// The `found` index of a peer identity, which comes with no token.
const NO_TOKEN: usize = usize::MAX;

/// RFC 8705 §3.1: the token's `cnf["x5t#S256"]` is the base64url SHA-256 of the
/// client certificate `digest_hex` (as Envoy reports it, hex; `None` without one).
fn check_binding(claims: &Claims, digest_hex: Option<&str>) -> Result<(), VerifyError> {
    let Some(bound) = claims
        .get("cnf")
        .and_then(|c| c.get("x5t#S256"))
        .and_then(Value::as_str)
    else {
        return Err(VerifyError::CertBinding(
            "certificate binding failed: the token has no cnf x5t#S256",
        ));
    };
    let Some(digest) = digest_hex.and_then(parse_sha256_hex) else {
        return Err(VerifyError::CertBinding(
            "certificate binding failed: the connection has no client certificate",
        ));
    };
    let ours = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    let same = ours.len() == bound.len()
        && ours
            .bytes()
            .zip(bound.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(VerifyError::CertBinding(
            "certificate binding failed: the token is bound to another certificate",
        ))
    }
}

/// Adds token locations to what is removed before the upstream.
fn strip_locations(strip: &mut StripPlan, locations: &[TokenLocation]) {
    for loc in locations {
        let (list, name) = match loc {
            TokenLocation::Header(h) => (&mut strip.headers, h),
            TokenLocation::Param(p) => (&mut strip.query_params, p),
            TokenLocation::Cookie(c) => (&mut strip.cookies, c),
        };
        if !list.contains(name) {
            list.push(name.clone());
        }
    }
}

fn set_once(headers: &mut Vec<(String, String)>, name: &str, value: String) {
    if !headers.iter().any(|(h, _)| h == name) {
        headers.push((name.to_string(), value));
    }
}

/// A claim as a header value: scalars as text, arrays of scalars joined with `,`.
/// Objects, empty values, values with control characters (header injection) or over
/// [`MAX_CLAIM_HEADER_BYTES`] give no header.
fn header_value(v: &Value) -> Option<String> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let text = match v {
        Value::Array(items) => items
            .iter()
            .filter_map(scalar)
            .collect::<Vec<_>>()
            .join(","),
        other => scalar(other)?,
    };
    let safe = !text.is_empty()
        && text.len() <= MAX_CLAIM_HEADER_BYTES
        && !text.chars().any(|c| c.is_control() && c != '\t');
    safe.then_some(text)
}

/// The unverified `iss` of a token, only to pick among providers sharing a location.
fn peek_issuer(token: &str) -> Result<Option<String>, VerifyError> {
    let jws = verify::decode(token)?;
    let claims: Claims = serde_json::from_slice(&jws.payload)
        .map_err(|_| VerifyError::Malformed("the token payload is not a JSON object"))?;
    Ok(claims
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_string))
}

fn compile_req(
    r: &Requirement,
    providers: &Providers,
    list: &mut Vec<Rc<Provider>>,
    path: &str,
    depth: usize,
) -> Result<Req, ConfigError> {
    if depth >= MAX_REQUIREMENT_DEPTH {
        return Err(ConfigError::new(
            path,
            format!("requirements nest too deeply (at most {MAX_REQUIREMENT_DEPTH} levels)"),
        ));
    }
    match r {
        Requirement::Provider(name) => {
            let Some(p) = providers.get(name) else {
                return Err(ConfigError::new(path, format!("unknown provider `{name}`")));
            };
            let idx = match list.iter().position(|x| x.name() == name) {
                Some(i) => i,
                None => {
                    list.push(Rc::clone(p));
                    list.len() - 1
                }
            };
            Ok(Req::Provider(idx))
        }
        Requirement::Combination(c) => {
            let (word, items) = match c {
                Combination::Any(v) => ("any", v),
                Combination::All(v) => ("all", v),
            };
            let at = format!("{path}.{word}");
            if items.is_empty() {
                return Err(ConfigError::new(at, "must not be empty"));
            }
            let children = items
                .iter()
                .enumerate()
                .map(|(i, r)| compile_req(r, providers, list, &format!("{at}[{i}]"), depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(match c {
                Combination::Any(_) => Req::Any(children),
                Combination::All(_) => Req::All(children),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderConfig;
    use crate::jwt::extract::tests::FakeRequest;
    use crate::jwt::jwks::Algorithm;
    use crate::jwt::testkeys::{self, mint};
    use serde_json::json;
    use std::collections::BTreeMap;

    const NOW: u64 = 1_700_000_000;

    /// Providers:
    /// - `main`: ES256 inline, issuer `https://main/`, audience `orders-api`, Bearer
    ///   header (default), `access_token` param, `session` cookie, `forward: false`,
    ///   `sub` -> `x-user-id`, `roles` -> `x-roles`, `realm.tier` -> `x-tier`,
    ///   payload -> `x-jwt-payload`.
    /// - `partner`: HS256 inline, issuer `https://partner/`, Bearer header too.
    /// - `side`: EdDSA inline, issuer `https://side/`, header `x-side-token`.
    /// - `remote`: remote JWKS, issuer `https://remote/`, header `x-remote-token`.
    fn providers() -> Providers {
        let cfg: BTreeMap<String, ProviderConfig> = serde_json::from_value(json!({
            "main": {
                "issuer": "https://main/", "audiences": ["orders-api"],
                "jwks": {"inline": testkeys::jwks(&[Algorithm::ES256])},
                "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                "from_params": ["access_token"], "from_cookies": ["session"],
                "forward": false,
                "claim_to_headers": [{"claim": "sub", "header": "X-User-Id"}, {"claim": "roles", "header": "x-roles"},
                                     {"claim": "realm.tier", "header": "x-tier"}],
                "forward_payload_header": "x-jwt-payload"
            },
            "partner": {"issuer": "https://partner/", "jwks": {"inline": testkeys::jwks(&[Algorithm::HS256])},
                        "claim_to_headers": [{"claim": "sub", "header": "x-user-id"}]},
            "side": {"issuer": "https://side/", "jwks": {"inline": testkeys::jwks(&[Algorithm::EdDSA])},
                     "from_headers": [{"name": "x-side-token"}]},
            "remote": {"issuer": "https://remote/", "jwks": {"remote": {"cluster": "idp", "path": "/jwks"}},
                       "from_headers": [{"name": "x-remote-token"}]}
        }))
        .unwrap();
        Providers::compile(&cfg).unwrap()
    }

    fn policy(auth: Value) -> AuthPolicy {
        let cfg: AuthConfig = serde_json::from_value(auth).unwrap();
        AuthPolicy::compile(&cfg, &providers(), &["shop".to_string()], "routes[0].auth").unwrap()
    }

    fn compile_err(auth: Value) -> String {
        let cfg: AuthConfig = serde_json::from_value(auth).unwrap();
        AuthPolicy::compile(&cfg, &providers(), &["shop".to_string()], "routes[0].auth")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    /// `{"iss": "https://main/", "aud": "orders-api", "sub": "alice", "roles": ["clerk", "admin"],
    ///   "realm": {"tier": "gold"}, "shop_id": "s1", "exp": NOW + 600}`
    fn main_token() -> String {
        mint(
            Algorithm::ES256,
            Some("es256"),
            &json!({
                "iss": "https://main/", "aud": "orders-api", "sub": "alice", "roles": ["clerk", "admin"],
                "realm": {"tier": "gold"}, "shop_id": "s1", "exp": NOW + 600
            }),
        )
    }

    /// `{"iss": "https://partner/", "sub": "bob", "exp": NOW + 600}`
    fn partner_token() -> String {
        mint(
            Algorithm::HS256,
            Some("hs256"),
            &json!({"iss": "https://partner/", "sub": "bob", "exp": NOW + 600}),
        )
    }

    /// `{"iss": "https://side/", "sub": "carol", "exp": NOW + 600}`
    fn side_token() -> String {
        mint(
            Algorithm::EdDSA,
            Some("eddsa"),
            &json!({"iss": "https://side/", "sub": "carol", "exp": NOW + 600}),
        )
    }

    fn run(p: &AuthPolicy, req: &FakeRequest) -> Result<AuthOutcome, AuthFailure> {
        let keys = KeyStore::new(&providers(), NOW);
        p.authenticate(
            req,
            &keys,
            &mut TokenCache::new(16),
            &Verifier::module(),
            NOW,
        )
    }

    fn bearer(t: &str) -> FakeRequest {
        FakeRequest::new().header("authorization", &format!("Bearer {t}"))
    }

    fn reason(
        r: Result<AuthOutcome, AuthFailure>,
    ) -> Result<Option<String>, (&'static str, Option<String>, u32)> {
        r.map(|o| o.provider)
            .map_err(|f| (f.reason, f.provider, f.rejection.status()))
    }

    #[test]
    fn a_good_token_yields_claims_headers_and_strip_plan() {
        let p = policy(json!({"requires": "main"}));
        let token = main_token();
        let req = bearer(&token).query("access_token=");
        // The empty access_token parameter is a second, malformed token: all must be valid.
        assert_eq!(
            reason(run(&p, &req)),
            Err(("malformed", Some("main".into()), 401))
        );
        let req = bearer(&token).header("cookie", &format!("theme=dark; session={token}"));
        let out = run(&p, &req).unwrap();
        assert_eq!(out.provider.as_deref(), Some("main"));
        assert_eq!(
            out.claims.as_ref().and_then(|c| c.get("sub")),
            Some(&json!("alice"))
        );
        let payload = token.split('.').nth(1).unwrap().to_string();
        assert_eq!(
            out.set_headers,
            vec![
                ("x-user-id".to_string(), "alice".to_string()),
                ("x-roles".to_string(), "clerk,admin".to_string()),
                ("x-tier".to_string(), "gold".to_string()),
                ("x-jwt-payload".to_string(), payload),
            ]
        );
        assert_eq!(
            out.strip,
            StripPlan {
                headers: vec!["authorization".into()],
                query_params: vec![],
                cookies: vec!["session".into()]
            }
        );
        assert_eq!(out.identities.len(), 1);
    }

    #[test]
    fn missing_and_allow_missing() {
        let p = policy(json!({"requires": "main"}));
        let f = run(&p, &FakeRequest::new()).unwrap_err();
        assert_eq!(*f.rejection, Rejection::MissingToken);
        assert_eq!((f.reason, f.provider.as_deref()), ("missing", Some("main")));
        // A non-Bearer Authorization header is no token for this provider.
        assert!(run(
            &p,
            &FakeRequest::new().header("authorization", "Basic eA==")
        )
        .is_err_and(|f| f.reason == "missing"));

        let open = policy(json!({"requires": "main", "allow_missing": true}));
        let out = run(&open, &FakeRequest::new()).unwrap();
        assert_eq!(out, AuthOutcome::default());
        // ... but a bad token still fails.
        let f = run(&open, &bearer("x.y.z")).unwrap_err();
        assert_eq!((f.reason, f.rejection.status()), ("malformed", 401));
        assert!(run(&open, &bearer(&main_token())).is_ok());
    }

    #[test]
    fn unreadable_credentials_never_reach_the_upstream_unverified() {
        let open = policy(json!({"requires": "main", "allow_missing": true}));
        // In the provider's own scheme, whatever the blanks: verified, so refused.
        for value in [
            "Bearer\tforged.x.y",
            "bearer \t forged.x.y",
            "Bearer",
            "Bearer \t",
        ] {
            let req = FakeRequest::new().header("authorization", value);
            let f = run(&open, &req).unwrap_err();
            assert_eq!(
                (f.reason, f.rejection.status()),
                ("malformed", 401),
                "{value:?}"
            );
        }
        // After a `;` or in another case in the query: found, verified, refused.
        for query in ["a=1;access_token=forged", "ACCESS_TOKEN=forged"] {
            let f = run(&open, &FakeRequest::new().query(query)).unwrap_err();
            assert_eq!(f.reason, "malformed", "{query}");
        }
        // Another scheme: no token, but `main` does not forward, so it is removed.
        for value in ["Basic YTpi", "Bearerx.y.z", "x.y.z"] {
            let req = FakeRequest::new().header("authorization", value);
            let out = run(&open, &req).unwrap();
            assert_eq!(out.claims, None);
            assert_eq!(out.strip.headers, ["authorization"], "{value:?}");
        }
        let req = FakeRequest::new()
            .header("authorization", "Basic YTpi")
            .header("cookie", &format!("session={}", main_token()));
        let out = run(&open, &req).unwrap();
        assert!(out.claims.is_some());
        assert_eq!(out.strip.headers, ["authorization"]);
        assert_eq!(out.strip.cookies, ["session"]);
        // `partner` forwards: a credential it cannot read is the upstream's business.
        let forwarding = policy(json!({"requires": "partner", "allow_missing": true}));
        let req = FakeRequest::new().header("authorization", "Basic YTpi");
        assert_eq!(run(&forwarding, &req).unwrap(), AuthOutcome::default());
    }

    #[test]
    fn invalid_tokens_table() {
        let p = policy(json!({"requires": "main"}));
        let claims = |extra: Value| {
            let mut c =
                json!({"iss": "https://main/", "aud": "orders-api", "sub": "a", "exp": NOW + 600});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        let cases: Vec<(&str, String, (&str, u32))> = vec![
            (
                "expired",
                mint(
                    Algorithm::ES256,
                    Some("es256"),
                    &claims(json!({"exp": NOW - 3600})),
                ),
                ("expired", 401),
            ),
            (
                "not yet valid",
                mint(
                    Algorithm::ES256,
                    Some("es256"),
                    &claims(json!({"nbf": NOW + 3600})),
                ),
                ("not_yet_valid", 401),
            ),
            (
                "wrong issuer",
                mint(
                    Algorithm::ES256,
                    Some("es256"),
                    &claims(json!({"iss": "https://evil/"})),
                ),
                ("issuer", 401),
            ),
            (
                "wrong audience",
                mint(
                    Algorithm::ES256,
                    Some("es256"),
                    &claims(json!({"aud": "other"})),
                ),
                ("audience", 403),
            ),
            (
                "unknown kid",
                mint(Algorithm::ES256, Some("k9"), &claims(json!({}))),
                ("unknown_kid", 401),
            ),
            (
                "alg none",
                format!(
                    "{}.{}.",
                    crate::jwt::b64url_encode(br#"{"alg":"none"}"#),
                    crate::jwt::b64url_encode(claims(json!({})).to_string().as_bytes())
                ),
                ("bad_signature", 401),
            ),
            (
                "key confusion",
                mint(Algorithm::HS256, Some("es256"), &claims(json!({}))),
                ("bad_signature", 401),
            ),
            ("garbage", "garbage".to_string(), ("malformed", 401)),
        ];
        for (name, token, want) in cases {
            let f = run(&p, &bearer(&token)).unwrap_err();
            assert_eq!((f.reason, f.rejection.status()), want, "{name}");
            assert!(!f.refetch_keys, "{name}: inline providers never refetch");
            if want.1 == 401 {
                let r = f.rejection.render();
                assert!(
                    r.headers
                        .iter()
                        .any(|(k, v)| k == "www-authenticate" && v.contains("invalid_token")),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn providers_sharing_a_header_are_picked_by_issuer() {
        let p = policy(json!({"requires": {"any": ["main", "partner"]}}));
        assert_eq!(
            reason(run(&p, &bearer(&main_token()))),
            Ok(Some("main".into()))
        );
        assert_eq!(
            reason(run(&p, &bearer(&partner_token()))),
            Ok(Some("partner".into()))
        );
        let stranger = mint(
            Algorithm::HS256,
            None,
            &json!({"iss": "https://stranger/", "exp": NOW + 5}),
        );
        assert_eq!(
            reason(run(&p, &bearer(&stranger))),
            Err(("issuer", Some("main".into()), 401))
        );
        // A partner token whose signature is bad fails for partner.
        let forged = mint(
            Algorithm::ES256,
            Some("hs256"),
            &json!({"iss": "https://partner/", "exp": NOW + 5}),
        );
        assert_eq!(
            reason(run(&p, &bearer(&forged))),
            Err(("bad_signature", Some("partner".into()), 401))
        );
    }

    #[test]
    fn all_requires_every_provider_and_every_token_must_be_valid() {
        let p = policy(json!({"requires": {"all": ["main", {"any": ["side", "partner"]}]}}));
        let both = bearer(&main_token()).header("x-side-token", &side_token());
        let out = run(&p, &both).unwrap();
        assert_eq!(out.provider.as_deref(), Some("main"));
        let names: Vec<&str> = out.identities.iter().map(|i| i.provider.as_str()).collect();
        assert_eq!(names, vec!["main", "side"]);
        // Only main: side/partner missing -> plain 401 naming the first missing.
        assert_eq!(
            reason(run(&p, &bearer(&main_token()))),
            Err(("missing", Some("side".into()), 401))
        );
        // A bad extra token fails the request even though the requirement is met.
        let bad_side = bearer(&main_token()).header("x-side-token", "a.b.c");
        assert_eq!(
            reason(run(&p, &bad_side)),
            Err(("malformed", Some("side".into()), 401))
        );
    }

    #[test]
    fn two_tokens_for_one_provider_are_refused_but_one_token_twice_is_fine() {
        let p = policy(json!({"requires": "main"}));
        let t1 = main_token();
        let t2 = mint(
            Algorithm::ES256,
            Some("es256"),
            &json!({"iss": "https://main/", "aud": "orders-api", "sub": "mallory", "exp": NOW + 600}),
        );
        let two = bearer(&t1).query(&format!("access_token={t2}"));
        assert_eq!(
            reason(run(&p, &two)),
            Err(("malformed", Some("main".into()), 401))
        );
        let same = bearer(&t1).query(&format!("a=1&access_token={t1}"));
        let out = run(&p, &same).unwrap();
        assert_eq!(out.strip.headers, vec!["authorization".to_string()]);
        assert_eq!(out.strip.query_params, vec!["access_token".to_string()]);
        let many = FakeRequest::new()
            .query("access_token=1&access_token=2&access_token=3&access_token=4&access_token=5");
        assert_eq!(
            reason(run(&p, &many)),
            Err(("malformed", Some("main".into()), 401))
        );
    }

    #[test]
    fn remote_providers_fail_closed_until_keys_arrive_and_ask_for_refetch() {
        let p = policy(json!({"requires": "remote"}));
        let token = mint(
            Algorithm::RS256,
            Some("rs256"),
            &json!({"iss": "https://remote/", "exp": NOW + 600}),
        );
        let req = FakeRequest::new().header("x-remote-token", &token);
        let mut keys = KeyStore::new(&providers(), NOW);
        let mut cache = TokenCache::new(8);
        let f = p
            .authenticate(&req, &keys, &mut cache, &Verifier::module(), NOW)
            .unwrap_err();
        assert_eq!(
            (*f.rejection.clone(), f.reason),
            (Rejection::KeysUnavailable, "keys_unavailable")
        );
        assert_eq!(f.rejection.status(), 503);
        // Garbage is still a 401 while keys are missing.
        let junk = FakeRequest::new().header("x-remote-token", "junk");
        assert_eq!(
            p.authenticate(&junk, &keys, &mut cache, &Verifier::module(), NOW)
                .unwrap_err()
                .reason,
            "malformed"
        );

        keys.due_fetches(NOW);
        let jwks = testkeys::jwks(&[Algorithm::ES256]).to_string();
        assert_eq!(
            keys.on_fetch_response("remote", Some(200), jwks.as_bytes(), NOW),
            Ok(1)
        );
        let f = p
            .authenticate(&req, &keys, &mut cache, &Verifier::module(), NOW)
            .unwrap_err();
        assert_eq!(
            (f.reason, f.refetch_keys, f.provider.as_deref()),
            ("unknown_kid", true, Some("remote"))
        );
        assert!(keys.request_refetch_unknown_kid("remote", NOW));
        // Rotation: the new set has the kid.
        keys.due_fetches(NOW);
        let rotated = testkeys::jwks(&[Algorithm::ES256, Algorithm::RS256]).to_string();
        assert_eq!(
            keys.on_fetch_response("remote", Some(200), rotated.as_bytes(), NOW + 1),
            Ok(2)
        );
        assert!(p
            .authenticate(&req, &keys, &mut cache, &Verifier::module(), NOW + 1)
            .is_ok());
    }

    #[test]
    fn the_cache_serves_repeats_and_respects_time() {
        let p = policy(json!({"requires": "main"}));
        let keys = KeyStore::new(&providers(), NOW);
        let mut cache = TokenCache::new(8);
        let req = bearer(&main_token());
        let first = p
            .authenticate(&req, &keys, &mut cache, &Verifier::module(), NOW)
            .unwrap();
        assert!(!first.identities[0].from_cache);
        let second = p
            .authenticate(&req, &keys, &mut cache, &Verifier::module(), NOW + 1)
            .unwrap();
        assert!(second.identities[0].from_cache);
        assert_eq!(second.set_headers, first.set_headers);
        let late = p
            .authenticate(&req, &keys, &mut cache, &Verifier::module(), NOW + 600 + 60)
            .unwrap_err();
        assert_eq!(late.reason, "expired");
    }

    #[test]
    fn every_signature_check_is_recorded_with_its_provider_and_backend() {
        use crate::jwt::hostsig::Families;
        use crate::jwt::standin::NativeVerifySignature;
        static STAND_IN: NativeVerifySignature = NativeVerifySignature;
        let on_host = Verifier::host(&STAND_IN, Families::ALL);
        let p = policy(json!({"requires": {"all": ["main", "side"]}}));
        let keys = KeyStore::new(&providers(), NOW);
        let mut cache = TokenCache::new(8);
        let side = side_token();
        let req = bearer(&main_token()).header("x-side-token", &side);
        // ES256 on the host, EdDSA in the module.
        let out = p
            .authenticate(&req, &keys, &mut cache, &on_host, NOW)
            .unwrap();
        assert_eq!(
            out.signatures,
            vec![
                ("main".to_string(), Backend::Host),
                ("side".to_string(), Backend::Module)
            ]
        );
        // Cache hits check no signature.
        let again = p
            .authenticate(&req, &keys, &mut cache, &on_host, NOW + 1)
            .unwrap();
        assert!(again.signatures.is_empty());
        // A failure carries the checks made, also the failing one.
        let (h, _, sig) = {
            let mut parts = side.splitn(3, '.');
            (parts.next(), parts.next(), parts.next())
        };
        let forged_payload =
            crate::jwt::b64url_encode(br#"{"iss":"https://side/","sub":"mallory"}"#);
        let forged = format!(
            "{}.{forged_payload}.{}",
            h.unwrap_or_default(),
            sig.unwrap_or_default()
        );
        let req = bearer(&main_token()).header("x-side-token", &forged);
        let f = p
            .authenticate(
                &req,
                &keys,
                &mut TokenCache::new(8),
                &Verifier::module(),
                NOW,
            )
            .unwrap_err();
        assert_eq!(f.reason, "bad_signature");
        assert_eq!(
            f.signatures,
            vec![
                ("main".to_string(), Backend::Module),
                ("side".to_string(), Backend::Module)
            ]
        );
        // Refused before a signature check: nothing recorded.
        let f = p
            .authenticate(&bearer("not-a-token"), &keys, &mut cache, &on_host, NOW)
            .unwrap_err();
        assert!(f.signatures.is_empty());
    }

    #[test]
    fn authorize_checks_claims_and_bind() {
        let p = policy(
            json!({"requires": "main", "claims": {"roles": {"any_of": ["admin"]}}, "bind": {"shop": "shop_id"}}),
        );
        let out = run(&p, &bearer(&main_token())).unwrap();
        let claims = out.claims.unwrap();
        let params = |shop: &str| vec![("shop".into(), shop.to_string())];
        assert_eq!(p.authorize(&claims, &params("s1")), Ok(()));
        let f = p.authorize(&claims, &params("s2")).unwrap_err();
        assert_eq!(
            (f.reason, f.rejection.status(), f.provider),
            ("bind", 403, None)
        );
        assert_eq!(p.authorize(&claims, &[]).unwrap_err().reason, "bind");
        let strict = policy(json!({"requires": "main", "claims": {"roles": {"all_of": ["root"]}}}));
        let f = strict.authorize(&claims, &[]).unwrap_err();
        assert_eq!((f.reason, f.rejection.status()), ("claims", 403));
        if let Rejection::Forbidden { description, .. } = *f.rejection {
            assert!(!description.contains("root") && !description.contains("admin"));
        }
    }

    #[test]
    fn claim_header_values_are_sanitised() {
        assert_eq!(header_value(&json!("a")), Some("a".into()));
        assert_eq!(header_value(&json!(42)), Some("42".into()));
        assert_eq!(header_value(&json!(true)), Some("true".into()));
        assert_eq!(
            header_value(&json!(["a", 1, {"x": 1}, false])),
            Some("a,1,false".into())
        );
        assert_eq!(header_value(&json!({"a": 1})), None);
        assert_eq!(header_value(&json!("evil\r\nx-admin: 1")), None);
        assert_eq!(header_value(&json!([])), None);
        assert_eq!(
            header_value(&json!("x".repeat(MAX_CLAIM_HEADER_BYTES + 1))),
            None
        );
    }

    #[test]
    fn compile_errors_name_the_field() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"requires": "nope"}),
                "routes[0].auth.requires: unknown provider `nope`",
            ),
            (
                json!({"requires": {"any": []}}),
                "routes[0].auth.requires.any: must not be empty",
            ),
            (
                json!({"requires": {"all": ["main", {"any": ["x"]}]}}),
                "routes[0].auth.requires.all[1].any[0]: unknown provider `x`",
            ),
            (
                json!({"requires": "main", "bind": {"shopp": "shop_id"}}),
                "routes[0].auth.bind.shopp: path parameter `shopp` is not in the route template",
            ),
            (
                json!({"requires": "main", "bind": {"shop": ""}}),
                "routes[0].auth.bind.shop: claim name must not be empty",
            ),
            (
                json!({"requires": "main", "claims": {"roles": {"any_of": []}}}),
                "routes[0].auth.claims.roles.any_of: must not be empty",
            ),
            (
                json!({"requires": "main", "allow_missing": true, "claims": {"roles": {"equals": "a"}}}),
                "routes[0].auth.allow_missing: cannot be combined with `claims` or `bind`",
            ),
            (
                json!({"requires": {"any": [{"any": [{"any": [{"any": [{"any": [{"any": [{"any": [{"any": ["main"]}]}]}]}]}]}]}]}}),
                "nest too deeply",
            ),
        ];
        for (cfg, want) in cases {
            let e = compile_err(cfg.clone());
            assert!(e.contains(want), "{cfg}\n got: {e}\nwant: {want}");
        }
    }
}

/// `peer` and `api_key` providers, and certificate-bound tokens.
#[cfg(test)]
mod identity_tests {
    use super::*;
    use crate::config::ProviderConfig;
    use crate::jwt::jwks::Algorithm;
    use crate::jwt::testkeys::{self, mint};
    use serde_json::json;
    use std::collections::BTreeMap;

    const NOW: u64 = 1_700_000_000;
    const KEY: &str = "k-acme-0123456789";
    /// SHA-256 of a client certificate, as Envoy reports it (hex).
    const CERT_HEX: &str = "5d5b09f6dcb2d53a5fffc60c4ac0d55fabdf556069d6631545f42aa6e3500f2e";

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn providers() -> Providers {
        let cfg: BTreeMap<String, ProviderConfig> = serde_json::from_value(json!({
            "mesh": {"peer": {"spiffe_ids": ["spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/ops/*"]}},
            "keys": {"api_key": {"from_headers": [{"name": "x-api-key"}], "from_params": ["api_key"], "forward": false,
                                 "keys": [{"id": "acme", "sha256": hex(&api_key_digest(KEY)), "claims": {"sub": "acme", "plan": "gold"}},
                                          {"id": "other", "sha256": hex(&api_key_digest("another-key"))}]}},
            "main": {"issuer": "https://main/", "jwks": {"inline": testkeys::jwks(&[Algorithm::ES256])}},
            "bound": {"issuer": "https://bound/", "jwks": {"inline": testkeys::jwks(&[Algorithm::ES256])},
                      "from_headers": [{"name": "x-bound", "value_prefix": "Bearer "}], "require_cert_binding": true}
        }))
        .unwrap();
        Providers::compile(&cfg).unwrap()
    }

    fn policy(requires: Value) -> AuthPolicy {
        let cfg: AuthConfig = serde_json::from_value(json!({ "requires": requires })).unwrap();
        AuthPolicy::compile(&cfg, &providers(), &[], "routes[0].auth").unwrap()
    }

    use crate::jwt::extract::tests::FakeRequest as Conn;

    /// A request over mTLS from a peer with this URI SAN and the test certificate.
    fn peer(san: Option<&str>) -> Conn {
        Conn {
            san: Some(san.map(str::to_string)),
            cert: Some(CERT_HEX.to_string()),
            ..Conn::default()
        }
    }

    fn run(p: &AuthPolicy, req: &Conn) -> Result<AuthOutcome, AuthFailure> {
        let keys = KeyStore::new(&providers(), NOW);
        p.authenticate(
            req,
            &keys,
            &mut TokenCache::new(16),
            &Verifier::module(),
            NOW,
        )
    }

    /// (reason, provider, status) of a failure; the primary `sub` of a success.
    fn result(r: Result<AuthOutcome, AuthFailure>) -> Result<String, (&'static str, String, u32)> {
        r.map(|o| {
            o.claims
                .and_then(|c| c.get("sub").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default()
        })
        .map_err(|f| {
            (
                f.reason,
                f.provider.unwrap_or_default(),
                f.rejection.status(),
            )
        })
    }

    fn token(iss: &str, cnf: Option<Value>) -> String {
        let mut claims = json!({"iss": iss, "sub": "alice", "exp": NOW + 600});
        if let Some(c) = cnf {
            claims["cnf"] = c;
        }
        mint(Algorithm::ES256, Some("es256"), &claims)
    }

    fn desc(f: &AuthFailure) -> String {
        match &*f.rejection {
            Rejection::InvalidToken { description, .. } => description.clone(),
            other => format!("{other:?}"),
        }
    }

    fn thumbprint(hex_digest: &str) -> String {
        crate::jwt::b64url_encode(&parse_sha256_hex(hex_digest).unwrap())
    }

    #[test]
    fn peers_listed_wildcard_unlisted_and_absent() {
        let p = policy(json!("mesh"));
        let web = "spiffe://cluster.local/ns/shop/sa/web";
        assert_eq!(result(run(&p, &peer(Some(web)))), Ok(web.to_string()));
        let ops = "spiffe://cluster.local/ns/ops/sa/cron";
        assert_eq!(result(run(&p, &peer(Some(ops)))), Ok(ops.to_string()));
        let forbidden = Err(("peer", "mesh".to_string(), 403));
        for san in [
            Some("spiffe://cluster.local/ns/shop/sa/web2"),
            Some("spiffe://cluster.local/ns/ops/"),
            Some("spiffe://cluster.local/ns/ops"),
            Some("spiffe://cluster.local/ns/shop/sa/we"),
            None,
        ] {
            assert_eq!(result(run(&p, &peer(san))), forbidden, "{san:?}");
        }
        let missing = Err(("missing", "mesh".to_string(), 401));
        assert_eq!(result(run(&p, &Conn::default())), missing);
        // Headers never stand in for the peer.
        let spoof = Conn::default().header("x-forwarded-client-cert", &format!("URI={web}"));
        assert_eq!(result(run(&p, &spoof)), missing);
    }

    #[test]
    fn peer_properties_are_read_once_and_only_when_needed() {
        let c = peer(Some("spiffe://cluster.local/ns/shop/sa/web"));
        run(
            &policy(json!({"any": ["mesh", {"all": ["mesh", "mesh"]}]})),
            &c,
        )
        .unwrap();
        assert_eq!((c.san_reads.get(), c.cert_reads.get()), (1, 0));
        let c = peer(None).header(
            "authorization",
            &format!("Bearer {}", token("https://main/", None)),
        );
        run(&policy(json!("main")), &c).unwrap();
        assert_eq!((c.san_reads.get(), c.cert_reads.get()), (0, 0));
    }

    #[test]
    fn peers_combine_with_tokens() {
        let web = "spiffe://cluster.local/ns/shop/sa/web";
        let jwt = format!("Bearer {}", token("https://main/", None));
        let all = policy(json!({"all": ["mesh", "main"]}));
        assert_eq!(
            result(run(&all, &peer(Some(web)).header("authorization", &jwt))),
            Ok(web.to_string())
        );
        assert_eq!(
            result(run(&all, &peer(Some(web)))),
            Err(("missing", "main".to_string(), 401))
        );
        assert_eq!(
            result(run(
                &all,
                &peer(Some("spiffe://x/y")).header("authorization", &jwt)
            )),
            Err(("peer", "mesh".to_string(), 403))
        );
        assert_eq!(
            result(run(&all, &Conn::default().header("authorization", &jwt))),
            Err(("missing", "mesh".to_string(), 401))
        );
        // `any`: a valid token suffices even from an unlisted peer; the primary
        // identity is the first in `requires` order that succeeded.
        let any = policy(json!({"any": ["mesh", "main"]}));
        assert_eq!(
            result(run(
                &any,
                &peer(Some("spiffe://x/y")).header("authorization", &jwt)
            )),
            Ok("alice".to_string())
        );
        let o = run(&any, &peer(Some(web)).header("authorization", &jwt)).unwrap();
        assert_eq!(o.provider.as_deref(), Some("mesh"));
        assert_eq!(o.identities.len(), 2);
    }

    #[test]
    fn api_keys_from_header_and_param() {
        let p = policy(json!("keys"));
        let o = run(&p, &Conn::default().header("x-api-key", KEY)).unwrap();
        let claims = o.claims.unwrap();
        assert_eq!(claims.get("key_id"), Some(&json!("acme")));
        assert_eq!(claims.get("plan"), Some(&json!("gold")));
        assert_eq!(o.strip.headers, vec!["x-api-key".to_string()]);
        let q = Conn {
            query: Some(format!("a=1&api_key={KEY}")),
            ..Conn::default()
        };
        let o = run(&p, &q).unwrap();
        assert_eq!(o.strip.query_params, vec!["api_key".to_string()]);
        let other = run(&p, &Conn::default().header("x-api-key", "another-key")).unwrap();
        assert_eq!(other.claims.unwrap().get("key_id"), Some(&json!("other")));

        let invalid = Err(("unknown_key", "keys".to_string(), 401));
        assert_eq!(
            result(run(
                &p,
                &Conn::default().header("x-api-key", "k-acme-012345678")
            )),
            invalid
        );
        assert_eq!(
            result(run(
                &p,
                &Conn::default().header("x-api-key", &format!("{KEY}x"))
            )),
            invalid
        );
        let missing = Err(("missing", "keys".to_string(), 401));
        assert_eq!(result(run(&p, &Conn::default())), missing);
        assert_eq!(
            result(run(&p, &Conn::default().header("x-api-key", ""))),
            missing
        );
        assert_eq!(
            result(run(&p, &Conn::default().header("x-api-key", "  "))),
            missing
        );
        // An API key and a JWT together, each checked by its own provider.
        let both = policy(json!({"all": ["keys", "main"]}));
        let jwt = format!("Bearer {}", token("https://main/", None));
        let req = Conn::default()
            .header("x-api-key", KEY)
            .header("authorization", &jwt);
        assert_eq!(result(run(&both, &req)), Ok("acme".to_string()));
        let bad = Conn::default()
            .header("x-api-key", "nope")
            .header("authorization", &jwt);
        assert_eq!(result(run(&both, &bad)), invalid);
    }

    #[test]
    fn bound_tokens_need_the_matching_certificate() {
        let p = policy(json!("bound"));
        let right = token(
            "https://bound/",
            Some(json!({"x5t#S256": thumbprint(CERT_HEX)})),
        );
        let other = "00".repeat(32);
        let wrong = token(
            "https://bound/",
            Some(json!({"x5t#S256": thumbprint(&other)})),
        );
        let unbound = token("https://bound/", None);
        let with = |t: &str| peer(Some("spiffe://x/y")).header("x-bound", &format!("Bearer {t}"));
        let c = with(&right);
        assert_eq!(result(run(&p, &c)), Ok("alice".to_string()));
        assert_eq!((c.san_reads.get(), c.cert_reads.get()), (0, 1));
        let binding = Err(("cert_binding", "bound".to_string(), 401));
        for (t, why) in [(&wrong, "another certificate"), (&unbound, "no cnf")] {
            let f = run(&p, &with(t)).unwrap_err();
            assert_eq!(result(Err(f.clone())), binding);
            assert!(desc(&f).contains(why), "{}", desc(&f));
            assert!(desc(&f).starts_with("certificate binding failed"));
        }
        let plain = Conn::default().header("x-bound", &format!("Bearer {right}"));
        let f = run(&p, &plain).unwrap_err();
        assert_eq!(result(Err(f.clone())), binding);
        assert!(desc(&f).contains("no client certificate"));
        // Upper-case hex from the host reads the same; a garbled digest fails closed.
        let mut upper = with(&right);
        upper.cert = Some(CERT_HEX.to_uppercase());
        assert!(run(&p, &upper).is_ok());
        let mut garbled = with(&right);
        garbled.cert = Some("zz".into());
        assert_eq!(result(run(&p, &garbled)), binding);
    }

    #[test]
    fn remote_api_keys_fail_closed_until_their_document_arrives() {
        let cfg: BTreeMap<String, ProviderConfig> = serde_json::from_value(json!({
            "rk": {"api_key": {"remote": {"cluster": "keys", "path": "/keys.json"}}}
        }))
        .unwrap();
        let providers = Providers::compile(&cfg).unwrap();
        let auth: AuthConfig = serde_json::from_value(json!({"requires": "rk"})).unwrap();
        let p = AuthPolicy::compile(&auth, &providers, &[], "routes[0].auth").unwrap();
        let mut keys = KeyStore::new(&providers, NOW);
        let req = Conn::default().header("x-api-key", KEY);
        let go = |keys: &KeyStore, req: &Conn| {
            result(p.authenticate(req, keys, &mut TokenCache::new(4), &Verifier::module(), NOW))
        };
        assert_eq!(
            go(&keys, &req),
            Err(("keys_unavailable", "rk".to_string(), 503))
        );
        assert_eq!(
            go(&keys, &Conn::default()),
            Err(("missing", "rk".to_string(), 401))
        );
        let doc = json!({"keys": [{"id": "acme", "sha256": hex(&api_key_digest(KEY)), "claims": {"sub": "acme"}}]});
        let body = serde_json::to_vec(&doc).unwrap();
        assert_eq!(keys.on_fetch_response("rk", Some(200), &body, NOW), Ok(1));
        assert_eq!(go(&keys, &req), Ok("acme".to_string()));
        let wrong = Conn::default().header("x-api-key", "nope");
        let f = p
            .authenticate(
                &wrong,
                &keys,
                &mut TokenCache::new(4),
                &Verifier::module(),
                NOW,
            )
            .unwrap_err();
        assert_eq!((f.reason, f.refetch_keys), ("unknown_key", false));
    }

    #[test]
    fn binding_is_checked_on_cached_tokens_too() {
        let p = policy(json!("bound"));
        let right = token(
            "https://bound/",
            Some(json!({"x5t#S256": thumbprint(CERT_HEX)})),
        );
        let keys = KeyStore::new(&providers(), NOW);
        let mut cache = TokenCache::new(16);
        let mut c = peer(None).header("x-bound", &format!("Bearer {right}"));
        assert!(p
            .authenticate(&c, &keys, &mut cache, &Verifier::module(), NOW)
            .is_ok());
        c.cert = Some("11".repeat(32));
        let f = p
            .authenticate(&c, &keys, &mut cache, &Verifier::module(), NOW)
            .unwrap_err();
        assert_eq!(f.reason, "cert_binding");
    }
}
