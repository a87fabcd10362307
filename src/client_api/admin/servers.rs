//! Other servers this one delivers to: Synapse's federation destination
//! paths, with lmx's delivery state in each entry (backoff, the last
//! error, the queue's depth, the oldest undelivered event).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{ok, paging, server_name, Reply};
use crate::client_api::Call;
use crate::core::ids::ServerName;
use crate::federation::DeliveryStatus;
use crate::wire::Failure;

/// Every destination known, with how delivery to it goes (read once):
/// servers in this server's rooms, those with queued work and those a
/// worker delivers to.
pub(super) fn known(call: &Call) -> Result<BTreeMap<ServerName, DeliveryStatus>, Failure> {
    let mut all: BTreeMap<ServerName, DeliveryStatus> = call.server.remote.deliveries().into_iter().collect();
    let mut add = |d: ServerName| {
        all.entry(d).or_default();
    };
    call.server.remote.destinations_with_work()?.into_iter().for_each(&mut add);
    for view in super::rooms::views(call) {
        view.state.joined_members().map(|u| u.server_name()).for_each(&mut add);
    }
    all.remove(&call.server.name);
    Ok(all)
}

/// `idle` (nothing sent since the start), `ok`, or `backing off`.
pub(super) fn state_name(s: &DeliveryStatus) -> &'static str {
    match () {
        _ if s.failures > 0 => "backing off",
        _ if s.last_success_ts > 0 => "ok",
        _ => "idle",
    }
}

/// A destination in Synapse's shape, with lmx's delivery state.
pub(super) fn entry(call: &Call, dest: &ServerName, s: &DeliveryStatus) -> Result<Value, Failure> {
    let backlog = call.server.remote.backlog(dest)?;
    let now = crate::sys::now_ms();
    // The event's own timestamp is its sender's word: shown, not trusted
    // for the lag, which counts from when this server saw the queue fill.
    let oldest = backlog
        .oldest_event
        .as_ref()
        .map(|(event, room, ts)| json!({"event_id": event, "room_id": room, "origin_server_ts": ts}));
    let waiting = backlog.depth > 0 && s.waiting_since_ts > 0;
    let lag_ms = if waiting { now.saturating_sub(s.waiting_since_ts).max(0) } else { 0 };
    Ok(json!({
        "destination": dest.as_str(),
        "retry_last_ts": if s.failures > 0 { s.last_failure_ts } else { 0 },
        "retry_interval": if s.failures > 0 { s.retry_interval_ms } else { 0 },
        "failure_ts": (s.failing_since_ts > 0).then_some(s.failing_since_ts),
        "last_successful_stream_ordering": (backlog.acked > 0).then_some(backlog.acked),
        "state": state_name(s),
        "failures": s.failures,
        "last_error": s.last_error,
        "last_success_ts": (s.last_success_ts > 0).then_some(s.last_success_ts),
        "retry_at_ts": (s.retry_at_ts > 0).then_some(s.retry_at_ts),
        "last_round_trip_ms": s.last_round_trip_ms,
        "queue_depth": backlog.depth,
        "queue_depth_capped": backlog.depth >= crate::federation::BACKLOG_COUNT_LIMIT,
        "lag_positions": backlog.lag_positions,
        "lag_ms": lag_ms,
        "waiting_since_ts": waiting.then_some(s.waiting_since_ts),
        "oldest_undelivered": oldest,
    }))
}

/// A destination named in a path, with its delivery state.
pub(super) fn known_one(call: &Call, dest: &str) -> Result<(ServerName, DeliveryStatus), Failure> {
    let dest = server_name(dest)?;
    let status = known(call)?.remove(&dest).ok_or_else(|| Failure::not_found("Unknown destination"))?;
    Ok((dest, status))
}

/// `GET /v1/federation/destinations`: `from`, `limit`, `destination`
/// (substring), `order_by` (`destination`, `retry_last_ts`,
/// `retry_interval`, `failure_ts`, `last_successful_stream_ordering`),
/// `dir`.
pub fn list(call: &Call) -> Result<Reply, Failure> {
    let (from, limit) = paging(call)?;
    let filter = crate::http::query_get(&call.query, "destination").map(str::to_lowercase);
    let mut entries: Vec<Value> = known(call)?
        .iter()
        .filter(|(d, _)| filter.as_ref().is_none_or(|f| d.as_str().to_lowercase().contains(f.as_str())))
        .map(|(d, s)| entry(call, d, s))
        .collect::<Result<_, _>>()?;
    let order = crate::http::query_get(&call.query, "order_by").unwrap_or("destination");
    match order {
        "destination" => {}
        "retry_last_ts" | "retry_interval" | "failure_ts" | "last_successful_stream_ordering" => {
            entries.sort_by_key(|e| e[order].as_i64().unwrap_or(0))
        }
        other => return Err(Failure::invalid_param(format!("order_by {other:?} is not supported"))),
    }
    if super::backwards(call)? {
        entries.reverse();
    }
    let total = entries.len();
    let page: Vec<Value> = entries.into_iter().skip(from).take(limit).collect();
    let mut out = json!({"destinations": page, "total": total});
    if let Some(next) = super::next_from(from, limit, total) {
        out["next_token"] = json!(next.to_string());
    }
    ok(out)
}

pub fn get(call: &Call, dest: &str) -> Result<Reply, Failure> {
    let (dest, status) = known_one(call, dest)?;
    ok(entry(call, &dest, &status)?)
}

/// `GET /v1/federation/destinations/{dest}/rooms`: the rooms it shares
/// with this server, each with the last stream position delivered to it.
pub fn rooms(call: &Call, dest: &str) -> Result<Reply, Failure> {
    let (dest, _) = known_one(call, dest)?;
    let (from, limit) = paging(call)?;
    let acked = call.server.remote.backlog(&dest)?.acked;
    let mut rooms = Vec::new();
    for view in super::rooms::views(call) {
        if !view.state.joined_members().any(|u| u.server_name() == dest) {
            continue;
        }
        let delivered = call.server.store.room_stream(&view.room_id, 0, acked, 1)?.first().map_or(0, |e| e.pos);
        rooms.push(json!({"room_id": view.room_id.as_str(), "stream_ordering": delivered}));
    }
    rooms.sort_by(|a, b| a["room_id"].as_str().cmp(&b["room_id"].as_str()));
    let total = rooms.len();
    let page: Vec<Value> = rooms.into_iter().skip(from).take(limit).collect();
    let mut out = json!({"rooms": page, "total": total});
    if let Some(next) = super::next_from(from, limit, total) {
        out["next_token"] = json!(next.to_string());
    }
    ok(out)
}

/// `POST /v1/federation/destinations/{dest}/reset_connection`: retries a
/// destination that is backing off, now.
pub fn reset_connection(call: &Call, dest: &str) -> Result<Reply, Failure> {
    let (dest, status) = known_one(call, dest)?;
    if status.failures == 0 {
        return Err(Failure::BadRequest("The retry timing does not need to be reset for this destination.".into()));
    }
    call.server.remote.retry_now(&dest);
    ok(json!({}))
}
