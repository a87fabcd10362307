//! Rooms at run time: one writer task per room owns its list tail and state
//! (hub or participant role), and publishes a read-only view after every
//! batch. Everything that changes a room goes through its task's inbox.

mod actor;
pub mod build;
mod dag;
mod directory;
mod effects;
mod fanout;
mod gap;
mod invite;
pub mod load;
mod participant;
mod receive;
pub mod snapshot;
#[cfg(test)]
mod write_failures;

use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};

pub use build::Draft;
pub use dag::{build_create, Outlier, Verdict};
pub use directory::{JoinSeed, JoinTurn, Opened, Rooms};

use crate::core::event::{Lpdu, Pdu, RoomVersion};
use crate::core::ids::{EventId, RoomId, ServerName};
use crate::core::rooms::StateMap;

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

impl From<crate::store::StoreError> for RoomError {
    fn from(e: crate::store::StoreError) -> Self {
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

pub type Reply<T> = oneshot::Sender<Result<T, RoomError>>;

/// The outcome of a local user's send.
pub enum LocalOutcome {
    /// Sequenced (on a hub at once; on a participant when the echo came).
    Done(EventId),
    /// A participant's LPDU is on its way; resolves when the hub echoes it.
    Waiting { lpdu_hash: String, done: oneshot::Receiver<Result<EventId, RoomError>> },
}

pub enum RoomCmd {
    /// A local user's event.
    Local { draft: Draft, reply: Reply<LocalOutcome> },
    /// An LPDU from a participant (we are the hub); signatures checked.
    /// `with_state`: also return the state before the event.
    Lpdu { lpdu: Lpdu, with_state: bool, reply: Reply<Appended> },
    /// PDUs from the hub (we participate); signatures checked.
    FromHub { pdus: Vec<Pdu>, reply: Reply<Vec<Result<(), RoomError>>> },
    /// Mixed rooms: checked events from a DAG server, a participant or the
    /// hub, in the order to take them; `outliers` are events they need
    /// (auth events, or prev events with the state before them).
    Dag { pdus: Vec<Pdu>, outliers: Vec<Outlier>, reply: Reply<Vec<(EventId, Result<Verdict, RoomError>)>> },
    /// LM rooms, hub: a DAG-capable LM server's own event; checked.
    LmDagEvent { pdu: Pdu, reply: Reply<Appended> },
    /// A participant learns the hub refused one of its LPDUs.
    LpduRefused { lpdu_hash: String, error: String },
    /// A participant waits for an LPDU it sent earlier (a client retry).
    AwaitLpdu { lpdu_hash: String, reply: oneshot::Sender<Result<EventId, RoomError>> },
    /// The hub's backfill for a gap in our list (newest first); only the
    /// room itself sends it.
    GapFetched(Result<Vec<Pdu>, RoomError>),
    /// An invitee's server answered (or could not be asked about) an
    /// invite the room built; only the room itself sends it.
    InviteAnswered(Box<invite::InviteAnswer>),
    /// The first input of a room joined from a `send_join` answer (only the
    /// directory sends it): its state, auth chain and our join.
    Seed { seed: Box<JoinSeed>, reply: Reply<EventId> },
}

#[derive(Clone)]
pub struct RoomHandle {
    tx: mpsc::Sender<RoomCmd>,
    view: Arc<RwLock<Arc<RoomView>>>,
}

impl RoomHandle {
    pub fn view(&self) -> Arc<RoomView> {
        self.view.read().expect("poisoned").clone()
    }

    fn try_send(&self, cmd: RoomCmd) -> Result<(), RoomError> {
        self.tx.try_send(cmd).map_err(|_| RoomError::Gone)
    }

    fn same(&self, other: &RoomHandle) -> bool {
        self.tx.same_channel(&other.tx)
    }

    pub async fn send(&self, cmd: RoomCmd) -> Result<(), RoomError> {
        self.tx.send(cmd).await.map_err(|_| RoomError::Gone)
    }

    /// Sends a command built around a reply channel and awaits the reply.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> RoomCmd) -> Result<T, RoomError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| RoomError::Gone)?
    }
}

#[cfg(test)]
mod tests {
    use super::RoomError;

    #[test]
    fn storage_and_task_details_stay_inside() {
        let detail = "sled: /var/lib/lmx/db: Input/output error";
        assert_eq!(RoomError::Storage(detail.into()).public_reason(), "internal error");
        assert_eq!(RoomError::Gone.public_reason(), "internal error");
        assert_eq!(RoomError::Forbidden("not joined".into()).public_reason(), "not joined");
    }
}
