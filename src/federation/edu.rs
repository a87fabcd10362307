//! EDUs: typing, read receipts, presence, to-device messages and device
//! lists (digest 10; OQ-33, OQ-34; items 202, 203, 205).
//!
//! EDUs go straight to the servers concerned, never through a room's hub:
//! typing and receipts to every server with a user joined to the room,
//! presence and device lists to every server sharing a room with the user,
//! to-device messages to the target's server. Each EDU carries both `type`
//! (LM) and `edu_type` (Matrix) and the LM `sender`, with Matrix's content
//! for typing, receipts and presence, and LM's for to-device messages
//! and device objects sent to LM servers.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::core::ids::{EventId, RoomId, ServerName, UserId};
use crate::core::rooms::StateView;
use crate::ephemeral::{record_side, Presence};
use crate::federation::Node;
use crate::room::RoomView;
use crate::store::records::queue_item::Item;
use crate::store::records::side_entry::Kind;
use crate::store::records::{QueueItem, Receipt};
use crate::store::{Batch, Op, StoreError};
use crate::sys::now_ms;
use crate::wire::federation::Edu;

/// How long a remote typing notification lasts without a refresh.
const REMOTE_TYPING_MS: i64 = 30_000;

fn edu(kind: &str, sender: &str, content: Value) -> Value {
    json!({ "edu_type": kind, "type": kind, "sender": sender, "content": content })
}

pub fn typing_edu(room: &RoomId, user: &UserId, typing: bool) -> Value {
    edu("m.typing", user.as_str(), json!({"room_id": room.as_str(), "user_id": user.as_str(), "typing": typing}))
}

pub fn receipt_edu(room: &RoomId, kind: &str, user: &UserId, event: &EventId, r: &Receipt) -> Value {
    let mut data = json!({ "ts": r.ts });
    if !r.thread_id.is_empty() {
        data["thread_id"] = json!(r.thread_id);
    }
    let content =
        json!({ room.as_str(): { kind: { user.as_str(): { "event_ids": [event.as_str()], "data": data } } } });
    edu("m.receipt", user.as_str(), content)
}

pub fn presence_edu(user: &UserId, p: &Presence) -> Value {
    let mut entry = json!({
        "user_id": user.as_str(),
        "presence": p.state,
        "last_active_ago": (now_ms() - p.last_active_ms).max(0),
        "currently_active": p.state == "online",
    });
    if let Some(m) = &p.status_msg {
        entry["status_msg"] = json!(m);
    }
    edu("m.presence", user.as_str(), json!({ "push": [entry] }))
}

/// LM's `m.direct_to_device` (§10): one message for one device. The
/// content's `message_id` is not the draft's: it lets the receiver take a
/// resent transaction's message once.
pub fn lm_to_device_edu(
    sender: &UserId,
    message_type: &str,
    message_id: &str,
    target: &UserId,
    target_device: &str,
    message: Value,
) -> Value {
    let content = json!({
        "target": target.as_str(),
        "target_device": target_device,
        "message_type": message_type,
        "message": message,
        "message_id": message_id,
    });
    edu("m.direct_to_device", sender.as_str(), content)
}

/// LM's `m.device_list_update` (§10): the user's changed device objects
/// whole, and the ids of removed devices.
pub fn lm_device_list_edu(user: &UserId, changed: Vec<Value>, removed: Vec<String>) -> Value {
    edu("m.device_list_update", user.as_str(), json!({ "changed": changed, "removed": removed }))
}

/// Queues an EDU for each destination (durably, like PDUs).
pub fn send_edu(node: &Arc<Node>, dests: &BTreeSet<ServerName>, edu: &Value) -> Result<(), StoreError> {
    if dests.is_empty() {
        return Ok(());
    }
    let alloc = node.positions.allocate(1)?;
    let mut b = Batch::new();
    queue_edu(dests, alloc.first(), edu, &mut b);
    node.store.write(b)?;
    drop(alloc);
    for d in dests {
        node.outbound.wake(node, d);
    }
    Ok(())
}

