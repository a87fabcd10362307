//! E6-E9: single events, room state and backfill (items 172-182). What a
//! server may read is decided in `visibility.rs`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};

use super::visibility::{Sight, Viewer};
use super::{known_view, require_hub};
use crate::core::event::Pdu;
use crate::core::ids::EventId;
use crate::core::rooms::{replay_order, Place, StateMap};
use crate::federation::inbound::Req;
use crate::federation::Node;
use crate::http::query_get;
use crate::room::load::load_pdu;
use crate::room::RoomView;
use crate::wire::Failure;

/// Largest backfill page served (item 181).
pub const MAX_BACKFILL: usize = 100;

fn pdu(node: &Node, view: &RoomView, id: &EventId) -> Result<Arc<Pdu>, Failure> {
    load_pdu(&node.store, view.version, id)?.ok_or_else(|| Failure::not_found("Unknown event"))
}

/// An event the requesting server may know of (known here, not rejected,
/// in a room it has a member event in), whole or redacted as it may see it
/// (items 173, 174).
pub(super) async fn readable_event(req: &Req, id: &str) -> Result<Value, Failure> {
    let unknown = || Failure::not_found("Unknown event");
    let id = EventId::parse(id).map_err(|_| unknown())?;
    let rec = req.node.store.event(&id)?.filter(|r| r.rejected.is_empty() && !r.pruned);
    let rec = rec.ok_or_else(unknown)?;
    let room = rec.room()?;
    let view = req.node.rooms.find_view(&room)?.ok_or_else(unknown)?;
    let viewer = Viewer::new(&req.node, &view, &req.origin).await.map_err(|_| unknown())?;
    viewer.serve(&*pdu(&req.node, &view, &id)?)
}

/// E6: the bare event (LM), never an LPDU (we never store those).
pub async fn event(req: Req, id: &str) -> Result<Value, Failure> {
    readable_event(&req, id).await
}

/// The state in force before the event at list position `index`. Long
/// lists are read a page at a time, yielding between pages so one request
/// does not hold a runtime worker.
async fn state_before(node: &Node, view: &RoomView, index: u64) -> Result<StateMap, Failure> {
    let mut state = StateMap::new();
    const PAGE: u64 = 1000;
    let mut from = 0;
    while from < index {
        let to = (from + PAGE).min(index);
        for id in node.store.list(&view.room_id, from, to)? {
            let rec = node.store.event(&id)?;
            if rec.as_ref().is_some_and(|r| r.soft_failed) {
                continue;
            }
            let p = pdu(node, view, &id)?;
            if p.is_state() {
                state.apply(p);
            }
        }
        from = to;
        tokio::task::yield_now().await;
    }
    Ok(state)
}

/// LM rooms: the state before a list event, by folding the list.
pub async fn list_state_before(node: &Node, view: &RoomView, at: &EventId) -> Result<Vec<Arc<Pdu>>, Failure> {
    let rec = node.store.event(at)?.ok_or_else(|| Failure::not_found("Unknown event"))?;
    Ok(state_before(node, view, rec.index).await?.iter().cloned().collect())
}

/// Mixed rooms: the state before an event, from its recorded snapshot.
pub fn mixed_state_before(node: &Node, view: &RoomView, at: &EventId) -> Result<Vec<Arc<Pdu>>, Failure> {
    let event = pdu(node, view, at)?;
    let ids = crate::room::snapshot::state_before(&node.store, &node.dag, &event)?
        .ok_or_else(|| Failure::not_found("No state is known at that event"))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids.values() {
        out.push(pdu(node, view, id)?);
    }
    Ok(out)
}

/// Every auth event reachable from `roots`, recursively (item 177).
pub fn auth_chain(
    node: &Node,
    view: &RoomView,
    roots: impl IntoIterator<Item = Arc<Pdu>>,
) -> Result<Vec<Arc<Pdu>>, Failure> {
    let mut seen: BTreeSet<EventId> = BTreeSet::new();
    let mut queue: VecDeque<EventId> = roots.into_iter().flat_map(|p| p.auth_events().to_vec()).collect();
    let mut out = Vec::new();
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(p) = load_pdu(&node.store, view.version, &id)? {
            queue.extend(p.auth_events().iter().cloned());
            out.push(p);
        }
    }
    Ok(out)
}

