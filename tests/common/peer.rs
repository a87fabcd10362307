//! Speaking to a server the way an LM peer does: signed LPDUs, signed
//! federation requests from a running server's identity, and looking up
//! what a server stored.

use std::time::Duration;

use http::Method;
use lmx::core::crypto::SigningKey;
use lmx::core::event::{self, RoomVersion};
use lmx::core::ids::{EventId, ServerName};
use lmx::core::json::Object;
use lmx::federation::UNSTABLE;
use serde_json::{json, Value};

use super::{Server, PATIENCE};

/// A participant's signed LPDU: `fields` over the defaults
/// (`origin_server_ts` now, `content` `{}`); a `null` field is left out.
pub fn lpdu(key: &SigningKey, fields: Value) -> Object {
    let mut o = Object::new();
    o.insert("origin_server_ts".into(), json!(lmx::sys::now_ms()));
    o.insert("content".into(), json!({}));
    for (k, v) in fields.as_object().expect("fields are an object") {
        if v.is_null() {
            o.remove(k);
        } else {
            o.insert(k.clone(), v.clone());
        }
    }
    event::sign_lpdu(RoomVersion::lm(), key, &mut o).unwrap();
    o
}

/// An `m.room.message` LPDU.
pub fn message(key: &SigningKey, hub: &str, room: &str, sender: &str, body: &str) -> Object {
    lpdu(
        key,
        json!({"room_id": room, "hub_server": hub, "type": "m.room.message", "sender": sender, "content": {"body": body}}),
    )
}

/// An `m.room.member` LPDU.
pub fn member(key: &SigningKey, hub: &str, room: &str, sender: &str, target: &str, membership: &str) -> Object {
    lpdu(
        key,
        json!({
            "room_id": room, "hub_server": hub, "type": "m.room.member", "sender": sender, "state_key": target,
            "content": {"membership": membership},
        }),
    )
}

/// The reference hash of an event or LPDU: its id, or its key in
/// `failed_pdus`.
pub fn id_of(o: &Object) -> String {
    event::event_id(RoomVersion::lm(), o).unwrap().to_string()
}

/// A request signed by `from` to `to`: the status and the JSON body (the
/// error body of a refusal; status 0 when no answer came).
pub async fn fed(from: &Server, to: &str, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let dest = ServerName::parse(to).unwrap();
    match from.node().fed.request(&dest, method, path, body, true).await {
        Ok(r) => (r.status.as_u16(), r.json(to).unwrap_or(Value::Null)),
        Err(e) => (e.status().map_or(0, |s| s.as_u16()), e.error_body().unwrap_or(Value::Null)),
    }
}

/// `PUT /send/{txn}` with `pdus` from `from` to `to`, sent again while `to`
/// is still busy with another transaction of `from`'s (`M_BAD_STATE`),
/// as a sender does.
pub async fn send_txn(from: &Server, to: &str, txn: &str, pdus: &[&Object]) -> (u16, Value) {
    let body = json!({ "pdus": pdus.iter().map(|o| Value::Object((*o).clone())).collect::<Vec<_>>() });
    let path = format!("{UNSTABLE}/send/{txn}");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (code, answer) = fed(from, to, Method::PUT, &path, Some(&body)).await;
        let busy = code == 400 && answer["errcode"] == "M_BAD_STATE";
        if !busy || tokio::time::Instant::now() > deadline {
            return (code, answer);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An event as `s` stored it.
pub fn stored(s: &Server, id: &str) -> Object {
    let rec = s.node().store.event(&EventId::parse(id).unwrap()).unwrap().unwrap_or_else(|| panic!("{id} is stored"));
    serde_json::from_slice(&rec.json).unwrap()
}

/// The event of `s`'s list of `room` that was built from `lpdu`.
pub fn event_for(s: &Server, room: &str, lpdu: &Object) -> Option<EventId> {
    let hash = &lpdu["hashes"]["lpdu"]["sha256"];
    s.list(room).into_iter().find(|id| stored(s, id.as_str()).get("hashes").map(|h| &h["lpdu"]["sha256"]) == Some(hash))
}
