//! Requests to addresses users give: web pages for URL previews and push
//! gateways. `http` and `https` only, every address a name resolves to
//! checked against an outbound address policy (with
//! `media.preview_allow_ip_ranges` or `push.allow_ip_ranges`), the
//! connection made to the checked address itself (no second look-up a
//! rebinding name could turn), at most three redirects for a page (each
//! checked again, none for a push), a time limit and a size limit.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

use super::policy::AddressPolicy;
use crate::wire::Failure;

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 3;

pub struct Page {
    pub url: String,
    pub content_type: String,
    pub body: Bytes,
}

fn refused(why: impl std::fmt::Display) -> Failure {
    Failure::forbidden(format!("This address may not be reached: {why}"))
}

fn tls() -> Option<tokio_rustls::TlsConnector> {
    static TLS: OnceLock<Option<tokio_rustls::TlsConnector>> = OnceLock::new();
    TLS.get_or_init(|| {
        let mut config = crate::http::tls::client_config(false, None).ok()?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
    })
    .clone()
}

/// `url`'s body (following redirects), at most `limit` bytes.
pub async fn fetch(url: &str, policy: &AddressPolicy, limit: usize) -> Result<Page, Failure> {
    tokio::time::timeout(TIMEOUT, async {
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            match exchange(&url, None, policy, limit).await? {
                Fetched::Page(page) => return Ok(page),
                Fetched::Redirect(to) => {
                    url = crate::media::preview::absolute(&url, &to).ok_or_else(|| refused("a bad redirect"))?;
                }
                Fetched::Answer(..) => return Err(Failure::failed("a GET answered as a POST")),
            }
        }
        Err(Failure::Remote("Too many redirects".into()))
    })
    .await
    .map_err(|_| Failure::Remote("The page took too long".into()))?
}

enum Fetched {
    Page(Page),
    Redirect(String),
    /// A POST's answer, whatever its status.
    Answer(PostAnswer),
}

/// A POST's answer: its status, body and `Retry-After` (in seconds).
pub struct PostAnswer {
    pub status: StatusCode,
    pub body: Bytes,
    pub retry_after: Option<Duration>,
}

/// POSTs a JSON body to `url` (no redirects followed): the answer, with at
/// most `limit` bytes of its body.
pub async fn post_json(
    url: &str,
    body: Vec<u8>,
    policy: &AddressPolicy,
    limit: usize,
    timeout: Duration,
) -> Result<PostAnswer, Failure> {
    let fetched = tokio::time::timeout(timeout, exchange(url, Some(body), policy, limit))
        .await
        .map_err(|_| Failure::Remote("The gateway took too long".into()))??;
    match fetched {
        Fetched::Answer(answer) => Ok(answer),
        Fetched::Page(_) | Fetched::Redirect(_) => Err(Failure::failed("a POST answered as a GET")),
    }
}

/// A GET (no body) or a JSON POST.
async fn exchange(url: &str, post: Option<Vec<u8>>, policy: &AddressPolicy, limit: usize) -> Result<Fetched, Failure> {
    let uri: Uri = url.parse().map_err(|_| Failure::invalid_param("Not a URL"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(Failure::invalid_param("Only http and https URLs are previewed")),
    };
    let host =
        uri.host().ok_or_else(|| Failure::invalid_param("The URL has no host"))?.trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| Failure::Remote(format!("{host} does not resolve")))?
        .collect();
    if addrs.is_empty() {
        return Err(Failure::Remote(format!("{host} does not resolve")));
    }
    // One forbidden address refuses the name: which one a connection
    // would use is not ours to choose.
    for a in &addrs {
        policy.check(a.ip()).map_err(refused)?;
    }
    let tcp = tokio::net::TcpStream::connect(addrs[0]).await.map_err(|e| Failure::Remote(format!("{host}: {e}")))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let authority = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or(host.clone());
    let is_post = post.is_some();
    let request = match post {
        None => Request::get(path)
            .header(header::USER_AGENT, "lmx URL preview")
            .header(header::ACCEPT, "text/html, image/*;q=0.9, */*;q=0.1"),
        Some(_) => {
            Request::post(path).header(header::USER_AGENT, "lmx push").header(header::CONTENT_TYPE, "application/json")
        }
    }
    .header(header::HOST, authority)
    .body(Full::new(Bytes::from(post.unwrap_or_default())))
    .map_err(Failure::failed)?;
    let response = if https {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| refused("a bad host name"))?;
        let stream = tls()
            .ok_or_else(|| Failure::failed("no TLS roots"))?
            .connect(name, tcp)
            .await
            .map_err(|e| Failure::Remote(format!("{host}: {e}")))?;
        send(TokioIo::new(stream), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    let status = response.status();
    if is_post {
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|_| Failure::RemoteTooLarge(format!("The answer of {host} is too large or broken")))?
            .to_bytes();
        return Ok(Fetched::Answer(PostAnswer { status, body, retry_after }));
    }
    if status.is_redirection() {
        let to = response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        return Ok(Fetched::Redirect(to));
    }
    if status != StatusCode::OK {
        return Err(Failure::Remote(format!("{host} answered {}", status.as_u16())));
    }
    let content_type =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|_| Failure::RemoteTooLarge(format!("The page at {host} is too large or broken")))?
        .to_bytes();
    Ok(Fetched::Page(Page { url: url.to_owned(), content_type, body }))
}

async fn send<T>(
    io: TokioIo<T>,
    request: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| Failure::Remote(e.to_string()))?;
    tokio::spawn(conn);
    sender.send_request(request).await.map_err(|e| Failure::Remote(e.to_string()))
}
