//! The OpenAPI importer: an OpenAPI 3.0 or 3.1 document (JSON or YAML) in, a
//! complete api-guard configuration out (docs/openapi.md has the whole story).
//!
//! - One route per operation, named from its `operationId` (made safe and unique),
//!   with its path template (behind the first server URL's path) and method.
//! - Its parameters (path-level ones included) as `request.parameters`, with
//!   `additional_query: deny`; its JSON request body's media types and schema.
//! - Schemas translated to JSON Schema 2020-12, `$ref`s into
//!   `components/schemas` resolved to `schemas` entries by `$id` ([`schema`]).
//! - Security requirements as `auth`, each scheme verified by the provider of the
//!   same name, scopes as a `scope` claim rule.
//! - `x-api-guard` at the root (and `OVERLAY`) adds top-level fields; on a path
//!   item or an operation it is merged into the route.
//! - Routes ordered literal-before-parameter; `unmatched: deny`.
//!
//! The result is compiled with the filter's own code before it is printed
//! ([`api_guard::api::check_config`]): what the filter would refuse is reported as
//! an error naming the place in the document. Every error carries a JSON Pointer
//! (`#/paths/~1pets/post/requestBody`); nothing panics.

pub mod load;
mod print;
mod schema;

pub use print::pretty;

use schema::Schemas;
use serde_json::{json, Map, Value};
use std::fmt;

/// HTTP methods an OpenAPI path item can hold, in the order routes are written.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
/// Longest route name the filter accepts.
const MAX_ROUTE_NAME: usize = 64;
/// Header parameters OpenAPI says to ignore (the protocol carries them).
const IGNORED_HEADERS: [&str; 3] = ["accept", "content-type", "authorization"];
/// Most `$ref`s followed in a row to reach a parameter, body or path item.
const MAX_REF_CHAIN: usize = 32;

/// An import error: where in the document, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// JSON Pointer as a URI fragment (`#/paths/~1pets/get`), empty for the whole
    /// document.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

impl Error {
    /// An error at `pointer`.
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.pointer, self.message)
        }
    }
}

impl std::error::Error for Error {}

/// A JSON Pointer token (RFC 6901: `~` is `~0`, `/` is `~1`).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The reverse of [`escape`].
pub fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Choices of the import itself (the rest comes from `x-api-guard` and the overlay).
#[derive(Debug, Clone)]
pub struct Options {
    /// The path every template is put behind. `None`: the path of the first
    /// `servers` URL; `Some("")` or `Some("/")`: none.
    pub base_path: Option<String>,
    /// `additional_query: deny` on every route (else `allow`).
    pub deny_additional_query: bool,
    /// An operation that accepts JSON and other media types: check its JSON bodies
    /// and refuse the others (415). Else (default) its bodies are not checked.
    pub json_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            base_path: None,
            deny_additional_query: true,
            json_only: false,
        }
    }
}

/// A successful import: the configuration and what could not be carried over.
#[derive(Debug)]
pub struct Output {
    /// The plugin configuration.
    pub config: Value,
    /// One line per thing of the document the filter does not check (a cookie
    /// parameter, a form body, ...), each starting with its JSON Pointer.
    pub warnings: Vec<String>,
}

