//! A stock Synapse (the pinned PyPI release, a real process) in rooms an
//! lmx hub linearizes: room versions 10, 11 and 12, with an lmx follower
//! as a third server. Skipped without `LMX_SYNAPSE_PYTHON` (see
//! `tests/common/synapse.rs`); `scripts/test-all` installs Synapse and
//! requires these tests.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::synapse::{python, Synapse};
use common::{enc, free_port, Client, Net, Server};
use serde_json::{json, Value};

/// Three servers: an lmx hub, an lmx follower, a Synapse.
struct Trio {
    net: Net,
    hub: Server,
    follower: Server,
    synapse: Synapse,
}

async fn trio(py: &std::path::Path) -> Trio {
    let net = Net::new();
    let (hub_port, follower_port, syn_port, syn_client) = (free_port(), free_port(), free_port(), free_port());
    let mut hub_config = net.config_localhost(hub_port);
    hub_config.mode = lmx::config::Mode::Hub;
    let mut follower_config = net.config_localhost(follower_port);
    follower_config.mode = lmx::config::Mode::Follower;
    // Push gateways the tests run sit on loopback.
    for c in [&mut hub_config, &mut follower_config] {
        c.push.allow_ip_ranges = vec!["127.0.0.0/8".parse().unwrap()];
    }
    let hub = Server::start(hub_config).await;
    let follower = Server::start(follower_config).await;
    let mut synapse = Synapse::new(py, &net.dir.path().join("synapse"), &net.ca, syn_port, syn_client);
    synapse.start().await;
    Trio { net, hub, follower, synapse }
}

async fn get(c: &Client, path: &str) -> common::Answer {
    c.call("GET", path, None).await
}

/// Polls until `check` accepts an answer of `path` (or `PATIENCE` passes).
async fn wait_for(c: &Client, path: &str, what: &str, mut check: impl FnMut(&common::Answer) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let a = get(c, path).await;
        if check(&a) {
            return a.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: last answer {} {}",
            a.status,
            a.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `c` can read event `id` in `room`.
async fn sees(c: &Client, room: &str, id: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(id));
    wait_for(c, &path, &format!("{} to see {id}", c.user_id), |a| a.status == 200).await
}

async fn send(c: &Client, room: &str, ty: &str, content: Value) -> String {
    let txn = format!("t{}", lmx::sys::random_string(12));
    let path = format!("/_matrix/client/v3/rooms/{}/send/{}/{}", enc(room), ty, txn);
    let a = c.call("PUT", &path, Some(content)).await;
    assert_eq!(a.status, 200, "{} send {ty}: {}", c.user_id, a.body);
    a.body["event_id"].as_str().unwrap().to_owned()
}

async fn text(c: &Client, room: &str, body: &str) -> String {
    send(c, room, "m.room.message", json!({"msgtype": "m.text", "body": body})).await
}

async fn state(c: &Client, room: &str, ty: &str, key: &str, content: Value) -> String {
    let a = c.put_state(room, ty, key, content).await;
    assert_eq!(a.status, 200, "{} state {ty}: {}", c.user_id, a.body);
    a.body["event_id"].as_str().unwrap().to_owned()
}

async fn join(c: &Client, room: &str, via: &str) {
    let a = c.join(room, via).await;
    assert_eq!(a.status, 200, "{} join: {}", c.user_id, a.body);
}

async fn kick(c: &Client, room: &str, user: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/kick", enc(room));
    let a = c.call("POST", &path, Some(json!({ "user_id": user, "reason": "test" }))).await;
    assert_eq!(a.status, 200, "{} kick: {}", c.user_id, a.body);
}

async fn ban(c: &Client, room: &str, user: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/ban", enc(room));
    let a = c.call("POST", &path, Some(json!({ "user_id": user }))).await;
    assert_eq!(a.status, 200, "{} ban: {}", c.user_id, a.body);
}

async fn redact(c: &Client, room: &str, id: &str) -> String {
    let txn = format!("r{}", lmx::sys::random_string(12));
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/{}", enc(room), enc(id), txn);
    let a = c.call("PUT", &path, Some(json!({ "reason": "test" }))).await;
    assert_eq!(a.status, 200, "{} redact: {}", c.user_id, a.body);
    a.body["event_id"].as_str().unwrap().to_owned()
}

async fn set_typing(c: &Client, room: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(room), enc(&c.user_id));
    let a = c.call("PUT", &path, Some(json!({"typing": true, "timeout": 30000}))).await;
    assert_eq!(a.status, 200, "{} typing: {}", c.user_id, a.body);
}

