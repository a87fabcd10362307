//! A newest-first walk over the events of several rooms together, by
//! stream position: what search and the notification list read. Each room
//! is read a page at a time, and only when the walk has used up the page
//! it read before, so every entry is read once.

use std::collections::{BinaryHeap, VecDeque};

use crate::core::ids::RoomId;
use crate::store::{Store, StoreResult, StreamEntry};

/// Entries read per room at a time.
const PAGE: usize = 50;

struct RoomPages {
    room: RoomId,
    /// Read and not yet handed out, newest first.
    ready: VecDeque<StreamEntry>,
    /// Entries below this position are still to be read (0: none left).
    before: u64,
}

impl RoomPages {
    fn refill(&mut self, store: &dyn Store) -> StoreResult<()> {
        if self.ready.is_empty() && self.before > 0 {
            let page = store.room_stream(&self.room, 0, self.before.saturating_sub(1), PAGE)?;
            self.before = if page.len() == PAGE { page.last().map_or(0, |e| e.pos) } else { 0 };
            self.ready.extend(page);
        }
        Ok(())
    }
}

pub struct NewestFirst<'a> {
    store: &'a dyn Store,
    rooms: Vec<RoomPages>,
    /// Each room's newest unread entry, by position (room index beside).
    heads: BinaryHeap<(u64, usize)>,
    started: bool,
}

impl<'a> NewestFirst<'a> {
    /// Entries of `rooms` below stream position `before`.
    pub fn new(store: &'a dyn Store, rooms: Vec<RoomId>, before: u64) -> Self {
        let rooms = rooms.into_iter().map(|room| RoomPages { room, ready: VecDeque::new(), before }).collect();
        NewestFirst { store, rooms, heads: BinaryHeap::new(), started: false }
    }

    fn push_head(&mut self, i: usize) -> StoreResult<()> {
        self.rooms[i].refill(self.store)?;
        if let Some(e) = self.rooms[i].ready.front() {
            self.heads.push((e.pos, i));
        }
        Ok(())
    }

    pub fn next(&mut self) -> StoreResult<Option<StreamEntry>> {
        if !self.started {
            self.started = true;
            for i in 0..self.rooms.len() {
                self.push_head(i)?;
            }
        }
        let Some((_, i)) = self.heads.pop() else { return Ok(None) };
        let entry = self.rooms[i].ready.pop_front();
        self.push_head(i)?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::EventId;
    use crate::store::{Batch, KvStore, MemKv, Op};

    #[test]
    fn rooms_merge_newest_first_and_each_entry_once() {
        let store = KvStore::new(MemKv::new());
        let rooms: Vec<RoomId> = (0..3).map(|i| RoomId::parse(&format!("!r{i}:x")).unwrap()).collect();
        let mut b = Batch::new();
        // Room i holds the positions congruent to i mod 3.
        for pos in 1..=300u64 {
            let room = rooms[(pos % 3) as usize].clone();
            let event = EventId::parse(&format!("$e{pos}")).unwrap();
            b.push(Op::StreamEntry(StreamEntry { pos, room, event }));
        }
        store.write(b).unwrap();
        let mut walk = NewestFirst::new(&store, rooms.clone(), 250);
        let mut seen = Vec::new();
        while let Some(e) = walk.next().unwrap() {
            seen.push(e.pos);
        }
        assert_eq!(seen, (1..250).rev().collect::<Vec<_>>());
        let mut two = NewestFirst::new(&store, rooms[1..].to_vec(), u64::MAX);
        assert_eq!(two.next().unwrap().map(|e| e.pos), Some(299));
        assert_eq!(two.next().unwrap().map(|e| e.pos), Some(298));
    }
}
