//! `lmx admin …` against a running `lmx serve`: each command's request and
//! answer, a bad token's exit code, and the log filter changed at run
//! time through the admin API.

mod common;

use std::process::Command;

use common::process::Proc;
use common::*;
use serde_json::Value;

struct Admin {
    url: String,
    token_file: std::path::PathBuf,
}

impl Admin {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_lmx"))
            .args(["admin", "--url", &self.url, "--token-file"])
            .arg(&self.token_file)
            .args(args)
            .env_remove("LMX_ADMIN_TOKEN")
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed; its JSON answer.
    fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "lmx admin {args:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("lmx admin {args:?} printed no JSON ({e}): {stdout}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmx_admin_runs_each_command_against_the_admin_listener() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let token_file = net.dir.path().join("admin-token");
    std::fs::write(&token_file, "cli-admin-token-0123456789\n").unwrap();
    let mut config = net.config("hub.test");
    let admin_port = free_port();
    config.admin.listen = Some(([127, 0, 0, 1], admin_port).into());
    config.admin.token_file = Some(token_file.clone());
    config.log.format = lmx::config::LogFormat::Json;
    config.log.level = "warn".into();
    let mut hub = Proc::configured(&net, config);
    hub.env.push(("LMX_LOG".into(), None));
    hub.spawn();
    let client = hub.ready().await;
    let admin = Admin { url: format!("http://127.0.0.1:{admin_port}"), token_file: token_file.clone() };

    let made = admin.ok(&["users", "create", "@carol:hub.test:8448", "--password", "secret-pw", "--admin"]);
    assert_eq!((made["name"].as_str(), made["admin"].as_bool()), (Some("@carol:hub.test:8448"), Some(true)));
    let listed = admin.ok(&["users", "list"]);
    assert_eq!(listed["total"], 1);
    let carol = client.clone().login("carol").await;
    let room = carol.create_room(serde_json::json!({"name": "cli room"})).await;
    for i in 0..4 {
        carol.send_ok(&room, &format!("t{i}"), "hello").await;
    }
    assert_eq!(admin.ok(&["users", "devices", "@carol:hub.test:8448"])["total"], 1);
    assert!(admin.ok(&["users", "sessions", "@carol:hub.test:8448"])["devices"].is_object());
    admin.ok(&["users", "reset-password", "@carol:hub.test:8448", "--password", "secret-pw-2"]);
    assert_eq!(carol.call("GET", "/_matrix/client/v3/account/whoami", None).await.status, 401);
    admin.ok(&["users", "make-admin", "@carol:hub.test:8448", "--revoke"]);
    assert_eq!(admin.ok(&["users", "show", "@carol:hub.test:8448"])["admin"], false);

    let rooms = admin.ok(&["rooms", "list"]);
    assert_eq!(rooms["total_rooms"], 1);
    assert_eq!(admin.ok(&["rooms", "show", &room])["hub"], "hub.test:8448");
    assert_eq!(admin.ok(&["rooms", "members", &room])["total"], 1);
    assert!(admin.ok(&["rooms", "state", &room])["state"].as_array().is_some_and(|s| !s.is_empty()));
    let around = admin.ok(&["rooms", "list-around", &room, "--limit", "3"]);
    assert_eq!(around["entries"].as_array().unwrap().len(), 3);
    assert_eq!(admin.ok(&["destinations", "list"])["destinations"], serde_json::json!([]));
    let gone = admin.run(&["destinations", "retry", "nowhere.test"]);
    assert!(!gone.status.success(), "an unknown destination is an error");

    let token = admin.ok(&["tokens", "new", "--token", "invite-42", "--uses", "2"]);
    assert_eq!(token["uses_allowed"], 2);
    assert_eq!(admin.ok(&["tokens", "list"])["registration_tokens"][0]["token"], "invite-42");
    admin.ok(&["tokens", "delete", "invite-42"]);
    assert_eq!(admin.ok(&["tokens", "list"])["registration_tokens"], serde_json::json!([]));
    let flushed = admin.ok(&["flush-caches"]);
    assert!(flushed["resolver_entries"].is_number() && flushed["key_entries"].is_number());
    assert_eq!(admin.ok(&["reports", "list"])["total"], 0);
    let notice = admin.ok(&["notice", "@carol:hub.test:8448", "hello from the operator"]);
    assert!(notice["event_id"].is_string());
    assert_eq!(admin.ok(&["media", "list", "@carol:hub.test:8448"])["total"], 0);
    let server = admin.ok(&["server"]);
    assert_eq!(server["server_name"], "hub.test:8448");
    assert_eq!(server["rooms_hubbed"].as_array().unwrap().len(), 2, "carol's room and the notices room");

    // The log filter, changed while running: debug lines appear.
    assert_eq!(admin.ok(&["log-level"])["filter"], "warn");
    assert_eq!(admin.ok(&["log-level", "warn,lmx::request=info"])["filter"], "warn,lmx::request=info");
    client.call("GET", "/_matrix/client/versions", None).await;
    eventually("a request line after the change", || hub.log_text().contains("\"target\":\"lmx::request\"")).await;
    let refused = admin.run(&["log-level", "lmx=[bad"]);
    assert!(!refused.status.success(), "a filter that does not parse is refused");

    std::fs::write(&token_file, "wrong").unwrap();
    let out = admin.run(&["users", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
}
