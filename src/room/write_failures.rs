//! A room's writer over a store whose writes or flushes fail or are held:
//! no caller is told an event is in when its batch, or a batch it was built
//! on, failed; the room reads itself back and goes on once the store works
//! again; what the driver releases once a batch is durable reaches callers
//! whose waits that batch set up.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::RwLock;

use super::machine::Env;
use super::{
    Draft, JoinSeed, LocalOutcome, Opened, RoomCmd, RoomDeps, RoomError, RoomHandle, RoomNetwork, RoomView, Rooms,
};
use crate::core::crypto::SigningKey;
use crate::core::event::{Pdu, RoomVersion, LM_VERSION};
use crate::core::ids::{EventId, KeyId, RoomId, ServerName, UserId};
use crate::store::{BoxFuture, Entries, Kv, KvStore, KvWrite, MemKv, Positions, Store, StoreError};

/// Memory underneath; the next `fail_applies` writes, `fail_flushes`
/// flushes and `fail_reads` reads fail, a flush waits while the test holds
/// `gate`, and each read takes `read_delay_us` and is counted in `reads`.
/// While `claims_refused` and `batches_refused` are set, another process
/// owns every room: claims, and a room writer's batches, are refused.
pub(super) struct FlakyKv {
    inner: MemKv,
    claims_refused: AtomicBool,
    batches_refused: AtomicBool,
    fail_applies: AtomicUsize,
    fail_flushes: AtomicUsize,
    pub(super) fail_reads: AtomicUsize,
    pub(super) read_delay_us: AtomicUsize,
    pub(super) reads: AtomicUsize,
    gate: RwLock<()>,
}

impl FlakyKv {
    fn read(&self) -> Result<(), StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let delay = self.read_delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay as u64));
        }
        if take_one(&self.fail_reads) {
            return Err(StoreError::Backend("injected read failure".into()));
        }
        Ok(())
    }
}

fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok()
}

/// A room alone: no other server takes part, so it never needs the network.
struct NoNetwork;

impl RoomNetwork for NoNetwork {
    fn countersign_invite(&self, _: RoomView, _: Pdu) -> super::BoxFuture<Result<Pdu, RoomError>> {
        Box::pin(async { Err(RoomError::Remote("no network here".into())) })
    }
    fn backfill(&self, _: RoomView, _: EventId, _: usize) -> super::BoxFuture<Result<Vec<Pdu>, RoomError>> {
        Box::pin(async { Err(RoomError::Remote("no network here".into())) })
    }
    fn wake(&self, _: &ServerName) {}
    fn linearized(&self, _: &ServerName) -> Option<bool> {
        None
    }
    fn relay(
        &self,
        owner: &crate::store::Owner,
        _: &RoomId,
        _: serde_json::Value,
    ) -> super::BoxFuture<Result<serde_json::Value, RoomError>> {
        let owner = owner.clone();
        Box::pin(async { Err(RoomError::Elsewhere(owner)) })
    }
}

struct Fixture {
    kv: Arc<FlakyKv>,
    store: Arc<dyn Store>,
    _rooms: Rooms,
    room: RoomId,
    handle: RoomHandle,
    alice: UserId,
}

pub(super) fn draft(
    sender: &UserId,
    event_type: &str,
    state_key: Option<&str>,
    content: serde_json::Value,
    txn: &str,
) -> Draft {
    Draft {
        sender: sender.clone(),
        event_type: event_type.into(),
        state_key: state_key.map(str::to_owned),
        content: content.as_object().cloned().unwrap_or_default(),
        txn: Some(("DEV".into(), txn.into())),
    }
}

pub(super) async fn send(handle: &RoomHandle, d: Draft) -> Result<EventId, RoomError> {
    match handle.ask(|reply| RoomCmd::Local { draft: d, reply }).await? {
        LocalOutcome::Done(id) => Ok(id),
        LocalOutcome::Waiting { .. } => panic!("a hub sequences at once"),
    }
}

pub(super) fn key_of(server: &str, seed: u8) -> SigningKey {
    SigningKey::from_seed(ServerName::parse(server).unwrap(), KeyId::parse("ed25519:t").unwrap(), &[seed; 32]).unwrap()
}

/// The rooms of `key`'s server, over a store whose writes and flushes the
/// test can fail or hold.
fn rooms_of(key: SigningKey) -> (Arc<FlakyKv>, Arc<dyn Store>, Rooms) {
    rooms_resting_after(key, None)
}

