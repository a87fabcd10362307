//! The admin API on its own listener: opened by the admin token or an
//! admin user's access token; Synapse's admin paths in Synapse's shapes
//! (users, rooms, destinations, media, reports, notices) and lmx's own
//! (destinations' backlogs and retry, the linked list around an event).

mod common;

use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "admin-token-for-tests";

fn with_admin(c: &mut lmx::config::Config) {
    c.admin.listen = Some(([127, 0, 0, 1], 0).into());
    c.admin.token = Some(TOKEN.into());
}

fn admin_client(server: &Server) -> Client {
    let mut c = Client::new(server.admin.expect("the admin listener is on"));
    c.token = Some(TOKEN.into());
    c
}

fn login_body(user: &str, password: &str) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_is_closed_without_the_token_or_an_admin_user() {
    let (_net, hub) = hub_with(with_admin).await;
    let mut anon = Client::new(hub.admin.unwrap());
    let a = anon.call("GET", "/_synapse/admin/v2/users", None).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")));
    anon.token = Some(String::new());
    let a = anon.call("GET", "/_synapse/admin/v2/users", None).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")), "an empty token opens nothing");
    anon.token = Some("not-the-token".into());
    let a = anon.call("GET", "/_synapse/admin/v2/users", None).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")));
    let alice = hub.client().register("alice").await;
    let mut as_alice = Client::new(hub.admin.unwrap());
    as_alice.token = alice.token.clone();
    let a = as_alice.call("GET", "/_synapse/admin/v2/users", None).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let a = alice.call("GET", "/_synapse/admin/v2/users", None).await;
    assert_eq!(a.status, 403, "nor on the client listener: {}", a.body);
    let a = anon.call("GET", "/status", None).await;
    assert_eq!(a.status, 401, "the status page needs the token too");

    // Made an admin, alice opens both, as Synapse's admin users do.
    let admin = admin_client(&hub);
    admin.ok("PUT", "/_synapse/admin/v1/users/@alice:hub.test:8448/admin", Some(json!({"admin": true}))).await;
    as_alice.ok("GET", "/_synapse/admin/v2/users", None).await;
    alice.ok("GET", "/_synapse/admin/v2/users", None).await;
    let a = as_alice
        .call("PUT", "/_synapse/admin/v1/users/@alice:hub.test:8448/admin", Some(json!({"admin": false})))
        .await;
    assert_eq!(a.status, 400, "no demoting yourself: {}", a.body);
    let backup = as_alice.call("GET", "/_lmx/admin/v1/backup", None).await;
    assert_eq!(backup.status, 403, "backups need the operator's token, not a user's");
    let version = Client::new(hub.admin.unwrap()).ok("GET", "/_synapse/admin/v1/server_version", None).await;
    assert!(version["server_version"].is_string(), "asked without a token, as of Synapse");
    hub.client().ok("GET", "/_synapse/admin/v1/server_version", None).await;
    let a = admin.call("GET", "/_synapse/admin/v9/nothing", None).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_created_listed_changed_and_deactivated() {
    let (_net, hub) = hub_with(with_admin).await;
    let admin = admin_client(&hub);
    let alice = hub.client().register("alice").await;
    let made = admin
        .call(
            "PUT",
            "/_synapse/admin/v2/users/@bob:hub.test:8448",
            Some(json!({"password": "first-pw-1", "displayname": "Bob"})),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(made.body["name"], "@bob:hub.test:8448");
    assert_eq!(made.body["displayname"], "Bob");
    assert_eq!(made.body["admin"], false);
    let now_secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((made.body["creation_ts"].as_i64().unwrap() - now_secs).abs() < 120, "seconds, as Synapse's details");
    let again =
        admin.call("PUT", "/_synapse/admin/v2/users/@bob:hub.test:8448", Some(json!({"displayname": "Robert"}))).await;
    assert_eq!((again.status, again.body["displayname"].as_str()), (200, Some("Robert")));
    let bob = hub.client();
    let login = bob.call("POST", "/_matrix/client/v3/login", Some(login_body("bob", "first-pw-1"))).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let bob_token = login.body["access_token"].as_str().unwrap().to_owned();

    let list = admin.ok("GET", "/_synapse/admin/v2/users", None).await;
    let names: Vec<&str> = list["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["@alice:hub.test:8448", "@bob:hub.test:8448"]);
    assert_eq!(list["total"], 2);
    assert!(list["users"][0]["creation_ts"].as_i64().unwrap() > now_secs * 100, "milliseconds in the list");
    let page = admin.ok("GET", "/_synapse/admin/v2/users?limit=1", None).await;
    assert_eq!((page["users"].as_array().unwrap().len(), page["next_token"].as_str()), (1, Some("1")));
    let found = admin.ok("GET", "/_synapse/admin/v2/users?name=rob", None).await;
    assert_eq!(found["total"], 1, "display names match too: {found}");
    let bad = admin.call("GET", "/_synapse/admin/v2/users?limit=x", None).await;
    assert_eq!((bad.status, bad.body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));

    let devices = admin.ok("GET", "/_synapse/admin/v2/users/@bob:hub.test:8448/devices", None).await;
    assert_eq!(devices["total"], 1);
    let device = devices["devices"][0]["device_id"].as_str().unwrap().to_owned();
    let whois = admin.ok("GET", "/_synapse/admin/v1/whois/@bob:hub.test:8448", None).await;
    let connections = &whois["devices"][""]["sessions"][0]["connections"];
    assert_eq!(connections.as_array().map(Vec::len), Some(1), "{whois}");
    assert!(connections[0]["last_seen"].as_i64().is_some(), "{whois} ({device})");

    // A reset password ends the sessions; the new one logs in.
    admin
        .ok(
            "POST",
            "/_synapse/admin/v1/reset_password/@bob:hub.test:8448",
            Some(json!({"new_password": "second-pw-2"})),
        )
        .await;
    let mut old = hub.client();
    old.token = Some(bob_token);
    assert_eq!(old.call("GET", "/_matrix/client/v3/account/whoami", None).await.status, 401);
    let login = bob.call("POST", "/_matrix/client/v3/login", Some(login_body("bob", "second-pw-2"))).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let missing = admin.call("POST", "/_synapse/admin/v1/reset_password/@bob:hub.test:8448", Some(json!({}))).await;
    assert_eq!((missing.status, missing.body["errcode"].as_str()), (400, Some("M_MISSING_PARAM")));

    let gone =
        admin.ok("POST", "/_synapse/admin/v1/deactivate/@bob:hub.test:8448", Some(json!({"erase": false}))).await;
    assert!(gone["id_server_unbind_result"].is_string());
    let login = bob.call("POST", "/_matrix/client/v3/login", Some(login_body("bob", "second-pw-2"))).await;
    assert_eq!(login.status, 403, "deactivated: {}", login.body);
    let details = admin.ok("GET", "/_synapse/admin/v2/users/@bob:hub.test:8448", None).await;
    assert_eq!(details["deactivated"], true);
    let list = admin.ok("GET", "/_synapse/admin/v2/users", None).await;
    assert_eq!(list["total"], 1, "deactivated accounts are left out unless asked for");
    let list = admin.ok("GET", "/_synapse/admin/v2/users?deactivated=true", None).await;
    assert_eq!(list["total"], 2);

    let unknown = admin.call("GET", "/_synapse/admin/v2/users/@nobody:hub.test:8448", None).await;
    assert_eq!((unknown.status, unknown.body["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let bad_name = admin.call("PUT", "/_synapse/admin/v2/users/@Carol:hub.test:8448", Some(json!({}))).await;
    assert_eq!((bad_name.status, bad_name.body["errcode"].as_str()), (400, Some("M_INVALID_USERNAME")));
    let remote = admin.call("GET", "/_synapse/admin/v2/users/@x:elsewhere.test", None).await;
    assert_eq!(remote.status, 400);
    drop(alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_show_their_hub_state_and_linked_list() {
    let (_net, hub) = hub_with(with_admin).await;
    let admin = admin_client(&hub);
    let alice = hub.client().register("alice").await;
    let room = alice.create_room(json!({"name": "Ops", "preset": "public_chat"})).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(alice.send_ok(&room, &format!("t{i}"), &format!("m{i}")).await);
    }
    let list = admin.ok("GET", "/_synapse/admin/v1/rooms", None).await;
    assert_eq!(list["total_rooms"], 1);
    let entry = &list["rooms"][0];
    assert_eq!(entry["room_id"], room.as_str());
    assert_eq!(entry["name"], "Ops");
    assert_eq!(entry["joined_members"], 1);
    assert_eq!(entry["joined_local_members"], 1);
    assert_eq!(entry["creator"], "@alice:hub.test:8448");
    assert_eq!(entry["hub"], "hub.test:8448");
    assert_eq!(entry["join_rules"], "public");
    let found = admin.ok("GET", "/_synapse/admin/v1/rooms?search_term=op", None).await;
    assert_eq!(found["total_rooms"], 1);
    let none = admin.ok("GET", "/_synapse/admin/v1/rooms?search_term=zzz", None).await;
    assert_eq!(none["total_rooms"], 0);

    let path = format!("/_synapse/admin/v1/rooms/{}", enc(&room));
    let details = admin.ok("GET", &path, None).await;
    assert_eq!(details["tombstoned"], false);
    assert!(details["length"].as_u64().unwrap() >= 10, "{details}");
    let members = admin.ok("GET", &format!("{path}/members"), None).await;
    assert_eq!(members, json!({"total": 1, "members": ["@alice:hub.test:8448"]}));
    let state = admin.ok("GET", &format!("{path}/state"), None).await;
    let types: Vec<&str> = state["state"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"m.room.create") && types.contains(&"m.room.name"), "{types:?}");
    let unknown = admin.call("GET", "/_synapse/admin/v1/rooms/!nope:hub.test:8448", None).await;
    assert_eq!(unknown.status, 404);

    // The linked list around the third message: each entry's one
    // prev_event is the entry before it (the LM rule).
    let around = format!("/_lmx/admin/v1/rooms/{}/list?around={}&limit=5", enc(&room), enc(&sent[2]));
    let listed = admin.ok("GET", &around, None).await;
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "{listed}");
    assert_eq!(entries[2]["event_id"], sent[2].as_str(), "the event sits in the middle");
    for pair in entries.windows(2) {
        assert_eq!(pair[1]["prev_events"], json!([pair[0]["event_id"]]));
        assert_eq!(pair[1]["index"].as_u64(), pair[0]["index"].as_u64().map(|i| i + 1));
    }
    let newest = admin.ok("GET", &format!("/_lmx/admin/v1/rooms/{}/list?limit=2", enc(&room)), None).await;
    assert_eq!(newest["tail"], sent[4].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_is_listed_quarantined_and_deleted() {
    let (_net, hub) = hub_with(with_admin).await;
    let admin = admin_client(&hub);
    let alice = hub.client().register("alice").await;
    let up = alice
        .raw("POST", "/_matrix/media/v3/upload?filename=a.txt", &[("content-type", "text/plain")], b"hello".to_vec())
        .await;
    assert_eq!(up.status, 200);
    let mxc = up.json()["content_uri"].as_str().unwrap().to_owned();
    let id = mxc.rsplit('/').next().unwrap().to_owned();
    let listed = admin.ok("GET", "/_synapse/admin/v1/users/@alice:hub.test:8448/media", None).await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["media"][0]["media_id"], id.as_str());
    assert_eq!(listed["media"][0]["media_length"], 5);
    assert_eq!(listed["media"][0]["upload_name"], "a.txt");
    let download = format!("/_matrix/client/v1/media/download/hub.test:8448/{id}");
    assert_eq!(alice.raw("GET", &download, &[], vec![]).await.status, 200);

    let q = format!("/_synapse/admin/v1/media/quarantine/hub.test:8448/{id}");
    admin.ok("POST", &q, Some(json!({}))).await;
    assert_eq!(alice.raw("GET", &download, &[], vec![]).await.status, 404, "quarantined media is served to nobody");
    let listed = admin.ok("GET", "/_synapse/admin/v1/users/@alice:hub.test:8448/media", None).await;
    assert_eq!(listed["media"][0]["quarantined_by"], "admin");
    admin.ok("POST", &format!("/_synapse/admin/v1/media/unquarantine/hub.test:8448/{id}"), Some(json!({}))).await;
    assert_eq!(alice.raw("GET", &download, &[], vec![]).await.status, 200);

    let gone = admin.ok("DELETE", &format!("/_synapse/admin/v1/media/hub.test:8448/{id}"), None).await;
    assert_eq!(gone, json!({"deleted_media": [id], "total": 1}));
    assert_eq!(alice.raw("GET", &download, &[], vec![]).await.status, 404);
    let listed = admin.ok("GET", "/_synapse/admin/v1/users/@alice:hub.test:8448/media", None).await;
    assert_eq!(listed["total"], 0);
    let remote = admin.call("DELETE", "/_synapse/admin/v1/media/elsewhere.test/abc", None).await;
    assert_eq!(remote.status, 400);

    // Whole users' and rooms' media, as synadm's -u and -r ask.
    let upload = |name: &'static str| {
        let alice = alice.clone();
        async move {
            let up =
                alice.raw("POST", "/_matrix/media/v3/upload", &[("content-type", "text/plain")], name.into()).await;
            up.json()["content_uri"].as_str().unwrap().to_owned()
        }
    };
    let (first, second) = (upload("one").await, upload("two").await);
    let by_user =
        admin.ok("POST", "/_synapse/admin/v1/user/@alice:hub.test:8448/media/quarantine", Some(json!({}))).await;
    assert_eq!(by_user["num_quarantined"], 2);
    let served = |mxc: &str| format!("/_matrix/client/v1/media/download/{}", mxc.trim_start_matches("mxc://"));
    assert_eq!(alice.raw("GET", &served(&first), &[], vec![]).await.status, 404);
    for mxc in [&first, &second] {
        let (server, id) = mxc.trim_start_matches("mxc://").split_once('/').unwrap();
        admin.ok("POST", &format!("/_synapse/admin/v1/media/unquarantine/{server}/{id}"), Some(json!({}))).await;
    }
    let room = alice.create_room(json!({})).await;
    let image = json!({"msgtype": "m.file", "body": "f", "url": first});
    alice.ok("PUT", &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/f1", enc(&room)), Some(image)).await;
    let by_room =
        admin.ok("POST", &format!("/_synapse/admin/v1/room/{}/media/quarantine", enc(&room)), Some(json!({}))).await;
    assert_eq!(by_room["num_quarantined"], 1, "the file the room's event names");
    assert_eq!(alice.raw("GET", &served(&first), &[], vec![]).await.status, 404);
    assert_eq!(alice.raw("GET", &served(&second), &[], vec![]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_notices_reach_the_user_in_a_room_they_cannot_post_in() {
    let (_net, hub) = hub_with(with_admin).await;
    let admin = admin_client(&hub);
    let bob = hub.client().register("bob").await;
    let notice =
        json!({"user_id": "@bob:hub.test:8448", "content": {"msgtype": "m.text", "body": "maintenance at 22:00"}});
    let sent = admin.ok("POST", "/_synapse/admin/v1/send_server_notice", Some(notice)).await;
    assert!(sent["event_id"].as_str().is_some_and(|e| e.starts_with('$')), "{sent}");
    let sync = bob.sync(None, 0).await;
    let invites = sync["rooms"]["invite"].as_object().unwrap();
    assert_eq!(invites.len(), 1, "{sync}");
    let room = invites.keys().next().unwrap().clone();
    assert_eq!(bob.join(&room, "hub.test:8448").await.status, 200);
    let timeline =
        bob.sync_until(&room, |evs| evs.iter().any(|e| e["content"]["body"] == "maintenance at 22:00")).await;
    assert!(timeline.iter().any(|e| e["sender"] == "@server-notices:hub.test:8448"));
    let tags =
        bob.ok("GET", &format!("/_matrix/client/v3/user/@bob:hub.test:8448/rooms/{}/tags", enc(&room)), None).await;
    assert!(tags["tags"]["m.server_notice"].is_object(), "{tags}");
    assert_eq!(bob.send_text(&room, "b1", "reply").await.status, 403, "the notices room is read-only");
    let second = json!({"user_id": "@bob:hub.test:8448", "content": {"msgtype": "m.text", "body": "done"}});
    admin.ok("POST", "/_synapse/admin/v1/send_server_notice", Some(second)).await;
    bob.sync_until(&room, |evs| evs.iter().any(|e| e["content"]["body"] == "done")).await;
    let once = json!({"user_id": "@bob:hub.test:8448", "content": {"msgtype": "m.text", "body": "once"}});
    let a = admin.ok("PUT", "/_synapse/admin/v1/send_server_notice/txn-1", Some(once.clone())).await;
    let b = admin.ok("PUT", "/_synapse/admin/v1/send_server_notice/txn-1", Some(once)).await;
    assert_eq!(a["event_id"], b["event_id"], "a repeated transaction sends nothing new");
    let register = json!({"username": "server-notices", "password": "secret-pw", "auth": {"type": "m.login.dummy"}});
    let taken = hub.client().call("POST", "/_matrix/client/v3/register", Some(register)).await;
    assert_eq!((taken.status, taken.body["errcode"].as_str()), (400, Some("M_USER_IN_USE")), "the name is reserved");
    let missing = admin
        .call("POST", "/_synapse/admin/v1/send_server_notice", Some(json!({"user_id": "@bob:hub.test:8448"})))
        .await;
    assert_eq!(missing.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_behind_shows_why_and_catches_up_on_retry() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    let mut config = net.config("hub.test");
    with_admin(&mut config);
    // Long backoff: only the retry brings delivery back in time.
    config.federation.retry_base_ms = 60_000;
    config.federation.retry_max_ms = 600_000;
    let hub = Server::start(config).await;
    let mut p1 = Server::start(net.config("p1.test")).await;
    let admin = admin_client(&hub);
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, "hub.test:8448").await.status, 200);
    alice.send_ok(&room, "a0", "before").await;
    let dest = "/_synapse/admin/v1/federation/destinations/p1.test:8448";
    // Delivered to, and nothing left queued ("ok" alone can come before
    // the last send went out).
    eventually_async("p1 delivered to", || async {
        let state = admin.call("GET", dest, None).await.body["state"] == "ok";
        state && admin.call("GET", "/_lmx/admin/v1/destinations/p1.test:8448", None).await.body["queue_depth"] == 0
    })
    .await;
    let list = admin.ok("GET", "/_synapse/admin/v1/federation/destinations", None).await;
    assert_eq!(list["destinations"][0]["destination"], "p1.test:8448");
    assert_eq!(list["destinations"][0]["retry_interval"], 0);
    let rooms = admin.ok("GET", &format!("{dest}/rooms"), None).await;
    assert_eq!(rooms["rooms"][0]["room_id"], room.as_str());
    assert!(rooms["rooms"][0]["stream_ordering"].as_u64().unwrap() > 0);
    let not_needed = admin.call("POST", &format!("{dest}/reset_connection"), Some(json!({}))).await;
    assert_eq!(not_needed.status, 400, "not backing off: {}", not_needed.body);

    p1.stop().await;
    let behind = alice.send_ok(&room, "a1", "while p1 is down").await;
    eventually_async("p1 to be backing off", || async {
        admin.call("GET", dest, None).await.body["state"] == "backing off"
    })
    .await;
    let entry = admin.ok("GET", "/_lmx/admin/v1/destinations/p1.test:8448", None).await;
    assert!(entry["failures"].as_u64().unwrap() >= 1, "{entry}");
    assert!(entry["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{entry}");
    assert!(entry["queue_depth"].as_u64().unwrap() >= 1, "{entry}");
    assert_eq!(entry["oldest_undelivered"]["event_id"], behind.as_str());
    assert!(entry["retry_interval"].as_u64().unwrap() >= 30_000, "{entry}");
    assert!(entry["failure_ts"].as_i64().is_some());
    assert_eq!(entry["rooms"][0]["room_id"], room.as_str());

    p1.restart_stopped().await;
    admin.ok("POST", &format!("{dest}/reset_connection"), Some(json!({}))).await;
    eventually_async("the queue to drain after the retry", || async {
        let e = admin.call("GET", "/_lmx/admin/v1/destinations/p1.test:8448", None).await.body;
        e["state"] == "ok" && e["queue_depth"] == 0
    })
    .await;
    let bob = bob.on(&p1);
    bob.sync_until(&room, |evs| evs.iter().any(|e| e["event_id"] == behind.as_str())).await;
    let status = admin_client(&hub).raw("GET", "/status", &[], vec![]).await;
    assert_eq!(status.status, 200);
    assert!(String::from_utf8_lossy(&status.body).contains("p1.test:8448"));
}

/// The Prometheus text of a server's metrics listener.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let c = Client::new(addr);
    let a = c.raw("GET", "/metrics", &[], vec![]).await;
    assert_eq!(a.status, 200);
    assert!(a.header("content-type").starts_with("text/plain"), "{}", a.header("content-type"));
    String::from_utf8(a.body.to_vec()).unwrap()
}

/// The value of the first sample whose line starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_hub_sequences_receives_refuses_and_delivers() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    let metrics_port = free_port();
    let mut config = net.config("hub.test");
    config.metrics.listen = Some(([127, 0, 0, 1], metrics_port).into());
    let hub = Server::start(config).await;
    let p1 = Server::start(net.config("p1.test")).await;
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let alice = hub.client().register("alice").await;
    let carol = hub.client().register("carol").await;
    let bob = p1.client().register("bob").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "power_level_content_override": {"events_default": 50, "users": {"@bob:p1.test:8448": 50, "@alice:hub.test:8448": 100}}}))
        .await;
    assert_eq!(bob.join(&room, "hub.test:8448").await.status, 200);
    assert_eq!(carol.join(&room, "hub.test:8448").await.status, 200);
    for i in 0..3 {
        alice.send_ok(&room, &format!("a{i}"), "from the hub").await;
    }
    bob.send_ok(&room, "b0", "an LPDU for the hub").await;
    let refused = carol.send_text(&room, "c0", "not allowed").await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    let text = scrape(metrics).await;
    let sequenced = sample(&text, "lmx_events_sequenced_total{room_kind=\"lm\"}").unwrap_or(0.0);
    assert!(sequenced >= 4.0, "creation, joins and messages were sequenced:\n{text}");
    assert!(sample(&text, "lmx_lpdus_received_total{room_kind=\"lm\"}").unwrap_or(0.0) >= 1.0, "{text}");
    assert!(text.lines().any(|l| l.starts_with("lmx_auth_rejections_total{rule=")), "{text}");
    let sends = "lmx_http_requests_total{listener=\"client\",route=\"/_matrix/client/v3/rooms/{}/send/m.room.message/{}\",status=\"200\"}";
    assert!(sample(&text, sends).unwrap_or(0.0) >= 3.0, "request counts by route shape:\n{text}");
    assert!(text.contains("lmx_federation_transaction_seconds_bucket{direction=\"in\""), "{text}");
    assert!(text.contains("lmx_federation_transaction_seconds_bucket{direction=\"out\""), "{text}");
    assert!(text.contains("lmx_store_flush_seconds_bucket"), "{text}");
    assert!(text.contains("lmx_federation_queue_depth{destination=\"p1.test:8448\"}"), "{text}");
    assert!(sample(&text, "lmx_rooms_hubbed").is_some_and(|v| v >= 1.0), "{text}");
    assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|v| v > 1e6), "{text}");
    assert!(text.contains("# HELP lmx_events_sequenced_total"), "described:\n{text}");
    let elsewhere = Client::new(metrics).raw("GET", "/other", &[], vec![]).await;
    assert_eq!(elsewhere.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_cached_history_is_purged_and_fetched_again_from_the_hub() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    let mut config = net.config("hub.test");
    with_admin(&mut config);
    let hub = Server::start(config).await;
    let mut config = net.config("p1.test");
    config.mode = lmx::config::Mode::Follower;
    config.follower.timeline_cache = 1000;
    with_admin(&mut config);
    let p1 = Server::start(config).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, "hub.test:8448").await.status, 200);
    let mut last = String::new();
    for i in 0..40 {
        last = alice.send_ok(&room, &format!("m{i}"), &format!("message {i}")).await;
    }
    bob.sync_until(&room, |evs| evs.iter().any(|e| e["event_id"] == last.as_str())).await;

    let purge = format!("/_lmx/admin/v1/rooms/{}/purge", enc(&room));
    let done = admin_client(&p1).ok("POST", &purge, Some(json!({"keep": 5}))).await;
    assert!(done["purged"].as_u64().unwrap() >= 30, "{done}");
    let pruned = p1
        .node()
        .store
        .list(&lmx::core::ids::RoomId::parse(&room).unwrap(), 0, 1000)
        .unwrap()
        .iter()
        .filter(|id| p1.node().store.event(id).unwrap().unwrap().pruned)
        .count();
    assert!(pruned >= 30, "the follower's copies are dropped ({pruned})");
    let again = admin_client(&p1).ok("POST", &purge, Some(json!({"keep": 5}))).await;
    assert_eq!(again["purged"], 0, "nothing left to drop");

    // Paging back, bob still reads every message: fetched from the hub.
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(&room));
    let page = bob.ok("GET", &path, None).await;
    let bodies: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    for i in 0..40 {
        assert!(bodies.contains(&format!("message {i}").as_str()), "message {i} is read back: {bodies:?}");
    }
    let on_hub = admin_client(&hub).call("POST", &purge, Some(json!({"keep": 5}))).await;
    assert_eq!(on_hub.status, 403, "the hub's list is the room's record: {}", on_hub.body);
    let bad = admin_client(&p1).call("POST", &purge, Some(json!({"keep": 0}))).await;
    assert_eq!(bad.status, 400);
}
