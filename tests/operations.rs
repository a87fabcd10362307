//! What an operator sees of a running server: `/health` and `/ready` on
//! both listeners, one log line per request (JSON or plain, never colour
//! codes into a file), failed logins with the name tried, SIGHUP applying
//! a new log filter instead of killing the process, `LMX_` variables that
//! name no section reported, `--option` and secret files, and
//! `lmx config check`.

mod common;

use std::time::Duration;

use common::process::Proc;
use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ready_on_both_listeners() {
    let (net, hub) = hub_with(|_| {}).await;
    let c = hub.client();
    for path in ["/health", "/ready"] {
        let a = c.call("GET", path, None).await;
        assert_eq!(a.status, 200, "{path} on the client listener: {}", a.body);
        let f = raw_federation(&net, &hub, "GET", path, None, Vec::new()).await;
        assert_eq!(f.status, 200, "{path} on the federation listener: {}", f.body);
    }
    assert_eq!(c.call("GET", "/health", None).await.body, json!({"status": "ok"}));
    assert_eq!(c.call("GET", "/ready", None).await.body, json!({"ready": true}));
    let wrong = c.call("POST", "/health", Some(json!({}))).await;
    assert_ne!(wrong.status, 200, "only GET probes");
}

/// A network of `hub.test` alone, for a server run as a process.
fn one_host() -> Net {
    let mut net = Net::new();
    net.reserve("hub.test");
    net
}

/// The log lines of a run, as JSON objects.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn request_lines(log: &str) -> Vec<Value> {
    json_lines(log).into_iter().filter(|l| l["target"] == "lmx::request").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_logged_one_line_each_and_sighup_changes_the_filter() {
    let net = one_host();
    let mut config = net.config("hub.test");
    config.log.format = lmx::config::LogFormat::Json;
    config.log.level = "warn".into();
    let mut hub = Proc::configured(&net, config);
    hub.env.push(("LMX_LOG".into(), None));
    hub.env.push(("LMX_FEDERTION__LISTEN".into(), Some("0.0.0.0:1".into())));
    hub.spawn();
    let c = hub.ready().await;
    let alice = c.clone().register("alice").await;
    alice.ok("GET", "/_matrix/client/v3/account/whoami", None).await;
    let log = hub.log_text();
    assert!(request_lines(&log).is_empty(), "warn keeps request lines out:\n{log}");
    assert!(
        json_lines(&log).iter().any(|l| l["level"] == "WARN"
            && l["fields"]["message"].as_str().is_some_and(|m| m.contains("LMX_FEDERTION__LISTEN"))),
        "a variable naming no section is reported:\n{log}"
    );

    // SIGHUP with the filter raised to info: the process stays, and logs.
    hub.config.log.level = "info".into();
    hub.rewrite_config();
    hub.signal(libc::SIGHUP);
    eventually("the reload", || hub.log_text().contains("configuration reloaded")).await;
    assert!(hub.is_running(), "SIGHUP does not end the server");
    alice.ok("GET", "/_matrix/client/v3/account/whoami?access_token=secret-looking", None).await;
    let bad =
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "mallory"}, "password": "x"});
    assert_eq!(c.call("POST", "/_matrix/client/v3/login", Some(bad)).await.status, 403);
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = request_lines(&hub.log_text());
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let whoami = lines.iter().find(|l| l["fields"]["route"] == "/_matrix/client/v3/account/whoami").unwrap();
    let f = &whoami["fields"];
    assert_eq!((f["method"].as_str(), f["status"].as_u64()), (Some("GET"), Some(200)), "{whoami}");
    assert_eq!(f["by"], alice.user_id, "the caller is named");
    assert_eq!(f["listener"], "client");
    assert!(f["latency_ms"].as_f64().is_some() && f["remote"] == "127.0.0.1");
    assert!(whoami["span"]["request_id"].as_str().is_some_and(|id| id.len() == 10), "{whoami}");
    let log = hub.log_text();
    assert!(!log.contains("secret-looking"), "queries are not logged");
    let login = lines.iter().find(|l| l["fields"]["route"] == "/_matrix/client/v3/login").unwrap();
    assert_eq!(login["fields"]["status"], 403);
    let failed = json_lines(&log).into_iter().find(|l| l["target"] == "lmx::auth").expect("the failed login is logged");
    assert_eq!(failed["fields"]["user"], "mallory");
    assert!(!log.contains('\u{1b}'), "no colour codes in a file");
    hub.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_logs_in_a_file_carry_no_colour() {
    let net = one_host();
    let mut hub = Proc::configured(&net, net.config("hub.test"));
    hub.env.push(("LMX_LOG".into(), Some("info".into())));
    hub.spawn();
    let c = hub.ready().await;
    c.call("GET", "/_matrix/client/versions", None).await;
    eventually("a request line", || hub.log_text().contains("/_matrix/client/versions")).await;
    let log = hub.log_text();
    assert!(!log.contains('\u{1b}'), "stderr is a file here: no escape codes\n{log}");
    assert!(log.contains("status=200"), "{log}");
    hub.stop();
}

