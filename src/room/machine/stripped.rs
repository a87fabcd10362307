//! The stripped state an invitee or knocker sees of a room before joining
//! (item 49): each entry only `type`, `state_key`, `sender`, `content`
//! (item 50).

use serde_json::{json, Value};

use super::RoomView;
use crate::core::event::Pdu;
use crate::core::ids::UserId;
use crate::core::rooms::StateView;

/// The state events a room is recognised by, in that order.
const SHOWN: [&str; 7] = [
    "m.room.create",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.encryption",
];

impl RoomView {
    /// The room's stripped state, with the member event of `member` (the
    /// inviter, or the invitee whose invite it is) when given.
    pub fn stripped_state(&self, member: Option<&UserId>) -> Vec<Value> {
        let mut keys: Vec<(&str, String)> = SHOWN.into_iter().map(|t| (t, String::new())).collect();
        if let Some(m) = member {
            keys.push(("m.room.member", m.to_string()));
        }
        keys.iter()
            .filter_map(|(t, k)| self.state.get(t, k))
            .map(|e| {
                // The whole create event, so the invitee can check it (MSC4311).
                if self.version.is_mixed() && e.event_type() == "m.room.create" {
                    Value::Object(e.json().clone())
                } else {
                    strip(e)
                }
            })
            .collect()
    }
}

pub fn strip(e: &Pdu) -> Value {
    json!({
        "type": e.event_type(),
        "state_key": e.state_key().unwrap_or(""),
        "sender": e.sender().as_str(),
        "content": e.content(),
    })
}
