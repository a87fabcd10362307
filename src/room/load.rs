//! Reading rooms back from the store (at start-up and after a failed write).

use std::sync::Arc;

use super::machine::snapshot;
use super::RoomView;
use crate::core::event::{Pdu, RoomVersion};
use crate::core::ids::{EventId, RoomId};
use crate::core::rooms::StateMap;
use crate::store::{Store, StoreError};

/// A stored event as a `Pdu`.
pub fn load_pdu(
    store: &Arc<dyn Store>,
    version: &'static RoomVersion,
    id: &EventId,
) -> Result<Option<Arc<Pdu>>, StoreError> {
    snapshot::load_pdu(store, version, id)
}

/// The room's current view from the store.
pub fn load_view(store: &Arc<dyn Store>, room: &RoomId) -> Result<Option<RoomView>, StoreError> {
    let Some(rec) = store.room(room)? else {
        return Ok(None);
    };
    let version =
        RoomVersion::find(&rec.room_version).ok_or_else(|| StoreError::Corrupt(format!("{room}: unknown version")))?;
    let hub = rec.hub()?;
    let mut state = StateMap::new();
    for id in store.state_ids(room)? {
        if let Some(pdu) = snapshot::load_pdu(store, version, &id)? {
            state.apply(pdu);
        }
    }
    let tail = rec.tail_event()?;
    let extremities = rec.extremity_events()?;
    Ok(Some(RoomView {
        room_id: room.clone(),
        version,
        hub,
        state: Arc::new(state),
        tail,
        length: rec.length,
        extremities,
        max_depth: rec.max_depth,
        mls_commit: rec.mls_commit_event()?,
    }))
}
