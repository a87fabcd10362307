//! `Authorization: X-Matrix` request signatures (digest 8.4; items 151-157;
//! OQ-30, OQ-31).

use serde_json::{json, Value};

use crate::core::crypto::{PublicKey, SigningKey};
use crate::core::json::{object_to_canonical, to_canonical, Canonical, JsonError, Object};

/// One parsed `Authorization: X-Matrix ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    pub origin: String,
    pub destination: Option<String>,
    pub key: String,
    pub sig: String,
}

/// Parses the RFC 9110 auth-param list; unknown parameters are ignored,
/// names are case-insensitive, `sig` and `signature` are both accepted.
pub fn parse_header(value: &str) -> Option<XMatrix> {
    let value = value.trim();
    let (scheme, params) = value.split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("X-Matrix") {
        return None;
    }
    let (mut origin, mut destination, mut key, mut sig) = (None, None, None, None);
    let mut rest = params.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let name = rest[..eq].trim().to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let (val, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &quoted[end?..])
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            (rest[..end].trim().to_owned(), &rest[end..])
        };
        match name.as_str() {
            "origin" => origin = Some(val),
            "destination" => destination = Some(val),
            "key" => key = Some(val),
            "sig" | "signature" => sig = Some(val),
            _ => {}
        }
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(XMatrix { origin: origin?, destination, key: key?, sig: sig? })
}

/// The object a request signature covers. `content` is `None` for a
/// request without a body.
pub fn request_object(
    method: &str,
    uri: &str,
    origin: &str,
    destination: Option<&str>,
    content: Option<&Value>,
) -> Object {
    let mut o = Object::new();
    o.insert("method".into(), json!(method));
    o.insert("uri".into(), json!(uri));
    o.insert("origin".into(), json!(origin));
    if let Some(d) = destination {
        o.insert("destination".into(), json!(d));
    }
    if let Some(c) = content {
        o.insert("content".into(), c.clone());
    }
    o
}

/// The bytes a request signature covers: the canonical form of
/// [`request_object`], written without copying the body into it (every
/// other key sorts after `content` in both canonical forms).
pub fn request_signing_bytes(
    method: &str,
    uri: &str,
    origin: &str,
    destination: Option<&str>,
    content: Option<&Value>,
    form: Canonical,
) -> Result<Vec<u8>, JsonError> {
    let content = content.map(|c| to_canonical(c, form)).transpose()?;
    signing_bytes_around(method, uri, origin, destination, content.as_deref(), form)
}

/// The bytes a request signature covers, around a body already in
/// canonical form.
fn signing_bytes_around(
    method: &str,
    uri: &str,
    origin: &str,
    destination: Option<&str>,
    content: Option<&[u8]>,
    form: Canonical,
) -> Result<Vec<u8>, JsonError> {
    let rest = object_to_canonical(&request_object(method, uri, origin, destination, None), form)?;
    let Some(content) = content else {
        return Ok(rest);
    };
    let mut out = Vec::with_capacity(content.len() + rest.len() + 12);
    out.extend_from_slice(b"{\"content\":");
    out.extend_from_slice(content);
    out.push(b',');
    out.extend_from_slice(&rest[1..]);
    Ok(out)
}

/// Builds the header for an outgoing request. To LM peers a bodyless
/// request signs `"content": {}` (the draft); to Matrix peers it signs no
/// `content` at all (OQ-30).
pub fn sign_request(
    key: &SigningKey,
    method: &str,
    uri: &str,
    destination: &str,
    body: Option<&Value>,
    lm_peer: bool,
) -> String {
    let empty = json!({});
    let content = match body {
        Some(b) => Some(b),
        None if lm_peer => Some(&empty),
        None => None,
    };
    let form = if lm_peer { Canonical::Rfc8785 } else { Canonical::Matrix };
    let bytes_in = |form| request_signing_bytes(method, uri, key.server().as_str(), Some(destination), content, form);
    // Request objects hold integers only unless a body holds LM floats, in
    // which case RFC 8785 is the only form that can carry them.
    let bytes = bytes_in(form).or_else(|_| bytes_in(Canonical::Rfc8785)).unwrap_or_default();
    header(key, destination, &bytes)
}

/// As [`sign_request`], for a body that is canonical JSON on which both
/// forms agree (`json::object_canonical_in_both_forms`): it is signed as it
/// is, never parsed.
pub fn sign_request_canonical(key: &SigningKey, method: &str, uri: &str, destination: &str, body: &[u8]) -> String {
    // The other keys are ASCII: both forms order and write them alike.
    let bytes =
        signing_bytes_around(method, uri, key.server().as_str(), Some(destination), Some(body), Canonical::Matrix)
            .unwrap_or_default();
    header(key, destination, &bytes)
}

fn header(key: &SigningKey, destination: &str, signed: &[u8]) -> String {
    format!(
        "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"{}\"",
        key.server(),
        destination,
        key.key_id(),
        key.sign_bytes(signed)
    )
}

