//! The draft's MLS devices (digest 9.2, 9.3): each device's signed device
//! object, and its key packages, kept as one-time keys (handed out once)
//! and a last-resort package as its fallback key (handed out again, only
//! when no other is left).

use serde_json::{json, Value};

use super::{Claimed, E2ee};
use crate::core::crypto::b64_decode;
use crate::core::ids::UserId;
use crate::core::json::{self, NumberPolicy, Object};
use crate::core::mls::{check_device_object, check_key_package, KEY_PACKAGE_ALGORITHM};
use crate::store::records::UserKeyEntry;
use crate::store::{Batch, Op, StoreError, StoreResult, MLS_DEVICE_KIND};
use crate::wire::Failure;

/// An uploaded key package must be one, for this very device.
pub(super) fn check_uploaded_package(user: &UserId, device: &str, algorithm: &str, key: &Value) -> Result<(), Failure> {
    if algorithm != KEY_PACKAGE_ALGORITHM {
        return Ok(());
    }
    let bytes = key
        .as_str()
        .and_then(|k| b64_decode(k).ok())
        .ok_or_else(|| Failure::invalid_param("a key package is an unpadded base64 string"))?;
    let facts = check_key_package(&bytes).map_err(|e| Failure::invalid_param(e.0))?;
    if facts.device.user != user.as_str() || facts.device.device != device {
        return Err(Failure::invalid_param(format!("the key package is {}'s, not this device's", facts.device)));
    }
    Ok(())
}

/// Whether a stored key may be handed out at `now_secs`: MLS key packages
/// only within their lifetime.
pub(super) fn usable_at(algorithm: &str, key: &Value, now_secs: u64) -> bool {
    if algorithm != KEY_PACKAGE_ALGORITHM {
        return true;
    }
    let bytes = key.as_str().and_then(|k| b64_decode(k).ok());
    bytes.and_then(|b| check_key_package(&b).ok()).is_some_and(|f| now_secs <= f.not_after)
}

impl Claimed {
    /// The claim answer's entry for this key: LM's shape for key packages
    /// (the package under its algorithm, E18), Matrix's for the others.
    pub fn answer(&self) -> Value {
        match self.name.split_once(':') {
            Some((algorithm, _)) if algorithm == KEY_PACKAGE_ALGORITHM => json!({ algorithm: self.key }),
            _ => json!({ self.name.clone(): self.key }),
        }
    }
}

fn parse(entry: &UserKeyEntry) -> StoreResult<Value> {
    json::parse(&entry.json, NumberPolicy::Ieee754).map_err(|e| StoreError::Corrupt(format!("device object: {e}")))
}

fn put(user: &UserId, device: &str, object: &Object, b: &mut Batch) {
    let (json, _) = crate::store::stored_json(object);
    b.push(Op::PutUserKey {
        user: user.clone(),
        kind: MLS_DEVICE_KIND.into(),
        a: device.to_owned(),
        b: String::new(),
        entry: UserKeyEntry { json, number: 0 },
    });
}

impl E2ee {
    /// A local device's object, checked (items 108-110) and naming the
    /// uploading device, staged in `b`. Answers whether it changed, so
    /// other servers are told. The caller holds the user's lock.
    pub fn stage_device_object(
        &self,
        user: &UserId,
        device: &str,
        object: &Object,
        b: &mut Batch,
    ) -> Result<bool, Failure> {
        let checked = check_device_object(object).map_err(|e| Failure::invalid_param(e.0))?;
        if checked.user != *user || checked.device_id != device {
            return Err(Failure::invalid_param("the device object must name the uploading user and device"));
        }
        let stored = self.store.user_key(user, MLS_DEVICE_KIND, device, "")?.map(|e| parse(&e)).transpose()?;
        if stored.as_ref().and_then(Value::as_object) == Some(object) {
            return Ok(false);
        }
        put(user, device, object, b);
        Ok(true)
    }

    /// A user's device objects (`wanted` empty: all), as uploaded or, for
    /// another server's user, as their server last said.
    pub fn device_objects(&self, user: &UserId, wanted: &[&str]) -> StoreResult<Object> {
        let mut out = Object::new();
        for (device, _, entry) in self.store.user_keys(user, MLS_DEVICE_KIND, None, usize::MAX)? {
            if wanted.is_empty() || wanted.contains(&device.as_str()) {
                out.insert(device, parse(&entry)?);
            }
        }
        Ok(out)
    }

    /// An LM `m.device_list_update` from `sender`'s server: its device
    /// objects (each checked, each `sender`'s) replace what was kept, and
    /// its removed devices go. Refused whole when any object fails.
    pub fn stage_remote_device_objects(
        &self,
        sender: &UserId,
        changed: &[Value],
        removed: &[&str],
        b: &mut Batch,
    ) -> Result<(), String> {
        let mut checked = Vec::new();
        for object in changed {
            let object = object.as_object().ok_or("a changed device is not an object")?;
            let c = check_device_object(object).map_err(|e| e.0)?;
            if c.user != *sender {
                return Err(format!("a device object of {} in {sender}'s update", c.user));
            }
            checked.push((c.device_id, object));
        }
        for (device, object) in checked {
            put(sender, &device, object, b);
        }
        for device in removed {
            b.push(Op::DeleteUserKeys {
                user: sender.clone(),
                kind: MLS_DEVICE_KIND.into(),
                a: Some((*device).to_owned()),
                b: None,
            });
        }
        Ok(())
    }
}
