//! Passing a request on to another process of the same server: a standby
//! forwards to the process that serves (`storage.postgres.standby =
//! "forward"`). Bodies stream both ways; hop-by-hop headers stay behind;
//! the caller's address goes on in `X-Forwarded-For` (the serving process
//! trusts it when the forwarder's address is in `client.trusted_proxies`).
//! What one forwarder holds is bounded: requests in flight, the time to
//! connect and to the answer's head. Plain hops reuse pooled connections;
//! TLS hops (federation) take a connection per request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as PooledClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

use super::{json_response, Body};

/// Requests one forwarder has in flight at most; beyond, `503`.
const MAX_IN_FLIGHT: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the answer's head: above the longest `/sync` wait.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// Headers of one connection, not of the request (RFC 9110, 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter().map(|n| HeaderName::from_static(n)).collect::<Vec<_>>().iter()) {
        headers.remove(name);
    }
}

/// `X-Forwarded-For` with `remote` appended to what the caller sent.
pub fn forwarded_for(existing: Option<&HeaderValue>, remote: IpAddr) -> HeaderValue {
    let earlier = existing.and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let value = match earlier {
        Some(e) => format!("{e}, {remote}"),
        None => remote.to_string(),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_str(&remote.to_string()).expect("an address"))
}

fn unavailable(why: &str) -> Response<Body> {
    let mut r = json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"errcode": "M_UNKNOWN", "error": why}));
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// How to reach the serving process's listener.
#[derive(Clone)]
pub enum Hop {
    Plain,
    /// TLS, the certificate checked for `name` (the server's own name).
    Tls {
        connector: TlsConnector,
        name: rustls::pki_types::ServerName<'static>,
    },
}

pub struct Forwarder {
    hop: Hop,
    in_flight: Arc<Semaphore>,
    pooled: PooledClient<HttpConnector, Incoming>,
}

impl Forwarder {
    pub fn new(hop: Hop) -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let pooled = PooledClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        Forwarder { hop, in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)), pooled }
    }

    /// `req`, from `remote`, passed on to `to` (`host:port`); the answer
    /// as it comes, or `503` when `to` cannot be reached.
    pub async fn forward(&self, req: Request<Incoming>, remote: SocketAddr, to: &str) -> Response<Body> {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            return unavailable("too many requests in flight to the serving process");
        };
        let (mut parts, body) = req.into_parts();
        if !parts.headers.contains_key(header::HOST) {
            let host = parts.uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_else(|| to.to_owned());
            if let Ok(v) = HeaderValue::from_str(&host) {
                parts.headers.insert(header::HOST, v);
            }
        }
        strip_hop_by_hop(&mut parts.headers);
        let xff = forwarded_for(parts.headers.get("x-forwarded-for"), remote.ip());
        parts.headers.insert(HeaderName::from_static("x-forwarded-for"), xff);
        parts.version = Version::HTTP_11;
        let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
        let answer = match &self.hop {
            Hop::Plain => match format!("http://{to}{path}").parse() {
                Ok(uri) => {
                    parts.uri = uri;
                    let pending = self.pooled.request(Request::from_parts(parts, body));
                    let answer = match tokio::time::timeout(ANSWER_TIMEOUT, pending).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err("no answer in time".into()),
                    };
                    drop(permit);
                    answer
                }
                Err(_) => Err(format!("not an address: {to}")),
            },
            Hop::Tls { connector, name } => {
                parts.uri = path.parse().expect("a path is a URI");
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
                    Ok(Ok(tcp)) => {
                        let _ = tcp.set_nodelay(true);
                        match connector.connect(name.clone(), tcp).await {
                            Ok(tls) => send(TokioIo::new(tls), Request::from_parts(parts, body), permit).await,
                            Err(e) => Err(format!("TLS: {e}")),
                        }
                    }
                    _ => Err("cannot connect".into()),
                }
            }
        };
        match answer {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.map_err(std::io::Error::other).boxed_unsync())
            }
            Err(e) => {
                tracing::debug!(error = %e, to, "forwarding failed");
                unavailable("the serving process did not answer; try again")
            }
        }
    }
}

/// One request on a connection of its own, which lives (holding `permit`)
/// until the answer's body has been read.
async fn send<I>(
    io: TokioIo<I>,
    req: Request<Incoming>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<Response<Incoming>, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _permit = permit;
        let _ = conn.await;
    });
    match tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(req)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_stay_behind_and_the_caller_is_named() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["authorization"]);

        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(forwarded_for(None, ip), "192.0.2.7");
        assert_eq!(forwarded_for(Some(&HeaderValue::from_static("198.51.100.1")), ip), "198.51.100.1, 192.0.2.7");
        assert_eq!(forwarded_for(Some(&HeaderValue::from_static(" ")), ip), "192.0.2.7");
    }
}
