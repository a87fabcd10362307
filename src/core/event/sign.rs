//! Signing events and checking their signatures and hashes (digest 3.7,
//! checklist items 33, 38-41, 60-63; OQ-3, OQ-14).

use serde_json::Value;

use super::hash::{content_hash, lpdu_hash, lpdu_view, redacted_signing_bytes};
use super::version::RoomVersion;
use super::EventError;
use crate::core::crypto::{find_signature, insert_signature, CryptoError, PublicKey, SigningKey};
use crate::core::ids::{ServerName, UserId};
use crate::core::json::Object;

fn hashes_mut(event: &mut Object) -> &mut Object {
    let h = event.entry("hashes").or_insert_with(|| Value::Object(Object::new()));
    if !h.is_object() {
        *h = Value::Object(Object::new());
    }
    h.as_object_mut().expect("hashes was just made an object")
}

fn sha256_entry(hash: String) -> Value {
    let mut o = Object::new();
    o.insert("sha256".into(), Value::String(hash));
    Value::Object(o)
}

/// Signs a full event as its origin or hub: sets `hashes.sha256`, then signs
/// the redacted event. In LM rooms this is the hub's step 4-5 of digest 3.8
/// (an existing `hashes.lpdu` stays, and is covered).
pub fn sign_event(version: &RoomVersion, key: &SigningKey, event: &mut Object) -> Result<(), EventError> {
    let hash = content_hash(version, event)?;
    hashes_mut(event).insert("sha256".into(), Value::String(hash));
    let sig = key.sign_bytes(&redacted_signing_bytes(version, event)?);
    insert_signature(event, key.server(), key.key_id(), sig);
    Ok(())
}

/// Signs an LPDU as the participant: `hashes = {"lpdu": {"sha256": …}}`,
/// then signs the redacted LPDU (items 32-33).
pub fn sign_lpdu(version: &RoomVersion, key: &SigningKey, lpdu: &mut Object) -> Result<(), EventError> {
    let hash = lpdu_hash(version, lpdu)?;
    let mut hashes = Object::new();
    hashes.insert("lpdu".into(), sha256_entry(hash));
    lpdu.insert("hashes".into(), Value::Object(hashes));
    let sig = key.sign_bytes(&redacted_signing_bytes(version, lpdu)?);
    insert_signature(lpdu, key.server(), key.key_id(), sig);
    Ok(())
}

/// Signs `event` the way `key`'s server signs it in its role: an LM
/// participant signs its LPDU (or, given the PDU built from it, the LPDU
/// view); a hub, a DAG origin or an invitee's server signs the full event.
pub fn sign_in_role(version: &RoomVersion, key: &SigningKey, event: &mut Object) -> Result<(), EventError> {
    if version.lm && super::Lpdu::looks_like_lpdu(event) {
        return sign_lpdu(version, key, event);
    }
    let signer = key.server().as_str();
    let is_participant = version.lm
        && hub_server(event).is_some_and(|hub| hub != signer)
        && sender_server(event).is_some_and(|s| s.as_str() == signer);
    if is_participant {
        let sig = key.sign_bytes(&signed_bytes_for(version, event, signer)?);
        insert_signature(event, key.server(), key.key_id(), sig);
        return Ok(());
    }
    sign_event(version, key, event)
}

fn sender_server(event: &Object) -> Option<ServerName> {
    let sender = event.get("sender").and_then(Value::as_str)?;
    UserId::parse(sender).ok().map(|u| u.server_name())
}

fn hub_server(event: &Object) -> Option<&str> {
    event.get("hub_server").and_then(Value::as_str)
}

/// The bytes `signer`'s signature on `event` covers. In LM rooms the
/// sender's server signed the LPDU view when a different hub built the PDU.
pub fn signed_bytes_for(version: &RoomVersion, event: &Object, signer: &str) -> Result<Vec<u8>, EventError> {
    if version.lm {
        if let Some(hub) = hub_server(event) {
            let is_sender_server = sender_server(event).is_some_and(|s| s.as_str() == signer);
            if hub != signer && is_sender_server {
                return redacted_signing_bytes(version, &lpdu_view(event));
            }
        }
    }
    redacted_signing_bytes(version, event)
}

/// Verifies `signatures[server][key_id]` on an event.
pub fn verify_event_signature(
    version: &RoomVersion,
    event: &Object,
    server: &str,
    key_id: &str,
    key: &PublicKey,
) -> Result<(), EventError> {
    let sig = find_signature(event, server, key_id)?;
    if key.verify(&signed_bytes_for(version, event, server)?, sig) {
        Ok(())
    } else {
        Err(CryptoError::BadSignature { server: server.to_owned(), key_id: key_id.to_owned() }.into())
    }
}

