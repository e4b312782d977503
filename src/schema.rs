//! Request body checks for routes with a `request` section: media type, size, JSON
//! threat limits and JSON Schema.
//!
//! Everything here is pure (no proxy-wasm calls) and compiled once at configure time:
//! [`SchemaRegistry::compile`] checks the shared `schemas`, [`RequestPolicy::compile`]
//! turns one `routes[].request` into a [`RequestPolicy`]. On the request path the glue
//! calls, in order:
//!
//! 1. [`RequestPolicy::check_headers`] at request headers: 415 for a media type that is
//!    not accepted, 413 for a declared `Content-Length` over the cap, and a
//!    [`BodyPlan`] telling whether the body must be held and validated.
//! 2. [`RequestPolicy::check_size`] on every body chunk with the cumulative size, so a
//!    body is refused (413) as soon as it passes `max_body_bytes`, before it is all
//!    buffered.
//! 3. [`RequestPolicy::validate`] once, on the complete body.
//!
//! ## Validator
//! JSON Schema is evaluated by [`boon`] (drafts 2020-12 and 7 pass 100% of the
//! required JSON-Schema-Test-Suite; see `tests/conformance_schema.rs`). It was chosen
//! over `jsonschema` for module size: +1.4 MB of Wasm against +2.8 MB (measurements in
//! the closing note of issue 5). Its `pattern` engine is regex-lite, through a shim
//! that stands in for the `regex` crate boon asks for (`vendor/regex-lite-shim`, to
//! save 0.69 MB of module); matching time is linear in the input (no catastrophic
//! backtracking).
//!
//! ## Threat limits
//! A request body is parsed once, byte by byte, by a strict non-recursive parser
//! ([`crate::strict_json`]) that checks the limits as it goes: nesting depth, entries
//! per object, elements per array, bytes per string and the total number of values
//! are bounded ([`JsonLimits`]). It keeps one frame per open container (at most
//! `max_depth`, itself at most [`MAX_DEPTH_CEILING`]), measures each string before
//! allocating it, and stops at the first excess, so a 100,000-deep array or a 10 MB
//! string costs bounded work and memory, and no tree grows past what the limits
//! allow.
//!
//! ## Drafts and references
//! A schema without `$schema` is draft 2020-12; `"$schema":
//! "http://json-schema.org/draft-07/schema#"` selects draft 7 (boon also reads drafts
//! 2019-09, 6 and 4, which are not part of the tested contract). Registry entries
//! without `$schema` are read in the draft of the route schema that refers to them.
//! Nothing is ever fetched: a `$ref` is resolved inside the schema itself, against the
//! top-level `schemas` registry (by `$id`) or against boon's built-in meta-schemas;
//! anything else is a configuration error. (A registry entry is checked on its own as
//! 2020-12 unless it has a `$schema`: give draft-7-only entries one.)
//!
//! `format` is an annotation in 2020-12 (the spec's default) unless the route sets
//! `assert_formats: true`; draft 7 schemas always assert it. `pattern`s use
//! regex-lite: look-around, back-references, Unicode properties other than
//! General_Category values and class set operations are refused at configure time.
//!
//! Known upstream bug (boon 0.6.1 and its master branch): a failure found by `items`
//! after `prefixItems` (or by `additionalItems` after an `items` array, draft 7) gets
//! an index counted from 0 at the first item those keywords check, e.g. `/1` instead
//! of `/2` for the third item after one `prefixItems` entry. The verdict is right;
//! only that `instancePath` is off (pinned by a test).

use crate::config::{ConfigError, JsonLimitsConfig, RequestConfig, DEFAULT_MAX_BODY_BYTES};
use crate::reply::{Rejection, SchemaError};
use crate::strict_json::{self, JsonError};
use boon::{CompileError, Compiler, Draft, ErrorKind, InstanceLocation, InstanceToken, Schemas};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt::{self, Write as _};
use std::rc::Rc;

/// Media type accepted when `content_types` is absent.
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";
/// Largest `max_body_bytes` a configuration may set (64 MiB). The whole body is
/// held in the Wasm VM's memory, once per request in flight.
pub const MAX_BODY_BYTES_CEILING: u64 = 64 * 1024 * 1024;

/// Default `limits.max_depth`: nesting levels of arrays and objects (`[]` is 1).
pub const DEFAULT_MAX_DEPTH: u32 = 32;
/// Largest `limits.max_depth` a configuration may set. Keeps boon's recursive
/// evaluation inside the 1 MiB stack of a Rust wasm32 module (the parser does not
/// recurse): measured in V8, a 64-deep document against a recursive schema with
/// four combinators per level needs under 512 KiB, a 100-deep one over 512 KiB.
pub const MAX_DEPTH_CEILING: u32 = 64;
/// Default `limits.max_object_entries`: members of one object.
pub const DEFAULT_MAX_OBJECT_ENTRIES: u32 = 1_000;
/// Default `limits.max_array_length`: elements of one array.
pub const DEFAULT_MAX_ARRAY_LENGTH: u32 = 10_000;
/// Default `limits.max_string_length`: bytes of one string or member name, as
/// written in the body (an escape sequence counts with its backslash).
pub const DEFAULT_MAX_STRING_LENGTH: u32 = 64 * 1024;
/// Default `limits.max_total_values`: every scalar, array and object in the document
/// (member names are not values).
pub const DEFAULT_MAX_TOTAL_VALUES: u32 = 100_000;

/// At most this many schema failures are listed in a 400's `errors`.
pub const MAX_SCHEMA_ERRORS: usize = 20;
/// Each failure's `message` is cut to this many characters.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 200;
/// Each failure's `instancePath` is cut to this many bytes (then ends with `…`).
pub const MAX_POINTER_CHARS: usize = 256;
/// Configuration error messages about a schema are cut to this many characters.
const MAX_CONFIG_MESSAGE_CHARS: usize = 600;

/// Metric reason of a body that passed every check.
pub const REASON_VALIDATED: &str = "validated";
/// Every metric reason a request body check can produce: [`REASON_VALIDATED`] and the
/// [`Rejection::reason`] of each rejection this module returns.
pub const METRIC_REASONS: [&str; 6] = [
    REASON_VALIDATED,
    "content_type",
    "too_large",
    "not_json",
    "schema",
    "limits",
];

/// Methods whose requests normally carry no body (RFC 9110 §9.3). They are not held
/// when they come without one; when they do carry a body it is checked like any other.
const BODYLESS_METHODS: [&str; 5] = ["GET", "HEAD", "DELETE", "OPTIONS", "TRACE"];

/// Location under which a route schema is compiled when it has no `$id`. The
/// `.invalid` TLD (RFC 2606) can never resolve, and nothing is fetched anyway.
const ROUTE_SCHEMA_URL: &str = "https://api-guard.invalid/request-schema.json";

/// Metric reason of a check's outcome: `validated`, or the rejection's reason
/// (`content_type`, `too_large`, `not_json`, `schema`, `limits`).
pub fn metric_reason<T>(outcome: &Result<T, Rejection>) -> &'static str {
    match outcome {
        Ok(_) => REASON_VALIDATED,
        Err(rejection) => rejection.reason(),
    }
}

/// What to do with a request's body, decided at request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPlan {
    /// No body to check: let the request continue at headers.
    Skip,
    /// Hold the request at headers, buffer the body (calling
    /// [`RequestPolicy::check_size`] per chunk) and call [`RequestPolicy::validate`] at
    /// end of stream. Nothing may reach the upstream before it passes.
    Buffer,
}

/// JSON threat limits, resolved from `request.limits` and the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting of arrays and objects.
    pub max_depth: u32,
    /// Most members in one object.
    pub max_object_entries: u32,
    /// Most elements in one array.
    pub max_array_length: u32,
    /// Most bytes in one string or member name, as written.
    pub max_string_length: u32,
    /// Most values in the whole document.
    pub max_total_values: u32,
}

impl Default for JsonLimits {
    fn default() -> Self {
        JsonLimits {
            max_depth: DEFAULT_MAX_DEPTH,
            max_object_entries: DEFAULT_MAX_OBJECT_ENTRIES,
            max_array_length: DEFAULT_MAX_ARRAY_LENGTH,
            max_string_length: DEFAULT_MAX_STRING_LENGTH,
            max_total_values: DEFAULT_MAX_TOTAL_VALUES,
        }
    }
}

