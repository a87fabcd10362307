//! The commit record: a small file beside the store, written and synced
//! apart from it, saying what the store had made durable (each room's list
//! length, the last stream position). A store that holds less at start-up
//! lost data (a truncated or overwritten file, a restore of an older copy),
//! and a hub serving it would hand out list and stream positions that other
//! servers already hold for other events; so lmx refuses to start on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Store, StoreResult, FORMAT_VERSION};
use crate::core::ids::RoomId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub format: u32,
    pub server_name: String,
    pub written_ts: i64,
    /// The newest event in this server's stream (0: none).
    pub stream_position: u64,
    /// Room id → number of events in this server's copy of its list.
    pub rooms: BTreeMap<String, u64>,
}

/// Something the store lacks that the record says was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Room { room: String, committed: u64 },
    Events { room: String, has: u64, committed: u64 },
    ListEntry { room: String, index: u64 },
    Event { room: String, index: u64, event: String },
    Stream { has: u64, committed: u64 },
    ServerName { record: String, config: String },
    Format { record: u32, store: Option<u32> },
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Room { room, committed } => write!(f, "room {room} is gone ({committed} events were committed)"),
            Missing::Events { room, has, committed } => {
                write!(f, "room {room} has {has} events, {committed} were committed")
            }
            Missing::ListEntry { room, index } => write!(f, "room {room} has no list entry at position {index}"),
            Missing::Event { room, index, event } => {
                write!(f, "room {room}: event {event} at position {index} is not stored")
            }
            Missing::Stream { has, committed } => {
                write!(f, "the event stream ends at position {has}, position {committed} was committed")
            }
            Missing::ServerName { record, config } => {
                write!(f, "the data directory belongs to {record}, the configuration names {config}")
            }
            Missing::Format { record, store } => match store {
                Some(s) => write!(f, "the store has format {s}, format {record} was committed"),
                None => write!(f, "the store is empty or has no format mark, format {record} was committed"),
            },
        }
    }
}

/// Where the record of a data directory lives.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join("committed.json")
}

impl CommitRecord {
    /// What the store holds now, for `lmx db seal` and first starts.
    pub fn of_store(store: &dyn Store, server_name: &str, now_ms: i64) -> StoreResult<CommitRecord> {
        let rooms = store.rooms()?.into_iter().filter(|r| r.length > 0).map(|r| (r.room_id, r.length)).collect();
        Ok(CommitRecord {
            format: FORMAT_VERSION,
            server_name: server_name.to_owned(),
            written_ts: now_ms,
            stream_position: last_stream_position(store, u64::MAX)?,
            rooms,
        })
    }

    pub fn read(path: &Path) -> std::io::Result<Option<CommitRecord>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the file atomically: a crash leaves the old record or the
    /// new one, never half of one.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Everything the record says was committed that the store lacks.
    /// `store_format` is the format the store had when opened.
    pub fn missing(
        &self,
        store: &dyn Store,
        store_format: Option<u32>,
        server_name: &str,
    ) -> StoreResult<Vec<Missing>> {
        let mut out = Vec::new();
        if self.server_name != server_name {
            out.push(Missing::ServerName { record: self.server_name.clone(), config: server_name.to_owned() });
        }
        if store_format.is_none_or(|f| f < self.format.min(FORMAT_VERSION)) {
            out.push(Missing::Format { record: self.format, store: store_format });
        }
        for (room, &committed) in &self.rooms {
            let Ok(id) = RoomId::parse(room) else { continue };
            let Some(rec) = store.room(&id)? else {
                out.push(Missing::Room { room: room.clone(), committed });
                continue;
            };
            if rec.length < committed {
                out.push(Missing::Events { room: room.clone(), has: rec.length, committed });
                continue;
            }
            // The last committed entry and its event, as a sample of the
            // rest (`lmx db check` reads every one).
            let index = committed - 1;
            match store.list(&id, index, committed)?.pop() {
                None => out.push(Missing::ListEntry { room: room.clone(), index }),
                Some(event) if store.event(&event)?.is_none() => {
                    out.push(Missing::Event { room: room.clone(), index, event: event.to_string() })
                }
                Some(_) => {}
            }
        }
        if self.stream_position > 0 {
            let has = last_stream_position(store, u64::MAX)?;
            let exact = store.stream_after(self.stream_position - 1, 1)?.first().map(|e| e.pos);
            if has < self.stream_position || exact != Some(self.stream_position) {
                out.push(Missing::Stream { has, committed: self.stream_position });
            }
        }
        Ok(out)
    }
}

