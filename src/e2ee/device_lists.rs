//! Device lists: each user's list has versions (stream ids, taken from the
//! server's stream positions). A local user's change becomes a side entry
//! (so local syncs report it) and an `m.device_list_update` EDU naming the
//! version before it; a remote user's list is cached here while its
//! server's updates arrive in an unbroken chain, and fetched again
//! (`user/devices`) when one is missing.

use serde_json::{json, Value};

use super::E2ee;
use crate::core::ids::UserId;
use crate::core::json::Object;
use crate::store::records::side_entry::Kind;
use crate::store::records::{KeysSeenBy, SideEntry, UserKeyEntry};
use crate::store::{Batch, Op, StoreResult};

use crate::store::DEVICE_LIST_KIND as DEVICE_LIST;

/// What changed of a local user's device.
pub enum DeviceChange<'a> {
    /// New keys or signatures (or, `None`, a new name): the device as
    /// others should now see it. Names stay on this server.
    Updated {
        keys: Option<&'a Value>,
    },
    Deleted,
}

/// What became of a remote user's update.
#[derive(Debug, PartialEq, Eq)]
pub enum RemoteUpdate {
    /// Applied to the cache, or nothing cached to apply it to.
    Taken,
    /// Already had.
    Seen,
    /// A version is missing: the cache is dropped and should be fetched.
    Resync,
}

/// A remote user's devices as their server last said, at `stream_id`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CachedDevices {
    pub stream_id: u64,
    /// Device id → its signed keys.
    pub devices: Object,
    pub master_key: Option<Value>,
    pub self_signing_key: Option<Value>,
}

impl CachedDevices {
    fn to_json(&self) -> Vec<u8> {
        let v = json!({
            "devices": self.devices,
            "master_key": self.master_key,
            "self_signing_key": self.self_signing_key,
        });
        serde_json::to_vec(&v).unwrap_or_default()
    }

    fn from_entry(e: &UserKeyEntry) -> Option<CachedDevices> {
        let v: Value = serde_json::from_slice(&e.json).ok()?;
        let key = |f: &str| v.get(f).filter(|k| k.is_object()).cloned();
        Some(CachedDevices {
            stream_id: e.number,
            devices: v.get("devices")?.as_object()?.clone(),
            master_key: key("master_key"),
            self_signing_key: key("self_signing_key"),
        })
    }

    /// `GET user/devices`' answer, as kept (devices without keys are left
    /// out: nobody can encrypt to them).
    pub fn from_answer(answer: &Value) -> Option<CachedDevices> {
        let user = answer.get("user_id")?;
        let mut devices = Object::new();
        for d in answer.get("devices")?.as_array()? {
            if let (Some(id), Some(keys)) = (d.get("device_id").and_then(Value::as_str), d.get("keys")) {
                if keys.get("user_id") == Some(user) && keys.get("device_id").and_then(Value::as_str) == Some(id) {
                    devices.insert(id.to_owned(), keys.clone());
                }
            }
        }
        let key = |f: &str| answer.get(f).filter(|k| k.is_object()).cloned();
        Some(CachedDevices {
            stream_id: answer.get("stream_id")?.as_u64()?,
            devices,
            master_key: key("master_key"),
            self_signing_key: key("self_signing_key"),
        })
    }
}

fn side_entry(pos: u64, user: &UserId) -> Op {
    Op::SideEntry { pos, entry: SideEntry { kind: Some(Kind::DeviceUser(user.to_string())) } }
}

fn version_op(user: &UserId, json: Vec<u8>, number: u64) -> Op {
    Op::PutUserKey {
        user: user.clone(),
        kind: DEVICE_LIST.into(),
        a: String::new(),
        b: String::new(),
        entry: UserKeyEntry { json, number },
    }
}

impl E2ee {
    /// The version of a user's device list (0: never changed).
    pub fn device_list_version(&self, user: &UserId) -> StoreResult<u64> {
        Ok(self.store.user_key(user, DEVICE_LIST, "", "")?.map_or(0, |e| e.number))
    }

