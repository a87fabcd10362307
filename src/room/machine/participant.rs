//! The participant's side of a room: a local user's event goes to the hub
//! (an LPDU in LM rooms, a full signed event in mixed rooms) and the client
//! waits for the hub's copy; a refusal reaches the client as `403`.

use super::build::Draft;
use super::kind::ToHub;
use super::{Effects, LocalDone, Machine, Reply, RoomError, Ticket};
use crate::core::ids::EventId;
use crate::store::records::{queue_item, ClientTxn, PendingLpdu, QueueItem};
use crate::store::Op;

impl Machine {
    pub(super) fn participant_local(&mut self, draft: Draft, ticket: Ticket, out: &mut Effects) {
        if let Some(done) = out.staged_txn(&draft) {
            return out.answer(ticket, Reply::Local(done));
        }
        if let Some((device, txn)) = &draft.txn {
            match self.reads.client_txn(&draft.sender, device, txn) {
                Ok(Some(t)) => {
                    return match t.event() {
                        // Its batch may still be flushing: answered after ours.
                        Ok(Some(id)) => out.answer(ticket, Reply::Local(LocalDone::Sent(id))),
                        Err(e) => out.refuse(ticket, e.into()),
                        Ok(None) if !t.error.is_empty() => out.refuse(ticket, RoomError::Forbidden(t.error)),
                        Ok(None) => out.answer(ticket, Reply::Local(LocalDone::Waiting { lpdu_hash: t.lpdu_hash })),
                    };
                }
                Ok(None) => {}
                Err(e) => return out.refuse(ticket, e.into()),
            }
        }
        let ToHub { key: hash, sent_id, json, canonical } = match self.rules.to_hub(self, &draft) {
            Ok(b) => b,
            Err(e) => return out.refuse(ticket, e),
        };
        let pos = match out.position() {
            Ok(p) => p,
            Err(e) => return out.refuse(ticket, e),
        };
        let (user, device, txn) = match &draft.txn {
            Some((d, t)) => (draft.sender.to_string(), d.clone(), t.clone()),
            None => Default::default(),
        };
        let hub = self.cur.hub.clone();
        out.batch
            .push(Op::PutPending {
                lpdu_hash: hash.clone(),
                pending: PendingLpdu {
                    room_id: self.cur.room_id.to_string(),
                    json,
                    canonical,
                    created_ts: self.now,
                    txn_user: user,
                    txn_device: device,
                    txn_id: txn,
                    sent_id,
                },
            })
            .push(Op::Enqueue {
                dest: hub.clone(),
                pos,
                item: QueueItem { item: Some(queue_item::Item::LpduHash(hash.clone())) },
            });
        if let Some((d, t)) = &draft.txn {
            out.batch.push(Op::PutClientTxn {
                user: draft.sender.clone(),
                device: d.clone(),
                txn: t.clone(),
                record: ClientTxn {
                    lpdu_hash: hash.clone(),
                    room_id: self.cur.room_id.to_string(),
                    ..Default::default()
                },
            });
        }
        out.wake.insert(hub);
        out.stage_txn(&draft, LocalDone::Waiting { lpdu_hash: hash.clone() });
        out.answer(ticket, Reply::Local(LocalDone::Waiting { lpdu_hash: hash }));
    }

    pub(super) fn lpdu_refused(&mut self, hash: String, error: String, out: &mut Effects) {
        self.settle_pending(out, &hash, Err(error.clone()));
        out.refused.push((hash, RoomError::Forbidden(format!("the hub refused the event: {error}"))));
    }

    /// An LPDU we sent is done with: drop it from the pending set and record
    /// the outcome for the client transaction that made it.
    fn settle_pending(&mut self, out: &mut Effects, hash: &str, outcome: Result<EventId, String>) {
        let Ok(Some(p)) = self.reads.pending_lpdu(hash) else { return };
        out.batch.push(Op::DeletePending(hash.to_owned()));
        if let Some(user) = p.txn_sender().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a pending LPDU's client transaction cannot be recorded");
            None
        }) {
            let (event_id, error) = match outcome {
                Ok(id) => (id.to_string(), String::new()),
                Err(e) => (String::new(), e),
            };
            let record = ClientTxn { event_id, lpdu_hash: hash.to_owned(), room_id: p.room_id, error };
            out.batch.push(Op::PutClientTxn { user, device: p.txn_device, txn: p.txn_id, record });
        }
    }

    /// A participant sees its own event come back sequenced.
    pub(super) fn note_echo(&mut self, out: &mut Effects, key: &str, id: &EventId) {
        self.settle_pending(out, key, Ok(id.clone()));
        out.echoes.push((key.to_owned(), id.clone()));
    }
}
