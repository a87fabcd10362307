//! `GET /rooms/{roomId}/messages`.
//!
//! Tokens: `t<list position>` walks this server's copy of the list;
//! `r<event id>` walks history before that event by asking the room's hub
//! (E9). A participant's copy starts at its join, and a follower keeps only
//! a bounded tail (older events are pruned): both page further back through
//! the hub, and the client sees one history.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::events::{load_client_event, readable_room};
use super::filter::{self, EventFilter};
use super::Call;
use super::ClientDeps;
use crate::core::ids::EventId;
use crate::core::rooms::StateView;
use crate::federation::handlers::visibility::Viewer;
use crate::http::query_get;
use crate::room::RoomView;
use crate::wire::Failure;

/// Events one request looks at, whatever its filter lets through: a filter
/// that matches nothing gets a short page and a token to go on from.
const MAX_SCANNED: u64 = 2_000;

fn bad_token() -> Failure {
    Failure::invalid_param("Unknown pagination token")
}

enum Token {
    Local(u64),
    Remote(EventId),
}

fn parse_token(t: &str) -> Result<Token, Failure> {
    if let Some(i) = t.strip_prefix('t') {
        return i.parse().map(Token::Local).map_err(|_| bad_token());
    }
    if let Some(id) = t.strip_prefix('r') {
        return EventId::parse(id).map(Token::Remote).map_err(|_| bad_token());
    }
    // A sync token: page back from the end of the list.
    if t.starts_with('s') {
        return Ok(Token::Local(u64::MAX));
    }
    Err(bad_token())
}

/// Whether the user may see history from before their own join (rooms with
/// `joined` or `invited` history visibility keep it from them).
fn shared_history(view: &RoomView) -> bool {
    let vis = view
        .state
        .get("m.room.history_visibility", "")
        .and_then(|e| e.content().get("history_visibility"))
        .and_then(Value::as_str)
        .unwrap_or("shared");
    vis == "shared" || vis == "world_readable"
}

/// Whether `user`'s `reader` lets them see the stored event `id`.
pub fn may_read(server: &ClientDeps, reader: &Viewer<'_>, view: &RoomView, id: &EventId) -> Result<bool, Failure> {
    match crate::room::load::load_pdu(&server.store, view.version, id)? {
        Some(pdu) => reader.sees(&pdu),
        None => Ok(false),
    }
}

