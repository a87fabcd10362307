//! The writer task of one room. Commands are taken from the inbox in
//! batches; every event of a batch is staged on the in-memory tail, the
//! batch is written and flushed once (group commit), and only then are the
//! callers answered and the view published (durable before acknowledged).
//! Batches are pipelined: the next one is built and written while the
//! previous one's flush runs; one built on a batch that then failed fails
//! too.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::build::{self, Draft};
use super::fanout::{destinations, JoinedServers};
use super::invite::InviteFor;
use super::{Appended, JoinSeed, LocalOutcome, RoomCmd, RoomError, RoomHandle, RoomView};
use crate::core::event::{Lpdu, Pdu};
use crate::core::ids::{EventId, ServerName, UserId};
use crate::core::rooms::StateView;
use crate::node::{now_ms, Node};
use crate::store::records::{ClientTxn, EventRecord, Membership, QueueItem, RoomRecord};
use crate::store::{Allocation, Batch, Op, StreamEntry};

/// Commands taken from the inbox per batch.
const MAX_BATCH: usize = 128;

type Flush = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), crate::store::StoreError>> + Send>>;

/// A batch written to the store whose flush is under way.
struct Written {
    work: Work,
    /// The room as of this batch, published once it is durable.
    view: Option<Arc<RoomView>>,
    flush: tokio::task::JoinHandle<Result<(), crate::store::StoreError>>,
}

fn storage_failed(e: crate::store::StoreError) -> RoomError {
    tracing::error!(error = %e, "room write failed; reloading the room");
    RoomError::Storage(e.to_string())
}

fn flushed_result(
    joined: Result<Result<(), crate::store::StoreError>, tokio::task::JoinError>,
) -> Result<(), RoomError> {
    match joined {
        Ok(r) => r.map_err(storage_failed),
        Err(e) => Err(RoomError::Storage(format!("flush task failed: {e}"))),
    }
}

type Done = Box<dyn FnOnce(Result<(), RoomError>) + Send>;

/// What one batch will write, and whom to answer once it is durable.
#[derive(Default)]
pub(super) struct Work {
    pub batch: Batch,
    pub allocations: Vec<Allocation>,
    done: Vec<Done>,
    pub wake: BTreeSet<ServerName>,
    /// LPDU hashes staged in this batch (hub: replay detection, OQ-43).
    staged_lpdus: HashMap<String, Arc<Pdu>>,
    pub staged_ids: BTreeSet<EventId>,
    /// Events staged in this batch, by id (a repeat finds the first copy).
    pub staged_pdus: HashMap<EventId, Arc<Pdu>>,
    /// Echoes of our own LPDUs (participant): hash → event id.
    pub echoes: Vec<(String, EventId)>,
    appended: bool,
}

impl Work {
    pub fn on_done(&mut self, f: impl FnOnce(Result<(), RoomError>) + Send + 'static) {
        self.done.push(Box::new(f));
    }
}

pub(super) struct RoomActor {
    pub node: Arc<Node>,
    pub cur: RoomView,
    pub joined: JoinedServers,
    pub view: Arc<RwLock<Arc<RoomView>>>,
    /// Participant: clients waiting for the hub to sequence an LPDU.
    pub waiters: HashMap<String, Vec<oneshot::Sender<Result<EventId, RoomError>>>>,
    /// Follower: list positions below this have been trimmed.
    pub pruned_upto: u64,
    /// Our own inbox, for answers of network work done beside the writer;
    /// weak, so the room stops once every handle is gone.
    pub inbox: mpsc::WeakSender<RoomCmd>,
    /// Invites out with an invitee's server, by what a retry would repeat.
    pub inviting: std::collections::HashSet<String>,
    /// Participant: a gap in our list being filled from the hub.
    pub gap: Option<super::gap::Gap>,
}

