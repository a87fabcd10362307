//! Server notices (Synapse's `send_server_notice`): a message from the
//! notices user in a room of its own with the recipient, who is invited,
//! may not post, and finds the room tagged `m.server_notice`.

use serde_json::{json, Value};

use super::{body, local_user, ok, Reply};
use crate::client_api::rooms::{draft, submit};
use crate::client_api::Call;
use crate::core::ids::{RoomId, UserId};
use crate::store::records::UserRecord;
use crate::wire::Failure;

/// The notices user's account data: each recipient's notices room.
const ROOMS_KIND: &str = "org.lmx.server_notices";

/// `POST /v1/send_server_notice`: `user_id`, `content`, `type`,
/// `state_key`.
pub async fn send(call: &Call) -> Result<Reply, Failure> {
    let b = body(call)?;
    let to = b.get("user_id").and_then(Value::as_str).ok_or_else(|| Failure::MissingParam("user_id".into()))?;
    let content =
        b.get("content").and_then(Value::as_object).ok_or_else(|| Failure::MissingParam("content".into()))?.clone();
    let event_type = b.get("type").and_then(Value::as_str).unwrap_or("m.room.message").to_owned();
    let state_key = b.get("state_key").and_then(Value::as_str).map(str::to_owned);
    let to = local_user(call, to)?;
    call.server.store.user(&to)?.ok_or_else(|| Failure::not_found("User not found"))?;
    let sender = notices_user(call)?;
    let room = notices_room(call, &sender, &to).await?;
    let id = submit(&call.as_user(&sender), &room, draft(&sender, &event_type, state_key.as_deref(), content)).await?;
    ok(json!({"event_id": id.as_str()}))
}

/// The notices user, made (with no password) the first time.
fn notices_user(call: &Call) -> Result<UserId, Failure> {
    let localpart = &call.server.config.admin.notices_localpart;
    let user = UserId::parse(&format!("@{localpart}:{}", call.server.name)).map_err(Failure::failed)?;
    if call.server.store.user(&user)?.is_none() {
        let rec = UserRecord {
            user_id: user.to_string(),
            displayname: "Server Notices".into(),
            created_ts: crate::sys::now_ms(),
            ..Default::default()
        };
        call.accounts.create_exclusive(&call.server, rec)?;
    }
    Ok(user)
}

/// The recipient's notices room, made when they have none they are
/// invited to or joined.
async fn notices_room(call: &Call, sender: &UserId, to: &UserId) -> Result<RoomId, Failure> {
    let store = &call.server.store;
    let mut rooms: serde_json::Map<String, Value> = store
        .account_data(sender, None, ROOMS_KIND)?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    if let Some(room) = rooms.get(to.as_str()).and_then(Value::as_str).and_then(|r| RoomId::parse(r).ok()) {
        let member = store.membership(to, &room)?;
        if member.is_some_and(|m| matches!(m.membership.as_str(), "invite" | "join")) {
            return Ok(room);
        }
    }
    let create = json!({
        "preset": "private_chat",
        "name": "Server Notices",
        "invite": [to.as_str()],
        "power_level_content_override": {"users_default": -10},
    });
    let made =
        crate::client_api::rooms::create_room(call.as_user_with(sender, crate::client_api::rooms::obj(create))).await?;
    let room =
        made["room_id"].as_str().and_then(|r| RoomId::parse(r).ok()).ok_or_else(|| Failure::failed("no room"))?;
    let tags = json!({"tags": {"m.server_notice": {}}});
    crate::client_api::account_data::put_data(call, to, Some(&room), "m.tag", &tags).await?;
    rooms.insert(to.to_string(), json!(room.as_str()));
    crate::client_api::account_data::put_data(call, sender, None, ROOMS_KIND, &Value::Object(rooms)).await?;
    Ok(room)
}
