//! HTTP plumbing shared by the federation and client surfaces: body limits
//! and the body byte budget, JSON bodies, client addresses behind proxies,
//! TLS, and a server loop (HTTP/1.1 and HTTP/2). What a failure answers is
//! decided above, in `wire`.

pub mod observe;
pub mod routes;
mod server;
pub mod tls;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::core::json::{self, NumberPolicy, Object};

pub use server::{serve, Handler, Limits, Served, SharedLimits};

/// A response body: bytes at hand, or a file streamed as it is read.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// A body of bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// `head`, then `file` read in chunks, then `tail`.
pub fn framed_file_body(head: Bytes, file: tokio::fs::File, tail: Bytes) -> Body {
    use futures_util::{stream, StreamExt, TryStreamExt};
    let file = tokio_util::io::ReaderStream::new(file);
    let frames = stream::once(async { Ok(head) }).chain(file).chain(stream::once(async { Ok(tail) }));
    http_body_util::StreamBody::new(frames.map_ok(hyper::body::Frame::data)).boxed_unsync()
}

/// A body read from `file` in chunks as the connection takes them.
pub fn file_body(file: tokio::fs::File) -> Body {
    use futures_util::TryStreamExt;
    let frames = tokio_util::io::ReaderStream::new(file).map_ok(hyper::body::Frame::data);
    http_body_util::StreamBody::new(frames).boxed_unsync()
}

pub use crate::core::event::MAX_SEND_BODY;
/// Largest body of any other request.
pub const MAX_BODY: usize = 1 << 20;

/// Why a request body could not be taken. The surfaces turn it into an
/// answer (`wire::answer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit (bytes).
    TooLarge(usize),
    /// The connection failed while the body arrived.
    Unreadable(String),
    /// The listener's body budget stayed spent.
    Busy,
    /// The body took longer than the read timeout.
    Slow,
    NotJson(String),
    NotObject,
}

pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(full(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn ok_json(value: &Value) -> Response<Body> {
    json_response(StatusCode::OK, value)
}

/// The request body bytes a listener holds in memory at once, across all
/// its connections, and how long one body may take to arrive. The listener
/// puts it in every request's extensions.
#[derive(Clone)]
pub struct BodyBudget {
    pub bytes: Arc<Semaphore>,
    pub read_timeout: Duration,
}

/// How long a body waits for room in a full budget before it is refused.
const BUDGET_WAIT: Duration = Duration::from_secs(10);

impl BodyBudget {
    /// The budget the listener attached to `req` (one of its own when the
    /// request did not come through a listener).
    pub fn of<B>(req: &http::Request<B>) -> BodyBudget {
        req.extensions().get::<BodyBudget>().cloned().unwrap_or_else(|| BodyBudget {
            bytes: Arc::new(Semaphore::new(MAX_SEND_BODY)),
            read_timeout: Duration::from_secs(60),
        })
    }
}

/// Budget held by a body that was read: keep it while the body (or what
/// was parsed from it) is in use.
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// Reads a request body of at most `limit` bytes, taking its size from
/// the listener's budget as it arrives (waiting a little when the budget is
/// spent, then refusing with `429`), within the budget's read timeout.
pub async fn read_body<B>(mut body: B, limit: usize, budget: &BodyBudget) -> Result<(Bytes, Held), BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let too_large = || BodyError::TooLarge(limit);
    let read = async {
        let mut buf = bytes::BytesMut::new();
        let mut held: Option<OwnedSemaphorePermit> = None;
        // Over the limit, the rest is read and dropped (up to as much again)
        // so the sender gets the answer rather than a reset connection.
        let mut discarded: Option<usize> = (body.size_hint().lower() > limit as u64).then_some(0);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Unreadable(e.to_string()))?;
            let Ok(data) = frame.into_data() else { continue };
            if let Some(n) = discarded.as_mut() {
                *n += data.len();
                if *n > limit {
                    return Err(too_large());
                }
                continue;
            }
            if buf.len() + data.len() > limit {
                drop(held.take());
                buf = bytes::BytesMut::new();
                discarded = Some(data.len());
                continue;
            }
            if data.is_empty() {
                continue;
            }
            let want = u32::try_from(data.len()).map_err(|_| too_large())?;
            let permit = tokio::time::timeout(BUDGET_WAIT, budget.bytes.clone().acquire_many_owned(want))
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or(BodyError::Busy)?;
            match held.as_mut() {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            buf.extend_from_slice(&data);
        }
        if discarded.is_some() {
            return Err(too_large());
        }
        Ok((buf.freeze(), Held(held)))
    };
    tokio::time::timeout(budget.read_timeout, read).await.map_err(|_| BodyError::Slow)?
}

