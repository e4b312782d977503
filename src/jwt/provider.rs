//! Providers compiled from `providers.<name>`: issuer and audience rules, token
//! sources, forwarding settings and where the keys come from; or, for the other two
//! kinds, the accepted mTLS peers (`peer`) or API keys (`api_key`).
//!
//! Inline key sets are parsed here, at configuration time; any unusable inline key is
//! a configuration error naming it (`providers.main.jwks.inline.keys[0]: ...`).

use crate::authz::Claims;
use crate::config::check::{self, in_range, NameChars, MAX_METRIC_NAME};
use crate::config::{ConfigError, JwksConfig, ProviderConfig, RemoteJwksConfig};
use crate::http;
use crate::jwt::extract::TokenSource;
use crate::jwt::jwks::{KeyRules, KeySet, MAX_RSA_BITS, MIN_RSA_BITS_FLOOR};
use crate::jwt::verify::ClaimsRules;
use serde_json::Value;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Largest `clock_skew_seconds` accepted.
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 3600;
/// Largest `remote.timeout_ms` accepted.
pub const MAX_FETCH_TIMEOUT_MS: u64 = 60_000;

/// Where a remote provider's JWKS is fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// Envoy cluster.
    pub cluster: String,
    /// `:authority` of the fetch (defaults to the cluster name).
    pub authority: String,
    /// Path of the JWKS document.
    pub path: String,
    /// Refresh period, seconds (>= 1).
    pub refresh_seconds: u64,
    /// Fetch timeout, milliseconds.
    pub timeout_ms: u64,
}

/// Where a provider's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Parsed from the configuration.
    Inline(Rc<KeySet>),
    /// Fetched by the filter; see [`crate::jwt::KeyStore`].
    Remote(RemoteJwks),
}

/// Longest SPIFFE ID (and API key id) accepted, in bytes.
pub const MAX_IDENTITY_BYTES: usize = 2048;

/// What kind of credential a provider checks.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A JWT, verified with its key set.
    Jwt,
    /// The mTLS peer's URI SAN, matched against these SPIFFE IDs; an entry ending in
    /// `/*` is kept as its prefix with the `/` (`spiffe://td/ns/ops/`).
    Peer(Vec<PeerId>),
    /// An API key, looked up by its SHA-256.
    ApiKey(ApiKeys),
}

/// Where an `api_key` provider's keys come from.
#[derive(Debug, Clone)]
pub enum ApiKeys {
    /// `api_key.keys`.
    Inline(Rc<Vec<ApiKey>>),
    /// A key document fetched by the filter (`api_key.remote`), kept in the
    /// [`crate::jwt::KeyStore`] like a remote JWKS.
    Remote(RemoteJwks),
}

/// One entry of `peer.spiffe_ids`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerId {
    /// Exactly this ID.
    Exact(String),
    /// Any ID that starts with this prefix (which ends in `/`) and continues.
    Prefix(String),
}

impl PeerId {
    fn matches(&self, id: &str) -> bool {
        match self {
            PeerId::Exact(e) => e == id,
            PeerId::Prefix(p) => id.len() > p.len() && id.starts_with(p.as_str()),
        }
    }
}

/// One entry of `api_key.keys`.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// The key's `claims` plus `key_id`.
    pub claims: Rc<Claims>,
}

/// The SHA-256 of an API key as presented.
pub fn api_key_digest(key: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The claims of the key whose SHA-256 is `digest`. Every configured digest is
/// compared, each without an early exit, so the time taken tells nothing of which
/// key came close or matched (ring's slice comparison is deprecated for outside use).
pub fn find_api_key<'a>(keys: &'a [ApiKey], digest: &[u8; 32]) -> Option<&'a Rc<Claims>> {
    let mut found = None;
    for k in keys {
        let diff = k
            .sha256
            .iter()
            .zip(digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            found = found.or(Some(&k.claims));
        }
    }
    found
}

/// The identity of an mTLS peer whose URI SAN is `san`, if a listed ID accepts it.
pub fn match_peer<'a>(ids: &[PeerId], san: &'a str) -> Option<&'a str> {
    let usable = !san.is_empty()
        && san.len() <= MAX_IDENTITY_BYTES
        && !san.bytes().any(|b| b.is_ascii_control());
    (usable && ids.iter().any(|p| p.matches(san))).then_some(san)
}

/// One compiled provider.
#[derive(Debug, Clone)]
pub struct Provider {
    name: String,
    /// JWT, peer or API key.
    pub kind: Kind,
    /// JWT providers: the token's `cnf["x5t#S256"]` must match the client certificate.
    pub require_cert_binding: bool,
    /// Issuer, audiences and time rules for its tokens.
    pub rules: ClaimsRules,
    /// Where its tokens are looked for, in configuration order (headers, params, cookies).
    pub sources: Vec<TokenSource>,
    /// Keep the token on the request sent upstream.
    pub forward: bool,
    /// `(claim, header)` pairs, header lowercase.
    pub claim_to_headers: Vec<(String, String)>,
    /// Header receiving the base64url payload, lowercase.
    pub forward_payload_header: Option<String>,
    /// Rules for its key sets.
    pub key_rules: KeyRules,
    /// Inline keys or the remote location.
    pub keys: KeySource,
}

impl Provider {
    /// The provider's name (`providers.<name>`), used in metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if its keys are fetched by the filter.
    pub fn is_remote(&self) -> bool {
        matches!(self.keys, KeySource::Remote(_))
    }

    /// Every header this provider sets on the request (lowercase): its
    /// `claim_to_headers` headers and `forward_payload_header`.
    pub fn output_headers(&self) -> impl Iterator<Item = &str> {
        self.claim_to_headers
            .iter()
            .map(|(_, h)| h.as_str())
            .chain(self.forward_payload_header.as_deref())
    }
}

