//! Invites to servers that do not take part in a room yet (E10, digest
//! 7.2; items 184-190; OQ-23, OQ-24, OQ-41).

use http::Method;
use serde_json::{json, Value};

use super::client::FedError;
use crate::core::crypto::signature_key_ids;
use crate::core::event::{verify_event_signature, Pdu, Schema};
use crate::core::ids::UserId;
use crate::federation::Node;
use crate::http::encode_segment;
use crate::room::{RoomError, RoomView};
use crate::sys::now_ms;

/// State an invitee sees before joining (item 49), with the inviter's
/// member event.
pub fn stripped_state(room: &RoomView, inviter: Option<&UserId>) -> Vec<Value> {
    room.stripped_state(inviter)
}

pub use crate::room::machine::stripped::strip;

/// The invite answer's event: `pdu` (the draft) or `event` (Matrix, the
/// reference implementation): accept both, prefer `pdu`.
pub fn invite_answer_event(body: &Value) -> Option<&serde_json::Map<String, Value>> {
    body.get("pdu").or_else(|| body.get("event")).and_then(Value::as_object)
}

/// The hub sends an invite PDU to the invitee's server and returns the
/// counter-signed event after checking it is the same event, signed by that
/// server (OQ-24).
pub async fn send_invite(node: &Node, room: &RoomView, pdu: Pdu) -> Result<Pdu, RoomError> {
    let target = pdu
        .state_key()
        .and_then(|s| UserId::parse(s).ok())
        .ok_or_else(|| RoomError::BadEvent("invite without a user as state_key".into()))?;
    let server = target.server_name();
    let body = json!({
        "event": pdu.json(),
        "invite_room_state": stripped_state(room, Some(pdu.sender())),
        "room_version": room.version.id,
    });
    let lm = super::fetch::lm_peer(node, &server).await;
    // Mixed rooms speak Matrix's invite v2, which lmx serves too.
    let (method, path) = if room.version.is_mixed() {
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            encode_segment(room.room_id.as_str()),
            encode_segment(pdu.event_id().as_str())
        );
        (Method::PUT, path)
    } else {
        (Method::POST, format!("{}/invite/{}", super::UNSTABLE, encode_segment(pdu.event_id().as_str())))
    };
    let resp = node.fed.request(&server, method, &path, Some(&body), lm).await.map_err(|e| {
        match (e.status().map(|s| s.as_u16()), e.errcode()) {
            (Some(403), _) => RoomError::Forbidden(format!("{server} refused the invite")),
            (_, Some(code)) => RoomError::Remote(format!("{server} refused the invite: {code}")),
            _ => e.into_room_error(),
        }
    })?;
    let answer = resp.json(server.as_str()).map_err(FedError::into_room_error)?;
    let mut returned = invite_answer_event(&answer)
        .ok_or_else(|| RoomError::Remote(format!("{server} answered the invite without an event")))?
        .clone();
    returned.remove("unsigned");
    let signed =
        Pdu::from_object(room.version, returned, Schema::Full).map_err(|e| RoomError::Remote(e.to_string()))?;
    if signed.event_id() != pdu.event_id() {
        return Err(RoomError::Remote(format!("{server} changed the invite event")));
    }
    let ids = signature_key_ids(signed.json(), server.as_str());
    let info = node.keyring.info(&server, ids.first().map(String::as_str), now_ms()).await;
    let verified = ids.iter().any(|id| {
        let pk = info
            .as_ref()
            .and_then(|i| i.raw.get("verify_keys"))
            .and_then(|k| k.get(id))
            .and_then(|k| k.get("key"))
            .and_then(Value::as_str);
        pk.and_then(|k| crate::core::crypto::PublicKey::from_base64(k).ok())
            .is_some_and(|pk| verify_event_signature(room.version, signed.json(), server.as_str(), id, &pk).is_ok())
    });
    if !verified {
        return Err(RoomError::Remote(format!("{server} did not sign the invite")));
    }
    Ok(signed)
}
