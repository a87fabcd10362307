//! EDUs go straight to the servers concerned, never through a room's hub
//! (digest 10; items 202, 203, 205): typing and receipts reach a third
//! server while the sender's server cannot reach the hub; to-device
//! messages and MLS device lists go to LM servers in LM's shapes and are
//! taken in them; to-device messages for unknown devices are dropped.

mod common;
#[path = "common/mls.rs"]
mod mls;

use std::sync::Arc;

use common::peer::fed;
use common::proxy::{FaultProxy, Mode};
use common::*;
use hyper::Method;
use serde_json::{json, Value};

/// The EDUs of `kind` the proxy saw in transactions.
fn edus(proxy: &FaultProxy, kind: &str) -> Vec<Value> {
    proxy
        .exchanges("/send/")
        .into_iter()
        .flat_map(|e| e.body["edus"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["type"] == kind)
        .collect()
}

/// Syncs until `pick` finds something in a sync answer.
async fn sync_for(c: &Client, mut pick: impl FnMut(&Value) -> Option<Value>) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut since: Option<String> = None;
    loop {
        let r = c.sync(since.as_deref(), 500).await;
        if let Some(found) = pick(&r) {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "not seen in time");
        since = r["next_batch"].as_str().map(str::to_owned);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edus_go_directly_in_lm_shapes() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test", "p2.test"] {
        net.reserve(h);
    }
    // What the hub sends p1 is recorded; p1's way to the hub can be cut.
    let to_p1 = FaultProxy::start(net.resolve["p1.test"]).await;
    to_p1.set(Mode::Rewrite(Arc::new(|_, _| {})));
    let to_hub = FaultProxy::start(net.resolve["hub.test"]).await;
    let mut hub_config = net.plain_config("hub.test");
    hub_config.federation.resolve.insert("p1.test".into(), to_p1.addr);
    let mut p1_config = net.plain_config("p1.test");
    p1_config.federation.resolve.insert("hub.test".into(), to_hub.addr);
    let hub = Server::start(hub_config).await;
    let p1 = Server::start(p1_config).await;
    let p2 = Server::start(net.plain_config("p2.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let carol = p2.client().register("carol").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, &hub.name()).await.status, 200);
    assert_eq!(carol.join(&room, &hub.name()).await.status, 200);
    let hello = alice.send_ok(&room, "t1", "hello").await;
    bob.sync_until(&room, |evs| evs.iter().any(|e| e["event_id"] == hello)).await;

    // Item 202: with the hub out of p1's reach, p1's typing and receipts
    // still reach p2.
    to_hub.set(Mode::Refuse);
    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id));
    bob.ok("PUT", &path, Some(json!({"typing": true, "timeout": 30000}))).await;
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&hello));
    bob.ok("POST", &path, Some(json!({}))).await;
    let bob_id = bob.user_id.clone();
    sync_for(&carol, |r| {
        let eph = r["rooms"]["join"][&room]["ephemeral"]["events"].as_array()?;
        eph.iter().find(|e| e["type"] == "m.typing" && e["content"]["user_ids"][0] == bob_id.as_str()).cloned()
    })
    .await;
    sync_for(&carol, |r| {
        let eph = r["rooms"]["join"][&room]["ephemeral"]["events"].as_array()?;
        eph.iter().find(|e| e["type"] == "m.receipt" && !e["content"][&hello]["m.read"][&bob_id].is_null()).cloned()
    })
    .await;
    to_hub.set(Mode::Pass);

    // Item 205: a to-device message to an LM server in LM's shape, one
    // per device, with the sender on the envelope.
    let bob_device = bob.device_id().await;
    let message = json!({"algorithm": "m.mls.v1.welcome.dhkemx25519-aes128gcm-sha256-ed25519",
                         "ciphertext": "AAAA", "commit_event_id": hello});
    let body = json!({"messages": { &bob.user_id: { &bob_device: message } }});
    alice.ok("PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/w1", Some(body)).await;
    let got = sync_for(&bob, |r| r["to_device"]["events"].as_array()?.first().cloned()).await;
    assert_eq!(
        (&got["sender"], &got["type"], &got["content"]),
        (&json!(alice.user_id), &json!("m.room.encrypted"), &message)
    );
    // The proxy logs an exchange once p1 has answered it, which can be
    // after bob's sync saw the message.
    eventually("the proxy to log the to-device EDU", || !edus(&to_p1, "m.direct_to_device").is_empty()).await;
    let sent = edus(&to_p1, "m.direct_to_device");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["sender"], alice.user_id);
    let c = &sent[0]["content"];
    assert_eq!((&c["target"], &c["target_device"]), (&json!(bob.user_id), &json!(bob_device)));
    assert_eq!((&c["message_type"], &c["message"]), (&json!("m.room.encrypted"), &message));

    // Item 203: a device object reaches the servers sharing a room, whole,
    // in LM's m.device_list_update; its device's deletion as `removed`.
    let alice_d = mls::MlsDevice::new(&alice.user_id, &alice.device_id().await);
    let upload = json!({"device_object": alice_d.device_object()});
    alice.ok("POST", "/_matrix/client/unstable/org.lmx.mls/keys/upload", Some(upload)).await;
    let query = json!({"device_objects": { &alice.user_id: [] }});
    let path = "/_matrix/client/unstable/org.lmx.mls/keys/query";
    eventually("bob's server to keep alice's device object", || {
        edus(&to_p1, "m.device_list_update").iter().any(|e| e["content"]["changed"][0] == alice_d.device_object())
    })
    .await;
    let known = bob.ok("POST", path, Some(query.clone())).await;
    assert_eq!(known["device_objects"][&alice.user_id][&alice_d.device], alice_d.device_object(), "from the EDU");
    alice.ok("POST", "/_matrix/client/v3/logout", Some(json!({}))).await;
    eventually("the device's removal", || {
        edus(&to_p1, "m.device_list_update").iter().any(|e| e["content"]["removed"] == json!([alice_d.device]))
    })
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while bob.ok("POST", path, Some(query.clone())).await["device_objects"][&alice.user_id] != json!({}) {
        assert!(tokio::time::Instant::now() < deadline, "the removed device is still known");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lm_to_device_edus_for_unknown_devices_or_from_strangers_are_dropped() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let alice_device = alice.device_id().await;
    let bob = format!("@bob:{}", p1.name());
    let edu = |sender: &str, device: &str, body: &str| {
        json!({"type": "m.direct_to_device", "sender": sender, "content": {
            "target": alice.user_id, "target_device": device, "message_type": "m.test", "message": {"body": body}}})
    };
    let someone_else = format!("@eve:{}", hub.name());
    let txn = json!({
        "origin": p1.name(), "origin_server_ts": lmx::sys::now_ms(), "pdus": [],
        "edus": [edu(&bob, "NOPE", "unknown device"), edu(&someone_else, &alice_device, "forged sender"),
                 edu(&bob, &alice_device, "for alice")],
    });
    let (status, body) = fed(&p1, &hub.name(), Method::PUT, "/_matrix/federation/v2/send/lm1", Some(&txn)).await;
    assert_eq!(status, 200, "{body}");
    let got =
        sync_for(&alice, |r| r["to_device"]["events"].as_array().filter(|e| !e.is_empty()).cloned().map(Value::Array))
            .await;
    assert_eq!(got, json!([{"sender": bob, "type": "m.test", "content": {"body": "for alice"}}]));
}
