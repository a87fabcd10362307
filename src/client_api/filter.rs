//! Filters (`POST /user/{userId}/filter`, the `filter` parameter of /sync
//! and /messages): types, senders and rooms with `*` wildcards, and limits.
//!
//! A filter comes from a stranger's request, so its size is bounded
//! (`FilterLimits`) and matching is linear in the pattern and the value.

use serde_json::{json, Value};

use super::Call;
use crate::core::ids::UserId;
use crate::core::json::{self, NumberPolicy};
use crate::store::{Batch, Op};
use crate::sys::random_string;
use crate::wire::Failure;

/// Largest filter accepted, as JSON text.
pub const MAX_FILTER_BYTES: usize = 65_536;
/// Entries in one list (`types`, `senders`, `rooms`, …).
pub const MAX_LIST_ENTRIES: usize = 1_000;
/// Bytes in one type pattern (ids and types are at most 255 bytes).
pub const MAX_PATTERN_BYTES: usize = 255;
/// `*` in one type pattern.
pub const MAX_PATTERN_STARS: usize = 16;

/// Matrix filter globs: `*` matches any run of characters. Greedy over the
/// pattern's literal pieces: each piece is found at its leftmost place after
/// the previous one (a later place can only leave less room for the rest),
/// so the match is linear in `pattern` and `value`, never backtracking.
pub fn glob(pattern: &str, value: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = value.strip_prefix(first) else { return false };
    let mut pieces: Vec<&str> = pieces.collect();
    let Some(last) = pieces.pop() else {
        // No `*`: the pattern is the value.
        return rest.is_empty();
    };
    for piece in pieces {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
}

/// Why a filter was refused.
fn invalid(why: String) -> Failure {
    Failure::bad_json(format!("filter: {why}"))
}

/// Checks a filter's size before it is used or stored.
pub fn check_limits(filter: &Value) -> Result<(), Failure> {
    const LISTS: [&str; 6] = ["types", "not_types", "senders", "not_senders", "rooms", "not_rooms"];
    const PATTERNS: [&str; 2] = ["types", "not_types"];
    fn walk(v: &Value, depth: usize) -> Result<(), Failure> {
        let Some(o) = v.as_object() else { return Ok(()) };
        if depth > 4 {
            return Err(invalid("nested too deeply".into()));
        }
        for (k, child) in o {
            if let (true, Some(items)) = (LISTS.contains(&k.as_str()), child.as_array()) {
                if items.len() > MAX_LIST_ENTRIES {
                    return Err(invalid(format!("{k} has over {MAX_LIST_ENTRIES} entries")));
                }
                if PATTERNS.contains(&k.as_str()) {
                    for p in items.iter().filter_map(Value::as_str) {
                        if p.len() > MAX_PATTERN_BYTES {
                            return Err(invalid(format!("a {k} pattern is over {MAX_PATTERN_BYTES} bytes")));
                        }
                        if p.matches('*').count() > MAX_PATTERN_STARS {
                            return Err(invalid(format!("a {k} pattern has over {MAX_PATTERN_STARS} '*'")));
                        }
                    }
                }
            }
            walk(child, depth + 1)?;
        }
        Ok(())
    }
    walk(filter, 0)
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
    /// `room.timeline.unread_thread_notifications`: counts split by thread.
    pub thread_counts: bool,
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
            thread_counts: room
                .and_then(|r| r.get("timeline")?.get("unread_thread_notifications")?.as_bool())
                .unwrap_or(false),
        }
    }
}

/// Parses and checks a filter's JSON text.
pub fn parse(text: &str) -> Result<Value, Failure> {
    if text.len() > MAX_FILTER_BYTES {
        return Err(invalid(format!("over {MAX_FILTER_BYTES} bytes")));
    }
    let v = json::parse(text.as_bytes(), NumberPolicy::Ieee754).map_err(|e| invalid(e.to_string()))?;
    if !v.is_object() {
        return Err(invalid("not a JSON object".into()));
    }
    check_limits(&v)?;
    Ok(v)
}

/// The `filter` parameter: a stored filter's id, or inline JSON.
pub fn resolve(call: &Call, user: &UserId, param: Option<&str>) -> Result<Value, Failure> {
    match param {
        None => Ok(json!({})),
        Some(p) if p.trim_start().starts_with('{') => parse(p),
        Some(id) => {
            let bytes = call.server.store.filter(user, id)?.ok_or_else(|| Failure::not_found("No such filter"))?;
            parse(&String::from_utf8_lossy(&bytes))
        }
    }
}

fn own(call: &Call, user_id: &str) -> Result<UserId, Failure> {
    let (user, _) = call.who()?;
    if user.as_str() != user_id {
        return Err(Failure::forbidden("You may only manage your own filters"));
    }
    Ok(user.clone())
}

pub fn create(call: Call, user_id: &str) -> Result<Value, Failure> {
    let user = own(&call, user_id)?;
    let body = Value::Object(call.body()?.clone());
    check_limits(&body)?;
    let json = serde_json::to_vec(&body).unwrap_or_default();
    if json.len() > MAX_FILTER_BYTES {
        return Err(invalid(format!("over {MAX_FILTER_BYTES} bytes")));
    }
    let id = random_string(12);
    let mut b = Batch::new();
    b.push(Op::PutFilter { user, id: id.clone(), json });
    call.server.store.write(b)?;
    Ok(json!({ "filter_id": id }))
}

pub fn get(call: Call, user_id: &str, id: &str) -> Result<Value, Failure> {
    let user = own(&call, user_id)?;
    let bytes = call.server.store.filter(&user, id)?.ok_or_else(|| Failure::not_found("No such filter"))?;
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

    /// The obvious backtracking matcher, as the reference.
    fn reference(pattern: &str, value: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == value,
            Some((head, rest)) => value.strip_prefix(head).is_some_and(|tail| {
                (0..=tail.len()).filter(|i| tail.is_char_boundary(*i)).any(|i| reference(rest, &tail[i..]))
            }),
        }
    }

    proptest::proptest! {
        #[test]
        fn glob_agrees_with_backtracking(pattern in "[ab*]{0,8}", value in "[ab]{0,10}") {
            proptest::prop_assert_eq!(glob(&pattern, &value), reference(&pattern, &value));
        }
    }

    #[test]
    fn pathological_patterns_are_cheap_and_bounded() {
        let value = "a".repeat(255);
        // Exponential for a backtracking matcher; a few hundred steps here.
        assert!(!glob(&format!("{}b", "*a".repeat(16)), &value));
        assert!(glob(&format!("{}*", "*a".repeat(16)), &value));
        assert!(glob("a*a", "aa") && !glob("a*a", "a"));
        let many = json!({"room": {"timeline": {"types": [format!("{}b", "*a".repeat(17))]}}});
        assert!(matches!(check_limits(&many).unwrap_err(), Failure::BadJson(_)));
        let long = json!({"types": ["x".repeat(256)]});
        assert!(check_limits(&long).is_err());
        let list = json!({"not_senders": vec!["@a:b"; 1001]});
        assert!(check_limits(&list).is_err());
        assert!(parse(&format!("{{\"x\": \"{}\"}}", "y".repeat(MAX_FILTER_BYTES))).is_err());
        assert!(parse(r#"{"room": {"timeline": {"types": ["m.*"], "limit": 5}}}"#).is_ok());
    }
}
