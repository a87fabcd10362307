//! The metrics listener's handler: `GET /metrics` sets the gauges that are
//! read rather than counted (each destination's backlog, rooms hubbed, the
//! store's size), then answers the Prometheus text.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::federation::Node;
use crate::http::{full, Body, Handler};
use crate::store::BoxFuture;

pub struct MetricsHandler {
    pub node: Arc<Node>,
}

/// Destinations given gauges of their own: the most behind.
const MAX_DESTINATION_SERIES: usize = 100;
/// A scrape within this long of the last one gets the same text.
const FRESH_FOR: Duration = Duration::from_secs(5);

/// Reads what the gauges show now.
fn refresh(node: &Node) {
    let now = crate::sys::now_ms();
    let mut statuses = node.outbound.statuses();
    statuses.sort_by_key(|(_, s)| std::cmp::Reverse((s.failures, s.waiting_since_ts != 0)));
    // Set each scrape, so they do not idle out while nothing changes.
    metrics::gauge!("lmx_sync_waiters").increment(0.0);
    for (dest, status) in statuses.into_iter().take(MAX_DESTINATION_SERIES) {
        let labels = [("destination", dest.to_string())];
        metrics::gauge!("lmx_federation_destination_failures", &labels).set(f64::from(status.failures));
        match crate::federation::backlog::backlog(node, &dest) {
            Ok(b) => {
                metrics::gauge!("lmx_federation_queue_depth", &labels).set(b.depth as f64);
                metrics::gauge!("lmx_federation_queue_lag_events", &labels).set(b.lag_positions as f64);
                let age = if b.depth == 0 { 0 } else { now.saturating_sub(status.waiting_since_ts).max(0) };
                metrics::gauge!("lmx_federation_queue_lag_seconds", &labels).set(age as f64 / 1000.0);
            }
            Err(e) => tracing::warn!(%dest, error = %e, "metrics: cannot read a destination's queue"),
        }
    }
    let hubbed =
        node.store.rooms().map_or(0, |rooms| rooms.iter().filter(|r| r.hub_server == node.name.as_str()).count());
    metrics::gauge!("lmx_rooms_hubbed").set(hubbed as f64);
    metrics::gauge!("lmx_store_size_bytes").set(node.store.size_on_disk() as f64);
}

impl Handler for MetricsHandler {
    fn handle(self: Arc<Self>, req: Request<Incoming>, _remote: SocketAddr) -> BoxFuture<'static, Response<Body>> {
        Box::pin(async move {
            if req.method() != Method::GET || req.uri().path() != "/metrics" {
                let mut resp = Response::new(full("GET /metrics\n"));
                *resp.status_mut() = StatusCode::NOT_FOUND;
                return resp;
            }
            let node = self.node.clone();
            let text = tokio::task::spawn_blocking(move || {
                // One scrape at a time reads the store; those close behind
                // it get its text.
                static LAST: Mutex<Option<(Instant, String)>> = Mutex::new(None);
                let mut last = LAST.lock().expect("poisoned");
                if let Some((at, text)) = last.as_ref().filter(|(at, _)| at.elapsed() < FRESH_FOR) {
                    let _ = at;
                    return text.clone();
                }
                refresh(&node);
                let text = super::metrics::render();
                *last = Some((Instant::now(), text.clone()));
                text
            })
            .await
            .unwrap_or_default();
            let mut resp = Response::new(full(text));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        })
    }
}
