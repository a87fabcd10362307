//! `POST rooms/{roomId}/upgrade`: a new room of the asked version that
//! continues the old one (`predecessor` in its create event), with the old
//! room's name, topic, avatar, rules, power levels, encryption, ACLs and
//! bans; then a tombstone in the old room, whose power levels are raised so
//! that only moderators speak there, and this server's aliases move over.
//! An LM room upgrades to LM and a mixed room within versions 10-12: the
//! two kinds do not mix.

use serde_json::{json, Map, Value};

use super::rooms::{draft, submit};
use super::Call;
use crate::core::event::RoomVersion;
use crate::core::ids::RoomId;
use crate::core::rooms::{PowerLevels, StateView};
use crate::store::{Batch, Op};
use crate::wire::Failure;

/// State copied into the new room as it is.
const COPIED: &[&str] = &[
    "m.room.server_acl",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.encryption",
];

pub async fn upgrade(call: Call, room: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let user = user.clone();
    let old_id = RoomId::parse(room).map_err(|e| Failure::invalid_param(e.to_string()))?;
    let new_version = call
        .body()?
        .get("new_version")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::MissingParam("new_version is required".into()))?
        .to_owned();
    let view = call.server.view_of_joined(&old_id)?;
    if view.state.membership(user.as_str()) != "join" {
        return Err(Failure::forbidden("You are not in this room"));
    }
    let version = RoomVersion::find(&new_version)
        .filter(|v| v.hostable && v.lm == view.version.lm)
        .ok_or_else(|| Failure::UnsupportedRoomVersion(new_version.clone()))?;
    let levels = PowerLevels::from_state(&*view.state, view.version);
    if levels.user_level(user.as_str()) < levels.send_level("m.room.tombstone", true) {
        return Err(Failure::forbidden("You may not upgrade this room"));
    }

    // The new room, made as createRoom makes one, from the old one's state.
    let old_create = view.state.create().map(|c| c.content().clone()).unwrap_or_default();
    let mut creation = Map::new();
    creation.insert("predecessor".into(), json!({"room_id": old_id.as_str()}));
    for key in ["type", "encryption", "m.federate"] {
        if let Some(v) = old_create.get(key) {
            creation.insert(key.into(), v.clone());
        }
    }
    let mut initial_state = Vec::new();
    for ty in COPIED {
        if let Some(e) = view.state.get(ty, "") {
            initial_state.push(json!({"type": ty, "state_key": "", "content": e.content()}));
        }
    }
    for e in view.state.iter().filter(|e| e.event_type() == "m.room.member" && e.membership() == Some("ban")) {
        initial_state.push(json!({"type": "m.room.member", "state_key": e.state_key(), "content": e.content()}));
    }
    let mut body = json!({
        "room_version": version.id,
        "creation_content": creation,
        "initial_state": initial_state,
        "preset": "private_chat",
    });
    if let Some(pl) = view.state.power_levels() {
        let mut pl = pl.content().clone();
        if !version.auth.creators_infinite {
            // The upgrader keeps power enough to set the room up.
            let mine = levels.user_level(user.as_str()).max(100);
            pl.entry("users").or_insert_with(|| json!({}))[user.as_str()] = json!(mine);
        }
        body["power_level_content_override"] = Value::Object(pl);
    }
    let mut create_call = call.clone();
    create_call.body = Ok(body.as_object().cloned().unwrap_or_default());
    let created = super::rooms::create_room(create_call).await?;
    let new_id =
        created["room_id"].as_str().and_then(|r| RoomId::parse(r).ok()).ok_or_else(|| Failure::failed("no room id"))?;

    // The old room points at the new one and quiets down.
    let tombstone = json!({"body": "This room has been replaced", "replacement_room": new_id.as_str()});
    submit(
        &call,
        &old_id,
        draft(&user, "m.room.tombstone", Some(""), tombstone.as_object().cloned().unwrap_or_default()),
    )
    .await?;
    if let Some(pl) = view.state.power_levels() {
        let mut pl = pl.content().clone();
        let users_default = pl.get("users_default").and_then(Value::as_i64).unwrap_or(0);
        let restricted = 50.max(users_default + 1);
        for key in ["events_default", "invite"] {
            let current = pl.get(key).and_then(Value::as_i64).unwrap_or(0);
            pl.insert(key.into(), json!(current.max(restricted)));
        }
        // Failing to restrict is not failing to upgrade.
        if let Err(e) = submit(&call, &old_id, draft(&user, "m.room.power_levels", Some(""), pl)).await {
            tracing::info!(room = %old_id, error = %e, "could not restrict an upgraded room");
        }
    }
    move_aliases(&call, &old_id, &new_id).await?;
    Ok(json!({"replacement_room": new_id.as_str()}))
}

/// This server's aliases of the old room name the new one.
async fn move_aliases(call: &Call, old: &RoomId, new: &RoomId) -> Result<(), Failure> {
    let view = call.server.view_of_joined(old)?;
    let Some(alias) = view
        .state
        .get("m.room.canonical_alias", "")
        .and_then(|e| e.content().get("alias")?.as_str().map(str::to_owned))
    else {
        return Ok(());
    };
    let Some(mut rec) = call.server.store.alias(&alias)?.filter(|r| r.room_id == old.as_str()) else { return Ok(()) };
    rec.room_id = new.to_string();
    let mut b = Batch::new();
    b.push(Op::PutAlias { alias: alias.clone(), record: rec });
    call.server.store.write(b)?;
    call.server.store.flush().await?;
    let (user, _) = call.who()?;
    let content = json!({"alias": alias});
    submit(
        call,
        new,
        draft(user, "m.room.canonical_alias", Some(""), content.as_object().cloned().unwrap_or_default()),
    )
    .await?;
    Ok(())
}
