//! Mixed rooms (Matrix room versions 10-12; DESIGN "Room kinds"): the list
//! is still the order of record, but events form a DAG. Every event gets
//! the checks on receipt of the Matrix spec: against its auth events and
//! the state before it (reject), against the current state (soft-fail);
//! state before an event is the resolution of the states after its prev
//! events; the current state is the resolution over the forward
//! extremities. Hub and participants run the same code, so a participant
//! follows the state the hub resolved by replaying the hub's list.

use std::sync::Arc;

use serde_json::{json, Value};

use super::build::Draft;
use super::snapshot::Events;
use super::{counted, Effects, Machine, RoomError};
use crate::core::event::{sign_event, Pdu, Schema};
use crate::core::ids::EventId;
use crate::core::json::Object;
use crate::core::rooms::{
    authorize, authorize_by_auth_events, resolve, select_auth_events, EventSketch, EventSource, StateIds, StateMap,
};
use crate::store::records::EventRecord;
use crate::store::Op;

/// Largest depth Matrix allows.
const MAX_DEPTH: i64 = (1 << 53) - 1;

/// What became of an event offered to a mixed room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Appended and applied.
    Accepted,
    /// Appended (kept, served) but not applied, shown or relayed.
    SoftFailed(String),
    /// Not appended; remembered so it is not fetched again.
    Rejected(String),
    /// Already in the room.
    Known,
}

/// An event a room needs without taking it into its list: an auth event,
/// or a prev event fetched with the state before it (a gap too old to fill
/// event by event).
pub struct Outlier {
    pub pdu: Pdu,
    pub state_before: Option<StateIds>,
}

enum Check {
    Pass { before: StateIds, soft_fail: Option<String> },
    Reject(String),
}

