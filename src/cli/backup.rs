//! `lmx db backup` (from a running server's admin API, with a progress
//! bar) and `lmx db restore` (into a stopped server's empty data
//! directory). The format and the consistent moment are `store::backup`'s.

use std::io::{BufReader, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::store::backup::{Reader, Record, SIGNING_KEY};
use crate::store::{Kv, KvWrite, SledKv};

/// Downloads a backup to `out` (written beside it, renamed when complete
/// and checked); the bytes written.
pub fn backup(url: &str, token: &str, out: &Path) -> anyhow::Result<u64> {
    use http_body_util::BodyExt;
    let base: http::Uri = url.parse()?;
    anyhow::ensure!(base.scheme_str() == Some("http"), "only http:// URLs (the admin listener)");
    let host = base.host().ok_or_else(|| anyhow::anyhow!("no host in {url}"))?.to_owned();
    let port = base.port_u16().unwrap_or(80);
    let partial = out.with_extension("partial");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let written = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let request = http::Request::get("/_lmx/admin/v1/backup")
            .header(http::header::HOST, format!("{host}:{port}"))
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let mut answer = sender.send_request(request).await?;
        let status = answer.status();
        if !status.is_success() {
            let body = answer.into_body().collect().await?.to_bytes();
            anyhow::bail!("the server answered {status}: {}", String::from_utf8_lossy(&body));
        }
        let estimate = answer
            .headers()
            .get("x-lmx-backup-estimate")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let bar = indicatif::ProgressBar::new(estimate);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bytes} of about {total_bytes} [{bar:30}] {bytes_per_sec}")?
                .progress_chars("=> "),
        );
        let mut file = std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let mut written = 0u64;
        while let Some(frame) = answer.body_mut().frame().await {
            let frame = frame.context("the backup stream broke off")?;
            if let Some(data) = frame.data_ref() {
                file.write_all(data)?;
                written += data.len() as u64;
                bar.set_position(written.min(estimate.max(written)));
            }
        }
        file.sync_all()?;
        bar.finish_and_clear();
        anyhow::Ok(written)
    });
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    // Read back whole: only a complete, intact backup takes the name.
    if let Err(e) = verify(&partial) {
        let _ = std::fs::remove_file(&partial);
        return Err(e.context("the downloaded backup is incomplete"));
    }
    std::fs::rename(&partial, out).with_context(|| format!("naming {}", out.display()))?;
    Ok(written)
}

/// Reads a backup through, checking every record and the checksum.
fn verify(path: &Path) -> anyhow::Result<()> {
    let mut r = Reader::new(BufReader::new(std::fs::File::open(path)?))?;
    while let Some(rec) = r.next_record()? {
        if let Record::File(_, len) = rec {
            r.file_bytes(len, std::io::sink())?;
        }
    }
    Ok(())
}

/// A file's place in the data directory: only under `media/`, never out.
fn media_target(data_dir: &Path, rel: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(rel);
    let inside = path.components().all(|c| matches!(c, Component::Normal(_)));
    anyhow::ensure!(inside && path.starts_with("media"), "the backup names an unexpected file {rel:?}");
    Ok(data_dir.join(path))
}

/// What a restore put back.
pub struct Restored {
    pub pairs: u64,
    pub files: u64,
}

/// Restores `from` into `config`'s data directory, whose store must be
/// absent or empty; the commit record is then written as for `db seal`.
pub fn restore(config: &Config, from: &Path) -> anyhow::Result<Restored> {
    anyhow::ensure!(
        config.storage.backend == crate::config::Backend::Sled,
        "lmx db restore writes a sled store: restore with storage.backend = \"sled\", then move it with \
         lmx db migrate --from sled --to postgres"
    );
    let data = &config.data_dir;
    let store_dir = data.join("db");
    let occupied = std::fs::read_dir(&store_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    anyhow::ensure!(!occupied, "{} is not empty: restore into an empty data directory", store_dir.display());
    let staging = data.join("db.restoring");
    let key_staging = data.join("signing.key.restoring");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(data)?;
    let result = restore_into(config, from, &staging, &key_staging);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_file(&key_staging);
        return result;
    }
    let _ = std::fs::remove_dir(&store_dir);
    std::fs::rename(&staging, &store_dir)?;
    if key_staging.exists() {
        std::fs::rename(&key_staging, config.signing_key_path())?;
    }
    super::db::seal(config)?;
    result
}

fn restore_into(config: &Config, from: &Path, staging: &Path, key_staging: &Path) -> anyhow::Result<Restored> {
    // Checked whole before anything is written.
    verify(from).with_context(|| format!("{} is refused", from.display()))?;
    let file = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut r = Reader::new(BufReader::new(file))?;
    match r.next_record()? {
        Some(Record::Meta(json)) => {
            let meta: serde_json::Value = serde_json::from_slice(&json).context("the backup's metadata")?;
            let name = meta["server_name"].as_str().unwrap_or_default();
            anyhow::ensure!(
                name == config.server_name,
                "the backup is of {name}, not {}: restore it under its own server name",
                config.server_name
            );
            let format = meta["format"].as_u64().unwrap_or(u64::MAX);
            anyhow::ensure!(
                format <= u64::from(crate::store::FORMAT_VERSION),
                "the backup has store format {format}; this lmx reads up to {}",
                crate::store::FORMAT_VERSION
            );
        }
        _ => anyhow::bail!("the backup does not start with its metadata"),
    }
    let kv = SledKv::open(staging, config.store_cache_bytes())?;
    let (mut pending, mut pairs, mut files) = (Vec::new(), 0u64, 0u64);
    while let Some(rec) = r.next_record()? {
        match rec {
            Record::Put(k, v) => {
                pending.push(KvWrite::Put(k, v));
                pairs += 1;
            }
            Record::Delete(k) => pending.push(KvWrite::Delete(k)),
            Record::File(name, len) => {
                let target =
                    if name == SIGNING_KEY { key_staging.to_owned() } else { media_target(&config.data_dir, &name)? };
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let mut out = std::fs::File::create(&target)?;
                r.file_bytes(len, &mut out)?;
                out.sync_all()?;
                files += 1;
            }
            Record::Meta(_) => anyhow::bail!("a second metadata record"),
        }
        if pending.len() >= 1000 {
            kv.apply(std::mem::take(&mut pending))?;
        }
    }
    kv.apply(pending)?;
    tokio::runtime::Builder::new_current_thread().build()?.block_on(kv.flush())?;
    Ok(Restored { pairs, files })
}