/// Starts the writer task of a room whose state is `view`.
pub(super) fn spawn_room(node: &Arc<Node>, view: RoomView) -> RoomHandle {
    let (tx, rx) = mpsc::channel(1024);
    let shared = Arc::new(RwLock::new(Arc::new(view.clone())));
    let actor = RoomActor {
        node: node.clone(),
        joined: JoinedServers::from_state(&view.state),
        cur: view,
        view: shared.clone(),
        waiters: HashMap::new(),
        pruned_upto: 0,
        inbox: tx.downgrade(),
        inviting: Default::default(),
        gap: None,
    };
    // A root span: the room outlives the request that happened to start it.
    let span = tracing::info_span!(parent: None, "room", room = %actor.cur.room_id);
    node.spawn(actor.run(rx).instrument(span));
    RoomHandle { tx, view: shared }
}

impl RoomActor {
    fn is_hub(&self) -> bool {
        self.node.is_me(&self.cur.hub)
    }

    /// Pipelined: while one batch is being flushed the next is built and
    /// written; a batch's callers are answered, and the view published,
    /// only once its flush (which covers every write before it) is done.
    async fn run(mut self, mut rx: mpsc::Receiver<RoomCmd>) {
        let mut flushing: Option<Written> = None;
        loop {
            let first = match flushing.as_mut() {
                None => rx.recv().await,
                Some(w) => tokio::select! {
                    biased;
                    flushed = &mut w.flush => {
                        let w = flushing.take().expect("in flight");
                        self.finish(w.work, w.view, flushed_result(flushed));
                        continue;
                    }
                    cmd = rx.recv() => cmd,
                },
            };
            let Some(first) = first else { break };
            let mut cmds = vec![first];
            while cmds.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            let mut work = Work::default();
            for cmd in cmds {
                self.handle(cmd, &mut work);
            }
            let written = self.write(work);
            let previous_failed = match flushing.take() {
                Some(prev) => {
                    let result = flushed_result(prev.flush.await);
                    let failed = result.is_err();
                    self.finish(prev.work, prev.view, result);
                    failed
                }
                None => false,
            };
            if previous_failed {
                // Built on what a failed batch left in memory: fails too.
                let e = RoomError::Storage("an earlier write of the room failed".into());
                let flushed = flushed_result(written.flush.await);
                self.finish(written.work, written.view, flushed.and(Err(e)));
            } else {
                flushing = Some(written);
            }
        }
        if let Some(w) = flushing.take() {
            let result = flushed_result(w.flush.await);
            self.finish(w.work, w.view, result);
        }
    }

