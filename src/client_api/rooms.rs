//! Room writes: create, join, invite, leave, send, state.

use std::time::Duration;

use serde_json::{json, Value};

use super::Call;
use crate::core::event::{RoomVersion, LM_VERSION};
use crate::core::ids::{EventId, RoomId, UserId};
use crate::core::json::Object;
use crate::room::{Draft, LocalOutcome, RoomCmd, RoomError};
use crate::sys::{now_ms, random_string};
use crate::wire::client::{CreateRoom, EventIdAnswer, RoomIdAnswer};
use crate::wire::{self, Failure, Taken};

pub(super) fn room_id(s: &str) -> Result<RoomId, Failure> {
    RoomId::parse(s).map_err(|e| Failure::invalid_param(e.to_string()))
}

/// Hands a local user's event to its room and waits until it is sequenced:
/// at once on a hub; on a participant when the hub's echo arrives, or a
/// retryable error after `client.send_wait_ms` (the LPDU stays queued and a
/// retry with the same transaction id picks it up).
pub async fn submit(call: &Call, room: &RoomId, draft: Draft) -> Result<EventId, Failure> {
    let started = std::time::Instant::now();
    let id = sequence(call, room, draft).await?;
    tracing::debug!(%room, event = %id, answered_us = started.elapsed().as_micros() as u64, "client event answered");
    Ok(id)
}

async fn sequence(call: &Call, room: &RoomId, draft: Draft) -> Result<EventId, Failure> {
    let handle = call.server.rooms.find(room)?.ok_or_else(|| Failure::forbidden("You are not in this room"))?;
    let outcome = handle.ask(|reply| RoomCmd::Local { draft, reply }).await?;
    match outcome {
        LocalOutcome::Done(id) => Ok(id),
        LocalOutcome::Waiting { done, .. } => {
            let wait = Duration::from_millis(call.server.config.client.send_wait_ms);
            match tokio::time::timeout(wait, done).await {
                Ok(Ok(r)) => r.map_err(Failure::from),
                Ok(Err(_)) => Err(RoomError::Gone.into()),
                Err(_) => Err(RoomError::Pending.into()),
            }
        }
    }
}

pub(super) fn draft(user: &UserId, event_type: &str, state_key: Option<&str>, content: Object) -> Draft {
    Draft {
        sender: user.clone(),
        event_type: event_type.to_owned(),
        state_key: state_key.map(str::to_owned),
        content,
        txn: None,
    }
}

pub(super) fn obj(v: Value) -> Object {
    v.as_object().cloned().unwrap_or_default()
}

/// Merges `over` into `base`, one level deep for objects (as Synapse merges
/// `power_level_content_override`).
fn merge(base: &mut Object, over: &Object) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(o)) => {
                for (k2, v2) in o {
                    b.insert(k2.clone(), v2.clone());
                }
            }
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

