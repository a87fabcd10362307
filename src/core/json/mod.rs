//! Canonical JSON: Matrix's form (room versions 1-12) and RFC 8785 (the LM
//! room version, checklist item 42, OQ-5), with strict parsers for both.
//!
//! Choices where sources disagree (the `disputed` vectors), in every mode:
//! duplicate object keys are refused, unpaired surrogate escapes are refused,
//! and (strict Matrix mode only) `-0` is refused. Values are
//! `serde_json::Value`; the writers never rely on the map's own key order.

mod number;
mod parse;

use serde_json::Value;

pub use number::write_ecmascript_number;

/// The largest integer both JSON forms can carry exactly: 2^53 − 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// Nesting limit for parsing, so hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 128;

pub type Object = serde_json::Map<String, Value>;

/// Which numbers a parse accepts and how they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberPolicy {
    /// Matrix encoder input: any spelling whose value is an integer within
    /// ±(2^53−1), e.g. `-0` → 0 and `1e10` → 10000000000 (spec example).
    MatrixLenient,
    /// Matrix event parser for room versions 6+: integer literals only, no
    /// `-0`, within ±(2^53−1).
    MatrixStrict,
    /// RFC 8785 input: any finite number, read as an IEEE-754 double.
    Ieee754,
    /// LM event parser: as `Ieee754`, but an integer literal beyond
    /// ±(2^53−1) must be written as ECMAScript writes its double (so
    /// `100000000000000000000` passes and `9007199254740993` does not): the
    /// others cannot round-trip (OQ-5 local policy).
    LmStrict,
}

/// Which canonical form to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonical {
    /// Keys by code point, integers only.
    Matrix,
    /// RFC 8785: keys by UTF-16 code units, numbers as ECMAScript prints them.
    Rfc8785,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON at byte {offset}: {msg}")]
    Syntax { offset: usize, msg: String },
    #[error("duplicate key {key:?} at byte {offset}")]
    DuplicateKey { offset: usize, key: String },
    #[error("number {text} at byte {offset}: {why}")]
    Number { offset: usize, text: String, why: String },
    #[error("number {0} has no Matrix canonical form (integers within ±(2^53−1) only)")]
    NotCanonicalNumber(String),
}

/// Parses JSON text under the given number policy.
pub fn parse(input: &[u8], policy: NumberPolicy) -> Result<Value, JsonError> {
    parse::parse(input, policy)
}

/// Parses JSON text that must be an object.
pub fn parse_object(input: &[u8], policy: NumberPolicy) -> Result<Object, JsonError> {
    match parse(input, policy)? {
        Value::Object(o) => Ok(o),
        _ => Err(JsonError::Syntax { offset: 0, msg: "expected a JSON object".into() }),
    }
}

/// Writes `value` in canonical form.
pub fn to_canonical(value: &Value, form: Canonical) -> Result<Vec<u8>, JsonError> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value, form)?;
    Ok(out)
}

/// Canonical form of an object (the common case: events, signed objects).
pub fn object_to_canonical(obj: &Object, form: Canonical) -> Result<Vec<u8>, JsonError> {
    let mut out = Vec::with_capacity(512);
    write_object(&mut out, obj, form)?;
    Ok(out)
}

/// The canonical bytes of an object when Matrix's form and RFC 8785 agree
/// on them: integers only, and no key that the two orders sort apart (only
/// keys holding characters from U+E000 up can be). A peer of either kind
/// can then be sent the bytes as they are, and a signature over a message
/// that splices them is the one its receiver computes.
pub fn object_canonical_in_both_forms(obj: &Object) -> Option<Vec<u8>> {
    fn keys_sort_alike(v: &Value) -> bool {
        match v {
            Value::Object(o) => o.iter().all(|(k, v)| !k.bytes().any(|c| c >= 0xEE) && keys_sort_alike(v)),
            Value::Array(items) => items.iter().all(keys_sort_alike),
            _ => true,
        }
    }
    if !obj.iter().all(|(k, v)| !k.bytes().any(|c| c >= 0xEE) && keys_sort_alike(v)) {
        return None;
    }
    object_to_canonical(obj, Canonical::Matrix).ok()
}

/// Writes a string as both canonical forms do.
pub fn write_canonical_string(out: &mut Vec<u8>, s: &str) {
    write_string(out, s)
}

fn write_value(out: &mut Vec<u8>, v: &Value, form: Canonical) -> Result<(), JsonError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n, form)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, form)?;
            }
            out.push(b']');
        }
        Value::Object(obj) => write_object(out, obj, form)?,
    }
    Ok(())
}

fn write_object(out: &mut Vec<u8>, obj: &Object, form: Canonical) -> Result<(), JsonError> {
    let mut entries: Vec<(&String, &Value)> = obj.iter().collect();
    match form {
        // UTF-8 byte order is code point order.
        Canonical::Matrix => entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes())),
        Canonical::Rfc8785 => entries.sort_unstable_by(|a, b| utf16_cmp(a.0, b.0)),
    }
    out.push(b'{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, k);
        out.push(b':');
        write_value(out, v, form)?;
    }
    out.push(b'}');
    Ok(())
}

