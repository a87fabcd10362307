//! Device objects (§9.2): a device's MLS credential, published signed by
//! the device's own key under its user's name.

use super::{err, DeviceCredential, MlsError, CREDENTIAL_ALGORITHM, ROOM_ALGORITHM};
use crate::core::crypto::{b64_decode, b64_encode, verify_object, PublicKey};
use crate::core::ids::UserId;
use crate::core::json::{Canonical, Object};

/// A device object that passed `check_device_object`.
#[derive(Debug, Clone)]
pub struct DeviceObject {
    pub user: UserId,
    pub device_id: String,
    /// The credential under `m.mls.v1.credential.ed25519`, if listed.
    pub credential: Option<DeviceCredential>,
}

/// Checks a device object: every required field present (item 108), the
/// credential naming this device (item 109), and every listed key's
/// signature under `user_id` valid (item 110).
pub fn check_device_object(obj: &Object) -> Result<DeviceObject, MlsError> {
    for field in ["device_id", "user_id", "algorithms", "keys", "signatures"] {
        if !obj.contains_key(field) {
            return Err(err(format!("the device object has no {field}")));
        }
    }
    let text = |f: &str| obj[f].as_str().ok_or_else(|| err(format!("{f} is not a string")));
    let user = UserId::parse(text("user_id")?).map_err(|e| err(format!("user_id: {e}")))?;
    let device_id = text("device_id")?.to_owned();
    if device_id.is_empty() {
        return Err(err("device_id is empty"));
    }
    let algorithms = obj["algorithms"].as_array().ok_or_else(|| err("algorithms is not a list"))?;
    if algorithms.iter().any(|a| !a.is_string()) {
        return Err(err("algorithms holds a non-string"));
    }
    let keys = obj["keys"].as_object().ok_or_else(|| err("keys is not an object"))?;
    if keys.is_empty() {
        return Err(err("keys is empty"));
    }
    if !obj["signatures"].is_object() {
        return Err(err("signatures is not an object"));
    }
    let mut credential = None;
    for (key_id, key) in keys {
        let key = key.as_str().ok_or_else(|| err(format!("key {key_id} is not a string")))?;
        let (algorithm, name) = key_id.split_once(':').ok_or_else(|| err(format!("key id {key_id} has no ':'")))?;
        let public = match algorithm {
            CREDENTIAL_ALGORITHM => {
                if name != device_id {
                    return Err(err(format!("credential key id {key_id} does not name device {device_id}")));
                }
                let bytes = b64_decode(key).map_err(|_| err(format!("key {key_id} is not base64")))?;
                let c = DeviceCredential::from_bytes(&bytes)?;
                let named = c.device_ref()?;
                if named.user != user.as_str() || named.device != device_id {
                    return Err(err(format!("the credential names {named}, not this device")));
                }
                let public = PublicKey::from_base64(&b64_encode(c.signature_key.as_slice()))
                    .map_err(|_| err("the credential's signature key is not an ed25519 key"))?;
                credential = Some(c);
                public
            }
            "ed25519" => PublicKey::from_base64(key).map_err(|_| err(format!("key {key_id} is not an ed25519 key")))?,
            other => return Err(err(format!("no way to check a signature by a {other} key"))),
        };
        verify_object(obj, user.as_str(), key_id, &public, Canonical::Matrix)
            .map_err(|_| err(format!("no valid signature by {key_id} under {user}")))?;
    }
    if algorithms.iter().any(|a| a.as_str() == Some(ROOM_ALGORITHM)) && credential.is_none() {
        return Err(err(format!("{ROOM_ALGORITHM} is listed without a {CREDENTIAL_ALGORITHM} key")));
    }
    Ok(DeviceObject { user, device_id, credential })
}