/// Checks a header's signature; tries every form a peer may have signed:
/// with `{}` or without `content` when bodyless, Matrix's or RFC 8785's
/// canonical JSON.
pub fn verify_request(
    header: &XMatrix,
    public: &PublicKey,
    method: &str,
    uri: &str,
    our_name: &str,
    body: Option<&Value>,
) -> bool {
    let destination = header.destination.as_deref().or(Some(our_name));
    let empty = json!({});
    let contents: Vec<Option<&Value>> = match body {
        Some(b) => vec![Some(b)],
        None => vec![Some(&empty), None],
    };
    for content in contents {
        let mut tried: Option<Vec<u8>> = None;
        for form in [Canonical::Matrix, Canonical::Rfc8785] {
            let Ok(bytes) = request_signing_bytes(method, uri, &header.origin, destination, content, form) else {
                continue;
            };
            // Most bodies read the same in both forms: check once.
            if tried.as_ref() == Some(&bytes) {
                continue;
            }
            if public.verify(&bytes, &header.sig) {
                return true;
            }
            tried = Some(bytes);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::{KeyId, ServerName};

    #[test]
    fn signing_bytes_are_the_request_objects_canonical_form() {
        let bodies = [
            None,
            Some(json!({})),
            Some(json!({"pdus": [{"b": 1, "a": "\u{1F600}é\u{7}"}], "origin": "x", "ä": [0.5]})),
        ];
        for body in &bodies {
            for form in [Canonical::Matrix, Canonical::Rfc8785] {
                let obj = request_object("PUT", "/s/1", "a.example", Some("b.example"), body.as_ref());
                let whole = object_to_canonical(&obj, form);
                let spliced = request_signing_bytes("PUT", "/s/1", "a.example", Some("b.example"), body.as_ref(), form);
                assert_eq!(whole.ok(), spliced.ok(), "{body:?} {form:?}");
            }
        }
    }

    #[test]
    fn header_forms() {
        let h =
            parse_header(r#"X-Matrix origin="a.example",destination="b.example",key="ed25519:1",sig="abc""#).unwrap();
        assert_eq!(
            (h.origin.as_str(), h.destination.as_deref(), h.key.as_str(), h.sig.as_str()),
            ("a.example", Some("b.example"), "ed25519:1", "abc")
        );
        let h = parse_header(r#"x-matrix Origin=a.example, Key="ed25519:1", signature="a\"b", other=1"#).unwrap();
        assert_eq!((h.origin.as_str(), h.destination, h.sig.as_str()), ("a.example", None, "a\"b"));
        assert!(parse_header("Bearer abc").is_none());
        assert!(parse_header(r#"X-Matrix origin="a""#).is_none());
    }

    #[test]
    fn sign_and_verify_both_bodyless_forms() {
        let key = SigningKey::from_seed(
            ServerName::parse("a.example").unwrap(),
            KeyId::parse("ed25519:1").unwrap(),
            &[3; 32],
        )
        .unwrap();
        for lm in [true, false] {
            let header = sign_request(&key, "GET", "/_matrix/x?y=%24z", "b.example", None, lm);
            let h = parse_header(&header).unwrap();
            assert!(verify_request(&h, &key.public_key(), "GET", "/_matrix/x?y=%24z", "b.example", None));
            assert!(!verify_request(&h, &key.public_key(), "GET", "/_matrix/x?y=$z", "b.example", None));
        }
        let body = json!({"pdus": [{"x": 0.5}]});
        let header = sign_request(&key, "PUT", "/s", "b.example", Some(&body), true);
        let h = parse_header(&header).unwrap();
        assert!(verify_request(&h, &key.public_key(), "PUT", "/s", "b.example", Some(&body)));
        let other = json!({"pdus": [{"x": 0.25}]});
        assert!(!verify_request(&h, &key.public_key(), "PUT", "/s", "b.example", Some(&other)));
    }

    #[test]
    fn a_body_signed_as_spliced_bytes_is_signed_as_its_value_is() {
        let key = SigningKey::from_seed(
            ServerName::parse("a.example").unwrap(),
            KeyId::parse("ed25519:1").unwrap(),
            &[3; 32],
        )
        .unwrap();
        let body = json!({"pdus": [{"b": 1, "a": "\u{1F600}é\u{7}\"", "c": [-3, null, true]}], "origin": "a.example"});
        let bytes = crate::core::json::object_canonical_in_both_forms(body.as_object().unwrap()).unwrap();
        let header = sign_request_canonical(&key, "PUT", "/s/1", "b.example", &bytes);
        for lm in [true, false] {
            assert_eq!(header, sign_request(&key, "PUT", "/s/1", "b.example", Some(&body), lm), "lm peer: {lm}");
        }
        let h = parse_header(&header).unwrap();
        let received = crate::core::json::parse(&bytes, crate::core::json::NumberPolicy::Ieee754).unwrap();
        assert!(verify_request(&h, &key.public_key(), "PUT", "/s/1", "b.example", Some(&received)));
    }
}
