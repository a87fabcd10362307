//! Positions in this server's stream: handed out to writers in order, and
//! published to readers only once every smaller position is durable.
//!
//! Room writers run concurrently, so position 7 may become durable before 6.
//! A reader (sync, an outbound queue) that read up to 7 would then skip 6
//! for ever; readers therefore see the *watermark*: the highest position
//! below which nothing is still in flight.
//!
//! When other processes write to the same store (PostgreSQL), positions come
//! from the store (`SharedStream`) and the watermark also waits for theirs:
//! each writer records in the store the lowest position it has in flight,
//! and the watermark is bounded by the others' lowest. A writer that finds
//! itself alone reserves positions ahead, as with one process, and gives the
//! reserve up when another writer appears (an unused reserve would hold the
//! other's readers back).

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

use super::{Batch, Op, Store, StoreResult};

/// Positions reserved per high-water write, so allocation rarely writes.
const RESERVE: u64 = 4096;

pub struct Positions {
    store: Arc<dyn Store>,
    shared: Option<Arc<dyn SharedStream>>,
    /// Serialises a shared stream's allocations, so the generation each
    /// returns matches the positions in flight (see `SharedStream::settle`)
    /// without holding `inner` over a round trip to the store: other
    /// writers' news is applied under `inner` from the store's own threads.
    allocating: Mutex<()>,
    inner: Mutex<Inner>,
    watermark: watch::Sender<u64>,
}

struct Inner {
    next: u64,
    reserved_to: u64,
    in_flight: BTreeSet<u64>,
    /// Shared streams: the store's count of this writer's allocations, as
    /// of the last one; the other writers as last heard of; positions
    /// reserved while alone (`reserve_next..=reserve_end`, empty when
    /// `reserve_next` is past the end).
    generation: u64,
    others: Others,
    reserve_next: u64,
    reserve_end: u64,
    /// While a shared stream's allocation is on its way: how far others had
    /// settled when it started. Its positions are above that, and news
    /// from other writers arriving meanwhile may already count them.
    allocation_pending: Option<u64>,
}

/// Positions kept in a store that several processes write to.
pub trait SharedStream: Send + Sync {
    /// Hands out `n` (≥ 1) consecutive positions and, in the same step,
    /// records the first as this writer's lowest in flight unless it
    /// already has one.
    fn allocate(&self, n: u64) -> StoreResult<Handout>;
    /// Records this writer's lowest position in flight (`None`: none),
    /// unless it allocated again after `generation`: that record would be
    /// too high. Need not wait; a record left out only holds readers back.
    fn settle(&self, generation: u64, lowest_in_flight: Option<u64>);
    /// The other writers, now.
    fn others(&self) -> StoreResult<Others>;
    /// Tells `watcher` whenever another writer settles or appears, while
    /// it lives. A stream has one `Positions` at a time: a second is
    /// refused while the first lives.
    fn watch_others(&self, watcher: Weak<dyn OthersWatcher>) -> StoreResult<()>;
}

/// What hears of a shared stream's other writers.
pub trait OthersWatcher: Send + Sync {
    fn others_moved(&self, others: Others);
}

/// The other writers of a shared stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Others {
    /// Every position up to this one that another writer holds has settled.
    pub settled: u64,
    /// Whether there are any.
    pub writing: bool,
}

/// Positions a shared stream handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handout {
    pub first: u64,
    pub last: u64,
    /// Counts this writer's allocations (see `SharedStream::settle`).
    pub generation: u64,
    /// The other writers when these were handed out.
    pub others: Others,
}

/// Positions a writer holds until its batch is durable; dropping it
/// releases them (after a failed write the gap is simply never filled).
pub struct Allocation {
    range: RangeInclusive<u64>,
    owner: Arc<Positions>,
}

impl Allocation {
    pub fn positions(&self) -> RangeInclusive<u64> {
        self.range.clone()
    }

    pub fn first(&self) -> u64 {
        *self.range.start()
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.owner.release(self.range.clone());
    }
}

impl Positions {
    pub fn open(store: Arc<dyn Store>) -> StoreResult<Arc<Self>> {
        let shared = store.shared_stream();
        // Positions up to the recorded high water may have been used.
        let others = match &shared {
            Some(stream) => stream.others()?,
            None => Others { settled: store.position_high_water()?, writing: false },
        };
        let high = others.settled;
        let inner = Inner {
            next: high + 1,
            reserved_to: high,
            in_flight: BTreeSet::new(),
            generation: 0,
            others,
            reserve_next: 1,
            reserve_end: 0,
            allocation_pending: None,
        };
        let positions = Arc::new(Positions {
            store,
            shared,
            allocating: Mutex::new(()),
            inner: Mutex::new(inner),
            watermark: watch::channel(high).0,
        });
        if let Some(stream) = &positions.shared {
            let watcher: Weak<dyn OthersWatcher> = Arc::downgrade(&positions) as Weak<Positions>;
            stream.watch_others(watcher)?;
        }
        Ok(positions)
    }

