//! The accept loop: TLS (ALPN h2, http/1.1) or plain TCP, HTTP/1.1 and
//! HTTP/2 on the same port. What a stranger can hold is bounded: open
//! connections (in all and per address), a first byte within a deadline,
//! idle connections closed, request headers within 30 s, and the request
//! body bytes held in memory across all connections (`BodyBudget`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::{Body, BodyBudget};
use crate::store::BoxFuture;

pub trait Handler: Send + Sync + 'static {
    fn handle(self: Arc<Self>, req: Request<Incoming>, remote: SocketAddr) -> BoxFuture<'static, Response<Body>>;
}

/// A running listener.
pub struct Served {
    pub addr: SocketAddr,
}

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 requests one connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// The limits of one listener (`[http]` in the configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub body_bytes_in_flight: usize,
    /// Addresses not held to `max_connections_per_ip`: the operator's own
    /// proxies (`client.trusted_proxies`), every caller's connections come
    /// from them.
    pub proxies: Vec<ipnet::IpNet>,
}

impl Limits {
    pub fn of(config: &crate::config::Config) -> Limits {
        Limits { proxies: config.client.trusted_proxies.clone(), ..Limits::from(&config.http) }
    }
}

/// A listener's limits as they stand; a configuration reload replaces
/// them, new connections take the new ones.
#[derive(Clone)]
pub struct SharedLimits(Arc<std::sync::RwLock<Arc<Limits>>>);

impl SharedLimits {
    pub fn new(limits: Limits) -> Self {
        SharedLimits(Arc::new(std::sync::RwLock::new(Arc::new(limits))))
    }

    pub fn current(&self) -> Arc<Limits> {
        self.0.read().expect("poisoned").clone()
    }

    pub fn replace(&self, limits: Limits) {
        *self.0.write().expect("poisoned") = Arc::new(limits);
    }
}

impl From<&crate::config::Http> for Limits {
    fn from(c: &crate::config::Http) -> Self {
        Limits {
            max_connections: c.max_connections,
            max_connections_per_ip: c.max_connections_per_ip,
            first_byte_timeout: Duration::from_millis(c.first_byte_timeout_ms),
            idle_timeout: Duration::from_millis(c.idle_timeout_ms),
            body_timeout: Duration::from_millis(c.body_timeout_ms),
            body_bytes_in_flight: c.body_bytes_in_flight,
            proxies: Vec::new(),
        }
    }
}

/// Open connections, in all and per remote address.
#[derive(Default)]
struct Connections {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A connection's place in `Connections`, given back when it closes.
struct Slot {
    table: Arc<Mutex<Connections>>,
    ip: IpAddr,
}

impl Slot {
    fn take(table: &Arc<Mutex<Connections>>, ip: IpAddr, limits: &Limits) -> Option<Slot> {
        let mut t = table.lock().expect("poisoned");
        let mine = t.per_ip.get(&ip).copied().unwrap_or(0);
        let proxy = limits.proxies.iter().any(|n| n.contains(&ip));
        if t.total >= limits.max_connections || (mine >= limits.max_connections_per_ip && !proxy) {
            return None;
        }
        t.total += 1;
        *t.per_ip.entry(ip).or_default() += 1;
        Some(Slot { table: table.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.lock().expect("poisoned");
        t.total -= 1;
        if let Some(n) = t.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.per_ip.remove(&self.ip);
            }
        }
    }
}

/// When a connection last moved bytes, whether it ever sent one, and how
/// many of its requests are being handled.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    got_bytes: AtomicBool,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            got_bytes: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves when the connection should be closed: no first byte in
    /// time, or idle with nothing in flight.
    async fn expired(&self, limits: &Limits) {
        loop {
            let now = self.start.elapsed();
            let deadline = if !self.got_bytes.load(Ordering::Relaxed) {
                limits.first_byte_timeout
            } else if self.in_flight.load(Ordering::Relaxed) > 0 {
                now + limits.idle_timeout
            } else {
                Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + limits.idle_timeout
            };
            if deadline <= now {
                return;
            }
            tokio::time::sleep((deadline - now).max(Duration::from_millis(50))).await;
        }
    }
}

/// Counts a request as in flight until its answer is ready.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that records its activity.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.got_bytes.store(true, Ordering::Relaxed);
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `handler` on `listener` until `shutdown` turns true; then stops
/// accepting and drops every open connection.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<super::tls::ServerTls>>,
    handler: Arc<dyn Handler>,
    shared: SharedLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let table = Arc::new(Mutex::new(Connections::default()));
    // The body budget is sized once: a reload changes connection limits
    // and timeouts, not memory already promised.
    let budget = {
        let limits = shared.current();
        BodyBudget {
            bytes: Arc::new(Semaphore::new(limits.body_bytes_in_flight.min(Semaphore::MAX_PERMITS))),
            read_timeout: limits.body_timeout,
        }
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let limits = shared.current();
        let Some(slot) = Slot::take(&table, super::canonical_ip(remote.ip()), &limits) else {
            tracing::debug!(%remote, "connection limit reached; closing the new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.as_ref().map(|t| t.acceptor());
        let (handler, limits, budget) = (handler.clone(), limits.clone(), budget.clone());
        connections.spawn(async move {
            let _slot = slot;
            let activity = Activity::new();
            let io = Watched { inner: stream, activity: activity.clone() };
            tokio::select! {
                _ = serve_connection(io, remote, tls, handler, budget, activity.clone()) => {}
                _ = activity.expired(&limits) => tracing::debug!(%remote, "closing a silent or idle connection"),
            }
        });
    }
    connections.shutdown().await;
}

async fn serve_connection(
    io: Watched<tokio::net::TcpStream>,
    remote: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: Arc<dyn Handler>,
    budget: BodyBudget,
    activity: Arc<Activity>,
) {
    let service = service_fn(move |mut req: Request<Incoming>| {
        let h = handler.clone();
        let busy = InFlight::new(&activity);
        req.extensions_mut().insert(budget.clone());
        async move {
            let resp = h.handle(req, remote).await;
            drop(busy);
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    let result = match tls {
        Some(acceptor) => match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(io)).await {
            Ok(Ok(tls_stream)) => builder.serve_connection(TokioIo::new(tls_stream), service).await,
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        },
        None => builder.serve_connection(TokioIo::new(io), service).await,
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trusted_proxy_is_held_to_the_total_only() {
        let mut limits = Limits::from(&crate::config::Config::default().http);
        (limits.max_connections, limits.max_connections_per_ip) = (3, 1);
        limits.proxies = vec!["10.0.0.0/8".parse().unwrap()];
        let table = Arc::new(Mutex::new(Connections::default()));
        let (stranger, proxy): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "10.1.2.3".parse().unwrap());
        let _s = Slot::take(&table, stranger, &limits).unwrap();
        assert!(Slot::take(&table, stranger, &limits).is_none(), "one per address");
        let _p1 = Slot::take(&table, proxy, &limits).unwrap();
        let _p2 = Slot::take(&table, proxy, &limits).unwrap();
        assert!(Slot::take(&table, proxy, &limits).is_none(), "the total still holds");
    }
}
