//! Room aliases (`/directory/room/{alias}`): this server's kept here,
//! other servers' asked of them over federation.

use serde_json::{json, Value};

use super::Call;
use crate::core::ids::{RoomId, ServerName};
use crate::store::records::AliasRecord;
use crate::store::{Batch, Op};
use crate::wire::{Failure, Taken};

/// The server of a well-formed `#local:server`.
fn alias_server(alias: &str) -> Result<&str, Failure> {
    let bad = || Failure::invalid_param("An alias is #localpart:server");
    let rest = alias.strip_prefix('#').ok_or_else(bad)?;
    let (local, server) = rest.split_once(':').ok_or_else(bad)?;
    if local.is_empty() || local.len() > 200 || local.chars().any(|c| c.is_whitespace() || c == ':') {
        return Err(bad());
    }
    Ok(server)
}

/// `#local:server` with `server` this one.
fn local_alias(call: &Call, alias: &str) -> Result<String, Failure> {
    if alias_server(alias)? != call.server.name.as_str() {
        return Err(Failure::invalid_param("Only aliases of this server can be changed here"));
    }
    Ok(alias.to_owned())
}

/// The room an alias names and servers to join it through.
pub async fn resolve(call: &Call, alias: &str) -> Result<(RoomId, Vec<ServerName>), Failure> {
    if alias_server(alias)? != call.server.name.as_str() {
        return call.server.remote.resolve_alias(alias).await;
    }
    let rec = call.server.store.alias(alias)?.ok_or_else(|| Failure::not_found("Room alias not found"))?;
    let room = rec.room()?;
    let mut servers = vec![call.server.name.clone()];
    if let Some(view) = call.server.rooms.find_view(&room)? {
        let hub = view.hub.clone();
        if !servers.contains(&hub) {
            servers.insert(0, hub);
        }
    }
    Ok((room, servers))
}

pub async fn get(call: Call, alias: &str) -> Result<Value, Failure> {
    let (room, servers) = resolve(&call, alias).await?;
    let servers: Vec<&str> = servers.iter().map(ServerName::as_str).collect();
    Ok(json!({"room_id": room.as_str(), "servers": servers}))
}

/// Creates an alias; also used by `createRoom`'s `room_alias_name`.
pub fn create(call: &Call, alias: &str, room: &RoomId) -> Result<(), Failure> {
    let (user, _) = call.who()?;
    let alias = local_alias(call, alias)?;
    if call.server.store.alias(&alias)?.is_some() {
        return Err(Failure::Taken(Taken::Alias));
    }
    if !call.server.rooms.knows(room) {
        return Err(Failure::not_found("Unknown room"));
    }
    let mut b = Batch::new();
    b.push(Op::PutAlias { alias, record: AliasRecord { room_id: room.to_string(), creator: user.to_string() } });
    call.server.store.write(b)?;
    Ok(())
}

pub fn put(call: Call, alias: &str) -> Result<Value, Failure> {
    let room = call
        .body()?
        .get("room_id")
        .and_then(Value::as_str)
        .and_then(|r| RoomId::parse(r).ok())
        .ok_or_else(|| Failure::bad_json("room_id is required"))?;
    create(&call, alias, &room)?;
    Ok(json!({}))
}

pub fn delete(call: Call, alias: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let alias = local_alias(&call, alias)?;
    let rec = call.server.store.alias(&alias)?.ok_or_else(|| Failure::not_found("Room alias not found"))?;
    let admin = call.server.store.user(user)?.is_some_and(|u| u.admin);
    if rec.creator != user.as_str() && !admin {
        return Err(Failure::forbidden("Only the alias's creator may remove it"));
    }
    let mut b = Batch::new();
    b.push(Op::DeleteAlias(alias));
    call.server.store.write(b)?;
    Ok(json!({}))
}
