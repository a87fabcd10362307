//! The rooms this server knows, and the one place a room's writer is
//! started: created by a local user, loaded from the store at start, or
//! joined from a `send_join` answer. A joined room's first records go
//! through its writer's commit like every later event, and concurrent
//! joins of one room are taken one at a time, so a room never has two
//! writers or two copies of its list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use super::task::spawn_room;
use super::{JoinSeed, RoomCmd, RoomDeps, RoomError, RoomHandle, RoomView};
use crate::core::event::RoomVersion;
use crate::core::ids::{EventId, RoomId};

/// The outcome of opening a joined room.
pub enum Opened {
    /// The room is new here and its writer started from the seed.
    Started(EventId),
    /// The room was already followed: the join is an event like any other,
    /// for the caller to hand to this writer.
    Existing(RoomHandle),
}

type JoinLocks = HashMap<RoomId, Arc<tokio::sync::Mutex<()>>>;

pub struct Rooms {
    deps: RoomDeps,
    map: Mutex<HashMap<RoomId, RoomHandle>>,
    joining: Arc<Mutex<JoinLocks>>,
}

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
        Rooms { deps, map: Mutex::default(), joining: Arc::default() }
    }

    pub fn get(&self, id: &RoomId) -> Option<RoomHandle> {
        self.map.lock().expect("poisoned").get(id).cloned()
    }

    pub fn ids(&self) -> Vec<RoomId> {
        self.map.lock().expect("poisoned").keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts the writer of a room a local user creates here (we are its
    /// hub); its first events come as ordinary commands.
    pub fn create(&self, room: RoomId, version: &'static RoomVersion) -> Result<RoomHandle, RoomError> {
        let mut map = self.map.lock().expect("poisoned");
        if map.contains_key(&room) {
            return Err(RoomError::BadEvent(format!("{room} exists already")));
        }
        let me = self.deps.env.key.server().clone();
        let handle = spawn_room(&self.deps, RoomView::empty(room.clone(), version, me));
        map.insert(room, handle.clone());
        Ok(handle)
    }

    /// Starts the writer of a stored room (at start-up).
    pub fn load(&self, room: &RoomId) -> Result<RoomHandle, RoomError> {
        let view = super::load::load_view(&self.deps.store, room)?
            .ok_or_else(|| RoomError::Storage(format!("{room} is not stored")))?;
        let mut map = self.map.lock().expect("poisoned");
        if let Some(h) = map.get(room) {
            return Ok(h.clone());
        }
        let handle = spawn_room(&self.deps, view);
        map.insert(room.clone(), handle.clone());
        Ok(handle)
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
        let (handle, rx) = {
            let mut map = self.map.lock().expect("poisoned");
            if let Some(h) = map.get(&room) {
                return Ok(Opened::Existing(h.clone()));
            }
            let handle = spawn_room(&self.deps, RoomView::empty(room.clone(), seed.version, seed.hub.clone()));
            let (tx, rx) = tokio::sync::oneshot::channel();
            // A new inbox has room: the seed is the writer's first input.
            handle.try_send(RoomCmd::Seed { seed: Box::new(seed), reply: tx })?;
            map.insert(room.clone(), handle.clone());
            (handle, rx)
        };
        let outcome = rx.await.map_err(|_| RoomError::Gone).and_then(|r| r);
        match outcome {
            Ok(id) => Ok(Opened::Started(id)),
            Err(e) => {
                // Nothing of the room is durable: forget it; the writer
                // stops once the last handle is gone.
                let mut map = self.map.lock().expect("poisoned");
                if map.get(&room).is_some_and(|h| h.same(&handle)) {
                    map.remove(&room);
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
    }

    /// Rooms with nothing behind them: `join_turn` needs no writer.
    fn rooms() -> Rooms {
        let store: Arc<dyn crate::store::Store> = Arc::new(crate::store::KvStore::new(crate::store::MemKv::new()));
        let server = crate::core::ids::ServerName::parse("here.test").unwrap();
        let key_id = crate::core::ids::KeyId::parse("ed25519:a").unwrap();
        Rooms::new(RoomDeps {
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
