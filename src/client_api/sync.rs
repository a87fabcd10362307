//! `GET /sync`: tokens are `s<stream position>`; a long poll waits for the
//! stream's watermark to move (so an event is never shown before it is
//! durable, and never skipped).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{json, Value};

use super::events::{client_event, load_client_event, record_event};
use super::Call;
use crate::core::ids::{EventId, RoomId};
use crate::core::json::{self, NumberPolicy};
use crate::http::{query_get, ApiError};
use crate::store::records::Membership;

/// Timeline events per room in one answer.
const TIMELINE_LIMIT: u64 = 50;
/// Stream entries read per answer; the token then points mid-way.
const STREAM_PAGE: usize = 2000;
const MAX_TIMEOUT_MS: u64 = 120_000;

fn parse_since(t: &str) -> Option<u64> {
    t.strip_prefix('s').unwrap_or(t).parse().ok()
}

pub async fn sync(call: Call) -> Result<Value, ApiError> {
    call.who()?;
    let timeout =
        query_get(&call.query, "timeout").and_then(|t| t.parse::<u64>().ok()).unwrap_or(0).min(MAX_TIMEOUT_MS);
    let full_state = query_get(&call.query, "full_state") == Some("true");
    let since =
        match query_get(&call.query, "since") {
            Some(t) => Some(parse_since(t).ok_or_else(|| {
                ApiError::new(http::StatusCode::BAD_REQUEST, "M_INVALID_PARAM", "Unknown since token")
            })?),
            None => None,
        };
    let Some(since) = since.filter(|_| !full_state) else {
        return initial(&call);
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout);
    let mut marks = call.node.positions.subscribe();
    loop {
        let upto = *marks.borrow_and_update();
        if upto > since {
            let (answer, empty) = incremental(&call, since, upto)?;
            if !empty || tokio::time::Instant::now() >= deadline {
                return Ok(answer);
            }
        } else if tokio::time::Instant::now() >= deadline {
            return Ok(empty_answer(since));
        }
        // Wait for the stream to move, or the poll to end.
        if tokio::time::timeout_at(deadline, marks.changed()).await.is_err() {
            let upto = call.node.positions.watermark();
            return if upto > since { Ok(incremental(&call, since, upto)?.0) } else { Ok(empty_answer(since)) };
        }
    }
}

fn empty_answer(pos: u64) -> Value {
    json!({
        "next_batch": format!("s{pos}"),
        "rooms": {"join": {}, "invite": {}, "leave": {}, "knock": {}},
        "presence": {"events": []},
        "account_data": {"events": []},
        "to_device": {"events": []},
        "device_lists": {"changed": [], "left": []},
    })
}

fn joined_room(timeline: Vec<Value>, state: Vec<Value>, limited: bool, prev_batch: Option<String>) -> Value {
    let mut tl = json!({ "events": timeline, "limited": limited });
    if let Some(p) = prev_batch {
        tl["prev_batch"] = json!(p);
    }
    json!({
        "timeline": tl,
        "state": { "events": state },
        "ephemeral": { "events": [] },
        "account_data": { "events": [] },
        "unread_notifications": { "notification_count": 0, "highlight_count": 0 },
        "summary": {},
    })
}

fn invite_room(m: &Membership) -> Value {
    let events: Value = json::parse(&m.invite_state_json, NumberPolicy::Ieee754).unwrap_or_else(|_| json!([]));
    json!({ "invite_state": { "events": events } })
}

/// The room's current state as client events, leaving out `skip`.
fn state_events(call: &Call, room: &RoomId, skip: &[EventId]) -> Vec<Value> {
    let Some(h) = call.node.rooms.get(room) else {
        return Vec::new();
    };
    h.view()
        .state
        .iter()
        .filter(|p| !skip.contains(p.event_id()))
        .map(|p| client_event(p.json(), p.event_id()))
        .collect()
}

/// The last events of a room's list: client events, their ids, whether
/// older ones were left out, and the token to page back from.
type Recent = (Vec<Value>, Vec<EventId>, bool, Option<String>);

