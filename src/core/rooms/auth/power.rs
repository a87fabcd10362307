//! Power levels: reading them (digest 4.4, items 55, 70-72) and the rules
//! for changing them (LM rule 9, Matrix v11 rule 9; OQ-15).

use serde_json::Value;

use super::{AuthError, Rule};
use crate::core::event::{Pdu, RoomVersion};
use crate::core::ids::UserId;
use crate::core::json::{integer_value, Object};
use crate::core::rooms::state::StateView;

/// OQ-15: a user may not change another user's entry whose current value is
/// at or above their own level. The draft's text says "higher than"; Matrix
/// and the reference implementation use "greater than or equal".
pub const OTHER_USER_LEVEL_AT_OR_ABOVE_IS_PROTECTED: bool = true;

const SCALAR_KEYS: [&str; 7] = ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"];

/// Reads a power level value. Versions before 10 also accepted strings.
fn level_of(v: &Value, version: &RoomVersion) -> Option<i64> {
    match v {
        Value::Number(n) => integer_value(n),
        Value::String(s) if !version.auth.integer_power_levels => s.trim().parse().ok(),
        _ => None,
    }
}

/// The power levels in force, with defaults filled in.
pub struct PowerLevels<'a> {
    version: &'static RoomVersion,
    content: Option<&'a Object>,
    creators: Vec<String>,
}

/// The level of a v12 room creator: above every level a power levels event
/// can name.
pub const CREATOR_LEVEL: i64 = i64::MAX;

impl<'a> PowerLevels<'a> {
    pub fn from_state(state: &'a impl StateView, version: &'static RoomVersion) -> Self {
        let content = state.power_levels().map(Pdu::content);
        let creators = state.create().map(|c| creators_of(c, version)).unwrap_or_default();
        PowerLevels { version, content, creators }
    }

    fn get(&self, key: &str) -> Option<i64> {
        self.content?.get(key).and_then(|v| level_of(v, self.version))
    }

    pub fn user_level(&self, user: &str) -> i64 {
        let is_creator = self.creators.iter().any(|c| c == user);
        if is_creator && self.version.auth.creators_infinite {
            return CREATOR_LEVEL;
        }
        let Some(content) = self.content else {
            // No power levels at all: the creator has 100 (item 55).
            return if is_creator { 100 } else { 0 };
        };
        content
            .get("users")
            .and_then(|u| u.get(user))
            .and_then(|v| level_of(v, self.version))
            .or_else(|| self.get("users_default"))
            .unwrap_or(0)
    }

    /// `ban`, `kick`, `invite` or `redact` level (item 71).
    pub fn action_level(&self, action: &str) -> i64 {
        let default = if action == "invite" { 0 } else { 50 };
        self.get(action).unwrap_or(default)
    }

    /// Level needed to send an event of `event_type` (item 72).
    pub fn send_level(&self, event_type: &str, is_state: bool) -> i64 {
        self.content
            .and_then(|c| c.get("events"))
            .and_then(|e| e.get(event_type))
            .and_then(|v| level_of(v, self.version))
            .unwrap_or_else(|| {
                if is_state {
                    self.get("state_default").unwrap_or(50)
                } else {
                    self.get("events_default").unwrap_or(0)
                }
            })
    }
}

/// The room creator: `content.creator` before v11, the create `sender` after.
pub fn creator_of(create: &Pdu, version: &RoomVersion) -> Option<String> {
    if version.auth.creator_in_content {
        create.content().get("creator").and_then(Value::as_str).map(str::to_owned)
    } else {
        Some(create.sender().as_str().to_owned())
    }
}

/// v12: the create `sender` and `content.additional_creators`; before, the
/// one creator.
pub fn creators_of(create: &Pdu, version: &RoomVersion) -> Vec<String> {
    let mut out: Vec<String> = creator_of(create, version).into_iter().collect();
    if version.auth.creators_infinite {
        let extra = create.content().get("additional_creators").and_then(Value::as_array);
        out.extend(extra.into_iter().flatten().filter_map(Value::as_str).map(str::to_owned));
    }
    out
}

fn is_level(v: &Value, version: &RoomVersion) -> bool {
    level_of(v, version).is_some()
}

fn is_level_map(v: &Value, version: &RoomVersion) -> bool {
    v.as_object().is_some_and(|m| m.values().all(|x| is_level(x, version)))
}

