//! Unread notification and highlight counts, kept per user and room, so
//! that a sync (or a push's badge) reads only the events that arrived since
//! the count before it rather than the whole look-back window each time.
//! Counts are split by thread (the spec's thread-aware notifications);
//! their total is what a client that is not thread-aware sees.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range as Positions;
use std::sync::Mutex;

use serde_json::Value;

use crate::core::ids::{EventId, RoomId, UserId};
use crate::core::json::{self, NumberPolicy};
use crate::core::push::{default_rules, evaluate, Actions, PushContext};
use crate::core::rooms::{PowerLevels, StateView};
use crate::room::{RoomView, Rooms};
use crate::store::records::{EventRecord, Receipt};
use crate::store::{Store, StoreResult};

/// A first count (after a start, or when a read receipt moved) looks back
/// at most this many events; later ones add what arrived since.
pub const LOOK_BACK: u64 = 100;
/// Tallies kept; past this the map starts over (recounting is bounded by
/// `LOOK_BACK`, so forgetting only costs a few reads).
const MAX_TALLIES: usize = 20_000;
/// The thread id of the main timeline in receipts.
pub const MAIN: &str = "main";

/// Notifications and highlights.
pub type Pair = (u64, u64);

/// Counts in the main timeline and in each thread (by root event id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub main: Pair,
    pub threads: BTreeMap<String, Pair>,
}

impl Counts {
    fn add(&mut self, thread: &str, actions: &Actions) {
        let pair = if thread == MAIN { &mut self.main } else { self.threads.entry(thread.to_owned()).or_default() };
        pair.0 += u64::from(actions.notify);
        pair.1 += u64::from(actions.highlight);
    }

    fn merge(&mut self, other: &Counts) {
        self.main = (self.main.0 + other.main.0, self.main.1 + other.main.1);
        for (t, p) in &other.threads {
            let mine = self.threads.entry(t.clone()).or_default();
            *mine = (mine.0 + p.0, mine.1 + p.1);
        }
    }

    /// Adds what a later range counted; what the user's own events in it
    /// marked read goes first.
    fn follow(&mut self, later: Range) {
        if later.cleared_all {
            *self = Counts::default();
        }
        for t in &later.cleared_threads {
            self.threads.remove(t);
        }
        self.merge(&later.counts);
    }

    /// Everything, threads included.
    pub fn total(&self) -> Pair {
        self.threads.values().fold(self.main, |a, p| (a.0 + p.0, a.1 + p.1))
    }
}

/// What one range of a room's list added to the counts. The user's own
/// event reads what came before it: in the main timeline everything, in a
/// thread that thread.
#[derive(Debug, Clone, Default)]
pub struct Range {
    pub counts: Counts,
    pub cleared_all: bool,
    pub cleared_threads: std::collections::BTreeSet<String>,
}

impl Range {
    pub fn add(&mut self, thread: &str, actions: &Actions) {
        self.counts.add(thread, actions);
    }

    /// The user's own event in `thread`.
    pub fn own(&mut self, thread: &str) {
        if thread == MAIN {
            *self = Range { cleared_all: true, ..Range::default() };
        } else {
            self.counts.threads.remove(thread);
            self.cleared_threads.insert(thread.to_owned());
        }
    }
}

/// What was counted for one user in one room: the events from others in
/// list positions `start..upto`, where `start` follows the user's
/// unthreaded read receipt at `read_from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    read_from: u64,
    upto: u64,
    count: Counts,
}

/// A tally and the receipts it was counted from, so a count whose
/// receipts did not move need not look their events up.
struct Kept {
    receipts: String,
    tally: Tally,
}

/// Which list positions to read, and the tally they add to: the new events
/// when the receipts are where they were and the list only grew; otherwise
/// a fresh count over the look-back window.
pub fn plan(prev: Option<Tally>, read_from: u64, length: u64) -> (Tally, Positions<u64>) {
    match prev {
        Some(t) if t.read_from == read_from && t.upto <= length => {
            let range = t.upto..length;
            (t, range)
        }
        _ => {
            let start = read_from.max(length.saturating_sub(LOOK_BACK)).min(length);
            (Tally { read_from, upto: start, count: Counts::default() }, start..length)
        }
    }
}

#[derive(Default)]
pub struct UnreadCounts {
    tallies: Mutex<HashMap<(UserId, RoomId), Kept>>,
}

