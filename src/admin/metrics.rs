//! Prometheus metrics: the recorder (installed once per process, only when
//! a metrics listener is configured, so an unwatched server pays nothing
//! but a no-op call per measurement) and the text the `/metrics` listener
//! serves. Route labels are bounded in `http::routes`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Histogram buckets for every `*_seconds` metric: 1 ms to 60 s.
const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Installs the recorder (the first call does; later ones, from other
/// servers in the same process, share it). `None` when another recorder
/// was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            // Gauges no scrape has set for a while go (a destination that
            // left the most-behind list), so their labels cannot pile up.
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .ok()?
                .idle_timeout(MetricKindMask::GAUGE, Some(std::time::Duration::from_secs(600)))
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            crate::http::routes::count_requests();
            describe();
            let process = metrics_process::Collector::default();
            process.describe();
            let _ = PROCESS.set(process);
            Some(handle)
        })
        .as_ref()
}

/// The text exposition, with the process figures read now.
pub fn render() -> String {
    let Some(handle) = install() else { return String::new() };
    if let Some(p) = PROCESS.get() {
        p.collect();
    }
    handle.run_upkeep();
    handle.render()
}

/// Counts one in a gauge while it lives: the decrement runs even when the
/// future holding it is dropped (a client that gives up a long poll).
pub struct InGauge(&'static str);

impl InGauge {
    pub fn enter(name: &'static str) -> InGauge {
        metrics::gauge!(name).increment(1.0);
        InGauge(name)
    }
}

impl Drop for InGauge {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("lmx_events_sequenced_total", "Events this hub appended to its rooms' lists, by room kind");
    describe_counter!("lmx_lpdus_received_total", "LPDUs other servers sent this hub, by room kind");
    describe_counter!("lmx_auth_rejections_total", "Events refused by the authorization rules, by rule number");
    describe_gauge!("lmx_federation_queue_depth", "Items queued for a destination and not yet delivered");
    describe_gauge!("lmx_federation_queue_lag_events", "Stream positions between the newest and the last delivered");
    describe_gauge!(
        "lmx_federation_queue_lag_seconds",
        Unit::Seconds,
        "Age of the oldest undelivered event for a destination"
    );
    describe_gauge!("lmx_federation_destination_failures", "Failed attempts in a row for a destination (0: healthy)");
    describe_histogram!(
        "lmx_federation_transaction_seconds",
        Unit::Seconds,
        "Federation transactions: handling of those received (in), round trip of those sent (out)"
    );
    describe_histogram!("lmx_store_flush_seconds", Unit::Seconds, "Time to make a batch of writes durable");
    describe_gauge!("lmx_sync_waiters", "Client /sync requests waiting for something new");
    describe_counter!("lmx_http_requests_total", "HTTP requests by listener, route and status");
    describe_histogram!("lmx_http_request_seconds", Unit::Seconds, "HTTP request latency by listener");
    describe_counter!("lmx_key_fetches_total", "Fetches of other servers' signing keys, by result");
    describe_gauge!("lmx_rooms_hubbed", "Rooms this server sequences");
    describe_gauge!("lmx_store_size_bytes", Unit::Bytes, "The store's size on disk");
}
