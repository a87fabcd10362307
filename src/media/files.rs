//! Media bytes on disk, one file per content: `<dir>/ab/cd/<sha256 hex>`.
//! A file is written under `<dir>/tmp/`, synced, then renamed into place,
//! so a crash leaves either nothing or the whole file; the store's record
//! is written after, and names only files that are whole.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub struct Files {
    dir: PathBuf,
}

/// A file being written: bytes are hashed and counted as they come.
pub struct Incoming {
    path: PathBuf,
    file: tokio::fs::File,
    hasher: Sha256,
    size: u64,
}

/// A whole file, synced, not yet in place.
pub struct Written {
    path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

impl Files {
    pub fn new(dir: PathBuf) -> Self {
        Files { dir }
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Where the file with this hash lives; `None` for anything but 64
    /// lower-case hex digits (a stored hash is never trusted as a path).
    pub fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        let ok = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| self.dir.join(&sha256[..2]).join(&sha256[2..4]).join(sha256))
    }

    /// Removes what writes cut short by a crash left behind.
    pub fn clean_tmp(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(self.tmp_dir()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub async fn begin(&self) -> io::Result<Incoming> {
        let tmp = self.tmp_dir();
        tokio::fs::create_dir_all(&tmp).await?;
        let mut name = [0u8; 16];
        getrandom::getrandom(&mut name).map_err(io::Error::other)?;
        let path = tmp.join(name.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await?;
        Ok(Incoming { path, file, hasher: Sha256::new(), size: 0 })
    }

    /// Moves a written file into place (an identical file already there
    /// is kept) and makes the move durable.
    pub async fn commit(&self, w: Written) -> io::Result<()> {
        let dest = self.path_of(&w.sha256).ok_or_else(|| io::Error::other("bad hash"))?;
        let parent = dest.parent().expect("nested path");
        tokio::fs::create_dir_all(parent).await?;
        tokio::fs::rename(&w.path, &dest).await?;
        let parent = parent.to_owned();
        tokio::task::spawn_blocking(move || std::fs::File::open(parent)?.sync_all()).await.map_err(io::Error::other)?
    }

    /// Writes `bytes` whole (a fetched file, a thumbnail).
    pub async fn put(&self, bytes: &[u8]) -> io::Result<(String, u64)> {
        let mut w = self.begin().await?;
        w.write(bytes).await?;
        let written = w.finish().await?;
        let out = (written.sha256.clone(), written.size);
        self.commit(written).await?;
        Ok(out)
    }

    /// Opens a stored file, checking it still has its recorded size: a
    /// file cut short or replaced is refused, never served.
    pub async fn open(&self, sha256: &str, size: u64) -> io::Result<tokio::fs::File> {
        let path = self.path_of(sha256).ok_or_else(|| io::Error::other("bad hash"))?;
        let file = tokio::fs::File::open(&path).await?;
        let len = file.metadata().await?.len();
        if len != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} holds {len} bytes where {size} were stored", path.display()),
            ));
        }
        Ok(file)
    }

    /// Reads a stored file whole, checking its size and its hash.
    pub async fn read(&self, sha256: &str, size: u64) -> io::Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut file = self.open(sha256, size).await?;
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.read_to_end(&mut out).await?;
        if hex(&Sha256::digest(&out)) != sha256 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("media file {sha256} is damaged")));
        }
        Ok(out)
    }

    /// Deletes a file no record uses any more.
    pub async fn remove(&self, sha256: &str) -> io::Result<()> {
        let Some(path) = self.path_of(sha256) else { return Ok(()) };
        match tokio::fs::remove_file(path).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Incoming {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        self.file.write_all(data).await
    }

    /// Syncs the bytes; the file is ready to move into place.
    pub async fn finish(mut self) -> io::Result<Written> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        Ok(Written { path: self.path, sha256: hex(&self.hasher.finalize()), size: self.size })
    }

    /// Drops a write (too large, the connection failed).
    pub async fn abandon(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
