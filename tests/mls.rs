//! The draft's MLS over real servers (digest 9, 10): devices on a hub and
//! a participant publish device objects and key packages, E17 and E18 in
//! the draft's shapes, a group made, grown through claimed key packages
//! and Welcomes sent as to-device messages, messages decrypted on both
//! servers, a leaving member's device removed; and the hub's refusals.

mod common;
#[path = "common/mls.rs"]
mod mls;

use common::peer::fed;
use common::*;
use hyper::Method;
use lmx::core::mls::{KEY_PACKAGE_ALGORITHM, ROOM_ALGORITHM, WELCOME_ALGORITHM};
use mls::MlsDevice;
use serde_json::{json, Value};

const MLS_API: &str = "/_matrix/client/unstable/org.lmx.mls/keys";

/// A registered user's MLS device, published with `packages` key packages
/// and a last-resort one.
async fn mls_user(server: &Server, name: &str, packages: usize) -> (Client, MlsDevice) {
    let c = server.client().register(name).await;
    let d = MlsDevice::new(&c.user_id, &c.device_id().await);
    publish(&c, &d, packages).await;
    (c, d)
}

async fn publish(c: &Client, d: &MlsDevice, packages: usize) -> Value {
    let key_packages: serde_json::Map<String, Value> =
        (0..packages).map(|_| d.key_package(false, None)).map(|(id, p)| (id, json!(p))).collect();
    let (lr_id, lr) = d.key_package(true, None);
    let body = json!({
        "device_object": d.device_object(),
        "key_packages": key_packages,
        "last_resort_key_packages": { lr_id: lr },
    });
    c.ok("POST", &format!("{MLS_API}/upload"), Some(body)).await
}

/// A key package of `user`'s `device`, claimed through the client API.
async fn claim(c: &Client, user: &str, device: &str) -> Option<String> {
    let body = json!({"one_time_keys": { user: { device: KEY_PACKAGE_ALGORITHM } }});
    let r = c.ok("POST", "/_matrix/client/v3/keys/claim", Some(body)).await;
    r["one_time_keys"][user][device][KEY_PACKAGE_ALGORITHM].as_str().map(str::to_owned)
}

async fn send(c: &Client, room: &str, ty: &str, content: &Value) -> Answer {
    let path = format!("/_matrix/client/v3/rooms/{}/send/{ty}/{}", enc(room), lmx::sys::random_string(12));
    c.call("PUT", &path, Some(content.clone())).await
}

/// Sends a commit the hub must take; the device moves to its epoch.
async fn commit(c: &Client, d: &mut MlsDevice, room: &str, content: Value) -> String {
    let a = send(c, room, "m.mls.commit", &content).await;
    assert_eq!(a.status, 200, "commit: {}", a.body);
    d.accepted();
    a.body["event_id"].as_str().unwrap().to_owned()
}

/// Sends a commit the hub must refuse; the device forgets it.
async fn refused(c: &Client, d: &mut MlsDevice, room: &str, content: Value, why: &str) {
    let a = send(c, room, "m.mls.commit", &content).await;
    assert_eq!(a.status, 403, "{why}: {}", a.body);
    assert_eq!(a.body["errcode"], "M_FORBIDDEN", "{why}");
    d.refused();
}

