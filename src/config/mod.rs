//! Raw plugin configuration: the public JSON contract (`docs/configuration.md`), as
//! serde structs, and the checks its compilation shares ([`check`]).
//!
//! Every struct denies unknown fields so a typo is a load error, not a silently
//! ignored protection. Parsing goes through [`de`], so the message names the field
//! (`routes[1].match.path: ...`). Nothing here is used on the
//! request path: the policy compiles it into the runtime view.

pub mod check;
mod de;
pub(crate) mod pbstruct;

use crate::json;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Default for `providers.*.clock_skew_seconds`.
pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = 60;
/// Default for `providers.*.jwks.remote.refresh_seconds`.
pub const DEFAULT_JWKS_REFRESH_SECONDS: u64 = 300;
/// Default for `providers.*.jwks.remote.timeout_ms`.
pub const DEFAULT_JWKS_TIMEOUT_MS: u64 = 2000;
/// Default for `routes[].request.max_body_bytes`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Default for `routes[].response.max_body_bytes`: Envoy's default
/// `per_connection_buffer_limit_bytes` (1 MiB). Envoy itself fails a buffered
/// response over that limit, so raise both together.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// A configuration error: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path in the JSON document, e.g. `routes[1].quota.window_seconds`.
    pub path: String,
    /// What is wrong, e.g. `must be > 0`.
    pub message: String,
}

impl ConfigError {
    /// Builds an error for `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "configuration: {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Parses the plugin configuration into [`PluginConfig`].
///
/// Accepts JSON (a `google.protobuf.StringValue` configuration, or Istio's
/// `pluginConfig`) and the binary `google.protobuf.Struct` that Envoy passes when
/// the configuration is written as YAML (see [`pbstruct`]). Errors name the
/// field path where deserialization stopped.
pub fn parse(bytes: &[u8]) -> Result<PluginConfig, ConfigError> {
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return Err(ConfigError::new(
            "",
            "plugin configuration is empty; expected a JSON object with \"routes\"",
        ));
    }
    if !trimmed.starts_with(b"{") {
        if let Ok(value) = pbstruct::decode_struct(bytes) {
            return de::from_value(&value).map_err(path_error);
        }
    }
    // JSON text becomes a `Value` first, so the configuration structs are
    // deserialized from one input type only: each format of its own (`Value` and
    // `&[u8]`) instantiated every struct's deserializer again, about 145 KB of the
    // module. The strict parser refuses duplicate member names (serde's "duplicate
    // field" check does not see them in a `Value`); its errors name the line and
    // column, and type errors after it name the field path.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ConfigError::new("", format!("not valid UTF-8 (at byte {})", e.valid_up_to()))
    })?;
    let value = json::parse(text, &json::CONFIG_LIMITS)
        .map_err(|e| ConfigError::new("", format!("not valid JSON: {e}")))?;
    de::from_value(&value).map_err(path_error)
}

fn path_error(e: de::Error) -> ConfigError {
    ConfigError::new(e.path(), clean_serde_message(e.message()))
}

/// Drops the noise of serde's untagged-enum message so it says what was expected.
fn clean_serde_message(msg: &str) -> String {
    msg.replace(
        "data did not match any variant of untagged enum ",
        "expected one of the forms of ",
    )
}

