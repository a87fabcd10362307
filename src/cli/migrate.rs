//! `lmx db migrate --from sled --to postgres`: moves a stopped server's
//! store into an empty PostgreSQL database, pair by pair (the layout is the
//! same), then reads both back and compares them. The sled store is left as
//! it was; the signing key and media files stay where they are.

use anyhow::Context;

use crate::config::Config;
use crate::store::{for_each_page, Access, Kv, KvWrite, PgKv, ALL_KEYS_END};

const PAGE: usize = 1000;

pub struct Migrated {
    pub pairs: u64,
    pub bytes: u64,
}

pub fn sled_to_postgres(config: &Config) -> anyhow::Result<Migrated> {
    let dir = config.data_dir.join("db");
    anyhow::ensure!(dir.join("db").exists(), "there is no sled store in {}", dir.display());
    super::db::ensure_not_in_use(&dir)?;
    let url = config
        .storage
        .postgres
        .url
        .as_deref()
        .context("set storage.postgres.url (or url_file) to the database to move the store into")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Checked against its commit record and brought to the current format,
    // exactly as a start on it would.
    let from = runtime.block_on(crate::app::open_checked_store(config))?;
    let term = config.storage.postgres.lease_term();
    let ca_file = config.storage.postgres.ca_file.as_deref();
    let to = PgKv::open(url, ca_file, 4, Access::Serving { term }).context("opening the PostgreSQL store")?;
    anyhow::ensure!(
        to.range(&[], &ALL_KEYS_END, false, 1)?.is_empty(),
        "the database already holds an lmx store: migrate into an empty database"
    );

    let bar = indicatif::ProgressBar::new(from.kv().size_on_disk());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bytes} of about {total_bytes} [{bar:30}] {bytes_per_sec}")?
            .progress_chars("=> "),
    );
    bar.set_message("copying");
    let mut bytes = 0u64;
    let pairs = for_each_page(from.kv(), PAGE, |page| {
        let size: u64 = page.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        to.apply(page.iter().map(|(k, v)| KvWrite::Put(k.clone(), v.clone())).collect())?;
        bytes += size;
        bar.inc(size);
        Ok(())
    })?;
    runtime.block_on(to.flush())?;

    bar.set_position(0);
    bar.set_length(bytes);
    bar.set_message("verifying");
    let mut differences = 0u64;
    let read_back = for_each_page(&to, PAGE, |page| {
        for (k, v) in page {
            if from.kv().get(k)?.as_deref() != Some(v.as_slice()) {
                differences += 1;
            }
        }
        bar.inc(page.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum());
        Ok(())
    })?;
    bar.finish_and_clear();
    anyhow::ensure!(
        differences == 0 && read_back == pairs,
        "the database does not match the sled store after the copy ({pairs} pairs copied, {read_back} read \
         back, {differences} different): do not start on it"
    );
    Ok(Migrated { pairs, bytes })
}
