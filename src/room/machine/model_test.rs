//! The hub's machine against a plain model: random batches of local sends
//! (with retried transaction ids), participants' LPDUs (joins, messages,
//! leaves, refusals) and replays of earlier LPDUs, each batch either
//! committed to an in-memory store or lost in a crash, with restarts in
//! between. After every batch the stored list, the answers and the view
//! match a `Vec` that applies the same rules; at the end every
//! destination's queue holds exactly the events the model sends it.
//! No sockets, no sled, no clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;

use super::build::{lpdu_from_draft, Draft};
use super::{Effects, Env, Input, LocalDone, Machine, Reads, Reply, RoomError, RoomView, Ticket};
use crate::core::crypto::SigningKey;
use crate::core::event::{Lpdu, RoomVersion, LM_VERSION};
use crate::core::ids::{EventId, KeyId, RoomId, ServerName, UserId};
use crate::store::records::{queue_item, ClientTxn, EventRecord, PendingLpdu, StateSnapshot};
use crate::store::{KvStore, MemKv, Store, StoreError};

pub(super) struct MemReads(pub Arc<dyn Store>);

impl super::snapshot::DagStore for MemReads {
    fn stored_event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        self.0.event(id)
    }
    fn stored_state_after(&self, id: &EventId) -> Result<Option<StateSnapshot>, StoreError> {
        self.0.state_after(id)
    }
}

impl Reads for MemReads {
    fn client_txn(&self, user: &UserId, device: &str, txn: &str) -> Result<Option<ClientTxn>, StoreError> {
        self.0.client_txn(user, device, txn)
    }
    fn lpdu_event(&self, room: &RoomId, lpdu_hash: &str) -> Result<Option<EventId>, StoreError> {
        self.0.lpdu_event(room, lpdu_hash)
    }
    fn pending_lpdu(&self, lpdu_hash: &str) -> Result<Option<PendingLpdu>, StoreError> {
        self.0.pending_lpdu(lpdu_hash)
    }
    fn list(&self, room: &RoomId, from: u64, to: u64) -> Result<Vec<EventId>, StoreError> {
        self.0.list(room, from, to)
    }
    fn linearized(&self, _: &ServerName) -> Option<bool> {
        Some(true)
    }
}

const LOCAL_USERS: [&str; 2] = ["@alice:hub.test", "@bob:hub.test"];
const REMOTES: [&str; 2] = ["p1.test", "p2.test"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Join,
    Message,
    Leave,
}

#[derive(Debug, Clone)]
enum Action {
    /// A local user's message under a transaction id (a repeat is a retry).
    Local { user: usize, txn: u8 },
    /// A new LPDU from the user of a remote server.
    Lpdu { server: usize, kind: Kind },
    /// An LPDU handed over before, again (a participant's retry).
    Replay { pick: usize },
}

#[derive(Debug, Clone, Copy)]
enum End {
    Commit,
    Crash,
    /// Committed, then the machine is dropped and read back.
    Restart,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..2usize, 0..4u8).prop_map(|(user, txn)| Action::Local { user, txn }),
        4 => (0..2usize, prop_oneof![Just(Kind::Join), Just(Kind::Message), Just(Kind::Message), Just(Kind::Leave)])
            .prop_map(|(server, kind)| Action::Lpdu { server, kind }),
        2 => any::<usize>().prop_map(|pick| Action::Replay { pick }),
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![6 => Just(End::Commit), 2 => Just(End::Crash), 1 => Just(End::Restart)]
}

/// What identifies an event across crashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Local(usize, u8),
    Lpdu(String),
}

/// The rules the machine must follow, over a `Vec`.
#[derive(Clone, Default)]
struct Model {
    list: Vec<Key>,
    /// Destinations of each event of `list`.
    dests: Vec<BTreeSet<ServerName>>,
    joined: [bool; 2],
}

impl Model {
    fn find(&self, key: &Key) -> Option<usize> {
        self.list.iter().position(|k| k == key)
    }

    fn append(&mut self, key: Key, dests: BTreeSet<ServerName>) -> usize {
        self.list.push(key);
        self.dests.push(dests);
        self.list.len() - 1
    }

    fn joined_servers(&self) -> BTreeSet<ServerName> {
        (0..2).filter(|s| self.joined[*s]).map(server).collect()
    }

