//! Building events: the hub's PDUs (from its own users' drafts and from
//! participants' LPDUs, digest 3.8) and a participant's LPDUs.

use serde_json::{json, Value};

use super::{RoomError, RoomView};
use crate::core::crypto::SigningKey;
use crate::core::event::{sign_event, sign_lpdu, EventError, Lpdu, Pdu, Schema};
use crate::core::ids::UserId;
use crate::core::json::Object;
use crate::core::rooms::{check_append, select_auth_events, AppendError, EventSketch};

/// A local user's intent to send an event.
#[derive(Debug, Clone)]
pub struct Draft {
    pub sender: UserId,
    pub event_type: String,
    pub state_key: Option<String>,
    pub content: Object,
    /// `(device, txn id)` of a client send, for idempotency.
    pub txn: Option<(String, String)>,
}

fn event_error(e: EventError) -> RoomError {
    match e {
        EventError::TooLarge(n) => RoomError::TooLarge(format!("{n} bytes")),
        other => RoomError::BadEvent(other.to_string()),
    }
}

fn append_error(e: AppendError) -> RoomError {
    match e {
        AppendError::Auth(a) => RoomError::Forbidden(super::counted(a).to_string()),
        other => RoomError::BadEvent(other.to_string()),
    }
}

pub(super) fn base_fields(view: &RoomView, d: &Draft, now: i64) -> Object {
    let mut o = Object::new();
    o.insert("room_id".into(), json!(view.room_id.as_str()));
    o.insert("type".into(), json!(d.event_type));
    if let Some(sk) = &d.state_key {
        o.insert("state_key".into(), json!(sk));
    }
    o.insert("sender".into(), json!(d.sender.as_str()));
    o.insert("origin_server_ts".into(), json!(now));
    o.insert("content".into(), Value::Object(d.content.clone()));
    o
}

/// Adds `auth_events` (selection against current state) and `prev_events`
/// (the tail) to an event's fields.
fn link(view: &RoomView, o: &mut Object) {
    let sketch = EventSketch {
        event_type: o["type"].as_str().unwrap_or(""),
        sender: o["sender"].as_str().unwrap_or(""),
        state_key: o.get("state_key").and_then(Value::as_str),
        content: o["content"].as_object().expect("content is an object"),
    };
    let auth: Vec<Value> =
        select_auth_events(view.version, &view.state, sketch).into_iter().map(|e| json!(e.as_str())).collect();
    let prev: Vec<Value> = view.tail.iter().map(|t| json!(t.as_str())).collect();
    o.insert("auth_events".into(), Value::Array(auth));
    o.insert("prev_events".into(), Value::Array(prev));
}

/// Signs, parses and checks a hub-built event against the room.
fn finish(view: &RoomView, key: &SigningKey, mut o: Object) -> Result<Pdu, RoomError> {
    sign_event(view.version, key, &mut o).map_err(event_error)?;
    let pdu = Pdu::from_object(view.version, o, Schema::Full).map_err(event_error)?;
    check_append(view.tail.as_ref(), &view.state, &pdu).map_err(append_error)?;
    encryption_stays(&view.state, &pdu)?;
    Ok(pdu)
}

/// An LM room's encryption, once set, stays as it is: the draft settles a
/// room's encryption for its life, so a later `m.room.encryption` may
/// repeat the algorithm but never change or drop it (a client that changed
/// it would leave other servers' members unable to read).
pub fn encryption_stays(state: &impl crate::core::rooms::StateView, pdu: &Pdu) -> Result<(), RoomError> {
    if pdu.event_type() != "m.room.encryption" || pdu.state_key() != Some("") {
        return Ok(());
    }
    let Some(current) = state.get("m.room.encryption", "") else { return Ok(()) };
    let algorithm = |p: &Pdu| p.content().get("algorithm").and_then(serde_json::Value::as_str).map(str::to_owned);
    if algorithm(current).is_some() && algorithm(current) != algorithm(pdu) {
        return Err(RoomError::Forbidden("this room's encryption algorithm is fixed once set".into()));
    }
    Ok(())
}

/// The hub's own event for a local user (OQ-3: no `hub_server`).
pub fn hub_event_from_draft(view: &RoomView, key: &SigningKey, d: &Draft, now: i64) -> Result<Pdu, RoomError> {
    let mut o = base_fields(view, d, now);
    link(view, &mut o);
    finish(view, key, o)
}

/// The hub turns a participant's LPDU into a PDU: every LPDU field is kept
/// as sent; only `auth_events`, `prev_events`, `hashes.sha256` and the
/// hub's signature are added.
pub fn hub_event_from_lpdu(view: &RoomView, key: &SigningKey, lpdu: &Lpdu) -> Result<Pdu, RoomError> {
    if lpdu.hub_server() != key.server() {
        return Err(RoomError::BadEvent(format!("hub_server is {}, not this hub", lpdu.hub_server())));
    }
    let mut o = lpdu.json().clone();
    link(view, &mut o);
    finish(view, key, o)
}

/// A participant's LPDU for a local user. It is not checked against the
/// participant's copy of the state: that copy may lag behind the hub (a
/// power level just granted), and the hub decides; a refusal comes back in
/// `failed_pdus` and reaches the client as `403`.
pub fn lpdu_from_draft(view: &RoomView, key: &SigningKey, d: &Draft, now: i64) -> Result<Lpdu, RoomError> {
    let mut o = base_fields(view, d, now);
    o.insert("hub_server".into(), json!(view.hub.as_str()));
    sign_lpdu(view.version, key, &mut o).map_err(event_error)?;
    // Leave head-room for what the hub adds (OQ-45).
    let lpdu = Lpdu::from_object(view.version, o).map_err(event_error)?;
    let len = serde_json::to_vec(lpdu.json()).map(|v| v.len()).unwrap_or(0);
    if len > crate::core::event::MAX_PDU_BYTES - 2048 {
        return Err(RoomError::TooLarge(format!("{len} bytes leaves no room for the hub's fields")));
    }
    Ok(lpdu)
}
