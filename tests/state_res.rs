//! State resolution v2 (room versions 10, 11) and v2.1 (room version 12)
//! on small DAGs: the classic conflict scenarios (a ban racing a power
//! change, join-rule evasion, off-topic power levels, topic resets), each
//! built event by event with auth events selected from the resolved state
//! before them, as a DAG server does.

use std::collections::HashMap;
use std::sync::Arc;

use lmx::core::event::{Pdu, RoomVersion, Schema};
use lmx::core::ids::EventId;
use lmx::core::rooms::{resolve, select_auth_events, EventSketch, StateIds, StateMap};
use serde_json::{json, Value};

const ALICE: &str = "@alice:a.example";
const BOB: &str = "@bob:b.example";
const CHARLIE: &str = "@charlie:c.example";
const ZARA: &str = "@zara:z.example";
const ELLA: &str = "@ella:e.example";

struct Dag {
    v: &'static RoomVersion,
    room_id: Option<String>,
    events: HashMap<EventId, Arc<Pdu>>,
    by_name: HashMap<String, EventId>,
    names: HashMap<EventId, String>,
    after: HashMap<String, StateIds>,
    ts: i64,
}

impl Dag {
    /// The shared start: create, Alice joins, power levels, public join
    /// rules, Bob, Charlie and Zara join, a message `START`.
    fn new(version: &str) -> Self {
        let v = RoomVersion::find(version).unwrap();
        let mut d = Dag {
            v,
            room_id: None,
            events: HashMap::new(),
            by_name: HashMap::new(),
            names: HashMap::new(),
            after: HashMap::new(),
            ts: 0,
        };
        let mut create = json!({ "room_version": version });
        if v.auth.creator_in_content {
            create["creator"] = json!(ALICE);
        }
        d.add("CREATE", ALICE, "m.room.create", Some(""), create, &[]);
        d.add("IMA", ALICE, "m.room.member", Some(ALICE), json!({"membership": "join"}), &["CREATE"]);
        d.add("IPOWER", ALICE, "m.room.power_levels", Some(""), d.levels(&[]), &["IMA"]);
        d.add("IJR", ALICE, "m.room.join_rules", Some(""), json!({"join_rule": "public"}), &["IPOWER"]);
        d.add("IMB", BOB, "m.room.member", Some(BOB), json!({"membership": "join"}), &["IJR"]);
        d.add("IMC", CHARLIE, "m.room.member", Some(CHARLIE), json!({"membership": "join"}), &["IMB"]);
        d.add("IMZ", ZARA, "m.room.member", Some(ZARA), json!({"membership": "join"}), &["IMC"]);
        d.add("START", ZARA, "m.room.message", None, json!({"body": "start"}), &["IMZ"]);
        d
    }

    /// Power levels content: Alice at 100 (in v12 creators are implied and
    /// may not be listed), plus `others`.
    fn levels(&self, others: &[(&str, i64)]) -> Value {
        let mut users = serde_json::Map::new();
        if !self.v.auth.creators_infinite {
            users.insert(ALICE.into(), json!(100));
        }
        for (u, l) in others {
            users.insert((*u).into(), json!(l));
        }
        json!({ "users": users })
    }

    fn id(&self, name: &str) -> EventId {
        self.by_name[name].clone()
    }

    fn state_before(&self, prevs: &[&str]) -> StateIds {
        let states: Vec<StateIds> = prevs.iter().map(|p| self.after[*p].clone()).collect();
        resolve(self.v, &states, &self.events).expect("resolution succeeds")
    }

