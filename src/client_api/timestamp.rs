//! `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`: the event
//! closest to a time, in the direction asked, among those this server holds
//! and the user may read. The list is in sequencing order, which follows
//! time closely: a binary search finds the spot, a bounded walk the event.

use serde_json::{json, Value};

use super::Call;
use crate::core::ids::EventId;
use crate::http::query_get;
use crate::wire::Failure;

/// Events looked at around the spot the search found.
const WALK: u64 = 200;

pub async fn timestamp_to_event(call: Call, room: &str) -> Result<Value, Failure> {
    let view = super::events::readable_room(&call, room)?;
    let (user, _) = call.who()?;
    let user = user.clone();
    let ts: i64 = query_get(&call.query, "ts")
        .ok_or_else(|| Failure::MissingParam("ts is required".into()))?
        .parse()
        .map_err(|_| Failure::invalid_param("ts must be an integer"))?;
    let forward = match query_get(&call.query, "dir") {
        Some("f") => true,
        Some("b") => false,
        Some(_) => return Err(Failure::invalid_param("dir must be f or b")),
        None => return Err(Failure::MissingParam("dir is required".into())),
    };
    let store = &call.server.store;
    let at = |i: u64| -> Result<Option<(EventId, i64)>, Failure> {
        let Some(id) = store.list(&view.room_id, i, i + 1)?.into_iter().next() else { return Ok(None) };
        let Some(rec) = store.event(&id)?.filter(|r| !r.pruned && !r.soft_failed) else { return Ok(None) };
        let ts = crate::core::json::parse(&rec.json, crate::core::json::NumberPolicy::Ieee754)
            .ok()
            .and_then(|v| v.get("origin_server_ts").and_then(Value::as_i64));
        Ok(ts.map(|t| (id, t)))
    };
    // The first position whose event is at or after `ts` (events this
    // server does not hold count as earlier).
    let (mut lo, mut hi) = (0u64, view.length);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match at(mid)? {
            Some((_, t)) if t >= ts => hi = mid,
            _ => lo = mid + 1,
        }
    }
    let reader = call.server.remote.reader(&view, &user).await?;
    let candidates: Box<dyn Iterator<Item = u64>> = if forward {
        Box::new(lo.saturating_sub(WALK / 4)..(lo + WALK).min(view.length))
    } else {
        Box::new((lo.saturating_sub(WALK)..(lo + WALK / 4).min(view.length)).rev())
    };
    let mut best: Option<(EventId, i64)> = None;
    for i in candidates {
        let Some((id, t)) = at(i)? else { continue };
        let fits = if forward { t >= ts } else { t <= ts };
        let closer = best.as_ref().is_none_or(|(_, b)| if forward { t < *b } else { t > *b });
        if fits && closer && super::messages::may_read(&call.server, &reader, &view, &id)? {
            best = Some((id, t));
        }
    }
    let (id, t) = best.ok_or_else(|| Failure::not_found("No event found in that direction"))?;
    Ok(json!({"event_id": id.as_str(), "origin_server_ts": t}))
}
