//! Cross-signing: `keys/device_signing/upload` (a user's master,
//! self-signing and user-signing keys; replacing a master key needs the
//! user's password) and `keys/signatures/upload` (signatures checked
//! before they are kept). Other servers hear of what they may see: the
//! master and self-signing keys, and devices' new signatures.

use serde_json::{json, Value};

use super::keys::stage_device_changes;
use super::Call;
use crate::core::ids::UserId;
use crate::core::json::Object;
use crate::e2ee::{
    cross_signing_public_key, one_signature, same_content, signed_by, DeviceChange, CROSS_SIGNING_KINDS,
};
use crate::store::Batch;
use crate::wire::Failure;

/// Keys and signatures one request may carry.
const MAX_SIGNED_OBJECTS: usize = 1_000;

pub async fn upload(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let e2ee = &call.server.e2ee;
    // Keys that change what others trust need the password once a master
    // key exists; uploading the same keys again does not.
    let mut new_keys = false;
    for kind in CROSS_SIGNING_KINDS {
        if let Some(key) = call.body()?.get(&format!("{kind}_key")) {
            new_keys |= !e2ee.cross_signing_key(user, kind)?.is_some_and(|k| same_content(&k, key));
        }
    }
    if new_keys && e2ee.cross_signing_key(user, "master")?.is_some() {
        super::devices::require_password(&call, user).await?;
    }
    let (_alloc, dests) = {
        let _guard = e2ee.lock(user);
        let mut b = Batch::new();
        let changed = e2ee.stage_cross_signing(user, call.body()?, &mut b)?;
        if changed.is_empty() {
            return Ok(json!({}));
        }
        let alloc = call.server.positions.allocate(1)?;
        let mut now = Object::new();
        for kind in CROSS_SIGNING_KINDS {
            let key = match call.body()?.get(&format!("{kind}_key")) {
                Some(k) => Some(k.clone()),
                None => e2ee.cross_signing_key(user, kind)?,
            };
            if let Some(k) = key {
                now.insert(kind.into(), k);
            }
        }
        // The user-signing key is the user's own business.
        let public = changed.iter().any(|k| *k != "user_signing");
        let edu = e2ee.local_signing_key_change(user, &now, public, alloc.first(), &mut b);
        let dests = if public { call.server.remote.sharing_servers(user) } else { Default::default() };
        call.server.remote.queue_edu(&dests, alloc.first(), &edu, &mut b);
        call.server.store.write(b)?;
        (alloc, dests)
    };
    call.server.remote.wake(&dests);
    call.server.store.flush().await?;
    Ok(json!({}))
}

/// Why one signed object was not taken, as an error body.
fn refused(failure: Failure) -> Value {
    crate::wire::answer(crate::wire::Surface::Client, &failure).body
}

