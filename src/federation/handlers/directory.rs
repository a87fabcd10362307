//! What other servers may ask of this server's directories: its public
//! rooms (`publicRooms`), its room aliases (`query/directory`) and its
//! users' profiles (`query/profile`).

use serde_json::{json, Value};

use super::super::inbound::Req;
use crate::core::ids::UserId;
use crate::http::query_get;
use crate::wire::public_rooms::PublicRoomsQuery;
use crate::wire::Failure;

pub fn public_rooms(req: Req, post: bool) -> Result<Value, Failure> {
    let asked = PublicRoomsQuery::parse(&req.query, post.then_some(&req.body));
    let (store, rooms) = (&*req.node.store, &req.node.rooms);
    Ok(crate::room::summary::public_rooms(store, rooms, asked.term.as_deref(), asked.offset()?, asked.limit)?)
}

pub fn query_directory(req: Req) -> Result<Value, Failure> {
    let alias = query_get(&req.query, "room_alias").ok_or_else(|| Failure::MissingParam("room_alias".into()))?;
    let not_found = || Failure::not_found("Room alias not found");
    let server = alias.split_once(':').map(|(_, s)| s).ok_or_else(not_found)?;
    if server != req.node.name.as_str() {
        return Err(not_found());
    }
    let room = req.node.store.alias(alias)?.ok_or_else(not_found)?.room()?;
    let mut servers = vec![req.node.name.to_string()];
    if let Some(view) = req.node.rooms.find_view(&room)? {
        let hub = view.hub.to_string();
        if !servers.contains(&hub) {
            servers.insert(0, hub);
        }
    }
    Ok(json!({"room_id": room.as_str(), "servers": servers}))
}

pub fn query_profile(req: Req) -> Result<Value, Failure> {
    let not_found = || Failure::not_found("Profile not found");
    let user = query_get(&req.query, "user_id").and_then(|u| UserId::parse(u).ok()).ok_or_else(not_found)?;
    if user.server_name() != req.node.name {
        return Err(not_found());
    }
    let rec = req.node.store.user(&user)?.filter(|r| !r.deactivated).ok_or_else(not_found)?;
    let field = query_get(&req.query, "field");
    let mut out = json!({});
    for (k, v) in [("displayname", &rec.displayname), ("avatar_url", &rec.avatar_url)] {
        if !v.is_empty() && field.is_none_or(|f| f == k) {
            out[k] = json!(v);
        }
    }
    Ok(out)
}
