//! Server-side search and room upgrades through the HTTP API.

mod common;

use common::*;
use serde_json::{json, Value};

async fn search(c: &Client, body: Value, next: Option<&str>) -> Value {
    let path = match next {
        Some(n) => format!("/_matrix/client/v3/search?next_batch={n}"),
        None => "/_matrix/client/v3/search".to_owned(),
    };
    c.ok("POST", &path, Some(body)).await["search_categories"]["room_events"].clone()
}

fn bodies_of(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_readable_messages_newest_first_across_rooms() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let one = alice.create_room(json!({"preset": "public_chat"})).await;
    let two = alice.create_room(json!({"preset": "public_chat"})).await;
    let secret = alice.create_room(json!({})).await;
    for r in [&one, &two] {
        assert_eq!(bob.join(r, &hub.name()).await.status, 200);
    }
    alice.send_ok(&one, "a", "the Red fox").await;
    alice.send_ok(&secret, "s", "red secret").await;
    bob.send_ok(&two, "b", "a red herring").await;
    alice.send_ok(&one, "c", "blue sky").await;
    alice.send_ok(&two, "d", "RED alert").await;
    bob.sync_until(&two, |evs| evs.iter().any(|e| e["content"]["body"] == "RED alert")).await;

    let body = json!({"search_categories": {"room_events": {"search_term": "red"}}});
    for (c, who) in [(&alice, "hub"), (&bob, "participant")] {
        let found = search(c, body.clone(), None).await;
        let want: Vec<&str> = if who == "hub" {
            vec!["RED alert", "a red herring", "red secret", "the Red fox"]
        } else {
            vec!["RED alert", "a red herring", "the Red fox"]
        };
        assert_eq!(bodies_of(&found), want, "{who}: newest first, only readable rooms");
        assert_eq!(found["highlights"], json!(["red"]));
    }
    // Pages of one, then the rest, skipping nothing.
    let paged = json!({"search_categories": {"room_events": {"search_term": "red", "filter": {"limit": 1}}}});
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = search(&bob, paged.clone(), next.as_deref()).await;
        seen.extend(bodies_of(&page));
        match page["next_batch"].as_str() {
            Some(n) => next = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["RED alert", "a red herring", "the Red fox"]);
    // Room filters, several words, context.
    let filtered = json!({"search_categories": {"room_events": {"search_term": "red fox",
        "filter": {"rooms": [one]}, "event_context": {"before_limit": 1, "after_limit": 1}}}});
    let found = search(&alice, filtered, None).await;
    assert_eq!(bodies_of(&found), ["the Red fox"]);
    let ctx = &found["results"][0]["context"];
    assert_eq!(ctx["events_after"][0]["content"]["body"], "blue sky");
    let none = search(&alice, json!({"search_categories": {"room_events": {"search_term": "purple"}}}), None).await;
    assert_eq!(none["results"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_makes_a_successor_and_tombstones_the_old_room() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let pairs = [(lmx::core::event::LM_VERSION, lmx::core::event::LM_VERSION), ("10", "12"), ("11", "12")];
    for (n, (from, to)) in pairs.into_iter().enumerate() {
        let old = alice
            .create_room(json!({"room_version": from, "preset": "public_chat", "name": format!("Room {from}"),
                                "topic": "kept", "room_alias_name": format!("up{n}")}))
            .await;
        assert_eq!(bob.join(&old, &hub.name()).await.status, 200);
        let path = format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&old));
        let denied = bob.call("POST", &path, Some(json!({"new_version": to}))).await;
        assert_eq!(denied.status, 403, "{from}: only the powerful upgrade");
        let up = alice.ok("POST", &path, Some(json!({"new_version": to}))).await;
        let new = up["replacement_room"].as_str().unwrap().to_owned();

        let state = |room: &str, ty: &str| format!("/_matrix/client/v3/rooms/{}/state/{ty}", enc(room));
        let create = alice.ok("GET", &state(&new, "m.room.create"), None).await;
        assert_eq!((&create["room_version"], &create["predecessor"]["room_id"]), (&json!(to), &json!(old)), "{from}");
        assert_eq!(alice.ok("GET", &state(&new, "m.room.name"), None).await["name"], json!(format!("Room {from}")));
        assert_eq!(alice.ok("GET", &state(&new, "m.room.topic"), None).await["topic"], "kept");
        assert_eq!(alice.ok("GET", &state(&new, "m.room.join_rules"), None).await["join_rule"], "public");
        let tomb = alice.ok("GET", &state(&old, "m.room.tombstone"), None).await;
        assert_eq!(tomb["replacement_room"], json!(new));
        let pl = alice.ok("GET", &state(&old, "m.room.power_levels"), None).await;
        assert!(pl["events_default"].as_i64().unwrap() >= 50, "{from}: the old room is quiet");
        let alias = format!("#up{n}:{}", hub.name());
        let resolved = bob.ok("GET", &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), None).await;
        assert_eq!(resolved["room_id"], json!(new), "{from}: the alias moved");
        assert_eq!(bob.join(&new, &hub.name()).await.status, 200, "{from}: the successor is joinable");
    }
    let mixed = alice.create_room(json!({"room_version": "11"})).await;
    let path = format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&mixed));
    let across = alice.call("POST", &path, Some(json!({"new_version": lmx::core::event::LM_VERSION}))).await;
    assert_eq!((across.status, &across.body["errcode"]), (400, &json!("M_UNSUPPORTED_ROOM_VERSION")));
}
