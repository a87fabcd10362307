//! lmx on a real PostgreSQL (its own cluster, started by the test): a hub
//! whose store is in the database keeps every acknowledged event through
//! `kill -9` and federates as on sled; a second process waits as a
//! standby; `lmx db migrate --from sled --to postgres` moves a stopped
//! server with its rooms, lists, accounts and delivery queues.

mod common;

use std::sync::{Arc, Mutex};

use common::postgres::{on_postgres, Postgres};
use common::process::Proc;
use common::*;
use lmx::core::ids::{RoomId, ServerName};
use lmx::store::{for_each_page, Access, Entries, KvStore, PgKv, SledKv, Store};
use serde_json::json;

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_on_postgres_keeps_acknowledged_events_through_kill_9_and_federates() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("hub");
    let mut net = Net::new();
    net.reserve("hub.test");
    net.reserve("p1.test");
    let mut config = net.config("hub.test");
    on_postgres(&mut config, &url);
    let mut hub = Proc::configured(&net, config.clone());
    hub.spawn();
    let mut p1 = Proc::start(&net, "p1.test");
    let alice = hub.ready().await.register("alice").await;
    let bob = p1.ready().await.register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, "hub.test:8448").await.status, 200);

    // A second process on the same database waits as a standby, serving
    // nothing, and stops cleanly.
    let mut second = hub.replica(1);
    second.env.push(("LMX_LOG".into(), Some("warn,lmx::app=info".into())));
    second.spawn();
    eventually("the second process says it is a standby", || second.log_text().contains("standby")).await;
    assert!(second.is_running());
    second.stop();

    // kill -9 while a client keeps sending: what was acknowledged stays.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (alice, room, acked) = (alice.clone(), room.clone(), acked.clone());
        tokio::spawn(async move {
            for i in 0.. {
                match alice
                    .try_call(
                        "PUT",
                        &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/w{i}", enc(&room)),
                        Some(json!({"msgtype": "m.text", "body": format!("w {i}")})),
                    )
                    .await
                {
                    Some(a) if a.status == 200 => {
                        acked.lock().unwrap().push(a.body["event_id"].as_str().unwrap().to_owned())
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        })
    };
    eventually("sends acknowledged", || acked.lock().unwrap().len() >= 30).await;
    hub.kill9();
    let _ = writer.await;
    let acked = acked.lock().unwrap().clone();
    hub.spawn();
    let alice = hub.ready().await.with_user_of(&alice);
    let after = alice.history_ids(&room).await;
    let mut at = Vec::new();
    for id in &acked {
        assert_eq!(after.iter().filter(|e| *e == id).count(), 1, "{id} was acknowledged before kill -9, once");
        at.push(after.iter().position(|e| e == id).unwrap());
    }
    assert!(at.windows(2).all(|w| w[0] < w[1]), "acknowledged events keep their order");

    // The participant converges: everything acknowledged, then what came
    // after the restart (it joined after the room's first events).
    let last = alice.send_ok(&room, "after", "after the restart").await;
    eventually_async("the participant has every acknowledged event", || {
        let (bob, room, acked, last) = (bob.clone(), room.clone(), acked.clone(), last.clone());
        async move {
            let seen = bob.history_ids(&room).await;
            seen.contains(&last) && acked.iter().all(|e| seen.contains(e))
        }
    })
    .await;
    hub.stop();
    let out = hub.command(&["db", "check"]);
    assert!(out.status.success(), "lmx db check on PostgreSQL: {}", text(&out));
    assert!(text(&out).contains("the store is healthy"), "{}", text(&out));
    p1.stop();
}

/// Every pair of a store, in key order.
fn pairs<K: lmx::store::Kv>(kv: &K) -> Entries {
    let mut all = Vec::new();
    for_each_page(kv, 500, |page| {
        all.extend(page.iter().cloned());
        Ok(())
    })
    .unwrap();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_from_sled_keeps_rooms_lists_accounts_and_queues() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("moved");
    let mut net = Net::new();
    net.reserve("hub.test");
    net.reserve("p1.test");
    let mut config = net.config("hub.test");
    config.storage.postgres.url = Some(url.clone());
    let mut hub = Proc::configured(&net, config.clone());
    hub.spawn();
    let mut p1 = Proc::start(&net, "p1.test");
    let alice = hub.ready().await.register("alice").await;
    let bob = p1.ready().await.register("bob").await;
    let mut rooms = Vec::new();
    for n in 0..3 {
        let room = alice.create_room(json!({"preset": "public_chat", "name": format!("room {n}")})).await;
        assert_eq!(bob.join(&room, "hub.test:8448").await.status, 200);
        alice.send_ok(&room, "first", "before the participant went away").await;
        rooms.push(room);
    }
    // The participant is away: the hub queues what it owes it.
    p1.kill9();
    let mut queued = Vec::new();
    for (n, room) in rooms.iter().enumerate() {
        for i in 0..5 {
            queued.push((room.clone(), alice.send_ok(room, &format!("q{n}-{i}"), &format!("queued {i}")).await));
        }
    }
    hub.stop();

    let out = hub.command(&["db", "migrate", "--from", "sled", "--to", "postgres"]);
    assert!(out.status.success(), "migrate: {}", text(&out));
    assert!(text(&out).contains("moved"), "{}", text(&out));

    {
        let sled = KvStore::new(SledKv::open(&config.data_dir.join("db"), 8 << 20).unwrap());
        let moved = KvStore::new(PgKv::open(&url, None, 2, Access::ReadOnly).unwrap());
        assert_eq!(pairs(sled.kv()), pairs(moved.kv()), "every pair, byte for byte");
        let room_ids: Vec<_> = moved.rooms().unwrap().iter().map(|r| r.room_id.clone()).collect();
        assert_eq!(room_ids.len(), 3);
        for id in &room_ids {
            let id = RoomId::parse(id).unwrap();
            let len = moved.room(&id).unwrap().unwrap().length;
            assert_eq!(sled.list(&id, 0, len).unwrap(), moved.list(&id, 0, len).unwrap(), "the list of {id}");
        }
        let names = |s: &dyn Store| s.users().unwrap().into_iter().map(|u| u.user_id).collect::<Vec<_>>();
        assert_eq!(names(&sled), names(&moved));
        let p1_name = ServerName::parse("p1.test:8448").unwrap();
        let queue = moved.queue(&p1_name, 0, 1000).unwrap();
        assert!(!queue.is_empty(), "the queue for the participant moved");
        assert_eq!(sled.queue(&p1_name, 0, 1000).unwrap(), queue);
    }

    // A second migration into the same database is refused.
    let again = hub.command(&["db", "migrate", "--from", "sled", "--to", "postgres"]);
    assert!(!again.status.success() && text(&again).contains("already holds"), "{}", text(&again));

    // Served from PostgreSQL: the same account logs in, the history is
    // there, and the queue drains to the participant once it is back.
    on_postgres(&mut hub.config, &url);
    hub.rewrite_config();
    hub.spawn();
    let alice = hub.ready().await.login("alice").await;
    let seen = alice.history_ids(&rooms[0]).await;
    for (room, id) in &queued {
        if room == &rooms[0] {
            assert!(seen.contains(id), "{id} is in the history served from PostgreSQL");
        }
    }
    p1.spawn();
    let bob = p1.ready().await.with_user_of(&bob);
    eventually_async("the participant receives what was queued for it", || {
        let (bob, queued) = (bob.clone(), queued.clone());
        async move {
            for (room, id) in &queued {
                if !bob.history_ids(room).await.contains(id) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    hub.stop();
    p1.stop();
}

/// Sessions of database `db` other than the asking one, over TLS or not.
fn sessions(pg: &Postgres, db: &str, over_tls: bool) -> usize {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE datname = '{db}' AND pid <> pg_backend_pid() AND ssl = {over_tls}"
    );
    pg.sql(db, &sql).parse().unwrap()
}

/// TLS to PostgreSQL when asked for (the URL's `sslmode=require` or a CA
/// file), and then the certificate must chain to a trusted CA: never
/// plain text instead, never an unchecked certificate.
#[test]
fn tls_to_postgres_is_required_when_asked_for_and_verified() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("tls");
    let net = Net::new();
    let ca = Some(net.ca.pem_path.as_path());
    let open = |url: &str, ca_file: Option<&std::path::Path>| PgKv::open(url, ca_file, 1, Access::ReadOnly);
    let refusal = |r: Result<PgKv, lmx::store::StoreError>| r.err().expect("refused").to_string();

    // A server without TLS: a CA file means TLS or nothing.
    let without = refusal(open(&url, ca));
    assert!(without.contains("TLS"), "{without}");
    let plain = open(&url, None).unwrap();
    assert!(sessions(&pg, "tls", false) >= 1 && sessions(&pg, "tls", true) == 0, "plain when not asked for TLS");
    drop(plain);

    let (cert, key) = net.ca.issue(&["127.0.0.1"]);
    pg.enable_tls(&cert, &key);
    let kv = open(&format!("{url}?sslmode=require"), ca).unwrap();
    let store = KvStore::new(kv);
    store.format().unwrap();
    assert!(sessions(&pg, "tls", true) >= 1, "lmx's sessions are encrypted");
    drop(store);

    // The CA is not among the system's roots: its certificate is refused.
    let unknown = refusal(open(&format!("{url}?sslmode=require"), None));
    assert!(unknown.contains("certificate"), "{unknown}");
    // Nor a certificate from the trusted CA for another host.
    let (cert, key) = net.ca.issue(&["db.example"]);
    pg.enable_tls(&cert, &key);
    let misnamed = refusal(open(&format!("{url}?sslmode=require"), ca));
    assert!(misnamed.contains("certificate"), "{misnamed}");
    // And a contradiction is refused before connecting.
    let contradiction = refusal(open(&format!("{url}?sslmode=disable"), ca));
    assert!(contradiction.contains("sslmode=disable"), "{contradiction}");

    // A server started from its configuration: the CA file is enough.
    let mut net = Net::new();
    net.reserve("hub.test");
    let mut config = net.config("hub.test");
    on_postgres(&mut config, &url);
    config.storage.postgres.ca_file = Some(net.ca.pem_path.clone());
    let (cert, key) = net.ca.issue_named("pg", &["127.0.0.1"]);
    pg.enable_tls(&cert, &key);
    let mut hub = Proc::configured(&net, config);
    hub.spawn();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let alice = hub.ready().await.register("alice").await;
        alice.create_room(json!({"preset": "private_chat"})).await;
    });
    assert!(sessions(&pg, "tls", true) >= 1 && sessions(&pg, "tls", false) == 0, "every session over TLS");
    hub.stop();
}
