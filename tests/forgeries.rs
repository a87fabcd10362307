//! Forged and replayed events on the way between servers: a forged event
//! in a send_join answer or a backfill page is refused and nothing of it is
//! stored; an event whose content does not match its hash is kept only in
//! redacted form; an old event inside a new transaction changes nothing.
//! Plain HTTP between the servers, so the fault proxy can rewrite answers.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::proxy::{FaultProxy, Mode, ProxiedPair, Through};
use common::*;
use http::Method;
use lmx::core::ids::{EventId, RoomId, ServerName};
use lmx::federation::client::FedClient;
use lmx::federation::policy::AddressPolicy;
use lmx::federation::UNSTABLE;
use serde_json::{json, Value};

const HUB: &str = "hub.test:8448";

fn plain(net: &Net, host: &str) -> lmx::config::Config {
    net.plain_config(host)
}

/// Changes a signed field of the first event of `key` in an answer.
fn forge(answer: &mut Value, key: &str) {
    if let Some(e) = answer.get_mut(key).and_then(Value::as_array_mut).and_then(|a| a.first_mut()) {
        e["origin_server_ts"] = json!(1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_send_join_answer_is_refused_and_nothing_stored() {
    let ProxiedPair { net: _net, proxy, hub, p1 } = ProxiedPair::start(Through::P1ToHub, |_| {}).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    for key in ["state", "auth_chain"] {
        proxy.set(Mode::Rewrite(Arc::new(move |path: &str, answer: &mut Value| {
            if path.contains("send_join") {
                forge(answer, key);
            }
        })));
        let j = bob.join(&room, HUB).await;
        assert_ne!(j.status, 200, "a forged {key} is not joined on: {}", j.body);
        let id = RoomId::parse(&room).unwrap();
        assert!(p1.node().store.room(&id).unwrap().is_none(), "nothing of the room is stored");
        assert!(p1.node().rooms.get(&id).is_none());
    }
    proxy.set(Mode::Pass);
    assert_eq!(bob.join(&room, HUB).await.status, 200, "the genuine answer is taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_pages_are_checked_event_by_event() {
    let ProxiedPair { net: _net, proxy, hub, p1 } = ProxiedPair::start(Through::P1ToHub, |_| {}).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let mut early = Vec::new();
    for i in 0..5 {
        early.push(alice.send_ok(&room, &format!("e{i}"), &format!("before bob {i}")).await);
    }
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    // bob pages back past his join: that history comes from the hub.
    let messages = |from: Option<String>| {
        let bob = bob.clone();
        let room = room.clone();
        async move {
            let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20", enc(&room));
            if let Some(f) = from {
                path.push_str(&format!("&from={}", enc(&f)));
            }
            bob.call("GET", &path, None).await
        }
    };
    let local = messages(None).await;
    let older = local.body["end"].as_str().expect("history goes on at the hub").to_owned();

    // A forged event in the page: the page is refused, nothing stored.
    proxy.set(Mode::Rewrite(Arc::new(|path: &str, answer: &mut Value| {
        if path.contains("/backfill/") {
            if let Some(pdus) = answer.get_mut("pdus").and_then(Value::as_array_mut) {
                for p in pdus.iter_mut().filter(|p| p["type"] == "m.room.message") {
                    p["sender"] = json!("@mallory:hub.test:8448");
                }
            }
        }
    })));
    let forged = messages(Some(older.clone())).await;
    assert_ne!(forged.status, 200, "{}", forged.body);
    for id in &early {
        assert!(p1.node().store.event(&EventId::parse(id).unwrap()).unwrap().is_none(), "{id} is not stored");
    }

    // Content that does not match its hash: served redacted.
    proxy.set(Mode::Rewrite(Arc::new(|path: &str, answer: &mut Value| {
        if path.contains("/backfill/") {
            if let Some(pdus) = answer.get_mut("pdus").and_then(Value::as_array_mut) {
                for p in pdus.iter_mut().filter(|p| p["type"] == "m.room.message") {
                    p["content"]["body"] = json!("tampered");
                }
            }
        }
    })));
    let tampered = messages(Some(older.clone())).await;
    assert_eq!(tampered.status, 200, "{}", tampered.body);
    let chunk = tampered.body["chunk"].as_array().unwrap();
    assert!(chunk.iter().any(|e| e["type"] == "m.room.message"), "{}", tampered.body);
    assert!(bodies(chunk).is_empty(), "no tampered or original body is shown: {}", tampered.body);

    proxy.set(Mode::Pass);
    let genuine = messages(Some(older)).await;
    assert_eq!(bodies(genuine.body["chunk"].as_array().unwrap()).len(), 5, "{}", genuine.body);
}

/// Events sent to a participant as the hub would, with the hub's key: a
/// content-hash mismatch keeps only the redacted event; an old event in a
/// new transaction is not appended again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_mismatches_are_kept_redacted_and_replays_change_nothing() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    let proxy = FaultProxy::start(net.resolve["p1.test"]).await;
    let mut hub_config = plain(&net, "hub.test");
    hub_config.federation.resolve.insert("p1.test".into(), proxy.addr);
    let hub = Server::start(hub_config).await;
    let p1 = Server::start(plain(&net, "p1.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    let old = alice.send_ok(&room, "old", "an old event").await;
    eventually("p1 to get the old event", || p1.list(&room).iter().any(|e| e.as_str() == old)).await;

    // The hub's own deliveries to p1 stop; the test speaks for the hub.
    proxy.set(Mode::Refuse);
    let fresh = alice.send_ok(&room, "fresh", "the real words").await;
    let as_hub = FedClient::new(
        hub.node().key.clone(),
        None,
        HashMap::from([("p1.test".to_owned(), net.resolve["p1.test"])]),
        AddressPolicy::default(),
        Duration::from_secs(10),
    );
    let stored = |s: &Server, id: &str| -> Value {
        serde_json::from_slice(&s.node().store.event(&EventId::parse(id).unwrap()).unwrap().unwrap().json).unwrap()
    };
    let p1_name = ServerName::parse("p1.test:8448").unwrap();
    let send = |txn: &str, pdu: Value| {
        let path = format!("{UNSTABLE}/send/{txn}");
        let as_hub = &as_hub;
        let p1_name = p1_name.clone();
        async move { as_hub.request(&p1_name, Method::PUT, &path, Some(&json!({"pdus": [pdu]})), true).await.unwrap() }
    };
    let length = p1.list(&room).len();
    let replay = send("replay-1", stored(&hub, &old)).await;
    assert_eq!(replay.json("p1").unwrap()["failed_pdus"], json!({}));
    assert_eq!(p1.list(&room).len(), length, "an old event in a new transaction is not appended again");

    let mut tampered = stored(&hub, &fresh);
    tampered["content"]["body"] = json!("words nobody sent");
    send("tampered-1", tampered).await;
    eventually("p1 to take the event", || p1.list(&room).iter().any(|e| e.as_str() == fresh)).await;
    let rec = p1.node().store.event(&EventId::parse(&fresh).unwrap()).unwrap().unwrap();
    assert!(rec.hash_redacted, "kept because its signatures hold, but marked");
    let kept: Value = serde_json::from_slice(&rec.json).unwrap();
    assert_eq!(kept["content"], json!({}), "only the redacted form is stored: {kept}");

    // The hub's real delivery later changes nothing: one copy, in order.
    proxy.set(Mode::Pass);
    bob.send_ok(&room, "wake", "p1 speaks").await;
    eventually("p1 to hold the hub's tail", || p1.list(&room).last() == hub.list(&room).last()).await;
    let list = p1.list(&room);
    assert_eq!(list.iter().filter(|e| e.as_str() == fresh).count(), 1);
    assert!(hub.list(&room).ends_with(&list));
}
