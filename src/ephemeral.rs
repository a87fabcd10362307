//! Typing and presence: kept in memory (they need not survive a restart),
//! with each change recorded as a side-stream entry so /sync notices it;
//! read receipts, which are stored, are recorded the same way.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::core::ids::{RoomId, UserId};
use crate::store::records::side_entry::Kind;
use crate::store::records::SideEntry;
use crate::store::{Batch, Op, Positions, Store, StoreError};
use crate::sys::now_ms;

#[derive(Debug, Clone)]
pub struct Presence {
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ms: i64,
}

#[derive(Default)]
pub struct Ephemeral {
    /// room → user → typing until (ms since the epoch).
    typing: Mutex<HashMap<RoomId, HashMap<UserId, i64>>>,
    presence: Mutex<HashMap<UserId, Presence>>,
}

impl Ephemeral {
    /// Sets or clears a user's typing; true when the set changed.
    pub fn set_typing(&self, room: &RoomId, user: &UserId, until: Option<i64>) -> bool {
        let mut map = self.typing.lock().expect("poisoned");
        let users = map.entry(room.clone()).or_default();
        match until {
            Some(t) => users.insert(user.clone(), t).is_none(),
            None => users.remove(user).is_some(),
        }
    }

    /// Users typing in `room` now (expired entries are dropped).
    pub fn typing(&self, room: &RoomId) -> Vec<UserId> {
        let now = now_ms();
        let mut map = self.typing.lock().expect("poisoned");
        let Some(users) = map.get_mut(room) else { return Vec::new() };
        users.retain(|_, until| *until > now);
        let mut out: Vec<UserId> = users.keys().cloned().collect();
        out.sort();
        out
    }

    /// Clears a typing entry whose time is up; true if one was cleared.
    pub fn expire_typing(&self, room: &RoomId, user: &UserId) -> bool {
        let now = now_ms();
        let mut map = self.typing.lock().expect("poisoned");
        match map.get_mut(room) {
            Some(users) if users.get(user).is_some_and(|t| *t <= now) => users.remove(user).is_some(),
            _ => false,
        }
    }

    pub fn set_presence(&self, user: &UserId, p: Presence) {
        self.presence.lock().expect("poisoned").insert(user.clone(), p);
    }

    pub fn presence(&self, user: &UserId) -> Option<Presence> {
        self.presence.lock().expect("poisoned").get(user).cloned()
    }

    /// An `m.presence` event for clients.
    pub fn presence_event(&self, user: &UserId) -> Option<Value> {
        let p = self.presence(user)?;
        let mut content = json!({
            "presence": p.state,
            "last_active_ago": (now_ms() - p.last_active_ms).max(0),
            "currently_active": p.state == "online",
        });
        if let Some(m) = p.status_msg {
            content["status_msg"] = json!(m);
        }
        Some(json!({"type": "m.presence", "sender": user.as_str(), "content": content}))
    }
}

/// Records a non-event change at a new stream position.
pub fn record_side(store: &dyn Store, positions: &std::sync::Arc<Positions>, kind: Kind) -> Result<(), StoreError> {
    let alloc = positions.allocate(1)?;
    let mut b = Batch::new();
    b.push(Op::SideEntry { pos: alloc.first(), entry: SideEntry { kind: Some(kind) } });
    store.write(b)
}

/// Stores a read receipt and records the change for sync.
pub fn store_receipt(
    store: &dyn Store,
    positions: &std::sync::Arc<Positions>,
    room: &RoomId,
    kind: &str,
    user: &UserId,
    mut r: crate::store::records::Receipt,
) -> Result<(), StoreError> {
    let alloc = positions.allocate(1)?;
    r.stream = alloc.first();
    let mut b = Batch::new();
    b.push(Op::PutReceipt { room: room.clone(), kind: kind.to_owned(), user: user.clone(), receipt: r }).push(
        Op::SideEntry { pos: alloc.first(), entry: SideEntry { kind: Some(Kind::ReceiptRoom(room.to_string())) } },
    );
    store.write(b)
}
