//! The media repository: files local users upload (at once, or to an id
//! reserved first), files fetched from other servers, and thumbnails. The
//! bytes live in content-addressed files (`files`), the metadata in the
//! store; a record is written only once its file is whole and synced, and
//! acknowledged only once the record is flushed.

pub mod content;
mod files;
pub mod multipart;
pub mod preview;
pub mod thumbnail;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};

use crate::core::ids::{ServerName, UserId};
use crate::store::records::{MediaRecord, ThumbnailRecord};
use crate::store::{Batch, Op, Store};
use crate::wire::Failure;

use content::Method;
pub use files::Files;

type FetchLock = Arc<tokio::sync::Mutex<()>>;

/// What the operator allows (`[media]`).
#[derive(Debug, Clone)]
pub struct MediaLimits {
    pub max_upload: u64,
    /// 0: none.
    pub user_quota: u64,
    pub max_pending: u64,
    pub pending_expiry_ms: i64,
    /// 0: none.
    pub remote_cache: u64,
}

impl MediaLimits {
    pub fn of(config: &crate::config::Config) -> Self {
        let m = &config.media;
        MediaLimits {
            max_upload: m.max_upload_bytes,
            user_quota: m.user_quota_bytes,
            max_pending: m.max_pending_per_user,
            pending_expiry_ms: i64::try_from(m.pending_expiry_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            remote_cache: config.remote_media_cache_bytes(),
        }
    }
}

/// Thumbnails made at once: decoding is CPU and memory heavy.
const THUMBNAILERS: usize = 2;
const STRIPES: usize = 32;

pub struct Media {
    server: ServerName,
    store: Arc<dyn Store>,
    files: Files,
    pub limits: MediaLimits,
    /// A user's usage is read and their record written under their stripe.
    stripes: Vec<Mutex<()>>,
    /// Woken when a reserved id gets its file.
    uploaded: Notify,
    thumbnailers: Semaphore,
    /// One fetch per remote file at a time; others wait for its result.
    fetching: Mutex<HashMap<(String, String), FetchLock>>,
    /// Bytes of remote media kept, once counted.
    remote_bytes: Mutex<Option<u64>>,
    /// URL previews made lately: `url → (made at, answer)`.
    previews: Mutex<HashMap<String, (i64, serde_json::Value)>>,
}

/// How long a URL preview is reused.
const PREVIEW_KEPT_MS: i64 = 3_600_000;
const PREVIEWS_KEPT: usize = 1_000;

/// A file a download serves: the record and the open file.
pub struct Served {
    pub content_type: String,
    pub filename: Option<String>,
    pub size: u64,
    pub file: tokio::fs::File,
}

impl Media {
    pub fn new(server: ServerName, store: Arc<dyn Store>, dir: PathBuf, limits: MediaLimits) -> Self {
        Media {
            server,
            store,
            files: Files::new(dir),
            limits,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            uploaded: Notify::new(),
            thumbnailers: Semaphore::new(THUMBNAILERS),
            fetching: Mutex::default(),
            remote_bytes: Mutex::default(),
            previews: Mutex::default(),
        }
    }

    /// Drops what a crash left half written.
    pub fn clean_tmp(&self) -> std::io::Result<()> {
        self.files.clean_tmp()
    }

    pub fn is_local(&self, server: &ServerName) -> bool {
        *server == self.server
    }

    fn stripe(&self, user: &UserId) -> std::sync::MutexGuard<'_, ()> {
        let i = crate::core::crypto::sha256(user.as_str().as_bytes())[0] as usize % STRIPES;
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a media id for `user` to upload to later (`create`).
    pub async fn reserve(&self, user: &UserId, now: i64) -> Result<(String, i64), Failure> {
        let id = crate::sys::random_string(24);
        let expires = now.saturating_add(self.limits.pending_expiry_ms);
        {
            let _g = self.stripe(user);
            let mut b = Batch::new();
            let usage = self.usage(user, now, &mut b)?;
            if usage.pending >= self.limits.max_pending {
                if !b.is_empty() {
                    self.store.write(b)?;
                }
                return Err(Failure::limit_exceeded("Too many media ids are waiting for their upload", 60_000));
            }
            let record = MediaRecord {
                uploader: user.to_string(),
                created_ts: now,
                pending: true,
                expires_ts: expires,
                ..Default::default()
            };
            b.push(Op::PutMedia { server: self.server.clone(), id: id.clone(), record });
            self.store.write(b)?;
        }
        self.store.flush().await?;
        Ok((id, expires))
    }

