//! The federation endpoints one by one (E2-E16), called the way peers call
//! them, plus gap filling and the account endpoints.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use http::Method;
use lmx::core::event::{sign_lpdu, RoomVersion, LM_VERSION};
use lmx::core::ids::{EventId, RoomId, ServerName};
use lmx::core::rooms::StateView;
use lmx::federation::UNSTABLE;
use serde_json::{json, Value};

const HUB: &str = "hub.test:8448";

async fn fed_get(from: &Server, to: &str, path: &str) -> Value {
    let to = ServerName::parse(to).unwrap();
    from.node().fed.request(&to, Method::GET, path, None, true).await.unwrap().json("peer").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_state_and_backfill() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat", "name": "n"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    for i in 0..5 {
        alice.send_ok(&room, &format!("m{i}"), &format!("m{i}")).await;
    }
    let list = hub.list(&room);
    let r = enc(&room);

    // E6: the bare event, as stored.
    let last = list.last().unwrap();
    let got = fed_get(&p1, HUB, &format!("{UNSTABLE}/event/{}", enc(last.as_str()))).await;
    assert_eq!(got["content"]["body"], "m4");
    let stable = fed_get(&p1, HUB, &format!("/_matrix/federation/v2/event/{}", enc(last.as_str()))).await;
    assert_eq!(got, stable);

    // E8/E7: the state before the last event, with its auth chain.
    let ids = fed_get(&p1, HUB, &format!("/_matrix/federation/v1/state_ids/{r}?event_id={}", enc(last.as_str()))).await;
    let pdu_ids: Vec<&str> = ids["pdu_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let view = hub.node().rooms.get(&RoomId::parse(&room).unwrap()).unwrap().view();
    let create = view.state.create().unwrap().event_id().to_string();
    assert!(pdu_ids.contains(&create.as_str()));
    assert_eq!(pdu_ids.len(), view.state.len(), "no state changed in the last event");
    assert!(ids["auth_chain_ids"].as_array().unwrap().iter().any(|v| v == &json!(create)));
    let state = fed_get(&p1, HUB, &format!("/_matrix/federation/v1/state/{r}?event_id={}", enc(last.as_str()))).await;
    assert_eq!(state["pdus"].as_array().unwrap().len(), pdu_ids.len());

    // E9: oldest first, `v` last, at most `limit`.
    let page = fed_get(&p1, HUB, &format!("{UNSTABLE}/backfill/{r}?v={}&limit=3", enc(last.as_str()))).await;
    let got: Vec<EventId> = page["pdus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| lmx::core::event::event_id(RoomVersion::lm(), p.as_object().unwrap()).unwrap())
        .collect();
    assert_eq!(got, list[list.len() - 3..].to_vec());
    let from_create = fed_get(&p1, HUB, &format!("{UNSTABLE}/backfill/{r}?v={}&limit=5", enc(&create))).await;
    assert_eq!(from_create["pdus"].as_array().unwrap().len(), 1, "OQ-22: the create event itself");

    // A participant is not the hub: 400 M_WRONG_SERVER (item 179).
    let p1_name = ServerName::parse(&p1.name()).unwrap();
    let err = hub
        .node()
        .fed
        .request(&p1_name, Method::GET, &format!("/_matrix/federation/v1/state_ids/{r}?event_id=$x"), None, true)
        .await
        .unwrap_err();
    assert_eq!(err.errcode().as_deref(), Some("M_WRONG_SERVER"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notary_and_keys() {
    let (_net, _hub, p1) = hub_and_p1().await;
    let own = fed_get(&p1, HUB, "/_matrix/key/v2/server").await;
    assert_eq!(own["server_name"], HUB);
    assert_eq!(own["m.linearized"], true);
    // E3: the hub vouches for p1's keys with its own signature.
    let q = fed_get(&p1, HUB, &format!("/_matrix/key/v2/query/{}", enc(&p1.name()))).await;
    let keys = q["server_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0]["signatures"][HUB].is_object() && keys[0]["signatures"][p1.name()].is_object());
    // E4 with an unreachable server: nothing, not an error.
    let hub_name = ServerName::parse(HUB).unwrap();
    let body = json!({"server_keys": {"nowhere.test:1": {}}});
    let resp =
        p1.node().fed.request(&hub_name, Method::POST, "/_matrix/key/v2/query", Some(&body), true).await.unwrap();
    assert_eq!(resp.json("hub").unwrap(), json!({"server_keys": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knock_and_invite_rejection_handshakes() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let knock_rules =
        json!({"initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]});
    let room = alice.create_room(knock_rules).await;
    let r = enc(&room);
    let b = enc(&bob.user_id);
    // E15/E16: make_knock then send_knock with the signed LPDU.
    let tmpl = fed_get(&p1, HUB, &format!("/_matrix/federation/v1/make_knock/{r}/{b}?ver={}", enc(LM_VERSION))).await;
    assert_eq!(tmpl["room_version"], LM_VERSION);
    assert_eq!(tmpl["event"]["content"]["membership"], "knock");
    let mut lpdu = json!({
        "room_id": room, "type": "m.room.member", "state_key": bob.user_id, "sender": bob.user_id,
        "origin_server_ts": 1_700_000_000_000_i64, "hub_server": HUB, "content": {"membership": "knock"},
    })
    .as_object()
    .cloned()
    .unwrap();
    sign_lpdu(RoomVersion::lm(), &p1.node().key, &mut lpdu).unwrap();
    let hub_name = ServerName::parse(HUB).unwrap();
    let answer = p1
        .node()
        .fed
        .request(&hub_name, Method::POST, &format!("{UNSTABLE}/send_knock/k1"), Some(&Value::Object(lpdu)), true)
        .await
        .unwrap()
        .json("hub")
        .unwrap();
    assert!(answer["stripped_state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.join_rules"));
    let room_id = RoomId::parse(&room).unwrap();
    let membership = |user: &str| hub.node().rooms.get(&room_id).unwrap().view().state.membership(user).to_owned();
    assert_eq!(membership(&bob.user_id), "knock");
    // make_join for a version the caller lacks: 400 M_INCOMPATIBLE_ROOM_VERSION.
    let err = p1
        .node()
        .fed
        .request(&hub_name, Method::GET, &format!("/_matrix/federation/v1/make_join/{r}/{b}?ver=11"), None, true)
        .await
        .unwrap_err();
    assert_eq!(err.errcode().as_deref(), Some("M_INCOMPATIBLE_ROOM_VERSION"));
    // A user of another server: 403.
    let other = enc("@eve:hub.test:8448");
    let err = p1
        .node()
        .fed
        .request(
            &hub_name,
            Method::GET,
            &format!("/_matrix/federation/v1/make_join/{r}/{other}?ver={}", enc(LM_VERSION)),
            None,
            true,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403));

    // Accepting a knock is an invite; rejecting an invite is make_leave +
    // send_leave (E11/E12) from a server that does not take part.
    alice.invite(&room, &bob.user_id).await;
    let left = bob.call("POST", &format!("/_matrix/client/v3/rooms/{r}/leave"), Some(json!({}))).await;
    assert_eq!(left.status, 200, "{}", left.body);
    assert_eq!(membership(&bob.user_id), "leave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_fills_a_gap_from_the_hub() {
    let (_net, hub, mut p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    p1.stop().await;
    for i in 0..5 {
        alice.send_ok(&room, &format!("lost{i}"), &format!("lost {i}")).await;
    }
    // Lose what the hub queued for p1, as if delivery had skipped it.
    hub.drop_queue_for("p1.test:8448");
    p1.restart().await;
    alice.send_ok(&room, "next", "next").await;
    eventually("p1 to fill the gap", || p1.list(&room).last() == hub.list(&room).last()).await;
    let hub_list = hub.list(&room);
    let p1_list = p1.list(&room);
    assert!(hub_list.ends_with(&p1_list));
    assert!(p1_list.len() >= 7, "join, five backfilled events and the new one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_tokens_and_shared_secret_registration() {
    let (_net, hub, _p1) = hub_and_p1().await;
    let c = hub.client();
    // Without a token.
    let a = c.call("GET", "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")));
    let mut bad = hub.client();
    bad.token = Some("nope".into());
    let a = bad.call("GET", "/_matrix/client/v3/sync", None).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")));
    // The user-interactive exchange of open registration.
    let a =
        c.call("POST", "/_matrix/client/v3/register", Some(json!({"username": "x", "password": "long-enough"}))).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.body["flows"][0]["stages"][0], "m.login.dummy");
    // Synapse-style shared-secret registration.
    let nonce = c.ok("GET", "/_synapse/admin/v1/register", None).await["nonce"].as_str().unwrap().to_owned();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"test-secret").unwrap();
    mac.update(format!("{nonce}\0admin1\0pw-1\0admin").as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let body = json!({"nonce": nonce, "username": "admin1", "password": "pw-1", "admin": true, "mac": hex});
    let r = c.ok("POST", "/_synapse/admin/v1/register", Some(body.clone())).await;
    assert_eq!(r["user_id"], "@admin1:hub.test:8448");
    // A nonce works once.
    let again = c.call("POST", "/_synapse/admin/v1/register", Some(body)).await;
    assert_eq!(again.status, 400);
    // Password login, then logout invalidates the token.
    let login =
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "admin1"}, "password": "pw-1"});
    let l = c.ok("POST", "/_matrix/client/v3/login", Some(login)).await;
    let mut me = hub.client();
    me.token = l["access_token"].as_str().map(str::to_owned);
    assert_eq!(me.ok("GET", "/_matrix/client/v3/account/whoami", None).await["user_id"], "@admin1:hub.test:8448");
    me.ok("POST", "/_matrix/client/v3/logout", Some(json!({}))).await;
    assert_eq!(me.call("GET", "/_matrix/client/v3/account/whoami", None).await.status, 401);
    let wrong = json!({"type": "m.login.password", "user": "admin1", "password": "nope"});
    assert_eq!(c.call("POST", "/_matrix/client/v3/login", Some(wrong)).await.status, 403);
}
