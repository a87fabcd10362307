//! LM event format, written from the digest (sections 3.2-3.8, 4.8): no
//! external LM vectors exist, so each expectation is derived by hand here —
//! the canonical bytes are spelt out as the draft defines them and hashed or
//! verified with sha2/ed25519-dalek directly, not with lmx's helpers.

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signature, Verifier};
use lmx::core::crypto::SigningKey;
use lmx::core::event::{self, HashCheck, Lpdu, Pdu, RoomVersion, Schema};
use lmx::core::ids::{KeyId, ServerName};
use lmx::core::json::Object;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn key(server: &str, seed: u8) -> SigningKey {
    SigningKey::from_seed(ServerName::parse(server).unwrap(), KeyId::parse("ed25519:1").unwrap(), &[seed; 32]).unwrap()
}

fn b64_sha256(text: &str) -> String {
    STANDARD_NO_PAD.encode(Sha256::digest(text.as_bytes()))
}

fn verifies(key: &SigningKey, signed_text: &str, sig_b64: &str) -> bool {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(
        &STANDARD_NO_PAD.decode(key.public_key().to_base64()).unwrap().try_into().unwrap(),
    )
    .unwrap();
    let sig = Signature::from_slice(&STANDARD_NO_PAD.decode(sig_b64).unwrap()).unwrap();
    vk.verify(signed_text.as_bytes(), &sig).is_ok()
}

fn obj(v: Value) -> Object {
    v.as_object().unwrap().clone()
}

fn lm() -> &'static RoomVersion {
    RoomVersion::lm()
}

const AUTH: [&str; 3] = ["$create", "$pl", "$bobmember"];

/// The LPDU of digest 3.2, with a fractional number (RFC 8785 writes 0.5).
fn lpdu_fields() -> Value {
    json!({
        "room_id": "!abc:hub.example",
        "type": "m.room.message",
        "sender": "@bob:part.example",
        "origin_server_ts": 1681340188825_i64,
        "hub_server": "hub.example",
        "content": {"body": "hi", "n": 0.5}
    })
}

const LPDU_HASHED: &str = r#"{"content":{"body":"hi","n":0.5},"hub_server":"hub.example","origin_server_ts":1681340188825,"room_id":"!abc:hub.example","sender":"@bob:part.example","type":"m.room.message"}"#;

fn participant_lpdu() -> Object {
    let mut o = obj(lpdu_fields());
    event::sign_lpdu(lm(), &key("part.example", 2), &mut o).unwrap();
    o
}

fn hub_pdu() -> Object {
    let mut o = participant_lpdu();
    o.insert("auth_events".into(), json!(AUTH));
    o.insert("prev_events".into(), json!(["$tail"]));
    event::sign_event(lm(), &key("hub.example", 1), &mut o).unwrap();
    o
}

#[test]
fn lpdu_hash_covers_every_field_but_signatures_and_hashes() {
    let lpdu = participant_lpdu();
    let want = b64_sha256(LPDU_HASHED);
    assert_eq!(lpdu["hashes"], json!({"lpdu": {"sha256": want}}));
    assert_eq!(event::lpdu_hash(lm(), &lpdu).unwrap(), want);
    // The same hash from the PDU the hub built (digest 3.5).
    assert_eq!(event::lpdu_hash(lm(), &hub_pdu()).unwrap(), want);
}

#[test]
fn participant_signs_the_redacted_lpdu() {
    let lpdu = participant_lpdu();
    let h = b64_sha256(LPDU_HASHED);
    let signed = format!(
        r#"{{"content":{{}},"hashes":{{"lpdu":{{"sha256":"{h}"}}}},"hub_server":"hub.example","origin_server_ts":1681340188825,"room_id":"!abc:hub.example","sender":"@bob:part.example","type":"m.room.message"}}"#
    );
    let sig = lpdu["signatures"]["part.example"]["ed25519:1"].as_str().unwrap();
    assert!(verifies(&key("part.example", 2), &signed, sig));
    let parsed = Lpdu::from_object(lm(), lpdu.clone()).unwrap();
    assert_eq!(parsed.hub_server().as_str(), "hub.example");
    // The LPDU's own id (failed_pdus key) is the reference hash of it.
    let id = format!("${}", URL_SAFE_NO_PAD.encode(Sha256::digest(signed.as_bytes())));
    assert_eq!(parsed.lpdu_id().as_str(), id);
}

fn pdu_redacted_text(lpdu_hash: &str, content_hash: &str) -> String {
    format!(
        r#"{{"auth_events":["$create","$pl","$bobmember"],"content":{{}},"hashes":{{"lpdu":{{"sha256":"{lpdu_hash}"}},"sha256":"{content_hash}"}},"hub_server":"hub.example","origin_server_ts":1681340188825,"prev_events":["$tail"],"room_id":"!abc:hub.example","sender":"@bob:part.example","type":"m.room.message"}}"#
    )
}

