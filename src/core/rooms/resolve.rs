//! State resolution v2 (room versions 2-11) and v2.1 (room version 12):
//! the state before an event whose prev events disagree, from the states
//! after each of them (Matrix spec `rooms/fragments/v2-state-res`, `rooms/v12`).
//!
//! Where the text leaves room, this follows what Synapse does so that lmx
//! and DAG servers converge: events that cannot be loaded are left out of
//! the conflicted set, and events rejected on receipt never enter state.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use super::auth::{authorize, PowerLevels};
use super::selection::auth_types_for;
use super::state::StateMap;
use crate::core::event::{Pdu, RoomVersion};
use crate::core::ids::EventId;

/// `(type, state_key)`.
pub type StateKey = (String, String);
/// A room state by event id.
pub type StateIds = BTreeMap<StateKey, EventId>;

/// Where resolution reads events from.
pub trait EventSource {
    fn event(&self, id: &EventId) -> Option<Arc<Pdu>>;
    /// Rejected on receipt: never used as an auth event, never admitted.
    fn rejected(&self, _id: &EventId) -> bool {
        false
    }
}

impl EventSource for HashMap<EventId, Arc<Pdu>> {
    fn event(&self, id: &EventId) -> Option<Arc<Pdu>> {
        self.get(id).cloned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("state resolution needs event {0}, which is not known")]
    Missing(EventId),
}

/// Resolves several room states into one.
pub fn resolve(
    version: &'static RoomVersion,
    states: &[StateIds],
    src: &impl EventSource,
) -> Result<StateIds, ResolveError> {
    match states {
        [] => return Ok(StateIds::new()),
        [one] => return Ok(one.clone()),
        _ => {}
    }
    let (unconflicted, conflicted) = split(states);
    if conflicted.is_empty() {
        return Ok(unconflicted);
    }
    let mut graph = Graph::new(src);
    let mut full: BTreeSet<EventId> = conflicted.iter().cloned().collect();
    full.extend(auth_difference(&mut graph, states));
    if version.state_res_v21 {
        full.extend(conflicted_subgraph(&mut graph, &conflicted));
    }
    // Unknown events cannot take part; one missing from a state is an error.
    for id in &conflicted {
        graph.load(id).ok_or_else(|| ResolveError::Missing(id.clone()))?;
    }
    full.retain(|id| graph.load(id).is_some());

    let power: BTreeSet<EventId> =
        full.iter().filter(|id| graph.load(id).is_some_and(|e| is_power_event(&e))).cloned().collect();
    let sorted_power = reverse_topological_power_sort(version, &mut graph, &power, &full);
    let start = if version.state_res_v21 { StateIds::new() } else { unconflicted.clone() };
    let partial = iterative_auth_checks(&mut graph, start, &sorted_power);

    let picked: HashSet<&EventId> = sorted_power.iter().collect();
    let rest: Vec<EventId> = full.iter().filter(|id| !picked.contains(id)).cloned().collect();
    let power_now = partial.get(&("m.room.power_levels".to_owned(), String::new())).cloned();
    let sorted_rest = mainline_sort(&mut graph, rest, power_now.as_ref());
    let mut resolved = iterative_auth_checks(&mut graph, partial, &sorted_rest);
    resolved.extend(unconflicted);
    Ok(resolved)
}

/// The unconflicted state map and the conflicted state set.
fn split(states: &[StateIds]) -> (StateIds, BTreeSet<EventId>) {
    let keys: BTreeSet<&StateKey> = states.iter().flat_map(BTreeMap::keys).collect();
    let mut unconflicted = StateIds::new();
    let mut conflicted = BTreeSet::new();
    for key in keys {
        let values: Vec<Option<&EventId>> = states.iter().map(|s| s.get(key)).collect();
        match values[0] {
            Some(first) if values.iter().all(|v| *v == Some(first)) => {
                unconflicted.insert(key.clone(), first.clone());
            }
            _ => conflicted.extend(values.into_iter().flatten().cloned()),
        }
    }
    (unconflicted, conflicted)
}

/// Power events: those that may take away someone's ability to act.
pub fn is_power_event(e: &Pdu) -> bool {
    match (e.event_type(), e.state_key()) {
        ("m.room.power_levels" | "m.room.join_rules", Some("")) => true,
        ("m.room.member", Some(target)) => {
            matches!(e.membership(), Some("leave" | "ban")) && e.sender().as_str() != target
        }
        _ => false,
    }
}