/// All providers of the configuration, by name.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    by_name: BTreeMap<String, Rc<Provider>>,
}

impl Providers {
    /// Compiles `providers`. Errors name the field: `providers.main.issuer: must not be
    /// empty`, `providers.main.jwks.inline.keys[0]: RSA modulus is 1024 bits; at least
    /// 2048 required (set min_rsa_bits to allow)`, `providers.p.jwks.remote.refresh_seconds:
    /// must be >= 1`.
    pub fn compile(cfg: &BTreeMap<String, ProviderConfig>) -> Result<Providers, ConfigError> {
        let mut by_name = BTreeMap::new();
        for (name, p) in cfg {
            let provider = compile_provider(name, p)?;
            by_name.insert(name.clone(), Rc::new(provider));
        }
        // An API key shares no location with another provider: a key is no JWT, and
        // a JWT is no key, so neither could be told which provider it is meant for.
        for (name, p) in &by_name {
            if !matches!(p.kind, Kind::ApiKey(_)) {
                continue;
            }
            for s in &p.sources {
                let loc = s.location();
                if let Some((other, _)) = by_name
                    .iter()
                    .find(|(o, q)| *o != name && q.sources.iter().any(|t| t.location() == loc))
                {
                    return Err(ConfigError::new(
                        format!("providers.{name}.api_key"),
                        format!("{loc:?} is also read by provider `{other}`; an API key needs a location of its own"),
                    ));
                }
            }
        }
        // The glue removes every header a route's providers set before it extracts
        // tokens; a provider writing into another's token header would erase it.
        for (name, p) in &by_name {
            for (i, (_, header)) in p.claim_to_headers.iter().enumerate() {
                check_not_a_source(
                    &by_name,
                    header,
                    &format!("providers.{name}.claim_to_headers[{i}].header"),
                )?;
            }
            if let Some(h) = &p.forward_payload_header {
                check_not_a_source(
                    &by_name,
                    h,
                    &format!("providers.{name}.forward_payload_header"),
                )?;
            }
        }
        Ok(Providers { by_name })
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Option<&Rc<Provider>> {
        self.by_name.get(name)
    }

    /// All providers, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Rc<Provider>> {
        self.by_name.values()
    }

    /// Number of providers.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }
}

fn check_not_a_source(
    all: &BTreeMap<String, Rc<Provider>>,
    header: &str,
    path: &str,
) -> Result<(), ConfigError> {
    for (other, p) in all {
        for s in &p.sources {
            let clash = match s {
                TokenSource::Header { name, .. } => name == header,
                TokenSource::Cookie(_) => header == "cookie",
                TokenSource::Param(_) => false,
            };
            if clash {
                return Err(ConfigError::new(
                    path,
                    format!("`{header}` is where provider `{other}` reads tokens; choose another header"),
                ));
            }
        }
    }
    Ok(())
}

fn compile_provider(name: &str, p: &ProviderConfig) -> Result<Provider, ConfigError> {
    let at = |field: &str| format!("providers.{name}.{field}");
    check::metric_name(
        name,
        MAX_METRIC_NAME,
        NameChars::Mixed,
        &format!("providers.{}", check::clip(name)),
    )?;
    let jwt = p.jwks.is_some() || !p.issuer.is_empty();
    if usize::from(jwt) + usize::from(p.peer.is_some()) + usize::from(p.api_key.is_some()) > 1 {
        return Err(ConfigError::new(
            format!("providers.{name}"),
            "a provider is exactly one of: a JWT provider (`issuer` and `jwks`), `peer` or `api_key`",
        ));
    }
    if p.peer.is_some() || p.api_key.is_some() {
        return compile_other(name, p);
    }
    if p.issuer.is_empty() {
        return Err(ConfigError::new(at("issuer"), "must not be empty"));
    }
    let Some(jwks) = &p.jwks else {
        return Err(ConfigError::new(
            at("jwks"),
            "missing; a provider is a JWT provider (`issuer` and `jwks`), `peer` or `api_key`",
        ));
    };
    for (i, a) in p.audiences.iter().enumerate() {
        if a.is_empty() {
            return Err(ConfigError::new(
                at(&format!("audiences[{i}]")),
                "must not be empty",
            ));
        }
    }
    in_range(
        p.clock_skew_seconds,
        0,
        MAX_CLOCK_SKEW_SECONDS,
        &at("clock_skew_seconds"),
    )?;
    if let Some(lifetime) = p.max_lifetime_seconds {
        in_range(lifetime, 1, u64::MAX, &at("max_lifetime_seconds"))?;
    }
    in_range(
        p.min_rsa_bits as usize,
        MIN_RSA_BITS_FLOOR as usize,
        MAX_RSA_BITS,
        &at("min_rsa_bits"),
    )?;

    let mut sources = Vec::new();
    match &p.from_headers {
        None => sources.push(TokenSource::Header {
            name: "authorization".to_string(),
            prefix: Some("Bearer ".to_string()),
        }),
        Some(list) => {
            for (i, h) in list.iter().enumerate() {
                let name = check::header_name(&h.name, &at(&format!("from_headers[{i}].name")))?;
                sources.push(TokenSource::Header {
                    name,
                    prefix: h.value_prefix.clone().filter(|p| !p.is_empty()),
                });
            }
        }
    }
    for (i, param) in p.from_params.iter().enumerate() {
        sources.push(param_source(param, &at(&format!("from_params[{i}]")))?);
    }
    for (i, cookie) in p.from_cookies.iter().enumerate() {
        if cookie.is_empty() || !http::is_token(cookie) {
            return Err(ConfigError::new(
                at(&format!("from_cookies[{i}]")),
                "must be a non-empty cookie name (RFC 6265 token characters)",
            ));
        }
        sources.push(TokenSource::Cookie(cookie.clone()));
    }
    if sources.is_empty() {
        return Err(ConfigError::new(
            at("from_headers"),
            "the provider has no token source (from_headers is empty and there are no from_params or from_cookies)",
        ));
    }
    no_repeated_source(&sources, name)?;
    let claim_to_headers = claim_headers(p, name)?;
    let forward_payload_header = match &p.forward_payload_header {
        None => None,
        Some(h) => {
            let path = at("forward_payload_header");
            let header = output_header(h, &path)?;
            if claim_to_headers.iter().any(|(_, x)| *x == header) {
                return Err(ConfigError::new(
                    path,
                    format!("header `{header}` is also in claim_to_headers"),
                ));
            }
            Some(header)
        }
    };

    let remote = matches!(jwks, JwksConfig::Remote(_));
    let key_rules = KeyRules {
        min_rsa_bits: p.min_rsa_bits,
        allow_symmetric: !remote,
    };
    let keys = match jwks {
        JwksConfig::Inline(doc) => {
            let path = at("jwks.inline");
            let parsed = crate::jwt::jwks::parse_jwks(doc, &key_rules).map_err(|m| {
                // parse_jwks messages start with the member they are about.
                match m.split_once(": ") {
                    Some(("keys", rest)) => ConfigError::new(format!("{path}.keys"), rest),
                    _ => ConfigError::new(path.clone(), m),
                }
            })?;
            if let Some(issue) = parsed.rejected.first() {
                return Err(ConfigError::new(
                    format!("{path}.keys[{}]", issue.index),
                    issue.message.clone(),
                ));
            }
            if parsed.keys.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.keys"),
                    "must contain at least one key",
                ));
            }
            KeySource::Inline(Rc::new(parsed.keys))
        }
        JwksConfig::Remote(r) => KeySource::Remote(remote_location(r, &at("jwks.remote"))?),
    };

    Ok(Provider {
        name: name.to_string(),
        kind: Kind::Jwt,
        require_cert_binding: p.require_cert_binding,
        rules: ClaimsRules {
            issuer: p.issuer.clone(),
            audiences: p.audiences.clone(),
            clock_skew_seconds: p.clock_skew_seconds,
            max_lifetime_seconds: p.max_lifetime_seconds,
            require_expiration: p.require_expiration,
        },
        sources,
        forward: p.forward,
        claim_to_headers,
        forward_payload_header,
        key_rules,
        keys,
    })
}

