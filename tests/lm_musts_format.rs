//! MUSTs of the LM draft that are decided by looking at bytes: redaction,
//! the event schema and the authorization rules, through lmx's pure core.
//! Numbers in test names and comments are items of the conformance
//! checklist; each test checks the items it names and fails when lmx stops
//! doing what they require.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use lmx::core::crypto::SigningKey;
use lmx::core::event::{self, EventError, Lpdu, Pdu, RoomVersion, Schema, LM_VERSION};
use lmx::core::ids::{EventId, KeyId, ServerName};
use lmx::core::json::Object;
use lmx::core::rooms::{
    check_append, check_auth_events, select_auth_events, AppendError, EventSketch, PowerLevels, StateMap, StateView,
};
use serde_json::{json, Value};

const ALICE: &str = "@alice:hub.example";
const BOB: &str = "@bob:part.example";
const CAROL: &str = "@carol:part.example";
const DAVE: &str = "@dave:other.example";

fn lm() -> &'static RoomVersion {
    RoomVersion::lm()
}

/// Both names of the LM room version (OQ-1).
fn lm_versions() -> [&'static RoomVersion; 2] {
    [RoomVersion::find(LM_VERSION).unwrap(), RoomVersion::find("I.1").unwrap()]
}

fn key_for(server: &str) -> SigningKey {
    SigningKey::from_seed(
        ServerName::parse(server).unwrap(),
        KeyId::parse("ed25519:1").unwrap(),
        &[server.len() as u8; 32],
    )
    .unwrap()
}

fn obj(v: Value) -> Object {
    v.as_object().unwrap().clone()
}

// ---------------------------------------------------------------------------
// Redaction (items 45-47)

