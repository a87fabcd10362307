//! The on-disk key-value layer. The only module that uses sled.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{watch, Mutex};

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
/// a flush that started after its call has completed.
struct GroupFlush {
    db: sled::Db,
    requested: AtomicU64,
    completed: watch::Sender<u64>,
    running: Mutex<()>,
}

impl GroupFlush {
    fn new(db: sled::Db) -> Self {
        GroupFlush { db, requested: AtomicU64::new(0), completed: watch::channel(0).0, running: Mutex::new(()) }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut done = self.completed.subscribe();
        loop {
            if *done.borrow_and_update() >= ticket {
                return Ok(());
            }
            if let Ok(_running) = self.running.try_lock() {
                if *self.completed.borrow() >= ticket {
                    return Ok(());
                }
                // Every ticket handed out so far is covered by this flush.
                let target = self.requested.load(Ordering::SeqCst);
                let db = self.db.clone();
                tokio::task::spawn_blocking(move || db.flush())
                    .await
                    .map_err(|e| StoreError::Backend(e.to_string()))??;
                self.completed.send_modify(|c| *c = (*c).max(target));
                continue;
            }
            if done.changed().await.is_err() {
                return Err(StoreError::Backend("flusher gone".into()));
            }
        }
    }
}