/// `rooms_of`, with idle rooms resting after `rest_after`.
pub(super) fn rooms_resting_after(
    key: SigningKey,
    rest_after: Option<Duration>,
) -> (Arc<FlakyKv>, Arc<dyn Store>, Rooms) {
    let kv = Arc::new(FlakyKv {
        inner: MemKv::new(),
        claims_refused: AtomicBool::new(false),
        batches_refused: AtomicBool::new(false),
        fail_applies: AtomicUsize::new(0),
        fail_flushes: AtomicUsize::new(0),
        fail_reads: AtomicUsize::new(0),
        read_delay_us: AtomicUsize::new(0),
        reads: AtomicUsize::new(0),
        gate: RwLock::new(()),
    });
    let store: Arc<dyn Store> = Arc::new(KvStore::new(SharedKv(kv.clone())));
    let rooms = Rooms::new(RoomDeps {
        rest_after,
        env: Env { key, timeline_cache: None },
        store: store.clone(),
        positions: Positions::open(store.clone()).unwrap(),
        shared_cache: Arc::default(),
        network: Arc::new(NoNetwork),
        spawn: Arc::new(|task| {
            tokio::spawn(task);
        }),
    });
    (kv, store, rooms)
}

async fn fixture() -> Fixture {
    let (kv, store, rooms) = rooms_of(key_of("hub.test", 7));
    let (room, handle, alice) = started_room(&rooms).await;
    Fixture { kv, store, _rooms: rooms, room, handle, alice }
}

/// A new LM room hubbed here, with its create event and Alice's join.
pub(super) async fn started_room(rooms: &Rooms) -> (RoomId, RoomHandle, UserId) {
    let room = RoomId::parse("!room:hub.test").unwrap();
    let version = RoomVersion::find(LM_VERSION).unwrap();
    let handle = rooms.create(room.clone(), version).unwrap();
    let alice = UserId::parse("@alice:hub.test").unwrap();
    let mut create = json!({"room_version": version.id});
    if version.auth.creator_in_content {
        create["creator"] = json!(alice.as_str());
    }
    send(&handle, draft(&alice, "m.room.create", Some(""), create, "c")).await.unwrap();
    send(&handle, draft(&alice, "m.room.member", Some(alice.as_str()), json!({"membership": "join"}), "j"))
        .await
        .unwrap();
    (room, handle, alice)
}

/// `Kv` for an `Arc` the test keeps a hand on.
struct SharedKv(Arc<FlakyKv>);

impl Kv for SharedKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.read()?;
        self.0.inner.get(key)
    }
    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Entries, StoreError> {
        self.0.read()?;
        self.0.inner.range(start, end, reverse, limit)
    }
    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), StoreError> {
        if take_one(&self.0.fail_applies) {
            return Err(StoreError::Backend("injected write failure".into()));
        }
        self.0.inner.apply(writes)
    }
    fn apply_claimed(&self, writes: Vec<KvWrite>, _: &crate::store::Claim) -> Result<(), StoreError> {
        if self.0.batches_refused.load(Ordering::SeqCst) {
            return Err(StoreError::Elsewhere(crate::store::Owner::unknown("taken over")));
        }
        self.apply(writes)
    }
    fn claim(&self, what: &crate::store::Claimed) -> Result<i64, StoreError> {
        if self.0.claims_refused.load(Ordering::SeqCst) {
            return Err(StoreError::Elsewhere(crate::store::Owner::unknown(format!(
                "{} is owned by another process",
                what.key()
            ))));
        }
        Ok(1)
    }
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // Which flush fails is decided in the order they are asked for.
            let fails = take_one(&self.0.fail_flushes);
            drop(self.0.gate.read().await);
            if fails {
                return Err(StoreError::Backend("injected flush failure".into()));
            }
            Ok(())
        })
    }
}

impl Fixture {
    fn message(&self, txn: &str) -> Draft {
        draft(&self.alice, "m.room.message", None, json!({"msgtype": "m.text", "body": txn}), txn)
    }

    /// A message sent from a task of its own, to be awaited later.
    fn spawn_send(&self, txn: &str) -> tokio::task::JoinHandle<Result<EventId, RoomError>> {
        let (handle, message) = (self.handle.clone(), self.message(txn));
        tokio::spawn(async move { send(&handle, message).await })
    }