#[test]
fn item_45_redaction_keeps_exactly_the_lm_top_level_keys() {
    let kept = json!({
        "type": "m.room.member", "room_id": "!r:hub.example", "sender": BOB, "state_key": BOB,
        "content": {"membership": "join"}, "origin_server_ts": 5,
        "hashes": {"lpdu": {"sha256": "aaa"}, "sha256": "bbb"},
        "signatures": {"part.example": {"ed25519:1": "x"}, "hub.example": {"ed25519:1": "y"}},
        "prev_events": ["$p"], "auth_events": ["$a", "$b"], "hub_server": "hub.example",
    });
    let mut full = obj(kept.clone());
    for (k, v) in [
        ("unsigned", json!({"age": 1})),
        ("event_id", json!("$e")),
        ("depth", json!(3)),
        ("origin", json!("hub.example")),
        ("membership", json!("join")),
        ("prev_state", json!([])),
        ("redacts", json!("$t")),
        ("org.example.custom", json!(true)),
    ] {
        full.insert(k.into(), v);
    }
    for v in lm_versions() {
        // Every listed key survives with its whole value; nothing else does.
        assert_eq!(Value::Object(event::redact(v, &full)), kept, "{}", v.id);
        // Keys that are absent are not invented.
        let mut message = full.clone();
        for k in ["state_key", "hub_server", "auth_events"] {
            message.remove(k);
        }
        message.insert("type".into(), json!("m.room.message"));
        let keys: BTreeSet<String> = event::redact(v, &message).keys().cloned().collect();
        let want: BTreeSet<String> =
            ["type", "room_id", "sender", "content", "origin_server_ts", "hashes", "signatures", "prev_events"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        assert_eq!(keys, want, "{}", v.id);
    }
}

#[test]
fn items_46_47_redaction_keeps_only_the_listed_content() {
    let create = json!({"room_version": LM_VERSION, "creator": ALICE, "m.federate": true, "predecessor": {"room_id": "!o:x"}, "x": 1});
    let power = json!({
        "ban": 1, "events": {"m.room.name": 2}, "events_default": 3, "kick": 4, "redact": 5, "state_default": 6,
        "users": {ALICE: 100}, "users_default": 7, "invite": 8,
    });
    let mut power_in = power.clone();
    power_in["notifications"] = json!({"room": 9});
    power_in["historical"] = json!(10);
    let cases = [
        // m.room.create: everything.
        ("m.room.create", create.clone(), create),
        // m.room.member: membership only.
        (
            "m.room.member",
            json!({
                "membership": "join", "displayname": "Bob", "avatar_url": "mxc://a/b", "reason": "hi",
                "join_authorised_via_users_server": ALICE, "third_party_invite": {"signed": {"token": "t"}},
                "is_direct": true,
            }),
            json!({"membership": "join"}),
        ),
        (
            "m.room.join_rules",
            json!({"join_rule": "public", "allow": [{"type": "m.room_membership"}]}),
            json!({"join_rule": "public"}),
        ),
        (
            "m.room.history_visibility",
            json!({"history_visibility": "shared", "other": 1}),
            json!({"history_visibility": "shared"}),
        ),
        // Item 47: the nine power-level keys, nothing else.
        ("m.room.power_levels", power_in, power),
        // Every other type loses all of its content.
        ("m.room.redaction", json!({"redacts": "$x", "reason": "r"}), json!({})),
        ("m.room.message", json!({"body": "hi", "msgtype": "m.text"}), json!({})),
        ("m.room.name", json!({"name": "n"}), json!({})),
        ("m.room.encrypted", json!({"algorithm": "a", "ciphertext": "c", "commit_event_id": "$c"}), json!({})),
    ];
    for v in lm_versions() {
        for (ty, content, want) in &cases {
            let e = obj(
                json!({"type": ty, "state_key": "", "room_id": "!r:hub.example", "sender": ALICE, "content": content}),
            );
            assert_eq!(event::redact(v, &e)["content"], *want, "{ty} in {}", v.id);
        }
        // A member event whose content has no membership keeps an empty content.
        let e = obj(json!({"type": "m.room.member", "state_key": BOB, "sender": BOB, "content": {"displayname": "B"}}));
        assert_eq!(event::redact(v, &e)["content"], json!({}));
    }
}

// ---------------------------------------------------------------------------
// Schema (items 20, 21, 24, 29, 31)

/// A participant's signed LPDU.
fn lpdu(fields: Value) -> Object {
    let mut o = obj(json!({
        "room_id": "!r:hub.example", "type": "m.room.message", "sender": BOB, "origin_server_ts": 1_700_000_000_000_i64,
        "hub_server": "hub.example", "content": {"body": "hi"},
    }));
    for (k, v) in fields.as_object().unwrap() {
        o.insert(k.clone(), v.clone());
    }
    event::sign_lpdu(lm(), &key_for("part.example"), &mut o).unwrap();
    o
}

/// The PDU a hub builds from `lpdu`.
fn pdu_from(lpdu: &Object) -> Object {
    let mut o = lpdu.clone();
    o.insert("auth_events".into(), json!(["$create", "$pl", "$member"]));
    o.insert("prev_events".into(), json!(["$tail"]));
    event::sign_event(lm(), &key_for("hub.example"), &mut o).unwrap();
    o
}

fn parse_pdu(o: &Object) -> Result<Pdu, EventError> {
    Pdu::from_object(lm(), o.clone(), Schema::Full)
}

#[test]
fn item_20_events_missing_a_required_field_are_refused() {
    let l = lpdu(json!({}));
    let p = pdu_from(&l);
    assert!(Lpdu::from_object(lm(), l.clone()).is_ok() && parse_pdu(&p).is_ok(), "the controls are valid");
    for k in ["room_id", "type", "sender", "origin_server_ts", "content", "hashes", "signatures"] {
        let mut without = l.clone();
        without.remove(k);
        assert!(Lpdu::from_object(lm(), without).is_err(), "an LPDU without {k} is refused");
        let mut without = p.clone();
        without.remove(k);
        assert!(parse_pdu(&without).is_err(), "a PDU without {k} is refused");
    }
    for k in ["auth_events", "prev_events"] {
        let mut without = p.clone();
        without.remove(k);
        assert!(parse_pdu(&without).is_err(), "a PDU without {k} is refused");
    }
    // Present but of the wrong kind.
    let wrong = [
        ("room_id", json!("r:hub.example")),
        ("room_id", json!(7)),
        ("type", json!(7)),
        ("sender", json!("bob")),
        ("sender", json!("@bob")),
        ("origin_server_ts", json!("1700000000000")),
        ("origin_server_ts", json!(1.5)),
        ("origin_server_ts", json!(u64::MAX)),
        ("content", json!([])),
        ("content", json!("hi")),
        ("hashes", json!([])),
        ("signatures", json!("sig")),
        ("auth_events", json!("$a")),
        ("auth_events", json!(["not an event id"])),
        ("prev_events", json!({})),
        ("state_key", json!(5)),
    ];
    for (k, v) in wrong {
        let mut bad = p.clone();
        bad.insert(k.into(), v.clone());
        assert!(parse_pdu(&bad).is_err(), "a PDU with {k} = {v} is refused");
        if !matches!(k, "auth_events" | "prev_events") {
            let mut bad = l.clone();
            bad.insert(k.into(), v.clone());
            assert!(Lpdu::from_object(lm(), bad).is_err(), "an LPDU with {k} = {v} is refused");
        }
    }
}

#[test]
fn items_20_21_type_and_state_key_are_at_most_255_characters() {
    for (field, base) in [("type", json!({})), ("state_key", json!({"type": "org.example.state"}))] {
        for (len, ok) in [(255, true), (256, false)] {
            let mut fields = base.clone();
            fields[field] = json!("k".repeat(len));
            let l = lpdu(fields);
            let p = pdu_from(&l);
            assert_eq!(Lpdu::from_object(lm(), l).is_ok(), ok, "LPDU {field} of {len} characters");
            let res = parse_pdu(&p);
            assert_eq!(res.is_ok(), ok, "PDU {field} of {len} characters: {res:?}");
            if !ok {
                assert!(matches!(res, Err(EventError::TooLong { .. })), "{res:?}");
            }
        }
    }
    // An empty state key is a state key (item 21: "may be empty").
    let p = parse_pdu(&pdu_from(&lpdu(json!({"type": "m.room.topic", "state_key": ""})))).unwrap();
    assert_eq!(p.state_key(), Some(""));
    assert!(p.is_state());
}

#[test]
fn item_24_an_lpdu_hash_needs_hub_server() {
    // A hub's own event (OQ-3) carrying `hashes.lpdu` without `hub_server`.
    let mut e = obj(json!({
        "room_id": "!r:hub.example", "type": "m.room.message", "sender": ALICE, "origin_server_ts": 1,
        "content": {"body": "x"}, "auth_events": ["$a"], "prev_events": ["$p"],
        "hashes": {"lpdu": {"sha256": "abc"}},
    }));
    event::sign_event(lm(), &key_for("hub.example"), &mut e).unwrap();
    assert!(matches!(parse_pdu(&e), Err(EventError::Forbidden(_))), "{:?}", parse_pdu(&e));
    e["hashes"].as_object_mut().unwrap().remove("lpdu");
    event::sign_event(lm(), &key_for("hub.example"), &mut e).unwrap();
    assert!(parse_pdu(&e).is_ok());
}

#[test]
fn items_29_31_lpdus_carry_no_auth_events_and_only_the_lpdu_hash() {
    let l = lpdu(json!({}));
    let mut with_auth = l.clone();
    with_auth.insert("auth_events".into(), json!([]));
    assert!(Lpdu::from_object(lm(), with_auth).is_err(), "item 29: auth_events");
    for extra in ["sha512", "sha256", "org.example.hash"] {
        let mut h = l.clone();
        h["hashes"].as_object_mut().unwrap().insert(extra.into(), json!({"sha256": "abc"}));
        if extra == "sha256" {
            h["hashes"]["sha256"] = json!("abc");
        }
        assert!(Lpdu::from_object(lm(), h.clone()).is_err(), "item 31: hashes.{extra}");
        // Without auth/prev events it is no PDU either.
        assert!(parse_pdu(&h).is_err(), "hashes.{extra} as a PDU");
    }
}

// ---------------------------------------------------------------------------
// Authorization

/// A room built event by event through the append check, keeping every
/// event it made.
struct Room {
    state: StateMap,
    tail: Option<EventId>,
    ts: i64,
    events: HashMap<EventId, Arc<Pdu>>,
}

impl Room {
    fn new() -> Room {
        Room { state: StateMap::new(), tail: None, ts: 1000, events: HashMap::new() }
    }

    fn build(&mut self, sender: &str, ty: &str, sk: Option<&str>, content: Value, auth: Option<Vec<String>>) -> Pdu {
        self.ts += 1;
        let c = content.as_object().unwrap().clone();
        let auth = auth.unwrap_or_else(|| {
            let sketch = EventSketch { event_type: ty, sender, state_key: sk, content: &c };
            select_auth_events(lm(), &self.state, sketch).iter().map(|e| e.to_string()).collect()
        });
        let mut o = json!({
            "room_id": "!r:hub.example", "type": ty, "sender": sender, "origin_server_ts": self.ts,
            "content": content, "auth_events": auth,
            "prev_events": self.tail.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        });
        if let Some(sk) = sk {
            o["state_key"] = json!(sk);
        }
        let mut o = obj(o);
        event::sign_event(lm(), &key_for(sender.split_once(':').unwrap().1), &mut o).unwrap();
        Pdu::from_object(lm(), o, Schema::Full).unwrap()
    }

    fn event(&mut self, sender: &str, ty: &str, sk: Option<&str>, content: Value) -> Pdu {
        self.build(sender, ty, sk, content, None)
    }

    fn append(&mut self, pdu: Pdu) -> Result<(), AppendError> {
        check_append(self.tail.as_ref(), &self.state, &pdu)?;
        let pdu = Arc::new(pdu);
        self.tail = Some(pdu.event_id().clone());
        self.events.insert(pdu.event_id().clone(), pdu.clone());
        self.state.apply(pdu);
        Ok(())
    }

    /// The rule label of a refusal, `None` when the event was appended.
    fn send(&mut self, sender: &str, ty: &str, sk: Option<&str>, content: Value) -> Option<String> {
        let e = self.event(sender, ty, sk, content);
        self.append(e).err().map(|e| match e {
            AppendError::Auth(a) => a.rule_label().to_owned(),
            other => format!("{other}"),
        })
    }

    fn ok(&mut self, sender: &str, ty: &str, sk: Option<&str>, content: Value) {
        if let Some(rule) = self.send(sender, ty, sk, content.clone()) {
            panic!("{ty} {sk:?} {content} from {sender}: rule {rule}");
        }
    }

    fn member(&mut self, sender: &str, target: &str, membership: &str) -> Option<String> {
        self.send(sender, "m.room.member", Some(target), json!({"membership": membership}))
    }

    fn join(&mut self, user: &str) {
        assert_eq!(self.member(user, user, "join"), None, "{user} joins");
    }

    /// create, the creator's join, `power_levels`, join rules.
    fn with(power_levels: Value, join_rule: &str) -> Room {
        let mut r = Room::new();
        r.ok(ALICE, "m.room.create", Some(""), json!({"room_version": LM_VERSION}));
        r.ok(ALICE, "m.room.member", Some(ALICE), json!({"membership": "join"}));
        r.ok(ALICE, "m.room.power_levels", Some(""), power_levels);
        r.ok(ALICE, "m.room.join_rules", Some(""), json!({"join_rule": join_rule}));
        r
    }

    /// Alice 100, Bob 50, everything else default.
    fn standard(join_rule: &str) -> Room {
        Room::with(json!({"users": {ALICE: 100, BOB: 50}}), join_rule)
    }

    fn get(&self, ty: &str, sk: &str) -> Arc<Pdu> {
        let id = self.state.get(ty, sk).unwrap().event_id().clone();
        self.events[&id].clone()
    }
}

fn s(label: &str) -> Option<String> {
    Some(label.to_owned())
}

#[test]
fn items_80_82_auth_events_must_be_distinct_and_name_the_create_event() {
    let mut r = Room::standard("public");
    let old_pl = r.get("m.room.power_levels", "");
    r.ok(ALICE, "m.room.power_levels", Some(""), json!({"users": {ALICE: 100, BOB: 50}, "kick": 60}));
    let (create, pl, alice) =
        (r.get("m.room.create", ""), r.get("m.room.power_levels", ""), r.get("m.room.member", ALICE));
    let msg = r.event(ALICE, "m.room.message", None, json!({"body": "x"}));
    let rule = |auth: &[&Arc<Pdu>]| {
        let refs: Vec<&Pdu> = auth.iter().map(|a| a.as_ref()).collect();
        check_auth_events(&msg, &refs).map_err(|e| e.rule_label().to_owned()).err()
    };
    assert_eq!(rule(&[&create, &pl, &alice]), None, "the selected auth events pass");
    // Item 80 (rule 4.1): two power levels events, or one event twice.
    assert_eq!(rule(&[&create, &old_pl, &pl, &alice]), s("4.1"));
    assert_eq!(rule(&[&create, &pl, &alice, &alice]), s("4.1"));
    // Item 82 (rule 4.3): no create event.
    assert_eq!(rule(&[&pl, &alice]), s("4.3"));

    // The same faults in an event offered for appending.
    for auth in
        [vec![&create, &old_pl, &pl, &alice], vec![&create, &pl, &alice, &alice], vec![&create, &create, &pl, &alice]]
    {
        let ids: Vec<String> = auth.iter().map(|e| e.event_id().to_string()).collect();
        let e = r.build(ALICE, "m.room.message", None, json!({"body": "dup"}), Some(ids.clone()));
        assert!(matches!(r.append(e), Err(AppendError::AuthEventsMismatch)), "{ids:?}");
    }
    r.ok(ALICE, "m.room.message", None, json!({"body": "the room goes on"}));
}

#[test]
fn items_54_83_member_events_need_a_state_key_and_a_membership() {
    let mut r = Room::standard("public");
    // Item 54: no member event means `leave`.
    assert_eq!(r.state.membership(CAROL), "leave");
    assert_eq!(r.send(CAROL, "m.room.member", None, json!({"membership": "join"})), s("5.1"));
    assert_eq!(r.send(CAROL, "m.room.member", Some(CAROL), json!({})), s("5.1"));
    assert_eq!(r.send(CAROL, "m.room.member", Some(CAROL), json!({"membership": 1})), s("5.1"));
    assert_eq!(r.state.membership(CAROL), "leave");
    r.join(CAROL);
    assert_eq!(r.state.membership(CAROL), "join");
}

#[test]
fn item_53_join_rules_count_only_with_an_empty_state_key() {
    let mut r = Room::standard("invite");
    r.ok(ALICE, "m.room.join_rules", Some("x"), json!({"join_rule": "public"}));
    assert_eq!(r.state.join_rule(), "invite");
    let join = r.event(CAROL, "m.room.member", Some(CAROL), json!({"membership": "join"}));
    let odd = r.get("m.room.join_rules", "x");
    assert!(!join.auth_events().contains(odd.event_id()), "not selected as the join rules");
    assert_eq!(r.member(CAROL, CAROL, "join"), s("5.2.4"));
    // join_rule values other than public, knock and invite let no one in.
    r.ok(ALICE, "m.room.join_rules", Some(""), json!({"join_rule": "private"}));
    assert_eq!(r.member(CAROL, CAROL, "join"), s("5.2.6"));
    assert_eq!(r.member(CAROL, CAROL, "knock"), s("5.6.1"));
    r.ok(ALICE, "m.room.join_rules", Some(""), json!({"join_rule": "public"}));
    r.join(CAROL);
}

#[test]
fn items_55_70_71_72_power_level_defaults() {
    // A power levels event naming only some users: every other level is
    // the default.
    let mut r = Room::with(json!({"users": {ALICE: 100, BOB: 50, CAROL: 49}}), "public");
    for u in [BOB, CAROL, DAVE] {
        r.join(u);
    }
    let pl = PowerLevels::from_state(&r.state, lm());
    assert_eq!(
        ["ban", "kick", "invite", "redact"].map(|a| pl.action_level(a)),
        [50, 50, 0, 50],
        "item 71: ban, kick, invite, redact"
    );
    assert_eq!(pl.send_level("m.room.message", false), 0, "item 72: events_default");
    assert_eq!(pl.send_level("m.room.topic", true), 50, "item 72: state_default");
    assert_eq!((pl.user_level(BOB), pl.user_level(DAVE)), (50, 0), "item 70: users, then 0");
    // The same through the rules.
    assert_eq!(r.member(CAROL, DAVE, "leave"), s("5.4.5"), "49 may not kick");
    assert_eq!(r.member(CAROL, DAVE, "ban"), s("5.5.3"), "49 may not ban");
    assert_eq!(r.send(CAROL, "m.room.topic", Some(""), json!({"topic": "t"})), s("7"));
    r.ok(DAVE, "m.room.message", None, json!({"body": "level 0 may talk"}));
    r.ok(BOB, "m.room.topic", Some(""), json!({"topic": "50 may set state"}));
    r.ok(BOB, "m.room.member", Some(DAVE), json!({"membership": "leave"}));
    r.ok(BOB, "m.room.member", Some(DAVE), json!({"membership": "invite"}));

    // users_default, events and events_default when they are given.
    let mut r = Room::with(
        json!({"users": {ALICE: 100}, "users_default": 10, "events_default": 20, "events": {"m.room.topic": 5}}),
        "public",
    );
    r.join(DAVE);
    assert_eq!(PowerLevels::from_state(&r.state, lm()).user_level(DAVE), 10, "item 70: users_default");
    assert_eq!(r.send(DAVE, "m.room.message", None, json!({"body": "x"})), s("7"), "item 72: events_default");
    r.ok(DAVE, "m.room.topic", Some(""), json!({"topic": "item 72: events[type] first"}));
}

#[test]
fn items_85_86_87_joins_and_invites() {
    let mut r = Room::standard("knock");
    // Item 85: a join sent for someone else.
    assert_eq!(r.member(BOB, CAROL, "join"), s("5.2.2"));
    // Item 86: a knock room needs an invite (or a join) to join.
    assert_eq!(r.member(CAROL, CAROL, "join"), s("5.2.4"));
    assert_eq!(r.member(ALICE, CAROL, "invite"), None);
    r.join(CAROL);
    assert_eq!(r.member(CAROL, CAROL, "join"), None, "joined users may join again");

    // Item 87: the invite level.
    let mut r = Room::with(json!({"users": {ALICE: 100, BOB: 50}, "invite": 60}), "invite");
    assert_eq!(r.member(ALICE, BOB, "invite"), None);
    r.join(BOB);
    assert_eq!(r.member(BOB, CAROL, "invite"), s("5.3.4"));
    assert_eq!(r.member(DAVE, CAROL, "invite"), s("5.3.1"), "an inviter who is not joined");
    assert_eq!(r.member(ALICE, CAROL, "invite"), None);
}

#[test]
fn items_89_90_91_kicks_bans_and_knocks() {
    let mut r = Room::with(json!({"users": {ALICE: 100, BOB: 50}, "ban": 75}), "knock");
    for u in [BOB, CAROL, DAVE] {
        assert_eq!(r.member(ALICE, u, "invite"), None);
        r.join(u);
    }
    // Item 89: kicks.
    assert_eq!(r.member(BOB, CAROL, "leave"), None, "50 kicks 0");
    assert_eq!(r.member(ALICE, DAVE, "ban"), None);
    assert_eq!(r.member(BOB, DAVE, "leave"), s("5.4.3"), "unbanning needs the ban level (75)");
    assert_eq!(r.member(CAROL, BOB, "leave"), s("5.4.2"), "a kicker who is not joined");
    // Item 90: bans.
    assert_eq!(r.member(BOB, CAROL, "ban"), s("5.5.3"), "50 is below the ban level");
    assert_eq!(r.member(CAROL, BOB, "ban"), s("5.5.1"), "a banner who is not joined");
    assert_eq!(r.member(ALICE, DAVE, "leave"), None, "100 unbans");
    // Item 91: knocks.
    assert_eq!(r.member(BOB, CAROL, "knock"), s("5.6.2"), "a knock for someone else");
    assert_eq!(r.member(BOB, BOB, "knock"), s("5.6.4"), "a joined user");
    assert_eq!(r.member(CAROL, CAROL, "knock"), None);
    assert_eq!(r.member(ALICE, CAROL, "ban"), None);
    assert_eq!(r.member(CAROL, CAROL, "knock"), s("5.6.4"), "a banned user");
}

#[test]
fn items_96_98_99_101_power_level_changes() {
    let base = json!({"users": {ALICE: 100, BOB: 50}, "ban": 75, "kick": 50, "events": {"m.room.name": 75}});
    let mut r = Room::with(base.clone(), "public");
    r.join(BOB);
    r.join(CAROL);
    let with = |changes: Value| {
        let mut c = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            if let (Some(m), Some(add)) = (c[k].as_object_mut(), v.as_object()) {
                for (kk, vv) in add {
                    if vv.is_null() {
                        m.remove(kk);
                    } else {
                        m.insert(kk.clone(), vv.clone());
                    }
                }
            } else if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let cases = [
        // Item 96: levels must be integers.
        (ALICE, json!({"ban": "50"}), s("9.1")),
        (ALICE, json!({"kick": 1.5}), s("9.1")),
        (ALICE, json!({"events": {"m.room.topic": "1"}}), s("9.2")),
        (ALICE, json!({"users": {CAROL: "1"}}), s("9.3")),
        (ALICE, json!({"users": {"not-a-user": 1}}), s("9.3")),
        // Item 98: a scalar level above the sender's, before or after.
        (BOB, json!({"kick": 60}), s("9.5")),
        (BOB, json!({"ban": 40}), s("9.5")),
        (BOB, json!({"ban": null}), s("9.5")),
        (BOB, json!({"redact": 51}), s("9.5")),
        // Item 99: an `events` level above the sender's, before or after.
        (BOB, json!({"events": {"m.room.name": 40}}), s("9.6")),
        (BOB, json!({"events": {"m.room.name": null}}), s("9.6")),
        (BOB, json!({"events": {"m.room.topic": 60}}), s("9.7")),
        // Item 101: a user's new level above the sender's.
        (BOB, json!({"users": {CAROL: 60}}), s("9.9")),
        (BOB, json!({"users": {BOB: 51}}), s("9.9")),
        // Within the sender's level: allowed (item 102).
        (BOB, json!({"kick": 40, "redact": 50, "events": {"m.room.topic": 50}, "users": {CAROL: 50}}), None),
    ];
    for (sender, change, want) in cases {
        let got = r.send(sender, "m.room.power_levels", Some(""), with(change.clone()));
        assert_eq!(got, want, "{sender} sends {change}");
    }
}