/// Imports `spec`, with `overlay` (the same fields as the root `x-api-guard`, and
/// `operations`) applied over the document's own `x-api-guard`.
pub fn import(spec: &Value, overlay: Option<&Value>, options: &Options) -> Result<Output, Error> {
    let version = match spec.get("openapi") {
        Some(Value::String(v)) => v.as_str(),
        _ if spec.get("swagger").is_some() => {
            return Err(Error::new(
                "#/swagger",
                "Swagger 2.0 is not supported; convert the document to OpenAPI 3 first",
            ))
        }
        _ => {
            return Err(Error::new(
                "#",
                "not an OpenAPI document: no `openapi` version string",
            ))
        }
    };
    let v30 = if version.starts_with("3.0") {
        true
    } else if version.starts_with("3.1") {
        false
    } else {
        return Err(Error::new(
            "#/openapi",
            format!("version {version} is not supported; expected 3.0.x or 3.1.x"),
        ));
    };
    if !spec.is_object() {
        return Err(Error::new("#", "the document must be an object"));
    }
    let mut ext = match spec.get("x-api-guard") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(Error::new("#/x-api-guard", "must be an object")),
    };
    if let Some(overlay) = overlay {
        let Value::Object(patch) = overlay else {
            return Err(Error::new("overlay#", "the overlay must be an object"));
        };
        merge_patch_map(&mut ext, patch);
    }
    let operation_patches = match ext.remove("operations") {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(Error::new(
                "#/x-api-guard/operations",
                "must be an object: operationId -> route fields",
            ))
        }
    };
    let own_routes = take_array(&mut ext, "routes")?;
    let own_schemas = take_array(&mut ext, "schemas")?;
    let providers = ext.get("providers").cloned().unwrap_or(Value::Null);
    let slug = slug(
        spec.pointer("/info/title")
            .and_then(Value::as_str)
            .unwrap_or("api"),
    );
    let mut importer = Importer {
        spec,
        options,
        schemas: Schemas::new(spec, v30, &slug),
        providers: providers.as_object(),
        warnings: Vec::new(),
        names: own_routes
            .iter()
            .filter_map(|r| r.get("name")?.as_str().map(str::to_string))
            .collect(),
    };
    let root_prefix = match &options.base_path {
        Some(p) => normalize_base(p),
        None => importer.server_prefix(spec.get("servers"), "#/servers")?,
    };
    let mut routes: Vec<Generated> = Vec::new();
    match spec.get("paths") {
        None | Some(Value::Null) => importer.warn("#/paths", "no paths: every request is refused"),
        Some(Value::Object(paths)) => {
            for (key, item) in paths {
                let at = format!("#/paths/{}", escape(key));
                if key.starts_with("x-") {
                    continue;
                }
                importer.path_item(key, item, &at, &root_prefix, &mut routes)?;
            }
        }
        Some(_) => return Err(Error::new("#/paths", "must be an object")),
    }
    // Literal segments before parameters, as OpenAPI tools match; otherwise the
    // document's order (paths sorted, methods in METHODS order).
    routes.sort_by(|a, b| a.order.cmp(&b.order));

    for (key, patch) in &operation_patches {
        let Some(route) = routes.iter_mut().find(|r| {
            r.operation_id.as_deref() == Some(key.as_str()) || route_name(&r.route) == Some(key)
        }) else {
            return Err(Error::new(
                format!("#/x-api-guard/operations/{}", escape(key)),
                "no operation has this operationId or route name",
            ));
        };
        merge_patch(&mut route.route, patch);
    }

    let entries = importer.schemas.entries()?;
    let mut sources: Vec<String> = Vec::new();
    let mut all_routes: Vec<Value> = Vec::new();
    for (i, r) in own_routes.into_iter().enumerate() {
        sources.push(format!("#/x-api-guard/routes/{i}"));
        all_routes.push(r);
    }
    for r in routes {
        sources.push(r.at);
        all_routes.push(r.route);
    }
    let mut schema_sources: Vec<String> = Vec::new();
    let mut all_schemas: Vec<Value> = Vec::new();
    for (i, s) in own_schemas.into_iter().enumerate() {
        schema_sources.push(format!("#/x-api-guard/schemas/{i}"));
        all_schemas.push(s);
    }
    for (s, at) in entries {
        schema_sources.push(at);
        all_schemas.push(s);
    }
    let mut config = Map::new();
    config.insert("routes".into(), Value::Array(all_routes));
    config.insert("unmatched".into(), Value::String("deny".into()));
    if !all_schemas.is_empty() {
        config.insert("schemas".into(), Value::Array(all_schemas));
    }
    merge_patch_map(&mut config, &ext);
    let config = Value::Object(config);
    check(&config, &sources, &schema_sources)?;
    Ok(Output {
        config,
        warnings: importer.warnings,
    })
}