pub async fn messages(call: Call, room: &str) -> Result<Value, Failure> {
    let view = readable_room(&call, room)?;
    let (user, _) = call.who()?;
    let reader = call.server.remote.reader(&view, user).await?;
    let forward = query_get(&call.query, "dir") == Some("f");
    let limit = query_get(&call.query, "limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(10).clamp(1, 1000);
    let filter_json = filter::resolve(&call, user, query_get(&call.query, "filter"))?;
    let filter = EventFilter::from_json(Some(&filter_json));
    let from = match query_get(&call.query, "from") {
        Some(t) => parse_token(t)?,
        None if forward => Token::Local(0),
        None => Token::Local(view.length),
    };
    let to = query_get(&call.query, "to").and_then(|t| match parse_token(t) {
        Ok(Token::Local(i)) => Some(i),
        _ => None,
    });
    let page = match (from, forward) {
        (Token::Local(i), true) => forward_page(&call, &view, &reader, i.min(view.length), limit, to, &filter)?,
        (Token::Local(i), false) => {
            backward_page(&call, &view, &reader, i.min(view.length), limit, to, &filter).await?
        }
        (Token::Remote(id), false) => remote_page(&call.server, &view, &reader, &id, limit, &filter).await?,
        (Token::Remote(_), true) => {
            Page { chunk: Vec::new(), start: query_get(&call.query, "from").unwrap_or("").into(), end: None }
        }
    };
    let mut chunk = page.chunk;
    for e in &mut chunk {
        super::relations::bundle_into(&call.server, &view.room_id, user, e)?;
    }
    let mut out = json!({ "chunk": chunk, "start": page.start });
    if let Some(end) = page.end {
        out["end"] = json!(end);
    }
    Ok(out)
}

struct Page {
    chunk: Vec<Value>,
    start: String,
    end: Option<String>,
}

fn forward_page(
    call: &Call,
    view: &RoomView,
    reader: &Viewer<'_>,
    from: u64,
    limit: usize,
    to: Option<u64>,
    f: &EventFilter,
) -> Result<Page, Failure> {
    let stop = to.unwrap_or(view.length).min(view.length);
    let mut chunk = Vec::new();
    let mut at = from;
    while at < stop && chunk.len() < limit && at - from < MAX_SCANNED {
        let end = (at + limit as u64).min(stop);
        for id in call.server.store.list(&view.room_id, at, end)? {
            at += 1;
            if !may_read(&call.server, reader, view, &id)? {
                continue;
            }
            if let Some(e) = load_client_event(&call.server, &id)?.filter(|e| f.allows(e)) {
                chunk.push(e);
                if chunk.len() == limit {
                    break;
                }
            }
        }
    }
    let end = (at < stop).then(|| format!("t{at}"));
    Ok(Page { chunk, start: format!("t{from}"), end })
}

async fn backward_page(
    call: &Call,
    view: &RoomView,
    reader: &Viewer<'_>,
    from: u64,
    limit: usize,
    to: Option<u64>,
    f: &EventFilter,
) -> Result<Page, Failure> {
    let floor = to.unwrap_or(0);
    let mut chunk = Vec::new();
    let mut at = from;
    while at > floor && chunk.len() < limit && from - at < MAX_SCANNED {
        let start = at.saturating_sub(limit as u64).max(floor);
        let ids = call.server.store.list(&view.room_id, start, at)?;
        // Events a follower pruned are fetched back from the hub.
        let mut fetched: HashMap<EventId, (Value, bool)> = HashMap::new();
        let pruned: Vec<EventId> = ids
            .iter()
            .filter(|id| call.server.store.event(id).ok().flatten().is_some_and(|r| r.pruned))
            .cloned()
            .collect();
        if !pruned.is_empty() {
            let run_end = ids.iter().rposition(|id| pruned.contains(id)).unwrap_or(0);
            let run_start = ids.iter().position(|id| pruned.contains(id)).unwrap_or(0);
            let pdus = call.server.remote.backfill(view, &ids[run_end], run_end - run_start + 1).await;
            for p in pdus.map_err(Failure::Remote)? {
                let seen = reader.sees(&p)?;
                fetched.insert(p.event_id().clone(), (super::events::client_event(p.json(), p.event_id()), seen));
            }
        }
        let mut taken = 0;
        for id in ids.iter().rev() {
            if chunk.len() == limit {
                break;
            }
            taken += 1;
            let e = match fetched.remove(id) {
                Some((e, seen)) => seen.then_some(e),
                None if may_read(&call.server, reader, view, id)? => load_client_event(&call.server, id)?,
                None => None,
            };
            if let Some(e) = e.filter(|e| f.allows(e)) {
                chunk.push(e);
            }
        }
        at -= taken as u64;
    }
    let end = if at > floor {
        Some(format!("t{at}"))
    } else if at == 0 && to.is_none() && !view.is_hub(&call.server.name) && shared_history(view) {
        // Our copy starts here; earlier history is at the hub.
        call.server.store.list(&view.room_id, 0, 1)?.first().map(|first| format!("r{first}"))
    } else {
        None
    };
    Ok(Page { chunk, start: format!("t{from}"), end })
}

/// History before `before`, from the hub.
async fn remote_page(
    server: &ClientDeps,
    view: &RoomView,
    reader: &Viewer<'_>,
    before: &EventId,
    limit: usize,
    f: &EventFilter,
) -> Result<Page, Failure> {
    let start = format!("r{before}");
    let prev = match crate::room::load::load_pdu(&server.store, view.version, before)? {
        Some(p) if !p.prev_events().is_empty() => p.prev_events()[0].clone(),
        Some(_) => return Ok(Page { chunk: Vec::new(), start, end: None }),
        None => {
            // Not held here: ask the hub for it (and what precedes it).
            let got = server.remote.backfill(view, before, 1).await.map_err(Failure::Remote)?;
            match got.last().and_then(|p| p.prev_events().first().cloned()) {
                Some(p) => p,
                None => return Ok(Page { chunk: Vec::new(), start, end: None }),
            }
        }
    };
    let pdus = server.remote.backfill(view, &prev, limit).await.map_err(Failure::Remote)?;
    let oldest = pdus.first().filter(|p| !p.prev_events().is_empty()).map(|p| format!("r{}", p.event_id()));
    let mut chunk = Vec::new();
    for p in pdus.iter().rev() {
        if reader.sees(p)? {
            chunk.push(super::events::client_event(p.json(), p.event_id()));
        }
    }
    chunk.retain(|e| f.allows(e));
    Ok(Page { chunk, start, end: oldest })
}
