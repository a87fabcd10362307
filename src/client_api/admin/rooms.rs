//! Rooms through Synapse's admin paths: the list, one room's details, its
//! members and its state. lmx adds each room's hub and list length.

use serde_json::{json, Value};

use super::{backwards, ok, paging, Reply};
use crate::client_api::Call;
use crate::core::ids::RoomId;
use crate::core::rooms::StateView;
use crate::room::RoomView;
use crate::wire::Failure;

fn state_str(view: &RoomView, ty: &str, field: &str) -> Value {
    view.state
        .get(ty, "")
        .and_then(|e| e.content().get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map_or(Value::Null, |s| json!(s))
}

/// A room as Synapse's list shows it, with lmx's `hub` and `length`.
pub(super) fn entry(call: &Call, view: &RoomView) -> Result<Value, Failure> {
    let joined: Vec<_> = view.state.joined_members().collect();
    let local = joined.iter().filter(|u| u.server_name() == call.server.name).count();
    let create = view.state.get("m.room.create", "");
    Ok(json!({
        "room_id": view.room_id.as_str(),
        "name": state_str(view, "m.room.name", "name"),
        "canonical_alias": state_str(view, "m.room.canonical_alias", "alias"),
        "joined_members": joined.len(),
        "joined_local_members": local,
        "version": view.version.id,
        "creator": create.map(|e| json!(e.sender().as_str())).unwrap_or(Value::Null),
        "encryption": state_str(view, "m.room.encryption", "algorithm"),
        "federatable": create.is_none_or(|e| e.content().get("m.federate") != Some(&json!(false))),
        "public": call.server.store.is_published(&view.room_id)?,
        "join_rules": state_str(view, "m.room.join_rules", "join_rule"),
        "guest_access": state_str(view, "m.room.guest_access", "guest_access"),
        "history_visibility": state_str(view, "m.room.history_visibility", "history_visibility"),
        "state_events": view.state.len(),
        "room_type": create.and_then(|e| e.content().get("type").cloned()).unwrap_or(Value::Null),
        "hub": view.hub.as_str(),
        "hubbed_here": view.is_hub(&call.server.name),
        "length": view.length,
    }))
}

fn view_of(call: &Call, room: &str) -> Result<std::sync::Arc<RoomView>, Failure> {
    let id = RoomId::parse(room).map_err(|_| Failure::not_found("Room not found"))?;
    call.server.rooms.find_view(&id)?.ok_or_else(|| Failure::not_found("Room not found"))
}

/// Every room's view (rooms at rest are read from the store, not woken).
pub(super) fn views(call: &Call) -> Vec<std::sync::Arc<RoomView>> {
    call.server.rooms.ids().iter().filter_map(|id| call.server.rooms.get_view(id)).collect()
}

/// `GET /v1/rooms`: `from`, `limit`, `order_by`, `dir`, `search_term`
/// (name or alias substring, or the exact room id).
pub fn list(call: &Call) -> Result<Reply, Failure> {
    let (from, limit) = paging(call)?;
    let raw = crate::http::query_get(&call.query, "search_term");
    let term = raw.map(str::to_lowercase);
    if term.as_deref() == Some("") {
        return Err(Failure::invalid_param("search_term cannot be empty"));
    }
    let mut rooms: Vec<Value> = views(call).iter().map(|v| entry(call, v)).collect::<Result<_, _>>()?;
    if let Some(t) = &term {
        rooms.retain(|r| {
            let has = |k: &str| r[k].as_str().is_some_and(|s| s.to_lowercase().contains(t.as_str()));
            // Room ids are case-sensitive: the exact id, as given.
            has("name") || has("canonical_alias") || r["room_id"].as_str() == raw
        });
    }
    let order = crate::http::query_get(&call.query, "order_by").unwrap_or("name");
    // Counts sort largest first, as Synapse's do; names and ids A to Z.
    let (key, descending) = match order {
        "name" | "alphabetical" => ("name", false),
        "size" | "joined_members" => ("joined_members", true),
        "joined_local_members" | "state_events" | "version" => (order, true),
        "canonical_alias" | "creator" | "encryption" | "federatable" | "public" | "join_rules" | "guest_access"
        | "history_visibility" => (order, false),
        other => return Err(Failure::invalid_param(format!("order_by {other:?} is not supported"))),
    };
    rooms.sort_by(|a, b| {
        let by = |v: &Value| match &v[key] {
            Value::Number(n) => format!("{:020}", n.as_u64().unwrap_or(0)),
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            _ => String::new(),
        };
        by(a).cmp(&by(b)).then_with(|| a["room_id"].as_str().cmp(&b["room_id"].as_str()))
    });
    if descending != backwards(call)? {
        rooms.reverse();
    }
    let total = rooms.len();
    let page: Vec<Value> = rooms.into_iter().skip(from).take(limit).collect();
    let mut out = json!({"rooms": page, "offset": from, "total_rooms": total});
    if let Some(next) = super::next_from(from, limit, total) {
        out["next_batch"] = json!(next);
    }
    if from > 0 {
        out["prev_batch"] = json!(from.saturating_sub(limit));
    }
    ok(out)
}

/// `GET /v1/rooms/{room}`.
pub fn details(call: &Call, room: &str) -> Result<Reply, Failure> {
    let view = view_of(call, room)?;
    let mut out = entry(call, &view)?;
    out["avatar"] = state_str(&view, "m.room.avatar", "url");
    out["topic"] = state_str(&view, "m.room.topic", "topic");
    let tombstone = view.state.get("m.room.tombstone", "");
    out["tombstoned"] = json!(tombstone.is_some());
    out["replacement_room"] =
        tombstone.and_then(|e| e.content().get("replacement_room").cloned()).unwrap_or(Value::Null);
    out["forgotten"] = json!(false);
    let mut devices = 0;
    for user in view.state.joined_members().filter(|u| u.server_name() == call.server.name) {
        devices += call.server.store.devices(&user)?.len();
    }
    out["joined_local_devices"] = json!(devices);
    ok(out)
}

/// `GET /v1/rooms/{room}/members`: joined users.
pub fn members(call: &Call, room: &str) -> Result<Reply, Failure> {
    let view = view_of(call, room)?;
    let members: Vec<String> = view.state.joined_members().map(|u| u.to_string()).collect();
    ok(json!({"total": members.len(), "members": members}))
}

/// `GET /v1/rooms/{room}/state[?type=]`: current state, client format.
pub fn state(call: &Call, room: &str) -> Result<Reply, Failure> {
    let view = view_of(call, room)?;
    let only = crate::http::query_get(&call.query, "type");
    let state: Vec<Value> = view
        .state
        .iter()
        .filter(|e| only.is_none_or(|t| e.event_type() == t))
        .map(|e| crate::client_api::events::client_event(e.json(), e.event_id()))
        .collect();
    ok(json!({"state": state}))
}
