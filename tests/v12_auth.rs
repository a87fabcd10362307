//! Room version 12's authorization changes (Matrix spec `rooms/v12`): the
//! room id is the create event's hash, creators (the create `sender` and
//! `additional_creators`) have unbounded power and may not be listed in
//! power levels, and the create event is never an auth event. Version 11
//! is the contrast.

use std::sync::Arc;

use lmx::core::event::{Pdu, RoomVersion, Schema};
use lmx::core::ids::EventId;
use lmx::core::rooms::{authorize, check_auth_events, select_auth_events, EventSketch, StateMap, StateView};
use serde_json::{json, Value};

const ALICE: &str = "@alice:a.example";
const BOB: &str = "@bob:b.example";
const CAROL: &str = "@carol:c.example";

struct Room {
    v: &'static RoomVersion,
    room_id: String,
    state: StateMap,
    tail: EventId,
    ts: i64,
}

fn pdu(v: &'static RoomVersion, o: Value) -> Pdu {
    Pdu::from_object(v, o.as_object().unwrap().clone(), Schema::Loose).unwrap()
}

impl Room {
    fn new(version: &str, create_content: Value) -> Room {
        let v = RoomVersion::find(version).unwrap();
        let mut o = json!({"type": "m.room.create", "state_key": "", "sender": ALICE, "content": create_content,
            "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 1});
        if !v.room_id_from_create {
            o["room_id"] = json!("!r:a.example");
        }
        let create = pdu(v, o);
        authorize(&create, &StateMap::new()).expect("the create event passes");
        let room_id = create.room_id().to_string();
        let tail = create.event_id().clone();
        let mut r = Room { v, room_id, state: StateMap::new(), tail, ts: 1 };
        r.state.apply(Arc::new(create));
        r.ok(ALICE, "m.room.member", Some(ALICE), json!({"membership": "join"}));
        r
    }

    fn build(&mut self, sender: &str, ty: &str, sk: Option<&str>, content: Value) -> Pdu {
        self.ts += 1;
        let c = content.as_object().unwrap().clone();
        let sketch = EventSketch { event_type: ty, sender, state_key: sk, content: &c };
        let auth: Vec<String> = select_auth_events(self.v, &self.state, sketch).iter().map(|e| e.to_string()).collect();
        let mut o = json!({"room_id": self.room_id, "type": ty, "sender": sender, "content": content,
            "prev_events": [self.tail.as_str()], "auth_events": auth, "depth": self.ts, "origin_server_ts": self.ts});
        if let Some(sk) = sk {
            o["state_key"] = json!(sk);
        }
        pdu(self.v, o)
    }

    fn try_send(&mut self, sender: &str, ty: &str, sk: Option<&str>, content: Value) -> Result<(), String> {
        let e = self.build(sender, ty, sk, content);
        authorize(&e, &self.state).map_err(|e| e.to_string())?;
        self.tail = e.event_id().clone();
        self.state.apply(Arc::new(e));
        Ok(())
    }

    fn ok(&mut self, sender: &str, ty: &str, sk: Option<&str>, content: Value) {
        self.try_send(sender, ty, sk, content.clone()).unwrap_or_else(|e| panic!("{sender} {ty} {content}: {e}"));
    }

    fn join(&mut self, user: &str) {
        self.ok(user, "m.room.member", Some(user), json!({"membership": "join"}));
    }
}

#[test]
fn the_room_id_is_the_create_events_hash() {
    let r = Room::new("12", json!({"room_version": "12"}));
    let create = r.state.create().unwrap();
    assert_eq!(create.event_id().as_str()[1..], r.room_id[1..]);
    assert!(!r.room_id.contains(':'));
    assert_eq!(create.room_id().create_event_id().as_ref(), Some(create.event_id()));
    // A v12 create event naming a room id is refused.
    let v = RoomVersion::find("12").unwrap();
    let with_id = pdu(
        v,
        json!({"type": "m.room.create", "state_key": "", "sender": ALICE, "room_id": "!x:a.example",
        "content": {"room_version": "12"}, "prev_events": [], "auth_events": [], "depth": 1}),
    );
    assert!(authorize(&with_id, &StateMap::new()).is_err());
}

#[test]
fn additional_creators_must_be_user_ids() {
    let v = RoomVersion::find("12").unwrap();
    let create = |extra: Value| {
        pdu(
            v,
            json!({"type": "m.room.create", "state_key": "", "sender": ALICE,
            "content": {"room_version": "12", "additional_creators": extra},
            "prev_events": [], "auth_events": [], "depth": 1}),
        )
    };
    assert!(authorize(&create(json!([BOB])), &StateMap::new()).is_ok());
    assert!(authorize(&create(json!(BOB)), &StateMap::new()).is_err(), "not an array");
    assert!(authorize(&create(json!(["not a user"])), &StateMap::new()).is_err());
    assert!(authorize(&create(json!([7])), &StateMap::new()).is_err());
}

#[test]
fn creators_outrank_every_level_and_cannot_be_listed() {
    let mut r = Room::new("12", json!({"room_version": "12", "additional_creators": [CAROL]}));
    r.ok(ALICE, "m.room.join_rules", Some(""), json!({"join_rule": "public"}));
    r.join(BOB);
    r.join(CAROL);
    // Listing a creator in `users` is refused, the co-creator too.
    assert!(r.try_send(ALICE, "m.room.power_levels", Some(""), json!({"users": {ALICE: 100}})).is_err());
    assert!(r.try_send(ALICE, "m.room.power_levels", Some(""), json!({"users": {CAROL: 100}})).is_err());
    // The creator may raise someone to any level, and still outranks them.
    r.ok(ALICE, "m.room.power_levels", Some(""), json!({"users": {BOB: 1_000_000}}));
    // Bob, far above every listed level, cannot kick a co-creator.
    let kick = r.try_send(BOB, "m.room.member", Some(CAROL), json!({"membership": "leave"}));
    assert!(kick.is_err(), "a co-creator outranks any level");
    // The co-creator can kick Bob.
    r.ok(CAROL, "m.room.member", Some(BOB), json!({"membership": "leave"}));
}

#[test]
fn version_11_lists_the_creator_and_caps_it_at_its_level() {
    let mut r = Room::new("11", json!({"room_version": "11"}));
    r.ok(ALICE, "m.room.join_rules", Some(""), json!({"join_rule": "public"}));
    r.join(BOB);
    r.ok(ALICE, "m.room.power_levels", Some(""), json!({"users": {ALICE: 100, BOB: 100}}));
    // Equal levels: neither may kick the other.
    assert!(r.try_send(BOB, "m.room.member", Some(ALICE), json!({"membership": "leave"})).is_err());
    assert!(r.try_send(ALICE, "m.room.member", Some(BOB), json!({"membership": "leave"})).is_err());
}

#[test]
fn the_create_event_is_never_an_auth_event() {
    let mut r = Room::new("12", json!({"room_version": "12"}));
    let e = r.build(ALICE, "m.room.message", None, json!({"body": "hi"}));
    let create = r.state.create().unwrap().clone();
    assert!(!e.auth_events().contains(create.event_id()), "selection leaves it out");
    let named: Vec<&Pdu> = e.auth_events().iter().map(|id| find(&r.state, id)).collect();
    assert!(check_auth_events(&e, &named).is_ok());
    let mut with_create = named.clone();
    with_create.push(&create);
    assert!(check_auth_events(&e, &with_create).is_err(), "naming it is refused");
    // In v11 it must be named.
    let mut r11 = Room::new("11", json!({"room_version": "11"}));
    let e11 = r11.build(ALICE, "m.room.message", None, json!({"body": "hi"}));
    assert!(e11.auth_events().contains(r11.state.create().unwrap().event_id()));
}

fn find<'a>(state: &'a StateMap, id: &EventId) -> &'a Pdu {
    state.iter().find(|e| e.event_id() == id).map(|e| e.as_ref()).unwrap()
}
