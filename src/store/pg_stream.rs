//! Stream positions in a PostgreSQL store that several processes write to
//! (`positions.rs` has the rule). Positions come from the high-water record
//! itself, so backups and migrations carry it as before. Each writing
//! process has a row in `lmx_writer` with the lowest position it has in
//! flight; readers wait for the lowest of them. A writer is fenced by its
//! row: every batch takes a key-share lock on it, and once its term has
//! lapsed the next writer to join or renew deletes it (skipping it while a
//! batch still holds it; a transaction left open ends after a term), so a
//! paused writer can neither append nor hold readers back for ever.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::keys;
use super::positions::{Handout, Others, OthersWatcher, SharedStream};
use super::{StoreError, StoreResult};

/// Schema step 4.
pub(super) const MIGRATION: &str = "\
CREATE TABLE lmx_writer (holder text PRIMARY KEY, expires_at timestamptz NOT NULL, \
  lowest_in_flight bigint, generation bigint NOT NULL DEFAULT 0); \
CREATE FUNCTION lmx_position(v bytea) RETURNS bigint IMMUTABLE LANGUAGE sql \
  AS $$ SELECT ('x' || encode(v, 'hex'))::bit(64)::bigint $$; \
CREATE FUNCTION lmx_allocate(me text, n bigint, high_water bytea, \
  OUT o_first bigint, OUT o_last bigint, OUT o_generation bigint, OUT o_others bigint, OUT o_writers bigint) \
LANGUAGE plpgsql AS $$ \
BEGIN \
  INSERT INTO lmx_kv AS kv (k, v) VALUES (high_water, int8send(n)) \
    ON CONFLICT (k) DO UPDATE SET v = int8send(lmx_position(kv.v) + n) \
    RETURNING lmx_position(kv.v) INTO o_last; \
  o_first := o_last - n + 1; \
  UPDATE lmx_writer w SET lowest_in_flight = coalesce(w.lowest_in_flight, o_first), \
    generation = w.generation + 1 WHERE w.holder = me RETURNING w.generation INTO o_generation; \
  IF NOT FOUND THEN RAISE EXCEPTION 'lmx: % no longer writes to this store', me; END IF; \
  SELECT min(w.lowest_in_flight), count(*) INTO o_others, o_writers FROM lmx_writer w WHERE w.holder <> me; \
END $$; \
CREATE FUNCTION lmx_settle(me text, gen bigint, lowest bigint) RETURNS void LANGUAGE plpgsql AS $$ \
BEGIN \
  UPDATE lmx_writer SET lowest_in_flight = lowest \
    WHERE holder = me AND generation = gen AND lowest_in_flight IS DISTINCT FROM lowest; \
  IF FOUND AND EXISTS (SELECT 1 FROM lmx_writer WHERE holder <> me) THEN \
    PERFORM pg_notify('lmx_stream', me); \
  END IF; \
END $$";

// Each statement of a plpgsql function sees what committed before it: the
// others' rows are read after this allocation took the high-water row's
// lock, so every allocation before it is seen with its writer's row.
const ALLOCATE: &str = "SELECT o_first, o_last, o_generation, o_others, o_writers FROM lmx_allocate($1, $2, $3)";
const SETTLE: &str = "SELECT lmx_settle($1, $2, $3)";
/// One statement, so the high water and the rows are read at one moment.
const OTHERS: &str = "SELECT coalesce((SELECT lmx_position(v) FROM lmx_kv WHERE k = $2), 0), \
     (SELECT min(lowest_in_flight) FROM lmx_writer WHERE holder <> $1), \
     (SELECT count(*) FROM lmx_writer WHERE holder <> $1)";
pub(super) const JOIN: &str =
    "INSERT INTO lmx_writer (holder, expires_at) VALUES ($1, now() + make_interval(secs => $2::float8))";
/// Wakes the others, which give up positions reserved while alone.
pub(super) const ANNOUNCE_JOINED: &str = "SELECT pg_notify('lmx_stream', $1)";
pub(super) const LEAVE: &str = "DELETE FROM lmx_writer WHERE holder = $1";
/// Run at joining and after every renewal: a writer that stopped renewing
/// stops holding readers back once its row has lapsed. A row a batch still
/// has locked (its writer paused inside the transaction) is skipped, never
/// waited for: the transaction ends by itself (the sessions'
/// `idle_in_transaction_session_timeout` is the term) and the row goes at a
/// later renewal.
pub(super) const FORGET_LAPSED: &str = "DELETE FROM lmx_writer WHERE holder IN \
     (SELECT holder FROM lmx_writer WHERE expires_at < now() FOR UPDATE SKIP LOCKED)";
pub(super) const RENEW: &str =
    "UPDATE lmx_writer SET expires_at = now() + make_interval(secs => $2::float8) WHERE holder = $1";
/// A key-share lock: it keeps the row from being deleted until the batch
/// commits, without waiting on (or holding up) this writer's own updates of
/// the row in `lmx_allocate` and `lmx_settle`.
pub(super) const FENCE: &str = "SELECT 1 FROM lmx_writer WHERE holder = $1 FOR KEY SHARE";

/// How far the others have settled: up to the high water, and below the
/// lowest position any of them still has in flight.
pub fn others_settled(high_water: i64, others_lowest: Option<i64>) -> u64 {
    let high_water = high_water.max(0) as u64;
    match others_lowest {
        Some(lowest) => high_water.min((lowest.max(1) - 1) as u64),
        None => high_water,
    }
}

