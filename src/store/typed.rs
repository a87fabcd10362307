//! Ids out of stored records. Records keep ids as text (protobuf); these
//! read them back typed, in one place, and an id that does not parse is
//! damage (`StoreError::Corrupt`), never skipped as if it were absent.

use std::str::FromStr;

use super::records::{
    AccessToken, AliasRecord, ClientTxn, EventRecord, Membership, PendingLpdu, RoomRecord, StateEntry, StateSnapshot,
};
use super::{StoreError, StoreResult};
use crate::core::ids::{EventId, RoomId, ServerName, UserId};

fn required<T: FromStr>(what: &str, text: &str) -> StoreResult<T> {
    text.parse().map_err(|_| StoreError::Corrupt(format!("stored {what} {text:?}")))
}

/// Empty text is "none"; anything else must parse.
fn optional<T: FromStr>(what: &str, text: &str) -> StoreResult<Option<T>> {
    (!text.is_empty()).then(|| required(what, text)).transpose()
}

impl RoomRecord {
    pub fn room(&self) -> StoreResult<RoomId> {
        required("room id", &self.room_id)
    }

    pub fn hub(&self) -> StoreResult<ServerName> {
        required("hub server", &self.hub_server)
    }

    pub fn tail_event(&self) -> StoreResult<Option<EventId>> {
        optional("list tail", &self.tail)
    }

    pub fn extremity_events(&self) -> StoreResult<Vec<EventId>> {
        self.extremities.iter().map(|e| required("forward extremity", e)).collect()
    }

    pub fn mls_commit_event(&self) -> StoreResult<Option<EventId>> {
        optional("last MLS commit", &self.mls_commit)
    }
}

impl EventRecord {
    pub fn room(&self) -> StoreResult<RoomId> {
        required("event's room id", &self.room_id)
    }

    /// The redaction that took effect on this event, if one did.
    pub fn redacted_by_event(&self) -> StoreResult<Option<EventId>> {
        optional("redaction id", &self.redacted_by)
    }
}

impl ClientTxn {
    /// The event the client's send became, once the hub sequenced it.
    pub fn event(&self) -> StoreResult<Option<EventId>> {
        optional("client transaction's event id", &self.event_id)
    }
}

impl PendingLpdu {
    pub fn room(&self) -> StoreResult<RoomId> {
        required("pending LPDU's room id", &self.room_id)
    }

    /// The user whose client send it answers, if it answers one.
    pub fn txn_sender(&self) -> StoreResult<Option<UserId>> {
        optional("pending LPDU's sender", &self.txn_user)
    }
}

impl Membership {
    pub fn event(&self) -> StoreResult<Option<EventId>> {
        optional("membership event id", &self.event_id)
    }

    /// The server an invite or knock of ours came through.
    pub fn via(&self) -> StoreResult<Option<ServerName>> {
        optional("membership's server", &self.via_server)
    }
}

impl AccessToken {
    pub fn user(&self) -> StoreResult<UserId> {
        required("token's user id", &self.user_id)
    }
}

impl StateSnapshot {
    /// The snapshot this one changes, or none when it is whole.
    pub fn base_event(&self) -> StoreResult<Option<EventId>> {
        optional("state snapshot's base", &self.base)
    }

    pub fn replaced_event(&self) -> StoreResult<Option<EventId>> {
        optional("state snapshot's replaced event", &self.replaced)
    }
}

impl StateEntry {
    /// The event holding the key, or none when the key left the state.
    pub fn event(&self) -> StoreResult<Option<EventId>> {
        optional("state entry's event id", &self.event_id)
    }
}

impl AliasRecord {
    pub fn room(&self) -> StoreResult<RoomId> {
        required("alias's room id", &self.room_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_none_and_bad_text_is_damage() {
        let mut m = Membership::default();
        assert_eq!(m.event().unwrap(), None);
        m.event_id = "$e".into();
        assert_eq!(m.event().unwrap(), Some(EventId::parse("$e").unwrap()));
        m.via_server = "not a server name!".into();
        assert!(matches!(m.via(), Err(StoreError::Corrupt(_))));
        let room = RoomRecord { room_id: "!r:hub.test".into(), extremities: vec!["x".into()], ..Default::default() };
        assert_eq!(room.room().unwrap(), RoomId::parse("!r:hub.test").unwrap());
        assert!(room.hub().is_err(), "a room always has a hub");
        assert!(room.extremity_events().is_err());
    }
}
