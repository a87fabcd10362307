//! Server-side search (`POST search`, the `room_events` category): the
//! messages of the user's joined rooms that they may read, newest first,
//! matching every word of the term in `content.body`, `content.name` or
//! `content.topic` (or the keys asked for), case-insensitively. Rooms are
//! read newest first together, so a page never skips an older match; one
//! request looks at a bounded number of events and hands out a token to
//! go on.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::events::{load_client_event, readable_room};
use super::filter::EventFilter;
use super::messages::may_read;
use super::Call;
use crate::core::ids::{EventId, RoomId};
use crate::http::query_get;
use crate::wire::Failure;

/// Events looked at by one request, at most.
const SCAN_BUDGET: usize = 5_000;
const KEYS: [&str; 3] = ["content.body", "content.name", "content.topic"];

pub async fn search(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let user = user.clone();
    let body = call.body()?;
    let Some(category) = body.get("search_categories").and_then(|c| c.get("room_events")) else {
        return Ok(json!({"search_categories": {}}));
    };
    let term = category
        .get("search_term")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::MissingParam("search_term is required".into()))?;
    let words: Vec<String> = term.split_whitespace().map(str::to_lowercase).take(16).collect();
    if words.is_empty() {
        return Err(Failure::invalid_param("search_term has no words"));
    }
    let keys: Vec<String> = match category.get("keys").and_then(Value::as_array) {
        Some(k) => k.iter().filter_map(Value::as_str).filter(|k| KEYS.contains(k)).map(str::to_owned).collect(),
        None => KEYS.iter().map(|k| (*k).to_owned()).collect(),
    };
    let filter = EventFilter::from_json(category.get("filter"));
    let limit =
        category.get("filter").and_then(|f| f.get("limit")).and_then(Value::as_u64).unwrap_or(10).clamp(1, 50) as usize;
    let context = category.get("event_context");
    let before: u64 = match query_get(&call.query, "next_batch") {
        None => u64::MAX,
        Some(t) => {
            t.strip_prefix('s').and_then(|n| n.parse().ok()).ok_or_else(|| Failure::invalid_param("bad next_batch"))?
        }
    };
    let rooms: Vec<RoomId> = call
        .server
        .store
        .memberships(&user)?
        .into_iter()
        .filter(|(r, m)| m.membership == "join" && filter.allows_room(r.as_str()))
        .map(|(r, _)| r)
        .collect();
    let mut views = BTreeMap::new();
    for room in &rooms {
        if let Ok(view) = readable_room(&call, room.as_str()) {
            views.insert(room.clone(), view);
        }
    }
    let mut results = Vec::new();
    let mut scanned = 0;
    let mut next = None;
    let mut walk = super::newest::NewestFirst::new(&*call.server.store, views.keys().cloned().collect(), before);
    while let Some(e) = walk.next()? {
        scanned += 1;
        let view = &views[&e.room];
        if let Some(event) = matching(&call, view, &user, &e.event, &words, &keys, &filter).await? {
            results.push((e.room.clone(), e.event.clone(), event));
            if results.len() == limit {
                next = Some(e.pos);
                break;
            }
        }
        if scanned >= SCAN_BUDGET {
            next = Some(e.pos);
            break;
        }
    }
    let mut out_results = Vec::new();
    for (room, id, event) in results {
        let mut result = json!({"rank": 1.0, "result": event});
        if let Some(ctx) = context {
            result["context"] = event_context(&call, &views[&room], &user, &id, ctx).await?;
        }
        out_results.push(result);
    }
    let mut room_events = json!({
        "count": out_results.len(),
        "highlights": words,
        "results": out_results,
    });
    if let Some(n) = next {
        room_events["next_batch"] = json!(format!("s{n}"));
    }
    Ok(json!({"search_categories": {"room_events": room_events}}))
}

/// The event as the client sees it, if it matches and the user may read it.
async fn matching(
    call: &Call,
    view: &crate::room::RoomView,
    user: &crate::core::ids::UserId,
    id: &EventId,
    words: &[String],
    keys: &[String],
    filter: &EventFilter,
) -> Result<Option<Value>, Failure> {
    let Some(event) = load_client_event(&call.server, id)? else { return Ok(None) };
    if !filter.allows(&event) {
        return Ok(None);
    }
    let text: String = keys
        .iter()
        .filter_map(|k| k.strip_prefix("content.").and_then(|f| event["content"][f].as_str()))
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    if text.is_empty() || !words.iter().all(|w| text.contains(w.as_str())) {
        return Ok(None);
    }
    let reader = call.server.remote.reader(view, user).await?;
    Ok(may_read(&call.server, &reader, view, id)?.then_some(event))
}

/// `events_before` and `events_after` a result, from the room's list.
async fn event_context(
    call: &Call,
    view: &crate::room::RoomView,
    user: &crate::core::ids::UserId,
    id: &EventId,
    ctx: &Value,
) -> Result<Value, Failure> {
    let n_before = ctx.get("before_limit").and_then(Value::as_u64).unwrap_or(5).min(20);
    let n_after = ctx.get("after_limit").and_then(Value::as_u64).unwrap_or(5).min(20);
    let index = call.server.store.event(id)?.map_or(0, |r| r.index);
    let reader = call.server.remote.reader(view, user).await?;
    let side = |from: u64, to: u64| -> Result<Vec<Value>, Failure> {
        let mut out = Vec::new();
        for i in call.server.store.list(&view.room_id, from, to)? {
            if may_read(&call.server, &reader, view, &i)? {
                out.extend(load_client_event(&call.server, &i)?);
            }
        }
        Ok(out)
    };
    let mut events_before = side(index.saturating_sub(n_before), index)?;
    events_before.reverse();
    let events_after = side(index + 1, (index + 1 + n_after).min(view.length))?;
    Ok(json!({
        "events_before": events_before,
        "events_after": events_after,
        "start": format!("t{}", index.saturating_sub(n_before)),
        "end": format!("t{}", (index + 1 + n_after).min(view.length)),
    }))
}