/// Compiles the configuration as the filter does; an error is reported at the
/// place of the document the failing route or schema came from.
fn check(config: &Value, routes: &[String], schemas: &[String]) -> Result<(), Error> {
    let text = config.to_string();
    let Err(message) = api_guard::api::check_config(text.as_bytes()) else {
        return Ok(());
    };
    let place = ["routes[", "schemas["]
        .iter()
        .zip([routes, schemas])
        .find_map(|(prefix, list)| {
            let rest = message.strip_prefix(prefix)?;
            let (index, _) = rest.split_once(']')?;
            list.get(index.parse::<usize>().ok()?).cloned()
        });
    // Anything else came from the root `x-api-guard` or the overlay.
    Err(Error::new(
        place.unwrap_or_else(|| "#/x-api-guard".to_string()),
        format!("the filter refuses the generated configuration: {message}"),
    ))
}

fn take_array(ext: &mut Map<String, Value>, key: &str) -> Result<Vec<Value>, Error> {
    match ext.remove(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(list)) => Ok(list),
        Some(_) => Err(Error::new(
            format!("#/x-api-guard/{key}"),
            "must be an array",
        )),
    }
}

fn route_name(route: &Value) -> Option<&String> {
    match route.get("name") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// A route made from an operation.
struct Generated {
    route: Value,
    /// Where it came from (`#/paths/~1pets/get`).
    at: String,
    operation_id: Option<String>,
    /// Sort key: see [`template_order`].
    order: Vec<(u8, isize, String)>,
}

struct Importer<'a> {
    spec: &'a Value,
    options: &'a Options,
    schemas: Schemas<'a>,
    providers: Option<&'a Map<String, Value>>,
    warnings: Vec<String>,
    /// Route names taken so far.
    names: Vec<String>,
}

/// A request body the filter checks: its JSON media types and schema (none: any
/// JSON document).
type Body = (Vec<String>, Option<Value>);

/// What became of one parameter.
enum ParamOutcome {
    /// A `request.parameters` entry.
    Entry(Value),
    /// Not checked (a warning says why).
    Skipped,
    /// Not checked, and its values arrive under other query keys
    /// (`deepObject`, exploded objects): `additional_query` must stay `allow`.
    SkippedQueryKeys,
}

impl<'a> Importer<'a> {
    fn warn(&mut self, at: &str, message: impl fmt::Display) {
        self.warnings.push(format!("{at}: {message}"));
    }

    /// Follows `$ref`s (inside the document only) from `value` at `at`: the
    /// object reached and its pointer.
    fn deref(&self, value: &'a Value, at: &str) -> Result<(&'a Value, String), Error> {
        let mut value = value;
        let mut at = at.to_string();
        for _ in 0..MAX_REF_CHAIN {
            let Some(reference) = value.get("$ref") else {
                return Ok((value, at));
            };
            let Value::String(reference) = reference else {
                return Err(Error::new(format!("{at}/$ref"), "must be a string"));
            };
            let Some(fragment) = reference.strip_prefix('#') else {
                return Err(Error::new(
                    format!("{at}/$ref"),
                    format!("\"{reference}\" refers outside this document; bundle the document into one file first (for example `redocly bundle`)"),
                ));
            };
            let fragment = fragment.to_string();
            value = self.spec.pointer(&fragment).ok_or_else(|| {
                Error::new(
                    format!("{at}/$ref"),
                    format!("\"{reference}\": nothing at this place"),
                )
            })?;
            at = format!("#{fragment}");
        }
        Err(Error::new(at, "the $ref chain is too long or loops"))
    }

