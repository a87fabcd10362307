//! Endpoints DAG servers call (digest 11.4): `/get_missing_events`,
//! `/event_auth`, `/event` and `/backfill` in their Matrix (transaction
//! wrapped, DAG-walking) forms.

use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;

use serde_json::{json, Value};

use super::events::{auth_chain, readable_event};
use super::known_view;
use super::visibility::Viewer;
use crate::core::event::Pdu;
use crate::core::ids::EventId;
use crate::federation::inbound::Req;
use crate::federation::Node;
use crate::http::query_get;
use crate::room::load::load_pdu;
use crate::room::RoomView;
use crate::sys::now_ms;
use crate::wire::federation::MissingEvents;
use crate::wire::{self, Failure};

/// Largest page of `/get_missing_events` and `/backfill` served.
const MAX_EVENTS: usize = 100;

/// An event of the room's list (accepted or soft-failed), not an outlier
/// or a rejected one, with its list position.
fn list_event(node: &Node, view: &RoomView, id: &EventId) -> Result<Option<(u64, Arc<Pdu>)>, Failure> {
    match node.store.event(id)? {
        Some(r) if r.room_id == view.room_id.as_str() && !r.outlier && !r.pruned => {
            Ok(load_pdu(&node.store, view.version, id)?.map(|p| (r.index, p)))
        }
        _ => Ok(None),
    }
}

fn txn_wrapped(node: &Node, pdus: Vec<Value>) -> Value {
    json!({ "origin": node.name.as_str(), "origin_server_ts": now_ms(), "pdus": pdus })
}

/// Newest first, walking `prev_events` from `start` until `limit` events
/// are taken; `stop` events are neither taken nor walked through. The list
/// position orders the walk: every event comes after its prev events there,
/// in LM rooms too (which have no depth).
fn walk_back(
    node: &Node,
    view: &RoomView,
    start: impl IntoIterator<Item = EventId>,
    stop: &BTreeSet<EventId>,
    limit: usize,
    min_depth: i64,
) -> Result<Vec<Arc<Pdu>>, Failure> {
    let deep_enough = |p: &Pdu| p.depth().unwrap_or(0) >= min_depth;
    let mut seen: BTreeSet<EventId> = BTreeSet::new();
    let mut queue: BinaryHeap<(u64, EventId)> = BinaryHeap::new();
    let mut loaded: std::collections::HashMap<EventId, Arc<Pdu>> = std::collections::HashMap::new();
    for id in start {
        if let Some((index, p)) = list_event(node, view, &id)? {
            if deep_enough(&p) && seen.insert(id.clone()) {
                loaded.insert(id.clone(), p);
                queue.push((index, id));
            }
        }
    }
    let mut out = Vec::new();
    while let Some((_, id)) = queue.pop() {
        if out.len() >= limit {
            break;
        }
        let Some(p) = loaded.remove(&id) else { continue };
        for prev in p.prev_events() {
            if stop.contains(prev) || !seen.insert(prev.clone()) {
                continue;
            }
            if let Some((index, pp)) = list_event(node, view, prev)? {
                if deep_enough(&pp) {
                    loaded.insert(prev.clone(), pp);
                    queue.push((index, prev.clone()));
                }
            }
        }
        out.push(p);
    }
    Ok(out)
}

/// `POST /v1/get_missing_events/{roomId}`: the events before
/// `latest_events` and after `earliest_events`, oldest first.
pub async fn get_missing_events(req: Req, room: &str) -> Result<Value, Failure> {
    let view = known_view(&req, room)?;
    let viewer = Viewer::new(&req.node, &view, &req.origin).await?;
    let asked: MissingEvents = wire::read(&req.body)?;
    let ids = |list: &[String]| -> Vec<EventId> { list.iter().filter_map(|s| EventId::parse(s).ok()).collect() };
    let limit = asked.limit.unwrap_or(10).clamp(1, MAX_EVENTS as u64) as usize;
    let min_depth = asked.min_depth.unwrap_or(0);
    let earliest: BTreeSet<EventId> = ids(&asked.earliest_events).into_iter().collect();
    let latest = ids(&asked.latest_events);
    // The latest events themselves are what the caller has; start below them.
    let mut start = Vec::new();
    for id in &latest {
        if let Some((_, p)) = list_event(&req.node, &view, id)? {
            start.extend(p.prev_events().iter().filter(|e| !earliest.contains(*e)).cloned());
        }
    }
    let mut events = walk_back(&req.node, &view, start, &earliest, limit, min_depth)?;
    events.reverse();
    let events = events.iter().map(|p| viewer.serve(p)).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "events": events }))
}

/// `GET /v1/event_auth/{roomId}/{eventId}`: the event's full auth chain.
pub async fn event_auth(req: Req, room: &str, event: &str) -> Result<Value, Failure> {
    let view = known_view(&req, room)?;
    Viewer::new(&req.node, &view, &req.origin).await?;
    let id = EventId::parse(event).map_err(|_| Failure::not_found("Unknown event"))?;
    let rec = req.node.store.event(&id)?.ok_or_else(|| Failure::not_found("Unknown event"))?;
    if rec.room_id != view.room_id.as_str() {
        return Err(Failure::not_found("Unknown event"));
    }
    let pdu = load_pdu(&req.node.store, view.version, &id)?.ok_or_else(|| Failure::not_found("Unknown event"))?;
    let chain = auth_chain(&req.node, &view, std::iter::once(pdu))?;
    Ok(json!({ "auth_chain": chain.iter().map(|p| p.json()).collect::<Vec<_>>() }))
}

/// `GET /v1/event/{eventId}`: one event in a transaction.
pub async fn event(req: Req, id: &str) -> Result<Value, Failure> {
    let event = readable_event(&req, id).await?;
    Ok(txn_wrapped(&req.node, vec![event]))
}

/// `GET /v1/backfill/{roomId}?v=…&limit=`: the `v` events and those before
/// them in the DAG, newest first.
pub async fn backfill(req: Req, room: &str) -> Result<Value, Failure> {
    let view = known_view(&req, room)?;
    let viewer = Viewer::new(&req.node, &view, &req.origin).await?;
    let limit = query_get(&req.query, "limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(10).clamp(1, MAX_EVENTS);
    let start: Vec<EventId> =
        req.query.iter().filter(|(k, _)| k == "v").filter_map(|(_, v)| EventId::parse(v).ok()).collect();
    if start.is_empty() {
        return Err(Failure::bad_json("at least one v is required"));
    }
    let events = walk_back(&req.node, &view, start, &BTreeSet::new(), limit, 0)?;
    if events.is_empty() {
        // A participant joined later than these events: an empty answer
        // would tell a DAG server there is no more history, an error makes
        // it ask another server (the hub).
        return Err(Failure::not_found("None of the events named by v is held here; the room's hub has them"));
    }
    let served = events.iter().map(|p| viewer.serve(p)).collect::<Result<Vec<_>, _>>()?;
    Ok(txn_wrapped(&req.node, served))
}
