//! OpenAPI schema objects as JSON Schema 2020-12 for the filter, and the
//! `components.schemas` they reference as `schemas` entries with an `$id`.
//!
//! - A `$ref` into `#/components/schemas/<name>` becomes a reference to that
//!   entry's `$id` (recursion included: the entry refers to itself by `$id`), and
//!   the entry is emitted once. Any other `#...` reference (a schema inside a
//!   parameter or a path, say) is copied in place; one that leads back to itself is
//!   refused. A reference outside the document is refused: bundle it first.
//! - 3.0 schemas are translated: `nullable: true` adds `null` to `type` (or to
//!   `enum`, or becomes `anyOf [..., {type: null}]` when there is no `type`); the
//!   boolean `exclusiveMinimum`/`exclusiveMaximum` become the numeric ones; keys
//!   next to a `$ref` are dropped, as 3.0 ignores them.
//! - In both versions `x-` keys, `example`, `xml`, `externalDocs` and
//!   `discriminator` (OpenAPI's own keywords, no JSON Schema assertion) are
//!   dropped, and a property that is `readOnly` is taken out of `required`: OpenAPI
//!   says such a requirement holds for responses only, and these schemas check
//!   requests.

use crate::{escape, unescape, Error};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Most references followed in a row while copying one schema in place.
const MAX_INLINE_DEPTH: usize = 64;

/// Keywords whose value is one subschema.
const ONE: &[&str] = &[
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "additionalItems",
    "contentSchema",
];
/// Keywords whose value is an array of subschemas.
const LIST: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
const MAP: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];
/// OpenAPI keywords without a JSON Schema assertion.
const DROPPED: &[&str] = &["example", "xml", "externalDocs", "discriminator"];

/// The schema translation of one document.
pub struct Schemas<'a> {
    spec: &'a Value,
    /// OpenAPI 3.0 (else 3.1).
    v30: bool,
    /// Prefix of every entry's `$id`.
    id_base: String,
    /// Components referenced so far (by name), and those already emitted.
    needed: BTreeSet<String>,
    /// References being copied in place, innermost last (to refuse cycles).
    inlining: Vec<String>,
    /// `$id`s that 3.1 components declare themselves, by component name.
    own_ids: Vec<(String, String)>,
}

