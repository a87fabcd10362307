//! The hub's side: its own users' events, participants' LPDUs (digest 3.8;
//! a replayed LPDU is not appended twice, OQ-43), and a joined room's seed.

use std::sync::Arc;

use super::build::{self, Draft};
use super::invite::InviteFor;
use super::snapshot::load_pdu;
use super::{Appended, Effects, JoinSeed, LocalDone, Machine, Reply, RoomError, Ticket};
use crate::core::event::{Lpdu, Pdu};
use crate::core::ids::EventId;
use crate::store::records::{ClientTxn, EventRecord};
use crate::store::Op;

impl Machine {
    pub(super) fn hub_local(&mut self, draft: Draft, ticket: Ticket, out: &mut Effects) {
        // A client retrying a send gets the event it already made.
        if let Some(done) = out.staged_txn(&draft) {
            return out.answer(ticket, Reply::Local(done));
        }
        if let Some((device, txn)) = &draft.txn {
            match self.reads.client_txn(&draft.sender, device, txn).map(|t| t.map(|t| t.event())) {
                // Its batch may still be flushing: answered after ours.
                Ok(Some(Ok(Some(id)))) => return out.answer(ticket, Reply::Local(LocalDone::Sent(id))),
                Ok(Some(Err(e))) | Err(e) => return out.refuse(ticket, e.into()),
                Ok(_) => {}
            }
        }
        let built = self.rules.build_local(self, &draft);
        match built.and_then(|pdu| self.mls_check(out, &pdu).map(|()| pdu)) {
            Ok(pdu) if self.invitee_to_ask(&pdu).is_some() => {
                self.ask_invitee(pdu, InviteFor::Local { draft, ticket }, out)
            }
            Ok(pdu) => self.finish_local(draft, ticket, pdu, out),
            Err(e) => out.refuse(ticket, e),
        }
    }

    /// Appends a local user's built event; the client is answered once the
    /// batch is durable.
    pub(super) fn finish_local(&mut self, draft: Draft, ticket: Ticket, pdu: Pdu, out: &mut Effects) {
        let rules = self.rules;
        match rules.take_local(self, out, pdu) {
            Ok(id) => {
                out.stage_txn(&draft, LocalDone::Sent(id.clone()));
                if let Some((device, txn)) = draft.txn {
                    out.batch.push(Op::PutClientTxn {
                        user: draft.sender,
                        device,
                        txn,
                        record: ClientTxn {
                            event_id: id.to_string(),
                            room_id: self.cur.room_id.to_string(),
                            ..Default::default()
                        },
                    });
                }
                out.answer(ticket, Reply::Local(LocalDone::Sent(id)));
            }
            Err(e) => out.refuse(ticket, e),
        }
    }

    pub(super) fn hub_lpdu(&mut self, lpdu: Lpdu, with_state: bool, ticket: Ticket, out: &mut Effects) {
        if !self.is_hub() {
            return out.refuse(ticket, RoomError::NotHub);
        }
        let hash = lpdu.lpdu_hash().to_owned();
        let existing = match out.staged_lpdus.get(&hash) {
            Some(p) => Some(p.clone()),
            None => self.load_sequenced(&hash),
        };
        if let Some(pdu) = existing {
            let state_before = with_state.then(|| (*self.cur.state).clone());
            let appended = Appended { event_id: pdu.event_id().clone(), pdu, state_before };
            return out.answer(ticket, Reply::Appended(appended));
        }
        let built = build::hub_event_from_lpdu(&self.cur, &self.env.key, &lpdu);
        match built.and_then(|pdu| self.mls_check(out, &pdu).map(|()| pdu)) {
            Ok(pdu) if self.invitee_to_ask(&pdu).is_some() => {
                self.ask_invitee(pdu, InviteFor::Lpdu { lpdu, with_state, ticket }, out)
            }
            Ok(pdu) => self.finish_lpdu(lpdu, with_state, ticket, pdu, out),
            Err(e) => {
                tracing::info!(lpdu = %hash, sender = %lpdu.sender(), reason = %e, "refused an event");
                out.refuse(ticket, e)
            }
        }
    }

    /// Appends the PDU built from a participant's LPDU.
    pub(super) fn finish_lpdu(&mut self, lpdu: Lpdu, with_state: bool, ticket: Ticket, pdu: Pdu, out: &mut Effects) {
        let hash = lpdu.lpdu_hash().to_owned();
        let state_before = with_state.then(|| (*self.cur.state).clone());
        match self.stage(out, pdu) {
            Ok(pdu) => {
                out.staged_lpdus.insert(hash, pdu.clone());
                let appended = Appended { event_id: pdu.event_id().clone(), pdu, state_before };
                out.answer(ticket, Reply::Appended(appended));
            }
            Err(e) => {
                tracing::info!(lpdu = %hash, sender = %lpdu.sender(), reason = %e, "refused an event");
                out.refuse(ticket, e)
            }
        }
    }

    fn load_sequenced(&self, lpdu_hash: &str) -> Option<Arc<Pdu>> {
        let id = self.reads.lpdu_event(&self.cur.room_id, lpdu_hash).ok()??;
        load_pdu(&*self.reads, self.cur.version, &id).ok().flatten()
    }

    /// A room joined elsewhere: the state and auth chain from the hub's
    /// answer (kept as outliers), then our join as the first list entry.
    pub(super) fn seed(&mut self, seed: JoinSeed, out: &mut Effects) -> Result<EventId, RoomError> {
        if self.cur.length != 0 {
            return Err(RoomError::BadEvent("the room has events already".into()));
        }
        let room = self.cur.room_id.clone();
        // Written only if the join itself can be staged.
        let mut records = crate::store::Batch::new();
        for e in seed.outliers.iter().filter(|e| e.event_id() != seed.join.event_id()) {
            let (json, canonical) = crate::store::stored_json(e.json());
            let record = EventRecord {
                json,
                canonical,
                room_id: room.to_string(),
                outlier: true,
                hash_redacted: e.hash_redacted(),
                ..Default::default()
            };
            records.push(Op::PutEvent(e.event_id().clone(), record));
        }
        for e in seed.state.iter() {
            records.push(Op::SetState {
                room: room.clone(),
                event_type: e.event_type().to_owned(),
                state_key: e.state_key().unwrap_or("").to_owned(),
                event: e.event_id().clone(),
            });
        }
        let before = (self.cur.clone(), self.joined.clone());
        self.joined = super::fanout::JoinedServers::from_state(&seed.state);
        self.cur.state = Arc::new(seed.state);
        let id = seed.join.event_id().clone();
        // The seed's records go before the join's own: where both write one
        // key (a hub may list the join in `state`), the join's list entry
        // wins over an outlier copy.
        let at = out.batch.ops.len();
        let rules = self.rules;
        let staged = rules.seeded(self, out, &seed.join, seed.depth).and_then(|()| self.stage(out, seed.join));
        if let Err(e) = staged {
            (self.cur, self.joined) = before;
            out.batch.ops.truncate(at);
            return Err(e);
        }
        out.batch.ops.splice(at..at, records.ops);
        Ok(id)
    }
}
