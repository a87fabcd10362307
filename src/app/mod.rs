//! The composition root: `App::build(config)` opens the store, keys and
//! certificates, binds the listeners (port 0 works, for tests) and loads
//! every room; `run(shutdown)` serves until the future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::scrape::MetricsHandler;
use crate::client_api::{AdminHandler, ClientDeps, ClientHandler, RateLimits};
use crate::config::Backend;
use crate::config::Config;
use crate::federation::client::FedClient;
use crate::federation::inbound::FedHandler;
use crate::federation::keyring::load_or_create_signing_key;
use crate::federation::policy::AddressPolicy;
use crate::federation::Node;
use crate::http::observe::{Health, Observed};
mod forward;
pub mod member;
mod standby;

use crate::http::{serve, tls, Handler, Limits, SharedLimits};
use crate::store::record::{self, CommitRecord};
use crate::store::{Access, KvStore, PgKv, Positions, SledKv, Store};
use standby::Standing;

pub struct App {
    node: Arc<Node>,
    federation: TcpListener,
    client: TcpListener,
    /// The admin API and status page, when configured.
    admin: Option<TcpListener>,
    /// Prometheus metrics, when configured.
    metrics: Option<TcpListener>,
    tls: Option<Arc<tls::ServerTls>>,
    reload: Reloader,
}

/// What a configuration reload (SIGHUP) changes in a running server: the
/// client API's rate limits, the listeners' connection limits and
/// timeouts, and the federation certificate. The log filter is the
/// process's (`admin::logging`); the rest takes a restart.
#[derive(Clone)]
pub struct Reloader {
    rates: Arc<RateLimits>,
    http: SharedLimits,
    tls: Option<Arc<tls::ServerTls>>,
}

