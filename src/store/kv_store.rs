//! `Store` over an ordered key-value layer; records are protobuf messages.

use prost::Message;

use super::keys::{self, table, Key, KeyReader};
use super::kv::{prefix_end, BoxFuture, Entries, Kv, KvWrite};
use super::records::{
    AccessToken, AliasRecord, ClientTxn, DestinationState, DeviceKeysRecord, DeviceRecord, EventRecord,
    FallbackKeyRecord, MediaRecord, Membership, OneTimeKeyRecord, PendingLpdu, PushItem, PusherRecord, QueueItem,
    Receipt, RefreshToken, RegistrationTokenRecord, RelationEntry, ReportRecord, RoomRecord, ServerKeys, SideEntry,
    StateSnapshot, ThumbnailRecord, ToDeviceRecord, TxnResponse, UserKeyEntry, UserRecord,
};
use super::{Batch, SharedStream, SideTopic, Store, StoreError, StoreResult, StreamEntry, TokenHash};
use crate::core::ids::{EventId, RoomId, ServerName, UserId};
use std::sync::Arc;

pub struct KvStore<K> {
    kv: K,
    /// What an online backup needs of writers (`backup.rs`).
    journal: super::backup::Journal,
}

impl<K: Kv> KvStore<K> {
    pub fn new(kv: K) -> Self {
        KvStore { kv, journal: Default::default() }
    }

    pub fn kv(&self) -> &K {
        &self.kv
    }

    pub(super) fn journal(&self) -> &super::backup::Journal {
        &self.journal
    }

    pub(super) fn get<M: Message + Default>(&self, key: &[u8]) -> StoreResult<Option<M>> {
        match self.kv.get(key)? {
            None => Ok(None),
            Some(bytes) => M::decode(bytes.as_slice())
                .map(Some)
                .map_err(|_| StoreError::Corrupt(String::from_utf8_lossy(key).into_owned())),
        }
    }

    pub(super) fn prefix(&self, prefix: &[u8], reverse: bool, limit: usize) -> StoreResult<Entries> {
        self.kv.range(prefix, &prefix_end(prefix), reverse, limit)
    }

