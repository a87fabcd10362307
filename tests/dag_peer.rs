//! An LM-version room with a DAG-capable LM peer (digest 11; OQ-35, OQ-49,
//! OQ-50): a server that implements the LM room version but keeps a DAG and
//! speaks Matrix's federation variants. No such server can be installed
//! here, so the peer is built in this test from lmx's core: its own keys
//! (its key response lacks `m.linearized`), its own signed events, a TLS
//! listener that records what the hub sends it.

mod common;
#[path = "common/mls.rs"]
mod mls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use lmx::core::crypto::SigningKey;
use lmx::core::event::{event_id, sign_event, RoomVersion};
use lmx::core::ids::{KeyId, ServerName};
use lmx::core::json::{Canonical, Object};
use lmx::federation::xmatrix;
use lmx::http::{Body, Handler};
use lmx::store::BoxFuture;
use serde_json::{json, Value};

const HUB: &str = "hub.test:8448";
const PEER: &str = "dag.test:8448";
const DAN: &str = "@dan:dag.test:8448";

/// A `/state` answer: the state events and their auth chain.
type StateAnswer = (Vec<Value>, Vec<Value>);

/// A request the peer received: method, path, `Authorization`, body.
type Seen = (String, String, Option<String>, Value);

/// The peer's listener: its key response (without `m.linearized`), a
/// record of every request the hub makes, and the events it can serve.
struct PeerServer {
    key: SigningKey,
    version: &'static RoomVersion,
    seen: Mutex<Vec<Seen>>,
    /// Events by id, for `/event` and `/event_auth`.
    events: Mutex<HashMap<String, Value>>,
    /// What `/get_missing_events` answers.
    missing: Mutex<Vec<Value>>,
    /// What `/state` answers, by event id.
    states: Mutex<HashMap<String, StateAnswer>>,
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

impl PeerServer {
    fn key_response(&self) -> Value {
        let mut o = Object::new();
        o.insert("server_name".into(), json!(PEER));
        o.insert("valid_until_ts".into(), json!(lmx::sys::now_ms() + 3_600_000));
        o.insert(
            "verify_keys".into(),
            json!({ self.key.key_id().as_str(): {"key": self.key.public_key().to_base64()} }),
        );
        o.insert("old_verify_keys".into(), json!({}));
        self.key.sign_object(&mut o, Canonical::Matrix).unwrap();
        Value::Object(o)
    }

    /// The auth chain of an event the peer holds, by walking `auth_events`.
    fn auth_chain(&self, id: &str) -> Vec<Value> {
        let events = self.events.lock().unwrap();
        let refs = |e: &Value| -> Vec<String> {
            e["auth_events"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
        };
        let mut todo = events.get(id).map(refs).unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        let mut chain = Vec::new();
        while let Some(a) = todo.pop() {
            if seen.insert(a.clone()) {
                if let Some(e) = events.get(&a) {
                    todo.extend(refs(e));
                    chain.push(e.clone());
                }
            }
        }
        chain
    }

    fn answer(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let not_found = (StatusCode::NOT_FOUND, json!({"errcode": "M_NOT_FOUND", "error": "not here"}));
        let fed = "/_matrix/federation/v1/";
        if path == "/_matrix/key/v2/server" {
            return (StatusCode::OK, self.key_response());
        }
        let Some(rest) = path.strip_prefix(fed) else { return not_found };
        if rest.starts_with("send/") {
            let ids: serde_json::Map<String, Value> = body["pdus"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_object())
                .filter_map(|p| event_id(self.version, p).ok())
                .map(|id| (id.to_string(), json!({})))
                .collect();
            (StatusCode::OK, json!({ "pdus": ids }))
        } else if rest.starts_with("get_missing_events/") {
            (StatusCode::OK, json!({ "events": *self.missing.lock().unwrap() }))
        } else if let Some(id) = rest.strip_prefix("event/") {
            match self.events.lock().unwrap().get(&percent_decode(id)) {
                Some(e) => (StatusCode::OK, json!({"origin": PEER, "origin_server_ts": 0, "pdus": [e]})),
                None => not_found,
            }
        } else if rest.starts_with("state/") {
            let at = percent_decode(rest.split("event_id=").nth(1).unwrap_or(""));
            match self.states.lock().unwrap().get(&at) {
                Some((state, chain)) => (StatusCode::OK, json!({"pdus": state, "auth_chain": chain})),
                None => not_found,
            }
        } else if rest.starts_with("event_auth/") {
            let id = percent_decode(rest.rsplit('/').next().unwrap_or(""));
            (StatusCode::OK, json!({ "auth_chain": self.auth_chain(&id) }))
        } else {
            not_found
        }
    }
}

impl Handler for PeerServer {
    fn handle(self: Arc<Self>, req: Request<Incoming>, _remote: SocketAddr) -> BoxFuture<'static, Response<Body>> {
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
            let auth = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (status, answer) = self.answer(&path, &body);
            self.seen.lock().unwrap().push((parts.method.to_string(), path, auth, body));
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(lmx::http::full(answer.to_string()))
                .unwrap()
        })
    }
}

