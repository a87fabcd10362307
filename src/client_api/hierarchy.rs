//! Spaces: `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`, a walk from a
//! space through its `m.space.child` events, breadth first. Rooms this
//! server holds are read here; others are asked of the servers their
//! `via` names (federation `hierarchy`). A room shows when the user is in
//! it or invited, or when it is open to peek (public, knockable or
//! world-readable).

use std::collections::{BTreeSet, VecDeque};

use serde_json::{json, Value};

use super::Call;
use crate::core::ids::{RoomId, ServerName, UserId};
use crate::http::query_get;
use crate::wire::Failure;

/// Rooms looked at in one walk, at most.
const MAX_WALK: usize = 500;
/// Remote spaces asked about in one walk, at most.
const MAX_REMOTE: usize = 20;

pub async fn hierarchy(call: Call, room: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let user = user.clone();
    let root = RoomId::parse(room).map_err(|e| Failure::invalid_param(e.to_string()))?;
    let suggested_only = query_get(&call.query, "suggested_only") == Some("true");
    let max_depth: usize = query_get(&call.query, "max_depth").and_then(|d| d.parse().ok()).unwrap_or(10).min(10);
    let limit: usize = query_get(&call.query, "limit").and_then(|l| l.parse().ok()).unwrap_or(50).clamp(1, 100);
    let skip: usize = match query_get(&call.query, "from") {
        None => 0,
        Some(t) => {
            t.strip_prefix('h').and_then(|n| n.parse().ok()).ok_or_else(|| Failure::invalid_param("bad from token"))?
        }
    };
    // A space not held here is asked of the server its id names.
    let root_via: Vec<ServerName> =
        root.as_str().split_once(':').and_then(|(_, s)| ServerName::parse(s).ok()).into_iter().collect();
    let mut queue: VecDeque<(RoomId, usize, Vec<ServerName>)> = VecDeque::from([(root.clone(), 0, root_via)]);
    let mut seen = BTreeSet::from([root.clone()]);
    let mut found: Vec<Value> = Vec::new();
    let mut remote_asks = 0;
    while let Some((id, depth, via)) = queue.pop_front() {
        if found.len() > skip + limit || seen.len() > MAX_WALK {
            break;
        }
        let entry = match local_entry(&call, &user, &id)? {
            Some(e) => Some(e),
            None if remote_asks < MAX_REMOTE && !via.is_empty() => {
                remote_asks += 1;
                call.server.remote.hierarchy(&via, &id, suggested_only).await.ok()
            }
            None => None,
        };
        let Some(entry) = entry else {
            if id == root {
                return Err(Failure::forbidden("You cannot see this space"));
            }
            continue;
        };
        if depth < max_depth {
            for child in entry["children_state"].as_array().into_iter().flatten() {
                if suggested_only && child["content"]["suggested"] != json!(true) {
                    continue;
                }
                let Some(child_id) = child["state_key"].as_str().and_then(|s| RoomId::parse(s).ok()) else { continue };
                let via: Vec<ServerName> = child["content"]["via"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter_map(|s| ServerName::parse(s).ok())
                    .take(5)
                    .collect();
                if seen.insert(child_id.clone()) {
                    queue.push_back((child_id, depth + 1, via));
                }
            }
        }
        found.push(entry);
    }
    let more = found.len() > skip + limit;
    let rooms: Vec<Value> = found.into_iter().skip(skip).take(limit).collect();
    let mut out = json!({"rooms": rooms});
    if more {
        out["next_batch"] = json!(format!("h{}", skip + limit));
    }
    Ok(out)
}

/// A room held here that `user` may see, as a hierarchy entry.
fn local_entry(call: &Call, user: &UserId, id: &RoomId) -> Result<Option<Value>, Failure> {
    let Some(view) = call.server.rooms.find_view(id)? else { return Ok(None) };
    let member =
        call.server.store.membership(user, id)?.is_some_and(|m| matches!(m.membership.as_str(), "join" | "invite"));
    if !member && !crate::room::summary::open_to_peek(&view) {
        return Ok(None);
    }
    Ok(Some(crate::room::summary::hierarchy_entry(&view)))
}
