//! End-to-end encryption's server side over real servers: device keys
//! uploaded, queried and claimed locally and across servers, and
//! to-device messages delivered once through `/sync`, locally and as
//! `m.direct_to_device` EDUs.

mod common;

use common::*;
use serde_json::{json, Value};

fn device_keys(c: &Client, device: &str) -> Value {
    common::keys::signed_device_keys(&c.user_id, device)
}

fn otk(n: u32) -> Value {
    json!({"key": format!("otk{n}"), "signatures": {}})
}

async fn upload(c: &Client, body: Value) -> Value {
    c.ok("POST", "/_matrix/client/v3/keys/upload", Some(body)).await
}

/// The to-device events of a sync from `since` (the same token each time,
/// so nothing is acknowledged) once `n` are there, and the next token.
async fn to_device(c: &Client, since: Option<&str>, n: usize) -> (Vec<Value>, String) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = c.sync(since, 500).await;
        let got = r["to_device"]["events"].as_array().unwrap().clone();
        if got.len() >= n || tokio::time::Instant::now() > deadline {
            return (got, r["next_batch"].as_str().unwrap().to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_uploaded_queried_and_claimed_across_servers() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let alice_device = alice.device_id().await;

    let counts = upload(
        &alice,
        json!({
            "device_keys": device_keys(&alice, &alice_device),
            "one_time_keys": {"signed_curve25519:AAA": otk(1), "signed_curve25519:BBB": otk(2)},
            "fallback_keys": {"signed_curve25519:FFF": {"key": "fallback", "fallback": true, "signatures": {}}},
        }),
    )
    .await;
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 2);
    let first = alice.sync(None, 0).await;
    assert_eq!(first["device_one_time_keys_count"]["signed_curve25519"], 2);
    assert_eq!(first["device_unused_fallback_key_types"], json!(["signed_curve25519"]));
    // Keys of another device are refused.
    let other = alice
        .call("POST", "/_matrix/client/v3/keys/upload", Some(json!({"device_keys": device_keys(&alice, "NOT_MINE")})))
        .await;
    assert_eq!((other.status, other.body["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    // Keys signed by another device's key are refused, and nothing is kept.
    let mut forged = device_keys(&alice, "OTHER");
    forged["device_id"] = json!(alice_device);
    forged["keys"] = device_keys(&alice, &alice_device)["keys"].clone();
    let forged = alice.call("POST", "/_matrix/client/v3/keys/upload", Some(json!({"device_keys": forged}))).await;
    assert_eq!((forged.status, forged.body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{:?}", forged.body);

    // Bob, on another server, sees alice's device through his own.
    let q = json!({"device_keys": {alice.user_id.as_str(): []}});
    let seen = bob.ok("POST", "/_matrix/client/v3/keys/query", Some(q)).await;
    let keys = &seen["device_keys"][&alice.user_id][&alice_device];
    let own_key = common::keys::TestKey::new(&alice_device).public();
    assert_eq!(keys["keys"][format!("ed25519:{alice_device}")], own_key.as_str(), "{seen}");
    assert!(keys["unsigned"].is_object());
    assert_eq!(seen["failures"], json!({}));

    // Claims across servers: each one-time key once, then the fallback.
    let claim = json!({"one_time_keys": {alice.user_id.as_str(): {alice_device.as_str(): "signed_curve25519"}}});
    let mut names = Vec::new();
    for _ in 0..4 {
        let got = bob.ok("POST", "/_matrix/client/v3/keys/claim", Some(claim.clone())).await;
        let keys = got["one_time_keys"][&alice.user_id][&alice_device].as_object().cloned().unwrap_or_default();
        names.extend(keys.keys().cloned());
    }
    assert_eq!(
        names,
        ["signed_curve25519:AAA", "signed_curve25519:BBB", "signed_curve25519:FFF", "signed_curve25519:FFF"]
    );
    let after = alice.sync(None, 0).await;
    assert_eq!(after["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(after["device_unused_fallback_key_types"], json!([]), "the fallback key was handed out");

    // A device logged out is gone with its keys: others stop encrypting to it.
    let phone = hub.client().login("alice").await;
    let phone_device = phone.device_id().await;
    upload(&phone, json!({"device_keys": device_keys(&phone, &phone_device)})).await;
    let mine = json!({"device_keys": {alice.user_id.as_str(): []}});
    let both = alice.ok("POST", "/_matrix/client/v3/keys/query", Some(mine.clone())).await;
    assert!(both["device_keys"][&alice.user_id].get(&phone_device).is_some());
    phone.ok("POST", "/_matrix/client/v3/logout", Some(json!({}))).await;
    let left = alice.ok("POST", "/_matrix/client/v3/keys/query", Some(mine)).await;
    assert!(left["device_keys"][&alice.user_id].get(&phone_device).is_none(), "{left}");
    assert!(left["device_keys"][&alice.user_id].get(&alice_device).is_some());

    // A server that does not answer is a failure, not an error.
    let q = json!({"device_keys": {"@x:unreachable.test": []}, "timeout": 2000});
    let partly = bob.ok("POST", "/_matrix/client/v3/keys/query", Some(q)).await;
    assert!(partly["failures"]["unreachable.test"].is_object(), "{partly}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_device_messages_arrive_once_locally_and_across_servers() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let alice_phone = hub.client().login("alice").await;
    let bob = p1.client().register("bob").await;
    let (alice_device, phone_device) = (alice.device_id().await, alice_phone.device_id().await);
    let since = alice.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();

    // From bob's server, to one of alice's devices; sent twice with one
    // transaction id.
    let path = "/_matrix/client/v3/sendToDevice/org.example.ping/t1";
    let body = json!({"messages": {alice.user_id.as_str(): {alice_device.as_str(): {"nonce": "n1"}}}});
    bob.ok("PUT", path, Some(body.clone())).await;
    bob.ok("PUT", path, Some(body)).await;
    // Locally, to every device of alice's.
    let to_all = json!({"messages": {alice.user_id.as_str(): {"*": {"nonce": "n2"}}}});
    alice.ok("PUT", "/_matrix/client/v3/sendToDevice/org.example.ping/t2", Some(to_all)).await;

    let (got, next) = to_device(&alice, Some(&since), 2).await;
    let nonces: Vec<&str> = got.iter().map(|e| e["content"]["nonce"].as_str().unwrap()).collect();
    assert!(nonces.contains(&"n1") && nonces.contains(&"n2") && nonces.len() == 2, "{got:?}");
    let from_bob = got.iter().find(|e| e["content"]["nonce"] == "n1").unwrap();
    assert_eq!(
        (from_bob["sender"].as_str(), from_bob["type"].as_str()),
        (Some(bob.user_id.as_str()), Some("org.example.ping"))
    );
    let (phone, _) = to_device(&alice_phone, None, 1).await;
    assert_eq!(phone.len(), 1, "{phone_device} got the message for every device: {phone:?}");

    // Until acknowledged they come again from the old token; after, not.
    let again = alice.sync(Some(&since), 0).await;
    assert_eq!(again["to_device"]["events"].as_array().unwrap().len(), 2, "kept until a later token shows");
    let later = alice.sync(Some(&next), 0).await;
    assert!(later["to_device"]["events"].as_array().unwrap().is_empty());
    let old = alice.sync(Some(&since), 0).await;
    assert!(old["to_device"]["events"].as_array().unwrap().is_empty(), "gone once acknowledged");
}
