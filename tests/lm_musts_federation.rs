//! MUSTs of the LM draft about what hubs and participants send each other
//! and what they take: transactions, fan-out, the shape of the hub's list,
//! signatures. Whole lmx servers on loopback; where a test must watch or
//! break the traffic between two of them they speak plain HTTP through the
//! fault proxy. Numbers in test names and comments are items of the
//! conformance checklist.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::peer::{self, event_for, fed, id_of, send_txn, stored};
use common::proxy::{Exchange, FaultProxy, Mode, ProxiedPair, Through};
use common::*;
use http::Method;
use lmx::core::crypto::SigningKey;
use lmx::core::event::{self, Lpdu, Pdu, RoomVersion, Schema};
use lmx::core::ids::{EventId, RoomId};
use lmx::core::json::Object;
use lmx::core::rooms::{check_append, select_auth_events, EventSketch, StateMap, StateView};
use lmx::federation::client::FedClient;
use lmx::federation::policy::AddressPolicy;
use lmx::federation::UNSTABLE;
use serde_json::{json, Value};

const HUB: &str = "hub.test:8448";
const P1: &str = "p1.test:8448";

fn lm() -> &'static RoomVersion {
    RoomVersion::lm()
}

fn plain(net: &Net, host: &str) -> lmx::config::Config {
    net.plain_config(host)
}

fn failed_pdus(answer: &Value) -> &serde_json::Map<String, Value> {
    answer["failed_pdus"].as_object().unwrap_or_else(|| panic!("a /send answer: {answer}"))
}

/// A hub with Alice, a participant with Bob joined to Alice's room.
struct Two {
    net: Net,
    hub: Server,
    p1: Server,
    alice: Client,
    bob: Client,
    room: String,
}