impl JsonLimits {
    /// Resolves `limits` (absent fields take the defaults). `path` names the
    /// `limits` object in errors, e.g. `routes[1].request.limits`.
    pub fn from_config(cfg: Option<&JsonLimitsConfig>, path: &str) -> Result<Self, ConfigError> {
        let d = JsonLimits::default();
        let Some(cfg) = cfg else { return Ok(d) };
        let field = |value: Option<u32>, name: &str, default: u32, max: u32| {
            let v = value.unwrap_or(default);
            if v == 0 || v > max {
                Err(ConfigError::new(
                    format!("{path}.{name}"),
                    format!("must be between 1 and {max}"),
                ))
            } else {
                Ok(v)
            }
        };
        Ok(JsonLimits {
            max_depth: field(cfg.max_depth, "max_depth", d.max_depth, MAX_DEPTH_CEILING)?,
            max_object_entries: field(
                cfg.max_object_entries,
                "max_object_entries",
                d.max_object_entries,
                u32::MAX,
            )?,
            max_array_length: field(
                cfg.max_array_length,
                "max_array_length",
                d.max_array_length,
                u32::MAX,
            )?,
            max_string_length: field(
                cfg.max_string_length,
                "max_string_length",
                d.max_string_length,
                u32::MAX,
            )?,
            max_total_values: field(
                cfg.max_total_values,
                "max_total_values",
                d.max_total_values,
                u32::MAX,
            )?,
        })
    }
}

/// A source of schema documents by absolute URL (see [`SchemaRegistry::with_loader`]).
type DocLoader = Rc<dyn Fn(&str) -> Option<Value>>;

/// Shared schemas from the top-level `schemas`, found by their `$id`.
///
/// Also the only source of documents for `$ref`s that leave a route schema: the
/// filter never fetches anything. Tests may add a loader
/// ([`SchemaRegistry::with_loader`]) to serve fixtures; configuration cannot.
#[derive(Clone, Default)]
pub struct SchemaRegistry {
    /// `($id as written, schema)`, in configuration order.
    docs: Vec<(String, Value)>,
    /// Fallback document source for URLs not in `docs` (tests only).
    loader: Option<DocLoader>,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field(
                "ids",
                &self
                    .docs
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("loader", &self.loader.is_some())
            .finish()
    }
}

impl SchemaRegistry {
    /// Checks and indexes the top-level `schemas`. Each entry must be a schema object
    /// with an absolute-URI `$id` (no fragment other than an empty one), unique in the
    /// list, and must compile (its own `$ref`s resolving inside the registry). Errors
    /// name the entry: `schemas[2].$id: ...`, `schemas[2]: ...`. An entry without
    /// `$schema` is checked as draft 2020-12.
    pub fn compile(entries: &[Value]) -> Result<SchemaRegistry, ConfigError> {
        let mut docs: Vec<(String, Value)> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let path = format!("schemas[{i}]");
            let Some(obj) = entry.as_object() else {
                return Err(ConfigError::new(
                    path,
                    "must be a JSON Schema object with an \"$id\"",
                ));
            };
            let id = match obj.get("$id") {
                None => {
                    return Err(ConfigError::new(
                        path,
                        "missing \"$id\"; route schemas refer to registry entries by it",
                    ))
                }
                Some(Value::String(id)) => id,
                Some(_) => return Err(ConfigError::new(format!("{path}.$id"), "must be a string")),
            };
            check_absolute_id(id).map_err(|m| ConfigError::new(format!("{path}.$id"), m))?;
            if let Some(j) = docs.iter().position(|(other, _)| same_id(other, id)) {
                return Err(ConfigError::new(
                    format!("{path}.$id"),
                    format!("\"{}\" is already the $id of schemas[{j}]", clip(id, 100)),
                ));
            }
            docs.push((id.clone(), entry.clone()));
        }
        let registry = SchemaRegistry { docs, loader: None };
        // One compiler for all entries: they may refer to each other.
        let mut compiler = registry.compiler(Draft::V2020_12, false, "schemas")?;
        let mut compiled = Schemas::new();
        for (i, (id, _)) in registry.docs.iter().enumerate() {
            compiler.compile(id, &mut compiled).map_err(|e| {
                ConfigError::new(format!("schemas[{i}]"), describe_compile_error(&e))
            })?;
        }
        Ok(registry)
    }

    /// Adds a fallback source for documents that are not in the registry: called with
    /// an absolute URL (no fragment), it returns the document or `None`. For tests and
    /// tools (the conformance suite serves its `remotes/` this way); the filter itself
    /// never sets one, so it resolves nothing outside the configuration.
    pub fn with_loader(mut self, loader: impl Fn(&str) -> Option<Value> + 'static) -> Self {
        self.loader = Some(Rc::new(loader));
        self
    }

    /// Number of registry entries.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether the registry has no entries.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    fn contains_id(&self, id: &str) -> Option<usize> {
        self.docs.iter().position(|(other, _)| same_id(other, id))
    }

    /// A boon compiler that knows every registry entry and fetches nothing.
    fn compiler(
        &self,
        default_draft: Draft,
        assert_formats: bool,
        path: &str,
    ) -> Result<Compiler, ConfigError> {
        let mut compiler = Compiler::new();
        compiler.set_default_draft(default_draft);
        if assert_formats {
            compiler.enable_format_assertions();
        }
        compiler.use_loader(Box::new(RegistryLoader {
            fallback: self.loader.clone(),
        }));
        for (i, (id, doc)) in self.docs.iter().enumerate() {
            compiler.add_resource(id, doc.clone()).map_err(|e| {
                let at = if path == "schemas" {
                    format!("schemas[{i}].$id")
                } else {
                    path.to_string()
                };
                ConfigError::new(at, format!("invalid $id: {}", describe_compile_error(&e)))
            })?;
        }
        Ok(compiler)
    }
}

/// Serves `$ref` targets that are not registry entries: the test loader if any,
/// otherwise nothing. Registry entries never reach it (boon finds them first), nor do
/// the standard meta-schemas (built into boon).
struct RegistryLoader {
    fallback: Option<DocLoader>,
}

impl boon::UrlLoader for RegistryLoader {
    fn load(&self, url: &str) -> Result<Value, Box<dyn std::error::Error>> {
        if let Some(doc) = self.fallback.as_ref().and_then(|f| f(url)) {
            return Ok(doc);
        }
        Err("no registry entry has this $id (remote references are never fetched)".into())
    }
}

/// `$id`s are compared without an empty trailing fragment (`...json#` is `...json`).
fn same_id(a: &str, b: &str) -> bool {
    a.strip_suffix('#').unwrap_or(a) == b.strip_suffix('#').unwrap_or(b)
}

/// An absolute URI (RFC 3986 §4.3): a scheme, no fragment other than an empty one.
fn check_absolute_id(id: &str) -> Result<(), String> {
    let scheme_ok = id.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if !scheme_ok || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "\"{}\" is not an absolute URI (e.g. https://schemas.example.com/address.json)",
            clip(id, 100)
        ));
    }
    if id
        .split_once('#')
        .is_some_and(|(_, fragment)| !fragment.is_empty())
    {
        return Err("must not have a fragment".to_string());
    }
    Ok(())
}

/// One accepted media type from `content_types`, lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MediaRange {
    /// `application/json`, `application/problem+json`, ...
    Exact { type_: String, subtype: String },
    /// `application/*+json`: every subtype of `type_` with the `+json` suffix (RFC 6839).
    JsonSuffix { type_: String },
}

impl MediaRange {
    fn parse(entry: &str) -> Result<MediaRange, String> {
        let lower = entry.trim().to_ascii_lowercase();
        if lower.contains(';') {
            return Err(format!(
                "\"{}\": parameters are not allowed here (they are ignored when matching)",
                clip(entry, 100)
            ));
        }
        let not_json = || {
            format!(
                "\"{}\" is not a JSON media type; use application/json, a +json type \
                 (RFC 6839) or application/*+json",
                clip(entry, 100)
            )
        };
        let Some((type_, subtype)) = lower.split_once('/') else {
            return Err(not_json());
        };
        if !is_token(type_) {
            return Err(not_json());
        }
        if subtype == "*+json" {
            return Ok(MediaRange::JsonSuffix {
                type_: type_.to_string(),
            });
        }
        let json = subtype == "json"
            || subtype
                .strip_suffix("+json")
                .is_some_and(|prefix| !prefix.is_empty());
        if !is_token(subtype) || subtype.contains('*') || !json {
            return Err(not_json());
        }
        Ok(MediaRange::Exact {
            type_: type_.to_string(),
            subtype: subtype.to_string(),
        })
    }

    fn matches(&self, type_: &str, subtype: &str) -> bool {
        match self {
            MediaRange::Exact {
                type_: t,
                subtype: s,
            } => t == type_ && s == subtype,
            MediaRange::JsonSuffix { type_: t } => {
                t == type_ && subtype.strip_suffix("+json").is_some_and(|p| !p.is_empty())
            }
        }
    }
}

impl fmt::Display for MediaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaRange::Exact { type_, subtype } => write!(f, "{type_}/{subtype}"),
            MediaRange::JsonSuffix { type_ } => write!(f, "{type_}/*+json"),
        }
    }
}

/// RFC 9110 §5.6.2 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// A compiled JSON Schema.
struct CompiledSchema {
    schemas: Schemas,
    index: boon::SchemaIndex,
}

