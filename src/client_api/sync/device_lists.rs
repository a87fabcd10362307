//! The device-list part of `/sync` and `GET keys/changes`: whose devices
//! changed for this user, who newly shares a room, who no longer does.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{Item, Syncer, Token};
use crate::client_api::filter::SyncFilter;
use crate::client_api::Call;
use crate::core::ids::{RoomId, UserId};
use crate::http::query_get;
use crate::store::records::side_entry::Kind;
use crate::store::SideTopic;
use crate::wire::Failure;

impl Syncer<'_> {
    /// Whether `other` is joined to one of `rooms`, read without waking
    /// rooms at rest (their stored state says).
    pub(super) fn shares_a_room(&self, other: &UserId, rooms: &[RoomId]) -> Result<bool, Failure> {
        use crate::core::rooms::StateView;
        if other == self.user {
            return Ok(true);
        }
        let store = &self.call.server.store;
        for room in rooms {
            let joined = match self.call.server.rooms.peek(room) {
                Some(view) => view.state.membership(other.as_str()) == "join",
                None => match store.state_event(room, "m.room.member", other.as_str())? {
                    Some(id) => store.event(&id)?.is_some_and(|rec| {
                        serde_json::from_slice::<Value>(&rec.json)
                            .is_ok_and(|e| e["content"]["membership"].as_str() == Some("join"))
                    }),
                    None => false,
                },
            };
            if joined {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Users sharing a joined room with ours.
    pub(super) fn contacts(&self, rooms: &[RoomId]) -> BTreeSet<UserId> {
        let mut out = BTreeSet::from([self.user.clone()]);
        for room in rooms {
            if let Some(view) = self.call.server.rooms.get_view(room) {
                out.extend(view.state.joined_members());
            }
        }
        out
    }

    /// Users whose device lists changed in `(since, upto]` and who share a
    /// joined room with ours (ours among them), and users who newly share
    /// one; and users who no longer share any. Clients encrypt to what this
    /// says.
    pub(super) fn device_lists(
        &self,
        since: u64,
        upto: u64,
        joined: &[RoomId],
        members: &MemberChanges,
    ) -> Result<(BTreeSet<String>, BTreeSet<String>), Failure> {
        let mut changed = BTreeSet::new();
        match device_list_news(&self.call.server.store, since, upto)? {
            Some(news) => {
                for user in news {
                    if self.shares_a_room(&user, joined)? {
                        changed.insert(user.to_string());
                    }
                }
            }
            None => changed.extend(self.contacts(joined).iter().map(|u| u.to_string())),
        }
        changed.extend(keys_seen_by(&self.call.server.store, self.user, since, upto)?);
        for room in &members.rooms_joined {
            if let Some(view) = self.call.server.rooms.get_view(room) {
                changed.extend(view.state.joined_members().filter(|u| u != self.user).map(|u| u.to_string()));
            }
        }
        changed.extend(members.joined.iter().filter(|u| *u != self.user).map(|u| u.to_string()));
        let mut gone: BTreeSet<UserId> = members.left.clone();
        for room in &members.rooms_left {
            if let Some(view) = self.call.server.rooms.get_view(room) {
                gone.extend(view.state.joined_members());
            }
        }
        let mut left = BTreeSet::new();
        for user in gone {
            if &user != self.user && !self.shares_a_room(&user, joined)? {
                changed.remove(user.as_str());
                left.insert(user.to_string());
            }
        }
        Ok((changed, left))
    }
}

/// `GET keys/changes?from=&to=`: users whose device lists changed between
/// two sync tokens and who share a room with the caller now.
pub fn keys_changes(call: Call) -> Result<Value, Failure> {
    let (user, device) = call.who()?;
    let token = |name: &str| {
        let t = query_get(&call.query, name).ok_or_else(|| Failure::MissingParam(format!("{name} is required")))?;
        Token::parse(t).ok_or_else(|| Failure::invalid_param(format!("unknown {name} token")))
    };
    let (from, to) = (token("from")?, token("to")?);
    let upto = to.pos.min(call.server.positions.watermark());
    let filter = SyncFilter::default();
    let s = Syncer { call: &call, user, device, filter: &filter };
    let joined: Vec<RoomId> = call
        .server
        .store
        .memberships(user)?
        .into_iter()
        .filter(|(_, m)| m.membership == "join")
        .map(|(room, _)| room)
        .collect();
    let mut changed = BTreeSet::new();
    match device_list_news(&call.server.store, from.pos, upto)? {
        Some(news) => {
            for other in news {
                if s.shares_a_room(&other, &joined)? {
                    changed.insert(other.to_string());
                }
            }
        }
        None => changed.extend(s.contacts(&joined).iter().map(|u| u.to_string())),
    }
    changed.extend(keys_seen_by(&call.server.store, user, from.pos, upto)?);
    Ok(json!({"changed": changed, "left": []}))
}

/// Users whose keys changed as `viewer` alone sees them, in `(since, upto]`.
fn keys_seen_by(
    store: &std::sync::Arc<dyn crate::store::Store>,
    viewer: &UserId,
    since: u64,
    upto: u64,
) -> Result<BTreeSet<String>, Failure> {
    let topic = SideTopic::DevicesSeenBy(viewer.as_str());
    let mut users = BTreeSet::new();
    for (_, side) in store.side_entries(topic, since, upto, DEVICE_LIST_CHANGES)? {
        if let Some(Kind::KeysSeenBy(k)) = side.kind {
            users.insert(k.user);
        }
    }
    Ok(users)
}

/// Device list side entries read per answer at most.
const DEVICE_LIST_CHANGES: usize = 10_000;

/// Users whose device lists changed in `(since, upto]`, as the side stream
/// has them.
/// `None` when there were more than one answer reads: then every contact
/// counts as changed (a client far behind re-reads them all rather than
/// miss one).
fn device_list_news(
    store: &std::sync::Arc<dyn crate::store::Store>,
    since: u64,
    upto: u64,
) -> Result<Option<BTreeSet<UserId>>, Failure> {
    let entries = store.side_entries(SideTopic::Devices, since, upto, DEVICE_LIST_CHANGES)?;
    if entries.len() == DEVICE_LIST_CHANGES {
        return Ok(None);
    }
    let mut users = BTreeSet::new();
    for (_, side) in entries {
        if let Some(Kind::DeviceUser(u)) = side.kind {
            users.extend(UserId::parse(&u).ok());
        }
    }
    Ok(Some(users))
}

/// Membership news in the timelines a sync shows: who joined or left the
/// user's rooms, and which rooms the user joined or left.
#[derive(Default)]
pub(super) struct MemberChanges {
    pub(super) joined: BTreeSet<UserId>,
    pub(super) left: BTreeSet<UserId>,
    pub(super) rooms_joined: Vec<RoomId>,
    pub(super) rooms_left: Vec<RoomId>,
}

impl MemberChanges {
    pub(super) fn read(&mut self, items: &[Item]) {
        for item in items {
            let e = &item.event;
            if e["type"].as_str() != Some("m.room.member") {
                continue;
            }
            let Some(user) = e["state_key"].as_str().and_then(|u| UserId::parse(u).ok()) else { continue };
            match e["content"]["membership"].as_str() {
                Some("join") => {
                    self.left.remove(&user);
                    self.joined.insert(user);
                }
                Some("leave" | "ban") => {
                    self.joined.remove(&user);
                    self.left.insert(user);
                }
                _ => {}
            }
        }
    }
}
