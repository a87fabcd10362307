//! Events fetched from other servers, put through the receive checks
//! (digest 4.6 steps 1-3; item 176).

use http::Method;
use serde_json::Value;

use crate::core::event::{check_hashes, redact, HashCheck, Pdu, RoomVersion, Schema};
use crate::core::ids::{EventId, ServerName};
use crate::core::json::Object;
use crate::federation::Node;
use crate::http::encode_segment;
use crate::room::RoomView;
use crate::sys::now_ms;

/// Receive steps 1-3: schema, required signatures, content hashes. A hash
/// mismatch keeps the redacted event (same id, same signatures).
pub async fn checked_pdu(node: &Node, version: &'static RoomVersion, mut obj: Object) -> Result<Pdu, String> {
    obj.remove("unsigned");
    if version.lm {
        // Only stored copies of the reference implementation carry it.
        obj.remove("event_id");
    }
    let pdu = Pdu::from_object(version, obj, Schema::Full).map_err(|e| format!("bad event: {e}"))?;
    node.keyring
        .verify_event(version, pdu.json(), now_ms())
        .await
        .map_err(|e| format!("signature check failed for {}: {e}", pdu.event_id()))?;
    match check_hashes(version, pdu.json()).map_err(|e| e.to_string())? {
        HashCheck::Match => Ok(pdu),
        HashCheck::Mismatch(which) => {
            tracing::info!(event = %pdu.event_id(), which, "content hash mismatch: keeping the redacted event");
            Pdu::from_object(version, redact(version, pdu.json()), Schema::Full)
                .map(Pdu::kept_redacted)
                .map_err(|e| e.to_string())
        }
    }
}

/// Checks every object of a JSON array, in order.
pub async fn checked_pdus(node: &Node, version: &'static RoomVersion, items: &[Value]) -> Result<Vec<Pdu>, String> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let obj = item.as_object().ok_or("an event is not an object")?.clone();
        out.push(checked_pdu(node, version, obj).await?);
    }
    Ok(out)
}

/// Whether to speak to `server` as an LM peer.
pub async fn lm_peer(node: &Node, server: &ServerName) -> bool {
    node.keyring.is_lm_peer(server, now_ms()).await
}

/// Events up to and including `from`, oldest first (E9), from the hub.
pub async fn backfill(node: &Node, room: &RoomView, from: &EventId, limit: usize) -> Result<Vec<Pdu>, String> {
    let path = format!(
        "{}/backfill/{}?v={}&limit={limit}",
        super::UNSTABLE,
        encode_segment(room.room_id.as_str()),
        encode_segment(from.as_str())
    );
    let lm = lm_peer(node, &room.hub).await;
    let resp = node.fed.request(&room.hub, Method::GET, &path, None, lm).await.map_err(|e| e.to_string())?;
    let body = resp.json(room.hub.as_str()).map_err(|e| e.to_string())?;
    let pdus = body.get("pdus").and_then(Value::as_array).ok_or("backfill answer has no pdus")?;
    let mut events = checked_pdus(node, room.version, pdus).await?;
    // Some implementations answer newest first; the list order is by links.
    order_by_links(&mut events);
    Ok(events)
}

/// Sorts a contiguous run of list events so each follows its prev event.
pub fn order_by_links(events: &mut Vec<Pdu>) {
    if events.len() < 2 {
        return;
    }
    let ids: std::collections::HashSet<EventId> = events.iter().map(|e| e.event_id().clone()).collect();
    let mut by_prev: std::collections::HashMap<EventId, usize> = std::collections::HashMap::new();
    let mut start = None;
    for (i, e) in events.iter().enumerate() {
        match e.prev_events().first() {
            Some(p) if ids.contains(p) => {
                by_prev.insert(p.clone(), i);
            }
            _ => start = Some(i),
        }
    }
    let Some(mut at) = start else { return };
    let mut order = vec![at];
    while let Some(&next) = by_prev.get(events[at].event_id()) {
        order.push(next);
        at = next;
    }
    if order.len() == events.len() {
        let mut taken: Vec<Option<Pdu>> = std::mem::take(events).into_iter().map(Some).collect();
        *events = order.into_iter().filter_map(|i| taken[i].take()).collect();
    }
}
