//! Cross-signing: a user's master key, the self-signing key it signs (which
//! signs the user's devices) and the user-signing key (which signs other
//! users' master keys). The server checks every signature it is given
//! before it keeps it, and shows a user-signing key's signatures only to
//! the user who made them.

use serde_json::{json, Value};

use super::E2ee;
use crate::core::crypto::{verify_object, PublicKey};
use crate::core::ids::UserId;
use crate::core::json::{Canonical, Object};
use crate::store::records::UserKeyEntry;
use crate::store::{Batch, Op, StoreResult};
use crate::wire::Failure;

const CROSS_SIGNING: &str = "cross_signing";
/// Signatures a user's user-signing key made on others' master keys,
/// kept under the signer: `(signer, kind, target user)`.
const USER_SIGNATURES: &str = "user_signatures";
pub const KINDS: [&str; 3] = ["master", "self_signing", "user_signing"];

/// The one ed25519 public key of a cross-signing key: `(key id, key)`.
pub fn public_key(key: &Value) -> Option<(String, PublicKey)> {
    let keys = key.get("keys")?.as_object()?;
    if keys.len() != 1 {
        return None;
    }
    let (id, k) = keys.iter().next()?;
    let public = id.strip_prefix("ed25519:")?;
    let parsed = PublicKey::from_base64(k.as_str()?).ok()?;
    // The key id names the key itself.
    (public == k.as_str()?).then(|| (id.clone(), parsed))
}

/// Whether `signed` carries a good signature by `signer`'s `key_id`.
pub fn signed_by(signed: &Value, signer: &UserId, key_id: &str, key: &PublicKey) -> bool {
    signed.as_object().is_some_and(|o| verify_object(o, signer.as_str(), key_id, key, Canonical::Matrix).is_ok())
}

/// `signatures` of `from` merged into `into` (both signed JSON objects).
pub fn merge_signatures(into: &mut Value, from: &Value) {
    let Some(from) = from.get("signatures").and_then(Value::as_object) else { return };
    let Some(into) = into.as_object_mut() else { return };
    let sigs = into.entry("signatures").or_insert_with(|| json!({}));
    if !sigs.is_object() {
        *sigs = json!({});
    }
    for (user, by_key) in from {
        let mine = sigs.as_object_mut().expect("an object").entry(user.clone()).or_insert_with(|| json!({}));
        if let (Some(mine), Some(by_key)) = (mine.as_object_mut(), by_key.as_object()) {
            for (k, v) in by_key {
                mine.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Just the one signature `signer`'s `key_id` made on `signed`, as an
/// object `merge_signatures` takes (the others in it were not checked).
pub fn one_signature(signed: &Value, signer: &str, key_id: &str) -> Value {
    let sig = signed.get("signatures").and_then(|s| s.get(signer)).and_then(|s| s.get(key_id)).cloned();
    match sig {
        Some(sig) => json!({ "signatures": { signer: { key_id: sig } } }),
        None => json!({}),
    }
}

/// Two signed objects alike but for their signatures and `unsigned`.
pub fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("signatures");
            o.remove("unsigned");
        }
        v
    };
    strip(a) == strip(b)
}

fn key_op(user: &UserId, kind: &str, key: &Value) -> Op {
    Op::PutUserKey {
        user: user.clone(),
        kind: CROSS_SIGNING.into(),
        a: kind.into(),
        b: String::new(),
        entry: UserKeyEntry { json: serde_json::to_vec(key).unwrap_or_default(), number: 0 },
    }
}

impl E2ee {
    /// One of a user's cross-signing keys, as uploaded with the signatures
    /// added since.
    pub fn cross_signing_key(&self, user: &UserId, kind: &str) -> StoreResult<Option<Value>> {
        Ok(self.store.user_key(user, CROSS_SIGNING, kind, "")?.and_then(|e| serde_json::from_slice(&e.json).ok()))
    }

    /// `keys/device_signing/upload`'s keys checked (each the user's, for
    /// its usage, with one ed25519 key; the self-signing and user-signing
    /// keys signed by the master key, new or kept) and put in `b`. Answers
    /// which kinds changed. Caller holds the user's lock.
    pub fn stage_cross_signing(
        &self,
        user: &UserId,
        upload: &Object,
        b: &mut Batch,
    ) -> Result<Vec<&'static str>, Failure> {
        let mut master = self.cross_signing_key(user, "master")?;
        let mut changed = Vec::new();
        for kind in KINDS {
            let Some(key) = upload.get(&format!("{kind}_key")) else { continue };
            let bad = |why: &str| Failure::invalid_param(format!("{kind}_key {why}"));
            if key.get("user_id").and_then(Value::as_str) != Some(user.as_str()) {
                return Err(bad("must name the uploading user"));
            }
            let usage = key.get("usage").and_then(Value::as_array);
            if !usage.is_some_and(|u| u.iter().any(|x| x.as_str() == Some(kind))) {
                return Err(bad(&format!("must have usage {kind}")));
            }
            public_key(key).ok_or_else(|| bad("must hold exactly one ed25519 key, named by itself"))?;
            if kind == "master" {
                master = Some(key.clone());
            } else {
                let (id, mk) = master.as_ref().and_then(public_key).ok_or_else(|| bad("needs a master key"))?;
                if !signed_by(key, user, &id, &mk) {
                    return Err(bad("is not signed by the master key"));
                }
            }
            // The same key again keeps the signatures added to it since.
            if !self.cross_signing_key(user, kind)?.is_some_and(|k| same_content(&k, key)) {
                b.push(key_op(user, kind, key));
                changed.push(kind);
            }
        }
        Ok(changed)
    }

    /// Puts one of the user's own cross-signing keys back with signatures
    /// added (a device signing its master key).
    pub fn stage_cross_signing_key(&self, user: &UserId, kind: &str, key: &Value, b: &mut Batch) {
        b.push(key_op(user, kind, key));
    }

    /// Signatures `signer` made on `target`'s master key.
    pub fn user_signatures(&self, signer: &UserId, target: &UserId) -> StoreResult<Option<Value>> {
        Ok(self
            .store
            .user_key(signer, USER_SIGNATURES, target.as_str(), "")?
            .and_then(|e| serde_json::from_slice(&e.json).ok()))
    }

    pub fn stage_user_signatures(&self, signer: &UserId, target: &UserId, signed: &Value, b: &mut Batch) {
        b.push(Op::PutUserKey {
            user: signer.clone(),
            kind: USER_SIGNATURES.into(),
            a: target.to_string(),
            b: String::new(),
            entry: UserKeyEntry { json: serde_json::to_vec(signed).unwrap_or_default(), number: 0 },
        });
    }
}
