//! The media repository through the HTTP API: uploads on one server,
//! downloads and thumbnails on it and on another over federation, ids
//! reserved first, limits, and bad input refused with nothing kept.

mod common;

use std::io::Cursor;

use common::*;
use serde_json::{json, Value};

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

async fn upload(c: &Client, content_type: &str, query: &str, bytes: Vec<u8>) -> RawAnswer {
    c.raw("POST", &format!("/_matrix/media/v3/upload{query}"), &[("content-type", content_type)], bytes).await
}

/// `(server, id)` of an `mxc://` URI.
fn mxc(answer: &RawAnswer) -> (String, String) {
    let uri = answer.json()["content_uri"].as_str().expect("a content_uri").to_owned();
    let (server, id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    (server.to_owned(), id.to_owned())
}

async fn download(c: &Client, server: &str, id: &str) -> RawAnswer {
    c.raw("GET", &format!("/_matrix/client/v1/media/download/{server}/{id}"), &[], Vec::new()).await
}

fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_uploaded_on_one_server_is_served_on_both_with_thumbnails() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = p1.client().register("alice").await;
    let bob = hub.client().register("bob").await;
    let image = png(400, 300);
    let up = upload(&alice, "image/png", "?filename=cat%20photo.png", image.clone()).await;
    assert_eq!(up.status, 200, "{:?}", up.json());
    let (server, id) = mxc(&up);
    assert_eq!(server, p1.name());

    let got = download(&alice, &server, &id).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.as_ref(), image.as_slice());
    assert_eq!(got.header("content-type"), "image/png");
    assert_eq!(got.header("content-disposition"), "inline; filename=\"cat photo.png\"");
    assert_eq!(got.header("x-content-type-options"), "nosniff");

    // On the hub: fetched from p1 over federation, then kept.
    let remote = download(&bob, &server, &id).await;
    assert_eq!(remote.status, 200, "{:?}", remote.json());
    assert_eq!(remote.body.as_ref(), image.as_slice());
    assert_eq!(remote.header("content-type"), "image/png");
    let p1_server = lmx::core::ids::ServerName::parse(&server).unwrap();
    assert!(hub.node().store.media(&p1_server, &id).unwrap().is_some(), "the hub keeps the file");
    let named =
        bob.raw("GET", &format!("/_matrix/client/v1/media/download/{server}/{id}/other.png"), &[], Vec::new()).await;
    assert_eq!(named.header("content-disposition"), "inline; filename=\"other.png\"");

    for (c, who) in [(&alice, "local"), (&bob, "remote")] {
        let path = format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?width=64&height=64&method=crop");
        let t = c.raw("GET", &path, &[], Vec::new()).await;
        assert_eq!(t.status, 200, "{who}: {:?}", t.json());
        let thumb = image::load_from_memory(&t.body).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (96, 96), "{who}");
        let path = format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?width=300&height=200&method=scale");
        let t = c.raw("GET", &path, &[], Vec::new()).await;
        let thumb = image::load_from_memory(&t.body).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (320, 240), "{who}: scaled within 320×240");
    }

    // A thumbnail of a file the hub does not keep comes from p1's
    // federation thumbnail endpoint, alone.
    let (_, small) = mxc(&upload(&alice, "image/png", "", png(200, 100)).await);
    let path = format!("/_matrix/client/v1/media/thumbnail/{server}/{small}?width=32&height=32&method=crop");
    let t = bob.raw("GET", &path, &[], Vec::new()).await;
    assert_eq!(t.status, 200, "{:?}", t.json());
    let thumb = image::load_from_memory(&t.body).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (32, 32));
    assert!(hub.node().store.media(&p1_server, &small).unwrap().is_none(), "only the thumbnail came over");
    assert!(hub.node().store.thumbnail(&p1_server, &small, "32x32-crop").unwrap().is_some());

    // Authenticated media: no token, no file; the old endpoints are frozen.
    let anonymous = hub.client();
    assert_eq!(download(&anonymous, &server, &id).await.json()["errcode"], "M_MISSING_TOKEN");
    let legacy = anonymous.raw("GET", &format!("/_matrix/media/v3/download/{server}/{id}"), &[], Vec::new()).await;
    assert_eq!((legacy.status, legacy.json()["errcode"].clone()), (404, json!("M_NOT_FOUND")));
    let config = bob.ok("GET", "/_matrix/client/v1/media/config", None).await;
    assert_eq!(config["m.upload.size"], 50 << 20);

    // Unknown media: 404 locally and from the other server.
    let missing = download(&bob, &server, "NoSuchMedia").await;
    assert_eq!((missing.status, missing.json()["errcode"].clone()), (404, json!("M_NOT_FOUND")));
    let missing = download(&bob, &hub.name(), "NoSuchMedia").await;
    assert_eq!((missing.status, missing.json()["errcode"].clone()), (404, json!("M_NOT_FOUND")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_records_survive_a_restart() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let mut hub = Server::start(net.config("hub.test")).await;
    let alice = hub.client().register("alice").await;
    let (server, id) = mxc(&upload(&alice, "text/plain", "", b"kept across restarts".to_vec()).await);
    hub.restart().await;
    let alice = alice.on(&hub);
    let got = download(&alice, &server, &id).await;
    assert_eq!(got.body.as_ref(), b"kept across restarts");
    assert_eq!(got.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(got.header("content-disposition"), "inline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_id_waits_for_its_upload() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let hub = Server::start(net.config("hub.test")).await;
    let alice = hub.client().register("alice").await;
    let mallory = hub.client().register("mallory").await;
    let created = alice.ok("POST", "/_matrix/media/v1/create", Some(json!({}))).await;
    assert!(created["unused_expires_at"].as_i64().unwrap() > lmx::sys::now_ms());
    let uri = created["content_uri"].as_str().unwrap();
    let (server, id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    let (server, id) = (server.to_owned(), id.to_owned());

    let early =
        alice.raw("GET", &format!("/_matrix/client/v1/media/download/{server}/{id}?timeout_ms=100"), &[], vec![]).await;
    assert_eq!((early.status, early.json()["errcode"].clone()), (504, json!("M_NOT_YET_UPLOADED")));

    // A download waiting for the upload gets it when it comes.
    let waiting = {
        let c = hub.client().with_user_of(&alice);
        let path = format!("/_matrix/client/v1/media/download/{server}/{id}?timeout_ms=20000");
        tokio::spawn(async move { c.raw("GET", &path, &[], vec![]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let path = format!("/_matrix/media/v3/upload/{server}/{id}");
    let stolen = mallory.raw("PUT", &path, &[("content-type", "text/plain")], b"not yours".to_vec()).await;
    assert_eq!((stolen.status, stolen.json()["errcode"].clone()), (403, json!("M_FORBIDDEN")));
    let put = alice
        .raw("PUT", &format!("{path}?filename=late.txt"), &[("content-type", "text/plain")], b"at last".to_vec())
        .await;
    assert_eq!((put.status, put.json()), (200, json!({})));
    let got = waiting.await.unwrap();
    assert_eq!((got.status, got.body.as_ref()), (200, b"at last".as_slice()));
    let again = alice.raw("PUT", &path, &[("content-type", "text/plain")], b"twice".to_vec()).await;
    assert_eq!((again.status, again.json()["errcode"].clone()), (409, json!("M_CANNOT_OVERWRITE_MEDIA")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_input_are_refused_and_nothing_is_kept() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let mut config = net.config("hub.test");
    config.media.max_upload_bytes = 4096;
    config.media.user_quota_bytes = 6000;
    config.media.max_pending_per_user = 2;
    let media_dir = config.data_dir.join("media");
    let hub = Server::start(config).await;
    let alice = hub.client().register("alice").await;
    let user = lmx::core::ids::UserId::parse(&alice.user_id).unwrap();
    let errcode = |a: &RawAnswer| (a.status, a.json()["errcode"].as_str().unwrap_or("").to_owned());

    let big = upload(&alice, "application/octet-stream", "", vec![7; 5000]).await;
    assert_eq!(errcode(&big), (413, "M_TOO_LARGE".into()));
    let bad_type = upload(&alice, "not a type", "", b"x".to_vec()).await;
    assert_eq!(errcode(&bad_type), (400, "M_INVALID_PARAM".into()));
    let bad_name = upload(&alice, "text/plain", "?filename=..%2Fetc%2Fpasswd", b"x".to_vec()).await;
    assert_eq!(errcode(&bad_name), (400, "M_INVALID_PARAM".into()));
    assert!(hub.node().store.user_media(&user).unwrap().is_empty(), "nothing recorded");
    assert_eq!(files_under(&media_dir), 0, "no file left behind");

    // The quota counts what is kept.
    assert_eq!(upload(&alice, "text/plain", "", vec![b'a'; 4000]).await.status, 200);
    let over = upload(&alice, "text/plain", "", vec![b'b'; 4000]).await;
    assert_eq!(errcode(&over), (413, "M_TOO_LARGE".into()));
    assert_eq!(hub.node().store.user_media(&user).unwrap().len(), 1);
    assert_eq!(files_under(&media_dir), 1);

    // Reservations are bounded.
    for _ in 0..2 {
        alice.ok("POST", "/_matrix/media/v1/create", Some(json!({}))).await;
    }
    let third = alice.call("POST", "/_matrix/media/v1/create", Some(json!({}))).await;
    assert_eq!((third.status, third.body["errcode"].clone()), (429, json!("M_LIMIT_EXCEEDED")));

    // Ids with path characters, non-images, unknown paths and methods.
    let name = hub.name();
    let odd = download(&alice, &name, "..%2F..%2Fdb").await;
    assert_eq!(errcode(&odd), (400, "M_INVALID_PARAM".into()));
    let text = mxc(&upload(&alice, "text/plain", "", b"hi".to_vec()).await).1;
    let path = format!("/_matrix/client/v1/media/thumbnail/{name}/{text}?width=32&height=32");
    assert_eq!(errcode(&alice.raw("GET", &path, &[], vec![]).await), (400, "M_UNKNOWN".into()));
    let path = format!("/_matrix/client/v1/media/thumbnail/{name}/{text}?width=-1&height=32");
    assert_eq!(errcode(&alice.raw("GET", &path, &[], vec![]).await), (400, "M_INVALID_PARAM".into()));
    let unknown = alice.raw("POST", "/_matrix/media/v3/nonsense", &[], b"{not json".to_vec()).await;
    assert_eq!(errcode(&unknown), (404, "M_UNRECOGNIZED".into()));
    let wrong = alice.raw("GET", "/_matrix/media/v3/upload", &[], vec![]).await;
    assert_eq!(errcode(&wrong), (405, "M_UNRECOGNIZED".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_endpoints_are_unrecognized_whatever_their_body() {
    let mut net = Net::new();
    net.reserve("hub.test");
    let hub = Server::start(net.config("hub.test")).await;
    let alice = hub.client().register("alice").await;
    let errcode = |a: &RawAnswer| (a.status, a.json()["errcode"].as_str().unwrap_or("").to_owned());
    for path in ["/_matrix/client/v3/no/such/thing", "/_matrix/client/v1/nothing", "/_matrix/nope"] {
        let a = alice.raw("POST", path, &[("content-type", "application/json")], b"{not json".to_vec()).await;
        assert_eq!(errcode(&a), (404, "M_UNRECOGNIZED".into()), "{path}");
    }
    let a = alice.raw("POST", "/_matrix/client/v3/createRoom", &[], b"{not json".to_vec()).await;
    assert_eq!(errcode(&a), (400, "M_NOT_JSON".into()));
    let a = alice.raw("DELETE", "/_matrix/client/v3/createRoom", &[], b"{not json".to_vec()).await;
    assert_eq!(errcode(&a), (405, "M_UNRECOGNIZED".into()));

    // Capabilities say what is served: every room version createRoom
    // takes, and the profile changes that work.
    let caps = alice.ok("GET", "/_matrix/client/v3/capabilities", None).await["capabilities"].clone();
    let versions = &caps["m.room_versions"]["available"];
    for v in ["10", "11", "12"] {
        assert_eq!(versions[v], "stable", "{caps}");
        let room = alice.call("POST", "/_matrix/client/v3/createRoom", Some(json!({"room_version": v}))).await;
        assert_eq!(room.status, 200, "{v}: {}", room.body);
    }
    let default = caps["m.room_versions"]["default"].as_str().unwrap();
    assert_eq!(versions[default], "unstable");
    assert_eq!(versions.as_object().unwrap().len(), 4, "{versions}");
    assert_eq!(caps["m.set_displayname"]["enabled"], true);
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id));
    alice.ok("PUT", &path, Some(json!({"displayname": "Alice"}))).await;
    assert_eq!(alice.ok("GET", &path, None).await["displayname"], Value::from("Alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_keeps_remote_files_within_its_cache() {
    let mut net = Net::new();
    for h in ["hub.test", "f.test"] {
        net.reserve(h);
    }
    let hub = Server::start(net.config("hub.test")).await;
    let mut fconfig = net.config("f.test");
    fconfig.mode = lmx::config::Mode::Follower;
    fconfig.media.remote_cache_bytes = Some(5000);
    let follower = Server::start(fconfig).await;
    let alice = hub.client().register("alice").await;
    let bob = follower.client().register("bob").await;
    let mut ids = Vec::new();
    for n in 0..3u8 {
        ids.push(mxc(&upload(&alice, "application/octet-stream", "", vec![n; 2000]).await).1);
    }
    let hub_name = lmx::core::ids::ServerName::parse(&hub.name()).unwrap();
    for (n, id) in ids.iter().enumerate() {
        let got = download(&bob, &hub.name(), id).await;
        assert_eq!(got.body.as_ref(), vec![n as u8; 2000].as_slice());
    }
    let kept: Vec<bool> = ids.iter().map(|id| follower.node().store.media(&hub_name, id).unwrap().is_some()).collect();
    assert_eq!(kept, [false, true, true], "the oldest fetched went first");
    // Dropped from the cache, fetched again on demand.
    let again = download(&bob, &hub.name(), &ids[0]).await;
    assert_eq!(again.body.as_ref(), vec![0u8; 2000].as_slice());
}
