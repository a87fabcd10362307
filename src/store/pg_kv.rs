//! The PostgreSQL key-value layer: one table of ordered byte keys, so every
//! record keeps the layout `KvStore` gives it and the conformance suite runs
//! unchanged. The only module that uses tokio-postgres.
//!
//! `Kv` is synchronous (room writers and readers call it from their own
//! tasks, as they call sled), so the pool lives on a small runtime of its
//! own and callers wait on a plain channel for its answer.
//!
//! Durability as with sled: a batch commits without waiting for the disk
//! (`synchronous_commit = off` on pooled connections), and `flush` commits
//! one transaction that does wait, which puts every earlier commit on disk
//! too (the WAL is one sequence). Concurrent flushes share it.

use std::future::Future;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::group_flush::GroupFlush;
use super::kv::{BoxFuture, Entries, Kv, KvWrite};
use super::pg_lease::{self, Lease, Renewals, Standing};
use super::pg_owners;
use super::pg_stream::{self, PgStream};
use super::positions::SharedStream;
use super::{Claim, Claimed, StoreError};

/// The schema, one step per version; a database is at version N when the
/// first N steps have run. Steps are only ever appended.
const MIGRATIONS: &[&str] = &[
    // 1: records under ordered byte keys (bytea compares byte by byte).
    "CREATE TABLE lmx_kv (k bytea PRIMARY KEY, v bytea NOT NULL)",
    // 2: the serving process's lease (`pg_lease.rs`).
    "CREATE TABLE lmx_lease (id integer PRIMARY KEY CHECK (id = 1), holder text NOT NULL, \
     epoch bigint NOT NULL, expires_at timestamptz NOT NULL); \
     INSERT INTO lmx_lease VALUES (1, '', 0, '-infinity')",
    // 3: where the holder serves, for standbys that forward to it.
    "ALTER TABLE lmx_lease ADD COLUMN client_addr text NOT NULL DEFAULT '', \
     ADD COLUMN federation_addr text NOT NULL DEFAULT ''",
    // 4: stream positions shared by writing processes.
    super::pg_stream::MIGRATION,
    // 5: which writing process owns each room and destination.
    super::pg_owners::MIGRATION,
    // 6: where each writing process serves, so others can reach an owner.
    "ALTER TABLE lmx_writer ADD COLUMN client_addr text NOT NULL DEFAULT '', \
     ADD COLUMN federation_addr text NOT NULL DEFAULT ''",
];

/// The advisory lock (per database) migrations run under.
const MIGRATION_LOCK: i64 = 0x6c6d_7800_0001;

const GET: &str = "SELECT v FROM lmx_kv WHERE k = $1";
const RANGE_UP: &str = "SELECT k, v FROM lmx_kv WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3";
const RANGE_DOWN: &str = "SELECT k, v FROM lmx_kv WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3";
const UPSERT: &str = "INSERT INTO lmx_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                      ON CONFLICT (k) DO UPDATE SET v = excluded.v";
const DELETE: &str = "DELETE FROM lmx_kv WHERE k = ANY($1::bytea[])";
/// Takes a transaction id, so its commit writes a record and waits for the
/// WAL to reach the disk.
const SYNC_COMMIT: &str = "SELECT txid_current()";

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres: {e}"))
}

/// A connection's failure with its causes (tokio-postgres shows only the
/// outermost, e.g. "error performing TLS handshake" without the reason).
fn connect_failed(e: tokio_postgres::Error) -> StoreError {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    backend(text)
}

pub struct PgKv {
    pool: Pool,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    flusher: GroupFlush,
    /// Checked by every batch; `None`: this handle only reads.
    lease: Option<Lease>,
    renewing: Option<tokio::task::JoinHandle<()>>,
    /// Positions shared with other writers; `None` when this handle reads only.
    stream: Option<Arc<PgStream>>,
    /// The session holding the lease.
    session: Arc<tokio::sync::Mutex<tokio_postgres::Client>>,
}