    /// What `user` has stored and reserved; reservations that lapsed are
    /// staged for deletion in `b`.
    fn usage(&self, user: &UserId, now: i64, b: &mut Batch) -> Result<Usage, Failure> {
        let mut usage = Usage::default();
        for (id, size, pending) in self.store.user_media(user)? {
            if !pending {
                usage.bytes += size;
                continue;
            }
            match self.store.media(&self.server, &id)? {
                Some(r) if r.pending && r.expires_ts <= now => {
                    b.push(Op::DeleteMedia { server: self.server.clone(), id });
                }
                _ => usage.pending += 1,
            }
        }
        Ok(usage)
    }

    /// Takes an upload's body onto disk, bounded by the size limit, and
    /// records it: under a new id, or under `reserved` (which must be
    /// `user`'s and still empty). Answers the media id.
    pub async fn upload<B>(&self, user: &UserId, upload: Upload<'_>, body: B, idle: Duration) -> Result<String, Failure>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let now = upload.now;
        if let Some(id) = upload.reserved {
            self.check_reserved(user, id, now)?;
        }
        let written = self.take_body(body, idle).await?;
        let id = upload.reserved.map_or_else(|| crate::sys::random_string(24), str::to_owned);
        let sha = written.sha256.clone();
        let size = written.size;
        self.files.commit(written).await.map_err(|e| Failure::failed(format!("media file: {e}")))?;
        let outcome = {
            let _g = self.stripe(user);
            self.record_upload(user, &id, &upload, &sha, size)
        };
        if let Err(e) = outcome {
            // The file may be another record's too; only an unused one goes.
            if !self.store.media_file_used(&sha).unwrap_or(true) {
                let _ = self.files.remove(&sha).await;
            }
            return Err(e);
        }
        self.store.flush().await?;
        self.uploaded.notify_waiters();
        Ok(id)
    }

    fn check_reserved(&self, user: &UserId, id: &str, now: i64) -> Result<(), Failure> {
        match self.store.media(&self.server, id)? {
            None => Err(Failure::not_found("Unknown media id")),
            Some(r) if r.uploader != user.as_str() => {
                Err(Failure::forbidden("This media id was reserved by another user"))
            }
            Some(r) if !r.pending => Err(Failure::CannotOverwriteMedia),
            Some(r) if r.expires_ts <= now => Err(Failure::not_found("The media id's reservation lapsed")),
            Some(_) => Ok(()),
        }
    }

    /// Under the user's stripe: checks again (another upload may have
    /// taken the reserved id or the quota meanwhile) and writes the record.
    fn record_upload(&self, user: &UserId, id: &str, upload: &Upload<'_>, sha: &str, size: u64) -> Result<(), Failure> {
        if let Some(id) = upload.reserved {
            self.check_reserved(user, id, upload.now)?;
        }
        let mut b = Batch::new();
        let usage = self.usage(user, upload.now, &mut b)?;
        let quota = self.limits.user_quota;
        if quota > 0 && usage.bytes.saturating_add(size) > quota {
            return Err(Failure::too_large(format!("Over this user's media quota of {quota} bytes")));
        }
        // A reserved id an admin quarantined stays quarantined.
        let quarantined_by = match upload.reserved {
            Some(id) => self.store.media(&self.server, id)?.map(|r| r.quarantined_by).unwrap_or_default(),
            None => String::new(),
        };
        let record = MediaRecord {
            content_type: upload.content_type.to_owned(),
            filename: upload.filename.unwrap_or_default().to_owned(),
            size,
            sha256: sha.to_owned(),
            uploader: user.to_string(),
            created_ts: upload.now,
            quarantined_by,
            ..Default::default()
        };
        b.push(Op::PutMedia { server: self.server.clone(), id: id.to_owned(), record });
        self.store.write(b)?;
        Ok(())
    }

