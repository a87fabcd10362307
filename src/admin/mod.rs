//! What operators watch the server with, apart from the admin API's
//! endpoints (in `client_api::admin`): the log and its filter, Prometheus
//! metrics, the recently logged warnings and errors, and the status page's
//! HTML.

pub mod logging;
pub mod metrics;
pub mod recent;
pub mod scrape;
pub mod status;

/// Bytes of the files under `dir` (the store's size on disk).
pub fn size_of_dir(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => size_of_dir(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
