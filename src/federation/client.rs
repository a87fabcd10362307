//! Outbound federation HTTP: discovery, TLS (ALPN h2 with HTTP/1.1
//! fallback) or plain HTTP, a small connection pool, request signing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::discovery::{self, Target, WellKnownCache};
use super::policy::AddressPolicy;
use super::xmatrix;
use crate::core::crypto::SigningKey;
use crate::core::ids::ServerName;
use crate::core::json::{self, NumberPolicy};

/// Largest response accepted (a big room's `send_join` state).
const MAX_RESPONSE: usize = 64 << 20;
/// Largest key response (a handful of keys and signatures).
pub const MAX_KEY_RESPONSE: usize = 1 << 20;
/// Largest well-known answer.
const MAX_WELL_KNOWN: usize = 64 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pooled connection targets kept; more are dropped (names are chosen by
/// whoever makes us call them).
const MAX_POOLED_TARGETS: usize = 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FedError {
    #[error("{0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("request to {0} timed out")]
    Timeout(String),
    #[error("{0} answered {1}: {2}")]
    Status(String, StatusCode, String),
    #[error("bad response from {0}: {1}")]
    BadResponse(String, String),
    /// The answer was over the size the caller takes.
    #[error("the answer from {0} is over {1} bytes")]
    TooLarge(String, usize),
}

impl FedError {
    /// What a client or another server may be told: which server failed and
    /// how, without connection details, resolved addresses or the peer's
    /// own words (those go to the log).
    pub fn public(&self) -> String {
        match self {
            FedError::Unreachable(server, _) => format!("{server} is unreachable"),
            FedError::Timeout(server) => format!("request to {server} timed out"),
            FedError::Status(server, status, _) => match self.errcode() {
                Some(code) if code.len() <= 64 && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') => {
                    format!("{server} answered {} {code}", status.as_u16())
                }
                _ => format!("{server} answered {}", status.as_u16()),
            },
            FedError::BadResponse(server, _) => format!("bad response from {server}"),
            FedError::TooLarge(server, limit) => format!("the answer from {server} is over {limit} bytes"),
        }
    }

    /// The error as a room error, logged in full once here.
    pub fn into_room_error(self) -> crate::room::RoomError {
        tracing::info!(error = %self, "a call to another server failed");
        crate::room::RoomError::Remote(self.public())
    }

    /// The Matrix error code of an error answer, if the peer sent one.
    pub fn errcode(&self) -> Option<String> {
        self.error_body()?.get("errcode")?.as_str().map(str::to_owned)
    }

    /// The JSON error body of an error answer.
    pub fn error_body(&self) -> Option<Value> {
        match self {
            FedError::Status(_, _, body) => serde_json::from_str(body).ok(),
            _ => None,
        }
    }

    /// The peer does not serve the endpoint (`M_UNRECOGNIZED`).
    pub fn is_unrecognized(&self) -> bool {
        self.errcode().as_deref() == Some("M_UNRECOGNIZED")
    }

    /// A media id reserved on the peer still waits for its upload.
    pub fn is_not_yet_uploaded(&self) -> bool {
        self.errcode().as_deref() == Some("M_NOT_YET_UPLOADED")
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            FedError::Status(_, s, _) => Some(*s),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct FedResponse {
    pub status: StatusCode,
    pub body: Bytes,
    pub content_type: Option<String>,
    pub retry_after_ms: Option<u64>,
}

impl FedResponse {
    /// Parses the body as JSON, liberal in numbers (peers may send floats).
    pub fn json(&self, dest: &str) -> Result<Value, FedError> {
        json::parse(&self.body, NumberPolicy::Ieee754)
            .map_err(|e| FedError::BadResponse(dest.to_owned(), e.to_string()))
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_usable(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }
}

pub struct FedClient {
    key: SigningKey,
    tls: Option<TlsConnector>,
    resolve: HashMap<String, SocketAddr>,
    policy: AddressPolicy,
    well_known: WellKnownCache,
    pool: Mutex<HashMap<String, Vec<Sender>>>,
    timeout: Duration,
}

impl FedClient {
    /// Forgets the well-known answers resolved so far; how many.
    pub fn forget_resolved(&self) -> usize {
        self.well_known.clear()
    }

    /// `tls: None` means plain HTTP to every peer (`insecure_plaintext`).
    pub fn new(
        key: SigningKey,
        tls: Option<rustls::ClientConfig>,
        resolve: HashMap<String, SocketAddr>,
        policy: AddressPolicy,
        timeout: Duration,
    ) -> Self {
        FedClient {
            key,
            tls: tls.map(|c| TlsConnector::from(Arc::new(c))),
            resolve,
            policy,
            well_known: WellKnownCache::default(),
            pool: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    pub fn server_name(&self) -> &ServerName {
        self.key.server()
    }

    /// A signed request. `lm_peer` picks the signing form (OQ-30).
    pub async fn request(
        &self,
        dest: &ServerName,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        lm_peer: bool,
    ) -> Result<FedResponse, FedError> {
        let signed = self.sign(dest, method, path_and_query, body, lm_peer);
        self.send_signed(&signed).await
    }

    /// Signs and serialises a request without sending it, so that CPU work
    /// can be done ahead, off the path that waits for the answer.
    pub fn sign(
        &self,
        dest: &ServerName,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        lm_peer: bool,
    ) -> SignedRequest {
        let auth = xmatrix::sign_request(&self.key, method.as_str(), path_and_query, dest.as_str(), body, lm_peer);
        let body = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
        SignedRequest { dest: dest.clone(), method, path: path_and_query.to_owned(), body, auth }
    }

    /// As [`FedClient::sign`], for a body already canonical in both JSON
    /// forms: signed and sent as it is.
    pub fn sign_canonical(&self, dest: &ServerName, method: Method, path: &str, body: Vec<u8>) -> SignedRequest {
        let auth = xmatrix::sign_request_canonical(&self.key, method.as_str(), path, dest.as_str(), &body);
        SignedRequest { dest: dest.clone(), method, path: path.to_owned(), body: Some(Bytes::from(body)), auth }
    }

    /// Sends a request made by [`FedClient::sign`].
    pub async fn send_signed(&self, req: &SignedRequest) -> Result<FedResponse, FedError> {
        self.send_signed_limited(req, MAX_RESPONSE).await
    }

    /// As [`FedClient::send_signed`], taking an answer of at most `limit`
    /// bytes (a media file).
    pub async fn send_signed_limited(&self, req: &SignedRequest, limit: usize) -> Result<FedResponse, FedError> {
        let dest = &req.dest;
        // The name look-up (well-known, DNS) counts against the timeout too.
        let fut = async {
            let target = self.target(dest).await;
            let out = Outgoing {
                method: req.method.clone(),
                path: &req.path,
                body: req.body.clone(),
                auth: Some(req.auth.clone()),
                limit,
            };
            self.send(&target, &out).await
        };
        let resp = tokio::time::timeout(self.timeout, fut).await.map_err(|_| FedError::Timeout(dest.to_string()))??;
        if !resp.status.is_success() {
            return Err(FedError::Status(
                dest.to_string(),
                resp.status,
                String::from_utf8_lossy(&resp.body[..resp.body.len().min(4096)]).into_owned(),
            ));
        }
        Ok(resp.into())
    }

    /// An unauthenticated GET (key endpoints), answered in at most `limit`
    /// bytes.
    pub async fn get_unsigned(&self, dest: &ServerName, path: &str, limit: usize) -> Result<FedResponse, FedError> {
        let fut = async {
            let target = self.target(dest).await;
            self.send(&target, &Outgoing::get(path, limit)).await
        };
        let resp = tokio::time::timeout(self.timeout, fut).await.map_err(|_| FedError::Timeout(dest.to_string()))??;
        if !resp.status.is_success() {
            return Err(FedError::Status(dest.to_string(), resp.status, String::new()));
        }
        Ok(resp.into())
    }

    /// Resolves a server name to a connection target (digest 8.2).
    pub async fn target(&self, dest: &ServerName) -> Target {
        if let Some(t) = discovery::direct_target(&self.resolve, dest) {
            return t;
        }
        let host = dest.host().to_owned();
        let delegated = match self.well_known.get(&host) {
            Some(cached) => cached,
            None => {
                let found = self.fetch_well_known(&host).await;
                self.well_known.put(&host, found.clone());
                found
            }
        };
        discovery::delegated_target(&self.resolve, dest, delegated.as_deref())
    }

    async fn fetch_well_known(&self, host: &str) -> Option<String> {
        let port = if self.tls.is_some() { 443 } else { 80 };
        let mut target = Target {
            addr: discovery::resolve_override(&self.resolve, host, port),
            connect_host: host.to_owned(),
            port,
            tls_name: host.to_owned(),
            host_header: host.to_owned(),
        };
        let mut path = "/.well-known/matrix/server".to_owned();
        // Follow up to five redirects (item 137).
        for _ in 0..5 {
            let out = Outgoing::get(&path, MAX_WELL_KNOWN);
            let fut = self.send(&target, &out);
            let resp = tokio::time::timeout(Duration::from_secs(10), fut).await.ok()?.ok()?;
            if resp.status.is_redirection() {
                let loc: http::Uri = resp.location?.parse().ok()?;
                if let Some(authority) = loc.authority() {
                    let h = authority.host().to_owned();
                    let p = authority.port_u16().unwrap_or(port);
                    target = Target {
                        addr: discovery::resolve_override(&self.resolve, &h, p),
                        connect_host: h.clone(),
                        port: p,
                        tls_name: h,
                        host_header: authority.to_string(),
                    };
                }
                path = loc.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into());
                continue;
            }
            return resp.status.is_success().then(|| discovery::parse_well_known(&resp.body)).flatten();
        }
        None
    }

    fn pool_key(t: &Target) -> String {
        format!("{}|{}:{}|{:?}", t.tls_name, t.connect_host, t.port, t.addr)
    }

    async fn connect(&self, t: &Target) -> Result<Sender, FedError> {
        let unreachable = |e: String| FedError::Unreachable(t.host_header.clone(), e);
        let addr = match t.addr {
            // Named in `federation.resolve`: the operator chose it.
            Some(a) => a,
            None => {
                let found: Vec<SocketAddr> = tokio::net::lookup_host((t.connect_host.as_str(), t.port))
                    .await
                    .map_err(|e| unreachable(e.to_string()))?
                    .collect();
                let mut refused = None;
                let allowed = found.iter().find(|a| match self.policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                });
                match (allowed, refused) {
                    (Some(a), _) => *a,
                    (None, Some(why)) => return Err(unreachable(format!("refused: {why}"))),
                    (None, None) => return Err(unreachable("no address".into())),
                }
            }
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            let (s, conn) = http1::handshake(TokioIo::new(tcp)).await.map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(conn);
            return Ok(Sender::H1(s));
        };
        let name =
            rustls::pki_types::ServerName::try_from(t.tls_name.clone()).map_err(|e| unreachable(e.to_string()))?;
        let stream = tls.connect(name, tcp).await.map_err(|e| unreachable(format!("TLS: {e}")))?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (s, conn) = http2::handshake(TokioExecutor::new(), io).await.map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(conn);
            Ok(Sender::H2(s))
        } else {
            let (s, conn) = http1::handshake(io).await.map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(conn);
            Ok(Sender::H1(s))
        }
    }

    fn take_pooled(&self, key: &str) -> Option<Sender> {
        let mut pool = self.pool.lock().expect("poisoned");
        let senders = pool.get_mut(key)?;
        while let Some(s) = senders.pop() {
            if s.is_usable() {
                if let Sender::H2(h2) = &s {
                    // One HTTP/2 connection carries every request.
                    senders.push(Sender::H2(h2.clone()));
                }
                return Some(s);
            }
        }
        None
    }

    fn put_back(&self, key: String, s: Sender) {
        if !s.is_usable() {
            return;
        }
        let mut pool = self.pool.lock().expect("poisoned");
        if pool.len() >= MAX_POOLED_TARGETS && !pool.contains_key(&key) {
            pool.retain(|_, senders| {
                senders.retain(Sender::is_usable);
                !senders.is_empty()
            });
            if pool.len() >= MAX_POOLED_TARGETS {
                return;
            }
        }
        let senders = pool.entry(key).or_default();
        let keep = match s {
            Sender::H1(_) => senders.len() < 8,
            Sender::H2(_) => senders.is_empty(),
        };
        if keep {
            senders.push(s);
        }
    }

    async fn send(&self, t: &Target, out: &Outgoing<'_>) -> Result<RawResponse, FedError> {
        let key = Self::pool_key(t);
        // A pooled connection may have been closed by the peer; retry once
        // on a fresh one (every federation request is idempotent).
        for attempt in 0..2 {
            let sender = match (attempt, self.take_pooled(&key)) {
                (0, Some(s)) => s,
                _ => self.connect(t).await?,
            };
            match self.send_on(sender, t, out).await {
                Ok((resp, sender)) => {
                    self.put_back(key, sender);
                    return Ok(resp);
                }
                Err(e) if attempt == 0 => {
                    tracing::debug!(dest = %t.host_header, error = %e, "retrying on a new connection")
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    async fn send_on(
        &self,
        mut sender: Sender,
        t: &Target,
        out: &Outgoing<'_>,
    ) -> Result<(RawResponse, Sender), FedError> {
        let Outgoing { method, path, body, auth, limit } = out;
        let bad = |e: String| FedError::Unreachable(t.host_header.clone(), e);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let uri = match sender {
            Sender::H2(_) => format!("{scheme}://{}{path}", t.host_header),
            Sender::H1(_) => path.to_string(),
        };
        let mut req = Request::builder().method(method.clone()).uri(uri);
        if matches!(sender, Sender::H1(_)) {
            req = req.header(header::HOST, &t.host_header);
        }
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let req = req.body(Full::new(body.clone().unwrap_or_default())).map_err(|e| bad(e.to_string()))?;
        let resp = match &mut sender {
            Sender::H1(s) => {
                s.ready().await.map_err(|e| bad(e.to_string()))?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(|e| bad(e.to_string()))?;
                s.send_request(req).await
            }
        }
        .map_err(|e| bad(e.to_string()))?;
        let status = resp.status();
        let location = resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let retry_after_ms = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|s| s * 1000);
        let content_type = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = Limited::new(resp.into_body(), *limit)
            .collect()
            .await
            .map_err(|e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                Some(_) => FedError::TooLarge(t.host_header.clone(), *limit),
                None => FedError::BadResponse(t.host_header.clone(), e.to_string()),
            })?
            .to_bytes();
        Ok((RawResponse { status, body, content_type, location, retry_after_ms }, sender))
    }
}

/// One request as it goes out: a retry on a fresh connection sends it again.
/// A signed, serialised request, ready to send (and to send again).
pub struct SignedRequest {
    dest: ServerName,
    method: Method,
    path: String,
    body: Option<Bytes>,
    auth: String,
}

struct Outgoing<'a> {
    method: Method,
    path: &'a str,
    body: Option<Bytes>,
    auth: Option<String>,
    /// Largest answer taken.
    limit: usize,
}

impl<'a> Outgoing<'a> {
    fn get(path: &'a str, limit: usize) -> Self {
        Outgoing { method: Method::GET, path, body: None, auth: None, limit }
    }
}

struct RawResponse {
    status: StatusCode,
    body: Bytes,
    content_type: Option<String>,
    location: Option<String>,
    retry_after_ms: Option<u64>,
}

impl From<RawResponse> for FedResponse {
    fn from(r: RawResponse) -> Self {
        FedResponse { status: r.status, body: r.body, content_type: r.content_type, retry_after_ms: r.retry_after_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_others_are_told_of_a_failed_call_leaves_out_the_details() {
        let unreachable = FedError::Unreachable("a.test".into(), "connect to 10.1.2.3:8448: refused".into());
        assert_eq!(unreachable.public(), "a.test is unreachable");
        let refused = FedError::Status(
            "a.test".into(),
            StatusCode::BAD_REQUEST,
            r#"{"errcode":"M_UNKNOWN","error":"db at /var/lib/x broke"}"#.into(),
        );
        assert_eq!(refused.public(), "a.test answered 400 M_UNKNOWN");
        let odd = FedError::Status("a.test".into(), StatusCode::BAD_GATEWAY, r#"{"errcode":"<b>x</b>"}"#.into());
        assert_eq!(odd.public(), "a.test answered 502");
        assert_eq!(FedError::BadResponse("a.test".into(), "line 1".into()).public(), "bad response from a.test");
    }
}