/// The newest event stream position at or below `upto`.
pub fn last_stream_position(store: &dyn Store, upto: u64) -> StoreResult<u64> {
    Ok(store.stream_before(upto.saturating_add(1), 1)?.first().map_or(0, |e| e.pos))
}

/// What to do about a damaged store.
const RESTORE: &str = "lmx does not serve a damaged store: as a hub it would hand out list and stream positions \
     that other servers already hold for other events.\n\
     To restore: stop lmx, put back the data directory from a backup (its db/ directory together with its \
     committed.json), and start again. `lmx db check` reports what the store holds.\n\
     To accept the loss and serve what is left: `lmx db seal` records the store as it is now.";

/// The refusal `lmx serve` prints when sled cannot read the store at all.
pub fn damaged(store_dir: &Path, why: &str) -> String {
    format!("the store in {} is damaged: {why}\n{RESTORE}", store_dir.display())
}

/// The refusal `lmx serve` prints: what is missing and what to do.
pub fn refusal(store_dir: &Path, record: &Path, record_ts: i64, missing: &[Missing]) -> String {
    let mut text = format!(
        "the store in {} lacks data that {} (written at {} ms since the epoch) records as committed:\n",
        store_dir.display(),
        record.display(),
        record_ts
    );
    for m in missing.iter().take(20) {
        text.push_str(&format!("  - {m}\n"));
    }
    if missing.len() > 20 {
        text.push_str(&format!("  - and {} more\n", missing.len() - 20));
    }
    text.push_str(RESTORE);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::EventId;
    use crate::store::records::{EventRecord, RoomRecord};
    use crate::store::{Batch, KvStore, MemKv, Op, StreamEntry};

    fn room_with(store: &dyn Store, room: &str, n: u64) {
        let id = RoomId::parse(room).unwrap();
        let mut b = Batch::new();
        for i in 0..n {
            let ev = EventId::parse(&format!("$e{i}{}", room.len())).unwrap();
            b.push(Op::PutEvent(ev.clone(), EventRecord { room_id: room.into(), index: i, ..Default::default() }));
            b.push(Op::ListEntry { room: id.clone(), index: i, event: ev.clone() });
            b.push(Op::StreamEntry(StreamEntry { pos: 10 + i, room: id.clone(), event: ev }));
        }
        b.push(Op::PutRoom(RoomRecord { room_id: room.into(), length: n, ..Default::default() }));
        store.write(b).unwrap();
    }

    #[test]
    fn an_intact_store_satisfies_its_record_and_a_shorter_one_does_not() {
        let store = KvStore::new(MemKv::new());
        store.upgrade().unwrap();
        room_with(&store, "!a:hub.test", 3);
        let record = CommitRecord::of_store(&store, "hub.test", 0).unwrap();
        assert_eq!(record.rooms["!a:hub.test"], 3);
        assert_eq!(record.stream_position, 12);
        assert_eq!(record.missing(&store, Some(FORMAT_VERSION), "hub.test").unwrap(), vec![]);

        let mut more = record.clone();
        more.rooms.insert("!a:hub.test".into(), 5);
        more.rooms.insert("!b:hub.test".into(), 1);
        more.stream_position = 40;
        let missing = more.missing(&store, Some(FORMAT_VERSION), "other.test").unwrap();
        assert!(missing.contains(&Missing::Events { room: "!a:hub.test".into(), has: 3, committed: 5 }));
        assert!(missing.contains(&Missing::Room { room: "!b:hub.test".into(), committed: 1 }));
        assert!(missing.contains(&Missing::Stream { has: 12, committed: 40 }));
        assert!(matches!(missing[0], Missing::ServerName { .. }));

        let empty = KvStore::new(MemKv::new());
        let new = empty.upgrade().unwrap();
        assert!(record
            .missing(&empty, new, "hub.test")
            .unwrap()
            .contains(&Missing::Format { record: FORMAT_VERSION, store: None }));
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        assert_eq!(CommitRecord::read(&path).unwrap(), None);
        let r = CommitRecord {
            format: 2,
            server_name: "a".into(),
            written_ts: 1,
            stream_position: 2,
            rooms: [("!r:a".to_owned(), 3)].into(),
        };
        r.write(&path).unwrap();
        assert_eq!(CommitRecord::read(&path).unwrap(), Some(r));
        std::fs::write(&path, b"{garbage").unwrap();
        assert!(CommitRecord::read(&path).is_err());
    }
}