impl<'a> Schemas<'a> {
    /// `slug` names the API in the `$id`s (`https://openapi.invalid/<slug>/...`).
    pub fn new(spec: &'a Value, v30: bool, slug: &str) -> Self {
        let own_ids = spec
            .pointer("/components/schemas")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(name, s)| {
                        let id = s.get("$id")?.as_str()?;
                        Some((id.trim_end_matches('#').to_string(), name.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Schemas {
            spec,
            v30,
            id_base: format!("https://openapi.invalid/{slug}/components/schemas/"),
            needed: BTreeSet::new(),
            inlining: Vec::new(),
            own_ids,
        }
    }

    /// The `$id` of component `name`.
    pub fn id_of(&self, name: &str) -> String {
        let mut id = self.id_base.clone();
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
                id.push(b as char);
            } else {
                id.push_str(&format!("%{b:02X}"));
            }
        }
        id
    }

    /// The `schemas` entries every translated schema so far references, each
    /// translated and given its `$id`, in name order; and the pointer each came from.
    pub fn entries(&mut self) -> Result<Vec<(Value, String)>, Error> {
        // Translating an entry may need more: repeat until nothing is new.
        let mut out: Vec<(String, Value, String)> = Vec::new();
        let mut emitted: BTreeSet<String> = BTreeSet::new();
        while let Some(name) = self.needed.difference(&emitted).next().cloned() {
            emitted.insert(name.clone());
            let at = format!("#/components/schemas/{}", escape(&name));
            let schema = self
                .spec
                .pointer(&at[1..])
                .ok_or_else(|| Error::new(&at, "referenced, but there is no such schema"))?;
            let mut entry = match self.translate(schema, &at)? {
                Value::Object(m) => m,
                // `true`/`false` schemas as entries: an object with the same meaning.
                Value::Bool(true) => Map::new(),
                Value::Bool(false) => {
                    let mut m = Map::new();
                    m.insert("not".into(), Value::Object(Map::new()));
                    m
                }
                _ => return Err(Error::new(&at, "a schema must be an object or a boolean")),
            };
            entry.insert("$id".into(), Value::String(self.id_of(&name)));
            out.push((name, Value::Object(entry), at));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, v, at)| (v, at)).collect())
    }

    /// Translates one schema found at `at` (a JSON Pointer into the document).
    pub fn translate(&mut self, schema: &Value, at: &str) -> Result<Value, Error> {
        let obj = match schema {
            Value::Bool(_) => return Ok(schema.clone()),
            Value::Object(obj) => obj,
            _ => return Err(Error::new(at, "a schema must be an object or a boolean")),
        };
        if let Some(reference) = obj.get("$ref") {
            let Value::String(reference) = reference else {
                return Err(Error::new(format!("{at}/$ref"), "must be a string"));
            };
            let target = self.reference(reference, &format!("{at}/$ref"))?;
            if self.v30 || obj.len() == 1 {
                // 3.0 ignores everything next to a `$ref`.
                return Ok(target);
            }
            let mut rest = obj.clone();
            rest.remove("$ref");
            let mut out = self.translate_object(&rest, at)?;
            match target {
                Value::Object(t) if t.len() == 1 && t.contains_key("$ref") => {
                    out.extend(t);
                }
                inlined => {
                    let list = out
                        .entry("allOf")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(list) = list {
                        list.push(inlined);
                    }
                }
            }
            return Ok(Value::Object(out));
        }
        let out = self.translate_object(obj, at)?;
        Ok(if self.v30 {
            nullable(out, obj)
        } else {
            Value::Object(out)
        })
    }

    fn translate_object(
        &mut self,
        obj: &Map<String, Value>,
        at: &str,
    ) -> Result<Map<String, Value>, Error> {
        let mut out = Map::new();
        for (key, value) in obj {
            let here = format!("{at}/{}", escape(key));
            if key.starts_with("x-") || DROPPED.contains(&key.as_str()) || key == "nullable" {
                continue;
            }
            let translated = if ONE.contains(&key.as_str()) || key == "items" {
                match value {
                    Value::Array(list) if key == "items" => Value::Array(self.list(list, &here)?),
                    Value::Bool(_) | Value::Object(_) => self.translate(value, &here)?,
                    _ => return Err(Error::new(here, "must be a schema")),
                }
            } else if LIST.contains(&key.as_str()) {
                let Value::Array(list) = value else {
                    return Err(Error::new(here, "must be an array of schemas"));
                };
                Value::Array(self.list(list, &here)?)
            } else if MAP.contains(&key.as_str()) {
                let Value::Object(map) = value else {
                    return Err(Error::new(here, "must be an object of schemas"));
                };
                let mut m = Map::new();
                for (name, sub) in map {
                    let t = self.translate(sub, &format!("{here}/{}", escape(name)))?;
                    m.insert(name.clone(), t);
                }
                Value::Object(m)
            } else {
                value.clone()
            };
            out.insert(key.clone(), translated);
        }
        if self.v30 {
            for (flag, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                match out.get(flag) {
                    Some(Value::Bool(true)) => match out.remove(bound) {
                        Some(b) => {
                            out.insert(flag.into(), b);
                        }
                        None => {
                            out.remove(flag);
                        }
                    },
                    Some(Value::Bool(false)) => {
                        out.remove(flag);
                    }
                    _ => {}
                }
            }
        }
        self.drop_read_only_required(obj, &mut out);
        Ok(out)
    }

    fn list(&mut self, list: &[Value], at: &str) -> Result<Vec<Value>, Error> {
        list.iter()
            .enumerate()
            .map(|(i, s)| self.translate(s, &format!("{at}/{i}")))
            .collect()
    }

    /// Takes `readOnly` properties out of `required` (see the module docs).
    fn drop_read_only_required(&self, obj: &Map<String, Value>, out: &mut Map<String, Value>) {
        let Some(Value::Object(props)) = obj.get("properties") else {
            return;
        };
        let read_only = |name: &str| {
            let mut schema = props.get(name);
            for _ in 0..MAX_INLINE_DEPTH {
                let Some(s) = schema else { return false };
                if s.get("readOnly") == Some(&Value::Bool(true)) {
                    return true;
                }
                schema = s
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix('#'))
                    .and_then(|p| self.spec.pointer(&unescape_fragment(p)));
            }
            false
        };
        if let Some(Value::Array(required)) = out.get_mut("required") {
            required.retain(|n| !n.as_str().is_some_and(read_only));
        }
    }

    /// The translation of a `$ref` found at `at`: a reference to a component's
    /// `$id`, or the target copied in place.
    pub fn reference(&mut self, reference: &str, at: &str) -> Result<Value, Error> {
        let (base, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        if !base.is_empty() {
            if let Some((_, name)) = self.own_ids.iter().find(|(id, _)| id == base) {
                let name = name.clone();
                return Ok(self.component_ref(&name, fragment));
            }
            return Err(Error::new(
                at,
                format!(
                    "\"{reference}\" refers outside this document; bundle the document into one file first (for example `redocly bundle`)"
                ),
            ));
        }
        let pointer = unescape_fragment(fragment);
        let tokens: Vec<&str> = pointer.split('/').collect();
        if let ["", "components", "schemas", name, rest @ ..] = tokens.as_slice() {
            let name = unescape(name);
            if self
                .spec
                .pointer(&format!("/components/schemas/{}", escape(&name)))
                .is_none()
            {
                return Err(Error::new(at, format!("\"{reference}\": no such schema")));
            }
            let rest = if rest.is_empty() {
                String::new()
            } else {
                format!("/{}", rest.join("/"))
            };
            return Ok(self.component_ref(&name, &rest));
        }
        let target = self
            .spec
            .pointer(&pointer)
            .ok_or_else(|| Error::new(at, format!("\"{reference}\": nothing at this place")))?;
        let target_at = format!("#{pointer}");
        if self.inlining.contains(&target_at) || self.inlining.len() >= MAX_INLINE_DEPTH {
            return Err(Error::new(
                at,
                format!(
                    "\"{reference}\" leads back to itself outside components/schemas; move the schema to components/schemas to make it recursive"
                ),
            ));
        }
        self.inlining.push(target_at.clone());
        let out = self.translate(target, &target_at);
        self.inlining.pop();
        out
    }

    fn component_ref(&mut self, name: &str, rest: &str) -> Value {
        self.needed.insert(name.to_string());
        let mut id = self.id_of(name);
        if !rest.is_empty() {
            id.push('#');
            id.push_str(rest);
        }
        let mut m = Map::new();
        m.insert("$ref".into(), Value::String(id));
        Value::Object(m)
    }
}

