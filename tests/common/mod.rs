//! Whole lmx servers in one test process: real sled directories, real TLS
//! with a throwaway CA, real sockets on 127.0.0.1, host names resolved with
//! `federation.resolve`. Plus a small Client-Server API client.
#![allow(dead_code)]

pub mod gateway;
pub mod keys;
pub mod peer;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod synapse;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use lmx::app::App;
use lmx::config::Config;
use lmx::core::ids::{EventId, RoomId};
use lmx::federation::Node;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// How long a test waits for something that should happen. Generous: the
/// suite runs on loaded two-core machines next to a real Synapse; a wait
/// ends as soon as its condition holds, so this costs nothing when all is
/// well.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A port no other test of this process has been given. Ports the system
/// hands out for `bind(0)` come back to the next caller as soon as they are
/// released, so two tests running at once could pick the same one and the
/// second server would fail to bind; a counter over a range below the
/// system's ephemeral ports (offset by process, as test binaries follow each
/// other) cannot repeat within a process.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    let offset = (std::process::id() % 550) * 40;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (FIRST + (offset + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A test certificate authority issuing server certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pub pem_path: PathBuf,
    dir: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "lmx test CA");
        let cert = params.self_signed(&key).unwrap();
        let pem_path = dir.join("ca.pem");
        std::fs::write(&pem_path, cert.pem()).unwrap();
        Ca { cert, key, pem_path, dir: dir.to_owned() }
    }

    /// A certificate for `hosts`, written as PEM files; returns their paths.
    pub fn issue(&self, hosts: &[&str]) -> (PathBuf, PathBuf) {
        self.issue_named(hosts[0], hosts)
    }

    /// As `issue`, with files named `file` (several servers on `localhost`).
    pub fn issue_named(&self, file: &str, hosts: &[&str]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let cert_path = self.dir.join(format!("{file}.crt"));
        let key_path = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

/// Addresses of every server of a test network, known before any starts.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub resolve: BTreeMap<String, SocketAddr>,
}

impl Net {
    pub fn new() -> Net {
        // `LMX_KEEP_TEST_DIRS=1` keeps data and logs for a look afterwards.
        let keep = std::env::var_os("LMX_KEEP_TEST_DIRS").is_some();
        let dir = tempfile::Builder::new().prefix("lmx-test").disable_cleanup(keep).tempdir().unwrap();
        if keep {
            eprintln!("test data in {}", dir.path().display());
        }
        let ca = Ca::new(dir.path());
        Net { dir, ca, resolve: BTreeMap::new() }
    }

    /// Reserves a federation port for `host`; the server name is
    /// `host:8448`, found through `federation.resolve`.
    pub fn reserve(&mut self, host: &str) -> SocketAddr {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        self.resolve.insert(host.to_owned(), addr);
        addr
    }

    /// A configuration for `host` (call `reserve` for every host first).
    pub fn config(&self, host: &str) -> Config {
        let (cert, key) = self.ca.issue(&[host]);
        let mut c = self.base_config(format!("{host}:8448"), self.dir.path().join(host), cert, key);
        c.federation.listen = self.resolve[host];
        c.federation.resolve = self.resolve.clone();
        c
    }

    /// `config` with plain HTTP between servers, for tests whose fault
    /// proxy reads or rewrites what passes.
    pub fn plain_config(&self, host: &str) -> Config {
        let mut c = self.config(host);
        c.federation.insecure_plaintext = true;
        c
    }

    /// What every test server shares: TLS from the test CA, quick retries,
    /// open registration and a shared secret.
    fn base_config(&self, server_name: String, data_dir: PathBuf, cert: PathBuf, key: PathBuf) -> Config {
        let mut c = Config { server_name, data_dir, ..Default::default() };
        c.federation.tls_cert = Some(cert);
        c.federation.tls_key = Some(key);
        c.federation.extra_ca_file = Some(self.ca.pem_path.clone());
        c.federation.retry_base_ms = 200;
        c.federation.retry_max_ms = 2_000;
        c.federation.request_timeout_ms = 10_000;
        c.client.listen = ([127, 0, 0, 1], 0).into();
        c.client.send_wait_ms = 10_000;
        c.registration.enabled = true;
        c.registration.shared_secret = Some("test-secret".into());
        c
    }
}

