//! Passing a request on to another process of the same server: a standby
//! forwards to the process that serves (`storage.postgres.standby =
//! "forward"`). Bodies stream both ways; hop-by-hop headers stay behind;
//! the caller's address goes on in `X-Forwarded-For` (the serving process
//! trusts it when the forwarder's address is in `client.trusted_proxies`).
//!
//! What one forwarder holds is bounded: requests in flight in all and per
//! caller, each counted until its answer's body is done (so are the
//! upstream connections: one per request in flight), the time to connect
//! and to the answer's head. Plain hops reuse pooled connections; TLS hops
//! (federation) take a connection per request. A request that already
//! came through a forwarder is not forwarded again, so a stale address
//! (a standby restarted where the serving process was) cannot loop.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as PooledClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use crate::http::Body;
use crate::wire::{answer, Failure, Surface};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the answer's head: just above the longest `/sync` wait.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(130);
/// Marks a forwarded request.
const FORWARDED: &str = "x-lmx-forwarded";

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
    let mut names: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    names.extend(HOP_BY_HOP.iter().map(|n| HeaderName::from_static(n)));
    for name in &names {
        headers.remove(name);
    }
}

/// `X-Forwarded-For` with `remote` appended to every line the caller sent
/// (a proxy before this one may have added a line of its own).
pub fn forwarded_for(headers: &HeaderMap, remote: IpAddr) -> HeaderValue {
    let mut hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let remote = remote.to_string();
    hops.push(&remote);
    HeaderValue::from_str(&hops.join(", ")).unwrap_or_else(|_| HeaderValue::from_str(&remote).expect("an address"))
}

/// `503` with `Retry-After`, for a caller to try again shortly.
pub fn unavailable(why: &str, retry_after_secs: u64) -> Response<Body> {
    let mut r = answer(Surface::Client, &Failure::Unavailable(why.to_owned())).into_response();
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    r
}

/// Requests in flight, in all and per caller.
pub struct InFlight {
    max_total: usize,
    max_per_caller: usize,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One request's place, given back when dropped.
pub struct Ticket {
    of: Arc<InFlight>,
    caller: IpAddr,
}

impl InFlight {
    pub fn new(max_total: usize, max_per_caller: usize) -> Arc<InFlight> {
        Arc::new(InFlight { max_total, max_per_caller, counts: Mutex::new((0, HashMap::new())) })
    }

    pub fn take(self: &Arc<Self>, caller: IpAddr) -> Option<Ticket> {
        let mut c = self.counts.lock().expect("poisoned");
        let mine = c.1.get(&caller).copied().unwrap_or(0);
        if c.0 >= self.max_total || mine >= self.max_per_caller {
            return None;
        }
        c.0 += 1;
        *c.1.entry(caller).or_default() += 1;
        Some(Ticket { of: self.clone(), caller })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.of.counts.lock().expect("poisoned");
        c.0 -= 1;
        if let Some(n) = c.1.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                c.1.remove(&self.caller);
            }
        }
    }
}

/// How to reach the serving process's listener.
#[derive(Clone)]
pub enum Hop {
    Plain,
    /// TLS, the certificate checked by `connector` (the server's own);
    /// `name` is sent as SNI.
    Tls {
        connector: TlsConnector,
        name: rustls::pki_types::ServerName<'static>,
    },
}

impl Hop {
    /// TLS to another process of this server, which presents the
    /// certificate the processes share: that one alone is trusted.
    pub fn to_own_processes(config: &crate::config::Config) -> anyhow::Result<Hop> {
        let connector = crate::http::tls::pinned_connector(&config.tls_cert_path())?;
        let name = rustls::pki_types::ServerName::try_from(config.server_name().host().to_owned())?;
        Ok(Hop::Tls { connector, name })
    }
}

pub struct Forwarder {
    hop: Hop,
    in_flight: Arc<InFlight>,
    pooled: PooledClient<HttpConnector, Incoming>,
}

