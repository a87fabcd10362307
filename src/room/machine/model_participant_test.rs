//! A participant's machine and its hub's machine, each over its own
//! in-memory store, with the test carrying what each queues for the other:
//! the participant's LPDUs to the hub, the hub's events back, some of them
//! lost on the way (a gap the participant fills from the hub's list, as its
//! backfill would). Batches commit or are lost in crashes on either side.
//! The participant's list is always the hub's from its join on, its
//! clients' sends are answered `Waiting` and then echoed with the id the
//! hub gave their LPDU, a retried transaction never makes a second LPDU,
//! and its queue to the hub holds each send once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;

use super::{Effects, Env, Fetch, Input, JoinSeed, LocalDone, Machine, Reply, RoomView, Ticket};
use crate::core::crypto::SigningKey;
use crate::core::event::{Lpdu, Pdu, RoomVersion, LM_VERSION};
use crate::core::ids::{EventId, RoomId, ServerName, UserId};
use crate::core::json::{parse_object, NumberPolicy};
use crate::core::rooms::StateMap;
use crate::store::records::queue_item;
use crate::store::{KvStore, MemKv, Store};

use super::model_test::{draft, key_of, MemReads};

fn key(server: &str) -> SigningKey {
    key_of(&ServerName::parse(server).unwrap())
}

/// One server's side of the room.
struct Side {
    store: Arc<dyn Store>,
    env: Env,
    machine: Machine,
    next_position: u64,
}

impl Side {
    fn new(server: &str, view: RoomView) -> Self {
        let store: Arc<dyn Store> = Arc::new(KvStore::new(MemKv::new()));
        let env = Env { key: key(server), timeline_cache: None };
        let machine = Machine::new(env.clone(), Arc::new(MemReads(store.clone())), view);
        Side { store, env, machine, next_position: 1 }
    }

    /// Handles one batch; `commit` writes it, otherwise it is lost and the
    /// machine is read back from the store.
    fn batch(&mut self, inputs: Vec<Input>, now: i64, commit: bool) -> Option<Effects> {
        let needed: u64 = inputs.iter().map(|i| self.machine.positions_needed(i)).sum();
        let first = self.next_position;
        self.next_position += needed;
        let mut out = Effects::new(first..first + needed);
        for input in inputs {
            self.machine.handle(input, now, &mut out);
        }
        self.machine.end_batch(&mut out);
        if !commit {
            self.reload();
            return None;
        }
        self.store.write(std::mem::take(&mut out.batch)).unwrap();
        Some(out)
    }

    fn reload(&mut self) {
        let room = self.machine.view().room_id.clone();
        let view = crate::room::load::load_view(&self.store, &room).unwrap().expect("stored");
        self.machine = Machine::new(self.env.clone(), Arc::new(MemReads(self.store.clone())), view);
    }

    fn list(&self) -> Vec<EventId> {
        self.store.list(&self.machine.view().room_id, 0, u64::MAX).unwrap()
    }

    fn pdu(&self, id: &EventId) -> Pdu {
        let rec = self.store.event(id).unwrap().unwrap();
        (*super::snapshot::pdu_from_record(self.machine.view().version, id, &rec).unwrap()).clone()
    }
}

#[derive(Debug, Clone)]
enum Action {
    /// The participant's user sends under a transaction id.
    Send { txn: u8 },
    /// A hub user sends.
    HubSend,
    /// The participant's queued LPDUs reach the hub.
    ToHub,
    /// The hub's queued events reach the participant; with `lose`, the
    /// first of them is lost on the way.
    ToParticipant { lose: bool },
    /// The participant's open gap fetch is answered.
    AnswerFetch,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..4u8).prop_map(|txn| Action::Send { txn }),
        2 => Just(Action::HubSend),
        3 => Just(Action::ToHub),
        3 => any::<bool>().prop_map(|lose| Action::ToParticipant { lose }),
        1 => Just(Action::AnswerFetch),
    ]
}

