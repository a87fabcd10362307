//! One request over plain HTTP/1.1 to a loopback listener, for the
//! commands that talk to a running server (`lmx health`, `lmx admin`).

use std::time::Duration;

/// `method path` on the server at `url` (`http://host:port`, any path in
/// it ignored): the status and the body.
pub fn request(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
    within: Duration,
) -> anyhow::Result<(u16, bytes::Bytes)> {
    use http_body_util::BodyExt;
    let base: http::Uri = url.parse()?;
    anyhow::ensure!(base.scheme_str() == Some("http"), "only http:// URLs: {url}");
    let host = base.host().ok_or_else(|| anyhow::anyhow!("no host in {url}"))?.to_owned();
    let port = base.port_u16().unwrap_or(80);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let ask = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            let mut request = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, format!("{host}:{port}"))
                .header(http::header::CONTENT_TYPE, "application/json");
            if let Some(t) = token {
                request = request.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let request = request.body(http_body_util::Full::new(bytes::Bytes::from(body.unwrap_or_default())))?;
            let answer = sender.send_request(request).await?;
            let status = answer.status().as_u16();
            anyhow::Ok((status, answer.into_body().collect().await?.to_bytes()))
        };
        tokio::time::timeout(within, ask).await?
    })
}
