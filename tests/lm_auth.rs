//! Authorization rules of the LM room version where they differ from
//! Matrix v11 (digest 4.5 and 4.9, OQ-6/7/8/9/15/44), and the linked-list
//! append check. Each delta is checked under both versions.

use std::sync::Arc;

use lmx::core::crypto::SigningKey;
use lmx::core::event::{self, Pdu, RoomVersion, Schema};
use lmx::core::ids::{EventId, KeyId, ServerName};
use lmx::core::json::Object;
use lmx::core::rooms::{authorize, check_append, select_auth_events, AppendError, EventSketch, StateMap, StateView};
use serde_json::{json, Value};

fn key_for(server: &str) -> SigningKey {
    let seed = [server.len() as u8; 32];
    SigningKey::from_seed(ServerName::parse(server).unwrap(), KeyId::parse("ed25519:1").unwrap(), &seed).unwrap()
}

/// A room built event by event through the append check.
struct Room {
    v: &'static RoomVersion,
    state: StateMap,
    tail: Option<EventId>,
    ts: i64,
}

impl Room {
    fn new(v: &'static RoomVersion) -> Self {
        Room { v, state: StateMap::new(), tail: None, ts: 1000 }
    }

    /// A signed event on the current tail with the selected auth events.
    fn event(&mut self, sender: &str, ty: &str, state_key: Option<&str>, content: Value) -> Pdu {
        self.ts += 1;
        let content_obj = content.as_object().unwrap().clone();
        let sketch = EventSketch { event_type: ty, sender, state_key, content: &content_obj };
        let auth: Vec<String> = select_auth_events(self.v, &self.state, sketch).iter().map(|e| e.to_string()).collect();
        let mut o = json!({
            "room_id": "!r:hub.example", "type": ty, "sender": sender,
            "origin_server_ts": self.ts, "content": content,
            "auth_events": auth, "prev_events": self.tail.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        });
        if let Some(sk) = state_key {
            o["state_key"] = json!(sk);
        }
        if !self.v.lm {
            o["depth"] = json!(self.ts);
        }
        let mut o: Object = o.as_object().unwrap().clone();
        let server = sender.split_once(':').unwrap().1;
        event::sign_event(self.v, &key_for(server), &mut o).unwrap();
        Pdu::from_object(self.v, o, Schema::Full).unwrap()
    }

    fn append(&mut self, pdu: Pdu) -> Result<(), AppendError> {
        check_append(self.tail.as_ref(), &self.state, &pdu)?;
        self.tail = Some(pdu.event_id().clone());
        self.state.apply(Arc::new(pdu));
        Ok(())
    }

    fn send(&mut self, sender: &str, ty: &str, state_key: Option<&str>, content: Value) -> Result<(), AppendError> {
        let e = self.event(sender, ty, state_key, content);
        self.append(e)
    }

    fn ok(&mut self, sender: &str, ty: &str, state_key: Option<&str>, content: Value) {
        self.send(sender, ty, state_key, content.clone())
            .unwrap_or_else(|e| panic!("{ty} {state_key:?} {content} from {sender}: {e}"));
    }

    fn member(&mut self, sender: &str, target: &str, membership: &str) -> Result<(), AppendError> {
        self.send(sender, "m.room.member", Some(target), json!({"membership": membership}))
    }

    /// create, creator join, power levels (alice 100, bob 50), join rules.
    fn standard(v: &'static RoomVersion, join_rule: &str) -> Room {
        let mut r = Room::new(v);
        r.ok("@alice:hub.example", "m.room.create", Some(""), json!({"room_version": v.id}));
        r.ok("@alice:hub.example", "m.room.member", Some("@alice:hub.example"), json!({"membership": "join"}));
        r.ok(
            "@alice:hub.example",
            "m.room.power_levels",
            Some(""),
            json!({"users": {"@alice:hub.example": 100, "@bob:part.example": 50}}),
        );
        r.ok("@alice:hub.example", "m.room.join_rules", Some(""), json!({"join_rule": join_rule}));
        r
    }
}

fn lm() -> &'static RoomVersion {
    RoomVersion::lm()
}

fn v11() -> &'static RoomVersion {
    RoomVersion::find("11").unwrap()
}

