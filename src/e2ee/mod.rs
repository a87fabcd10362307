//! End-to-end encryption as Matrix clients speak it (Olm and Megolm): the
//! server keeps each device's keys, hands one-time keys out once, and
//! carries to-device messages. The keys are the devices' own signed JSON;
//! the server checks who uploads them, never what they encrypt.

mod backup;
mod cross_signing;
mod device_lists;
mod keys;
mod mls;
mod to_device;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::ids::UserId;
use crate::store::Store;

pub use backup::Scope as BackupScope;
pub use cross_signing::{
    merge_signatures, one_signature, public_key as cross_signing_public_key, same_content, signed_by,
    KINDS as CROSS_SIGNING_KINDS,
};
pub use device_lists::{CachedDevices, DeviceChange, RemoteUpdate};
pub use keys::{Claimed, KeyCounts, MAX_FALLBACK_KEYS, MAX_ONE_TIME_KEYS};
pub use to_device::{Inbox, ToDeviceBatch, MAX_TO_DEVICE_BYTES, TO_DEVICE_PER_SYNC};

/// Locks striped by user: a user's key changes (an upload, a claim of one
/// of their keys, a to-device send) are read-modify-write over the store,
/// and two at once could hand one key out twice.
const STRIPES: usize = 64;

/// Device lists fetched at once, at most: past that an update's fetch is
/// left out (its user's keys are asked for live until the next one).
const MAX_RESYNCS: usize = 64;

pub struct E2ee {
    store: Arc<dyn Store>,
    stripes: Vec<Mutex<()>>,
    resyncing: Mutex<std::collections::HashSet<UserId>>,
}

impl E2ee {
    pub fn new(store: Arc<dyn Store>) -> Self {
        E2ee { store, stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(), resyncing: Default::default() }
    }

    /// Whether a fetch of `user`'s device list may start now (none is
    /// running for them, and few are running at all).
    pub fn begin_resync(&self, user: &UserId) -> bool {
        let mut running = self.resyncing.lock().unwrap_or_else(|p| p.into_inner());
        running.len() < MAX_RESYNCS && running.insert(user.clone())
    }

    pub fn end_resync(&self, user: &UserId) {
        self.resyncing.lock().unwrap_or_else(|p| p.into_inner()).remove(user);
    }

    /// Holds the user's key changes off while the caller reads and writes
    /// (a to-device transaction's check and its write).
    pub fn lock(&self, user: &UserId) -> MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        user.as_str().hash(&mut h);
        let stripe = &self.stripes[(h.finish() as usize) % STRIPES];
        // A panic under the lock leaves nothing half-written in memory: the
        // store batch is the unit.
        stripe.lock().unwrap_or_else(|p| p.into_inner())
    }
}
