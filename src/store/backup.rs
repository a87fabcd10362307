//! Online backup and restore of the store, and the backup file's format.
//!
//! A backup is taken while the server runs. Every key-value pair is read
//! without stopping writers, while the keys they write are noted; then,
//! with writes held back for that short moment only, each noted key is
//! read again and written after the rest (or marked deleted). Restored in
//! order, later records win, so the result is the store as it stood in
//! that moment: consistent across rooms, queues and cursors.
//!
//! The file: `LMXBACKUP1\n`, then records, each a tag byte and its fields
//! (lengths are big-endian): `M` metadata (u32 length, JSON), `K` a pair
//! (u32 key length, key, u32 value length, value), `D` a deleted key (u32
//! length, key), `F` a file beside the store (u32 path length, path
//! relative to the data directory, u64 length, bytes), and last `E` with
//! the SHA-256 of everything before it. A file cut short or altered fails
//! that check and is refused whole.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use sha2::{Digest, Sha256};

use super::kv::{Kv, KvWrite};
use super::{KvStore, StoreError, StoreResult};

pub const MAGIC: &[u8] = b"LMXBACKUP1\n";
/// The `File` record name the signing key travels under (it may live
/// outside the data directory); other files are paths under `media/`.
pub const SIGNING_KEY: &str = "@signing-key";
/// Pairs read per step of the first pass.
const PAGE: usize = 1000;
/// The longest key or metadata a backup may hold, and the largest value.
const MAX_KEY: u32 = 64 << 10;
const MAX_VALUE: u32 = 256 << 20;

/// What a running backup needs of the store's writers: the keys they
/// write while it reads, and a gate that holds them back at its end.
#[derive(Default)]
pub struct Journal {
    /// Writers hold it shared; a backup's last step holds it alone.
    pub(super) gate: RwLock<()>,
    /// Whether a backup is reading: writers skip the lock below otherwise.
    active: AtomicBool,
    noted: Mutex<Option<HashSet<Vec<u8>>>>,
    /// One backup at a time.
    running: Mutex<()>,
}

impl Journal {
    /// Notes the keys a writer is about to write, while a backup reads
    /// (the writer holds the gate).
    pub(super) fn note(&self, writes: &[KvWrite]) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        if let Some(keys) = self.noted.lock().expect("poisoned").as_mut() {
            for w in writes {
                let (KvWrite::Put(k, _) | KvWrite::Delete(k)) = w;
                keys.insert(k.clone());
            }
        }
    }
}

/// One record of a backup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Meta(Vec<u8>),
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// A file's path and length; its bytes follow in the stream.
    File(String, u64),
}

