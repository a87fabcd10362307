//! Typing notifications, read receipts, read markers and presence. Local
//! changes are recorded for sync and sent over federation as EDUs.

use std::time::Duration;

use serde_json::{json, Value};

use super::account_data::put_data;
use super::Call;
use crate::core::ids::{EventId, RoomId, UserId};
use crate::ephemeral::{record_side, Presence};
use crate::federation::edu;
use crate::room::RoomView;
use crate::store::records::side_entry::Kind;
use crate::store::records::Receipt;
use crate::sys::now_ms;
use crate::wire::client::{self as body, ReadMarkers, Typing};
use crate::wire::{self, Failure};

/// Longest typing notification a client may ask for.
const MAX_TYPING_MS: u64 = 120_000;

fn room_id(s: &str) -> Result<RoomId, Failure> {
    RoomId::parse(s).map_err(|e| Failure::invalid_param(e.to_string()))
}

/// The room, if the caller is joined to it.
fn joined_room(call: &Call, room: &str) -> Result<(UserId, std::sync::Arc<RoomView>), Failure> {
    let (user, _) = call.who()?;
    let room = room_id(room)?;
    let view = call.server.view_of_joined(&room)?;
    use crate::core::rooms::StateView;
    if view.state.membership(user.as_str()) != "join" {
        return Err(Failure::forbidden("You are not in this room"));
    }
    Ok((user.clone(), view))
}

/// `PUT /rooms/{roomId}/typing/{userId}`.
pub fn typing(call: Call, room: &str, user_id: &str) -> Result<Value, Failure> {
    let (user, view) = joined_room(&call, room)?;
    if user.as_str() != user_id {
        return Err(Failure::forbidden("You may only set your own typing state"));
    }
    let Typing { typing: on, timeout } = wire::read(call.body()?)?;
    let timeout = timeout.unwrap_or(30_000).min(MAX_TYPING_MS);
    let until = on.then(|| now_ms() + timeout as i64);
    let server = call.server.clone();
    if server.ephemeral.set_typing(&view.room_id, &user, until) || on {
        record_side(&*server.store, &server.positions, Kind::TypingRoom(view.room_id.to_string()))?;
    }
    server
        .remote
        .send_edu(&server.remote.room_destinations(&view, None), &edu::typing_edu(&view.room_id, &user, on))?;
    if on {
        // Clear the notification when its time is up, unless renewed.
        let room = view.room_id.clone();
        let task_server = server.clone();
        server.spawn(async move {
            tokio::time::sleep(Duration::from_millis(timeout)).await;
            if task_server.ephemeral.expire_typing(&room, &user) {
                let _ = record_side(&*task_server.store, &task_server.positions, Kind::TypingRoom(room.to_string()));
            }
        });
    }
    Ok(json!({}))
}

fn receipt_for(
    call: &Call,
    view: &RoomView,
    user: &UserId,
    kind: &str,
    event: &EventId,
    thread: &str,
) -> Result<(), Failure> {
    let rec = call.server.store.event(event)?.ok_or_else(|| Failure::not_found("Unknown event"))?;
    if rec.room_id != view.room_id.as_str() {
        return Err(Failure::not_found("The event is not in this room"));
    }
    if !thread.is_empty() {
        // A thread's receipt names an event of that thread (or its root).
        let of_event = match crate::push::unread::pushable(&rec) {
            Some(e) => Some(crate::push::unread::thread_of(&*call.server.store, &e)?),
            None => None,
        };
        if of_event.as_deref() != Some(thread) && event.as_str() != thread {
            return Err(Failure::invalid_param("The event is not in the thread thread_id names"));
        }
    }
    let receipt = Receipt { event_id: event.to_string(), ts: now_ms(), thread_id: thread.to_owned(), stream: 0 };
    crate::ephemeral::store_receipt(
        &*call.server.store,
        &call.server.positions,
        &view.room_id,
        kind,
        user,
        receipt.clone(),
    )?;
    // Private receipts stay on this server.
    if kind == "m.read" {
        let dests = call.server.remote.room_destinations(view, None);
        call.server.remote.send_edu(&dests, &edu::receipt_edu(&view.room_id, kind, user, event, &receipt))?;
    }
    Ok(())
}

/// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`.
pub async fn receipt(call: Call, room: &str, kind: &str, event: &str) -> Result<Value, Failure> {
    let (user, view) = joined_room(&call, room)?;
    let event = EventId::parse(event).map_err(|e| Failure::invalid_param(e.to_string()))?;
    match kind {
        "m.read" | "m.read.private" => {
            let body::Receipt { thread_id } = wire::read(call.body()?)?;
            let thread = thread_id.unwrap_or("");
            if thread_id.is_some_and(|t| t != crate::push::unread::MAIN && !t.starts_with('$')) {
                return Err(Failure::invalid_param("thread_id must be \"main\" or a thread root's event id"));
            }
            receipt_for(&call, &view, &user, kind, &event, thread)?;
        }
        "m.fully_read" => {
            let body::Receipt { thread_id } = wire::read(call.body()?)?;
            if thread_id.is_some() {
                return Err(Failure::invalid_param("m.fully_read is not a threaded receipt type"));
            }
            put_data(&call, &user, Some(&view.room_id), "m.fully_read", &json!({"event_id": event.as_str()})).await?;
        }
        _ => return Err(Failure::invalid_param("Unknown receipt type")),
    }
    Ok(json!({}))
}

/// `POST /rooms/{roomId}/read_markers`.
pub async fn read_markers(call: Call, room: &str) -> Result<Value, Failure> {
    let (user, view) = joined_room(&call, room)?;
    let markers: ReadMarkers = wire::read(call.body()?)?;
    let id = |e: Option<&str>| e.and_then(|e| EventId::parse(e).ok());
    if let Some(e) = id(markers.fully_read) {
        put_data(&call, &user, Some(&view.room_id), "m.fully_read", &json!({"event_id": e.as_str()})).await?;
    }
    for (kind, e) in [("m.read", markers.read), ("m.read.private", markers.read_private)] {
        if let Some(e) = id(e) {
            receipt_for(&call, &view, &user, kind, &e, "")?;
        }
    }
    Ok(json!({}))
}

/// Records a user's presence and tells the servers sharing a room.
pub fn set_presence(call: &Call, user: &UserId, state: &str, status_msg: Option<String>) -> Result<(), Failure> {
    let changed = call.server.ephemeral.presence(user).is_none_or(|p| p.state != state || p.status_msg != status_msg);
    let p = Presence { state: state.to_owned(), status_msg, last_active_ms: now_ms() };
    call.server.ephemeral.set_presence(user, p.clone());
    if changed {
        record_side(&*call.server.store, &call.server.positions, Kind::PresenceUser(user.to_string()))?;
        let dests = call.server.remote.sharing_servers(user);
        call.server.remote.send_edu(&dests, &edu::presence_edu(user, &p))?;
    }
    Ok(())
}

pub fn put_status(call: Call, user_id: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    if user.as_str() != user_id {
        return Err(Failure::forbidden("You may only set your own presence"));
    }
    let body::Presence { presence: state, status_msg } = wire::read(call.body()?)?;
    if !["online", "offline", "unavailable"].contains(&state) {
        return Err(Failure::bad_json("presence must be online, offline or unavailable"));
    }
    let msg = status_msg.map(str::to_owned);
    let user = user.clone();
    set_presence(&call, &user, state, msg)?;
    Ok(json!({}))
}

pub fn get_status(call: Call, user_id: &str) -> Result<Value, Failure> {
    call.who()?;
    let user = UserId::parse(user_id).map_err(|e| Failure::invalid_param(e.to_string()))?;
    match call.server.ephemeral.presence_event(&user) {
        Some(e) => Ok(e["content"].clone()),
        None => Ok(json!({"presence": "offline"})),
    }
}
