//! Providers compiled from `providers.<name>`: issuer and audience rules, token
//! sources, forwarding settings and where the keys come from.
//!
//! Inline key sets are parsed here, at configuration time; any unusable inline key is
//! a configuration error naming it (`providers.main.jwks.inline.keys[0]: ...`).

use crate::config::check::{self, in_range, NameChars, MAX_METRIC_NAME};
use crate::config::{ConfigError, JwksConfig, ProviderConfig};
use crate::http;
use crate::jwt::extract::TokenSource;
use crate::jwt::jwks::{KeyRules, KeySet, MAX_RSA_BITS, MIN_RSA_BITS_FLOOR};
use crate::jwt::verify::ClaimsRules;
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

/// One compiled provider.
#[derive(Debug, Clone)]
pub struct Provider {
    name: String,
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
    if p.issuer.is_empty() {
        return Err(ConfigError::new(at("issuer"), "must not be empty"));
    }
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
        if param.is_empty() || param.contains(['&', '=', '#', ' ']) {
            return Err(ConfigError::new(
                at(&format!("from_params[{i}]")),
                "must be a non-empty query parameter name without `&`, `=`, `#` or spaces",
            ));
        }
        sources.push(TokenSource::Param(param.clone()));
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

    let remote = matches!(p.jwks, JwksConfig::Remote(_));
    let key_rules = KeyRules {
        min_rsa_bits: p.min_rsa_bits,
        allow_symmetric: !remote,
    };
    let keys = match &p.jwks {
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
        JwksConfig::Remote(r) => {
            let rp = |f: &str| at(&format!("jwks.remote.{f}"));
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
            KeySource::Remote(RemoteJwks {
                cluster: r.cluster.clone(),
                authority,
                path: r.path.clone(),
                refresh_seconds: r.refresh_seconds,
                timeout_ms: r.timeout_ms,
            })
        }
    };

    Ok(Provider {
        name: name.to_string(),
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
    fn min_rsa_bits_can_be_lowered() {
        let cfg = json!({"main": {"issuer": "i", "min_rsa_bits": 1024, "jwks": {"inline": {"keys": [testkeys::rsa1024_jwk()]}}}});
        assert!(compile_json(cfg).is_ok());
    }
}
