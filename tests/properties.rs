//! Property tests of the protocol core (proptest).

use lmx::core::crypto::{verify_object, SigningKey};
use lmx::core::event::{self, RoomVersion};
use lmx::core::ids::{KeyId, ServerName};
use lmx::core::json::{self, object_to_canonical, to_canonical, Canonical, NumberPolicy, Object, MAX_SAFE_INTEGER};
use proptest::prelude::*;
use serde_json::Value;

const SAFE: i64 = MAX_SAFE_INTEGER as i64;

fn key_string() -> impl Strategy<Value = String> {
    // Mix ASCII, BMP above U+E000 and supplementary characters, where the
    // two key orders differ.
    prop_oneof![
        "[a-z]{0,6}",
        "\\PC{0,4}",
        prop::sample::select(vec![
            "\u{fb33}".to_owned(),
            "\u{1f602}".to_owned(),
            "\u{e000}x".to_owned(),
            "\u{10000}".to_owned()
        ]),
    ]
}

fn json_value(floats: bool) -> impl Strategy<Value = Value> {
    let number = if floats {
        prop_oneof![
            (-SAFE..=SAFE).prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ]
        .boxed()
    } else {
        (-SAFE..=SAFE).prop_map(Value::from).boxed()
    };
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number,
        "\\PC{0,8}|[\\x00-\\x1f\"\\\\/]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key_string(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Writes `v` as valid but non-canonical JSON: whitespace, shuffled keys and
/// `\u` escapes chosen by a small generator seeded from `seed`.
fn step(seed: &mut u64) -> usize {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (*seed >> 33) as usize
}

fn noisy(v: &Value, seed: &mut u64, out: &mut String) {
    let next = |s: &mut u64| step(s);
    let ws = [" ", "\n", "\t", "\r\n  ", ""];
    out.push_str(ws[next(seed) % ws.len()]);
    match v {
        Value::Object(o) => {
            let mut entries: Vec<_> = o.iter().collect();
            for i in (1..entries.len()).rev() {
                entries.swap(i, next(seed) % (i + 1));
            }
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                escaped(k, next(seed) % 2 == 0, out);
                out.push_str(ws[next(seed) % ws.len()]);
                out.push(':');
                noisy(val, seed, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                noisy(item, seed, out);
            }
            out.push(']');
        }
        Value::String(s) => escaped(s, next(seed) % 2 == 0, out),
        other => out.push_str(&other.to_string()),
    }
    out.push_str(ws[next(seed) % ws.len()]);
}

fn escaped(s: &str, all: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if all || c < ' ' || c == '"' || c == '\\' {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04X}"));
            }
        } else {
            out.push(c);
        }
    }
    out.push('"');
}

