//! Reading rooms back from the store (at start-up and after a failed write).

use std::sync::Arc;

use super::RoomView;
use crate::core::event::{Pdu, RoomVersion};
use crate::core::ids::{EventId, RoomId, ServerName};
use crate::core::json::{self, NumberPolicy, Object};
use crate::core::rooms::StateMap;
use crate::node::Node;
use crate::store::StoreError;

/// A stored event as a `Pdu`. The stored JSON was checked when it arrived,
/// so its id is taken as stored.
pub fn load_pdu(node: &Node, version: &'static RoomVersion, id: &EventId) -> Result<Option<Arc<Pdu>>, StoreError> {
    let Some(rec) = node.store.event(id)? else {
        return Ok(None);
    };
    let obj: Object =
        json::parse_object(&rec.json, NumberPolicy::Ieee754).map_err(|e| StoreError::Corrupt(format!("{id}: {e}")))?;
    let pdu = Pdu::from_trusted(version, obj, id.clone()).map_err(|e| StoreError::Corrupt(format!("{id}: {e}")))?;
    Ok(Some(Arc::new(pdu)))
}

/// The room's current view from the store.
pub fn load_view(node: &Node, room: &RoomId) -> Result<Option<RoomView>, StoreError> {
    let Some(rec) = node.store.room(room)? else {
        return Ok(None);
    };
    let version =
        RoomVersion::find(&rec.room_version).ok_or_else(|| StoreError::Corrupt(format!("{room}: unknown version")))?;
    let hub = ServerName::parse(&rec.hub_server).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut state = StateMap::new();
    for id in node.store.state_ids(room)? {
        if let Some(pdu) = load_pdu(node, version, &id)? {
            state.apply(pdu);
        }
    }
    let tail = if rec.tail.is_empty() { None } else { EventId::parse(&rec.tail).ok() };
    let extremities = rec.extremities.iter().filter_map(|e| EventId::parse(e).ok()).collect();
    Ok(Some(RoomView {
        room_id: room.clone(),
        version,
        hub,
        state: Arc::new(state),
        tail,
        length: rec.length,
        extremities,
        max_depth: rec.max_depth,
    }))
}
