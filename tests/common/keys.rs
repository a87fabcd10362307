//! Signed key objects as a client makes them: ed25519 keys from fixed
//! seeds, signatures over Matrix canonical JSON.

use ed25519_dalek::{Signer, SigningKey};
use lmx::core::crypto::{b64_encode, signing_bytes};
use lmx::core::json::Canonical;
use serde_json::{json, Value};

/// An ed25519 key from a seed that names it.
pub struct TestKey(SigningKey);

impl TestKey {
    pub fn new(seed: &str) -> TestKey {
        TestKey(SigningKey::from_bytes(&lmx::core::crypto::sha256(seed.as_bytes())))
    }

    pub fn public(&self) -> String {
        b64_encode(self.0.verifying_key().as_bytes())
    }

    /// `object` with this key's signature as `signer`'s `key_id` added.
    pub fn sign(&self, mut object: Value, signer: &str, key_id: &str) -> Value {
        let bytes = signing_bytes(object.as_object().unwrap(), Canonical::Matrix).unwrap();
        let sig = b64_encode(&self.0.sign(&bytes).to_bytes());
        if !object["signatures"].is_object() {
            object["signatures"] = json!({});
        }
        if !object["signatures"][signer].is_object() {
            object["signatures"][signer] = json!({});
        }
        object["signatures"][signer][key_id] = json!(sig);
        object
    }
}

/// A device's keys, signed by the device (its ed25519 key from the device id).
pub fn signed_device_keys(user: &str, device: &str) -> Value {
    let key = TestKey::new(device);
    let keys = json!({
        "user_id": user, "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("curve25519:{device}"): "curve", format!("ed25519:{device}"): key.public()},
    });
    key.sign(keys, user, &format!("ed25519:{device}"))
}

/// A cross-signing key of `user` for `usage`, unsigned.
pub fn cross_signing_key(user: &str, usage: &str, key: &TestKey) -> Value {
    json!({"user_id": user, "usage": [usage], "keys": {format!("ed25519:{}", key.public()): key.public()}})
}

/// Uploads the client's device keys (signed by the device); its device id.
pub async fn upload_device(c: &super::Client) -> String {
    let device = c.device_id().await;
    c.ok(
        "POST",
        "/_matrix/client/v3/keys/upload",
        Some(json!({"device_keys": signed_device_keys(&c.user_id, &device)})),
    )
    .await;
    device
}
