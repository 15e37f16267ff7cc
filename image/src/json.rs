//! Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant whitespace. Every
//! manifest, index and config kiln writes goes through here, so one image always has one digest
//! regardless of struct field order or serde_json's map features.

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Serialises `value` canonically (sorted keys, compact).
pub fn to_canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let v = serde_json::to_value(value).map_err(|source| Error::Json {
        what: "document to write".into(),
        source,
    })?;
    let mut out = Vec::with_capacity(512);
    write_value(&v, &mut out);
    Ok(out)
}

fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_value(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(v: &Value, out: &mut Vec<u8>) {
    // Writing a scalar Value to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_keys_recursively_and_is_compact() {
        let v = serde_json::json!({"b": 1, "a": {"z": [ {"y": 1, "x": "é\n"} ], "c": null}});
        let s = String::from_utf8(to_canonical_json(&v).unwrap()).unwrap();
        assert_eq!(s, r#"{"a":{"c":null,"z":[{"x":"é\n","y":1}]},"b":1}"#);
    }
}
