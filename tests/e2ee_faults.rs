//! Encryption traffic under faults and hostile input: to-device messages
//! and device list updates survive the receiving server's outage and both
//! servers' restarts; bad keys, reused one-time key ids, claims for unknown
//! users, oversized to-device messages and EDUs about another server's
//! users are refused with the proper error and leave nothing behind.

mod common;

use common::keys::signed_device_keys;
use common::keys::upload_device;
use common::peer::fed;
use common::*;
use hyper::Method;
use lmx::core::ids::UserId;
use serde_json::{json, Value};

/// Syncs from the same `since` (acknowledging nothing, so every answer
/// holds all that came after it) until `done` holds for an answer.
async fn sync_until(c: &Client, since: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = c.sync(Some(since), 0).await;
        if done(&r) {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} never saw {what}: {r}", c.user_id);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_device_and_device_lists_survive_an_outage_and_restarts() {
    let (_net, mut hub, mut p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    upload_device(&alice).await;
    let bob_device = upload_device(&bob).await;
    let room = alice.create_room(json!({"preset": "private_chat", "invite": [bob.user_id]})).await;
    assert_eq!(bob.join(&room, "hub.test").await.status, 200);
    let since = bob.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();

    // Bob's server is down while alice sends to his device and adds one of
    // her own; then her server restarts too, with both still queued.
    p1.stop().await;
    let body = json!({"messages": {bob.user_id.as_str(): {bob_device.as_str(): {"nonce": "while-down"}}}});
    alice.ok("PUT", "/_matrix/client/v3/sendToDevice/org.example.ping/t1", Some(body)).await;
    let phone = hub.client().login("alice").await;
    upload_device(&phone).await;
    hub.restart().await;
    p1.restart_stopped().await;
    // Bob's server speaking to the hub cuts the hub's backoff short.
    bob.send_ok(&room, "back", "back").await;

    let got = sync_until(&bob, &since, "the message and the device change", |r| {
        let pinged = r["to_device"]["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["content"]["nonce"] == "while-down"));
        let changed =
            r["device_lists"]["changed"].as_array().is_some_and(|c| c.iter().any(|u| u == alice.user_id.as_str()));
        pinged && changed
    })
    .await;
    // Received, then bob's server restarts before he acknowledges: still there.
    p1.restart().await;
    let again = bob.sync(Some(&since), 0).await;
    let events = again["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.iter().filter(|e| e["content"]["nonce"] == "while-down").count(), 1, "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_strangers_edus_are_refused_and_leave_nothing() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let alice_device = upload_device(&alice).await;
    let upload = |body: Value| {
        let alice = alice.clone();
        async move { alice.call("POST", "/_matrix/client/v3/keys/upload", Some(body)).await }
    };

    // A one-time key id used again with other content.
    let otk = |k: &str| json!({"key": k, "signatures": {}});
    assert_eq!(upload(json!({"one_time_keys": {"signed_curve25519:A": otk("a")}})).await.status, 200);
    let reused =
        upload(json!({"one_time_keys": {"signed_curve25519:A": otk("b"), "signed_curve25519:B": otk("c")}})).await;
    assert_eq!(reused.status, 400, "{:?}", reused.body);
    let counts = upload(json!({})).await.body;
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 1, "nothing of the refused upload was kept");

    // Claims for users nobody has: no keys, no error; another server's
    // claim naming users that are not the hub's gets nothing for them
    // (item 207: skipped, not refused).
    let claim = json!({"one_time_keys": {"@nobody:hub.test": {"D": "signed_curve25519"}}});
    let got = alice.ok("POST", "/_matrix/client/v3/keys/claim", Some(claim.clone())).await;
    assert_eq!(got["one_time_keys"], json!({}));
    let foreign = json!({"one_time_keys": {"@bob:p1.test": {"D": "signed_curve25519"}}});
    let (status, got) =
        fed(&p1, &hub.name(), Method::POST, "/_matrix/federation/v1/user/keys/claim", Some(&foreign)).await;
    assert_eq!((status, &got["one_time_keys"]), (200, &json!({})));

    // An oversized to-device message.
    let big = "x".repeat(70_000);
    let body = json!({"messages": {alice.user_id.as_str(): {alice_device.as_str(): {"big": big}}}});
    let r = alice.call("PUT", "/_matrix/client/v3/sendToDevice/org.example.big/t1", Some(body)).await;
    assert_eq!((r.status, r.body["errcode"].as_str()), (413, Some("M_TOO_LARGE")));

    // EDUs from p1 about the hub's own user: a to-device message "from"
    // alice and a device list update for her. Neither is taken.
    let since = alice.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let alice_id = UserId::parse(&alice.user_id).unwrap();
    let version = hub.node().e2ee.device_list_version(&alice_id).unwrap();
    let forged = json!({
        "origin": "p1.test", "origin_server_ts": 0, "pdus": [],
        "edus": [
            {"edu_type": "m.direct_to_device", "content": {"sender": alice.user_id, "type": "m.room.encrypted",
                "message_id": "m1", "messages": {alice.user_id.as_str(): {alice_device.as_str(): {"forged": true}}}}},
            {"edu_type": "m.device_list_update", "content": {"user_id": alice.user_id, "device_id": "EVIL",
                "stream_id": 99, "prev_id": [], "keys": signed_device_keys(&alice.user_id, "EVIL")}},
        ],
    });
    let (status, _) = fed(&p1, &hub.name(), Method::PUT, "/_matrix/federation/v1/send/forged1", Some(&forged)).await;
    assert_eq!(status, 200, "a transaction's bad EDUs are dropped, not the transaction");
    let after = alice.sync(Some(&since), 500).await;
    assert!(after["to_device"]["events"].as_array().unwrap().is_empty(), "{after}");
    assert!(after.get("device_lists").is_none(), "{after}");
    assert_eq!(hub.node().e2ee.device_list_version(&alice_id).unwrap(), version, "her list is her server's");
}
