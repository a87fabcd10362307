//! Push: pushers through the HTTP API, notifications delivered to a push
//! gateway the test runs (real HTTP on loopback), retried while it fails
//! and after a `kill -9`, `GET notifications`, and thread-aware unread
//! counts in `/sync`.

mod common;

use std::time::Duration;

use common::gateway::{Gateway, Mode};
use common::process::Proc;
use common::*;
use serde_json::{json, Value};

fn allow_loopback(c: &mut lmx::config::Config) {
    c.push.allow_ip_ranges = vec!["127.0.0.0/8".parse().unwrap()];
}

fn pusher(url: &str, pushkey: &str) -> Value {
    json!({
        "kind": "http", "app_id": "org.example.app", "pushkey": pushkey,
        "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
        "data": {"url": url, "custom": "kept"}
    })
}

async fn pushers_of(c: &Client) -> Vec<Value> {
    c.ok("GET", "/_matrix/client/v3/pushers", None).await["pushers"].as_array().unwrap().clone()
}

/// A one-to-one room of alice and bob.
async fn pair(alice: &Client, bob: &Client, hub: &str) -> String {
    let room = alice.create_room(json!({"preset": "private_chat", "invite": [bob.user_id]})).await;
    assert_eq!(bob.join(&room, hub).await.status, 200);
    room
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_reaches_the_gateway_with_what_the_spec_lists() {
    let gateway = Gateway::start(Mode::Accept).await;
    let (_net, hub) = hub_with(allow_loopback).await;
    let alice = hub.client().register("alice").await;
    let bob = hub.client().register("bob").await;
    alice
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id)),
            Some(json!({"displayname": "Alice A"})),
        )
        .await;
    let room = pair(&alice, &bob, &hub.name()).await;
    alice.put_state(&room, "m.room.name", "", json!({"name": "Tea"})).await;
    bob.ok("POST", "/_matrix/client/v3/pushers/set", Some(pusher(&gateway.url, "bobkey"))).await;

    let first = alice.send_ok(&room, "t1", "hello bob").await;
    eventually("the first push", || gateway.delivered_for(&first).len() == 1).await;
    let n = &gateway.delivered_for(&first)[0];
    assert_eq!((n["room_id"].as_str(), n["type"].as_str()), (Some(room.as_str()), Some("m.room.message")));
    assert_eq!(
        (n["sender"].as_str(), n["sender_display_name"].as_str()),
        (Some(alice.user_id.as_str()), Some("Alice A"))
    );
    assert_eq!(n["room_name"], "Tea");
    assert_eq!(n["content"]["body"], "hello bob");
    assert_eq!(n["counts"]["unread"], 1);
    assert_eq!(n["prio"], "high", "a one-to-one message rings");
    let device = &n["devices"][0];
    assert_eq!((device["app_id"].as_str(), device["pushkey"].as_str()), (Some("org.example.app"), Some("bobkey")));
    assert_eq!(device["data"], json!({"custom": "kept"}), "the URL stays with the server");
    assert_eq!(device["tweaks"]["sound"], "default");
    assert!(device["pushkey_ts"].as_u64().is_some_and(|ts| ts > 1_600_000_000));

    // The badge counts what bob has not read, across his rooms.
    let second = alice.send_ok(&room, "t2", "are you there?").await;
    eventually("the second push", || gateway.delivered_for(&second).len() == 1).await;
    assert_eq!(gateway.delivered_for(&second)[0]["counts"]["unread"], 2);
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&second));
    bob.ok("POST", &receipt, Some(json!({}))).await;
    let third = alice.send_ok(&room, "t3", "hello again").await;
    eventually("the third push", || gateway.delivered_for(&third).len() == 1).await;
    assert_eq!(gateway.delivered_for(&third)[0]["counts"]["unread"], 1, "the receipt cleared the others");

    // Bob's own messages and alice's edits (suppressed by default rules) push nothing.
    let own = bob.send_ok(&room, "b1", "from bob").await;
    let edit = json!({"msgtype": "m.text", "body": "* hello", "m.new_content": {"msgtype": "m.text", "body": "hello"},
                      "m.relates_to": {"rel_type": "m.replace", "event_id": first}});
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/e1", enc(&room));
    let edit_id = alice.ok("PUT", &path, Some(edit)).await["event_id"].as_str().unwrap().to_owned();
    let after = alice.send_ok(&room, "t4", "last").await;
    eventually("the last push", || gateway.delivered_for(&after).len() == 1).await;
    assert!(gateway.delivered_for(&own).is_empty() && gateway.delivered_for(&edit_id).is_empty());
    assert!(gateway.attempts().iter().all(|a| a["notification"]["devices"][0]["pushkey"] == "bobkey"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pusher_formats_mentions_and_rejections() {
    let gateway = Gateway::start(Mode::Accept).await;
    let (_net, hub) = hub_with(allow_loopback).await;
    let alice = hub.client().register("alice").await;
    let bob = hub.client().register("bob").await;
    let carol = hub.client().register("carol").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    for c in [&bob, &carol] {
        assert_eq!(c.join(&room, &hub.name()).await.status, 200);
    }
    let mut ids_only = pusher(&gateway.url, "bob-ids");
    ids_only["data"]["format"] = json!("event_id_only");
    bob.ok("POST", "/_matrix/client/v3/pushers/set", Some(ids_only)).await;
    carol.ok("POST", "/_matrix/client/v3/pushers/set", Some(pusher(&gateway.url, "carol-key"))).await;

    // In a room of three, a plain message notifies quietly; a mention highlights.
    let plain = alice.send_ok(&room, "t1", "hello all").await;
    eventually("both pushes", || gateway.delivered_for(&plain).len() == 2).await;
    let for_bob = gateway.delivered_for(&plain).into_iter().find(|n| n["devices"][0]["pushkey"] == "bob-ids").unwrap();
    assert!(for_bob.get("content").is_none() && for_bob.get("sender").is_none(), "event_id_only: {for_bob}");
    let for_carol =
        gateway.delivered_for(&plain).into_iter().find(|n| n["devices"][0]["pushkey"] == "carol-key").unwrap();
    assert_eq!(for_carol["prio"], "low");
    assert_eq!(for_carol["devices"][0]["tweaks"], json!({}));
    let mention = json!({"msgtype": "m.text", "body": "carol, look", "m.mentions": {"user_ids": [carol.user_id]}});
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/m1", enc(&room));
    let mentioned = alice.ok("PUT", &path, Some(mention)).await["event_id"].as_str().unwrap().to_owned();
    eventually("the mention", || gateway.delivered_for(&mentioned).len() == 2).await;
    let hl = gateway.delivered_for(&mentioned).into_iter().find(|n| n["devices"][0]["pushkey"] == "carol-key").unwrap();
    assert_eq!((hl["prio"].as_str(), &hl["devices"][0]["tweaks"]["highlight"]), (Some("high"), &json!(true)));

    // A gateway that rejects the pushkey makes the server drop the pusher.
    gateway.set(Mode::Reject);
    alice.send_ok(&room, "t2", "anyone?").await;
    let mut gone = false;
    for _ in 0..600 {
        gone = pushers_of(&carol).await.is_empty() && pushers_of(&bob).await.is_empty();
        if gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "rejected pushers are removed");
    let rejected = gateway.attempts().len();
    gateway.set(Mode::Accept);
    let later = alice.send_ok(&room, "t3", "still there?").await;
    let marker = carol.send_ok(&room, "c1", "sync point").await;
    // Alice has no pusher: nothing for anyone now. Wait for the marker to
    // be sequenced past, then check nothing more came.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(gateway.delivered_for(&later).is_empty() && gateway.delivered_for(&marker).is_empty());
    assert_eq!(gateway.attempts().len(), rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushers_are_checked_listed_moved_and_removed() {
    let (_net, hub) = hub_with(allow_loopback).await;
    let alice = hub.client().register("alice").await;
    let bob = hub.client().register("bob").await;
    let url = "https://push.example.org/_matrix/push/v1/notify";
    let set = "/_matrix/client/v3/pushers/set";

    let bad = |change: fn(&mut Value)| {
        let mut p = pusher(url, "k1");
        change(&mut p);
        p
    };
    type Change = fn(&mut Value);
    let cases: [(Change, &str); 6] = [
        (|p| p["data"]["url"] = json!("https://push.example.org/notify"), "M_INVALID_PARAM"),
        (|p| p["data"]["url"] = json!("file:///etc/passwd"), "M_INVALID_PARAM"),
        (|p| p["kind"] = json!("email"), "M_INVALID_PARAM"),
        (|p| p["app_id"] = json!("a".repeat(65)), "M_INVALID_PARAM"),
        (|p| drop(p.as_object_mut().unwrap().remove("lang")), "M_MISSING_PARAM"),
        (|p| drop(p["data"].as_object_mut().unwrap().remove("url")), "M_MISSING_PARAM"),
    ];
    for (change, code) in cases {
        let a = alice.call("POST", set, Some(bad(change))).await;
        assert_eq!((a.status, a.body["errcode"].as_str()), (400, Some(code)), "{}", a.body);
    }
    assert!(pushers_of(&alice).await.is_empty(), "nothing kept from a refused request");

    alice.ok("POST", set, Some(pusher(url, "k1"))).await;
    let mut renamed = pusher(url, "k1");
    renamed["device_display_name"] = json!("Tablet");
    alice.ok("POST", set, Some(renamed)).await;
    let listed = pushers_of(&alice).await;
    assert_eq!(listed.len(), 1, "the same app_id and pushkey replace: {listed:?}");
    assert_eq!(listed[0]["device_display_name"], "Tablet");
    assert_eq!(listed[0]["data"]["url"], url);

    // Without `append`, the pair moves to the user who set it last.
    bob.ok("POST", set, Some(pusher(url, "k1"))).await;
    assert!(pushers_of(&alice).await.is_empty());
    assert_eq!(pushers_of(&bob).await.len(), 1);
    let mut appended = pusher(url, "k1");
    appended["append"] = json!(true);
    alice.ok("POST", set, Some(appended)).await;
    assert_eq!((pushers_of(&alice).await.len(), pushers_of(&bob).await.len()), (1, 1), "append keeps both");

    // kind null removes; logging out removes the device's own.
    let gone = json!({"kind": null, "app_id": "org.example.app", "pushkey": "k1"});
    alice.ok("POST", set, Some(gone)).await;
    assert!(pushers_of(&alice).await.is_empty());
    bob.ok("POST", "/_matrix/client/v3/logout", Some(json!({}))).await;
    let bob2 = hub.client().login("bob").await;
    assert!(pushers_of(&bob2).await.is_empty(), "a device's pushers go with it");

    let wrong = alice.call("GET", set, None).await;
    assert_eq!(wrong.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_list_newest_first_with_read_marks() {
    let (_net, hub) = hub_with(|_| {}).await;
    let alice = hub.client().register("alice").await;
    let bob = hub.client().register("bob").await;
    let room = pair(&alice, &bob, &hub.name()).await;
    let m1 = alice.send_ok(&room, "t1", "one").await;
    let m2 = alice.send_ok(&room, "t2", "two").await;
    bob.send_ok(&room, "b1", "mine").await;
    let mention = json!({"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": [bob.user_id]}});
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/m1", enc(&room));
    let m3 = alice.ok("PUT", &path, Some(mention)).await["event_id"].as_str().unwrap().to_owned();
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&m1));
    bob.ok("POST", &receipt, Some(json!({}))).await;

    let all = bob.ok("GET", "/_matrix/client/v3/notifications", None).await;
    let list = all["notifications"].as_array().unwrap();
    let ids: Vec<&str> = list.iter().map(|n| n["event"]["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids[..3], [m3.as_str(), m2.as_str(), m1.as_str()], "{all}");
    assert_eq!(list[3]["event"]["content"]["membership"], "invite", "bob's invite notified him too");
    assert_eq!(list.len(), 4);
    let read: Vec<bool> = list.iter().map(|n| n["read"].as_bool().unwrap()).collect();
    assert_eq!(read, [false, false, true, true]);
    assert_eq!(list[0]["room_id"], room);
    assert!(list[0]["actions"].as_array().unwrap().contains(&json!({"set_tweak": "highlight"})));
    assert!(list[0]["ts"].as_i64().is_some());

    let high = bob.ok("GET", "/_matrix/client/v3/notifications?only=highlight", None).await;
    let high: Vec<&str> =
        high["notifications"].as_array().unwrap().iter().map(|n| n["event"]["event_id"].as_str().unwrap()).collect();
    assert_eq!(high, [m3.as_str()]);

    // Paged one at a time through the tokens.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let q = match &from {
            Some(f) => format!("/_matrix/client/v3/notifications?limit=1&from={f}"),
            None => "/_matrix/client/v3/notifications?limit=1".to_owned(),
        };
        let page = bob.ok("GET", &q, None).await;
        seen.extend(page["notifications"].as_array().unwrap().iter().map(|n| n["event"]["event_id"].clone()));
        match page["next_token"].as_str() {
            Some(t) => from = Some(t.to_owned()),
            None => break,
        }
        assert!(seen.len() <= 4, "pages end");
    }
    assert_eq!(seen[..3], [json!(m3), json!(m2), json!(m1)]);
    assert_eq!(seen.len(), 4);
    let bad = bob.call("GET", "/_matrix/client/v3/notifications?only=everything", None).await;
    assert_eq!((bad.status, bad.body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let bad = bob.call("GET", "/_matrix/client/v3/notifications?from=yesterday", None).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_split_by_thread_when_asked() {
    let (_net, hub) = hub_with(|_| {}).await;
    let alice = hub.client().register("alice").await;
    let bob = hub.client().register("bob").await;
    let room = pair(&alice, &bob, &hub.name()).await;
    let root = alice.send_ok(&room, "t1", "thread root").await;
    let in_thread = |n: u32| {
        json!({"msgtype": "m.text", "body": format!("reply {n}"),
               "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                                "m.in_reply_to": {"event_id": root}}})
    };
    let mut replies = Vec::new();
    for n in 0..2 {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/r{n}", enc(&room));
        replies.push(alice.ok("PUT", &path, Some(in_thread(n))).await["event_id"].as_str().unwrap().to_owned());
    }
    alice.send_ok(&room, "t2", "main again").await;

    let thread_aware = enc(r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#);
    let sync_with = |filter: String| {
        let bob = bob.clone();
        let room = room.clone();
        async move {
            let r = bob.ok("GET", &format!("/_matrix/client/v3/sync?filter={filter}"), None).await;
            r["rooms"]["join"][&room].clone()
        }
    };
    let split = sync_with(thread_aware.clone()).await;
    assert_eq!(split["unread_notifications"]["notification_count"], 2, "root and the last message: {split}");
    assert_eq!(split["unread_thread_notifications"][&root]["notification_count"], 2);
    let whole = sync_with(enc("{}")).await;
    assert_eq!(whole["unread_notifications"]["notification_count"], 4, "a client that is not thread-aware sees all");
    assert!(whole.get("unread_thread_notifications").is_none());

    // A receipt in the thread clears the thread, not the main timeline.
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&replies[1]));
    bob.ok("POST", &receipt, Some(json!({"thread_id": root}))).await;
    let split = sync_with(thread_aware.clone()).await;
    assert_eq!(split["unread_notifications"]["notification_count"], 2);
    assert!(split["unread_thread_notifications"].get(&root).is_none(), "{split}");
    // A receipt naming an event outside the thread is refused.
    let wrong = alice.send_ok(&room, "t3", "not in the thread").await;
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&wrong));
    let refused = bob.call("POST", &path, Some(json!({"thread_id": root}))).await;
    assert_eq!((refused.status, refused.body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let refused = bob.call("POST", &path, Some(json!({"thread_id": "sideways"}))).await;
    assert_eq!(refused.status, 400);
    // The main timeline's own receipt clears the rest.
    bob.ok("POST", &path, Some(json!({"thread_id": "main"}))).await;
    let split = sync_with(thread_aware.clone()).await;
    assert_eq!(split["unread_notifications"]["notification_count"], 0);

    // A reaction belongs to its target's thread: a threaded receipt on it
    // is taken.
    let reaction = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": replies[0], "key": "👍"}});
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.reaction/x1", enc(&room));
    let reaction = alice.ok("PUT", &path, Some(reaction)).await["event_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&reaction));
    bob.ok("POST", &path, Some(json!({"thread_id": root}))).await;
    let refused = bob.call("POST", &path, Some(json!({"thread_id": "main"}))).await;
    assert_eq!(refused.status, 400, "the reaction is not in the main timeline");
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.fully_read/{}", enc(&room), enc(&wrong));
    let refused = bob.call("POST", &path, Some(json!({"thread_id": "main"}))).await;
    assert_eq!((refused.status, refused.body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));

    // Sending reads what came before: bob's own message clears the counts.
    alice.send_ok(&room, "t4", "one more").await;
    assert_eq!(sync_with(thread_aware.clone()).await["unread_notifications"]["notification_count"], 1);
    bob.send_ok(&room, "b1", "caught up").await;
    assert_eq!(sync_with(thread_aware).await["unread_notifications"]["notification_count"], 0);
}

/// An invite to a room the invitee's server does not hold yet (the room
/// lives on another server) is pushed, named from its stripped state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_from_another_server_is_pushed() {
    let gateway = Gateway::start(Mode::Accept).await;
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let mut p1_config = net.config("p1.test");
    allow_loopback(&mut p1_config);
    let p1 = Server::start(p1_config).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    bob.ok("POST", "/_matrix/client/v3/pushers/set", Some(pusher(&gateway.url, "bobkey"))).await;
    let room = alice.create_room(json!({"name": "Garden"})).await;
    alice.invite(&room, &bob.user_id).await;
    eventually("the invite's push", || {
        gateway.delivered().iter().any(|n| n["room_id"] == room.as_str() && n["membership"] == "invite")
    })
    .await;
    let n = gateway.delivered().into_iter().find(|n| n["membership"] == "invite").unwrap();
    assert_eq!((n["user_is_target"].as_bool(), n["room_name"].as_str()), (Some(true), Some("Garden")), "{n}");
    assert_eq!(n["sender"], alice.user_id);
}

/// Notifications wait in the store while the gateway fails, and are
/// delivered after the server is killed and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_survives_a_failing_gateway_and_kill_9() {
    let gateway = Gateway::start(Mode::Fail(503)).await;
    let net = {
        let mut n = Net::new();
        n.reserve("hub.test");
        n
    };
    let mut config = net.config("hub.test");
    allow_loopback(&mut config);
    let mut hub = Proc::configured(&net, config);
    hub.spawn();
    let c = hub.ready().await;
    let alice = c.clone().register("alice").await;
    let bob = c.register("bob").await;
    let room = pair(&alice, &bob, "hub.test").await;
    bob.ok("POST", "/_matrix/client/v3/pushers/set", Some(pusher(&gateway.url, "bobkey"))).await;
    let event = alice.send_ok(&room, "t1", "while the gateway is down").await;
    eventually("a failed attempt", || {
        gateway.attempts().iter().any(|a| a["notification"]["event_id"] == event.as_str())
    })
    .await;
    assert!(gateway.delivered().is_empty());

    hub.kill9();
    gateway.set(Mode::Accept);
    hub.spawn();
    hub.ready().await;
    eventually("the push after the restart", || gateway.delivered_for(&event).len() == 1).await;
    let n = &gateway.delivered_for(&event)[0];
    assert_eq!(n["content"]["body"], "while the gateway is down");
    // Delivered once: the queue item went when the gateway took it.
    let next = alice.send_ok(&room, "t2", "after").await;
    eventually("the next push", || gateway.delivered_for(&next).len() == 1).await;
    assert_eq!(gateway.delivered_for(&event).len(), 1, "{:?}", gateway.delivered());
    hub.stop();
}
