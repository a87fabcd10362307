//! Where LM rooms and mixed rooms differ, as two implementations of one
//! interface: how a local user's event is built and taken, what a
//! participant sends the hub, whether a countersigned invite still fits,
//! and which old events a follower may trim.

use super::build::{self, Draft};
use super::{Effects, Machine, RoomError, Verdict};
use crate::core::event::{Pdu, RoomVersion};
use crate::core::ids::EventId;
use crate::store::records::EventRecord;

pub(super) trait Rules: Sync {
    /// The hub's event for a local user, checked against the room.
    fn build_local(&self, m: &Machine, draft: &Draft) -> Result<Pdu, RoomError>;
    /// Appends a local user's built event; its id.
    fn take_local(&self, m: &mut Machine, out: &mut Effects, pdu: Pdu) -> Result<EventId, RoomError>;
    /// What a participant sends the hub for a local user: the key its echo
    /// will be known by, and the JSON.
    fn to_hub(&self, m: &Machine, draft: &Draft) -> Result<ToHub, RoomError>;
    /// The key a participant's own event is awaited by.
    fn echo_key<'a>(&self, pdu: &'a Pdu) -> Option<&'a str>;
    /// Whether a countersigned invite still fits where the list is now.
    fn still_fits(&self, m: &Machine, signed: &Pdu) -> bool;
    /// Whether the machine's cache keeps the room's events (read back for
    /// state resolution).
    fn caches_events(&self) -> bool;
    /// Sets what the room's first event (a seed's join) starts.
    fn seeded(&self, m: &mut Machine, out: &mut Effects, join: &Pdu, depth: i64) -> Result<(), RoomError>;
    /// Whether a follower keeps an old event whole.
    fn keeps(&self, m: &Machine, id: &EventId, rec: &EventRecord) -> bool;
}

/// A participant's event on its way to the hub.
pub(super) struct ToHub {
    /// What its pending record and the client's wait are keyed by (an
    /// LPDU's hash; a mixed room's event id).
    pub key: String,
    /// What the hub's answer names it by.
    pub sent_id: String,
    pub json: Vec<u8>,
    /// `json` is canonical in both JSON forms (`store::stored_json`).
    pub canonical: bool,
}

pub(super) fn rules_for(version: &'static RoomVersion) -> &'static dyn Rules {
    if version.is_mixed() {
        &Mixed
    } else {
        &Lm
    }
}

/// LM rooms: a list, LPDUs, the hub builds every event on the tail.
struct Lm;

impl Rules for Lm {
    fn build_local(&self, m: &Machine, draft: &Draft) -> Result<Pdu, RoomError> {
        build::hub_event_from_draft(&m.cur, &m.env.key, draft, m.now)
    }

    fn take_local(&self, m: &mut Machine, out: &mut Effects, pdu: Pdu) -> Result<EventId, RoomError> {
        m.stage(out, pdu).map(|p| p.event_id().clone())
    }

    fn to_hub(&self, m: &Machine, draft: &Draft) -> Result<ToHub, RoomError> {
        let lpdu = build::lpdu_from_draft(&m.cur, &m.env.key, draft, m.now)?;
        let (json, canonical) = crate::store::stored_json(lpdu.json());
        Ok(ToHub { key: lpdu.lpdu_hash().to_owned(), sent_id: lpdu.lpdu_id().to_string(), json, canonical })
    }

    fn echo_key<'a>(&self, pdu: &'a Pdu) -> Option<&'a str> {
        pdu.lpdu_hash()
    }

    fn still_fits(&self, m: &Machine, signed: &Pdu) -> bool {
        signed.prev_events() == m.cur.tail.as_slice()
    }

    fn caches_events(&self) -> bool {
        false
    }

    fn seeded(&self, _: &mut Machine, _: &mut Effects, _: &Pdu, _: i64) -> Result<(), RoomError> {
        Ok(())
    }

    fn keeps(&self, _: &Machine, _: &EventId, rec: &EventRecord) -> bool {
        rec.pruned
    }
}

/// Mixed rooms (versions 10-12): a DAG kept in list order; every event is
/// a full, signed PDU on the forward extremities.
struct Mixed;

impl Rules for Mixed {
    fn build_local(&self, m: &Machine, draft: &Draft) -> Result<Pdu, RoomError> {
        m.dag_build(draft)
    }

    fn take_local(&self, m: &mut Machine, out: &mut Effects, pdu: Pdu) -> Result<EventId, RoomError> {
        let id = pdu.event_id().clone();
        match m.dag_accept(out, pdu)? {
            Verdict::Accepted | Verdict::Known => Ok(id),
            other => Err(RoomError::Forbidden(format!("{other:?}"))),
        }
    }

    fn to_hub(&self, m: &Machine, draft: &Draft) -> Result<ToHub, RoomError> {
        let pdu = m.dag_build(draft)?;
        let id = pdu.event_id().to_string();
        let (json, canonical) = crate::store::stored_json(pdu.json());
        Ok(ToHub { key: id.clone(), sent_id: id, json, canonical })
    }

    fn echo_key<'a>(&self, pdu: &'a Pdu) -> Option<&'a str> {
        Some(pdu.event_id().as_str())
    }

    fn still_fits(&self, _: &Machine, _: &Pdu) -> bool {
        // Any place in a DAG is a place: its prev events stay valid.
        true
    }

    fn caches_events(&self) -> bool {
        true
    }

    fn seeded(&self, m: &mut Machine, out: &mut Effects, join: &Pdu, depth: i64) -> Result<(), RoomError> {
        m.cur.extremities = vec![join.event_id().clone()];
        m.cur.max_depth = depth;
        let before = m.cur.state.ids();
        let mut after = before.clone();
        if let Some(sk) = join.state_key() {
            after.insert((join.event_type().to_owned(), sk.to_owned()), join.event_id().clone());
        }
        m.dag().put_state_after(&mut out.batch, join, &before, after, None)?;
        Ok(())
    }

    fn keeps(&self, m: &Machine, id: &EventId, rec: &EventRecord) -> bool {
        // State resolution reads old state events through auth chains.
        let is_state = || {
            crate::core::json::parse_object(&rec.json, crate::core::json::NumberPolicy::Ieee754)
                .is_ok_and(|o| o.contains_key("state_key"))
        };
        rec.pruned || m.cur.extremities.contains(id) || is_state()
    }
}
