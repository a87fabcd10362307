//! The running server's shared parts, built once by `App::build` and handed
//! to every surface and task. Each field is one explicit service; nothing is
//! looked up by name.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

use crate::config::Config;
use crate::core::crypto::SigningKey;
use crate::core::ids::ServerName;
use crate::ephemeral::Ephemeral;
use crate::federation::client::FedClient;
use crate::federation::inbound::InboundTxns;
use crate::federation::keyring::KeyRing;
use crate::federation::outbound::Outbound;
use crate::room::Rooms;
use crate::store::{Positions, Store};

pub struct Node {
    pub name: ServerName,
    pub key: SigningKey,
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub positions: Arc<Positions>,
    pub fed: Arc<FedClient>,
    pub keyring: KeyRing,
    pub rooms: Arc<Rooms>,
    pub ephemeral: Arc<Ephemeral>,
    /// Devices' keys and to-device inboxes.
    pub e2ee: Arc<crate::e2ee::E2ee>,
    /// Uploaded and fetched files.
    pub media: Arc<crate::media::Media>,
    pub outbound: Outbound,
    pub inbound: InboundTxns,
    /// Events and states of mixed rooms as the federation handlers read
    /// them (rooms tell it what their batches changed).
    pub dag: Arc<crate::room::snapshot::DagCache>,
    /// LM rooms' visibility changes by list position (federation reads).
    pub visibility: crate::federation::handlers::visibility::VisibilityIndex,
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        key: SigningKey,
        store: Arc<dyn Store>,
        positions: Arc<Positions>,
        fed: Arc<FedClient>,
    ) -> Arc<Node> {
        let name = config.server_name();
        let keyring = KeyRing::new(key.clone(), fed.clone(), store.clone());
        let outbound = Outbound::new(config.federation.retry_base_ms, config.federation.retry_max_ms);
        let dag: Arc<crate::room::snapshot::DagCache> = Arc::default();
        Arc::new_cyclic(|me: &std::sync::Weak<Node>| {
            let follower = config.mode == crate::config::Mode::Follower;
            let spawner = me.clone();
            let rooms = Rooms::new(crate::room::RoomDeps {
                env: crate::room::machine::Env {
                    key: key.clone(),
                    timeline_cache: follower.then_some(config.follower.timeline_cache),
                },
                store: store.clone(),
                positions: positions.clone(),
                shared_cache: dag.clone(),
                network: Arc::new(crate::federation::room_network::NodeNetwork::new(me.clone())),
                spawn: Arc::new(move |task| {
                    if let Some(node) = spawner.upgrade() {
                        node.spawn(task);
                    }
                }),
                rest_after: match config.storage.room_idle_secs {
                    0 => None,
                    s => Some(std::time::Duration::from_secs(s)),
                },
            });
            let e2ee = Arc::new(crate::e2ee::E2ee::new(store.clone()));
            let media = Arc::new(crate::media::Media::new(
                name.clone(),
                store.clone(),
                config.data_dir.join("media"),
                crate::media::MediaLimits::of(&config),
            ));
            Node {
                name,
                key,
                config,
                store,
                positions,
                fed,
                keyring,
                rooms: Arc::new(rooms),
                ephemeral: Arc::default(),
                e2ee,
                media,
                outbound,
                inbound: InboundTxns::default(),
                dag,
                visibility: Default::default(),
                tasks: Mutex::new(Some(JoinSet::new())),
            }
        })
    }

    /// Runs a background task that stops with the server.
    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
        if let Some(set) = self.tasks.lock().expect("poisoned").as_mut() {
            set.spawn(fut);
            // Reap finished tasks so the set does not grow for ever.
            while set.try_join_next().is_some() {}
        }
    }

    /// Stops every background task (room writers, delivery workers).
    pub async fn stop_tasks(&self) {
        let set = self.tasks.lock().expect("poisoned").take();
        if let Some(mut set) = set {
            set.shutdown().await;
        }
    }

    pub fn is_me(&self, server: &ServerName) -> bool {
        server == &self.name
    }
}
