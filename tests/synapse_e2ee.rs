//! Encryption between lmx and a stock Synapse in a mixed room (versions 11
//! and 12): matrix-js-sdk with its Rust crypto runs the encryption
//! scenario of `tests/clients/js/e2ee.mjs` with alice on an lmx hub and bob
//! on Synapse. Their keys cross over `user/keys/query` and
//! `user/keys/claim`, room keys over `m.direct_to_device`, and device list
//! changes over `m.device_list_update` and `user/devices`, both ways.
//! Skipped without `LMX_SYNAPSE_PYTHON` and `LMX_JS_DIR` (scripts/test-all
//! sets both).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::synapse::{python, Synapse};
use common::{free_port, Net, Server};
use tokio::io::{AsyncBufReadExt, BufReader};

async fn scenario(version: &str) {
    let Some(py) = python() else { return };
    let Ok(js) = std::env::var("LMX_JS_DIR") else {
        assert!(std::env::var("LMX_REQUIRE_CLIENT_TESTS").is_err(), "matrix-js-sdk is not installed");
        eprintln!("skipping: LMX_JS_DIR is not set (scripts/test-all sets it)");
        return;
    };
    let net = Net::new();
    let (hub_port, syn_port, syn_client) = (free_port(), free_port(), free_port());
    let mut hub_config = net.config_localhost(hub_port);
    hub_config.mode = lmx::config::Mode::Hub;
    let hub = Server::start(hub_config).await;
    let mut synapse = Synapse::new(&py, &net.dir.path().join("synapse"), &net.ca, syn_port, syn_client);
    synapse.start().await;

    let mut child = tokio::process::Command::new("node")
        .arg(format!("{js}/e2ee.mjs"))
        .env("LMX_HUB_URL", format!("http://{}", hub.client))
        .env("LMX_FOLLOWER_URL", format!("http://127.0.0.1:{syn_client}"))
        .env("LMX_NAME_SUFFIX", format!("v{version}"))
        .env("LMX_ROOM_VERSION", version)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut out = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut out).await;
        out
    });
    let mut seen = Vec::new();
    let run = async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(Duration::from_secs(300), run).await;
    let err = errors.await.unwrap_or_default();
    let synapse_log = synapse.log_lines(|l| l.contains("ERROR") || l.contains("WARNING"));
    let status = status.unwrap_or_else(|_| panic!("timed out; stdout: {seen:?}\nstderr:\n{err}"));
    assert!(
        status.success() && seen.last().map(String::as_str) == Some("OK"),
        "the encryption scenario failed in a version {version} room\nstdout: {seen:?}\nstderr:\n{err}\nSynapse:\n{synapse_log}"
    );
    synapse.stop();
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_with_synapse_in_a_version_11_room() {
    scenario("11").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_with_synapse_in_a_version_12_room() {
    scenario("12").await;
}