/// The whole plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// JWT providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Ordered routes; the first match wins.
    pub routes: Vec<RouteConfig>,
    /// What to do with a request no route matches.
    #[serde(default)]
    pub unmatched: Unmatched,
    /// How request paths are read before routing.
    #[serde(default)]
    pub paths: PathsConfig,
    /// Security headers added to responses.
    #[serde(default)]
    pub security_headers: SecurityHeadersConfig,
    /// Shared JSON Schemas, referenced by `$id` from `routes[].request.schema`.
    #[serde(default)]
    pub schemas: Vec<Value>,
    /// Settings shared by all route quotas.
    #[serde(default)]
    pub quota_settings: QuotaSettings,
    /// How the client address is taken for `quota.by: ip`.
    #[serde(default)]
    pub client_ip: ClientIpConfig,
    /// Salt for `hash` mask actions (required when a route uses `hash`).
    #[serde(default)]
    pub mask_salt: Option<String>,
    /// Key of identifier cloaking (required when a route cloaks): base64 of 32 or
    /// 64 random bytes, or a list of them, the first making tokens and every one
    /// opening them (key rotation). A value checked by `cloak::CloakKeys::compile`,
    /// as one field for both forms costs the least module.
    #[serde(default)]
    pub cloak_key: Option<Value>,
    /// How often each worker adds its counted decisions to Envoy's stats, in
    /// milliseconds; 0 adds every count at once (one host call per counter per
    /// request). See README "Metrics".
    #[serde(default = "default_metrics_flush_ms")]
    pub metrics_flush_ms: u64,
    /// `enforce` (default) or `report`; a route's own `mode` wins. Read as text
    /// and checked by [`Mode::parse`]: a derived enum costs several KB of module
    /// per type through the path-tracking deserializer.
    #[serde(default)]
    pub mode: Option<String>,
    /// The audit log (`records`, `pseudonym_key`), checked by
    /// `audit::AuditPolicy::compile` (a string map, for the same reason as `mode`).
    #[serde(default)]
    pub audit: BTreeMap<String, String>,
    /// Automated blocking rules.
    #[serde(default)]
    pub blocking: BlockingConfig,
    /// Whether the Wasm filter in Envoy has `allow_on_headers_stop_iteration:
    /// true`, which decides how bodies are held (see docs/configuration.md).
    #[serde(default = "default_true")]
    pub allow_on_headers_stop_iteration: bool,
    /// `{cluster, domain, timeout_ms}`: the rate-limit service of global quotas,
    /// checked by `quota::RateLimitService::compile` (a `Value`, for the same
    /// reason as `mode`).
    #[serde(default)]
    pub rate_limit_service: Option<Value>,
    /// Where RS* and ES* signatures are verified: `auto`, `module` or `host`
    /// ([`SignatureBackend`], read by [`SignatureBackend::from_name`]).
    #[serde(default)]
    pub signature_backend: Option<String>,
}

/// `blocking`: rules that block callers after a sequence of events.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockingConfig {
    /// The rules, each counted on its own.
    #[serde(default)]
    pub rules: Vec<BlockRuleConfig>,
}

/// `blocking.rules[]`. `count` and `mode` are text checked at compile time (see
/// [`PluginConfig::mode`] for why).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRuleConfig {
    /// Name used in metrics and audit records.
    pub name: String,
    /// `auth_failures`, `not_found`, `distinct_param` or `status`.
    pub count: String,
    /// Whose events: `ip`, `claim:<name>` or `header:<name>`.
    #[serde(default = "default_block_by")]
    pub by: String,
    /// Events tolerated within the window; the next starts the block.
    pub max: u64,
    /// Window of the count.
    pub window_seconds: u64,
    /// How long a block lasts.
    pub block_seconds: u64,
    /// Route names the rule counts on; absent: every route.
    #[serde(default)]
    pub routes: Option<Vec<String>>,
    /// The path parameter of `distinct_param`.
    #[serde(default)]
    pub param: Option<String>,
    /// The upstream statuses of `status`.
    #[serde(default)]
    pub statuses: Vec<u64>,
    /// `enforce` or `report`; absent: the top-level `mode`.
    #[serde(default)]
    pub mode: Option<String>,
}

fn default_block_by() -> String {
    "ip".to_string()
}

/// `mode` (top level and `routes[].mode`): what the filter does with a refusal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Refuse (default).
    #[default]
    Enforce,
    /// Let the request or response through unchanged; count the refusal as
    /// `report.<reason>` and write it to the audit log with `enforced: false`.
    Report,
}

impl Mode {
    /// Reads a `mode` field; `field` names it in the error.
    pub fn parse(text: Option<&str>, field: &str) -> Result<Option<Mode>, ConfigError> {
        match text {
            None => Ok(None),
            Some("enforce") => Ok(Some(Mode::Enforce)),
            Some("report") => Ok(Some(Mode::Report)),
            Some(other) => Err(ConfigError::new(
                field,
                format!(
                    "unknown variant `{}`, expected `enforce` or `report`",
                    check::clip(other)
                ),
            )),
        }
    }
}

/// Default of `metrics_flush_ms`.
pub const DEFAULT_METRICS_FLUSH_MS: u64 = 1000;
/// Upper bound of `metrics_flush_ms`: stats older than this are no use to an operator.
pub const MAX_METRICS_FLUSH_MS: u64 = 60_000;

fn default_metrics_flush_ms() -> u64 {
    DEFAULT_METRICS_FLUSH_MS
}

