//! JSON Schema for request bodies: the shared `schemas` registry, compilation of a
//! route's schema at configure time, and boon's failures rendered as the 400's
//! `errors` (JSON Pointer, keyword, a message that never quotes request values).
//!
//! Nothing is ever fetched: a `$ref` resolves inside the schema itself, against the
//! registry (by `$id`) or against boon's built-in meta-schemas.

use super::{MAX_ERROR_MESSAGE_CHARS, MAX_POINTER_CHARS, MAX_SCHEMA_ERRORS};
use crate::config::ConfigError;
use crate::reply::SchemaError;
use boon::{CompileError, Compiler, Draft, ErrorKind, InstanceLocation, InstanceToken, Schemas};
use serde_json::Value;
use std::fmt::{self, Write as _};
use std::rc::Rc;

/// Configuration error messages about a schema are cut to this many characters.
const MAX_CONFIG_MESSAGE_CHARS: usize = 600;

/// Location under which a route schema is compiled when it has no `$id`. The
/// `.invalid` TLD (RFC 2606) can never resolve, and nothing is fetched anyway.
const ROUTE_SCHEMA_URL: &str = "https://api-guard.invalid/request-schema.json";

/// A source of schema documents by absolute URL (see [`SchemaRegistry::with_loader`]).
type DocLoader = Rc<dyn Fn(&str) -> Option<Value>>;

/// One `schemas` entry.
struct Entry {
    /// `$id` as written.
    id: String,
    /// The `$id` as boon spells the URL it asks its loader for (WHATWG-normalised:
    /// scheme and host in lower case, no fragment).
    url: String,
    doc: Value,
}

/// Shared schemas from the top-level `schemas`, found by their `$id`.
///
/// Also the only source of documents for `$ref`s that leave a route schema: the
/// filter never fetches anything. Tests may add a loader
/// ([`SchemaRegistry::with_loader`]) to serve fixtures; configuration cannot.
///
/// Entries reach boon through its loader, on demand, so a schema's compilation
/// copies only the entries it references: handing every entry to every compiler
/// would copy the whole registry once per schema, seconds at load for an imported
/// API of a thousand operations and as many shared schemas.
#[derive(Clone, Default)]
pub struct SchemaRegistry {
    /// In configuration order.
    docs: Rc<Vec<Entry>>,
    /// Fallback document source for URLs not in `docs` (tests only).
    loader: Option<DocLoader>,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field(
                "ids",
                &self.docs.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
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
    pub(crate) fn compile(entries: &[Value]) -> Result<SchemaRegistry, ConfigError> {
        let mut docs: Vec<Entry> = Vec::with_capacity(entries.len());
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
            if let Some(j) = docs.iter().position(|other| same_id(&other.id, id)) {
                return Err(ConfigError::new(
                    format!("{path}.$id"),
                    format!("\"{}\" is already the $id of schemas[{j}]", clip(id, 100)),
                ));
            }
            let without_fragment = id.split('#').next().unwrap_or_default();
            let url = url::Url::parse(without_fragment).map_err(|e| {
                ConfigError::new(
                    format!("{path}.$id"),
                    format!("invalid $id: \"{}\": {e}", clip(id, 100)),
                )
            })?;
            docs.push(Entry {
                id: id.clone(),
                url: url.as_str().to_string(),
                doc: entry.clone(),
            });
        }
        let registry = SchemaRegistry {
            docs: Rc::new(docs),
            loader: None,
        };
        // One compiler for all entries: they may refer to each other.
        let mut compiler = registry.compiler(Draft::V2020_12, false);
        let mut compiled = Schemas::new();
        for (i, entry) in registry.docs.iter().enumerate() {
            compiler.compile(&entry.id, &mut compiled).map_err(|e| {
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
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.docs.len()
    }

    /// The entry whose `$id` is `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&Value> {
        self.contains_id(id)
            .and_then(|i| self.docs.get(i))
            .map(|e| &e.doc)
    }

    fn contains_id(&self, id: &str) -> Option<usize> {
        self.docs.iter().position(|e| same_id(&e.id, id))
    }

    /// A boon compiler that finds registry entries through its loader and fetches
    /// nothing.
    fn compiler(&self, default_draft: Draft, assert_formats: bool) -> Compiler {
        let mut compiler = Compiler::new();
        compiler.set_default_draft(default_draft);
        if assert_formats {
            compiler.enable_format_assertions();
        }
        compiler.use_loader(Box::new(RegistryLoader {
            entries: self.docs.clone(),
            fallback: self.loader.clone(),
        }));
        compiler
    }
}

/// Serves `$ref` targets: registry entries by their URL, then the test loader if
/// any, otherwise nothing. The standard meta-schemas never reach it (built into
/// boon); boon asks once per document and compilation.
struct RegistryLoader {
    entries: Rc<Vec<Entry>>,
    fallback: Option<DocLoader>,
}

impl boon::UrlLoader for RegistryLoader {
    fn load(&self, url: &str) -> Result<Value, Box<dyn std::error::Error>> {
        if let Some(entry) = self.entries.iter().find(|e| e.url == url) {
            return Ok(entry.doc.clone());
        }
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

/// A compiled JSON Schema.
pub struct CompiledSchema {
    schemas: Schemas,
    index: boon::SchemaIndex,
}

impl CompiledSchema {
    /// Validates a parsed body; on failure, at most [`MAX_SCHEMA_ERRORS`] failures.
    pub(crate) fn validate(&self, value: &Value) -> Result<(), Vec<SchemaError>> {
        self.schemas
            .validate(value, self.index)
            .map_err(|error| collect_errors(&error))
    }
}

/// Compiles a route schema against the registry.
pub(crate) fn compile(
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
    let mut compiler = registry.compiler(draft, assert_formats);
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
pub(crate) fn clip(text: &str, max: usize) -> String {
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