#[test]
fn config_check_prints_the_effective_configuration_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("shared-secret");
    std::fs::write(&secret, "hunter2\n").unwrap();
    let file = dir.path().join("lmx.toml");
    std::fs::write(
        &file,
        format!("server_name = \"example.org\"\n[registration]\nshared_secret_file = {:?}\n", secret),
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lmx"))
            .args(["config", "check", "--config"])
            .arg(&file)
            .args(args)
            .env_remove("LMX_LOG")
            .output()
            .unwrap()
    };
    let out = run(&["-o", "client.listen=127.0.0.1:9009", "--option", "registration.enabled=true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(shown["server_name"].as_str(), Some("example.org"));
    assert_eq!(shown["client"]["listen"].as_str(), Some("127.0.0.1:9009"), "options win");
    assert_eq!(shown["registration"]["enabled"].as_bool(), Some(true));
    assert_eq!(shown["registration"]["shared_secret"].as_str(), Some("********"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));

    let refused = run(&["-o", "client.listne=127.0.0.1:1"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("listne"), "the unknown key is named: {why}");
    let refused = run(&["-o", "not a key"]);
    assert!(!refused.status.success());
    std::fs::write(
        &file,
        "server_name = \"example.org\"\n[registration]\nshared_secret = \"a\"\nshared_secret_file = \"/x\"\n",
    )
    .unwrap();
    assert!(!run(&[]).status.success(), "a secret and its file together are refused");
}

/// SIGTERM while clients send: the server stops accepting, finishes what
/// it took, flushes and exits 0; after a restart every event it
/// acknowledged is in the room, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_event() {
    let net = one_host();
    let mut hub = Proc::configured(&net, net.config("hub.test"));
    hub.spawn();
    let c = hub.ready().await;
    let alice = c.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut senders = Vec::new();
    for s in 0..4 {
        let (alice, room, acknowledged) = (alice.clone(), room.clone(), acknowledged.clone());
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/s{s}-{i}", enc(&room));
                let body = json!({"msgtype": "m.text", "body": format!("{s}-{i}")});
                match alice.try_call("PUT", &path, Some(body)).await {
                    Some(a) if a.status == 200 => {
                        acknowledged.lock().unwrap().push(a.body["event_id"].as_str().unwrap().to_owned());
                    }
                    // Refused or cut off while stopping: not acknowledged.
                    _ => break,
                }
            }
        }));
    }
    // Let the load build up, then stop the server under it.
    let started = std::time::Instant::now();
    while acknowledged.lock().unwrap().len() < 50 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hub.stop();
    for s in senders {
        let _ = s.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 50, "the load ran: {} sends acknowledged", acknowledged.len());
    hub.spawn();
    let c = hub.ready().await;
    let alice = c.with_user_of(&alice);
    for id in &acknowledged {
        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(id));
        assert_eq!(alice.call("GET", &path, None).await.status, 200, "acknowledged event {id} survived SIGTERM");
    }
    let messages = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(&room));
    let chunk = alice.ok("GET", &messages, None).await["chunk"].as_array().unwrap().clone();
    let texts: Vec<&Value> = chunk.iter().filter(|e| e["type"] == "m.room.message").collect();
    let unique: std::collections::BTreeSet<&str> = texts.iter().filter_map(|e| e["event_id"].as_str()).collect();
    assert_eq!(unique.len(), texts.len(), "each event once");
    assert!(texts.len() >= acknowledged.len());
    hub.stop();
}

