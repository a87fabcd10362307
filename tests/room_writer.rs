//! One writer per room, seen from outside: concurrent joins of one remote
//! room give one copy of its list, and slow network work for one event does
//! not hold up the room's other senders.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::proxy::{FaultProxy, Mode, ProxiedPair, Through};
use common::*;
use lmx::core::ids::EventId;
use serde_json::json;

const HUB: &str = "hub.test:8448";

/// `part` (a participant's copy) is a run of consecutive entries of
/// `whole` (the hub's list).
fn is_contiguous_run(part: &[EventId], whole: &[EventId]) -> bool {
    let Some(start) = part.first().and_then(|first| whole.iter().position(|e| e == first)) else {
        return part.is_empty();
    };
    whole.get(start..start + part.len()) == Some(part)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_local_users_joining_one_remote_room_at_once_get_one_copy_of_its_list() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let carol = p1.client().register("carol").await;
    for round in 0..4 {
        let room = alice.create_room(json!({"preset": "public_chat"})).await;
        let (b, c) = tokio::join!(bob.join(&room, HUB), carol.join(&room, HUB));
        assert_eq!(b.status, 200, "round {round}: bob joins: {}", b.body);
        assert_eq!(c.status, 200, "round {round}: carol joins: {}", c.body);
        let (bt, ct) = (format!("b{round}"), format!("c{round}"));
        let (b, c) = tokio::join!(bob.send_text(&room, &bt, "from bob"), carol.send_text(&room, &ct, "from carol"));
        assert_eq!(b.status, 200, "round {round}: bob's send is sequenced: {}", b.body);
        assert_eq!(c.status, 200, "round {round}: carol's send is sequenced: {}", c.body);
        let sent = [b.body["event_id"].as_str().unwrap().to_owned(), c.body["event_id"].as_str().unwrap().to_owned()];
        eventually("p1 has both sends", || {
            let mine = p1.list(&room);
            sent.iter().all(|s| mine.iter().any(|e| e.as_str() == s))
        })
        .await;
        let (mine, whole) = (p1.list(&room), hub.list(&room));
        assert!(is_contiguous_run(&mine, &whole), "round {round}: p1's list {mine:?} is a run of the hub's {whole:?}");
        // Both joins are in the one copy, and it starts at the earlier one.
        let join_of = |user: &str| {
            let found = mine.iter().position(|id| {
                let e: serde_json::Value =
                    serde_json::from_slice(&p1.node().store.event(id).unwrap().unwrap().json).unwrap();
                e["type"] == "m.room.member" && e["state_key"] == user && e["content"]["membership"] == "join"
            });
            found.unwrap_or_else(|| panic!("round {round}: {user}'s join is in p1's list"))
        };
        let (b, c) = (join_of(&bob.user_id), join_of(&carol.user_id));
        assert_eq!(b.min(c), 0, "round {round}: p1's copy starts at the first of the two joins");
    }
}

/// A server that accepts connections and never says a word.
async fn black_hole() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_to_a_silent_server_holds_up_no_other_send() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let (silent, accepted) = black_hole().await;
    let mut config = net.config("hub.test");
    config.federation.resolve.insert("silent.test".into(), silent);
    // The invite must stay pending for the whole test, not time out.
    config.federation.request_timeout_ms = 600_000;
    let hub = Server::start(config).await;
    let alice = hub.client().register("alice").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;

    let inviter = alice.clone();
    let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let invite =
        tokio::spawn(async move { inviter.call("POST", &path, Some(json!({"user_id": "@x:silent.test"}))).await });
    eventually("the invite is out with the silent server", || accepted.load(Ordering::SeqCst) > 0).await;

    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(alice.send_ok(&room, &format!("t{i}"), "while the invite waits").await);
    }
    assert!(!invite.is_finished(), "the sends were answered while the invite still waits for its answer");
    let list = hub.list(&room);
    assert!(sent.iter().all(|s| list.iter().any(|e| e.as_str() == s)), "every send is in the list");
    // The invite is not in the list: nothing was appended without the
    // invitee's server.
    let invites = list
        .iter()
        .filter_map(|id| hub.node().store.event(id).unwrap())
        .filter(|r| String::from_utf8_lossy(&r.json).contains("@x:silent.test"))
        .count();
    assert_eq!(invites, 0);
    invite.abort();
}

