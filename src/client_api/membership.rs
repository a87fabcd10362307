//! Membership changes from clients: join (by id or alias), invite, leave,
//! kick, ban, unban, knock, forget.
//!
//! A server that takes part in the room (hubs it or has a joined user)
//! sends membership events as ordinary events; one that does not uses the
//! make/send handshake with the hub (digest 7).

use serde_json::{json, Value};

use super::rooms::{draft, obj, room_id, submit};
use super::Call;
use crate::core::ids::{EventId, RoomId, ServerName, UserId};
use crate::core::json::Object;
use crate::core::rooms::StateView;
use crate::federation::Remote;
use crate::room::RoomView;
use crate::store::records::Membership;
use crate::store::{Batch, Op, StreamEntry};
use crate::wire::client::{MemberTarget, Reason, RoomIdAnswer};
use crate::wire::{self, Failure};

/// Whether this server takes part in the room.
pub fn participating(call: &Call, view: &RoomView) -> bool {
    view.is_hub(&call.server.name) || view.state.joined_members().any(|u| u.is_on(&call.server.name))
}

fn named_servers(call: &Call) -> Vec<ServerName> {
    call.query
        .iter()
        .filter(|(k, _)| k == "server_name" || k == "via")
        .filter_map(|(_, v)| ServerName::parse(v).ok())
        .collect()
}

/// A room id, or an alias resolved to one (another server's over
/// federation), with the servers the alias names to join through.
pub async fn resolve(call: &Call, id_or_alias: &str) -> Result<(RoomId, Vec<ServerName>), Failure> {
    if id_or_alias.starts_with('#') {
        return super::directory::resolve(call, id_or_alias).await;
    }
    Ok((room_id(id_or_alias)?, Vec::new()))
}

/// Servers to ask about a room we do not take part in: the caller's hints,
/// those its alias named, and the server an invite or knock of ours came
/// through.
fn candidates(call: &Call, user: &UserId, room: &RoomId, named: Vec<ServerName>) -> Result<Vec<ServerName>, Failure> {
    let mut servers = named_servers(call);
    servers.extend(named);
    if let Some(m) = call.server.store.membership(user, room)? {
        servers.extend(m.via()?);
    }
    Ok(Remote::candidates(room, &servers))
}

fn reason(call: &Call, content: &mut Object) -> Result<(), Failure> {
    let Reason { reason } = wire::read(call.body()?)?;
    if let Some(r) = reason {
        content.insert("reason".into(), json!(r));
    }
    Ok(())
}

async fn own_membership(call: &Call, room: &RoomId, membership: &str) -> Result<Option<EventId>, Failure> {
    let (user, _) = call.who()?;
    let Some(h) = call.server.rooms.find(room)? else { return Ok(None) };
    if !participating(call, &h.view()) {
        return Ok(None);
    }
    let mut content = obj(json!({ "membership": membership }));
    if membership == "join" {
        content.extend(super::profile::member_fields(call, user)?);
    }
    reason(call, &mut content)?;
    Ok(Some(submit(call, room, draft(user, "m.room.member", Some(user.as_str()), content)).await?))
}

pub async fn join(call: Call, room: &str) -> Result<Value, Failure> {
    let (room, named) = resolve(&call, room).await?;
    if own_membership(&call, &room, "join").await?.is_some() {
        return wire::to_json(&RoomIdAnswer { room_id: room.as_str() });
    }
    let (user, _) = call.who()?;
    let candidates = candidates(&call, user, &room, named)?;
    let extra = super::profile::member_fields(&call, user)?;
    call.server.remote.join(&room, user, &candidates, &extra).await?;
    wire::to_json(&RoomIdAnswer { room_id: room.as_str() })
}