/// Writes records, hashing what it writes.
pub struct Writer<W: Write> {
    out: W,
    hash: Sha256,
    pub written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(MAGIC)?;
        let mut hash = Sha256::new();
        hash.update(MAGIC);
        Ok(Writer { out, hash, written: MAGIC.len() as u64 })
    }

    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hash.update(b);
        self.written += b.len() as u64;
        self.out.write_all(b)
    }

    fn field(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.bytes(&(b.len() as u32).to_be_bytes())?;
        self.bytes(b)
    }

    pub fn record(&mut self, r: &Record) -> std::io::Result<()> {
        match r {
            Record::Meta(json) => {
                self.bytes(b"M")?;
                self.field(json)
            }
            Record::Put(k, v) => {
                self.bytes(b"K")?;
                self.field(k)?;
                self.field(v)
            }
            Record::Delete(k) => {
                self.bytes(b"D")?;
                self.field(k)
            }
            Record::File(path, len) => {
                self.bytes(b"F")?;
                self.field(path.as_bytes())?;
                self.bytes(&len.to_be_bytes())
            }
        }
    }

    /// A file's bytes, after its `File` record: exactly `len` of them.
    pub fn file_bytes(&mut self, mut from: impl Read, len: u64) -> std::io::Result<()> {
        let mut left = len;
        let mut buf = vec![0u8; 64 << 10];
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = from.read(&mut buf[..want])?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "a file shrank while read"));
            }
            self.bytes(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    /// The closing record; the writer's output.
    pub fn finish(mut self) -> std::io::Result<W> {
        let digest = self.hash.clone().finalize();
        self.out.write_all(b"E")?;
        self.out.write_all(&digest)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Why a backup file is refused.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not an lmx backup (no LMXBACKUP1 header)")]
    NotABackup,
    #[error("the backup is cut short or damaged: {0}")]
    Damaged(String),
    #[error("reading the backup: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads records, checking the closing hash.
pub struct Reader<R: Read> {
    input: R,
    hash: Sha256,
    pub read: u64,
}

impl<R: Read> Reader<R> {
    pub fn new(mut input: R) -> Result<Self, BackupError> {
        let mut magic = vec![0u8; MAGIC.len()];
        input.read_exact(&mut magic).map_err(|_| BackupError::NotABackup)?;
        if magic != MAGIC {
            return Err(BackupError::NotABackup);
        }
        let mut hash = Sha256::new();
        hash.update(&magic);
        Ok(Reader { input, hash, read: magic.len() as u64 })
    }

    fn exact(&mut self, n: usize) -> Result<Vec<u8>, BackupError> {
        let mut b = vec![0u8; n];
        self.input.read_exact(&mut b).map_err(|e| BackupError::Damaged(e.to_string()))?;
        self.hash.update(&b);
        self.read += n as u64;
        Ok(b)
    }

    fn field(&mut self, max: u32) -> Result<Vec<u8>, BackupError> {
        let len = u32::from_be_bytes(self.exact(4)?.try_into().expect("4 bytes"));
        if len > max {
            return Err(BackupError::Damaged(format!("a field of {len} bytes")));
        }
        self.exact(len as usize)
    }

    /// The next record; `None` after the closing one, whose hash matched.
    pub fn next_record(&mut self) -> Result<Option<Record>, BackupError> {
        let mut tag = [0u8; 1];
        self.input.read_exact(&mut tag).map_err(|e| BackupError::Damaged(e.to_string()))?;
        if tag[0] == b'E' {
            let mut digest = [0u8; 32];
            self.input.read_exact(&mut digest).map_err(|e| BackupError::Damaged(e.to_string()))?;
            if digest[..] != self.hash.clone().finalize()[..] {
                return Err(BackupError::Damaged("the checksum does not match".into()));
            }
            return Ok(None);
        }
        self.hash.update(tag);
        self.read += 1;
        let record = match tag[0] {
            b'M' => Record::Meta(self.field(MAX_KEY)?),
            b'K' => Record::Put(self.field(MAX_KEY)?, self.field(MAX_VALUE)?),
            b'D' => Record::Delete(self.field(MAX_KEY)?),
            b'F' => {
                let path = String::from_utf8(self.field(4096)?).map_err(|_| BackupError::Damaged("a path".into()))?;
                let len = u64::from_be_bytes(self.exact(8)?.try_into().expect("8 bytes"));
                Record::File(path, len)
            }
            other => return Err(BackupError::Damaged(format!("unknown record {other:#x}"))),
        };
        Ok(Some(record))
    }

    /// A file's bytes after its `File` record, copied to `to`.
    pub fn file_bytes(&mut self, len: u64, mut to: impl Write) -> Result<(), BackupError> {
        let mut left = len;
        let mut buf = vec![0u8; 64 << 10];
        while left > 0 {
            let n = buf.len().min(left as usize);
            self.input.read_exact(&mut buf[..n]).map_err(|e| BackupError::Damaged(e.to_string()))?;
            self.hash.update(&buf[..n]);
            self.read += n as u64;
            to.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }
}

impl<K: Kv> KvStore<K> {
    /// Writes every pair to `out` as one consistent moment (see the module
    /// notes); how many pairs the first pass read.
    pub fn backup_to(&self, out: &mut dyn FnMut(Record) -> std::io::Result<()>) -> StoreResult<u64> {
        let io = |e: std::io::Error| StoreError::Backend(format!("writing the backup: {e}"));
        let journal = self.journal();
        let _one = journal.running.lock().expect("poisoned");
        *journal.noted.lock().expect("poisoned") = Some(HashSet::new());
        journal.active.store(true, Ordering::Release);
        // Writers that looked before the flag was set finish first, so no
        // write the first pass might miss goes unnoted.
        drop(journal.gate.write().expect("poisoned"));
        let result = (|| {
            let pairs = super::kv::for_each_page(self.kv(), PAGE, |page| {
                for (k, v) in page {
                    out(Record::Put(k.clone(), v.clone())).map_err(io)?;
                }
                Ok(())
            })?;
            // The moment of the backup: writers wait while the keys they
            // wrote meanwhile are read again (into memory: a slow reader
            // of the backup must not hold them up).
            let last = {
                let _closed = journal.gate.write().expect("poisoned");
                let noted = journal.noted.lock().expect("poisoned").take().unwrap_or_default();
                let mut noted: Vec<Vec<u8>> = noted.into_iter().collect();
                noted.sort();
                let mut last = Vec::with_capacity(noted.len());
                for k in noted {
                    last.push(match self.kv().get(&k)? {
                        Some(v) => Record::Put(k, v),
                        None => Record::Delete(k),
                    });
                }
                last
            };
            for r in last {
                out(r).map_err(io)?;
            }
            Ok(pairs)
        })();
        journal.active.store(false, Ordering::Release);
        *journal.noted.lock().expect("poisoned") = None;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemKv;

    fn roundtrip(records: &[Record]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new()).unwrap();
        for r in records {
            w.record(r).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn records_come_back_and_damage_is_refused() {
        let records = vec![
            Record::Meta(b"{}".to_vec()),
            Record::Put(b"k".to_vec(), b"v".to_vec()),
            Record::Delete(b"x".to_vec()),
        ];
        let bytes = roundtrip(&records);
        let mut r = Reader::new(bytes.as_slice()).unwrap();
        let mut back = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            back.push(rec);
        }
        assert_eq!(back, records);
        let mut altered = bytes.clone();
        altered[MAGIC.len() + 6] ^= 1;
        let mut r = Reader::new(altered.as_slice()).unwrap();
        let failed = std::iter::from_fn(|| r.next_record().transpose()).find_map(Result::err);
        assert!(failed.is_some(), "an altered byte fails the checksum");
        let cut = &bytes[..bytes.len() - 10];
        let mut r = Reader::new(cut).unwrap();
        assert!(std::iter::from_fn(|| r.next_record().transpose()).any(|x| x.is_err()), "a cut file is refused");
        assert!(matches!(Reader::new(&b"something else"[..]), Err(BackupError::NotABackup)));
    }

    #[test]
    fn writes_during_the_first_pass_are_read_again_at_the_end() {
        let store = KvStore::new(MemKv::new());
        let put = |k: &[u8], v: &[u8]| {
            let _open = store.journal().gate.read().unwrap();
            let w = vec![KvWrite::Put(k.to_vec(), v.to_vec())];
            store.journal().note(&w);
            store.kv().apply(w).unwrap()
        };
        for i in 0..2500u32 {
            put(&i.to_be_bytes(), b"old");
        }
        let mut seen = Vec::new();
        let mut first_page = true;
        store
            .backup_to(&mut |r| {
                // A writer changes a key already read, while the backup reads.
                if first_page && matches!(&r, Record::Put(k, _) if k == &1500u32.to_be_bytes()) {
                    first_page = false;
                    put(&0u32.to_be_bytes(), b"new");
                }
                seen.push(r);
                Ok(())
            })
            .unwrap();
        let last_for_zero = seen.iter().rev().find_map(|r| match r {
            Record::Put(k, v) if k == &0u32.to_be_bytes() => Some(v.clone()),
            _ => None,
        });
        assert_eq!(last_for_zero.as_deref(), Some(&b"new"[..]), "the later record carries the change");
    }
}
