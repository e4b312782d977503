//! The crate's only public surface: what the benchmarks (`bench/micro/`) and the
//! conformance tests (`tests/`) drive. The filter itself is the `.wasm` module;
//! nothing here is meant for other crates.
//!
//! Sections of the configuration are compiled from JSON, as the filter compiles
//! them, so the configuration structs stay private.

use crate::config::{self, ConfigError};
use serde_json::Value;

pub use crate::jwt::verify::{verify_jws, verify_jwt, ClaimsRules};
pub use crate::jwt::{KeyRules, KeySet};
pub use crate::mask::ResponsePolicy;
pub use crate::quota::{CallerKey, KeyInputs, MemoryStore, QuotaPolicy};
pub use crate::reply::Rejection;
pub use crate::request::{parse_body, RequestPolicy, SchemaRegistry};

fn section<T: serde::de::DeserializeOwned>(json: &Value) -> Result<T, String> {
    serde_json::from_value(json.clone()).map_err(|e| e.to_string())
}

fn message(e: ConfigError) -> String {
    e.to_string()
}

/// Compiles a `routes[].request` section against `registry`.
pub fn request_policy(json: &Value, registry: &SchemaRegistry) -> Result<RequestPolicy, String> {
    let cfg: config::RequestConfig = section(json)?;
    RequestPolicy::compile(&cfg, registry, "request").map_err(message)
}

/// Compiles a `routes[].response` section with the top-level `mask_salt`.
pub fn response_policy(json: &Value, mask_salt: Option<&str>) -> Result<ResponsePolicy, String> {
    let cfg: config::ResponseConfig = section(json)?;
    ResponsePolicy::compile(&cfg, mask_salt, "response").map_err(message)
}

/// Compiles a `routes[].quota` section of route `route` with the default
/// `quota_settings`.
pub fn quota_policy(json: &Value, route: &str) -> Result<QuotaPolicy, String> {
    let cfg: config::QuotaConfig = section(json)?;
    QuotaPolicy::compile(&cfg, &config::QuotaSettings::default(), route, "quota").map_err(message)
}
