//! Rooms at rest: an idle room's writer stops and the next use loads it
//! from the store, with nothing lost and never two writers at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::write_failures::{draft, key_of, participant_resting_after, rooms_resting_after, send, started_room};
use super::Rooms;
use super::{LocalOutcome, RoomCmd, RoomError};
use crate::core::ids::{EventId, RoomId, UserId};
use crate::store::Store;

fn resting_after(after: Duration) -> (Arc<dyn Store>, Arc<Rooms>) {
    let (_, store, rooms) = rooms_resting_after(key_of("hub.test", 7), Some(after));
    (store, Arc::new(rooms))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uses_of_a_resting_room_load_it_once() {
    let (kv, _store, rooms) = rooms_resting_after(key_of("hub.test", 7), Some(Duration::from_millis(20)));
    let rooms = Arc::new(rooms);
    let (room, _) = new_room(&rooms).await;
    // Slow reads, so that loads started together overlap.
    kv.read_delay_us.store(2_000, Ordering::SeqCst);
    // Blocking threads, as request handlers that wake a room block.
    let wake_all = |n: usize| {
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (rooms, room) = (rooms.clone(), room.clone());
                tokio::task::spawn_blocking(move || rooms.get(&room).is_some())
            })
            .collect();
        async move {
            let mut all = true;
            for t in threads {
                all &= t.await.unwrap();
            }
            all
        }
    };
    until_resting(&rooms).await;
    let before = kv.reads.load(Ordering::SeqCst);
    assert!(wake_all(1).await);
    let one_load = kv.reads.load(Ordering::SeqCst) - before;
    assert!(one_load > 0, "a wake reads the store");
    until_resting(&rooms).await;
    let before = kv.reads.load(Ordering::SeqCst);
    assert!(wake_all(8).await, "every caller gets the room");
    let eight = kv.reads.load(Ordering::SeqCst) - before;
    assert_eq!(eight, one_load, "eight callers at once read the room once");
    assert_eq!(rooms.running(), 1);
}

#[tokio::test]
async fn a_room_that_cannot_be_read_back_is_a_failure_not_an_unknown_room() {
    let (kv, _store, rooms) = rooms_resting_after(key_of("hub.test", 7), Some(Duration::from_millis(20)));
    let (room, _) = new_room(&rooms).await;
    until_resting(&rooms).await;
    kv.fail_reads.store(1, Ordering::SeqCst);
    assert!(matches!(rooms.find(&room), Err(RoomError::Storage(_))), "the caller learns the store failed");
    assert!(rooms.find(&room).unwrap().is_some(), "the room wakes once the store reads again");
    let unknown = RoomId::parse("!other:hub.test").unwrap();
    assert!(rooms.find(&unknown).unwrap().is_none());
}

/// A room with its create event and Alice's join, and no handle left.
async fn new_room(rooms: &Rooms) -> (RoomId, UserId) {
    let (room, _, alice) = started_room(rooms).await;
    (room, alice)
}

