//! Mixed rooms keep the state after every event, because state in a DAG is
//! not a fold of the list. Each snapshot is stored as a change to another
//! event's (usually a prev event's), with a whole one every few links, and
//! both snapshots and events are cached. A room's machine has a cache of its
//! own, holding what it staged before it is written; the federation
//! handlers share one that only ever holds what they read from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::core::event::{Pdu, RoomVersion};
use crate::core::ids::EventId;
use crate::core::rooms::{EventSource, StateIds, StateKey, StateMap};
use crate::store::records::{EventRecord, StateEntry, StateSnapshot};
use crate::store::{Batch, Op, Store, StoreError};

/// Links a snapshot may lead through before one is stored whole.
const MAX_CHAIN: u32 = 24;
/// Entries cached before the caches start over.
const CACHE_EVENTS: usize = 8192;
const CACHE_STATES: usize = 512;

/// A state with how many links its stored form leads through.
#[derive(Clone)]
pub struct Snapshot {
    pub state: Arc<StateIds>,
    chain: u32,
    /// What the event's own state key held before it (`StateSnapshot.replaced`).
    replaced: Option<EventId>,
}

pub struct DagCache {
    events: Mutex<HashMap<EventId, Option<Arc<Pdu>>>>,
    rejected: Mutex<HashMap<EventId, bool>>,
    states: Mutex<HashMap<EventId, Snapshot>>,
    max_events: usize,
    max_states: usize,
}

impl Default for DagCache {
    fn default() -> Self {
        Self::bounded(CACHE_EVENTS, CACHE_STATES)
    }
}

impl DagCache {
    /// A cache that starts over past these sizes (one room's machine keeps
    /// a smaller one than the server's handlers share).
    pub fn bounded(max_events: usize, max_states: usize) -> Self {
        DagCache {
            events: Mutex::default(),
            rejected: Mutex::default(),
            states: Mutex::default(),
            max_events,
            max_states,
        }
    }

    /// Forgets an event whose stored form changed (a redaction).
    pub fn forget_event(&self, id: &EventId) {
        self.events.lock().expect("poisoned").remove(id);
    }

    /// Forgets everything (after a failed write).
    pub fn clear(&self) {
        self.events.lock().expect("poisoned").clear();
        self.rejected.lock().expect("poisoned").clear();
        self.states.lock().expect("poisoned").clear();
    }

    /// Room tasks remember what they stage here before it is written, so
    /// entries are only dropped by `trim`, between batches.
    pub fn remember_event(&self, pdu: Arc<Pdu>) {
        self.events.lock().expect("poisoned").insert(pdu.event_id().clone(), Some(pdu));
    }

    /// Bounds the caches; called after a batch is written.
    pub fn trim(&self) {
        let mut events = self.events.lock().expect("poisoned");
        if events.len() > self.max_events {
            events.clear();
        }
        let mut states = self.states.lock().expect("poisoned");
        if states.len() > self.max_states {
            states.clear();
        }
        let mut rejected = self.rejected.lock().expect("poisoned");
        if rejected.len() > self.max_events {
            rejected.clear();
        }
    }

    pub fn remember_rejected(&self, id: &EventId) {
        self.rejected.lock().expect("poisoned").insert(id.clone(), true);
    }

    fn remember_state(&self, id: &EventId, s: Snapshot) {
        self.states.lock().expect("poisoned").insert(id.clone(), s);
    }
}

/// What the snapshots and events are read from: the store's two reads.
pub trait DagStore {
    fn stored_event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError>;
    fn stored_state_after(&self, id: &EventId) -> Result<Option<StateSnapshot>, StoreError>;
}

impl DagStore for Arc<dyn Store> {
    fn stored_event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        self.event(id)
    }

    fn stored_state_after(&self, id: &EventId) -> Result<Option<StateSnapshot>, StoreError> {
        self.state_after(id)
    }
}

/// A stored event as a `Pdu`. The stored JSON was checked when it arrived,
/// so its id is taken as stored.
pub fn pdu_from_record(version: &'static RoomVersion, id: &EventId, rec: &EventRecord) -> Result<Arc<Pdu>, StoreError> {
    let obj = crate::core::json::parse_object(&rec.json, crate::core::json::NumberPolicy::Ieee754)
        .map_err(|e| StoreError::Corrupt(format!("{id}: {e}")))?;
    let pdu = Pdu::from_trusted(version, obj, id.clone()).map_err(|e| StoreError::Corrupt(format!("{id}: {e}")))?;
    Ok(Arc::new(pdu))
}

/// A stored event by id, as a `Pdu`.
pub fn load_pdu(
    store: &dyn DagStore,
    version: &'static RoomVersion,
    id: &EventId,
) -> Result<Option<Arc<Pdu>>, StoreError> {
    match store.stored_event(id)? {
        Some(rec) => pdu_from_record(version, id, &rec).map(Some),
        None => Ok(None),
    }
}

/// Snapshots and events read through a cache.
#[derive(Clone, Copy)]
pub struct Dag<'a> {
    pub store: &'a dyn DagStore,
    pub cache: &'a DagCache,
}

/// Events of one room, for state resolution and the checks on receipt.
pub struct Events<'a> {
    pub dag: Dag<'a>,
    pub version: &'static RoomVersion,
}

