//! The configuration as indented JSON, with the members of each object in the
//! order a reader looks for them (a route's `name` and `match` first, a
//! parameter's `in` and `name`), the rest alphabetical.

use serde_json::Value;
use std::fmt::Write as _;

/// Members written first, in this order, wherever they appear.
const FIRST: &[&str] = &[
    "$id",
    "$schema",
    "unmatched",
    "providers",
    "routes",
    "in",
    "name",
    "required",
    "match",
    "path",
    "methods",
    "mode",
    "auth",
    "requires",
    "quota",
    "request",
    "parameters",
    "additional_query",
    "content_types",
    "max_body_bytes",
    "schema",
    "response",
    "$ref",
    "type",
];

/// `value` as JSON text indented by two spaces, ending with a newline.
pub fn pretty(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, 0, &mut out);
    out.push('\n');
    out
}

fn write_value(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Array(items) if !items.is_empty() => {
            if items.iter().all(|i| !i.is_object() && !i.is_array()) {
                // Lists of scalars stay on one line (`"methods": ["GET", "HEAD"]`).
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "{item}");
                }
                out.push(']');
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                pad(indent + 1, out);
                write_value(item, indent + 1, out);
            }
            out.push('\n');
            pad(indent, out);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| {
                (
                    FIRST.iter().position(|f| f == k).unwrap_or(FIRST.len()),
                    k.as_str(),
                )
            });
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                pad(indent + 1, out);
                let _ = write!(out, "{}: ", Value::String((*key).clone()));
                if let Some(v) = map.get(*key) {
                    write_value(v, indent + 1, out);
                }
            }
            out.push('\n');
            pad(indent, out);
            out.push('}');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

fn pad(indent: usize, out: &mut String) {
    for _ in 0..indent {
        out.push_str("  ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_first_and_text_that_parses_back() {
        let v = json!({"routes": [{"request": {}, "name": "a", "match": {"methods": ["GET", "PUT"], "path": "/a"}}], "unmatched": "deny"});
        let text = pretty(&v);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
        let name = text.find("\"name\"").unwrap();
        assert!(name < text.find("\"match\"").unwrap());
        assert!(text.find("\"path\"").unwrap() < text.find("\"methods\"").unwrap());
        assert!(text.contains("\"methods\": [\"GET\", \"PUT\"]"));
    }
}
