//! The writer task of one room: the thin driver around its `Machine`.
//! Commands are taken from the inbox in batches; stream positions are
//! reserved for the batch, the machine handles each input, the batch is
//! written and flushed once (group commit), and only then are the callers
//! answered, the view published, delivery woken and fetches started
//! (durable before acknowledged). Batches are pipelined: the next one is
//! built and written while the previous one's flush runs; one built on a
//! batch that then failed fails too.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::directory::Shelf;
use super::machine::{snapshot::DagStore, Effects, Fetch, Input, LocalDone, Machine, Reads, Reply, Ticket, Verdict};
use super::{Appended, LocalOutcome, RoomCmd, RoomDeps, RoomError, RoomHandle, RoomNetwork, RoomView};
use crate::core::event::Pdu;
use crate::core::ids::{EventId, RoomId, ServerName, UserId};
use crate::store::records::{ClientTxn, EventRecord, PendingLpdu, StateSnapshot};
use crate::store::{Allocation, Claim, Store, StoreError};

/// Commands taken from the inbox per batch.
const MAX_BATCH: usize = 128;
/// Pages of backfill a gap may take before the participant gives up.
const MAX_GAP_PAGES: usize = 50;
const GAP_PAGE: usize = 100;

type FlushResult = Result<(), StoreError>;

/// A batch written to the store whose flush is under way.
struct Written {
    out: Effects,
    /// Released (published to readers) once the batch is durable.
    positions: Option<Allocation>,
    flush: tokio::task::JoinHandle<FlushResult>,
    /// For the debug log: when the batch was built, and from how many inputs.
    built: std::time::Instant,
    inputs: usize,
}

fn storage_failed(e: StoreError) -> RoomError {
    match e {
        StoreError::Elsewhere(_) => RoomError::from(e),
        e => {
            tracing::error!(error = %e, "room write failed; reloading the room");
            RoomError::Storage(e.to_string())
        }
    }
}

fn flushed_result(joined: Result<FlushResult, tokio::task::JoinError>) -> Result<(), RoomError> {
    match joined {
        Ok(r) => r.map_err(storage_failed),
        Err(e) => Err(RoomError::Storage(format!("flush task failed: {e}"))),
    }
}

/// A caller waiting for the answer to one input.
enum Waiting {
    Local(super::Reply<LocalOutcome>),
    Appended(super::Reply<Appended>),
    FromHub(super::Reply<Vec<Result<(), RoomError>>>),
    Dag(super::Reply<Vec<(EventId, Result<Verdict, RoomError>)>>),
    Seeded(super::Reply<EventId>),
    Purged(super::Reply<u64>),
}

impl Waiting {
    fn fail(self, e: RoomError) {
        let _ = match self {
            Waiting::Local(tx) => tx.send(Err(e)).is_ok(),
            Waiting::Appended(tx) => tx.send(Err(e)).is_ok(),
            Waiting::FromHub(tx) => tx.send(Err(e)).is_ok(),
            Waiting::Dag(tx) => tx.send(Err(e)).is_ok(),
            Waiting::Seeded(tx) => tx.send(Err(e)).is_ok(),
            Waiting::Purged(tx) => tx.send(Err(e)).is_ok(),
        };
    }
}

/// The store and what the server learned of other servers, as the
/// machine's read-only view.
struct StoreReads {
    store: Arc<dyn Store>,
    network: Arc<dyn RoomNetwork>,
}

impl DagStore for StoreReads {
    fn stored_event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        self.store.event(id)
    }

    fn stored_state_after(&self, id: &EventId) -> Result<Option<StateSnapshot>, StoreError> {
        self.store.state_after(id)
    }
}

impl Reads for StoreReads {
    fn client_txn(&self, user: &UserId, device: &str, txn: &str) -> Result<Option<ClientTxn>, StoreError> {
        self.store.client_txn(user, device, txn)
    }

    fn lpdu_event(&self, room: &RoomId, lpdu_hash: &str) -> Result<Option<EventId>, StoreError> {
        self.store.lpdu_event(room, lpdu_hash)
    }