fn canon(v: &Value, form: Canonical) -> Vec<u8> {
    to_canonical(v, form).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn matrix_canonical_is_idempotent_and_layout_independent(v in json_value(false), mut seed in any::<u64>()) {
        let want = canon(&v, Canonical::Matrix);
        let mut text = String::new();
        noisy(&v, &mut seed, &mut text);
        let reparsed = json::parse(text.as_bytes(), NumberPolicy::MatrixStrict).unwrap();
        prop_assert_eq!(&canon(&reparsed, Canonical::Matrix), &want);
        let again = json::parse(&want, NumberPolicy::MatrixStrict).unwrap();
        prop_assert_eq!(canon(&again, Canonical::Matrix), want);
    }

    #[test]
    fn rfc8785_is_idempotent_and_layout_independent(v in json_value(true), mut seed in any::<u64>()) {
        let want = canon(&v, Canonical::Rfc8785);
        let mut text = String::new();
        noisy(&v, &mut seed, &mut text);
        let reparsed = json::parse(text.as_bytes(), NumberPolicy::Ieee754).unwrap();
        prop_assert_eq!(&canon(&reparsed, Canonical::Rfc8785), &want);
        let again = json::parse(&want, NumberPolicy::LmStrict).unwrap();
        prop_assert_eq!(canon(&again, Canonical::Rfc8785), want);
    }

    #[test]
    fn ecmascript_numbers_round_trip(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
        let text = canon(&Value::from(f), Canonical::Rfc8785);
        let back: f64 = std::str::from_utf8(&text).unwrap().parse().unwrap();
        prop_assert_eq!(back, if f == 0.0 { 0.0 } else { f });
    }

    #[test]
    fn sign_verify_round_trip_and_flipped_bytes_fail(
        v in prop::collection::vec((key_string(), json_value(false)), 1..5),
        seed in any::<[u8; 32]>(),
        flip_at in any::<prop::sample::Index>(),
        flip_bit in 0u8..8,
    ) {
        let mut obj: Object = v.into_iter().collect();
        obj.remove("signatures");
        obj.remove("unsigned");
        prop_assume!(!obj.is_empty());
        let key = SigningKey::from_seed(ServerName::parse("s.example").unwrap(), KeyId::parse("ed25519:k").unwrap(), &seed).unwrap();
        key.sign_object(&mut obj, Canonical::Matrix).unwrap();
        let pk = key.public_key();
        prop_assert!(verify_object(&obj, "s.example", "ed25519:k", &pk, Canonical::Matrix).is_ok());

        // Flip one bit of the signature.
        let sig = obj["signatures"]["s.example"]["ed25519:k"].as_str().unwrap().to_owned();
        let mut raw = lmx::core::crypto::b64_decode(&sig).unwrap();
        let i = flip_at.index(raw.len());
        raw[i] ^= 1 << flip_bit;
        let mut bad = obj.clone();
        bad["signatures"]["s.example"]["ed25519:k"] = Value::from(lmx::core::crypto::b64_encode(&raw));
        prop_assert!(verify_object(&bad, "s.example", "ed25519:k", &pk, Canonical::Matrix).is_err());

        // Flip one bit of the signed bytes: if the result is still JSON with
        // another canonical form, the signature must not verify.
        let mut body = obj.clone();
        let sigs = body.remove("signatures").unwrap();
        let mut bytes = object_to_canonical(&body, Canonical::Matrix).unwrap();
        let j = flip_at.index(bytes.len());
        bytes[j] ^= 1 << flip_bit;
        if let Ok(Value::Object(mut changed)) = json::parse(&bytes, NumberPolicy::MatrixStrict) {
            if object_to_canonical(&changed, Canonical::Matrix).unwrap() != object_to_canonical(&body, Canonical::Matrix).unwrap()
                && !changed.contains_key("signatures") && !changed.contains_key("unsigned")
            {
                changed.insert("signatures".into(), sigs);
                prop_assert!(verify_object(&changed, "s.example", "ed25519:k", &pk, Canonical::Matrix).is_err());
            }
        }
    }

    #[test]
    fn redaction_is_idempotent(
        ty in prop::sample::select(vec!["m.room.member", "m.room.create", "m.room.power_levels", "m.room.join_rules",
            "m.room.history_visibility", "m.room.redaction", "m.room.aliases", "m.room.message"]),
        content in json_value(false),
        extra in prop::collection::vec((prop::sample::select(vec!["depth", "origin", "hub_server", "event_id", "membership",
            "prev_state", "unsigned", "redacts", "hashes", "junk"]), json_value(false)), 0..4),
    ) {
        let mut e: Object = extra.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        e.insert("type".into(), Value::from(ty));
        e.insert("content".into(), content);
        e.insert("room_id".into(), Value::from("!r:a.example"));
        for v in RoomVersion::all() {
            let once = event::redact(v, &e);
            prop_assert_eq!(event::redact(v, &once), once.clone(), "version {}", v.id);
        }
    }

    #[test]
    fn event_id_ignores_serialisation(content in json_value(false), mut seed in any::<u64>()) {
        let mut e = serde_json::json!({
            "room_id": "!r:a.example", "type": "m.room.message", "sender": "@u:a.example",
            "origin_server_ts": 1, "depth": 3, "auth_events": ["$a"], "prev_events": ["$b"],
            "hashes": {"sha256": "x"}, "signatures": {}, "hub_server": "a.example",
        });
        e["content"] = content;
        for id in ["10", "11", event::LM_VERSION] {
            let v = RoomVersion::find(id).unwrap();
            let obj = e.as_object().unwrap();
            let want = event::event_id(v, obj).unwrap();
            let mut text = String::new();
            noisy(&e, &mut seed, &mut text);
            let reparsed = json::parse_object(text.as_bytes(), v.numbers).unwrap();
            prop_assert_eq!(event::event_id(v, &reparsed).unwrap(), want);
        }
    }
}
