//! A replayable order for a set of events handed to another server (a
//! `send_join` answer's `state` and `auth_chain`): every event after the
//! events of the set it names in `auth_events`, otherwise in the room's
//! list order. A server that replays the array front to back with auth
//! checks (the LM reference implementation does) then meets `m.room.create`
//! first and every power level and join rule before the events they allow.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use crate::core::event::Pdu;
use crate::core::ids::EventId;

/// Where an event sits when its auth events allow: its list position when
/// the room's list holds it, else (an outlier) its depth after every
/// listed event; the event id breaks ties so the order is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    // Field order is the sort order: listed events first.
    unlisted: bool,
    rank: u64,
    id: EventId,
}

impl Place {
    pub fn listed(index: u64, id: &EventId) -> Place {
        Place { unlisted: false, rank: index, id: id.clone() }
    }

    pub fn unlisted(pdu: &Pdu) -> Place {
        let depth = pdu.depth().unwrap_or(0).max(0) as u64;
        Place { unlisted: true, rank: depth, id: pdu.event_id().clone() }
    }
}

/// `events` (duplicates dropped) with auth events first, then by place.
/// A cycle in `auth_events` (only a forged set has one) leaves the rest in
/// place order rather than losing events.
pub fn replay_order(events: Vec<Arc<Pdu>>, place: impl Fn(&Pdu) -> Place) -> Vec<Arc<Pdu>> {
    let mut by_id: HashMap<EventId, (Place, Arc<Pdu>)> = HashMap::new();
    for e in events {
        let p = place(&e);
        by_id.entry(e.event_id().clone()).or_insert((p, e));
    }
    // Edges inside the set only: an auth event we do not hand over is the
    // receiver's to fetch, not an ordering constraint.
    let mut waiting_on: HashMap<EventId, usize> = HashMap::new();
    let mut unblocks: HashMap<EventId, Vec<EventId>> = HashMap::new();
    for (id, (_, e)) in &by_id {
        let mut deps: Vec<&EventId> = e.auth_events().iter().filter(|a| by_id.contains_key(*a) && *a != id).collect();
        deps.sort();
        deps.dedup();
        waiting_on.insert(id.clone(), deps.len());
        for d in deps {
            unblocks.entry(d.clone()).or_default().push(id.clone());
        }
    }
    let mut ready: BinaryHeap<Reverse<Place>> = BinaryHeap::new();
    let push = |ready: &mut BinaryHeap<_>, id: &EventId, by_id: &HashMap<EventId, (Place, Arc<Pdu>)>| {
        ready.push(Reverse(by_id[id].0.clone()));
    };
    for (id, n) in &waiting_on {
        if *n == 0 {
            push(&mut ready, id, &by_id);
        }
    }
    let mut out = Vec::with_capacity(by_id.len());
    while let Some(Reverse(Place { id, .. })) = ready.pop() {
        for next in unblocks.remove(&id).unwrap_or_default() {
            let n = waiting_on.get_mut(&next).expect("counted");
            *n -= 1;
            if *n == 0 {
                push(&mut ready, &next, &by_id);
            }
        }
        waiting_on.remove(&id);
        out.push(by_id[&id].1.clone());
    }
    if !waiting_on.is_empty() {
        let mut rest: Vec<(Place, Arc<Pdu>)> = waiting_on.keys().map(|id| by_id[id].clone()).collect();
        rest.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(rest.into_iter().map(|(_, e)| e));
    }
    out
}