/// A remote document's location (`jwks.remote`, `api_key.remote`) at `path`, checked.
fn remote_location(r: &RemoteJwksConfig, path: &str) -> Result<RemoteJwks, ConfigError> {
    let rp = |f: &str| format!("{path}.{f}");
    if r.cluster.is_empty() {
        return Err(ConfigError::new(rp("cluster"), "must not be empty"));
    }
    if !r.path.starts_with('/') {
        return Err(ConfigError::new(rp("path"), "must start with `/`"));
    }
    if r.path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(ConfigError::new(
            rp("path"),
            "must not contain spaces or control characters",
        ));
    }
    in_range(r.refresh_seconds, 1, u64::MAX, &rp("refresh_seconds"))?;
    in_range(r.timeout_ms, 1, MAX_FETCH_TIMEOUT_MS, &rp("timeout_ms"))?;
    let authority = match &r.authority {
        Some(a)
            if a.is_empty()
                || a.bytes()
                    .any(|b| b.is_ascii_control() || b == b' ' || b == b'/') =>
        {
            return Err(ConfigError::new(rp("authority"), "must be a host[:port]"))
        }
        Some(a) => a.clone(),
        None => r.cluster.clone(),
    };
    Ok(RemoteJwks {
        cluster: r.cluster.clone(),
        authority,
        path: r.path.clone(),
        refresh_seconds: r.refresh_seconds,
        timeout_ms: r.timeout_ms,
    })
}

fn param_source(param: &str, path: &str) -> Result<TokenSource, ConfigError> {
    if param.is_empty() || param.contains(['&', '=', '#', ' ']) {
        return Err(ConfigError::new(
            path,
            "must be a non-empty query parameter name without `&`, `=`, `#` or spaces",
        ));
    }
    Ok(TokenSource::Param(param.to_string()))
}

fn no_repeated_source(sources: &[TokenSource], name: &str) -> Result<(), ConfigError> {
    for (i, a) in sources.iter().enumerate() {
        if sources
            .iter()
            .skip(i + 1)
            .any(|b| b.location() == a.location())
        {
            return Err(ConfigError::new(
                format!("providers.{name}"),
                format!("token source {:?} is listed twice", a.location()),
            ));
        }
    }
    Ok(())
}

/// `claim_to_headers`, checked: `(claim, header)` pairs, header lowercase.
fn claim_headers(p: &ProviderConfig, name: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let at = |field: &str| format!("providers.{name}.{field}");
    let mut claim_to_headers = Vec::new();
    for (i, c) in p.claim_to_headers.iter().enumerate() {
        if c.claim.is_empty() {
            return Err(ConfigError::new(
                at(&format!("claim_to_headers[{i}].claim")),
                "must not be empty",
            ));
        }
        let path = at(&format!("claim_to_headers[{i}].header"));
        let header = output_header(&c.header, &path)?;
        if claim_to_headers.iter().any(|(_, h)| *h == header) {
            return Err(ConfigError::new(
                path,
                format!("header `{header}` is set twice"),
            ));
        }
        claim_to_headers.push((c.claim.clone(), header));
    }
    Ok(claim_to_headers)
}