struct Peer {
    key: SigningKey,
    server: Arc<PeerServer>,
    depth: std::sync::atomic::AtomicI64,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Peer {
    async fn start(net: &Net, version: &'static RoomVersion) -> Peer {
        let key =
            SigningKey::from_seed(ServerName::parse(PEER).unwrap(), KeyId::parse("ed25519:dag").unwrap(), &[7; 32])
                .unwrap();
        let server = Arc::new(PeerServer {
            key: key.clone(),
            version,
            seen: Mutex::new(Vec::new()),
            events: Mutex::new(HashMap::new()),
            missing: Mutex::new(Vec::new()),
            states: Mutex::new(HashMap::new()),
        });
        let (cert, tls_key) = net.ca.issue(&["dag.test"]);
        let tls = lmx::http::tls::ServerTls::load(&cert, &tls_key).unwrap();
        let listener = tokio::net::TcpListener::bind(net.resolve["dag.test"]).await.unwrap();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let limits = lmx::http::Limits::from(&lmx::config::Config::default().http);
        tokio::spawn(lmx::http::serve(listener, Some(tls), server.clone(), lmx::http::SharedLimits::new(limits), rx));
        Peer { key, server, depth: 1000.into(), _stop: tx }
    }

    fn version(&self) -> &'static RoomVersion {
        self.server.version
    }

    fn id(&self, e: &Object) -> String {
        event_id(self.version(), e).unwrap().to_string()
    }

    /// A signed Matrix-style request to the hub (bodyless ones sign no
    /// `content`, as Matrix servers do).
    async fn call(&self, net: &Net, hub: &Server, method: &str, path: &str, body: Option<Value>) -> Answer {
        let auth = xmatrix::sign_request(&self.key, method, path, HUB, body.as_ref(), false);
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        raw_federation(net, hub, method, path, Some(auth), bytes).await
    }

