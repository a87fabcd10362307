//! lmx's own admin paths (`/_lmx/admin/v1/…`): the server's facts (what the
//! status page shows), destinations with their backlogs and a retry, the
//! linked list around an event, cache flushes and the log filter.

use std::time::Instant;

use http::Method;
use serde_json::{json, Value};

use super::{body, ok, Reply};
use crate::admin::status::{DestinationLine, Facts, RoomLine};
use crate::client_api::Call;
use crate::core::ids::{EventId, RoomId};
use crate::wire::Failure;

pub async fn dispatch(method: &Method, rest: &[&str], call: Call, started: Instant) -> Result<Reply, Failure> {
    use Method as M;
    match (rest, method) {
        (["server"], &M::GET) => ok(facts_json(&facts(&call, started)?)),
        (["destinations"], &M::GET) => {
            let all: Vec<Value> = super::servers::known(&call)?
                .iter()
                .map(|(d, s)| super::servers::entry(&call, d, s))
                .collect::<Result<_, _>>()?;
            ok(json!({"destinations": all}))
        }
        (["destinations", dest], &M::GET) => {
            let mut entry = super::servers::get(&call, dest)?.1;
            entry["rooms"] = super::servers::rooms(&call, dest)?.1["rooms"].take();
            ok(entry)
        }
        (["destinations", dest, "retry"], &M::POST) => {
            let (dest, _) = super::servers::known_one(&call, dest)?;
            call.server.remote.retry_now(&dest);
            ok(json!({}))
        }
        (["caches", "flush"], &M::POST) => {
            let (resolver, keys) = call.server.remote.forget_caches();
            ok(json!({"resolver_entries": resolver, "key_entries": keys}))
        }
        (["log_level"], &M::GET) => ok(json!({"filter": crate::admin::logging::current_filter()})),
        (["log_level"], &M::PUT) => {
            let filter = body(&call)?
                .get("filter")
                .and_then(Value::as_str)
                .ok_or_else(|| Failure::MissingParam("filter".into()))?;
            crate::admin::logging::set_filter(filter).map_err(Failure::invalid_param)?;
            tracing::info!(%filter, "log filter changed through the admin API");
            ok(json!({"filter": filter}))
        }
        (["rooms", room, "list"], &M::GET) => list_around(&call, room),
        (["rooms", room, "purge"], &M::POST) => purge(&call, room).await,
        (["server"] | ["destinations"] | ["destinations", _] | ["log_level"] | ["rooms", _, "list" | "purge"], _)
        | (["destinations", _, "retry"] | ["caches", "flush"], _) => Err(Failure::MethodNotAllowed),
        _ => Err(Failure::Unrecognized),
    }
}

/// `POST rooms/{room}/purge {"keep": N}`: a followed room's cached
/// history down to its newest `keep` events (default: the follower's
/// `timeline_cache`); the hub keeps the room's record, and a client paging
/// back fetches what was dropped from it again.
async fn purge(call: &Call, room: &str) -> Result<Reply, Failure> {
    let room = RoomId::parse(room).map_err(|_| Failure::not_found("Room not found"))?;
    let keep = match body(call)?.get("keep") {
        None => call.server.config.follower.timeline_cache,
        Some(v) => v.as_u64().filter(|k| *k >= 1).ok_or_else(|| Failure::invalid_param("keep must be at least 1"))?,
    };
    let handle = call.server.rooms.find(&room)?.ok_or_else(|| Failure::not_found("Room not found"))?;
    let purged = handle.ask(|reply| crate::room::RoomCmd::Purge { keep, reply }).await?;
    tracing::info!(%room, keep, purged, "room cache purged through the admin API");
    ok(json!({"purged": purged, "kept": keep}))
}

/// Most list entries one request shows.
const MAX_AROUND: u64 = 200;

