//! End-to-end encryption as Matrix clients speak it (Olm and Megolm): the
//! server keeps each device's keys, hands one-time keys out once, and
//! carries to-device messages. The keys are the devices' own signed JSON;
//! the server checks who uploads them, never what they encrypt.

mod keys;
mod to_device;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::ids::UserId;
use crate::store::Store;

pub use keys::{Claimed, KeyCounts, MAX_FALLBACK_KEYS, MAX_ONE_TIME_KEYS};
pub use to_device::{Inbox, ToDeviceBatch, MAX_TO_DEVICE_BYTES, TO_DEVICE_PER_SYNC};

/// Locks striped by user: a user's key changes (an upload, a claim of one
/// of their keys, a to-device send) are read-modify-write over the store,
/// and two at once could hand one key out twice.
const STRIPES: usize = 64;

pub struct E2ee {
    store: Arc<dyn Store>,
    stripes: Vec<Mutex<()>>,
}

impl E2ee {
    pub fn new(store: Arc<dyn Store>) -> Self {
        E2ee { store, stripes: (0..STRIPES).map(|_| Mutex::new(())).collect() }
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
