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
/// The notices user's account data: transaction ids already sent, with
/// their events.
const TXNS_KIND: &str = "org.lmx.server_notices.txns";
/// Transaction ids remembered, newest kept.
const MAX_TXNS: usize = 1000;

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
    if let Some(existing) = call.server.store.user(&user)? {
        // Made by this code, it has no password; one that does is someone's.
        if !existing.password_hash.is_empty() {
            return Err(Failure::failed(format!(
                "{user} is an ordinary account: set admin.notices_localpart to an unused name"
            )));
        }
    } else {
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

/// `PUT /v1/send_server_notice/{txn}`: as `POST`, once per transaction id.
pub async fn send_once(call: &Call, txn: &str) -> Result<Reply, Failure> {
    let sender = notices_user(call)?;
    let store = &call.server.store;
    let mut txns: Vec<(String, String)> = store
        .account_data(&sender, None, TXNS_KIND)?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    if let Some((_, event)) = txns.iter().find(|(t, _)| t == txn) {
        return ok(json!({"event_id": event}));
    }
    let (status, answer) = send(call).await?;
    let event = answer["event_id"].as_str().unwrap_or_default().to_owned();
    txns.push((txn.to_owned(), event));
    let excess = txns.len().saturating_sub(MAX_TXNS);
    txns.drain(..excess);
    let kept = serde_json::to_value(&txns).map_err(Failure::failed)?;
    crate::client_api::account_data::put_data(call, &sender, None, TXNS_KIND, &kept).await?;
    Ok((status, answer))
}
