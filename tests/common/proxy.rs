//! A fault-injecting TCP proxy between two servers, on loopback. Modes
//! change at run time and cut the connections already open, so a peer
//! meets the new behaviour at once:
//! - `Pass`: bytes both ways;
//! - `Refuse`: every connection is reset at once (a partition);
//! - `Hang`: connections are accepted and read, never answered;
//! - `Trickle(d)`: the answer comes one byte every `d`;
//! - `Status`: an HTTP/1.1 answer of the proxy's own (5xx, 401, 429...);
//! - `Rewrite`: requests pass, and JSON answers are changed on the way.
//!
//! The HTTP modes need plain HTTP between the servers
//! (`federation.insecure_plaintext`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub type Rewriter = Arc<dyn Fn(&str, &mut Value) + Send + Sync>;

#[derive(Clone)]
pub enum Mode {
    Pass,
    Refuse,
    Hang,
    Trickle(Duration),
    Status {
        code: u16,
        body: Value,
    },
    /// Called with the request path and the JSON answer.
    Rewrite(Rewriter),
    /// Requests whose request line contains `path` wait for a permit of
    /// `gate` (`add_permits(1)` lets them all go); others pass at once.
    Hold {
        path: &'static str,
        gate: Arc<tokio::sync::Semaphore>,
    },
}

/// A request the proxy answered in an HTTP mode (`Status`, `Rewrite`).
#[derive(Clone, Debug)]
pub struct Exchange {
    pub line: String,
    /// The request body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    pub status: u16,
    /// Readings of one counter shared by all connections, taken when the
    /// request had been read and when its answer was ready (before it was
    /// written back): an order, not a time. Two requests were in flight
    /// together when each arrived before the other was answered.
    pub arrived: u64,
    pub answered: u64,
}

impl Exchange {
    pub fn overlaps(&self, other: &Exchange) -> bool {
        self.arrived < other.answered && other.arrived < self.answered
    }
}

/// What the HTTP modes record.
#[derive(Clone, Default)]
struct Log {
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    ticks: Arc<AtomicU64>,
}

impl Log {
    fn tick(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::SeqCst)
    }

    fn record(&self, head: &str, body: &[u8], status: u16, arrived: u64, answered: u64) {
        let line = head.lines().next().unwrap_or("").to_owned();
        let body = serde_json::from_slice(body).unwrap_or(Value::Null);
        self.exchanges.lock().unwrap().push(Exchange { line, body, status, arrived, answered });
    }
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<(u64, Mode)>,
    /// Request lines seen (HTTP modes) or connections (others), with times.
    pub seen: Arc<Mutex<Vec<(Instant, String)>>>,
    log: Log,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, rx) = watch::channel((0, Mode::Pass));
        let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let seen2 = seen.clone();
        let log = Log::default();
        let log2 = log.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rx = rx.clone();
                let seen = seen2.clone();
                let log = log2.clone();
                tokio::spawn(async move { connection(client, upstream, rx, seen, log).await });
            }
        });
        FaultProxy { addr, mode, seen, log }
    }

    /// The requests answered in the HTTP modes whose request line contains
    /// `what`, in the order their answers were ready.
    pub fn exchanges(&self, what: &str) -> Vec<Exchange> {
        self.log.exchanges.lock().unwrap().iter().filter(|e| e.line.contains(what)).cloned().collect()
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_modify(|(generation, m)| {
            *generation += 1;
            *m = mode;
        });
    }

    /// Times at which requests (or connections) containing `what` came.
    pub fn times_of(&self, what: &str) -> Vec<Instant> {
        self.seen.lock().unwrap().iter().filter(|(_, l)| l.contains(what)).map(|(t, _)| *t).collect()
    }
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut rx: watch::Receiver<(u64, Mode)>,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    log: Log,
) {
    let (generation, mode) = rx.borrow_and_update().clone();
    let work = async {
        match mode {
            Mode::Refuse => {
                // A zero linger makes the close a reset, and cannot block.
                #[allow(deprecated)]
                let _ = client.set_linger(Some(Duration::ZERO));
                seen.lock().unwrap().push((Instant::now(), "refused".into()));
            }
            Mode::Pass => {
                if let Ok(mut up) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                }
            }
            Mode::Trickle(delay) => {
                seen.lock().unwrap().push((Instant::now(), "trickled".into()));
                let Ok(up) = TcpStream::connect(upstream).await else { return };
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = up.into_split();
                let to_up = async { tokio::io::copy(&mut cr, &mut uw).await };
                let to_client = async {
                    let mut byte = [0u8; 1];
                    while ur.read_exact(&mut byte).await.is_ok() {
                        if cw.write_all(&byte).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                    }
                };
                let _ = tokio::join!(to_up, to_client);
            }
            Mode::Hang => loop {
                seen.lock().unwrap().push((Instant::now(), "hung".into()));
                let mut buf = [0u8; 4096];
                if client.read(&mut buf).await.map_or(true, |n| n == 0) {
                    return;
                }
            },
            Mode::Status { code, body } => loop {
                let Some((head, request)) = read_request(&mut client).await else { return };
                let arrived = log.tick();
                seen.lock().unwrap().push((Instant::now(), head.lines().next().unwrap_or("").to_owned()));
                log.record(&head, &request, code, arrived, log.tick());
                if write_json(&mut client, code, &body).await.is_err() {
                    return;
                }
            },
            Mode::Hold { path, gate } => loop {
                let Some((head, body)) = read_request(&mut client).await else { return };
                let line = head.lines().next().unwrap_or("").to_owned();
                seen.lock().unwrap().push((Instant::now(), line.clone()));
                if line.contains(path) {
                    drop(gate.acquire().await);
                }
                let Some((code, answer)) = forward(upstream, &head, &body).await else { return };
                if write_json(&mut client, code, &answer).await.is_err() {
                    return;
                }
            },
            Mode::Rewrite(f) => loop {
                let Some((head, body)) = read_request(&mut client).await else { return };
                let line = head.lines().next().unwrap_or("").to_owned();
                seen.lock().unwrap().push((Instant::now(), line.clone()));
                let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                let arrived = log.tick();
                let Some((code, mut answer)) = forward(upstream, &head, &body).await else { return };
                log.record(&head, &body, code, arrived, log.tick());
                f(&path, &mut answer);
                if write_json(&mut client, code, &answer).await.is_err() {
                    return;
                }
            },
        }
    };
    // A change of mode cuts the connection.
    tokio::select! {
        _ = work => {}
        _ = rx.wait_for(|(g, _)| *g != generation) => {}
    }
}

