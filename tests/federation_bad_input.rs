//! Bad input at the hub: request-level faults refuse the whole request,
//! event-level faults only their event, and the room goes on.

mod common;

use common::*;
use http::Method;
use lmx::core::crypto::SigningKey;
use lmx::core::event::{sign_lpdu, RoomVersion};
use lmx::core::ids::ServerName;
use lmx::core::json::Object;
use lmx::federation::{xmatrix, UNSTABLE};
use serde_json::{json, Value};

const HUB: &str = "hub.test:8448";

struct Setup {
    net: Net,
    hub: Server,
    p1: Server,
    bob: Client,
    room: String,
}

async fn setup() -> Setup {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test", "p2.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let p1 = Server::start(net.config("p1.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    Setup { net, hub, p1, bob, room }
}

fn lpdu(s: &Setup, sender: &str, ty: &str, state_key: Option<&str>, content: Value, key: &SigningKey) -> Object {
    let mut o = json!({
        "room_id": s.room, "type": ty, "sender": sender, "origin_server_ts": 1_700_000_000_000_i64,
        "hub_server": HUB, "content": content,
    })
    .as_object()
    .cloned()
    .unwrap();
    if let Some(k) = state_key {
        o.insert("state_key".into(), json!(k));
    }
    sign_lpdu(RoomVersion::lm(), key, &mut o).unwrap();
    o
}

/// PUT /send from p1 (properly signed) with `pdus`.
async fn send_as_p1(s: &Setup, txn: &str, pdus: Vec<Value>) -> Result<Value, lmx::federation::client::FedError> {
    let body = json!({ "pdus": pdus });
    let hub = ServerName::parse(HUB).unwrap();
    let path = format!("{UNSTABLE}/send/{txn}");
    let resp = s.p1.node().fed.request(&hub, Method::PUT, &path, Some(&body), true).await?;
    Ok(resp.json(HUB).unwrap())
}

fn lpdu_id(o: &Object) -> String {
    lmx::core::event::event_id(RoomVersion::lm(), o).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_level_faults_fail_only_their_event() {
    let s = setup().await;
    let p1_key = s.p1.node().key.clone();
    let bob = s.bob.user_id.clone();
    let before = s.hub.list(&s.room).len();

    // A forged signature: same key id, another key.
    let forger = SigningKey::from_seed(p1_key.server().clone(), p1_key.key_id().clone(), &[9; 32]).unwrap();
    let forged = lpdu(&s, &bob, "m.room.message", None, json!({"body": "forged"}), &forger);
    // A user of another server.
    let foreign = lpdu(&s, "@mallory:p2.test:8448", "m.room.message", None, json!({"body": "x"}), &p1_key);
    // Fails the auth rules: bob has level 0, power levels need 100.
    let unauthorised = lpdu(&s, &bob, "m.room.power_levels", Some(""), json!({"users": {bob.clone(): 100}}), &p1_key);
    // 65,537 bytes once the hub adds its fields.
    let mut big = lpdu(&s, &bob, "m.room.message", None, json!({"body": ""}), &p1_key);
    let size = serde_json::to_vec(&big).unwrap().len();
    big = lpdu(&s, &bob, "m.room.message", None, json!({"body": "x".repeat(65_537 - size)}), &p1_key);
    // Under the limit as an LPDU, over it once the hub adds its fields.
    let grows = lpdu(&s, &bob, "m.room.message", None, json!({"body": "y".repeat(65_500 - size)}), &p1_key);
    let good = lpdu(&s, &bob, "m.room.message", None, json!({"body": "fine"}), &p1_key);

    let pdus =
        [&forged, &foreign, &unauthorised, &big, &grows, &good].iter().map(|o| Value::Object((*o).clone())).collect();
    let answer = send_as_p1(&s, "mixed-1", pdus).await.unwrap();
    let failed = answer["failed_pdus"].as_object().unwrap();
    let reason = |o: &Object| failed.get(&lpdu_id(o)).map(|f| f["error"].as_str().unwrap().to_owned());
    assert!(reason(&forged).unwrap().contains("signature"), "{answer}");
    assert!(reason(&foreign).unwrap().contains("does not belong"), "{answer}");
    assert!(reason(&unauthorised).unwrap().contains("rule 7"), "{answer}");
    assert!(reason(&big).unwrap().contains("65537 bytes"), "{answer}");
    assert!(reason(&grows).unwrap().contains("too large"), "{answer}");
    assert_eq!(reason(&good), None, "the good event is accepted: {answer}");
    assert_eq!(failed.len(), 5);
    let after = s.hub.list(&s.room);
    assert_eq!(after.len(), before + 1, "only the good event was appended");

    // A replayed transaction gets the same answer and appends nothing.
    let again = send_as_p1(&s, "mixed-1", vec![Value::Object(good.clone())]).await.unwrap();
    assert_eq!(again, answer);
    // The same LPDU in a new transaction is not appended twice (OQ-43).
    let new_txn = send_as_p1(&s, "mixed-2", vec![Value::Object(good.clone())]).await.unwrap();
    assert_eq!(new_txn["failed_pdus"], json!({}));
    assert_eq!(s.hub.list(&s.room).len(), before + 1);

    // The room goes on.
    s.bob.send_ok(&s.room, "after", "still here").await;
    eventually("p1 to converge", || s.p1.list(&s.room).last() == s.hub.list(&s.room).last()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_level_faults_refuse_the_whole_transaction() {
    let s = setup().await;
    let p1_key = s.p1.node().key.clone();
    let bob = s.bob.user_id.clone();
    let before = s.hub.list(&s.room).len();

    // 51 PDUs: 400 M_BAD_JSON, nothing applied.
    let many: Vec<Value> = (0..51)
        .map(|i| Value::Object(lpdu(&s, &bob, "m.room.message", None, json!({"body": format!("m{i}")}), &p1_key)))
        .collect();
    let err = send_as_p1(&s, "too-many", many).await.unwrap_err();
    assert_eq!(err.status().map(|c| c.as_u16()), Some(400));
    assert_eq!(err.errcode().as_deref(), Some("M_BAD_JSON"));
    assert_eq!(s.hub.list(&s.room).len(), before);

    let path = format!("{UNSTABLE}/send/raw-1");
    let body = serde_json::to_vec(&json!({"pdus": []})).unwrap();
    let signed =
        |method: &str, path: &str, body: Option<&Value>| xmatrix::sign_request(&p1_key, method, path, HUB, body, true);
    // No X-Matrix header, or one for another destination: 401 M_FORBIDDEN.
    let none = raw_federation(&s.net, &s.hub, "PUT", &path, None, body.clone()).await;
    assert_eq!((none.status, none.body["errcode"].as_str()), (401, Some("M_FORBIDDEN")));
    let wrong = xmatrix::sign_request(&p1_key, "PUT", &path, "other.test", Some(&json!({"pdus": []})), true);
    let a = raw_federation(&s.net, &s.hub, "PUT", &path, Some(wrong), body.clone()).await;
    assert_eq!(a.status, 401);
    // A signature over another body.
    let a = raw_federation(
        &s.net,
        &s.hub,
        "PUT",
        &path,
        Some(signed("PUT", &path, Some(&json!({"pdus": [1]})))),
        body.clone(),
    )
    .await;
    assert_eq!(a.status, 401);
    // Not JSON: 400 M_NOT_JSON.
    let a = raw_federation(&s.net, &s.hub, "PUT", &path, Some(signed("PUT", &path, None)), b"{not json".to_vec()).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (400, Some("M_NOT_JSON")));
    // Over the 13,107,200-byte body limit: 413 M_TOO_LARGE.
    let huge = vec![b' '; 13_107_201];
    let a = raw_federation(&s.net, &s.hub, "PUT", &path, Some(signed("PUT", &path, None)), huge).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (413, Some("M_TOO_LARGE")));
    // Unknown endpoints and methods (items 123, 127).
    let a = raw_federation(&s.net, &s.hub, "GET", "/_matrix/federation/v9/nothing", None, vec![]).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")));
    let a = raw_federation(&s.net, &s.hub, "GET", &format!("{path}/"), None, vec![]).await;
    assert_eq!(a.status, 404);
    let a = raw_federation(&s.net, &s.hub, "POST", &path, None, vec![]).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (405, Some("M_UNRECOGNIZED")));
    // A properly signed empty transaction still works, and so does the room.
    let ok = raw_federation(&s.net, &s.hub, "PUT", &path, Some(signed("PUT", &path, Some(&json!({"pdus": []})))), body)
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    s.bob.send_ok(&s.room, "after", "still here").await;
    assert_eq!(s.hub.list(&s.room).len(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_flow_only_through_the_hub() {
    let s = setup().await;
    let p2 = Server::start(s.net.config("p2.test")).await;
    // The hub refuses PDUs for its own LM room: participants send LPDUs.
    let key = s.p1.node().key.clone();
    let mut pdu = lpdu(&s, &s.bob.user_id, "m.room.message", None, json!({"body": "x"}), &key);
    pdu.insert("auth_events".into(), json!([]));
    pdu.insert("prev_events".into(), json!(["$x"]));
    let answer = send_as_p1(&s, "pdu-to-hub", vec![Value::Object(pdu)]).await.unwrap();
    assert_eq!(answer["failed_pdus"].as_object().unwrap().len(), 1, "{answer}");
    // A participant drops room events that do not come from the hub
    // (OQ-21): a real hub event, relayed by another server, is ignored.
    let last = s.hub.list(&s.room).last().unwrap().clone();
    let rec = s.hub.node().store.event(&last).unwrap().unwrap();
    let event: Value = serde_json::from_slice(&rec.json).unwrap();
    let before = s.p1.list(&s.room).len();
    let p1_name = ServerName::parse(&s.p1.name()).unwrap();
    let resp = p2
        .node()
        .fed
        .request(&p1_name, Method::PUT, &format!("{UNSTABLE}/send/relay-1"), Some(&json!({"pdus": [event]})), true)
        .await
        .unwrap();
    assert_eq!(resp.json("p1").unwrap()["failed_pdus"], json!({}));
    assert_eq!(s.p1.list(&s.room).len(), before);
}

/// Keys a request may not be signed with: an id the server does not
/// publish, or a key whose validity has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_signed_with_unknown_or_expired_keys_are_refused() {
    let mut s = setup().await;
    let path = format!("{UNSTABLE}/send/keys-1");
    let body = json!({"pdus": []});
    let p1 = s.p1.node().key.clone();
    let unknown =
        SigningKey::from_seed(p1.server().clone(), lmx::core::ids::KeyId::parse("ed25519:nope").unwrap(), &[4; 32])
            .unwrap();
    let auth = xmatrix::sign_request(&unknown, "PUT", &path, HUB, Some(&body), true);
    let a = raw_federation(&s.net, &s.hub, "PUT", &path, Some(auth), body.to_string().into_bytes()).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (401, Some("M_FORBIDDEN")), "{}", a.body);

    // old.test's key is stored, but expired, and old.test cannot be reached
    // to fetch a fresh one.
    s.net.reserve("old.test");
    let old = SigningKey::from_seed(
        ServerName::parse("old.test:8448").unwrap(),
        lmx::core::ids::KeyId::parse("ed25519:o").unwrap(),
        &[6; 32],
    )
    .unwrap();
    let now = lmx::sys::now_ms();
    let mut o = Object::new();
    o.insert("server_name".into(), json!("old.test:8448"));
    o.insert("valid_until_ts".into(), json!(now - 60_000));
    o.insert("verify_keys".into(), json!({"ed25519:o": {"key": old.public_key().to_base64()}}));
    o.insert("old_verify_keys".into(), json!({}));
    old.sign_object(&mut o, lmx::core::json::Canonical::Matrix).unwrap();
    let mut b = lmx::store::Batch::new();
    b.push(lmx::store::Op::PutServerKeys {
        server: ServerName::parse("old.test:8448").unwrap(),
        keys: lmx::store::records::ServerKeys {
            response_json: serde_json::to_vec(&o).unwrap(),
            fetched_ts: now - 120_000,
            valid_until_ts: now - 60_000,
        },
    });
    s.hub.node().store.write(b).unwrap();
    let auth = xmatrix::sign_request(&old, "PUT", &path, HUB, Some(&body), true);
    let a = raw_federation(&s.net, &s.hub, "PUT", &path, Some(auth), body.to_string().into_bytes()).await;
    assert_eq!(a.status, 401, "an expired key authenticates nothing: {}", a.body);
}

/// Shapes and sizes no sender may use: ids over 255 bytes, 101 EDUs, deep
/// nesting, bytes that are not UTF-8; and signatures of uninvolved
/// servers, which are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_and_sizes_no_sender_may_use() {
    let s = setup().await;
    let key = s.p1.node().key.clone();
    let bob = s.bob.user_id.clone();
    let before = s.hub.list(&s.room).len();

    let long_type = lpdu(&s, &bob, &"t".repeat(256), None, json!({"body": "x"}), &key);
    let long_sender = lpdu(&s, &format!("@{}:p1.test:8448", "b".repeat(250)), "m.room.message", None, json!({}), &key);
    let mut extra = lpdu(&s, &bob, "m.room.message", None, json!({"body": "extra signatures"}), &key);
    extra["signatures"]
        .as_object_mut()
        .unwrap()
        .insert("other.test".into(), json!({"ed25519:x": "bm90IGEgc2lnbmF0dXJl"}));
    let pdus = [&long_type, &long_sender, &extra].iter().map(|o| Value::Object((*o).clone())).collect();
    let answer = send_as_p1(&s, "shapes-1", pdus).await.unwrap();
    let failed = answer["failed_pdus"].as_object().unwrap();
    assert!(failed.contains_key(&lpdu_id(&long_type)), "{answer}");
    assert!(failed.contains_key(&lpdu_id(&long_sender)), "{answer}");
    assert!(!failed.contains_key(&lpdu_id(&extra)), "other servers' signatures are ignored: {answer}");
    assert_eq!(s.hub.list(&s.room).len(), before + 1);

    let edus: Vec<Value> = (0..101).map(|_| json!({"edu_type": "m.typing", "content": {}})).collect();
    let hub = ServerName::parse(HUB).unwrap();
    let err =
        s.p1.node()
            .fed
            .request(&hub, Method::PUT, &format!("{UNSTABLE}/send/edus-1"), Some(&json!({"edus": edus})), true)
            .await
            .unwrap_err();
    assert_eq!((err.status().map(|c| c.as_u16()), err.errcode().as_deref()), (Some(400), Some("M_BAD_JSON")));
    // The envelope is typed: `pdus` that is not a list refuses the whole
    // transaction ...
    let err =
        s.p1.node()
            .fed
            .request(&hub, Method::PUT, &format!("{UNSTABLE}/send/shape-2"), Some(&json!({"pdus": {}})), true)
            .await
            .unwrap_err();
    assert_eq!((err.status().map(|c| c.as_u16()), err.errcode().as_deref()), (Some(400), Some("M_BAD_JSON")));
    // ... while one malformed PDU or EDU is refused or ignored on its own.
    let fine = lpdu(&s, &bob, "m.room.message", None, json!({"body": "beside malformed ones"}), &key);
    let body = json!({
        "pdus": [5, Value::Object(fine.clone())],
        "edus": [{"edu_type": "m.typing", "content": 7}, "not an EDU"],
    });
    let answer =
        s.p1.node()
            .fed
            .request(&hub, Method::PUT, &format!("{UNSTABLE}/send/shape-3"), Some(&body), true)
            .await
            .unwrap()
            .json(HUB)
            .unwrap();
    let failed = answer["failed_pdus"].as_object().unwrap();
    assert!(failed.contains_key("$unknown"), "{answer}");
    assert!(!failed.contains_key(&lpdu_id(&fine)), "{answer}");
    assert_eq!(s.hub.list(&s.room).len(), before + 2, "the well-formed LPDU was sequenced");

    let path = format!("{UNSTABLE}/send/raw-2");
    let signed = |body: Option<&Value>| xmatrix::sign_request(&key, "PUT", &path, HUB, body, true);
    let deep = format!("{{\"pdus\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let a = raw_federation(&s.net, &s.hub, "PUT", &path, Some(signed(None)), deep).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (400, Some("M_NOT_JSON")), "{}", a.body);
    let not_utf8 = b"{\"pdus\": [\"\xff\xfe\"]}".to_vec();
    let a = raw_federation(&s.net, &s.hub, "PUT", &path, Some(signed(None)), not_utf8).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (400, Some("M_NOT_JSON")), "{}", a.body);
    s.bob.send_ok(&s.room, "after-shapes", "still here").await;
}

/// One origin flooding the hub with transactions does not keep another
/// origin's from being processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flooding_origin_does_not_starve_another() {
    let s = setup().await;
    let p2 = Server::start(s.net.config("p2.test")).await;
    let carol = p2.client().register("carol").await;
    assert_eq!(carol.join(&s.room, HUB).await.status, 200);
    let key = s.p1.node().key.clone();
    let bob = s.bob.user_id.clone();
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let pdus = vec![Value::Object(lpdu(
                &s,
                &bob,
                "m.room.message",
                None,
                json!({"body": format!("flood {i}")}),
                &key,
            ))];
            let fed = s.p1.node().fed.clone();
            tokio::spawn(async move {
                let hub = ServerName::parse(HUB).unwrap();
                fed.request(
                    &hub,
                    Method::PUT,
                    &format!("{UNSTABLE}/send/flood-{i}"),
                    Some(&json!({"pdus": pdus})),
                    true,
                )
                .await
            })
        })
        .collect();
    let mine = carol.send_ok(&s.room, "during-flood", "carol gets through").await;
    let mut busy = 0;
    for f in flood {
        match f.await.unwrap() {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.errcode().as_deref(), Some("M_BAD_STATE"), "a flood is refused politely: {e}");
                busy += 1;
            }
        }
    }
    eprintln!("{busy} of 40 concurrent transactions from one origin were turned away with M_BAD_STATE");
    assert!(s.hub.list(&s.room).iter().any(|e| e.as_str() == mine));
}
