//! Reading the input documents: JSON, or YAML turned into the same JSON value.
//!
//! YAML mapping keys that are not strings (`200:` under `responses`, `true:`) become
//! their text, as OpenAPI means them; a key that is neither a string nor a scalar,
//! two keys with the same text, or a number JSON cannot hold is an error naming
//! the place as a JSON Pointer.

use crate::{escape, Error};
use serde_json::{Map, Number, Value};
use serde_yaml_ng::Value as Yaml;

/// Parses a document: JSON when it starts with `{`, else YAML (which also reads
/// JSON, more slowly).
pub fn parse(text: &str) -> Result<Value, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text)
            .map_err(|e| Error::new("", format!("not valid JSON: {e}")));
    }
    let mut yaml: Yaml = serde_yaml_ng::from_str(text)
        .map_err(|e| Error::new("", format!("not valid YAML: {e}")))?;
    // `<<: *anchor` merge keys, as YAML tools apply them.
    yaml.apply_merge().map_err(|e| {
        Error::new(
            "",
            format!("a YAML merge key (`<<`) cannot be applied: {e}"),
        )
    })?;
    to_json(yaml, "#")
}

/// A YAML value as JSON; `at` is its JSON Pointer (`#/paths/~1pets`).
fn to_json(yaml: Yaml, at: &str) -> Result<Value, Error> {
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => number(&n).ok_or_else(|| {
            Error::new(at, format!("the number {n} cannot be represented in JSON"))
        })?,
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_json(item, &format!("{at}/{i}")))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key = match key {
                    Yaml::String(s) => s,
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    Yaml::Null => "null".to_string(),
                    _ => {
                        return Err(Error::new(
                            at,
                            "a mapping key is a sequence, mapping or tagged value; OpenAPI keys are strings",
                        ))
                    }
                };
                let here = format!("{at}/{}", escape(&key));
                if map.contains_key(&key) {
                    return Err(Error::new(here, "this key appears twice"));
                }
                let value = to_json(value, &here)?;
                map.insert(key, value);
            }
            Value::Object(map)
        }
        Yaml::Tagged(tagged) => to_json(tagged.value, at)?,
    })
}

fn number(n: &serde_yaml_ng::Number) -> Option<Value> {
    if let Some(i) = n.as_i64() {
        return Some(Value::Number(i.into()));
    }
    if let Some(u) = n.as_u64() {
        return Some(Value::Number(u.into()));
    }
    n.as_f64().and_then(Number::from_f64).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_keys_become_text_and_errors_name_the_place() {
        let v = parse("openapi: 3.0.3\npaths:\n  /a:\n    get:\n      responses:\n        200: {description: ok}\n        default: {}\n").unwrap();
        assert!(v.pointer("/paths/~1a/get/responses/200").is_some());
        assert_eq!(v["openapi"], "3.0.3");
        let e = parse("a:\n  1: x\n  '1': y\n").unwrap_err();
        assert_eq!(e.to_string(), "#/a/1: this key appears twice");
        let e = parse("a: [1, .inf]\n").unwrap_err();
        assert!(e.to_string().starts_with("#/a/1: the number"), "{e}");
        let e = parse("a:\n  [1]: x\n").unwrap_err();
        assert!(e.to_string().starts_with("#/a: a mapping key"), "{e}");
        assert!(parse("a: [")
            .unwrap_err()
            .to_string()
            .contains("not valid YAML"));
        assert!(parse("{\"a\": ")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        assert_eq!(parse("\u{feff}{\"a\": 1}").unwrap()["a"], 1);
        let v = parse("a: &x {b: 1}\nc: {<<: *x, d: 2}\n").unwrap();
        assert_eq!(v["c"], serde_json::json!({"b": 1, "d": 2}));
        // YAML 1.2: `yes` is a string, as OpenAPI means it.
        assert_eq!(parse("a: yes\n").unwrap()["a"], "yes");
    }
}