/// A `peer` or `api_key` provider. Of the JWT provider's fields it takes only
/// `claim_to_headers`; any other is an error naming it.
fn compile_other(name: &str, p: &ProviderConfig) -> Result<Provider, ConfigError> {
    let at = |field: &str| format!("providers.{name}.{field}");
    let jwt_only = [
        ("audiences", !p.audiences.is_empty()),
        ("from_headers", p.from_headers.is_some()),
        ("from_params", !p.from_params.is_empty()),
        ("from_cookies", !p.from_cookies.is_empty()),
        (
            "clock_skew_seconds",
            p.clock_skew_seconds != crate::config::DEFAULT_CLOCK_SKEW_SECONDS,
        ),
        ("max_lifetime_seconds", p.max_lifetime_seconds.is_some()),
        ("require_expiration", !p.require_expiration),
        ("forward", !p.forward),
        ("forward_payload_header", p.forward_payload_header.is_some()),
        ("min_rsa_bits", p.min_rsa_bits != 2048),
        ("require_cert_binding", p.require_cert_binding),
    ];
    if let Some((field, _)) = jwt_only.iter().find(|(_, set)| *set) {
        let hint = if p.api_key.is_some()
            && matches!(*field, "from_headers" | "from_params" | "forward")
        {
            "belongs inside `api_key` for an API key provider".to_string()
        } else {
            "applies to JWT providers only".to_string()
        };
        return Err(ConfigError::new(at(field), hint));
    }
    let claim_to_headers = claim_headers(p, name)?;
    let (kind, sources, forward) = match (&p.peer, &p.api_key) {
        (Some(peer), _) => (
            Kind::Peer(compile_peer(peer, &at("peer"))?),
            Vec::new(),
            true,
        ),
        (None, Some(k)) => {
            let (keys, sources, forward) = compile_api_key(k, &at("api_key"))?;
            no_repeated_source(&sources, name)?;
            (Kind::ApiKey(keys), sources, forward)
        }
        (None, None) => return Err(ConfigError::new(at("peer"), "missing")),
    };
    Ok(Provider {
        name: name.to_string(),
        require_cert_binding: false,
        rules: ClaimsRules {
            issuer: String::new(),
            audiences: Vec::new(),
            clock_skew_seconds: 0,
            max_lifetime_seconds: None,
            require_expiration: true,
        },
        sources,
        forward,
        claim_to_headers,
        forward_payload_header: None,
        key_rules: KeyRules {
            min_rsa_bits: p.min_rsa_bits,
            allow_symmetric: false,
        },
        keys: match &kind {
            Kind::ApiKey(ApiKeys::Remote(r)) => KeySource::Remote(r.clone()),
            _ => KeySource::Inline(Rc::new(KeySet::default())),
        },
        kind,
    })
}

/// Member `key` of `o` as a list of non-empty strings (absent: empty).
fn strings<'a>(
    o: &'a serde_json::Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Vec<&'a str>, ConfigError> {
    let Some(v) = o.get(key) else {
        return Ok(Vec::new());
    };
    let Some(items) = v.as_array() else {
        return Err(ConfigError::new(
            format!("{path}.{key}"),
            "must be a list of strings",
        ));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(s) if !s.is_empty() => out.push(s),
            _ => {
                return Err(ConfigError::new(
                    format!("{path}.{key}[{i}]"),
                    "must be a non-empty string",
                ))
            }
        }
    }
    Ok(out)
}

fn compile_peer(v: &Value, path: &str) -> Result<Vec<PeerId>, ConfigError> {
    let o = check::object(v, path, &["spiffe_ids"])?;
    let ids = strings(o, "spiffe_ids", path)?;
    if ids.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.spiffe_ids"),
            "must list at least one SPIFFE ID",
        ));
    }
    let mut out = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let at = format!("{path}.spiffe_ids[{i}]");
        let (base, wildcard) = match id.strip_suffix('*') {
            Some(b) if b.ends_with('/') => (b, true),
            _ => (id, false),
        };
        let rest = base.strip_prefix("spiffe://").unwrap_or_default();
        let valid = !rest.is_empty()
            && !rest.starts_with('/')
            && id.len() <= MAX_IDENTITY_BYTES
            && !base.contains('*')
            && !base.bytes().any(|b| b.is_ascii_control() || b == b' ');
        if !valid {
            return Err(ConfigError::new(
                at,
                "must be a SPIFFE ID (`spiffe://<trust domain>/<path>`), or one ending in `/*` to accept any rest",
            ));
        }
        out.push(if wildcard {
            PeerId::Prefix(base.to_string())
        } else {
            PeerId::Exact(base.to_string())
        });
    }
    Ok(out)
}

type ApiKeyParts = (ApiKeys, Vec<TokenSource>, bool);

fn compile_api_key(v: &Value, path: &str) -> Result<ApiKeyParts, ConfigError> {
    let o = check::object(
        v,
        path,
        &["keys", "remote", "from_headers", "from_params", "forward"],
    )?;
    let mut sources = Vec::new();
    if let Some(h) = o.get("from_headers") {
        let at = format!("{path}.from_headers");
        let Some(list) = h.as_array() else {
            return Err(ConfigError::new(
                at,
                "must be a list of {\"name\": ...} objects",
            ));
        };
        for (i, item) in list.iter().enumerate() {
            let ip = format!("{at}[{i}]");
            let ho = check::object(item, &ip, &["name", "value_prefix"])?;
            let Some(n) = ho.get("name").and_then(Value::as_str) else {
                return Err(ConfigError::new(
                    format!("{ip}.name"),
                    "missing; must be a header name",
                ));
            };
            let prefix = match ho.get("value_prefix") {
                None => None,
                Some(Value::String(p)) => Some(p.clone()).filter(|p| !p.is_empty()),
                Some(_) => {
                    return Err(ConfigError::new(
                        format!("{ip}.value_prefix"),
                        "must be a string",
                    ))
                }
            };
            sources.push(TokenSource::Header {
                name: check::header_name(n, &format!("{ip}.name"))?,
                prefix,
            });
        }
    }
    for (i, param) in strings(o, "from_params", path)?.into_iter().enumerate() {
        sources.push(param_source(param, &format!("{path}.from_params[{i}]"))?);
    }
    if sources.is_empty() {
        if o.contains_key("from_headers") {
            return Err(ConfigError::new(format!("{path}.from_headers"), "the provider has no key source (from_headers is empty and there are no from_params)"));
        }
        sources.push(TokenSource::Header {
            name: "x-api-key".to_string(),
            prefix: None,
        });
    }
    let forward = match o.get("forward") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ConfigError::new(
                format!("{path}.forward"),
                "must be true or false",
            ))
        }
    };
    let keys = match (o.get("keys"), o.get("remote")) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                path,
                "give either `keys` or `remote`, not both",
            ))
        }
        (None, Some(r)) => ApiKeys::Remote(remote_keys(r, &format!("{path}.remote"))?),
        (keys, None) => ApiKeys::Inline(Rc::new(parse_api_keys(
            keys.unwrap_or(&Value::Null),
            &format!("{path}.keys"),
        )?)),
    };
    Ok((keys, sources, forward))
}

