//! Putting a checked event on the in-memory tail, with its writes: event,
//! list entry, state, stream position, our users' memberships, and (hub)
//! the outbound queue of every destination.

use std::sync::Arc;

use super::fanout::destinations;
use super::snapshot::Dag;
use super::{Effects, Machine, RoomError};
use crate::core::event::Pdu;
use crate::core::ids::{EventId, ServerName, UserId};
use crate::core::rooms::StateView;
use crate::store::records::{queue_item, EventRecord, Membership, QueueItem, RelationEntry};
use crate::store::{Op, StreamEntry};

impl Machine {
    pub(super) fn dag(&self) -> Dag<'_> {
        Dag { store: &*self.reads, cache: &self.cache }
    }

    pub(super) fn stage(&mut self, out: &mut Effects, pdu: Pdu) -> Result<Arc<Pdu>, RoomError> {
        self.stage_with(out, pdu, false)
    }

    pub(super) fn stage_with(&mut self, out: &mut Effects, pdu: Pdu, soft_failed: bool) -> Result<Arc<Pdu>, RoomError> {
        let pdu = Arc::new(pdu);
        let pos = self.append_entry(out, &pdu, soft_failed)?;
        let old_membership = self.target_membership(&pdu);
        if !soft_failed {
            if let Some(sk) = pdu.state_key() {
                self.set_state(out, pdu.event_type(), sk, Some(pdu.clone()), pos);
            }
            self.mls_appended(&pdu);
        }
        self.after_append(out, &pdu, soft_failed, old_membership.as_deref(), pos);
        Ok(pdu)
    }

    /// The current membership of a member event's target.
    pub(super) fn target_membership(&self, pdu: &Pdu) -> Option<String> {
        match (pdu.event_type() == "m.room.member", pdu.state_key()) {
            (true, Some(t)) => Some(self.cur.state.membership(t).to_owned()),
            _ => None,
        }
    }

    /// Writes the event, its list entry and (unless soft-failed) its stream
    /// position, and moves the tail. Returns the stream position.
    pub(super) fn append_entry(
        &mut self,
        out: &mut Effects,
        pdu: &Arc<Pdu>,
        soft_failed: bool,
    ) -> Result<u64, RoomError> {
        let pos = out.position()?;
        let id = pdu.event_id().clone();
        let room = self.cur.room_id.clone();
        let index = self.cur.length;
        let (json, canonical) = crate::store::stored_json(pdu.json());
        let stream = if soft_failed { 0 } else { pos };
        out.batch
            .push(Op::PutEvent(
                id.clone(),
                EventRecord {
                    json,
                    canonical,
                    room_id: room.to_string(),
                    index,
                    stream,
                    soft_failed,
                    hash_redacted: pdu.hash_redacted(),
                    ..Default::default()
                },
            ))
            .push(Op::ListEntry { room: room.clone(), index, event: id.clone() });
        if !soft_failed {
            if let Some((parent, rel_type)) = relation_of(pdu) {
                let entry = RelationEntry {
                    child: id.to_string(),
                    rel_type,
                    event_type: pdu.event_type().to_owned(),
                    sender: pdu.sender().to_string(),
                };
                out.batch.push(Op::PutRelation { room: room.clone(), parent, pos, entry });
            }
            out.batch.push(Op::StreamEntry(StreamEntry { pos, room, event: id.clone() }));
        }
        if self.rules.caches_events() {
            self.cache.remember_event(pdu.clone());
        }
        self.cur.tail = Some(id.clone());
        self.cur.length += 1;
        out.staged_pdus.insert(id.clone(), pdu.clone());
        out.staged_ids.insert(id);
        out.appended = true;
        Ok(pos)
    }

    /// Changes one key of the current state (`None` removes it), with what
    /// follows from it: joined servers and our users' memberships.
    pub(super) fn set_state(&mut self, out: &mut Effects, ty: &str, sk: &str, event: Option<Arc<Pdu>>, pos: u64) {
        let room = self.cur.room_id.clone();
        let is_member = ty == "m.room.member";
        let old = is_member.then(|| self.cur.state.membership(sk).to_owned());
        match &event {
            Some(e) => {
                out.batch.push(Op::SetState {
                    room: room.clone(),
                    event_type: ty.to_owned(),
                    state_key: sk.to_owned(),
                    event: e.event_id().clone(),
                });
                Arc::make_mut(&mut self.cur.state).apply(e.clone());
            }
            None => {
                out.batch.push(Op::DeleteState {
                    room: room.clone(),
                    event_type: ty.to_owned(),
                    state_key: sk.to_owned(),
                });
                Arc::make_mut(&mut self.cur.state).remove(ty, sk);
            }
        }
        let Some(old) = old else { return };
        let new = event.as_ref().and_then(|e| e.membership()).unwrap_or("leave");
        let Ok(user) = UserId::parse(sk) else { return };
        self.joined.update(&user, &old, new);
        if !user.is_on(self.me()) && new == "join" && old != "join" {
            // A user of another server now shares a room with ours: their
            // server may not have told us of device changes while none
            // did, so a cached copy of their device list is not trusted.
            out.batch.push(Op::DeleteUserKeys {
                user: user.clone(),
                kind: crate::store::DEVICE_LIST_KIND.into(),
                a: None,
                b: None,
            });
        }
        if user.is_on(self.me()) {
            let event_id = event.as_ref().map(|e| e.event_id().to_string()).unwrap_or_default();
            // What the invitee's or knocker's clients show of the room
            // (their own member event among it) before they join.
            let invite_state_json = match (new, &event) {
                ("invite" | "knock", Some(e)) => {
                    let mut shown = self.cur.stripped_state(Some(e.sender()));
                    // A knock's sender is its target: listed already.
                    if e.sender() != &user {
                        shown.push(crate::room::machine::stripped::strip(e));
                    }
                    serde_json::to_vec(&shown).unwrap_or_default()
                }
                _ => Vec::new(),
            };
            out.batch.push(Op::PutMembership {
                user,
                room,
                membership: Membership {
                    membership: new.to_owned(),
                    stream: pos,
                    event_id,
                    via_server: self.cur.hub.to_string(),
                    room_version: self.cur.version.id.to_owned(),
                    invite_state_json,
                    ..Default::default()
                },
            });
        }
    }

    /// What an appended event sets off: the hub queues it for every
    /// destination, a participant settles its own pending send, and an
    /// accepted redaction is applied.
    pub(super) fn after_append(
        &mut self,
        out: &mut Effects,
        pdu: &Arc<Pdu>,
        soft_failed: bool,
        old_membership: Option<&str>,
        pos: u64,
    ) {
        let id = pdu.event_id().clone();
        if self.is_hub() {
            if let Some(hash) = pdu.lpdu_hash() {
                let room = self.cur.room_id.clone();
                out.batch.push(Op::LpduIndex { room, lpdu_hash: hash.to_owned(), event: id.clone() });
            }
            // Soft-failed events are kept and served, not relayed.
            if !soft_failed {
                for dest in destinations(self.me(), &self.joined, pdu, old_membership) {
                    if self.origin_has_it(pdu, &dest) {
                        continue;
                    }
                    let item = QueueItem { item: Some(queue_item::Item::EventId(id.to_string())) };
                    out.batch.push(Op::Enqueue { dest: dest.clone(), pos, item });
                    out.wake.insert(dest);
                }
            }
        } else if pdu.sender().is_on(self.me()) {
            if let Some(key) = self.rules.echo_key(pdu) {
                self.note_echo(out, key, &id);
            }
        }
        if !soft_failed && pdu.event_type() == "m.room.redaction" {
            self.apply_redaction(out, pdu);
        }
    }

    /// A DAG server sends its own events to every server in the room, so
    /// the hub does not send them back to it. lmx participants get their
    /// own events back: that is how they learn the event's place.
    fn origin_has_it(&self, pdu: &Pdu, dest: &ServerName) -> bool {
        pdu.hub_server().is_none() && pdu.sender().is_on(dest) && self.reads.linearized(dest) == Some(false)
    }

    /// Whether the event is in the list (staged in this batch or stored,
    /// not as an outlier).
    pub(super) fn knows(&self, out: &Effects, id: &EventId) -> bool {
        out.staged_ids.contains(id) || matches!(self.reads.stored_event(id), Ok(Some(r)) if !r.outlier)
    }
}

/// The parent and kind of an event's relation (`m.relates_to` with a
/// `rel_type` and an `event_id`), for the relations index.
fn relation_of(pdu: &Pdu) -> Option<(String, String)> {
    let rel = pdu.content().get("m.relates_to")?.as_object()?;
    let rel_type = rel.get("rel_type")?.as_str().filter(|t| !t.is_empty() && t.len() <= 255)?;
    let parent = rel.get("event_id")?.as_str().filter(|p| p.starts_with('$') && p.len() <= 255)?;
    Some((parent.to_owned(), rel_type.to_owned()))
}