struct Pair {
    hub: Side,
    p: Side,
    now: i64,
    next_ticket: u64,
    /// Where the participant's copy of the hub's list starts.
    join_at: usize,
    /// Queue positions already carried (to p1: answered by p1).
    to_hub_upto: u64,
    to_p_upto: u64,
    /// Deliveries to p1 not answered yet: ticket → queue position.
    delivered: HashMap<Ticket, u64>,
    /// The participant's open gap fetch.
    fetch: Option<EventId>,
    /// Committed sends: transaction → LPDU hash.
    sends: HashMap<u8, String>,
    /// Clients waiting: LPDU hash → echoed event id, once echoed.
    echoed: HashMap<String, EventId>,
    hub_messages: usize,
}

impl Pair {
    fn new() -> Self {
        let room = RoomId::parse("!pair:hub.test").unwrap();
        let version = RoomVersion::find(LM_VERSION).unwrap();
        let hub_name = ServerName::parse("hub.test").unwrap();
        let mut hub = Side::new("hub.test", RoomView::empty(room.clone(), version, hub_name.clone()));
        let alice = UserId::parse("@alice:hub.test").unwrap();
        let mut create = json!({"room_version": LM_VERSION});
        if version.auth.creator_in_content {
            create["creator"] = json!(alice.as_str());
        }
        let setup = [
            draft(&alice, "m.room.create", Some(""), create),
            draft(&alice, "m.room.member", Some(alice.as_str()), json!({"membership": "join"})),
            draft(&alice, "m.room.join_rules", Some(""), json!({"join_rule": "public"})),
        ];
        let now = 1_700_000_000_000;
        for (i, d) in setup.into_iter().enumerate() {
            hub.batch(vec![Input::Local { draft: d, ticket: Ticket(i as u64) }], now, true).unwrap();
        }
        // The participant's user joins through the hub; its server starts
        // from the state before the join, as a send_join answer gives it.
        let user = UserId::parse("@u:p1.test").unwrap();
        let join = draft(&user, "m.room.member", Some(user.as_str()), json!({"membership": "join"}));
        let state_before: StateMap = (*hub.machine.view().state).clone();
        let lpdu = super::build::lpdu_from_draft(hub.machine.view(), &key("p1.test"), &join, now).unwrap();
        let out = hub.batch(vec![Input::Lpdu { lpdu, with_state: false, ticket: Ticket(9) }], now, true).unwrap();
        let Some((_, Ok(Reply::Appended(joined)))) = out.answers.into_iter().next() else { panic!("join refused") };
        let mut p = Side::new("p1.test", RoomView::empty(room, version, hub_name));
        let seed = JoinSeed {
            room: p.machine.view().room_id.clone(),
            version,
            hub: p.machine.view().hub.clone(),
            outliers: state_before.iter().map(|e| (**e).clone()).collect(),
            state: state_before,
            join: (*joined.pdu).clone(),
            depth: 0,
        };
        p.batch(vec![Input::Seed { seed: Box::new(seed), ticket: Ticket(10) }], now, true).unwrap();
        let join_at = hub.list().len() - 1;
        // The hub queued the join for p1 too: that copy is already here.
        let to_p_upto = hub.store.queue(&ServerName::parse("p1.test").unwrap(), 0, usize::MAX).unwrap()[0].0;
        Pair {
            hub,
            p,
            now,
            next_ticket: 100,
            join_at,
            to_hub_upto: 0,
            to_p_upto,
            delivered: HashMap::new(),
            fetch: None,
            sends: HashMap::new(),
            echoed: HashMap::new(),
            hub_messages: 0,
        }
    }

