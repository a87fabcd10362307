//! Account data (global and per room) and push rules. Push rules are kept
//! as the `m.push_rules` account data, as clients read them from /sync too;
//! until a user changes them they are the spec's defaults.

use serde_json::{json, Value};

use super::Call;
use crate::core::ids::{RoomId, UserId};
use crate::core::json::{self, NumberPolicy};
use crate::store::records::side_entry::Kind;
use crate::store::records::{AccountDataChange, SideEntry};
use crate::store::{Batch, Op};
use crate::wire::Failure;

fn own(call: &Call, user_id: &str) -> Result<UserId, Failure> {
    let (user, _) = call.who()?;
    if user.as_str() != user_id {
        return Err(Failure::forbidden("You may only touch your own account data"));
    }
    Ok(user.clone())
}

fn room_id(s: &str) -> Result<RoomId, Failure> {
    RoomId::parse(s).map_err(|e| Failure::invalid_param(e.to_string()))
}

/// Writes account data and records the change for sync, durably.
pub async fn put_data(
    call: &Call,
    user: &UserId,
    room: Option<&RoomId>,
    kind: &str,
    content: &Value,
) -> Result<(), Failure> {
    let alloc = write_data(call, user, room, kind, content)?;
    call.server.store.flush().await?;
    drop(alloc);
    Ok(())
}

/// Writes account data and its change for sync; the position it holds
/// must be kept until the write is flushed.
pub fn write_data(
    call: &Call,
    user: &UserId,
    room: Option<&RoomId>,
    kind: &str,
    content: &Value,
) -> Result<crate::store::Allocation, Failure> {
    let alloc = call.server.positions.allocate(1)?;
    let change = AccountDataChange {
        user_id: user.to_string(),
        room_id: room.map(|r| r.to_string()).unwrap_or_default(),
        r#type: kind.to_owned(),
    };
    let mut b = Batch::new();
    b.push(Op::PutAccountData {
        user: user.clone(),
        room: room.cloned(),
        kind: kind.to_owned(),
        content: serde_json::to_vec(content).unwrap_or_default(),
    })
    .push(Op::SideEntry { pos: alloc.first(), entry: SideEntry { kind: Some(Kind::AccountData(change)) } });
    call.server.store.write(b)?;
    Ok(alloc)
}

pub fn get_data(call: &Call, user: &UserId, room: Option<&RoomId>, kind: &str) -> Result<Option<Value>, Failure> {
    Ok(call.server.store.account_data(user, room, kind)?.and_then(|b| json::parse(&b, NumberPolicy::Ieee754).ok()))
}

pub async fn put(call: Call, user_id: &str, room: Option<&str>, kind: &str) -> Result<Value, Failure> {
    let user = own(&call, user_id)?;
    if kind == "m.fully_read" || kind == "m.push_rules" {
        return Err(Failure::bad_json(format!("{kind} is managed by the server")));
    }
    let room = room.map(room_id).transpose()?;
    put_data(&call, &user, room.as_ref(), kind, &Value::Object(call.body()?.clone())).await?;
    Ok(json!({}))
}

pub fn get(call: Call, user_id: &str, room: Option<&str>, kind: &str) -> Result<Value, Failure> {
    let user = own(&call, user_id)?;
    let room = room.map(room_id).transpose()?;
    if room.is_none() && kind == "m.push_rules" {
        return push_rules_value(&call, &user);
    }
    get_data(&call, &user, room.as_ref(), kind)?.ok_or_else(|| Failure::not_found("Account data not found"))
}

// ---- push rules ----

pub use crate::core::push::default_rules;
use crate::core::push::event_match;

fn push_rules_value(call: &Call, user: &UserId) -> Result<Value, Failure> {
    Ok(get_data(call, user, None, "m.push_rules")?.unwrap_or_else(|| default_rules(user)))
}

pub fn push_rules(call: Call, rest: &[&str]) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let rules = push_rules_value(&call, user)?;
    let mut at = &rules;
    for seg in rest.iter().filter(|s| !s.is_empty()) {
        at = match at {
            Value::Object(o) => o.get(*seg),
            Value::Array(a) => a.iter().find(|r| r["rule_id"] == *seg),
            _ => None,
        }
        .ok_or_else(|| Failure::not_found("Push rule not found"))?;
    }
    Ok(at.clone())
}

const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// `PUT /pushrules/global/{kind}/{ruleId}[/enabled|/actions]`.
pub async fn put_push_rule(call: Call, kind: &str, rule_id: &str, attr: Option<&str>) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let user = user.clone();
    if !KINDS.contains(&kind) {
        return Err(Failure::invalid_param("Unknown push rule kind"));
    }
    let mut rules = push_rules_value(&call, &user)?;
    let list =
        rules["global"][kind].as_array_mut().ok_or_else(|| Failure::corrupt("stored push rules are malformed"))?;
    let found = list.iter().position(|r| r["rule_id"] == rule_id);
    match (attr, found) {
        (Some("enabled"), Some(i)) => list[i]["enabled"] = call.body()?.get("enabled").cloned().unwrap_or(json!(true)),
        (Some("actions"), Some(i)) => list[i]["actions"] = call.body()?.get("actions").cloned().unwrap_or(json!([])),
        (Some(_), _) => return Err(Failure::not_found("Push rule not found")),
        (None, _) if rule_id.starts_with('.') => {
            return Err(Failure::invalid_param("Server-default rules cannot be replaced"))
        }
        (None, existing) => {
            let mut r = Value::Object(call.body()?.clone());
            r["rule_id"] = json!(rule_id);
            r["default"] = json!(false);
            r["enabled"] = json!(true);
            if kind == "room" || kind == "sender" {
                r["conditions"] = json!([event_match(if kind == "room" { "room_id" } else { "user_id" }, rule_id)]);
            }
            match existing {
                Some(i) => list[i] = r,
                None => list.insert(0, r),
            }
        }
    }
    put_data(&call, &user, None, "m.push_rules", &rules).await?;
    Ok(json!({}))
}

pub async fn delete_push_rule(call: Call, kind: &str, rule_id: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let user = user.clone();
    let mut rules = push_rules_value(&call, &user)?;
    let list = rules["global"][kind].as_array_mut().ok_or_else(|| Failure::not_found("Push rule not found"))?;
    let before = list.len();
    list.retain(|r| r["rule_id"] != rule_id || r["default"] == true);
    if list.len() == before {
        return Err(Failure::not_found("Push rule not found"));
    }
    put_data(&call, &user, None, "m.push_rules", &rules).await?;
    Ok(json!({}))
}