/// While an invitee's server takes its time, the room moves on; the invite
/// is then placed on the list as it is by then, and the invitee can join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_answered_after_the_room_moved_on_lands_on_the_new_tail() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    let proxy = FaultProxy::start(net.resolve["p1.test"]).await;
    let mut config = net.config("hub.test");
    config.federation.resolve.insert("p1.test".into(), proxy.addr);
    let hub = Server::start(config).await;
    let p1 = Server::start(net.config("p1.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;

    proxy.set(Mode::Trickle(Duration::from_millis(1)));
    let inviter = alice.clone();
    let (path, bob_id) = (format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), bob.user_id.clone());
    let invite = tokio::spawn(async move { inviter.call("POST", &path, Some(json!({ "user_id": bob_id }))).await });
    eventually("the invite is on its way to p1", || !proxy.times_of("trickled").is_empty()).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(alice.send_ok(&room, &format!("m{i}"), "meanwhile").await);
    }
    let answered = invite.await.unwrap();
    assert_eq!(answered.status, 200, "the invite succeeds: {}", answered.body);
    proxy.set(Mode::Pass);

    let list = hub.list(&room);
    let at = |id: &str| list.iter().position(|e| e.as_str() == id).unwrap();
    let invite_at = list
        .iter()
        .position(|id| {
            let r = hub.node().store.event(id).unwrap().unwrap();
            let e: serde_json::Value = serde_json::from_slice(&r.json).unwrap();
            e["type"] == "m.room.member" && e["content"]["membership"] == "invite"
        })
        .expect("the invite is in the list");
    assert!(sent.iter().all(|s| at(s) < invite_at), "the sends made meanwhile come before the invite");
    assert_eq!(bob.join(&room, HUB).await.status, 200, "the invitee joins");
}

/// A participant filling a gap from a hub whose backfill is held up goes
/// on taking its users' sends: their LPDUs reach the hub meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_fill_from_a_slow_hub_holds_up_no_local_send() {
    // The held backfill must stay pending for the whole test, not time out.
    let tune = |c: &mut lmx::config::Config| c.federation.request_timeout_ms = 600_000;
    let ProxiedPair { net: _net, proxy, hub, mut p1 } = ProxiedPair::start(Through::P1ToHub, tune).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);

    // p1 misses five events: the hub's queue for it is dropped.
    p1.stop().await;
    for i in 0..5 {
        alice.send_ok(&room, &format!("lost{i}"), "lost").await;
    }
    hub.drop_queue_for("p1.test:8448");

    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    proxy.set(Mode::Hold { path: "/backfill/", gate: gate.clone() });
    p1.restart().await;
    alice.send_ok(&room, "next", "after the gap").await;
    eventually("p1 asks the hub for the gap", || !proxy.times_of("/backfill/").is_empty()).await;

    let sender = bob.clone();
    let room2 = room.clone();
    let send = tokio::spawn(async move { sender.send_text(&room2, "b1", "while the gap is open").await });
    let from_bob = |server: &Server| {
        server.list(&room).iter().any(|id| {
            let r = server.node().store.event(id).unwrap().unwrap();
            String::from_utf8_lossy(&r.json).contains("while the gap is open")
        })
    };
    eventually("the hub sequences bob's send while p1's backfill is held", || from_bob(&hub)).await;
    let has_next = |server: &Server| {
        server.list(&room).iter().any(|id| {
            let r = server.node().store.event(id).unwrap().unwrap();
            String::from_utf8_lossy(&r.json).contains("after the gap")
        })
    };
    assert!(!has_next(&p1), "the gap is still open: the event after it waits");

    gate.add_permits(1);
    let sent = send.await.unwrap();
    assert_eq!(sent.status, 200, "bob's send is answered once its echo is in p1's list: {}", sent.body);
    eventually("p1 fills the gap", || p1.list(&room).last() == hub.list(&room).last()).await;
    let (mine, whole) = (p1.list(&room), hub.list(&room));
    assert!(whole.ends_with(&mine), "p1's list is the hub's from bob's join on");
    assert!(from_bob(&p1));
}

