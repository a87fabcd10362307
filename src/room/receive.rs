//! A participant receiving the hub's PDUs: duplicates are ignored, each
//! event must continue the list, a gap is filled from the hub's backfill,
//! and every event is audited against the rules (digest 5.3; OQ-16, OQ-51).

use super::actor::{RoomActor, Work};
use super::RoomError;
use crate::core::event::Pdu;
use crate::core::ids::EventId;
use crate::core::rooms::{check_append, AppendError};

/// Pages of backfill a gap may take before the participant gives up.
const MAX_GAP_PAGES: usize = 50;
const GAP_PAGE: usize = 100;

impl RoomActor {
    pub(super) async fn take_from_hub(&mut self, pdus: Vec<Pdu>, work: &mut Work) -> Vec<Result<(), RoomError>> {
        let mut out = Vec::with_capacity(pdus.len());
        for pdu in pdus {
            out.push(self.accept_from_hub(pdu, work).await);
        }
        out
    }

    async fn accept_from_hub(&mut self, pdu: Pdu, work: &mut Work) -> Result<(), RoomError> {
        if self.node.is_me(&self.cur.hub) {
            return Err(RoomError::BadEvent("this server is the room's hub".into()));
        }
        if self.knows(work, pdu.event_id()) {
            return Ok(());
        }
        if let [prev] = pdu.prev_events() {
            if Some(prev) != self.cur.tail.as_ref() && !self.knows(work, prev) {
                self.fill_gap(prev, work).await?;
            }
        }
        self.append_audited(pdu, work)
    }

    /// Appends a hub event after checking it continues the list. One that
    /// breaks the rules is kept in the list (the hub's order is the room's)
    /// but marked soft-failed: not shown, not applied to state.
    pub(super) fn append_audited(&mut self, pdu: Pdu, work: &mut Work) -> Result<(), RoomError> {
        match check_append(self.cur.tail.as_ref(), &self.cur.state, &pdu) {
            Ok(()) => self.stage(work, pdu).map(|_| ()),
            Err(AppendError::NotOnTail { expected }) => {
                Err(RoomError::BadEvent(format!("{} does not continue the list after {expected}", pdu.event_id())))
            }
            Err(e) => {
                tracing::warn!(event = %pdu.event_id(), hub = %self.cur.hub, error = %e, "hub audit: the hub sent an event that fails the rules");
                self.stage_with(work, pdu, true).map(|_| ())
            }
        }
    }

    /// Fetches the events between our tail and `missing` from the hub.
    async fn fill_gap(&mut self, missing: &EventId, work: &mut Work) -> Result<(), RoomError> {
        let mut newest_first: Vec<Pdu> = Vec::new();
        let mut from = missing.clone();
        for _ in 0..MAX_GAP_PAGES {
            let page = crate::federation::fetch::backfill(&self.node, &self.cur, &from, GAP_PAGE)
                .await
                .map_err(RoomError::Remote)?;
            let mut reached = false;
            for pdu in page.into_iter().rev() {
                if self.knows(work, pdu.event_id()) {
                    reached = true;
                    break;
                }
                if newest_first.iter().all(|p| p.event_id() != pdu.event_id()) {
                    newest_first.push(pdu);
                }
            }
            let next = newest_first.last().and_then(|p| p.prev_events().first().cloned());
            match next {
                Some(p) if !reached => from = p,
                _ => break,
            }
        }
        tracing::info!(room = %self.cur.room_id, events = newest_first.len(), "filled a gap from the hub");
        for pdu in newest_first.into_iter().rev() {
            self.append_audited(pdu, work)?;
        }
        Ok(())
    }
}
