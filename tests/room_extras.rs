//! Tags, reports, TURN credentials and timestamp look-ups through the
//! HTTP API.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_room_account_data() {
    let (_net, hub) = hub_with(|_| {}).await;
    let alice = hub.client().register("alice").await;
    let bob = hub.client().register("bob").await;
    let room = alice.create_room(json!({})).await;
    let base = format!("/_matrix/client/v3/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room));
    assert_eq!(alice.ok("GET", &base, None).await, json!({"tags": {}}));
    alice.ok("PUT", &format!("{base}/m.favourite"), Some(json!({"order": 0.25}))).await;
    alice.ok("PUT", &format!("{base}/u.work"), Some(json!({}))).await;
    let tags = alice.ok("GET", &base, None).await;
    assert_eq!(tags, json!({"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}));
    let synced = alice.sync(None, 0).await;
    let data = synced["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap().clone();
    assert!(data.iter().any(|e| e["type"] == "m.tag" && e["content"]["tags"]["u.work"] == json!({})), "{data:?}");
    alice.ok("DELETE", &format!("{base}/u.work"), None).await;
    assert_eq!(alice.ok("GET", &base, None).await, json!({"tags": {"m.favourite": {"order": 0.25}}}));
    let bad = alice.call("PUT", &format!("{base}/x"), Some(json!({"order": "first"}))).await;
    assert_eq!((bad.status, &bad.body["errcode"]), (400, &json!("M_INVALID_PARAM")));
    let others = bob.call("GET", &base, None).await;
    assert_eq!((others.status, &others.body["errcode"]), (403, &json!("M_FORBIDDEN")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_kept_for_the_operator() {
    let (_net, hub) = hub_with(|c| c.registration.shared_secret = Some("test-secret".into())).await;
    let alice = hub.client().register("alice").await;
    let bob = hub.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room, &hub.name()).await;
    let event = alice.send_ok(&room, "t1", "something rude").await;
    let path = format!("/_matrix/client/v3/rooms/{}/report/{}", enc(&room), enc(&event));
    bob.ok("POST", &path, Some(json!({"reason": "rude", "score": -100}))).await;
    let bad = bob.call("POST", &path, Some(json!({"score": 5}))).await;
    assert_eq!((bad.status, &bad.body["errcode"]), (400, &json!("M_INVALID_PARAM")));
    let unknown = format!("/_matrix/client/v3/rooms/{}/report/{}", enc(&room), enc("$nothing"));
    assert_eq!(bob.call("POST", &unknown, Some(json!({}))).await.status, 404);
    bob.ok("POST", &format!("/_matrix/client/v3/rooms/{}/report", enc(&room)), Some(json!({"reason": "spam room"})))
        .await;
    bob.ok("POST", &format!("/_matrix/client/v3/users/{}/report", enc(&alice.user_id)), Some(json!({"reason": "x"})))
        .await;
    let stranger = bob.call("POST", "/_matrix/client/v3/users/@nobody:elsewhere.test/report", Some(json!({}))).await;
    assert_eq!(stranger.status, 404);

    let listed = bob.call("GET", "/_synapse/admin/v1/event_reports", None).await;
    assert_eq!(listed.status, 403, "only admins read reports");
    hub.node()
        .store
        .write({
            let mut rec =
                hub.node().store.user(&lmx::core::ids::UserId::parse(&alice.user_id).unwrap()).unwrap().unwrap();
            rec.admin = true;
            let mut b = lmx::store::Batch::new();
            b.push(lmx::store::Op::PutUser(rec));
            b
        })
        .unwrap();
    let listed = alice.ok("GET", "/_synapse/admin/v1/event_reports", None).await;
    let reports = listed["event_reports"].as_array().unwrap();
    assert_eq!(reports.len(), 3);
    let of_event = reports.iter().find(|r| r["event_id"] == json!(event)).unwrap();
    assert_eq!(
        (&of_event["reason"], &of_event["score"], &of_event["user_id"]),
        (&json!("rude"), &json!(-100), &json!(bob.user_id))
    );
    assert_eq!(of_event["sender"], json!(alice.user_id), "the reported event's sender");
    let page = alice.ok("GET", "/_synapse/admin/v1/event_reports?limit=2", None).await;
    assert_eq!((page["total"].as_u64(), page["next_token"].as_u64()), (Some(3), Some(2)), "{page}");
    let id = of_event["id"].as_str().unwrap();
    let one = alice.ok("GET", &format!("/_synapse/admin/v1/event_reports/{id}"), None).await;
    assert_eq!(one["event_json"]["event_id"].as_str().or(Some(event.as_str())), Some(event.as_str()));
    assert_eq!(one["event_json"]["content"]["body"], "something rude");
    alice.ok("DELETE", &format!("/_synapse/admin/v1/event_reports/{id}"), None).await;
    let after = alice.ok("GET", "/_synapse/admin/v1/event_reports", None).await;
    assert_eq!(after["total"], 2, "a dismissed report is gone");
    let gone = alice.call("GET", &format!("/_synapse/admin/v1/event_reports/{id}"), None).await;
    assert_eq!(gone.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_follow_the_rest_api() {
    let (_net, hub) = hub_with(|c| {
        c.turn.uris = vec!["turn:turn.example.org:3478?transport=udp".into()];
        c.turn.shared_secret = Some("coturn-secret".into());
        c.turn.user_lifetime_secs = 600;
    })
    .await;
    let alice = hub.client().register("alice").await;
    let got = alice.ok("GET", "/_matrix/client/v3/voip/turnServer", None).await;
    assert_eq!((&got["uris"], &got["ttl"]), (&json!(["turn:turn.example.org:3478?transport=udp"]), &json!(600)));
    let username = got["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, alice.user_id);
    let expiry: i64 = expiry.parse().unwrap();
    assert!((expiry - lmx::sys::now_ms() / 1000 - 600).abs() <= 5);
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"coturn-secret").unwrap();
    mac.update(username.as_bytes());
    use base64::Engine;
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(got["password"], json!(want));

    let (_net2, plain) = hub_with(|_| {}).await;
    let bob = plain.client().register("bob").await;
    assert_eq!(bob.ok("GET", "/_matrix/client/v3/voip/turnServer", None).await, json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_find_the_nearest_readable_event() {
    let (_net, hub) = hub_with(|_| {}).await;
    let alice = hub.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    let mut sent: Vec<(String, i64)> = Vec::new();
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let id = alice.send_ok(&room, &format!("t{n}"), &format!("m{n}")).await;
        let ev = alice.ok("GET", &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&id)), None).await;
        sent.push((id, ev["origin_server_ts"].as_i64().unwrap()));
    }
    let ask =
        |ts: i64, dir: &str| format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}", enc(&room));
    let between = (sent[0].1 + sent[1].1) / 2;
    let f = alice.ok("GET", &ask(between, "f"), None).await;
    assert_eq!((&f["event_id"], &f["origin_server_ts"]), (&json!(sent[1].0), &json!(sent[1].1)));
    let b = alice.ok("GET", &ask(between, "b"), None).await;
    assert_eq!(b["event_id"], json!(sent[0].0));
    let exact = alice.ok("GET", &ask(sent[2].1, "b"), None).await;
    assert_eq!(exact["event_id"], json!(sent[2].0));
    let future = alice.call("GET", &ask(sent[2].1 + 60_000, "f"), None).await;
    assert_eq!((future.status, &future.body["errcode"]), (404, &json!("M_NOT_FOUND")));
    let no_dir =
        alice.call("GET", &format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts=1", enc(&room)), None).await;
    assert_eq!(no_dir.status, 400);
    let stranger = hub.client().register("mallory").await;
    assert_eq!(stranger.call("GET", &ask(between, "f"), None).await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_rules_decide_what_counts_and_what_highlights() {
    let (_net, hub) = hub_with(|_| {}).await;
    let alice = hub.client().register("alice").await;
    let bob = hub.client().register("bob").await;
    let carol = hub.client().register("carol").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    for c in [&bob, &carol] {
        assert_eq!(c.join(&room, &hub.name()).await.status, 200);
    }
    let counts = |synced: &serde_json::Value| {
        let u = &synced["rooms"]["join"][&room]["unread_notifications"];
        (u["notification_count"].as_u64().unwrap(), u["highlight_count"].as_u64().unwrap())
    };
    let send = |c: &Client, txn: &str, content: serde_json::Value| {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(&room));
        let c = c.clone();
        async move { c.ok("PUT", &path, Some(content)).await }
    };
    send(&bob, "1", json!({"msgtype": "m.text", "body": "hello"})).await;
    send(&bob, "2", json!({"msgtype": "m.notice", "body": "a bot speaks"})).await;
    send(&bob, "3", json!({"msgtype": "m.text", "body": "hey you", "m.mentions": {"user_ids": [alice.user_id]}})).await;
    send(&carol, "4", json!({"msgtype": "m.text", "body": "everyone!", "m.mentions": {"room": true}})).await;
    let synced = alice.sync(None, 0).await;
    assert_eq!(counts(&synced), (3, 1), "notices do not count; a user mention highlights; carol may not @room");

    // The room muted by a room rule: what follows does not count.
    let path = format!("/_matrix/client/v3/pushrules/global/room/{}", enc(&room));
    alice.ok("PUT", &path, Some(json!({"actions": []}))).await;
    send(&bob, "5", json!({"msgtype": "m.text", "body": "more"})).await;
    let synced = alice.sync(None, 0).await;
    assert_eq!(counts(&synced), (3, 1));
    // A receipt on the latest event clears the counts.
    let last =
        synced["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().last().unwrap()["event_id"].clone();
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(last.as_str().unwrap()));
    alice.ok("POST", &receipt, Some(json!({}))).await;
    assert_eq!(counts(&alice.sync(None, 0).await), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_rules_are_checked_and_placed() {
    let (_net, hub) = hub_with(|_| {}).await;
    let alice = hub.client().register("alice").await;
    let rules = || async { alice.ok("GET", "/_matrix/client/v3/pushrules/", None).await };
    let before = rules().await;
    let base = "/_matrix/client/v3/pushrules/global";
    let refused = [
        (format!("{base}/content/cake"), json!({"actions": ["notify"]}), "M_MISSING_PARAM"),
        (format!("{base}/content/cake"), json!({"pattern": "", "actions": []}), "M_INVALID_PARAM"),
        (format!("{base}/override/x"), json!({"conditions": [{"key": "type"}], "actions": []}), "M_INVALID_PARAM"),
        (format!("{base}/override/x"), json!({"actions": ["shout"]}), "M_INVALID_PARAM"),
        (format!("{base}/override/x"), json!({"conditions": []}), "M_MISSING_PARAM"),
        (format!("{base}/sideways/x"), json!({"actions": []}), "M_INVALID_PARAM"),
        (format!("{base}/override/.m.rule.master"), json!({"actions": []}), "M_INVALID_PARAM"),
        (format!("{base}/override/x?before=nothing"), json!({"actions": []}), "M_NOT_FOUND"),
    ];
    for (path, body, code) in refused {
        let a = alice.call("PUT", &path, Some(body.clone())).await;
        assert_eq!(a.body["errcode"].as_str(), Some(code), "{path} {body}: {}", a.body);
    }
    let a =
        alice.call("PUT", &format!("{base}/override/.m.rule.master/enabled"), Some(json!({"enabled": "yes"}))).await;
    assert_eq!(a.status, 400, "enabled must be a boolean");
    let a = alice.call("PUT", &format!("{base}/override/.m.rule.master/actions"), Some(json!({"actions": [1]}))).await;
    assert_eq!(a.status, 400);
    assert_eq!(rules().await, before, "nothing stored from refused requests");

    // New override rules go after the master switch, then before or after
    // the user's others as asked.
    alice.ok("PUT", &format!("{base}/override/first"), Some(json!({"actions": ["notify"]}))).await;
    alice.ok("PUT", &format!("{base}/override/second?before=first"), Some(json!({"actions": []}))).await;
    alice.ok("PUT", &format!("{base}/override/third?after=first"), Some(json!({"actions": ["coalesce"]}))).await;
    let now = rules().await;
    let ids: Vec<&str> =
        now["global"]["override"].as_array().unwrap().iter().filter_map(|r| r["rule_id"].as_str()).collect();
    assert_eq!(ids[..4], [".m.rule.master", "second", "first", "third"], "{ids:?}");
    let third = alice.ok("GET", &format!("{base}/override/third"), None).await;
    assert_eq!(third["actions"], json!([]), "historical actions are dropped");
    let sender = alice.ok("PUT", &format!("{base}/sender/{}", enc("@spam:x.test")), Some(json!({"actions": []}))).await;
    assert_eq!(sender, json!({}));
    let stored = alice.ok("GET", &format!("{base}/sender/{}", enc("@spam:x.test")), None).await;
    assert!(stored.get("conditions").is_none(), "sender rules are named by their id: {stored}");
}
