//! The snapshots of mixed rooms as the federation handlers read them: from
//! the store, through the server's shared cache (which holds only what was
//! read back, never what a room staged).

use crate::core::event::Pdu;
use crate::core::ids::EventId;
use crate::core::rooms::StateIds;
use crate::store::{Store, StoreError};
use std::sync::Arc;

pub use super::machine::snapshot::{Dag, DagCache};

/// The state before `event` (whose state after is recorded).
pub fn state_before(store: &Arc<dyn Store>, cache: &DagCache, event: &Pdu) -> Result<Option<StateIds>, StoreError> {
    Dag { store, cache }.state_before(event)
}

/// Whether the state after `id` is recorded.
pub fn has_state_after(store: &Arc<dyn Store>, cache: &DagCache, id: &EventId) -> Result<bool, StoreError> {
    Dag { store, cache }.has_state_after(id)
}
