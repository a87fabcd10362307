//! A newest-first walk over the events of several rooms together, by
//! stream position: what search and the notification list read. Each room
//! is read a page at a time; below the highest last entry of a full page
//! some room may hold more, so a round hands out only what is above it.

use std::collections::VecDeque;

use crate::core::ids::RoomId;
use crate::store::{Store, StoreResult, StreamEntry};

/// Entries read per room and round.
const PAGE: usize = 100;

pub struct NewestFirst<'a> {
    store: &'a dyn Store,
    rooms: Vec<RoomId>,
    /// Entries below this position are still to be read.
    before: u64,
    ready: VecDeque<StreamEntry>,
}

impl<'a> NewestFirst<'a> {
    /// Entries of `rooms` below stream position `before`.
    pub fn new(store: &'a dyn Store, rooms: Vec<RoomId>, before: u64) -> Self {
        NewestFirst { store, rooms, before, ready: VecDeque::new() }
    }

    pub fn next(&mut self) -> StoreResult<Option<StreamEntry>> {
        while self.ready.is_empty() && self.before > 0 {
            let mut entries = Vec::new();
            let mut frontier = 0;
            for room in &self.rooms {
                let page = self.store.room_stream(room, 0, self.before.saturating_sub(1), PAGE)?;
                if page.len() == PAGE {
                    frontier = frontier.max(page.last().map_or(0, |e| e.pos));
                }
                entries.extend(page);
            }
            if entries.is_empty() {
                self.before = 0;
                break;
            }
            entries.retain(|e| e.pos >= frontier);
            entries.sort_by_key(|e| std::cmp::Reverse(e.pos));
            self.ready.extend(entries);
            self.before = frontier;
        }
        Ok(self.ready.pop_front())
    }
}
