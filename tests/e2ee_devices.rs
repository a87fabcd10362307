//! Device lists, cross-signing and key backup over real servers: a new or
//! deleted device reaches the syncs of users sharing a room on another
//! server (`m.device_list_update`, a cache kept by the chain of versions,
//! `user/devices` served), cross-signing keys and checked signatures are
//! seen where they should be and nowhere else, and a key backup keeps the
//! best copy of each session.

mod common;

use common::keys::{cross_signing_key, signed_device_keys, upload_device, TestKey};
use common::peer::fed;
use common::*;
use hyper::Method;
use serde_json::{json, Value};

async fn query(c: &Client, user: &str) -> Value {
    c.ok("POST", "/_matrix/client/v3/keys/query", Some(json!({"device_keys": {user: []}}))).await
}

/// Incremental syncs from `since` until `user` is in `device_lists.changed`;
/// answers the token after.
async fn sees_change(c: &Client, since: &str, user: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut since = since.to_owned();
    loop {
        let r = c.sync(Some(&since), 1000).await;
        since = r["next_batch"].as_str().unwrap().to_owned();
        let changed = r["device_lists"]["changed"].as_array().cloned().unwrap_or_default();
        if changed.iter().any(|u| u == user) {
            return since;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} never saw {user}'s devices change", c.user_id);
    }
}