impl UnreadCounts {
    /// The unread counts of `user` in `room`, whose list has `length`
    /// events. `receipts` names the user's read receipts; when they moved
    /// since the last count, `read_from` gives the first list position the
    /// unthreaded one leaves unread. `count_range` counts a range; its flag
    /// says whether the range may hold events a receipt covers (a fresh
    /// count) or only events newer than every receipt.
    pub fn count<E>(
        &self,
        user: &UserId,
        room: &RoomId,
        receipts: &str,
        read_from: impl FnOnce() -> Result<u64, E>,
        length: u64,
        count_range: impl FnOnce(Positions<u64>, bool) -> Result<Range, E>,
    ) -> Result<Counts, E> {
        let key = (user.clone(), room.clone());
        let kept = self.tallies.lock().expect("poisoned").get(&key).map(|k| (k.receipts == receipts, k.tally.clone()));
        let (prev, read_from) = match kept {
            Some((true, t)) => {
                let from = t.read_from;
                (Some(t), from)
            }
            // Receipts moved (a thread's may move while the unthreaded
            // one stays): count afresh.
            _ => (None, read_from()?),
        };
        let (base, range) = plan(prev, read_from, length);
        let fresh = base.upto == range.start && base.count == Counts::default();
        let mut count = base.count.clone();
        if !range.is_empty() {
            count.follow(count_range(range, fresh)?);
        }
        let tally = Tally { upto: length.max(base.upto), count, ..base };
        let out = tally.count.clone();
        let mut tallies = self.tallies.lock().expect("poisoned");
        if tallies.len() >= MAX_TALLIES && !tallies.contains_key(&key) {
            tallies.clear();
        }
        // Two counts at once may each write: every tally is right on its own.
        tallies.insert(key, Kept { receipts: receipts.to_owned(), tally });
        Ok(out)
    }
}

/// The thread an event names itself: its root's id for an `m.thread`
/// relation, `None` for another relation (the thread is its target's),
/// `MAIN` for none.
fn named_thread(event: &Value) -> Option<&str> {
    let rel = &event["content"]["m.relates_to"];
    match (rel["rel_type"].as_str(), rel["event_id"].as_str()) {
        (Some("m.thread"), Some(root)) => Some(root),
        (Some(_), Some(_)) => None,
        _ => Some(MAIN),
    }
}

/// Relations followed to find an event's thread (the spec's limit).
const THREAD_HOPS: usize = 3;

/// The thread an event belongs to: its root's id, or `MAIN`. An edit or a
/// reaction belongs to its target's thread (followed up to three hops).
pub fn thread_of(store: &dyn Store, event: &Value) -> StoreResult<String> {
    let mut parent: Option<Value> = None;
    for _ in 0..=THREAD_HOPS {
        let e = parent.as_ref().unwrap_or(event);
        if let Some(thread) = named_thread(e) {
            return Ok(thread.to_owned());
        }
        let target = e["content"]["m.relates_to"]["event_id"].as_str().and_then(|t| EventId::parse(t).ok());
        let Some(rec) = target.map(|t| store.event(&t)).transpose()?.flatten() else { break };
        let Some(next) = pushable(&rec) else { break };
        parent = Some(next);
    }
    Ok(MAIN.to_owned())
}

/// What push rule evaluation needs of a room, read once for many events
/// and users: the member count, the power levels and the power `@room`
/// asks for.
pub struct PushFacts<'a> {
    view: &'a RoomView,
    levels: PowerLevels<'a>,
    member_count: u64,
    room_power: i64,
}

impl<'a> PushFacts<'a> {
    pub fn of(view: &'a RoomView) -> Self {
        let room_power = view
            .state
            .power_levels()
            .and_then(|p| p.content().get("notifications")?.get("room")?.as_i64())
            .unwrap_or(50);
        let levels = PowerLevels::from_state(&*view.state, view.version);
        let member_count = view.state.joined_members().count() as u64;
        PushFacts { view, levels, member_count, room_power }
    }

    /// The actions an event of someone else calls for `user`; none for the
    /// user's own events.
    pub fn actions(&self, rules: &Value, event: &Value, user: &str) -> Actions {
        let sender = event.get("sender").and_then(Value::as_str).unwrap_or("");
        if sender == user {
            return Actions::default();
        }
        let display_name = self.view.state.member(user).and_then(|m| m.content().get("displayname")?.as_str());
        let ctx = PushContext {
            user_id: user,
            display_name,
            member_count: self.member_count,
            sender_power: self.levels.user_level(sender),
            room_notification_power: self.room_power,
        };
        evaluate(rules, event, &ctx)
    }
}

/// The actions an invite from a room this server does not hold calls for
/// (its state is unknown: no name, no powers).
pub fn invite_actions(rules: &Value, event: &Value, user: &str) -> Actions {
    let ctx = PushContext {
        user_id: user,
        display_name: None,
        member_count: 0,
        sender_power: 0,
        room_notification_power: 50,
    };
    evaluate(rules, event, &ctx)
}