/// One HTTP/1.1 request: its head and body (by Content-Length).
async fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = content_length(&head);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    Some((head, body))
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Sends the request upstream on a fresh connection; the JSON answer.
async fn forward(upstream: SocketAddr, head: &str, body: &[u8]) -> Option<(u16, Value)> {
    let mut up = TcpStream::connect(upstream).await.ok()?;
    // One request per connection, so the answer ends with the connection.
    let head: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let head = head.trim_end_matches("\r\n").to_owned() + "\r\nconnection: close\r\n\r\n";
    up.write_all(head.as_bytes()).await.ok()?;
    up.write_all(body).await.ok()?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw).await.ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let resp_head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let code = resp_head.split(' ').nth(1)?.parse().ok()?;
    let rest = &raw[split + 4..];
    let chunked = resp_head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest) } else { rest.to_vec() };
    Some((code, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
}

async fn write_json(s: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(body).unwrap();
    let head =
        format!("HTTP/1.1 {code} Fault\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", bytes.len());
    s.write_all(head.as_bytes()).await?;
    s.write_all(&bytes).await
}

/// Which way the fault proxy of a `ProxiedPair` sits.
pub enum Through {
    /// The hub's requests to the participant pass it.
    HubToP1,
    /// The participant's requests to the hub pass it.
    P1ToHub,
}

/// `hub.test` and `p1.test` with plain HTTP between them (so the proxy can
/// read and rewrite what passes) and a fault proxy on one way. Keep `net`
/// alive as long as the servers: it owns their data directories.
pub struct ProxiedPair {
    pub net: super::Net,
    pub proxy: FaultProxy,
    pub hub: super::Server,
    pub p1: super::Server,
}

impl ProxiedPair {
    /// `tune` may change the configuration of the server whose requests
    /// pass the proxy.
    pub async fn start(through: Through, tune: impl FnOnce(&mut lmx::config::Config)) -> ProxiedPair {
        let mut net = super::Net::new();
        for h in ["hub.test", "p1.test"] {
            net.reserve(h);
        }
        let (caller, callee) = match through {
            Through::HubToP1 => ("hub.test", "p1.test"),
            Through::P1ToHub => ("p1.test", "hub.test"),
        };
        let proxy = FaultProxy::start(net.resolve[callee]).await;
        let (mut hub_config, mut p1_config) = (net.plain_config("hub.test"), net.plain_config("p1.test"));
        let proxied = if caller == "hub.test" { &mut hub_config } else { &mut p1_config };
        proxied.federation.resolve.insert(callee.into(), proxy.addr);
        tune(proxied);
        let hub = super::Server::start(hub_config).await;
        let p1 = super::Server::start(p1_config).await;
        ProxiedPair { net, proxy, hub, p1 }
    }
}
