//! Three processes of one server on PostgreSQL, each with addresses of its
//! own and standbys forwarding (`storage.postgres.standby = "forward"`):
//! clients and a participant use whichever process they reach, and keep
//! going when the serving process is killed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::postgres::{on_postgres, Postgres};
use common::process::Proc;
use common::*;
use serde_json::json;

/// A user's client on each process it may reach, in order of preference.
#[derive(Clone)]
struct Roaming(Vec<Client>);

impl Roaming {
    /// Sends with one transaction id until some process acknowledges it
    /// (a retry of an applied send answers the same event).
    async fn send(&self, room: &str, txn: &str) -> String {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            for c in &self.0 {
                let body = json!({"msgtype": "m.text", "body": txn});
                if let Some(a) = c.try_call("PUT", &path, Some(body)).await.filter(|a| a.status == 200) {
                    return a.body["event_id"].as_str().unwrap().to_owned();
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "{txn} never acknowledged");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_peers_on_any_process_are_served_and_survive_kill_9_of_the_serving_one() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("forwarding");
    let mut net = Net::new();
    net.reserve("hub.test");
    net.reserve("p1.test");
    let mut config = net.config("hub.test");
    on_postgres(&mut config, &url);
    // The certificate lmx makes itself, as a plain deployment has: the
    // standbys' TLS hop trusts exactly that one.
    (config.federation.tls_cert, config.federation.tls_key) = (None, None);
    config.storage.postgres.standby = lmx::config::Standby::Forward;
    // The processes name each client to each other.
    config.client.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let mut first = Proc::configured(&net, config);
    first.env.push(("LMX_LOG".into(), Some("warn,lmx::app=info,lmx::store=info,lmx::request=info".into())));
    first.spawn();
    let alice = first.ready().await.register("alice").await;
    let mut others = [first.replica_apart(1, &net), first.replica_apart(2, &net)];
    for o in &mut others {
        o.env = first.env.clone();
        o.spawn();
    }
    // A standby answers once it knows where the serving process is.
    let bob = others[0].ready().await.register("bob").await;
    let carol = others[1].ready().await.register("carol").await;
    for o in &others {
        let ready = Client::new(o.client).raw("GET", "/ready", &[], Vec::new()).await;
        assert_eq!((ready.status, ready.json()["standby"].as_bool()), (200, Some(true)), "{:?}", ready.json());
    }
    // The serving process logs the caller a standby (a trusted proxy here)
    // speaks for, and the standby as `via`.
    let behind = bob.raw("GET", "/_matrix/client/v3/account/whoami", &[("x-forwarded-for", "203.0.113.9")], Vec::new());
    assert_eq!(behind.await.status, 200);
    eventually("the request's line at the serving process", || {
        first
            .log_text()
            .lines()
            .any(|l| l.contains("account/whoami") && l.contains("remote=203.0.113.9") && l.contains("via=127.0.0.1"))
    })
    .await;

    // The participant reaches the hub through a standby's federation
    // address (TLS there, and from the standby to the serving process).
    let mut p1_config = net.config("p1.test");
    p1_config.federation.resolve.insert("hub.test".into(), others[0].config.federation.listen);
    p1_config.federation.trust_self_signed = true;
    let mut p1 = Proc::configured(&net, p1_config);
    p1.spawn();
    let dave = p1.ready().await.register("dave").await;

    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(bob.join(&room, "hub.test").await.status, 200, "a join through a standby");
    assert_eq!(carol.join(&room, "hub.test").await.status, 200);
    let joined = dave.join(&room, "hub.test").await;
    assert_eq!(joined.status, 200, "a participant joins through a standby: {}", joined.body);

    // Everyone sends; the serving process dies part way.
    let clients_of = |c: &Client| -> Roaming {
        Roaming(
            [first.client, others[0].client, others[1].client]
                .iter()
                .map(|&base| Client::new(base).with_user_of(c))
                .collect(),
        )
    };
    let senders = [("a", clients_of(&alice)), ("b", Roaming(vec![bob.clone()])), ("c", Roaming(vec![carol.clone()]))];
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let mut tasks = Vec::new();
    for (who, roaming) in senders {
        let (room, acked) = (room.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let txn = format!("{who}{i}");
                let id = roaming.send(&room, &txn).await;
                acked.lock().unwrap().push((txn, id));
            }
        }));
    }
    eventually("sends acknowledged before the kill", || acked.lock().unwrap().len() >= 30).await;
    first.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let serving: Vec<_> =
        others.iter().filter(|o| o.log_text().contains("took the PostgreSQL store's lease")).collect();
    assert_eq!(serving.len(), 1, "exactly one standby took over");

    // Each acknowledged event once, each sender's in its order, on every
    // process and at the participant.
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 120);
    let check = |seen: &[String]| {
        for who in ["a", "b", "c"] {
            let at: Vec<usize> = acked
                .iter()
                .filter(|(txn, _)| txn.starts_with(who))
                .map(|(txn, id)| {
                    assert_eq!(seen.iter().filter(|s| *s == id).count(), 1, "{txn} ({id}) once");
                    seen.iter().position(|s| s == id).unwrap()
                })
                .collect();
            assert!(at.windows(2).all(|w| w[0] < w[1]), "{who}'s events in the order sent");
        }
    };
    check(&bob.history_ids(&room).await);
    check(&carol.history_ids(&room).await);
    let last = acked.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
    eventually_async("the participant has every acknowledged event", || {
        let (dave, room, last) = (dave.clone(), room.clone(), last.clone());
        async move {
            let seen = dave.history_ids(&room).await;
            last.iter().all(|id| seen.contains(id))
        }
    })
    .await;
    check(&dave.history_ids(&room).await);
    for o in &mut others {
        o.stop();
    }
    p1.stop();
}