/// How `PgKv::open` treats other processes on the same database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `lmx serve` (and tools that write): takes the lease for `term`,
    /// renewing it, or fails with `StoreError::Leased` while another
    /// process holds it.
    Serving { term: Duration },
    /// Writes beside the serving process and other members, fenced by its
    /// own row in `lmx_writer` (renewed for `term`) instead of the lease.
    Member { term: Duration },
    /// Reads only; writes are refused.
    ReadOnly,
}

impl PgKv {
    /// Connects (over TLS as `pg_tls` decides, `ca_file` trusted besides
    /// the system's roots), brings the schema up to date (refusing a newer
    /// one) and, for `Access::Serving`, takes the database for this process.
    pub fn open(url: &str, ca_file: Option<&Path>, pool_size: usize, access: Access) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Backend(format!("storage.postgres.url: {e}")))?;
        config.connect_timeout(Duration::from_secs(10));
        config.ssl_mode(super::pg_tls::mode(config.get_ssl_mode(), ca_file.is_some()).map_err(StoreError::Backend)?);
        let tls = super::pg_tls::connector(ca_file)?;
        let mut pooled = config.clone();
        // A transaction left open (its process paused inside it) ends on
        // its own, so the writer row it locked can be removed.
        let idle_timeout = match access {
            Access::Serving { term } | Access::Member { term } => term.as_millis().max(1000),
            Access::ReadOnly => 60_000,
        };
        let options = format!(
            "{} -c synchronous_commit=off -c idle_in_transaction_session_timeout={idle_timeout}",
            config.get_options().unwrap_or("")
        );
        let options = options.trim().to_owned();
        pooled.options(&options);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lmx-postgres")
            .enable_all()
            .build()
            .map_err(backend)?;
        let handle = runtime.handle().clone();
        let manager =
            Manager::from_config(pooled, tls.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(backend)?;
        let (session, lease) = on(&handle, connect_and_migrate(config.clone(), tls.clone(), access))?;
        let session = Arc::new(tokio::sync::Mutex::new(session));
        let renewing = lease.as_ref().map(|lease| handle.spawn(keep_renewing(session.clone(), lease.clone())));
        let stream = lease
            .as_ref()
            .map(|lease| PgStream::start(handle.clone(), pool.clone(), lease.holder.clone(), config, tls));
        let (flush_handle, flush_session) = (handle.clone(), session.clone());
        let flusher = GroupFlush::with(Arc::new(move || {
            let session = flush_session.clone();
            on(&flush_handle, async move {
                let client = session.lock().await;
                client.query_one(SYNC_COMMIT, &[]).await.map_err(backend)?;
                Ok(())
            })
        }));
        Ok(PgKv { pool, runtime: Some(runtime), handle, flusher, lease, renewing, stream, session })
    }

    /// Who serves the database now; `None` when the lease is free to take.
    /// A standby asks this on a handle that only reads, so waiting costs
    /// one query a second instead of a whole `open`.
    pub fn lease_holder(&self) -> Result<Option<super::LeaseHolder>, StoreError> {
        self.run(|pool| async move {
            let c = pool.get().await.map_err(backend)?;
            let row = c.query_one(pg_lease::CURRENT, &[]).await.map_err(backend)?;
            Ok(pg_lease::current(&row))
        })
    }

    /// One transaction: the writer's fence (and the claim's, `(key,
    /// epoch)`) and the writes, sent together (one round trip) and run in
    /// order, so writes after a failed check are never committed.
    fn apply_fenced(&self, writes: Vec<KvWrite>, claim: Option<(String, i64)>) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let lease = self.writer()?;
        let Split { keys, values, deletes } = split(writes);
        self.run(|pool| async move {
            let mut c = pool.get().await.map_err(backend)?;
            let (fence, fence_params) = lease.fence();
            let fence = c.prepare_cached(fence).await.map_err(backend)?;
            let claim_fence = c.prepare_cached(pg_owners::FENCE).await.map_err(backend)?;
            let upsert = c.prepare_cached(UPSERT).await.map_err(backend)?;
            let delete = c.prepare_cached(DELETE).await.map_err(backend)?;
            let tx = c.transaction().await.map_err(backend)?;
            let held = tx.query_opt(&fence, &fence_params);
            let owned = async {
                match &claim {
                    None => Ok(true),
                    Some((key, epoch)) => {
                        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [key, &lease.holder, epoch];
                        tx.query_opt(&claim_fence, &params).await.map(|row| row.is_some())
                    }
                }
            };
            let put = async {
                if keys.is_empty() {
                    Ok(0)
                } else {
                    tx.execute(&upsert, &[&keys, &values]).await
                }
            };
            let removed = async {
                if deletes.is_empty() {
                    Ok(0)
                } else {
                    tx.execute(&delete, &[&deletes]).await
                }
            };
            let (held, owned, _, _) =
                futures_util::future::try_join4(held, owned, put, removed).await.map_err(backend)?;
            if held.is_none() {
                lost(&lease, lease.gone());
            }
            if let (false, Some((key, _))) = (owned, &claim) {
                tx.rollback().await.map_err(backend)?;
                let row = c.query_opt(pg_owners::OWNER, &[key]).await.map_err(backend)?;
                return Err(StoreError::Elsewhere(pg_owners::owner_in(key, row.as_ref())));
            }
            tx.commit().await.map_err(backend)
        })
    }

    /// This process's lease or writer row, which every write goes under.
    fn writer(&self) -> Result<Lease, StoreError> {
        self.lease.clone().ok_or_else(|| StoreError::Backend("postgres: this store was opened to read only".into()))
    }

    fn run<T, F>(&self, work: impl FnOnce(Pool) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        on(&self.handle, work(self.pool.clone()))
    }
}

