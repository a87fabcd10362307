//! What every listener answers itself and what it logs: `GET /health`
//! (the process is alive), `GET /ready` (it can serve: `503` with the
//! reasons when not), and one `info` line per request (method, route
//! without its query, status, latency, the caller once known, a request
//! id that the request's other log lines carry too).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use tracing::Instrument;

use super::server::Handler;
use super::{full, Body};
use crate::store::BoxFuture;

/// Who made a request, as the handler learns it (a user id, or a server
/// name for federation). Put in the request's extensions by `Observed`.
#[derive(Clone, Default)]
pub struct Caller(Arc<OnceLock<String>>);

impl Caller {
    /// Records the caller of a request, given its extensions (the first
    /// record counts).
    pub fn record(extensions: &http::Extensions, who: &str) {
        if let Some(c) = extensions.get::<Caller>() {
            let _ = c.0.set(who.to_owned());
        }
    }

    fn get(&self) -> &str {
        self.0.get().map_or("-", String::as_str)
    }
}

/// Whether the server can serve, and why not.
pub struct Health {
    listeners: usize,
    listening: AtomicUsize,
    stopping: AtomicBool,
    /// Probes the store with a small write; the error when it fails.
    store_check: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
}

impl Health {
    /// `listeners`: how many must be up before the server is ready.
    pub fn new(listeners: usize, store_check: Box<dyn Fn() -> Result<(), String> + Send + Sync>) -> Arc<Health> {
        Arc::new(Health { listeners, listening: AtomicUsize::new(0), stopping: AtomicBool::new(false), store_check })
    }

    pub fn listener_up(&self) {
        self.listening.fetch_add(1, Ordering::AcqRel);
    }

    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Why the server is not ready; empty when it is.
    pub fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.stopping.load(Ordering::Acquire) {
            reasons.push("shutting down".to_owned());
        }
        let up = self.listening.load(Ordering::Acquire);
        if up < self.listeners {
            reasons.push(format!("{up} of {} listeners up", self.listeners));
        }
        if let Err(e) = (self.store_check)() {
            reasons.push(format!("store not writable: {e}"));
        }
        reasons
    }
}

/// A listener's handler with the probes and the request log around it.
pub struct Observed {
    pub inner: Arc<dyn Handler>,
    pub health: Arc<Health>,
    /// The listener's name in logs (`client`, `federation`).
    pub listener: &'static str,
    /// `client.trusted_proxies`: the log names the caller they speak for.
    pub proxies: Vec<ipnet::IpNet>,
}

fn probe(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

impl Handler for Observed {
    fn handle(self: Arc<Self>, mut req: Request<Incoming>, remote: SocketAddr) -> BoxFuture<'static, Response<Body>> {
        let path = req.uri().path().to_owned();
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            match path.as_str() {
                "/health" => return Box::pin(async { probe(StatusCode::OK, json!({"status": "ok"})) }),
                "/ready" => {
                    let reasons = self.health.not_ready();
                    let (status, body) = if reasons.is_empty() {
                        (StatusCode::OK, json!({"ready": true}))
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, json!({"ready": false, "reasons": reasons}))
                    };
                    return Box::pin(async move { probe(status, body) });
                }
                _ => {}
            }
        }
        let caller = Caller::default();
        req.extensions_mut().insert(caller.clone());
        let from = super::client_ip(remote.ip(), req.headers(), &self.proxies);
        let via = if from == remote.ip() { String::new() } else { remote.ip().to_string() };
        let method = req.method().clone();
        let request_id = crate::sys::random_string(10);
        let span = tracing::info_span!("request", %request_id, listener = self.listener);
        let started = Instant::now();
        let inner = self.inner.clone();
        let listener = self.listener;
        Box::pin(
            async move {
                let resp = inner.handle(req, remote).await;
                let elapsed = started.elapsed().as_secs_f64();
                if super::routes::counting_requests() {
                    let status = resp.status().as_u16();
                    let route = super::routes::route_label(&path, status);
                    let status = status.to_string();
                    metrics::counter!("lmx_http_requests_total", "listener" => listener, "route" => route, "status" => status)
                        .increment(1);
                    metrics::histogram!("lmx_http_request_seconds", "listener" => listener).record(elapsed);
                }
                tracing::info!(
                    target: "lmx::request",
                    %method,
                    route = %path,
                    status = resp.status().as_u16(),
                    latency_ms = elapsed * 1000.0,
                    by = caller.get(),
                    remote = %from,
                    via = %via,
                    %listener,
                    "request"
                );
                resp
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_listeners_up_a_store_taking_writes_and_no_shutdown() {
        let store_ok = Arc::new(AtomicBool::new(true));
        let check = store_ok.clone();
        let health = Health::new(
            2,
            Box::new(move || if check.load(Ordering::Relaxed) { Ok(()) } else { Err("disk full".into()) }),
        );
        assert_eq!(health.not_ready(), ["0 of 2 listeners up"]);
        health.listener_up();
        health.listener_up();
        assert!(health.not_ready().is_empty());
        store_ok.store(false, Ordering::Relaxed);
        assert_eq!(health.not_ready(), ["store not writable: disk full"]);
        store_ok.store(true, Ordering::Relaxed);
        health.stopping();
        assert_eq!(health.not_ready(), ["shutting down"]);
    }
}
