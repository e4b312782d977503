//! The crate's only public surface: what the benchmarks (`bench/micro/`), the
//! conformance tests (`tests/`) and the fuzz targets (`fuzz/`, module `fuzzing`)
//! drive. The filter itself is the `.wasm` module; nothing here is meant for other
//! crates.
//!
//! Sections of the configuration are compiled from JSON, as the filter compiles
//! them, so the configuration structs stay private.

use crate::config::{self, ConfigError};
use serde_json::Value;

pub use crate::cloak::CloakKeys;
pub use crate::jwt::hostsig::{Backend, Families, SignatureHost, Verifier};
pub use crate::jwt::standin::NativeVerifySignature;
pub use crate::jwt::verify::{verify_jws, verify_jws_with, verify_jwt, ClaimsRules};
pub use crate::jwt::{KeyRules, KeySet};
pub use crate::mask::{Issuer, ResponsePolicy};
pub use crate::quota::{CallerKey, KeyInputs, MemoryStore, QuotaPolicy};
pub use crate::reply::Rejection;
pub use crate::request::{parse_body, ParamInputs, ParamPolicy, RequestPolicy, SchemaRegistry};

/// A fresh root context, as the module makes one for Envoy: the whole-filter bench
/// (bench/micro/filter.rs) configures it and drives its HTTP contexts through the
/// SDK's traits over an in-memory host.
pub fn root_context() -> Box<dyn proxy_wasm::traits::RootContext> {
    crate::logging::init();
    Box::new(crate::root::Root::default())
}

fn section<T: serde::de::DeserializeOwned>(json: &Value) -> Result<T, String> {
    serde_json::from_value(json.clone()).map_err(|e| e.to_string())
}

fn message(e: ConfigError) -> String {
    e.to_string()
}

/// Parses and compiles a whole plugin configuration (JSON text) exactly as the
/// filter does at load: `Ok` with the number of routes, or the error the filter
/// would log, naming the field (`routes[1].match.path: ...`). The OpenAPI importer
/// (`tools/openapi`) checks what it writes with it.
pub fn check_config(bytes: &[u8]) -> Result<usize, String> {
    crate::policy::Policy::from_bytes(bytes)
        .map(|p| p.routes.len())
        .map_err(message)
}

/// Compiles a `routes[].request` section against `registry`.
pub fn request_policy(json: &Value, registry: &SchemaRegistry) -> Result<RequestPolicy, String> {
    let cfg: config::RequestConfig = section(json)?;
    RequestPolicy::compile(&cfg, registry, "request").map_err(message)
}

/// Compiles the `parameters` and `additional_query` of a `routes[].request` section,
/// for a route whose `match.path` is `template`; `Ok(None)` when they ask for nothing.
pub fn param_policy(
    json: &Value,
    template: &str,
    registry: &SchemaRegistry,
) -> Result<Option<ParamPolicy>, String> {
    let cfg: config::RequestConfig = section(json)?;
    let template = crate::route::PathTemplate::parse(template, "match.path").map_err(message)?;
    ParamPolicy::compile(
        &cfg.parameters,
        cfg.additional_query.as_deref(),
        &template,
        registry,
        cfg.assert_formats,
        "request",
    )
    .map_err(message)
}

/// Compiles a `routes[].response` section with the top-level `mask_salt`.
pub fn response_policy(json: &Value, mask_salt: Option<&str>) -> Result<ResponsePolicy, String> {
    cloaking_response_policy(json, mask_salt, None, false)
}

/// Compiles a `routes[].response` section with `mask_salt`, and `cloak_key` for
/// its `cloak` rules, issuing tokens bound to the caller's `sub` with `per_caller`.
pub fn cloaking_response_policy(
    json: &Value,
    mask_salt: Option<&str>,
    cloak_key: Option<&str>,
    per_caller: bool,
) -> Result<ResponsePolicy, String> {
    let cfg: config::ResponseConfig = section(json)?;
    let key = cloak_key.map(|k| Value::String(k.to_string()));
    let issuer = CloakKeys::compile(key.as_ref())
        .map_err(message)?
        .map(|keys| Issuer { keys, per_caller });
    ResponsePolicy::compile(&cfg, mask_salt, issuer, "response").map_err(message)
}

/// Compiles a `routes[].quota` section of route `route` with the default
/// `quota_settings`.
pub fn quota_policy(json: &Value, route: &str) -> Result<QuotaPolicy, String> {
    let cfg: config::QuotaConfig = section(json)?;
    QuotaPolicy::compile(&cfg, &config::QuotaSettings::default(), route, "quota").map_err(message)
}