/// Runs `work` on the pool's runtime and waits for it from any thread,
/// inside another runtime's task or not.
pub(super) fn on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(work.await);
    });
    rx.recv().map_err(|_| StoreError::Backend("postgres: the connection runtime stopped".into()))?
}

/// Renews the lease until the process ends. A process that can no longer
/// show it holds the database stops at once, before another one serving
/// it could be contradicted (its supervisor starts it again, to wait).
async fn keep_renewing(session: Arc<tokio::sync::Mutex<tokio_postgres::Client>>, lease: Lease) {
    let mut renewals = Renewals::new(lease.term, Instant::now());
    let term = lease.term.as_secs_f64();
    loop {
        tokio::time::sleep(renewals.every()).await;
        let sent = Instant::now();
        let renewed = {
            let client = session.lock().await;
            let (renew, params) = lease.renewal(&term);
            let renewed = tokio::time::timeout(renewals.every(), client.execute(renew, &params)).await;
            // Apart from the renewal, whose outcome it must not change.
            let forgotten = tokio::time::timeout(renewals.every(), client.execute(pg_stream::FORGET_LAPSED, &[]));
            match forgotten.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not remove lapsed PostgreSQL writers"),
                Err(_) => tracing::warn!("removing lapsed PostgreSQL writers timed out"),
            }
            renewed
        };
        match renewed {
            Ok(Ok(1)) => renewals.renewed(sent),
            Ok(Ok(_)) => lost(&lease, lease.gone()),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not renew the PostgreSQL lease"),
            Err(_) => tracing::warn!("renewing the PostgreSQL lease timed out"),
        }
        if renewals.standing(Instant::now()) == Standing::Expired {
            lost(&lease, "not renewed for a whole term");
        }
    }
}

fn lost(lease: &Lease, why: &str) -> ! {
    tracing::error!(epoch = lease.epoch, why, "this process no longer holds the PostgreSQL store; stopping");
    std::process::exit(75)
}

