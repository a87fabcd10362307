//! The on-disk key-value layer. The only module that uses sled.

use std::path::Path;
use std::sync::Arc;

use super::group_flush::GroupFlush;
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
        let flushed = db.clone();
        let flusher = GroupFlush::with(Arc::new(move || flushed.flush().map(|_| ()).map_err(StoreError::from)));
        Ok(SledKv { flusher, db, tree })
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

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
