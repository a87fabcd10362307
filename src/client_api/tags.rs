//! Room tags (`user/{userId}/rooms/{roomId}/tags`): the `m.tag` room
//! account data, so clients also get them in `/sync`.

use serde_json::{json, Value};

use super::account_data::{get_data, write_data};
use super::Call;
use crate::core::ids::RoomId;
use crate::wire::Failure;

const TAG_TYPE: &str = "m.tag";

fn target(call: &Call, user_id: &str, room: &str) -> Result<(crate::core::ids::UserId, RoomId), Failure> {
    let (user, _) = call.who()?;
    if user.as_str() != user_id {
        return Err(Failure::forbidden("You may only tag rooms for yourself"));
    }
    let room = RoomId::parse(room).map_err(|e| Failure::invalid_param(e.to_string()))?;
    Ok((user.clone(), room))
}

pub fn get(call: Call, user_id: &str, room: &str) -> Result<Value, Failure> {
    let (user, room) = target(&call, user_id, room)?;
    let tags = get_data(&call, &user, Some(&room), TAG_TYPE)?.and_then(|v| v.get("tags").cloned());
    Ok(json!({"tags": tags.filter(Value::is_object).unwrap_or_else(|| json!({}))}))
}

/// Adds (`Some`, with its `order` etc.) or removes a tag. The read and the
/// write happen under the user's lock, so concurrent changes all count.
pub async fn change(call: Call, user_id: &str, room: &str, tag: &str, add: bool) -> Result<Value, Failure> {
    let (user, room) = target(&call, user_id, room)?;
    if tag.is_empty() || tag.len() > 255 {
        return Err(Failure::invalid_param("A tag is 1 to 255 bytes"));
    }
    let content = if add { Some(Value::Object(call.body()?.clone())) } else { None };
    if let Some(order) = content.as_ref().and_then(|c| c.get("order")) {
        if !order.is_number() {
            return Err(Failure::invalid_param("order must be a number"));
        }
    }
    let written = {
        let _guard = call.server.e2ee.lock(&user);
        let mut data = get_data(&call, &user, Some(&room), TAG_TYPE)?.unwrap_or_else(|| json!({"tags": {}}));
        if !data["tags"].is_object() {
            data["tags"] = json!({});
        }
        let tags = data["tags"].as_object_mut().expect("an object");
        match content {
            Some(c) => {
                tags.insert(tag.to_owned(), c);
            }
            None => {
                tags.remove(tag);
            }
        }
        write_data(&call, &user, Some(&room), TAG_TYPE, &data)?
    };
    call.server.store.flush().await?;
    drop(written);
    Ok(json!({}))
}