fn rule_of(e: AppendError) -> String {
    match e {
        AppendError::Auth(a) => a.rule_label().to_owned(),
        other => format!("{other}"),
    }
}

#[test]
fn create_event_rules() {
    let mut ok = Room::new(lm());
    ok.ok("@alice:hub.example", "m.room.create", Some(""), json!({"room_version": event::LM_VERSION}));
    for (content, rule) in
        [(json!({}), "3.3"), (json!({"room_version": "I.1"}), "3.3"), (json!({"room_version": "11"}), "3.3")]
    {
        let mut r = Room::new(lm());
        let err = r.send("@alice:hub.example", "m.room.create", Some(""), content).unwrap_err();
        assert_eq!(rule_of(err), rule);
    }
    // The alias names the same algorithms; its rooms must say "I.1".
    let alias = RoomVersion::find("I.1").unwrap();
    Room::new(alias).ok("@alice:hub.example", "m.room.create", Some(""), json!({"room_version": "I.1"}));
    // Sender on another server than the room id's.
    let mut r = Room::new(lm());
    let err = r.send("@alice:other.example", "m.room.create", Some(""), json!({"room_version": event::LM_VERSION}));
    assert_eq!(rule_of(err.unwrap_err()), "3.2");
}

#[test]
fn create_with_auth_events_is_rejected_in_lm() {
    let mut o = json!({
        "room_id": "!r:hub.example", "type": "m.room.create", "state_key": "", "sender": "@alice:hub.example",
        "origin_server_ts": 1, "content": {"room_version": event::LM_VERSION},
        "auth_events": ["$x"], "prev_events": [],
    })
    .as_object()
    .unwrap()
    .clone();
    event::sign_event(lm(), &key_for("hub.example"), &mut o).unwrap();
    let pdu = Pdu::from_object(lm(), o, Schema::Full).unwrap();
    let err = authorize(&pdu, &StateMap::new()).unwrap_err();
    assert_eq!(err.rule_label(), "3.1 (OQ-7)");
}

#[test]
fn invited_user_may_knock_in_lm_only() {
    for (v, allowed) in [(lm(), true), (v11(), false)] {
        let mut r = Room::standard(v, "knock");
        r.member("@alice:hub.example", "@carol:part.example", "invite").unwrap();
        let res = r.member("@carol:part.example", "@carol:part.example", "knock");
        assert_eq!(res.is_ok(), allowed, "{}: {res:?}", v.id);
    }
}

#[test]
fn restricted_rooms_refuse_joins_in_lm() {
    for (v, allowed) in [(lm(), false), (v11(), true)] {
        let mut r = Room::standard(v, "restricted");
        r.member("@alice:hub.example", "@carol:part.example", "invite").unwrap();
        let res = r.member("@carol:part.example", "@carol:part.example", "join");
        assert_eq!(res.is_ok(), allowed, "{}: {res:?}", v.id);
        if !allowed {
            assert_eq!(rule_of(res.unwrap_err()), "5.2.6");
        }
    }
}

#[test]
fn changing_an_equal_users_level_is_refused() {
    // OQ-15: Matrix's ≥ applies to LM too.
    for v in [lm(), v11()] {
        let mut r = Room::standard(v, "public");
        r.member("@bob:part.example", "@bob:part.example", "join").unwrap();
        r.member("@carol:part.example", "@carol:part.example", "join").unwrap();
        let users = json!({"@alice:hub.example": 100, "@bob:part.example": 50, "@carol:part.example": 50});
        r.ok("@alice:hub.example", "m.room.power_levels", Some(""), json!({ "users": users }));
        let demote = json!({"users": {"@alice:hub.example": 100, "@bob:part.example": 50, "@carol:part.example": 0}});
        let err = r.send("@bob:part.example", "m.room.power_levels", Some(""), demote).unwrap_err();
        assert_eq!(rule_of(err), "9.8", "{}", v.id);
    }
}

#[test]
fn notifications_levels_are_only_checked_in_matrix_versions() {
    for (v, allowed) in [(lm(), true), (v11(), false)] {
        let mut r = Room::standard(v, "public");
        r.member("@bob:part.example", "@bob:part.example", "join").unwrap();
        let pl = json!({"users": {"@alice:hub.example": 100, "@bob:part.example": 50}, "notifications": {"room": 75}});
        let res = r.send("@bob:part.example", "m.room.power_levels", Some(""), pl);
        assert_eq!(res.is_ok(), allowed, "{}: {res:?}", v.id);
    }
}