impl Forwarder {
    pub fn new(hop: Hop, in_flight: Arc<InFlight>) -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let pooled = PooledClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        Forwarder { hop, in_flight, pooled }
    }

    /// `req`, from `remote`, passed on to `to` (`host:port`); the answer
    /// as it comes, or `503` when `to` cannot be reached or `changed`
    /// says the serving process moved meanwhile.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
        to: &str,
        mut changed: watch::Receiver<u64>,
    ) -> Response<Body> {
        if req.headers().contains_key(FORWARDED) {
            return unavailable("the serving process is not known here yet; try again", 1);
        }
        let Some(ticket) = self.in_flight.take(remote.ip()) else {
            return unavailable("too many requests in flight to the serving process", 1);
        };
        let (mut parts, body) = req.into_parts();
        if !parts.headers.contains_key(header::HOST) {
            let host = parts.uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_else(|| to.to_owned());
            if let Ok(v) = HeaderValue::from_str(&host) {
                parts.headers.insert(header::HOST, v);
            }
        }
        strip_hop_by_hop(&mut parts.headers);
        let xff = forwarded_for(&parts.headers, remote.ip());
        parts.headers.insert(HeaderName::from_static("x-forwarded-for"), xff);
        parts.headers.insert(HeaderName::from_static(FORWARDED), HeaderValue::from_static("1"));
        parts.version = Version::HTTP_11;
        let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
        let exchange = async {
            match &self.hop {
                Hop::Plain => {
                    parts.uri = format!("http://{to}{path}").parse().map_err(|_| format!("not an address: {to}"))?;
                    self.pooled.request(Request::from_parts(parts, body)).await.map_err(|e| e.to_string())
                }
                Hop::Tls { connector, name } => {
                    parts.uri = path.parse().expect("a path is a URI");
                    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to))
                        .await
                        .map_err(|_| "connect timed out".to_owned())?
                        .map_err(|e| e.to_string())?;
                    let _ = tcp.set_nodelay(true);
                    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| "TLS handshake timed out".to_owned())?
                        .map_err(|e| format!("TLS: {e}"))?;
                    send(TokioIo::new(tls), Request::from_parts(parts, body)).await
                }
            }
        };
        let answer = tokio::select! {
            a = tokio::time::timeout(ANSWER_TIMEOUT, exchange) => a.unwrap_or_else(|_| Err("no answer in time".into())),
            _ = changed.changed() => Err("the serving process changed".into()),
        };
        match answer {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                // The ticket is held until the body is done or dropped.
                let body = body.map_err(move |e| {
                    let _held = &ticket;
                    std::io::Error::other(e)
                });
                Response::from_parts(parts, body.boxed_unsync())
            }
            Err(e) => {
                tracing::debug!(error = %e, to, "forwarding failed");
                unavailable("the serving process did not answer; try again", 1)
            }
        }
    }
}

/// One request on a connection of its own, which lives until the answer's
/// body has been read.
async fn send<I>(io: TokioIo<I>, req: Request<Incoming>) -> Result<Response<Incoming>, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_stay_behind_and_every_caller_is_named() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["authorization"]);

        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(forwarded_for(&h, ip), "192.0.2.7");
        // A forged first line and a proxy's own line: both kept, in order,
        // so the serving process reads from the right.
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.1, 203.0.113.9"));
        assert_eq!(forwarded_for(&h, ip), "6.6.6.6, 198.51.100.1, 203.0.113.9, 192.0.2.7");
    }

    #[test]
    fn requests_in_flight_are_bounded_in_all_and_per_caller() {
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap(), "192.0.2.3".parse().unwrap());
        let limits = InFlight::new(3, 2);
        let a1 = limits.take(a).unwrap();
        let _a2 = limits.take(a).unwrap();
        assert!(limits.take(a).is_none(), "a caller's share");
        let _b1 = limits.take(b).unwrap();
        assert!(limits.take(c).is_none(), "the total");
        drop(a1);
        assert!(limits.take(c).is_some(), "a place given back");
    }
}
