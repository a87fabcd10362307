//! `lmx db check` and `lmx db seal`: the store, offline.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{Backend, Config};
use crate::core::crypto::PublicKey;
use crate::core::ids::ServerName;
use crate::federation::keyring::{load_signing_key, parse_key_response};
use crate::store::check::{self, Report};
use crate::store::record::{self, CommitRecord};
use crate::store::{Access, KvStore, PgKv, SledKv, Store, FORMAT_VERSION};
use crate::sys::now_ms;

/// Fails when a running lmx holds the store (sled locks its `db` file).
pub(crate) fn ensure_not_in_use(store_dir: &Path) -> anyhow::Result<()> {
    let lock_file = store_dir.join("db");
    let Ok(f) = std::fs::File::open(&lock_file) else { return Ok(()) };
    match f.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("the store in {} is in use: stop lmx first", store_dir.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", lock_file.display())),
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Removes the scratch copy however the check ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The outcome of `lmx db check`: what to print, and whether all is well.
pub struct Checked {
    pub text: String,
    pub healthy: bool,
}

/// Reads a copy of the store (sled's recovery never touches the original)
/// and verifies it against its commit record and its own invariants.
pub fn check(config: &Config) -> anyhow::Result<Checked> {
    if config.storage.backend == Backend::Postgres {
        return check_postgres(config);
    }
    let store_dir = config.data_dir.join("db");
    if !store_dir.exists() {
        anyhow::bail!("there is no store in {}", store_dir.display());
    }
    ensure_not_in_use(&store_dir)?;
    let scratch = Scratch(std::env::temp_dir().join(format!("lmx-db-check-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&scratch.0);
    copy_dir(&store_dir, &scratch.0).with_context(|| format!("copying {}", store_dir.display()))?;
    let mut text = format!("store: {}\n", store_dir.display());
    let kv = match SledKv::open(&scratch.0, config.store_cache_bytes()) {
        Ok(kv) => kv,
        Err(e) if e.is_damage() => {
            text.push_str(&format!("sled cannot read the store: {e}\nthe store is DAMAGED\n"));
            return Ok(Checked { text, healthy: false });
        }
        Err(e) => return Err(e).with_context(|| format!("opening (a copy of) the store in {}", store_dir.display())),
    };
    let store = KvStore::new(kv);
    let format = store.format()?;
    let mut healthy = true;
    describe_format(format, &mut text, &mut healthy);
    let record_path = record::path_in(&config.data_dir);
    match CommitRecord::read(&record_path) {
        Ok(None) => text.push_str(&format!("commit record: none at {}\n", record_path.display())),
        Err(e) => {
            text.push_str(&format!("commit record: unreadable ({e})\n"));
            healthy = false;
        }
        Ok(Some(rec)) => {
            let missing = rec.missing(&store, format, &config.server_name)?;
            text.push_str(&format!(
                "commit record: {} rooms, stream position {}, written at {} ms since the epoch: {}\n",
                rec.rooms.len(),
                rec.stream_position,
                rec.written_ts,
                if missing.is_empty() { "the store holds all of it".to_owned() } else { "NOT SATISFIED".to_owned() }
            ));
            for m in &missing {
                text.push_str(&format!("  missing: {m}\n"));
            }
            healthy &= missing.is_empty();
        }
    }
    if format.is_some_and(|f| f < FORMAT_VERSION) {
        // What a start would serve: the copy is upgraded as a start would.
        store.upgrade()?;
        text.push_str(&format!("the copy checked was brought to format {FORMAT_VERSION}, as a start would\n"));
    }
    invariants(config, &store, text, healthy)
}

/// PostgreSQL keeps its own log, so there is no commit record to hold the
/// database to; the records are read where they are, written to by nobody.
fn check_postgres(config: &Config) -> anyhow::Result<Checked> {
    let url = config.storage.postgres.url.as_deref().context("storage.postgres.url is not set")?;
    let term = config.storage.postgres.lease_term();
    let kv = PgKv::open(url, config.storage.postgres.ca_file.as_deref(), 2, Access::Serving { term })
        .context("opening the PostgreSQL store (stop lmx first: a check reads a store nobody writes)")?;
    let store = KvStore::new(kv);
    let format = store.format()?;
    let (mut text, mut healthy) = ("store: PostgreSQL (storage.postgres.url)\n".to_owned(), true);
    describe_format(format, &mut text, &mut healthy);
    if format.is_some_and(|f| f < FORMAT_VERSION) {
        // Upgrading is a start's work; a check writes nothing.
        text.push_str("the store is in an older format: start lmx on it once, then check it\n");
        return Ok(Checked { text, healthy });
    }
    invariants(config, &store, text, healthy)
}

fn describe_format(format: Option<u32>, text: &mut String, healthy: &mut bool) {
    match format {
        None => text.push_str("format: none (the store is empty)\n"),
        Some(f) if f > FORMAT_VERSION => {
            text.push_str(&format!("format: {f}, newer than this lmx reads ({FORMAT_VERSION})\n"));
            *healthy = false;
        }
        Some(f) => text.push_str(&format!("format: {f}\n")),
    }
}

/// The store's own invariants: list positions, events, hashes, signatures
/// (by this server's key and the keys it holds), state and stream.
fn invariants(config: &Config, store: &dyn Store, mut text: String, mut healthy: bool) -> anyhow::Result<Checked> {
    let own = load_signing_key(&config.signing_key_path(), &config.server_name()).ok();
    let lookup = |server: &ServerName, key_id: &str| -> Option<PublicKey> {
        if let Some(k) = own.as_ref().filter(|k| k.server() == server && k.key_id().as_str() == key_id) {
            return Some(k.public_key());
        }
        let stored = store.server_keys(server).ok()??;
        let raw = serde_json::from_slice(&stored.response_json).ok()?;
        parse_key_response(server, raw, stored.fetched_ts)?.public_key(key_id)
    };
    let report: Report = check::check(store, &lookup)?;
    text.push_str(&report.summary());
    text.push('\n');
    for p in &report.problems {
        text.push_str(&format!("problem: {p}\n"));
    }
    healthy &= report.problems.is_empty();
    text.push_str(if healthy { "the store is healthy\n" } else { "the store is DAMAGED\n" });
    Ok(Checked { text, healthy })
}

/// Records the store as it is now as committed: after a restore of an
/// older copy, or to accept a loss and serve what is left.
pub fn seal(config: &Config) -> anyhow::Result<String> {
    anyhow::ensure!(
        config.storage.backend == Backend::Sled,
        "lmx db seal writes a sled store's commit record; a PostgreSQL store has none"
    );
    let store_dir = config.data_dir.join("db");
    ensure_not_in_use(&store_dir)?;
    let kv = SledKv::open(&store_dir, config.store_cache_bytes())
        .with_context(|| format!("opening the store in {}", store_dir.display()))?;
    let store = KvStore::new(kv);
    store.upgrade()?;
    let rec = CommitRecord::of_store(&store, &config.server_name, now_ms())?;
    let path = record::path_in(&config.data_dir);
    rec.write(&path).with_context(|| format!("writing {}", path.display()))?;
    Ok(format!(
        "recorded {} rooms and stream position {} as committed in {}",
        rec.rooms.len(),
        rec.stream_position,
        path.display()
    ))
}
