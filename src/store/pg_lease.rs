//! Who serves a PostgreSQL store: one lease row with an epoch. A process
//! takes the lease when it is free or has expired (by the database's clock,
//! so hosts' clocks do not matter), renews it a few times per term, and
//! every batch it writes first checks, in its own transaction, that the
//! lease still carries its holder and epoch (taking a share lock on the
//! row, so a takeover waits for batches already checked to commit). A
//! process paused past its term and then resumed finds the epoch moved on:
//! its writes fail, and it stops.

use std::time::{Duration, Instant};

use super::StoreError;

/// What a writing process holds: its row in `lmx_writer` (`pg_stream.rs`)
/// and, for the serving process, the lease.
#[derive(Debug, Clone)]
pub struct Lease {
    pub holder: String,
    pub epoch: i64,
    pub term: Duration,
    /// False for a writer beside the serving process (`Access::Member`).
    pub serving: bool,
}

pub(super) const TAKE: &str = "UPDATE lmx_lease SET holder = $1, epoch = epoch + 1, \
     expires_at = now() + make_interval(secs => $2::float8), client_addr = '', federation_addr = '' \
     WHERE id = 1 AND (holder = '' OR expires_at < now()) RETURNING epoch";
/// Renews the writer's row with the lease, to the same instant: a process
/// that took the lease over finds the row lapsed too.
const RENEW: &str = "WITH w AS (UPDATE lmx_writer SET expires_at = now() + make_interval(secs => $3::float8) \
     WHERE holder = $1 RETURNING 1) \
     UPDATE lmx_lease SET expires_at = now() + make_interval(secs => $3::float8) \
     WHERE id = 1 AND holder = $1 AND epoch = $2 AND EXISTS (SELECT 1 FROM w)";
pub(super) const RELEASE: &str =
    "UPDATE lmx_lease SET holder = '', expires_at = '-infinity' WHERE id = 1 AND holder = $1 AND epoch = $2";
/// A share lock on the lease (a takeover waits for batches already
/// checked) and a key-share lock on the writer row (see `pg_stream::FENCE`).
const FENCE: &str = "SELECT 1 FROM lmx_lease l JOIN lmx_writer w ON w.holder = l.holder \
     WHERE l.id = 1 AND l.holder = $1 AND l.epoch = $2 FOR SHARE OF l FOR KEY SHARE OF w";
/// A released lease expires at `-infinity`, which cannot be subtracted from.
pub(super) const CURRENT: &str = "SELECT holder, epoch, \
     CASE WHEN isfinite(expires_at) THEN greatest(extract(epoch from expires_at - now()), 0) ELSE 0 END::float8, \
     client_addr, federation_addr FROM lmx_lease WHERE id = 1";
/// Where the holder serves, once its listeners are up: standbys forward
/// requests there.
pub(super) const ANNOUNCE: &str =
    "UPDATE lmx_lease SET client_addr = $3, federation_addr = $4 WHERE id = 1 AND holder = $1 AND epoch = $2";

type Params<'a> = Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>;

/// What differs between the serving process and a member: the statements
/// that fence and renew each, and what it means when they find nothing.
impl Lease {
    /// The check sent with every batch, and its parameters.
    pub(super) fn fence(&self) -> (&'static str, Params<'_>) {
        if self.serving {
            (FENCE, vec![&self.holder, &self.epoch])
        } else {
            (super::pg_stream::FENCE, vec![&self.holder])
        }
    }

    /// The renewal for another `term` (seconds), and its parameters.
    pub(super) fn renewal<'a>(&'a self, term: &'a f64) -> (&'static str, Params<'a>) {
        if self.serving {
            (RENEW, vec![&self.holder, &self.epoch, term])
        } else {
            (super::pg_stream::RENEW, vec![&self.holder, term])
        }
    }

    /// Why a fence or renewal that found nothing means this process lost
    /// the right to write.
    pub(super) fn gone(&self) -> &'static str {
        if self.serving {
            "another process took the lease"
        } else {
            "its writer row lapsed and was removed"
        }
    }
}

/// A name for this process in the lease row (for operators reading it).
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut nonce = [0u8; 4];
    let _ = getrandom::getrandom(&mut nonce);
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}/{}/{nonce}", host.trim(), std::process::id())
}

/// When to renew, and when a holder that could not renew must assume the
/// lease gone: pure, so tests can drive it.
#[derive(Debug)]
pub struct Renewals {
    term: Duration,
    last_renewed: Instant,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    /// Still ours (as far as anyone can tell).
    Held,
    /// Not renewed for a whole term: another process may hold it now.
    Expired,
}

impl Renewals {
    pub fn new(term: Duration, taken: Instant) -> Self {
        Renewals { term, last_renewed: taken }
    }

    /// A renewal three times a term, so two may fail before it lapses.
    pub fn every(&self) -> Duration {
        self.term / 3
    }

    /// `renewed_at` is when a renewal's request was sent: the database set
    /// the new expiry no earlier than that.
    pub fn renewed(&mut self, renewed_at: Instant) {
        self.last_renewed = self.last_renewed.max(renewed_at);
    }

    pub fn standing(&self, now: Instant) -> Standing {
        if now.duration_since(self.last_renewed) >= self.term {
            Standing::Expired
        } else {
            Standing::Held
        }
    }
}

/// The process serving a database, as another process finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub describe: String,
    /// Its client and federation listeners (`host:port`), once announced.
    pub client_addr: Option<String>,
    pub federation_addr: Option<String>,
    /// When the lease lapses unless renewed, as the database saw it.
    pub lapses_in: Duration,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

/// The refusal for a process that finds the lease held.
pub fn held_by(row: &tokio_postgres::Row) -> StoreError {
    StoreError::Leased(holder_in(row))
}

/// The holder in a row `CURRENT` read; `None` when the lease is free to take.
pub fn current(row: &tokio_postgres::Row) -> Option<LeaseHolder> {
    let (holder, seconds_left): (String, f64) = (row.get(0), row.get(2));
    (!holder.is_empty() && seconds_left > 0.0).then(|| holder_in(row))
}

fn holder_in(row: &tokio_postgres::Row) -> LeaseHolder {
    let (holder, epoch, seconds_left): (String, i64, f64) = (row.get(0), row.get(1), row.get(2));
    let announced = |i: usize| Some(row.get::<_, String>(i)).filter(|a| !a.is_empty());
    LeaseHolder {
        describe: format!("{holder} (epoch {epoch}) for another {seconds_left:.1} s at most"),
        client_addr: announced(3),
        federation_addr: announced(4),
        lapses_in: Duration::from_secs_f64(seconds_left.max(0.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_lapses_a_term_after_its_last_renewal_was_sent() {
        let t0 = Instant::now();
        let term = Duration::from_secs(9);
        let mut r = Renewals::new(term, t0);
        assert_eq!(r.every(), Duration::from_secs(3));
        assert_eq!(r.standing(t0 + Duration::from_secs(8)), Standing::Held);
        r.renewed(t0 + Duration::from_secs(3));
        assert_eq!(r.standing(t0 + Duration::from_secs(11)), Standing::Held);
        assert_eq!(r.standing(t0 + Duration::from_secs(12)), Standing::Expired, "failed renewals do not count");
        r.renewed(t0 + Duration::from_secs(1));
        assert_eq!(r.standing(t0 + Duration::from_secs(12)), Standing::Expired, "an older renewal moves nothing");
    }
}
