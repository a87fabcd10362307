//! Unread message counts for `/sync`, kept per user and room, so that a
//! sync reads only the events that arrived since the one before it rather
//! than the whole look-back window of every room each time.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use crate::core::ids::{RoomId, UserId};

/// A first count (after a start, or when the read receipt moved) looks
/// back at most this many events; later ones add what arrived since.
pub const LOOK_BACK: u64 = 100;
/// Tallies kept; past this the map starts over (recounting is bounded by
/// `LOOK_BACK`, so forgetting only costs a few reads).
const MAX_TALLIES: usize = 20_000;

/// What was counted for one user in one room: the messages from others in
/// list positions `start..upto`, where `start` follows the user's read
/// receipt at `read_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    read_from: u64,
    upto: u64,
    count: Counts,
}

/// Notifications and highlights.
pub type Counts = (u64, u64);

/// A tally and the receipts it was counted from (their event ids), so a
/// sync whose receipts did not move need not look their events up.
struct Kept {
    receipts: String,
    tally: Tally,
}

/// Which list positions to read, and the tally they add to: the new events
/// when the receipt is where it was and the list only grew; otherwise a
/// fresh count over the look-back window.
pub fn plan(prev: Option<Tally>, read_from: u64, length: u64) -> (Tally, Range<u64>) {
    match prev {
        Some(t) if t.read_from == read_from && t.upto <= length => (t, t.upto..length),
        _ => {
            let start = read_from.max(length.saturating_sub(LOOK_BACK)).min(length);
            (Tally { read_from, upto: start, count: (0, 0) }, start..length)
        }
    }
}

#[derive(Default)]
pub struct UnreadCounts {
    tallies: Mutex<HashMap<(UserId, RoomId), Kept>>,
}

impl UnreadCounts {
    /// The unread count of `user` in `room`, whose list has `length`
    /// events. `receipts` names the user's read receipts (their event ids);
    /// when they moved since the last count, `read_from` gives the first
    /// list position they leave unread. `count_range` counts the unread
    /// messages in a range.
    pub fn count<E>(
        &self,
        user: &UserId,
        room: &RoomId,
        receipts: &str,
        read_from: impl FnOnce() -> Result<u64, E>,
        length: u64,
        count_range: impl FnOnce(Range<u64>) -> Result<Counts, E>,
    ) -> Result<Counts, E> {
        let key = (user.clone(), room.clone());
        let kept = self.tallies.lock().expect("poisoned").get(&key).map(|k| (k.receipts == receipts, k.tally));
        let (prev, read_from) = match kept {
            Some((true, t)) => (Some(t), t.read_from),
            other => (other.map(|(_, t)| t), read_from()?),
        };
        let (base, range) = plan(prev, read_from, length);
        let added = if range.is_empty() { (0, 0) } else { count_range(range)? };
        let count = (base.count.0 + added.0, base.count.1 + added.1);
        let tally = Tally { upto: length.max(base.upto), count, ..base };
        let mut tallies = self.tallies.lock().expect("poisoned");
        if tallies.len() >= MAX_TALLIES && !tallies.contains_key(&key) {
            tallies.clear();
        }
        // Two syncs at once may each write: every tally is right on its own.
        tallies.insert(key, Kept { receipts: receipts.to_owned(), tally });
        Ok(tally.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grown_list_is_read_from_where_the_last_count_stopped() {
        let (base, range) = plan(None, 0, 1_000);
        assert_eq!((base.count, range), ((0, 0), 900..1_000), "a first count looks back a window");
        let (_, range) = plan(None, 950, 1_000);
        assert_eq!(range, 950..1_000, "not before the receipt");
        let t = Tally { read_from: 950, upto: 1_000, count: (7, 1) };
        assert_eq!(plan(Some(t), 950, 1_010), (t, 1_000..1_010));
        assert_eq!(plan(Some(t), 950, 1_000).1, 1_000..1_000, "nothing new: nothing read");
        assert_eq!(plan(Some(t), 990, 1_010).1, 990..1_010, "a moved receipt counts afresh");
        assert_eq!(plan(Some(t), 950, 10).1, 10..10, "a list that shrank (a reload) counts afresh");
    }

    #[test]
    fn counts_add_up_across_syncs_and_reads_stay_small() {
        let counts = UnreadCounts::default();
        let (user, room) = (UserId::parse("@u:here.test").unwrap(), RoomId::parse("!r:here.test").unwrap());
        // Every third position is a message from someone else.
        let messages = |r: Range<u64>| {
            Ok::<_, ()>((r.clone().filter(|i| i % 3 == 0).count() as u64, r.filter(|i| i % 10 == 0).count() as u64))
        };
        let mut read = 0;
        let mut reading = |r: Range<u64>| {
            read += r.end - r.start;
            messages(r)
        };
        let looked_up = std::cell::Cell::new(0);
        let at = |pos: u64| {
            let looked_up = &looked_up;
            move || {
                looked_up.set(looked_up.get() + 1);
                Ok(pos)
            }
        };
        assert_eq!(counts.count(&user, &room, "", at(0), 30, &mut reading), Ok((10, 3)));
        assert_eq!(counts.count(&user, &room, "", at(0), 60, &mut reading), Ok((20, 6)));
        assert_eq!(counts.count(&user, &room, "", at(0), 60, &mut reading), Ok((20, 6)));
        assert_eq!(read, 60, "each position read once");
        // The user read up to position 45.
        assert_eq!(counts.count(&user, &room, "$e45", at(45), 60, messages), Ok((5, 1)));
        assert_eq!(looked_up.get(), 2, "receipts looked up only when they moved");
        let unused = || -> Result<u64, ()> { panic!("the receipt did not move: no look-up") };
        assert_eq!(counts.count(&user, &room, "$e45", unused, 60, messages), Ok((5, 1)));
    }
}