/// Syncs until `user` is listed as typing in `room`.
async fn typing_seen(c: &Client, room: &str, user: &str) {
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    let mut since: Option<String> = None;
    loop {
        let r = c.sync(since.as_deref(), 1000).await;
        let typing = r["rooms"]["join"][room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.typing")
            .any(|e| e["content"]["user_ids"].as_array().is_some_and(|u| u.iter().any(|x| x == user)));
        if typing {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} never saw {user} typing", c.user_id);
        since = r["next_batch"].as_str().map(str::to_owned);
    }
}

/// Every event a user can page back to, newest first.
async fn history(c: &Client, room: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(room));
        if let Some(f) = &from {
            path.push_str(&format!("&from={}", enc(f)));
        }
        let a = get(c, &path).await;
        assert_eq!(a.status, 200, "{} messages: {}", c.user_id, a.body);
        let chunk = a.body["chunk"].as_array().cloned().unwrap_or_default();
        let end = a.body["end"].as_str().map(str::to_owned);
        let done = chunk.is_empty() || end.is_none() || end == from;
        out.extend(chunk);
        if done {
            break;
        }
        from = end;
    }
    out
}

fn ids(events: &[Value]) -> BTreeSet<String> {
    events.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect()
}

/// The room state a user reads, as `(type, state_key) → event id`.
async fn state_ids(c: &Client, room: &str) -> BTreeMap<(String, String), String> {
    let a = get(c, &format!("/_matrix/client/v3/rooms/{}/state", enc(room))).await;
    assert_eq!(a.status, 200, "{} state: {}", c.user_id, a.body);
    a.body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let key = (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned());
            (key, e["event_id"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Waits until the three users read the same room state; returns it.
async fn same_state(users: [&Client; 3], room: &str) -> BTreeMap<(String, String), String> {
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let a = state_ids(users[0], room).await;
        let b = state_ids(users[1], room).await;
        let c = state_ids(users[2], room).await;
        if a == b && b == c {
            return a;
        }
        if tokio::time::Instant::now() > deadline {
            let diff = |x: &BTreeMap<_, _>, y: &BTreeMap<_, _>| -> Vec<String> {
                x.iter().filter(|(k, v)| y.get(*k) != Some(*v)).map(|(k, v)| format!("{k:?}={v}")).collect()
            };
            panic!("states differ: hub-vs-follower {:?}; hub-vs-synapse {:?}", diff(&a, &b), diff(&a, &c));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the three users page back to the same set of events,
/// containing `must`.
async fn same_events(users: [&Client; 3], room: &str, must: &[String], synapse: &Synapse) -> BTreeSet<String> {
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let sets = [
            ids(&history(users[0], room).await),
            ids(&history(users[1], room).await),
            ids(&history(users[2], room).await),
        ];
        let complete = must.iter().all(|m| sets.iter().all(|s| s.contains(m)));
        if complete && sets[0] == sets[1] && sets[1] == sets[2] {
            return sets[0].clone();
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<Vec<&String>> =
                sets.iter().map(|s| must.iter().filter(|m| !s.contains(*m)).collect()).collect();
            let only: Vec<Vec<&String>> =
                sets.iter().map(|s| s.iter().filter(|e| !sets.iter().all(|o| o.contains(*e))).collect()).collect();
            let odd: BTreeSet<&String> = only.iter().flatten().copied().collect();
            let log = synapse.log_lines(|l| odd.iter().any(|e| l.contains(e.as_str())));
            panic!("event sets differ (hub, follower, synapse): missing {missing:?}; not everywhere {only:?}\nsynapse:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn levels(version: &str, creator: &str, others: &[(&str, i64)]) -> Value {
    let mut users = serde_json::Map::new();
    if version != "12" {
        users.insert(creator.into(), json!(100));
    }
    for (u, l) in others {
        users.insert((*u).into(), json!(l));
    }
    json!({
        "users": users, "users_default": 0, "events_default": 0, "state_default": 50,
        "ban": 50, "kick": 50, "redact": 50, "invite": 0,
        "events": {"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100},
    })
}

/// A PDU crafted as if a Synapse user made it, signed with Synapse's own
/// key, put straight into the hub's `/send`. Returns the event id and the
/// hub's answer for it.
async fn craft_and_send(t: &Trio, version: &str, room: &str, mut event: Value) -> (String, Value) {
    let v = lmx::core::event::RoomVersion::find(version).unwrap();
    let name = lmx::core::ids::ServerName::parse(&t.synapse.name).unwrap();
    let key = lmx::federation::keyring::load_or_create_signing_key(&t.synapse.key_path(), &name).unwrap();
    event["room_id"] = json!(room);
    event["origin_server_ts"] = json!(lmx::sys::now_ms());
    let mut obj = event.as_object().unwrap().clone();
    lmx::core::event::sign_event(v, &key, &mut obj).unwrap();
    let id = lmx::core::event::event_id(v, &obj).unwrap().to_string();
    let txn = format!("craft{}", lmx::sys::random_string(8));
    let path = format!("/_matrix/federation/v1/send/{txn}");
    let body = json!({ "origin": t.synapse.name, "origin_server_ts": lmx::sys::now_ms(), "pdus": [obj] });
    let auth = lmx::federation::xmatrix::sign_request(&key, "PUT", &path, &t.hub.name(), Some(&body), false);
    let a = common::raw_federation(&t.net, &t.hub, "PUT", &path, Some(auth), body.to_string().into_bytes()).await;
    assert_eq!(a.status, 200, "crafted send: {}", a.body);
    (id.clone(), a.body["pdus"][&id].clone())
}

/// Events in the hub's list with more than one prev event: the places
/// where the hub merged concurrent branches.
fn merge_events(t: &Trio, room: &str) -> usize {
    t.hub
        .list(room)
        .iter()
        .filter(|id| {
            let rec = t.hub.node().store.event(id).unwrap().unwrap();
            let v: Value = serde_json::from_slice(&rec.json).unwrap();
            v["prev_events"].as_array().is_some_and(|p| p.len() > 1)
        })
        .count()
}

/// What the hub holds of an event: its depth, for crafting children.
fn depth_of(t: &Trio, id: &str) -> i64 {
    let rec = t.hub.node().store.event(&lmx::core::ids::EventId::parse(id).unwrap()).unwrap().unwrap();
    let v: Value = serde_json::from_slice(&rec.json).unwrap();
    v["depth"].as_i64().unwrap()
}

/// The scenarios for one room version, on three fresh servers.
/// One scenario at a time: three Synapses and six lmx servers at once on
/// two cores made the slowest of them miss its waits.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn scenario(version: &str) {
    let Some(py) = python() else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut t = trio(&py).await;
    let hub_name = t.hub.name();
    let alice = t.hub.client().register("alice").await;
    let bob = t.follower.client().register("bob").await;
    let bob2 = t.follower.client().register("bob2").await;
    let carol = t.synapse.client().register("carol").await;
    let dave = t.synapse.client().register("dave").await;
    let eve = t.synapse.client().register("eve").await;
    let everyone = [&alice, &bob, &carol];

    // Joining through the hub; moderators on the other two servers.
    let room = alice.create_room(json!({"preset": "public_chat", "room_version": version, "name": "mixed"})).await;
    for c in [&carol, &bob, &bob2, &eve] {
        join(c, &room, &hub_name).await;
    }
    let pl = levels(version, &alice.user_id, &[(&carol.user_id, 50), (&bob.user_id, 50)]);
    let pl_id = state(&alice, &room, "m.room.power_levels", "", pl).await;
    sees(&carol, &room, &pl_id).await;
    sees(&bob, &room, &pl_id).await;

    // Messages, a reply, a reaction, an edit and redactions from all sides.
    let m_a = text(&alice, &room, "from the hub").await;
    let m_c = text(&carol, &room, "from synapse").await;
    let m_b = text(&bob, &room, "from the follower").await;
    let reply = send(
        &carol,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "a reply",
        "m.relates_to": {"m.in_reply_to": {"event_id": m_a}}}),
    )
    .await;
    let reaction = send(
        &bob,
        &room,
        "m.reaction",
        json!({"m.relates_to":
        {"rel_type": "m.annotation", "event_id": m_c, "key": "👍"}}),
    )
    .await;
    let edit = send(
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "* edited",
        "m.new_content": {"msgtype": "m.text", "body": "edited"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": m_a}}),
    )
    .await;
    let m_c2 = text(&carol, &room, "carol takes this back").await;
    let m_a2 = text(&alice, &room, "a moderator on the follower removes this").await;
    sees(&carol, &room, &m_a2).await;
    sees(&bob, &room, &m_c2).await;
    let r1 = redact(&carol, &room, &m_c2).await;
    let r2 = redact(&bob, &room, &m_a2).await;
    // State from each side, and a kick by a Synapse moderator of a user
    // on the follower.
    let name = state(&carol, &room, "m.room.name", "", json!({"name": "named on synapse"})).await;
    let topic = state(&bob, &room, "m.room.topic", "", json!({"topic": "set on the follower"})).await;
    sees(&carol, &room, &topic).await;
    kick(&carol, &room, &bob2.user_id).await;
    let all = [&m_a, &m_c, &m_b, &reply, &reaction, &edit, &r1, &r2, &name, &topic].map(String::clone);
    for id in &all {
        for c in everyone {
            sees(c, &room, id).await;
        }
    }
    for c in everyone {
        for gone in [&m_c2, &m_a2] {
            let e = sees(c, &room, gone).await;
            assert!(e["content"].as_object().unwrap().is_empty(), "{} still reads redacted {gone}: {e}", c.user_id);
        }
    }
    let st = same_state(everyone, &room).await;
    assert_eq!(st[&("m.room.name".to_owned(), String::new())], name);
    assert_eq!(st[&("m.room.topic".to_owned(), String::new())], topic);
    let kicked = sees(&bob, &room, &st[&("m.room.member".to_owned(), bob2.user_id.clone())]).await;
    assert_eq!(kicked["content"]["membership"], "leave");

    // EDUs both ways: typing from Synapse and from the hub.
    set_typing(&carol, &room).await;
    typing_seen(&alice, &room, &carol.user_id).await;
    typing_seen(&bob, &room, &carol.user_id).await;
    set_typing(&alice, &room).await;
    typing_seen(&carol, &room, &alice.user_id).await;

    // Forks: everybody sends at once, two topics race.
    let mut tasks = Vec::new();
    for (who, c) in [("hub", &alice), ("follower", &bob), ("synapse", &carol)] {
        let c = (*c).clone();
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..8 {
                sent.push(text(&c, &room, &format!("{who} burst {i}")).await);
            }
            sent
        }));
    }
    let (topic_a, topic_c) = tokio::join!(
        state(&alice, &room, "m.room.topic", "", json!({"topic": "hub's"})),
        state(&carol, &room, "m.room.topic", "", json!({"topic": "synapse's"}))
    );
    let mut burst = vec![topic_a, topic_c];
    for task in tasks {
        burst.extend(task.await.unwrap());
    }
    let mut must = all.to_vec();
    must.extend(burst);
    let events = same_events(everyone, &room, &must, &t.synapse).await;
    let st = same_state(everyone, &room).await;
    let merges = merge_events(&t, &room);
    eprintln!("v{version}: {} events agree; state has {} entries; {merges} events merge forks", events.len(), st.len());
    assert!(merges > 0, "concurrent sends made the hub merge branches");

    // History: Synapse pages back to the room's creation.
    let carol_history = history(&carol, &room).await;
    assert!(carol_history.iter().any(|e| e["type"] == "m.room.create"), "synapse pages back to m.room.create");

    // A Synapse user invited while away joins later and reads what the
    // room's history visibility allows.
    state(&alice, &room, "m.room.history_visibility", "", json!({"history_visibility": "invited"})).await;
    let hidden = text(&alice, &room, "before dave's invite").await;
    alice.invite(&room, &dave.user_id).await;
    let shown = text(&alice, &room, "after dave's invite").await;
    sees(&carol, &room, &shown).await;
    join(&dave, &room, &hub_name).await;
    sees(&dave, &room, &shown).await;
    let dave_ids = ids(&history(&dave, &room).await);
    assert!(dave_ids.contains(&shown) && !dave_ids.contains(&hidden), "dave reads from his invite on");

    // A room Synapse is not in: rejecting an invite (make_leave and
    // send_leave) and knocking (make_knock and send_knock) go to the hub.
    let gina = t.synapse.client().register("gina").await;
    let frank = t.synapse.client().register("frank").await;
    let side = alice.create_room(json!({"preset": "private_chat", "room_version": version})).await;
    state(&alice, &side, "m.room.join_rules", "", json!({"join_rule": "knock"})).await;
    alice.invite(&side, &gina.user_id).await;
    let reject = gina.call("POST", &format!("/_matrix/client/v3/rooms/{}/leave", enc(&side)), Some(json!({}))).await;
    assert_eq!(reject.status, 200, "gina rejects: {}", reject.body);
    let member = |u: &str| format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&side), enc(u));
    wait_for(&alice, &member(&gina.user_id), "gina's rejection", |a| a.body["membership"] == "leave").await;
    let knock_path = format!("/_matrix/client/v3/knock/{}?server_name={}", enc(&side), enc(&hub_name));
    let knock = frank.call("POST", &knock_path, Some(json!({"reason": "let me in"}))).await;
    assert_eq!(knock.status, 200, "frank knocks: {}", knock.body);
    wait_for(&alice, &member(&frank.user_id), "frank's knock", |a| a.body["membership"] == "knock").await;
    alice.invite(&side, &frank.user_id).await;
    join(&frank, &side, &hub_name).await;
    wait_for(&alice, &member(&frank.user_id), "frank's join", |a| a.body["membership"] == "join").await;
    // The follower is not in that room either: invite v2 to it, then its
    // own make_join and send_join v2.
    alice.invite(&side, &bob.user_id).await;
    join(&bob, &side, &hub_name).await;
    let hi = text(&frank, &side, "hello bob").await;
    sees(&bob, &side, &hi).await;
    // A Synapse user invites a follower user back into the main room.
    let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let a = carol.call("POST", &path, Some(json!({ "user_id": bob2.user_id }))).await;
    assert_eq!(a.status, 200, "carol invites bob2: {}", a.body);
    join(&bob2, &room, &t.synapse.name).await;
    let back = text(&bob2, &room, "bob2 is back").await;
    sees(&carol, &room, &back).await;

    // The hub restarts while Synapse sends: the queued events arrive once.
    t.hub.stop().await;
    let mut queued = Vec::new();
    for i in 0..3 {
        queued.push(text(&carol, &room, &format!("while the hub is down {i}")).await);
    }
    t.hub.restart_stopped().await;
    let alice = alice.on(&t.hub);
    for id in &queued {
        sees(&alice, &room, id).await;
        sees(&bob, &room, id).await;
    }
    let list = t.hub.list(&room);
    for id in &queued {
        assert_eq!(list.iter().filter(|e| e.as_str() == id).count(), 1, "{id} is in the hub's list once");
    }

    // Crafted events from Synapse's side that break the rules.
    let st = same_state([&alice, &bob, &carol], &room).await;
    let get_id = |t: &str, k: &str| st[&(t.to_owned(), k.to_owned())].clone();
    let tail = list.last().unwrap().to_string();
    let mut auth = vec![get_id("m.room.power_levels", "")];
    if version != "12" {
        auth.push(get_id("m.room.create", ""));
    }
    // Carol (level 50) gives herself 100: fails against its auth events.
    let mut carol_auth = auth.clone();
    carol_auth.push(get_id("m.room.member", &carol.user_id));
    let grab = levels(version, &alice.user_id, &[(&carol.user_id, 100), (&bob.user_id, 50)]);
    let (grab_id, answer) = craft_and_send(
        &t,
        version,
        &room,
        json!({
            "type": "m.room.power_levels", "state_key": "", "sender": carol.user_id, "content": grab,
            "prev_events": [tail], "auth_events": carol_auth, "depth": depth_of(&t, &tail) + 1,
        }),
    )
    .await;
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("rejected")), "the power grab is rejected: {answer}");
    // Eve is banned; an event she makes on the state before her ban
    // passes its auth events and that state, and fails the current state.
    let before_ban = t.hub.list(&room).last().unwrap().to_string();
    let eve_member = get_id("m.room.member", &eve.user_id);
    ban(&alice, &room, &eve.user_id).await;
    let mut eve_auth = auth.clone();
    eve_auth.push(eve_member);
    let (late_id, answer) = craft_and_send(
        &t,
        version,
        &room,
        json!({
            "type": "m.room.message", "sender": eve.user_id, "content": {"msgtype": "m.text", "body": "after my ban"},
            "prev_events": [before_ban], "auth_events": eve_auth, "depth": depth_of(&t, &before_ban) + 1,
        }),
    )
    .await;
    assert!(
        answer["error"].as_str().is_some_and(|e| e.contains("soft-failed")),
        "the late event is soft-failed: {answer}"
    );
    let marker = text(&alice, &room, "after the crafted events").await;
    sees(&bob, &room, &marker).await;
    for (c, name) in [(&alice, "hub"), (&bob, "follower")] {
        for id in [&grab_id, &late_id] {
            let a = get(c, &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(id))).await;
            assert_eq!(a.status, 404, "the {name}'s client must not read {id}: {}", a.body);
            assert!(!ids(&history(c, &room).await).contains(id), "{id} is not in the {name}'s history");
        }
    }
    let st = same_state([&alice, &bob, &carol], &room).await;
    assert_ne!(st[&("m.room.power_levels".to_owned(), String::new())], grab_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn room_version_10_with_synapse() {
    scenario("10").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn room_version_11_with_synapse() {
    scenario("11").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn room_version_12_with_synapse() {
    scenario("12").await;
}

/// Media through matrix-nio across the three servers (tests/clients/
/// nio_media.py): an image uploaded on the follower downloaded with
/// thumbnails on the hub and on Synapse, and the reverse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_across_a_follower_a_hub_and_synapse() {
    let Some(py) = python() else { return };
    let Ok(nio) = std::env::var("LMX_NIO_PYTHON") else {
        assert!(std::env::var("LMX_REQUIRE_CLIENT_TESTS").is_err(), "matrix-nio is not installed");
        return eprintln!("skipping: matrix-nio is not installed (run scripts/test-all)");
    };
    let _turn = ONE_AT_A_TIME.lock().await;
    let t = trio(&py).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/nio_media.py");
    let run = tokio::process::Command::new(&nio)
        .arg(script)
        .env("LMX_HUB_URL", format!("http://{}", t.hub.client))
        .env("LMX_FOLLOWER_URL", format!("http://{}", t.follower.client))
        .env("LMX_SYNAPSE_URL", format!("http://127.0.0.1:{}", t.synapse.client_port))
        .env("LMX_HUB_NAME", t.hub.name())
        .env("LMX_ROOM_VERSION", "11")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run).await.expect("the scenario ends").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().last() == Some("OK"),
        "nio media scenario failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    // The follower keeps Synapse's file, fetched over federation.
    let synapse = lmx::core::ids::ServerName::parse(&t.synapse.name).unwrap();
    assert!(t.follower.node().store.remote_media(100).unwrap().iter().any(|(s, _, _)| *s == synapse));
}

/// The chat of issue 13's "done" through matrix-rust-sdk
/// (tests/clients/rust/src/chat.rs): alice on the hub, bob on the
/// follower, carol on Synapse; a space with an LM room and a mixed room of
/// version 12; images with thumbnails, a reply, a reaction and a thread in
/// each; bob's pusher, whose gateway (run here) gets both images.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_rust_sdk_chat_across_hub_follower_and_synapse() {
    let Some(py) = python() else { return };
    let Ok(e2ee_bin) = std::env::var("LMX_RUST_CLIENT") else {
        assert!(std::env::var("LMX_REQUIRE_CLIENT_TESTS").is_err(), "matrix-rust-sdk's programs are not built");
        return eprintln!("skipping: matrix-rust-sdk's programs are not built (run scripts/test-all)");
    };
    let program = std::path::Path::new(&e2ee_bin).with_file_name("lmx-rust-chat");
    let _turn = ONE_AT_A_TIME.lock().await;
    let gateway = common::gateway::Gateway::start(common::gateway::Mode::Accept).await;
    let t = trio(&py).await;
    let image_path = t.net.dir.path().join("cat.png");
    let img = image::RgbImage::from_fn(800, 600, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    img.save(&image_path).unwrap();
    let run = tokio::process::Command::new(&program)
        .env("LMX_HUB_URL", format!("http://{}", t.hub.client))
        .env("LMX_FOLLOWER_URL", format!("http://{}", t.follower.client))
        .env("LMX_SYNAPSE_URL", format!("http://127.0.0.1:{}", t.synapse.client_port))
        .env("LMX_HUB_NAME", t.hub.name())
        .env("LMX_GATEWAY_URL", &gateway.url)
        .env("LMX_IMAGE", &image_path)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run).await.expect("the chat ends").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().last() == Some("OK"),
        "matrix-rust-sdk chat failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    let images: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("IMAGE ")?.split(' ').nth(1)).collect();
    assert_eq!(images.len(), 2, "{stdout}");
    for id in images {
        common::eventually(&format!("bob's push for {id}"), || !gateway.delivered_for(id).is_empty()).await;
        let n = &gateway.delivered_for(id)[0];
        assert_eq!(n["content"]["msgtype"], "m.image", "{n}");
        assert_eq!(n["devices"][0]["data"]["app"], "chat test");
    }
}