/// `events` in the order a receiver can replay them with auth checks:
/// auth events first, then by list position (outliers by depth, after).
pub fn in_replay_order(node: &Node, events: Vec<Arc<Pdu>>) -> Result<Vec<Arc<Pdu>>, Failure> {
    let mut places = HashMap::with_capacity(events.len());
    for e in &events {
        let place = match node.store.event(e.event_id())? {
            Some(r) if !r.outlier => Place::listed(r.index, e.event_id()),
            _ => Place::unlisted(e),
        };
        places.insert(e.event_id().clone(), place);
    }
    Ok(replay_order(events, |e| places.get(e.event_id()).cloned().unwrap_or_else(|| Place::unlisted(e))))
}

/// E7 and E8: `?event_id=` names the event whose prior state is wanted.
pub async fn state(req: Req, room: &str, ids_only: bool) -> Result<Value, Failure> {
    let view = known_view(&req, room)?;
    if !view.version.is_mixed() {
        require_hub(&req, &view)?;
    }
    let viewer = Viewer::new(&req.node, &view, &req.origin).await?;
    let at = query_get(&req.query, "event_id").ok_or_else(|| Failure::bad_json("event_id is required"))?;
    let at = EventId::parse(at).map_err(|_| Failure::not_found("Unknown event"))?;
    let rec = req.node.store.event(&at)?.ok_or_else(|| Failure::not_found("Unknown event"))?;
    if rec.room_id != view.room_id.as_str() || (rec.outlier && !view.version.is_mixed()) || !rec.rejected.is_empty() {
        return Err(Failure::not_found("The event is not in this room"));
    }
    // The state at an event the server may not see is not its business
    // (item 178).
    if viewer.sight(&*pdu(&req.node, &view, &at)?)? != Sight::Whole {
        return Err(Failure::not_found("Unknown event"));
    }
    let pdus: Vec<Arc<Pdu>> = if view.version.is_mixed() {
        mixed_state_before(&req.node, &view, &at)?
    } else {
        state_before(&req.node, &view, rec.index).await?.iter().cloned().collect()
    };
    let chain = auth_chain(&req.node, &view, pdus.iter().cloned())?;
    Ok(if ids_only {
        json!({
            "pdu_ids": pdus.iter().map(|p| p.event_id().as_str()).collect::<Vec<_>>(),
            "auth_chain_ids": chain.iter().map(|p| p.event_id().as_str()).collect::<Vec<_>>(),
        })
    } else {
        json!({
            "pdus": pdus.iter().map(|p| p.json()).collect::<Vec<_>>(),
            "auth_chain": chain.iter().map(|p| p.json()).collect::<Vec<_>>(),
        })
    })
}

/// E9: the events before `v` and `v` itself, oldest first; with several
/// `v` the newest list position counts (OQ-22).
pub async fn backfill(req: Req, room: &str) -> Result<Value, Failure> {
    let view = known_view(&req, room)?;
    require_hub(&req, &view)?;
    let viewer = Viewer::new(&req.node, &view, &req.origin).await?;
    let limit =
        query_get(&req.query, "limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(10).clamp(1, MAX_BACKFILL);
    let mut newest: Option<u64> = None;
    for (k, v) in &req.query {
        if k != "v" {
            continue;
        }
        let Ok(id) = EventId::parse(v) else { continue };
        if let Some(rec) = req.node.store.event(&id)? {
            if rec.room_id == view.room_id.as_str() && !rec.outlier {
                newest = Some(newest.map_or(rec.index, |n| n.max(rec.index)));
            }
        }
    }
    let end = newest.ok_or_else(|| Failure::not_found("None of the events named by v is in the room"))? + 1;
    let start = end.saturating_sub(limit as u64);
    let mut pdus = Vec::new();
    for id in req.node.store.list(&view.room_id, start, end)? {
        pdus.push(viewer.serve(&*pdu(&req.node, &view, &id)?)?);
    }
    Ok(json!({ "origin": req.node.name.as_str(), "pdus": pdus }))
}
