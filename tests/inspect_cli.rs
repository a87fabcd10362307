//! `lmx inspect` through the real binary: stdin in, stdout out, exit 0, or
//! exit 1 with a one-line reason. The vector files whose cases map onto a
//! subcommand are run through it whole.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn lmx(args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmx"))
        .arg("inspect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap().trim_end_matches('\n').to_owned(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn ok(args: &[&str], stdin: &str) -> String {
    let r = lmx(args, stdin);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    r.stdout
}

fn fails(args: &[&str], stdin: &str) -> String {
    let r = lmx(args, stdin);
    assert_eq!(r.code, 1, "{args:?} should fail, printed {}", r.stdout);
    assert_eq!(r.stderr.lines().count(), 1, "one-line reason: {:?}", r.stderr);
    r.stderr
}

fn vectors(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn canonical_modes() {
    // The Matrix spec's own example: the encoder normalises the spelling.
    assert_eq!(ok(&["canonical"], r#"{"b": 1e10, "a": -0}"#), r#"{"a":0,"b":10000000000}"#);
    assert!(fails(&["canonical", "--strict"], r#"{"a": -0}"#).contains("-0"));
    fails(&["canonical"], r#"{"a": 1.5}"#);
    assert_eq!(ok(&["canonical", "--rfc8785"], r#"[1E30, 4.50, 2e-3, -0]"#), "[1e+30,4.5,0.002,0]");
    fails(&["canonical", "--rfc8785", "--strict"], "[9007199254740993]");
    fails(&["canonical"], r#"{"a":1,"a":2}"#);
    fails(&["canonical"], "not json");
    let file = vectors("canonical_json.json");
    for v in file["vectors"].as_array().unwrap() {
        let got = ok(&["canonical"], v["input"].as_str().unwrap());
        assert_eq!(got, v["canonical"].as_str().unwrap(), "{}", v["id"]);
    }
    let invalid = vectors("canonical_json_invalid.json");
    for v in invalid["vectors"].as_array().unwrap() {
        fails(&["canonical", "--strict"], v["input"].as_str().unwrap());
    }
}

#[test]
fn hashes_and_ids_of_vector_events() {
    let file = vectors("event_hashes.json");
    for c in file["cases"].as_array().unwrap() {
        let (rv, event) = (c["room_version"].as_str().unwrap(), c["event_json"].as_str().unwrap());
        let hash = ok(&["content-hash", "--room-version", rv], event);
        assert_eq!(hash == c["expected_content_hash"], c["content_hash_matches"] == true, "{}", c["id"]);
        if let Some(id) = c["expected_event_id"].as_str().or(c["event_id_in_event"].as_str()) {
            assert_eq!(ok(&["event-id", "--room-version", rv], event), id, "{}", c["id"]);
        }
        // Every key the case gives, as a receiving server's key ring.
        let mut args = vec!["verify", "--room-version", rv];
        for check in c["signature_checks"].as_array().unwrap() {
            let Some(public) = check["public_key_base64"].as_str() else {
                continue;
            };
            args.extend(["--key", check["server"].as_str().unwrap(), check["key_id"].as_str().unwrap(), public]);
        }
        if args.len() > 3 {
            let want =
                if c["content_hash_matches"] == true { "ok" } else { "ok: content hash mismatch, would be redacted" };
            assert_eq!(ok(&args, event), want, "{}", c["id"]);
        }
    }
    fails(&["event-id", "--room-version", "99"], "{}");
}

#[test]
fn redact_vectors() {
    let file = vectors("redaction.json");
    for c in file["cases"].as_array().unwrap() {
        let input = c["input"].to_string();
        for rv in c["room_versions"].as_array().unwrap() {
            let got: Value =
                serde_json::from_str(&ok(&["redact", "--room-version", rv.as_str().unwrap()], &input)).unwrap();
            assert_eq!(got, c["expected"], "{} v{rv}", c["id"]);
        }
    }
}

const SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
const PUBLIC: &str = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI";

#[test]
fn sign_and_verify_objects() {
    let signed =
        ok(&["sign", "--server", "domain", "--key-id", "ed25519:1", "--seed", SEED], r#"{"one": 1, "two": "Two"}"#);
    let v: Value = serde_json::from_str(&signed).unwrap();
    // The Matrix spec's signing test vector.
    let want = "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw";
    assert_eq!(v["signatures"]["domain"]["ed25519:1"], want);
    assert_eq!(ok(&["verify", "--key", "domain", "ed25519:1", PUBLIC], &signed), "ok");
    let tampered = signed.replace("Two", "Three");
    assert!(fails(&["verify", "--key", "domain", "ed25519:1", PUBLIC], &tampered).contains("domain"));
    assert!(fails(&["verify", "--key", "other", "ed25519:1", PUBLIC], &signed).contains("other"));
    let file = vectors("signing.json");
    for c in file["verify_cases"].as_array().unwrap() {
        let Some(public) = c["public_key_base64"].as_str() else {
            continue;
        };
        let r = lmx(
            &["verify", "--key", c["entity"].as_str().unwrap(), c["key_id"].as_str().unwrap(), public],
            &c["signed_object"].to_string(),
        );
        assert_eq!(r.code == 0, c["expected_valid"] == true, "{}", c["id"]);
    }
}

fn lm_lpdu() -> Value {
    json!({
        "room_id": "!abc:hub.example", "type": "m.room.message", "sender": "@bob:part.example",
        "origin_server_ts": 1681340188825_i64, "hub_server": "hub.example", "content": {"body": "hi", "x": 0.25}
    })
}

#[test]
fn lm_event_round_trip_through_the_cli() {
    let lm = lmx::core::event::LM_VERSION;
    let part_seed = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI";
    let hub_seed = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE";
    // The participant signs its LPDU.
    let lpdu = ok(
        &["sign", "--room-version", lm, "--server", "part.example", "--key-id", "ed25519:p", "--seed", part_seed],
        &lm_lpdu().to_string(),
    );
    let lpdu_v: Value = serde_json::from_str(&lpdu).unwrap();
    let h = ok(&["lpdu-hash"], &lpdu);
    assert_eq!(lpdu_v["hashes"]["lpdu"]["sha256"], h);
    // The hub adds its fields and signs the PDU.
    let mut pdu = lpdu_v.clone();
    pdu["auth_events"] = json!(["$a"]);
    pdu["prev_events"] = json!(["$b"]);
    let pdu = ok(
        &["sign", "--room-version", lm, "--server", "hub.example", "--key-id", "ed25519:h", "--seed", hub_seed],
        &pdu.to_string(),
    );
    assert_eq!(ok(&["lpdu-hash"], &pdu), h, "same hash from the PDU");
    let keys = |pub_part: &str, pub_hub: &str| {
        vec![
            "verify".to_owned(),
            "--room-version".into(),
            lm.into(),
            "--key".into(),
            "part.example".into(),
            "ed25519:p".into(),
            pub_part.into(),
            "--key".into(),
            "hub.example".into(),
            "ed25519:h".into(),
            pub_hub.into(),
        ]
    };
    let pk = |seed: &str| {
        let k = lmx::core::crypto::SigningKey::from_seed(
            lmx::core::ids::ServerName::parse("x.example").unwrap(),
            lmx::core::ids::KeyId::parse("ed25519:x").unwrap(),
            &lmx::core::crypto::b64_decode(seed).unwrap(),
        )
        .unwrap();
        k.public_key().to_base64()
    };
    let args = keys(&pk(part_seed), &pk(hub_seed));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(ok(&args, &pdu), "ok");
    // Content changed after signing: signatures (over the redacted form)
    // hold, the hash does not.
    let edited = pdu.replace("\"hi\"", "\"ho\"");
    assert_eq!(ok(&args, &edited), "ok: content hash mismatch, would be redacted");
    // The hub's choices are signed: moving the event breaks the hub's signature.
    let moved = pdu.replace("$b", "$c");
    assert!(fails(&args, &moved).contains("hub.example"));

    // A receiving server's key ring: the keys of every server of the room.
    // Exactly the signatures the event needs are checked.
    let third_seed = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM";
    let ring = |names: &[&str]| {
        let mut args = vec!["verify".to_owned(), "--room-version".into(), lm.into()];
        for name in names {
            let (id, seed) = match *name {
                "part.example" => ("ed25519:p", part_seed),
                "hub.example" => ("ed25519:h", hub_seed),
                _ => ("ed25519:t", third_seed),
            };
            args.extend(["--key".into(), (*name).into(), id.into(), pk(seed)]);
        }
        args
    };
    let run = |args: &[String], input: &str| -> Result<String, String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = lmx(&args, input);
        if r.code == 0 {
            Ok(r.stdout)
        } else {
            Err(r.stderr)
        }
    };
    let all = ring(&["part.example", "hub.example", "third.example"]);
    assert_eq!(run(&all, &lpdu).unwrap(), "ok", "an LPDU needs its participant's signature only");
    assert_eq!(run(&all, &pdu).unwrap(), "ok", "a PDU needs participant and hub; the third server's key is unused");
    assert_eq!(run(&ring(&["part.example"]), &lpdu).unwrap(), "ok");
    let no_hub = run(&ring(&["part.example", "third.example"]), &pdu).unwrap_err();
    assert!(no_hub.contains("hub.example"), "a PDU without the hub's key fails: {no_hub}");
    let no_part = run(&ring(&["hub.example"]), &lpdu).unwrap_err();
    assert!(no_part.contains("part.example"), "an LPDU without its participant's key fails: {no_part}");
    assert!(run(&all, &moved).unwrap_err().contains("hub.example"), "a bad hub signature fails");
    let mut wrong_hub = ring(&["part.example", "third.example"]);
    wrong_hub.extend(["--key".into(), "hub.example".into(), "ed25519:h".into(), pk(third_seed)]);
    assert!(run(&wrong_hub, &pdu).is_err(), "the hub's key id with another key fails");

    let id = ok(&["event-id", "--room-version", lm], &pdu);
    assert!(id.starts_with('$') && !id.contains('+') && !id.contains('/'));
    let redacted: Value = serde_json::from_str(&ok(&["redact", "--room-version", lm], &pdu)).unwrap();
    assert_eq!(redacted["hub_server"], "hub.example");
    assert_eq!(redacted["content"], json!({}));
}

#[test]
fn auth_vectors_through_the_cli() {
    let file = vectors("auth_rules.json");
    let dir = std::env::temp_dir().join(format!("lmx-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, c) in file["cases"].as_array().unwrap().iter().enumerate() {
        let mut state: Vec<Value> = match c["state"]["base"].as_str() {
            Some(b) => file["states"][b].as_array().unwrap().clone(),
            None => Vec::new(),
        };
        state.extend(c["state"]["add"].as_array().unwrap().iter().cloned());
        let path = dir.join(format!("{i}.json"));
        std::fs::write(&path, Value::Array(state).to_string()).unwrap();
        let r = lmx(
            &["auth", "--room-version", c["room_version"].as_str().unwrap(), "--state", path.to_str().unwrap()],
            &c["event"].to_string(),
        );
        if c["expected"] == "allow" {
            assert_eq!((r.code, r.stdout.as_str()), (0, "allow"), "{}: {}", c["id"], r.stdout);
        } else {
            assert_eq!(r.code, 1, "{}", c["id"]);
            assert!(r.stdout.starts_with("reject: rule "), "{}: {}", c["id"], r.stdout);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    fails(&["auth", "--room-version", "11", "--state", "/nonexistent/state.json"], "{}");
}