    /// The peer's own full event (no `hub_server`), signed by the peer and
    /// kept so it can serve it. `depth` only in Matrix versions.
    fn event(
        &self,
        room: &str,
        ty: &str,
        sk: Option<&str>,
        content: Value,
        prev: &[String],
        auth: &[String],
    ) -> Object {
        let mut o = json!({
            "room_id": room, "type": ty, "sender": DAN, "content": content,
            "origin_server_ts": lmx::sys::now_ms(), "prev_events": prev, "auth_events": auth,
        });
        if let Some(sk) = sk {
            o["state_key"] = json!(sk);
        }
        if !self.version().lm {
            o["depth"] = json!(self.depth.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        }
        let mut o = o.as_object().unwrap().clone();
        sign_event(self.version(), &self.key, &mut o).unwrap();
        self.keep(&o);
        o
    }

    /// Remembers an event so `/event` and `/event_auth` can serve it.
    fn keep(&self, e: &Object) {
        self.server.events.lock().unwrap().insert(self.id(e), Value::Object(e.clone()));
    }

    async fn send(&self, net: &Net, hub: &Server, pdu: &Object) -> Value {
        let txn = lmx::sys::random_string(10);
        let path = format!("/_matrix/federation/v1/send/{txn}");
        let body = json!({"origin": PEER, "origin_server_ts": lmx::sys::now_ms(), "pdus": [pdu]});
        let a = self.call(net, hub, "PUT", &path, Some(body)).await;
        assert_eq!(a.status, 200, "send: {}", a.body);
        a.body["pdus"][&self.id(pdu)].clone()
    }

    fn received(&self) -> Vec<Seen> {
        self.server.seen.lock().unwrap().clone()
    }

    /// Joins Dan through the hub's make_join (the template's prev and auth
    /// events, dropping an LM template's `hub_server`) and send_join v2.
    /// Returns the join event and the `send_join` answer.
    async fn join(&self, net: &Net, hub: &Server, room: &str) -> (Object, Value) {
        let v = self.version();
        let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver={}", enc(room), enc(DAN), enc(v.id));
        let made = self.call(net, hub, "GET", &path, None).await;
        assert_eq!(made.status, 200, "make_join: {}", made.body);
        assert_eq!(made.body["room_version"], v.id);
        let t = &made.body["event"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect()
        };
        let mut join = self.event(
            room,
            "m.room.member",
            Some(DAN),
            json!({"membership": "join"}),
            &strings(&t["prev_events"]),
            &strings(&t["auth_events"]),
        );
        if !v.lm {
            // A DAG server takes the template's depth.
            join.insert("depth".into(), t["depth"].clone());
            join.remove("hashes");
            join.remove("signatures");
            sign_event(v, &self.key, &mut join).unwrap();
            self.keep(&join);
        }
        let path = format!("/_matrix/federation/v2/send_join/{}/{}", enc(room), enc(&self.id(&join)));
        let joined = self.call(net, hub, "PUT", &path, Some(Value::Object(join.clone()))).await;
        assert_eq!(joined.status, 200, "send_join: {}", joined.body);
        for e in joined.body["state"].as_array().unwrap().iter().chain(joined.body["auth_chain"].as_array().unwrap()) {
            self.keep(e.as_object().unwrap());
        }
        (join, joined.body)
    }
}

fn state_id(v: &'static RoomVersion, state: &Value, ty: &str, key: &str) -> String {
    state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == ty && e["state_key"] == key)
        .map(|e| event_id(v, e.as_object().unwrap()).unwrap().to_string())
        .unwrap_or_else(|| panic!("no {ty} {key:?} in state"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dag_capable_lm_peer_takes_part_in_an_lm_room() {
    let mut net = Net::new();
    for h in ["hub.test", "part.test", "dag.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let part = Server::start(net.config("part.test")).await;
    let peer = Peer::start(&net, RoomVersion::lm()).await;
    let alice = hub.client().register("alice").await;
    let bob = part.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(join_ok(&bob, &room).await, 200);

    // make_join: the LM template (the peer drops `hub_server`, it builds its
    // own full event), then the Matrix send_join v2 with that event.
    let (join, joined) = peer.join(&net, &hub, &room).await;
    let join_id = peer.id(&join);
    let state = &joined["state"];
    assert!(state.as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));
    assert!(!joined["auth_chain"].as_array().unwrap().is_empty());
    assert_eq!(hub.list(&room).last().map(|e| e.to_string()), Some(join_id.clone()), "the join is the hub's tail");

    // The hub's events reach the peer through Matrix's v1 send, signed.
    let hello = alice.send_ok(&room, "h1", "hello dan").await;
    eventually("the peer to receive alice's message", || {
        peer.received().iter().any(|(m, p, auth, body)| {
            m == "PUT"
                && p.starts_with("/_matrix/federation/v1/send/")
                && auth.as_deref().is_some_and(|a| a.starts_with("X-Matrix"))
                && body["origin"] == HUB
                && body["pdus"].as_array().is_some_and(|ps| {
                    ps.iter().any(|p| event_id(RoomVersion::lm(), p.as_object().unwrap()).unwrap().as_str() == hello)
                })
        })
    })
    .await;
    assert!(
        !peer.received().iter().any(|(_, p, _, body)| p.contains("/send/")
            && body["pdus"].as_array().into_iter().flatten().any(|e| e["sender"] == DAN)),
        "the hub does not send the peer its own events"
    );

    // The peer's own message, on a prev event of its choosing: appended in
    // arrival order, relayed to the LM participant.
    let st = &state;
    let auth = vec![
        state_id(RoomVersion::lm(), st, "m.room.create", ""),
        state_id(RoomVersion::lm(), st, "m.room.power_levels", ""),
        join_id.clone(),
    ];
    let msg = peer.event(
        &room,
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "from a DAG"}),
        std::slice::from_ref(&hello),
        &auth,
    );
    let msg_id = event_id(RoomVersion::lm(), &msg).unwrap().to_string();
    assert_eq!(peer.send(&net, &hub, &msg).await, json!({}), "the hub takes the peer's event");
    // A fork: built on the join, not on the tail.
    let fork = peer.event(
        &room,
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "a fork"}),
        std::slice::from_ref(&join_id),
        &auth,
    );
    let fork_id = event_id(RoomVersion::lm(), &fork).unwrap().to_string();
    assert_eq!(peer.send(&net, &hub, &fork).await, json!({}));
    let seen = bob.sync_until(&room, |evs| bodies(evs).iter().any(|b| b == "a fork")).await;
    let b = bodies(&seen);
    let (i, j) = (b.iter().position(|x| x == "from a DAG"), b.iter().position(|x| x == "a fork"));
    assert!(i.is_some() && i < j, "the participant shows them in the hub's order: {b:?}");
    let list = hub.list(&room);
    assert_eq!(
        &list[list.len() - 2..].iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        &[msg_id.clone(), fork_id.clone()]
    );
    eventually("the participant to hold the hub's list", || part.list(&room).last() == hub.list(&room).last()).await;

    // Breaking the rules is refused: Dan (level 0) changes the power levels.
    let grab = peer.event(
        &room,
        "m.room.power_levels",
        Some(""),
        json!({"users": {DAN: 100}}),
        std::slice::from_ref(&fork_id),
        &auth,
    );
    let answer = peer.send(&net, &hub, &grab).await;
    assert!(answer["error"].is_string(), "a power grab is refused: {answer}");
    let grab_id = event_id(RoomVersion::lm(), &grab).unwrap().to_string();
    assert!(!hub.list(&room).iter().any(|e| e.as_str() == grab_id));

    // The Matrix read endpoints, in their DAG shapes.
    let ev = peer.call(&net, &hub, "GET", &format!("/_matrix/federation/v1/event/{}", enc(&msg_id)), None).await;
    assert_eq!(ev.status, 200, "{}", ev.body);
    assert_eq!(ev.body["origin"], HUB);
    assert_eq!(ev.body["pdus"][0]["content"]["body"], "from a DAG");
    let bf = peer
        .call(
            &net,
            &hub,
            "GET",
            &format!("/_matrix/federation/v1/backfill/{}?v={}&limit=3", enc(&room), enc(&fork_id)),
            None,
        )
        .await;
    assert_eq!(bf.status, 200, "{}", bf.body);
    let bf_ids: Vec<String> = bf.body["pdus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| event_id(RoomVersion::lm(), p.as_object().unwrap()).unwrap().to_string())
        .collect();
    assert_eq!(bf_ids[0], fork_id, "backfill starts at v");
    assert!(bf_ids.contains(&join_id), "and walks prev_events: {bf_ids:?}");
    let missing = peer
        .call(
            &net,
            &hub,
            "POST",
            &format!("/_matrix/federation/v1/get_missing_events/{}", enc(&room)),
            Some(json!({"earliest_events": [join_id], "latest_events": [msg_id], "limit": 10})),
        )
        .await;
    assert_eq!(missing.status, 200, "{}", missing.body);
    let between: Vec<Value> =
        missing.body["events"].as_array().unwrap().iter().map(|e| e["content"]["body"].clone()).collect();
    assert_eq!(between, vec![json!("hello dan")], "the events between, oldest first");
    let chain = peer
        .call(&net, &hub, "GET", &format!("/_matrix/federation/v1/event_auth/{}/{}", enc(&room), enc(&msg_id)), None)
        .await;
    assert_eq!(chain.status, 200, "{}", chain.body);
    assert!(chain.body["auth_chain"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));
    let ids = peer
        .call(
            &net,
            &hub,
            "GET",
            &format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(&room), enc(&msg_id)),
            None,
        )
        .await;
    assert_eq!(ids.status, 200, "{}", ids.body);
    assert!(
        ids.body["pdu_ids"].as_array().unwrap().iter().any(|e| e == &json!(join_id)),
        "Dan is in the state before his message"
    );
}

