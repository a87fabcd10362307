//! Views of resting rooms for readers, read from the store without
//! starting the room's writer: reading a room never makes this process
//! its writer, so a room another process owns can be read here, and a
//! resting room stays at rest when only read. A view is kept for as long
//! as the rest it was read in lasts (a writer started here ends it), and on
//! a store other processes write too, while the stored room record it was
//! read with is unchanged (every durable change of a room changes its
//! record); within a bound on views and state events held, the least
//! recently used going first. Concurrent first reads of one room each read
//! it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::RoomView;
use crate::core::ids::RoomId;
use crate::store::records::RoomRecord;
use crate::store::{Store, StoreError};

const MAX_VIEWS: usize = 4096;
const MAX_STATE_EVENTS: usize = 200_000;

struct Kept {
    /// The directory's tag of the rest the view was read in.
    rested: u64,
    /// On a shared store, the record the view was read with.
    record: Option<RoomRecord>,
    view: Arc<RoomView>,
    used: u64,
}

#[derive(Default)]
struct Views {
    views: HashMap<RoomId, Kept>,
    state_events: usize,
    uses: u64,
}

pub(super) struct RestingViews {
    views: Mutex<Views>,
    /// Other processes may write the store's rooms.
    shared: bool,
}

impl RestingViews {
    pub(super) fn new(store: &Arc<dyn Store>) -> Self {
        RestingViews { views: Mutex::default(), shared: store.shared_stream().is_some() }
    }

    /// The room as stored, read during the rest tagged `rested`; `None`
    /// when it is not stored.
    pub(super) fn read(
        &self,
        store: &Arc<dyn Store>,
        id: &RoomId,
        rested: u64,
    ) -> Result<Option<Arc<RoomView>>, StoreError> {
        let record = match self.shared {
            true => match store.room(id)? {
                Some(record) => Some(record),
                None => return Ok(None),
            },
            false => None,
        };
        {
            let mut kept = self.views.lock().expect("poisoned");
            kept.uses += 1;
            let now = kept.uses;
            if let Some(k) = kept.views.get_mut(id).filter(|k| k.rested == rested && k.record == record) {
                k.used = now;
                return Ok(Some(k.view.clone()));
            }
        }
        // Read outside the lock: a large room's state takes a while. Should
        // the room change meanwhile, the view is newer than `record` (or
        // `rested` is over) and is read again next time.
        let Some(view) = super::load::load_view(store, id)? else { return Ok(None) };
        let view = Arc::new(view);
        let mut kept = self.views.lock().expect("poisoned");
        let used = kept.uses;
        kept.state_events += view.state.len();
        if let Some(old) = kept.views.insert(id.clone(), Kept { rested, record, view: view.clone(), used }) {
            kept.state_events -= old.view.state.len();
        }
        kept.trim();
        Ok(Some(view))
    }

    /// Drops the room's view: its writer started, and publishes its own.
    pub(super) fn forget(&self, id: &RoomId) {
        let mut kept = self.views.lock().expect("poisoned");
        if let Some(old) = kept.views.remove(id) {
            kept.state_events -= old.view.state.len();
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.views.lock().expect("poisoned").views.len()
    }
}

impl Views {
    /// Drops the least recently used views until within bounds.
    fn trim(&mut self) {
        while self.views.len() > MAX_VIEWS || (self.state_events > MAX_STATE_EVENTS && self.views.len() > 1) {
            let Some(oldest) = self.views.iter().min_by_key(|(_, k)| k.used).map(|(id, _)| id.clone()) else { return };
            if let Some(old) = self.views.remove(&oldest) {
                self.state_events -= old.view.state.len();
            }
        }
    }
}
