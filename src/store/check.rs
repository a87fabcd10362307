//! `lmx db check`: reads a whole store and verifies what must hold in it.
//! Every list position from 0 to the room's length has an entry and the
//! entry's event; stored events hash to their ids, their content hashes
//! match (unless kept redacted) and their signatures verify where the key
//! is known; LM hub events continue the list; each room's current state is
//! what its list gives; every stream entry names an event that names it
//! back and is in its room's index. Reads only.

use std::collections::BTreeMap;

use super::records::EventRecord;
use super::{Store, StoreResult};
use crate::core::crypto::PublicKey;
use crate::core::event::{check_hashes, required_signers, verify_event_signature, HashCheck, Pdu, RoomVersion, Schema};
use crate::core::ids::{EventId, RoomId, ServerName};
use crate::core::json::{self, NumberPolicy};
use crate::core::rooms::StateIds;

/// What was read and what is wrong.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub rooms: u64,
    pub list_entries: u64,
    pub events_parsed: u64,
    pub hashes_checked: u64,
    pub signatures_verified: u64,
    /// Signatures by keys this store does not hold (never fetched).
    pub signatures_unverifiable: u64,
    pub state_entries: u64,
    pub stream_entries: u64,
    /// Rooms whose state could not be derived from their list (a follower
    /// pruned bodies, or a participant's copy starts at its join).
    pub state_partly_checked: u64,
    pub problems: Vec<String>,
}

impl Report {
    fn problem(&mut self, p: String) {
        // A badly damaged store has a problem per event; the first ones
        // tell the story.
        if self.problems.len() < 1_000 {
            self.problems.push(p);
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "rooms: {}\nlist entries: {}\nevents parsed: {}\ncontent hashes checked: {}\nsignatures verified: {}\n\
             signatures not verifiable (key not stored): {}\ncurrent state entries: {}\nstream entries: {}\n\
             rooms whose state was checked only against the list's own changes: {}\nproblems: {}",
            self.rooms,
            self.list_entries,
            self.events_parsed,
            self.hashes_checked,
            self.signatures_verified,
            self.signatures_unverifiable,
            self.state_entries,
            self.stream_entries,
            self.state_partly_checked,
            self.problems.len()
        )
    }
}

/// Looks a server's public key up by key id.
pub type KeyLookup<'a> = &'a dyn Fn(&ServerName, &str) -> Option<PublicKey>;

const PAGE: u64 = 1_000;

pub fn check(store: &dyn Store, keys: KeyLookup<'_>) -> StoreResult<Report> {
    let mut r = Report::default();
    for room in store.rooms()? {
        r.rooms += 1;
        check_room(store, keys, &room, &mut r)?;
    }
    check_stream(store, &mut r)?;
    Ok(r)
}

fn parse(version: &'static RoomVersion, rec: &EventRecord) -> Result<Pdu, String> {
    let obj = json::parse_object(&rec.json, NumberPolicy::Ieee754).map_err(|e| e.to_string())?;
    Pdu::from_object(version, obj, Schema::Loose).map_err(|e| e.to_string())
}

