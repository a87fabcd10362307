//! Device keys, one-time keys and fallback keys: what a device uploads,
//! what others see of it, and what they claim from it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::E2ee;
use crate::core::crypto::PublicKey;
use crate::core::ids::UserId;
use crate::core::json::{self, NumberPolicy, Object};
use crate::store::records::{DeviceKeysRecord, FallbackKeyRecord, OneTimeKeyRecord};
use crate::store::{Batch, Op, StoreError, StoreResult};
use crate::wire::client::KeysUpload;
use crate::wire::Failure;

/// Unclaimed one-time keys a device may hold (clients keep about 50): the
/// bound on what one device can make the server keep.
pub const MAX_ONE_TIME_KEYS: usize = 1_000;
/// Fallback keys a device may hold, one per algorithm (clients use one).
pub const MAX_FALLBACK_KEYS: usize = 8;
/// Clients read this count even when it is zero: without it some never
/// upload one-time keys at all.
const SIGNED_CURVE25519: &str = "signed_curve25519";

/// What `/keys/upload` and `/sync` report of a device's keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyCounts {
    pub one_time: BTreeMap<String, u64>,
    /// Algorithms with a fallback key not handed out yet.
    pub unused_fallback: Vec<String>,
}

/// A key handed out: its `algorithm:key_id` and its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub name: String,
    pub key: Value,
}

/// `algorithm:key_id`, with exactly one colon.
fn split_key_name(name: &str) -> Result<(&str, &str), Failure> {
    match name.split_once(':') {
        Some((alg, id)) if !alg.is_empty() && !id.is_empty() && !id.contains(':') => Ok((alg, id)),
        _ => Err(Failure::invalid_param(format!("key name {name:?} is not algorithm:key_id"))),
    }
}

/// A key's content apart from its signatures, which a client may add to.
fn unsigned_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("signatures");
    }
    v
}

/// Device keys must name the uploading user and device and carry the
/// device's own signature with its ed25519 key.
fn check_device_keys(user: &UserId, device: &str, keys: &Value) -> Result<(), Failure> {
    let names = |f: &str| keys.get(f).and_then(Value::as_str);
    if names("user_id") != Some(user.as_str()) || names("device_id") != Some(device) {
        return Err(Failure::bad_json("device_keys must name the uploading user and device"));
    }
    let key_id = format!("ed25519:{device}");
    let key = keys.get("keys").and_then(|k| k.get(&key_id)).and_then(Value::as_str);
    let key = key.and_then(|k| PublicKey::from_base64(k).ok());
    let Some(key) = key else {
        return Err(Failure::invalid_param(format!("device_keys must hold the device's key {key_id}")));
    };
    if !super::signed_by(keys, user, &key_id, &key) {
        return Err(Failure::invalid_param("device_keys are not signed by the device's own key"));
    }
    Ok(())
}

fn parse_stored(bytes: &[u8]) -> StoreResult<Value> {
    json::parse(bytes, NumberPolicy::Ieee754).map_err(|e| StoreError::Corrupt(format!("stored key: {e}")))
}

impl E2ee {
    /// `/keys/upload`'s writes put in `b`: device keys (only the uploading
    /// device's own, signed by itself), one-time keys (kept until
    /// claimed) and fallback keys (one per algorithm). Answers the
    /// device's keys as now kept when they changed, so others are told.
    /// The caller holds the user's lock until `b` is written.
    pub fn stage_upload(
        &self,
        user: &UserId,
        device: &str,
        upload: KeysUpload,
        b: &mut Batch,
    ) -> Result<Option<Value>, Failure> {
        let mut changed = None;
        if let Some(keys) = upload.device_keys {
            let keys = Value::Object(keys);
            check_device_keys(user, device, &keys)?;
            let stored = self.store.device_keys(user, device)?.map(|k| parse_stored(&k.json)).transpose()?;
            // A device uploads its keys again without the signatures others
            // added (its self-signing key's): those are kept.
            let mut kept = keys.clone();
            if let Some(stored) = &stored {
                if unsigned_part(stored) == unsigned_part(&keys) {
                    // Only the device's own (checked) signature is taken.
                    kept = stored.clone();
                    let own = super::one_signature(&keys, user.as_str(), &format!("ed25519:{device}"));
                    super::merge_signatures(&mut kept, &own);
                }
            }
            if stored.as_ref() != Some(&kept) {
                let (json, _) = crate::store::stored_json(kept.as_object().expect("an object"));
                b.push(Op::PutDeviceKeys {
                    user: user.clone(),
                    device: device.to_owned(),
                    keys: DeviceKeysRecord { json },
                });
                changed = Some(kept);
            }
        }
        if let Some(one_time) = upload.one_time_keys {
            self.add_one_time_keys(user, device, one_time, b)?;
        }
        if let Some(fallback) = upload.fallback_keys {
            self.set_fallback_keys(user, device, fallback, b)?;
        }
        Ok(changed)
    }