/// `hub.test` alone, started with its configuration changed by `change`.
pub async fn hub_with(change: impl FnOnce(&mut Config)) -> (Net, Server) {
    let mut net = Net::new();
    net.reserve("hub.test");
    let mut config = net.config("hub.test");
    change(&mut config);
    let server = Server::start(config).await;
    (net, server)
}

/// `hub.test` and `p1.test`, started, with TLS between them.
pub async fn hub_and_p1() -> (Net, Server, Server) {
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let p1 = Server::start(net.config("p1.test")).await;
    (net, hub, p1)
}

impl Net {
    /// A configuration named `localhost:{port}`, listening on that port:
    /// a name other servers (Synapse) can dial without any resolve table.
    pub fn config_localhost(&self, port: u16) -> Config {
        let (cert, key) = self.ca.issue_named(&format!("lmx-{port}"), &["localhost"]);
        let dir = self.dir.path().join(format!("lmx-{port}"));
        let mut c = self.base_config(format!("localhost:{port}"), dir, cert, key);
        c.federation.listen = ([127, 0, 0, 1], port).into();
        // Its peers (Synapse) are `localhost:port` names, not in `resolve`.
        c.federation.allow_ip_ranges = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        // A real Synapse on two cores answers slower than lmx.
        c.federation.request_timeout_ms = 20_000;
        c.client.send_wait_ms = 15_000;
        c
    }
}

