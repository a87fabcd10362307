//! MUSTs of the LM draft about the membership handshakes (make_*, send_*,
//! invite) and the retrieval endpoints: what the hub, and an invitee's
//! server, refuse and how. Whole lmx servers over HTTPS; requests signed
//! with the calling server's own key. Numbers in test names and comments
//! are items of the conformance checklist.

mod common;

use std::collections::BTreeSet;

use common::peer::{self, event_for, fed};
use common::*;
use http::Method;
use lmx::core::event::{self, RoomVersion, LM_VERSION};
use lmx::core::ids::RoomId;
use lmx::core::rooms::StateView;
use lmx::federation::UNSTABLE;
use serde_json::{json, Value};

const HUB: &str = "hub.test:8448";
const P1: &str = "p1.test:8448";
const P2: &str = "p2.test:8448";
const CAROL: &str = "@carol:p2.test:8448";
const DAVE: &str = "@dave:p2.test:8448";
const ERIN: &str = "@erin:p2.test:8448";
const NOWHERE: &str = "!nowhere:hub.test:8448";

/// A hub with Alice, p1 with Bob joined to Alice's public room, and p2,
/// which takes part in nothing.
struct Three {
    net: Net,
    hub: Server,
    p1: Server,
    p2: Server,
    alice: Client,
    bob: Client,
    room: String,
}

