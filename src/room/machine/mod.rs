//! The decisions of one room, without I/O: `Machine::handle(input, now,
//! effects)` takes one input (a local user's draft, a participant's LPDU,
//! the hub's events, a DAG server's events, the answer of a fetch run
//! beside the writer...) and adds to the batch's effects: the writes, the
//! answers to release once they are durable, the delivery queues to wake,
//! the fetches to start, and the view to publish. It reads the store only
//! through `Reads` (read-only), takes time as an argument and stream
//! positions from a block the driver reserved, so a test can drive it with
//! an in-memory store and nothing else (see `model_test.rs`).
//!
//! LM rooms and mixed rooms are two `Rules` (kind.rs) behind one machine.

pub mod build;
pub mod fanout;
mod gap;
mod hub;
mod invite;
mod kind;
mod mixed;
mod mls;
#[cfg(test)]
mod model_participant_test;
#[cfg(test)]
mod model_test;
mod participant;
mod receive;
mod redaction;
pub mod snapshot;
mod stage;
pub mod stripped;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

pub use build::Draft;
pub use invite::InviteFor;
pub use mixed::{build_create, Outlier, Verdict};
pub use mls::creation_algorithm;

use crate::core::crypto::SigningKey;
use crate::core::event::{Lpdu, Pdu, RoomVersion};
use crate::core::ids::{EventId, RoomId, ServerName, UserId};
use crate::core::rooms::StateMap;
use crate::store::records::{ClientTxn, PendingLpdu};
use crate::store::{Batch, StoreError};
use fanout::JoinedServers;
use kind::Rules;
use snapshot::{DagCache, DagStore};

/// Why a room refused or failed an operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RoomError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadEvent(String),
    #[error("event is too large: {0}")]
    TooLarge(String),
    #[error("this server is not the room's hub")]
    NotHub,
    #[error("the room's hub has not sequenced the event yet")]
    Pending,
    #[error("{0}")]
    Remote(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("room task stopped")]
    Gone,
    /// Another process of this server owns the room now.
    #[error("the room is served by another process of this server")]
    Elsewhere(crate::store::Owner),
}

