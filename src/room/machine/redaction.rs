//! What an appended event does beyond the list: a redaction rewrites the
//! stored event it targets, and a follower trims its cache of old events.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::{Effects, Machine, RoomError};
use crate::core::event::{redact, Pdu};
use crate::core::ids::EventId;
use crate::core::json::{self, NumberPolicy};
use crate::core::rooms::{PowerLevels, StateView};
use crate::store::records::EventRecord;
use crate::store::Op;

/// Old events a follower trims at once (at most the cache size), so
/// trimming is not per event.
const PRUNE_STEP: u64 = 64;

impl Machine {
    /// Applies an accepted `m.room.redaction`: the target is stored in its
    /// redacted form when the redactor may redact it (OQ-11: power level at
    /// least `redact`, or the same server as the target's sender). The
    /// event id does not change; the hub serves the redacted form from now on.
    pub(super) fn apply_redaction(&mut self, out: &mut Effects, redaction: &Pdu) {
        let target = redaction
            .content()
            .get("redacts")
            .or_else(|| redaction.json().get("redacts"))
            .and_then(Value::as_str)
            .and_then(|s| EventId::parse(s).ok());
        let Some(target) = target else { return };
        let Ok(Some(rec)) = self.reads.stored_event(&target) else { return };
        if rec.room_id != self.cur.room_id.as_str() || rec.pruned || !rec.redacted_by.is_empty() {
            return;
        }
        let Ok(obj) = json::parse_object(&rec.json, NumberPolicy::Ieee754) else { return };
        let original_sender = obj.get("sender").and_then(Value::as_str).unwrap_or("");
        let same_server = original_sender.rsplit_once(':').is_some_and(|_| {
            crate::core::ids::UserId::parse(original_sender)
                .is_ok_and(|u| u.server_name() == redaction.sender().server_name())
        });
        let levels = PowerLevels::from_state(&self.cur.state, self.cur.version);
        let allowed = levels.user_level(redaction.sender().as_str()) >= levels.action_level("redact") || same_server;
        if !allowed {
            return;
        }
        let redacted = redact(self.cur.version, &obj);
        if let Ok(pdu) = Pdu::from_trusted(self.cur.version, redacted.clone(), target.clone()) {
            if let Some(sk) = pdu.state_key() {
                if self.cur.state.get(pdu.event_type(), sk).is_some_and(|cur| cur.event_id() == &target) {
                    Arc::make_mut(&mut self.cur.state).apply(Arc::new(pdu));
                }
            }
        }
        let (json, canonical) = crate::store::stored_json(&redacted);
        let record = EventRecord { json, canonical, redacted_by: redaction.event_id().to_string(), ..rec };
        self.cache.forget_event(&target);
        out.changed.push(target.clone());
        out.batch.push(Op::PutEvent(target, record));
    }

    /// A follower keeps `follower.timeline_cache` recent events of rooms
    /// hubbed elsewhere; older ones (not in the current state) lose their
    /// JSON and are fetched from the hub when a client pages back to them.
    /// In mixed rooms every state event and forward extremity stays: state
    /// resolution reads old state events through auth chains.
    pub(super) fn trim_cache(&mut self, out: &mut Effects) {
        let Some(keep) = self.env.timeline_cache else { return };
        if self.is_hub() {
            return;
        }
        let keep = keep.max(1);
        let upto = self.cur.length.saturating_sub(keep);
        if upto < self.pruned_upto + PRUNE_STEP.min(keep) {
            return;
        }
        let _ = self.prune_before(upto, out);
    }

    /// Drops the JSON of cached events before list position `upto` (not in
    /// the current state, nor what the rules keep); how many.
    fn prune_before(&mut self, upto: u64, out: &mut Effects) -> Result<u64, RoomError> {
        let in_state: HashSet<&EventId> = self.cur.state.iter().map(|e| e.event_id()).collect();
        let ids = self
            .reads
            .list(&self.cur.room_id, self.pruned_upto, upto)
            .map_err(|e| RoomError::Storage(e.to_string()))?;
        let mut pruned = 0;
        for id in ids {
            if in_state.contains(&id) {
                continue;
            }
            if let Ok(Some(rec)) = self.reads.stored_event(&id) {
                if !rec.pruned && !self.rules.keeps(self, &id, &rec) {
                    out.batch.push(Op::PutEvent(
                        id,
                        EventRecord { json: Vec::new(), canonical: false, pruned: true, ..rec },
                    ));
                    pruned += 1;
                }
            }
        }
        self.pruned_upto = self.pruned_upto.max(upto);
        Ok(pruned)
    }

    /// An operator's purge of a followed room's cached history: all but the
    /// newest `keep` events lose their JSON (the hub keeps the room's
    /// record; a client paging back fetches them again). Not on the hub.
    pub(super) fn purge(&mut self, keep: u64, out: &mut Effects) -> Result<u64, RoomError> {
        if self.is_hub() {
            return Err(RoomError::Forbidden(
                "this server hubs the room: its list is the room's record and is not purged".into(),
            ));
        }
        let upto = self.cur.length.saturating_sub(keep.max(1));
        self.prune_before(upto, out)
    }
}