/// An API key list (`api_key.keys`, or the `keys` of a fetched key document) at
/// `path`: its entries are `{"id", "sha256", "claims"}`.
pub fn parse_api_keys(v: &Value, path: &str) -> Result<Vec<ApiKey>, ConfigError> {
    let Some(list) = v.as_array().filter(|l| !l.is_empty()) else {
        return Err(ConfigError::new(path, "must list at least one key"));
    };
    let mut keys: Vec<ApiKey> = Vec::new();
    let mut ids: Vec<&str> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let ko = check::object(item, &at, &["id", "sha256", "claims"])?;
        let id = match ko.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() && id.len() <= MAX_IDENTITY_BYTES => id,
            _ => {
                return Err(ConfigError::new(
                    format!("{at}.id"),
                    "must be a non-empty string",
                ))
            }
        };
        if ids.contains(&id) {
            return Err(ConfigError::new(
                format!("{at}.id"),
                format!("`{id}` is already the id of another key"),
            ));
        }
        let sha256 = ko
            .get("sha256")
            .and_then(Value::as_str)
            .and_then(parse_sha256_hex)
            .ok_or_else(|| {
                ConfigError::new(
                    format!("{at}.sha256"),
                    "must be the SHA-256 of the key: 64 hex digits",
                )
            })?;
        if keys.iter().any(|k| k.sha256 == sha256) {
            return Err(ConfigError::new(
                format!("{at}.sha256"),
                "is the digest of another key too",
            ));
        }
        let mut claims = match ko.get("claims") {
            None => Claims::new(),
            Some(Value::Object(c)) => c.clone(),
            Some(_) => {
                return Err(ConfigError::new(
                    format!("{at}.claims"),
                    "must be an object",
                ))
            }
        };
        claims.insert("key_id".to_string(), Value::String(id.to_string()));
        ids.push(id);
        keys.push(ApiKey {
            sha256,
            claims: Rc::new(claims),
        });
    }
    Ok(keys)
}

/// `api_key.remote`: the fields of `jwks.remote`.
fn remote_keys(v: &Value, path: &str) -> Result<RemoteJwks, ConfigError> {
    let o = check::object(
        v,
        path,
        &[
            "cluster",
            "path",
            "authority",
            "refresh_seconds",
            "timeout_ms",
        ],
    )?;
    let text = |k: &str| -> Result<Option<String>, ConfigError> {
        match o.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ConfigError::new(format!("{path}.{k}"), "must be a string")),
        }
    };
    let number = |k: &str, default: u64| -> Result<u64, ConfigError> {
        match o.get(k) {
            None => Ok(default),
            Some(n) => n.as_u64().ok_or_else(|| {
                ConfigError::new(format!("{path}.{k}"), "must be a non-negative integer")
            }),
        }
    };
    let cfg = RemoteJwksConfig {
        cluster: text("cluster")?.unwrap_or_default(),
        authority: text("authority")?,
        path: text("path")?.unwrap_or_default(),
        refresh_seconds: number(
            "refresh_seconds",
            crate::config::DEFAULT_JWKS_REFRESH_SECONDS,
        )?,
        timeout_ms: number("timeout_ms", crate::config::DEFAULT_JWKS_TIMEOUT_MS)?,
    };
    remote_location(&cfg, path)
}

/// 64 hex digits (either case) as 32 bytes.
pub fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *out.get_mut(i)? = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Headers the filter must never write: framing, routing and the token headers.
const RESERVED_OUTPUT_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "cookie",
    "authorization",
];