    fn ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        Ticket(self.next_ticket)
    }

    fn step(&mut self, actions: &[Action], commit: bool) {
        self.now += 1000;
        let mut p_inputs = Vec::new();
        let mut hub_inputs = Vec::new();
        let mut txn_of: HashMap<Ticket, u8> = HashMap::new();
        let mut fetch_answered = false;
        let mut sent_upto = self.to_hub_upto;
        let mut given_upto = self.to_p_upto;
        for a in actions {
            match a {
                Action::Send { txn } => {
                    let user = UserId::parse("@u:p1.test").unwrap();
                    let body = json!({"msgtype": "m.text", "body": format!("p {txn}")});
                    let mut d = draft(&user, "m.room.message", None, body);
                    d.txn = Some(("DEV".into(), format!("t{txn}")));
                    let ticket = self.ticket();
                    txn_of.insert(ticket, *txn);
                    p_inputs.push(Input::Local { draft: d, ticket });
                }
                Action::HubSend => {
                    self.hub_messages += 1;
                    let alice = UserId::parse("@alice:hub.test").unwrap();
                    let body = json!({"msgtype": "m.text", "body": format!("h {}", self.hub_messages)});
                    let ticket = self.ticket();
                    hub_inputs.push(Input::Local { draft: draft(&alice, "m.room.message", None, body), ticket });
                }
                Action::ToHub => {
                    let hub = self.p.machine.view().hub.clone();
                    for (pos, item) in self.p.store.queue(&hub, sent_upto, usize::MAX).unwrap() {
                        sent_upto = pos;
                        let Some(queue_item::Item::LpduHash(hash)) = item.item else { continue };
                        // Queued by its pending record, which holds its text.
                        let Some(pending) = self.p.store.pending_lpdu(&hash).unwrap() else { continue };
                        let obj = parse_object(&pending.json, NumberPolicy::Ieee754).unwrap();
                        let lpdu = Lpdu::from_object(self.hub.machine.view().version, obj).unwrap();
                        let ticket = self.ticket();
                        hub_inputs.push(Input::Lpdu { lpdu, with_state: false, ticket });
                    }
                }
                Action::ToParticipant { lose } => {
                    let me = ServerName::parse("p1.test").unwrap();
                    let mut pdus = Vec::new();
                    for (pos, item) in self.hub.store.queue(&me, given_upto, usize::MAX).unwrap() {
                        given_upto = pos;
                        let Some(queue_item::Item::EventId(id)) = item.item else { continue };
                        pdus.push(self.hub.pdu(&EventId::parse(&id).unwrap()));
                    }
                    if *lose && pdus.len() > 1 {
                        pdus.remove(0);
                    }
                    if !pdus.is_empty() {
                        let ticket = self.ticket();
                        self.delivered.insert(ticket, given_upto);
                        p_inputs.push(Input::FromHub { pdus, ticket });
                    }
                }
                Action::AnswerFetch => {
                    if let (Some(missing), false) = (&self.fetch, fetch_answered) {
                        // What the hub's backfill returns: from the missing
                        // event back to the participant's tail, newest first.
                        let list = self.hub.list();
                        let have = self.p.list().len();
                        let upto = list.iter().position(|e| e == missing).unwrap();
                        let from = (self.join_at + have).min(upto + 1);
                        let page: Vec<Pdu> = list[from..=upto].iter().rev().map(|id| self.hub.pdu(id)).collect();
                        p_inputs.push(Input::GapFetched(Ok(page)));
                        fetch_answered = true;
                    }
                }
            }
        }
        // The hub first (what it sequences now reaches p1 in a later step).
        if !hub_inputs.is_empty() {
            let out = self.hub.batch(hub_inputs, self.now, true).unwrap();
            for (_, answer) in out.answers.iter().chain(&out.answers_now) {
                assert!(answer.is_ok(), "the hub refused: {answer:?}");
            }
            self.to_hub_upto = sent_upto;
        }
        let Some(out) = self.p.batch(p_inputs, self.now, commit) else {
            // Lost, with any gap the machine had open: the hub sends again
            // what p1 did not answer for.
            self.fetch = None;
            self.delivered.clear();
            self.check();
            return;
        };
        if fetch_answered {
            self.fetch = None;
        }
        for f in &out.fetches {
            if let Fetch::Gap { missing, .. } = f {
                assert!(self.fetch.is_none(), "one gap fetch at a time");
                self.fetch = Some(missing.clone());
            }
        }
        for (ticket, answer) in out.answers_now.iter().chain(&out.answers) {
            match answer {
                Ok(Reply::Local(LocalDone::Waiting { lpdu_hash })) => {
                    let txn = txn_of[ticket];
                    let first = self.sends.entry(txn).or_insert_with(|| lpdu_hash.clone());
                    assert_eq!(first, lpdu_hash, "a retried transaction is the same LPDU");
                }
                Ok(Reply::Local(LocalDone::Sent(id))) => {
                    let txn = txn_of[ticket];
                    assert_eq!(self.echoed.get(&self.sends[&txn]), Some(id), "a settled retry gets the echoed id");
                }
                Ok(Reply::FromHub(results)) => {
                    assert!(results.iter().all(Result::is_ok), "the hub's events are taken: {results:?}");
                    // Answered: the hub may count them delivered.
                    let upto = self.delivered.remove(ticket).expect("answers a delivery");
                    self.to_p_upto = self.to_p_upto.max(upto);
                }
                other => panic!("unexpected answer {other:?}"),
            }
        }
        for (hash, id) in &out.echoes {
            assert_eq!(self.hub.pdu(id).lpdu_hash(), Some(hash.as_str()), "the echo names the hub's event");
            assert!(self.echoed.insert(hash.clone(), id.clone()).is_none(), "one echo per send");
        }
        self.check();
    }

    /// The participant's list is the hub's from the join on.
    fn check(&self) {
        let hub = self.hub.list();
        let p = self.p.list();
        assert_eq!(p, hub[self.join_at..self.join_at + p.len()], "the participant's list is the hub's");
        assert_eq!(self.p.machine.view().length as usize, p.len());
    }

    /// Everything delivered: every send is in both lists once and echoed.
    fn settle(&mut self) {
        for _ in 0..6 {
            self.step(&[Action::ToHub, Action::ToParticipant { lose: false }, Action::AnswerFetch], true);
        }
        assert!(self.fetch.is_none());
        assert_eq!(self.p.list().len() + self.join_at, self.hub.list().len(), "the participant caught up");
        let hub = self.p.machine.view().hub.clone();
        let queued: Vec<String> = self
            .p
            .store
            .queue(&hub, 0, usize::MAX)
            .unwrap()
            .into_iter()
            .filter_map(|(_, item)| match item.item {
                Some(queue_item::Item::LpduHash(hash)) => Some(hash),
                _ => None,
            })
            .collect();
        let sends: BTreeSet<&String> = self.sends.values().collect();
        assert_eq!(queued.len(), sends.len(), "each send queued once");
        assert_eq!(queued.iter().collect::<BTreeSet<_>>(), sends);
        for hash in sends {
            assert!(self.echoed.contains_key(hash), "send {hash} echoed");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn a_participant_follows_its_hub(
        steps in prop::collection::vec((prop::collection::vec(action(), 1..5), prop::bool::weighted(0.8)), 1..25)
    ) {
        let mut pair = Pair::new();
        for (actions, commit) in &steps {
            pair.step(actions, *commit);
        }
        pair.settle();
    }
}

#[test]
fn a_lost_event_is_fetched_and_the_list_goes_on() {
    let mut pair = Pair::new();
    pair.step(&[Action::HubSend, Action::HubSend], true);
    pair.step(&[Action::ToParticipant { lose: true }], true);
    assert!(pair.fetch.is_some(), "the gap is seen");
    assert_eq!(pair.p.list().len(), 1, "nothing is placed past the gap");
    pair.step(&[Action::Send { txn: 1 }, Action::AnswerFetch], true);
    assert_eq!(pair.p.list().len(), 3, "the fill and the waiting event");
    pair.settle();
}
