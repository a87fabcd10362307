//! Random event sequences through the LM room rules and the linked-list
//! append check.
//!
//! A room starts valid (create, the creator's join, power levels, join
//! rules). Each operation is built as the hub builds events (src/room/
//! build.rs): the hub's own users' events straight from a draft, the
//! participant server's users' events as a signed LPDU the hub completes;
//! `prev_events` is the tail, `auth_events` the selection against the
//! current state, then `hashes.sha256` and the hub's signature. Each goes
//! through `check_append`; accepted events are appended. Some operations
//! are deliberately broken (wrong `prev_events`, missing, duplicated or
//! foreign auth events) and must be refused.
//!
//! Checked after every step: no panic; an accepted event's `prev_events`
//! is exactly the previous tail; accepted ids are unique; the state map
//! holds exactly the latest accepted state event per (type, state_key);
//! a correctly built event is only ever refused by the authorization rules
//! (never by the tail or auth-events checks); an accepted event's hashes
//! check out and it passes the rules against its own auth events too.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use lmx::core::crypto::SigningKey;
use lmx::core::event::{check_hashes, sign_event, sign_lpdu, HashCheck, Lpdu, Pdu, RoomVersion, Schema, LM_VERSION};
use lmx::core::ids::{EventId, KeyId, ServerName};
use lmx::core::json::Object;
use lmx::core::rooms::{
    authorize_by_auth_events, check_append, select_auth_events, AppendError, EventSketch, StateMap, StateView,
};
use serde_json::{json, Value};

const MAX_OPS: usize = 64;
const HUB: &str = "hub.example";
const PART: &str = "part.example";
const ROOM: &str = "!room:hub.example";
/// Two users on the hub (the first creates the room), two on a participant.
const USERS: [&str; 4] = ["@alice:hub.example", "@dave:hub.example", "@bob:part.example", "@carol:part.example"];
const CREATOR: &str = USERS[0];

struct Keys {
    hub: SigningKey,
    part: SigningKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = |server: &str, seed: u8| {
            SigningKey::from_seed(ServerName::parse(server).unwrap(), KeyId::parse("ed25519:1").unwrap(), &[seed; 32])
                .unwrap()
        };
        Keys { hub: key(HUB, 1), part: key(PART, 2) }
    })
}

fn lm() -> &'static RoomVersion {
    RoomVersion::lm()
}

// ---------------------------------------------------------------------
// Operations, decoded by `arbitrary`.

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Level {
    Zero,
    Fifty,
    Hundred,
    Negative,
    AboveCreator,
    MaxSafe,
}