    /// An LPDU of `kind` from `server`'s user, as the rules take it.
    fn take_lpdu(&mut self, key: Key, server_ix: usize, kind: Kind) -> Option<usize> {
        if let Some(i) = self.find(&key) {
            return Some(i);
        }
        let was_joined = self.joined[server_ix];
        match kind {
            Kind::Message | Kind::Leave if !was_joined => return None,
            Kind::Join => self.joined[server_ix] = true,
            Kind::Leave => self.joined[server_ix] = false,
            Kind::Message => {}
        }
        let mut dests = self.joined_servers();
        dests.insert(server(server_ix));
        Some(self.append(key, dests))
    }
}

fn server(i: usize) -> ServerName {
    ServerName::parse(REMOTES[i]).unwrap()
}

pub(super) fn key_of(server: &ServerName) -> SigningKey {
    let seed = [server.as_str().len() as u8 + server.as_str().as_bytes()[1]; 32];
    SigningKey::from_seed(server.clone(), KeyId::parse("ed25519:m").unwrap(), &seed).unwrap()
}

fn remote_user(i: usize) -> UserId {
    UserId::parse(&format!("@u:{}", REMOTES[i])).unwrap()
}

pub(super) fn draft(sender: &UserId, event_type: &str, state_key: Option<&str>, content: serde_json::Value) -> Draft {
    Draft {
        sender: sender.clone(),
        event_type: event_type.into(),
        state_key: state_key.map(str::to_owned),
        content: content.as_object().cloned().unwrap_or_default(),
        txn: None,
    }
}

/// What an answer should be: the event of this model index, or a refusal.
type Expected = Option<usize>;

struct Harness {
    store: Arc<dyn Store>,
    env: Env,
    machine: Machine,
    room: RoomId,
    next_position: u64,
    next_ticket: u64,
    now: i64,
    /// Stored list length once the room was set up.
    setup_len: usize,
    /// Every LPDU handed over so far: its server, kind and body.
    lpdus: Vec<(usize, Kind, Lpdu)>,
    model: Model,
}

impl Harness {
    fn new() -> Self {
        let store: Arc<dyn Store> = Arc::new(KvStore::new(MemKv::new()));
        let hub = ServerName::parse("hub.test").unwrap();
        let env = Env { key: key_of(&hub), timeline_cache: None };
        let room = RoomId::parse("!model:hub.test").unwrap();
        let version = RoomVersion::find(LM_VERSION).unwrap();
        let view = RoomView::empty(room.clone(), version, hub);
        let machine = Machine::new(env.clone(), Arc::new(MemReads(store.clone())), view);
        let mut h = Harness {
            store,
            env,
            machine,
            room,
            next_position: 1,
            next_ticket: 0,
            now: 1_700_000_000_000,
            setup_len: 0,
            lpdus: Vec::new(),
            model: Model::default(),
        };
        h.set_up();
        h
    }

    fn set_up(&mut self) {
        let alice = UserId::parse(LOCAL_USERS[0]).unwrap();
        let bob = UserId::parse(LOCAL_USERS[1]).unwrap();
        let mut create = json!({"room_version": LM_VERSION});
        if self.machine.view().version.auth.creator_in_content {
            create["creator"] = json!(alice.as_str());
        }
        let drafts = [
            draft(&alice, "m.room.create", Some(""), create),
            draft(&alice, "m.room.member", Some(alice.as_str()), json!({"membership": "join"})),
            draft(&alice, "m.room.join_rules", Some(""), json!({"join_rule": "public"})),
            draft(&bob, "m.room.member", Some(bob.as_str()), json!({"membership": "join"})),
        ];
        for d in drafts {
            let (mut out, ticket) = (self.effects(1), self.ticket());
            self.machine.handle(Input::Local { draft: d, ticket }, self.now, &mut out);
            assert!(out.answers_now.is_empty(), "set-up refused: {:?}", out.answers_now);
            self.commit(out);
        }
        self.setup_len = self.machine.view().length as usize;
    }