/// Events loaded on demand, with their auth chains remembered.
struct Graph<'a, S: EventSource> {
    src: &'a S,
    events: HashMap<EventId, Option<Arc<Pdu>>>,
    chains: HashMap<EventId, Arc<HashSet<EventId>>>,
}

impl<'a, S: EventSource> Graph<'a, S> {
    fn new(src: &'a S) -> Self {
        Graph { src, events: HashMap::new(), chains: HashMap::new() }
    }

    fn load(&mut self, id: &EventId) -> Option<Arc<Pdu>> {
        if let Some(e) = self.events.get(id) {
            return e.clone();
        }
        let e = self.src.event(id);
        self.events.insert(id.clone(), e.clone());
        e
    }

    /// Every event reachable through `auth_events`, not the event itself.
    fn auth_chain(&mut self, id: &EventId) -> Arc<HashSet<EventId>> {
        if let Some(c) = self.chains.get(id) {
            return c.clone();
        }
        // Iterative post-order walk: deep chains must not overflow the stack.
        let mut stack: Vec<(EventId, bool)> = vec![(id.clone(), false)];
        while let Some((at, expanded)) = stack.pop() {
            if self.chains.contains_key(&at) {
                continue;
            }
            let auth: Vec<EventId> = self.load(&at).map(|e| e.auth_events().to_vec()).unwrap_or_default();
            if expanded {
                let mut chain = HashSet::new();
                for a in &auth {
                    chain.insert(a.clone());
                    if let Some(c) = self.chains.get(a) {
                        chain.extend(c.iter().cloned());
                    }
                }
                self.chains.insert(at, Arc::new(chain));
            } else {
                stack.push((at, true));
                stack.extend(auth.into_iter().filter(|a| !self.chains.contains_key(a)).map(|a| (a, false)));
            }
        }
        self.chains[id].clone()
    }
}

/// Events in some but not all of the states' full auth chains.
fn auth_difference<S: EventSource>(graph: &mut Graph<'_, S>, states: &[StateIds]) -> BTreeSet<EventId> {
    let chains: Vec<HashSet<EventId>> = states
        .iter()
        .map(|s| {
            let mut all = HashSet::new();
            for id in s.values() {
                all.extend(graph.auth_chain(id).iter().cloned());
            }
            all
        })
        .collect();
    let union: HashSet<&EventId> = chains.iter().flatten().collect();
    union.into_iter().filter(|id| !chains.iter().all(|c| c.contains(*id))).cloned().collect()
}

/// v2.1: events on an auth path from one conflicted event to another.
fn conflicted_subgraph<S: EventSource>(graph: &mut Graph<'_, S>, conflicted: &BTreeSet<EventId>) -> BTreeSet<EventId> {
    let mut reachable: HashSet<EventId> = HashSet::new();
    for id in conflicted {
        reachable.extend(graph.auth_chain(id).iter().cloned());
    }
    // An event is on such a path when it is reachable from a conflicted
    // event and a conflicted event is in its own auth chain.
    reachable
        .into_iter()
        .filter(|id| conflicted.contains(id) || graph.auth_chain(id).iter().any(|a| conflicted.contains(a)))
        .collect()
}

/// The power level of an event's sender as its own auth events say.
fn sender_power<S: EventSource>(version: &'static RoomVersion, graph: &mut Graph<'_, S>, e: &Pdu) -> i64 {
    let mut state = StateMap::new();
    for a in e.auth_events() {
        if let Some(ev) = graph.load(a) {
            state.apply(ev);
        }
    }
    if let Some(create) = room_create(graph, e) {
        state.apply(create);
    }
    PowerLevels::from_state(&state, version).user_level(e.sender().as_str())
}

/// v12 names no create event in `auth_events`: the room id is its hash.
fn room_create<S: EventSource>(graph: &mut Graph<'_, S>, e: &Pdu) -> Option<Arc<Pdu>> {
    let id = e.room_id().create_event_id()?;
    graph.load(&id)
}

