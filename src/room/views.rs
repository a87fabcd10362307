//! Views of resting rooms for readers, read from the store without
//! starting the room's writer: reading a room never makes this process
//! its writer, so a room another process owns can be read here, and a
//! resting room stays at rest when only read. A view is kept while the
//! stored room record it was read with is unchanged (every durable change
//! of a room changes its record), within a bound on views and state
//! events held; the least recently used go first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::RoomView;
use crate::core::ids::RoomId;
use crate::store::records::RoomRecord;
use crate::store::{Store, StoreError};

const MAX_VIEWS: usize = 4096;
const MAX_STATE_EVENTS: usize = 200_000;

struct Kept {
    record: RoomRecord,
    view: Arc<RoomView>,
    used: u64,
}

#[derive(Default)]
struct Views {
    views: HashMap<RoomId, Kept>,
    state_events: usize,
    uses: u64,
}

#[derive(Default)]
pub(super) struct RestingViews(Mutex<Views>);

impl RestingViews {
    /// The room as stored; `None` when it is not.
    pub(super) fn read(&self, store: &Arc<dyn Store>, id: &RoomId) -> Result<Option<Arc<RoomView>>, StoreError> {
        let Some(record) = store.room(id)? else { return Ok(None) };
        {
            let mut kept = self.0.lock().expect("poisoned");
            kept.uses += 1;
            let now = kept.uses;
            if let Some(k) = kept.views.get_mut(id).filter(|k| k.record == record) {
                k.used = now;
                return Ok(Some(k.view.clone()));
            }
        }
        // Read outside the lock: a large room's state takes a while. Should
        // the room change meanwhile, the view is newer than `record` and is
        // read again next time.
        let Some(view) = super::load::load_view(store, id)? else { return Ok(None) };
        let view = Arc::new(view);
        let mut kept = self.0.lock().expect("poisoned");
        let used = kept.uses;
        kept.state_events += view.state.len();
        if let Some(old) = kept.views.insert(id.clone(), Kept { record, view: view.clone(), used }) {
            kept.state_events -= old.view.state.len();
        }
        kept.trim();
        Ok(Some(view))
    }

    /// Drops the room's view: its writer started, and publishes its own.
    pub(super) fn forget(&self, id: &RoomId) {
        let mut kept = self.0.lock().expect("poisoned");
        if let Some(old) = kept.views.remove(id) {
            kept.state_events -= old.view.state.len();
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.lock().expect("poisoned").views.len()
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
