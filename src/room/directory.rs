//! The rooms this server knows, and the one place a room's writer is
//! started: created by a local user, loaded from the store (on first use,
//! at start and after it rested), or joined from a `send_join` answer. A
//! joined room's first records go through its writer's commit like every
//! later event, and concurrent joins of one room are taken one at a time,
//! so a room never has two writers or two copies of its list. Before a
//! writer starts, the room is claimed for this process in the store
//! (`Store::claim`): on a store shared by several processes, one that
//! another live process owns is refused (`RoomError::Elsewhere`), and a
//! writer whose room was taken over stops at its first refused batch.
//! Readers take views (`find_view`), which never start a writer.
//!
//! A room left idle rests: its writer stops and keeps nothing in memory
//! but its durable length, and the next use loads it from the store. Only
//! the writer itself puts its room to rest, under the directory's lock,
//! when nothing waits on it and no handle exists outside the directory
//! (handles are only handed out under that lock), so no input is lost
//! and no second writer can start while the first still runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, OwnedMutexGuard};

use super::task::spawn_room;
use super::views::RestingViews;
use super::{JoinSeed, RoomCmd, RoomDeps, RoomError, RoomHandle, RoomView};
use crate::core::event::RoomVersion;
use crate::core::ids::{EventId, RoomId};
use crate::store::{Claim, Claimed, Owner};

/// The outcome of opening a joined room.
pub enum Opened {
    /// The room is new here and its writer started from the seed.
    Started(EventId),
    /// The room was already followed: the join is an event like any other,
    /// for the caller to hand to this writer.
    Existing(RoomHandle),
}

type JoinLocks = HashMap<RoomId, Arc<tokio::sync::Mutex<()>>>;

enum Entry {
    Running(RoomHandle),
    /// No writer: everything of the room is in the store. `rested` tells
    /// one rest from the next, so a load that raced a wake and a new rest
    /// is not taken.
    Resting {
        length: u64,
        rested: u64,
        /// Follower: how far the writer had trimmed old events.
        pruned_upto: u64,
    },
}

#[derive(Default)]
struct Map {
    rooms: HashMap<RoomId, Entry>,
    rests: u64,
}

/// The directory's map, as a writer sees it: the way to put its room to
/// rest.
#[derive(Clone, Default)]
pub(super) struct Shelf(Arc<Mutex<Map>>);

impl Shelf {
    /// Rests `room` if the directory's handle is the only one left and the
    /// inbox is empty; then the writer may stop.
    pub(super) fn rest(&self, room: &RoomId, inbox: &mpsc::Receiver<RoomCmd>, length: u64, pruned_upto: u64) -> bool {
        let mut map = self.0.lock().expect("poisoned");
        let Some(Entry::Running(handle)) = map.rooms.get(room) else { return false };
        // Handles are cloned from the map under this lock and the writer's
        // own sender is weak: nobody else can send from here on.
        if handle.inbox().is_none_or(|tx| tx.strong_count() != 1) || !inbox.is_empty() {
            return false;
        }
        map.file_resting(room, length, pruned_upto);
        true
    }

    /// Files `room` as resting after its writer (`writer`, if the directory
    /// still has it) found another process had taken it over: the next use
    /// claims it again, and is refused while that process lives. A room
    /// nothing of which is stored here is forgotten.
    pub(super) fn disown(&self, room: &RoomId, writer: &mpsc::WeakSender<RoomCmd>, length: u64, pruned_upto: u64) {
        let mut map = self.0.lock().expect("poisoned");
        let Some(Entry::Running(handle)) = map.rooms.get(room) else { return };
        if !writer.upgrade().is_some_and(|w| handle.inbox().is_some_and(|tx| tx.same_channel(&w))) {
            return;
        }
        if length == 0 {
            map.rooms.remove(room);
        } else {
            map.file_resting(room, length, pruned_upto);
        }
    }
}

impl Map {
    fn file_resting(&mut self, room: &RoomId, length: u64, pruned_upto: u64) {
        self.rests += 1;
        let rested = self.rests;
        self.rooms.insert(room.clone(), Entry::Resting { length, rested, pruned_upto });
    }
}

/// One lock per room being woken, so that concurrent uses of a resting
/// room load it once: the others wait for that load instead of repeating
/// it (a peer's reads may name a resting room many times at once).
type WakeLocks = HashMap<RoomId, Arc<Mutex<()>>>;

