//! Group commit shared by the backends: one sync to disk (an fsync for
//! sled, a synchronous commit for PostgreSQL) covers every write applied
//! before it started.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::StoreError;

/// Group commit: concurrent callers share one fsync. A caller returns once
/// a flush that started after its call has completed. Callers queue on one
/// lock; whoever holds it flushes for every ticket handed out so far, and
/// those behind it find their ticket covered and return at once. (Waiting
/// for a "done" signal instead lost wake-ups when the signal came between a
/// failed attempt at the lock and the wait, and a caller hung for good.)
pub struct GroupFlush {
    flush: Arc<dyn Fn() -> Result<(), StoreError> + Send + Sync>,
    requested: AtomicU64,
    completed: AtomicU64,
    running: Mutex<()>,
}

impl GroupFlush {
    pub fn with(flush: Arc<dyn Fn() -> Result<(), StoreError> + Send + Sync>) -> Self {
        GroupFlush { flush, requested: AtomicU64::new(0), completed: AtomicU64::new(0), running: Mutex::new(()) }
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.running.lock().await;
        if self.completed.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket handed out so far is covered by this flush.
        let target = self.requested.load(Ordering::SeqCst);
        let flush = self.flush.clone();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || flush()).await.map_err(|e| StoreError::Backend(e.to_string()))??;
        metrics::histogram!("lmx_store_flush_seconds").record(started.elapsed().as_secs_f64());
        self.completed.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_flushes_all_return_and_share_fsyncs() {
        let fsyncs = Arc::new(AtomicUsize::new(0));
        let counted = fsyncs.clone();
        let g = Arc::new(GroupFlush::with(Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(50));
            Ok(())
        })));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let g = g.clone();
                tokio::spawn(async move {
                    for _ in 0..500 {
                        g.flush().await.unwrap();
                    }
                })
            })
            .collect();
        let all = futures_util::future::join_all(tasks);
        tokio::time::timeout(Duration::from_secs(120), all).await.expect("no flush waits for ever");
        let n = fsyncs.load(Ordering::SeqCst);
        assert!(n < 16 * 500, "callers shared fsyncs ({n} for 8,000 flushes)");
    }
}