/// Entry points of the fuzz targets in `fuzz/` (`make fuzz`, `make fuzz-ci`; docs/testing.md,
/// "Fuzzing"): one thin wrapper or re-export per parser, so each fuzzer drives exactly
/// the code the filter runs. Nothing in the filter uses this module, and the `.wasm`
/// module does not contain it (link-time optimisation keeps only what the exported
/// proxy-wasm callbacks reach). No feature flag: the wasm build is unaffected.
#[doc(hidden)]
pub mod fuzzing {
    use serde_json::Value;

    pub use crate::host::Headers;
    pub use crate::http::MediaType;
    pub use crate::json::{JsonError, JsonLimits};
    pub use crate::jwt::hostsig::ecdsa_der;
    pub use crate::jwt::{remove_cookies, remove_query_params, RequestTokens};
    pub use crate::quota::rls::{
        decode_reply as decode_rls_reply, encode_request as encode_rls_request,
        DescriptorStatus as RlsStatus, Reply as RlsReply,
    };
    pub use crate::route::{NormalizedPath, PathTemplate, MAX_PATH_BYTES, MAX_SEGMENTS};

    /// `route::normalize`: a request's `:path` into segments, under
    /// `paths.semicolons: reject` (the default).
    pub fn normalize_path(raw: &str) -> Result<NormalizedPath, &'static str> {
        crate::route::normalize(raw, crate::config::Semicolons::Reject)
    }

    /// `route::normalize` under `paths.semicolons: strip` (servlet-style `;params`).
    pub fn normalize_path_strip(raw: &str) -> Result<NormalizedPath, &'static str> {
        crate::route::normalize(raw, crate::config::Semicolons::Strip)
    }

    /// A route's `match.path` template, compiled as the configuration does.
    pub fn path_template(template: &str) -> Result<PathTemplate, String> {
        PathTemplate::parse(template, "template").map_err(|e| e.to_string())
    }

    /// Matches a normalised path against a template: the captured parameters.
    pub fn match_template(
        template: &PathTemplate,
        path: &NormalizedPath,
    ) -> Option<Vec<(String, String)>> {
        named(template.matches(path, false))
    }

    /// As [`match_template`], literals compared ASCII-case-insensitively (the
    /// second pass of route matching, for a path that matched no route exactly).
    pub fn match_template_ignore_case(
        template: &PathTemplate,
        path: &NormalizedPath,
    ) -> Option<Vec<(String, String)>> {
        named(template.matches(path, true))
    }

    /// Parameters with their names as plain strings, for comparing.
    fn named(params: Option<crate::route::Params>) -> Option<Vec<(String, String)>> {
        params.map(|ps| ps.into_iter().map(|(n, v)| (n.to_string(), v)).collect())
    }

    /// The strict, bounded JSON parser of request bodies (`json::parse`).
    pub fn parse_json(text: &str, limits: &JsonLimits) -> Result<Value, JsonError> {
        crate::json::parse(text, limits)
    }

    /// Indexes a header map in the proxy-wasm serialization (what
    /// `Headers::request()` does with the host's bytes); `None` if malformed.
    pub fn parse_header_map(bytes: Vec<u8>) -> Option<Headers> {
        Headers::parse(bytes)
    }

    /// A header map in the proxy-wasm serialization, as the host hands it over.
    pub fn serialize_header_map(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        crate::host::serialize(pairs)
    }

    /// The token sources of a `providers` section (`from_headers`, `from_params`,
    /// `from_cookies`), compiled as the configuration does.
    pub struct TokenSources(crate::jwt::Providers);

    /// Compiles a `providers` section (a JSON object of providers by name).
    pub fn token_sources(providers: &Value) -> Result<TokenSources, String> {
        let cfg: std::collections::BTreeMap<String, crate::config::ProviderConfig> =
            super::section(providers)?;
        crate::jwt::Providers::compile(&cfg)
            .map(TokenSources)
            .map_err(super::message)
    }

    impl TokenSources {
        /// The tokens each source finds in `req` (`TokenSource::extract`): one list
        /// per source, providers by name, sources in configuration order.
        pub fn extract(&self, req: &dyn RequestTokens) -> Vec<Vec<String>> {
            self.0
                .iter()
                .flat_map(|p| p.sources.iter().map(|s| s.extract(req).tokens))
                .collect()
        }
    }
}
