//! URL previews against a small web server run by the test: Open Graph
//! data, the page's image kept as media, redirects, and the addresses and
//! inputs a preview must refuse.

mod common;

use std::io::Cursor;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(40, 30, image::Rgb([200, 10, 10]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

/// A web server on loopback: `/page` (HTML), `/cat.png`, `/go` (a
/// redirect to `/page`), `/huge` (2 MiB of HTML).
async fn web() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, ctype, body): (&str, &str, Vec<u8>) = match path.as_str() {
                    "/page" => (
                        "200 OK",
                        "text/html; charset=utf-8",
                        br#"<html><head><title>Cats</title>
                        <meta property="og:title" content="All about cats">
                        <meta property="og:description" content="Furry">
                        <meta property="og:image" content="/cat.png"></head><body>meow</body></html>"#
                            .to_vec(),
                    ),
                    "/cat.png" => ("200 OK", "image/png", png()),
                    "/go" => ("302 Found", "text/plain", Vec::new()),
                    "/huge" => ("200 OK", "text/html", vec![b'a'; 2 << 20]),
                    _ => ("404 Not Found", "text/plain", b"no".to_vec()),
                };
                let location = if path == "/go" { "Location: /page\r\n" } else { "" };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{location}Connection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_images_are_previewed_and_private_addresses_refused() {
    let site = web().await;
    let mut net = Net::new();
    net.reserve("hub.test");
    net.reserve("strict.test");
    let mut config = net.config("hub.test");
    config.media.preview_allow_ip_ranges = vec!["127.0.0.0/8".parse().unwrap()];
    let hub = Server::start(config).await;
    let strict = Server::start(net.config("strict.test")).await;
    let alice = hub.client().register("alice").await;
    let preview = |url: String| format!("/_matrix/client/v1/media/preview_url?url={}", enc(&url));

    for path in ["/page", "/go"] {
        let og = alice.ok("GET", &preview(format!("http://{site}{path}")), None).await;
        assert_eq!((&og["og:title"], &og["og:description"]), (&json!("All about cats"), &json!("Furry")), "{path}");
        assert_eq!((&og["og:image:width"], &og["og:image:height"]), (&json!(40), &json!(30)));
        let mxc = og["og:image"].as_str().unwrap().strip_prefix("mxc://").unwrap().to_owned();
        let got = alice.raw("GET", &format!("/_matrix/client/v1/media/download/{mxc}"), &[], vec![]).await;
        assert_eq!(got.body.as_ref(), png().as_slice(), "{path}: the page's image, kept");
    }
    let image = alice.ok("GET", &preview(format!("http://{site}/cat.png")), None).await;
    assert_eq!(image["og:image:type"], "image/png");

    let code = |a: &Answer| (a.status, a.body["errcode"].as_str().unwrap_or("").to_owned());
    let big = alice.call("GET", &preview(format!("http://{site}/huge")), None).await;
    assert_eq!(code(&big), (502, "M_TOO_LARGE".into()));
    let file = alice.call("GET", &preview("file:///etc/passwd".into()), None).await;
    assert_eq!(code(&file), (400, "M_INVALID_PARAM".into()));
    assert_eq!(hub.client().call("GET", &preview(format!("http://{site}/page")), None).await.status, 401);

    // Without an allowed range, loopback and private addresses are refused
    // however they are spelled.
    let bob = strict.client().register("bob").await;
    let port = site.port();
    for url in [
        format!("http://{site}/page"),
        format!("http://localhost:{port}/page"),
        format!("http://[::1]:{port}/page"),
        format!("http://[::ffff:127.0.0.1]:{port}/page"),
        "http://10.1.2.3/".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
    ] {
        let refused = bob.call("GET", &preview(url.clone()), None).await;
        assert_eq!(code(&refused), (403, "M_FORBIDDEN".into()), "{url}");
    }
}
