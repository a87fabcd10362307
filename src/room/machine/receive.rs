//! A participant receiving the hub's PDUs: duplicates are ignored, each
//! event must continue the list, a gap is filled from the hub's backfill,
//! and every event is audited against the rules (digest 5.3; OQ-16, OQ-51).
//! Also the hub taking a DAG-capable LM server's own event.

use std::sync::Arc;

use super::snapshot::load_pdu;
use super::{counted, Effects, Machine, RoomError};
use crate::core::event::Pdu;
use crate::core::ids::{EventId, ServerName};
use crate::core::rooms::{authorize, authorize_by_auth_events, check_append, AppendError};

impl Machine {
    /// One event from the hub, whose place continues our list (a gap
    /// before it was filled first, see `gap.rs`).
    pub(super) fn accept_from_hub(&mut self, pdu: Pdu, out: &mut Effects) -> Result<(), RoomError> {
        if self.is_hub() {
            return Err(RoomError::BadEvent("this server is the room's hub".into()));
        }
        if self.knows(out, pdu.event_id()) {
            return Ok(());
        }
        // Events a DAG-capable LM server made carry their own prev events;
        // delivery order places them (digest 5.2).
        if is_dag_origin(&self.cur.hub, &pdu) {
            return self.append_dag_origin(pdu, out);
        }
        self.append_audited(pdu, out)
    }

    /// The event our list lacks before `pdu`, if any: its single prev event
    /// when that is neither our tail nor known.
    pub(super) fn missing_before(&self, pdu: &Pdu, out: &Effects) -> Option<EventId> {
        if self.is_hub() || self.knows(out, pdu.event_id()) || is_dag_origin(&self.cur.hub, pdu) {
            return None;
        }
        match pdu.prev_events() {
            [prev] if Some(prev) != self.cur.tail.as_ref() && !self.knows(out, prev) => Some(prev.clone()),
            _ => None,
        }
    }

    /// A DAG server's event relayed by the hub: its prev events must be in
    /// the list, and it must pass the rules against the current state.
    fn append_dag_origin(&mut self, pdu: Pdu, out: &mut Effects) -> Result<(), RoomError> {
        if let Some(p) = pdu.prev_events().iter().find(|p| !self.knows(out, p)) {
            return Err(RoomError::BadEvent(format!("prev event {p} of a DAG server's event is not in the list")));
        }
        match authorize(&pdu, &self.cur.state)
            .map_err(|e| counted(e).to_string())
            .and_then(|()| self.mls_check(out, &pdu).map_err(|e| e.to_string()))
        {
            Ok(()) => self.stage(out, pdu).map(|_| ()),
            Err(e) => {
                tracing::warn!(event = %pdu.event_id(), error = %e, "hub audit: a relayed DAG event fails the rules");
                self.stage_with(out, pdu, true).map(|_| ())
            }
        }
    }

    /// LM rooms, hub: a DAG-capable LM server's own full event (digest
    /// 11.3). It is checked against its auth events and the current state,
    /// then appended at the tail as it came (OQ-35).
    pub(super) fn hub_dag_event(&mut self, pdu: Pdu, out: &mut Effects) -> Result<Arc<Pdu>, RoomError> {
        if !self.is_hub() {
            return Err(RoomError::NotHub);
        }
        if let Some(staged) = out.staged_pdus.get(pdu.event_id()) {
            return Ok(staged.clone());
        }
        if self.knows(out, pdu.event_id()) {
            let existing = load_pdu(&*self.reads, self.cur.version, pdu.event_id())?;
            return existing.ok_or_else(|| RoomError::Storage("a known event could not be read".into()));
        }
        if let Some(p) = pdu.prev_events().iter().find(|p| !self.knows(out, p)) {
            return Err(RoomError::BadEvent(format!("prev event {p} is not in the room's list")));
        }
        let mut auth = Vec::new();
        for a in pdu.auth_events() {
            let e = match out.staged_pdus.get(a) {
                Some(staged) => staged.clone(),
                None => load_pdu(&*self.reads, self.cur.version, a)?
                    .ok_or_else(|| RoomError::BadEvent(format!("auth event {a} is not known")))?,
            };
            auth.push(e);
        }
        authorize_by_auth_events(&pdu, &auth, None)
            .map_err(|e| RoomError::Forbidden(format!("against its auth events: {}", counted(e))))?;
        authorize(&pdu, &self.cur.state)
            .map_err(|e| RoomError::Forbidden(format!("against the current state: {}", counted(e))))?;
        if let Err(e) = self.mls_check(out, &pdu) {
            // A full event breaking the MLS rules is soft-failed (§9.4).
            tracing::info!(event = %pdu.event_id(), sender = %pdu.sender(), reason = %e, "soft-failed an event");
            return self.stage_with(out, pdu, true);
        }
        self.stage(out, pdu)
    }

    /// Appends a hub event after checking it continues the list. One that
    /// breaks the rules is kept in the list (the hub's order is the room's)
    /// but marked soft-failed: not shown, not applied to state.
    pub(super) fn append_audited(&mut self, pdu: Pdu, out: &mut Effects) -> Result<(), RoomError> {
        match check_append(self.cur.tail.as_ref(), &self.cur.state, &pdu) {
            Ok(()) => match self.mls_check(out, &pdu) {
                Ok(()) => self.stage(out, pdu).map(|_| ()),
                Err(e) => {
                    tracing::warn!(event = %pdu.event_id(), hub = %self.cur.hub, error = %e, "hub audit: the hub sent an event that fails the MLS rules");
                    self.stage_with(out, pdu, true).map(|_| ())
                }
            },
            Err(AppendError::NotOnTail { expected }) => {
                Err(RoomError::BadEvent(format!("{} does not continue the list after {expected}", pdu.event_id())))
            }
            Err(e) => {
                tracing::warn!(event = %pdu.event_id(), hub = %self.cur.hub, error = %e, "hub audit: the hub sent an event that fails the rules");
                self.stage_with(out, pdu, true).map(|_| ())
            }
        }
    }
}

/// An event neither built by the hub from an LPDU nor sent by the hub's
/// own users: made by a DAG-capable LM server.
fn is_dag_origin(hub: &ServerName, pdu: &Pdu) -> bool {
    pdu.hub_server().is_none() && !pdu.sender().is_on(hub) && pdu.event_type() != "m.room.create"
}