/// Servers whose signatures an event must carry (digest 3.7): the sender's
/// server, plus `hub_server` when it is another server; in Matrix room
/// versions (8 and later) a restricted join also needs the server of the
/// user named in `join_authorised_via_users_server` (LM has no restricted
/// joins: OQ-9). All others are ignored (item 62).
pub fn required_signers(version: &RoomVersion, event: &Object) -> Result<Vec<ServerName>, EventError> {
    let sender = sender_server(event).ok_or(EventError::Missing("sender"))?;
    let mut out = vec![sender];
    if let Some(hub) = hub_server(event) {
        let hub = ServerName::parse(hub).map_err(EventError::Id)?;
        if hub != out[0] {
            out.push(hub);
        }
    }
    if !version.lm {
        if let Some(via) = authorising_server(event)? {
            if !out.contains(&via) {
                out.push(via);
            }
        }
    }
    Ok(out)
}

/// The server of the user who authorised a restricted join, if the event
/// is a join naming one.
fn authorising_server(event: &Object) -> Result<Option<ServerName>, EventError> {
    if event.get("type").and_then(Value::as_str) != Some("m.room.member") {
        return Ok(None);
    }
    let content = event.get("content");
    if content.and_then(|c| c.get("membership")).and_then(Value::as_str) != Some("join") {
        return Ok(None);
    }
    match content.and_then(|c| c.get("join_authorised_via_users_server")) {
        None => Ok(None),
        Some(Value::String(user)) => Ok(Some(UserId::parse(user).map_err(EventError::Id)?.server_name())),
        Some(_) => Err(EventError::Missing("content.join_authorised_via_users_server")),
    }
}

/// Outcome of the content-hash check (receive step 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashCheck {
    Match,
    /// Names the hash that failed; the receiver keeps only a redacted copy.
    Mismatch(&'static str),
}

fn stated_hash<'a>(event: &'a Object, path: &[&str]) -> Option<&'a str> {
    let mut v = event.get("hashes")?;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

/// Checks `hashes.sha256` and, for LM events, `hashes.lpdu.sha256`.
/// An LPDU (no `sha256` yet) is checked on its `lpdu` hash only.
pub fn check_hashes(version: &RoomVersion, event: &Object) -> Result<HashCheck, EventError> {
    let is_lpdu = version.lm && stated_hash(event, &["sha256"]).is_none();
    if version.lm && (hub_server(event).is_some() || is_lpdu) {
        let stated = stated_hash(event, &["lpdu", "sha256"]).ok_or(EventError::Missing("hashes.lpdu.sha256"))?;
        if lpdu_hash(version, event)? != stated {
            return Ok(HashCheck::Mismatch("hashes.lpdu.sha256"));
        }
    }
    if is_lpdu {
        return Ok(HashCheck::Match);
    }
    let stated = stated_hash(event, &["sha256"]).ok_or(EventError::Missing("hashes.sha256"))?;
    if content_hash(version, event)? != stated {
        return Ok(HashCheck::Mismatch("hashes.sha256"));
    }
    Ok(HashCheck::Match)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn signers(version: &str, event: Value) -> Result<Vec<String>, EventError> {
        let v = RoomVersion::find(version).unwrap();
        let Value::Object(o) = event else { unreachable!() };
        required_signers(v, &o).map(|s| s.iter().map(ToString::to_string).collect())
    }

    fn restricted_join(via: Value) -> Value {
        json!({
            "type": "m.room.member", "state_key": "@j:joiner.test", "sender": "@j:joiner.test",
            "content": {"membership": "join", "join_authorised_via_users_server": via},
        })
    }

    #[test]
    fn a_restricted_join_needs_the_authorising_users_server_in_matrix_versions_only() {
        for v in ["10", "11", "12"] {
            assert_eq!(
                signers(v, restricted_join(json!("@mod:resident.test"))).unwrap(),
                ["joiner.test", "resident.test"]
            );
            // Authorised by a user of its own server: one signer.
            assert_eq!(signers(v, restricted_join(json!("@other:joiner.test"))).unwrap(), ["joiner.test"]);
            assert!(signers(v, restricted_join(json!(7))).is_err(), "not a user id");
            assert!(signers(v, restricted_join(json!("not a user"))).is_err());
            // Only joins are authorised this way.
            let mut leave = restricted_join(json!("@mod:resident.test"));
            leave["content"]["membership"] = json!("leave");
            assert_eq!(signers(v, leave).unwrap(), ["joiner.test"]);
        }
        // LM has no restricted joins (OQ-9): the key changes nothing there.
        assert_eq!(
            signers(crate::core::event::LM_VERSION, restricted_join(json!("@mod:resident.test"))).unwrap(),
            ["joiner.test"]
        );
    }
}