    fn ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        Ticket(self.next_ticket)
    }

    fn effects(&mut self, positions: u64) -> Effects {
        let first = self.next_position;
        self.next_position += positions;
        Effects::new(first..first + positions)
    }

    fn commit(&mut self, mut out: Effects) -> Effects {
        self.machine.end_batch(&mut out);
        let batch = std::mem::take(&mut out.batch);
        self.store.write(batch).unwrap();
        out
    }

    fn reload(&mut self) {
        let view = crate::room::load::load_view(&self.store, &self.room).unwrap().expect("the room is stored");
        self.machine = Machine::new(self.env.clone(), Arc::new(MemReads(self.store.clone())), view);
    }

    fn new_lpdu(&mut self, server_ix: usize, kind: Kind) -> Lpdu {
        let user = remote_user(server_ix);
        let n = self.lpdus.len();
        let d = match kind {
            Kind::Join => draft(&user, "m.room.member", Some(user.as_str()), json!({"membership": "join", "n": n})),
            Kind::Leave => draft(&user, "m.room.member", Some(user.as_str()), json!({"membership": "leave", "n": n})),
            Kind::Message => draft(&user, "m.room.message", None, json!({"msgtype": "m.text", "body": format!("{n}")})),
        };
        let lpdu = lpdu_from_draft(self.machine.view(), &key_of(&user.server_name()), &d, self.now).unwrap();
        self.lpdus.push((server_ix, kind, lpdu.clone()));
        lpdu
    }

    /// Runs one batch against the machine and the model.
    fn step(&mut self, actions: &[Action], end: End) {
        self.now += 1000;
        let mut model = self.model.clone();
        let mut inputs = Vec::new();
        let mut expected: HashMap<Ticket, Expected> = HashMap::new();
        for a in actions {
            let ticket = self.ticket();
            match *a {
                Action::Local { user, txn } => {
                    let sender = UserId::parse(LOCAL_USERS[user]).unwrap();
                    let body = json!({"msgtype": "m.text", "body": format!("local {user} {txn}")});
                    let mut d = draft(&sender, "m.room.message", None, body);
                    d.txn = Some(("DEV".into(), format!("t{txn}")));
                    let key = Key::Local(user, txn);
                    let dests = model.joined_servers();
                    let at = model.find(&key).unwrap_or_else(|| model.append(key, dests));
                    expected.insert(ticket, Some(at));
                    inputs.push(Input::Local { draft: d, ticket });
                }
                Action::Lpdu { server, kind } => {
                    let lpdu = self.new_lpdu(server, kind);
                    let at = model.take_lpdu(Key::Lpdu(lpdu.lpdu_hash().to_owned()), server, kind);
                    expected.insert(ticket, at);
                    inputs.push(Input::Lpdu { lpdu, with_state: false, ticket });
                }
                Action::Replay { pick } => {
                    if self.lpdus.is_empty() {
                        continue;
                    }
                    let (server, kind, lpdu) = self.lpdus[pick % self.lpdus.len()].clone();
                    let at = model.take_lpdu(Key::Lpdu(lpdu.lpdu_hash().to_owned()), server, kind);
                    expected.insert(ticket, at);
                    inputs.push(Input::Lpdu { lpdu, with_state: false, ticket });
                }
            }
        }
        let needed = inputs.iter().map(|i| self.machine.positions_needed(i)).sum();
        let mut out = self.effects(needed);
        for input in inputs {
            self.machine.handle(input, self.now, &mut out);
        }
        // Nothing is acknowledged before it is durable: what is answered at
        // once is a refusal, and one the model expects.
        for (ticket, answer) in &out.answers_now {
            assert!(answer.is_err(), "answered before the write: {answer:?}");
            assert_eq!(expected.remove(ticket), Some(None), "refused, the model takes it: {answer:?}");
        }
        match end {
            End::Crash => {
                self.reload();
                self.check_list();
                return;
            }
            End::Commit | End::Restart => {}
        }
        let out = self.commit(out);
        self.model = model;
        let ids = self.check_list();
        assert_eq!(out.answers.len(), expected.len(), "every input is answered once");
        for (ticket, answer) in out.answers {
            let want = expected.remove(&ticket).expect("an answer for an input");
            let got = match answer {
                Ok(Reply::Local(LocalDone::Sent(id))) => Some(id),
                Ok(Reply::Appended(a)) => Some(a.event_id),
                Ok(other) => panic!("unexpected answer {other:?}"),
                Err(e) => panic!("refused after the write: {e}"),
            };
            assert_eq!(got, want.map(|i| ids[i].clone()), "answer for {ticket:?}");
        }
        let view = self.machine.view();
        assert_eq!(view.length as usize, self.setup_len + self.model.list.len());
        assert_eq!(view.tail.as_ref(), ids.last().or(view.tail.as_ref()));
        if let End::Restart = end {
            self.reload();
        }
    }

    /// The stored list after set-up is the model's; returns its ids.
    fn check_list(&self) -> Vec<EventId> {
        let all = self.store.list(&self.room, 0, u64::MAX).unwrap();
        let record = self.store.room(&self.room).unwrap().unwrap();
        assert_eq!(record.length as usize, all.len());
        assert_eq!(self.machine.view().length as usize, all.len(), "the machine goes on from the store");
        let ids = all[self.setup_len..].to_vec();
        let keys: Vec<Key> = ids.iter().map(|id| self.key_of_stored(id)).collect();
        assert_eq!(keys, self.model.list, "the stored list is the model's");
        ids
    }

    fn key_of_stored(&self, id: &EventId) -> Key {
        let rec = self.store.event(id).unwrap().unwrap();
        let pdu = super::snapshot::pdu_from_record(self.machine.view().version, id, &rec).unwrap();
        if let Some(hash) = pdu.lpdu_hash() {
            return Key::Lpdu(hash.to_owned());
        }
        let body = pdu.content()["body"].as_str().unwrap().to_owned();
        let mut parts = body.split(' ').skip(1).map(|p| p.parse::<usize>().unwrap());
        Key::Local(parts.next().unwrap(), parts.next().unwrap() as u8)
    }

    /// Every destination's queue holds the model's events for it, in order.
    fn check_queues(&self) {
        let ids = self.store.list(&self.room, self.setup_len as u64, u64::MAX).unwrap();
        for s in 0..2 {
            let dest = server(s);
            let queued: Vec<EventId> = self
                .store
                .queue(&dest, 0, usize::MAX)
                .unwrap()
                .into_iter()
                .filter_map(|(_, item)| match item.item {
                    Some(queue_item::Item::EventId(id)) => EventId::parse(&id).ok(),
                    _ => None,
                })
                .collect();
            let want: Vec<EventId> = ids
                .iter()
                .zip(&self.model.dests)
                .filter(|(_, d)| d.contains(&dest))
                .map(|(id, _)| id.clone())
                .collect();
            assert_eq!(queued, want, "the queue of {dest}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_hub_machine_follows_the_model(
        steps in prop::collection::vec((prop::collection::vec(action(), 1..6), end()), 1..25)
    ) {
        let mut h = Harness::new();
        for (actions, end) in &steps {
            h.step(actions, *end);
        }
        h.check_queues();
    }
}

#[test]
fn a_retry_in_the_same_batch_is_one_event() {
    let mut h = Harness::new();
    let send = Action::Local { user: 0, txn: 1 };
    h.step(&[send.clone(), send.clone()], End::Commit);
    h.step(&[send], End::Commit);
    assert_eq!(h.model.list.len(), 1);
}

#[test]
fn a_crashed_batch_leaves_nothing_and_its_lpdu_can_come_again() {
    let mut h = Harness::new();
    h.step(&[Action::Lpdu { server: 0, kind: Kind::Join }], End::Crash);
    assert!(h.model.list.is_empty());
    h.step(&[Action::Replay { pick: 0 }], End::Commit);
    assert_eq!(h.model.list.len(), 1);
    h.step(&[Action::Replay { pick: 0 }, Action::Lpdu { server: 0, kind: Kind::Message }], End::Restart);
    assert_eq!(h.model.list.len(), 2, "the replay is the same event; the message is new");
    h.check_queues();
}

#[test]
fn refusals_are_answered_at_once() {
    let mut h = Harness::new();
    let mut out = h.effects(1);
    let lpdu = h.new_lpdu(1, Kind::Message);
    let ticket = h.ticket();
    h.machine.handle(Input::Lpdu { lpdu, with_state: false, ticket }, h.now, &mut out);
    assert!(matches!(out.answers_now.as_slice(), [(t, Err(RoomError::Forbidden(_)))] if *t == ticket));
    assert!(out.batch.is_empty(), "a refused LPDU writes nothing");
}