/// `unmatched`: what happens to a request that matches no route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// 404 problem+json (default).
    #[default]
    Deny,
    /// Pass untouched (counted and logged as an undeclared endpoint).
    Allow,
}

/// `signature_backend`: which code verifies RS256/384/512 and ES256/384/512
/// signatures. The other algorithms are always verified in the module.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignatureBackend {
    /// Envoy's `verify_signature` for each family it passed the configure-time
    /// check on, the module for the rest (default).
    #[default]
    Auto,
    /// The module only (ring and the RustCrypto curves).
    Module,
    /// Envoy's `verify_signature` for all of them; the configuration is refused
    /// if it fails the check.
    Host,
}

impl SignatureBackend {
    /// Reads `signature_backend`. The field is a string in [`PluginConfig`] and
    /// read here rather than derived as an enum: serde's enum machinery, instantiated
    /// for one more type, is about 1.5 KB of the module. The error reads as serde's.
    pub fn from_name(name: Option<&str>) -> Result<SignatureBackend, ConfigError> {
        match name {
            None | Some("auto") => Ok(SignatureBackend::Auto),
            Some("module") => Ok(SignatureBackend::Module),
            Some("host") => Ok(SignatureBackend::Host),
            Some(other) => Err(ConfigError::new(
                "signature_backend",
                format!("unknown variant `{other}`, expected one of `auto`, `module`, `host`"),
            )),
        }
    }
}

/// `paths`: how request paths are read before routing.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// What a `;` in a path segment means.
    pub semicolons: Semicolons,
}

/// `paths.semicolons`: what a `;` in a path segment means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Semicolons {
    /// 400 `bad-path` (default).
    #[default]
    Reject,
    /// A path parameter, as servlet containers read it: the text from the `;` to
    /// the end of the segment is ignored for routing and kept for the upstream.
    Strip,
}

/// `security_headers`: headers added to every response the filter sees.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeadersConfig {
    /// Master switch.
    pub enabled: bool,
    /// `X-Content-Type-Options: nosniff`.
    pub nosniff: bool,
    /// `X-Frame-Options` value; empty string disables.
    pub frame_options: String,
    /// `Referrer-Policy` value; empty string disables.
    pub referrer_policy: String,
    /// `Cache-Control: no-store` on routes with `auth`.
    pub no_store_on_auth: bool,
    /// `Strict-Transport-Security` max-age in seconds; absent = no HSTS.
    pub hsts_max_age_seconds: Option<u64>,
    /// Add `; includeSubDomains` to HSTS.
    pub hsts_include_subdomains: bool,
    /// Response headers removed because they disclose the server stack.
    pub remove: Vec<String>,
}

impl Default for SecurityHeadersConfig {
    fn default() -> Self {
        SecurityHeadersConfig {
            enabled: true,
            nosniff: true,
            frame_options: "DENY".to_string(),
            referrer_policy: "no-referrer".to_string(),
            no_store_on_auth: true,
            hsts_max_age_seconds: None,
            hsts_include_subdomains: false,
            remove: vec![
                "server".to_string(),
                "x-powered-by".to_string(),
                "x-aspnet-version".to_string(),
                "x-aspnetmvc-version".to_string(),
            ],
        }
    }
}

/// A provider (`providers.<name>`): a JWT provider (`issuer` and `jwks`), `peer` or
/// `api_key`. `peer` and `api_key` stay JSON values checked when the providers are
/// compiled: two more derived structs would cost module size in the deserializer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Required `iss` (JWT providers).
    #[serde(default)]
    pub issuer: String,
    /// If non-empty, `aud` must contain one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Where keys come from (JWT providers).
    #[serde(default)]
    pub jwks: Option<JwksConfig>,
    /// `{"spiffe_ids": [...]}`: the mTLS peer identities accepted.
    #[serde(default)]
    pub peer: Option<Value>,
    /// `{"keys": [...], "from_headers": [...], "from_params": [...], "forward": bool}`.
    #[serde(default)]
    pub api_key: Option<Value>,
    /// The token must be bound to the connection's client certificate (RFC 8705).
    #[serde(default)]
    pub require_cert_binding: bool,
    /// Header token sources; default `Authorization: Bearer `.
    #[serde(default)]
    pub from_headers: Option<Vec<HeaderSource>>,
    /// Query parameter token sources.
    #[serde(default)]
    pub from_params: Vec<String>,
    /// Cookie token sources.
    #[serde(default)]
    pub from_cookies: Vec<String>,
    /// Allowed clock skew for `exp`/`nbf`/`iat`.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// Maximum `exp - iat` (or `exp - now` when `iat` is absent).
    #[serde(default)]
    pub max_lifetime_seconds: Option<u64>,
    /// Reject tokens without `exp`.
    #[serde(default = "default_true")]
    pub require_expiration: bool,
    /// Keep the token on the request sent upstream.
    #[serde(default = "default_true")]
    pub forward: bool,
    /// Copy claims into request headers.
    #[serde(default)]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Header receiving the base64url verified payload.
    #[serde(default)]
    pub forward_payload_header: Option<String>,
    /// Minimum RSA modulus size accepted in the key set.
    #[serde(default = "default_min_rsa_bits")]
    pub min_rsa_bits: u32,
}