#[test]
fn hub_hashes_and_signs_the_full_pdu() {
    let pdu = hub_pdu();
    let h = b64_sha256(LPDU_HASHED);
    // The PDU content hash keeps hashes.lpdu (digest 3.5).
    let hashed = format!(
        r#"{{"auth_events":["$create","$pl","$bobmember"],"content":{{"body":"hi","n":0.5}},"hashes":{{"lpdu":{{"sha256":"{h}"}}}},"hub_server":"hub.example","origin_server_ts":1681340188825,"prev_events":["$tail"],"room_id":"!abc:hub.example","sender":"@bob:part.example","type":"m.room.message"}}"#
    );
    let c = b64_sha256(&hashed);
    assert_eq!(pdu["hashes"]["sha256"], json!(c));
    let sig = pdu["signatures"]["hub.example"]["ed25519:1"].as_str().unwrap();
    assert!(verifies(&key("hub.example", 1), &pdu_redacted_text(&h, &c), sig));
    // The participant's signature is untouched and still verifies over the
    // LPDU view of the PDU.
    assert_eq!(pdu["signatures"]["part.example"], participant_lpdu()["signatures"]["part.example"]);
    let pk = key("part.example", 2).public_key();
    event::verify_event_signature(lm(), &pdu, "part.example", "ed25519:1", &pk).unwrap();
    let hub_pk = key("hub.example", 1).public_key();
    event::verify_event_signature(lm(), &pdu, "hub.example", "ed25519:1", &hub_pk).unwrap();
    assert_eq!(event::check_hashes(lm(), &pdu).unwrap(), HashCheck::Match);
    let signers: Vec<String> = event::required_signers(lm(), &pdu).unwrap().iter().map(|s| s.to_string()).collect();
    assert_eq!(signers, ["part.example", "hub.example"]);
}

#[test]
fn event_id_is_the_reference_hash_of_the_redacted_pdu() {
    let pdu = hub_pdu();
    let h = b64_sha256(LPDU_HASHED);
    let c = pdu["hashes"]["sha256"].as_str().unwrap();
    let want = format!("${}", URL_SAFE_NO_PAD.encode(Sha256::digest(pdu_redacted_text(&h, c).as_bytes())));
    assert_eq!(event::event_id(lm(), &pdu).unwrap().as_str(), want);
    let parsed = Pdu::from_object(lm(), pdu.clone(), Schema::Full).unwrap();
    assert_eq!(parsed.event_id().as_str(), want);
    // Eigen's stored copies carry a top-level event_id: not part of any hash.
    let mut with_id = pdu.clone();
    with_id.insert("event_id".into(), json!(want));
    with_id.insert("unsigned".into(), json!({"age": 5}));
    assert_eq!(event::event_id(lm(), &with_id).unwrap().as_str(), want);
    assert_eq!(event::check_hashes(lm(), &with_id).unwrap(), HashCheck::Match);
}

#[test]
fn redaction_keeps_hub_server_and_both_hashes() {
    let pdu = hub_pdu();
    let mut extra = pdu.clone();
    extra.insert("depth".into(), json!(7));
    extra.insert("origin".into(), json!("hub.example"));
    let r = event::redact(lm(), &extra);
    let keys: Vec<&str> = r.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "auth_events",
            "content",
            "hashes",
            "hub_server",
            "origin_server_ts",
            "prev_events",
            "room_id",
            "sender",
            "signatures",
            "type"
        ]
    );
    assert_eq!(r["content"], json!({}));
    assert_eq!(r["hashes"], pdu["hashes"]);
    // LM keeps `invite` in power levels but not `notifications` or join
    // rules' `allow` (digest 4.8).
    let pl = obj(
        json!({"type": "m.room.power_levels", "state_key": "", "content": {"invite": 3, "notifications": {"room": 1}, "users": {"@a:b.c": 1}}}),
    );
    assert_eq!(event::redact(lm(), &pl)["content"], json!({"invite": 3, "users": {"@a:b.c": 1}}));
    let jr = obj(json!({"type": "m.room.join_rules", "content": {"join_rule": "restricted", "allow": []}}));
    assert_eq!(event::redact(lm(), &jr)["content"], json!({"join_rule": "restricted"}));
    let create = obj(json!({"type": "m.room.create", "content": {"room_version": "x", "other": 1}}));
    assert_eq!(event::redact(lm(), &create)["content"], json!({"room_version": "x", "other": 1}));
}

