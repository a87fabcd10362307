//! The room and user directories: `publicRooms` (this server's, or another
//! server's over federation), a room's listing (`directory/list/room`), and
//! `user_directory/search` over the users who share a room with the asker
//! or sit in a public room (Synapse's default scope).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::Call;
use crate::core::ids::{RoomId, ServerName, UserId};
use crate::core::rooms::StateView;
use crate::http::query_get;
use crate::store::{Batch, Op};
use crate::wire::public_rooms::PublicRoomsQuery;
use crate::wire::Failure;

/// `GET` (query) or `POST` (body) `publicRooms`.
pub async fn public_rooms(call: Call, post: bool) -> Result<Value, Failure> {
    let asked = PublicRoomsQuery::parse(&call.query, if post { Some(call.body()?) } else { None });
    if let Some(server) = query_get(&call.query, "server").filter(|s| *s != call.server.name.as_str()) {
        // Asking another server is for this server's users only.
        call.who()?;
        let server = ServerName::parse(server).map_err(|_| Failure::invalid_param("Not a server name"))?;
        return call.server.remote.public_rooms(&server, &asked.body()).await;
    }
    let (store, rooms) = (&*call.server.store, &call.server.rooms);
    Ok(crate::room::summary::public_rooms(store, rooms, asked.term.as_deref(), asked.offset()?, asked.limit)?)
}

fn room_id(room: &str) -> Result<RoomId, Failure> {
    RoomId::parse(room).map_err(|e| Failure::invalid_param(e.to_string()))
}

/// `GET directory/list/room/{roomId}`.
pub fn listing(call: Call, room: &str) -> Result<Value, Failure> {
    let room = room_id(room)?;
    if !call.server.rooms.knows(&room) {
        return Err(Failure::not_found("Unknown room"));
    }
    let public = call.server.store.is_published(&room)?;
    Ok(json!({"visibility": if public { "public" } else { "private" }}))
}

/// `PUT directory/list/room/{roomId}`: by a member whose power may set the
/// room's canonical alias, or a server admin.
pub async fn set_listing(call: Call, room: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let room = room_id(room)?;
    let visibility = call.body()?.get("visibility").and_then(Value::as_str).unwrap_or("public");
    let public = match visibility {
        "public" => true,
        "private" => false,
        _ => return Err(Failure::invalid_param("visibility is public or private")),
    };
    let view = call.server.rooms.find_view(&room)?.ok_or_else(|| Failure::not_found("Unknown room"))?;
    let admin = call.server.store.user(user)?.is_some_and(|u| u.admin);
    if !admin {
        if view.state.membership(user.as_str()) != "join" {
            return Err(Failure::forbidden("You are not in this room"));
        }
        let levels = crate::core::rooms::PowerLevels::from_state(&*view.state, view.version);
        if levels.user_level(user.as_str()) < levels.send_level("m.room.canonical_alias", true) {
            return Err(Failure::forbidden("You may not change this room's listing"));
        }
    }
    let mut b = Batch::new();
    b.push(Op::PublishRoom(room, public));
    call.server.store.write(b)?;
    call.server.store.flush().await?;
    Ok(json!({}))
}

/// `POST user_directory/search`.
pub fn search_users(call: Call) -> Result<Value, Failure> {
    let (me, _) = call.who()?;
    let body = call.body()?;
    let term = body
        .get("search_term")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::MissingParam("search_term is required".into()))?
        .to_lowercase();
    let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(10).clamp(1, 50) as usize;
    let mut rooms: Vec<RoomId> = call
        .server
        .store
        .memberships(me)?
        .into_iter()
        .filter(|(_, m)| m.membership == "join")
        .map(|(r, _)| r)
        .collect();
    rooms.extend(call.server.store.published_rooms()?);
    let mut found: BTreeMap<String, Value> = BTreeMap::new();
    let mut limited = false;
    for room in rooms {
        let Some(view) = call.server.rooms.find_view(&room)? else { continue };
        for user in view.state.joined_members() {
            if found.contains_key(user.as_str()) {
                continue;
            }
            let content = view.state.member(user.as_str()).map(|m| m.content().clone()).unwrap_or_default();
            let name = content.get("displayname").and_then(Value::as_str);
            if !user_matches(&user, name, &term) {
                continue;
            }
            if found.len() == limit {
                limited = true;
                break;
            }
            let mut entry = json!({"user_id": user.as_str()});
            if let Some(n) = name {
                entry["display_name"] = json!(n);
            }
            if let Some(a) = content.get("avatar_url").and_then(Value::as_str) {
                entry["avatar_url"] = json!(a);
            }
            found.insert(user.to_string(), entry);
        }
    }
    Ok(json!({"results": found.into_values().collect::<Vec<_>>(), "limited": limited}))
}

/// Every word of the term starts a word of the user's id or name.
fn user_matches(user: &UserId, name: Option<&str>, term: &str) -> bool {
    let haystack = format!("{} {}", user.as_str(), name.unwrap_or_default()).to_lowercase();
    let words: Vec<&str> = haystack.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    term.split_whitespace().all(|t| {
        let t = t.trim_start_matches('@');
        words.iter().any(|w| w.starts_with(t)) || haystack.contains(t)
    })
}
