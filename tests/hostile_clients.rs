//! What a careless or hostile client can do to a server, and what it no
//! longer can: freeze it with a filter, race a registration, register
//! without a real password, read tokens from the store, share a login
//! limit behind a proxy, or hold connections and memory without using them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::process::Proc;
use common::*;
use serde_json::json;

/// Answers `GET /versions` within `bound`, from a fresh connection.
async fn answers_within(c: &Client, bound: Duration) -> bool {
    let c = Client::new(c.base());
    tokio::time::timeout(bound, c.try_call("GET", "/_matrix/client/versions", None))
        .await
        .is_ok_and(|a| a.is_some_and(|a| a.status == 200))
}

/// The filter of the finding: twelve `*` over an event type of 64 `a`s
/// backtracks exponentially in a naive matcher. The server (a separate
/// process, so a frozen runtime cannot hide) stays responsive and answers
/// the filtered requests too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pathological_filter_does_not_freeze_the_server() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let mut hub = Proc::start(&net, "hub.test");
    let alice = hub.ready().await.register("alice").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let ty = "a".repeat(64);
    for i in 0..5 {
        let path = format!("/_matrix/client/v3/rooms/{}/send/{ty}/t{i}", enc(&room));
        alice.ok("PUT", &path, Some(json!({"body": "x"}))).await;
    }
    let filter = json!({"types": [format!("{}b", "*a".repeat(12))]}).to_string();
    let messages = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50&filter={}", enc(&room), enc(&filter));
    let sync_filter = json!({"room": {"timeline": {"types": [format!("{}b", "*a".repeat(12))]}}}).to_string();
    let sync = format!("/_matrix/client/v3/sync?filter={}", enc(&sync_filter));
    let mut slow = Vec::new();
    for i in 0..4 {
        let (c, path) = (alice.clone(), if i % 2 == 0 { messages.clone() } else { sync.clone() });
        slow.push(tokio::spawn(async move { c.call("GET", &path, None).await }));
    }
    // Generous: a frozen server never answers at all.
    assert!(answers_within(&alice, Duration::from_secs(20)).await, "the server answers while filters run");
    for s in slow {
        let a = tokio::time::timeout(Duration::from_secs(60), s).await.expect("filtered requests finish").unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        if let Some(chunk) = a.body["chunk"].as_array() {
            assert!(chunk.is_empty(), "nothing ends in b");
        }
    }
    // Filters beyond the bounds are refused with a reason.
    for bad in [
        json!({"types": [format!("{}b", "*a".repeat(17))]}),
        json!({"not_types": ["x".repeat(256)]}),
        json!({"senders": vec!["@a:b"; 1001]}),
    ] {
        let path = format!("/_matrix/client/v3/rooms/{}/messages?filter={}", enc(&room), enc(&bad.to_string()));
        let a = alice.call("GET", &path, None).await;
        assert_eq!((a.status, a.body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{}", a.body);
        let create =
            alice.call("POST", &format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id)), Some(bad)).await;
        assert_eq!(create.status, 400, "a stored filter is checked too: {}", create.body);
    }
}

/// Eight registrations of one name at once, five times: one account each
/// time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_name_make_one_account() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let mut config = net.config("hub.test");
    config.client.login_per_second = 0.0;
    let hub = Server::start(config).await;
    for round in 0..5 {
        let name = format!("racer{round}");
        let tries: Vec<_> = (0..8)
            .map(|i| {
                let c = hub.client();
                let name = name.clone();
                tokio::spawn(async move {
                    let body = json!({"username": name, "password": format!("password-{i}"), "auth": {"type": "m.login.dummy"}});
                    c.call("POST", "/_matrix/client/v3/register", Some(body)).await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tries {
            let a = t.await.unwrap();
            match a.status {
                200 => ok += 1,
                _ => assert_eq!(a.body["errcode"], "M_USER_IN_USE", "{}", a.body),
            }
        }
        assert_eq!(ok, 1, "round {round}: exactly one account");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_needs_a_password_of_the_configured_length() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let mut config = net.config("hub.test");
    config.registration.min_password_length = 12;
    let hub = Server::start(config).await;
    let c = hub.client();
    let register = |body| c.call("POST", "/_matrix/client/v3/register", Some(body));
    let none = register(json!({"username": "nopw", "auth": {"type": "m.login.dummy"}})).await;
    assert_eq!((none.status, none.body["errcode"].as_str()), (400, Some("M_MISSING_PARAM")), "{}", none.body);
    let short = register(json!({"username": "short", "password": "a", "auth": {"type": "m.login.dummy"}})).await;
    assert_eq!((short.status, short.body["errcode"].as_str()), (400, Some("M_WEAK_PASSWORD")), "{}", short.body);
    // Told before the auth stage, as soon as the password is named.
    let early = register(json!({"username": "early", "password": "elevenchars"})).await;
    assert_eq!(early.body["errcode"], "M_WEAK_PASSWORD", "{}", early.body);
    let good =
        register(json!({"username": "good", "password": "twelve chars", "auth": {"type": "m.login.dummy"}})).await;
    assert_eq!(good.status, 200, "{}", good.body);
    // Neither failed attempt made an account.
    for name in ["nopw", "short", "early"] {
        let a = c.call("GET", &format!("/_matrix/client/v3/register/available?username={name}"), None).await;
        assert_eq!(a.status, 200, "{name} is still free: {}", a.body);
    }
}

/// Access tokens never reach the disk as they are, and still work after a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_are_stored_hashed() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let mut hub = Server::start(net.config("hub.test")).await;
    let alice = hub.client().register("alice").await;
    let second = hub.client().login("alice").await;
    hub.stop().await;
    let mut files = vec![hub.config.data_dir.clone()];
    // The accounts' records are plain to read in sled's files (their
    // password hashes show), so a token would be too.
    let mut records = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        records += bytes.windows(10).filter(|w| w == b"$argon2id$").count();
        for token in [alice.token.as_deref().unwrap(), second.token.as_deref().unwrap()] {
            assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()), "{} holds a token", p.display());
        }
    }
    assert!(records > 0, "the account records were found on disk");
    hub.restart_stopped().await;
    for c in [&alice, &second] {
        let me = c.on(&hub);
        assert_eq!(me.ok("GET", "/_matrix/client/v3/account/whoami", None).await["user_id"], alice.user_id);
    }
}

