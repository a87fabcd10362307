//! A batch of domain writes as key-value writes: what `Store::write`
//! applies in one atomic step. Deletions that cover a whole prefix (a
//! device's keys and inbox) read the keys they remove first.

use prost::Message;

use super::keys::{self, table, Key, KeyReader};
use super::kv::{Kv, KvWrite};
use super::kv_store::{corrupt, put, put_str, KvStore};
use super::records::{AccessToken, MediaRecord, RefreshToken, ThumbnailRecord};
use super::{Batch, Op, SideTopic, Store, StoreResult};
use crate::core::ids::UserId;

impl<K: Kv> KvStore<K> {
    pub(super) fn writes_of(&self, batch: Batch) -> StoreResult<Vec<KvWrite>> {
        let mut writes = Vec::with_capacity(batch.ops.len());
        for op in batch.ops {
            match op {
                Op::PutRoom(r) => writes.push(put(keys::room(&r.room_id), &r)),
                Op::PutEvent(id, r) => writes.push(put(keys::event(id.as_str()), &r)),
                Op::ListEntry { room, index, event } => {
                    writes.push(put_str(keys::list(room.as_str(), index), event.as_str()))
                }
                Op::SetState { room, event_type, state_key, event } => {
                    writes.push(put_str(keys::state(room.as_str(), &event_type, &state_key), event.as_str()))
                }
                Op::DeleteState { room, event_type, state_key } => {
                    writes.push(KvWrite::Delete(keys::state(room.as_str(), &event_type, &state_key)))
                }
                Op::PutStateAfter { event, snapshot } => writes.push(put(keys::state_after(event.as_str()), &snapshot)),
                Op::StreamEntry(e) => {
                    let value = Key::new(table::STREAM).s(e.room.as_str()).s(e.event.as_str()).build();
                    writes.push(KvWrite::Put(keys::stream(e.pos), value));
                    writes.push(put_str(keys::room_stream(e.room.as_str(), e.pos), e.event.as_str()));
                }
                Op::LpduIndex { room, lpdu_hash, event } => {
                    writes.push(put_str(keys::lpdu_index(room.as_str(), &lpdu_hash), event.as_str()))
                }
                Op::PutMembership { user, room, membership } => {
                    writes.push(put(keys::membership(user.as_str(), room.as_str()), &membership))
                }
                Op::PutUser(u) => writes.push(put(keys::user(&u.user_id), &u)),
                Op::PutToken { hash, record } => {
                    writes.push(put_str(keys::user_token(&record.user_id, &record.device_id), hash.as_str()));
                    if !record.refresh_hash.is_empty() {
                        let refresh =
                            RefreshToken { user_id: record.user_id.clone(), device_id: record.device_id.clone() };
                        writes.push(put(keys::refresh_token(&record.refresh_hash), &refresh));
                    }
                    writes.push(put(keys::token(hash.as_str()), &record));
                }
                Op::DeleteToken { hash, user, device } => {
                    if let Some(old) = self.get::<AccessToken>(&keys::token(hash.as_str()))? {
                        if !old.refresh_hash.is_empty() {
                            writes.push(KvWrite::Delete(keys::refresh_token(&old.refresh_hash)));
                        }
                    }
                    writes.push(KvWrite::Delete(keys::token(hash.as_str())));
                    writes.push(KvWrite::Delete(keys::user_token(user.as_str(), &device)));
                }
                Op::PutDevice { user, device, record } => {
                    writes.push(put(keys::device(user.as_str(), &device), &record))
                }
                Op::DeleteDevice { user, device } => {
                    let (u, d) = (user.as_str(), device.as_str());
                    writes.push(KvWrite::Delete(keys::device(u, d)));
                    writes.push(KvWrite::Delete(keys::device_keys(u, d)));
                    writes.push(KvWrite::Delete(keys::user_key(u, super::MLS_DEVICE_KIND, d, "")));
                    for prefix in
                        [keys::one_time_key_prefix(u, d), keys::fallback_key_prefix(u, d), keys::to_device_prefix(u, d)]
                    {
                        for (k, _) in self.prefix(&prefix, false, usize::MAX)? {
                            writes.push(KvWrite::Delete(k));
                        }
                    }
                    // A device's pushers go with it (as its sessions do).
                    for (_, app_id, pushkey, rec) in self.pushers(Some(&user))? {
                        if rec.device_id == device {
                            self.delete_pusher(&mut writes, &user, &app_id, &pushkey)?;
                        }
                    }
                }
                Op::PutDeviceKeys { user, device, keys: k } => {
                    writes.push(put(keys::device_keys(user.as_str(), &device), &k))
                }
                Op::PutOneTimeKey { user, device, algorithm, key_id, key } => {
                    writes.push(put(keys::one_time_key(user.as_str(), &device, &algorithm, &key_id), &key))
                }
                Op::DeleteOneTimeKey { user, device, algorithm, key_id } => {
                    writes.push(KvWrite::Delete(keys::one_time_key(user.as_str(), &device, &algorithm, &key_id)))
                }
                Op::PutFallbackKey { user, device, algorithm, key } => {
                    writes.push(put(keys::fallback_key(user.as_str(), &device, &algorithm), &key))
                }
                Op::PutUserKey { user, kind, a, b, entry } => {
                    writes.push(put(keys::user_key(user.as_str(), &kind, &a, &b), &entry))
                }
                Op::DeleteUserKeys { user, kind, a, b } => match (a, b) {
                    (Some(a), Some(b)) => writes.push(KvWrite::Delete(keys::user_key(user.as_str(), &kind, &a, &b))),
                    (a, _) => {
                        for (k, _) in
                            self.prefix(&keys::user_key_prefix(user.as_str(), &kind, a.as_deref()), false, usize::MAX)?
                        {
                            writes.push(KvWrite::Delete(k));
                        }
                    }
                },
                Op::PutToDevice { user, device, pos, message } => {
                    writes.push(put(keys::to_device(user.as_str(), &device, pos), &message))
                }
                Op::ToDeviceSeen { origin, message_id, ts } => writes
                    .push(KvWrite::Put(keys::to_device_seen(origin.as_str(), &message_id), ts.to_be_bytes().to_vec())),
                Op::ToDeviceTxn { user, device, event_type, txn } => writes
                    .push(KvWrite::Put(keys::to_device_txn(user.as_str(), &device, &event_type, &txn), Vec::new())),
                Op::DeleteToDevice { user, device, up_to } => {
                    let start = keys::to_device_prefix(user.as_str(), &device);
                    let end = keys::to_device(user.as_str(), &device, up_to.saturating_add(1));
                    for (k, _) in self.kv().range(&start, &end, false, usize::MAX)? {
                        writes.push(KvWrite::Delete(k));
                    }
                }
                Op::PutAccountData { user, room, kind, content } => {
                    let room = room.as_ref().map_or("", |r| r.as_str());
                    writes.push(KvWrite::Put(keys::account_data(user.as_str(), room, &kind), content))
                }
                Op::PutFilter { user, id, json } => writes.push(KvWrite::Put(keys::filter(user.as_str(), &id), json)),
                Op::PutReceipt { room, kind, user, receipt } => {
                    writes.push(put(keys::receipt(room.as_str(), &kind, user.as_str(), &receipt.thread_id), &receipt))
                }
                Op::PutAlias { alias, record } => writes.push(put(keys::alias(&alias), &record)),
                Op::DeleteAlias(alias) => writes.push(KvWrite::Delete(keys::alias(&alias))),
                Op::PutRegistrationToken { token, record } => {
                    writes.push(put(keys::registration_token(&token), &record))
                }
                Op::DeleteRegistrationToken(token) => writes.push(KvWrite::Delete(keys::registration_token(&token))),
                Op::PutRelation { room, parent, pos, entry } => {
                    writes.push(put(keys::relation(room.as_str(), &parent, pos), &entry))
                }
                Op::PublishRoom(room, true) => {
                    writes.push(KvWrite::Put(keys::published_room(room.as_str()), Vec::new()))
                }
                Op::PublishRoom(room, false) => writes.push(KvWrite::Delete(keys::published_room(room.as_str()))),
                Op::DeleteReport { ts, id } => writes.push(KvWrite::Delete(keys::report(ts.max(0) as u64, &id))),
                Op::PutReport { id, record } => writes.push(put(keys::report(record.ts.max(0) as u64, &id), &record)),
                Op::PutMedia { server, id, record } => {
                    let key = keys::media(server.as_str(), &id);
                    if let Some(old) = self.get::<MediaRecord>(&key)? {
                        writes.extend(media_index_deletes(server.as_str(), &id, &old));
                    }
                    let server = server.as_str();
                    if !record.sha256.is_empty() {
                        writes.push(KvWrite::Put(keys::media_file_ref(&record.sha256, server, &id, ""), Vec::new()));
                    }
                    if !record.uploader.is_empty() {
                        let usage = keys::media_usage(record.size, record.pending);
                        writes.push(KvWrite::Put(keys::media_by_user(&record.uploader, &id), usage));
                    } else {
                        let at = keys::media_remote(record.fetched_ts.max(0) as u64, server, &id);
                        writes.push(KvWrite::Put(at, record.size.to_be_bytes().to_vec()));
                    }
                    writes.push(put(key, &record));
                }
                Op::DeleteMedia { server, id } => {
                    let server = server.as_str();
                    let key = keys::media(server, &id);
                    if let Some(old) = self.get::<MediaRecord>(&key)? {
                        writes.extend(media_index_deletes(server, &id, &old));
                    }
                    writes.push(KvWrite::Delete(key));
                    for (k, v) in self.prefix(&keys::thumbnail_prefix(server, &id), false, usize::MAX)? {
                        let thumb = ThumbnailRecord::decode(v.as_slice()).map_err(|_| corrupt(&k))?;
                        let mut r = KeyReader::new(&k);
                        let spec = r.s().and(r.s()).and(r.s()).ok_or_else(|| corrupt(&k))?;
                        writes.push(KvWrite::Delete(keys::media_file_ref(&thumb.sha256, server, &id, spec)));
                        writes.push(KvWrite::Delete(k));
                    }
                }
                Op::PutThumbnail { server, id, spec, record } => {
                    let server = server.as_str();
                    writes.push(KvWrite::Put(keys::media_file_ref(&record.sha256, server, &id, &spec), Vec::new()));
                    writes.push(put(keys::thumbnail(server, &id, &spec), &record));
                }
                Op::SideEntry { pos, entry } => {
                    if let Some(topic) = SideTopic::of(&entry) {
                        writes.push(put(keys::side_topic(&topic, pos), &entry))
                    }
                }
                Op::Enqueue { dest, pos, item } => writes.push(put(keys::queue(dest.as_str(), pos), &item)),
                Op::Dequeue { dest, up_to } => {
                    let start = keys::queue_prefix(dest.as_str());
                    let end = keys::queue(dest.as_str(), up_to.saturating_add(1));
                    for (k, _) in self.kv().range(&start, &end, false, usize::MAX)? {
                        writes.push(KvWrite::Delete(k));
                    }
                }
                Op::PutDestination { dest, state } => writes.push(put(keys::destination(dest.as_str()), &state)),
                Op::PutTxnResponse { origin, endpoint, txn, response } => {
                    writes.push(put(keys::txn(&origin, &endpoint, &txn), &response))
                }
                Op::PutPending { lpdu_hash, pending } => writes.push(put(keys::pending(&lpdu_hash), &pending)),
                Op::DeletePending(hash) => writes.push(KvWrite::Delete(keys::pending(&hash))),
                Op::PutClientTxn { user, device, txn, record } => {
                    writes.push(put(keys::client_txn(user.as_str(), &device, &txn), &record))
                }
                Op::PutServerKeys { server, keys: k } => writes.push(put(keys::server_keys(server.as_str()), &k)),
                Op::PositionHighWater(pos) => {
                    writes.push(KvWrite::Put(keys::position_high_water(), pos.to_be_bytes().to_vec()))
                }
                Op::PutPusher { user, app_id, pushkey, record } => {
                    writes.push(put(keys::pusher(user.as_str(), &app_id, &pushkey), &record))
                }
                Op::DeletePusher { user, app_id, pushkey } => {
                    self.delete_pusher(&mut writes, &user, &app_id, &pushkey)?
                }
                Op::PushQueued { user, app_id, pushkey, pos, item } => {
                    writes.push(put(keys::push_item(user.as_str(), &app_id, &pushkey, pos), &item))
                }
                Op::PushDone { user, app_id, pushkey, pos } => {
                    writes.push(KvWrite::Delete(keys::push_item(user.as_str(), &app_id, &pushkey, pos)))
                }
                Op::Probe(ts) => writes.push(KvWrite::Put(keys::probe(), ts.to_be_bytes().to_vec())),
                Op::PushCursor(pos) => writes.push(KvWrite::Put(keys::push_cursor(), pos.to_be_bytes().to_vec())),
            }
        }
        Ok(writes)
    }

    fn delete_pusher(&self, writes: &mut Vec<KvWrite>, user: &UserId, app_id: &str, pushkey: &str) -> StoreResult<()> {
        writes.push(KvWrite::Delete(keys::pusher(user.as_str(), app_id, pushkey)));
        for (k, _) in self.prefix(&keys::push_queue_prefix(user.as_str(), app_id, pushkey), false, usize::MAX)? {
            writes.push(KvWrite::Delete(k));
        }
        Ok(())
    }
}

/// The index entries a media record put in place.
fn media_index_deletes(server: &str, id: &str, old: &MediaRecord) -> Vec<KvWrite> {
    let mut out = Vec::new();
    if !old.sha256.is_empty() {
        out.push(KvWrite::Delete(keys::media_file_ref(&old.sha256, server, id, "")));
    }
    if old.uploader.is_empty() {
        out.push(KvWrite::Delete(keys::media_remote(old.fetched_ts.max(0) as u64, server, id)));
    } else {
        out.push(KvWrite::Delete(keys::media_by_user(&old.uploader, id)));
    }
    out
}