    fn pending_lpdu(&self, lpdu_hash: &str) -> Result<Option<PendingLpdu>, StoreError> {
        self.store.pending_lpdu(lpdu_hash)
    }

    fn list(&self, room: &RoomId, from: u64, to: u64) -> Result<Vec<EventId>, StoreError> {
        self.store.list(room, from, to)
    }

    fn linearized(&self, server: &ServerName) -> Option<bool> {
        self.network.linearized(server)
    }
}

struct RoomTask {
    deps: RoomDeps,
    machine: Machine,
    view: Arc<RwLock<Arc<RoomView>>>,
    /// Callers waiting for an answer, by the ticket their input carries.
    pending: HashMap<Ticket, Waiting>,
    next_ticket: u64,
    /// Participant: clients waiting for the hub to sequence their event.
    waiters: HashMap<String, Vec<oneshot::Sender<Result<EventId, RoomError>>>>,
    /// Our own inbox, for answers of network work done beside the writer;
    /// weak, so the room stops once every handle is gone.
    inbox: mpsc::WeakSender<RoomCmd>,
    /// The directory, where an idle room is put to rest.
    shelf: Shelf,
    /// This process's hold on the room, checked by every batch.
    claim: Claim,
    /// Another process took the room over: this writer stops, and everyone
    /// still waiting is told so.
    disowned: Option<RoomError>,
}

/// Starts the writer task of a room whose state is `view`.
pub(super) fn spawn_room(deps: &RoomDeps, view: RoomView, shelf: Shelf, pruned_upto: u64, claim: Claim) -> RoomHandle {
    let (tx, rx) = mpsc::channel(1024);
    let shared = Arc::new(RwLock::new(Arc::new(view.clone())));
    let span = tracing::info_span!(parent: None, "room", room_id = %view.room_id);
    let reads = Arc::new(StoreReads { store: deps.store.clone(), network: deps.network.clone() });
    let task = RoomTask {
        deps: deps.clone(),
        machine: {
            let mut m = Machine::new(deps.env.clone(), reads, view);
            m.resume_pruning_at(pruned_upto);
            m
        },
        view: shared.clone(),
        pending: HashMap::new(),
        next_ticket: 0,
        waiters: HashMap::new(),
        inbox: tx.downgrade(),
        shelf,
        claim,
        disowned: None,
    };
    // A root span: the room outlives the request that happened to start it.
    (deps.spawn)(Box::pin(task.run(rx).instrument(span)));
    RoomHandle::here(tx, shared)
}

