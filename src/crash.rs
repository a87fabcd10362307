//! Crash points, for the crash tests: with `LMX_CRASH_POINT=name` (or
//! `name:n`) in its environment, the process kills itself with SIGKILL the
//! first (or n-th) time it reaches the point of that name: nothing is
//! flushed, no destructor runs, exactly as if `kill -9` had come at that
//! step. Unset, a point costs one relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn armed() -> Option<&'static (String, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("LMX_CRASH_POINT").ok()?;
            let (name, n) = match spec.split_once(':') {
                Some((name, n)) => (name.to_owned(), n.parse().ok()?),
                None => (spec, 1),
            };
            Some((name, n))
        })
        .as_ref()
}

/// Marks a step the crash tests can kill the process at.
pub fn point(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some((armed, at)) = armed() else { return };
    if armed != name || HITS.fetch_add(1, Ordering::Relaxed) + 1 != *at {
        return;
    }
    eprintln!("lmx: crash point {name} reached; killing the process");
    // SAFETY: kill(2) on our own pid with a signal that cannot be caught.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort();
}
