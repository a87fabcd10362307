//! What the client API uses of the rest of the server, built once when the
//! server starts: its name and key, the configuration, the store and stream
//! positions, the room directory, typing and presence, and other servers
//! through `federation::Remote` (never the federation layer's own parts).

use std::sync::Arc;

use crate::config::Config;
use crate::core::crypto::SigningKey;
use crate::core::ids::ServerName;
use crate::ephemeral::Ephemeral;
use crate::federation::Remote;
use crate::room::{RoomView, Rooms, Spawn};
use crate::store::{Positions, Store};
use crate::wire::Failure;

pub struct ClientDeps {
    pub name: ServerName,
    /// Signs the create event of a room made here.
    pub key: SigningKey,
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub positions: Arc<Positions>,
    pub rooms: Arc<Rooms>,
    pub ephemeral: Arc<Ephemeral>,
    pub e2ee: Arc<crate::e2ee::E2ee>,
    pub media: Arc<crate::media::Media>,
    pub remote: Remote,
    /// Pushers' delivery and unread counts.
    pub push: Arc<crate::push::Push>,
    /// Runs a task that stops with the server (a typing notice's expiry).
    pub spawn: Spawn,
}

impl ClientDeps {
    /// A room's published view, for a caller who must be in it.
    pub fn view_of_joined(&self, room: &crate::core::ids::RoomId) -> Result<Arc<RoomView>, Failure> {
        self.rooms.find_view(room)?.ok_or_else(|| Failure::forbidden("You are not in this room"))
    }

    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        (self.spawn)(Box::pin(task));
    }
}