impl EventSource for Events<'_> {
    fn event(&self, id: &EventId) -> Option<Arc<Pdu>> {
        let cache = self.dag.cache;
        if let Some(hit) = cache.events.lock().expect("poisoned").get(id) {
            return hit.clone();
        }
        let loaded = load_pdu(self.dag.store, self.version, id).ok().flatten();
        if let Some(p) = &loaded {
            cache.remember_event(p.clone());
        }
        loaded
    }

    fn rejected(&self, id: &EventId) -> bool {
        if let Some(r) = self.dag.cache.rejected.lock().expect("poisoned").get(id) {
            return *r;
        }
        let r = self.dag.store.stored_event(id).ok().flatten().is_some_and(|r| !r.rejected.is_empty());
        self.dag.cache.rejected.lock().expect("poisoned").insert(id.clone(), r);
        r
    }
}

impl Events<'_> {
    /// A state by id as events; ids that cannot be loaded are skipped.
    pub fn state_map(&self, ids: &StateIds) -> StateMap {
        StateMap::from_events(ids.values().filter_map(|id| self.event(id)))
    }
}

fn key_of(e: &StateEntry) -> StateKey {
    (e.event_type.clone(), e.state_key.clone())
}

impl<'a> Dag<'a> {
    pub fn events(self, version: &'static RoomVersion) -> Events<'a> {
        Events { dag: self, version }
    }

    /// The state after `id`, if it was recorded.
    pub fn state_after(self, id: &EventId) -> Result<Option<Snapshot>, StoreError> {
        if let Some(s) = self.cache.states.lock().expect("poisoned").get(id) {
            return Ok(Some(s.clone()));
        }
        let Some(first) = self.store.stored_state_after(id)? else {
            return Ok(None);
        };
        // Walk to a whole snapshot (or a cached one), then replay the changes.
        let mut changes = vec![first];
        let mut state = loop {
            let Some(base) = changes.last().expect("not empty").base_event()? else {
                break StateIds::new();
            };
            if let Some(s) = self.cache.states.lock().expect("poisoned").get(&base) {
                break (*s.state).clone();
            }
            let next = self
                .store
                .stored_state_after(&base)?
                .ok_or_else(|| StoreError::Corrupt(format!("no snapshot {base}")))?;
            changes.push(next);
        };
        for snap in changes.iter().rev() {
            for e in &snap.entries {
                match e.event()? {
                    Some(ev) => state.insert(key_of(e), ev),
                    None => state.remove(&key_of(e)),
                };
            }
        }
        let replaced = changes[0].replaced_event()?;
        let s = Snapshot { state: Arc::new(state), chain: changes[0].chain, replaced };
        self.cache.remember_state(id, s.clone());
        Ok(Some(s))
    }

    /// Whether the state after `id` is recorded, without rebuilding it.
    pub fn has_state_after(self, id: &EventId) -> Result<bool, StoreError> {
        if self.cache.states.lock().expect("poisoned").contains_key(id) {
            return Ok(true);
        }
        Ok(self.store.stored_state_after(id)?.is_some())
    }

    /// The state before `event` (whose state after is recorded).
    pub fn state_before(self, event: &Pdu) -> Result<Option<StateIds>, StoreError> {
        let Some(after) = self.state_after(event.event_id())? else {
            return Ok(None);
        };
        let mut state = (*after.state).clone();
        if let Some(sk) = event.state_key() {
            let key = (event.event_type().to_owned(), sk.to_owned());
            match after.replaced {
                Some(prev) => state.insert(key, prev),
                None => state.remove(&key),
            };
        }
        Ok(Some(state))
    }

    /// Records the state after `event`, as a change to the state after `base`
    /// when that is short.
    pub fn put_state_after(
        self,
        batch: &mut Batch,
        event: &Pdu,
        before: &StateIds,
        after: StateIds,
        base: Option<&EventId>,
    ) -> Result<(), StoreError> {
        let replaced = event
            .state_key()
            .and_then(|sk| before.get(&(event.event_type().to_owned(), sk.to_owned())))
            .map(|id| id.to_string())
            .unwrap_or_default();
        let entry = |(t, k): &StateKey, id: Option<&EventId>| StateEntry {
            event_type: t.clone(),
            state_key: k.clone(),
            event_id: id.map(|i| i.to_string()).unwrap_or_default(),
        };
        let base_snapshot = match base {
            Some(b) => self.state_after(b)?.map(|s| (b, s)),
            None => None,
        };
        let record = match base_snapshot {
            Some((b, s)) if s.chain < MAX_CHAIN => {
                let mut entries: Vec<StateEntry> =
                    after.iter().filter(|(k, v)| s.state.get(*k) != Some(*v)).map(|(k, v)| entry(k, Some(v))).collect();
                entries.extend(s.state.keys().filter(|k| !after.contains_key(*k)).map(|k| entry(k, None)));
                if entries.len() <= after.len() / 2 + 1 {
                    Some(StateSnapshot { base: b.to_string(), entries, chain: s.chain + 1, replaced: replaced.clone() })
                } else {
                    None
                }
            }
            _ => None,
        };
        let record = record.unwrap_or_else(|| StateSnapshot {
            base: String::new(),
            entries: after.iter().map(|(k, v)| entry(k, Some(v))).collect(),
            chain: 0,
            replaced,
        });
        let cached = Snapshot { state: Arc::new(after), chain: record.chain, replaced: record.replaced_event()? };
        batch.push(Op::PutStateAfter { event: event.event_id().clone(), snapshot: record });
        self.cache.remember_state(event.event_id(), cached);
        Ok(())
    }
}