#[test]
fn third_party_invites_are_ordinary_invites_in_lm() {
    let tpi = json!({"membership": "invite", "third_party_invite": {"signed": {"mxid": "@carol:part.example", "token": "t"}}});
    for (v, allowed) in [(lm(), true), (v11(), false)] {
        let mut r = Room::standard(v, "invite");
        let res = r.send("@alice:hub.example", "m.room.member", Some("@carol:part.example"), tpi.clone());
        assert_eq!(res.is_ok(), allowed, "{}: {res:?}", v.id);
    }
}

#[test]
fn lm_power_level_users_must_be_lm_user_ids() {
    let mut r = Room::standard(lm(), "public");
    let pl = json!({"users": {"@alice:hub.example": 100, "@Bob:part.example": 50}});
    assert_eq!(rule_of(r.send("@alice:hub.example", "m.room.power_levels", Some(""), pl).unwrap_err()), "9.3");
}

#[test]
fn federate_false_keeps_other_servers_out() {
    let mut r = Room::new(lm());
    r.ok(
        "@alice:hub.example",
        "m.room.create",
        Some(""),
        json!({"room_version": event::LM_VERSION, "m.federate": false}),
    );
    r.ok("@alice:hub.example", "m.room.member", Some("@alice:hub.example"), json!({"membership": "join"}));
    r.ok("@alice:hub.example", "m.room.join_rules", Some(""), json!({"join_rule": "public"}));
    r.member("@dave:hub.example", "@dave:hub.example", "join").unwrap();
    let err = r.member("@bob:part.example", "@bob:part.example", "join").unwrap_err();
    assert_eq!(rule_of(err), "m.federate (OQ-44)");
}

#[test]
fn membership_lifecycle() {
    let mut r = Room::standard(lm(), "invite");
    let rule = |res: Result<(), AppendError>| res.map_err(rule_of).err();
    assert_eq!(rule(r.member("@bob:part.example", "@bob:part.example", "join")), Some("5.2.4".into()));
    assert_eq!(rule(r.member("@bob:part.example", "@carol:part.example", "invite")), Some("5.3.1".into()));
    r.member("@alice:hub.example", "@bob:part.example", "invite").unwrap();
    r.member("@bob:part.example", "@bob:part.example", "join").unwrap();
    assert_eq!(rule(r.member("@alice:hub.example", "@bob:part.example", "invite")), Some("5.3.2".into()));
    // Bob (50) may not kick Alice (100); Alice may ban Bob.
    assert_eq!(rule(r.member("@bob:part.example", "@alice:hub.example", "leave")), Some("5.4.5".into()));
    r.member("@alice:hub.example", "@bob:part.example", "ban").unwrap();
    assert_eq!(rule(r.member("@bob:part.example", "@bob:part.example", "join")), Some("5.2.3".into()));
    assert_eq!(rule(r.member("@bob:part.example", "@bob:part.example", "leave")), Some("5.4.1".into()));
    r.member("@alice:hub.example", "@bob:part.example", "leave").unwrap(); // unban
    assert_eq!(rule(r.member("@bob:part.example", "@bob:part.example", "knock")), Some("5.6.1".into()));
    assert_eq!(rule(r.member("@bob:part.example", "@bob:part.example", "dance")), Some("5.7".into()));
    assert_eq!(r.state.membership("@bob:part.example"), "leave");
    // Messages need a joined sender (rule 6) and the level (rule 7).
    assert_eq!(rule(r.send("@bob:part.example", "m.room.message", None, json!({"body": "x"}))), Some("6".into()));
    assert_eq!(
        rule(r.send("@alice:hub.example", "m.room.topic", Some("@bob:part.example"), json!({}))),
        Some("8".into())
    );
}