/// Parses a body that must be a JSON object (an empty body counts as `{}`
/// only where `empty_ok`).
pub fn json_object(bytes: &[u8], policy: NumberPolicy, empty_ok: bool) -> Result<Object, BodyError> {
    if empty_ok && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Object::new());
    }
    match json::parse(bytes, policy) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(BodyError::NotObject),
        Err(e) => Err(BodyError::NotJson(e.to_string())),
    }
}

/// The address a request comes from: the peer's, or, when the peer is a
/// trusted reverse proxy, the nearest `X-Forwarded-For` hop that is not one
/// itself (read right to left, as each proxy appends the address it saw).
pub fn client_ip(peer: IpAddr, headers: &http::HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(&canonical_ip(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else { break };
        client = canonical_ip(ip);
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Splits a request path into percent-decoded segments. A path with a
/// trailing or doubled slash keeps its empty segment, so it matches no route
/// (checklist item 123).
pub fn path_segments(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('/')?;
    rest.split('/')
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned()))
        .collect()
}

/// Query parameters, percent-decoded; repeated keys keep every value.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                let s = s.replace('+', " ");
                percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

pub fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Percent-encodes a path segment (ids contain `!`, `$`, `:`, `@`).
pub fn encode_segment(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: usize) -> BodyBudget {
        BodyBudget { bytes: Arc::new(Semaphore::new(bytes)), read_timeout: Duration::from_secs(60) }
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_take_from_the_budget_and_wait_for_it() {
        let b = budget(100);
        let (first, held) = read_body(Full::new(Bytes::from(vec![b'a'; 80])), 1_000, &b).await.unwrap();
        assert_eq!((first.len(), b.bytes.available_permits()), (80, 20));
        // Over the limit: refused, and nothing stays taken.
        let e = read_body(Full::new(Bytes::from(vec![b'b'; 2_000])), 1_000, &b).await.unwrap_err();
        assert_eq!(e, BodyError::TooLarge(1_000));
        assert_eq!(b.bytes.available_permits(), 20);
        // The budget is spent: a second body waits, then is refused.
        let e = read_body(Full::new(Bytes::from(vec![b'c'; 50])), 1_000, &b).await.unwrap_err();
        assert_eq!(e, BodyError::Busy);
        // Once the first is done with, it fits.
        drop(held);
        let (third, _held) = read_body(Full::new(Bytes::from(vec![b'c'; 50])), 1_000, &b).await.unwrap();
        assert_eq!(third.len(), 50);
    }

    #[test]
    fn segments_and_queries() {
        assert_eq!(path_segments("/_matrix/a%21b").unwrap(), ["_matrix", "a!b"]);
        assert_eq!(path_segments("/a/").unwrap(), ["a", ""]);
        assert_eq!(path_segments("//a").unwrap(), ["", "a"]);
        let q = query_pairs(Some("v=%24a&v=%24b&limit=5"));
        assert_eq!(q.len(), 3);
        assert_eq!(query_get(&q, "limit"), Some("5"));
        assert_eq!(encode_segment("!r:a.b"), "%21r%3Aa.b");
        let trusted: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let mut h = http::HeaderMap::new();
        h.append("x-forwarded-for", "203.0.113.9, 198.51.100.7".parse().unwrap());
        h.append("x-forwarded-for", "10.1.1.1".parse().unwrap());
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(client_ip(proxy, &h, &trusted), "198.51.100.7".parse::<IpAddr>().unwrap());
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(stranger, &h, &trusted), stranger, "only trusted proxies may speak for others");
        assert_eq!(client_ip(proxy, &http::HeaderMap::new(), &trusted), proxy);
    }
}
