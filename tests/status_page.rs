//! The admin status page in a real browser: headless Chromium loads it from
//! the admin listener, the test reads what it rendered and checks it
//! against the admin API, and keeps a screenshot
//! (`target/tmp/status-page.png`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::json;

const TOKEN: &str = "status-page-token";

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().ok()?;
        let path = String::from_utf8(found.stdout).ok()?.trim().to_owned();
        (found.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
    })
}

/// Runs headless Chromium with `args` on `url`; its standard output.
async fn browse(browser: &Path, args: &[String], url: &str) -> String {
    let (browser, mut all) = (browser.to_owned(), args.to_vec());
    let profile = tempfile::tempdir().unwrap();
    all.extend([
        "--headless".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        format!("--user-data-dir={}", profile.path().display()),
        url.to_owned(),
    ]);
    let out = tokio::task::spawn_blocking(move || Command::new(browser).args(all).output().unwrap()).await.unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text_of(dom: &scraper::Html, selector: &str) -> Vec<String> {
    let s = scraper::Selector::parse(selector).unwrap();
    dom.select(&s).map(|e| e.text().collect::<String>().trim().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_rooms_and_a_destination_behind_as_the_api_does() {
    let Some(browser) = chromium() else {
        assert!(std::env::var_os("LMX_REQUIRE_CHROMIUM").is_none(), "LMX_REQUIRE_CHROMIUM is set but no chromium");
        eprintln!("skipped: no chromium (apt-get install chromium)");
        return;
    };
    let mut net = Net::new();
    for h in ["hub.test", "p1.test"] {
        net.reserve(h);
    }
    let mut config = net.config("hub.test");
    config.admin.listen = Some(([127, 0, 0, 1], 0).into());
    config.admin.token = Some(TOKEN.into());
    config.federation.retry_base_ms = 60_000;
    let hub = Server::start(config).await;
    let mut p1 = Server::start(net.config("p1.test")).await;
    let alice = hub.client().register("alice").await;
    let bob = p1.client().register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat", "name": "Status <check>"})).await;
    assert_eq!(bob.join(&room, "hub.test:8448").await.status, 200);
    p1.stop().await;
    alice.send_ok(&room, "a1", "while p1 is away").await;
    let mut admin = Client::new(hub.admin.unwrap());
    admin.token = Some(TOKEN.into());
    eventually_async("p1 backing off", || async {
        let d = admin.call("GET", "/_lmx/admin/v1/destinations/p1.test:8448", None).await.body;
        d["state"] == "backing off"
    })
    .await;

    let url = format!("http://{}/status?access_token={TOKEN}", hub.admin.unwrap());
    let dom = scraper::Html::parse_document(&browse(&browser, &["--dump-dom".into()], &url).await);
    let facts = admin.ok("GET", "/_lmx/admin/v1/server", None).await;
    assert_eq!(text_of(&dom, "#server-name"), [facts["server_name"].as_str().unwrap()]);
    assert_eq!(text_of(&dom, "#rooms-total"), [facts["rooms_total"].to_string()]);
    let hubbed = facts["rooms_hubbed"].as_array().unwrap();
    assert_eq!(hubbed.len(), 1);
    let row = format!("#rooms tr[data-room-id=\"{room}\"]");
    assert_eq!(text_of(&dom, &format!("{row} td:nth-child(2)")), ["Status <check>"], "the name, escaped and shown");
    assert_eq!(text_of(&dom, &format!("{row} .members")), [hubbed[0]["joined_members"].to_string()]);
    assert_eq!(text_of(&dom, &format!("{row} .events")), [hubbed[0]["events"].to_string()]);
    let dest = admin.ok("GET", "/_lmx/admin/v1/destinations/p1.test:8448", None).await;
    let row = "#destinations tr[data-destination=\"p1.test:8448\"]";
    assert_eq!(text_of(&dom, &format!("{row} .state")), ["backing off"]);
    assert_eq!(text_of(&dom, &format!("{row} .depth")), [dest["queue_depth"].to_string()]);
    assert!(dest["queue_depth"].as_u64().unwrap() >= 1);
    assert!(text_of(&dom, &format!("{row} .failures"))[0].parse::<u32>().unwrap() >= 1);

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    browse(&browser, &[format!("--screenshot={}", shot.display()), "--window-size=1280,900".into()], &url).await;
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "a real picture of the page");
    eprintln!("status page screenshot: {}", shot.display());
}