/// Rule 9: a new `m.room.power_levels` event.
pub fn check_power_levels_event(
    event: &Pdu,
    state: &impl StateView,
    version: &'static RoomVersion,
) -> Result<(), AuthError> {
    let lm = version.auth.lm;
    let content = event.content();
    for key in SCALAR_KEYS {
        if content.get(key).is_some_and(|v| !is_level(v, version)) {
            return Err(AuthError::new(Rule::new("9.1", "9.1"), format!("power_levels `{key}` is not an integer")));
        }
    }
    let mut maps = vec!["events"];
    if version.auth.notifications {
        maps.push("notifications");
    }
    for key in &maps {
        if content.get(*key).is_some_and(|v| !is_level_map(v, version)) {
            return Err(AuthError::new(
                Rule::new("9.2", "9.2"),
                format!("power_levels `{key}` is not a map of integers"),
            ));
        }
    }
    if let Some(users) = content.get("users") {
        let valid_user = |u: &str| match UserId::parse(u) {
            Ok(id) => !lm || id.is_lm_valid(),
            Err(_) => false,
        };
        let ok = users.as_object().is_some_and(|m| m.iter().all(|(k, v)| valid_user(k) && is_level(v, version)));
        if !ok {
            return Err(AuthError::new(
                Rule::new("9.3", "9.3"),
                "power_levels `users` must map valid user ids to integers",
            ));
        }
    }
    if version.auth.creators_infinite {
        // v12 rule 10.4: creators' power is not the power levels' to name.
        let creators = state.create().map(|c| creators_of(c, version)).unwrap_or_default();
        let users = content.get("users").and_then(Value::as_object);
        if let Some(c) = creators.iter().find(|c| users.is_some_and(|u| u.contains_key(c.as_str()))) {
            return Err(AuthError::new(Rule::new("-", "10.4"), format!("power_levels `users` names the creator {c}")));
        }
    }
    let Some(current) = state.power_levels() else {
        return Ok(()); // 9.4: the first power levels event
    };
    let old = current.content();
    let sender = event.sender().as_str();
    let sender_level = PowerLevels::from_state(state, version).user_level(sender);
    let read = |o: &Object, map: Option<&str>, key: &str| -> Option<i64> {
        let container = match map {
            Some(m) => o.get(m)?.as_object()?,
            None => o,
        };
        container.get(key).and_then(|v| level_of(v, version))
    };

    for key in SCALAR_KEYS {
        let (o, n) = (read(old, None, key), read(content, None, key));
        check_change(o, n, sender_level, (Rule::new("9.5", "9.5"), Rule::new("9.5", "9.5")), key)?;
    }
    for map in &maps {
        for key in union_keys(old, content, map) {
            let (o, n) = (read(old, Some(map), &key), read(content, Some(map), &key));
            let rules = (Rule::new("9.6", "9.6"), Rule::new("9.7", "9.7"));
            check_change(o, n, sender_level, rules, &format!("{map}.{key}"))?;
        }
    }
    for user in union_keys(old, content, "users") {
        let (o, n) = (read(old, Some("users"), &user), read(content, Some("users"), &user));
        if o.is_some() && o == n {
            continue;
        }
        if user != sender {
            let protected = if lm && !OTHER_USER_LEVEL_AT_OR_ABOVE_IS_PROTECTED {
                o.is_some_and(|o| o > sender_level)
            } else {
                o.is_some_and(|o| o >= sender_level)
            };
            if protected {
                return Err(AuthError::new(
                    Rule::new("9.8", "9.8"),
                    format!("cannot change the level of {user}, which is not below the sender's {sender_level}"),
                ));
            }
        }
        let rules = (Rule::new("9.8", "9.8"), Rule::new("9.9", "9.9"));
        check_change(o, n, sender_level, rules, &format!("users.{user}"))?;
    }
    Ok(())
}

fn union_keys(old: &Object, new: &Object, map: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for o in [old, new] {
        if let Some(m) = o.get(map).and_then(Value::as_object) {
            for k in m.keys() {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
    }
    keys
}

/// Rules 9.5-9.7, 9.9: an added, changed or removed level may not exceed the
/// sender's level, before or after. Absent values are not compared (OQ-15).
/// `rules` names the rule for the old and for the new value.
fn check_change(
    old: Option<i64>,
    new: Option<i64>,
    sender_level: i64,
    rules: (Rule, Rule),
    what: &str,
) -> Result<(), AuthError> {
    if old == new {
        return Ok(());
    }
    if let Some(o) = old.filter(|o| *o > sender_level) {
        let msg = format!("current level {o} of `{what}` is above the sender's {sender_level}");
        return Err(AuthError::new(rules.0, msg));
    }
    if let Some(n) = new.filter(|n| *n > sender_level) {
        let msg = format!("new level {n} of `{what}` is above the sender's {sender_level}");
        return Err(AuthError::new(rules.1, msg));
    }
    Ok(())
}
