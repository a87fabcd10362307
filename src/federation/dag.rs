//! Mixed rooms over federation: before a room takes events from a DAG
//! server (or a participant from its hub), whatever they reference that we
//! lack is fetched from the server that sent them: missing prev events with
//! `/get_missing_events`, a gap too old for that as the prev event plus the
//! state before it (`/state`), missing auth events with `/event_auth`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use http::Method;
use serde_json::{json, Value};

use super::fetch::{checked_pdu, checked_pdus, lm_peer};
use crate::core::event::Pdu;
use crate::core::ids::{EventId, RoomId, ServerName};
use crate::federation::Node;
use crate::http::encode_segment;
use crate::room::{Outlier, RoomCmd, RoomError, RoomHandle, RoomView, Verdict};

/// Rounds of `/get_missing_events` before a gap is bridged with state.
const MISSING_ROUNDS: usize = 5;
const MISSING_LIMIT: usize = 100;
/// Gaps bridged with `/state` per offer.
const MAX_GAPS: usize = 10;

pub type Outcome = Vec<(EventId, Result<Verdict, RoomError>)>;

/// Offers checked events to a mixed room after fetching what they need
/// from `from`. Returns the outcome of each of `pdus`.
pub async fn offer(
    node: &Arc<Node>,
    handle: &RoomHandle,
    from: &ServerName,
    pdus: Vec<Pdu>,
) -> Result<Outcome, RoomError> {
    let mut view = handle.view();
    if view.length == 0 {
        // A room still taking its send_join answer: what is missing can
        // only be judged against its seed (otherwise the whole history
        // before our join looks missing and would be offered as new).
        handle.ask(|reply| RoomCmd::Dag { pdus: Vec::new(), outliers: Vec::new(), reply }).await?;
        view = handle.view();
    }
    let wanted: HashSet<EventId> = pdus.iter().map(|p| p.event_id().clone()).collect();
    let (before, outliers) =
        if node.is_me(from) { (Vec::new(), Vec::new()) } else { fetch_missing(node, &view, from, &pdus).await };
    let mut all = before;
    all.extend(pdus);
    let results = handle.ask(|reply| RoomCmd::Dag { pdus: all, outliers, reply }).await?;
    Ok(results.into_iter().filter(|(id, _)| wanted.contains(id)).collect())
}

/// Whether the room can compute the state after `id` (prev events).
fn prev_known(node: &Node, id: &EventId) -> bool {
    matches!(node.store.event(id), Ok(Some(r)) if !r.rejected.is_empty())
        || crate::room::snapshot::has_state_after(&node.store, &node.dag, id).unwrap_or(false)
}

fn event_known(node: &Node, id: &EventId) -> bool {
    matches!(node.store.event(id), Ok(Some(_)))
}

async fn fetch_missing(node: &Node, view: &RoomView, from: &ServerName, pdus: &[Pdu]) -> (Vec<Pdu>, Vec<Outlier>) {
    let mut have: BTreeMap<EventId, Pdu> = BTreeMap::new();
    let in_batch: HashSet<EventId> = pdus.iter().map(|p| p.event_id().clone()).collect();
    let missing_prevs = |have: &BTreeMap<EventId, Pdu>| -> Vec<(EventId, EventId)> {
        let mut out = Vec::new();
        for e in pdus.iter().chain(have.values()) {
            for p in e.prev_events() {
                if !in_batch.contains(p) && !have.contains_key(p) && !prev_known(node, p) {
                    out.push((e.event_id().clone(), p.clone()));
                }
            }
        }
        out
    };
    for _ in 0..MISSING_ROUNDS {
        let missing = missing_prevs(&have);
        if missing.is_empty() {
            break;
        }
        let latest: Vec<EventId> = missing.iter().map(|(e, _)| e.clone()).collect::<HashSet<_>>().into_iter().collect();
        let got = match get_missing_events(node, view, from, &latest).await {
            Ok(g) => g,
            Err(e) => {
                tracing::info!(%from, error = %e, "get_missing_events failed");
                break;
            }
        };
        let before = have.len();
        for p in got {
            if p.room_id() == &view.room_id && !in_batch.contains(p.event_id()) {
                have.entry(p.event_id().clone()).or_insert(p);
            }
        }
        if have.len() == before {
            break;
        }
    }
    let mut outliers = Vec::new();
    let gaps: Vec<EventId> =
        missing_prevs(&have).into_iter().map(|(_, p)| p).collect::<HashSet<_>>().into_iter().take(MAX_GAPS).collect();
    for prev in gaps {
        match prev_with_state(node, view, from, &prev).await {
            Ok(mut o) => outliers.append(&mut o),
            Err(e) => tracing::info!(%from, event = %prev, error = %e, "could not bridge a gap"),
        }
    }
    let mut ordered: Vec<Pdu> = have.into_values().collect();
    ordered.sort_by(|a, b| {
        (a.depth(), a.origin_server_ts(), a.event_id()).cmp(&(b.depth(), b.origin_server_ts(), b.event_id()))
    });
    // Auth events nobody has sent us yet.
    let known_here: HashSet<EventId> = ordered
        .iter()
        .chain(pdus)
        .map(|p| p.event_id().clone())
        .chain(outliers.iter().map(|o| o.pdu.event_id().clone()))
        .collect();
    let needing_auth: Vec<EventId> = ordered
        .iter()
        .chain(pdus)
        .filter(|e| e.auth_events().iter().any(|a| !known_here.contains(a) && !event_known(node, a)))
        .map(|e| e.event_id().clone())
        .collect();
    let mut fetched: HashSet<EventId> = HashSet::new();
    for id in needing_auth {
        match event_auth(node, view, from, &id).await {
            Ok(chain) => {
                for p in chain {
                    if !known_here.contains(p.event_id()) && fetched.insert(p.event_id().clone()) {
                        outliers.push(Outlier { pdu: p, state_before: None });
                    }
                }
            }
            Err(e) => tracing::info!(%from, event = %id, error = %e, "event_auth failed"),
        }
    }
    (ordered, outliers)
}