fn default_clock_skew() -> u64 {
    DEFAULT_CLOCK_SKEW_SECONDS
}
fn default_true() -> bool {
    true
}
fn default_min_rsa_bits() -> u32 {
    2048
}

/// `providers.*.jwks`: exactly one of `inline` or `remote`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum JwksConfig {
    /// A JWKS object (`{"keys": [...]}`).
    Inline(Value),
    /// Fetched from an Envoy cluster.
    Remote(RemoteJwksConfig),
}

/// `providers.*.jwks.remote`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwksConfig {
    /// Envoy cluster name.
    pub cluster: String,
    /// `:authority` of the fetch; defaults to the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    /// Path of the JWKS document.
    pub path: String,
    /// Refresh period.
    #[serde(default = "default_refresh")]
    pub refresh_seconds: u64,
    /// Fetch timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_refresh() -> u64 {
    DEFAULT_JWKS_REFRESH_SECONDS
}
fn default_timeout_ms() -> u64 {
    DEFAULT_JWKS_TIMEOUT_MS
}

/// A header token source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSource {
    /// Header name (case-insensitive).
    pub name: String,
    /// Prefix before the token, e.g. `Bearer `.
    #[serde(default)]
    pub value_prefix: Option<String>,
}

/// `claim_to_headers[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Claim name, dotted for nested claims.
    pub claim: String,
    /// Request header to set.
    pub header: String,
}

/// A route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in metrics and logs.
    pub name: String,
    /// What requests the route matches.
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    /// Authentication and authorization.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Rate limit: one [`QuotaConfig`] object or an array of them, read by
    /// [`quota_entries`] (a `Value`: an untagged enum would cost module bytes).
    #[serde(default)]
    pub quota: Option<Value>,
    /// Request body validation.
    #[serde(default)]
    pub request: Option<RequestConfig>,
    /// Response masking.
    #[serde(default)]
    pub response: Option<ResponseConfig>,
    /// `enforce` or `report` ([`Mode::parse`]); absent: the top-level `mode`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Identifier cloaking (`params`, `query`, `per_caller`), read as a value and
    /// checked by `cloak::RouteCloak::compile` (see [`PluginConfig::mode`] for why).
    #[serde(default)]
    pub cloak: Option<Value>,
}

/// `routes[].match`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Path template.
    pub path: String,
    /// Allowed methods; absent = any.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
}

/// `routes[].auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Provider requirement.
    pub requires: Requirement,
    /// Let requests without any token through (invalid tokens still fail).
    #[serde(default)]
    pub allow_missing: bool,
    /// Claim rules, by claim name.
    #[serde(default)]
    pub claims: BTreeMap<String, ClaimCondition>,
    /// Path parameter -> claim that must equal it.
    #[serde(default)]
    pub bind: BTreeMap<String, String>,
}

/// `requires`: a provider name, `{any: [...]}` or `{all: [...]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Requirement {
    /// One provider by name.
    Provider(String),
    /// Any / all of nested requirements.
    Combination(Combination),
}

/// `{any: [...]}` or `{all: [...]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Combination {
    /// At least one must be satisfied.
    Any(Vec<Requirement>),
    /// All must be satisfied.
    All(Vec<Requirement>),
}

/// A claim condition: exactly one of `any_of`, `all_of`, `equals`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum ClaimCondition {
    /// The claim holds at least one of these values.
    AnyOf(Vec<Value>),
    /// The claim holds all of these values.
    AllOf(Vec<Value>),
    /// The claim equals this value.
    Equals(Value),
}

