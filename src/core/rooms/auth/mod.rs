//! Authorization rules as pure functions over a state view: the LM draft's
//! rules (digest 4.5, items 73-101) and Matrix room versions 10 and 11.
//!
//! `authorize` runs every rule that reads room state (LM rules 3 and 5-10,
//! Matrix rules 1 and 3-10). Signatures (LM 1-2) are checked where keys are
//! at hand, and the `auth_events` rules (LM 4, Matrix 2) by
//! `check_auth_events`, since both need more than the state.

mod member;
mod power;
mod third_party;

use std::fmt;

use serde_json::Value;

pub use power::{creator_of, PowerLevels, OTHER_USER_LEVEL_AT_OR_ABOVE_IS_PROTECTED};

use super::selection::auth_types_for;
use super::state::StateView;
use crate::core::event::{Pdu, RoomVersion};

/// A rule's number in the LM draft and in the Matrix room version spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub lm: &'static str,
    pub matrix: &'static str,
}

impl Rule {
    pub const fn new(lm: &'static str, matrix: &'static str) -> Self {
        Rule { lm, matrix }
    }
}

/// Why an event fails authorization; names the rule that decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AuthError {
    pub rule: Rule,
    pub reason: String,
    lm: bool,
}

impl AuthError {
    pub fn new(rule: Rule, reason: impl Into<String>) -> Self {
        AuthError { rule, reason: reason.into(), lm: false }
    }

    fn in_version(mut self, version: &RoomVersion) -> Self {
        self.lm = version.auth.lm;
        self
    }

    /// The rule number in the numbering of the room version checked.
    pub fn rule_label(&self) -> &'static str {
        if self.lm {
            self.rule.lm
        } else {
            self.rule.matrix
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}: {}", self.rule_label(), self.reason)
    }
}

fn reject(lm: &'static str, mx: &'static str, msg: impl Into<String>) -> Result<(), AuthError> {
    Err(AuthError::new(Rule::new(lm, mx), msg))
}

/// Runs the state-dependent authorization rules for `event` against the
/// room state before it.
pub fn authorize(event: &Pdu, state: &impl StateView) -> Result<(), AuthError> {
    let version = event.version();
    rules(event, state, version).map_err(|e| e.in_version(version))
}

fn rules(event: &Pdu, state: &impl StateView, version: &'static RoomVersion) -> Result<(), AuthError> {
    if event.event_type() == "m.room.create" {
        return check_create(event, version);
    }
    let Some(create) = state.create() else {
        return reject("4.3", "2.4", "the room state has no m.room.create event");
    };
    if create.room_id() != event.room_id() {
        return reject("4 (OQ-7)", "2.5", "the event belongs to another room");
    }
    if version.auth.lm {
        // OQ-6: only the room's hub may turn LPDUs into events.
        if let Some(hub) = event.hub_server() {
            if !create.sender().is_on(hub) {
                return reject("hub_server (OQ-6)", "-", format!("hub_server {hub} is not the room's hub"));
            }
        }
    }
    let federate = create.content().get("m.federate") != Some(&Value::Bool(false));
    if !federate && create.sender().server_name() != event.sender().server_name() {
        return reject("m.federate (OQ-44)", "3", "the room does not federate");
    }
    if event.event_type() == "m.room.member" {
        return member::check_member(event, state, version);
    }
    let sender = event.sender().as_str();
    if state.membership(sender) != "join" {
        return reject("6", "5", "the sender is not joined to the room");
    }
    let pl = PowerLevels::from_state(state, version);
    let sender_level = pl.user_level(sender);
    if !version.auth.lm && event.event_type() == "m.room.third_party_invite" {
        let need = pl.action_level("invite");
        return if sender_level >= need {
            Ok(())
        } else {
            reject("-", "6", format!("sender level {sender_level} is below the invite level {need}"))
        };
    }
    let need = pl.send_level(event.event_type(), event.is_state());
    if need > sender_level {
        let ty = event.event_type();
        return reject("7", "7", format!("sending {ty} needs level {need}, the sender has {sender_level}"));
    }
    if let Some(sk) = event.state_key() {
        if sk.starts_with('@') && sk != sender {
            return reject("8", "8", "a state_key starting with @ must be the sender");
        }
    }
    if event.event_type() == "m.room.power_levels" {
        return power::check_power_levels_event(event, state, version);
    }
    Ok(())
}

