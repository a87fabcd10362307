//! What another server may read of a room (OQ-10, digest 12; items 173,
//! 174, 178, 182). A server sees an event whole when the room was
//! world-readable at it, when one of its users was joined at it (or
//! invited, under `invited` visibility), or, under `shared` visibility,
//! when one of its users is joined now. Membership and visibility changes
//! count if they pass before or after the change. Anything else it may
//! know of is served redacted; a server with no member event in the room
//! at all (and a room that is not world-readable) gets `404`.
//!
//! So a server that left or was banned keeps what it saw while it was
//! there, and sees later events only as redacted envelopes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::core::event::{redact, Pdu};
use crate::core::ids::{RoomId, ServerName, UserId};
use crate::core::rooms::StateView;
use crate::federation::Node;
use crate::room::load::load_pdu;
use crate::room::RoomView;
use crate::wire::Failure;

const DEFAULT_VISIBILITY: &str = "shared";

/// How much of one event a server may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    Whole,
    Redacted,
}

/// The rule, over what held at the event: the history visibility and the
/// memberships of the server's users, before the event and after it.
pub fn sight(before: (&str, &[String]), after: (&str, &[String]), joined_now: bool) -> Sight {
    let passes = |(visibility, memberships): (&str, &[String])| {
        visibility == "world_readable"
            || memberships.iter().any(|m| m == "join")
            || (visibility == "invited" && memberships.iter().any(|m| m == "invite"))
            || (visibility == "shared" && joined_now)
    };
    if passes(before) || passes(after) {
        Sight::Whole
    } else {
        Sight::Redacted
    }
}

/// Whose sight is judged: a server (through all its users) or one local
/// user (a client reading history).
#[derive(Clone, Copy)]
pub enum Audience<'a> {
    Server(&'a ServerName),
    User(&'a UserId),
}

impl Audience<'_> {
    fn covers(&self, user: &str) -> bool {
        match self {
            Audience::Server(server) => UserId::parse(user).is_ok_and(|u| u.is_on(server)),
            Audience::User(u) => u.as_str() == user,
        }
    }
}

fn visibility_of(pdu: &Pdu) -> Option<String> {
    (pdu.event_type() == "m.room.history_visibility")
        .then(|| pdu.content().get("history_visibility").and_then(Value::as_str).map(str::to_owned))
        .flatten()
}

/// LM rooms: the history-visibility and membership changes of a room's
/// list, by list position, so the state at any event is a binary search
/// rather than a fold of the list. Built on first use, extended as the
/// list grows.
#[derive(Default)]
pub struct ListChanges {
    scanned: u64,
    visibility: Vec<(u64, String)>,
    members: HashMap<String, Vec<(u64, String)>>,
}

/// Each LM room's `ListChanges`.
#[derive(Default)]
pub struct VisibilityIndex {
    rooms: Mutex<HashMap<RoomId, Arc<tokio::sync::Mutex<ListChanges>>>>,
}

/// The last value set strictly before `index`, `Some(None)` when the key
/// changed only later, `None` when the list never changed it.
fn at(changes: &[(u64, String)], index: u64) -> Option<Option<&str>> {
    if changes.is_empty() {
        return None;
    }
    let n = changes.partition_point(|(i, _)| *i < index);
    Some(n.checked_sub(1).map(|k| changes[k].1.as_str()))
}

