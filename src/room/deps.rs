//! What a room's writer needs from the rest of the server, handed to the
//! room directory when the server is built: the store, stream positions,
//! a way to run tasks that stop with the server, and the network, which a
//! room reaches only through `RoomNetwork`, a trait defined here and
//! implemented by the federation layer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::machine::snapshot::DagCache;
use super::machine::Env;
use super::{RoomError, RoomView};
use crate::core::event::Pdu;
use crate::core::ids::{EventId, RoomId, ServerName};
use crate::store::{Owner, Positions, Store};
use serde_json::Value;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The network as rooms use it.
pub trait RoomNetwork: Send + Sync {
    /// The invitee's server's countersignature of an invite (E10).
    fn countersign_invite(&self, view: RoomView, pdu: Pdu) -> BoxFuture<Result<Pdu, RoomError>>;
    /// One page of the hub's backfill from `from` (oldest first).
    fn backfill(&self, view: RoomView, from: EventId, limit: usize) -> BoxFuture<Result<Vec<Pdu>, RoomError>>;
    /// New items wait in `dest`'s delivery queue.
    fn wake(&self, dest: &ServerName);
    /// Whether `server` speaks LM, when known (from its keys).
    fn linearized(&self, server: &ServerName) -> Option<bool>;
    /// Passes a room command (`relay::encode`) to the process of this
    /// server that owns the room, and brings its answer back.
    fn relay(&self, owner: &Owner, room: &RoomId, command: Value) -> BoxFuture<Result<Value, RoomError>>;
}

/// Runs a task that stops with the server.
pub type Spawn = Arc<dyn Fn(BoxFuture<()>) + Send + Sync>;

#[derive(Clone)]
pub struct RoomDeps {
    pub env: Env,
    pub store: Arc<dyn Store>,
    pub positions: Arc<Positions>,
    /// The federation handlers' cache of mixed rooms' events and states:
    /// what a batch changed is forgotten there once it is durable.
    pub shared_cache: Arc<DagCache>,
    pub network: Arc<dyn RoomNetwork>,
    pub spawn: Spawn,
    /// A room idle this long rests (its writer stops until the next use);
    /// `None`: rooms stay loaded.
    pub rest_after: Option<std::time::Duration>,
}