async fn get_json(
    node: &Node,
    from: &ServerName,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let lm = lm_peer(node, from).await;
    let resp = node.fed.request(from, method, path, body, lm).await.map_err(|e| e.to_string())?;
    resp.json(from.as_str()).map_err(|e| e.to_string())
}

fn events_of<'a>(body: &'a Value, key: &str) -> &'a [Value] {
    body.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// `POST /get_missing_events`: events between our extremities and `latest`.
pub async fn get_missing_events(
    node: &Node,
    view: &RoomView,
    from: &ServerName,
    latest: &[EventId],
) -> Result<Vec<Pdu>, String> {
    let path = format!("/_matrix/federation/v1/get_missing_events/{}", encode_segment(view.room_id.as_str()));
    // Nothing older than our oldest extremity: a participant does not take
    // the history before its join into its list; a gap that deep is
    // bridged with the state at it instead.
    let min_depth = view
        .extremities
        .iter()
        .filter_map(|e| crate::room::load::load_pdu(&node.store, view.version, e).ok().flatten())
        .filter_map(|p| p.depth())
        .min()
        .unwrap_or(0);
    let body = json!({
        "earliest_events": view.extremities.iter().map(EventId::as_str).collect::<Vec<_>>(),
        "latest_events": latest.iter().map(EventId::as_str).collect::<Vec<_>>(),
        "limit": MISSING_LIMIT,
        "min_depth": min_depth,
    });
    let answer = get_json(node, from, Method::POST, &path, Some(&body)).await?;
    let mut out = Vec::new();
    for item in events_of(&answer, "events") {
        let obj = item.as_object().ok_or("an event is not an object")?.clone();
        match checked_pdu(node, view.version, obj).await {
            Ok(p) => out.push(p),
            Err(e) => tracing::info!(%from, error = %e, "a missing event failed its checks"),
        }
    }
    Ok(out)
}

/// `GET /event_auth`: the auth chain of an event.
async fn event_auth(node: &Node, view: &RoomView, from: &ServerName, id: &EventId) -> Result<Vec<Pdu>, String> {
    let path = format!(
        "/_matrix/federation/v1/event_auth/{}/{}",
        encode_segment(view.room_id.as_str()),
        encode_segment(id.as_str())
    );
    let answer = get_json(node, from, Method::GET, &path, None).await?;
    checked_pdus(node, view.version, events_of(&answer, "auth_chain")).await
}

/// `GET /event`: one event, transaction-wrapped.
pub async fn fetch_event(node: &Node, view: &RoomView, from: &ServerName, id: &EventId) -> Result<Pdu, String> {
    let path = format!("/_matrix/federation/v1/event/{}", encode_segment(id.as_str()));
    let answer = get_json(node, from, Method::GET, &path, None).await?;
    let obj = match events_of(&answer, "pdus").first() {
        Some(Value::Object(o)) => o.clone(),
        _ => answer.as_object().cloned().ok_or("no event in the answer")?,
    };
    let pdu = checked_pdu(node, view.version, obj).await?;
    if pdu.event_id() != id || pdu.room_id() != &view.room_id {
        return Err(format!("{from} answered with another event"));
    }
    Ok(pdu)
}

/// A prev event we cannot reach event by event: the event itself, the
/// state before it and that state's auth chain, as outliers.
async fn prev_with_state(
    node: &Node,
    view: &RoomView,
    from: &ServerName,
    id: &EventId,
) -> Result<Vec<Outlier>, String> {
    let pdu = fetch_event(node, view, from, id).await?;
    let (state, chain) = state_at(node, &view.room_id, view.version, from, id).await?;
    let ids = state
        .iter()
        .filter_map(|p| p.state_key().map(|k| ((p.event_type().to_owned(), k.to_owned()), p.event_id().clone())))
        .collect();
    let mut out: Vec<Outlier> = chain.into_iter().chain(state).map(|pdu| Outlier { pdu, state_before: None }).collect();
    out.push(Outlier { pdu, state_before: Some(ids) });
    Ok(out)
}

/// `GET /state?event_id=`: the state before an event and its auth chain.
pub async fn state_at(
    node: &Node,
    room: &RoomId,
    version: &'static crate::core::event::RoomVersion,
    from: &ServerName,
    id: &EventId,
) -> Result<(Vec<Pdu>, Vec<Pdu>), String> {
    let path = format!(
        "/_matrix/federation/v1/state/{}?event_id={}",
        encode_segment(room.as_str()),
        encode_segment(id.as_str())
    );
    let answer = get_json(node, from, Method::GET, &path, None).await?;
    let state = checked_pdus(node, version, events_of(&answer, "pdus")).await?;
    let chain = checked_pdus(node, version, events_of(&answer, "auth_chain")).await?;
    Ok((state, chain))
}
