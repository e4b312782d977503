//! Request checks for routes with a `request` section: path, query and header
//! parameters ([`ParamPolicy`]), and the body's media type, size, JSON threat
//! limits and JSON Schema ([`RequestPolicy`]).
//!
//! Everything here is pure (no proxy-wasm calls) and compiled once at configure time:
//! [`SchemaRegistry::compile`] checks the shared `schemas`, [`RequestPolicy::compile`]
//! turns one `routes[].request` into a [`RequestPolicy`]. On the request path the
//! filter calls, in order:
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
//! required JSON-Schema-Test-Suite; see `tests/conformance_schema.rs`), chosen over
//! `jsonschema` for module size (docs/design.md, "Request validation"). Its `pattern` engine
//! is regex-lite, through a shim that stands in for the `regex` crate boon asks for
//! (`vendor/regex-lite-shim`); matching time is linear in the input (no catastrophic
//! backtracking).
//!
//! ## Threat limits
//! A request body is parsed once, byte by byte, by the strict non-recursive parser
//! in [`crate::json`], which checks the limits as it goes: nesting depth, entries per
//! object, elements per array, bytes per string and the total number of values are
//! bounded ([`JsonLimits`]), so a 100,000-deep array or a 10 MB string costs bounded
//! work and memory, and no tree grows past what the limits allow.
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

mod params;
mod schema;

pub use params::{ParamInputs, ParamPolicy};
pub use schema::SchemaRegistry;

use crate::config::check::in_range;
use crate::config::{ConfigError, JsonLimitsConfig, RequestConfig, DEFAULT_MAX_BODY_BYTES};
use crate::http::{self, MediaRange, MediaType};
use crate::json::{self, JsonError, JsonLimits, MAX_DEPTH_CEILING};
use crate::reply::Rejection;
use schema::{clip, CompiledSchema};
use serde_json::Value;
use std::fmt;

/// Largest `max_body_bytes` a configuration may set (64 MiB). The whole body is
/// held in the Wasm VM's memory, once per request in flight.
pub const MAX_BODY_BYTES_CEILING: u64 = 64 * 1024 * 1024;

/// At most this many schema failures are listed in a 400's `errors`.
pub const MAX_SCHEMA_ERRORS: usize = 20;
/// Each failure's `message` is cut to this many characters.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 200;
/// Each failure's `instancePath` is cut to this many bytes (then ends with `…`).
pub const MAX_POINTER_CHARS: usize = 256;

/// Metric reason of a body that passed every check.
const REASON_VALIDATED: &str = "validated";

/// Methods whose requests normally carry no body (RFC 9110 §9.3). They are not held
/// when they come without one; when they do carry a body it is checked like any other.
const BODYLESS_METHODS: [&str; 5] = ["GET", "HEAD", "DELETE", "OPTIONS", "TRACE"];

/// Metric reason of a check's outcome: `validated`, or the rejection's reason
/// (`content_type`, `too_large`, `not_json`, `schema`, `limits`).
pub(crate) fn metric_reason<T>(outcome: &Result<T, Rejection>) -> &'static str {
    match outcome {
        Ok(_) => REASON_VALIDATED,
        Err(rejection) => rejection.reason(),
    }
}

/// What to do with a request's body, decided at request headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyPlan {
    /// No body to check: let the request continue at headers.
    Skip,
    /// Hold the request at headers, buffer the body (calling
    /// [`RequestPolicy::check_chunk`] per chunk) and call [`RequestPolicy::finish`] at
    /// end of stream. Nothing may reach the upstream before it passes.
    Buffer(BodyCheck),
}

/// What a held body is judged by while it arrives, for a body whose length the
/// headers did not say (HTTP/1.1 chunked, HTTP/2 or 3 without `content-length`):
/// such a stream may still end without a byte, and an empty body is no body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyCheck {
    /// The verdict if the stream ends with no byte: as if the headers had ended it.
    empty: Result<(), Rejection>,
    /// The `Content-Type` verdict, applied as soon as a byte arrives.
    media: Result<(), Rejection>,
}

