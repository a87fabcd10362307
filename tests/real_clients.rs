//! Real Matrix client libraries against a hub and a follower: matrix-nio
//! (Python) and matrix-js-sdk (Node), each running the same chat scenario
//! (tests/clients/), once straight through and once with both servers
//! restarted half-way; and the encryption scenarios of matrix-js-sdk,
//! matrix-nio and matrix-rust-sdk (tests/clients/rust, a program of its
//! own that `scripts/test-all` builds and names in LMX_RUST_CLIENT). `scripts/test-all` installs the libraries and points
//! LMX_NIO_PYTHON and LMX_JS_DIR at them.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use lmx::config::Mode;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The interpreter and script of a client, or `None` when not installed
/// (then the test says so, and fails if the suite requires clients).
fn client_command(kind: &str) -> Option<(String, Vec<String>)> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let found = match kind {
        "nio" => {
            std::env::var("LMX_NIO_PYTHON").ok().map(|py| (py, vec![format!("{dir}/tests/clients/nio_scenario.py")]))
        }
        "nio-e2ee" => {
            std::env::var("LMX_NIO_PYTHON").ok().map(|py| (py, vec![format!("{dir}/tests/clients/nio_e2ee.py")]))
        }
        "rust-e2ee" => std::env::var("LMX_RUST_CLIENT").ok().map(|bin| (bin, Vec::new())),
        // Built beside the e2ee program, from the same crate.
        "rust-room-list" => std::env::var("LMX_RUST_CLIENT").ok().map(|bin| {
            let dir = std::path::Path::new(&bin).parent().map(|p| p.to_path_buf()).unwrap_or_default();
            (dir.join("lmx-rust-room-list").to_string_lossy().into_owned(), Vec::new())
        }),
        "js-e2ee" => std::env::var("LMX_JS_DIR").ok().map(|js| ("node".to_owned(), vec![format!("{js}/e2ee.mjs")])),
        _ => std::env::var("LMX_JS_DIR").ok().map(|js| ("node".to_owned(), vec![format!("{js}/scenario.mjs")])),
    };
    if found.is_none() {
        assert!(
            std::env::var("LMX_REQUIRE_CLIENT_TESTS").is_err(),
            "{kind} is not installed (scripts/test-all installs it)"
        );
        eprintln!("skipping the {kind} scenario: not installed (run scripts/test-all)");
    }
    found
}

async fn scenario(kind: &str, pause: bool) {
    let Some((program, args)) = client_command(kind) else { return };
    let mut net = Net::new();
    net.reserve("hub.test");
    net.reserve("follower.test");
    let mut hub = Server::start(net.config("hub.test")).await;
    let mut follower_config = net.config("follower.test");
    follower_config.mode = Mode::Follower;
    follower_config.follower.timeline_cache = 20;
    follower_config.client.send_wait_ms = 20_000;
    let mut follower = Server::start(follower_config).await;

    let mut child = tokio::process::Command::new(&program)
        .args(&args)
        .env("LMX_HUB_URL", format!("http://{}", hub.client))
        .env("LMX_FOLLOWER_URL", format!("http://{}", follower.client))
        .env("LMX_NAME_SUFFIX", if pause { "r" } else { "" })
        .env("LMX_PAUSE", if pause { "1" } else { "0" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut out = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            out.push_str(&l);
            out.push('\n');
        }
        out
    });
    let mut seen = Vec::new();
    let run = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line == "PAUSE" {
                hub.restart().await;
                follower.restart().await;
                stdin.write_all(b"go\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
            seen.push(line);
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(Duration::from_secs(240), run).await;
    let err = errors.await.unwrap_or_default();
    let status = status.unwrap_or_else(|_| panic!("{kind} scenario timed out; stdout: {seen:?}\nstderr:\n{err}"));
    assert!(
        status.success() && seen.last().map(String::as_str) == Some("OK"),
        "{kind} scenario failed\nstdout: {seen:?}\nstderr:\n{err}"
    );
    if pause {
        assert!(seen.iter().any(|l| l == "PAUSE"), "the servers were restarted mid-way");
    }
    if kind.ends_with("e2ee") || kind == "rust-room-list" {
        return;
    }
    // The follower kept a bounded cache: some history came from the hub.
    let node = follower.node();
    let pruned = node
        .rooms
        .ids()
        .iter()
        .flat_map(|r| {
            let len = node.store.room(r).unwrap().map_or(0, |rec| rec.length);
            node.store.list(r, 0, len).unwrap()
        })
        .filter(|id| node.store.event(id).unwrap().is_some_and(|rec| rec.pruned))
        .count();
    assert!(pruned > 0, "the follower trimmed its cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_nio_scenario() {
    scenario("nio", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_nio_scenario_across_restarts() {
    scenario("nio", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_js_sdk_scenario() {
    scenario("js", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_js_sdk_scenario_across_restarts() {
    scenario("js", true).await;
}

/// Encryption with matrix-rust-sdk 0.18 (its crypto on): the scenario
/// below up to cross-signing, with both users resetting their keys with
/// their password (a wrong one first) at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_rust_sdk_encrypted_room() {
    scenario("rust-e2ee", false).await;
}

/// Encryption with matrix-nio (vodozemac): the same as below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_nio_encrypted_room() {
    scenario("nio-e2ee", false).await;
}

/// Encryption with matrix-js-sdk's Rust crypto: alice on the hub, bob on
/// the follower, a megolm room both decrypt, a second device of alice's
/// that learns of the room's keys, to-device messages delivered once,
/// cross-signing (a device signed by its owner shows so to bob; bob
/// verifies alice), a blocked device that gets no keys, and a device
/// logged in later that restores old keys from the server-side backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_js_sdk_encrypted_room() {
    scenario("js-e2ee", false).await;
}

/// Element X's room list: matrix-rust-sdk's sync service over sliding
/// sync, watched on the hub and on the follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_rust_sdk_room_list() {
    scenario("rust-room-list", false).await;
}