/// Kahn's algorithm over the auth graph of `power` (closed over `full`),
/// taking at each step the smallest ready event: higher sender power
/// first, then older `origin_server_ts`, then smaller event id.
fn reverse_topological_power_sort<S: EventSource>(
    version: &'static RoomVersion,
    graph: &mut Graph<'_, S>,
    power: &BTreeSet<EventId>,
    full: &BTreeSet<EventId>,
) -> Vec<EventId> {
    // Node -> its auth events inside the set.
    let mut edges: HashMap<EventId, HashSet<EventId>> = HashMap::new();
    let mut todo: Vec<EventId> = power.iter().cloned().collect();
    while let Some(id) = todo.pop() {
        if edges.contains_key(&id) {
            continue;
        }
        let auth: HashSet<EventId> = graph
            .load(&id)
            .map(|e| e.auth_events().iter().filter(|a| full.contains(*a)).cloned().collect())
            .unwrap_or_default();
        todo.extend(auth.iter().filter(|a| !edges.contains_key(*a)).cloned());
        edges.insert(id, auth);
    }
    let mut dependants: HashMap<EventId, Vec<EventId>> = HashMap::new();
    for (node, auth) in &edges {
        for a in auth {
            dependants.entry(a.clone()).or_default().push(node.clone());
        }
    }
    let key = |graph: &mut Graph<'_, S>, id: &EventId| {
        let e = graph.load(id).expect("only loaded events are in the set");
        (Reverse(sender_power(version, graph, &e)), e.origin_server_ts(), id.clone())
    };
    let mut waiting: HashMap<EventId, usize> = edges.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    let mut ready = BinaryHeap::new();
    for (id, n) in &waiting {
        if *n == 0 {
            ready.push(Reverse(key(graph, id)));
        }
    }
    let mut out = Vec::with_capacity(edges.len());
    while let Some(Reverse((_, _, id))) = ready.pop() {
        for d in dependants.get(&id).cloned().unwrap_or_default() {
            let n = waiting.get_mut(&d).expect("every node counted");
            *n -= 1;
            if *n == 0 {
                ready.push(Reverse(key(graph, &d)));
            }
        }
        out.push(id);
    }
    out
}

/// Orders events by where their power-levels ancestry meets the mainline of
/// `power` (older first), then `origin_server_ts`, then event id.
fn mainline_sort<S: EventSource>(
    graph: &mut Graph<'_, S>,
    events: Vec<EventId>,
    power: Option<&EventId>,
) -> Vec<EventId> {
    let power_auth = |graph: &mut Graph<'_, S>, e: &Pdu| -> Option<Arc<Pdu>> {
        for a in e.auth_events() {
            if let Some(ev) = graph.load(a) {
                if ev.event_type() == "m.room.power_levels" && ev.state_key() == Some("") {
                    return Some(ev);
                }
            }
        }
        None
    };
    // Depth 1 is the oldest power levels event of the mainline.
    let mut mainline: Vec<EventId> = Vec::new();
    let mut at = power.and_then(|p| graph.load(p));
    while let Some(p) = at {
        mainline.push(p.event_id().clone());
        at = power_auth(graph, &p);
    }
    let depth_of: HashMap<EventId, usize> =
        mainline.iter().rev().enumerate().map(|(i, id)| (id.clone(), i + 1)).collect();
    let mut keyed: Vec<(usize, i64, EventId)> = events
        .into_iter()
        .filter_map(|id| {
            let e = graph.load(&id)?;
            let mut depth = 0;
            let mut at = power_auth(graph, &e);
            while let Some(p) = at {
                if let Some(d) = depth_of.get(p.event_id()) {
                    depth = *d;
                    break;
                }
                at = power_auth(graph, &p);
            }
            Some((depth, e.origin_server_ts(), id))
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, _, id)| id).collect()
}

/// Applies each event that passes the rules against the state built so far,
/// with its own (non-rejected) auth events filling keys the state lacks.
fn iterative_auth_checks<S: EventSource>(
    graph: &mut Graph<'_, S>,
    mut state: StateIds,
    events: &[EventId],
) -> StateIds {
    for id in events {
        let Some(e) = graph.load(id) else { continue };
        if graph.src.rejected(id) {
            continue;
        }
        let Some(sk) = e.state_key() else { continue };
        let mut view = StateMap::new();
        if let Some(create) = room_create(graph, &e) {
            view.apply(create);
        }
        for a in e.auth_events() {
            if graph.src.rejected(a) {
                continue;
            }
            if let Some(ev) = graph.load(a) {
                view.apply(ev);
            }
        }
        for (t, k) in auth_types_for(&e, true) {
            let key = (t, k);
            if let Some(sid) = state.get(&key) {
                if graph.src.rejected(sid) {
                    continue;
                }
                if let Some(ev) = graph.load(sid) {
                    view.apply(ev);
                }
            }
        }
        if authorize(&e, &view).is_ok() {
            state.insert((e.event_type().to_owned(), sk.to_owned()), id.clone());
        }
    }
    state
}
