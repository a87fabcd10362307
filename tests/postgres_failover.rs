//! Several `lmx serve` processes of one server on one PostgreSQL database:
//! one serves, the others wait as standbys. When the serving process dies
//! a standby takes over once its lease lapses, with nothing acknowledged
//! lost, and a participant and a Synapse in its rooms converge; a process paused past its lease and resumed cannot append (its
//! epoch is stale) and stops.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::postgres::{on_postgres, Postgres};
use common::process::Proc;
use common::synapse::started_with_carol;
use common::*;
use serde_json::json;

fn hub_on(mut config: lmx::config::Config, url: &str) -> lmx::config::Config {
    on_postgres(&mut config, url);
    config
}

/// A hub `hub.test` on a new database `db`, not started.
fn hub_on_database(pg: &Postgres, db: &str) -> (Net, Proc) {
    let url = pg.database(db);
    let mut net = Net::new();
    net.reserve("hub.test");
    let hub = Proc::configured(&net, hub_on(net.config("hub.test"), &url));
    (net, hub)
}

/// The lease's comings and goings are logged at info.
fn logging_leases(p: &mut Proc) {
    p.env.push(("LMX_LOG".into(), Some("warn,lmx::app=info,lmx::store=info".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_after_kill_9_and_nothing_acknowledged_is_lost() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("ha");
    let net = Net::new();
    // Names Synapse can dial: localhost and the port.
    let mut first = Proc::configured(&net, hub_on(net.config_localhost(free_port()), &url));
    let hub_name = first.config.server_name.clone();
    logging_leases(&mut first);
    first.spawn();
    let alice = first.ready().await.register("alice").await;
    // Two standbys of the same server, same addresses: they bind nothing
    // while they wait.
    let mut standbys = [first.replica(1), first.replica(2)];
    for s in &mut standbys {
        logging_leases(s);
        s.spawn();
    }
    let mut p1 = Proc::configured(&net, net.config_localhost(free_port()));
    p1.spawn();
    let bob = p1.ready().await.register("bob").await;
    let (mut synapse, carol) = started_with_carol(&net).await;
    // 20 rooms; the first three mixed (version 12), with Synapse in them.
    const MIXED: usize = 3;
    let mut rooms = Vec::new();
    for n in 0..20 {
        let mut create = json!({"preset": "public_chat", "name": format!("room {n}")});
        if n < MIXED {
            create["room_version"] = json!("12");
        }
        let room = alice.create_room(create).await;
        assert_eq!(bob.join(&room, &hub_name).await.status, 200);
        if let Some(carol) = carol.as_ref().filter(|_| n < MIXED) {
            let joined = carol.join(&room, &hub_name).await;
            assert_eq!(joined.status, 200, "Synapse joins: {}", joined.body);
        }
        rooms.push(room);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for s in &mut standbys {
        assert!(s.is_running(), "a standby waits; log:\n{}", s.log_text());
        assert!(s.log_text().contains("standby"), "{}", s.log_text());
    }

    // A client keeps sending across the rooms through the failover.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let writer = {
        let (alice, rooms, stop, acked) = (alice.clone(), rooms.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let r = i % rooms.len();
                let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/w{i}", enc(&rooms[r]));
                match alice.try_call("PUT", &path, Some(json!({"msgtype": "m.text", "body": format!("w {i}")}))).await {
                    Some(a) if a.status == 200 => {
                        acked.lock().unwrap().push((r, a.body["event_id"].as_str().unwrap().to_owned()))
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
                i += 1;
            }
        })
    };
    eventually("sends acknowledged before the kill", || acked.lock().unwrap().len() >= 60).await;
    first.kill9();
    let at_kill = acked.lock().unwrap().len();
    eventually("sends acknowledged by the process that took over", || acked.lock().unwrap().len() >= at_kill + 60)
        .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let serving: Vec<_> =
        standbys.iter().filter(|s| s.log_text().contains("took the PostgreSQL store's lease")).collect();
    assert_eq!(serving.len(), 1, "exactly one standby took over");
    assert!(serving[0].log_text().contains("epoch=2"), "{}", serving[0].log_text());
    // Every room was written after the kill: each moved to the new process,
    // under a room epoch the dead one's batches can no longer carry.
    let moved =
        pg.sql("ha", "SELECT count(*) FROM lmx_owner o JOIN lmx_lease l ON o.holder = l.holder AND o.epoch = 2 WHERE o.what LIKE 'room %'");
    assert_eq!(moved, rooms.len().to_string(), "{}", pg.sql("ha", "SELECT what, holder, epoch FROM lmx_owner"));

    // Every acknowledged event once, in the order acknowledged, per room;
    // and the participant converges on all of it.
    let acked = acked.lock().unwrap().clone();
    assert_acknowledged_once_in_order(&alice, &rooms, &acked).await;
    converges_on("the participant has every acknowledged event", &bob, &rooms, &acked).await;
    if let Some(carol) = &carol {
        converges_on("Synapse has every acknowledged event of the mixed rooms", carol, &rooms[..MIXED], &acked).await;
    }
    // Delivery to each server in the rooms moved with them.
    let destinations = |held_by: &str| {
        pg.sql(
            "ha",
            &format!("SELECT count(*) FROM lmx_owner o, lmx_lease l WHERE o.what LIKE 'destination %' AND {held_by}"),
        )
    };
    let servers = if carol.is_some() { "2" } else { "1" };
    assert_eq!(destinations("o.holder = l.holder"), servers, "{}", pg.sql("ha", "SELECT * FROM lmx_owner"));
    assert_eq!(destinations("o.holder <> l.holder"), "0");
    for s in &mut standbys {
        s.stop();
    }
    p1.stop();
    if let Some(s) = &mut synapse {
        s.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_paused_past_its_lease_cannot_append_when_resumed() {
    let Some(pg) = Postgres::start() else { return };
    let (net, mut paused) = hub_on_database(&pg, "paused");
    logging_leases(&mut paused);
    paused.spawn();
    let alice = paused.ready().await.register("alice").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    alice.send_ok(&room, "before", "before the pause").await;

    // The other process has addresses of its own: the paused one still
    // holds its sockets.
    let mut other = paused.replica_apart(1, &net);
    logging_leases(&mut other);
    other.spawn();

    paused.signal(libc::SIGSTOP);
    let alice_there = other.ready().await.with_user_of(&alice);
    alice_there.send_ok(&room, "taken-over", "after the takeover").await;

    // Resumed, with a send already waiting for it: it must not append.
    let late = {
        let alice = alice.clone();
        let room = room.clone();
        tokio::spawn(async move {
            alice
                .try_call(
                    "PUT",
                    &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/stale", enc(&room)),
                    Some(json!({"msgtype": "m.text", "body": "from the stale process"})),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    paused.signal(libc::SIGCONT);
    let status = paused.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(75), "the stale process stops; log:\n{}", paused.log_text());
    assert!(paused.log_text().contains("no longer holds the PostgreSQL store"), "{}", paused.log_text());
    let answer = late.await.unwrap();
    assert!(answer.is_none_or(|a| a.status != 200), "the stale process acknowledged a send");

    let page =
        alice_there.ok("GET", &format!("/_matrix/client/v3/rooms/{}/messages?dir=f&limit=100", enc(&room)), None).await;
    let bodies: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert!(bodies.contains(&"before the pause") && bodies.contains(&"after the takeover"), "{bodies:?}");
    assert!(!bodies.contains(&"from the stale process"), "a stale epoch appended: {bodies:?}");
    let owner = pg.sql(
        "paused",
        "SELECT o.epoch FROM lmx_owner o JOIN lmx_lease l ON o.holder = l.holder WHERE o.what LIKE 'room %'",
    );
    assert_eq!(owner, "2", "the room moved to the other process under a new epoch");
    // And the store is whole.
    other.stop();
    let out = other.command(&["db", "check"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// A standby with an address of its own (`standby = "probes"`) is alive and
/// not ready there, serves nothing else, and serves on that address once
/// it has taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_answers_probes_until_it_takes_over() {
    let Some(pg) = Postgres::start() else { return };
    let (net, mut first) = hub_on_database(&pg, "probes");
    first.spawn();
    let alice = first.ready().await.register("alice").await;
    let mut standby = first.replica_apart(1, &net);
    standby.config.storage.postgres.standby = lmx::config::Standby::Probes;
    standby.rewrite_config();
    logging_leases(&mut standby);
    standby.spawn();

    let probe = Client::new(standby.client);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while probe.try_call("GET", "/health", None).await.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no probe answer; log:\n{}", standby.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = probe.raw("GET", "/health", &[], Vec::new()).await;
    assert_eq!((health.status, health.json()["standby"].as_bool()), (200, Some(true)), "alive while standing by");
    let ready = probe.raw("GET", "/ready", &[], Vec::new()).await;
    assert_eq!(ready.status, 503, "not ready while standing by");
    assert!(ready.json()["reasons"][0].as_str().is_some_and(|r| r.starts_with("standby")), "{:?}", ready.json());
    let versions = probe.raw("GET", "/_matrix/client/versions", &[], Vec::new()).await;
    assert_eq!((versions.status, versions.json()["errcode"].as_str()), (503, Some("M_UNKNOWN")));
    assert_eq!(versions.header("retry-after"), "3", "retry once a lease term has passed");
    let whoami = Client::new(standby.client).with_user_of(&alice);
    assert_eq!(whoami.call("GET", "/_matrix/client/v3/account/whoami", None).await.status, 503, "nothing served");
    // Waiting costs a query a second on sessions it keeps (opened in its
    // first second), not a session a second. Sessions are counted as they
    // end; the only one ending meanwhile is the psql that read the count.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sessions = || pg.sql("probes", "SELECT sessions FROM pg_stat_database WHERE datname = 'probes'");
    let before: u64 = sessions().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let after: u64 = sessions().parse().unwrap();
    assert!(after - before <= 1, "a standby keeps its sessions while it waits: {} new", after - before);

    first.kill9();
    // It closes the probes and serves on the same address.
    let there = standby.ready().await.with_user_of(&alice);
    let me = there.ok("GET", "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(me["user_id"].as_str(), Some(alice.user_id.as_str()));
    let ready = probe.raw("GET", "/ready", &[], Vec::new()).await;
    assert_eq!(ready.status, 200, "ready once serving: {:?}", ready.json());
    assert!(standby.log_text().contains("took the PostgreSQL store"), "{}", standby.log_text());
}

/// `lmx bench failover` (small counts, a short lease): the serving process
/// killed under load, every acknowledged event in the room once.
#[test]
fn the_failover_bench_finds_nothing_acknowledged_lost() {
    let Some(pg) = Postgres::start() else { return };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lmx"))
        .args(["bench", "failover", "--smoke", "--json", "--lease-secs", "2", "--clients", "3", "--postgres"])
        .arg(pg.url("postgres"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes = rows[0]["notes"].to_string();
    assert!(rows[0]["scenario"].as_str().unwrap().starts_with("failover, 3 client(s), 2 processes"), "{rows}");
    assert!(notes.contains("without an acknowledgement"), "the outage is measured: {notes}");
    assert!(notes.contains("acknowledged: 0 missing, 0 repeated"), "{notes}");
}
