//! `routes[].request.parameters` and `additional_query`: path, query and header
//! parameters checked at request headers, before any body is held.
//!
//! Values arrive as text. Each is turned into the JSON value OpenAPI's styles mean
//! (simple style for path and header parameters, form style for the query), then
//! validated by the parameter's compiled JSON Schema, the same validator as request
//! bodies. Which JSON type a text becomes is decided once, at load, from the
//! schema's `type` (following `$ref`, `allOf`, `anyOf`, `oneOf` and `enum`): a
//! schema of type `integer`, `number` or `boolean` receives the number or boolean
//! the text spells, `array` the items of a comma-separated list (or of repeated
//! query keys), anything else the string. A schema that says nothing about its type
//! gets a number or a boolean when the text spells one, else the string.
//!
//! Nothing from a value is ever copied into an error: messages come from the
//! schema's side (see `schema::message`).

use super::schema::{self, clip, CompiledSchema};
use super::{SchemaRegistry, MAX_SCHEMA_ERRORS};
use crate::config::{check, ConfigError, ParameterConfig};
use crate::json::{self, JsonLimits};
use crate::reply::{ParamError, Rejection, SchemaError};
use crate::route::{Params, PathTemplate};
use serde_json::Value;

/// Type bits of a parameter schema.
const NUM: u8 = 1;
const BOOL: u8 = 2;
const STR: u8 = 4;
const ARRAY: u8 = 8;
const OBJECT: u8 = 16;
/// What a schema silent about its type receives: a number, boolean or string.
const SCALAR: u8 = NUM | BOOL | STR;

/// Deepest `$ref`/`allOf` chain followed to find a parameter's type.
const MAX_SHAPE_DEPTH: u8 = 16;
/// Undeclared query parameter names are cut to this many characters in errors.
const MAX_NAME_CHARS: usize = 64;

/// Where a parameter is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Location {
    Path,
    Query,
    Header,
}

impl Location {
    fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
        }
    }
}

/// The JSON shape a parameter's text becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// A comma-separated list (or repeated query keys) becomes an array.
    array: bool,
    /// Type bits of the value, or of the items of an array.
    scalars: u8,
}

/// One compiled parameter.
struct Param {
    location: Location,
    name: String,
    required: bool,
    shape: Shape,
    schema: Option<CompiledSchema>,
}

/// The compiled `parameters` and `additional_query` of a route.
pub struct ParamPolicy {
    params: Vec<Param>,
    deny_additional_query: bool,
    /// Whether the query needs reading at all.
    reads_query: bool,
}

impl std::fmt::Debug for ParamPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamPolicy")
            .field(
                "params",
                &self
                    .params
                    .iter()
                    .map(|p| (p.location.as_str(), p.name.as_str()))
                    .collect::<Vec<_>>(),
            )
            .field("deny_additional_query", &self.deny_additional_query)
            .finish()
    }
}

/// The request side a check reads: path parameters, the raw query string (without
/// `?`), and header values (repeated headers joined with `,`).
pub struct ParamInputs<'a> {
    /// Path parameters the route captured (decoded).
    pub path: &'a Params,
    /// The query string, as sent, without `?`.
    pub query: &'a str,
    /// A request header's value, repeated ones joined with `,`.
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

