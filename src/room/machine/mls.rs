//! MLS rooms (digest 9.1, 9.4): an LM room whose `m.room.create` names
//! the MLS suite keeps it for life, and every `m.mls.commit` is checked
//! against the group of the commit before it (items 64, 105, 106, 111-113,
//! 116). The hub refuses a commit that fails; a participant repeats the
//! check on what the hub sends and soft-fails what fails (item 65), as
//! the hub does with a DAG-capable server's own events.

use super::snapshot::load_pdu;
use super::{Effects, Machine, RoomError};
use crate::core::event::Pdu;
use crate::core::ids::EventId;
use crate::core::mls::{self, GroupTrack, ROOM_ALGORITHM};
use crate::core::rooms::StateView;

/// The encryption algorithm a room was created with, if any.
pub fn creation_algorithm(state: &impl StateView) -> Option<String> {
    let create = state.get("m.room.create", "")?;
    let algorithm = create.content().get("encryption")?.get("algorithm")?.as_str()?;
    Some(algorithm.to_owned())
}

/// A commit's group, checked but not yet appended.
pub(super) struct Checked {
    event: EventId,
    group: GroupTrack,
}

impl Machine {
    /// What the MLS rules say of `pdu` before it is appended. Rooms
    /// without MLS are left to the Matrix rules (and `encryption_stays`).
    pub(super) fn mls_check(&mut self, out: &Effects, pdu: &Pdu) -> Result<(), RoomError> {
        if self.cur.version.is_mixed() {
            return Ok(());
        }
        let algorithm = creation_algorithm(&self.cur.state);
        let forbid = |why: String| Err(RoomError::Forbidden(why));
        match pdu.event_type() {
            "m.room.encryption" if algorithm.is_some() && pdu.state_key() == Some("") => {
                forbid("this room's encryption was chosen at its creation and cannot change".into())
            }
            "m.mls.commit" if algorithm.is_none() => forbid("this room does not use MLS".into()),
            "m.mls.commit" if algorithm.as_deref() == Some(ROOM_ALGORITHM) => self.check_commit(out, pdu),
            "m.room.encrypted" if algorithm.as_deref() == Some(ROOM_ALGORITHM) => {
                let c = pdu.content();
                if c.get("algorithm").and_then(|a| a.as_str()) != Some(ROOM_ALGORITHM) {
                    return forbid(format!("this room's messages are encrypted with {ROOM_ALGORITHM}"));
                }
                for field in ["ciphertext", "commit_event_id"] {
                    if !c.get(field).is_some_and(|v| v.is_string()) {
                        return forbid(format!("an MLS message needs {field}"));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn check_commit(&mut self, out: &Effects, pdu: &Pdu) -> Result<(), RoomError> {
        let room = self.cur.room_id.to_string();
        let refused = |e: mls::MlsError| RoomError::Forbidden(e.0);
        if self.cur.mls_commit.is_none() && !self.is_hub() && !is_first_epoch(pdu) {
            // A participant that joined after the group's first commit has
            // no group to check this one against: it starts following the
            // group here, as the hub's order gives it.
            let state = pdu.content().get("public_group_state").and_then(|s| s.as_str()).unwrap_or("");
            let bytes = crate::core::crypto::b64_decode(state)
                .map_err(|_| RoomError::Forbidden("public_group_state is not base64".into()))?;
            let group = GroupTrack::from_group_state(&room, &bytes).map_err(refused)?;
            self.mls_checked = Some(Checked { event: pdu.event_id().clone(), group });
            return Ok(());
        }
        self.load_group(out)?;
        let prev = self.mls.as_ref().map(|c| &c.group);
        let facts = mls::check_commit(prev, &room, pdu.content()).map_err(refused)?;
        let world_readable = self
            .cur
            .state
            .get("m.room.history_visibility", "")
            .and_then(|e| e.content().get("history_visibility").and_then(|v| v.as_str()).map(|v| v == "world_readable"))
            .unwrap_or(false);
        let state = &self.cur.state;
        mls::commit_allowed(&facts, pdu.sender().as_str(), |u| state.membership(u).to_owned(), world_readable)
            .map_err(refused)?;
        self.mls_checked = Some(Checked { event: pdu.event_id().clone(), group: facts.after });
        Ok(())
    }

    /// Makes `self.mls` the group of the room's last commit (read back
    /// from that commit's event after a restart or a failed write).
    fn load_group(&mut self, out: &Effects) -> Result<(), RoomError> {
        let Some(last) = self.cur.mls_commit.clone() else {
            self.mls = None;
            return Ok(());
        };
        if self.mls.as_ref().is_some_and(|c| c.event == last) {
            return Ok(());
        }
        let pdu = match out.staged_pdus.get(&last) {
            Some(p) => p.clone(),
            None => load_pdu(&*self.reads, self.cur.version, &last)?
                .ok_or_else(|| RoomError::Storage(format!("the room's last commit {last} is missing")))?,
        };
        let state = pdu.content().get("public_group_state").and_then(|s| s.as_str()).unwrap_or("");
        let group = crate::core::crypto::b64_decode(state)
            .map_err(|_| mls::MlsError("not base64".into()))
            .and_then(|b| GroupTrack::from_group_state(self.cur.room_id.as_str(), &b))
            .map_err(|e| RoomError::Storage(format!("the group of the room's last commit {last}: {e}")))?;
        self.mls = Some(Checked { event: last, group });
        Ok(())
    }

    /// An appended (not soft-failed) commit's group becomes the room's.
    pub(super) fn mls_appended(&mut self, pdu: &Pdu) {
        if pdu.event_type() != "m.mls.commit" || self.cur.version.is_mixed() {
            return;
        }
        if creation_algorithm(&self.cur.state).as_deref() != Some(ROOM_ALGORITHM) {
            return;
        }
        self.cur.mls_commit = Some(pdu.event_id().clone());
        if let Some(checked) = self.mls_checked.take().filter(|c| &c.event == pdu.event_id()) {
            self.mls = Some(checked);
        }
    }
}

/// Whether a commit says it starts from epoch 0 (so it is the group's
/// first). Anything unreadable counts as not, and fails later.
fn is_first_epoch(pdu: &Pdu) -> bool {
    mls::commit_epoch(pdu.content()) == Some(0)
}
