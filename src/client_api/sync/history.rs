//! What a sync timeline shows of history: under `joined` or `invited`
//! visibility, nothing before the user's join (MLS commits excepted).

use serde_json::Value;

use super::{Item, Syncer};
use crate::core::ids::{EventId, RoomId};
use crate::wire::Failure;

impl Syncer<'_> {
    /// A timeline without what the room's history visibility keeps from
    /// the user: under `joined` or `invited` visibility, the events before
    /// their join (a user joined before the window reads all of it) but
    /// MLS commits. The visibility is the room's current one.
    pub(super) fn readable(&self, room: &RoomId, items: Vec<Item>) -> Result<Vec<Item>, Failure> {
        use crate::core::rooms::StateView;
        let Some(view) = self.call.server.rooms.get_view(room) else { return Ok(items) };
        let visibility = view
            .state
            .get("m.room.history_visibility", "")
            .and_then(|e| e.content().get("history_visibility").and_then(Value::as_str).map(str::to_owned));
        if !matches!(visibility.as_deref(), Some("joined" | "invited")) {
            return Ok(items);
        }
        // Not found (more name changes than are followed, a join not in
        // this copy of the list): nothing before the latest member event.
        let joined_at = match self.joined_at(room, view.version)? {
            Some(at) => at,
            None => self.latest_member_index(room)?,
        };
        // A group's commits are every member's to read (item 117).
        let commit = |i: &Item| i.event.get("type").and_then(Value::as_str) == Some("m.mls.commit");
        Ok(items.into_iter().filter(|i| i.index >= joined_at || commit(i)).collect())
    }

    /// Where the user's latest member event sits (the end of the list if
    /// it cannot be read: then nothing of the timeline is shown).
    fn latest_member_index(&self, room: &RoomId) -> Result<u64, Failure> {
        let store = &self.call.server.store;
        let id = store.membership(self.user, room)?.and_then(|m| EventId::parse(&m.event_id).ok());
        let index = match id {
            Some(id) => store.event(&id)?.filter(|r| !r.outlier).map(|r| r.index),
            None => None,
        };
        Ok(index.unwrap_or(u64::MAX))
    }

    /// The list position of the user's join to the room: their latest
    /// member event, followed back through the member events it was
    /// authorised by while those were joins too (a name change is not a
    /// join).
    fn joined_at(
        &self,
        room: &RoomId,
        version: &'static crate::core::event::RoomVersion,
    ) -> Result<Option<u64>, Failure> {
        let store = &self.call.server.store;
        let Some(m) = store.membership(self.user, room)? else { return Ok(None) };
        let Ok(mut id) = EventId::parse(&m.event_id) else { return Ok(None) };
        for _ in 0..100 {
            let Some(pdu) = crate::room::load::load_pdu(store, version, &id)? else { return Ok(None) };
            if pdu.membership() != Some("join") {
                return Ok(None);
            }
            let mut before = None;
            for auth in pdu.auth_events() {
                let Some(a) = crate::room::load::load_pdu(store, version, auth)? else { continue };
                if a.event_type() == "m.room.member" && a.state_key() == Some(self.user.as_str()) {
                    before = Some(a);
                }
            }
            match before {
                Some(prev) if prev.membership() == Some("join") => id = prev.event_id().clone(),
                _ => return Ok(store.event(&id)?.filter(|r| !r.outlier).map(|r| r.index)),
            }
        }
        Ok(None)
    }
}