/// The writes that queue `edu` for each of `dests` at position `pos`, for
/// a caller who commits them with its own (then wakes the destinations).
pub fn queue_edu(dests: &BTreeSet<ServerName>, pos: u64, edu: &Value, b: &mut Batch) {
    let item = match edu.as_object().and_then(crate::core::json::object_canonical_in_both_forms) {
        Some(bytes) => Item::EduCanonical(bytes),
        None => Item::EduJson(serde_json::to_vec(edu).unwrap_or_default()),
    };
    for d in dests {
        b.push(Op::Enqueue { dest: d.clone(), pos, item: QueueItem { item: Some(item.clone()) } });
    }
}

fn joined_servers(view: &RoomView) -> BTreeSet<ServerName> {
    view.state.joined_members().map(|u| u.server_name()).collect()
}

/// Where a room EDU from this server goes: every server with a joined
/// user, directly (item 202).
pub fn room_destinations(node: &Node, view: &RoomView, except: Option<&ServerName>) -> BTreeSet<ServerName> {
    let mut out = joined_servers(view);
    out.remove(&node.name);
    if let Some(e) = except {
        out.remove(e);
    }
    out
}

/// Servers sharing a room with `user` (a local user): where presence and
/// device list changes go. The
/// user's own memberships name the rooms, so rooms they are not in stay at
/// rest.
pub fn sharing_servers(node: &Node, user: &UserId) -> BTreeSet<ServerName> {
    let mut out = BTreeSet::new();
    let joined = match node.store.memberships(user) {
        Ok(m) => m.into_iter().filter(|(_, m)| m.membership == "join").map(|(room, _)| room),
        Err(e) => {
            tracing::warn!(%user, error = %e, "no presence sent: memberships unreadable");
            return out;
        }
    };
    for room in joined {
        let Some(view) = node.rooms.get_view(&room) else { continue };
        if view.state.membership(user.as_str()) == "join" {
            out.extend(joined_servers(&view));
        }
    }
    out.remove(&node.name);
    out
}

/// EDUs from a `/send`. A user's EDU is accepted from the user's own
/// server, or from the room's hub (lmx hubs relayed their participants'
/// typing and receipts before these went directly).
///
/// To-device messages are kept durably: a store failure there fails the
/// whole transaction, so the sender sends it again (the messages' ids keep
/// them from arriving twice).
pub async fn receive(node: &Arc<Node>, origin: &ServerName, edus: &[Value]) -> Result<(), StoreError> {
    // Positions held until the flush: no sync shows a message before it is
    // on disk.
    let mut kept = Vec::new();
    for e in edus {
        let edu = match Edu::deserialize(e) {
            Ok(edu) => edu,
            Err(why) => {
                tracing::debug!(%origin, error = %why, "malformed EDU ignored");
                continue;
            }
        };
        let (kind, sender) = (edu.kind(), edu.sender());
        let content = edu.content.map_or(Value::Null, Value::Object);
        let result = match kind {
            "m.typing" => typing(node, origin, &content),
            "m.receipt" => receipts(node, origin, &content),
            "m.presence" => presence(node, origin, &content),
            "m.device_list_update" if is_lm_device_list(&content) => lm_device_list(node, origin, sender, &content)?,
            "m.device_list_update" | "m.signing_key_update" => {
                let taken = if kind == "m.device_list_update" {
                    super::device_lists::device_list_update(node, origin, &content)?
                } else {
                    super::device_lists::signing_key_update(node, origin, &content)?
                };
                match taken {
                    super::device_lists::Outcome::Taken(alloc) => {
                        kept.extend(alloc);
                        Ok(())
                    }
                    super::device_lists::Outcome::Refused(why) => Err(why),
                }
            }
            "m.direct_to_device" => match direct_to_device(node, origin, sender, &content) {
                Ok(alloc) => {
                    kept.extend(alloc);
                    Ok(())
                }
                Err(ToDeviceRefused::Store(e)) => return Err(e),
                Err(ToDeviceRefused::Bad(why)) => Err(why),
            },
            _ => Ok(()),
        };
        if let Err(err) = result {
            tracing::debug!(%origin, kind, error = %err, "EDU ignored");
        }
    }
    // To-device messages are acknowledged with the transaction: on disk
    // first, so a crash loses none the sender thinks delivered.
    if !kept.is_empty() {
        node.store.flush().await?;
    }
    Ok(())
}

enum ToDeviceRefused {
    /// Malformed or not the origin's to send: ignored, as other EDUs.
    Bad(String),
    Store(StoreError),
}