#[test]
fn hub_server_must_be_the_rooms_hub() {
    let mut r = Room::standard(lm(), "public");
    r.member("@bob:part.example", "@bob:part.example", "join").unwrap();
    for (hub, ok) in [("hub.example", true), ("part.example", false)] {
        // Build an LPDU-derived event naming `hub` as its hub.
        let mut lpdu = json!({
            "room_id": "!r:hub.example", "type": "m.room.message", "sender": "@bob:part.example",
            "origin_server_ts": 5, "hub_server": hub, "content": {"body": "hi"},
        })
        .as_object()
        .unwrap()
        .clone();
        event::sign_lpdu(lm(), &key_for("part.example"), &mut lpdu).unwrap();
        let sketch = EventSketch {
            event_type: "m.room.message",
            sender: "@bob:part.example",
            state_key: None,
            content: &Object::new(),
        };
        let auth: Vec<String> = select_auth_events(lm(), &r.state, sketch).iter().map(|e| e.to_string()).collect();
        lpdu.insert("auth_events".into(), json!(auth));
        lpdu.insert("prev_events".into(), json!([r.tail.as_ref().unwrap().to_string()]));
        event::sign_event(lm(), &key_for(hub), &mut lpdu).unwrap();
        let pdu = Pdu::from_object(lm(), lpdu, Schema::Full).unwrap();
        let res = authorize(&pdu, &r.state);
        assert_eq!(res.is_ok(), ok, "{hub}: {res:?}");
    }
}

#[test]
fn append_needs_the_tail_and_the_selected_auth_events() {
    let mut r = Room::standard(lm(), "public");
    let first = r.event("@alice:hub.example", "m.room.message", None, json!({"body": "1"}));
    r.ok("@alice:hub.example", "m.room.message", None, json!({"body": "2"}));
    // `first` was built on the old tail.
    assert!(matches!(r.append(first), Err(AppendError::NotOnTail { .. })));
    // Dropping or adding an auth event breaks the selection check.
    let good = r.event("@alice:hub.example", "m.room.message", None, json!({"body": "3"}));
    for tweak in [0, 1] {
        let mut o = good.json().clone();
        let mut auth: Vec<Value> = o["auth_events"].as_array().unwrap().clone();
        if tweak == 0 {
            auth.pop();
        } else {
            let jr = r.state.get("m.room.join_rules", "").unwrap().event_id().to_string();
            auth.push(json!(jr));
        }
        o.insert("auth_events".into(), Value::Array(auth));
        event::sign_event(lm(), &key_for("hub.example"), &mut o).unwrap();
        let pdu = Pdu::from_object(lm(), o, Schema::Full).unwrap();
        assert!(matches!(r.append(pdu), Err(AppendError::AuthEventsMismatch)), "tweak {tweak}");
    }
    r.append(good).unwrap();
}

#[test]
fn lm_knock_selection_omits_join_rules_but_tolerates_them() {
    let mut r = Room::standard(lm(), "knock");
    let knock =
        r.event("@bob:part.example", "m.room.member", Some("@bob:part.example"), json!({"membership": "knock"}));
    let jr = r.state.get("m.room.join_rules", "").unwrap().event_id().clone();
    assert!(!knock.auth_events().contains(&jr), "OQ-8: built without join rules");
    let mut o = knock.json().clone();
    o["auth_events"].as_array_mut().unwrap().push(json!(jr.to_string()));
    event::sign_event(lm(), &key_for("part.example"), &mut o).unwrap();
    r.append(Pdu::from_object(lm(), o, Schema::Full).unwrap()).unwrap();
    assert_eq!(r.state.membership("@bob:part.example"), "knock");
}

#[test]
fn without_power_levels_only_the_creator_has_power() {
    let mut r = Room::new(lm());
    r.ok("@alice:hub.example", "m.room.create", Some(""), json!({"room_version": event::LM_VERSION}));
    r.ok("@alice:hub.example", "m.room.member", Some("@alice:hub.example"), json!({"membership": "join"}));
    r.ok("@alice:hub.example", "m.room.join_rules", Some(""), json!({"join_rule": "public"}));
    r.member("@bob:part.example", "@bob:part.example", "join").unwrap();
    let err = r.send("@bob:part.example", "m.room.name", Some(""), json!({"name": "x"})).unwrap_err();
    assert_eq!(rule_of(err), "7");
    r.ok("@alice:hub.example", "m.room.name", Some(""), json!({"name": "x"}));
    r.ok("@bob:part.example", "m.room.message", None, json!({"body": "hi", "ratio": 0.25}));
}
