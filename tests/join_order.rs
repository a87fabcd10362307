//! A `send_join` answer replays in array order under the auth rules: a
//! joining server that folds `state` front to back with an auth check on
//! each event (the LM reference implementation does) accepts every one of
//! them, and `auth_chain` names no event before its own auth events.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::proxy::{Mode, ProxiedPair, Through};
use common::*;
use lmx::core::event::{Pdu, RoomVersion, Schema};
use lmx::core::rooms::{authorize, replay_order, Place, StateMap};
use serde_json::{json, Value};

const HUB: &str = "hub.test:8448";

fn pdus(version: &'static RoomVersion, answer: &Value, key: &str) -> Vec<Pdu> {
    let items = answer[key].as_array().unwrap_or_else(|| panic!("no {key} in {answer}"));
    items.iter().map(|v| Pdu::from_object(version, v.as_object().unwrap().clone(), Schema::Full).unwrap()).collect()
}

/// Folds `events` in array order, checking each against what came before.
fn replay(events: &[Pdu]) -> Result<(), String> {
    let mut state = StateMap::new();
    for e in events {
        authorize(e, &state).map_err(|err| format!("{} {:?}: {err}", e.event_type(), e.state_key()))?;
        state.apply(Arc::new(e.clone()));
    }
    Ok(())
}

fn auth_events_come_first(events: &[Pdu]) -> Result<(), String> {
    let all: HashSet<_> = events.iter().map(|e| e.event_id().clone()).collect();
    let mut seen = HashSet::new();
    for e in events {
        for a in e.auth_events() {
            if all.contains(a) && !seen.contains(a) {
                return Err(format!("{} comes before its auth event {a}", e.event_id()));
            }
        }
        seen.insert(e.event_id().clone());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_join_answer_replays_in_array_order() {
    let ProxiedPair { net: _net, proxy, hub, p1 } = ProxiedPair::start(Through::P1ToHub, |_| {}).await;
    let alice = hub.client().register("alice").await;
    let carol = hub.client().register("carol").await;
    let bob = p1.client().register("bob").await;

    // A room whose current state was set at many points of its list, and
    // whose later events need earlier ones (carol's topic needs the power
    // levels that made her a moderator).
    let room = alice.create_room(json!({"preset": "public_chat", "name": "first"})).await;
    assert_eq!(carol.join(&room, HUB).await.status, 200);
    let pl =
        alice.ok("GET", &format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&room)), None).await;
    let mut pl = pl.clone();
    pl["users"][carol.user_id.as_str()] = json!(50);
    pl["state_default"] = json!(50);
    assert_eq!(alice.put_state(&room, "m.room.power_levels", "", pl).await.status, 200);
    assert_eq!(carol.put_state(&room, "m.room.topic", "", json!({"topic": "by carol"})).await.status, 200);
    assert_eq!(alice.put_state(&room, "m.room.name", "", json!({"name": "second"})).await.status, 200);
    for i in 0..5 {
        let key = format!("k{i}");
        assert_eq!(carol.put_state(&room, "org.example.slot", &key, json!({"n": i})).await.status, 200);
    }

    let captured: Arc<Mutex<Option<Value>>> = Arc::default();
    let keep = captured.clone();
    proxy.set(Mode::Rewrite(Arc::new(move |path: &str, answer: &mut Value| {
        if path.contains("send_join") {
            *keep.lock().unwrap() = Some(answer.clone());
        }
    })));
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    let answer = captured.lock().unwrap().take().expect("the proxy saw the send_join answer");

    let version = RoomVersion::find(lmx::core::event::LM_VERSION).unwrap();
    let state = pdus(version, &answer, "state");
    let chain = pdus(version, &answer, "auth_chain");
    assert!(state.len() >= 10, "the room has a rich state: {}", state.len());
    assert_eq!(state[0].event_type(), "m.room.create", "m.room.create comes first");
    replay(&state).expect("every state event passes the rules where it stands");
    auth_events_come_first(&state).unwrap();
    auth_events_come_first(&chain).unwrap();
    replay(&chain).expect("the auth chain replays too");
    // The join itself passes against the replayed state.
    let join = Pdu::from_object(version, answer["event"].as_object().unwrap().clone(), Schema::Full).unwrap();
    let folded = StateMap::from_events(state.iter().cloned().map(Arc::new));
    authorize(&join, &folded).expect("the join passes against the state as sent");
}

/// Without any list positions the order still puts auth events first, and
/// is the same whatever order the events came in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_order_is_deterministic_and_auth_first() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let hub = Server::start(net.config("hub.test")).await;
    let alice = hub.client().register("alice").await;
    let room = alice.create_room(json!({"preset": "public_chat", "name": "n", "topic": "t"})).await;
    alice.send_ok(&room, "1", "hello").await;
    let node = hub.node();
    let version = RoomVersion::find(lmx::core::event::LM_VERSION).unwrap();
    let events: Vec<Arc<Pdu>> = hub
        .list(&room)
        .iter()
        .map(|id| lmx::room::load::load_pdu(&node.store, version, id).unwrap().unwrap())
        .collect();
    let forward = replay_order(events.clone(), Place::unlisted);
    let mut reversed = events.clone();
    reversed.reverse();
    let backward = replay_order(reversed, Place::unlisted);
    let ids = |v: &[Arc<Pdu>]| v.iter().map(|e| e.event_id().clone()).collect::<Vec<_>>();
    assert_eq!(ids(&forward), ids(&backward), "input order does not matter");
    assert_eq!(forward.len(), events.len());
    let plain: Vec<Pdu> = forward.iter().map(|e| (**e).clone()).collect();
    auth_events_come_first(&plain).unwrap();
    assert_eq!(plain[0].event_type(), "m.room.create");
}
