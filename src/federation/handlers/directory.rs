//! What other servers may ask of this server's directories: its public
//! rooms (`publicRooms`), its room aliases (`query/directory`) and its
//! users' profiles (`query/profile`).

use serde_json::{json, Value};

use super::super::inbound::Req;
use crate::core::ids::UserId;
use crate::http::query_get;
use crate::wire::Failure;

pub fn public_rooms(req: Req, post: bool) -> Result<Value, Failure> {
    let (limit, since, term) = if post {
        let limit = req.body.get("limit").and_then(Value::as_u64);
        let since = req.body.get("since").and_then(Value::as_str).map(str::to_owned);
        let term = req.body.get("filter").and_then(|f| f.get("generic_search_term")).and_then(Value::as_str);
        (limit, since, term.map(str::to_owned))
    } else {
        let limit = query_get(&req.query, "limit").and_then(|l| l.parse().ok());
        (limit, query_get(&req.query, "since").map(str::to_owned), None)
    };
    let limit = usize::try_from(limit.unwrap_or(100)).unwrap_or(500).clamp(1, 500);
    let since =
        since.map(|s| s.parse::<usize>().map_err(|_| Failure::invalid_param("Unknown since token"))).transpose()?;
    let node = &req.node;
    Ok(crate::room::summary::public_rooms(&*node.store, &node.rooms, term.as_deref(), since.unwrap_or(0), limit)?)
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
    if let Some(h) = req.node.rooms.find(&room)? {
        let hub = h.view().hub.to_string();
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