    fn get_str(&self, key: &[u8]) -> StoreResult<Option<String>> {
        Ok(self.kv.get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub(super) fn event_id_at(&self, key: &[u8]) -> StoreResult<Option<EventId>> {
        self.get_str(key)?.map(|s| EventId::parse(&s).map_err(|_| corrupt(key))).transpose()
    }
}

pub(super) fn corrupt(key: &[u8]) -> StoreError {
    StoreError::Corrupt(String::from_utf8_lossy(key).into_owned())
}

pub(super) fn put<M: Message>(key: Vec<u8>, m: &M) -> KvWrite {
    KvWrite::Put(key, m.encode_to_vec())
}

pub(super) fn put_str(key: Vec<u8>, s: &str) -> KvWrite {
    KvWrite::Put(key, s.as_bytes().to_vec())
}

pub(super) fn decode<M: Message + Default>(key: &[u8], v: &[u8]) -> StoreResult<M> {
    M::decode(v).map_err(|_| corrupt(key))
}

pub(super) fn stream_entry(key: &[u8], v: &[u8]) -> StoreResult<StreamEntry> {
    let pos = KeyReader::new(key).n().ok_or_else(|| corrupt(key))?;
    let mut r = KeyReader::new(v);
    let bad = || corrupt(key);
    // The value is laid out like a key: tag byte, then room and event.
    let room = RoomId::parse(r.s().ok_or_else(bad)?).map_err(|_| bad())?;
    let event = EventId::parse(r.s().ok_or_else(bad)?).map_err(|_| bad())?;
    Ok(StreamEntry { pos, room, event })
}

impl<K: Kv> Store for KvStore<K> {
    fn room(&self, room: &RoomId) -> StoreResult<Option<RoomRecord>> {
        self.get(&keys::room(room.as_str()))
    }

    fn rooms(&self) -> StoreResult<Vec<RoomRecord>> {
        self.prefix(&[table::ROOM], false, usize::MAX)?.iter().map(|(k, v)| decode(k, v)).collect()
    }

    fn event(&self, id: &EventId) -> StoreResult<Option<EventRecord>> {
        self.get(&keys::event(id.as_str()))
    }

    fn list(&self, room: &RoomId, from: u64, to: u64) -> StoreResult<Vec<EventId>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let start = keys::list(room.as_str(), from);
        let end = keys::list(room.as_str(), to);
        self.kv
            .range(&start, &end, false, (to - from) as usize)?
            .iter()
            .map(|(k, v)| EventId::parse(&String::from_utf8_lossy(v)).map_err(|_| corrupt(k)))
            .collect()
    }

    fn state_ids(&self, room: &RoomId) -> StoreResult<Vec<EventId>> {
        self.prefix(&keys::state_prefix(room.as_str()), false, usize::MAX)?
            .iter()
            .map(|(k, v)| EventId::parse(&String::from_utf8_lossy(v)).map_err(|_| corrupt(k)))
            .collect()
    }

    fn state_after(&self, event: &EventId) -> StoreResult<Option<StateSnapshot>> {
        self.get(&keys::state_after(event.as_str()))
    }

    fn lpdu_event(&self, room: &RoomId, lpdu_hash: &str) -> StoreResult<Option<EventId>> {
        self.event_id_at(&keys::lpdu_index(room.as_str(), lpdu_hash))
    }

    fn stream_after(&self, after: u64, limit: usize) -> StoreResult<Vec<StreamEntry>> {
        let start = keys::stream(after.saturating_add(1));
        let end = prefix_end(&[table::STREAM]);
        self.kv.range(&start, &end, false, limit)?.iter().map(|(k, v)| stream_entry(k, v)).collect()
    }

    fn stream_before(&self, before: u64, limit: usize) -> StoreResult<Vec<StreamEntry>> {
        let start = [table::STREAM];
        let end = keys::stream(before);
        self.kv.range(&start, &end, true, limit)?.iter().map(|(k, v)| stream_entry(k, v)).collect()
    }

    fn room_stream(&self, room: &RoomId, after: u64, upto: u64, limit: usize) -> StoreResult<Vec<StreamEntry>> {
        if after >= upto {
            return Ok(Vec::new());
        }
        let start = keys::room_stream(room.as_str(), after.saturating_add(1));
        let end = match upto.checked_add(1) {
            Some(end) => keys::room_stream(room.as_str(), end),
            None => prefix_end(&Key::new(table::ROOM_STREAM).s(room.as_str()).build()),
        };
        self.kv
            .range(&start, &end, true, limit)?
            .iter()
            .map(|(k, v)| {
                let mut key = KeyReader::new(k);
                key.s();
                let pos = key.n().ok_or_else(|| corrupt(k))?;
                let event = EventId::parse(std::str::from_utf8(v).map_err(|_| corrupt(k))?).map_err(|_| corrupt(k))?;
                Ok(StreamEntry { pos, room: room.clone(), event })
            })
            .collect()
    }

    fn position_high_water(&self) -> StoreResult<u64> {
        let key = keys::position_high_water();
        Ok(match self.kv.get(&key)? {
            Some(v) => u64::from_be_bytes(v.as_slice().try_into().map_err(|_| corrupt(&key))?),
            None => 0,
        })
    }

    fn user(&self, user: &UserId) -> StoreResult<Option<UserRecord>> {
        self.get(&keys::user(user.as_str()))
    }

    fn users(&self) -> StoreResult<Vec<UserRecord>> {
        self.prefix(&keys::user_prefix(), false, usize::MAX)?.iter().map(|(k, v)| decode(k, v)).collect()
    }

    fn access_token(&self, token: &TokenHash) -> StoreResult<Option<AccessToken>> {
        self.get(&keys::token(token.as_str()))
    }

    fn memberships(&self, user: &UserId) -> StoreResult<Vec<(RoomId, Membership)>> {
        self.prefix(&keys::membership_prefix(user.as_str()), false, usize::MAX)?
            .iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(k);
                r.s();
                let room = r.s().and_then(|s| RoomId::parse(s).ok()).ok_or_else(|| corrupt(k))?;
                Ok((room, decode(k, v)?))
            })
            .collect()
    }

    fn membership(&self, user: &UserId, room: &RoomId) -> StoreResult<Option<Membership>> {
        self.get(&keys::membership(user.as_str(), room.as_str()))
    }

    fn client_txn(&self, user: &UserId, device: &str, txn: &str) -> StoreResult<Option<ClientTxn>> {
        self.get(&keys::client_txn(user.as_str(), device, txn))
    }

    fn devices(&self, user: &UserId) -> StoreResult<Vec<(String, DeviceRecord)>> {
        self.prefix(&keys::device_prefix(user.as_str()), false, usize::MAX)?
            .iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(k);
                r.s();
                let device = r.s().ok_or_else(|| corrupt(k))?.to_owned();
                Ok((device, decode(k, v)?))
            })
            .collect()
    }

    fn device_token(&self, user: &UserId, device: &str) -> StoreResult<Option<TokenHash>> {
        Ok(self.get_str(&keys::user_token(user.as_str(), device))?.map(TokenHash::from_stored))
    }

    fn account_data(&self, user: &UserId, room: Option<&RoomId>, kind: &str) -> StoreResult<Option<Vec<u8>>> {
        self.kv.get(&keys::account_data(user.as_str(), room.map_or("", |r| r.as_str()), kind))
    }

    fn account_data_all(&self, user: &UserId, room: Option<&RoomId>) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let prefix = keys::account_data_prefix(user.as_str(), room.map_or("", |r| r.as_str()));
        self.prefix(&prefix, false, usize::MAX)?
            .into_iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(&k);
                r.s();
                r.s();
                let kind = r.s().ok_or_else(|| corrupt(&k))?.to_owned();
                Ok((kind, v))
            })
            .collect()
    }

    fn filter(&self, user: &UserId, id: &str) -> StoreResult<Option<Vec<u8>>> {
        self.kv.get(&keys::filter(user.as_str(), id))
    }

    fn state_event(&self, room: &RoomId, event_type: &str, state_key: &str) -> StoreResult<Option<EventId>> {
        self.event_id_at(&keys::state(room.as_str(), event_type, state_key))
    }

    fn user_receipts(&self, room: &RoomId, kind: &str, user: &UserId) -> StoreResult<Vec<Receipt>> {
        self.prefix(&keys::receipt(room.as_str(), kind, user.as_str(), ""), false, usize::MAX)?
            .iter()
            .map(|(k, v)| decode(k, v))
            .collect()
    }

    fn receipts(&self, room: &RoomId) -> StoreResult<Vec<(String, UserId, Receipt)>> {
        self.prefix(&keys::receipt_prefix(room.as_str()), false, usize::MAX)?
            .iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(k);
                r.s();
                let kind = r.s().ok_or_else(|| corrupt(k))?.to_owned();
                let user = r.s().and_then(|u| UserId::parse(u).ok()).ok_or_else(|| corrupt(k))?;
                Ok((kind, user, decode(k, v)?))
            })
            .collect()
    }

    fn alias(&self, alias: &str) -> StoreResult<Option<AliasRecord>> {
        self.get(&keys::alias(alias))
    }

    fn refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<RefreshToken>> {
        self.get(&keys::refresh_token(hash.as_str()))
    }

    fn registration_token(&self, token: &str) -> StoreResult<Option<RegistrationTokenRecord>> {
        self.get(&keys::registration_token(token))
    }

    fn registration_tokens(&self) -> StoreResult<Vec<(String, RegistrationTokenRecord)>> {
        self.prefix(&keys::registration_token_prefix(), false, usize::MAX)?
            .into_iter()
            .map(|(k, v)| Ok((KeyReader::new(&k).s().ok_or_else(|| corrupt(&k))?.to_owned(), decode(&k, &v)?)))
            .collect()
    }

    fn relations(
        &self,
        room: &RoomId,
        parent: &str,
        after: u64,
        before: u64,
        forward: bool,
        limit: usize,
    ) -> StoreResult<Vec<(u64, RelationEntry)>> {
        let start = keys::relation(room.as_str(), parent, after.saturating_add(1));
        let end = keys::relation(room.as_str(), parent, before);
        self.kv()
            .range(&start, &end, !forward, limit)?
            .into_iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(&k);
                let pos = r.s().and(r.s()).and(r.n()).ok_or_else(|| corrupt(&k))?;
                Ok((pos, decode(&k, &v)?))
            })
            .collect()
    }

    fn room_relations(&self, room: &RoomId, limit: usize) -> StoreResult<Vec<(String, u64, RelationEntry)>> {
        self.prefix(&keys::relation_prefix(room.as_str(), None), false, limit)?
            .into_iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(&k);
                let parent = r.s().and(r.s()).ok_or_else(|| corrupt(&k))?.to_owned();
                let pos = r.n().ok_or_else(|| corrupt(&k))?;
                Ok((parent, pos, decode(&k, &v)?))
            })
            .collect()
    }

    fn published_rooms(&self) -> StoreResult<Vec<RoomId>> {
        self.prefix(&keys::published_room_prefix(), false, usize::MAX)?
            .into_iter()
            .map(|(k, _)| KeyReader::new(&k).s().and_then(|r| RoomId::parse(r).ok()).ok_or_else(|| corrupt(&k)))
            .collect()
    }

    fn is_published(&self, room: &RoomId) -> StoreResult<bool> {
        Ok(self.kv().get(&keys::published_room(room.as_str()))?.is_some())
    }

    fn reports(&self, limit: usize) -> StoreResult<Vec<(String, ReportRecord)>> {
        self.prefix(&keys::report_prefix(), true, limit)?
            .into_iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(&k);
                let id = r.n().and(r.s()).ok_or_else(|| corrupt(&k))?.to_owned();
                Ok((id, decode(&k, &v)?))
            })
            .collect()
    }

    fn media(&self, server: &ServerName, id: &str) -> StoreResult<Option<MediaRecord>> {
        self.get(&keys::media(server.as_str(), id))
    }

    fn thumbnail(&self, server: &ServerName, id: &str, spec: &str) -> StoreResult<Option<ThumbnailRecord>> {
        self.get(&keys::thumbnail(server.as_str(), id, spec))
    }

    fn thumbnails(&self, server: &ServerName, id: &str) -> StoreResult<Vec<(String, ThumbnailRecord)>> {
        self.prefix(&keys::thumbnail_prefix(server.as_str(), id), false, usize::MAX)?
            .into_iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(&k);
                let spec = r.s().and(r.s()).and(r.s()).ok_or_else(|| corrupt(&k))?.to_owned();
                Ok((spec, decode(&k, &v)?))
            })
            .collect()
    }

    fn user_media(&self, user: &UserId) -> StoreResult<Vec<(String, u64, bool)>> {
        self.prefix(&keys::media_by_user_prefix(user.as_str()), false, usize::MAX)?
            .into_iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(&k);
                let (_, id) = (r.s(), r.s().ok_or_else(|| corrupt(&k))?);
                let (size, pending) = keys::media_usage_value(&v).ok_or_else(|| corrupt(&k))?;
                Ok((id.to_owned(), size, pending))
            })
            .collect()
    }

    fn remote_media(&self, limit: usize) -> StoreResult<Vec<(ServerName, String, u64)>> {
        self.prefix(&keys::media_remote_prefix(), false, limit)?
            .into_iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(&k);
                let _fetched = r.n();
                let server = r.s().and_then(|s| ServerName::parse(s).ok()).ok_or_else(|| corrupt(&k))?;
                let id = r.s().ok_or_else(|| corrupt(&k))?.to_owned();
                let size = u64::from_be_bytes(v.as_slice().try_into().map_err(|_| corrupt(&k))?);
                Ok((server, id, size))
            })
            .collect()
    }

    fn media_file_used(&self, sha256: &str) -> StoreResult<bool> {
        Ok(!self.prefix(&keys::media_file_ref_prefix(sha256), false, 1)?.is_empty())
    }

    fn device_keys(&self, user: &UserId, device: &str) -> StoreResult<Option<DeviceKeysRecord>> {
        self.get(&keys::device_keys(user.as_str(), device))
    }

    fn all_device_keys(&self, user: &UserId) -> StoreResult<Vec<(String, DeviceKeysRecord)>> {
        self.prefix(&keys::device_keys_prefix(user.as_str()), false, usize::MAX)?
            .iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(k);
                r.s();
                Ok((r.s().ok_or_else(|| corrupt(k))?.to_owned(), decode(k, v)?))
            })
            .collect()
    }

    fn user_key(&self, user: &UserId, kind: &str, a: &str, b: &str) -> StoreResult<Option<UserKeyEntry>> {
        self.get(&keys::user_key(user.as_str(), kind, a, b))
    }

    fn user_keys(
        &self,
        user: &UserId,
        kind: &str,
        a: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, String, UserKeyEntry)>> {
        self.prefix(&keys::user_key_prefix(user.as_str(), kind, a), false, limit)?
            .iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(k);
                r.s();
                r.s();
                let a = r.s().ok_or_else(|| corrupt(k))?.to_owned();
                let b = r.s().ok_or_else(|| corrupt(k))?.to_owned();
                Ok((a, b, decode(k, v)?))
            })
            .collect()
    }

    fn one_time_keys(&self, user: &UserId, device: &str) -> StoreResult<Vec<(String, String, OneTimeKeyRecord)>> {
        self.prefix(&keys::one_time_key_prefix(user.as_str(), device), false, usize::MAX)?
            .iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(k);
                r.s();
                r.s();
                let algorithm = r.s().ok_or_else(|| corrupt(k))?.to_owned();
                let key_id = r.s().ok_or_else(|| corrupt(k))?.to_owned();
                Ok((algorithm, key_id, decode(k, v)?))
            })
            .collect()
    }

    fn fallback_keys(&self, user: &UserId, device: &str) -> StoreResult<Vec<(String, FallbackKeyRecord)>> {
        self.prefix(&keys::fallback_key_prefix(user.as_str(), device), false, usize::MAX)?
            .iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(k);
                r.s();
                r.s();
                Ok((r.s().ok_or_else(|| corrupt(k))?.to_owned(), decode(k, v)?))
            })
            .collect()
    }

    fn to_device_seen(&self, origin: &ServerName, message_id: &str) -> StoreResult<bool> {
        Ok(self.kv.get(&keys::to_device_seen(origin.as_str(), message_id))?.is_some())
    }

    fn to_device_txn_done(&self, user: &UserId, device: &str, event_type: &str, txn: &str) -> StoreResult<bool> {
        Ok(self.kv.get(&keys::to_device_txn(user.as_str(), device, event_type, txn))?.is_some())
    }

    fn to_device(
        &self,
        user: &UserId,
        device: &str,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, ToDeviceRecord)>> {
        if after >= upto {
            return Ok(Vec::new());
        }
        let start = keys::to_device(user.as_str(), device, after.saturating_add(1));
        let end = match upto.checked_add(1) {
            Some(end) => keys::to_device(user.as_str(), device, end),
            None => prefix_end(&keys::to_device_prefix(user.as_str(), device)),
        };
        self.kv
            .range(&start, &end, false, limit)?
            .iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(k);
                r.s();
                r.s();
                Ok((r.n().ok_or_else(|| corrupt(k))?, decode(k, v)?))
            })
            .collect()
    }

    fn side_entries(
        &self,
        topic: SideTopic<'_>,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, SideEntry)>> {
        if after >= upto {
            return Ok(Vec::new());
        }
        let start = keys::side_topic(&topic, after.saturating_add(1));
        let end = match upto.checked_add(1) {
            Some(end) => keys::side_topic(&topic, end),
            None => {
                let (kind, id) = topic.parts();
                prefix_end(&Key::new(table::SIDE_TOPIC).s(kind).s(id).build())
            }
        };
        self.kv
            .range(&start, &end, false, limit)?
            .iter()
            .map(|(k, v)| {
                let mut key = KeyReader::new(k);
                key.s();
                key.s();
                Ok((key.n().ok_or_else(|| corrupt(k))?, decode(k, v)?))
            })
            .collect()
    }

    fn queue(&self, dest: &ServerName, after: u64, limit: usize) -> StoreResult<Vec<(u64, QueueItem)>> {
        let start = keys::queue(dest.as_str(), after.saturating_add(1));
        let end = prefix_end(&keys::queue_prefix(dest.as_str()));
        self.kv
            .range(&start, &end, false, limit)?
            .iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(k);
                r.s();
                let pos = r.n().ok_or_else(|| corrupt(k))?;
                Ok((pos, decode(k, v)?))
            })
            .collect()
    }

    fn destination(&self, dest: &ServerName) -> StoreResult<DestinationState> {
        Ok(self.get(&keys::destination(dest.as_str()))?.unwrap_or_default())
    }

    fn destinations_with_work(&self) -> StoreResult<Vec<ServerName>> {
        let mut out: Vec<ServerName> = Vec::new();
        let mut start = vec![table::QUEUE];
        let end = prefix_end(&[table::QUEUE]);
        // Hop from destination to destination instead of reading every entry.
        while let Some((k, _)) = self.kv.range(&start, &end, false, 1)?.pop() {
            let name = KeyReader::new(&k).s().ok_or_else(|| corrupt(&k))?.to_owned();
            start = prefix_end(&keys::queue_prefix(&name));
            out.push(ServerName::parse(&name).map_err(|_| corrupt(&k))?);
        }
        Ok(out)
    }

    fn txn_response(&self, origin: &str, endpoint: &str, txn: &str) -> StoreResult<Option<TxnResponse>> {
        self.get(&keys::txn(origin, endpoint, txn))
    }

    fn pending_lpdus(&self) -> StoreResult<Vec<(String, PendingLpdu)>> {
        self.prefix(&[table::PENDING], false, usize::MAX)?
            .iter()
            .map(|(k, v)| {
                let hash = KeyReader::new(k).s().ok_or_else(|| corrupt(k))?.to_owned();
                Ok((hash, decode(k, v)?))
            })
            .collect()
    }

    fn pending_lpdu(&self, lpdu_hash: &str) -> StoreResult<Option<PendingLpdu>> {
        self.get(&keys::pending(lpdu_hash))
    }

    fn server_keys(&self, server: &ServerName) -> StoreResult<Option<ServerKeys>> {
        self.get(&keys::server_keys(server.as_str()))
    }

    fn pushers(&self, user: Option<&UserId>) -> StoreResult<Vec<(UserId, String, String, PusherRecord)>> {
        self.prefix(&keys::pusher_prefix(user.map(UserId::as_str)), false, usize::MAX)?
            .iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(k);
                let parts = (r.s().and_then(|u| UserId::parse(u).ok()), r.s(), r.s());
                let (Some(user), Some(app_id), Some(pushkey)) = parts else { return Err(corrupt(k)) };
                Ok((user, app_id.to_owned(), pushkey.to_owned(), decode(k, v)?))
            })
            .collect()
    }

    fn push_queue(
        &self,
        user: &UserId,
        app_id: &str,
        pushkey: &str,
        limit: usize,
    ) -> StoreResult<Vec<(u64, PushItem)>> {
        self.prefix(&keys::push_queue_prefix(user.as_str(), app_id, pushkey), false, limit)?
            .iter()
            .map(|(k, v)| {
                let mut r = KeyReader::new(k);
                let pos = r.s().and(r.s()).and(r.s()).and(r.n()).ok_or_else(|| corrupt(k))?;
                Ok((pos, decode(k, v)?))
            })
            .collect()
    }

    fn push_cursor(&self) -> StoreResult<Option<u64>> {
        let key = keys::push_cursor();
        match self.kv.get(&key)? {
            Some(v) => Ok(Some(u64::from_be_bytes(v.as_slice().try_into().map_err(|_| corrupt(&key))?))),
            None => Ok(None),
        }
    }

    fn write(&self, mut batch: Batch) -> StoreResult<()> {
        let _open = self.journal.gate.read().expect("poisoned");
        let claim = batch.claim.take();
        let writes = self.writes_of(batch)?;
        self.journal.note(&writes);
        match claim {
            Some(claim) => self.kv.apply_claimed(writes, &claim),
            None => self.kv.apply(writes),
        }
    }

    fn claim(&self, what: super::Claimed) -> StoreResult<super::Claim> {
        let epoch = self.kv.claim(&what)?;
        Ok(super::Claim { what, epoch })
    }

    fn backup(&self, out: &mut dyn FnMut(super::backup::Record) -> std::io::Result<()>) -> StoreResult<u64> {
        self.backup_to(out)
    }

    fn flush(&self) -> BoxFuture<'_, StoreResult<()>> {
        self.kv.flush()
    }

    fn size_on_disk(&self) -> u64 {
        self.kv.size_on_disk()
    }

    fn announce(&self, client: &str, federation: &str) -> StoreResult<()> {
        self.kv.announce(client, federation)
    }

    fn lease_holder(&self) -> StoreResult<Option<super::LeaseHolder>> {
        self.kv.lease_holder()
    }

    fn shared_stream(&self) -> Option<Arc<dyn SharedStream>> {
        self.kv.shared_stream()
    }
}