/// An MLS commit in a full PDU (digest 9.4): the hub soft-fails one that
/// breaks the group's rules (a PDU is not refused, item 111-112) and takes
/// one that keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dag_peers_commit_that_breaks_the_mls_rules_is_soft_failed() {
    use lmx::core::mls::ROOM_ALGORITHM;
    let mut net = Net::new();
    for h in ["hub.test", "part.test", "dag.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let part = Server::start(net.config("part.test")).await;
    let peer = Peer::start(&net, RoomVersion::lm()).await;
    let alice = hub.client().register("alice").await;
    let bob = part.client().register("bob").await;
    let create = json!({"preset": "public_chat", "creation_content": {"encryption": {"algorithm": ROOM_ALGORITHM}}});
    let room = alice.create_room(create).await;
    assert_eq!(join_ok(&bob, &room).await, 200);
    let (join, joined) = peer.join(&net, &hub, &room).await;
    let alice_device =
        alice.ok("GET", "/_matrix/client/v3/account/whoami", None).await["device_id"].as_str().unwrap().to_owned();
    let mut alice_d = mls::MlsDevice::new(&alice.user_id, &alice_device);
    let mut dan_d = mls::MlsDevice::new(DAN, "DAND");
    let commit = |content: &Value| {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.mls.commit/{}", enc(&room), lmx::sys::random_string(8));
        let alice = alice.clone();
        let content = content.clone();
        async move { alice.ok("PUT", &path, Some(content)).await["event_id"].as_str().unwrap().to_owned() }
    };
    let first = alice_d.create_group(&room);
    commit(&first).await;
    alice_d.accepted();
    let (add, welcome) = alice_d.add(&[dan_d.key_package(false, None).1]);
    commit(&add).await;
    alice_d.accepted();
    dan_d.join(&welcome);

    let st = &joined["state"];
    let auth = vec![
        state_id(RoomVersion::lm(), st, "m.room.create", ""),
        state_id(RoomVersion::lm(), st, "m.room.power_levels", ""),
        peer.id(&join),
    ];
    let tail = || vec![hub.list(&room).last().unwrap().to_string()];
    // The good commit below is built on what the participant also holds:
    // a soft-failed event is not relayed.
    let before_bad = tail();
    let soft_failed = |id: &str| {
        let id = lmx::core::ids::EventId::parse(id).unwrap();
        hub.node().store.event(&id).unwrap().unwrap().soft_failed
    };
    let stranger = mls::MlsDevice::new("@stranger:hub.test", "S");
    let mut bad_ids = Vec::new();
    let cases = [
        "removes a joined user's device",
        "adds a user who is not joined",
        "a PrivateMessage",
        "carries Alice's proposal",
    ];
    for case in cases {
        let content = match case {
            "removes a joined user's device" => dan_d.remove(&[dan_d.leaf_of(&alice.user_id, &alice_device).unwrap()]),
            "adds a user who is not joined" => dan_d.add(&[stranger.key_package(false, None).1]).0,
            "carries Alice's proposal" => {
                let proposal = alice_d.propose_add(&stranger.key_package(false, None).1);
                alice_d.forget_proposals();
                dan_d.take_proposal(&proposal);
                dan_d.commit_pending()
            }
            _ => {
                dan_d.encrypt_handshakes();
                let c = dan_d.self_update();
                dan_d.plain_handshakes();
                c
            }
        };
        let bad = peer.event(&room, "m.mls.commit", None, content, &tail(), &auth);
        assert_eq!(peer.send(&net, &hub, &bad).await, json!({}), "{case}: a PDU is taken, not refused");
        dan_d.refused();
        assert!(soft_failed(&peer.id(&bad)), "{case}: soft-failed");
        bad_ids.push(peer.id(&bad));
    }
    // Item 106 for a PDU: Dan, given the power to, turns on Megolm.
    let levels = json!({"users": {&alice.user_id: 100, DAN: 100}});
    let levels_id =
        alice.put_state(&room, "m.room.power_levels", "", levels).await.body["event_id"].as_str().unwrap().to_owned();
    let mut auth_now = auth.clone();
    auth_now[1] = levels_id;
    let megolm = json!({"algorithm": "m.megolm.v1.aes-sha2"});
    let encryption = peer.event(&room, "m.room.encryption", Some(""), megolm, &tail(), &auth_now);
    assert_eq!(peer.send(&net, &hub, &encryption).await, json!({}), "a PDU is taken, not refused");
    assert!(soft_failed(&peer.id(&encryption)), "an encryption change soft-fails");
    bad_ids.push(peer.id(&encryption));
    let update = dan_d.self_update();
    let good = peer.event(&room, "m.mls.commit", None, update, &before_bad, &auth);
    assert_eq!(peer.send(&net, &hub, &good).await, json!({}));
    let good_id = peer.id(&good);
    assert!(!soft_failed(&good_id), "an update keeps the rules");
    let seen = bob.sync_until(&room, |evs| evs.iter().any(|e| e["event_id"] == good_id)).await;
    assert!(seen.iter().any(|e| e["event_id"] == good_id), "the good commit reaches the participant");
    assert!(
        !seen.iter().any(|e| bad_ids.contains(&e["event_id"].as_str().unwrap().to_owned())),
        "soft-failed ones do not"
    );
    alice_d.process_commit(&seen.iter().find(|e| e["event_id"] == good_id).unwrap()["content"]);
}