impl From<StoreError> for ToDeviceRefused {
    fn from(e: StoreError) -> Self {
        ToDeviceRefused::Store(e)
    }
}

/// The room's view, if `user` is joined and `origin` may speak for them.
fn room_for(node: &Node, origin: &ServerName, room: &str, user: &UserId) -> Result<Arc<RoomView>, String> {
    let room = RoomId::parse(room).map_err(|e| e.to_string())?;
    let view = node.rooms.get_view(&room).ok_or("unknown room")?;
    if !(user.is_on(origin) || &view.hub == origin) {
        return Err(format!("{origin} may not speak for {user}"));
    }
    if view.state.membership(user.as_str()) != "join" {
        return Err(format!("{user} is not joined"));
    }
    Ok(view)
}

fn typing(node: &Arc<Node>, origin: &ServerName, c: &Value) -> Result<(), String> {
    let user = UserId::parse(c.get("user_id").and_then(Value::as_str).unwrap_or("")).map_err(|e| e.to_string())?;
    let view = room_for(node, origin, c.get("room_id").and_then(Value::as_str).unwrap_or(""), &user)?;
    let on = c.get("typing").and_then(Value::as_bool).unwrap_or(false);
    let until = on.then(|| now_ms() + REMOTE_TYPING_MS);
    if node.ephemeral.set_typing(&view.room_id, &user, until) {
        record_side(&*node.store, &node.positions, Kind::TypingRoom(view.room_id.to_string()))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A receipt's thread: none, the main timeline, or an event of the room
/// held here (each receipt of a thread is a row of its own).
fn known_thread(node: &Node, room: &crate::core::ids::RoomId, thread: &str) -> bool {
    if thread.is_empty() || thread == "main" {
        return true;
    }
    let Ok(id) = EventId::parse(thread) else { return false };
    node.store.event(&id).ok().flatten().is_some_and(|rec| rec.room_id == room.as_str())
}

fn receipts(node: &Arc<Node>, origin: &ServerName, c: &Value) -> Result<(), String> {
    let rooms = c.as_object().ok_or("receipt content is not an object")?;
    for (room, kinds) in rooms {
        // Only public read receipts travel between servers; other kinds
        // would be rows a peer could add without end.
        for (kind, users) in kinds.as_object().into_iter().flatten().filter(|(k, _)| *k == "m.read") {
            for (user, r) in users.as_object().into_iter().flatten() {
                let Ok(user) = UserId::parse(user) else { continue };
                let Ok(view) = room_for(node, origin, room, &user) else { continue };
                let Some(event) = r.get("event_ids").and_then(|e| e.get(0)).and_then(Value::as_str) else { continue };
                let Ok(event) = EventId::parse(event) else { continue };
                let data = r.get("data");
                let thread = data.and_then(|d| d.get("thread_id")).and_then(Value::as_str).unwrap_or("");
                if !known_thread(node, &view.room_id, thread) {
                    continue;
                }
                let receipt = Receipt {
                    event_id: event.to_string(),
                    ts: data.and_then(|d| d.get("ts")).and_then(Value::as_i64).unwrap_or_else(now_ms),
                    thread_id: thread.to_owned(),
                    stream: 0,
                };
                crate::ephemeral::store_receipt(
                    &*node.store,
                    &node.positions,
                    &view.room_id,
                    kind,
                    &user,
                    receipt.clone(),
                )
                .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

fn presence(node: &Arc<Node>, origin: &ServerName, c: &Value) -> Result<(), String> {
    for entry in c.get("push").and_then(Value::as_array).into_iter().flatten() {
        let Ok(user) = UserId::parse(entry.get("user_id").and_then(Value::as_str).unwrap_or("")) else { continue };
        if !user.is_on(origin) {
            continue;
        }
        let ago = entry.get("last_active_ago").and_then(Value::as_i64).unwrap_or(0);
        let p = Presence {
            state: entry.get("presence").and_then(Value::as_str).unwrap_or("offline").to_owned(),
            status_msg: entry.get("status_msg").and_then(Value::as_str).map(str::to_owned),
            last_active_ms: now_ms() - ago,
        };
        // Only a change is news for /sync (servers repeat "online" often).
        let changed =
            node.ephemeral.presence(&user).is_none_or(|old| old.state != p.state || old.status_msg != p.status_msg);
        node.ephemeral.set_presence(&user, p);
        if changed {
            record_side(&*node.store, &node.positions, Kind::PresenceUser(user.to_string()))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// To-device messages from a user of `origin` to ours: into the devices'
/// inboxes once per `message_id` (a transaction may come again when its
/// answer was lost), with the mark in the same write.
///
/// Matrix's form batches messages under `messages`; LM's (§10) carries
/// one, for `target`'s `target_device`, with the sender on the envelope.
/// Messages for unknown users or devices are dropped (item 205).
fn direct_to_device(
    node: &Arc<Node>,
    origin: &ServerName,
    envelope_sender: Option<&str>,
    c: &Value,
) -> Result<Option<crate::store::Allocation>, ToDeviceRefused> {
    let bad = |why: String| ToDeviceRefused::Bad(why);
    let text = |f: &str| c.get(f).and_then(Value::as_str).ok_or_else(|| bad(format!("no {f}")));
    let lm = c.get("target").is_some() && c.get("messages").is_none();
    let sender = if lm { envelope_sender.ok_or_else(|| bad("no sender".into()))? } else { text("sender")? };
    let sender = UserId::parse(sender).map_err(|e| bad(e.to_string()))?;
    if !sender.is_on(origin) {
        return Err(bad(format!("{sender} is not a user of {origin}")));
    }
    let event_type = if lm { text("message_type")? } else { text("type")? };
    // LM's form needs no id; without one, the transaction's id alone keeps
    // a resent message from arriving twice.
    let message_id = if lm { c.get("message_id").and_then(Value::as_str) } else { Some(text("message_id")?) };
    if message_id.is_some_and(|m| m.chars().count() > 32) {
        return Err(bad("message_id longer than 32 characters".into()));
    }
    if let Some(id) = message_id {
        if node.e2ee.seen(origin, id)? {
            return Ok(None);
        }
    }
    let mut batch = node.e2ee.to_device_batch(sender.as_str(), event_type);
    let mut add = |user: &str, device: &str, content: &Value| -> Result<(), ToDeviceRefused> {
        let Ok(user) = UserId::parse(user) else { return Ok(()) };
        // A wildcard is Matrix's; an LM message names one device.
        if node.is_me(&user.server_name()) && !(lm && device == "*") {
            if let Some(content) = content.as_object() {
                batch.add(&user, device, content)?;
            }
        }
        Ok(())
    };
    if lm {
        add(text("target")?, text("target_device")?, c.get("message").unwrap_or(&Value::Null))?;
    } else {
        for (user, devices) in c.get("messages").and_then(Value::as_object).into_iter().flatten() {
            for (device, content) in devices.as_object().into_iter().flatten() {
                add(user, device, content)?;
            }
        }
    }
    if batch.is_empty() {
        // Nothing here for it: no mark either, so a stranger's EDUs for no
        // one leave nothing behind.
        return Ok(None);
    }
    let alloc = node.positions.allocate(1)?;
    let mark =
        message_id.map(|id| Op::ToDeviceSeen { origin: origin.clone(), message_id: id.to_owned(), ts: now_ms() });
    batch.write(alloc.first(), mark)?;
    Ok(Some(alloc))
}

/// LM's device-list update carries device objects, Matrix's one device's
/// keys with stream ids.
fn is_lm_device_list(c: &Value) -> bool {
    (c.get("changed").is_some() || c.get("removed").is_some()) && c.get("device_id").is_none()
}

/// An LM `m.device_list_update` (item 203): the sender's device objects
/// kept as their server gives them.
fn lm_device_list(
    node: &Arc<Node>,
    origin: &ServerName,
    sender: Option<&str>,
    c: &Value,
) -> Result<Result<(), String>, StoreError> {
    let Some(sender) = sender.and_then(|s| UserId::parse(s).ok()) else {
        return Ok(Err("no sender".into()));
    };
    if !sender.is_on(origin) || node.is_me(origin) {
        return Ok(Err(format!("{sender} is not a user of {origin}")));
    }
    let changed = c.get("changed").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let removed: Vec<&str> =
        c.get("removed").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let mut b = crate::store::Batch::new();
    let _guard = node.e2ee.lock(&sender);
    if let Err(why) = node.e2ee.stage_remote_device_objects(&sender, changed, &removed, &mut b) {
        return Ok(Err(why));
    }
    node.store.write(b)?;
    Ok(Ok(()))
}
