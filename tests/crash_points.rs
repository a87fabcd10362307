//! `kill -9` of a hub at each step of an inbound `/send` and of fan-out,
//! repeatedly, under load from a participant and local users: afterwards
//! every acknowledged event is there exactly once, every participant holds
//! every event once and in the hub's order, and a retry with the same
//! transaction id gets the same event id. Real processes; the crash points
//! (`LMX_CRASH_POINT`) make the hub SIGKILL itself at the exact step.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::process::Proc;
use common::*;
use serde_json::json;

const HUB: &str = "hub.test:8448";

/// One message: who sends it, its transaction id, and the event id once
/// a send was acknowledged.
#[derive(Clone)]
struct Message {
    by_participant: bool,
    txn: String,
    acked: Option<String>,
}

struct Net3 {
    _net: Net,
    hub: Proc,
    p1: Proc,
    _p2: Proc,
    alice: Client,
    bob: Client,
    carol: Client,
    room: String,
}

async fn three_servers() -> Net3 {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test", "p2.test"] {
        net.reserve(h);
    }
    let config = |host: &str| {
        let mut c = net.config(host);
        // A send through a dead hub gives up quickly (the LPDU stays queued).
        c.client.send_wait_ms = 3_000;
        c.client.send_per_second = 0.0;
        c
    };
    let (mut hub, mut p1, mut p2) = (
        Proc::configured(&net, config("hub.test")),
        Proc::configured(&net, config("p1.test")),
        Proc::configured(&net, config("p2.test")),
    );
    hub.spawn();
    p1.spawn();
    p2.spawn();
    let alice = hub.ready().await.register("alice").await;
    let bob = p1.ready().await.register("bob").await;
    let carol = p2.ready().await.register("carol").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    for c in [&bob, &carol] {
        let j = c.join(&room, HUB).await;
        assert_eq!(j.status, 200, "{}", j.body);
    }
    Net3 { _net: net, hub, p1, _p2: p2, alice, bob, carol, room }
}

/// A send that may meet a dead server: the event id, or `None`.
async fn try_send(c: &Client, room: &str, txn: &str) -> Option<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room), enc(txn));
    let a = c.try_call("PUT", &path, Some(json!({"msgtype": "m.text", "body": txn}))).await?;
    (a.status == 200).then(|| a.body["event_id"].as_str().unwrap().to_owned())
}

/// Sends from both users, a few at a time, until the hub process dies.
async fn load_until_the_hub_dies(n: &mut Net3, round: usize, messages: &mut Vec<Message>) {
    for batch in 0.. {
        let mut sends = Vec::new();
        for k in 0..6 {
            let by_participant = k % 2 == 1;
            let txn = format!("r{round}-b{batch}-{k}");
            let c = if by_participant { n.bob.clone() } else { n.alice.clone() };
            let room = n.room.clone();
            let t = txn.clone();
            sends.push((by_participant, txn, tokio::spawn(async move { try_send(&c, &room, &t).await })));
        }
        for (by_participant, txn, h) in sends {
            messages.push(Message { by_participant, txn, acked: h.await.unwrap() });
        }
        if !n.hub.is_running() {
            return;
        }
        assert!(batch < 400, "the hub never reached its crash point");
    }
}

async fn run_crashes(point: &str, hits: &[u32]) {
    let mut n = three_servers().await;
    let mut messages: Vec<Message> = Vec::new();
    for (round, hit) in hits.iter().enumerate() {
        n.hub.kill9();
        n.hub.crash_point = Some(format!("{point}:{hit}"));
        n.hub.spawn();
        if n.hub.ready_or_exit().await {
            load_until_the_hub_dies(&mut n, round, &mut messages).await;
        }
        let status = n.hub.wait_exit(Duration::from_secs(30));
        assert!(!status.success(), "the hub was killed");
        assert!(n.hub.log_text().contains(&format!("crash point {point} reached")), "it died at {point}");
    }
    n.hub.crash_point = None;
    n.hub.spawn();
    n.hub.ready().await;
    let acked = messages.iter().filter(|m| m.acked.is_some()).count();
    let list = settle(&n, &messages).await;
    eprintln!(
        "{point}: {} kills under load; {} messages ({acked} acknowledged before a kill), each once in the hub's \
         list of {list} events, both participants converged",
        hits.len(),
        messages.len()
    );
}

/// After the crashes: every message gets an event id (retrying with its
/// transaction id), the acknowledged ones the same as before; the hub holds
/// each exactly once; both participants converge on the hub's list.
async fn settle(n: &Net3, messages: &[Message]) -> usize {
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for m in messages {
        let c = if m.by_participant { &n.bob } else { &n.alice };
        let mut got = None;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            got = try_send(c, &n.room, &m.txn).await;
            if got.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let id = got.unwrap_or_else(|| panic!("{} never got an event id", m.txn));
        if let Some(before) = &m.acked {
            assert_eq!(&id, before, "{}: a retry gets the acknowledged event id", m.txn);
        }
        ids.insert(m.txn.clone(), id);
    }
    let hub_list = hub_list(n).await;
    for (txn, id) in &ids {
        assert_eq!(hub_list.iter().filter(|e| *e == id).count(), 1, "{txn} ({id}) is in the hub's list once");
    }
    let bodies = history_bodies(&n.alice, &n.room).await;
    for txn in ids.keys() {
        assert_eq!(bodies.iter().filter(|b| *b == txn).count(), 1, "{txn} was sequenced exactly once");
    }
    for (name, c) in [("p1", &n.bob), ("p2", &n.carol)] {
        let mut theirs = Vec::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            theirs = c.history_ids(&n.room).await;
            if theirs.last() == hub_list.last() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(theirs.last(), hub_list.last(), "{name} caught up with the hub");
        assert!(hub_list.ends_with(&theirs), "{name} holds the hub's list, in order");
        let unique: BTreeSet<&String> = theirs.iter().collect();
        assert_eq!(unique.len(), theirs.len(), "{name} holds no event twice");
    }
    hub_list.len()
}

async fn history_bodies(c: &Client, room: &str) -> Vec<String> {
    let page = c.ok("GET", &format!("/_matrix/client/v3/rooms/{}/messages?dir=f&limit=1000", enc(room)), None).await;
    bodies(page["chunk"].as_array().unwrap())
}

async fn hub_list(n: &Net3) -> Vec<String> {
    n.alice.history_ids(&n.room).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_before_an_inbound_send_is_appended() {
    run_crashes("send.before_append", &[1, 4, 9, 20, 35]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_the_append_before_the_answer() {
    run_crashes("room.after_flush", &[2, 7, 13, 30, 50]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_the_answer_before_fan_out() {
    run_crashes("deliver.before_send", &[3, 8, 15, 30, 50]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_fan_out() {
    run_crashes("deliver.after_send", &[2, 6, 11, 25, 45]).await;
}

/// A participant with LPDUs queued for a stopped hub, killed, sends each
/// of them exactly once after its restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_killed_with_queued_lpdus_sends_each_once() {
    let mut n = three_servers().await;
    n.hub.kill9();
    let mut messages = Vec::new();
    for i in 0..10 {
        let txn = format!("queued-{i}");
        let acked = try_send(&n.bob, &n.room, &txn).await;
        assert!(acked.is_none(), "the hub is down: nothing is sequenced");
        messages.push(Message { by_participant: true, txn, acked });
    }
    n.p1.kill9();
    n.hub.spawn();
    n.hub.ready().await;
    n.p1.spawn();
    n.p1.ready().await;
    settle(&n, &messages).await;
}
