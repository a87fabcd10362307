//! Room state: the latest event per (`type`, `state_key`) in list order
//! (item 48).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::core::event::Pdu;
use crate::core::ids::UserId;

/// Read access to a room state, as the authorization rules need it.
pub trait StateView {
    fn get(&self, event_type: &str, state_key: &str) -> Option<&Pdu>;

    fn create(&self) -> Option<&Pdu> {
        self.get("m.room.create", "")
    }

    fn power_levels(&self) -> Option<&Pdu> {
        self.get("m.room.power_levels", "")
    }

    fn member(&self, user: &str) -> Option<&Pdu> {
        self.get("m.room.member", user)
    }

    /// Current membership of `user`; no member event means `leave`.
    fn membership(&self, user: &str) -> &str {
        self.member(user).and_then(Pdu::membership).unwrap_or("leave")
    }

    /// `join_rule` of the current join rules; absent means `invite` (OQ-9).
    fn join_rule(&self) -> &str {
        self.get("m.room.join_rules", "")
            .and_then(|e| e.content().get("join_rule"))
            .and_then(Value::as_str)
            .unwrap_or("invite")
    }
}

/// A shared state map is a state (rooms publish theirs behind an `Arc`).
impl<T: StateView + ?Sized> StateView for std::sync::Arc<T> {
    fn get(&self, event_type: &str, state_key: &str) -> Option<&Pdu> {
        (**self).get(event_type, state_key)
    }
}

/// An owned state map. Cheap to clone: events are shared.
#[derive(Debug, Clone, Default)]
pub struct StateMap {
    // type -> state_key -> event; nested so lookups borrow `&str` keys.
    events: HashMap<String, HashMap<String, Arc<Pdu>>>,
}

impl StateMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds events in order; later events replace earlier ones with the
    /// same (`type`, `state_key`). Non-state events are ignored.
    pub fn from_events<I: IntoIterator<Item = Arc<Pdu>>>(events: I) -> Self {
        let mut s = Self::new();
        for e in events {
            s.apply(e);
        }
        s
    }

    pub fn apply(&mut self, event: Arc<Pdu>) {
        if let Some(sk) = event.state_key() {
            let sk = sk.to_owned();
            self.events.entry(event.event_type().to_owned()).or_default().insert(sk, event);
        }
    }

    pub fn remove(&mut self, event_type: &str, state_key: &str) {
        if let Some(m) = self.events.get_mut(event_type) {
            m.remove(state_key);
            if m.is_empty() {
                self.events.remove(event_type);
            }
        }
    }

    /// The state by id, for state resolution.
    pub fn ids(&self) -> super::StateIds {
        self.events
            .iter()
            .flat_map(|(t, m)| m.iter().map(move |(k, e)| ((t.clone(), k.clone()), e.event_id().clone())))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.events.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pdu>> {
        self.events.values().flat_map(HashMap::values)
    }

    /// Users whose current membership is `join`.
    pub fn joined_members(&self) -> impl Iterator<Item = UserId> + '_ {
        self.events
            .get("m.room.member")
            .into_iter()
            .flat_map(HashMap::iter)
            .filter(|(_, e)| e.membership() == Some("join"))
            .filter_map(|(sk, _)| UserId::parse(sk).ok())
    }
}

impl StateView for StateMap {
    fn get(&self, event_type: &str, state_key: &str) -> Option<&Pdu> {
        self.events.get(event_type)?.get(state_key).map(Arc::as_ref)
    }
}
