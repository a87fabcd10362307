//! The participant's side of a room task: a local user's event goes to the
//! hub (an LPDU in LM rooms, a full signed event in mixed rooms) and the
//! client waits for the hub's copy; a refusal reaches the client as `403`.

use tokio::sync::oneshot;

use super::actor::{RoomActor, Work};
use super::build::{self, Draft};
use super::{LocalOutcome, RoomError};
use crate::core::ids::{EventId, UserId};
use crate::node::now_ms;
use crate::store::records::{ClientTxn, PendingLpdu, QueueItem};
use crate::store::Op;

impl RoomActor {
    pub(super) fn participant_local(&mut self, draft: Draft, reply: super::Reply<LocalOutcome>, work: &mut Work) {
        if let Some((device, txn)) = &draft.txn {
            match self.node.store.client_txn(&draft.sender, device, txn) {
                Ok(Some(t)) if !t.event_id.is_empty() => {
                    let id = EventId::parse(&t.event_id).map_err(|e| RoomError::Storage(e.to_string()));
                    // Its batch may still be flushing: answered after ours.
                    work.on_done(move |r| {
                        let _ = reply.send(r.and(id).map(LocalOutcome::Done));
                    });
                    return;
                }
                Ok(Some(t)) if !t.error.is_empty() => {
                    let _ = reply.send(Err(RoomError::Forbidden(t.error)));
                    return;
                }
                Ok(Some(t)) => {
                    let (tx, rx) = oneshot::channel();
                    self.waiters.entry(t.lpdu_hash.clone()).or_default().push(tx);
                    let _ = reply.send(Ok(LocalOutcome::Waiting { lpdu_hash: t.lpdu_hash, done: rx }));
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                    return;
                }
            }
        }
        // LM rooms: an LPDU the hub completes. Mixed rooms: the full event,
        // signed here, which the hub relays.
        let built = if self.cur.version.is_mixed() {
            self.dag_build(&draft).map(|p| (p.event_id().to_string(), serde_json::to_vec(p.json()).unwrap_or_default()))
        } else {
            build::lpdu_from_draft(&self.cur, &self.node.key, &draft, now_ms())
                .map(|l| (l.lpdu_hash().to_owned(), serde_json::to_vec(l.json()).unwrap_or_default()))
        };
        let (hash, json) = match built {
            Ok(b) => b,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let alloc = match self.node.positions.allocate(1) {
            Ok(a) => a,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        let (user, device, txn) = match &draft.txn {
            Some((d, t)) => (draft.sender.to_string(), d.clone(), t.clone()),
            None => Default::default(),
        };
        let hub = self.cur.hub.clone();
        work.batch
            .push(Op::PutPending {
                lpdu_hash: hash.clone(),
                pending: PendingLpdu {
                    room_id: self.cur.room_id.to_string(),
                    json: json.clone(),
                    created_ts: now_ms(),
                    txn_user: user,
                    txn_device: device.clone(),
                    txn_id: txn.clone(),
                },
            })
            .push(Op::Enqueue {
                dest: hub.clone(),
                pos: alloc.first(),
                item: QueueItem { item: Some(crate::store::records::queue_item::Item::LpduJson(json)) },
            });
        if let Some((d, t)) = &draft.txn {
            work.batch.push(Op::PutClientTxn {
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
        work.allocations.push(alloc);
        work.wake.insert(hub);
        let (tx, rx) = oneshot::channel();
        self.waiters.entry(hash.clone()).or_default().push(tx);
        work.on_done(move |r| {
            let _ = reply.send(r.map(|_| LocalOutcome::Waiting { lpdu_hash: hash, done: rx }));
        });
    }

    pub(super) fn lpdu_refused(&mut self, hash: String, error: String, work: &mut Work) {
        self.settle_pending(work, &hash, Err(error.clone()));
        for w in self.waiters.remove(&hash).unwrap_or_default() {
            let _ = w.send(Err(RoomError::Forbidden(format!("the hub refused the event: {error}"))));
        }
    }

    /// An LPDU we sent is done with: drop it from the pending set and record
    /// the outcome for the client transaction that made it. False when it
    /// was not pending (sent before a restart lost nothing but the waiter).
    fn settle_pending(&mut self, work: &mut Work, hash: &str, outcome: Result<EventId, String>) -> bool {
        let Ok(Some(p)) = self.node.store.pending_lpdu(hash) else { return false };
        work.batch.push(Op::DeletePending(hash.to_owned()));
        if let Ok(user) = UserId::parse(&p.txn_user) {
            let (event_id, error) = match outcome {
                Ok(id) => (id.to_string(), String::new()),
                Err(e) => (String::new(), e),
            };
            let record = ClientTxn { event_id, lpdu_hash: hash.to_owned(), room_id: p.room_id, error };
            work.batch.push(Op::PutClientTxn { user, device: p.txn_device, txn: p.txn_id, record });
        }
        true
    }

    pub(super) fn await_lpdu(&mut self, hash: String, reply: oneshot::Sender<Result<EventId, RoomError>>) {
        self.waiters.entry(hash).or_default().push(reply);
    }

    /// A participant sees its own LPDU come back sequenced.
    pub(super) fn note_echo(&mut self, work: &mut Work, hash: &str, id: &EventId) {
        let was_pending = self.settle_pending(work, hash, Ok(id.clone()));
        if was_pending || self.waiters.contains_key(hash) {
            work.echoes.push((hash.to_owned(), id.clone()));
        }
    }
}
