//! Token buckets: logins and registrations per remote address, sends per
//! user. Over the limit: `429 M_LIMIT_EXCEEDED` with `retry_after_ms`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::config::Config;
use crate::wire::Failure;

pub struct Limiter {
    /// `f64` bits: the rate and burst change on a configuration reload.
    per_second: AtomicU64,
    burst: AtomicU64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// The client API's limits, which SIGHUP may change.
pub struct RateLimits {
    pub sends: Limiter,
    pub logins: Limiter,
    pub uploads: Limiter,
}

impl RateLimits {
    pub fn of(config: &Config) -> RateLimits {
        let (c, m) = (&config.client, &config.media);
        RateLimits {
            sends: Limiter::new(c.send_per_second, c.send_burst),
            logins: Limiter::new(c.login_per_second, c.login_burst),
            uploads: Limiter::new(m.uploads_per_second, m.upload_burst),
        }
    }

    /// Takes a reloaded configuration's rates.
    pub fn apply(&self, config: &Config) {
        let (c, m) = (&config.client, &config.media);
        self.sends.set(c.send_per_second, c.send_burst);
        self.logins.set(c.login_per_second, c.login_burst);
        self.uploads.set(m.uploads_per_second, m.upload_burst);
    }
}

impl Limiter {
    pub fn new(per_second: f64, burst: f64) -> Self {
        Limiter {
            per_second: AtomicU64::new(per_second.to_bits()),
            burst: AtomicU64::new(burst.to_bits()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// New figures; buckets keep their tokens, capped at the new burst.
    pub fn set(&self, per_second: f64, burst: f64) {
        self.per_second.store(per_second.to_bits(), Ordering::Relaxed);
        self.burst.store(burst.to_bits(), Ordering::Relaxed);
    }

    /// Takes one token for `key`, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), Failure> {
        let per_second = f64::from_bits(self.per_second.load(Ordering::Relaxed));
        let burst = f64::from_bits(self.burst.load(Ordering::Relaxed));
        if per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self.buckets.lock().expect("poisoned");
        if map.len() > 100_000 {
            map.retain(|_, (_, t)| now.duration_since(*t).as_secs() < 60);
        }
        let (tokens, last) = map.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * per_second).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        let wait_ms = ((1.0 - *tokens) / per_second * 1000.0).ceil() as u64;
        Err(Failure::limit_exceeded("Too many requests", wait_ms.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_a_wait() {
        let l = Limiter::new(1.0, 2.0);
        assert!(l.check("a").is_ok() && l.check("a").is_ok());
        let e = l.check("a").unwrap_err();
        assert!(matches!(e, Failure::LimitExceeded { retry_after_ms, .. } if retry_after_ms > 0), "{e:?}");
        assert!(l.check("b").is_ok(), "buckets are per key");
    }

    #[test]
    fn a_reload_changes_the_rate() {
        let l = Limiter::new(1.0, 1.0);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_err());
        l.set(0.0, 0.0);
        assert!(l.check("a").is_ok(), "0 turns the limit off");
    }
}