/// Orders strings by UTF-16 code units (RFC 8785 section 3.2.3). Differs from
/// code point order only when supplementary characters meet U+E000-U+FFFF.
pub fn utf16_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    // Below U+E000 both orders agree; compare bytes unless a high byte shows.
    let needs_utf16 = |s: &str| s.bytes().any(|c| c >= 0xEE);
    if !needs_utf16(a) || !needs_utf16(b) {
        return a.as_bytes().cmp(b.as_bytes());
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

fn write_number(out: &mut Vec<u8>, n: &serde_json::Number, form: Canonical) -> Result<(), JsonError> {
    match form {
        Canonical::Matrix => match integer_value(n) {
            Some(i) => {
                out.extend_from_slice(i.to_string().as_bytes());
                Ok(())
            }
            None => Err(JsonError::NotCanonicalNumber(n.to_string())),
        },
        Canonical::Rfc8785 => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if !f.is_finite() {
                return Err(JsonError::NotCanonicalNumber(n.to_string()));
            }
            write_ecmascript_number(out, f);
            Ok(())
        }
    }
}

/// The value of a number if it is an integer within ±(2^53−1), whatever its
/// representation (used by canonical JSON and by power-level checks).
pub fn integer_value(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return (i.unsigned_abs() <= MAX_SAFE_INTEGER).then_some(i);
    }
    if n.is_u64() {
        return None;
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER as f64).then_some(f as i64)
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 0xf) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(input: &str, policy: NumberPolicy, form: Canonical) -> Result<String, JsonError> {
        let v = parse(input.as_bytes(), policy)?;
        Ok(String::from_utf8(to_canonical(&v, form)?).unwrap())
    }

    #[test]
    fn bytes_both_forms_agree_on() {
        let both = |input: &str| {
            let v = parse(input.as_bytes(), NumberPolicy::Ieee754).unwrap();
            object_canonical_in_both_forms(v.as_object().unwrap()).map(|b| String::from_utf8(b).unwrap())
        };
        for input in [r#"{"b":[1,-2,{"z":null,"y":"\u0007é😀"}],"a":2.0}"#, r#"{"\ud7ff":{"é":true}}"#] {
            let v = parse(input.as_bytes(), NumberPolicy::Ieee754).unwrap();
            let matrix = String::from_utf8(to_canonical(&v, Canonical::Matrix).unwrap()).unwrap();
            let rfc = String::from_utf8(to_canonical(&v, Canonical::Rfc8785).unwrap()).unwrap();
            assert_eq!((both(input).as_deref(), rfc.as_str()), (Some(matrix.as_str()), matrix.as_str()));
        }
        assert_eq!(both(r#"{"a":0.5}"#), None, "no Matrix form");
        // The two orders sort these keys apart: no shared form.
        assert_eq!(both(r#"{"x":{"\ue000":1,"😀":2}}"#), None);
        assert_eq!(both(r#"{"\ue000":1}"#), None, "refused from U+E000 up, even alone");
    }

    #[test]
    fn numbers_by_policy() {
        use NumberPolicy::*;
        assert_eq!(canon("[-0,1e10,2.0]", MatrixLenient, Canonical::Matrix).unwrap(), "[0,10000000000,2]");
        assert!(canon("[1.5]", MatrixLenient, Canonical::Matrix).is_err());
        assert!(canon("[-0]", MatrixStrict, Canonical::Matrix).is_err());
        assert!(canon("[1e5]", MatrixStrict, Canonical::Matrix).is_err());
        assert!(canon("[9007199254740992]", MatrixStrict, Canonical::Matrix).is_err());
        assert_eq!(canon("[-9007199254740991]", MatrixStrict, Canonical::Matrix).unwrap(), "[-9007199254740991]");
        assert_eq!(canon("[1E30,4.50,2e-3,-0]", Ieee754, Canonical::Rfc8785).unwrap(), "[1e+30,4.5,0.002,0]");
        assert_eq!(canon("[9007199254740993]", Ieee754, Canonical::Rfc8785).unwrap(), "[9007199254740992]");
        assert!(canon("[9007199254740993]", LmStrict, Canonical::Rfc8785).is_err());
        assert_eq!(
            canon("[-13205975240798362000,100000000000000000000]", LmStrict, Canonical::Rfc8785).unwrap(),
            "[-13205975240798362000,100000000000000000000]"
        );
        assert_eq!(canon("[0.5]", LmStrict, Canonical::Rfc8785).unwrap(), "[0.5]");
        assert!(canon("[1e400]", Ieee754, Canonical::Rfc8785).is_err());
    }

    #[test]
    fn grammar_errors() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01",
            "[NaN]",
            "\"\\x\"",
            "\"a\u{1}\"",
            "1 2",
            "[.5]",
            "[1.]",
            "[1e]",
            "{\"a\":1,\"a\":2}",
            "[\"\\udead\"]",
            "[\"\\ud800\\u0041\"]",
        ] {
            assert!(parse(bad.as_bytes(), NumberPolicy::Ieee754).is_err(), "{bad:?}");
        }
        assert!(parse(b"\"\xff\"", NumberPolicy::Ieee754).is_err());
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes(), NumberPolicy::Ieee754).is_err());
    }

    #[test]
    fn key_orders_differ_above_u_ffff() {
        let input = "{\"\u{fb33}\":1,\"\u{1f602}\":2}";
        assert_eq!(
            canon(input, NumberPolicy::MatrixStrict, Canonical::Matrix).unwrap(),
            "{\"\u{fb33}\":1,\"\u{1f602}\":2}"
        );
        assert_eq!(
            canon(input, NumberPolicy::LmStrict, Canonical::Rfc8785).unwrap(),
            "{\"\u{1f602}\":2,\"\u{fb33}\":1}"
        );
    }
}