impl RoomTask {
    async fn run(mut self, mut rx: mpsc::Receiver<RoomCmd>) {
        let mut flushing: Option<Written> = None;
        loop {
            let first = match flushing.as_mut() {
                None => match self.deps.rest_after {
                    None => rx.recv().await,
                    Some(after) => match tokio::time::timeout(after, rx.recv()).await {
                        Ok(cmd) => cmd,
                        Err(_) => {
                            // A client that stopped waiting for its echo
                            // keeps nothing here (its send is settled from
                            // the store when the echo comes).
                            self.waiters.retain(|_, w| {
                                w.retain(|tx| !tx.is_closed());
                                !w.is_empty()
                            });
                            // The published view is what is durable (after a
                            // failed write the machine may be ahead of it).
                            let length = self.view.read().expect("poisoned").length;
                            let (room, pruned) = (&self.machine.view().room_id, self.machine.pruned_upto());
                            if self.is_idle() && self.shelf.rest(room, &rx, length, pruned) {
                                tracing::debug!("room resting");
                                return;
                            }
                            continue;
                        }
                    },
                },
                Some(w) => tokio::select! {
                    biased;
                    flushed = &mut w.flush => {
                        let w = flushing.take().expect("in flight");
                        self.finish(w, flushed_result(flushed));
                        if self.disowned.is_some() {
                            break;
                        }
                        continue;
                    }
                    cmd = rx.recv() => cmd,
                },
            };
            let Some(first) = first else { break };
            let mut inputs = vec![self.input(first)];
            while inputs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => inputs.push(self.input(c)),
                    Err(_) => break,
                }
            }
            let written = self.build_and_write(inputs);
            let previous_failed = match flushing.take() {
                Some(mut prev) => {
                    let result = flushed_result((&mut prev.flush).await);
                    let failed = result.is_err();
                    self.finish(prev, result);
                    failed
                }
                None => false,
            };
            if previous_failed {
                // Built on what a failed batch left in memory: fails too.
                let e = RoomError::Storage("an earlier write of the room failed".into());
                let mut written = written;
                let flushed = flushed_result((&mut written.flush).await);
                self.finish(written, flushed.and(Err(e)));
            } else {
                flushing = Some(written);
            }
            if self.disowned.is_some() {
                break;
            }
        }
        if let Some(mut w) = flushing.take() {
            let result = flushed_result((&mut w.flush).await);
            self.finish(w, result);
        }
        if let Some(e) = self.disowned.take() {
            self.stop_disowned(rx, e);
        }
    }

    /// Every caller still waiting, queued or not, is told (the room left
    /// the directory when the refusal came).
    fn stop_disowned(&mut self, mut rx: mpsc::Receiver<RoomCmd>, e: RoomError) {
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            // Registers the caller's reply, answered below.
            let _ = self.input(cmd);
        }
        for (_, waiting) in self.pending.drain() {
            waiting.fail(e.clone());
        }
        for (_, waiters) in self.waiters.drain() {
            for w in waiters {
                let _ = w.send(Err(e.clone()));
            }
        }
    }

    /// Nothing waits on the room: no caller, no client waiting for an
    /// echo, no fetch under way, nothing held back in the machine (the
    /// batch in flight is checked by the caller).
    fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.waiters.is_empty() && self.machine.is_idle()
    }

    fn ticket(&mut self, waiting: Waiting) -> Ticket {
        self.next_ticket += 1;
        let t = Ticket(self.next_ticket);
        self.pending.insert(t, waiting);
        t
    }

    fn input(&mut self, cmd: RoomCmd) -> Input {
        match cmd {
            RoomCmd::Local { draft, reply } => Input::Local { draft, ticket: self.ticket(Waiting::Local(reply)) },
            RoomCmd::Lpdu { lpdu, with_state, reply } => {
                Input::Lpdu { lpdu, with_state, ticket: self.ticket(Waiting::Appended(reply)) }
            }
            RoomCmd::FromHub { pdus, reply } => Input::FromHub { pdus, ticket: self.ticket(Waiting::FromHub(reply)) },
            RoomCmd::Dag { pdus, outliers, reply } => {
                Input::Dag { pdus, outliers, ticket: self.ticket(Waiting::Dag(reply)) }
            }
            RoomCmd::LmDagEvent { pdu, reply } => {
                Input::LmDagEvent { pdu, ticket: self.ticket(Waiting::Appended(reply)) }
            }
            RoomCmd::LpduRefused { lpdu_hash, error } => Input::LpduRefused { lpdu_hash, error },
            RoomCmd::Seed { seed, reply } => Input::Seed { seed, ticket: self.ticket(Waiting::Seeded(reply)) },
            RoomCmd::Purge { keep, reply } => Input::Purge { keep, ticket: self.ticket(Waiting::Purged(reply)) },
            RoomCmd::GapFetched(fetched) => Input::GapFetched(fetched),
            RoomCmd::InviteAnswered(answer) => {
                let (origin, answer) = *answer;
                Input::InviteAnswered { origin, answer }
            }
        }
    }

    /// Runs the machine over a batch of inputs and writes what it made (not
    /// yet durable); its flush starts at once.
    fn build_and_write(&mut self, inputs: Vec<Input>) -> Written {
        let needed: u64 = inputs.iter().map(|i| self.machine.positions_needed(i)).sum();
        let positions = match needed {
            0 => None,
            n => match self.deps.positions.allocate(n) {
                Ok(a) => Some(a),
                // Every event of the batch then fails for want of a position.
                Err(e) => {
                    tracing::error!(error = %e, "could not reserve stream positions");
                    None
                }
            },
        };
        let range = positions.as_ref().map_or(0..0, |a| *a.positions().start()..*a.positions().end() + 1);
        let (started, count) = (std::time::Instant::now(), inputs.len());
        let mut out = Effects::new(range);
        let now = crate::sys::now_ms();
        for input in inputs {
            self.machine.handle(input, now, &mut out);
        }
        self.machine.end_batch(&mut out);
        for (ticket, answer) in std::mem::take(&mut out.answers_now) {
            self.answer(ticket, answer);
        }
        let store = self.deps.store.clone();
        let mut batch = std::mem::take(&mut out.batch);
        batch.claim = Some(self.claim.clone());
        let flush = if batch.is_empty() {
            tokio::spawn(async { Ok(()) })
        } else {
            match store.write(batch) {
                // Spawned, so the fsync goes on while the next batch is built.
                Ok(()) => tokio::spawn(async move { store.flush().await }),
                // Met like a failed flush, after the batches before it.
                Err(e) => tokio::spawn(async move { Err(e) }),
            }
        };
        tracing::debug!(
            inputs = count,
            events = needed,
            built_us = started.elapsed().as_micros() as u64,
            "room batch written"
        );
        Written { out, positions, flush, built: std::time::Instant::now(), inputs: count }
    }

    /// A batch is durable (or failed): publish, wake, answer, fetch.
    fn finish(&mut self, written: Written, result: Result<(), RoomError>) {
        let Written { mut out, positions, built, inputs, .. } = written;
        tracing::debug!(
            inputs,
            durable_us = built.elapsed().as_micros() as u64,
            ok = result.is_ok(),
            "room batch durable"
        );
        match &result {
            Err(e @ RoomError::Elsewhere(_)) => {
                // Off the directory before anyone is answered: the next use
                // claims the room again, or is refused.
                if self.disowned.is_none() {
                    let (room, pruned) = (&self.machine.view().room_id, self.machine.pruned_upto());
                    self.shelf.disown(room, &self.inbox, self.view.read().expect("poisoned").length, pruned);
                }
                self.disowned = Some(e.clone());
            }
            Err(e) => {
                // The memory may be ahead of the disk: go on from the disk.
                match super::load::load_view(&self.deps.store, &self.machine.view().room_id) {
                    Ok(stored) => {
                        self.machine.write_failed(e, stored);
                        *self.view.write().expect("poisoned") = Arc::new(self.machine.view().clone());
                    }
                    // Readers keep the last durable view.
                    Err(load) => {
                        tracing::error!(error = %load, "room could not be reloaded");
                        let current = self.machine.view().clone();
                        self.machine.write_failed(e, Some(current));
                    }
                }
            }
            Ok(()) => {
                if let Some(view) = out.view.take() {
                    crate::crash::point("room.after_flush");
                    let mut published = self.view.write().expect("poisoned");
                    let appended = view.length.saturating_sub(published.length);
                    if appended > 0 && view.is_hub(self.deps.env.key.server()) {
                        let kind = if view.version.lm { "lm" } else { "mixed" };
                        metrics::counter!("lmx_events_sequenced_total", "room_kind" => kind).increment(appended);
                    }
                    *published = Arc::new(view);
                }
            }
        }
        for id in &out.changed {
            self.deps.shared_cache.forget_event(id);
        }
        self.deps.shared_cache.trim();
        // Publishing positions before waking readers lets them see it all.
        drop(positions);
        for dest in &out.wake {
            self.deps.network.wake(dest);
        }
        // Answers first: a participant's answer registers the client's wait
        // for its echo.
        for (ticket, answer) in std::mem::take(&mut out.answers) {
            self.answer(ticket, result.clone().and(answer));
        }
        for (hash, id) in out.echoes.drain(..) {
            for w in self.waiters.remove(&hash).unwrap_or_default() {
                let _ = w.send(result.clone().map(|_| id.clone()));
            }
        }
        // After the answers too: a retried send answered `Waiting` in this
        // batch or one before waits for this refusal.
        for (hash, e) in out.refused.drain(..) {
            for w in self.waiters.remove(&hash).unwrap_or_default() {
                let _ = w.send(Err(e.clone()));
            }
        }
        for fetch in out.fetches.drain(..) {
            self.start(fetch, result.clone());
        }
    }

    fn answer(&mut self, ticket: Ticket, answer: Result<Reply, RoomError>) {
        let Some(waiting) = self.pending.remove(&ticket) else { return };
        match (waiting, answer) {
            (w, Err(e)) => w.fail(e),
            (Waiting::Local(tx), Ok(Reply::Local(LocalDone::Sent(id)))) => {
                let _ = tx.send(Ok(LocalOutcome::Done(id)));
            }
            (Waiting::Local(tx), Ok(Reply::Local(LocalDone::Waiting { lpdu_hash }))) => {
                let (done_tx, done) = oneshot::channel();
                self.waiters.entry(lpdu_hash.clone()).or_default().push(done_tx);
                let _ = tx.send(Ok(LocalOutcome::Waiting { lpdu_hash, done }));
            }
            (Waiting::Appended(tx), Ok(Reply::Appended(a))) => {
                let _ = tx.send(Ok(a));
            }
            (Waiting::FromHub(tx), Ok(Reply::FromHub(r))) => {
                let _ = tx.send(Ok(r));
            }
            (Waiting::Dag(tx), Ok(Reply::Dag(r))) => {
                let _ = tx.send(Ok(r));
            }
            (Waiting::Seeded(tx), Ok(Reply::Seeded(id))) => {
                let _ = tx.send(Ok(id));
            }
            (Waiting::Purged(tx), Ok(Reply::Purged(n))) => {
                let _ = tx.send(Ok(n));
            }
            (w, Ok(other)) => {
                tracing::error!(answer = ?other, "a room answered an input with the wrong kind of answer");
                w.fail(RoomError::Storage("wrong kind of answer".into()));
            }
        }
    }

    /// Network work for the room, beside its writer: its answer is the
    /// room's next input. After a failed write it is not done, and the
    /// input carries the error.
    fn start(&self, fetch: Fetch, written: Result<(), RoomError>) {
        let (store, network, inbox) = (self.deps.store.clone(), self.deps.network.clone(), self.inbox.clone());
        (self.deps.spawn)(Box::pin(async move {
            let cmd = match fetch {
                Fetch::Gap { view, missing } => RoomCmd::GapFetched(match written {
                    Ok(()) => fetch_gap(&*store, &*network, &view, missing).await,
                    Err(e) => Err(e),
                }),
                Fetch::Invite { view, pdu, origin } => {
                    let answer = match written {
                        Ok(()) => network.countersign_invite(*view, *pdu).await,
                        Err(e) => Err(e),
                    };
                    RoomCmd::InviteAnswered(Box::new((origin, answer)))
                }
            };
            if let Some(inbox) = inbox.upgrade() {
                let _ = inbox.send(cmd).await;
            }
        }));
    }
}

/// The hub's backfill from `missing` back to an event we hold, newest
/// first.
async fn fetch_gap(
    store: &dyn Store,
    network: &dyn RoomNetwork,
    view: &RoomView,
    missing: EventId,
) -> Result<Vec<Pdu>, RoomError> {
    let known = |id: &EventId| matches!(store.event(id), Ok(Some(r)) if !r.outlier);
    let mut newest_first: Vec<Pdu> = Vec::new();
    let mut from = missing;
    for _ in 0..MAX_GAP_PAGES {
        let page = network.backfill(view.clone(), from.clone(), GAP_PAGE).await?;
        let mut reached = false;
        for pdu in page.into_iter().rev() {
            if known(pdu.event_id()) {
                reached = true;
                break;
            }
            if newest_first.iter().all(|p| p.event_id() != pdu.event_id()) {
                newest_first.push(pdu);
            }
        }
        match newest_first.last().and_then(|p| p.prev_events().first().cloned()) {
            Some(p) if !reached => from = p,
            _ => break,
        }
    }
    Ok(newest_first)
}