/// `response.unmasked_for`: `{claim, any_of | all_of | equals}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRuleConfig {
    /// Claim name (dotted for nested).
    pub claim: String,
    /// Any of these values.
    #[serde(default)]
    pub any_of: Option<Vec<Value>>,
    /// All of these values.
    #[serde(default)]
    pub all_of: Option<Vec<Value>>,
    /// Exactly this value.
    #[serde(default)]
    pub equals: Option<Value>,
}

/// `routes[].quota`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests allowed per window.
    pub limit: u64,
    /// Window length.
    pub window_seconds: u64,
    /// `ip`, `route`, `claim:<name>` or `header:<name>`.
    #[serde(default = "default_quota_by")]
    pub by: String,
    /// What happens when the shared-data store fails.
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Send `RateLimit-*` headers on admitted responses too.
    #[serde(default = "default_true")]
    pub headers_on_success: bool,
    /// `local` (default) or `global`; text checked at compile time (see
    /// [`PluginConfig::mode`] for why).
    #[serde(default)]
    pub scope: Option<String>,
    /// `{ "claim": <name>, "limits": { <value>: <limit> } }`, checked at compile time.
    #[serde(default)]
    pub tiers: Option<Value>,
}

/// The quota objects of `routes[N].quota` (an object or an array of objects), each
/// with its config path (`routes[1].quota`, `routes[1].quota[0]`); `base` is the
/// path of the `quota` field.
pub fn quota_entries(value: &Value, base: &str) -> Result<Vec<(QuotaConfig, String)>, ConfigError> {
    let one = |v: &Value, path: String| {
        de::from_value::<QuotaConfig>(v)
            .map(|q| (q, path.clone()))
            .map_err(|e| {
                let at = if e.path().is_empty() {
                    path.clone()
                } else {
                    format!("{path}.{}", e.path())
                };
                ConfigError::new(at, clean_serde_message(e.message()))
            })
    };
    match value {
        Value::Array(items) if items.is_empty() => {
            Err(ConfigError::new(base, "must hold at least one quota"))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| one(v, format!("{base}[{i}]")))
            .collect(),
        Value::Object(_) => Ok(vec![one(value, base.to_string())?]),
        _ => Err(ConfigError::new(
            base,
            "expected a quota object or an array of quota objects",
        )),
    }
}

fn default_quota_by() -> String {
    "route".to_string()
}

/// Fail closed (reject) or open (pass) when something the filter depends on fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Reject (default).
    #[default]
    Closed,
    /// Let the request through and count it.
    Open,
    /// Global quotas only: count in this Envoy's shared data instead.
    Local,
}

/// `quota_settings`: store-wide limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    /// Maximum number of distinct quota keys per route kept in shared data.
    pub max_keys_per_route: u32,
    /// Compare-and-swap retries before counting a store error.
    pub max_cas_retries: u32,
    /// Secret mixed into the hash that places callers in quota slots, so the
    /// fingerprints kept in shared data cannot be reversed by a dictionary and
    /// callers cannot aim at another caller's slot. At least 16 bytes; absent = a
    /// built-in key. Changing it re-places every caller (a one-time reset).
    pub key_salt: Option<String>,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings {
            max_keys_per_route: 10_000,
            max_cas_retries: 16,
            key_salt: None,
        }
    }
}

/// `client_ip`: how `quota.by: ip` finds the caller.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientIpConfig {
    /// Number of trusted proxies in front of Envoy that append to
    /// `X-Forwarded-For`; 0 (default) = use Envoy's `source.address` only.
    pub xff_trusted_hops: u32,
}

/// `routes[].request`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// Accepted media types; default `["application/json"]`. JSON types only:
    /// `application/json`, `type/x+json` (RFC 6839), or `type/*+json` for all of them.
    #[serde(default)]
    pub content_types: Option<Vec<String>>,
    /// Body size cap in bytes; default [`DEFAULT_MAX_BODY_BYTES`], at most 64 MiB.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// JSON Schema for the body.
    #[serde(default)]
    pub schema: Option<Value>,
    /// JSON threat limits.
    #[serde(default)]
    pub limits: Option<JsonLimitsConfig>,
    /// Make `format` an assertion in draft 2020-12 schemas too (there it is only an
    /// annotation by default; draft 7 schemas always assert it). Default `false`.
    /// Applies to the parameters' schemas as well.
    #[serde(default)]
    pub assert_formats: bool,
    /// Path, query and header parameters, checked at request headers. Kept as
    /// JSON and read by [`ParameterConfig::from_value`]: a derived struct costs
    /// several KB of module through the path-tracking deserializer.
    #[serde(default)]
    pub parameters: Vec<Value>,
    /// `allow` (default) or `deny`: what an undeclared query parameter gets. Text,
    /// checked when compiled, as `mode` is.
    #[serde(default)]
    pub additional_query: Option<String>,
}

