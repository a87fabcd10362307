//! Simplified sliding sync (MSC4186) through the HTTP API: lists sorted by
//! activity with ranges, incremental answers, subscriptions, filters and
//! the extensions Element X turns on.

mod common;

use common::*;
use serde_json::{json, Value};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

async fn slide(c: &Client, pos: Option<&str>, body: &Value) -> Value {
    let path = match pos {
        Some(p) => format!("{PATH}?pos={p}&timeout=10000"),
        None => PATH.to_owned(),
    };
    c.ok("POST", &path, Some(body.clone())).await
}

fn rooms_of(answer: &Value) -> Vec<String> {
    answer["rooms"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_follow_activity_and_answers_carry_only_news() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let versions = alice.ok("GET", "/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["org.matrix.simplified_msc3575"], true);

    let old = alice.create_room(json!({"preset": "public_chat", "name": "Old"})).await;
    let dm =
        alice.create_room(json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id]})).await;
    let new = alice.create_room(json!({"preset": "public_chat", "name": "New"})).await;
    for r in [&old, &dm, &new] {
        assert_eq!(bob.join(r, &hub.name()).await.status, 200);
    }
    let direct = format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(&alice.user_id));
    alice.ok("PUT", &direct, Some(json!({ &bob.user_id: [dm] }))).await;
    alice.send_ok(&old, "o1", "old news").await;
    alice.send_ok(&dm, "d1", "hi bob").await;
    alice.send_ok(&new, "n1", "fresh").await;

    let body = json!({
        "lists": {
            "all": {"ranges": [[0, 1]], "timeline_limit": 2,
                    "required_state": [["m.room.name", ""], ["m.room.member", "$LAZY"]]},
            "dms": {"ranges": [[0, 10]], "timeline_limit": 1, "filters": {"is_dm": true}}
        },
        "extensions": {"to_device": {"enabled": true}, "e2ee": {"enabled": true},
                       "account_data": {"enabled": true}, "typing": {"enabled": true}, "receipts": {"enabled": true}}
    });
    let first = slide(&alice, None, &body).await;
    assert_eq!((&first["lists"]["all"]["count"], &first["lists"]["dms"]["count"]), (&json!(3), &json!(1)));
    let mut got = rooms_of(&first);
    got.sort();
    let mut want = vec![new.clone(), dm.clone()];
    want.sort();
    assert_eq!(got, want, "the two most recent rooms, and the DM");
    let room = &first["rooms"][&new];
    assert_eq!((&room["initial"], &room["name"]), (&json!(true), &json!("New")));
    assert_eq!(room["timeline"].as_array().unwrap().len(), 2);
    assert_eq!(room["timeline"][1]["content"]["body"], "fresh");
    assert!(room["required_state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.name"));
    assert!(first["rooms"][&dm]["heroes"].as_array().unwrap().iter().any(|h| h["user_id"] == json!(bob.user_id)));
    assert_eq!(first["rooms"][&dm]["is_dm"], true);
    assert!(first["extensions"]["account_data"]["global"].as_array().unwrap().iter().any(|e| e["type"] == "m.direct"));
    assert!(first["extensions"]["e2ee"]["device_one_time_keys_count"].is_object());
    let pos = first["pos"].as_str().unwrap().to_owned();

    // The oldest room becomes the most recent: it enters the range whole.
    bob.send_ok(&old, "o2", "old is new").await;
    let second = slide(&alice, Some(&pos), &body).await;
    let room = &second["rooms"][&old];
    assert_eq!(room["initial"], true, "{second}");
    assert_eq!(room["timeline"].as_array().unwrap().last().unwrap()["content"]["body"], "old is new");
    let pos = second["pos"].as_str().unwrap().to_owned();

    // A room the client holds gets only what is new.
    bob.send_ok(&new, "n2", "more").await;
    let third = slide(&alice, Some(&pos), &body).await;
    let room = &third["rooms"][&new];
    assert_eq!((&room["initial"], &room["num_live"]), (&json!(false), &json!(1)), "{third}");
    assert_eq!(room["timeline"].as_array().unwrap().len(), 1);
    let pos = third["pos"].as_str().unwrap().to_owned();

    // Typing and to-device messages come through the extensions.
    let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&dm), enc(&bob.user_id));
    bob.ok("PUT", &typing, Some(json!({"typing": true, "timeout": 30000}))).await;
    let device = alice.device_id().await;
    let msg = json!({"messages": {&alice.user_id: {&device: {"hello": "there"}}}});
    bob.ok("PUT", "/_matrix/client/v3/sendToDevice/m.test/t1", Some(msg)).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut pos = pos;
    let (mut saw_typing, mut saw_message) = (false, false);
    while !(saw_typing && saw_message) {
        assert!(tokio::time::Instant::now() < deadline, "typing {saw_typing}, to-device {saw_message}");
        let next = slide(&alice, Some(&pos), &body).await;
        let ext = &next["extensions"];
        saw_typing |= ext["typing"]["rooms"][&dm]["content"]["user_ids"] == json!([bob.user_id]);
        saw_message |=
            ext["to_device"]["events"].as_array().is_some_and(|e| e.iter().any(|m| m["content"]["hello"] == "there"));
        pos = next["pos"].as_str().unwrap().to_owned();
    }

    // A subscription brings a room outside every range.
    let sub = json!({"lists": {"one": {"ranges": [[0, 0]], "timeline_limit": 1}},
                     "room_subscriptions": {&old: {"timeline_limit": 1, "required_state": [["*", "*"]]}}});
    let subscribed = slide(&alice, None, &sub).await;
    assert!(rooms_of(&subscribed).contains(&old));
    assert!(subscribed["rooms"][&old]["required_state"].as_array().unwrap().len() >= 5, "all of its state");

    let unknown = alice.call("POST", &format!("{PATH}?pos=999_1"), Some(body.clone())).await;
    assert_eq!((unknown.status, &unknown.body["errcode"]), (400, &json!("M_UNKNOWN_POS")));
}
