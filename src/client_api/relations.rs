//! Relations (`/_matrix/client/v1/rooms/{roomId}/relations/...`), threads
//! (`.../threads`) and the aggregations bundled into an event's
//! `unsigned.m.relations` (threads, the latest edit, references). Read from
//! the relations index the room writer keeps (`P` table, by parent and
//! stream position); an event redacted since no longer counts.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::events::{load_client_event, readable_room};
use super::messages::may_read;
use super::{Call, ClientDeps};
use crate::core::ids::{EventId, RoomId, UserId};
use crate::http::query_get;
use crate::store::records::RelationEntry;
use crate::wire::Failure;

/// Relations read for one event's bundle, at most.
const BUNDLE_SCAN: usize = 500;
/// Relations of a room read to list its threads, at most.
const THREAD_SCAN: usize = 20_000;

fn limit_of(call: &Call, default: usize) -> usize {
    query_get(&call.query, "limit").and_then(|l| l.parse().ok()).unwrap_or(default).clamp(1, 100)
}

/// A child's event if it still relates as indexed (a redaction removes
/// `m.relates_to`).
fn still_related(server: &ClientDeps, entry: &RelationEntry) -> Result<Option<Value>, Failure> {
    let Ok(id) = EventId::parse(&entry.child) else { return Ok(None) };
    let Some(e) = load_client_event(server, &id)? else { return Ok(None) };
    let kept = e["content"]["m.relates_to"]["rel_type"].as_str() == Some(entry.rel_type.as_str());
    Ok(kept.then_some(e))
}

/// `GET .../relations/{eventId}[/{relType}[/{eventType}]]`.
pub async fn relations(
    call: Call,
    room: &str,
    event: &str,
    rel_type: Option<&str>,
    event_type: Option<&str>,
) -> Result<Value, Failure> {
    let view = readable_room(&call, room)?;
    let (user, _) = call.who()?;
    let reader = call.server.remote.reader(&view, user).await?;
    let parent = EventId::parse(event).map_err(|_| Failure::not_found("Event not found"))?;
    if !may_read(&call.server, &reader, &view, &parent)? {
        return Err(Failure::not_found("Event not found"));
    }
    let forward = match query_get(&call.query, "dir") {
        None | Some("b") => false,
        Some("f") => true,
        Some(_) => return Err(Failure::invalid_param("dir must be f or b")),
    };
    let token = |name: &str| -> Result<Option<u64>, Failure> {
        query_get(&call.query, name)
            .map(|t| {
                t.strip_prefix('r')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| Failure::invalid_param(format!("bad {name} token")))
            })
            .transpose()
    };
    let (from, to) = (token("from")?, token("to")?);
    let limit = limit_of(&call, 50);
    let (mut after, mut before) = if forward {
        (from.map_or(0, |f| f.saturating_sub(1)), to.unwrap_or(u64::MAX))
    } else {
        (to.unwrap_or(0), from.unwrap_or(u64::MAX))
    };
    let mut chunk = Vec::new();
    let mut next = None;
    'pages: loop {
        let batch = call.server.store.relations(&view.room_id, parent.as_str(), after, before, forward, limit * 2)?;
        if batch.is_empty() {
            break;
        }
        for (pos, entry) in &batch {
            if forward {
                after = *pos;
            } else {
                before = *pos;
            }
            if rel_type.is_some_and(|t| t != entry.rel_type) || event_type.is_some_and(|t| t != entry.event_type) {
                continue;
            }
            let Ok(child) = EventId::parse(&entry.child) else { continue };
            if !may_read(&call.server, &reader, &view, &child)? {
                continue;
            }
            if let Some(e) = still_related(&call.server, entry)? {
                if chunk.len() == limit {
                    next = Some(format!("r{}", if forward { *pos } else { *pos + 1 }));
                    break 'pages;
                }
                chunk.push(e);
            }
        }
    }
    let mut out = json!({"chunk": chunk});
    if let Some(n) = next {
        out["next_batch"] = json!(n);
    }
    if query_get(&call.query, "recurse").is_some() {
        // Only direct relations are followed.
        out["recursion_depth"] = json!(1);
    }
    Ok(out)
}

