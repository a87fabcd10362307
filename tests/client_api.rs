//! The Client-Server API over HTTP: sync tokens, filters, pagination edges,
//! account data, devices, profiles, moderation, and the error answers.

mod common;

use common::*;
use serde_json::json;

const HUB: &str = "hub.test:8448";

async fn two_servers() -> (Net, Server, Server) {
    let mut net = Net::new();
    net.reserve("hub.test");
    net.reserve("p1.test");
    let hub = Server::start(net.config("hub.test")).await;
    let p1 = Server::start(net.config("p1.test")).await;
    (net, hub, p1)
}

fn errcode(a: &Answer) -> (u16, String) {
    (a.status, a.body["errcode"].as_str().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_tokens_filters_and_restarts() {
    let (_net, mut hub, _p1) = two_servers().await;
    let alice = hub.client().register("alice").await;
    let room = alice.create_room(json!({"name": "r"})).await;
    for i in 0..5 {
        alice.send_ok(&room, &format!("t{i}"), &format!("m{i}")).await;
    }
    let first = alice.ok("GET", "/_matrix/client/v3/sync", None).await;
    let token = first["next_batch"].as_str().unwrap().to_owned();
    assert!(token.starts_with('s'));
    let tl = &first["rooms"]["join"][&room]["timeline"];
    assert_eq!(bodies(tl["events"].as_array().unwrap()), ["m0", "m1", "m2", "m3", "m4"]);
    assert!(tl["prev_batch"].is_string());
    assert!(first["account_data"]["events"].as_array().unwrap().iter().any(|e| e["type"] == "m.push_rules"));

    // Nothing new: the long poll returns empty after its timeout.
    let idle = alice.ok("GET", &format!("/_matrix/client/v3/sync?since={token}&timeout=200"), None).await;
    assert_eq!(idle["rooms"]["join"], json!({}));

    // Tokens survive a restart: only what is new comes back.
    hub.restart().await;
    alice.send_ok(&room, "after", "after restart").await;
    let next = alice.ok("GET", &format!("/_matrix/client/v3/sync?since={token}&timeout=5000"), None).await;
    assert_eq!(bodies(next["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap()), ["after restart"]);

    // A stored filter and an inline one: limits and types.
    let f = alice
        .ok(
            "POST",
            &format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id)),
            Some(json!({
                "room": {"timeline": {"limit": 2, "types": ["m.room.message"]}}
            })),
        )
        .await;
    let id = f["filter_id"].as_str().unwrap();
    let got = alice.ok("GET", &format!("/_matrix/client/v3/user/{}/filter/{id}", enc(&alice.user_id)), None).await;
    assert_eq!(got["room"]["timeline"]["limit"], 2);
    let filtered = alice.ok("GET", &format!("/_matrix/client/v3/sync?filter={id}"), None).await;
    let tl = &filtered["rooms"]["join"][&room]["timeline"];
    assert_eq!(bodies(tl["events"].as_array().unwrap()), ["m4", "after restart"]);
    assert_eq!(tl["limited"], true);
    let inline = enc(r#"{"room":{"timeline":{"not_types":["m.room.message"]}}}"#);
    let only_state = alice.ok("GET", &format!("/_matrix/client/v3/sync?filter={inline}"), None).await;
    assert!(bodies(only_state["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap()).is_empty());
    let a = alice.call("GET", "/_matrix/client/v3/sync?filter=nope", None).await;
    assert_eq!(errcode(&a), (404, "M_NOT_FOUND".into()));
    let a = alice.call("GET", "/_matrix/client/v3/sync?since=garbage", None).await;
    assert_eq!(errcode(&a), (400, "M_INVALID_PARAM".into()));
}

/// Incremental sync reads each of the user's rooms from its own part of the
/// stream: busy rooms of others do not push its events out, the window and
/// the filter apply per room, and a left room stops at the leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_sync_reads_each_room_on_its_own() {
    let (_net, hub, _p1) = two_servers().await;
    let alice = hub.client().register("alice").await;
    let bob = hub.client().register("bob").await;
    let public = json!({"preset": "public_chat"});
    let busy = alice.create_room(public.clone()).await;
    let quiet = alice.create_room(public.clone()).await;
    let left = alice.create_room(public.clone()).await;
    let elsewhere = bob.create_room(json!({})).await;
    for room in [&busy, &left] {
        assert_eq!(bob.join(room, "hub.test").await.status, 200);
    }
    let token = alice.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();

    // Far more events in a room alice is not in than any page of the
    // server's stream, around the ones she should see.
    for i in 0..60 {
        bob.send_ok(&elsewhere, &format!("e{i}"), "not for alice").await;
    }
    for i in 0..6 {
        bob.send_ok(&busy, &format!("b{i}"), &format!("busy {i}")).await;
        if i == 2 {
            assert_eq!(alice.put_state(&busy, "m.room.topic", "", json!({"topic": "t"})).await.status, 200);
        }
    }
    for i in 0..60 {
        bob.send_ok(&elsewhere, &format!("f{i}"), "not for alice").await;
    }
    bob.send_ok(&left, "l0", "before the leave").await;
    alice.ok("POST", &format!("/_matrix/client/v3/rooms/{}/leave", enc(&left)), Some(json!({}))).await;
    bob.send_ok(&left, "l1", "after the leave").await;
    bob.ok(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&busy), enc(&bob.user_id)),
        Some(json!({"typing": true, "timeout": 30000})),
    )
    .await;

    let filter = enc(r#"{"room":{"timeline":{"limit":3,"types":["m.room.message"]}}}"#);
    let next = alice.ok("GET", &format!("/_matrix/client/v3/sync?since={token}&filter={filter}"), None).await;
    let joined = next["rooms"]["join"].as_object().unwrap();
    assert_eq!(joined.keys().collect::<Vec<_>>(), [&busy], "only the room with news");
    let room = &joined[&busy];
    assert_eq!(bodies(room["timeline"]["events"].as_array().unwrap()), ["busy 3", "busy 4", "busy 5"]);
    assert_eq!(room["timeline"]["limited"], true);
    let state = room["state"]["events"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.topic"), "a limited timeline comes with the state: {state:?}");
    let ephemeral = room["ephemeral"]["events"].as_array().unwrap();
    assert!(ephemeral.iter().any(|e| e["type"] == "m.typing" && e["content"]["user_ids"][0] == bob.user_id.as_str()));
    let gone = &next["rooms"]["leave"][&left]["timeline"]["events"];
    assert_eq!(bodies(gone.as_array().unwrap()), ["before the leave"], "nothing after the leave");
    assert!(next["rooms"]["join"].get(&quiet).is_none());

    // The same window without a filter: every event, in order.
    let all = alice.sync(Some(&token), 0).await;
    let events = all["rooms"]["join"][&busy]["timeline"]["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 7);
    assert_eq!(events[3]["type"], "m.room.topic");
    assert_eq!(all["rooms"]["join"][&busy]["timeline"]["limited"], false);
    let leave = all["rooms"]["leave"][&left]["timeline"]["events"].as_array().unwrap().clone();
    assert_eq!(leave.last().unwrap()["content"]["membership"], "leave");
}

/// A store left by a build before format 3 (no room index, the side stream
/// by position only) is indexed at start, and sync tokens handed out before
/// still see everything after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_2_store_is_indexed_at_start() {
    use lmx::store::{Kv, KvWrite, SledKv};
    let (_net, mut hub, _p1) = two_servers().await;
    let alice = hub.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    let token = alice.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();
    for i in 0..3 {
        alice.send_ok(&room, &format!("t{i}"), &format!("m{i}")).await;
    }
    let data = format!("/_matrix/client/v3/user/{}/account_data/m.old", enc(&alice.user_id));
    alice.ok("PUT", &data, Some(json!({"kept": true}))).await;
    hub.stop().await;

    // Back to format 2's layout: indexes gone, side entries under `o`.
    let kv = SledKv::open(&hub.config.data_dir.join("db"), 1 << 20).unwrap();
    let mut writes = Vec::new();
    for (k, _) in kv.range(b"y", b"z", false, usize::MAX).unwrap() {
        writes.push(KvWrite::Delete(k));
    }
    for (k, v) in kv.range(b"j", b"k", false, usize::MAX).unwrap() {
        // Tag, two length-prefixed strings, the position.
        let pos = k[k.len() - 8..].to_vec();
        writes.push(KvWrite::Put([b"o".as_slice(), &pos].concat(), v));
        writes.push(KvWrite::Delete(k));
    }
    assert!(writes.len() >= 5, "three events and one side entry were indexed");
    let format_key = [b"_".as_slice(), &6u16.to_be_bytes(), b"format"].concat();
    writes.push(KvWrite::Put(format_key, 2u32.to_be_bytes().to_vec()));
    kv.apply(writes).unwrap();
    kv.flush().await.unwrap();
    drop(kv);
    let record_path = hub.config.data_dir.join("committed.json");
    let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    record["format"] = json!(2);
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let checked = lmx::cli::db::check(&hub.config).unwrap();
    assert!(checked.healthy, "an older format is not damage:\n{}", checked.text);
    assert!(checked.text.contains("format: 2"), "{}", checked.text);

    hub.restart_stopped().await;
    let next = alice.sync(Some(&token), 0).await;
    let events = next["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
    assert_eq!(bodies(&events), ["m0", "m1", "m2"]);
    let account = next["account_data"]["events"].as_array().unwrap();
    assert!(account.iter().any(|e| e["type"] == "m.old"), "{account:?}");
}

/// An invite of a user of the same server shows, in the invitee's sync,
/// the room's stripped state with the invite itself (clients read the
/// membership from it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_invite_comes_with_the_rooms_stripped_state() {
    let (_net, hub, _p1) = two_servers().await;
    let alice = hub.client().register("alice").await;
    let bob = hub.client().register("bob").await;
    let since = bob.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let room = alice.create_room(json!({"name": "the room", "invite": [bob.user_id]})).await;
    let got = bob.sync(Some(&since), 5000).await;
    let shown = got["rooms"]["invite"][&room]["invite_state"]["events"].as_array().unwrap().clone();
    let find = |ty: &str, key: &str| shown.iter().find(|e| e["type"] == ty && e["state_key"] == key).cloned();
    let invite = find("m.room.member", &bob.user_id).expect("the invite itself");
    assert_eq!(
        (invite["content"]["membership"].as_str(), invite["sender"].as_str()),
        (Some("invite"), Some(alice.user_id.as_str()))
    );
    assert_eq!(find("m.room.name", "").expect("the name")["content"]["name"], "the room");
    assert!(find("m.room.create", "").is_some() && find("m.room.member", &alice.user_id).is_some(), "{shown:?}");
    assert!(shown.iter().all(|e| e.get("event_id").is_none()), "stripped: {shown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_edges() {
    let (_net, hub, _p1) = two_servers().await;
    let alice = hub.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..7 {
        alice.send_ok(&room, &format!("t{i}"), &format!("m{i}")).await;
    }
    let r = enc(&room);
    let back = alice.ok("GET", &format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=3"), None).await;
    assert_eq!(bodies(back["chunk"].as_array().unwrap()), ["m6", "m5", "m4"]);
    let end = back["end"].as_str().unwrap();
    let more = alice.ok("GET", &format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=3&from={end}"), None).await;
    assert_eq!(bodies(more["chunk"].as_array().unwrap()), ["m3", "m2", "m1"]);
    // Forward from the start, a `to` bound, and the last page has no end.
    let fwd = alice.ok("GET", &format!("/_matrix/client/v3/rooms/{r}/messages?dir=f&limit=100"), None).await;
    assert_eq!(fwd["chunk"][0]["type"], "m.room.create");
    assert!(fwd.get("end").is_none());
    let to =
        alice.ok("GET", &format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&from={end}&to=t0&limit=100"), None).await;
    assert_eq!(to["chunk"].as_array().unwrap().last().unwrap()["type"], "m.room.create");
    assert!(to.get("end").is_none(), "reached the start");
    // A filter on /messages.
    let types = enc(r#"{"types":["m.room.member"]}"#);
    let members =
        alice.ok("GET", &format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=50&filter={types}"), None).await;
    assert_eq!(members["chunk"].as_array().unwrap().len(), 1);
    // Limits are clamped; bad tokens are refused.
    let zero = alice.ok("GET", &format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=0"), None).await;
    assert_eq!(zero["chunk"].as_array().unwrap().len(), 1);
    let bad = alice.call("GET", &format!("/_matrix/client/v3/rooms/{r}/messages?from=x1"), None).await;
    assert_eq!(errcode(&bad), (400, "M_INVALID_PARAM".into()));
    // Context around an event.
    let id = alice.send_ok(&room, "ctx", "middle").await;
    alice.send_ok(&room, "ctx2", "after").await;
    let ctx = alice.ok("GET", &format!("/_matrix/client/v3/rooms/{r}/context/{}?limit=4", enc(&id)), None).await;
    assert_eq!(ctx["event"]["content"]["body"], "middle");
    assert_eq!(ctx["events_after"][0]["content"]["body"], "after");
    assert_eq!(ctx["events_before"][0]["content"]["body"], "m6");
    let ev = alice.ok("GET", &format!("/_matrix/client/v3/rooms/{r}/event/{}", enc(&id)), None).await;
    assert_eq!(ev["event_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_data_push_rules_devices_profiles() {
    let (_net, hub, p1) = two_servers().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let u = enc(&alice.user_id);
    // Account data, global and per room, reaches sync.
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    alice.ok("PUT", &format!("/_matrix/client/v3/user/{u}/account_data/org.example.x"), Some(json!({"a": 1}))).await;
    alice
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/user/{u}/rooms/{}/account_data/m.tag", enc(&room)),
            Some(json!({"tags": {"u.x": {}}})),
        )
        .await;
    let got = alice.ok("GET", &format!("/_matrix/client/v3/user/{u}/account_data/org.example.x"), None).await;
    assert_eq!(got, json!({"a": 1}));
    let s = alice.ok("GET", "/_matrix/client/v3/sync", None).await;
    assert!(s["account_data"]["events"].as_array().unwrap().iter().any(|e| e["type"] == "org.example.x"));
    assert_eq!(s["rooms"]["join"][&room]["account_data"]["events"][0]["type"], "m.tag");
    let other = bob.call("GET", &format!("/_matrix/client/v3/user/{u}/account_data/org.example.x"), None).await;
    assert_eq!(other.status, 403);

    // Push rules: the defaults, then a change.
    let rules = alice.ok("GET", "/_matrix/client/v3/pushrules/", None).await;
    let overrides = rules["global"]["override"].as_array().unwrap();
    assert!(overrides.iter().any(|r| r["rule_id"] == ".m.rule.master"));
    alice
        .ok(
            "PUT",
            "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled",
            Some(json!({"enabled": true})),
        )
        .await;
    let master = alice.ok("GET", "/_matrix/client/v3/pushrules/global/override/.m.rule.master", None).await;
    assert_eq!(master["enabled"], true);
    alice
        .ok(
            "PUT",
            "/_matrix/client/v3/pushrules/global/content/cake",
            Some(json!({"pattern": "cake", "actions": ["notify"]})),
        )
        .await;
    alice.ok("DELETE", "/_matrix/client/v3/pushrules/global/content/cake", None).await;
    let gone = alice.call("GET", "/_matrix/client/v3/pushrules/global/content/cake", None).await;
    assert_eq!(gone.status, 404);

    // Devices: listed, renamed, deleted with the password.
    let devices = alice.ok("GET", "/_matrix/client/v3/devices", None).await;
    let device = devices["devices"][0]["device_id"].as_str().unwrap().to_owned();
    alice.ok("PUT", &format!("/_matrix/client/v3/devices/{device}"), Some(json!({"display_name": "laptop"}))).await;
    assert_eq!(alice.ok("GET", &format!("/_matrix/client/v3/devices/{device}"), None).await["display_name"], "laptop");
    let login = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "secret-pw"});
    let second = hub.client().ok("POST", "/_matrix/client/v3/login", Some(login)).await;
    let second_device = second["device_id"].as_str().unwrap();
    let ask = alice.call("DELETE", &format!("/_matrix/client/v3/devices/{second_device}"), Some(json!({}))).await;
    assert_eq!(ask.status, 401);
    assert_eq!(ask.body["flows"][0]["stages"][0], "m.login.password");
    let auth = json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "secret-pw"}});
    alice.ok("DELETE", &format!("/_matrix/client/v3/devices/{second_device}"), Some(auth)).await;
    let mut stale = hub.client();
    stale.token = second["access_token"].as_str().map(str::to_owned);
    assert_eq!(stale.call("GET", "/_matrix/client/v3/account/whoami", None).await.status, 401);

    // A profile change is a member event in every joined room, on every server.
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    alice
        .ok("PUT", &format!("/_matrix/client/v3/profile/{u}/displayname"), Some(json!({"displayname": "Alice A."})))
        .await;
    assert_eq!(alice.ok("GET", &format!("/_matrix/client/v3/profile/{u}"), None).await["displayname"], "Alice A.");
    eventually("bob's server to see the new name", || {
        p1.node().rooms.get(&lmx::core::ids::RoomId::parse(&room).unwrap()).is_some_and(|h| {
            use lmx::core::rooms::StateView;
            h.view().state.member(&alice.user_id).is_some_and(|m| m.content()["displayname"] == "Alice A.")
        })
    })
    .await;
    let remote = bob.ok("GET", &format!("/_matrix/client/v3/profile/{u}/displayname"), None).await;
    assert_eq!(remote["displayname"], "Alice A.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_knocks_aliases_and_redactions() {
    let (_net, hub, p1) = two_servers().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let carol = hub.client().register("carol").await;
    let knock_rules = json!([{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]);
    let room = alice.create_room(json!({"room_alias_name": "den", "initial_state": knock_rules})).await;
    let r = enc(&room);
    // The alias resolves, and joining by it works for local users.
    let alias = format!("#den:{HUB}");
    let dir = alice.ok("GET", &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), None).await;
    assert_eq!(dir["room_id"], room.as_str());
    let taken = alice.call("POST", "/_matrix/client/v3/createRoom", Some(json!({"room_alias_name": "den"}))).await;
    assert_eq!(errcode(&taken), (400, "M_ROOM_IN_USE".into()));
    // Bob knocks from another server; alice lets him in.
    let k = bob
        .call("POST", &format!("/_matrix/client/v3/knock/{r}?server_name={HUB}"), Some(json!({"reason": "hi"})))
        .await;
    assert_eq!(k.status, 200, "{}", k.body);
    let s = bob.ok("GET", "/_matrix/client/v3/sync", None).await;
    assert!(s["rooms"]["knock"][&room]["knock_state"]["events"].is_array());
    alice.invite(&room, &bob.user_id).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    // Carol is invited and joins; bob (level 0) may not kick her.
    alice.invite(&room, &carol.user_id).await;
    assert_eq!(carol.join(&alias, HUB).await.status, 200);
    let kick =
        bob.call("POST", &format!("/_matrix/client/v3/rooms/{r}/kick"), Some(json!({"user_id": carol.user_id}))).await;
    assert_eq!(errcode(&kick), (403, "M_FORBIDDEN".into()));
    // Alice bans bob, then unbans him; he cannot send while out.
    alice
        .ok("POST", &format!("/_matrix/client/v3/rooms/{r}/ban"), Some(json!({"user_id": bob.user_id, "reason": "x"})))
        .await;
    let send = bob.send_text(&room, "banned", "no").await;
    assert_eq!(send.status, 403);
    let rejoin = bob.join(&room, HUB).await;
    assert_eq!(rejoin.status, 403, "{}", rejoin.body);
    // The ban reached bob's server although it has no joined user left.
    let room_id = lmx::core::ids::RoomId::parse(&room).unwrap();
    eventually("p1 to see the ban", || {
        use lmx::core::rooms::StateView;
        p1.node().rooms.get(&room_id).is_some_and(|h| h.view().state.membership(&bob.user_id) == "ban")
    })
    .await;
    alice.ok("POST", &format!("/_matrix/client/v3/rooms/{r}/unban"), Some(json!({"user_id": bob.user_id}))).await;
    // A left room can be forgotten; a joined one cannot.
    let forget = carol.call("POST", &format!("/_matrix/client/v3/rooms/{r}/forget"), Some(json!({}))).await;
    assert_eq!(forget.status, 400);
    carol.ok("POST", &format!("/_matrix/client/v3/rooms/{r}/leave"), Some(json!({}))).await;
    carol.ok("POST", &format!("/_matrix/client/v3/rooms/{r}/forget"), Some(json!({}))).await;
    // Redactions: carol's own message by alice (power) takes effect.
    let members = alice.ok("GET", &format!("/_matrix/client/v3/rooms/{r}/joined_members"), None).await;
    assert!(members["joined"].get(&alice.user_id).is_some());
    let id = alice.send_ok(&room, "secret", "secret").await;
    let red = alice
        .ok("PUT", &format!("/_matrix/client/v3/rooms/{r}/redact/{}/1", enc(&id)), Some(json!({"reason": "oops"})))
        .await;
    assert!(red["event_id"].is_string());
    let ev = alice.ok("GET", &format!("/_matrix/client/v3/rooms/{r}/event/{}", enc(&id)), None).await;
    assert_eq!(ev["content"], json!({}));
    assert_eq!(ev["unsigned"]["redacted_because"]["content"]["reason"], "oops");
    // Clients find what a redaction redacts at its top level.
    assert_eq!(ev["unsigned"]["redacted_because"]["redacts"], id.as_str());
    let red_id = red["event_id"].as_str().unwrap();
    let red_ev = alice.ok("GET", &format!("/_matrix/client/v3/rooms/{r}/event/{}", enc(red_id)), None).await;
    assert_eq!(red_ev["redacts"], id.as_str(), "{red_ev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_as_the_spec_shapes_them() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let mut config = net.config("hub.test");
    config.client.send_per_second = 1.0;
    config.client.send_burst = 3.0;
    config.registration.enabled = true;
    let hub = Server::start(config).await;
    let c = hub.client();
    let a = c.call("GET", "/_matrix/client/v3/nothing/here", None).await;
    assert_eq!(errcode(&a), (404, "M_UNRECOGNIZED".into()));
    let a = c.call("DELETE", "/_matrix/client/v3/sync", None).await;
    assert_eq!(errcode(&a), (405, "M_UNRECOGNIZED".into()));
    let a = c
        .call(
            "POST",
            "/_matrix/client/v3/register",
            Some(json!({"username": "Bad Name!", "password": "p", "auth": {"type": "m.login.dummy"}})),
        )
        .await;
    assert_eq!(errcode(&a), (400, "M_INVALID_USERNAME".into()));
    let alice = hub.client().register("alice").await;
    let dup = c
        .call(
            "POST",
            "/_matrix/client/v3/register",
            Some(json!({"username": "alice", "password": "p", "auth": {"type": "m.login.dummy"}})),
        )
        .await;
    assert_eq!(errcode(&dup), (400, "M_USER_IN_USE".into()));
    let room = alice.create_room(json!({})).await;
    // Not in the room.
    let bob = hub.client().register("bob").await;
    let a = bob.send_text(&room, "x", "x").await;
    assert_eq!(errcode(&a), (403, "M_FORBIDDEN".into()));
    let a = bob.call("GET", &format!("/_matrix/client/v3/rooms/{}/messages", enc(&room)), None).await;
    assert_eq!(errcode(&a), (403, "M_FORBIDDEN".into()));
    // Bad JSON and bad ids.
    let a = alice.call("POST", "/_matrix/client/v3/createRoom", Some(json!({"room_version": "9"}))).await;
    assert_eq!(errcode(&a), (400, "M_UNSUPPORTED_ROOM_VERSION".into()));
    let a = alice
        .call("POST", &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), Some(json!({"user_id": 5})))
        .await;
    assert_eq!(errcode(&a), (400, "M_BAD_JSON".into()));
    // A field of the wrong type is refused, never taken for its default:
    // a number for a name would otherwise make a room without one.
    let rooms_before = alice.call("GET", "/_matrix/client/v3/joined_rooms", None).await.body["joined_rooms"].clone();
    for (path, body) in [
        ("/_matrix/client/v3/createRoom", json!({"name": 5})),
        ("/_matrix/client/v3/createRoom", json!({"invite": "@bob:hub.test:8448"})),
        ("/_matrix/client/v3/createRoom", json!({"initial_state": [{"type": "m.room.topic"}]})),
        ("/_matrix/client/v3/createRoom", json!({"is_direct": "yes"})),
        ("/_matrix/client/v3/login", json!({"type": "m.login.password", "identifier": "alice", "password": "p"})),
        ("/_matrix/client/v3/register", json!({"username": ["alice"], "password": "p"})),
    ] {
        let a = alice.call("POST", path, Some(body.clone())).await;
        assert_eq!(errcode(&a), (400, "M_BAD_JSON".into()), "{path} {body}: {}", a.body);
    }
    let rooms_after = alice.call("GET", "/_matrix/client/v3/joined_rooms", None).await.body["joined_rooms"].clone();
    assert_eq!(rooms_before, rooms_after, "a refused createRoom made no room");
    let a = alice.call("POST", "/_matrix/client/v3/createRoom", Some(json!({"invite": ["not a user"]}))).await;
    assert_eq!(errcode(&a), (400, "M_INVALID_PARAM".into()), "{}", a.body);
    let a = alice
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id)),
            Some(json!({"typing": "yes"})),
        )
        .await;
    assert_eq!(errcode(&a), (400, "M_BAD_JSON".into()), "{}", a.body);
    let a = alice.call("GET", &format!("/_matrix/client/v3/directory/room/{}", enc("#none:hub.test:8448")), None).await;
    assert_eq!(errcode(&a), (404, "M_NOT_FOUND".into()));
    // Rate limits: 429 with retry_after_ms.
    let mut limited = None;
    for i in 0..10 {
        let a = alice.send_text(&room, &format!("r{i}"), "x").await;
        if a.status == 429 {
            limited = Some(a);
            break;
        }
    }
    let limited = limited.expect("the send limit applies");
    assert_eq!(limited.body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(limited.body["retry_after_ms"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_may_refuse_to_host_rooms() {
    let mut net = Net::new();
    net.reserve("f.test");
    let mut config = net.config("f.test");
    config.mode = lmx::config::Mode::Follower;
    config.follower.host_rooms = false;
    let f = Server::start(config).await;
    let u = f.client().register("u").await;
    let a = u.call("POST", "/_matrix/client/v3/createRoom", Some(json!({}))).await;
    assert_eq!(errcode(&a), (403, "M_FORBIDDEN".into()));
    assert!(a.body["error"].as_str().unwrap().contains("follower"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_follow_messages_from_others_and_read_receipts() {
    let (_net, hub, _p1) = two_servers().await;
    let alice = hub.client().register("alice").await;
    let bob = hub.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, &hub.name()).await.status, 200);
    let count = |alice: Client, room: String| async move {
        let s = alice.sync(None, 0).await;
        s["rooms"]["join"][&room]["unread_notifications"]["notification_count"].as_u64().unwrap()
    };
    // Alice's own message reads what came before it (the spec's "by
    // sending an event").
    alice.send_ok(&room, "a0", "my own").await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(bob.send_ok(&room, &format!("b{i}"), "hello").await);
    }
    assert_eq!(
        count(alice.clone(), room.clone()).await,
        3,
        "bob's three messages; his join and alice's own message do not count"
    );
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&sent[1]));
    assert_eq!(alice.call("POST", &path, Some(json!({}))).await.status, 200);
    assert_eq!(count(alice.clone(), room.clone()).await, 1, "only the message after the receipt");
    // Counted again from where the last sync stopped: the new ones add up.
    bob.send_ok(&room, "b3", "more").await;
    bob.send_ok(&room, "b4", "more").await;
    assert_eq!(count(alice.clone(), room.clone()).await, 3);
    assert_eq!(count(alice.clone(), room.clone()).await, 3, "the same when nothing is new");
    alice.send_ok(&room, "a1", "read it all").await;
    assert_eq!(count(alice.clone(), room.clone()).await, 0, "her own message reads the rest");
}
