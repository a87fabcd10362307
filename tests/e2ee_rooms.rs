//! Encrypted rooms: an LM room takes `m.room.encryption` at creation and
//! keeps its algorithm (from the hub's users and from a participant's
//! alike), every server's clients see it encrypted, and history
//! visibility applies to `m.room.encrypted` events as to any other.

mod common;

use common::*;
use serde_json::{json, Value};

const MEGOLM: &str = "m.megolm.v1.aes-sha2";

async fn encrypted(c: &Client, room: &str, n: u32) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.encrypted/e{n}", enc(room));
    let content = json!({"algorithm": MEGOLM, "ciphertext": format!("c{n}"), "sender_key": "k", "session_id": "s", "device_id": "D"});
    c.ok("PUT", &path, Some(content)).await["event_id"].as_str().unwrap().to_owned()
}

async fn messages(c: &Client, room: &str) -> Vec<Value> {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(room));
    c.ok("GET", &path, None).await["chunk"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lm_room_keeps_the_encryption_it_was_made_with() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice
        .create_room(json!({
            "preset": "private_chat",
            "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}],
            "invite": [bob.user_id],
        }))
        .await;
    assert_eq!(bob.join(&room, "hub.test").await.status, 200);
    // Both servers' clients see the room encrypted.
    let state_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.encryption/", enc(&room));
    assert_eq!(alice.ok("GET", &state_path, None).await["algorithm"], MEGOLM);
    let mut seen = Value::Null;
    for _ in 0..100 {
        let r = bob.call("GET", &state_path, None).await;
        if r.status == 200 {
            seen = r.body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen["algorithm"], MEGOLM, "the follower's client sees the room encrypted");

    // The same algorithm again is taken; another, or none, is refused, from
    // the hub's user and from the participant's.
    let power = json!({"users": {alice.user_id.as_str(): 100, bob.user_id.as_str(): 100}});
    assert_eq!(alice.put_state(&room, "m.room.power_levels", "", power).await.status, 200);
    assert_eq!(alice.put_state(&room, "m.room.encryption", "", json!({"algorithm": MEGOLM})).await.status, 200);
    for (who, content) in
        [(&alice, json!({"algorithm": "m.other"})), (&bob, json!({"algorithm": "m.other"})), (&alice, json!({}))]
    {
        let r = who.put_state(&room, "m.room.encryption", "", content).await;
        assert_eq!((r.status, r.body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{:?}", r.body);
    }
    assert_eq!(alice.ok("GET", &state_path, None).await["algorithm"], MEGOLM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_visibility_applies_to_encrypted_events() {
    let (_net, hub, _p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let carol = hub.client().register("carol").await;
    let room = alice
        .create_room(json!({
            "preset": "private_chat",
            "initial_state": [
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}},
                {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}},
            ],
        }))
        .await;
    let before = encrypted(&alice, &room, 1).await;
    alice.invite(&room, &carol.user_id).await;
    assert_eq!(carol.join(&room, "hub.test").await.status, 200);
    let after = encrypted(&alice, &room, 2).await;
    let ids: Vec<String> =
        messages(&carol, &room).await.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect();
    assert!(ids.contains(&after), "carol reads what was sent once she joined: {ids:?}");
    assert!(!ids.contains(&before), "not what was sent before: {ids:?}");
    let event = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&before));
    assert_eq!(carol.call("GET", &event, None).await.status, 404);

    // Her sync's timeline neither, also after she changed her name (which
    // is not a join).
    let name = json!({"membership": "join", "displayname": "Carol"});
    assert_eq!(carol.put_state(&room, "m.room.member", &carol.user_id, name).await.status, 200);
    let synced = carol.sync(None, 0).await;
    let timeline: Vec<&str> = synced["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert!(timeline.contains(&after.as_str()) && !timeline.contains(&before.as_str()), "{timeline:?}");
}