async fn shared_room(alice: &Client, bob: &Client) -> String {
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    alice.invite(&room, &bob.user_id).await;
    assert_eq!(bob.join(&room, "hub.test").await.status, 200);
    room
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_list_changes_reach_syncs_on_other_servers() {
    let (_net, hub, mut p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let alice_device = upload_device(&alice).await;
    let room = shared_room(&alice, &bob).await;
    let bob_since = bob.sync(None, 0).await;
    assert!(bob_since.get("device_lists").is_none(), "an initial sync has no device_lists");
    let bob_since = bob_since["next_batch"].as_str().unwrap().to_owned();
    let alice_since = alice.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();

    // Bob's server learns alice's list once (user/devices) and keeps it.
    let seen = query(&bob, &alice.user_id).await;
    assert!(seen["device_keys"][&alice.user_id].get(&alice_device).is_some(), "{seen}");
    let alice_id = lmx::core::ids::UserId::parse(&alice.user_id).unwrap();
    eventually("p1 caches alice's devices", || p1.node().e2ee.cached_devices(&alice_id).unwrap().is_some()).await;

    // A second device of alice's: her own sync and bob's (on another
    // server) both say her devices changed, and bob's query shows it.
    let phone = hub.client().login("alice").await;
    let phone_device = upload_device(&phone).await;
    sees_change(&alice, &alice_since, &alice.user_id).await;
    let bob_since = sees_change(&bob, &bob_since, &alice.user_id).await;
    let cache = p1.node().e2ee.cached_devices(&alice_id).unwrap().expect("the cache followed the update");
    assert!(cache.devices.contains_key(&phone_device), "the update was applied to the cache");
    let seen = query(&bob, &alice.user_id).await;
    assert!(seen["device_keys"][&alice.user_id].get(&phone_device).is_some(), "{seen}");

    // The phone logs out: deleted everywhere.
    phone.ok("POST", "/_matrix/client/v3/logout", Some(json!({}))).await;
    let after = sees_change(&bob, &bob_since, &alice.user_id).await;
    let seen = query(&bob, &alice.user_id).await;
    assert!(seen["device_keys"][&alice.user_id].get(&phone_device).is_none(), "{seen}");
    assert!(seen["device_keys"][&alice.user_id].get(&alice_device).is_some(), "{seen}");
    let changes = bob.ok("GET", &format!("/_matrix/client/v3/keys/changes?from={bob_since}&to={after}"), None).await;
    assert_eq!(changes["changed"], json!([alice.user_id]), "{changes}");

    // The whole list, served to other servers for their own users only.
    let path = format!("/_matrix/federation/v1/user/devices/{}", enc(&alice.user_id));
    let (status, list) = fed(&p1, &hub.name(), Method::GET, &path, None).await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [alice_device.as_str()]);
    assert!(list["stream_id"].as_u64().unwrap() > 0);
    let path = format!("/_matrix/federation/v1/user/devices/{}", enc(&bob.user_id));
    assert_eq!(fed(&p1, &hub.name(), Method::GET, &path, None).await.0, 400, "not a user of the hub");

    // An update lost on the way (bob's server down, the hub's queue for
    // it dropped): the next one names a version p1 never saw, so p1
    // fetches the whole list again and has both devices.
    p1.stop().await;
    let tablet = hub.client().login("alice").await;
    let tablet_device = upload_device(&tablet).await;
    hub.drop_queue_for("p1.test");
    p1.restart_stopped().await;
    // Bob's server speaking to the hub cuts the hub's backoff short.
    bob.send_ok(&room, "after-restart", "back").await;
    let laptop = hub.client().login("alice").await;
    let laptop_device = upload_device(&laptop).await;
    eventually("p1 refetched alice's list after the gap", || {
        p1.node().e2ee.cached_devices(&alice_id).unwrap().is_some_and(|c| c.devices.contains_key(&laptop_device))
    })
    .await;
    let cache = p1.node().e2ee.cached_devices(&alice_id).unwrap().unwrap();
    assert!(cache.devices.contains_key(&tablet_device), "the lost update's device came with the fetch");
    let seen = query(&bob, &alice.user_id).await;
    assert!(seen["device_keys"][&alice.user_id].get(&tablet_device).is_some(), "{seen}");

    // Alice joining a room of p1's again: p1 no longer trusts its copy
    // (her server may have stopped telling it while they shared no room).
    let lobby = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&lobby, "hub.test").await.status, 200);
    alice.ok("POST", &format!("/_matrix/client/v3/rooms/{}/leave", enc(&lobby)), Some(json!({}))).await;
    assert!(p1.node().e2ee.cached_devices(&alice_id).unwrap().is_some());
    assert_eq!(alice.join(&lobby, "hub.test").await.status, 200);
    eventually("p1 drops alice's cached list when she joins again", || {
        p1.node().e2ee.cached_devices(&alice_id).unwrap().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_signing_keys_and_signatures_are_checked_and_shown() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let alice_device = upload_device(&alice).await;
    shared_room(&alice, &bob).await;
    let a = alice.user_id.clone();
    let (master, ssk, usk) = (TestKey::new("master"), TestKey::new("ssk"), TestKey::new("usk"));
    let master_id = format!("ed25519:{}", master.public());
    let master_key = cross_signing_key(&a, "master", &master);
    let ssk_key = master.sign(cross_signing_key(&a, "self_signing", &ssk), &a, &master_id);
    let usk_key = master.sign(cross_signing_key(&a, "user_signing", &usk), &a, &master_id);
    let upload = json!({"master_key": master_key, "self_signing_key": ssk_key, "user_signing_key": usk_key});

    // A self-signing key the master key did not sign is refused.
    let unsigned = json!({"master_key": master_key, "self_signing_key": cross_signing_key(&a, "self_signing", &ssk)});
    let r = alice.call("POST", "/_matrix/client/v3/keys/device_signing/upload", Some(unsigned)).await;
    assert_eq!((r.status, r.body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{:?}", r.body);
    // The first upload needs no password; the same again neither.
    let path = "/_matrix/client/v3/keys/device_signing/upload";
    alice.ok("POST", path, Some(upload.clone())).await;
    alice.ok("POST", path, Some(upload.clone())).await;
    // Replacing the master key does.
    let other = TestKey::new("other master");
    let replace = json!({"master_key": cross_signing_key(&a, "master", &other)});
    let r = alice.call("POST", path, Some(replace.clone())).await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(r.body["flows"][0]["stages"][0], "m.login.password");
    // A wrong password is a failed attempt in the same session, to try again.
    let session = r.body["session"].as_str().unwrap().to_owned();
    let mut wrong = replace.clone();
    wrong["auth"] = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "not it", "session": session});
    let r = alice.call("POST", path, Some(wrong)).await;
    assert_eq!(
        (r.status, r.body["errcode"].as_str(), r.body["session"].as_str()),
        (401, Some("M_FORBIDDEN"), Some(session.as_str()))
    );

    // Bob sees the master and self-signing keys; only alice her user-signing key.
    let theirs = query(&bob, &a).await;
    assert_eq!(theirs["master_keys"][&a]["keys"][&master_id], master.public().as_str(), "{theirs}");
    assert!(theirs["self_signing_keys"][&a].is_object(), "{theirs}");
    assert!(theirs["user_signing_keys"].get(&a).is_none(), "{theirs}");
    let mine = query(&alice, &a).await;
    assert!(mine["user_signing_keys"][&a].is_object(), "{mine}");

    // The self-signing key signs alice's device; a forged signature fails.
    let device_keys = signed_device_keys(&a, &alice_device);
    let ssk_id = format!("ed25519:{}", ssk.public());
    let signed = ssk.sign(device_keys.clone(), &a, &ssk_id);
    let forged = TestKey::new("forger").sign(device_keys, &a, &ssk_id);
    let sigs = "/_matrix/client/v3/keys/signatures/upload";
    let r = alice.ok("POST", sigs, Some(json!({a.as_str(): {alice_device.as_str(): forged}}))).await;
    assert_eq!(r["failures"][&a][&alice_device]["errcode"], "M_INVALID_SIGNATURE", "{r}");
    let r = alice.ok("POST", sigs, Some(json!({a.as_str(): {alice_device.as_str(): signed}}))).await;
    assert_eq!(r["failures"], json!({}), "{r}");
    // Bob's server hears of it through the device list update.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let theirs = loop {
        let theirs = query(&bob, &a).await;
        if theirs["device_keys"][&a][&alice_device]["signatures"][&a][&ssk_id].is_string() {
            break theirs;
        }
        assert!(tokio::time::Instant::now() < deadline, "bob never saw the cross-signature: {theirs}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let device = &theirs["device_keys"][&a][&alice_device];
    assert!(device["signatures"][&a][format!("ed25519:{alice_device}")].is_string(), "and the device's own");

    // Bob's own keys: his user-signing key signs alice's master key, which
    // he alone then sees signed.
    let b = bob.user_id.clone();
    let (bob_master, bob_usk) = (TestKey::new("bob master"), TestKey::new("bob usk"));
    let bob_master_id = format!("ed25519:{}", bob_master.public());
    let bob_usk_key = bob_master.sign(cross_signing_key(&b, "user_signing", &bob_usk), &b, &bob_master_id);
    let bob_upload =
        json!({"master_key": cross_signing_key(&b, "master", &bob_master), "user_signing_key": bob_usk_key});
    bob.ok("POST", path, Some(bob_upload)).await;
    let usk_id = format!("ed25519:{}", bob_usk.public());
    let alice_since = alice.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let bob_since = bob.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let alice_master_signed = bob_usk.sign(master_key.clone(), &b, &usk_id);
    let r = bob.ok("POST", sigs, Some(json!({a.as_str(): {master.public(): alice_master_signed}}))).await;
    assert_eq!(r["failures"], json!({}), "{r}");
    let theirs = query(&bob, &a).await;
    assert!(theirs["master_keys"][&a]["signatures"][&b][&usk_id].is_string(), "{theirs}");
    let others = query(&alice, &a).await;
    assert!(others["master_keys"][&a]["signatures"].get(&b).is_none(), "bob's signature is his: {others}");
    // Bob's devices are told to re-read alice's keys; alice is not told of
    // a signature she cannot see (bob's own new keys may reach her sync).
    let told = bob.sync(Some(&bob_since), 0).await;
    assert!(told["device_lists"]["changed"].as_array().is_some_and(|c| c.iter().any(|u| u == a.as_str())), "{told}");
    let untold = alice.sync(Some(&alice_since), 0).await;
    let listed = untold["device_lists"]["changed"].as_array().cloned().unwrap_or_default();
    assert!(!listed.iter().any(|u| u == a.as_str()), "{untold}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_backup_keeps_the_best_copy_of_each_session() {
    let (_net, hub, _p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let none = alice.call("GET", "/_matrix/client/v3/room_keys/version", None).await;
    assert_eq!((none.status, none.body["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2";
    let create = json!({"algorithm": algorithm, "auth_data": {"public_key": "pk"}});
    let v1 = alice.ok("POST", "/_matrix/client/v3/room_keys/version", Some(create.clone())).await["version"].clone();
    let v2 = alice.ok("POST", "/_matrix/client/v3/room_keys/version", Some(create)).await["version"].clone();
    let (v1, v2) = (v1.as_str().unwrap().to_owned(), v2.as_str().unwrap().to_owned());
    let current = alice.ok("GET", "/_matrix/client/v3/room_keys/version", None).await;
    assert_eq!((current["version"].as_str(), current["count"].as_u64()), (Some(v2.as_str()), Some(0)));

    let session = |first: u64, forwarded: u64, verified: bool, tag: &str| {
        json!({"first_message_index": first, "forwarded_count": forwarded, "is_verified": verified,
            "session_data": {"ciphertext": tag}})
    };
    let put = |version: &str, body: Value| {
        let path = format!("/_matrix/client/v3/room_keys/keys/{}/s1?version={version}", enc("!r:hub.test"));
        let alice = alice.clone();
        async move { alice.call("PUT", &path, Some(body)).await }
    };
    // Only the current version takes keys.
    let old = put(&v1, session(5, 0, false, "a")).await;
    assert_eq!((old.status, old.body["errcode"].as_str()), (403, Some("M_WRONG_ROOM_KEYS_VERSION")));
    assert_eq!(old.body["current_version"], v2.as_str());
    let first = put(&v2, session(5, 1, false, "a")).await;
    assert_eq!((first.status, first.body["count"].as_u64()), (200, Some(1)), "{:?}", first.body);
    let etag = first.body["etag"].clone();
    // A worse copy changes nothing, the etag included; better ones replace.
    let worse = put(&v2, session(9, 0, false, "worse")).await;
    assert_eq!(worse.body["etag"], etag);
    put(&v2, session(5, 0, false, "fewer forwards")).await;
    let better = put(&v2, session(7, 3, true, "verified")).await;
    assert_ne!(better.body["etag"], etag);
    let path = format!("/_matrix/client/v3/room_keys/keys?version={v2}");
    let all = alice.ok("GET", &path, None).await;
    assert_eq!(all["rooms"]["!r:hub.test"]["sessions"]["s1"]["session_data"]["ciphertext"], "verified", "{all}");

    // Whole-backup writes, reads by room, deletes.
    let body = json!({"rooms": {"!q:hub.test": {"sessions": {"s2": session(0, 0, false, "q")}}}});
    let r = alice.ok("PUT", &path, Some(body)).await;
    assert_eq!(r["count"], 2);
    let room = format!("/_matrix/client/v3/room_keys/keys/{}?version={v2}", enc("!q:hub.test"));
    assert!(alice.ok("GET", &room, None).await["sessions"]["s2"].is_object());
    assert_eq!(alice.ok("DELETE", &room, None).await["count"], 1);
    let missing = format!("/_matrix/client/v3/room_keys/keys/{}/s2?version={v2}", enc("!q:hub.test"));
    assert_eq!(alice.call("GET", &missing, None).await.status, 404);
    assert_eq!(alice.call("GET", "/_matrix/client/v3/room_keys/keys", None).await.status, 400, "version is required");

    // auth_data may change, the algorithm not; a deleted version is gone.
    let vpath = format!("/_matrix/client/v3/room_keys/version/{v2}");
    let changed = json!({"algorithm": "other", "auth_data": {}});
    assert_eq!(alice.call("PUT", &vpath, Some(changed)).await.status, 400);
    alice.ok("PUT", &vpath, Some(json!({"algorithm": algorithm, "auth_data": {"public_key": "pk2"}}))).await;
    assert_eq!(alice.ok("GET", &vpath, None).await["auth_data"]["public_key"], "pk2");
    alice.ok("DELETE", &vpath, None).await;
    assert_eq!(alice.call("GET", &vpath, None).await.status, 404);
    let now = alice.ok("GET", "/_matrix/client/v3/room_keys/version", None).await;
    assert_eq!(now["version"].as_str(), Some(v1.as_str()), "the older version is current again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_who_start_or_stop_sharing_a_room_are_in_device_lists() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let since = alice.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(bob.join(&room, "hub.test").await.status, 200);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut token = since.clone();
    loop {
        let r = alice.sync(Some(&token), 1000).await;
        token = r["next_batch"].as_str().unwrap().to_owned();
        if r["device_lists"]["changed"].as_array().is_some_and(|c| c.iter().any(|u| u == bob.user_id.as_str())) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "bob's join never put him in changed");
    }
    bob.ok("POST", &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(json!({}))).await;
    loop {
        let r = alice.sync(Some(&token), 1000).await;
        token = r["next_batch"].as_str().unwrap().to_owned();
        if r["device_lists"]["left"].as_array().is_some_and(|c| c.iter().any(|u| u == bob.user_id.as_str())) {
            assert!(!r["device_lists"]["changed"].as_array().unwrap().iter().any(|u| u == bob.user_id.as_str()));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "bob's leave never put him in left");
    }
}
