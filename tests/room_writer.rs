//! One writer per room, seen from outside: concurrent joins of one remote
//! room give one copy of its list, and slow network work for one event does
//! not hold up the room's other senders.

mod common;

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
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let p1 = Server::start(net.config("p1.test")).await;
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
        let joins = whole.len() - mine.len();
        assert!(joins >= 2, "p1's copy starts at its first join: {} of {} events", mine.len(), whole.len());
    }
}