impl RequestConfig {
    /// Whether the section says anything about the body. A section with only
    /// `parameters` (or `additional_query`) leaves bodies alone; an empty one
    /// checks them with the defaults.
    pub fn checks_body(&self) -> bool {
        self.content_types.is_some()
            || self.max_body_bytes.is_some()
            || self.schema.is_some()
            || self.limits.is_some()
            || (self.parameters.is_empty() && self.additional_query.is_none())
    }
}

/// `routes[].request.parameters[]`, after OpenAPI's parameter object.
#[derive(Debug, Clone)]
pub struct ParameterConfig<'a> {
    /// `in`: `path`, `query` or `header` (checked when compiled).
    pub location: &'a str,
    /// The parameter's name: a template parameter, a query key or a header name.
    pub name: &'a str,
    /// Whether a request must carry it (path parameters always do).
    pub required: bool,
    /// JSON Schema of the value; absent: only presence is checked.
    pub schema: Option<&'a Value>,
}

impl<'a> ParameterConfig<'a> {
    /// Reads one entry of `parameters`, with the same strictness as the derived
    /// structs (unknown fields refused). `path` names the entry in errors.
    pub fn from_value(value: &'a Value, path: &str) -> Result<Self, ConfigError> {
        let Some(obj) = value.as_object() else {
            return Err(ConfigError::new(
                path,
                "invalid type: expected a parameter object",
            ));
        };
        let text = |key: &str| match obj.get(key) {
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(ConfigError::new(
                format!("{path}.{key}"),
                "invalid type: expected a string",
            )),
            None => Err(ConfigError::new(path, format!("missing field `{key}`"))),
        };
        for key in obj.keys() {
            if !matches!(key.as_str(), "in" | "name" | "required" | "schema") {
                return Err(ConfigError::new(
                    format!("{path}.{}", check::clip(key)),
                    format!(
                        "unknown field `{}`, expected one of `in`, `name`, `required`, `schema`",
                        check::clip(key)
                    ),
                ));
            }
        }
        let required = match obj.get("required") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ConfigError::new(
                    format!("{path}.required"),
                    "invalid type: expected a boolean",
                ))
            }
        };
        Ok(ParameterConfig {
            location: text("in")?,
            name: text("name")?,
            required,
            schema: obj.get("schema"),
        })
    }
}

/// JSON threat limits; every field optional with a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonLimitsConfig {
    /// Maximum nesting depth (default 32, at most 64).
    pub max_depth: Option<u32>,
    /// Maximum entries in one object (default 1,000).
    pub max_object_entries: Option<u32>,
    /// Maximum elements in one array (default 10,000).
    pub max_array_length: Option<u32>,
    /// Maximum length of one string or member name, in bytes as written (default 65,536).
    pub max_string_length: Option<u32>,
    /// Maximum number of values in the document (default 100,000).
    pub max_total_values: Option<u32>,
    /// Refuse numbers a 64-bit float does not hold as sent (default `true`).
    pub exact_numbers: Option<bool>,
}

/// `routes[].response`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// Mask rules.
    #[serde(default)]
    pub mask: Vec<MaskRuleConfig>,
    /// Callers who see the original body.
    #[serde(default)]
    pub unmasked_for: Option<ClaimRuleConfig>,
    /// Sensitive-data detectors.
    #[serde(default)]
    pub detect: Option<DetectConfig>,
    /// Largest response body that is buffered for masking.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// What to do with a body that cannot be masked (compressed, not JSON, too large).
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Mask non-2xx responses too.
    #[serde(default = "default_true")]
    pub mask_errors: bool,
}

/// `response.mask[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskRuleConfig {
    /// JSONPath subset.
    pub path: String,
    /// What to do with the value.
    pub action: MaskAction,
    /// Characters kept by `keep_last`.
    #[serde(default)]
    pub n: Option<u32>,
    /// What `cloak` tokens stand for (`shop`, `order`): a token opens only as its kind.
    #[serde(default)]
    pub kind: Option<String>,
}