async fn two(create: Value) -> Two {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test", "p2.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let p1 = Server::start(net.config("p1.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(create).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    Two { net, hub, p1, alice, bob, room }
}

/// Waits until `p`'s list ends where the hub's does, and its room view
/// (published after the list is written) too.
async fn converged(hub: &Server, p: &Server, room: &str) {
    let id = RoomId::parse(room).unwrap();
    eventually("the participant to hold the hub's tail", || {
        let tail = hub.list(room).last().cloned();
        p.list(room).last() == tail.as_ref() && p.node().rooms.get(&id).is_some_and(|h| h.view().tail == tail)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_20_21_22_31_104_the_hub_refuses_lpdus_that_fail_the_schema() {
    // state_default 0, so Bob may send the state events below.
    let t = two(json!({"preset": "public_chat", "power_level_content_override": {"state_default": 0}})).await;
    let key = t.p1.node().key.clone();
    let bob = t.bob.user_id.as_str();
    let base = json!({"room_id": t.room, "hub_server": HUB, "type": "m.room.message", "sender": bob, "content": {"body": "x"}});
    let with = |changes: Value| {
        let mut f = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            f[k] = v.clone();
        }
        peer::lpdu(&key, f)
    };
    let refused = [
        ("no origin_server_ts (20)", with(json!({"origin_server_ts": null}))),
        ("no content (20)", with(json!({"content": null}))),
        ("no sender (20)", with(json!({"sender": null}))),
        ("no type (20)", with(json!({"type": null}))),
        ("a state_key of 256 characters (21)", with(json!({"type": "org.example.s", "state_key": "k".repeat(256)}))),
        ("a type of 256 characters (20)", with(json!({"type": "t".repeat(256)}))),
        ("hub_server naming a participant (22, 104)", with(json!({"hub_server": P1}))),
    ];
    // Extra hashes, signed over by p1 like the rest (the LPDU hash leaves
    // every hash out), so only the schema can refuse them.
    let extra_hashes = |name: &str, value: Value| {
        let mut o = with(json!({ "content": {"body": name} }));
        o["hashes"].as_object_mut().unwrap().insert(name.into(), value);
        o.remove("signatures");
        let sig = key.sign_bytes(&event::redacted_signing_bytes(lm(), &o).unwrap());
        lmx::core::crypto::insert_signature(&mut o, key.server(), key.key_id(), sig);
        o
    };
    let extra_hash = extra_hashes("sha512", json!({"sha512": "abc"}));
    let full_hash = extra_hashes("sha256", json!("abc"));
    let longest = with(json!({"type": "org.example.s", "state_key": "k".repeat(255)}));
    let good = with(json!({}));
    let mut all: Vec<(&str, &Object)> = refused.iter().map(|(why, o)| (*why, o)).collect();
    all.push(("hashes other than lpdu (31)", &extra_hash));
    all.push(("hashes.sha256 in an LPDU (31)", &full_hash));
    let before = t.hub.list(&t.room).len();

    let mut pdus: Vec<&Object> = all.iter().map(|(_, o)| *o).collect();
    pdus.extend([&longest, &good]);
    let (code, answer) = send_txn(&t.p1, HUB, "schema-1", &pdus).await;
    assert_eq!(code, 200, "{answer}");
    let failed = failed_pdus(&answer);
    for (why, o) in &all {
        let entry = failed.get(&id_of(o)).unwrap_or_else(|| panic!("{why} is listed in failed_pdus: {answer}"));
        assert!(entry["error"].is_string(), "{entry}");
        assert_eq!(event_for(&t.hub, &t.room, o), None, "{why} is not appended");
    }
    for o in [&longest, &good] {
        assert!(!failed.contains_key(&id_of(o)), "{answer}");
        assert!(event_for(&t.hub, &t.room, o).is_some());
    }
    assert_eq!(t.hub.list(&t.room).len(), before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_163_events_for_rooms_the_receiver_does_not_know_are_reported() {
    let t = two(json!({"preset": "public_chat"})).await;
    let key = t.p1.node().key.clone();
    let bob = t.bob.user_id.as_str();
    // At the hub: an unknown room, and a room id that is none.
    let unknown = peer::message(&key, HUB, "!nowhere:hub.test:8448", bob, "x");
    let invalid = peer::message(&key, HUB, "no room", bob, "x");
    let good = peer::message(&key, HUB, &t.room, bob, "fine");
    let (code, answer) = send_txn(&t.p1, HUB, "rooms-1", &[&unknown, &invalid, &good]).await;
    assert_eq!(code, 200, "{answer}");
    let failed = failed_pdus(&answer);
    for o in [&unknown, &invalid] {
        assert!(failed[&id_of(o)]["error"].is_string(), "{answer}");
    }
    assert!(!failed.contains_key(&id_of(&good)));
    assert!(event_for(&t.hub, &t.room, &good).is_some());

    // At a participant: an event of a room it never took part in, sent by
    // that room's hub.
    let other = t.alice.create_room(json!({"preset": "private_chat"})).await;
    let foreign = t.alice.send_ok(&other, "m", "not p1's room").await;
    converged(&t.hub, &t.p1, &t.room).await;
    let event = stored(&t.hub, &foreign);
    let (code, answer) = send_txn(&t.hub, P1, "rooms-2", &[&event]).await;
    assert_eq!(code, 200, "{answer}");
    assert!(failed_pdus(&answer)[&foreign]["error"].is_string(), "{answer}");
    let id = EventId::parse(&foreign).unwrap();
    assert!(t.p1.node().store.event(&id).unwrap().is_none(), "nothing of it is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_165_a_participant_drops_lpdus_for_rooms_it_does_not_hub() {
    let t = two(json!({"preset": "public_chat"})).await;
    let p2 = Server::start(t.net.config("p2.test")).await;
    let carol = "@carol:p2.test:8448";
    let key = p2.node().key.clone();
    converged(&t.hub, &t.p1, &t.room).await;
    let (hub_len, p1_len) = (t.hub.list(&t.room).len(), t.p1.list(&t.room).len());
    // Routed through the real hub, and naming the participant as hub.
    let via_hub = peer::message(&key, HUB, &t.room, carol, "to the wrong server");
    let via_p1 = peer::message(&key, P1, &t.room, carol, "p1 is no hub");
    let (code, answer) = send_txn(&p2, P1, "lpdus-1", &[&via_hub, &via_p1]).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["failed_pdus"], json!({}), "dropped, not refused");
    assert_eq!(t.p1.list(&t.room).len(), p1_len);
    // Nothing reaches the hub either: a later event arrives alone.
    let last = t.alice.send_ok(&t.room, "after", "after").await;
    converged(&t.hub, &t.p1, &t.room).await;
    assert_eq!(t.hub.list(&t.room).len(), hub_len + 1);
    assert_eq!(t.p1.list(&t.room).len(), p1_len + 1);
    assert_eq!(t.p1.list(&t.room).last().unwrap().as_str(), last);
}

/// The ban half of item 159 is asserted by `client_api.rs`
/// (`moderation_knocks_aliases_and_redactions`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_159_a_kick_reaches_the_kicked_users_server() {
    let t = two(json!({"preset": "public_chat"})).await;
    converged(&t.hub, &t.p1, &t.room).await;
    let r = enc(&t.room);
    let body = json!({"user_id": t.bob.user_id, "reason": "out"});
    t.alice.ok("POST", &format!("/_matrix/client/v3/rooms/{r}/kick"), Some(body)).await;
    let kick = t.hub.list(&t.room).last().unwrap().clone();
    let e = stored(&t.hub, kick.as_str());
    assert_eq!((e["type"].as_str(), e["state_key"].as_str()), (Some("m.room.member"), Some(t.bob.user_id.as_str())));
    assert_eq!(e["content"]["membership"], "leave");
    // p1 has no joined user left, and still gets the kick.
    let room_id = RoomId::parse(&t.room).unwrap();
    let view = || t.p1.node().rooms.get(&room_id).unwrap().view();
    // The room's view is published after its list is written.
    eventually("p1 to take the kick", || {
        t.p1.list(&t.room).contains(&kick) && view().state.membership(&t.bob.user_id) == "leave"
    })
    .await;
    assert_eq!(view().state.joined_members().count(), 1, "only Alice");
}

fn txn_of(e: &Exchange) -> String {
    e.line.split(' ').nth(1).unwrap().rsplit('/').next().unwrap().to_owned()
}

fn count(e: &Exchange, key: &str) -> usize {
    e.body[key].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_160_161_one_transaction_in_flight_of_at_most_50_pdus_and_100_edus() {
    // The hub reaches p1 through the proxy.
    let ProxiedPair { net: _net, proxy, hub, p1 } = ProxiedPair::start(Through::HubToP1, |_| {}).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    converged(&hub, &p1, &room).await;

    // p1 answers 500 for a while: the hub may not move on to another
    // transaction.
    proxy.set(Mode::Status { code: 500, body: json!({"errcode": "M_UNKNOWN", "error": "down"}) });
    alice.send_ok(&room, "first", "first").await;
    eventually("two refused attempts", || proxy.exchanges("/send/").len() >= 2).await;
    // A backlog of 120 events and 150 EDUs for p1.
    for i in 0..120 {
        alice.send_ok(&room, &format!("m{i}"), &format!("backlog {i}")).await;
    }
    let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id));
    for _ in 0..150 {
        alice.ok("PUT", &typing, Some(json!({"typing": false}))).await;
    }
    let refused_so_far = proxy.exchanges("/send/").len();
    eventually("an attempt after the backlog", || proxy.exchanges("/send/").len() > refused_so_far).await;

    proxy.set(Mode::Rewrite(Arc::new(|_: &str, _: &mut Value| {})));
    converged(&hub, &p1, &room).await;
    let delivered = |what: &str| -> usize {
        proxy.exchanges("/send/").iter().filter(|e| e.status == 200).map(|e| count(e, what)).sum()
    };
    eventually("every EDU to reach p1", || delivered("edus") >= 150).await;

    let mut sends = proxy.exchanges("/send/");
    sends.sort_by_key(|e| e.arrived);
    let first_ok = sends.iter().position(|e| e.status == 200).unwrap();
    assert!(first_ok >= 3, "{first_ok} refused attempts");
    // Item 160: until it is answered 200, the hub sends the same transaction
    // again, and nothing else (item 168, a SHOULD: with the same events).
    for e in &sends[..=first_ok] {
        assert_eq!(txn_of(e), txn_of(&sends[0]), "{}", e.line);
        assert_eq!((&e.body["pdus"], &e.body["edus"]), (&sends[0].body["pdus"], &sends[0].body["edus"]));
    }
    // Item 160: never two transactions to p1 in flight at once.
    for (i, a) in sends.iter().enumerate() {
        for b in &sends[i + 1..] {
            assert!(!a.overlaps(b), "{} and {} were in flight together", a.line, b.line);
        }
    }
    // Item 161: the backlog went out in transactions of at most 50 PDUs and
    // at most 100 EDUs.
    for e in &sends {
        assert!(count(e, "pdus") <= 50, "{} carried {} PDUs", e.line, count(e, "pdus"));
        assert!(count(e, "edus") <= 100, "{} carried {} EDUs", e.line, count(e, "edus"));
    }
    assert!(delivered("pdus") >= 121, "{}", delivered("pdus"));
    let oks: Vec<&Exchange> = sends.iter().filter(|e| e.status == 200).collect();
    // The answered transactions carry the backlog once each, in order: a
    // transaction read while the one before it was in flight starts where
    // that one ended.
    let backlog: Vec<String> = oks
        .iter()
        .flat_map(|e| e.body["pdus"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["content"]["body"].as_str().map(str::to_owned))
        .filter(|b| b.starts_with("backlog "))
        .collect();
    assert_eq!(backlog, (0..120).map(|i| format!("backlog {i}")).collect::<Vec<_>>());
    assert!(oks.len() >= 3, "{} transactions", oks.len());
    eprintln!(
        "{} refused attempts, then {} transactions: PDUs {:?}, EDUs {:?}",
        first_ok,
        oks.len(),
        oks.iter().map(|e| count(e, "pdus")).collect::<Vec<_>>(),
        oks.iter().map(|e| count(e, "edus")).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_169_170_another_transaction_while_one_is_processing() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test", "p2.test"] {
        net.reserve(h);
    }
    // p2 accepts connections and never answers.
    let p2 = FaultProxy::start(net.resolve["p2.test"]).await;
    p2.set(Mode::Hang);
    let mut hub_config = net.config("hub.test");
    hub_config.federation.resolve.insert("p2.test".into(), p2.addr);
    let hub = Server::start(hub_config).await;
    let p1 = Server::start(net.config("p1.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    converged(&hub, &p1, &room).await;

    // p1's identity with all the patience the test needs.
    let tls = lmx::http::tls::client_config(false, Some(&net.ca.pem_path)).unwrap();
    let as_p1 = Arc::new(FedClient::new(
        p1.node().key.clone(),
        Some(tls),
        HashMap::from([("hub.test".to_owned(), net.resolve["hub.test"])]),
        AddressPolicy::default(),
        PATIENCE,
    ));
    let hub_name = lmx::core::ids::ServerName::parse(HUB).unwrap();
    // `retry`: sent again while the hub is busy with another transaction of
    // p1's (p1's own deliveries may be running).
    let send = |txn: &str, pdus: Vec<&Object>, retry: bool| {
        let body = json!({ "pdus": pdus.into_iter().map(|o| Value::Object(o.clone())).collect::<Vec<_>>() });
        let path = format!("{UNSTABLE}/send/{txn}");
        let (as_p1, hub_name) = (as_p1.clone(), hub_name.clone());
        async move {
            loop {
                let answer = match as_p1.request(&hub_name, Method::PUT, &path, Some(&body), true).await {
                    Ok(r) => (200, r.json(HUB).unwrap()),
                    Err(e) => (e.status().map_or(0, |s| s.as_u16()), e.error_body().unwrap_or(Value::Null)),
                };
                if !(retry && answer.0 == 400 && answer.1["errcode"] == "M_BAD_STATE") {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // An invite for a server that does not take part: the hub asks p2 to
    // sign it (E10) while processing the transaction, and p2 hangs.
    let key = p1.node().key.clone();
    let invite = peer::member(&key, HUB, &room, &bob.user_id, "@carol:p2.test:8448", "invite");
    let first = tokio::spawn(send("slow-1", vec![&invite], true));
    eventually("the hub to wait on p2", || !p2.seen.lock().unwrap().is_empty()).await;
    let before = hub.list(&room).len();

    // Item 169: another transaction from p1 meanwhile is refused.
    let msg = peer::message(&key, HUB, &room, &bob.user_id, "while busy");
    let (code, answer) = send("other-2", vec![&msg], false).await;
    assert_eq!((code, answer["errcode"].as_str()), (400, Some("M_BAD_STATE")), "{answer}");
    // The same transaction again waits for the first processing (item 170).
    let again = tokio::spawn(send("slow-1", vec![&invite], false));
    p2.set(Mode::Refuse);
    let (first, again) = (first.await.unwrap(), again.await.unwrap());
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(first, again, "one processing, one answer");
    assert!(failed_pdus(&first.1).contains_key(&id_of(&invite)), "p2 never signed: {}", first.1);
    assert_eq!(hub.list(&room).len(), before, "the refused invite is not appended");
    // The refused transaction was not taken: once p1 is idle it goes through.
    let (code, answer) = send("other-2", vec![&msg], true).await;
    assert_eq!((code, answer["failed_pdus"].clone()), (200, json!({})), "{answer}");
    assert!(event_for(&hub, &room, &msg).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_131_200_transaction_ids_are_scoped_per_sender_and_endpoint() {
    let t = two(json!({"preset": "public_chat"})).await;
    let p2 = Server::start(t.net.config("p2.test")).await;
    let carol = p2.client().register("carol").await;
    assert_eq!(carol.join(&t.room, HUB).await.status, 200);
    converged(&t.hub, &t.p1, &t.room).await;
    converged(&t.hub, &p2, &t.room).await;
    let from_bob = peer::message(&t.p1.node().key, HUB, &t.room, &t.bob.user_id, "bob's");
    let from_carol = peer::message(&p2.node().key, HUB, &t.room, &carol.user_id, "carol's");
    let (code, a) = send_txn(&t.p1, HUB, "shared", &[&from_bob]).await;
    assert_eq!((code, &a["failed_pdus"]), (200, &json!({})), "{a}");
    let (code, a) = send_txn(&p2, HUB, "shared", &[&from_carol]).await;
    assert_eq!((code, &a["failed_pdus"]), (200, &json!({})), "{a}");
    assert!(event_for(&t.hub, &t.room, &from_bob).is_some());
    assert!(event_for(&t.hub, &t.room, &from_carol).is_some(), "another sender's transaction of the same id");
    // The same id on another endpoint is another request (send_leave
    // answers `{}`, item 200).
    let leave = peer::member(&t.p1.node().key, HUB, &t.room, &t.bob.user_id, &t.bob.user_id, "leave");
    let path = format!("{UNSTABLE}/send_leave/shared");
    let (code, answer) = fed(&t.p1, HUB, Method::POST, &path, Some(&Value::Object(leave.clone()))).await;
    assert_eq!((code, answer), (200, json!({})));
    let room_id = RoomId::parse(&t.room).unwrap();
    assert_eq!(t.hub.node().rooms.get(&room_id).unwrap().view().state.membership(&t.bob.user_id), "leave");
    assert!(event_for(&t.hub, &t.room, &leave).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_22_24_25_69_73_the_hubs_list_replays_as_a_valid_chain() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let pl = json!({"users": {alice.user_id.clone(): 100, bob.user_id.clone(): 50}});
    let room = alice.create_room(json!({"preset": "public_chat", "power_level_content_override": pl})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    for i in 0..2 {
        alice.send_ok(&room, &format!("a{i}"), "from the hub's user").await;
        bob.send_ok(&room, &format!("b{i}"), "from a participant").await;
    }
    assert_eq!(bob.put_state(&room, "m.room.topic", "", json!({"topic": "t"})).await.status, 200);
    let r = enc(&room);
    bob.ok("POST", &format!("/_matrix/client/v3/rooms/{r}/leave"), Some(json!({}))).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    let dave = hub.client().register("dave").await;
    alice.invite(&room, &dave.user_id).await;
    bob.send_ok(&room, "last", "last").await;
    converged(&hub, &p1, &room).await;

    let (hub_key, p1_key) = (&hub.node().key, &p1.node().key);
    let mut state = StateMap::new();
    let mut tail: Option<EventId> = None;
    let mut from_p1 = 0;
    for id in hub.list(&room) {
        let o = stored(&hub, id.as_str());
        let pdu = Pdu::from_object(lm(), o.clone(), Schema::Full).unwrap();
        assert_eq!(pdu.event_id(), &id);
        // Item 25: one prev event, the list element before it.
        assert_eq!(pdu.prev_events(), tail.iter().cloned().collect::<Vec<_>>().as_slice(), "{id}");
        // Item 69: the auth events the selection picks, in its order.
        let want: Vec<String> =
            select_auth_events(lm(), &state, EventSketch::of(&pdu)).iter().map(|e| e.to_string()).collect();
        let got: Vec<String> = pdu.auth_events().iter().map(|e| e.to_string()).collect();
        assert_eq!(got, want, "{id} ({} {:?})", pdu.event_type(), pdu.state_key());
        // Item 73: it passes the rules against the state before it.
        check_append(tail.as_ref(), &state, &pdu).unwrap_or_else(|e| panic!("{id}: {e}"));
        let signers: Vec<String> =
            event::required_signers(RoomVersion::lm(), &o).unwrap().iter().map(|s| s.to_string()).collect();
        if pdu.sender().server_name().as_str() == P1 {
            from_p1 += 1;
            // Items 22, 24: built from an LPDU, so it names this hub and
            // carries the LPDU's hash; the participant's signature holds.
            assert_eq!(pdu.hub_server().map(|h| h.as_str()), Some(HUB), "{id}");
            assert_eq!(pdu.lpdu_hash(), Some(event::lpdu_hash(lm(), &o).unwrap().as_str()), "{id}");
            assert_eq!(signers, [P1, HUB]);
            event::verify_event_signature(lm(), &o, P1, p1_key.key_id().as_str(), &p1_key.public_key()).unwrap();
        } else {
            // The hub's own events carry neither (OQ-3; item 24).
            assert_eq!((pdu.hub_server(), pdu.lpdu_hash()), (None, None), "{id}");
            assert_eq!(signers, [HUB]);
        }
        event::verify_event_signature(lm(), &o, HUB, hub_key.key_id().as_str(), &hub_key.public_key()).unwrap();
        assert_eq!(event::check_hashes(lm(), &o).unwrap(), event::HashCheck::Match, "{id}");
        state.apply(Arc::new(pdu));
        tail = Some(id);
    }
    assert!(from_p1 >= 6, "{from_p1} participant events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_48_state_follows_the_list_not_timestamps() {
    let t = two(json!({"preset": "public_chat"})).await;
    let key = t.p1.node().key.clone();
    let bob = t.bob.user_id.as_str();
    let named = |name: &str, ts: i64| {
        peer::lpdu(
            &key,
            json!({
                "room_id": t.room, "hub_server": HUB, "type": "m.room.member", "sender": bob, "state_key": bob,
                "origin_server_ts": ts, "content": {"membership": "join", "displayname": name},
            }),
        )
    };
    // The later event carries the earlier clock.
    let now = lmx::sys::now_ms();
    let first = named("first, later clock", now);
    let second = named("second, earlier clock", now - 3_600_000);
    let (code, answer) = send_txn(&t.p1, HUB, "clock-1", &[&first, &second]).await;
    assert_eq!((code, &answer["failed_pdus"]), (200, &json!({})), "{answer}");
    let after = t.alice.send_ok(&t.room, "after", "after").await;
    converged(&t.hub, &t.p1, &t.room).await;
    let room_id = RoomId::parse(&t.room).unwrap();
    for s in [&t.hub, &t.p1] {
        let view = s.node().rooms.get(&room_id).unwrap().view();
        let name = view.state.member(bob).unwrap().content()["displayname"].clone();
        assert_eq!(name, "second, earlier clock", "current state on {}", s.name());
    }
    // And the state before a later event, as the hub serves it.
    let path = format!("/_matrix/federation/v1/state/{}?event_id={}", enc(&t.room), enc(&after));
    let (code, state) = fed(&t.p1, HUB, Method::GET, &path, None).await;
    assert_eq!(code, 200, "{state}");
    let member =
        state["pdus"].as_array().unwrap().iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == bob);
    assert_eq!(member.unwrap()["content"]["displayname"], "second, earlier clock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_60_61_62_a_participant_takes_hub_events_only_with_the_required_signatures() {
    // The hub's own deliveries to p1 go through the proxy, and stop; the
    // test speaks for the hub.
    let ProxiedPair { net, proxy, hub, p1 } = ProxiedPair::start(Through::HubToP1, |_| {}).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    converged(&hub, &p1, &room).await;
    proxy.set(Mode::Refuse);

    // One event of the hub's user, one built from Bob's LPDU.
    let a1 = alice.send_ok(&room, "a1", "hub-authored").await;
    let lpdu = peer::message(&p1.node().key, HUB, &room, &bob.user_id, "participant-authored");
    assert_eq!(send_txn(&p1, HUB, "b1", &[&lpdu]).await.0, 200);
    let b1 = event_for(&hub, &room, &lpdu).unwrap().to_string();
    assert!(!p1.list(&room).iter().any(|e| e.as_str() == a1 || e.as_str() == b1));

    let as_hub = Arc::new(FedClient::new(
        hub.node().key.clone(),
        None,
        HashMap::from([("p1.test".to_owned(), net.resolve["p1.test"])]),
        AddressPolicy::default(),
        Duration::from_secs(30),
    ));
    let p1_name = lmx::core::ids::ServerName::parse(P1).unwrap();
    let mut n = 0;
    let mut offer = |event: Object| {
        n += 1;
        let path = format!("{UNSTABLE}/send/as-hub-{n}");
        let body = json!({ "pdus": [event] });
        let (as_hub, p1_name) = (as_hub.clone(), p1_name.clone());
        async move {
            as_hub.request(&p1_name, Method::PUT, &path, Some(&body), true).await.unwrap();
        }
    };
    let taken = |id: &str| p1.list(&room).iter().any(|e| e.as_str() == id);
    let (hub_key, p1_key) = (hub.node().key.clone(), p1.node().key.clone());
    let forged = |k: &SigningKey| SigningKey::from_seed(k.server().clone(), k.key_id().clone(), &[9; 32]).unwrap();
    let set_sig = |o: &mut Object, k: &SigningKey, sig: String| {
        o["signatures"][k.server().as_str()][k.key_id().as_str()] = json!(sig);
    };

    // Item 61: the sender's server (here the hub) must have signed.
    let mut bad = stored(&hub, &a1);
    event::sign_event(lm(), &forged(&hub_key), &mut bad).unwrap();
    assert_eq!(id_of(&bad), a1);
    offer(bad).await;
    let mut unsigned = stored(&hub, &a1);
    unsigned["signatures"].as_object_mut().unwrap().remove(HUB);
    offer(unsigned).await;
    assert!(!taken(&a1), "a hub-authored event without a valid hub signature is dropped");
    // Item 62: a signature nobody asked for is not looked at.
    let mut extra = stored(&hub, &a1);
    extra["signatures"].as_object_mut().unwrap().insert("other.test".into(), json!({"ed25519:x": "bm90IGEgc2ln"}));
    offer(extra).await;
    assert!(taken(&a1), "the genuine event with an extra signature is taken");

    // Items 60, 61: an LPDU-built event needs the hub's signature and the
    // participant's.
    let genuine = stored(&hub, &b1);
    let mut variants = Vec::new();
    for k in [&hub_key, &p1_key] {
        let mut missing = genuine.clone();
        missing["signatures"].as_object_mut().unwrap().remove(k.server().as_str());
        let mut wrong = genuine.clone();
        set_sig(&mut wrong, k, forged(k).sign_bytes(b"something else"));
        variants.push((format!("no signature of {}", k.server()), missing));
        variants.push((format!("a wrong signature of {}", k.server()), wrong));
    }
    for (why, v) in variants {
        assert_eq!(id_of(&v), b1);
        offer(v).await;
        assert!(!taken(&b1), "{why}: dropped");
    }
    offer(genuine).await;
    assert!(taken(&b1), "the genuine event is taken");
}

/// The participant's half of item 162 and of the LPDU rules, on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_29_30_31_33_34_162_195_what_a_participant_sends_its_hub() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    // p1 reaches the hub through the proxy, which records every request.
    let proxy = FaultProxy::start(net.resolve["hub.test"]).await;
    proxy.set(Mode::Rewrite(Arc::new(|_: &str, _: &mut Value| {})));
    let hub = Server::start(plain(&net, "hub.test")).await;
    let mut p1_config = plain(&net, "p1.test");
    p1_config.federation.resolve.insert("hub.test".into(), proxy.addr);
    let p1 = Server::start(p1_config).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    bob.send_ok(&room, "1", "one").await;
    assert_eq!(
        bob.put_state(&room, "m.room.member", &bob.user_id, json!({"membership": "join", "displayname": "B"}))
            .await
            .status,
        200
    );

    // Item 195: make_join names the versions p1 supports.
    let make = proxy.exchanges("/make_join/");
    assert!(!make.is_empty());
    for e in &make {
        assert!(e.line.contains(&format!("ver={}", enc(event::LM_VERSION))), "{}", e.line);
    }
    // The proxy logs a `/send` once the hub has answered it, which may be
    // after bob's client saw the event come back: wait for the log.
    let sent = || -> Vec<Object> {
        let mut lpdus: Vec<Object> =
            proxy.exchanges("/send_join/").iter().map(|e| e.body.as_object().unwrap().clone()).collect();
        assert_eq!(lpdus.len(), 1);
        for e in proxy.exchanges("/send/") {
            lpdus.extend(e.body["pdus"].as_array().unwrap().iter().map(|p| p.as_object().unwrap().clone()));
        }
        lpdus
    };
    eventually("the join, the message, the member event", || sent().len() >= 3).await;
    let lpdus = sent();
    let key = &p1.node().key;
    for l in &lpdus {
        // Items 162, 29, 30: LPDUs, never PDUs.
        assert!(Lpdu::looks_like_lpdu(l), "{l:?}");
        assert!(!l.contains_key("auth_events") && !l.contains_key("prev_events"));
        // Item 31: `hashes` holds `lpdu` only, the hash of the LPDU.
        let hashes: Vec<&String> = l["hashes"].as_object().unwrap().keys().collect();
        assert_eq!(hashes, ["lpdu"]);
        assert_eq!(l["hashes"]["lpdu"]["sha256"], json!(event::lpdu_hash(lm(), l).unwrap()));
        // Item 34: routed through the hub, by name.
        assert_eq!(l["hub_server"], HUB);
        // Item 33: signed by p1 alone, over the redacted LPDU.
        let signers: Vec<&String> = l["signatures"].as_object().unwrap().keys().collect();
        assert_eq!(signers, [P1]);
        event::verify_event_signature(lm(), l, P1, key.key_id().as_str(), &key.public_key()).unwrap();
        Lpdu::from_object(lm(), l.clone()).unwrap();
    }
}