    /// A device's keys with a signature added by the user's self-signing
    /// key, put in `b` (the caller checked the signature).
    pub fn stage_device_signature(
        &self,
        user: &UserId,
        device: &str,
        signed: &Value,
        b: &mut Batch,
    ) -> Result<Value, Failure> {
        let stored = self.store.device_keys(user, device)?.ok_or_else(|| Failure::not_found("unknown device"))?;
        let mut keys = parse_stored(&stored.json)?;
        super::merge_signatures(&mut keys, signed);
        let (json, _) = crate::store::stored_json(keys.as_object().expect("an object"));
        b.push(Op::PutDeviceKeys { user: user.clone(), device: device.to_owned(), keys: DeviceKeysRecord { json } });
        Ok(keys)
    }

    /// A device's stored keys.
    pub fn device_keys_of(&self, user: &UserId, device: &str) -> StoreResult<Option<Value>> {
        self.store.device_keys(user, device)?.map(|k| parse_stored(&k.json)).transpose()
    }

    fn add_one_time_keys(&self, user: &UserId, device: &str, keys: Object, b: &mut Batch) -> Result<(), Failure> {
        let held = self.store.one_time_keys(user, device)?;
        let upload = held.iter().map(|(_, _, k)| k.upload).max().map_or(1, |n| n + 1);
        let mut added = 0;
        for (name, key) in keys {
            let (algorithm, key_id) = split_key_name(&name)?;
            super::mls::check_uploaded_package(user, device, algorithm, &key)?;
            if let Some((_, _, old)) = held.iter().find(|(a, i, _)| a == algorithm && i == key_id) {
                // A client retrying its upload sends the same keys again.
                if unsigned_part(&parse_stored(&old.json)?) != unsigned_part(&key) {
                    return Err(Failure::BadRequest(format!("one-time key {name} exists with other content")));
                }
                continue;
            }
            added += 1;
            b.push(Op::PutOneTimeKey {
                user: user.clone(),
                device: device.to_owned(),
                algorithm: algorithm.to_owned(),
                key_id: key_id.to_owned(),
                key: OneTimeKeyRecord { json: serde_json::to_vec(&key).unwrap_or_default(), upload },
            });
        }
        if held.len() + added > MAX_ONE_TIME_KEYS {
            return Err(Failure::BadRequest(format!("a device holds at most {MAX_ONE_TIME_KEYS} one-time keys")));
        }
        Ok(())
    }

    fn set_fallback_keys(&self, user: &UserId, device: &str, keys: Object, b: &mut Batch) -> Result<(), Failure> {
        let stored = self.store.fallback_keys(user, device)?;
        let mut algorithms = BTreeSet::new();
        for (name, key) in keys {
            let (algorithm, key_id) = split_key_name(&name)?;
            if !algorithms.insert(algorithm.to_owned()) {
                return Err(Failure::invalid_param(format!("more than one fallback key for {algorithm}")));
            }
            super::mls::check_uploaded_package(user, device, algorithm, &key)?;
            let json = serde_json::to_vec(&key).unwrap_or_default();
            // Clients send their fallback key with every upload: the same
            // key again must not make a used one look fresh.
            if stored.iter().any(|(a, k)| a == algorithm && k.key_id == key_id && k.json == json) {
                continue;
            }
            b.push(Op::PutFallbackKey {
                user: user.clone(),
                device: device.to_owned(),
                algorithm: algorithm.to_owned(),
                key: FallbackKeyRecord { key_id: key_id.to_owned(), json, used: false },
            });
        }
        let held = stored.iter().filter(|(a, _)| !algorithms.contains(a)).count();
        if held + algorithms.len() > MAX_FALLBACK_KEYS {
            return Err(Failure::BadRequest(format!("a device holds at most {MAX_FALLBACK_KEYS} fallback keys")));
        }
        Ok(())
    }

