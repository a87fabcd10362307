//! Auth events selection (digest 4.3, item 69; Matrix server-server spec
//! "Auth events selection"; OQ-8).

use serde_json::Value;

use super::state::StateView;
use crate::core::event::{Pdu, RoomVersion};
use crate::core::ids::EventId;
use crate::core::json::Object;

/// What selection needs to know about an event being built or checked.
#[derive(Debug, Clone, Copy)]
pub struct EventSketch<'a> {
    pub event_type: &'a str,
    pub sender: &'a str,
    pub state_key: Option<&'a str>,
    pub content: &'a Object,
}

impl<'a> EventSketch<'a> {
    pub fn of(pdu: &'a Pdu) -> Self {
        EventSketch {
            event_type: pdu.event_type(),
            sender: pdu.sender().as_str(),
            state_key: pdu.state_key(),
            content: pdu.content(),
        }
    }
}

/// The (`type`, `state_key`) pairs an event's auth events may have, in the
/// order events are listed when building. With `receiving`, LM knocks may
/// also name the join rules, as Matrix servers build them (OQ-8).
pub fn auth_types(version: &RoomVersion, e: EventSketch<'_>, receiving: bool) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(5);
    let mut push = |t: &str, k: &str| {
        if !out.iter().any(|(a, b)| a == t && b == k) {
            out.push((t.to_owned(), k.to_owned()));
        }
    };
    if e.event_type == "m.room.create" {
        return Vec::new();
    }
    if !version.room_id_from_create {
        push("m.room.create", "");
    }
    push("m.room.power_levels", "");
    push("m.room.member", e.sender);
    if e.event_type == "m.room.member" {
        if let Some(target) = e.state_key {
            push("m.room.member", target);
        }
        let membership = e.content.get("membership").and_then(Value::as_str);
        let join_rules_needed = match membership {
            Some("join") | Some("invite") => true,
            Some("knock") => !version.auth.lm || receiving,
            _ => false,
        };
        if join_rules_needed {
            push("m.room.join_rules", "");
        }
        if !version.auth.lm {
            matrix_extras(version, e, membership, &mut push);
        }
    }
    out
}

fn matrix_extras(
    version: &RoomVersion,
    e: EventSketch<'_>,
    membership: Option<&str>,
    push: &mut impl FnMut(&str, &str),
) {
    if membership == Some("invite") {
        let token = e
            .content
            .get("third_party_invite")
            .and_then(|t| t.get("signed"))
            .and_then(|s| s.get("token"))
            .and_then(Value::as_str);
        if let Some(token) = token {
            push("m.room.third_party_invite", token);
        }
    }
    if version.auth.restricted && membership == Some("join") {
        if let Some(via) = e.content.get("join_authorised_via_users_server").and_then(Value::as_str) {
            push("m.room.member", via);
        }
    }
}

pub fn auth_types_for(pdu: &Pdu, receiving: bool) -> Vec<(String, String)> {
    auth_types(pdu.version(), EventSketch::of(pdu), receiving)
}

/// The ids of the current state events an event being built must list
/// (those that exist), in selection order.
pub fn select_auth_events(version: &RoomVersion, state: &impl StateView, e: EventSketch<'_>) -> Vec<EventId> {
    auth_types(version, e, false).iter().filter_map(|(t, k)| state.get(t, k)).map(|ev| ev.event_id().clone()).collect()
}