/// A running server; `stop` drops it the way a shutdown does.
pub struct Server {
    pub config: Config,
    pub client: SocketAddr,
    /// The admin listener, when `admin.listen` was set.
    pub admin: Option<SocketAddr>,
    node: Option<Arc<Node>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    pub async fn start(mut config: Config) -> Server {
        // `LMX_LOG=debug cargo test …` shows the servers' logs.
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("LMX_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let app = App::build(config.clone()).await.expect("server starts");
        let bound = app.addresses();
        // A restart keeps the client port.
        config.client.listen = bound.client;
        config.admin.listen = bound.admin;
        let node = app.node();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Server { config, client: bound.client, admin: bound.admin, node: Some(node), stop: Some(tx), task: Some(task) }
    }

    /// The running server's parts (store, rooms, keys).
    pub fn node(&self) -> &Arc<Node> {
        self.node.as_ref().expect("the server is running")
    }

    pub fn name(&self) -> String {
        self.config.server_name.clone()
    }

    pub async fn stop(&mut self) {
        // Our handle on the node must go too, or sled stays locked.
        self.node = None;
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    /// Starts a stopped server again with the same configuration.
    pub async fn restart_stopped(&mut self) {
        let config = self.config.clone();
        *self = Server::start(config).await;
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        let config = self.config.clone();
        *self = Server::start(config).await;
    }

    pub fn client(&self) -> Client {
        Client::new(self.client)
    }

    /// Forgets what this server has queued for `dest`, as if delivery had
    /// skipped it: `dest` will see a gap in its rooms.
    pub fn drop_queue_for(&self, dest: &str) {
        use lmx::store::records::DestinationState;
        use lmx::store::{Batch, Op};
        let dest = lmx::core::ids::ServerName::parse(dest).unwrap();
        let mark = self.node().positions.watermark();
        let mut b = Batch::new();
        b.push(Op::Dequeue { dest: dest.clone(), up_to: u64::MAX })
            .push(Op::PutDestination { dest, state: DestinationState { acked: mark, ..Default::default() } });
        self.node().store.write(b).unwrap();
    }

    /// This server's copy of a room's list, as event ids.
    pub fn list(&self, room: &str) -> Vec<EventId> {
        let room = RoomId::parse(room).unwrap();
        let store = &self.node().store;
        let len = store.room(&room).unwrap().map_or(0, |r| r.length);
        store.list(&room, 0, len).unwrap()
    }
}

/// A minimal Client-Server API client over plain HTTP.
#[derive(Clone)]
pub struct Client {
    base: SocketAddr,
    http: HttpClient<HttpConnector, Full<Bytes>>,
    pub token: Option<String>,
    pub user_id: String,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
}

pub struct RawAnswer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Client {
    pub fn new(base: SocketAddr) -> Client {
        Client {
            base,
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
            token: None,
            user_id: String::new(),
        }
    }

    /// Where this client sends its requests.
    pub fn base(&self) -> SocketAddr {
        self.base
    }

    /// The same account on a restarted server's client port.
    pub fn on(&self, server: &Server) -> Client {
        server.client().with_user_of(self)
    }

    /// The same account through another connection (after a restart).
    pub fn with_user_of(mut self, of: &Client) -> Client {
        self.token = of.token.clone();
        self.user_id = of.user_id.clone();
        self
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.try_call(method, path, body).await.expect("the server answers")
    }

    /// As `call`, `None` when the connection fails (a server starting up).
    pub async fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Option<Answer> {
        let mut req = http::Request::builder().method(method).uri(format!("http://{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let resp = self.http.request(req.body(Full::new(bytes)).unwrap()).await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(Answer { status, body: serde_json::from_slice(&body).unwrap_or(Value::Null) })
    }

    /// A request with any body and headers, answered as bytes: for media.
    pub async fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> RawAnswer {
        let mut req = http::Request::builder().method(method).uri(format!("http://{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp =
            self.http.request(req.body(Full::new(Bytes::from(body))).unwrap()).await.expect("the server answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        RawAnswer { status, headers, body }
    }

    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let a = self.call(method, path, body).await;
        assert_eq!(a.status, 200, "{method} {path}: {}", a.body);
        a.body
    }

    /// The device this client's access token belongs to.
    pub async fn device_id(&self) -> String {
        self.ok("GET", "/_matrix/client/v3/account/whoami", None).await["device_id"].as_str().unwrap().to_owned()
    }

    pub async fn register(mut self, name: &str) -> Client {
        let body = json!({"username": name, "password": "secret-pw", "auth": {"type": "m.login.dummy"}});
        let r = self.ok("POST", "/_matrix/client/v3/register", Some(body)).await;
        self.token = r["access_token"].as_str().map(str::to_owned);
        self.user_id = r["user_id"].as_str().unwrap().to_owned();
        self
    }

    /// Logs in to an account `register` made (same password).
    pub async fn login(mut self, name: &str) -> Client {
        let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "secret-pw"});
        let r = self.ok("POST", "/_matrix/client/v3/login", Some(body)).await;
        self.token = r["access_token"].as_str().map(str::to_owned);
        self.user_id = r["user_id"].as_str().unwrap().to_owned();
        self
    }

    pub async fn create_room(&self, body: Value) -> String {
        let r = self.ok("POST", "/_matrix/client/v3/createRoom", Some(body)).await;
        r["room_id"].as_str().unwrap().to_owned()
    }

    pub async fn invite(&self, room: &str, user: &str) {
        self.ok("POST", &format!("/_matrix/client/v3/rooms/{}/invite", enc(room)), Some(json!({ "user_id": user })))
            .await;
    }

    pub async fn join(&self, room: &str, via: &str) -> Answer {
        self.call("POST", &format!("/_matrix/client/v3/join/{}?server_name={}", enc(room), enc(via)), Some(json!({})))
            .await
    }

    pub async fn send_text(&self, room: &str, txn: &str, body: &str) -> Answer {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room), enc(txn));
        self.call("PUT", &path, Some(json!({"msgtype": "m.text", "body": body}))).await
    }

    pub async fn send_ok(&self, room: &str, txn: &str, body: &str) -> String {
        let a = self.send_text(room, txn, body).await;
        assert_eq!(a.status, 200, "send {body}: {}", a.body);
        a.body["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn put_state(&self, room: &str, ty: &str, key: &str, content: Value) -> Answer {
        self.call("PUT", &format!("/_matrix/client/v3/rooms/{}/state/{}/{}", enc(room), ty, enc(key)), Some(content))
            .await
    }

    /// The ids of the room's events in order, oldest first (up to 1000).
    pub async fn history_ids(&self, room: &str) -> Vec<String> {
        let page =
            self.ok("GET", &format!("/_matrix/client/v3/rooms/{}/messages?dir=f&limit=1000", enc(room)), None).await;
        page["chunk"].as_array().unwrap().iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect()
    }

    pub async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> Value {
        // A generous timeline, so tests see every event without paging.
        let filter = enc(r#"{"room":{"timeline":{"limit":500}}}"#);
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={filter}");
        if let Some(s) = since {
            path.push_str(&format!("&since={s}"));
        }
        self.ok("GET", &path, None).await
    }

    /// Every timeline event of `room` seen through incremental syncs until
    /// `done` holds (or the deadline passes).
    pub async fn sync_until(&self, room: &str, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let mut seen: Vec<Value> = Vec::new();
        let mut since: Option<String> = None;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            let r = self.sync(since.as_deref(), 1000).await;
            if let Some(events) = r["rooms"]["join"][room]["timeline"]["events"].as_array() {
                seen.extend(events.iter().cloned());
            }
            since = r["next_batch"].as_str().map(str::to_owned);
            if done(&seen) {
                break;
            }
        }
        seen
    }
}

pub fn enc(s: &str) -> String {
    lmx::http::encode_segment(s)
}

/// Bodies of `m.room.message` events, in order.
pub fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `check` holds, polling.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until the async `check` holds, polling.
pub async fn eventually_async<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A raw HTTPS request to a server's federation listener (HTTP/1.1),
/// trusting the test CA: for requests a well-behaved client never makes.
pub async fn raw_federation(
    net: &Net,
    server: &Server,
    method: &str,
    path: &str,
    authorization: Option<String>,
    body: Vec<u8>,
) -> Answer {
    let mut tls = lmx::http::tls::client_config(false, Some(&net.ca.pem_path)).unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let addr = server.config.federation.listen;
    let host = server.config.server_name.split(':').next().unwrap().to_owned();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = connector.connect(rustls::pki_types::ServerName::try_from(host.clone()).unwrap(), tcp).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(path).header("host", &server.config.server_name);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = send.send_request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

/// Every acknowledged event (`(room index, event id)`) is in its room once,
/// in the order acknowledged, as `reader` sees the rooms.
pub async fn assert_acknowledged_once_in_order(reader: &Client, rooms: &[String], acked: &[(usize, String)]) {
    for (r, room) in rooms.iter().enumerate() {
        let seen = reader.history_ids(room).await;
        let at: Vec<usize> = acked
            .iter()
            .filter(|(i, _)| *i == r)
            .map(|(_, e)| {
                assert_eq!(seen.iter().filter(|s| *s == e).count(), 1, "{e} acknowledged, stored once");
                seen.iter().position(|s| s == e).unwrap()
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "room {r} keeps the acknowledged order");
    }
}

/// Waits until `reader` (on another server) has every acknowledged event
/// of `rooms` (the first of the acknowledged rooms' indexes).
pub async fn converges_on(what: &str, reader: &Client, rooms: &[String], acked: &[(usize, String)]) {
    let has_all = || async {
        for (r, room) in rooms.iter().enumerate() {
            let seen = reader.history_ids(room).await;
            if !acked.iter().filter(|(i, _)| *i == r).all(|(_, e)| seen.contains(e)) {
                return false;
            }
        }
        true
    };
    eventually_async(what, has_all).await;
}
