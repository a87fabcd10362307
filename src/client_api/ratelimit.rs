//! Token buckets: logins and registrations per remote address, sends per
//! user. Over the limit: `429 M_LIMIT_EXCEEDED` with `retry_after_ms`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::wire::Failure;

pub struct Limiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    pub fn new(per_second: f64, burst: f64) -> Self {
        Limiter { per_second, burst, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), Failure> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self.buckets.lock().expect("poisoned");
        if map.len() > 100_000 {
            map.retain(|_, (_, t)| now.duration_since(*t).as_secs() < 60);
        }
        let (tokens, last) = map.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        let wait_ms = ((1.0 - *tokens) / self.per_second * 1000.0).ceil() as u64;
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
}
