//! Room reads for clients: state, single events, context, members, joined
//! rooms, and the client event format.
//!
//! A user may read a room when they have (or had) any membership in it.

use std::sync::Arc;

use serde_json::{json, Value};

use super::Call;
use super::ClientDeps;
use crate::core::ids::{EventId, RoomId};
use crate::core::json::{self, NumberPolicy, Object};
use crate::http::query_get;
use crate::room::RoomView;
use crate::store::records::EventRecord;
use crate::wire::Failure;

/// An event as clients see it.
pub fn client_event(obj: &Object, id: &EventId) -> Value {
    let mut e = Object::new();
    for k in ["type", "content", "sender", "origin_server_ts", "room_id", "state_key"] {
        if let Some(v) = obj.get(k) {
            e.insert(k.into(), v.clone());
        }
    }
    // Clients read `redacts` at the top level (where versions up to 10 put
    // it); later versions keep it in the content, and servers copy it up.
    if obj.get("type").and_then(Value::as_str) == Some("m.room.redaction") {
        let redacts = obj.get("redacts").or_else(|| obj.get("content").and_then(|c| c.get("redacts")));
        if let Some(r) = redacts.filter(|r| r.is_string()) {
            e.insert("redacts".into(), r.clone());
        }
    }
    e.insert("event_id".into(), json!(id.as_str()));
    let ts = obj.get("origin_server_ts").and_then(Value::as_i64).unwrap_or(0);
    e.insert("unsigned".into(), json!({ "age": super::rooms::age_of(ts) }));
    Value::Object(e)
}

pub fn record_event(rec: &EventRecord, id: &EventId) -> Option<Value> {
    if rec.pruned {
        return None;
    }
    let obj = json::parse_object(&rec.json, NumberPolicy::Ieee754).ok()?;
    Some(client_event(&obj, id))
}

/// A stored event in client format; `None` when hidden (soft-failed or
/// rejected) or not held here (pruned by a follower). A redacted event says
/// why.
pub fn load_client_event(server: &ClientDeps, id: &EventId) -> Result<Option<Value>, Failure> {
    let Some(rec) = server.store.event(id)?.filter(|r| !r.soft_failed && r.rejected.is_empty()) else {
        return Ok(None);
    };
    let Some(mut e) = record_event(&rec, id) else { return Ok(None) };
    if let Some(by) = rec.redacted_by_event()? {
        if let Some(because) = server.store.event(&by)?.and_then(|r| record_event(&r, &by)) {
            e["unsigned"]["redacted_because"] = because;
        }
    }
    Ok(Some(e))
}

pub fn readable_room(call: &Call, room: &str) -> Result<Arc<RoomView>, Failure> {
    let (user, _) = call.who()?;
    let room = RoomId::parse(room).map_err(|e| Failure::invalid_param(e.to_string()))?;
    if call.server.store.membership(user, &room)?.is_none() {
        return Err(Failure::forbidden("You are not in this room"));
    }
    call.server.view_of_joined(&room)
}

pub fn full_state(call: Call, room: &str) -> Result<Value, Failure> {
    let view = readable_room(&call, room)?;
    let events: Vec<Value> = view.state.iter().map(|p| client_event(p.json(), p.event_id())).collect();
    Ok(Value::Array(events))
}

pub fn state_event(call: Call, room: &str, ty: &str, key: &str) -> Result<Value, Failure> {
    use crate::core::rooms::StateView;
    let view = readable_room(&call, room)?;
    let e = view.state.get(ty, key).ok_or_else(|| Failure::not_found("Event not found"))?;
    Ok(Value::Object(e.content().clone()))
}

pub fn joined_rooms(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let rooms: Vec<String> = call
        .server
        .store
        .memberships(user)?
        .into_iter()
        .filter(|(_, m)| m.membership == "join")
        .map(|(r, _)| r.to_string())
        .collect();
    Ok(json!({ "joined_rooms": rooms }))
}