    async fn take_body<B>(&self, mut body: B, idle: Duration) -> Result<files::Written, Failure>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        use http_body_util::BodyExt;
        let max = self.limits.max_upload;
        let too_large = || Failure::too_large(format!("Uploads are at most {max} bytes"));
        if body.size_hint().lower() > max {
            return Err(too_large());
        }
        let mut incoming = self.files.begin().await.map_err(|e| Failure::failed(format!("media file: {e}")))?;
        let outcome = async {
            loop {
                let frame = match tokio::time::timeout(idle, body.frame()).await {
                    Err(_) => return Err(Failure::Body(crate::http::BodyError::Slow)),
                    Ok(None) => return Ok(()),
                    Ok(Some(f)) => f.map_err(|e| Failure::Body(crate::http::BodyError::Unreadable(e.to_string())))?,
                };
                let Ok(data) = frame.into_data() else { continue };
                if incoming.size() + data.len() as u64 > max {
                    return Err(too_large());
                }
                incoming.write(&data).await.map_err(|e| Failure::failed(format!("media file: {e}")))?;
            }
        }
        .await;
        match outcome {
            Ok(()) => incoming.finish().await.map_err(|e| Failure::failed(format!("media file: {e}"))),
            Err(e) => {
                incoming.abandon().await;
                Err(e)
            }
        }
    }