/// Mask action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskAction {
    /// Delete the field.
    Remove,
    /// Replace with `"[REDACTED]"`.
    Redact,
    /// Keep the last `n` characters.
    KeepLast,
    /// Salted SHA-256 hex.
    Hash,
    /// An opaque token the filter turns back into the value on the way in.
    Cloak,
}

/// `response.detect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Built-in detectors by name: `card`, `us_ssn`, `email`, `aws_access_key`,
    /// `private_key`, `jwt`.
    #[serde(default)]
    pub builtin: Vec<String>,
    /// User patterns.
    #[serde(default)]
    pub patterns: Vec<PatternConfig>,
    /// What to do on a hit.
    pub action: DetectAction,
}

/// A user-defined detector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// Name used in metrics.
    pub name: String,
    /// `regex-lite` pattern.
    pub regex: String,
}

/// Detector action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectAction {
    /// Replace the matching text.
    Redact,
    /// Withhold the whole body.
    Block,
    /// Count and log only.
    Report,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        match parse(json.as_bytes()) {
            Ok(_) => String::from("<ok>"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_parses_with_defaults() {
        let cfg = parse(br#"{"routes":[{"name":"h","match":{"path":"/healthz"}}]}"#);
        let cfg = cfg.map_err(|e| e.to_string());
        assert!(cfg.is_ok(), "{cfg:?}");
        if let Ok(cfg) = cfg {
            assert_eq!(cfg.unmatched, Unmatched::Deny);
            assert!(cfg.security_headers.enabled);
            assert_eq!(cfg.routes[0].matcher.methods, None);
        }
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let e = err(
            r#"{"routes":[{"name":"a","match":{"path":"/a"}},{"name":"b","match":{"path":"/b","method":["GET"]}}]}"#,
        );
        assert!(
            e.starts_with(
                "routes[1].match.method: unknown field `method`, expected `path` or `methods`"
            ),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        // `quota` is read at compile time (an object or an array).
        let raw = r#"{"routes":[{"name":"a","match":{"path":"/a"},"quota":{"limit":"ten","window_seconds":1}}]}"#;
        let e = match crate::policy::Policy::from_bytes(raw.as_bytes()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert!(e.starts_with("routes[0].quota.limit: invalid type"), "{e}");
    }

    #[test]
    fn bad_enum_value_is_named() {
        let e = err(r#"{"routes":[],"unmatched":"maybe"}"#);
        assert!(e.starts_with("unmatched: unknown variant `maybe`"), "{e}");
    }

    #[test]
    fn signature_backend_values() {
        let backend = |json: &str| {
            parse(json.as_bytes())
                .and_then(|c| SignatureBackend::from_name(c.signature_backend.as_deref()))
                .map_err(|e| e.to_string())
        };
        assert_eq!(backend(r#"{"routes":[]}"#), Ok(SignatureBackend::Auto));
        for (text, want) in [
            ("auto", SignatureBackend::Auto),
            ("module", SignatureBackend::Module),
            ("host", SignatureBackend::Host),
        ] {
            let json = format!(r#"{{"routes":[],"signature_backend":"{text}"}}"#);
            assert_eq!(backend(&json), Ok(want));
        }
        assert_eq!(
            backend(r#"{"routes":[],"signature_backend":"envoy"}"#),
            Err(
                "signature_backend: unknown variant `envoy`, expected one of `auto`, `module`, `host`"
                    .to_string()
            )
        );
        assert!(err(r#"{"routes":[],"signature_backend":true}"#)
            .starts_with("signature_backend: invalid type: boolean `true`, expected a string"));
    }

    #[test]
    fn missing_routes_is_reported() {
        let e = err(r#"{}"#);
        assert!(e.contains("missing field `routes`"), "{e}");
    }

    #[test]
    fn empty_and_non_json_configs_are_reported() {
        assert!(err("").contains("plugin configuration is empty"));
        assert!(
            err("routes: []").contains("expected value"),
            "{}",
            err("routes: []")
        );
        assert!(err(r#"{"routes":[]} x"#).contains("trailing"));
    }

    #[test]
    fn duplicate_members_are_refused_with_their_position() {
        // Which of the two applies would depend on the parser: refuse both.
        let e = err(r#"{"routes":[],"unmatched":"allow","unmatched":"deny"}"#);
        assert_eq!(
            e,
            "configuration: not valid JSON: duplicate member name in an object at line 1 column 44"
        );
    }
}