pub struct Rooms {
    deps: RoomDeps,
    map: Shelf,
    /// Resting rooms as readers see them (`views.rs`).
    resting_views: Arc<RestingViews>,
    joining: Arc<Mutex<JoinLocks>>,
    waking: Mutex<WakeLocks>,
    /// Rooms found owned by another live process, and when: commands for
    /// them are relayed without asking the store each time (a refused
    /// claim takes the owner row's lock, so it waits for the owner's
    /// batches in flight).
    elsewhere: Arc<Mutex<HashMap<RoomId, OwnedBy>>>,
}

/// A room's owner as found, when, and the room's version.
#[derive(Clone)]
struct OwnedBy {
    owner: Owner,
    at: std::time::Instant,
    version: &'static RoomVersion,
}

/// How long a room found owned elsewhere is taken to stay there; a room
/// whose owner went is claimed again after at most this.
const OWNER_KEPT: std::time::Duration = std::time::Duration::from_secs(1);
/// Rooms remembered as owned elsewhere, at most.
const OWNERS_KEPT: usize = 4096;

/// Held while one local user joins a room hubbed elsewhere.
pub struct JoinTurn {
    room: RoomId,
    locks: Arc<Mutex<JoinLocks>>,
    lock: Arc<tokio::sync::Mutex<()>>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl Drop for JoinTurn {
    fn drop(&mut self) {
        self._turn.take();
        let mut locks = self.locks.lock().expect("poisoned");
        // The map's and ours: nobody waits for this room any more. Others
        // clone under this lock, so the count cannot rise meanwhile.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.room);
        }
    }
}