/// `GET /rooms/{roomId}/event/{eventId}`.
pub async fn event(call: Call, room: &str, id: &str) -> Result<Value, Failure> {
    let view = readable_room(&call, room)?;
    let (user, _) = call.who()?;
    let reader = call.server.remote.reader(&view, user).await?;
    let not_found = || Failure::not_found("Event not found");
    let id = EventId::parse(id).map_err(|_| not_found())?;
    let rec = call.server.store.event(&id)?.filter(|r| r.room_id == view.room_id.as_str());
    if rec.is_some_and(|r| r.pruned) {
        let pdus = call.server.remote.backfill(&view, &id, 1).await.map_err(Failure::Remote)?;
        let pdu = pdus.into_iter().find(|p| p.event_id() == &id).ok_or_else(not_found)?;
        // History the user may not read is not theirs to know of.
        return if reader.sees(&pdu)? { Ok(client_event(pdu.json(), pdu.event_id())) } else { Err(not_found()) };
    }
    if !super::messages::may_read(&call.server, &reader, &view, &id)? {
        return Err(not_found());
    }
    let mut event = load_client_event(&call.server, &id)?.ok_or_else(not_found)?;
    super::relations::bundle_into(&call.server, &view.room_id, user, &mut event)?;
    Ok(event)
}

/// `GET /rooms/{roomId}/context/{eventId}`: events around one, and the
/// state at the end.
pub async fn context(call: Call, room: &str, id: &str) -> Result<Value, Failure> {
    let view = readable_room(&call, room)?;
    let (user, _) = call.who()?;
    let reader = call.server.remote.reader(&view, user).await?;
    let readable = |id: &EventId| super::messages::may_read(&call.server, &reader, &view, id);
    let id = EventId::parse(id).map_err(|_| Failure::not_found("Event not found"))?;
    let rec = call.server.store.event(&id)?.filter(|r| r.room_id == view.room_id.as_str() && !r.outlier);
    let rec = rec.ok_or_else(|| Failure::not_found("Event not found"))?;
    if !readable(&id)? {
        return Err(Failure::not_found("Event not found"));
    }
    let mut event = load_client_event(&call.server, &id)?.ok_or_else(|| Failure::not_found("Event not found"))?;
    super::relations::bundle_into(&call.server, &view.room_id, user, &mut event)?;
    let limit = query_get(&call.query, "limit").and_then(|l| l.parse::<u64>().ok()).unwrap_or(10).min(100);
    let before_n = limit / 2;
    let after_n = limit - before_n;
    let load = |ids: Vec<EventId>| -> Result<Vec<Value>, Failure> {
        let mut out = Vec::new();
        for i in &ids {
            if !readable(i)? {
                continue;
            }
            if let Some(e) = load_client_event(&call.server, i)? {
                out.push(e);
            }
        }
        Ok(out)
    };
    let start = rec.index.saturating_sub(before_n);
    let mut before = load(call.server.store.list(&view.room_id, start, rec.index)?)?;
    before.reverse();
    let end = (rec.index + 1 + after_n).min(view.length);
    let after = load(call.server.store.list(&view.room_id, rec.index + 1, end)?)?;
    let state: Vec<Value> = view.state.iter().map(|p| client_event(p.json(), p.event_id())).collect();
    Ok(json!({
        "event": event,
        "events_before": before,
        "events_after": after,
        "start": format!("t{start}"),
        "end": format!("t{end}"),
        "state": state,
    }))
}

/// `GET /rooms/{roomId}/members` (`membership`, `not_membership`).
pub fn members(call: Call, room: &str) -> Result<Value, Failure> {
    let view = readable_room(&call, room)?;
    let only = query_get(&call.query, "membership");
    let not = query_get(&call.query, "not_membership");
    let chunk: Vec<Value> = view
        .state
        .iter()
        .filter(|p| p.event_type() == "m.room.member")
        .filter(|p| only.is_none_or(|m| p.membership() == Some(m)) && not.is_none_or(|m| p.membership() != Some(m)))
        .map(|p| client_event(p.json(), p.event_id()))
        .collect();
    Ok(json!({ "chunk": chunk }))
}

/// `GET /rooms/{roomId}/joined_members`.
pub fn joined_members(call: Call, room: &str) -> Result<Value, Failure> {
    let view = readable_room(&call, room)?;
    let mut joined = serde_json::Map::new();
    for p in view.state.iter().filter(|p| p.event_type() == "m.room.member" && p.membership() == Some("join")) {
        let c = p.content();
        joined.insert(
            p.state_key().unwrap_or_default().to_owned(),
            json!({"display_name": c.get("displayname"), "avatar_url": c.get("avatar_url")}),
        );
    }
    Ok(json!({ "joined": joined }))
}