fn recent(call: &Call, room: &RoomId) -> Result<Recent, ApiError> {
    let Some(h) = call.node.rooms.get(room) else {
        return Ok((Vec::new(), Vec::new(), false, None));
    };
    let length = h.view().length;
    let start = length.saturating_sub(TIMELINE_LIMIT);
    let ids = call.node.store.list(room, start, length)?;
    let mut events = Vec::new();
    for id in &ids {
        if let Some(e) = load_client_event(&call.node, id)? {
            events.push(e);
        }
    }
    Ok((events, ids, start > 0, Some(format!("t{start}"))))
}

fn initial(call: &Call) -> Result<Value, ApiError> {
    let (user, _) = call.who()?;
    let upto = call.node.positions.watermark();
    let mut answer = empty_answer(upto);
    for (room, m) in call.node.store.memberships(user)? {
        match m.membership.as_str() {
            "join" => {
                let (timeline, ids, limited, prev) = recent(call, &room)?;
                let state = state_events(call, &room, &ids);
                answer["rooms"]["join"][room.as_str()] = joined_room(timeline, state, limited, prev);
            }
            "invite" => answer["rooms"]["invite"][room.as_str()] = invite_room(&m),
            _ => {}
        }
    }
    Ok(answer)
}

/// Changes in `(since, upto]`. Returns the answer and whether it is empty.
fn incremental(call: &Call, since: u64, upto: u64) -> Result<(Value, bool), ApiError> {
    let (user, _) = call.who()?;
    let entries: Vec<_> =
        call.node.store.stream_after(since, STREAM_PAGE)?.into_iter().take_while(|e| e.pos <= upto).collect();
    let next = if entries.len() == STREAM_PAGE { entries.last().map_or(upto, |e| e.pos) } else { upto };
    let memberships: HashMap<RoomId, Membership> = call.node.store.memberships(user)?.into_iter().collect();
    // Events per room in stream order, with their list positions.
    let mut per_room: BTreeMap<RoomId, Vec<(u64, EventId, Value, u64)>> = BTreeMap::new();
    for e in &entries {
        let Some(m) = memberships.get(&e.room) else {
            continue;
        };
        // Nothing after the user left (or was kicked or banned).
        if m.membership != "join" && e.pos > m.stream {
            continue;
        }
        let Some(rec) = call.node.store.event(&e.event)? else {
            continue;
        };
        if rec.soft_failed {
            continue;
        }
        if let Some(ev) = record_event(&rec, &e.event) {
            per_room.entry(e.room.clone()).or_default().push((e.pos, e.event.clone(), ev, rec.index));
        }
    }
    let mut answer = empty_answer(next);
    let mut empty = true;
    for (room, m) in &memberships {
        let changed_membership = m.stream > since && m.stream <= next;
        let events = per_room.remove(room).unwrap_or_default();
        match m.membership.as_str() {
            "invite" if changed_membership => {
                answer["rooms"]["invite"][room.as_str()] = invite_room(m);
                empty = false;
            }
            "join" if !events.is_empty() || changed_membership => {
                let limited = events.len() as u64 > TIMELINE_LIMIT;
                let shown = &events[events.len().saturating_sub(TIMELINE_LIMIT as usize)..];
                let ids: Vec<EventId> = shown.iter().map(|(_, id, _, _)| id.clone()).collect();
                let prev = shown.first().map(|(_, _, _, index)| format!("t{index}"));
                // A room joined in this window gets its state.
                let state = if changed_membership { state_events(call, room, &ids) } else { Vec::new() };
                let timeline = shown.iter().map(|(_, _, v, _)| v.clone()).collect();
                answer["rooms"]["join"][room.as_str()] = joined_room(timeline, state, limited, prev);
                empty = false;
            }
            "leave" | "ban" if changed_membership => {
                let timeline: Vec<Value> = events.iter().map(|(_, _, v, _)| v.clone()).collect();
                let prev = events.first().map(|(_, _, _, index)| format!("t{index}"));
                answer["rooms"]["leave"][room.as_str()] = joined_room(timeline, Vec::new(), false, prev);
                empty = false;
            }
            _ => {}
        }
    }
    Ok((answer, empty))
}