fn check_room(
    store: &dyn Store,
    keys: KeyLookup<'_>,
    room: &super::records::RoomRecord,
    r: &mut Report,
) -> StoreResult<()> {
    let name = room.room_id.clone();
    let Ok(id) = RoomId::parse(&name) else {
        r.problem(format!("room record {name:?} has an invalid room id"));
        return Ok(());
    };
    let Some(version) = RoomVersion::find(&room.room_version) else {
        r.problem(format!("room {name}: unknown room version {:?}", room.room_version));
        return Ok(());
    };
    let mut previous: Option<EventId> = None;
    let mut folded: StateIds = StateIds::new();
    let mut starts_with_create = false;
    let mut pruned = false;
    let mut from = 0;
    while from < room.length {
        let to = (from + PAGE).min(room.length);
        let ids = store.list(&id, from, to)?;
        if ids.len() as u64 != to - from {
            r.problem(format!("room {name}: the list has holes between positions {from} and {to}"));
        }
        for (offset, event) in ids.iter().enumerate() {
            let index = from + offset as u64;
            r.list_entries += 1;
            let Some(rec) = store.event(event)? else {
                r.problem(format!("room {name}: list position {index} names {event}, which is not stored"));
                previous = Some(event.clone());
                continue;
            };
            if rec.room_id != name || rec.index != index || rec.outlier {
                r.problem(format!(
                    "room {name}: {event} at list position {index} is recorded as room {}, position {}{}",
                    rec.room_id,
                    rec.index,
                    if rec.outlier { ", outlier" } else { "" }
                ));
            }
            if rec.stream != 0 {
                let back = store.stream_after(rec.stream - 1, 1)?;
                if back.first().is_none_or(|e| e.pos != rec.stream || &e.event != event) {
                    r.problem(format!(
                        "room {name}: {event} names stream position {}, which names another",
                        rec.stream
                    ));
                }
            }
            if rec.pruned {
                pruned = true;
                previous = Some(event.clone());
                continue;
            }
            let pdu = match parse(version, &rec) {
                Ok(p) => p,
                Err(e) => {
                    r.problem(format!("room {name}: {event} at position {index} does not parse: {e}"));
                    previous = Some(event.clone());
                    continue;
                }
            };
            r.events_parsed += 1;
            if pdu.event_id() != event {
                r.problem(format!("room {name}: the JSON stored for {event} hashes to {}", pdu.event_id()));
            }
            check_event(keys, version, &name, &rec, &pdu, r);
            if index == 0 {
                starts_with_create = pdu.event_type() == "m.room.create";
            } else if version.lm && pdu.hub_server().is_some() && pdu.prev_events() != previous.as_slice() {
                r.problem(format!("room {name}: {event} at position {index} does not follow the event before it"));
            } else if !version.lm {
                for prev in pdu.prev_events() {
                    if store.event(prev)?.is_none() {
                        r.problem(format!("room {name}: {event} names prev event {prev}, which is not stored"));
                    }
                }
            }
            if let (false, Some(sk)) = (rec.soft_failed || !rec.rejected.is_empty(), pdu.state_key()) {
                folded.insert((pdu.event_type().to_owned(), sk.to_owned()), event.clone());
            }
            previous = Some(event.clone());
        }
        from = to;
    }
    if !store.list(&id, room.length, room.length.saturating_add(PAGE))?.is_empty() {
        r.problem(format!("room {name}: the list has entries beyond its recorded length {}", room.length));
    }
    let tail = previous.map(|e| e.to_string()).unwrap_or_default();
    if tail != room.tail {
        r.problem(format!("room {name}: the recorded tail {:?} is not the last list entry {tail:?}", room.tail));
    }
    check_state(store, version, &id, room, folded, starts_with_create && !pruned, r)
}

fn check_event(keys: KeyLookup<'_>, version: &RoomVersion, room: &str, rec: &EventRecord, pdu: &Pdu, r: &mut Report) {
    let event = pdu.event_id();
    if !rec.hash_redacted && rec.redacted_by.is_empty() {
        r.hashes_checked += 1;
        match check_hashes(version, pdu.json()) {
            Ok(HashCheck::Match) => {}
            Ok(HashCheck::Mismatch(which)) => r.problem(format!("room {room}: {event}: {which} does not match")),
            Err(e) => r.problem(format!("room {room}: {event}: {e}")),
        }
    }
    let signers = match required_signers(version, pdu.json()) {
        Ok(s) => s,
        Err(e) => return r.problem(format!("room {room}: {event}: {e}")),
    };
    for signer in signers {
        let ids: Vec<String> = pdu
            .json()
            .get("signatures")
            .and_then(|s| s.get(signer.as_str()))
            .and_then(|s| s.as_object())
            .map(|o| o.keys().filter(|k| k.starts_with("ed25519:")).cloned().collect())
            .unwrap_or_default();
        if ids.is_empty() {
            r.problem(format!("room {room}: {event} has no signature from {signer}"));
        }
        for key_id in ids {
            match keys(&signer, &key_id) {
                None => r.signatures_unverifiable += 1,
                Some(pk) => match verify_event_signature(version, pdu.json(), signer.as_str(), &key_id, &pk) {
                    Ok(()) => r.signatures_verified += 1,
                    Err(e) => r.problem(format!("room {room}: {event}: {e}")),
                },
            }
        }
    }
}