impl RoomError {
    /// What another server or a client is told: storage and task failures
    /// go out without their details (the storage error was logged where
    /// it became a `RoomError`).
    pub fn public_reason(&self) -> String {
        match self {
            RoomError::Storage(_) | RoomError::Gone => "internal error".into(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for RoomError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Elsewhere(owner) = e {
            tracing::debug!(owner = %owner, "a room is owned by another process");
            return RoomError::Elsewhere(owner);
        }
        tracing::error!(error = %e, "storage error in a room");
        RoomError::Storage(e.to_string())
    }
}

/// What readers may see of a room without asking its task.
#[derive(Debug, Clone)]
pub struct RoomView {
    pub room_id: RoomId,
    pub version: &'static RoomVersion,
    pub hub: ServerName,
    /// Shared with published views: a batch without state changes copies
    /// nothing, a state change copies the map only while a reader holds it.
    pub state: Arc<StateMap>,
    pub tail: Option<EventId>,
    pub length: u64,
    /// Mixed rooms: the DAG's forward extremities (what the next event
    /// built here references); unused in LM rooms.
    pub extremities: Vec<EventId>,
    /// Mixed rooms: the greatest depth accepted so far.
    pub max_depth: i64,
    /// MLS rooms: the last accepted `m.mls.commit`.
    pub mls_commit: Option<EventId>,
}

impl RoomView {
    /// A room with no events yet.
    pub fn empty(room_id: RoomId, version: &'static RoomVersion, hub: ServerName) -> Self {
        RoomView {
            room_id,
            version,
            hub,
            state: Arc::default(),
            tail: None,
            length: 0,
            extremities: Vec::new(),
            max_depth: 0,
            mls_commit: None,
        }
    }

    pub fn is_hub(&self, me: &ServerName) -> bool {
        &self.hub == me
    }

    /// Mixed rooms: what an event built now references, the newest forward
    /// extremities (the rest stay extremities for the next event).
    pub fn prev_events_for_new(&self) -> &[EventId] {
        let keep = crate::core::event::MAX_PREV_EVENTS;
        &self.extremities[self.extremities.len().saturating_sub(keep)..]
    }
}

/// The result of an accepted event.
#[derive(Debug, Clone)]
pub struct Appended {
    pub event_id: EventId,
    pub pdu: Arc<Pdu>,
    /// Room state before the event, when asked for (`send_join` answers).
    pub state_before: Option<StateMap>,
}

/// What a room joined elsewhere starts from: the state before our join and
/// the events it needs (kept as outliers), and the join itself, which
/// becomes the first entry of our copy of the list.
pub struct JoinSeed {
    pub room: RoomId,
    pub version: &'static RoomVersion,
    pub hub: ServerName,
    pub state: StateMap,
    pub outliers: Vec<Pdu>,
    pub join: Pdu,
    /// Mixed rooms: the join's depth.
    pub depth: i64,
}

/// Names a caller waiting for an answer; the driver holds its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// A local user's send, done with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalDone {
    /// Sequenced (on a hub at once; on a participant when the echo came).
    Sent(EventId),
    /// A participant's event is on its way to the hub; `echoes` will name
    /// `lpdu_hash` once the hub's copy is in the list.
    Waiting { lpdu_hash: String },
}

/// An answer, of the kind the input asked for.
#[derive(Debug)]
pub enum Reply {
    Local(LocalDone),
    Appended(Appended),
    FromHub(Vec<Result<(), RoomError>>),
    Dag(Vec<(EventId, Result<Verdict, RoomError>)>),
    Seeded(EventId),
    /// How many cached events a purge dropped.
    Purged(u64),
}

/// Counts a refusal by the number of the rule that made it: like a log
/// line, a side channel; nothing the machine decides depends on it.
pub(super) fn counted(e: crate::core::rooms::AuthError) -> crate::core::rooms::AuthError {
    metrics::counter!("lmx_auth_rejections_total", "rule" => e.rule_label()).increment(1);
    e
}

/// What a room is handed.
pub enum Input {
    /// A local user's event.
    Local { draft: Draft, ticket: Ticket },
    /// An LPDU from a participant (we are the hub); signatures checked.
    /// `with_state`: also answer the state before the event.
    Lpdu { lpdu: Lpdu, with_state: bool, ticket: Ticket },
    /// PDUs from the hub (we participate); signatures checked.
    FromHub { pdus: Vec<Pdu>, ticket: Ticket },
    /// Mixed rooms: checked events, in the order to take them, and the
    /// events they need (`outliers`).
    Dag { pdus: Vec<Pdu>, outliers: Vec<Outlier>, ticket: Ticket },
    /// LM rooms, hub: a DAG-capable LM server's own event; checked.
    LmDagEvent { pdu: Pdu, ticket: Ticket },
    /// A participant learns the hub refused one of its LPDUs.
    LpduRefused { lpdu_hash: String, error: String },
    /// The hub's backfill for a gap in our list (newest first), the
    /// answer of a `Fetch::Gap`.
    GapFetched(Result<Vec<Pdu>, RoomError>),
    /// The invitee's server's answer to a `Fetch::Invite`.
    InviteAnswered { origin: InviteFor, answer: Result<Pdu, RoomError> },
    /// The first input of a room joined from a `send_join` answer.
    Seed { seed: Box<JoinSeed>, ticket: Ticket },
    /// An operator's purge of a followed room's cache down to `keep`.
    Purge { keep: u64, ticket: Ticket },
}

/// Network work the driver runs beside the writer once the batch is
/// durable; its answer comes back as an input.
pub enum Fetch {
    /// The hub's backfill from `missing` back to an event we hold
    /// (answered with `Input::GapFetched`).
    Gap { view: Box<RoomView>, missing: EventId },
    /// The invitee's server's countersignature (answered with
    /// `Input::InviteAnswered`, which carries `origin` back).
    Invite { view: Box<RoomView>, pdu: Box<Pdu>, origin: InviteFor },
}

/// What the store can tell the machine. Read-only: the machine writes only
/// through the batch it hands back.
pub trait Reads: DagStore + Send + Sync {
    fn client_txn(&self, user: &UserId, device: &str, txn: &str) -> Result<Option<ClientTxn>, StoreError>;
    fn lpdu_event(&self, room: &RoomId, lpdu_hash: &str) -> Result<Option<EventId>, StoreError>;
    fn pending_lpdu(&self, lpdu_hash: &str) -> Result<Option<PendingLpdu>, StoreError>;
    fn list(&self, room: &RoomId, from: u64, to: u64) -> Result<Vec<EventId>, StoreError>;
    /// Whether `server` speaks LM, when known (from its keys).
    fn linearized(&self, server: &ServerName) -> Option<bool>;
}

/// What the machine works with beyond the room itself.
#[derive(Clone)]
pub struct Env {
    /// This server's key (its name is the key's server).
    pub key: SigningKey,
    /// Follower mode: recent events kept per room hubbed elsewhere.
    pub timeline_cache: Option<u64>,
}

type Answer = (Ticket, Result<Reply, RoomError>);

/// One batch's effects.
#[derive(Default)]
pub struct Effects {
    /// The writes, applied and flushed once.
    pub batch: Batch,
    /// Stream positions the driver reserved for this batch.
    positions: Range<u64>,
    /// Destinations with new items in their queues.
    pub wake: BTreeSet<ServerName>,
    /// Answers that do not depend on the batch (refusals).
    pub answers_now: Vec<Answer>,
    /// Answers released once the batch is durable (a failed write turns
    /// each into its error).
    pub answers: Vec<Answer>,
    /// Participant: our events now in the list, by LPDU hash (mixed rooms:
    /// by event id); released once durable.
    pub echoes: Vec<(String, EventId)>,
    /// Participant: our LPDUs the hub refused (told once the batch that
    /// records it is done, after the answers that register waits).
    pub refused: Vec<(String, RoomError)>,
    /// Network work to start once the batch is durable.
    pub fetches: Vec<Fetch>,
    /// Events whose stored form this batch changes (shared caches forget
    /// them once it is durable).
    pub changed: Vec<EventId>,
    /// The room as of this batch, to publish once durable.
    pub view: Option<RoomView>,
    staged_lpdus: HashMap<String, Arc<Pdu>>,
    /// Client transactions taken in this batch (a retry in the same batch
    /// finds them here, not in the store).
    staged_txns: HashMap<(UserId, String, String), LocalDone>,
    staged_ids: BTreeSet<EventId>,
    staged_pdus: HashMap<EventId, Arc<Pdu>>,
    appended: bool,
}

impl Effects {
    pub fn new(positions: Range<u64>) -> Self {
        Effects { positions, ..Default::default() }
    }