impl ParamPolicy {
    /// Compiles `parameters` and `additional_query` of one `request` section; `None`
    /// when neither asks for anything. `path` names the section
    /// (`routes[1].request`); errors name the field below it.
    pub(crate) fn compile(
        params: &[Value],
        additional_query: Option<&str>,
        template: &PathTemplate,
        registry: &SchemaRegistry,
        assert_formats: bool,
        path: &str,
    ) -> Result<Option<ParamPolicy>, ConfigError> {
        let deny_additional_query = match additional_query {
            None | Some("allow") => false,
            Some("deny") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    format!("{path}.additional_query"),
                    format!(
                        "unknown variant `{}`, expected `allow` or `deny`",
                        check::clip(other)
                    ),
                ))
            }
        };
        let template_params = template.param_names();
        let mut out: Vec<Param> = Vec::with_capacity(params.len());
        for (i, p) in params.iter().enumerate() {
            let at = format!("{path}.parameters[{i}]");
            let p = ParameterConfig::from_value(p, &at)?;
            let location =
                match p.location {
                    "path" => Location::Path,
                    "query" => Location::Query,
                    "header" => Location::Header,
                    "cookie" => return Err(ConfigError::new(
                        format!("{at}.in"),
                        "cookie parameters are not supported; expected `path`, `query` or `header`",
                    )),
                    other => {
                        return Err(ConfigError::new(
                            format!("{at}.in"),
                            format!(
                                "unknown variant `{}`, expected `path`, `query` or `header`",
                                check::clip(other)
                            ),
                        ))
                    }
                };
            let name = match location {
                Location::Path => {
                    if !template_params.iter().any(|t| t == p.name) {
                        return Err(ConfigError::new(
                            format!("{at}.name"),
                            format!(
                                "\"{}\" is not a parameter of the route's template",
                                check::clip(p.name)
                            ),
                        ));
                    }
                    p.name.to_string()
                }
                Location::Header => check::header_name(p.name, &format!("{at}.name"))?,
                Location::Query => {
                    if p.name.is_empty() || p.name.chars().any(char::is_control) {
                        return Err(ConfigError::new(
                            format!("{at}.name"),
                            "must be a non-empty name without control characters",
                        ));
                    }
                    p.name.to_string()
                }
            };
            if let Some(j) = out.iter().position(|o| {
                o.location == location
                    && match location {
                        Location::Header => o.name.eq_ignore_ascii_case(&name),
                        _ => o.name == name,
                    }
            }) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("the same parameter as parameters[{j}]"),
                ));
            }
            let (shape, schema) = match p.schema {
                None => (
                    Shape {
                        array: false,
                        scalars: STR,
                    },
                    None,
                ),
                Some(s) => {
                    let field = format!("{at}.schema");
                    let shape = shape_of(s, registry, &field)?;
                    (
                        shape,
                        Some(schema::compile(s, registry, assert_formats, &field)?),
                    )
                }
            };
            out.push(Param {
                location,
                name,
                // A matched route always has its path parameters.
                required: p.required || location == Location::Path,
                shape,
                schema,
            });
        }
        if out.is_empty() && !deny_additional_query {
            return Ok(None);
        }
        let reads_query =
            deny_additional_query || out.iter().any(|p| p.location == Location::Query);
        Ok(Some(ParamPolicy {
            params: out,
            deny_additional_query,
            reads_query,
        }))
    }

    /// Checks every parameter: 400 `invalid-parameter` listing each one that is
    /// missing, undecodable, repeated where one value is expected, undeclared (under
    /// `additional_query: deny`) or failing its schema, at most
    /// [`MAX_SCHEMA_ERRORS`] failures.
    pub fn check(&self, inputs: &ParamInputs<'_>) -> Result<(), Rejection> {
        let mut errors: Vec<ParamError> = Vec::new();
        // Raw values of each declared query parameter, in request order.
        let mut query: Vec<Vec<&str>> = vec![Vec::new(); self.params.len()];
        if self.reads_query {
            self.read_query(inputs.query, &mut query, &mut errors);
        }
        for (i, p) in self.params.iter().enumerate() {
            if errors.len() >= MAX_SCHEMA_ERRORS {
                break;
            }
            let fail = |keyword: &str, message: &str| ParamError {
                location: p.location.as_str(),
                name: p.name.clone(),
                error: SchemaError {
                    instance_path: String::new(),
                    keyword: keyword.to_string(),
                    message: message.to_string(),
                },
            };
            let value = match p.location {
                Location::Path => inputs
                    .path
                    .iter()
                    .find(|(n, _)| **n == *p.name)
                    .map(|(_, v)| Ok(simple(v, p.shape))),
                Location::Header => (inputs.header)(&p.name).map(|v| Ok(simple(v.trim(), p.shape))),
                Location::Query => match query.get(i).map(Vec::as_slice).unwrap_or_default() {
                    [] => None,
                    [_, _, ..] if !p.shape.array => {
                        Some(Err(fail("repeated", "must be given once, not repeated")))
                    }
                    raw => Some(
                        form(raw, p.shape)
                            .ok_or_else(|| fail("encoding", "is not valid percent-encoded UTF-8")),
                    ),
                },
            };
            let value = match value {
                None if p.required => {
                    errors.push(fail("required", "a required parameter is missing"));
                    continue;
                }
                None => continue,
                Some(Err(e)) => {
                    errors.push(e);
                    continue;
                }
                Some(Ok(v)) => v,
            };
            let Some(schema) = &p.schema else { continue };
            if let Err(found) = schema.validate(&value) {
                for error in found {
                    if errors.len() >= MAX_SCHEMA_ERRORS {
                        break;
                    }
                    errors.push(ParamError {
                        location: p.location.as_str(),
                        name: p.name.clone(),
                        error,
                    });
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Rejection::InvalidParameter { errors })
        }
    }

    /// Sorts the query's raw values by declared parameter; notes undeclared names
    /// under `additional_query: deny`. Pairs are separated by `&` (as WHATWG URL and
    /// current servers read a query), `+` is a space, and names compare exactly.
    fn read_query<'q>(
        &self,
        query: &'q str,
        found: &mut [Vec<&'q str>],
        errors: &mut Vec<ParamError>,
    ) {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = form_decode(raw_name);
            let declared = name.as_deref().and_then(|name| {
                self.params
                    .iter()
                    .position(|p| p.location == Location::Query && p.name == name)
            });
            match declared {
                Some(i) => {
                    if let Some(values) = found.get_mut(i) {
                        values.push(raw_value);
                    }
                }
                None if self.deny_additional_query && errors.len() < MAX_SCHEMA_ERRORS => {
                    errors.push(ParamError {
                        location: "query",
                        name: name
                            .map(|n| clip(&n, MAX_NAME_CHARS))
                            .unwrap_or_else(|| "(not valid percent-encoded UTF-8)".into()),
                        error: SchemaError {
                            instance_path: String::new(),
                            keyword: "additional_query".into(),
                            message: "this query parameter is not declared".into(),
                        },
                    });
                }
                None => {}
            }
        }
    }

    /// Whether a parameter `name` in `location` is declared (tests).
    #[cfg(test)]
    pub(crate) fn declares(&self, location: &str, name: &str) -> bool {
        self.params
            .iter()
            .any(|p| p.location.as_str() == location && p.name == name)
    }
}

