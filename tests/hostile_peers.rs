//! What a stranger on the federation port can make a server do: connect
//! where it chooses, hold memory before authenticating, and read a room it
//! left or was banned from. Now refused, bounded, and redacted.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use lmx::core::crypto::SigningKey;
use lmx::core::ids::{KeyId, ServerName};
use lmx::core::json::{Canonical, Object};
use lmx::federation::{xmatrix, UNSTABLE};
use lmx::http::{Body, Handler};
use lmx::store::BoxFuture;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HUB: &str = "hub.test:8448";

/// A listener that counts the connections made to it.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, count)
}

/// Every spelling of a loopback or unspecified address a stranger might
/// try, on `port`.
fn forbidden_names(port: u16) -> Vec<String> {
    ["127.0.0.1", "127.1", "2130706433", "[::ffff:127.0.0.1]", "0.0.0.0", "localhost", "[::1]", "127.0.0.2"]
        .iter()
        .map(|h| format!("{h}:{port}"))
        .collect()
}

async fn notary_one(hub: &Server, net: &Net, name: &str) -> Answer {
    raw_federation(net, hub, "GET", &format!("/_matrix/key/v2/query/{}", enc(name)), None, vec![]).await
}

async fn notary_batch(hub: &Server, net: &Net, names: &[String]) -> Answer {
    let keys: serde_json::Map<String, Value> = names.iter().map(|n| (n.clone(), json!({}))).collect();
    let body = json!({ "server_keys": keys }).to_string().into_bytes();
    raw_federation(net, hub, "POST", "/_matrix/key/v2/query", None, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_make_the_server_dial_private_addresses() {
    let mut net = Net::new();
    net.reserve("hub.test");
    net.reserve("open.test");
    let hub = Server::start(net.config("hub.test")).await;
    let (port, dialled) = counting_listener().await;
    let names = forbidden_names(port);

    for name in &names {
        let a = notary_one(&hub, &net, name).await;
        assert_eq!((a.status, a.body["server_keys"].as_array().map(Vec::len)), (200, Some(0)), "{name}: {}", a.body);
    }
    let a = notary_batch(&hub, &net, &names).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // An unauthenticated request naming a loopback origin.
    let key =
        SigningKey::from_seed(ServerName::parse(&names[0]).unwrap(), KeyId::parse("ed25519:x").unwrap(), &[5; 32])
            .unwrap();
    let path = format!("{UNSTABLE}/send/t1");
    let body = json!({"pdus": []});
    let auth = xmatrix::sign_request(&key, "PUT", &path, HUB, Some(&body), true);
    let a = raw_federation(&net, &hub, "PUT", &path, Some(auth), body.to_string().into_bytes()).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(dialled.load(Ordering::SeqCst), 0, "no connection reached the loopback listener");

    // More than 100 names in one notary query: refused as too large.
    let many: Vec<String> = (0..101).map(|i| format!("s{i}.invalid:{port}")).collect();
    let a = notary_batch(&hub, &net, &many).await;
    assert_eq!((a.status, a.body["errcode"].as_str()), (413, Some("M_TOO_LARGE")), "{}", a.body);
    // Spellings of one name count once.
    let same: Vec<String> =
        (0..150).map(|i| if i % 2 == 0 { "Open.Test".into() } else { "open.test".into() }).collect();
    assert_eq!(notary_batch(&hub, &net, &same).await.status, 200);

    // The control: allowed explicitly, the same query does connect, so the
    // count above could have seen it.
    let mut allowed = net.config("open.test");
    allowed.federation.allow_ip_ranges = vec!["127.0.0.0/8".parse().unwrap()];
    let open = Server::start(allowed).await;
    notary_one(&open, &net, &names[0]).await;
    assert!(dialled.load(Ordering::SeqCst) > 0, "an allowed range is dialled");
}

/// A key server answering with megabytes: refused, never buffered whole.
struct HugeKeys {
    key: SigningKey,
    padding: usize,
}

impl Handler for HugeKeys {
    fn handle(self: Arc<Self>, _req: Request<Incoming>, _remote: SocketAddr) -> BoxFuture<'static, Response<Body>> {
        Box::pin(async move {
            let mut o = Object::new();
            o.insert("server_name".into(), json!(self.key.server().as_str()));
            o.insert("valid_until_ts".into(), json!(lmx::sys::now_ms() + 3_600_000));
            o.insert(
                "verify_keys".into(),
                json!({ self.key.key_id().as_str(): {"key": self.key.public_key().to_base64()} }),
            );
            o.insert("old_verify_keys".into(), json!({}));
            o.insert("padding".into(), json!("x".repeat(self.padding)));
            self.key.sign_object(&mut o, Canonical::Matrix).unwrap();
            lmx::http::ok_json(&Value::Object(o))
        })
    }
}

async fn key_server(net: &Net, host: &str, key: SigningKey, padding: usize) -> tokio::sync::watch::Sender<bool> {
    let (cert, tls_key) = net.ca.issue(&[host]);
    let tls = lmx::http::tls::ServerTls::load(&cert, &tls_key).unwrap();
    let listener = tokio::net::TcpListener::bind(net.resolve[host]).await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let limits = lmx::http::Limits::from(&lmx::config::Config::default().http);
    tokio::spawn(lmx::http::serve(
        listener,
        Some(tls),
        Arc::new(HugeKeys { key, padding }),
        lmx::http::SharedLimits::new(limits),
        rx,
    ));
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_responses_are_capped_and_headers_checked_before_bodies() {
    let mut net = Net::new();
    for h in ["hub.test", "huge.test", "small.test", "nokey.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let signing = |host: &str| {
        SigningKey::from_seed(
            ServerName::parse(&format!("{host}:8448")).unwrap(),
            KeyId::parse("ed25519:k").unwrap(),
            &[3; 32],
        )
        .unwrap()
    };
    let _huge = key_server(&net, "huge.test", signing("huge.test"), 2 << 20).await;
    let _small = key_server(&net, "small.test", signing("small.test"), 1_000).await;
    let path = format!("{UNSTABLE}/send/k1");
    let body = json!({"pdus": []});
    for (host, want) in [("huge.test", 401), ("small.test", 200)] {
        let auth = xmatrix::sign_request(&signing(host), "PUT", &path, HUB, Some(&body), true);
        let a = raw_federation(&net, &hub, "PUT", &path, Some(auth), body.to_string().into_bytes()).await;
        assert_eq!(a.status, want, "{host}: {}", a.body);
    }

    // A stranger's 13 MB body is answered from its headers alone: this
    // client sends the headers and 1 KiB, then waits for the answer.
    let addr = hub.config.federation.listen;
    for auth in [None, Some(xmatrix::sign_request(&signing("nokey.test"), "PUT", &path, HUB, None, true))] {
        let mut tls = lmx::http::tls::client_config(false, Some(&net.ca.pem_path)).unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut s = connector.connect(rustls::pki_types::ServerName::try_from("hub.test").unwrap(), tcp).await.unwrap();
        let mut head = format!("PUT {path} HTTP/1.1\r\nhost: {HUB}\r\ncontent-length: 13000000\r\n");
        if let Some(a) = &auth {
            head.push_str(&format!("authorization: {a}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&[b' '; 1024]).await.unwrap();
        let mut answer = [0u8; 12];
        let read = tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut answer)).await;
        assert!(read.is_ok(), "answered without waiting for the body ({})", auth.is_some());
        assert_eq!(&answer, b"HTTP/1.1 401");
    }
}

/// The server-side reading rules of history visibility: a banned server
/// keeps what it saw, sees later events only redacted, and cannot ask for
/// the state at them; a server with no member event sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_read_rooms_by_history_visibility() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test", "p2.test", "p3.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let p1 = Server::start(net.config("p1.test")).await;
    let p2 = Server::start(net.config("p2.test")).await;
    let p3 = Server::start(net.config("p3.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let carol = p2.client().register("carol").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    for c in [&bob, &carol] {
        assert_eq!(c.join(&room, HUB).await.status, 200);
    }
    let seen = alice.send_ok(&room, "m1", "everyone may read this").await;
    alice
        .ok("POST", &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)), Some(json!({"user_id": carol.user_id})))
        .await;
    let secret = alice.send_ok(&room, "m2", "not for the banned").await;
    let hub_name = ServerName::parse(HUB).unwrap();
    let get = |s: &Server, path: String| {
        let fed = s.node().fed.clone();
        let hub_name = hub_name.clone();
        async move {
            match fed.request(&hub_name, Method::GET, &path, None, true).await {
                Ok(r) => (200, r.json("hub").unwrap()),
                Err(e) => (e.status().map_or(0, |s| s.as_u16()), e.error_body().unwrap_or(Value::Null)),
            }
        }
    };
    let event = |id: &str| format!("{UNSTABLE}/event/{}", enc(id));
    let backfill = format!("{UNSTABLE}/backfill/{}?v={}&limit=10", enc(&room), enc(&secret));
    let state = format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(&room), enc(&secret));

    // Still in the room: everything.
    let (code, e) = get(&p1, event(&secret)).await;
    assert_eq!((code, e["content"]["body"].as_str()), (200, Some("not for the banned")));
    assert_eq!(get(&p1, state.clone()).await.0, 200);

    // Banned: what it saw while there, the rest redacted; no state at it.
    let (code, e) = get(&p2, event(&seen)).await;
    assert_eq!((code, e["content"]["body"].as_str()), (200, Some("everyone may read this")));
    let (code, e) = get(&p2, event(&secret)).await;
    assert_eq!(code, 200);
    assert_eq!(e["content"], json!({}), "redacted: {e}");
    let (code, page) = get(&p2, backfill.clone()).await;
    assert_eq!(code, 200);
    let pdus = page["pdus"].as_array().unwrap();
    let by_body = |id: &str| {
        let id_of = |p: &Value| {
            lmx::core::event::event_id(lmx::core::event::RoomVersion::lm(), p.as_object().unwrap()).unwrap()
        };
        pdus.iter().find(|p| id_of(p).as_str() == id).map(|p| p["content"].clone())
    };
    assert_eq!(by_body(&seen).unwrap()["body"], "everyone may read this");
    assert_eq!(by_body(&secret).unwrap(), json!({}), "later events come redacted in backfill");
    assert_eq!(get(&p2, state).await.0, 404, "no state at an event it may not see");

    // Never a member: the room does not exist for it.
    assert_eq!(get(&p3, event(&seen)).await.0, 404);
    assert_eq!(get(&p3, backfill).await.0, 404);
}

/// `joined` history visibility: a server whose user joins later sees the
/// earlier events redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_visibility_hides_history_from_later_servers() {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let p1 = Server::start(net.config("p1.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}
        ]}))
        .await;
    let before = alice.send_ok(&room, "early", "before bob").await;
    assert_eq!(bob.join(&room, HUB).await.status, 200);
    let after = alice.send_ok(&room, "late", "after bob").await;
    let hub_name = ServerName::parse(HUB).unwrap();
    for (id, body) in [(&before, None), (&after, Some("after bob"))] {
        let path = format!("{UNSTABLE}/event/{}", enc(id));
        let e = p1.node().fed.request(&hub_name, Method::GET, &path, None, true).await.unwrap().json("hub").unwrap();
        assert_eq!(e["content"]["body"].as_str(), body, "{e}");
    }
}