    fn position(&mut self) -> Result<u64, RoomError> {
        self.positions.next().ok_or_else(|| RoomError::Storage("the batch ran out of stream positions".into()))
    }

    fn answer(&mut self, ticket: Ticket, reply: Reply) {
        self.answers.push((ticket, Ok(reply)));
    }

    fn refuse(&mut self, ticket: Ticket, e: RoomError) {
        self.answers_now.push((ticket, Err(e)));
    }

    /// A retry of a client transaction taken earlier in this batch.
    fn staged_txn(&self, draft: &Draft) -> Option<LocalDone> {
        let (device, txn) = draft.txn.as_ref()?;
        self.staged_txns.get(&(draft.sender.clone(), device.clone(), txn.clone())).cloned()
    }

    fn stage_txn(&mut self, draft: &Draft, done: LocalDone) {
        if let Some((device, txn)) = &draft.txn {
            self.staged_txns.insert((draft.sender.clone(), device.clone(), txn.clone()), done);
        }
    }
}

/// One room's state machine.
pub struct Machine {
    env: Env,
    reads: Arc<dyn Reads>,
    rules: &'static dyn Rules,
    cur: RoomView,
    joined: JoinedServers,
    /// Follower: list positions below this have been trimmed.
    pruned_upto: u64,
    /// Invites out with an invitee's server, by what a retry would repeat.
    inviting: HashSet<String>,
    /// Participant: a gap in our list being filled from the hub.
    gap: Option<gap::Gap>,
    /// Mixed rooms: this room's events and state snapshots, staged ones
    /// included (emptied after a failed write).
    cache: DagCache,
    /// The time of the input being handled.
    now: i64,
    /// MLS rooms: the group of the room's last commit, when read.
    mls: Option<mls::Checked>,
    /// MLS rooms: the group of a commit checked and about to be appended.
    mls_checked: Option<mls::Checked>,
}

impl Machine {
    pub fn new(env: Env, reads: Arc<dyn Reads>, view: RoomView) -> Self {
        Machine {
            env,
            reads,
            rules: kind::rules_for(view.version),
            joined: JoinedServers::from_state(&view.state),
            cur: view,
            pruned_upto: 0,
            inviting: HashSet::new(),
            gap: None,
            // Per room, so smaller than the handlers' shared one.
            cache: DagCache::bounded(2048, 128),
            now: 0,
            mls: None,
            mls_checked: None,
        }
    }

    /// No invite out with another server and no gap being filled: the
    /// machine holds nothing a reload from the store would not give back.
    pub fn is_idle(&self) -> bool {
        self.inviting.is_empty() && self.gap.is_none()
    }

    /// Follower: how far old events have been trimmed (kept across a rest,
    /// so a woken room does not read its whole list again).
    pub fn pruned_upto(&self) -> u64 {
        self.pruned_upto
    }