/// Resolves `request.limits` (absent fields take the defaults). `path` names the
/// `limits` object in errors, e.g. `routes[1].request.limits`.
fn compile_limits(cfg: Option<&JsonLimitsConfig>, path: &str) -> Result<JsonLimits, ConfigError> {
    let d = JsonLimits::default();
    let Some(cfg) = cfg else { return Ok(d) };
    let field = |value: Option<u32>, name: &str, default: u32, max: u32| {
        in_range(value.unwrap_or(default), 1, max, &format!("{path}.{name}"))
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
        exact_numbers: cfg.exact_numbers.unwrap_or(d.exact_numbers),
    })
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
    /// `routes[1].request.max_body_bytes: must be <= 67108864`.
    pub(crate) fn compile(
        cfg: &RequestConfig,
        registry: &SchemaRegistry,
        path: &str,
    ) -> Result<RequestPolicy, ConfigError> {
        let max_body_bytes = in_range(
            cfg.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            1,
            MAX_BODY_BYTES_CEILING,
            &format!("{path}.max_body_bytes"),
        )?;
        let accepted = match &cfg.content_types {
            None => vec![http::application_json()],
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
        let limits = compile_limits(cfg.limits.as_ref(), &format!("{path}.limits"))?;
        let schema = match &cfg.schema {
            None => None,
            Some(schema) => Some(schema::compile(
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
    #[cfg(test)]
    pub(crate) fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    /// The JSON threat limits in force.
    pub fn limits(&self) -> &JsonLimits {
        &self.limits
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
    /// - A declared body, whatever the method (a GET or DELETE with a body is checked
    ///   too, so nothing unvalidated reaches the upstream): 415 if `Content-Type` is
    ///   missing or not accepted, 413 if the declared length is over the cap, else
    ///   [`BodyPlan::Buffer`].
    /// - A body of unknown length: [`BodyPlan::Buffer`], with the 415 deferred to its
    ///   first byte ([`BodyCheck`]): an HTTP/2 GET whose headers do not end the
    ///   stream and whose only DATA frame is empty has no body.
    ///
    /// Media types compare case-insensitively without parameters
    /// (`Application/JSON; charset=utf-8` is `application/json`); a `charset` other
    /// than UTF-8 is refused, as JSON is UTF-8 (RFC 8259 §8.1).
    pub(crate) fn check_headers(
        &self,
        method: &str,
        content_type: Option<&str>,
        content_length: Option<u64>,
    ) -> Result<BodyPlan, Rejection> {
        if content_length == Some(0) {
            return self.no_body(method).map(|()| BodyPlan::Skip);
        }
        let media = if content_type.is_some_and(|ct| self.accepts(ct)) {
            Ok(())
        } else {
            Err(Rejection::UnsupportedMediaType {
                accepted: self.accepted_display.clone(),
            })
        };
        let Some(declared) = content_length else {
            return Ok(BodyPlan::Buffer(BodyCheck {
                empty: self.no_body(method),
                media,
            }));
        };
        media?;
        self.check_size(declared)?;
        Ok(BodyPlan::Buffer(BodyCheck {
            empty: Ok(()),
            media: Ok(()),
        }))
    }

    /// A request without a body: fine, except that a method that carries a body
    /// (POST, PUT, PATCH, ...) on a route with a schema is refused (400 `not_json`),
    /// since an empty body is no JSON document.
    fn no_body(&self, method: &str) -> Result<(), Rejection> {
        // RFC 9110 §9.1: methods are case-sensitive, so "get" is not GET.
        if BODYLESS_METHODS.contains(&method) || self.schema.is_none() {
            Ok(())
        } else {
            Err(empty_body())
        }
    }

    /// Called on every chunk with the body bytes received so far: the deferred
    /// `Content-Type` verdict once there is a byte (415), and the size cap (413).
    pub(crate) fn check_chunk(&self, check: &BodyCheck, total: u64) -> Result<(), Rejection> {
        if total > 0 {
            check.media.clone()?;
        }
        self.check_size(total)
    }

    /// Judges the complete body: an empty one as no body at all, any other with
    /// [`Self::validate`].
    pub(crate) fn finish(&self, check: &BodyCheck, body: &[u8]) -> Result<(), Rejection> {
        if body.is_empty() {
            return check.empty.clone();
        }
        check.media.clone()?;
        self.validate(body)
    }

    /// Fails (413) once the cumulative body size passes `max_body_bytes`. Call it on
    /// every chunk with the total received so far.
    pub(crate) fn check_size(&self, total_bytes_so_far: u64) -> Result<(), Rejection> {
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
    /// An empty body passes only on a route without a schema (the filter judges an
    /// empty body by method first, in [`Self::finish`]). Duplicate member names are
    /// refused (`not_json`): RFC 8259 §4 leaves their meaning open, and a parser
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
        schema
            .validate(value)
            .map_err(|errors| Rejection::SchemaViolation { errors })
    }

    /// True if the `Content-Type` value is an accepted JSON media type with a
    /// UTF-8 (or no) charset.
    fn accepts(&self, content_type: &str) -> bool {
        MediaType::parse(content_type).is_some_and(|media| {
            media.charset_is_utf8() && self.accepted.iter().any(|range| range.matches(&media))
        })
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
/// duplicate-member check inline ([`crate::json`]). The body must be
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
    json::parse(text, limits).map_err(|e| match e {
        JsonError::Limit(description) => over_limit(description),
        // The parser's messages name the line and column, never the input.
        JsonError::Syntax(description) => not_json(format!(
            "request body is not valid JSON: {}",
            clip(&description, MAX_ERROR_MESSAGE_CHARS)
        )),
    })
}

#[cfg(test)]
mod tests;
