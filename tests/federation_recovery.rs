//! Restarts and outages: nothing acknowledged is lost, nothing is applied
//! twice, and servers converge once they can talk again.

mod common;

use common::*;
use serde_json::json;

const HUB: &str = "hub.test:8448";

async fn room_with(hub: &Server, p1: &Server) -> (Client, Client, String) {
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let j = bob.join(&room, HUB).await;
    assert_eq!(j.status, 200, "{}", j.body);
    (alice, bob, room)
}

fn no_duplicates(s: &Server, room: &str) {
    let list = s.list(room);
    let mut sorted = list.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), list.len(), "{} has an event twice", s.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_restart_loses_and_duplicates_nothing() {
    let mut net = Net::new();
    net.reserve("hub.test");
    net.reserve("p1.test");
    let mut hub = Server::start(net.config("hub.test")).await;
    let p1 = Server::start(net.config("p1.test")).await;
    let (alice, bob, room) = room_with(&hub, &p1).await;
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(alice.send_ok(&room, &format!("a{i}"), &format!("before {i}")).await);
        acked.push(bob.send_ok(&room, &format!("b{i}"), &format!("p before {i}")).await);
    }
    hub.restart().await;
    for i in 0..5 {
        acked.push(alice.send_ok(&room, &format!("c{i}"), &format!("after {i}")).await);
        acked.push(bob.send_ok(&room, &format!("d{i}"), &format!("p after {i}")).await);
    }
    eventually("the participant to hold the hub's tail", || p1.list(&room).last() == hub.list(&room).last()).await;
    let list: Vec<String> = hub.list(&room).iter().map(|e| e.to_string()).collect();
    for id in &acked {
        assert!(list.contains(id), "acknowledged {id} survived the restart");
    }
    no_duplicates(&hub, &room);
    no_duplicates(&p1, &room);
    let tail: Vec<String> = p1.list(&room).iter().map(|e| e.to_string()).collect();
    assert!(list.ends_with(&tail));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_participant_catches_up_in_order() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test", "p2.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let mut p1 = Server::start(net.config("p1.test")).await;
    let p2 = Server::start(net.config("p2.test")).await;
    let (alice, bob, room) = room_with(&hub, &p1).await;
    let carol = p2.client().register("carol").await;
    assert_eq!(carol.join(&room, HUB).await.status, 200);
    p1.stop().await;
    let mut sent = Vec::new();
    for i in 0..30 {
        let (c, who) = if i % 2 == 0 { (&alice, "alice") } else { (&carol, "carol") };
        let body = format!("{who} {i}");
        c.send_ok(&room, &format!("m{i}"), &body).await;
        sent.push(body);
    }
    p1.restart().await;
    // Any signed request from the hub... or its retry timer brings it back.
    eventually("p1 to catch up", || p1.list(&room).last() == hub.list(&room).last()).await;
    // The restarted server keeps its client port: the same client goes on.
    let events = bob.sync_until(&room, |ev| bodies(ev).len() >= sent.len()).await;
    let seen: Vec<String> = bodies(&events).into_iter().filter(|b| sent.contains(b)).collect();
    assert_eq!(seen, sent);
    no_duplicates(&p1, &room);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_send_while_hub_is_down_is_queued_and_retried() {
    let mut net = Net::new();
    net.reserve("hub.test");
    net.reserve("p1.test");
    let mut config = net.config("p1.test");
    config.client.send_wait_ms = 500;
    let mut hub = Server::start(net.config("hub.test")).await;
    let p1 = Server::start(config).await;
    let (_alice, bob, room) = room_with(&hub, &p1).await;
    hub.stop().await;
    // The hub is unreachable: a retryable error, the LPDU stays queued.
    let first = bob.send_text(&room, "while-down", "queued").await;
    assert_eq!(first.status, 429, "{}", first.body);
    assert_eq!(first.body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(first.body["retry_after_ms"].is_u64());
    hub.restart().await;
    // The client's retry with the same transaction id gets the event id
    // once the hub has sequenced the queued LPDU.
    let mut id = None;
    for _ in 0..60 {
        let a = bob.send_text(&room, "while-down", "queued").await;
        if a.status == 200 {
            id = a.body["event_id"].as_str().map(str::to_owned);
            break;
        }
        assert_eq!(a.status, 429, "{}", a.body);
    }
    let id = id.expect("the queued event was sequenced");
    let hub_list: Vec<String> = hub.list(&room).iter().map(|e| e.to_string()).collect();
    assert_eq!(hub_list.iter().filter(|e| **e == id).count(), 1, "sequenced once");
    no_duplicates(&hub, &room);
}