/// A participant of a mixed room may be offered the history from before
/// its join (its hub's fan-out can overtake the send_join answer): the
/// events it holds for the room's state stay usable (not marked rejected),
/// nothing old enters its list, and the room goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_before_a_join_offered_again_leaves_a_mixed_room_working() {
    let (net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat", "room_version": "12"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    let hub_list = hub.list(&room);
    let (join, older) = hub_list.split_last().unwrap();
    let pdus: Vec<serde_json::Value> = older
        .iter()
        .map(|id| serde_json::from_slice(&hub.node().store.event(id).unwrap().unwrap().json).unwrap())
        .collect();
    let path = "/_matrix/federation/v1/send/replayed-history";
    let body = json!({"origin": HUB, "origin_server_ts": 1, "pdus": pdus});
    let auth = lmx::federation::xmatrix::sign_request(&hub.node().key, "PUT", path, "p1.test:8448", Some(&body), false);
    let a = raw_federation(&net, &p1, "PUT", path, Some(auth), body.to_string().into_bytes()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    for id in older {
        let record = p1.node().store.event(id).unwrap().unwrap();
        assert!(record.rejected.is_empty(), "{id} kept as it was, not rejected: {}", record.rejected);
    }
    assert_eq!(p1.list(&room), vec![join.clone()], "nothing from before p1's join enters its list");
    let sent = bob.send_ok(&room, "after", "still here").await;
    let seen = alice.sync_until(&room, |evs| evs.iter().any(|e| e["event_id"] == sent)).await;
    assert!(seen.iter().any(|e| e["event_id"] == sent));
}

/// Rooms left idle rest on both servers (their writers stop) and wake on
/// the next use from either side: the participant's send wakes its copy
/// and, through its LPDU, the hub's; nothing is lost and the lists go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_rooms_rest_and_wake_on_either_server() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    let resting = |host: &str| {
        let mut c = net.config(host);
        c.storage.room_idle_secs = 1;
        c
    };
    let hub = Server::start(resting("hub.test")).await;
    let p1 = Server::start(resting("p1.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    alice.send_ok(&room, "a1", "before the rest").await;
    bob.send_ok(&room, "b1", "before the rest too").await;
    let before = hub.list(&room).len();

    for _ in 0..3 {
        eventually("both servers' rooms to rest", || hub.node().rooms.running() == 0 && p1.node().rooms.running() == 0)
            .await;
        assert_eq!(hub.node().rooms.len(), 1, "a resting room is still known");
        bob.send_ok(&room, &format!("b{}", hub.list(&room).len()), "from a resting room").await;
        alice.send_ok(&room, &format!("a{}", hub.list(&room).len()), "to a resting room").await;
    }
    let seen = bob
        .sync_until(&room, |events| events.iter().filter(|e| e["content"]["body"] == "to a resting room").count() == 3)
        .await;
    let bodies = bodies(&seen);
    assert_eq!(bodies.iter().filter(|b| *b == "from a resting room").count(), 3, "{bodies:?}");
    eventually("p1 has the hub's last event", || p1.list(&room).last() == hub.list(&room).last()).await;
    let (mine, whole) = (p1.list(&room), hub.list(&room));
    assert!(is_contiguous_run(&mine, &whole), "p1's list {mine:?} is a run of the hub's {whole:?}");
    assert_eq!(whole.len(), before + 6, "every send after a rest is in the list once");

    // Presence news reaches a client without waking the rooms it shares.
    let mut since = alice.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();
    eventually("the hub's room to rest", || hub.node().rooms.running() == 0).await;
    let status = json!({"presence": "unavailable", "status_msg": "away"});
    bob.ok("PUT", &format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id)), Some(status)).await;
    let mut told = false;
    for _ in 0..40 {
        let r = alice.sync(Some(&since), 500).await;
        since = r["next_batch"].as_str().unwrap().to_owned();
        let events = r["presence"]["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|e| e["sender"] == bob.user_id.as_str() && e["content"]["presence"] == "unavailable") {
            told = true;
            break;
        }
    }
    assert!(told, "alice hears of bob's presence");
    assert_eq!(hub.node().rooms.running(), 0, "the room they share stayed at rest");
}