    /// A local user's devices changed (keys uploaded or signed, renamed,
    /// deleted): each change is the list's next version, at `first_pos`
    /// on, with the side entry for local syncs, in `b`; the answer is the
    /// `m.device_list_update` EDUs for other servers, each naming the
    /// version before it. The caller holds the user's lock until `b` is
    /// written, so versions chain.
    pub fn local_device_changes(
        &self,
        user: &UserId,
        changes: &[(&str, DeviceChange<'_>)],
        first_pos: u64,
        b: &mut Batch,
    ) -> StoreResult<Vec<Value>> {
        let mut prev = self.device_list_version(user)?;
        let mut edus = Vec::with_capacity(changes.len());
        for (pos, (device, change)) in (first_pos..).zip(changes) {
            b.push(version_op(user, Vec::new(), pos));
            b.push(side_entry(pos, user));
            let prev_id: Vec<u64> = (prev > 0).then_some(prev).into_iter().collect();
            let mut content = json!({
                "user_id": user.as_str(),
                "device_id": device,
                "stream_id": pos,
                "prev_id": prev_id,
            });
            match change {
                DeviceChange::Deleted => content["deleted"] = json!(true),
                DeviceChange::Updated { keys } => {
                    let stored = match keys {
                        Some(k) => Some((*k).clone()),
                        None => self.device_keys_of(user, device)?,
                    };
                    if let Some(keys) = stored {
                        content["keys"] = keys;
                    }
                }
            }
            edus.push(json!({"edu_type": "m.device_list_update", "type": "m.device_list_update", "content": content}));
            prev = pos;
        }
        Ok(edus)
    }

    /// A local user's cross-signing keys changed: a side entry (their own
    /// devices and those sharing a room re-read them) and the
    /// `m.signing_key_update` EDU for other servers, naming the public keys
    /// (the user-signing key stays here).
    /// `keys` are the user's keys as `b` leaves them, by kind. When only
    /// the user-signing key changed (`public` false), only the user's own
    /// devices are told.
    pub fn local_signing_key_change(
        &self,
        user: &UserId,
        keys: &Object,
        public: bool,
        pos: u64,
        b: &mut Batch,
    ) -> Value {
        if public {
            b.push(side_entry(pos, user));
        } else {
            self.note_keys_seen_by(user, user, pos, b);
        }
        let mut content = json!({ "user_id": user.as_str() });
        for (kind, field) in [("master", "master_key"), ("self_signing", "self_signing_key")] {
            if let Some(k) = keys.get(kind) {
                content[field] = k.clone();
            }
        }
        json!({"edu_type": "m.signing_key_update", "type": "m.signing_key_update", "content": content})
    }

    /// `target`'s keys changed as `viewer` alone sees them (the viewer
    /// signed them): the viewer's devices re-read them.
    pub fn note_keys_seen_by(&self, viewer: &UserId, target: &UserId, pos: u64, b: &mut Batch) {
        let kind = Kind::KeysSeenBy(KeysSeenBy { viewer: viewer.to_string(), user: target.to_string() });
        b.push(Op::SideEntry { pos, entry: SideEntry { kind: Some(kind) } });
    }

    /// Another server's `m.device_list_update` for its user `user`
    /// (checked by the caller), at local position `pos`: applied to the
    /// cache when no version it follows is missing there, else the cache
    /// goes. A
    /// side entry tells local syncs either way. Caller holds the lock.
    pub fn remote_device_update(
        &self,
        user: &UserId,
        content: &Value,
        pos: u64,
        b: &mut Batch,
    ) -> Result<RemoteUpdate, String> {
        let stream_id = content.get("stream_id").and_then(Value::as_u64).ok_or("no stream_id")?;
        let device = content.get("device_id").and_then(Value::as_str).ok_or("no device_id")?;
        let prev: Vec<u64> =
            content.get("prev_id").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_u64).collect();
        let entry = self.store.user_key(user, DEVICE_LIST, "", "").map_err(|e| e.to_string())?;
        let known = entry.as_ref().map_or(0, |e| e.number);
        if stream_id <= known {
            return Ok(RemoteUpdate::Seen);
        }
        b.push(side_entry(pos, user));
        let cached = entry.as_ref().and_then(CachedDevices::from_entry);
        match cached {
            // Every version the sender says came before is one the cache
            // already reflects (none: the sender never told us of this
            // user, and the cache came from a full fetch).
            Some(mut cache) if prev.iter().all(|p| *p <= cache.stream_id) => {
                let own = |k: &&Value| {
                    k.get("user_id").and_then(Value::as_str) == Some(user.as_str())
                        && k.get("device_id").and_then(Value::as_str) == Some(device)
                };
                if content.get("deleted").and_then(Value::as_bool) == Some(true) {
                    cache.devices.remove(device);
                } else if let Some(keys) = content.get("keys").filter(own) {
                    cache.devices.insert(device.to_owned(), keys.clone());
                }
                b.push(version_op(user, cache.to_json(), stream_id));
                Ok(RemoteUpdate::Taken)
            }
            Some(_) => {
                // The version heard of is kept, so an older full list
                // fetched meanwhile is not taken for current.
                b.push(version_op(user, Vec::new(), stream_id));
                Ok(RemoteUpdate::Resync)
            }
            None => {
                b.push(version_op(user, Vec::new(), stream_id));
                Ok(RemoteUpdate::Taken)
            }
        }
    }

    /// Another server's `m.signing_key_update` for its user: the cached
    /// cross-signing keys change with it. Caller holds the lock.
    pub fn remote_signing_key_update(
        &self,
        user: &UserId,
        content: &Value,
        pos: u64,
        b: &mut Batch,
    ) -> StoreResult<()> {
        b.push(side_entry(pos, user));
        let Some(entry) = self.store.user_key(user, DEVICE_LIST, "", "")? else { return Ok(()) };
        let Some(mut cache) = CachedDevices::from_entry(&entry) else { return Ok(()) };
        for (field, slot) in [("master_key", &mut cache.master_key), ("self_signing_key", &mut cache.self_signing_key)]
        {
            if let Some(k) = content.get(field).filter(|k| k.is_object()) {
                *slot = Some(k.clone());
            }
        }
        b.push(version_op(user, cache.to_json(), entry.number));
        Ok(())
    }

    /// A full list fetched from the user's server: kept unless an update
    /// newer than it has been heard of meanwhile. Caller holds the lock.
    pub fn store_fetched_devices(&self, user: &UserId, fetched: &CachedDevices) -> StoreResult<bool> {
        if fetched.stream_id < self.device_list_version(user)? {
            return Ok(false);
        }
        let mut b = Batch::new();
        b.push(version_op(user, fetched.to_json(), fetched.stream_id));
        self.store.write(b)?;
        Ok(true)
    }

    /// A remote user's cached devices, if the cache is current.
    pub fn cached_devices(&self, user: &UserId) -> StoreResult<Option<CachedDevices>> {
        Ok(self.store.user_key(user, DEVICE_LIST, "", "")?.as_ref().and_then(CachedDevices::from_entry))
    }

    /// `GET user/devices/{userId}` for a local user: every device, with
    /// its keys where it has uploaded them, and the list's version. Device
    /// names stay on this server, as Synapse keeps them by default.
    pub fn devices_answer(&self, user: &UserId) -> StoreResult<Value> {
        let keys = self.device_keys(user, &[], false)?;
        let mut devices = Vec::new();
        for (id, _) in self.store.devices(user)? {
            let mut d = json!({ "device_id": id });
            if let Some(k) = keys.get(&id) {
                d["keys"] = k.clone();
            }
            devices.push(d);
        }
        let mut answer = json!({
            "user_id": user.as_str(),
            "stream_id": self.device_list_version(user)?,
            "devices": devices,
        });
        for (kind, field) in [("master", "master_key"), ("self_signing", "self_signing_key")] {
            if let Some(k) = self.cross_signing_key(user, kind)? {
                answer[field] = k;
            }
        }
        Ok(answer)
    }
}