/// The compiled `routes[].request`: everything needed to check a request body, built
/// once at configure time and shared by every request on the route.
pub struct RequestPolicy {
    accepted: Vec<MediaRange>,
    /// `accepted` for the 415's `Accept` header and detail.
    accepted_display: String,
    max_body_bytes: u64,
    limits: JsonLimits,
    schema: Option<CompiledSchema>,
}

impl fmt::Debug for RequestPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestPolicy")
            .field("accepted", &self.accepted_display)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("limits", &self.limits)
            .field("schema", &self.schema.is_some())
            .finish()
    }
}

impl RequestPolicy {
    /// Compiles one `request` section. `path` is where it sits in the configuration
    /// (`routes[1].request`); errors name the field below it, e.g.
    /// `routes[1].request.schema: not a valid JSON Schema: ...`,
    /// `routes[1].request.max_body_bytes: must be between 1 and 67108864`.
    pub fn compile(
        cfg: &RequestConfig,
        registry: &SchemaRegistry,
        path: &str,
    ) -> Result<RequestPolicy, ConfigError> {
        let max_body_bytes = cfg.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 || max_body_bytes > MAX_BODY_BYTES_CEILING {
            return Err(ConfigError::new(
                format!("{path}.max_body_bytes"),
                format!("must be between 1 and {MAX_BODY_BYTES_CEILING}"),
            ));
        }
        let accepted = match &cfg.content_types {
            None => vec![MediaRange::Exact {
                type_: "application".to_string(),
                subtype: "json".to_string(),
            }],
            Some(list) if list.is_empty() => {
                return Err(ConfigError::new(
                    format!("{path}.content_types"),
                    "must list at least one media type",
                ))
            }
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, entry)| {
                    MediaRange::parse(entry)
                        .map_err(|m| ConfigError::new(format!("{path}.content_types[{i}]"), m))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let accepted_display = accepted
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let limits = JsonLimits::from_config(cfg.limits.as_ref(), &format!("{path}.limits"))?;
        let schema = match &cfg.schema {
            None => None,
            Some(schema) => Some(compile_schema(
                schema,
                registry,
                cfg.assert_formats,
                &format!("{path}.schema"),
            )?),
        };
        Ok(RequestPolicy {
            accepted,
            accepted_display,
            max_body_bytes,
            limits,
            schema,
        })
    }

    /// The body size cap (`max_body_bytes` or [`DEFAULT_MAX_BODY_BYTES`]).
    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    /// The JSON threat limits in force.
    pub fn limits(&self) -> &JsonLimits {
        &self.limits
    }

    /// Whether a JSON Schema is configured.
    pub fn has_schema(&self) -> bool {
        self.schema.is_some()
    }

    /// Decides at request headers.
    ///
    /// `content_length` is the declared body size: the `Content-Length` value, or
    /// `Some(0)` when the request headers ended the stream (Envoy's `end_of_stream`),
    /// or `None` when a body of unknown size may follow (HTTP/1.1 chunked, HTTP/2 or 3
    /// without `content-length`). An unparseable `Content-Length` never reaches the
    /// filter: Envoy answers 400 itself.
    ///
    /// - No body (`Some(0)`): [`BodyPlan::Skip`], except that a method that carries a
    ///   body (POST, PUT, PATCH, ...) on a route with a schema is refused (400
    ///   `not_json`): an empty body is no JSON document.
    /// - A body, whatever the method (a GET or DELETE with a body is checked too, so
    ///   nothing unvalidated reaches the upstream): 415 if `Content-Type` is missing or
    ///   not accepted, 413 if the declared length is over the cap, else
    ///   [`BodyPlan::Buffer`].
    ///
    /// Media types compare case-insensitively without parameters
    /// (`Application/JSON; charset=utf-8` is `application/json`); a `charset` other
    /// than UTF-8 is refused, as JSON is UTF-8 (RFC 8259 §8.1).
    pub fn check_headers(
        &self,
        method: &str,
        content_type: Option<&str>,
        content_length: Option<u64>,
    ) -> Result<BodyPlan, Rejection> {
        if content_length == Some(0) {
            // RFC 9110 §9.3: methods are case-sensitive, so "get" is not GET.
            if BODYLESS_METHODS.contains(&method) || self.schema.is_none() {
                return Ok(BodyPlan::Skip);
            }
            return Err(empty_body());
        }
        if !content_type.is_some_and(|ct| self.accepts(ct)) {
            return Err(Rejection::UnsupportedMediaType {
                accepted: self.accepted_display.clone(),
            });
        }
        if let Some(declared) = content_length {
            self.check_size(declared)?;
        }
        Ok(BodyPlan::Buffer)
    }

    /// Fails (413) once the cumulative body size passes `max_body_bytes`. Call it on
    /// every chunk with the total received so far.
    pub fn check_size(&self, total_bytes_so_far: u64) -> Result<(), Rejection> {
        if total_bytes_so_far > self.max_body_bytes {
            return Err(Rejection::PayloadTooLarge {
                limit: self.max_body_bytes,
            });
        }
        Ok(())
    }

    /// Checks a complete body: size, then UTF-8, threat limits and strict JSON
    /// (400 `not_json` / `limits`), then the schema (400 `schema`, with at most
    /// [`MAX_SCHEMA_ERRORS`] failures, each with its JSON Pointer and keyword).
    ///
    /// An empty body passes only on a route without a schema (so a GET announced with
    /// a chunked body that turns out empty is refused on a route with a schema: the
    /// safe side of a rare case). Duplicate member names
    /// are refused (`not_json`): RFC 8259 §4 leaves their meaning open, and a parser
    /// upstream that keeps the first one would see a value that was never validated.
    pub fn validate(&self, body: &[u8]) -> Result<(), Rejection> {
        self.check_size(body.len() as u64)?;
        if body.is_empty() {
            return match self.schema {
                Some(_) => Err(empty_body()),
                None => Ok(()),
            };
        }
        let value = parse_body(body, &self.limits)?;
        self.validate_value(&value)
    }

    /// The schema step of [`Self::validate`] alone, on an already parsed body (for
    /// benchmarks and tools; the filter always calls [`Self::validate`]).
    pub fn validate_value(&self, value: &Value) -> Result<(), Rejection> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        match schema.schemas.validate(value, schema.index) {
            Ok(()) => Ok(()),
            Err(error) => Err(Rejection::SchemaViolation {
                errors: collect_errors(&error),
            }),
        }
    }

    fn accepts(&self, header: &str) -> bool {
        let mut parts = header.split(';');
        let media_type = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let Some((type_, subtype)) = media_type.split_once('/') else {
            return false;
        };
        if !is_token(type_) || !is_token(subtype) {
            return false;
        }
        for param in parts {
            if let Some((name, value)) = param.split_once('=') {
                if name.trim().eq_ignore_ascii_case("charset") {
                    let value = value.trim().trim_matches('"');
                    if !value.eq_ignore_ascii_case("utf-8") && !value.eq_ignore_ascii_case("utf8") {
                        return false;
                    }
                }
            }
        }
        self.accepted
            .iter()
            .any(|range| range.matches(type_, subtype))
    }
}

fn empty_body() -> Rejection {
    Rejection::BadBody {
        reason: "not_json",
        description: "request body is empty; this route expects a JSON document".to_string(),
    }
}

fn not_json(description: String) -> Rejection {
    Rejection::BadBody {
        reason: "not_json",
        description,
    }
}

fn over_limit(description: String) -> Rejection {
    Rejection::BadBody {
        reason: "limits",
        description,
    }
}

