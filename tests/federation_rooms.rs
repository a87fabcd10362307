//! A hub and two participants on loopback, each a whole lmx server with its
//! own sled directory and TLS certificate from a test CA, names resolved
//! through `federation.resolve`.

mod common;

use common::*;
use serde_json::{json, Value};

const HUB: &str = "hub.test:8448";

/// The participant's list is the hub's from the participant's join on.
fn assert_same_list(hub: &Server, other: &Server, room: &str) {
    let h = hub.list(room);
    let o = other.list(room);
    let start = h.iter().position(|id| Some(id) == o.first()).expect("participant's first event is on the hub");
    assert_eq!(&h[start..], &o[..], "{} diverges from the hub", other.name());
}

async fn wait_converged(hub: &Server, others: &[&Server], room: &str) {
    eventually("every server to hold the hub's tail", || {
        let tail = hub.list(room).last().cloned();
        others.iter().all(|s| s.list(room).last().cloned() == tail)
    })
    .await;
    for o in others {
        assert_same_list(hub, o, room);
    }
}

async fn wait_invite(c: &Client, room: &str) {
    let mut since: Option<String> = None;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        let r = c.sync(since.as_deref(), 1000).await;
        if r["rooms"]["invite"].get(room).is_some() {
            let state = r["rooms"]["invite"][room]["invite_state"]["events"].as_array().cloned().unwrap_or_default();
            assert!(state.iter().any(|e| e["type"] == "m.room.create"), "stripped state has the create event");
            return;
        }
        since = r["next_batch"].as_str().map(str::to_owned);
    }
    panic!("{} never saw the invite", c.user_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_two_participants_converge() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test", "p2.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let p1 = Server::start(net.config("p1.test")).await;
    let p2 = Server::start(net.config("p2.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let carol = p2.client().register("carol").await;

    let room = alice.create_room(json!({"name": "linear", "preset": "private_chat"})).await;
    // Invites to servers not yet in the room go through E10.
    alice.invite(&room, &bob.user_id).await;
    wait_invite(&bob, &room).await;
    let j = bob.join(&room, HUB).await;
    assert_eq!(j.status, 200, "bob joins via make_join/send_join: {}", j.body);
    // A participant invites a user of a third server.
    bob.invite(&room, &carol.user_id).await;
    wait_invite(&carol, &room).await;
    assert_eq!(carol.join(&room, HUB).await.status, 200);

    let mut sent = Vec::new();
    for i in 0..3 {
        for (c, who) in [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")] {
            let body = format!("{who} {i}");
            c.send_ok(&room, &format!("{who}-{i}"), &body).await;
            sent.push(body);
        }
    }
    // State changes: the hub's user may, a participant without power may not.
    assert_eq!(alice.put_state(&room, "m.room.topic", "", json!({"topic": "lm"})).await.status, 200);
    let refused = bob.put_state(&room, "m.room.name", "", json!({"name": "mine"})).await;
    assert_eq!((refused.status, refused.body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{}", refused.body);
    let pl = json!({"users": {alice.user_id.clone(): 100, bob.user_id.clone(): 50}});
    assert_eq!(alice.put_state(&room, "m.room.power_levels", "", pl).await.status, 200);
    let named = bob.put_state(&room, "m.room.name", "", json!({"name": "ours"})).await;
    assert_eq!(named.status, 200, "{}", named.body);
    carol.send_ok(&room, "carol-last", "last").await;
    sent.push("last".into());

    wait_converged(&hub, &[&p1, &p2], &room).await;
    eprintln!("lists: hub {} p1 {} p2 {}", hub.list(&room).len(), p1.list(&room).len(), p2.list(&room).len());

    // Every client sees the messages in the hub's order.
    for c in [&alice, &bob, &carol] {
        let events = c.sync_until(&room, |ev| bodies(ev).last().map(String::as_str) == Some("last")).await;
        let seen: Vec<String> = bodies(&events).into_iter().filter(|b| sent.contains(b)).collect();
        assert_eq!(seen, sent, "{} sees the messages in order", c.user_id);
        let names: Vec<&Value> = events.iter().filter(|e| e["type"] == "m.room.name").collect();
        assert_eq!(names.last().unwrap()["content"]["name"], "ours");
    }
    // Sending again with the same transaction id gives the same event.
    let again = bob.send_ok(&room, "bob-0", "bob 0").await;
    let first = bob.send_ok(&room, "bob-0", "bob 0").await;
    assert_eq!(again, first);
    // History pages back through the list.
    let page = bob.ok("GET", &format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=5", enc(&room)), None).await;
    assert_eq!(page["chunk"].as_array().unwrap().len(), 5);
    assert!(page["end"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_federation_on_loopback() {
    // `federation.insecure_plaintext`: for peers that only speak HTTP.
    let mut net = Net::new();
    net.reserve("hub.test");
    net.reserve("p1.test");
    let plain = |host: &str| {
        let mut c = net.config(host);
        c.federation.insecure_plaintext = true;
        c
    };
    let hub = Server::start(plain("hub.test")).await;
    let p1 = Server::start(plain("p1.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    bob.send_ok(&room, "1", "over http").await;
    wait_converged(&hub, &[&p1], &room).await;
    // Refused unless the listener is on loopback.
    let mut open = net.config("p1.test");
    open.federation.insecure_plaintext = true;
    open.federation.listen = ([0, 0, 0, 0], 0).into();
    assert!(open.validate().is_err());
}

/// A follower trims old message bodies of a mixed room but keeps every
/// state event: state resolution reads them through auth chains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_keeps_the_state_events_of_a_mixed_room() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let mut config = net.config("p1.test");
    config.mode = lmx::config::Mode::Follower;
    config.follower.timeline_cache = 5;
    let p1 = Server::start(config).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat", "room_version": "11"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    let topic = alice.put_state(&room, "m.room.topic", "", json!({"topic": "one"})).await.body["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Replaced at once: the first topic leaves the current state.
    assert_eq!(alice.put_state(&room, "m.room.topic", "", json!({"topic": "two"})).await.status, 200);
    let mut last = String::new();
    for i in 0..150 {
        last = alice.send_ok(&room, &format!("m{i}"), &format!("message {i}")).await;
    }
    eventually("the follower to hold the hub's tail", || {
        p1.list(&room).last().map(|e| e.to_string()) == Some(last.clone())
    })
    .await;
    let store = &p1.node().store;
    let (mut pruned, mut state_kept) = (0, 0);
    for id in p1.list(&room) {
        // The hub's copy says what the event is.
        let original = hub.node().store.event(&id).unwrap().unwrap();
        let is_state = serde_json::from_slice::<Value>(&original.json).unwrap().get("state_key").is_some();
        let rec = store.event(&id).unwrap().unwrap();
        if is_state {
            assert!(!rec.pruned, "state event {id} was trimmed");
            state_kept += 1;
        } else if rec.pruned {
            pruned += 1;
        }
    }
    assert!(pruned > 100, "old messages are trimmed ({pruned})");
    assert_eq!(state_kept, 3, "bob's join and both topics are in the follower's list");
    let old_topic = store.event(&lmx::core::ids::EventId::parse(&topic).unwrap()).unwrap().unwrap();
    assert!(!old_topic.pruned, "a state event no longer in the state stays too");
    // The room still works from the follower.
    bob.send_ok(&room, "late", "still here").await;
}

/// A participant that missed a power-level change sends what the hub now
/// refuses: the hub lists the LPDU in `failed_pdus` under its id, and the
/// participant, matching that id to the pending send it queued, answers its
/// client with 403 (not a timeout); the room goes on, also past a
/// transaction the hub had marked in flight whose items are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_the_hub_refuses_reaches_the_participants_client_as_403() {
    let (_net, hub, mut p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    bob.send_ok(&room, "before", "allowed").await;

    // p1 does not hear that messages now need power 50.
    p1.stop().await;
    let pl = json!({"users": {alice.user_id.clone(): 100}, "events_default": 50});
    assert_eq!(alice.put_state(&room, "m.room.power_levels", "", pl).await.status, 200);
    hub.drop_queue_for("p1.test:8448");
    // As if the hub's delivery had marked a transaction in flight just
    // before its items were dropped: nothing is left to repeat, and what
    // comes next must not wait behind it.
    {
        use lmx::store::records::DestinationState;
        let mark = hub.node().positions.watermark();
        let state = DestinationState { acked: mark - 1, inflight_txn: "gone".into(), inflight_last: mark };
        let dest = lmx::core::ids::ServerName::parse("p1.test:8448").unwrap();
        let mut b = lmx::store::Batch::new();
        b.push(lmx::store::Op::PutDestination { dest, state });
        hub.node().store.write(b).unwrap();
    }
    p1.restart().await;

    let refused = bob.send_text(&room, "after", "not any more").await;
    assert_eq!((refused.status, refused.body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{}", refused.body);
    let retried = bob.send_text(&room, "after", "not any more").await;
    assert_eq!(retried.status, 403, "the same transaction keeps its answer: {}", retried.body);
    alice.send_ok(&room, "on", "the room goes on").await;
    eventually("p1 to catch up with the hub", || p1.list(&room).last() == hub.list(&room).last()).await;
}
