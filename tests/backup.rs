//! `lmx db backup` from a running server while clients write, and `lmx db
//! restore` into an empty data directory: the restored store passes `lmx
//! db check`, and the server started on it has every acknowledged event,
//! the media and the same signing key. Damaged or misplaced restores are
//! refused and leave nothing behind.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::process::Proc;
use common::*;
use serde_json::json;

fn lmx(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lmx"))
        .args(args)
        .env("LMX_LOG", "warn")
        .env_remove("LMX_ADMIN_TOKEN")
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_to_a_consistent_server() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let token_file = net.dir.path().join("admin-token");
    std::fs::write(&token_file, "backup-token-0123456789").unwrap();
    let admin_port = free_port();
    let mut config = net.config("hub.test");
    config.admin.listen = Some(([127, 0, 0, 1], admin_port).into());
    config.admin.token_file = Some(token_file.clone());
    config.client.send_per_second = 0.0;
    let mut hub = Proc::configured(&net, config.clone());
    hub.spawn();
    let alice = hub.ready().await.register("alice").await;
    let room = alice.create_room(json!({"name": "kept"})).await;
    let up = alice
        .raw(
            "POST",
            "/_matrix/media/v3/upload?filename=n.txt",
            &[("content-type", "text/plain")],
            b"kept bytes".to_vec(),
        )
        .await;
    let media_id = up.json()["content_uri"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let mut before = Vec::new();
    for i in 0..50 {
        before.push(alice.send_ok(&room, &format!("b{i}"), &format!("before {i}")).await);
    }
    let key_before = std::fs::read(config.signing_key_path()).unwrap();

    // Writers keep going while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (alice, room, stop, acked) = (alice.clone(), room.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let a = alice.send_text(&room, &format!("d{i}"), &format!("during {i}")).await;
                if a.status == 200 {
                    acked.lock().unwrap().push(a.body["event_id"].as_str().unwrap().to_owned());
                }
                i += 1;
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let file = net.dir.path().join("hub.lmxbackup");
    let url = format!("http://127.0.0.1:{admin_port}");
    let (file_arg, token_arg) = (file.to_string_lossy().into_owned(), token_file.to_string_lossy().into_owned());
    let out = tokio::task::spawn_blocking(move || {
        lmx(&["db", "backup", "--out", &file_arg, "--url", &url, "--token-file", &token_arg])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "backup: {}", text(&out));
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let during = acked.lock().unwrap().clone();
    assert!(!during.is_empty(), "writes went on during the backup");
    hub.stop();

    // Refusals first: a cut file, another server's name, a store in place.
    let mut fresh = config.clone();
    fresh.data_dir = net.dir.path().join("restored");
    let fresh_path = net.dir.path().join("restored.toml");
    std::fs::write(&fresh_path, toml::to_string(&fresh).unwrap()).unwrap();
    let fresh_arg = fresh_path.to_string_lossy().into_owned();
    let bytes = std::fs::read(&file).unwrap();
    let cut = net.dir.path().join("cut.lmxbackup");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let out = lmx(&["db", "restore", &cut.to_string_lossy(), "--config", &fresh_arg]);
    assert!(!out.status.success() && text(&out).contains("refused"), "{}", text(&out));
    let left: Vec<_> = std::fs::read_dir(&fresh.data_dir).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "a refused restore leaves nothing: {left:?}");
    let mut other = fresh.clone();
    other.server_name = "other.test:8448".into();
    let other_path = net.dir.path().join("other.toml");
    std::fs::write(&other_path, toml::to_string(&other).unwrap()).unwrap();
    let out = lmx(&["db", "restore", &file.to_string_lossy(), "--config", &other_path.to_string_lossy()]);
    assert!(!out.status.success() && text(&out).contains("hub.test:8448"), "{}", text(&out));
    let out = lmx(&["db", "restore", &file.to_string_lossy(), "--config", &hub.config_path.to_string_lossy()]);
    assert!(!out.status.success() && text(&out).contains("not empty"), "{}", text(&out));

    let out = lmx(&["db", "restore", &file.to_string_lossy(), "--config", &fresh_arg]);
    assert!(out.status.success(), "restore: {}", text(&out));
    let out = lmx(&["db", "check", "--config", &fresh_arg]);
    assert!(out.status.success(), "the restored store is consistent:\n{}", text(&out));

    assert_eq!(std::fs::read(fresh.signing_key_path()).unwrap(), key_before, "the same signing key");
    let mut restored = Proc::configured(&net, fresh);
    restored.spawn();
    let c = restored.ready().await;
    let alice = c.clone().login("alice").await;
    let seen = alice.sync_until(&room, |evs| evs.iter().any(|e| e["event_id"] == before[49].as_str())).await;
    let ids: Vec<&str> = seen.iter().filter_map(|e| e["event_id"].as_str()).collect();
    for id in &before {
        assert!(ids.contains(&id.as_str()), "an event acknowledged before the backup is restored");
    }
    // Events acknowledged during the backup are there up to its moment,
    // as one unbroken run from the first.
    let kept: Vec<bool> = during.iter().map(|id| ids.contains(&id.as_str())).collect();
    let first_missing = kept.iter().position(|k| !k).unwrap_or(kept.len());
    assert!(kept[first_missing..].iter().all(|k| !k), "no gaps in what was kept: {kept:?}");
    let download = format!("/_matrix/client/v1/media/download/hub.test:8448/{media_id}");
    let got = alice.raw("GET", &download, &[], vec![]).await;
    assert_eq!((got.status, got.body.as_ref()), (200, &b"kept bytes"[..]));
    let sent = alice.send_text(&room, "after", "the restored server takes new events").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    restored.stop();
}