/// To-device events from `since` on (acknowledging as it goes) until one
/// of `ty` is there.
async fn to_device_of_type(c: &Client, ty: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut since: Option<String> = None;
    loop {
        let r = c.sync(since.as_deref(), 500).await;
        if let Some(e) = r["to_device"]["events"].as_array().unwrap().iter().find(|e| e["type"] == ty) {
            return e.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no {ty} to-device event");
        since = r["next_batch"].as_str().map(str::to_owned);
    }
}

async fn send_welcome(c: &Client, to: &MlsDevice, welcome: &str, commit_event_id: &str) {
    let message = json!({"algorithm": WELCOME_ALGORITHM, "ciphertext": welcome, "commit_event_id": commit_event_id});
    let body = json!({"messages": { &to.user: { &to.device: message } }});
    let path = format!("/_matrix/client/v3/sendToDevice/m.room.encrypted/{}", lmx::sys::random_string(8));
    c.ok("PUT", &path, Some(body)).await;
}

/// The timeline event `id` of `room`, as `c` syncs it.
async fn timeline_event(c: &Client, room: &str, id: &str) -> Value {
    let seen = c.sync_until(room, |evs| evs.iter().any(|e| e["event_id"] == id)).await;
    seen.into_iter().find(|e| e["event_id"] == id).unwrap_or_else(|| panic!("{id} not in the timeline"))
}

fn mls_room() -> Value {
    json!({"preset": "public_chat", "creation_content": {"encryption": {"algorithm": ROOM_ALGORITHM}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mls_room_from_its_first_commit_to_a_member_leaving() {
    let (_net, hub, p1) = hub_and_p1().await;
    let (alice, mut alice_d) = mls_user(&hub, "alice", 2).await;
    let (bob, mut bob_d) = mls_user(&p1, "bob", 2).await;
    let (carol, mut carol_d) = mls_user(&hub, "carol", 2).await;
    let room = alice.create_room(mls_room()).await;

    let first = alice_d.create_group(&room);
    let first_id = commit(&alice, &mut alice_d, &room, first).await;
    assert_eq!(bob.join(&room, "hub.test").await.status, 200);
    assert_eq!(carol.join(&room, "hub.test").await.status, 200);

    // Bob's package comes over E18 from his server, Carol's from ours.
    let bob_kp = claim(&alice, &bob.user_id, &bob_d.device).await.expect("a package of Bob's");
    let carol_kp = claim(&alice, &carol.user_id, &carol_d.device).await.expect("a package of Carol's");
    let (add, welcome) = alice_d.add(&[bob_kp, carol_kp]);
    let add_id = commit(&alice, &mut alice_d, &room, add).await;
    send_welcome(&alice, &bob_d, &welcome, &add_id).await;
    send_welcome(&alice, &carol_d, &welcome, &add_id).await;
    for (c, d) in [(&bob, &mut bob_d), (&carol, &mut carol_d)] {
        let w = to_device_of_type(c, "m.room.encrypted").await;
        assert_eq!(w["sender"], alice.user_id);
        assert_eq!(w["content"]["algorithm"], WELCOME_ALGORITHM);
        assert_eq!(w["content"]["commit_event_id"], add_id);
        d.join(w["content"]["ciphertext"].as_str().unwrap());
        assert_eq!(d.epoch(), alice_d.epoch());
    }

    // Messages, both ways, decrypted on both servers.
    let hello = alice_d.encrypt("hello, group", &add_id);
    let a = send(&alice, &room, "m.room.encrypted", &hello).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let hello_id = a.body["event_id"].as_str().unwrap().to_owned();
    let seen = timeline_event(&bob, &room, &hello_id).await;
    assert_eq!(bob_d.decrypt(&seen["content"]), "hello, group");
    assert_eq!(carol_d.decrypt(&timeline_event(&carol, &room, &hello_id).await["content"]), "hello, group");
    let reply = bob_d.encrypt("hello from p1", &add_id);
    let a = send(&bob, &room, "m.room.encrypted", &reply).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let reply_id = a.body["event_id"].as_str().unwrap().to_owned();
    assert_eq!(alice_d.decrypt(&timeline_event(&alice, &room, &reply_id).await["content"]), "hello from p1");
    // Item 116: an MLS message needs its fields.
    let a = send(&alice, &room, "m.room.encrypted", &json!({"algorithm": ROOM_ALGORITHM, "ciphertext": "AA"})).await;
    assert_eq!(a.status, 403, "no commit_event_id: {}", a.body);

    // Refusals, each from the hub's own user (refused at once) and from
    // the participant's (its LPDU refused by the hub): all 403.
    let (dave, dave_d) = mls_user(&hub, "dave", 2).await;
    let (alice_dev, carol_dev) = (alice_d.device.clone(), carol_d.device.clone());
    for (c, d) in [(&alice, &mut alice_d), (&bob, &mut bob_d)] {
        let who = &c.user_id;
        // Item 106: no m.room.encryption in a room created with MLS.
        let a = c.put_state(&room, "m.room.encryption", "", json!({"algorithm": "m.megolm.v1.aes-sha2"})).await;
        assert_eq!(a.status, 403, "{who}: {}", a.body);
        // Item 111.
        let dave_kp = claim(c, &dave.user_id, &dave_d.device).await.unwrap();
        let (add_dave, _) = d.add(&[dave_kp]);
        refused(c, d, &room, add_dave, &format!("{who} adds a user who is not joined")).await;
        // Item 112.
        let other = if who == &alice.user_id { (&carol.user_id, &carol_dev) } else { (&alice.user_id, &alice_dev) };
        let remove = d.remove(&[d.leaf_of(other.0, other.1).unwrap()]);
        refused(c, d, &room, remove, &format!("{who} removes a joined user's device")).await;
        // Item 105.
        d.encrypt_handshakes();
        let private = d.self_update();
        refused(c, d, &room, private, &format!("{who}'s PrivateMessage commit")).await;
        d.plain_handshakes();
    }
    // Item 113: a commit carrying another member's proposal, both ways.
    let proposal = bob_d.propose_add(&MlsDevice::new("@x:p1.test", "X").key_package(false, None).1);
    bob_d.forget_proposals();
    alice_d.take_proposal(&proposal);
    let by_reference = alice_d.commit_pending();
    refused(&alice, &mut alice_d, &room, by_reference, "carries Bob's proposal").await;
    let proposal = alice_d.propose_add(&MlsDevice::new("@y:hub.test", "Y").key_package(false, None).1);
    alice_d.forget_proposals();
    bob_d.take_proposal(&proposal);
    let by_reference = bob_d.commit_pending();
    refused(&bob, &mut bob_d, &room, by_reference, "carries Alice's proposal").await;
    // Commits must come from their committer's user.
    let alice_update = alice_d.self_update();
    refused(&bob, &mut alice_d, &room, alice_update, "Alice's commit sent by Bob").await;

    // Carol leaves; her device may now be removed by anyone's commit.
    carol.ok("POST", &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(json!({}))).await;
    let remove_carol = bob_d.remove(&[bob_d.leaf_of(&carol.user_id, &carol_d.device).unwrap()]);
    let remove_id = commit(&bob, &mut bob_d, &room, remove_carol).await;
    let seen = timeline_event(&alice, &room, &remove_id).await;
    alice_d.process_commit(&seen["content"]);
    assert_eq!(alice_d.leaf_of(&carol.user_id, &carol_d.device), None);
    let after = alice_d.encrypt("carol is gone", &remove_id);
    let after_id = send(&alice, &room, "m.room.encrypted", &after).await.body["event_id"].as_str().unwrap().to_owned();
    assert_eq!(bob_d.decrypt(&timeline_event(&bob, &room, &after_id).await["content"]), "carol is gone");
    assert!(!first_id.is_empty());
}

/// Item 117: a member who joined under `joined` history visibility reads
/// the group's earlier commits, not the messages around them, locally and
/// through the hub from another server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_visible_to_members_whatever_the_history_visibility() {
    let (_net, hub, p1) = hub_and_p1().await;
    let (alice, mut alice_d) = mls_user(&hub, "alice", 1).await;
    let (carol, _) = mls_user(&hub, "carol", 1).await;
    let (bob, _) = mls_user(&p1, "bob", 1).await;
    let mut create = mls_room();
    create["initial_state"] =
        json!([{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]);
    let room = alice.create_room(create).await;
    let first = alice_d.create_group(&room);
    let first_id = commit(&alice, &mut alice_d, &room, first).await;
    let secret = alice.send_ok(&room, "s1", "before anyone joined").await;
    assert_eq!(carol.join(&room, &hub.name()).await.status, 200);
    assert_eq!(bob.join(&room, &hub.name()).await.status, 200);
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room));
    let page = carol.ok("GET", &path, None).await;
    let ids: Vec<&str> = page["chunk"].as_array().unwrap().iter().filter_map(|e| e["event_id"].as_str()).collect();
    assert!(ids.contains(&first_id.as_str()), "the commit is shown: {ids:?}");
    assert!(!ids.contains(&secret.as_str()), "the message before the join is not");
    let initial = carol.sync(None, 0).await;
    let timeline = initial["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap();
    assert!(timeline.iter().any(|e| e["event_id"] == first_id), "and in an initial sync");
    assert!(!timeline.iter().any(|e| e["event_id"] == secret));
    let event = |id: &str| format!("/_matrix/federation/v1/event/{}", enc(id));
    let (status, body) = fed(&p1, &hub.name(), Method::GET, &event(&first_id), None).await;
    assert_eq!((status, &body["pdus"][0]["content"]["message"].is_string()), (200, &true), "{body}");
    let (_, body) = fed(&p1, &hub.name(), Method::GET, &event(&secret), None).await;
    assert!(body["pdus"][0]["content"].get("body").is_none(), "redacted for p1: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_follows_the_group_across_a_restart() {
    let (_net, mut hub, p1) = hub_and_p1().await;
    let (alice, mut alice_d) = mls_user(&hub, "alice", 1).await;
    let (bob, bob_d) = mls_user(&p1, "bob", 1).await;
    let room = alice.create_room(mls_room()).await;
    let first = alice_d.create_group(&room);
    commit(&alice, &mut alice_d, &room, first).await;
    assert_eq!(bob.join(&room, "hub.test").await.status, 200);
    let kp = claim(&alice, &bob.user_id, &bob_d.device).await.unwrap();
    let (add, _) = alice_d.add(&[kp]);
    commit(&alice, &mut alice_d, &room, add).await;
    hub.restart().await;
    let alice = alice.on(&hub);
    // Read back from the last commit's group state: removing Bob (joined)
    // is still refused, an update still applies.
    let remove = alice_d.remove(&[alice_d.leaf_of(&bob.user_id, &bob_d.device).unwrap()]);
    refused(&alice, &mut alice_d, &room, remove, "removes a joined user's device after a restart").await;
    let update = alice_d.self_update();
    commit(&alice, &mut alice_d, &room, update).await;
    // A commit of an epoch already gone no longer applies.
    let stale_group = alice_d.self_update();
    alice_d.refused();
    let newer = alice_d.self_update();
    commit(&alice, &mut alice_d, &room, newer).await;
    let a = send(&alice, &room, "m.mls.commit", &stale_group).await;
    assert_eq!(a.status, 403, "a stale commit: {}", a.body);
}

/// Items 124 (the draft's endpoints are all served), 204, 206-208.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_objects_and_key_packages_over_e17_and_e18() {
    let (_net, hub, p1) = hub_and_p1().await;
    let (alice, alice_d) = mls_user(&hub, "alice", 2).await;
    let user = enc(&alice.user_id);
    let dev = enc(&alice_d.device);

    let (nobody, elsewhere) = (format!("@nobody:{}", hub.name()), format!("@alice:{}", p1.name()));

    // E17 (item 204): the object as uploaded, on both paths and methods.
    let stable = format!("/_matrix/federation/v1/user/{user}/device/{dev}");
    let (status, object) = fed(&p1, &hub.name(), Method::GET, &stable, None).await;
    assert_eq!(status, 200, "{object}");
    assert_eq!(object, alice_d.device_object());
    let unstable = format!("{}/user/{user}/device/{dev}", lmx::federation::UNSTABLE);
    for method in [Method::GET, Method::PUT, Method::POST] {
        let (status, o) = fed(&p1, &hub.name(), method.clone(), &unstable, Some(&json!({}))).await;
        assert_eq!((status, &o), (200, &object), "{method}");
    }
    for (path, why) in [
        (format!("/_matrix/federation/v1/user/{user}/device/NOPE"), "an unknown device"),
        (format!("/_matrix/federation/v1/user/{}/device/{dev}", enc(&nobody)), "an unknown user"),
        (format!("/_matrix/federation/v1/user/{}/device/{dev}", enc(&elsewhere)), "another server's user"),
    ] {
        let (status, body) = fed(&p1, &hub.name(), Method::GET, &path, None).await;
        assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{why}: {body}");
    }

    // E18 (items 206-208): each package once, then the last-resort one.
    let ask = json!({"one_time_keys": {
        &alice.user_id: { &alice_d.device: KEY_PACKAGE_ALGORITHM, "NOPE": KEY_PACKAGE_ALGORITHM },
        &nobody: { "X": KEY_PACKAGE_ALGORITHM },
        &elsewhere: { "Y": KEY_PACKAGE_ALGORITHM },
    }});
    let mut got = Vec::new();
    for _ in 0..4 {
        let (status, body) =
            fed(&p1, &hub.name(), Method::POST, "/_matrix/federation/v1/user/keys/claim", Some(&ask)).await;
        assert_eq!(status, 200, "{body}");
        let users = body["one_time_keys"].as_object().unwrap();
        assert_eq!(users.keys().collect::<Vec<_>>(), [&alice.user_id], "others are skipped: {body}");
        let devices = users[&alice.user_id].as_object().unwrap();
        assert_eq!(devices.keys().collect::<Vec<_>>(), [&alice_d.device]);
        let entry = devices[&alice_d.device].as_object().unwrap();
        assert_eq!(entry.keys().collect::<Vec<_>>(), [KEY_PACKAGE_ALGORITHM], "the draft's shape: {body}");
        got.push(entry[KEY_PACKAGE_ALGORITHM].as_str().unwrap().to_owned());
    }
    assert_ne!(got[0], got[1], "two different packages first");
    assert_eq!(got[2], got[3], "then the last-resort one, again");
    assert!(!got[..2].contains(&got[2]));
    let last_resort =
        |p: &str| lmx::core::mls::check_key_package(&lmx::core::crypto::b64_decode(p).unwrap()).unwrap().last_resort;
    assert!(!last_resort(&got[0]) && !last_resort(&got[1]) && last_resort(&got[2]));
    let (status, body) =
        fed(&p1, &hub.name(), Method::POST, "/_matrix/federation/v1/user/keys/claim", Some(&json!({}))).await;
    assert_eq!(status, 400, "one_time_keys is required: {body}");
    let (status, body) = fed(
        &p1,
        &hub.name(),
        Method::POST,
        "/_matrix/federation/v1/user/keys/claim",
        Some(&json!({"one_time_keys": {}})),
    )
    .await;
    assert_eq!((status, &body["one_time_keys"]), (200, &json!({})), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_never_get_one_package_twice_and_expired_ones_never() {
    let (_net, hub, p1) = hub_and_p1().await;
    let (alice, alice_d) = mls_user(&hub, "alice", 20).await;
    let ask = json!({"one_time_keys": { &alice.user_id: { &alice_d.device: KEY_PACKAGE_ALGORITHM } }});
    let hub_name = hub.name();
    let claims =
        (0..30).map(|_| fed(&p1, &hub_name, Method::POST, "/_matrix/federation/v1/user/keys/claim", Some(&ask)));
    let answers = futures_util::future::join_all(claims).await;
    let packages: Vec<String> = answers
        .iter()
        .map(|(s, b)| {
            assert_eq!(*s, 200, "{b}");
            b["one_time_keys"][&alice.user_id][&alice_d.device][KEY_PACKAGE_ALGORITHM].as_str().unwrap().to_owned()
        })
        .collect();
    let distinct: std::collections::BTreeSet<&String> = packages.iter().collect();
    assert_eq!(distinct.len(), 21, "20 packages once each, and the last-resort one for the other 10");

    // Item 209: a package past its lifetime is never handed out.
    let bob = hub.client().register("bob").await;
    let bob_d = MlsDevice::new(&bob.user_id, &bob.device_id().await);
    let (id, short) = bob_d.key_package(false, Some(2));
    let body = json!({"device_object": bob_d.device_object(), "key_packages": { id: short }});
    bob.ok("POST", &format!("{MLS_API}/upload"), Some(body)).await;
    tokio::time::sleep(std::time::Duration::from_millis(3_500)).await;
    assert_eq!(claim(&alice, &bob.user_id, &bob_d.device).await, None, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_checked() {
    let (_net, hub, _p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let d = MlsDevice::new(&alice.user_id, &alice.device_id().await);
    let other = MlsDevice::new(&alice.user_id, "OTHER");
    let versions = alice.ok("GET", "/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["org.lmx.mls"], true, "the MLS client API is announced");
    let upload = |body: Value| {
        let alice = alice.clone();
        async move { alice.call("POST", &format!("{MLS_API}/upload"), Some(body)).await }
    };
    let mut missing = d.device_object();
    missing.as_object_mut().unwrap().remove("algorithms");
    let a = upload(json!({"device_object": missing})).await;
    assert_eq!(a.status, 400, "item 108: {}", a.body);
    let a = upload(json!({"device_object": other.device_object()})).await;
    assert_eq!(a.status, 400, "another device's object: {}", a.body);
    let mut unsigned = d.device_object();
    unsigned["signatures"] = json!({});
    assert_eq!(upload(json!({"device_object": unsigned})).await.status, 400, "item 110");
    let (id, p) = other.key_package(false, None);
    assert_eq!(upload(json!({"key_packages": { id: p }})).await.status, 400, "another device's package");
    let (_, p) = d.key_package(false, None);
    assert_eq!(upload(json!({"key_packages": { "m.mls.v1.key_package.other:1": p }})).await.status, 400);
    let (id, p) = d.key_package(false, None);
    let a = upload(json!({"device_object": d.device_object(), "key_packages": { id: p }})).await;
    assert_eq!((a.status, &a.body["key_package_counts"][KEY_PACKAGE_ALGORITHM]), (200, &json!(1)), "{}", a.body);
    // Queried back, and gone with the device.
    let q =
        alice.ok("POST", &format!("{MLS_API}/query"), Some(json!({"device_objects": { &alice.user_id: [] }}))).await;
    assert_eq!(q["device_objects"][&alice.user_id][&d.device], d.device_object());
    alice.ok("POST", "/_matrix/client/v3/logout", Some(json!({}))).await;
    let again = hub.client().login("alice").await;
    let q =
        again.ok("POST", &format!("{MLS_API}/query"), Some(json!({"device_objects": { &alice.user_id: [] }}))).await;
    assert_eq!(q["device_objects"][&alice.user_id], json!({}), "deleted with its device");
}

/// Item 65: a participant repeats the hub's check. A commit the hub should
/// have refused (removing a joined user's device), sent to the
/// participant with the hub's signature as if the hub had taken it, is
/// kept in the participant's list soft-failed and never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_soft_fails_a_commit_its_hub_should_have_refused() {
    let (_net, hub, p1) = hub_and_p1().await;
    let (alice, mut alice_d) = mls_user(&hub, "alice", 1).await;
    let (bob, mut bob_d) = mls_user(&p1, "bob", 1).await;
    let room = alice.create_room(mls_room()).await;
    let first = alice_d.create_group(&room);
    commit(&alice, &mut alice_d, &room, first).await;
    assert_eq!(bob.join(&room, &hub.name()).await.status, 200);
    let kp = claim(&alice, &bob.user_id, &bob_d.device).await.unwrap();
    let (add, welcome) = alice_d.add(&[kp]);
    let add_id = commit(&alice, &mut alice_d, &room, add).await;
    bob_d.join(&welcome);
    timeline_event(&bob, &room, &add_id).await;

    let remove_bob = alice_d.remove(&[alice_d.leaf_of(&bob.user_id, &bob_d.device).unwrap()]);
    let room_id = lmx::core::ids::RoomId::parse(&room).unwrap();
    let view = hub.node().rooms.get(&room_id).unwrap().view();
    let draft = lmx::room::machine::Draft {
        sender: lmx::core::ids::UserId::parse(&alice.user_id).unwrap(),
        event_type: "m.mls.commit".into(),
        state_key: None,
        content: remove_bob.as_object().unwrap().clone(),
        txn: None,
    };
    let forged =
        lmx::room::machine::build::hub_event_from_draft(&view, &hub.node().key, &draft, lmx::sys::now_ms()).unwrap();
    let id = forged.event_id().clone();
    let txn = json!({"origin": hub.name(), "origin_server_ts": lmx::sys::now_ms(), "pdus": [forged.json()]});
    let path = format!("{}/send/forged1", lmx::federation::UNSTABLE);
    // Sent as the hub, whose own transaction to the participant may still be
    // in flight: one at a time per origin, so try again until it is taken.
    let mut answer = fed(&hub, &p1.name(), Method::PUT, &path, Some(&txn)).await;
    for _ in 0..100 {
        if answer.0 != 400 || answer.1["errcode"] != "M_BAD_STATE" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        answer = fed(&hub, &p1.name(), Method::PUT, &path, Some(&txn)).await;
    }
    let (status, body) = answer;
    assert_eq!(status, 200, "{body}");
    eventually("the participant to keep the forged commit", || p1.node().store.event(&id).unwrap().is_some()).await;
    assert!(p1.node().store.event(&id).unwrap().unwrap().soft_failed, "soft-failed by the participant's audit");
    let sync = bob.sync(None, 0).await;
    let timeline = sync["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap();
    assert!(!timeline.iter().any(|e| e["event_id"] == id.as_str()), "never shown");
}
