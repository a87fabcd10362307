//! The ordered key-value layer under `KvStore`: sled on disk, a BTreeMap in
//! memory for unit tests. Both apply a batch of writes atomically.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use super::positions::SharedStream;

use super::{Claim, Claimed, StoreError};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// Key-value pairs read from a range.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Clone)]
pub enum KvWrite {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

pub trait Kv: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with keys in `[start, end)`, ascending (or descending), at
    /// most `limit` of them.
    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Entries, StoreError>;
    /// Applies every write or none.
    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), StoreError>;
    /// `apply` under a claim, checking in the same transaction that what
    /// it claims is still this process's at its epoch (a store with one
    /// writing process has nothing to check).
    fn apply_claimed(&self, writes: Vec<KvWrite>, _claim: &Claim) -> Result<(), StoreError> {
        self.apply(writes)
    }
    /// Takes `what` for this process; its epoch. Refused with
    /// `StoreError::Elsewhere` while another live process owns it. A store
    /// with one writing process owns everything.
    fn claim(&self, _what: &Claimed) -> Result<i64, StoreError> {
        Ok(0)
    }
    /// Resolves once everything applied before the call is on disk.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Bytes the records take where they are kept (0 when not known).
    fn size_on_disk(&self) -> u64 {
        0
    }
    /// Tells other processes of the same store where this one serves
    /// (`host:port` of its listeners); only a shared store keeps it.
    fn announce(&self, _client: &str, _federation: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// The process holding a shared store's lease; `None` for a store
    /// without one.
    fn lease_holder(&self) -> Result<Option<super::LeaseHolder>, StoreError> {
        Ok(None)
    }
    /// The stream's positions, when other processes may write to the same
    /// store; `None`: this process is its only writer.
    fn shared_stream(&self) -> Option<Arc<dyn SharedStream>> {
        None
    }
}

/// Past every key the store writes (each starts with a table letter).
pub const ALL_KEYS_END: [u8; 64] = [0xff; 64];

/// Hands every pair to `each` in key order, `page` pairs at a time; how
/// many there were. Each page is read on its own, not as one moment.
pub fn for_each_page<K: Kv + ?Sized>(
    kv: &K,
    page: usize,
    mut each: impl FnMut(&Entries) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let mut start = Vec::new();
    let mut pairs = 0u64;
    loop {
        let entries = kv.range(&start, &ALL_KEYS_END, false, page)?;
        each(&entries)?;
        pairs += entries.len() as u64;
        match entries.last() {
            Some((k, _)) if entries.len() == page => {
                start = k.clone();
                start.push(0);
            }
            _ => return Ok(pairs),
        }
    }
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// In-memory store for unit tests.
#[derive(Default)]
pub struct MemKv {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemKv {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.lock().expect("poisoned").get(key).cloned())
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Entries, StoreError> {
        let map = self.map.lock().expect("poisoned");
        let r = map.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)));
        let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        Ok(if reverse { r.rev().take(limit).map(clone).collect() } else { r.take(limit).map(clone).collect() })
    }

    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), StoreError> {
        let mut map = self.map.lock().expect("poisoned");
        for w in writes {
            match w {
                KvWrite::Put(k, v) => {
                    map.insert(k, v);
                }
                KvWrite::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}