/// An event as push rules see it; `None` for soft-failed, rejected or
/// unreadable ones (they notify no one).
pub fn pushable(rec: &EventRecord) -> Option<Value> {
    if rec.soft_failed || !rec.rejected.is_empty() || rec.json.is_empty() {
        return None;
    }
    json::parse(&rec.json, NumberPolicy::Ieee754).ok()
}

/// The `global` push rules of `user` (the defaults when none are set).
pub fn rules_of(store: &dyn Store, user: &UserId) -> StoreResult<Value> {
    let stored = store.account_data(user, None, "m.push_rules")?;
    let mut all =
        stored.and_then(|b| json::parse(&b, NumberPolicy::Ieee754).ok()).unwrap_or_else(|| default_rules(user));
    Ok(all["global"].take())
}

/// A user's read receipts in a room: public and private, every thread.
pub fn read_receipts(store: &dyn Store, room: &RoomId, user: &UserId) -> StoreResult<Vec<Receipt>> {
    let mut receipts = store.user_receipts(room, "m.read", user)?;
    receipts.extend(store.user_receipts(room, "m.read.private", user)?);
    Ok(receipts)
}

/// The user's own membership event as an unthreaded receipt: what came
/// before one's join is not unread (as Synapse counts).
fn join_floor(store: &dyn Store, room: &RoomId, user: &UserId) -> StoreResult<Option<Receipt>> {
    let m = store.membership(user, room)?;
    Ok(m.filter(|m| !m.event_id.is_empty()).map(|m| Receipt { event_id: m.event_id, ..Default::default() }))
}

/// Per thread ("" for unthreaded), the first list position the receipts
/// leave unread.
pub fn receipt_positions(store: &dyn Store, receipts: &[Receipt]) -> StoreResult<HashMap<String, u64>> {
    let mut map = HashMap::new();
    for r in receipts {
        let Ok(id) = EventId::parse(&r.event_id) else { continue };
        let at = store.event(&id)?.map_or(0, |rec| rec.index + 1);
        let e = map.entry(r.thread_id.clone()).or_insert(0);
        *e = (*e).max(at);
    }
    Ok(map)
}

/// Whether the event at list position `index` in `thread` is read: before
/// the unthreaded receipt or the thread's own.
pub fn is_read(positions: &HashMap<String, u64>, thread: &str, index: u64) -> bool {
    let unthreaded = positions.get("").copied().unwrap_or(0);
    index < unthreaded.max(positions.get(thread).copied().unwrap_or(0))
}