/// UTF-8 check, then one strict, bounded parse with the threat limits and the
/// duplicate-member check inline ([`crate::strict_json`]). The body must be
/// non-empty to parse.
pub fn parse_body(body: &[u8], limits: &JsonLimits) -> Result<Value, Rejection> {
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => {
            return Err(not_json(format!(
                "request body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            )))
        }
    };
    strict_json::parse(text, limits).map_err(|e| match e {
        JsonError::Limit(description) => over_limit(description),
        // The parser's messages name the line and column, never the input.
        JsonError::Syntax(description) => not_json(format!(
            "request body is not valid JSON: {}",
            clip(&description, MAX_ERROR_MESSAGE_CHARS)
        )),
    })
}

/// A `serde_json::Value` that refuses duplicate member names, for the plugin
/// configuration ([`crate::config::parse`]). Request bodies go through
/// [`crate::strict_json`] instead (limits inline, one pass).
pub(crate) struct StrictValue(pub(crate) Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(de::Error::custom("duplicate member name in an object"));
            }
            let StrictValue(value) = map.next_value()?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

/// Compiles a route schema against the registry.
fn compile_schema(
    schema: &Value,
    registry: &SchemaRegistry,
    assert_formats: bool,
    path: &str,
) -> Result<CompiledSchema, ConfigError> {
    if let Some(id) = schema.get("$id").and_then(Value::as_str) {
        if let Some(j) = registry.contains_id(id) {
            return Err(ConfigError::new(
                format!("{path}.$id"),
                format!("\"{}\" is already the $id of schemas[{j}]; use {{\"$ref\": \"{}\"}} to reuse it", clip(id, 100), clip(id, 100)),
            ));
        }
    }
    // The route schema's draft is also the one of the registry entries it reaches
    // that do not declare their own `$schema`.
    let draft = schema
        .get("$schema")
        .and_then(Value::as_str)
        .and_then(Draft::from_url)
        .unwrap_or(Draft::V2020_12);
    let mut compiler = registry.compiler(draft, assert_formats, path)?;
    compiler
        .add_resource(ROUTE_SCHEMA_URL, schema.clone())
        .map_err(|e| ConfigError::new(path, describe_compile_error(&e)))?;
    let mut schemas = Schemas::new();
    let index = compiler
        .compile(ROUTE_SCHEMA_URL, &mut schemas)
        .map_err(|e| ConfigError::new(path, describe_compile_error(&e)))?;
    Ok(CompiledSchema { schemas, index })
}

/// One line about a compile error, without our internal schema URL.
fn describe_compile_error(error: &CompileError) -> String {
    let text = match error {
        CompileError::ValidationError { src, .. } => {
            // The schema broke its meta-schema: list where, from the deepest causes.
            let mut leaves = Vec::new();
            let mut stack = vec![src];
            while let Some(e) = stack.pop() {
                if e.causes.is_empty() {
                    let at = e.instance_location.to_string();
                    let at = if at.is_empty() {
                        "the root".to_string()
                    } else {
                        format!("'{at}'")
                    };
                    leaves.push(format!("at {at}: {}", e.kind));
                } else {
                    stack.extend(e.causes.iter().rev());
                }
                if leaves.len() == 4 {
                    break;
                }
            }
            format!("not a valid JSON Schema: {}", leaves.join("; "))
        }
        CompileError::LoadUrlError { url, src } => {
            format!("cannot resolve \"{url}\": {src}")
        }
        CompileError::UnsupportedUrlScheme { url } => {
            format!("cannot resolve \"{url}\": remote references are never fetched")
        }
        // boon files a `pattern` its regex engine refuses under `Bug`; the engine is
        // regex-lite (vendor/regex-lite-shim), with syntax limits of its own.
        CompileError::Bug(src) if src.is::<pattern_regex::Error>() => {
            format!("a `pattern` uses regex syntax that is not supported: {src}")
        }
        other => format!("{other:#}"),
    };
    let text = text.replace(ROUTE_SCHEMA_URL, "");
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    clip(&one_line, MAX_CONFIG_MESSAGE_CHARS)
}

/// Errors that only group others: report their causes instead.
fn is_wrapper(kind: &ErrorKind<'_, '_>) -> bool {
    matches!(
        kind,
        ErrorKind::Group
            | ErrorKind::Schema { .. }
            | ErrorKind::Reference { .. }
            | ErrorKind::AllOf
            | ErrorKind::ContentSchema
    )
}

/// Flattens boon's error tree into at most [`MAX_SCHEMA_ERRORS`] failures, depth
/// first in document order, without recursion.
fn collect_errors(root: &boon::ValidationError<'_, '_>) -> Vec<SchemaError> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(e) = stack.pop() {
        if out.len() >= MAX_SCHEMA_ERRORS {
            break;
        }
        if is_wrapper(&e.kind) && !e.causes.is_empty() {
            stack.extend(e.causes.iter().rev());
            continue;
        }
        out.push(SchemaError {
            instance_path: pointer(&e.instance_location),
            keyword: keyword(&e.kind).to_string(),
            message: clip(&message(&e.kind), MAX_ERROR_MESSAGE_CHARS),
        });
    }
    out
}

/// RFC 6901 JSON Pointer of a failure, cut at [`MAX_POINTER_CHARS`] bytes.
fn pointer(location: &InstanceLocation<'_>) -> String {
    let mut out = String::new();
    for token in &location.tokens {
        out.push('/');
        match token {
            InstanceToken::Prop(name) => {
                for c in name.chars() {
                    match c {
                        '~' => out.push_str("~0"),
                        '/' => out.push_str("~1"),
                        c => out.push(c),
                    }
                    if out.len() > MAX_POINTER_CHARS {
                        break;
                    }
                }
            }
            InstanceToken::Item(index) => {
                let _ = write!(out, "{index}");
            }
        }
        if out.len() > MAX_POINTER_CHARS {
            let mut cut = MAX_POINTER_CHARS;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    out
}

/// The schema keyword behind a failure.
fn keyword(kind: &ErrorKind<'_, '_>) -> &'static str {
    match kind {
        ErrorKind::Group | ErrorKind::Schema { .. } => "$ref",
        ErrorKind::Reference { kw, .. } => kw,
        ErrorKind::RefCycle { .. } => "$ref",
        ErrorKind::ContentSchema => "contentSchema",
        ErrorKind::PropertyName { .. } => "propertyNames",
        ErrorKind::FalseSchema => "false",
        ErrorKind::Type { .. } => "type",
        ErrorKind::Enum { .. } => "enum",
        ErrorKind::Const { .. } => "const",
        ErrorKind::Format { .. } => "format",
        ErrorKind::MinProperties { .. } => "minProperties",
        ErrorKind::MaxProperties { .. } => "maxProperties",
        ErrorKind::AdditionalProperties { .. } => "additionalProperties",
        ErrorKind::Required { .. } => "required",
        ErrorKind::Dependency { .. } => "dependencies",
        ErrorKind::DependentRequired { .. } => "dependentRequired",
        ErrorKind::MinItems { .. } => "minItems",
        ErrorKind::MaxItems { .. } => "maxItems",
        ErrorKind::Contains => "contains",
        ErrorKind::MinContains { .. } => "minContains",
        ErrorKind::MaxContains { .. } => "maxContains",
        ErrorKind::UniqueItems { .. } => "uniqueItems",
        ErrorKind::AdditionalItems { .. } => "additionalItems",
        ErrorKind::MinLength { .. } => "minLength",
        ErrorKind::MaxLength { .. } => "maxLength",
        ErrorKind::Pattern { .. } => "pattern",
        ErrorKind::ContentEncoding { .. } => "contentEncoding",
        ErrorKind::ContentMediaType { .. } => "contentMediaType",
        ErrorKind::Minimum { .. } => "minimum",
        ErrorKind::Maximum { .. } => "maximum",
        ErrorKind::ExclusiveMinimum { .. } => "exclusiveMinimum",
        ErrorKind::ExclusiveMaximum { .. } => "exclusiveMaximum",
        ErrorKind::MultipleOf { .. } => "multipleOf",
        ErrorKind::Not => "not",
        ErrorKind::AllOf => "allOf",
        ErrorKind::AnyOf => "anyOf",
        ErrorKind::OneOf(_) => "oneOf",
    }
}

/// A message written from the schema's side only: values from the request are never
/// quoted, except member names (cut short), which say what to fix.
fn message(kind: &ErrorKind<'_, '_>) -> String {
    fn names<S: AsRef<str>>(list: &[S]) -> String {
        let shown: Vec<String> = list
            .iter()
            .take(5)
            .map(|n| format!("'{}'", clip(n.as_ref(), 40)))
            .collect();
        let more = list.len().saturating_sub(shown.len());
        if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        }
    }
    match kind {
        ErrorKind::Group | ErrorKind::Schema { .. } | ErrorKind::Reference { .. } => {
            "does not match the schema".to_string()
        }
        ErrorKind::RefCycle { .. } => "the schema's references form a cycle".to_string(),
        ErrorKind::ContentSchema => "embedded content does not match its schema".to_string(),
        ErrorKind::PropertyName { prop } => {
            format!("member name {} is not allowed", names(&[prop]))
        }
        ErrorKind::FalseSchema => "no value is allowed here".to_string(),
        ErrorKind::Type { got, want } => {
            let want: Vec<String> = want.iter().map(|t| t.to_string()).collect();
            format!("must be {}, not {got}", want.join(" or "))
        }
        ErrorKind::Enum { want } => format!("must be one of the {} allowed values", want.len()),
        ErrorKind::Const { .. } => "must equal the constant the schema requires".to_string(),
        ErrorKind::Format { want, .. } => format!("must be a valid \"{want}\""),
        ErrorKind::MinProperties { want, .. } => format!("must have at least {want} members"),
        ErrorKind::MaxProperties { want, .. } => format!("must have at most {want} members"),
        ErrorKind::AdditionalProperties { got } => format!("member(s) not allowed: {}", names(got)),
        ErrorKind::Required { want } => format!("missing required member(s): {}", names(want)),
        ErrorKind::Dependency { prop, missing }
        | ErrorKind::DependentRequired { prop, missing } => {
            format!(
                "member(s) {} required when '{}' is present",
                names(missing),
                clip(prop, 40)
            )
        }
        ErrorKind::MinItems { want, .. } => format!("must have at least {want} items"),
        ErrorKind::MaxItems { want, .. } => format!("must have at most {want} items"),
        ErrorKind::Contains => "no item matches the 'contains' schema".to_string(),
        ErrorKind::MinContains { want, .. } => {
            format!("at least {want} items must match the 'contains' schema")
        }
        ErrorKind::MaxContains { want, .. } => {
            format!("at most {want} items may match the 'contains' schema")
        }
        ErrorKind::UniqueItems { got: [i, j] } => format!("items {i} and {j} are equal"),
        ErrorKind::AdditionalItems { got } => format!("{got} item(s) more than allowed"),
        ErrorKind::MinLength { want, .. } => format!("must be at least {want} characters long"),
        ErrorKind::MaxLength { want, .. } => format!("must be at most {want} characters long"),
        ErrorKind::Pattern { want, .. } => format!("must match the pattern {}", clip(want, 80)),
        ErrorKind::ContentEncoding { want, .. } => format!("must be {want}-encoded"),
        ErrorKind::ContentMediaType { want, .. } => format!("must be of media type {want}"),
        ErrorKind::Minimum { want, .. } => format!("must be >= {want}"),
        ErrorKind::Maximum { want, .. } => format!("must be <= {want}"),
        ErrorKind::ExclusiveMinimum { want, .. } => format!("must be > {want}"),
        ErrorKind::ExclusiveMaximum { want, .. } => format!("must be < {want}"),
        ErrorKind::MultipleOf { want, .. } => format!("must be a multiple of {want}"),
        ErrorKind::Not => "must not match the 'not' schema".to_string(),
        ErrorKind::AllOf => "must match all of the 'allOf' schemas".to_string(),
        ErrorKind::AnyOf => "must match at least one of the 'anyOf' schemas".to_string(),
        ErrorKind::OneOf(None) => {
            "must match exactly one of the 'oneOf' schemas; matches none".to_string()
        }
        ErrorKind::OneOf(Some((i, j))) => {
            format!("must match exactly one of the 'oneOf' schemas; matches {i} and {j}")
        }
    }
}

/// `text` cut to `max` characters (then ending with `…`), control characters
/// replaced, so it is safe in a log line or a problem document.
fn clip(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    const PATH: &str = "routes[0].request";

    fn request(cfg: Value) -> RequestConfig {
        serde_json::from_value(cfg).unwrap()
    }

    fn compile_with(cfg: Value, schemas: Value) -> Result<RequestPolicy, ConfigError> {
        let entries = schemas.as_array().cloned().unwrap_or_default();
        let registry = SchemaRegistry::compile(&entries)?;
        RequestPolicy::compile(&request(cfg), &registry, PATH)
    }

    fn policy(cfg: Value) -> RequestPolicy {
        compile_with(cfg, json!([])).unwrap()
    }

    fn config_error(cfg: Value, schemas: Value) -> String {
        match compile_with(cfg, schemas) {
            Ok(_) => "<ok>".to_string(),
            Err(e) => e.to_string(),
        }
    }

    /// `reason: description` of a rejection, or `ok`.
    fn outcome(result: Result<(), Rejection>) -> String {
        match result {
            Ok(()) => "ok".to_string(),
            Err(Rejection::BadBody {
                reason,
                description,
            }) => format!("{reason}: {description}"),
            Err(Rejection::SchemaViolation { errors }) => {
                let list: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{} {}", e.instance_path, e.keyword))
                    .collect();
                format!("schema: {}", list.join(", "))
            }
            Err(other) => other.reason().to_string(),
        }
    }

    fn order_schema() -> Value {
        json!({
            "type": "object",
            "required": ["sku", "qty", "items"],
            "additionalProperties": false,
            "properties": {
                "sku": { "type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$" },
                "qty": { "type": "integer", "minimum": 1 },
                "note": { "type": "string", "maxLength": 20 },
                "items": { "type": "array", "items": { "$ref": "#/$defs/item" } }
            },
            "$defs": {
                "item": {
                    "type": "object",
                    "required": ["qty"],
                    "properties": { "qty": { "type": "integer", "minimum": 1 } }
                }
            }
        })
    }

    #[test]
    fn media_types_compare_case_insensitively_without_parameters() {
        let default = policy(json!({}));
        let suffix = policy(json!({ "content_types": ["application/*+json"] }));
        let listed = policy(
            json!({ "content_types": ["application/json", "Application/Merge-Patch+JSON"] }),
        );
        let cases: [(&RequestPolicy, Option<&str>, bool); 19] = [
            (&default, Some("application/json"), true),
            (&default, Some("application/json; charset=utf-8"), true),
            (&default, Some("Application/JSON;Charset=\"UTF-8\""), true),
            (&default, Some("  application/json  "), true),
            (
                &default,
                Some("application/json; charset=utf8; foo=bar"),
                true,
            ),
            (&default, Some("application/json; charset=utf-16"), false),
            (&default, Some("application/jsonx"), false),
            (&default, Some("application/json, text/plain"), false),
            (&default, Some("application/problem+json"), false),
            (&default, Some("text/plain"), false),
            (&default, Some("application/"), false),
            (&default, Some(""), false),
            (&default, None, false),
            (&suffix, Some("application/problem+json"), true),
            (
                &suffix,
                Some("application/vnd.api+json; charset=utf-8"),
                true,
            ),
            (&suffix, Some("application/+json"), false),
            (&suffix, Some("application/json"), false),
            (&listed, Some("application/merge-patch+json"), true),
            (&listed, Some("text/merge-patch+json"), false),
        ];
        for (policy, content_type, accepted) in cases {
            let got = policy.check_headers("POST", content_type, Some(10));
            if accepted {
                assert_eq!(got, Ok(BodyPlan::Buffer), "{content_type:?}");
            } else {
                assert_eq!(
                    got.map_err(|r| r.reason()),
                    Err("content_type"),
                    "{content_type:?}"
                );
            }
        }
        assert_eq!(
            suffix.check_headers("POST", None, Some(1)),
            Err(Rejection::UnsupportedMediaType {
                accepted: "application/*+json".to_string()
            })
        );
        assert_eq!(
            listed.check_headers("PUT", Some("text/plain"), None),
            Err(Rejection::UnsupportedMediaType {
                accepted: "application/json, application/merge-patch+json".to_string()
            })
        );
    }

    #[test]
    fn body_plan_by_method_and_declared_length() {
        let with_schema = policy(json!({ "max_body_bytes": 100, "schema": { "type": "object" } }));
        let without = policy(json!({ "max_body_bytes": 100 }));
        let json = Some("application/json");
        // (policy, method, content type, content length, expected plan or reason)
        type Case<'a> = (
            &'a RequestPolicy,
            &'a str,
            Option<&'a str>,
            Option<u64>,
            Result<BodyPlan, &'a str>,
        );
        let cases: [Case; 18] = [
            (&with_schema, "GET", None, Some(0), Ok(BodyPlan::Skip)),
            (&with_schema, "HEAD", None, Some(0), Ok(BodyPlan::Skip)),
            (&with_schema, "DELETE", None, Some(0), Ok(BodyPlan::Skip)),
            (&with_schema, "OPTIONS", None, Some(0), Ok(BodyPlan::Skip)),
            (&with_schema, "TRACE", None, Some(0), Ok(BodyPlan::Skip)),
            // An empty body is no JSON document.
            (&with_schema, "POST", json, Some(0), Err("not_json")),
            (&with_schema, "PUT", None, Some(0), Err("not_json")),
            // Methods are case-sensitive (RFC 9110 §9.1).
            (&with_schema, "get", None, Some(0), Err("not_json")),
            (&without, "POST", None, Some(0), Ok(BodyPlan::Skip)),
            // A GET or DELETE that carries a body is checked like any other.
            (&with_schema, "GET", json, Some(5), Ok(BodyPlan::Buffer)),
            (&with_schema, "GET", None, Some(5), Err("content_type")),
            (&with_schema, "DELETE", json, None, Ok(BodyPlan::Buffer)),
            (&with_schema, "POST", json, None, Ok(BodyPlan::Buffer)),
            (&with_schema, "POST", None, None, Err("content_type")),
            (&with_schema, "PATCH", json, Some(100), Ok(BodyPlan::Buffer)),
            (&with_schema, "POST", json, Some(101), Err("too_large")),
            (&without, "POST", json, Some(u64::MAX), Err("too_large")),
            // The media type is judged first.
            (
                &with_schema,
                "POST",
                Some("text/plain"),
                Some(101),
                Err("content_type"),
            ),
        ];
        for (policy, method, content_type, length, want) in cases {
            let got = policy
                .check_headers(method, content_type, length)
                .map_err(|r| r.reason());
            assert_eq!(got, want, "{method} {content_type:?} {length:?}");
        }
    }

    #[test]
    fn size_is_capped_cumulatively() {
        let p = policy(json!({ "max_body_bytes": 100 }));
        assert_eq!(p.max_body_bytes(), 100);
        for (total, ok) in [
            (0, true),
            (99, true),
            (100, true),
            (101, false),
            (u64::MAX, false),
        ] {
            let got = p.check_size(total);
            assert_eq!(got.is_ok(), ok, "{total}");
            if !ok {
                assert_eq!(got, Err(Rejection::PayloadTooLarge { limit: 100 }));
            }
        }
        assert_eq!(policy(json!({})).max_body_bytes(), DEFAULT_MAX_BODY_BYTES);
        // validate() checks the size too, whatever the caller did before.
        assert_eq!(outcome(p.validate(&[b' '; 101])), "too_large");
    }

    #[test]
    fn bodies_that_are_not_json() {
        let with_schema = policy(json!({ "schema": true }));
        let without = policy(json!({}));
        let cases: [(&RequestPolicy, &[u8], &str); 12] = [
            (&with_schema, b"", "not_json: request body is empty; this route expects a JSON document"),
            (&without, b"", "ok"),
            (&without, b"{}", "ok"),
            (&without, b" \"text\" ", "ok"),
            (&without, b"\xff\xfe{}", "not_json: request body is not valid UTF-8 (at byte 0)"),
            (&without, b"{\"a\":\"\xc3\x28\"}", "not_json: request body is not valid UTF-8 (at byte 6)"),
            (&without, b"\xef\xbb\xbf{}", "not_json: request body is not valid JSON: expected value at line 1 column 1"),
            (&without, b"{\"a\":1", "not_json: request body is not valid JSON: unclosed array or object"),
            (&without, b"[1}", "not_json: request body is not valid JSON: unbalanced brackets (at byte 2)"),
            (&without, b"\"abc", "not_json: request body is not valid JSON: unterminated string (from byte 0)"),
            (&without, b"{\"a\":1} x", "not_json: request body is not valid JSON: trailing characters at line 1 column 9"),
            (&without, b"{\"role\":\"user\",\"role\":\"admin\"}", "not_json: request body is not valid JSON: duplicate member name in an object at line 1 column 21"),
        ];
        for (policy, body, want) in cases {
            assert_eq!(
                outcome(policy.validate(body)),
                want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // A whitespace-only body is not empty, and not JSON either.
        assert!(outcome(with_schema.validate(b"  "))
            .starts_with("not_json: request body is not valid JSON: EOF"));
    }

    #[test]
    fn each_threat_limit_allows_its_value_and_refuses_one_more() {
        // (limits, body at the limit, body one over, description of the excess)
        let cases: [(Value, &str, &str, &str); 11] = [
            (
                json!({ "max_depth": 3 }),
                "[[[1]]]",
                "[[[[1]]]]",
                "JSON nesting is deeper than 3 levels (at byte 3)",
            ),
            (
                json!({ "max_depth": 3 }),
                r#"{"a":{"b":[]}}"#,
                r#"{"a":{"b":[{}]}}"#,
                "JSON nesting is deeper than 3 levels (at byte 11)",
            ),
            (
                json!({ "max_object_entries": 2 }),
                r#"{"a":{"x":1,"y":2},"b":[1,2,3]}"#,
                r#"{"a":1,"b":2,"c":3}"#,
                "JSON object has more than 2 members (at byte 13)",
            ),
            (
                json!({ "max_array_length": 3 }),
                "[1,[2,3,4],3]",
                "[1,2,3,4]",
                "JSON array has more than 3 elements (at byte 7)",
            ),
            (
                json!({ "max_array_length": 3 }),
                r#"["a",{"k":"v"},[]]"#,
                r#"["a","b","c",null]"#,
                "JSON array has more than 3 elements (at byte 13)",
            ),
            (
                json!({ "max_array_length": 3 }),
                r#"{"a":1,"b":2,"c":3,"d":4}"#,
                r#"[true,false,null,-1.5e3]"#,
                "JSON array has more than 3 elements (at byte 17)",
            ),
            (
                json!({ "max_string_length": 5 }),
                r#"["abcde"]"#,
                r#"["abcdef"]"#,
                "JSON string is longer than 5 bytes (from byte 1)",
            ),
            (
                json!({ "max_string_length": 5 }),
                r#"{"abcde":1}"#,
                r#"{"abcdef":1}"#,
                "JSON string is longer than 5 bytes (from byte 1)",
            ),
            // Escapes count as written: \" is two bytes.
            (
                json!({ "max_string_length": 4 }),
                r#""\"\"""#,
                r#""\"\"a""#,
                "JSON string is longer than 4 bytes (from byte 0)",
            ),
            (
                json!({ "max_total_values": 5 }),
                "[1,2,3,4]",
                "[1,2,3,4,5]",
                "JSON document has more than 5 values (at byte 9)",
            ),
            (
                json!({ "max_total_values": 5 }),
                r#"{"a":1,"b":2,"c":3,"d":"x"}"#,
                r#"{"a":[1],"b":2,"c":3,"d":4}"#,
                "JSON document has more than 5 values (at byte 25)",
            ),
        ];
        for (limits, at_limit, over, want) in cases {
            let p = policy(json!({ "limits": limits }));
            assert_eq!(outcome(p.validate(at_limit.as_bytes())), "ok", "{at_limit}");
            assert_eq!(
                outcome(p.validate(over.as_bytes())),
                format!("limits: {want}"),
                "{over}"
            );
        }
    }

    #[test]
    fn default_limits_are_the_documented_constants() {
        let p = policy(json!({ "limits": {} }));
        assert_eq!(*p.limits(), JsonLimits::default());
        assert_eq!(
            JsonLimits::default(),
            JsonLimits {
                max_depth: 32,
                max_object_entries: 1_000,
                max_array_length: 10_000,
                max_string_length: 65_536,
                max_total_values: 100_000,
            }
        );
        let deep = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert_eq!(outcome(p.validate(deep.as_bytes())), "ok");
        let deeper = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert!(outcome(p.validate(deeper.as_bytes()))
            .starts_with("limits: JSON nesting is deeper than 32"));
    }

    /// Hostile bodies are refused after bounded work, whatever their size.
    #[test]
    fn hostile_bodies_cost_bounded_work() {
        let big = policy(json!({ "max_body_bytes": 16 * 1024 * 1024, "schema": {} }));
        let ceiling = policy(json!({
            "max_body_bytes": 16 * 1024 * 1024,
            "limits": { "max_depth": MAX_DEPTH_CEILING }
        }));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let long_string = format!("\"{}\"", "a".repeat(10 * 1024 * 1024));
        let long_array = format!("[{}1]", "1,".repeat(5 * 1024 * 1024));
        let many_members = format!(
            "{{{}\"z\":1}}",
            (0..200_000)
                .map(|i| format!("\"k{i}\":1,"))
                .collect::<String>()
        );
        let unbalanced = "]".repeat(10 * 1024 * 1024);
        let cases: [(&RequestPolicy, &str, &str); 6] = [
            (
                &big,
                &deep,
                "limits: JSON nesting is deeper than 32 levels (at byte 32)",
            ),
            (
                &ceiling,
                &deep,
                "limits: JSON nesting is deeper than 64 levels (at byte 64)",
            ),
            (
                &big,
                &long_string,
                "limits: JSON string is longer than 65536 bytes (from byte 0)",
            ),
            (
                &big,
                &long_array,
                "limits: JSON array has more than 10000 elements (at byte 20001)",
            ),
            (
                &big,
                &many_members,
                "limits: JSON object has more than 1000 members (at byte 8891)",
            ),
            (
                &big,
                &unbalanced,
                "not_json: request body is not valid JSON: unbalanced brackets (at byte 0)",
            ),
        ];
        for (policy, body, want) in cases {
            let started = Instant::now();
            let got = outcome(policy.validate(body.as_bytes()));
            let took = started.elapsed();
            assert_eq!(got, want);
            // Generous: the machine is shared; the real cost is microseconds to a few
            // milliseconds (the UTF-8 check reads the whole body once).
            assert!(took < Duration::from_secs(2), "{want}: {took:?}");
        }
    }

    /// The deepest document a configuration may allow is parsed and validated against
    /// a recursive schema. (In a release wasm32 module under V8 this needs under
    /// 512 KiB of the 1 MiB stack, see [`MAX_DEPTH_CEILING`]; an unoptimised native
    /// build has far bigger frames, hence the larger thread stack here.)
    #[test]
    fn deepest_allowed_document_validates() {
        let schema = json!({
            "$defs": { "node": {
                "type": ["array", "integer"],
                "items": { "allOf": [{ "anyOf": [{ "oneOf": [{ "$ref": "#/$defs/node" }] }] }] },
                "anyOf": [{ "type": "integer" }, { "minItems": 1 }],
                "unevaluatedItems": false
            } },
            "$ref": "#/$defs/node"
        });
        let p = policy(json!({ "schema": schema, "limits": { "max_depth": MAX_DEPTH_CEILING } }));
        let depth = MAX_DEPTH_CEILING as usize;
        let valid = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let invalid = format!("{}\"x\"{}", "[".repeat(depth), "]".repeat(depth));
        let result = std::thread::Builder::new()
            .stack_size(16 * 1024 * 1024)
            .spawn(move || {
                (
                    outcome(p.validate(valid.as_bytes())),
                    outcome(p.validate(invalid.as_bytes())),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(result.0, "ok");
        assert!(
            result
                .1
                .starts_with(&format!("schema: {}", "/0".repeat(depth - 1))),
            "{}",
            result.1
        );
    }

    #[test]
    fn schema_failures_carry_pointer_keyword_and_safe_message() {
        let p = policy(json!({ "schema": order_schema() }));
        let body = json!({
            "sku": "<script>alert(1)</script>",
            "qty": 0,
            "items": [{ "qty": 1 }, { "qty": -7 }, {}],
            "secret_field": "hunter2"
        });
        let Err(Rejection::SchemaViolation { errors }) = p.validate(body.to_string().as_bytes())
        else {
            panic!("expected a schema violation");
        };
        let got: Vec<(&str, &str, &str)> = errors
            .iter()
            .map(|e| {
                (
                    e.instance_path.as_str(),
                    e.keyword.as_str(),
                    e.message.as_str(),
                )
            })
            .collect();
        // In the validator's order: `properties` (by name), then `additionalProperties`.
        assert_eq!(
            got,
            vec![
                ("/items/1/qty", "minimum", "must be >= 1"),
                ("/items/2", "required", "missing required member(s): 'qty'"),
                ("/qty", "minimum", "must be >= 1"),
                (
                    "/sku",
                    "pattern",
                    "must match the pattern ^[A-Z]{3}-[0-9]{4}$"
                ),
                (
                    "",
                    "additionalProperties",
                    "member(s) not allowed: 'secret_field'"
                ),
            ]
        );
        let rendered =
            String::from_utf8(Rejection::SchemaViolation { errors }.render().body).unwrap();
        assert!(
            !rendered.contains("script") && !rendered.contains("hunter2"),
            "{rendered}"
        );
        assert_eq!(
            outcome(p.validate(br#"{"sku":"ABC-1234","qty":2,"items":[]}"#)),
            "ok"
        );
    }

    #[test]
    fn schema_failure_details_are_escaped_and_capped() {
        // RFC 6901: "~" is "~0" and "/" is "~1" in a pointer.
        let p = policy(json!({ "schema": {
            "properties": { "a/b": { "properties": { "c~d": { "type": "integer" } } } }
        } }));
        assert_eq!(
            outcome(p.validate(br#"{"a/b":{"c~d":"x"}}"#)),
            "schema: /a~1b/c~0d type"
        );

        // At most MAX_SCHEMA_ERRORS failures.
        let p = policy(json!({ "schema": { "items": { "type": "integer" } } }));
        let Err(Rejection::SchemaViolation { errors }) =
            p.validate(Value::Array(vec![json!("x"); 50]).to_string().as_bytes())
        else {
            panic!("expected a schema violation");
        };
        assert_eq!(errors.len(), MAX_SCHEMA_ERRORS);
        assert_eq!(errors[19].instance_path, "/19");
        assert_eq!(errors[19].message, "must be integer, not string");

        // Long member names are cut in pointers and messages.
        let name = "n".repeat(1000);
        let p = policy(
            json!({ "schema": { "additionalProperties": { "type": "object", "additionalProperties": false } } }),
        );
        let body = json!({ &name: { &name: 1 } }).to_string();
        let Err(Rejection::SchemaViolation { errors }) = p.validate(body.as_bytes()) else {
            panic!("expected a schema violation");
        };
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].instance_path,
            format!("/{}…", "n".repeat(MAX_POINTER_CHARS - 1))
        );
        assert_eq!(
            errors[0].message,
            format!("member(s) not allowed: '{}…'", "n".repeat(40))
        );
    }

    #[test]
    fn combinators_are_reported_once() {
        let p = policy(json!({ "schema": {
            "properties": {
                "a": { "anyOf": [{ "type": "string" }, { "type": "integer" }] },
                "b": { "oneOf": [{ "minimum": 1 }, { "maximum": 10 }] },
                "c": { "not": { "const": 3 } },
                "d": { "allOf": [{ "minimum": 1 }, { "multipleOf": 2 }] },
                "e": { "enum": ["x", "y"] },
                "f": false
            }
        } }));
        let body = br#"{"a":null,"b":5,"c":3,"d":-1,"e":"z","f":1}"#;
        let Err(Rejection::SchemaViolation { errors }) = p.validate(body) else {
            panic!("expected a schema violation");
        };
        let got: Vec<String> = errors
            .iter()
            .map(|e| format!("{} {}: {}", e.instance_path, e.keyword, e.message))
            .collect();
        assert_eq!(
            got,
            vec![
                "/a anyOf: must match at least one of the 'anyOf' schemas",
                "/b oneOf: must match exactly one of the 'oneOf' schemas; matches 0 and 1",
                "/c not: must not match the 'not' schema",
                "/d minimum: must be >= 1",
                "/d multipleOf: must be a multiple of 2",
                "/e enum: must be one of the 2 allowed values",
                "/f false: no value is allowed here",
            ]
        );
    }

    #[test]
    fn draft_7_when_schema_says_so() {
        let tuple = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "items": [{ "type": "integer" }],
            "additionalItems": false
        });
        let p = policy(json!({ "schema": tuple }));
        assert_eq!(outcome(p.validate(b"[1]")), "ok");
        assert_eq!(outcome(p.validate(b"[1,2]")), "schema:  additionalItems");
        // Without `$schema` it is 2020-12, where `items` takes one schema.
        let mut as_2020 = tuple.clone();
        as_2020.as_object_mut().unwrap().remove("$schema");
        let e = config_error(json!({ "schema": as_2020 }), json!([]));
        assert!(
            e.starts_with("routes[0].request.schema: not a valid JSON Schema: at '/items'"),
            "{e}"
        );
        // Same schema written for 2020-12.
        let p =
            policy(json!({ "schema": { "prefixItems": [{ "type": "integer" }], "items": false } }));
        assert_eq!(outcome(p.validate(b"[1]")), "ok");
        assert!(outcome(p.validate(b"[1,2]")).ends_with(" false"));
    }

    /// boon 0.6.1 (and its master branch) numbers the items that `items` checks after
    /// `prefixItems` (2020-12), or `additionalItems` after an `items` array (draft 7),
    /// from 0 instead of from the first unchecked index. The verdict is right; only
    /// the pointer is off. This test pins the behaviour so an upgrade that fixes it
    /// shows up here.
    #[test]
    fn known_boon_bug_items_after_prefix_items_point_from_zero() {
        let p = policy(
            json!({ "schema": { "prefixItems": [{ "type": "integer" }], "items": { "type": "string" } } }),
        );
        assert_eq!(outcome(p.validate(br#"[1,"a",2]"#)), "schema: /1 type"); // should be /2
        let p = policy(json!({ "schema": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "items": [{ "type": "integer" }], "additionalItems": { "type": "string" }
        } }));
        assert_eq!(outcome(p.validate(br#"[1,"a",2]"#)), "schema: /1 type"); // should be /2
    }

    #[test]
    fn formats_assert_in_draft_7_and_on_request() {
        let email = |extra: Value| {
            let mut cfg = json!({ "schema": { "properties": { "e": { "format": "email" } } } });
            if let (Some(cfg), Some(extra)) = (cfg.as_object_mut(), extra.as_object()) {
                cfg.extend(extra.clone());
            }
            policy(cfg)
        };
        let body = br#"{"e":"not an email"}"#;
        assert_eq!(outcome(email(json!({})).validate(body)), "ok");
        assert_eq!(
            outcome(email(json!({ "assert_formats": true })).validate(body)),
            "schema: /e format"
        );
        let draft7 = policy(json!({ "schema": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "properties": { "e": { "format": "email" } }
        } }));
        assert_eq!(outcome(draft7.validate(body)), "schema: /e format");
        assert_eq!(
            outcome(draft7.validate(br#"{"e":"jane@example.com"}"#)),
            "ok"
        );
    }

    #[test]
    fn registry_provides_shared_definitions_by_id() {
        let schemas = json!([
            { "$id": "https://schemas.example.com/address.json",
              "type": "object", "required": ["city"],
              "properties": { "city": { "type": "string" }, "geo": { "$ref": "geo.json" } } },
            { "$id": "https://schemas.example.com/geo.json#",
              "type": "array", "prefixItems": [{ "type": "number" }, { "type": "number" }] },
            { "$id": "urn:example:draft7-tuple",
              "$schema": "http://json-schema.org/draft-07/schema#",
              "items": [{ "type": "string" }], "additionalItems": false }
        ]);
        let registry = SchemaRegistry::compile(schemas.as_array().unwrap()).unwrap();
        assert_eq!(registry.len(), 3);
        let cfg = request(json!({ "schema": { "properties": {
            "ship_to": { "$ref": "https://schemas.example.com/address.json" },
            "tags": { "$ref": "urn:example:draft7-tuple" }
        } } }));
        let p = RequestPolicy::compile(&cfg, &registry, PATH).unwrap();
        assert_eq!(
            outcome(p.validate(br#"{"ship_to":{"city":"Oslo","geo":[59.9,10.7]},"tags":["a"]}"#)),
            "ok"
        );
        assert_eq!(
            outcome(p.validate(br#"{"ship_to":{"geo":["x",1]},"tags":["a","b"]}"#)),
            "schema: /ship_to required, /ship_to/geo/0 type, /tags additionalItems"
        );
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let no_schemas = json!([]);
        let cases: [(Value, &Value, &str); 22] = [
            (json!({ "max_body_bytes": 0 }), &no_schemas,
             "routes[0].request.max_body_bytes: must be between 1 and 67108864"),
            (json!({ "max_body_bytes": 67_108_865 }), &no_schemas,
             "routes[0].request.max_body_bytes: must be between 1 and 67108864"),
            (json!({ "content_types": [] }), &no_schemas,
             "routes[0].request.content_types: must list at least one media type"),
            (json!({ "content_types": ["application/json", "text/plain"] }), &no_schemas,
             "routes[0].request.content_types[1]: \"text/plain\" is not a JSON media type; use application/json, a +json type (RFC 6839) or application/*+json"),
            (json!({ "content_types": ["*/*"] }), &no_schemas,
             "routes[0].request.content_types[0]: \"*/*\" is not a JSON media type; use application/json, a +json type (RFC 6839) or application/*+json"),
            (json!({ "content_types": ["application/json; charset=utf-8"] }), &no_schemas,
             "routes[0].request.content_types[0]: \"application/json; charset=utf-8\": parameters are not allowed here (they are ignored when matching)"),
            (json!({ "limits": { "max_depth": 0 } }), &no_schemas,
             "routes[0].request.limits.max_depth: must be between 1 and 64"),
            (json!({ "limits": { "max_depth": 65 } }), &no_schemas,
             "routes[0].request.limits.max_depth: must be between 1 and 64"),
            (json!({ "limits": { "max_total_values": 0 } }), &no_schemas,
             "routes[0].request.limits.max_total_values: must be between 1 and 4294967295"),
            (json!({ "schema": { "minimum": "x" } }), &no_schemas,
             "routes[0].request.schema: not a valid JSON Schema: at '/minimum': want number, but got string"),
            (json!({ "schema": { "type": "bogus" } }), &no_schemas,
             "routes[0].request.schema: not a valid JSON Schema: at '/type': value must be one of 'array', 'boolean', 'integer', 'null', 'number', 'object', 'string'; at '/type': want array, but got string"),
            (json!({ "schema": 42 }), &no_schemas,
             "routes[0].request.schema: not a valid JSON Schema: at the root: want boolean or object, but got number"),
            (json!({ "schema": { "$ref": "https://schemas.example.com/nope.json" } }), &no_schemas,
             "routes[0].request.schema: cannot resolve \"https://schemas.example.com/nope.json\": no registry entry has this $id (remote references are never fetched)"),
            (json!({ "schema": { "$ref": "other.json" } }), &no_schemas,
             "routes[0].request.schema: cannot resolve \"https://api-guard.invalid/other.json\": no registry entry has this $id (remote references are never fetched)"),
            (json!({ "schema": { "$schema": "http://json-schema.org/draft-03/schema#" } }), &no_schemas,
             "routes[0].request.schema: cannot resolve \"http://json-schema.org/draft-03/schema\": no registry entry has this $id (remote references are never fetched)"),
            (json!({ "schema": { "$ref": "#/$defs/missing" } }), &no_schemas,
             "routes[0].request.schema: json-pointer in #/$defs/missing not found"),
            (json!({ "schema": { "pattern": "(" } }), &no_schemas,
             "routes[0].request.schema: not a valid JSON Schema: at '/pattern': '(' is not valid regex: regex parse error: ( ^ error: unclosed group"),
            // Look-around and back-references are refused: the regex engine is linear-time.
            (json!({ "schema": { "properties": { "a": { "pattern": "^(?!admin)" } } } }), &no_schemas,
             "routes[0].request.schema: not a valid JSON Schema: at '/properties/a/pattern': '^(?!admin)' is not valid regex: regex parse error: ^(?!admin) ^^^ error: look-around, including look-ahead and look-behind, is not supported"),
            // Valid ECMA-262 that the regex-lite engine cannot run: refused at load.
            (json!({ "schema": { "pattern": "^\\p{Script=Greek}+$" } }), &no_schemas,
             "routes[0].request.schema: a `pattern` uses regex syntax that is not supported: Unicode property \\p{Script=Greek} is not supported (only General_Category values such as \\p{Letter} or \\p{Lu})"),
            (json!({ "schema": { "patternProperties": { "^\\p{Alphabetic}": true } } }), &no_schemas,
             "routes[0].request.schema: invalid regex '^\\\\p{Alphabetic}' at #/patternProperties: Unicode property \\p{Alphabetic} is not supported (only General_Category values such as \\p{Letter} or \\p{Lu})"),
            (json!({ "schema": { "$id": "https://x.example/a.json#" } }), &json!([{ "$id": "https://x.example/a.json" }]),
             "routes[0].request.schema.$id: \"https://x.example/a.json#\" is already the $id of schemas[0]; use {\"$ref\": \"https://x.example/a.json#\"} to reuse it"),
            (json!({ "schema": { "$ref": "https://x.example/a.json#/$defs/nope" } }), &json!([{ "$id": "https://x.example/a.json" }]),
             "routes[0].request.schema: json-pointer in https://x.example/a.json#/$defs/nope not found"),
        ];
        for (cfg, schemas, want) in cases {
            let got = config_error(cfg.clone(), schemas.clone());
            assert_eq!(got, want, "{cfg}");
        }
    }

    #[test]
    fn registry_errors_name_the_entry() {
        let cases: [(Value, &str); 9] = [
            (json!([5]), "schemas[0]: must be a JSON Schema object with an \"$id\""),
            (json!([{ "type": "object" }]), "schemas[0]: missing \"$id\"; route schemas refer to registry entries by it"),
            (json!([{ "$id": 5 }]), "schemas[0].$id: must be a string"),
            (json!([{ "$id": "address.json" }]), "schemas[0].$id: \"address.json\" is not an absolute URI (e.g. https://schemas.example.com/address.json)"),
            (json!([{ "$id": "https://x.example/a.json#foo" }]), "schemas[0].$id: must not have a fragment"),
            (json!([{ "$id": "https://x.example/a.json" }, { "$id": "https://x.example/a.json#" }]),
             "schemas[1].$id: \"https://x.example/a.json#\" is already the $id of schemas[0]"),
            (json!([{ "$id": "https://x.example/a.json" }, { "$id": "https://x.example/b.json", "type": 7 }]),
             "schemas[1]: not a valid JSON Schema: at '/type': value must be one of 'array', 'boolean', 'integer', 'null', 'number', 'object', 'string'; at '/type': want array, but got number"),
            (json!([{ "$id": "https://x.example/a.json", "$ref": "b.json" }]),
             "schemas[0]: cannot resolve \"https://x.example/b.json\": no registry entry has this $id (remote references are never fetched)"),
            (json!([{ "$id": "https://x.example/a.json", "$ref": "b.json" }, { "$id": "https://x.example/b.json" }]), "<ok>"),
        ];
        for (schemas, want) in cases {
            let got = match SchemaRegistry::compile(schemas.as_array().unwrap()) {
                Ok(_) => "<ok>".to_string(),
                Err(e) => e.to_string(),
            };
            assert_eq!(got, want, "{schemas}");
        }
    }

    #[test]
    fn every_outcome_has_a_metric_reason() {
        let p = policy(
            json!({ "max_body_bytes": 50, "schema": { "type": "object" }, "limits": { "max_depth": 2 } }),
        );
        let outcomes = [
            (p.validate(b"{}"), "validated"),
            (
                p.check_headers("POST", Some("text/plain"), None)
                    .map(|_| ()),
                "content_type",
            ),
            (p.check_size(51), "too_large"),
            (p.validate(b"{"), "not_json"),
            (p.validate(b"[]"), "schema"),
            (p.validate(b"[[[]]]"), "limits"),
        ];
        for (result, want) in outcomes {
            assert_eq!(metric_reason(&result), want);
            assert!(METRIC_REASONS.contains(&want));
        }
    }
}
