//! Rooms at run time: one writer task per room owns its list tail and state
//! (hub or participant role), and publishes a read-only view after every
//! batch. Everything that changes a room goes through its task's inbox.

mod deps;
mod directory;
pub mod load;
pub mod machine;
pub mod relay;
#[cfg(test)]
mod resting_test;
pub mod snapshot;
pub mod summary;
mod task;
mod views;
#[cfg(test)]
mod write_failures;

use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};

pub use deps::{BoxFuture, RoomDeps, RoomNetwork, Spawn};
pub use directory::{JoinTurn, Opened, Rooms};
pub use machine::{build, build_create, Appended, Draft, InviteFor, JoinSeed, Outlier, RoomError, RoomView, Verdict};

use crate::core::event::{Lpdu, Pdu};
use crate::core::ids::EventId;

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
    /// The hub's backfill for a gap in our list (newest first); only the
    /// room itself sends it.
    GapFetched(Result<Vec<Pdu>, RoomError>),
    /// An invitee's server answered (or could not be asked about) an
    /// invite the room built; only the room itself sends it.
    InviteAnswered(Box<(InviteFor, Result<Pdu, RoomError>)>),
    /// The first input of a room joined from a `send_join` answer (only the
    /// directory sends it): its state, auth chain and our join.
    Seed { seed: Box<JoinSeed>, reply: Reply<EventId> },
    /// An operator's purge of a followed room's cached history down to the
    /// newest `keep` events; answers how many were dropped.
    Purge { keep: u64, reply: Reply<u64> },
}

/// A room's writer: its inbox here, or the process of this server that
/// owns the room, to which commands are relayed (`relay.rs`).
#[derive(Clone)]
pub struct RoomHandle {
    route: Route,
}

#[derive(Clone)]
enum Route {
    Here { tx: mpsc::Sender<RoomCmd>, view: Arc<RwLock<Arc<RoomView>>> },
    Owner(Arc<OwnedElsewhere>),
}

/// A room another process of this server writes.
pub struct OwnedElsewhere {
    pub owner: crate::store::Owner,
    room_id: crate::core::ids::RoomId,
    version: &'static crate::core::event::RoomVersion,
    /// The room as stored, read each time it is asked for (a relayed send
    /// needs none; reading a busy room's state for each would cost more
    /// than relaying it).
    read: Box<dyn Fn() -> Arc<RoomView> + Send + Sync>,
    /// Called when the owner could not be reached or no longer owns the
    /// room: the next use asks the store again.
    moved: Box<dyn Fn() + Send + Sync>,
    network: Arc<dyn RoomNetwork>,
}

impl RoomHandle {
    fn here(tx: mpsc::Sender<RoomCmd>, view: Arc<RwLock<Arc<RoomView>>>) -> RoomHandle {
        RoomHandle { route: Route::Here { tx, view } }
    }

    fn elsewhere(owned: OwnedElsewhere) -> RoomHandle {
        RoomHandle { route: Route::Owner(Arc::new(owned)) }
    }

    pub fn view(&self) -> Arc<RoomView> {
        match &self.route {
            Route::Here { view, .. } => view.read().expect("poisoned").clone(),
            Route::Owner(o) => (o.read)(),
        }
    }

    /// The other process that owns the room, when it is not written here.
    pub fn owner(&self) -> Option<&crate::store::Owner> {
        match &self.route {
            Route::Here { .. } => None,
            Route::Owner(o) => Some(&o.owner),
        }
    }

    /// The writer's inbox, when it runs here.
    fn inbox(&self) -> Option<&mpsc::Sender<RoomCmd>> {
        match &self.route {
            Route::Here { tx, .. } => Some(tx),
            Route::Owner(_) => None,
        }
    }

    fn try_send(&self, cmd: RoomCmd) -> Result<(), RoomError> {
        match &self.route {
            Route::Here { tx, .. } => tx.try_send(cmd).map_err(|_| RoomError::Gone),
            Route::Owner(o) => Err(RoomError::Elsewhere(o.owner.clone())),
        }
    }

    fn same(&self, other: &RoomHandle) -> bool {
        match (&self.route, &other.route) {
            (Route::Here { tx: a, .. }, Route::Here { tx: b, .. }) => a.same_channel(b),
            _ => false,
        }
    }

    /// Hands the command to the writer; its reply comes through the
    /// command's channel. Relayed to the owner when that is another
    /// process: the answer comes back the same way, before this returns,
    /// so one caller's commands reach the owner in the order given.
    pub async fn send(&self, cmd: RoomCmd) -> Result<(), RoomError> {
        let owned = match &self.route {
            Route::Here { tx, .. } => return tx.send(cmd).await.map_err(|_| RoomError::Gone),
            Route::Owner(o) => o.clone(),
        };
        let Some((body, pending)) = relay::encode(cmd) else {
            return Err(RoomError::Elsewhere(owned.owner.clone()));
        };
        let answer = owned.network.relay(&owned.owner, &owned.room_id, body).await;
        let elsewhere = |v: &serde_json::Value| v["error"]["kind"] == "elsewhere";
        if matches!(&answer, Err(RoomError::Elsewhere(_))) || answer.as_ref().is_ok_and(elsewhere) {
            (owned.moved)();
        }
        pending.settle(owned.version, answer);
        Ok(())
    }

    /// Sends a command built around a reply channel and awaits the reply.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> RoomCmd) -> Result<T, RoomError> {
        self.ask_later(make).await?.answer().await
    }

    /// Sends a command built around a reply channel; the reply is awaited
    /// later, so one caller can hand several inputs over before waiting.
    pub async fn ask_later<T>(&self, make: impl FnOnce(Reply<T>) -> RoomCmd) -> Result<Asked<T>, RoomError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        Ok(Asked(rx))
    }
}

/// A room's reply still to come (see `RoomHandle::ask_later`).
pub struct Asked<T>(oneshot::Receiver<Result<T, RoomError>>);

impl<T> Asked<T> {
    pub async fn answer(self) -> Result<T, RoomError> {
        self.0.await.map_err(|_| RoomError::Gone)?
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
