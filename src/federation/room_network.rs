//! The network as rooms see it (`room::RoomNetwork`): invites to other
//! servers, the hub's backfill, delivery wake-ups, what is known of a
//! server's protocol. Holds the server weakly: rooms live inside it.

use std::sync::{Arc, Weak};

use crate::core::event::Pdu;
use crate::core::ids::{EventId, RoomId, ServerName};
use crate::federation::Node;
use crate::room::{BoxFuture, RoomError, RoomNetwork, RoomView};
use crate::store::Owner;
use serde_json::Value;

pub struct NodeNetwork {
    node: Weak<Node>,
    relays: Arc<super::relay::Relays>,
}

fn stopped() -> RoomError {
    RoomError::Remote("the server is stopping".into())
}

impl NodeNetwork {
    pub fn new(node: Weak<Node>) -> NodeNetwork {
        NodeNetwork { node, relays: Default::default() }
    }

    fn node(&self) -> Option<Arc<Node>> {
        self.node.upgrade()
    }
}

impl RoomNetwork for NodeNetwork {
    fn countersign_invite(&self, view: RoomView, pdu: Pdu) -> BoxFuture<Result<Pdu, RoomError>> {
        let node = self.node();
        Box::pin(async move {
            let node = node.ok_or_else(stopped)?;
            super::invite::send_invite(&node, &view, pdu).await
        })
    }

    fn backfill(&self, view: RoomView, from: EventId, limit: usize) -> BoxFuture<Result<Vec<Pdu>, RoomError>> {
        let node = self.node();
        Box::pin(async move {
            let node = node.ok_or_else(stopped)?;
            super::fetch::backfill(&node, &view, &from, limit).await.map_err(RoomError::Remote)
        })
    }

    fn wake(&self, dest: &ServerName) {
        if let Some(node) = self.node() {
            node.outbound.wake(&node, dest);
        }
    }

    fn linearized(&self, server: &ServerName) -> Option<bool> {
        self.node()?.keyring.cached_linearized(server)
    }

    fn relay(&self, owner: &Owner, room: &RoomId, command: Value) -> BoxFuture<Result<Value, RoomError>> {
        let (node, relays, owner, room) = (self.node(), self.relays.clone(), owner.clone(), room.clone());
        Box::pin(async move {
            let node = node.ok_or_else(stopped)?;
            super::relay::send(&node, &relays, &owner, &room, command).await
        })
    }
}
