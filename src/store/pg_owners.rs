//! Which writing process owns what in a PostgreSQL store (`Claimed`: each
//! room's writes, each destination's delivery): one row per thing with its
//! holder and an epoch. A process claims a room before it starts the room's
//! writer, and a destination before it delivers there; the claim succeeds
//! when the thing is free, is its own already, or its holder's writer row
//! (`pg_stream.rs`) has lapsed or gone, and every change of holder moves the
//! epoch on. Every batch written under a claim carries it and checks it,
//! with a share lock, in its own transaction: a claim waits for batches
//! already checked to commit, and a process paused past its term and
//! resumed finds the epoch moved on and cannot write. A process keeps what
//! it claimed while it lives (claiming again keeps the epoch, so a room that
//! rested and woke needs no new fence); when it leaves or lapses, all of it
//! is free to take.

/// Schema step 5.
pub(super) const MIGRATION: &str =
    "CREATE TABLE lmx_owner (what text PRIMARY KEY, holder text NOT NULL, epoch bigint NOT NULL)";

/// Takes `$1` for `$2` or keeps it; no row back: another live writer holds
/// it. The conflicting row is locked before the condition is read, so
/// of two processes claiming at once the second sees the first's claim.
/// The writer rows are read as the statement started: a holder that joined
/// just before may be taken for gone and lose the claim, which its next
/// batch then finds (a refusal, never two writers).
pub(super) const CLAIM: &str = "INSERT INTO lmx_owner AS o (what, holder, epoch) VALUES ($1, $2, 1) \
     ON CONFLICT (what) DO UPDATE SET holder = excluded.holder, \
       epoch = CASE WHEN o.holder = excluded.holder THEN o.epoch ELSE o.epoch + 1 END \
     WHERE o.holder = excluded.holder OR NOT EXISTS \
       (SELECT 1 FROM lmx_writer w WHERE w.holder = o.holder AND w.expires_at > now()) \
     RETURNING epoch";

/// Who holds it and where that process serves, for the refusal (so the
/// request can be passed on to it).
pub(super) const OWNER: &str =
    "SELECT o.holder, o.epoch, coalesce(w.client_addr, ''), coalesce(w.federation_addr, '') \
     FROM lmx_owner o LEFT JOIN lmx_writer w ON w.holder = o.holder WHERE o.what = $1";

/// The owner in a row `OWNER` read (`None`: no row, the thing is free).
pub(super) fn owner_in(key: &str, row: Option<&tokio_postgres::Row>) -> super::Owner {
    let Some(row) = row else { return super::Owner::unknown(format!("{key} is owned by another process")) };
    let announced = |i: usize| Some(row.get::<_, String>(i)).filter(|a| !a.is_empty());
    super::Owner {
        describe: format!("{key} is owned by {} (epoch {})", row.get::<_, String>(0), row.get::<_, i64>(1)),
        client_addr: announced(2),
        federation_addr: announced(3),
    }
}

/// Where a writing process serves, once its listeners are up.
pub(super) const ANNOUNCE: &str = "UPDATE lmx_writer SET client_addr = $2, federation_addr = $3 WHERE holder = $1";

/// A share lock: a claim by another process waits until the batch commits.
pub(super) const FENCE: &str = "SELECT 1 FROM lmx_owner WHERE what = $1 AND holder = $2 AND epoch = $3 FOR SHARE";