/// `GET rooms/{room}/list?around={event}&limit=N`: the room's linked list
/// around an event (the newest events without `around`), each entry with
/// its position and `prev_events`.
fn list_around(call: &Call, room: &str) -> Result<Reply, Failure> {
    let room = RoomId::parse(room).map_err(|_| Failure::not_found("Room not found"))?;
    let view = call.server.rooms.find_view(&room)?.ok_or_else(|| Failure::not_found("Room not found"))?;
    let limit = match crate::http::query_get(&call.query, "limit") {
        None => 10,
        Some(l) => l.parse::<u64>().map_err(|_| Failure::invalid_param("limit must be a number"))?.clamp(1, MAX_AROUND),
    };
    let store = &call.server.store;
    let from = match crate::http::query_get(&call.query, "around") {
        None => view.length.saturating_sub(limit),
        Some(e) => {
            let id = EventId::parse(e).map_err(|_| Failure::invalid_param("around must be an event id"))?;
            let rec = store.event(&id)?.filter(|r| r.room_id == room.as_str() && !r.outlier);
            rec.ok_or_else(|| Failure::not_found("The event is not in this room's list"))?
                .index
                .saturating_sub(limit / 2)
        }
    };
    let to = (from + limit).min(view.length);
    let mut entries = Vec::new();
    for (i, id) in (from..to).zip(store.list(&room, from, to)?) {
        let Some(rec) = store.event(&id)? else { continue };
        let pdu = crate::core::json::parse(&rec.json, crate::core::json::NumberPolicy::Ieee754).unwrap_or_default();
        entries.push(json!({
            "index": i, "event_id": id.as_str(), "type": pdu["type"], "sender": pdu["sender"],
            "state_key": pdu.get("state_key"), "origin_server_ts": pdu["origin_server_ts"],
            "prev_events": pdu["prev_events"], "stream": rec.stream,
        }));
    }
    ok(json!({
        "room_id": room.as_str(), "hub": view.hub.as_str(), "length": view.length,
        "tail": view.tail.as_ref().map(|t| t.as_str()), "entries": entries,
    }))
}

/// What the status page and `GET server` show.
pub fn facts(call: &Call, started: Instant) -> Result<Facts, Failure> {
    let server = &call.server;
    let views = super::rooms::views(call);
    let mut rooms: Vec<RoomLine> = views
        .iter()
        .filter(|v| v.is_hub(&server.name))
        .map(|v| {
            let joined: Vec<_> = v.state.joined_members().collect();
            let servers: std::collections::BTreeSet<_> = joined.iter().map(|u| u.server_name()).collect();
            let name = crate::core::rooms::StateView::get(&*v.state, "m.room.name", "")
                .and_then(|e| e.content().get("name").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            RoomLine {
                room_id: v.room_id.to_string(),
                name,
                version: v.version.id.to_owned(),
                joined_members: joined.len(),
                servers: servers.len(),
                events: v.length,
            }
        })
        .collect();
    rooms.sort_by(|a, b| a.room_id.cmp(&b.room_id));
    let now = crate::sys::now_ms();
    let mut destinations = Vec::new();
    for (dest, status) in super::servers::known(call)? {
        let e = super::servers::entry(call, &dest, &status)?;
        destinations.push(DestinationLine {
            destination: dest.to_string(),
            state: e["state"].as_str().unwrap_or_default().to_owned(),
            failures: e["failures"].as_u64().unwrap_or(0) as u32,
            last_error: e["last_error"].as_str().unwrap_or_default().to_owned(),
            queue_depth: e["queue_depth"].as_u64().unwrap_or(0) as usize,
            lag_positions: e["lag_positions"].as_u64().unwrap_or(0),
            lag_secs: e["lag_ms"].as_u64().unwrap_or(0) / 1000,
            retry_in_secs: e["retry_at_ts"].as_i64().map_or(0, |t| (t.saturating_sub(now).max(0) / 1000) as u64),
        });
    }
    Ok(Facts {
        server_name: server.name.to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        mode: format!("{:?}", server.config.mode).to_lowercase(),
        uptime_secs: started.elapsed().as_secs(),
        store_bytes: server.store.size_on_disk(),
        rooms_total: views.len(),
        rooms,
        destinations,
        pending_lpdus: server.store.pending_lpdus()?.len(),
        errors: crate::admin::recent::recent(),
    })
}

fn facts_json(f: &Facts) -> Value {
    json!({
        "server_name": f.server_name, "version": f.version, "mode": f.mode, "uptime_secs": f.uptime_secs,
        "store_bytes": f.store_bytes, "rooms_total": f.rooms_total, "pending_lpdus": f.pending_lpdus,
        "rooms_hubbed": f.rooms.iter().map(|r| json!({
            "room_id": r.room_id, "name": r.name, "version": r.version, "joined_members": r.joined_members,
            "servers": r.servers, "events": r.events,
        })).collect::<Vec<_>>(),
        "destinations": f.destinations.iter().map(|d| json!({
            "destination": d.destination, "state": d.state, "failures": d.failures, "queue_depth": d.queue_depth,
            "lag_positions": d.lag_positions, "last_error": d.last_error,
        })).collect::<Vec<_>>(),
        "recent_errors": f.errors.iter().map(|e| json!({
            "ts": e.ts, "level": e.level, "target": e.target, "text": e.text,
        })).collect::<Vec<_>>(),
    })
}
