//! Two processes of one server writing at once on one PostgreSQL database:
//! the serving process and a member beside it (`storage.postgres.member`).
//! A room lives on the process that created it; the other finds it in the
//! store, reads it there, and relays its users' commands for it to the
//! owner, whose writer appends them. The member passes everything that is
//! not about one room on to the serving process. Once the owner leaves,
//! the room is taken over.

mod common;

use common::postgres::{on_postgres, Postgres};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_owned_by_another_process_is_written_there_through_relayed_commands() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("relay");
    let mut net = Net::new();
    net.reserve("hub.test");
    let mut config = net.config("hub.test");
    on_postgres(&mut config, &url);
    let mut serving = Server::start(config.clone()).await;

    // The member: the same server, key and certificate; listeners of its own.
    let mut member_config = config.clone();
    member_config.data_dir = config.data_dir.with_file_name("hub-member");
    member_config.signing_key_path = Some(config.signing_key_path());
    member_config.federation.tls_cert = Some(config.tls_cert_path());
    member_config.federation.tls_key = Some(config.tls_key_path());
    member_config.federation.listen = "127.0.0.1:0".parse().unwrap();
    member_config.client.listen = "127.0.0.1:0".parse().unwrap();
    member_config.storage.postgres.member = true;
    let mut member = Server::start(member_config).await;

    let alice = serving.client().register("alice").await;
    // Registering is per server: the member passes it on.
    let bob = member.client().register("bob").await;
    let room = bob.create_room(json!({"preset": "public_chat"})).await;
    // The room's epoch, and whether the serving process (the lease's
    // holder) owns it.
    let owner_of = |room: &str| {
        let q = format!(
            "SELECT o.epoch || ' ' || (o.holder = l.holder) FROM lmx_owner o, lmx_lease l WHERE o.what = 'room {room}'"
        );
        pg.sql("relay", &q)
    };
    assert_eq!(owner_of(&room), "1 false", "the member created the room and owns it");

    // The serving process did not know the room when it started: it finds
    // it in the store, and relays alice's join and message to the member.
    assert_eq!(alice.join(&room, "hub.test").await.status, 200);
    let sent = alice.send_ok(&room, "a1", "from the serving process").await;
    assert_eq!(owner_of(&room), "1 false", "the room stayed with the member");
    let ids = bob.history_ids(&room).await;
    assert!(ids.contains(&sent), "the owner's list has the relayed event: {ids:?}");
    let bobs = bob.send_ok(&room, "b1", "from the member").await;
    let ids = alice.history_ids(&room).await;
    assert!(ids.contains(&bobs) && ids.contains(&sent), "the serving process reads the room: {ids:?}");
    let list = member.list(&room);
    assert_eq!(list.iter().filter(|e| e.as_str() == sent).count(), 1, "the relayed event is in the owner's list once");
    // Sync is per user: the member passes it on, and the serving process
    // reads what either process wrote from the shared stream.
    let seen = bob.sync_until(&room, |evs| bodies(evs).iter().any(|b| b == "from the serving process")).await;
    assert!(bodies(&seen).iter().any(|b| b == "from the member"), "{:?}", bodies(&seen));
    alice.sync_until(&room, |evs| bodies(evs).iter().any(|b| b == "from the member")).await;
    // A relayed send is idempotent per transaction, as a local one.
    let again = alice.send_ok(&room, "a1", "from the serving process").await;
    assert_eq!(again, sent);

    // A command for a room the answering process does not own is refused,
    // never relayed on: the relay endpoint takes only this server's key.
    let stranger = raw_federation_unsigned(&serving, &room).await;
    assert!(stranger == 401 || stranger == 403, "{stranger}");

    // The member leaves (freeing its rooms): the serving process takes the
    // room over from the store.
    member.stop().await;
    // The first try may still be relayed to the member, and answers "come
    // back"; the client's retry (same transaction) finds the room free.
    let after = loop {
        let a = alice.send_text(&room, "a2", "after the member left").await;
        match a.status {
            200 => break a.body["event_id"].as_str().unwrap().to_owned(),
            503 => assert!(a.body["retry_after_ms"].is_u64(), "{}", a.body),
            other => panic!("{other}: {}", a.body),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(owner_of(&room), "2 true", "taken over under a new epoch");
    let ids = alice.history_ids(&room).await;
    for id in [&sent, &bobs, &after] {
        assert_eq!(ids.iter().filter(|e| e == &id).count(), 1, "{id} once, in order");
    }
    let positions: Vec<usize> =
        [&sent, &bobs, &after].iter().map(|id| ids.iter().position(|e| e == *id).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    serving.stop().await;
}

/// The relay endpoint asked without this server's signature.
async fn raw_federation_unsigned(server: &Server, room: &str) -> u16 {
    let node = server.node();
    let addr = node.config.federation.listen;
    let path = format!("/_lmx/internal/v1/rooms/{}/relay", enc(room));
    let tls = lmx::http::tls::pinned_client_config(&node.config.tls_cert_path()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("hub.test").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header("host", "hub.test")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{\"command\":\"purge\",\"keep\":0}")))
        .unwrap();
    sender.send_request(req).await.unwrap().status().as_u16()
}