/// 3.0's `nullable: true` in 2020-12 terms.
fn nullable(mut out: Map<String, Value>, original: &Map<String, Value>) -> Value {
    if original.get("nullable") != Some(&Value::Bool(true)) {
        return Value::Object(out);
    }
    let mut said = false;
    match out.get_mut("type") {
        Some(Value::String(t)) => {
            let t = std::mem::take(t);
            out.insert(
                "type".into(),
                Value::Array(vec![Value::String(t), Value::String("null".into())]),
            );
            said = true;
        }
        Some(Value::Array(list)) => {
            if !list.iter().any(|t| t == "null") {
                list.push(Value::String("null".into()));
            }
            said = true;
        }
        _ => {}
    }
    if let Some(Value::Array(list)) = out.get_mut("enum") {
        if !list.contains(&Value::Null) {
            list.push(Value::Null);
        }
        said = true;
    }
    if said {
        return Value::Object(out);
    }
    let mut null = Map::new();
    null.insert("type".into(), Value::String("null".into()));
    let mut wrapper = Map::new();
    wrapper.insert(
        "anyOf".into(),
        Value::Array(vec![Value::Object(out), Value::Object(null)]),
    );
    Value::Object(wrapper)
}

/// A URI fragment (percent-encoded JSON Pointer) as a JSON Pointer.
fn unescape_fragment(fragment: &str) -> String {
    if !fragment.contains('%') {
        return fragment.to_string();
    }
    let bytes = fragment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