    pub fn resume_pruning_at(&mut self, upto: u64) {
        self.pruned_upto = upto;
    }

    pub fn view(&self) -> &RoomView {
        &self.cur
    }

    fn me(&self) -> &ServerName {
        self.env.key.server()
    }

    fn is_hub(&self) -> bool {
        self.cur.hub == *self.env.key.server()
    }

    /// The most stream positions `input` can take, for the driver to
    /// reserve before handling it.
    pub fn positions_needed(&self, input: &Input) -> u64 {
        match input {
            Input::Local { .. } | Input::Lpdu { .. } | Input::LmDagEvent { .. } | Input::Seed { .. } => 1,
            Input::InviteAnswered { .. } => 1,
            Input::FromHub { pdus, .. } | Input::Dag { pdus, .. } => pdus.len() as u64,
            Input::LpduRefused { .. } | Input::Purge { .. } => 0,
            Input::GapFetched(fetched) => {
                let fetched = fetched.as_ref().map_or(0, |f| f.len());
                (fetched + self.gap.as_ref().map_or(0, |g| g.waiting_events())) as u64
            }
        }
    }

    /// Takes one input into the batch under way.
    pub fn handle(&mut self, input: Input, now: i64, out: &mut Effects) {
        self.now = now;
        match input {
            Input::Local { draft, ticket } => {
                if self.is_hub() {
                    self.hub_local(draft, ticket, out)
                } else {
                    self.participant_local(draft, ticket, out)
                }
            }
            Input::Lpdu { lpdu, with_state, ticket } => self.hub_lpdu(lpdu, with_state, ticket, out),
            Input::FromHub { pdus, ticket } => self.take_from_hub(pdus, ticket, out),
            Input::GapFetched(fetched) => self.gap_fetched(fetched, out),
            Input::LmDagEvent { pdu, ticket } => match self.hub_dag_event(pdu.clone(), out) {
                Ok(pdu) => out.answer(
                    ticket,
                    Reply::Appended(Appended { event_id: pdu.event_id().clone(), pdu, state_before: None }),
                ),
                Err(e) => {
                    tracing::info!(event = %pdu.event_id(), sender = %pdu.sender(), reason = %e, "refused an event");
                    out.refuse(ticket, e)
                }
            },
            Input::Dag { pdus, outliers, ticket } => {
                let results = self.take_dag(pdus, outliers, out);
                out.answer(ticket, Reply::Dag(results));
            }
            Input::LpduRefused { lpdu_hash, error } => self.lpdu_refused(lpdu_hash, error, out),
            Input::InviteAnswered { origin, answer } => self.invite_answered(origin, answer, out),
            Input::Seed { seed, ticket } => match self.seed(*seed, out) {
                Ok(id) => out.answer(ticket, Reply::Seeded(id)),
                Err(e) => out.refuse(ticket, e),
            },
            Input::Purge { keep, ticket } => match self.purge(keep, out) {
                Ok(n) => out.answer(ticket, Reply::Purged(n)),
                Err(e) => out.refuse(ticket, e),
            },
        }
    }

    /// Closes the batch: a follower's trimming, the room record, and the
    /// view to publish once it is durable.
    pub fn end_batch(&mut self, out: &mut Effects) {
        if out.appended {
            self.trim_cache(out);
            out.batch.push(crate::store::Op::PutRoom(crate::store::records::RoomRecord {
                room_id: self.cur.room_id.to_string(),
                room_version: self.cur.version.id.to_owned(),
                hub_server: self.cur.hub.to_string(),
                length: self.cur.length,
                tail: self.cur.tail.as_ref().map(|t| t.to_string()).unwrap_or_default(),
                extremities: self.cur.extremities.iter().map(|e| e.to_string()).collect(),
                max_depth: self.cur.max_depth,
                mls_commit: self.cur.mls_commit.as_ref().map(|e| e.to_string()).unwrap_or_default(),
            }));
            out.view = Some(self.cur.clone());
        }
        self.cache.trim();
    }

    /// A batch failed to write: the memory may be ahead of the disk. Answers
    /// held back for a gap must not report its events as taken, and the
    /// room goes on from what the store holds (`None`: nothing of it).
    pub fn write_failed(&mut self, error: &RoomError, stored: Option<RoomView>) {
        self.fail_deferred(error);
        self.cache.clear();
        self.cur =
            stored.unwrap_or_else(|| RoomView::empty(self.cur.room_id.clone(), self.cur.version, self.cur.hub.clone()));
        self.joined = JoinedServers::from_state(&self.cur.state);
    }
}
