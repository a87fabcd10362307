//! Filters (`POST /user/{userId}/filter`, the `filter` parameter of /sync
//! and /messages): types, senders and rooms with `*` wildcards, and limits.

use serde_json::{json, Value};

use super::Call;
use crate::core::ids::UserId;
use crate::core::json::{self, NumberPolicy};
use crate::http::ApiError;
use crate::node::random_string;
use crate::store::{Batch, Op};

/// Matrix filter globs: `*` matches any run of characters.
fn glob(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, rest)) => {
            let Some(tail) = value.strip_prefix(head) else { return false };
            (0..=tail.len()).filter(|i| tail.is_char_boundary(*i)).any(|i| glob(rest, &tail[i..]))
        }
    }
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
}

/// An event filter: `limit`, `types`, `not_types`, `senders`,
/// `not_senders`, and for room filters `rooms`/`not_rooms`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub limit: Option<u64>,
    types: Option<Vec<String>>,
    not_types: Vec<String>,
    senders: Option<Vec<String>>,
    not_senders: Vec<String>,
    rooms: Option<Vec<String>>,
    not_rooms: Vec<String>,
}

impl EventFilter {
    pub fn from_json(v: Option<&Value>) -> EventFilter {
        let Some(v) = v else { return EventFilter::default() };
        EventFilter {
            limit: v.get("limit").and_then(Value::as_u64),
            types: strings(v.get("types")),
            not_types: strings(v.get("not_types")).unwrap_or_default(),
            senders: strings(v.get("senders")),
            not_senders: strings(v.get("not_senders")).unwrap_or_default(),
            rooms: strings(v.get("rooms")),
            not_rooms: strings(v.get("not_rooms")).unwrap_or_default(),
        }
    }

    pub fn allows_room(&self, room: &str) -> bool {
        !self.not_rooms.iter().any(|r| r == room) && self.rooms.as_ref().is_none_or(|rs| rs.iter().any(|r| r == room))
    }

    /// Whether a client-format event passes.
    pub fn allows(&self, event: &Value) -> bool {
        let ty = event.get("type").and_then(Value::as_str).unwrap_or("");
        let sender = event.get("sender").and_then(Value::as_str).unwrap_or("");
        let type_ok = !self.not_types.iter().any(|p| glob(p, ty))
            && self.types.as_ref().is_none_or(|ts| ts.iter().any(|p| glob(p, ty)));
        let sender_ok = !self.not_senders.iter().any(|s| s == sender)
            && self.senders.as_ref().is_none_or(|ss| ss.iter().any(|s| s == sender));
        let room_ok = event.get("room_id").and_then(Value::as_str).is_none_or(|r| self.allows_room(r));
        type_ok && sender_ok && room_ok
    }
}

/// A /sync filter's parts.
#[derive(Debug, Clone, Default)]
pub struct SyncFilter {
    pub rooms: EventFilter,
    pub timeline: EventFilter,
    pub state: EventFilter,
    pub ephemeral: EventFilter,
    pub room_account_data: EventFilter,
    pub account_data: EventFilter,
    pub presence: EventFilter,
}

impl SyncFilter {
    pub fn from_json(v: &Value) -> SyncFilter {
        let room = v.get("room");
        SyncFilter {
            rooms: EventFilter::from_json(room),
            timeline: EventFilter::from_json(room.and_then(|r| r.get("timeline"))),
            state: EventFilter::from_json(room.and_then(|r| r.get("state"))),
            ephemeral: EventFilter::from_json(room.and_then(|r| r.get("ephemeral"))),
            room_account_data: EventFilter::from_json(room.and_then(|r| r.get("account_data"))),
            account_data: EventFilter::from_json(v.get("account_data")),
            presence: EventFilter::from_json(v.get("presence")),
        }
    }
}

fn parse(text: &str) -> Result<Value, ApiError> {
    json::parse(text.as_bytes(), NumberPolicy::Ieee754).map_err(|e| ApiError::bad_json(format!("filter: {e}")))
}

/// The `filter` parameter: a stored filter's id, or inline JSON.
pub fn resolve(call: &Call, user: &UserId, param: Option<&str>) -> Result<Value, ApiError> {
    match param {
        None => Ok(json!({})),
        Some(p) if p.trim_start().starts_with('{') => parse(p),
        Some(id) => {
            let bytes = call.node.store.filter(user, id)?.ok_or_else(|| ApiError::not_found("No such filter"))?;
            parse(&String::from_utf8_lossy(&bytes))
        }
    }
}

fn own(call: &Call, user_id: &str) -> Result<UserId, ApiError> {
    let (user, _) = call.who()?;
    if user.as_str() != user_id {
        return Err(ApiError::forbidden("You may only manage your own filters"));
    }
    Ok(user.clone())
}

pub fn create(call: Call, user_id: &str) -> Result<Value, ApiError> {
    let user = own(&call, user_id)?;
    let id = random_string(12);
    let mut b = Batch::new();
    b.push(Op::PutFilter {
        user,
        id: id.clone(),
        json: serde_json::to_vec(&Value::Object(call.body.clone())).unwrap_or_default(),
    });
    call.node.store.write(b)?;
    Ok(json!({ "filter_id": id }))
}

pub fn get(call: Call, user_id: &str, id: &str) -> Result<Value, ApiError> {
    let user = own(&call, user_id)?;
    let bytes = call.node.store.filter(&user, id)?.ok_or_else(|| ApiError::not_found("No such filter"))?;
    parse(&String::from_utf8_lossy(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_filters() {
        assert!(glob("m.*", "m.room.message"));
        assert!(glob("*", ""));
        assert!(!glob("m.room.*", "m.reaction"));
        assert!(glob("a*c*e", "abcde"));
        let f = EventFilter::from_json(Some(
            &json!({"types": ["m.room.*"], "not_types": ["m.room.member"], "not_senders": ["@x:y"]}),
        ));
        assert!(f.allows(&json!({"type": "m.room.message", "sender": "@a:b"})));
        assert!(!f.allows(&json!({"type": "m.room.member", "sender": "@a:b"})));
        assert!(!f.allows(&json!({"type": "m.reaction", "sender": "@a:b"})));
        assert!(!f.allows(&json!({"type": "m.room.message", "sender": "@x:y"})));
        let r = EventFilter::from_json(Some(&json!({"rooms": ["!a:b"]})));
        assert!(r.allows_room("!a:b") && !r.allows_room("!c:d"));
    }
}