    fn handle(&mut self, cmd: RoomCmd, work: &mut Work) {
        match cmd {
            RoomCmd::Local { draft, reply } => {
                if self.is_hub() {
                    self.hub_local(draft, reply, work)
                } else {
                    self.participant_local(draft, reply, work)
                }
            }
            RoomCmd::Lpdu { lpdu, with_state, reply } => self.hub_lpdu(lpdu, with_state, reply, work),
            RoomCmd::FromHub { pdus, reply } => self.take_from_hub(pdus, reply, work),
            RoomCmd::GapFetched(fetched) => self.gap_fetched(fetched, work),
            RoomCmd::LmDagEvent { pdu, reply } => match self.hub_dag_event(pdu.clone(), work) {
                Ok(pdu) => {
                    let appended = Appended { event_id: pdu.event_id().clone(), pdu, state_before: None };
                    work.on_done(move |r| {
                        let _ = reply.send(r.map(|_| appended));
                    });
                }
                Err(e) => {
                    tracing::info!(event = %pdu.event_id(), sender = %pdu.sender(), reason = %e, "refused an event");
                    let _ = reply.send(Err(e));
                }
            },
            RoomCmd::Dag { pdus, outliers, reply } => {
                let results = self.take_dag(pdus, outliers, work);
                work.on_done(move |r| {
                    let _ = reply.send(r.map(|_| results));
                });
            }
            RoomCmd::LpduRefused { lpdu_hash, error } => self.lpdu_refused(lpdu_hash, error, work),
            RoomCmd::AwaitLpdu { lpdu_hash, reply } => self.await_lpdu(lpdu_hash, reply),
            RoomCmd::InviteAnswered(answer) => self.invite_answered(*answer, work),
            RoomCmd::Seed { seed, reply } => match self.seed(*seed, work) {
                Ok(id) => work.on_done(move |r| {
                    let _ = reply.send(r.map(|_| id));
                }),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
        }
    }

    // ---- hub ----

    fn hub_local(&mut self, draft: Draft, reply: super::Reply<LocalOutcome>, work: &mut Work) {
        // A client retrying a send gets the event it already made.
        if let Some((device, txn)) = &draft.txn {
            if let Ok(Some(t)) = self.node.store.client_txn(&draft.sender, device, txn) {
                if let Ok(id) = EventId::parse(&t.event_id) {
                    // Its batch may still be flushing: answered after ours.
                    work.on_done(move |r| {
                        let _ = reply.send(r.map(|_| LocalOutcome::Done(id)));
                    });
                    return;
                }
            }
        }
        match self.build_local(&draft) {
            Ok(pdu) if self.invitee_to_ask(&pdu).is_some() => {
                self.ask_invitee(pdu, InviteFor::Local { draft, reply }, work)
            }
            Ok(pdu) => self.finish_local(draft, reply, pdu, work),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    pub(super) fn build_local(&self, draft: &Draft) -> Result<Pdu, RoomError> {
        if self.cur.version.is_mixed() {
            self.dag_build(draft)
        } else {
            build::hub_event_from_draft(&self.cur, &self.node.key, draft, now_ms())
        }
    }

    /// Appends a local user's built event; the client is answered once the
    /// batch is durable.
    pub(super) fn finish_local(&mut self, draft: Draft, reply: super::Reply<LocalOutcome>, pdu: Pdu, work: &mut Work) {
        let staged = if self.cur.version.is_mixed() {
            let id = pdu.event_id().clone();
            match self.dag_accept(work, pdu) {
                Ok(super::dag::Verdict::Accepted | super::dag::Verdict::Known) => Ok(id),
                Ok(other) => Err(RoomError::Forbidden(format!("{other:?}"))),
                Err(e) => Err(e),
            }
        } else {
            self.stage(work, pdu).map(|p| p.event_id().clone())
        };
        match staged {
            Ok(id) => {
                if let Some((device, txn)) = draft.txn {
                    work.batch.push(Op::PutClientTxn {
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
                work.on_done(move |r| {
                    let _ = reply.send(r.map(|_| LocalOutcome::Done(id)));
                });
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn hub_lpdu(&mut self, lpdu: Lpdu, with_state: bool, reply: super::Reply<Appended>, work: &mut Work) {
        if !self.is_hub() {
            let _ = reply.send(Err(RoomError::NotHub));
            return;
        }
        // A replayed LPDU is not appended twice (OQ-43).
        let hash = lpdu.lpdu_hash().to_owned();
        let existing = match work.staged_lpdus.get(&hash) {
            Some(p) => Some(p.clone()),
            None => self.load_sequenced(&hash),
        };
        if let Some(pdu) = existing {
            let state_before = with_state.then(|| (*self.cur.state).clone());
            let appended = Appended { event_id: pdu.event_id().clone(), pdu, state_before };
            work.on_done(move |r| {
                let _ = reply.send(r.map(|_| appended));
            });
            return;
        }
        match build::hub_event_from_lpdu(&self.cur, &self.node.key, &lpdu) {
            Ok(pdu) if self.invitee_to_ask(&pdu).is_some() => {
                self.ask_invitee(pdu, InviteFor::Lpdu { lpdu, with_state, reply }, work)
            }
            Ok(pdu) => self.finish_lpdu(lpdu, with_state, reply, pdu, work),
            Err(e) => {
                tracing::info!(lpdu = %hash, sender = %lpdu.sender(), reason = %e, "refused an event");
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Appends the PDU built from a participant's LPDU.
    pub(super) fn finish_lpdu(
        &mut self,
        lpdu: Lpdu,
        with_state: bool,
        reply: super::Reply<Appended>,
        pdu: Pdu,
        work: &mut Work,
    ) {
        let hash = lpdu.lpdu_hash().to_owned();
        let state_before = with_state.then(|| (*self.cur.state).clone());
        match self.stage(work, pdu) {
            Ok(pdu) => {
                work.staged_lpdus.insert(hash, pdu.clone());
                let appended = Appended { event_id: pdu.event_id().clone(), pdu, state_before };
                work.on_done(move |r| {
                    let _ = reply.send(r.map(|_| appended));
                });
            }
            Err(e) => {
                tracing::info!(lpdu = %hash, sender = %lpdu.sender(), reason = %e, "refused an event");
                let _ = reply.send(Err(e));
            }
        }
    }

    fn load_sequenced(&self, lpdu_hash: &str) -> Option<Arc<Pdu>> {
        let id = self.node.store.lpdu_event(&self.cur.room_id, lpdu_hash).ok()??;
        crate::room::load::load_pdu(&self.node, self.cur.version, &id).ok().flatten()
    }

    /// A room joined elsewhere: the state and auth chain from the hub's
    /// answer (kept as outliers), then our join as the first list entry.
    fn seed(&mut self, seed: JoinSeed, work: &mut Work) -> Result<EventId, RoomError> {
        if self.cur.length != 0 {
            return Err(RoomError::BadEvent("the room has events already".into()));
        }
        let room = self.cur.room_id.clone();
        // Written only if the join itself can be staged.
        let mut records = seed.snapshot;
        for e in seed.outliers.iter().filter(|e| e.event_id() != seed.join.event_id()) {
            let json = serde_json::to_vec(e.json()).unwrap_or_default();
            let record = EventRecord {
                json,
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
        self.joined = JoinedServers::from_state(&seed.state);
        self.cur.state = Arc::new(seed.state);
        let id = seed.join.event_id().clone();
        if self.cur.version.is_mixed() {
            self.cur.extremities = vec![id.clone()];
            self.cur.max_depth = seed.depth;
        }
        // The seed's records go before the join's own: where both write one
        // key (a hub may list the join in `state`), the join's list entry
        // wins over an outlier copy.
        let at = work.batch.ops.len();
        if let Err(e) = self.stage(work, seed.join) {
            (self.cur, self.joined) = before;
            return Err(e);
        }
        work.batch.ops.splice(at..at, records.ops);
        Ok(id)
    }

    // ---- both roles ----

    /// Puts a checked event on the in-memory tail and its writes in the
    /// batch: event, list entry, state, stream position, memberships of our
    /// users, and (hub) the outbound queue of every destination.
    pub(super) fn stage(&mut self, work: &mut Work, pdu: Pdu) -> Result<Arc<Pdu>, RoomError> {
        self.stage_with(work, pdu, false)
    }

    pub(super) fn stage_with(&mut self, work: &mut Work, pdu: Pdu, soft_failed: bool) -> Result<Arc<Pdu>, RoomError> {
        let pdu = Arc::new(pdu);
        let pos = self.append_entry(work, &pdu, soft_failed)?;
        let old_membership = self.target_membership(&pdu);
        if !soft_failed {
            if let Some(sk) = pdu.state_key() {
                self.set_state(work, pdu.event_type(), sk, Some(pdu.clone()), pos);
            }
        }
        self.after_append(work, &pdu, soft_failed, old_membership.as_deref(), pos);
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
        work: &mut Work,
        pdu: &Arc<Pdu>,
        soft_failed: bool,
    ) -> Result<u64, RoomError> {
        let alloc = self.node.positions.allocate(1)?;
        let pos = alloc.first();
        work.allocations.push(alloc);
        let id = pdu.event_id().clone();
        let room = self.cur.room_id.clone();
        let index = self.cur.length;
        let json = serde_json::to_vec(pdu.json()).unwrap_or_default();
        let stream = if soft_failed { 0 } else { pos };
        work.batch
            .push(Op::PutEvent(
                id.clone(),
                EventRecord {
                    json,
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
            work.batch.push(Op::StreamEntry(StreamEntry { pos, room, event: id.clone() }));
        }
        // Only mixed rooms read events back for state resolution; an LM
        // room's events would only take memory there.
        if self.cur.version.is_mixed() {
            self.node.dag.remember_event(pdu.clone());
        }
        self.cur.tail = Some(id.clone());
        self.cur.length += 1;
        work.staged_pdus.insert(id.clone(), pdu.clone());
        work.staged_ids.insert(id);
        work.appended = true;
        Ok(pos)
    }

    /// Changes one key of the current state (`None` removes it), with what
    /// follows from it: joined servers and our users' memberships.
    pub(super) fn set_state(&mut self, work: &mut Work, ty: &str, sk: &str, event: Option<Arc<Pdu>>, pos: u64) {
        let room = self.cur.room_id.clone();
        let is_member = ty == "m.room.member";
        let old = is_member.then(|| self.cur.state.membership(sk).to_owned());
        match &event {
            Some(e) => {
                work.batch.push(Op::SetState {
                    room: room.clone(),
                    event_type: ty.to_owned(),
                    state_key: sk.to_owned(),
                    event: e.event_id().clone(),
                });
                Arc::make_mut(&mut self.cur.state).apply(e.clone());
            }
            None => {
                work.batch.push(Op::DeleteState {
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
        if user.is_on(&self.node.name) {
            let event_id = event.as_ref().map(|e| e.event_id().to_string()).unwrap_or_default();
            work.batch.push(Op::PutMembership {
                user,
                room,
                membership: Membership {
                    membership: new.to_owned(),
                    stream: pos,
                    event_id,
                    via_server: self.cur.hub.to_string(),
                    room_version: self.cur.version.id.to_owned(),
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
        work: &mut Work,
        pdu: &Arc<Pdu>,
        soft_failed: bool,
        old_membership: Option<&str>,
        pos: u64,
    ) {
        let id = pdu.event_id().clone();
        if self.is_hub() {
            if let Some(hash) = pdu.lpdu_hash() {
                let room = self.cur.room_id.clone();
                work.batch.push(Op::LpduIndex { room, lpdu_hash: hash.to_owned(), event: id.clone() });
            }
            // Soft-failed events are kept and served, not relayed.
            if !soft_failed {
                for dest in destinations(&self.node.name, &self.joined, pdu, old_membership) {
                    if self.origin_has_it(pdu, &dest) {
                        continue;
                    }
                    let item =
                        QueueItem { item: Some(crate::store::records::queue_item::Item::EventId(id.to_string())) };
                    work.batch.push(Op::Enqueue { dest: dest.clone(), pos, item });
                    work.wake.insert(dest);
                }
            }
        } else if let Some(hash) = pdu.lpdu_hash() {
            self.note_echo(work, hash, &id);
        } else if self.cur.version.is_mixed() {
            // A mixed room's own events are pending by event id.
            self.note_echo(work, id.as_str(), &id);
        }
        if !soft_failed && pdu.event_type() == "m.room.redaction" {
            self.apply_redaction(work, pdu);
        }
    }

    /// A DAG server sends its own events to every server in the room, so
    /// the hub does not send them back to it. lmx participants get their
    /// own events back: that is how they learn the event's place.
    fn origin_has_it(&self, pdu: &Pdu, dest: &ServerName) -> bool {
        pdu.hub_server().is_none()
            && pdu.sender().is_on(dest)
            && self.node.keyring.cached_linearized(dest) == Some(false)
    }

    pub(super) fn knows(&self, work: &Work, id: &EventId) -> bool {
        work.staged_ids.contains(id) || matches!(self.node.store.event(id), Ok(Some(r)) if !r.outlier)
    }

    /// Network work for the room, beside its writer: `job` starts once this
    /// batch is durable (or gets the write's error) and what it returns is
    /// the room's next input.
    pub(super) fn beside<F, Fut>(&self, work: &mut Work, job: F)
    where
        F: FnOnce(Result<(), RoomError>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = RoomCmd> + Send + 'static,
    {
        let (node, inbox) = (self.node.clone(), self.inbox.clone());
        work.on_done(move |written| {
            node.spawn(async move {
                let input = job(written).await;
                if let Some(inbox) = inbox.upgrade() {
                    let _ = inbox.send(input).await;
                }
            });
        });
    }

    /// Writes and flushes a batch, then answers everyone waiting on it.
    /// Writes a batch (not yet durable) and starts its flush; the view to
    /// publish once it is durable is taken now, as later batches move on.
    fn write(&mut self, mut work: Work) -> Written {
        if work.appended {
            self.trim_cache(&mut work);
            work.batch.push(Op::PutRoom(RoomRecord {
                room_id: self.cur.room_id.to_string(),
                room_version: self.cur.version.id.to_owned(),
                hub_server: self.cur.hub.to_string(),
                length: self.cur.length,
                tail: self.cur.tail.as_ref().map(|t| t.to_string()).unwrap_or_default(),
                extremities: self.cur.extremities.iter().map(|e| e.to_string()).collect(),
                max_depth: self.cur.max_depth,
            }));
        }
        let view = work.appended.then(|| Arc::new(self.cur.clone()));
        let store = self.node.store.clone();
        let flush: Flush = if work.batch.is_empty() {
            Box::pin(async { Ok(()) })
        } else {
            match store.write(std::mem::take(&mut work.batch)) {
                Ok(()) => Box::pin(async move { store.flush().await }),
                // Met like a failed flush, after the batches before it.
                Err(e) => Box::pin(async move { Err(e) }),
            }
        };
        // Spawned, so the fsync goes on while the next batch is built.
        Written { work, view, flush: tokio::spawn(flush) }
    }

    /// A batch is durable (or failed): publish, wake, answer.
    fn finish(&mut self, mut work: Work, view: Option<Arc<RoomView>>, result: Result<(), RoomError>) {
        if let Err(e) = &result {
            // Answers held back for a gap may count events of this batch.
            self.fail_deferred(e);
            self.reload();
        } else if let Some(view) = view {
            crate::crash::point("room.after_flush");
            *self.view.write().expect("poisoned") = view;
        }
        self.node.dag.trim();
        // Publishing positions before waking readers lets them see it all.
        drop(std::mem::take(&mut work.allocations));
        for dest in &work.wake {
            self.node.outbound.wake(&self.node, dest);
        }
        for (hash, id) in work.echoes.drain(..) {
            for w in self.waiters.remove(&hash).unwrap_or_default() {
                let _ = w.send(result.clone().map(|_| id.clone()));
            }
        }
        for done in work.done {
            done(result.clone());
        }
    }

    /// After a failed write the in-memory state may be ahead of the disk:
    /// read the room back.
    fn reload(&mut self) {
        self.node.dag.clear();
        match crate::room::load::load_view(&self.node, &self.cur.room_id) {
            Ok(Some(view)) => {
                self.joined = JoinedServers::from_state(&view.state);
                self.cur = view;
            }
            // Nothing of the room is stored (its seed did not get written):
            // it starts from nothing again rather than from memory.
            Ok(None) => {
                self.cur = RoomView::empty(self.cur.room_id.clone(), self.cur.version, self.cur.hub.clone());
                self.joined = JoinedServers::default();
            }
            Err(e) => return tracing::error!(error = %e, "room could not be reloaded"),
        }
        // Readers see what the writer goes on from: what the store holds.
        *self.view.write().expect("poisoned") = Arc::new(self.cur.clone());
    }
}
