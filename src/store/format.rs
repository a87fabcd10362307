//! The store's format version and the upgrades from older formats, run
//! once at start before anything else reads the store.

use super::keys::{self, table, KeyReader};
use super::kv::{prefix_end, Kv, KvWrite};
use super::kv_store::{corrupt, decode, put_str, stream_entry, KvStore};
use super::records::SideEntry;
use super::{SideTopic, StoreError, StoreResult, TokenHash, FORMAT_VERSION};

impl<K: Kv> KvStore<K> {
    /// The store's format: `None` when it is empty (new), 1 when it has
    /// records but no mark (written before formats were marked).
    pub fn format(&self) -> StoreResult<Option<u32>> {
        let key = keys::format_version();
        Ok(match self.kv().get(&key)? {
            Some(v) => Some(u32::from_be_bytes(v.as_slice().try_into().map_err(|_| corrupt(&key))?)),
            None if self.kv().range(&[], &[0xff; 4], false, 1)?.is_empty() => None,
            None => Some(1),
        })
    }

    /// Brings the store to `FORMAT_VERSION` (a new store is simply marked)
    /// and returns the format it had (`None`: new). A newer format is
    /// refused: this build would misread it.
    pub fn upgrade(&self) -> StoreResult<Option<u32>> {
        let found = self.format()?;
        let key = keys::format_version();
        if let Some(found) = found.filter(|f| *f > FORMAT_VERSION) {
            return Err(StoreError::NewerFormat { found, supported: FORMAT_VERSION });
        }
        let mut writes = Vec::new();
        if found == Some(1) {
            // Tokens were kept as they are; keep their hashes instead.
            for (k, v) in self.prefix(&[table::TOKEN], false, usize::MAX)? {
                let token = KeyReader::new(&k).s().ok_or_else(|| corrupt(&k))?;
                writes.push(KvWrite::Delete(k.clone()));
                writes.push(KvWrite::Put(keys::token(TokenHash::of(token).as_str()), v));
            }
            for (k, v) in self.prefix(&[table::USER_TOKEN], false, usize::MAX)? {
                let token = String::from_utf8_lossy(&v).into_owned();
                writes.push(put_str(k, TokenHash::of(&token).as_str()));
            }
        }
        if found.is_some_and(|f| f < 3) {
            self.index_streams()?;
        }
        if found != Some(FORMAT_VERSION) {
            writes.push(KvWrite::Put(key, FORMAT_VERSION.to_be_bytes().to_vec()));
            self.kv().apply(writes)?;
        }
        Ok(found)
    }

    /// Format 3: indexes the stream by room and moves the side stream
    /// under its topics, a page at a time. Keys are derived from what they
    /// index, so an upgrade cut short is simply done again.
    fn index_streams(&self) -> StoreResult<()> {
        const PAGE: usize = 10_000;
        let end = prefix_end(&[table::STREAM]);
        let mut start = vec![table::STREAM];
        loop {
            let page = self.kv().range(&start, &end, false, PAGE)?;
            let Some((last, _)) = page.last() else { break };
            start = [last.as_slice(), &[0]].concat();
            let mut writes = Vec::with_capacity(page.len());
            for (k, v) in &page {
                let e = stream_entry(k, v)?;
                writes.push(put_str(keys::room_stream(e.room.as_str(), e.pos), e.event.as_str()));
            }
            self.kv().apply(writes)?;
        }
        let old_side = [table::SIDE];
        loop {
            let page = self.prefix(&old_side, false, PAGE)?;
            if page.is_empty() {
                break;
            }
            let mut writes = Vec::with_capacity(page.len() * 2);
            for (k, v) in page {
                let pos = KeyReader::new(&k).n().ok_or_else(|| corrupt(&k))?;
                let entry: SideEntry = decode(&k, &v)?;
                if let Some(topic) = SideTopic::of(&entry) {
                    writes.push(KvWrite::Put(keys::side_topic(&topic, pos), v));
                }
                writes.push(KvWrite::Delete(k));
            }
            self.kv().apply(writes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::Key;
    use super::super::kv_store::put;
    use super::super::records::AccessToken;
    use super::super::{Store, StreamEntry};
    use super::*;
    use crate::core::ids::{EventId, RoomId, UserId};
    use crate::store::MemKv;

    #[test]
    fn format_1_tokens_become_hashes_and_newer_formats_are_refused() {
        let store = KvStore::new(MemKv::new());
        assert_eq!(store.format().unwrap(), None, "empty");
        let record = AccessToken { user_id: "@a:hub.test".into(), device_id: "D".into(), ..Default::default() };
        store
            .kv()
            .apply(vec![
                put(keys::token("plain-token"), &record),
                put_str(keys::user_token("@a:hub.test", "D"), "plain-token"),
            ])
            .unwrap();
        assert_eq!(store.format().unwrap(), Some(1), "records without a mark");
        assert_eq!(store.upgrade().unwrap(), Some(1));
        assert_eq!(store.format().unwrap(), Some(FORMAT_VERSION));
        let hash = TokenHash::of("plain-token");
        assert_eq!(store.access_token(&hash).unwrap(), Some(record));
        assert!(store.kv().get(&keys::token("plain-token")).unwrap().is_none(), "the token itself is gone");
        let user = UserId::parse("@a:hub.test").unwrap();
        assert_eq!(store.device_token(&user, "D").unwrap(), Some(hash));
        assert_eq!(store.upgrade().unwrap(), Some(FORMAT_VERSION), "a second upgrade changes nothing");

        store.kv().apply(vec![KvWrite::Put(keys::format_version(), 99u32.to_be_bytes().to_vec())]).unwrap();
        assert!(matches!(store.upgrade(), Err(StoreError::NewerFormat { found: 99, .. })));
    }

    #[test]
    fn format_2_streams_are_indexed_by_room_and_topic() {
        use crate::store::records::side_entry::Kind;
        let store = KvStore::new(MemKv::new());
        let room = RoomId::parse("!r:hub.test").unwrap();
        let event = EventId::parse("$e").unwrap();
        let typing = SideEntry { kind: Some(Kind::TypingRoom(room.to_string())) };
        let stream_value = Key::new(table::STREAM).s(room.as_str()).s(event.as_str()).build();
        store
            .kv()
            .apply(vec![
                KvWrite::Put(keys::format_version(), 2u32.to_be_bytes().to_vec()),
                KvWrite::Put(keys::stream(7), stream_value),
                put(Key::new(table::SIDE).n(8).build(), &typing),
            ])
            .unwrap();
        assert_eq!(store.upgrade().unwrap(), Some(2));
        let entries = store.room_stream(&room, 0, u64::MAX, 10).unwrap();
        assert_eq!(entries, vec![StreamEntry { pos: 7, room: room.clone(), event }]);
        let topic = SideTopic::Typing(room.as_str());
        assert_eq!(store.side_entries(topic, 0, u64::MAX, 10).unwrap(), vec![(8, typing)]);
        assert!(store.prefix(&[table::SIDE], false, 10).unwrap().is_empty(), "the old side stream is gone");
        assert_eq!(store.upgrade().unwrap(), Some(FORMAT_VERSION));
    }

    #[test]
    fn newer_formats_are_refused() {
        let store = KvStore::new(MemKv::new());
        store.kv().apply(vec![KvWrite::Put(keys::format_version(), 99u32.to_be_bytes().to_vec())]).unwrap();
        assert!(matches!(store.upgrade(), Err(StoreError::NewerFormat { found: 99, .. })));
    }
}
