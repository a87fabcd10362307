//! What a standby process answers while another process of the same
//! server holds the PostgreSQL store (`storage.postgres.standby_probes`):
//! on the client address, `/health` is alive and `/ready` is not, so an
//! orchestrator that probes every replica keeps standbys running and sends
//! them no traffic; every other request is refused with `503`. The
//! listener closes before the process takes over and binds its own.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{json_response, serve, Body, Handler, Limits, SharedLimits};
use crate::store::BoxFuture;

/// The answer to `method path` while standing by.
pub fn answer(method: &Method, path: &str) -> (StatusCode, Value) {
    let probe = matches!(*method, Method::GET | Method::HEAD);
    match path {
        "/health" if probe => (StatusCode::OK, json!({"status": "ok", "standby": true})),
        "/ready" if probe => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false, "reasons": ["standby: another lmx process serves this database"]}),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"errcode": "M_UNKNOWN", "error": "this lmx process is a standby; another process serves"}),
        ),
    }
}

struct Standby {
    retry_after_secs: u64,
}

impl Handler for Standby {
    fn handle(self: Arc<Self>, req: Request<Incoming>, _remote: SocketAddr) -> BoxFuture<'static, Response<Body>> {
        let (status, body) = answer(req.method(), req.uri().path());
        let mut resp = json_response(status, &body);
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after_secs));
        }
        Box::pin(async move { resp })
    }
}

/// The standby's listener, until `stop`.
pub struct StandbyProbes {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl StandbyProbes {
    /// Listens on `addr` with the listeners' usual limits.
    pub async fn start(addr: SocketAddr, limits: Limits, retry_after_secs: u64) -> std::io::Result<StandbyProbes> {
        let listener = TcpListener::bind(addr).await?;
        let (stop, stopped) = watch::channel(false);
        let handler = Arc::new(Standby { retry_after_secs });
        let task = tokio::spawn(serve(listener, None, handler, SharedLimits::new(limits), stopped));
        Ok(StandbyProbes { stop, task })
    }

    /// Closes the listener and its connections; the address is free on return.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_alive_not_ready_and_serves_nothing_else() {
        let (status, body) = answer(&Method::GET, "/health");
        assert_eq!((status, body["standby"].as_bool()), (StatusCode::OK, Some(true)));
        let (status, body) = answer(&Method::GET, "/ready");
        assert_eq!((status, body["ready"].as_bool()), (StatusCode::SERVICE_UNAVAILABLE, Some(false)));
        assert!(body["reasons"][0].as_str().unwrap().starts_with("standby"));
        for (method, path) in [(Method::GET, "/_matrix/client/versions"), (Method::POST, "/health")] {
            let (status, body) = answer(&method, path);
            assert_eq!((status, body["errcode"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("M_UNKNOWN")));
        }
    }
}
