//! Network faults between servers, through the project's fault proxy on
//! loopback: peers that answer 5xx, 401, 429 with `retry_after_ms`, hang,
//! reset or trickle; a partition of half the participants, then healed; a
//! participant offline while its rooms take 10,000 events. Each is handled
//! by the backoff rules, every server converges to the hub's list with
//! nothing twice, and a slow or dead peer delays no other destination.
//! Plain HTTP between the servers, so the proxy can speak HTTP itself.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::proxy::{FaultProxy, Mode};
use common::*;
use serde_json::json;

const HUB: &str = "hub.test:8448";

fn plain(net: &Net, host: &str) -> lmx::config::Config {
    let mut c = net.config(host);
    c.federation.insecure_plaintext = true;
    c.client.send_per_second = 0.0;
    c.client.send_wait_ms = 1_500;
    c
}

fn no_duplicates(s: &Server, room: &str) {
    let list = s.list(room);
    let unique: BTreeSet<_> = list.iter().collect();
    assert_eq!(unique.len(), list.len(), "{} holds an event twice", s.name());
}

/// Waits until `s` holds the hub's list (from its join on), in order.
async fn converged(hub: &Server, s: &Server, room: &str) {
    eventually(&format!("{} to hold the hub's tail", s.name()), || s.list(room).last() == hub.list(room).last()).await;
    assert!(hub.list(room).ends_with(&s.list(room)), "{} holds the hub's list in order", s.name());
    no_duplicates(s, room);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_peers_are_retried_by_the_backoff_rules_and_delay_no_one_else() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test", "p2.test"] {
        net.reserve(h);
    }
    // The hub reaches p1 through the proxy; p2 directly.
    let proxy = FaultProxy::start(net.resolve["p1.test"]).await;
    let mut hub_config = plain(&net, "hub.test");
    hub_config.federation.resolve.insert("p1.test".into(), proxy.addr);
    hub_config.federation.request_timeout_ms = 2_000;
    let hub = Server::start(hub_config).await;
    let p1 = Server::start(plain(&net, "p1.test")).await;
    let p2 = Server::start(plain(&net, "p2.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let carol = p2.client().register("carol").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    for c in [&bob, &carol] {
        assert_eq!(c.join(&room, HUB).await.status, 200);
    }
    converged(&hub, &p1, &room).await;

    let faults = [
        ("500", Mode::Status { code: 500, body: json!({"errcode": "M_UNKNOWN", "error": "boom"}) }),
        ("401", Mode::Status { code: 401, body: json!({"errcode": "M_FORBIDDEN", "error": "who?"}) }),
        ("hang", Mode::Hang),
        ("reset", Mode::Refuse),
        ("trickle", Mode::Trickle(Duration::from_millis(30))),
    ];
    for (i, (name, mode)) in faults.into_iter().enumerate() {
        proxy.set(mode);
        let mut sent = Vec::new();
        for k in 0..3 {
            sent.push(alice.send_ok(&room, &format!("{name}-{k}"), &format!("during {name} {k}")).await);
        }
        // The other participant is served while p1's link is bad.
        eventually(&format!("p2 to get the events sent during {name}"), || {
            let l = p2.list(&room);
            sent.iter().all(|e| l.iter().any(|x| x.as_str() == e))
        })
        .await;
        if !matches!(name, "trickle") {
            let l = p1.list(&room);
            assert!(!l.iter().any(|x| sent.contains(&x.to_string())), "nothing reached p1 through {name}");
            // The hub keeps trying, by its backoff.
            eventually(&format!("the hub to retry p1 through {name}"), || proxy.seen.lock().unwrap().len() >= 2).await;
        }
        proxy.set(Mode::Pass);
        // Any signed request from p1 wakes the hub's worker for it at once.
        bob.send_ok(&room, &format!("wake-{i}"), "p1 is back").await;
        converged(&hub, &p1, &room).await;
        converged(&hub, &p2, &room).await;
        proxy.seen.lock().unwrap().clear();
    }

    // 429 with retry_after_ms: the hub waits at least that long.
    proxy.set(Mode::Status {
        code: 429,
        body: json!({"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 2_500}),
    });
    alice.send_ok(&room, "limited", "during 429").await;
    eventually("a first attempt to meet the 429", || !proxy.times_of("/send/").is_empty()).await;
    eventually("a second attempt after the wait", || proxy.times_of("/send/").len() >= 2).await;
    let times = proxy.times_of("/send/");
    assert!(times[1] - times[0] >= Duration::from_millis(2_400), "retry_after_ms was honoured: {times:?}");
    proxy.set(Mode::Pass);
    converged(&hub, &p1, &room).await;
    no_duplicates(&hub, &room);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_of_half_the_participants_heals_and_everyone_converges() {
    let mut net = Net::new();
    let hosts = ["hub.test", "p1.test", "p2.test", "p3.test", "p4.test"];
    for h in hosts {
        net.reserve(h);
    }
    // p1 and p2 are cut off from the hub, both ways, by one proxy each way.
    let mut proxies = Vec::new();
    let mut hub_config = plain(&net, "hub.test");
    let mut configs = Vec::new();
    for p in ["p1.test", "p2.test"] {
        let to_p = FaultProxy::start(net.resolve[p]).await;
        let to_hub = FaultProxy::start(net.resolve["hub.test"]).await;
        hub_config.federation.resolve.insert(p.into(), to_p.addr);
        let mut c = plain(&net, p);
        c.federation.resolve.insert("hub.test".into(), to_hub.addr);
        configs.push(c);
        proxies.push(to_p);
        proxies.push(to_hub);
    }
    configs.push(plain(&net, "p3.test"));
    configs.push(plain(&net, "p4.test"));
    let hub = Server::start(hub_config).await;
    let mut parts = Vec::new();
    for c in configs {
        parts.push(Server::start(c).await);
    }
    let alice = hub.client().register("alice").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let mut users = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let u = p.client().register(&format!("user{i}")).await;
        assert_eq!(u.join(&room, HUB).await.status, 200);
        users.push(u);
    }

    for p in &proxies {
        p.set(Mode::Refuse);
    }
    for k in 0..5 {
        alice.send_ok(&room, &format!("hub-{k}"), "from the hub").await;
        for (i, u) in users.iter().enumerate() {
            let a = u.send_text(&room, &format!("u{i}-{k}"), &format!("user {i} message {k}")).await;
            // Cut-off participants keep their events queued (429 after the
            // wait); the others are sequenced at once.
            if i < 2 {
                assert_eq!(a.status, 429, "{}", a.body);
            } else {
                assert_eq!(a.status, 200, "{}", a.body);
            }
        }
    }
    for p in &proxies {
        p.set(Mode::Pass);
    }
    // A retry with the same transaction id returns the event once sequenced.
    for (i, u) in users.iter().enumerate().take(2) {
        for k in 0..5 {
            let mut a = u.send_text(&room, &format!("u{i}-{k}"), "").await;
            for _ in 0..20 {
                if a.status == 200 {
                    break;
                }
                a = u.send_text(&room, &format!("u{i}-{k}"), "").await;
            }
            assert_eq!(a.status, 200, "{}", a.body);
        }
    }
    for p in &parts {
        converged(&hub, p, &room).await;
    }
    no_duplicates(&hub, &room);
    let page =
        alice.ok("GET", &format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(&room)), None).await;
    let bodies = bodies(page["chunk"].as_array().unwrap());
    for i in 0..4 {
        for k in 0..5 {
            let want = format!("user {i} message {k}");
            assert_eq!(bodies.iter().filter(|b| **b == want).count(), 1, "{want} is in the room once");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_offline_for_10000_events_catches_up() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    let hub = Server::start(plain(&net, "hub.test")).await;
    let mut p1 = Server::start(plain(&net, "p1.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let rooms = [
        alice.create_room(json!({"preset": "public_chat"})).await,
        alice.create_room(json!({"preset": "public_chat"})).await,
    ];
    for r in &rooms {
        assert_eq!(bob.join(r, HUB).await.status, 200);
    }
    p1.stop().await;
    let started = Instant::now();
    let senders: Vec<_> = (0..8)
        .map(|w| {
            let (alice, rooms) = (alice.clone(), rooms.clone());
            tokio::spawn(async move {
                for k in 0..1_250 {
                    let room = &rooms[k % 2];
                    alice.send_ok(room, &format!("w{w}-{k}"), &format!("offline {w} {k}")).await;
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    let sent = started.elapsed();
    p1.restart_stopped().await;
    let back = Instant::now();
    for r in &rooms {
        converged(&hub, &p1, r).await;
    }
    eprintln!(
        "10,000 events sent in {:.1} s while p1 was offline; p1 caught up {:.1} s after its restart",
        sent.as_secs_f64(),
        back.elapsed().as_secs_f64()
    );
    assert!(hub.list(&rooms[0]).len() + hub.list(&rooms[1]).len() > 10_000);
}