impl Machine {
    fn events(&self) -> Events<'_> {
        self.dag().events(self.cur.version)
    }

    /// Offers a checked event (signatures and hashes done) to the room.
    /// Its prev and auth events must be known by now.
    pub(super) fn dag_accept(&mut self, out: &mut Effects, pdu: Pdu) -> Result<Verdict, RoomError> {
        let id = pdu.event_id().clone();
        if self.knows(out, &id) {
            return Ok(Verdict::Known);
        }
        match self.reads.stored_event(&id)? {
            Some(r) if !r.rejected.is_empty() => return Ok(Verdict::Rejected(r.rejected)),
            // A participant's outliers came with its join or were fetched
            // as what the hub's events need: the hub sequenced them before
            // (offered again, they do not enter our list after our join).
            Some(r) if r.outlier && !self.is_hub() => return Ok(Verdict::Known),
            _ => {}
        }
        match self.dag_check(&pdu)? {
            Check::Reject(reason) => {
                tracing::info!(event = %id, sender = %pdu.sender(), %reason, "rejected an event");
                self.store_rejected(out, &pdu, &reason);
                Ok(Verdict::Rejected(reason))
            }
            Check::Pass { before, soft_fail } => {
                if let Some(why) = &soft_fail {
                    tracing::info!(event = %id, sender = %pdu.sender(), reason = %why, "soft-failed an event");
                }
                self.stage_dag(out, pdu, before, soft_fail.is_some())?;
                Ok(soft_fail.map_or(Verdict::Accepted, Verdict::SoftFailed))
            }
        }
    }

    /// Takes outliers first, then offers each event in order.
    pub(super) fn take_dag(
        &mut self,
        pdus: Vec<Pdu>,
        outliers: Vec<Outlier>,
        out: &mut Effects,
    ) -> Vec<(EventId, Result<Verdict, RoomError>)> {
        for o in outliers {
            if let Err(e) = self.store_outlier(out, o) {
                tracing::warn!(error = %e, "could not keep an outlier");
            }
        }
        pdus.into_iter().map(|p| (p.event_id().clone(), self.dag_accept(out, p))).collect()
    }

    fn store_outlier(&mut self, out: &mut Effects, o: Outlier) -> Result<(), RoomError> {
        let id = o.pdu.event_id().clone();
        let stored = self.reads.stored_event(&id)?;
        let pdu = Arc::new(o.pdu);
        if stored.is_none() && !out.staged_ids.contains(&id) {
            let (json, canonical) = crate::store::stored_json(pdu.json());
            let record = EventRecord {
                json,
                canonical,
                room_id: self.cur.room_id.to_string(),
                outlier: true,
                hash_redacted: pdu.hash_redacted(),
                ..Default::default()
            };
            out.batch.push(Op::PutEvent(id.clone(), record));
            self.cache.remember_event(pdu.clone());
        }
        if let Some(before) = o.state_before {
            if !self.dag().has_state_after(&id)? {
                let mut after = before.clone();
                if let Some(sk) = pdu.state_key() {
                    after.insert((pdu.event_type().to_owned(), sk.to_owned()), id.clone());
                }
                self.dag().put_state_after(&mut out.batch, &pdu, &before, after, None)?;
            }
        }
        Ok(())
    }

    fn store_rejected(&self, out: &mut Effects, pdu: &Pdu, reason: &str) {
        // An event held as an outlier (a send_join answer's state or auth
        // chain) offered again out of place keeps its record: the rejection
        // is of this offer, not of the event others are authorised by.
        if out.staged_ids.contains(pdu.event_id())
            || matches!(self.reads.stored_event(pdu.event_id()), Ok(Some(r)) if r.rejected.is_empty())
        {
            return;
        }
        let (json, canonical) = crate::store::stored_json(pdu.json());
        let record = EventRecord {
            json,
            canonical,
            room_id: self.cur.room_id.to_string(),
            outlier: true,
            rejected: reason.to_owned(),
            hash_redacted: pdu.hash_redacted(),
            ..Default::default()
        };
        out.batch.push(Op::PutEvent(pdu.event_id().clone(), record));
        self.cache.remember_rejected(pdu.event_id());
    }

    /// The checks on receipt after signatures and hashes.
    fn dag_check(&self, pdu: &Pdu) -> Result<Check, RoomError> {
        let events = self.events();
        if pdu.event_type() == "m.room.create" && pdu.state_key() == Some("") {
            if self.cur.length > 0 {
                return Ok(Check::Reject("the room already has an m.room.create event".into()));
            }
            return Ok(match authorize(pdu, &StateMap::new()) {
                Ok(()) => Check::Pass { before: StateIds::new(), soft_fail: None },
                Err(e) => Check::Reject(counted(e).to_string()),
            });
        }
        let mut auth = Vec::with_capacity(pdu.auth_events().len());
        for a in pdu.auth_events() {
            if events.rejected(a) {
                return Ok(Check::Reject(format!("auth event {a} was rejected")));
            }
            let e = events.event(a).ok_or_else(|| RoomError::BadEvent(format!("auth event {a} is not known")))?;
            auth.push(e);
        }
        let create = pdu.room_id().create_event_id().and_then(|c| events.event(&c));
        if let Err(e) = authorize_by_auth_events(pdu, &auth, create) {
            return Ok(Check::Reject(format!("against its auth events: {}", counted(e))));
        }
        let mut states = Vec::new();
        for p in pdu.prev_events() {
            if events.rejected(p) {
                continue;
            }
            let s = self
                .dag()
                .state_after(p)?
                .ok_or_else(|| RoomError::BadEvent(format!("prev event {p} is not known")))?;
            states.push((*s.state).clone());
        }
        if states.is_empty() {
            return Ok(Check::Reject("no accepted prev event".into()));
        }
        let before = resolve(self.cur.version, &states, &events).map_err(|e| RoomError::BadEvent(e.to_string()))?;
        if let Err(e) = authorize(pdu, &events.state_map(&before)) {
            return Ok(Check::Reject(format!("against the state before it: {}", counted(e))));
        }
        let soft_fail = authorize(pdu, &self.cur.state).err().map(|e| format!("against the current state: {e}"));
        Ok(Check::Pass { before, soft_fail })
    }

    /// Appends a checked event: its state snapshot, and unless soft-failed
    /// the new forward extremities and the current state they resolve to.
    fn stage_dag(&mut self, out: &mut Effects, pdu: Pdu, before: StateIds, soft_failed: bool) -> Result<(), RoomError> {
        let pdu = Arc::new(pdu);
        let id = pdu.event_id().clone();
        let mut after = before.clone();
        if let Some(sk) = pdu.state_key() {
            after.insert((pdu.event_type().to_owned(), sk.to_owned()), id.clone());
        }
        let base = pdu.prev_events().first().cloned();
        self.dag().put_state_after(&mut out.batch, &pdu, &before, after.clone(), base.as_ref())?;
        let old_membership = self.target_membership(&pdu);
        let pos = self.append_entry(out, &pdu, soft_failed)?;
        if !soft_failed {
            let prevs = pdu.prev_events();
            // Built on every extremity (the usual case): the state before it
            // was the current state, so only its own key changes.
            let on_all =
                self.cur.extremities.len() == prevs.len() && self.cur.extremities.iter().all(|e| prevs.contains(e));
            self.cur.extremities.retain(|e| !prevs.contains(e));
            self.cur.extremities.push(id.clone());
            self.cur.max_depth = self.cur.max_depth.max(pdu.depth().unwrap_or(0));
            if on_all {
                if let Some(sk) = pdu.state_key() {
                    self.set_state(out, pdu.event_type(), sk, Some(pdu.clone()), pos);
                }
            } else {
                let current = if self.cur.extremities.len() == 1 { after } else { self.resolve_extremities()? };
                self.set_current(out, &current, pos)?;
            }
        }
        self.after_append(out, &pdu, soft_failed, old_membership.as_deref(), pos);
        Ok(())
    }

    fn resolve_extremities(&self) -> Result<StateIds, RoomError> {
        let mut states = Vec::with_capacity(self.cur.extremities.len());
        for e in &self.cur.extremities {
            let s = self.dag().state_after(e)?.ok_or_else(|| RoomError::Storage(format!("no state after {e}")))?;
            states.push((*s.state).clone());
        }
        resolve(self.cur.version, &states, &self.events()).map_err(|e| RoomError::Storage(e.to_string()))
    }

    /// Makes `target` the current state, one changed key at a time.
    fn set_current(&mut self, out: &mut Effects, target: &StateIds, pos: u64) -> Result<(), RoomError> {
        let now = self.cur.state.ids();
        let events = self.events();
        let mut changes: Vec<(crate::core::rooms::StateKey, Option<Arc<Pdu>>)> = Vec::new();
        for (k, id) in target {
            if now.get(k) != Some(id) {
                let e = events.event(id).ok_or_else(|| RoomError::Storage(format!("state event {id} is missing")))?;
                changes.push((k.clone(), Some(e)));
            }
        }
        for k in now.keys().filter(|k| !target.contains_key(*k)) {
            changes.push((k.clone(), None));
        }
        for ((t, k), e) in changes {
            self.set_state(out, &t, &k, e, pos);
        }
        Ok(())
    }

    /// The fields every event built here shares: prev events (the forward
    /// extremities, deepest first), depth and auth events from the current
    /// state.
    fn dag_fields(&self, d: &Draft, now: i64) -> Object {
        let mut o = super::build::base_fields(&self.cur, d, now);
        if d.event_type == "m.room.redaction" && self.cur.version.auth.creator_in_content {
            // Before v11 the target is named at the top level.
            if let Some(target) = d.content.get("redacts") {
                o.insert("redacts".into(), target.clone());
            }
        }
        let sketch = EventSketch {
            event_type: &d.event_type,
            sender: d.sender.as_str(),
            state_key: d.state_key.as_deref(),
            content: &d.content,
        };
        let auth: Vec<Value> =
            select_auth_events(self.cur.version, &self.cur.state, sketch).iter().map(|e| json!(e.as_str())).collect();
        let prevs = self.cur.prev_events_for_new();
        o.insert("auth_events".into(), Value::Array(auth));
        o.insert("prev_events".into(), Value::Array(prevs.iter().map(|p| json!(p.as_str())).collect()));
        o.insert("depth".into(), json!((self.cur.max_depth + 1).min(MAX_DEPTH)));
        o
    }

    /// A signed event for a local user, checked against the current state.
    /// (A mixed room's create event is `build_create`'s.)
    pub(super) fn dag_build(&self, d: &Draft) -> Result<Pdu, RoomError> {
        if d.event_type == "m.room.create" {
            return Err(RoomError::BadEvent("the room already exists".into()));
        }
        let mut o = self.dag_fields(d, self.now);
        sign_event(self.cur.version, &self.env.key, &mut o).map_err(|e| RoomError::BadEvent(e.to_string()))?;
        let pdu = Pdu::from_object(self.cur.version, o, Schema::Full).map_err(|e| match e {
            crate::core::event::EventError::TooLarge(n) => RoomError::TooLarge(format!("{n} bytes")),
            other => RoomError::BadEvent(other.to_string()),
        })?;
        authorize(&pdu, &self.cur.state).map_err(|e| RoomError::Forbidden(counted(e).to_string()))?;
        Ok(pdu)
    }
}