/// The session that holds the lease and makes flushes durable.
async fn connect_and_migrate(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    access: Access,
) -> Result<(tokio_postgres::Client, Option<Lease>), StoreError> {
    let (mut client, connection) = config.connect(tls).await.map_err(connect_failed)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres session ended");
        }
    });
    migrate(&mut client).await?;
    let holder = pg_lease::holder_name();
    let lease = match access {
        Access::ReadOnly => return Ok((client, None)),
        Access::Member { term } => Lease { holder, epoch: 0, term, serving: false },
        Access::Serving { term } => {
            let secs = term.as_secs_f64();
            match client.query_opt(pg_lease::TAKE, &[&holder, &secs]).await.map_err(backend)? {
                Some(row) => {
                    let epoch: i64 = row.get(0);
                    tracing::info!(epoch, holder, "took the PostgreSQL store's lease");
                    Lease { holder, epoch, term, serving: true }
                }
                None => {
                    let row = client.query_one(pg_lease::CURRENT, &[]).await.map_err(backend)?;
                    return Err(pg_lease::held_by(&row));
                }
            }
        }
    };
    // A serving process that took the lease over finds its predecessor's
    // row lapsed with it.
    client.execute(pg_stream::FORGET_LAPSED, &[]).await.map_err(backend)?;
    let secs = lease.term.as_secs_f64();
    client.execute(pg_stream::JOIN, &[&lease.holder, &secs]).await.map_err(backend)?;
    client.execute(pg_stream::ANNOUNCE_JOINED, &[&lease.holder]).await.map_err(backend)?;
    Ok((client, Some(lease)))
}

/// Applies the steps the database lacks, one transaction, under a lock so
/// processes starting together do not race.
async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(backend)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS lmx_schema (version integer NOT NULL)").await.map_err(backend)?;
    let found = match tx.query_opt("SELECT version FROM lmx_schema", &[]).await.map_err(backend)? {
        Some(row) => row.get::<_, i32>(0).max(0) as usize,
        None => {
            tx.execute("INSERT INTO lmx_schema (version) VALUES (0)", &[]).await.map_err(backend)?;
            0
        }
    };
    if found > MIGRATIONS.len() {
        return Err(StoreError::NewerSchema { found: found as u32, supported: MIGRATIONS.len() as u32 });
    }
    for step in &MIGRATIONS[found..] {
        tx.batch_execute(step).await.map_err(backend)?;
    }
    let version = MIGRATIONS.len() as i32;
    tx.execute("UPDATE lmx_schema SET version = $1", &[&version]).await.map_err(backend)?;
    tx.commit().await.map_err(backend)?;
    if found < MIGRATIONS.len() {
        tracing::info!(from = found, to = MIGRATIONS.len(), "postgres schema migrated");
    }
    Ok(())
}

/// A batch as statement parameters: keys and values to put, keys to delete.
struct Split {
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    deletes: Vec<Vec<u8>>,
}

