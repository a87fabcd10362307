//! Push: notifications for users' devices through the HTTP push gateways
//! their clients name (the push gateway API), and the unread counts of
//! `/sync`.
//!
//! One task follows the event stream from a cursor kept in the store. For
//! each event, every local member with a pusher whose push rules say
//! `notify` gets an item in each of its pushers' queues, written in the
//! same batch as the cursor's advance: a restart neither loses a
//! notification nor queues one twice. One worker per pusher drains its
//! queue to the gateway, in order, retrying with backoff; an item leaves
//! the queue only once the gateway took it (or refused it for good).

pub mod gateway;
mod queue;
pub mod unread;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};

use crate::config::Config;
use crate::core::ids::{ServerName, UserId};
use crate::room::{Rooms, Spawn};
use crate::store::{Positions, Store};

pub use queue::PusherKey;

/// What the push tasks use of the server.
pub struct PushDeps {
    pub name: ServerName,
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub positions: Arc<Positions>,
    pub rooms: Arc<Rooms>,
    pub spawn: Spawn,
}

pub struct Push {
    deps: PushDeps,
    pub unread: unread::UnreadCounts,
    /// Pushers were added or removed: the queueing task reloads them.
    dirty: AtomicBool,
    changed: Notify,
    /// Each pusher's worker, woken when its queue grew.
    workers: Mutex<HashMap<PusherKey, Arc<Notify>>>,
    /// Gateway requests in flight, for the whole server.
    sends: Semaphore,
    /// And per gateway host.
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Requests in flight to one gateway host.
const PER_HOST: usize = 8;
/// Hosts whose slots are kept; idle ones are forgotten past this.
const MAX_HOSTS: usize = 1024;

impl Push {
    pub fn new(deps: PushDeps) -> Arc<Push> {
        let sends = Semaphore::new(deps.config.push.max_concurrent_requests.max(1));
        Arc::new(Push {
            deps,
            unread: Default::default(),
            dirty: AtomicBool::new(false),
            changed: Notify::new(),
            workers: Default::default(),
            sends,
            hosts: Default::default(),
        })
    }

    /// Starts the queueing task and a worker for every stored pusher.
    pub fn start(self: &Arc<Self>) {
        let push = self.clone();
        (self.deps.spawn)(Box::pin(async move { queue::run(push).await }));
    }

    /// A client added or removed a pusher (or a device went with its own).
    pub fn pushers_changed(&self) {
        self.dirty.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// Wakes a pusher's worker, starting it if it is not running.
    fn kick(self: &Arc<Self>, key: &PusherKey) {
        let mut workers = self.workers.lock().expect("poisoned");
        if let Some(w) = workers.get(key) {
            w.notify_one();
            return;
        }
        let wake = Arc::new(Notify::new());
        workers.insert(key.clone(), wake.clone());
        let (push, key) = (self.clone(), key.clone());
        (self.deps.spawn)(Box::pin(async move { worker::run(push, key, wake).await }));
    }

    /// The request slots of one gateway host.
    fn host_slots(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().expect("poisoned");
        if hosts.len() >= MAX_HOSTS && !hosts.contains_key(host) {
            hosts.retain(|_, s| s.available_permits() < PER_HOST);
        }
        hosts.entry(host.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(PER_HOST))).clone()
    }

    /// Wakes every worker (each looks whether its pusher is still there).
    fn wake_all(&self) {
        self.workers.lock().expect("poisoned").values().for_each(|w| w.notify_one());
    }

    /// A worker whose pusher is gone leaves the table.
    fn worker_done(&self, key: &PusherKey) {
        self.workers.lock().expect("poisoned").remove(key);
    }

    fn is_local(&self, user: &UserId) -> bool {
        user.is_on(&self.deps.name)
    }
}