async fn three() -> Three {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test", "p2.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let p1 = Server::start(net.config("p1.test")).await;
    let p2 = Server::start(net.config("p2.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    Three { net, hub, p1, p2, alice, bob, room }
}

fn make_path(kind: &str, room: &str, user: &str) -> String {
    format!("/_matrix/federation/v1/make_{kind}/{}/{}?ver={}", enc(room), enc(user), enc(LM_VERSION))
}

fn errcode(answer: &(u16, Value)) -> (u16, Option<&str>) {
    (answer.0, answer.1["errcode"].as_str())
}

async fn ban(t: &Three, room: &str, user: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/ban", enc(room));
    t.alice.ok("POST", &path, Some(json!({ "user_id": user }))).await;
}

fn membership(s: &Server, room: &str, user: &str) -> String {
    let view = s.node().rooms.get(&RoomId::parse(room).unwrap()).unwrap().view();
    view.state.membership(user).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_192_196_197_make_join_leave_and_knock() {
    let t = three().await;
    let private = t.alice.create_room(json!({"preset": "private_chat"})).await;
    let knock_rules = json!([{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]);
    let knock = t.alice.create_room(json!({ "initial_state": knock_rules })).await;
    for kind in ["join", "leave", "knock"] {
        // Item 196: a participant that knows the room is not its hub.
        let a = fed(&t.p2, P1, Method::GET, &make_path(kind, &t.room, CAROL), None).await;
        assert_eq!(errcode(&a), (400, Some("M_WRONG_SERVER")), "make_{kind} at a participant: {}", a.1);
        // Item 196: an unknown room.
        let a = fed(&t.p2, HUB, Method::GET, &make_path(kind, NOWHERE, CAROL), None).await;
        assert_eq!(errcode(&a), (404, Some("M_NOT_FOUND")), "make_{kind} of an unknown room: {}", a.1);
    }
    // Item 197: changes the rules would refuse.
    ban(&t, &t.room, DAVE).await;
    let refused = [
        ("join", &private, CAROL, "not invited"),
        ("knock", &private, CAROL, "an invite-only room"),
        ("knock", &t.room, CAROL, "a public room"),
        ("leave", &t.room, CAROL, "never a member"),
        ("join", &t.room, DAVE, "banned"),
        ("leave", &t.room, DAVE, "banned"),
    ];
    for (kind, room, user, why) in refused {
        let a = fed(&t.p2, HUB, Method::GET, &make_path(kind, room, user), None).await;
        assert_eq!(errcode(&a), (403, Some("M_FORBIDDEN")), "make_{kind}, {why}: {}", a.1);
    }
    // Item 192: the templates.
    let allowed = [
        ("join", &t.room, CAROL, &t.p2),
        ("leave", &t.room, t.bob.user_id.as_str(), &t.p1),
        ("knock", &knock, CAROL, &t.p2),
    ];
    for (kind, room, user, caller) in allowed {
        let (code, answer) = fed(caller, HUB, Method::GET, &make_path(kind, room, user), None).await;
        assert_eq!(code, 200, "make_{kind}: {answer}");
        assert_eq!(answer["room_version"], LM_VERSION);
        let e = &answer["event"];
        assert_eq!(e["type"], "m.room.member", "{answer}");
        assert_eq!((e["state_key"].as_str(), e["sender"].as_str()), (Some(user), Some(user)), "{answer}");
        assert_eq!(e["content"]["membership"], kind, "{answer}");
        assert_eq!(e["room_id"].as_str(), Some(room.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_50_199_200_send_join_leave_and_knock() {
    let t = three().await;
    let private = t.alice.create_room(json!({"preset": "private_chat"})).await;
    let knock_rules = json!([{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]);
    let knock = t.alice.create_room(json!({ "initial_state": knock_rules })).await;
    let (p1_key, p2_key) = (t.p1.node().key.clone(), t.p2.node().key.clone());
    let send = |kind: &'static str, caller: &'static str, to: &'static str, lpdu: &lmx::core::json::Object| {
        let path = format!("{UNSTABLE}/send_{kind}/{}", enc(&peer::id_of(lpdu)));
        let body = Value::Object(lpdu.clone());
        let from = if caller == P1 { &t.p1 } else { &t.p2 };
        async move { fed(from, to, Method::POST, &path, Some(&body)).await }
    };

    // Item 199: make_*'s errors. An unknown room; a server that is not the
    // hub.
    for kind in ["join", "leave", "knock"] {
        let lpdu = peer::member(&p2_key, HUB, NOWHERE, CAROL, CAROL, kind);
        assert_eq!(errcode(&send(kind, P2, HUB, &lpdu).await), (404, Some("M_NOT_FOUND")), "send_{kind}");
        let lpdu = peer::member(&p2_key, HUB, &t.room, CAROL, CAROL, kind);
        assert_eq!(errcode(&send(kind, P2, P1, &lpdu).await), (400, Some("M_WRONG_SERVER")), "send_{kind}");
    }
    // Item 199: the rules are checked again when the event comes: the
    // state may have changed since make_*.
    let made = fed(&t.p2, HUB, Method::GET, &make_path("join", &t.room, ERIN), None).await;
    assert_eq!(made.0, 200, "{}", made.1);
    ban(&t, &t.room, ERIN).await;
    let join = peer::member(&p2_key, HUB, &t.room, ERIN, ERIN, "join");
    assert_eq!(errcode(&send("join", P2, HUB, &join).await), (403, Some("M_FORBIDDEN")));
    assert_eq!(event_for(&t.hub, &t.room, &join), None);
    let made = fed(&t.p1, HUB, Method::GET, &make_path("leave", &t.room, &t.bob.user_id), None).await;
    assert_eq!(made.0, 200, "{}", made.1);
    ban(&t, &t.room, &t.bob.user_id).await;
    let leave = peer::member(&p1_key, HUB, &t.room, &t.bob.user_id, &t.bob.user_id, "leave");
    assert_eq!(errcode(&send("leave", P1, HUB, &leave).await), (403, Some("M_FORBIDDEN")), "a banned user's leave");
    assert_eq!(membership(&t.hub, &t.room, &t.bob.user_id), "ban");
    // And without make_*: joins and knocks the rules refuse.
    let join = peer::member(&p2_key, HUB, &private, CAROL, CAROL, "join");
    assert_eq!(errcode(&send("join", P2, HUB, &join).await), (403, Some("M_FORBIDDEN")), "not invited");
    let knock_private = peer::member(&p2_key, HUB, &private, CAROL, CAROL, "knock");
    assert_eq!(errcode(&send("knock", P2, HUB, &knock_private).await), (403, Some("M_FORBIDDEN")));
    assert_eq!(membership(&t.hub, &private, CAROL), "leave");

    // Item 200: send_join answers the event, the state before it and the
    // auth chain.
    let join = peer::member(&p2_key, HUB, &t.room, CAROL, CAROL, "join");
    let (code, answer) = send("join", P2, HUB, &join).await;
    assert_eq!(code, 200, "{answer}");
    let id = event_for(&t.hub, &t.room, &join).expect("appended");
    let got = answer["event"].as_object().unwrap();
    assert_eq!(peer::id_of(got), id.to_string(), "the final PDU");
    let ids = |key: &str| -> BTreeSet<String> {
        answer[key].as_array().unwrap().iter().map(|e| peer::id_of(e.as_object().unwrap())).collect()
    };
    let room_id = RoomId::parse(&t.room).unwrap();
    let view = t.hub.node().rooms.get(&room_id).unwrap().view();
    let now: BTreeSet<String> = view.state.iter().map(|e| e.event_id().to_string()).collect();
    let mut before = now.clone();
    before.remove(&id.to_string());
    assert_eq!(ids("state"), before, "the current state without the join");
    let create = view.state.create().unwrap().event_id().to_string();
    assert!(ids("auth_chain").contains(&create));
    let pdu =
        lmx::core::event::Pdu::from_object(RoomVersion::lm(), got.clone(), lmx::core::event::Schema::Full).unwrap();
    for a in pdu.auth_events() {
        assert!(ids("auth_chain").contains(&a.to_string()) || ids("state").contains(&a.to_string()), "{a}");
    }

    // Items 200, 50: send_knock answers stripped state, each event with
    // `sender`, `type`, `state_key` and `content` only.
    let knocking = peer::member(&p2_key, HUB, &knock, CAROL, CAROL, "knock");
    let (code, answer) = send("knock", P2, HUB, &knocking).await;
    assert_eq!(code, 200, "{answer}");
    let stripped = answer["stripped_state"].as_array().unwrap();
    assert!(stripped.iter().any(|e| e["type"] == "m.room.create"), "{answer}");
    assert!(stripped.iter().any(|e| e["type"] == "m.room.join_rules"), "{answer}");
    for e in stripped {
        let keys: BTreeSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["content", "sender", "state_key", "type"]), "{e}");
    }
    assert_eq!(membership(&t.hub, &knock, CAROL), "knock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_184_185_188_invite_refusals() {
    let t = three().await;
    let p1_key = t.p1.node().key.clone();
    let bob = t.bob.user_id.as_str();
    // Bob (level 0) may not invite in this room: the invite level is 50.
    let pl = json!({"invite": 50});
    let guarded = t.alice.create_room(json!({"preset": "public_chat", "power_level_content_override": pl})).await;
    assert_eq!(t.bob.join(&guarded, HUB).await.status, 200);
    ban(&t, &t.room, DAVE).await;
    let invite_body = |event: &lmx::core::json::Object, version: &str| json!({"event": event, "room_version": version, "invite_room_state": []});
    let invite = |from: &'static str, to: &'static str, body: Value| {
        let path = format!("{UNSTABLE}/invite/{}", lmx::sys::random_string(12));
        let from = if from == P1 { &t.p1 } else { &t.hub };
        async move { fed(from, to, Method::POST, &path, Some(&body)).await }
    };
    let before = (t.hub.list(&t.room).len(), t.hub.list(&guarded).len());

    // Item 184: the event must be an m.room.member invite.
    let not_invites = [
        peer::member(&p1_key, HUB, &t.room, bob, CAROL, "join"),
        peer::member(&p1_key, HUB, &t.room, bob, CAROL, "leave"),
        peer::lpdu(
            &p1_key,
            json!({"room_id": t.room, "hub_server": HUB, "type": "m.room.message", "sender": bob, "state_key": CAROL, "content": {"membership": "invite"}}),
        ),
    ];
    for e in &not_invites {
        let a = invite(P1, HUB, invite_body(e, LM_VERSION)).await;
        assert_eq!(a.0, 400, "{:?} {:?}: {}", e["type"], e["content"], a.1);
    }
    // The same at an invitee's server (p2), asked by the hub.
    let mut pdu = not_invites[0].clone();
    pdu.insert("auth_events".into(), json!([]));
    pdu.insert("prev_events".into(), json!([t.hub.list(&t.room).last().unwrap().as_str()]));
    event::sign_event(RoomVersion::lm(), &t.hub.node().key, &mut pdu).unwrap();
    let a = invite("hub", P2, invite_body(&pdu, LM_VERSION)).await;
    assert_eq!(a.0, 400, "{}", a.1);

    // Item 185: the hub runs the rules on a participant's invite.
    let refused = [(&guarded, CAROL, "below the invite level"), (&t.room, DAVE, "the invitee is banned")];
    for (room, target, why) in refused {
        let e = peer::member(&p1_key, HUB, room, bob, target, "invite");
        let a = invite(P1, HUB, invite_body(&e, LM_VERSION)).await;
        assert_eq!(errcode(&a), (403, Some("M_FORBIDDEN")), "{why}: {}", a.1);
        assert_eq!(event_for(&t.hub, room, &e), None);
    }
    assert_eq!((t.hub.list(&t.room).len(), t.hub.list(&guarded).len()), before, "nothing appended");

    // Item 188: an invitee's server refuses room versions it does not
    // support.
    let mut for_bob = peer::member(&p1_key, HUB, &t.room, bob, bob, "invite");
    for_bob.insert("sender".into(), json!(t.alice.user_id));
    for_bob.remove("hub_server");
    for_bob.remove("hashes");
    for_bob.remove("signatures");
    for_bob.insert("auth_events".into(), json!([]));
    for_bob.insert("prev_events".into(), json!([t.hub.list(&t.room).last().unwrap().as_str()]));
    event::sign_event(RoomVersion::lm(), &t.hub.node().key, &mut for_bob).unwrap();
    for version in ["org.example.unknown", "9", ""] {
        let a = invite("hub", P1, invite_body(&for_bob, version)).await;
        assert_eq!(errcode(&a), (400, Some("M_INCOMPATIBLE_ROOM_VERSION")), "{version:?}: {}", a.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_157_174_178_what_the_hub_does_not_serve() {
    let t = three().await;
    let other = t.alice.create_room(json!({"preset": "public_chat"})).await;
    let elsewhere = t.alice.send_ok(&other, "x", "in another room").await;
    let last = t.hub.list(&t.room).last().unwrap().to_string();
    let unknown = format!("${}", "A".repeat(43));
    let r = enc(&t.room);
    let not_found = [
        // Item 174: an event nobody has.
        format!("{UNSTABLE}/event/{}", enc(&unknown)),
        // Item 178: unknown room, an event of another room, an unknown event.
        format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(NOWHERE), enc(&last)),
        format!("/_matrix/federation/v1/state/{}?event_id={}", enc(NOWHERE), enc(&last)),
        format!("/_matrix/federation/v1/state_ids/{r}?event_id={}", enc(&elsewhere)),
        format!("/_matrix/federation/v1/state/{r}?event_id={}", enc(&elsewhere)),
        format!("/_matrix/federation/v1/state_ids/{r}?event_id={}", enc(&unknown)),
        format!("{UNSTABLE}/backfill/{}?v={}&limit=5", enc(NOWHERE), enc(&last)),
    ];
    for path in &not_found {
        let a = fed(&t.p1, HUB, Method::GET, path, None).await;
        assert_eq!(errcode(&a), (404, Some("M_NOT_FOUND")), "{path}: {}", a.1);
    }
    // The control: the state at an event of the room p1 is in.
    let ok =
        fed(&t.p1, HUB, Method::GET, &format!("/_matrix/federation/v1/state_ids/{r}?event_id={}", enc(&last)), None)
            .await;
    assert_eq!(ok.0, 200, "{}", ok.1);

    // Item 157: an unauthenticated endpoint ignores `Authorization`, even
    // one that would fail.
    let bogus = "X-Matrix origin=\"nobody.test\",destination=\"hub.test:8448\",key=\"ed25519:x\",sig=\"bm90\"";
    let a = raw_federation(&t.net, &t.hub, "GET", "/_matrix/key/v2/server", Some(bogus.to_owned()), vec![]).await;
    assert_eq!((a.status, &a.body["server_name"]), (200, &json!(HUB)), "{}", a.body);
}