/// The last write to each key, as puts and deletes: one statement may not
/// touch a row twice.
fn split(writes: Vec<KvWrite>) -> Split {
    let mut last = std::collections::BTreeMap::new();
    for w in writes {
        match w {
            KvWrite::Put(k, v) => last.insert(k, Some(v)),
            KvWrite::Delete(k) => last.insert(k, None),
        };
    }
    let (mut keys, mut values, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
    for (k, v) in last {
        match v {
            Some(v) => {
                keys.push(k);
                values.push(v);
            }
            None => deletes.push(k),
        }
    }
    Split { keys, values, deletes }
}

impl Kv for PgKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.run(|pool| async move {
            let c = pool.get().await.map_err(backend)?;
            let st = c.prepare_cached(GET).await.map_err(backend)?;
            Ok(c.query_opt(&st, &[&key]).await.map_err(backend)?.map(|row| row.get(0)))
        })
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Entries, StoreError> {
        let (start, end) = (start.to_vec(), end.to_vec());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(|pool| async move {
            let c = pool.get().await.map_err(backend)?;
            let st = c.prepare_cached(if reverse { RANGE_DOWN } else { RANGE_UP }).await.map_err(backend)?;
            let rows = c.query(&st, &[&start, &end, &limit]).await.map_err(backend)?;
            Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }

    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), StoreError> {
        self.apply_fenced(writes, None)
    }

    fn apply_claimed(&self, writes: Vec<KvWrite>, claim: &Claim) -> Result<(), StoreError> {
        self.apply_fenced(writes, Some((claim.what.key(), claim.epoch)))
    }

    fn claim(&self, what: &Claimed) -> Result<i64, StoreError> {
        let lease = self.writer()?;
        let key = what.key();
        self.run(|pool| async move {
            let c = pool.get().await.map_err(backend)?;
            if let Some(row) = c.query_opt(pg_owners::CLAIM, &[&key, &lease.holder]).await.map_err(backend)? {
                return Ok(row.get(0));
            }
            let row = c.query_opt(pg_owners::OWNER, &[&key]).await.map_err(backend)?;
            Err(StoreError::Elsewhere(pg_owners::owner_in(&key, row.as_ref())))
        })
    }
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.flusher.flush())
    }

    fn announce(&self, client: &str, federation: &str) -> Result<(), StoreError> {
        let Some(lease) = self.lease.clone() else { return Ok(()) };
        let (session, client, federation) = (self.session.clone(), client.to_owned(), federation.to_owned());
        on(&self.handle, async move {
            let c = session.lock().await;
            let writer: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&lease.holder, &client, &federation];
            c.execute(pg_owners::ANNOUNCE, &writer).await.map_err(backend)?;
            if !lease.serving {
                return Ok(());
            }
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&lease.holder, &lease.epoch, &client, &federation];
            match c.execute(pg_lease::ANNOUNCE, &params).await.map_err(backend)? {
                1 => Ok(()),
                _ => {
                    Err(StoreError::Backend("postgres: the lease moved on before this process announced itself".into()))
                }
            }
        })
    }

    fn lease_holder(&self) -> Result<Option<super::LeaseHolder>, StoreError> {
        PgKv::lease_holder(self)
    }

    fn shared_stream(&self) -> Option<Arc<dyn SharedStream>> {
        self.stream.clone().map(|s| s as Arc<dyn SharedStream>)
    }

    /// The table with its indexes.
    fn size_on_disk(&self) -> u64 {
        self.run(|pool| async move {
            let c = pool.get().await.map_err(backend)?;
            let row = c.query_one("SELECT pg_total_relation_size('lmx_kv')", &[]).await.map_err(backend)?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        })
        .unwrap_or(0)
    }
}

impl Drop for PgKv {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which a caller inside
        // another runtime may not do.
        if let Some(renewing) = self.renewing.take() {
            // A renewal after the release below would find the lease gone.
            renewing.abort();
        }
        if let Some(lease) = self.lease.take() {
            // Hand the database over now rather than when the term ends.
            let released = self.run(|pool| async move {
                let c = pool.get().await.map_err(backend)?;
                c.execute(pg_stream::LEAVE, &[&lease.holder]).await.map_err(backend)?;
                if lease.serving {
                    c.execute(pg_lease::RELEASE, &[&lease.holder, &lease.epoch]).await.map_err(backend)?;
                }
                Ok(())
            });
            if let Err(e) = released {
                tracing::warn!(error = %e, "could not release the PostgreSQL lease; it lapses at the end of its term");
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_write_to_a_key_wins() {
        let put = |k: &str, v: &str| KvWrite::Put(k.into(), v.into());
        let del = |k: &str| KvWrite::Delete(k.into());
        let Split { keys, values, deletes } =
            split(vec![put("a", "1"), del("a"), put("b", "1"), put("b", "2"), del("c")]);
        assert_eq!(keys, vec![b"b".to_vec()]);
        assert_eq!(values, vec![b"2".to_vec()]);
        assert_eq!(deletes, vec![b"a".to_vec(), b"c".to_vec()]);
    }
}