impl ListChanges {
    /// Reads list events not seen yet, a page at a time, yielding between
    /// pages so a long list does not hold a runtime worker.
    async fn extend(&mut self, node: &Node, view: &RoomView) -> Result<(), Failure> {
        const PAGE: u64 = 500;
        while self.scanned < view.length {
            let to = (self.scanned + PAGE).min(view.length);
            for (offset, id) in node.store.list(&view.room_id, self.scanned, to)?.iter().enumerate() {
                let index = self.scanned + offset as u64;
                let Some(rec) = node.store.event(id)? else { continue };
                if rec.soft_failed || rec.pruned {
                    continue;
                }
                let Some(p) = load_pdu(&node.store, view.version, id)? else { continue };
                if let Some(v) = visibility_of(&p) {
                    self.visibility.push((index, v));
                } else if let (Some(user), Some(m)) = (p.state_key(), p.membership()) {
                    if p.event_type() == "m.room.member" {
                        self.members.entry(user.to_owned()).or_default().push((index, m.to_owned()));
                    }
                }
            }
            self.scanned = to;
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Visibility and `server`'s memberships before list position `index`.
    /// A key the list never changed holds what the current state says
    /// (a participant's copy of the list starts at its join).
    fn before(&self, index: u64, who: Audience<'_>, view: &RoomView) -> (String, Vec<String>) {
        let current_visibility = || {
            view.state
                .get("m.room.history_visibility", "")
                .and_then(visibility_of)
                .unwrap_or_else(|| DEFAULT_VISIBILITY.into())
        };
        let visibility = match at(&self.visibility, index) {
            Some(v) => v.unwrap_or(DEFAULT_VISIBILITY).to_owned(),
            None => current_visibility(),
        };
        let mut memberships = Vec::new();
        for e in view.state.iter().filter(|e| e.event_type() == "m.room.member") {
            let Some(user) = e.state_key().filter(|u| who.covers(u)) else { continue };
            let m = match self.members.get(user).and_then(|c| at(c, index)) {
                Some(m) => m.map(str::to_owned),
                None => e.membership().map(str::to_owned),
            };
            memberships.extend(m);
        }
        (visibility, memberships)
    }
}

/// Serves a room's events to one server (or shows them to one user) by the
/// rules above.
pub struct Viewer<'a> {
    node: &'a Node,
    view: &'a RoomView,
    who: Audience<'a>,
    joined_now: bool,
    changes: Option<tokio::sync::OwnedMutexGuard<ListChanges>>,
}

impl<'a> Viewer<'a> {
    /// `404` when the server has no member event in the room and the room
    /// is not world-readable.
    pub async fn new(node: &'a Node, view: &'a RoomView, server: &'a ServerName) -> Result<Viewer<'a>, Failure> {
        Self::of(node, view, Audience::Server(server)).await
    }

    pub async fn of(node: &'a Node, view: &'a RoomView, who: Audience<'a>) -> Result<Viewer<'a>, Failure> {
        let members: Vec<&str> = view
            .state
            .iter()
            .filter(|e| e.event_type() == "m.room.member" && e.state_key().is_some_and(|u| who.covers(u)))
            .filter_map(|e| e.membership())
            .collect();
        let world = view.state.get("m.room.history_visibility", "").and_then(visibility_of).as_deref()
            == Some("world_readable");
        if members.is_empty() && !world {
            return Err(Failure::not_found("Unknown room"));
        }
        let changes = if view.version.is_mixed() {
            None
        } else {
            let cell = node.visibility.rooms.lock().expect("poisoned").entry(view.room_id.clone()).or_default().clone();
            let mut guard = cell.lock_owned().await;
            guard.extend(node, view).await?;
            Some(guard)
        };
        Ok(Viewer { node, view, who, joined_now: members.contains(&"join"), changes })
    }

    /// What the server may see of `pdu`.
    pub fn sight(&self, pdu: &Pdu) -> Result<Sight, Failure> {
        // A group's commits are for every member, whatever came before
        // their join (item 117): without them no member could follow the
        // group's epochs.
        if pdu.event_type() == "m.mls.commit" && self.joined_now {
            return Ok(Sight::Whole);
        }
        let own_change = |before: &(String, Vec<String>)| {
            let mut after = before.clone();
            if let Some(v) = visibility_of(pdu) {
                after.0 = v;
            }
            if let (Some(user), Some(m)) = (pdu.state_key(), pdu.membership()) {
                if pdu.event_type() == "m.room.member" && self.who.covers(user) {
                    after.1.push(m.to_owned());
                }
            }
            after
        };
        let before = match &self.changes {
            Some(changes) => {
                let rec = self.node.store.event(pdu.event_id())?;
                // Outliers (a participant's pre-join state) sit before the list.
                let index = rec.filter(|r| !r.outlier).map_or(0, |r| r.index);
                changes.before(index, self.who, self.view)
            }
            None => self.mixed_before(pdu)?,
        };
        let after = own_change(&before);
        Ok(sight((&before.0, &before.1), (&after.0, &after.1), self.joined_now))
    }

    /// Mixed rooms: from the state recorded before the event.
    fn mixed_before(&self, pdu: &Pdu) -> Result<(String, Vec<String>), Failure> {
        let Some(state) = crate::room::snapshot::state_before(&self.node.store, &self.node.dag, pdu)? else {
            return Ok((DEFAULT_VISIBILITY.into(), Vec::new()));
        };
        let load = |id| load_pdu(&self.node.store, self.view.version, id);
        let mut visibility = DEFAULT_VISIBILITY.to_owned();
        let mut memberships = Vec::new();
        for ((ty, key), id) in &state {
            let wanted = (ty == "m.room.history_visibility" && key.is_empty())
                || (ty == "m.room.member" && self.who.covers(key));
            if !wanted {
                continue;
            }
            let Some(p) = load(id)? else { continue };
            match visibility_of(&p) {
                Some(v) => visibility = v,
                None => memberships.extend(p.membership().map(str::to_owned)),
            }
        }
        Ok((visibility, memberships))
    }

    /// Whether the event is seen whole (a client is shown nothing else).
    pub fn sees(&self, pdu: &Pdu) -> Result<bool, Failure> {
        Ok(self.sight(pdu)? == Sight::Whole)
    }

    /// The event as this server may see it.
    pub fn serve(&self, pdu: &Pdu) -> Result<Value, Failure> {
        Ok(Value::Object(match self.sight(pdu)? {
            Sight::Whole => pdu.json().clone(),
            Sight::Redacted => redact(pdu.version(), pdu.json()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_rules_for_servers() {
        let none = m(&[]);
        // World-readable: anyone.
        assert_eq!(sight(("world_readable", &none), ("world_readable", &none), false), Sight::Whole);
        // Joined at the event.
        assert_eq!(sight(("joined", &m(&["join"])), ("joined", &m(&["join"])), false), Sight::Whole);
        // Left (or banned) before the event, under shared visibility and
        // with no user joined now: redacted.
        assert_eq!(sight(("shared", &m(&["ban"])), ("shared", &m(&["ban"])), false), Sight::Redacted);
        // Shared history is for servers with a user joined now.
        assert_eq!(sight(("shared", &m(&["leave"])), ("shared", &m(&["leave"])), true), Sight::Whole);
        // Invited: under `invited` only.
        assert_eq!(sight(("invited", &m(&["invite"])), ("invited", &m(&["invite"])), false), Sight::Whole);
        assert_eq!(sight(("joined", &m(&["invite"])), ("joined", &m(&["invite"])), true), Sight::Redacted);
        // A join event is visible to the joining server (after counts).
        assert_eq!(sight(("joined", &none), ("joined", &m(&["join"])), false), Sight::Whole);
    }

    #[test]
    fn changes_by_position() {
        let c = vec![(3, "shared".to_owned()), (7, "joined".to_owned())];
        assert_eq!(at(&c, 3), Some(None), "strictly before");
        assert_eq!(at(&c, 4), Some(Some("shared")));
        assert_eq!(at(&c, 8), Some(Some("joined")));
        assert_eq!(at(&[], 8), None);
    }
}