impl Reloader {
    /// Applies what can change while running; the certificate's refusal is
    /// the error (the old one stays).
    pub fn apply(&self, config: &Config) -> Result<(), String> {
        self.rates.apply(config);
        let mut limits = Limits::of(config);
        // Memory already promised stays as it was sized at the start.
        let old = self.http.current();
        limits.body_bytes_in_flight = old.body_bytes_in_flight;
        limits.body_timeout = old.body_timeout;
        self.http.replace(limits);
        match &self.tls {
            Some(t) => t.reload().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

/// Where the listeners ended up.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub federation: SocketAddr,
    pub client: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

async fn bind_optional(addr: Option<SocketAddr>, what: &str) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        None => Ok(None),
        Some(a) => Ok(Some(TcpListener::bind(a).await.with_context(|| format!("binding the {what} listener {a}"))?)),
    }
}

/// Where other processes of this server reach this one (`host:port` of
/// the client and federation listeners): `storage.postgres.advertise_host`,
/// else the listen address when it names one, else the host name; `None`
/// when there is none of these.
fn announced(config: &Config, bound: &Bound) -> Option<(String, String)> {
    let at = |addr: SocketAddr| {
        let host = match &config.storage.postgres.advertise_host {
            Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            None if !addr.ip().is_unspecified() => return Some(addr.to_string()),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned(),
        };
        match host {
            h if h.is_empty() => None,
            h if h.contains(':') => Some(format!("[{h}]:{}", addr.port())),
            h => Some(format!("{h}:{}", addr.port())),
        }
    };
    Some((at(bound.client)?, at(bound.federation)?))
}

/// Announces where this process serves, trying again until the store
/// takes it (a standby forwards nowhere until then).
async fn announce(node: Arc<Node>, at: Option<(String, String)>) {
    let Some((client, federation)) = at else {
        tracing::warn!("no address to announce: set storage.postgres.advertise_host for standbys to forward here");
        return;
    };
    loop {
        let (store, c, f) = (node.store.clone(), client.clone(), federation.clone());
        match tokio::task::spawn_blocking(move || store.announce(&c, &f)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => tracing::warn!(error = %e, "could not announce where this process serves; trying again"),
            Err(e) => tracing::warn!(error = %e, "announcing failed"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// sled locks its directory; a previous instance in this process may still
/// be releasing it (tests restart servers in place).
async fn open_store(dir: &Path, cache_bytes: u64) -> anyhow::Result<SledKv> {
    let mut last = None;
    for _ in 0..50 {
        match SledKv::open(dir, cache_bytes) {
            Ok(kv) => return Ok(kv),
            Err(e) if e.is_damage() => {
                last = Some(e);
                break;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.map(anyhow::Error::from).unwrap_or_else(|| anyhow::anyhow!("cannot open store")))
        .with_context(|| format!("opening the store in {}", dir.display()))
}

/// Opens the configured store and brings its format up to date.
pub async fn open_configured_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match config.storage.backend {
        Backend::Sled => Ok(Arc::new(open_checked_store(config).await?)),
        Backend::Postgres => {
            let term = config.storage.postgres.lease_term();
            let access =
                if config.storage.postgres.member { Access::Member { term } } else { Access::Serving { term } };
            Ok(Arc::new(open_postgres(config, access).await?))
        }
    }
}

/// Connects to the configured database, waiting a while for it to come up
/// but not past a refusal. While another process holds the lease this one
/// is a standby: it waits (listening as `storage.postgres.standby` says)
/// and takes over when the lease lapses.
pub async fn open_postgres(config: &Config, access: Access) -> anyhow::Result<KvStore<PgKv>> {
    let pg = &config.storage.postgres;
    let url = pg.url.clone().context("storage.postgres.url is not set")?;
    let (mut failures, mut standby_since) = (0, None::<std::time::Instant>);
    let mut standing = Standing::default();
    // While another process serves: a handle that only reads, asking who.
    let mut watching: Option<Arc<PgKv>> = None;
    let kv = loop {
        if let Some(watch) = watching.clone() {
            match tokio::task::spawn_blocking(move || watch.lease_holder()).await? {
                Ok(Some(holder)) => {
                    standing.listen(config, &holder).await;
                    // Looks again just after it would lapse, if that is sooner.
                    let lapse = holder.lapses_in + Duration::from_millis(20);
                    tokio::time::sleep(lapse.min(Duration::from_secs(1))).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "standby: could not read the PostgreSQL lease; reconnecting");
                    watching = None;
                }
            }
        }
        let (at, ca_file, size) = (url.clone(), pg.ca_file.clone(), pg.pool_size);
        match tokio::task::spawn_blocking(move || PgKv::open(&at, ca_file.as_deref(), size, access)).await? {
            Ok(kv) => break kv,
            Err(crate::store::StoreError::Leased(holder)) => {
                failures = 0;
                if standby_since.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::info!(%holder, "standby: another lmx process serves this database");
                    standby_since = Some(std::time::Instant::now());
                }
                if matches!(access, Access::Serving { .. }) {
                    standing.listen(config, &holder).await;
                }
                if watching.is_none() {
                    let (url, ca_file) = (url.clone(), pg.ca_file.clone());
                    let opened =
                        tokio::task::spawn_blocking(move || PgKv::open(&url, ca_file.as_deref(), 1, Access::ReadOnly));
                    watching = opened.await?.ok().map(Arc::new);
                }
            }
            Err(e) if e.is_damage() || failures >= 30 => {
                return Err(anyhow::Error::from(e).context("opening the PostgreSQL store"))
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "PostgreSQL store not ready; trying again")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    standing.stop().await;
    let store = KvStore::new(kv);
    match store.upgrade()? {
        Some(old) if old < crate::store::FORMAT_VERSION => {
            tracing::info!(from = old, to = crate::store::FORMAT_VERSION, "store format upgraded")
        }
        _ => {}
    }
    Ok(store)
}

/// On a store other processes write too, once a lease term: a worker for
/// each destination with queued work, so delivery a process that died was
/// doing is picked up once its claims lapse, even when no new event wakes
/// it (a worker for a destination another live process delivers to stops
/// at its claim).
async fn sweep_delivery(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let every = node.config.storage.postgres.lease_term();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let store = node.store.clone();
        match tokio::task::spawn_blocking(move || store.destinations_with_work()).await {
            Ok(Ok(destinations)) => {
                for dest in destinations {
                    node.outbound.wake(&node, &dest);
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not read which destinations have work"),
            Err(_) => {}
        }
    }
}

/// Waits until a serving process has said where it serves.
async fn wait_for_serving_process(store: &Arc<dyn Store>) -> anyhow::Result<()> {
    let mut said = false;
    loop {
        let reader = store.clone();
        let holder = tokio::task::spawn_blocking(move || reader.lease_holder()).await??;
        if holder.as_ref().is_some_and(|h| h.client_addr.is_some()) {
            return Ok(());
        }
        if !said {
            tracing::info!("member: waiting for a serving process to start");
            said = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Opens the sled store and checks it against the commit record before
/// anything is written to it; then brings its format up to date.
pub async fn open_checked_store(config: &Config) -> anyhow::Result<KvStore<SledKv>> {
    let dir = config.data_dir.join("db");
    let kv = match open_store(&dir, config.store_cache_bytes()).await {
        Ok(kv) => KvStore::new(kv),
        Err(e) if e.downcast_ref::<crate::store::StoreError>().is_some_and(|e| e.is_damage()) => {
            anyhow::bail!(record::damaged(&dir, &format!("{e:#}")))
        }
        Err(e) => return Err(e),
    };
    let format = kv.format()?;
    let record_path = record::path_in(&config.data_dir);
    let committed = CommitRecord::read(&record_path).with_context(|| format!("reading {}", record_path.display()))?;
    if let Some(rec) = committed {
        let missing = rec.missing(&kv, format, &config.server_name)?;
        if !missing.is_empty() {
            anyhow::bail!(record::refusal(&dir, &record_path, rec.written_ts, &missing));
        }
    }
    match kv.upgrade()? {
        Some(old) if old < crate::store::FORMAT_VERSION => {
            tracing::info!(from = old, to = crate::store::FORMAT_VERSION, "store format upgraded")
        }
        _ => {}
    }
    Ok(kv)
}

/// What the commit record says now: each room's length as its writer last
/// made durable, and the newest stream position below the watermark.
fn current_record(node: &Node) -> Result<CommitRecord, crate::store::StoreError> {
    let rooms = node.rooms.lengths().into_iter().filter(|(_, l)| *l > 0).map(|(id, l)| (id.to_string(), l)).collect();
    Ok(CommitRecord {
        format: crate::store::FORMAT_VERSION,
        server_name: node.name.to_string(),
        written_ts: crate::sys::now_ms(),
        stream_position: record::last_stream_position(node.store.as_ref(), node.positions.watermark())?,
        rooms,
    })
}

/// The client API's share of the server.
fn client_deps(node: &Arc<Node>, push: Arc<crate::push::Push>) -> ClientDeps {
    let weak = Arc::downgrade(node);
    ClientDeps {
        name: node.name.clone(),
        key: node.key.clone(),
        config: node.config.clone(),
        store: node.store.clone(),
        positions: node.positions.clone(),
        rooms: node.rooms.clone(),
        ephemeral: node.ephemeral.clone(),
        e2ee: node.e2ee.clone(),
        media: node.media.clone(),
        remote: crate::federation::Remote::new(node.clone()),
        push,
        spawn: Arc::new(move |task| {
            if let Some(node) = weak.upgrade() {
                node.spawn(task);
            }
        }),
    }
}

/// Readiness: every listener up, not stopping, the store taking writes.
fn health_of(node: &Arc<Node>, listeners: usize) -> Arc<Health> {
    let store = node.store.clone();
    let store_check = Box::new(move || {
        let mut b = crate::store::Batch::new();
        b.push(crate::store::Op::Probe(crate::sys::now_ms()));
        store.write(b).map_err(|e| e.to_string())
    });
    Health::new(listeners, store_check)
}

/// How a member passes federation requests on: over TLS to the serving
/// process, which presents the certificate the processes share.
fn member_federation_hop(config: &Config) -> anyhow::Result<forward::Hop> {
    if config.federation.insecure_plaintext {
        return Ok(forward::Hop::Plain);
    }
    forward::Hop::to_own_processes(config)
}

/// Push delivery, its tasks (when `sending`) stopping with the server's.
fn push_for(node: &Arc<Node>, sending: bool) -> Arc<crate::push::Push> {
    let weak = Arc::downgrade(node);
    let push = crate::push::Push::new(crate::push::PushDeps {
        name: node.name.clone(),
        config: node.config.clone(),
        store: node.store.clone(),
        positions: node.positions.clone(),
        rooms: node.rooms.clone(),
        spawn: Arc::new(move |task| {
            if let Some(node) = weak.upgrade() {
                node.spawn(task);
            }
        }),
    });
    if sending {
        push.start();
    }
    push
}

/// Keeps the commit record a couple of seconds behind the store. What it
/// names is durable before the file is written (views and the watermark
/// only ever show durable writes, and the store is flushed first).
async fn write_record(node: &Node, path: &Option<PathBuf>, last: &mut Option<CommitRecord>) {
    let Some(path) = path else { return };
    let rec = match current_record(node) {
        Ok(r) => r,
        Err(e) => return tracing::warn!(error = %e, "could not read what to put in the commit record"),
    };
    let unchanged = last.as_ref().is_some_and(|l| l.rooms == rec.rooms && l.stream_position == rec.stream_position);
    if unchanged {
        // Nothing was written for a while: a good moment to give memory back.
        give_back_free_memory();
        return;
    }
    if let Err(e) = node.store.flush().await {
        return tracing::warn!(error = %e, "store flush failed; commit record not updated");
    }
    let (path, to_write) = (path.to_owned(), rec.clone());
    match tokio::task::spawn_blocking(move || to_write.write(&path)).await {
        Ok(Ok(())) => *last = Some(rec),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not write the commit record"),
        Err(e) => tracing::warn!(error = %e, "commit record writer failed"),
    }
}

const RECORD_EVERY: Duration = Duration::from_secs(2);

/// Returns glibc's free pages to the system. glibc keeps memory freed in
/// the middle of its heaps (parsed events come and go by the thousand)
/// until something trims it, so an idle server would go on holding its
/// busiest moment's memory. The `lmx` binary allocates with jemalloc, which
/// gives pages back by itself; this serves servers built into other
/// programs (the tests) and what C code allocates. Trimming holds the allocator's locks
/// for a while on a large heap, so it is done only when the server is
/// quiet (nothing appended since the last look).
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
        // The store first: a standby waits there, so only the process that
        // serves creates a missing key in a data directory standbys share.
        let store = open_configured_store(&config).await?;
        if config.storage.postgres.member {
            // The serving process makes the signing key and certificate
            // the processes share; it has once it says where it serves.
            wait_for_serving_process(&store).await?;
            // A member never makes an identity of its own: other servers
            // and the other processes know the server by these.
            let mut shared = vec![("signing key", config.signing_key_path())];
            if !config.federation.insecure_plaintext {
                shared.push(("TLS certificate", config.tls_cert_path()));
            }
            for (what, path) in shared {
                anyhow::ensure!(
                    path.exists(),
                    "member: the server's {what} is not at {}; give it the serving process's",
                    path.display()
                );
            }
        }
        let name = config.server_name();
        let key = load_or_create_signing_key(&config.signing_key_path(), &name)?;
        let positions = Positions::open(store.clone())?;

        let fed_conf = &config.federation;
        let tls = if fed_conf.insecure_plaintext {
            tracing::warn!("federation runs over plain HTTP (federation.insecure_plaintext)");
            None
        } else {
            let (cert, key_path) = (config.tls_cert_path(), config.tls_key_path());
            if fed_conf.tls_cert.is_none() {
                let host = name.host().to_owned();
                tls::ensure_self_signed(&cert, &key_path, vec![host, "localhost".into(), "127.0.0.1".into()])?;
            }
            Some(tls::ServerTls::load(&cert, &key_path)?)
        };
        let client_tls = if fed_conf.insecure_plaintext {
            None
        } else {
            Some(tls::client_config(fed_conf.trust_self_signed, fed_conf.extra_ca_file.as_deref())?)
        };
        let resolve = fed_conf.resolve.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let timeout = Duration::from_millis(fed_conf.request_timeout_ms);
        let policy = AddressPolicy::new(fed_conf.allow_ip_ranges.clone());
        let fed = Arc::new(FedClient::new(key.clone(), client_tls, resolve, policy, timeout));

        let federation =
            TcpListener::bind(fed_conf.listen).await.with_context(|| format!("binding {}", fed_conf.listen))?;
        let client = TcpListener::bind(config.client.listen)
            .await
            .with_context(|| format!("binding {}", config.client.listen))?;
        let admin = bind_optional(config.admin.listen, "admin").await?;
        let metrics = bind_optional(config.metrics.listen, "metrics").await?;
        if metrics.is_some() && crate::admin::metrics::install().is_none() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }

        let node = Node::new(config, key, store, positions, fed);
        node.media.clean_tmp().context("clearing half-written media files")?;
        for rec in node.store.rooms()? {
            let id = rec.room()?;
            node.rooms.register_stored(&id).map_err(|e| anyhow::anyhow!("loading {id}: {e}"))?;
        }
        tracing::info!(server = %node.name, rooms = node.rooms.len(), "lmx ready");
        let reload = Reloader {
            rates: Arc::new(RateLimits::of(&node.config)),
            http: SharedLimits::new(Limits::of(&node.config)),
            tls: tls.clone(),
        };
        Ok(App { node, federation, client, admin, metrics, tls, reload })
    }

    pub fn addresses(&self) -> Bound {
        Bound {
            federation: self.federation.local_addr().expect("bound"),
            client: self.client.local_addr().expect("bound"),
            admin: self.admin.as_ref().map(|l| l.local_addr().expect("bound")),
            metrics: self.metrics.as_ref().map(|l| l.local_addr().expect("bound")),
        }
    }

    /// What a configuration reload changes (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        self.reload.clone()
    }

    pub fn node(&self) -> Arc<Node> {
        self.node.clone()
    }

    /// Serves until `shutdown` resolves, then stops every task and makes
    /// sure everything written is on disk.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let bound = self.addresses();
        let (stop_tx, stop_rx) = watch::channel(false);
        let listeners = 2 + usize::from(self.admin.is_some()) + usize::from(self.metrics.is_some());
        let health = health_of(&self.node, listeners);
        let observed = |inner: Arc<dyn Handler>, listener| -> Arc<dyn Handler> {
            let proxies = self.node.config.client.trusted_proxies.clone();
            Arc::new(Observed { inner, health: health.clone(), listener, proxies })
        };
        let member = self.node.config.storage.postgres.member;
        // A member's push notifications are sent by the serving process,
        // which reads every process's events from the shared stream.
        let push = push_for(&self.node, !member);
        let client_deps = Arc::new(client_deps(&self.node, push));
        let client = Arc::new(ClientHandler::new(client_deps, self.reload.rates.clone()));
        let (mut fed_handler, mut client_handler): (Arc<dyn Handler>, Arc<dyn Handler>) =
            (Arc::new(FedHandler { node: self.node.clone() }), client.clone());
        let mut tasks = Vec::new();
        if member {
            let following = member::Following::new();
            tasks.push(tokio::spawn(following.clone().keep_following(self.node.store.clone(), stop_rx.clone())));
            let limits = self.reload.http.current();
            let in_flight = forward::InFlight::new(limits.max_connections, limits.max_connections_per_ip);
            let retry = self.node.config.storage.postgres.lease_secs;
            let hop = member_federation_hop(&self.node.config)?;
            fed_handler =
                member::MemberHandler::new(fed_handler, Some(hop), following.clone(), in_flight.clone(), retry);
            client_handler = member::MemberHandler::new(client_handler, None, following, in_flight, retry);
        }
        let limits = self.reload.http.clone();
        let fed_handler = observed(fed_handler, "federation");
        tasks.push(tokio::spawn(serve(
            self.federation,
            self.tls.clone(),
            fed_handler,
            limits.clone(),
            stop_rx.clone(),
        )));
        let client_handler = observed(client_handler, "client");
        tasks.push(tokio::spawn(serve(self.client, None, client_handler, limits.clone(), stop_rx.clone())));
        if let Some(listener) = self.admin {
            let handler = observed(Arc::new(AdminHandler::new(client)), "admin");
            tasks.push(tokio::spawn(serve(listener, None, handler, limits.clone(), stop_rx.clone())));
        }
        if let Some(listener) = self.metrics {
            let handler = observed(Arc::new(MetricsHandler { node: self.node.clone() }), "metrics");
            tasks.push(tokio::spawn(serve(listener, None, handler, limits, stop_rx.clone())));
        }
        if let Some(tls) = &self.tls {
            tasks.push(tokio::spawn(tls.clone().keep_reading(stop_rx.clone())));
        }
        for _ in 0..listeners {
            health.listener_up();
        }
        tokio::spawn(announce(self.node.clone(), announced(&self.node.config, &bound)));
        self.node.outbound.resume_all(&self.node)?;
        if self.node.store.shared_stream().is_some() {
            tasks.push(tokio::spawn(sweep_delivery(self.node.clone(), stop_rx.clone())));
        }
        // The commit record guards a sled directory against a torn copy;
        // PostgreSQL keeps its own log.
        let record_path =
            (self.node.config.storage.backend == Backend::Sled).then(|| record::path_in(&self.node.config.data_dir));
        let mut last_record = None;
        write_record(&self.node, &record_path, &mut last_record).await;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(RECORD_EVERY) => write_record(&self.node, &record_path, &mut last_record).await,
            }
        }
        tracing::info!("shutting down");
        health.stopping();
        let _ = stop_tx.send(true);
        for task in tasks {
            let _ = task.await;
        }
        self.node.stop_tasks().await;
        self.node.store.flush().await?;
        write_record(&self.node, &record_path, &mut last_record).await;
        Ok(())
    }
}
