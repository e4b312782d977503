//! Decoder for a binary `google.protobuf.Struct`, so the plugin configuration can
//! be written as plain YAML in Envoy.
//!
//! Why: when the Wasm `configuration` is a `google.protobuf.StringValue`, Envoy
//! hands the plugin the string (our JSON). When it is a `google.protobuf.Struct`
//! (YAML in `envoy.yaml`), Envoy 1.40 hands over the Struct's protobuf wire bytes,
//! not JSON (seen here; see README "Configuration"). This module turns those
//! bytes into a `serde_json::Value` so both forms go through the same parser.
//!
//! Wire format (struct.proto): `Struct { map<string, Value> fields = 1; }`, each map
//! entry a message `{ string key = 1; Value value = 2; }`; `Value` is a oneof of
//! `null_value = 1` (varint), `number_value = 2` (double), `string_value = 3`,
//! `bool_value = 4` (varint), `struct_value = 5`, `list_value = 6`
//! (`ListValue { repeated Value values = 1; }`).
//!
//! Struct numbers are doubles; integral values are emitted as JSON integers so
//! fields such as `limit: 100` deserialize into integer config fields.

use serde_json::{Map, Number, Value};

/// Deepest nesting accepted (configuration is never this deep).
const MAX_DEPTH: usize = 64;

/// Decodes a binary `google.protobuf.Struct` into a JSON object.
pub fn decode_struct(bytes: &[u8]) -> Result<Value, String> {
    decode_struct_at(bytes, 0)
}

/// A protobuf wire-format reader over one message's bytes (also used by the
/// rate-limit service's reply decoder, `quota::rls`).
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn varint(&mut self) -> Result<u64, String> {
        let mut out: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err("varint too long".into())
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self.buf.get(self.pos..end).ok_or("truncated field")?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn len_delimited(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
        self.bytes(n)
    }

    /// Returns (field number, wire type).
    pub(crate) fn tag(&mut self) -> Result<(u64, u8), String> {
        let t = self.varint()?;
        Ok((t >> 3, (t & 7) as u8))
    }

    pub(crate) fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.bytes(8).map(|_| ()),
            2 => self.len_delimited().map(|_| ()),
            5 => self.bytes(4).map(|_| ()),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

fn decode_struct_at(bytes: &[u8], depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("nesting too deep".into());
    }
    let mut r = Reader::new(bytes);
    let mut map = Map::new();
    while !r.done() {
        match r.tag()? {
            (1, 2) => {
                let entry = r.len_delimited()?;
                let (k, v) = decode_entry(entry, depth)?;
                map.insert(k, v);
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok(Value::Object(map))
}

fn decode_entry(bytes: &[u8], depth: usize) -> Result<(String, Value), String> {
    let mut r = Reader::new(bytes);
    let mut key = String::new();
    let mut value = Value::Null;
    while !r.done() {
        match r.tag()? {
            (1, 2) => {
                key = String::from_utf8(r.len_delimited()?.to_vec())
                    .map_err(|_| "struct key is not UTF-8")?;
            }
            (2, 2) => value = decode_value(r.len_delimited()?, depth + 1)?,
            (_, w) => r.skip(w)?,
        }
    }
    Ok((key, value))
}

fn decode_value(bytes: &[u8], depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("nesting too deep".into());
    }
    let mut r = Reader::new(bytes);
    let mut value = Value::Null;
    while !r.done() {
        value = match r.tag()? {
            (1, 0) => {
                r.varint()?;
                Value::Null
            }
            (2, 1) => {
                let b = r.bytes(8)?;
                let mut arr = [0u8; 8];
                arr.copy_from_slice(b);
                number(f64::from_le_bytes(arr))?
            }
            (3, 2) => Value::String(
                String::from_utf8(r.len_delimited()?.to_vec())
                    .map_err(|_| "string value is not UTF-8")?,
            ),
            (4, 0) => Value::Bool(r.varint()? != 0),
            (5, 2) => decode_struct_at(r.len_delimited()?, depth + 1)?,
            (6, 2) => decode_list(r.len_delimited()?, depth + 1)?,
            (_, w) => {
                r.skip(w)?;
                continue;
            }
        };
    }
    Ok(value)
}

fn decode_list(bytes: &[u8], depth: usize) -> Result<Value, String> {
    let mut r = Reader::new(bytes);
    let mut items = Vec::new();
    while !r.done() {
        match r.tag()? {
            (1, 2) => items.push(decode_value(r.len_delimited()?, depth + 1)?),
            (_, w) => r.skip(w)?,
        }
    }
    Ok(Value::Array(items))
}

fn number(f: f64) -> Result<Value, String> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.is_finite() && f.fract() == 0.0 && f.abs() <= EXACT {
        return Ok(Value::Number(Number::from(f as i64)));
    }
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| "number is not finite".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Minimal encoder for the tests, written from the same wire-format notes.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn ld(field: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    fn enc_value(v: &Value) -> Vec<u8> {
        let mut o = Vec::new();
        match v {
            Value::Null => {
                varint(1 << 3, &mut o);
                varint(0, &mut o);
            }
            Value::Number(n) => {
                varint(2 << 3 | 1, &mut o);
                o.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
            }
            Value::String(s) => ld(3, s.as_bytes(), &mut o),
            Value::Bool(b) => {
                varint(4 << 3, &mut o);
                varint(u64::from(*b), &mut o);
            }
            Value::Object(_) => ld(5, &enc_struct(v), &mut o),
            Value::Array(a) => {
                let mut l = Vec::new();
                for i in a {
                    ld(1, &enc_value(i), &mut l);
                }
                ld(6, &l, &mut o);
            }
        }
        o
    }
    fn enc_struct(v: &Value) -> Vec<u8> {
        let mut o = Vec::new();
        if let Value::Object(m) = v {
            for (k, val) in m {
                let mut e = Vec::new();
                ld(1, k.as_bytes(), &mut e);
                ld(2, &enc_value(val), &mut e);
                ld(1, &e, &mut o);
            }
        }
        o
    }

    #[test]
    fn round_trips_every_value_kind() {
        let doc = json!({
            "routes": [{"name": "a", "match": {"path": "/a", "methods": ["GET"]},
                        "quota": {"limit": 100, "window_seconds": 60}}],
            "ratio": 0.5, "neg": -3, "on": true, "off": false, "nothing": null,
            "nested": {"deep": {"x": [1, [2, {"y": "z"}]]}}
        });
        assert_eq!(decode_struct(&enc_struct(&doc)), Ok(doc));
    }

    #[test]
    fn integral_numbers_become_integers() {
        let v = decode_struct(&enc_struct(&json!({"n": 100})));
        assert_eq!(v.map(|v| v["n"].is_u64()), Ok(true));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = enc_struct(&json!({"routes": [{"name": "abc"}]}));
        for cut in 0..good.len() {
            let _ = decode_struct(&good[..cut]);
        }
        assert!(decode_struct(&[
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
        ])
        .is_err());
        assert!(decode_struct(&[0x0b]).is_err());
        assert!(decode_struct(b"routes: []").is_err());
    }

    #[test]
    fn depth_is_bounded() {
        let mut v = json!(1);
        for _ in 0..200 {
            v = json!({ "a": v });
        }
        assert!(decode_struct(&enc_struct(&v)).is_err());
    }
}