/// The `m.room.create` event of a new mixed room. In v12 the room id is
/// this event's id, so it is built before the room exists.
/// `room_id` is used where the version does not derive it from this event.
pub fn build_create(
    key: &crate::core::crypto::SigningKey,
    version: &'static crate::core::event::RoomVersion,
    room_id: &str,
    d: &Draft,
    now: i64,
) -> Result<Pdu, RoomError> {
    let mut o = Object::new();
    if !version.room_id_from_create {
        o.insert("room_id".into(), json!(room_id));
    }
    o.insert("type".into(), json!("m.room.create"));
    o.insert("state_key".into(), json!(""));
    o.insert("sender".into(), json!(d.sender.as_str()));
    o.insert("origin_server_ts".into(), json!(now));
    o.insert("content".into(), Value::Object(d.content.clone()));
    o.insert("auth_events".into(), json!([]));
    o.insert("prev_events".into(), json!([]));
    o.insert("depth".into(), json!(1));
    sign_event(version, key, &mut o).map_err(|e| RoomError::BadEvent(e.to_string()))?;
    let pdu = Pdu::from_object(version, o, Schema::Full).map_err(|e| RoomError::BadEvent(e.to_string()))?;
    authorize(&pdu, &StateMap::new()).map_err(|e| RoomError::Forbidden(counted(e).to_string()))?;
    Ok(pdu)
}
