//! Canonical JSON as TUF signs it (the OLPC form securesystemslib writes):
//! object keys sorted by code point, no white space, strings escaping only
//! `"` and `\`, integers only.

use crate::TufError;
use serde_json::Value;

/// The canonical bytes of `v`; a number that is not an integer is refused.
pub fn encode(v: &Value) -> Result<Vec<u8>, TufError> {
    let mut out = Vec::new();
    write(v, &mut out)?;
    Ok(out)
}

fn write(v: &Value, out: &mut Vec<u8>) -> Result<(), TufError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(TufError::Invalid {
                    what: "metadata".into(),
                    reason: format!("{n} is not an integer: canonical JSON has no other numbers"),
                });
            }
        }
        Value::String(s) => string(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(x, out)?;
            }
            out.push(b']');
        }
        Value::Object(o) => {
            // serde_json's map is a BTreeMap: sorted by UTF-8 bytes, which
            // is code point order.
            out.push(b'{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                write(x, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s.as_bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_keys_and_escapes_only_quote_and_backslash() {
        let v: Value =
            serde_json::from_str(r#"{"b": [1, -2, true, null], "a": "x\"y\\z\n", "é": {}}"#)
                .unwrap();
        assert_eq!(
            String::from_utf8(encode(&v).unwrap()).unwrap(),
            "{\"a\":\"x\\\"y\\\\z\n\",\"b\":[1,-2,true,null],\"é\":{}}"
        );
        assert!(encode(&serde_json::json!({"f": 1.5})).is_err());
    }
}
