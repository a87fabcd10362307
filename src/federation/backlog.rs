//! What a destination has not been sent yet, read from its queue (for the
//! status page, the admin API and metrics).

use crate::core::ids::ServerName;
use crate::core::json::{self, NumberPolicy};
use crate::federation::Node;
use crate::store::records::queue_item::Item;
use crate::store::StoreError;

/// What a destination has not been sent yet.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    /// Everything up to this queue (stream) position was delivered.
    pub acked: u64,
    /// Items waiting, counted up to `BACKLOG_COUNT_LIMIT`.
    pub depth: usize,
    /// The oldest waiting event: its id, room and `origin_server_ts`.
    pub oldest_event: Option<(String, String, i64)>,
    /// Stream positions written since the last delivered one.
    pub lag_positions: u64,
}

/// Queue items counted for a backlog before the count stops (it reads them).
pub const BACKLOG_COUNT_LIMIT: usize = 10_000;

/// What `dest` has not been sent yet, read from its queue.
pub fn backlog(node: &Node, dest: &ServerName) -> Result<Backlog, StoreError> {
    let state = node.store.destination(dest)?;
    let items = node.store.queue(dest, state.acked, BACKLOG_COUNT_LIMIT)?;
    let mut oldest_event = None;
    for (_, item) in items.iter().take(64) {
        if let Some(Item::EventId(id)) = &item.item {
            let Ok(event) = crate::core::ids::EventId::parse(id) else { continue };
            if let Some(rec) = node.store.event(&event)? {
                let pdu = json::parse(&rec.json, NumberPolicy::Ieee754).unwrap_or_default();
                let room = pdu["room_id"].as_str().unwrap_or_default().to_owned();
                oldest_event = Some((id.clone(), room, pdu["origin_server_ts"].as_i64().unwrap_or(0)));
                break;
            }
        }
    }
    let lag_positions = match items.last() {
        Some(_) => node.positions.watermark().saturating_sub(state.acked),
        None => 0,
    };
    Ok(Backlog { acked: state.acked, depth: items.len(), oldest_event, lag_positions })
}
