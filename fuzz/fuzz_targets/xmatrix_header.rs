//! `Authorization: X-Matrix` headers. Parsing arbitrary text never panics,
//! nor does checking whatever parses against a fixed key; a parsed header
//! written back with every value quoted parses to the same header; and a
//! header `sign_request` builds for a fuzzed request parses back to its
//! parts and verifies (and does not verify for another URI).
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use lmx::core::crypto::{PublicKey, SigningKey};
use lmx::core::ids::{KeyId, ServerName};
use lmx::federation::xmatrix::{parse_header, sign_request, verify_request, XMatrix};
use serde_json::{json, Value};

const ORIGIN: &str = "a.example";
const OUR_NAME: &str = "b.example";

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        SigningKey::from_seed(ServerName::parse(ORIGIN).unwrap(), KeyId::parse("ed25519:1").unwrap(), &[3; 32]).unwrap()
    })
}

fn public() -> &'static PublicKey {
    static PUBLIC: OnceLock<PublicKey> = OnceLock::new();
    PUBLIC.get_or_init(|| key().public_key())
}

/// RFC 9110 quoted-string with `\` escapes for `"` and `\`.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn rewrite(h: &XMatrix) -> String {
    let mut out = format!("X-Matrix origin={}", quoted(&h.origin));
    if let Some(d) = &h.destination {
        out.push_str(&format!(",destination={}", quoted(d)));
    }
    out.push_str(&format!(",key={},sig={}", quoted(&h.key), quoted(&h.sig)));
    out
}

/// Arbitrary text as parsed headers meet it.
fn parse_arbitrary(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Some(h) = parse_header(&text) else { return };
    let body = json!({"pdus": [], "edus": [{"x": 0.5}]});
    for (method, uri, body) in
        [("GET", "/_matrix/key/v2/server", None), ("PUT", "/_matrix/federation/v1/send/1", Some(&body))]
    {
        let _ = verify_request(&h, public(), method, uri, OUR_NAME, body);
    }
    let again = parse_header(&rewrite(&h)).expect("a re-quoted header parses");
    assert_eq!(again, h, "re-quoting a parsed header changes it");
}

#[derive(Debug, Arbitrary)]
enum BodyShape {
    None,
    Empty,
    Int(i64),
    Float(f64),
    Text(String),
    Nested(String, u32, bool),
}

#[derive(Debug, Arbitrary)]
struct Request {
    method: u8,
    uri: String,
    destination: String,
    lm_peer: bool,
    body: BodyShape,
}

/// Callers pass a `ServerName` as the destination; make one from the
/// fuzzed text when it is not one already.
fn destination(s: &str) -> String {
    if ServerName::parse(s).is_ok() {
        return s.to_owned();
    }
    let cleaned: String = s
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-' || *c == ':')
        .collect();
    if ServerName::parse(&cleaned).is_ok() {
        cleaned
    } else {
        OUR_NAME.to_owned()
    }
}

fn round_trip(data: &[u8]) {
    let Ok(req) = Request::arbitrary(&mut Unstructured::new(data)) else { return };
    let method = ["GET", "PUT", "POST", "DELETE"][usize::from(req.method) % 4];
    let dest = destination(&req.destination);
    let body: Option<Value> = match req.body {
        BodyShape::None => None,
        BodyShape::Empty => Some(json!({})),
        BodyShape::Int(i) => Some(json!({ "n": i })),
        // Non-finite floats become null.
        BodyShape::Float(f) => Some(json!({ "pdus": [{ "x": f }] })),
        BodyShape::Text(s) => Some(json!({ s.clone(): s })),
        BodyShape::Nested(s, n, b) => Some(json!({ "edus": [{ "content": { "k": s, "n": n, "b": b } }] })),
    };
    let header = sign_request(key(), method, &req.uri, &dest, body.as_ref(), req.lm_peer);
    let h = parse_header(&header).unwrap_or_else(|| panic!("sign_request's header does not parse: {header:?}"));
    assert_eq!(h.origin, ORIGIN);
    assert_eq!(h.destination.as_deref(), Some(dest.as_str()));
    assert_eq!(h.key, "ed25519:1");
    assert_eq!(h.sig.len(), 86, "an unpadded base64 ed25519 signature: {header:?}");
    assert!(
        verify_request(&h, public(), method, &req.uri, &dest, body.as_ref()),
        "own signature does not verify: {header:?}"
    );
    let other_uri = format!("{}/", req.uri);
    assert!(!verify_request(&h, public(), method, &other_uri, &dest, body.as_ref()), "verifies for another URI");
}

fuzz_target!(|data: &[u8]| {
    parse_arbitrary(data);
    round_trip(data);
});
