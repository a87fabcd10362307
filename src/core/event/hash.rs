//! Content hashes, the LPDU hash, reference hashes and event ids
//! (digest sections 3.5-3.6; checklist items 27, 35-37; OQ-4, OQ-52).

use serde_json::Value;

use super::redact::redact;
use super::version::{EventIdFormat, RoomVersion};
use super::EventError;
use crate::core::crypto::{b64_encode, b64url_encode, sha256};
use crate::core::ids::EventId;
use crate::core::json::{object_to_canonical, Object};

/// Top-level keys that are never part of a hashed or signed LM object:
/// `unsigned` is metadata (OQ-4) and `event_id` appears only in eigen's
/// stored copies (OQ-53).
const LM_NEVER_HASHED: &[&str] = &["unsigned", "event_id"];

fn strip_lm_metadata(copy: &mut Object) {
    for k in LM_NEVER_HASHED {
        copy.remove(*k);
    }
}

/// `hashes.sha256` of a PDU.
///
/// Matrix: drop `unsigned`, `signatures`, `hashes`. LM: drop `signatures`
/// (and metadata) and every `hashes` key but `lpdu`; drop `hashes` entirely
/// when nothing is left (OQ-52).
pub fn content_hash(version: &RoomVersion, event: &Object) -> Result<String, EventError> {
    let mut copy = event.clone();
    copy.remove("signatures");
    copy.remove("unsigned");
    if version.lm {
        strip_lm_metadata(&mut copy);
        let lpdu = copy.get("hashes").and_then(Value::as_object).and_then(|h| h.get("lpdu")).cloned();
        match lpdu {
            Some(l) => {
                let mut h = Object::new();
                h.insert("lpdu".into(), l);
                copy.insert("hashes".into(), Value::Object(h));
            }
            None => {
                copy.remove("hashes");
            }
        }
    } else {
        copy.remove("hashes");
    }
    let bytes = object_to_canonical(&copy, version.canonical)?;
    Ok(b64_encode(&sha256(&bytes)))
}

/// `hashes.lpdu.sha256`: the hash of the LPDU, computed from an LPDU or from
/// the PDU built from it (its LPDU view has the same hashed fields).
pub fn lpdu_hash(version: &RoomVersion, event: &Object) -> Result<String, EventError> {
    let mut copy = event.clone();
    for k in ["signatures", "hashes", "auth_events", "prev_events"] {
        copy.remove(k);
    }
    strip_lm_metadata(&mut copy);
    let bytes = object_to_canonical(&copy, version.canonical)?;
    Ok(b64_encode(&sha256(&bytes)))
}

/// The LPDU a PDU was built from: no `auth_events`/`prev_events`, and
/// `hashes` holding only `lpdu` (digest 3.5).
pub fn lpdu_view(event: &Object) -> Object {
    let mut copy = event.clone();
    copy.remove("auth_events");
    copy.remove("prev_events");
    let lpdu = copy.get("hashes").and_then(Value::as_object).and_then(|h| h.get("lpdu")).cloned();
    if let Some(l) = lpdu {
        let mut h = Object::new();
        h.insert("lpdu".into(), l);
        copy.insert("hashes".into(), Value::Object(h));
    }
    copy
}

/// Canonical bytes of the redacted event without `signatures`/`unsigned`:
/// what signatures cover and what the reference hash digests.
pub fn redacted_signing_bytes(version: &RoomVersion, event: &Object) -> Result<Vec<u8>, EventError> {
    let mut r = redact(version, event);
    r.remove("signatures");
    r.remove("unsigned");
    Ok(object_to_canonical(&r, version.canonical)?)
}

/// The event id: `$` + reference hash (v3+, LM), or the `event_id` field
/// (v1, v2).
pub fn event_id(version: &RoomVersion, event: &Object) -> Result<EventId, EventError> {
    let encode = match version.event_ids {
        EventIdFormat::InEvent => {
            let id = event.get("event_id").and_then(Value::as_str).ok_or(EventError::Missing("event_id"))?;
            return EventId::parse(id).map_err(EventError::Id);
        }
        EventIdFormat::HashStd => b64_encode,
        EventIdFormat::HashUrl => b64url_encode,
    };
    let digest = sha256(&redacted_signing_bytes(version, event)?);
    Ok(EventId::from_reference_hash(&encode(&digest)))
}
