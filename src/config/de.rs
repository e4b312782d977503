//! Deserializes the configuration structs from a parsed [`Value`], and names the
//! field where deserialization stopped (`routes[1].quota.window_seconds`).
//!
//! Why not `serde_path_to_error`: it wraps every visitor, seed and access type of
//! every configuration struct in generic adapters, about 135 KB of the module.
//! This deserializer borrows from the `Value` (strings reach `&str` fields
//! without a copy) and tracks the path as a chain of stack frames, so it costs
//! about what serde_json's own `Value` deserializer does, which it replaces.
//!
//! How the path gets into an error: serde's visitors create errors without
//! knowing where they are. Every method here runs its visitor and then stamps
//! an error that has no path yet with the path of the value it was reading. The
//! innermost value stamps first, so the error names the deepest field: the
//! member (`audit.extra`) for an unknown field, the object for a missing one.

use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// Where a value is: the root, a member of an object, or an element of an array.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Member(&'a Path<'a>, &'a str),
    Element(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Member(Path::Root, name) => f.write_str(name),
            Path::Member(parent, name) => write!(f, "{parent}.{name}"),
            Path::Element(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// A deserialization error and the path of the value it is about (empty: the
/// root).
#[derive(Debug)]
pub struct Error {
    path: Option<String>,
    message: String,
}

impl Error {
    /// Path of the field, empty for the document itself.
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("")
    }

    /// What is wrong, as serde's visitors word it.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn at(mut self, path: &Path<'_>) -> Error {
        if self.path.is_none() {
            self.path = Some(path.to_string());
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path(), self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            path: None,
            message: msg.to_string(),
        }
    }

    // JSON says `null` where serde says `unit value` (worded as serde_json does).
    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        match unexp {
            de::Unexpected::Unit => {
                de::Error::custom(format_args!("invalid type: null, expected {exp}"))
            }
            unexp => de::Error::custom(format_args!("invalid type: {unexp}, expected {exp}")),
        }
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        match unexp {
            de::Unexpected::Unit => {
                de::Error::custom(format_args!("invalid value: null, expected {exp}"))
            }
            unexp => de::Error::custom(format_args!("invalid value: {unexp}, expected {exp}")),
        }
    }
}

/// Deserializes `T` from `value`; an error names the field.
pub fn from_value<'de, T: serde::Deserialize<'de>>(value: &'de Value) -> Result<T, Error> {
    T::deserialize(At {
        value,
        path: &Path::Root,
    })
}

/// A value and where it is.
#[derive(Clone, Copy)]
struct At<'de, 'p> {
    value: &'de Value,
    path: &'p Path<'p>,
}

impl<'de> At<'de, '_> {
    fn any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(Elements {
                items: items.iter(),
                index: 0,
                path: self.path,
            }),
            Value::Object(map) => visitor.visit_map(Members {
                iter: map.iter(),
                value: None,
                path: self.path,
            }),
        }
    }
}