/// The stored current state against the list: in LM rooms whose list
/// starts at the create event, exactly the fold of the list; otherwise
/// every key the list changed must hold its last change. Mixed rooms with
/// one forward extremity: the state recorded after it.
fn check_state(
    store: &dyn Store,
    version: &'static RoomVersion,
    id: &RoomId,
    room: &super::records::RoomRecord,
    folded: StateIds,
    whole: bool,
    r: &mut Report,
) -> StoreResult<()> {
    let name = id.as_str();
    let mut stored = StateIds::new();
    for event in store.state_ids(id)? {
        r.state_entries += 1;
        let Some(rec) = store.event(&event)? else {
            r.problem(format!("room {name}: the current state names {event}, which is not stored"));
            continue;
        };
        let Ok(pdu) = parse(version, &rec) else {
            // A pruned or damaged body: reported with the list if it is there.
            continue;
        };
        match pdu.state_key() {
            Some(sk) if rec.room_id == name => {
                stored.insert((pdu.event_type().to_owned(), sk.to_owned()), event);
            }
            _ => r.problem(format!("room {name}: the current state names {event}, not a state event of the room")),
        }
    }
    if version.lm {
        let differs = |(k, v): (&(String, String), &EventId)| stored.get(k) != Some(v);
        let bad: Vec<_> = folded.iter().filter(|e| differs(*e)).map(|(k, _)| k.clone()).collect();
        for (t, k) in bad {
            r.problem(format!("room {name}: current state ({t}, {k:?}) is not the list's last change to it"));
        }
        if whole {
            for (t, k) in stored.keys().filter(|key| !folded.contains_key(*key)) {
                r.problem(format!("room {name}: current state ({t}, {k:?}) was never set by the list"));
            }
        } else {
            r.state_partly_checked += 1;
        }
        return Ok(());
    }
    if let [only] = room.extremities.as_slice() {
        let Ok(extremity) = EventId::parse(only) else {
            r.problem(format!("room {name}: invalid forward extremity {only:?}"));
            return Ok(());
        };
        match snapshot(store, &extremity)? {
            Some(after) if after == stored => {}
            Some(_) => r.problem(format!("room {name}: current state differs from the state after {extremity}")),
            None => r.problem(format!("room {name}: no state is recorded after the extremity {extremity}")),
        }
    } else {
        r.state_partly_checked += 1;
    }
    Ok(())
}

/// Mixed rooms: the state after an event, replayed from its snapshot chain.
fn snapshot(store: &dyn Store, id: &EventId) -> StoreResult<Option<StateIds>> {
    let mut chain = Vec::new();
    let mut at = id.clone();
    loop {
        let Some(s) = store.state_after(&at)? else { return Ok(None) };
        let base = s.base.clone();
        chain.push(s);
        if base.is_empty() || chain.len() > 1_000 {
            break;
        }
        match EventId::parse(&base) {
            Ok(b) => at = b,
            Err(_) => return Ok(None),
        }
    }
    let mut state: BTreeMap<(String, String), EventId> = BTreeMap::new();
    for s in chain.iter().rev() {
        for e in &s.entries {
            let key = (e.event_type.clone(), e.state_key.clone());
            match EventId::parse(&e.event_id) {
                Ok(ev) => state.insert(key, ev),
                Err(_) => state.remove(&key),
            };
        }
    }
    Ok(Some(state.into_iter().collect()))
}

fn check_stream(store: &dyn Store, r: &mut Report) -> StoreResult<()> {
    let high = store.position_high_water()?;
    let mut after = 0;
    loop {
        let page = store.stream_after(after, PAGE as usize)?;
        let Some(last) = page.last().map(|e| e.pos) else { break };
        for e in page {
            r.stream_entries += 1;
            match store.event(&e.event)? {
                None => r.problem(format!("stream position {} names {}, which is not stored", e.pos, e.event)),
                Some(rec) if rec.stream != e.pos || rec.room_id != e.room.as_str() => r.problem(format!(
                    "stream position {} names {}, recorded at stream position {} of room {}",
                    e.pos, e.event, rec.stream, rec.room_id
                )),
                Some(_) => {}
            }
            if store.room_stream(&e.room, e.pos.saturating_sub(1), e.pos, 1)?.first().is_none_or(|i| i.event != e.event)
            {
                r.problem(format!("stream position {} of room {} is missing from the room's index", e.pos, e.room));
            }
            if e.pos > high {
                r.problem(format!("stream position {} is beyond the recorded high water {high}", e.pos));
            }
        }
        after = last;
    }
    Ok(())
}