fn output_header(name: &str, path: &str) -> Result<String, ConfigError> {
    let h = check::header_name(name, path)?;
    if RESERVED_OUTPUT_HEADERS.contains(&h.as_str()) {
        return Err(ConfigError::new(
            path,
            format!("`{h}` cannot be set by the filter"),
        ));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::jwks::Algorithm;
    use crate::jwt::testkeys;
    use serde_json::{json, Value};

    fn compile_json(providers: Value) -> Result<Providers, String> {
        let cfg: BTreeMap<String, ProviderConfig> = serde_json::from_value(providers).unwrap();
        Providers::compile(&cfg).map_err(|e| e.to_string())
    }

    fn inline(extra: Value) -> Value {
        let mut p = json!({"issuer": "https://idp/", "jwks": {"inline": testkeys::jwks(&[Algorithm::ES256])}});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    }

    #[test]
    fn a_valid_provider_compiles_with_defaults() {
        let ps = compile_json(json!({"main": inline(json!({}))})).unwrap();
        let p = ps.get("main").unwrap();
        assert_eq!(p.name(), "main");
        assert!(!p.is_remote());
        assert_eq!(
            p.sources,
            vec![TokenSource::Header {
                name: "authorization".into(),
                prefix: Some("Bearer ".into())
            }]
        );
        assert!(p.forward && p.rules.require_expiration);
        assert_eq!(p.rules.clock_skew_seconds, 60);
    }

    #[test]
    fn config_errors_name_the_field() {
        let remote = |r: Value| json!({"issuer": "i", "jwks": {"remote": r}});
        let mut ps1024 = testkeys::rsa1024_jwk();
        ps1024["alg"] = json!("PS256");
        let cases: Vec<(Value, &str)> = vec![
            (json!({"main": inline(json!({"issuer": ""}))}), "providers.main.issuer: must not be empty"),
            (json!({"main": inline(json!({"audiences": ["a", ""]}))}), "providers.main.audiences[1]: must not be empty"),
            (json!({"main": {"issuer": "i", "jwks": {"inline": {"keys": [testkeys::rsa1024_jwk()]}}}}),
             "providers.main.jwks.inline.keys[0]: RSA modulus is 1024 bits; at least 2048 required (set min_rsa_bits to allow)"),
            (json!({"main": {"issuer": "i", "min_rsa_bits": 1024, "jwks": {"inline": {"keys": [ps1024]}}}}),
             "providers.main.jwks.inline.keys[0]: RSA modulus is 1024 bits; PS256 needs at least 2048 (keys under 2048 bits verify RS256 or RS512 only)"),
            (json!({"main": {"issuer": "i", "jwks": {"inline": {"keys": [testkeys::jwk_for(Algorithm::ES256), {"kty": "EC", "crv": "P-256", "x": "!", "y": "A"}]}}}}),
             "providers.main.jwks.inline.keys[1]: `x` is not valid base64url"),
            (json!({"main": {"issuer": "i", "jwks": {"inline": {"keys": []}}}}), "providers.main.jwks.inline.keys: must contain at least one key"),
            (json!({"main": {"issuer": "i", "jwks": {"inline": {"kty": "EC"}}}}), "providers.main.jwks.inline.keys: missing; a JWKS object is {\"keys\": [...]}"),
            (json!({"main": {"issuer": "i", "jwks": {"inline": "x"}}}), "providers.main.jwks.inline: must be a JWKS object: {\"keys\": [...]}"),
            (json!({"p": remote(json!({"cluster": "c", "path": "/j", "refresh_seconds": 0}))}), "providers.p.jwks.remote.refresh_seconds: must be > 0"),
            (json!({"p": remote(json!({"cluster": "", "path": "/j"}))}), "providers.p.jwks.remote.cluster: must not be empty"),
            (json!({"p": remote(json!({"cluster": "c", "path": "j"}))}), "providers.p.jwks.remote.path: must start with `/`"),
            (json!({"p": remote(json!({"cluster": "c", "path": "/j", "timeout_ms": 0}))}), "providers.p.jwks.remote.timeout_ms: must be > 0"),
            (json!({"p": remote(json!({"cluster": "c", "path": "/j", "authority": ""}))}), "providers.p.jwks.remote.authority: must be a host[:port]"),
            (json!({"main": inline(json!({"min_rsa_bits": 512}))}), "providers.main.min_rsa_bits: must be >= 1024"),
            (json!({"main": inline(json!({"clock_skew_seconds": 7200}))}), "providers.main.clock_skew_seconds: must be <= 3600"),
            (json!({"main": inline(json!({"max_lifetime_seconds": 0}))}), "providers.main.max_lifetime_seconds: must be > 0"),
            (json!({"main": inline(json!({"from_headers": []}))}), "providers.main.from_headers: the provider has no token source"),
            (json!({"main": inline(json!({"from_headers": [{"name": "bad header"}]}))}), "providers.main.from_headers[0].name: \"bad header\" is not a valid HTTP header name"),
            (json!({"main": inline(json!({"from_params": ["a=b"]}))}), "providers.main.from_params[0]: must be a non-empty query parameter name"),
            (json!({"main": inline(json!({"from_cookies": ["a b"]}))}), "providers.main.from_cookies[0]: must be a non-empty cookie name"),
            (json!({"main": inline(json!({"from_params": ["t", "t"]}))}), "providers.main: token source Param(\"t\") is listed twice"),
            (json!({"main": inline(json!({"claim_to_headers": [{"claim": "sub", "header": "Host"}]}))}), "providers.main.claim_to_headers[0].header: `host` cannot be set by the filter"),
            (json!({"main": inline(json!({"claim_to_headers": [{"claim": "", "header": "x"}]}))}), "providers.main.claim_to_headers[0].claim: must not be empty"),
            (json!({"main": inline(json!({"claim_to_headers": [{"claim": "a", "header": "x"}, {"claim": "b", "header": "X"}]}))}), "providers.main.claim_to_headers[1].header: header `x` is set twice"),
            (json!({"main": inline(json!({"claim_to_headers": [{"claim": "a", "header": "x"}], "forward_payload_header": "x"}))}), "providers.main.forward_payload_header: header `x` is also in claim_to_headers"),
            (json!({"a": inline(json!({"from_headers": [{"name": "x-token"}]})), "b": inline(json!({"forward_payload_header": "X-Token"}))}),
             "providers.b.forward_payload_header: `x-token` is where provider `a` reads tokens; choose another header"),
            (json!({"bad name": inline(json!({}))}), "providers.bad name: \"bad name\" must be 1-64 letters, digits, '-' or '_'"),
        ];
        for (cfg, want) in cases {
            let got = compile_json(cfg.clone()).err().unwrap_or_default();
            assert!(got.starts_with(want), "{cfg}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn remote_providers_default_their_authority() {
        let ps = compile_json(
            json!({"p": {"issuer": "i", "jwks": {"remote": {"cluster": "idp", "path": "/jwks"}}}}),
        )
        .unwrap();
        let p = ps.get("p").unwrap();
        assert!(p.is_remote());
        match &p.keys {
            KeySource::Remote(r) => {
                assert_eq!(r.authority, "idp");
                assert_eq!((r.refresh_seconds, r.timeout_ms), (300, 2000));
            }
            KeySource::Inline(_) => panic!("expected remote"),
        }
        assert!(!p.key_rules.allow_symmetric);
    }

    #[test]
    fn peer_and_api_key_config_errors_name_the_field() {
        let sha = "ab".repeat(32);
        let key = |extra: Value| {
            let mut k = json!({"keys": [{"id": "a", "sha256": sha}]});
            for (f, v) in extra.as_object().unwrap() {
                k[f] = v.clone();
            }
            json!({"k": {"api_key": k}})
        };
        let peer = |ids: Value| json!({"m": {"peer": {"spiffe_ids": ids}}});
        let cases: Vec<(Value, &str)> = vec![
            (json!({"m": {"peer": {"spiffe_ids": ["spiffe://a/b"]}, "issuer": "i"}}), "providers.m: a provider is exactly one of"),
            (json!({"m": {"peer": {"spiffe_ids": ["spiffe://a/b"]}, "api_key": {}}}), "providers.m: a provider is exactly one of"),
            (json!({"m": {}}), "providers.m.issuer: must not be empty"),
            (json!({"m": {"issuer": "i"}}), "providers.m.jwks: missing; a provider is a JWT provider"),
            (peer(json!([])), "providers.m.peer.spiffe_ids: must list at least one SPIFFE ID"),
            (json!({"m": {"peer": {}}}), "providers.m.peer.spiffe_ids: must list at least one"),
            (json!({"m": {"peer": {"spiffe_id": []}}}), "providers.m.peer.spiffe_id: unknown field"),
            (json!({"m": {"peer": ["spiffe://a/b"]}}), "providers.m.peer: must be an object"),
            (peer(json!(["spiffe://a/b", ""])), "providers.m.peer.spiffe_ids[1]: must be a non-empty string"),
            (peer(json!(["https://a/b"])), "providers.m.peer.spiffe_ids[0]: must be a SPIFFE ID"),
            (peer(json!(["spiffe://"])), "providers.m.peer.spiffe_ids[0]: must be a SPIFFE ID"),
            (peer(json!(["spiffe://a/b*"])), "providers.m.peer.spiffe_ids[0]: must be a SPIFFE ID"),
            (peer(json!(["spiffe://a/*/c"])), "providers.m.peer.spiffe_ids[0]: must be a SPIFFE ID"),
            (peer(json!(["spiffe://a/b c"])), "providers.m.peer.spiffe_ids[0]: must be a SPIFFE ID"),
            (json!({"m": {"peer": {"spiffe_ids": ["spiffe://a/b"]}, "require_cert_binding": true}}), "providers.m.require_cert_binding: applies to JWT providers only"),
            (json!({"m": {"peer": {"spiffe_ids": ["spiffe://a/b"]}, "audiences": ["x"]}}), "providers.m.audiences: applies to JWT providers only"),
            (json!({"k": {"api_key": {"keys": [{"id": "a", "sha256": sha}]}, "from_headers": [{"name": "x"}]}}), "providers.k.from_headers: belongs inside `api_key`"),
            (json!({"k": {"api_key": {"keys": [{"id": "a", "sha256": sha}]}, "forward": false}}), "providers.k.forward: belongs inside `api_key`"),
            (json!({"k": {"api_key": {"keys": []}}}), "providers.k.api_key.keys: must list at least one key"),
            (json!({"k": {"api_key": {}}}), "providers.k.api_key.keys: must list at least one key"),
            (json!({"k": {"api_key": {"keys": [{"id": "a", "sha256": "abc"}]}}}), "providers.k.api_key.keys[0].sha256: must be the SHA-256 of the key: 64 hex digits"),
            (json!({"k": {"api_key": {"keys": [{"id": "a", "sha256": "g".repeat(64)}]}}}), "providers.k.api_key.keys[0].sha256: must be the SHA-256"),
            (json!({"k": {"api_key": {"keys": [{"id": "a", "sha256": sha, "key": "x"}]}}}), "providers.k.api_key.keys[0].key: unknown field"),
            (json!({"k": {"api_key": {"keys": [{"id": "", "sha256": sha}]}}}), "providers.k.api_key.keys[0].id: must be a non-empty string"),
            (json!({"k": {"api_key": {"keys": [{"id": "a", "sha256": sha}, {"id": "a", "sha256": "cd".repeat(32)}]}}}), "providers.k.api_key.keys[1].id: `a` is already the id of another key"),
            (json!({"k": {"api_key": {"keys": [{"id": "a", "sha256": sha}, {"id": "b", "sha256": sha.to_uppercase()}]}}}), "providers.k.api_key.keys[1].sha256: is the digest of another key too"),
            (json!({"k": {"api_key": {"keys": [{"id": "a", "sha256": sha, "claims": []}]}}}), "providers.k.api_key.keys[0].claims: must be an object"),
            (key(json!({"from_headers": [{"name": "bad header"}]})), "providers.k.api_key.from_headers[0].name: \"bad header\" is not a valid HTTP header name"),
            (key(json!({"from_headers": [{}]})), "providers.k.api_key.from_headers[0].name: missing"),
            (key(json!({"from_headers": []})), "providers.k.api_key.from_headers: the provider has no key source"),
            (key(json!({"from_headers": "x-api-key"})), "providers.k.api_key.from_headers: must be a list"),
            (key(json!({"from_params": ["a=b"]})), "providers.k.api_key.from_params[0]: must be a non-empty query parameter name"),
            (key(json!({"from_params": ["k", "k"]})), "providers.k: token source Param(\"k\") is listed twice"),
            (key(json!({"forward": "no"})), "providers.k.api_key.forward: must be true or false"),
            (key(json!({"key": 1})), "providers.k.api_key.key: unknown field"),
            (key(json!({"remote": {"cluster": "c", "path": "/k"}})), "providers.k.api_key: give either `keys` or `remote`, not both"),
            (json!({"k": {"api_key": {"remote": {"cluster": "", "path": "/k"}}}}), "providers.k.api_key.remote.cluster: must not be empty"),
            (json!({"k": {"api_key": {"remote": {"cluster": "c"}}}}), "providers.k.api_key.remote.path: must start with `/`"),
            (json!({"k": {"api_key": {"remote": {"cluster": "c", "path": "/k", "refresh_seconds": 0}}}}), "providers.k.api_key.remote.refresh_seconds: must be > 0"),
            (json!({"k": {"api_key": {"remote": {"cluster": "c", "path": "/k", "timeout_ms": -1}}}}), "providers.k.api_key.remote.timeout_ms: must be a non-negative integer"),
            (json!({"k": {"api_key": {"remote": {"cluster": 1, "path": "/k"}}}}), "providers.k.api_key.remote.cluster: must be a string"),
            (json!({"k": {"api_key": {"remote": {"cluster": "c", "path": "/k", "x": 1}}}}), "providers.k.api_key.remote.x: unknown field"),
        ];
        for (cfg, want) in cases {
            let got = compile_json(cfg.clone()).err().unwrap_or_default();
            assert!(got.starts_with(want), "{cfg}\n got: {got}\nwant: {want}");
        }
        // A key location shared with another provider cannot say whose it is.
        let mut shared = key(json!({"from_headers": [{"name": "authorization"}]}));
        shared["main"] = inline(json!({}));
        let got = compile_json(shared).err().unwrap_or_default();
        assert!(
            got.starts_with(
                "providers.k.api_key: Header(\"authorization\") is also read by provider `main`"
            ),
            "{got}"
        );
    }

    #[test]
    fn peer_and_api_key_providers_compile() {
        let sha = hex_of(&api_key_digest("secret"));
        let ps = compile_json(json!({
            "m": {"peer": {"spiffe_ids": ["spiffe://td/ns/a/sa/web", "spiffe://td/ns/ops/*"]},
                  "claim_to_headers": [{"claim": "sub", "header": "x-peer"}]},
            "k": {"api_key": {"keys": [{"id": "acme", "sha256": sha.to_uppercase(), "claims": {"plan": "gold", "key_id": "spoof"}}]}}
        }))
        .unwrap();
        let m = ps.get("m").unwrap();
        let Kind::Peer(ids) = &m.kind else {
            panic!("peer")
        };
        assert_eq!(
            ids,
            &vec![
                PeerId::Exact("spiffe://td/ns/a/sa/web".into()),
                PeerId::Prefix("spiffe://td/ns/ops/".into())
            ]
        );
        assert!(m.sources.is_empty());
        assert_eq!(
            m.claim_to_headers,
            vec![("sub".to_string(), "x-peer".to_string())]
        );
        let k = ps.get("k").unwrap();
        assert_eq!(
            k.sources,
            vec![TokenSource::Header {
                name: "x-api-key".into(),
                prefix: None
            }]
        );
        assert!(k.forward);
        let Kind::ApiKey(ApiKeys::Inline(keys)) = &k.kind else {
            panic!("api_key")
        };
        let claims = find_api_key(keys, &api_key_digest("secret")).unwrap();
        assert_eq!(claims.get("key_id"), Some(&json!("acme")));
        assert_eq!(claims.get("plan"), Some(&json!("gold")));
        assert!(find_api_key(keys, &api_key_digest("Secret")).is_none());
    }

    #[test]
    fn remote_api_keys_are_scheduled_like_remote_key_sets() {
        let ps = compile_json(
            json!({"k": {"api_key": {"remote": {"cluster": "keys", "path": "/api-keys.json"}}}}),
        )
        .unwrap();
        let k = ps.get("k").unwrap();
        assert!(k.is_remote());
        let Kind::ApiKey(ApiKeys::Remote(r)) = &k.kind else {
            panic!("remote api_key")
        };
        assert_eq!(
            (r.authority.as_str(), r.refresh_seconds, r.timeout_ms),
            ("keys", 300, 2000)
        );
    }

    #[test]
    fn peer_matching() {
        let ids = vec![
            PeerId::Exact("spiffe://td/a".into()),
            PeerId::Prefix("spiffe://td/ops/".into()),
        ];
        assert_eq!(match_peer(&ids, "spiffe://td/a"), Some("spiffe://td/a"));
        assert_eq!(
            match_peer(&ids, "spiffe://td/ops/x/y"),
            Some("spiffe://td/ops/x/y")
        );
        for no in [
            "spiffe://td/a/",
            "spiffe://td/ab",
            "spiffe://td/ops/",
            "spiffe://td/ops",
            "SPIFFE://td/a",
            "",
            "spiffe://td/ops/x\n",
        ] {
            assert_eq!(match_peer(&ids, no), None, "{no:?}");
        }
        let long = format!("spiffe://td/ops/{}", "x".repeat(MAX_IDENTITY_BYTES));
        assert_eq!(match_peer(&ids, &long), None);
    }

    #[test]
    fn sha256_hex_parsing() {
        assert_eq!(parse_sha256_hex(&"0f".repeat(32)), Some([15u8; 32]));
        assert_eq!(parse_sha256_hex(&"0F".repeat(32)), Some([15u8; 32]));
        for bad in [
            "",
            "0f",
            &"0f".repeat(33),
            &format!("{}0g", "0f".repeat(31)),
            &format!("{}+f", "0f".repeat(31)),
            &format!("é{}", "0".repeat(62)),
        ] {
            assert_eq!(parse_sha256_hex(bad), None, "{bad}");
        }
    }

    fn hex_of(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn min_rsa_bits_can_be_lowered() {
        let cfg = json!({"main": {"issuer": "i", "min_rsa_bits": 1024, "jwks": {"inline": {"keys": [testkeys::rsa1024_jwk()]}}}});
        assert!(compile_json(cfg).is_ok());
    }
}
