//! Account changes through the HTTP API: password changes, deactivation,
//! refresh tokens, login tokens, registration tokens and third-party ids.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn password_auth(user: &str, password: &str) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})
}

async fn login(server: &Server, user: &str, password: &str, extra: Value) -> Answer {
    let mut body = password_auth(user, password);
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    server.client().call("POST", "/_matrix/client/v3/login", Some(body)).await
}

fn with_token(server: &Server, token: &str) -> Client {
    let mut c = server.client();
    c.token = Some(token.to_owned());
    c
}

fn code(a: &Answer) -> (u16, &str) {
    (a.status, a.body["errcode"].as_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_needs_the_old_one_and_signs_other_devices_out() {
    let (_net, hub) = hub_with(|_| {}).await;
    let alice = hub.client().register("alice").await;
    let second = login(&hub, "alice", "secret-pw", json!({})).await;
    let second = with_token(&hub, second.body["access_token"].as_str().unwrap());

    let path = "/_matrix/client/v3/account/password";
    let first = alice.call("POST", path, Some(json!({"new_password": "a-new-password"}))).await;
    assert_eq!(first.status, 401);
    assert_eq!(first.body["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = first.body["session"].as_str().unwrap();
    let auth =
        |pw: &str| json!({"type": "m.login.password", "user": alice.user_id, "password": pw, "session": session});
    let wrong = alice.call("POST", path, Some(json!({"new_password": "a-new-password", "auth": auth("nope")}))).await;
    assert_eq!(code(&wrong), (401, "M_FORBIDDEN"));
    let weak = alice.call("POST", path, Some(json!({"new_password": "short", "auth": auth("secret-pw")}))).await;
    assert_eq!(code(&weak), (400, "M_WEAK_PASSWORD"));
    alice.ok("POST", path, Some(json!({"new_password": "a-new-password", "auth": auth("secret-pw")}))).await;

    let whoami = "/_matrix/client/v3/account/whoami";
    assert_eq!(code(&second.call("GET", whoami, None).await), (401, "M_UNKNOWN_TOKEN"), "signed out");
    alice.ok("GET", whoami, None).await;
    assert_eq!(code(&login(&hub, "alice", "secret-pw", json!({})).await), (403, "M_FORBIDDEN"));
    let third = login(&hub, "alice", "a-new-password", json!({})).await;
    assert_eq!(third.status, 200);
    let third = with_token(&hub, third.body["access_token"].as_str().unwrap());

    // Asked not to, the change leaves other devices signed in.
    let auth = json!({"type": "m.login.password", "user": alice.user_id, "password": "a-new-password"});
    let body = json!({"new_password": "third-password", "logout_devices": false, "auth": auth});
    alice.ok("POST", path, Some(body)).await;
    third.ok("GET", whoami, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_account_leaves_its_rooms_and_cannot_come_back() {
    let (_net, hub) = hub_with(|_| {}).await;
    let alice = hub.client().register("alice").await;
    let bob = hub.client().register("bob").await;
    let room = bob.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(alice.join(&room, &hub.name()).await.status, 200);
    let other = bob.create_room(json!({})).await;
    bob.invite(&other, &alice.user_id).await;

    let path = "/_matrix/client/v3/account/deactivate";
    assert_eq!(alice.call("POST", path, Some(json!({}))).await.status, 401);
    let auth = json!({"type": "m.login.password", "user": alice.user_id, "password": "secret-pw"});
    let done = alice.ok("POST", path, Some(json!({"auth": auth}))).await;
    assert_eq!(done["id_server_unbind_result"], "no-support");

    let members = bob.ok("GET", &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)), None).await;
    assert!(members["joined"].get(&alice.user_id).is_none(), "alice left: {members}");
    let invited = bob.ok("GET", &format!("/_matrix/client/v3/rooms/{}/members", enc(&other)), None).await;
    let alice_member = invited["chunk"].as_array().unwrap().iter().find(|e| e["state_key"] == alice.user_id).cloned();
    assert_eq!(alice_member.unwrap()["content"]["membership"], "leave", "the invite was declined");

    assert_eq!(code(&alice.call("GET", "/_matrix/client/v3/account/whoami", None).await), (401, "M_UNKNOWN_TOKEN"));
    assert_eq!(code(&login(&hub, "alice", "secret-pw", json!({})).await), (403, "M_USER_DEACTIVATED"));
    let again = json!({"username": "alice", "password": "secret-pw", "auth": {"type": "m.login.dummy"}});
    assert_eq!(
        code(&hub.client().call("POST", "/_matrix/client/v3/register", Some(again)).await),
        (400, "M_USER_IN_USE")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_renew_expiring_access_tokens() {
    let (_net, hub) = hub_with(|c| c.client.refreshable_token_lifetime_ms = 1_500).await;
    hub.client().register("alice").await;
    let plain = login(&hub, "alice", "secret-pw", json!({})).await;
    assert!(plain.body.get("refresh_token").is_none() && plain.body.get("expires_in_ms").is_none());
    let first = login(&hub, "alice", "secret-pw", json!({"refresh_token": true})).await;
    assert_eq!(first.body["expires_in_ms"], 1_500);
    let device = first.body["device_id"].clone();
    let alice = with_token(&hub, first.body["access_token"].as_str().unwrap());
    let whoami = "/_matrix/client/v3/account/whoami";
    alice.ok("GET", whoami, None).await;
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let expired = alice.call("GET", whoami, None).await;
    assert_eq!((code(&expired), &expired.body["soft_logout"]), ((401, "M_UNKNOWN_TOKEN"), &json!(true)));

    let old_refresh = first.body["refresh_token"].clone();
    let renewed = alice.ok("POST", "/_matrix/client/v3/refresh", Some(json!({"refresh_token": old_refresh}))).await;
    assert_eq!(renewed["expires_in_ms"], 1_500);
    let alice = with_token(&hub, renewed["access_token"].as_str().unwrap());
    assert_eq!(alice.ok("GET", whoami, None).await["device_id"], device, "the same device");
    let reused =
        hub.client().call("POST", "/_matrix/client/v3/refresh", Some(json!({"refresh_token": old_refresh}))).await;
    assert_eq!(code(&reused), (401, "M_UNKNOWN_TOKEN"), "a refresh token works once");

    alice.ok("POST", "/_matrix/client/v3/logout", Some(json!({}))).await;
    let after = json!({"refresh_token": renewed["refresh_token"]});
    let after = hub.client().call("POST", "/_matrix/client/v3/refresh", Some(after)).await;
    assert_eq!(code(&after), (401, "M_UNKNOWN_TOKEN"), "logging out ends the refresh token too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_token_signs_in_one_more_device_once() {
    let (_net, hub) = hub_with(|_| {}).await;
    let alice = hub.client().register("alice").await;
    let flows = hub.client().ok("GET", "/_matrix/client/v3/login", None).await;
    assert!(flows["flows"].as_array().unwrap().iter().any(|f| f["type"] == "m.login.token"));
    let path = "/_matrix/client/v1/login/get_token";
    assert_eq!(alice.call("POST", path, Some(json!({}))).await.status, 401);
    let auth = json!({"type": "m.login.password", "user": alice.user_id, "password": "secret-pw"});
    let got = alice.ok("POST", path, Some(json!({"auth": auth}))).await;
    let token = got["login_token"].as_str().unwrap();
    let body = json!({"type": "m.login.token", "token": token});
    let signed_in = hub.client().call("POST", "/_matrix/client/v3/login", Some(body.clone())).await;
    assert_eq!((signed_in.status, &signed_in.body["user_id"]), (200, &json!(alice.user_id)));
    assert_ne!(signed_in.body["device_id"], json!(alice.device_id().await));
    assert_eq!(code(&hub.client().call("POST", "/_matrix/client/v3/login", Some(body)).await), (403, "M_FORBIDDEN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_tokens_are_made_by_admins_and_used_up() {
    let (_net, hub) = hub_with(|c| c.registration.requires_token = true).await;
    // An admin, made the way register_new_matrix_user would.
    let admin = {
        let c = hub.client();
        let nonce = c.ok("GET", "/_synapse/admin/v1/register", None).await["nonce"].as_str().unwrap().to_owned();
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"test-secret").unwrap();
        mac.update(format!("{nonce}\0root\0root-password\0admin").as_bytes());
        let mac: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let body = json!({"nonce": nonce, "username": "root", "password": "root-password", "mac": mac, "admin": true});
        let r = c.ok("POST", "/_synapse/admin/v1/register", Some(body)).await;
        with_token(&hub, r["access_token"].as_str().unwrap())
    };
    let made = admin
        .ok("POST", "/_synapse/admin/v1/registration_tokens/new", Some(json!({"token": "letmein", "uses_allowed": 1})))
        .await;
    assert_eq!((&made["token"], &made["uses_allowed"], &made["completed"]), (&json!("letmein"), &json!(1), &json!(0)));

    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity?token=letmein";
    assert_eq!(hub.client().ok("GET", validity, None).await["valid"], true);
    let register = |auth: Value, name: &str| json!({"username": name, "password": "secret-pw", "auth": auth});
    let first = hub.client().call("POST", "/_matrix/client/v3/register", Some(register(json!(null), "carol"))).await;
    assert_eq!(first.status, 401);
    assert_eq!(first.body["flows"], json!([{"stages": ["m.login.registration_token"]}]));
    let dummy = hub
        .client()
        .call("POST", "/_matrix/client/v3/register", Some(register(json!({"type": "m.login.dummy"}), "carol")))
        .await;
    assert_eq!(dummy.status, 401, "the dummy stage is not enough");
    let auth = |t: &str| json!({"type": "m.login.registration_token", "token": t, "session": first.body["session"]});
    let wrong = hub.client().call("POST", "/_matrix/client/v3/register", Some(register(auth("guess"), "carol"))).await;
    assert_eq!(code(&wrong), (401, "M_FORBIDDEN"));
    let ok = hub.client().call("POST", "/_matrix/client/v3/register", Some(register(auth("letmein"), "carol"))).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(hub.client().ok("GET", validity, None).await["valid"], false, "used up");
    let twice = hub.client().call("POST", "/_matrix/client/v3/register", Some(register(auth("letmein"), "dave"))).await;
    assert_eq!(code(&twice), (401, "M_FORBIDDEN"));

    let listed = admin.ok("GET", "/_synapse/admin/v1/registration_tokens", None).await;
    assert_eq!(listed["registration_tokens"][0]["completed"], 1);
    let carol = with_token(&hub, ok.body["access_token"].as_str().unwrap());
    let denied = carol.call("GET", "/_synapse/admin/v1/registration_tokens", None).await;
    assert_eq!(code(&denied), (403, "M_FORBIDDEN"));
    admin.ok("PUT", "/_synapse/admin/v1/registration_tokens/letmein", Some(json!({"uses_allowed": null}))).await;
    assert_eq!(hub.client().ok("GET", validity, None).await["valid"], true, "no limit any more");
    admin.ok("DELETE", "/_synapse/admin/v1/registration_tokens/letmein", None).await;
    let gone = admin.call("GET", "/_synapse/admin/v1/registration_tokens/letmein", None).await;
    assert_eq!(code(&gone), (404, "M_NOT_FOUND"));

    // Third-party identifiers: none kept, none added.
    assert_eq!(carol.ok("GET", "/_matrix/client/v3/account/3pid", None).await, json!({"threepids": []}));
    let body = json!({"client_secret": "s", "email": "c@example.org", "send_attempt": 1});
    let asked = carol.call("POST", "/_matrix/client/v3/account/3pid/email/requestToken", Some(body)).await;
    assert_eq!(code(&asked), (400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"));
}
