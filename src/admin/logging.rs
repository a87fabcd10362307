//! The process's logging: a filter (`log.level`, or `LMX_LOG`) that can be
//! changed while running, lines for people or JSON (`log.format`), colour
//! only on a terminal and never with `NO_COLOR`.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{Log, LogFormat};

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// The filter in force, as it was given.
static CURRENT: Mutex<String> = Mutex::new(String::new());

/// The filter in force: `LMX_LOG` when set, else the configuration's.
pub fn wanted_filter(log: &Log) -> String {
    std::env::var("LMX_LOG").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| log.level.clone())
}

/// Whether to colour: a terminal, and no `NO_COLOR` (any value).
pub fn colour(is_terminal: bool, no_color: Option<&str>) -> bool {
    is_terminal && no_color.is_none()
}

/// Starts logging to standard error.
pub fn init(log: &Log) -> anyhow::Result<()> {
    let wanted = wanted_filter(log);
    let filter = EnvFilter::try_new(&wanted)?;
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = colour(std::io::stderr().is_terminal(), std::env::var("NO_COLOR").ok().as_deref());
    let registry = tracing_subscriber::registry().with(filter).with(crate::admin::recent::RecentLayer);
    match log.format {
        LogFormat::Pretty => {
            let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
            registry.with(fmt).try_init()?;
        }
        LogFormat::Json => {
            let fmt = tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr);
            registry.with(fmt).try_init()?;
        }
    }
    let _ = FILTER.set(handle);
    *CURRENT.lock().expect("poisoned") = wanted;
    Ok(())
}

/// The filter in force (empty when logging was not started here).
pub fn current_filter() -> String {
    CURRENT.lock().expect("poisoned").clone()
}

/// Changes the filter of a running process.
pub fn set_filter(filter: &str) -> Result<(), String> {
    let parsed = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    let handle = FILTER.get().ok_or("logging is not running")?;
    handle.reload(parsed).map_err(|e| e.to_string())?;
    *CURRENT.lock().expect("poisoned") = filter.to_owned();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None), "a file or the journal gets no escape codes");
        assert!(!colour(true, Some("")), "NO_COLOR set, whatever its value");
        assert!(!colour(true, Some("1")));
    }
}
