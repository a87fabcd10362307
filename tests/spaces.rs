//! Space hierarchies across a hub and a participant: rooms held locally,
//! rooms asked of their servers over federation, and what each user may
//! see.

mod common;

use common::*;
use serde_json::{json, Value};

fn names(v: &Value) -> Vec<String> {
    v["rooms"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap_or("").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_space_is_walked_through_its_children_on_every_server() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let space = alice
        .create_room(json!({"preset": "public_chat", "name": "Space", "creation_content": {"type": "m.space"}}))
        .await;
    let open = alice.create_room(json!({"preset": "public_chat", "name": "Open"})).await;
    let closed = alice.create_room(json!({"preset": "private_chat", "name": "Closed"})).await;
    // `order` decides; both may share a millisecond, and then room ids
    // (random) would.
    for (child, suggested, order) in [(&open, true, "a"), (&closed, false, "b")] {
        let content = json!({"via": [hub.name()], "suggested": suggested, "order": order});
        assert_eq!(alice.put_state(&space, "m.space.child", child, content).await.status, 200);
    }

    let path = format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&space));
    let mine = alice.ok("GET", &path, None).await;
    assert_eq!(names(&mine), ["Space", "Open", "Closed"]);
    assert_eq!(mine["rooms"][0]["room_type"], "m.space");
    assert_eq!(mine["rooms"][0]["children_state"].as_array().unwrap().len(), 2);
    let suggested = alice.ok("GET", &format!("{path}?suggested_only=true"), None).await;
    assert_eq!(names(&suggested), ["Space", "Open"]);
    let page = alice.ok("GET", &format!("{path}?limit=1"), None).await;
    assert_eq!(names(&page), ["Space"]);
    let next = page["next_batch"].as_str().unwrap();
    assert_eq!(names(&alice.ok("GET", &format!("{path}?limit=1&from={next}"), None).await), ["Open"]);

    // From p1, before and after joining the space: the space and its open
    // child come from the hub; the closed room is not shown.
    let theirs = bob.ok("GET", &path, None).await;
    assert_eq!(names(&theirs), ["Space", "Open"]);
    assert_eq!(bob.join(&space, &hub.name()).await.status, 200);
    assert_eq!(names(&bob.ok("GET", &path, None).await), ["Space", "Open"]);

    // Closed rooms stay closed to a stranger asking for them directly.
    let closed_path = format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&closed));
    assert_eq!(bob.call("GET", &closed_path, None).await.status, 403);
}