/// The certificate the federation listener presents to a new connection.
async fn presented_certificate(net: &Net, addr: std::net::SocketAddr, host: &str) -> Vec<u8> {
    let tls = lmx::http::tls::client_config(false, Some(&net.ca.pem_path)).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A hub logging at info, and the certificate it presents at first.
async fn hub_presenting_its_certificate() -> (Net, Proc, Vec<u8>) {
    let net = one_host();
    let mut hub = Proc::configured(&net, net.config("hub.test"));
    hub.env.push(("LMX_LOG".into(), Some("info".into())));
    hub.spawn();
    hub.ready().await;
    let before = presented_certificate(&net, hub.config.federation.listen, "hub.test").await;
    (net, hub, before)
}

/// A renewed certificate put in place of the old files takes effect at
/// SIGHUP, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_federation_certificate() {
    let (net, mut hub, before) = hub_presenting_its_certificate().await;
    let addr = hub.config.federation.listen;
    let (renewed_cert, renewed_key) = net.ca.issue_named("hub-renewed", &["hub.test"]);
    let (cert_path, key_path) =
        (hub.config.federation.tls_cert.clone().unwrap(), hub.config.federation.tls_key.clone().unwrap());
    // A broken file first: refused, the old certificate stays.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    hub.signal(libc::SIGHUP);
    eventually("the refusal", || hub.log_text().contains("the TLS certificate is refused")).await;
    assert_eq!(presented_certificate(&net, addr, "hub.test").await, before);
    std::fs::copy(&renewed_cert, &cert_path).unwrap();
    std::fs::copy(&renewed_key, &key_path).unwrap();
    hub.signal(libc::SIGHUP);
    eventually("the reload", || hub.log_text().contains("TLS certificate reloaded")).await;
    let after = presented_certificate(&net, addr, "hub.test").await;
    assert_ne!(after, before, "the renewed certificate is served");
    assert!(hub.is_running());
    hub.stop();
}

/// A renewed certificate is also picked up on its own, a few seconds
/// after its files stop changing: no SIGHUP needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_signal() {
    let (net, mut hub, before) = hub_presenting_its_certificate().await;
    let addr = hub.config.federation.listen;
    let (renewed_cert, renewed_key) = net.ca.issue_named("hub-renewed", &["hub.test"]);
    std::fs::copy(&renewed_cert, hub.config.federation.tls_cert.as_ref().unwrap()).unwrap();
    std::fs::copy(&renewed_key, hub.config.federation.tls_key.as_ref().unwrap()).unwrap();
    eventually("the files are read again", || hub.log_text().contains("TLS certificate files changed: reloaded")).await;
    assert_ne!(presented_certificate(&net, addr, "hub.test").await, before, "the renewed certificate is served");
    hub.stop();
}

/// Rate limits come from the configuration SIGHUP reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_rate_limits() {
    let net = one_host();
    let mut config = net.config("hub.test");
    config.client.send_per_second = 0.01;
    config.client.send_burst = 2.0;
    let mut hub = Proc::configured(&net, config);
    hub.env.push(("LMX_LOG".into(), Some("info".into())));
    hub.spawn();
    let alice = hub.ready().await.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(alice.send_text(&room, &format!("before{i}"), "hi").await.status);
    }
    assert_eq!(statuses, [200, 200, 429], "the burst, then the limit");

    hub.config.client.send_per_second = 1000.0;
    hub.config.client.send_burst = 1000.0;
    hub.rewrite_config();
    hub.signal(libc::SIGHUP);
    eventually("the reload", || hub.log_text().contains("limits applied")).await;
    // The bucket refills at the new rate from where it stood (empty): at
    // 1,000 a second, 100 ms is room for the ten sends (without the wait,
    // sends less than a millisecond apart could find it empty).
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..10 {
        let sent = alice.send_text(&room, &format!("after{i}"), "hi").await;
        assert_eq!(sent.status, 200, "send {i} after the reload: {}\n{}", sent.body, hub.log_text());
    }
    hub.stop();
}
