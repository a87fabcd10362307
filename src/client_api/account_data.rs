//! Account data (global and per room) and push rules. Push rules are kept
//! as the `m.push_rules` account data, as clients read them from /sync too;
//! until a user changes them they are the spec's defaults.

use serde_json::{json, Value};

use super::Call;
use crate::core::ids::{RoomId, UserId};
use crate::core::json::{self, NumberPolicy};
use crate::http::query_get;
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

/// User rules one kind may hold.
const MAX_RULES_PER_KIND: usize = 500;

fn rule_failure(e: crate::core::push::RuleError) -> Failure {
    match e {
        crate::core::push::RuleError::Missing(what) => Failure::MissingParam(format!("{what} is required")),
        crate::core::push::RuleError::Invalid(why) => Failure::invalid_param(why),
    }
}

/// `PUT /pushrules/global/{kind}/{ruleId}[/enabled|/actions]` (with
/// `before`/`after` to place a new rule beside another of the user's).
pub async fn put_push_rule(call: Call, kind: &str, rule_id: &str, attr: Option<&str>) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let user = user.clone();
    if !KINDS.contains(&kind) {
        return Err(Failure::invalid_param("Unknown push rule kind"));
    }
    if rule_id.is_empty() || rule_id.len() > 255 {
        return Err(Failure::invalid_param("A rule id is 1 to 255 bytes"));
    }
    let body = call.body()?;
    let mut rules = push_rules_value(&call, &user)?;
    let list =
        rules["global"][kind].as_array_mut().ok_or_else(|| Failure::corrupt("stored push rules are malformed"))?;
    let found = list.iter().position(|r| r["rule_id"] == rule_id);
    match (attr, found) {
        (Some("enabled"), Some(i)) => {
            let enabled = body.get("enabled").and_then(Value::as_bool);
            list[i]["enabled"] =
                json!(enabled.ok_or_else(|| Failure::MissingParam("enabled must be a boolean".into()))?);
        }
        (Some("actions"), Some(i)) => {
            list[i]["actions"] = crate::core::push::checked_actions(body.get("actions")).map_err(rule_failure)?;
        }
        (Some(_), _) => return Err(Failure::not_found("Push rule not found")),
        (None, _) if rule_id.starts_with('.') => {
            return Err(Failure::invalid_param("Server-default rules cannot be replaced"))
        }
        (None, existing) => {
            let rule = crate::core::push::checked_rule(kind, rule_id, body).map_err(rule_failure)?;
            let beside = |key: &str| query_get(&call.query, key).map(str::to_owned);
            match existing {
                Some(i) => list[i] = rule,
                None => {
                    let user_rules = list.iter().filter(|r| r["default"] != true).count();
                    if user_rules >= MAX_RULES_PER_KIND {
                        return Err(Failure::limit_exceeded(format!("At most {MAX_RULES_PER_KIND} rules"), 0));
                    }
                    let place = |id: String| {
                        list.iter()
                            .position(|r| r["rule_id"] == id.as_str() && r["default"] != true)
                            .ok_or_else(|| Failure::not_found("The rule to place it beside does not exist"))
                    };
                    let at = match (beside("before"), beside("after")) {
                        (Some(b), _) => place(b)?,
                        (None, Some(a)) => place(a)? + 1,
                        // A new rule goes before the user's others of its
                        // kind; override rules after the master switch, as
                        // Synapse orders them.
                        (None, None) => match list.iter().position(|r| r["default"] != true) {
                            Some(i) => i,
                            None if kind == "override" => {
                                list.iter().position(|r| r["rule_id"] == ".m.rule.master").map_or(0, |i| i + 1)
                            }
                            None => 0,
                        },
                    };
                    list.insert(at, rule);
                }
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