    /// A device's unclaimed one-time keys per algorithm and its unused
    /// fallback keys' algorithms.
    pub fn counts(&self, user: &UserId, device: &str) -> StoreResult<KeyCounts> {
        let mut one_time = BTreeMap::from([(SIGNED_CURVE25519.to_owned(), 0)]);
        for (algorithm, _, _) in self.store.one_time_keys(user, device)? {
            *one_time.entry(algorithm).or_default() += 1;
        }
        let unused_fallback =
            self.store.fallback_keys(user, device)?.into_iter().filter(|(_, k)| !k.used).map(|(a, _)| a).collect();
        Ok(KeyCounts { one_time, unused_fallback })
    }

    /// A user's devices' keys as `/keys/query` shows them (`wanted` empty:
    /// every device), each with an `unsigned` the server writes (the
    /// device's display name if `with_names`), never what the client put
    /// there.
    pub fn device_keys(&self, user: &UserId, wanted: &[&str], with_names: bool) -> StoreResult<Object> {
        let names: BTreeMap<String, String> =
            self.store.devices(user)?.into_iter().map(|(d, r)| (d, r.display_name)).collect();
        let mut out = Object::new();
        for (device, rec) in self.store.all_device_keys(user)? {
            if !wanted.is_empty() && !wanted.contains(&device.as_str()) {
                continue;
            }
            let Some(name) = names.get(&device) else { continue };
            let Value::Object(mut keys) = parse_stored(&rec.json)? else { continue };
            let mut unsigned = Object::new();
            if with_names && !name.is_empty() {
                unsigned.insert("device_display_name".into(), json!(name));
            }
            keys.insert("unsigned".into(), Value::Object(unsigned));
            out.insert(device, Value::Object(keys));
        }
        Ok(out)
    }

    /// Hands out a device's oldest one-time key of `algorithm` (then it is
    /// gone), or else its fallback key (which stays, marked used). Written,
    /// not yet flushed: the caller flushes before it answers. MLS key
    /// packages past their lifetime at `now_secs` are never handed out
    /// (item 209): expired one-time ones are dropped on the way.
    pub fn claim(&self, user: &UserId, device: &str, algorithm: &str, now_secs: u64) -> StoreResult<Option<Claimed>> {
        let _guard = self.lock(user);
        let mut held: Vec<_> =
            self.store.one_time_keys(user, device)?.into_iter().filter(|(a, _, _)| a == algorithm).collect();
        held.sort_by(|x, y| (x.2.upload, &x.1).cmp(&(y.2.upload, &y.1)));
        let mut b = Batch::new();
        for (algorithm, key_id, key) in held {
            let value = parse_stored(&key.json)?;
            let usable = super::mls::usable_at(&algorithm, &value, now_secs);
            b.push(Op::DeleteOneTimeKey {
                user: user.clone(),
                device: device.to_owned(),
                algorithm: algorithm.clone(),
                key_id: key_id.clone(),
            });
            if usable {
                self.store.write(b)?;
                return Ok(Some(Claimed { name: format!("{algorithm}:{key_id}"), key: value }));
            }
        }
        let fallback = self.store.fallback_keys(user, device)?.into_iter().find(|(a, _)| a == algorithm);
        let claimed = match fallback {
            Some((algorithm, mut fallback)) => {
                let value = parse_stored(&fallback.json)?;
                let usable = super::mls::usable_at(&algorithm, &value, now_secs);
                let claimed = usable.then(|| Claimed { name: format!("{algorithm}:{}", fallback.key_id), key: value });
                if usable && !fallback.used {
                    fallback.used = true;
                    b.push(Op::PutFallbackKey {
                        user: user.clone(),
                        device: device.to_owned(),
                        algorithm,
                        key: fallback,
                    });
                }
                claimed
            }
            None => None,
        };
        if !b.is_empty() {
            self.store.write(b)?;
        }
        Ok(claimed)
    }
}
