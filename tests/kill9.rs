//! Every acknowledged event survives `kill -9`, and outbound delivery
//! resumes from the persisted queue: real `lmx serve` processes.

mod common;

use std::time::Duration;

use common::process::Proc;
use common::*;
use serde_json::json;

fn with_token(c: Client, of: &Client) -> Client {
    c.with_user_of(of)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_and_delivery_resumes() {
    kill9_scenario(json!({"preset": "public_chat"})).await;
}

/// The same in a mixed room: full events, state snapshots, extremities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_room_survives_kill_9_too() {
    kill9_scenario(json!({"preset": "public_chat", "room_version": "12"})).await;
}

async fn kill9_scenario(create: serde_json::Value) {
    let mut net = Net::new();
    net.reserve("hub.test");
    net.reserve("p1.test");
    let mut hub = Proc::start(&net, "hub.test");
    let mut p1 = Proc::start(&net, "p1.test");
    let alice = hub.ready().await.register("alice").await;
    let bob = p1.ready().await.register("bob").await;
    let room = alice.create_room(create).await;
    assert_eq!(bob.join(&room, "hub.test:8448").await.status, 200);

    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(alice.send_ok(&room, &format!("a{i}"), &format!("a {i}")).await);
        acked.push(bob.send_ok(&room, &format!("b{i}"), &format!("b {i}")).await);
    }
    hub.kill9();
    hub.spawn();
    let alice = with_token(hub.ready().await, &alice);
    let after = alice.history_ids(&room).await;
    for id in &acked {
        assert!(after.contains(id), "{id} was acknowledged before kill -9");
    }

    // The participant is down while the hub goes on; then the hub dies too.
    p1.kill9();
    for i in 0..20 {
        acked.push(alice.send_ok(&room, &format!("c{i}"), &format!("c {i}")).await);
    }
    hub.kill9();
    hub.spawn();
    p1.spawn();
    let alice = with_token(hub.ready().await, &alice);
    let bob = with_token(p1.ready().await, &bob);
    // Delivery to p1 resumes from the hub's persisted queue.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        seen = bob.history_ids(&room).await;
        if seen.last() == acked.last() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.last(), acked.last(), "p1 caught up after both restarts");
    let hub_history = alice.history_ids(&room).await;
    assert!(hub_history.ends_with(&seen), "p1's list is the hub's tail");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "nothing delivered twice");
}