    fn add(&mut self, name: &str, sender: &str, ty: &str, sk: Option<&str>, content: Value, prevs: &[&str]) {
        self.ts += 1;
        let before = self.state_before(prevs);
        let view = StateMap::from_events(before.values().map(|id| self.events[id].clone()));
        let content_obj = content.as_object().unwrap().clone();
        let sketch = EventSketch { event_type: ty, sender, state_key: sk, content: &content_obj };
        let auth: Vec<String> = select_auth_events(self.v, &view, sketch).iter().map(|e| e.to_string()).collect();
        let prev_ids: Vec<String> = prevs.iter().map(|p| self.id(p).to_string()).collect();
        let mut o = json!({
            "type": ty, "sender": sender, "content": content, "origin_server_ts": self.ts,
            "prev_events": prev_ids, "auth_events": auth, "depth": self.ts,
        });
        if let Some(sk) = sk {
            o["state_key"] = json!(sk);
        }
        if let Some(room) = &self.room_id {
            o["room_id"] = json!(room);
        } else if !self.v.room_id_from_create {
            o["room_id"] = json!("!room:a.example");
        }
        let pdu = Pdu::from_object(self.v, o.as_object().unwrap().clone(), Schema::Loose).unwrap();
        if self.room_id.is_none() {
            self.room_id = Some(pdu.room_id().to_string());
        }
        let id = pdu.event_id().clone();
        let mut after = before;
        if let Some(sk) = sk {
            after.insert((ty.to_owned(), sk.to_owned()), id.clone());
        }
        self.events.insert(id.clone(), Arc::new(pdu));
        self.by_name.insert(name.to_owned(), id.clone());
        self.names.insert(id, name.to_owned());
        self.after.insert(name.to_owned(), after);
    }

    /// Resolves the state before an `END` event on `prevs` and names, for
    /// each state key, the event the resolution picked.
    fn end(&self, prevs: &[&str]) -> HashMap<(String, String), String> {
        self.state_before(prevs).into_iter().map(|(k, id)| (k, self.names[&id].clone())).collect()
    }
}

fn key(t: &str, k: &str) -> (String, String) {
    (t.to_owned(), k.to_owned())
}

/// Asserts that the resolved state holds `expected` (name per key) and
/// that every other key holds the initial event it started with.
fn check(dag: &Dag, state: &HashMap<(String, String), String>, expected: &[((&str, &str), &str)]) {
    let initial = &dag.after["START"];
    for (k, name) in expected {
        assert_eq!(state.get(&key(k.0, k.1)).map(String::as_str), Some(*name), "v{} {:?}", dag.v.id, k);
    }
    for (k, id) in initial {
        if expected.iter().any(|(e, _)| key(e.0, e.1) == *k) {
            continue;
        }
        assert_eq!(state.get(k), Some(&dag.names[id]), "v{} {:?} keeps its initial event", dag.v.id, k);
    }
}

const VERSIONS: [&str; 3] = ["10", "11", "12"];

#[test]
fn ban_races_a_power_change() {
    for v in VERSIONS {
        let mut d = Dag::new(v);
        let pa = d.levels(&[(BOB, 50)]);
        d.add("PA", ALICE, "m.room.power_levels", Some(""), pa.clone(), &["START"]);
        d.add("MA", ALICE, "m.room.member", Some(ALICE), json!({"membership": "join"}), &["PA"]);
        d.add("MB", ALICE, "m.room.member", Some(BOB), json!({"membership": "ban"}), &["MA"]);
        d.add("PB", BOB, "m.room.power_levels", Some(""), pa, &["PA"]);
        let s = d.end(&["MB", "PB"]);
        check(
            &d,
            &s,
            &[(("m.room.power_levels", ""), "PA"), (("m.room.member", ALICE), "MA"), (("m.room.member", BOB), "MB")],
        );
    }
}

#[test]
fn join_rule_evasion() {
    for v in VERSIONS {
        let mut d = Dag::new(v);
        d.add("JR", ALICE, "m.room.join_rules", Some(""), json!({"join_rule": "invite"}), &["START"]);
        d.add("ME", ELLA, "m.room.member", Some(ELLA), json!({"membership": "join"}), &["START"]);
        let s = d.end(&["JR", "ME"]);
        check(&d, &s, &[(("m.room.join_rules", ""), "JR")]);
        assert!(!s.contains_key(&key("m.room.member", ELLA)), "v{v}: the join under old rules loses");
    }
}

#[test]
fn offtopic_power_levels() {
    for v in VERSIONS {
        let mut d = Dag::new(v);
        d.add("PA", ALICE, "m.room.power_levels", Some(""), d.levels(&[(BOB, 50)]), &["START"]);
        d.add("PB", BOB, "m.room.power_levels", Some(""), d.levels(&[(BOB, 50), (CHARLIE, 50)]), &["PA"]);
        d.add("PC", CHARLIE, "m.room.power_levels", Some(""), d.levels(&[(BOB, 50), (CHARLIE, 0)]), &["PB"]);
        let s = d.end(&["PC", "PA"]);
        check(&d, &s, &[(("m.room.power_levels", ""), "PC")]);
    }
}