async fn join_ok(c: &Client, room: &str) -> u16 {
    c.join(room, HUB).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_room_fetches_what_a_dag_server_leaves_out() {
    let mut net = Net::new();
    for h in ["hub.test", "part.test", "dag.test"] {
        net.reserve(h);
    }
    let v = RoomVersion::find("11").unwrap();
    let hub = Server::start(net.config("hub.test")).await;
    let part = Server::start(net.config("part.test")).await;
    let peer = Peer::start(&net, v).await;
    let alice = hub.client().register("alice").await;
    let bob = part.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat", "room_version": "11"})).await;
    assert_eq!(join_ok(&bob, &room).await, 200);
    let (join, joined) = peer.join(&net, &hub, &room).await;
    let join_id = peer.id(&join);
    let state = &joined["state"];
    let auth =
        vec![state_id(v, state, "m.room.create", ""), state_id(v, state, "m.room.power_levels", ""), join_id.clone()];
    let text = |body: &str, prev: &str| {
        peer.event(&room, "m.room.message", None, json!({"msgtype": "m.text", "body": body}), &[prev.to_owned()], &auth)
    };
    let asked = |what: &str| peer.received().iter().any(|(_, p, _, _)| p.contains(what));
    let in_list = |id: &str| hub.list(&room).iter().position(|e| e.as_str() == id);

    // Only the second of two events is sent: the first comes from the
    // peer's /get_missing_events.
    let e1 = text("one", &join_id);
    let e2 = text("two", &peer.id(&e1));
    *peer.server.missing.lock().unwrap() = vec![Value::Object(e1.clone())];
    assert_eq!(peer.send(&net, &hub, &e2).await, json!({}));
    assert!(asked("/get_missing_events/"), "the hub asked for the missing prev event");
    let (i1, i2) = (in_list(&peer.id(&e1)), in_list(&peer.id(&e2)));
    assert!(i1.is_some() && i1 < i2, "the fetched event comes first in the list");

    // A gap /get_missing_events leaves: the prev event and the state
    // before it come from /event and /state; it stays an outlier.
    peer.server.missing.lock().unwrap().clear();
    let e3 = text("three", &peer.id(&e2));
    let e4 = text("four", &peer.id(&e3));
    let mut state_events: Vec<Value> = state.as_array().unwrap().clone();
    state_events.push(Value::Object(join.clone()));
    let chain: Vec<Value> = joined["auth_chain"].as_array().unwrap().clone();
    peer.server.states.lock().unwrap().insert(peer.id(&e3), (state_events, chain));
    assert_eq!(peer.send(&net, &hub, &e4).await, json!({}));
    assert!(asked(&format!("/event/{}", enc(&peer.id(&e3)))) && asked("/state/"), "the gap was bridged");
    assert!(in_list(&peer.id(&e4)).is_some());
    assert!(in_list(&peer.id(&e3)).is_none(), "the bridged prev event is not in the list");
    let rec = hub.node().store.event(&lmx::core::ids::EventId::parse(&peer.id(&e3)).unwrap()).unwrap().unwrap();
    assert!(rec.outlier);

    // An auth event the hub never saw comes from /event_auth.
    let join_rules = state_id(v, state, "m.room.join_rules", "");
    let rename = peer.event(
        &room,
        "m.room.member",
        Some(DAN),
        json!({"membership": "join", "displayname": "Dan"}),
        &[peer.id(&e4)],
        &[auth[0].clone(), auth[1].clone(), join_id.clone(), join_rules],
    );
    let e6 = peer.event(
        &room,
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "six"}),
        &[peer.id(&e4)],
        &[auth[0].clone(), auth[1].clone(), peer.id(&rename)],
    );
    assert_eq!(peer.send(&net, &hub, &e6).await, json!({}));
    assert!(asked("/event_auth/"), "the hub asked for the auth chain");
    assert!(in_list(&peer.id(&e6)).is_some());

    // The participant shows what the hub took, in the hub's order, and
    // fetches what it lacks from the hub in turn.
    let seen = bob.sync_until(&room, |evs| bodies(evs).iter().any(|b| b == "six")).await;
    let b = bodies(&seen);
    let order: Vec<Option<usize>> =
        ["one", "two", "four", "six"].iter().map(|x| b.iter().position(|y| y == x)).collect();
    assert!(order.iter().all(Option::is_some) && order.windows(2).all(|w| w[0] < w[1]), "{b:?}");
    assert!(!b.iter().any(|x| x == "three"), "outliers are not shown: {b:?}");
    let a = alice.sync_until(&room, |evs| bodies(evs).iter().any(|b| b == "six")).await;
    assert!(!bodies(&a).iter().any(|x| x == "three"));
}