impl<'de> de::Deserializer<'de> for At<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path;
        self.any(visitor).map_err(|e| e.at(path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path;
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e| e.at(path))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let path = self.path;
        visitor.visit_newtype_struct(self).map_err(|e| e.at(path))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let path = self.path;
        let result = match self.value {
            Value::String(s) => visitor.visit_enum(Variant {
                name: s,
                value: None,
                path,
            }),
            // As serde_json reads enums: `{"variant": value}`, exactly one member.
            Value::Object(map) => match (map.len(), map.iter().next()) {
                (1, Some((name, value))) => visitor.visit_enum(Variant {
                    name,
                    value: Some(value),
                    path,
                }),
                _ => Err(de::Error::invalid_value(
                    de::Unexpected::Map,
                    &"map with a single key",
                )),
            },
            other => Err(de::Error::invalid_type(unexpected(other), &"string or map")),
        };
        result.map_err(|e| e.at(path))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => de::Unexpected::Unsigned(u),
            (None, Some(i)) => de::Unexpected::Signed(i),
            _ => de::Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

/// The elements of an array.
struct Elements<'de, 'p> {
    items: std::slice::Iter<'de, Value>,
    index: usize,
    path: &'p Path<'p>,
}

impl<'de> SeqAccess<'de> for Elements<'de, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(value) = self.items.next() else {
            return Ok(None);
        };
        let path = Path::Element(self.path, self.index);
        self.index += 1;
        seed.deserialize(At { value, path: &path })
            .map(Some)
            .map_err(|e| e.at(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// The members of an object.
struct Members<'de, 'p> {
    iter: serde_json::map::Iter<'de>,
    /// The member whose key was just read.
    value: Option<(&'de str, &'de Value)>,
    path: &'p Path<'p>,
}

impl<'de> MapAccess<'de> for Members<'de, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((name, value)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some((name, value));
        let path = Path::Member(self.path, name);
        let key = de::value::BorrowedStrDeserializer::<Error>::new(name.as_str());
        seed.deserialize(key).map(Some).map_err(|e| e.at(&path))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((name, value)) = self.value.take() else {
            return Err(de::Error::custom("value requested before its key"));
        };
        let path = Path::Member(self.path, name);
        seed.deserialize(At { value, path: &path })
            .map_err(|e| e.at(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// An enum: a unit variant written as a string, or `{"variant": value}`.
struct Variant<'de, 'p> {
    name: &'de str,
    value: Option<&'de Value>,
    path: &'p Path<'p>,
}

impl<'de, 'p> EnumAccess<'de> for Variant<'de, 'p> {
    type Error = Error;
    type Variant = VariantValue<'de, 'p>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let name = de::value::BorrowedStrDeserializer::<Error>::new(self.name);
        let variant = seed.deserialize(name)?;
        Ok((
            variant,
            VariantValue {
                name: self.name,
                value: self.value,
                path: self.path,
            },
        ))
    }
}

/// What follows the variant's name.
struct VariantValue<'de, 'p> {
    name: &'de str,
    value: Option<&'de Value>,
    path: &'p Path<'p>,
}

impl<'de> VariantValue<'de, '_> {
    fn content<T>(
        self,
        expected: &'static str,
        f: impl FnOnce(At<'de, '_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let path = Path::Member(self.path, self.name);
        match self.value {
            Some(value) => f(At { value, path: &path }).map_err(|e| e.at(&path)),
            None => Err(de::Error::invalid_type(
                de::Unexpected::UnitVariant,
                &expected,
            )),
        }
    }
}

impl<'de> VariantAccess<'de> for VariantValue<'de, '_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.value {
            None | Some(Value::Null) => Ok(()),
            Some(other) => Err(de::Error::invalid_type(unexpected(other), &"unit")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        self.content("newtype variant", |at| seed.deserialize(at))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.content("tuple variant", |at| {
            de::Deserializer::deserialize_any(at, visitor)
        })
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.content("struct variant", |at| {
            de::Deserializer::deserialize_any(at, visitor)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;

    /// The complete example of the configuration reference, plus the sections it
    /// leaves out, so every struct, enum and untagged form is reached.
    fn base() -> Value {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc
            .find("## A complete example")
            .and_then(|i| doc[i..].find("```json").map(|j| i + j + 7))
            .expect("the reference has a complete example");
        let end = start + doc[start..].find("```").expect("closed");
        let mut v: Value = serde_json::from_str(&doc[start..end]).expect("example is JSON");
        let extra = serde_json::json!({
            "mode": "report",
            "audit": {"records": "all", "pseudonym_key": "0123456789abcdef"},
            "paths": {"semicolons": "strip"},
            "client_ip": {"xff_trusted_hops": 1},
            "metrics_flush_ms": 0,
            "schemas": [{"$id": "urn:x", "type": "object"}],
        });
        for (k, x) in extra.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
        v["routes"][0]["mode"] = "enforce".into();
        v
    }

    /// Every member and element path of `v`, as JSON-pointer-like key lists.
    fn paths(v: &Value, here: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(here.clone());
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    here.push(k.clone());
                    paths(x, here, out);
                    here.pop();
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    here.push(i.to_string());
                    paths(x, here, out);
                    here.pop();
                }
            }
            _ => {}
        }
    }

    fn at<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
        path.iter().fold(v, |v, k| match v {
            Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
            other => &mut other[k.as_str()],
        })
    }

    /// Success, or the error's (path, message).
    type Outcome = Result<(), (String, String)>;

    /// The outcome from this module and from serde_path_to_error.
    fn both(v: &Value) -> (Outcome, Outcome) {
        let ours = from_value::<PluginConfig>(v)
            .map(|_| ())
            .map_err(|e| (e.path().to_string(), e.message().to_string()));
        let reference = serde_path_to_error::deserialize::<_, PluginConfig>(v.clone())
            .map(|_| ())
            .map_err(|e| {
                let p = e.path().to_string();
                let p = if p == "." { String::new() } else { p };
                (p, e.inner().to_string())
            });
        (ours, reference)
    }

    #[test]
    fn errors_name_the_same_field_as_serde_path_to_error() {
        let base = base();
        let (ours, reference) = both(&base);
        assert_eq!(ours, Ok(()), "the base configuration must deserialize");
        assert_eq!(reference, Ok(()));
        let mut all = Vec::new();
        paths(&base, &mut Vec::new(), &mut all);
        assert!(all.len() > 100, "{}", all.len());
        let replacements = [
            Value::Null,
            Value::Bool(true),
            serde_json::json!(7),
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!(18446744073709551615u64),
            serde_json::json!("x"),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!(["x", 1]),
            serde_json::json!({"zz_unknown": 1}),
            serde_json::json!({"any": ["x"]}),
        ];
        let mut checked = 0;
        let mut errors = 0;
        for path in &all {
            let mut variants: Vec<Value> = Vec::new();
            for r in &replacements {
                let mut v = base.clone();
                *at(&mut v, path) = r.clone();
                variants.push(v);
            }
            if let Some((last, parent)) = path.split_last() {
                let mut v = base.clone();
                match at(&mut v, parent) {
                    Value::Object(m) => {
                        m.remove(last);
                    }
                    Value::Array(a) => {
                        a.remove(last.parse::<usize>().unwrap());
                    }
                    _ => unreachable!(),
                }
                variants.push(v);
            }
            let mut v = base.clone();
            if let Value::Object(m) = at(&mut v, path) {
                m.insert("zz_unknown".into(), Value::Null);
                variants.push(v);
            }
            for v in &variants {
                let (ours, reference) = both(v);
                assert_eq!(ours, reference, "at {path:?}: {v}");
                checked += 1;
                errors += usize::from(ours.is_err());
            }
        }
        // Most mutations break the configuration; each was compared.
        assert!(checked > 1000 && errors > checked / 2, "{checked} {errors}");
    }

    #[test]
    fn paths_read_like_the_configuration() {
        let v = serde_json::json!({"routes": [{"name": "a", "match": {"path": "/a"}},
                                             {"name": "b", "match": {"path": 5}}]});
        let e = from_value::<PluginConfig>(&v).unwrap_err();
        assert_eq!(e.path(), "routes[1].match.path");
        assert!(e.message().contains("invalid type: integer `5`"), "{e}");
        let v = serde_json::json!({"routes": [], "typo": 1});
        let e = from_value::<PluginConfig>(&v).unwrap_err();
        assert_eq!(e.path(), "typo");
        let v = serde_json::json!({"routes": [{"match": {"path": "/a"}}]});
        let e = from_value::<PluginConfig>(&v).unwrap_err();
        assert_eq!(e.path(), "routes[0]");
        assert!(e.message().contains("missing field `name`"), "{e}");
        let e = from_value::<PluginConfig>(&serde_json::json!([])).unwrap_err();
        assert_eq!(e.path(), "");
    }
}
