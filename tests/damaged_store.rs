//! A damaged store is refused at start, and `lmx db check` names the
//! damage: real `lmx serve` processes over real sled files, damaged the
//! ways a disk, a careless copy or a bad restore would.

mod common;

use common::process::Proc;
use common::*;
use serde_json::json;

/// A hub with one room of 300 messages, stopped cleanly; returns the
/// process, the room and a copy of the intact data directory.
async fn stopped_hub_with_history(net: &mut Net) -> (Proc, String, std::path::PathBuf) {
    net.reserve("hub.test");
    let mut config = net.config("hub.test");
    config.client.send_per_second = 0.0;
    let mut hub = Proc::configured(net, config);
    hub.spawn();
    let alice = hub.ready().await.register("alice").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    for i in 0..300 {
        alice.send_ok(&room, &format!("t{i}"), &format!("message {i}")).await;
    }
    hub.stop();
    let backup = net.dir.path().join("backup");
    copy_dir(hub.data_dir(), &backup);
    (hub, room, backup)
}

/// How many messages the room's history holds.
async fn history(c: &Client, room: &str) -> usize {
    let page = c.ok("GET", &format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(room)), None).await;
    bodies(page["chunk"].as_array().unwrap()).len()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn restore(hub: &Proc, backup: &std::path::Path) {
    std::fs::remove_dir_all(hub.data_dir()).unwrap();
    copy_dir(backup, hub.data_dir());
}

fn sled_file(hub: &Proc) -> std::path::PathBuf {
    hub.data_dir().join("db").join("db")
}

/// Starting must fail with the refusal; returns what it printed.
fn refused_start(hub: &mut Proc) -> String {
    let before = hub.log_text().len();
    hub.spawn();
    let status = hub.wait_exit(std::time::Duration::from_secs(60));
    assert!(!status.success(), "lmx must refuse a damaged store");
    let log = hub.log_text()[before..].to_owned();
    let names_the_damage = log.contains("lacks data") || log.contains("is damaged");
    assert!(names_the_damage && log.contains("committed.json"), "the refusal says what and where:\n{log}");
    assert!(log.contains("backup") && log.contains("lmx db seal"), "and how to restore:\n{log}");
    log
}

/// A number from `lmx db check`'s summary (`name: N`).
fn figure(report: &str, name: &str) -> u64 {
    let line = report.lines().find(|l| l.starts_with(&format!("{name}: "))).unwrap_or_else(|| panic!("{name}?"));
    line[name.len() + 2..].trim().parse().unwrap()
}

fn check(hub: &Proc) -> (bool, String) {
    let out = hub.command(&["db", "check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_stores_are_refused_and_named() {
    let mut net = Net::new();
    let (mut hub, room, backup) = stopped_hub_with_history(&mut net).await;
    let (ok, report) = check(&hub);
    assert!(ok, "an intact store passes:\n{report}");
    assert!(figure(&report, "list entries") > 300, "every entry was read:\n{report}");
    assert_eq!(figure(&report, "signatures verified"), figure(&report, "list entries"), "{report}");
    assert_eq!(figure(&report, "problems"), 0, "{report}");
    let size = std::fs::metadata(sled_file(&hub)).unwrap().len();

    // Truncated to half.
    std::fs::OpenOptions::new().write(true).open(sled_file(&hub)).unwrap().set_len(size / 2).unwrap();
    let log = refused_start(&mut hub);
    assert!(log.contains(&room), "the refusal names the room:\n{log}");
    let (ok, report) = check(&hub);
    assert!(!ok && report.contains("DAMAGED"), "{report}");
    assert!(report.contains(&room) || report.contains("sled cannot read"), "the check names the damage:\n{report}");

    // 4 KiB of garbage: somewhere it destroys committed data.
    let mut refused_garbage = 0;
    for at in [size / 2, size * 2 / 3, size * 3 / 4, size * 7 / 8] {
        restore(&hub, &backup);
        let mut bytes = std::fs::read(sled_file(&hub)).unwrap();
        let at = at as usize;
        for (i, b) in bytes[at..(at + 4096).min(size as usize)].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
        std::fs::write(sled_file(&hub), bytes).unwrap();
        let (ok, report) = check(&hub);
        if ok {
            // The garbage fell on space sled no longer used: nothing lost,
            // and the check read all 300 messages back to prove it.
            assert!(report.contains("problems: 0"), "{report}");
            eprintln!("garbage at byte {at} of {size}: nothing lost, the check read every event back");
            continue;
        }
        refused_start(&mut hub);
        eprintln!("garbage at byte {at} of {size}: refused at start, named by the check");
        refused_garbage += 1;
    }
    assert!(refused_garbage > 0, "garbage over live data was refused");

    // Truncated to nothing: not a new, empty server with the same name.
    restore(&hub, &backup);
    std::fs::OpenOptions::new().write(true).open(sled_file(&hub)).unwrap().set_len(0).unwrap();
    let log = refused_start(&mut hub);
    assert!(log.contains("is gone") || log.contains("empty"), "{log}");
    let (ok, report) = check(&hub);
    assert!(!ok && report.contains("DAMAGED"), "{report}");

    // The restore the refusal describes works, history intact; then the
    // server goes on and commits more.
    restore(&hub, &backup);
    hub.spawn();
    let alice = hub.ready().await.login("alice").await;
    assert_eq!(history(&alice, &room).await, 300);
    for i in 0..20 {
        alice.send_ok(&room, &format!("later{i}"), &format!("later {i}")).await;
    }
    hub.stop();

    // A restore of the older store alone (without its commit record) is
    // refused too: the newer record knows of the 20 later events.
    std::fs::remove_dir_all(hub.data_dir().join("db")).unwrap();
    copy_dir(&backup.join("db"), &hub.data_dir().join("db"));
    let log = refused_start(&mut hub);
    assert!(log.contains("were committed"), "{log}");
    // An operator may accept that loss explicitly, and serve what is left.
    let sealed = hub.command(&["db", "seal"]);
    assert!(sealed.status.success(), "{}", String::from_utf8_lossy(&sealed.stderr));
    hub.spawn();
    let alice = hub.ready().await.login("alice").await;
    assert_eq!(history(&alice, &room).await, 300);
    hub.stop();
}