fn check_create(event: &Pdu, version: &'static RoomVersion) -> Result<(), AuthError> {
    if !event.prev_events().is_empty() {
        return reject("3.1", "1.1", "m.room.create must not have prev_events");
    }
    if version.auth.lm && !event.auth_events().is_empty() {
        return reject("3.1 (OQ-7)", "-", "m.room.create must not have auth_events");
    }
    if version.room_id_from_create {
        if event.json().contains_key("room_id") {
            return reject("-", "1.2", "a version 12 m.room.create must not have a room_id");
        }
    } else if event.room_id().domain() != Some(event.sender().server_name().as_str()) {
        return reject("3.2", "1.2", "the room id's domain differs from the sender's");
    }
    let room_version = event.content().get("room_version");
    if version.auth.lm {
        if room_version.and_then(Value::as_str) != Some(version.id) {
            return reject("3.3", "-", format!("content.room_version must be {:?}", version.id));
        }
    } else if let Some(v) = room_version {
        if v.as_str().and_then(RoomVersion::find).is_none() {
            return reject("-", "1.3", format!("unknown room version {v}"));
        }
    }
    if version.auth.creators_infinite {
        let valid = |v: &Value| v.as_str().is_some_and(|s| crate::core::ids::UserId::parse(s).is_ok());
        match event.content().get("additional_creators") {
            None => {}
            Some(Value::Array(a)) if a.iter().all(valid) => {}
            Some(_) => return reject("-", "1.4", "additional_creators must be an array of user ids"),
        }
    }
    if version.auth.creator_in_content && !event.content().contains_key("creator") {
        return reject("-", "1.4", "content.creator is required in this room version");
    }
    Ok(())
}

/// LM rule 4 / Matrix rule 2 on the events an event names as its auth
/// events (resolved by the caller, who also rejects unknown or rejected
/// ones: OQ-7).
pub fn check_auth_events(event: &Pdu, auth_events: &[&Pdu]) -> Result<(), AuthError> {
    let version = event.version();
    let allowed = auth_types_for(event, true);
    let mut seen: Vec<(&str, &str)> = Vec::new();
    let mut has_create = false;
    for a in auth_events {
        let key = (a.event_type(), a.state_key().unwrap_or(""));
        if a.state_key().is_none() || seen.contains(&key) {
            return reject("4.1", "2.1", format!("duplicate or non-state auth event {}", a.event_id()))
                .map_err(|e| e.in_version(version));
        }
        seen.push(key);
        if !allowed.iter().any(|(t, k)| t == key.0 && k == key.1) {
            let msg = format!("auth event {} ({} {:?}) is not one the selection picks", a.event_id(), key.0, key.1);
            return reject("4.2", "2.2", msg).map_err(|e| e.in_version(version));
        }
        if a.room_id() != event.room_id() {
            return reject("4 (OQ-7)", "2.5", "an auth event belongs to another room")
                .map_err(|e| e.in_version(version));
        }
        has_create |= key.0 == "m.room.create";
    }
    if !has_create && !version.room_id_from_create {
        return reject("4.3", "2.4", "auth_events lack the m.room.create event").map_err(|e| e.in_version(version));
    }
    Ok(())
}

/// Receive check 4a: the event's own auth events are the right ones and
/// allow it. `create` is the room's create event where the version leaves
/// it out of `auth_events` (v12: the room id names it).
pub fn authorize_by_auth_events(
    event: &Pdu,
    auth_events: &[std::sync::Arc<Pdu>],
    create: Option<std::sync::Arc<Pdu>>,
) -> Result<(), AuthError> {
    let refs: Vec<&Pdu> = auth_events.iter().map(|e| e.as_ref()).collect();
    check_auth_events(event, &refs)?;
    let mut state = super::state::StateMap::from_events(auth_events.iter().cloned());
    if let Some(c) = create {
        state.apply(c);
    }
    authorize(event, &state)
}