/// Alice sets topics and demotes Bob on one branch; on the other Bob, still
/// a moderator, restates his level and sets a topic.
fn topic_branches(d: &mut Dag) {
    d.add("T1", ALICE, "m.room.topic", Some(""), json!({"topic": "1"}), &["START"]);
    d.add("PA1", ALICE, "m.room.power_levels", Some(""), d.levels(&[(BOB, 50)]), &["T1"]);
    d.add("T2", ALICE, "m.room.topic", Some(""), json!({"topic": "2"}), &["PA1"]);
    d.add("PA2", ALICE, "m.room.power_levels", Some(""), d.levels(&[(BOB, 0)]), &["T2"]);
    d.add("PB", BOB, "m.room.power_levels", Some(""), d.levels(&[(BOB, 50)]), &["PA1"]);
    d.add("T3", BOB, "m.room.topic", Some(""), json!({"topic": "3"}), &["PB"]);
}

#[test]
fn topic_basic() {
    for v in VERSIONS {
        let mut d = Dag::new(v);
        topic_branches(&mut d);
        let s = d.end(&["PA2", "T3"]);
        check(&d, &s, &[(("m.room.power_levels", ""), "PA2"), (("m.room.topic", ""), "T2")]);
    }
}

#[test]
fn topic_reset() {
    for v in VERSIONS {
        let mut d = Dag::new(v);
        d.add("T1", ALICE, "m.room.topic", Some(""), json!({"topic": "1"}), &["START"]);
        d.add("PA", ALICE, "m.room.power_levels", Some(""), d.levels(&[(BOB, 50)]), &["T1"]);
        d.add("T2", BOB, "m.room.topic", Some(""), json!({"topic": "2"}), &["PA"]);
        d.add("MB", ALICE, "m.room.member", Some(BOB), json!({"membership": "ban"}), &["T2"]);
        let s = d.end(&["MB", "T1"]);
        check(
            &d,
            &s,
            &[(("m.room.topic", ""), "T1"), (("m.room.member", BOB), "MB"), (("m.room.power_levels", ""), "PA")],
        );
    }
}

#[test]
fn topic_with_messages_in_between() {
    for v in VERSIONS {
        let mut d = Dag::new(v);
        topic_branches(&mut d);
        d.add("MZ1", ZARA, "m.room.message", None, json!({"body": "hi"}), &["PA2", "T3"]);
        d.add("T4", ALICE, "m.room.topic", Some(""), json!({"topic": "4"}), &["MZ1"]);
        let s = d.end(&["T4", "MZ1"]);
        check(&d, &s, &[(("m.room.power_levels", ""), "PA2"), (("m.room.topic", ""), "T4")]);
    }
}

#[test]
fn identical_states_and_single_states_pass_through() {
    for v in VERSIONS {
        let d = Dag::new(v);
        let start = d.after["START"].clone();
        assert_eq!(resolve(d.v, std::slice::from_ref(&start), &d.events).unwrap(), start);
        assert_eq!(resolve(d.v, &[start.clone(), start.clone()], &d.events).unwrap(), start);
        assert!(resolve(d.v, &[], &d.events).unwrap().is_empty());
    }
}

#[test]
fn an_unknown_conflicted_event_is_an_error() {
    let mut d = Dag::new("11");
    d.add("T1", ALICE, "m.room.topic", Some(""), json!({"topic": "1"}), &["START"]);
    d.add("T2", ALICE, "m.room.topic", Some(""), json!({"topic": "2"}), &["START"]);
    let t2 = d.id("T2");
    d.events.remove(&t2);
    let states = [d.after["T1"].clone(), d.after["T2"].clone()];
    assert!(resolve(d.v, &states, &d.events).is_err());
}

#[test]
fn concurrent_topics_resolve_by_timestamp_then_id() {
    for v in VERSIONS {
        let mut d = Dag::new(v);
        d.add("T1", ALICE, "m.room.topic", Some(""), json!({"topic": "1"}), &["START"]);
        d.add("T2", ALICE, "m.room.topic", Some(""), json!({"topic": "2"}), &["START"]);
        // Both are based on the same power levels: the later one is applied last.
        let s = d.end(&["T1", "T2"]);
        check(&d, &s, &[(("m.room.topic", ""), "T2")]);
        let s = d.end(&["T2", "T1"]);
        check(&d, &s, &[(("m.room.topic", ""), "T2")]);
    }
}