/// invite, kick (`leave`), ban, unban (`leave` over `ban`).
pub async fn change_other(call: Call, room: &str, membership: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let room = room_id(room)?;
    let asked: MemberTarget = wire::read(call.body()?)?;
    let target =
        UserId::parse(asked.user_id).map_err(|e| Failure::bad_json(format!("user_id must be a user id: {e}")))?;
    if membership == "unban" {
        let view = call.server.view_of_joined(&room)?;
        if view.state.membership(target.as_str()) != "ban" {
            return Err(Failure::forbidden("The user is not banned"));
        }
    }
    let value = if membership == "unban" { "leave" } else { membership };
    let mut content = obj(json!({ "membership": value }));
    if let Some(r) = asked.reason {
        content.insert("reason".into(), json!(r));
    }
    submit(&call, &room, draft(user, "m.room.member", Some(target.as_str()), content)).await?;
    Ok(json!({}))
}

/// Records a membership this server learnt of outside any room list (an
/// invite rejected or a knock made through the handshake).
async fn note_membership(
    call: &Call,
    user: &UserId,
    room: &RoomId,
    m: Membership,
    event: Option<EventId>,
) -> Result<(), Failure> {
    let alloc = call.server.positions.allocate(1)?;
    let mut b = Batch::new();
    b.push(Op::PutMembership {
        user: user.clone(),
        room: room.clone(),
        membership: Membership { stream: alloc.first(), ..m },
    });
    if let Some(id) = event {
        b.push(Op::StreamEntry(StreamEntry { pos: alloc.first(), room: room.clone(), event: id }));
    }
    call.server.store.write(b)?;
    call.server.store.flush().await?;
    drop(alloc);
    Ok(())
}

pub async fn leave(call: Call, room: &str) -> Result<Value, Failure> {
    let room = room_id(room)?;
    if own_membership(&call, &room, "leave").await?.is_some() {
        return Ok(json!({}));
    }
    // Rejecting an invite, or retracting a knock, with the hub.
    let (user, _) = call.who()?;
    let m = call.server.store.membership(user, &room)?.ok_or_else(|| Failure::forbidden("You are not in this room"))?;
    if m.membership != "invite" && m.membership != "knock" {
        return Ok(json!({}));
    }
    let event = m.event()?;
    let candidates = candidates(&call, user, &room, Vec::new())?;
    call.server.remote.leave(&room, user, &candidates).await?;
    let left = Membership {
        membership: "leave".into(),
        via_server: m.via_server,
        room_version: m.room_version,
        ..Default::default()
    };
    note_membership(&call, user, &room, left, event).await?;
    Ok(json!({}))
}

pub async fn knock(call: Call, room: &str) -> Result<Value, Failure> {
    let (room, named) = resolve(&call, room).await?;
    if own_membership(&call, &room, "knock").await?.is_some() {
        return wire::to_json(&RoomIdAnswer { room_id: room.as_str() });
    }
    let (user, _) = call.who()?;
    let candidates = candidates(&call, user, &room, named)?;
    let mut extra = Object::new();
    reason(&call, &mut extra)?;
    let (hub, stripped, version) = call.server.remote.knock(&room, user, &candidates, &extra).await?;
    let m = Membership {
        membership: "knock".into(),
        invite_state_json: serde_json::to_vec(&stripped).unwrap_or_default(),
        via_server: hub.to_string(),
        room_version: version.to_owned(),
        ..Default::default()
    };
    note_membership(&call, user, &room, m, None).await?;
    wire::to_json(&RoomIdAnswer { room_id: room.as_str() })
}

/// `POST /rooms/{roomId}/forget`: the room leaves the user's sync.
pub async fn forget(call: Call, room: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let room = room_id(room)?;
    let m = call.server.store.membership(user, &room)?.ok_or_else(|| Failure::not_found("Unknown room"))?;
    if m.membership == "join" || m.membership == "invite" || m.membership == "knock" {
        return Err(Failure::BadRequest("Leave the room before forgetting it".into()));
    }
    let mut b = Batch::new();
    b.push(Op::PutMembership { user: user.clone(), room, membership: Membership { forgotten: true, ..m } });
    call.server.store.write(b)?;
    Ok(json!({}))
}