    /// Hands out `n` (≥ 1) consecutive positions.
    pub fn allocate(self: &Arc<Self>, n: u64) -> StoreResult<Allocation> {
        let n = n.max(1);
        let (first, last, mut inner) = match &self.shared {
            Some(stream) => {
                let _allocating = self.allocating.lock().expect("poisoned");
                let ask = {
                    let mut inner = self.inner.lock().expect("poisoned");
                    if inner.reserve_next + n - 1 <= inner.reserve_end {
                        // The store's record of this writer is at or below
                        // the reserve's next position already.
                        let first = inner.reserve_next;
                        inner.reserve_next += n;
                        inner.in_flight.extend(first..first + n);
                        return Ok(Allocation { range: first..=first + n - 1, owner: self.clone() });
                    }
                    inner.allocation_pending = Some(inner.others.settled);
                    if inner.others.writing {
                        n
                    } else {
                        n + RESERVE
                    }
                };
                let handout = stream.allocate(ask);
                let mut inner = self.inner.lock().expect("poisoned");
                inner.allocation_pending = None;
                let handout = handout?;
                // A settlement recorded meanwhile carried the previous
                // generation, so the store ignored it.
                inner.generation = handout.generation;
                // Others heard of meanwhile stay (the handout's look may be
                // the older); only the listener's looks say they left.
                inner.others = Others {
                    settled: inner.others.settled.max(handout.others.settled),
                    writing: handout.others.writing || inner.others.writing,
                };
                let last = handout.first + n - 1;
                // Kept only while alone; otherwise the rest is left unused.
                (inner.reserve_next, inner.reserve_end) =
                    if inner.others.writing { (1, 0) } else { (last + 1, handout.last) };
                (handout.first, last, inner)
            }
            None => {
                let mut inner = self.inner.lock().expect("poisoned");
                let first = inner.next;
                let last = first + n - 1;
                if last > inner.reserved_to {
                    let reserve = last + RESERVE;
                    let mut b = Batch::new();
                    b.push(Op::PositionHighWater(reserve));
                    self.store.write(b)?;
                    inner.reserved_to = reserve;
                }
                (first, last, inner)
            }
        };
        inner.next = inner.next.max(last + 1);
        inner.in_flight.extend(first..=last);
        Ok(Allocation { range: first..=last, owner: self.clone() })
    }

    fn release(&self, range: RangeInclusive<u64>) {
        let mut inner = self.inner.lock().expect("poisoned");
        for p in range {
            inner.in_flight.remove(&p);
        }
        // Alone, nobody reads the record: a writer that appears is heard
        // of (`others_moved`), which records it then.
        match &self.shared {
            Some(stream) if inner.others.writing => stream.settle(inner.generation, Self::lowest_held(&inner)),
            _ => {}
        }
        let mark = Self::mark(&inner, self.shared.is_some());
        drop(inner);
        self.raise(mark);
    }

    /// A shared stream's lowest position this writer has in flight or may
    /// still hand out from its reserve.
    fn lowest_held(inner: &Inner) -> Option<u64> {
        let reserved = (inner.reserve_next <= inner.reserve_end).then_some(inner.reserve_next);
        match (inner.in_flight.first().copied(), reserved) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Below the lowest position in flight here and, with other writers,
    /// no further than they have settled.
    fn mark(inner: &Inner, shared: bool) -> u64 {
        if !shared {
            return inner.in_flight.first().map_or(inner.next - 1, |lowest| lowest - 1);
        }
        let own = Self::lowest_held(inner).map_or(u64::MAX, |lowest| lowest - 1);
        own.min(inner.others.settled).min(inner.allocation_pending.unwrap_or(u64::MAX))
    }

    fn raise(&self, mark: u64) {
        self.watermark.send_if_modified(|w| {
            let changed = mark > *w;
            *w = (*w).max(mark);
            changed
        });
    }

    /// Everything at or below this position is durable (or never will be).
    pub fn watermark(&self) -> u64 {
        *self.watermark.borrow()
    }

    /// Wakes when the watermark moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.watermark.subscribe()
    }
}

impl OthersWatcher for Positions {
    /// Another writer settled further, appeared or left.
    fn others_moved(&self, others: Others) {
        let mut inner = self.inner.lock().expect("poisoned");
        inner.others.settled = inner.others.settled.max(others.settled);
        let appeared = others.writing && !inner.others.writing;
        inner.others.writing = others.writing;
        if others.writing {
            inner.reserve_next = inner.reserve_end + 1;
        }
        if appeared {
            if let Some(stream) = &self.shared {
                stream.settle(inner.generation, Self::lowest_held(&inner));
            }
        }
        let mark = Self::mark(&inner, true);
        drop(inner);
        self.raise(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KvStore, MemKv};

    #[test]
    fn watermark_waits_for_the_lowest_in_flight_position() {
        let store: Arc<dyn Store> = Arc::new(KvStore::new(MemKv::new()));
        let p = Positions::open(store.clone()).unwrap();
        let a = p.allocate(1).unwrap();
        let b = p.allocate(2).unwrap();
        assert_eq!((a.first(), b.positions()), (1, 2..=3));
        drop(b);
        assert_eq!(p.watermark(), 0, "position 1 is still in flight");
        drop(a);
        assert_eq!(p.watermark(), 3);
        // A restart never hands out a position that may have been used.
        let reopened = Positions::open(store).unwrap();
        assert!(reopened.allocate(1).unwrap().first() > 3);
    }
}