    /// The path of the first URL of `servers` (`https://h/v1` and `/v1` give `/v1`),
    /// with server variables at their defaults; "" without servers.
    fn server_prefix(&mut self, servers: Option<&Value>, at: &str) -> Result<String, Error> {
        let Some(first) = servers.and_then(Value::as_array).and_then(|s| s.first()) else {
            return Ok(String::new());
        };
        let Some(url) = first.get("url").and_then(Value::as_str) else {
            return Err(Error::new(
                format!("{at}/0/url"),
                "a server needs a `url` string",
            ));
        };
        let mut text = String::new();
        let mut rest = url;
        while let Some((head, tail)) = rest.split_once('{') {
            text.push_str(head);
            let Some((name, after)) = tail.split_once('}') else {
                return Err(Error::new(format!("{at}/0/url"), "a '{' is not closed"));
            };
            let default = first
                .pointer(&format!("/variables/{}/default", escape(name)))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Error::new(
                        format!("{at}/0/variables"),
                        format!("the server variable {{{name}}} has no default"),
                    )
                })?;
            text.push_str(default);
            rest = after;
        }
        text.push_str(rest);
        let path = match text.split_once("://") {
            Some((_, after)) => after.find('/').map_or("", |i| &after[i..]),
            None => text.as_str(),
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        Ok(normalize_base(path))
    }

    fn path_item(
        &mut self,
        key: &str,
        item: &'a Value,
        at: &str,
        root_prefix: &str,
        routes: &mut Vec<Generated>,
    ) -> Result<(), Error> {
        let (item, item_at) = self.deref(item, at)?;
        let Value::Object(obj) = item else {
            return Err(Error::new(at, "a path item must be an object"));
        };
        let (template, param_names) = template(key, at)?;
        let prefix = match (&self.options.base_path, obj.get("servers")) {
            (None, Some(servers)) => {
                self.server_prefix(Some(servers), &format!("{item_at}/servers"))?
            }
            _ => root_prefix.to_string(),
        };
        let path_params = list_of(obj.get("parameters"), &format!("{item_at}/parameters"))?;
        let item_patch = obj.get("x-api-guard");
        for method in METHODS {
            let Some(op) = obj.get(method) else { continue };
            let op_at = format!("{item_at}/{method}");
            let op_prefix = match (&self.options.base_path, op.get("servers")) {
                (None, Some(servers)) => {
                    self.server_prefix(Some(servers), &format!("{op_at}/servers"))?
                }
                _ => prefix.clone(),
            };
            let full = join_path(&op_prefix, &template);
            let route = self.operation(
                method,
                op,
                &op_at,
                &full,
                &param_names,
                &path_params,
                item_patch,
            )?;
            routes.push(Generated {
                order: template_order(&full),
                operation_id: op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                at: op_at,
                route,
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn operation(
        &mut self,
        method: &str,
        op: &'a Value,
        at: &str,
        template: &str,
        param_names: &[(String, String)],
        path_params: &[(&'a Value, String)],
        item_patch: Option<&Value>,
    ) -> Result<Value, Error> {
        if !op.is_object() {
            return Err(Error::new(at, "an operation must be an object"));
        }
        let name = self.route_name(
            op.get("operationId").and_then(Value::as_str),
            method,
            template,
        );
        let mut route = Map::new();
        route.insert("name".into(), Value::String(name));
        route.insert(
            "match".into(),
            json!({ "path": template, "methods": [method.to_ascii_uppercase()] }),
        );

        // Parameters: the operation's override the path item's of the same name
        // and location.
        let op_params = list_of(op.get("parameters"), &format!("{at}/parameters"))?;
        let mut resolved: Vec<(&Value, String)> = Vec::new();
        for (p, p_at) in path_params.iter().chain(op_params.iter()) {
            let (p, p_at) = self.deref(p, p_at)?;
            let key = (
                p.get("in").and_then(Value::as_str),
                p.get("name").and_then(Value::as_str),
            );
            if let Some(i) = resolved.iter().position(|(q, _)| {
                (
                    q.get("in").and_then(Value::as_str),
                    q.get("name").and_then(Value::as_str),
                ) == key
            }) {
                resolved.remove(i);
            }
            resolved.push((p, p_at));
        }
        let mut parameters = Vec::new();
        let mut deny = self.options.deny_additional_query;
        for (p, p_at) in resolved {
            match self.parameter(p, &p_at, param_names)? {
                ParamOutcome::Entry(e) => parameters.push(e),
                ParamOutcome::Skipped => {}
                ParamOutcome::SkippedQueryKeys => deny = false,
            }
        }

        let (auth, query_names) = self.security(op, at)?;
        for name in query_names {
            let taken = parameters
                .iter()
                .any(|p| p["in"] == "query" && p["name"] == name.as_str());
            if !taken {
                parameters.push(json!({ "in": "query", "name": name }));
            }
        }
        if let Some(auth) = auth {
            route.insert("auth".into(), auth);
        }

        let mut request = Map::new();
        if !parameters.is_empty() {
            request.insert("parameters".into(), Value::Array(parameters));
        }
        if deny {
            request.insert("additional_query".into(), Value::String("deny".into()));
        }
        if let Some((types, schema)) = self.body(op, at)? {
            request.insert("content_types".into(), json!(types));
            if let Some(schema) = schema {
                request.insert("schema".into(), schema);
            }
        }
        if !request.is_empty() {
            route.insert("request".into(), Value::Object(request));
        }
        let mut route = Value::Object(route);
        for patch in [item_patch, op.get("x-api-guard")].into_iter().flatten() {
            if !patch.is_object() {
                return Err(Error::new(
                    format!("{at}/x-api-guard"),
                    "must be an object of route fields",
                ));
            }
            merge_patch(&mut route, patch);
        }
        Ok(route)
    }

    /// A safe, unique route name: the `operationId` with anything but letters,
    /// digits, `-` and `_` turned into `-`, at most 64 characters; without one,
    /// the method and the path.
    fn route_name(&mut self, operation_id: Option<&str>, method: &str, template: &str) -> String {
        let source = match operation_id {
            Some(id) if id.chars().any(|c| c.is_ascii_alphanumeric()) => id.to_string(),
            _ => format!("{method}{template}"),
        };
        let mut base = String::new();
        for c in source.chars() {
            let c = if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            };
            if !(c == '-' && (base.is_empty() || base.ends_with('-'))) {
                base.push(c);
            }
        }
        let base = base.trim_end_matches('-');
        let base = if base.is_empty() { "route" } else { base };
        let mut n = 1;
        loop {
            let suffix = if n == 1 {
                String::new()
            } else {
                format!("-{n}")
            };
            let keep = MAX_ROUTE_NAME - suffix.len();
            let name = format!("{}{suffix}", &base[..base.len().min(keep)]);
            if !self.names.contains(&name) {
                self.names.push(name.clone());
                return name;
            }
            n += 1;
        }
    }

    fn parameter(
        &mut self,
        p: &'a Value,
        at: &str,
        param_names: &[(String, String)],
    ) -> Result<ParamOutcome, Error> {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            return Err(Error::new(at, "a parameter needs a `name` string"));
        };
        let Some(location) = p.get("in").and_then(Value::as_str) else {
            return Err(Error::new(at, "a parameter needs an `in` string"));
        };
        let style = p.get("style").and_then(Value::as_str);
        let name = match location {
            "cookie" => {
                self.warn(at, format!("cookie parameter `{name}` is not checked"));
                return Ok(ParamOutcome::Skipped);
            }
            "header" if IGNORED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) => {
                return Ok(ParamOutcome::Skipped);
            }
            "path" => match param_names.iter().find(|(orig, _)| orig == name) {
                Some((_, safe)) => safe.clone(),
                None => {
                    self.warn(
                        at,
                        format!("path parameter `{name}` is not in the path template; not checked"),
                    );
                    return Ok(ParamOutcome::Skipped);
                }
            },
            "query" | "header" => name.to_string(),
            other => {
                return Err(Error::new(
                    format!("{at}/in"),
                    format!(
                    "`{other}` is not a parameter location; expected path, query, header or cookie"
                ),
                ))
            }
        };
        let required = location == "path" || p.get("required") == Some(&Value::Bool(true));
        let mut entry = Map::new();
        entry.insert("in".into(), Value::String(location.into()));
        entry.insert("name".into(), Value::String(name.clone()));
        if required {
            entry.insert("required".into(), Value::Bool(true));
        }
        let presence_only = |this: &mut Self, why: &str| {
            this.warn(
                at,
                format!("{location} parameter `{name}`: {why}; only its presence is checked"),
            );
        };
        let readable_style = match (location, style) {
            (_, None) => true,
            ("path" | "header", Some("simple")) => true,
            ("query", Some("form")) => true,
            ("query", Some("deepObject")) => {
                self.warn(at, format!("query parameter `{name}` (deepObject) is not checked; additional_query stays allow"));
                return Ok(ParamOutcome::SkippedQueryKeys);
            }
            _ => false,
        };
        let Some(schema) = p.get("schema") else {
            if p.get("content").is_some() {
                presence_only(self, "values described by `content` are not read");
            }
            return Ok(ParamOutcome::Entry(Value::Object(entry)));
        };
        if !readable_style {
            presence_only(
                self,
                &format!("style `{}` is not read", style.unwrap_or("")),
            );
            return Ok(ParamOutcome::Entry(Value::Object(entry)));
        }
        if self.is_object_schema(schema, &format!("{at}/schema"))? {
            let explode = p.get("explode").and_then(Value::as_bool).unwrap_or(true);
            if location == "query" && explode {
                self.warn(at, format!("query parameter `{name}` is an exploded object (its fields are query keys): not checked; additional_query stays allow"));
                return Ok(ParamOutcome::SkippedQueryKeys);
            }
            presence_only(self, "object values are not read");
            return Ok(ParamOutcome::Entry(Value::Object(entry)));
        }
        let translated = self.schemas.translate(schema, &format!("{at}/schema"))?;
        entry.insert("schema".into(), translated);
        Ok(ParamOutcome::Entry(Value::Object(entry)))
    }

    /// Whether a parameter schema is an object (following `$ref`s).
    fn is_object_schema(&self, schema: &'a Value, at: &str) -> Result<bool, Error> {
        let (schema, _) = self.deref(schema, at)?;
        Ok(match schema.get("type") {
            Some(Value::String(t)) => t == "object",
            Some(Value::Array(list)) => {
                list.iter().any(|t| t == "object")
                    && !list.iter().any(|t| t == "string" || t == "array")
            }
            _ => schema.get("properties").is_some(),
        })
    }

    /// `auth` from the operation's (or the document's) `security`, and the query
    /// keys its credentials travel in (declared so `additional_query: deny` lets
    /// them through).
    fn security(&mut self, op: &Value, at: &str) -> Result<(Option<Value>, Vec<String>), Error> {
        let (list, list_at) = match (op.get("security"), self.spec.get("security")) {
            (Some(s), _) => (s, format!("{at}/security")),
            (None, Some(s)) => (s, "#/security".to_string()),
            (None, None) => return Ok((None, Vec::new())),
        };
        let Value::Array(list) = list else {
            return Err(Error::new(
                list_at,
                "must be an array of security requirements",
            ));
        };
        if list.is_empty() {
            return Ok((None, Vec::new()));
        }
        let mut optional = false;
        let mut alternatives: Vec<Value> = Vec::new();
        let mut scope_sets: Vec<Vec<String>> = Vec::new();
        let mut query_names: Vec<String> = Vec::new();
        for (i, requirement) in list.iter().enumerate() {
            let req_at = format!("{list_at}/{i}");
            let Value::Object(requirement) = requirement else {
                return Err(Error::new(
                    req_at,
                    "a security requirement must be an object",
                ));
            };
            if requirement.is_empty() {
                optional = true;
                continue;
            }
            let mut all: Vec<Value> = Vec::new();
            let mut scopes: Vec<String> = Vec::new();
            for (scheme, wanted) in requirement {
                let scheme_at = format!("#/components/securitySchemes/{}", escape(scheme));
                let Some(definition) = self.spec.pointer(&scheme_at[1..]) else {
                    return Err(Error::new(
                        format!("{req_at}/{}", escape(scheme)),
                        format!(
                            "no security scheme named `{scheme}` in components/securitySchemes"
                        ),
                    ));
                };
                let (definition, _) = self.deref(definition, &scheme_at)?;
                let Some(provider) = self.providers.and_then(|p| p.get(scheme)) else {
                    return Err(Error::new(
                        scheme_at,
                        format!(
                            "no provider named `{scheme}` verifies this scheme: add one under `providers` in the document's root `x-api-guard` or in the OVERLAY file"
                        ),
                    ));
                };
                if definition.get("type").and_then(Value::as_str) == Some("apiKey")
                    && definition.get("in").and_then(Value::as_str) == Some("query")
                {
                    if let Some(n) = definition.get("name").and_then(Value::as_str) {
                        query_names.push(n.to_string());
                    }
                }
                if let Some(Value::Array(params)) = provider.get("from_params") {
                    query_names.extend(params.iter().filter_map(Value::as_str).map(str::to_string));
                }
                if let Value::Array(w) = wanted {
                    for s in w.iter().filter_map(Value::as_str) {
                        if !scopes.iter().any(|x| x == s) {
                            scopes.push(s.to_string());
                        }
                    }
                }
                all.push(Value::String(scheme.clone()));
            }
            scopes.sort();
            scope_sets.push(scopes);
            alternatives.push(if all.len() == 1 {
                all.swap_remove(0)
            } else {
                json!({ "all": all })
            });
        }
        if alternatives.is_empty() {
            return Ok((None, query_names));
        }
        let requires = if alternatives.len() == 1 {
            alternatives.swap_remove(0)
        } else {
            json!({ "any": alternatives })
        };
        let mut auth = Map::new();
        auth.insert("requires".into(), requires);
        let scopes = scope_sets.first().cloned().unwrap_or_default();
        if scope_sets.iter().any(|s| *s != scopes) {
            return Err(Error::new(
                list_at,
                "the alternatives require different scopes, which one claim rule cannot say; set `auth` in this operation's `x-api-guard`",
            ));
        }
        if optional {
            auth.insert("allow_missing".into(), Value::Bool(true));
            if !scopes.is_empty() {
                self.warn(
                    &list_at,
                    "security is optional here (`{}`): scopes are not checked",
                );
            }
        } else if !scopes.is_empty() {
            auth.insert("claims".into(), json!({ "scope": { "all_of": scopes } }));
        }
        Ok((Some(Value::Object(auth)), query_names))
    }

    /// The JSON media types and schema of the request body; `None` when there is no
    /// body to check (none declared, or one the filter cannot read, with a warning).
    fn body(&mut self, op: &'a Value, at: &str) -> Result<Option<Body>, Error> {
        let Some(body) = op.get("requestBody") else {
            return Ok(None);
        };
        let (body, body_at) = self.deref(body, &format!("{at}/requestBody"))?;
        let Some(content) = body.get("content") else {
            return Ok(None);
        };
        let Value::Object(content) = content else {
            return Err(Error::new(
                format!("{body_at}/content"),
                "must be an object of media types",
            ));
        };
        let mut types: Vec<String> = Vec::new();
        let mut schemas: Vec<Option<Value>> = Vec::new();
        let mut others: Vec<&str> = Vec::new();
        for (media, entry) in content {
            let essence = media
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let here = format!("{body_at}/content/{}", escape(media));
            if !is_json(&essence) {
                others.push(media);
                continue;
            }
            if !types.contains(&essence) {
                types.push(essence);
            }
            schemas.push(match entry.get("schema") {
                Some(s) => Some(self.schemas.translate(s, &format!("{here}/schema"))?),
                None => None,
            });
        }
        if !others.is_empty() {
            let list = others.join(", ");
            if types.is_empty() || !self.options.json_only {
                self.warn(
                    &format!("{body_at}/content"),
                    format!("bodies of {list} cannot be checked (JSON only): this operation's bodies are not checked"),
                );
                return Ok(None);
            }
            self.warn(
                &format!("{body_at}/content"),
                format!("JSON bodies only (--json-only): {list} bodies are refused with 415"),
            );
        }
        if types.is_empty() {
            return Ok(None);
        }
        let schema = if schemas.iter().any(Option::is_none) {
            None
        } else {
            let mut distinct: Vec<Value> = Vec::new();
            for s in schemas.into_iter().flatten() {
                if !distinct.contains(&s) {
                    distinct.push(s);
                }
            }
            if distinct.len() == 1 {
                distinct.pop()
            } else {
                Some(json!({ "anyOf": distinct }))
            }
        };
        Ok(Some((types, schema)))
    }
}

/// A JSON media type the filter accepts: `application/json`, `type/x+json`.
fn is_json(essence: &str) -> bool {
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    token(kind)
        && (essence == "application/json"
            || (sub.ends_with("+json") && (sub == "*+json" || token(sub))))
}

/// `[...]` of objects found at `at`, each with its pointer.
fn list_of<'v>(value: Option<&'v Value>, at: &str) -> Result<Vec<(&'v Value, String)>, Error> {
    match value {
        None => Ok(Vec::new()),
        Some(Value::Array(list)) => Ok(list
            .iter()
            .enumerate()
            .map(|(i, v)| (v, format!("{at}/{i}")))
            .collect()),
        Some(_) => Err(Error::new(at, "must be an array")),
    }
}

/// The filter's template for an OpenAPI path: a trailing `/` dropped, parameter
/// names made of letters, digits and `_` (unique). Returns the template and the
/// `(OpenAPI name, template name)` pairs.
fn template(key: &str, at: &str) -> Result<(String, Vec<(String, String)>), Error> {
    if !key.starts_with('/') {
        return Err(Error::new(at, "a path must start with '/'"));
    }
    let trimmed = if key.len() > 1 {
        key.trim_end_matches('/')
    } else {
        key
    };
    let mut out = String::new();
    let mut names: Vec<(String, String)> = Vec::new();
    let mut rest = if trimmed.is_empty() { "/" } else { trimmed };
    while let Some((head, tail)) = rest.split_once('{') {
        out.push_str(head);
        let Some((name, after)) = tail.split_once('}') else {
            return Err(Error::new(at, "a '{' is not closed"));
        };
        let mut safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if safe.is_empty() {
            return Err(Error::new(at, "a parameter has an empty name"));
        }
        let stem = safe.clone();
        let mut n = 2;
        while names.iter().any(|(_, s)| *s == safe) {
            safe = format!("{stem}_{n}");
            n += 1;
        }
        out.push('{');
        out.push_str(&safe);
        out.push('}');
        names.push((name.to_string(), safe));
        rest = after;
    }
    out.push_str(rest);
    Ok((out, names))
}

/// A base path as a prefix: leading `/`, no trailing one; "" for none.
fn normalize_base(path: &str) -> String {
    let trimmed = path.trim().trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

fn join_path(prefix: &str, template: &str) -> String {
    match (prefix.is_empty(), template == "/") {
        (true, _) => template.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}{template}"),
    }
}

/// Sort key of a template: per segment, a literal (0) before text mixed with
/// parameters (1, more literal characters first) before `{name}` (2). Literal
/// segments also compare by text, which keeps the routes under one prefix together.
fn template_order(template: &str) -> Vec<(u8, isize, String)> {
    template
        .split('/')
        .skip(1)
        .map(|seg| {
            if !seg.contains('{') {
                (0, 0, seg.to_string())
            } else if seg.starts_with('{') && seg.ends_with('}') && seg.matches('{').count() == 1 {
                (2, 0, String::new())
            } else {
                let mut literal = 0isize;
                let mut depth = false;
                for c in seg.chars() {
                    match c {
                        '{' => depth = true,
                        '}' => depth = false,
                        _ if !depth => literal += 1,
                        _ => {}
                    }
                }
                (1, -literal, String::new())
            }
        })
        .collect()
}

/// The API's name for `$id`s: lower-case letters, digits and `-`.
fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 40 {
            break;
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "api".to_string()
    } else {
        out
    }
}

/// RFC 7386 JSON merge patch: objects merge member by member, `null` removes a
/// member, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => merge_patch_map(t, p),
        (t, p) => *t = p.clone(),
    }
}

fn merge_patch_map(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
            continue;
        }
        match target.get_mut(key) {
            Some(existing) if existing.is_object() && value.is_object() => {
                merge_patch(existing, value)
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests;