/// Behind a trusted reverse proxy each client has its own login limit; from
/// anywhere else `X-Forwarded-For` changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limits_see_the_client_behind_a_trusted_proxy() {
    let mut net = Net::new();
    net.reserve("hub.test");
    net.reserve("other.test");
    let limited = |host: &str, trusted: bool| {
        let mut c = net.config(host);
        c.client.login_per_second = 0.001;
        c.client.login_burst = 2.0;
        if trusted {
            c.client.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        }
        c
    };
    let behind_proxy = Server::start(limited("hub.test", true)).await;
    let direct = Server::start(limited("other.test", false)).await;
    let login = json!({"type": "m.login.password", "user": "nobody", "password": "wrong password"});
    let attempt = |s: &Server, forwarded: &str| {
        let (addr, body, forwarded) = (s.client, login.clone(), forwarded.to_owned());
        async move {
            raw_http(addr, "POST", "/_matrix/client/v3/login", &[("x-forwarded-for", &forwarded)], &body.to_string())
                .await
        }
    };
    for _ in 0..2 {
        assert_eq!(attempt(&behind_proxy, "198.51.100.1").await, 403);
    }
    assert_eq!(attempt(&behind_proxy, "198.51.100.1").await, 429, "the first client is limited");
    assert_eq!(attempt(&behind_proxy, "198.51.100.2").await, 403, "another client behind the proxy is not");
    assert_eq!(attempt(&behind_proxy, "198.51.100.2, 127.0.0.1").await, 403, "proxy hops are skipped");
    assert_eq!(attempt(&direct, "198.51.100.1").await, 403);
    assert_eq!(attempt(&direct, "198.51.100.2").await, 403);
    assert_eq!(attempt(&direct, "198.51.100.3").await, 429, "an untrusted peer cannot pose as many clients");
}

/// One HTTP/1.1 request over a fresh connection; the status.
async fn raw_http(addr: std::net::SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let (method, path, body) = (method.to_owned(), path.to_owned(), body.to_owned());
    let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
    })
    .await
    .unwrap()
}

/// Whether the server closed `s` within `bound` (a read sees the end).
fn closed_within(s: &mut TcpStream, bound: Duration) -> bool {
    s.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Connections that hold a slot without using it are closed: beyond the
/// per-address limit at once, silent ones after the first-byte timeout,
/// idle ones after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_silent_and_excess_connections_are_closed() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let mut config = net.config("hub.test");
    config.http.max_connections_per_ip = 4;
    config.http.first_byte_timeout_ms = 1_000;
    config.http.idle_timeout_ms = 1_500;
    let hub = Server::start(config).await;
    let addr = hub.client;
    tokio::task::spawn_blocking(move || {
        let mut silent: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut fifth = TcpStream::connect(addr).unwrap();
        assert!(closed_within(&mut fifth, Duration::from_secs(10)), "a fifth connection from one address is closed");
        for s in &mut silent {
            assert!(closed_within(s, Duration::from_secs(20)), "a connection that never sends a byte is closed");
        }
        // A kept-alive connection that goes quiet after a request.
        let mut kept = TcpStream::connect(addr).unwrap();
        kept.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut first = [0u8; 12];
        kept.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        assert!(closed_within(&mut kept, Duration::from_secs(20)), "an idle kept-alive connection is closed");
        // With the slots free again, the server takes connections.
        let mut again = TcpStream::connect(addr).unwrap();
        again.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        again.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    })
    .await
    .unwrap();
}
