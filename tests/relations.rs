//! Relations, threads and bundled aggregations, on the hub and on a
//! participant (each keeps its own relations index).

mod common;

use common::*;
use serde_json::{json, Value};

async fn send(c: &Client, room: &str, txn: &str, ty: &str, content: Value) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/send/{ty}/{txn}", enc(room));
    c.ok("PUT", &path, Some(content)).await["event_id"].as_str().unwrap().to_owned()
}

fn ids(v: &Value) -> Vec<String> {
    v["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_edits_and_relations_are_indexed_on_every_server() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let carol = hub.client().register("carol").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, &hub.name()).await.status, 200);
    assert_eq!(carol.join(&room, &hub.name()).await.status, 200);

    let root = alice.send_ok(&room, "r", "thread root").await;
    let thread = |n: u32| {
        json!({"msgtype": "m.text", "body": format!("reply {n}"),
                                 "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
    };
    let r1 = send(&bob, &room, "t1", "m.room.message", thread(1)).await;
    let r2 = send(&bob, &room, "t2", "m.room.message", thread(2)).await;
    let reaction = send(
        &alice,
        &room,
        "a1",
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}),
    )
    .await;
    let edit = send(
        &alice,
        &room,
        "e1",
        "m.room.message",
        json!({"msgtype": "m.text", "body": "* edited",
        "m.new_content": {"msgtype": "m.text", "body": "edited"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": root}}),
    )
    .await;
    // An edit by someone else is not the event's edit.
    let hijack = send(
        &bob,
        &room,
        "e2",
        "m.room.message",
        json!({"msgtype": "m.text", "body": "* hijack",
        "m.new_content": {"msgtype": "m.text", "body": "hijack"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": root}}),
    )
    .await;
    alice.sync_until(&room, |evs| evs.iter().any(|e| e["content"]["body"] == "* hijack")).await;
    bob.sync_until(&room, |evs| evs.iter().any(|e| e["event_id"] == json!(edit))).await;

    for (c, who) in [(&alice, "hub"), (&bob, "participant")] {
        let base = format!("/_matrix/client/v1/rooms/{}/relations/{}", enc(&room), enc(&root));
        let all = c.ok("GET", &base, None).await;
        assert_eq!(ids(&all).len(), 5, "{who}: {all}");
        assert_eq!((&ids(&all)[0], &ids(&all)[4]), (&hijack, &r1), "{who}: newest first");
        let threaded = c.ok("GET", &format!("{base}/m.thread"), None).await;
        assert_eq!(ids(&threaded), [r2.as_str(), r1.as_str()], "{who}: newest first");
        let forward = c.ok("GET", &format!("{base}/m.thread?dir=f&limit=1"), None).await;
        assert_eq!(ids(&forward), [r1.as_str()], "{who}");
        let next = forward["next_batch"].as_str().unwrap();
        let page2 = c.ok("GET", &format!("{base}/m.thread?dir=f&limit=1&from={next}"), None).await;
        assert_eq!(ids(&page2), [r2.as_str()], "{who}: the second page");
        let reactions = c.ok("GET", &format!("{base}/m.annotation/m.reaction"), None).await;
        assert_eq!(ids(&reactions), [reaction.as_str()], "{who}");

        let threads = c.ok("GET", &format!("/_matrix/client/v1/rooms/{}/threads", enc(&room)), None).await;
        assert_eq!(ids(&threads), [root.as_str()], "{who}");
        let summary = &threads["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
        assert_eq!((&summary["count"], &summary["latest_event"]["event_id"]), (&json!(2), &json!(r2)), "{who}");
        assert_eq!(summary["current_user_participated"], true, "{who}");

        let event = c.ok("GET", &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&root)), None).await;
        assert_eq!(
            event["unsigned"]["m.relations"]["m.replace"]["event_id"],
            json!(edit),
            "{who}: the sender's own edit"
        );
    }
    // /sync and /messages bundle too.
    let synced = alice.sync(None, 0).await;
    let timeline = synced["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
    let e = timeline.iter().find(|e| e["event_id"] == json!(root)).expect("the root in the timeline");
    assert_eq!(e["unsigned"]["m.relations"]["m.thread"]["count"], 2, "{e}");
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20", enc(&room));
    let page = alice.ok("GET", &path, None).await;
    let root_in_page =
        page["chunk"].as_array().unwrap().iter().find(|e| e["event_id"] == json!(root)).cloned().unwrap();
    assert_eq!(root_in_page["unsigned"]["m.relations"]["m.thread"]["count"], 2);
    let theirs =
        carol.ok("GET", &format!("/_matrix/client/v1/rooms/{}/threads?include=participated", enc(&room)), None).await;
    assert_eq!(theirs["chunk"], json!([]), "carol took no part");

    // A redacted reply leaves the thread.
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/x1", enc(&room), enc(&r2));
    bob.ok("PUT", &path, Some(json!({}))).await;
    let threads = alice.ok("GET", &format!("/_matrix/client/v1/rooms/{}/threads", enc(&room)), None).await;
    assert_eq!(threads["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"], 1);

    let stranger = hub.client().register("mallory").await;
    let path = format!("/_matrix/client/v1/rooms/{}/relations/{}", enc(&room), enc(&root));
    assert_eq!(stranger.call("GET", &path, None).await.status, 403);
}
