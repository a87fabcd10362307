//! Three processes serving one hub name at once on one PostgreSQL
//! database: the serving process and two members. Rooms are created on
//! each, so they are spread over the processes; a client sends across them
//! through every process, a participant (and a Synapse, where installed)
//! takes part. One member is killed with SIGKILL under load: its rooms move
//! to the processes that use them next once its writer row lapses, every
//! acknowledged event is in its room once and in order, and the other
//! servers converge.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::postgres::{on_postgres, Postgres};
use common::process::Proc;
use common::synapse::started_with_carol;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_three_processes_move_when_one_is_killed() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("members");
    let net = Net::new();
    let mut config = net.config_localhost(free_port());
    on_postgres(&mut config, &url);
    let mut serving = Proc::configured(&net, config);
    let hub_name = serving.config.server_name.clone();
    serving.spawn();
    let alice = serving.ready().await.register("alice").await;
    let mut members = [serving.replica_apart(1, &net), serving.replica_apart(2, &net)];
    for m in &mut members {
        m.config.storage.postgres.member = true;
        m.rewrite_config();
        m.spawn();
    }
    // One user, a client on each process (an access token works on any).
    let mut on = vec![alice.clone()];
    for m in &mut members {
        on.push(m.ready().await.with_user_of(&alice));
    }

    let mut p1 = Proc::configured(&net, net.config_localhost(free_port()));
    p1.spawn();
    let bob = p1.ready().await.register("bob").await;
    let (mut synapse, carol) = started_with_carol(&net).await;

    // 20 rooms created round the processes (room n on process (n + 1) % 3,
    // so the first member's room is the first the participant joins, and
    // that member delivers to it); the first three mixed (version 12), with
    // Synapse in them.
    const MIXED: usize = 3;
    let mut rooms = Vec::new();
    for n in 0..20 {
        let mut create = json!({"preset": "public_chat", "name": format!("room {n}")});
        if n < MIXED {
            create["room_version"] = json!("12");
        }
        let room = on[(n + 1) % 3].create_room(create).await;
        let joined = bob.join(&room, &hub_name).await;
        assert_eq!(joined.status, 200, "the participant joins room {n}: {}", joined.body);
        if let Some(carol) = carol.as_ref().filter(|_| n < MIXED) {
            let joined = carol.join(&room, &hub_name).await;
            assert_eq!(joined.status, 200, "Synapse joins room {n}: {}", joined.body);
        }
        rooms.push(room);
    }
    let holders = || pg.sql("members", "SELECT count(DISTINCT holder) FROM lmx_owner WHERE what LIKE 'room %'");
    assert_eq!(holders(), "3", "the rooms are spread over the three processes");

    // One client sends across the rooms, each send through the next process,
    // retrying a send (same transaction id) until some process takes it.
    let (stop, paused) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let acked = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let writer = {
        let (on, rooms, stop, paused, acked) = (on.clone(), rooms.clone(), stop.clone(), paused.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if paused.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let r = i % rooms.len();
                let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/w{i}", enc(&rooms[r]));
                let body = json!({"msgtype": "m.text", "body": format!("w {i}")});
                for attempt in 0.. {
                    match on[(i + attempt) % on.len()].try_call("PUT", &path, Some(body.clone())).await {
                        Some(a) if a.status == 200 => {
                            acked.lock().unwrap().push((r, a.body["event_id"].as_str().unwrap().to_owned()));
                            break;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                i += 1;
            }
        })
    };
    eventually("sends acknowledged", || acked.lock().unwrap().len() >= 40).await;
    // The member killed is the one delivering to the participant, with
    // events queued for it (the participant is down meanwhile): they must
    // still get there with nothing new to wake delivery, so the writer
    // pauses across the kill (another process takes the destination up
    // once the dead one's claim lapses).
    let delivering = pg.sql(
        "members",
        &format!(
            "SELECT w.client_addr FROM lmx_owner o JOIN lmx_writer w ON w.holder = o.holder \
             WHERE o.what = 'destination {}'",
            p1.config.server_name
        ),
    );
    assert_eq!(delivering, members[0].config.client.listen.to_string(), "the first member delivers to the participant");
    p1.stop();
    let at_stop = acked.lock().unwrap().len();
    eventually("sends acknowledged while the participant is down", || acked.lock().unwrap().len() >= at_stop + 20)
        .await;
    paused.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    members[0].kill9();
    p1.spawn();
    p1.ready().await;
    let before_kill = acked.lock().unwrap().clone();
    converges_on("the participant gets what was queued for it before the kill", &bob, &rooms, &before_kill).await;
    paused.store(false, Ordering::Relaxed);
    let on_killed: Vec<String> = rooms.iter().step_by(3).cloned().collect();
    let at_kill = before_kill.len();
    eventually("sends acknowledged after the kill, in every room", || acked.lock().unwrap().len() >= at_kill + 60)
        .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // The killed member's rooms moved, under a new epoch, to the two live
    // processes.
    let live = "(SELECT holder FROM lmx_writer)";
    for room in &on_killed {
        let row =
            pg.sql("members", &format!("SELECT epoch, holder IN {live} FROM lmx_owner WHERE what = 'room {room}'"));
        assert_eq!(row, "2|t", "{room} moved: {}", pg.sql("members", "SELECT * FROM lmx_owner"));
    }
    assert_eq!(holders(), "2");

    // Every acknowledged event once, in the order acknowledged, per room;
    // and the other servers converge on all of it.
    let acked = acked.lock().unwrap().clone();
    assert_acknowledged_once_in_order(&alice, &rooms, &acked).await;
    converges_on("the participant has every acknowledged event", &bob, &rooms, &acked).await;
    if let Some(carol) = &carol {
        converges_on("Synapse has every acknowledged event of the mixed rooms", carol, &rooms[..MIXED], &acked).await;
    }
    members[1].stop();
    serving.stop();
    p1.stop();
    if let Some(s) = &mut synapse {
        s.stop();
    }
}