/// The unread counts of `user` in `room`: events of others after the
/// user's read receipts (the unthreaded one, and the one of the event's
/// thread) that the user's push rules say notify.
pub fn room_counts(
    store: &dyn Store,
    rooms: &Rooms,
    tallies: &UnreadCounts,
    user: &UserId,
    room: &RoomId,
) -> StoreResult<Counts> {
    let Some(view) = rooms.get_view(room) else { return Ok(Counts::default()) };
    let mut receipts = read_receipts(store, room, user)?;
    receipts.extend(join_floor(store, room, user)?);
    let key: Vec<String> = receipts.iter().map(|r| format!("{}@{}", r.event_id, r.thread_id)).collect();
    let positions: OnceCell<HashMap<String, u64>> = OnceCell::new();
    let read_positions = || -> StoreResult<&HashMap<String, u64>> {
        if let Some(p) = positions.get() {
            return Ok(p);
        }
        let map = receipt_positions(store, &receipts)?;
        Ok(positions.get_or_init(|| map))
    };
    let read_from = || read_positions().map(|p| p.get("").copied().unwrap_or(0));
    tallies.count(user, room, &key.join(" "), read_from, view.length, |range, fresh| {
        let rules = rules_of(store, user)?;
        let facts = PushFacts::of(&view);
        let mut counted = Range::default();
        for id in store.list(room, range.start, range.end)? {
            let Some(rec) = store.event(&id)? else { continue };
            let Some(event) = pushable(&rec) else { continue };
            let thread = thread_of(store, &event)?;
            if fresh && is_read(read_positions()?, &thread, rec.index) {
                continue;
            }
            if event["sender"] == user.as_str() {
                counted.own(&thread);
            } else {
                counted.add(&thread, &facts.actions(&rules, &event, user.as_str()));
            }
        }
        Ok(counted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(n: u64, h: u64) -> Counts {
        Counts { main: (n, h), threads: BTreeMap::new() }
    }

    #[test]
    fn a_grown_list_is_read_from_where_the_last_count_stopped() {
        let (base, range) = plan(None, 0, 1_000);
        assert_eq!((base.count, range), (Counts::default(), 900..1_000), "a first count looks back a window");
        let (_, range) = plan(None, 950, 1_000);
        assert_eq!(range, 950..1_000, "not before the receipt");
        let t = Tally { read_from: 950, upto: 1_000, count: pair(7, 1) };
        assert_eq!(plan(Some(t.clone()), 950, 1_010), (t.clone(), 1_000..1_010));
        assert_eq!(plan(Some(t.clone()), 950, 1_000).1, 1_000..1_000, "nothing new: nothing read");
        assert_eq!(plan(Some(t.clone()), 990, 1_010).1, 990..1_010, "a moved receipt counts afresh");
        assert_eq!(plan(Some(t), 950, 10).1, 10..10, "a list that shrank (a reload) counts afresh");
    }

    #[test]
    fn counts_add_up_across_syncs_and_reads_stay_small() {
        let counts = UnreadCounts::default();
        let (user, room) = (UserId::parse("@u:here.test").unwrap(), RoomId::parse("!r:here.test").unwrap());
        // Every third position is a message from someone else, every
        // fifth of those in a thread.
        let messages = |r: Positions<u64>, _fresh: bool| {
            let mut c = Range::default();
            for i in r.filter(|i| i % 3 == 0) {
                let thread = if i % 5 == 0 { "$root" } else { MAIN };
                c.add(thread, &Actions { notify: true, highlight: i % 10 == 0, sound: None });
            }
            Ok::<_, ()>(c)
        };
        let mut read = 0;
        let mut fresh_counts = 0;
        let mut reading = |r: Positions<u64>, fresh: bool| {
            read += r.end - r.start;
            fresh_counts += u64::from(fresh);
            messages(r, fresh)
        };
        let looked_up = std::cell::Cell::new(0);
        let at = |pos: u64| {
            let looked_up = &looked_up;
            move || {
                looked_up.set(looked_up.get() + 1);
                Ok(pos)
            }
        };
        let first = counts.count(&user, &room, "", at(0), 30, &mut reading).unwrap();
        assert_eq!(first.total(), (10, 1));
        assert_eq!(first.threads["$root"], (2, 1), "positions 0 and 15 are in the thread; 0 also highlights");
        assert_eq!(first.main, (8, 0));
        assert_eq!(counts.count(&user, &room, "", at(0), 60, &mut reading).unwrap().total(), (20, 2));
        assert_eq!(counts.count(&user, &room, "", at(0), 60, &mut reading).unwrap().total(), (20, 2));
        assert_eq!(read, 60, "each position read once");
        assert_eq!(fresh_counts, 1, "only the first read may hold events a receipt covers");
        // The user read up to position 45.
        assert_eq!(counts.count(&user, &room, "$e45", at(45), 60, messages).unwrap().total(), (5, 0));
        assert_eq!(looked_up.get(), 2, "receipts looked up only when they moved");
        let unused = || -> Result<u64, ()> { panic!("the receipt did not move: no look-up") };
        assert_eq!(counts.count(&user, &room, "$e45", unused, 60, messages).unwrap().total(), (5, 0));
    }

    #[test]
    fn an_event_belongs_to_the_thread_it_names() {
        let in_thread = serde_json::json!({"content": {"m.relates_to": {"rel_type": "m.thread", "event_id": "$r"}}});
        assert_eq!(named_thread(&in_thread), Some("$r"));
        let reply = serde_json::json!({"content": {"m.relates_to": {"m.in_reply_to": {"event_id": "$r"}}}});
        assert_eq!(named_thread(&reply), Some(MAIN));
        let reaction = serde_json::json!({"content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x"}}});
        assert_eq!(named_thread(&reaction), None, "a reaction's thread is its target's");
    }

    #[test]
    fn the_users_own_event_reads_what_came_before() {
        let note = Actions { notify: true, highlight: false, sound: None };
        let mut before = Counts::default();
        before.add(MAIN, &note);
        before.add("$t", &note);
        before.add("$u", &note);
        let mut in_thread = Range::default();
        in_thread.add("$t", &note);
        in_thread.own("$t");
        in_thread.add(MAIN, &note);
        let mut after = before.clone();
        after.follow(in_thread);
        assert_eq!((after.main, after.threads.get("$t"), after.threads["$u"]), ((2, 0), None, (1, 0)));
        let mut in_main = Range::default();
        in_main.add("$u", &note);
        in_main.own(MAIN);
        in_main.add("$t", &note);
        let mut after = before;
        after.follow(in_main);
        assert_eq!((after.main, after.threads.len(), after.threads["$t"]), ((0, 0), 1, (1, 0)));
    }
}
