//! Positions in this server's stream: handed out to writers in order, and
//! published to readers only once every smaller position is durable.
//!
//! Room writers run concurrently, so position 7 may become durable before 6.
//! A reader (sync, an outbound queue) that read up to 7 would then skip 6
//! for ever; readers therefore see the *watermark*: the highest position
//! below which nothing is still in flight.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Batch, Op, Store, StoreResult};

/// Positions reserved per high-water write, so allocation rarely writes.
const RESERVE: u64 = 4096;

pub struct Positions {
    store: Arc<dyn Store>,
    inner: Mutex<Inner>,
    watermark: watch::Sender<u64>,
}

struct Inner {
    next: u64,
    reserved_to: u64,
    in_flight: BTreeSet<u64>,
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
        // Positions up to the recorded high water may have been used.
        let high = store.position_high_water()?;
        Ok(Arc::new(Positions {
            store,
            inner: Mutex::new(Inner { next: high + 1, reserved_to: high, in_flight: BTreeSet::new() }),
            watermark: watch::channel(high).0,
        }))
    }

    /// Hands out `n` (≥ 1) consecutive positions.
    pub fn allocate(self: &Arc<Self>, n: u64) -> StoreResult<Allocation> {
        let n = n.max(1);
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
        inner.next = last + 1;
        inner.in_flight.extend(first..=last);
        Ok(Allocation { range: first..=last, owner: self.clone() })
    }

    fn release(&self, range: RangeInclusive<u64>) {
        let mut inner = self.inner.lock().expect("poisoned");
        for p in range {
            inner.in_flight.remove(&p);
        }
        let mark = match inner.in_flight.first() {
            Some(lowest) => lowest - 1,
            None => inner.next - 1,
        };
        drop(inner);
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
