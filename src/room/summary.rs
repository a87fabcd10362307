//! A room as directories show it (`publicRooms`, the user directory): its
//! name, topic, alias, avatar, rules and joined members, read from its
//! current state.

use serde_json::{json, Map, Value};

use super::RoomView;
use crate::core::rooms::StateView;

fn state_str(view: &RoomView, ty: &str, field: &str) -> Option<String> {
    view.state.get(ty, "")?.content().get(field)?.as_str().map(str::to_owned).filter(|s| !s.is_empty())
}

/// The `publicRooms` chunk entry of a room.
pub fn public_entry(view: &RoomView) -> Value {
    let mut e = Map::new();
    e.insert("room_id".into(), json!(view.room_id.as_str()));
    e.insert("num_joined_members".into(), json!(view.state.joined_members().count()));
    for (key, ty, field) in [
        ("name", "m.room.name", "name"),
        ("topic", "m.room.topic", "topic"),
        ("canonical_alias", "m.room.canonical_alias", "alias"),
        ("avatar_url", "m.room.avatar", "url"),
        ("room_type", "m.room.create", "type"),
    ] {
        if let Some(v) = state_str(view, ty, field) {
            e.insert(key.into(), json!(v));
        }
    }
    let visibility = state_str(view, "m.room.history_visibility", "history_visibility");
    e.insert("world_readable".into(), json!(visibility.as_deref() == Some("world_readable")));
    let guests = state_str(view, "m.room.guest_access", "guest_access");
    e.insert("guest_can_join".into(), json!(guests.as_deref() == Some("can_join")));
    e.insert("join_rule".into(), json!(view.state.join_rule()));
    Value::Object(e)
}

/// Whether a directory search term matches a room entry (name, topic,
/// alias, id), case-insensitively.
pub fn entry_matches(entry: &Value, term: &str) -> bool {
    let term = term.to_lowercase();
    ["name", "topic", "canonical_alias", "room_id"]
        .iter()
        .any(|k| entry.get(*k).and_then(Value::as_str).is_some_and(|v| v.to_lowercase().contains(&term)))
}

/// A page of this server's public room directory: entries matching
/// `term`, most joined members first, from offset `since`.
pub fn public_rooms(
    store: &dyn crate::store::Store,
    rooms: &super::Rooms,
    term: Option<&str>,
    since: usize,
    limit: usize,
) -> Result<Value, super::RoomError> {
    let mut entries: Vec<Value> = Vec::new();
    for id in store.published_rooms()? {
        if let Some(view) = rooms.find_view(&id)? {
            let entry = public_entry(&view);
            if term.is_none_or(|t| entry_matches(&entry, t)) {
                entries.push(entry);
            }
        }
    }
    entries
        .sort_by_key(|e| (std::cmp::Reverse(e["num_joined_members"].as_u64().unwrap_or(0)), e["room_id"].to_string()));
    let total = entries.len();
    let page: Vec<Value> = entries.into_iter().skip(since).take(limit).collect();
    let mut out = json!({"chunk": page, "total_room_count_estimate": total});
    if since + limit < total {
        out["next_batch"] = json!(format!("{}", since + limit));
    }
    if since > 0 {
        out["prev_batch"] = json!(format!("{}", since.saturating_sub(limit)));
    }
    Ok(out)
}

/// A space's children as the hierarchy API shows them: its
/// `m.space.child` state events with a non-empty `via`, stripped (with
/// their timestamps, which order children without an `order`).
pub fn children_state(view: &RoomView) -> Vec<Value> {
    let mut children: Vec<Value> = view
        .state
        .iter()
        .filter(|e| e.event_type() == "m.space.child")
        .filter(|e| e.content().get("via").and_then(Value::as_array).is_some_and(|v| !v.is_empty()))
        .map(|e| {
            let mut s = super::machine::stripped::strip(e);
            s["origin_server_ts"] = e.json().get("origin_server_ts").cloned().unwrap_or(json!(0));
            s
        })
        .collect();
    // The spec's order: a valid `order` first (lexicographic), then the
    // child event's time, then the room id.
    let order = |c: &Value| {
        let o =
            c["content"]["order"].as_str().filter(|o| o.len() <= 50 && o.chars().all(|ch| (' '..='~').contains(&ch)));
        (
            o.is_none(),
            o.unwrap_or("").to_owned(),
            c["origin_server_ts"].as_i64().unwrap_or(0),
            c["state_key"].to_string(),
        )
    };
    children.sort_by_key(order);
    children
}

/// A room's hierarchy entry: its directory entry with its children.
pub fn hierarchy_entry(view: &RoomView) -> Value {
    let mut e = public_entry(view);
    e["children_state"] = Value::Array(children_state(view));
    e
}

/// Whether anyone may look into a room from the outside: it is public,
/// knockable or world-readable.
pub fn open_to_peek(view: &RoomView) -> bool {
    let rule = view.state.join_rule();
    matches!(rule, "public" | "knock" | "knock_restricted")
        || state_str(view, "m.room.history_visibility", "history_visibility").as_deref() == Some("world_readable")
}