impl Level {
    fn value(self) -> i64 {
        match self {
            Level::Zero => 0,
            Level::Fifty => 50,
            Level::Hundred => 100,
            Level::Negative => -1,
            Level::AboveCreator => 101,
            Level::MaxSafe => (1 << 53) - 1,
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum JoinRule {
    Public,
    Invite,
    Knock,
    Restricted,
    Private,
    Absent,
    NotAString,
}

impl JoinRule {
    fn content(self) -> Value {
        match self {
            JoinRule::Public => json!({"join_rule": "public"}),
            JoinRule::Invite => json!({"join_rule": "invite"}),
            JoinRule::Knock => json!({"join_rule": "knock"}),
            JoinRule::Restricted => json!({"join_rule": "restricted", "allow": []}),
            JoinRule::Private => json!({"join_rule": "private"}),
            JoinRule::Absent => json!({}),
            JoinRule::NotAString => json!({"join_rule": 1}),
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Membership {
    Join,
    Leave,
    Invite,
    Ban,
    Knock,
    Unknown,
}

impl Membership {
    fn as_str(self) -> &'static str {
        match self {
            Membership::Join => "join",
            Membership::Leave => "leave",
            Membership::Invite => "invite",
            Membership::Ban => "ban",
            Membership::Knock => "knock",
            Membership::Unknown => "dance",
        }
    }
}

/// Power levels content: levels for the four users and the actions, and
/// a few ill-formed extras the rules must refuse or ignore.
#[derive(Debug, Clone, Arbitrary)]
struct PowerShape {
    users: [Option<Level>; 4],
    users_default: Option<Level>,
    events_default: Option<Level>,
    state_default: Option<Level>,
    ban: Option<Level>,
    kick: Option<Level>,
    invite: Option<Level>,
    message: Option<Level>,
    odd: Option<OddLevel>,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum OddLevel {
    StringLevel,
    FloatLevel,
    NonLmUser,
    UsersNotAMap,
    Notifications,
}

impl PowerShape {
    fn content(&self) -> Value {
        let mut users = serde_json::Map::new();
        for (u, l) in USERS.iter().zip(self.users) {
            if let Some(l) = l {
                users.insert((*u).to_owned(), json!(l.value()));
            }
        }
        let mut c = json!({ "users": users });
        let scalars = [
            ("users_default", self.users_default),
            ("events_default", self.events_default),
            ("state_default", self.state_default),
            ("ban", self.ban),
            ("kick", self.kick),
            ("invite", self.invite),
        ];
        for (k, l) in scalars {
            if let Some(l) = l {
                c[k] = json!(l.value());
            }
        }
        if let Some(l) = self.message {
            c["events"] = json!({ "m.room.message": l.value() });
        }
        match self.odd {
            None => {}
            Some(OddLevel::StringLevel) => c["users"][USERS[2]] = json!("50"),
            Some(OddLevel::FloatLevel) => c["kick"] = json!(50.5),
            Some(OddLevel::NonLmUser) => c["users"]["@Bob:part.example"] = json!(10),
            Some(OddLevel::UsersNotAMap) => c["users"] = json!([CREATOR]),
            Some(OddLevel::Notifications) => c["notifications"] = json!({"room": 75}),
        }
        c
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Create,
    /// `target: None` is the sender's own membership.
    Member {
        target: Option<u8>,
        membership: Membership,
        displayname: bool,
    },
    PowerLevels(PowerShape),
    JoinRules(JoinRule),
    Message {
        body: u8,
        float: bool,
    },
    /// A state event other than the ones above; its state key may be a
    /// user id (rule 8).
    Topic {
        key: u8,
    },
}

/// Weighted by hand: memberships and messages are most of a room's life,
/// and a second `m.room.create` (always refused) is rare.
impl<'a> Arbitrary<'a> for Kind {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u8::arbitrary(u)? % 16 {
            0 => Kind::Create,
            1..=7 => Kind::Member { target: u.arbitrary()?, membership: u.arbitrary()?, displayname: u.arbitrary()? },
            8 | 9 => Kind::PowerLevels(u.arbitrary()?),
            10 => Kind::JoinRules(u.arbitrary()?),
            11..=14 => Kind::Message { body: u.arbitrary()?, float: u.arbitrary()? },
            _ => Kind::Topic { key: u.arbitrary()? },
        })
    }
}

/// Ways to break an otherwise well-built event.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Breakage {
    /// `prev_events` names an earlier event, not the tail.
    StalePrev(u8),
    NoPrev,
    DoublePrev,
    UnknownPrev,
    /// One selected auth event left out.
    DropAuth(u8),
    DuplicateAuth(u8),
    /// An auth event that is not current state (or not known at all).
    ForeignAuth(u8),
}

impl Breakage {
    fn is_prev(self) -> bool {
        matches!(self, Breakage::StalePrev(_) | Breakage::NoPrev | Breakage::DoublePrev | Breakage::UnknownPrev)
    }
}

#[derive(Debug, Clone, Arbitrary)]
struct Op {
    sender: u8,
    kind: Kind,
    ts_step: u8,
    /// The event is broken when this is below 40 (about one in six).
    break_chance: u8,
    breakage: Breakage,
}

#[derive(Debug, Clone, Arbitrary)]
struct Setup {
    join_rule: JoinRule,
    /// Bob's level in the first power levels event.
    bob: Option<Level>,
    /// `m.federate: false` when this is a multiple of 8 (one room in eight).
    federate: u8,
}

#[derive(Debug)]
struct Input {
    setup: Setup,
    ops: Vec<Op>,
}

/// Operations follow the setup until the data runs out (at most
/// `MAX_OPS`), so longer inputs mean longer sequences. (A derived `Vec`
/// would stop at the first even "continue" byte: one or two operations
/// from random data.)
impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let setup = Setup::arbitrary(u)?;
        let mut ops = Vec::new();
        while ops.len() < MAX_OPS && !u.is_empty() {
            ops.push(Op::arbitrary(u)?);
        }
        Ok(Input { setup, ops })
    }
}

// ---------------------------------------------------------------------
// The room.

struct Room {
    state: StateMap,
    tail: Option<EventId>,
    ts: i64,
    /// Every accepted event, in list order.
    accepted: Vec<EventId>,
    ids: HashSet<EventId>,
    /// What the state must be: the latest accepted event per key.
    model: HashMap<(String, String), EventId>,
}

fn unknown_id(n: u8) -> EventId {
    EventId::parse(&format!("$unknown{n:03}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).unwrap()
}

impl Room {
    fn new() -> Self {
        Room {
            state: StateMap::new(),
            tail: None,
            ts: 1_000,
            accepted: Vec::new(),
            ids: HashSet::new(),
            model: HashMap::new(),
        }
    }

    /// Builds a PDU as the hub does; `breakage` is applied to its links
    /// before the hub signs. `None` when a broken event does not even parse.
    fn build(
        &self,
        sender: &str,
        ty: &str,
        state_key: Option<&str>,
        content: Value,
        breakage: Option<Breakage>,
    ) -> Option<Pdu> {
        let version = lm();
        let keys = keys();
        let mut o = Object::new();
        o.insert("room_id".into(), json!(ROOM));
        o.insert("type".into(), json!(ty));
        if let Some(sk) = state_key {
            o.insert("state_key".into(), json!(sk));
        }
        o.insert("sender".into(), json!(sender));
        o.insert("origin_server_ts".into(), json!(self.ts));
        o.insert("content".into(), content);
        if !sender.ends_with(&format!(":{HUB}")) {
            // A participant's user: the participant signs an LPDU naming
            // the hub, the hub completes it.
            o.insert("hub_server".into(), json!(HUB));
            sign_lpdu(version, &keys.part, &mut o).expect("LPDU signs");
            o = Lpdu::from_object(version, o).expect("a participant's LPDU parses").into_json();
        }
        let content_obj = o["content"].as_object().unwrap().clone();
        let sketch = EventSketch { event_type: ty, sender, state_key, content: &content_obj };
        let mut auth = select_auth_events(version, &self.state, sketch);
        let mut prev: Vec<EventId> = self.tail.iter().cloned().collect();
        match breakage {
            None => {}
            Some(Breakage::StalePrev(n)) => {
                let earlier = &self.accepted[..self.accepted.len().saturating_sub(1)];
                prev = vec![if earlier.is_empty() {
                    unknown_id(n)
                } else {
                    earlier[usize::from(n) % earlier.len()].clone()
                }];
            }
            Some(Breakage::NoPrev) => prev.clear(),
            Some(Breakage::DoublePrev) => prev.extend(self.tail.iter().cloned()),
            Some(Breakage::UnknownPrev) => prev = vec![unknown_id(0)],
            // Every non-create event selects at least the create event.
            Some(Breakage::DropAuth(n)) => {
                let i = usize::from(n) % auth.len();
                auth.remove(i);
            }
            Some(Breakage::DuplicateAuth(n)) => {
                let dup = auth[usize::from(n) % auth.len()].clone();
                auth.push(dup);
            }
            Some(Breakage::ForeignAuth(n)) => {
                // An accepted event that is no longer (or never was) state,
                // else an unknown id.
                let current: HashSet<&EventId> = self.model.values().collect();
                let stale: Vec<&EventId> = self.accepted.iter().filter(|e| !current.contains(e)).collect();
                let foreign =
                    if stale.is_empty() { unknown_id(n) } else { stale[usize::from(n) % stale.len()].clone() };
                auth.push(foreign);
            }
        }
        let ids = |v: &[EventId]| Value::Array(v.iter().map(|e| json!(e.as_str())).collect());
        o.insert("auth_events".into(), ids(&auth));
        o.insert("prev_events".into(), ids(&prev));
        sign_event(version, &keys.hub, &mut o).expect("the hub signs");
        match Pdu::from_object(version, o, Schema::Full) {
            Ok(pdu) => Some(pdu),
            Err(e) => {
                assert!(breakage.is_some(), "a well-built {ty} from {sender} does not parse: {e}");
                None
            }
        }
    }

    /// `check_append`, then the bookkeeping and the per-event invariants.
    fn offer(&mut self, pdu: Pdu) -> Result<(), AppendError> {
        check_append(self.tail.as_ref(), &self.state, &pdu)?;
        let expected_prev: Vec<EventId> = self.tail.iter().cloned().collect();
        assert_eq!(pdu.prev_events(), &expected_prev[..], "accepted off the tail");
        assert!(self.ids.insert(pdu.event_id().clone()), "accepted event id {} twice", pdu.event_id());
        assert_eq!(check_hashes(lm(), pdu.json()).unwrap(), HashCheck::Match);
        if pdu.event_type() != "m.room.create" && pdu.membership() != Some("knock") {
            // The receive-side check against the event's own auth events
            // agrees. (LM knocks are built without the join rules, OQ-8,
            // which the knock rule reads from the state.)
            let auth: Vec<Arc<Pdu>> = pdu
                .auth_events()
                .iter()
                .map(|id| {
                    let e = self.state.iter().find(|e| e.event_id() == id).expect("auth events are current state");
                    Arc::clone(e)
                })
                .collect();
            if let Err(e) = authorize_by_auth_events(&pdu, &auth, None) {
                panic!("{} passes check_append but not its own auth events: {e}", pdu.event_id());
            }
        }
        self.tail = Some(pdu.event_id().clone());
        self.accepted.push(pdu.event_id().clone());
        if let Some(sk) = pdu.state_key() {
            self.model.insert((pdu.event_type().to_owned(), sk.to_owned()), pdu.event_id().clone());
        }
        self.state.apply(Arc::new(pdu));
        Ok(())
    }

    /// Builds and appends an event that must be accepted.
    fn must(&mut self, sender: &str, ty: &str, state_key: Option<&str>, content: Value) {
        self.ts += 1;
        let pdu = self.build(sender, ty, state_key, content, None).unwrap();
        if let Err(e) = self.offer(pdu) {
            panic!("setup event {ty} {state_key:?} from {sender} refused: {e}");
        }
    }

    fn check_state(&self) {
        assert_eq!(self.state.len(), self.model.len(), "state has events the model does not");
        for ((ty, sk), id) in &self.model {
            let got = self.state.get(ty, sk).map(|e| e.event_id());
            assert_eq!(got, Some(id), "state for ({ty}, {sk:?}) is not the latest accepted event");
        }
        for e in self.state.iter() {
            let sk = e.state_key().expect("only state events are state");
            assert!(self.ids.contains(e.event_id()), "state holds an event that was never accepted");
            assert_eq!(self.model.get(&(e.event_type().to_owned(), sk.to_owned())), Some(e.event_id()));
        }
        assert_eq!(self.ids.len(), self.accepted.len());
    }
}

fn run(input: Input) {
    let mut room = Room::new();
    let Setup { join_rule, bob, federate } = input.setup;

    let mut create = json!({"room_version": LM_VERSION});
    if federate % 8 == 0 {
        create["m.federate"] = json!(false);
    }
    room.must(CREATOR, "m.room.create", Some(""), create);
    room.must(CREATOR, "m.room.member", Some(CREATOR), json!({"membership": "join"}));
    assert_eq!(room.state.membership(CREATOR), "join", "the creator starts joined");
    let mut users = json!({ CREATOR: 100 });
    if let Some(l) = bob {
        users[USERS[2]] = json!(l.value());
    }
    room.must(CREATOR, "m.room.power_levels", Some(""), json!({ "users": users }));
    // The first join rules must be one the rules accept as content.
    let first_rule = match join_rule {
        JoinRule::NotAString => JoinRule::Public,
        r => r,
    };
    room.must(CREATOR, "m.room.join_rules", Some(""), first_rule.content());
    assert_eq!(room.state.membership(CREATOR), "join", "the creator starts joined");
    room.check_state();

    for op in input.ops {
        room.ts += i64::from(op.ts_step % 4);
        let sender = USERS[usize::from(op.sender) % USERS.len()];
        let (ty, state_key, content): (&str, Option<String>, Value) = match &op.kind {
            Kind::Create => ("m.room.create", Some(String::new()), json!({"room_version": LM_VERSION})),
            Kind::Member { target, membership, displayname } => {
                let target = target.map_or(sender, |t| USERS[usize::from(t) % USERS.len()]);
                let mut c = json!({"membership": membership.as_str()});
                if *displayname {
                    c["displayname"] = json!(target.trim_start_matches('@'));
                }
                ("m.room.member", Some(target.to_owned()), c)
            }
            Kind::PowerLevels(shape) => ("m.room.power_levels", Some(String::new()), shape.content()),
            Kind::JoinRules(rule) => ("m.room.join_rules", Some(String::new()), rule.content()),
            Kind::Message { body, float } => {
                let mut c = json!({"msgtype": "m.text", "body": format!("message {body}")});
                if *float {
                    c["ratio"] = json!(f64::from(*body) / 8.0);
                }
                ("m.room.message", None, c)
            }
            Kind::Topic { key } => {
                let sk = match key % 3 {
                    0 => String::new(),
                    1 => sender.to_owned(),
                    _ => USERS[usize::from(*key / 3) % USERS.len()].to_owned(),
                };
                ("m.room.topic", Some(sk), json!({"topic": "fuzz"}))
            }
        };
        let is_create = ty == "m.room.create";
        let broken = (op.break_chance < 40 && !is_create).then_some(op.breakage);
        let pdu = room.build(sender, ty, state_key.as_deref(), content, broken);
        let before = (room.tail.clone(), room.accepted.len());
        let result = pdu.map(|p| room.offer(p));
        match (broken, result) {
            // A broken event that does not even parse is refused.
            (Some(_), None) => {}
            (None, None) => unreachable!("build asserts well-built events parse"),
            (Some(b), Some(res)) => {
                let err = res.expect_err("a broken event was accepted");
                if b.is_prev() {
                    assert!(matches!(err, AppendError::NotOnTail { .. }), "{b:?}: {err}");
                } else {
                    assert!(matches!(err, AppendError::AuthEventsMismatch), "{b:?}: {err}");
                }
            }
            (None, Some(Ok(()))) => assert!(!is_create, "a second m.room.create was accepted"),
            (None, Some(Err(e))) => {
                assert!(matches!(e, AppendError::Auth(_)), "a well-built {ty} refused by the list checks: {e}")
            }
        }
        if room.accepted.len() == before.1 {
            assert_eq!(room.tail, before.0, "a refused event moved the tail");
        }
        room.check_state();
    }
}

fuzz_target!(|input: Input| run(input));