    /// A file's record once it has bytes: waits (until `deadline`) for a
    /// reserved id's upload. `None`: no such media here.
    pub async fn ready(
        &self,
        server: &ServerName,
        id: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<MediaRecord>, Failure> {
        loop {
            let woken = self.uploaded.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let Some(record) = self.store.media(server, id)? else { return Ok(None) };
            // Quarantined media is answered as if it did not exist.
            if !record.quarantined_by.is_empty() {
                return Ok(None);
            }
            if !record.pending {
                return Ok(Some(record));
            }
            if record.expires_ts <= crate::sys::now_ms() {
                return Ok(None);
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Err(Failure::NotYetUploaded);
            }
        }
    }

    /// Opens a file to serve; one that is missing or damaged is refused.
    pub async fn open(&self, record: &MediaRecord) -> Result<Served, Failure> {
        let file = self.files.open(&record.sha256, record.size).await.map_err(|e| damaged(&record.sha256, &e))?;
        Ok(Served {
            content_type: record.content_type.clone(),
            filename: Some(record.filename.clone()).filter(|f| !f.is_empty()),
            size: record.size,
            file,
        })
    }

    /// A thumbnail of a file at hand, made now if none is kept.
    pub async fn thumbnail(
        &self,
        server: &ServerName,
        id: &str,
        record: &MediaRecord,
        size: (u32, u32, Method),
    ) -> Result<(ThumbnailRecord, Vec<u8>), Failure> {
        let spec = content::thumbnail_spec(size);
        if let Some(t) = self.store.thumbnail(server, id, &spec)? {
            if let Ok(bytes) = self.files.read(&t.sha256, t.size).await {
                return Ok((t, bytes));
            }
        }
        let _permit = self.thumbnailers.acquire().await.map_err(|_| Failure::stopped("thumbnailer"))?;
        let source = self.files.read(&record.sha256, record.size).await.map_err(|e| damaged(&record.sha256, &e))?;
        let made = tokio::task::spawn_blocking(move || thumbnail::make(&source, size))
            .await
            .map_err(|_| Failure::stopped("thumbnailer"))?
            .map_err(|e| match e {
                thumbnail::ThumbnailError::NotAnImage(why) => {
                    Failure::BadRequest(format!("Cannot generate thumbnails for this content: {why}"))
                }
                thumbnail::ThumbnailError::TooLarge(why) => {
                    Failure::too_large(format!("Content is too large to thumbnail: {why}"))
                }
            })?;
        let record = self.keep_thumbnail(server, id, &spec, made.content_type, &made.bytes).await?;
        Ok((record, made.bytes))
    }

    /// Keeps a thumbnail (made here or fetched with its media's server).
    pub async fn keep_thumbnail(
        &self,
        server: &ServerName,
        id: &str,
        spec: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<ThumbnailRecord, Failure> {
        let (sha256, size) = self.files.put(bytes).await.map_err(|e| Failure::failed(format!("media file: {e}")))?;
        let record = ThumbnailRecord { content_type: content_type.to_owned(), size, sha256 };
        let mut b = Batch::new();
        b.push(Op::PutThumbnail {
            server: server.clone(),
            id: id.to_owned(),
            spec: spec.to_owned(),
            record: record.clone(),
        });
        self.store.write(b)?;
        self.store.flush().await?;
        Ok(record)
    }

    /// A kept thumbnail of another server's file, if any.
    pub async fn kept_thumbnail(
        &self,
        server: &ServerName,
        id: &str,
        spec: &str,
    ) -> Option<(ThumbnailRecord, Vec<u8>)> {
        let t = self.store.thumbnail(server, id, spec).ok()??;
        let bytes = self.files.read(&t.sha256, t.size).await.ok()?;
        Some((t, bytes))
    }

    /// A preview made within the last hour.
    pub fn kept_preview(&self, url: &str, now: i64) -> Option<serde_json::Value> {
        let map = self.previews.lock().unwrap_or_else(|p| p.into_inner());
        map.get(url).filter(|(at, _)| now - at < PREVIEW_KEPT_MS).map(|(_, v)| v.clone())
    }

    pub fn keep_preview(&self, url: &str, answer: &serde_json::Value, now: i64) {
        let mut map = self.previews.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= PREVIEWS_KEPT {
            map.retain(|_, (at, _)| now - *at < PREVIEW_KEPT_MS);
            if map.len() >= PREVIEWS_KEPT {
                map.clear();
            }
        }
        map.insert(url.to_owned(), (now, answer.clone()));
    }

    /// The lock a fetch of one remote file holds, so one fetch serves all
    /// who ask at once.
    pub fn fetch_lock(&self, server: &ServerName, id: &str) -> FetchLock {
        let mut map = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry((server.to_string(), id.to_owned())).or_default().clone()
    }

    /// Keeps another server's file, then drops the oldest remote files
    /// while the cache is over its size.
    pub async fn keep_remote(
        &self,
        server: &ServerName,
        id: &str,
        content_type: &str,
        filename: Option<&str>,
        bytes: &[u8],
        now: i64,
    ) -> Result<MediaRecord, Failure> {
        let (sha256, size) = self.files.put(bytes).await.map_err(|e| Failure::failed(format!("media file: {e}")))?;
        let record = MediaRecord {
            content_type: content_type.to_owned(),
            filename: filename.unwrap_or_default().to_owned(),
            size,
            sha256,
            created_ts: now,
            fetched_ts: now,
            ..Default::default()
        };
        let before = self.store.media(server, id)?.map_or(0, |r| r.size);
        let mut b = Batch::new();
        b.push(Op::PutMedia { server: server.clone(), id: id.to_owned(), record: record.clone() });
        self.store.write(b)?;
        self.store.flush().await?;
        self.count_remote(|n| n.saturating_sub(before).saturating_add(size))?;
        self.evict().await?;
        Ok(record)
    }

    fn count_remote(&self, change: impl FnOnce(u64) -> u64) -> Result<u64, Failure> {
        let mut total = self.remote_bytes.lock().unwrap_or_else(|p| p.into_inner());
        let now = match *total {
            // Counted from the store the first time (the change is in it).
            None => self.store.remote_media(usize::MAX)?.iter().map(|(_, _, s)| s).sum(),
            Some(n) => change(n),
        };
        *total = Some(now);
        Ok(now)
    }

    /// Drops the oldest fetched remote files while over the cache size.
    async fn evict(&self) -> Result<(), Failure> {
        let limit = self.limits.remote_cache;
        while limit > 0 && self.count_remote(|n| n)? > limit {
            let oldest = self.store.remote_media(16)?;
            if oldest.is_empty() {
                break;
            }
            for (server, id, size) in oldest {
                self.delete(&server, &id).await?;
                self.count_remote(|n| n.saturating_sub(size))?;
                if self.count_remote(|n| n)? <= limit {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Deletes a file's record and thumbnails, and the files no other
    /// record uses.
    pub async fn delete(&self, server: &ServerName, id: &str) -> Result<(), Failure> {
        let mut shas: Vec<String> = self.store.thumbnails(server, id)?.into_iter().map(|(_, t)| t.sha256).collect();
        shas.extend(self.store.media(server, id)?.map(|r| r.sha256).filter(|s| !s.is_empty()));
        let mut b = Batch::new();
        b.push(Op::DeleteMedia { server: server.clone(), id: id.to_owned() });
        self.store.write(b)?;
        self.store.flush().await?;
        for sha in shas {
            if !self.store.media_file_used(&sha)? {
                self.files.remove(&sha).await.map_err(|e| Failure::failed(format!("media file: {e}")))?;
            }
        }
        Ok(())
    }
}

/// An upload's declared metadata.
pub struct Upload<'a> {
    pub reserved: Option<&'a str>,
    pub content_type: &'a str,
    pub filename: Option<&'a str>,
    pub now: i64,
}

#[derive(Default)]
struct Usage {
    bytes: u64,
    pending: u64,
}

fn damaged(sha: &str, e: &std::io::Error) -> Failure {
    Failure::corrupt(format!("media file {sha}: {e}"))
}

/// A file's answer, with the headers that keep a browser from running it.
pub fn response(
    content_type: &str,
    disposition: &str,
    len: u64,
    body: crate::http::Body,
) -> http::Response<crate::http::Body> {
    let mut r = http::Response::new(body);
    let h = r.headers_mut();
    let mut set = |name: http::header::HeaderName, value: &str| {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(http::header::CONTENT_TYPE, &content::served_content_type(content_type));
    set(http::header::CONTENT_DISPOSITION, disposition);
    set(http::header::CONTENT_LENGTH, &len.to_string());
    set(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        http::header::CONTENT_SECURITY_POLICY,
        "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';",
    );
    set(http::header::HeaderName::from_static("cross-origin-resource-policy"), "cross-origin");
    set(http::header::CACHE_CONTROL, "private, max-age=86400, immutable");
    r
}

/// How long a download waits for a reserved id's upload: `timeout_ms`,
/// 20 s by default, at most 2 minutes.
pub fn wait_of(query: &[(String, String)]) -> Duration {
    let ms = crate::http::query_get(query, "timeout_ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(20_000);
    Duration::from_millis(ms.min(120_000))
}

/// The thumbnail a request asks for, as one of the sizes made.
pub fn thumbnail_of(query: &[(String, String)]) -> Result<(u32, u32, Method), Failure> {
    let dim = |name: &str| -> Result<u32, Failure> {
        let v =
            crate::http::query_get(query, name).ok_or_else(|| Failure::MissingParam(format!("{name} is required")))?;
        v.parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Failure::invalid_param(format!("{name} must be a positive integer")))
    };
    let (width, height) = (dim("width")?, dim("height")?);
    let method = Method::parse(crate::http::query_get(query, "method"))
        .ok_or_else(|| Failure::invalid_param("method must be crop or scale"))?;
    Ok(content::thumbnail_size(width, height, method))
}