impl Rooms {
    pub fn new(deps: RoomDeps) -> Self {
        Rooms {
            resting_views: Arc::new(RestingViews::new(&deps.store)),
            deps,
            map: Shelf::default(),
            joining: Arc::default(),
            waking: Mutex::default(),
            elsewhere: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.0.lock().expect("poisoned")
    }

    fn spawn(&self, view: RoomView, pruned_upto: u64, claim: Claim) -> RoomHandle {
        spawn_room(&self.deps, view, self.map.clone(), pruned_upto, claim)
    }

    /// Takes the room for this process before its writer starts. Claiming a
    /// room this process holds already keeps its epoch, so claiming before
    /// looking whether the writer runs is harmless.
    fn claim(&self, id: &RoomId) -> Result<Claim, RoomError> {
        Ok(self.deps.store.claim(Claimed::Room(id.clone()))?)
    }

    /// The writer of a room this server knows, started from the store if
    /// the room was resting; `Err` when a resting room cannot be read back
    /// (the caller fails, rather than taking the room for unknown), or is
    /// owned by another process (`RoomError::Elsewhere`).
    pub fn find(&self, id: &RoomId) -> Result<Option<RoomHandle>, RoomError> {
        self.wake(id)
    }

    /// `find` for callers that go on without the room: one that cannot be
    /// read back, or that another process owns, is skipped (and logged).
    pub fn get(&self, id: &RoomId) -> Option<RoomHandle> {
        self.wake(id).ok().flatten()
    }

    fn wake(&self, id: &RoomId) -> Result<Option<RoomHandle>, RoomError> {
        let known = match self.lock().rooms.get(id) {
            None => false,
            Some(Entry::Running(h)) => return Ok(Some(h.clone())),
            Some(Entry::Resting { .. }) => true,
        };
        if !known && !self.discover(id)? {
            return Ok(None);
        }
        let kept = self.elsewhere.lock().expect("poisoned").get(id).filter(|o| o.at.elapsed() < OWNER_KEPT).cloned();
        if let Some(owned) = kept {
            return Ok(Some(self.relaying(id, owned)));
        }
        let turn = self.waking.lock().expect("poisoned").entry(id.clone()).or_default().clone();
        let woken = {
            // Blocks like the load it waits for: a load is synchronous. The
            // lock guards nothing but the turn, so a load that panicked
            // leaves nothing to distrust.
            let _turn = turn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.load(id)
        };
        match &woken {
            // Logged where the store refused the claim.
            Err(RoomError::Elsewhere(_)) | Ok(_) => {}
            Err(e) => tracing::error!(room_id = %id, error = %e, "a resting room could not be loaded"),
        }
        let mut waking = self.waking.lock().expect("poisoned");
        // The map's and ours: nobody else waits on this room's load.
        if Arc::strong_count(&turn) == 2 {
            waking.remove(id);
        }
        drop(turn);
        match woken {
            Err(RoomError::Elsewhere(owner)) if owner.federation_addr.is_some() => {
                let record =
                    self.deps.store.room(id)?.ok_or_else(|| RoomError::Storage(format!("{id} is not stored")))?;
                let version = RoomVersion::find(&record.room_version)
                    .ok_or_else(|| RoomError::Storage(format!("{id} has an unknown version")))?;
                let owned = OwnedBy { owner, at: std::time::Instant::now(), version };
                let mut kept = self.elsewhere.lock().expect("poisoned");
                if kept.len() >= OWNERS_KEPT {
                    kept.retain(|_, o| o.at.elapsed() < OWNER_KEPT);
                }
                if kept.len() < OWNERS_KEPT {
                    kept.insert(id.clone(), owned.clone());
                }
                drop(kept);
                Ok(Some(self.relaying(id, owned)))
            }
            other => other,
        }
    }

    /// A handle that relays to the room's owner; its view is read from
    /// the store each time it is asked for.
    fn relaying(&self, id: &RoomId, owned: OwnedBy) -> RoomHandle {
        let rested = match self.lock().rooms.get(id) {
            Some(Entry::Resting { rested, .. }) => *rested,
            _ => 0,
        };
        let (views, store, room, version) =
            (self.resting_views.clone(), self.deps.store.clone(), id.clone(), owned.version);
        let me = self.deps.env.key.server().clone();
        let read = Box::new(move || match views.read(&store, &room, rested) {
            Ok(Some(view)) => view,
            other => {
                tracing::error!(room_id = %room, outcome = ?other.err(), "a room owned elsewhere could not be read");
                Arc::new(RoomView::empty(room.clone(), version, me.clone()))
            }
        });
        let (kept, room) = (self.elsewhere.clone(), id.clone());
        let moved = Box::new(move || {
            kept.lock().expect("poisoned").remove(&room);
        });
        RoomHandle::elsewhere(super::OwnedElsewhere {
            owner: owned.owner,
            room_id: id.clone(),
            version,
            read,
            moved,
            network: self.deps.network.clone(),
        })
    }

    /// A room another process of this server stored after this one
    /// started (only on a store others write too): filed as resting, so
    /// it is read, and its commands relayed to its owner, like any other.
    fn discover(&self, id: &RoomId) -> Result<bool, RoomError> {
        if self.deps.store.shared_stream().is_none() {
            return Ok(false);
        }
        let Some(record) = self.deps.store.room(id)? else { return Ok(false) };
        let mut map = self.lock();
        if !map.rooms.contains_key(id) {
            map.file_resting(id, record.length, 0);
        }
        Ok(true)
    }

    fn load(&self, id: &RoomId) -> Result<Option<RoomHandle>, RoomError> {
        loop {
            let (rested, pruned_upto) = match self.lock().rooms.get(id) {
                None => return Ok(None),
                Some(Entry::Running(h)) => return Ok(Some(h.clone())),
                Some(Entry::Resting { rested, pruned_upto, .. }) => (*rested, *pruned_upto),
            };
            // Read outside the lock: a large room's state takes a while.
            let started = std::time::Instant::now();
            let claim = self.claim(id)?;
            let view = super::load::load_view(&self.deps.store, id)?
                .ok_or_else(|| RoomError::Storage(format!("{id} is not stored")))?;
            let mut map = self.lock();
            match map.rooms.get(id) {
                Some(Entry::Resting { rested: now, .. }) if *now == rested => {
                    let load_us = started.elapsed().as_micros() as u64;
                    tracing::debug!(room_id = %id, state = view.state.len(), load_us, "room woke");
                    let handle = self.spawn(view, pruned_upto, claim);
                    map.rooms.insert(id.clone(), Entry::Running(handle.clone()));
                    self.resting_views.forget(id);
                    return Ok(Some(handle));
                }
                // Woken (and maybe rested again) meanwhile: look again.
                _ => continue,
            }
        }
    }

    /// A room's current view for readers, without starting its writer: the
    /// writer's when it runs here, else read from the store (`views.rs`).
    /// `Err` when a resting room cannot be read back.
    pub fn find_view(&self, id: &RoomId) -> Result<Option<Arc<RoomView>>, RoomError> {
        let rested = loop {
            match self.lock().rooms.get(id) {
                None => {}
                Some(Entry::Running(h)) => return Ok(Some(h.view())),
                Some(Entry::Resting { rested, .. }) => break *rested,
            }
            if !self.discover(id)? {
                return Ok(None);
            }
        };
        match self.resting_views.read(&self.deps.store, id, rested)? {
            Some(view) => Ok(Some(view)),
            None => Err(RoomError::Storage(format!("{id} is not stored"))),
        }
    }

    /// `find_view` for readers that go on without the room: a room that
    /// cannot be read back is skipped (and logged).
    pub fn get_view(&self, id: &RoomId) -> Option<Arc<RoomView>> {
        self.find_view(id)
            .inspect_err(|e| tracing::error!(room_id = %id, error = %e, "a resting room could not be read"))
            .ok()
            .flatten()
    }

    #[cfg(test)]
    pub(super) fn resting_views_kept(&self) -> usize {
        self.resting_views.len()
    }

    /// Whether this server knows the room (running or resting).
    pub fn knows(&self, id: &RoomId) -> bool {
        self.lock().rooms.contains_key(id)
            || self
                .discover(id)
                .inspect_err(|e| tracing::error!(room_id = %id, error = %e, "could not look a room up"))
                .unwrap_or(false)
    }

    /// A running room's view; `None` for a room at rest (not woken) or
    /// unknown.
    pub fn peek(&self, id: &RoomId) -> Option<std::sync::Arc<RoomView>> {
        match self.lock().rooms.get(id) {
            Some(Entry::Running(h)) => Some(h.view()),
            _ => None,
        }
    }

    /// Every room this server knows, running or resting.
    pub fn ids(&self) -> Vec<RoomId> {
        self.lock().rooms.keys().cloned().collect()
    }

    /// Each room's durable length (the list's, as its writer last
    /// published it), without waking resting rooms.
    pub fn lengths(&self) -> Vec<(RoomId, u64)> {
        let map = self.lock();
        let length = |e: &Entry| match e {
            Entry::Running(h) => h.view().length,
            Entry::Resting { length, .. } => *length,
        };
        map.rooms.iter().map(|(id, e)| (id.clone(), length(e))).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many rooms have a writer in memory now.
    pub fn running(&self) -> usize {
        self.lock().rooms.values().filter(|e| matches!(e, Entry::Running(_))).count()
    }

    /// Starts the writer of a room a local user creates here (we are its
    /// hub); its first events come as ordinary commands.
    pub fn create(&self, room: RoomId, version: &'static RoomVersion) -> Result<RoomHandle, RoomError> {
        if self.lock().rooms.contains_key(&room) {
            return Err(RoomError::BadEvent(format!("{room} exists already")));
        }
        // Outside the lock: a round trip on a shared store.
        let claim = self.claim(&room)?;
        let mut map = self.lock();
        if map.rooms.contains_key(&room) {
            return Err(RoomError::BadEvent(format!("{room} exists already")));
        }
        let me = self.deps.env.key.server().clone();
        let handle = self.spawn(RoomView::empty(room.clone(), version, me), 0, claim);
        map.rooms.insert(room, Entry::Running(handle.clone()));
        Ok(handle)
    }

    /// Checks that a stored room reads back whole (at start: a damaged
    /// store is refused, not served) and files it as resting.
    pub fn register_stored(&self, room: &RoomId) -> Result<(), RoomError> {
        let view = super::load::load_view(&self.deps.store, room)?
            .ok_or_else(|| RoomError::Storage(format!("{room} is not stored")))?;
        let mut map = self.lock();
        if !map.rooms.contains_key(room) {
            map.file_resting(room, view.length, 0);
        }
        Ok(())
    }

    /// Waits until no other local user is joining `room` from elsewhere.
    /// Held across the whole handshake: the hub then sequences our joins
    /// one after the other, so the first one seeds our copy of the list and
    /// the later ones continue it.
    pub async fn join_turn(&self, room: &RoomId) -> JoinTurn {
        let lock = {
            let mut locks = self.joining.lock().expect("poisoned");
            // A waiter whose caller went away never made a `JoinTurn` to
            // clean up after it: entries only the map holds are free.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(room.clone()).or_default().clone()
        };
        let turn = lock.clone().lock_owned().await;
        JoinTurn { room: room.clone(), locks: self.joining.clone(), lock, _turn: Some(turn) }
    }

    /// Opens a room joined elsewhere, unless it is followed already. Needs
    /// the caller's `JoinTurn` for the room.
    pub async fn open_joined(&self, seed: JoinSeed, _turn: &JoinTurn) -> Result<Opened, RoomError> {
        let room = seed.room.clone();
        // Stored by another process meanwhile: never seeded over.
        if self.lock().rooms.contains_key(&room) || self.discover(&room)? {
            return self.wake(&room)?.map(Opened::Existing).ok_or(RoomError::Gone);
        }
        let claim = self.claim(&room)?;
        let (handle, rx) = {
            let mut map = self.lock();
            match map.rooms.get(&room) {
                Some(Entry::Running(h)) => return Ok(Opened::Existing(h.clone())),
                Some(Entry::Resting { .. }) => {
                    drop(map);
                    return self.wake(&room)?.map(Opened::Existing).ok_or(RoomError::Gone);
                }
                None => {}
            }
            let handle = self.spawn(RoomView::empty(room.clone(), seed.version, seed.hub.clone()), 0, claim);
            let (tx, rx) = tokio::sync::oneshot::channel();
            // A new inbox has room: the seed is the writer's first input.
            handle.try_send(RoomCmd::Seed { seed: Box::new(seed), reply: tx })?;
            map.rooms.insert(room.clone(), Entry::Running(handle.clone()));
            (handle, rx)
        };
        let outcome = rx.await.map_err(|_| RoomError::Gone).and_then(|r| r);
        match outcome {
            Ok(id) => Ok(Opened::Started(id)),
            Err(e) => {
                // Nothing of the room is durable: forget it; the writer
                // stops once the last handle is gone.
                let mut map = self.lock();
                if matches!(map.rooms.get(&room), Some(Entry::Running(h)) if h.same(&handle)) {
                    map.rooms.remove(&room);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    struct Offline;

    impl super::super::RoomNetwork for Offline {
        fn countersign_invite(
            &self,
            _: RoomView,
            _: crate::core::event::Pdu,
        ) -> super::super::BoxFuture<Result<crate::core::event::Pdu, RoomError>> {
            Box::pin(async { Err(RoomError::Gone) })
        }
        fn backfill(
            &self,
            _: RoomView,
            _: EventId,
            _: usize,
        ) -> super::super::BoxFuture<Result<Vec<crate::core::event::Pdu>, RoomError>> {
            Box::pin(async { Err(RoomError::Gone) })
        }
        fn wake(&self, _: &crate::core::ids::ServerName) {}
        fn linearized(&self, _: &crate::core::ids::ServerName) -> Option<bool> {
            None
        }
        fn relay(
            &self,
            owner: &crate::store::Owner,
            _: &RoomId,
            _: serde_json::Value,
        ) -> super::super::BoxFuture<Result<serde_json::Value, RoomError>> {
            let owner = owner.clone();
            Box::pin(async { Err(RoomError::Elsewhere(owner)) })
        }
    }

    /// Rooms with nothing behind them: `join_turn` needs no writer.
    fn rooms() -> Rooms {
        let store: Arc<dyn crate::store::Store> = Arc::new(crate::store::KvStore::new(crate::store::MemKv::new()));
        let server = crate::core::ids::ServerName::parse("here.test").unwrap();
        let key_id = crate::core::ids::KeyId::parse("ed25519:a").unwrap();
        Rooms::new(RoomDeps {
            rest_after: None,
            env: super::super::machine::Env {
                key: crate::core::crypto::SigningKey::from_seed(server, key_id, &[3; 32]).unwrap(),
                timeline_cache: None,
            },
            positions: crate::store::Positions::open(store.clone()).unwrap(),
            store,
            shared_cache: Arc::default(),
            network: Arc::new(Offline),
            spawn: Arc::new(|task| {
                tokio::spawn(task);
            }),
        })
    }

    #[tokio::test]
    async fn join_turns_leave_nothing_behind_even_when_a_waiter_gives_up() {
        let rooms = rooms();
        let (a, b) = (RoomId::parse("!a:there.test").unwrap(), RoomId::parse("!b:there.test").unwrap());
        let first = rooms.join_turn(&a).await;
        // A second join of the same room waits; the first one ends, and
        // the second one's caller goes away before taking its turn.
        let mut waiter = Box::pin(rooms.join_turn(&a));
        let waited = tokio::time::timeout(Duration::from_millis(20), &mut waiter).await;
        assert!(waited.is_err(), "the turn was taken");
        drop(first);
        drop(waiter);
        let other = rooms.join_turn(&b).await;
        assert_eq!(rooms.joining.lock().unwrap().len(), 1, "only the turn held now");
        drop(other);
        assert!(rooms.joining.lock().unwrap().is_empty());
    }
}
