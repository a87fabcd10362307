//! The on-disk key-value layer. The only module that uses sled.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::kv::{BoxFuture, Entries, Kv, KvWrite};
use super::StoreError;

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
            e => StoreError::Backend(e.to_string()),
        }
    }
}

pub struct SledKv {
    db: sled::Db,
    tree: sled::Tree,
    flusher: GroupFlush,
}

impl SledKv {
    /// Opens (or creates) the store in `dir`. `cache_bytes` bounds sled's
    /// page cache, which otherwise defaults to 1 GiB.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(1000))
            .mode(sled::Mode::HighThroughput);
        // sled can panic on some damaged files rather than answer an error.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let db = config.open()?;
            let tree = db.open_tree("lmx")?;
            Ok::<_, sled::Error>((db, tree))
        }));
        let (db, tree) = match opened {
            Ok(r) => r?,
            Err(_) => return Err(StoreError::Corrupt(format!("{}: sled could not read its files", dir.display()))),
        };
        Ok(SledKv { flusher: GroupFlush::new(db.clone()), db, tree })
    }

    /// Bytes sled has on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Entries, StoreError> {
        let iter = self.tree.range(start..end);
        let pair = |r: sled::Result<(sled::IVec, sled::IVec)>| r.map(|(k, v)| (k.to_vec(), v.to_vec()));
        let out: sled::Result<Vec<_>> =
            if reverse { iter.rev().take(limit).map(pair).collect() } else { iter.take(limit).map(pair).collect() };
        Ok(out?)
    }

    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for w in writes {
            match w {
                KvWrite::Put(k, v) => batch.insert(k, v),
                KvWrite::Delete(k) => batch.remove(k),
            }
        }
        // A sled batch on one tree is atomic.
        Ok(self.tree.apply_batch(batch)?)
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.flusher.flush())
    }
}

/// Group commit: concurrent callers share one fsync. A caller returns once
/// a flush that started after its call has completed. Callers queue on one
/// lock; whoever holds it flushes for every ticket handed out so far, and
/// those behind it find their ticket covered and return at once. (Waiting
/// for a "done" signal instead lost wake-ups when the signal came between a
/// failed attempt at the lock and the wait, and a caller hung for good.)
struct GroupFlush {
    flush: Arc<dyn Fn() -> Result<(), StoreError> + Send + Sync>,
    requested: AtomicU64,
    completed: AtomicU64,
    running: Mutex<()>,
}

impl GroupFlush {
    fn new(db: sled::Db) -> Self {
        Self::with(Arc::new(move || db.flush().map(|_| ()).map_err(StoreError::from)))
    }

    fn with(flush: Arc<dyn Fn() -> Result<(), StoreError> + Send + Sync>) -> Self {
        GroupFlush { flush, requested: AtomicU64::new(0), completed: AtomicU64::new(0), running: Mutex::new(()) }
    }

    async fn flush(&self) -> Result<(), StoreError> {
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