/// A simple-style value (path, header): one item, or for an array the items
/// between commas (blanks around them dropped; an empty text is no items).
fn simple(text: &str, shape: Shape) -> Value {
    if !shape.array {
        return scalar(text, shape.scalars);
    }
    if text.is_empty() {
        return Value::Array(Vec::new());
    }
    Value::Array(
        text.split(',')
            .map(|item| scalar(item.trim(), shape.scalars))
            .collect(),
    )
}

/// A form-style value (query) from its raw occurrences: for an array, the items of
/// every occurrence, each split at commas before decoding (so `%2C` stays inside an
/// item); else the one occurrence. `None` if one does not decode.
fn form(raw: &[&str], shape: Shape) -> Option<Value> {
    if !shape.array {
        let text = form_decode(raw.first()?)?;
        return Some(scalar(&text, shape.scalars));
    }
    let mut items = Vec::new();
    for occurrence in raw.iter().filter(|r| !r.is_empty()) {
        for item in occurrence.split(',') {
            items.push(scalar(&form_decode(item)?, shape.scalars));
        }
    }
    Some(Value::Array(items))
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; the
/// result must be UTF-8. `None` for a broken escape or invalid UTF-8.
fn form_decode(raw: &str) -> Option<String> {
    if !raw.contains(['%', '+']) {
        return Some(raw.to_string());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The JSON value a text means for a schema whose type bits are `bits`: a number
/// if numbers are allowed and the text is a JSON number held exactly by a 64-bit
/// float (as request bodies require), a boolean for `true`/`false` if booleans are
/// allowed, else the string.
fn scalar(text: &str, bits: u8) -> Value {
    if bits & NUM != 0 && text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        if let Ok(n @ Value::Number(_)) = json::parse(text, &JsonLimits::default()) {
            return n;
        }
    }
    if bits & BOOL != 0 {
        match text {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
    }
    Value::String(text.to_string())
}

/// The shape a schema gives a parameter's text. An object is refused: neither
/// style this filter reads spells one.
fn shape_of(schema: &Value, registry: &SchemaRegistry, field: &str) -> Result<Shape, ConfigError> {
    let (bits, items) = type_bits(schema, schema, registry, 0);
    if bits & OBJECT != 0 && bits & !OBJECT == 0 {
        return Err(ConfigError::new(
            field,
            "an object parameter cannot be read from a path, query or header value; \
             declare its fields as parameters of their own",
        ));
    }
    if bits & ARRAY != 0 && bits & SCALAR == 0 {
        let items = if items & SCALAR == 0 { SCALAR } else { items };
        return Ok(Shape {
            array: true,
            scalars: items,
        });
    }
    let scalars = if bits & SCALAR == 0 { SCALAR } else { bits };
    Ok(Shape {
        array: false,
        scalars,
    })
}

/// Type bits of `schema` and of its array items (0: nothing said). `root` is the
/// document `schema` sits in, for `#...` references.
fn type_bits(schema: &Value, root: &Value, registry: &SchemaRegistry, depth: u8) -> (u8, u8) {
    let Some(obj) = schema.as_object() else {
        return (0, 0);
    };
    if depth > MAX_SHAPE_DEPTH {
        return (0, 0);
    }
    let items = obj
        .get("items")
        .map_or(0, |i| type_bits(i, root, registry, depth + 1).0);
    if let Some(t) = obj.get("type") {
        let names: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let bits = names.iter().fold(0, |acc, name| acc | type_bit(name));
        if bits != 0 {
            return (bits, items);
        }
    }
    let mut bits = 0;
    let mut sub_items = items;
    for key in ["enum", "const"] {
        let values: &[Value] = match obj.get(key) {
            Some(Value::Array(list)) if key == "enum" => list,
            Some(v) if key == "const" => std::slice::from_ref(v),
            _ => &[],
        };
        for v in values {
            bits |= match v {
                Value::Number(_) => NUM,
                Value::Bool(_) => BOOL,
                Value::String(_) => STR,
                Value::Array(_) => ARRAY,
                Value::Object(_) => OBJECT,
                Value::Null => 0,
            };
        }
    }
    if let Some(Value::String(reference)) = obj.get("$ref") {
        if let Some((target, target_root)) = resolve(reference, root, registry) {
            let (b, i) = type_bits(target, target_root, registry, depth + 1);
            bits |= b;
            sub_items |= i;
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = obj.get(key) {
            for sub in list {
                let (b, i) = type_bits(sub, root, registry, depth + 1);
                bits |= b;
                sub_items |= i;
            }
        }
    }
    (bits, sub_items)
}

fn type_bit(name: &str) -> u8 {
    match name {
        "integer" | "number" => NUM,
        "boolean" => BOOL,
        "string" => STR,
        "array" => ARRAY,
        "object" => OBJECT,
        _ => 0,
    }
}

/// The schema a `$ref` names and the document it sits in: inside `root` (`#...`),
/// or in a registry entry by `$id`. `None` for anything else (the validator still
/// resolves it; only the text's conversion falls back to "any scalar").
fn resolve<'a>(
    reference: &str,
    root: &'a Value,
    registry: &'a SchemaRegistry,
) -> Option<(&'a Value, &'a Value)> {
    let (base, fragment) = reference.split_once('#').unwrap_or((reference, ""));
    let doc = if base.is_empty() {
        root
    } else {
        registry.get(base)?
    };
    let target = if fragment.is_empty() {
        doc
    } else {
        doc.pointer(&percent_decoded(fragment)?)?
    };
    Some((target, doc))
}

/// A URI fragment's percent-decoding (a JSON Pointer in a `$ref` may be encoded).
fn percent_decoded(fragment: &str) -> Option<String> {
    if !fragment.contains('%') {
        return Some(fragment.to_string());
    }
    form_decode(&fragment.replace('+', "%2B"))
}

#[cfg(test)]
mod tests;
