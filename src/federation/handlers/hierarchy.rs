//! `GET /_matrix/federation/v1/hierarchy/{roomId}`: a space this server
//! holds and its direct children, for another server walking it. Rooms are
//! shown when open to peek or when the asking server has a member joined.

use serde_json::{json, Value};

use super::super::inbound::Req;
use crate::core::ids::RoomId;
use crate::http::query_get;
use crate::wire::Failure;

pub fn hierarchy(req: Req, room: &str) -> Result<Value, Failure> {
    let suggested_only = query_get(&req.query, "suggested_only") == Some("true");
    let id = RoomId::parse(room).map_err(|_| Failure::not_found("Unknown room"))?;
    let visible = |id: &RoomId| -> Result<Option<std::sync::Arc<crate::room::RoomView>>, Failure> {
        let Some(view) = req.node.rooms.find_view(id)? else { return Ok(None) };
        let theirs = view.state.joined_members().any(|u| u.server_name() == req.origin);
        Ok((theirs || crate::room::summary::open_to_peek(&view)).then_some(view))
    };
    let view = visible(&id)?.ok_or_else(|| Failure::not_found("Unknown room"))?;
    let room_entry = crate::room::summary::hierarchy_entry(&view);
    let mut children = Vec::new();
    let mut inaccessible = Vec::new();
    for child in room_entry["children_state"].as_array().into_iter().flatten() {
        if suggested_only && child["content"]["suggested"] != json!(true) {
            continue;
        }
        let Some(child_id) = child["state_key"].as_str().and_then(|s| RoomId::parse(s).ok()) else { continue };
        match visible(&child_id)? {
            Some(v) => children.push(crate::room::summary::public_entry(&v)),
            None if req.node.rooms.knows(&child_id) => inaccessible.push(json!(child_id.as_str())),
            None => {}
        }
    }
    Ok(json!({"room": room_entry, "children": children, "inaccessible_children": inaccessible}))
}
