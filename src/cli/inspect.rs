//! `lmx inspect`: the protocol core on the command line, for checking lmx
//! against other implementations. Reads JSON on stdin, writes to stdout;
//! invalid input or a failed check exits 1 with a one-line reason.

use std::io::Read;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::core::crypto::{b64_decode, verify_object, PublicKey, SigningKey};
use crate::core::event::{self, check_hashes, HashCheck, Pdu, RoomVersion, Schema};
use crate::core::ids::{KeyId, ServerName};
use crate::core::json::{self, to_canonical, Canonical, NumberPolicy, Object};
use crate::core::rooms::{authorize, StateMap};

#[derive(Debug, Subcommand)]
pub enum Inspect {
    /// Canonical JSON. Without --strict, any number with an integral value
    /// within ±(2^53−1) is accepted whatever its spelling.
    Canonical {
        /// Write RFC 8785 (the LM room version's form) instead of Matrix's.
        #[arg(long)]
        rfc8785: bool,
        /// Parse as an event parser does: Matrix v6+ (integers only, no -0)
        /// or, with --rfc8785, LM (integer literals within ±(2^53−1)).
        #[arg(long)]
        strict: bool,
    },
    /// Base64 SHA-256 content hash (`hashes.sha256`) of an event.
    ContentHash(VersionArg),
    /// Event id (`$` + reference hash; v1/v2: the `event_id` field).
    EventId(VersionArg),
    /// `hashes.lpdu.sha256` of an LM event, from the LPDU or its PDU.
    LpduHash,
    /// The redacted event, in the room version's canonical JSON.
    Redact(VersionArg),
    /// Adds a signature. With --room-version the input is an event, signed
    /// as that server signs it (content hash, redaction, LPDU view).
    Sign {
        #[arg(long)]
        server: String,
        #[arg(long = "key-id")]
        key_id: String,
        /// 32-byte ed25519 seed, base64.
        #[arg(long)]
        seed: String,
        #[arg(long = "room-version")]
        room_version: Option<String>,
        /// Canonicalise a plain object with Matrix's form instead of RFC 8785.
        #[arg(long, conflicts_with = "room_version")]
        matrix: bool,
    },
    /// Prints `ok` when every server named with --key has a valid signature.
    /// With --room-version the keys are those a receiving server knows:
    /// exactly the signatures the room version requires of the event are
    /// checked (an LPDU: its sender's server; a PDU: also the hub), a
    /// required signer without a key fails, other servers' keys are unused.
    Verify {
        /// NAME ed25519:ID PUBKEY_BASE64 (repeatable).
        #[arg(long = "key", num_args = 3, value_names = ["NAME", "KEY_ID", "PUBKEY"], required = true, action = clap::ArgAction::Append)]
        keys: Vec<String>,
        /// Check an event as a receiving server does: signatures over the
        /// redacted form, then the content hashes.
        #[arg(long = "room-version")]
        room_version: Option<String>,
        #[arg(long, conflicts_with = "room_version")]
        matrix: bool,
    },
    /// Authorization rules against a state: prints `allow`, or `reject:
    /// <rule>` and exits 1. Signatures and auth events are not checked.
    Auth {
        #[arg(long = "room-version")]
        room_version: String,
        /// JSON array of state events; later ones replace earlier ones.
        #[arg(long)]
        state: std::path::PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct VersionArg {
    #[arg(long = "room-version")]
    room_version: String,
}

/// Result of a command: text for stdout, or a one-line failure. `Reject`
/// goes to stdout (the `auth` command's answer), `Fail` to stderr.
pub enum Outcome {
    Ok(String),
    Reject(String),
    Fail(String),
}

pub fn run(cmd: Inspect, stdin: &mut dyn Read) -> Outcome {
    let mut input = Vec::new();
    if let Err(e) = stdin.read_to_end(&mut input) {
        return Outcome::Fail(format!("cannot read stdin: {e}"));
    }
    match dispatch(cmd, &input) {
        Ok(o) => o,
        Err(e) => Outcome::Fail(e),
    }
}

fn version(id: &str) -> Result<&'static RoomVersion, String> {
    RoomVersion::find(id).ok_or_else(|| format!("unknown room version {id:?}"))
}

fn object(input: &[u8], policy: NumberPolicy) -> Result<Object, String> {
    json::parse_object(input, policy).map_err(|e| e.to_string())
}

fn canonical_text(v: &Value, form: Canonical) -> Result<String, String> {
    let bytes = to_canonical(v, form).map_err(|e| e.to_string())?;
    Ok(String::from_utf8(bytes).expect("canonical JSON is UTF-8"))
}

fn dispatch(cmd: Inspect, input: &[u8]) -> Result<Outcome, String> {
    let text = match cmd {
        Inspect::Canonical { rfc8785, strict } => {
            let (policy, form) = match (rfc8785, strict) {
                (false, false) => (NumberPolicy::MatrixLenient, Canonical::Matrix),
                (false, true) => (NumberPolicy::MatrixStrict, Canonical::Matrix),
                (true, false) => (NumberPolicy::Ieee754, Canonical::Rfc8785),
                (true, true) => (NumberPolicy::LmStrict, Canonical::Rfc8785),
            };
            let v = json::parse(input, policy).map_err(|e| e.to_string())?;
            canonical_text(&v, form)?
        }
        Inspect::ContentHash(a) => {
            let v = version(&a.room_version)?;
            event::content_hash(v, &object(input, v.numbers)?).map_err(|e| e.to_string())?
        }
        Inspect::EventId(a) => {
            let v = version(&a.room_version)?;
            event::event_id(v, &object(input, v.numbers)?).map_err(|e| e.to_string())?.into_string()
        }
        Inspect::LpduHash => {
            let v = RoomVersion::lm();
            event::lpdu_hash(v, &object(input, v.numbers)?).map_err(|e| e.to_string())?
        }
        Inspect::Redact(a) => {
            let v = version(&a.room_version)?;
            let redacted = event::redact(v, &object(input, v.numbers)?);
            canonical_text(&Value::Object(redacted), v.canonical)?
        }
        Inspect::Sign { server, key_id, seed, room_version, matrix } => {
            sign(input, &server, &key_id, &seed, room_version.as_deref(), matrix)?
        }
        Inspect::Verify { keys, room_version, matrix } => return verify(input, &keys, room_version.as_deref(), matrix),
        Inspect::Auth { room_version, state } => return auth(input, &room_version, &state),
    };
    Ok(Outcome::Ok(text))
}

fn plain_form(matrix: bool) -> (NumberPolicy, Canonical) {
    if matrix {
        (NumberPolicy::MatrixLenient, Canonical::Matrix)
    } else {
        (NumberPolicy::Ieee754, Canonical::Rfc8785)
    }
}

fn sign(
    input: &[u8],
    server: &str,
    key_id: &str,
    seed: &str,
    room_version: Option<&str>,
    matrix: bool,
) -> Result<String, String> {
    let server = ServerName::parse(server).map_err(|e| e.to_string())?;
    let key_id = KeyId::parse(key_id).map_err(|e| e.to_string())?;
    if !key_id.is_ed25519() {
        return Err(format!("{key_id} is not an ed25519 key id"));
    }
    let seed = b64_decode(seed).map_err(|e| format!("seed: {e}"))?;
    let key = SigningKey::from_seed(server, key_id, &seed).map_err(|e| e.to_string())?;
    match room_version {
        Some(id) => {
            let v = version(id)?;
            let mut obj = object(input, v.numbers)?;
            event::sign_in_role(v, &key, &mut obj).map_err(|e| e.to_string())?;
            canonical_text(&Value::Object(obj), v.canonical)
        }
        None => {
            let (policy, form) = plain_form(matrix);
            let mut obj = object(input, policy)?;
            key.sign_object(&mut obj, form).map_err(|e| e.to_string())?;
            canonical_text(&Value::Object(obj), form)
        }
    }
}

fn verify(input: &[u8], keys: &[String], room_version: Option<&str>, matrix: bool) -> Result<Outcome, String> {
    let mut named = Vec::new();
    for k in keys.chunks(3) {
        let [name, key_id, public] = k else {
            return Err("--key takes NAME KEY_ID PUBKEY".into());
        };
        let public = PublicKey::from_base64(public).map_err(|e| format!("public key of {name}: {e}"))?;
        named.push((name.as_str(), key_id.as_str(), public));
    }
    let Some(id) = room_version else {
        let (policy, form) = plain_form(matrix);
        let obj = object(input, policy)?;
        for (name, key_id, public) in &named {
            if let Err(e) = verify_object(&obj, name, key_id, public, form) {
                return Ok(Outcome::Fail(e.to_string()));
            }
        }
        return Ok(Outcome::Ok("ok".into()));
    };
    let v = version(id)?;
    let mut obj = object(input, v.numbers)?;
    obj.remove("unsigned");
    if let Err(e) = required_signatures_hold(v, &obj, &named) {
        return Ok(Outcome::Fail(e));
    }
    Ok(match check_hashes(v, &obj).map_err(|e| e.to_string())? {
        HashCheck::Match => Outcome::Ok("ok".into()),
        HashCheck::Mismatch(_) => Outcome::Ok("ok: content hash mismatch, would be redacted".into()),
    })
}

/// As a receiving server holding the keys `known`: every server the room
/// version requires to sign this event (an LPDU: its sender's server; a
/// PDU: the sender's server and the hub) must have a key among them, and
/// each of its signatures under a known key must verify. Keys of servers
/// that need not sign are not consulted.
fn required_signatures_hold(
    v: &'static RoomVersion,
    obj: &Object,
    known: &[(&str, &str, PublicKey)],
) -> Result<(), String> {
    let is_lpdu = v.lm && obj.get("hashes").and_then(|h| h.get("sha256")).is_none();
    let mut required = event::required_signers(v, obj).map_err(|e| e.to_string())?;
    if is_lpdu {
        required.truncate(1);
    }
    for server in &required {
        let keys: Vec<_> = known.iter().filter(|(name, ..)| *name == server.as_str()).collect();
        if keys.is_empty() {
            return Err(format!("{server} must sign this event and no --key of it was given"));
        }
        let signed: Vec<_> = keys
            .iter()
            .filter(|(name, key_id, _)| {
                obj.get("signatures").and_then(|s| s.get(*name)).and_then(|s| s.get(*key_id)).is_some()
            })
            .collect();
        if signed.is_empty() {
            return Err(format!("{server} must sign this event and has no signature under a given key"));
        }
        for (name, key_id, public) in signed {
            event::verify_event_signature(v, obj, name, key_id, public).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn auth(input: &[u8], room_version: &str, state_path: &std::path::Path) -> Result<Outcome, String> {
    let v = version(room_version)?;
    let state_text = std::fs::read(state_path).map_err(|e| format!("{}: {e}", state_path.display()))?;
    let state_json = json::parse(&state_text, v.numbers).map_err(|e| format!("state: {e}"))?;
    let Value::Array(items) = state_json else {
        return Err("state: expected a JSON array of events".into());
    };
    let mut state = StateMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(o) = item else {
            return Err(format!("state[{i}]: not an object"));
        };
        let pdu = Pdu::from_object(v, o, Schema::Loose).map_err(|e| format!("state[{i}]: {e}"))?;
        state.apply(Arc::new(pdu));
    }
    let event = Pdu::from_object(v, object(input, v.numbers)?, Schema::Loose).map_err(|e| format!("event: {e}"))?;
    Ok(match authorize(&event, &state) {
        Ok(()) => Outcome::Ok("allow".into()),
        Err(e) => Outcome::Reject(format!("reject: {e}")),
    })
}
