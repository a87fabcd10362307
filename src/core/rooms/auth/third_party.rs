//! Third-party invites, Matrix rule 4.4.1 (not part of LM).

use serde_json::Value;

use super::{AuthError, Rule};
use crate::core::crypto::{b64url_decode, signing_bytes, PublicKey};
use crate::core::event::Pdu;
use crate::core::json::{Canonical, Object};
use crate::core::rooms::state::StateView;

fn reject(rule: &'static str, msg: &str) -> Result<(), AuthError> {
    Err(AuthError::new(Rule::new("5.3", rule), msg))
}

pub fn check(event: &Pdu, tpi: &Value, state: &impl StateView, target: &str) -> Result<(), AuthError> {
    let Some(signed) = tpi.get("signed").and_then(Value::as_object) else {
        return reject("4.4.1.2", "third_party_invite has no `signed` object");
    };
    let (Some(mxid), Some(token)) =
        (signed.get("mxid").and_then(Value::as_str), signed.get("token").and_then(Value::as_str))
    else {
        return reject("4.4.1.3", "`signed` needs `mxid` and `token`");
    };
    if mxid != target {
        return reject("4.4.1.4", "`signed.mxid` does not match the state_key");
    }
    let Some(invite) = state.get("m.room.third_party_invite", token) else {
        return reject("4.4.1.5", "no m.room.third_party_invite with that token");
    };
    if invite.sender() != event.sender() {
        return reject("4.4.1.6", "the sender did not send the third-party invite");
    }
    if any_signature_verifies(signed, &public_keys(invite.content())) {
        Ok(())
    } else {
        reject("4.4.1.8", "no signature in `signed` matches the invite's public keys")
    }
}

/// `public_key` and every `public_keys[].public_key`; undecodable keys are
/// skipped. Identity servers use either base64 alphabet.
fn public_keys(content: &Object) -> Vec<PublicKey> {
    let mut raw: Vec<&str> = Vec::new();
    if let Some(k) = content.get("public_key").and_then(Value::as_str) {
        raw.push(k);
    }
    if let Some(list) = content.get("public_keys").and_then(Value::as_array) {
        raw.extend(list.iter().filter_map(|k| k.get("public_key")?.as_str()));
    }
    raw.into_iter()
        .filter_map(|k| {
            PublicKey::from_base64(k).ok().or_else(|| {
                let bytes = b64url_decode(k).ok()?;
                PublicKey::from_base64(&crate::core::crypto::b64_encode(&bytes)).ok()
            })
        })
        .collect()
}

fn any_signature_verifies(signed: &Object, keys: &[PublicKey]) -> bool {
    let Some(sigs) = signed.get("signatures").and_then(Value::as_object) else {
        return false;
    };
    let Ok(bytes) = signing_bytes(signed, Canonical::Matrix) else {
        return false;
    };
    sigs.values()
        .filter_map(Value::as_object)
        .flat_map(|by_key| by_key.iter())
        .filter(|(key_id, _)| key_id.starts_with("ed25519:"))
        .filter_map(|(_, sig)| sig.as_str())
        .any(|sig| keys.iter().any(|k| k.verify(&bytes, sig)))
}