/// `keys/signatures/upload`: signatures by the user's self-signing key on
/// their devices, by one of their devices on their master key, and by
/// their user-signing key on others' master keys. Each is checked; what
/// fails is listed in `failures` and the rest kept.
pub async fn signatures(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let e2ee = &call.server.e2ee;
    let count: usize = call.body()?.values().filter_map(Value::as_object).map(Object::len).sum();
    if count > MAX_SIGNED_OBJECTS {
        return Err(Failure::too_large(format!("at most {MAX_SIGNED_OBJECTS} signed objects a request")));
    }
    let mut failures = Object::new();
    let mut fail = |target: &str, key_id: &str, why: Value| {
        let per_user = failures.entry(target.to_owned()).or_insert_with(|| json!({}));
        per_user[key_id] = why;
    };
    let (_alloc, dests) = {
        let _guard = e2ee.lock(user);
        let mut b = Batch::new();
        let mut devices_signed: Vec<(String, Value)> = Vec::new();
        let mut master_signed = None;
        let mut others = Vec::new();
        let own_master = e2ee.cross_signing_key(user, "master")?;
        let own_ssk = e2ee.cross_signing_key(user, "self_signing")?.as_ref().and_then(cross_signing_public_key);
        let own_usk = e2ee.cross_signing_key(user, "user_signing")?.as_ref().and_then(cross_signing_public_key);
        for (target, objects) in call.body()? {
            let Some(objects) = objects.as_object() else { continue };
            let Ok(target_user) = UserId::parse(target) else {
                for key_id in objects.keys() {
                    fail(target, key_id, refused(Failure::invalid_param("not a user id")));
                }
                continue;
            };
            for (key_id, signed) in objects {
                if signed.get("user_id").and_then(Value::as_str) != Some(target.as_str()) {
                    fail(target, key_id, refused(Failure::invalid_param("the object names another user")));
                    continue;
                }
                if &target_user == user {
                    let master_id = own_master.as_ref().and_then(cross_signing_public_key).map(|(id, _)| id);
                    if master_id.as_deref() == Some(&format!("ed25519:{key_id}")) {
                        // One of the user's devices signs their master key.
                        match check_device_signed_master(&call, user, own_master.as_ref(), signed) {
                            Ok(by) => master_signed = Some(one_signature(signed, user.as_str(), &by)),
                            Err(why) => fail(target, key_id, why),
                        }
                        continue;
                    }
                    let Some(stored) = e2ee.device_keys_of(user, key_id)? else {
                        fail(target, key_id, refused(Failure::not_found("no such device or key")));
                        continue;
                    };
                    match &own_ssk {
                        Some((id, ssk)) if same_content(&stored, signed) && signed_by(signed, user, id, ssk) => {
                            devices_signed.push((key_id.clone(), one_signature(signed, user.as_str(), id)))
                        }
                        Some(_) => fail(
                            target,
                            key_id,
                            refused(Failure::InvalidSignature("not signed by the self-signing key".into())),
                        ),
                        None => {
                            fail(target, key_id, refused(Failure::MissingParam("no self-signing key uploaded".into())))
                        }
                    }
                    continue;
                }
                // Another user's master key, signed by the user-signing key.
                let is_master =
                    signed.get("usage").and_then(Value::as_array).is_some_and(|u| u.iter().any(|x| x == "master"));
                let named = cross_signing_public_key(signed).is_some_and(|(id, _)| id == format!("ed25519:{key_id}"));
                match &own_usk {
                    Some((id, usk)) if is_master && named && signed_by(signed, user, id, usk) => {
                        others.push((target_user.clone(), signed.clone()))
                    }
                    Some(_) => fail(
                        target,
                        key_id,
                        refused(Failure::InvalidSignature("not a master key signed by the user-signing key".into())),
                    ),
                    None => fail(target, key_id, refused(Failure::MissingParam("no user-signing key uploaded".into()))),
                }
            }
        }
        let mut changes = Vec::new();
        for (device, signed) in &devices_signed {
            changes.push((device.clone(), e2ee.stage_device_signature(user, device, signed, &mut b)?));
        }
        let change_refs: Vec<(&str, DeviceChange<'_>)> =
            changes.iter().map(|(d, k)| (d.as_str(), DeviceChange::Updated { keys: Some(k) })).collect();
        let mut held = Vec::new();
        let mut dests = std::collections::BTreeSet::new();
        if !change_refs.is_empty() {
            let (alloc, d) = stage_device_changes(&call, user, &change_refs, &mut b)?;
            held.push(alloc);
            dests.extend(d);
        }
        if let Some(signed) = master_signed {
            let mut master = own_master.clone().unwrap_or_default();
            crate::e2ee::merge_signatures(&mut master, &signed);
            e2ee.stage_cross_signing_key(user, "master", &master, &mut b);
            let alloc = call.server.positions.allocate(1)?;
            let mut now = Object::new();
            now.insert("master".into(), master);
            if let Some(k) = e2ee.cross_signing_key(user, "self_signing")? {
                now.insert("self_signing".into(), k);
            }
            let edu = e2ee.local_signing_key_change(user, &now, true, alloc.first(), &mut b);
            let sharing = call.server.remote.sharing_servers(user);
            call.server.remote.queue_edu(&sharing, alloc.first(), &edu, &mut b);
            dests.extend(sharing);
            held.push(alloc);
        }
        for (target, signed) in &others {
            let mut kept = e2ee.user_signatures(user, target)?.unwrap_or_else(|| json!({}));
            let usk_id = own_usk.as_ref().map_or("", |(id, _)| id.as_str());
            crate::e2ee::merge_signatures(&mut kept, &one_signature(signed, user.as_str(), usk_id));
            e2ee.stage_user_signatures(user, target, &kept, &mut b);
            let alloc = call.server.positions.allocate(1)?;
            // The signer's own devices re-read the target's keys.
            e2ee.note_keys_seen_by(user, target, alloc.first(), &mut b);
            held.push(alloc);
        }
        if !b.is_empty() {
            call.server.store.write(b)?;
        }
        (held, dests)
    };
    call.server.remote.wake(&dests);
    call.server.store.flush().await?;
    Ok(json!({ "failures": failures }))
}

/// The user's master key, signed by one of the user's devices with the
/// device's own key.
fn check_device_signed_master(
    call: &Call,
    user: &UserId,
    master: Option<&Value>,
    signed: &Value,
) -> Result<String, Value> {
    let Some(master) = master else { return Err(refused(Failure::not_found("no master key"))) };
    if !same_content(master, signed) {
        return Err(refused(Failure::invalid_param("this is not the stored master key")));
    }
    let sigs = signed.get("signatures").and_then(|s| s.get(user.as_str())).and_then(Value::as_object);
    for key_id in sigs.into_iter().flatten().map(|(k, _)| k) {
        let Some(device) = key_id.strip_prefix("ed25519:") else { continue };
        let keys = call.server.e2ee.device_keys_of(user, device).ok().flatten();
        let public = keys
            .as_ref()
            .and_then(|k| k.get("keys")?.get(key_id)?.as_str().map(str::to_owned))
            .and_then(|k| crate::core::crypto::PublicKey::from_base64(&k).ok());
        if public.is_some_and(|p| signed_by(signed, user, key_id, &p)) {
            return Ok(key_id.clone());
        }
    }
    Err(refused(Failure::InvalidSignature("not signed by one of the user's devices".into())))
}
