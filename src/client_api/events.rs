//! Room reads for clients: state, history (`/messages`), joined rooms, and
//! the client event format.
//!
//! History tokens are `t<list position>`; a user may read a room's history
//! when they have (or had) any membership in it.

use serde_json::{json, Value};

use super::Call;
use crate::core::ids::{EventId, RoomId};
use crate::core::json::{self, NumberPolicy, Object};
use crate::core::rooms::StateView;
use crate::http::{query_get, ApiError};
use crate::node::Node;
use crate::room::RoomView;
use crate::store::records::EventRecord;

/// An event as clients see it.
pub fn client_event(obj: &Object, id: &EventId) -> Value {
    let mut e = Object::new();
    for k in ["type", "content", "sender", "origin_server_ts", "room_id", "state_key"] {
        if let Some(v) = obj.get(k) {
            e.insert(k.into(), v.clone());
        }
    }
    e.insert("event_id".into(), json!(id.as_str()));
    let ts = obj.get("origin_server_ts").and_then(Value::as_i64).unwrap_or(0);
    e.insert("unsigned".into(), json!({ "age": super::rooms::age_of(ts) }));
    Value::Object(e)
}

pub fn record_event(rec: &EventRecord, id: &EventId) -> Option<Value> {
    let obj = json::parse_object(&rec.json, NumberPolicy::Ieee754).ok()?;
    Some(client_event(&obj, id))
}

/// A stored event in client format, unless it is hidden (soft-failed).
pub fn load_client_event(node: &Node, id: &EventId) -> Result<Option<Value>, ApiError> {
    Ok(node.store.event(id)?.filter(|r| !r.soft_failed).and_then(|r| record_event(&r, id)))
}

fn readable_room(call: &Call, room: &str) -> Result<std::sync::Arc<RoomView>, ApiError> {
    let (user, _) = call.who()?;
    let room = RoomId::parse(room)
        .map_err(|e| ApiError::new(http::StatusCode::BAD_REQUEST, "M_INVALID_PARAM", e.to_string()))?;
    let not_in = || ApiError::forbidden("You are not in this room");
    if call.node.store.membership(user, &room)?.is_none() {
        return Err(not_in());
    }
    call.node.rooms.get(&room).map(|h| h.view()).ok_or_else(not_in)
}

pub fn full_state(call: Call, room: &str) -> Result<Value, ApiError> {
    let view = readable_room(&call, room)?;
    let events: Vec<Value> = view.state.iter().map(|p| client_event(p.json(), p.event_id())).collect();
    Ok(Value::Array(events))
}

pub fn state_event(call: Call, room: &str, ty: &str, key: &str) -> Result<Value, ApiError> {
    let view = readable_room(&call, room)?;
    let e = view.state.get(ty, key).ok_or_else(|| ApiError::not_found("Event not found"))?;
    Ok(Value::Object(e.content().clone()))
}

pub fn joined_rooms(call: Call) -> Result<Value, ApiError> {
    let (user, _) = call.who()?;
    let rooms: Vec<String> = call
        .node
        .store
        .memberships(user)?
        .into_iter()
        .filter(|(_, m)| m.membership == "join")
        .map(|(r, _)| r.to_string())
        .collect();
    Ok(json!({ "joined_rooms": rooms }))
}

pub fn parse_index_token(t: &str) -> Option<u64> {
    t.strip_prefix('t')?.parse().ok()
}

/// `GET /rooms/{id}/messages`: `dir=b` walks back from `from` (exclusive),
/// `dir=f` forward from it (inclusive); `end` is absent when nothing more.
pub fn messages(call: Call, room: &str) -> Result<Value, ApiError> {
    let view = readable_room(&call, room)?;
    let forward = query_get(&call.query, "dir") == Some("f");
    let limit = query_get(&call.query, "limit").and_then(|l| l.parse::<u64>().ok()).unwrap_or(10).clamp(1, 1000);
    let from = match query_get(&call.query, "from") {
        Some(t) => parse_index_token(t)
            .ok_or_else(|| ApiError::new(http::StatusCode::BAD_REQUEST, "M_INVALID_PARAM", "Unknown token"))?,
        None if forward => 0,
        None => view.length,
    }
    .min(view.length);
    let to = query_get(&call.query, "to").and_then(parse_index_token);
    let (start, end) = if forward {
        (from, (from + limit).min(to.unwrap_or(u64::MAX)).min(view.length))
    } else {
        (from.saturating_sub(limit).max(to.unwrap_or(0)), from)
    };
    let ids = call.node.store.list(&view.room_id, start, end)?;
    let mut chunk = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(e) = load_client_event(&call.node, id)? {
            chunk.push(e);
        }
    }
    if !forward {
        chunk.reverse();
    }
    let mut out = json!({ "chunk": chunk, "start": format!("t{from}") });
    let more = if forward { end < view.length && to.is_none_or(|t| end < t) } else { start > to.unwrap_or(0) };
    if more {
        out["end"] = json!(format!("t{}", if forward { end } else { start }));
    }
    Ok(out)
}