/// The others from the high water, their lowest position in flight and
/// how many they are.
fn others(high_water: i64, lowest: Option<i64>, writers: i64) -> Others {
    Others { settled: others_settled(high_water, lowest), writing: writers > 0 }
}

type Watchers = Arc<Mutex<Option<Weak<dyn OthersWatcher>>>>;

pub(super) struct PgStream {
    handle: tokio::runtime::Handle,
    pool: Pool,
    holder: String,
    settling: watch::Sender<Option<(u64, Option<u64>)>>,
    watchers: Watchers,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres: {e}"))
}

fn position(n: i64) -> u64 {
    n.max(0) as u64
}

impl PgStream {
    /// Starts the tasks that record settlements and hear other writers'.
    pub(super) fn start(
        handle: tokio::runtime::Handle,
        pool: Pool,
        holder: String,
        config: tokio_postgres::Config,
        tls: MakeRustlsConnect,
    ) -> Arc<Self> {
        let (settling, pending) = watch::channel(None);
        let watchers: Watchers = Arc::default();
        handle.spawn(keep_settling(pool.clone(), holder.clone(), pending));
        handle.spawn(keep_listening(config, tls, holder.clone(), watchers.clone()));
        Arc::new(PgStream { handle, pool, holder, settling, watchers })
    }
}

impl SharedStream for PgStream {
    fn allocate(&self, n: u64) -> StoreResult<Handout> {
        let (pool, holder) = (self.pool.clone(), self.holder.clone());
        let n = i64::try_from(n).map_err(backend)?;
        super::pg_kv::on(&self.handle, async move {
            let c = pool.get().await.map_err(backend)?;
            let st = c.prepare_cached(ALLOCATE).await.map_err(backend)?;
            let row = c.query_one(&st, &[&holder, &n, &keys::position_high_water()]).await.map_err(backend)?;
            let last: i64 = row.get(1);
            Ok(Handout {
                first: position(row.get(0)),
                last: position(last),
                generation: position(row.get(2)),
                // These positions are the highest handed out so far.
                others: others(last, row.get(3), row.get(4)),
            })
        })
    }

    fn settle(&self, generation: u64, lowest_in_flight: Option<u64>) {
        self.settling.send_replace(Some((generation, lowest_in_flight)));
    }

    fn others(&self) -> StoreResult<Others> {
        let (pool, holder) = (self.pool.clone(), self.holder.clone());
        super::pg_kv::on(&self.handle, async move {
            let c = pool.get().await.map_err(backend)?;
            let row = c.query_one(OTHERS, &[&holder, &keys::position_high_water()]).await.map_err(backend)?;
            Ok(others(row.get(0), row.get(1), row.get(2)))
        })
    }

    fn watch_others(&self, watcher: Weak<dyn OthersWatcher>) -> StoreResult<()> {
        let mut current = self.watchers.lock().expect("poisoned");
        // Two would share one writer row, and one's record of its lowest
        // position could hide the other's.
        if current.as_ref().is_some_and(|w| w.strong_count() > 0) {
            return Err(StoreError::Backend("postgres: this store's stream already has its positions".into()));
        }
        *current = Some(watcher);
        Ok(())
    }
}

/// Records the latest settlement; one that fails is tried again until it
/// lands or a newer one replaces it (until then readers elsewhere wait).
async fn keep_settling(pool: Pool, holder: String, mut pending: watch::Receiver<Option<(u64, Option<u64>)>>) {
    while pending.changed().await.is_ok() {
        loop {
            let Some((generation, lowest)) = *pending.borrow_and_update() else { break };
            let (generation, lowest) = (generation as i64, lowest.map(|l| l as i64));
            let settled = async {
                let c = pool.get().await.map_err(backend)?;
                let st = c.prepare_cached(SETTLE).await.map_err(backend)?;
                c.execute(&st, &[&holder, &generation, &lowest]).await.map_err(backend)
            };
            match settled.await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not record this process's stream positions; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Tells the watchers how far the other writers have settled: when one of
/// them says it settled further, and every second in case a notification
/// was lost with a connection.
async fn keep_listening(config: tokio_postgres::Config, tls: MakeRustlsConnect, holder: String, watchers: Watchers) {
    loop {
        if let Err(e) = listen(&config, tls.clone(), &holder, &watchers).await {
            tracing::warn!(error = %e, "stopped hearing other processes' stream positions; reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen(
    config: &tokio_postgres::Config,
    tls: MakeRustlsConnect,
    holder: &str,
    watchers: &Watchers,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls).await?;
    let (heard, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driving = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if heard.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "stream notifications' connection ended");
                    return;
                }
            }
        }
    });
    let result = async {
        client.batch_execute("LISTEN lmx_stream").await?;
        let statement = client.prepare(OTHERS).await?;
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                heard = notifications.recv() => match heard {
                    None => return Ok(()),
                    Some(from) if from == holder => continue,
                    Some(_) => while notifications.try_recv().is_ok() {},
                },
                _ = every_second.tick() => {}
            }
            let row = client.query_one(&statement, &[&holder, &keys::position_high_water()]).await?;
            let now = others(row.get(0), row.get(1), row.get(2));
            let watcher = watchers.lock().expect("poisoned").as_ref().and_then(Weak::upgrade);
            if let Some(watcher) = watcher {
                watcher.others_moved(now);
            }
        }
    }
    .await;
    driving.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn others_settle_below_their_lowest_position_in_flight() {
        assert_eq!(others_settled(10, None), 10);
        assert_eq!(others_settled(10, Some(4)), 3);
        assert_eq!(others_settled(10, Some(12)), 10, "no further than positions handed out");
        assert_eq!(others_settled(0, None), 0);
    }
}