/// `GET .../threads`: thread roots, latest activity first, with their
/// thread summaries.
pub async fn threads(call: Call, room: &str) -> Result<Value, Failure> {
    let view = readable_room(&call, room)?;
    let (user, _) = call.who()?;
    let user = user.clone();
    let reader = call.server.remote.reader(&view, &user).await?;
    let participated_only = match query_get(&call.query, "include") {
        None | Some("all") => false,
        Some("participated") => true,
        Some(_) => return Err(Failure::invalid_param("include must be all or participated")),
    };
    let skip: usize = match query_get(&call.query, "from") {
        None => 0,
        Some(t) => {
            t.strip_prefix('t').and_then(|n| n.parse().ok()).ok_or_else(|| Failure::invalid_param("bad from token"))?
        }
    };
    let limit = limit_of(&call, 20);
    let mut latest: BTreeMap<String, u64> = BTreeMap::new();
    for (parent, pos, entry) in call.server.store.room_relations(&view.room_id, THREAD_SCAN)? {
        if entry.rel_type == "m.thread" {
            let at = latest.entry(parent).or_default();
            *at = (*at).max(pos);
        }
    }
    let mut roots: Vec<(u64, String)> = latest.into_iter().map(|(p, pos)| (pos, p)).collect();
    roots.sort_by(|a, b| b.cmp(a));
    let mut chunk = Vec::new();
    let mut seen = 0;
    let mut next = None;
    for (_, root) in roots {
        let Ok(id) = EventId::parse(&root) else { continue };
        if !may_read(&call.server, &reader, &view, &id)? {
            continue;
        }
        let Some(mut event) = load_client_event(&call.server, &id)? else { continue };
        bundle_into(&call.server, &view.room_id, &user, &mut event)?;
        let mine = event["sender"] == json!(user.as_str())
            || event["unsigned"]["m.relations"]["m.thread"]["current_user_participated"] == json!(true);
        if participated_only && !mine {
            continue;
        }
        seen += 1;
        if seen <= skip {
            continue;
        }
        if chunk.len() == limit {
            next = Some(format!("t{}", skip + limit));
            break;
        }
        chunk.push(event);
    }
    let mut out = json!({"chunk": chunk});
    if let Some(n) = next {
        out["next_batch"] = json!(n);
    }
    Ok(out)
}

/// Adds `unsigned.m.relations` to a client event: its thread (latest
/// reply, count, whether `user` took part), its latest edit by its own
/// sender, and the events referencing it.
pub fn bundle_into(server: &ClientDeps, room: &RoomId, user: &UserId, event: &mut Value) -> Result<(), Failure> {
    let Some(id) = event["event_id"].as_str().map(str::to_owned) else { return Ok(()) };
    let children = server.store.relations(room, &id, 0, u64::MAX, false, BUNDLE_SCAN)?;
    if children.is_empty() {
        return Ok(());
    }
    let sender = event["sender"].as_str().unwrap_or_default().to_owned();
    let mut thread: Option<(Value, usize, bool)> = None;
    let mut edit: Option<Value> = None;
    let mut references = BTreeSet::new();
    for (_, entry) in &children {
        let relevant = match entry.rel_type.as_str() {
            "m.thread" => true,
            "m.replace" => entry.sender == sender && edit.is_none(),
            "m.reference" => true,
            _ => false,
        };
        if !relevant {
            continue;
        }
        let Some(child) = still_related(server, entry)? else { continue };
        match entry.rel_type.as_str() {
            "m.thread" => {
                let t = thread.get_or_insert_with(|| (child.clone(), 0, false));
                t.1 += 1;
                t.2 |= entry.sender == user.as_str();
            }
            "m.replace" => edit = Some(child),
            _ => {
                references.insert(entry.child.clone());
            }
        }
    }
    let mut relations = serde_json::Map::new();
    if let Some((latest, count, participated)) = thread {
        let participated = participated || sender == user.as_str();
        relations.insert(
            "m.thread".into(),
            json!({"latest_event": latest, "count": count, "current_user_participated": participated}),
        );
    }
    if let Some(e) = edit {
        relations.insert("m.replace".into(), e);
    }
    if !references.is_empty() {
        let chunk: Vec<Value> = references.into_iter().map(|r| json!({"event_id": r})).collect();
        relations.insert("m.reference".into(), json!({"chunk": chunk}));
    }
    if !relations.is_empty() {
        event["unsigned"]["m.relations"] = Value::Object(relations);
    }
    Ok(())
}
