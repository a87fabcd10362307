//! `GET /_lmx/admin/v1/backup`: the store as of one moment, then the
//! signing key and the media files, streamed in the backup format
//! (`store::backup`). `lmx db backup` saves it; `lmx db restore` puts it
//! back in a stopped server's data directory.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use serde_json::json;

use crate::client_api::ClientDeps;
use crate::http::Body;
use crate::store::backup::{Record, Writer, SIGNING_KEY};

/// Sends what it is given down a channel in chunks (a blocking writer
/// feeding an HTTP body).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 << 10;

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the backup's reader went away"))
    }
}

/// Files under `dir` (not `tmp/`), as paths relative to `base`.
fn files_under(dir: &Path, base: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() && e.file_name() != "tmp" => files_under(&path, base, out),
            Ok(t) if t.is_file() => {
                if let Ok(rel) = path.strip_prefix(base) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
            _ => {}
        }
    }
}

fn write_backup(server: &ClientDeps, out: ChannelWriter) -> std::io::Result<()> {
    let mut w = Writer::new(out)?;
    let meta = json!({
        "server_name": server.name.as_str(), "format": crate::store::FORMAT_VERSION,
        "lmx_version": env!("CARGO_PKG_VERSION"), "created_ts": crate::sys::now_ms(),
    });
    w.record(&Record::Meta(meta.to_string().into_bytes()))?;
    let pairs = server.store.backup(&mut |r| w.record(&r)).map_err(|e| std::io::Error::other(e.to_string()))?;
    let key = server.config.signing_key_path();
    let mut files = vec![(SIGNING_KEY.to_owned(), key)];
    let mut media = Vec::new();
    files_under(&server.config.data_dir.join("media"), &server.config.data_dir, &mut media);
    files.extend(media.into_iter().map(|rel| (rel.clone(), server.config.data_dir.join(rel))));
    for (name, path) in files {
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            // A media file deleted since the store's moment is left out;
            // a backup without the signing key is no backup.
            Err(_) if name != SIGNING_KEY => continue,
            Err(e) => return Err(std::io::Error::other(format!("the signing key {}: {e}", path.display()))),
        };
        let len = file.metadata()?.len();
        w.record(&Record::File(name, len))?;
        w.file_bytes(file, len)?;
    }
    let mut out = w.finish()?;
    out.flush()?;
    tracing::info!(pairs, "backup written");
    Ok(())
}

/// The backup as a streamed body, and a size estimate for progress.
pub fn stream(server: std::sync::Arc<ClientDeps>) -> (Body, u64) {
    use futures_util::StreamExt;
    let estimate = server.store.size_on_disk() + crate::admin::size_of_dir(&server.config.data_dir.join("media"));
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let failed = tx.clone();
        if let Err(e) = write_backup(&server, ChannelWriter { tx, buf: Vec::new() }) {
            tracing::warn!(error = %e, "backup failed");
            // The reader sees the body fail, and the file has no closing record.
            let _ = failed.blocking_send(Err(e));
        }
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
        .map(|item| item.map(hyper::body::Frame::data));
    (http_body_util::BodyExt::boxed_unsync(http_body_util::StreamBody::new(frames)), estimate)
}