async fn until_resting(rooms: &Rooms) {
    for _ in 0..400 {
        if rooms.running() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the room never rested");
}

/// Each entry of the stored list points back at the one before it.
fn assert_one_list(store: &Arc<dyn Store>, room: &RoomId, length: u64) {
    let list = store.list(room, 0, length + 10).unwrap();
    assert_eq!(list.len() as u64, length, "every accepted event is in the list, once");
    for pair in list.windows(2) {
        let rec = store.event(&pair[1]).unwrap().unwrap();
        let event: serde_json::Value = serde_json::from_slice(&rec.json).unwrap();
        let prev: Vec<EventId> = serde_json::from_value(event["prev_events"].clone()).unwrap();
        assert_eq!(prev, vec![pair[0].clone()], "a linked list, never a fork");
    }
}

#[tokio::test]
async fn an_idle_room_rests_and_its_next_use_goes_on_from_the_store() {
    let (store, rooms) = resting_after(Duration::from_millis(20));
    let (room, alice) = new_room(&rooms).await;
    until_resting(&rooms).await;
    assert_eq!(rooms.lengths(), vec![(room.clone(), 2)], "a resting room keeps its durable length");
    assert_eq!(rooms.ids(), vec![room.clone()], "and is still known");

    let handle = rooms.get(&room).expect("a resting room wakes");
    assert_eq!(rooms.running(), 1);
    let view = handle.view();
    assert_eq!((view.length, view.tail.clone()), (2, store.list(&room, 1, 2).unwrap().first().cloned()));
    send(&handle, draft(&alice, "m.room.message", None, json!({"body": "after rest"}), "m")).await.unwrap();
    // The same transaction id, after another rest: answered from the store.
    drop(handle);
    until_resting(&rooms).await;
    let again = rooms.get(&room).unwrap();
    let retried = send(&again, draft(&alice, "m.room.message", None, json!({"body": "after rest"}), "m")).await;
    assert_eq!(Some(retried.unwrap()), store.list(&room, 2, 3).unwrap().first().cloned());
    assert_one_list(&store, &room, 3);
}

/// Reading a resting room leaves it at rest: readers get the stored view,
/// read again only once the room changed.
#[tokio::test]
async fn a_resting_room_is_read_without_starting_its_writer() {
    let (store, rooms) = resting_after(Duration::from_millis(20));
    let (room, alice) = new_room(&rooms).await;
    until_resting(&rooms).await;
    let view = rooms.find_view(&room).unwrap().expect("a known room");
    assert_eq!(rooms.running(), 0, "no writer started for a reader");
    assert_eq!((view.length, view.tail.clone()), (2, store.list(&room, 1, 2).unwrap().first().cloned()));
    assert!(crate::core::rooms::StateView::member(&*view.state, alice.as_str()).is_some(), "with the room's state");
    let again = rooms.find_view(&room).unwrap().unwrap();
    assert!(Arc::ptr_eq(&view, &again), "kept while the room is unchanged");
    assert_eq!(rooms.resting_views_kept(), 1);

    let handle = rooms.get(&room).unwrap();
    assert_eq!(rooms.resting_views_kept(), 0, "a running writer publishes its own view");
    send(&handle, draft(&alice, "m.room.message", None, json!({"body": "more"}), "m")).await.unwrap();
    drop(handle);
    until_resting(&rooms).await;
    let changed = rooms.find_view(&room).unwrap().unwrap();
    assert_eq!(changed.length, 3, "the changed room is read again");
    assert!(rooms.find_view(&RoomId::parse("!unknown:hub.test").unwrap()).unwrap().is_none());
    assert_eq!(rooms.running(), 0);
}

#[tokio::test]
async fn a_handle_held_outside_the_directory_keeps_the_room_awake() {
    let (_store, rooms) = resting_after(Duration::from_millis(10));
    let (room, _) = new_room(&rooms).await;
    let held = rooms.get(&room).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rooms.running(), 1, "a room someone may still send to does not rest");
    drop(held);
    until_resting(&rooms).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn senders_racing_rests_lose_nothing_and_never_make_two_writers() {
    let (store, rooms) = resting_after(Duration::from_millis(1));
    let (room, alice) = new_room(&rooms).await;
    let mut senders = Vec::new();
    for s in 0..4 {
        let (rooms, room, alice) = (rooms.clone(), room.clone(), alice.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..50u64 {
                // Pauses around the rest period, with and without a handle
                // held, so sends meet rooms resting, waking and about to rest.
                let pause = |k: u64| Duration::from_micros((i * 7 + s * 13 + k) % 3_000);
                let handle = rooms.get(&room).expect("known room");
                tokio::time::sleep(pause(0)).await;
                let d = draft(&alice, "m.room.message", None, json!({"body": format!("{s}/{i}")}), &format!("{s}-{i}"));
                send(&handle, d).await.unwrap();
                drop(handle);
                tokio::time::sleep(pause(1_500)).await;
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    until_resting(&rooms).await;
    assert_eq!(rooms.lengths(), vec![(room.clone(), 202)]);
    assert_one_list(&store, &room, 202);
}

/// A participant's room rests only once no client waits for the hub's echo
/// of its send; a client that gave up waiting keeps it awake no longer.
#[tokio::test]
async fn a_client_waiting_for_an_echo_keeps_a_participant_room_awake() {
    let (_kv, _store, rooms, handle, user) = participant_resting_after(Some(Duration::from_millis(10))).await;
    let message = draft(&user, "m.room.message", None, json!({"msgtype": "m.text", "body": "hi"}), "t1");
    let outcome = handle.ask(|reply| RoomCmd::Local { draft: message, reply }).await.unwrap();
    let LocalOutcome::Waiting { done, .. } = outcome else { panic!("a participant's send waits for the hub") };
    drop(handle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rooms.running(), 1, "the room does not rest under a waiting client");
    drop(done);
    until_resting(&rooms).await;
}