#[test]
fn hub_own_event_hash_drops_empty_hashes() {
    // OQ-52: no lpdu, so `hashes` disappears from the hashed object.
    let mut e = obj(json!({
        "room_id": "!abc:hub.example", "type": "m.room.create", "state_key": "",
        "sender": "@alice:hub.example", "origin_server_ts": 1,
        "content": {"room_version": event::LM_VERSION}, "auth_events": [], "prev_events": []
    }));
    event::sign_event(lm(), &key("hub.example", 1), &mut e).unwrap();
    let hashed = format!(
        r#"{{"auth_events":[],"content":{{"room_version":"{}"}},"origin_server_ts":1,"prev_events":[],"room_id":"!abc:hub.example","sender":"@alice:hub.example","state_key":"","type":"m.room.create"}}"#,
        event::LM_VERSION
    );
    assert_eq!(e["hashes"], json!({"sha256": b64_sha256(&hashed)}));
    let signers = event::required_signers(lm(), &e).unwrap();
    assert_eq!(signers.len(), 1);
}

#[test]
fn tampering_is_caught_by_hashes_and_signatures() {
    let pdu = hub_pdu();
    let mut changed = pdu.clone();
    changed["content"]["body"] = json!("bye");
    assert_eq!(event::check_hashes(lm(), &changed).unwrap(), HashCheck::Mismatch("hashes.lpdu.sha256"));
    // Redacted content still carries valid signatures: the hub keeps a
    // redacted copy instead of dropping it (receive step 3).
    let pk = key("part.example", 2).public_key();
    event::verify_event_signature(lm(), &changed, "part.example", "ed25519:1", &pk).unwrap();
    let mut moved = pdu.clone();
    moved["prev_events"] = json!(["$other"]);
    let hub_pk = key("hub.example", 1).public_key();
    assert!(event::verify_event_signature(lm(), &moved, "hub.example", "ed25519:1", &hub_pk).is_err());
    // The participant's signature does not cover the hub's choices.
    event::verify_event_signature(lm(), &moved, "part.example", "ed25519:1", &pk).unwrap();
}

#[test]
fn lm_numbers_and_key_order_follow_rfc_8785() {
    let mut a = obj(lpdu_fields());
    a["content"] = json!({"\u{fb33}": 1, "\u{1f602}": 1e21, "x": 1e-7});
    let want = "{\"content\":{\"x\":1e-7,\"\u{1f602}\":1e+21,\"\u{fb33}\":1},\"hub_server\":\"hub.example\",\"origin_server_ts\":1681340188825,\"room_id\":\"!abc:hub.example\",\"sender\":\"@bob:part.example\",\"type\":\"m.room.message\"}";
    assert_eq!(event::lpdu_hash(lm(), &a).unwrap(), b64_sha256(want));
}

#[test]
fn event_shape_rules() {
    let lpdu = participant_lpdu();
    assert!(Lpdu::looks_like_lpdu(&lpdu));
    // An LPDU without hub_server is refused (OQ-2), as is one with prev_events.
    let mut no_hub = lpdu.clone();
    no_hub.remove("hub_server");
    assert!(Lpdu::from_object(lm(), no_hub).is_err());
    let mut with_prev = lpdu.clone();
    with_prev.insert("prev_events".into(), json!([]));
    assert!(Lpdu::from_object(lm(), with_prev).is_err());
    // A hub_server PDU needs exactly one prev event and the lpdu hash.
    let mut two_prev = hub_pdu();
    two_prev["prev_events"] = json!(["$a", "$b"]);
    assert!(Pdu::from_object(lm(), two_prev, Schema::Full).is_err());
    let mut no_lpdu = hub_pdu();
    no_lpdu["hashes"].as_object_mut().unwrap().remove("lpdu");
    assert!(Pdu::from_object(lm(), no_lpdu, Schema::Full).is_err());
    // Upper-case localparts are not LM user ids.
    let mut upper = hub_pdu();
    upper["sender"] = json!("@Bob:part.example");
    assert!(Pdu::from_object(lm(), upper, Schema::Full).is_err());
    // 65,536 bytes is the limit, signatures included: exactly at the limit
    // passes, one byte more does not.
    let mut big = hub_pdu();
    big["content"]["pad"] = json!("");
    let len = lmx::core::json::object_to_canonical(&big, lmx::core::json::Canonical::Rfc8785).unwrap().len();
    big["content"]["pad"] = json!("x".repeat(65_536 - len));
    assert!(Pdu::from_object(lm(), big.clone(), Schema::Full).is_ok());
    big["content"]["pad"] = json!("x".repeat(65_537 - len));
    assert!(matches!(Pdu::from_object(lm(), big, Schema::Full), Err(event::EventError::TooLarge(65_537))));
}