pub async fn create_room(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let user = user.clone();
    let server = call.server.clone();
    if server.config.mode == crate::config::Mode::Follower && !server.config.follower.host_rooms {
        return Err(Failure::forbidden(
            "This server runs in follower mode with follower.host_rooms = false: it does not host rooms",
        ));
    }
    let body: CreateRoom = wire::read(call.body()?)?;
    let version_id = body.room_version.unwrap_or(LM_VERSION);
    let version = RoomVersion::find(version_id)
        .filter(|v| v.hostable)
        .ok_or_else(|| Failure::UnsupportedRoomVersion(version_id.to_owned()))?;
    let visibility = body.visibility.unwrap_or("private");
    let default_preset = if visibility == "public" { "public_chat" } else { "private_chat" };
    let preset = body.preset.unwrap_or(default_preset);
    let invites =
        body.invite.iter().map(|u| UserId::parse(u).map_err(Failure::invalid_param)).collect::<Result<Vec<_>, _>>()?;
    let mut create = body.creation_content.unwrap_or_default();
    create.insert("room_version".into(), json!(version.id));
    if version.auth.creator_in_content {
        create.insert("creator".into(), json!(user.as_str()));
    }
    if version.auth.creators_infinite && preset == "trusted_private_chat" && !invites.is_empty() {
        // v12: co-creators instead of level 100, as other servers do.
        create.insert("additional_creators".into(), json!(invites.iter().map(UserId::as_str).collect::<Vec<_>>()));
    }
    let mut pl = obj(json!({
        "users": { user.as_str(): 100 },
        "users_default": 0,
        "events": {
            "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
            "m.room.server_acl": 100, "m.room.encryption": 100,
        },
        "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0,
    }));
    if preset == "trusted_private_chat" && !version.auth.creators_infinite {
        for i in &invites {
            pl["users"][i.as_str()] = json!(100);
        }
    }
    if let Some(o) = &body.power_level_content_override {
        merge(&mut pl, o);
    }
    if version.auth.creators_infinite {
        // v12: creators' power is implied and may not be listed.
        if let Some(users) = pl.get_mut("users").and_then(Value::as_object_mut) {
            users.remove(user.as_str());
            for i in &invites {
                users.remove(i.as_str());
            }
        }
    }
    let join_rule = if preset == "public_chat" { "public" } else { "invite" };
    let create = draft(&user, "m.room.create", Some(""), create);
    let (room, create_event) = if version.is_mixed() {
        let room_id = format!("!{}:{}", random_string(18), server.name);
        let pdu =
            crate::room::build_create(&server.key, version, &room_id, &create, now_ms()).map_err(Failure::from)?;
        (pdu.room_id().clone(), Some(pdu))
    } else {
        let id = RoomId::parse(&format!("!{}:{}", random_string(18), server.name)).map_err(Failure::failed)?;
        (id, None)
    };
    let mut drafts = vec![
        draft(&user, "m.room.member", Some(user.as_str()), {
            let mut member = obj(json!({"membership": "join"}));
            member.extend(super::profile::member_fields(&call, &user)?);
            member
        }),
        draft(&user, "m.room.power_levels", Some(""), pl),
        draft(&user, "m.room.join_rules", Some(""), obj(json!({ "join_rule": join_rule }))),
        draft(&user, "m.room.history_visibility", Some(""), obj(json!({"history_visibility": "shared"}))),
    ];
    for s in body.initial_state {
        drafts.push(draft(&user, s.kind, Some(s.state_key), s.content));
    }
    let alias = match body.room_alias_name {
        Some(local) => {
            let alias = format!("#{local}:{}", server.name);
            if server.store.alias(&alias)?.is_some() {
                return Err(Failure::Taken(Taken::AliasOnCreate));
            }
            drafts.push(draft(&user, "m.room.canonical_alias", Some(""), obj(json!({ "alias": alias }))));
            Some(alias)
        }
        None => None,
    };
    if let Some(name) = body.name {
        drafts.push(draft(&user, "m.room.name", Some(""), obj(json!({ "name": name }))));
    }
    if let Some(topic) = body.topic {
        drafts.push(draft(&user, "m.room.topic", Some(""), obj(json!({ "topic": topic }))));
    }
    for i in &invites {
        let mut c = obj(json!({"membership": "invite"}));
        if body.is_direct {
            c.insert("is_direct".into(), json!(true));
        }
        drafts.push(draft(&user, "m.room.member", Some(i.as_str()), c));
    }
    let handle = server.rooms.create(room.clone(), version)?;
    match create_event {
        Some(pdu) => {
            let outcome = server.remote.offer_own(&handle, vec![pdu]).await?;
            if let Some((_, Err(e))) = outcome.into_iter().next() {
                return Err(e.into());
            }
        }
        None => drafts.insert(0, create),
    }
    if let Some(a) = &alias {
        super::directory::create(&call, a, &room)?;
    }
    for d in drafts {
        submit(&call, &room, d).await?;
    }
    if visibility == "public" {
        let mut b = crate::store::Batch::new();
        b.push(crate::store::Op::PublishRoom(room.clone(), true));
        server.store.write(b)?;
        server.store.flush().await?;
    }
    wire::to_json(&RoomIdAnswer { room_id: room.as_str() })
}

pub async fn send(call: Call, room: &str, event_type: &str, txn: &str) -> Result<Value, Failure> {
    let (user, device) = call.who()?;
    let mut d = draft(user, event_type, None, call.body()?.clone());
    d.txn = Some((device.to_owned(), txn.to_owned()));
    let room = room_id(room)?;
    let id = submit(&call, &room, d).await?;
    wire::to_json(&EventIdAnswer { event_id: id.as_str() })
}

pub async fn put_state(call: Call, room: &str, event_type: &str, state_key: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let d = draft(user, event_type, Some(state_key), call.body()?.clone());
    let room = room_id(room)?;
    let id = submit(&call, &room, d).await?;
    wire::to_json(&EventIdAnswer { event_id: id.as_str() })
}

/// The time an event's age is measured from, for `unsigned.age`.
pub fn age_of(ts: i64) -> i64 {
    (now_ms() - ts).max(0)
}

/// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`: an `m.room.redaction`
/// event (v11 shape: `content.redacts`); the hub applies it to the stored
/// event when the redactor may (OQ-11).
pub async fn redact(call: Call, room: &str, event: &str, txn: &str) -> Result<Value, Failure> {
    let (user, device) = call.who()?;
    let target = EventId::parse(event).map_err(|e| Failure::invalid_param(e.to_string()))?;
    let mut content = call.body()?.clone();
    content.insert("redacts".into(), json!(target.as_str()));
    let mut d = draft(user, "m.room.redaction", None, content);
    d.txn = Some((device.to_owned(), format!("redact-{txn}")));
    let room = room_id(room)?;
    let id = submit(&call, &room, d).await?;
    wire::to_json(&EventIdAnswer { event_id: id.as_str() })
}