    /// The published view agrees with what is stored.
    fn assert_view_is_stored(&self) {
        let stored = self.store.room(&self.room).unwrap().unwrap();
        let view = self.handle.view();
        assert_eq!(view.length, stored.length);
        assert_eq!(view.tail.as_ref().map(|t| t.to_string()).unwrap_or_default(), stored.tail);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_answered_with_its_error_and_the_room_goes_on() {
    let f = fixture().await;
    let before = f.handle.view().length;
    f.kv.fail_applies.store(1, Ordering::SeqCst);
    assert!(matches!(send(&f.handle, f.message("m1")).await, Err(RoomError::Storage(_))));
    assert_eq!(f.handle.view().length, before, "nothing of the failed batch is shown");
    f.assert_view_is_stored();
    send(&f.handle, f.message("m2")).await.expect("the room goes on");
    assert_eq!(f.handle.view().length, before + 1);
    f.assert_view_is_stored();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_built_while_a_failing_flush_ran_fails_with_it() {
    let f = fixture().await;
    let shut = f.kv.gate.write().await;
    f.kv.fail_flushes.store(1, Ordering::SeqCst);
    let first = f.spawn_send("m1");
    // The first batch is written and its flush waits at the gate; the
    // second is built on it meanwhile, then waits for it.
    wait_until(|| f.store.client_txn(&f.alice, "DEV", "m1").unwrap().is_some()).await;
    let second = f.spawn_send("m2");
    wait_until(|| f.store.client_txn(&f.alice, "DEV", "m2").unwrap().is_some()).await;
    assert!(!first.is_finished() && !second.is_finished(), "nobody is answered before the flush");
    drop(shut);
    assert!(matches!(first.await.unwrap(), Err(RoomError::Storage(_))), "its flush failed");
    assert!(matches!(second.await.unwrap(), Err(RoomError::Storage(_))), "built on a failed batch");
    f.assert_view_is_stored();
    let id = send(&f.handle, f.message("m3")).await.expect("the room goes on");
    assert_eq!(f.handle.view().tail.as_ref(), Some(&id));
    f.assert_view_is_stored();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_is_answered_only_once_its_event_is_on_disk() {
    let f = fixture().await;
    let shut = f.kv.gate.write().await;
    let first = f.spawn_send("m1");
    wait_until(|| f.store.client_txn(&f.alice, "DEV", "m1").unwrap().is_some()).await;
    // The client gives up and retries while the first batch still flushes.
    let retry = f.spawn_send("m1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!retry.is_finished(), "the retry finds the event, but it is not on disk yet");
    drop(shut);
    let (first, retry) = (first.await.unwrap().unwrap(), retry.await.unwrap().unwrap());
    assert_eq!(first, retry, "one event for one transaction");
}

/// A participant's room whose hub is elsewhere: p1's user joined through
/// the hub (built here with the hub's key), and p1 opened the room from the
/// join's seed.
async fn participant() -> (Arc<FlakyKv>, Arc<dyn Store>, Rooms, RoomHandle, UserId) {
    participant_resting_after(None).await
}

/// `participant`, with idle rooms resting after `rest_after`.
pub(super) async fn participant_resting_after(
    rest_after: Option<Duration>,
) -> (Arc<FlakyKv>, Arc<dyn Store>, Rooms, RoomHandle, UserId) {
    let hub_key = key_of("hub.test", 7);
    let version = RoomVersion::find(LM_VERSION).unwrap();
    let room = RoomId::parse("!room:hub.test").unwrap();
    let mut view = RoomView::empty(room.clone(), version, hub_key.server().clone());
    let alice = UserId::parse("@alice:hub.test").unwrap();
    let mut create = json!({"room_version": version.id});
    if version.auth.creator_in_content {
        create["creator"] = json!(alice.as_str());
    }
    let drafts = [
        draft(&alice, "m.room.create", Some(""), create, "c"),
        draft(&alice, "m.room.member", Some(alice.as_str()), json!({"membership": "join"}), "j"),
        draft(&alice, "m.room.join_rules", Some(""), json!({"join_rule": "public"}), "r"),
    ];
    for d in drafts {
        let pdu = Arc::new(super::build::hub_event_from_draft(&view, &hub_key, &d, 1).unwrap());
        view.tail = Some(pdu.event_id().clone());
        view.length += 1;
        Arc::make_mut(&mut view.state).apply(pdu);
    }
    let p1_key = key_of("p1.test", 9);
    let user = UserId::parse("@u:p1.test").unwrap();
    let join = draft(&user, "m.room.member", Some(user.as_str()), json!({"membership": "join"}), "j");
    let lpdu = super::build::lpdu_from_draft(&view, &p1_key, &join, 2).unwrap();
    let join = super::build::hub_event_from_lpdu(&view, &hub_key, &lpdu).unwrap();
    let (kv, store, rooms) = rooms_resting_after(p1_key, rest_after);
    let seed = JoinSeed {
        room: room.clone(),
        version,
        hub: view.hub.clone(),
        outliers: view.state.iter().map(|e| (**e).clone()).collect(),
        state: (*view.state).clone(),
        join,
        depth: 0,
    };
    let turn = rooms.join_turn(&room).await;
    assert!(matches!(rooms.open_joined(seed, &turn).await.unwrap(), Opened::Started(_)));
    let handle = rooms.get(&room).unwrap();
    (kv, store, rooms, handle, user)
}

/// A client's retry of a send still out with the hub, and the hub's refusal
/// of it, taken in one batch: the retry waits for the echo, and the refusal
/// must reach that wait although the batch answers the retry only once it
/// is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_reaches_a_retry_answered_in_the_same_batch() {
    let (kv, store, _rooms, handle, user) = participant().await;
    let message = |txn: &str| draft(&user, "m.room.message", None, json!({"msgtype": "m.text", "body": txn}), txn);
    let (tx, rx) = tokio::sync::oneshot::channel();
    handle.send(RoomCmd::Local { draft: message("t1"), reply: tx }).await.unwrap();
    let Ok(Ok(LocalOutcome::Waiting { lpdu_hash, .. })) = rx.await else { panic!("a participant's send waits") };
    // Two more sends: the writer builds the second while the first's flush
    // is held, then waits for that flush, with its inbox filling.
    let shut = kv.gate.write().await;
    for txn in ["t2", "t3"] {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        handle.send(RoomCmd::Local { draft: message(txn), reply: tx }).await.unwrap();
        wait_until(|| store.client_txn(&user, "DEV", txn).unwrap().is_some()).await;
    }
    let (tx, retry) = tokio::sync::oneshot::channel();
    handle.send(RoomCmd::Local { draft: message("t1"), reply: tx }).await.unwrap();
    handle.send(RoomCmd::LpduRefused { lpdu_hash: lpdu_hash.clone(), error: "M_FORBIDDEN".into() }).await.unwrap();
    drop(shut);
    let Ok(Ok(LocalOutcome::Waiting { lpdu_hash: again, done })) = retry.await else { panic!("the retry waits") };
    assert_eq!(again, lpdu_hash, "the retry is the same LPDU");
    let told = tokio::time::timeout(Duration::from_secs(5), done).await.expect("the refusal reaches the retry");
    assert!(matches!(told, Ok(Err(RoomError::Forbidden(_)))), "{told:?}");
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

/// Another process took the room over: the writer here answers with that,
/// writes nothing and stops; the room is refused while the other process
/// owns it and taken back from the store once it is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_taken_over_by_another_process_stops_its_writer_here() {
    let (kv, store, rooms) = rooms_of(key_of("hub.test", 7));
    let (room, handle, alice) = started_room(&rooms).await;
    let before = store.room(&room).unwrap().unwrap().length;
    kv.claims_refused.store(true, Ordering::SeqCst);
    kv.batches_refused.store(true, Ordering::SeqCst);
    let message = |txn: &str| draft(&alice, "m.room.message", None, json!({"msgtype": "m.text", "body": txn}), txn);
    // Sent together: whichever batch each lands in, or still queued when
    // the writer stops, its caller is told the room moved. Only a send
    // that comes after the writer closed its inbox finds it gone.
    let sends: Vec<_> = (0..20).map(|i| send(&handle, message(&format!("m{i}")))).collect();
    let answers = futures_util::future::join_all(sends).await;
    assert!(matches!(answers[0], Err(RoomError::Elsewhere(_))), "{:?}", answers[0]);
    for answer in answers {
        assert!(matches!(answer, Err(RoomError::Elsewhere(_) | RoomError::Gone)), "{answer:?}");
    }
    assert_eq!(store.room(&room).unwrap().unwrap().length, before, "nothing of the refused batches is stored");
    assert_eq!(rooms.running(), 0, "its room rests");
    assert!(matches!(rooms.find(&room), Err(RoomError::Elsewhere(_))), "refused while owned elsewhere");
    assert_eq!(rooms.find_view(&room).unwrap().unwrap().length, before, "and still read from the store");
    kv.claims_refused.store(false, Ordering::SeqCst);
    kv.batches_refused.store(false, Ordering::SeqCst);
    let handle = rooms.find(&room).unwrap().expect("claimed again once free");
    send(&handle, message("m3")).await.expect("the room goes on from the store");
    assert_eq!(store.room(&room).unwrap().unwrap().length, before + 1);
}

/// A room whose first batch was refused has nothing stored here: it is
/// forgotten, not filed as a room that cannot be read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_room_taken_over_before_its_first_write_is_forgotten() {
    let (kv, _store, rooms) = rooms_of(key_of("hub.test", 7));
    kv.batches_refused.store(true, Ordering::SeqCst);
    let room = RoomId::parse("!new:hub.test").unwrap();
    let version = RoomVersion::find(LM_VERSION).unwrap();
    let handle = rooms.create(room.clone(), version).unwrap();
    let alice = UserId::parse("@alice:hub.test").unwrap();
    let create = draft(&alice, "m.room.create", Some(""), json!({"room_version": version.id}), "c");
    assert!(matches!(send(&handle, create).await, Err(RoomError::Elsewhere(_))));
    let forgotten = async {
        while rooms.knows(&room) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), forgotten).await.expect("the room is forgotten");
}
